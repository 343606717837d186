r"""Liger-Kernel's fused linear cross-entropy, as NumPy truth in float64.

Reproduces ``liger_kernel/ops/fused_linear_cross_entropy.py`` and the Triton kernel
``liger_cross_entropy_kernel`` (``liger_kernel/ops/cross_entropy.py``) of **liger-kernel
0.8.5**, read from its released source: Liger's kernels are Triton and need a GPU, so
this mirror is checked (tests/test_conventions_liger.py) against Liger's *own* reference,
the torch computation its tests compare the kernel with (``CrossEntropyWithZLoss`` in
``test/transformers/test_cross_entropy.py``: ``F.cross_entropy`` with ``weight``,
``label_smoothing`` and ``ignore_index`` plus the z-loss term), run for real in float64.

Per kept token :math:`i` (target not ``ignore_index``), with logits
:math:`x = h W^\top + b`, softcapped to :math:`c\tanh(x/c)` when ``softcap`` is given,
class weights :math:`w` (``ce_weight``, 1 without), :math:`\varepsilon` =
``label_smoothing`` and :math:`V` classes:

.. math::
    \ell_i = (1-\varepsilon)\,w_{y_i}(\mathrm{lse}_i - x_{i,y_i})
           + \frac{\varepsilon}{V}\sum_c w_c(\mathrm{lse}_i - x_{ic}), \qquad
    \zeta_i = s\,\mathrm{lse}_i^2 \ (s = \texttt{lse\_square\_scale}).

``reduction="mean"`` returns :math:`\sum_i \ell_i / \sum_i w_{y_i} + \sum_i \zeta_i / N`
with :math:`N` the kept tokens: **the z-loss is divided by the token count, not by the
summed class weights** (a TODO in the kernel: "z_loss is not scaled by weight").
``"sum"`` returns :math:`\sum_i (\ell_i + \zeta_i)`; ``"none"`` one value per token, 0
at ignored tokens.

The quirks, stated plainly:

* **An all-ignored batch gives 0 with "mean"** (every token returns early, nothing is
  divided), where ``torch.nn.functional.cross_entropy`` gives NaN.
* ``use_token_scaling=True`` multiplies each token's :math:`\ell_i + \zeta_i` (and the
  returned z-loss) by the detached probability of its target, :math:`p_{y_i} =
  e^{x_{i,y_i} - \mathrm{lse}_i}`, *after* the mean's division.
* ``return_token_accuracy``: 1 where the first arg max of the logits is the target;
  for "mean" and "sum" the sum over tokens divided by :math:`N` (**NaN when nothing is
  kept**); per token (0 when ignored) for "none". ``return_predicted_tokens``: the arg
  max per token, -1 when ignored.
* Targets outside ``[0, V)`` that are not ``ignore_index`` are read out of bounds by the
  kernel; here they raise ``ValueError``.
* The kernel computes in float32 (the weight gradient in the parameter dtype unless
  ``accum_dtype`` is given: Liger#830); ``accum_dtype`` only changes that rounding and is
  accepted and ignored here (the mirror is exact).

The argument order is that of ``LigerFusedLinearCrossEntropyLoss(...)(lin_weight,
_input, target, bias)``, the constructor's options following as keywords (the
functional ``liger_fused_linear_cross_entropy(input, weight, ...)`` takes the hidden
states first).

Examples
--------
>>> import numpy as np
>>> from maskloss.conventions.liger import fused_linear_cross_entropy
>>> weight = np.array([[1.0, 0.0], [0.0, 1.0]]); x = np.array([[1.0, 0.0], [3.0, 3.0]])
>>> round(float(fused_linear_cross_entropy(weight, x, np.array([1, -100]))), 6)   # log(e + 1) - 0
1.313262
>>> float(fused_linear_cross_entropy(weight, x, np.array([-100, -100])))   # all ignored: 0, not NaN
0.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_flag
from maskloss.head import z_loss_from_lse
from maskloss.linear import linear_cross_entropy, linear_logit_stats

__all__ = ["CrossEntropyOutput", "fused_linear_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class CrossEntropyOutput:
    """What Liger returns when one of the ``return_*`` flags is set (its dataclass of the same name)."""

    loss: Any
    z_loss: Any = None
    token_accuracy: Any = None
    predicted_tokens: Any = None


def fused_linear_cross_entropy(
    lin_weight: npt.ArrayLike,
    _input: npt.ArrayLike,
    target: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    ce_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    lse_square_scale: float = 0.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    softcap: float | None = None,
    return_z_loss: bool = False,
    accum_dtype: Any = None,
    use_token_scaling: bool = False,
    return_token_accuracy: bool = False,
    return_predicted_tokens: bool = False,
) -> Any:
    r"""Liger's ``LigerFusedLinearCrossEntropyLoss`` forward, exactly, in float64.

    Parameters
    ----------
    lin_weight : array_like, shape (V, H)
    _input : array_like, shape (BT, H)
        Liger takes the flattened tokens (it unpacks ``BT, H = _input.shape``).
    target : array_like of int, shape (BT,)
    bias : array_like, shape (V,), optional
    ce_weight : array_like, shape (V,), optional
        Class weights, as torch's ``weight``.
    ignore_index, lse_square_scale, label_smoothing, reduction, softcap
        See the module notes (``label_smoothing`` in [0, 1], ``reduction`` one of
        ``"mean"``, ``"sum"``, ``"none"``).
    return_z_loss, return_token_accuracy, return_predicted_tokens : bool
        When any is set a :class:`CrossEntropyOutput` is returned, else the loss alone.
    accum_dtype
        Accepted, changes nothing here.
    use_token_scaling : bool

    Returns
    -------
    numpy.float64 (or shape ``(BT,)`` for ``"none"``), or :class:`CrossEntropyOutput`
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'sum' or 'none' (as Liger asserts); got {reduction!r}")
    for name, flag in (("return_z_loss", return_z_loss), ("use_token_scaling", use_token_scaling),
                       ("return_token_accuracy", return_token_accuracy),
                       ("return_predicted_tokens", return_predicted_tokens)):
        check_flag(flag, name)
    x = as_numeric(_input, "_input")
    t = as_numeric(target, "target")
    if x.ndim != 2 or t.ndim != 1:
        raise ValueError(f"Liger takes _input (BT, H) and target (BT,); got _input {x.shape} and target {t.shape}")
    head = {"bias": bias, "ignore_index": ignore_index, "softcap": softcap}
    stats = linear_logit_stats(x, lin_weight, t, **head)  # type: ignore[arg-type]
    kept = t != ignore_index
    count = int(np.sum(kept))
    ce = linear_cross_entropy(x, lin_weight, t, label_smoothing=label_smoothing, class_weight=ce_weight,
                              reduction="none", **head)  # type: ignore[arg-type]
    z = np.where(kept, z_loss_from_lse(stats.lse, float(lse_square_scale)), 0.0)
    if reduction == "mean" and count:
        cw = None if ce_weight is None else np.asarray(ce_weight, dtype=np.float64)
        denominator = float(count) if cw is None else float(np.sum(cw[np.where(kept, t, 0)][kept]))
        with np.errstate(divide="ignore", invalid="ignore"):
            ce = ce / denominator
        z = z / count
    if use_token_scaling:
        p_target = np.where(kept, np.exp(stats.target - stats.lse), 0.0)
        ce, z = ce * p_target, z * p_target
    per_token = ce + z
    loss = per_token if reduction == "none" else np.float64(np.sum(per_token))
    if not (return_z_loss or return_token_accuracy or return_predicted_tokens):
        return loss
    accuracy = np.where(kept, stats.argmax == t, False).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        token_accuracy = accuracy if reduction == "none" else np.float64(np.sum(accuracy) / np.float64(count))
    return CrossEntropyOutput(
        loss=loss,
        z_loss=(z if reduction == "none" else np.float64(np.sum(z))) if return_z_loss else None,
        token_accuracy=token_accuracy if return_token_accuracy else None,
        predicted_tokens=stats.argmax.astype(np.int64) if return_predicted_tokens else None,
    )
