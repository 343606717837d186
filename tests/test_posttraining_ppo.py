"""posttraining.clipped_value_loss and high_entropy_mask (issue 20): loop oracles, the real frameworks.

The clipped value loss is checked three ways: a per-token Python loop, torch autograd of the same
expression (the gradient), and torchtune's own ``PPOLoss`` (its value-loss output, which divides by
``sum(mask) + 1e-8``). ``high_entropy_mask`` is compared, mask for mask, with TRL's own
``GRPOTrainer.get_high_entropy_mask`` called unbound on a single-process stand-in ``self``.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss

torch = pytest.importorskip("torch")


def _batch(seed, b=3, t=5, empty=True):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0 if empty else 1, t + 1, b)
    lengths[0] = max(lengths[0], 1)
    mask = np.arange(t)[None] < lengths[:, None]
    old = rng.normal(0, 1, (b, t))
    values = old + rng.normal(0, 0.4, (b, t))  # some inside the clip interval, some outside
    returns = rng.normal(0, 1, (b, t))
    garbage = np.where(rng.random((b, t)) < 0.5, np.nan, np.inf)
    return (np.where(mask, values, garbage), np.where(mask, old, -garbage), np.where(mask, returns, garbage), mask)


def _loop_value_loss(values, old, returns, mask, c, reduction):
    """The obvious per-token loop: 0.5 * max((v - R)^2, (clip(v, old - c, old + c) - R)^2)."""
    per_seq, counts = [], []
    for vb, ob, rb, mb in zip(values.tolist(), old.tolist(), returns.tolist(), mask.tolist(), strict=True):
        total, n = 0.0, 0
        for v, o, r, m in zip(vb, ob, rb, mb, strict=True):
            if not m:
                continue
            clipped = min(max(v, o - c), o + c)
            total += 0.5 * max((v - r) ** 2, (clipped - r) ** 2)
            n += 1
        per_seq.append(total)
        counts.append(n)
    if reduction == "sum":
        return sum(per_seq)
    if reduction == "token_mean":
        return sum(per_seq) / sum(counts) if sum(counts) else math.nan
    if reduction == "sequence_mean":
        means = [s / n for s, n in zip(per_seq, counts, strict=True) if n]
        return sum(means) / len(means) if means else math.nan
    if reduction == "batch_mean":
        return sum(per_seq) / len(per_seq)
    raise AssertionError(reduction)


@pytest.mark.parametrize("reduction", ["sum", "token_mean", "sequence_mean", "batch_mean"])
@pytest.mark.parametrize("c", [0.0, 0.2, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_clipped_value_loss_matches_the_loop(reduction, c, seed):
    values, old, returns, mask = _batch(seed)
    got = maskloss.clipped_value_loss(values, old, returns, mask, value_clip_range=c, reduction=reduction)
    assert float(got) == pytest.approx(_loop_value_loss(values, old, returns, mask, c, reduction), rel=1e-13)


def _torch_value_loss(values, old, returns, mask, c, reduction):
    """The same expression in torch float64 (torchtune's lines, with maskloss's reductions)."""
    v = torch.tensor(np.where(mask, values, 0.0), requires_grad=True)
    o, r = torch.tensor(np.where(mask, old, 0.0)), torch.tensor(np.where(mask, returns, 0.0))
    m = torch.tensor(mask, dtype=torch.float64)
    per = 0.5 * torch.maximum((v - r) ** 2, (torch.clamp(v, o - c, o + c) - r) ** 2) * m
    if reduction == "sum":
        out = per.sum()
    elif reduction == "token_mean":
        out = per.sum() / m.sum()
    elif reduction == "sequence_mean":
        n = m.sum(-1)
        keep = n > 0
        out = (per.sum(-1)[keep] / n[keep]).mean()
    else:
        out = per.sum(-1).mean()
    out.backward()
    return float(out.detach()), v.grad.numpy()


@pytest.mark.parametrize("reduction", ["sum", "token_mean", "sequence_mean", "batch_mean"])
@pytest.mark.parametrize("seed", range(4))
def test_clipped_value_loss_gradient_matches_torch_autograd(reduction, seed):
    values, old, returns, mask = _batch(seed)
    value, grad = maskloss.value_and_grad(maskloss.clipped_value_loss)(values, old, returns, mask, reduction=reduction)
    want_value, want_grad = _torch_value_loss(values, old, returns, mask, 0.2, reduction)
    assert float(value) == pytest.approx(want_value, rel=1e-13)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-16)
    assert np.all(grad[~mask] == 0.0)


def test_clipped_value_loss_gradient_at_ties_and_bounds_follows_torch():
    """v on the clip bound (torch.clamp passes the gradient there) and a tie outside the interval
    (|v - R| = |clip(v) - R|, torch.maximum splits the gradient in halves)."""
    old = np.array([[0.0, 0.0, 0.0, 0.0]])
    values = np.array([[0.25, -0.25, 0.75, 0.125]])  # on both bounds; 0.75 -> 0.25, R = 0.5: a tie; inside
    returns = np.array([[1.0, 1.0, 0.5, -1.0]])
    mask = np.ones((1, 4), dtype=bool)
    _, grad = maskloss.value_and_grad(maskloss.clipped_value_loss)(
        values, old, returns, mask, value_clip_range=0.25, reduction="sum")
    _, want = _torch_value_loss(values, old, returns, mask, 0.25, "sum")
    np.testing.assert_array_equal(grad, want)
    assert grad.tolist() == [[-0.75, -1.25, 0.125, 1.125]]  # by hand: v - R, v - R, (0.75 - 0.5) / 2, v - R


@pytest.mark.framework("torchtune")
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float64])
@pytest.mark.parametrize("c", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("seed", range(5))
def test_clipped_value_loss_matches_torchtune_ppo_loss(mask_dtype, c, seed):
    ppo = pytest.importorskip("torchtune.rlhf.loss")
    values, old, returns, mask = _batch(seed, empty=False)
    clean = [torch.tensor(np.where(mask, x, 0.0)) for x in (values, old, returns)]  # torchtune multiplies by the mask
    lp = torch.zeros(mask.shape, dtype=torch.float64)
    m = torch.tensor(mask).to(mask_dtype)
    loss = ppo.PPOLoss(epsilon=0.1, value_clip_range=c, value_coeff=0.1)
    _, _, theirs, _, _ = loss(lp, lp, lp, clean[1], clean[0], clean[2], m, m)
    ours = float(maskloss.clipped_value_loss(values, old, returns, mask, value_clip_range=c))
    n = int(mask.sum())
    # torchtune's masked_mean divides by mask.sum() + 1e-8 (torchtune/rlhf/rewards.py). For a bool mask
    # the sum is an int64 tensor and int64 + 1e-8 is a float32 tensor, so n + 1e-8 rounds to n: the
    # same number as ours. For a float64 mask the 1e-8 stays: rescale ours to it.
    want = ours if mask_dtype == torch.bool else ours * n / (n + 1e-8)
    assert want == pytest.approx(float(theirs), rel=1e-14)
    assert ours == pytest.approx(float(theirs), rel=1e-8)


@given(st.integers(0, 2**32 - 1), st.integers(0, 4), st.sampled_from(["left", "right"]))
def test_padding_never_changes_the_value_loss(seed, pad, side):
    values, old, returns, mask = _batch(seed, b=2, t=4)
    want = maskloss.clipped_value_loss(values, old, returns, mask, reduction="sequence_mean")

    def padded(x, fill):
        block = np.full((x.shape[0], pad), fill, dtype=x.dtype)
        return np.concatenate([block, x] if side == "left" else [x, block], axis=1)

    got = maskloss.clipped_value_loss(padded(values, np.nan), padded(old, np.inf), padded(returns, -np.inf),
                                      padded(mask, False), reduction="sequence_mean")
    assert float(got) == pytest.approx(float(want), rel=1e-14)  # a summation order may differ in the last bit


def test_clipped_value_loss_is_nan_safe_and_never_writes_its_inputs():
    values, old, returns, mask = _batch(0)
    copies = [x.copy() for x in (values, old, returns)]
    value, grad = maskloss.value_and_grad(maskloss.clipped_value_loss)(values, old, returns, mask)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    for x, y in zip((values, old, returns), copies, strict=True):
        np.testing.assert_array_equal(x, y)
    empty = np.zeros((1, 3), dtype=bool)
    assert math.isnan(maskloss.clipped_value_loss(values[:1, :3], old[:1, :3], returns[:1, :3], empty))
    assert maskloss.clipped_value_loss(values[:1, :3], old[:1, :3], returns[:1, :3], empty, reduction="sum") == 0.0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: maskloss.clipped_value_loss([[1.0]], [[1.0]], [[1.0]], value_clip_range=-0.1), ValueError,
         r"value_clip_range must be finite and >= 0, got -0.1"),
        (lambda: maskloss.clipped_value_loss([[1.0]], [[1.0]], [[1.0]], value_clip_range="0.2"), TypeError,
         r"value_clip_range must be a real number, got '0.2'"),
        (lambda: maskloss.clipped_value_loss([[1.0]], [[1.0, 2.0]], [[1.0]]), ValueError,
         r"old_values must have the shape of values \(1, 1\), got \(1, 2\)"),
        (lambda: maskloss.clipped_value_loss([[1.0]], [[1.0]], [[np.nan]]), ValueError,
         r"returns must be finite at valid steps; returns\[0, 0\] is nan"),
        (lambda: maskloss.clipped_value_loss([1.0], [1.0], [1.0]), ValueError,
         r"values must have shape \(batch, time\), got shape \(1,\)"),
        (lambda: maskloss.clipped_value_loss([[1.0]], [[1.0]], [[1.0]], reduction="mean"), ValueError,
         r"reduction must be one of .*; got 'mean'"),
    ],
)
def test_clipped_value_loss_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# high_entropy_mask against TRL


class _SingleProcess:
    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x

    def gather(self, x):
        return x


def _trl_mask(entropies, mask, threshold):
    from trl.trainer.grpo_trainer import GRPOTrainer

    stand_in = types.SimpleNamespace(accelerator=_SingleProcess())
    out = GRPOTrainer.get_high_entropy_mask(stand_in, torch.tensor(entropies), torch.tensor(mask), threshold)
    return out.numpy()


def _loop_mask(entropies, mask, threshold):
    """torch.quantile's float32 linear interpolation by hand, then the comparison, step by step."""
    valid = sorted(np.float32(h) for h, m in zip(entropies.ravel().tolist(), mask.ravel().tolist(), strict=True) if m)
    if not valid:
        return np.zeros(entropies.shape, dtype=bool)
    rank = np.float32(threshold) * np.float32(len(valid) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    w = rank - np.float32(lo)
    a, b = valid[lo], valid[hi]
    cut = a + w * (b - a) if w < 0.5 else b - (b - a) * (np.float32(1) - w)
    out = np.zeros(entropies.shape, dtype=bool)
    for idx in np.ndindex(entropies.shape):
        out[idx] = bool(mask[idx]) and float(entropies[idx]) >= float(cut)
    return out


def _entropy_batch(seed, b=3, t=6):
    rng = np.random.default_rng(seed)
    mask = rng.random((b, t)) < 0.7
    h = rng.gamma(2.0, 1.0, (b, t))
    h[rng.random((b, t)) < 0.3] = 1.5  # ties, on a value float32 holds exactly
    return np.where(mask, h, np.nan), mask


@pytest.mark.framework("trl")
@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.5, 0.8, 0.95, 1.0])
@pytest.mark.parametrize("seed", range(6))
def test_high_entropy_mask_equals_trl(threshold, seed):
    pytest.importorskip("trl")
    h, mask = _entropy_batch(seed)
    got = maskloss.high_entropy_mask(h, mask, threshold)
    np.testing.assert_array_equal(got, _trl_mask(h, mask, threshold))
    np.testing.assert_array_equal(got, _loop_mask(h, mask, threshold))


@pytest.mark.framework("trl")
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 1.0), st.sampled_from([np.float32, np.float64]))
def test_high_entropy_mask_equals_trl_property(seed, threshold, dtype):
    pytest.importorskip("trl")
    h, mask = _entropy_batch(seed, b=2, t=5)
    h = h.astype(dtype)
    np.testing.assert_array_equal(maskloss.high_entropy_mask(h, mask, threshold), _trl_mask(h, mask, threshold))


@pytest.mark.framework("trl")
def test_the_float32_quantile_can_drop_the_maximum():
    """TRL's quirk, pinned: float32(0.3) > 0.3, so at threshold 1.0 the largest entropy 0.3 (float64)
    is below its own float32 quantile and nothing is selected."""
    pytest.importorskip("trl")
    h = np.array([[0.1, 0.3, 0.2]])
    mask = np.ones((1, 3), dtype=bool)
    assert float(np.float32(0.3)) > 0.3
    assert not maskloss.high_entropy_mask(h, mask, 1.0).any()
    assert not _trl_mask(h, mask, 1.0).any()
    assert maskloss.high_entropy_mask(h.astype(np.float32), mask, 1.0).tolist() == [[False, True, False]]


def test_high_entropy_mask_edge_cases_and_errors():
    h = np.array([[np.nan, np.inf]])
    assert not maskloss.high_entropy_mask(h, [[False, False]], 0.5).any()  # nothing valid: all False
    assert maskloss.high_entropy_mask([[2.0, 1.0]], None, 0.0).tolist() == [[True, True]]
    with pytest.raises(ValueError, match=r"threshold must be a quantile in \[0, 1\], got 1.5"):
        maskloss.high_entropy_mask([[1.0]], None, 1.5)
    with pytest.raises(TypeError, match=r"threshold must be a real number in \[0, 1\], got None"):
        maskloss.high_entropy_mask([[1.0]], None, None)
    with pytest.raises(ValueError, match=r"entropies must be finite at valid steps; entropies\[0, 1\] is inf"):
        maskloss.high_entropy_mask(h, [[False, True]], 0.5)
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 2\)"):
        maskloss.high_entropy_mask([[1.0, 2.0]], [[True]], 0.5)
