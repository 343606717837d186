"""``conventions.trl.padding_free_collate`` against a loop oracle and TRL 1.16's real collator
(exact: integer arrays, dtypes included), and its loss path against maskloss on padded documents."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss.conventions.hf import for_causal_lm_loss
from maskloss.conventions.trl import padding_free_collate


def loop_collate(examples, pad_token_id, multiple):
    ids, labels, positions = [], [], []
    for ex in examples:
        lengths = ex.get("seq_lengths", [len(ex["input_ids"])])
        ids += list(ex["input_ids"])
        labels += list(ex.get("labels", ex["input_ids"]))
        for n in lengths:
            positions += list(range(n))
    while multiple and len(ids) % multiple:
        ids.append(pad_token_id), labels.append(-100), positions.append(0)
    labels = [-100 if p == 0 else y for y, p in zip(labels, positions, strict=True)]
    starts = [t for t, p in enumerate(positions) if p == 0] + [len(ids)]
    return ids, labels, positions, starts


@st.composite
def examples(draw):
    packed = draw(st.booleans())
    out = []
    for _ in range(draw(st.integers(1, 3))):
        lengths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3 if packed else 1))
        ids = draw(st.lists(st.integers(1, 9), min_size=sum(lengths), max_size=sum(lengths)))
        ex = {"input_ids": ids}
        if draw(st.booleans()):
            ex["labels"] = [y if draw(st.booleans()) else -100 for y in ids]
        if packed:
            ex["seq_lengths"] = lengths
        out.append(ex)
    return out


@settings(max_examples=60, deadline=None)
@given(examples(), st.one_of(st.none(), st.integers(1, 5)))
def test_matches_the_loop(exs, multiple):
    out = padding_free_collate(exs, pad_token_id=0, pad_to_multiple_of=multiple)
    ids, labels, positions, starts = loop_collate(exs, 0, multiple)
    assert out["input_ids"].tolist() == [ids] and out["labels"].tolist() == [labels]
    assert out["position_ids"].tolist() == [positions] and out["cu_seq_lens_q"].tolist() == starts


@pytest.fixture(scope="module")
def trl_collator():
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling


@settings(max_examples=40, deadline=None)
@given(examples(), st.one_of(st.none(), st.integers(1, 5)))
def test_matches_trl(trl_collator, exs, multiple):
    theirs = trl_collator(pad_token_id=0, padding_free=True, pad_to_multiple_of=multiple)(exs)
    ours = padding_free_collate(exs, pad_token_id=0, pad_to_multiple_of=multiple)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        b = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        np.testing.assert_array_equal(ours[key], b, err_msg=key)
        assert np.asarray(ours[key]).dtype == b.dtype, key


def test_padding_tokens_are_sequences_of_their_own_but_never_targets():
    out = padding_free_collate([{"input_ids": [5, 6, 7]}], pad_token_id=0, pad_to_multiple_of=8)
    assert out["cu_seq_lens_q"].tolist() == [0, 3, 4, 5, 6, 7, 8]  # five padding "sequences"
    assert out["labels"][0, 3:].tolist() == [-100] * 5


@settings(max_examples=30, deadline=None)
@given(examples(), st.integers(0, 2**32 - 1))
def test_the_row_loss_is_the_token_mean_of_the_documents(exs, seed):
    """Every document of every example (seq_lengths split them) is one padded sequence."""
    docs = []
    for ex in exs:
        bounds = np.cumsum([0, *ex.get("seq_lengths", [len(ex["input_ids"])])])
        labels = ex.get("labels", ex["input_ids"])
        docs += [labels[a:b] for a, b in itertools.pairwise(bounds)]
    out = padding_free_collate(exs, pad_token_id=0)
    rng = np.random.default_rng(seed)
    lengths = np.array([len(d) for d in docs])
    mask = maskloss.mask_from_lengths(lengths, int(lengths.max()))
    logits = rng.normal(0, 2, (*mask.shape, 10))
    packed = maskloss.pack(mask).pack_array(logits)
    padded_labels = np.full(mask.shape, -100)
    padded_labels[mask] = np.concatenate(docs)
    targets = np.full(mask.shape, -100)
    targets[:, :-1] = padded_labels[:, 1:]
    ours = maskloss.sparse_categorical_crossentropy(targets, logits, from_logits=True, ignore_index=-100)
    row = for_causal_lm_loss(packed, out["labels"], 10)
    np.testing.assert_allclose(row, ours, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize(
    ("exs", "kwargs", "error", "text"),
    [
        ([], {}, TypeError, "non-empty sequence"),
        ([{"ids": [1]}], {}, TypeError, "examples[0] must be a mapping with 'input_ids'"),
        ([{"input_ids": [1, 2], "labels": [1]}], {}, ValueError, "differ in length"),
        ([{"input_ids": [1, 2], "seq_lengths": [3]}], {}, ValueError, "sum to its 2 input_ids"),
        ([{"input_ids": [1], "seq_lengths": [1]}, {"input_ids": [2]}], {}, ValueError, "examples[1] does not"),
        ([{"input_ids": [1]}], {"pad_to_multiple_of": 0}, ValueError, "pad_to_multiple_of must be >= 1"),
        ([{"input_ids": [1]}], {"pad_token_id": "0"}, TypeError, "pad_token_id must be an int"),
    ],
)
def test_bad_input_is_named(exs, kwargs, error, text):
    kwargs = {"pad_token_id": 0, **kwargs}
    with pytest.raises(error) as info:
        padding_free_collate(exs, **kwargs)
    assert text in str(info.value)
