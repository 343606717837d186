"""``conventions.hf.data_collator_with_flattening`` against a loop oracle and the real collator,
and the padding-free loss path (packed row) against maskloss on the padded documents.

Tolerances: the collator's integer arrays are compared exactly; HF's loss computes in float32
(``logits.float()``), so the packed-row loss agrees to ``rtol=1e-5``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss.conventions.hf import data_collator_with_flattening, for_causal_lm_loss

IGNORE = -100


def loop_collator(features, separator_id=-100, position_ids_start=0):
    """HF's collator written as the obvious loop over documents and tokens."""
    ids, labels, positions, seq_idx, cu = [], [], [], [], [0]
    kept = [f for f in features if len(f["input_ids"]) > 0]
    for d, f in enumerate(kept):
        own = f.get("labels", f["input_ids"])
        for t, token in enumerate(f["input_ids"]):
            ids.append(token)
            labels.append(separator_id if t == 0 else own[t])
            positions.append(position_ids_start + t)
            seq_idx.append(d)
        cu.append(cu[-1] + len(f["input_ids"]))
    return ids, labels, positions, seq_idx, cu


@st.composite
def documents(draw, *, with_empty=True):
    n = draw(st.integers(1, 5))
    lo = 0 if with_empty else 1
    lengths = draw(st.lists(st.integers(lo, 6), min_size=n, max_size=n).filter(lambda ls: max(ls) > 0))
    with_labels = draw(st.booleans())
    features = []
    for length in lengths:
        ids = draw(st.lists(st.integers(0, 7), min_size=length, max_size=length))
        feature = {"input_ids": ids}
        if with_labels:
            cut = draw(st.integers(0, length))
            feature["labels"] = [IGNORE] * cut + ids[cut:]
        features.append(feature)
    return features


@settings(max_examples=60, deadline=None)
@given(documents(), st.sampled_from([-100, -1, 0]), st.integers(0, 3))
def test_collator_matches_the_loop(features, separator_id, start):
    batch = data_collator_with_flattening(features, separator_id=separator_id, position_ids_start=start,
                                          return_seq_idx=True, return_flash_attn_kwargs=True)
    ids, labels, positions, seq_idx, cu = loop_collator(features, separator_id, start)
    assert batch["input_ids"].tolist() == [ids]
    assert batch["labels"].tolist() == [labels]
    assert batch["position_ids"].tolist() == [positions]
    assert batch["seq_idx"].tolist() == [seq_idx]
    assert batch["cu_seq_lens_q"].tolist() == cu and batch["max_length_k"] == max(np.diff(cu))


@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.loss.loss_utils import ForCausalLMLoss

    return transformers.DataCollatorWithFlattening, ForCausalLMLoss


@settings(max_examples=40, deadline=None)
@given(documents(), st.booleans(), st.booleans(), st.integers(0, 2))
def test_collator_matches_transformers(hf, features, flash, seq_idx, start):
    collator, _ = hf
    options = {"return_flash_attn_kwargs": flash, "return_seq_idx": seq_idx, "position_ids_start": start}
    theirs = collator(**options)(features, return_tensors="np")
    ours = data_collator_with_flattening(features, **options)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)
        assert np.asarray(ours[key]).dtype == np.asarray(value).dtype, key


@settings(max_examples=40, deadline=None)
@given(documents(with_empty=False), st.integers(0, 2**32 - 1))
def test_packed_row_loss_is_the_token_mean_of_the_padded_documents(hf, features, seed):
    """HF's padding-free path, for real: collator + ForCausalLMLoss on one packed row."""
    import torch

    collator, for_causal_lm = hf
    rng = np.random.default_rng(seed)
    lengths = np.array([len(f["input_ids"]) for f in features])
    vocab = 8
    mask = maskloss.mask_from_lengths(lengths, int(lengths.max()))
    logits = rng.normal(0, 3, (*mask.shape, vocab)).astype(np.float32)
    packing = maskloss.pack(mask)  # one row: the documents one after another, as the collator
    packed_logits = packing.pack_array(logits)
    batch = collator()(features, return_tensors="np")
    np.testing.assert_array_equal(packing.position_ids, batch["position_ids"])
    np.testing.assert_array_equal(maskloss.segment_ids_from_position_ids(batch["position_ids"]), packing.segment_ids)
    theirs = for_causal_lm(torch.from_numpy(packed_logits), torch.from_numpy(batch["labels"]), vocab).item()
    labels = np.full(mask.shape, IGNORE)
    labels[mask] = np.concatenate([f.get("labels", f["input_ids"]) for f in features])
    targets = np.full(mask.shape, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    ours = maskloss.sparse_categorical_crossentropy(targets, logits, from_logits=True, ignore_index=IGNORE)
    if np.isnan(ours):
        assert np.isnan(theirs)  # no document has a target: nothing valid
    else:
        assert theirs == pytest.approx(float(ours), rel=1e-5, abs=1e-6)
        # and the mirror of the packed path says the same, in float64
        mirror = for_causal_lm_loss(packed_logits.astype(np.float64), batch["labels"], vocab)
        assert float(mirror) == pytest.approx(float(ours), rel=1e-12)


def test_the_separator_is_what_keeps_the_boundary_out():
    """Re-created bug (torchtune#2613, verl#6475): labels = input_ids over the packed row, so the
    last token of a document predicts the first token of the next one."""
    features = [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}]
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (1, 5, 6))
    batch = data_collator_with_flattening(features)
    right = for_causal_lm_loss(logits, batch["labels"], 6)
    wrong = for_causal_lm_loss(logits, batch["input_ids"], 6)  # no separator at the boundary
    # the truth: targets 2, 3 (document 0) and 5 (document 1); the bug adds "3 -> 4"
    lsm = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))
    truth = -(lsm[0, 2] + lsm[1, 3] + lsm[3, 5]) / 3
    with_boundary = -(lsm[0, 2] + lsm[1, 3] + lsm[2, 4] + lsm[3, 5]) / 4
    assert float(right) == pytest.approx(truth, rel=1e-13)
    assert float(wrong) == pytest.approx(with_boundary, rel=1e-13) and abs(wrong - right) > 1e-3


@pytest.mark.parametrize(
    ("features", "kwargs", "error", "text"),
    [
        ([{"input_ids": []}], {}, ValueError, "every example is empty"),
        ({"input_ids": [1]}, {}, TypeError, "features must be a sequence"),
        ([{"ids": [1]}], {}, TypeError, "features[0] must be a mapping with 'input_ids'"),
        ([{"input_ids": [[1, 2]]}], {}, ValueError, "features[0]['input_ids'] must be one document"),
        ([{"input_ids": [1.5]}], {}, TypeError, "integer token ids"),
        ([{"input_ids": [1]}], {"separator_id": 1.0}, TypeError, "separator_id must be an int"),
        ([{"input_ids": [1]}], {"return_seq_idx": "yes"}, TypeError, "return_seq_idx must be a bool"),
    ],
)
def test_bad_input_is_named(features, kwargs, error, text):
    with pytest.raises(error) as info:
        data_collator_with_flattening(features, **kwargs)
    assert text in str(info.value)
