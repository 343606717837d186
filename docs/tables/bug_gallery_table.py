"""The bug gallery (``tests/bug_gallery.py``), run at build time: each bug, what caught it, how fast.

Every bug is checked once with :func:`maskloss.testing.check_loss` (seed 0, default settings);
the table shows the property check_loss reported, the generated examples it needed and the
smallest failing batch it shrank to (the batch each exercise of ``08-exercises.md`` asks for).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED = 0


def rows() -> list[tuple[str, str, int, str]]:
    """(bug, property reported, examples needed, failing batch) per gallery entry; raises if a bug is not caught."""
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
            out.append((entry.name, str(err.property), int(err.examples), describe(err.batch)))
        else:
            raise AssertionError(f"check_loss did not catch gallery bug {entry.name!r}")
    return out


def describe(batch: object) -> str:
    """The failing batch in one cell: its mask (1 = valid), its labels, its padding, junk under the mask."""
    import numpy as np

    if batch is None:
        return "(none recorded)"
    mask = np.asarray(batch.mask).astype(int).tolist()  # type: ignore[attr-defined]
    labels = np.asarray(batch.y_true)  # type: ignore[attr-defined]
    text = f"mask `{mask}`"
    if labels.ndim == 2 and np.issubdtype(labels.dtype, np.integer):
        text += f", labels `{labels.tolist()}`"
    text += f", {batch.padding} padded"  # type: ignore[attr-defined]
    if not np.all(np.isfinite(np.asarray(batch.y_pred, dtype=np.float64))):  # type: ignore[attr-defined]
        text += ", NaN or inf in `y_pred` under the mask"
    return text


def render() -> str:
    lines = ["| bug | property that caught it | examples needed | smallest failing batch |", "|---|---|---|---|"]
    for name, prop, examples, batch in rows():
        escaped = name.replace("*", "\\*")  # markdown emphasis
        lines.append(f"| {escaped} | {prop} | {examples} | {batch} |")
    lines.append("")
    lines.append(
        f"Generated at build time: `check_loss(bug, ..., seed={SEED})` on each entry of `tests/bug_gallery.py`."
    )
    return "\n".join(lines) + "\n"
