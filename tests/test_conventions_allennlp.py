"""AllenNLP sequence_cross_entropy_with_logits (maskloss.conventions.allennlp).

AllenNLP cannot be installed here (it pins torch < 2.x era releases; archived), so the
proof is (a) the loop oracle in ``oracles_golden.py`` written from
``allennlp/nn/util.py``, (b) hand-derived cases, and (c) AllenNLP's function body (it is
plain torch) run with the installed torch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskloss.conventions.allennlp import sequence_cross_entropy_with_logits as sce
from maskloss.conventions.allennlp import tiny_value_of_dtype
from tests.oracles_golden import allennlp_sequence_ce, padded_batches

AVERAGES = ["batch", "token", None]
SMOOTHING = st.sampled_from([None, 0.0, 0.1, 0.3])
GAMMA = st.sampled_from([None, 0.0, 0.5, 2.0])


@given(
    case=padded_batches(),
    average=st.sampled_from(AVERAGES),
    eps=SMOOTHING,
    gamma=GAMMA,
    alpha=st.one_of(st.none(), st.lists(st.floats(0.0, 2.0), min_size=5, max_size=5)),
)
def test_matches_the_loop_oracle(case, average, eps, gamma, alpha):
    out = sce(
        case["logits"],
        case["targets"],
        case["weights"],
        average=average,
        label_smoothing=eps,
        gamma=gamma,
        alpha=alpha,
    )
    expected = allennlp_sequence_ce(
        case["logits"], case["targets"], case["weights"], average, eps, gamma, alpha
    )
    np.testing.assert_allclose(out, expected, rtol=1e-11, atol=1e-12)
    assert np.asarray(out).dtype == np.float64
    assert np.shape(out) == ((case["weights"].shape[0],) if average is None else ())


@given(case=padded_batches(label_range=2), average=st.sampled_from(AVERAGES), alpha=st.floats(0.0, 1.0))
def test_scalar_alpha_matches_the_loop_oracle(case, average, alpha):
    out = sce(case["logits"], case["targets"], case["weights"], average=average, alpha=alpha)
    expected = allennlp_sequence_ce(case["logits"], case["targets"], case["weights"], average, alpha=alpha)
    np.testing.assert_allclose(out, expected, rtol=1e-11, atol=1e-12)


def _hand_batch():
    # Gold-class probabilities: sequence 0: 1/2, 3/4; sequence 1: 9/10, pad.
    logits = np.log([[[0.5, 0.5], [0.25, 0.75]], [[0.9, 0.1], [0.5, 0.5]]])
    logits[1, 1] = np.nan  # garbage under zero weight
    targets = np.array([[0, 1], [0, 7]])
    weights = np.array([[True, True], [True, False]])
    return logits, targets, weights


A, B, C = math.log(2), math.log(4 / 3), math.log(10 / 9)  # the three step losses
TINY = 1e-13


def test_hand_derived_averages():
    logits, targets, weights = _hand_batch()
    # "batch": per-sequence means (A+B)/(2+τ) and C/(1+τ), summed, over (2 sequences + τ).
    assert sce(logits, targets, weights) == pytest.approx(
        ((A + B) / (2 + TINY) + C / (1 + TINY)) / (2 + TINY), rel=1e-15
    )
    # "token": (A + B + C) / (3 + τ).
    assert sce(logits, targets, weights, average="token") == pytest.approx(
        (A + B + C) / (3 + TINY), rel=1e-15
    )
    # None: the per-sequence vector.
    np.testing.assert_allclose(
        sce(logits, targets, weights, average=None), [(A + B) / (2 + TINY), C / (1 + TINY)], rtol=1e-15
    )


def test_batch_average_is_a_mean_of_sequence_means_and_skips_empty_sequences():
    logits, targets, weights = _hand_batch()
    weights = np.vstack([weights, [False, False]])  # a third, empty sequence
    logits = np.concatenate([logits, np.full((1, 2, 2), np.inf)])
    targets = np.vstack([targets, [-1, -1]])
    # K = 2 non-empty sequences, exactly as before: ((A+B)/2 + C) / 2.
    assert sce(logits, targets, weights) == pytest.approx(((A + B) / 2 + C) / 2, rel=1e-12)


def test_label_smoothing_is_torch_eps_over_c():
    # C = 2, eps = 0.2, gold class 1 with p = 3/4: target [0.1, 0.9] -> 0.1 ln 4 + 0.9 ln(4/3).
    out = sce(np.log([[[0.25, 0.75]]]), [[1]], [[1.0]], label_smoothing=0.2, average="token")
    assert out == pytest.approx((0.1 * math.log(4) + 0.9 * math.log(4 / 3)) / (1 + TINY), rel=1e-14)


def test_focal_and_alpha_weigh_the_numerator_only():
    logits, targets, weights = _hand_batch()
    # gamma = 2: step factors (1-1/2)^2, (1-3/4)^2, (1-9/10)^2; denominators stay 2 and 1.
    fa, fb, fc = 0.25, 0.0625, 0.01
    assert sce(logits, targets, weights, gamma=2.0, average="token") == pytest.approx(
        (fa * A + fb * B + fc * C) / (3 + TINY), rel=1e-14
    )
    # scalar alpha 0.25 => [0.75, 0.25] by class: targets 0, 1, 0 -> 0.75, 0.25, 0.75.
    assert sce(logits, targets, weights, alpha=0.25, average=None) == pytest.approx(
        [(0.75 * A + 0.25 * B) / (2 + TINY), 0.75 * C / (1 + TINY)], rel=1e-14
    )
    # per-class alpha [2, 3]: 2A + 3B over 2, 2C over 1.
    assert sce(logits, targets, weights, alpha=[2.0, 3.0], average=None) == pytest.approx(
        [(2 * A + 3 * B) / (2 + TINY), 2 * C / (1 + TINY)], rel=1e-14
    )


def test_the_epsilon_follows_the_input_dtype():
    # One step, equal logits: loss ln 2; tiny = 1e-4 for float16 (tiny_value_of_dtype).
    logits16 = np.zeros((1, 1, 2), dtype=np.float16)
    assert sce(logits16, [[0]], [[1.0]]) == pytest.approx(A / (1 + 1e-4) / (1 + 1e-4), rel=1e-12)
    assert sce(logits16.astype(np.float32), [[0]], [[1.0]]) == pytest.approx(
        A / (1 + TINY) / (1 + TINY), rel=1e-15
    )
    assert tiny_value_of_dtype(np.float16) == 1e-4 and tiny_value_of_dtype(np.float32) == 1e-13


@pytest.mark.parametrize("average", AVERAGES)
def test_all_masked_gives_zero(average):
    out = sce(np.full((2, 3, 4), np.nan), np.full((2, 3), 99), np.zeros((2, 3)), average=average)
    assert np.all(np.asarray(out) == 0.0) and np.shape(out) == ((2,) if average is None else ())


def test_bad_inputs_name_the_argument():
    logits, targets, weights = _hand_batch()
    with pytest.raises(ValueError, match="average must be one of"):
        sce(logits, targets, weights, average="sentence")
    with pytest.raises(ValueError, match="alpha has 2 factors"):
        sce(np.zeros((1, 1, 3)), [[2]], [[1.0]], alpha=0.5)
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        sce(logits, targets, np.array([[1.0, -1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="targets holds label"):
        sce(logits, targets, np.ones((2, 2)))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        sce(logits, targets, weights, label_smoothing=1.5)
    with pytest.raises(TypeError, match="alpha must be float"):
        sce(logits, targets, weights, alpha="0.5")


def test_inputs_are_not_modified():
    logits, targets, weights = _hand_batch()
    copies = [a.copy() for a in (logits, targets, weights)]
    sce(logits, targets, weights, label_smoothing=0.1, gamma=1.0, alpha=[1.0, 2.0])
    for a, c in zip((logits, targets, weights), copies, strict=True):
        np.testing.assert_array_equal(a, c)


# ----------------------------------------------------------------------------- framework


def _allennlp_body_in_torch(torch, logits, targets, weights, average, label_smoothing, gamma, alpha):
    """allennlp/nn/util.py sequence_cross_entropy_with_logits, transcribed; it is plain torch."""
    weights = weights.to(logits.dtype)
    non_batch_dims = tuple(range(1, len(weights.shape)))
    weights_batch_sum = weights.sum(dim=non_batch_dims)
    logits_flat = logits.view(-1, logits.size(-1))
    log_probs_flat = torch.nn.functional.log_softmax(logits_flat, dim=-1)
    targets_flat = targets.view(-1, 1).long()
    if gamma:
        probs_flat = torch.gather(log_probs_flat.exp(), dim=1, index=targets_flat)
        weights = weights * ((1.0 - probs_flat) ** gamma).view(*targets.size())
    if alpha is not None:
        if isinstance(alpha, (float, int)):
            alpha_factor = torch.tensor([1.0 - float(alpha), float(alpha)], dtype=weights.dtype)
        else:
            alpha_factor = torch.tensor(alpha, dtype=weights.dtype)
        weights = weights * torch.gather(alpha_factor, dim=0, index=targets_flat.view(-1)).view(
            *targets.size()
        )
    if label_smoothing is not None and label_smoothing > 0.0:
        smoothing_value = label_smoothing / logits.size(-1)
        one_hot = torch.zeros_like(log_probs_flat).scatter_(-1, targets_flat, 1.0 - label_smoothing)
        nll_flat = (-log_probs_flat * (one_hot + smoothing_value)).sum(-1, keepdim=True)
    else:
        nll_flat = -torch.gather(log_probs_flat, dim=1, index=targets_flat)
    nll = nll_flat.view(*targets.size()) * weights
    tiny = 1e-13
    if average == "batch":
        per_batch = nll.sum(non_batch_dims) / (weights_batch_sum + tiny)
        return per_batch.sum() / ((weights_batch_sum > 0).sum() + tiny)
    if average == "token":
        return nll.sum() / (weights_batch_sum.sum() + tiny)
    return nll.sum(non_batch_dims) / (weights_batch_sum + tiny)


@pytest.mark.framework("torch")
@settings(max_examples=40)
@given(
    case=padded_batches(garbage=False),
    average=st.sampled_from(AVERAGES),
    eps=SMOOTHING,
    gamma=GAMMA,
    alpha=st.one_of(st.none(), st.lists(st.floats(0.0, 2.0), min_size=5, max_size=5)),
)
def test_allennlp_body_in_torch_agrees(case, average, eps, gamma, alpha):
    torch = pytest.importorskip("torch")
    expected = _allennlp_body_in_torch(
        torch,
        torch.from_numpy(case["logits"]),
        torch.from_numpy(case["targets"]),
        torch.from_numpy(case["weights"]),
        average,
        eps,
        gamma,
        alpha,
    ).numpy()
    out = sce(
        case["logits"],
        case["targets"],
        case["weights"],
        average=average,
        label_smoothing=eps,
        gamma=gamma,
        alpha=alpha,
    )
    np.testing.assert_allclose(out, expected, rtol=1e-11, atol=1e-12)


@pytest.mark.framework("torch")
@settings(max_examples=40)
@given(case=padded_batches(garbage=False), eps=st.sampled_from([0.0, 0.1, 0.3]))
def test_token_average_is_torch_cross_entropy_weighted_by_step(case, eps):
    torch = pytest.importorskip("torch")
    # torch's own label_smoothing (eps/C) per step, weighted and divided by Σw (+ τ).
    ce = (
        torch.nn.functional.cross_entropy(
            torch.from_numpy(case["logits"]).reshape(-1, case["classes"]),
            torch.from_numpy(case["targets"]).reshape(-1),
            reduction="none",
            label_smoothing=eps,
        )
        .numpy()
        .reshape(case["weights"].shape)
    )
    expected = (ce * case["weights"]).sum() / (case["weights"].sum() + TINY)
    out = sce(case["logits"], case["targets"], case["weights"], average="token", label_smoothing=eps)
    assert out == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.framework("torch")
@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("eps", [None, 0.1])
def test_weights_broadcast_against_the_steps_as_in_allennlp(average, eps):
    # AllenNLP's own test_sequence_cross_entropy_with_logits_smooths_labels_correctly passes
    # torch.ones([2, 3]) weights with [1, 3, 4] logits; the body broadcasts nll * weights.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(1, 3, 4))
    targets = rng.integers(0, 4, size=(1, 3))
    weights = np.array([[1.0, 1.0, 0.0], [0.5, 2.0, 1.0]])
    expected = _allennlp_body_in_torch(
        torch, torch.from_numpy(logits), torch.from_numpy(targets), torch.from_numpy(weights),
        average, eps, None, None,
    ).numpy()
    out = sce(logits, targets, weights, average=average, label_smoothing=eps)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-13)
    assert np.shape(out) == np.shape(expected)


def test_allennlp_label_smoothing_test_case():
    # The case of AllenNLP's test (tests/nn/util_test.py): weights of ones (2, 3), logits (1, 3, 4),
    # smoothing 0.1: the expected value is its loop, -(0.9 log p_y + 0.1/4 sum_c log p_c) / 3.
    rng = np.random.default_rng(4)
    logits = rng.random((1, 3, 4))
    targets = rng.integers(0, 3, size=(1, 3))
    correct = 0.0
    for row, label in zip(logits[0], targets[0], strict=False):
        log_p = row - np.log(np.sum(np.exp(row)))
        correct += log_p[label] * 0.9 + log_p.sum() * 0.1 / 4
    assert math.isclose(float(sce(logits, targets, np.ones((2, 3)), label_smoothing=0.1)), -correct / 3,
                        rel_tol=1e-12)


def test_weights_that_do_not_broadcast_are_rejected():
    with pytest.raises(ValueError, match=r"weights must have the steps' shape \(1, 3\)"):
        sce(np.zeros((1, 3, 4)), [[0, 1, 2]], np.ones((2, 2)))
    with pytest.raises(ValueError, match="same number of axes"):
        sce(np.zeros((1, 3, 4)), [[0, 1, 2]], np.ones(3))
