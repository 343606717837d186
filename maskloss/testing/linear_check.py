r"""check_loss for fused LM-head losses: ``like=maskloss.linear_cross_entropy``.

A fused linear cross-entropy (Liger's, Cut Cross-Entropy's, torchtune's or litgpt's
chunked loss, torch's ``F.linear_cross_entropy``, a hand-written one) takes the hidden
states, the head's weight and bias and the labels, never the logits. ``check_loss(candidate,
like=maskloss.linear_cross_entropy, ...)`` comes here: generated cases hold hidden states
``(B, T, H)``, a weight ``(V, H)``, a bias ``(V,)`` when ``bias=True`` and labels
``(B, T)`` (odd sizes; vocabularies of 2 to 37 classes, which no power-of-two chunk size
divides; padded and ignored tokens), and the candidate is called as

``candidate(hidden, weight, labels, mask[, bias=bias][, <chunk_arg>=k])``

with ``labels`` holding ``ignore_index`` at every padded step when that option is given.
``**options`` of check_loss are :func:`maskloss.linear_cross_entropy`'s keywords
(``reduction``, ``ignore_index``, ``label_smoothing``, ``class_weight``, ``z_loss``,
``softcap``, ``temperature``), passed to the oracle only, plus four of this check's own:

``bias`` (bool)
    Generate a bias and pass it as ``bias=``.
``chunk_arg`` (str) and ``chunk_sizes`` (ints, default ``(1, 2, 5)``)
    The candidate's chunk-size keyword: **chunk invariance** calls it with each size
    (fewer tokens or classes per chunk than the case holds, so several chunks) and each
    value must still match the oracle.
``reference_lowp_grad`` (callable)
    The gradients of ``reference_lowp`` (same call shape as ``grad``), for the relative
    rule on the gradients.

Properties, in order: agreement, padding content (NaN, inf and huge values in the hidden
states of padded steps), padding amount, left vs right padding, batch order, split and
recombine (``"sum"`` and ``"token_mean"``: the halves recombined by their counts, or
their summed class weights), chunk invariance; then the single-token and all-masked
cases. With ``grad`` (e.g. :func:`maskloss.testing.torch_linear_grad`) the gradients
``(d_hidden, d_weight, d_bias)`` are checked too, on agreement, padding content, batch
order and chunk invariance, against
:func:`maskloss.linear.linear_cross_entropy_value_and_grad`; for ``reduction="none"``
``grad`` receives ``cotangent=`` (random weights per step, the ``grad_output`` a fused
kernel's backward gets) and must return the gradients of ``sum(cotangent * values)``.

Tolerances are those of :data:`maskloss.testing.TOLERANCES` for ``dtype`` (the
gradients' ``atol`` scaled by the largest expected entry), or, with ``reference_lowp``,
"no worse than ``factor`` times the naive implementation in the same dtype, plus atol".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import hypothesis
import numpy as np
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st

from maskloss.linear import linear_cross_entropy, linear_cross_entropy_value_and_grad
from maskloss.strategies import PADDINGS, round_to_bfloat16
from maskloss.testing._search import isolated_search
from maskloss.testing.tolerances import TOLERANCES, _dtype_name, assert_loss_close

__all__ = ["LinearCase", "check_linear_loss", "is_linear"]

_OWN = ("bias", "chunk_arg", "chunk_sizes", "reference_lowp_grad")
_MAX_HIDDEN = 9
_MAX_VOCAB = 37


class LinearCase(NamedTuple):
    """One generated case: what the candidate was called with."""

    hidden: np.ndarray[Any, Any]
    weight: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any]
    mask: np.ndarray[Any, Any]
    bias: np.ndarray[Any, Any] | None
    cotangent: np.ndarray[Any, Any]

    def sizes(self) -> str:
        b, t, h = self.hidden.shape
        return (f"B={b}, T={t}, H={h}, V={self.weight.shape[0]}, {int(self.mask.sum())} valid steps"
                f"{', bias' if self.bias is not None else ''}")


class _Failure(Exception):
    def __init__(self, prop: str, case: LinearCase, detail: str) -> None:
        super().__init__(prop)
        self.prop, self.case, self.detail = prop, case, detail


def is_linear(like: Any) -> bool:
    """Whether check_loss's ``like`` is the linear cross-entropy (this module's call shape)."""
    return like is linear_cross_entropy


def _store(x: np.ndarray[Any, Any], dtype: str) -> np.ndarray[Any, Any]:
    if dtype == "bfloat16":
        return round_to_bfloat16(x)
    return x.astype(dtype)


def _case(draw: Any, max_batch: int, max_steps: int, vocab: tuple[int, int], padding: Sequence[str],
          bias: bool, fill: int | None, dtype: str, allow_empty: bool) -> LinearCase:
    b = draw(st.integers(1, max_batch))
    t = draw(st.integers(1, max_steps))
    h = draw(st.integers(1, _MAX_HIDDEN))
    v = draw(st.integers(*vocab))
    side = draw(st.sampled_from(list(padding)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lengths = rng.integers(0 if allow_empty else 1, t + 1, b)
    lengths[rng.integers(b)] = max(1, lengths.max())  # at least one valid step
    mask = _mask(lengths, t, side, rng)
    labels = rng.integers(0, v, (b, t))
    if fill is not None:
        labels = np.where(mask, labels, fill)
    return LinearCase(
        hidden=_store(rng.normal(0.0, 1.5, (b, t, h)), dtype),
        weight=_store(rng.normal(0.0, 2.0 / np.sqrt(h), (v, h)), dtype),
        labels=labels,
        mask=mask,
        bias=_store(rng.normal(0.0, 1.0, v), dtype) if bias else None,
        cotangent=rng.normal(0.0, 1.0, (b, t)),
    )


def _mask(lengths: np.ndarray[Any, Any], t: int, side: str, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    steps = np.arange(t)[None, :]
    if side == "left":
        return steps >= (t - lengths)[:, None]
    if side == "right":
        return steps < lengths[:, None]
    keys = rng.random((lengths.shape[0], t))  # arbitrary: valid steps anywhere
    order = np.argsort(np.argsort(keys, axis=1), axis=1)
    return order < lengths[:, None]


class _LinearChecker:
    def __init__(self, candidate: Callable[..., Any], grad: Callable[..., Any] | None, options: dict[str, Any],
                 own: dict[str, Any], dtype: str, rtol: float | None, atol: float | None,
                 reference_lowp: Callable[..., Any] | None, factor: float, all_masked: float | None) -> None:
        self.candidate, self.grad, self.options = candidate, grad, options
        self.reduction = str(options.get("reduction", "token_mean"))
        self.fill = options.get("ignore_index")
        self.dtype, self.factor, self.all_masked = dtype, factor, all_masked
        self.rtol = TOLERANCES[dtype][0] if rtol is None else rtol
        self.atol = TOLERANCES[dtype][1] if atol is None else atol
        self.reference_lowp, self.reference_grad = reference_lowp, own.get("reference_lowp_grad")
        self.chunk_arg = own.get("chunk_arg")
        self.chunk_sizes = tuple(own.get("chunk_sizes", (1, 2, 5)))
        self.gradient = False

    # -- calls ---------------------------------------------------------------------------------
    def _kwargs(self, case: LinearCase, extra: dict[str, Any]) -> dict[str, Any]:
        kw = dict(extra)
        if case.bias is not None:
            kw["bias"] = case.bias
        return kw

    def _call(self, fn: Callable[..., Any], case: LinearCase, extra: dict[str, Any], prop: str) -> Any:
        kw = self._kwargs(case, extra)
        if self.gradient and self.reduction == "none":
            kw["cotangent"] = np.where(case.mask, case.cotangent, 0.0)
        try:
            return fn(case.hidden, case.weight, case.labels, case.mask, **kw)
        except Exception as exc:  # a crash of the candidate is a finding
            raise _Failure(prop, case, f"the candidate raised {type(exc).__name__}: {exc}") from None

    def expected(self, case: LinearCase) -> Any:
        args = (case.hidden, case.weight, case.labels, case.mask)
        if not self.gradient:
            return linear_cross_entropy(*args, bias=case.bias, **self.options)
        ct = np.where(case.mask, case.cotangent, 0.0) if self.reduction == "none" else None
        _, grads = linear_cross_entropy_value_and_grad(*args, bias=case.bias, cotangent=ct, **self.options)
        return grads

    # -- comparison ----------------------------------------------------------------------------
    def check(self, prop: str, case: LinearCase, extra: dict[str, Any] | None = None) -> None:
        extra = extra or {}
        actual = self._call(self.grad if self.gradient else self.candidate, case, extra, prop)  # type: ignore[arg-type]
        expected = self.expected(case)
        reference = None
        lowp = self.reference_grad if self.gradient else self.reference_lowp
        if lowp is not None:
            reference = self._call(lowp, case, extra, prop)
        if not self.gradient:
            self._compare(prop, case, "value", actual, expected, reference, self.atol)
            return
        if not isinstance(actual, (tuple, list)) or len(actual) != 3:
            raise _Failure(prop, case, "grad must return (d_hidden, d_weight, d_bias), d_bias None without a bias")
        for k, name in enumerate(("d_hidden", "d_weight", "d_bias")):
            if expected[k] is None:
                continue
            if actual[k] is None:
                raise _Failure(prop, case, f"grad returned no {name}")
            scale = max(1.0, float(np.max(np.abs(expected[k]), initial=0.0)))
            self._compare(prop, case, name, actual[k], expected[k], None if reference is None else reference[k],
                          self.atol * scale)

    def _compare(self, prop: str, case: LinearCase, what: str, actual: Any, expected: Any, reference: Any,
                 atol: float) -> None:
        a = np.asarray(actual, dtype=np.float64)
        e = np.asarray(expected, dtype=np.float64)
        if a.shape != e.shape and a.size == e.size and what in ("value", "d_hidden"):
            a = a.reshape(e.shape)  # a flattened (B*T,) "none" value or (B*T, H) gradient
        if what == "value" and e.ndim == 0 and np.isnan(e) and self.all_masked is not None:
            e = np.asarray(self.all_masked, dtype=np.float64)
        ref = None if reference is None else np.asarray(reference, dtype=np.float64).reshape(e.shape)
        try:
            assert_loss_close(a, e, dtype=self.dtype, rtol=self.rtol, atol=atol, reference_lowp=ref,
                              factor=self.factor, err_msg=what)
        except (AssertionError, ValueError, TypeError) as exc:
            raise _Failure(prop, case, f"{what}: {exc}") from None

    # -- properties ----------------------------------------------------------------------------
    def properties(self, case: LinearCase) -> None:
        self.check("agreement", case)
        for junk in (np.nan, np.inf, -float(np.finfo(np.float32 if self.dtype != "float64" else np.float64).max)):
            hidden = case.hidden.copy()
            hidden[~case.mask] = junk
            self.check("padding content", case._replace(hidden=hidden))
        self.check("batch order", _reverse(case))
        if self.chunk_arg is not None:
            for k in self.chunk_sizes:
                self.check("chunk invariance", case, {self.chunk_arg: int(k)})
        if self.gradient:
            return
        self.check("padding amount", _more_padding(case, self.fill))
        self.check("left vs right padding", _flip_side(case, self.fill))
        self.split(case)

    def split(self, case: LinearCase) -> None:
        b = case.mask.shape[0]
        if b < 2 or self.reduction not in ("sum", "token_mean"):
            return
        halves = [_rows(case, slice(0, b // 2)), _rows(case, slice(b // 2, b))]
        weights = [self._denominator(h) for h in halves]
        if self.reduction == "token_mean" and min(weights) <= 0:
            return
        values = [np.float64(self._call(self.candidate, h, {}, "split and recombine")) for h in halves]
        if self.reduction == "sum":
            combined = values[0] + values[1]
        else:
            combined = (weights[0] * values[0] + weights[1] * values[1]) / (weights[0] + weights[1])
        self._compare("split and recombine", case, "value", combined, self.expected(case), None,
                      self.atol)

    def _denominator(self, case: LinearCase) -> float:
        valid = case.mask if self.fill is None else case.mask & (case.labels != self.fill)
        cw = self.options.get("class_weight")
        if cw is None:
            return float(valid.sum())
        return float(np.sum(np.asarray(cw, dtype=np.float64)[np.where(valid, case.labels, 0)][valid]))


def _rows(case: LinearCase, rows: slice) -> LinearCase:
    return LinearCase(case.hidden[rows].copy(), case.weight, case.labels[rows].copy(), case.mask[rows].copy(),
                      case.bias, case.cotangent[rows].copy())  # copies: frameworks refuse negative strides


def _reverse(case: LinearCase) -> LinearCase:
    return _rows(case, slice(None, None, -1))


def _more_padding(case: LinearCase, fill: int | None) -> LinearCase:
    b, _, h = case.hidden.shape
    pad_h = np.full((b, 2, h), 7.0, dtype=case.hidden.dtype)
    pad_l = np.full((b, 2), 0 if fill is None else fill, dtype=case.labels.dtype)
    return LinearCase(np.concatenate([case.hidden, pad_h], 1), case.weight, np.concatenate([case.labels, pad_l], 1),
                      np.concatenate([case.mask, np.zeros((b, 2), bool)], 1), case.bias,
                      np.concatenate([case.cotangent, np.ones((b, 2))], 1))


def _flip_side(case: LinearCase, fill: int | None) -> LinearCase:
    """The valid steps of each row moved, in order, to the other end (left <-> right padding)."""
    b, t, _ = case.hidden.shape
    lengths = case.mask.sum(axis=1)
    was_left = bool(np.all(case.mask[:, -1] | (lengths == 0)))
    target = _mask(lengths, t, "right" if was_left else "left", np.random.default_rng(0))
    hidden = np.full_like(case.hidden, 3.0)
    labels = np.full_like(case.labels, 0 if fill is None else fill)
    cot = np.zeros_like(case.cotangent)
    src = np.argsort(~case.mask, axis=1, kind="stable")  # valid steps first, in order
    dst = np.argsort(~target, axis=1, kind="stable")
    rows = np.arange(b)[:, None]
    keep = np.arange(t)[None, :] < lengths[:, None]
    hidden[rows, dst] = np.where(keep[..., None], case.hidden[rows, src], hidden[rows, dst])
    labels[rows, dst] = np.where(keep, case.labels[rows, src], labels[rows, dst])
    cot[rows, dst] = np.where(keep, case.cotangent[rows, src], cot[rows, dst])
    return LinearCase(hidden, case.weight, labels, target, case.bias, cot)


def _message(failure: _Failure, name: str, like_call: str, examples: int) -> str:
    c = failure.case
    return (
        f"check_loss: {name} is not {like_call}\n"
        f"property broken: {failure.prop}\n"
        f"{failure.detail}\n"
        f"smallest failing case: {c.sizes()}\n"
        f"  mask={c.mask.astype(int).tolist()}\n  labels={c.labels.tolist()}\n"
        f"examples run before the first failure: {examples}"
    )


def check_linear_loss(
    candidate: Callable[..., Any],
    *,
    max_examples: int,
    grad: Callable[..., Any] | None,
    adapter: Callable[[Callable[..., Any]], Callable[..., Any]] | None,
    dtype: Any,
    rtol: float | None,
    atol: float | None,
    reference_lowp: Callable[..., Any] | None,
    factor: float,
    all_masked: float | None,
    padding: str | Sequence[str],
    max_batch: int,
    max_steps: int,
    min_features: int | None,
    max_features: int | None,
    allow_empty_rows: bool,
    derandomize: bool,
    seed: int | None,
    options: dict[str, Any],
) -> None:
    """check_loss's path for ``like=maskloss.linear_cross_entropy`` (see the module notes)."""
    from maskloss.testing.properties import LossCheckError

    opts = dict(options)
    own = {k: opts.pop(k) for k in _OWN if k in opts}
    if own.get("chunk_arg") is not None and not isinstance(own["chunk_arg"], str):
        raise TypeError(f"chunk_arg must be the name of the candidate's chunk-size keyword, got {own['chunk_arg']!r}")
    bad = [k for k in opts if k in ("bias", "mask", "sample_weight", "cotangent")]
    if bad:
        raise ValueError(f"check_loss generates {bad} itself for like=linear_cross_entropy")
    dt = _dtype_name(dtype)
    vocab = (2 if min_features is None else int(min_features), _MAX_VOCAB if max_features is None
             else int(max_features))
    if not 2 <= vocab[0] <= vocab[1]:
        raise ValueError(f"min_features/max_features bound the vocabulary: need 2 <= min <= max, got {vocab}")
    if opts.get("class_weight") is not None and vocab[0] != vocab[1]:
        raise ValueError("class_weight has one entry per class: fix the vocabulary with min_features=max_features=V")
    styles = (padding,) if isinstance(padding, str) else tuple(padding)
    if not styles or any(s not in PADDINGS for s in styles):
        raise ValueError(f"padding must be among {PADDINGS}, got {padding!r}")
    wrap = adapter if adapter is not None else (lambda f: f)
    checker = _LinearChecker(wrap(candidate), None if grad is None else wrap(grad), opts, own, dt, rtol, atol,
                             None if reference_lowp is None else wrap(reference_lowp), factor, all_masked)
    if checker.reference_grad is not None:
        checker.reference_grad = wrap(checker.reference_grad)
    linear_cross_entropy(np.zeros((1, 1, 1)), np.zeros((vocab[0], 1)), np.zeros((1, 1), int), **opts)  # options
    count = [0, 0]
    fill = checker.fill

    @st.composite
    def cases(draw: Any) -> LinearCase:
        return _case(draw, max_batch, max_steps, vocab, styles, bool(own.get("bias", False)), fill, dt,
                     allow_empty_rows)

    def one(case: LinearCase) -> None:
        count[0] += 1
        try:
            with np.errstate(all="ignore"):
                for gradient in (False, True) if grad is not None else (False,):
                    checker.gradient = gradient
                    checker.properties(case)
        except _Failure:
            count[1] = count[1] or count[0]
            raise

    test = settings(max_examples=max_examples, deadline=None, database=None,
                    derandomize=derandomize and seed is None, report_multiple_bugs=False,
                    verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck))(given(cases())(one))
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    name = getattr(candidate, "__name__", repr(candidate))
    options_text = ", ".join(f"{k}={v!r}" for k, v in {**opts, **own}.items() if k != "reference_lowp_grad")
    like_call = f"maskloss.linear_cross_entropy({options_text})"
    try:
        with isolated_search():  # the same batches whatever the caller imported
            test()
        with np.errstate(all="ignore"):
            _special(checker, grad is not None, vocab[0], dt, allow_empty_rows, bool(own.get("bias", False)))
    except _Failure as failure:
        raise LossCheckError(_message(failure, name, like_call, count[1] or count[0]), prop=failure.prop,
                             batch=failure.case, actual=None, expected=None,  # type: ignore[arg-type]
                             examples=count[1] or count[0]) from None


def _special(checker: _LinearChecker, with_grad: bool, vocab: int, dtype: str, allow_empty: bool,
             bias: bool) -> None:
    """A single valid token in a padded batch, then (unless empty rows are excluded) no valid token."""
    rng = np.random.default_rng(0)
    fill = checker.fill
    mask = np.array([[False, True, False]])
    labels = np.where(mask, 1 % vocab, 0 if fill is None else fill)
    case = LinearCase(_store(rng.normal(0, 1, (1, 3, 3)), dtype), _store(rng.normal(0, 1, (vocab, 3)), dtype),
                      labels, mask, _store(rng.normal(0, 1, vocab), dtype) if bias else None, np.ones((1, 3)))
    for gradient in (False, True) if with_grad else (False,):
        checker.gradient = gradient
        checker.check("single-token batch", case)
        if allow_empty:
            empty = case._replace(mask=np.zeros_like(mask), labels=np.full_like(labels, 0 if fill is None else fill))
            checker.check("all-masked batch", empty)
