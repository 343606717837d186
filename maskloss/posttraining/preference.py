"""Preference losses on sequence log-probs: DPO and IPO."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_label_smoothing
from maskloss._types import FloatArray
from maskloss.posttraining._common import _positive, _valid_values


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
