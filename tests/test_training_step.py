"""check_training_step: correct steps pass, wrong ones fail on the smallest split, bad input is named."""

from __future__ import annotations

import numpy as np
import pytest

import maskloss
from maskloss.testing import TrainingStepCheckError, check_training_step, torch_adapter
from maskloss.testing.training_step import step_splits

torch = pytest.importorskip("torch")
F = torch.nn.functional
SCCE = maskloss.sparse_categorical_crossentropy


def _token_sum(s):
    return F.cross_entropy(s.y_pred[s.mask], s.y_true[s.mask], reduction="sum")


def global_tokens(shards):
    tokens = sum(int(s.mask.sum()) for s in shards)
    return [_token_sum(s) / max(tokens, 1) for s in shards]


def test_a_correct_step_passes_every_split():
    check_training_step(global_tokens, SCCE, adapter=torch_adapter, from_logits=True, max_examples=15)


def test_ddp_averaging_needs_the_rank_count():
    # with grad_reduction="mean" (DDP) the same step is R times too small on R ranks
    with pytest.raises(TrainingStepCheckError, match=r"split as 2 data-parallel ranks.*\n.*passes one shard"):
        check_training_step(global_tokens, SCCE, adapter=torch_adapter, grad_reduction="mean",
                            from_logits=True, max_examples=10)

    def scaled(shards):
        ranks = len({s.rank for s in shards})
        return [loss * ranks for loss in global_tokens(shards)]

    check_training_step(scaled, SCCE, adapter=torch_adapter, grad_reduction="mean", from_logits=True, max_examples=10)


def test_numpy_steps_return_loss_and_gradient_pairs():
    value_grad = maskloss.value_and_grad(SCCE)

    def step(shards):
        tokens = sum(int(s.mask.sum()) for s in shards)
        out = []
        for s in shards:
            value, grad = value_grad(s.y_true, s.y_pred, s.mask, from_logits=True, reduction="sum")
            out.append((value / max(tokens, 1), grad / max(tokens, 1)))
        return out

    check_training_step(step, SCCE, from_logits=True, max_examples=10)


def test_the_smallest_failing_split_and_the_scales_are_reported():
    def mean_of_means(shards):  # transformers#34191: every micro-batch averaged on its own
        live = [s for s in shards if s.mask.any()]
        return [F.cross_entropy(s.y_pred[s.mask], s.y_true[s.mask]) / len(live) if s.mask.any()
                else s.y_pred.sum() * 0.0 for s in shards]

    with pytest.raises(TrainingStepCheckError) as info:
        check_training_step(mean_of_means, SCCE, adapter=torch_adapter, from_logits=True, max_examples=30)
    text = str(info.value)
    assert "it passes one shard" in text
    assert "scale used" in text and "needed" in text
    assert "weighted tokens (b, t)" in text
    assert "the smallest failing batch:" in text


def test_logged_loss_is_checked():
    def step(shards):
        losses = global_tokens(shards)
        means = [F.cross_entropy(s.y_pred[s.mask], s.y_true[s.mask]).detach() for s in shards if s.mask.any()]
        logged = float(sum(means))  # the sum of the micro-batch means: not the step's loss
        return losses, logged

    with pytest.raises(TrainingStepCheckError, match=r"the step logs .* but the full-batch loss"):
        check_training_step(step, SCCE, adapter=torch_adapter, from_logits=True, max_examples=10)


def test_splits_are_ordered_and_cover_every_parallelism():
    splits = step_splits(4, 8, 4)
    sizes = [len(s.layout.shards) for s in splits]
    assert sizes == sorted(sizes)
    names = " | ".join(s.name for s in splits)
    for part in ("micro-batches of [1, 0, 3]", "2 data-parallel ranks", "contiguous", "zigzag",
                 "2 vocabulary shards", "all at once"):
        assert part in names
    combined = splits[-1].layout
    assert combined.ranks == 4 and len(combined.shards) == 2 * 3 * 2 * 2


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (lambda shards: global_tokens(shards)[:-1] if len(shards) > 1 else global_tokens(shards),
         r"step returned \d shard losses for the \d shards of the split"),
        (lambda shards: [s.y_pred.sum(-1) for s in shards], r"must be a scalar .* of shape"),
        (lambda shards: 1.0, r"must return a list with one loss per shard"),
    ],
)
def test_bad_steps_are_named(step, message):
    with pytest.raises((TypeError, ValueError), match=message):
        check_training_step(step, SCCE, adapter=torch_adapter, from_logits=True, max_examples=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grad_reduction": "avg"}, r"grad_reduction must be 'sum' or 'mean'; got 'avg'"),
        ({"parallel": ("pipeline",)}, r"parallel must hold names from .* got 'pipeline'"),
        ({"adapter": print}, r"adapter must be maskloss.testing.torch_adapter"),
        ({"max_examples": 0}, r"max_examples must be an integer in \[1, 1000\], got 0"),
        ({"reduction": "none"}, r"reduction='none' has no gradient"),
        ({"dtype": "float16"}, r"dtype must be float64 or float32"),
        ({"colour": 1}, r"colour"),
        ({"rtol": -1.0}, r"rtol must be a finite number >= 0, got -1.0"),
        ({"atol": "tiny"}, r"atol must be a number >= 0 or None"),
        ({"weights": "yes"}, r"weights must be True or False"),
        ({"seed": 1.5}, r"seed must be an int or None"),
    ],
)
def test_bad_arguments_are_named_before_any_step(kwargs, message):
    calls = []
    with pytest.raises((TypeError, ValueError), match=message):
        check_training_step(lambda shards: calls.append(1), SCCE, **kwargs)
    assert not calls


def test_tensor_parallel_needs_a_class_axis():
    with pytest.raises(ValueError, match=r"parallel='tensor' splits classes, but mse has no class axis"):
        check_training_step(lambda shards: [], maskloss.mse, parallel=("tensor",))
    with pytest.raises(ValueError, match=r"like must be a maskloss loss"):
        check_training_step(lambda shards: [], np.mean)


def _vocab_parallel_torch(shards):
    """A tensor-parallel CE in torch: the log-sum-exp over every vocabulary shard of a token, each
    shard's scalar back-propagated into its own logits only (as on a tensor-parallel rank)."""
    groups = {}
    for s in shards:
        groups.setdefault((s.rows, s.time_range, s.rank, s.micro_batch), []).append(s)
    tokens = sum(int(g[0].mask.sum()) for g in groups.values())
    out = []
    for s in shards:
        group = sorted(groups[(s.rows, s.time_range, s.rank, s.micro_batch)], key=lambda t: t.vocab_range or (0, 0))
        logits = torch.cat([t.y_pred if t is s else t.y_pred.detach() for t in group], dim=-1)
        loss = F.cross_entropy(logits[s.mask], s.y_true[s.mask], reduction="sum") / max(tokens, 1)
        out.append(loss)
    return out


def test_a_torch_vocabulary_parallel_step_passes_every_split():
    check_training_step(_vocab_parallel_torch, SCCE, adapter=torch_adapter, parallel=("accumulation", "tensor"),
                        from_logits=True, max_examples=10)


def test_a_gradient_of_the_wrong_class_count_is_named():
    value_grad = maskloss.value_and_grad(SCCE)

    def step(shards):
        out = []
        for s in shards:
            value, grad = value_grad(s.y_true, s.y_pred, s.mask, from_logits=True, reduction="sum")
            out.append((value, grad[..., :-1]))  # one class short
        return out

    with pytest.raises(ValueError, match=r"the gradient of shard 0 has shape \(\d, \d, \d\), but its y_pred has shape"):
        check_training_step(step, SCCE, from_logits=True, reduction="sum", max_examples=2)


@pytest.mark.parametrize("reduction", ["token_mean", "sum", "batch_mean"])
def test_sample_weights_reach_the_shards(reduction):
    value_grad = maskloss.value_and_grad(SCCE)

    def step(shards):
        def full(s):
            w = np.ones(s.mask.shape) if s.sample_weight is None else s.sample_weight
            return np.where(s.mask, np.broadcast_to(w if w.ndim == 2 else w[:, None], s.mask.shape), 0.0)

        weights = [full(s) for s in shards]
        divisor = {"token_mean": sum(float(w.sum()) for w in weights), "sum": 1.0,
                   "batch_mean": float(len({r for s in shards for r in s.rows}))}[reduction]
        out = []
        for s in shards:
            value, grad = value_grad(s.y_true, s.y_pred, s.mask, sample_weight=s.sample_weight, from_logits=True,
                                     reduction="sum")
            out.append((value / divisor, grad / divisor))
        return out

    check_training_step(step, SCCE, weights=True, from_logits=True, reduction=reduction, max_examples=10)


def _local_vocab_smoothing_torch(shards, eps=0.1):
    """A tensor-parallel CE in torch that merges the log-sum-exp over the vocabulary shards but smooths
    each shard with the mean of *its own* log-probabilities (its own vocabulary size): Megatron-LM#737's
    rule, the local-size smoothing Liger-Kernel#1260 discusses. Right on one shard, wrong on two."""
    groups = {}
    for s in shards:
        groups.setdefault((s.rows, s.time_range, s.rank, s.micro_batch), []).append(s)
    tokens = sum(int(g[0].mask.sum()) for g in groups.values())
    out = []
    for s in shards:
        group = sorted(groups[(s.rows, s.time_range, s.rank, s.micro_batch)], key=lambda t: t.vocab_range or (0, 0))
        logits = torch.cat([t.y_pred if t is s else t.y_pred.detach() for t in group], dim=-1)[s.mask]
        log_p = logits.log_softmax(-1)
        a, b = s.vocab_range or (0, s.vocab_size)
        nll = -log_p.gather(-1, s.y_true[s.mask][:, None])[:, 0]
        smooth = -log_p[:, a:b].mean(-1)
        out.append(((1 - eps) * nll + eps * smooth).sum() / max(tokens, 1))
    return out


def test_label_smoothing_with_the_local_vocabulary_is_caught_at_two_vocabulary_shards():
    with pytest.raises(TrainingStepCheckError, match=r"when split as 2 vocabulary shards") as info:
        check_training_step(_local_vocab_smoothing_torch, SCCE, adapter=torch_adapter, parallel=("tensor",),
                            from_logits=True, label_smoothing=0.1, max_examples=10)
    assert "it passes one shard" in str(info.value)


def test_run_step_names_a_layout_whose_vocabulary_does_not_match_y_pred():
    from maskloss.testing.training_step import run_step

    mask = np.ones((1, 2), bool)
    layout = maskloss.ShardLayout(1, 2, tuple(maskloss.Shard((0,), ((0, 2),), vocab_range=v) for v in ((0, 2), (2, 4))))
    with pytest.raises(ValueError, match=r"inconsistent class counts: the layout's vocabulary shards tile 4 classes, "
                                         r"but y_pred has 5"):
        run_step(lambda shards: [0.0] * len(shards), np.zeros((1, 2), np.int64), np.zeros((1, 2, 5)), mask, layout)
    with pytest.raises(ValueError, match=r"y_true has shape \(1, 3\): sparse labels need the mask's \(1, 2\)"):
        run_step(lambda shards: [0.0] * len(shards), np.zeros((1, 3), np.int64), np.zeros((1, 2, 4)), mask, layout)


def test_an_empty_shard_is_checked_not_refused():
    # a micro-batch of no rows and a shard whose tokens are all masked are cases to check: the step sees them
    from maskloss.testing.training_step import run_step

    mask = maskloss.mask_from_lengths([3, 0], 4)
    layout = maskloss.ShardLayout.split(2, 4, micro_batches=[1, 0, 1])
    seen = []

    def step(shards):
        seen.extend((len(s.rows), int(np.asarray(s.mask).sum())) for s in shards)
        return global_tokens(shards)

    rng = np.random.default_rng(0)
    got = run_step(step, rng.integers(0, 3, (2, 4)), rng.normal(size=(2, 4, 3)), mask, layout, adapter=torch_adapter)
    assert seen == [(1, 3), (0, 0), (1, 0)]
    assert got.values[1] == 0.0 and got.values[2] == 0.0
