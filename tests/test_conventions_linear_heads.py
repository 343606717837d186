"""Mirrors of the fused LM-head losses: torch's F.linear_cross_entropy, Cut Cross-Entropy, litgpt.

Each mirror against the loop oracle (tests/oracles_linear.py) and, where the framework is
installed, against the real function on the same inputs (maskloss conformance runs more).
"""

from __future__ import annotations

import numpy as np
import pytest

from maskloss.conventions import cce, litgpt
from maskloss.conventions import torch as torch_conv
from tests.oracles_linear import linear_sparse


def _inputs(seed=0, B=2, T=6, D=4, V=9):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((B, T, D))
    c = rng.standard_normal((V, D))
    targets = rng.integers(0, V, (B, T))
    targets[rng.random((B, T)) < 0.3] = -100
    return e, c, targets


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("softcap", [None, 2.5])
def test_cce_mirror_matches_the_loop_oracle(shift, softcap):
    e, c, targets = _inputs()
    h, lab = (e[:, :-1], targets[:, 1:]) if shift else (e, targets)
    expected = linear_sparse(h, c, lab, np.ones(lab.shape, bool), ignore_index=-100, softcap=softcap)
    got_none = cce.linear_cross_entropy(e, c, targets, shift=shift, softcap=softcap, reduction="none")
    assert got_none.shape == lab.shape  # (B, T - 1) with shift, as CCE returns
    np.testing.assert_allclose(got_none, np.array(expected["none"]), rtol=1e-13, atol=0)
    np.testing.assert_allclose(cce.linear_cross_entropy(e, c, targets, shift=shift, softcap=softcap),
                               expected["token_mean"], rtol=1e-13)
    np.testing.assert_allclose(cce.linear_cross_entropy(e, c, targets, shift=shift, softcap=softcap, reduction="sum"),
                               expected["sum"], rtol=1e-13)


def test_cce_shift_never_reads_the_last_embedding_nor_the_first_target():
    e, c, targets = _inputs(1)
    e2, t2 = e.copy(), targets.copy()
    e2[:, -1] = np.nan
    t2[:, 0] = 10**6
    assert cce.linear_cross_entropy(e2, c, t2, shift=True) == cce.linear_cross_entropy(e, c, targets, shift=True)


def test_litgpt_chunking_never_changes_the_value_and_empty_is_zero_or_nan():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, 6, 5))
    targets = np.where(rng.random((2, 6)) < 0.3, -100, rng.integers(0, 5, (2, 6)))
    # hidden = logits and an identity head: the oracle's logits are the logits themselves
    ref = linear_sparse(logits, np.eye(5), targets, np.ones((2, 6), bool), ignore_index=-100)["token_mean"]
    for chunk_size in (0, 1, 4, 128):
        np.testing.assert_allclose(litgpt.chunked_cross_entropy(logits, targets, chunk_size=chunk_size), ref,
                                   rtol=1e-13)
    np.testing.assert_allclose(litgpt.chunked_cross_entropy([logits[:, :3], logits[:, 3:]], targets), ref, rtol=1e-13)
    empty = np.full((2, 6), -100)
    assert litgpt.chunked_cross_entropy(logits, empty) == 0.0
    assert np.isnan(litgpt.chunked_cross_entropy(logits, empty, chunk_size=0))


@pytest.mark.framework("torch")
@pytest.mark.parametrize("chunked", [False, True])
def test_torch_linear_cross_entropy_mirror_including_the_chunked_nan_leak(chunked):
    """torch 2.13's chunked path reads ignored rows: NaN there leaks; the reference path does not."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 4))
    w = rng.standard_normal((6, 4))
    b = rng.standard_normal(6)
    y = rng.integers(0, 6, 7)
    y[[1, 4]] = -100
    x[1] = np.nan
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=3) if chunked else None
    for reduction in ("none", "mean", "sum"):
        theirs = F.linear_cross_entropy(torch.as_tensor(x), torch.as_tensor(w), torch.as_tensor(y),
                                        linear_bias=torch.as_tensor(b), reduction=reduction, options=options)
        ours = torch_conv.linear_cross_entropy(x, w, y, linear_bias=b, reduction=reduction, options=options)
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, equal_nan=True)
        assert bool(np.any(np.isnan(ours))) == chunked


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: cce.linear_cross_entropy(np.ones((2, 3)), np.ones((4, 3)), np.zeros(3, int)), "targets.shape + (D,)"),
        (lambda: cce.linear_cross_entropy(np.ones((2, 3)), np.ones((4, 3)), np.zeros(2, int), reduction="avg"),
         "reduction must be one of"),
        (lambda: litgpt.chunked_cross_entropy(np.ones((1, 2, 3)), np.zeros((1, 2), int), chunk_size=-1),
         "chunk_size must be"),
        (lambda: litgpt.chunked_cross_entropy([], np.zeros((1, 2), int)), "at least one chunk"),
    ],
)
def test_bad_input_is_named(call, words):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert words in str(info.value)
