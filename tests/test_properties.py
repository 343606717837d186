"""Hypothesis properties of every loss and reduction (see tests/README.md for the list)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from tests.cases import GARBAGE, Case, assert_matches, cases

SCALARS = maskloss.SCALAR_REDUCTIONS


def _pad_steps(case: Case, extra: int, junk: float) -> Case:
    """Append ``extra`` masked steps full of ``junk`` to every sequence."""

    def pad(arr: np.ndarray, value: float) -> np.ndarray:
        widths = [(0, 0), (0, extra)] + [(0, 0)] * (arr.ndim - 2)
        return np.pad(arr, widths, constant_values=value)

    label_junk = 10**6 if case.kind == "sparse" else junk
    options = dict(case.options)
    sw = options.get("sample_weight")
    if sw is not None and np.ndim(sw) == 2:
        options["sample_weight"] = pad(np.asarray(sw, dtype=float), np.nan)
    return Case(
        case.kind,
        pad(case.y_true, label_junk),
        pad(case.y_pred, junk),
        pad(case.mask, False),
        options,
    )


@given(case=cases(), extra=st.integers(1, 4), junk=st.sampled_from(GARBAGE))
def test_padding_content_and_amount_change_nothing_but_element_mean(case, extra, junk):
    padded = _pad_steps(case, extra, junk)
    steps = case.mask.shape[1]
    for reduction in SCALARS:
        before, after = case.run(reduction), padded.run(reduction)
        if reduction == "element_mean":
            # Documented factor: the denominator counts padding, B*T -> B*(T + extra).
            assert_matches(after, before * steps / (steps + extra), rtol=1e-12)
        else:
            assert_matches(after, before, rtol=1e-12)


def _repad_case(case: Case, side: str) -> Case:
    mask = case.mask
    y_true, new_mask = maskloss.repad(case.y_true, mask, side=side)
    y_pred, _ = maskloss.repad(case.y_pred, mask, side=side)
    options = dict(case.options)
    sw = options.get("sample_weight")
    if sw is not None and np.ndim(sw) == 2:
        options["sample_weight"], _ = maskloss.repad(sw, mask, side=side)
    return Case(case.kind, y_true, y_pred, new_mask, options)


@given(case=cases())
def test_left_padding_equals_right_padding(case):
    left, right = _repad_case(case, "left"), _repad_case(case, "right")
    assert maskloss.padding_side(left.mask) in ("left", "none")
    assert maskloss.padding_side(right.mask) in ("right", "none")
    for reduction in SCALARS:
        assert_matches(left.run(reduction), right.run(reduction), rtol=1e-12)
        assert_matches(left.run(reduction), case.run(reduction), rtol=1e-12)


@given(case=cases(), data=st.data())
def test_batch_order_does_not_matter(case, data):
    order = np.array(data.draw(st.permutations(range(case.mask.shape[0]))))
    options = dict(case.options)
    if "sample_weight" in options:
        options["sample_weight"] = np.asarray(options["sample_weight"])[order]
    shuffled = Case(case.kind, case.y_true[order], case.y_pred[order], case.mask[order], options)
    for reduction in SCALARS:
        assert_matches(shuffled.run(reduction), case.run(reduction), rtol=1e-12)
    assert_matches(shuffled.run("none"), case.run("none")[order])


def _denominator_terms(case: Case) -> np.ndarray:
    """a = mask * sample_weight (* class weight of the label for integer labels), by hand."""
    valid = case.mask.copy()
    if case.kind == "sparse" and "ignore_index" in case.options:
        valid &= case.y_true != case.options["ignore_index"]
    a = valid.astype(float)
    sw = case.options.get("sample_weight")
    if sw is not None:
        sw = np.asarray(sw, dtype=float)
        a = np.where(valid, sw if sw.ndim == 2 else sw[:, None], 0.0)
    cw = case.options.get("class_weight")
    if case.kind == "sparse" and cw is not None:
        a = np.where(valid, a * np.asarray(cw)[np.where(valid, case.y_true, 0)], 0.0)
    return a


@given(case=cases())
def test_none_sums_to_sum_and_every_mean_is_its_numerator_over_its_denominator(case):
    per_step = case.run("none")
    assert np.all(per_step[~case.mask] == 0.0)
    total = case.run("sum")
    assert_matches(per_step.sum(), total, rtol=1e-12)
    a = _denominator_terms(case)
    batch, steps = case.mask.shape
    assert_matches(case.run("token_mean"), total / a.sum() if a.sum() else np.nan, rtol=1e-12)
    assert_matches(case.run("batch_mean"), total / batch, rtol=1e-12)
    assert_matches(case.run("element_mean"), total / (batch * steps), rtol=1e-12)
    seq_den = a.sum(axis=1)
    nonempty = seq_den > 0
    expected = np.mean(per_step.sum(axis=1)[nonempty] / seq_den[nonempty]) if nonempty.any() else np.nan
    assert_matches(case.run("sequence_mean"), expected, rtol=1e-12)


@given(case=cases(kinds=("mae", "mse", "binary", "categorical"), weights=False))
def test_masked_loss_equals_unmasked_loss_on_the_compacted_valid_steps(case):
    compact = Case(case.kind, case.y_true[case.mask][None], case.y_pred[case.mask][None],
                   np.ones((1, int(case.mask.sum())), dtype=bool), case.options)
    for reduction in ("sum", "token_mean"):
        assert_matches(case.run(reduction), compact.function(
            compact.y_true, compact.y_pred, reduction=reduction, **case.options), rtol=1e-12)


@given(case=cases(kinds=("sparse",), weights=False))
def test_sparse_masked_loss_equals_loss_on_the_compacted_valid_labels(case):
    valid = case.mask.copy()
    if "ignore_index" in case.options:
        valid &= case.y_true != case.options["ignore_index"]
    options = {k: v for k, v in case.options.items() if k != "ignore_index"}
    for reduction in ("sum", "token_mean"):
        expected = maskloss.sparse_categorical_crossentropy(
            case.y_true[valid][None], case.y_pred[valid][None], reduction=reduction, **options
        )
        assert_matches(case.run(reduction), expected, rtol=1e-12)


@given(case=cases())
def test_inputs_are_never_modified_and_read_only_inputs_work(case):
    arrays = [case.y_true, case.y_pred, case.mask] + [
        v for v in case.options.values() if isinstance(v, np.ndarray)
    ]
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False
    for reduction in maskloss.REDUCTIONS:
        case.run(reduction)
    for a, c in zip(arrays, copies, strict=True):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int32])
def test_low_precision_and_integer_inputs_are_computed_in_float64(dtype):
    rng = np.random.default_rng(3)
    y_true = rng.integers(-3, 4, size=(3, 4, 2)).astype(dtype)
    y_pred = rng.integers(-3, 4, size=(3, 4, 2)).astype(dtype)
    mask = rng.random((3, 4)) > 0.3
    for fn in (maskloss.mae, maskloss.mse):
        got = fn(y_true, y_pred, mask)
        assert isinstance(got, np.float64)
        assert got == fn(y_true.astype(np.float64), y_pred.astype(np.float64), mask)
    # float32 logits: the result equals the float64 computation on the same (float32) values.
    logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(3, 4))
    low = maskloss.sparse_categorical_crossentropy(labels, logits, mask, from_logits=True)
    high = maskloss.sparse_categorical_crossentropy(labels, logits.astype(np.float64), mask, from_logits=True)
    assert low == high


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0, 0)])
@pytest.mark.parametrize("kind", ["mae", "binary", "categorical", "sparse"])
def test_empty_batches_behave_as_all_masked(shape, kind):
    classes = 3
    y_pred = np.zeros(shape + (classes,))
    y_true = np.zeros(shape, dtype=int) if kind == "sparse" else np.zeros(shape + (classes,))
    fn = Case(kind, y_true, y_pred, np.zeros(shape, bool)).function
    assert fn(y_true, y_pred, reduction="none").shape == shape
    assert fn(y_true, y_pred, reduction="sum") == 0.0
    for reduction in ("token_mean", "sequence_mean", "element_mean"):
        assert np.isnan(fn(y_true, y_pred, reduction=reduction))
    # batch_mean divides by B: 0/0 is NaN, but 0 over 3 empty sequences is 0, as for any
    # all-masked batch.
    batch_mean = fn(y_true, y_pred, reduction="batch_mean")
    assert np.isnan(batch_mean) if shape[0] == 0 else batch_mean == 0.0


@given(case=cases())
def test_all_masked_batch_gives_nan_means_and_zero_sum(case):
    masked = Case(case.kind, case.y_true, case.y_pred, np.zeros_like(case.mask), case.options)
    assert masked.run("sum") == 0.0
    assert np.all(masked.run("none") == 0.0)
    for reduction in ("token_mean", "sequence_mean"):
        assert np.isnan(masked.run(reduction))


@given(case=cases(), cut=st.integers(1, 3))
def test_split_batches_recombine_through_masked_totals(case, cut):
    cut = min(cut, case.mask.shape[0])
    a = _denominator_terms(case)
    per_step = case.run("none")
    parts = [
        maskloss.MaskedTotals.from_terms(per_step[:cut], a[:cut]),
        maskloss.MaskedTotals.from_terms(per_step[cut:], a[cut:]),
    ]
    merged = maskloss.MaskedTotals.concat(parts)
    for reduction in SCALARS:
        assert_matches(merged.value(reduction), case.run(reduction), rtol=1e-12)
