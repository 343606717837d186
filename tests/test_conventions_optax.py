"""maskloss.conventions.optax against loop oracles and against optax 0.2.8 (jax x64).

Tolerances: ``rtol=1e-11, atol=1e-12`` against the oracles, ``rtol=1e-12, atol=1e-12``
against optax (both float64: jax runs under ``jax.enable_x64(True)``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskloss.conventions import optax as ox
from tests import oracles_frameworks as oracle
from tests.cases import _array, assert_matches, masks

MODES = ("none", "row", "class")
FRAMEWORK = settings(max_examples=30, deadline=None)


@pytest.fixture(scope="module")
def optax_fns():
    """optax's two functions, jitted (one compile per shape), called in float64."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jnp = jax.numpy
    soft = jax.jit(optax.softmax_cross_entropy, static_argnames=("axis",))
    integer = jax.jit(optax.softmax_cross_entropy_with_integer_labels, static_argnames=("axis",))

    def call(fn, logits, labels, axis=-1, where=None):
        with jax.enable_x64(True):
            w = None if where is None else jnp.asarray(where)
            return np.asarray(
                fn(jnp.asarray(logits, dtype=jnp.float64), jnp.asarray(labels), axis=axis, where=w)
            )

    return {
        "soft": lambda *a, **k: call(soft, *a, **k),
        "integer": lambda *a, **k: call(integer, *a, **k),
    }


@st.composite
def batches(draw, shapes=None):
    """(B, T, C) logits, soft and integer labels, and a where of the drawn mode."""
    if shapes is None:
        batch, steps, classes = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(2, 5))
    else:
        batch, steps, classes = draw(st.sampled_from(shapes))
    logits = _array(draw, (batch, steps, classes), -10.0, 10.0)
    soft = _array(draw, (batch, steps, classes), 0.0, 1.0)
    labels = np.array(
        draw(st.lists(st.integers(0, classes - 1), min_size=batch * steps, max_size=batch * steps))
    ).reshape(batch, steps)
    mode = draw(st.sampled_from(MODES))
    where = None
    if mode == "row":
        where = draw(masks(batch, steps))
        logits[~where] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))
        soft[~where] = np.nan
        labels = np.where(where, labels, draw(st.sampled_from([-100, 10**6, classes])))
    elif mode == "class":
        flat = draw(st.lists(st.booleans(), min_size=logits.size, max_size=logits.size))
        where = np.array(flat).reshape(logits.shape)
    return logits, soft, labels, where


def _axis1(arr):
    return arr if arr is None or arr.ndim < 3 else np.moveaxis(arr, -1, 1)


@given(batches(), st.booleans())
def test_softmax_cross_entropy_matches_the_oracle(case, classes_on_axis1):
    logits, soft, _, where = case
    expected = oracle.optax_softmax_cross_entropy(logits, soft, where)
    if classes_on_axis1:
        out = ox.softmax_cross_entropy(_axis1(logits), _axis1(soft), axis=1, where=_axis1(where))
    else:
        out = ox.softmax_cross_entropy(logits, soft, where=where)
    assert out.dtype == np.float64
    assert_matches(out, expected, rtol=1e-11, atol=1e-12)


@given(batches(), st.booleans())
def test_integer_labels_match_the_oracle(case, classes_on_axis1):
    logits, _, labels, where = case
    expected = oracle.optax_integer_labels(logits, labels, where)
    if classes_on_axis1:
        out = ox.softmax_cross_entropy_with_integer_labels(
            _axis1(logits), labels, axis=1, where=_axis1(where)
        )
    else:
        out = ox.softmax_cross_entropy_with_integer_labels(logits, labels, where=where)
    assert_matches(out, expected, rtol=1e-11, atol=1e-12)


# Few shapes: jax compiles per shape.
SHAPES = ((1, 1, 2), (2, 3, 4), (3, 5, 3))


@FRAMEWORK
@given(case=batches(SHAPES), classes_on_axis1=st.booleans())
def test_softmax_cross_entropy_matches_optax(optax_fns, case, classes_on_axis1):
    logits, soft, _, where = case
    axis = 1 if classes_on_axis1 else -1
    if classes_on_axis1:
        logits, soft, where = _axis1(logits), _axis1(soft), _axis1(where)
    expected = optax_fns["soft"](logits, soft, axis=axis, where=where)
    assert_matches(ox.softmax_cross_entropy(logits, soft, axis=axis, where=where), expected)


@FRAMEWORK
@given(case=batches(SHAPES), classes_on_axis1=st.booleans())
def test_integer_labels_match_optax(optax_fns, case, classes_on_axis1):
    logits, _, labels, where = case
    axis = 1 if classes_on_axis1 else -1
    if classes_on_axis1:
        logits, where = _axis1(logits), _axis1(where)
    expected = optax_fns["integer"](logits, labels, axis=axis, where=where)
    assert_matches(
        ox.softmax_cross_entropy_with_integer_labels(logits, labels, axis=axis, where=where), expected
    )


def test_row_mask_gives_exact_zeros_whatever_the_padding_holds(optax_fns):
    logits = np.array([[[1.0, 2.0, 3.0], [np.nan, np.inf, -np.inf]]])
    labels = np.array([[2, 10**6]])
    where = np.array([[True, False]])
    ours = ox.softmax_cross_entropy_with_integer_labels(logits, labels, where=where)
    np.testing.assert_array_equal(ours[:, 1], [0.0])
    assert_matches(ours, optax_fns["integer"](logits, labels, where=where))
    soft = np.array([[[0.0, 0.0, 1.0], [np.nan, np.nan, np.nan]]])
    assert_matches(
        ox.softmax_cross_entropy(logits, soft, where=where), optax_fns["soft"](logits, soft, where=where)
    )


def test_class_mask_excluding_the_label_gives_a_negative_loss(optax_fns):
    logits = np.array([[0.0, 0.0, 5.0]])
    where = np.array([[True, True, False]])
    ours = ox.softmax_cross_entropy_with_integer_labels(logits, np.array([2]), where=where)
    assert ours[0] == pytest.approx(np.log(2.0) - 5.0, rel=1e-15)
    assert_matches(ours, optax_fns["integer"](logits, np.array([2]), where=where))


@pytest.mark.parametrize("label", [-1, -3, -4, 3, 99])
def test_labels_out_of_range_wrap_or_give_nan_like_jax(optax_fns, label):
    logits = np.array([[0.5, 1.0, 2.0]])
    ours = ox.softmax_cross_entropy_with_integer_labels(logits, np.array([label]))
    assert np.isnan(ours[0]) == (label not in (-1, -3))
    assert_matches(ours, optax_fns["integer"](logits, np.array([label])))


def test_tuple_axis_matches_optax(optax_fns):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 4))
    labels = np.array([5, 11])  # flat indices into the (3, 4) slice
    ours = ox.softmax_cross_entropy_with_integer_labels(logits, labels, axis=(1, 2))
    assert_matches(ours, optax_fns["integer"](logits, labels, axis=(1, 2)))
    soft = rng.random((2, 3, 4))
    assert_matches(
        ox.softmax_cross_entropy(logits, soft, axis=(1, 2)), optax_fns["soft"](logits, soft, axis=(1, 2))
    )


def test_inputs_are_not_written():
    logits = np.array([[[1.0, np.nan]]])
    where = np.array([[[True, False]]])
    before = logits.copy()
    ox.softmax_cross_entropy(logits, np.array([[[1.0, 0.0]]]), where=where)
    ox.softmax_cross_entropy_with_integer_labels(logits, np.array([[0]]), where=where)
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ox.softmax_cross_entropy([[1, 2]], [[1.0, 0.0]]), TypeError, "floating point"),
        (lambda: ox.softmax_cross_entropy_with_integer_labels([[1.0, 2.0]], [0.0]), TypeError, "integers"),
        (
            lambda: ox.softmax_cross_entropy_with_integer_labels([[1.0, 2.0]], [0, 1]),
            ValueError,
            "labels must",
        ),
        (lambda: ox.softmax_cross_entropy([[1.0, 2.0]], [[1.0, 0.0, 0.0]]), ValueError, "broadcast"),
        (lambda: ox.softmax_cross_entropy([[1.0, 2.0]], [[1.0, 0.0]], axis=2), ValueError, "out of range"),
        (
            lambda: ox.softmax_cross_entropy([[1.0, 2.0]], [[1.0, 0.0]], where=[True, False, True]),
            ValueError,
            "where",
        ),
    ],
)
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------- sigmoid, safe and poly cross-entropies


def _log_sigmoid_loop(x: float) -> float:
    if math.isnan(x):
        return math.nan
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _sigmoid_oracle(logits, labels):
    out = np.empty(np.broadcast_shapes(logits.shape, labels.shape))
    x_b, y_b = np.broadcast_arrays(logits, labels)
    for idx in np.ndindex(out.shape):
        x, y = float(x_b[idx]), float(y_b[idx])
        a, b = _log_sigmoid_loop(x), _log_sigmoid_loop(-x)
        out[idx] = -(y * a) - (1.0 - y) * b
    return out


def _row_log_softmax(row, include):
    kept = [float(v) for v, k in zip(row, include, strict=True) if k]
    if not kept:
        return None
    top = max(kept)
    lse = top + math.log(math.fsum(math.exp(v - top) for v in kept))
    return [float(v) - lse for v in row]


def _safe_oracle(logits, labels):
    out = np.empty(logits.shape[:-1])
    for idx in np.ndindex(out.shape):
        log_p = _row_log_softmax(logits[idx], [True] * logits.shape[-1])
        out[idx] = -math.fsum(y * lp for y, lp in zip(labels[idx], log_p, strict=True) if y != 0)
    return out


def _poly_oracle(logits, labels, where, epsilon):
    out = np.empty(logits.shape[:-1])
    include_all = np.ones(logits.shape, bool) if where is None else np.broadcast_to(where, logits.shape)
    for idx in np.ndindex(out.shape):
        include = include_all[idx]
        log_p = _row_log_softmax(logits[idx], include)
        if log_p is None:
            out[idx] = 0.0
            continue
        ce = -math.fsum(y * lp for y, lp, k in zip(labels[idx], log_p, include, strict=True) if k)
        pt = math.fsum(y * (1 - math.exp(lp)) for y, lp, k in zip(labels[idx], log_p, include, strict=True) if k)
        out[idx] = ce + epsilon * pt
    return out


@pytest.fixture(scope="module")
def optax_more():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jnp = jax.numpy
    sigmoid = jax.jit(optax.sigmoid_binary_cross_entropy)
    safe = jax.jit(optax.safe_softmax_cross_entropy)
    poly = jax.jit(optax.losses.poly_loss_cross_entropy, static_argnames=("axis",))  # not re-exported at top level

    def run(fn, *args, **kwargs):
        with jax.enable_x64(True):
            conv = [jnp.asarray(a, dtype=jnp.float64) for a in args]
            kw = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
            return np.asarray(fn(*conv, **kw))

    return {
        "sigmoid": lambda *a: run(sigmoid, *a),
        "safe": lambda *a: run(safe, *a),
        "poly": lambda *a, **k: run(poly, *a, **k),
    }


SPECIAL = st.sampled_from([0.0, -np.inf, np.inf, 40.0, -40.0, 1e300, -800.0])


@st.composite
def binary_cases(draw):
    shape = draw(st.sampled_from([(2, 3), (1, 4, 2)]))
    logits = _array(draw, shape, -30.0, 30.0)
    if draw(st.booleans()):
        logits.flat[0] = draw(SPECIAL)
    labels = _array(draw, shape, 0.0, 1.0)
    if draw(st.booleans()):
        labels = np.round(labels)
    return logits, labels


@given(binary_cases())
def test_sigmoid_binary_cross_entropy_matches_the_oracle(case):
    logits, labels = case
    assert_matches(ox.sigmoid_binary_cross_entropy(logits, labels), _sigmoid_oracle(logits, labels),
                   rtol=1e-12, atol=1e-12)


@FRAMEWORK
@given(binary_cases())
def test_sigmoid_binary_cross_entropy_matches_optax(optax_more, case):
    logits, labels = case
    assert_matches(ox.sigmoid_binary_cross_entropy(logits, labels), optax_more["sigmoid"](logits, labels))


def test_sigmoid_labels_broadcast(optax_more):
    logits, labels = np.array([[0.5, -1.0, 3.0]]), np.array([1.0, 0.0, 0.5])
    assert_matches(ox.sigmoid_binary_cross_entropy(logits, labels), optax_more["sigmoid"](logits, labels))
    with pytest.raises(ValueError, match="must broadcast"):
        ox.sigmoid_binary_cross_entropy(logits, np.ones(2))


@st.composite
def soft_cases(draw):
    batch, steps, classes = draw(st.sampled_from(SHAPES))
    logits = _array(draw, (batch, steps, classes), -10.0, 10.0)
    labels = _array(draw, (batch, steps, classes), 0.0, 1.0)
    zeros = np.array(draw(st.lists(st.booleans(), min_size=logits.size, max_size=logits.size))).reshape(logits.shape)
    labels = np.where(zeros, 0.0, labels)
    if draw(st.booleans()):  # -inf logits where the label is 0: 0 log 0 = 0 in the safe version
        logits = np.where(zeros & (np.arange(classes) > 0), -np.inf, logits)
    return logits, labels


@given(soft_cases())
def test_safe_softmax_cross_entropy_matches_the_oracle(case):
    logits, labels = case
    assert_matches(ox.safe_softmax_cross_entropy(logits, labels), _safe_oracle(logits, labels),
                   rtol=1e-11, atol=1e-12)


@FRAMEWORK
@given(soft_cases())
def test_safe_softmax_cross_entropy_matches_optax(optax_more, case):
    logits, labels = case
    assert_matches(ox.safe_softmax_cross_entropy(logits, labels), optax_more["safe"](logits, labels))


@st.composite
def poly_cases(draw):
    logits, labels = draw(soft_cases())
    logits = np.where(np.isinf(logits), 0.0, logits)
    batch, steps, _ = logits.shape
    mode = draw(st.sampled_from(MODES))
    where = None
    if mode == "row":
        where = draw(masks(batch, steps))[..., None]
        logits = np.where(where, logits, np.nan)  # NaN under a (B, T, 1) row mask
    elif mode == "class":
        where = np.array(draw(st.lists(st.booleans(), min_size=logits.size, max_size=logits.size)))
        where = where.reshape(logits.shape)
    epsilon = draw(st.sampled_from([2.0, -1.0, 0.0, 0.5]))
    return logits, labels, where, epsilon


@given(poly_cases())
def test_poly_loss_matches_the_oracle(case):
    logits, labels, where, epsilon = case
    out = ox.poly_loss_cross_entropy(logits, labels, epsilon=epsilon, where=where)
    assert_matches(out, _poly_oracle(logits, labels, where, epsilon), rtol=1e-11, atol=1e-12)


@FRAMEWORK
@given(case=poly_cases(), classes_on_axis1=st.booleans())
def test_poly_loss_matches_optax(optax_more, case, classes_on_axis1):
    logits, labels, where, epsilon = case
    axis = -1
    if classes_on_axis1:
        axis, logits, labels = 1, _axis1(logits), _axis1(labels)
        where = None if where is None else np.moveaxis(where, -1, 1)
    kwargs = {"epsilon": epsilon, "axis": axis} if where is None else {"epsilon": epsilon, "axis": axis, "where": where}
    expected = optax_more["poly"](logits, labels, **kwargs)
    assert_matches(ox.poly_loss_cross_entropy(logits, labels, **kwargs), expected)


def test_poly_loss_row_mask_must_be_given_with_a_class_axis_of_one(optax_more):
    logits, labels = np.zeros((2, 3, 4)), np.full((2, 3, 4), 0.25)
    with pytest.raises(ValueError, match=r"pass it as shape \(\.\.\., 1\)"):
        ox.poly_loss_cross_entropy(logits, labels, where=np.ones((2, 3), bool))
    with pytest.raises(TypeError, match="floating point"):
        ox.poly_loss_cross_entropy(logits, np.ones((2, 3, 4), int))
