r"""The LM head's side terms on a padded batch: the z-loss on its own, and masked token accuracy.

Both take ``(B, T, V)`` logits and a ``(B, T)`` mask (True = valid), optionally the labels
with an ``ignore_index`` (a step counts when the mask says so **and** its label is not
``ignore_index``), and reduce through :class:`maskloss.reductions.MaskedTotals` like every
loss (each is a :class:`maskloss.losses.Pipeline`; :func:`maskloss.value_and_grad` works on
:func:`z_loss`). The row math is :mod:`maskloss.head`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import registry
from maskloss._checks import (
    as_numeric,
    check_head_option,
    check_ignore_index,
    check_labels,
    check_mask,
    check_reduction,
    check_sample_weight,
)
from maskloss._rows import as_rows, to_float64
from maskloss._types import BoolArray, Reduction
from maskloss.head import apply_head, head_grad, z_loss_grad, z_loss_terms
from maskloss.pipeline import Pipeline

__all__ = ["token_accuracy", "z_loss"]


def _logits_and_valid(
    logits: npt.ArrayLike, mask: npt.ArrayLike | None, labels: npt.ArrayLike | None, ignore_index: int | None,
    *, labels_required: bool = False,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None, BoolArray]:
    """Validated ``(B, T, V)`` logits, the labels (or None) and the steps that count."""
    x = as_numeric(logits, "logits", min_ndim=1)
    if x.shape[-1] == 0:
        raise ValueError(f"logits has no classes: its last axis has size 0 (shape {x.shape})")
    valid = check_mask(mask, x.shape[:-1])
    if labels is None:
        if labels_required:
            raise TypeError("labels are required (integer class labels of shape logits.shape[:-1])")
        if ignore_index is not None:
            raise ValueError(f"ignore_index={ignore_index!r} needs labels= to compare with; pass labels or a mask")
        return x, None, valid
    lab = as_numeric(labels, "labels")
    if lab.shape != x.shape[:-1]:
        raise ValueError(f"labels must have shape logits.shape[:-1] = {x.shape[:-1]}, got {lab.shape}")
    if check_ignore_index(ignore_index) is not None:
        valid = valid & (lab != ignore_index)
    return x, lab, valid


@registry.loss(wrt="logits")
def z_loss(
    logits: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    labels: npt.ArrayLike | None = None,
    ignore_index: int | None = None,
    coefficient: float = 1.0,
    temperature: float = 1.0,
    softcap: float | None = None,
    reduction: Reduction = "token_mean",
) -> Pipeline:
    r"""The z-loss term alone, :math:`z \operatorname{lse}(h)^2` per valid step, reduced.

    .. math:: h = c \tanh\!\left(\frac{x / T}{c}\right), \qquad
        \ell_{bt} = z \left(\log \sum_v e^{h_{btv}}\right)^2

    (PaLM's auxiliary loss; Liger's ``lse_square_scale`` with ``return_z_loss=True``, whose
    reported ``z_loss`` is this with ``coefficient=lse_square_scale`` and ``"token_mean"``
    over the non-ignored tokens; Cut Cross-Entropy's ``compute_z_loss``.) The head options
    apply first, in the documented order (temperature, then softcap): the z-loss is of the
    logits the softmax sees. A ``-inf`` logit (a padded vocabulary lane) stays ``-inf``.
    Its gradient is :math:`2 z \operatorname{lse}(h) \operatorname{softmax}(h)` through the
    head's chain rule (:func:`maskloss.head.head_grad`).

    Parameters
    ----------
    logits : array_like, shape (B, T, V)
    mask : array_like of bool, shape (B, T), optional
    labels : array_like of int, shape (B, T), optional
        Only to find the ignored steps (``labels == ignore_index``), as Liger does.
    ignore_index : int, optional
        Needs ``labels``.
    coefficient : float >= 0, default 1.0
        :math:`z` (``lse_square_scale``); 0 gives exactly 0.
    temperature : float > 0, default 1.0
    softcap : float > 0, optional
    reduction : str, default "token_mean"

    Examples
    --------
    Two equal logits: :math:`\operatorname{lse} = \log 2`, so the term is
    :math:`10^{-4} (\log 2)^2`; the ignored step (label -100) does not count:

    >>> import numpy as np, maskloss
    >>> logits = np.array([[[0.0, 0.0], [50.0, np.nan]]])
    >>> float(maskloss.z_loss(logits, labels=[[1, -100]], ignore_index=-100, coefficient=1e-4))
    4.8045301391820137e-05
    """
    z = check_head_option(coefficient, "coefficient", allow_zero=True)
    t = check_head_option(temperature, "temperature")
    cap = None if softcap is None else check_head_option(softcap, "softcap")
    x, _, valid = _logits_and_valid(logits, mask, labels, ignore_index)
    check_reduction(reduction)

    def step(rows: Any, x_rows: Any, grad: bool = False) -> Any:
        h = apply_head(to_float64(x_rows), temperature=t, cap=cap)
        loss = z_loss_terms(h, z)
        if not grad:
            return loss
        return loss, head_grad(h, z_loss_grad(h, z), temperature=t, cap=cap)

    return Pipeline(step, (as_rows(x),), valid, check_sample_weight(None, valid), reduction, x.shape)


@registry.loss(grad=False)
def token_accuracy(
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    ignore_index: int | None = None,
    reduction: Reduction = "token_mean",
) -> Pipeline:
    r"""Masked token accuracy: 1 where the arg-max of the logits is the label, else 0, reduced.

    .. math:: a_{bt} = \mathbb{1}\!\left[\operatorname{argmax}_v x_{btv} = y_{bt}\right], \qquad
        \text{token\_mean} = \frac{\sum_{bt} m_{bt} a_{bt}}{\sum_{bt} m_{bt}}

    (Liger's ``return_token_accuracy``: the fraction of non-ignored tokens predicted
    right.) Ties go to the first maximal class (``torch.argmax``, ``numpy.argmax``).
    Probabilities work as well as logits (same arg-max); so do the logits after a
    temperature or a softcap, which keep the order. Not differentiable: there is no
    :func:`maskloss.value_and_grad` of it. A batch with no valid step gives NaN
    (``"token_mean"``), as every mean of nothing does.

    Parameters
    ----------
    labels : array_like of int, shape (B, T)
        In ``[0, V)`` at valid steps.
    logits : array_like, shape (B, T, V)
    mask : array_like of bool, shape (B, T), optional
    ignore_index : int, optional
    reduction : str, default "token_mean"

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> logits = np.array([[[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]]])
    >>> float(maskloss.token_accuracy([[0, 0, -100]], logits, ignore_index=-100))  # 1 right of 2
    0.5
    """
    x, lab, valid = _logits_and_valid(logits, mask, labels, ignore_index, labels_required=True)
    assert lab is not None
    check_reduction(reduction)
    safe = check_labels(lab, valid, x.shape[-1], name="labels")

    def step(rows: Any, y: Any, x_rows: Any, grad: bool = False) -> Any:
        if grad:
            raise TypeError("token_accuracy is not differentiable: it has no gradient")
        return (np.argmax(x_rows, axis=-1) == y).astype(np.float64)

    weight = check_sample_weight(None, valid)
    return Pipeline(step, (safe.reshape(-1), as_rows(x)), valid, weight, reduction, x.shape)
