r"""check_loss's oracles beyond the five maskloss losses: other label-smoothing rules and weight rules.

Both are compositions of the math layer (:func:`maskloss.pointwise.smoothed_cross_entropy`,
:func:`maskloss.reductions.renormalized_value`) with maskloss's own reductions
(:func:`maskloss.reduce`, :class:`~maskloss.reductions.MaskedTotals`); the valid-step
selection of :func:`smoothed_sparse` is written out here (mask, then ``ignore_index``) rather
than taken from the losses' pipeline, so it is an independent reading of that rule.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss.accumulation import masked_totals
from maskloss.reductions import MaskedTotals, Reduction, reduce, renormalized_value

__all__ = ["gradient_of", "smoothed_sparse", "weight_normalized"]


def _log_probabilities(pred: npt.NDArray[np.float64], from_logits: bool) -> npt.NDArray[np.float64]:
    if from_logits:
        return pointwise.log_softmax(pred)
    with np.errstate(divide="ignore"):
        return np.log(pred)


def smoothed_sparse(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    from_logits: bool = False,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    smoothing_rule: str = "uniform",
    smoothing_form: str = "cross_entropy",
    reduction: Reduction = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
) -> Any:
    r"""Sparse cross-entropy against the smoothed target of ``smoothing_rule``, in ``smoothing_form``.

    The valid steps (mask, and label != ``ignore_index``) are selected, scored by
    :func:`maskloss.pointwise.smoothed_cross_entropy` (the pad class of
    ``"others_except_pad"`` is ``ignore_index``) and reduced by
    :func:`maskloss.reduce`. With ``"uniform"`` and ``"cross_entropy"`` this is
    :func:`maskloss.sparse_categorical_crossentropy`.

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> from maskloss.testing.oracles import smoothed_sparse
    >>> logits = np.array([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]]); labels = np.array([[0, 2]])
    >>> a = smoothed_sparse(labels, logits, from_logits=True, label_smoothing=0.1)
    >>> b = maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True, label_smoothing=0.1)
    >>> bool(np.isclose(a, b))
    True
    """
    labels = np.asarray(y_true)
    pred = np.asarray(y_pred, dtype=np.float64)
    valid = np.ones(labels.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if ignore_index is not None:
        valid = valid & (labels != ignore_index)
    rows_pred = pred[valid]  # boolean indexing: the valid rows only, copied
    rows_lab = labels[valid].astype(np.int64)
    with np.errstate(all="ignore"):
        per_row = pointwise.smoothed_cross_entropy(
            rows_lab,
            _log_probabilities(rows_pred, from_logits),
            label_smoothing,
            smoothing_rule,
            smoothing_form,
            ignore_index,
        )
    per_step = np.zeros(labels.shape)
    per_step[valid] = per_row
    return reduce(per_step, valid, reduction=reduction, sample_weight=sample_weight)


def weight_normalized(like: Callable[..., Any], normalization: str) -> Callable[..., Any]:
    r"""``like`` with the sample weight normalised by ``normalization`` (see
    :func:`maskloss.reductions.renormalized_value`): ``"numerator"`` divides
    :math:`\sum m w \ell` by :math:`\sum m`, ``"nonzero_fraction"`` also by Keras 2's
    :math:`\operatorname{nnz}(w)/K`.

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> from maskloss.testing.oracles import weight_normalized
    >>> f = weight_normalized(maskloss.mse, "numerator")
    >>> float(f(np.zeros((2, 1, 1)), np.ones((2, 1, 1)), sample_weight=np.array([3.0, 1.0])))  # (3 + 1) / 2
    2.0
    """
    totals = masked_totals(like)

    def oracle(y_true: Any, y_pred: Any, mask: Any = None, *, sample_weight: Any = None, **options: Any) -> Any:
        reduction = options.pop("reduction", "token_mean")
        weighted = totals(y_true, y_pred, mask, sample_weight=sample_weight, **options)
        unweighted = totals(y_true, y_pred, mask, **options)
        return renormalized_value(weighted, unweighted, reduction, normalization, sample_weight)

    oracle.__name__ = getattr(like, "__name__", "like")
    # The gradient it carries: like's own weight_normalization= (every maskloss loss with
    # sample_weight= takes it), read by check_loss(grad=) through :func:`gradient_of`.
    setattr(oracle, _GRADIENT, (like, {"weight_normalization": normalization}))
    return oracle


#: The attribute an oracle carries its differentiable form in: (a maskloss loss, options for it).
_GRADIENT = "maskloss_gradient_of"


def gradient_of(oracle: Callable[..., Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The maskloss loss and extra options whose gradient is ``oracle``'s: ``oracle`` itself with no
    options, the loss and keywords of a ``functools.partial`` of one (no positional arguments), or
    the one it carries (:func:`weight_normalized`)."""
    if isinstance(oracle, functools.partial) and not oracle.args:  # partial(maskloss.mse, reduction="sum")
        inner, extra = gradient_of(oracle.func)
        return inner, {**extra, **oracle.keywords}
    carried = getattr(oracle, _GRADIENT, None)
    if carried is None:
        return oracle, {}
    like, extra = carried
    return like, dict(extra)


def denominator(totals: MaskedTotals, reduction: str) -> float:
    """The D with value * D additive over sequences (1 for ``"sum"``): :meth:`MaskedTotals.count`."""
    return totals.count(reduction)  # type: ignore[arg-type]
