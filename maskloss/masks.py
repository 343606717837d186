r"""Build, inspect and convert masks.

**Polarity: True = valid step, everywhere in maskloss** (the Keras, HF
``attention_mask`` and optax ``where`` convention). torch's ``key_padding_mask`` and
``numpy.ma`` use the opposite polarity (True = padding): pass ``~key_padding_mask``.

**A numpy.ma array is refused, not read**: every function of maskloss (losses,
reductions, post-training, masks) raises a TypeError naming the argument when one of its
arguments is a ``numpy.ma`` array with a masked entry, since ``np.asarray`` would keep the
data under that mask and drop the mask. Pass ``np.ma.getdata(x)`` and
``mask=~np.ma.getmaskarray(x)`` (per-step values) instead; a ``numpy.ma`` array that masks
nothing is read as its data.

Every mask has the shape of the *steps* of a batch, ``(B, T)`` for a batch of
sequences: the feature or class axis of the data is never part of a mask.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_mask
from maskloss._types import BoolArray, IntArray, Side

__all__ = [
    "lengths_from_mask",
    "mask_from_ids",
    "mask_from_lengths",
    "mask_from_padding",
    "mask_from_sentinel",
    "padding_side",
    "repad",
]


def mask_from_padding(x: npt.ArrayLike, value: float = 0.0) -> BoolArray:
    r"""Mask of the steps of ``x`` that are not padding, with Keras ``Masking`` semantics.

    A step is padding when **all** of its features equal ``value``:

    .. math:: m_{b,t} = \exists f:\ x_{b,t,f} \neq \text{value}

    Like Keras, ``value=nan`` masks nothing, because ``nan != nan``.

    Parameters
    ----------
    x : array_like, shape (B, T, F)
        Padded inputs; the last axis holds the features of a step.
    value : float, default 0.0
        The padding value (Keras ``Masking(mask_value)``).

    Returns
    -------
    mask : ndarray of bool, shape ``x.shape[:-1]``
        True at valid steps.

    Examples
    --------
    The seed batch: two leading padded steps in the first sequence, one in the second.

    >>> import maskloss
    >>> X = [[[0, 0], [0, 0], [1, 0], [0, 1], [0, 1]],
    ...      [[0, 0], [0, 1], [1, 0], [0, 1], [0, 1]]]
    >>> maskloss.mask_from_padding(X, 0.0).astype(int)
    array([[0, 0, 1, 1, 1],
           [0, 1, 1, 1, 1]])

    A step with only *some* features equal to the value is valid:

    >>> maskloss.mask_from_padding([[[0, 3]]], 0.0)
    array([[ True]])
    """
    arr = as_numeric(x, "x", min_ndim=1)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"value must be a real number, got {value!r}")
    return np.asarray(np.any(arr != value, axis=-1), dtype=bool)


def mask_from_lengths(
    lengths: npt.ArrayLike, maxlen: int | None = None, *, side: Side = "right"
) -> BoolArray:
    r"""Mask of shape ``(B, maxlen)`` from the number of valid steps of each sequence.

    .. math::
        m_{b,t} = t < \ell_b \ \text{(right padding)}, \qquad
        m_{b,t} = t \geq T - \ell_b \ \text{(left padding)}

    ``side="right"`` is ``tf.sequence_mask``; ``side="left"`` is the mirror image used by
    decoder-only generation, where the padding comes first.

    Parameters
    ----------
    lengths : array_like of int, shape (B,)
        Valid steps per sequence, each in ``[0, maxlen]``.
    maxlen : int, optional
        Number of steps; defaults to ``max(lengths)`` (0 for an empty batch).
    side : {"right", "left"}, default "right"
        Where the padding is.

    Examples
    --------
    >>> import maskloss
    >>> maskloss.mask_from_lengths([3, 5, 1], 5).astype(int)
    array([[1, 1, 1, 0, 0],
           [1, 1, 1, 1, 1],
           [1, 0, 0, 0, 0]])
    >>> maskloss.mask_from_lengths([3, 1], 4, side="left").astype(int)
    array([[0, 1, 1, 1],
           [0, 0, 0, 1]])
    """
    arr = as_numeric(lengths, "lengths")
    if arr.ndim != 1:
        raise ValueError(f"lengths must be 1-D, one length per sequence; got shape {arr.shape}")
    lens = _check_lengths(arr)
    if maxlen is None:
        maxlen = int(lens.max()) if lens.size else 0
    elif isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer)):
        raise TypeError(f"maxlen must be an int or None, got {_plain(maxlen)}")
    elif maxlen < 0 or (lens.size and int(lens.max()) > maxlen):
        raise ValueError(
            f"maxlen={int(maxlen)} must be >= 0 and >= every length; lengths are {_plain(arr)}"
        )
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    steps = int(maxlen)
    mask = _allocate_mask(lens.shape[0], steps)
    # Columns in bounded chunks: the step indices of one chunk, never an int64 arange of all of them.
    first = lens if side == "right" else steps - lens  # right: t < len; left: t >= T - len
    for start in range(0, steps, _COLUMNS):
        t = np.arange(start, min(start + _COLUMNS, steps))
        if side == "right":
            np.less(t[None, :], first[:, None], out=mask[:, start : start + t.size])
        else:
            np.greater_equal(t[None, :], first[:, None], out=mask[:, start : start + t.size])
    return mask


#: Step indices per chunk in :func:`mask_from_lengths` (512 KiB of int64 at a time).
_COLUMNS = 1 << 16


def _allocate_mask(batch: int, steps: int) -> BoolArray:
    """An uninitialised ``(batch, steps)`` bool mask, or a clear error if it cannot fit in memory."""
    size = batch * steps
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: let numpy try
        physical = None
    if physical is not None and size > physical:
        raise ValueError(
            f"maxlen={steps} with {batch} sequences needs a mask of {batch} x {steps} = {size} bytes "
            f"({size / 2**30:.3g} GiB), more than this machine's {physical / 2**30:.3g} GiB of memory"
        )
    try:
        return np.empty((batch, steps), dtype=bool)
    except (MemoryError, ValueError) as exc:
        raise ValueError(
            f"maxlen={steps} with {batch} sequences needs a mask of {size} bytes ({size / 2**30:.3g} GiB), "
            f"which cannot be allocated: {exc}"
        ) from None


_MAX_LENGTH = np.iinfo(np.int64).max


def _plain(x: Any) -> str:
    """A value or array as plain Python numbers (``5``, ``[1, inf]``), at most 80 characters."""
    text = repr(np.asarray(x).tolist()) if isinstance(x, (np.ndarray, np.generic)) else repr(x)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_lengths(arr: np.ndarray[Any, Any]) -> npt.NDArray[np.int64]:
    """Lengths must be finite whole numbers in ``[0, 2**63)``; returned as int64 (never wrapped)."""
    if arr.dtype.kind == "b":
        raise TypeError(f"lengths must be whole numbers, got booleans {_plain(arr)}")
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr)
            if np.any(bad):
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"lengths must be finite; found {arr[i].item()} at index {i}")
            bad = arr != np.round(arr)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise TypeError(f"lengths must be whole numbers; found {arr[i].item()} at index {i}")
    bad = arr < 0
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"lengths must be >= 0; found {arr[i].item()} at index {i}")
    # Compare before casting: float 2**63 and uint64 values beyond int64 would wrap.
    bad = arr >= 2.0**63 if arr.dtype.kind == "f" else arr > _MAX_LENGTH
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"lengths must be below 2**63 (a step count); found {arr[i].item()} at index {i}"
        )
    return arr.astype(np.int64)


def mask_from_ids(ids: npt.ArrayLike, pad_id: int) -> BoolArray:
    r"""Mask of the token ids (or labels) that are not ``pad_id``.

    .. math:: m_{b,t} = \text{ids}_{b,t} \neq \text{pad\_id}

    This is torch's ``ignore_index`` (HF labels use -100), Keras
    ``Embedding(mask_zero=True)`` (``pad_id=0``), fairseq's ``padding_idx`` and T5X's
    ``targets > 0`` (``pad_id=0``).

    Examples
    --------
    >>> import maskloss
    >>> maskloss.mask_from_ids([[5, 7, -100, -100]], -100)
    array([[ True,  True, False, False]])
    """
    arr = as_numeric(ids, "ids")
    if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)):
        raise TypeError(f"pad_id must be an int, got {pad_id!r}")
    return np.asarray(arr != pad_id, dtype=bool)


def mask_from_sentinel(y_true: npt.ArrayLike, sentinel: npt.ArrayLike) -> BoolArray:
    r"""Mask of the steps whose target is not the sentinel ("padding class") vector.

    .. math:: m_{b,t} = \exists c:\ y_{b,t,c} \neq s_c

    Examples
    --------
    One-hot targets over ``[a, b, #]`` where ``#`` marks padding:

    >>> import maskloss
    >>> y = [[[1, 0, 0], [0, 1, 0], [0, 0, 1]]]
    >>> maskloss.mask_from_sentinel(y, [0, 0, 1])
    array([[ True,  True, False]])
    """
    arr = as_numeric(y_true, "y_true", min_ndim=1)
    s = as_numeric(sentinel, "sentinel")
    if s.shape != arr.shape[-1:]:
        raise ValueError(
            f"sentinel must have shape {arr.shape[-1:]} (one entry per class of y_true), got {s.shape}"
        )
    return np.asarray(np.any(arr != s, axis=-1), dtype=bool)


def lengths_from_mask(mask: npt.ArrayLike) -> IntArray:
    r"""Number of valid steps in each sequence of a ``(B, T)`` mask.

    For a contiguous (left or right padded) mask this inverts
    :func:`mask_from_lengths`: ``mask_from_lengths(lengths_from_mask(m), T,
    side=padding_side(m)) == m``.

    Examples
    --------
    >>> import maskloss
    >>> maskloss.lengths_from_mask([[1, 1, 0], [0, 0, 0]])
    array([2, 0])
    """
    m = _as_batch_mask(mask)
    return np.asarray(m.sum(axis=1), dtype=np.intp)


def padding_side(mask: npt.ArrayLike) -> Literal["right", "left", "none", "mixed"]:
    r"""Say where a ``(B, T)`` mask has its padding.

    Returns
    -------
    {"right", "left", "none", "mixed"}
        ``"none"`` when no sequence is partly padded (every row is all valid or all
        padding), ``"right"`` when every row is a valid prefix, ``"left"`` when every row
        is a valid suffix, and ``"mixed"`` otherwise (some rows left and some right
        padded, or holes in the middle). A left/right mix-up shows up as the wrong answer
        here.

    Examples
    --------
    >>> import maskloss
    >>> maskloss.padding_side([[1, 1, 0], [1, 0, 0]])
    'right'
    >>> maskloss.padding_side([[0, 1, 1], [1, 1, 1]])
    'left'
    >>> maskloss.padding_side([[1, 0, 1]])
    'mixed'
    """
    m = _as_batch_mask(mask)
    lens = m.sum(axis=1)
    steps = m.shape[1]
    t = np.arange(steps)
    right = bool(np.all(m == (t[None, :] < lens[:, None])))
    left = bool(np.all(m == (t[None, :] >= steps - lens[:, None])))
    if right and left:
        return "none"
    if right:
        return "right"
    if left:
        return "left"
    return "mixed"


def repad(
    x: npt.ArrayLike, mask: npt.ArrayLike, *, side: Side = "right", fill: float = 0.0
) -> tuple[np.ndarray[Any, Any], BoolArray]:
    r"""Move the valid steps of every sequence to one side, keeping their order.

    Works for any mask, contiguous or not: the valid steps of row ``b`` are packed, in
    order, at the start (``side="right"``, padding after) or the end (``side="left"``).
    Padded steps get ``fill``. Useful for checking that a loss is the same for left and
    right padding.

    Parameters
    ----------
    x : array_like, shape (B, T, ...)
        Data aligned with the mask on its first two axes.
    mask : array_like of bool, shape (B, T)
        True at valid steps.
    side : {"right", "left"}
        Where the padding goes.
    fill : float
        Value written at the padded steps of the result (a copy; ``x`` is not modified).
        It must fit ``x``'s dtype: an integer ``x`` takes only whole fills in its range
        (``1.5``, ``nan`` or ``300`` into ``uint8`` raise ValueError, never truncate).

    Returns
    -------
    (x_repadded, mask_repadded)

    Examples
    --------
    >>> import maskloss
    >>> x, m = maskloss.repad([[1, 2, 3]], [[1, 0, 1]], side="left")
    >>> x, m.astype(int)
    (array([[0, 1, 3]]), array([[0, 1, 1]]))
    """
    m = _as_batch_mask(mask)
    arr = as_numeric(x, "x")
    if arr.shape[:2] != m.shape:
        raise ValueError(f"x must start with the mask's shape {m.shape}; got x {arr.shape}")
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    # A stable sort on "is padding" (right) or "is valid" (left) packs valid steps in order.
    key = ~m if side == "right" else m
    order = np.argsort(key, axis=1, kind="stable")
    new_mask = np.take_along_axis(m, order, axis=1)
    idx = order.reshape(order.shape + (1,) * (arr.ndim - 2))
    moved = np.take_along_axis(arr, idx, axis=1)
    where = new_mask.reshape(new_mask.shape + (1,) * (arr.ndim - 2))
    return np.where(where, moved, _check_fill(fill, arr.dtype)), new_mask


def _check_fill(fill: object, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """``fill`` as a 0-d array of ``dtype``; refused if an integer dtype cannot hold it exactly
    (``1.5``, ``nan``, ``300`` into ``uint8``) or if it overflows a float dtype."""
    if isinstance(fill, (bool, np.bool_)) and dtype.kind != "b":
        raise TypeError(f"fill must be a number, got {fill!r}")
    if not isinstance(fill, (numbers.Real, np.bool_)):
        raise TypeError(f"fill must be a real number, got {type(fill).__name__} {_plain(fill)}")
    with np.errstate(all="ignore"):
        try:
            cast = np.asarray(fill).astype(dtype)
        except (OverflowError, ValueError):
            cast = None
        if cast is None:
            exact = False
        elif dtype.kind in "fc":  # rounding to the float dtype is fine; overflowing to inf is not
            exact = bool(np.isfinite(cast)) or not np.isfinite(float(fill))
        else:
            exact = bool(cast == fill)
    if not exact:
        raise ValueError(
            f"fill={_plain(fill)} does not fit x's dtype {dtype}; pass a fill that "
            f"{dtype} can hold, or convert x to a float dtype first"
        )
    return np.asarray(cast)


def _as_batch_mask(mask: npt.ArrayLike) -> BoolArray:
    arr = as_numeric(mask, "mask")
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D (batch, time), got shape {arr.shape}")
    return check_mask(arr, arr.shape)
