"""Framework training-step recipes under check_training_step: correct loops pass, the cited bugs fail
on the smallest split that shows them; magnitudes of #7513; TRL's normalizers against the TRL mirror."""

from __future__ import annotations

import numpy as np
import pytest

import maskloss
from maskloss.conventions import recipes
from maskloss.conventions import trl as trl_mirror
from maskloss.strategies import PaddedBatch
from maskloss.testing import TrainingStepCheckError, check_training_step
from maskloss.testing.training_step import _shards, run_step

SCCE = maskloss.sparse_categorical_crossentropy
ALL = ("accumulation", "data", "context", "tensor")
EXAMPLES = 12


def _check(recipe, parallel, **kw):
    check_training_step(recipe, SCCE, grad_reduction=recipe.grad_reduction, parallel=parallel,
                        max_examples=EXAMPLES, **{**recipe.like_options, **kw})


@pytest.mark.parametrize(
    ("recipe", "parallel", "kw"),
    [
        (recipes.torchtitan(), ALL, {}),
        (recipes.hf_trainer(), ("accumulation", "data", "context"), {}),
        (recipes.megatron(), ALL, {}),
        (recipes.megatron(calculate_per_token_loss=False, cp_fix=True), ("context",), {}),
        (recipes.megatron(label_smoothing=0.1, global_vocab=True), ALL, {"max_classes": 6}),
        (recipes.verl("token-mean"), ("accumulation", "data"), {}),
        (recipes.verl("token-sum"), ("accumulation", "data"), {}),
        # verl divides by L_b + 1e-8: 1e-8 relative, above the float64 default
        (recipes.verl("seq-mean-token-mean"), ("accumulation", "data"), {"rtol": 1e-7}),
        (recipes.trl("dapo"), ("accumulation", "data"), {}),
        (recipes.trl("cispo"), ("accumulation", "data"), {}),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_correct_recipes_pass(recipe, parallel, kw):
    _check(recipe, parallel, **kw)


@pytest.mark.parametrize(
    ("recipe", "parallel", "split"),
    [
        (recipes.hf_trainer(version="4.45"), ("accumulation",), "micro-batches of"),          # transformers#34191
        (recipes.hf_trainer(average_tokens_across_devices=False), ("data",), "2 data-parallel ranks"),  # #34373
        (recipes.megatron(calculate_per_token_loss=False), ("context",), "context-parallel 2, contiguous"),  # #7513
        (recipes.megatron(label_smoothing=0.1), ("tensor",), "2 vocabulary shards"),          # Megatron-LM#737
        (recipes.verl("token-mean", global_counts=False), ("accumulation",), "micro-batches of"),  # verl#5625
        (recipes.trl("bnpo"), ("accumulation",), "micro-batches of"),    # a mean of micro-batch means
        (recipes.trl("grpo"), ("accumulation",), "micro-batches of"),
        (recipes.trl("dapo", generation_tokens=3.0), ("accumulation",), "one shard"),  # N of other steps
        (recipes.trl("dapo", steps_per_generation=2, window_rescale=False), ("accumulation",), "one shard"),
        (recipes.hf_trainer(cp_counted_as_dp=True), ("context",), "context-parallel 2, contiguous"),  # #39648
        (recipes.verl("token-mean", dp_size=False), ("accumulation", "data"), "2 data-parallel ranks"),  # dp_size
        (recipes.nemo_rl(), ("accumulation",), "micro-batches of"),    # NeMo-RL#212: empty micro-batch counted
        (recipes.nemo_rl(valid_microbatches=True), ("accumulation",), "micro-batches of"),  # still a mean of means
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_bugs_are_caught_at_the_smallest_split(recipe, parallel, split):
    with pytest.raises(TrainingStepCheckError, match=f"when split as {split}") as info:
        _check(recipe, parallel, max_classes=6)
    text = str(info.value)
    assert "scale used" in text or "returned" in text
    assert "the smallest failing batch" in text
    # the split named is the first that fails: every split with fewer shards passed
    if split == "one shard":
        assert "it fails on the batch in one piece already" in text
    else:
        assert "it passes one shard" in text


def _batch(lengths, length, classes, seed=0):
    rng = np.random.default_rng(seed)
    mask = maskloss.mask_from_lengths(lengths, length)
    labels = rng.integers(0, classes, mask.shape)
    logits = rng.normal(size=mask.shape + (classes,))
    return PaddedBatch(labels, logits, mask, mask.sum(axis=1), None, "sparse", "right")


def _backend_grad(recipe, batch, layout):
    return run_step(recipe, batch.y_true, batch.y_pred, batch.mask, layout, grad_reduction=recipe.grad_reduction).grad


@pytest.mark.parametrize("cp", [2, 4])
def test_megatron_7513_one_valid_token_divides_the_gradient_by_cp(cp):
    # Megatron-LM#7513's own numbers: one valid token, CP=2 halves the gradient, CP=4 quarters it
    batch = _batch([1], 8, 5)
    layout = maskloss.ShardLayout.split(1, 8, context_parallel=cp)
    _, want = maskloss.value_and_grad(SCCE)(batch.y_true, batch.y_pred, batch.mask, from_logits=True)
    got = _backend_grad(recipes.megatron(calculate_per_token_loss=False), batch, layout)
    np.testing.assert_allclose(got, want / cp, rtol=1e-12, atol=1e-15)
    fixed = _backend_grad(recipes.megatron(calculate_per_token_loss=False, cp_fix=True), batch, layout)
    np.testing.assert_allclose(fixed, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "luspo"])
def test_trl_normalizers_match_the_trl_mirror(loss_type):
    # conventions.trl.grpo_loss runs TRL 1.16's own _compute_loss in tests/test_conventions_trl.py; on
    # policy (ratio 1, beta 0) its per-token loss is -advantage, so the recipe's weights must give its value
    batch = _batch([4, 1, 0, 3, 2, 4, 1, 3], 4, 3)
    layout = maskloss.ShardLayout.split(8, 4, ranks=2, micro_batches=[2, 2])
    advantages = np.random.default_rng(1).normal(size=8)
    shards = _shards(batch, layout, torch=False)
    recipe = recipes.trl(loss_type)
    topo = recipes._Topology(shards, [np.asarray(s.mask) for s in shards])
    tokens = float(batch.mask.sum())
    for s, w in zip(shards, recipe.weights(topo), strict=True):
        rows = np.asarray(s.rows)
        lp = np.zeros(s.mask.shape)
        want = trl_mirror.grpo_loss(lp, lp, advantages[rows], s.mask, loss_type=loss_type, max_completion_length=4,
                                    gradient_accumulation_steps=2, num_processes=2, num_items_in_batch=tokens)
        got = float((w * np.where(s.mask, -advantages[rows][:, None], 0.0)).sum())
        assert got == pytest.approx(float(want), rel=1e-12, abs=1e-15)


def test_trl_steps_per_generation_divides_by_the_generation_batch():
    # steps_per_generation=4 with GA=2: the generation batch is 2 optimizer steps; dapo divides each step's
    # sums by N_gen / P * GA / S, exact only when both steps hold N_gen / 2 tokens (shard_scales: N_step)
    first, second = maskloss.mask_from_lengths([4, 1], 4), maskloss.mask_from_lengths([2, 0], 4)
    n_gen = float(first.sum() + second.sum())
    layout = maskloss.ShardLayout.split(2, 4, micro_batches=[1, 1])
    for mask in (first, second):
        batch = _batch(mask.sum(axis=1), 4, 3)
        shards = _shards(batch, layout, torch=False)
        topo = recipes._Topology(shards, [np.asarray(s.mask) for s in shards])
        used = recipes.trl("dapo", steps_per_generation=4, generation_tokens=n_gen).weights(topo)
        needed = maskloss.shard_scales(mask, layout, reduction="token_mean", grad_reduction="mean").factors
        for w, f, s in zip(used, needed, shards, strict=True):
            if s.mask.any():
                assert float(w[s.mask][0]) == pytest.approx(2.0 / n_gen)     # = 1 / (N_gen / 1 * 2 / 4)
                assert float(f[0]) == pytest.approx(1.0 / float(mask.sum()))  # what the step needs


def test_trl_6024_steps_per_generation_4_ga_2_halves_the_gradient():
    # TRL#6024's own configuration: steps_per_generation=4, gradient_accumulation_steps=2, before the fix
    batch = _batch([4, 1, 3, 2], 4, 3)
    layout = maskloss.ShardLayout.split(4, 4, micro_batches=[2, 2])
    _, want = maskloss.value_and_grad(SCCE)(batch.y_true, batch.y_pred, batch.mask, from_logits=True)
    before = _backend_grad(recipes.trl("dapo", steps_per_generation=4, window_rescale=False), batch, layout)
    after = _backend_grad(recipes.trl("dapo", steps_per_generation=4), batch, layout)
    np.testing.assert_allclose(before, want / 2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(after, want, rtol=1e-12, atol=1e-15)


def test_verl_5625_sample_share_times_local_token_mean():
    # verl#5625's formula by hand: micro-batches of 1 and 3 sequences with 4 and 6 tokens; each token
    # gets (1 / tokens_i) * (samples_i / 4): 1/16 and 1/8 instead of 1/10
    batch = _batch([4, 1, 3, 2], 4, 3)
    layout = maskloss.ShardLayout.split(4, 4, micro_batches=[1, 3])
    _, want = maskloss.value_and_grad(SCCE)(batch.y_true, batch.y_pred, batch.mask, from_logits=True)
    got = _backend_grad(recipes.verl("token-mean", global_counts=False), batch, layout)
    ratio = got[..., 0][batch.mask] / want[..., 0][batch.mask]
    np.testing.assert_allclose(ratio[:4], (1 / 16) / (1 / 10), rtol=1e-12)
    np.testing.assert_allclose(ratio[4:], (1 / 8) / (1 / 10), rtol=1e-12)


@pytest.mark.parametrize("cp", [2, 4])
def test_transformers_39648_context_parallel_counted_as_data_parallel_divides_by_cp(cp):
    # every CP rank counts its whole sequences and the count is gathered over all processes: each token
    # counted cp times while the loss is still multiplied by every process; the gradient and the logged
    # loss are 1/cp of the truth (1/2 and 1/4 here), and without CP the recipe is the 5.24 Trainer's
    batch = _batch([8, 3, 0, 5], 8, 4)
    layout = maskloss.ShardLayout.split(4, 8, context_parallel=cp)
    want_value, want = maskloss.value_and_grad(SCCE)(batch.y_true, batch.y_pred, batch.mask, from_logits=True)
    bug = recipes.hf_trainer(cp_counted_as_dp=True)
    result = run_step(bug, batch.y_true, batch.y_pred, batch.mask, layout, grad_reduction=bug.grad_reduction)
    np.testing.assert_allclose(result.grad, want / cp, rtol=1e-12, atol=1e-15)
    assert result.logged == pytest.approx(float(want_value) / cp, rel=1e-12)
    dp_only = maskloss.ShardLayout.split(4, 8, ranks=2)
    np.testing.assert_allclose(_backend_grad(bug, batch, dp_only), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("ranks", [2, 4])
def test_verl_without_dp_size_is_one_over_the_ranks(ranks):
    # agg_loss with the global token count but dp_size left at 1: FSDP's average over P ranks gives 1/P
    batch = _batch([4, 1, 0, 3, 2, 4, 1, 3], 4, 3)
    layout = maskloss.ShardLayout.split(8, 4, ranks=ranks, micro_batches=[1] * (8 // ranks))
    _, want = maskloss.value_and_grad(SCCE)(batch.y_true, batch.y_pred, batch.mask, from_logits=True)
    np.testing.assert_allclose(_backend_grad(recipes.verl("token-mean", dp_size=False), batch, layout),
                               want / ranks, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_backend_grad(recipes.verl("token-mean"), batch, layout), want,
                               rtol=1e-12, atol=1e-15)


def test_nemo_rl_212_an_empty_micro_batch_takes_a_third_of_the_weight():
    # NVIDIA-NeMo/RL#212 by hand: micro-batches of 1, 0 and 1 sequences, 3 tokens each; every micro-batch
    # mean divided by the 3 micro-batches gives each token 1/9 instead of 1/6 (2/3 of its weight);
    # dividing by the 2 valid micro-batches gives 1/6, exact because both hold 3 tokens
    batch = _batch([3, 3], 4, 3)
    layout = maskloss.ShardLayout.split(2, 4, micro_batches=[1, 0, 1])
    _, want = maskloss.value_and_grad(SCCE)(batch.y_true, batch.y_pred, batch.mask, from_logits=True)
    np.testing.assert_allclose(_backend_grad(recipes.nemo_rl(), batch, layout), want * 2 / 3, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_backend_grad(recipes.nemo_rl(valid_microbatches=True), batch, layout), want,
                               rtol=1e-12, atol=1e-15)
