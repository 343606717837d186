"""KL, generalised JSD, entropy, z-loss and token accuracy: loop oracles, torch autograd, invariants, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss.strategies import padded_batches

F = torch.nn.functional


# ---------------------------------------------------------------- loop oracles (math module only)


def _softmax_row(row):
    m = max(row)
    if m == -math.inf:
        return [math.nan] * len(row)
    e = [math.exp(v - m) if v != -math.inf else 0.0 for v in row]
    s = sum(e)
    return [v / s for v in e]


def _kl_row(q, p):
    total = 0.0
    for qc, pc in zip(q, p, strict=True):
        if qc > 0:
            total += math.inf if pc == 0 else qc * (math.log(qc) - math.log(pc))
    return total


def _jsd_row(q, p, beta):
    if beta == 0.0:
        return _kl_row(q, p)
    if beta == 1.0:
        return _kl_row(p, q)
    m = [beta * a + (1 - beta) * b for a, b in zip(q, p, strict=True)]
    return beta * _kl_row(q, m) + (1 - beta) * _kl_row(p, m)


def _entropy_row(x):
    return -sum(pc * math.log(pc) for pc in _softmax_row(x) if pc > 0)


def _z_row(x, z, temperature=1.0, cap=None):
    h = []
    for v in x:
        v = v / temperature
        if cap is not None and v != -math.inf:
            v = cap * math.tanh(v / cap)
        h.append(v)
    m = max(h)
    lse = m + math.log(sum(math.exp(v - m) for v in h))
    return z * lse * lse


def loop_reduce(values, mask, reduction):
    """Per-step values over valid steps, one loop per sequence (the definitions of the course, chapter 3)."""
    batch, steps = mask.shape
    if reduction == "none":
        return np.array([[values[b][t] if mask[b, t] else 0.0 for t in range(steps)] for b in range(batch)])
    sums = [sum(values[b][t] for t in range(steps) if mask[b, t]) for b in range(batch)]
    counts = [sum(1 for t in range(steps) if mask[b, t]) for b in range(batch)]
    if reduction == "sum":
        return sum(sums)
    if reduction == "token_mean":
        return sum(sums) / sum(counts) if sum(counts) else math.nan
    if reduction == "sequence_mean":
        means = [s / c for s, c in zip(sums, counts, strict=True) if c]
        return sum(means) / len(means) if means else math.nan
    if reduction == "batch_mean":
        return sum(sums) / batch
    return sum(sums) / (batch * steps)  # element_mean


def per_step(fn, *arrays):
    batch, steps = arrays[0].shape[:2]
    return [[fn(*(a[b, t].tolist() for a in arrays)) for t in range(steps)] for b in range(batch)]


def _case(seed, batch=3, steps=5, classes=6, scale=3.0):
    rng = np.random.default_rng(seed)
    mask = rng.random((batch, steps)) < 0.7
    mask[0, 0] = True
    x_teacher = rng.normal(0, scale, (batch, steps, classes))
    x_student = rng.normal(0, scale, (batch, steps, classes))
    q = np.exp(x_teacher - x_teacher.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    p = np.exp(x_student - x_student.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    for a in (x_teacher, x_student, q, p):
        a[~mask] = np.nan  # garbage under the mask
    return mask, x_teacher, x_student, q, p


REDUCTIONS = maskloss.REDUCTIONS


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [None, 0.0, 0.2, 0.5, 1.0])
def test_kl_and_jsd_match_the_loop_oracle(reduction, beta):
    mask, xt, xs, q, p = _case(0)
    qs, ps = np.nan_to_num(q), np.nan_to_num(p)
    if beta is None:
        ours = maskloss.kl_divergence(q, p, mask, reduction=reduction)
        rows = per_step(_kl_row, qs, ps)
    else:
        ours = maskloss.jensen_shannon(q, p, mask, beta=beta, reduction=reduction)
        rows = per_step(lambda a, b: _jsd_row(a, b, beta), qs, ps)
    np.testing.assert_allclose(ours, loop_reduce(rows, mask, reduction), rtol=1e-12, atol=1e-15)
    # logits on either side give the same numbers as their softmax
    if beta is None:
        from_logits = maskloss.kl_divergence(xt, xs, mask, from_logits=True, target_from_logits=True,
                                             reduction=reduction)
    else:
        from_logits = maskloss.jensen_shannon(xt, xs, mask, beta=beta, from_logits=True, target_from_logits=True,
                                              reduction=reduction)
    np.testing.assert_allclose(from_logits, ours, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_entropy_z_loss_and_accuracy_match_the_loop_oracle(reduction):
    mask, _, x, _, _ = _case(1)
    xs = np.nan_to_num(x)
    np.testing.assert_allclose(maskloss.entropy(x, mask, reduction=reduction),
                               loop_reduce(per_step(_entropy_row, xs), mask, reduction), rtol=1e-12, atol=1e-15)
    ours = maskloss.z_loss(x, mask, coefficient=1e-3, temperature=0.7, softcap=4.0, reduction=reduction)
    rows = per_step(lambda r: _z_row(r, 1e-3, 0.7, 4.0), xs)
    np.testing.assert_allclose(ours, loop_reduce(rows, mask, reduction), rtol=1e-12, atol=1e-18)
    labels = np.random.default_rng(2).integers(0, x.shape[-1], mask.shape)
    labels[~mask] = -100
    hits = [[float(labels[b, t] == max(range(x.shape[-1]), key=lambda c, b=b, t=t: xs[b, t, c]))
             for t in range(mask.shape[1])] for b in range(mask.shape[0])]
    np.testing.assert_allclose(maskloss.token_accuracy(labels, x, ignore_index=-100, reduction=reduction),
                               loop_reduce(hits, mask, reduction), rtol=1e-15)


def test_z_loss_counts_only_the_steps_whose_label_is_not_ignored():
    mask, _, x, _, _ = _case(3)
    labels = np.where(mask, 1, -100)
    labels[0, 0] = -100  # ignored although the mask says valid
    both = mask & (labels != -100)
    np.testing.assert_array_equal(
        maskloss.z_loss(x, mask, labels=labels, ignore_index=-100, coefficient=0.5),
        maskloss.z_loss(x, both, coefficient=0.5),
    )


# ---------------------------------------------------------------- gradients against torch autograd (float64)


def _torch_token_mean(per_token, mask):
    return per_token[torch.tensor(mask)].mean()


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("beta", [None, 0.0, 0.3, 0.5, 1.0])
def test_divergence_gradients_match_torch_autograd(from_logits, beta):
    mask, _, xs, q, p = _case(4)
    pred = xs if from_logits else p
    leaf = torch.tensor(np.nan_to_num(pred, nan=0.5), requires_grad=True)
    log_p = F.log_softmax(leaf, -1) if from_logits else torch.log(leaf)
    log_q = torch.log(torch.tensor(np.nan_to_num(q, nan=0.5)))
    if beta is None or beta == 0.0:
        per_token = F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(-1)
    elif beta == 1.0:
        per_token = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)
    else:  # Liger's reference (test_jsd.py's JSD module): beta KL(P||M) + (1-beta) KL(Q||M)
        log_m = torch.log(beta * log_q.exp() + (1 - beta) * log_p.exp())
        per_token = (beta * F.kl_div(log_m, log_q, reduction="none", log_target=True)
                     + (1 - beta) * F.kl_div(log_m, log_p, reduction="none", log_target=True)).sum(-1)
    loss = _torch_token_mean(per_token, mask)
    loss.backward()
    fn = maskloss.kl_divergence if beta is None else maskloss.jensen_shannon
    kwargs = {} if beta is None else {"beta": beta}
    value, grad = maskloss.value_and_grad(fn)(q, pred, mask, from_logits=from_logits, **kwargs)
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    expected = leaf.grad.numpy().copy()
    expected[~mask] = 0.0
    np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-13)


def test_entropy_gradient_matches_torch_autograd():
    mask, _, x, _, _ = _case(5)
    leaf = torch.tensor(np.nan_to_num(x), requires_grad=True)
    log_p = F.log_softmax(leaf, -1)
    loss = _torch_token_mean(-(log_p.exp() * log_p).sum(-1), mask)
    loss.backward()
    value, grad = maskloss.value_and_grad(maskloss.entropy)(x, mask, reduction="token_mean")
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, np.where(mask[..., None], leaf.grad.numpy(), 0.0), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("temperature,cap", [(1.0, None), (0.6, None), (1.0, 3.0), (1.7, 2.0)])
def test_z_loss_gradient_matches_torch_autograd(temperature, cap):
    mask, _, x, _, _ = _case(6)
    leaf = torch.tensor(np.nan_to_num(x), requires_grad=True)
    h = leaf / temperature
    if cap is not None:
        h = torch.tanh(h / cap) * cap
    loss = _torch_token_mean(1e-2 * torch.logsumexp(h, -1) ** 2, mask)
    loss.backward()
    value, grad = maskloss.value_and_grad(maskloss.z_loss)(x, mask, coefficient=1e-2, temperature=temperature,
                                                            softcap=cap)
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, np.where(mask[..., None], leaf.grad.numpy(), 0.0), rtol=1e-10, atol=1e-16)


def test_minus_inf_vocab_lanes_keep_probability_zero_and_gradient_zero():
    mask, xt, xs, _, _ = _case(7)
    pad = np.full(xs.shape[:-1] + (2,), -np.inf)
    xt_pad, xs_pad = np.concatenate([xt, pad], -1), np.concatenate([xs, pad], -1)
    for fn, args in ((maskloss.entropy, (xs,)), (maskloss.z_loss, (xs,))):
        padded_args = (xs_pad,)
        v, g = maskloss.value_and_grad(fn)(*padded_args, mask)
        v0, _ = maskloss.value_and_grad(fn)(*args, mask)
        np.testing.assert_allclose(v, v0, rtol=1e-14)
        np.testing.assert_array_equal(g[..., -2:], 0.0)
    v, g = maskloss.value_and_grad(maskloss.jensen_shannon)(xt_pad, xs_pad, mask, from_logits=True,
                                                             target_from_logits=True)
    assert np.isfinite(v) and np.isfinite(g).all()
    np.testing.assert_array_equal(g[..., -2:], 0.0)


# ---------------------------------------------------------------- invariants (hypothesis)

dense = padded_batches("dense", adversarial=True, max_batch=3, max_steps=5, allow_empty_rows=False)


def _compact(batch):
    """The valid steps only, as one sequence: no padding at all."""
    return batch.y_true[batch.mask][None], batch.y_pred[batch.mask][None]


@settings(max_examples=40, deadline=None)
@given(dense, st.sampled_from([0.0, 0.25, 0.5, 1.0]))
def test_padding_content_and_amount_never_change_the_divergences(batch, beta):
    t, x = _compact(batch)
    for reduction in ("sum", "token_mean"):
        np.testing.assert_allclose(
            maskloss.jensen_shannon(batch.y_true, batch.y_pred, batch.mask, beta=beta, from_logits=True,
                                    reduction=reduction),
            maskloss.jensen_shannon(t, x, beta=beta, from_logits=True, reduction=reduction), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(maskloss.entropy(batch.y_pred, batch.mask, reduction=reduction),
                                   maskloss.entropy(x, reduction=reduction), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(maskloss.z_loss(batch.y_pred, batch.mask, reduction=reduction),
                                   maskloss.z_loss(x, reduction=reduction), rtol=1e-12)
    _, grad = maskloss.value_and_grad(maskloss.kl_divergence)(batch.y_true, batch.y_pred, batch.mask,
                                                               from_logits=True)
    np.testing.assert_array_equal(grad[~batch.mask], 0.0)


@settings(max_examples=40, deadline=None)
@given(dense)
def test_kl_and_jsd_of_a_distribution_with_itself_are_zero(batch):
    for fn, kwargs in ((maskloss.kl_divergence, {}), (maskloss.jensen_shannon, {"beta": 0.3})):
        value = fn(batch.y_pred, batch.y_pred, batch.mask, from_logits=True, target_from_logits=True, **kwargs)
        assert abs(value) <= 1e-12
        assert fn(batch.y_true, batch.y_true, batch.mask, **kwargs) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(dense, st.floats(0.2, 5.0))
def test_z_loss_options_at_their_neutral_values(batch, temperature):
    args = (batch.y_pred, batch.mask)
    assert maskloss.z_loss(*args, coefficient=0.0) == 0.0
    np.testing.assert_allclose(maskloss.z_loss(*args, temperature=temperature, softcap=1e12),
                               maskloss.z_loss(*args, temperature=temperature), rtol=1e-9)


def test_left_and_right_padding_agree():
    mask, xt, xs, _, _ = _case(8)
    lengths = mask.sum(1)
    right = maskloss.mask_from_lengths(lengths, mask.shape[1])
    left = right[:, ::-1]

    def place(x, m):
        out = np.full(x.shape, np.nan)
        out[m] = x[mask]
        return out

    for fn, kwargs in ((maskloss.jensen_shannon, {"target_from_logits": True, "from_logits": True}),
                       (maskloss.kl_divergence, {"target_from_logits": True, "from_logits": True})):
        for reduction in ("sequence_mean", "token_mean"):
            a = fn(place(xt, right), place(xs, right), right, reduction=reduction, **kwargs)
            b = fn(place(xt, left), place(xs, left), left, reduction=reduction, **kwargs)
            assert a == pytest.approx(b, rel=1e-13)


# ---------------------------------------------------------------- bad input


def test_a_kl_target_that_is_not_a_distribution_is_named():
    mask, _, _, q, p = _case(9)
    with pytest.raises(ValueError, match=r"target must be a distribution .* step \(0, 0\) sums to"):
        maskloss.kl_divergence(q * 0.9, p, mask)
    with pytest.raises(ValueError, match=r"target must hold probabilities .*target_from_logits=True"):
        maskloss.kl_divergence(q - 0.5, p, mask)
    with pytest.raises(ValueError, match=r"pred must hold probabilities .*from_logits=True"):
        maskloss.jensen_shannon(q, p * 3, mask)
    # float32 rows rounded from a distribution still pass
    maskloss.kl_divergence(q.astype(np.float32), p, mask)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda x, m: maskloss.z_loss(x, m, coefficient=-1.0), ValueError, "coefficient"),
        (lambda x, m: maskloss.z_loss(x, m, softcap=0.0), ValueError, "softcap"),
        (lambda x, m: maskloss.z_loss(x, m, temperature=math.inf), ValueError, "temperature"),
        (lambda x, m: maskloss.z_loss(x, m, ignore_index=-100), ValueError, "ignore_index=-100 needs labels"),
        (lambda x, m: maskloss.jensen_shannon(x, x, m, beta=1.5), ValueError, "beta"),
        (lambda x, m: maskloss.kl_divergence(x, x[..., :2], m), ValueError, r"target and pred must have the same"),
        (lambda x, m: maskloss.entropy(x, m[:, :2]), ValueError, "mask must have shape"),
        (lambda x, m: maskloss.kl_divergence(x, x, m, from_logits=1), TypeError, "from_logits"),
        (lambda x, m: maskloss.entropy(x, m, softcap=2.0), TypeError, "softcap"),
        (lambda x, m: maskloss.token_accuracy(np.full(m.shape, 99), x, m), ValueError, "labels holds label 99"),
        (lambda x, m: maskloss.value_and_grad(maskloss.token_accuracy), TypeError, "token_accuracy"),
    ],
)
def test_bad_input_is_named(call, error, match):
    mask, _, x, _, _ = _case(10)
    with pytest.raises(error, match=match):
        call(x, mask)


def test_nothing_is_written_into_the_callers_arrays():
    mask, xt, xs, q, p = _case(11)
    arrays = [mask, xt, xs, q, p]
    before = [a.copy() for a in arrays]
    maskloss.value_and_grad(maskloss.jensen_shannon)(q, xs, mask, from_logits=True)
    maskloss.value_and_grad(maskloss.kl_divergence)(q, p, mask)
    maskloss.value_and_grad(maskloss.z_loss)(xs, mask, softcap=2.0, temperature=0.5)
    maskloss.value_and_grad(maskloss.entropy)(xs, mask)
    for a, b in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(a, b)
