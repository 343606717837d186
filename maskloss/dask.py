r"""Masked losses on Dask arrays: datasets larger than memory, exactly.

``import maskloss`` never imports this module (it needs the ``dask`` extra:
``pip install -e ".[dask]"``). :func:`evaluate` computes, block by block, the
per-sequence totals :math:`N_b = \sum_t n_{bt}`, :math:`D_b = \sum_t d_{bt}`,
:math:`S_b` of :class:`maskloss.MaskedTotals` with the loss's own pipeline (the one
:func:`maskloss.masked_totals` runs), adds the time chunks of each sequence into that
sequence's totals, and merges the sequences with a tree reduction
(:func:`dask.array.reduction`) into seven sums

.. math::
    \Big(\sum_b N_b,\ \sum_b D_b,\ \sum_b S_b,\ B,\
    \sum_{b: D_b>0} N_b/D_b,\ K = \#\{b: D_b>0\},\ V\Big)

(:math:`V` the number of valid steps), from which every scalar reduction of
:mod:`maskloss.reductions` is one ratio: ``sum`` :math:`\sum N`, ``token_mean``
:math:`\sum N/\sum D`, ``sequence_mean`` :math:`\frac1K\sum N_b/D_b`, ``batch_mean``
:math:`\sum N/B`, ``element_mean`` :math:`\sum N/\sum S`. Because time chunks merge per
sequence *before* the ratio, ``sequence_mean`` is exact for any chunking.

The same :math:`\sum N`, :math:`\sum D` and :math:`\sum N_b/D_b` are also kept as
pairs :math:`(m, e)`, the sum :math:`m\,2^e` with :math:`|m| < 1` (a sequence whose plain
totals overflow is summed again from its weights scaled by a power of two, exactly), so
that means of huge but representable values (errors of ``1e308``, weights of ``1e300``)
are finite here as they are in memory. A reduction reads a pair only where its plain sum
is not finite: ordinary inputs give the same numbers as the seven sums alone.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    # dask is untyped: its module is Any here, and a dask array is annotated as DaskArray.
    da: Any = importlib.import_module("dask.array")
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'maskloss.dask needs dask: pip install -e ".[dask]" (dask[array], distributed, zarr)'
    ) from exc

from maskloss._checks import as_numeric, check_reduction
from maskloss.losses import sparse_categorical_crossentropy
from maskloss.pipeline import Pipeline
from maskloss.reductions import SCALAR_REDUCTIONS, MaskedTotals, Reduction, ScalarReduction
from maskloss.registry import pipeline_of, pipeline_transform

#: A dask array (dask ships no type information).
DaskArray = Any

__all__ = ["COUNT_NAMES", "Summary", "evaluate", "from_file", "summary_stats"]

#: The counts behind the values, in the order of :meth:`Summary.counts`.
COUNT_NAMES: tuple[str, ...] = ("valid_steps", "weight", "sequences", "nonempty_sequences", "steps")

_N_TOTALS = 8  # N, D, S, V per sequence, then N and D as (mantissa, exponent) pairs
_TOTALS_PAIRS = (4, 6)  # the mantissa columns of the pairs (their exponents follow)
_N_PLAIN_STATS = 7  # sum N, sum D, sum S, B, sum N/D over nonempty, K, V
_N_STATS = 13  # ... then sum N, sum D and sum N/D as (mantissa, exponent) pairs
_STATS_PAIRS = (7, 9, 11)
#: Weights scaled into [1/2, 1) are scaled by 2**-_HEADROOM more: terms up to 2**1024 then sum
#: without overflow for up to 2**64 of them.
_HEADROOM = 64
#: The exponent a zero mantissa carries (below any float64's), so that it never sets the scale of a sum.
_ZERO_EXPONENT = -(2.0**20)
#: The smallest normal float64: a plain sum below it may have lost bits to underflow.
_TINY = float(np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class Summary:
    r"""The seven sums behind every scalar reduction of a (possibly out-of-core) batch.

    Attributes
    ----------
    numerator, denominator, steps : float
        :math:`\sum_b N_b`, :math:`\sum_b D_b`, :math:`\sum_b S_b`.
    sequences : int
        :math:`B`.
    sequence_ratios : float
        :math:`\sum_{b: D_b > 0} N_b / D_b`.
    nonempty_sequences : int
        :math:`K`, the sequences with :math:`D_b > 0`.
    valid_steps : int
        Steps that count (mask, and ``!= ignore_index`` for integer labels).
    scaled : tuple of three (float, float) pairs, optional
        :math:`\sum_b N_b`, :math:`\sum_b D_b` and :math:`\sum_{b: D_b > 0} N_b / D_b` as
        :math:`(m, e)`, the sum :math:`m\,2^e`, summed without overflow (:func:`summary_stats`);
        a value reads one only where the plain sum is not finite. None (seven sums given): the
        plain sums alone.

    Examples
    --------
    >>> s = Summary.from_stats(np.array([19.0, 9.0, 15.0, 3.0, 9.0, 3.0, 9.0]))
    >>> round(float(s.value("token_mean")), 6), float(s.value("sequence_mean"))
    (2.111111, 3.0)
    """

    numerator: float
    denominator: float
    steps: float
    sequences: int
    sequence_ratios: float
    nonempty_sequences: int
    valid_steps: int
    scaled: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None = None

    @classmethod
    def from_stats(cls, stats: npt.ArrayLike) -> Summary:
        """From the length-13 array that :func:`summary_stats` computes (or its first seven sums)."""
        s = np.asarray(stats, dtype=np.float64).ravel()
        if s.size not in (_N_PLAIN_STATS, _N_STATS):
            raise ValueError(f"stats must hold {_N_STATS} sums (or the first {_N_PLAIN_STATS}), got shape "
                             f"{np.shape(stats)}")
        scaled = None
        if s.size == _N_STATS:
            n, d, r = ((float(s[i]), float(s[i + 1])) for i in _STATS_PAIRS)
            scaled = (n, d, r)
        return cls(float(s[0]), float(s[1]), float(s[2]), int(s[3]), float(s[4]), int(s[5]), int(s[6]), scaled)

    def _sum(self, index: int) -> tuple[float, int]:
        r"""Sum ``index`` (0: numerator, 1: denominator, 2: sequence ratios) as ``(m, e)``, the sum
        :math:`m\,2^e`: the plain sum when finite (``e = 0``), else the pair when kept."""
        plain = (self.numerator, self.denominator, self.sequence_ratios)[index]
        if self.scaled is None:
            return plain, 0
        mantissa, exponent = self.scaled[index]
        # The plain sum unless it overflowed, or underflowed (0 or subnormal) where the pair did not.
        if math.isfinite(plain) and (abs(plain) >= _TINY or mantissa == 0):
            return plain, 0
        return (mantissa, int(exponent)) if math.isfinite(mantissa) else (plain, 0)

    def value(self, reduction: ScalarReduction) -> np.float64:
        """The scalar loss under ``reduction`` (NaN for a zero denominator, as in-memory)."""
        check_reduction(reduction, allowed=SCALAR_REDUCTIONS)
        numerator = self._sum(2 if reduction == "sequence_mean" else 0)
        if reduction == "sum":
            with np.errstate(over="ignore"):  # beyond float64 is inf, the true value
                return np.float64(np.ldexp(numerator[0], numerator[1]))
        denominator = {
            "token_mean": self._sum(1),
            "sequence_mean": (float(self.nonempty_sequences), 0),
            "batch_mean": (float(self.sequences), 0),
            "element_mean": (self.steps, 0),
        }[reduction]
        (n, a), (d, b) = numerator, denominator
        if d == 0:
            return np.float64(np.nan)
        with np.errstate(over="ignore", under="ignore"):  # beyond float64 is inf, the true value
            return np.float64(np.ldexp(np.float64(n) / d, a - b))

    def counts(self) -> dict[str, float | int]:
        """The counts behind the values, keyed by :data:`COUNT_NAMES`."""
        return {
            "valid_steps": self.valid_steps,
            "weight": self.denominator,
            "sequences": self.sequences,
            "nonempty_sequences": self.nonempty_sequences,
            "steps": int(self.steps),
        }


def _is_dask(x: Any) -> bool:
    return isinstance(x, da.Array)


def _chunks_text(chunks: tuple[tuple[int, ...], ...]) -> str:
    def axis(c: tuple[int, ...]) -> str:
        return str(c) if len(c) <= 6 else f"({c[0]}, {c[1]}, ... {len(c)} chunks)"

    return "(" + ", ".join(axis(tuple(int(v) for v in c)) for c in chunks) + ")"


def _align(x: Any, name: str, shape: tuple[int, ...], chunks: tuple[tuple[int, ...], ...]) -> DaskArray:
    """``x`` as a dask array of exactly ``shape`` and ``chunks`` (NumPy input is chunked to match)."""
    if not _is_dask(x):
        arr = as_numeric(x, name)  # the shared validation: numpy.ma masks and torch tensors too
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
        return da.from_array(arr, chunks=chunks)
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if tuple(x.chunks) != tuple(chunks):
        raise ValueError(
            f"{name} is chunked {_chunks_text(x.chunks)} but the matching axes of y_pred are chunked "
            f"{_chunks_text(chunks)}; rechunk {name} to match"
        )
    return x


@dataclass(frozen=True)
class _Prepared:
    arrays: list[tuple[DaskArray, str]]  # (array, blockwise index) in the loss's argument order
    names: list[str]
    steps_index: str
    steps_chunks: tuple[tuple[int, ...], ...]
    options: dict[str, Any]


def _prepare(loss: Callable[..., Any], y_true: Any, y_pred: Any, mask: Any, options: dict[str, Any]) -> _Prepared:
    if pipeline_of(loss) is None:
        pipeline_transform(loss, "maskloss.dask.evaluate", Pipeline.totals)  # raises the TypeError
    if "reduction" in options:
        raise TypeError("maskloss.dask.evaluate: pass reduction= once, as the keyword of evaluate")
    params = inspect.signature(loss).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise TypeError(
            f"{loss.__name__} has no option {', '.join(unknown)}; its options are "
            f"{', '.join(p for p in params if p not in ('y_true', 'y_pred', 'mask', 'reduction'))}"
        )
    pred = y_pred if _is_dask(y_pred) else da.from_array(as_numeric(y_pred, "y_pred"))
    if pred.ndim < 2:
        raise ValueError(f"y_pred must have a batch axis and a class/feature axis, got shape {tuple(pred.shape)}")
    if any(np.isnan(c) for axis in pred.chunks for c in axis):
        raise ValueError("y_pred has unknown chunk sizes; call y_pred.compute_chunk_sizes() first")
    if len(pred.chunks[-1]) != 1:
        raise ValueError(
            f"y_pred's class axis (axis {pred.ndim - 1}, size {pred.shape[-1]}) is split into "
            f"{len(pred.chunks[-1])} chunks {pred.chunks[-1]}; it must be one chunk: "
            f"y_pred.rechunk({{{pred.ndim - 1}: -1}})"
        )
    steps_shape = tuple(int(s) for s in pred.shape[:-1])
    steps_chunks = tuple(pred.chunks[:-1])
    if options.get("segment_ids") is not None:
        raise ValueError(
            "maskloss.dask.evaluate does not take segment_ids= (packed documents can span chunks): "
            "unpack the rows first (maskloss.unpack) or evaluate the packed batch in memory"
        )
    shift = options.get("shift", 0)
    split = [i + 1 for i, c in enumerate(steps_chunks[1:]) if len(c) > 1]
    if shift and not isinstance(shift, bool) and split:
        # each block would shift inside itself: the steps across every chunk boundary would be lost
        raise ValueError(
            f"shift={shift!r} pairs a label with a prediction {shift!r} steps earlier, across chunk boundaries, but "
            f"y_pred's step axis {split[0]} is split into {len(steps_chunks[split[0]])} chunks "
            f"{_chunks_text((steps_chunks[split[0]],))[1:-1]}; keep each sequence in one chunk: "
            f"y_pred.rechunk({{{split[0]}: -1}})"
        )
    letters = string.ascii_lowercase[: pred.ndim]
    steps_index = letters[:-1]
    if loss is sparse_categorical_crossentropy:
        true_shape = tuple(int(n) for n in np.shape(y_true))
        if true_shape != steps_shape:  # as the in-memory loss says it: y_pred may lack the class axis
            raise ValueError(
                f"y_pred must have shape y_true.shape + (classes,); got y_true {true_shape} and y_pred "
                f"{tuple(int(n) for n in pred.shape)}"
            )
        true = _align(y_true, "y_true", steps_shape, steps_chunks)
        true_index = steps_index
    else:
        true = _align(y_true, "y_true", tuple(int(s) for s in pred.shape), tuple(pred.chunks))
        true_index = letters
    arrays = [(true, true_index), (pred, letters)]
    names = ["y_true", "y_pred"]
    if mask is not None:
        arrays.append((_align(mask, "mask", steps_shape, steps_chunks), steps_index))
        names.append("mask")
    opts = dict(options)
    weight = opts.pop("sample_weight", None)
    if weight is not None and (_is_dask(weight) or np.ndim(weight) > 0):
        if not _is_dask(weight) and np.ndim(weight) == 1 and np.shape(weight)[0] == steps_shape[0]:
            weight = np.broadcast_to(np.reshape(weight, (-1,) + (1,) * (len(steps_shape) - 1)), steps_shape)
        arrays.append((_align(weight, "sample_weight", steps_shape, steps_chunks), steps_index))
        names.append("sample_weight")
    elif weight is not None:
        opts["sample_weight"] = weight
    _probe(loss, [a for a, _ in arrays], names, opts)
    return _Prepared(arrays, names, steps_index, steps_chunks, opts)


def _probe(loss: Callable[..., Any], arrays: list[DaskArray], names: list[str], options: dict[str, Any]) -> None:
    """Validate the options now (not at compute time) on one fully masked step of the inputs' dtypes."""
    kwargs = dict(options)
    steps = (1,) * (arrays[1].ndim - 1)
    for arr, name in zip(arrays, names, strict=True):
        shape = steps + (arr.shape[-1],) if arr.ndim == arrays[1].ndim else steps
        kwargs[name] = np.zeros(shape, dtype=arr.dtype)
    kwargs["mask"] = np.zeros(steps, dtype=bool)
    pipeline_of(loss)(**kwargs).totals()  # type: ignore[misc]


def _block_totals(loss: Callable[..., Any], names: list[str], options: dict[str, Any], *blocks: Any) -> Any:
    """One block's per-sequence (N, D, S, V), shape ``(b, 1, ..., 1, 4)``."""
    kwargs = dict(zip(names, blocks, strict=True))
    pipeline = pipeline_of(loss)(**kwargs, **options)  # type: ignore[misc]
    with np.errstate(over="ignore"):  # sums beyond float64 are redone scaled below
        totals: MaskedTotals = pipeline.totals()
    n, d = totals.true_numerator, totals.true_denominator
    n_pair, d_pair = _pair(totals.numerator, totals.exponent), _pair(totals.denominator, totals.exponent)
    plain = np.isfinite(totals.numerator) & np.isfinite(totals.denominator)
    if not plain.all():  # those sequences again, weights times 2**-e-headroom (exact): finite where the true sums are
        with np.errstate(over="ignore"):  # a term beyond float64 (an infinite loss) stays inf
            scaled = pipeline.totals(headroom=_HEADROOM)
        for pair, total in ((n_pair, scaled.numerator), (d_pair, scaled.denominator)):
            m, e = _pair(total, scaled.exponent)
            pair[0][~plain], pair[1][~plain] = m[~plain], e[~plain]
    batch, per_sequence = pipeline.valid.shape[0], math.prod(pipeline.valid.shape[1:])
    valid = pipeline.valid.reshape(batch, per_sequence).sum(axis=1).astype(np.float64)  # B = 0 is a shape too
    out = np.stack([n, d, totals.steps, valid, *n_pair, *d_pair], axis=-1)
    ndim_steps = pipeline.valid.ndim
    return out.reshape((out.shape[0],) + (1,) * (ndim_steps - 1) + (_N_TOTALS,))


def _pair(x: Any, exponent: Any = 0) -> tuple[Any, Any]:
    r"""``x 2^exponent`` as float64 arrays ``(m, e)`` with :math:`|m| \in [1/2, 1)` (``np.frexp``),
    exactly; a zero mantissa carries :data:`_ZERO_EXPONENT`, a non-finite one exponent 0."""
    m, e = np.frexp(np.asarray(x, dtype=np.float64))
    e = e.astype(np.float64) + exponent
    return m, np.where(m == 0, _ZERO_EXPONENT, np.where(np.isfinite(m), e, 0.0))


def _pair_sum(m: Any, e: Any, axis: Any, keepdims: bool) -> tuple[Any, Any]:
    """The sums over ``axis`` of ``m 2^e`` as pairs: every term aligned to the largest exponent
    (each then at most 1 in magnitude, so the sum cannot overflow), renormalised."""
    top = np.max(e, axis=axis, keepdims=True, initial=_ZERO_EXPONENT)
    with np.errstate(under="ignore", invalid="ignore"):
        total = np.sum(np.ldexp(m, (e - top).astype(np.int64)), axis=axis, keepdims=True)
    mantissa, exponent = _pair(total, top)
    if not keepdims:
        mantissa, exponent = np.squeeze(mantissa, axis=axis), np.squeeze(exponent, axis=axis)
    return mantissa, exponent


def _merger(pairs: tuple[int, ...]) -> Callable[..., Any]:
    """The chunk/combine/aggregate function of a reduction over columns (the last axis) that are
    plain sums, except the (mantissa, exponent) pairs at the columns ``pairs`` and ``pairs + 1``.
    Overflow warnings are silenced: a plain sum beyond float64 is inf, and the pairs stand in for
    it (in a task's thread, the caller's ``np.errstate`` does not apply)."""

    def merge(x: Any, axis: Any = None, keepdims: bool = False, **kwargs: Any) -> Any:
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.sum(x, axis=axis, keepdims=keepdims)
        for i in pairs:
            out[..., i], out[..., i + 1] = _pair_sum(x[..., i], x[..., i + 1], axis, keepdims)
        return out

    return merge


def _sequence_stats(seq: Any) -> Any:
    """Per-sequence contributions to the thirteen sums, from ``(b, 8)`` totals."""
    n, d, s, v, nm, ne, dm, de = (seq[:, i] for i in range(_N_TOTALS))
    nonempty = (d > 0) | (dm > 0)  # dm > 0 also where the plain sum of tiny weights underflowed to 0
    plain = d >= _TINY  # below: a subnormal or 0 plain D_b, N_b/D_b comes from the pairs
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        from_pairs = np.ldexp(nm / np.where(dm != 0, dm, 1.0), (ne - de).astype(np.int64))
        ratio = np.where(nonempty, np.where(plain, n / np.where(plain, d, 1.0), from_pairs), 0.0)
        # N_b/D_b from the pairs: |nm/dm| < 2, so only its exponent can be out of range.
        rm, re = _pair(np.where(nonempty & (dm != 0), nm / np.where(dm != 0, dm, 1.0), 0.0), ne - de)
    return np.stack([n, d, s, np.ones_like(n), ratio, nonempty.astype(np.float64), v, nm, ne, dm, de, rm, re],
                    axis=-1)


def summary_stats(
    loss: Callable[..., Any], y_true: Any, y_pred: Any, mask: Any = None, *, split_every: int | None = None,
    **options: Any,
) -> DaskArray:
    r"""The sums of :class:`Summary` as a lazy float64 dask array of shape (13,).

    The seven sums of the module docstring, then :math:`\sum N`, :math:`\sum D` and
    :math:`\sum N_b/D_b` as (mantissa, exponent) pairs (read only where a plain sum overflows).
    Arguments as in :func:`evaluate`. ``Summary.from_stats(summary_stats(...).compute())``
    gives every scalar reduction and the counts from one pass over the data.
    """
    prep = _prepare(loss, y_true, y_pred, mask, options)
    out_index = prep.steps_index + "k"
    args: list[Any] = []
    for arr, index in prep.arrays:
        args += [arr, index]
    adjust = {letter: 1 for letter in prep.steps_index[1:]}
    block_totals = _blockwise_totals(loss, prep, args, out_index, adjust)
    steps_ndim = len(prep.steps_index)
    per_sequence = block_totals
    if steps_ndim > 1:
        merge_totals = _merger(_TOTALS_PAIRS)
        per_sequence = da.reduction(block_totals, chunk=merge_totals, aggregate=merge_totals, combine=merge_totals,
                                    axis=tuple(range(1, steps_ndim)), dtype=np.float64, concatenate=True)
    contributions = per_sequence.map_blocks(_sequence_stats, chunks=(per_sequence.chunks[0], (_N_STATS,)),
                                            dtype=np.float64)
    merge_stats = _merger(_STATS_PAIRS)
    return da.reduction(
        contributions, chunk=merge_stats, aggregate=merge_stats, combine=merge_stats, axis=0, dtype=np.float64,
        split_every=split_every, concatenate=True,
    )


def _blockwise_totals(loss: Callable[..., Any], prep: _Prepared, args: list[Any], out_index: str,
                      adjust: dict[str, int]) -> DaskArray:
    def fn(*blocks: Any) -> Any:
        return _block_totals(loss, prep.names, prep.options, *blocks)

    return da.blockwise(
        fn, out_index, *args, new_axes={"k": _N_TOTALS}, adjust_chunks=adjust, concatenate=True,
        dtype=np.float64, meta=np.empty((0,) * len(out_index), dtype=np.float64),
    )


def evaluate(
    loss: Callable[..., Any], y_true: Any, y_pred: Any, mask: Any = None, *, reduction: Reduction = "token_mean",
    **options: Any,
) -> DaskArray:
    r"""The masked loss of dask arrays, lazily: a 0-d dask array (a blockwise one for ``"none"``).

    Parameters
    ----------
    loss : callable
        One of maskloss's losses, e.g. :func:`maskloss.sparse_categorical_crossentropy`.
    y_true, y_pred, mask : dask arrays (or NumPy arrays, chunked like ``y_pred``)
        As for ``loss``; chunked along the batch and time axes, the class axis of
        ``y_pred`` in one chunk. ``y_true``, ``mask`` and a per-step ``sample_weight``
        must be chunked exactly like the steps of ``y_pred``.
    reduction : str, default "token_mean"
        One of :data:`maskloss.REDUCTIONS`.
    **options
        The loss's options (``from_logits``, ``ignore_index``, ``label_smoothing``,
        ``class_weight``, ``sample_weight``, ...), validated now. ``shift`` needs every
        sequence in one chunk along the step axes; ``segment_ids`` is refused (packed
        documents can span chunks).

    Returns
    -------
    dask.array.Array
        0-d float64 for a scalar reduction, equal to the in-memory loss to rounding
        (``1e-12`` relative); for ``"none"``, the per-step losses, chunked like the steps.

    Examples
    --------
    >>> import dask, dask.array as da, numpy as np, maskloss, maskloss.dask
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(4, 6, 5)); labels = rng.integers(0, 5, size=(4, 6))
    >>> mask = maskloss.mask_from_lengths([6, 3, 0, 1], 6)
    >>> lazy = maskloss.dask.evaluate(
    ...     maskloss.sparse_categorical_crossentropy, da.from_array(labels, chunks=(2, 3)),
    ...     da.from_array(logits, chunks=(2, 3, 5)), da.from_array(mask, chunks=(2, 3)),
    ...     reduction="sequence_mean", from_logits=True)
    >>> with dask.config.set(scheduler="threads"):
    ...     value = lazy.compute()
    >>> full = maskloss.sparse_categorical_crossentropy(labels, logits, mask, reduction="sequence_mean",
    ...                                                 from_logits=True)
    >>> bool(abs(value - full) <= 1e-12 * abs(full))
    True
    """
    check_reduction(reduction)
    if reduction != "none":
        stats = summary_stats(loss, y_true, y_pred, mask, **options)

        def pick(s: Any) -> Any:
            return np.asarray(Summary.from_stats(s).value(reduction))

        return stats.map_blocks(pick, drop_axis=0, dtype=np.float64, meta=np.empty((), dtype=np.float64))
    prep = _prepare(loss, y_true, y_pred, mask, options)
    args: list[Any] = []
    for arr, index in prep.arrays:
        args += [arr, index]

    def fn(*blocks: Any) -> Any:
        kwargs = dict(zip(prep.names, blocks, strict=True))
        return pipeline_of(loss)(**kwargs, **prep.options, reduction="none").value()  # type: ignore[misc]

    shift = int(prep.options.get("shift", 0) or 0)
    # with a shift (each sequence in one chunk, checked above) a row has T - shift values
    adjust = {prep.steps_index[-1]: (lambda n: max(n - shift, 0))} if shift and len(prep.steps_index) > 1 else None
    return da.blockwise(fn, prep.steps_index, *args, concatenate=True, dtype=np.float64, adjust_chunks=adjust,
                        meta=np.empty((0,) * len(prep.steps_index), dtype=np.float64))


def _check_npy_size(path: str) -> None:
    """A ``.npy`` file whose header claims more data than the file holds is refused, saying so."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read_header(fh)
        except (ValueError, OSError, EOFError):
            return  # not a header numpy reads: np.load says why
        held = os.fstat(fh.fileno()).st_size - fh.tell()
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > held:
        raise ValueError(
            f"{path!r}: its header claims shape {shape} of {dtype}, {claimed} bytes ({claimed / 2**30:.3g} GiB), "
            f"but the file holds only {held} bytes of data (truncated or corrupt)"
        )


class _NpyBlocks:
    """A ``.npy`` file that each task memory-maps itself (only the path is pickled)."""

    def __init__(self, path: str) -> None:
        self.path = path
        _check_npy_size(path)
        mm = np.load(path, mmap_mode="r")
        self.shape, self.dtype, self.ndim = mm.shape, mm.dtype, mm.ndim

    def __getitem__(self, key: Any) -> Any:
        return np.array(np.load(self.path, mmap_mode="r")[key])


def from_file(path: str | os.PathLike[str], *, key: str | None = None, chunks: Any = "auto") -> DaskArray:
    """A lazy dask array of a ``.npy`` file (memory-mapped), a ``.npz`` member or a zarr store.

    ``key`` selects the ``.npz`` member or the zarr array inside a group (not needed when
    there is only one). ``.npz`` members are compressed archives that cannot be memory-
    mapped: each is read whole, so use ``.npy`` or zarr for data larger than memory.
    ``chunks`` is passed to dask (zarr stores keep their own chunks unless given).

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, maskloss.dask
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     np.save(pathlib.Path(tmp) / "x.npy", np.arange(6.0).reshape(2, 3))
    ...     x = maskloss.dask.from_file(pathlib.Path(tmp) / "x.npy", chunks=(1, 3))
    ...     print(x.chunks, float(x.sum().compute()))
    ((1, 1), (3,)) 15.0
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no such file or directory: {p!r}")
    try:
        if os.path.isdir(p) or p.endswith(".zarr"):
            import zarr

            node = zarr.open(p, mode="r")
            if isinstance(node, zarr.Group):
                names = sorted(name for name, _ in node.arrays())
                if key is None and len(names) != 1:
                    raise ValueError(f"{p!r} is a zarr group with arrays {names}; pass key= to pick one")
                node = node[key if key is not None else names[0]]
            return da.from_zarr(node, chunks=None if chunks == "auto" else chunks)
        if p.endswith(".npz"):
            with np.load(p, allow_pickle=False) as archive:
                names = list(archive.files)
                if key is None and len(names) != 1:
                    raise ValueError(f"{p!r} holds arrays {names}; pass key= to pick one")
                name = key if key is not None else names[0]
                if name not in names:
                    raise ValueError(f"{p!r} has no array {name!r}; it holds {names}")
                return da.from_array(archive[name], chunks=chunks)
        return da.from_array(_NpyBlocks(p), chunks=chunks, asarray=True)
    except (ValueError, OSError, EOFError, KeyError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(repr(p)):
            raise
        raise ValueError(f"cannot read {p!r} as a .npy, .npz or zarr array: {exc}") from exc
