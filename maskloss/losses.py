r"""The masked losses: validate, select the valid steps, apply the per-step math, reduce.

Every loss has the Keras call shape ``fn(y_true, y_pred, mask=None, *,
reduction="token_mean", sample_weight=None, ...)``. The mask (True = valid) has
the shape of the steps, ``y_pred.shape[:-1]``; the last axis of ``y_pred`` holds
features (regression, binary) or classes. Results are float64 whatever the input
dtype: a ``numpy.float64`` scalar, or for ``reduction="none"`` an array of the
mask's shape that is exactly 0 at masked steps.

Masked steps are excluded by selection, never by multiplication: NaN, inf, huge
values or out-of-range labels under the mask never change a result and never raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import (
    as_numeric,
    check_class_weight,
    check_feature_pair,
    check_label_smoothing,
    check_labels,
    check_mask,
    check_reduction,
    check_sample_weight,
)
from maskloss._rows import as_rows, check_probabilities, row_chunks, to_float64, valid_rows
from maskloss._types import BoolArray, FloatArray
from maskloss.reductions import reduce_terms

__all__ = [
    "binary_crossentropy",
    "categorical_crossentropy",
    "mae",
    "mse",
    "sparse_categorical_crossentropy",
]

StepFn = Callable[..., FloatArray]


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_features(y_pred: np.ndarray[Any, Any], name: str = "y_pred") -> int:
    width = y_pred.shape[-1]
    if width == 0:
        raise ValueError(f"{name} has no features/classes: its last axis has size 0 (shape {y_pred.shape})")
    return int(width)


def per_step(step: StepFn, valid: BoolArray, *arrays: np.ndarray[Any, Any]) -> FloatArray:
    """Evaluate ``step(rows, *row_chunks)`` on the valid steps only; 0 at masked steps.

    ``arrays`` are ``(steps, width)`` or ``(steps,)`` views aligned with ``valid.ravel()``.
    """
    out = np.zeros(valid.size)
    width = max((a.shape[-1] for a in arrays if a.ndim == 2), default=1)
    for rows in row_chunks(valid_rows(valid), width):
        out[rows] = step(rows, *(a[rows] for a in arrays))
    return out.reshape(valid.shape)


def _finish(
    losses: FloatArray,
    valid: BoolArray,
    weight: FloatArray,
    reduction: str,
    step_weight: FloatArray | None = None,
) -> Any:
    """Turn per-step losses into numerator/denominator terms and reduce them."""
    denominator = weight if step_weight is None else weight * step_weight
    return reduce_terms(weight * losses, np.where(valid, denominator, 0.0), reduction)


def _regression(
    step: Callable[[FloatArray, FloatArray], FloatArray],
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None,
    reduction: str,
    sample_weight: npt.ArrayLike | None,
) -> Any:
    t, p = check_feature_pair(y_true, y_pred)
    _check_features(p)
    valid = check_mask(mask, p.shape[:-1])
    check_reduction(reduction)
    weight = check_sample_weight(sample_weight, valid)
    losses = per_step(lambda rows, a, b: step(to_float64(a), to_float64(b)), valid, as_rows(t), as_rows(p))
    return _finish(losses, valid, weight, reduction)


def mae(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    reduction: str = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Any:
    r"""Masked mean absolute error.

    Per step, the mean over the feature axis (Keras ``mae``); then reduced over valid steps:

    .. math::
        \ell_{bt} = \frac1F \sum_f |y_{btf} - \hat y_{btf}|, \qquad
        \text{token\_mean} = \frac{\sum_{bt} a_{bt}\ell_{bt}}{\sum_{bt} a_{bt}},
        \quad a = m \cdot w

    Parameters
    ----------
    y_true, y_pred : array_like, shape (B, T, F)
        Targets and predictions. A (B, T) regression target is passed as (B, T, 1).
    mask : array_like of bool, shape (B, T), optional
        True at valid steps (all valid when omitted).
    reduction : str, default "token_mean"
        One of :data:`maskloss.REDUCTIONS`.
    sample_weight : array_like, optional
        Shape (B,), (B, T) or scalar; finite and >= 0 at valid steps.

    Returns
    -------
    numpy.float64, or ndarray of shape (B, T) for ``reduction="none"``

    Examples
    --------
    The seed: targets of ones, and the mask that ``Masking(0)`` finds in its ``X``.
    Padding does not count, so the loss is over the 7 valid steps only:

    >>> import numpy as np, maskloss
    >>> mask = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]], dtype=bool)
    >>> y_true = np.ones((2, 5, 3))
    >>> y_pred = np.zeros((2, 5, 3)); y_pred[mask] = 0.5
    >>> float(maskloss.mae(y_true, y_pred, mask))
    0.5
    >>> float(maskloss.mae(y_true, y_pred))   # the unmasked mean counts the padding
    0.65
    """
    return _regression(pointwise.absolute_error, y_true, y_pred, mask, reduction, sample_weight)


def mse(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    reduction: str = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Any:
    r"""Masked mean squared error: :math:`\ell_{bt} = \frac1F\sum_f (y_{btf} - \hat y_{btf})^2`.

    Arguments and reductions as in :func:`mae`.

    Examples
    --------
    >>> import maskloss
    >>> float(maskloss.mse([[[1.0], [2.0]]], [[[0.0], [99.0]]], [[True, False]]))
    1.0
    """
    return _regression(pointwise.squared_error, y_true, y_pred, mask, reduction, sample_weight)


def binary_crossentropy(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    reduction: str = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Any:
    r"""Masked binary cross-entropy, mean over the last axis (Keras).

    .. math::
        y' = y(1-\varepsilon) + \tfrac{\varepsilon}{2}, \qquad
        \ell_{bt} = -\frac1F\sum_f \big(y'_f \log p_f + (1-y'_f)\log(1-p_f)\big)

    With ``from_logits=True`` the stable form
    :math:`\max(x,0) - x y' + \log(1 + e^{-|x|})` is used. Probabilities are used as
    given, without clipping (:math:`0\log 0 = 0`; a positive target on a probability of
    0 costs :math:`+\infty`); they must lie in ``[0, 1]`` at valid steps.

    Examples
    --------
    >>> import maskloss
    >>> round(float(maskloss.binary_crossentropy([[[1.0]]], [[[0.0]]], from_logits=True)), 6)  # log 2
    0.693147
    """
    t, p = check_feature_pair(y_true, y_pred)
    _check_features(p)
    logits = _check_flag(from_logits, "from_logits")
    eps = check_label_smoothing(label_smoothing)
    valid = check_mask(mask, p.shape[:-1])
    check_reduction(reduction)
    weight = check_sample_weight(sample_weight, valid)
    steps_shape = valid.shape

    def step(rows: Any, t_rows: Any, p_rows: Any) -> FloatArray:
        target = pointwise.smooth_binary_targets(to_float64(t_rows), eps)
        pred = to_float64(p_rows)
        if logits:
            return pointwise.binary_cross_entropy_with_logits(target, pred)
        check_probabilities(pred, rows, steps_shape, "y_pred")
        return pointwise.binary_cross_entropy(target, pred)

    return _finish(per_step(step, valid, as_rows(t), as_rows(p)), valid, weight, reduction)


def categorical_crossentropy(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    class_weight: npt.ArrayLike | None = None,
    reduction: str = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Any:
    r"""Masked cross-entropy with dense (one-hot or soft) targets.

    .. math::
        q' = q(1-\varepsilon) + \tfrac{\varepsilon}{C}, \qquad
        \ell_{bt} = -\sum_c cw_c\, q'_{btc} \log p_{btc}

    ``log p`` is a stable log-softmax of the logits (``from_logits=True``) or the log of
    the probabilities as given: no clipping and no renormalising (that is a framework
    quirk; see :mod:`maskloss.conventions`), and rows need not sum to 1. Class weights
    weight each class inside the sum and do **not** enter the denominator (torch's
    probability-target rule); the denominator is :math:`\sum m\,w`.

    Examples
    --------
    The seed's second case: one-hot targets over ``[a, b, #]``, where ``#`` marks padding.

    >>> import numpy as np, maskloss
    >>> y_true = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]])
    >>> y_pred = np.array([[[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]])
    >>> mask = maskloss.mask_from_sentinel(y_true, [0, 0, 1])
    >>> mask
    array([[ True,  True, False]])
    >>> round(float(maskloss.categorical_crossentropy(y_true, y_pred, mask)), 6)  # (ln 2 + ln 4/3) / 2
    0.490415
    """
    t, p = check_feature_pair(y_true, y_pred)
    num_classes = _check_features(p)
    logits = _check_flag(from_logits, "from_logits")
    eps = check_label_smoothing(label_smoothing)
    cw = check_class_weight(class_weight, num_classes)
    valid = check_mask(mask, p.shape[:-1])
    check_reduction(reduction)
    weight = check_sample_weight(sample_weight, valid)
    steps_shape = valid.shape

    def step(rows: Any, t_rows: Any, p_rows: Any) -> FloatArray:
        target = pointwise.smooth_categorical_targets(to_float64(t_rows), eps)
        pred = to_float64(p_rows)
        if logits:
            return pointwise.cross_entropy(target, pointwise.log_softmax(pred), cw)
        check_probabilities(pred, rows, steps_shape, "y_pred")
        with np.errstate(divide="ignore"):
            return pointwise.cross_entropy(target, np.log(pred), cw)

    return _finish(per_step(step, valid, as_rows(t), as_rows(p)), valid, weight, reduction)


def sparse_categorical_crossentropy(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    from_logits: bool = False,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    class_weight: npt.ArrayLike | None = None,
    reduction: str = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Any:
    r"""Masked cross-entropy with integer labels, exactly as torch's ``cross_entropy`` weighs it.

    A step is valid when the mask says so **and** its label is not ``ignore_index``.
    With :math:`a = m \cdot w \cdot cw_y`:

    .. math::
        n_{bt} = w\Big[(1-\varepsilon)\,cw_y(-\log p_y)
                 + \frac{\varepsilon}{C}\sum_c cw_c(-\log p_c)\Big], \qquad
        \text{token\_mean} = \frac{\sum n_{bt}}{\sum a_{bt}}

    so label smoothing never counts ignored steps, and class weights enter both the
    numerator and the denominator (torch's index-target rule).

    Parameters
    ----------
    y_true : array_like of int, shape (B, T)
        Class labels in ``[0, C)`` at valid steps; anything at masked or ignored steps.
    y_pred : array_like, shape (B, T, C)
        Probabilities, or logits with ``from_logits=True``.
    mask : array_like of bool, shape (B, T), optional
    ignore_index : int, optional
        Label marking steps to ignore (torch's default is -100; here ``None`` means none).
    label_smoothing : float in [0, 1]
    class_weight : array_like, shape (C,), optional

    Examples
    --------
    HF-style labels, padded with -100:

    >>> import numpy as np, maskloss
    >>> logits = np.log([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]])
    >>> labels = np.array([[0, 1, -100]])
    >>> round(float(maskloss.sparse_categorical_crossentropy(
    ...     labels, logits, from_logits=True, ignore_index=-100)), 6)   # (ln 2 + ln 4/3) / 2
    0.490415
    """
    labels = as_numeric(y_true, "y_true")
    p = as_numeric(y_pred, "y_pred", min_ndim=1)
    if p.shape[:-1] != labels.shape:
        raise ValueError(
            f"y_pred must have shape y_true.shape + (classes,); got y_true {labels.shape} and y_pred {p.shape}"
        )
    num_classes = _check_features(p)
    logits = _check_flag(from_logits, "from_logits")
    eps = check_label_smoothing(label_smoothing)
    cw = check_class_weight(class_weight, num_classes)
    valid = check_mask(mask, labels.shape)
    if ignore_index is not None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
        valid = valid & (labels != ignore_index)
    check_reduction(reduction)
    weight = check_sample_weight(sample_weight, valid)
    safe_labels = check_labels(labels, valid, num_classes)
    steps_shape = valid.shape

    def step(rows: Any, lab: Any, p_rows: Any) -> FloatArray:
        pred = to_float64(p_rows)
        if logits:
            log_p = pointwise.log_softmax(pred)
        else:
            check_probabilities(pred, rows, steps_shape, "y_pred")
            with np.errstate(divide="ignore"):
                log_p = np.log(pred)
        return pointwise.sparse_cross_entropy(lab, log_p, cw, eps)

    losses = per_step(step, valid, safe_labels.reshape(-1), as_rows(p))
    step_weight = None if cw is None else cw[safe_labels]
    return _finish(losses, valid, weight, reduction, step_weight)
