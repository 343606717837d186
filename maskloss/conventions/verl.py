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

from maskloss._checks import as_numeric, check_mask
from maskloss._types import BoolArray, FloatArray

__all__ = ["LOSS_AGG_MODES", "agg_loss", "compute_policy_loss", "compute_value_loss", "kl_penalty"]

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
