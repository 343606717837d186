r"""The LLM head: temperature, softcapping and the z-loss on rows of logits, with chain rules.

Pure float64 math on ``(n, V)`` rows of already selected valid steps (as in
:mod:`maskloss.pointwise`): nothing here sees padding. The options compose in one
documented order,

.. math::

    h = c \tanh\!\left(\frac{x / T}{c}\right), \qquad
    \ell = -\log \operatorname{softmax}(h)_y + z \operatorname{lse}(h)^2,

temperature :math:`T` first, then the softcap :math:`c` (Gemma 2/3, Liger, Cut
Cross-Entropy), then log-softmax, then the z-loss :math:`z \operatorname{lse}(h)^2`
(PaLM; Liger's ``lse_square_scale``, CCE's ``compute_z_loss``). A ``-inf`` logit (a
padded vocabulary lane) stays ``-inf`` under the softcap, so it keeps probability 0
(``tanh`` alone would map it to ``-c`` and leak mass to it).

The chain rules, for an upstream gradient :math:`g = \partial L / \partial h`:

.. math::

    \frac{\partial h}{\partial x} = \frac{1}{T}\left(1 - \left(\frac{h}{c}\right)^2\right),
    \qquad
    \frac{\partial\, z \operatorname{lse}(h)^2}{\partial h} = 2 z \operatorname{lse}(h)\,
    \operatorname{softmax}(h),

and 0 at a ``-inf`` lane. Each function takes logits rows and returns loss rows, or
gradient rows when asked, so the fused linear cross-entropy can reuse them chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from maskloss._types import FloatArray, IntArray
from maskloss.pointwise import log_softmax_and_softmax

__all__ = [
    "RunningLogSumExp",
    "apply_head",
    "head_cross_entropy",
    "head_grad",
    "head_rows",
    "logsumexp",
    "shift_overflowed_rows",
    "softcap",
    "softcap_grad",
    "through_head",
    "z_loss_from_lse",
    "z_loss_grad",
    "z_loss_slope",
    "z_loss_terms",
]


def softcap(logits: FloatArray, cap: float | None, *, out: FloatArray | None = None) -> FloatArray:
    r""":math:`c \tanh(x / c)`, with ``-inf`` kept as ``-inf``; ``cap=None`` returns a copy.

    ``out`` (a float64 array of the same shape, possibly ``logits`` itself) receives the
    result instead of a new array: the fused linear cross-entropy caps its tiles in place.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.head import softcap
    >>> softcap(np.array([[0.0, 30.0, -np.inf]]), 30.0)   # 30 tanh(1) = 22.8478...
    array([[ 0.        , 22.84782468,        -inf]])
    """
    if out is None:
        x = np.array(logits, dtype=np.float64)
    else:
        x = out
        if x is not logits:
            np.copyto(x, logits)
    if cap is None:
        return x
    lanes = np.isneginf(x)
    np.divide(x, cap, out=x)
    np.tanh(x, out=x)
    x *= cap
    x[lanes] = -np.inf
    return x


def softcap_grad(capped: FloatArray, cap: float | None, upstream: FloatArray) -> FloatArray:
    r"""Chain rule of :func:`softcap`: :math:`g \left(1 - (h / c)^2\right)`, 0 at ``-inf`` lanes.

    ``capped`` is the softcapped row :math:`h` (the forward output), ``upstream`` the
    gradient with respect to it.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.head import softcap, softcap_grad
    >>> h = softcap(np.array([[0.0, 30.0, -np.inf]]), 30.0)
    >>> softcap_grad(h, 30.0, np.ones((1, 3)))           # 1 - tanh(1)^2 = 0.41997...
    array([[1.        , 0.41997434, 0.        ]])
    """
    g = np.array(upstream, dtype=np.float64)
    if cap is None:
        return g
    finite = ~np.isneginf(capped)
    ratio = np.divide(capped, cap, out=np.zeros_like(g), where=finite)
    g *= 1.0 - ratio * ratio
    return np.where(finite, g, 0.0)


def apply_head(
    logits: FloatArray, *, temperature: float = 1.0, cap: float | None = None, out: FloatArray | None = None
) -> FloatArray:
    r"""The head's logits :math:`h = c \tanh(x / (T c))` (temperature first, then the softcap).

    ``out`` as in :func:`softcap` (in place when it is ``logits``).

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.head import apply_head
    >>> apply_head(np.array([[2.0, -4.0]]), temperature=2.0)
    array([[ 1., -2.]])
    """
    if out is None:
        # x / T beyond float64 is +-inf, which the softcap brings to +-c exactly (its true value);
        # without a softcap :func:`through_head` recomputes such rows shifted by their maximum.
        with np.errstate(over="ignore"):
            scaled = np.asarray(logits, dtype=np.float64) / temperature
        return softcap(scaled, cap)
    np.divide(logits, temperature, out=out)  # linear CE's tiles: an overflow still warns there
    return softcap(out, cap, out=out)


def head_rows(
    logits: FloatArray, *, temperature: float = 1.0, cap: float | None = None
) -> tuple[FloatArray, FloatArray | None]:
    r"""The head's rows for a softmax loss: :func:`apply_head`, with rows whose :math:`x / T`
    overflowed shifted by their maximum (:func:`shift_overflowed_rows`, whose offsets come second;
    ``None`` when no row was shifted)."""
    h = apply_head(logits, temperature=temperature, cap=cap)
    if cap is None and temperature < 1.0:
        return shift_overflowed_rows(logits, h, temperature)
    return h, None


def shift_overflowed_rows(
    logits: FloatArray, h: FloatArray, temperature: float
) -> tuple[FloatArray, FloatArray | None]:
    r"""Rows whose :math:`x / T` overflowed while :math:`x` is finite, as :math:`(x - \max x) / T`.

    A softmax loss of a row does not change when the row is shifted, so those rows keep their
    true value (logits of ``1.8e308`` at :math:`T = 1/2` give :math:`\log 2`, not ``nan``);
    the second result is each row's offset :math:`\max x / T` (0 elsewhere, ``inf`` when it
    overflows), which the z-loss adds back. ``None`` when no row overflowed: every other row
    keeps its bits.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        return h, None
    with np.errstate(invalid="ignore"):
        rows = (np.isinf(h) & np.isfinite(x)).any(axis=-1) & ~(np.isposinf(x) | np.isnan(x)).any(axis=-1)
    if not rows.any():
        return h, None
    picked = x[rows]
    top = picked.max(axis=-1, keepdims=True)
    with np.errstate(over="ignore"):
        h = np.array(h, dtype=np.float64)
        h[rows] = (picked - top) / temperature
        offset = np.zeros(x.shape[0])
        offset[rows] = top[:, 0] / temperature
    return h, offset


def head_grad(
    capped: FloatArray, upstream: FloatArray, *, temperature: float = 1.0, cap: float | None = None
) -> FloatArray:
    r"""Gradient with respect to the raw logits :math:`x` from :math:`g = \partial L/\partial h`.

    :math:`\partial L / \partial x = g \left(1 - (h/c)^2\right) / T`, with ``capped`` the
    output :math:`h` of :func:`apply_head`.
    """
    g = softcap_grad(capped, cap, upstream)
    g /= temperature
    return g


class RunningLogSumExp:
    r"""The log-sum-exp of rows given in pieces (vocabulary tiles), left to right.

    Keeps per row the running maximum :math:`m` and :math:`s = \sum_k e^{h_k - m}`; a
    tile :math:`t` updates them to :math:`m' = \max(m, \max t)`,
    :math:`s' = s\,e^{m - m'} + \sum_k e^{t_k - m'}`, and :attr:`value` is
    :math:`m + \log s`. One tile holding the whole row gives :func:`logsumexp` exactly;
    a fixed tiling gives the same bits whatever the thread count.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.head import RunningLogSumExp, logsumexp
    >>> row = np.array([[0.5, -1.0, 2.0, 0.0]])
    >>> acc = RunningLogSumExp(1)
    >>> acc.add(row[:, :3].copy()); acc.add(row[:, 3:].copy())
    >>> bool(np.isclose(acc.value(), logsumexp(row))[0])
    True
    """

    __slots__ = ("maximum", "total")

    def __init__(self, n: int) -> None:
        self.maximum: FloatArray = np.full(n, -np.inf)
        self.total: FloatArray = np.zeros(n)

    def add(self, tile: FloatArray) -> None:
        """Fold in a ``(n, k)`` float64 tile of the rows; the tile is overwritten (its exponentials)."""
        new_max = np.maximum(self.maximum, np.max(tile, axis=-1))
        with np.errstate(invalid="ignore"):
            self.total *= np.exp(self.maximum - new_max)
            tile -= new_max[:, None]
        np.exp(tile, out=tile)
        self.total += np.sum(tile, axis=-1)
        self.maximum = new_max

    def value(self) -> FloatArray:
        r""":math:`m + \log s` per row, shape ``(n,)``; ``+inf`` for a row holding ``+inf`` (its
        :math:`s` is NaN, from :math:`e^{\infty - \infty}`, but the log-sum-exp is :math:`+\infty`)."""
        out: FloatArray = np.where(self.maximum == np.inf, np.inf, self.maximum + np.log(self.total))
        return out


def logsumexp(logits: FloatArray) -> FloatArray:
    r""":math:`\operatorname{lse}(h) = \max h + \log \sum_k e^{h_k - \max h}` per row, shape ``(n,)``.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.head import logsumexp
    >>> logsumexp(np.array([[0.0, 0.0], [1000.0, -np.inf]])).tolist()   # log 2 and 1000
    [0.6931471805599453, 1000.0]
    """
    h = np.array(logits, dtype=np.float64)
    acc = RunningLogSumExp(h.shape[0])
    acc.add(h)
    return acc.value()


def z_loss_terms(logits: FloatArray, z: float) -> FloatArray:
    r"""The z-loss per row, :math:`z \operatorname{lse}(h)^2`, shape ``(n,)``.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.head import z_loss_terms
    >>> z_loss_terms(np.array([[0.0, 0.0]]), 1e-4)        # 1e-4 * log(2)^2
    array([4.80453014e-05])
    """
    return z_loss_from_lse(logsumexp(logits), z)


def z_loss_from_lse(lse: FloatArray, z: float) -> FloatArray:
    r""":math:`z \operatorname{lse}^2` from the rows' log-sum-exp (as :func:`z_loss_terms`)."""
    with np.errstate(over="ignore"):  # beyond float64 it is +inf, the true value saturated
        out: FloatArray = z * lse * lse
    return out


def z_loss_slope(lse: FloatArray, z: float) -> FloatArray:
    r""":math:`\partial (z \operatorname{lse}^2) / \partial \operatorname{lse} = 2 z \operatorname{lse}`;
    times :math:`\operatorname{softmax}(h)` it is the z-loss's gradient (:func:`z_loss_grad`)."""
    with np.errstate(over="ignore"):  # beyond float64 it is +-inf, the true value saturated
        out: FloatArray = (2.0 * z) * lse
    return out


def z_loss_grad(logits: FloatArray, z: float, lse: FloatArray | None = None) -> FloatArray:
    r"""Gradient of :func:`z_loss_terms`: :math:`2 z \operatorname{lse}(h) \operatorname{softmax}(h)`.

    ``lse``: the rows' log-sum-exp when ``logits`` are the rows shifted
    (:func:`shift_overflowed_rows`; the softmax does not change, the log-sum-exp does).
    """
    _, p = log_softmax_and_softmax(np.asarray(logits, dtype=np.float64))
    slope = z_loss_slope(logsumexp(logits) if lse is None else lse, z)[:, None]
    with np.errstate(over="ignore"):  # an infinite slope times a probability of 0 is 0, not nan
        np.multiply(p, slope, out=p, where=p != 0)
    return p


def head_cross_entropy(
    labels: IntArray,
    logits: FloatArray,
    *,
    temperature: float = 1.0,
    cap: float | None = None,
    z: float = 0.0,
    grad: bool = False,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    r"""Sparse cross-entropy rows through the head, with the z-loss added per row.

    .. math:: \ell = -\log\operatorname{softmax}(h)_y + z \operatorname{lse}(h)^2,
        \qquad h = c \tanh(x / (T c)).

    With ``grad=True`` returns ``(loss rows, gradient rows w.r.t. x)``; the gradient with
    respect to :math:`h` is :math:`\operatorname{softmax}(h) (1 + 2 z \operatorname{lse}(h))
    - \mathbb{1}_y`, then :func:`head_grad`.

    Examples
    --------
    Logits (3, 3) at temperature 3 become :math:`h = (1, 1)`: the cross-entropy is
    :math:`\log 2`, :math:`\operatorname{lse}(h) = 1 + \log 2` and a z-loss of 1 adds its
    square, :math:`0.6931 + 2.8667`.

    >>> import numpy as np
    >>> from maskloss.head import head_cross_entropy
    >>> head_cross_entropy(np.array([0]), np.array([[3.0, 3.0]]), temperature=3.0, z=1.0)
    array([3.55989456])
    """
    h = apply_head(logits, temperature=temperature, cap=cap)
    log_p, p = log_softmax_and_softmax(h)
    rows = np.arange(h.shape[0])
    loss: FloatArray = -log_p[rows, labels]
    lse = None
    if z:
        lse = logsumexp(h)
        loss = loss + z_loss_from_lse(lse, z)
    if not grad:
        return loss
    g = p
    if lse is not None:
        g *= 1.0 + z_loss_slope(lse, z)[:, None]
    g[rows, labels] -= 1.0
    return loss, head_grad(h, g, temperature=temperature, cap=cap)


def through_head(
    row_loss: Callable[[FloatArray, bool], Any],
    logits: Any,
    *,
    temperature: float = 1.0,
    cap: float | None = None,
    z: float = 0.0,
    grad: bool = False,
) -> Any:
    r"""Any softmax loss of rows, through the head: ``row_loss(h, grad)`` on :math:`h`, plus the z-loss.

    :math:`h = c \tanh(x / (T c))`, :math:`\ell = \text{row\_loss}(h) + z \operatorname{lse}(h)^2`
    (the documented order: temperature, softcap, the loss's log-softmax, smoothing and class
    weights, then the z-loss). ``row_loss(h, grad)`` returns the loss rows, or with ``grad``
    ``(loss rows, d loss / d h)``; the result is the same with the gradient with respect
    to the raw logits :math:`x` (:func:`head_grad`).

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.head import through_head
    >>> from maskloss.pointwise import log_softmax
    >>> nll = lambda h, grad: -log_softmax(h)[:, 0]
    >>> through_head(nll, np.array([[3.0, 3.0]]), temperature=3.0, z=1.0)   # as head_cross_entropy's example
    array([3.55989456])
    """
    h, offset = head_rows(logits, temperature=temperature, cap=cap)
    out = row_loss(h, grad)
    if not z:
        return out if not grad else (out[0], head_grad(h, out[1], temperature=temperature, cap=cap))
    lse = logsumexp(h)
    if offset is not None:  # the z-loss is not shift-invariant: lse of the true rows
        with np.errstate(over="ignore"):
            lse = lse + offset
    terms = z_loss_from_lse(lse, z)
    if not grad:
        return out + terms
    loss, g = out
    return loss + terms, head_grad(h, g + z_loss_grad(h, z, lse), temperature=temperature, cap=cap)
