r"""Batch transformations behind the properties: junk under the mask, more padding, repadding,
micro-batches, and the single-token and all-masked batches; and how a batch is printed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss.masks import repad
from maskloss.strategies import BFLOAT16_MAX, PaddedBatch


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


def _junk_variants(b: PaddedBatch, label_fill: int | None, dtype: str) -> list[PaddedBatch]:
    """Junk in the predictions (and float targets, per-step weights) at padded steps.

    Sparse labels are left as they are: junk labels are their own finding
    (:func:`_junk_label_variants`), so that a loss that needs a valid id at padding
    still has its predictions checked. ``label_fill`` is unused (kept for the call shape).
    """
    del label_fill
    if b.mask.all():
        return []
    huge = BFLOAT16_MAX if dtype == "bfloat16" else float(np.finfo(b.y_pred.dtype).max)
    out = []
    for i, value in enumerate([math.nan, math.inf, -huge]):
        y_true = b.y_true if b.kind == "sparse" else _fill(b.y_true, b.mask, value)
        w = b.sample_weight
        if w is not None and w.ndim == 2:
            w = _fill(w, b.mask, math.nan if i % 2 == 0 else -1.0)
        out.append(_replace(b, y_true=y_true, y_pred=_fill(b.y_pred, b.mask, value), sample_weight=w))
    return out


def _junk_label_variants(b: PaddedBatch) -> list[PaddedBatch]:
    """Out-of-range sparse labels (``C``, ``-1``, ``10**6``) at padded steps, predictions untouched."""
    if b.kind != "sparse" or b.mask.all():
        return []
    return [_replace(b, y_true=_fill(b.y_true, b.mask, bad)) for bad in (b.y_pred.shape[-1], -1, 10**6)]


def _pad_value(b: PaddedBatch, label_fill: int | None) -> Any:
    return label_fill if (b.kind == "sparse" and label_fill is not None) else 0


def _pad_more(b: PaddedBatch, label_fill: int | None, extra: int = 2) -> PaddedBatch:
    """Append ``extra`` fully padded steps (on the left for left-padded batches)."""
    left = b.padding == "left"

    def grow(arr: np.ndarray[Any, Any], value: Any) -> np.ndarray[Any, Any]:
        shape = (arr.shape[0], extra, *arr.shape[2:])
        pad = np.full(shape, value, dtype=arr.dtype)
        return np.concatenate([pad, arr] if left else [arr, pad], axis=1)

    w = b.sample_weight
    return _replace(
        b,
        y_true=grow(b.y_true, _pad_value(b, label_fill)),
        y_pred=grow(b.y_pred, 0),
        mask=grow(b.mask, False),
        sample_weight=w if w is None or w.ndim == 1 else grow(w, 0.0),
    )


def _repad(b: PaddedBatch, side: str, label_fill: int | None) -> PaddedBatch:
    fill = _pad_value(b, label_fill)
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


def _single_token_batches(b: PaddedBatch, label_fill: int | None, steps: int = 3) -> list[PaddedBatch]:
    """From a drawn batch with a valid first step: one valid step at the start, middle and end."""
    out = []
    for t in range(steps):
        mask = np.zeros((1, steps), dtype=bool)
        mask[0, t] = True
        y_true = np.repeat(b.y_true[:1, :1], steps, axis=1)
        y_pred = np.repeat(b.y_pred[:1, :1], steps, axis=1)
        if b.kind == "sparse" and label_fill is not None:
            y_true = np.where(mask, y_true, label_fill)
        w = None if b.sample_weight is None else np.ones((1, steps) if b.sample_weight.ndim == 2 else 1)
        side = "left" if t == steps - 1 else ("right" if t == 0 else "arbitrary")
        out.append(PaddedBatch(y_true, y_pred, mask, mask.sum(axis=1), w, b.kind, side))
    return out


def _all_masked_batch(
    b: PaddedBatch, label_fill: int | None, shape: tuple[int, int] = (2, 3)
) -> PaddedBatch:
    """Two sequences of three steps, none valid, built from the first step of ``b``."""
    y_true = np.broadcast_to(b.y_true[:1, :1], shape + b.y_true.shape[2:]).copy()
    if b.kind == "sparse" and label_fill is not None:
        y_true = np.full(shape, label_fill, dtype=b.y_true.dtype)
    y_pred = np.broadcast_to(b.y_pred[:1, :1], shape + b.y_pred.shape[2:]).copy()
    w = None if b.sample_weight is None else np.ones(shape if b.sample_weight.ndim == 2 else shape[0])
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
