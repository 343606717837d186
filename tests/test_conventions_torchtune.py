"""conventions.torchtune.ce_with_chunked_output_loss: against the loop oracle and torchtune 0.6.1 itself.

torchtune casts each chunk to float32 (``logits.float()``), so the real comparisons use
a float32 tolerance; the loop oracle (tests/oracles_linear.py, an identity head on the
logits) is float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from maskloss.conventions.torchtune import ce_with_chunked_output_loss
from tests.oracles_linear import linear_sparse


def _case(seed, B=2, T=9, V=6):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (B, T, V))
    labels = np.where(rng.random((B, T)) < 0.3, -100, rng.integers(0, V, (B, T)))
    return logits, labels


def _chunks(x, n):  # numpy version of torch.chunk(n, dim=1): ceil(T / n) steps a piece
    size = -(-x.shape[1] // n)
    return [x[:, i : i + size] for i in range(0, x.shape[1], size)]


@pytest.mark.parametrize("n", [1, 2, 4, 8, 9, 20])
def test_every_chunking_gives_the_token_mean(n):
    logits, labels = _case(0)
    expected = linear_sparse(logits, np.eye(6), labels, np.ones(labels.shape, bool), ignore_index=-100)["token_mean"]
    got = ce_with_chunked_output_loss(_chunks(logits, n), labels, num_output_chunks=n)
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_a_missing_chunk_is_left_out_of_the_sum_but_counted():
    logits, labels = _case(1)
    chunks = _chunks(logits, 3)  # 3 steps each
    kept = labels[:, :6]
    total = linear_sparse(logits[:, :6], np.eye(6), kept, np.ones(kept.shape, bool), ignore_index=-100)["sum"]
    got = ce_with_chunked_output_loss(chunks[:2], labels, num_output_chunks=3)
    np.testing.assert_allclose(got, total / np.sum(labels != -100), rtol=1e-13)


def test_nothing_valid_is_nan_and_bad_input_is_named():
    logits, labels = _case(2)
    assert np.isnan(ce_with_chunked_output_loss(_chunks(logits, 2), np.full(labels.shape, -100), num_output_chunks=2))
    with pytest.raises(TypeError, match="list of"):
        ce_with_chunked_output_loss(logits, labels)
    with pytest.raises(ValueError, match=r"logits\[0\] must have shape \(B, T_k, V\) = \(2, 5, V\)"):
        ce_with_chunked_output_loss(_chunks(logits, 3), labels, num_output_chunks=2)
    with pytest.raises(ValueError, match="num_output_chunks"):
        ce_with_chunked_output_loss(_chunks(logits, 3), labels, num_output_chunks=0)


@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_matches_torchtune(n, drop_last):
    torch = pytest.importorskip("torch")
    loss_module = pytest.importorskip("torchtune.modules.loss")
    logits, labels = _case(3, B=3, T=11, V=7)
    chunks = [c.numpy() for c in torch.from_numpy(logits).chunk(n, dim=1)]
    if drop_last and len(chunks) > 1:
        chunks = chunks[:-1]
    theirs = loss_module.CEWithChunkedOutputLoss(num_output_chunks=n)(
        [torch.from_numpy(c) for c in chunks], torch.from_numpy(labels))
    assert theirs.dtype == torch.float32  # the upcast is to float32, even from float64
    np.testing.assert_allclose(ce_with_chunked_output_loss(chunks, labels, num_output_chunks=n), theirs.item(),
                               rtol=2e-6)
    empty = np.full(labels.shape, -100)
    theirs_empty = loss_module.CEWithChunkedOutputLoss(num_output_chunks=n)(
        [torch.from_numpy(c) for c in chunks], torch.from_numpy(empty))
    assert np.isnan(theirs_empty.item()) and np.isnan(ce_with_chunked_output_loss(chunks, empty, num_output_chunks=n))
