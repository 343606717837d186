r"""The masked losses: validate, select the valid steps, apply the per-step math, reduce.

Every loss has the Keras call shape ``fn(y_true, y_pred, mask=None, *,
reduction="token_mean", sample_weight=None, ...)``. The mask (True = valid) has
the shape of the steps, ``y_pred.shape[:-1]``; the last axis of ``y_pred`` holds
features (regression, binary) or classes. Results are float64 whatever the input
dtype: a ``numpy.float64`` scalar, or for ``reduction="none"`` an array of the
mask's shape that is exactly 0 at masked steps.

Masked steps are excluded by selection, never by multiplication: NaN, inf, huge
values or out-of-range labels under the mask never change a result and never raise.
The mask is ``mask=`` only: a ``numpy.ma`` array with a masked entry, as any argument,
is refused with a TypeError naming it (its own mask is never silently dropped; see
:mod:`maskloss.masks`).

Each loss is one :class:`Pipeline` (validation, valid-step selection, per-row math,
reduction) built by its ``_<loss>_pipeline`` function: the public loss evaluates its
value, and :func:`maskloss.gradients.value_and_grad` evaluates the same pipeline with
the per-row derivatives switched on, so value and gradient cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import (
    as_numeric,
    check_class_weight,
    check_feature_pair,
    check_flag,
    check_label_smoothing,
    check_labels,
    check_mask,
    check_reduction,
    check_sample_weight,
)
from maskloss._rows import StepFn, as_rows, check_probabilities, map_rows, scratch, to_float64
from maskloss._types import BoolArray, FloatArray
from maskloss.reductions import SCALAR_REDUCTIONS, MaskedTotals, power_of_two_scale, reduce_terms, unscale

__all__ = [
    "Pipeline",
    "binary_crossentropy",
    "categorical_crossentropy",
    "mae",
    "mse",
    "per_step",
    "pipeline_of",
    "pipeline_transform",
    "register_pipeline",
    "sparse_categorical_crossentropy",
]



def _check_features(y_pred: np.ndarray[Any, Any], name: str = "y_pred") -> int:
    width = y_pred.shape[-1]
    if width == 0:
        raise ValueError(f"{name} has no features/classes: its last axis has size 0 (shape {y_pred.shape})")
    return int(width)


def per_step(step: StepFn, valid: BoolArray, *arrays: np.ndarray[Any, Any]) -> FloatArray:
    """Evaluate ``step(rows, *row_chunks)`` on the valid steps only; 0 at masked steps.

    ``arrays`` are ``(steps, width)`` or ``(steps,)`` views aligned with ``valid.ravel()``.
    """
    return map_rows(step, valid, arrays)[0].reshape(valid.shape)


def _with_grad(grad: bool, loss: FloatArray, derivative: Callable[..., FloatArray], *args: Any) -> Any:
    """``loss``, or ``(loss, derivative(*args))`` when the gradient is asked for."""
    return (loss, derivative(*args)) if grad else loss


@dataclass(slots=True)
class Pipeline:
    r"""A validated loss call: everything but the per-row math is decided here, once.

    Attributes
    ----------
    step : StepFn
        Per-row loss (and its derivative, when asked) on chunks of valid rows.
    arrays : tuple of ndarray
        Row views aligned with ``valid.ravel()``; the last one holds the predictions.
    valid : ndarray of bool
        Steps that count (the mask, and for integer labels ``!= ignore_index``).
    weight : ndarray
        Sample weight of each step, 0 at masked steps.
    reduction : str
    pred_shape : tuple of int
        Shape of ``y_pred``, hence of the gradient.
    step_weight : ndarray, optional
        Extra per-step weight of the denominator only (torch's :math:`cw_y`).
    """

    step: StepFn
    arrays: tuple[np.ndarray[Any, Any], ...]
    valid: BoolArray
    weight: FloatArray
    reduction: str
    pred_shape: tuple[int, ...]
    step_weight: FloatArray | None = None

    def _denominator_terms(self, weight: FloatArray | None = None) -> FloatArray:
        w = self.weight if weight is None else weight
        if self.step_weight is None:
            return w  # already 0 at masked steps
        return np.where(self.valid, w * self.step_weight, 0.0)

    def _reduce(self, losses: FloatArray) -> Any:
        """Numerator terms :math:`w\\,\\ell`, denominator terms :math:`w\\,cw_y`, reduced.

        Scalar reductions use the weights scaled by a power of two (exact), so that a
        uniform weight cancels whatever its size (:func:`power_of_two_scale`).
        """
        if self.reduction == "none":
            return reduce_terms(self.weight * losses, self._denominator_terms(), self.reduction)
        w, exponent = power_of_two_scale(self.weight)
        return unscale(reduce_terms(w * losses, self._denominator_terms(w), self.reduction), self.reduction, exponent)

    def value(self) -> Any:
        """The loss under ``reduction`` (an array of the steps' shape for ``"none"``)."""
        return self._reduce(per_step(self.step, self.valid, *self.arrays))

    def totals(self) -> MaskedTotals:
        """The per-sequence numerator and denominator sums behind every scalar reduction."""
        losses = per_step(self.step, self.valid, *self.arrays)
        return MaskedTotals.from_terms(self.weight * losses, self._denominator_terms())

    def value_and_grad(self, out: np.ndarray[Any, Any] | None = None) -> tuple[np.float64, Any]:
        r"""The scalar loss and its gradient with respect to ``y_pred`` (float64, ``pred_shape``).

        The value is :math:`\sum_b \lambda_b N_b` with :math:`N_b = \sum_t w_{bt}\ell_{bt}`
        and :math:`\lambda_b` from :meth:`MaskedTotals.sequence_scale`, which depends on the
        denominators only; so the gradient row of a valid step is
        :math:`\lambda_b\, w_{bt}\, \partial\ell_{bt}/\partial\hat y_{bt}`, computed in the same
        chunk pass as the losses. Masked rows are exactly 0. With ``out`` (see
        :func:`maskloss.value_and_grad`) the gradient is written there and ``out`` returned.
        """
        if self.reduction not in SCALAR_REDUCTIONS:
            raise ValueError(
                f"value_and_grad needs a scalar loss, but reduction={self.reduction!r} returns one value "
                f"per step; pick a scalar reduction: one of {', '.join(map(repr, SCALAR_REDUCTIONS))}"
            )
        weight, exponent = power_of_two_scale(self.weight)
        denominators = self._denominator_terms(weight)
        # lambda_b depends only on the denominators (sequence_scale's contract), so it is known
        # before the per-step losses are; zeros stand in for the numerators here.
        totals = MaskedTotals.from_terms(np.zeros_like(denominators), denominators)
        # One factor per step: the sequence's lambda_b times the step's sample weight.
        grad_scale = unscale(totals.step_scale(self.reduction, weight).reshape(-1), self.reduction, exponent)
        grad_out = None if out is None else _check_grad_out(out, self.pred_shape, self.arrays)
        losses, grad = map_rows(self.step, self.valid, self.arrays, grad_scale=grad_scale, grad_out=grad_out)
        assert grad is not None
        value = np.float64(self._reduce(losses.reshape(self.valid.shape)))
        return value, (grad.reshape(self.pred_shape) if out is None else out)

    def totals_and_grad(self, scale_of: Callable[[MaskedTotals], FloatArray]) -> tuple[MaskedTotals, FloatArray]:
        r"""The loss's :class:`MaskedTotals` and the gradient of :math:`\sum_b \lambda_b N_b`.

        ``scale_of`` receives totals holding the denominators :math:`D_b` (numerators 0)
        and returns the coefficients :math:`\lambda_b`, shape (B,): an accumulation rule's
        (:meth:`maskloss.GlobalCounts.scale`), which depend on global, unscaled counts, so
        the weights are used as given here.
        """
        denominators = self._denominator_terms()
        scale = scale_of(MaskedTotals.from_terms(np.zeros_like(denominators), denominators))
        steps_per_sequence = self.weight.size // scale.shape[0] if scale.shape[0] else 0
        grad_scale = (self.weight.reshape(scale.shape[0], steps_per_sequence) * scale[:, None]).reshape(-1)
        losses, grad = map_rows(self.step, self.valid, self.arrays, grad_scale=grad_scale)
        assert grad is not None
        numerators = self.weight * losses.reshape(self.valid.shape)
        return MaskedTotals.from_terms(numerators, denominators), grad.reshape(self.pred_shape)


def _check_grad_out(
    out: Any, shape: tuple[int, ...], arrays: tuple[np.ndarray[Any, Any], ...]
) -> np.ndarray[Any, Any]:
    """``out`` as ``(steps, C)`` rows, if it can hold the gradient: else a clear error."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array of y_pred's shape {shape}, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out must have y_pred's shape {shape}, got {out.shape}")
    pred = arrays[-1]
    if out.dtype != np.float64 and out.dtype != pred.dtype:
        raise TypeError(f"out must be float64 or y_pred's dtype {pred.dtype}, got dtype {out.dtype}")
    if out.dtype.kind != "f":
        raise TypeError(f"out must have a floating dtype, got dtype {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array")
    if any(np.may_share_memory(out, a) for a in arrays):
        raise ValueError("out must not share memory with the inputs (the gradient would overwrite them)")
    return out.reshape(-1, shape[-1]) if shape else out.reshape(1, 1)


def _regression(
    loss: Callable[[FloatArray, FloatArray], FloatArray],
    derivative: Callable[[FloatArray, FloatArray], FloatArray],
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None,
    reduction: str,
    sample_weight: npt.ArrayLike | None,
) -> Pipeline:
    t, p = check_feature_pair(y_true, y_pred)
    _check_features(p)
    valid = check_mask(mask, p.shape[:-1])
    check_reduction(reduction)
    weight = check_sample_weight(sample_weight, valid)

    def step(rows: Any, t_rows: Any, p_rows: Any, grad: bool = False) -> Any:
        target, pred = to_float64(t_rows, "target"), to_float64(p_rows)
        return _with_grad(grad, loss(target, pred), derivative, target, pred)

    return Pipeline(step, (as_rows(t), as_rows(p)), valid, weight, reduction, p.shape)


def _mae_pipeline(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    reduction: str = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Pipeline:
    loss, derivative = pointwise.absolute_error, pointwise.absolute_error_grad
    return _regression(loss, derivative, y_true, y_pred, mask, reduction, sample_weight)


def _mse_pipeline(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    reduction: str = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Pipeline:
    loss, derivative = pointwise.squared_error, pointwise.squared_error_grad
    return _regression(loss, derivative, y_true, y_pred, mask, reduction, sample_weight)


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
        \text{token\_mean} = \frac{\sum_{bt} m_{bt} w_{bt} \ell_{bt}}{\sum_{bt} m_{bt} w_{bt}}

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
    return _mae_pipeline(y_true, y_pred, mask, reduction=reduction, sample_weight=sample_weight).value()


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
    return _mse_pipeline(y_true, y_pred, mask, reduction=reduction, sample_weight=sample_weight).value()


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
    return _binary_pipeline(
        y_true, y_pred, mask, from_logits=from_logits, label_smoothing=label_smoothing,
        reduction=reduction, sample_weight=sample_weight,
    ).value()


def _binary_pipeline(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    reduction: str = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Pipeline:
    t, p = check_feature_pair(y_true, y_pred)
    _check_features(p)
    logits = check_flag(from_logits, "from_logits")
    eps = check_label_smoothing(label_smoothing)
    valid = check_mask(mask, p.shape[:-1])
    check_reduction(reduction)
    weight = check_sample_weight(sample_weight, valid)
    steps_shape = valid.shape

    def step(rows: Any, t_rows: Any, p_rows: Any, grad: bool = False) -> Any:
        target = pointwise.smooth_binary_targets(to_float64(t_rows, "target"), eps)
        pred = to_float64(p_rows)
        if logits:
            loss = pointwise.binary_cross_entropy_with_logits(target, pred)
            return _with_grad(grad, loss, pointwise.binary_cross_entropy_with_logits_grad, target, pred)
        check_probabilities(pred, rows, steps_shape, "y_pred")
        loss = pointwise.binary_cross_entropy(target, pred)
        return _with_grad(grad, loss, pointwise.binary_cross_entropy_grad, target, pred)

    return Pipeline(step, (as_rows(t), as_rows(p)), valid, weight, reduction, p.shape)


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
    return _categorical_pipeline(
        y_true, y_pred, mask, from_logits=from_logits, label_smoothing=label_smoothing,
        class_weight=class_weight, reduction=reduction, sample_weight=sample_weight,
    ).value()


def _log_probabilities(
    pred: FloatArray, logits: bool, rows: Any, steps_shape: tuple[int, ...], grad: bool
) -> tuple[FloatArray, FloatArray | None]:
    """``log p``: ``log_softmax`` of logits, or the log of (checked) probabilities as given.

    With logits and ``grad``, also the softmax, from the same exponential.
    """
    if logits:
        if grad:
            return pointwise.log_softmax_and_softmax(pred)
        return pointwise.log_softmax(pred), None
    check_probabilities(pred, rows, steps_shape, "y_pred")
    with np.errstate(divide="ignore"):
        return np.log(pred, out=scratch("log_p", pred.shape)), None


def _categorical_pipeline(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    class_weight: npt.ArrayLike | None = None,
    reduction: str = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Pipeline:
    t, p = check_feature_pair(y_true, y_pred)
    num_classes = _check_features(p)
    logits = check_flag(from_logits, "from_logits")
    eps = check_label_smoothing(label_smoothing)
    cw = check_class_weight(class_weight, num_classes)
    valid = check_mask(mask, p.shape[:-1])
    check_reduction(reduction)
    weight = check_sample_weight(sample_weight, valid)
    steps_shape = valid.shape

    def step(rows: Any, t_rows: Any, p_rows: Any, grad: bool = False) -> Any:
        target = pointwise.smooth_categorical_targets(to_float64(t_rows, "target"), eps)
        if logits:
            coef = target if cw is None else target * cw
            return pointwise.softmax_cross_entropy(coef, p_rows, grad=grad)
        pred = to_float64(p_rows)
        log_p, softmax = _log_probabilities(pred, logits, rows, steps_shape, grad)
        loss = pointwise.cross_entropy(target, log_p, cw)
        if not grad:
            return loss
        return loss, pointwise.cross_entropy_grad(target, pred, cw, softmax, from_logits=logits)

    return Pipeline(step, (as_rows(t), as_rows(p)), valid, weight, reduction, p.shape)


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
    With the numerator terms :math:`n_{bt} = m\,w\,\ell_{bt}` and the denominator terms
    :math:`d_{bt} = m\,w\,cw_y`:

    .. math::
        \ell_{bt} = (1-\varepsilon)\,cw_y(-\log p_y)
                 + \frac{\varepsilon}{C}\sum_c cw_c(-\log p_c), \qquad
        \text{token\_mean} = \frac{\sum n_{bt}}{\sum d_{bt}}

    (so a step whose label has :math:`cw_y = 0` still has :math:`n_{bt} \ne 0` when
    :math:`\varepsilon > 0`)

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
    return _sparse_pipeline(
        y_true, y_pred, mask, from_logits=from_logits, ignore_index=ignore_index,
        label_smoothing=label_smoothing, class_weight=class_weight, reduction=reduction,
        sample_weight=sample_weight,
    ).value()


def _sparse_pipeline(
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
) -> Pipeline:
    labels = as_numeric(y_true, "y_true")
    p = as_numeric(y_pred, "y_pred", min_ndim=1)
    if p.shape[:-1] != labels.shape:
        raise ValueError(
            f"y_pred must have shape y_true.shape + (classes,); "
            f"got y_true {labels.shape} and y_pred {p.shape}"
        )
    num_classes = _check_features(p)
    logits = check_flag(from_logits, "from_logits")
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

    def step(rows: Any, lab: Any, p_rows: Any, grad: bool = False) -> Any:
        if logits:  # fused: the label column and the row totals only, from the input dtype
            return pointwise.sparse_softmax_cross_entropy(lab, p_rows, cw, eps, grad=grad)
        pred = to_float64(p_rows)
        log_p, softmax = _log_probabilities(pred, logits, rows, steps_shape, grad)
        loss = pointwise.sparse_cross_entropy(lab, log_p, cw, eps)
        if not grad:
            return loss
        return loss, pointwise.sparse_cross_entropy_grad(lab, pred, cw, eps, softmax, from_logits=logits)

    step_weight = None if cw is None else cw[safe_labels]
    arrays = (safe_labels.reshape(-1), as_rows(p))
    return Pipeline(step, arrays, valid, weight, reduction, p.shape, step_weight)


_PIPELINES: dict[Callable[..., Any], Callable[..., Pipeline]] = {
    mae: _mae_pipeline,
    mse: _mse_pipeline,
    binary_crossentropy: _binary_pipeline,
    categorical_crossentropy: _categorical_pipeline,
    sparse_categorical_crossentropy: _sparse_pipeline,
}


def register_pipeline(fn: Callable[..., Any], builder: Callable[..., Pipeline]) -> None:
    """Make ``fn`` (a public loss defined in another module) usable with :func:`pipeline_transform`."""
    _PIPELINES[fn] = builder


def pipeline_of(fn: Callable[..., Any]) -> Callable[..., Pipeline] | None:
    """The pipeline builder of the public loss ``fn`` (same parameters), or None if ``fn`` is not one."""
    return _PIPELINES.get(fn)


T = TypeVar("T")


def pipeline_transform(
    fn: Callable[..., Any], name: str, run: Callable[..., T], keywords: tuple[str, ...] = ()
) -> Callable[..., T]:
    """A function with ``fn``'s signature that builds ``fn``'s pipeline and returns ``run(pipeline)``.

    The shared machinery of :func:`maskloss.value_and_grad` and :func:`maskloss.masked_totals`.
    Extra keyword-only arguments named in ``keywords`` are passed on to ``run``.
    """
    builder = pipeline_of(fn)
    if builder is None:
        raise TypeError(
            f"{name}(fn): fn must be one of maskloss's losses (mae, mse, binary_crossentropy, "
            f"categorical_crossentropy, sparse_categorical_crossentropy); got {fn!r}"
        )
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        extra = {key: kwargs.pop(key) for key in keywords if key in kwargs}
        bound = signature.bind(*args, **kwargs)
        return run(builder(*bound.args, **bound.kwargs), **extra)

    wrapper.__doc__ = f"{name} of maskloss.{fn.__name__}; see maskloss.{name}.\n\n{fn.__doc__ or ''}"
    return wrapper
