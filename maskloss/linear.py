r"""Linear cross-entropy: the loss of an LM head from hidden states and the head's weight.

Fused LM-head kernels (Liger's fused linear cross-entropy, Cut Cross-Entropy, torchtune's
chunked output loss, litgpt's ``chunked_cross_entropy``) take the hidden states
:math:`h` ``(..., H)`` and the weight :math:`W` ``(V, H)`` (``nn.Linear`` layout) and never
hold the ``(tokens, V)`` logits :math:`z = h W^\top + b`. This module is their oracle: the
same loss, exact in float64, computed tile by tile so that the float64 logits are never
held either.

Only the rows of valid steps are read (compaction), so NaN or garbage in the hidden states
of masked steps never reaches a value or a gradient. Per valid row the loss is the sparse
cross-entropy of :func:`maskloss.sparse_categorical_crossentropy` on the logits, with the
head options applied to the logits in this order:

.. math::
    z = \frac{h W^\top + b}{\tau}, \qquad
    z' = c \tanh(z / c)\ \text{(softcap)}, \qquad
    \mathrm{lse} = \log\sum_c e^{z'_c},

.. math::
    \ell = (1-\varepsilon)\,cw_y\,(\mathrm{lse} - z'_y)
         + \frac{\varepsilon}{V}\sum_c cw_c\,(\mathrm{lse} - z'_c)
         + \zeta\,\mathrm{lse}^2 .

Tiles have fixed sizes (:data:`TOKEN_TILE` rows by :data:`VOCAB_TILE` classes): the
log-sum-exp of a row is accumulated over the vocabulary tiles in a fixed order, so results
do not depend on the thread count. The value costs one product :math:`hW^\top`; the value
and the three gradients cost four: the forward pass keeps each row's log-sum-exp, and the
gradient pass recomputes the logits once (rather than storing them) for the two
gradient products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from maskloss import loss_options, registry
from maskloss._checks import (
    as_numeric,
    check_class_weight,
    check_head_option,
    check_ignore_index,
    check_label_smoothing,
    check_labels,
    check_mask,
    check_reduction,
    check_sample_weight,
    first_bad_position,
)
from maskloss._types import BoolArray, FloatArray, IntArray, LossValue, Reduction
from maskloss.head import RunningLogSumExp, apply_head, head_grad, z_loss_from_lse, z_loss_slope
from maskloss.reductions import (
    SCALAR_REDUCTIONS,
    power_of_two_scale,
    same_document,
    segment_ids_for,
    totals_of_terms,
    unscale,
)

__all__ = [
    "TOKEN_TILE",
    "VOCAB_TILE",
    "LogitStats",
    "linear_cross_entropy",
    "linear_cross_entropy_value_and_grad",
    "linear_logit_stats",
]

#: Rows (valid tokens) of one tile.
TOKEN_TILE = 4096
#: Classes of one tile: a float64 tile of logits is at most ``TOKEN_TILE * VOCAB_TILE * 8``
#: bytes (64 MiB).
VOCAB_TILE = 2048


@dataclass(frozen=True, slots=True)
class _Head:
    """A validated linear cross-entropy call: the compacted valid rows and the options."""

    hidden: np.ndarray[Any, Any]  # (rows, H), the caller's dtype: every prediction
    rows: IntArray  # flat indices into hidden of the valid steps' predictions
    steps: IntArray  # flat indices into valid of the valid steps (rows, unless shifted)
    labels: IntArray  # (n,) labels of the valid rows
    weight: np.ndarray[Any, Any]  # (V, H)
    bias: np.ndarray[Any, Any] | None  # (V,)
    class_weight: FloatArray | None
    smoothing: float
    target: loss_options.Smoothing | None  # a non-default smoothing_rule / smoothing_form
    z_loss: float
    softcap: float | None
    temperature: float
    valid: BoolArray  # the steps' shape: labels' (T - shift along the last axis)
    sample_weight: FloatArray  # (steps shape), 0 at masked steps
    reduction: Reduction
    hidden_shape: tuple[int, ...]
    segment_ids: npt.NDArray[np.int64] | None = None  # packed rows: the documents (-1 at padding)
    documents: int | None = None  # with shift and segment_ids: the number of documents

    @property
    def vocab(self) -> int:
        return int(self.weight.shape[0])

    @property
    def transformed(self) -> bool:
        """Whether the head options change the logits (a temperature or a softcap)."""
        return self.temperature != 1.0 or self.softcap is not None


def _finite_everywhere(x: np.ndarray[Any, Any], name: str) -> None:
    """The weight and bias are read at every class: they must be finite everywhere."""
    bad = ~np.isfinite(x)
    if np.any(bad):
        pos = first_bad_position(bad, x.shape)
        raise ValueError(f"{name} must be finite everywhere (every class is read); found {x[pos].item()!r} at {pos}")


def _check(
    hidden: npt.ArrayLike,
    weight: npt.ArrayLike,
    labels: npt.ArrayLike,
    mask: npt.ArrayLike | None,
    bias: npt.ArrayLike | None,
    ignore_index: int | None,
    label_smoothing: float,
    class_weight: npt.ArrayLike | None,
    z_loss: float,
    softcap: float | None,
    temperature: float,
    reduction: Reduction,
    sample_weight: npt.ArrayLike | None,
    shift: int = 0,
    smoothing_rule: str = "uniform",
    smoothing_form: str = "cross_entropy",
    segment_ids: npt.ArrayLike | None = None,
) -> _Head:
    h = as_numeric(hidden, "hidden", min_ndim=1)
    w = as_numeric(weight, "weight")
    if w.ndim != 2:
        raise ValueError(f"weight must have shape (V, H) (the nn.Linear layout), got shape {w.shape}")
    if w.shape[1] != h.shape[-1]:
        raise ValueError(
            f"hidden and weight must share the hidden size H: hidden {h.shape} has H={h.shape[-1]}, "
            f"weight {w.shape} has H={w.shape[1]}"
        )
    vocab = int(w.shape[0])
    if vocab == 0:
        raise ValueError(f"weight has no classes: shape {w.shape}")
    _finite_everywhere(w, "weight")
    b = None
    if bias is not None:
        b = as_numeric(bias, "bias")
        if b.shape != (vocab,):
            raise ValueError(f"bias must have shape ({vocab},), one value per class of weight; got {b.shape}")
        _finite_everywhere(b, "bias")
    lab = as_numeric(labels, "labels")
    if lab.shape != h.shape[:-1]:
        raise ValueError(
            f"labels must have the shape of hidden without its last axis, {h.shape[:-1]}; got {lab.shape}"
        )
    valid = check_mask(mask, lab.shape)
    index = check_ignore_index(ignore_index)
    if index is not None:
        valid = valid & (lab != ignore_index)
    seg = None if segment_ids is None else segment_ids_for(segment_ids, lab.shape)
    check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    cw = check_class_weight(class_weight, vocab)
    s = loss_options.check_shift(shift, lab.shape[-1] if lab.ndim else 0)
    if shift and lab.ndim == 0:  # shift is a checked int here (s is clamped to the 0 steps)
        raise ValueError(f"shift={shift} needs labels with a steps axis, got labels of shape {lab.shape}")
    target = loss_options.check_smoothing(smoothing_rule, smoothing_form, eps, class_weight=class_weight,
                                          ignore_index=index, num_classes=vocab)
    predicts = None
    documents = None
    if seg is not None and not s:
        valid = valid & (seg >= 0)
    if s:  # label t + s is scored by the prediction (hidden row) at t
        valid = valid & (np.arange(lab.shape[-1]) >= s)
        sw = check_sample_weight(sample_weight, valid)[..., s:]
        valid, lab = valid[..., s:], lab[..., s:]
        if seg is not None:  # as Pipeline.with_segments: never across a document boundary
            full, seg = seg, seg[..., : seg.shape[-1] - s]  # the predicting positions' documents
            valid = valid & same_document(full, s)
            sw = np.where(valid, sw, 0.0)
            documents = int(full.max()) + 1 if full.size else 0  # a document of <= s tokens still counts
        predicts = np.zeros(h.shape[:-1], dtype=bool)
        predicts[..., : lab.shape[-1]] = valid  # the prediction rows of the valid steps, in hidden
    else:
        sw = check_sample_weight(sample_weight, valid)
    safe = check_labels(lab, valid, vocab, name="labels")
    steps = valid.reshape(-1).nonzero()[0]
    return _Head(
        hidden=h.reshape(-1, h.shape[-1]),
        rows=steps if predicts is None else predicts.reshape(-1).nonzero()[0],
        steps=steps,
        labels=safe.reshape(-1)[steps],
        weight=w,
        bias=b,
        class_weight=cw,
        smoothing=eps,
        target=target,
        z_loss=check_head_option(z_loss, "z_loss", allow_zero=True),
        softcap=None if softcap is None else check_head_option(softcap, "softcap"),
        temperature=check_head_option(temperature, "temperature"),
        valid=valid,
        sample_weight=sw,
        reduction=reduction,
        hidden_shape=h.shape,
        segment_ids=seg,
        documents=documents,
    )


def _tiles(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _f64(x: np.ndarray[Any, Any]) -> FloatArray:
    return x if x.dtype == np.float64 else x.astype(np.float64)


class _Tile:
    """Logits of one (token tile, vocabulary tile) pair, with the head transforms applied.

    :func:`maskloss.head.apply_head` applies the temperature and the softcap in place.
    """

    def __init__(self, head: _Head, h64: FloatArray, v0: int, v1: int) -> None:
        self.v0, self.v1 = v0, v1
        self.w64 = _f64(head.weight[v0:v1])
        z = h64 @ self.w64.T
        if head.bias is not None:
            z += _f64(head.bias[v0:v1])
        if head.transformed:
            apply_head(z, temperature=head.temperature, cap=head.softcap, out=z)
        self.z = z


def _class_weight_tile(head: _Head, v0: int, v1: int) -> FloatArray | None:
    return None if head.class_weight is None else head.class_weight[v0:v1]


def _pad(head: _Head) -> int | None:
    """The class that a smoothing rule gives no mass (``"others_except_pad"``), if any."""
    return None if head.target is None else head.target.pad


def _log_sum_exp_pass(
    head: _Head, h64: FloatArray, labels: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per row: the log-sum-exp, the target logit, the (class-weighted) sum of logits and the pad's logit."""
    n = h64.shape[0]
    lse = RunningLogSumExp(n)
    target = np.zeros(n)
    logit_sum = np.zeros(n)
    pad_logit = np.zeros(n)
    pad = _pad(head)
    for v0, v1 in _tiles(head.vocab, VOCAB_TILE):
        z = _Tile(head, h64, v0, v1).z
        inside = (labels >= v0) & (labels < v1)
        where = inside.nonzero()[0]
        target[where] = z[where, labels[where] - v0]
        if head.smoothing:
            cw = _class_weight_tile(head, v0, v1)
            logit_sum += z.sum(axis=1) if cw is None else z @ cw
        if pad is not None and v0 <= pad < v1:
            pad_logit[:] = z[:, pad - v0]
        lse.add(z)
    return lse.value(), target, logit_sum, pad_logit


def _stats_pass(head: _Head, h64: FloatArray, labels: IntArray) -> tuple[FloatArray, FloatArray, IntArray]:
    """Per row: the log-sum-exp, the target logit and the first index of the largest logit."""
    n = h64.shape[0]
    lse = RunningLogSumExp(n)
    target = np.zeros(n)
    best = np.full(n, -np.inf)
    argmax = np.zeros(n, dtype=np.intp)
    for v0, v1 in _tiles(head.vocab, VOCAB_TILE):
        z = _Tile(head, h64, v0, v1).z
        where = ((labels >= v0) & (labels < v1)).nonzero()[0]
        target[where] = z[where, labels[where] - v0]
        tile_arg = np.argmax(z, axis=1)
        tile_best = z[np.arange(n), tile_arg]
        better = tile_best > best  # strict: the first maximum wins a tie across tiles
        argmax[better] = tile_arg[better] + v0
        best[better] = tile_best[better]
        lse.add(z)
    return lse.value(), target, argmax


def _others(head: _Head) -> int:
    """How many classes get the mass ``q_other`` of a smoothing rule: all but the gold and the pad."""
    return head.vocab - 1 - (_pad(head) is not None)


def _row_losses(
    head: _Head, labels: IntArray, lse: FloatArray, target: FloatArray, logit_sum: FloatArray,
    pad_logit: FloatArray,
) -> FloatArray:
    r"""Per row :math:`\ell` (module formula); with a smoothing rule :math:`-\sum_c q_c \log p_c - H`.

    With :math:`q_y` on the gold class, :math:`q_o` on the :math:`K` others (not the pad) and
    :math:`S = \sum_c z'_c`: :math:`q_y(\mathrm{lse} - z'_y) + q_o(K\,\mathrm{lse} - (S - z'_y - z'_{pad}))`.
    """
    eps = head.smoothing
    cw = head.class_weight
    if head.target is not None:  # no class weight here (check_smoothing)
        q = head.target
        loss = q.q_gold * (lse - target)
        if q.q_other:
            loss += q.q_other * (_others(head) * lse - (logit_sum - target - pad_logit))
        if q.entropy:
            loss -= q.entropy
        if head.z_loss:
            loss += z_loss_from_lse(lse, head.z_loss)
        return loss
    gold = lse - target if cw is None else cw[labels] * (lse - target)
    loss = (1.0 - eps) * gold if eps else gold.copy()
    if eps:
        total_cw = float(head.vocab) if cw is None else float(cw.sum())
        loss += (eps / head.vocab) * (total_cw * lse - logit_sum)
    if head.z_loss:
        loss += z_loss_from_lse(lse, head.z_loss)
    return loss


def _forward(head: _Head) -> tuple[FloatArray, FloatArray]:
    """The per-row losses of the valid rows, tile by tile, and their log-sum-exp.

    The backward pass reuses the log-sum-exp (the same numbers it would recompute from the
    same tiles), so a value and gradient computes the logits twice, not three times.
    """
    out = np.empty(head.rows.shape[0])
    lse_rows = np.empty(head.rows.shape[0])
    for t0, t1 in _tiles(head.rows.shape[0], TOKEN_TILE):
        h64 = _f64(head.hidden[head.rows[t0:t1]])
        labels = head.labels[t0:t1]
        lse, target, logit_sum, pad_logit = _log_sum_exp_pass(head, h64, labels)
        lse_rows[t0:t1] = lse
        out[t0:t1] = _row_losses(head, labels, lse, target, logit_sum, pad_logit)
    return out, lse_rows


def _backward(
    head: _Head, factor: FloatArray, lse_rows: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    r"""Gradients of :math:`\sum_i g_i \ell_i` (``factor`` holds :math:`g_i` per valid row).

    With :math:`p = \mathrm{softmax}(z')`, per row
    :math:`\partial\ell/\partial z'_c = a\,p_c - (1-\varepsilon)cw_y[c=y] - \tfrac{\varepsilon}{V}cw_c`
    with :math:`a = (1-\varepsilon)cw_y + \tfrac{\varepsilon}{V}\sum cw + 2\zeta\,\mathrm{lse}`;
    the softcap contributes :math:`1 - \tanh^2`, the temperature :math:`1/\tau`. With a
    smoothing rule (target :math:`q`, no class weight)
    :math:`\partial\ell/\partial z'_c = (\sum_k q_k + 2\zeta\,\mathrm{lse})\,p_c - q_c`.
    """
    eps, vocab, cw = head.smoothing, head.vocab, head.class_weight
    q, pad = head.target, _pad(head)
    d_hidden = np.zeros((head.hidden.shape[0], head.hidden.shape[1]))
    d_weight = np.zeros(head.weight.shape)
    d_bias = None if head.bias is None else np.zeros(vocab)
    single_token_tile = head.rows.shape[0] <= TOKEN_TILE
    for t0, t1 in _tiles(head.rows.shape[0], TOKEN_TILE):
        rows = head.rows[t0:t1]
        labels = head.labels[t0:t1]
        g = factor[t0:t1]
        h64 = _f64(head.hidden[rows])
        lse = lse_rows[t0:t1]  # from _forward: the same tiles, the same bits
        if q is None:
            gold_weight = np.ones(rows.shape[0]) if cw is None else cw[labels]
            total_cw = float(vocab) if cw is None else float(cw.sum())
            a = g * ((1.0 - eps) * gold_weight + (eps / vocab) * total_cw + z_loss_slope(lse, head.z_loss))
            gold = g * (1.0 - eps) * gold_weight
        else:  # dz = a p - q: q_other everywhere, q_gold at the label, 0 at the pad
            a = g * (q.q_gold + q.q_other * _others(head) + z_loss_slope(lse, head.z_loss))
            gold = g * (q.q_gold - q.q_other)
            other = g * q.q_other
        dh = np.zeros_like(h64)
        for v0, v1 in _tiles(vocab, VOCAB_TILE):
            tile = _Tile(head, h64, v0, v1)
            capped = tile.z.copy() if head.softcap is not None else tile.z  # the chain rule needs h
            dz = tile.z
            dz -= lse[:, None]
            np.exp(dz, out=dz)
            dz *= a[:, None]
            inside = (labels >= v0) & (labels < v1)
            where = inside.nonzero()[0]
            dz[where, labels[where] - v0] -= gold[where]
            if q is not None:
                if q.q_other:
                    dz -= other[:, None]
                    if pad is not None and v0 <= pad < v1:
                        dz[:, pad - v0] += other
            elif eps:
                cw_tile = np.ones(v1 - v0) if cw is None else cw[v0:v1]
                dz -= np.multiply.outer(g * (eps / vocab), cw_tile)
            if head.transformed:
                dz = head_grad(capped, dz, temperature=head.temperature, cap=head.softcap)
            dh += dz @ tile.w64
            if single_token_tile:
                np.matmul(dz.T, h64, out=d_weight[v0:v1])
            else:
                d_weight[v0:v1] += dz.T @ h64
            if d_bias is not None:
                d_bias[v0:v1] += dz.sum(axis=0)
        d_hidden[rows] = dh
    return d_hidden.reshape(head.hidden_shape), d_weight, d_bias


def _per_step(head: _Head, row_values: FloatArray) -> FloatArray:
    out = np.zeros(head.valid.size)
    out[head.steps] = row_values
    return out.reshape(head.valid.shape)


def _denominator_terms(head: _Head, weight: FloatArray) -> FloatArray:
    if head.class_weight is None:
        return weight
    labels = np.zeros(head.valid.size, dtype=np.intp)
    labels[head.steps] = head.labels
    return np.where(head.valid, weight * head.class_weight[labels.reshape(head.valid.shape)], 0.0)


def _value(head: _Head, losses: FloatArray) -> LossValue:
    if head.reduction == "none":
        return head.sample_weight * losses
    w, exponent = power_of_two_scale(head.sample_weight)
    value = totals_of_terms(w * losses, _denominator_terms(head, w), head.segment_ids,
                            documents=head.documents).value(head.reduction)
    scalar: np.float64 = unscale(value, head.reduction, exponent)
    return scalar


class LogitStats(NamedTuple):
    """Per-step statistics of the head's logits (0, or -1 for ``argmax``, at masked steps)."""

    lse: FloatArray
    target: FloatArray
    argmax: IntArray


def linear_logit_stats(
    hidden: npt.ArrayLike,
    weight: npt.ArrayLike,
    labels: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    bias: npt.ArrayLike | None = None,
    ignore_index: int | None = None,
    softcap: float | None = None,
    temperature: float = 1.0,
) -> LogitStats:
    r"""Per valid step: :math:`\mathrm{lse}(z')`, the target logit :math:`z'_y` and :math:`\arg\max_c z'_c`.

    The logits :math:`z'` are those of :func:`linear_cross_entropy` (bias, temperature,
    softcap), computed in the same tiles and never held; ties in the arg max go to the
    smallest class index. What fused kernels log next to the loss (the z-loss
    :math:`\mathrm{lse}^2`, token accuracy, predicted tokens, :math:`p_y = e^{z'_y - \mathrm{lse}}`)
    follows from these.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.linear import linear_logit_stats
    >>> stats = linear_logit_stats([[1.0, 0.0], [0.0, 0.0]], np.eye(2), [1, -100], ignore_index=-100)
    >>> stats.lse.round(6).tolist(), stats.target.tolist(), stats.argmax.tolist()  # log(e + 1) = 1.313262
    ([1.313262, 0.0], [0.0, 0.0], [0, -1])
    """
    head = _check(
        hidden, weight, labels, mask, bias, ignore_index, 0.0, None, 0.0, softcap, temperature, "none", None,
    )
    lse = np.zeros(head.rows.shape[0])
    target = np.zeros(head.rows.shape[0])
    argmax = np.zeros(head.rows.shape[0], dtype=np.intp)
    for t0, t1 in _tiles(head.rows.shape[0], TOKEN_TILE):
        h64 = _f64(head.hidden[head.rows[t0:t1]])
        lse[t0:t1], target[t0:t1], argmax[t0:t1] = _stats_pass(head, h64, head.labels[t0:t1])
    arg_steps = np.full(head.valid.size, -1, dtype=np.intp)
    arg_steps[head.steps] = argmax
    return LogitStats(_per_step(head, lse), _per_step(head, target), arg_steps.reshape(head.valid.shape))


def linear_cross_entropy(
    hidden: npt.ArrayLike,
    weight: npt.ArrayLike,
    labels: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    bias: npt.ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    class_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    reduction: Reduction = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
    shift: int = 0,
    smoothing_rule: str = "uniform",
    smoothing_form: str = "cross_entropy",
    segment_ids: npt.ArrayLike | None = None,
) -> LossValue:
    r"""Masked cross-entropy of the logits :math:`hW^\top + b`, without holding them.

    Equal to ``sparse_categorical_crossentropy(labels, hidden @ weight.T + bias,
    from_logits=True, ...)`` with the same options, ``shift``, ``smoothing_rule`` and
    ``smoothing_form`` included (up to float64 rounding), computed in tiles of
    :data:`TOKEN_TILE` valid rows by :data:`VOCAB_TILE` classes, so the extra memory is
    bounded (about 100 MiB) whatever the vocabulary size.

    Parameters
    ----------
    hidden : array_like, shape (..., H)
        Hidden states; rows of masked or ignored steps are never read.
    weight : array_like, shape (V, H)
        The LM head's weight (the ``nn.Linear`` layout); finite everywhere.
    labels : array_like of int, shape (...)
        Class labels in ``[0, V)`` at valid steps.
    mask : array_like of bool, shape (...), optional
        True at valid steps.
    bias : array_like, shape (V,), optional
    ignore_index, label_smoothing, class_weight, reduction, sample_weight
        As in :func:`maskloss.sparse_categorical_crossentropy` (torch's rules: class
        weights in the numerator and the ``token_mean`` denominator; smoothing
        :math:`\varepsilon/V` on every class).
    z_loss : float >= 0
        Coefficient :math:`\zeta` of :math:`\zeta\,\mathrm{lse}^2` added per valid step
        (PaLM, Liger's ``lse_square_scale``, CCE's z-loss), not class-weighted.
    softcap : float > 0, optional
        Logits become :math:`c\tanh(z/c)` (Gemma 2) after the temperature.
    temperature : float > 0
        Logits are divided by it first.
    shift : int >= 0, default 0
        The causal shift (:mod:`maskloss.loss_options`): label :math:`t + s` is scored by the
        hidden state at :math:`t` (HF's ``labels[..., 1:]``, Cut Cross-Entropy's ``shift=1``);
        ``mask`` and ``sample_weight`` in the labels' positions. ``reduction="none"`` returns
        ``labels.shape[:-1] + (T - s,)`` values; ``d_hidden`` is 0 at the last :math:`s` steps.
    smoothing_rule : {"uniform", "others", "others_except_pad"}, default "uniform"
        Where the smoothing mass goes, as in :func:`maskloss.sparse_categorical_crossentropy`
        (a rule other than ``"uniform"`` needs ``label_smoothing > 0`` and no ``class_weight``;
        ``"others_except_pad"`` gives the class ``ignore_index`` no mass).
    smoothing_form : {"cross_entropy", "kl"}, default "cross_entropy"
        The cross-entropy against the smoothed target, or the KL divergence (less :math:`H(q)`).
    segment_ids : array_like of int, shape of ``labels``, optional
        Packed rows (:mod:`maskloss.segments`, -1 at padding): every reduction's sequences
        are the documents (``"sequence_mean"`` the mean of the documents' own means,
        ``"batch_mean"`` over the number of documents), as for the pipeline losses; the
        hidden rows of padding are never read. With ``shift`` the shift never crosses a
        document boundary: label :math:`t + s` counts only in the document of :math:`t`.

    Returns
    -------
    numpy.float64, or ndarray of the steps' shape for ``reduction="none"`` (``labels``' shape,
    ``T - shift`` along the last axis)

    Examples
    --------
    Two tokens, a 3-class head of hidden size 2, the second token ignored:

    >>> import numpy as np, maskloss
    >>> hidden = np.array([[[1.0, 0.0], [np.nan, np.nan]]])    # NaN under the mask is never read
    >>> weight = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> labels = np.array([[0, -100]])
    >>> logits = np.array([1.0, 0.0, 0.0])                     # hidden[0, 0] @ weight.T
    >>> round(float(np.log(np.exp(logits).sum()) - logits[0]), 12)   # -log softmax(logits)[0]
    0.551444713932
    >>> round(float(maskloss.linear_cross_entropy(hidden, weight, labels, ignore_index=-100)), 12)
    0.551444713932

    Two documents packed in one row (``[0, 0, 1]``): the mean of the documents' own means.

    >>> h = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    >>> per_doc = maskloss.linear_cross_entropy(h, weight, [[0, 1, 1]], segment_ids=[[0, 0, 1]],
    ...                                         reduction="sequence_mean")
    >>> by_hand = maskloss.linear_cross_entropy(h, weight, [[0, 1, 1]], reduction="none")[0]
    >>> bool(np.isclose(per_doc, ((by_hand[0] + by_hand[1]) / 2 + by_hand[2]) / 2, rtol=1e-15))
    True

    With ``shift=1`` the hidden state at step 0 scores the label at step 1 (the label at step 0
    is scored by nothing):

    >>> bool(maskloss.linear_cross_entropy(hidden, weight, [[2, 0]], shift=1)
    ...      == maskloss.linear_cross_entropy(hidden[:, :1], weight, [[0]]))
    True
    """
    head = _check(
        hidden, weight, labels, mask, bias, ignore_index, label_smoothing, class_weight,
        z_loss, softcap, temperature, reduction, sample_weight, shift, smoothing_rule, smoothing_form,
        segment_ids,
    )
    return _value(head, _per_step(head, _forward(head)[0]))


def linear_cross_entropy_value_and_grad(
    hidden: npt.ArrayLike,
    weight: npt.ArrayLike,
    labels: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    bias: npt.ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    class_weight: npt.ArrayLike | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    reduction: Reduction = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
    shift: int = 0,
    smoothing_rule: str = "uniform",
    smoothing_form: str = "cross_entropy",
    cotangent: npt.ArrayLike | None = None,
    segment_ids: npt.ArrayLike | None = None,
) -> tuple[LossValue, tuple[FloatArray, FloatArray, FloatArray | None]]:
    r"""The loss and its gradients ``(d_hidden, d_weight, d_bias)``, all float64.

    For a scalar ``reduction`` the gradients are those of the value. For
    ``reduction="none"``, ``cotangent`` (the shape of ``labels``) is required and the
    gradients are those of :math:`\sum_{bt} ct_{bt}\,\mathrm{value}_{bt}` (a
    vector-Jacobian product, what a fused kernel's backward receives as
    ``grad_output``). ``d_bias`` is None without a bias; masked rows of ``d_hidden``
    are exactly 0.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.linear import linear_cross_entropy_value_and_grad
    >>> hidden = np.array([[1.0, 0.0]]); weight = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> value, (dh, dw, db) = linear_cross_entropy_value_and_grad(hidden, weight, [1])
    >>> p = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()     # softmax of the logits [1, 0]
    >>> bool(np.allclose(dw, np.outer(p - [0, 1], hidden[0])))  # (p - onehot) h^T
    True
    >>> db is None
    True
    """
    head = _check(
        hidden, weight, labels, mask, bias, ignore_index, label_smoothing, class_weight,
        z_loss, softcap, temperature, reduction, sample_weight, shift, smoothing_rule, smoothing_form,
        segment_ids,
    )
    row_losses, lse_rows = _forward(head)
    losses = _per_step(head, row_losses)
    value = _value(head, losses)
    if head.reduction == "none":
        if cotangent is None:
            raise ValueError('reduction="none" returns one value per step: pass cotangent= (the shape of labels)')
        ct = as_numeric(cotangent, "cotangent")
        if ct.shape != head.valid.shape:
            raise ValueError(f"cotangent must have the shape of labels {head.valid.shape}, got {ct.shape}")
        ct64 = np.where(head.valid, ct, 0.0).astype(np.float64)
        if not np.all(np.isfinite(ct64)):
            raise ValueError("cotangent must be finite at valid steps")
        factor = (ct64 * head.sample_weight).reshape(-1)[head.steps]
    else:
        if cotangent is not None:
            raise ValueError(f"cotangent= goes with reduction='none'; reduction={head.reduction!r} is a scalar")
        if head.reduction not in SCALAR_REDUCTIONS:  # pragma: no cover - check_reduction covers it
            raise AssertionError(head.reduction)
        w, exponent = power_of_two_scale(head.sample_weight)
        denominators = _denominator_terms(head, w)
        totals = totals_of_terms(np.zeros_like(denominators), denominators, head.segment_ids,
                                 documents=head.documents)
        scale = unscale(totals.step_scale(head.reduction, w, segment_ids=head.segment_ids), head.reduction, exponent)
        factor = scale.reshape(-1)[head.steps]
    return value, _backward(head, factor, lse_rows)


registry.register(
    linear_cross_entropy, value_and_grad=linear_cross_entropy_value_and_grad, wrt="(hidden, weight, bias)"
)
loss_options.declare("linear_cross_entropy", ("shift", "smoothing_rule", "smoothing_form"))
