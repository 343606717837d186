"""conventions.liger.fused_linear_cross_entropy against Liger's own reference, run for real in torch.

Liger's kernels are Triton (GPU only), so the kernel itself cannot run here. Its tests
(liger-kernel 0.8.5, test/transformers/test_cross_entropy.py and
test_fused_linear_cross_entropy.py) compare the kernel with a torch reference:
``CrossEntropyWithZLoss`` = ``F.cross_entropy(logits.float(), targets, weight=ce_weight,
reduction=..., label_smoothing=..., ignore_index=...)`` plus
``where(kept, lse_square_scale * lse**2, 0)`` summed and divided by the kept count for
"mean"; ``_liger_reference`` below transcribes it (in float64), and the token-scaling
reference of test_fused_linear_cross_entropy.py (loss times the detached target
probability). The rules the reference does not cover (0 for an all-ignored "mean",
token accuracy) are read from the kernel source and checked against a loop.
"""

from __future__ import annotations

import numpy as np
import pytest

from maskloss.conventions.liger import CrossEntropyOutput, fused_linear_cross_entropy
from tests.oracles_linear import linear_sparse

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _liger_reference(weight, x, target, bias, ce_weight, lse_square_scale, label_smoothing, reduction, softcap,
                     token_scaling=False):
    logits = torch.from_numpy(x) @ torch.from_numpy(weight).T
    if bias is not None:
        logits = logits + torch.from_numpy(bias)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    t = torch.from_numpy(target)
    cw = None if ce_weight is None else torch.from_numpy(ce_weight)
    kept = t != -100
    if token_scaling:  # test_fused_linear_cross_entropy.py: per-token losses times detached p_y
        ce = F.cross_entropy(logits, t, weight=cw, reduction="none", label_smoothing=label_smoothing)
        if reduction == "mean":
            ce = ce / (kept.sum() if cw is None else cw[t.clamp(min=0)][kept].sum())
    else:
        ce = F.cross_entropy(logits, t, weight=cw, reduction=reduction, label_smoothing=label_smoothing)
    lse = torch.logsumexp(logits, dim=-1)
    z = torch.where(kept, lse_square_scale * lse**2, 0.0)
    if reduction == "mean":
        z = z / kept.sum()
    if token_scaling:
        p = torch.softmax(logits, dim=-1).gather(-1, t.clamp(min=0)[:, None])[:, 0]
        total = torch.where(kept, (ce + z) * p, 0.0)
        return total if reduction == "none" else total.sum()
    return ce + (z if reduction == "none" else z.sum())


def _case(seed, bias=True, weights=False, BT=11, H=5, V=13):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BT, H))
    weight = rng.standard_normal((V, H))
    b = rng.standard_normal(V) if bias else None
    target = rng.integers(0, V, BT)
    target[rng.random(BT) < 0.3] = -100
    ce_weight = rng.uniform(0.2, 2.0, V) if weights else None
    return weight, x, target, b, ce_weight


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [
    {}, {"label_smoothing": 0.1}, {"lse_square_scale": 1e-2}, {"softcap": 3.0},
    {"label_smoothing": 0.2, "lse_square_scale": 1e-3, "softcap": 2.0},
])
@pytest.mark.parametrize("weights", [False, True])
def test_matches_liger_reference(reduction, options, weights):
    weight, x, target, b, cw = _case(0, weights=weights)
    ls, zs, cap = options.get("label_smoothing", 0.0), options.get("lse_square_scale", 0.0), options.get("softcap")
    got = fused_linear_cross_entropy(weight, x, target, b, cw, -100, zs, ls, reduction, cap)
    expected = _liger_reference(weight, x, target, b, cw, zs, ls, reduction, cap)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_token_scaling_matches_liger_reference(reduction):
    weight, x, target, b, _ = _case(1)
    got = fused_linear_cross_entropy(weight, x, target, b, None, -100, 1e-2, 0.1, reduction, 4.0,
                                     use_token_scaling=True)
    expected = _liger_reference(weight, x, target, b, None, 1e-2, 0.1, reduction, 4.0, token_scaling=True)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-15)


def test_all_ignored_mean_is_zero_and_accuracy_nan():
    weight, x, target, b, _ = _case(2)
    target[:] = -100
    out = fused_linear_cross_entropy(weight, x, target, b, return_z_loss=True, return_token_accuracy=True)
    assert isinstance(out, CrossEntropyOutput)
    assert out.loss == 0.0 and out.z_loss == 0.0  # F.cross_entropy would give NaN
    assert np.isnan(out.token_accuracy)


def test_z_loss_accuracy_and_predicted_tokens_against_a_loop():
    weight, x, target, b, cw = _case(3, weights=True)
    out = fused_linear_cross_entropy(weight, x, target, b, cw, lse_square_scale=0.5, return_z_loss=True,
                                     return_token_accuracy=True, return_predicted_tokens=True)
    kept = [i for i in range(len(target)) if target[i] != -100]
    logits = [x[i] @ weight.T + b for i in range(len(target))]
    lse = [np.log(np.sum(np.exp(row))) for row in logits]
    assert out.z_loss == pytest.approx(sum(0.5 * lse[i] ** 2 for i in kept) / len(kept), rel=1e-12)
    # the mean's z-loss is divided by the count, the cross-entropy by the summed class weights
    ce = linear_sparse(x[None], weight, target[None], np.ones((1, len(target)), bool), ignore_index=-100, bias=b,
                       class_weight=cw)["token_mean"]
    assert out.loss == pytest.approx(ce + out.z_loss, rel=1e-12)
    predicted = [int(np.argmax(logits[i])) if target[i] != -100 else -1 for i in range(len(target))]
    assert out.predicted_tokens.tolist() == predicted
    assert out.token_accuracy == pytest.approx(sum(predicted[i] == target[i] for i in kept) / len(kept))


def test_bad_input_is_named():
    weight, x, target, _, _ = _case(4)
    with pytest.raises(ValueError, match="reduction"):
        fused_linear_cross_entropy(weight, x, target, reduction="token_mean")
    with pytest.raises(ValueError, match=r"_input \(BT, H\)"):
        fused_linear_cross_entropy(weight, x[None], target[None])
    with pytest.raises(ValueError, match="outside"):
        fused_linear_cross_entropy(weight, x, np.full(len(target), 99))
    with pytest.raises(TypeError, match="return_z_loss"):
        fused_linear_cross_entropy(weight, x, target, return_z_loss=1)
