r"""Apple's Cut Cross-Entropy (``cut_cross_entropy.linear_cross_entropy``), as NumPy truth in float64.

Reproduces ``cut_cross_entropy/linear_cross_entropy.py`` of **cut-cross-entropy 25.1.1**
(checked against its ``impl="torch_compile"`` path on torch 2.13 CPU by ``maskloss
conformance`` and the tests). CCE takes the embeddings ``e`` ``(..., D)`` and the
classifier ``c`` ``(V, D)`` and never materialises the logits ``e @ c.T``.

What it computes:

1. ``shift=True``: the embedding at position ``t`` predicts ``targets[..., t + 1]``; the
   last position predicts nothing. ``reduction="none"`` then returns shape
   ``(..., T - 1)``, entry ``t`` being the loss of the prediction made at ``t``.
2. Targets equal to ``ignore_index`` (default -100) are dropped before anything is
   computed (their embeddings are never read).
3. ``softcap``: logits become ``tanh(logits / softcap) * softcap``.
4. torch's cross-entropy with ``reduction`` ``"mean"`` (over the kept targets: NaN when
   there are none), ``"sum"`` or ``"none"`` (0 at dropped positions).

The quirks, stated plainly:

* CCE has no bias, no label smoothing, no class weights and no z-loss in 25.1.1.
* ``impl="torch_compile"`` computes the cross-entropy on ``logits.float()``: float32,
  whatever the input dtype (float64 embeddings are cast *down*); the Triton ``"cce"``
  kernel accumulates in float32 as well.
* ``filter_eps`` (``"high"`` or ``"auto"``: ``finfo(e.dtype).eps / 32``, 2.4e-4 for
  bfloat16) only changes the **gradient** of the Triton kernel: vocabulary blocks in
  which every softmax probability is below ``filter_eps`` are skipped in the backward
  pass, i.e. their gradient contribution :math:`g\,p_c\,e` (and :math:`g\,p_c\,c_c`) is
  dropped. The value is unchanged. This mirror is exact: it drops nothing, so the
  difference between it and CCE's gradient is exactly what the filter removed (at most
  ``filter_eps`` times the block's size per entry, before the reduction's scale).

Examples
--------
>>> import numpy as np
>>> from maskloss.conventions.cce import linear_cross_entropy
>>> e = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])    # (B=1, T=3, D=2)
>>> c = np.array([[1.0, 0.0], [0.0, 1.0]])                   # V=2
>>> targets = np.array([[0, 1, -100]])
>>> linear_cross_entropy(e, c, targets, shift=True, reduction="none").shape   # T - 1 predictions
(1, 2)
>>> round(float(linear_cross_entropy(e, c, targets, shift=True)), 6)   # only t=0 -> target 1 counts
1.313262
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_flag
from maskloss.linear import linear_cross_entropy as _linear_cross_entropy
from maskloss.reductions import Reduction

__all__ = ["linear_cross_entropy"]

_REDUCTIONS: dict[str, Reduction] = {"mean": "token_mean", "sum": "sum", "none": "none"}


def linear_cross_entropy(
    e: npt.ArrayLike,
    c: npt.ArrayLike,
    targets: npt.ArrayLike,
    ignore_index: int = -100,
    softcap: float | None = None,
    reduction: str = "mean",
    shift: bool = False,
    filter_eps: float | str | None = "high",
    impl: Any = "cce",
) -> Any:
    r"""``cut_cross_entropy.linear_cross_entropy``, exactly, in float64.

    With :math:`z = e\,c^\top`, softcapped if asked, :math:`y'` the targets (shifted by one
    with ``shift``) and :math:`K` the positions whose target is not ``ignore_index``:

    .. math::
        \text{mean} = \frac1{|K|}\sum_{i \in K} \big(\mathrm{lse}(z_i) - z_{i,y'_i}\big)

    ``filter_eps`` and ``impl`` are accepted and change nothing (see the module notes).

    Returns
    -------
    numpy.float64, or for ``"none"`` an array of the targets' shape (``(..., T - 1)`` with
    ``shift``), 0 where the target is ignored.
    """
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none' (CCE's names); got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    shifted = check_flag(shift, "shift")
    emb = as_numeric(e, "e", min_ndim=1)
    tgt = as_numeric(targets, "targets")
    if emb.shape[:-1] != tgt.shape:
        raise ValueError(f"e must have shape targets.shape + (D,); got e {emb.shape} and targets {tgt.shape}")
    if shifted:
        if tgt.ndim == 0:
            raise ValueError("shift=True needs targets with a time axis, got a scalar")
        emb, tgt = emb[..., :-1, :], tgt[..., 1:]
    batch_shape = tgt.shape
    out = _linear_cross_entropy(
        emb.reshape(1, -1, emb.shape[-1]), c, tgt.reshape(1, -1), ignore_index=int(ignore_index),
        softcap=softcap, reduction=_REDUCTIONS[reduction],
    )
    return out.reshape(batch_shape) if reduction == "none" else out
