r"""Segment ids: which document each step of a packed row belongs to.

Padding-free training packs several documents into one row. maskloss describes such
a batch with **segment ids** of shape ``(R, L)`` (rows, steps): documents are numbered
``0, 1, 2, ...`` in reading order (row by row, left to right) across the whole packed
batch, each document is one contiguous run inside one row, and padding is ``-1``, only
at the end of a row. The other layouts frameworks use convert to and from it:

- ``position_ids`` (HF ``DataCollatorWithFlattening``, TRL ``padding_free``): a new
  document starts where the position resets to 0, and counts up by 1 inside it;
- ``cu_seqlens`` (flash-attention varlen): the cumulative document lengths
  ``[0, l_0, l_0 + l_1, ...]`` of one flat row of ``total`` steps;
- per-row document lengths, a 2-D array ``(R, D_max)`` with 0 for "no document".

A document split across two rows is an error everywhere: its steps would be two
sequences to a per-document reduction.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_fits, check_mask, first_bad_position

__all__ = [
    "lengths_from_segment_ids",
    "next_token_targets",
    "segment_ids_from_cu_seqlens",
    "segment_ids_from_lengths",
    "segment_ids_from_position_ids",
]

Int64Array = npt.NDArray[np.int64]
_T = TypeVar("_T", bound=np.generic)


def _whole(x: npt.ArrayLike, name: str, *, ndim: tuple[int, ...]) -> Int64Array:
    """``x`` as int64 of one of the ``ndim`` ranks; floats must be whole, booleans are refused."""
    arr = as_numeric(x, name)
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} must hold whole numbers, got booleans")
    if arr.dtype.kind not in "iu":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= 2.0**62)
        if np.any(bad):
            pos = first_bad_position(bad, arr.shape)
            raise ValueError(f"{name} must hold whole numbers; found {arr[pos].item()!r} at index {pos}")
    elif arr.dtype.kind == "u" and arr.size and int(arr.max()) >= 2**62:
        pos = first_bad_position(arr >= 2**62, arr.shape)
        raise ValueError(f"{name} holds {arr[pos].item()} at index {pos}, too large for a step count")
    return arr.astype(np.int64)


def _rows(arr: npt.NDArray[_T]) -> npt.NDArray[_T]:
    """A 1-D packed row as a batch of one row."""
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def _valid_prefix(mask: npt.ArrayLike | None, shape: tuple[int, ...], name: str = "mask") -> npt.NDArray[np.bool_]:
    """The mask of a packed batch: valid steps first in each row, padding only at the end."""
    valid = check_mask(mask, shape, name=name)
    rows = valid.reshape(1, -1) if valid.ndim == 1 else valid
    late = rows[:, 1:] & ~rows[:, :-1]
    if np.any(late):
        r, t = first_bad_position(late, late.shape)
        raise ValueError(
            f"{name} of a packed batch must have its padding at the end of each row; "
            f"row {r} has a valid step at index {t + 1} after padding"
        )
    return valid


def segment_ids_from_position_ids(
    position_ids: npt.ArrayLike, mask: npt.ArrayLike | None = None
) -> Int64Array:
    r"""Segment ids of a packed batch from its ``position_ids`` (a document starts at position 0).

    .. math::
        \text{start}_{r,t} = (p_{r,t} = 0), \qquad
        s_{r,t} = \Big(\sum_{(r',t') \le (r,t)} \text{start}_{r',t'}\Big) - 1
        \ \text{at valid steps}, \quad -1 \text{ at padding}

    Inside a document the position must count up by exactly 1; each row must start a
    document (else it would continue one from the previous row).

    Parameters
    ----------
    position_ids : array_like of int, shape (R, L) or (L,)
        Position of each step inside its document, as HF ``DataCollatorWithFlattening``
        returns them.
    mask : array_like of bool, same shape, optional
        True at valid steps, padding at the end of each row; default: all valid.

    Returns
    -------
    ndarray of int64, the shape of ``position_ids``

    Examples
    --------
    >>> import maskloss
    >>> maskloss.segment_ids_from_position_ids([[0, 1, 2, 0, 1, 0, 0]])
    array([[0, 0, 0, 1, 1, 2, 3]])
    >>> maskloss.segment_ids_from_position_ids([[0, 1, 0, 9], [0, 1, 2, 3]],
    ...                                        mask=[[1, 1, 1, 0], [1, 1, 1, 1]])
    array([[ 0,  0,  1, -1],
           [ 2,  2,  2,  2]])
    """
    pos = _whole(position_ids, "position_ids", ndim=(1, 2))
    valid = _valid_prefix(mask, pos.shape)
    p, v = _rows(pos), _rows(valid)
    bad_first = v[:, :1] & (p[:, :1] != 0)  # (R, 1), or (R, 0) for rows of no step
    if np.any(bad_first):
        r = int(np.flatnonzero(bad_first)[0])
        raise ValueError(
            f"position_ids must start each row with a new document (position 0); row {r} starts at "
            f"position {p[r, 0]}, which would continue a document from the previous row"
        )
    inner = v[:, 1:] & (p[:, 1:] != 0) & (p[:, 1:] != p[:, :-1] + 1)
    if np.any(inner):
        r, t = first_bad_position(inner, inner.shape)
        raise ValueError(
            f"position_ids must reset to 0 at a new document or count up by 1 inside one; "
            f"found {p[r, t]} then {p[r, t + 1]} at index {(r, t + 1) if pos.ndim == 2 else (t + 1,)}"
        )
    start = v & (p == 0)
    seg = np.cumsum(start.ravel()).reshape(p.shape) - 1
    return np.where(v, seg, -1).reshape(pos.shape)


def segment_ids_from_cu_seqlens(cu_seqlens: npt.ArrayLike, total: int) -> Int64Array:
    r"""Segment ids of one flat packed row of ``total`` steps from flash-attention's ``cu_seqlens``.

    .. math::
        s_t = d \quad \text{for} \quad c_d \le t < c_{d+1}

    Parameters
    ----------
    cu_seqlens : array_like of int, shape (D + 1,)
        ``[0, l_0, l_0 + l_1, ..., total]``, strictly increasing (no empty document).
    total : int
        Number of steps of the flat row.

    Returns
    -------
    ndarray of int64, shape (total,)

    Examples
    --------
    >>> import maskloss
    >>> maskloss.segment_ids_from_cu_seqlens([0, 3, 5, 6], 6)
    array([0, 0, 0, 1, 1, 2])
    """
    cu = _whole(cu_seqlens, "cu_seqlens", ndim=(1,))
    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 0:
        raise TypeError(f"total must be an int >= 0 (the number of steps), got {total!r}")
    if cu.size == 0 or cu[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0; got {cu[:1].tolist()} at index 0")
    steps = np.diff(cu)
    bad = steps <= 0
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0]) + 1
        raise ValueError(
            f"cu_seqlens must be strictly increasing; found {cu[i - 1]} then {cu[i]} at index {i}"
        )
    if cu[-1] != total:
        raise ValueError(
            f"cu_seqlens must end at total={int(total)}; it ends at {cu[-1]} (index {cu.size - 1})"
        )
    check_fits(8 * int(total), f"segment_ids_from_cu_seqlens(total={int(total)})")  # the int64 result
    return np.repeat(np.arange(steps.size, dtype=np.int64), steps)


def segment_ids_from_lengths(lengths: npt.ArrayLike, row_length: int | None = None) -> Int64Array:
    r"""Segment ids of packed rows from the document lengths of each row.

    Row ``r`` holds documents of lengths ``lengths[r, 0], lengths[r, 1], ...`` one after
    the other, then padding (``-1``) up to ``row_length``; a length of 0 is "no document".

    Parameters
    ----------
    lengths : array_like of int, shape (R, D_max) or (D,) for one row
        Document lengths, >= 0.
    row_length : int, optional
        Steps per row; default: the longest row's total.

    Returns
    -------
    ndarray of int64, shape (R, row_length)

    Examples
    --------
    >>> import maskloss
    >>> maskloss.segment_ids_from_lengths([[3, 2, 0], [1, 1, 1]], 5)
    array([[ 0,  0,  0,  1,  1],
           [ 2,  3,  4, -1, -1]])
    """
    lens = _rows(_whole(lengths, "lengths", ndim=(1, 2)))
    if np.any(lens < 0):
        pos = first_bad_position(lens < 0, lens.shape)
        raise ValueError(f"lengths must be >= 0; found {lens[pos]} at index {pos}")
    totals = lens.sum(axis=1)
    longest = int(totals.max()) if totals.size else 0
    if row_length is None:
        row_length = longest
    elif isinstance(row_length, bool) or not isinstance(row_length, (int, np.integer)):
        raise TypeError(f"row_length must be an int or None, got {row_length!r}")
    elif row_length < 0:
        raise ValueError(f"row_length must be >= 0 (steps per row), got {int(row_length)}")
    elif longest > row_length:
        r = int(np.argmax(totals))
        raise ValueError(f"row {r} holds {longest} steps of documents, more than row_length={int(row_length)}")
    # Peak memory: the int64 result and its temporaries (25 bytes a step) and the (R, L, D) comparison.
    check_fits(int(row_length) * (8 + lens.shape[0] * (25 + lens.shape[1])),
               f"segment_ids_from_lengths of {lens.shape[0]} rows of {int(row_length)} steps")
    t = np.arange(int(row_length))
    inside = t[None, :] < totals[:, None]
    if lens.shape[1] == 0:
        return np.full((lens.shape[0], int(row_length)), -1, dtype=np.int64)
    # Step (r, t) belongs to the first column whose end (cumulative length in its row) is > t;
    # that column is never an empty one, since its end exceeds the previous column's end.
    ends = np.cumsum(lens, axis=1)
    column = (t[None, :, None] >= ends[:, None, :]).sum(axis=2)
    global_id = np.full(lens.shape, -1, dtype=np.int64)
    global_id[lens > 0] = np.arange(int(np.count_nonzero(lens)), dtype=np.int64)
    seg = np.take_along_axis(global_id, np.minimum(column, lens.shape[1] - 1), axis=1)
    return np.where(inside, seg, -1)


def check_segment_ids(segment_ids: npt.ArrayLike, name: str = "segment_ids") -> Int64Array:
    """Validate packed segment ids (see the module docstring) and return them as int64."""
    seg = _whole(segment_ids, name, ndim=(1, 2))
    s = _rows(seg)
    below = s < -1
    if np.any(below):
        pos = first_bad_position(below, s.shape)
        raise ValueError(f"{name} must be >= 0 (a document) or -1 (padding); found {s[pos]} at index {pos}")
    _valid_prefix(s >= 0, s.shape, name=f"{name} >= 0")
    flat = s.ravel()
    kept = flat[flat >= 0]
    if kept.size:  # then every row has at least one step
        step = np.diff(kept, prepend=-1)
        bad = (step != 0) & (step != 1)
        if np.any(bad):
            k = int(np.flatnonzero(bad)[0])
            where = np.flatnonzero(flat >= 0)[k]
            pos = tuple(int(i) for i in np.unravel_index(where, seg.shape))
            raise ValueError(
                f"{name} must number the documents 0, 1, 2, ... in reading order, each one contiguous; "
                f"found {kept[k]} after {kept[k - 1] if k else 'the start'} at index {pos}"
            )
        row_first = s[:, 0]
        last = np.where(s >= 0, s, -1).max(axis=1)
        prev_last = np.maximum.accumulate(np.concatenate([[-1], last[:-1]]))
        split = (row_first >= 0) & (row_first == prev_last)
        if np.any(split):
            r = int(np.flatnonzero(split)[0])
            raise ValueError(
                f"{name}: document {row_first[r]} is split across rows (it continues at index "
                f"{(r, 0)}); each document must lie inside one row"
            )
    return seg


def lengths_from_segment_ids(segment_ids: npt.ArrayLike) -> Int64Array:
    r"""Per-row document lengths ``(R, D_max)`` (0 = no document), the inverse of :func:`segment_ids_from_lengths`.

    Examples
    --------
    >>> import maskloss
    >>> maskloss.lengths_from_segment_ids([[0, 0, 0, 1, 1], [2, 3, 4, -1, -1]])
    array([[3, 2, 0],
           [1, 1, 1]])
    """
    s = _rows(check_segment_ids(segment_ids))
    kept = s >= 0
    counts = np.bincount(s[kept], minlength=0).astype(np.int64)
    rows = np.repeat(np.arange(s.shape[0]), s.shape[1])[kept.ravel()]
    n_docs = counts.size
    doc_row = np.zeros(n_docs, dtype=np.int64)
    doc_row[s[kept]] = rows
    first_of_row = np.searchsorted(doc_row, np.arange(s.shape[0]), side="left")
    column = np.arange(n_docs) - first_of_row[doc_row] if n_docs else np.zeros(0, dtype=np.int64)
    width = int(column.max()) + 1 if n_docs else 0
    out = np.zeros((s.shape[0], width), dtype=np.int64)
    out[doc_row, column] = counts
    return out


def next_token_targets(
    ids: npt.ArrayLike, segment_ids: npt.ArrayLike, *, ignore_index: int = -100
) -> tuple[Int64Array, npt.NDArray[np.bool_]]:
    r"""Document-aware causal shift: the target of step t is the next token of the same document.

    .. math::
        y_{r,t} = x_{r,t+1} \ \text{if}\ s_{r,t+1} = s_{r,t} \ge 0, \quad
        \text{else ignore\_index}

    The last token of each document predicts nothing, so the first token of a document is
    never the target of the previous one (``torch.roll`` or a shift over the whole packed row
    gets that wrong). Returns the targets and the mask of steps that have one.

    Examples
    --------
    >>> import maskloss
    >>> targets, valid = maskloss.next_token_targets([[5, 6, 7, 8, 9, 0]], [[0, 0, 0, 1, 1, -1]])
    >>> targets
    array([[   6,    7, -100,    9, -100, -100]])
    >>> valid.astype(int)
    array([[1, 1, 0, 1, 0, 0]])
    """
    x = _whole(ids, "ids", ndim=(1, 2))
    seg = check_segment_ids(segment_ids)
    if seg.shape != x.shape:
        raise ValueError(f"segment_ids must have the shape of ids {x.shape}, got {seg.shape}")
    xr, sr = _rows(x), _rows(seg)
    same = np.zeros(sr.shape, dtype=bool)
    same[:, :-1] = (sr[:, :-1] >= 0) & (sr[:, 1:] == sr[:, :-1])
    nxt = np.zeros_like(xr)
    nxt[:, :-1] = xr[:, 1:]
    targets = np.where(same, nxt, np.int64(ignore_index))
    return targets.reshape(x.shape), same.reshape(x.shape)

