"""maskloss.conventions.trl against TRL 1.16's own loss code, and against maskloss's core.

TRL computes its losses inside trainer methods. Building a trainer needs a model, a
dataset and a generation loop; the loss itself only reads a handful of attributes. So the
tests call TRL's own unbound ``GRPOTrainer._compute_loss`` / ``DPOTrainer._compute_loss``
on a stand-in ``self`` (``maskloss.conformance.trl``: the config fields TRL reads, a
single-process ``accelerator`` and a "model" that returns the log-probs of the batch):
every line of TRL's loss arithmetic runs, unmodified, in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import maskloss
from maskloss.conventions import trl as conv

trl = pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from maskloss.conformance.trl import trl_dpo_loss, trl_grpo_loss  # noqa: E402  (after the skips)

pytestmark = pytest.mark.framework("trl")


def _trl_grpo(logps, old, adv, mask, ref=None, num_items=None, **cfg):
    ref = logps if ref is None else ref
    num_items = float(mask.sum() if num_items is None else num_items)
    return trl_grpo_loss(logps, old, adv, mask, ref, num_items, cfg)


def _batch(seed, b=4, t=6, empty=True):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0 if empty else 1, t + 1, b)
    mask = np.arange(t)[None] < lengths[:, None]
    logps = rng.normal(-2, 0.5, (b, t))
    old = logps + rng.normal(0, 0.3, (b, t))
    ref = logps + rng.normal(0, 0.3, (b, t))
    adv = rng.normal(0, 1, b)
    return mask, logps, old, ref, adv


CONFIGS = [
    {},
    {"epsilon_high": 0.28},
    {"delta": 1.5},
    {"beta": 0.04},
    {"beta": 0.04, "use_bias_correction_kl": True},
    {"importance_sampling_level": "sequence"},
    {"ga": 4, "steps_per_generation": 2},
]


@pytest.mark.parametrize("loss_type", conv.GRPO_LOSS_TYPES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("seed", range(4))
def test_grpo_loss_matches_trl(loss_type, cfg, seed):
    if loss_type == "luspo" and cfg.get("importance_sampling_level") != "sequence":
        cfg = {**cfg, "importance_sampling_level": "sequence"}  # TRL refuses luspo at token level
    mask, logps, old, ref, adv = _batch(seed)
    num_items = int(mask.sum()) * 3 + 1  # a generation batch larger than this micro-batch
    theirs = _trl_grpo(logps, old, adv, mask, ref, num_items, loss_type=loss_type, **cfg)
    ours = conv.grpo_loss(
        logps, old, adv, mask, loss_type=loss_type, epsilon_low=0.2, epsilon_high=cfg.get("epsilon_high", 0.2),
        delta=cfg.get("delta"), beta=cfg.get("beta", 0.0), ref_per_token_logps=ref,
        use_bias_correction_kl=cfg.get("use_bias_correction_kl", False),
        importance_sampling_level=cfg.get("importance_sampling_level", "token"), max_completion_length=8,
        gradient_accumulation_steps=cfg.get("ga", 1), steps_per_generation=cfg.get("steps_per_generation"),
        num_items_in_batch=num_items,
    )
    # sapo: TRL builds its temperatures with torch.where of Python floats, a float32 tensor
    rel = 1e-6 if loss_type == "sapo" else 1e-12
    assert float(ours) == pytest.approx(theirs, rel=rel, abs=1e-14)


@pytest.mark.parametrize("seed", range(3))
def test_trl_loss_types_are_maskloss_aggregations(seed):
    """TRL's aggregations expressed with the core: which maskloss mode each loss type is."""
    mask, logps, old, _, adv = _batch(seed, empty=False)
    ratio = np.exp(logps - old)
    per_token = maskloss.clipped_surrogate(ratio, adv, mask)
    agg = lambda **k: float(maskloss.aggregate(per_token, mask, **k))  # noqa: E731
    trl_value = lambda t, **k: float(conv.grpo_loss(logps, old, adv, mask, loss_type=t, max_completion_length=8, **k))  # noqa: E731
    assert trl_value("grpo") == pytest.approx(agg(mode="sequence_mean"), rel=1e-12)
    assert trl_value("bnpo") == pytest.approx(agg(mode="token_mean"), rel=1e-12)
    assert trl_value("dr_grpo") == pytest.approx(agg(mode="constant", constant=4 * 8), rel=1e-12)
    n = int(mask.sum()) * 2
    assert trl_value("dapo", num_items_in_batch=n) == pytest.approx(agg(mode="global_token_mean", global_count=n))


def test_trl_grpo_counts_empty_responses_in_the_batch_mean():
    """TRL's clamp(min=1): an empty response adds 0 to the sum but still counts in 1/B."""
    mask = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    lp = np.zeros((2, 3))
    adv = np.array([1.0, 5.0])
    theirs = _trl_grpo(lp, lp, adv, mask, loss_type="grpo")
    assert theirs == pytest.approx(-0.5)  # (-1 + 0) / 2, by hand
    assert float(conv.grpo_loss(lp, lp, adv, mask, loss_type="grpo")) == pytest.approx(theirs)
    core = maskloss.aggregate(maskloss.clipped_surrogate(np.ones((2, 3)), adv, mask), mask, mode="sequence_mean")
    assert float(core) == -1.0  # maskloss leaves the empty response out


def _trl_dpo(per_token_logps, completion_mask, ref_chosen, ref_rejected, loss_type, beta):
    return trl_dpo_loss(per_token_logps, completion_mask, ref_chosen, ref_rejected, loss_type, beta)


@pytest.mark.parametrize("loss_type", conv.DPO_LOSS_TYPES)
@pytest.mark.parametrize("seed", range(4))
def test_dpo_loss_matches_trl(loss_type, seed):
    rng = np.random.default_rng(seed)
    pairs, steps = 3, 6
    lengths = rng.integers(1, steps, 2 * pairs)
    completion_mask = (np.arange(steps)[None] >= steps - lengths[:, None]).astype(bool)  # completion at the end
    shifted = completion_mask[:, 1:]
    per_token = np.where(shifted, rng.normal(-2, 1, shifted.shape), 0.0)  # the model zeroes -100 labels
    ref_c, ref_r = rng.normal(-8, 2, pairs), rng.normal(-8, 2, pairs)
    theirs = _trl_dpo(per_token, completion_mask, ref_c, ref_r, loss_type, 0.1)
    seq = per_token.sum(1)
    counts = completion_mask.sum(1)
    ours = conv.dpo_loss(seq[:pairs], seq[pairs:], ref_c, ref_r, beta=0.1, loss_type=loss_type,
                         chosen_lengths=counts[:pairs], rejected_lengths=counts[pairs:])
    assert float(ours) == pytest.approx(theirs, rel=1e-12)
    if loss_type == "sigmoid":
        core = maskloss.dpo_loss(seq[:pairs], seq[pairs:], ref_c, ref_r, beta=0.1).mean()
        assert float(core) == pytest.approx(theirs, rel=1e-12)


def test_unknown_loss_types_are_named():
    with pytest.raises(ValueError, match="Unknown loss type: 'grpo2'"):
        conv.grpo_loss(np.zeros((1, 2)), None, [1.0], [[1, 1]], loss_type="grpo2")
    with pytest.raises(ValueError, match="Unknown loss type: 'kto'"):
        conv.dpo_loss([0.0], [0.0], [0.0], [0.0], loss_type="kto")
