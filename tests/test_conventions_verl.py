"""maskloss.conventions.verl against golden numbers from verl's own source, and verl's unit tests.

verl cannot be installed here (verl 0.9.1 pins transformers<5.11 and needs ray), so the golden
numbers below were produced by executing the unmodified source of ``agg_loss``,
``kl_penalty``/``kl_penalty_forward`` (``verl/trainer/ppo/core_algos.py``) and
``masked_sum``/``masked_mean`` (``verl/utils/torch_functional.py``), extracted from the wheels
``verl-0.9.1-py3-none-any.whl`` and ``verl-0.4.1-py3-none-any.whl`` (``pip download --no-deps``),
with torch 2.13 in float64, on the batch ``LOSS``/``MASK`` below. The peer cases are verl
0.9.1's ``tests/trainer/ppo/test_loss_aggregation_on_cpu.py``, transcribed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import maskloss
from maskloss.conventions import verl

LOSS = np.array([[1.0, 2.0, 30.0, 0.5], [4.0, 50.0, 6.0, -1.0], [7.0, 8.0, 9.0, 10.0], [0.25, -3.0, 2.0, 1.5]])
MASK = np.array([[1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])  # the third response is empty
DP = {"dp_size": 2, "batch_num_tokens": 20, "global_batch_size": 6, "loss_scale_factor": 16}

# (version, mode, arguments) -> what verl's own agg_loss returned (see the module docstring)
GOLDEN = {
    ("0.9", "token-mean", "plain"): 1.4166666666666667,
    ("0.9", "token-mean", "dp2"): 1.275,
    ("0.9", "token-sum", "plain"): 12.75,
    ("0.9", "token-sum", "dp2"): 25.5,
    ("0.9", "seq-mean-token-sum", "plain"): 4.25,
    ("0.9", "seq-mean-token-sum", "dp2"): 4.25,
    ("0.9", "seq-mean-token-sum-norm", "plain"): 1.0625,
    ("0.9", "seq-mean-token-sum-norm", "dp2"): 0.265625,
    ("0.9", "seq-mean-token-mean", "plain"): 1.5624999940104167,
    ("0.9", "seq-mean-token-mean", "dp2"): 1.5624999940104167,
    ("0.4", "token-mean", "plain"): 1.4166666650925925,
    ("0.4", "seq-mean-token-sum", "plain"): 3.1875,
    ("0.4", "seq-mean-token-sum-norm", "plain"): 3.1875,
    ("0.4", "seq-mean-token-mean", "plain"): math.nan,  # the empty response: 0/0
}
# verl 0.9.1 kl_penalty(logprob=[[-1, -25, -3]], ref_logprob=[[-2, -1, -40]], name)
KL_GOLDEN = {
    "k1": [1.0, -24.0, 37.0],
    "abs": [1.0, 24.0, 37.0],
    "k2": [0.5, 288.0, 684.5],
    "k3": [0.36787944117144233, 10.0, 10.0],
    "k3+": [0.36787944117144233, 10.0, 10.0],
}


@pytest.mark.parametrize("key", list(GOLDEN), ids=str)
def test_agg_loss_golden(key):
    version, mode, args = key
    kwargs = DP if args == "dp2" else {}
    got = float(verl.agg_loss(LOSS, MASK, mode, **kwargs, version=version))
    assert got == pytest.approx(GOLDEN[key], rel=1e-14, nan_ok=True)


@pytest.mark.parametrize("name", list(KL_GOLDEN))
def test_kl_penalty_golden(name):
    got = verl.kl_penalty([[-1.0, -25.0, -3.0]], [[-2.0, -1.0, -40.0]], name)
    np.testing.assert_allclose(got[0], KL_GOLDEN[name], rtol=1e-15)


# --- verl 0.9.1's own unit tests (tests/trainer/ppo/test_loss_aggregation_on_cpu.py), transcribed


def test_peer_token_sum_masks_tokens_and_scales_for_dp():
    loss_mat = np.array([[1.0, 2.0, 30.0], [4.0, 50.0, 6.0]])
    loss_mask = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    assert float(verl.agg_loss(loss_mat, loss_mask, loss_agg_mode="token-sum", dp_size=4)) == (1 + 2 + 4 + 6) * 4


@pytest.mark.parametrize("num_micro_batches", [1, 2, 4])
def test_peer_token_sum_is_microbatch_invariant(num_micro_batches):
    loss_mat = np.arange(1, 25, dtype=np.float64).reshape(8, 3)
    loss_mask = np.array([[1.0, 1.0, 0.0]] * 8)
    step = 8 // num_micro_batches
    accumulated = sum(float(verl.agg_loss(loss_mat[i:i + step], loss_mask[i:i + step], "token-sum"))
                      for i in range(0, 8, step))
    assert accumulated == pytest.approx(float(verl.agg_loss(loss_mat, loss_mask, "token-sum")))


@pytest.mark.parametrize("dp_size", [2, 4])
def test_peer_token_sum_matches_global_sum_after_fsdp_mean_reduction(dp_size):
    loss_mat = np.arange(1, 25, dtype=np.float64).reshape(8, 3)
    loss_mask = np.array([[1.0, 1.0, 0.0]] * 8)
    step = 8 // dp_size
    ranks = [float(verl.agg_loss(loss_mat[i:i + step], loss_mask[i:i + step], "token-sum", dp_size=dp_size))
             for i in range(0, 8, step)]
    assert np.mean(ranks) == pytest.approx(float(verl.agg_loss(loss_mat, loss_mask, "token-sum")))


# --- verl's modes in terms of the core, and its quirks


def test_global_token_mean_is_verl_token_mean_with_global_count():
    """verl token-mean with the global token count, averaged over dp ranks = maskloss global_token_mean summed."""
    count = int(MASK.sum())
    ranks = [float(verl.agg_loss(LOSS[i:i + 2], MASK[i:i + 2], "token-mean", dp_size=2, batch_num_tokens=count))
             for i in (0, 2)]
    assert np.mean(ranks) == pytest.approx(float(maskloss.aggregate(LOSS, MASK.astype(bool), mode="token_mean")))


def test_seq_mean_token_sum_norm_divides_by_the_padded_length_unless_told():
    """The Dr. GRPO bug: without loss_scale_factor the divisor is the batch's padded length."""
    wider = np.concatenate([LOSS, np.zeros((4, 4))], axis=1)
    wider_mask = np.concatenate([MASK, np.zeros((4, 4), int)], axis=1)
    narrow = float(verl.agg_loss(LOSS, MASK, "seq-mean-token-sum-norm"))
    assert float(verl.agg_loss(wider, wider_mask, "seq-mean-token-sum-norm")) == pytest.approx(narrow / 2)
    fixed = [float(verl.agg_loss(x, m, "seq-mean-token-sum-norm", loss_scale_factor=16))
             for x, m in ((LOSS, MASK), (wider, wider_mask))]
    assert fixed[0] == fixed[1]


def test_nan_under_the_mask_leaks_into_sequence_modes_as_in_verl():
    loss = LOSS.copy()
    loss[0, 3] = np.nan  # masked
    assert float(verl.agg_loss(loss, MASK, "token-mean")) == pytest.approx(GOLDEN[("0.9", "token-mean", "plain")])
    assert math.isnan(float(verl.agg_loss(loss, MASK, "seq-mean-token-sum")))
    # the core selects: (3 + 9 + 0.75) / 4 sequences (batch_mean counts the empty one, verl's K does not)
    assert float(maskloss.aggregate(loss, MASK.astype(bool), mode="batch_mean")) == 12.75 / 4


def test_bad_mode_and_missing_global_counts():
    with pytest.raises(ValueError, match="Invalid loss_agg_mode: 'token_mean'"):
        verl.agg_loss(LOSS, MASK, "token_mean")
    with pytest.raises(ValueError, match=r"verl 0\.4 has"):
        verl.agg_loss(LOSS, MASK, "token-sum", version="0.4")
    with pytest.raises(ValueError, match="batch_num_tokens is required"):
        verl.agg_loss(LOSS, MASK, "token-mean", dp_size=2)
    with pytest.raises(ValueError, match="global_batch_size is required"):
        verl.agg_loss(LOSS, MASK, "seq-mean-token-mean", dp_size=2)


# --- compute_value_loss and compute_policy_loss(rollout_is_weights=), issue 20
# Golden numbers: the unmodified verl 0.9.1 source of compute_value_loss, compute_policy_loss_vanilla
# and agg_loss (verl/trainer/ppo/core_algos.py) with masked_sum/masked_mean/clip_by_value
# (verl/utils/torch_functional.py), from verl-0.9.1-py3-none-any.whl (pip download --no-deps), run
# by exec of their ast-extracted text with torch 2.13 in float64 on the batches below
# (compute_policy_loss_vanilla with config clip_ratio=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0,
# global_batch_info={}).

VPREDS = np.array([[1.0, 1.5, 0.0, 2.0], [0.5, -1.0, 3.0, 0.25], [9.0, 9.0, 9.0, 9.0]])
OLDV = np.array([[1.0, 1.0, 0.5, 1.0], [0.0, -0.5, 3.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
RET = np.array([[0.0, 2.0, 1.0, -1.0], [1.0, -2.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
VMASK = np.array([[1, 1, 1, 0], [1, 1, 0, 1], [0, 0, 0, 0]])  # the third response is empty
VALUE_GOLDEN = {
    "token-mean": 0.4216666666666667,
    "token-sum": 2.5300000000000002,
    "seq-mean-token-sum": 1.2650000000000001,
    "seq-mean-token-sum-norm": 0.31625000000000003,
    "seq-mean-token-mean": 0.42166666526111113,
}
OLD_LP = np.array([[-1.0, -2.0, -0.5, -3.0], [-0.2, -1.5, -2.5, -1.0]])
LP = np.array([[-0.8, -2.5, -0.1, -3.2], [-0.9, -0.3, -2.4, -1.1]])
ADV = np.array([[1.0, -1.0, 2.0, 0.5], [-2.0, -0.5, 1.5, -1.0]])
IS_W = np.array([[0.5, 2.0, 1.0, 1.5], [1.25, 0.75, 3.0, 0.25]])
PMASK = np.array([[1, 1, 1, 0], [1, 1, 0, 1]])
POLICY_GOLDEN = {
    ("token-mean", False): 0.17057244331263155,
    ("token-mean", True): 0.29675132923815084,
    ("seq-mean-token-mean", False): 0.17057244274405686,
    ("seq-mean-token-mean", True): 0.2967513282489798,
}


@pytest.mark.parametrize("mode", list(VALUE_GOLDEN))
def test_compute_value_loss_golden(mode):
    got = float(verl.compute_value_loss(VPREDS, RET, OLDV, VMASK, 0.2, loss_agg_mode=mode))
    assert got == pytest.approx(VALUE_GOLDEN[mode], rel=1e-14)
    dp = float(verl.compute_value_loss(VPREDS, RET, OLDV, VMASK, 0.2, "token-mean", dp_size=2, batch_num_tokens=12))
    assert dp == pytest.approx(0.4216666666666667, rel=1e-14)  # verl 0.9.1: 5.06 / 12 * 2 / 2


def test_compute_value_loss_token_mean_is_the_core_and_the_loop():
    core = maskloss.clipped_value_loss(VPREDS, OLDV, RET, VMASK, value_clip_range=0.2)
    assert float(verl.compute_value_loss(VPREDS, RET, OLDV, VMASK, 0.2)) == pytest.approx(float(core), rel=1e-15)
    total, n = 0.0, 0
    for v, o, r, m in zip(VPREDS.ravel(), OLDV.ravel(), RET.ravel(), VMASK.ravel(), strict=True):
        if m:
            total += max((v - r) ** 2, (min(max(v, o - 0.2), o + 0.2) - r) ** 2)
            n += 1
    assert float(core) == pytest.approx(0.5 * total / n, rel=1e-15)


def _loop_policy(old, lp, adv, mask, weights, low=0.2, high=0.28, c=3.0):
    """verl's dual-clip PPO per token, weighted, token-mean, as a loop."""
    total, n = 0.0, 0
    for o, p, a, m, w in zip(old.ravel(), lp.ravel(), adv.ravel(), mask.ravel(), weights.ravel(), strict=True):
        if not m:
            continue
        r = math.exp(min(max(p - o, -20.0), 20.0))
        loss = max(-a * r, -a * min(max(r, 1 - low), 1 + high))
        if a < 0:
            loss = min(loss, -a * c)
        total += loss * w
        n += 1
    return total / n


@pytest.mark.parametrize("key", list(POLICY_GOLDEN), ids=str)
def test_compute_policy_loss_rollout_is_weights_golden(key):
    mode, weighted = key
    got = float(verl.compute_policy_loss(OLD_LP, LP, ADV, PMASK, cliprange=0.2, cliprange_high=0.28,
                                         loss_agg_mode=mode, rollout_is_weights=IS_W if weighted else None))
    assert got == pytest.approx(POLICY_GOLDEN[key], rel=1e-14)
    if mode == "token-mean":
        want = _loop_policy(OLD_LP, LP, ADV, PMASK, IS_W if weighted else np.ones_like(IS_W))
        assert got == pytest.approx(want, rel=1e-14)


def test_rollout_is_weights_broadcast_and_leak_like_verl():
    per_seq = verl.compute_policy_loss(OLD_LP, LP, ADV, PMASK, cliprange=0.2, rollout_is_weights=[[2.0], [2.0]])
    plain = verl.compute_policy_loss(OLD_LP, LP, ADV, PMASK, cliprange=0.2)
    assert float(per_seq) == pytest.approx(2 * float(plain), rel=1e-15)
    nan_masked = np.where(PMASK == 1, IS_W, np.nan)
    assert np.isfinite(verl.compute_policy_loss(OLD_LP, LP, ADV, PMASK, cliprange=0.2, rollout_is_weights=nan_masked))
    leaked = verl.compute_policy_loss(OLD_LP, LP, ADV, PMASK, cliprange=0.2, loss_agg_mode="seq-mean-token-sum",
                                      rollout_is_weights=nan_masked)
    assert math.isnan(leaked)  # verl's loss_mat * loss_mask
    with pytest.raises(ValueError, match=r"rollout_is_weights must broadcast to the log-probs' shape \(2, 4\)"):
        verl.compute_policy_loss(OLD_LP, LP, ADV, PMASK, cliprange=0.2, rollout_is_weights=[1.0, 2.0, 3.0])
