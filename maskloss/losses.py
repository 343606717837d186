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

Each loss is one declaration (:func:`maskloss.registry.loss`): a function that validates
its arguments and returns a :class:`~maskloss.pipeline.Pipeline` (valid-step selection,
per-row math, reduction). The public loss evaluates its value, and
:func:`maskloss.value_and_grad` evaluates the same pipeline with the per-row derivatives
switched on, so value and gradient cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import loss_options, pointwise, registry
from maskloss._checks import (
    as_numeric,
    check_class_weight,
    check_feature_pair,
    check_features,
    check_flag,
    check_head_options,
    check_ignore_index,
    check_label_smoothing,
    check_labels,
    check_mask,
    check_reduction,
    check_sample_weight,
)
from maskloss._rows import as_rows, check_probabilities, scratch, to_float64
from maskloss._types import FloatArray, Reduction
from maskloss.head import through_head
from maskloss.pipeline import Pipeline as Pipeline
from maskloss.pipeline import _with_grad
from maskloss.pipeline import per_step as per_step
from maskloss.pipeline import step_losses as step_losses
from maskloss.registry import pipeline_of as pipeline_of
from maskloss.registry import pipeline_transform as pipeline_transform
from maskloss.registry import register_pipeline as register_pipeline

# Pipeline, step_losses (per_step, its deprecated name), pipeline_of, pipeline_transform and
# register_pipeline stay importable from here
# (their homes are maskloss.pipeline and maskloss.registry).
__all__ = [
    "binary_crossentropy",
    "categorical_crossentropy",
    "mae",
    "mse",
    "sparse_categorical_crossentropy",
]


@registry.loss(kind="regression", evaluate=True)
def mae(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    reduction: Reduction = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Pipeline:
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
    loss, derivative = pointwise.absolute_error, pointwise.absolute_error_grad
    return Pipeline.from_pairs(
        y_true, y_pred, mask, reduction=reduction, sample_weight=sample_weight, loss=loss, derivative=derivative
    )


@registry.loss(kind="regression", evaluate=True)
def mse(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    reduction: Reduction = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Pipeline:
    r"""Masked mean squared error: :math:`\ell_{bt} = \frac1F\sum_f (y_{btf} - \hat y_{btf})^2`.

    Arguments and reductions as in :func:`mae`.

    Examples
    --------
    >>> import maskloss
    >>> float(maskloss.mse([[[1.0], [2.0]]], [[[0.0], [99.0]]], [[True, False]]))
    1.0
    """
    loss, derivative = pointwise.squared_error, pointwise.squared_error_grad
    return Pipeline.from_pairs(
        y_true, y_pred, mask, reduction=reduction, sample_weight=sample_weight, loss=loss, derivative=derivative
    )


@registry.loss(kind="binary", evaluate=True)
def binary_crossentropy(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    reduction: Reduction = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Pipeline:
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
    check_features(p)
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


@registry.loss(kind="dense", evaluate=True)
def categorical_crossentropy(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    class_weight: npt.ArrayLike | None = None,
    reduction: Reduction = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
    z_loss: float = 0.0,
) -> Pipeline:
    r"""Masked cross-entropy with dense (one-hot or soft) targets.

    .. math::
        q' = q(1-\varepsilon) + \tfrac{\varepsilon}{C}, \qquad
        \ell_{bt} = -\sum_c cw_c\, q'_{btc} \log p_{btc}

    ``log p`` is a stable log-softmax of the logits (``from_logits=True``) or the log of
    the probabilities as given: no clipping and no renormalising (that is a framework
    quirk; see :mod:`maskloss.conventions`), and rows need not sum to 1. Class weights
    weight each class inside the sum and do **not** enter the denominator (torch's
    probability-target rule); the denominator is :math:`\sum m\,w`.

    The LM-head options act on logits (``from_logits=True``; with probabilities they are an
    error), in the documented order (:mod:`maskloss.head`): ``temperature`` :math:`T > 0`
    divides the logits, ``softcap`` :math:`c > 0` maps them to :math:`c\tanh(x/c)` (``-inf``
    stays ``-inf``), then the log-softmax, smoothing and class weights above, and ``z_loss``
    :math:`z \ge 0` adds :math:`z\operatorname{lse}(h)^2` to every valid step's
    :math:`\ell_{bt}` (not class-weighted), inside the same reduction. Their gradients flow
    through :func:`maskloss.value_and_grad`; the defaults change no bit.

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
    num_classes = check_features(p)
    logits = check_flag(from_logits, "from_logits")
    head = _head(temperature, softcap, z_loss, logits)
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
            if head is not None:
                return through_head(lambda h, g: pointwise.softmax_cross_entropy(coef, h, grad=g), p_rows,
                                    **head, grad=grad)
            return pointwise.softmax_cross_entropy(coef, p_rows, grad=grad)
        pred = to_float64(p_rows)
        log_p, softmax = _log_probabilities(pred, logits, rows, steps_shape, grad)
        loss = pointwise.cross_entropy(target, log_p, cw)
        if not grad:
            return loss
        return loss, pointwise.cross_entropy_grad(target, pred, cw, softmax, from_logits=logits)

    return Pipeline(step, (as_rows(t), as_rows(p)), valid, weight, reduction, p.shape)


def _head(temperature: object, softcap: object, z_loss: object, from_logits: bool) -> dict[str, Any] | None:
    """The head options as :func:`maskloss.head.through_head` keywords, or None at their defaults (no bit changes)."""
    t, cap, z = check_head_options(temperature, softcap, z_loss, from_logits=from_logits)
    if t == 1.0 and cap is None and z == 0.0:
        return None
    return {"temperature": t, "cap": cap, "z": z}


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


@registry.loss(kind="sparse", evaluate=True)
def sparse_categorical_crossentropy(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    from_logits: bool = False,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    class_weight: npt.ArrayLike | None = None,
    reduction: Reduction = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
    z_loss: float = 0.0,
    shift: int = 0,
    smoothing_rule: str = "uniform",
    smoothing_form: str = "cross_entropy",
) -> Pipeline:
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

    The LM-head options act on logits (``from_logits=True``; with probabilities they are an
    error), in the documented order (:mod:`maskloss.head`): ``temperature`` :math:`T > 0`
    divides the logits, ``softcap`` :math:`c > 0` maps them to :math:`c\tanh(x/c)` (``-inf``
    stays ``-inf``), then the log-softmax, smoothing and class weights above, and ``z_loss``
    :math:`z \ge 0` adds :math:`z\operatorname{lse}(h)^2` to every valid step's
    :math:`\ell_{bt}` (not class-weighted), inside the same reduction. Their gradients flow
    through :func:`maskloss.value_and_grad`; the defaults change no bit.

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
    temperature : float > 0, default 1.0
    softcap : float > 0, optional
    z_loss : float >= 0, default 0.0
        The coefficient :math:`z` (Liger's ``lse_square_scale``, PaLM's :math:`10^{-4}`).
    shift : int >= 0, default 0
        The causal shift: label :math:`t + s` scored by the prediction at :math:`t` (HF's
        ``ForCausalLMLoss``, Cut Cross-Entropy's ``shift=1``); ``mask`` and ``sample_weight``
        in the labels' positions. With ``reduction="none"`` the output has ``T - s`` steps
        (the loss of label :math:`t + s` at :math:`t`, as Cut Cross-Entropy's). See :mod:`maskloss.loss_options`.
    smoothing_rule : {"uniform", "others", "others_except_pad"}, default "uniform"
        Where the smoothing mass goes: :math:`\varepsilon/C` to every class (torch), or
        :math:`\varepsilon/(C-1)` to the others (fairseq), or :math:`\varepsilon/(C-2)` to the
        others but the pad class ``ignore_index`` (OpenNMT-py). See :mod:`maskloss.loss_options`.
    smoothing_form : {"cross_entropy", "kl"}, default "cross_entropy"
        The cross-entropy against the smoothed target, or the KL divergence (less :math:`H(q)`).

    Examples
    --------
    HF-style labels, padded with -100:

    >>> import numpy as np, maskloss
    >>> logits = np.log([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]])
    >>> labels = np.array([[0, 1, -100]])
    >>> round(float(maskloss.sparse_categorical_crossentropy(
    ...     labels, logits, from_logits=True, ignore_index=-100)), 6)   # (ln 2 + ln 4/3) / 2
    0.490415

    Gemma's softcap: logits (60, 0) capped at 30 are :math:`h = (30 \tanh 2, 0) = (28.920827, 0)`, so
    label 1 costs :math:`\operatorname{lse}(h) \approx 28.920827` instead of 60:

    >>> round(float(maskloss.sparse_categorical_crossentropy(
    ...     [[1]], [[[60.0, 0.0]]], from_logits=True, softcap=30.0)), 6)
    28.920827
    """
    labels = as_numeric(y_true, "y_true")
    p = as_numeric(y_pred, "y_pred", min_ndim=1)
    if p.shape[:-1] != labels.shape:
        raise ValueError(
            f"y_pred must have shape y_true.shape + (classes,); "
            f"got y_true {labels.shape} and y_pred {p.shape}"
        )
    num_classes = check_features(p)
    logits = check_flag(from_logits, "from_logits")
    head = _head(temperature, softcap, z_loss, logits)
    eps = check_label_smoothing(label_smoothing)
    cw = check_class_weight(class_weight, num_classes)
    valid = check_mask(mask, labels.shape)
    index = check_ignore_index(ignore_index)
    if index is not None:
        valid = valid & (labels != ignore_index)
    check_reduction(reduction)
    s = loss_options.check_shift(shift, labels.shape[-1] if labels.ndim else 0)
    if shift and labels.ndim == 0:  # shift is a checked int here (s is clamped to the 0 steps)
        raise ValueError(f"shift={shift} needs labels with a steps axis, got y_true of shape {labels.shape}")
    smoothing = loss_options.check_smoothing(smoothing_rule, smoothing_form, eps, class_weight=class_weight,
                                             ignore_index=index, num_classes=num_classes)
    if s:  # steps: the labels from position s on, scored by the predictions up to T - s
        valid = valid & (np.arange(labels.shape[-1]) >= s)
        weight = check_sample_weight(sample_weight, valid)[..., s:]
        valid, labels, p = valid[..., s:], labels[..., s:], p[..., : p.shape[-2] - s, :]
    else:
        weight = check_sample_weight(sample_weight, valid)
    safe_labels = check_labels(labels, valid, num_classes)
    steps_shape = valid.shape

    def step(rows: Any, lab: Any, p_rows: Any, grad: bool = False) -> Any:
        if smoothing is not None:
            return _smoothed_step(smoothing, rows, lab, p_rows, logits, head, steps_shape, grad)
        if logits:  # fused: the label column and the row totals only, from the input dtype
            if head is not None:
                return through_head(lambda h, g: pointwise.sparse_softmax_cross_entropy(lab, h, cw, eps, grad=g),
                                    p_rows, **head, grad=grad)
            return pointwise.sparse_softmax_cross_entropy(lab, p_rows, cw, eps, grad=grad)
        pred = to_float64(p_rows)
        log_p, softmax = _log_probabilities(pred, logits, rows, steps_shape, grad)
        loss = pointwise.sparse_cross_entropy(lab, log_p, cw, eps)
        if not grad:
            return loss
        return loss, pointwise.sparse_cross_entropy_grad(lab, pred, cw, eps, softmax, from_logits=logits)

    step_weight = None if cw is None else cw[safe_labels]
    arrays = (safe_labels.reshape(-1), as_rows(p))
    return Pipeline(step, arrays, valid, weight, reduction, p.shape, step_weight, shift=s)


def _smoothed_step(
    smoothing: loss_options.Smoothing, rows: Any, lab: Any, p_rows: Any, logits: bool,
    head: dict[str, Any] | None, steps_shape: tuple[int, ...], grad: bool,
) -> Any:
    """Rows of the sparse cross-entropy against a non-uniform smoothed target (or in the KL form)."""
    coef = smoothing.coefficients(lab, p_rows.shape[-1])

    def row_loss(h: Any, g: bool) -> Any:
        out = pointwise.softmax_cross_entropy(coef, h, grad=g)
        if not smoothing.entropy:
            return out
        return (out[0] - smoothing.entropy, out[1]) if g else out - smoothing.entropy

    if logits:
        return row_loss(p_rows, grad) if head is None else through_head(row_loss, p_rows, **head, grad=grad)
    pred = to_float64(p_rows)
    check_probabilities(pred, rows, steps_shape, "y_pred")
    with np.errstate(divide="ignore"):
        log_p = np.log(pred)
    loss = np.sum(pointwise.negative_log_weighted(coef, log_p), axis=-1) - smoothing.entropy
    return _with_grad(grad, loss, pointwise.negative_log_weighted_grad, coef, pred)


loss_options.declare("sparse_categorical_crossentropy", ("shift", "smoothing_rule", "smoothing_form"))
