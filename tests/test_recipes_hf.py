"""recipes.hf_trainer against the installed transformers 5.24 Trainer's own code.

``Trainer._get_num_items_in_batch`` and ``Trainer.compute_loss`` run unbound on stand-in trainers
(one per simulated data-parallel rank; ``accelerator.gather`` returns every rank's count), with a
``compute_loss_func`` that sums the token cross-entropy and divides by ``num_items_in_batch``, as
the models' ``ForCausalLMLoss`` does: the loss each rank back-propagates on each micro-batch must be
the recipe's scalar for that shard.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import maskloss
from maskloss.conventions import recipes
from maskloss.testing import run_step

torch = pytest.importorskip("torch")
trainer_module = pytest.importorskip("transformers.trainer")
Trainer = trainer_module.Trainer


def _loss_func(outputs, labels, num_items_in_batch):
    logits = outputs["logits"]
    summed = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=-100, reduction="sum")
    return summed / num_items_in_batch


def _stub(average, ranks, gather):
    return SimpleNamespace(
        model_accepts_loss_kwargs=False, compute_loss_func=_loss_func, label_smoother=None,
        _loss_shifts_labels=False, model=SimpleNamespace(training=True, _tp_size=None),
        args=SimpleNamespace(average_tokens_across_devices=average, world_size=ranks, n_gpu=0),
        accelerator=SimpleNamespace(gather=gather, num_processes=ranks, parallelism_config=None),
        get_tp_size=lambda: 1, get_cp_size=lambda: 1, get_sp_size=lambda: 1,
    )


@pytest.mark.parametrize("average", [True, False])
def test_hf_trainer_recipe_is_the_trainers_arithmetic(average):
    mask = maskloss.mask_from_lengths([4, 1, 0, 3, 2, 4, 1, 0], 4)
    rng = np.random.default_rng(5)
    labels, logits = rng.integers(0, 5, mask.shape), rng.normal(size=mask.shape + (5,))
    layout = maskloss.ShardLayout.split(8, 4, ranks=2, micro_batches=[1, 3])
    recipe = recipes.hf_trainer(average_tokens_across_devices=average)
    expected = run_step(recipe, labels, logits, mask, layout, grad_reduction="mean").values

    hf_labels = np.where(mask, labels, -100)
    windows = {r: [s for s in layout.shards if s.rank == r] for r in range(2)}
    counts = [torch.tensor(int(sum(s.take(mask).sum() for s in windows[r]))) for r in range(2)]

    def gather(_local):
        return torch.stack(counts)  # all_gather of every rank's count, as accelerate returns it

    got = []
    for r in range(2):
        stub = _stub(average, 2, gather)
        samples = [{"labels": torch.from_numpy(s.take(hf_labels))} for s in windows[r]]
        n_items = Trainer._get_num_items_in_batch(stub, samples, torch.device("cpu"))
        for s in windows[r]:
            inputs = {"labels": torch.from_numpy(s.take(hf_labels)), "logits": torch.from_numpy(s.take(logits))}
            loss = Trainer.compute_loss(stub, lambda **kw: {"logits": kw["logits"]}, inputs,
                                        num_items_in_batch=n_items)
            got.append(float(loss))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize(("shifts", "expected"), [(True, (4 - 1) + (2 - 1)), (False, 4 + 2)])
def test_trainer_counts_the_shifted_labels_for_a_causal_lm_loss(shifts, expected):
    # Chapter 08 (issue 24): transformers 5.24 counts labels[..., 1:] when the model's loss shifts
    # (_loss_shifts_labels, since PR #46204), the unshifted labels otherwise. By hand: rows of 4 and
    # 2 valid labels give 3 + 1 shifted targets.
    stub = _stub(False, 1, None)
    stub._loss_shifts_labels = shifts
    labels = torch.tensor([[5, 7, 2, 9], [4, 1, -100, -100]])
    n_items = Trainer._get_num_items_in_batch(stub, [{"labels": labels}], torch.device("cpu"))
    assert int(n_items) == expected
