r"""Divergences between distributions over the last axis: KL, generalised Jensen-Shannon, entropy.

Every function takes ``(B, T, C)`` rows (probabilities, or logits with ``from_logits``), a
``(B, T)`` mask (True = valid), and reduces the per-step values with one of
:data:`maskloss.REDUCTIONS` through :class:`maskloss.reductions.MaskedTotals` (each loss is
one :class:`maskloss.losses.Pipeline`, so :func:`maskloss.value_and_grad` and
:func:`maskloss.masked_totals` work on them). Masked steps are never read. Per step, with
:math:`q` the target and :math:`p` the prediction:

.. math::

    \operatorname{KL}(q \,\|\, p) = \sum_c q_c (\log q_c - \log p_c), \qquad
    H(p) = -\sum_c p_c \log p_c,

    \operatorname{JSD}_\beta(q \,\|\, p) = \beta \operatorname{KL}(q \,\|\, m)
        + (1 - \beta) \operatorname{KL}(p \,\|\, m), \qquad m = \beta q + (1 - \beta) p,

with :math:`0 \log 0 = 0`. The generalised JSD is Liger-Kernel's ``LigerJSD`` (``target``
is its teacher :math:`P`, ``pred`` its student input :math:`Q`): at its endpoints Liger
switches to the KLs, :math:`\beta = 0` is :math:`\operatorname{KL}(q\|p)` and
:math:`\beta = 1` is :math:`\operatorname{KL}(p\|q)` (the formula above would give 0
there), and so does :func:`jensen_shannon`.

Gradients are with respect to ``pred`` (the last array), in closed form: for logits
:math:`x` with :math:`p = \operatorname{softmax}(x)` and :math:`g = \partial\ell/\partial p`,
:math:`\partial \ell / \partial x = p \odot (g - \langle p, g \rangle)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import registry
from maskloss._checks import (
    as_numeric,
    check_feature_pair,
    check_flag,
    check_mask,
    check_reduction,
    check_sample_weight,
)
from maskloss._rows import as_rows, check_distribution, check_probabilities, to_float64
from maskloss._types import FloatArray, IntArray, Reduction
from maskloss.pipeline import Pipeline
from maskloss.pointwise import log_softmax_and_softmax

__all__ = ["entropy", "jensen_shannon", "kl_divergence"]


def _log_and_prob(
    chunk: np.ndarray[Any, Any], logits: bool, rows: IntArray, steps_shape: tuple[int, ...], name: str,
    *, distribution: bool = False,
) -> tuple[FloatArray, FloatArray]:
    """``(log p, p)`` of a chunk of rows: log-softmax of logits, or probabilities as given (checked)."""
    x = to_float64(chunk, f"{name}64")
    if logits:
        return log_softmax_and_softmax(x)
    if distribution:
        check_distribution(x, rows, steps_shape, name, chunk.dtype)
    else:
        check_probabilities(x, rows, steps_shape, name)
    with np.errstate(divide="ignore"):
        return np.log(x), x


def _xlogy_terms(weight: FloatArray, log_a: FloatArray, log_b: FloatArray) -> FloatArray:
    r""":math:`w (\log a - \log b)` per lane, 0 where :math:`w = 0` (:math:`0 \log 0 = 0`, never NaN)."""
    with np.errstate(invalid="ignore"):
        return np.where(weight > 0, weight * (log_a - log_b), 0.0)


def _through_softmax(p: FloatArray, g: FloatArray) -> FloatArray:
    r""":math:`p \odot (g - \langle p, g\rangle)`, 0 at lanes of probability 0 (whatever ``g`` is there)."""
    g = np.where(p > 0, g, 0.0)
    return np.where(p > 0, p * (g - np.sum(p * g, axis=-1, keepdims=True)), 0.0)


def _kl_rows(
    log_q: FloatArray, q: FloatArray, log_p: FloatArray, p: FloatArray, pred_logits: bool, grad: bool
) -> Any:
    """Forward KL(q || p) per row; with ``grad``, also its derivative with respect to ``pred``."""
    loss = np.sum(_xlogy_terms(q, log_q, log_p), axis=-1)
    if not grad:
        return loss
    if pred_logits:  # d/dx of -sum q log softmax(x): p sum(q) - q
        return loss, p * np.sum(q, axis=-1, keepdims=True) - q
    with np.errstate(divide="ignore"):
        return loss, np.where(q > 0, -q / p, 0.0)


def _divergence_pipeline(
    target: npt.ArrayLike,
    pred: npt.ArrayLike,
    mask: npt.ArrayLike | None,
    *,
    from_logits: bool,
    target_from_logits: bool,
    reduction: Reduction,
    beta: float | None,
) -> Pipeline:
    t, p = check_feature_pair(target, pred, true_name="target", pred_name="pred")
    if p.shape[-1] == 0:
        raise ValueError(f"pred has no classes: its last axis has size 0 (shape {p.shape})")
    pred_logits = check_flag(from_logits, "from_logits")
    target_logits = check_flag(target_from_logits, "target_from_logits")
    valid = check_mask(mask, p.shape[:-1])
    check_reduction(reduction)
    steps_shape = valid.shape

    def step(rows: Any, t_rows: Any, p_rows: Any, grad: bool = False) -> Any:
        log_q, q = _log_and_prob(t_rows, target_logits, rows, steps_shape, "target", distribution=True)
        log_p, prob = _log_and_prob(p_rows, pred_logits, rows, steps_shape, "pred")
        if beta is None or beta == 0.0:
            return _kl_rows(log_q, q, log_p, prob, pred_logits, grad)
        if beta == 1.0:
            return _reverse_kl_rows(log_q, log_p, prob, pred_logits, grad)
        return _jsd_rows(log_q, q, log_p, prob, beta, pred_logits, grad)

    weight = check_sample_weight(None, valid)
    return Pipeline(step, (as_rows(t), as_rows(p)), valid, weight, reduction, p.shape)


def _reverse_kl_rows(log_q: FloatArray, log_p: FloatArray, p: FloatArray, pred_logits: bool, grad: bool) -> Any:
    """KL(p || q) per row, the prediction first; derivative with respect to ``pred``."""
    loss = np.sum(_xlogy_terms(p, log_p, log_q), axis=-1)
    if not grad:
        return loss
    with np.errstate(invalid="ignore"):
        g = log_p - log_q + 1.0  # d/dp of p (log p - log q)
    if pred_logits:
        return loss, _through_softmax(p, g)
    # at p = 0: log 0 = -inf where q > 0, and 0 for a class that neither side has
    return loss, np.where(p > 0, g, np.where(np.isneginf(log_q), 0.0, -np.inf))


def _jsd_rows(
    log_q: FloatArray, q: FloatArray, log_p: FloatArray, p: FloatArray, beta: float, pred_logits: bool, grad: bool
) -> Any:
    r""":math:`\beta \operatorname{KL}(q\|m) + (1-\beta)\operatorname{KL}(p\|m)` per row, :math:`0 < \beta < 1`."""
    log_m = np.logaddexp(np.log(beta) + log_q, np.log1p(-beta) + log_p)
    loss = np.sum(beta * _xlogy_terms(q, log_q, log_m) + (1.0 - beta) * _xlogy_terms(p, log_p, log_m), axis=-1)
    if not grad:
        return loss
    # d/dp_c = (1 - beta) (log p_c - log m_c); where p_c = q_c = 0 the limit is -(1 - beta) log(1 - beta).
    with np.errstate(invalid="ignore"):
        g = (1.0 - beta) * np.where(np.isneginf(log_m), -np.log1p(-beta), log_p - log_m)
    if pred_logits:
        return loss, _through_softmax(p, g)
    return loss, g


@registry.loss(wrt="pred")
def kl_divergence(
    target: npt.ArrayLike,
    pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    from_logits: bool = False,
    target_from_logits: bool = False,
    reduction: Reduction = "token_mean",
) -> Pipeline:
    r"""Masked forward KL divergence :math:`\operatorname{KL}(q \,\|\, p)` per step, reduced.

    .. math:: \ell_{bt} = \sum_c q_{btc} (\log q_{btc} - \log p_{btc}), \qquad 0 \log 0 = 0

    ``target`` is :math:`q` (the teacher, or the data), ``pred`` is :math:`p` (the
    student, whose gradient :func:`maskloss.value_and_grad` returns). The **reverse** KL
    :math:`\operatorname{KL}(p \,\|\, q)` is this function with the two arguments swapped
    (torchtune's ``ReverseKLLoss``); its gradient is then with respect to the second
    argument, so pass the student second when you want its gradient.

    Parameters
    ----------
    target, pred : array_like, shape (B, T, C)
        Probabilities (``target``: rows in ``[0, 1]`` summing to 1 at valid steps), or
        logits with ``target_from_logits`` / ``from_logits`` (a ``-inf`` logit is a class
        of probability 0).
    mask : array_like of bool, shape (B, T), optional
    from_logits, target_from_logits : bool, default False
    reduction : str, default "token_mean"
        One of :data:`maskloss.REDUCTIONS`; torch's ``reduction="batchmean"`` on flattened
        ``(B*T, C)`` rows is ``"sum"`` divided by ``B*T``, which is ``"token_mean"`` when
        every step is valid.

    Raises
    ------
    ValueError
        If a valid row of ``target`` is not a distribution (outside ``[0, 1]``, or not
        summing to 1 within the input dtype's precision), or ``pred`` is not in ``[0, 1]``.

    Examples
    --------
    :math:`\operatorname{KL}((\tfrac12, \tfrac12) \,\|\, (\tfrac14, \tfrac34))
    = \tfrac12 \log 2 + \tfrac12 \log\tfrac23`; the padded step holds NaN:

    >>> import numpy as np, maskloss
    >>> q = np.array([[[0.5, 0.5], [np.nan, np.nan]]])
    >>> p = np.array([[[0.25, 0.75], [0.5, 0.5]]])
    >>> round(float(maskloss.kl_divergence(q, p, [[True, False]])), 12)
    0.143841036226
    >>> float(maskloss.kl_divergence(p, p))        # KL(p || p) = 0
    0.0
    """
    return _divergence_pipeline(
        target, pred, mask, from_logits=from_logits, target_from_logits=target_from_logits,
        reduction=reduction, beta=None,
    )


def _check_beta(beta: object) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating, np.integer)):
        raise TypeError(f"beta must be a real number in [0, 1], got {beta!r}")
    b = float(beta)
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"beta must be in [0, 1] (0: KL(target || pred), 1: KL(pred || target)), got {beta!r}")
    return b


@registry.loss(wrt="pred")
def jensen_shannon(
    target: npt.ArrayLike,
    pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    beta: float = 0.5,
    from_logits: bool = False,
    target_from_logits: bool = False,
    reduction: Reduction = "token_mean",
) -> Pipeline:
    r"""Masked generalised Jensen-Shannon divergence (Liger-Kernel's ``LigerJSD``).

    .. math::
        m = \beta q + (1 - \beta) p, \qquad
        \ell_{bt} = \beta \operatorname{KL}(q \,\|\, m) + (1 - \beta) \operatorname{KL}(p \,\|\, m)

    for :math:`0 < \beta < 1` (``beta=0.5`` is the symmetric JSD, at most :math:`\log 2`);
    ``beta=0`` is :func:`kl_divergence` ``(target, pred)`` and ``beta=1`` the reverse KL
    :math:`\operatorname{KL}(p \,\|\, q)`, as in Liger. ``target`` is Liger's ``target``
    (the teacher :math:`P`), ``pred`` its ``input`` (the student :math:`Q`); Liger takes
    both as log-probabilities, which are logits here (``from_logits=True,
    target_from_logits=True``). Liger's ``reduction`` is the sum over all rows divided by
    the number of non-ignored rows: ``"token_mean"`` with the ignored rows masked.
    Arguments otherwise as in :func:`kl_divergence`.

    Examples
    --------
    Disjoint distributions have the largest symmetric JSD, :math:`\log 2`:

    >>> import numpy as np, maskloss
    >>> q, p = np.array([[[1.0, 0.0]]]), np.array([[[0.0, 1.0]]])
    >>> float(maskloss.jensen_shannon(q, p)), float(np.log(2))
    (0.6931471805599453, 0.6931471805599453)
    """
    b = _check_beta(beta)
    return _divergence_pipeline(
        target, pred, mask, from_logits=from_logits, target_from_logits=target_from_logits,
        reduction=reduction, beta=b,
    )


@registry.loss(wrt="logits")
def entropy(
    logits: npt.ArrayLike, mask: npt.ArrayLike | None = None, *, reduction: Reduction = "token_mean"
) -> Pipeline:
    r"""Masked entropy of the softmax of the logits (TRL's ``entropy_from_logits``, per token).

    .. math:: p = \operatorname{softmax}(x), \qquad
        H_{bt} = -\sum_c p_c \log p_c = \operatorname{lse}(x) - \sum_c p_c x_c

    with gradient :math:`\partial H / \partial x_c = -p_c (\log p_c + H)`. A ``-inf``
    logit is a class of probability 0 and contributes 0.

    Parameters
    ----------
    logits : array_like, shape (B, T, C)
    mask : array_like of bool, shape (B, T), optional
    reduction : str, default "token_mean"

    Examples
    --------
    Uniform over 4 classes: :math:`\log 4`; a one-hot row: 0.

    >>> import numpy as np, maskloss
    >>> logits = np.array([[[0.0, 0.0, 0.0, 0.0], [0.0, -np.inf, -np.inf, -np.inf]]])
    >>> maskloss.entropy(logits, reduction="none").round(12).tolist()
    [[1.38629436112, 0.0]]
    """
    x = as_numeric(logits, "logits", min_ndim=1)
    if x.shape[-1] == 0:
        raise ValueError(f"logits has no classes: its last axis has size 0 (shape {x.shape})")
    valid = check_mask(mask, x.shape[:-1])
    check_reduction(reduction)
    return Pipeline(_entropy_rows, (as_rows(x),), valid, check_sample_weight(None, valid), reduction, x.shape)


def _entropy_rows(rows: Any, x_rows: Any, grad: bool = False) -> Any:
    log_p, p = log_softmax_and_softmax(to_float64(x_rows))
    terms = _xlogy_terms(p, log_p, np.zeros_like(log_p))
    h = 0.0 - np.sum(terms, axis=-1)  # 0.0, not -0.0, for a one-hot row
    if not grad:
        return h
    with np.errstate(invalid="ignore"):
        d = np.where(p > 0, -p * (log_p + h[:, None]), 0.0)
    return h, d
