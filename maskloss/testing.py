r"""Test *your* masked loss against maskloss: tolerances, adapters and :func:`check_loss`.

:func:`check_loss` runs a user's loss (a fused kernel, a port from Keras to PyTorch,
a training loop's masked mean) on generated padded batches and compares it with the
maskloss oracle under a set of properties; on failure it raises an ``AssertionError``
naming the property, the two numbers and the smallest failing batch.
:func:`assert_loss_close` is the comparison it uses, with tolerances chosen from the
precision the candidate computes in.

This module needs hypothesis (``pip install "maskloss[test]"``); ``import maskloss``
never imports it. See ``docs/testing.md`` for a walk-through.

Tolerances
----------
The expected value is maskloss's float64 result **on the same (already rounded)
inputs** the candidate saw, so input rounding is not an error; what is left is the
candidate's own arithmetic and the rounding of its output.

==========  =========  ========  =======  ===================================================
dtype       eps        rtol      atol     reasoning
==========  =========  ========  =======  ===================================================
float64     2.2e-16    1e-10     1e-12    log-sum-exp and a sum over <= 1e5 terms lose at most
                                          ~1e3 eps; 1e-10 leaves headroom yet is ~1e6 times
                                          smaller than any convention difference (>= 1/n)
float32     1.2e-7     1e-5      1e-6     ~84 ulps: log-sum-exp of logits up to ~10 loses
                                          ~10 eps absolute per step, float32 sums lose
                                          ~sqrt(n) eps; atol covers losses near 0
float16     9.8e-4     4e-3      1e-3     4 ulps: rounding the output alone costs 0.5 ulp,
                                          float32 accumulation (what torch does) ~1 ulp more
bfloat16    7.8e-3     3.2e-2    1e-2     4 ulps, same reasoning; bfloat16 values travel as
                                          float32 arrays (NumPy has no bfloat16)
==========  =========  ========  =======  ===================================================

A candidate that accumulates in its low precision may need more. Fused-kernel projects
then use a relative rule instead (FlashAttention's tests: "numerical error at most
twice the numerical error of a PyTorch implementation"): pass ``reference_lowp=`` the
framework's own low-precision result and the check becomes
``|actual - expected| <= factor * |reference_lowp - expected| + atol``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import hypothesis
    from hypothesis import HealthCheck, Verbosity, given, settings
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'maskloss.testing needs hypothesis, which is not installed: pip install "maskloss[test]"'
    ) from exc

from maskloss import losses
from maskloss.accumulation import masked_totals
from maskloss.masks import repad
from maskloss.strategies import BFLOAT16_MAX, PADDINGS, PaddedBatch, padded_batches, round_to_bfloat16

__all__ = [
    "TOLERANCES",
    "LossCheckError",
    "assert_loss_close",
    "check_loss",
    "jax_adapter",
    "jax_grad",
    "torch_adapter",
    "torch_grad",
]

#: ``(rtol, atol)`` by the dtype the candidate computes in; see the module docstring.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-10, 1e-12),
    "float32": (1e-5, 1e-6),
    "float16": (4e-3, 1e-3),
    "bfloat16": (3.2e-2, 1e-2),
}

_KIND_OF: dict[Callable[..., Any], str] = {
    losses.mae: "regression",
    losses.mse: "regression",
    losses.binary_crossentropy: "binary",
    losses.categorical_crossentropy: "dense",
    losses.sparse_categorical_crossentropy: "sparse",
}


def _dtype_name(dtype: Any) -> str:
    text = str(dtype)
    if isinstance(dtype, str) or text.startswith(("torch.", "jax.")) or text in TOLERANCES:
        name = text.split(".")[-1]
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = text
    if name not in TOLERANCES:
        raise ValueError(f"dtype must be one of {tuple(TOLERANCES)}, got {dtype!r}")
    return name


# -- comparison ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Comparison:
    ok: bool
    actual: float
    expected: float
    index: tuple[int, ...]
    bound: str


def _compare(
    actual: Any,
    expected: Any,
    dtype: str,
    rtol: float | None,
    atol: float | None,
    reference_lowp: Any = None,
    factor: float = 2.0,
) -> _Comparison:
    rt, at = TOLERANCES[dtype]
    rt = rt if rtol is None else rtol
    at = at if atol is None else atol
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return _Comparison(False, math.nan, math.nan, (), f"shape {a.shape} instead of {e.shape}")
    a, e = np.broadcast_arrays(a, e)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - e)
        if reference_lowp is None:
            allowed = at + rt * np.abs(e)
            bound = f"rtol={rt:g}, atol={at:g} for {dtype}"
        else:
            r = np.broadcast_to(np.asarray(reference_lowp, dtype=np.float64), e.shape)
            allowed = factor * np.abs(r - e) + at
            bound = f"<= {factor:g} x |reference_lowp - expected| + {at:g}"
        same_special = (np.isnan(a) & np.isnan(e)) | (np.isinf(e) & (a == e))
        good = same_special | (np.isfinite(e) & np.isfinite(a) & (err <= allowed))
    if good.all():
        return _Comparison(True, math.nan, math.nan, (), bound)
    bad = ~good
    score = np.where(bad, np.nan_to_num(err, nan=np.inf, posinf=np.inf), -1.0)
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(score)), a.shape)) if a.ndim else ()
    return _Comparison(False, float(a[idx]), float(e[idx]), idx, bound)


def assert_loss_close(
    actual: npt.ArrayLike,
    expected: npt.ArrayLike,
    *,
    dtype: Any = "float64",
    rtol: float | None = None,
    atol: float | None = None,
    reference_lowp: npt.ArrayLike | None = None,
    factor: float = 2.0,
    err_msg: str = "",
) -> None:
    r"""Assert that a candidate's loss (or gradient) matches the expected float64 value.

    Passes elementwise when :math:`|a - e| \le \text{atol} + \text{rtol}\,|e|`, with
    ``(rtol, atol)`` from :data:`TOLERANCES` for the dtype the candidate computes in
    (see the table in :mod:`maskloss.testing`); NaN matches NaN and an infinity
    matches the same infinity. With ``reference_lowp`` (the framework's own
    low-precision result on the same inputs) the rule is instead
    :math:`|a - e| \le \text{factor}\,|r - e| + \text{atol}`.

    Parameters
    ----------
    actual, expected : array_like
        The candidate's value and the float64 truth, same shape.
    dtype : {"float64", "float32", "float16", "bfloat16"} or a NumPy/torch dtype
        The precision the candidate computes in.
    rtol, atol : float, optional
        Override the table.
    reference_lowp : array_like, optional
        A reference implementation's low-precision result, for the relative rule.
    factor : float, default 2.0
        How many times the reference's error the candidate may make.

    Raises
    ------
    AssertionError
        Showing the worst element: its index, both values and the bound.

    Examples
    --------
    >>> from maskloss.testing import assert_loss_close
    >>> assert_loss_close(0.6931, 0.693147, dtype="float16")
    >>> assert_loss_close(0.6931, 0.693147, dtype="float32")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: loss mismatch: actual 0.6931, expected 0.693147 (|diff| = 4.7e-05; allowed: ...)
    >>> assert_loss_close(0.70, 0.69, dtype="float16", reference_lowp=0.685)   # 0.01 <= 2 * 0.005 + 1e-3
    """
    name = _dtype_name(dtype)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 0:
        raise ValueError(f"factor must be a number >= 0, got {factor!r}")
    cmp = _compare(actual, expected, name, rtol, atol, reference_lowp, float(factor))
    if not cmp.ok:
        where = f" at index {cmp.index}" if cmp.index else ""
        prefix = f"{err_msg}: " if err_msg else ""
        raise AssertionError(
            f"{prefix}loss mismatch{where}: actual {cmp.actual!r}, expected {cmp.expected!r} "
            f"(|diff| = {abs(cmp.actual - cmp.expected):.2g}; allowed: {cmp.bound})"
        )


# -- adapters ------------------------------------------------------------------------------------


def torch_adapter(fn: Callable[..., Any], *, dtype: Any = None) -> Callable[..., Any]:
    r"""Wrap a loss that takes and returns torch tensors so that it takes and returns NumPy.

    NumPy float arrays become tensors of the same dtype (or of ``dtype``, e.g.
    ``torch.bfloat16``), integer arrays ``torch.long``, bool arrays ``torch.bool``; the
    result is returned as a float64 NumPy array or ``numpy.float64``.

    Examples
    --------
    >>> import numpy as np
    >>> torch = __import__("pytest").importorskip("torch")
    >>> from maskloss.testing import torch_adapter
    >>> f = torch_adapter(lambda y, p, m: ((y - p) ** 2).mean(-1)[m].mean())
    >>> float(f(np.ones((1, 2, 1)), np.zeros((1, 2, 1)), np.array([[True, False]])))
    1.0
    """
    import torch

    def to_torch(x: Any) -> Any:
        if not isinstance(x, np.ndarray):
            return x
        t = torch.from_numpy(np.ascontiguousarray(x))
        if x.dtype.kind == "f" and dtype is not None:
            t = t.to(dtype)
        elif x.dtype.kind in "iu":
            t = t.to(torch.long)
        return t

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*(to_torch(a) for a in args), **{k: to_torch(v) for k, v in kwargs.items()})
        return _torch_to_numpy(out)

    return call


def _torch_to_numpy(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        arr = out.detach().to(torch.float64).cpu().numpy()
        return np.float64(arr) if arr.ndim == 0 else arr
    return np.asarray(out, dtype=np.float64)


def torch_grad(fn: Callable[..., Any], *, dtype: Any = None) -> Callable[..., Any]:
    r"""The gradient of a torch loss with respect to ``y_pred`` (its 2nd argument), by autograd.

    Returns a NumPy callable with the loss's call shape, for ``check_loss(..., grad=)``.

    Examples
    --------
    >>> import numpy as np
    >>> torch = __import__("pytest").importorskip("torch")
    >>> from maskloss.testing import torch_grad
    >>> g = torch_grad(lambda y, p, m: ((y - p) ** 2).mean(-1)[m].mean())
    >>> g(np.ones((1, 2, 1)), np.zeros((1, 2, 1)), np.array([[True, False]])).ravel().tolist()
    [-2.0, 0.0]
    """
    import torch

    def loss_and_pred(*args: Any, **kwargs: Any) -> Any:
        y_pred = args[1].detach().requires_grad_(True)
        value = fn(args[0], y_pred, *args[2:], **kwargs)
        (g,) = torch.autograd.grad(value, y_pred, allow_unused=True)
        return torch.zeros_like(y_pred) if g is None else g

    return torch_adapter(loss_and_pred, dtype=dtype)


def jax_adapter(fn: Callable[..., Any], *, dtype: Any = None) -> Callable[..., Any]:
    r"""Wrap a loss that takes and returns JAX arrays so that it takes and returns NumPy.

    JAX computes in float32 unless ``jax.config.update("jax_enable_x64", True)``; with
    the default, call ``check_loss(..., dtype="float32")`` so the tolerances match.
    ``dtype`` (e.g. ``jax.numpy.bfloat16``) casts the float inputs.

    Examples
    --------
    >>> import numpy as np
    >>> jnp = __import__("pytest").importorskip("jax.numpy")
    >>> from maskloss.testing import jax_adapter
    >>> f = jax_adapter(lambda y, p, m: jnp.sum(jnp.where(m, ((y - p) ** 2).mean(-1), 0)) / m.sum())
    >>> float(f(np.ones((1, 2, 1), np.float32), np.zeros((1, 2, 1), np.float32), np.array([[True, False]])))
    1.0
    """
    import jax.numpy as jnp

    def to_jax(x: Any) -> Any:
        if not isinstance(x, np.ndarray):
            return x
        if x.dtype.kind == "f" and dtype is not None:
            return jnp.asarray(x, dtype=dtype)
        return jnp.asarray(x)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*(to_jax(a) for a in args), **{k: to_jax(v) for k, v in kwargs.items()})
        arr = np.asarray(out).astype(np.float64)
        return np.float64(arr) if arr.ndim == 0 else arr

    return call


def jax_grad(fn: Callable[..., Any], *, dtype: Any = None) -> Callable[..., Any]:
    r"""The gradient of a JAX loss with respect to ``y_pred`` (``jax.grad(fn, argnums=1)``), for NumPy."""
    import jax

    return jax_adapter(jax.grad(fn, argnums=1), dtype=dtype)


# -- check_loss ----------------------------------------------------------------------------------


_QUIET_CHECKS = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]


class LossCheckError(AssertionError):
    """Raised by :func:`check_loss`; the attributes hold the failing case for inspection."""

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


class _Failure(Exception):
    def __init__(self, prop: str, batch: PaddedBatch, actual: Any, expected: Any, detail: str) -> None:
        super().__init__(prop)
        self.prop, self.batch, self.actual, self.expected, self.detail = prop, batch, actual, expected, detail


_PROPERTIES = {
    "agreement": "the candidate disagrees with the oracle",
    "padding content": (
        "junk under the mask (NaN, inf, huge values, out-of-range labels) changed the result"
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
    ignore_index: int | None
    splittable: bool  # the micro-batch weights are known (``like`` is a maskloss loss)
    gradient: bool = False  # which of value/gradient is being checked

    # ---- running the three parties on one batch
    def _args(self, b: PaddedBatch) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs = {} if b.sample_weight is None else {"sample_weight": b.sample_weight}
        return (b.y_true, b.y_pred, b.mask), kwargs

    def run_candidate(self, prop: str, b: PaddedBatch) -> Any:
        fn = self.grad if self.gradient else self.candidate
        assert fn is not None
        args, kwargs = self._args(b)
        try:
            with np.errstate(all="ignore"):
                return fn(*(np.array(a, copy=True) for a in args), **kwargs)
        except Exception as exc:  # the candidate crashing is a failure to report, not to propagate
            raise _Failure(prop, b, f"raised {type(exc).__name__}: {exc}", self.expect(b), "") from exc

    def expect(self, b: PaddedBatch) -> Any:
        args, kwargs = self._args(b)
        if self.gradient:
            assert self.oracle_grad is not None
            with np.errstate(all="ignore"):
                return self.oracle_grad(*args, **kwargs, **self.options)
        value = self.oracle_value(b)
        if self.all_masked is not None and np.ndim(value) == 0 and np.isnan(value):
            return np.float64(self.all_masked)
        return value

    def oracle_value(self, b: PaddedBatch) -> Any:
        args, kwargs = self._args(b)
        with np.errstate(all="ignore"):
            return self.oracle(*args, **kwargs, **self.options)

    def check(self, prop: str, b: PaddedBatch, expected: Any = None, before: Any = None) -> Any:
        expected = self.expect(b) if expected is None else expected
        actual = self.run_candidate(prop, b)
        if self.gradient and np.isnan(self.oracle_value(b)):
            # No valid step: the loss is undefined; accept torch's 0 gradient or a plain sum/count's NaN.
            actual = np.where(np.isnan(np.asarray(actual, dtype=np.float64)), 0.0, actual)
        cmp = _compare(actual, expected, self.dtype, self.rtol, self.atol, self.reference(b), self.factor)
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
        args, kwargs = self._args(b)
        with np.errstate(all="ignore"):
            return self.reference_lowp(*args, **kwargs)

    # ---- per-sequence denominators, to recombine micro-batches
    def denominators(self, b: PaddedBatch) -> npt.NDArray[np.float64]:
        """Per-sequence denominators of ``like`` on ``b`` (its :class:`MaskedTotals`)."""
        args, kwargs = self._args(b)
        with np.errstate(all="ignore"):
            totals = masked_totals(self.oracle)(*args, **kwargs, **self.options)
        return totals.denominator

    def part_weight(self, part: PaddedBatch, whole: PaddedBatch) -> float:
        """c such that value(whole) = sum over parts of c * value(part)."""
        r = self.reduction
        if r == "sum":
            return 1.0
        if r == "batch_mean":
            return float(part.mask.shape[0] / whole.mask.shape[0])
        if r == "element_mean":
            return float(part.mask.size / whole.mask.size)
        d_part, d_whole = self.denominators(part), self.denominators(whole)
        if r == "sequence_mean":
            d_part, d_whole = (d_part > 0).astype(np.float64), (d_whole > 0).astype(np.float64)
        total = float(d_whole.sum())
        return float(d_part.sum()) / total if total else 0.0

    # ---- the properties
    def properties(self, b: PaddedBatch) -> None:
        expected = self.expect(b)
        clean = self.check("agreement", b, expected)
        for junked in _junk_variants(b, self.ignore_index, self.dtype):
            # A maskloss loss never reads padding, so its value cannot change; a custom ``like``
            # (a causal shift, say) may read steps the mask calls padding, so ask it again.
            self.check("padding content", junked, expected if self.splittable else None, before=clean)
        self.check("padding amount", _pad_more(b, self.ignore_index), before=clean)
        for side in ("right", "left"):
            moved = _repad(b, side, self.ignore_index)
            if not np.array_equal(moved.mask, b.mask):
                self.check("left vs right padding", moved, before=clean)
        if b.mask.shape[0] > 1:
            self.check("batch order", _take(b, slice(None, None, -1)), before=clean)
            if self.splittable:
                self.split(b)

    def split(self, b: PaddedBatch) -> None:
        half = b.mask.shape[0] // 2
        parts = [_take(b, slice(None, half)), _take(b, slice(half, None))]
        total = self.denominators(b).sum()
        if self.reduction in ("token_mean", "sequence_mean") and total == 0:
            return
        pieces = []
        for part in parts:
            value = self.run_candidate("split and recombine", part)
            if self.reduction == "none":
                pieces.append(np.asarray(value))
                continue
            c = self.part_weight(part, b)
            if self.gradient:
                pieces.append(c * np.asarray(value) if c else np.zeros(part.y_pred.shape))
            else:
                pieces.append(np.asarray(c * value if c else 0.0))
        combined = np.concatenate(pieces) if self.reduction == "none" or self.gradient else sum(pieces)
        expected = self.expect(b)
        cmp = _compare(combined, expected, self.dtype, self.rtol, self.atol, self.reference(b), self.factor)
        if not cmp.ok:
            detail = (
                f"split into {parts[0].mask.shape[0]} + {parts[1].mask.shape[0]} sequences; "
                f"recombined candidate {cmp.actual!r}, full-batch oracle {cmp.expected!r}"
                f"\n  allowed: {cmp.bound}"
            )
            raise _Failure("split and recombine", b, combined, expected, detail)


def _replace(b: PaddedBatch, **kw: Any) -> PaddedBatch:
    return b._replace(**kw)


def _take(b: PaddedBatch, rows: slice) -> PaddedBatch:
    w = b.sample_weight
    return PaddedBatch(
        b.y_true[rows],
        b.y_pred[rows],
        b.mask[rows],
        b.lengths[rows],
        None if w is None else w[rows],
        b.kind,
        b.padding,
    )


def _fill(arr: np.ndarray[Any, Any], mask: npt.NDArray[np.bool_], value: Any) -> np.ndarray[Any, Any]:
    m = mask.reshape(mask.shape + (1,) * (arr.ndim - mask.ndim))
    with np.errstate(over="ignore"):
        return np.where(m, arr, np.asarray(value).astype(arr.dtype))


def _junk_variants(b: PaddedBatch, ignore_index: int | None, dtype: str) -> list[PaddedBatch]:
    if b.mask.all():
        return []
    huge = BFLOAT16_MAX if dtype == "bfloat16" else float(np.finfo(b.y_pred.dtype).max)
    out = []
    bad_labels = [b.y_pred.shape[-1], -1, 10**6]
    for i, value in enumerate([math.nan, math.inf, -huge]):
        y_true = b.y_true
        if b.kind == "sparse":
            if ignore_index is None:
                y_true = _fill(b.y_true, b.mask, bad_labels[i % 3])
        else:
            y_true = _fill(b.y_true, b.mask, value)
        w = b.sample_weight
        if w is not None and w.ndim == 2:
            w = _fill(w, b.mask, math.nan if i % 2 == 0 else -1.0)
        out.append(_replace(b, y_true=y_true, y_pred=_fill(b.y_pred, b.mask, value), sample_weight=w))
    return out


def _pad_value(b: PaddedBatch, ignore_index: int | None) -> Any:
    return ignore_index if (b.kind == "sparse" and ignore_index is not None) else 0


def _pad_more(b: PaddedBatch, ignore_index: int | None, extra: int = 2) -> PaddedBatch:
    """Append ``extra`` fully padded steps (on the left for left-padded batches)."""
    left = b.padding == "left"

    def grow(arr: np.ndarray[Any, Any], value: Any) -> np.ndarray[Any, Any]:
        shape = (arr.shape[0], extra, *arr.shape[2:])
        pad = np.full(shape, value, dtype=arr.dtype)
        return np.concatenate([pad, arr] if left else [arr, pad], axis=1)

    w = b.sample_weight
    return _replace(
        b,
        y_true=grow(b.y_true, _pad_value(b, ignore_index)),
        y_pred=grow(b.y_pred, 0),
        mask=grow(b.mask, False),
        sample_weight=w if w is None or w.ndim == 1 else grow(w, 0.0),
    )


def _repad(b: PaddedBatch, side: str, ignore_index: int | None) -> PaddedBatch:
    fill = _pad_value(b, ignore_index)
    y_true, mask = repad(b.y_true, b.mask, side=side, fill=fill)  # type: ignore[arg-type]
    y_pred, _ = repad(b.y_pred, b.mask, side=side)  # type: ignore[arg-type]
    w = b.sample_weight
    if w is not None and w.ndim == 2:
        w, _ = repad(w, b.mask, side=side)  # type: ignore[arg-type]
    return _replace(
        b,
        y_true=y_true.astype(b.y_true.dtype),
        y_pred=y_pred.astype(b.y_pred.dtype),
        mask=mask,
        sample_weight=w,
        padding=side,
    )


def _single_token_batches(b: PaddedBatch, ignore_index: int | None, steps: int = 3) -> list[PaddedBatch]:
    """From a drawn batch with a valid first step: one valid step at the start, middle and end."""
    out = []
    for t in range(steps):
        mask = np.zeros((1, steps), dtype=bool)
        mask[0, t] = True
        y_true = np.repeat(b.y_true[:1, :1], steps, axis=1)
        y_pred = np.repeat(b.y_pred[:1, :1], steps, axis=1)
        if b.kind == "sparse" and ignore_index is not None:
            y_true = np.where(mask, y_true, ignore_index)
        w = None if b.sample_weight is None else np.ones(1)
        side = "left" if t == steps - 1 else ("right" if t == 0 else "arbitrary")
        out.append(PaddedBatch(y_true, y_pred, mask, mask.sum(axis=1), w, b.kind, side))
    return out


def _all_masked_batch(
    b: PaddedBatch, ignore_index: int | None, shape: tuple[int, int] = (2, 3)
) -> PaddedBatch:
    """Two sequences of three steps, none valid, built from the first step of ``b``."""
    y_true = np.broadcast_to(b.y_true[:1, :1], shape + b.y_true.shape[2:]).copy()
    if b.kind == "sparse" and ignore_index is not None:
        y_true = np.full(shape, ignore_index, dtype=b.y_true.dtype)
    y_pred = np.broadcast_to(b.y_pred[:1, :1], shape + b.y_pred.shape[2:]).copy()
    w = None if b.sample_weight is None else np.ones(shape[0])
    mask = np.zeros(shape, dtype=bool)
    return PaddedBatch(y_true, y_pred, mask, mask.sum(axis=1), w, b.kind, "right")


def _describe_batch(b: PaddedBatch) -> str:
    def fmt(a: Any) -> str:
        text = np.array2string(np.asarray(a), precision=4, separator=", ", threshold=200)
        return text.replace("\n", "\n      ")

    lines = [
        f"  kind={b.kind!r}, padding={b.padding!r}, batch={b.mask.shape[0]}, steps={b.mask.shape[1]}, "
        f"y_pred {b.y_pred.dtype} {b.y_pred.shape}",
        f"  mask (1 = valid):\n      {fmt(b.mask.astype(int))}",
        f"  y_true:\n      {fmt(b.y_true)}",
        f"  y_pred:\n      {fmt(b.y_pred)}",
    ]
    if b.sample_weight is not None:
        lines.append(f"  sample_weight:\n      {fmt(b.sample_weight)}")
    return "\n".join(lines)


def _fmt_value(x: Any) -> str:
    if isinstance(x, str):
        return x
    arr = np.asarray(x)
    if arr.ndim == 0:
        return repr(float(arr))
    return np.array2string(arr, precision=6, separator=", ", threshold=60).replace("\n", "\n             ")


def _oracle_grad(like: Callable[..., Any]) -> Callable[..., Any]:
    try:
        from maskloss.gradients import value_and_grad  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ImportError(
            "check_loss(grad=...) compares with maskloss.gradients.value_and_grad, which this version of "
            "maskloss does not have; pass expected_grad= (a callable returning the true gradient) instead"
        ) from exc
    value_grad = value_and_grad(like)

    def expected(*args: Any, **kwargs: Any) -> Any:
        return value_grad(*args, **kwargs)[1]

    return expected


def check_loss(
    candidate: Callable[..., Any],
    like: Callable[..., Any],
    *,
    max_examples: int = 100,
    grad: Callable[..., Any] | None = None,
    expected_grad: Callable[..., Any] | None = None,
    adapter: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    dtype: Any = "float64",
    rtol: float | None = None,
    atol: float | None = None,
    reference_lowp: Callable[..., Any] | None = None,
    factor: float = 2.0,
    all_masked: float | None = None,
    padding: str | Sequence[str] = PADDINGS,
    weights: bool = False,
    max_batch: int = 4,
    max_steps: int = 6,
    min_features: int | None = None,
    max_features: int | None = None,
    kind: str | None = None,
    derandomize: bool = True,
    seed: int | None = None,
    **options: Any,
) -> None:
    r"""Check a masked loss against the maskloss oracle on generated padded batches.

    ``candidate(y_true, y_pred, mask)`` is your loss with the call shape of the maskloss
    loss ``like`` (``sample_weight=`` is passed too when ``weights=True``);
    ``**options`` are ``like``'s keyword arguments that say what your loss computes
    (``reduction``, ``from_logits``, ``ignore_index``, ``label_smoothing``,
    ``class_weight``) and are passed to ``like`` only. ``mask`` is True at valid steps;
    with ``ignore_index`` every padded label also holds that index, so a loss may use
    either.

    Properties checked on every generated batch, in this order (the first that fails
    on the smallest failing batch is reported):

    1. **agreement**: the value matches ``like`` (padded steps hold ordinary values);
    2. **padding content**: NaN, +inf or minus the dtype's largest value at padded steps
       (and out-of-range labels, NaN/negative per-step weights) change nothing;
    3. **padding amount**: two more fully padded steps change nothing (but
       ``"element_mean"``'s denominator, as the oracle says);
    4. **left vs right padding**: the valid steps moved to the other side;
    5. **batch order**: the sequences in reverse order;
    6. **split and recombine**: the candidate on two micro-batches, recombined with
       their counts (token counts for ``"token_mean"``, non-empty sequences for
       ``"sequence_mean"``, sequences, steps, or plain sums), equals the full batch
       (the gradient-accumulation rule).

    All-masked batches are left out of the generated ones and checked afterwards, with
    single-token batches: 7. **single-token batch**, 8. **all-masked batch** (NaN for
    every mean, 0 for ``"sum"``, as in torch; ``all_masked=0.0`` states a convention
    that returns 0, like Keras 3, AllenNLP or fairseq).

    With ``grad`` (a callable with the candidate's call shape returning d loss / d
    ``y_pred``, e.g. :func:`torch_grad`) every property is checked again for the
    gradient, against ``maskloss.gradients.value_and_grad(like)`` or ``expected_grad``.

    Parameters
    ----------
    candidate : callable
        Your loss, NumPy in and out (or use ``adapter``).
    like : callable
        The maskloss loss it should equal, e.g. :func:`maskloss.sparse_categorical_crossentropy`.
    max_examples : int, default 100
        Generated batches (hypothesis examples) before declaring success.
    grad, expected_grad : callable, optional
        The candidate's gradient and (optionally) the true one.
    adapter : callable, optional
        Wraps ``candidate``, ``grad`` and ``reference_lowp`` so that framework code takes
        NumPy, e.g. :func:`torch_adapter` or :func:`jax_adapter`.
    dtype : {"float64", "float32", "float16", "bfloat16"}
        The dtype of the generated ``y_pred`` (and float targets) and so the tolerance
        row of :data:`TOLERANCES`; ``"bfloat16"`` batches are float32 arrays holding
        bfloat16 values (``torch_adapter(fn, dtype=torch.bfloat16)`` casts them).
    rtol, atol : float, optional
        Override the tolerance table.
    reference_lowp : callable, optional
        A framework's own low-precision implementation with the candidate's call shape;
        the value check becomes ``|actual - expected| <= factor * |reference - expected| + atol``.
    all_masked : float, optional
        The value the candidate's convention gives where the oracle gives NaN, that is
        when no step is valid (default: keep the oracle's NaN).
    padding : str or sequence of str
        Padding styles to generate (right, left, arbitrary).
    weights : bool, default False
        Also generate ``sample_weight`` (``(B,)`` or ``(B, T)``) and pass it.
    max_batch, max_steps : int
        Size of the generated batches (small sizes find bugs as well and shrink fast).
    min_features, max_features : int, optional
        Bounds on the last axis (features, or classes: default 2 to 5); fix it when an
        option depends on it, e.g. ``class_weight`` of length C.
    kind : str, optional
        The batch kind (see :func:`maskloss.strategies.padded_batches`) when ``like`` is
        not one of the five maskloss losses.
    derandomize : bool, default True
        Use hypothesis's fixed example sequence so that a test is reproducible (the
        sequence is derived from check_loss's own code, so it changes between maskloss
        versions).
    seed : int, optional
        Another reproducible sequence (``hypothesis.seed``); overrides ``derandomize``.

    Raises
    ------
    LossCheckError (an AssertionError)
        Naming the property that broke, the candidate's and the oracle's numbers, and
        the smallest failing batch.

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> from maskloss.testing import check_loss
    >>> def my_mse(y_true, y_pred, mask):           # select, then average over valid steps
    ...     per_step = np.square(np.where(mask[..., None], y_true - y_pred, 0.0)).mean(-1)
    ...     return per_step.sum() / mask.sum()
    >>> check_loss(my_mse, maskloss.mse, max_examples=20)   # passes silently
    >>> def my_mse_times_mask(y_true, y_pred, mask):  # multiply by the mask: nan * 0 = nan
    ...     return (np.square(y_true - y_pred).mean(-1) * mask).sum() / mask.sum()
    >>> check_loss(my_mse_times_mask, maskloss.mse, max_examples=20)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    maskloss.testing.LossCheckError: check_loss: my_mse_times_mask is not maskloss.mse()
    property broken: padding content: junk under the mask (NaN, inf, huge values, ...
    ...
    """
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples must be an int >= 1, got {max_examples!r}")
    if not callable(candidate) or not callable(like):
        raise TypeError(f"candidate and like must be callables, got {candidate!r} and {like!r}")
    kind = _KIND_OF.get(like) if kind is None else kind
    if kind is None:
        raise ValueError(f"like={getattr(like, '__name__', like)!r} is not a maskloss loss; pass kind=")
    dt = _dtype_name(dtype)
    reduction = options.get("reduction", "token_mean")
    if grad is not None and reduction == "none":
        raise ValueError("grad= needs a scalar reduction, not reduction='none'")
    ignore_index = options.get("ignore_index")
    if all_masked is not None and not isinstance(all_masked, (int, float)):
        raise TypeError(f"all_masked must be a float (or None for the oracle's value), got {all_masked!r}")
    wrap = adapter if adapter is not None else (lambda f: f)
    checker = _Checker(
        candidate=wrap(candidate),
        grad=None if grad is None else wrap(grad),
        oracle=like,
        oracle_grad=None if grad is None else (expected_grad or _oracle_grad(like)),
        reference_lowp=None if reference_lowp is None else wrap(reference_lowp),
        options=options,
        reduction=reduction,
        dtype=dt,
        rtol=rtol,
        atol=atol,
        factor=factor,
        all_masked=all_masked,
        ignore_index=ignore_index,
        splittable=like in _KIND_OF,
    )
    strategy = padded_batches(
        kind,
        max_batch=max_batch,
        min_features=min_features,
        max_features=max_features,
        max_steps=max_steps,
        padding=padding,
        from_logits=bool(options.get("from_logits", False)),
        ignore_index=ignore_index if kind == "sparse" else None,
        weights=weights,
        dtype=dt,
    )
    name = getattr(candidate, "__name__", repr(candidate))
    like_call = (
        f"maskloss.{getattr(like, '__name__', like)}({', '.join(f'{k}={v!r}' for k, v in options.items())})"
    )
    count = [0, 0]  # examples run, examples run at the first failure

    def one_batch(b: PaddedBatch) -> None:
        count[0] += 1
        try:
            # Junk, NaN and inf are the point here: numpy's warnings about them are noise.
            with np.errstate(all="ignore"):
                if reduction != "none" and np.isnan(checker.oracle_value(b)):
                    return  # no valid step: all-masked batches are checked on their own, afterwards
                for gradient in (False, True) if grad is not None else (False,):
                    checker.gradient = gradient
                    checker.properties(b)
        except _Failure:
            if not count[1]:
                count[1] = count[0]
            raise

    test = settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=derandomize and seed is None,
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
        suppress_health_check=_QUIET_CHECKS,
    )(given(strategy)(one_batch))
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        test = hypothesis.seed(seed)(test)
    try:
        test()
        with np.errstate(all="ignore"):
            base = _base_batch(checker, kind, weights)
            _special_batches(checker, base, grad is not None, ignore_index, count)
    except _Failure as failure:
        raise _error(failure, name, like_call, checker, count) from None


def _special_batches(
    checker: _Checker, base: PaddedBatch, with_grad: bool, ignore_index: int | None, count: list[int]
) -> None:
    """Single-token and all-masked batches, made from one simple valid step."""
    for gradient in (False, True) if with_grad else (False,):
        checker.gradient = gradient
        for single in _single_token_batches(base, ignore_index):
            count[0] += 1
            checker.check("single-token batch", single)
        empty = _all_masked_batch(base, ignore_index)
        count[0] += 1
        for junked in [empty, *_junk_variants(empty, ignore_index, checker.dtype)[:1]]:
            checker.check("all-masked batch", junked)


def _base_batch(checker: _Checker, kind: str, weights: bool) -> PaddedBatch:
    """One valid step with simple fixed values, in the checked dtype: the seed of the special batches."""
    logits = bool(checker.options.get("from_logits", False))
    if kind == "regression":
        y_true: np.ndarray[Any, Any] = np.array([[[1.0, -0.5]]])
        y_pred = np.array([[[0.25, 0.5]]])
    elif kind == "binary":
        y_true = np.array([[[1.0, 0.0]]])
        y_pred = np.array([[[0.5, -1.0]]])
        y_pred = y_pred if logits else 1.0 / (1.0 + np.exp(-y_pred))
    else:
        y_pred = np.array([[[0.5, 1.0, -1.0]]])
        if not logits:
            y_pred = np.exp(y_pred) / np.exp(y_pred).sum(axis=-1, keepdims=True)
        y_true = np.array([[1]]) if kind == "sparse" else np.array([[[0.0, 1.0, 0.0]]])
    storage = np.float32 if checker.dtype == "bfloat16" else np.dtype(checker.dtype).type
    y_pred = y_pred.astype(storage)
    if kind != "sparse":
        y_true = y_true.astype(storage)
    if checker.dtype == "bfloat16":
        y_pred = round_to_bfloat16(y_pred)
        y_true = y_true if kind == "sparse" else round_to_bfloat16(y_true)
    mask = np.ones((1, 1), dtype=bool)
    return PaddedBatch(y_true, y_pred, mask, mask.sum(axis=1), np.ones(1) if weights else None, kind, "right")


def _error(
    failure: _Failure, name: str, like_call: str, checker: _Checker, count: list[int]
) -> LossCheckError:
    what = "gradient" if checker.gradient else "value"
    prop = failure.prop
    lines = [
        f"check_loss: {name} is not {like_call}",
        f"property broken: {prop}{' (gradient)' if checker.gradient else ''}: {_PROPERTIES[prop]}",
        f"  candidate {what}: {_fmt_value(failure.actual)}",
        f"  expected {what}:  {_fmt_value(failure.expected)}",
    ]
    if failure.detail.strip():
        lines.append("  " + failure.detail.strip())
    lines += [
        f"smallest failing batch (first failure after {count[1] or count[0]} examples, then shrunk):",
        _describe_batch(failure.batch),
        "reproduce: candidate(batch.y_true, batch.y_pred, batch.mask) with this batch (error.batch)",
    ]
    return LossCheckError(
        "\n".join(lines),
        prop=prop,
        batch=failure.batch,
        actual=failure.actual,
        expected=failure.expected,
        examples=count[1] or count[0],
    )
