r"""Hypothesis strategies for padded batches: lengths, masks, and whole loss inputs.

Use them to test your own masked loss against maskloss (or with
:func:`maskloss.testing.check_loss`, which uses them for you). They follow the house
style of :mod:`hypothesis.extra.numpy`: plural nouns, keyword-only ``min_*``/``max_*``
bounds, arguments validated when the strategy is *built* (an ``InvalidArgument`` at
call time, never at draw time), small default sizes, and shrinking towards the
simplest batch.

====================== ===========================================================
strategy               shrinks towards
====================== ===========================================================
:func:`lengths`        ``min_batch`` sequences, each ``min_length`` long
:func:`masks`          fewest sequences and steps, right padding, no padded step
:func:`padded_batches` fewest sequences, steps and features/classes; right padding
                       with no padded step; targets/labels 0 and predictions 0
                       (uniform logits); no sample weight; NaN as the padding junk
:func:`head_options`   every LM-head option at its default (no z-loss, no cap,
                       temperature 1, no shift, no smoothing)
====================== ===========================================================

So a minimal counterexample has as little padding as it needs to fail, on the right,
and no weights unless the weights matter. Masks are True at valid steps.

This module needs hypothesis (``pip install -e ".[test]"`` in a checkout); ``import maskloss``
never imports it.

Examples
--------
>>> from hypothesis import given
>>> import maskloss
>>> from maskloss.strategies import padded_batches
>>> @given(padded_batches("sparse", from_logits=True, adversarial=True))
... def test_padding_is_ignored(batch):
...     loss = maskloss.sparse_categorical_crossentropy(
...         batch.y_true, batch.y_pred, batch.mask, from_logits=True)
...     assert loss >= 0 or (loss != loss and not batch.mask.any())
>>> test_padding_is_ignored()
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, TypedDict

import numpy as np
import numpy.typing as npt

try:
    from hypothesis import strategies as st
    from hypothesis.errors import InvalidArgument
    from hypothesis.extra import numpy as hnp
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "maskloss.strategies needs hypothesis, which is not installed: pip install hypothesis "
        '(or, in a checkout of maskloss, pip install -e ".[test]")'
    ) from exc

from maskloss import registry
from maskloss._types import Side
from maskloss.masks import mask_from_lengths
from maskloss.packing import Packing, pack

__all__ = [
    "BFLOAT16_MAX",
    "HUGE_SOFTCAP",
    "KINDS",
    "PADDINGS",
    "HeadOptions",
    "PackedBatch",
    "PaddedBatch",
    "head_options",
    "lengths",
    "masks",
    "packed_batches",
    "padded_batches",
    "round_to_bfloat16",
]

#: The kinds of batch :func:`padded_batches` draws, one per family of maskloss losses (a loss's
#: ``kind=`` in :mod:`maskloss.registry`, where they are defined).
KINDS: tuple[str, ...] = registry.BATCH_KINDS
#: Padding styles of :func:`masks`, simplest first (hypothesis shrinks towards the first).
PADDINGS: tuple[str, ...] = ("right", "left", "arbitrary")

_DTYPES = ("float64", "float32", "float16", "bfloat16")
#: The "huge" softcap :func:`head_options` draws, :math:`2^{300}`: dividing and multiplying by a
#: power of two is exact (while :math:`x / c` is a normal float) and :math:`\tanh u = u` in float64
#: for :math:`|u| < 10^{-8}`, so :math:`c \tanh(x / c) = x` to the last bit for 0 and every
#: :math:`10^{-217} < |x| < 10^{82}` (a tinier logit is capped to 0), and the chain rule's
#: :math:`1 - (h/c)^2` is exactly 1: a huge cap must equal no cap.
HUGE_SOFTCAP = 2.0**300
#: The largest finite bfloat16, (2 - 2**-7) * 2**127.
BFLOAT16_MAX = 3.3895313892515355e38


class PaddedBatch(NamedTuple):
    """One generated batch: consistent loss inputs plus what was drawn to make them.

    Attributes
    ----------
    y_true : ndarray
        ``(B, T, F)`` float targets (regression, binary), ``(B, T, C)`` probability
        targets (dense), or ``(B, T)`` int64 labels (sparse).
    y_pred : ndarray, shape (B, T, F) or (B, T, C)
        Predictions (logits or probabilities), in the requested dtype.
    mask : ndarray of bool, shape (B, T)
        True at valid steps.
    lengths : ndarray of int64, shape (B,)
        Valid steps per sequence (``mask.sum(axis=1)``).
    sample_weight : ndarray or None
        ``None``, ``(B,)`` or ``(B, T)`` non-negative weights.
    kind : str
        One of :data:`KINDS`.
    padding : str
        The padding style drawn, one of :data:`PADDINGS`.
    """

    y_true: np.ndarray[Any, Any]
    y_pred: np.ndarray[Any, Any]
    mask: npt.NDArray[np.bool_]
    lengths: npt.NDArray[np.int64]
    sample_weight: np.ndarray[Any, Any] | None
    kind: str
    padding: str


# -- eager validation --------------------------------------------------------------------------


#: Largest batch, steps or features a strategy draws: hypothesis builds every array in memory.
_MAX_DIM = 1024
#: Largest number of elements of one drawn array (the product of the largest batch, steps and features).
_MAX_ELEMENTS = 2**20
#: Largest length :func:`lengths` draws (its values are int64).
_MAX_INT64 = int(np.iinfo(np.int64).max)


def _check_int(value: object, name: str, low: int, high: int = _MAX_DIM) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{name}={value!r} must be an int")
    if value < low:
        raise InvalidArgument(f"{name}={value!r} must be >= {low}")
    if value > high:
        raise InvalidArgument(f"{name}={value!r} must be <= {high} (the drawn arrays are built in memory)"
                              if high == _MAX_DIM else f"{name}={value!r} must be <= {high}")
    return int(value)


def _check_elements(**sizes: int) -> None:
    """The largest array a strategy can draw must fit: refuse bounds whose product is too large."""
    total = math.prod(sizes.values())
    if total > _MAX_ELEMENTS:
        bounds = " x ".join(f"{k}={v}" for k, v in sizes.items())
        raise InvalidArgument(
            f"{bounds} allows arrays of {total} elements, more than {_MAX_ELEMENTS} (hypothesis builds each drawn "
            "array in memory): lower one of the bounds"
        )


def _check_interval(
    lo: object, hi: object, lo_name: str, hi_name: str, low: int, high: int = _MAX_DIM
) -> tuple[int, int]:
    a = _check_int(lo, lo_name, low, high)
    b = _check_int(hi, hi_name, low, high)
    if a > b:
        raise InvalidArgument(f"{lo_name}={a} must be <= {hi_name}={b}")
    return a, b


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be True or False")
    return value


def _check_choices(value: object, name: str, allowed: tuple[str, ...], why: str = "") -> tuple[str, ...]:
    """``value``, one of ``allowed`` or a non-empty sequence of them, in ``allowed``'s order.

    The simplest-first order of ``allowed`` is kept whatever order the caller gave, so
    shrinking is the same.
    """
    chosen = (value,) if isinstance(value, str) else value
    if (
        not isinstance(chosen, Sequence)
        or not chosen
        or any(not isinstance(c, str) or c not in allowed for c in chosen)
    ):
        raise InvalidArgument(f"{name}={value!r} must be one of {allowed} or a non-empty sequence of them{why}")
    return tuple(c for c in allowed if c in chosen)


def _check_paddings(padding: object) -> tuple[str, ...]:
    return _check_choices(padding, "padding", PADDINGS)


def _check_dtype(dtype: Any) -> str:
    name: object = dtype
    if not isinstance(dtype, str):
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    if name not in _DTYPES:
        raise InvalidArgument(f"dtype={dtype!r} must be one of {_DTYPES} (bfloat16 is stored as float32)")
    return str(name)


# -- lengths and masks -------------------------------------------------------------------------


def lengths(
    *, min_batch: int = 1, max_batch: int = 4, min_length: int = 0, max_length: int = 6
) -> st.SearchStrategy[npt.NDArray[np.int64]]:
    r"""Sequence lengths: a 1-D int64 array of ``B`` values in ``[min_length, max_length]``.

    ``B`` is drawn from ``[min_batch, max_batch]`` (at most 1024) and each length is at
    most the int64 maximum; bounds are checked when the strategy is made. Shrinks towards ``min_batch``
    sequences of ``min_length`` steps. Use with :func:`maskloss.mask_from_lengths`.

    Examples
    --------
    >>> import maskloss
    >>> from hypothesis import given
    >>> from maskloss.strategies import lengths
    >>> @given(lengths(max_batch=3, min_length=1, max_length=4))
    ... def test(lens):
    ...     mask = maskloss.mask_from_lengths(lens, 4)
    ...     assert mask.shape[0] <= 3 and mask[:, 0].all()
    >>> test()
    >>> lengths(min_length=5, max_length=2)
    Traceback (most recent call last):
    ...
    hypothesis.errors.InvalidArgument: min_length=5 must be <= max_length=2
    """
    b_lo, b_hi = _check_interval(min_batch, max_batch, "min_batch", "max_batch", 1)
    l_lo, l_hi = _check_interval(min_length, max_length, "min_length", "max_length", 0, _MAX_INT64)
    return _lengths(st.integers(b_lo, b_hi), st.integers(l_lo, l_hi))


@st.composite
def _lengths(draw: Any, batches: Any, elements: Any) -> npt.NDArray[np.int64]:
    return draw(hnp.arrays(np.int64, (draw(batches),), elements=elements))  # type: ignore[no-any-return]


def masks(
    *,
    shape: tuple[int, int] | None = None,
    min_batch: int = 1,
    max_batch: int = 4,
    min_steps: int = 1,
    max_steps: int = 6,
    padding: str | Sequence[str] = PADDINGS,
    allow_empty_rows: bool = True,
) -> st.SearchStrategy[npt.NDArray[np.bool_]]:
    r"""Boolean ``(B, T)`` masks, True at valid steps.

    Parameters
    ----------
    shape : (int, int), optional
        A fixed ``(B, T)``; otherwise ``B`` in ``[min_batch, max_batch]`` and ``T`` in
        ``[min_steps, max_steps]``.
    padding : str or sequence of str, default ("right", "left", "arbitrary")
        Styles to draw from: ``"right"`` (a valid prefix per row, ``tf.sequence_mask``),
        ``"left"`` (a valid suffix, decoder-only generation) or ``"arbitrary"`` (any
        pattern, holes included).
    allow_empty_rows : bool, default True
        Whether a sequence may have no valid step (so the whole batch may be masked).

    Shrinks towards the fewest sequences and steps, right padding, and no padded step
    at all: a counterexample keeps only the padding it needs.

    Examples
    --------
    >>> import numpy as np
    >>> from hypothesis import given
    >>> from maskloss.strategies import masks
    >>> @given(masks(padding="left", allow_empty_rows=False))
    ... def test(m):
    ...     assert m[:, -1].all()     # left padding: the last step is always valid
    >>> test()
    >>> masks(padding="middle")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hypothesis.errors.InvalidArgument: padding='middle' must be one of ('right', 'left', 'arbitrary') or...
    """
    styles = _check_paddings(padding)
    empty_ok = _check_bool(allow_empty_rows, "allow_empty_rows")
    shapes = _shapes(shape, min_batch, max_batch, min_steps, max_steps)
    return _masks(shapes, st.sampled_from(styles), empty_ok)


@st.composite
def _masks(draw: Any, shapes: Any, styles: Any, empty_ok: bool) -> npt.NDArray[np.bool_]:
    shape = draw(shapes)
    return draw(_mask_of(shape, draw(styles), empty_ok))  # type: ignore[no-any-return]


def _shapes(
    shape: tuple[int, int] | None, min_batch: int, max_batch: int, min_steps: int, max_steps: int, features: int = 1
) -> st.SearchStrategy[tuple[int, int]]:
    if shape is not None:
        if not (isinstance(shape, tuple) and len(shape) == 2):
            raise InvalidArgument(f"shape={shape!r} must be a (batch, steps) tuple")
        b = _check_int(shape[0], "shape[0]", 1)
        t = _check_int(shape[1], "shape[1]", 1)
        _check_elements(batch=b, steps=t, features=features)
        return st.just((b, t))
    b_lo, b_hi = _check_interval(min_batch, max_batch, "min_batch", "max_batch", 1)
    t_lo, t_hi = _check_interval(min_steps, max_steps, "min_steps", "max_steps", 1)
    _check_elements(max_batch=b_hi, max_steps=t_hi, max_features=features)
    return st.tuples(st.integers(b_lo, b_hi), st.integers(t_lo, t_hi))


def _mask_of(shape: tuple[int, int], style: str, empty_ok: bool) -> st.SearchStrategy[npt.NDArray[np.bool_]]:
    batch, steps = shape
    if style == "arbitrary":
        # Draw the *padding* pattern so that it shrinks to False: no padded step.
        def from_padding(pad: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
            mask = ~pad
            if not empty_ok:
                mask[~mask.any(axis=1), 0] = True
            return mask

        return hnp.arrays(np.bool_, shape, elements=st.booleans()).map(from_padding)
    # Contiguous padding: draw the number of padded steps per row (shrinks to 0).
    most = steps if empty_ok else steps - 1
    side: Side = "right" if style == "right" else "left"
    return hnp.arrays(np.int64, (batch,), elements=st.integers(0, most)).map(
        lambda pad: mask_from_lengths(steps - pad, steps, side=side)
    )


# -- whole batches -------------------------------------------------------------------------------


def round_to_bfloat16(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    r"""Round to the nearest bfloat16 value (ties to even), stored as float32.

    bfloat16 keeps the top 16 bits of a float32; NumPy has no bfloat16 dtype, so
    bfloat16 batches carry float32 arrays whose values are all bfloat16-representable.

    Examples
    --------
    >>> from maskloss.strategies import round_to_bfloat16
    >>> round_to_bfloat16([1.0, 1.00390625, 1.01171875, 3.0e38]).tolist()  # ties to even; max is 3.39e38
    [1.0, 1.0, 1.015625, 3.00405527047391e+38]
    """
    a = np.array(x, dtype=np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32)
    out = rounded.view(np.float32)
    return np.where(np.isnan(a), a, out)


_WIDTHS: dict[str, Literal[16, 32, 64]] = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 32}
_STORAGE: dict[str, Any] = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": np.float32,
}


def _float_width(dtype: str) -> Literal[16, 32, 64]:
    return _WIDTHS[dtype]


def _storage(dtype: str) -> Any:
    return _STORAGE[dtype]


def _huge(dtype: str) -> float:
    # The largest finite value of the dtype: "huge but finite" junk at padded steps.
    return BFLOAT16_MAX if dtype == "bfloat16" else float(np.finfo(_storage(dtype)).max)


def _floats(
    dtype: str, shape: tuple[int, ...], bound: float, low: float | None = None
) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    width = _float_width(dtype)
    elements = st.floats(
        -bound if low is None else low,
        bound,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
        width=width,
    )
    arr = hnp.arrays(_storage(dtype), shape, elements=elements)
    return arr.map(round_to_bfloat16) if dtype == "bfloat16" else arr


def _softmax(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(z / z.sum(axis=-1, keepdims=True))


def _sigmoid(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def padded_batches(
    kind: str = "regression",
    *,
    min_batch: int = 1,
    max_batch: int = 4,
    min_steps: int = 1,
    max_steps: int = 6,
    min_features: int | None = None,
    max_features: int | None = None,
    padding: str | Sequence[str] = PADDINGS,
    allow_empty_rows: bool = True,
    adversarial: bool = False,
    from_logits: bool = True,
    ignore_index: int | None = None,
    weights: bool = False,
    dtype: Any = "float64",
    max_magnitude: float = 8.0,
) -> st.SearchStrategy[PaddedBatch]:
    r"""Whole loss inputs ``(y_true, y_pred, mask, lengths, ...)`` that agree with each other.

    Parameters
    ----------
    kind : {"regression", "binary", "dense", "sparse"}
        ``"regression"`` for :func:`maskloss.mae`/:func:`maskloss.mse` (targets and
        predictions in ``[-max_magnitude, max_magnitude]``), ``"binary"`` for
        :func:`maskloss.binary_crossentropy` (targets in ``[0, 1]``), ``"dense"`` for
        :func:`maskloss.categorical_crossentropy` (one-hot or soft targets summing to
        1) and ``"sparse"`` for :func:`maskloss.sparse_categorical_crossentropy` (int64
        labels).
    min_batch, max_batch, min_steps, max_steps : int
        Bounds on ``B`` and ``T`` (both in ``[1, 1024]``; the largest array, ``max_batch x
        max_steps x max_features``, at most ``2**20`` elements: checked when the strategy is made).
    min_features, max_features : int, optional
        Bounds on the last axis: features (default 1..3) or classes (default 2..5).
    padding, allow_empty_rows
        As in :func:`masks`.
    adversarial : bool, default False
        Fill the padded steps with junk a correct loss must never read: NaN, +-inf and the
        dtype's largest finite values in ``y_pred`` (and in float targets), out-of-range
        labels (``C``, ``-1``, ``10**6``; ``ignore_index`` when given), and NaN or
        negative per-step weights. Without it, padded steps hold ordinary drawn values.
    from_logits : bool, default True
        Logits in ``[-max_magnitude, max_magnitude]``, or (False) their softmax
        (sigmoid for ``"binary"``): probabilities.
    ignore_index : int, optional
        ``"sparse"`` only: the label written at every padded step (torch's
        ``ignore_index``, HF's -100), so a loss that reads only the labels sees the same
        padding as the mask.
    weights : bool, default False
        Sometimes draw a ``sample_weight`` of shape ``(B,)`` or ``(B, T)`` in ``[0, 3]``
        (shrinks to no weight, then to weights of 1).
    dtype : {"float64", "float32", "float16", "bfloat16"} or numpy dtype
        dtype of ``y_pred`` and float targets; ``"bfloat16"`` gives float32 arrays holding
        bfloat16 values (see :func:`round_to_bfloat16`). Probabilities are computed in
        float64 and then rounded.

    Returns
    -------
    SearchStrategy of :class:`PaddedBatch`

    Shrinks towards one short, right-padded sequence with no padded step, the fewest
    features or classes, zero targets/labels, zero predictions, no weight, and NaN as
    the junk.

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> import numpy as np
    >>> from maskloss.strategies import padded_batches
    >>> @settings(max_examples=20)
    ... @given(padded_batches("sparse", ignore_index=-100, adversarial=True))
    ... def test(batch):
    ...     assert (batch.y_true[~batch.mask] == -100).all()
    ...     assert np.array_equal(batch.lengths, batch.mask.sum(axis=1))
    >>> test()
    >>> padded_batches("ragged")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hypothesis.errors.InvalidArgument: kind='ragged' must be one of ('regression', 'binary', 'dense', ...)
    """
    if kind not in KINDS:
        raise InvalidArgument(f"kind={kind!r} must be one of {KINDS}")
    classes = kind in ("dense", "sparse")
    f_lo = (2 if classes else 1) if min_features is None else min_features
    f_hi = max(f_lo, 5 if classes else 3) if max_features is None else max_features
    f_lo, f_hi = _check_interval(f_lo, f_hi, "min_features", "max_features", 2 if classes else 1)
    shapes = _shapes(None, min_batch, max_batch, min_steps, max_steps, f_hi)
    styles = _check_paddings(padding)
    empty_ok = _check_bool(allow_empty_rows, "allow_empty_rows")
    adv = _check_bool(adversarial, "adversarial")
    logits = _check_bool(from_logits, "from_logits")
    weighted = _check_bool(weights, "weights")
    if ignore_index is not None:
        if kind != "sparse":
            raise InvalidArgument(
                f"ignore_index={ignore_index!r} applies only to kind='sparse', not {kind!r}"
            )
        _check_int(ignore_index, "ignore_index", -(2**62), 2**62)
    dt = _check_dtype(dtype)
    magnitude: object = max_magnitude  # callers are untyped: numpy scalars, strings, ...
    if (
        isinstance(magnitude, (bool, np.bool_))
        or not isinstance(magnitude, numbers.Real)  # numpy scalars included
        or not 0 < max_magnitude < 1e4
        or not math.isfinite(max_magnitude)
    ):
        raise InvalidArgument(f"max_magnitude={max_magnitude!r} must be a number in (0, 1e4)")
    spec = _Spec(kind, dt, adv, logits, ignore_index, weighted, float(max_magnitude), empty_ok)
    return _batch(spec, shapes, st.integers(f_lo, f_hi), st.sampled_from(styles))


class _Spec(NamedTuple):
    kind: str
    dtype: str
    adversarial: bool
    from_logits: bool
    ignore_index: int | None
    weighted: bool
    magnitude: float
    empty_ok: bool


@st.composite
def _batch(draw: Any, spec: _Spec, shapes: Any, widths: Any, styles: Any) -> PaddedBatch:
    batch, steps = draw(shapes)
    width = draw(widths)
    style = draw(styles)
    shape = (batch, steps, width)
    mask = draw(_mask_of((batch, steps), style, spec.empty_ok))
    cast = _storage(spec.dtype)
    pred = draw(_floats("float64" if not spec.from_logits else spec.dtype, shape, spec.magnitude))
    if not spec.from_logits:
        probs = _softmax(pred) if spec.kind in ("dense", "sparse") else _sigmoid(pred)
        pred = probs.astype(cast)
        if spec.dtype == "bfloat16":
            pred = round_to_bfloat16(pred)
    y_true: np.ndarray[Any, Any]
    if spec.kind == "regression":
        y_true = draw(_floats(spec.dtype, shape, spec.magnitude))
    elif spec.kind == "binary":
        y_true = draw(_floats(spec.dtype, shape, 1.0, 0.0))
    else:
        # Valid labels are never the ignore index (mask and labels agree); at least one class remains.
        elements: Any = st.integers(0, width - 1)
        if spec.ignore_index is not None and 0 <= spec.ignore_index < width:
            elements = st.sampled_from([c for c in range(width) if c != spec.ignore_index])
        labels = draw(hnp.arrays(np.int64, (batch, steps), elements=elements))
        if spec.kind == "sparse":
            y_true = labels
        elif draw(st.booleans()):  # soft targets, rows summing to 1
            y_true = _softmax(draw(_floats("float64", shape, 4.0))).astype(cast)
        else:
            y_true = np.eye(width, dtype=cast)[labels]
    weight = None
    if spec.weighted and draw(st.booleans()):
        w_shape = (batch, steps) if draw(st.booleans()) else (batch,)
        # 1 + delta, delta in [-1, 2]: shrinks to weights of exactly 1.
        weight = 1.0 + draw(
            hnp.arrays(np.float64, w_shape, elements=st.floats(-1.0, 2.0, allow_subnormal=False))
        )
    if spec.ignore_index is not None:
        y_true = np.where(mask, y_true, spec.ignore_index)
    if spec.adversarial:
        y_pred_junk = draw(_junk(spec.dtype, shape))
        pred = np.where(mask[..., None], pred, y_pred_junk).astype(pred.dtype)
        if spec.kind == "sparse" and spec.ignore_index is None:
            bad = draw(hnp.arrays(np.int64, (batch, steps), elements=st.sampled_from([width, -1, 10**6])))
            y_true = np.where(mask, y_true, bad)
        elif spec.kind != "sparse":
            y_true = np.where(mask[..., None], y_true, draw(_junk(spec.dtype, shape))).astype(y_true.dtype)
        if weight is not None and weight.ndim == 2:
            weight = np.where(mask, weight, draw(st.sampled_from([np.nan, -1.0])))
    lens = mask.sum(axis=1).astype(np.int64)
    return PaddedBatch(y_true, pred, mask, lens, weight, spec.kind, style)


def _junk(dtype: str, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    huge = _huge(dtype)
    values = [math.nan, math.inf, -math.inf, huge, -huge]
    return hnp.arrays(_storage(dtype), shape, elements=st.sampled_from(values))


# -- packed batches ----------------------------------------------------------------------------


class PackedBatch(NamedTuple):
    """One generated batch of documents, padded and packed (see :func:`packed_batches`).

    Attributes
    ----------
    padded : PaddedBatch
        The documents as a right-padded batch, one document per row (none empty).
    packing : maskloss.Packing
        Where each document lies in the packed rows (:func:`maskloss.pack`).
    y_true, y_pred : ndarray
        The padded batch's arrays moved into the packed rows ``(R, L, ...)``.
    sample_weight : ndarray or None
        Per-step ``(R, L)`` weights, or None.
    segment_ids, position_ids : ndarray of int64, shape (R, L)
        The packing's (``-1`` and 0 at padding).
    """

    padded: PaddedBatch
    packing: Packing
    y_true: np.ndarray[Any, Any]
    y_pred: np.ndarray[Any, Any]
    sample_weight: np.ndarray[Any, Any] | None
    segment_ids: npt.NDArray[np.int64]
    position_ids: npt.NDArray[np.int64]

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        """True at the packed steps that hold a token."""
        return self.segment_ids >= 0


def packed_batches(
    kind: str = "regression",
    *,
    min_documents: int = 1,
    max_documents: int = 5,
    max_document_length: int = 6,
    order: str | Sequence[str] = ("given", "first_fit"),
    adversarial: bool = False,
    from_logits: bool = True,
    weights: bool = False,
    max_magnitude: float = 8.0,
) -> st.SearchStrategy[PackedBatch]:
    r"""Documents drawn as a padded batch (:func:`padded_batches`) and packed into rows.

    The row length is drawn between the longest document and the total length, so the
    draws include a document filling a row, documents of length 1 and padding at the end of
    a row; it shrinks towards the longest document (one fills its row), ``order="given"``
    and documents of ``1`` step. Bounds are checked when the strategy is made, as in
    :func:`padded_batches` (whose ``kind``, ``adversarial``, ``from_logits``, ``weights`` and
    ``max_magnitude`` these are); ``adversarial`` also fills the padding of the packed rows
    with junk (NaN predictions, label ``-1``).

    Examples
    --------
    >>> import maskloss
    >>> from hypothesis import given
    >>> from maskloss.strategies import packed_batches
    >>> @given(packed_batches("regression", max_documents=3))
    ... def test(batch):
    ...     padded = maskloss.mse(batch.padded.y_true, batch.padded.y_pred, batch.padded.mask,
    ...                           reduction="sequence_mean")
    ...     packed = maskloss.mse(batch.y_true, batch.y_pred, segment_ids=batch.segment_ids,
    ...                           reduction="sequence_mean")
    ...     assert abs(padded - packed) <= 1e-13 * max(1.0, abs(padded))
    >>> test()
    >>> packed_batches(max_documents=0)
    Traceback (most recent call last):
    ...
    hypothesis.errors.InvalidArgument: max_documents=0 must be >= 1
    """
    d_lo, d_hi = _check_interval(min_documents, max_documents, "min_documents", "max_documents", 1)
    longest = _check_int(max_document_length, "max_document_length", 1)
    orders = (order,) if isinstance(order, str) else order
    if not isinstance(orders, Sequence) or not orders or any(o not in ("given", "first_fit") for o in orders):
        raise InvalidArgument(f"order={order!r} must be 'given', 'first_fit' or a non-empty sequence of them")
    junk = _check_bool(adversarial, "adversarial")
    padded = padded_batches(
        kind, min_batch=d_lo, max_batch=d_hi, min_steps=1, max_steps=longest, padding="right",
        allow_empty_rows=False, adversarial=adversarial, from_logits=from_logits, weights=weights,
        max_magnitude=max_magnitude,
    )
    return _packed(padded, st.sampled_from([o for o in ("given", "first_fit") if o in orders]), junk)


@st.composite
def _packed(draw: Any, padded: Any, orders: Any, junk: bool) -> PackedBatch:
    batch: PaddedBatch = draw(padded)
    lens = batch.lengths
    row_length = draw(st.integers(int(lens.max()), int(lens.sum())))
    packing = pack(batch.mask, row_length, order=draw(orders))
    pred_fill: Any = np.nan if junk else 0
    label_fill = -1 if junk else 0
    y_true = packing.pack_array(batch.y_true, label_fill if batch.kind == "sparse" else pred_fill)
    y_pred = packing.pack_array(batch.y_pred, pred_fill)
    weight = None
    if batch.sample_weight is not None:
        w = np.broadcast_to(
            batch.sample_weight.reshape(batch.mask.shape[0], -1), batch.mask.shape
        ).astype(np.float64)
        weight = packing.pack_array(w, np.nan if junk else 0.0)
    return PackedBatch(
        batch, packing, y_true, y_pred, weight, packing.segment_ids, packing.position_ids
    )


# -- LM-head options ---------------------------------------------------------------------------


class HeadOptions(TypedDict):
    """The keyword arguments :func:`head_options` draws: every dict it returns has these keys."""

    z_loss: float
    softcap: float | None
    temperature: float
    shift: int
    label_smoothing: float
    smoothing_rule: str

_HEAD_RULES = ("uniform", "others")


def _check_real(value: object, name: str, *, low: float, strict: bool, high: float = math.inf) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidArgument(f"{name}={value!r} must be a real number")
    v = float(value)
    if not math.isfinite(v) or v < low or (strict and v == low) or v > high:
        bound = f"> {low:g}" if strict else f">= {low:g}"
        upper = f" and <= {high:g}" if math.isfinite(high) else ""
        raise InvalidArgument(f"{name}={value!r} must be a finite number {bound}{upper}")
    return v


def head_options(
    *,
    max_z_loss: float = 1e-2,
    min_softcap: float = 1.0,
    max_softcap: float = 50.0,
    huge_softcap: bool = True,
    min_temperature: float = 0.25,
    max_temperature: float = 4.0,
    max_shift: int = 2,
    max_label_smoothing: float = 0.5,
    smoothing_rules: Sequence[str] = _HEAD_RULES,
) -> st.SearchStrategy[HeadOptions]:
    r"""Keyword arguments of the LM-head options, valid together for the sparse cross-entropy.

    Each draw is a dict with the keys ``z_loss``, ``softcap``, ``temperature``, ``shift``,
    ``label_smoothing`` and ``smoothing_rule``, to pass as
    ``maskloss.sparse_categorical_crossentropy(y_true, logits, mask, from_logits=True, **options)``
    (the head options act on logits, so ``from_logits=True``; they take no ``class_weight``
    when the rule is not ``"uniform"``):

    - ``z_loss``: 0, or a coefficient in ``(0, max_z_loss]``;
    - ``softcap``: ``None``, a cap in ``[min_softcap, max_softcap]``, or (``huge_softcap``)
      :data:`HUGE_SOFTCAP`, a cap so large that it changes no logit a strategy draws;
    - ``temperature``: 1, or a temperature in ``[min_temperature, max_temperature]``;
    - ``shift``: the causal shift, an int in ``[0, max_shift]``;
    - ``label_smoothing``: 0, or a value in ``(0, max_label_smoothing]``, and
      ``smoothing_rule``: ``"uniform"`` without smoothing, else one of ``smoothing_rules``
      (``"uniform"``, ``"others"``; ``"others_except_pad"`` needs ``ignore_index=`` to be a class
      of each batch, which a batch-independent strategy cannot promise, so it is refused).

    Bounds are checked when the strategy is made (an ``InvalidArgument``). Shrinks towards
    every option at its default, the dict on which the loss is the plain cross-entropy.

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> from hypothesis import given, settings
    >>> from maskloss.strategies import head_options, padded_batches
    >>> @settings(max_examples=20)
    ... @given(padded_batches("sparse", adversarial=True), head_options())
    ... def test(batch, options):
    ...     loss = maskloss.sparse_categorical_crossentropy(
    ...         batch.y_true, batch.y_pred, batch.mask, from_logits=True, **options)
    ...     assert np.isnan(loss) or loss >= 0
    >>> test()
    >>> head_options(min_softcap=0.0)
    Traceback (most recent call last):
    ...
    hypothesis.errors.InvalidArgument: min_softcap=0.0 must be a finite number > 0
    """
    z_hi = _check_real(max_z_loss, "max_z_loss", low=0.0, strict=False)
    c_lo = _check_real(min_softcap, "min_softcap", low=0.0, strict=True)
    c_hi = _check_real(max_softcap, "max_softcap", low=0.0, strict=True)
    if c_lo > c_hi:
        raise InvalidArgument(f"min_softcap={min_softcap!r} must be <= max_softcap={max_softcap!r}")
    huge = _check_bool(huge_softcap, "huge_softcap")
    t_lo = _check_real(min_temperature, "min_temperature", low=0.0, strict=True)
    t_hi = _check_real(max_temperature, "max_temperature", low=0.0, strict=True)
    if t_lo > t_hi:
        raise InvalidArgument(f"min_temperature={min_temperature!r} must be <= max_temperature={max_temperature!r}")
    s_hi = _check_int(max_shift, "max_shift", 0)
    eps_hi = _check_real(max_label_smoothing, "max_label_smoothing", low=0.0, strict=False, high=1.0)
    ordered = _check_choices(
        smoothing_rules, "smoothing_rules", _HEAD_RULES,
        " ('others_except_pad' needs ignore_index= to be a class of each batch: pass it yourself)",
    )

    def optional(default: Any, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(st.just(default), values)  # shrinks to the default

    z = optional(0.0, st.floats(0.0, z_hi, exclude_min=True)) if z_hi > 0 else st.just(0.0)
    caps: list[st.SearchStrategy[Any]] = [st.just(None), st.floats(c_lo, c_hi)]
    if huge:
        caps.append(st.just(HUGE_SOFTCAP))
    temperature = optional(1.0, st.floats(t_lo, t_hi))
    smoothing = optional(0.0, st.floats(0.0, eps_hi, exclude_min=True)) if eps_hi > 0 else st.just(0.0)
    return _head_options(z, st.one_of(*caps), temperature, st.integers(0, s_hi), smoothing,
                         st.sampled_from(ordered))


@st.composite
def _head_options(
    draw: Any, z: Any, caps: Any, temperatures: Any, shifts: Any, smoothings: Any, rules: Any
) -> HeadOptions:
    eps = draw(smoothings)
    return {  # a plain dict, as ** needs
        "z_loss": draw(z),
        "softcap": draw(caps),
        "temperature": draw(temperatures),
        "shift": draw(shifts),
        "label_smoothing": eps,
        "smoothing_rule": draw(rules) if eps > 0 else "uniform",
    }
