r"""Liger-Kernel's cross-entropy semantics, as NumPy truth in float64.

Reproduces ``liger_kernel.transformers.functional.liger_cross_entropy`` of **liger-kernel
0.8.5** (``liger_kernel/ops/cross_entropy.py``, the Triton kernel
``liger_cross_entropy_kernel`` and ``cross_entropy_forward``). The kernel needs a GPU, so
it cannot run here: the mirror is read from that source and checked against the torch
reference Liger's own tests hold the kernel to (``CrossEntropyWithZLoss`` and the
softcap-first reference of ``test/transformers/test_cross_entropy.py``), rerun on CPU in
``tests/test_conventions_liger.py``, and against golden numbers computed by hand.

``input`` is ``(BT, V)`` logits, ``target`` ``(BT,)`` class indices. Per row whose target
is not ``ignore_index``, with :math:`h = c \tanh(x / c)` (``softcap`` :math:`c`, else
:math:`h = x`), :math:`\operatorname{lse} = \log\sum_v e^{h_v}`, class weights :math:`w`
(1 without ``weight``), :math:`\varepsilon` = ``label_smoothing``:

.. math::
    \ell = (1 - \varepsilon)\, w_y (\operatorname{lse} - h_y)
         + \frac{\varepsilon}{V} \sum_v w_v (\operatorname{lse} - h_v), \qquad
    z = s \operatorname{lse}^2

(``lse_square_scale`` :math:`s`), and the row's loss is :math:`\ell + z` **inside** the
returned loss (``return_z_loss`` only reports :math:`z` besides it). Reductions:
``"none"`` (per row, 0 at ignored rows), ``"sum"``, ``"mean"``: :math:`\sum \ell /
\sum_{\text{kept}} w_y + \sum z / n` (:math:`n` = kept rows: the z-loss is **not**
weighted, Liger's TODO).

The quirks, stated plainly:

* With every target ignored, ``"mean"`` is **0** (the kernel returns early on every row
  and sums zeros), where torch's cross-entropy gives NaN; the reported
  ``token_accuracy`` is then 0/0 = NaN.
* ``return_token_accuracy``: 1 where the first arg-max of the softcapped logits is the
  target; for ``"mean"`` **and** ``"sum"`` the mean over the kept rows (a sum is never
  reported); ``return_predicted_tokens``: the arg-max, -1 at ignored rows.
* Targets outside ``[0, V)`` that are not ``ignore_index`` raise (Liger asserts "out of
  bounds"); ``ignore_index`` may be a real class id (then that class is never trained).
* The kernel computes in float32; this mirror in float64.

Examples
--------
Logits (0, 0) and (0, log 3), the second row ignored, z-loss :math:`s = 0.1`:
:math:`\ell = \log 2` and :math:`z = 0.1 (\log 2)^2 = 0.048045`.

>>> import numpy as np
>>> from maskloss.conventions import liger
>>> x = np.array([[0.0, 0.0], [0.0, np.log(3.0)]])
>>> out = liger.cross_entropy(x, np.array([0, -100]), lse_square_scale=0.1, return_z_loss=True)
>>> round(float(out.loss), 6), round(float(out.z_loss), 6)
(0.741192, 0.048045)
>>> float(liger.cross_entropy(x, np.array([-100, -100])))      # nothing kept: 0, not NaN
0.0
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_flag, check_head_option, check_label_smoothing
from maskloss._types import FloatArray
from maskloss.head import logsumexp
from maskloss.head import softcap as apply_softcap

__all__ = ["CrossEntropyOutput", "cross_entropy"]


class CrossEntropyOutput(NamedTuple):
    """Liger's ``CrossEntropyOutput``: what ``cross_entropy`` returns when anything is asked besides the loss."""

    loss: Any
    z_loss: Any
    token_accuracy: Any
    predicted_tokens: Any


def cross_entropy(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_z_loss: bool = False,
    return_token_accuracy: bool = False,
    return_predicted_tokens: bool = False,
) -> Any:
    r"""``liger_cross_entropy``: the loss, or a :class:`CrossEntropyOutput` when a ``return_*`` flag is set.

    See the module for the formula and the quirks. ``reduction`` is ``"mean"``, ``"sum"``
    or ``"none"``.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none' (Liger's names); got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    eps = check_label_smoothing(label_smoothing)
    scale = check_head_option(lse_square_scale, "lse_square_scale", allow_zero=True)
    cap = None if softcap is None else check_head_option(softcap, "softcap")
    flags = [check_flag(f, n) for f, n in ((return_z_loss, "return_z_loss"),
                                             (return_token_accuracy, "return_token_accuracy"),
                                             (return_predicted_tokens, "return_predicted_tokens"))]
    x = as_numeric(input, "input")
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"input must be (BT, V) logits with V >= 1, got shape {x.shape}")
    t = as_numeric(target, "target")
    if t.shape != (x.shape[0],) or t.dtype.kind not in "iu":
        raise ValueError(f"target must be ({x.shape[0]},) integer class indices, got {t.dtype} {t.shape}")
    vocab = x.shape[1]
    kept = t != ignore_index
    if np.any(kept & ((t < 0) | (t >= vocab))):
        raise ValueError(f"target {t[kept & ((t < 0) | (t >= vocab))][0]} is out of bounds: expected in [0, {vocab})")
    w = np.ones(vocab) if weight is None else as_numeric(weight, "weight").astype(np.float64)
    if w.shape != (vocab,):
        raise ValueError(f"weight has to be a tensor of size V = {vocab}, got shape {w.shape}")

    y = t[kept].astype(np.intp)
    h = apply_softcap(x[kept].astype(np.float64), cap)
    lse = logsumexp(h) if h.shape[0] else np.zeros(0)
    rows = np.arange(y.shape[0])
    with np.errstate(invalid="ignore"):
        ce = w[y] * (lse - h[rows, y])
        if eps > 0:
            ce = (1.0 - eps) * ce + (eps / vocab) * np.sum(w * (lse[:, None] - h), axis=-1)
    z = scale * lse * lse
    n = int(y.shape[0])
    if reduction == "mean" and n:
        denominator = float(np.sum(w[y])) if weight is not None else float(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            ce, z = ce / denominator, z / n
    correct = (np.argmax(h, axis=-1) == y).astype(np.float64) if h.shape[0] else np.zeros(0)
    loss: Any
    z_loss: Any
    accuracy: Any
    loss, z_loss, accuracy = (_scatter(v, kept) for v in (ce + z, z, correct))
    if reduction != "none":
        loss, z_loss = np.float64(np.sum(loss)), np.float64(np.sum(z_loss))
        accuracy = np.float64(np.sum(accuracy) / n) if n else np.float64(np.nan)
    if not any(flags):
        return loss
    predicted = np.full(x.shape[0], -1, dtype=np.int64)
    predicted[kept] = np.argmax(h, axis=-1) if h.shape[0] else predicted[kept]
    return CrossEntropyOutput(
        loss, z_loss if flags[0] else None, accuracy if flags[1] else None, predicted if flags[2] else None
    )


def _scatter(values: FloatArray, kept: npt.NDArray[np.bool_]) -> FloatArray:
    out = np.zeros(kept.shape[0])
    out[kept] = values
    return out
