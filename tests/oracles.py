"""Slow, obviously correct loop oracles for every loss and reduction.

Written with Python loops over the valid steps and ``math`` on Python floats, from the
formulas of the issues and of ``docs/course/03-reductions.md``; they share no code with the
library. Each oracle returns a dict ``{reduction: value}`` plus ``"none"`` as a list of
lists, so one call checks every reduction.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np


def _steps(mask: np.ndarray) -> list[tuple[int, int]]:
    return [(b, t) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t]]


def _weight(sample_weight: Any, b: int, t: int) -> float:
    if sample_weight is None:
        return 1.0
    w = np.asarray(sample_weight, dtype=float)
    return float(w[b]) if w.ndim == 1 else float(w[b, t])


def _exact_product(x: float, y: float) -> Fraction | float:
    """``x * y`` as an exact rational (no underflow to 0), or a float when either is not finite."""
    return Fraction(x) * Fraction(y) if math.isfinite(x) and math.isfinite(y) else x * y


def reductions_from_pairs(mask: np.ndarray, pairs: dict[tuple[int, int], tuple[float, float]]) -> dict[str, Any]:
    """Every reduction from per-step (numerator term, denominator term), by loops."""
    batch, steps = mask.shape
    none = [[0.0] * steps for _ in range(batch)]
    # Sums stay exact rationals while the terms are (Fraction), so a denominator such as
    # 1.5e-89 * 2.2e-308 is positive here, as it is in exact arithmetic, not 0.
    total_num: Any = Fraction(0)
    total_den: Any = Fraction(0)
    seq_means = []
    for b in range(batch):
        num_b: Any = Fraction(0)
        den_b: Any = Fraction(0)
        for t in range(steps):
            if (b, t) in pairs:
                n, d = pairs[(b, t)]
                none[b][t] = float(n)
                num_b += n
                den_b += d
        total_num += num_b
        total_den += den_b
        if den_b > 0:
            seq_means.append(num_b / den_b)
    nan = float("nan")
    return {
        "none": none,
        "sum": float(total_num),
        "token_mean": float(total_num / total_den) if total_den else nan,
        "sequence_mean": float(sum(seq_means) / len(seq_means)) if seq_means else nan,
        "batch_mean": float(total_num / batch) if batch else nan,
        "element_mean": float(total_num / (batch * steps)) if batch * steps else nan,
    }


def regression(
    kind: str, y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray, sample_weight: Any = None
) -> dict[str, Any]:
    pairs = {}
    for b, t in _steps(mask):
        feats = y_true.shape[-1]
        acc = 0.0
        for f in range(feats):
            diff = float(y_true[b, t, f]) - float(y_pred[b, t, f])
            acc += abs(diff) if kind == "mae" else diff * diff
        w = _weight(sample_weight, b, t)
        pairs[(b, t)] = (w * acc / feats, w)
    return reductions_from_pairs(mask, pairs)


def _log_softmax_row(row: list[float]) -> list[float]:
    top = max(row)
    lse = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - lse for x in row]


def _xlog(coef: float, log_p: float) -> float:
    return 0.0 if coef == 0 else -coef * log_p


def _safe_log(p: float) -> float:
    return -math.inf if p == 0 else math.log(p)


def binary(y_true, y_pred, mask, *, from_logits=False, label_smoothing=0.0, sample_weight=None):
    pairs = {}
    for b, t in _steps(mask):
        feats = y_true.shape[-1]
        acc = 0.0
        for f in range(feats):
            y = float(y_true[b, t, f]) * (1 - label_smoothing) + label_smoothing / 2
            x = float(y_pred[b, t, f])
            if from_logits:
                # log sigmoid(x) and log(1 - sigmoid(x)), written out plainly.
                log_p = -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))
                log_q = -x + log_p
                acc += -(y * log_p + (1 - y) * log_q)
            else:
                acc += _xlog(y, _safe_log(x)) + _xlog(1 - y, _safe_log(1 - x))
        w = _weight(sample_weight, b, t)
        pairs[(b, t)] = (w * acc / feats, w)
    return reductions_from_pairs(mask, pairs)


def categorical(y_true, y_pred, mask, *, from_logits=False, label_smoothing=0.0, class_weight=None, sample_weight=None):
    pairs = {}
    classes = y_pred.shape[-1]
    for b, t in _steps(mask):
        row = [float(v) for v in y_pred[b, t]]
        logp = _log_softmax_row(row) if from_logits else [_safe_log(p) for p in row]
        acc = 0.0
        for c in range(classes):
            q = float(y_true[b, t, c]) * (1 - label_smoothing) + label_smoothing / classes
            cw = 1.0 if class_weight is None else float(class_weight[c])
            acc += _xlog(cw * q, logp[c])
        w = _weight(sample_weight, b, t)
        pairs[(b, t)] = (w * acc, w)
    return reductions_from_pairs(mask, pairs)


def sparse(labels, y_pred, mask, *, from_logits=False, ignore_index=None, label_smoothing=0.0,
           class_weight=None, sample_weight=None):
    pairs = {}
    classes = y_pred.shape[-1]
    for b, t in _steps(mask):
        y = labels[b, t]
        if ignore_index is not None and y == ignore_index:
            continue
        y = int(y)
        row = [float(v) for v in y_pred[b, t]]
        logp = _log_softmax_row(row) if from_logits else [_safe_log(p) for p in row]
        cw = [1.0] * classes if class_weight is None else [float(c) for c in class_weight]
        loss = _xlog((1 - label_smoothing) * cw[y], logp[y])
        if label_smoothing:
            for c in range(classes):
                loss += _xlog(label_smoothing / classes * cw[c], logp[c])
        w = _weight(sample_weight, b, t)
        pairs[(b, t)] = (_exact_product(w, loss), _exact_product(w, cw[y]))
    return reductions_from_pairs(mask, pairs)
