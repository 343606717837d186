"""masked_totals: micro-batches and shards recombine into the exact full-batch loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from tests.cases import Case, assert_matches, cases


def _split(case: Case, lo: int, hi: int) -> Case:
    options = dict(case.options)
    if "sample_weight" in options:
        options["sample_weight"] = np.asarray(options["sample_weight"])[lo:hi]
    return Case(case.kind, case.y_true[lo:hi], case.y_pred[lo:hi], case.mask[lo:hi], options)


@given(case=cases(), data=st.data())
def test_totals_of_any_split_merge_into_the_full_batch_value(case, data):
    batch = case.mask.shape[0]
    cuts = sorted(data.draw(st.lists(st.integers(0, batch), max_size=3)))
    bounds = [0, *cuts, batch]
    totals = maskloss.masked_totals(case.function)
    parts = [
        totals(p.y_true, p.y_pred, p.mask, **p.options)
        for p in (_split(case, lo, hi) for lo, hi in itertools.pairwise(bounds))
    ]
    merged = maskloss.MaskedTotals.concat(parts)
    for reduction in maskloss.SCALAR_REDUCTIONS:
        assert_matches(merged.value(reduction), case.run(reduction), rtol=1e-12)


def test_mean_of_micro_batch_means_is_not_the_full_batch_mean():
    # docs/course/05-accumulation.md: micro-batches with 5 and 1 targets; the mean of means weighs the single
    # token like the five. Here with MAE: losses 1 (x5) and 4 (x1).
    y_true = np.zeros((2, 5, 1))
    y_pred = np.array([[[1.0]] * 5, [[4.0]] + [[np.nan]] * 4])
    mask = maskloss.mask_from_lengths([5, 1], 5)
    totals = maskloss.masked_totals(maskloss.mae)
    parts = [totals(y_true[i : i + 1], y_pred[i : i + 1], mask[i : i + 1]) for i in (0, 1)]
    assert np.mean([p.value("token_mean") for p in parts]) == pytest.approx(2.5)  # (1 + 4) / 2: wrong
    assert maskloss.MaskedTotals.concat(parts).value("token_mean") == pytest.approx(9 / 6)  # (5 + 4) / 6


def test_masked_totals_rejects_a_non_loss():
    with pytest.raises(TypeError, match="masked_totals"):
        maskloss.masked_totals(np.mean)


@pytest.mark.parametrize("shape", [(0, 3), (2, 0)])
@pytest.mark.parametrize("reduction", maskloss.SCALAR_REDUCTIONS)
def test_gradient_of_an_empty_batch_is_an_empty_array(shape, reduction):
    value, grad = maskloss.value_and_grad(maskloss.mae)(np.zeros((*shape, 1)), np.zeros((*shape, 1)),
                                                        reduction=reduction)
    assert grad.shape == (*shape, 1)
    assert_matches(value, maskloss.mae(np.zeros((*shape, 1)), np.zeros((*shape, 1)), reduction=reduction))


# --- Gradient accumulation and ranks: GlobalCounts and micro_batch_value_and_grad -----------------

COUNT_FIELD = {"token_mean": "tokens", "sequence_mean": "nonempty_sequences", "batch_mean": "sequences",
               "element_mean": "steps"}


def _take(case: Case, rows: np.ndarray) -> Case:
    """The micro-batch of ``case`` made of sequences ``rows`` (any order, possibly none)."""
    options = dict(case.options)
    if "sample_weight" in options:
        options["sample_weight"] = np.asarray(options["sample_weight"])[rows]
    return Case(case.kind, case.y_true[rows], case.y_pred[rows], case.mask[rows], options)


def _loop_counts(case: Case) -> dict[str, float]:
    """Slow oracle of the shared counts: Python loops over the steps, from the definitions."""
    batch, steps = case.mask.shape
    weight = case.options.get("sample_weight")
    class_weight = case.options.get("class_weight")
    ignore = case.options.get("ignore_index")
    tokens, nonempty = 0.0, 0.0
    for b in range(batch):
        d_b = 0.0
        for t in range(steps):
            if not case.mask[b, t]:
                continue
            a = 1.0
            if case.kind == "sparse":
                label = int(case.y_true[b, t])
                if ignore is not None and label == ignore:
                    continue
                if class_weight is not None:
                    a *= float(class_weight[label])  # torch: class weights enter the denominator
            if weight is not None:
                w = np.asarray(weight, dtype=float)
                a *= float(w[b]) if w.ndim == 1 else float(w[b, t])
            d_b += a
        tokens += d_b
        nonempty += d_b > 0
    return {"tokens": tokens, "nonempty_sequences": nonempty, "sequences": float(batch),
            "steps": float(batch * steps)}


@st.composite
def layouts(draw, batch: int):
    """An optimizer step's layout: sequences shuffled, dealt to ranks, cut into micro-batches."""
    ranks = draw(st.integers(1, 3))
    micro = draw(st.integers(1, 3))
    order = np.array(draw(st.permutations(range(batch))), dtype=np.int64)
    cuts = sorted(draw(st.lists(st.integers(0, batch), min_size=ranks * micro - 1, max_size=ranks * micro - 1)))
    pieces = [order[lo:hi] for lo, hi in itertools.pairwise([0, *cuts, batch])]
    return [pieces[r * micro:(r + 1) * micro] for r in range(ranks)]


def _all_reduced_counts(case: Case, layout) -> maskloss.GlobalCounts:
    """Local counts summed per rank, then the ranks' 4-vectors summed (the all-reduce)."""
    totals = maskloss.masked_totals(case.function)
    per_rank = []
    for rank in layout:
        local = maskloss.GlobalCounts.total(
            maskloss.GlobalCounts.from_totals(totals(p.y_true, p.y_pred, p.mask, **p.options))
            for p in (_take(case, rows) for rows in rank))
        per_rank.append(local.to_array())
    return maskloss.GlobalCounts.from_array(np.sum(per_rank, axis=0))


@given(case=cases(), data=st.data())
def test_micro_batch_gradients_sum_to_the_full_batch_gradient(case, data):
    layout = data.draw(layouts(case.mask.shape[0]))
    counts = _all_reduced_counts(case, layout)
    expected_counts = _loop_counts(case)
    for name, value in expected_counts.items():
        assert getattr(counts, name) == pytest.approx(value, rel=1e-12, abs=1e-12)
    oracle = case.oracle()
    for reduction in maskloss.SCALAR_REDUCTIONS:
        full_value, full_grad = maskloss.value_and_grad(case.function)(
            case.y_true, case.y_pred, case.mask, reduction=reduction, **case.options)
        step = maskloss.micro_batch_value_and_grad(case.function, None if reduction == "sum" else counts)
        if reduction != "sum" and getattr(counts, COUNT_FIELD[reduction]) == 0:
            assert np.isnan(full_value)  # the full batch is 0/0; accumulation refuses it
            with pytest.raises(ValueError, match=f"counts.{COUNT_FIELD[reduction]} is 0"):
                step(case.y_true, case.y_pred, case.mask, reduction=reduction, **case.options)
            continue
        total_value, grad = 0.0, np.zeros(case.y_pred.shape)
        for rank in layout:
            for rows in rank:
                mb = _take(case, rows)
                value, g = step(mb.y_true, mb.y_pred, mb.mask, reduction=reduction, **mb.options)
                mb_oracle = mb.oracle()
                if reduction == "sum":
                    share = mb_oracle["sum"]
                elif reduction == "sequence_mean":  # mean over the micro-batch's K_i, rescaled to K
                    k_i = _loop_counts(mb)["nonempty_sequences"]
                    share = 0.0 if k_i == 0 else mb_oracle["sequence_mean"] * k_i / counts.nonempty_sequences
                else:
                    share = mb_oracle["sum"] / expected_counts[COUNT_FIELD[reduction]]
                assert_matches(value, share, rtol=1e-10)
                total_value += float(value)
                grad[rows] += g
        assert_matches(total_value, oracle[reduction], rtol=1e-10)
        assert_matches(total_value, full_value, rtol=1e-12)
        scale = float(np.max(np.abs(full_grad), initial=0.0))
        np.testing.assert_allclose(grad, full_grad, rtol=1e-12, atol=1e-12 * scale)


@given(case=cases(kinds=("mae", "mse", "binary", "categorical")), data=st.data())
def test_counts_from_the_mask_equal_counts_from_the_totals(case, data):
    # Without class weights on integer labels the counts need only the mask and the weights.
    by_mask = maskloss.GlobalCounts.from_mask(case.mask, case.options.get("sample_weight"))
    totals = maskloss.masked_totals(case.function)(case.y_true, case.y_pred, case.mask, **case.options)
    assert by_mask == maskloss.GlobalCounts.from_totals(totals)


def test_the_mean_of_micro_batch_means_gets_the_gradient_wrong():
    # Micro-batches of 5 and 1 valid MAE steps, prediction 1 above the target everywhere:
    # the full-batch token_mean gradient is 1/6 per valid step (d|y - t|/dy = 1, 6 tokens).
    y_true, y_pred = np.zeros((2, 5, 1)), np.ones((2, 5, 1))
    mask = maskloss.mask_from_lengths([5, 1], 5)
    naive = [maskloss.value_and_grad(maskloss.mae)(y_true[i:i + 1], y_pred[i:i + 1], mask[i:i + 1])[1]
             for i in (0, 1)]
    naive_grad = np.concatenate(naive) / 2  # averaging the two micro-batch means
    counts = maskloss.GlobalCounts.from_mask(mask)
    step = maskloss.micro_batch_value_and_grad(maskloss.mae, counts)
    exact = np.concatenate([step(y_true[i:i + 1], y_pred[i:i + 1], mask[i:i + 1])[1] for i in (0, 1)])
    assert naive_grad[0, 0, 0] == pytest.approx(1 / 10) and naive_grad[1, 0, 0] == pytest.approx(1 / 2)
    np.testing.assert_allclose(exact[..., 0], np.where(mask, 1 / 6, 0.0), rtol=1e-15)


def test_counts_add_and_round_trip_through_a_vector():
    a = maskloss.GlobalCounts(tokens=2.5, nonempty_sequences=1, sequences=2, steps=6)
    b = maskloss.GlobalCounts(tokens=1, nonempty_sequences=1, sequences=1, steps=3)
    assert a + b == maskloss.GlobalCounts(3.5, 2, 3, 9)
    assert maskloss.GlobalCounts.total([]) == maskloss.GlobalCounts(0, 0, 0, 0)
    assert (a + b).to_array().tolist() == [3.5, 2.0, 3.0, 9.0]
    assert maskloss.GlobalCounts.from_array((a + b).to_array()) == a + b


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"tokens": float("nan")}, ValueError, r"tokens must be finite and >= 0, got nan"),
    ({"steps": float("inf")}, ValueError, r"steps must be finite and >= 0, got inf"),
    ({"sequences": -1}, ValueError, r"sequences must be finite and >= 0, got -1.0"),
    ({"nonempty_sequences": "three"}, TypeError, r"nonempty_sequences must be a number, got 'three'"),
])
def test_bad_counts_are_refused(kwargs, error, match):
    fields = {"tokens": 1.0, "nonempty_sequences": 1.0, "sequences": 1.0, "steps": 1.0, **kwargs}
    with pytest.raises(error, match=match):
        maskloss.GlobalCounts(**fields)


def test_a_non_finite_count_after_the_all_reduce_is_refused():
    with pytest.raises(ValueError, match="tokens must be finite"):
        maskloss.GlobalCounts.from_array(np.array([np.nan, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"4-vector .* got shape \(3,\)"):
        maskloss.GlobalCounts.from_array(np.ones(3))


def test_wrong_use_of_the_accumulation_rule_is_refused():
    y, mask = np.zeros((2, 3, 1)), maskloss.mask_from_lengths([3, 1], 3)
    local = maskloss.GlobalCounts.from_mask(mask[:1])
    with pytest.raises(ValueError, match=r"counts.tokens=3.0 is smaller than this micro-batch's own 4.0"):
        maskloss.micro_batch_value_and_grad(maskloss.mse, local)(y, y, mask)
    with pytest.raises(ValueError, match="counts is None, but reduction='token_mean'"):
        maskloss.micro_batch_value_and_grad(maskloss.mse, None)(y, y, mask)
    with pytest.raises(ValueError, match="needs a scalar loss, got reduction='none'"):
        maskloss.micro_batch_value_and_grad(maskloss.mse, local)(y, y, mask, reduction="none")
    with pytest.raises(TypeError, match=r"counts must be a maskloss\.GlobalCounts or None, got int"):
        maskloss.micro_batch_value_and_grad(maskloss.mse, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="micro_batch_value_and_grad"):
        maskloss.micro_batch_value_and_grad(np.mean, local)
    with pytest.raises(ValueError, match=r"one D_b per sequence, shape \(B,\), got shape \(2, 3\)"):
        local.scale("token_mean", np.ones((2, 3)))
    with pytest.raises(ValueError, match="denominator must be finite and >= 0, got nan"):
        local.scale("token_mean", [1.0, np.nan])
    with pytest.raises(ValueError, match="reduction"):
        local.scale("mean", [1.0])
    with pytest.raises(ValueError, match=r"counts.nonempty_sequences is 0"):
        maskloss.GlobalCounts(0, 0, 1, 3).scale("sequence_mean", [0.0])
    with pytest.raises(TypeError, match=r"totals must be a maskloss\.MaskedTotals, got dict"):
        local.loss({}, "sum")  # type: ignore[arg-type]
