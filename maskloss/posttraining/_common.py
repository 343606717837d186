"""Validation and per-step helpers shared by the post-training modules.

The core's validators the package uses (``check_mask``, ``check_reduction``) are imported
here once and taken from here by the modules of :mod:`maskloss.posttraining`.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_mask, check_reduction, first_bad_position
from maskloss._types import BoolArray, FloatArray

__all__ = ["check_mask", "check_reduction"]  # re-exported for the package's modules


def _positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    bound = ">= 0" if allow_zero else "> 0"
    try:
        x = float(value)
    except OverflowError:  # an int beyond float64 (10**400)
        raise ValueError(f"{name} must be finite and {bound}, got an int of {len(str(abs(value)))} digits") from None
    if not np.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise ValueError(f"{name} must be finite and {bound}, got {x!r}")
    return x


def _steps(x: npt.ArrayLike, name: str) -> np.ndarray[Any, Any]:
    arr = as_numeric(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, time), got shape {arr.shape}")
    return arr


def _valid_values(x: np.ndarray[Any, Any], valid: BoolArray, name: str) -> FloatArray:
    """``x`` in float64 at valid steps, 0 elsewhere; raise if a valid step is not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        vals = np.where(valid, x, 0).astype(np.float64)
    bad = ~np.isfinite(vals)
    if np.any(bad):
        pos = first_bad_position(bad, vals.shape)
        raise ValueError(f"{name} must be finite at valid steps; {name}{list(pos)} is {float(vals[pos])!r}")
    return vals


def _per_step_like(
    x: npt.ArrayLike | None, valid: BoolArray, name: str, *, default: float | None = None
) -> FloatArray:
    """A ``(B,)``, ``(B, 1)`` or ``(B, T)`` per-sequence or per-step quantity broadcast to the mask."""
    if x is None:
        if default is None:
            raise TypeError(f"{name} is required")
        return np.where(valid, default, 0.0)
    arr = as_numeric(x, name)
    batch, steps = valid.shape
    if arr.shape in ((batch,), (batch, 1)):
        arr = arr.reshape(batch, 1)
    elif arr.shape != (batch, steps):
        raise ValueError(
            f"{name} must have shape ({batch},), ({batch}, 1) or ({batch}, {steps}) to match the mask, "
            f"got {arr.shape}"
        )
    return _valid_values(np.broadcast_to(arr, valid.shape), valid, name)


# --------------------------------------------------------------------------------------------
# token log-probabilities
