r"""The argument handling the Keras mirrors share (:mod:`~maskloss.conventions.keras3` and
:mod:`~maskloss.conventions.tf_keras`): the class axis, label and weight alignment, masks,
probability clipping, and per-step losses on the valid steps.

Private to :mod:`maskloss.conventions`: Keras 3 and tf_keras handle their arguments the same
way and differ only in their reduction rules, which stay in their own modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_feature_pair, check_mask
from maskloss._rows import to_float64
from maskloss._types import BoolArray, FloatArray
from maskloss.pipeline import step_losses as _step_losses

__all__ = [
    "EPSILON",
    "ChunkLoss",
    "align_weight",
    "check_axis",
    "check_keras_reduction",
    "chunk_losses",
    "clipped_log",
    "dense_pair",
    "ignore_mask",
    "optional_mask",
    "renormalised_log",
    "sparse_pair",
    "valid_steps",
]

#: ``keras.config.epsilon()`` default: the probability clip.
EPSILON = 1e-7



def check_keras_reduction(reduction: object, allowed: tuple[str, ...]) -> str:
    """Return the canonical name of a Keras reduction (``None`` -> ``"none"``)."""
    if reduction is None:
        return "none"
    if not isinstance(reduction, str) or reduction not in allowed:
        names = ", ".join(map(repr, allowed))
        raise ValueError(f"reduction must be one of {names} or None; got {reduction!r}")
    return reduction


def check_axis(axis: object, ndim: int, name: str = "y_pred") -> int:
    """A class/feature axis of an ``ndim``-dimensional array, as a non-negative int."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if not -ndim <= int(axis) < ndim:
        raise ValueError(f"axis {axis} is out of range for {name} with {ndim} dimensions")
    return int(axis) % ndim


def dense_pair(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, axis: object = -1
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Targets and predictions of one shape, with the class/feature ``axis`` moved last."""
    t, p = check_feature_pair(y_true, y_pred)
    ax = check_axis(axis, p.ndim)
    if p.shape[ax] == 0:
        raise ValueError(f"y_pred has no features/classes: axis {ax} has size 0 (shape {p.shape})")
    return np.moveaxis(t, ax, -1), np.moveaxis(p, ax, -1)


def sparse_pair(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, axis: object = -1
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Integer labels ``(...)`` and predictions ``(..., C)`` (class ``axis`` moved last).

    Labels with a trailing axis of 1 (``(B, T, 1)``) are squeezed, as Keras does.
    """
    labels = as_numeric(y_true, "y_true")
    p = as_numeric(y_pred, "y_pred", min_ndim=1)
    ax = check_axis(axis, p.ndim)
    if labels.ndim == p.ndim and labels.shape[ax] == 1:
        labels = np.squeeze(labels, axis=ax)
    p = np.moveaxis(p, ax, -1)
    if labels.shape != p.shape[:-1] or p.shape[-1] == 0:
        raise ValueError(
            f"y_pred must have the shape of y_true plus a class axis (axis={axis}); got y_true "
            f"{np.shape(y_true)} and y_pred {np.shape(y_pred)}"
        )
    return labels, p


def align_weight(
    sample_weight: npt.ArrayLike | None, steps: tuple[int, ...], *, expand_one_less: bool
) -> np.ndarray[Any, Any] | None:
    """``sample_weight`` reshaped the way Keras lines it up with per-step losses.

    A weight with one trailing axis of 1 too many is squeezed. A weight of one dimension
    less is given a trailing axis of 1: always in tf_keras (``expand_one_less``,
    ``squeeze_or_expand_dimensions``), only when the last step axis is 1 in Keras 3
    (``squeeze_or_expand_to_same_rank``). The result must then broadcast to ``steps``
    aligned to the right; it is returned with ``len(steps)`` dimensions, not broadcast.
    """
    if sample_weight is None:
        return None
    w = as_numeric(sample_weight, "sample_weight")
    rank = len(steps)
    if w.ndim == rank + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    elif w.ndim == rank - 1 and w.ndim > 0 and (expand_one_less or steps[-1] == 1):
        w = w[..., None]
    try:
        fits = w.ndim <= rank and np.broadcast_shapes(w.shape, steps) == tuple(steps)
    except ValueError:
        fits = False
    if not fits:
        hint = "" if expand_one_less else (
            " Keras 3 aligns weights to the right: pass shape (B, 1) for one weight per sequence."
        )
        raise ValueError(
            f"sample_weight of shape {np.shape(sample_weight)} does not broadcast to the steps of the "
            f"batch {tuple(steps)}.{hint}"
        )
    aligned: np.ndarray[Any, Any] = w.reshape((1,) * (rank - w.ndim) + w.shape)
    return aligned


def clipped_log(p: FloatArray, epsilon: float) -> FloatArray:
    r""":math:`\log \operatorname{clip}(p, \epsilon, 1-\epsilon)` (NaN stays NaN)."""
    with np.errstate(invalid="ignore"):
        return np.log(np.clip(p, epsilon, 1.0 - epsilon))


def renormalised_log(p: FloatArray, epsilon: float) -> FloatArray:
    r""":math:`\log\operatorname{clip}(p / \sum_c p_c, \epsilon, 1-\epsilon)`: Keras's categorical rule."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return clipped_log(p / np.sum(p, axis=-1, keepdims=True), epsilon)


#: ``loss(*chunks)``: per-step losses ``(n,)`` of float64 ``(n, width)`` row chunks and ``(n,)``
#: integer labels (no ``rows`` argument, no ``grad=``: unlike :data:`maskloss.pipeline.StepFn`).
ChunkLoss = Callable[..., FloatArray]


def chunk_losses(
    step: ChunkLoss, valid: BoolArray, *arrays: np.ndarray[Any, Any]
) -> FloatArray:
    """Per-step losses on the valid steps only, 0 elsewhere.

    ``arrays`` are ``(steps, width)`` rows (promoted to float64 chunk by chunk) or
    ``(steps,)`` integer labels (passed as they are).
    """

    def rows_step(rows: Any, *chunks: Any) -> FloatArray:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return step(*(to_float64(c) if c.ndim == 2 else c for c in chunks))

    return _step_losses(rows_step, valid, *arrays)


def optional_mask(mask: npt.ArrayLike | None, steps: tuple[int, ...]) -> BoolArray | None:
    """The Keras mask as a bool array, or None when the output carries none.

    A mask with one trailing axis of size 1 (``(B, T, 1)`` for ``(B, T)`` steps, ``(B, 1)``
    for ``(B,)``) is squeezed to the steps, as Keras's ``squeeze_or_expand_to_same_rank``
    (keras 3) and ``squeeze_or_expand_dimensions`` (tf_keras) do. (With ``(B,)`` steps and
    ``reduction="none"`` Keras returns the losses as ``(B, 1)``; the mirror keeps ``(B,)``.)
    """
    if mask is None:
        return None
    if np.ndim(mask) == len(steps) + 1 and np.shape(mask)[-1] == 1:
        mask = np.asarray(mask)[..., 0]
    return check_mask(mask, steps)


def valid_steps(keras_mask: BoolArray | None, steps: tuple[int, ...]) -> BoolArray:
    """The steps a loss is computed at: the mask, or every step without one."""
    return np.ones(steps, dtype=bool) if keras_mask is None else keras_mask


def ignore_mask(
    labels: np.ndarray[Any, Any], keras_mask: BoolArray | None, ignore_class: object
) -> BoolArray | None:
    """The Keras mask after ``ignore_class``: steps whose label equals it are masked."""
    if ignore_class is None:
        return keras_mask
    if isinstance(ignore_class, bool) or not isinstance(ignore_class, (int, np.integer)):
        raise TypeError(f"ignore_class must be an int or None, got {ignore_class!r}")
    kept = np.asarray(labels != ignore_class)
    return kept if keras_mask is None else keras_mask & kept
