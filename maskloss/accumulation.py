r"""Exact gradient accumulation and data parallelism: :class:`GlobalCounts`, :func:`masked_totals`.

A mean of micro-batch means is not the full-batch mean when the micro-batches hold
different numbers of valid tokens (HF transformers before 4.46). Every scalar
reduction is linear in the per-sequence numerators, :math:`\mathcal{L} = \sum_b \lambda_b N_b`, with
coefficients :math:`\lambda_b` that depend only on denominators (the counts; notation in
``docs/appendix/notation.md``). So a full
batch split into micro-batches, spread over ranks, gets the full-batch value **and
gradient** as a plain sum, if every micro-batch uses the *global* count:

===================  ===============================================  ===================================
reduction            loss of micro-batch :math:`i`                    count shared (summed over all)
===================  ===============================================  ===================================
``"sum"``            :math:`\sum_{b\in i} N_b`                        nothing
``"token_mean"``     :math:`\sum_{b\in i} N_b \,/\, D`                :math:`D = \sum_b D_b` (``tokens``)
``"sequence_mean"``  :math:`\sum_{b\in i,\,D_b>0} (N_b/D_b) \,/\, K`  :math:`K` (``nonempty_sequences``)
``"batch_mean"``     :math:`\sum_{b\in i} N_b \,/\, B`                :math:`B` (``sequences``)
``"element_mean"``   :math:`\sum_{b\in i} N_b \,/\, S`                :math:`S = \sum_b S_b` (``steps``)
===================  ===============================================  ===================================

Summed over the micro-batches of an optimizer step (and over ranks), these losses,
and so their gradients, are exactly the full-batch ones. The counts depend only on
masks and weights, never on predictions: compute them before the first forward pass,
add them up across micro-batches, all-reduce the 4-vector :meth:`GlobalCounts.to_array`
once per step across ranks, and divide each micro-batch's ``"sum"`` by them.

>>> import numpy as np, maskloss
>>> mask = maskloss.mask_from_lengths([3, 1, 2], 3)
>>> local = [maskloss.GlobalCounts.from_mask(mask[:2]), maskloss.GlobalCounts.from_mask(mask[2:])]
>>> counts = maskloss.GlobalCounts.total(local)
>>> counts
GlobalCounts(tokens=6.0, nonempty_sequences=3.0, sequences=3.0, steps=9.0)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_mask, check_reduction, check_sample_weight
from maskloss._types import FloatArray, ScalarReduction
from maskloss.pipeline import Pipeline
from maskloss.reductions import COUNT_OF, SCALAR_REDUCTIONS, MaskedTotals, count_below
from maskloss.registry import pipeline_transform

__all__ = ["GlobalCounts", "masked_totals", "micro_batch_value_and_grad"]

#: The counts of :class:`GlobalCounts` that count things (``tokens`` is a sum of weights).
_WHOLE_COUNTS = ("nonempty_sequences", "sequences", "steps")


def _count(raw: Any, name: str) -> float:
    """One count as a float: a real number (or 0-d array), finite and >= 0; anything else is refused."""
    if isinstance(raw, (bool, np.bool_, str, bytes)) or raw is None:
        raise TypeError(f"GlobalCounts: {name} must be a number, got {raw!r}")
    if not isinstance(raw, numbers.Real):
        try:
            arr = as_numeric(raw, f"GlobalCounts: {name}")  # numpy, torch or jax 0-d arrays
        except TypeError:
            raise TypeError(f"GlobalCounts: {name} must be a number, got {raw!r:.80}") from None
        if arr.shape != () or arr.dtype == bool:
            raise TypeError(
                f"GlobalCounts: {name} must be one number, got an array of shape {arr.shape} and dtype {arr.dtype} "
                "(GlobalCounts.from_array reads the 4-vector of to_array())"
            )
        raw = arr.item()
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"GlobalCounts: {name} must be finite and >= 0, got {value} "
            "(a count shared between ranks was corrupted, or is not a sum of counts)"
        )
    return value


@dataclass(frozen=True)
class GlobalCounts:
    r"""The counts an optimizer step shares: sums over all its micro-batches and ranks.

    Counts combine by plain addition (``a + b``, :meth:`total`), so one all-reduce
    (sum) of :meth:`to_array` across ranks gives the global counts.

    Attributes
    ----------
    tokens : float
        :math:`D = \sum_b D_b`, the weighted denominator of ``"token_mean"`` (the number
        of valid tokens without weights; with ``ignore_index``, the labels that are not
        ignored).
    nonempty_sequences : float
        :math:`K`, the sequences with :math:`D_b > 0` (``"sequence_mean"``).
    sequences : float
        :math:`B`, all sequences, empty ones included (``"batch_mean"``).
    steps : float
        :math:`S = \sum_b S_b`, all steps, padding included (``"element_mean"``).

    Examples
    --------
    Two micro-batches of 5 and 1 valid tokens; the mean of their means weighs the
    single token like the five. Divided by the global count, the losses add up:

    >>> import numpy as np, maskloss
    >>> y_true = np.zeros((2, 5, 1))
    >>> y_pred = np.array([[[1.0]] * 5, [[4.0]] + [[np.nan]] * 4])
    >>> mask = maskloss.mask_from_lengths([5, 1], 5)
    >>> micro = [(y_true[i:i + 1], y_pred[i:i + 1], mask[i:i + 1]) for i in (0, 1)]
    >>> counts = maskloss.GlobalCounts.total(maskloss.GlobalCounts.from_mask(m) for _, _, m in micro)
    >>> totals = [maskloss.masked_totals(maskloss.mae)(*mb) for mb in micro]
    >>> [round(float(counts.loss(t, "token_mean")), 6) for t in totals]      # 5/6 and 4/6
    [0.833333, 0.666667]
    >>> round(float(sum(counts.loss(t, "token_mean") for t in totals)), 6)   # (5 + 4) / 6
    1.5
    >>> round(float(np.mean([t.value("token_mean") for t in totals])), 6)   # (1 + 4) / 2: wrong
    2.5
    """

    tokens: float
    nonempty_sequences: float
    sequences: float
    steps: float

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _count(getattr(self, f.name), f.name))
        for name in _WHOLE_COUNTS:
            value = getattr(self, name)
            if value != math.floor(value):
                raise ValueError(f"GlobalCounts: {name} counts sequences or steps, a whole number; got {value!r}")
        problem = None
        if self.nonempty_sequences > self.sequences:
            problem = "more non-empty sequences than sequences"
        elif (self.tokens > 0) != (self.nonempty_sequences > 0):
            problem = "tokens without non-empty sequences" if self.tokens > 0 else "non-empty sequences without tokens"
        elif self.nonempty_sequences > self.steps:
            problem = "more non-empty sequences than steps"
        if problem:
            raise ValueError(
                f"GlobalCounts: impossible counts, {problem}: {self!r} (a count shared between ranks was "
                "corrupted, or the counts were not summed together)"
            )

    @classmethod
    def from_totals(cls, totals: MaskedTotals) -> GlobalCounts:
        """The counts of the sequences in ``totals`` (exact for every loss option)."""
        if not isinstance(totals, MaskedTotals):
            raise TypeError(f"totals must be a maskloss.MaskedTotals, got {type(totals).__name__}")
        totals._check_denominators("token_mean")  # a count of weighted tokens needs weights >= 0
        return cls(**{name: totals.count(r) for r, name in COUNT_OF.items() if name is not None})

    @classmethod
    def from_mask(cls, mask: npt.ArrayLike, sample_weight: npt.ArrayLike | None = None) -> GlobalCounts:
        r"""The counts of a ``(B, ...)`` mask (True = valid), before any prediction exists.

        With ``sample_weight`` (shape of the mask, ``(B,)`` or a scalar) the denominators
        are :math:`D_b = \sum_t m\,w`, as in the losses. For integer labels with
        ``ignore_index`` pass ``mask & (labels != ignore_index)``; with class weights
        (which enter torch's denominator) use :meth:`from_totals` instead.
        """
        arr = as_numeric(mask, "mask", min_ndim=1)
        valid = check_mask(arr, arr.shape)
        weight = check_sample_weight(sample_weight, valid)
        return cls.from_totals(MaskedTotals.from_terms(np.zeros(valid.shape), np.where(valid, weight, 0.0)))

    @classmethod
    def total(cls, parts: Iterable[GlobalCounts]) -> GlobalCounts:
        """The sum of the counts of ``parts`` (micro-batches, ranks); zeros if none."""
        out = cls(0.0, 0.0, 0.0, 0.0)
        for part in parts:
            out = out + part
        return out

    def __add__(self, other: object) -> GlobalCounts:
        if not isinstance(other, GlobalCounts):
            return NotImplemented
        return GlobalCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def to_array(self) -> FloatArray:
        """The counts as a float64 vector of 4, in field order: what to all-reduce (sum)."""
        return np.array(astuple(self), dtype=np.float64)

    @classmethod
    def from_array(cls, counts: npt.ArrayLike) -> GlobalCounts:
        """Counts from a vector made by :meth:`to_array` (e.g. after an all-reduce)."""
        arr = as_numeric(counts, "counts")
        if arr.shape != (4,):
            raise ValueError(
                "counts must be the 4-vector of GlobalCounts.to_array() (tokens, nonempty_sequences, "
                f"sequences, steps), got shape {arr.shape}"
            )
        return cls(*(float(x) for x in arr))

    def denominator(self, reduction: ScalarReduction) -> float:
        """The global count ``reduction`` divides by (1 for ``"sum"``); must be > 0."""
        check_reduction(reduction, allowed=SCALAR_REDUCTIONS)
        name = COUNT_OF[reduction]
        if name is None:
            return 1.0
        value = float(getattr(self, name))
        if value == 0:
            raise ValueError(
                f"counts.{name} is 0: the optimizer step has nothing to average under "
                f"reduction={reduction!r} (its full-batch loss is 0/0); skip the step or use 'sum'"
            )
        return value

    def scale(self, reduction: ScalarReduction, denominator: npt.ArrayLike) -> FloatArray:
        r"""The coefficients :math:`\lambda_b` of a micro-batch's loss :math:`\sum_b \lambda_b N_b`, shape (B,).

        Parameters
        ----------
        reduction : str
            One of :data:`maskloss.SCALAR_REDUCTIONS`.
        denominator : array_like, shape (B,)
            The micro-batch's per-sequence denominators :math:`D_b`
            (:attr:`MaskedTotals.denominator`, or the valid tokens per sequence).

        Returns
        -------
        ndarray, shape (B,)
            :math:`1/D` for ``"token_mean"`` (:math:`1/B`, :math:`1/S`, 1 for the others);
            for ``"sequence_mean"`` :math:`1/(D_b K)` where :math:`D_b > 0`, else 0.
            Multiply a framework's per-sequence sums by them to get a micro-batch loss
            whose gradients sum, over the step, to the full-batch gradient.

        Examples
        --------
        >>> import maskloss
        >>> counts = maskloss.GlobalCounts(tokens=6, nonempty_sequences=3, sequences=4, steps=12)
        >>> counts.scale("sequence_mean", [2.0, 0.0]).tolist()     # 1 / (2 * 3), empty: 0
        [0.16666666666666666, 0.0]
        >>> counts.scale("token_mean", [2.0, 0.0]).tolist()        # 1 / 6 for every sequence
        [0.16666666666666666, 0.16666666666666666]
        """
        den = self._local_denominator(denominator)
        total = self.denominator(reduction)
        local = MaskedTotals(np.zeros_like(den), den, np.zeros_like(den))
        self._check_local(reduction, local)
        return local.sequence_scale(reduction, count=total)

    def loss(self, totals: MaskedTotals, reduction: ScalarReduction) -> np.float64:
        r"""A micro-batch's share of the full-batch loss: :math:`\sum_b \lambda_b N_b` of ``totals``.

        Summed over all micro-batches and ranks of the step, the shares give the
        full-batch value of ``reduction`` exactly (up to rounding).
        """
        if not isinstance(totals, MaskedTotals):
            raise TypeError(f"totals must be a maskloss.MaskedTotals, got {type(totals).__name__}")
        total = self.denominator(reduction)
        self._check_local(reduction, totals)
        return totals.value(reduction, count=total)

    @staticmethod
    def _local_denominator(denominator: npt.ArrayLike) -> FloatArray:
        den = np.asarray(as_numeric(denominator, "denominator"), dtype=np.float64)
        if den.ndim != 1:
            raise ValueError(f"denominator must hold one D_b per sequence, shape (B,), got shape {den.shape}")
        if not np.all(np.isfinite(den)) or np.any(den < 0):
            bad = den[~(np.isfinite(den) & (den >= 0))][0]
            raise ValueError(f"denominator must be finite and >= 0, got {float(bad)}")
        return den

    def _check_local(self, reduction: ScalarReduction, totals: MaskedTotals) -> None:
        """A global count below the micro-batch's own means the counts were not summed."""
        name = COUNT_OF[reduction]
        if name is None or (name == "steps" and not totals.steps.any()):
            return
        local, given = float(totals.count(reduction)), float(getattr(self, name))
        # The one rule of maskloss.reductions.count_below: whole numbers exactly, a weighted
        # (fractional) count within COUNT_RTOL of a float sum in another order.
        if count_below(given, local, weighted=not (local.is_integer() and given.is_integer())):
            raise ValueError(
                f"counts.{name}={getattr(self, name)} is smaller than this micro-batch's own {local}: "
                "counts must be summed over every micro-batch and rank of the optimizer step"
            )


def masked_totals(fn: Callable[..., Any]) -> Callable[..., MaskedTotals]:
    r"""Return a function with ``fn``'s signature that returns the loss's :class:`MaskedTotals`.

    The ``reduction`` argument is ignored (every scalar reduction can be read off the
    totals with :meth:`MaskedTotals.value`). Merge the totals of micro-batches with
    :meth:`MaskedTotals.concat`: the merged value is the full-batch value, exactly.

    Examples
    --------
    Two micro-batches with 3 and 1 valid tokens (labels padded with -100):

    >>> import numpy as np, maskloss
    >>> logits = np.log([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]], [[0.25, 0.75], [0.5, 0.5], [0.5, 0.5]]])
    >>> labels = np.array([[0, 0, 1], [1, -100, -100]])
    >>> totals = maskloss.masked_totals(maskloss.sparse_categorical_crossentropy)
    >>> parts = [totals(labels[i:i + 1], logits[i:i + 1], from_logits=True, ignore_index=-100) for i in (0, 1)]
    >>> mean_of_means = np.mean([p.value("token_mean") for p in parts])
    >>> full = maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True, ignore_index=-100)
    >>> merged = maskloss.MaskedTotals.concat(parts).value("token_mean")
    >>> bool(merged == full), bool(np.isclose(mean_of_means, full))
    (True, False)
    """
    return pipeline_transform(fn, "masked_totals", Pipeline.totals)


def micro_batch_value_and_grad(
    fn: Callable[..., Any], counts: GlobalCounts | None
) -> Callable[..., tuple[np.float64, FloatArray]]:
    r"""Like :func:`maskloss.value_and_grad`, for one micro-batch of an optimizer step.

    Returns a function with ``fn``'s signature giving ``(value, grad)`` of the
    micro-batch's share :math:`\sum_{b} \lambda_b N_b` of the full-batch loss (the rule of
    :mod:`maskloss.accumulation`): summed over every micro-batch and rank of the step,
    the values are the full-batch value and the gradients (each with respect to its
    own ``y_pred``) are the full-batch gradient.

    Parameters
    ----------
    fn : callable
        One of the five public losses.
    counts : GlobalCounts or None
        The step's global counts (``None`` only for ``reduction="sum"``).

    Examples
    --------
    Micro-batches of 5 and 1 valid tokens: the shares of the gradient are 1/6 per
    token, as in the full batch (the mean of means would give 1/5 and 1).

    >>> import numpy as np, maskloss
    >>> y_true, y_pred = np.zeros((2, 5, 1)), np.ones((2, 5, 1))
    >>> mask = maskloss.mask_from_lengths([5, 1], 5)
    >>> counts = maskloss.GlobalCounts.from_mask(mask)     # or a sum over micro-batches
    >>> step = maskloss.micro_batch_value_and_grad(maskloss.mae, counts)
    >>> value, grad = step(y_true[1:], y_pred[1:], mask[1:])
    >>> round(float(value), 6), [round(float(g), 6) for g in grad.ravel()]
    (0.166667, [0.166667, 0.0, 0.0, 0.0, 0.0])
    """
    if counts is not None and not isinstance(counts, GlobalCounts):
        raise TypeError(f"counts must be a maskloss.GlobalCounts or None, got {type(counts).__name__}")

    def run(pipeline: Pipeline) -> tuple[np.float64, FloatArray]:
        reduction = pipeline.reduction
        if reduction not in SCALAR_REDUCTIONS:
            raise ValueError(
                f"micro_batch_value_and_grad needs a scalar loss, got reduction={reduction!r}; "
                f"pick one of {', '.join(map(repr, SCALAR_REDUCTIONS))}"
            )
        if counts is None:
            if reduction != "sum":
                raise ValueError(
                    f"counts is None, but reduction={reduction!r} divides by a global count: pass the "
                    "step's maskloss.GlobalCounts (only reduction='sum' needs none)"
                )
            totals, grad = pipeline.totals_and_grad(lambda t: np.ones(t.denominator.shape))
            return np.float64(float(totals.numerator.sum())), grad
        totals, grad = pipeline.totals_and_grad(lambda t: counts.scale(reduction, t.denominator))
        return counts.loss(totals, reduction), grad

    return pipeline_transform(fn, "micro_batch_value_and_grad", run)
