"""Conformance of :mod:`maskloss.conventions.keras3` with the installed Keras 3 (jax backend).

Keras picks its backend once per process, when ``keras`` is first imported: this module
sets ``KERAS_BACKEND=jax`` (``os.environ.setdefault``) before importing it, so run it in
a process that has not imported keras with another backend (if it has, every result
fails with a note saying so).

The comparison runs in float64 (``jax_enable_x64`` and ``keras.config.set_floatx``, both
restored afterwards) so that differences are convention differences, not float32 noise.
Even so, on jax ``keras.ops.mean`` computes in float32 (Keras forces 64-bit dtypes to
32-bit in ``result_type``), and MAE, MSE and binary cross-entropy take a mean over the
feature axis: those three are compared with a relative tolerance of 1e-6 (a few float32
ulps); categorical and sparse cross-entropy, which use ``jnp.sum``, with 1e-12.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from maskloss.conformance._result import ConformanceResult
from maskloss.conventions import keras3

FRAMEWORK = "keras3 (jax backend)"

#: Relative tolerance (with an absolute floor of the same size for values below 1).
FLOAT32_MEAN_TOLERANCE = 1e-6
FLOAT64_TOLERANCE = 1e-12
LOSSES = ("mean_absolute_error", "mean_squared_error", "binary_crossentropy",
          "categorical_crossentropy", "sparse_categorical_crossentropy")
REDUCTIONS = ("sum_over_batch_size", "mean_with_sample_weight", "sum", "none")
#: Shapes are fixed per loss (the values, masks and weights are random): jax compiles every
#: op once per new shape, and a fixed shape keeps a run to seconds instead of minutes.
BATCH, STEPS = 4, 6
WIDTHS = {"mean_absolute_error": 3, "mean_squared_error": 1, "binary_crossentropy": 2,
          "categorical_crossentropy": 4, "sparse_categorical_crossentropy": 5}


def version() -> str | None:
    """The installed Keras 3 version, or None when keras cannot be imported."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except Exception:  # pragma: no cover - depends on the environment
        return None
    return str(keras.__version__)


def random_mask(rng: np.random.Generator, batch: int, steps: int) -> np.ndarray[Any, Any]:
    """Right-, left-padded or arbitrary masks; one in eight is all masked."""
    if rng.random() < 0.125:
        return np.zeros((batch, steps), dtype=bool)
    style = rng.integers(3)
    if style == 2:
        return rng.random((batch, steps)) < 0.6
    lengths = rng.integers(0, steps + 1, size=batch)
    t = np.arange(steps)
    mask = t[None, :] < lengths[:, None]
    return mask if style == 0 else mask[:, ::-1].copy()


def random_weight(rng: np.random.Generator, batch: int, steps: int) -> Any:
    kind = rng.integers(4)
    if kind == 0:
        return None
    if kind == 1:
        return float(rng.uniform(0.1, 3.0))
    if kind == 2:
        return rng.uniform(0.0, 3.0, size=(batch, 1))
    return rng.uniform(0.0, 3.0, size=(batch, steps))


def random_case(rng: np.random.Generator, loss: str, garbage: bool = True) -> dict[str, Any]:
    """One random padded ``(BATCH, STEPS, width)`` batch for ``loss``: arrays, mask, weight, options.

    With ``garbage``, masked steps hold wild but finite values (Keras multiplies them by
    a zero weight, so NaN there would make Keras, not maskloss, return NaN). Without a
    mask there is no garbage: every step counts.
    """
    batch, steps = BATCH, STEPS
    width = WIDTHS[loss]
    mask = random_mask(rng, batch, steps)
    options: dict[str, Any] = {}
    shape = (batch, steps, width)
    if loss in ("mean_absolute_error", "mean_squared_error"):
        y_true, y_pred = rng.normal(size=shape), rng.normal(size=shape)
    else:
        from_logits = bool(rng.integers(2))
        options["from_logits"] = from_logits
        scale = float(rng.choice([1.0, 5.0, 40.0]))  # 40: probabilities that hit the clip
        logits = rng.normal(size=shape) * scale
        if loss == "binary_crossentropy":
            y_true = rng.random(shape) if rng.integers(2) else rng.integers(0, 2, shape).astype(float)
            y_pred = logits if from_logits else 1.0 / (1.0 + np.exp(-logits))
            options["label_smoothing"] = float(rng.choice([0.0, 0.1, 0.3]))
        else:
            if from_logits:
                y_pred = logits
            else:  # unnormalised, sometimes with exact zeros: the renormalising and clipping path
                y_pred = np.exp(logits - logits.max(axis=-1, keepdims=True)) * rng.uniform(0.5, 2.0)
                y_pred[rng.random(shape) < 0.1] = 0.0
                y_pred[..., 0] += 1e-3
            labels = rng.integers(0, width, size=(batch, steps))
            if loss == "sparse_categorical_crossentropy":
                if rng.integers(2):
                    options["ignore_class"] = -1
                    labels = np.where(rng.random((batch, steps)) < 0.25, -1, labels)
                y_true = np.where(mask, labels, 0)
                if "ignore_class" in options:
                    y_true = np.where(labels == -1, -1, y_true)
            else:
                y_true = np.eye(width)[labels]
                options["label_smoothing"] = float(rng.choice([0.0, 0.1, 0.3]))
    if garbage and loss != "sparse_categorical_crossentropy":
        y_true = np.where(mask[..., None], y_true, 7.5)  # garbage in targets at masked steps
    if garbage and (loss in ("mean_absolute_error", "mean_squared_error") or options.get("from_logits")):
        y_pred = np.where(mask[..., None], y_pred, -123.0)
    return {"y_true": y_true, "y_pred": y_pred, "mask": mask,
            "sample_weight": random_weight(rng, batch, steps), "options": options}


#: The Keras loss class of each loss function (the same names in Keras 3 and tf_keras).
LOSS_CLASSES = {
    "mean_absolute_error": "MeanAbsoluteError",
    "mean_squared_error": "MeanSquaredError",
    "binary_crossentropy": "BinaryCrossentropy",
    "categorical_crossentropy": "CategoricalCrossentropy",
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
}


def keras_value(keras: Any, loss: str, reduction: str, case: dict[str, Any], use_mask: bool = True) -> Any:
    """The installed Keras 3 loss object called on ``case`` with the mask set on ``y_pred``."""
    from keras.src.backend import set_keras_mask

    obj = getattr(keras.losses, LOSS_CLASSES[loss])(reduction=reduction, **case["options"])
    y_pred = keras.ops.convert_to_tensor(case["y_pred"])
    if use_mask:
        set_keras_mask(y_pred, keras.ops.convert_to_tensor(case["mask"]))
    return np.asarray(obj(case["y_true"], y_pred, sample_weight=case["sample_weight"]), dtype=np.float64)


def ours(loss: str, reduction: str, case: dict[str, Any], use_mask: bool = True) -> Any:
    fn: Callable[..., Any] = getattr(keras3, loss)
    return np.asarray(fn(case["y_true"], case["y_pred"], mask=case["mask"] if use_mask else None,
                         sample_weight=case["sample_weight"], reduction=reduction, **case["options"]))


def _errors(actual: Any, expected: Any) -> tuple[float, float]:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    both_nan = np.isnan(a) & np.isnan(e)
    diff = np.where(both_nan, 0.0, np.abs(a - e))
    diff = np.where(np.isnan(diff), np.inf, diff)
    rel = diff / np.maximum(np.abs(e), 1.0)
    return float(np.max(diff, initial=0.0)), float(np.max(np.where(np.isnan(rel), np.inf, rel), initial=0.0))


def run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    """Compare every loss x reduction with Keras 3 on ``n_cases`` random padded batches each."""
    ver = version()
    if ver is None:
        return []
    import jax
    import keras

    if keras.backend.backend() != "jax":
        note = (f"keras was already imported with the {keras.backend.backend()} backend; set "
                "KERAS_BACKEND=jax before the first keras import")
        return [ConformanceResult(FRAMEWORK, ver, f"{loss}[{red}]", 0, float("nan"), float("nan"),
                                  0.0, False, note) for loss in LOSSES for red in REDUCTIONS]
    config: Any = jax.config  # untyped in jax's stubs
    x64 = bool(config.read("jax_enable_x64"))
    floatx = keras.config.floatx()
    config.update("jax_enable_x64", True)
    keras.config.set_floatx("float64")
    try:
        results = []
        for loss in LOSSES:
            tol = FLOAT64_TOLERANCE if "categorical" in loss else FLOAT32_MEAN_TOLERANCE
            for red in REDUCTIONS:
                max_abs = max_rel = 0.0
                for _ in range(n_cases):
                    use_mask = bool(rng.random() < 0.85)  # sometimes no Keras mask at all
                    case = random_case(rng, loss, garbage=use_mask)
                    expected = keras_value(keras, loss, red, case, use_mask)
                    a, r = _errors(ours(loss, red, case, use_mask), expected)
                    max_abs, max_rel = max(max_abs, a), max(max_rel, r)
                note = ("float64; rel. tolerance 1e-6: keras.ops.mean runs in float32 on jax"
                        if tol == FLOAT32_MEAN_TOLERANCE else "float64 throughout")
                results.append(ConformanceResult(FRAMEWORK, ver, f"{loss}[{red}]", n_cases, max_abs,
                                                 max_rel, tol, max_rel <= tol, note))
        return results
    finally:
        keras.config.set_floatx(floatx)
        config.update("jax_enable_x64", x64)
