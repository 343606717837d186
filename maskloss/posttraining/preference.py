"""Preference losses on sequence log-probs: DPO and IPO."""

from __future__ import annotations

import numbers

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_label_smoothing
from maskloss._types import FloatArray
from maskloss.posttraining._common import _positive, _valid_values


def _log_sigmoid(x: FloatArray) -> FloatArray:
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


#: Names accepted by :func:`dpo_loss`'s ``f_divergence_type``.
F_DIVERGENCE_TYPES: tuple[str, ...] = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def _f_score(logratio: FloatArray, kind: str, alpha: float) -> FloatArray:
    """The f-DPO score :math:`f'(e^\\rho)` of each log-ratio, in float64; an overflow is an error."""
    if kind == "reverse_kl" or (kind == "alpha_divergence" and alpha == 1.0):
        return logratio
    with np.errstate(over="ignore"):
        if kind == "forward_kl":
            score = -np.expm1(-logratio)
        elif kind == "js_divergence":
            score = np.log(2.0) + _log_sigmoid(logratio)
        else:
            score = np.expm1((alpha - 1.0) * logratio) / (alpha - 1.0)
    bad = ~np.isfinite(score)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"the {kind} score of log-ratio {float(logratio[i])!r} (pair {i}) overflows float64"
            + (f" with f_alpha_divergence_coef={alpha!r}" if kind == "alpha_divergence" else "")
        )
    return np.asarray(score, dtype=np.float64)


def dpo_loss(
    chosen_logps: npt.ArrayLike,
    rejected_logps: npt.ArrayLike,
    ref_chosen_logps: npt.ArrayLike,
    ref_rejected_logps: npt.ArrayLike,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
) -> FloatArray:
    r"""Per-pair DPO losses ``(B,)`` from sequence log-probs (:func:`sequence_logprobs`).

    Each log-ratio :math:`\rho = \log\pi - \log\pi^{ref}` becomes the score
    :math:`s = f'(e^{\rho})` of the f-DPO regulariser ``f_divergence_type`` (Wang et al.,
    "Beyond reverse KL"; TRL's ``f_divergence_type``), in float64 without clamps:

    * ``"reverse_kl"`` (standard DPO, :math:`f'(t) = \log t`): :math:`s = \rho`;
    * ``"forward_kl"`` (:math:`f'(t) = 1 - 1/t`): :math:`s = 1 - e^{-\rho}`;
    * ``"js_divergence"`` (:math:`f'(t) = \log\frac{2t}{1+t}`): :math:`s = \log 2 + \log\sigma(\rho)`;
    * ``"alpha_divergence"`` (:math:`f'(t) = \frac{t^{\alpha-1}-1}{\alpha-1}`):
      :math:`s = \operatorname{expm1}((\alpha-1)\rho)/(\alpha-1)`, and :math:`\rho` at :math:`\alpha = 1`

    (:math:`\alpha` = ``f_alpha_divergence_coef``). With the margin :math:`h = s_c - s_r`
    (for ``"reverse_kl"``, :math:`(\log\pi_c - \log\pi^{ref}_c) - (\log\pi_r - \log\pi^{ref}_r)`):

    .. math:: \text{sigmoid: } -(1-\epsilon)\log\sigma(\beta h) - \epsilon\log\sigma(-\beta h),
              \qquad \text{ipo: } \big(h - \tfrac{1}{2\beta}\big)^2

    (``label_smoothing`` :math:`\epsilon` is cDPO's). IPO is meant on length-normalised
    log-probs: pass ``sequence_logprobs(..., average=True)`` (TRL instead divides the
    *scores* of summed log-probs by the lengths; :func:`maskloss.conventions.trl.dpo_loss`
    mirrors that, and TRL's clamp of the alpha-divergence exponent at 80). A score that
    overflows float64 (an alpha-divergence exponent above 709) is an error.

    Examples
    --------
    >>> import maskloss
    >>> maskloss.dpo_loss([-1.0], [-2.0], [-1.0], [-1.0], beta=1.0).round(6).tolist()  # -log sigmoid(1)
    [0.313262]
    >>> maskloss.dpo_loss([-1.0], [-2.0], [-1.0], [-1.0], beta=1.0,      # h = 0 - (1 - e) = e - 1
    ...                   f_divergence_type="forward_kl").round(6).tolist()     # log1p(exp(1 - e))
    [0.164984]
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
    if f_divergence_type not in F_DIVERGENCE_TYPES:
        raise ValueError(
            f"f_divergence_type must be one of {', '.join(map(repr, F_DIVERGENCE_TYPES))}; got {f_divergence_type!r}"
        )
    coef: object = f_alpha_divergence_coef  # any object may arrive here
    if isinstance(coef, bool) or not isinstance(coef, numbers.Real):
        raise TypeError(f"f_alpha_divergence_coef must be a real number, got {f_alpha_divergence_coef!r}")
    alpha = float(coef)
    if not np.isfinite(alpha):
        raise ValueError(f"f_alpha_divergence_coef must be finite, got {alpha!r}")
    chosen = _f_score(arrays[0] - arrays[2], f_divergence_type, alpha)
    rejected = _f_score(arrays[1] - arrays[3], f_divergence_type, alpha)
    margin = chosen - rejected
    if loss_type == "ipo":
        return (margin - 1.0 / (2.0 * b)) ** 2
    return -(1.0 - eps) * _log_sigmoid(b * margin) - eps * _log_sigmoid(-b * margin)
