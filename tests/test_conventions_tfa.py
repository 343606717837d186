"""tfa.seq2seq.sequence_loss / SequenceLoss (maskloss.conventions.tfa).

TensorFlow Addons cannot be installed here (archived; no wheel for TF 2.21), so the proof
is (a) the loop oracle in ``oracles_golden.py`` written from tfa's ``seq2seq/loss.py``,
(b) hand-derived cases, and (c) the same reductions run with the real TensorFlow ops tfa
calls (``sparse_softmax_cross_entropy_with_logits``, ``divide_no_nan``,
``count_nonzero``) and with torch's per-step cross-entropy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskloss.conventions import tfa
from tests.oracles_golden import padded_batches, tfa_sequence_loss

# (avg_t, avg_b, sum_t, sum_b): every combination tfa accepts.
LEGAL = [
    (True, True, False, False),
    (False, False, True, True),
    (True, False, False, False),
    (False, True, False, False),
    (False, False, True, False),
    (False, False, False, True),
    (False, False, False, False),
]
ILLEGAL = [
    (True, False, True, False),  # avg and sum over time
    (False, True, False, True),  # avg and sum over the batch
    (False, True, True, False),  # avg_b & sum_t: "ambiguous order"
    (True, False, False, True),  # sum_b & avg_t: "ambiguous order"
]
NAMES = ("average_across_timesteps", "average_across_batch", "sum_over_timesteps", "sum_over_batch")


def _call(case, flags):
    return tfa.sequence_loss(
        case["logits"], case["targets"], case["weights"], **dict(zip(NAMES, flags, strict=True))
    )


@given(case=padded_batches(), flags=st.sampled_from(LEGAL))
def test_every_flag_combination_matches_the_loop_oracle(case, flags):
    out = _call(case, flags)
    expected = tfa_sequence_loss(case["logits"], case["targets"], case["weights"], *flags)
    np.testing.assert_allclose(out, np.asarray(expected, dtype=float), rtol=1e-12, atol=1e-12)
    assert np.asarray(out).dtype == np.float64


@given(case=padded_batches(garbage=False))
def test_one_hot_targets_equal_index_targets(case):
    one_hot = np.eye(case["classes"])[case["targets"]]
    for flags in LEGAL:
        np.testing.assert_allclose(
            tfa.sequence_loss(
                case["logits"], one_hot, case["weights"], **dict(zip(NAMES, flags, strict=True))
            ),
            _call(case, flags),
            rtol=1e-12,
            atol=1e-12,
        )


def _hand_batch():
    # Class-0 probabilities p per step; target class 0, so the cross-entropy is -ln p.
    # Row 0: p = 1/2, 1/4, pad   -> ce = L, 2L, .      (L = ln 2)
    # Row 1: p = 1/8, pad, 1/2   -> ce = 3L, ., L
    p = np.array([[0.5, 0.25, 0.5], [0.125, 0.5, 0.5]])
    logits = np.stack([np.log(p), np.log1p(-p)], axis=-1)
    logits[0, 2] = np.nan  # garbage under zero weight
    logits[1, 1] = np.inf
    targets = np.array([[0, 0, 99], [0, -5, 0]])
    weights = np.array([[1.0, 2.0, 0.0], [1.0, 0.0, 1.0]])
    return logits, targets, weights


L = math.log(2)
# ce * W = [[L, 4L, 0], [3L, 0, L]]; sum 9L; sum W = 5; nnz(W) = 4.
HAND = {
    (True, True, False, False): 9 * L / 5,
    (False, False, True, True): 9 * L / 4,
    (True, False, False, False): [5 * L / 3, 4 * L / 2],  # per sequence: (L+4L)/(1+2), (3L+L)/(1+1)
    (False, True, False, False): [4 * L / 2, 4 * L / 2, L / 1],  # per step: (L+3L)/2, 4L/2, L/1
    (False, False, True, False): [5 * L / 2, 4 * L / 2],  # per sequence / nnz: 5L/2, 4L/2
    (False, False, False, True): [4 * L / 2, 4 * L / 1, L / 1],  # per step / nnz: 4L/2, 4L/1, L/1
    (False, False, False, False): [[L, 4 * L, 0.0], [3 * L, 0.0, L]],
}


@pytest.mark.parametrize("flags", sorted(HAND))
def test_hand_derived_values(flags):
    logits, targets, weights = _hand_batch()
    out = tfa.sequence_loss(logits, targets, weights, **dict(zip(NAMES, flags, strict=True)))
    np.testing.assert_allclose(out, HAND[flags], rtol=1e-14, atol=1e-15)


def test_the_class_defaults_to_sum_over_both_axes():
    logits, targets, weights = _hand_batch()
    # SequenceLoss()(y_true, y_pred, w) = sum_t & sum_b = 9L / 4, not the function's 9L / 5.
    assert tfa.SequenceLoss()(targets, logits, weights) == pytest.approx(9 * L / 4, rel=1e-14)
    assert tfa.sequence_loss(logits, targets, weights) == pytest.approx(9 * L / 5, rel=1e-14)
    avg = tfa.SequenceLoss(average_across_timesteps=True, sum_over_timesteps=False, sum_over_batch=False)
    np.testing.assert_allclose(avg(targets, logits, weights), [5 * L / 3, 4 * L / 2], rtol=1e-14)


def test_the_class_needs_sample_weight():
    logits, targets, _ = _hand_batch()
    with pytest.raises(TypeError, match="sample_weight"):
        tfa.SequenceLoss()(targets, logits)


@pytest.mark.parametrize("flags", ILLEGAL)
def test_conflicting_flags_raise_like_tfa(flags):
    logits, targets, weights = _hand_batch()
    with pytest.raises(ValueError, match="cannot be set to True at same time"):
        tfa.sequence_loss(logits, targets, weights, **dict(zip(NAMES, flags, strict=True)))
    with pytest.raises(ValueError, match="cannot be set to True at same time"):
        tfa.SequenceLoss(**dict(zip(NAMES, flags, strict=True)))


@pytest.mark.parametrize("flags", LEGAL)
def test_all_zero_weights_give_zero_not_nan(flags):
    # divide_no_nan: 0 / 0 = 0 for every reduction; the logits are all NaN and never read.
    out = tfa.sequence_loss(
        np.full((2, 3, 4), np.nan),
        np.full((2, 3), -1),
        np.zeros((2, 3)),
        **dict(zip(NAMES, flags, strict=True)),
    )
    assert np.all(np.asarray(out) == 0.0)


def test_fractional_weights_separate_the_sum_and_avg_defaults():
    # One step, ce = ln 2, weight 0.5: avg = 0.5 ln2 / 0.5 = ln 2; sum = 0.5 ln 2 / nnz(1).
    logits = np.zeros((1, 1, 2))
    assert tfa.sequence_loss(logits, [[1]], [[0.5]]) == pytest.approx(L, rel=1e-15)
    assert tfa.SequenceLoss()([[1]], logits, [[0.5]]) == pytest.approx(0.5 * L, rel=1e-15)


def test_softmax_loss_function_sees_only_weighted_rows():
    logits, targets, weights = _hand_batch()
    seen = []

    def constant(labels, logits):
        seen.append((labels.copy(), logits.copy()))
        return np.ones(labels.shape[0])

    # loss 1 per step: avg_t & avg_b = sum W / sum W = 1; sum_t & sum_b = sum W / nnz = 5 / 4.
    assert tfa.sequence_loss(logits, targets, weights, softmax_loss_function=constant) == 1.0
    assert tfa.SequenceLoss(softmax_loss_function=constant)(targets, logits, weights) == 1.25
    assert all(np.isfinite(x).all() and set(y.tolist()) == {0} for y, x in seen)


def test_bad_inputs_name_the_argument():
    logits, targets, weights = _hand_batch()
    with pytest.raises(ValueError, match="logits must have 3 dimensions"):
        tfa.sequence_loss(logits[0], targets, weights)
    with pytest.raises(ValueError, match=r"weights must have shape \(2, 3\)"):
        tfa.sequence_loss(logits, targets, weights[:, :2])
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        tfa.sequence_loss(logits, targets, -weights)
    with pytest.raises(ValueError, match=r"targets holds label .*99.* at valid step \(0, 2\)"):
        tfa.sequence_loss(logits, targets, np.ones((2, 3)))
    with pytest.raises(TypeError, match="average_across_batch must be True or False"):
        tfa.sequence_loss(logits, targets, weights, average_across_batch=1)


def test_inputs_are_not_modified():
    logits, targets, weights = _hand_batch()
    copies = [a.copy() for a in (logits, targets, weights)]
    tfa.sequence_loss(logits, targets, weights, average_across_batch=False)
    for a, c in zip((logits, targets, weights), copies, strict=True):
        np.testing.assert_array_equal(a, c)


# ----------------------------------------------------------------------------- frameworks


def _tfa_body_in_tensorflow(tf, logits, targets, weights, avg_t, avg_b, sum_t, sum_b):
    """tfa's sequence_loss body (tensorflow/addons seq2seq/loss.py), run with TensorFlow's ops."""
    crossent = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.reshape(targets, [-1]), logits=tf.reshape(logits, [-1, logits.shape[-1]])
    )
    crossent *= tf.reshape(weights, [-1])
    if avg_t and avg_b:
        return tf.math.divide_no_nan(tf.reduce_sum(crossent), tf.reduce_sum(weights))
    if sum_t and sum_b:
        count = tf.cast(tf.math.count_nonzero(weights), crossent.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(crossent), count)
    crossent = tf.reshape(crossent, tf.shape(logits)[0:2])
    if avg_t or avg_b:
        axis = [0] if avg_b else [1]
        return tf.math.divide_no_nan(tf.reduce_sum(crossent, axis=axis), tf.reduce_sum(weights, axis=axis))
    if sum_t or sum_b:
        axis = [0] if sum_b else [1]
        count = tf.cast(tf.math.count_nonzero(weights, axis=axis), crossent.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(crossent, axis=axis), count)
    return crossent


@pytest.mark.framework("tensorflow")
@settings(max_examples=30)
@given(case=padded_batches(garbage=False), flags=st.sampled_from(LEGAL))
def test_tensorflow_ops_agree(case, flags):
    tf = pytest.importorskip("tensorflow")
    expected = _tfa_body_in_tensorflow(
        tf, tf.constant(case["logits"]), tf.constant(case["targets"]), tf.constant(case["weights"]), *flags
    ).numpy()
    np.testing.assert_allclose(_call(case, flags), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.framework("torch")
@settings(max_examples=40)
@given(case=padded_batches(garbage=False))
def test_default_is_torch_weighted_token_mean(case):
    torch = pytest.importorskip("torch")
    ce = torch.nn.functional.cross_entropy(
        torch.from_numpy(case["logits"]).reshape(-1, case["classes"]),
        torch.from_numpy(case["targets"]).reshape(-1),
        reduction="none",
    ).reshape(case["weights"].shape)
    w = torch.from_numpy(case["weights"])
    expected = float((ce * w).sum() / w.sum()) if float(w.sum()) else 0.0  # Σ ce·W / Σ W
    assert float(_call(case, (True, True, False, False))) == pytest.approx(expected, rel=1e-12, abs=1e-12)
