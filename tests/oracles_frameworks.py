"""Slow loop oracles for the framework conventions (torch, optax, HF).

Written from the frameworks' documented formulas (and their source, cited in
``maskloss/conventions/*.py``) with Python loops and ``math`` on Python floats; they
share no code with the library. torch-style functions return ``{reduction: value}`` for
``"none"`` (nested lists), ``"mean"`` and ``"sum"``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

NAN = float("nan")


def _log(x: float) -> float:
    return -math.inf if x == 0 else math.log(x)


def _lse(values: list[float]) -> float:
    if not values:
        return -math.inf
    top = max(values)
    if math.isinf(top):
        top = 0.0
    return top + _log(sum(math.exp(v - top) for v in values))


def _positions(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*[range(s) for s in shape]))


def _class_row(x: np.ndarray, pos: tuple[int, ...]) -> list[float]:
    """The C values of ``x`` (torch layout, classes on axis 1) at position ``pos`` (no class axis)."""
    if x.ndim == 1:
        return [float(v) for v in x]
    return [float(x[(pos[0], c, *pos[1:])]) for c in range(x.shape[1])]


def _torch_reductions(
    shape: tuple[int, ...], terms: dict[tuple[int, ...], float], den: float
) -> dict[str, Any]:
    none = np.zeros(shape)
    total = 0.0
    for pos, v in terms.items():
        none[pos] = v
        total += v
    return {"none": none, "sum": total, "mean": total / den if den else NAN}


def torch_cross_entropy(x, target, weight=None, ignore_index=-100, label_smoothing=0.0) -> dict[str, Any]:
    """torch ``cross_entropy`` with index or probability targets, every reduction."""
    x = np.asarray(x, dtype=float)
    target = np.asarray(target)
    classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    cw = [1.0] * classes if weight is None else [float(w) for w in weight]
    eps = label_smoothing
    probabilities = target.shape == x.shape
    shape = () if x.ndim == 1 else (x.shape[0], *x.shape[2:])
    terms: dict[tuple[int, ...], float] = {}
    den = 0.0
    for pos in _positions(shape):
        if probabilities:
            row = _class_row(x, pos)
            lse = _lse(row)
            q = _class_row(target, pos)
            terms[pos] = -sum(
                cw[c] * (q[c] * (1 - eps) + eps / classes) * (row[c] - lse) for c in range(classes)
            )
            den += 1.0
            continue
        y = int(target[pos])
        if y == ignore_index:
            continue
        row = _class_row(x, pos)
        lse = _lse(row)
        loss = (1 - eps) * cw[y] * (lse - row[y])
        loss += eps / classes * sum(cw[c] * (lse - row[c]) for c in range(classes))
        terms[pos] = loss
        den += cw[y]
    return _torch_reductions(shape, terms, den)


def torch_nll_loss(x, target, weight=None, ignore_index=-100) -> dict[str, Any]:
    x = np.asarray(x, dtype=float)
    target = np.asarray(target)
    classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    cw = [1.0] * classes if weight is None else [float(w) for w in weight]
    terms: dict[tuple[int, ...], float] = {}
    den = 0.0
    for pos in _positions(target.shape):
        y = int(target[pos])
        if y == ignore_index:
            continue
        terms[pos] = -cw[y] * _class_row(x, pos)[y]
        den += cw[y]
    return _torch_reductions(target.shape, terms, den)


def _elementwise(shape: tuple[int, ...], values: dict[tuple[int, ...], float], den: float) -> dict[str, Any]:
    return _torch_reductions(shape, values, den)


def torch_binary_cross_entropy(x, y, weight=None) -> dict[str, Any]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones(x.shape) if weight is None else np.broadcast_to(np.asarray(weight, dtype=float), x.shape)
    terms = {}
    for pos in _positions(x.shape):
        p, t = float(x[pos]), float(y[pos])
        terms[pos] = -float(w[pos]) * (t * max(_log(p), -100.0) + (1 - t) * max(_log(1 - p), -100.0))
    return _elementwise(x.shape, terms, float(x.size))


def _softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def torch_bce_with_logits(x, y, weight=None, pos_weight=None) -> dict[str, Any]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones(x.shape) if weight is None else np.broadcast_to(np.asarray(weight, dtype=float), x.shape)
    pw = (
        np.ones(x.shape)
        if pos_weight is None
        else np.broadcast_to(np.asarray(pos_weight, dtype=float), x.shape)
    )
    terms = {}
    for pos in _positions(x.shape):
        z, t = float(x[pos]), float(y[pos])
        # -[pw * t * log sigmoid(z) + (1 - t) * log(1 - sigmoid(z))]
        terms[pos] = float(w[pos]) * (float(pw[pos]) * t * _softplus(-z) + (1 - t) * _softplus(z))
    return _elementwise(x.shape, terms, float(x.size))


def torch_regression(kind: str, x, y, weight=None) -> dict[str, Any]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    terms = {}
    den = 0.0
    for pos in _positions(x.shape):
        d = float(x[pos]) - float(y[pos])
        e = abs(d) if kind == "l1" else d * d
        w = 1.0 if weight is None else float(np.asarray(weight)[pos])
        terms[pos] = w * e
        den += w
    return _elementwise(x.shape, terms, den)


def optax_softmax_cross_entropy(logits, labels, where=None) -> np.ndarray:
    """Per row, classes on the last axis; ``where`` is a row mask (ndim - 1) or class mask."""
    x = np.asarray(logits, dtype=float)
    out = np.zeros(x.shape[:-1])
    for pos in _positions(x.shape[:-1]):
        included = _included(where, pos, x.shape[-1])
        if not included:
            continue
        row = [float(x[(*pos, c)]) for c in included]
        lse = _lse(row)
        out[pos] = -sum(float(labels[(*pos, c)]) * (float(x[(*pos, c)]) - lse) for c in included)
    return out


def optax_integer_labels(logits, labels, where=None) -> np.ndarray:
    x = np.asarray(logits, dtype=float)
    classes = x.shape[-1]
    out = np.zeros(x.shape[:-1])
    for pos in _positions(x.shape[:-1]):
        included = _included(where, pos, classes)
        if where is not None and not included:
            continue
        y = int(labels[pos])
        if -classes <= y < 0:  # jax wraps negative indices once
            y += classes
        label_logit = float(x[(*pos, y)]) if 0 <= y < classes else NAN
        out[pos] = _lse([float(x[(*pos, c)]) for c in included]) - label_logit
    return out


def _included(where, pos: tuple[int, ...], classes: int) -> list[int]:
    if where is None:
        return list(range(classes))
    w = np.asarray(where)
    if w.ndim == len(pos):
        return list(range(classes)) if w[pos] else []
    return [c for c in range(classes) if w[(*pos, c)]]


def hf_causal_lm_loss(logits, labels, num_items_in_batch=None, ignore_index=-100, shift_labels=None) -> float:
    """HF ``ForCausalLMLoss``: position t predicts label t + 1 (or ``shift_labels[t]``)."""
    x = np.asarray(logits, dtype=float)
    labels = np.asarray(labels)
    total = 0.0
    count = 0
    batch, steps = x.shape[:2]
    for b in range(batch):
        for t in range(steps):
            if shift_labels is not None:
                y = int(shift_labels[b, t])
            else:
                y = int(labels[b, t + 1]) if t + 1 < steps else ignore_index
            if y == ignore_index:
                continue
            row = [float(v) for v in x[b, t]]
            total += _lse(row) - row[y]
            count += 1
    if num_items_in_batch is None:
        return total / count if count else NAN
    if num_items_in_batch == 0:
        return NAN if total == 0 else math.inf
    return total / num_items_in_batch
