"""The bug gallery (``tests/bug_gallery.py``), run at build time: each bug, what caught it, how fast.

Every bug is checked once with :func:`maskloss.testing.check_loss` (seed 0, default settings);
the table shows the property check_loss reported and the generated examples it needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED = 0


def rows() -> list[tuple[str, str, int]]:
    """(bug, property reported, examples needed) per gallery entry; raises if a bug is not caught."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from maskloss.testing import LossCheckError, check_loss
    from tests.bug_gallery import GALLERY

    out = []
    for entry in GALLERY:
        try:
            check_loss(entry.bug, entry.like, seed=SEED, **entry.options)
        except LossCheckError as err:
            if err.property not in entry.properties:  # the solutions (08-solutions.md) name only these
                raise AssertionError(
                    f"check_loss reported {err.property!r} for gallery bug {entry.name!r}, "
                    f"which the gallery and its solutions do not list: {entry.properties}"
                ) from err
            out.append((entry.name, str(err.property), int(err.examples)))
        else:
            raise AssertionError(f"check_loss did not catch gallery bug {entry.name!r}")
    return out


def render() -> str:
    lines = ["| bug | property that caught it | examples needed |", "|---|---|---|"]
    for name, prop, examples in rows():
        escaped = name.replace("*", "\\*")  # markdown emphasis
        lines.append(f"| {escaped} | {prop} | {examples} |")
    lines.append("")
    lines.append(
        f"Generated at build time: `check_loss(bug, ..., seed={SEED})` on each entry of `tests/bug_gallery.py`."
    )
    return "\n".join(lines) + "\n"
