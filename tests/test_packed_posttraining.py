"""Issue 22 for the post-training log-probs: ``token_logprobs(..., shift=, segment_ids=)`` and
``sequence_logprobs(..., shift=, segment_ids=)`` on packed rows equal each document on its own.

The oracle is a loop over the padded documents (one per row): step ``t`` of document ``d`` scores
label ``t + s`` of the same document with the log-softmax of its logits at ``t``; it is placed in
the packed rows at the document's own start (read off the packing's segment ids). Exact
comparison up to 1e-13 (one log-softmax per step, the same float64 arithmetic in another order).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss.strategies import packed_batches

TOL = 1e-13


def _log_softmax_row(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max()
    return z - m - np.log(np.sum(np.exp(z - m)))


def _loop_token_logprobs(batch, shift):
    """Per packed step, ``(R, L - shift)``: the documents' own shifted log-probs, 0 elsewhere."""
    p, seg = batch.padded, batch.segment_ids
    rows, steps = seg.shape
    out = np.zeros((rows, max(steps - shift, 0)))
    for d, b in enumerate(batch.packing.document):
        r, cols = np.nonzero(seg == d)  # the document's packed steps, in order
        for t in range(int(p.lengths[b]) - shift):
            out[r[t], cols[t]] = _log_softmax_row(p.y_pred[b, t])[p.y_true[b, t + shift]]
    return out


def _loop_sequence_logprobs(batch, shift, average):
    p = batch.padded
    out = []
    for b in batch.packing.document:
        terms = [_log_softmax_row(p.y_pred[b, t])[p.y_true[b, t + shift]] for t in range(int(p.lengths[b]) - shift)]
        out.append((np.mean(terms) if terms else np.nan) if average else float(np.sum(terms)))
    return np.array(out)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), b, rtol=TOL, atol=TOL, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(packed_batches("sparse", adversarial=True), st.integers(0, 3))
def test_token_logprobs_of_packed_rows_are_each_documents_own(batch, shift):
    got = maskloss.token_logprobs(batch.y_true, batch.y_pred, batch.mask, shift=shift,
                                  segment_ids=batch.segment_ids)
    _close(got, _loop_token_logprobs(batch, shift))
    # ... and the padded batch's own result, moved into the packed rows, is the same
    p = batch.padded
    padded = maskloss.token_logprobs(p.y_true, p.y_pred, p.mask, shift=shift)
    if shift < p.y_true.shape[1]:
        full = np.pad(padded, ((0, 0), (0, shift)))
        moved = batch.packing.pack_array(full)[:, : max(batch.segment_ids.shape[1] - shift, 0)]  # (B, 0) if s >= L
        _close(got, moved)


@settings(max_examples=60, deadline=None)
@given(packed_batches("sparse", adversarial=True), st.integers(0, 2), st.booleans())
def test_sequence_logprobs_of_packed_rows_shift_inside_each_document(batch, shift, average):
    got = maskloss.sequence_logprobs(batch.y_true, batch.y_pred, batch.mask, shift=shift, average=average,
                                     segment_ids=batch.segment_ids)
    _close(got, _loop_sequence_logprobs(batch, shift, average))
    p = batch.padded
    padded = maskloss.sequence_logprobs(p.y_true, p.y_pred, p.mask, shift=shift, average=average)
    _close(got, padded[batch.packing.document])


def test_without_segment_ids_the_shift_crosses_the_boundary():
    """The re-created bug (verl#6475, torchtune#2613): the packed row shifted as one sequence scores
    the next document's first token at the previous document's last one; segment_ids= stops it."""
    logits = np.log([[[0.5, 0.5], [0.25, 0.75], [0.2, 0.8], [0.5, 0.5]]])
    ids = [[0, 1, 1, 0]]  # documents [0, 1] and [1, 0]
    seg = [[0, 0, 1, 1]]
    right = maskloss.token_logprobs(ids, logits, shift=1, segment_ids=seg)
    wrong = maskloss.token_logprobs(ids, logits, shift=1)
    # by hand: step 1 (last token of document 0, p = (0.25, 0.75)) would score the next document's 1
    assert right[0, 1] == 0.0
    assert wrong[0, 1] == pytest.approx(np.log(0.75), rel=1e-15)
    np.testing.assert_allclose(right[0, [0, 2]], np.log([0.5, 0.2]), rtol=1e-15)


def test_shift_with_ignore_index_and_mask_in_the_labels_positions():
    logits = np.log([[[0.5, 0.5], [0.25, 0.75], [0.2, 0.8], [0.5, 0.5]]])
    got = maskloss.token_logprobs([[0, 1, -100, 0]], logits, [[1, 1, 1, 0]], shift=1, ignore_index=-100)
    # step 0 scores label 1 (valid), step 1 label -100 (ignored), step 2 label 0 (masked)
    np.testing.assert_allclose(got, [[np.log(0.5), 0.0, 0.0]], rtol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shift": -1}, ValueError, r"shift must be an int >= 0"),
        ({"shift": 1.0}, TypeError, r"shift must be an int >= 0"),
        ({"segment_ids": [[0, 1, 0]]}, ValueError, r"segment_ids must number the documents .* index \(0, 2\)"),
        ({"segment_ids": [[0, 0]]}, ValueError, r"segment_ids must have the shape"),
    ],
)
def test_bad_shift_and_segment_ids_are_named(kwargs, error, match):
    logits = np.zeros((1, 3, 2))
    with pytest.raises(error, match=match):
        maskloss.token_logprobs([[0, 1, 0]], logits, **kwargs)
    with pytest.raises(error, match=match):
        maskloss.sequence_logprobs([[0, 1, 0]], logits, **kwargs)


def test_inputs_are_not_written():
    labels, logits, seg = np.array([[0, 1, 1, 0]]), np.zeros((1, 4, 2)), np.array([[0, 0, 1, 1]])
    before = (labels.copy(), logits.copy(), seg.copy())
    maskloss.token_logprobs(labels, logits, shift=1, segment_ids=seg)
    for a, b in zip((labels, logits, seg), before, strict=True):
        np.testing.assert_array_equal(a, b)
