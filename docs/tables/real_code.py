r"""The real-code gallery table: each re-created loss through check_loss, with its verdict.

``render()`` runs :func:`maskloss.testing.check_loss` on every case of ``tests/real_code.py``
(about a second each) and returns a markdown table: the source, the options that state its
convention, the first failing property (or "passes"), what the finding is, and the smallest
failing batch's shape. The page ``docs/course/08-real-code.md`` includes it.
"""

from __future__ import annotations

import time
import warnings

import numpy as np


def _shown(options: dict[str, object]) -> dict[str, object]:
    """``options`` with ``bounds=Bounds(...)`` shown as ``bounds=Bounds(<the fields it changes>)``."""
    import dataclasses

    from maskloss.testing import Bounds

    out = dict(options)
    bounds = out.get("bounds")
    if isinstance(bounds, Bounds):
        changed = {f.name: getattr(bounds, f.name) for f in dataclasses.fields(bounds)
                   if getattr(bounds, f.name) != getattr(Bounds(), f.name)}
        out["bounds"] = _Spelled("Bounds(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")")
    return out


class _Spelled(str):
    """A string whose repr is itself (a call spelled out in the table)."""

    def __repr__(self) -> str:
        return str(self)


def _row(case: object) -> str:
    from maskloss.testing import LossCheckError, check_loss

    name, candidate, like, options = case.name, case.candidate, case.like, case.options  # type: ignore[attr-defined]
    start = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            check_loss(candidate, like, **options)
            verdict, batch = "passes", ""
        except LossCheckError as err:
            verdict = f"**{err.property}**"
            b = err.batch
            batch = f"B={b.mask.shape[0]}, T={b.mask.shape[1]}, mask `{b.mask.astype(int).tolist()}`"
    seconds = time.perf_counter() - start
    from tests.real_code import SOURCES

    source = SOURCES[candidate]
    shown = _shown(options)
    opts = ", ".join(f"`{k}={v!r}`" if not isinstance(v, float) else f"`{k}={v:.4g}`" for k, v in shown.items())
    return f"| {name} | {source} | `{like.__name__}` {opts} | {verdict} | {case.finding} | {batch} | {seconds:.1f} s |"  # type: ignore[attr-defined]


def render() -> str:
    """The gallery table, computed now (markdown)."""
    from tests.real_code import CASES

    lines = [
        "| loss | source | like and options | first failing property | finding | smallest failing batch | time |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_row(case) for case in CASES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render())
