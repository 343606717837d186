"""Per-token KL estimators (k1, k2, k3) between a policy and a reference."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import as_numeric
from maskloss._types import FloatArray
from maskloss.posttraining._common import _steps, _valid_values, check_mask

#: Names accepted by :func:`kl_estimate`'s ``estimator``.
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")


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
