"""Slow, obviously correct loop oracles for the Keras conventions (Keras 3, tf_keras, Keras 2).

Python loops over the steps and ``math`` on Python floats, written from the Keras sources
(keras/src/losses/loss.py, keras/src/backend/jax/nn.py, tf_keras/src/backend.py,
tf_keras/src/utils/losses_utils.py, Keras 2.2 keras/engine/training_utils.py) and the
conventions of docs/reference/framework-conventions.md. They share no code with maskloss.

Weights are passed to the reducers as ``None``, a Python float, or a 2-D array of shape
``(B, 1)``, ``(1, T)`` or ``(B, T)`` (the test expands ``(B,)`` itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

from tests.cases import masks

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


# --------------------------------------------------------------- cases for the Keras tests

KINDS = ("mae", "mse", "binary", "categorical", "sparse")


@dataclass(frozen=True)
class KerasCase:
    """One loss call: arrays, the Keras mask (or None), the weight and the options."""

    kind: str
    y_true: np.ndarray
    y_pred: np.ndarray
    mask: np.ndarray | None
    sample_weight: Any
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def steps_mask(self) -> np.ndarray:
        """The mask the oracle uses: Keras mask and ``ignore_class``."""
        valid = np.ones(self.y_pred.shape[:-1], bool) if self.mask is None else self.mask
        if "ignore_class" in self.options:
            valid = valid & (self.y_true != self.options["ignore_class"])
        return valid

    def oracle_losses(self, flavour: str) -> list[list[float]]:
        """Per-step losses by loops, at the valid steps only (0.0 elsewhere)."""
        batch, steps = self.y_pred.shape[:2]
        valid = self.steps_mask
        opts = {k: v for k, v in self.options.items() if k != "ignore_class"}
        return [[step_loss(self.kind, flavour, self.y_true[b, t], self.y_pred[b, t], **opts)
                 if valid[b, t] else 0.0 for t in range(steps)] for b in range(batch)]

    @property
    def oracle_mask(self) -> Any:
        """The Keras mask after ``ignore_class`` (None when neither is present)."""
        return None if (self.mask is None and "ignore_class" not in self.options) else self.steps_mask


def oracle_weight(sample_weight: Any, batch: int) -> Any:
    """The oracle's weight format: ``(B,)`` becomes ``(B, 1)``."""
    if sample_weight is None or np.ndim(sample_weight) != 1:
        return sample_weight
    return np.asarray(sample_weight).reshape(batch, 1)


@st.composite
def keras_cases(
    draw: Any,
    *,
    shapes: tuple[tuple[int, int], ...] | None = None,
    widths: dict[str, tuple[int, ...]] | None = None,
    weight_kinds: tuple[str, ...] = ("none", "scalar", "column", "full"),
    garbage: tuple[float, ...] = (np.nan, np.inf, 1e300, -7.5),
    label_garbage: tuple[int, ...] = (10**6, -7),
    weight_garbage: tuple[float, ...] = (np.nan, -1.0, 5.0),
    kinds: tuple[str, ...] = KINDS,
) -> KerasCase:
    """A random padded batch for one Keras loss; masked steps hold ``garbage``.

    ``shapes``/``widths`` restrict the shapes (the framework tests use a few fixed ones,
    because jax compiles every op once per shape).
    """
    kind = draw(st.sampled_from(kinds))
    if shapes is None:
        batch, steps = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    else:
        batch, steps = draw(st.sampled_from(shapes))
    default_widths = {"categorical": (2, 3, 5), "sparse": (2, 3, 5)}
    width = draw(st.sampled_from((widths or default_widths).get(kind, (1, 2, 3))))
    mask = draw(masks(batch, steps))
    use_mask = draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else True
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (batch, steps, width)
    options: dict[str, Any] = {}
    if kind in ("mae", "mse"):
        y_true, y_pred = rng.normal(size=shape), rng.normal(size=shape)
    else:
        from_logits = draw(st.booleans())
        options["from_logits"] = from_logits
        logits = rng.normal(size=shape) * draw(st.sampled_from([1.0, 5.0, 40.0]))
        if kind == "binary":
            y_true = rng.random(shape) if draw(st.booleans()) else rng.integers(0, 2, shape).astype(float)
            y_pred = logits if from_logits else 1.0 / (1.0 + np.exp(-logits))
            options["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.3]))
        else:
            if from_logits:
                y_pred = logits
            else:  # unnormalised probabilities, sometimes exact zeros
                y_pred = np.exp(logits - logits.max(axis=-1, keepdims=True)) * rng.uniform(0.5, 2.0)
                y_pred[rng.random(shape) < 0.15] = 0.0
                y_pred[..., 0] += 1e-3
            labels = rng.integers(0, width, size=(batch, steps))
            if kind == "sparse":
                if draw(st.booleans()):
                    options["ignore_class"] = -1
                    labels = np.where(rng.random((batch, steps)) < 0.3, -1, labels)
                y_true = labels
            else:
                y_true = np.eye(width)[labels]
                if draw(st.booleans()):
                    y_true = rng.random(shape)
                options["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.3]))
    weight_kind = draw(st.sampled_from(weight_kinds))
    weight: Any = {
        "none": None,
        "scalar": float(rng.uniform(0.1, 3.0)),
        "column": rng.uniform(0.0, 3.0, size=(batch, 1)),
        "vector": rng.uniform(0.0, 3.0, size=(batch,)),
        "full": rng.uniform(0.0, 3.0, size=(batch, steps)),
    }[weight_kind]
    if use_mask and garbage:
        junk = draw(st.sampled_from(garbage))
        y_pred = np.where(mask[..., None], y_pred, junk)
        if kind == "sparse":
            keep = mask | (y_true == -1)
            y_true = np.where(keep, y_true, draw(st.sampled_from((0, *label_garbage))))
        else:
            y_true = np.where(mask[..., None], y_true, junk)
        if weight_kind == "full":
            weight = np.where(mask, weight, draw(st.sampled_from((1.0, *weight_garbage))))
    return KerasCase(kind, y_true, y_pred, mask if use_mask else None, weight, options)
