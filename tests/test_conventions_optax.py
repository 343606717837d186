"""maskloss.conventions.optax against loop oracles and against optax 0.2.8 (jax x64).

Tolerances: ``rtol=1e-11, atol=1e-12`` against the oracles, ``rtol=1e-12, atol=1e-12``
against optax (both float64: jax runs under ``jax.enable_x64(True)``).
"""

from __future__ import annotations

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
