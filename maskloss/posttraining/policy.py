"""Policy-gradient losses: the weighted log-prob objective, the clipped surrogate, the sequence ratio."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from maskloss import registry
from maskloss._checks import as_numeric, check_ignore_index, check_mask, first_bad_position
from maskloss._types import FloatArray
from maskloss.pipeline import Pipeline
from maskloss.posttraining._common import _per_step_like, _positive, _steps, _valid_values
from maskloss.posttraining.logprobs import _logprob_pipeline
from maskloss.reductions import MaskedTotals


@registry.loss(scalar=True, wrt="logits")
def policy_gradient_objective(
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    weight: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    ignore_index: int | None = None,
    temperature: float = 1.0,
) -> Pipeline:
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
    lab = _steps(labels, "labels")
    valid = check_mask(mask, lab.shape)
    if check_ignore_index(ignore_index) is not None:
        valid = valid & (lab != ignore_index)
    w = _per_step_like(weight, valid, "weight")
    return _logprob_pipeline(lab, logits, mask, ignore_index, temperature, w, "sum")


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
