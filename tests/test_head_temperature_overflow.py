"""Logits whose x / T overflows float64 (temperature < 1, no softcap) keep their true loss.

Found by the ``head_options`` doctest under another seed (issue 25, the 20-seed run): logits of
``1.8e308`` at ``T = 1/2`` gave ``nan`` and a RuntimeWarning, while the row's softmax is
well defined (``x / T`` is ``2x``; the loss depends only on differences). The truth here is
computed with mpmath at 60 digits from the formula, not from maskloss.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import maskloss

M = float(np.finfo(np.float64).max)
mpmath.mp.dps = 60


def _exact(row: list[float], label: int, temperature: float) -> tuple[float, list[float]]:
    """-log softmax(x / T)_label and its gradient (softmax - onehot) / T, in mpmath."""
    h = [mpmath.mpf(v) / mpmath.mpf(temperature) for v in row]
    top = max(h)
    total = mpmath.fsum(mpmath.exp(v - top) for v in h)
    loss = -(h[label] - top - mpmath.log(total))
    p = [mpmath.exp(v - top) / total for v in h]
    grad = [(pk - (1 if k == label else 0)) / mpmath.mpf(temperature) for k, pk in enumerate(p)]
    return float(loss), [float(g) for g in grad]


ROWS = [
    ([M, M], 0, 0.5),  # the doctest's case: log 2
    ([M, M / 2, -M], 0, 0.5),
    ([M, M / 2, -M], 1, 0.25),
    ([-M, M * 0.75, M], 2, 0.5),
    ([1e308, 9.999999999999e307, 0.0], 1, 1e-3),
]


@pytest.mark.parametrize(("row", "label", "temperature"), ROWS)
def test_value_and_gradient_are_the_exact_ones(row: list[float], label: int, temperature: float) -> None:
    x, y = np.array([[row]]), np.array([[label]])
    want, want_grad = _exact(row, label, temperature)
    fn = maskloss.sparse_categorical_crossentropy
    got = fn(y, x, from_logits=True, temperature=temperature)
    value, grad = maskloss.value_and_grad(fn)(y, x, from_logits=True, temperature=temperature)
    assert got == pytest.approx(want, rel=1e-13, abs=1e-300)
    assert value == got
    np.testing.assert_allclose(grad[0, 0], want_grad, rtol=1e-12, atol=1e-300)


def test_the_doctest_case_under_shift_with_the_step_masked() -> None:
    # head_options' doctest, the falsifying example: step 0 is masked, but with shift=1 its
    # prediction scores the valid label at step 1, so it is a real row, not garbage.
    x = np.array([[[M, M], [0.0, 0.0]]])
    y, mask = np.array([[2, 0]]), np.array([[False, True]])
    got = maskloss.sparse_categorical_crossentropy(y, x, mask, from_logits=True, temperature=0.5, shift=1)
    assert got == pytest.approx(float(mpmath.log(2)), rel=1e-15)


def test_rows_that_do_not_overflow_keep_their_bits() -> None:
    rng = np.random.default_rng(0)
    ordinary = rng.normal(size=(1, 5, 4)) * 30
    labels = rng.integers(0, 4, size=(1, 5))
    fn = maskloss.sparse_categorical_crossentropy
    alone = fn(labels, ordinary, from_logits=True, temperature=0.3, reduction="none")
    mixed = np.concatenate([ordinary, np.array([[[M, M, 0.0, -M]]])], axis=1)
    beside = fn(np.concatenate([labels, [[1]]], axis=1), mixed, from_logits=True, temperature=0.3, reduction="none")
    assert np.array_equal(beside[:, :5], alone)  # bit for bit
    assert beside[0, 5] == pytest.approx(float(mpmath.log(2)), rel=1e-15)


def test_the_z_loss_of_an_overflowing_row_is_inf_not_nan() -> None:
    # lse(x / T) = 2 M + log 2 is beyond float64, so z lse^2 is +inf: the true value saturates.
    x, y = np.array([[[M, M]]]), np.array([[0]])
    value, grad = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
        y, x, from_logits=True, temperature=0.5, z_loss=1e-4)
    assert value == np.inf
    assert not np.isnan(grad).any()


def test_with_a_softcap_the_row_is_capped_exactly() -> None:
    # c tanh(x / (T c)) with x / T beyond float64 is c: logits (c, c, -c) give log 2.
    x, y = np.array([[[M, M / 2, -M]]]), np.array([[0]])
    got = maskloss.sparse_categorical_crossentropy(y, x, from_logits=True, temperature=0.5, softcap=30.0)
    want = -(30.0 - 30.0 - np.log(2 + np.exp(-60.0)))
    assert got == pytest.approx(want, rel=1e-15)


def test_token_logprobs_of_an_overflowing_row() -> None:
    x, y = np.array([[[M, M / 2, -M]]]), np.array([[1]])
    want, _ = _exact([M, M / 2, -M], 1, 0.5)
    got = maskloss.token_logprobs(y, x, temperature=0.5)
    assert got[0, 0] == pytest.approx(-want, rel=1e-13)


def test_a_z_loss_beyond_float64_is_inf_without_a_warning() -> None:
    # head_options' doctest under another seed: lse of (M, M) is M (rounded), z lse^2 is beyond
    # float64: +inf, while the slope 2 z lse (the gradient's factor) is finite.
    x, y = np.array([[[M, M]]]), np.array([[0]])
    value, grad = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
        y, x, from_logits=True, z_loss=0.0078125)
    assert value == np.inf
    np.testing.assert_allclose(grad[0, 0], [2 * 0.0078125 * M * 0.5] * 2, rtol=1e-15)
