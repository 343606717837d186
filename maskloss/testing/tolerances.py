r"""Tolerances by dtype and :func:`assert_loss_close`, the comparison every check uses.

The table and its reasoning are in :mod:`maskloss.testing`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric

__all__ = ["TOLERANCES", "assert_loss_close"]

#: ``(rtol, atol)`` by the dtype the candidate computes in; see the module docstring.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-10, 1e-12),
    "float32": (1e-5, 1e-6),
    "float16": (4e-3, 1e-3),
    "bfloat16": (3.2e-2, 1e-2),
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
    bound = _bound(rt, at, dtype, reference_lowp is not None, factor)
    if not a.ndim:
        r = None if reference_lowp is None else np.asarray(reference_lowp, dtype=np.float64)
        if r is None or not r.ndim:
            return _compare_scalar(float(a), float(e), rt, at, None if r is None else float(r), factor, bound)
    a, e = np.broadcast_arrays(a, e)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - e)
        if reference_lowp is None:
            allowed = at + rt * np.abs(e)
        else:
            r = np.broadcast_to(np.asarray(reference_lowp, dtype=np.float64), e.shape)
            allowed = factor * np.abs(r - e) + at
        same_special = (np.isnan(a) & np.isnan(e)) | (np.isinf(e) & (a == e))
        good = same_special | (np.isfinite(e) & np.isfinite(a) & (err <= allowed))
    if good.all():
        return _Comparison(True, math.nan, math.nan, (), bound)
    bad = ~good
    score = np.where(bad, np.nan_to_num(err, nan=np.inf, posinf=np.inf), -1.0)
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(score)), a.shape)) if a.ndim else ()
    return _Comparison(False, float(a[idx]), float(e[idx]), idx, bound)


def _bound(rt: float, at: float, dtype: str, with_reference: bool, factor: float) -> str:
    """The tolerance a comparison applies, as its report states it."""
    if with_reference:
        return f"<= {factor:g} x |reference_lowp - expected| + {at:g}"
    return f"rtol={rt:g}, atol={at:g} for {dtype}"


def _compare_scalar(
    a: float, e: float, rt: float, at: float, r: float | None, factor: float, bound: str
) -> _Comparison:
    """:func:`_compare` of two scalars in Python floats (the same IEEE float64 arithmetic, without arrays).

    Most checked values are scalars, and array machinery costs more than the comparison itself.
    """
    err = abs(a - e)
    allowed = at + rt * abs(e) if r is None else factor * abs(r - e) + at
    same_special = (math.isnan(a) and math.isnan(e)) or (math.isinf(e) and a == e)
    good = same_special or (math.isfinite(e) and math.isfinite(a) and err <= allowed)
    return _Comparison(True, math.nan, math.nan, (), bound) if good else _Comparison(False, a, e, (), bound)


def _check_tolerance(value: object, name: str) -> float | None:
    """``rtol``/``atol``: None (use the table) or a finite real number >= 0."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number >= 0 or None, got {type(value).__name__} {value!r:.80}")
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {number}")
    return number


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
    TypeError
        If ``actual``, ``expected`` or ``reference_lowp`` is not an array of real
        numbers (``None``, a string, a complex value), or ``rtol``/``atol`` is not a number.
    ValueError
        If ``rtol``/``atol`` is negative or not finite, ``factor`` is negative, or
        ``reference_lowp`` does not have the shape of ``expected``.

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
    rtol = _check_tolerance(rtol, "rtol")
    atol = _check_tolerance(atol, "atol")
    # A candidate that forgot to return (None), or returned a string or a complex number,
    # is refused here instead of being compared (None once matched NaN).
    actual = as_numeric(actual, "actual")
    expected = as_numeric(expected, "expected")
    if reference_lowp is not None:
        reference_lowp = as_numeric(reference_lowp, "reference_lowp")
        try:
            np.broadcast_shapes(reference_lowp.shape, expected.shape)
        except ValueError:
            raise ValueError(
                f"reference_lowp must have the shape of expected {expected.shape}, "
                f"got {reference_lowp.shape}"
            ) from None
    cmp = _compare(actual, expected, name, rtol, atol, reference_lowp, float(factor))
    if not cmp.ok:
        where = f" at index {cmp.index}" if cmp.index else ""
        prefix = f"{err_msg}: " if err_msg else ""
        raise AssertionError(
            f"{prefix}loss mismatch{where}: actual {cmp.actual!r}, expected {cmp.expected!r} "
            f"(|diff| = {abs(cmp.actual - cmp.expected):.2g}; allowed: {cmp.bound})"
        )

