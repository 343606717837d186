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


# ----------------------------------------------------------------------------- TRL's pack_dataset, for real


@pytest.fixture(scope="module")
def trl_packing(trl_collator):
    datasets = pytest.importorskip("datasets")
    from trl import pack_dataset

    return datasets.Dataset, pack_dataset, trl_collator


@st.composite
def sft_documents(draw, seq_length):
    n = draw(st.integers(1, 5))
    docs = []
    for _ in range(n):
        length = draw(st.integers(1, seq_length))
        ids = draw(st.lists(st.integers(1, 9), min_size=length, max_size=length))
        cut = draw(st.integers(0, length))  # a prompt of `cut` tokens: labels -100 there
        docs.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
    return docs


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 6).flatmap(lambda n: st.tuples(st.just(n), sft_documents(n))), st.integers(0, 2**32 - 1))
def test_trl_bfd_packing_and_padding_free_give_the_per_document_losses(trl_packing, case, seed):
    """TRL's ``pack_dataset(strategy="bfd")`` keeps every document whole when it fits; its
    padding-free collator puts the packed rows in one row whose ``position_ids`` are maskloss's
    segments; HF's loss on it is the token mean of the padded documents, and maskloss's
    ``shift=1, segment_ids=`` on the same row gives each padded reduction."""
    dataset, pack_dataset, collator = trl_packing
    seq_length, docs = case
    packed = pack_dataset(dataset.from_dict({k: [d[k] for d in docs] for k in ("input_ids", "labels")}),
                          seq_length, strategy="bfd")
    rows = [packed[i] for i in range(len(packed))]
    # the documents of the packed rows, in reading order: the drawn ones, none cut (bfd, all fit)
    pieces = []
    for row in rows:
        bounds = np.cumsum([0, *row["seq_lengths"]])
        assert bounds[-1] <= seq_length
        pieces += [(tuple(row["input_ids"][a:b]), tuple(row["labels"][a:b])) for a, b in itertools.pairwise(bounds)]
    assert sorted(pieces) == sorted((tuple(d["input_ids"]), tuple(d["labels"])) for d in docs)
    batch = {k: v.numpy() for k, v in collator(pad_token_id=0, padding_free=True)(rows).items() if hasattr(v, "numpy")}
    seg = maskloss.segment_ids_from_position_ids(batch["position_ids"])
    # the padded batch of the same documents, in the row's order
    lengths = np.array([len(ids) for ids, _ in pieces])
    mask = maskloss.mask_from_lengths(lengths, int(lengths.max()))
    packing = maskloss.pack(mask)
    np.testing.assert_array_equal(packing.segment_ids, seg)
    labels = np.full(mask.shape, -100)
    labels[mask] = np.concatenate([lab for _, lab in pieces])
    targets = np.full(mask.shape, -100)
    targets[:, :-1] = labels[:, 1:]
    logits = np.random.default_rng(seed).normal(0, 2, (*mask.shape, 10))
    packed_logits = packing.pack_array(logits)
    for reduction in ("token_mean", "sequence_mean", "sum"):
        padded = maskloss.sparse_categorical_crossentropy(targets, logits, from_logits=True, ignore_index=-100,
                                                          reduction=reduction)
        row = maskloss.sparse_categorical_crossentropy(batch["labels"], packed_logits, from_logits=True, shift=1,
                                                       ignore_index=-100, reduction=reduction, segment_ids=seg)
        np.testing.assert_allclose(row, padded, rtol=1e-13, equal_nan=True)
    # HF's ForCausalLMLoss on the row, as SFTTrainer computes it: the token mean
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    theirs = ForCausalLMLoss(torch.from_numpy(packed_logits), torch.from_numpy(batch["labels"]), 10).item()
    token_mean = maskloss.sparse_categorical_crossentropy(targets, logits, from_logits=True, ignore_index=-100)
    if np.isnan(token_mean):
        assert np.isnan(theirs)
    else:
        assert theirs == pytest.approx(float(token_mean), rel=1e-5, abs=1e-6)  # HF computes in float32


def test_trl_bfd_split_makes_a_long_document_two_documents(trl_packing):
    """``strategy="bfd_split"`` cuts a document longer than ``seq_length``; the pieces are documents
    of their own (their own ``seq_lengths`` entry, positions from 0), so the first token of the
    continuation is no target: TRL's loss is the per-document loss of the *pieces*, one target short
    of the document's. maskloss states the whole document only with segment ids that keep it in one
    row, and refuses one document split across rows."""
    dataset, pack_dataset, collator = trl_packing
    packed = pack_dataset(dataset.from_dict({"input_ids": [[1, 2, 3, 4, 5]]}), 4, strategy="bfd_split")
    rows = [packed[i] for i in range(len(packed))]
    assert [r["seq_lengths"] for r in rows] == [[4], [1]]  # TRL 1.16's split: [1, 2, 3, 4] and [5]
    batch = collator(pad_token_id=0, padding_free=True)(rows)
    assert batch["labels"].tolist() == [[-100, 2, 3, 4, -100]]  # the target "4 -> 5" is gone
    logits = np.random.default_rng(0).normal(0, 2, (1, 5, 6))
    seg = maskloss.segment_ids_from_position_ids(batch["position_ids"].numpy())
    assert seg.tolist() == [[0, 0, 0, 0, 1]]
    pieces = maskloss.sparse_categorical_crossentropy(batch["labels"].numpy(), logits, from_logits=True, shift=1,
                                                      ignore_index=-100, segment_ids=seg)
    whole = maskloss.sparse_categorical_crossentropy([[1, 2, 3, 4, 5]], logits, from_logits=True, shift=1)
    lsm = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))  # by hand: targets 2, 3, 4 (and 5)
    assert float(pieces) == pytest.approx(-(lsm[0, 2] + lsm[1, 3] + lsm[2, 4]) / 3, rel=1e-13)
    assert float(whole) == pytest.approx(-(lsm[0, 2] + lsm[1, 3] + lsm[2, 4] + lsm[3, 5]) / 4, rel=1e-13)
    with pytest.raises(ValueError, match=r"document 0 is split across rows .* \(1, 0\)"):
        maskloss.sparse_categorical_crossentropy(np.zeros((2, 4), int), np.zeros((2, 4, 6)), from_logits=True,
                                                 segment_ids=[[0, 0, 0, 0], [0, -1, -1, -1]])
