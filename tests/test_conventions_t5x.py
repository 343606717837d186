"""T5X compute_weighted_cross_entropy and loss-normalising factors (maskloss.conventions.t5x).

T5X cannot be installed here (not on PyPI; pins its own jax/flax), so the proof is (a) the
loop oracle in ``oracles_golden.py`` written from ``t5x/losses.py``, (b) hand-derived
cases, and (c) T5X's function body (it is jax) run with the installed jax in float64, and
optax's cross-entropies, which give T5X's per-token loss without smoothing and z-loss.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskloss.conventions import allennlp, tfa
from maskloss.conventions.t5x import (
    SpecialLossNormalizingFactor,
    compute_weighted_cross_entropy,
    convert_special_loss_normalizing_factor_to_enum,
    get_loss_normalizing_factor_and_weights,
)
from tests.oracles_golden import padded_batches, t5x_average_per_sequence, t5x_weighted_ce

EPS = st.sampled_from([0.0, 0.1, 0.5])
Z = st.sampled_from([0.0, 1e-4, 0.1])
L = math.log(2)


@given(case=padded_batches(), eps=EPS, z=Z, lnf=st.sampled_from([None, 3.0, 0.5]), use_weights=st.booleans())
def test_matches_the_loop_oracle(case, eps, z, lnf, use_weights):
    logits, targets, weights = case["logits"], case["targets"], case["weights"]
    if not use_weights:  # weights=None counts every step: use a clean batch
        logits = np.where(case["valid"][..., None], logits, 0.5)
        targets = np.where(case["valid"], targets, 1)
        weights = None
    out = compute_weighted_cross_entropy(
        logits, targets, weights, label_smoothing=eps, z_loss=z, loss_normalizing_factor=lnf
    )
    expected = t5x_weighted_ce(logits, targets, weights, eps, z, lnf)
    np.testing.assert_allclose(out, expected, rtol=1e-11, atol=1e-11)
    assert all(isinstance(x, np.float64) for x in out)


def test_hand_derived_values():
    logits = np.log([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]])
    logits[0, 2] = np.nan  # garbage under zero weight
    targets = np.array([[0, 1, 5]])
    weights = np.array([[1.0, 2.0, 0.0]])
    # eps = 0, z = 0: Σ w (-lp_y) = ln 2 + 2 ln(4/3); weight_sum = 3.
    loss, z_loss, weight_sum = compute_weighted_cross_entropy(logits, targets, weights)
    assert (loss, z_loss, weight_sum) == (pytest.approx(L + 2 * math.log(4 / 3), rel=1e-15), 0.0, 3.0)
    # loss_normalizing_factor = 4 divides the sums (not weight_sum).
    loss4, _, ws4 = compute_weighted_cross_entropy(logits, targets, weights, loss_normalizing_factor=4.0)
    assert loss4 == pytest.approx((L + 2 * math.log(4 / 3)) / 4, rel=1e-15) and ws4 == 3.0


def test_smoothing_subtracts_the_soft_target_entropy():
    # V = 2, eps = 0.2: soft target [0.8, 0.2]; prediction [0.5, 0.5]: cross-entropy ln 2,
    # minus H = -(0.8 ln 0.8 + 0.2 ln(0.2 + 1e-20)): the KL divergence of [.8, .2] from [.5, .5].
    loss, _, _ = compute_weighted_cross_entropy(np.zeros((1, 1, 2)), np.array([[0]]), label_smoothing=0.2)
    assert loss == pytest.approx(L + 0.8 * math.log(0.8) + 0.2 * math.log(0.2), rel=1e-14)
    # A prediction equal to the soft target scores 0 (V = 4, eps = 0.3: [0.7, 0.1, 0.1, 0.1]).
    perfect = np.log([[[0.1, 0.7, 0.1, 0.1]]])
    loss, _, _ = compute_weighted_cross_entropy(perfect, np.array([[1]]), label_smoothing=0.3)
    assert abs(loss) < 1e-15


def test_z_loss_is_in_the_loss_and_reported_alone():
    # logits [1, 1]: lse = 1 + ln 2, lp = -ln 2; z = 0.1: loss = ln 2 + 0.1 (1 + ln 2)^2.
    loss, z_loss, _ = compute_weighted_cross_entropy(np.ones((1, 1, 2)), np.array([[1]]), z_loss=0.1)
    assert z_loss == pytest.approx(0.1 * (1 + L) ** 2, rel=1e-15)
    assert loss == pytest.approx(L + 0.1 * (1 + L) ** 2, rel=1e-15)


def test_no_weights_counts_every_step():
    # weights=None: 2 x 3 steps of ln 2 each; weight_sum = B*T = 6.
    loss, _, weight_sum = compute_weighted_cross_entropy(np.zeros((2, 3, 2)), np.zeros((2, 3), dtype=int))
    assert loss == pytest.approx(6 * L, rel=1e-15) and weight_sum == 6.0


def test_t5x_nan_quirks_are_reproduced():
    # label_smoothing = 1: confidence 0, 0 * log 0 = NaN in H (jnp.log(0) = -inf).
    loss, _, _ = compute_weighted_cross_entropy(np.zeros((1, 1, 3)), np.array([[0]]), label_smoothing=1.0)
    assert math.isnan(loss)
    # eps = 0 and a -inf logit at a weighted step: off value 0 times lp = -inf gives NaN.
    loss, _, _ = compute_weighted_cross_entropy(np.array([[[0.0, -np.inf]]]), np.array([[0]]))
    assert math.isnan(loss)


def test_normalising_factors_by_hand():
    tokens = np.array([[5, 6, 7, 0], [8, 0, 0, 0], [0, 0, 0, 0]])  # pad id 0: lengths 3, 1, 0
    factor, w = get_loss_normalizing_factor_and_weights(
        "NUM_REAL_TARGET_TOKENS", {"decoder_target_tokens": tokens}
    )
    assert factor == 4.0 and np.array_equal(w, tokens > 0)
    factor, _ = get_loss_normalizing_factor_and_weights(
        SpecialLossNormalizingFactor.NUM_TOTAL_TARGET_TOKENS, {"decoder_target_tokens": tokens}
    )
    assert factor == 12.0  # B * T, padding included
    factor, w = get_loss_normalizing_factor_and_weights(
        "average_per_sequence", {"decoder_target_tokens": tokens}
    )
    # w / Σ_t w: rows 1/3 x3, 1, nothing; factor Σ = 1 + 1 = 2 non-empty sequences.
    np.testing.assert_allclose(w, [[1 / 3, 1 / 3, 1 / 3, 0], [1, 0, 0, 0], [0, 0, 0, 0]], rtol=1e-15)
    assert factor == pytest.approx(2.0, rel=1e-15)
    # A plain number (or None) passes through with the batch's weights.
    assert get_loss_normalizing_factor_and_weights(7.0, {"decoder_target_tokens": tokens}) == (7.0, None)


def test_packed_average_per_sequence_by_hand():
    # One row packing a 3-token and a 2-token example, then padding.
    batch = {
        "decoder_target_tokens": np.array([[5, 6, 7, 8, 9, 0]]),
        "decoder_segment_ids": np.array([[1, 1, 1, 2, 2, 0]]),
        "decoder_positions": np.array([[0, 1, 2, 0, 1, 0]]),
        "decoder_loss_weights": np.array([[1.0, 1.0, 1.0, 1.0, 3.0, 0.0]]),
    }
    factor, w = get_loss_normalizing_factor_and_weights("AVERAGE_PER_SEQUENCE", batch)
    # Segment sums 3 and 4: [1/3, 1/3, 1/3, 1/4, 3/4, 0]; factor 2.
    np.testing.assert_allclose(w, [[1 / 3, 1 / 3, 1 / 3, 1 / 4, 3 / 4, 0]], rtol=1e-15)
    assert factor == pytest.approx(2.0, rel=1e-15)


@st.composite
def packed_rows(draw):
    rows, steps = draw(st.integers(1, 3)), draw(st.integers(1, 8))
    ids, pos, weights = np.zeros((rows, steps), int), np.zeros((rows, steps), int), np.zeros((rows, steps))
    for r in range(rows):
        t, seg = 0, 1
        while t < steps and draw(st.booleans()):
            n = draw(st.integers(1, steps - t))
            ids[r, t : t + n] = seg
            pos[r, t : t + n] = np.arange(n)
            weights[r, t : t + n] = draw(
                st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=n, max_size=n)
            )
            t, seg = t + n, seg + 1
    return {
        "decoder_target_tokens": np.where(ids > 0, 3, 0),
        "decoder_segment_ids": ids,
        "decoder_positions": pos,
        "decoder_loss_weights": weights,
    }


@given(batch=packed_rows(), packed=st.booleans())
def test_average_per_sequence_matches_the_loop_oracle(batch, packed):
    if not packed:
        batch = {k: batch[k] for k in ("decoder_target_tokens", "decoder_loss_weights")}
    factor, w = get_loss_normalizing_factor_and_weights("AVERAGE_PER_SEQUENCE", batch)
    expected_factor, expected_w = t5x_average_per_sequence(
        batch["decoder_loss_weights"], batch.get("decoder_segment_ids"), batch.get("decoder_positions")
    )
    np.testing.assert_allclose(w, expected_w, rtol=1e-14, atol=1e-15)
    assert factor == pytest.approx(expected_factor, rel=1e-14, abs=1e-15)


@given(case=padded_batches(fractional=False))
def test_normalising_factors_reproduce_the_other_conventions(case):
    logits, targets, mask = case["logits"], case["targets"], case["valid"]
    tokens = np.where(mask, 1, 0)  # pad id 0 marks the padding; weights = tokens > 0
    batch = {"decoder_target_tokens": tokens}
    # NUM_REAL_TARGET_TOKENS = token mean = tfa's default Σ ce W / Σ W (NaN vs 0 when all masked).
    factor, w = get_loss_normalizing_factor_and_weights("NUM_REAL_TARGET_TOKENS", batch)
    loss, _, _ = compute_weighted_cross_entropy(logits, targets, w, loss_normalizing_factor=factor)
    if factor > 0:
        assert loss == pytest.approx(tfa.sequence_loss(logits, targets, w), rel=1e-12, abs=1e-12)
    else:
        assert math.isnan(loss)
    # AVERAGE_PER_SEQUENCE = mean of per-sequence means = AllenNLP "batch" (up to its 1e-13).
    factor, w = get_loss_normalizing_factor_and_weights("AVERAGE_PER_SEQUENCE", batch)
    loss, _, _ = compute_weighted_cross_entropy(logits, targets, w, loss_normalizing_factor=factor)
    if factor > 0:
        assert loss == pytest.approx(
            allennlp.sequence_cross_entropy_with_logits(logits, targets, mask), rel=1e-11, abs=1e-12
        )
    else:
        assert math.isnan(loss)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="Incorrect shapes"):
        compute_weighted_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="targets holds label"):
        compute_weighted_cross_entropy(np.zeros((1, 2, 3)), np.array([[0, 3]]))
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        compute_weighted_cross_entropy(np.zeros((1, 2, 3)), np.array([[0, 1]]), np.array([[1.0, -1.0]]))
    with pytest.raises(TypeError, match="get_loss_normalizing_factor_and_weights"):
        compute_weighted_cross_entropy(
            np.zeros((1, 2, 3)), np.array([[0, 1]]), loss_normalizing_factor="NUM_REAL_TARGET_TOKENS"
        )
    with pytest.raises(ValueError, match="Could not convert"):
        convert_special_loss_normalizing_factor_to_enum("per_token")


def test_inputs_are_not_modified():
    logits, targets, weights = (
        np.random.default_rng(0).normal(size=(2, 3, 4)),
        np.ones((2, 3), int),
        np.ones((2, 3)),
    )
    copies = [a.copy() for a in (logits, targets, weights)]
    compute_weighted_cross_entropy(logits, targets, weights, label_smoothing=0.1, z_loss=1e-4)
    for a, c in zip((logits, targets, weights), copies, strict=True):
        np.testing.assert_array_equal(a, c)


# ----------------------------------------------------------------------------- frameworks


def _t5x_body_in_jax(jax, jnp, logits, targets, weights, label_smoothing, z_loss, loss_normalizing_factor):
    """t5x/losses.py compute_weighted_cross_entropy (forward of cross_entropy_with_logits), transcribed."""
    vocab_size = logits.shape[-1]
    confidence = 1.0 - label_smoothing
    low_confidence = (1.0 - confidence) / (vocab_size - 1)
    normalizing_constant = -(
        confidence * jnp.log(confidence) + (vocab_size - 1) * low_confidence * jnp.log(low_confidence + 1e-20)
    )
    soft_targets = jnp.where(targets[..., None] == jnp.arange(vocab_size), confidence, low_confidence)
    logits_sum = jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
    total_loss = -jnp.sum(soft_targets * (logits - logits_sum), axis=-1)
    total_z_loss = z_loss * jax.lax.square(jnp.squeeze(logits_sum, axis=-1))
    total_loss = total_loss + total_z_loss - normalizing_constant
    weight_sum = np.prod(targets.shape)
    if weights is not None:
        total_loss = total_loss * weights
        total_z_loss = total_z_loss * weights
        weight_sum = jnp.sum(weights)
    if loss_normalizing_factor is not None:
        total_loss /= loss_normalizing_factor
        total_z_loss /= loss_normalizing_factor
    return jnp.sum(total_loss), jnp.sum(total_z_loss), weight_sum


@pytest.mark.framework("jax")
@settings(max_examples=30)
@given(case=padded_batches(garbage=False, shape=(3, 4, 5)), eps=EPS, z=Z, lnf=st.sampled_from([None, 3.0]))
def test_t5x_body_in_jax_agrees(case, eps, z, lnf):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    with jax.enable_x64(True):
        expected = _t5x_body_in_jax(
            jax,
            jnp,
            jnp.asarray(case["logits"]),
            jnp.asarray(case["targets"]),
            jnp.asarray(case["weights"]),
            eps,
            z,
            lnf,
        )
        expected = [float(x) for x in expected]
    out = compute_weighted_cross_entropy(
        case["logits"],
        case["targets"],
        case["weights"],
        label_smoothing=eps,
        z_loss=z,
        loss_normalizing_factor=lnf,
    )
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.framework("optax")
@settings(max_examples=30)
@given(case=padded_batches(garbage=False, shape=(3, 4, 5)), eps=EPS)
def test_per_token_loss_is_optax_cross_entropy(case, eps):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    logits, targets, weights, vocab = case["logits"], case["targets"], case["weights"], case["classes"]
    with jax.enable_x64(True):
        if eps == 0:
            per_token = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        else:  # soft target 1-eps / eps/(V-1), then minus the target's entropy (T5X's constant)
            soft = np.where(np.arange(vocab) == targets[..., None], 1 - eps, eps / (vocab - 1))
            entropy = -((1 - eps) * math.log(1 - eps) + eps * math.log(eps / (vocab - 1)))
            per_token = optax.softmax_cross_entropy(logits, soft) - entropy
        expected = float((np.asarray(per_token) * weights).sum())
    loss, _, weight_sum = compute_weighted_cross_entropy(logits, targets, weights, label_smoothing=eps)
    assert loss == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert weight_sum == pytest.approx(weights.sum(), rel=1e-15)


def test_normalising_factor_inputs_are_not_modified():
    tokens = np.array([[5, 6, 0], [7, 0, 0]])
    weights = np.array([[1.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    batch = {"decoder_target_tokens": tokens.copy(), "decoder_loss_weights": weights.copy()}
    get_loss_normalizing_factor_and_weights("AVERAGE_PER_SEQUENCE", batch)
    np.testing.assert_array_equal(batch["decoder_target_tokens"], tokens)
    np.testing.assert_array_equal(batch["decoder_loss_weights"], weights)
