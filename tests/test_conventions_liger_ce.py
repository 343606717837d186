"""maskloss.conventions.liger.cross_entropy (on logits) against the torch reference Liger's own tests use.

Liger-Kernel's Triton kernel needs a GPU, so it cannot run here, and its tests hold no literal
golden numbers: ``test/transformers/test_cross_entropy.py`` (linkedin/Liger-Kernel) asserts that
the kernel equals a torch reference, ``CrossEntropyWithZLoss`` (``F.cross_entropy`` with
``weight``/``label_smoothing``/``ignore_index``/``reduction``, plus ``lse_square_scale * lse**2``
on the kept rows, summed and divided by the number of kept rows for ``"mean"``), applied to
``softcap * tanh(x / softcap)`` for the softcap cases. That reference is transcribed below and run
on CPU in float64 (``rtol=1e-12``); the behaviours the reference does not cover (the all-ignored
``"mean"``, token accuracy, predicted tokens) are read from the kernel source of liger-kernel
0.8.5 and checked with numbers worked out by hand. (tests/test_conventions_liger.py does the same
for the fused linear form.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskloss.conventions import liger


def liger_test_reference(logits, targets, *, weight=None, lse_square_scale=0.0, reduction="mean",
                         ignore_index=-100, label_smoothing=0.0, softcap=None):
    """Liger's CrossEntropyWithZLoss (its test oracle), softcap first as its softcap tests do; float64 here."""
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    target_mask = targets != ignore_index
    ce_loss = F.cross_entropy(logits, targets, weight=weight, reduction=reduction,
                              label_smoothing=label_smoothing, ignore_index=ignore_index)
    lse = torch.logsumexp(logits, dim=-1)
    z_loss = torch.where(target_mask, lse_square_scale * (lse**2), 0.0)
    if reduction == "mean":
        z_loss = z_loss.sum() / target_mask.sum()
    elif reduction == "sum":
        z_loss = z_loss.sum()
    return ce_loss + z_loss, z_loss


OPTIONS = [
    {},
    {"lse_square_scale": 1e-4},
    {"lse_square_scale": 0.3, "label_smoothing": 0.1},
    {"softcap": 30.0},
    {"softcap": 2.0, "lse_square_scale": 0.05, "label_smoothing": 0.2},
    {"weight": True, "label_smoothing": 0.1},
    {"weight": True, "lse_square_scale": 0.1, "softcap": 3.0, "ignore_index": 2},
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_cross_entropy_matches_the_liger_test_reference(reduction, options):
    rng = np.random.default_rng(0)
    rows, vocab = 24, 11
    x = rng.normal(0, 4, (rows, vocab))
    opts = dict(options)
    ignore_index = opts.pop("ignore_index", -100)
    target = rng.integers(0, vocab, rows)
    target[rng.random(rows) < 0.3] = ignore_index
    target[0] = 1 if ignore_index != 1 else 0
    weight = rng.uniform(0.2, 2.0, vocab) if opts.pop("weight", False) else None
    out = liger.cross_entropy(x, target, weight, ignore_index=ignore_index, reduction=reduction,
                              return_z_loss=True, **opts)
    ref_loss, ref_z = liger_test_reference(
        torch.tensor(x), torch.tensor(target), weight=None if weight is None else torch.tensor(weight),
        reduction=reduction, ignore_index=ignore_index, **opts)
    np.testing.assert_allclose(out.loss, ref_loss.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out.z_loss, ref_z.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(liger.cross_entropy(x, target, weight, ignore_index=ignore_index,
                                                   reduction=reduction, **opts), out.loss, rtol=0)


def test_golden_numbers_worked_by_hand():
    x = np.array([[0.0, 0.0], [0.0, math.log(3.0)], [5.0, 5.0]])
    target = np.array([0, 1, -100])
    out = liger.cross_entropy(x, target, lse_square_scale=0.1, return_z_loss=True, return_token_accuracy=True,
                              return_predicted_tokens=True, reduction="none")
    # row 0: log 2 + 0.1 log(2)^2; row 1: -log(3/4) + 0.1 log(4)^2; row 2 ignored
    np.testing.assert_allclose(out.loss, [math.log(2) + 0.1 * math.log(2) ** 2,
                                          math.log(4 / 3) + 0.1 * math.log(4) ** 2, 0.0], rtol=1e-15)
    np.testing.assert_allclose(out.z_loss, [0.1 * math.log(2) ** 2, 0.1 * math.log(4) ** 2, 0.0], rtol=1e-15)
    # ties go to the first class (the kernel's tl.min over the maximal offsets); ignored rows: 0 and -1
    np.testing.assert_array_equal(out.token_accuracy, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(out.predicted_tokens, [0, 1, -1])
    summed = liger.cross_entropy(x, target, reduction="sum", return_token_accuracy=True)
    assert summed.token_accuracy == 1.0  # a mean over the kept rows even for "sum"


def test_all_ignored_mean_is_zero_and_its_accuracy_nan():
    x = np.zeros((3, 4))
    target = np.full(3, -100)
    out = liger.cross_entropy(x, target, lse_square_scale=0.1, return_z_loss=True, return_token_accuracy=True)
    assert out.loss == 0.0 and out.z_loss == 0.0  # the kernel returns early on every row and sums zeros
    assert math.isnan(out.token_accuracy)
    ref, _ = liger_test_reference(torch.tensor(x), torch.tensor(target), lse_square_scale=0.1)
    assert math.isnan(ref.item())  # what torch's cross-entropy (and the test reference) would say


def test_softcap_keeps_the_padded_vocabulary_lane_out():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (5, 6))
    padded = np.concatenate([x, np.full((5, 2), -np.inf)], axis=1)
    target = rng.integers(0, 6, 5)
    np.testing.assert_allclose(liger.cross_entropy(padded, target, softcap=2.0, lse_square_scale=0.1),
                               liger.cross_entropy(x, target, softcap=2.0, lse_square_scale=0.1), rtol=1e-15)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"target": np.array([0, 7])}, ValueError, "outside"),
        ({"reduction": "batchmean"}, ValueError, "reduction"),
        ({"lse_square_scale": -1.0}, ValueError, "lse_square_scale"),
        ({"softcap": 0.0}, ValueError, "softcap"),
        ({"label_smoothing": 2.0}, ValueError, "label_smoothing"),
        ({"weight": np.ones(3)}, ValueError, "class_weight must have shape"),
    ],
)
def test_bad_input_is_named(kwargs, error, match):
    args = {"input": np.zeros((2, 4)), "target": np.array([0, 1]), **kwargs}
    with pytest.raises(error, match=match):
        liger.cross_entropy(**args)
