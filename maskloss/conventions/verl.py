r"""verl's PPO/GRPO loss aggregation and KL penalties, as NumPy truth in float64.

Mirrors ``verl/trainer/ppo/core_algos.py`` of **verl 0.9.1** (``agg_loss``, ``kl_penalty``
/ ``kl_penalty_forward``, the deprecated ``compute_policy_loss`` with the ``rollout_is_weights`` of
``compute_policy_loss_vanilla``, ``compute_value_loss``), with
``version="0.4"`` for ``agg_loss`` of verl 0.4.x (before ``dp_size`` and the global
counts). verl does not install next to transformers 5.24 (it pins ``transformers<5.11``
and needs ray), so these mirrors are proven against golden numbers computed from the
transcribed source, and verl's own unit tests (``tests/trainer/ppo/test_loss_aggregation_on_cpu.py``)
are peer cases in ``tests/test_conventions_verl.py``.

``agg_loss`` modes (``L_b`` the valid tokens of sequence ``b``, ``K`` the non-empty
sequences of the micro-batch):

* ``"token-mean"``: 0.9.1 :math:`\sum m\ell / N \cdot dp` with ``N`` = ``batch_num_tokens``
  (default: this micro-batch's tokens, no :math:`10^{-8}`); 0.4
  :math:`\sum m\ell/(\sum m + 10^{-8})`.
* ``"token-sum"`` (0.9.1 only): :math:`\sum m\ell \cdot dp`.
* ``"seq-mean-token-sum"``: 0.9.1 :math:`\sum_{b:L_b>0} S_b / G \cdot dp` with ``G`` =
  ``global_batch_size`` (default :math:`K`); 0.4 :math:`\frac1B\sum_b S_b`.
* ``"seq-mean-token-sum-norm"``: 0.9.1 the above divided by ``loss_scale_factor``
  (default ``T``, the padded length); 0.4 :math:`\sum_b S_b / T`.
* ``"seq-mean-token-mean"``: 0.9.1 :math:`\sum_{b:L_b>0} \frac{S_b}{L_b + 10^{-8}} / G\cdot dp`;
  0.4 :math:`\frac1B\sum_b S_b / L_b`.

Quirks, stated plainly: verl 0.9.1 excludes empty responses from the sequence means
(0.4 divided them 0/0 into NaN); ``"token-mean"`` of a micro-batch with no valid token
is 0/0 = NaN in 0.9.1 (0 in 0.4, thanks to the :math:`10^{-8}`); the sequence sums
:math:`S_b` are computed as ``sum(loss_mat * loss_mask)``, so NaN or inf under the mask
*leaks* into the sequence modes (``"token-mean"``/``"token-sum"`` select first and do not
leak), reproduced here; ``"seq-mean-token-sum-norm"`` without ``loss_scale_factor``
divides by the batch's padded length, the Dr. GRPO bug the ``loss_scale_factor``
argument exists to avoid.

Examples
--------
>>> import numpy as np
>>> from maskloss.conventions import verl
>>> loss = np.array([[1.0, 2.0, 30.0], [4.0, 50.0, 6.0]]); mask = np.array([[1, 1, 0], [1, 0, 1]])
>>> float(verl.agg_loss(loss, mask, "token-sum", dp_size=4))   # verl's own unit test: (1 + 2 + 4 + 6) * 4
52.0
>>> float(verl.agg_loss(loss, mask, "seq-mean-token-sum"))     # (3 + 10) / 2
6.5
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import as_numeric, check_mask
from maskloss._types import BoolArray, FloatArray

__all__ = [
    "LOSS_AGG_MODES", "agg_loss", "compute_policy_loss", "compute_value_loss", "kl_penalty", "remove_padding_log_probs",
]

#: ``loss_agg_mode`` values of each mirrored version.
LOSS_AGG_MODES: dict[str, tuple[str, ...]] = {
    "0.9": ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean"),
    "0.4": ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"),
}


def _pair(loss_mat: npt.ArrayLike, loss_mask: npt.ArrayLike) -> tuple[np.ndarray[Any, Any], BoolArray]:
    loss = as_numeric(loss_mat, "loss_mat")
    if loss.ndim != 2:
        raise ValueError(f"loss_mat must have shape (bs, response_length), got {loss.shape}")
    return loss, check_mask(loss_mask, loss.shape, name="loss_mask")


def _selected_sum(loss: np.ndarray[Any, Any], valid: BoolArray, axis: int | None) -> Any:
    """verl_F.masked_sum: ``where(mask, values, 0)``, summed (no leak)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.sum(np.where(valid, loss, 0).astype(np.float64), axis=axis)


def _multiplied_row_sums(loss: np.ndarray[Any, Any], valid: BoolArray) -> FloatArray:
    """``torch.sum(loss_mat * loss_mask, dim=-1)``: masked NaN/inf give NaN (x * 0), as in verl."""
    with np.errstate(invalid="ignore", over="ignore"):
        vals = loss.astype(np.float64, copy=False)
        leak = np.any(~valid & ~np.isfinite(vals), axis=-1)
    return np.where(leak, np.nan, _selected_sum(loss, valid, -1))


def _count(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def agg_loss(
    loss_mat: npt.ArrayLike,
    loss_mask: npt.ArrayLike,
    loss_agg_mode: str,
    dp_size: int = 1,
    batch_num_tokens: float | None = None,
    global_batch_size: float | None = None,
    loss_scale_factor: float | None = None,
    *,
    version: str = "0.9",
) -> np.float64:
    r"""verl's ``agg_loss`` (``verl/trainer/ppo/core_algos.py``): one micro-batch's loss scalar.

    Same arguments as verl 0.9.1; ``version="0.4"`` takes only the first three (verl 0.4.x).
    See the module docstring for each mode. With ``dp_size > 1``, ``batch_num_tokens``
    (``"token-mean"``) or ``global_batch_size`` (sequence modes) is required, as in verl;
    data-parallel ranks average their gradients, so the ``* dp_size`` makes the average of
    the ranks' values the global value.
    """
    if version not in LOSS_AGG_MODES:
        raise ValueError(f"version must be one of {', '.join(map(repr, LOSS_AGG_MODES))}; got {version!r}")
    if loss_agg_mode not in LOSS_AGG_MODES[version]:
        raise ValueError(
            f"Invalid loss_agg_mode: {loss_agg_mode!r}; verl {version} has "
            f"{', '.join(map(repr, LOSS_AGG_MODES[version]))}"
        )
    loss, valid = _pair(loss_mat, loss_mask)
    counts = valid.sum(axis=-1).astype(np.float64)
    if version == "0.4":
        if any(x is not None for x in (batch_num_tokens, global_batch_size, loss_scale_factor)) or dp_size != 1:
            raise TypeError("verl 0.4's agg_loss takes only loss_mat, loss_mask and loss_agg_mode")
        with np.errstate(invalid="ignore", divide="ignore"):
            if loss_agg_mode == "token-mean":  # verl_F.masked_mean: sum(x * mask) / (sum(mask) + 1e-8)
                return np.float64(float(np.sum(_multiplied_row_sums(loss, valid))) / (float(counts.sum()) + 1e-8))
            seq = _multiplied_row_sums(loss, valid)
            if loss_agg_mode == "seq-mean-token-sum":
                return np.float64(np.mean(seq))
            if loss_agg_mode == "seq-mean-token-mean":
                return np.float64(np.mean(seq / counts))
            return np.float64(float(np.sum(seq)) / loss.shape[-1])
    dp = _count(dp_size, "dp_size")
    if loss_agg_mode in ("token-mean", "token-sum"):
        total = float(_selected_sum(loss, valid, None))
        if loss_agg_mode == "token-sum":
            return np.float64(total * dp)
        if batch_num_tokens is None:
            if dp > 1:
                raise ValueError("(global) batch_num_tokens is required when dp_size > 1")
            batch_num_tokens = float(counts.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.float64(np.float64(total) / _count(batch_num_tokens, "batch_num_tokens") * dp)
    nonempty = counts > 0
    seq = _multiplied_row_sums(loss, valid)
    if loss_agg_mode == "seq-mean-token-mean":
        seq = seq / (counts + 1e-8)
    if global_batch_size is None:
        if dp > 1:
            raise ValueError("global_batch_size is required when dp_size > 1")
        global_batch_size = float(nonempty.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.float64(float(np.sum(np.where(nonempty, seq, 0.0))))
        value = value / np.float64(_count(global_batch_size, "global_batch_size")) * dp
        if loss_agg_mode == "seq-mean-token-sum-norm":
            factor = loss.shape[-1] if loss_scale_factor is None else _count(loss_scale_factor, "loss_scale_factor")
            value = value / factor
    return np.float64(value)


def kl_penalty(logprob: npt.ArrayLike, ref_logprob: npt.ArrayLike, kl_penalty: str) -> FloatArray:
    r"""verl's ``kl_penalty`` forward value per token (``core_algos.kl_penalty_forward``).

    ``"kl"``/``"k1"``: :math:`\log\pi - \log\pi_{ref}`; ``"abs"``; ``"mse"``/``"k2"``:
    :math:`\frac12(\log\pi-\log\pi_{ref})^2`; ``"low_var_kl"``/``"k3"``: with
    :math:`x = \operatorname{clamp}(\log\pi_{ref}-\log\pi, -20, 20)`,
    :math:`\operatorname{clamp}(e^x - x - 1, -10, 10)` (verl's clamps; the core
    :func:`maskloss.kl_estimate` has none). A trailing ``"+"`` (``"k3+"``) changes only the
    gradient (straight-through k2), not the value. No mask: verl masks afterwards, in
    ``agg_loss``.
    """
    lp = np.asarray(as_numeric(logprob, "logprob"), dtype=np.float64)
    ref = np.asarray(as_numeric(ref_logprob, "ref_logprob"), dtype=np.float64)
    if lp.shape != ref.shape:
        raise ValueError(f"logprob and ref_logprob must have the same shape, got {lp.shape} and {ref.shape}")
    name = kl_penalty[:-1] if kl_penalty.endswith("+") else kl_penalty
    if name in ("kl", "k1"):
        return lp - ref
    if name == "abs":
        return np.abs(lp - ref)
    if name in ("mse", "k2"):
        return 0.5 * np.square(lp - ref)
    if name in ("low_var_kl", "k3"):
        x = np.clip(ref - lp, -20.0, 20.0)
        return np.clip(np.exp(x) - x - 1, -10.0, 10.0)
    raise ValueError(
        f"kl_penalty must be one of 'kl', 'k1', 'abs', 'mse', 'k2', 'low_var_kl', 'k3' (or +); got {kl_penalty!r}"
    )


def compute_policy_loss(
    old_log_prob: npt.ArrayLike,
    log_prob: npt.ArrayLike,
    advantages: npt.ArrayLike,
    response_mask: npt.ArrayLike,
    cliprange: float | None = None,
    cliprange_low: float | None = None,
    cliprange_high: float | None = None,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    rollout_is_weights: npt.ArrayLike | None = None,
) -> np.float64:
    r"""verl's (deprecated) ``compute_policy_loss``: dual-clip PPO, aggregated; returns ``pg_loss``.

    With :math:`r = \exp(\operatorname{clamp}(\log\pi - \log\pi_{old}, -20, 20))`:
    :math:`\ell_1 = \max(-Ar, -A\operatorname{clip}(r, 1-\epsilon_l, 1+\epsilon_h))`, and where
    :math:`A < 0`, :math:`\min(\ell_1, -A\,c)` (``clip_ratio_c``); then
    ``agg_loss(..., loss_agg_mode)``.

    ``rollout_is_weights`` (the rollout-correction importance weights, ``(bs, response_length)``
    or broadcastable to it) multiply the per-token losses before ``agg_loss``, as in verl 0.9.1's
    ``compute_policy_loss_vanilla`` (the registered ``"vanilla"`` policy loss; its other
    arithmetic is this function's, with ``config.clip_ratio``/``clip_ratio_low``/``clip_ratio_high``/
    ``clip_ratio_c`` for the clip ranges). verl 0.9.1's deprecated ``compute_policy_loss`` itself
    has no such argument. verl multiplies, so a NaN or inf weight under the mask leaks into the
    sequence modes exactly as a masked loss does (see the module docstring); ``"token-mean"``
    and ``"token-sum"`` select first.

    Examples
    --------
    On-policy (ratio 1), so the per-token loss is :math:`-A`, weighted:

    >>> from maskloss.conventions import verl
    >>> lp = [[-1.0, -2.0]]
    >>> float(verl.compute_policy_loss(lp, lp, [[1.0, 2.0]], [[1, 1]], cliprange=0.2,
    ...                                rollout_is_weights=[[0.5, 2.0]]))   # (-0.5 - 4) / 2
    -2.25
    """
    if not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c must be > 1.0 (dual-clip PPO), got {clip_ratio_c!r}")
    lp = np.asarray(as_numeric(log_prob, "log_prob"), dtype=np.float64)
    old = np.asarray(as_numeric(old_log_prob, "old_log_prob"), dtype=np.float64)
    adv = np.asarray(as_numeric(advantages, "advantages"), dtype=np.float64)
    if not lp.shape == old.shape == adv.shape:
        raise ValueError(
            f"old_log_prob, log_prob and advantages must share one shape, got {old.shape}, {lp.shape}, {adv.shape}"
        )
    low = cliprange if cliprange_low is None else cliprange_low
    high = cliprange if cliprange_high is None else cliprange_high
    if low is None or high is None:
        raise TypeError("pass cliprange (or both cliprange_low and cliprange_high)")
    ratio = np.exp(np.clip(lp - old, -20.0, 20.0))
    losses1 = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - low, 1 + high))
    losses = np.where(adv < 0, np.minimum(-adv * clip_ratio_c, losses1), losses1)
    if rollout_is_weights is not None:
        weights = np.asarray(as_numeric(rollout_is_weights, "rollout_is_weights"), dtype=np.float64)
        try:
            np.broadcast_shapes(weights.shape, losses.shape)
        except ValueError:
            raise ValueError(
                f"rollout_is_weights must broadcast to the log-probs' shape {losses.shape}, got {weights.shape}"
            ) from None
        with np.errstate(invalid="ignore", over="ignore"):
            losses = losses * weights  # verl multiplies (a masked NaN weight leaks where verl's does)
    return agg_loss(losses, response_mask, loss_agg_mode)


def compute_value_loss(
    vpreds: npt.ArrayLike,
    returns: npt.ArrayLike,
    values: npt.ArrayLike,
    response_mask: npt.ArrayLike,
    cliprange_value: float,
    loss_agg_mode: str = "token-mean",
    dp_size: int = 1,
    batch_num_tokens: float | None = None,
    global_batch_size: float | None = None,
    loss_scale_factor: float | None = None,
) -> np.float64:
    r"""verl 0.9.1's ``compute_value_loss`` (``core_algos.py``): the clipped PPO value loss; returns ``vf_loss``.

    ``vpreds`` are the value head's predictions, ``values`` the old (rollout) values:

    .. math:: \ell = \max\big((\hat v - R)^2,\; (\operatorname{clip}(\hat v, v - c, v + c) - R)^2\big),
              \qquad \text{vf\_loss} = \tfrac12\,\texttt{agg\_loss}(\ell, \text{mask}, \ldots)

    with ``clip`` verl's ``clip_by_value`` (``max(min(x, hi), lo)``) and :func:`agg_loss`'s
    arguments passed through. ``vf_clipfrac`` (a metric) is not returned. The core is
    :func:`maskloss.clipped_value_loss` (``"token_mean"`` is ``loss_agg_mode="token-mean"``).

    Examples
    --------
    >>> from maskloss.conventions import verl
    >>> round(float(verl.compute_value_loss([[1.0, 1.5]], [[0.0, 2.0]], [[1.0, 1.0]], [[1, 1]], 0.2)), 6)
    0.41
    >>> # (1 + 0.64) / 4: the second prediction is clipped to 1.2
    """
    vp = np.asarray(as_numeric(vpreds, "vpreds"), dtype=np.float64)
    ret = np.asarray(as_numeric(returns, "returns"), dtype=np.float64)
    old = np.asarray(as_numeric(values, "values"), dtype=np.float64)
    if not vp.shape == ret.shape == old.shape:
        raise ValueError(f"vpreds, returns and values must share one shape, got {vp.shape}, {ret.shape}, {old.shape}")
    c = _count(cliprange_value, "cliprange_value")
    with np.errstate(invalid="ignore", over="ignore"):
        clipped = np.maximum(np.minimum(vp, old + c), old - c)
        losses = np.maximum((vp - ret) ** 2, (clipped - ret) ** 2)
    return np.float64(0.5 * agg_loss(losses, response_mask, loss_agg_mode, dp_size, batch_num_tokens,
                                     global_batch_size, loss_scale_factor))


def remove_padding_log_probs(
    input_ids: npt.ArrayLike,
    attention_mask: npt.ArrayLike,
    logits_rmpad: npt.ArrayLike,
    response_length: int,
    temperature: float = 1.0,
) -> FloatArray:
    r"""The response log-probs of verl's remove-padding path (``use_remove_padding=True``), ``(bs, response_length)``.

    ``DataParallelPPOActor._forward_micro_batch`` (``verl/workers/actor/dp_actor.py``):
    ``unpad_input`` packs the valid tokens of every row into one flat row (row-major order:
    a **packed** batch, one document per row), the model returns ``logits_rmpad``
    ``(total_nnz, V)`` on it, and the labels are that flat row **rolled** by one,
    ``torch.roll(input_ids_rmpad, shifts=-1, dims=1)``; then ``log_softmax(logits / T)`` at the
    rolled labels is padded back to ``(bs, seqlen)`` (0 at padding) and sliced to the
    response, ``[:, -response_length - 1 : -1]``:

    .. math::
        \ell_{k} = \log\operatorname{softmax}(z_k / T)_{x_{k+1 \bmod N}}, \qquad
        k = 0, \dots, N - 1 \text{ over the flat row of } N \text{ valid tokens}

    **Where it differs from the per-document definition**, stated plainly: the roll crosses
    every document boundary, so the value at the last token of each row scores the *first
    token of the next row* (the last row's scores the first row's first token: the roll
    wraps). After the slice, that value sits at the response position just after the
    response's last token, which is padding (``response_mask`` 0), or is sliced away when
    the response fills ``response_length``. So under ``response_mask`` (verl's
    ``attention_mask[:, -response_length:]``, left-padded prompts and right-padded responses)
    this is exactly :func:`maskloss.token_logprobs` of the responses scored by the logits
    one step before (per document, nothing crosses), and ``agg_loss`` of anything built
    on it agrees; off the mask the mirror keeps verl's boundary-crossing numbers, which a
    mask that is not verl's (a response token right after a fully valid row's end, a
    hole in the attention mask) would let in.

    Parameters
    ----------
    input_ids, attention_mask : array_like, shape (bs, seqlen)
        The prompt + response tokens and their mask (right-most ``response_length`` steps
        are the response).
    logits_rmpad : array_like, shape (total_nnz, V)
        The model's logits on the flat packed row (``total_nnz`` = valid tokens), before the
        temperature.
    response_length : int, 0 <= response_length < seqlen
    temperature : float > 0

    Examples
    --------
    Two rows (prompt ``[5]``, responses ``[1, 2]`` and ``[3]``), a uniform model over 6 tokens:
    the only non-zero step off the mask is the crossing one (row 1's last token scoring row 0's
    first, the wrapped roll), at a padded response position.

    >>> import numpy as np
    >>> from maskloss.conventions.verl import remove_padding_log_probs
    >>> ids = np.array([[5, 1, 2], [5, 3, 0]]); attn = np.array([[1, 1, 1], [1, 1, 0]])
    >>> lp = remove_padding_log_probs(ids, attn, np.zeros((5, 6)), response_length=2)
    >>> (lp / np.log(1 / 6)).round(12).tolist()     # in units of log(1/6)
    [[1.0, 1.0], [1.0, 1.0]]
    >>> (lp * attn[:, -2:] / np.log(1 / 6)).round(12).tolist()   # under response_mask
    [[1.0, 1.0], [1.0, 0.0]]
    """
    ids = as_numeric(input_ids, "input_ids")
    if ids.ndim != 2:
        raise ValueError(f"input_ids must have shape (bs, seqlen), got {ids.shape}")
    if ids.size and ids.dtype.kind not in "iu":
        raise TypeError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
    valid = check_mask(attention_mask, ids.shape, name="attention_mask")
    seqlen = ids.shape[1]
    if isinstance(response_length, bool) or not isinstance(response_length, (int, np.integer)):
        raise TypeError(f"response_length must be an int, got {response_length!r}")
    if not 0 <= response_length < seqlen:
        raise ValueError(f"response_length must be in [0, seqlen - 1] = [0, {seqlen - 1}] (verl slices "
                         f"[:, -response_length - 1 : -1]), got {response_length}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise TypeError(f"temperature must be a real number > 0, got {temperature!r}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    indices = np.flatnonzero(valid.ravel())  # unpad_input: nonzero of the flattened mask
    z = np.asarray(as_numeric(logits_rmpad, "logits_rmpad"), dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != indices.size or (indices.size and z.shape[1] == 0):
        raise ValueError(
            f"logits_rmpad must have shape (total_nnz, V) with total_nnz = {indices.size} valid tokens, got {z.shape}"
        )
    rolled = np.roll(ids.ravel()[indices].astype(np.int64), -1)  # torch.roll(input_ids_rmpad, -1, dims=1)
    out_of_range = (rolled < 0) | (rolled >= z.shape[1])
    if np.any(out_of_range):
        k = int(np.flatnonzero(out_of_range)[0])
        pos = tuple(int(i) for i in np.unravel_index(indices[(k + 1) % indices.size], ids.shape))
        raise ValueError(f"input_ids must be in [0, {z.shape[1]}) at valid steps; input_ids{list(pos)} is {rolled[k]}")
    with np.errstate(invalid="ignore", over="ignore"):
        log_p = pointwise.log_softmax(z / float(temperature))[np.arange(indices.size), rolled]
    full = np.zeros(ids.size, dtype=np.float64)
    full[indices] = log_p  # pad_input: 0 at padding
    return full.reshape(ids.shape)[:, seqlen - response_length - 1 : seqlen - 1]
