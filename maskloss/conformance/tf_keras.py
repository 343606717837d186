"""Conformance of :mod:`maskloss.conventions.tf_keras` with the installed tf_keras.

Runs in float64 (``tf_keras.backend.set_floatx("float64")``, restored afterwards), where
tf_keras computes every step in float64: the tolerance is 1e-12, relative to
``max(|value|, 1)``. The mask is set on ``y_pred`` as ``_keras_mask``, the way a model's
output carries it; an all-masked batch must be NaN on both sides. Importing tensorflow
takes several seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maskloss.conformance._result import ConformanceResult
from maskloss.conformance.keras3 import LOSS_CLASSES, LOSSES, random_case
from maskloss.conventions import tf_keras as convention

FRAMEWORK = "tf_keras"
TOLERANCE = 1e-12
REDUCTIONS = ("sum_over_batch_size", "sum", "none")

def version() -> str | None:
    """The installed tf_keras version, or None when it cannot be imported."""
    try:
        import tf_keras
    except Exception:  # pragma: no cover - depends on the environment
        return None
    return str(tf_keras.__version__)


def tf_keras_value(loss: str, reduction: str, case: dict[str, Any], use_mask: bool = True) -> Any:
    """The installed tf_keras loss object called on ``case``, mask set on ``y_pred``."""
    import tensorflow as tf
    import tf_keras

    obj = getattr(tf_keras.losses, LOSS_CLASSES[loss])(reduction=reduction, **case["options"])
    y_pred = tf.constant(case["y_pred"])
    if use_mask:
        y_pred._keras_mask = tf.constant(case["mask"])
    weight = case["sample_weight"]
    if weight is not None:  # a Python float would become a float32 tensor first
        weight = tf.constant(weight, dtype=tf.float64)
    return np.asarray(obj(tf.constant(case["y_true"]), y_pred, sample_weight=weight), dtype=np.float64)


def ours(loss: str, reduction: str, case: dict[str, Any], use_mask: bool = True, version: Any = None) -> Any:
    fn = getattr(convention, loss)
    return np.asarray(fn(case["y_true"], case["y_pred"], mask=case["mask"] if use_mask else None,
                         sample_weight=case["sample_weight"], reduction=reduction, version=version,
                         **case["options"]))


def _errors(actual: Any, expected: Any) -> tuple[float, float]:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    diff = np.where(np.isnan(a) & np.isnan(e), 0.0, np.abs(a - e))
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(np.max(diff, initial=0.0)), float(np.max(diff / np.maximum(np.abs(e), 1.0), initial=0.0))


def run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    """Compare every loss x reduction with tf_keras on ``n_cases`` random padded batches each."""
    ver = version()
    if ver is None:
        return []
    import tf_keras

    floatx = tf_keras.backend.floatx()
    tf_keras.backend.set_floatx("float64")
    try:
        results = []
        for loss in LOSSES:
            for red in REDUCTIONS:
                max_abs = max_rel = 0.0
                for _ in range(n_cases):
                    use_mask = bool(rng.random() < 0.85)
                    case = random_case(rng, loss, garbage=use_mask)
                    w = case["sample_weight"]
                    if w is not None and np.ndim(w) == 2 and w.shape[1] == 1 and rng.random() < 0.5:
                        case["sample_weight"] = w[:, 0]  # tf_keras takes (B,) as one weight per sequence
                    expected = tf_keras_value(loss, red, case, use_mask)
                    a, r = _errors(ours(loss, red, case, use_mask, ver), expected)
                    max_abs, max_rel = max(max_abs, a), max(max_rel, r)
                results.append(ConformanceResult(FRAMEWORK, ver, f"{loss}[{red}]", n_cases, max_abs, max_rel,
                                                 TOLERANCE, max_rel <= TOLERANCE, "float64 throughout"))
        return results
    finally:
        tf_keras.backend.set_floatx(floatx)
