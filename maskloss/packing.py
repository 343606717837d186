r"""Move one batch between the padded layout ``(B, T)`` and packed rows ``(R, L)``.

:func:`pack` plans where each sequence of a padded batch (its valid steps, in order) goes
in packed rows and returns a :class:`Packing` with the packed ``segment_ids``,
``position_ids`` and ``cu_seqlens`` of that plan; :meth:`Packing.pack_array` moves any
``(B, T, ...)`` array into the packed rows and :func:`unpack` moves a packed array back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_mask
from maskloss.masks import lengths_from_mask
from maskloss.segments import Int64Array, segment_ids_from_lengths

__all__ = ["Packing", "pack", "unpack"]

Order = Literal["given", "first_fit"]


@dataclass(frozen=True)
class Packing:
    r"""Where each valid step of a padded batch lives in packed rows.

    Attributes
    ----------
    source : ndarray of int64, shape (R, L)
        Flat index ``b * T + t`` of the padded step at each packed step, -1 at padding.
    segment_ids : ndarray of int64, shape (R, L)
        Document of each packed step (documents numbered in reading order), -1 at padding.
    document : ndarray of int64, shape (D,)
        Padded row ``b`` of each packed document (sequences with no valid step are not packed).
    padded_shape : tuple of int
        ``(B, T)``.
    """

    source: Int64Array
    segment_ids: Int64Array
    document: Int64Array
    padded_shape: tuple[int, int]

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        """True at the packed steps that hold a token."""
        return self.segment_ids >= 0

    @property
    def position_ids(self) -> Int64Array:
        """Position of each packed step inside its document (0 at padding), as HF's collator."""
        return _positions(self.segment_ids)

    @property
    def cu_seqlens(self) -> Int64Array:
        """Cumulative document lengths ``[0, l_0, l_0 + l_1, ...]`` of the packed rows read as one flat row.

        Flash-attention's convention for one flat row; with padding at the end of rows the
        offsets count the valid steps only (pack with ``row_length=None`` for one flat row).
        """
        seg = self.segment_ids
        lengths = np.bincount(seg[seg >= 0], minlength=self.document.size)
        return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def pack_array(self, x: npt.ArrayLike, fill: Any = 0) -> np.ndarray[Any, Any]:
        """Move ``x`` of shape ``(B, T, ...)`` into the packed rows ``(R, L, ...)``; ``fill`` at padding."""
        arr = np.asarray(as_numeric(x, "x"))
        if arr.shape[:2] != self.padded_shape:
            raise ValueError(f"x must have shape {self.padded_shape} + features (the padded batch), got {arr.shape}")
        flat = arr.reshape((-1,) + arr.shape[2:])
        out = flat[np.maximum(self.source, 0)]
        keep = (self.source >= 0).reshape(self.source.shape + (1,) * (arr.ndim - 2))
        return np.where(keep, out, np.asarray(fill, dtype=arr.dtype))


def _check_row_length(row_length: object) -> int | None:
    if row_length is None:
        return None
    if isinstance(row_length, bool) or not isinstance(row_length, (int, np.integer)) or row_length < 1:
        raise TypeError(f"row_length must be an int >= 1 or None, got {row_length!r}")
    return int(row_length)


def _first_fit(lengths: Int64Array, row_length: int) -> tuple[Int64Array, Int64Array]:
    """Row of each document under first fit, and the documents in packed reading order."""
    # First fit is sequential by definition (each document sees the rows the earlier ones
    # filled): one step per document, vectorised over the rows.
    free = np.zeros(0, dtype=np.int64)
    row = np.zeros(lengths.size, dtype=np.int64)
    for d, n in enumerate(lengths.tolist()):
        fits = np.flatnonzero(free >= n)
        if fits.size:
            row[d] = fits[0]
        else:
            row[d] = free.size
            free = np.append(free, row_length)
        free[row[d]] -= n
    order = np.lexsort((np.arange(lengths.size), row))
    return row, order


def pack(mask: npt.ArrayLike, row_length: int | None = None, *, order: Order = "given") -> Packing:
    r"""Plan packed rows for the valid steps of a padded batch.

    Each sequence of the padded batch (the valid steps of row ``b``, in order; any padding
    side) becomes one document.

    - ``row_length=None``: all documents, in batch order, in one flat row, as HF's
      ``DataCollatorWithFlattening`` returns them;
    - ``order="given"``: documents in batch order, a new row whenever the next one does not
      fit (next fit);
    - ``order="first_fit"``: each document, in batch order, into the first row with room.

    Parameters
    ----------
    mask : array_like of bool, shape (B, T)
        True at valid steps.
    row_length : int, optional
        Steps per packed row; every sequence must fit.
    order : {"given", "first_fit"}

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> mask = maskloss.mask_from_lengths([3, 2, 1])
    >>> p = maskloss.pack(mask)
    >>> p.segment_ids
    array([[0, 0, 0, 1, 1, 2]])
    >>> p.position_ids
    array([[0, 1, 2, 0, 1, 0]])
    >>> p.cu_seqlens
    array([0, 3, 5, 6])
    >>> x = np.arange(9).reshape(3, 3)
    >>> p.pack_array(x)
    array([[0, 1, 2, 3, 4, 6]])
    >>> maskloss.unpack(p.pack_array(x), p, fill=-1)
    array([[ 0,  1,  2],
           [ 3,  4, -1],
           [ 6, -1, -1]])
    >>> maskloss.pack(maskloss.mask_from_lengths([3, 2, 1]), 4, order="first_fit").segment_ids
    array([[ 0,  0,  0,  1],
           [ 2,  2, -1, -1]])
    """
    shape = as_numeric(mask, "mask").shape
    if len(shape) != 2:
        raise ValueError(f"mask must be 2-D (B, T), the padded batch's valid steps; got shape {shape}")
    valid = check_mask(mask, shape)
    lengths = lengths_from_mask(valid).astype(np.int64)
    document = np.flatnonzero(lengths > 0).astype(np.int64)
    doc_len = lengths[document]
    longest = int(doc_len.max()) if doc_len.size else 0
    size = _check_row_length(row_length)
    if size is not None and longest > size:
        b = int(document[np.argmax(doc_len)])
        raise ValueError(f"sequence {b} has {longest} valid steps, more than row_length={size}")
    if order not in ("given", "first_fit"):
        raise ValueError(f"order must be 'given' or 'first_fit', got {order!r}")
    if size is None:
        rows = np.zeros(doc_len.size, dtype=np.int64)
        reading = np.arange(doc_len.size)
        size = int(doc_len.sum())
    elif order == "first_fit":
        rows, reading = _first_fit(doc_len, size)
    else:
        rows = _next_fit_rows(doc_len, size)
        reading = np.arange(doc_len.size)
    document = document[reading]
    doc_len = doc_len[reading]
    rows = rows[reading]
    n_rows = int(rows.max()) + 1 if rows.size else 0
    column = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
    table = np.zeros((n_rows, int(np.bincount(rows).max()) if rows.size else 0), dtype=np.int64)
    table[rows, column] = doc_len
    segment_ids = segment_ids_from_lengths(table, size)
    # The padded source of each packed step: the k-th valid step of its document's padded row.
    valid_steps = np.flatnonzero(valid.ravel())  # row-major: each row's valid steps in order
    row_start = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    position = _positions(segment_ids)
    if document.size == 0:
        source = np.full(segment_ids.shape, -1, dtype=np.int64)
    else:
        k = row_start[document[np.maximum(segment_ids, 0)]] + position
        source = np.where(segment_ids >= 0, valid_steps[np.minimum(k, valid_steps.size - 1)], -1)
    return Packing(source.astype(np.int64), segment_ids, document, (valid.shape[0], valid.shape[1]))


def _positions(segment_ids: Int64Array) -> Int64Array:
    seg = segment_ids
    t = np.broadcast_to(np.arange(seg.shape[1]), seg.shape)
    start = np.where(np.diff(seg, axis=1, prepend=-2) != 0, t, 0)
    return np.where(seg >= 0, t - np.maximum.accumulate(start, axis=1), 0)


def _next_fit_rows(lengths: Int64Array, row_length: int) -> Int64Array:
    """Row of each document when documents go in order and a row closes when the next one does not fit."""
    # Next fit is sequential too (where a row closes depends on where the previous closed).
    rows = np.zeros(lengths.size, dtype=np.int64)
    used, row = 0, 0
    for d, n in enumerate(lengths.tolist()):
        if used + n > row_length:
            row, used = row + 1, 0
        rows[d], used = row, used + n
    return rows


def unpack(packed: npt.ArrayLike, packing: Packing, fill: Any = 0) -> np.ndarray[Any, Any]:
    """Move a packed array ``(R, L, ...)`` back to the padded layout ``(B, T, ...)``; ``fill`` at padding."""
    arr = np.asarray(as_numeric(packed, "packed"))
    if arr.shape[:2] != packing.source.shape:
        raise ValueError(f"packed must have shape {packing.source.shape} + features (the packed rows), got {arr.shape}")
    b, t = packing.padded_shape
    out = np.full((b * t,) + arr.shape[2:], fill, dtype=arr.dtype)
    keep = packing.source >= 0
    out[packing.source[keep]] = arr[keep]
    return out.reshape((b, t) + arr.shape[2:])
