"""maskloss.posttraining against loop oracles, hypothesis properties and torch autograd.

Oracles: plain Python loops over sequences and steps with ``math.log``/``math.exp``, written
from the formulas in the docstrings (never from the vectorised code). Framework: torch
(float64) computes the same per-token log-probs with ``log_softmax``/``gather`` and its
autograd gives the gradients ``value_and_grad(policy_gradient_objective)`` must match.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from maskloss import posttraining as pt

# --------------------------------------------------------------------------- helpers


def _batch(seed: int, batch: int, steps: int, vocab: int, *, empty: bool = True):
    """Right-padded batch: logits with NaN under the mask, labels out of range there."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0 if empty else 1, steps + 1, batch)
    mask = np.arange(steps)[None, :] < lengths[:, None]
    logits = rng.normal(0, 2, (batch, steps, vocab))
    labels = rng.integers(0, vocab, (batch, steps))
    logits[~mask] = np.nan
    labels[~mask] = 10**6
    loss = rng.normal(0, 1, (batch, steps))
    loss[~mask] = np.nan
    return rng, mask, logits, labels, loss


def _oracle_logprob(z_row, y, tau=1.0):
    zs = [float(v) / tau for v in z_row]
    top = max(zs)
    return zs[y] - top - math.log(sum(math.exp(v - top) for v in zs))


def _oracle_aggregate(loss, mask, mode, constant=None, global_count=None):
    sums, counts = [], []
    for b in range(mask.shape[0]):
        s, c = 0.0, 0
        for t in range(mask.shape[1]):
            if mask[b, t]:
                s += float(loss[b, t])
                c += 1
        sums.append(s)
        counts.append(c)
    total, tokens = sum(sums), sum(counts)
    if mode == "sum":
        return total
    if mode == "token_mean":
        return total / tokens if tokens else math.nan
    if mode == "sequence_mean":
        per = [s / c for s, c in zip(sums, counts, strict=True) if c]
        return sum(per) / len(per) if per else math.nan
    if mode == "batch_mean":
        return total / len(sums)
    if mode == "constant":
        return total / constant
    return total / global_count


sizes = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 5), st.integers(1, 7), st.integers(1, 6))

# --------------------------------------------------------------------------- oracles


@given(sizes, st.sampled_from([1.0, 0.7, 2.0]))
def test_token_logprobs_match_loop_oracle(size, tau):
    seed, b, t, v = size
    _, mask, logits, labels, _ = _batch(seed, b, t, v)
    got = maskloss.token_logprobs(labels, logits, mask, temperature=tau)
    for i in range(b):
        for j in range(t):
            want = _oracle_logprob(logits[i, j], int(labels[i, j]), tau) if mask[i, j] else 0.0
            assert got[i, j] == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_token_logprobs_ignore_index_and_float32_input():
    logits = np.log(np.array([[[0.5, 0.5], [0.25, 0.75]]], dtype=np.float32))
    got = maskloss.token_logprobs([[1, -100]], logits, ignore_index=-100)
    assert got.dtype == np.float64
    assert got.tolist() == [[pytest.approx(math.log(0.5), abs=1e-7), 0.0]]


@given(sizes, st.booleans())
def test_sequence_logprobs_sum_and_mean(size, average):
    seed, b, t, v = size
    _, mask, logits, labels, _ = _batch(seed, b, t, v)
    got = maskloss.sequence_logprobs(labels, logits, mask, average=average)
    for i in range(b):
        terms = [_oracle_logprob(logits[i, j], int(labels[i, j])) for j in range(t) if mask[i, j]]
        if average and not terms:
            assert math.isnan(got[i])
        else:
            want = sum(terms) / len(terms) if average else sum(terms)
            assert got[i] == pytest.approx(want, rel=1e-12, abs=1e-12)


@given(sizes, st.sampled_from(pt.AGGREGATIONS))
def test_aggregate_matches_loop_oracle(size, mode):
    seed, b, t, _ = size
    _, mask, _, _, loss = _batch(seed, b, t, 2)
    kwargs = {"constant": b * (t + 3)} if mode == "constant" else {}
    if mode == "global_token_mean":
        kwargs = {"global_count": int(mask.sum()) + 5}
    got = float(maskloss.aggregate(loss, mask, mode=mode, **kwargs))
    want = _oracle_aggregate(loss, mask, mode, **kwargs)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-14, nan_ok=True)


def test_clipped_surrogate_loop_oracle():
    rng = np.random.default_rng(0)
    ratio = rng.uniform(0.3, 2.5, (4, 6))
    adv = rng.normal(0, 1, 4)
    mask = rng.random((4, 6)) < 0.7
    ratio[~mask] = np.nan
    got = maskloss.clipped_surrogate(ratio, adv, mask, epsilon_low=0.2, epsilon_high=0.28, delta=2.0)
    for b in range(4):
        for t in range(6):
            if not mask[b, t]:
                assert got[b, t] == 0.0
                continue
            r, a = float(ratio[b, t]), float(adv[b])
            unclipped = min(r, 2.0) * a
            clipped = min(max(r, 0.8), 1.28) * a
            assert got[b, t] == pytest.approx(-min(unclipped, clipped), rel=1e-15)


def test_sequence_ratio_and_kl_estimators_loop_oracle():
    rng = np.random.default_rng(1)
    lp, ref = rng.normal(-2, 1, (3, 5)), rng.normal(-2, 1, (3, 5))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    lp[~mask] = np.nan
    ratio = maskloss.sequence_ratio(lp - ref, mask)
    for b in range(3):
        terms = [lp[b, t] - ref[b, t] for t in range(5) if mask[b, t]]
        assert ratio[b] == pytest.approx(math.exp(sum(terms) / len(terms)) if terms else 1.0, rel=1e-14)
    for est, f in (("k1", lambda x: -x), ("k2", lambda x: x * x / 2), ("k3", lambda x: math.exp(x) - x - 1)):
        got = maskloss.kl_estimate(lp, ref, mask, estimator=est)
        for b in range(3):
            for t in range(5):
                want = f(ref[b, t] - lp[b, t]) if mask[b, t] else 0.0
                assert got[b, t] == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_dpo_and_ipo_by_hand():
    # margin h = (-1 - -1.5) - (-3 - -2) = 1.5; sigmoid: -log(1/(1+e^{-0.15})); ipo: (1.5 - 5)^2
    args = ([-1.0], [-3.0], [-1.5], [-2.0])
    assert maskloss.dpo_loss(*args, beta=0.1)[0] == pytest.approx(math.log1p(math.exp(-0.15)), rel=1e-14)
    assert maskloss.dpo_loss(*args, beta=0.1, loss_type="ipo")[0] == pytest.approx(12.25, rel=1e-14)
    smoothed = maskloss.dpo_loss(*args, beta=0.1, label_smoothing=0.1)[0]
    want = 0.9 * math.log1p(math.exp(-0.15)) + 0.1 * math.log1p(math.exp(0.15))
    assert smoothed == pytest.approx(want, rel=1e-14)


# --------------------------------------------------------------------------- properties


def _mode_kwargs(mode, mask):
    """The divisor a mode needs: a constant, or a global count of at least the batch's valid tokens."""
    if mode == "constant":
        return {"constant": 7.0}
    return {"global_count": 11.0 + mask.sum()} if mode == "global_token_mean" else {}


@given(sizes, st.sampled_from(pt.AGGREGATIONS), st.integers(0, 3))
def test_aggregate_ignores_padding_content_amount_and_side(size, mode, extra):
    seed, b, t, _ = size
    rng, mask, _, _, loss = _batch(seed, b, t, 2)
    kwargs = _mode_kwargs(mode, mask)
    base = maskloss.aggregate(loss, mask, mode=mode, **kwargs)
    junk = np.where(mask, loss, rng.choice([np.inf, -np.inf, 1e300], loss.shape))
    wider = np.concatenate([junk, np.full((b, extra), np.nan)], axis=1)
    wider_mask = np.concatenate([mask, np.zeros((b, extra), bool)], axis=1)
    left, left_mask = maskloss.repad(wider, wider_mask, side="left", fill=np.nan)
    for values, m in ((junk, mask), (wider, wider_mask), (left, left_mask)):
        got = maskloss.aggregate(values, m, mode=mode, **kwargs)
        assert got == pytest.approx(base, rel=1e-12, abs=1e-14, nan_ok=True)


@given(sizes, st.sampled_from(pt.AGGREGATIONS))
def test_aggregate_batch_order(size, mode):
    seed, b, t, _ = size
    rng, mask, _, _, loss = _batch(seed, b, t, 2)
    kwargs = _mode_kwargs(mode, mask)
    perm = rng.permutation(b)
    got = maskloss.aggregate(loss[perm], mask[perm], mode=mode, **kwargs)
    assert got == pytest.approx(maskloss.aggregate(loss, mask, mode=mode, **kwargs), rel=1e-12, abs=1e-14, nan_ok=True)


@given(sizes, st.integers(1, 4))
def test_split_batches_recombine_with_global_count(size, parts):
    seed, b, t, _ = size
    _, mask, _, _, loss = _batch(seed, b, t, 2)
    count = int(mask.sum())
    if count == 0:
        return
    pieces = np.array_split(np.arange(b), parts)
    summed = sum(float(maskloss.aggregate(loss[i], mask[i], mode="global_token_mean", global_count=count))
                 for i in pieces if i.size)
    assert summed == pytest.approx(float(maskloss.aggregate(loss, mask, mode="token_mean")), rel=1e-12, abs=1e-14)
    dr = sum(float(maskloss.aggregate(loss[i], mask[i], mode="constant", constant=b * t)) for i in pieces if i.size)
    assert dr == pytest.approx(float(maskloss.aggregate(loss, mask, mode="constant", constant=b * t)), abs=1e-12)


@given(sizes)
def test_token_logprobs_ignore_padding_content(size):
    seed, b, t, v = size
    rng, mask, logits, labels, _ = _batch(seed, b, t, v)
    base = maskloss.token_logprobs(labels, logits, mask)
    logits2 = np.where(mask[..., None], logits, rng.choice([np.inf, -np.inf, 1e300], logits.shape))
    labels2 = np.where(mask, labels, -7)
    assert np.array_equal(maskloss.token_logprobs(labels2, logits2, mask), base)
    assert np.all(base[~mask] == 0.0)


def test_inputs_are_not_written():
    _, mask, logits, labels, loss = _batch(3, 3, 4, 5)
    copies = [x.copy() for x in (mask, logits, labels, loss)]
    maskloss.token_logprobs(labels, logits, mask, temperature=0.5)
    maskloss.value_and_grad(maskloss.policy_gradient_objective)(labels, logits, np.ones(3), mask)
    maskloss.aggregate(loss, mask, mode="sequence_mean")
    for before, after in zip(copies, (mask, logits, labels, loss), strict=True):
        np.testing.assert_array_equal(before, after)


# --------------------------------------------------------------------------- gradients vs torch

@pytest.mark.framework("torch")
@given(sizes, st.sampled_from([1.0, 0.6]))
def test_policy_gradient_objective_grad_matches_torch(size, tau):
    torch = pytest.importorskip("torch")
    seed, b, t, v = size
    rng, mask, logits, labels, _ = _batch(seed, b, t, v)
    weight = rng.normal(0, 1, (b, t))
    value, grad = maskloss.value_and_grad(maskloss.policy_gradient_objective)(
        labels, logits, weight, mask, temperature=tau)
    z = torch.tensor(np.where(mask[..., None], logits, 0.0), dtype=torch.float64, requires_grad=True)
    lab = torch.tensor(np.where(mask, labels, 0))
    logp = torch.log_softmax(z / tau, dim=-1).gather(-1, lab[..., None])[..., 0]
    m = torch.tensor(mask)
    objective = torch.where(m, torch.tensor(weight) * logp, 0.0).sum()
    objective.backward()
    assert float(value) == pytest.approx(objective.item(), rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert np.all(grad[~mask] == 0.0)


@pytest.mark.framework("torch")
def test_grpo_gradient_through_the_objective_matches_torch():
    """The full chain: GRPO loss (ratio, clip, sequence mean) in torch vs value_and_grad with dL/dlogp weights."""
    torch = pytest.importorskip("torch")
    _, mask, logits, labels, _ = _batch(11, 4, 6, 5, empty=False)
    old = maskloss.token_logprobs(labels, logits, mask) + np.random.default_rng(2).normal(0, 0.3, mask.shape)
    adv = np.array([1.0, -0.5, 2.0, -1.5])
    z = torch.tensor(np.where(mask[..., None], logits, 0.0), requires_grad=True)
    logp = torch.log_softmax(z, -1).gather(-1, torch.tensor(np.where(mask, labels, 0))[..., None])[..., 0]
    m = torch.tensor(mask)
    ratio = torch.exp(logp - torch.tensor(np.where(mask, old, 0.0)))
    a = torch.tensor(adv)[:, None]
    per_token = -torch.min(ratio * a, torch.clamp(ratio, 0.8, 1.2) * a)
    loss = (torch.where(m, per_token, 0.0).sum(-1) / m.sum(-1)).mean()
    loss.backward()
    # dL/dlogp_bt = -A r [unclipped branch active] / (L_b B): the per-token weight of the objective
    r = np.exp(np.where(mask, maskloss.token_logprobs(labels, logits, mask) - old, 0.0))
    ours = maskloss.clipped_surrogate(r, adv, mask)
    assert float(maskloss.aggregate(ours, mask, mode="sequence_mean")) == pytest.approx(loss.item(), rel=1e-12)
    active = np.where(adv[:, None] > 0, r <= 1.2, r >= 0.8)
    weight = np.where(active, -adv[:, None] * r, 0.0) / mask.sum(1, keepdims=True) / 4
    _, grad = maskloss.value_and_grad(maskloss.policy_gradient_objective)(labels, logits, weight, mask)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda: maskloss.clipped_surrogate(np.ones((2, 3)), np.ones(3)), ValueError, "advantages must have shape"),
        (lambda: maskloss.clipped_surrogate(np.ones((2, 3)), np.ones((3, 2))), ValueError, "advantages"),
        (lambda: maskloss.clipped_surrogate(np.ones((1, 2)), [[1.0, np.nan]]), ValueError, "advantages[0, 1] is nan"),
        (lambda: maskloss.clipped_surrogate(np.ones((1, 2)), [1.0], epsilon_low=1.5), ValueError, "epsilon_low"),
        (lambda: maskloss.clipped_surrogate(np.ones((1, 2)), [1.0], epsilon_low=-0.1), ValueError, "epsilon_low"),
        (lambda: maskloss.clipped_surrogate(np.ones((1, 2)), [1.0], epsilon_high=-1), ValueError, "epsilon_high"),
        (lambda: maskloss.clipped_surrogate(np.ones((1, 2)), [1.0], delta=1.1), ValueError,
         "delta must be > 1 + epsilon_high = 1.2, got 1.1"),
        (lambda: maskloss.clipped_surrogate(np.ones(2), [1.0, 1.0]), ValueError, "pass a (B, T) mask"),
        (lambda: maskloss.aggregate(np.ones((1, 2)), mode="seq-mean"), ValueError, "mode must be one of"),
        (lambda: maskloss.aggregate(np.ones((1, 2)), mode="global_token_mean", global_count=0), ValueError,
         "global_count must be finite and > 0, got 0.0"),
        (lambda: maskloss.aggregate(np.ones((1, 2)), mode="constant"), TypeError, "needs constant="),
        (lambda: maskloss.aggregate([[1.0, np.inf]]), ValueError, "per_token_loss[0, 1] is inf"),
        (lambda: maskloss.kl_estimate(np.ones((1, 2)), np.ones((1, 2)), estimator="k4"), ValueError, "'k3'"),
        (lambda: maskloss.dpo_loss([0.0], [0.0], [0.0], [0.0], loss_type="hinge"), ValueError, "loss_type"),
        (lambda: maskloss.dpo_loss([0.0], [0.0, 1.0], [0.0], [0.0]), ValueError, "rejected_logps"),
        (lambda: maskloss.token_logprobs([[0]], np.zeros((1, 1, 2)), temperature=0), ValueError, "temperature"),
        (lambda: maskloss.token_logprobs([[5]], np.zeros((1, 1, 2))), ValueError, "labels[0, 0] is 5"),
        (lambda: maskloss.token_logprobs([[0]], np.zeros((1, 2, 2))), ValueError, "logits must have shape"),
        (lambda: maskloss.policy_gradient_objective([[0]], np.zeros((1, 1, 2)), [np.nan]), ValueError,
         "weight[0, 0] is nan"),
    ],
)
def test_bad_input_names_the_argument(call, error, text):
    with pytest.raises(error) as info:
        call()
    assert text in str(info.value)


@given(sizes, st.integers(0, 3))
def test_sequence_logprobs_left_right_and_padding_amount(size, extra):
    seed, b, t, v = size
    _, mask, logits, labels, _ = _batch(seed, b, t, v)
    base = maskloss.sequence_logprobs(labels, logits, mask)
    wide_logits = np.concatenate([logits, np.full((b, extra, v), np.nan)], axis=1)
    wide_labels = np.concatenate([labels, np.full((b, extra), 10**6)], axis=1)
    wide_mask = np.concatenate([mask, np.zeros((b, extra), bool)], axis=1)
    left_logits, left_mask = maskloss.repad(wide_logits, wide_mask, side="left", fill=np.nan)
    left_labels, _ = maskloss.repad(wide_labels, wide_mask, side="left", fill=-1)
    for lab, z, m in ((wide_labels, wide_logits, wide_mask), (left_labels, left_logits, left_mask)):
        np.testing.assert_allclose(maskloss.sequence_logprobs(lab, z, m), base, rtol=1e-13, atol=1e-13)
