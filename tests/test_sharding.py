"""shard_scales: brute force over every reduction, aggregation mode and layout; ShardLayout validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss.strategies import masks

CONSTANT = 7.5  # an arbitrary Dr. GRPO divisor


def _full_batch(loss, mask, weight, mode):
    """The loss of the whole step, one loop over every step: the obviously correct oracle."""
    batch, length = mask.shape
    numerator = [0.0] * batch
    denominator = [0.0] * batch
    for b in range(batch):
        for t in range(length):
            if mask[b, t]:
                numerator[b] += weight[b, t] * loss[b, t]
                denominator[b] += weight[b, t]
    total = sum(numerator)
    if mode == "sum":
        return total
    if mode in ("token_mean", "global_token_mean"):
        return total / sum(denominator)
    if mode == "sequence_mean":
        kept = [n / d for n, d in zip(numerator, denominator, strict=True) if d > 0]
        return sum(kept) / len(kept)
    if mode == "batch_mean":
        return total / batch
    if mode == "element_mean":
        return total / (batch * length)
    assert mode == "constant"
    return total / CONSTANT


def _sharded(loss, mask, weight, layout, scales, grad_reduction):
    """What the step ends with: every shard's weighted sum times its factor, summed (or averaged) over ranks."""
    out = 0.0
    for shard, factor in zip(layout.shards, scales.factors, strict=True):
        for j, b in enumerate(shard.rows):
            for t in shard.time_index:
                if mask[b, t]:
                    out += factor[j] * weight[b, t] * loss[b, t]
    return out / layout.ranks if grad_reduction == "mean" else out


@st.composite
def _layouts(draw):
    ranks = draw(st.integers(1, 2))
    per_rank = draw(st.integers(1, 3))
    cuts = sorted(draw(st.lists(st.integers(0, per_rank), max_size=2)))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, per_rank], strict=True)]  # may hold an empty micro-batch
    cp = draw(st.integers(1, 2))
    zigzag = draw(st.booleans())
    length = draw(st.integers(1, 2)) * (2 * cp if zigzag else cp)
    layout = maskloss.ShardLayout.split(
        ranks * per_rank, length, ranks=ranks, micro_batches=sizes, context_parallel=cp, zigzag=zigzag
    )
    mask = draw(masks(shape=(ranks * per_rank, length)))
    return layout, mask


@settings(max_examples=60, deadline=None)
@given(drawn=_layouts(), mode=st.sampled_from(maskloss.sharding.SHARD_MODES),
       grad_reduction=st.sampled_from(["sum", "mean"]), weighted=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_shard_scales_agree_with_brute_force(drawn, mode, grad_reduction, weighted, seed):
    layout, mask = drawn
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0.5, 2.0, mask.shape) if weighted else np.ones(mask.shape)
    if mode in ("token_mean", "global_token_mean", "sequence_mean") and not mask.any():
        with pytest.raises(ValueError, match=r"no valid token: nothing to average .*0/0"):
            maskloss.shard_scales(mask, layout, reduction=mode, grad_reduction=grad_reduction)
        return
    scales = maskloss.shard_scales(
        mask, layout, reduction=mode, grad_reduction=grad_reduction,
        sample_weight=weight if weighted else None, constant=CONSTANT if mode == "constant" else None,
    )
    loss = rng.normal(size=mask.shape)
    expected = _full_batch(loss, mask, weight, mode)
    got = _sharded(loss, mask, weight, layout, scales, grad_reduction)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-14)
    # the gradient: the step is linear in the per-token losses, so unit vectors read it off
    for b, t in np.ndindex(mask.shape):
        unit = np.zeros(mask.shape)
        unit[b, t] = 1.0
        want = _full_batch(unit, mask, weight, mode)
        assert _sharded(unit, mask, weight, layout, scales, grad_reduction) == pytest.approx(want, rel=1e-12, abs=1e-15)
        assert scales.token_weight[b, t] == pytest.approx(want, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("mode", maskloss.posttraining.AGGREGATIONS)
def test_scales_reproduce_aggregate(mode, weighted):
    # the second reference: maskloss.aggregate on the full batch, split over 2 ranks x 2 micro-batches x zigzag CP=2
    mask = maskloss.mask_from_lengths([8, 1, 0, 5, 3, 2, 7, 4], 8)
    layout = maskloss.ShardLayout.split(8, 8, ranks=2, micro_batches=[3, 0, 1], context_parallel=2, zigzag=True)
    rng = np.random.default_rng(0)
    loss = rng.normal(size=mask.shape)
    weight = rng.uniform(0.5, 2.0, mask.shape) if weighted else None
    options = {"constant": CONSTANT} if mode == "constant" else {}
    scales = maskloss.shard_scales(mask, layout, reduction=mode, sample_weight=weight, **options)
    w = np.ones(mask.shape) if weight is None else weight
    count = float(np.where(mask, w, 0.0).sum()) * (1 + 1e-13)  # not 1 ulp below aggregate's own sum
    extra = {"global_count": count} if mode == "global_token_mean" else options
    expected = float(maskloss.aggregate(loss, mask, mode=mode, sample_weight=weight, **extra))
    pairs = zip(layout.shards, scales.factors, strict=True)
    got = sum(float((f[:, None] * np.where(s.take(mask), s.take(w) * s.take(loss), 0.0)).sum()) for s, f in pairs)
    assert got == pytest.approx(expected, rel=1e-12)


def test_cp_ranks_in_the_averaging_group_need_the_larger_factor():
    # Megatron-LM #7513 in miniature: 1 DP x CP=2, DDP averages over both CP ranks; dividing by the
    # global token count alone gives half the gradient, the factor needed is R / D = 2 / D
    mask = maskloss.mask_from_lengths([1, 0], 4)
    layout = maskloss.ShardLayout.split(2, 4, context_parallel=2)
    scales = maskloss.shard_scales(mask, layout, reduction="token_mean", grad_reduction="mean")
    assert layout.ranks == 2
    assert [f.tolist() for f in scales.factors] == [[2.0, 2.0], [2.0, 2.0]]


def test_vocabulary_shards_of_one_token_count_once():
    shards = tuple(maskloss.Shard((0,), ((0, 2),), vocab_range=v) for v in ((0, 3), (3, 5)))
    layout = maskloss.ShardLayout(1, 2, shards)
    scales = maskloss.shard_scales(np.ones((1, 2), bool), layout, reduction="token_mean")
    assert [f.tolist() for f in scales.factors] == [[0.5], [0.5]]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: maskloss.ShardLayout(1, 2, (maskloss.Shard((0,), ((0, 1),)),)), r"loses step \(0, 1\)"),
        (lambda: maskloss.ShardLayout(1, 2, (maskloss.Shard((0,), ((0, 2),)), maskloss.Shard((0,), ((1, 2),), rank=1))),
         r"duplicates step \(0, 1\): 2 shards"),
        (lambda: maskloss.ShardLayout(1, 2, (maskloss.Shard((1,), ((0, 2),)),)), r"outside the \(1, 2\) batch"),
        (lambda: maskloss.ShardLayout.split(5, 4, ranks=2), r"batch=5 does not split into ranks=2"),
        (lambda: maskloss.ShardLayout.split(4, 4, ranks=2, micro_batches=[1, 2]), r"micro_batches \[1, 2\] sum to 3"),
        (lambda: maskloss.ShardLayout.split(2, 6, context_parallel=2, zigzag=True), r"length=6 does not split into 4"),
        (lambda: maskloss.Shard((0,), ((2, 1),)), r"start <= stop"),
        (lambda: maskloss.Shard((-1,), ((0, 1),)), r"rows\[i\] must be an integer >= 0, got -1"),
    ],
)
def test_bad_layouts_name_the_problem(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_bad_shard_scales_arguments_name_the_problem():
    layout = maskloss.ShardLayout.split(2, 2)
    mask = np.ones((2, 2), bool)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\) but the layout splits a \(2, 2\) batch"):
        maskloss.shard_scales(np.ones((2, 3), bool), layout, reduction="sum")
    with pytest.raises(ValueError, match=r"reduction must be one of .*got 'avg'"):
        maskloss.shard_scales(mask, layout, reduction="avg")
    with pytest.raises(ValueError, match="grad_reduction must be 'sum' or 'mean'; got 'max'"):
        maskloss.shard_scales(mask, layout, reduction="sum", grad_reduction="max")
    with pytest.raises(TypeError, match="needs constant="):
        maskloss.shard_scales(mask, layout, reduction="constant")
    with pytest.raises(TypeError, match=r"layout must be a maskloss\.ShardLayout"):
        maskloss.shard_scales(mask, [(0, 1)], reduction="sum")


def test_shard_scales_does_not_write_into_the_mask():
    mask = maskloss.mask_from_lengths([2, 1], 2)
    before = mask.copy()
    maskloss.shard_scales(mask, maskloss.ShardLayout.split(2, 2, micro_batches=[1, 1]), reduction="sequence_mean")
    np.testing.assert_array_equal(mask, before)


def _vocab(ranges, rows=(0,), rank=0):
    return tuple(maskloss.Shard(rows, ((0, 2),), rank=rank, vocab_range=v) for v in ranges)


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        (_vocab([(0, 3), (2, 5)]), r"shards\[1\] has vocab_range \(2, 5\), which overlaps .* ends at 3"),
        (_vocab([(0, 2), (3, 5)]), r"shards\[1\] has vocab_range \(3, 5\), which leaves a gap"),
        (_vocab([(1, 5)]), r"shards\[0\] has vocab_range \(1, 5\), which leaves a gap .* ends at 0"),
        (_vocab([(0, 3), (3, 3), (3, 5)]), r"shards\[1\] has vocab_range \(3, 3\), which is empty"),
        ((maskloss.Shard((0,), ((0, 2),)), *_vocab([(0, 2), (2, 5)])),
         r"shards\[0\] holds every class of the tokens that the vocabulary shards shards\[1\] split"),
        (_vocab([(0, 2), (2, 5)]) + _vocab([(0, 2), (2, 4)], rows=(1,)),
         r"inconsistent class counts: the vocabulary shards of shards\[0\] tile 5 classes, those of shards\[2\] 4"),
    ],
)
def test_vocabulary_shards_that_do_not_tile_the_classes_are_named(shards, message):
    batch = 1 + max(r for s in shards for r in s.rows)
    with pytest.raises(ValueError, match=message):
        maskloss.ShardLayout(batch, 2, shards)


def test_vocab_size_of_a_layout():
    assert maskloss.ShardLayout(1, 2, _vocab([(0, 2), (2, 5)])).vocab_size == 5
    assert maskloss.ShardLayout.split(2, 2).vocab_size is None


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(_layouts(), min_size=1, max_size=3), grad_reduction=st.sampled_from(["sum", "mean"]),
       weighted=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_steps_per_generation_sum_to_the_generation_batch_token_mean(steps, grad_reduction, weighted, seed):
    # TRL/DAPO with steps_per_generation: one generation batch trained in several optimizer steps, each
    # split its own way; every step divides by the generation batch's count, so the steps' losses and
    # gradients sum to the token mean of the generation batch (the loop oracle over all of it)
    rng = np.random.default_rng(seed)
    weights = [rng.uniform(0.5, 2.0, m.shape) if weighted else np.ones(m.shape) for _, m in steps]
    losses = [rng.normal(size=m.shape) for _, m in steps]
    n_gen = sum(float(np.where(m, w, 0.0).sum()) for (_, m), w in zip(steps, weights, strict=True))
    if n_gen == 0:
        return
    total = 0.0
    for (layout, mask), w, loss in zip(steps, weights, losses, strict=True):
        scales = maskloss.shard_scales(mask, layout, reduction="global_token_mean", grad_reduction=grad_reduction,
                                       sample_weight=w if weighted else None, global_count=n_gen)
        value = _sharded(loss, mask, w, layout, scales, grad_reduction)
        # the second reference: maskloss.aggregate with the same global count, on the whole step
        # (aggregate refuses a count 1 ulp below its own sum of the step's weights, which another order of
        # summation gives: it gets n_gen * (1 + 1e-13), well inside the rel=1e-12 compared)
        want = float(maskloss.aggregate(loss, mask, mode="global_token_mean", global_count=n_gen * (1 + 1e-13),
                                        sample_weight=w if weighted else None)) if mask.any() else 0.0
        assert value == pytest.approx(want, rel=1e-12, abs=1e-15)
        for b, t in np.ndindex(mask.shape):  # each token's weight: w / N_gen where valid
            assert scales.token_weight[b, t] == pytest.approx(w[b, t] / n_gen if mask[b, t] else 0.0, rel=1e-12)
        total += value
    expected = sum(_full_batch(loss, m, w, "sum") for (_, m), w, loss in zip(steps, weights, losses, strict=True))
    assert total == pytest.approx(expected / n_gen, rel=1e-12, abs=1e-15)


def test_global_count_is_checked():
    mask = maskloss.mask_from_lengths([3, 1], 3)
    layout = maskloss.ShardLayout.split(2, 3)
    with pytest.raises(ValueError, match=r"global_count=3 is below this step's own 4 valid tokens"):
        maskloss.shard_scales(mask, layout, reduction="global_token_mean", global_count=3)
    with pytest.raises(TypeError, match=r"global_count= is the count of reduction='global_token_mean', not of 'sum'"):
        maskloss.shard_scales(mask, layout, reduction="sum", global_count=8)
    with pytest.raises(ValueError, match=r"global_count must be finite and > 0, got nan"):
        maskloss.shard_scales(mask, layout, reduction="global_token_mean", global_count=float("nan"))
    with pytest.raises(TypeError, match=r"global_count must be a number, got '8'"):
        maskloss.shard_scales(mask, layout, reduction="global_token_mean", global_count="8")
