"""Compaction of valid steps in bounded chunks: the one chunk loop of the package.

Losses are computed on the rows of the valid steps only (never on padding, so
garbage there cannot reach a value or a gradient), a bounded number of elements at
a time, so that a (16, 512, 32000) float32 batch is never promoted to float64 as a
whole. The loop below runs over chunks of rows, not over the batch or time.

:func:`map_rows` splits the valid rows into contiguous ranges, one per thread
(:func:`maskloss.set_num_threads`; NumPy releases the GIL in its loops), and each
thread walks its range chunk by chunk, reusing scratch buffers allocated once per call
(:func:`scratch`). Every row's result lands in its own slot, and nothing is summed
across rows here, so results are bit for bit the same for any thread count or chunk size.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from maskloss import _threads
from maskloss._types import BoolArray, FloatArray, IntArray

#: Elements (rows x classes) promoted to float64 at once, per array: 2 MiB each. Measured on
#: sparse CE of (8192, 32000) float32 logits (2 threads, scratch buffers, minimum of 3):
#: 1 << 16 gave forward 0.41 s / value_and_grad 0.72 s, 1 << 18 0.28 s / 0.48 s, 1 << 20
#: 0.34 s / 0.55 s (smaller chunks add Python overhead, larger ones leave the caches).
CHUNK_ELEMENTS = 1 << 18

#: Below this many elements per thread a call runs on the calling thread alone (a
#: thread hand-off costs more than it saves on small batches).
MIN_ELEMENTS_PER_THREAD = 1 << 17

#: ``step(rows, *row_chunks, grad=False)``: per-row results ``(n,)`` or ``(n, k)`` of a
#: chunk, or with ``grad=True`` the pair (results, derivative rows ``(n, C)``).
StepFn = Callable[..., Any]

_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _forget_pool_after_fork() -> None:
    """In a forked child the parent's pool threads do not exist: start from no pool."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX Python >= 3.7
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def valid_rows(valid: BoolArray) -> IntArray:
    """Flat indices of the valid steps."""
    return valid.reshape(-1).nonzero()[0]


def row_chunks(rows: IntArray, width: int) -> Iterator[IntArray]:
    """Split ``rows`` into pieces of at most ``CHUNK_ELEMENTS // width`` rows."""
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    for start in range(0, rows.shape[0], step):
        yield rows[start : start + step]


def as_rows(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """View ``(..., C)`` data as ``(steps, C)`` rows (copies only if not contiguous)."""
    return arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)


def to_float64(chunk: np.ndarray[Any, Any], name: str = "float64") -> FloatArray:
    """A chunk of rows promoted to float64 (into the reused scratch buffer ``name`` in :func:`map_rows`)."""
    if chunk.dtype == np.float64:
        return chunk
    out = scratch(name, chunk.shape, np.float64)
    np.copyto(out, chunk, casting="unsafe")
    return out


def scratch(name: str, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray[Any, Any]:
    """A buffer of ``shape`` for this thread's chunks, allocated once per :func:`map_rows` call.

    The contents are garbage: every user overwrites it (``out=``). Outside
    :func:`map_rows` a fresh array is returned. Each ``name`` is one buffer; a step
    must not hold on to one across chunks.
    """
    buffers: dict[str, np.ndarray[Any, Any]] | None = getattr(_local, "buffers", None)
    size = math.prod(shape)
    if buffers is None:
        return np.empty(shape, dtype=dtype)
    buf = buffers.get(name)
    if buf is None or buf.size < size or buf.dtype != np.dtype(dtype):
        buf = np.empty(max(size, 1), dtype=dtype)
        buffers[name] = buf
    return buf[:size].reshape(shape)


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < threads:
            # The old pool is not shut down: another thread may have just looked it up and be
            # about to submit to it; its idle workers exit once the last reference is gone.
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="maskloss")
            _pool_size = threads
        return _pool


#: Below this many elements a chunk is gathered by plain indexing (cheaper than a scratch lookup).
SMALL_CHUNK = 4096


def _gather(a: np.ndarray[Any, Any], rows: IntArray, index: int) -> np.ndarray[Any, Any]:
    if a.ndim != 2 or rows.shape[0] * a.shape[1] <= SMALL_CHUNK:
        return a[rows]
    out = scratch(f"gather{index}", (rows.shape[0], a.shape[1]), a.dtype)
    np.take(a, rows, axis=0, out=out)
    return out


def map_rows(
    step: StepFn,
    valid: BoolArray,
    arrays: tuple[np.ndarray[Any, Any], ...],
    *,
    k: int | None = None,
    grad_scale: FloatArray | None = None,
    grad_out: np.ndarray[Any, Any] | None = None,
) -> tuple[FloatArray, np.ndarray[Any, Any] | None]:
    """Evaluate ``step`` on the valid rows only, chunk by chunk, over threads.

    ``arrays`` are ``(steps, width)`` or ``(steps,)`` views aligned with ``valid.ravel()``.
    Returns the per-step results, shape ``(steps,)`` (or ``(steps, k)`` when ``k`` is
    given), exactly 0 at masked steps, and, with ``grad_scale`` (one factor per step),
    the gradient rows ``(steps, C)`` (``C`` the width of the last array, the
    predictions): ``step(..., grad=True)``'s derivative rows times their factor,
    exactly 0 at masked steps (never computed). The gradient is written into
    ``grad_out`` when given (``(steps, C)``, any float dtype), else into a fresh
    float64 array of zeros from the operating system (``np.zeros``: pages that no valid row
    shares are never written), first touched by the thread that fills it.
    """
    size = valid.size
    out = np.zeros(size if k is None else (size, k))
    rows = valid_rows(valid)
    width = 1
    for a in arrays:
        if a.ndim == 2:
            width = max(width, a.shape[1])
    grad: np.ndarray[Any, Any] | None = None
    if grad_scale is not None:
        # A caller's buffer gets its masked rows zeroed; a fresh one is zero already.
        grad = grad_out if grad_out is not None else np.zeros((size, arrays[-1].shape[-1]))
    flat_valid = valid.reshape(-1)
    work_size = rows.shape[0] * width
    if work_size <= min(SMALL_CHUNK, CHUNK_ELEMENTS):
        # One small chunk, on the calling thread: no pool, no scratch buffers, the same per-row math.
        if grad_out is not None:
            grad_out[~flat_valid] = 0.0
        _run_chunk(step, rows, [a.take(rows, axis=0) for a in arrays], out, grad, grad_scale)
        return out, grad
    threads = max(1, min(_threads.get_num_threads(), work_size // MIN_ELEMENTS_PER_THREAD))
    bounds = [rows.shape[0] * i // threads for i in range(threads + 1)]

    def work(i: int) -> None:
        mine = rows[bounds[i] : bounds[i + 1]]
        # Steps [lo, hi) belong to this thread: its valid rows and the masked ones between.
        lo = 0 if i == 0 else int(rows[bounds[i]])
        hi = size if i == threads - 1 else int(rows[bounds[i + 1]])
        _local.buffers = {}
        try:
            if grad_out is not None:
                grad_out[np.flatnonzero(~flat_valid[lo:hi]) + lo] = 0.0
            for chunk in row_chunks(mine, width):
                _run_chunk(step, chunk, [_gather(a, chunk, j) for j, a in enumerate(arrays)], out, grad, grad_scale)
        finally:
            _local.buffers = None

    if threads == 1:
        work(0)
    else:
        pool = _executor(threads)
        futures = [pool.submit(work, i) for i in range(threads)]
        errors = [f.exception() for f in futures]  # waits for all; the first range's error wins
        for error in errors:
            if error is not None:
                raise error
    return out, grad


def _run_chunk(
    step: StepFn,
    chunk: IntArray,
    pieces: list[np.ndarray[Any, Any]],
    out: FloatArray,
    grad: np.ndarray[Any, Any] | None,
    grad_scale: FloatArray | None,
) -> None:
    """``step`` on one chunk of valid rows: results into ``out[chunk]``, scaled derivative rows into ``grad``."""
    if grad is None or grad_scale is None:
        out[chunk] = step(chunk, *pieces)
        return
    out[chunk], dpred = step(chunk, *pieces, grad=True)
    factor = grad_scale[chunk]
    scaled = scratch("scaled", dpred.shape, np.float64)  # no fresh 2 MiB temporaries per chunk
    with np.errstate(invalid="ignore", over="ignore"):
        np.multiply(dpred, factor[:, None], out=scaled)
    unscaled = factor == 0
    if unscaled.any():
        scaled[unscaled] = 0.0  # a 0 factor selects 0, even against an inf derivative
    if not np.isfinite(factor).all():
        # w/D overflowed (a subnormal denominator): a derivative of exactly 0 (a step whose
        # class weight is 0) still contributes exactly 0, not 0 * inf = NaN.
        np.copyto(scaled, 0.0, where=dpred == 0)
    grad[chunk] = scaled


def _first_bad_row(bad_rows: BoolArray, rows: IntArray, steps_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """``(i, step)``: the chunk index of the first bad row and its step in ``steps_shape``."""
    i = int(np.flatnonzero(bad_rows)[0])
    return i, tuple(int(k) for k in np.unravel_index(int(rows[i]), steps_shape))


def check_probabilities(
    p: FloatArray, rows: IntArray, steps_shape: tuple[int, ...], name: str, flag: str = "from_logits"
) -> None:
    """Raise if a valid row of probabilities holds a value outside ``[0, 1]`` (or NaN).

    ``flag`` names the option that takes logits instead, for the message.
    """
    bad_rows = ~np.all((p >= 0.0) & (p <= 1.0), axis=-1)
    if np.any(bad_rows):
        i, step = _first_bad_row(bad_rows, rows, steps_shape)
        raise ValueError(
            f"{name} must hold probabilities in [0, 1] at valid steps (pass {flag}=True for "
            f"logits); step {step} holds {p[i].tolist()!r}"
        )


def check_distribution(
    p: FloatArray, rows: IntArray, steps_shape: tuple[int, ...], name: str, dtype: Any = np.float64,
    flag: str = "target_from_logits",
) -> None:
    """Raise unless every valid row is a distribution: entries in ``[0, 1]`` summing to 1.

    The sum may miss 1 by the square root of the input dtype's epsilon (1.5e-8 in float64,
    3.5e-4 in float32), the rounding of a normalised row stored in that dtype.
    """
    check_probabilities(p, rows, steps_shape, name, flag)
    kind = np.dtype(dtype)
    eps = float(np.finfo(kind).eps) if kind.kind == "f" else float(np.finfo(np.float64).eps)
    totals = np.sum(p, axis=-1)
    bad_rows = np.abs(totals - 1.0) > np.sqrt(eps)
    if np.any(bad_rows):
        i, step = _first_bad_row(bad_rows, rows, steps_shape)
        raise ValueError(
            f"{name} must be a distribution at valid steps (rows summing to 1; pass "
            f"{flag}=True for logits); step {step} sums to {totals[i]!r}: {p[i].tolist()!r:.120}"
        )
