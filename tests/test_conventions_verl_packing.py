"""``conventions.verl.remove_padding_log_probs`` (verl's ``use_remove_padding`` path, issue 22).

verl cannot be installed here (see ``tests/test_conventions_verl.py``), so the second
implementation is verl's own arithmetic transcribed in torch from
``verl/workers/actor/dp_actor.py`` (``DataParallelPPOActor._forward_micro_batch``, the
``use_remove_padding`` branch): ``unpad_input`` (``nonzero`` of the flattened mask),
``torch.roll(input_ids_rmpad, shifts=-1, dims=1)``, ``logprobs_from_logits`` (log-softmax,
gather), ``pad_input`` (scatter into zeros) and the ``[:, -response_length - 1 : -1]`` slice.
Both run in float64 and agree to 1e-13 (maskloss's log-softmax sums the row with a log1p, torch's
does not: the last bits differ). The per-document definition is maskloss's
``token_logprobs`` of the padded responses, and of the packed row with ``shift=1`` and
``segment_ids``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss.conventions.verl import remove_padding_log_probs

VOCAB = 7


def torch_remove_padding(input_ids, attention_mask, logits_rmpad, response_length, temperature):
    """verl's remove-padding log-probs, transcribed in torch (see the module docstring)."""
    torch = pytest.importorskip("torch")
    ids = torch.as_tensor(input_ids)
    attn = torch.as_tensor(attention_mask)
    batch_size, seqlen = ids.shape
    indices = torch.nonzero(attn.flatten(), as_tuple=False).flatten()  # unpad_input
    input_ids_rmpad = ids.flatten()[indices].unsqueeze(0)  # (1, total_nnz)
    input_ids_rmpad_rolled = torch.roll(input_ids_rmpad, shifts=-1, dims=1).squeeze(0)
    logits = torch.as_tensor(logits_rmpad, dtype=torch.float64) / temperature
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, input_ids_rmpad_rolled.unsqueeze(-1)).squeeze(-1)
    full = torch.zeros(batch_size * seqlen, dtype=torch.float64)
    full[indices] = log_probs  # pad_input
    return full.reshape(batch_size, seqlen)[:, -response_length - 1 : -1].numpy()


@st.composite
def verl_batches(draw):
    """Left-padded prompts (>= 1 token) and right-padded responses (0..R tokens), verl's layout."""
    batch = draw(st.integers(1, 4))
    prompt_len, response_length = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    prompts = draw(st.lists(st.integers(1, prompt_len), min_size=batch, max_size=batch))
    responses = draw(st.lists(st.integers(0, response_length), min_size=batch, max_size=batch))
    seqlen = prompt_len + response_length
    t = np.arange(seqlen)
    attn = np.array([(t >= prompt_len - p) & (t < prompt_len + r) for p, r in zip(prompts, responses, strict=True)])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = np.where(attn, rng.integers(0, VOCAB, attn.shape), 0)
    logits = rng.normal(0, 3, (*attn.shape, VOCAB))
    temperature = draw(st.sampled_from([1.0, 0.7]))
    return ids, attn.astype(np.int64), logits, response_length, temperature


@settings(max_examples=60, deadline=None)
@given(verl_batches())
def test_matches_verls_arithmetic_in_torch(case):
    ids, attn, logits, r, tau = case
    logits_rmpad = logits[attn.astype(bool)]  # the model's logits on the packed row
    ours = remove_padding_log_probs(ids, attn, logits_rmpad, r, tau)
    theirs = torch_remove_padding(ids, attn, logits_rmpad, r, tau)
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-13)
    assert np.all((ours == 0) == (theirs == 0))  # the same steps are padding


@settings(max_examples=60, deadline=None)
@given(verl_batches())
def test_under_the_response_mask_it_is_the_per_document_definition(case):
    ids, attn, logits, r, tau = case
    response_mask = attn[:, -r:].astype(bool)
    got = remove_padding_log_probs(ids, attn, logits[attn.astype(bool)], r, tau)
    # padded: each response token scored by the logits one step before, in its own row
    padded = maskloss.token_logprobs(ids[:, -r:], logits[:, -r - 1 : -1], response_mask, temperature=tau)
    np.testing.assert_allclose(np.where(response_mask, got, 0.0), padded, rtol=1e-13, atol=1e-13)
    # packed: the flat row with shift=1 and segment ids never crosses a document
    packing = maskloss.pack(attn.astype(bool))
    packed = maskloss.token_logprobs(packing.pack_array(ids), packing.pack_array(logits), shift=1,
                                     temperature=tau, segment_ids=packing.segment_ids)
    per_row = maskloss.unpack(np.pad(packed, ((0, 0), (0, 1))), packing)[:, -r - 1 : -1]
    np.testing.assert_allclose(np.where(response_mask, got, 0.0), np.where(response_mask, per_row, 0.0),
                               rtol=1e-13, atol=1e-13)


def test_the_roll_crosses_every_boundary_off_the_mask():
    """By hand: rows [5 | 1 2] and [5 | 3 .]; flat row [5 1 2 5 3], rolled [1 2 5 3 5]."""
    ids = np.array([[5, 1, 2], [5, 3, 0]])
    attn = np.array([[1, 1, 1], [1, 1, 0]])
    logits_rmpad = np.zeros((5, 6))  # uniform, but for:
    logits_rmpad[3, 5] = np.log(2.0)  # flat 3 (row 1's prompt token): it scores token 3, p = 1 / 7
    logits_rmpad[4, 5] = np.log(4.0)  # flat 4 (row 1's last token): the wrapped roll scores row 0's 5, p = 4 / 9
    got = remove_padding_log_probs(ids, attn, logits_rmpad, response_length=2)
    # row 1, response position 1 is padding; verl puts the crossing log p(5) there
    assert got[1, 1] == pytest.approx(np.log(4 / 9), rel=1e-15)
    # under the mask, the per-document values: row 1 position 0 scores token 3 from its prompt 5
    assert got[1, 0] == pytest.approx(np.log(1 / 7), rel=1e-15)
    assert attn[1, 2] == 0  # ... the crossing value is under the mask


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((np.zeros((1, 3), int), [[1, 1, 1]], np.zeros((3, 4)), 3), ValueError,
         r"response_length must be in \[0, seqlen - 1\] = \[0, 2\].*got 3"),
        ((np.zeros((1, 3), int), [[1, 1, 1]], np.zeros((2, 4)), 1), ValueError, r"total_nnz = 3 valid tokens"),
        ((np.full((1, 3), 9), [[1, 1, 0]], np.zeros((2, 4)), 1), ValueError, r"input_ids\[0, 1\] is 9"),
        ((np.zeros((1, 3)), [[1, 1, 1]], np.zeros((3, 4)), 1), TypeError, r"integer token ids"),
        ((np.zeros((1, 3), int), [[1, 1]], np.zeros((2, 4)), 1), ValueError, r"attention_mask"),
    ],
)
def test_bad_input_is_named(args, error, match):
    with pytest.raises(error, match=match):
        remove_padding_log_probs(*args)
