"""maskloss.head: the head math (temperature, softcap, z-loss) against a loop oracle and torch autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskloss._checks import check_head_option
from maskloss.head import (
    apply_head,
    head_cross_entropy,
    logsumexp,
    softcap,
    z_loss_grad,
    z_loss_terms,
)

OPTIONS = [
    (1.0, None, 0.0),
    (0.7, None, 0.0),
    (1.0, 5.0, 0.0),
    (1.0, None, 1e-3),
    (1.3, 2.5, 0.2),
]


def loop_head_cross_entropy(labels, logits, temperature, cap, z):
    """The head's loss, one row and one class at a time with the math module."""
    out = []
    for y, row in zip(labels, logits, strict=True):
        h = []
        for x in row:
            v = x / temperature
            if cap is not None and v != -math.inf:
                v = cap * math.tanh(v / cap)
            h.append(v)
        m = max(h)
        lse = m + math.log(sum(math.exp(v - m) for v in h))
        out.append(lse - h[y] + z * lse * lse)
    return np.array(out)


def _batch(seed, n=6, v=7, scale=4.0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, v, size=n), rng.normal(size=(n, v)) * scale


@pytest.mark.parametrize("temperature,cap,z", OPTIONS)
def test_head_cross_entropy_matches_loop_oracle(temperature, cap, z):
    labels, logits = _batch(0)
    got = head_cross_entropy(labels, logits, temperature=temperature, cap=cap, z=z)
    np.testing.assert_allclose(got, loop_head_cross_entropy(labels, logits, temperature, cap, z), rtol=1e-13)


@pytest.mark.parametrize("temperature,cap,z", OPTIONS)
def test_head_gradient_matches_torch_autograd(temperature, cap, z):
    labels, logits = _batch(1)
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    h = x / temperature
    if cap is not None:
        h = torch.tanh(h / cap) * cap  # Gemma 2's final_logit_softcapping, as transformers writes it
    lse = torch.logsumexp(h, dim=-1)
    loss = torch.nn.functional.cross_entropy(h, torch.tensor(labels), reduction="none") + z * lse**2
    loss.sum().backward()
    value, grad = head_cross_entropy(labels, logits, temperature=temperature, cap=cap, z=z, grad=True)
    # torch takes log of the row's sum (error ~ eps * lse), maskloss log1p without the top term
    # (issue 25: the value of the gradient path is the loss's own): a confident row's tiny loss
    # (4.056008295023977e-05 by mpmath at seed 1, T 0.7; torch 2.5e-12 relative off) needs an atol.
    np.testing.assert_allclose(value, loss.detach().numpy(), rtol=1e-12, atol=4e-16 * float(lse.detach().abs().max()))
    assert x.grad is not None
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_z_loss_terms_and_gradient_match_torch():
    _, logits = _batch(2)
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    term = 0.3 * torch.logsumexp(x, dim=-1) ** 2
    term.sum().backward()
    np.testing.assert_allclose(z_loss_terms(logits, 0.3), term.detach().numpy(), rtol=1e-13)
    assert x.grad is not None
    np.testing.assert_allclose(z_loss_grad(logits, 0.3), x.grad.numpy(), rtol=1e-12)


def test_softcap_keeps_padded_vocab_lanes_at_probability_zero():
    """unsloth#10616: tanh maps -inf to -cap and leaks mass to a padded vocabulary lane."""
    labels, logits = _batch(3)
    padded = np.concatenate([logits, np.full((logits.shape[0], 3), -np.inf)], axis=1)
    h = softcap(padded, 2.0)
    assert np.isneginf(h[:, -3:]).all()
    value, grad = head_cross_entropy(labels, padded, cap=2.0, z=0.1, grad=True)
    ref_value, ref_grad = head_cross_entropy(labels, logits, cap=2.0, z=0.1, grad=True)
    np.testing.assert_array_equal(value, ref_value)
    np.testing.assert_array_equal(grad[:, -3:], 0.0)
    np.testing.assert_allclose(grad[:, :-3], ref_grad, rtol=1e-15)


def test_logsumexp_of_huge_logits_is_finite():
    np.testing.assert_array_equal(logsumexp(np.array([[1e308, 1e308]])), [1e308 + math.log(2)])


def test_the_head_never_writes_into_the_callers_logits():
    _, logits = _batch(4)
    before = logits.copy()
    head_cross_entropy(np.zeros(6, dtype=np.intp), logits, temperature=2.0, cap=1.5, z=0.5, grad=True)
    np.testing.assert_array_equal(logits, before)


rows = st.integers(1, 5).flatmap(
    lambda v: st.tuples(
        st.lists(st.integers(0, v - 1), min_size=1, max_size=4),
        st.lists(st.floats(-30, 30), min_size=v, max_size=v),
    )
)


@settings(max_examples=60, deadline=None)
@given(rows, st.floats(0.1, 10.0))
def test_a_huge_softcap_equals_no_softcap(case, temperature):
    labels, row = case
    logits = np.tile(np.array(row), (len(labels), 1))
    lab = np.array(labels)
    np.testing.assert_allclose(
        head_cross_entropy(lab, logits, temperature=temperature, cap=1e12),
        head_cross_entropy(lab, logits, temperature=temperature),
        rtol=1e-9,
        atol=1e-12,
    )


@settings(max_examples=60, deadline=None)
@given(rows, st.floats(0.1, 10.0), st.one_of(st.none(), st.floats(0.5, 50.0)))
def test_z_loss_zero_equals_no_z_loss(case, temperature, cap):
    labels, row = case
    logits = np.tile(np.array(row), (len(labels), 1))
    lab = np.array(labels)
    with_zero = head_cross_entropy(lab, logits, temperature=temperature, cap=cap, z=0.0, grad=True)
    plain = head_cross_entropy(lab, logits, temperature=temperature, cap=cap, grad=True)
    for a, b in zip(with_zero, plain, strict=True):
        np.testing.assert_array_equal(a, b)
    # and the softmax of the head is a distribution whatever the options
    h = apply_head(logits, temperature=temperature, cap=cap)
    p = np.exp(h - logsumexp(h)[:, None])
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    "value,allow_zero,error",
    [
        (0.0, False, ValueError),
        (-1.0, True, ValueError),
        (math.inf, False, ValueError),
        (math.nan, True, ValueError),
        (True, False, TypeError),
        ("2", False, TypeError),
    ],
)
def test_bad_head_options_are_named(value, allow_zero, error):
    with pytest.raises(error, match="temperature"):
        check_head_option(value, "temperature", allow_zero=allow_zero)


def test_good_head_options_pass():
    assert check_head_option(0.0, "z_loss", allow_zero=True) == 0.0
    assert check_head_option(np.float32(30.0), "softcap") == 30.0
