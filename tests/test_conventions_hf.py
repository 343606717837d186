"""maskloss.conventions.hf against a loop oracle and against transformers' ForCausalLMLoss.

Tolerances: ``rtol=1e-11, atol=1e-12`` against the oracle (float64 on both sides).
Against HF: ``rtol=1e-5, atol=1e-6``, because HF casts logits to float32
(``logits.float()``) whatever their dtype; the logits given to HF are float32 numbers and
maskloss gets the same values in float64, so only HF's float32 arithmetic differs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskloss.conventions import torch as tc
from maskloss.conventions.hf import for_causal_lm_loss
from tests import oracles_frameworks as oracle
from tests.cases import _array, assert_matches, masks

FRAMEWORK = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    loss_utils = pytest.importorskip("transformers.loss.loss_utils")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch, loss_utils.ForCausalLMLoss
    torch.set_num_threads(threads)


@st.composite
def lm_batches(draw):
    batch, steps, vocab = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(2, 7))
    logits = _array(draw, (batch, steps, vocab), -8.0, 8.0).astype(np.float32).astype(np.float64)
    mask = draw(masks(batch, steps))
    ids = np.array(
        draw(st.lists(st.integers(0, vocab - 1), min_size=batch * steps, max_size=batch * steps))
    ).reshape(batch, steps)
    labels = np.where(mask, ids, -100)
    valid_shifted = int(np.sum(labels[:, 1:] != -100))
    num_items = draw(st.sampled_from([None, valid_shifted, valid_shifted + 3]))
    shift = None
    if draw(st.integers(0, 3)) == 0:
        shift = np.where(draw(masks(batch, steps)), ids[:, ::-1], -100)
    return logits, labels, num_items, shift


@given(lm_batches())
def test_matches_the_oracle(case):
    logits, labels, num_items, shift = case
    ours = for_causal_lm_loss(
        logits, labels, logits.shape[-1], num_items_in_batch=num_items, shift_labels=shift
    )
    expected = oracle.hf_causal_lm_loss(logits, labels, num_items, shift_labels=shift)
    assert isinstance(ours, np.float64)
    assert_matches(ours, expected, rtol=1e-11, atol=1e-12)


@FRAMEWORK
@given(case=lm_batches())
def test_matches_transformers(hf, case):
    torch, for_causal_lm = hf
    logits, labels, num_items, shift = case
    vocab = logits.shape[-1]
    kwargs = {} if shift is None else {"shift_labels": torch.from_numpy(shift)}
    if num_items is not None:
        kwargs["num_items_in_batch"] = torch.tensor(num_items)
    expected = for_causal_lm(
        torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(labels), vocab, **kwargs
    )
    assert expected.dtype == torch.float32
    ours = for_causal_lm_loss(logits, labels, vocab, num_items_in_batch=num_items, shift_labels=shift)
    assert_matches(ours, expected.item(), rtol=1e-5, atol=1e-6)


def test_hf_downcasts_float64_logits_to_float32(hf):
    torch, for_causal_lm = hf
    logits = torch.tensor([[[0.0, 1e-9], [0.0, 0.0]]], dtype=torch.float64)
    out = for_causal_lm(logits, torch.tensor([[0, 1]]), 2)
    assert out.dtype == torch.float32
    ours = for_causal_lm_loss(logits.numpy(), np.array([[0, 1]]), 2)
    # float64 sees the 1e-9 (ln 2 - 5e-10); float32 cannot (1 + 1e-9 == 1): HF gives ln 2 exactly in float32
    assert ours == pytest.approx(np.log(2.0) - 5e-10, abs=1e-15)
    assert out.item() == np.float32(np.log(2.0))


def test_gradient_accumulation_worked_example():
    """Two micro-batches with 5 and 1 causal targets, as in docs/course/05-accumulation.md."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 5))
    labels = np.array([[1, 2, 3, 4, 0, 1], [2, 3, -100, -100, -100, -100]])
    first = for_causal_lm_loss(logits[:1], labels[:1], 5)
    second = for_causal_lm_loss(logits[1:], labels[1:], 5)
    full = for_causal_lm_loss(logits, labels, 5)
    window = for_causal_lm_loss(logits[:1], labels[:1], 5, num_items_in_batch=6) + for_causal_lm_loss(
        logits[1:], labels[1:], 5, num_items_in_batch=6
    )
    assert window == pytest.approx(full, rel=1e-14)
    assert (first + second) / 2 != pytest.approx(full, rel=1e-3)  # the mean of micro-batch means is not it


def test_the_last_position_predicts_nothing_and_labels_shift_left():
    logits = np.log([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]])
    # position 0 predicts label[1] = 1 (p = 0.5), position 1 predicts label[2] = 0 (p = 0.25)
    assert for_causal_lm_loss(logits, np.array([[1, 1, 0]]), 2) == pytest.approx(
        (np.log(2) + np.log(4)) / 2, 1e-15
    )
    # it is torch's cross_entropy on the shifted, flattened labels
    shifted = np.array([1, 0, -100])
    assert for_causal_lm_loss(logits, np.array([[1, 1, 0]]), 2) == tc.cross_entropy(logits[0], shifted)


def test_nothing_valid_gives_nan_and_zero_items_divides_by_zero():
    logits = np.zeros((1, 3, 4))
    assert np.isnan(for_causal_lm_loss(logits, np.array([[5, -100, -100]]), 4))
    assert np.isnan(for_causal_lm_loss(logits, np.array([[5, -100, -100]]), 4, num_items_in_batch=0))
    assert for_causal_lm_loss(logits, np.array([[5, 1, -100]]), 4, num_items_in_batch=0) == np.inf


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: for_causal_lm_loss(np.zeros((1, 2, 3)), [[0, 1]], 4), ValueError, "vocab_size=4"),
        (lambda: for_causal_lm_loss(np.zeros((1, 2, 3)), [[0, 1, 2]], 3), ValueError, "targets"),
        (lambda: for_causal_lm_loss(np.zeros((1, 2, 3)), [[0, 1]], 0), ValueError, "vocab_size"),
        (
            lambda: for_causal_lm_loss(np.zeros((1, 2, 3)), [[0, 1]], 3, num_items_in_batch=[1, 2]),
            TypeError,
            "num_items_in_batch",
        ),
        (lambda: for_causal_lm_loss(np.zeros((1, 2, 3)), [[0, 7]], 3), ValueError, "outside"),
    ],
)
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_unknown_keyword_arguments_are_ignored_as_in_transformers(hf):
    # ForCausalLMLoss(**kwargs) -> fixed_cross_entropy(**kwargs), which passes none of them on:
    # label_smoothing is silently dropped by transformers, and by the mirror.
    torch, for_causal_lm = hf
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 5))
    labels = np.array([[1, 2, 3, -100], [4, 0, -100, -100]])
    extra = {"label_smoothing": 0.3, "reduction": "sum", "anything": object()}
    expected = for_causal_lm(torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(labels), 5, **extra)
    plain = for_causal_lm(torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(labels), 5)
    assert expected.item() == plain.item()
    ours = for_causal_lm_loss(logits, labels, 5, **extra)
    assert ours == for_causal_lm_loss(logits, labels, 5)
    assert_matches(ours, expected.item(), rtol=1e-5, atol=1e-6)
