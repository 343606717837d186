"""Issue 25, campaign 4: attacks on the surfaces of rounds 1-3 and on what landed in session 4.

Each parametrised case is one attack, with a comment saying what it attacks. Findings fixed
here (each test fails without its fix):

- Garbage labels under packing padding: with ``segment_ids=``, a label at a step whose
  segment id is -1 (or, with ``shift``, a label predicted from another document) was refused
  by the label check although :meth:`Pipeline.with_segments` drops the step
  (``test_garbage_labels_under_segment_padding_are_ignored``).
- ``aggregate(mode="global_token_mean", global_count=...)`` refused a weighted count one ulp
  below the micro-batch's own float sum (``test_weighted_global_count_*``): the rule is now
  exact for whole-number counts, a relative ``COUNT_RTOL`` for weighted ones, shared with
  ``shard_scales``.

The rest are attacks that found nothing, kept as regression guards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import maskloss
from maskloss.reductions import COUNT_RTOL

B, T, C = 2, 5, 4
SEG = np.array([[0, 0, 1, 1, -1], [2, 2, 2, -1, -1]])


def _logits(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(B, T, C))


def _labels(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, C, (B, T))


# ---------------------------------------------------------------------------------------------
# Finding 1: garbage labels under packing padding (segment id -1) are ignored, never refused
# ---------------------------------------------------------------------------------------------

_LABEL_GARBAGE = [99, -7, C]  # out of range above, negative (not an ignore_index), exactly C


@pytest.mark.parametrize("garbage", _LABEL_GARBAGE)
@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("mask", [None, "ones"])
def test_garbage_labels_under_segment_padding_are_ignored(garbage: int, shift: int, mask: Any) -> None:
    # Before the fix: "y_true holds label 99 at valid step (0, 4)" although segment id -1 there.
    clean, logits = _labels(), _logits()
    dirty = clean.copy()
    dirty[SEG < 0] = garbage
    m = None if mask is None else np.ones((B, T), bool)
    kw: dict[str, Any] = {"from_logits": True, "segment_ids": SEG, "mask": m}
    if shift:
        kw["shift"] = shift
    ce = maskloss.sparse_categorical_crossentropy
    assert float(ce(dirty, logits, **kw)) == float(ce(clean, logits, **kw))
    v0, g0 = maskloss.value_and_grad(ce)(clean, logits, **kw)
    v1, g1 = maskloss.value_and_grad(ce)(dirty, logits, **kw)
    assert float(v0) == float(v1) and np.array_equal(g0, g1)


def test_garbage_label_predicted_across_a_document_boundary_is_ignored() -> None:
    # With shift=1 the first label of document 1 is scored by document 0's last step: dropped.
    clean, logits = _labels(), _logits()
    dirty = clean.copy()
    dirty[0, 2] = 99
    kw = {"from_logits": True, "segment_ids": SEG, "shift": 1}
    ce = maskloss.sparse_categorical_crossentropy
    assert float(ce(dirty, logits, **kw)) == float(ce(clean, logits, **kw))


def test_token_accuracy_ignores_garbage_labels_under_segment_padding() -> None:
    clean, logits = _labels(), _logits()
    dirty = clean.copy()
    dirty[SEG < 0] = 99
    acc = maskloss.token_accuracy
    assert float(acc(dirty, logits, segment_ids=SEG)) == float(acc(clean, logits, segment_ids=SEG))


def test_garbage_label_in_a_document_is_still_refused() -> None:
    # The fix must not hide a bad label where the step counts.
    dirty = _labels()
    dirty[0, 1] = 99
    with pytest.raises(ValueError, match="label 99"):
        maskloss.sparse_categorical_crossentropy(dirty, _logits(), from_logits=True, segment_ids=SEG)


def test_segment_ids_do_not_swallow_a_refused_numpy_ma_mask() -> None:
    # A numpy.ma mask with masked entries is refused (never dropped), with segments too.
    m = np.ma.masked_array(np.ones((B, T), bool), mask=np.zeros((B, T), bool))
    m.mask[0, 0] = True
    with pytest.raises(TypeError, match=r"numpy\.ma"):
        maskloss.sparse_categorical_crossentropy(_labels(), _logits(), m, from_logits=True, segment_ids=SEG)


# ---------------------------------------------------------------------------------------------
# Finding 2: the rule for a given global count (integers exact, weighted within COUNT_RTOL)
# ---------------------------------------------------------------------------------------------

def _weighted_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    w = np.full((1, 10), 0.1)
    m = np.ones((1, 10), bool)
    own = float(maskloss.reduce(m, m, reduction="sum", sample_weight=w))
    return np.ones((1, 10)), m, w, own


def test_weighted_global_count_one_ulp_below_is_accepted() -> None:
    # A rank summing ten weights of 0.1 left to right gets 0.9999999999999999; the
    # micro-batch's own (pairwise) sum is 1.0. Before the fix: "below this micro-batch's own".
    loss, m, w, own = _weighted_case()
    other_order = sum([0.1] * 10)
    assert other_order < own
    value = maskloss.aggregate(loss, m, mode="global_token_mean", global_count=other_order, sample_weight=w)
    assert float(value) == pytest.approx(1.0, rel=1e-15)


def test_weighted_global_count_beyond_the_tolerance_is_refused() -> None:
    loss, m, w, own = _weighted_case()
    with pytest.raises(ValueError, match="below this micro-batch's own"):
        maskloss.aggregate(loss, m, mode="global_token_mean", global_count=own * (1 - 10 * COUNT_RTOL),
                           sample_weight=w)


def test_unweighted_global_count_is_exact() -> None:
    loss, m = np.ones((1, 10)), np.ones((1, 10), bool)
    with pytest.raises(ValueError, match="below this micro-batch's own 10"):
        maskloss.aggregate(loss, m, mode="global_token_mean", global_count=float(np.nextafter(10.0, 0)))
    assert float(maskloss.aggregate(loss, m, mode="global_token_mean", global_count=10)) == 1.0


def test_shard_scales_shares_the_count_rule() -> None:
    m = np.ones((2, 5), bool)
    layout = maskloss.ShardLayout.split(2, 5, micro_batches=[1, 1])
    w = np.full((2, 5), 0.1)
    own = float(np.where(m, w, 0.0).sum())
    maskloss.shard_scales(m, layout, reduction="global_token_mean", sample_weight=w,
                          global_count=own * (1 - COUNT_RTOL / 2))
    with pytest.raises(ValueError, match="below"):
        maskloss.shard_scales(m, layout, reduction="global_token_mean", global_count=float(np.nextafter(10.0, 0)))
