"""Keras 3 conventions against a loop oracle and the installed Keras 3 (jax backend, float64).

Keras picks its backend once per process: this module sets KERAS_BACKEND=jax (setdefault)
before importing keras. The torch backend is checked in a subprocess. Float64 is enabled
(jax x64, keras floatx) for this module only and restored afterwards.

Tolerances: categorical and sparse cross-entropy match to float64 rounding (1e-12); MAE,
MSE and binary cross-entropy to 1e-6, because on jax/torch ``keras.ops.mean`` computes in
float32 even for float64 input (pinned by ``test_keras_feature_mean_runs_in_float32``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

import maskloss
from maskloss.conventions import keras3
from tests import oracles_keras
from tests.oracles_keras import KerasCase, keras_cases

os.environ.setdefault("KERAS_BACKEND", "jax")
jax = pytest.importorskip("jax")
keras = pytest.importorskip("keras")
from keras.src.backend import set_keras_mask  # noqa: E402

FUNCTIONS = {
    "mae": keras3.mean_absolute_error,
    "mse": keras3.mean_squared_error,
    "binary": keras3.binary_crossentropy,
    "categorical": keras3.categorical_crossentropy,
    "sparse": keras3.sparse_categorical_crossentropy,
}
CLASSES = {
    "mae": "MeanAbsoluteError",
    "mse": "MeanSquaredError",
    "binary": "BinaryCrossentropy",
    "categorical": "CategoricalCrossentropy",
    "sparse": "SparseCategoricalCrossentropy",
}
REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight", "sum", "none", None)
FRAMEWORK_REDUCTIONS = ("sum_over_batch_size", "mean_with_sample_weight", "sum", "none")
# A few fixed shapes: jax compiles every op once per new shape.
FRAMEWORK_CASES = keras_cases(
    shapes=((3, 4), (1, 1), (2, 5)),
    widths={"mae": (2,), "mse": (1,), "binary": (2,), "categorical": (4,), "sparse": (4,)},
    garbage=(-7.5, 1e3),
    label_garbage=(),
    weight_garbage=(-1.0, 5.0),
)


def tolerance(kind: str) -> float:
    return 1e-12 if kind in ("categorical", "sparse") else 1e-6


@pytest.fixture(scope="module", autouse=True)
def float64() -> Any:
    assert keras.backend.backend() == "jax", (
        f"keras was imported with the {keras.backend.backend()} backend before this module; "
        "run with KERAS_BACKEND=jax")
    config: Any = jax.config
    x64, floatx = bool(config.read("jax_enable_x64")), keras.config.floatx()
    # Keras caches its global dtype policy from floatx the first time a layer or loss asks for
    # it; restoring floatx alone left a float64 policy behind, and every later Keras test
    # requested float64 from jax without x64 (187 "truncated to float32" warnings). Save and
    # restore the policy too.
    policy = keras.config.dtype_policy()
    config.update("jax_enable_x64", True)
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_dtype_policy(policy)
    keras.config.set_floatx(floatx)
    config.update("jax_enable_x64", x64)


def ours(case: KerasCase, reduction: Any) -> Any:
    return FUNCTIONS[case.kind](case.y_true, case.y_pred, mask=case.mask, sample_weight=case.sample_weight,
                                reduction=reduction, **case.options)


def real(case: KerasCase, reduction: Any) -> Any:
    loss = getattr(keras.losses, CLASSES[case.kind])(reduction=reduction, **case.options)
    y_pred = keras.ops.convert_to_tensor(case.y_pred)
    if case.mask is not None:
        set_keras_mask(y_pred, keras.ops.convert_to_tensor(case.mask))
    return np.asarray(loss(case.y_true, y_pred, sample_weight=case.sample_weight))


def close(actual: Any, expected: Any, tol: float) -> None:
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=tol, atol=tol,
                               equal_nan=True)


# ------------------------------------------------------------------------------ oracle


@given(keras_cases())
def test_matches_loop_oracle(case: KerasCase) -> None:
    losses = case.oracle_losses("keras3")
    for reduction in REDUCTIONS:
        red = "sum_over_batch_size" if reduction == "mean" else reduction
        expected = oracles_keras.keras3_reduce(losses, case.oracle_mask, case.sample_weight, red)
        close(ours(case, reduction), expected, 1e-11)


def test_all_masked_is_zero() -> None:
    y = np.ones((2, 3, 2))
    for fn in (keras3.mean_absolute_error, keras3.binary_crossentropy, keras3.categorical_crossentropy):
        for red in ("sum_over_batch_size", "mean_with_sample_weight", "sum"):
            value = fn(y * 0.5, y * 0.25, mask=np.zeros((2, 3), bool), reduction=red,
                       sample_weight=[[1.0], [2.0]])
            assert value == 0


def test_bad_inputs_are_rejected_clearly() -> None:
    y = np.zeros((2, 3, 1))
    with pytest.raises(ValueError, match=r"pass shape \(B, 1\)"):
        keras3.mean_squared_error(y, y, sample_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="reduction must be one of"):
        keras3.mean_squared_error(y, y, reduction="token_mean")
    with pytest.raises(ValueError, match="mask must have shape"):
        keras3.mean_squared_error(y, y, mask=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="outside"):
        keras3.sparse_categorical_crossentropy([[0, 5]], np.ones((1, 2, 3)))
    with pytest.raises(TypeError, match="from_logits"):
        keras3.binary_crossentropy(y, y, from_logits="yes")  # type: ignore[arg-type]


def test_axis_argument_moves_the_class_axis() -> None:
    rng = np.random.default_rng(5)
    p = rng.random((2, 3, 4))
    t = np.eye(4)[rng.integers(0, 4, (2, 3))]
    a = keras3.categorical_crossentropy(t, p, reduction="none")
    b = keras3.categorical_crossentropy(np.moveaxis(t, -1, 1), np.moveaxis(p, -1, 1), axis=1,
                                        reduction="none")
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- real Keras 3


@settings(max_examples=20)
@given(FRAMEWORK_CASES)
def test_matches_keras3_loss_objects(case: KerasCase) -> None:
    for reduction in FRAMEWORK_REDUCTIONS:
        close(ours(case, reduction), real(case, reduction), tolerance(case.kind))


def test_reduction_aliases_match_keras3() -> None:
    rng = np.random.default_rng(0)
    mask = maskloss.mask_from_lengths([2, 4, 0], 4)
    case = KerasCase("mse", rng.normal(size=(3, 4, 1)), rng.normal(size=(3, 4, 1)), mask, rng.random((3, 1)))
    for reduction in ("mean", None):
        close(ours(case, reduction), real(case, reduction), 1e-6)


def test_one_weight_per_sequence_must_be_b_by_1_in_keras3_too() -> None:
    y = np.zeros((3, 4, 1))
    with pytest.raises(ValueError):
        keras.losses.MeanSquaredError()(y, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError):
        keras3.mean_squared_error(y, y, sample_weight=np.ones(3))
    # ... except when there is a single step: Keras then expands (B,) to (B, 1).
    rng = np.random.default_rng(4)
    case = KerasCase("mse", rng.normal(size=(3, 1, 2)), rng.normal(size=(3, 1, 2)), None, rng.random(3))
    close(ours(case, "sum_over_batch_size"), real(case, "sum_over_batch_size"), 1e-6)


def test_mean_with_sample_weight_divides_by_the_weights_as_given() -> None:
    # Hand-derived: every loss is 1; B=2, T=3. (B,1) weights [1, 3] and no mask:
    # sum = 3*1 + 3*3 = 12, divided by 1 + 3 = 4 (not 12). A scalar weight 2: 12 / 2 = 6.
    y_true, y_pred = np.zeros((2, 3, 1)), np.ones((2, 3, 1))
    w = np.array([[1.0], [3.0]])
    loss = keras.losses.MeanSquaredError(reduction="mean_with_sample_weight")
    assert float(loss(y_true, y_pred, sample_weight=w)) == pytest.approx(3.0)
    mwsw = "mean_with_sample_weight"
    assert keras3.mean_squared_error(y_true, y_pred, sample_weight=w, reduction=mwsw) == 3.0
    assert float(loss(y_true, y_pred, sample_weight=2.0)) == pytest.approx(6.0)
    assert keras3.mean_squared_error(y_true, y_pred, sample_weight=2.0, reduction=mwsw) == 6.0
    # With a mask (all valid), the weight is broadcast first: 12 / 12.
    assert keras3.mean_squared_error(y_true, y_pred, sample_weight=w, mask=np.ones((2, 3), bool),
                                     reduction="mean_with_sample_weight") == 1.0


def test_keras_feature_mean_runs_in_float32() -> None:
    # Found by the conformance run: keras.ops.mean casts float64 to float32 on jax
    # (keras/src/backend/common/dtypes.py BIT64_TO_BIT32_DTYPE), so MAE is not float64-exact.
    x = np.random.default_rng(0).random((4, 6, 2))
    keras_mae = np.asarray(keras.losses.mean_absolute_error(x, np.zeros_like(x)))
    assert keras_mae.dtype == np.float64
    err = np.max(np.abs(keras_mae - x.mean(axis=-1)))
    assert 1e-12 < err < 1e-6
    assert np.max(np.abs(keras_mae - x.astype(np.float32).mean(axis=-1, dtype=np.float32))) < 1e-7


# ----------------------------------------------------------------- through a real model

ACTIVATIONS = {"mae": None, "mse": None, "binary": "sigmoid", "categorical": "softmax", "sparse": "softmax"}


def _model(kind: str, steps: int, features: int, width: int) -> Any:
    keras.utils.set_random_seed(0)
    inp = keras.Input((steps, features))
    hidden = keras.layers.Masking(0.0)(inp)
    out = keras.layers.Dense(width, activation=ACTIVATIONS[kind])(hidden)
    return keras.Model(inp, out)


@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_model_evaluate_matches_convention_on_predict(kind: str) -> None:
    rng = np.random.default_rng(1)
    batch, steps, features, width = 3, 5, 2, 3
    x = rng.normal(size=(batch, steps, features))
    x[0, 3:] = 0.0   # right padding
    x[2, :4] = 0.0   # left padding
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
    model = _model(kind, steps, features, width)
    y_pred = np.asarray(model.predict(x, verbose=0))
    # One compile per case keeps the file fast (each evaluate traces and compiles).
    reduction = "mean_with_sample_weight" if kind in ("mse", "sparse") else "sum_over_batch_size"
    model.compile(loss=getattr(keras.losses, CLASSES[kind])(reduction=reduction, **options))
    for weight in (None, rng.uniform(0.5, 2.0, size=(batch, 1))):
        got = model.evaluate(x, y, sample_weight=weight, batch_size=batch, verbose=0)
        expected = FUNCTIONS[kind](y, y_pred, mask=mask, sample_weight=weight, reduction=reduction, **options)
        assert got == pytest.approx(float(expected), rel=tolerance(kind), abs=tolerance(kind))


def test_model_all_masked_evaluates_to_zero() -> None:
    x = np.zeros((2, 4, 2))
    y = np.ones((2, 4, 3))
    model = _model("mse", 4, 2, 3)
    model.compile(loss="mse")
    assert model.evaluate(x, y, batch_size=2, verbose=0) == 0.0
    y_pred = np.asarray(model.predict(x, verbose=0))
    assert keras3.mean_squared_error(y, y_pred, mask=maskloss.mask_from_padding(x)) == 0.0


def test_softmax_output_is_clipped_on_jax() -> None:
    # docs/reference/framework-conventions.md: logits [30, 0, -30], softmax, target class 3: 16.118 on jax/torch.
    model = _model("categorical", 1, 1, 3)
    dense = model.layers[-1]
    dense.set_weights([np.zeros((1, 3)), np.array([30.0, 0.0, -30.0])])
    model.compile(loss="categorical_crossentropy")
    x = np.ones((1, 1, 1))
    y = np.array([[[0.0, 0.0, 1.0]]])
    got = model.evaluate(x, y, verbose=0)
    assert got == pytest.approx(-np.log(1e-7), rel=1e-12)
    p = np.asarray(model.predict(x, verbose=0))
    assert float(keras3.categorical_crossentropy(y, p)) == pytest.approx(got, rel=1e-12)
    unclipped = keras3.categorical_crossentropy(y, np.log(p), from_logits=True)
    assert float(unclipped) == pytest.approx(60.0, rel=1e-9)


# ------------------------------------------------------------------- torch backend

TORCH_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import keras
    from keras.src.backend import set_keras_mask
    keras.config.set_floatx("float64")
    args = json.loads(sys.stdin.read())
    out = {"backend": keras.backend.backend()}
    for name, spec in args.items():
        loss = getattr(keras.losses, spec["cls"])(reduction=spec["reduction"], **spec["options"])
        y_pred = keras.ops.convert_to_tensor(np.array(spec["y_pred"]))
        set_keras_mask(y_pred, keras.ops.convert_to_tensor(np.array(spec["mask"])))
        out[name] = float(loss(np.array(spec["y_true"]), y_pred, sample_weight=np.array(spec["weight"])))
    # A (B, 1) weight with a mask: apply_mask does `sample_weight *= float_mask` in place.
    y_pred = keras.ops.convert_to_tensor(np.ones((2, 3, 1)))
    set_keras_mask(y_pred, keras.ops.convert_to_tensor(np.ones((2, 3), bool)))
    try:
        keras.losses.MeanSquaredError()(np.zeros((2, 3, 1)), y_pred, sample_weight=np.ones((2, 1)))
        out["column_weight_with_mask"] = "ok"
    except RuntimeError as exc:
        out["column_weight_with_mask"] = "RuntimeError: " + str(exc)
    print(json.dumps(out))
""")


def test_torch_backend_uses_the_same_clipping_path() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    mask = maskloss.mask_from_lengths([2, 3], 3)
    z = rng.normal(size=(2, 3, 3)) * 30  # probabilities that hit the clip
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs[0, 0, 1] = 0.0
    labels = np.array([[2, 0, -1], [1, -1, 0]])
    weight = rng.uniform(0.5, 2.0, size=(2, 3))  # (B, 1) fails with a mask on torch, see below
    specs = {
        "categorical": {"cls": "CategoricalCrossentropy", "reduction": "sum_over_batch_size",
                        "options": {"label_smoothing": 0.1}, "y_true": np.eye(3)[np.abs(labels)],
                        "y_pred": probs},
        "sparse": {"cls": "SparseCategoricalCrossentropy", "reduction": "mean_with_sample_weight",
                   "options": {"ignore_class": -1}, "y_true": labels, "y_pred": probs},
        "binary": {"cls": "BinaryCrossentropy", "reduction": "sum", "options": {},
                   "y_true": (labels[..., None] > 0).astype(float),
                   "y_pred": probs[..., :1] / probs.sum(-1, keepdims=True)},
    }
    payload = {k: {**v, "mask": mask.tolist(), "weight": weight.tolist(),
                   "y_true": np.asarray(v["y_true"]).tolist(), "y_pred": np.asarray(v["y_pred"]).tolist()}
               for k, v in specs.items()}
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    proc = subprocess.run([sys.executable, "-c", TORCH_SCRIPT], input=json.dumps(payload), env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["backend"] == "torch"
    # Found here: on torch, a (B, 1) sample weight with a Keras mask raises (in-place
    # broadcast in keras/src/losses/loss.py apply_mask); jax broadcasts it. The convention
    # follows jax; this pins the torch bug so a fixed Keras shows up.
    assert got["column_weight_with_mask"].startswith("RuntimeError"), got["column_weight_with_mask"]
    fns = {"categorical": keras3.categorical_crossentropy, "sparse": keras3.sparse_categorical_crossentropy,
           "binary": keras3.binary_crossentropy}
    for name, spec in specs.items():
        expected = fns[name](spec["y_true"], spec["y_pred"], mask=mask, sample_weight=weight,
                             reduction=spec["reduction"], **spec["options"])
        # 1e-6: the torch backend rounds through float32 somewhere even with floatx float64
        # (measured 4e-9 relative); the clipping path pinned here changes values by O(1).
        assert got[name] == pytest.approx(float(expected), rel=1e-6), name


def test_conformance_runner_protocol() -> None:
    from maskloss.conformance import keras3 as runner

    assert runner.FRAMEWORK == "keras3 (jax backend)"
    assert runner.version() == keras.__version__
    results = runner.run(np.random.default_rng(0), 1)
    assert len(results) == len(runner.LOSSES) * len(runner.REDUCTIONS)
    failed = [r for r in results if not r.passed]
    assert not failed, failed
    assert keras.config.floatx() == "float64"  # the module fixture's setting is restored


@pytest.mark.parametrize("kind", sorted(FUNCTIONS))
def test_mask_with_a_trailing_axis_of_one_is_squeezed_like_keras3(kind: str) -> None:
    # Keras 3's own tests pass (B, T, 1) masks for (B, T) losses; squeeze_or_expand_to_same_rank
    # squeezes them. Compared with the real loss objects, with and without sample weights.
    rng = np.random.default_rng(11)
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
        for reduction in FRAMEWORK_REDUCTIONS:
            close(ours(case, reduction), real(case, reduction), tolerance(kind))
            close(ours(case, reduction), ours(squeezed, reduction), 0.0)


def test_mask_of_b_by_1_for_per_sequence_losses() -> None:
    # (B, C) predictions have (B,) steps; a (B, 1) mask is squeezed (Keras expands the losses).
    rng = np.random.default_rng(12)
    y_pred = rng.uniform(0.05, 0.95, size=(3, 4))
    y_true = np.eye(4)[[0, 2, 3]]
    mask = np.array([[True], [False], [True]])
    case = KerasCase("categorical", y_true, y_pred, mask, None)
    for reduction in FRAMEWORK_REDUCTIONS:
        expected = real(case, reduction)
        if reduction == "none":  # Keras expanded the (B,) losses to (B, 1); the mirror keeps (B,)
            assert expected.shape == (3, 1)
            expected = expected[:, 0]
        close(ours(case, reduction), expected, 1e-12)


def test_the_float64_setting_is_undone_dtype_policy_included():
    """The fixture's restore, replayed from a float32 state: nothing float64 may stay behind."""
    config: Any = jax.config
    inside = (bool(config.read("jax_enable_x64")), keras.config.floatx(), keras.config.dtype_policy())
    try:
        config.update("jax_enable_x64", False)
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
        assert hasattr(float64, "__wrapped__"), "this pytest hides the fixture function: replay it another way"
        gen = float64.__wrapped__()
        next(gen)
        assert keras.config.dtype_policy().name == "float64"
        next(gen, None)
        assert keras.config.dtype_policy().name == "float32"
        assert keras.config.floatx() == "float32" and not config.read("jax_enable_x64")
    finally:
        config.update("jax_enable_x64", inside[0])
        keras.config.set_floatx(inside[1])
        keras.config.set_dtype_policy(inside[2])
