"""Slow, obviously correct loop oracles for the Keras conventions (Keras 3, tf_keras, Keras 2).

Python loops over the steps and ``math`` on Python floats, written from the Keras sources
(keras/src/losses/loss.py, keras/src/backend/jax/nn.py, tf_keras/src/backend.py,
tf_keras/src/utils/losses_utils.py, Keras 2.2 keras/engine/training_utils.py) and
/work/shared/conventions.md. They share no code with maskloss.

Weights are passed to the reducers as ``None``, a Python float, or a 2-D array of shape
``(B, 1)``, ``(1, T)`` or ``(B, T)`` (the test expands ``(B,)`` itself).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

EPS = 1e-7


def _clip(p: float) -> float:
    return min(max(p, EPS), 1.0 - EPS)


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    lse = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - lse for x in row]


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def step_loss(kind: str, flavour: str, y_true: Any, y_pred: Any, *, from_logits: bool = False,
              label_smoothing: float = 0.0) -> float:
    """One step's loss. ``flavour`` is "keras3" (jax/torch backends) or "tf_keras".

    ``y_true`` is a label (sparse) or a feature vector; ``y_pred`` a feature vector.
    """
    pred = [float(v) for v in y_pred]
    n = len(pred)
    if kind in ("mae", "mse"):
        diffs = [float(a) - b for a, b in zip(y_true, pred, strict=True)]
        return sum(abs(d) if kind == "mae" else d * d for d in diffs) / n
    if kind == "binary":
        total = 0.0
        for yt, p in zip(y_true, pred, strict=True):
            y = float(yt) * (1 - label_smoothing) + 0.5 * label_smoothing
            if from_logits:
                total += -(y * _log_sigmoid(p) + (1 - y) * _log_sigmoid(-p))
            elif flavour == "tf_keras":
                q = _clip(p)
                total += -(y * math.log(q + EPS) + (1 - y) * math.log(1 - q + EPS))
            else:
                q = _clip(p)
                total += -(y * math.log(q) + (1 - y) * math.log(1 - q))
        return total / n
    if from_logits:
        logp = _log_softmax(pred)
    elif kind == "sparse" and flavour == "tf_keras":  # clip, then renormalise
        clipped = [_clip(p) for p in pred]
        s = sum(clipped)
        logp = [math.log(c / s) for c in clipped]
    else:  # renormalise, then clip
        s = sum(pred)
        logp = [math.log(_clip(p / s)) for p in pred]
    if kind == "sparse":
        return -logp[int(y_true)]
    targets = [float(v) * (1 - label_smoothing) + label_smoothing / n for v in y_true]
    return -sum(q * lp for q, lp in zip(targets, logp, strict=True))


def _weight_at(weight: Any, b: int, t: int) -> float:
    if weight is None:
        return 1.0
    if np.ndim(weight) == 0:
        return float(weight)
    w = np.asarray(weight)
    return float(w[b if w.shape[0] > 1 else 0, t if w.shape[1] > 1 else 0])


def keras3_reduce(losses: list[list[float]], mask: Any, weight: Any, reduction: str) -> Any:
    """Keras 3 ``reduce_weighted_values``; ``losses[b][t]`` is only read at valid steps."""
    batch, steps = len(losses), len(losses[0])
    valid = [[mask is None or bool(mask[b][t]) for t in range(steps)] for b in range(batch)]
    none = [[0.0] * steps for _ in range(batch)]
    num = 0.0
    n_valid = 0
    weight_sum = 0.0
    for b in range(batch):
        for t in range(steps):
            if valid[b][t]:
                w = _weight_at(weight, b, t)
                none[b][t] = losses[b][t] * w
                num += losses[b][t] * w
                n_valid += 1
                weight_sum += w
    if reduction in ("none", None):
        return none
    if reduction == "sum":
        return num
    if reduction == "mean_with_sample_weight":
        if mask is None and weight is not None:
            den = float(np.sum(weight))  # the weight array as given, not broadcast
        else:
            den = weight_sum  # sum of m * w (w = 1 without weights)
    else:
        den = float(n_valid)
    return 0.0 if den == 0 else num / den


def tf_keras_reduce(losses: list[list[float]], mask: Any, weight: Any, reduction: str,
                    legacy: bool = False) -> Any:
    """tf_keras (TF >= 2.11) or, with ``legacy``, TF 2.0-2.10."""
    batch, steps = len(losses), len(losses[0])
    none = [[0.0] * steps for _ in range(batch)]
    num = 0.0
    n_valid = 0
    for b in range(batch):
        for t in range(steps):
            if mask is None or mask[b][t]:
                w = _weight_at(weight, b, t)
                none[b][t] = losses[b][t] * w
                num += losses[b][t] * w
                n_valid += 1
    if reduction in ("none", None):
        return none
    if reduction == "sum":
        return num
    if legacy:
        return num / (batch * steps)
    return num / n_valid if n_valid else math.nan


def keras2_objective(scores: Any, mask: Any, weights: Any, epsilon: float = 0.0) -> float:
    """Keras 2.0-2.2.5 ``weighted_masked_objective``, step by step as the source does it."""
    batch, steps = len(scores), len(scores[0])
    arr = [[0.0] * steps for _ in range(batch)]
    if mask is not None:
        mean_mask = sum(1.0 for b in range(batch) for t in range(steps) if mask[b][t]) / (batch * steps)
        denom = mean_mask + epsilon
        for b in range(batch):
            for t in range(steps):
                value = float(scores[b][t]) if mask[b][t] else 0.0
                arr[b][t] = value / denom if denom else math.nan  # 0 / 0 in Keras
    else:
        arr = [[float(v) for v in row] for row in scores]
    if weights is None:
        return sum(sum(row) for row in arr) / (batch * steps)
    w = np.asarray(weights, dtype=float)
    if w.ndim == 1:
        per_sample = [sum(arr[b]) / steps * float(w[b]) for b in range(batch)]
        nonzero = sum(1.0 for b in range(batch) if w[b] != 0) / batch
        return sum(v / nonzero if nonzero else math.nan for v in per_sample) / batch
    nonzero = sum(1.0 for b in range(batch) for t in range(steps) if w[b, t] != 0) / (batch * steps)
    total = 0.0
    for b in range(batch):
        for t in range(steps):
            total += arr[b][t] * float(w[b, t]) / nonzero if nonzero else math.nan
    return total / (batch * steps)


def keras23_objective(scores: Any, mask: Any, weights: Any) -> float:
    """Keras 2.3: ``Σ L·m·w / (B·T)``."""
    batch, steps = len(scores), len(scores[0])
    w = None if weights is None else np.asarray(weights, dtype=float)
    total = 0.0
    for b in range(batch):
        for t in range(steps):
            if mask is None or mask[b][t]:
                wt = 1.0 if w is None else float(w[b] if w.ndim == 1 else w[b, t])
                total += float(scores[b][t]) * wt
    return total / (batch * steps)
