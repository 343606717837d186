"""torchtune 0.6's ``PackedDataset`` against ``maskloss.pack`` (issue 22), on the real package.

``PackedDataset(ds, max_seq_len=L, split_across_pack=False)`` packs whole documents greedily in
the given order (a new pack when the next document does not fit): ``maskloss.pack(mask, L,
order="given")``. What it returns per pack, and how it differs from maskloss's layout:

- ``tokens``: the documents one after the other, then ``padding_idx`` up to ``L``: equal to
  ``Packing.pack_array(ids, fill=padding_idx)``;
- ``labels``: each document's own labels (shifted inside the document by the dataset), then
  ``-100`` at the padding, so no label crosses a boundary;
- ``input_pos``: the position inside each document (``Packing.position_ids``), **but** the
  padding's positions continue counting from the last document (maskloss: 0 at padding);
- ``seq_lens``: the documents' lengths, **plus** the padding as one more "sequence" when there
  is padding (maskloss: ``lengths_from_segment_ids`` has no entry for padding).
Nothing is downloaded: the dataset is a list of dicts.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss

datasets = pytest.importorskip("torchtune.datasets")


def _torchtune(docs, max_seq_len, padding_idx):
    ds = [{"tokens": d, "labels": d[1:] + [-100]} for d in docs]
    packed = datasets.PackedDataset(ds, max_seq_len=max_seq_len, padding_idx=padding_idx, split_across_pack=False)
    return [{k: v.tolist() for k, v in pack.items()} for pack in packed]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=5), st.integers(0, 4), st.integers(0, 3))
def test_packed_dataset_is_maskloss_pack_in_the_given_order(lengths, extra, padding_idx):
    max_seq_len = max(lengths) + extra
    docs = [[100 * (d + 1) + t for t in range(n)] for d, n in enumerate(lengths)]
    got = _torchtune(docs, max_seq_len, padding_idx)

    mask = maskloss.mask_from_lengths(lengths, max(lengths))
    ids = np.zeros(mask.shape, dtype=np.int64)
    for d, doc in enumerate(docs):
        ids[d, : len(doc)] = doc
    packing = maskloss.pack(mask, max_seq_len, order="given")
    targets, _ = maskloss.next_token_targets(packing.pack_array(ids), packing.segment_ids)
    assert len(got) == packing.segment_ids.shape[0]
    rows = maskloss.lengths_from_segment_ids(packing.segment_ids)
    for r, pack in enumerate(got):
        valid = packing.mask[r]
        assert pack["tokens"] == packing.pack_array(ids, fill=padding_idx)[r].tolist()
        assert pack["labels"] == targets[r].tolist()
        assert np.array_equal(np.array(pack["input_pos"])[valid], packing.position_ids[r][valid])
        pad = int((~valid).sum())
        if pad:  # torchtune's padding positions continue from the last document's
            last = int(packing.position_ids[r][valid][-1])
            assert pack["input_pos"][-pad:] == list(range(last + 1, last + 1 + pad))
        doc_lengths = [int(n) for n in rows[r] if n > 0]
        assert pack["seq_lens"] == doc_lengths + ([pad] if pad else [])


def test_the_literal_example():
    got = _torchtune([[11, 12, 13, 14], [21, 22], [31]], 5, 0)
    # printed by torchtune 0.6.1 (PackedDataset, split_across_pack=False) in this repo's venv
    assert got == [
        {"tokens": [11, 12, 13, 14, 0], "labels": [12, 13, 14, -100, -100], "input_pos": [0, 1, 2, 3, 4],
         "seq_lens": [4, 1]},
        {"tokens": [21, 22, 31, 0, 0], "labels": [22, -100, -100, -100, -100], "input_pos": [0, 1, 0, 1, 2],
         "seq_lens": [2, 1, 2]},
    ]
