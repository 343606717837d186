r"""Shared plumbing of the convention modules whose frameworks cannot be installed here.

TensorFlow Addons, AllenNLP, fairseq and T5X all take a weight (or padding id) per step
instead of a boolean mask: a step is *valid* when its weight is non-zero. This module
validates those step weights and targets and evaluates per-row math on the valid steps
only, chunk by chunk (:mod:`maskloss._rows`), so logits and labels at zero-weight steps
are never read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_labels, first_bad_position
from maskloss._rows import as_rows, map_rows, to_float64
from maskloss._types import BoolArray, FloatArray, IntArray

__all__ = [
    "check_scores",
    "check_step_weights",
    "check_targets",
    "div_no_nan",
    "per_valid_row",
]

RowFn = Callable[[IntArray, FloatArray], FloatArray]


def check_scores(scores: npt.ArrayLike, name: str, *, ndim: int | None = None) -> np.ndarray[Any, Any]:
    """Logits or log-probabilities ``(..., C)`` with at least one class."""
    arr = as_numeric(scores, name, min_ndim=1)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if arr.shape[-1] == 0:
        raise ValueError(f"{name} has no classes: its last axis has size 0 (shape {arr.shape})")
    return arr


def check_step_weights(weights: npt.ArrayLike, shape: tuple[int, ...], name: str = "weights") -> FloatArray:
    """Per-step weights of exactly ``shape``, finite and >= 0 everywhere, as float64.

    Weights are data, not padding, so every entry is checked (bool weights are 0/1).
    """
    w = as_numeric(weights, name)
    if w.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (one weight per step), got {w.shape}")
    w64 = w.astype(np.float64)
    bad = ~(np.isfinite(w64) & (w64 >= 0))
    if np.any(bad):
        pos = first_bad_position(bad, w64.shape)
        raise ValueError(f"{name} must be finite and >= 0; found {w64[pos].item()!r} at step {pos}")
    return w64


def check_targets(
    targets: npt.ArrayLike, shape: tuple[int, ...], valid: BoolArray, num_classes: int, name: str = "targets"
) -> IntArray:
    """Integer labels of exactly ``shape``, in ``[0, C)`` at valid steps (0 elsewhere)."""
    t = as_numeric(targets, name)
    if t.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (logits.shape[:-1]), got {t.shape}")
    return check_labels(t, valid, num_classes, name=name)


def per_valid_row(
    fn: RowFn, valid: BoolArray, labels: IntArray, scores: np.ndarray[Any, Any], k: int
) -> FloatArray:
    """Evaluate ``fn(labels, float64 score rows) -> (n, k)`` on valid steps; 0 elsewhere.

    Returns shape ``(k,) + valid.shape``. The same chunk loop as the core losses
    (:func:`maskloss._rows.map_rows`: threads, reused buffers, bit-identical results).
    """

    def step(rows: IntArray, lab: IntArray, score_rows: np.ndarray[Any, Any]) -> FloatArray:
        return np.asarray(fn(lab, to_float64(score_rows))).reshape(rows.size, k)

    out = map_rows(step, valid, (labels.reshape(-1), as_rows(scores)), k=k)[0]
    return np.ascontiguousarray(out.T).reshape((k, *valid.shape))


def div_no_nan(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator``, and 0 where the denominator is 0 (``tf.math.divide_no_nan``)."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    out = np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)
    return out if out.ndim else np.float64(out)
