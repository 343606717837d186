r"""TensorFlow Addons ``tfa.seq2seq.sequence_loss`` and ``SequenceLoss``, in NumPy.

Reproduces ``tensorflow_addons/seq2seq/loss.py`` of the later tfa releases, up to 0.23
(the last; source read at tensorflow/addons commit 2a8d073). The reductions are those of
every tfa release and of ``tf.contrib.seq2seq.sequence_loss`` (TF 1.x, only the two
``average_*`` flags); the mixed-flag check and one-hot targets are later additions. Same
names, argument names, defaults and output shapes, so a call
swaps one for one; results are float64.

With per-step cross-entropy :math:`c_{bt}` and weights :math:`W_{bt}`:

================================ ====================================================  =========
flags                            value                                                 shape
================================ ====================================================  =========
avg_t & avg_b (function default) :math:`\sum c W / \sum W`                               ``()``
sum_t & sum_b (class default)    :math:`\sum c W / \mathrm{nnz}(W)`                      ``()``
avg_t only                       :math:`\sum_t c W / \sum_t W`                           ``(B,)``
avg_b only                       :math:`\sum_b c W / \sum_b W`                           ``(T,)``
sum_t only                       :math:`\sum_t c W / \mathrm{nnz}_t(W)`                  ``(B,)``
sum_b only                       :math:`\sum_b c W / \mathrm{nnz}_b(W)`                  ``(T,)``
no flag                          :math:`c W`                                             ``(B, T)``
================================ ====================================================  =========

Quirks, stated plainly:

* Every division is ``tf.math.divide_no_nan``: a zero denominator (all weights 0) gives 0,
  not NaN.
* "sum_over" is not a sum: it divides by the *number of non-zero weights*, so with
  fractional weights ``sum_t & sum_b`` is neither a sum nor a weighted mean.
* avg and sum on the same axis raise ``ValueError``; so do ``average_across_batch`` with
  ``sum_over_timesteps`` and ``sum_over_batch`` with ``average_across_timesteps``
  ("ambiguous order"). Early releases (tfa 0.4, issue #329; source at commit 00562c6)
  silently ignored the ``sum_over_*`` flag of such a mixed pair.
* ``SequenceLoss`` (the Keras class) defaults to ``sum_t & sum_b``, not to the function's
  ``avg_t & avg_b``, and needs ``sample_weight`` (tfa fails without it).
* tfa multiplies by the weights, so NaN logits at a zero-weight step make the tfa loss NaN;
  here zero-weight steps are never read (the masked truth, not the NaN).
* Weights must be finite and >= 0 here (tfa accepts any float; ``count_nonzero`` counts
  negative weights too).

Examples
--------
>>> import numpy as np
>>> from maskloss.conventions import tfa
>>> logits = np.log([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]])
>>> targets = np.array([[0, 1, 0]])
>>> weights = np.array([[1.0, 1.0, 0.0]])
>>> round(float(tfa.sequence_loss(logits, targets, weights)), 6)   # (ln 2 + ln 4/3) / 2
0.490415
>>> round(float(tfa.SequenceLoss()(targets, logits, sample_weight=2 * weights)), 6)  # (2 ln 2 + 2 ln 4/3) / 2
0.980829
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import as_numeric, check_flag
from maskloss._types import FloatArray, IntArray
from maskloss.conventions._golden_steps import (
    check_scores,
    check_step_weights,
    check_targets,
    div_no_nan,
    per_valid_row,
)
from maskloss.reductions import MaskedTotals

__all__ = ["SequenceLoss", "sequence_loss"]


def _check_flags(avg_t: object, avg_b: object, sum_t: object, sum_b: object) -> tuple[bool, bool, bool, bool]:
    names = ("average_across_timesteps", "average_across_batch", "sum_over_timesteps", "sum_over_batch")
    flags = []
    for name, value in zip(names, (avg_t, avg_b, sum_t, sum_b), strict=True):
        flags.append(check_flag(value, name))
    a_t, a_b, s_t, s_b = flags
    for (x, nx), (y, ny), why in (
        ((a_t, names[0]), (s_t, names[2]), ""),
        ((a_b, names[1]), (s_b, names[3]), ""),
        ((a_b, names[1]), (s_t, names[2]), " because of ambiguous order"),
        ((s_b, names[3]), (a_t, names[0]), " because of ambiguous order"),
    ):
        if x and y:
            raise ValueError(f"{nx} and {ny} cannot be set to True at same time{why} (as in tfa)")
    return a_t, a_b, s_t, s_b


def _crossent(
    logits: np.ndarray[Any, Any],
    targets: npt.ArrayLike,
    w: FloatArray,
    softmax_loss_function: Callable[..., Any] | None,
) -> FloatArray:
    """Per-step cross-entropy at steps with non-zero weight, 0 elsewhere, shape (B, T)."""
    valid = w != 0
    num_classes = logits.shape[-1]
    t = as_numeric(targets, "targets")
    if t.ndim == 3:
        if t.shape != logits.shape:
            raise ValueError(f"one-hot targets must have the shape of logits {logits.shape}, got {t.shape}")
        if softmax_loss_function is not None:
            raise ValueError("softmax_loss_function takes index targets of shape (batch, time), not one-hot")
        dense = t.reshape(-1, num_classes)
        index = np.arange(valid.size).reshape(valid.shape)

        def dense_rows(rows: IntArray, x: FloatArray) -> FloatArray:
            return pointwise.cross_entropy(dense[rows].astype(np.float64), pointwise.log_softmax(x))

        dense_losses: FloatArray = per_valid_row(dense_rows, valid, index, logits, 1)[0]
        return dense_losses
    if t.ndim != 2:
        raise ValueError(
            f"targets must be (batch, time) class indices or (batch, time, classes) one-hot, got {t.shape}"
        )
    labels = check_targets(t, valid.shape, valid, num_classes)

    if softmax_loss_function is None:

        def rows_fn(lab: IntArray, x: FloatArray) -> FloatArray:
            return pointwise.sparse_cross_entropy(lab, pointwise.log_softmax(x), None, 0.0)

    else:
        user_fn = softmax_loss_function

        def rows_fn(lab: IntArray, x: FloatArray) -> FloatArray:
            out = np.asarray(user_fn(labels=lab, logits=x), dtype=np.float64)
            if out.shape != lab.shape:
                raise ValueError(
                    f"softmax_loss_function must return one loss per row, shape {lab.shape}; got {out.shape}"
                )
            return out

    losses: FloatArray = per_valid_row(rows_fn, valid, labels, logits, 1)[0]
    return losses


def sequence_loss(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    weights: npt.ArrayLike,
    average_across_timesteps: bool = True,
    average_across_batch: bool = True,
    sum_over_timesteps: bool = False,
    sum_over_batch: bool = False,
    softmax_loss_function: Callable[..., Any] | None = None,
) -> Any:
    r"""Weighted cross-entropy of a sequence of logits, reduced as ``tfa.seq2seq.sequence_loss``.

    .. math::
        c_{bt} = -\log \operatorname{softmax}(x_{bt})_{y_{bt}}, \qquad
        \text{avg\_t \& avg\_b} = \frac{\sum_{bt} c_{bt} W_{bt}}{\sum_{bt} W_{bt}}

    and the other flag combinations as in the table of :mod:`maskloss.conventions.tfa`
    (``x / 0 = 0`` everywhere).

    Parameters
    ----------
    logits : array_like, shape (B, T, C)
    targets : array_like, shape (B, T) of int, or (B, T, C) one-hot/soft
        Class indices (any value at zero-weight steps), or dense targets
        (``tf.nn.softmax_cross_entropy_with_logits``).
    weights : array_like, shape (B, T)
        Step weights, finite and >= 0; a step with weight 0 is never read.
    average_across_timesteps, average_across_batch, sum_over_timesteps, sum_over_batch : bool
        tfa's flags; see the module table. avg and sum on the same axis, or avg on one
        axis with sum on the other, raise ``ValueError`` as in tfa.
    softmax_loss_function : callable, optional
        ``f(labels=(n,) ints, logits=(n, C) float64) -> (n,)`` used instead of the softmax
        cross-entropy. Called on the rows with non-zero weight only (tfa passes all rows).

    Returns
    -------
    numpy.float64, or ndarray of shape (B,), (T,) or (B, T)

    Examples
    --------
    Two sequences, lengths 2 and 1: per-step losses ``[[1, 3], [2, .]]`` (via log-probs).

    >>> import numpy as np
    >>> from maskloss.conventions.tfa import sequence_loss
    >>> lp = np.full((2, 2, 2), -np.inf); y = np.zeros((2, 2), int)
    >>> lp[..., 0] = [[-1.0, -3.0], [-2.0, np.nan]]   # log p of class 0 = -loss
    >>> lp[..., 1] = np.log1p(-np.exp(lp[..., 0]))
    >>> w = np.array([[1.0, 1.0], [1.0, 0.0]])
    >>> float(sequence_loss(lp, y, w))                        # (1 + 3 + 2) / 3
    2.0
    >>> sequence_loss(lp, y, w, average_across_batch=False)   # [(1 + 3) / 2, 2 / 1]
    array([2., 2.])
    >>> sequence_loss(lp, y, w, average_across_timesteps=False)  # [(1 + 2) / 2, 3 / 1]
    array([1.5, 3. ])
    """
    a_t, a_b, s_t, s_b = _check_flags(
        average_across_timesteps, average_across_batch, sum_over_timesteps, sum_over_batch
    )
    lg = check_scores(logits, "logits", ndim=3)
    w = check_step_weights(weights, lg.shape[:2])
    num = _crossent(lg, targets, w, softmax_loss_function) * w
    if a_t and a_b:
        return div_no_nan(num.sum(), w.sum())
    if s_t and s_b:
        return div_no_nan(num.sum(), np.count_nonzero(w))
    if a_t or a_b or s_t or s_b:
        axis_terms = (num.T, w.T) if (a_b or s_b) else (num, w)  # reduce over batch or over time
        if a_t or a_b:
            totals = MaskedTotals.from_terms(*axis_terms)
        else:
            totals = MaskedTotals.from_terms(axis_terms[0], (axis_terms[1] != 0).astype(np.float64))
        return div_no_nan(totals.numerator, totals.denominator)
    return num


class SequenceLoss:
    r"""The Keras-style class ``tfa.seq2seq.SequenceLoss``: defaults ``sum_t & sum_b``.

    ``SequenceLoss()(y_true, y_pred, sample_weight)`` is
    ``sequence_loss(y_pred, y_true, sample_weight, ...)`` with this object's flags, so by
    default :math:`\sum c W / \mathrm{nnz}(W)`: the mean over non-zero-weight steps of
    :math:`c W`, which differs from the function's default :math:`\sum cW/\sum W` as soon
    as the weights are not 0/1.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.tfa import SequenceLoss, sequence_loss
    >>> logits = np.log([[[0.5, 0.5], [0.25, 0.75]]]); y = np.array([[0, 1]])
    >>> w = np.array([[3.0, 1.0]])
    >>> round(float(SequenceLoss()(y, logits, w)), 6)      # (3 ln 2 + ln 4/3) / 2
    1.183562
    >>> round(float(sequence_loss(logits, y, w)), 6)       # (3 ln 2 + ln 4/3) / 4
    0.591781
    """

    def __init__(
        self,
        average_across_timesteps: bool = False,
        average_across_batch: bool = False,
        sum_over_timesteps: bool = True,
        sum_over_batch: bool = True,
        softmax_loss_function: Callable[..., Any] | None = None,
        name: str | None = None,
    ) -> None:
        _check_flags(average_across_timesteps, average_across_batch, sum_over_timesteps, sum_over_batch)
        self.average_across_timesteps = average_across_timesteps
        self.average_across_batch = average_across_batch
        self.sum_over_timesteps = sum_over_timesteps
        self.sum_over_batch = sum_over_batch
        self.softmax_loss_function = softmax_loss_function
        self.name = name

    def __call__(
        self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike, sample_weight: npt.ArrayLike | None = None
    ) -> Any:
        if sample_weight is None:
            raise TypeError(
                "SequenceLoss needs sample_weight of shape (batch, time) (tfa fails without it); "
                "pass np.ones(y_true.shape) for an unweighted loss"
            )
        return sequence_loss(
            y_pred,
            y_true,
            sample_weight,
            average_across_timesteps=self.average_across_timesteps,
            average_across_batch=self.average_across_batch,
            sum_over_timesteps=self.sum_over_timesteps,
            sum_over_batch=self.sum_over_batch,
            softmax_loss_function=self.softmax_loss_function,
        )
