"""Issue 22's packing property: every loss, reduction and aggregation on packed rows equals the
padded batch of the same documents, value and gradient (float64, 1e-13: the per-document sums
run in another order than the per-row ones, so bits may differ in the last place)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss import registry
from maskloss.posttraining.aggregation import AGGREGATIONS
from maskloss.reductions import MaskedTotals
from maskloss.strategies import packed_batches

LOSSES = [s.function for s in registry.specs() if s.kind is not None]
# element_mean divides by all steps, padding included: a packed document has no padding, so
# its count is the documents' steps (MaskedTotals.from_segments), checked separately below.
SAME = ("sum", "token_mean", "sequence_mean", "batch_mean")
TOL = 1e-13


def _options(fn):
    return {} if registry.spec_of(fn).kind == "regression" else {"from_logits": True}


def _close(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    assert np.all((np.abs(a - b) <= TOL * scale) | (np.isnan(a) & np.isnan(b))), (a, b)


def _kind_batches(fn, **kw):
    return packed_batches(registry.spec_of(fn).kind, **kw)


@pytest.mark.parametrize("fn", LOSSES, ids=lambda f: f.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_packed_rows_give_the_padded_value_and_gradient(fn, data):
    batch = data.draw(_kind_batches(fn, adversarial=True, weights=True))
    reduction = data.draw(st.sampled_from(SAME))
    p, opts = batch.padded, _options(fn)
    vg = maskloss.value_and_grad(fn)
    value, grad = vg(p.y_true, p.y_pred, p.mask, reduction=reduction, sample_weight=p.sample_weight, **opts)
    packed_value, packed_grad = vg(
        batch.y_true, batch.y_pred, batch.mask, reduction=reduction, sample_weight=batch.sample_weight,
        segment_ids=batch.segment_ids, **opts,
    )
    _close(value, packed_value)
    _close(batch.packing.pack_array(grad), packed_grad)
    assert np.all(packed_grad[~batch.mask] == 0)
    # the loss itself gives value_and_grad's value, NaN included (all weights 0 under token_mean)
    np.testing.assert_equal(fn(batch.y_true, batch.y_pred, batch.mask, reduction=reduction,
                               sample_weight=batch.sample_weight, segment_ids=batch.segment_ids, **opts), packed_value)
    # per-step values: the padded ones moved into the packed rows
    none = fn(batch.y_true, batch.y_pred, batch.mask, reduction="none", sample_weight=batch.sample_weight,
              segment_ids=batch.segment_ids, **opts)
    padded_none = fn(p.y_true, p.y_pred, p.mask, reduction="none", sample_weight=p.sample_weight, **opts)
    np.testing.assert_array_equal(none, batch.packing.pack_array(padded_none))


@settings(max_examples=40, deadline=None)
@given(packed_batches("regression", adversarial=True))
def test_element_mean_of_packed_rows_counts_the_documents_steps(batch):
    # The loop oracle: sum of the per-step losses over the number of document steps.
    per_step = maskloss.mse(batch.padded.y_true, batch.padded.y_pred, batch.padded.mask, reduction="none")
    total, steps = 0.0, 0
    for b, n in enumerate(batch.padded.lengths):
        for t in range(int(n)):
            total += per_step[b, t]
        steps += int(n)
    got = maskloss.mse(batch.y_true, batch.y_pred, reduction="element_mean", segment_ids=batch.segment_ids)
    _close(got, total / steps)


@settings(max_examples=60, deadline=None)
@given(packed_batches("regression", adversarial=True, weights=True), st.sampled_from(AGGREGATIONS), st.booleans())
def test_every_aggregation_mode_is_per_document(batch, mode, weighted):
    per_step = maskloss.mse(batch.y_true, batch.y_pred, reduction="none", segment_ids=batch.segment_ids)
    padded = maskloss.mse(batch.padded.y_true, batch.padded.y_pred, batch.padded.mask, reduction="none")
    extra = {"constant": 7.0} if mode == "constant" else {}
    if mode == "global_token_mean":
        extra = {"global_count": float(batch.padded.mask.sum()) + 2.0}
    a_weight, b_weight = (batch.padded.sample_weight, batch.sample_weight) if weighted else (None, None)
    if weighted and mode == "global_token_mean" and a_weight is not None:  # the weighted count of the step
        a_weight = np.broadcast_to(np.asarray(a_weight, dtype=float).reshape(len(a_weight), -1), padded.shape)
        extra = {"global_count": float(np.sum(np.where(batch.padded.mask, a_weight, 0.0))) + 2.0}
    a = maskloss.aggregate(padded, batch.padded.mask, mode=mode, sample_weight=a_weight, **extra)
    b = maskloss.aggregate(per_step, batch.mask, mode=mode, segment_ids=batch.segment_ids, sample_weight=b_weight,
                           **extra)
    _close(a, b)


@settings(max_examples=30, deadline=None)
@given(packed_batches("sparse", adversarial=True), st.booleans())
def test_sequence_logprobs_are_per_document(batch, average):
    p = batch.padded
    padded = maskloss.sequence_logprobs(p.y_true, p.y_pred, p.mask, average=average)
    packed = maskloss.sequence_logprobs(batch.y_true, batch.y_pred, batch.mask, average=average,
                                        segment_ids=batch.segment_ids)
    _close(padded[batch.packing.document], packed)


@settings(max_examples=30, deadline=None)
@given(packed_batches("regression"), packed_batches("regression"), st.sampled_from(SAME))
def test_packed_micro_batches_merge_exactly(a, b, reduction):
    parts = [maskloss.masked_totals(maskloss.mse)(x.y_true, x.y_pred, segment_ids=x.segment_ids) for x in (a, b)]
    merged = MaskedTotals.concat(parts)
    whole = MaskedTotals.concat(
        [maskloss.masked_totals(maskloss.mse)(x.padded.y_true, x.padded.y_pred, x.padded.mask) for x in (a, b)]
    )
    _close(merged.value(reduction), whole.value(reduction))
    assert merged.numerator.shape == (a.packing.document.size + b.packing.document.size,)


def test_mean_over_documents_by_hand():
    # Two documents packed in one row, losses 1, 1, 1 (document 0) and 4 (document 1), one padding step.
    values = np.array([[1.0, 1.0, 1.0, 4.0, np.nan]])
    seg = np.array([[0, 0, 0, 1, -1]])
    assert maskloss.reduce(values, segment_ids=seg, reduction="sequence_mean") == 2.5  # (1 + 4) / 2
    assert maskloss.reduce(values, segment_ids=seg, reduction="token_mean") == 7 / 4
    assert maskloss.reduce(values, segment_ids=seg, reduction="batch_mean") == 3.5  # (3 + 4) / 2


@pytest.mark.parametrize(
    ("seg", "match"),
    [
        ([[0, 1, 0]], r"segment_ids must number the documents .* index \(0, 2\)"),
        ([[0, 0, 1], [1, 2, 2]], r"document 1 is split across rows .* \(1, 0\)"),
        ([[0, -1, 1]], r"padding at the end of each row"),
        ([[0, 0]], r"segment_ids must have the shape of the steps \(1, 3\)"),
    ],
)
def test_bad_segment_ids_name_the_argument_and_the_index(seg, match):
    y = np.zeros((len(seg), 3, 1))
    with pytest.raises(ValueError, match=match):
        maskloss.mse(y, y, segment_ids=seg)
    with pytest.raises(ValueError, match=match):
        maskloss.reduce(y[..., 0], segment_ids=seg)


@settings(max_examples=40, deadline=None)
@given(packed_batches("sparse", adversarial=True), st.sampled_from(SAME), st.integers(1, 2))
def test_shift_never_crosses_a_document_boundary(batch, reduction, shift):
    # Padded oracle: each document shifted inside its own row (label t + shift scored at t).
    p = batch.padded
    vg = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)
    if p.y_true.shape[1] <= shift:
        return
    value, grad = vg(p.y_true, p.y_pred, p.mask, from_logits=True, shift=shift, reduction=reduction)
    packed_value, packed_grad = vg(batch.y_true, batch.y_pred, batch.mask, from_logits=True, shift=shift,
                                   reduction=reduction, segment_ids=batch.segment_ids)
    _close(value, packed_value)
    _close(batch.packing.pack_array(grad), packed_grad)
    # the boundary steps (last `shift` tokens of each document) get no gradient
    seg = batch.segment_ids
    same = np.zeros(seg.shape, dtype=bool)
    same[:, :-shift] = (seg[:, :-shift] >= 0) & (seg[:, shift:] == seg[:, :-shift])
    assert np.all(packed_grad[~same] == 0)


# ------------------------------------------------------------------ the losses without a batch kind
# The registry's other losses take logits (and labels) of a sparse batch; each builder gives the
# loss's arguments from the labels, logits and mask of one layout (padded or packed), so the same
# property (packed == padded, value and gradient) runs over every registered loss.


def _weight(labels):  # a per-step policy weight (an advantage): finite, signed, from the labels only
    return np.cos(1.0 + np.asarray(labels, dtype=np.float64))


OTHER_LOSSES = {
    "kl_divergence": lambda y, z, m: ((np.roll(z, 1, axis=-1), z, m),
                                      {"from_logits": True, "target_from_logits": True}),
    "jensen_shannon": lambda y, z, m: ((np.roll(z, 1, axis=-1), z, m),
                                       {"beta": 0.3, "from_logits": True, "target_from_logits": True}),
    "entropy": lambda y, z, m: ((z, m), {}),
    "z_loss": lambda y, z, m: ((z, m), {"coefficient": 0.5, "temperature": 0.7}),
    "token_accuracy": lambda y, z, m: ((y, z, m), {}),
    "policy_gradient_objective": lambda y, z, m: ((y, z, _weight(y), m), {"temperature": 0.7}),
    # values, old values and returns, one per step, read off the logits' classes (junk under the mask)
    "clipped_value_loss": lambda y, z, m: ((z[..., 0], z[..., -1], 0.5 * z[..., 0] + 0.25, m),
                                           {"value_clip_range": 0.2}),
}
#: Registered losses with a test of their own below (not a pipeline: hidden states and a head).
OWN_TEST = {"linear_cross_entropy"}


def test_every_registered_loss_is_covered():
    covered = {registry.spec_of(fn).name for fn in LOSSES} | set(OTHER_LOSSES) | OWN_TEST
    assert covered == set(registry.names()), set(registry.names()) ^ covered


@pytest.mark.parametrize("name", sorted(OTHER_LOSSES))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_other_registered_loss_is_per_document(name, data):
    batch = data.draw(packed_batches("sparse", adversarial=True))
    spec = next(s for s in registry.specs() if s.name == name)
    fn, build = spec.function, OTHER_LOSSES[name]
    p = batch.padded
    # masked label junk would be out of range for token_accuracy/policy_gradient_objective: 0 there
    labels_padded = np.where(p.mask, p.y_true, 0)
    labels_packed = batch.packing.pack_array(labels_padded, 0)
    padded_args, opts = build(labels_padded, p.y_pred, p.mask)
    packed_args, _ = build(labels_packed, batch.y_pred, batch.mask)
    reductions = SAME + ("none",) if "reduction" in inspect.signature(fn).parameters else (None,)
    reduction = data.draw(st.sampled_from(reductions))
    extra = {} if reduction is None else {"reduction": reduction}
    value = fn(*padded_args, **opts, **extra)
    packed_value = fn(*packed_args, **opts, **extra, segment_ids=batch.segment_ids)
    if reduction == "none":
        np.testing.assert_array_equal(packed_value, batch.packing.pack_array(value))
        return
    _close(value, packed_value)
    if spec.grad:
        vg = maskloss.value_and_grad(fn)
        _, grad = vg(*padded_args, **opts, **extra)
        packed_v, packed_grad = vg(*packed_args, **opts, **extra, segment_ids=batch.segment_ids)
        np.testing.assert_equal(packed_v, packed_value)
        _close(batch.packing.pack_array(grad), packed_grad)
        assert np.all(packed_grad[~batch.mask] == 0)


@settings(max_examples=40, deadline=None)
@given(packed_batches("sparse", adversarial=True, weights=True), st.sampled_from(SAME), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_linear_cross_entropy_of_packed_rows_is_per_document(batch, reduction, with_bias, seed):
    """The hidden states of the padded documents moved into the packed rows (NaN at padding, never read):
    the same value, d_hidden moved the same way (0 at padding), the same d_weight and d_bias."""
    p = batch.padded
    rng = np.random.default_rng(seed)
    vocab, size = p.y_pred.shape[-1], 3
    hidden = np.where(p.mask[..., None], rng.normal(0, 1, (*p.mask.shape, size)), np.nan)
    weight = rng.normal(0, 1, (vocab, size))
    bias = rng.normal(0, 1, vocab) if with_bias else None
    labels = np.where(p.mask, p.y_true, 0)
    packed_hidden = batch.packing.pack_array(hidden, np.nan)
    packed_labels = batch.packing.pack_array(labels, -1)
    opts = {"bias": bias, "reduction": reduction}
    vg = maskloss.value_and_grad(maskloss.linear_cross_entropy)
    value, (dh, dw, db) = vg(hidden, weight, labels, p.mask, sample_weight=p.sample_weight, **opts)
    packed_value, (pdh, pdw, pdb) = vg(packed_hidden, weight, packed_labels, batch.mask,
                                       sample_weight=batch.sample_weight, segment_ids=batch.segment_ids, **opts)
    _close(value, packed_value)
    np.testing.assert_equal(packed_value, maskloss.linear_cross_entropy(
        packed_hidden, weight, packed_labels, batch.mask, sample_weight=batch.sample_weight,
        segment_ids=batch.segment_ids, **opts))
    _close(batch.packing.pack_array(dh), pdh)
    assert np.all(pdh[~batch.mask] == 0)
    _close(dw, pdw)
    if with_bias:
        _close(db, pdb)


# ------------------------------------------------------------------ the strategy reaches the edge cases


def _rows_of(batch):
    return [(row[row >= 0], int((row < 0).sum())) for row in batch.segment_ids]


@pytest.mark.parametrize(
    ("what", "condition"),
    [
        ("a document of length 1", lambda b: bool(np.any(b.padded.lengths == 1)) and b.padded.lengths.size > 1),
        ("a document filling a row", lambda b: any(pad == 0 and np.unique(s).size == 1 and s.size > 1
                                                   for s, pad in _rows_of(b))),
        ("padding at the end of a row", lambda b: any(pad > 0 for _, pad in _rows_of(b))),
        ("several documents in one row", lambda b: any(np.unique(s).size > 1 for s, _ in _rows_of(b))),
        ("first fit reorders the documents", lambda b: bool(np.any(np.diff(b.packing.document) < 0))),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_packed_batches_reach_the_edge_cases(what, condition):
    from hypothesis import find

    batch = find(packed_batches("regression"), condition, settings=settings(max_examples=2000, database=None))
    # and the drawn batch is consistent: valid segment ids, the padded documents moved exactly
    maskloss.lengths_from_segment_ids(batch.segment_ids)
    np.testing.assert_array_equal(maskloss.unpack(batch.y_true, batch.packing)[batch.padded.mask],
                                  batch.padded.y_true[batch.padded.mask])
    assert condition(batch), what
