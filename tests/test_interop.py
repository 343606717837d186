"""Framework tensors as inputs: torch (requires_grad, bfloat16, non-contiguous) and jax arrays.

The oracle is the same call on the numpy copy of the data: a tensor must give bit-for-bit the
value (and gradient) of its numpy twin, for every loss, mask helper and ``value_and_grad``.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import maskloss
from maskloss.gradients import value_and_grad

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(2, 3, 4))
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
ONEHOT = np.eye(4)[[[0, 1, 2], [3, 0, 1]]]
LABELS = np.array([[0, 1, 2], [3, 0, -100]])
MASK = np.array([[True, True, False], [True, False, False]])
WEIGHT = np.array([1.0, 2.0])

# (loss, y_true, y_pred, keyword arguments)
CALLS = [
    (maskloss.mae, ONEHOT, PROBS, {}),
    (maskloss.mse, ONEHOT, PROBS, {}),
    (maskloss.binary_crossentropy, ONEHOT, PROBS, {}),
    (maskloss.categorical_crossentropy, ONEHOT, LOGITS, {"from_logits": True}),
    (maskloss.sparse_categorical_crossentropy, LABELS, LOGITS, {"from_logits": True, "ignore_index": -100}),
]
IDS = [c[0].__name__ for c in CALLS]


def tensor(a, **kw):
    return torch.tensor(a, **kw)


@pytest.mark.parametrize(("fn", "y_true", "y_pred", "kw"), CALLS, ids=IDS)
def test_requires_grad_tensor_gives_the_numpy_value(fn, y_true, y_pred, kw):
    expected = fn(y_true, y_pred, MASK, sample_weight=WEIGHT, **kw)
    got = fn(
        tensor(y_true),
        tensor(y_pred, requires_grad=True),
        tensor(MASK),
        sample_weight=tensor(WEIGHT, requires_grad=True),
        **kw,
    )
    assert got == expected
    assert isinstance(got, np.float64)


@pytest.mark.parametrize(("fn", "y_true", "y_pred", "kw"), CALLS, ids=IDS)
def test_value_and_grad_of_a_requires_grad_tensor(fn, y_true, y_pred, kw):
    expected_value, expected_grad = value_and_grad(fn)(y_true, y_pred, MASK, **kw)
    pred = tensor(y_pred, requires_grad=True)
    value, grad = value_and_grad(fn)(tensor(y_true), pred, tensor(MASK), **kw)
    assert value == expected_value
    np.testing.assert_array_equal(grad, expected_grad)
    assert isinstance(grad, np.ndarray) and grad.dtype == np.float64
    assert pred.grad is None  # the caller's autograd graph is left alone


@pytest.mark.parametrize(("fn", "y_true", "y_pred", "kw"), CALLS, ids=IDS)
def test_bfloat16_tensor_is_widened_exactly(fn, y_true, y_pred, kw):
    low = tensor(y_pred, dtype=torch.bfloat16, requires_grad=True)
    # The exact float64 values of the bfloat16 numbers: bfloat16 -> float32 -> float64 is exact.
    exact = low.detach().to(torch.float64).numpy()
    assert fn(y_true, low, MASK, **kw) == fn(y_true, exact, MASK, **kw)


def test_non_contiguous_and_negative_views():
    t = tensor(LOGITS).transpose(0, 1)  # (3, 2, 4), a strided view
    labels = LABELS.T.copy()
    labels[labels < 0] = 0
    expected = maskloss.sparse_categorical_crossentropy(labels, LOGITS.transpose(1, 0, 2), from_logits=True)
    assert maskloss.sparse_categorical_crossentropy(tensor(labels), t, from_logits=True) == expected
    neg = tensor(PROBS)._neg_view()  # lazy negation bit: numpy must see the negated values
    np.testing.assert_array_equal(
        maskloss.mse(ONEHOT, neg, reduction="none"), maskloss.mse(ONEHOT, -PROBS, reduction="none")
    )


def test_mask_helpers_accept_tensors():
    lengths = tensor([2, 1])
    np.testing.assert_array_equal(maskloss.mask_from_lengths(lengths, 3), maskloss.mask_from_lengths([2, 1], 3))
    np.testing.assert_array_equal(maskloss.mask_from_ids(tensor(LABELS), -100), LABELS != -100)
    x = tensor(ONEHOT * MASK[..., None], requires_grad=True)
    np.testing.assert_array_equal(maskloss.mask_from_padding(x), MASK)
    np.testing.assert_array_equal(maskloss.mask_from_sentinel(tensor(ONEHOT), tensor([0.0, 0, 0, 1])), LABELS != 3)
    m = tensor(MASK)
    np.testing.assert_array_equal(maskloss.lengths_from_mask(m), [2, 1])
    assert maskloss.padding_side(m) == "right"
    x_left, m_left = maskloss.repad(tensor(LOGITS, requires_grad=True), m, side="left")
    x_ref, m_ref = maskloss.repad(LOGITS, MASK, side="left")
    np.testing.assert_array_equal(x_left, x_ref)
    np.testing.assert_array_equal(m_left, m_ref)


def test_masked_totals_accepts_tensors():
    fn = maskloss.masked_totals(maskloss.mse)
    got = fn(tensor(ONEHOT), tensor(PROBS, requires_grad=True), tensor(MASK))
    ref = fn(ONEHOT, PROBS, MASK)
    np.testing.assert_array_equal(got.numerator, ref.numerator)


def test_jax_arrays_are_accepted_bfloat16_included():
    jnp = pytest.importorskip("jax.numpy")
    pred = jnp.asarray(PROBS, dtype=jnp.bfloat16)
    exact = np.asarray(pred).astype(np.float64)
    assert maskloss.mse(jnp.asarray(ONEHOT), pred, jnp.asarray(MASK)) == maskloss.mse(ONEHOT, exact, MASK)


def test_interop_imports_no_framework():
    code = (
        "import sys, maskloss, numpy as np; from maskloss._interop import to_numpy;"
        "to_numpy(np.zeros(2)); maskloss.mse([[[1.0]]], [[[0.0]]]);"
        "print(sorted(m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
