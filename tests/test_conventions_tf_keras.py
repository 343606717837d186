"""tf_keras conventions against a loop oracle and the installed tf_keras 2.21 (float64).

tensorflow is imported once for the module (it takes several seconds). tf_keras computes
every step in float64 once ``floatx`` is float64, so comparisons are to 1e-12. TF 2.0-2.10
cannot be installed next to 2.21: its rule (``version="2.10"``) is checked against the loop
oracle and the Keras 2.3 golden number (tests/test_conventions_keras2.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

import maskloss
from maskloss.conventions import keras3, tf_keras
from tests import oracles_keras
from tests.oracles_keras import KerasCase, keras_cases, oracle_weight

tf = pytest.importorskip("tensorflow")
tfk = pytest.importorskip("tf_keras")

FUNCTIONS = {
    "mae": tf_keras.mean_absolute_error,
    "mse": tf_keras.mean_squared_error,
    "binary": tf_keras.binary_crossentropy,
    "categorical": tf_keras.categorical_crossentropy,
    "sparse": tf_keras.sparse_categorical_crossentropy,
}
CLASSES = {
    "mae": "MeanAbsoluteError",
    "mse": "MeanSquaredError",
    "binary": "BinaryCrossentropy",
    "categorical": "CategoricalCrossentropy",
    "sparse": "SparseCategoricalCrossentropy",
}
WEIGHT_KINDS = ("none", "scalar", "vector", "column", "full")
TOL = 1e-12


@pytest.fixture(scope="module", autouse=True)
def float64() -> Any:
    floatx = tfk.backend.floatx()
    tfk.backend.set_floatx("float64")
    yield
    tfk.backend.set_floatx(floatx)


def ours(case: KerasCase, reduction: Any, version: Any = None) -> Any:
    return FUNCTIONS[case.kind](case.y_true, case.y_pred, mask=case.mask, sample_weight=case.sample_weight,
                                reduction=reduction, version=version, **case.options)


def real(case: KerasCase, reduction: str) -> Any:
    loss = getattr(tfk.losses, CLASSES[case.kind])(reduction=reduction, **case.options)
    y_pred = tf.constant(case.y_pred)
    if case.mask is not None:
        y_pred._keras_mask = tf.constant(case.mask)
    weight = None if case.sample_weight is None else tf.constant(case.sample_weight, dtype=tf.float64)
    return loss(tf.constant(case.y_true), y_pred, sample_weight=weight).numpy()


def close(actual: Any, expected: Any, tol: float = TOL) -> None:
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=tol, atol=tol,
                               equal_nan=True)


# ------------------------------------------------------------------------------ oracle


@given(keras_cases(weight_kinds=WEIGHT_KINDS))
def test_matches_loop_oracle(case: KerasCase) -> None:
    losses = case.oracle_losses("tf_keras")
    weight = oracle_weight(case.sample_weight, case.y_pred.shape[0])
    for reduction in ("sum_over_batch_size", "auto", "sum", "none", None):
        red = "sum_over_batch_size" if reduction == "auto" else reduction
        for version, legacy in ((None, False), ("2.11", False), ("2.10", True), ((2, 0), True)):
            expected = oracles_keras.tf_keras_reduce(losses, case.oracle_mask, weight, red, legacy=legacy)
            close(ours(case, reduction, version), expected, 1e-11)


def test_versions_parse_and_bad_ones_are_rejected() -> None:
    assert tf_keras.parse_version("2.10.1") == (2, 10)
    assert tf_keras.parse_version((2, 11, 0)) == (2, 11)
    for bad, exc in (("1.15", ValueError), ("two", ValueError), (2.1, TypeError), ("3.0", ValueError)):
        with pytest.raises(exc, match="version"):
            tf_keras.parse_version(bad)


def test_all_masked_is_nan_since_2_11_and_zero_before() -> None:
    y = np.ones((2, 3, 1))
    none = np.zeros((2, 3), bool)
    assert math.isnan(tf_keras.mean_squared_error(y, 0 * y, mask=none))
    assert tf_keras.mean_squared_error(y, 0 * y, mask=none, version="2.10") == 0.0
    assert tf_keras.mean_squared_error(y, 0 * y, mask=none, reduction="sum") == 0.0


# ------------------------------------------------------------------------ real tf_keras


@settings(max_examples=40)
@given(keras_cases(weight_kinds=WEIGHT_KINDS, garbage=(-7.5, 1e3), label_garbage=(),
                   weight_garbage=(-1.0, 5.0)))
def test_matches_tf_keras_loss_objects(case: KerasCase) -> None:
    for reduction in ("sum_over_batch_size", "sum", "none"):
        close(ours(case, reduction, tfk.__version__), real(case, reduction))


def test_all_masked_is_nan_in_tf_keras() -> None:
    case = KerasCase("mse", np.ones((2, 3, 1)), np.zeros((2, 3, 1)), np.zeros((2, 3), bool), None)
    assert math.isnan(real(case, "sum_over_batch_size"))
    assert math.isnan(ours(case, "sum_over_batch_size"))


def test_python_float_weight_is_rounded_to_float32_by_tf_keras() -> None:
    # Found by the conformance run: tf.convert_to_tensor(0.1) is float32, cast to float64 later.
    y_true, y_pred = np.zeros((1, 2, 1)), np.ones((1, 2, 1))
    got = tfk.losses.MeanSquaredError()(y_true, y_pred, sample_weight=0.1).numpy()
    assert got == float(np.float32(0.1))
    assert tf_keras.mean_squared_error(y_true, y_pred, sample_weight=np.float32(0.1)) == got


def test_sparse_clips_before_renormalising() -> None:
    # tf_keras: clip, log, then sparse_softmax_cross_entropy_with_logits renormalises.
    p = np.array([[0.0, 0.5, 0.25]])
    got = tfk.losses.SparseCategoricalCrossentropy()(np.array([0]), tf.constant(p)).numpy()
    assert got == pytest.approx(-math.log(1e-7 / 0.7500001), rel=1e-12)
    assert tf_keras.sparse_categorical_crossentropy([0], p) == pytest.approx(got, rel=1e-12)
    assert keras3.sparse_categorical_crossentropy([0], p) == pytest.approx(-math.log(1e-7), rel=1e-12)


def test_binary_adds_epsilon_inside_the_logs() -> None:
    got = tfk.losses.BinaryCrossentropy()(np.array([[1.0]]), tf.constant([[0.0]], dtype=tf.float64)).numpy()
    assert got == pytest.approx(-math.log(2e-7), rel=1e-12)
    assert tf_keras.binary_crossentropy([[1.0]], [[0.0]]) == pytest.approx(got, rel=1e-12)


def test_one_weight_per_sequence_may_be_b_shaped() -> None:
    rng = np.random.default_rng(2)
    case = KerasCase("mae", rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2)),
                     maskloss.mask_from_lengths([4, 1, 2], 4), rng.random(3))
    close(ours(case, "sum_over_batch_size"), real(case, "sum_over_batch_size"))


# ----------------------------------------------------------------- through a real model

ACTIVATIONS = {"mae": None, "mse": None, "binary": "sigmoid", "categorical": "softmax", "sparse": "softmax"}


def _models(kind: str, steps: int, features: int, width: int) -> tuple[Any, Any]:
    """The model (logits -> activation) and the sub-model that outputs the logits."""
    tfk.utils.set_random_seed(0)
    inp = tfk.Input((steps, features))
    logits = tfk.layers.Dense(width)(tfk.layers.Masking(0.0)(inp))
    act = ACTIVATIONS[kind]
    out = logits if act is None else tfk.layers.Activation(act)(logits)
    return tfk.Model(inp, out), tfk.Model(inp, logits)


@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_model_evaluate_uses_the_logits_of_a_softmax_output(kind: str) -> None:
    rng = np.random.default_rng(3)
    batch, steps, features, width = 3, 5, 2, 3
    x = rng.normal(size=(batch, steps, features)) * 8
    x[0, 3:] = 0.0
    x[2, :4] = 0.0
    mask = maskloss.mask_from_padding(x, 0.0)
    options = {}
    if kind == "sparse":
        y = rng.integers(0, width, size=(batch, steps))
        y[1, 1:3] = -1  # ignored steps inside a valid sequence
        options = {"ignore_class": -1}
    elif kind == "categorical":
        y = np.eye(width)[rng.integers(0, width, size=(batch, steps))]
    else:
        y = rng.random((batch, steps, width))
    model, logits_model = _models(kind, steps, features, width)
    model.compile(loss=getattr(tfk.losses, CLASSES[kind])(**options))
    logits = logits_model.predict(x, verbose=0)
    from_logits = {} if ACTIVATIONS[kind] is None else {"from_logits": True}
    for weight in (None, rng.uniform(0.5, 2.0, size=batch)):
        got = model.evaluate(x, y, sample_weight=weight, batch_size=batch, verbose=0)
        expected = FUNCTIONS[kind](y, logits, mask=mask, sample_weight=weight, **from_logits, **options)
        assert got == pytest.approx(float(expected), rel=TOL, abs=TOL)


def test_model_softmax_output_is_not_clipped() -> None:
    # docs/reference/framework-conventions.md: logits [30, 0, -30], softmax, target class 3: 60.0 on TF, 16.118 clipped.
    model, _ = _models("categorical", 1, 1, 3)
    model.layers[2].set_weights([np.zeros((1, 3)), np.array([30.0, 0.0, -30.0])])
    model.compile(loss="categorical_crossentropy")
    x = np.ones((1, 1, 1))
    y = np.array([[[0.0, 0.0, 1.0]]])
    got = model.evaluate(x, y, verbose=0)
    assert got == pytest.approx(60.0, rel=1e-12)
    p = model.predict(x, verbose=0)
    assert tf_keras.categorical_crossentropy(y, p) == pytest.approx(-math.log(1e-7), rel=1e-12)
    assert tfk.losses.CategoricalCrossentropy()(y, tf.constant(p)).numpy() == pytest.approx(-math.log(1e-7))
    z = np.array([[[30.0, 0.0, -30.0]]])
    assert tf_keras.categorical_crossentropy(y, z, from_logits=True) == pytest.approx(got, rel=1e-12)


def test_model_all_masked_evaluates_to_nan() -> None:
    model, _ = _models("mse", 4, 2, 3)
    model.compile(loss="mse")
    x = np.zeros((2, 4, 2))
    assert math.isnan(model.evaluate(x, np.ones((2, 4, 3)), batch_size=2, verbose=0))


def test_conformance_runner_protocol() -> None:
    from maskloss.conformance import tf_keras as runner

    assert runner.FRAMEWORK == "tf_keras"
    assert runner.version() == tfk.__version__
    results = runner.run(np.random.default_rng(0), 3)
    assert len(results) == 5 * len(runner.REDUCTIONS)
    failed = [r for r in results if not r.passed]
    assert not failed, failed
    assert all(r.max_rel_error <= runner.TOLERANCE for r in results)


@pytest.mark.parametrize("kind", sorted(FUNCTIONS))
def test_mask_with_a_trailing_axis_of_one_is_squeezed_like_tf_keras(kind: str) -> None:
    # tf_keras squeezes a (B, T, 1) mask to the losses' rank (squeeze_or_expand_dimensions).
    rng = np.random.default_rng(13)
    width = {"mae": 2, "mse": 1, "binary": 2, "categorical": 3, "sparse": 3}[kind]
    y_pred = rng.uniform(0.05, 0.95, size=(2, 4, width))
    if kind == "sparse":
        y_true: Any = rng.integers(0, width, size=(2, 4))
    elif kind == "categorical":
        y_true = np.eye(width)[rng.integers(0, width, size=(2, 4))]
    else:
        y_true = rng.uniform(0.0, 1.0, size=(2, 4, width))
    mask = maskloss.mask_from_lengths([3, 1], 4)
    for weight in (None, rng.uniform(0.5, 2.0, size=(2, 4))):
        case = KerasCase(kind, y_true, y_pred, mask[..., None], weight)
        squeezed = KerasCase(kind, y_true, y_pred, mask, weight)
        for reduction in ("sum_over_batch_size", "sum", "none"):
            close(ours(case, reduction), real(case, reduction))
            close(ours(case, reduction), ours(squeezed, reduction), 0.0)
