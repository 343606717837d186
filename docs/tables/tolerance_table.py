"""The tolerance table of :func:`maskloss.testing.assert_loss_close`, from ``maskloss.testing.TOLERANCES``."""

from __future__ import annotations

import numpy as np

from maskloss.testing.tolerances import TOLERANCES

#: Machine epsilon per dtype; bfloat16 is not a NumPy dtype (8 significand bits: 2**-7).
EPS = {
    "float64": float(np.finfo(np.float64).eps),
    "float32": float(np.finfo(np.float32).eps),
    "float16": float(np.finfo(np.float16).eps),
    "bfloat16": 2.0**-7,
}


def render() -> str:
    rows = ["| dtype | machine eps | rtol | atol | rtol / eps |", "|---|---|---|---|---|"]
    for dtype, (rtol, atol) in TOLERANCES.items():
        eps = EPS[dtype]
        rows.append(f"| `{dtype}` | {eps:.2g} | {rtol:g} | {atol:g} | {rtol / eps:.3g} |")
    return "\n".join(rows) + "\n\nGenerated at build time from `maskloss.testing.TOLERANCES`.\n"
