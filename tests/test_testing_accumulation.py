"""maskloss.testing.check_accumulation on real torch training steps: a correct and a buggy one."""

from __future__ import annotations

import numpy as np
import pytest

import maskloss
from maskloss.testing import AccumulationCheckError, check_accumulation

torch = pytest.importorskip("torch")
F = torch.nn.functional

LENGTHS = [5, 1, 3, 0, 4, 2]  # one empty sequence, very different token counts


def _batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(len(LENGTHS), 5, 3))
    labels = rng.integers(0, 4, size=(len(LENGTHS), 5))
    padding = np.arange(5)[None, :] >= np.array(LENGTHS)[:, None]
    x[padding] = np.nan  # garbage under the mask
    return x, np.where(padding, -100, labels)


def _per_token(model, x: np.ndarray, labels: np.ndarray):
    lab = torch.from_numpy(labels)
    inputs = torch.where(lab[..., None] != -100, torch.from_numpy(x), 0.0)
    return F.cross_entropy(model(inputs).transpose(1, 2), lab, ignore_index=-100, reduction="none")


def _step(loss_of):
    """A training step simulating DDP: per rank, grads summed over micro-batches; ranks averaged."""
    def step(shards):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 4, dtype=torch.float64)
        counts = maskloss.GlobalCounts.total(maskloss.GlobalCounts.from_mask(labels != -100)
                                             for rank in shards for _, labels in rank)
        rank_grads = []
        for rank in shards:
            model.zero_grad()
            for x, labels in rank:
                loss_of(_per_token(model, x, labels), labels, counts, len(shards), len(rank)).backward()
            rank_grads.append([p.grad.detach().clone() for p in model.parameters()])
        return [torch.stack(g).mean(0) for g in zip(*rank_grads, strict=True)]  # DDP's all-reduce mean
    return step


def _maskloss_rule(per_token, labels, counts, world_size, _micro):
    c = counts.scale("token_mean", (labels != -100).sum(1).astype(np.float64))
    return (per_token.sum(1) * torch.from_numpy(c)).sum() * world_size


def _mean_of_means(per_token, labels, _counts, _world_size, micro):
    return per_token.sum() / (labels != -100).sum() / micro  # the pre-4.46 transformers recipe


def test_a_step_following_the_maskloss_rule_passes_every_configuration():
    errors = check_accumulation(_step(_maskloss_rule), _batch(), micro_batches=(1, 2, 3), ranks=(1, 2, 3))
    assert set(errors) == {(r, m) for r in (1, 2, 3) for m in (1, 2, 3) if r * m <= 6}
    assert max(errors.values()) <= 1e-12


def test_the_mean_of_micro_batch_means_is_reported_at_its_first_configuration():
    with pytest.raises(AccumulationCheckError) as info:
        check_accumulation(_step(_mean_of_means), _batch(), micro_batches=(1, 2), ranks=(1, 2))
    message = str(info.value)
    # ranks=1, micro_batches=1 is the reference; the next one tried is ranks=1, micro_batches=2,
    # sequences [0, 1, 2] (9 tokens) and [3, 4, 5] (6 tokens): a different gradient.
    assert "at ranks=1, micro_batches=2 (sequences per micro-batch, by rank: [[3, 3]])" in message
    assert "relative error" in message


def test_a_step_off_only_across_ranks_is_caught_at_the_first_multi_rank_configuration():
    def per_rank_mean(per_token, labels, counts, world_size, micro):
        return _maskloss_rule(per_token, labels, counts, 1, micro)  # forgot DDP's 1/world_size
    with pytest.raises(AccumulationCheckError, match=r"at ranks=2, micro_batches=1 .*\[\[3\], \[3\]\]"):
        check_accumulation(_step(per_rank_mean), _batch(), micro_batches=(1, 2), ranks=(1, 2))


def test_bad_arguments_are_named():
    x, labels = _batch()
    with pytest.raises(ValueError, match=r"share their first \(sequence\) axis, got shapes \[\(6, 5, 3\), \(5, 5\)\]"):
        check_accumulation(_step(_maskloss_rule), (x, labels[:5]))
    with pytest.raises(ValueError, match="micro_batches must be positive integers, got 0"):
        check_accumulation(_step(_maskloss_rule), (x, labels), micro_batches=(0,))
    with pytest.raises(ValueError, match="batch must hold at least one array"):
        check_accumulation(_step(_maskloss_rule), ())
