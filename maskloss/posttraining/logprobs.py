"""Masked token and sequence log-probabilities of the labels under the logits."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import loss_options, pointwise
from maskloss._checks import as_numeric, check_head_option, check_ignore_index, check_mask, first_bad_position
from maskloss._rows import as_rows, to_float64
from maskloss._types import FloatArray, Reduction
from maskloss.head import head_rows, through_head
from maskloss.pipeline import Pipeline
from maskloss.posttraining._common import _positive, _steps


def _logprob_pipeline(
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    mask: npt.ArrayLike | None,
    ignore_index: int | None,
    temperature: float,
    weight: FloatArray | None,
    reduction: Reduction,
    softcap: float | None = None,
    shift: int = 0,
) -> Pipeline:
    lab = _steps(labels, "labels")
    z = as_numeric(logits, "logits")
    if z.ndim != 3 or z.shape[:2] != lab.shape:
        raise ValueError(
            f"logits must have shape labels.shape + (vocabulary,) = {lab.shape + ('V',)}, got {z.shape}"
        )
    if z.shape[-1] == 0:
        raise ValueError(f"logits has an empty vocabulary axis (shape {z.shape})")
    tau = _positive(temperature, "temperature")
    cap = None if softcap is None else check_head_option(softcap, "softcap")
    valid = check_mask(mask, lab.shape)
    if check_ignore_index(ignore_index) is not None:
        valid = valid & (lab != ignore_index)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {lab.dtype}")
    s = loss_options.check_shift(shift, lab.shape[-1])
    if s:  # steps: the labels from position s on, scored by the logits up to T - s (as the cross-entropy)
        valid = (valid & (np.arange(lab.shape[-1]) >= s))[:, s:]
        lab, z = lab[:, s:], z[:, : z.shape[1] - s]
        weight = None if weight is None else np.asarray(weight)[:, s:]
    safe = np.where(valid, lab, 0)
    out_of_range = valid & ((safe < 0) | (safe >= z.shape[-1]))
    if np.any(out_of_range):
        pos = first_bad_position(out_of_range, lab.shape)
        raise ValueError(
            f"labels must be in [0, {z.shape[-1]}) at valid steps; labels{list(pos)} is {int(lab[pos])}"
        )
    w = np.where(valid, 1.0, 0.0) if weight is None else np.where(valid, weight, 0.0)

    def capped_step(rows: Any, lab_rows: Any, z_rows: Any, grad: bool = False) -> Any:
        """log softmax(h)_y through the head (softcap after the temperature), by :func:`maskloss.head.through_head`."""
        picked = np.arange(z_rows.shape[0])

        def logprob(h: FloatArray, g: bool) -> Any:
            if not g:
                return pointwise.log_softmax(h)[picked, lab_rows]
            log_p, p = pointwise.log_softmax_and_softmax(h)
            p *= -1.0
            p[picked, lab_rows] += 1.0  # d log p_y / d h = onehot - softmax
            return log_p[picked, lab_rows], p

        return through_head(logprob, to_float64(z_rows), temperature=tau, cap=cap, grad=grad)

    def step(rows: Any, lab_rows: Any, z_rows: Any, grad: bool = False) -> Any:
        scaled, _ = head_rows(to_float64(z_rows), temperature=tau)  # overflowed rows shifted: the same log-softmax
        picked = np.arange(scaled.shape[0])
        if not grad:
            return pointwise.log_softmax(scaled)[picked, lab_rows]
        log_p, p = pointwise.log_softmax_and_softmax(scaled)
        p *= -1.0 / tau
        p[picked, lab_rows] += 1.0 / tau  # d log p_y / d z = (onehot - softmax) / tau
        return log_p[picked, lab_rows], p

    chosen = step if cap is None else capped_step  # without a softcap, the bits of before
    return Pipeline(chosen, (safe.reshape(-1), as_rows(z)), valid, w, reduction, z.shape, shift=s)


def token_logprobs(
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    ignore_index: int | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
    shift: int = 0,
    segment_ids: npt.ArrayLike | None = None,
) -> FloatArray:
    r"""Log-probabilities of the labels, :math:`\log\operatorname{softmax}(z_{bt}/\tau)_{y_{bt}}`, ``(B, T)``.

    Exactly 0 at masked (and ignored) steps, whatever the logits hold there. Chunked over
    the vocabulary rows like the cross-entropies (a (16, 512, 32000) float32 batch is never
    promoted whole). For gradients use :func:`policy_gradient_objective`.

    Parameters
    ----------
    labels : array_like of int, shape (B, T)
        The sampled (or target) tokens; already aligned with ``logits`` (shift them first).
    logits : array_like, shape (B, T, V)
    mask : array_like of bool, shape (B, T), optional
        True at response tokens.
    ignore_index : int, optional
        A label that also marks a masked step (HF's -100).
    temperature : float > 0
        The sampling temperature the logits are divided by (TRL, verl), first.
    softcap : float > 0, optional
        Gemma's final-logit softcap :math:`c \tanh(x / c)`, after the temperature (the
        documented order of :mod:`maskloss.head`; ``-inf`` stays ``-inf``). The log-probs of a
        Gemma 2/3 policy are those of the capped logits: without it they are wrong.
    shift : int >= 0, default 0
        The causal shift of :mod:`maskloss.loss_options`: position :math:`t` of the result,
        shape ``(B, T - s)``, is :math:`\log p(y_{b,t+s} \mid z_{bt})` (``labels`` are then the
        input ids, ``mask`` in their positions; HF's ``logits[:, :-1]`` against ``labels[:, 1:]``).
    segment_ids : array_like of int, shape (B, T), optional
        Packed rows (:mod:`maskloss.segments`, -1 at padding): a step counts only inside one
        document, so with ``shift`` the last :math:`s` tokens of each document predict
        nothing (0 there), never the first token of the next document, and the result is,
        position by position, that of each document on its own (:func:`maskloss.pack` moves
        the padded result into the packed rows).

    .. math::
        \log p_{bt} = \log\operatorname{softmax}(z_{bt}/\tau)_{y_{b,t+s}}
        \quad\text{where } m_{b,t+s} \text{ and } \text{seg}_{bt} = \text{seg}_{b,t+s} \ge 0,
        \quad 0 \text{ elsewhere}

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> logits = np.log([[[0.5, 0.5], [0.25, 0.75], [np.nan, np.nan]]])
    >>> maskloss.token_logprobs([[0, 1, 0]], logits, [[True, True, False]]).round(6).tolist()
    [[-0.693147, -0.287682, 0.0]]

    Two documents packed in one row, ids ``[0, 1 | 1, 0]``; with ``shift=1`` the last token
    of the first document (step 1) scores nothing, not the next document's first token:

    >>> packed = np.log([[[0.5, 0.5], [0.25, 0.75], [0.2, 0.8], [0.5, 0.5]]])
    >>> maskloss.token_logprobs([[0, 1, 1, 0]], packed, shift=1, segment_ids=[[0, 0, 1, 1]]).round(6).tolist()
    [[-0.693147, 0.0, -1.609438]]
    """
    return _logprob_pipeline(  # type: ignore[no-any-return]
        labels, logits, mask, ignore_index, temperature, None, "none", softcap, shift
    ).with_segments(segment_ids).value()


def sequence_logprobs(
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    average: bool = False,
    ignore_index: int | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
    segment_ids: npt.ArrayLike | None = None,
    shift: int = 0,
) -> FloatArray:
    r"""Per-sequence log-probabilities, ``(B,)``: sums (DPO) or means over valid tokens (SimPO, IPO).

    .. math:: \log\pi(y_b) = \sum_t m_{bt}\log p_{bt}, \qquad
              \overline{\log\pi}(y_b) = \frac{\sum_t m_{bt}\log p_{bt}}{\sum_t m_{bt}}

    ``temperature`` and ``softcap`` as in :func:`token_logprobs`. An empty response (no valid
    token) has sum 0 and mean NaN (0/0: there is no average
    log-probability of nothing; TRL's ``clamp(min=1)`` turns it into 0, see
    :mod:`maskloss.conventions.trl`). With ``segment_ids`` (packed rows, the labels' shape, -1
    at padding; :mod:`maskloss.segments`) the result is per document, ``(D,)``, in document
    order: the log-probs of the padded batch of the same documents. ``shift`` as in
    :func:`token_logprobs` (never across a document; a document of at most ``shift`` tokens
    has sum 0 and mean NaN).

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> logits = np.log([[[0.5, 0.5], [0.25, 0.75]], [[0.5, 0.5], [0.5, 0.5]]])
    >>> mask = [[True, True], [False, False]]
    >>> maskloss.sequence_logprobs([[0, 1], [0, 0]], logits, mask).round(6).tolist()
    [-0.980829, 0.0]
    >>> maskloss.sequence_logprobs([[0, 1], [0, 0]], logits, mask, average=True).round(6).tolist()
    [-0.490415, nan]
    >>> packed = np.log([[[0.5, 0.5], [0.25, 0.75], [0.5, 0.5]]])   # documents of 2 and 1 tokens
    >>> maskloss.sequence_logprobs([[0, 1, 0]], packed, segment_ids=[[0, 0, 1]]).round(6).tolist()
    [-0.980829, -0.693147]
    """
    if not isinstance(average, (bool, np.bool_)):
        raise TypeError(f"average must be True or False, got {average!r}")
    pipeline = _logprob_pipeline(labels, logits, mask, ignore_index, temperature, None, "none", softcap, shift)
    totals = pipeline.with_segments(segment_ids).totals()
    if not average:
        return totals.true_numerator
    nonempty = totals.denominator > 0  # N_b / D_b: the sequence's exponent cancels
    return np.where(nonempty, totals.numerator / np.where(nonempty, totals.denominator, 1.0), np.nan)
