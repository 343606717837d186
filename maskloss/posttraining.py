r"""Post-training losses: masked token log-probs, the RL surrogates, KL estimators, DPO/IPO, aggregations.

The losses of LLM post-training (GRPO, DAPO, Dr. GRPO, GSPO, DPO, IPO, SimPO) differ mainly in
which masked denominator they divide by. The per-token pieces live here, and every
aggregation is one :class:`maskloss.MaskedTotals` (per-sequence numerator and token count)
read off by :func:`aggregate`:

=========================  ================================================================  ============
``mode``                   value                                                             trainers
=========================  ================================================================  ============
``"token_mean"``           :math:`\sum_{bt} m\ell / \sum_{bt} m` (this batch's tokens)       TRL bnpo,
                                                                                             verl token-mean
``"sequence_mean"``        :math:`\frac1K\sum_{b:L_b>0} \frac{1}{L_b}\sum_t m\ell`           TRL grpo
``"batch_mean"``           :math:`\frac1B\sum_b \sum_t m\ell`                                verl seq-mean-token-sum
``"sum"``                  :math:`\sum_{bt} m\ell`                                           verl token-sum
``"constant"``             :math:`\sum_{bt} m\ell / c`, ``c`` configured (Dr. GRPO:          TRL dr_grpo
                           :math:`B\cdot` ``max_completion_length``)
``"global_token_mean"``    :math:`\sum_{bt} m\ell / N_{\text{global}}`, ``N`` the valid      TRL dapo,
                           tokens of the whole step (all micro-batches and ranks)            verl token-mean
=========================  ================================================================  ============

(:math:`L_b = \sum_t m_{bt}`, :math:`K` the sequences with :math:`L_b > 0`.) Only ``"sum"``,
``"constant"`` and ``"global_token_mean"`` are sums of per-micro-batch values (invariant to
micro-batching and to the number of ranks); ``"batch_mean"`` is invariant when micro-batches
hold equally many sequences.

Everything computes in float64, selects valid steps with ``np.where`` (garbage under the
mask never reaches a value or a gradient) and never writes into its inputs.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import as_numeric, check_label_smoothing, check_mask, first_bad_position
from maskloss._rows import as_rows, to_float64
from maskloss._types import BoolArray, FloatArray
from maskloss.losses import Pipeline, register_pipeline
from maskloss.reductions import MaskedTotals

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "aggregate",
    "clipped_surrogate",
    "dpo_loss",
    "kl_estimate",
    "policy_gradient_objective",
    "sequence_logprobs",
    "sequence_ratio",
    "token_logprobs",
]

#: Names accepted by :func:`aggregate`'s ``mode``.
AGGREGATIONS: tuple[str, ...] = (
    "token_mean", "sequence_mean", "batch_mean", "sum", "constant", "global_token_mean",
)
#: Names accepted by :func:`kl_estimate`'s ``estimator``.
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")


def _positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    x = float(value)
    if not np.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {x!r}")
    return x


def _steps(x: npt.ArrayLike, name: str) -> np.ndarray[Any, Any]:
    arr = as_numeric(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, time), got shape {arr.shape}")
    return arr


def _valid_values(x: np.ndarray[Any, Any], valid: BoolArray, name: str) -> FloatArray:
    """``x`` in float64 at valid steps, 0 elsewhere; raise if a valid step is not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        vals = np.where(valid, x, 0).astype(np.float64)
    bad = ~np.isfinite(vals)
    if np.any(bad):
        pos = first_bad_position(bad, vals.shape)
        raise ValueError(f"{name} must be finite at valid steps; {name}{list(pos)} is {float(vals[pos])!r}")
    return vals


def _per_step_like(
    x: npt.ArrayLike | None, valid: BoolArray, name: str, *, default: float | None = None
) -> FloatArray:
    """A ``(B,)``, ``(B, 1)`` or ``(B, T)`` per-sequence or per-step quantity broadcast to the mask."""
    if x is None:
        if default is None:
            raise TypeError(f"{name} is required")
        return np.where(valid, default, 0.0)
    arr = as_numeric(x, name)
    batch, steps = valid.shape
    if arr.shape in ((batch,), (batch, 1)):
        arr = arr.reshape(batch, 1)
    elif arr.shape != (batch, steps):
        raise ValueError(
            f"{name} must have shape ({batch},), ({batch}, 1) or ({batch}, {steps}) to match the mask, "
            f"got {arr.shape}"
        )
    return _valid_values(np.broadcast_to(arr, valid.shape), valid, name)


# --------------------------------------------------------------------------------------------
# token log-probabilities


def _logprob_pipeline(
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    mask: npt.ArrayLike | None,
    ignore_index: int | None,
    temperature: float,
    weight: FloatArray | None,
    reduction: str,
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
    valid = check_mask(mask, lab.shape)
    if ignore_index is not None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
        valid = valid & (lab != ignore_index)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {lab.dtype}")
    safe = np.where(valid, lab, 0)
    out_of_range = valid & ((safe < 0) | (safe >= z.shape[-1]))
    if np.any(out_of_range):
        pos = first_bad_position(out_of_range, lab.shape)
        raise ValueError(
            f"labels must be in [0, {z.shape[-1]}) at valid steps; labels{list(pos)} is {int(lab[pos])}"
        )
    w = np.where(valid, 1.0, 0.0) if weight is None else np.where(valid, weight, 0.0)

    def step(rows: Any, lab_rows: Any, z_rows: Any, grad: bool = False) -> Any:
        scaled = to_float64(z_rows) / tau
        picked = np.arange(scaled.shape[0])
        if not grad:
            return pointwise.log_softmax(scaled)[picked, lab_rows]
        log_p, p = pointwise.log_softmax_and_softmax(scaled)
        p *= -1.0 / tau
        p[picked, lab_rows] += 1.0 / tau  # d log p_y / d z = (onehot - softmax) / tau
        return log_p[picked, lab_rows], p

    return Pipeline(step, (safe.reshape(-1), as_rows(z)), valid, w, reduction, z.shape)


def token_logprobs(
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    ignore_index: int | None = None,
    temperature: float = 1.0,
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
        The sampling temperature the logits are divided by (TRL, verl).

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> logits = np.log([[[0.5, 0.5], [0.25, 0.75], [np.nan, np.nan]]])
    >>> maskloss.token_logprobs([[0, 1, 0]], logits, [[True, True, False]]).round(6).tolist()
    [[-0.693147, -0.287682, 0.0]]
    """
    return _logprob_pipeline(labels, logits, mask, ignore_index, temperature, None, "none").value()  # type: ignore[no-any-return]


def sequence_logprobs(
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    average: bool = False,
    ignore_index: int | None = None,
    temperature: float = 1.0,
) -> FloatArray:
    r"""Per-sequence log-probabilities, ``(B,)``: sums (DPO) or means over valid tokens (SimPO, IPO).

    .. math:: \log\pi(y_b) = \sum_t m_{bt}\log p_{bt}, \qquad
              \overline{\log\pi}(y_b) = \frac{\sum_t m_{bt}\log p_{bt}}{\sum_t m_{bt}}

    An empty response (no valid token) has sum 0 and mean NaN (0/0: there is no average
    log-probability of nothing; TRL's ``clamp(min=1)`` turns it into 0, see
    :mod:`maskloss.conventions.trl`).

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> logits = np.log([[[0.5, 0.5], [0.25, 0.75]], [[0.5, 0.5], [0.5, 0.5]]])
    >>> mask = [[True, True], [False, False]]
    >>> maskloss.sequence_logprobs([[0, 1], [0, 0]], logits, mask).round(6).tolist()
    [-0.980829, 0.0]
    >>> maskloss.sequence_logprobs([[0, 1], [0, 0]], logits, mask, average=True).round(6).tolist()
    [-0.490415, nan]
    """
    if not isinstance(average, (bool, np.bool_)):
        raise TypeError(f"average must be True or False, got {average!r}")
    pipeline = _logprob_pipeline(labels, logits, mask, ignore_index, temperature, None, "none")
    totals = pipeline.totals()
    if not average:
        return totals.numerator
    nonempty = totals.denominator > 0
    return np.where(nonempty, totals.numerator / np.where(nonempty, totals.denominator, 1.0), np.nan)


def policy_gradient_objective(
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    weight: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    ignore_index: int | None = None,
    temperature: float = 1.0,
) -> np.float64:
    r"""Any weighted sum of token log-probs, :math:`J = \sum_{bt} m_{bt}\, w_{bt} \log p_{bt}`.

    The policy-gradient case: with ``w`` the (detached) per-token coefficient of a loss,
    ``maskloss.value_and_grad(policy_gradient_objective)`` gives :math:`J` and
    :math:`\partial J/\partial z_{btv} = m_{bt} w_{bt} (\mathbb 1[v = y_{bt}] - p_{btv}) / \tau`,
    exactly 0 at masked steps. ``weight`` may be negative (advantages) and has shape
    ``(B,)``, ``(B, 1)`` or ``(B, T)``; it must be finite at valid steps.

    Examples
    --------
    REINFORCE with advantages +1 and -1 on two one-token responses:

    >>> import numpy as np, maskloss
    >>> logits = np.zeros((2, 1, 2))
    >>> value, grad = maskloss.value_and_grad(maskloss.policy_gradient_objective)(
    ...     [[0], [1]], logits, [1.0, -1.0])
    >>> round(float(value), 6), grad.tolist()
    (0.0, [[[0.5, -0.5]], [[0.5, -0.5]]])
    """
    return _objective_pipeline(labels, logits, weight, mask, ignore_index=ignore_index, temperature=temperature).value()  # type: ignore[no-any-return]


def _objective_pipeline(
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    weight: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    ignore_index: int | None = None,
    temperature: float = 1.0,
) -> Pipeline:
    lab = _steps(labels, "labels")
    valid = check_mask(mask, lab.shape)
    if ignore_index is not None and isinstance(ignore_index, (int, np.integer)) and not isinstance(ignore_index, bool):
        valid = valid & (lab != ignore_index)
    w = _per_step_like(weight, valid, "weight")
    return _logprob_pipeline(lab, logits, mask, ignore_index, temperature, w, "sum")


register_pipeline(policy_gradient_objective, _objective_pipeline)


# --------------------------------------------------------------------------------------------
# per-token losses


def clipped_surrogate(
    ratio: npt.ArrayLike,
    advantages: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    delta: float | None = None,
) -> FloatArray:
    r"""The PPO/GRPO clipped surrogate per token, ``(B, T)``, 0 at masked steps.

    .. math:: \ell_{bt} = -\min\big(\min(r_{bt}, \delta)\,A_{bt},\;
              \operatorname{clip}(r_{bt}, 1-\varepsilon_{low}, 1+\varepsilon_{high})\,A_{bt}\big)

    (``delta`` is the optional upper bound of two-sided clipping, TRL's ``delta``;
    ``epsilon_high`` defaults to ``epsilon_low``, DAPO's clip-higher sets it larger).
    ``ratio`` is :math:`\pi_\theta/\pi_{old}` per token ``(B, T)``, or per sequence ``(B,)``
    (GSPO, :func:`sequence_ratio`); ``advantages`` are ``(B,)`` (GRPO) or ``(B, T)``.
    Non-finite ratios or advantages at valid steps are errors, not NaNs.

    Examples
    --------
    >>> import maskloss
    >>> maskloss.clipped_surrogate([[1.5, 0.5, 9.0]], [1.0], [[True, True, False]]).tolist()
    [[-1.2, -0.5, 0.0]]
    """
    eps_low = _positive(epsilon_low, "epsilon_low", allow_zero=True)
    if eps_low >= 1:
        raise ValueError(f"epsilon_low must be in [0, 1) (the lower clip bound 1 - epsilon_low > 0), got {eps_low!r}")
    eps_high = eps_low if epsilon_high is None else _positive(epsilon_high, "epsilon_high", allow_zero=True)
    r_arr = as_numeric(ratio, "ratio")
    adv_arr = as_numeric(advantages, "advantages")
    if r_arr.ndim == 2:
        shape = r_arr.shape
    elif adv_arr.ndim == 2:
        shape = adv_arr.shape
    elif mask is not None:
        shape = np.shape(mask)
    else:
        raise ValueError(
            f"the steps are unknown: ratio {r_arr.shape} and advantages {adv_arr.shape} are per sequence; "
            f"pass a (B, T) mask"
        )
    valid = check_mask(mask, shape)
    r = _per_step_like(ratio, valid, "ratio", default=None)
    bad = valid & (r < 0)
    if np.any(bad):
        pos = first_bad_position(bad, r.shape)
        raise ValueError(f"ratio must be >= 0 at valid steps; ratio{list(pos)} is {float(r[pos])!r}")
    a = _per_step_like(advantages, valid, "advantages")
    capped = r
    if delta is not None:
        d = _positive(delta, "delta")
        if d <= 1 + eps_high:
            raise ValueError(f"delta must be > 1 + epsilon_high = {1 + eps_high!r}, got {d!r}")
        capped = np.minimum(r, d)
    clipped = np.clip(r, 1 - eps_low, 1 + eps_high)
    return np.where(valid, -np.minimum(capped * a, clipped * a), 0.0)


def sequence_ratio(log_ratio: npt.ArrayLike, mask: npt.ArrayLike | None = None) -> FloatArray:
    r"""GSPO's sequence-level importance ratio, ``(B,)``.

    .. math:: s_b = \exp\Big(\frac{1}{L_b}\sum_t m_{bt}\log r_{bt}\Big)

    ``log_ratio`` is :math:`\log\pi_\theta - \log\pi_{old}` per token. An empty response
    has ratio 1 (its mean log-ratio is taken as 0, TRL's ``clamp(min=1)``: nothing to
    reweight, and it carries no loss anyway).

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> maskloss.sequence_ratio(np.log([[2.0, 0.5, np.nan]]), [[True, True, False]]).tolist()
    [1.0]
    """
    lr = _steps(log_ratio, "log_ratio")
    valid = check_mask(mask, lr.shape)
    vals = _valid_values(lr, valid, "log_ratio")
    totals = MaskedTotals.from_terms(vals, valid.astype(np.float64))
    mean = totals.numerator / np.maximum(totals.denominator, 1.0)
    return np.exp(mean)


def kl_estimate(
    logprobs: npt.ArrayLike,
    ref_logprobs: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    estimator: str = "k3",
) -> FloatArray:
    r"""Per-token estimators of :math:`\mathrm{KL}(\pi_\theta\,\|\,\pi_{ref})` from sampled tokens, ``(B, T)``.

    With :math:`x = \log\pi_{ref} - \log\pi_\theta` (Schulman, "Approximating KL divergence"):

    .. math:: k_1 = -x, \qquad k_2 = \tfrac12 x^2, \qquad k_3 = e^{x} - x - 1 \;(\texttt{low\_var\_kl})

    Exactly 0 at masked steps. No clamping here (verl clamps ``k3``; that lives in
    :mod:`maskloss.conventions.verl`).

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> lp, ref = np.log([[0.5, 0.25]]), np.log([[0.25, 0.25]])
    >>> maskloss.kl_estimate(lp, ref, estimator="k3").round(6).tolist()    # 0.5 - ln 0.5 - 1
    [[0.193147, 0.0]]
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(map(repr, KL_ESTIMATORS))}; got {estimator!r}")
    lp = _steps(logprobs, "logprobs")
    ref = as_numeric(ref_logprobs, "ref_logprobs")
    if ref.shape != lp.shape:
        raise ValueError(f"ref_logprobs must have the shape of logprobs {lp.shape}, got {ref.shape}")
    valid = check_mask(mask, lp.shape)
    x = _valid_values(ref, valid, "ref_logprobs") - _valid_values(lp, valid, "logprobs")
    if estimator == "k1":
        return -x
    if estimator == "k2":
        return 0.5 * x * x
    return np.where(valid, pointwise.expm1_minus_x(x), 0.0)


def _log_sigmoid(x: FloatArray) -> FloatArray:
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def dpo_loss(
    chosen_logps: npt.ArrayLike,
    rejected_logps: npt.ArrayLike,
    ref_chosen_logps: npt.ArrayLike,
    ref_rejected_logps: npt.ArrayLike,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> FloatArray:
    r"""Per-pair DPO losses ``(B,)`` from sequence log-probs (:func:`sequence_logprobs`).

    With the margin :math:`h = (\log\pi_c - \log\pi^{ref}_c) - (\log\pi_r - \log\pi^{ref}_r)`:

    .. math:: \text{sigmoid: } -(1-\epsilon)\log\sigma(\beta h) - \epsilon\log\sigma(-\beta h),
              \qquad \text{ipo: } \big(h - \tfrac{1}{2\beta}\big)^2

    (``label_smoothing`` :math:`\epsilon` is cDPO's). IPO is meant on length-normalised
    log-probs: pass ``sequence_logprobs(..., average=True)`` (as TRL does).

    Examples
    --------
    >>> import maskloss
    >>> maskloss.dpo_loss([-1.0], [-2.0], [-1.0], [-1.0], beta=1.0).round(6).tolist()  # -log sigmoid(1)
    [0.313262]
    """
    b = _positive(beta, "beta")
    if loss_type not in ("sigmoid", "ipo"):
        raise ValueError(f"loss_type must be 'sigmoid' or 'ipo'; got {loss_type!r}")
    eps = check_label_smoothing(label_smoothing)
    if eps > 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing!r}")
    arrays: list[FloatArray] = []
    for name, x in (("chosen_logps", chosen_logps), ("rejected_logps", rejected_logps),
                    ("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
        arr = as_numeric(x, name)
        if arr.ndim != 1:
            raise ValueError(f"{name} must have shape (B,), got {arr.shape}")
        if arrays and arr.shape != arrays[0].shape:
            raise ValueError(f"{name} must have the shape of chosen_logps {arrays[0].shape}, got {arr.shape}")
        arrays.append(_valid_values(arr, np.ones(arr.shape, bool), name))
    margin = (arrays[0] - arrays[2]) - (arrays[1] - arrays[3])
    if loss_type == "ipo":
        return (margin - 1.0 / (2.0 * b)) ** 2
    return -(1.0 - eps) * _log_sigmoid(b * margin) - eps * _log_sigmoid(-b * margin)


# --------------------------------------------------------------------------------------------
# aggregation


def aggregate(
    per_token_loss: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    mode: str = "token_mean",
    constant: float | None = None,
    global_count: float | None = None,
) -> np.float64:
    r"""Aggregate a per-token loss ``(B, T)`` into the scalar of one of :data:`AGGREGATIONS`.

    ``constant`` is the configured divisor of ``mode="constant"`` (Dr. GRPO:
    ``B * max_completion_length``, never the batch's padded length); ``global_count`` is the
    number of valid tokens of the whole optimiser step, all micro-batches and ranks, for
    ``mode="global_token_mean"`` (DAPO): summing the micro-batch values then gives the
    global token mean exactly. Values at masked steps are never read; non-finite values at
    valid steps are errors. ``"token_mean"`` and ``"sequence_mean"`` of a batch with no valid
    token are NaN (0/0); ``"sequence_mean"`` leaves empty responses out of its count.

    Examples
    --------
    Two responses of 3 and 1 tokens, the second loss per token 4:

    >>> import numpy as np, maskloss
    >>> loss = np.array([[1.0, 1.0, 1.0], [4.0, np.nan, np.nan]])
    >>> mask = np.array([[1, 1, 1], [1, 0, 0]], dtype=bool)
    >>> [float(maskloss.aggregate(loss, mask, mode=m)) for m in ("token_mean", "sequence_mean", "batch_mean")]
    [1.75, 2.5, 3.5]
    >>> float(maskloss.aggregate(loss, mask, mode="constant", constant=2 * 8))  # B * max_completion_length
    0.4375
    >>> float(maskloss.aggregate(loss, mask, mode="global_token_mean", global_count=10))
    0.7
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"mode must be one of {', '.join(map(repr, AGGREGATIONS))}; got {mode!r}")
    loss = _steps(per_token_loss, "per_token_loss")
    valid = check_mask(mask, loss.shape)
    totals = MaskedTotals.from_terms(_valid_values(loss, valid, "per_token_loss"), valid.astype(np.float64))
    if mode == "constant":
        if constant is None:
            raise TypeError("mode='constant' needs constant= (Dr. GRPO: batch size * max_completion_length)")
        return np.float64(totals.value("sum") / _positive(constant, "constant"))
    if mode == "global_token_mean":
        if global_count is None:
            raise TypeError("mode='global_token_mean' needs global_count= (valid tokens of the whole step)")
        count = _positive(global_count, "global_count")
        if count < int(np.count_nonzero(valid)):
            raise ValueError(
                f"global_count={global_count!r} is below this micro-batch's own {np.count_nonzero(valid)} valid "
                "tokens; it counts the valid tokens of the whole optimiser step (all micro-batches and ranks)"
            )
        return np.float64(totals.value("sum") / count)
    return totals.value(mode)
