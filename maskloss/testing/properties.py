r"""The properties of :func:`maskloss.testing.check_loss`: one checker runs the candidate, the
oracle and the comparison on a batch and its transformations, and reports the first failure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss.accumulation import masked_totals
from maskloss.masks import padding_side
from maskloss.reductions import MaskedTotals
from maskloss.strategies import PaddedBatch
from maskloss.testing.batches import (
    _describe_batch,
    _junk_label_variants,
    _junk_variants,
    _pad_more,
    _repad,
    _take,
)
from maskloss.testing.tolerances import _compare


class LossCheckError(AssertionError):
    """Raised by :func:`check_loss`; the attributes hold the failing case for inspection."""

    __module__ = "maskloss.testing"  # where users import it from (and how tracebacks name it)

    def __init__(
        self,
        message: str,
        *,
        prop: str,
        batch: PaddedBatch,
        actual: Any,
        expected: Any,
        examples: int,
    ) -> None:
        super().__init__(message)
        self.property = prop
        self.batch = batch
        self.actual = actual
        self.expected = expected
        #: How many generated examples ran before the first failure (before shrinking).
        self.examples = examples
        #: The other properties that failed too (each on the smallest batch seen), by label.
        self.others: dict[str, Finding] = {}


@dataclass(frozen=True)
class Finding:
    """A property that failed besides the reported one: its label, the two numbers and the smallest batch seen."""

    property: str
    gradient: bool
    actual: Any
    expected: Any
    batch: PaddedBatch


class _Failure(Exception):
    def __init__(self, prop: str, batch: PaddedBatch, actual: Any, expected: Any, detail: str) -> None:
        super().__init__(prop)
        self.prop, self.batch, self.actual, self.expected, self.detail = prop, batch, actual, expected, detail
        self.gradient = False

    @property
    def label(self) -> str:
        return self.prop + (" (gradient)" if self.gradient else "")


_PROPERTIES = {
    "agreement": "the candidate disagrees with the oracle",
    "padding content": "junk under the mask (NaN, inf, huge values) changed the result",
    "junk labels": (
        "out-of-range labels at padded steps (C, -1, 10**6) changed the result or crashed the candidate; "
        "if the loss needs a valid id at padding (pad = eos, say), state it with pad_label="
    ),
    "padding amount": "appending fully padded steps changed the result",
    "left vs right padding": "moving the padding to the other side changed the result",
    "batch order": "reversing the order of the sequences changed the result",
    "split and recombine": (
        "the values of two micro-batches, recombined by their counts, differ from the full batch"
    ),
    "single-token batch": "a batch with a single valid step gives the wrong result",
    "all-masked batch": "a batch with no valid step gives the wrong result",
}

#: Short names a user may pass in ``known=`` for a property (the property names, with ``_`` for spaces, also work).
KNOWN_ALIASES = {"nan_leak": "padding content"}


def known_labels(known: object) -> frozenset[str]:
    """``check_loss(known=)`` as property labels; a ValueError naming any unknown entry."""
    if known is None:
        return frozenset()
    names = [known] if isinstance(known, str) else known
    try:
        entries = list(names)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"known must be a property name or a collection of them, got {known!r:.80}") from None
    out = set()
    for entry in entries:
        if not isinstance(entry, str):
            raise TypeError(f"known= entries must be property names (str), got {entry!r:.80}")
        name, grad = entry, ""
        if name.endswith(" (gradient)"):
            name, grad = name[: -len(" (gradient)")], " (gradient)"
        name = KNOWN_ALIASES.get(name, name.replace("_", " "))
        if name not in _PROPERTIES:
            raise ValueError(
                f"known={entry!r} is not a property of check_loss: use one of "
                f"{', '.join(repr(p) for p in _PROPERTIES)} (optionally + ' (gradient)'), or {', '.join(KNOWN_ALIASES)}"
            )
        out.update([name + grad] if grad else [name, name + " (gradient)"])
    return frozenset(out)


#: Dtypes from the highest precision to the lowest (the tolerance rows a result may move to).
_PRECISION_ORDER = ("float64", "float32", "float16", "bfloat16")
_FLOAT64 = np.dtype(np.float64)
_MEMO_SIZE = 256


@dataclass
class _Checker:
    candidate: Callable[..., Any]
    grad: Callable[..., Any] | None
    oracle: Callable[..., Any]
    oracle_grad: Callable[..., Any] | None
    reference_lowp: Callable[..., Any] | None
    options: dict[str, Any]
    reduction: str
    dtype: str
    rtol: float | None
    atol: float | None
    factor: float
    all_masked: float | None
    label_fill: int | None  # the label at padded steps: ignore_index or pad_label (None: any label)
    splittable: bool  # the micro-batch weights are known (``like`` is a maskloss loss)
    scale: float = 1.0  # the candidate is scale * like
    returned_dtype: str | None = None  # the lowest precision the candidate has returned
    shift: int = 0  # causal shift: step t's prediction scores label t + s
    #: ``like`` computes the shift itself (its ``shift=`` option); else the checker slices the batch
    #: (labels[:, s:] against predictions[:, :-s]) before calling it.
    oracle_shifts: bool = False
    gradient: bool = False  # which of value/gradient is being checked
    #: A framework mirror's entry (maskloss.testing.likes): how candidate and oracle are called.
    spec: Any = None
    #: D(batch) with value * D additive over sequences (None: rows, concatenated); overrides the
    #: maskloss totals of ``oracle`` (a mirror, another smoothing or weight rule).
    denominator_of: Callable[[PaddedBatch], float | None] | None = None
    #: The oracle never reads padded content, so junk there must leave the clean value.
    pure: bool = True
    #: The oracle's results on the batches asked about, by (what, id(batch)), the latest _MEMO_SIZE
    #: (several examples' worth); each entry holds its batch, so that no id is reused while it is
    #: cached (batches are never modified in place).
    _memo: dict[tuple[str, int], tuple[PaddedBatch, Any]] = field(default_factory=dict, repr=False)
    _totals: Callable[..., MaskedTotals] | None = field(default=None, repr=False)  # masked_totals(oracle), built once
    #: Labels (``"prop"`` / ``"prop (gradient)"``) set aside by ``known=``: checked, never failing.
    known: frozenset[str] = frozenset()
    #: Failures of the current batch, raised (the first) by :meth:`flush` after every property ran.
    pending: list[_Failure] = field(default_factory=list, repr=False)
    #: Every label that failed so far, with the smallest failing batch seen.
    seen: dict[str, _Failure] = field(default_factory=dict, repr=False)
    #: Run every property of a batch before raising (until the first failure of a search: while
    #: hypothesis shrinks, the first failing property is raised at once, as fast as before).
    collecting: bool = True

    def _fail(self, failure: _Failure) -> None:
        """Note a failure; keep checking the other properties of the batch (they are reported too)."""
        failure.gradient = self.gradient
        old = self.seen.get(failure.label)
        if old is None or failure.batch.mask.size < old.batch.mask.size:
            self.seen[failure.label] = failure
        if failure.label not in self.known:
            if not self.collecting:
                raise failure
            self.pending.append(failure)

    def flush(self) -> None:
        """Raise the first failure of the properties just run (hypothesis then shrinks it)."""
        if self.pending:
            first, self.pending = self.pending[0], []
            self.collecting = False
            raise first

    def _cached(self, what: str, b: PaddedBatch, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per batch object: the oracle is asked once about each batch it sees."""
        key = (what, id(b))
        hit = self._memo.get(key)
        if hit is not None and hit[0] is b:
            return hit[1]
        value = compute()
        if len(self._memo) >= _MEMO_SIZE:  # forget the oldest: an example asks about ~20-40 batches
            del self._memo[next(iter(self._memo))]
        self._memo[key] = (b, value)
        return value

    # ---- running the three parties on one batch
    def _shifted(self, b: PaddedBatch) -> PaddedBatch:
        """The batch ``like`` sees: with ``shift=s``, step t's prediction scores label t + s."""
        s = self.shift
        if not s:
            return b
        w = b.sample_weight
        return b._replace(
            y_true=b.y_true[:, s:],
            y_pred=b.y_pred[:, : b.y_pred.shape[1] - s],
            mask=b.mask[:, s:],
            sample_weight=w if w is None or w.ndim == 1 else w[:, s:],
        )

    def _oracle_args(self, b: PaddedBatch) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return self._args(b if self.oracle_shifts else self._shifted(b))

    def _args(self, b: PaddedBatch) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs = {} if b.sample_weight is None else {"sample_weight": b.sample_weight}
        return (b.y_true, b.y_pred, b.mask), kwargs

    def _call(self, fn: Callable[..., Any], b: PaddedBatch, *, oracle: bool) -> Any:
        """``fn`` on ``b``: a mirror's call shape (both parties), or the maskloss one."""
        if self.spec is not None:
            return self.spec.call(fn, b, self.options)
        args, kwargs = self._args(b)
        return fn(*args, **kwargs, **self.options) if oracle else fn(*args, **kwargs)

    def run_candidate(self, prop: str, b: PaddedBatch) -> Any:
        fn = self.grad if self.gradient else self.candidate
        assert fn is not None
        copied = b._replace(
            y_true=np.array(b.y_true, copy=True),
            y_pred=np.array(b.y_pred, copy=True),
            mask=np.array(b.mask, copy=True),
            sample_weight=None if b.sample_weight is None else np.array(b.sample_weight, copy=True),
        )
        try:
            with np.errstate(all="ignore"):
                result = self._call(fn, copied, oracle=False)
        except Exception as exc:  # the candidate crashing is a failure to report, not to propagate
            raise _Failure(prop, b, f"raised {type(exc).__name__}: {exc}", self.expect(b), "") from exc
        self._note_dtype(result, fn)
        return result

    def _note_dtype(self, result: Any, fn: Callable[..., Any] | None = None) -> None:
        """Dtype awareness: a candidate returning float32 (or lower) is held to that row.

        An adapter converts a framework's result to float64 and records the dtype it had as the
        wrapper's ``result_dtype`` attribute (:func:`maskloss.testing.torch_adapter`,
        :func:`maskloss.testing.jax_adapter`): that dtype, when present, is the one that counts.
        """
        recorded = getattr(fn, "result_dtype", None)
        dt = getattr(result, "dtype", None)
        if isinstance(recorded, str) and recorded in _PRECISION_ORDER:
            if _PRECISION_ORDER.index(recorded) > _PRECISION_ORDER.index(self.row):
                self.returned_dtype = recorded
            return
        if dt is _FLOAT64:  # the common case, and the highest precision: nothing to note
            return
        name = getattr(dt, "name", None)
        if name in _PRECISION_ORDER and _PRECISION_ORDER.index(name) > _PRECISION_ORDER.index(self.row):
            self.returned_dtype = name

    @property
    def row(self) -> str:
        """The tolerance row: the generated dtype, or a lower precision the candidate returned."""
        return self.returned_dtype or self.dtype

    def expect(self, b: PaddedBatch) -> Any:
        """The oracle's value (or gradient) on ``b``, as the candidate's must be (computed once per batch)."""
        return self._cached("gradient" if self.gradient else "value", b, lambda: self._expect(b))

    def _expect(self, b: PaddedBatch) -> Any:
        args, kwargs = self._oracle_args(b)
        if self.gradient:
            assert self.oracle_grad is not None
            with np.errstate(all="ignore"):
                g = self.scale * np.asarray(self.oracle_grad(*args, **kwargs, **self.options))
            if self.shift and not self.oracle_shifts:  # d loss / d y_pred[:, -s:] is 0: they score no label
                g = np.concatenate([g, np.zeros((g.shape[0], self.shift, *g.shape[2:]))], axis=1)
            return g
        value = self.oracle_value(b)
        if self.all_masked is not None and np.ndim(value) == 0 and np.isnan(value) and self._nothing_valid(b):
            return np.float64(self.all_masked)
        return value if self.scale == 1.0 else self.scale * np.asarray(value, dtype=np.float64)

    def _nothing_valid(self, b: PaddedBatch) -> bool:
        """No step the oracle scores is valid: the only case ``all_masked`` replaces the oracle's NaN.

        With ``shift``, a NaN at a padded step that predicts a valid label is a real NaN, not an
        empty batch. A framework mirror decides validity itself (it may shift), so its NaN counts.
        """
        return self.spec is not None or not np.asarray(self._shifted(b).mask).any()

    def oracle_value(self, b: PaddedBatch) -> Any:
        """The oracle's value on ``b`` (computed once per batch)."""
        return self._cached("oracle", b, lambda: self._oracle_value(b))

    def _oracle_value(self, b: PaddedBatch) -> Any:
        with np.errstate(all="ignore"):
            if self.spec is not None:
                return self.spec.call(self.oracle, b, self.options)
            args, kwargs = self._oracle_args(b)
            return self.oracle(*args, **kwargs, **self.options)

    def check(self, prop: str, b: PaddedBatch, expected: Any = None, before: Any = None) -> Any:
        """The candidate's result on ``b``, or None when ``prop`` fails there (noted, see :meth:`flush`)."""
        try:
            return self._check(prop, b, expected, before)
        except _Failure as failure:
            self._fail(failure)
            return None

    def _check(self, prop: str, b: PaddedBatch, expected: Any = None, before: Any = None) -> Any:
        expected = self.expect(b) if expected is None else expected
        actual = self.run_candidate(prop, b)
        if self.gradient and np.isnan(self.oracle_value(b)):
            # No valid step: the loss is undefined; accept torch's 0 gradient or a plain sum/count's NaN.
            actual = np.where(np.isnan(np.asarray(actual, dtype=np.float64)), 0.0, actual)
        cmp = _compare(actual, expected, self.row, self.rtol, self.atol, self.reference(b), self.factor)
        if not cmp.ok:
            detail = (
                f"at index {cmp.index}: candidate {cmp.actual!r}, expected {cmp.expected!r}"
                if cmp.index
                else ""
            )
            if before is not None and not self.gradient and np.ndim(before) == 0:
                detail += f"\n  (before the change the candidate gave {float(before)!r})"
            detail += f"\n  allowed: {cmp.bound}"
            raise _Failure(prop, b, actual, expected, detail)
        return actual

    def reference(self, b: PaddedBatch) -> Any:
        if self.reference_lowp is None or self.gradient:
            return None
        return self._cached("reference", b, lambda: self._reference(b))

    def _reference(self, b: PaddedBatch) -> Any:
        assert self.reference_lowp is not None
        with np.errstate(all="ignore"):
            return self._call(self.reference_lowp, b, oracle=False)

    # ---- per-sequence totals, to recombine micro-batches
    def totals(self, b: PaddedBatch) -> MaskedTotals:
        """The :class:`MaskedTotals` of the oracle on ``b``, once per batch."""
        return self._cached("totals", b, lambda: self._totals_of(b))  # type: ignore[no-any-return]

    def denominators(self, b: PaddedBatch) -> npt.NDArray[np.float64]:
        """Per-sequence denominators of ``like`` on ``b`` (its :class:`MaskedTotals`), once per batch."""
        return self.totals(b).true_denominator

    def _totals_of(self, b: PaddedBatch) -> MaskedTotals:
        if self._totals is None:
            self._totals = masked_totals(self.oracle)
        args, kwargs = self._oracle_args(b)
        with np.errstate(all="ignore"):
            return self._totals(*args, **kwargs, **self.options)

    def part_weight(self, part: PaddedBatch, whole: PaddedBatch) -> float:
        """c such that value(whole) = sum over parts of c * value(part): the parts' counts (MaskedTotals.count)."""
        if self.denominator_of is not None:
            den_part, den_whole = self.denominator_of(part), self.denominator_of(whole)
            return float(den_part) / float(den_whole) if den_part is not None and den_whole else 0.0
        total = self.totals(whole).count(self.reduction)  # type: ignore[arg-type]
        return self.totals(part).count(self.reduction) / total if total else 0.0  # type: ignore[arg-type]

    # ---- the properties
    def properties(self, b: PaddedBatch) -> None:
        expected = self.expect(b)
        clean = self.check("agreement", b, expected)
        # With a shift, a padded step's prediction may score a valid label (left padding): ask again.
        same = expected if self.pure and not self.shift else None
        for junked in _junk_variants(b, self.label_fill, self.dtype):
            # A maskloss loss never reads padding, so its value cannot change; a custom ``like``
            # (a causal shift, say) may read steps the mask calls padding, so ask it again.
            self.check("padding content", junked, same, before=clean)
        if self.label_fill is None:  # no label contract at padding: any label, even out of range
            for junked in _junk_label_variants(b):
                self.check("junk labels", junked, same, before=clean)
        self.check("padding amount", _pad_more(b, self.label_fill), before=clean)
        for side in ("right", "left"):
            if padding_side(b.mask) in (side, "none"):
                continue  # already padded on that side: repadding would return the same batch
            self.check("left vs right padding", _repad(b, side, self.label_fill), before=clean)
        if b.mask.shape[0] > 1:
            self.check("batch order", _take(b, slice(None, None, -1)), before=clean)
            if self.splittable:
                try:
                    self.split(b)
                except _Failure as failure:
                    self._fail(failure)
        self.flush()

    def split(self, b: PaddedBatch) -> None:
        half = b.mask.shape[0] // 2
        parts = [_take(b, slice(None, half)), _take(b, slice(half, None))]
        rows = self.reduction == "none"
        if self.denominator_of is not None:
            whole = self.denominator_of(b)
            rows = whole is None
            if whole == 0:
                return
        elif not rows and self.totals(b).count(self.reduction) == 0:  # type: ignore[arg-type]
            return  # nothing to average (NaN): no part weighs anything
        pieces = []
        for part in parts:
            value = self.run_candidate("split and recombine", part)
            if rows:
                pieces.append(np.asarray(value))
                continue
            c = self.part_weight(part, b)
            if self.gradient:
                pieces.append(c * np.asarray(value) if c else np.zeros(part.y_pred.shape))
            else:
                pieces.append(np.asarray(c * value if c else 0.0))
        combined = np.concatenate(pieces) if rows or self.gradient else sum(pieces)
        expected = self.expect(b)
        cmp = _compare(combined, expected, self.row, self.rtol, self.atol, self.reference(b), self.factor)
        if not cmp.ok:
            detail = (
                f"split into {parts[0].mask.shape[0]} + {parts[1].mask.shape[0]} sequences; "
                f"recombined candidate {cmp.actual!r}, full-batch oracle {cmp.expected!r}"
                f"\n  allowed: {cmp.bound}"
            )
            raise _Failure("split and recombine", b, combined, expected, detail)



def _fmt_value(x: Any) -> str:
    if isinstance(x, str):
        return x
    arr = np.asarray(x)
    if arr.ndim == 0:
        return repr(float(arr))
    return np.array2string(arr, precision=6, separator=", ", threshold=60).replace("\n", "\n             ")



def _tiny_offset(actual: Any, expected: Any) -> float:
    """The largest relative difference when every one is tiny (below 1e-5, above 0), else 0."""
    if isinstance(actual, str):
        return 0.0
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape or not (np.isfinite(a).all() and np.isfinite(e).all()) or not e.size:
        return 0.0
    with np.errstate(all="ignore"):
        rel = np.abs(a - e) / np.maximum(np.abs(e), np.finfo(np.float64).tiny)
    worst = float(rel.max())
    return worst if 0.0 < worst < 1e-5 else 0.0


def _error(
    failure: _Failure, name: str, like_call: str, checker: _Checker, count: list[int]
) -> LossCheckError:
    what = "gradient" if failure.gradient else "value"
    prop = failure.prop
    lines = [
        f"check_loss: {name} is not {like_call}",
        f"property broken: {prop}{' (gradient)' if failure.gradient else ''}: {_PROPERTIES[prop]}",
        f"  candidate {what}: {_fmt_value(failure.actual)}",
        f"  expected {what}:  {_fmt_value(failure.expected)}",
    ]
    if failure.detail.strip():
        lines.append("  " + failure.detail.strip())
    offset = _tiny_offset(failure.actual, failure.expected)
    if offset:
        lines.append(
            f"  note: the relative difference is only {offset:.1e}: a tiny constant offset (an epsilon "
            "in a denominator, x / (n + 1e-9), say), not a convention difference (those are >= 1/n); "
            "pass rtol= if it is intended"
        )
    if checker.returned_dtype:
        lines.append(f"  (the candidate returned {checker.returned_dtype}: tolerances of that row)")
    lines += [
        f"smallest failing batch (first failure after {count[1] or count[0]} examples, then shrunk):",
        _describe_batch(failure.batch),
        "reproduce: candidate(batch.y_true, batch.y_pred, batch.mask) with this batch (error.batch)",
    ]
    others = {
        label: Finding(f.prop, f.gradient, f.actual, f.expected, f.batch)
        for label, f in checker.seen.items()
        if label != failure.label and label not in checker.known
    }
    if others:
        lines.append(
            f"{len(others)} more propert{'y' if len(others) == 1 else 'ies'} failed (not shrunk; the smallest batch "
            "seen is in error.others[label].batch; set a finding aside with known={...}):"
        )
        for label, found in others.items():
            b = found.batch
            lines.append(
                f"  - {label}: candidate {_fmt_value(found.actual)}, expected {_fmt_value(found.expected)} "
                f"(batch={b.mask.shape[0]}, steps={b.mask.shape[1]}, padding={b.padding!r})"
            )
    error = LossCheckError(
        "\n".join(lines),
        prop=prop,
        batch=failure.batch,
        actual=failure.actual,
        expected=failure.expected,
        examples=count[1] or count[0],
    )
    error.others = others
    return error
