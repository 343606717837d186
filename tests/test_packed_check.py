"""check_packed_loss (issue 22): it passes correct per-document torch code and catches re-created
versions of the two packed-loss bugs of the issue, as real torch code:

- the causal shift over the whole packed row, so the last token of one document predicts the
  first of the next (torchtune#2613, verl#6475);
- one mean over all packed tokens where the method wants a per-document mean (OpenRLHF#923,
  Liger#329).
"""

from __future__ import annotations

import numpy as np
import pytest

import maskloss
from maskloss.testing import Bounds
from maskloss.testing.packed_check import PackedCheckError, check_packed_loss

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _segments_from_position_ids(position_ids, mask):
    """torch: document index of each packed token (a document starts at position 0), -1 at padding."""
    pos, valid = torch.as_tensor(position_ids), torch.as_tensor(mask)
    start = (pos == 0) & valid
    seg = torch.cumsum(start.reshape(-1), 0).reshape(pos.shape) - 1
    return torch.where(valid, seg, torch.full_like(seg, -1))


def _segments_from_cu_seqlens(cu_seqlens, total):
    cu = torch.as_tensor(cu_seqlens)
    return torch.repeat_interleave(torch.arange(cu.numel() - 1), cu[1:] - cu[:-1]).reshape(1, total)


def _per_token(ids, logits, seg, *, across_boundaries=False):
    """Next-token CE per packed step (0 where there is no target) and the mask of target steps."""
    ids, z = torch.as_tensor(ids), torch.as_tensor(logits, dtype=torch.float64)
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]
    has = torch.zeros_like(seg, dtype=torch.bool)
    if across_boundaries:  # the bug: shift over the whole packed row
        has[:, :-1] = (seg[:, :-1] >= 0) & (seg[:, 1:] >= 0)
    else:
        has[:, :-1] = (seg[:, :-1] >= 0) & (seg[:, 1:] == seg[:, :-1])
    targets = torch.where(has, targets, torch.full_like(targets, -100))
    loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none")
    return loss.reshape(ids.shape), has


def _document_mean(loss, has, seg):
    """Mean over documents (with a target) of each document's own mean: scatter-add per document."""
    docs = int(seg.max()) + 1
    flat = torch.where(has, seg, torch.full_like(seg, docs)).reshape(-1)
    sums = torch.zeros(docs + 1, dtype=torch.float64).scatter_add_(0, flat, loss.reshape(-1))[:docs]
    counts = torch.zeros(docs + 1, dtype=torch.float64).scatter_add_(0, flat, has.reshape(-1).double())[:docs]
    keep = counts > 0
    return (sums[keep] / counts[keep]).mean()


def per_document_mean(ids, logits, mask, position_ids):
    seg = _segments_from_position_ids(position_ids, mask)
    loss, has = _per_token(ids, logits, seg)
    return _document_mean(loss, has, seg)


def mean_over_packed_tokens(ids, logits, mask, position_ids):
    seg = _segments_from_position_ids(position_ids, mask)
    loss, has = _per_token(ids, logits, seg)
    return loss.sum() / has.sum()  # one mean over all packed tokens


def shift_across_boundaries(ids, logits, mask, position_ids):
    seg = _segments_from_position_ids(position_ids, mask)
    loss, has = _per_token(ids, logits, seg, across_boundaries=True)
    return loss.sum() / has.sum()


def token_mean_cu_seqlens(ids, logits, mask, cu_seqlens):
    seg = _segments_from_cu_seqlens(cu_seqlens, np.shape(ids)[1])
    loss, has = _per_token(ids, logits, seg)
    return loss.sum() / has.sum()


def rolled_cu_seqlens(ids, logits, mask, cu_seqlens):
    ids_t = torch.as_tensor(ids)
    targets = torch.roll(ids_t, -1, dims=1)  # torch.roll over the flat packed row
    targets[:, -1] = -100
    z = torch.as_tensor(logits, dtype=torch.float64)
    return F.cross_entropy(z.reshape(-1, z.shape[-1]), targets.reshape(-1), ignore_index=-100)


SCCE = maskloss.sparse_categorical_crossentropy


def test_a_correct_per_document_mean_passes():
    check_packed_loss(per_document_mean, SCCE, from_logits=True, reduction="sequence_mean", max_examples=40)


def test_a_correct_token_mean_with_cu_seqlens_passes():
    check_packed_loss(token_mean_cu_seqlens, SCCE, packed="cu_seqlens", from_logits=True, max_examples=40)


def test_the_mean_over_packed_tokens_bug_is_caught():
    with pytest.raises(PackedCheckError, match="property 'packing'") as info:
        check_packed_loss(mean_over_packed_tokens, SCCE, from_logits=True, reduction="sequence_mean")
    assert "document lengths" in str(info.value)
    # ... and it is right for what it does compute: the token mean.
    check_packed_loss(mean_over_packed_tokens, SCCE, from_logits=True, reduction="token_mean", max_examples=20)


@pytest.mark.parametrize(("candidate", "packed"), [(shift_across_boundaries, "position_ids"),
                                                   (rolled_cu_seqlens, "cu_seqlens")])
def test_the_shift_across_a_document_boundary_bug_is_caught(candidate, packed):
    with pytest.raises(PackedCheckError) as info:
        check_packed_loss(candidate, SCCE, packed=packed, from_logits=True)
    assert info.value.prop in ("packing", "boundary")


def test_a_loss_that_reads_the_boundary_step_fails_the_boundary_property():
    def reads_boundary(ids, logits, mask, position_ids):
        seg = _segments_from_position_ids(position_ids, mask)
        loss, has = _per_token(ids, logits, seg)
        z = torch.as_tensor(logits, dtype=torch.float64)
        return loss.sum() / has.sum() + 0.0 * z[~has & torch.as_tensor(mask)].sum()  # 0 * finite junk: 0

    check_packed_loss(reads_boundary, SCCE, from_logits=True, max_examples=10)  # finite junk: still right

    def counts_boundary(ids, logits, mask, position_ids):
        seg = _segments_from_position_ids(position_ids, mask)
        loss, has = _per_token(ids, logits, seg)
        z = torch.as_tensor(logits, dtype=torch.float64)
        boundary = ~has & torch.as_tensor(mask)
        return (loss.sum() + 1e-3 * z[boundary][:, 0].sum()) / has.sum().clamp(min=1)  # a boundary logit counts

    with pytest.raises(PackedCheckError, match=r"property '(packing|boundary)'"):
        check_packed_loss(counts_boundary, SCCE, from_logits=True)


def test_regression_losses_without_shift():
    def packed_mse(y_true, y_pred, mask, position_ids):
        seg = maskloss.segment_ids_from_position_ids(position_ids, mask)
        return maskloss.mse(y_true, y_pred, reduction="batch_mean", segment_ids=seg)

    check_packed_loss(packed_mse, maskloss.mse, reduction="batch_mean", max_examples=20)
    with pytest.raises(PackedCheckError):
        check_packed_loss(packed_mse, maskloss.mse, reduction="sequence_mean")


def test_bad_arguments():
    with pytest.raises(ValueError, match="packed must be one of"):
        check_packed_loss(per_document_mean, SCCE, packed="seq_idx")
    with pytest.raises(ValueError, match="shift=1 needs token ids"):
        check_packed_loss(per_document_mean, maskloss.mse, shift=1)
    with pytest.raises(TypeError, match="like must be a maskloss loss"):
        check_packed_loss(per_document_mean, len)


def test_check_loss_routes_packed_here():
    maskloss_testing = pytest.importorskip("maskloss.testing")
    maskloss_testing.check_loss(per_document_mean, SCCE, packed="position_ids", from_logits=True,
                                reduction="sequence_mean", max_examples=10)
    with pytest.raises(PackedCheckError, match="property 'packing'"):
        maskloss_testing.check_loss(mean_over_packed_tokens, SCCE, packed="position_ids", from_logits=True,
                                    reduction="sequence_mean", max_examples=20)


def test_check_loss_forwards_its_checking_parameters_to_the_packed_check_and_refuses_the_rest():
    maskloss_testing = pytest.importorskip("maskloss.testing")

    def slightly_off(ids, logits, mask, position_ids):  # 1e-7 relative: rounding of a float32 kernel
        return per_document_mean(ids, logits, mask, position_ids) * (1 + 1e-7)

    with pytest.raises(PackedCheckError, match="property 'packing'"):  # the float64 tolerance catches it
        maskloss_testing.check_loss(slightly_off, SCCE, packed="position_ids", from_logits=True,
                                    reduction="sequence_mean", max_examples=10)
    maskloss_testing.check_loss(slightly_off, SCCE, packed="position_ids", from_logits=True,  # rtol= reaches it
                                reduction="sequence_mean", max_examples=10, rtol=1e-5)
    # named parameters the packed check has no use for are refused, not dropped in silence
    with pytest.raises(ValueError, match=r"check_loss\(packed=\.\.\.\) does not take grad=.*, padding='left'"):
        maskloss_testing.check_loss(per_document_mean, SCCE, packed="position_ids", from_logits=True,
                                    grad=per_document_mean, bounds=Bounds(padding="left"))
