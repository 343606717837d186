"""Compaction of valid steps in bounded chunks.

Losses are computed on the rows of the valid steps only (never on padding, so
garbage there cannot reach a value or a gradient), a bounded number of elements at
a time, so that a (16, 512, 32000) float32 batch is never promoted to float64 as a
whole. The loop below runs over chunks of rows, not over the batch or time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from maskloss._types import BoolArray, FloatArray, IntArray

#: Elements (rows x classes) promoted to float64 at once, per array: 2 MiB each. Chunks of
#: 1 << 20 (8 MiB temporaries, which NumPy madvises as huge pages and glibc hands back to
#: the OS between chunks) measured ~1.5-2x slower for the forward pass and the gradient
#: (benchmarks/README.md); smaller chunks only add Python overhead per chunk.
CHUNK_ELEMENTS = 1 << 18


def valid_rows(valid: BoolArray) -> IntArray:
    """Flat indices of the valid steps."""
    return np.flatnonzero(valid.ravel())


def row_chunks(rows: IntArray, width: int) -> Iterator[IntArray]:
    """Split ``rows`` into pieces of at most ``CHUNK_ELEMENTS // width`` rows."""
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    for start in range(0, rows.shape[0], step):
        yield rows[start : start + step]


def as_rows(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """View ``(..., C)`` data as ``(steps, C)`` rows (copies only if not contiguous)."""
    return arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)


def to_float64(chunk: np.ndarray[Any, Any]) -> FloatArray:
    """A chunk of rows promoted to float64 (the only place inputs are promoted)."""
    return np.asarray(chunk, dtype=np.float64)


def check_probabilities(p: FloatArray, rows: IntArray, steps_shape: tuple[int, ...], name: str) -> None:
    """Raise if a valid row of probabilities holds a value outside ``[0, 1]`` (or NaN)."""
    bad_rows = ~np.all((p >= 0.0) & (p <= 1.0), axis=-1)
    if np.any(bad_rows):
        i = int(np.flatnonzero(bad_rows)[0])
        step = tuple(int(k) for k in np.unravel_index(int(rows[i]), steps_shape))
        raise ValueError(
            f"{name} must hold probabilities in [0, 1] at valid steps (pass from_logits=True for "
            f"logits); step {step} holds {p[i].tolist()!r}"
        )
