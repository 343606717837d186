r"""Every averaging convention, defined once, from a masked (numerator, denominator) pair.

A loss produces, for every step ``(b, t)``, a numerator term :math:`n_{bt}` (the
weighted per-step loss, exactly 0 at masked steps) and a denominator term
:math:`d_{bt}` (the step's weight, 0 at masked steps). With a plain mask and no
weights :math:`n = m\,\ell` and :math:`d = m`; with weights
:math:`n = m\,w\,\ell` and :math:`d = m\,w\,cw_{y}` for integer labels (torch's rule;
:math:`d = m\,w` otherwise). Class weights, where a loss takes them, are inside
:math:`\ell`, so with label smoothing :math:`n \ne d\,\ell` in general. The symbols are
those of ``docs/appendix/notation.md``.

The terms are summed per sequence into :class:`MaskedTotals`
(:math:`N_b = \sum_t n_{bt}`, :math:`D_b = \sum_t d_{bt}`, :math:`S_b` = steps of
sequence ``b``, padding included), and every reduction is a function of those:

=======================  ======================================  ======================  ============================
reduction                value                                   count                   framework
=======================  ======================================  ======================  ============================
``"none"``               :math:`n_{bt}` (shape of the mask)      --                      torch/Keras ``"none"``
``"sum"``                :math:`\sum_b N_b`                      1                       ``"sum"`` everywhere
``"token_mean"``         :math:`\sum_b N_b / \sum_b D_b`         ``tokens``              torch; Keras unweighted
``"sequence_mean"``      :math:`\frac1K\sum_{b: D_b>0} N_b/D_b`  ``nonempty_sequences``  AllenNLP ``average="batch"``
``"batch_mean"``         :math:`\sum_b N_b / B`                  ``sequences``           per-sequence sums, averaged
``"element_mean"``       :math:`\sum_b N_b / \sum_b S_b`         ``steps``               tf.keras TF 2.0-2.10
``"constant"``           :math:`\sum_b N_b / c`                  ``constant=``           TRL ``dr_grpo``
``"global_token_mean"``  :math:`\sum_b N_b / D_{\text{global}}`  ``global_count=``       TRL ``dapo``, verl
=======================  ======================================  ======================  ============================

(:math:`K` is the number of sequences with :math:`D_b > 0`; the counts are named as the
fields of :class:`maskloss.GlobalCounts`, :data:`COUNT_OF`.) The last two rows are modes of
:func:`maskloss.aggregate` and :func:`maskloss.shard_scales`, not of the losses: their count
is not read off the batch but given by the caller (the configured divisor; the valid tokens
of the whole optimiser step). :meth:`MaskedTotals.count` is the one place that maps a
reduction to its count. A zero denominator gives NaN (0/0 is undefined, as in torch),
silently: ``"token_mean"`` and ``"sequence_mean"`` of nothing are NaN, while ``"sum"``,
``"batch_mean"`` and ``"element_mean"`` of nothing are 0. The full table, with the weighted
rules of each framework, is chapter 3 of the course (``docs/course/03-reductions.md``).

Because :class:`MaskedTotals` keeps per-sequence sums, totals of micro-batches
concatenate into the totals of the full batch, and every reduction of the merged
totals is *exactly* the full-batch loss (the fix for the "mean of micro-batch means"
bug of gradient accumulation).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_mask, check_reduction, check_sample_weight
from maskloss._deprecation import renamed_keyword
from maskloss._types import Aggregation, FloatArray, IntArray, LossValue, Reduction, ScalarReduction
from maskloss.segments import check_segment_ids

__all__ = [
    "COUNT_OF",
    "GIVEN_COUNTS",
    "REDUCTIONS",
    "SCALAR_MODES",
    "SCALAR_REDUCTIONS",
    "WEIGHT_NORMALIZATIONS",
    "Aggregation",
    "MaskedTotals",
    "Reduction",
    "ScalarReduction",
    "overflow_free",
    "power_of_two_scale",
    "reduce",
    "reduce_terms",
    "renormalized_value",
    "same_document",
    "segment_ids_for",
    "totals_of_terms",
    "with_exponent",
]

#: Sums along an axis (``ndarray.sum``'s ufunc without its Python wrapper: same bits, less overhead on small calls).
_add = np.add.reduce

#: Names accepted by ``reduction=``, in the order of the table above (read off :data:`maskloss._types.Reduction`).
REDUCTIONS: tuple[Reduction, ...] = typing.get_args(Reduction)
#: The reductions that return a scalar (all but ``"none"``).
SCALAR_REDUCTIONS: tuple[ScalarReduction, ...] = typing.get_args(ScalarReduction)
#: The count each scalar reduction divides :math:`\sum_b N_b` by (``None``: nothing, ``"sum"``), named
#: as the fields of :class:`maskloss.GlobalCounts`; :meth:`MaskedTotals.count` reads them off the totals.
COUNT_OF: dict[ScalarReduction, str | None] = {
    "sum": None,
    "token_mean": "tokens",
    "sequence_mean": "nonempty_sequences",
    "batch_mean": "sequences",
    "element_mean": "steps",
}
#: The modes whose count the caller gives (the keyword naming it), and the reduction whose rule
#: they apply: the extra rows of the table, for :func:`maskloss.aggregate` and :func:`maskloss.shard_scales`.
GIVEN_COUNTS: dict[str, tuple[str, ScalarReduction]] = {
    "constant": ("constant", "sum"),
    "global_token_mean": ("global_count", "token_mean"),
}
#: How far a given weighted count (``global_count=`` with ``sample_weight=``) may fall below the
#: step's own before it is refused: float sums of the same weights in another order (per rank,
#: per micro-batch) differ in the last bits. Unweighted counts are whole numbers: exact.
COUNT_RTOL = 1e-9


def count_below(given: float, own: float, *, weighted: bool) -> bool:
    r"""Whether a given count is below the step's own ``own`` (weighted: by more than :data:`COUNT_RTOL`).

    >>> count_below(2.9999999999999996, 3.0000000000000004, weighted=True), count_below(2.0, 3.0, weighted=False)
    (False, True)
    """
    return given < own * (1.0 - COUNT_RTOL) if weighted else given < own


#: Every mode of the table that gives a scalar: the scalar reductions, then the given-count modes.
SCALAR_MODES: tuple[ScalarReduction | Aggregation, ...] = (*SCALAR_REDUCTIONS, "constant", "global_token_mean")
assert tuple(COUNT_OF) == SCALAR_REDUCTIONS and tuple(GIVEN_COUNTS) == SCALAR_MODES[len(COUNT_OF) :]
assert set(typing.get_args(Aggregation)) <= set(SCALAR_MODES)


@dataclass(frozen=True)
class MaskedTotals:
    r"""Per-sequence sums of the numerator and denominator terms of a masked loss.

    Attributes
    ----------
    numerator : ndarray, shape (B,)
        :math:`N_b = \sum_t n_{bt}`.
    denominator : ndarray, shape (B,)
        :math:`D_b = \sum_t d_{bt}`.
    steps : ndarray, shape (B,)
        :math:`S_b`, the number of steps of sequence ``b``, padding included.
    exponent : ndarray of int, shape (B,), optional
        :math:`e_b`: the true sums are ``numerator * 2**exponent`` and
        ``denominator * 2**exponent`` (default 0: the fields are the sums). A loss sets it
        only for a sequence whose sums of weights brought near 1 (:func:`power_of_two_scale`)
        would under- or overflow when multiplied back, so ordinary totals keep ``e_b = 0``;
        read the true sums with :attr:`true_numerator` and :attr:`true_denominator`.

    Examples
    --------
    Two micro-batches merge into the full batch exactly (the gradient-accumulation fix):

    >>> import numpy as np
    >>> from maskloss.reductions import MaskedTotals
    >>> a = MaskedTotals.from_terms(np.array([[1.0, 2.0, 0.0]]), np.array([[1.0, 1.0, 0.0]]))
    >>> b = MaskedTotals.from_terms(np.array([[6.0, 0.0, 0.0]]), np.array([[1.0, 0.0, 0.0]]))
    >>> (a.value("token_mean") + b.value("token_mean")) / 2   # mean of means: wrong
    np.float64(3.75)
    >>> MaskedTotals.concat([a, b]).value("token_mean")       # (1 + 2 + 6) / 3
    np.float64(3.0)
    """

    numerator: FloatArray
    denominator: FloatArray
    steps: FloatArray
    exponent: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))

    def __post_init__(self) -> None:
        """Refuse totals no loss can produce: they would give a wrong value, not an error."""
        self._check_exponent()
        shape = None
        for name in ("numerator", "denominator", "steps"):
            raw = getattr(self, name)
            if not isinstance(raw, np.ndarray):
                raise TypeError(
                    f"MaskedTotals: {name} must be a numpy array of shape (B,), got {type(raw).__name__} "
                    f"{raw!r:.60} (pass np.asarray(...), or build totals with maskloss.masked_totals)"
                )
            if raw.dtype.kind not in "biuf":
                raise TypeError(f"MaskedTotals: {name} must hold real numbers, got dtype {raw.dtype}")
            if raw.ndim != 1 or (shape is not None and raw.shape != shape):
                raise ValueError(
                    f"MaskedTotals: numerator, denominator and steps must share one shape (B,); "
                    f"got {name} of shape {raw.shape}" + ("" if shape is None else f", numerator {shape}")
                )
            shape = raw.shape
            if raw.dtype != np.float64:
                object.__setattr__(self, name, raw.astype(np.float64))
        steps = self.steps
        if steps.size and not (np.all(np.isfinite(steps)) and steps.min() >= 0 and np.all(steps == np.floor(steps))):
            bad = int(np.flatnonzero(~(np.isfinite(steps) & (steps >= 0) & (steps == np.floor(steps))))[0])
            raise ValueError(f"MaskedTotals: steps must be whole numbers >= 0; steps[{bad}] is {float(steps[bad])!r}")
        den = self.denominator
        if den.size and np.isnan(den).any():
            bad = int(np.flatnonzero(np.isnan(den))[0])
            raise ValueError(f"MaskedTotals: denominator[{bad}] is nan (a sum of step weights)")

    def _check_exponent(self) -> None:
        """``exponent``: whole numbers of shape (B,), or the default empty array for all zeros."""
        raw = self.exponent
        if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "biu":
            raise TypeError(
                f"MaskedTotals: exponent must be a numpy array of integers of shape (B,), got "
                f"{type(raw).__name__} {raw!r:.60}"
            )
        batch = np.shape(self.numerator)
        if raw.size == 0 and raw.ndim == 1 and batch != (0,):
            object.__setattr__(self, "exponent", np.zeros(batch, dtype=np.intp))
        elif raw.shape != batch:
            raise ValueError(f"MaskedTotals: exponent must have the numerator's shape {batch}, got {raw.shape}")
        elif raw.dtype != np.intp:
            object.__setattr__(self, "exponent", raw.astype(np.intp))

    @property
    def true_numerator(self) -> FloatArray:
        r""":math:`N_b` in float64: ``numerator * 2**exponent`` (+-inf or 0 beyond the float64 range)."""
        return typing.cast(FloatArray, _unscaled(self.numerator, self.exponent))

    @property
    def true_denominator(self) -> FloatArray:
        r""":math:`D_b` in float64: ``denominator * 2**exponent`` (inf or 0 beyond the float64 range)."""
        return typing.cast(FloatArray, _unscaled(self.denominator, self.exponent))

    def _aligned(self) -> tuple[FloatArray, FloatArray, int]:
        r"""``(N', D', top)`` with :math:`N_b = N'_b 2^{top}`: every sequence on one exponent.

        ``top`` brings the largest finite :math:`|N_b|, |D_b|` into :math:`[1/2, 1)` (an exact
        power of two; a sequence of zeros or of exponent 0 does not set it), so only terms far
        below the largest lose bits, as in any float sum. The fields themselves (and
        ``top = 0``) when every exponent is 0, so no bit changes.
        """
        e = self.exponent
        if not e.size or not e.any():
            return self.numerator, self.denominator, 0
        largest = np.maximum(np.abs(self.numerator), np.abs(self.denominator))
        kept = np.isfinite(largest) & (largest > 0)
        if not kept.any():
            return self.numerator, self.denominator, 0
        top = int((np.frexp(largest[kept])[1] + e[kept]).max())
        with np.errstate(under="ignore", over="ignore"):
            return np.ldexp(self.numerator, e - top), np.ldexp(self.denominator, e - top), top

    def _token_total(self) -> tuple[float, int]:
        r"""``(d, top)`` with :math:`\sum_b D_b = d\,2^{top}`: the aligned denominators summed."""
        _, den, top = self._aligned()
        return float(_add(den)), top

    @classmethod
    def from_terms(cls, numerator_terms: FloatArray, denominator_terms: FloatArray) -> MaskedTotals:
        """Sum ``(B, ...)`` per-step terms (already 0 at masked steps) per sequence."""
        n = np.asarray(numerator_terms, dtype=np.float64)
        d = np.asarray(denominator_terms, dtype=np.float64)
        if n.ndim == 0:
            n, d = n.reshape(1), d.reshape(1)
        batch, per_sequence = n.shape[0], math.prod(n.shape[1:])
        n2 = n.reshape(batch, per_sequence)
        d2 = d.reshape(batch, per_sequence)
        steps = np.empty(batch)
        steps.fill(per_sequence)
        return cls(_add(n2, axis=1), _add(d2, axis=1), steps)

    @classmethod
    def from_segments(
        cls, numerator_terms: FloatArray, denominator_terms: FloatArray, segment_ids: npt.ArrayLike
    ) -> MaskedTotals:
        r"""Per-document totals of packed ``(R, L)`` terms: a packed batch's documents are its sequences.

        :math:`N_d = \sum_{s_{rt} = d} n_{rt}` (likewise :math:`D_d`), and :math:`S_d` is the
        length of document :math:`d` (a packed document has no padding of its own, so
        ``element_mean`` counts the documents' steps). Every reduction is then the one rule of
        :meth:`value`; the gradient of a packed step's numerator term is
        ``sequence_scale(reduction)[segment_ids]`` (0 at padding, ``segment_ids == -1``).

        >>> import numpy as np
        >>> from maskloss.reductions import MaskedTotals
        >>> t = MaskedTotals.from_segments(np.array([[1.0, 3.0, 8.0, 0.0]]), np.array([[1.0, 1.0, 1.0, 0.0]]),
        ...                                [[0, 0, 1, -1]])
        >>> t.value("token_mean"), t.value("sequence_mean")   # (1 + 3 + 8) / 3 and (2 + 8) / 2
        (np.float64(4.0), np.float64(5.0))
        """
        seg = check_segment_ids(segment_ids)
        n = np.asarray(numerator_terms, dtype=np.float64)
        d = np.asarray(denominator_terms, dtype=np.float64)
        if n.shape[: seg.ndim] != seg.shape or d.shape != n.shape:
            raise ValueError(
                f"segment_ids {seg.shape} must be the leading shape of the terms; "
                f"got numerator {n.shape}, denominator {d.shape}"
            )
        return cls._per_document(n, d, seg)

    @classmethod
    def _per_document(
        cls, n: FloatArray, d: FloatArray, seg: npt.NDArray[np.int64], documents: int | None = None
    ) -> MaskedTotals:
        """The per-document sums of :meth:`from_segments` on checked inputs; at least ``documents`` documents."""
        per_step = math.prod(n.shape[seg.ndim :])
        kept = seg.ravel() >= 0
        ids = seg.ravel()[kept]
        if documents is None:
            documents = int(ids.max()) + 1 if ids.size else 0
        n_steps = n.reshape(-1, per_step)[kept].sum(axis=1)
        d_steps = d.reshape(-1, per_step)[kept].sum(axis=1)
        steps = np.bincount(ids, minlength=documents).astype(np.float64) * per_step
        return cls(
            np.bincount(ids, weights=n_steps, minlength=documents).astype(np.float64),
            np.bincount(ids, weights=d_steps, minlength=documents).astype(np.float64),
            steps,
        )

    @classmethod
    def concat(cls, parts: Iterable[MaskedTotals]) -> MaskedTotals:
        """Totals of the batch made of the sequences of all ``parts``.

        ``parts`` is a list (or any iterable) of :class:`MaskedTotals`; an empty one gives
        the totals of an empty batch.
        """
        if isinstance(parts, MaskedTotals):
            raise TypeError(
                "parts must be a list of MaskedTotals, got a single MaskedTotals; "
                "pass MaskedTotals.concat([totals])"
            )
        given: object = parts  # callers are untyped: anything may arrive here
        if isinstance(given, (str, bytes)) or not hasattr(given, "__iter__"):
            raise TypeError(f"parts must be a list of MaskedTotals, got {type(parts).__name__} {parts!r:.80}")
        items = list(parts)
        for i, part in enumerate(items):
            if not isinstance(part, MaskedTotals):
                raise TypeError(
                    f"parts[{i}] must be a MaskedTotals (from maskloss.masked_totals), "
                    f"got {type(part).__name__} {part!r:.80}"
                )
        if not items:
            empty = np.zeros(0)
            return cls(empty, empty, empty)
        return cls(
            np.concatenate([p.numerator for p in items]),
            np.concatenate([p.denominator for p in items]),
            np.concatenate([p.steps for p in items]),
            np.concatenate([p.exponent for p in items]),
        )

    def count(self, reduction: ScalarReduction) -> float:
        r"""The count ``reduction`` divides by, read off these totals (1 for ``"sum"``).

        The one home of the reduction -> denominator rule (:data:`COUNT_OF`):
        :math:`\sum_b D_b` for ``"token_mean"``, :math:`K` (sequences with :math:`D_b > 0`)
        for ``"sequence_mean"``, :math:`B` for ``"batch_mean"``, :math:`\sum_b S_b` for
        ``"element_mean"``. ``value * count`` is additive over sequences (for
        ``"sequence_mean"`` the numerator is :math:`\sum_b N_b/D_b`), so a part of a batch
        weighs ``part.count(r) / whole.count(r)`` in the whole. The modes of
        :data:`GIVEN_COUNTS` have no count of their own: it is given to :meth:`value`.

        >>> import numpy as np
        >>> from maskloss.reductions import MaskedTotals
        >>> t = MaskedTotals.from_terms(np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]),
        ...                             np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
        >>> [t.count(r) for r in ("sum", "token_mean", "sequence_mean", "batch_mean", "element_mean")]
        [1.0, 2.0, 1.0, 2.0, 6.0]
        """
        check_reduction(reduction, allowed=SCALAR_REDUCTIONS)
        name = COUNT_OF[reduction]
        if name is None:
            return 1.0
        if name == "tokens":
            total, top = self._token_total()
            with np.errstate(over="ignore"):  # a count beyond float64 is inf
                return float(np.ldexp(total, top))
        if name == "nonempty_sequences":
            return float(np.count_nonzero(self.denominator > 0))
        if name == "sequences":
            return float(self.numerator.shape[0])
        return float(_add(self.steps))

    def _rule(self, reduction: str, count: float | None) -> tuple[ScalarReduction, float]:
        """The scalar reduction whose rule ``reduction`` applies, and its count (given, or :meth:`count`)."""
        check_reduction(reduction, allowed=SCALAR_MODES)
        given = GIVEN_COUNTS.get(reduction)
        if given is not None:
            keyword, rule = given
            if count is None:
                raise TypeError(f"reduction={reduction!r} divides by a count you give: pass count= ({keyword}=)")
            return rule, float(count)
        scalar = typing.cast(ScalarReduction, reduction)
        return scalar, self.count(scalar) if count is None else float(count)

    def value(self, reduction: ScalarReduction | Aggregation, *, count: float | None = None) -> np.float64:
        r"""The scalar loss under ``reduction`` (any of :data:`SCALAR_MODES`).

        ``count`` replaces the count the reduction divides by (:meth:`count`): a global one
        (:class:`maskloss.GlobalCounts`), or the given count of a mode of :data:`GIVEN_COUNTS`.
        """
        with np.errstate(over="ignore"):  # a sum beyond float64 is redone scaled below, not warned about
            rule, den = self._rule(reduction, count)
        numerator, denominator, top = self._aligned()
        if reduction == "sum" and count is None:
            if self.exponent.any():  # the true sum as (mantissa, exponent), then to float64 (top != 0 only then)
                total, exp = _scaled_total(numerator)
                return _scaled_ratio((total, exp + top), (1.0, 0))
            with np.errstate(over="ignore"):  # a sum of finite terms beyond float64 is +-inf: the true value
                return np.float64(float(_add(self.numerator)))
        if rule in SCALE_FREE_REDUCTIONS:
            self._check_denominators(reduction)
        den_total, den_exp = (den, 0)
        if rule == "token_mean" and count is None:
            den_total, den_exp = _scaled_total(denominator)
            den_exp += top
        if rule == "sequence_mean":
            if den == 0:
                return np.float64(np.nan)
            nonempty = self.denominator > 0
            with np.errstate(over="ignore"):  # a ratio beyond float64 is inf, as the true value is
                # N_b / D_b: the sequence's exponent cancels
                per_sequence = self.numerator[nonempty] / self.denominator[nonempty]
            return _scaled_ratio(_scaled_total(per_sequence), (den, 0))
        num_total, num_exp = _scaled_total(numerator)
        return _scaled_ratio((num_total, num_exp + top), (den_total, den_exp))

    def sequence_scale(self, reduction: ScalarReduction | Aggregation, *, count: float | None = None) -> FloatArray:
        r"""The derivative of the scalar loss with respect to each :math:`N_b`, shape (B,).

        Every scalar reduction is linear in the numerator terms, with a per-sequence
        scale :math:`\lambda_b` that depends only on the denominators, so the gradient of
        the loss with respect to a step's numerator term is :math:`\lambda_b`. Where the loss is NaN
        (zero denominator) the coefficients are 0, the gradient torch reports there.
        ``count`` as in :meth:`value`.
        """
        rule, den = self._rule(reduction, count)
        batch = self.numerator.shape[0]
        if reduction == "sum" and count is None:
            return np.ones(batch)
        if rule == "sequence_mean":
            nonempty = self.denominator > 0
            safe = np.where(nonempty, self.denominator, 1.0)
            return np.where(nonempty, _unscaled(1.0 / (safe * (den if den != 0 else 1.0)), -self.exponent), 0.0)
        if rule == "token_mean" and count is None and self.exponent.any():
            total, top = self._token_total()
            return np.full(batch, _unscaled(np.float64(1.0 / total), -top) if total != 0 else 0.0)
        return np.full(batch, 1.0 / den if den != 0 else 0.0)

    def step_scale(
        self,
        reduction: ScalarReduction | Aggregation,
        weight: FloatArray,
        *,
        count: float | None = None,
        segment_ids: npt.ArrayLike | None = None,
    ) -> FloatArray:
        r"""The gradient factor :math:`\lambda_b\,w_{bt}` of every step, shape ``weight.shape``.

        ``weight`` is (B, T) (or (B, ...)): the sample weights the numerators were built
        with. The factor is computed as :math:`w_{bt} / D` rather than
        :math:`w_{bt} \cdot (1/D)`: when a class weight makes :math:`D_b` subnormal,
        :math:`1/D_b` overflows to inf although :math:`w_{bt}/D_b \le 1/cw_{y_{bt}}` is
        finite. Zero where :meth:`sequence_scale` is 0. ``count`` as in :meth:`value`.
        With ``segment_ids`` (totals of :meth:`from_segments`, ``weight`` of the packed
        steps' shape) the sequence of step ``(r, t)`` is its document ``segment_ids[r, t]``
        (factor 0 at padding, -1).
        """
        rule, den = self._rule(reduction, count)
        w = np.asarray(weight, dtype=np.float64)
        if reduction == "sum" and count is None:
            return w.copy()
        if rule == "sequence_mean" and segment_ids is not None:
            seg = np.asarray(segment_ids)
            doc_den = np.where(seg >= 0, self.denominator[np.maximum(seg, 0)] if self.denominator.size else 0.0, 0.0)
            doc_exp = np.where(seg >= 0, self.exponent[np.maximum(seg, 0)] if self.exponent.size else 0, 0)
            doc_den = doc_den.reshape(seg.shape + (1,) * (w.ndim - seg.ndim))
            doc_exp = doc_exp.reshape(doc_den.shape)
            nonempty = doc_den > 0
            safe = np.where(nonempty, doc_den, 1.0)
            return np.where(nonempty, _unscaled(w / safe, -doc_exp) / (den if den != 0 else 1.0), 0.0)
        if rule == "sequence_mean":
            per_sequence = w.reshape(w.shape[0], int(np.prod(w.shape[1:])))
            nonempty = self.denominator > 0
            safe = np.where(nonempty, self.denominator, 1.0)
            ratio = _unscaled(per_sequence / safe[:, None], -self.exponent[:, None])
            factors = np.where(nonempty[:, None], ratio / (den if den != 0 else 1.0), 0.0)
            return factors.reshape(w.shape)
        if rule == "token_mean" and count is None and self.exponent.any():
            total, top = self._token_total()
            return _unscaled(w / total, -top) if total != 0 else np.zeros_like(w)
        return w / den if den != 0 else np.zeros_like(w)

    def _check_denominators(self, reduction: str) -> None:
        """A mean over weighted steps needs weights >= 0 (signed weights only make a ``"sum"``)."""
        negative = self.denominator < 0
        if negative.any():
            bad = int(np.flatnonzero(negative)[0])
            raise ValueError(
                f"MaskedTotals: denominator[{bad}] is {float(self.denominator[bad])!r}, but {reduction!r} divides "
                "by the sum of step weights, which must be >= 0 (signed weights, such as advantages, make a 'sum')"
            )


#: Reductions whose value does not change when every weight is multiplied by one factor.
SCALE_FREE_REDUCTIONS: tuple[str, ...] = ("token_mean", "sequence_mean")


def power_of_two_scale(weight: FloatArray) -> tuple[FloatArray, int]:
    r"""``(weight · 2^{-e}, e)`` with the largest weight brought into :math:`[1/2, 1]`, exactly.

    A largest weight that is a power of two becomes 1, so unit weights (an unweighted call)
    are not scaled at all: no halving and doubling back, which would round a subnormal loss
    (``mse`` of errors of ``2.2e-162`` summed is ``5e-324``, not 0).

    Multiplying by a power of two is exact, so a uniform weight of ``1e308``, the
    float64 maximum or ``5e-324`` cancels exactly in ``token_mean`` and
    ``sequence_mean`` (no ``inf/inf``, no subnormal rounding); the other reductions
    multiply their value back by :math:`2^e` (:func:`unscale`).

    The largest weight is the largest in magnitude: signed weights (advantages in
    :func:`maskloss.policy_gradient_objective`) scale by their largest magnitude, so a tiny
    positive weight next to a huge negative one does not overflow.
    """
    w = np.asarray(weight, dtype=np.float64)
    top = float(np.maximum.reduce(np.abs(w), axis=None)) if w.size else 0.0
    if top <= 0.0 or not math.isfinite(top):
        return w, 0
    mantissa, exponent = math.frexp(top)
    if mantissa == 0.5:  # top = 2^(e-1): bring it to 1 (unit weights stay as they are)
        exponent -= 1
    return (w if exponent == 0 else np.ldexp(w, -exponent)), exponent


def unscale(value: Any, reduction: str, exponent: int) -> Any:
    """Undo :func:`power_of_two_scale` on a value (or gradient factor) of ``reduction``."""
    if exponent == 0 or reduction in SCALE_FREE_REDUCTIONS:
        return value
    with np.errstate(over="ignore"):  # a sum or batch mean beyond float64 is inf, the true value
        return np.ldexp(value, exponent)


def overflow_free(value_of: Callable[[FloatArray], Any], terms: npt.ArrayLike) -> np.float64:
    r"""``value_of(terms)`` for a ``value_of`` linear in ``terms``, without overflow in its sums.

    Every reduction is linear in its numerator terms (and so is a sum over a given count).
    When the value is not finite although every term is, the sums overflowed (the mean of
    six errors of ``1e308`` is ``1e308``, their sum is not a float64): the value is computed
    again on :math:`x\,2^{-e}`, with the largest :math:`|x|` brought into :math:`[1/2, 1)`
    exactly, and multiplied back by :math:`2^e`. Finite values are never recomputed, so
    ordinary inputs give the same bits as a plain sum.

    >>> import numpy as np
    >>> from maskloss.reductions import MaskedTotals, overflow_free
    >>> terms = np.full((2, 3), 1e308)
    >>> float(overflow_free(lambda n: MaskedTotals.from_terms(n, np.ones((2, 3))).value("token_mean"), terms))
    1e+308
    """
    x = np.asarray(terms, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.float64(value_of(x))
    exponent = None if math.isfinite(value) else _rescaling_exponent(x)
    if exponent is None:
        return value
    with np.errstate(over="ignore", invalid="ignore"):
        return np.float64(np.ldexp(value_of(np.ldexp(x, -exponent)), exponent))


def _rescaling_exponent(x: FloatArray) -> int | None:
    """The exponent that brings the largest ``|x|`` into ``[1/2, 1)``; None when there is nothing
    to rescale (no terms, all zero, or a non-finite term: the value is then what it is)."""
    if not x.size:
        return None
    top = float(np.maximum.reduce(np.abs(x), axis=None))
    return math.frexp(top)[1] if 0.0 < top < math.inf else None


def totals_of_terms(
    numerator_terms: FloatArray,
    denominator_terms: FloatArray,
    segment_ids: npt.ArrayLike | None = None,
    *,
    documents: int | None = None,
) -> MaskedTotals:
    """The totals of per-step terms: per sequence (row), or per document with ``segment_ids``.

    The one switch between rows and packed documents that every reduction goes through
    (:meth:`MaskedTotals.from_terms` or :meth:`MaskedTotals.from_segments`). ``documents``
    (the shifted steps of a causal loss, :meth:`maskloss.pipeline.Pipeline.with_segments`):
    ``segment_ids`` were validated on the unshifted rows and may miss a document of length
    ``<= shift``, which still counts as a document with no step (as in the padded batch).
    """
    if segment_ids is None:
        return MaskedTotals.from_terms(numerator_terms, denominator_terms)
    if documents is None:
        return MaskedTotals.from_segments(numerator_terms, denominator_terms, segment_ids)
    return MaskedTotals._per_document(
        np.asarray(numerator_terms, dtype=np.float64),
        np.asarray(denominator_terms, dtype=np.float64),
        np.asarray(segment_ids, dtype=np.int64),
        documents,
    )


def _unscaled(x: Any, exponent: Any) -> Any:
    """``x * 2**exponent`` exactly where representable (``x`` itself where every exponent is 0)."""
    e = np.asarray(exponent)
    if not e.any():
        return x
    with np.errstate(over="ignore", under="ignore"):  # beyond float64: inf or 0, the nearest values
        return np.ldexp(x, e)


def with_exponent(scaled: MaskedTotals, exponent: int) -> MaskedTotals:
    r"""The totals of sums ``scaled`` taken on weights multiplied by :math:`2^{-e}` (:func:`power_of_two_scale`).

    A sequence whose sums multiply back exactly (neither under- nor overflows) keeps them
    multiplied back, with exponent 0: the same numbers as sums of the unscaled weights, so
    ordinary totals are unchanged. Only a sequence whose true sums leave the float64 range
    (weights of ``1e-170 * 1e-170``) keeps its scaled sums and ``e`` as its exponent.
    """
    if exponent == 0 or not scaled.numerator.size:
        return scaled
    with np.errstate(over="ignore", under="ignore"):
        num, den = np.ldexp(scaled.numerator, exponent), np.ldexp(scaled.denominator, exponent)
        exact = (np.ldexp(num, -exponent) == scaled.numerator) & (np.ldexp(den, -exponent) == scaled.denominator)
    exact |= ~(np.isfinite(scaled.numerator) & np.isfinite(scaled.denominator))  # nan/inf terms stay as they are
    return MaskedTotals(
        np.where(exact, num, scaled.numerator),
        np.where(exact, den, scaled.denominator),
        scaled.steps,
        np.where(exact, 0, exponent).astype(np.intp),
    )


def _scaled_total(x: FloatArray) -> tuple[float, int]:
    r"""``sum(x)`` as ``(s, e)`` with :math:`\sum x = s\,2^e`, also where a sum of finite terms overflows.

    A finite sum is the plain sum with ``e = 0`` (the same bits as ``np.sum``); otherwise, if
    every term is finite, it is taken again on :math:`x\,2^{-e}`, the largest :math:`|x|`
    brought into :math:`[1/2, 1)` exactly (a hand-built :class:`MaskedTotals` of huge terms).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(_add(x))
    exponent = None if math.isfinite(total) else _rescaling_exponent(x)
    if exponent is None:
        return total, 0
    return float(_add(np.ldexp(x, -exponent))), exponent


def _scaled_ratio(numerator: tuple[float, int], denominator: tuple[float, int]) -> np.float64:
    """``(n 2^a) / (d 2^b)`` of two :func:`_scaled_total` results; exactly ``n / d`` when ``a = b = 0``."""
    (n, a), (d, b) = numerator, denominator
    if d == 0:
        return np.float64(np.nan)
    with np.errstate(over="ignore", under="ignore"):
        return np.float64(np.ldexp(n / d, a - b))


def reduce_terms(
    numerator_terms: FloatArray,
    denominator_terms: FloatArray,
    reduction: Reduction,
    segment_ids: npt.ArrayLike | None = None,
    *,
    documents: int | None = None,
) -> np.float64 | FloatArray:
    """Apply ``reduction`` to per-step terms that are already 0 at masked steps.

    With ``segment_ids`` (packed rows, see :mod:`maskloss.segments`) the sequences are the
    documents: ``"sequence_mean"`` is the mean of the documents' own means, ``"batch_mean"``
    divides by the number of documents, and padding (``-1``) never counts.
    """
    check_reduction(reduction)
    if reduction == "none":
        n = np.asarray(numerator_terms, dtype=np.float64)
        if segment_ids is None:
            return n
        seg = np.asarray(segment_ids)
        return np.where((seg >= 0).reshape(seg.shape + (1,) * (n.ndim - seg.ndim)), n, 0.0)
    return overflow_free(
        lambda n: totals_of_terms(n, denominator_terms, segment_ids, documents=documents).value(reduction),
        numerator_terms,
    )


def reduce(
    values: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    reduction: Reduction = "token_mean",
    sample_weight: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    segment_ids: npt.ArrayLike | None = None,
) -> LossValue:
    r"""Reduce per-step losses to one number, ignoring masked steps.

    With :math:`n = m\,w\,\ell` and :math:`d = m\,w` (mask times weight, :math:`w = 1`
    by default):

    .. math:: \text{token\_mean} = \frac{\sum_{bt} n_{bt}}{\sum_{bt} d_{bt}}

    and the other reductions as in the table of :mod:`maskloss.reductions`. Values at
    masked steps are never read: NaN, inf or any garbage there has no effect.

    Parameters
    ----------
    values : array_like, shape (B, T)
        Per-step losses.
    mask : array_like of bool, shape (B, T), optional
        True at valid steps; all valid when omitted.
    reduction : str, default "token_mean"
        One of :data:`REDUCTIONS`.
    sample_weight : array_like, optional
        Per-step weight, shape (B, T), (B,) or a scalar; finite and >= 0 at valid steps
        (the keyword of the losses).
    weight : array_like, optional
        Deprecated spelling of ``sample_weight`` (a DeprecationWarning says so).
    segment_ids : array_like of int, shape (B, T), optional
        Packed rows (:mod:`maskloss.segments`): the document of each step, -1 at padding.
        The sequences of the reductions are then the documents (``"sequence_mean"`` is the
        mean of the documents' own means, ``"batch_mean"`` divides by the number of
        documents); a step at -1 never counts, whatever the mask says.

    Returns
    -------
    numpy.float64, or ndarray of shape (B, T) for ``"none"``

    Examples
    --------
    The seed's numbers: three sequences of 3, 5 and 1 valid steps.

    >>> import numpy as np, maskloss
    >>> losses = np.array([[1., 1., 1., np.nan, np.nan],
    ...                    [2., 2., 2., 2., 2.],
    ...                    [6., 0., 0., 0., 0.]])
    >>> mask = maskloss.mask_from_lengths([3, 5, 1], 5)
    >>> float(maskloss.reduce(losses, mask))                      # (3 + 10 + 6) / 9
    2.111111111111111
    >>> float(maskloss.reduce(losses, mask, reduction="sequence_mean"))  # (1 + 2 + 6) / 3
    3.0
    >>> float(maskloss.reduce(losses, mask, reduction="element_mean"))   # 19 / 15
    1.2666666666666666

    The same three documents packed into one row of 9 steps: the same numbers.

    >>> packed = np.array([[1., 1., 1., 2., 2., 2., 2., 2., 6.]])
    >>> seg = [[0, 0, 0, 1, 1, 1, 1, 1, 2]]
    >>> float(maskloss.reduce(packed, reduction="sequence_mean", segment_ids=seg))
    3.0
    """
    vals = as_numeric(values, "values", min_ndim=1)
    valid = check_mask(mask, vals.shape)
    seg = None if segment_ids is None else segment_ids_for(segment_ids, valid.shape)
    if seg is not None:
        valid = valid & (seg >= 0)
    check_reduction(reduction)
    given = renamed_keyword("reduce", "weight", "sample_weight", weight, sample_weight)
    w = check_sample_weight(given, valid)
    exponent = 0
    if reduction != "none" and given is not None:  # a weight of 1 needs no scaling
        w, exponent = power_of_two_scale(w)
    with np.errstate(invalid="ignore", over="ignore"):
        numerator = np.where(valid, w * np.where(valid, vals, 0).astype(np.float64), 0.0)
    value: LossValue = unscale(reduce_terms(numerator, w, reduction, seg), reduction, exponent)
    return value


def segment_ids_for(segment_ids: npt.ArrayLike, steps_shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """Validated ``segment_ids`` (:func:`maskloss.segments.check_segment_ids`) of the steps' shape."""
    seg = check_segment_ids(segment_ids)
    if seg.shape != steps_shape:
        raise ValueError(
            f"segment_ids must have the shape of the steps {steps_shape} (the mask's), got {seg.shape}"
        )
    return seg


def same_document(segment_ids: npt.NDArray[np.int64], shift: int = 0) -> npt.NDArray[np.bool_]:
    r"""Which predictions count in packed rows: :math:`s_t \ge 0` and :math:`s_{t+k} = s_t` (shift :math:`k`).

    ``segment_ids`` of shape ``(..., L)`` (checked, -1 at padding); the result has shape
    ``(..., L - k)``, indexed by the predicting position :math:`t`, which scores the label at
    :math:`t + k`: padding never counts, and the shift never crosses a document boundary
    (the one rule of :meth:`maskloss.pipeline.Pipeline.with_segments`, the linear
    cross-entropy and the registry's masking of dropped steps).

    >>> import numpy as np
    >>> same_document(np.array([[0, 0, 1, 1, -1]]), 1).astype(int)
    array([[1, 0, 1, 0]])
    """
    start = segment_ids[..., : segment_ids.shape[-1] - shift]
    counts: npt.NDArray[np.bool_] = (start >= 0) & (segment_ids[..., shift:] == start)
    return counts


#: How a sample weight enters a mean (see :func:`renormalized_value`).
WEIGHT_NORMALIZATIONS: tuple[str, ...] = ("weighted", "numerator", "nonzero_fraction")


def renormalized_value(
    weighted: MaskedTotals,
    unweighted: MaskedTotals,
    reduction: ScalarReduction,
    normalization: str = "weighted",
    weight: npt.ArrayLike | None = None,
) -> np.float64:
    r"""A scalar reduction with the sample weight in the numerator and/or the denominator.

    ``weighted`` holds :math:`N_b = \sum_t m\,w\,\ell` and :math:`D^w_b = \sum_t m\,w`;
    ``unweighted`` the same loss without the sample weight (:math:`D_b = \sum_t m`):

    ======================  ==========================================================  =================
    ``normalization``       ``token_mean``                                              framework
    ======================  ==========================================================  =================
    ``"weighted"``          :math:`\sum N_b / \sum D^w_b`                               torch, maskloss
    ``"numerator"``         :math:`\sum N_b / \sum D_b`                                 Keras 3, tf.keras
    ``"nonzero_fraction"``  :math:`\frac{K}{\operatorname{nnz}(w)}\sum N_b / \sum D_b`  Keras 2.0-2.2
    ======================  ==========================================================  =================

    (:math:`K` = entries of ``weight``, ``B`` per sequence or ``B*T`` per step, padded
    entries included, as Keras 2 counts them; the other reductions take the same
    denominators, see :class:`MaskedTotals`.) Every value is still an additive numerator
    over a denominator, so micro-batches recombine exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.reductions import MaskedTotals, renormalized_value
    >>> w = np.array([2.0, 0.0])                    # per-sequence weights, one step each
    >>> weighted = MaskedTotals.from_terms(np.array([[2.0], [0.0]]), np.array([[2.0], [0.0]]))
    >>> unweighted = MaskedTotals.from_terms(np.array([[1.0], [3.0]]), np.array([[1.0], [1.0]]))
    >>> rules = ("weighted", "numerator", "nonzero_fraction")
    >>> [float(renormalized_value(weighted, unweighted, "token_mean", n, w)) for n in rules]
    [1.0, 1.0, 2.0]
    """
    check_reduction(reduction, allowed=SCALAR_REDUCTIONS)
    if normalization not in WEIGHT_NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {WEIGHT_NORMALIZATIONS}, got {normalization!r}")
    if normalization == "weighted":
        return weighted.value(reduction)
    value = MaskedTotals(weighted.numerator, unweighted.denominator, weighted.steps).value(reduction)
    if normalization == "numerator" or weight is None:
        return value
    w = np.asarray(weight, dtype=np.float64)
    nonzero = int(np.count_nonzero(w))
    return np.float64(np.nan if nonzero == 0 else float(value) * (w.size / nonzero))
