r"""PPO/GRPO per-token pieces beside the surrogate: the clipped value loss and the high-entropy mask."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import registry
from maskloss.pipeline import Pipeline
from maskloss.posttraining._common import _positive, _steps, _valid_values, check_mask, check_reduction
from maskloss.reductions import Reduction


def _value_step(rows: Any, old: Any, ret: Any, v: Any, grad: bool = False, *, clip: float) -> Any:
    r""":math:`\tfrac12\max((v-R)^2, (\operatorname{clip}(v, v_{old}-c, v_{old}+c)-R)^2)` per valid row.

    The derivative follows torch's autograd of the same expression (``torch.clamp`` passes
    the gradient on its closed interval, ``torch.maximum`` splits it evenly at a tie).
    """
    o, r, x = old[:, 0], ret[:, 0], v[:, 0]
    low, high = o - clip, o + clip
    clipped = np.minimum(np.maximum(x, low), high)
    unclipped_error, clipped_error = x - r, clipped - r
    a, b = unclipped_error * unclipped_error, clipped_error * clipped_error
    loss = 0.5 * np.maximum(a, b)
    if not grad:
        return loss
    da = unclipped_error
    db = np.where((x >= low) & (x <= high), clipped_error, 0.0)
    d = np.where(a > b, da, np.where(a < b, db, 0.5 * (da + db)))
    return loss, d[:, None]


@registry.loss(wrt="values")
def clipped_value_loss(
    values: npt.ArrayLike,
    old_values: npt.ArrayLike,
    returns: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    value_clip_range: float = 0.2,
    reduction: Reduction = "token_mean",
) -> Pipeline:
    r"""PPO's clipped value-function loss per token, reduced over the mask.

    With :math:`c` the ``value_clip_range``, :math:`v` the ``values`` of the value head being
    trained, :math:`v^{old}` those of the rollout and :math:`R` the ``returns``:

    .. math:: \ell_{bt} = \tfrac12 \max\Big((v_{bt} - R_{bt})^2,\;
              \big(\operatorname{clip}(v_{bt},\, v^{old}_{bt} - c,\, v^{old}_{bt} + c) - R_{bt}\big)^2\Big)

    then ``reduction`` over the valid steps (``"token_mean"``: :math:`\sum m\ell / \sum m`).
    That is torchtune's ``PPOLoss`` value loss (``0.5 * masked_mean(max(...))``, which
    divides by :math:`\sum m + 10^{-8}`: for a bool mask that sum is computed in float32,
    where the :math:`10^{-8}` vanishes, so the numbers are these) and verl's
    ``compute_value_loss`` (``0.5 * agg_loss(max(...))`` per ``loss_agg_mode``,
    :func:`maskloss.conventions.verl.compute_value_loss`). A batch with no valid step is
    NaN here under ``"token_mean"`` (0/0), 0 in torchtune. ``maskloss.value_and_grad(clipped_value_loss)`` gives the
    gradient with respect to ``values`` (the value head's output), exactly 0 at masked
    steps: :math:`v - R` where the unclipped term is the larger (or :math:`v` lies in the
    clip interval, where both terms agree), 0 where the clipped term is the larger, and at
    a tie outside the interval half of :math:`v - R` (torch's autograd of the same
    expression), times the reduction's scale.

    Parameters
    ----------
    values, old_values, returns : array_like, shape (B, T)
        Finite at valid steps; anything (NaN, inf) at masked ones, never read.
    mask : array_like of bool, shape (B, T), optional
        True at the response tokens that count.
    value_clip_range : float >= 0
        :math:`c` (torchtune ``value_clip_range``, verl ``cliprange_value``).
    reduction : str
        One of :data:`maskloss.REDUCTIONS`.

    Examples
    --------
    The second value moved 0.5 from its rollout value, clipped to 0.2; the padded step holds NaN:

    >>> import numpy as np, maskloss
    >>> v, old, ret = [[1.0, 1.5, np.nan]], [[1.0, 1.0, 0.0]], [[0.0, 2.0, 0.0]]
    >>> mask = [[True, True, False]]
    >>> maskloss.clipped_value_loss(v, old, ret, mask, reduction="none").round(6).tolist()
    [[0.5, 0.32, 0.0]]
    >>> value, grad = maskloss.value_and_grad(maskloss.clipped_value_loss)(v, old, ret, mask)
    >>> round(float(value), 6), grad.round(6).tolist()    # (0.5 + 0.32) / 2; the clipped term rules step 2
    (0.41, [[0.5, 0.0, 0.0]])
    """
    clip = _positive(value_clip_range, "value_clip_range", allow_zero=True)
    check_reduction(reduction)
    v = _steps(values, "values")
    valid = check_mask(mask, v.shape)
    arrays = []
    for name, x in (("old_values", old_values), ("returns", returns), ("values", values)):
        arr = v if name == "values" else _steps(x, name)
        if arr.shape != v.shape:
            raise ValueError(f"{name} must have the shape of values {v.shape}, got {arr.shape}")
        arrays.append(_valid_values(arr, valid, name).reshape(-1, 1))

    def step(rows: Any, old: Any, ret: Any, val: Any, grad: bool = False) -> Any:
        return _value_step(rows, old, ret, val, grad, clip=clip)

    return Pipeline(step, tuple(arrays), valid, valid.astype(np.float64), reduction, v.shape)


def high_entropy_mask(
    entropies: npt.ArrayLike, mask: npt.ArrayLike | None, threshold: float
) -> npt.NDArray[np.bool_]:
    r"""The tokens whose entropy reaches the ``threshold`` quantile of the valid entropies, ``(B, T)`` bool.

    TRL's ``GRPOTrainer.get_high_entropy_mask`` (``top_entropy_quantile``; TRL 1.16,
    single process): with :math:`q` the ``threshold`` and :math:`H` the ``entropies``,

    .. math:: \text{out}_{bt} = m_{bt} \wedge \big(H_{bt} \ge Q_q(\{H_{bt} : m_{bt}\})\big)

    where :math:`Q_q` is ``torch.quantile``'s linear interpolation **computed in float32**,
    as TRL does (``entropies[mask].float()``): the valid entropies are rounded to float32 and
    sorted, the rank :math:`q(n-1)` is taken in float32, and the two neighbours are
    interpolated by torch's float32 ``lerp`` (:math:`a + w(b-a)` for :math:`w < 1/2`, else
    :math:`b - (b-a)(1-w)`). The comparison is then of the entropies as given (float64)
    against that float32 threshold, so an entropy that *is* the quantile (e.g. the largest,
    at :math:`q = 1`) is left out when rounding it to float32 rounds it up. All False when
    no step is valid. Entropies at masked steps are never read; non-finite entropies at
    valid steps are an error (TRL's quantile would be NaN and select nothing).

    Parameters
    ----------
    entropies : array_like, shape (B, T)
        Per-token entropies (:func:`maskloss.entropy` with ``reduction="none"``).
    mask : array_like of bool, shape (B, T), or None
        True at the completion tokens (None: every step).
    threshold : float in [0, 1]
        The quantile :math:`q` (TRL's ``top_entropy_quantile``; 1.0 keeps the maximal entropy,
        0.0 every valid token).

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> h = np.array([[0.5, 1.0, 2.0, np.nan], [4.0, 0.25, 3.0, 8.0]])
    >>> mask = np.array([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=bool)
    >>> maskloss.high_entropy_mask(h, mask, 0.5).astype(int).tolist()   # the median of 6 values: 1.5
    [[0, 0, 1, 0], [1, 0, 1, 0]]
    """
    given: object = threshold  # any object may arrive here
    if isinstance(given, bool) or not isinstance(given, numbers.Real):
        raise TypeError(f"threshold must be a real number in [0, 1], got {threshold!r}")
    q = float(given)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"threshold must be a quantile in [0, 1], got {threshold!r}")
    h = _steps(entropies, "entropies")
    valid = check_mask(mask, h.shape, name="mask")
    values = _valid_values(h, valid, "entropies")
    selected = np.sort(values[valid].astype(np.float32))
    n = selected.shape[0]
    if n == 0:
        return np.zeros(h.shape, dtype=bool)
    # torch.quantile(x, q) for a float32 x: q becomes a float32 tensor, rank = q * (n - 1) in float32.
    rank = np.float32(q) * np.float32(n - 1)
    below = int(rank)
    above = int(np.ceil(rank))
    weight = rank - np.float32(below)
    a, b = selected[below], selected[above]
    if abs(weight) < 0.5:  # at::lerp in float32, its two branches
        cut = a + weight * (b - a)
    else:
        cut = b - (b - a) * (np.float32(1.0) - weight)
    return valid & (values >= np.float64(cut))
