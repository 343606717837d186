"""linear_cross_entropy with shift= and segment_ids= together (issues 21 and 22): the shift never crosses a document.

Checked against the padded batch of the same documents (each shifted inside itself) and against the
sparse cross-entropy pipeline on the materialised logits ``x @ W.T + b``, which applies the same rule.
"""

from __future__ import annotations

import numpy as np
import pytest

import maskloss

REDUCTIONS = ("sum", "token_mean", "sequence_mean", "batch_mean")


def _packed(seed: int):
    rng = np.random.default_rng(seed)
    lengths = [[3, 1, 2], [6, 1]]  # a document of one token has no shifted step but still counts (last: at T - 1)
    rows, d = [], 0
    for row in lengths:
        seg = []
        for n in row:
            seg += [d] * n
            d += 1
        seg += [-1] * (7 - len(seg))
        rows.append(seg)
    seg = np.array(rows)
    h = rng.normal(size=(2, 7, 3))
    w = rng.normal(size=(5, 3))
    b = rng.normal(size=5)
    labels = rng.integers(0, 5, (2, 7))
    h[seg < 0] = np.nan  # padding is never read
    labels[seg < 0] = 99
    return h, w, b, labels, seg, lengths


def _padded(h, labels, seg, lengths):
    docs = [(r, np.flatnonzero(seg[r] == d)) for r in range(seg.shape[0]) for d in np.unique(seg[r][seg[r] >= 0])]
    t = max(len(ix) for _, ix in docs)
    ph = np.zeros((len(docs), t, h.shape[-1]))
    pl = np.zeros((len(docs), t), dtype=int)
    pm = np.zeros((len(docs), t), dtype=bool)
    for k, (r, ix) in enumerate(docs):
        ph[k, : len(ix)] = h[r, ix]
        pl[k, : len(ix)] = labels[r, ix]
        pm[k, : len(ix)] = True
    return ph, pl, pm


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_packed_shifted_equals_the_padded_documents(reduction):
    h, w, b, labels, seg, lengths = _packed(0)
    packed = maskloss.linear_cross_entropy(h, w, labels, bias=b, shift=1, segment_ids=seg, reduction=reduction)
    ph, pl, pm = _padded(h, labels, seg, lengths)
    padded = maskloss.linear_cross_entropy(ph, w, pl, pm, bias=b, shift=1, reduction=reduction)
    np.testing.assert_allclose(packed, padded, rtol=1e-13)
    grad = maskloss.value_and_grad(maskloss.linear_cross_entropy)
    _, (dh, dw, db) = grad(h, w, labels, bias=b, shift=1, segment_ids=seg, reduction=reduction)
    _, (_, pdw, pdb) = grad(ph, w, pl, pm, bias=b, shift=1, reduction=reduction)
    np.testing.assert_allclose(dw, pdw, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db, pdb, rtol=1e-12, atol=1e-15)
    assert np.all(np.isfinite(dh)) and np.all(dh[seg < 0] == 0)


@pytest.mark.parametrize("reduction", (*REDUCTIONS, "none"))
def test_packed_shifted_equals_the_pipeline_on_materialised_logits(reduction):
    h, w, b, labels, seg, _ = _packed(1)
    logits = np.where((seg >= 0)[..., None], np.nan_to_num(h) @ w.T + b, np.nan)
    got = maskloss.linear_cross_entropy(h, w, labels, bias=b, shift=1, segment_ids=seg, reduction=reduction)
    # (the pipeline validates labels against the mask before the segments: 0, not 99, at padding)
    want = maskloss.sparse_categorical_crossentropy(np.where(seg >= 0, labels, 0), logits, from_logits=True,
                                                    shift=1, segment_ids=seg,
                                                    reduction=reduction)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
