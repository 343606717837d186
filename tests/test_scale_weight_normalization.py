"""``scale=`` and ``weight_normalization=`` as options of the losses (issue 19: conventions in the oracle).

Checked three ways: a slow loop oracle written here from the formulas of
:mod:`maskloss.loss_options`, the real frameworks that define the conventions (Keras 3's
``sum_over_batch_size`` divides the weighted sum by the number of elements, the
``"numerator"`` rule; torch autograd for the gradients), and bit-identity at the defaults.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss import loss_options

SCALAR = ("sum", "token_mean", "sequence_mean", "batch_mean", "element_mean")
RULES = ("weighted", "numerator", "nonzero_fraction")


def _batch(seed: int, b: int = 3, t: int = 4, c: int = 5):
    rng = np.random.default_rng(seed)
    mask = rng.random((b, t)) < 0.7
    mask[0, 0] = True
    labels = rng.integers(0, c, (b, t))
    logits = rng.normal(size=(b, t, c))
    weight = rng.choice([0.0, 0.5, 1.0, 3.0], size=(b, t))
    logits[~mask] = np.nan  # garbage under the mask must never reach a value or a gradient
    labels[~mask] = 10**6
    return labels, logits, mask, weight


def _loop_value(losses, mask, weight, reduction, rule):
    """The formula of loss_options, one step at a time: sum_t m w l over the rule's denominator."""
    b_count, t_count = mask.shape
    num, den = [0.0] * b_count, [0.0] * b_count
    for b in range(b_count):
        for t in range(t_count):
            if mask[b, t]:
                num[b] += weight[b, t] * losses[b][t]
                den[b] += weight[b, t] if rule == "weighted" else 1.0
    if reduction == "sum":
        value = sum(num)
    elif reduction == "token_mean":
        value = sum(num) / sum(den) if sum(den) else math.nan
    elif reduction == "sequence_mean":
        means = [n / d for n, d in zip(num, den, strict=True) if d]
        value = sum(means) / len(means) if means else math.nan
    elif reduction == "batch_mean":
        value = sum(num) / b_count
    else:
        value = sum(num) / (b_count * t_count)
    if rule == "nonzero_fraction":
        nonzero = sum(1 for w in weight.ravel() if w != 0)
        value = value * weight.size / nonzero if nonzero else math.nan
    return value


def _step_losses(labels, logits, mask):
    """Per-step cross-entropy from logits, written out (masked steps never read)."""
    out = []
    for b in range(mask.shape[0]):
        row = []
        for t in range(mask.shape[1]):
            if mask[b, t]:
                z = logits[b, t]
                top = max(z)
                lse = top + math.log(sum(math.exp(v - top) for v in z))
                row.append(lse - z[labels[b, t]])
            else:
                row.append(None)
        out.append(row)
    return out


@pytest.mark.parametrize("reduction", SCALAR)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("seed", range(4))
def test_weight_normalization_matches_the_loop_oracle(reduction, rule, seed):
    labels, logits, mask, weight = _batch(seed)
    got = maskloss.sparse_categorical_crossentropy(
        labels, logits, mask, from_logits=True, reduction=reduction, sample_weight=weight, weight_normalization=rule
    )
    expected = _loop_value(_step_losses(labels, logits, mask), mask, weight, reduction, rule)
    np.testing.assert_allclose(float(got), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("reduction", SCALAR)
@pytest.mark.parametrize("rule", RULES)
def test_weight_normalization_matches_the_checker_oracle(reduction, rule):
    """The loss option and check_loss's oracle (reductions.renormalized_value) are one rule."""
    from maskloss.testing.oracles import weight_normalized

    labels, logits, mask, weight = _batch(7)
    got = maskloss.sparse_categorical_crossentropy(
        labels, logits, mask, from_logits=True, reduction=reduction, sample_weight=weight, weight_normalization=rule
    )
    oracle = weight_normalized(maskloss.sparse_categorical_crossentropy, rule)
    expected = oracle(labels, logits, mask, sample_weight=weight, from_logits=True, reduction=reduction)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-14, atol=0)


def test_numerator_is_keras3_sum_over_batch_size():
    """Keras 3 (real, torch backend) divides sum(w * loss) by the number of elements."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    y, p = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    w = rng.choice([0.0, 1.0, 2.5], size=(2, 3))
    ref = keras.losses.MeanSquaredError(reduction="sum_over_batch_size")(y, p, sample_weight=w)
    got = maskloss.mse(y, p, sample_weight=w, weight_normalization="numerator")
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)  # Keras computes in float32
    # ... which is not torch's / maskloss's weighted mean (the test can tell the two apart)
    assert abs(float(maskloss.mse(y, p, sample_weight=w)) - float(ref)) > 1e-3


@pytest.mark.parametrize("reduction", SCALAR)
@pytest.mark.parametrize("rule", RULES)
def test_gradient_matches_torch_autograd(reduction, rule):
    torch = pytest.importorskip("torch")
    labels, logits, mask, weight = _batch(11)
    scale = 0.25
    value, grad = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
        labels, logits, mask, from_logits=True, reduction=reduction, sample_weight=weight,
        weight_normalization=rule, scale=scale,
    )
    x = torch.tensor(np.where(mask[..., None], logits, 0.0), requires_grad=True)
    lab = torch.tensor(np.where(mask, labels, 0))
    m = torch.tensor(mask, dtype=torch.float64)
    w = torch.tensor(weight)
    step = torch.nn.functional.cross_entropy(x.reshape(-1, 5), lab.reshape(-1), reduction="none").reshape(3, 4)
    num = (m * w * step).sum(dim=1)
    den = (m * w).sum(dim=1) if rule == "weighted" else m.sum(dim=1)
    if reduction == "sum":
        loss = num.sum()
    elif reduction == "token_mean":
        loss = num.sum() / den.sum()
    elif reduction == "sequence_mean":
        keep = den > 0
        loss = (num[keep] / den[keep]).mean()
    elif reduction == "batch_mean":
        loss = num.sum() / 3
    else:
        loss = num.sum() / 12
    if rule == "nonzero_fraction":
        loss = loss * weight.size / np.count_nonzero(weight)
    loss = scale * loss
    loss.backward()
    np.testing.assert_allclose(float(value), loss.item(), rtol=1e-13)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert np.all(grad[~mask] == 0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.5, 3.0, -1.0, 1 / 7, 1e-3]),
       reduction=st.sampled_from(SCALAR))
def test_scale_multiplies_value_gradient_totals_and_vjp(seed, scale, reduction):
    labels, logits, mask, weight = _batch(seed)
    kw = dict(from_logits=True, sample_weight=weight)
    loss = maskloss.sparse_categorical_crossentropy
    base = loss(labels, logits, mask, reduction=reduction, **kw)
    assert np.array_equal(loss(labels, logits, mask, reduction=reduction, scale=scale, **kw), scale * base,
                          equal_nan=True)
    v0, g0 = maskloss.value_and_grad(loss)(labels, logits, mask, reduction=reduction, **kw)
    v1, g1 = maskloss.value_and_grad(loss)(labels, logits, mask, reduction=reduction, scale=scale, **kw)
    np.testing.assert_array_equal(v1, scale * v0)
    np.testing.assert_allclose(g1, scale * g0, rtol=1e-15, atol=0)
    t0 = maskloss.masked_totals(loss)(labels, logits, mask, **kw)
    t1 = maskloss.masked_totals(loss)(labels, logits, mask, scale=scale, **kw)
    np.testing.assert_allclose(t1.value(reduction), scale * t0.value(reduction), rtol=1e-14)  # c*sum vs sum of c*n
    ct = np.random.default_rng(seed).normal(size=mask.shape)
    n0, h0 = maskloss.vjp(loss)(labels, logits, mask, reduction="none", cotangent=ct, **kw)
    n1, h1 = maskloss.vjp(loss)(labels, logits, mask, reduction="none", cotangent=ct, scale=scale, **kw)
    np.testing.assert_array_equal(n1, scale * n0)
    np.testing.assert_allclose(h1, scale * h0, rtol=1e-15, atol=0)


def _kind_batch(kind):
    rng = np.random.default_rng(5)
    mask = np.array([[True, True, False], [True, False, False]])
    if kind == "regression":
        return rng.normal(size=(2, 3, 2)), rng.normal(size=(2, 3, 2)), mask
    if kind == "binary":
        return rng.integers(0, 2, (2, 3, 2)).astype(float), rng.uniform(0.1, 0.9, (2, 3, 2)), mask
    probs = rng.dirichlet(np.ones(4), size=(2, 3))
    labels = rng.integers(0, 4, (2, 3))
    if kind == "dense":
        return np.eye(4)[labels], probs, mask
    return labels, probs, mask


@pytest.mark.parametrize("name", [s.name for s in maskloss.registry.specs() if s.kind is not None])
def test_defaults_change_no_bit(name):
    """Passing the new options at their defaults is the call without them, for every loss of a batch kind."""
    fn = getattr(maskloss, name)
    y, p, m = _kind_batch(maskloss.registry.spec_of(fn).kind)
    extra = {"weight_normalization": "weighted"} if "weight_normalization" in loss_options.OPTIONS_OF[name] else {}
    for reduction in ("none", *SCALAR):
        a = fn(y, p, m, reduction=reduction)
        b = fn(y, p, m, reduction=reduction, scale=1.0, **extra)
        assert np.array_equal(a, b, equal_nan=True) and np.asarray(a).dtype == np.asarray(b).dtype


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"scale": 0.0}, ValueError, "scale must be a finite non-zero number"),
        ({"scale": float("nan")}, ValueError, "got nan"),
        ({"scale": "2"}, TypeError, "got '2'"),
        ({"scale": True}, TypeError, "got True"),
        ({"weight_normalization": "mean"}, ValueError, "weight_normalization must be one of"),
        ({"weight_normalization": "numerator", "reduction": "none"}, ValueError, "reduction='none' has no mean"),
    ],
)
def test_bad_options_are_named(options, error, words):
    labels, logits, mask, weight = _batch(0)
    with pytest.raises(error, match=words):
        maskloss.sparse_categorical_crossentropy(labels, logits, mask, from_logits=True, sample_weight=weight,
                                                 **options)


def test_weight_normalization_on_a_loss_without_weights_is_refused():
    logits = np.zeros((1, 2, 3))
    with pytest.raises(ValueError, match=r"does not apply to maskloss\.entropy"):
        maskloss.entropy(logits, weight_normalization="numerator")
    assert "weight_normalization" not in loss_options.OPTIONS_OF["entropy"]
    assert "scale" in loss_options.OPTIONS_OF["entropy"]


def test_check_applies_knows_the_new_options():
    with pytest.raises(ValueError, match=r"does not apply to maskloss\.entropy"):
        loss_options.check_applies("entropy", {"weight_normalization": "numerator"})
    loss_options.check_applies("mse", {"weight_normalization": "numerator", "scale": 2.0})
