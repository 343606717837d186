"""Issue 25: MaskedTotals must not underflow (or overflow) where the loss itself does not.

The direct loss brings the sample weights near 1 by an exact power of two before it forms
``sample_weight * class_weight * loss``; the totals path (masked_totals, concat, accumulation)
must give the same value for every scalar reduction and any split into micro-batches.
The oracle sums the per-step terms in exact rational arithmetic (fractions.Fraction), from
per-step losses computed with math.log on the given probabilities.
"""

from __future__ import annotations

import itertools
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from maskloss.reductions import SCALAR_REDUCTIONS

scce = maskloss.sparse_categorical_crossentropy
totals_of = maskloss.masked_totals(scce)


def oracle(y_true, y_pred, mask, sample_weight, class_weight, reduction):
    """The exact value of ``reduction`` (a Fraction, or None for 0/0), one loop over steps."""
    batch, steps = y_true.shape
    num = [Fraction(0)] * batch
    den = [Fraction(0)] * batch
    for b in range(batch):
        for t in range(steps):
            if not mask[b, t]:
                continue
            y = int(y_true[b, t])
            p = y_pred[b, t, y]  # the loss is -log of the given probability (not renormalised)
            w = Fraction(float(sample_weight[b])) * Fraction(float(class_weight[y]))
            num[b] += w * Fraction(-math.log(p))
            den[b] += w
    if reduction == "sum":
        return sum(num)
    if reduction == "token_mean":
        return None if sum(den) == 0 else sum(num) / sum(den)
    if reduction == "sequence_mean":
        ratios = [n / d for n, d in zip(num, den, strict=True) if d > 0]
        return None if not ratios else sum(ratios) / len(ratios)
    if reduction == "batch_mean":
        return sum(num) / batch
    return sum(num) / (batch * steps)


def as_float(exact):
    """The float64 nearest to an exact value (inf beyond the float64 range, nan for None)."""
    if exact is None:
        return math.nan
    try:
        return float(exact)
    except OverflowError:
        return math.inf if exact > 0 else -math.inf


def assert_close(got, want, what):
    got, want = float(got), float(want)
    if math.isnan(want) or math.isinf(want):
        assert got == want or (math.isnan(got) and math.isnan(want)), f"{what}: {got!r} != {want!r}"
        return
    # 1e-12 relative; below the normal range the float64 result itself is rounded to a subnormal
    assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-300), f"{what}: {got!r} != {want!r}"


SEED6 = dict(  # tests/test_accumulation.py with --hypothesis-seed=6 (issue 25)
    y_true=np.array([[0, 0]]),
    y_pred=np.ones((1, 2, 2)),
    mask=np.ones((1, 2), bool),
    sample_weight=np.array([1e-170]),
    class_weight=np.array([1e-170, 0.0]),
)


def _half(weight):
    return dict(
        y_true=np.array([[0, 0]]),
        y_pred=np.full((1, 2, 2), 0.5),  # loss log 2 at every step
        mask=np.ones((1, 2), bool),
        sample_weight=np.array([weight]),
        class_weight=np.array([weight, weight]),
    )


CASES = {"seed6": SEED6, "log2_tiny": _half(1e-170), "log2_huge": _half(1e170)}


@pytest.mark.parametrize("reduction", SCALAR_REDUCTIONS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_totals_match_the_direct_loss_and_the_exact_oracle(name, reduction):
    c = CASES[name]
    kw = dict(sample_weight=c["sample_weight"], class_weight=c["class_weight"])
    direct = scce(c["y_true"], c["y_pred"], c["mask"], reduction=reduction, **kw)
    with warnings.catch_warnings():  # no warning either: the suite runs warning-free
        warnings.simplefilter("error")
        via_totals = totals_of(c["y_true"], c["y_pred"], c["mask"], **kw).value(reduction)
    want = as_float(oracle(c["y_true"], c["y_pred"], c["mask"], c["sample_weight"], c["class_weight"], reduction))
    assert_close(direct, want, f"direct {name} {reduction}")
    assert_close(via_totals, want, f"totals {name} {reduction}")
    if reduction in ("token_mean", "sequence_mean"):  # exact in the direct path: the same bits
        assert np.array_equal(via_totals, direct, equal_nan=True), (via_totals, direct)


def test_the_seed6_and_log2_token_means_by_hand():
    # By hand: seed 6 scores probability 1 at both steps (loss 0), with weight 1e-170 * 1e-170 > 0,
    # so token_mean is 0 / (2e-340) = 0; the log-2 rows score 1/2 at every step: log 2.
    c = SEED6
    kw = dict(sample_weight=c["sample_weight"], class_weight=c["class_weight"])
    assert float(totals_of(c["y_true"], c["y_pred"], c["mask"], **kw).value("token_mean")) == 0.0
    for weight in (1e-170, 1e170):
        h = _half(weight)
        kw = dict(sample_weight=h["sample_weight"], class_weight=h["class_weight"])
        t = totals_of(h["y_true"], h["y_pred"], h["mask"], **kw)
        assert float(t.value("token_mean")) == math.log(2)
        assert float(t.value("sequence_mean")) == math.log(2)


@st.composite
def tiny_or_huge(draw):
    batch = draw(st.integers(1, 4))
    steps = draw(st.integers(1, 3))
    classes = 2
    y_true = np.array(draw(st.lists(st.lists(st.integers(0, classes - 1), min_size=steps, max_size=steps),
                                    min_size=batch, max_size=batch)))
    mask = np.array(draw(st.lists(st.lists(st.booleans(), min_size=steps, max_size=steps),
                                  min_size=batch, max_size=batch)))
    probs = [0.5, 0.25, 0.75, 0.125, 0.875]  # rows summing to 1 exactly
    first = np.array(draw(st.lists(st.sampled_from(probs), min_size=batch * steps, max_size=batch * steps)))
    y_pred = np.stack([first, 1.0 - first], axis=-1).reshape(batch, steps, classes)
    # One magnitude per batch for each weight, with a spread of 2**+-20 around it within the
    # batch: the sample weight anywhere in the float64 range (the direct loss scales it to 1),
    # the class weight within 2**+-480 (the direct loss does not scale it, and must stay exact);
    # their products run from below 1e-300 to beyond 1e300, out of the float64 range.
    sw_scale = draw(st.integers(-1000, 1000))
    cw_scale = draw(st.integers(-480, 480))
    sw = np.ldexp(np.array(draw(st.lists(st.floats(0.5, 1.0), min_size=batch, max_size=batch))),
                  sw_scale + np.array(draw(st.lists(st.integers(-20, 20), min_size=batch, max_size=batch))))
    cw = np.ldexp(np.array(draw(st.lists(st.floats(0.5, 1.0), min_size=classes, max_size=classes))),
                  cw_scale + np.array(draw(st.lists(st.integers(-20, 20), min_size=classes, max_size=classes))))
    cuts = sorted(draw(st.sets(st.integers(1, batch - 1), max_size=batch - 1))) if batch > 1 else []
    return y_true, y_pred, mask, sw, cw, cuts


@given(tiny_or_huge())
def test_any_split_of_tiny_or_huge_weights_recombines_to_the_direct_value(drawn):
    y_true, y_pred, mask, sw, cw, cuts = drawn
    bounds = [0, *cuts, y_true.shape[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parts = [
            totals_of(y_true[a:b], y_pred[a:b], mask[a:b], sample_weight=sw[a:b], class_weight=cw)
            for a, b in itertools.pairwise(bounds)
        ]
        merged = maskloss.MaskedTotals.concat(parts)
    for reduction in SCALAR_REDUCTIONS:
        direct = scce(y_true, y_pred, mask, reduction=reduction, sample_weight=sw, class_weight=cw)
        want = as_float(oracle(y_true, y_pred, mask, sw, cw, reduction))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = merged.value(reduction)
        assert_close(got, want, f"totals {reduction}")
        assert_close(direct, want, f"direct {reduction}")
        if reduction in ("token_mean", "sequence_mean"):
            assert_close(got, direct, f"totals vs direct {reduction}")


def test_sequence_mean_keeps_a_tiny_sequence_next_to_a_huge_one():
    # Two micro-batches, sample weights 2**-1000 and 2**1000 (class weight 2**-40): each
    # sequence's N_b/D_b is its own mean loss, so sequence_mean is (log 2 + log 4) / 2 whatever
    # the weights; aligned to one exponent the tiny sequence would become 0/0 (an empty one).
    y_true = np.array([[0, 0], [0, 0]])
    y_pred = np.array([[[0.5, 0.5], [0.5, 0.5]], [[0.25, 0.75], [0.25, 0.75]]])
    mask = np.ones((2, 2), bool)
    sw, cw = np.ldexp(1.0, np.array([-1000, 1000])), np.array([2.0**-40, 1.0])
    parts = [totals_of(y_true[i : i + 1], y_pred[i : i + 1], mask[i : i + 1], sample_weight=sw[i : i + 1],
                       class_weight=cw) for i in (0, 1)]
    merged = maskloss.MaskedTotals.concat(parts)
    assert float(merged.value("sequence_mean")) == (math.log(2) + math.log(4)) / 2
    for reduction in SCALAR_REDUCTIONS:
        want = as_float(oracle(y_true, y_pred, mask, sw, cw, reduction))
        assert_close(merged.value(reduction), want, f"merged {reduction}")


@pytest.mark.parametrize("reduction", SCALAR_REDUCTIONS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_dask_sums_tiny_and_huge_weights_as_the_direct_loss(name, reduction):
    da = pytest.importorskip("dask.array")
    mdask = pytest.importorskip("maskloss.dask")
    c = CASES[name]
    kw = dict(sample_weight=c["sample_weight"], class_weight=c["class_weight"])
    lazy = mdask.evaluate(scce, da.from_array(c["y_true"], chunks=(1, 1)), da.from_array(c["y_pred"], chunks=(1, 1, 2)),
                          da.from_array(c["mask"], chunks=(1, 1)), reduction=reduction, **kw)
    want = as_float(oracle(c["y_true"], c["y_pred"], c["mask"], c["sample_weight"], c["class_weight"], reduction))
    assert_close(lazy.compute(scheduler="sync"), want, f"dask {name} {reduction}")


def test_ordinary_weights_keep_plain_sums_and_a_zero_exponent():
    # Weights of 0.3 are scaled by 2 inside (power_of_two_scale) and multiplied back exactly:
    # the fields are the plain sums of w * cw * loss, computed here by hand.
    y_true = np.array([[0, 1]])
    y_pred = np.array([[[0.5, 0.5], [0.25, 0.75]]])
    mask = np.ones((1, 2), bool)
    t = totals_of(y_true, y_pred, mask, sample_weight=np.array([0.3]), class_weight=np.array([0.7, 0.1]))
    assert t.exponent.tolist() == [0]
    assert t.numerator.tolist() == [0.3 * 0.7 * -math.log(0.5) + 0.3 * 0.1 * -math.log(0.75)]
    assert t.denominator.tolist() == [0.3 * 0.7 + 0.3 * 0.1]


def test_a_bad_exponent_is_refused():
    one = np.ones(2)
    with pytest.raises(ValueError, match="exponent must have the numerator's shape"):
        maskloss.MaskedTotals(one, one, one, np.zeros(3, dtype=int))
    with pytest.raises(TypeError, match="exponent must be a numpy array of integers"):
        maskloss.MaskedTotals(one, one, one, np.zeros(2))


def test_an_empty_sequence_does_not_set_the_alignment():
    # Found by the CI profile: sequence 1 is all padding (N = D = 0, exponent 0) and sequence 0's
    # true sums (8.9e-162 * 1.5e-151 ~ 1e-312) are subnormal; aligning sequence 0 to exponent 0
    # rounded it to a subnormal and token_mean missed log 2 by 2e-12 (relative).
    y_true = np.zeros((2, 3), int)
    y_pred = np.full((2, 3, 2), 0.5)
    mask = np.array([[False, False, True], [False, False, False]])
    sw, cw = np.array([8.89103500e-162, 9.32292591e-156]), np.array([1.52746818e-151, 3.20333295e-145])
    t = totals_of(y_true, y_pred, mask, sample_weight=sw, class_weight=cw)
    for reduction in SCALAR_REDUCTIONS:
        assert_close(t.value(reduction), as_float(oracle(y_true, y_pred, mask, sw, cw, reduction)), reduction)
    assert float(t.value("token_mean")) == math.log(2)
