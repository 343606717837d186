"""The head options temperature= / softcap= / z_loss= on the cross-entropies and the log-probs.

Against a slow loop oracle (the documented order: temperature, softcap, log-softmax,
smoothing, class weights, z-loss), against torch autograd in float64 (value and gradient), and
hypothesis invariants (padding never matters, a huge softcap is no softcap, z_loss=0 is no
z-loss bit for bit).
"""

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


def _head_row(row, temperature, cap):
    out = []
    for v in row:
        v = v / temperature
        if cap is not None and v != -math.inf:
            v = cap * math.tanh(v / cap)
        out.append(v)
    return out


def _neg_log_softmax(h):
    m = max(h)
    lse = m + math.log(sum(math.exp(v - m) for v in h if v != -math.inf))
    return [lse - v for v in h], lse


def loop_sparse(labels, logits, mask, *, temperature=1.0, softcap=None, z_loss=0.0, label_smoothing=0.0,
                class_weight=None, ignore_index=None):
    """token_mean of the sparse CE through the head, one step and one class at a time."""
    num, den = 0.0, 0.0
    classes = logits.shape[-1]
    cw = [1.0] * classes if class_weight is None else list(class_weight)
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[b, t])
            if not mask[b, t] or (ignore_index is not None and y == ignore_index):
                continue
            nll, lse = _neg_log_softmax(_head_row(logits[b, t].tolist(), temperature, softcap))
            loss = (1 - label_smoothing) * cw[y] * nll[y]
            loss += label_smoothing / classes * sum(c * v for c, v in zip(cw, nll, strict=True))
            num += loss + z_loss * lse * lse
            den += cw[y]
    return num / den


def loop_dense(targets, logits, mask, *, temperature=1.0, softcap=None, z_loss=0.0, label_smoothing=0.0,
               class_weight=None):
    num, den = 0.0, 0
    classes = logits.shape[-1]
    cw = [1.0] * classes if class_weight is None else list(class_weight)
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            if not mask[b, t]:
                continue
            nll, lse = _neg_log_softmax(_head_row(logits[b, t].tolist(), temperature, softcap))
            q = [(1 - label_smoothing) * v + label_smoothing / classes for v in targets[b, t].tolist()]
            num += sum(c * qc * v for c, qc, v in zip(cw, q, nll, strict=True)) + z_loss * lse * lse
            den += 1
    return num / den


def _case(seed, batch=3, steps=5, classes=7):
    rng = np.random.default_rng(seed)
    mask = rng.random((batch, steps)) < 0.75
    mask[0, 0] = True
    logits = rng.normal(0, 6, (batch, steps, classes))
    labels = rng.integers(0, classes, (batch, steps))
    soft = rng.dirichlet(np.ones(classes), (batch, steps))
    logits[~mask] = np.nan
    labels[~mask] = 10**6
    soft[~mask] = np.nan
    return mask, logits, labels, soft, rng.uniform(0.2, 2.0, classes)


OPTIONS = [
    {"temperature": 0.7},
    {"softcap": 5.0},
    {"z_loss": 1e-2},
    {"temperature": 1.5, "softcap": 3.0, "z_loss": 0.1},
    {"temperature": 2.0, "softcap": 30.0, "z_loss": 1e-4, "label_smoothing": 0.1, "class_weight": True},
]


def _opts(options, cw):
    o = dict(options)
    if o.pop("class_weight", False):
        o["class_weight"] = cw
    return o


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o))
def test_sparse_and_dense_match_the_loop_oracle(options):
    mask, logits, labels, soft, cw = _case(0)
    o = _opts(options, cw)
    got = maskloss.sparse_categorical_crossentropy(labels, logits, mask, from_logits=True, **o)
    np.testing.assert_allclose(got, loop_sparse(labels, logits, mask, **o), rtol=1e-12)
    got = maskloss.categorical_crossentropy(soft, logits, mask, from_logits=True, **o)
    np.testing.assert_allclose(got, loop_dense(soft, logits, mask, **o), rtol=1e-12)


def _torch_head(leaf, temperature=1.0, softcap=None):
    h = leaf / temperature
    if softcap is not None:
        h = softcap * torch.tanh(h / softcap)  # Gemma 2's final_logit_softcapping, as transformers writes it
    return h


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o))
def test_sparse_value_and_gradient_match_torch_autograd(options):
    mask, logits, labels, _, cw = _case(1)
    o = _opts(options, cw)
    m = torch.tensor(mask)
    leaf = torch.tensor(np.nan_to_num(logits), requires_grad=True)
    h = _torch_head(leaf[m], o.get("temperature", 1.0), o.get("softcap"))
    weight = None if "class_weight" not in o else torch.tensor(o["class_weight"])
    y = torch.tensor(labels)[m]
    ce = F.cross_entropy(h, y, weight=weight, label_smoothing=o.get("label_smoothing", 0.0), reduction="sum")
    den = y.numel() if weight is None else weight[y].sum()
    loss = (ce + o.get("z_loss", 0.0) * (torch.logsumexp(h, -1) ** 2).sum()) / den
    loss.backward()
    value, grad = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
        labels, logits, mask, from_logits=True, **o)
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, np.where(mask[..., None], leaf.grad.numpy(), 0.0), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o))
def test_dense_value_and_gradient_match_torch_autograd(options):
    mask, logits, _, soft, cw = _case(2)
    o = _opts(options, cw)
    m = torch.tensor(mask)
    leaf = torch.tensor(np.nan_to_num(logits), requires_grad=True)
    h = _torch_head(leaf[m], o.get("temperature", 1.0), o.get("softcap"))
    weight = None if "class_weight" not in o else torch.tensor(o["class_weight"])
    ce = F.cross_entropy(h, torch.tensor(soft)[m], weight=weight, label_smoothing=o.get("label_smoothing", 0.0),
                         reduction="sum")
    loss = (ce + o.get("z_loss", 0.0) * (torch.logsumexp(h, -1) ** 2).sum()) / int(mask.sum())
    loss.backward()
    value, grad = maskloss.value_and_grad(maskloss.categorical_crossentropy)(soft, logits, mask, from_logits=True,
                                                                            **o)
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, np.where(mask[..., None], leaf.grad.numpy(), 0.0), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("temperature,softcap", [(1.0, 4.0), (0.6, 2.0), (1.3, None)])
def test_logprobs_and_the_policy_gradient_through_the_head_match_torch(temperature, softcap):
    mask, logits, labels, _, _ = _case(3)
    m = torch.tensor(mask)
    leaf = torch.tensor(np.nan_to_num(logits), requires_grad=True)
    logp = torch.log_softmax(_torch_head(leaf, temperature, softcap), -1)
    safe = torch.tensor(np.where(mask, labels, 0))
    per_token = torch.where(m, logp.gather(-1, safe[..., None])[..., 0], 0.0)
    ours = maskloss.token_logprobs(labels, logits, mask, temperature=temperature, softcap=softcap)
    np.testing.assert_allclose(ours, per_token.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(maskloss.sequence_logprobs(labels, logits, mask, temperature=temperature,
                                                          softcap=softcap),
                               per_token.sum(1).detach().numpy(), rtol=1e-12)
    advantages = np.array([1.0, -0.5, 2.0])
    (per_token * torch.tensor(advantages)[:, None]).sum().backward()
    _value, grad = maskloss.value_and_grad(maskloss.policy_gradient_objective)(
        labels, logits, advantages, mask, temperature=temperature, softcap=softcap)
    np.testing.assert_allclose(grad, np.where(mask[..., None], leaf.grad.numpy(), 0.0), rtol=1e-9, atol=1e-14)


def test_the_softcap_keeps_padded_vocabulary_lanes_out():
    """unsloth#10616: tanh alone maps -inf to -cap and leaks mass to padded vocabulary lanes."""
    mask, logits, labels, soft, _ = _case(4)
    pad = np.full(logits.shape[:-1] + (3,), -np.inf)
    padded = np.concatenate([logits, pad], -1)
    for fn, y, y_pad in ((maskloss.sparse_categorical_crossentropy, labels, labels),
                         (maskloss.categorical_crossentropy, soft, np.concatenate([soft, np.zeros(pad.shape)], -1))):
        v, g = maskloss.value_and_grad(fn)(y_pad, padded, mask, from_logits=True, softcap=2.0, z_loss=0.1)
        v0 = fn(y, logits, mask, from_logits=True, softcap=2.0, z_loss=0.1)
        np.testing.assert_allclose(v, v0, rtol=1e-14)
        np.testing.assert_array_equal(g[..., -3:], 0.0)
    np.testing.assert_allclose(maskloss.token_logprobs(labels, padded, mask, softcap=2.0),
                               maskloss.token_logprobs(labels, logits, mask, softcap=2.0), rtol=1e-14)


sparse = padded_batches("sparse", adversarial=True, max_batch=3, max_steps=5, allow_empty_rows=False,
                        min_features=2, max_features=6)


@settings(max_examples=40, deadline=None)
@given(sparse, st.floats(0.2, 5.0), st.sampled_from([None, 0.5, 3.0, 30.0]), st.sampled_from([0.0, 1e-3, 0.5]))
def test_padding_never_changes_the_head_options(batch, temperature, softcap, z):
    o = {"temperature": temperature, "softcap": softcap, "z_loss": z}
    compact_y, compact_x = batch.y_true[batch.mask][None], batch.y_pred[batch.mask][None]
    for reduction in ("sum", "token_mean"):
        np.testing.assert_allclose(
            maskloss.sparse_categorical_crossentropy(batch.y_true, batch.y_pred, batch.mask, from_logits=True,
                                                     reduction=reduction, **o),
            maskloss.sparse_categorical_crossentropy(compact_y, compact_x, from_logits=True, reduction=reduction,
                                                     **o), rtol=1e-12, atol=1e-14)
    _, grad = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
        batch.y_true, batch.y_pred, batch.mask, from_logits=True, **o)
    np.testing.assert_array_equal(grad[~batch.mask], 0.0)


@settings(max_examples=40, deadline=None)
@given(sparse, st.floats(0.2, 5.0))
def test_neutral_values_of_the_options(batch, temperature):
    args = (batch.y_true, batch.y_pred, batch.mask)
    vag = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)
    plain = vag(*args, from_logits=True)
    explicit = vag(*args, from_logits=True, temperature=1.0, softcap=None, z_loss=0.0)
    for a, b in zip(plain, explicit, strict=True):
        np.testing.assert_array_equal(a, b)  # the defaults are the old code path, bit for bit
    no_z = vag(*args, from_logits=True, temperature=temperature)
    zero_z = vag(*args, from_logits=True, temperature=temperature, z_loss=0.0)
    for a, b in zip(no_z, zero_z, strict=True):
        np.testing.assert_array_equal(a, b)
    huge = vag(*args, from_logits=True, temperature=temperature, softcap=1e12)
    for a, b in zip(huge, no_z, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda y, x, m: maskloss.sparse_categorical_crossentropy(y, np.exp(x), m, softcap=2.0), ValueError,
         r"softcap=2.0 applies to logits only: pass from_logits=True"),
        (lambda y, x, m: maskloss.categorical_crossentropy(np.ones(x.shape) / x.shape[-1], np.exp(x), m,
                                                           z_loss=0.1), ValueError, "z_loss=0.1 applies to logits"),
        (lambda y, x, m: maskloss.sparse_categorical_crossentropy(y, x, m, from_logits=True, softcap=0.0),
         ValueError, "softcap must be a finite real number > 0"),
        (lambda y, x, m: maskloss.sparse_categorical_crossentropy(y, x, m, from_logits=True, z_loss=-1e-4),
         ValueError, "z_loss must be a finite real number >= 0"),
        (lambda y, x, m: maskloss.sparse_categorical_crossentropy(y, x, m, from_logits=True,
                                                                  temperature=math.nan), ValueError, "temperature"),
        (lambda y, x, m: maskloss.mse(x, x, m, softcap=2.0), TypeError, "softcap"),
        (lambda y, x, m: maskloss.token_logprobs(y, x, m, softcap=-1.0), ValueError, "softcap"),
    ],
)
def test_bad_options_are_named(call, error, match):
    mask, logits, labels, _, _ = _case(5)
    with pytest.raises(error, match=match):
        call(labels, logits, mask)
