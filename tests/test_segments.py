"""Segment ids, the document-aware shift and pack/unpack against slow loop oracles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss import strategies as mst

# ----------------------------------------------------------------------------- loop oracles


def oracle_segments_from_lengths(lengths: list[list[int]], row_length: int) -> np.ndarray:
    out = np.full((len(lengths), row_length), -1, dtype=np.int64)
    doc = 0
    for r, row in enumerate(lengths):
        t = 0
        for n in row:
            if n == 0:
                continue
            for _ in range(n):
                out[r, t] = doc
                t += 1
            doc += 1
    return out


def oracle_position_ids(seg: np.ndarray) -> np.ndarray:
    out = np.zeros_like(seg)
    for r in range(seg.shape[0]):
        for t in range(seg.shape[1]):
            if seg[r, t] >= 0 and t > 0 and seg[r, t - 1] == seg[r, t]:
                out[r, t] = out[r, t - 1] + 1
    return out


def oracle_targets(ids: np.ndarray, seg: np.ndarray) -> np.ndarray:
    out = np.full_like(ids, -100)
    for r in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if seg[r, t] >= 0 and seg[r, t + 1] == seg[r, t]:
                out[r, t] = ids[r, t + 1]
    return out


def oracle_first_fit(lengths: list[int], row_length: int) -> list[list[int]]:
    rows: list[list[int]] = []
    for d, n in enumerate(lengths):
        for row in rows:
            if sum(lengths[i] for i in row) + n <= row_length:
                row.append(d)
                break
        else:
            rows.append([d])
    return rows


row_lengths = st.lists(st.lists(st.integers(0, 4), max_size=4), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(row_lengths, st.integers(0, 3))
def test_segments_from_lengths_and_back_match_the_loop(lengths: list[list[int]], extra: int) -> None:
    width = max(len(r) for r in lengths)
    table = np.array([r + [0] * (width - len(r)) for r in lengths], dtype=np.int64).reshape(len(lengths), width)
    row_length = int(table.sum(axis=1).max()) + extra
    seg = maskloss.segment_ids_from_lengths(table, row_length)
    np.testing.assert_array_equal(seg, oracle_segments_from_lengths(lengths, row_length))
    back = maskloss.lengths_from_segment_ids(seg)
    expected = [[n for n in r if n > 0] for r in lengths]
    got = [[int(n) for n in r if n > 0] for r in back]
    assert got == expected
    # position ids round-trip, with the padding as the mask
    pos = oracle_position_ids(seg)
    np.testing.assert_array_equal(maskloss.segment_ids_from_position_ids(pos, mask=seg >= 0), seg)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=6))
def test_cu_seqlens_is_the_loop(lengths: list[int]) -> None:
    cu = np.concatenate([[0], np.cumsum(lengths)])
    seg = maskloss.segment_ids_from_cu_seqlens(cu, int(cu[-1]))
    np.testing.assert_array_equal(seg, oracle_segments_from_lengths([lengths], int(cu[-1]))[0])


@settings(max_examples=100, deadline=None)
@given(row_lengths, st.data())
def test_next_token_targets_never_cross_a_boundary(lengths: list[list[int]], data: st.DataObject) -> None:
    row_length = max(sum(r) for r in lengths) + 1
    seg = oracle_segments_from_lengths(lengths, row_length)
    ids = np.array(data.draw(st.lists(st.integers(0, 50), min_size=seg.size, max_size=seg.size))).reshape(seg.shape)
    targets, valid = maskloss.next_token_targets(ids, seg)
    np.testing.assert_array_equal(targets, oracle_targets(ids, seg))
    np.testing.assert_array_equal(valid, targets != -100)


@settings(max_examples=150, deadline=None)
@given(mst.masks(), st.sampled_from(["given", "first_fit", "flat"]), st.integers(0, 3))
def test_pack_then_unpack_is_the_identity_on_valid_steps(mask: np.ndarray, order: str, extra: int) -> None:
    lengths = mask.sum(axis=1)
    longest = int(lengths.max()) if lengths.size else 0
    if order == "flat":
        p = maskloss.pack(mask)
    else:
        p = maskloss.pack(mask, max(longest, 1) + extra, order=order)  # type: ignore[arg-type]
    x = np.arange(mask.size, dtype=np.float64).reshape(mask.shape) + 0.5
    packed = p.pack_array(x, fill=np.nan)
    # every valid step lands exactly once; padding never does
    assert np.count_nonzero(p.mask) == np.count_nonzero(mask)
    np.testing.assert_array_equal(np.sort(packed[p.mask]), np.sort(x[mask]))
    back = maskloss.unpack(packed, p, fill=-1.0)
    np.testing.assert_array_equal(back, np.where(mask, x, -1.0))
    # each document is one padded row, in order, and the packed layouts agree with each other
    np.testing.assert_array_equal(maskloss.segment_ids_from_position_ids(p.position_ids, mask=p.mask), p.segment_ids)
    np.testing.assert_array_equal(p.position_ids, oracle_position_ids(p.segment_ids))
    np.testing.assert_array_equal(np.diff(p.cu_seqlens), lengths[p.document])
    if order == "first_fit":
        docs = [int(n) for n in lengths[lengths > 0]]
        rows = oracle_first_fit(docs, max(longest, 1) + extra)
        got = maskloss.lengths_from_segment_ids(p.segment_ids)
        assert [[int(n) for n in r if n > 0] for r in got] == [[docs[d] for d in row] for row in rows]
    if order == "flat" and p.document.size:
        np.testing.assert_array_equal(
            maskloss.segment_ids_from_cu_seqlens(p.cu_seqlens, int(p.cu_seqlens[-1])), p.segment_ids[0]
        )


def test_left_padding_packs_the_same_documents_as_right_padding() -> None:
    right = maskloss.mask_from_lengths([2, 3, 1], 4)
    x = np.arange(12.0).reshape(3, 4)
    x_left, left = maskloss.repad(x, right, side="left")
    a, b = maskloss.pack(right, 4), maskloss.pack(left, 4)
    np.testing.assert_array_equal(a.segment_ids, b.segment_ids)
    np.testing.assert_array_equal(a.pack_array(x), b.pack_array(x_left))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: maskloss.segment_ids_from_position_ids([[0, 1, 3]]), r"found 1 then 3 at index \(0, 2\)"),
        (lambda: maskloss.segment_ids_from_position_ids([[0, 2, 1]]), r"found 0 then 2 at index \(0, 1\)"),
        (lambda: maskloss.segment_ids_from_position_ids([[0, 1, 2, 1]]), r"found 2 then 1 at index \(0, 3\)"),  # back
        (lambda: maskloss.segment_ids_from_position_ids([0, 1, 0, 2]), r"found 0 then 2 at index \(3,\)"),  # 1-D row
        (lambda: maskloss.segment_ids_from_position_ids([[0, 1], [2, 3]]), r"row 1 starts at position 2"),
        (lambda: maskloss.segment_ids_from_position_ids([[0, 1]], mask=[[0, 1]]), r"valid step at index 1"),
        (lambda: maskloss.segment_ids_from_position_ids([[0.5]]), r"position_ids must hold whole numbers; .*0.5"),
        (lambda: maskloss.segment_ids_from_cu_seqlens([0, 3, 3, 5], 5), r"increasing; found 3 then 3 at index 2"),
        (lambda: maskloss.segment_ids_from_cu_seqlens([1, 3], 3), r"must start at 0"),
        (lambda: maskloss.segment_ids_from_cu_seqlens([0, 3, 5], 6), r"end at total=6; it ends at 5 \(index 2\)"),
        (lambda: maskloss.segment_ids_from_lengths([[3, 2]], 4), r"row 0 holds 5 steps .* row_length=4"),
        (lambda: maskloss.segment_ids_from_lengths([[3, -1]]), r"lengths must be >= 0; found -1 at index \(0, 1\)"),
        (lambda: maskloss.lengths_from_segment_ids([[0, 1, 0]]), r"found 0 after 1 at index \(0, 2\)"),
        (lambda: maskloss.lengths_from_segment_ids([[0, 2]]), r"found 2 after 0 at index \(0, 1\)"),
        (lambda: maskloss.lengths_from_segment_ids([[0, 0], [0, 1]]), r"document 0 is split across rows .*\(1, 0\)"),
        (lambda: maskloss.lengths_from_segment_ids([[0, -1, 1]]), r"row 0 has a valid step at index 2"),
        (lambda: maskloss.lengths_from_segment_ids([[0, -2]]), r"found -2 at index \(0, 1\)"),
        (lambda: maskloss.pack(maskloss.mask_from_lengths([3, 5]), 4), r"sequence 1 has 5 valid steps, .*row_length=4"),
        (lambda: maskloss.pack([1, 1]), r"mask must be 2-D"),
        (lambda: maskloss.pack([[1, 1]], 2, order="best"), r"order must be 'given' or 'first_fit', got 'best'"),  # type: ignore[arg-type]
        (lambda: maskloss.unpack(np.zeros((1, 3)), maskloss.pack([[1, 1]])), r"packed must have shape \(1, 2\)"),
    ],
)
def test_bad_input_names_the_argument_and_index(call: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        call()  # type: ignore[operator]


def test_inputs_are_not_written() -> None:
    pos = np.array([[0, 1, 0, 1]])
    seg = maskloss.segment_ids_from_position_ids(pos)
    before = seg.copy()
    maskloss.next_token_targets(pos, seg)
    maskloss.lengths_from_segment_ids(seg)
    np.testing.assert_array_equal(seg, before)
    np.testing.assert_array_equal(pos, [[0, 1, 0, 1]])


# ----------------------------------------------------------------------------- per-document reductions


@settings(max_examples=150, deadline=None)
@given(mst.masks(allow_empty_rows=False), st.integers(0, 2), st.sampled_from(["given", "first_fit", "flat"]), st.data())
def test_packed_documents_reduce_as_the_padded_batch(
    mask: np.ndarray, extra: int, order: str, data: st.DataObject
) -> None:
    y_true = np.array(data.draw(st.lists(st.floats(-5, 5), min_size=mask.size, max_size=mask.size))).reshape(mask.shape)
    y_pred = np.array(data.draw(st.lists(st.floats(-5, 5), min_size=mask.size, max_size=mask.size))).reshape(mask.shape)
    longest = int(mask.sum(axis=1).max())
    p = maskloss.pack(mask) if order == "flat" else maskloss.pack(mask, longest + extra, order=order)  # type: ignore[arg-type]
    per_step = maskloss.mse(y_true[..., None], y_pred[..., None], mask, reduction="none")
    packed_terms = p.pack_array(np.where(mask, per_step, 0.0))
    totals = maskloss.MaskedTotals.from_segments(packed_terms, p.mask.astype(np.float64), p.segment_ids)
    for reduction in ("sum", "token_mean", "sequence_mean", "batch_mean"):
        padded = maskloss.mse(y_true[..., None], y_pred[..., None], mask, reduction=reduction)
        np.testing.assert_allclose(totals.value(reduction), padded, rtol=1e-13, atol=1e-300)
    # the loop oracle of the per-document mean: each document's own mean, then their mean
    docs = [per_step[b][mask[b]] for b in range(mask.shape[0])]
    np.testing.assert_allclose(totals.value("sequence_mean"), np.mean([d.mean() for d in docs]), rtol=1e-13)
    # gradient of each packed numerator term maps back to the padded step's factor
    grad = np.where(p.mask, totals.sequence_scale("sequence_mean")[np.maximum(p.segment_ids, 0)], 0.0)
    expected = np.where(mask, 1.0 / mask.sum(axis=1, keepdims=True) / mask.shape[0], 0.0)
    np.testing.assert_allclose(maskloss.unpack(grad, p), expected, rtol=1e-13)


def test_per_token_and_per_document_means_differ_on_one_packed_row() -> None:
    # By hand: documents [1, 3] and [8]: per token (1 + 3 + 8) / 3 = 4, per document (2 + 8) / 2 = 5.
    t = maskloss.MaskedTotals.from_segments(np.array([[1.0, 3.0, 8.0]]), np.ones((1, 3)), [[0, 0, 1]])
    assert t.value("token_mean") == 4.0
    assert t.value("sequence_mean") == 5.0
