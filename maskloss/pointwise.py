r"""Per-step losses: pure float64 math on rows of already selected valid steps.

Every function here takes 2-D arrays of shape ``(n, C)`` (one row per valid step,
features or classes on the last axis, already float64) and returns ``(n,)``. Masking
happened before these are called (the rows are a compaction of the valid steps), so
nothing here ever sees padding.

Conventions used throughout: :math:`0 \cdot \log 0 = 0` (a target with no mass on a
class ignores that class, as ``scipy.special.xlogy`` does); a class or target with
positive mass on a probability of 0 costs :math:`+\infty`, honestly.

Beside each loss sits its derivative with respect to the prediction rows (the
``*_grad`` functions, same ``(n, C)`` shape as the predictions), in closed form; the
derivations are in ``docs/course/04-gradients.md``. A term with zero coefficient
(:math:`0 \cdot \log p`) has derivative 0 even at :math:`p = 0`; a term with positive
coefficient at :math:`p = 0` has the honest infinite derivative.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maskloss._rows import scratch
from maskloss._types import FloatArray, IntArray

__all__ = [
    "SMOOTHING_FORMS",
    "SMOOTHING_RULES",
    "absolute_error",
    "absolute_error_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "expm1_minus_x",
    "log_softmax",
    "log_softmax_and_softmax",
    "negative_log_weighted",
    "negative_log_weighted_grad",
    "overflow_free_mean",
    "sigmoid",
    "smooth_binary_targets",
    "smooth_categorical_targets",
    "smoothed_cross_entropy",
    "smoothed_target",
    "softmax_cross_entropy",
    "sparse_cross_entropy",
    "sparse_cross_entropy_grad",
    "sparse_softmax_cross_entropy",
    "sparse_target_coefficients",
    "squared_error",
    "squared_error_grad",
]


def _float64(x: Any) -> FloatArray:
    """``x`` typed as a float64 array (a no-op on the float64 arrays computed here)."""
    return np.asarray(x, dtype=np.float64)


def overflow_free_mean(terms: FloatArray, axis: int, count: Any) -> FloatArray:
    r"""``sum(terms, axis) / count``, also where the sum of finite terms overflows.

    Where a sum of finite terms is not finite (the mean of errors of ``1e308`` is
    ``1e308``, their sum is not a float64), it is taken again on :math:`x\,2^{-e}`, the
    largest :math:`|x|` of that sum brought into :math:`[1/2, 1)` exactly, and the mean
    multiplied back by :math:`2^e`. Finite sums are never recomputed, so ordinary inputs
    give ``np.mean``'s sum-then-divide bit for bit. ``count`` broadcasts against the sums.

    Examples
    --------
    >>> import numpy as np
    >>> overflow_free_mean(np.array([[1e308, 1e308], [1.0, 2.0]]), -1, 2).tolist()
    [1e+308, 1.5]
    """
    with np.errstate(over="ignore", invalid="ignore"):
        mean = _float64(np.add.reduce(terms, axis=axis) / count)
    redo = ~np.isfinite(mean)
    if not redo.any() or terms.shape[axis] == 0:  # nothing summed: 0/0 stays NaN
        return mean
    top = np.maximum.reduce(np.abs(terms), axis=axis)
    redo &= np.isfinite(top) & (top > 0)  # a non-finite term, or nothing to average: keep the value
    if not redo.any():
        return mean
    exponent = np.where(redo, np.frexp(top)[1], 0)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.add.reduce(np.ldexp(terms, -np.expand_dims(exponent, axis)), axis=axis) / count
        return _float64(np.where(redo, np.ldexp(scaled, exponent), mean))


def _feature_mean(terms: FloatArray) -> FloatArray:
    """The mean over the last axis: ``np.mean``'s sum-then-divide, bit for bit, without its overhead."""
    return overflow_free_mean(terms, -1, terms.shape[-1])


#: Taylor coefficients 1/k! for k = 2..18 of e^x - 1 - x (the remainder below 2^-60 of the sum for |x| < 1/2).
_EXPM1_MINUS_X_TAYLOR = tuple(1.0 / float(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(2, 19))


def expm1_minus_x(x: FloatArray) -> FloatArray:
    r"""Compute :math:`e^x - 1 - x` to full relative precision, also where it is tiny.

    ``np.expm1(x) - x`` cancels catastrophically near 0 (it is 0 at :math:`x = 2^{-60}`, where the
    value is :math:`2^{-121}`); for :math:`|x| < 1/2` the Taylor series
    :math:`x^2 \sum_{k\ge2} x^{k-2}/k!` (Horner, terms to :math:`k = 18`) is used instead.

    Examples
    --------
    >>> import numpy as np
    >>> float(expm1_minus_x(np.array(2.0**-60)) / 2.0**-121)    # x^2/2 + x^3/6 + ...
    1.0
    """
    x = _float64(x)
    small = np.abs(x) < 0.5
    xs = np.where(small, x, 0.0)
    series = np.zeros_like(xs)
    for c in reversed(_EXPM1_MINUS_X_TAYLOR):
        series = series * xs + c
    return np.where(small, xs * xs * series, np.expm1(np.where(small, 0.0, x)) - x)


def absolute_error(y_true: FloatArray, y_pred: FloatArray) -> FloatArray:
    r""":math:`\frac1F \sum_f |y_f - \hat y_f|` (Keras ``mae``, mean over the last axis)."""
    return _feature_mean(np.abs(y_true - y_pred))


def absolute_error_grad(y_true: FloatArray, y_pred: FloatArray) -> FloatArray:
    r""":math:`\partial/\partial \hat y_f = \operatorname{sign}(\hat y_f - y_f)/F`.

    At zero error the subgradient :math:`\operatorname{sign}(0) = 0` is used, as torch's
    ``l1_loss`` backward does.
    """
    return _float64(np.sign(y_pred - y_true) / y_pred.shape[-1])


def squared_error(y_true: FloatArray, y_pred: FloatArray) -> FloatArray:
    r""":math:`\frac1F \sum_f (y_f - \hat y_f)^2` (Keras ``mse``, mean over the last axis)."""
    return _feature_mean(np.square(y_true - y_pred))


def squared_error_grad(y_true: FloatArray, y_pred: FloatArray) -> FloatArray:
    r""":math:`\partial/\partial \hat y_f = 2(\hat y_f - y_f)/F`."""
    return _float64(2.0 * (y_pred - y_true) / y_pred.shape[-1])


def negative_log_weighted(coef: FloatArray, log_p: FloatArray, *, buffer: str | None = None) -> FloatArray:
    r""":math:`-c \log p` elementwise, with :math:`0 \cdot \log 0 = 0` (no NaN from ``0·inf``).

    With ``buffer``, the result is written into that reused scratch buffer
    (:func:`maskloss._rows.scratch`): only for a result consumed before the next call.
    """
    if buffer is None:
        with np.errstate(invalid="ignore"):
            return np.where(coef == 0, 0.0, -coef * log_p)
    out = scratch(buffer, np.broadcast_shapes(np.shape(coef), np.shape(log_p)))
    with np.errstate(invalid="ignore"):
        np.multiply(coef, log_p, out=out)
    np.negative(out, out=out)
    np.copyto(out, 0.0, where=coef == 0)
    return out


def negative_log_weighted_grad(coef: FloatArray, p: FloatArray, *, buffer: str | None = None) -> FloatArray:
    r""":math:`\partial(-c \log p)/\partial p = -c/p`, and 0 where :math:`c = 0` (even at :math:`p = 0`).

    A positive ``c`` at :math:`p = 0` gives :math:`-\infty`, the honest derivative.
    ``buffer`` as in :func:`negative_log_weighted`.
    """
    if buffer is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(coef == 0, 0.0, -coef / p)
    out = scratch(buffer, np.broadcast_shapes(np.shape(coef), np.shape(p)))
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(coef, p, out=out)
    np.negative(out, out=out)
    np.copyto(out, 0.0, where=coef == 0)
    return out


def _log(p: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore"):
        return np.log(p)


def smooth_binary_targets(y_true: FloatArray, label_smoothing: float) -> FloatArray:
    r""":math:`y(1-\varepsilon) + \varepsilon/2` (Keras binary label smoothing)."""
    return y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else y_true


def smooth_categorical_targets(y_true: FloatArray, label_smoothing: float) -> FloatArray:
    r""":math:`y(1-\varepsilon) + \varepsilon/C` (Keras and torch categorical smoothing)."""
    if not label_smoothing:
        return y_true
    return _float64(y_true * (1.0 - label_smoothing) + label_smoothing / y_true.shape[-1])


def binary_cross_entropy(y_true: FloatArray, y_pred: FloatArray) -> FloatArray:
    r""":math:`-\frac1F\sum_f \big(y_f \log p_f + (1-y_f)\log(1-p_f)\big)`, probabilities as given.

    A term whose coefficient (:math:`y_f` or :math:`1-y_f`) is 0 is 0, even at
    :math:`p_f \in \{0, 1\}` (:func:`negative_log_weighted`, in reused scratch buffers).
    """
    complement = np.subtract(1.0, y_true, out=scratch("bce_complement", y_true.shape))
    with np.errstate(divide="ignore"):
        log_p = np.log(y_pred, out=scratch("bce_positive", y_pred.shape))
        log_q = np.negative(y_pred, out=scratch("bce_negative", y_pred.shape))
        np.log1p(log_q, out=log_q)  # log(1 - p) without rounding 1 - p
    terms = negative_log_weighted(y_true, log_p, buffer="bce_positive")
    terms += negative_log_weighted(complement, log_q, buffer="bce_negative")
    return _feature_mean(terms)


def binary_cross_entropy_grad(y_true: FloatArray, y_pred: FloatArray) -> FloatArray:
    r""":math:`\partial/\partial p_f = \big(-y_f/p_f + (1-y_f)/(1-p_f)\big)/F`.

    Each term is 0 where its coefficient (:math:`y_f` or :math:`1-y_f`) is 0
    (:func:`negative_log_weighted_grad`, in reused scratch buffers).
    """
    complement = np.subtract(1.0, y_true, out=scratch("bce_complement", y_true.shape))
    one_minus_p = np.subtract(1.0, y_pred, out=scratch("bce_negative", y_pred.shape))
    dp = negative_log_weighted_grad(y_true, y_pred, buffer="bce_positive")
    dp -= negative_log_weighted_grad(complement, one_minus_p, buffer="bce_negative")
    dp /= y_pred.shape[-1]
    return dp


def binary_cross_entropy_with_logits(y_true: FloatArray, logits: FloatArray) -> FloatArray:
    r"""Stable logit form :math:`\frac1F\sum_f \max(x_f,0) - x_f y_f + \log(1+e^{-|x_f|})`."""
    terms = np.maximum(logits, 0.0, out=scratch("bce_terms", logits.shape))
    product = np.multiply(logits, y_true, out=scratch("bce_product", logits.shape))
    with np.errstate(invalid="ignore", over="ignore"):
        np.subtract(terms, product, out=terms)
        softplus = np.abs(logits, out=product)
        np.negative(softplus, out=softplus)
        np.exp(softplus, out=softplus)
        np.log1p(softplus, out=softplus)
        np.add(terms, softplus, out=terms)
    return _feature_mean(terms)


def sigmoid(x: FloatArray) -> FloatArray:
    r""":math:`1/(1+e^{-x})`, evaluated without overflow for any float ``x``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def binary_cross_entropy_with_logits_grad(y_true: FloatArray, logits: FloatArray) -> FloatArray:
    r""":math:`\partial/\partial x_f = (\sigma(x_f) - y_f)/F`.

    Evaluated as :math:`\big((1-y) - y e\big)/(1+e)` with :math:`e = e^{-x}` for
    :math:`x \ge 0` (and :math:`\big(e(1-y) - y\big)/(1+e)`, :math:`e = e^{x}`, below), so
    that :math:`\sigma(40) - 1 = -4.2\cdot 10^{-18}` is not rounded to 0.
    """
    e = np.abs(logits, out=scratch("bce_exp", logits.shape))
    np.negative(e, out=e)
    np.exp(e, out=e)
    positive = logits >= 0
    complement = np.subtract(1.0, y_true, out=scratch("bce_complement", y_true.shape))
    with np.errstate(invalid="ignore", over="ignore"):
        upper = np.multiply(e, complement, out=scratch("bce_upper", logits.shape))
        np.copyto(upper, complement, where=positive)
        lower = np.multiply(y_true, e, out=scratch("bce_lower", logits.shape))
        np.copyto(lower, y_true, where=~positive)
        np.subtract(upper, lower, out=upper)
        np.add(e, 1.0, out=e)
        np.divide(upper, e, out=upper)
    upper /= logits.shape[-1]
    return _float64(upper)


def _log_softmax_parts(logits: FloatArray) -> tuple[FloatArray, FloatArray, Any]:
    """``log_softmax``, ``exp(x - max x)`` with 0 at one maximal entry, and that entry's index."""
    x = np.asarray(logits, dtype=np.float64)
    j = np.argmax(x, axis=-1)[..., None]
    shifted = x - np.take_along_axis(x, j, axis=-1)
    e = np.exp(shifted)
    np.put_along_axis(e, j, 0.0, axis=-1)
    shifted -= np.log1p(np.sum(e, axis=-1, keepdims=True))
    return shifted, e, j


def log_softmax(logits: FloatArray) -> FloatArray:
    r""":math:`x_c - \max_k x_k - \log\sum_k e^{x_k - \max_k x_k}`, stable for any finite row.

    The log-sum is :math:`\operatorname{log1p}` of the sum without one maximal term, so a
    confident row keeps the relative accuracy of its tiny :math:`-\log p_{\max}`.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.shape[-1] == 0:
        return x.copy()
    return _log_softmax_parts(x)[0]


def log_softmax_and_softmax(logits: FloatArray) -> tuple[FloatArray, FloatArray]:
    r""":func:`log_softmax` (the same bits) and the softmax, :math:`e^{x_c - \max x}/\sum_k e^{x_k - \max x}`.

    Both from one exponential of the row (the gradient's softmax costs no second ``exp``),
    so ``value_and_grad`` reports exactly the value of the loss itself.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.shape[-1] == 0:
        return x.copy(), x.copy()
    log_p, exp, j = _log_softmax_parts(x)
    np.put_along_axis(exp, j, np.exp(np.take_along_axis(x, j, axis=-1) - np.take_along_axis(x, j, axis=-1)), axis=-1)
    exp /= np.sum(exp, axis=-1, keepdims=True)
    return log_p, exp


def cross_entropy(
    targets: FloatArray, log_p: FloatArray, class_weight: FloatArray | None = None
) -> FloatArray:
    r""":math:`-\sum_c cw_c\, q_c \log p_c` for dense (possibly soft, unnormalised) targets ``q``."""
    terms = negative_log_weighted(_coefficients(targets, class_weight), log_p, buffer="terms")
    return _float64(np.add.reduce(terms, axis=-1))


def _coefficients(targets: FloatArray, class_weight: FloatArray | None) -> FloatArray:
    if class_weight is None:
        return targets
    return _float64(np.multiply(targets, class_weight, out=scratch("coefficients", targets.shape)))


def cross_entropy_grad(
    targets: FloatArray,
    pred: FloatArray,
    class_weight: FloatArray | None = None,
    softmax: FloatArray | None = None,
    *,
    from_logits: bool,
) -> FloatArray:
    r"""Derivative of :func:`cross_entropy` with respect to the prediction rows.

    With coefficients :math:`k_c = cw_c\, q_c` (the loss is :math:`-\sum_c k_c \log p_c`):
    for probabilities (``from_logits=False``) :math:`\partial\ell/\partial p_c = -k_c/p_c`
    (0 where :math:`k_c = 0`); for logits, with :math:`\log p = \operatorname{log\_softmax}(x)`
    (pass :math:`\operatorname{softmax}(x)` as ``softmax`` when already computed),

    .. math:: \partial\ell/\partial x_c = \operatorname{softmax}(x)_c \sum_k k_k - k_c.
    """
    coef = _coefficients(targets, class_weight)
    if not from_logits:
        return negative_log_weighted_grad(coef, pred, buffer="derivative")
    if softmax is None:
        softmax = log_softmax_and_softmax(pred)[1]
    return _float64(softmax * np.sum(coef, axis=-1, keepdims=True) - coef)


def sparse_cross_entropy(
    labels: IntArray, log_p: FloatArray, class_weight: FloatArray | None, label_smoothing: float
) -> FloatArray:
    r"""torch's index-target cross-entropy for each row, with class weights and smoothing.

    .. math::
        \ell = (1-\varepsilon)\, cw_y\,(-\log p_y)
               + \frac{\varepsilon}{C}\sum_c cw_c\,(-\log p_c)

    (the numerator term; the denominator term of the step is :math:`cw_y`).
    """
    rows = np.arange(labels.shape[0])
    cw_y = np.ones(labels.shape[0]) if class_weight is None else class_weight[labels]
    loss = negative_log_weighted((1.0 - label_smoothing) * cw_y, log_p[rows, labels])
    if label_smoothing:
        cw = np.ones(log_p.shape[-1]) if class_weight is None else class_weight
        spread = np.broadcast_to(label_smoothing / log_p.shape[-1] * cw, log_p.shape)
        loss = loss + np.add.reduce(negative_log_weighted(spread, log_p, buffer="terms"), axis=-1)
    return loss


def sparse_target_coefficients(
    labels: IntArray, num_classes: int, class_weight: FloatArray | None, label_smoothing: float
) -> FloatArray:
    r"""The coefficients :math:`k_c` that write :func:`sparse_cross_entropy` as :math:`-\sum_c k_c \log p_c`.

    .. math:: k_c = (1-\varepsilon)\, cw_y\, [c = y] + \frac{\varepsilon}{C} cw_c
    """
    rows = np.arange(labels.shape[0])
    cw = np.ones(num_classes) if class_weight is None else class_weight
    coef = scratch("coefficients", (labels.shape[0], num_classes))
    coef[:] = label_smoothing / num_classes * cw
    coef[rows, labels] += (1.0 - label_smoothing) * cw[labels]
    return coef


def sparse_cross_entropy_grad(
    labels: IntArray,
    pred: FloatArray,
    class_weight: FloatArray | None,
    label_smoothing: float,
    softmax: FloatArray | None = None,
    *,
    from_logits: bool,
) -> FloatArray:
    r"""Derivative of :func:`sparse_cross_entropy` with respect to the prediction rows.

    :func:`cross_entropy_grad` with the coefficients of
    :func:`sparse_target_coefficients`; with logits, :math:`\sum_k k_k = (1-\varepsilon)
    cw_y + \frac{\varepsilon}{C}\sum_c cw_c`.
    """
    num_classes = pred.shape[-1]
    if not from_logits:
        coef = sparse_target_coefficients(labels, num_classes, class_weight, label_smoothing)
        return cross_entropy_grad(coef, pred, from_logits=False)
    # The same rule without building the (n, C) coefficients: softmax·Σk, minus k.
    cw = np.ones(num_classes) if class_weight is None else class_weight
    cw_y = cw[labels]
    total = (1.0 - label_smoothing) * cw_y + label_smoothing / num_classes * float(np.sum(cw))
    if softmax is None:
        softmax = log_softmax_and_softmax(pred)[1]
    grad = softmax * total[:, None]
    if label_smoothing:
        grad -= label_smoothing / num_classes * cw
    grad[np.arange(labels.shape[0]), labels] -= (1.0 - label_smoothing) * cw_y
    return _float64(grad)


def _shift_by_max(x: np.ndarray[Any, Any]) -> tuple[IntArray, FloatArray, FloatArray]:
    """Per row: the argmax ``j``, the max ``m`` (float64) and ``s = x - m`` in float64.

    The max is taken in the input dtype (exact) and the cast to float64 happens inside
    the subtraction, into a reused scratch buffer.
    """
    n = x.shape[0]
    j = np.argmax(x, axis=1)
    m = x[np.arange(n), j].astype(np.float64)
    s = scratch("shifted", x.shape, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        np.subtract(x, m[:, None], out=s, dtype=np.float64)
    return j, m, s


def _neg_shift_dot(s: FloatArray, coef: FloatArray | None) -> FloatArray:
    r""":math:`\sum_c k_c (m - x_c) = -\sum_c k_c s_c` per row (``coef`` ``(C,)``, ``(n, C)`` or None for 1)."""
    if coef is None:
        return _float64(-np.sum(s, axis=1))
    tmp = scratch("product", s.shape, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        np.multiply(s, coef, out=tmp)
    return _float64(-np.sum(tmp, axis=1))


def _overflow_safe(
    dot: FloatArray, x: np.ndarray[Any, Any], m: FloatArray, coef: FloatArray | None, factor: float = 1.0
) -> FloatArray:
    r"""Redo :func:`_neg_shift_dot` in halves on the rows where ``x - m`` overflowed.

    Returns ``factor * dot``. A row like ``[1e308, -1e308, 0]`` has a finite
    ``factor`` :math:`\sum_c k_c (m - x_c)` while :math:`m - x_c` itself overflows:
    :math:`2\sum_c \text{factor}\, k_c (m/2 - x_c/2)`.
    """
    dot = dot * factor if factor != 1.0 else dot
    bad = ~np.isfinite(dot) & np.isfinite(m)  # also 0·(-inf): a class without mass where x - m overflowed
    if not np.any(bad):
        return dot
    xb = x[bad].astype(np.float64)
    half = m[bad, None] / 2 - xb / 2
    k = np.ones_like(half) if coef is None else np.broadcast_to(coef[bad] if coef.ndim == 2 else coef, half.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        dot[bad] = 2.0 * np.sum(np.where(k == 0, 0.0, factor * k * half), axis=1)  # 0·log 0 = 0
    return dot


def _exp_rest(s: FloatArray, j: IntArray) -> FloatArray:
    r"""Exponentiate ``s`` in place and return :math:`r = \sum_{c \ne j} e^{s_c}` per row.

    The maximal entry ``j`` (where :math:`e^{s_j} = 1`) is left out of the sum, so that
    :math:`\log\sum_c e^{s_c} = \operatorname{log1p}(r)` keeps the relative accuracy of a
    tiny :math:`r`; afterwards ``s[j]`` holds 1 again.
    """
    rows = np.arange(s.shape[0])
    s[rows, j] = -np.inf
    np.exp(s, out=s)
    rest = _float64(np.sum(s, axis=1))
    s[rows, j] = 1.0
    return rest


def sparse_softmax_cross_entropy(
    labels: IntArray,
    logits: np.ndarray[Any, Any],
    class_weight: FloatArray | None,
    label_smoothing: float,
    *,
    grad: bool = False,
) -> Any:
    r""":func:`sparse_cross_entropy` of :func:`log_softmax` (and its gradient), fused and exact.

    With :math:`m = \max_c x_c` at class :math:`j`, :math:`s = x - m` and
    :math:`r = \sum_{c\ne j} e^{s_c}`, so that :math:`-\log p_c = \operatorname{log1p}(r) - s_c`:

    .. math::
        \ell = (1-\varepsilon)\,cw_y\big(\operatorname{log1p}(r) - s_y\big)
               + \frac{\varepsilon}{C}\Big(\operatorname{log1p}(r)\sum_c cw_c + \sum_c cw_c (m - x_c)\Big)

    Only the label column and the row totals are logged; ``logits`` may be float32 (the
    cast happens inside the first subtraction). The gradient is
    :math:`T p_c - k_c` (:func:`sparse_cross_entropy_grad`), with the entry at
    :math:`c = j` evaluated as :math:`\big((T - k_j) - k_j r\big)/(1 + r)` so that
    :math:`p_j - 1 = -r/(1+r)` keeps its relative accuracy. Returns the losses, or
    ``(losses, gradient rows)`` with ``grad``.
    """
    n, num_classes = logits.shape
    rows = np.arange(n)
    eps = float(label_smoothing)
    j, m, s = _shift_by_max(logits)
    s_y = s[rows, labels]
    smooth = None
    if eps:
        smooth = _overflow_safe(_neg_shift_dot(s, class_weight), logits, m, class_weight, eps / num_classes)
    rest = _exp_rest(s, j)
    lse = np.log1p(rest)
    cw_y = np.ones(n) if class_weight is None else class_weight[labels]
    cw_sum = float(num_classes) if class_weight is None else float(np.sum(class_weight))
    with np.errstate(invalid="ignore"):
        loss = np.where(cw_y == 0, 0.0, (1.0 - eps) * cw_y * (lse - s_y)) if eps != 1.0 else np.zeros(n)
    if smooth is not None:
        loss = loss + (eps / num_classes * cw_sum * lse + smooth)
    if not grad:
        return loss
    total = 1.0 + rest
    gold = (1.0 - eps) * cw_y
    spread = eps / num_classes
    t_coef = gold + spread * cw_sum
    dx = s  # e^{s}, with 1 at j: scaled to T·softmax in place
    dx *= (t_coef / total)[:, None]
    if eps:
        dx -= spread * (1.0 if class_weight is None else class_weight)
    dx[rows, labels] -= gold
    # The maximal entry, where T p_j - k_j cancels: ((T - k_j) - k_j r) / (1 + r).
    cw_j = np.ones(n) if class_weight is None else class_weight[j]
    k_j = spread * cw_j + np.where(labels == j, gold, 0.0)
    t_minus_k = np.where(labels == j, spread * (cw_sum - cw_j), t_coef - k_j)
    dx[rows, j] = (t_minus_k - k_j * rest) / total
    return loss, dx


def softmax_cross_entropy(coef: FloatArray, logits: np.ndarray[Any, Any], *, grad: bool = False) -> Any:
    r""":func:`cross_entropy` of :func:`log_softmax` with coefficients :math:`k = cw\, q` (and its gradient).

    As :func:`sparse_softmax_cross_entropy`:
    :math:`\ell = K\operatorname{log1p}(r) + \sum_c k_c (m - x_c)`, :math:`K = \sum_c k_c`,
    without overflow for finite logits; the gradient :math:`K p_c - k_c`, at the maximal
    entry :math:`\big((K - k_j) - k_j r\big)/(1+r)` with :math:`K - k_j = \sum_{c\ne j} k_c`.
    A class with :math:`k_c = 0` costs nothing even at :math:`p_c = 0`.
    """
    n = logits.shape[0]
    rows = np.arange(n)
    j, m, s = _shift_by_max(logits)
    dot = _overflow_safe(_neg_shift_dot(s, coef), logits, m, coef)
    k_j = coef[rows, j]
    k_rest = coef.copy()
    k_rest[rows, j] = 0.0
    k_minus_j = np.sum(k_rest, axis=1)
    k_total = k_minus_j + k_j
    rest = _exp_rest(s, j)
    lse = np.log1p(rest)
    loss = np.where(k_total == 0, 0.0, k_total * lse) + dot
    if not grad:
        return loss
    total = 1.0 + rest
    dx = s
    dx *= (k_total / total)[:, None]
    dx -= coef
    dx[rows, j] = (k_minus_j - k_j * rest) / total
    return loss, dx


#: Where label smoothing puts its mass :math:`\varepsilon` (see :func:`smoothed_target`).
SMOOTHING_RULES: tuple[str, ...] = ("uniform", "others", "others_except_pad")
#: What is scored against the smoothed target: its cross-entropy, or the KL divergence.
SMOOTHING_FORMS: tuple[str, ...] = ("cross_entropy", "kl")


def smoothed_target(
    num_classes: int, label_smoothing: float, rule: str = "uniform", pad_index: int | None = None
) -> tuple[float, float]:
    r"""``(q_gold, q_other)``: the smoothed target's mass on the gold class and on each other class.

    =======================  ===================================  =========================  ================
    rule                     :math:`q_y`                          :math:`q_c,\ c \ne y`      used by
    =======================  ===================================  =========================  ================
    ``"uniform"``            :math:`1-\varepsilon+\varepsilon/C`  :math:`\varepsilon/C`      torch, Keras, HF
    ``"others"``             :math:`1-\varepsilon`                :math:`\varepsilon/(C-1)`  fairseq, T5X
    ``"others_except_pad"``  :math:`1-\varepsilon`                :math:`\varepsilon/(C-2)`  OpenNMT-py
    =======================  ===================================  =========================  ================

    (``"others_except_pad"`` gives the pad class ``pad_index`` no mass: :math:`q_{pad} = 0`.)

    Examples
    --------
    >>> from maskloss.pointwise import smoothed_target
    >>> smoothed_target(4, 0.1), smoothed_target(4, 0.1, "others"), smoothed_target(4, 0.1, "others_except_pad", 0)
    ((0.925, 0.025), (0.9, 0.03333333333333333), (0.9, 0.05))
    """
    eps = float(label_smoothing)
    if rule == "uniform":
        return 1.0 - eps + eps / num_classes, eps / num_classes
    if rule == "others":
        return 1.0 - eps, eps / (num_classes - 1)
    if rule == "others_except_pad":
        if pad_index is None:
            raise ValueError("smoothing rule 'others_except_pad' needs the pad class (pad_index), got None")
        return 1.0 - eps, eps / (num_classes - 2)
    raise ValueError(f"smoothing rule must be one of {SMOOTHING_RULES}, got {rule!r}")


def _xlogx(q: float) -> float:
    """:math:`q \\log q` with :math:`0 \\log 0 = 0`."""
    return float(q * np.log(q)) if q > 0 else 0.0


def smoothed_cross_entropy(
    labels: IntArray,
    log_p: FloatArray,
    label_smoothing: float,
    rule: str = "uniform",
    form: str = "cross_entropy",
    pad_index: int | None = None,
) -> FloatArray:
    r"""Each row's loss against the label-smoothed target :math:`q` of ``rule``, in ``form``.

    With :math:`(q_y, q_o)` from :func:`smoothed_target` and :math:`S` the classes that get
    :math:`q_o` besides the gold one (all but the pad class for ``"others_except_pad"``):

    .. math::
        \ell_{\text{cross\_entropy}} = (q_y - q_o)(-\log p_y) + q_o \sum_{c \in S \cup \{y\}} (-\log p_c),
        \qquad
        \ell_{\text{kl}} = \ell_{\text{cross\_entropy}} - H(q),\quad
        H(q) = -q_y\log q_y - |S|\,q_o \log q_o

    The KL form is ``F.kl_div(log_p, q, reduction="sum")`` per row (OpenNMT-py, T5X): a
    prediction equal to :math:`q` scores 0. The pad column is selected out (never
    multiplied by 0), so :math:`\log p_{pad} = -\infty` costs nothing. Rows are valid steps
    (the gold class is never the pad class); ``labels`` ``(n,)``, ``log_p`` ``(n, C)``.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.pointwise import smoothed_cross_entropy
    >>> q = np.array([[0.9, 0.05, 0.05, 0.0]])           # others_except_pad, eps 0.1, pad 3
    >>> with np.errstate(divide="ignore"):
    ...     log_q = np.log(q)
    >>> float(smoothed_cross_entropy(np.array([0]), log_q, 0.1, "others_except_pad", "kl", pad_index=3)[0])
    0.0
    """
    if form not in SMOOTHING_FORMS:
        raise ValueError(f"smoothing form must be one of {SMOOTHING_FORMS}, got {form!r}")
    num_classes = log_p.shape[-1]
    q_gold, q_other = smoothed_target(num_classes, label_smoothing, rule, pad_index)
    rows = np.arange(labels.shape[0])
    gold = negative_log_weighted(np.full(labels.shape[0], q_gold - q_other), log_p[rows, labels])
    counted = np.ones(num_classes, dtype=bool)
    if rule == "others_except_pad":
        counted[int(pad_index)] = False  # type: ignore[arg-type]
    with np.errstate(invalid="ignore"):
        spread = np.sum(np.where(counted, negative_log_weighted(np.full(log_p.shape, q_other), log_p), 0.0), axis=-1)
    loss = _float64(gold + spread)
    if form == "kl":
        others = int(counted.sum()) - 1  # classes with q_other, the gold one excluded
        entropy = -_xlogx(q_gold) - others * _xlogx(q_other)
        loss = _float64(loss - entropy)
    return loss
