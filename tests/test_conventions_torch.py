"""maskloss.conventions.torch against loop oracles and against torch itself (float64).

Tolerances: against the loop oracles ``rtol=1e-11, atol=1e-12`` (different summation
order and forms, e.g. ``log(1-x)`` in the oracle vs ``log1p(-x)``); against torch
``rtol=1e-12, atol=1e-12`` (both float64; observed differences are ~1e-15 relative).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss.conventions import torch as tc
from tests import oracles_frameworks as oracle
from tests.cases import _array, assert_matches

REDUCTIONS = ("none", "mean", "sum")
FRAMEWORK = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-offs dominate on a busy machine
    yield torch
    torch.set_num_threads(threads)


def _t(torch, x):
    return None if x is None else torch.as_tensor(np.asarray(x))


def _class_weight(draw, classes):
    """Class weights in {0} ∪ [1e-3, 3].

    Found by a random run: torch 2.13's label-smoothed ``mean`` divides the *unscaled*
    smoothing sum Σ_c w_c(-log p_c) by Σ w_y before multiplying by eps/C, so it overflows to
    inf when the true result is within a factor C/eps of the float64 maximum (weights like
    [0, 2.2e-308, 0, 1] give 4.67e306 exactly, torch inf). maskloss returns the exact value;
    the comparison stays away from that overflow range.
    """
    weight = _array(draw, (classes,), 0.0, 3.0)
    return np.where(weight < 1e-3, 0.0, weight)


@st.composite
def index_batches(draw, *, garbage: bool = True):
    """torch layout: input (N, C, d1, ...) or (C,), targets with -100 and NaN logits under them."""
    classes = draw(st.integers(2, 5))
    if draw(st.integers(0, 9)) == 0:
        steps: tuple[int, ...] = ()
        x_shape: tuple[int, ...] = (classes,)
    else:
        steps = (draw(st.integers(1, 4)), *draw(st.lists(st.integers(1, 3), max_size=2)))
        x_shape = (steps[0], classes, *steps[1:])
    x = _array(draw, x_shape, -8.0, 8.0)
    n = int(np.prod(steps, dtype=int))
    labels = np.array(draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)), dtype=np.int64)
    ignored = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    labels = np.where(ignored, -100, labels).reshape(steps)
    if garbage and x.ndim > 1:
        moved = np.moveaxis(x, 1, -1)  # a view: NaN logits at the ignored steps
        moved[ignored.reshape(steps)] = np.nan
    weight = _class_weight(draw, classes) if draw(st.booleans()) else None
    eps = draw(st.sampled_from([0.0, 0.1, 0.35, 1.0]))
    return x, labels, weight, eps


@st.composite
def probability_batches(draw):
    classes = draw(st.integers(2, 5))
    batch = draw(st.integers(1, 4))
    extra = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    shape = (batch, classes, *extra)
    x = _array(draw, shape, -8.0, 8.0)
    q = _array(draw, shape, 0.0, 1.0)
    if draw(st.booleans()):
        q = q / np.maximum(q.sum(axis=1, keepdims=True), 1e-12)
    weight = _class_weight(draw, classes) if draw(st.booleans()) else None
    eps = draw(st.sampled_from([0.0, 0.2, 1.0]))
    return x, q, weight, eps


@st.composite
def elementwise_batches(draw, lo: float, hi: float):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    x = _array(draw, shape, lo, hi)
    if lo == 0.0 and draw(st.booleans()):  # exact 0 and 1: the -100 clamp
        x = np.where(_array(draw, shape, 0, 1) < 0.3, np.round(x), x)
    y = _array(draw, shape, 0.0, 1.0)
    weight = None
    if draw(st.booleans()):
        weight = _array(draw, shape[-1:] if draw(st.booleans()) else shape, 0.0, 2.0)
    return x, y, weight


def _check_all(actual_fn, expected, rtol, atol):
    for reduction in REDUCTIONS:
        assert_matches(
            actual_fn(reduction),
            expected[reduction] if isinstance(expected, dict) else expected(reduction),
            rtol=rtol,
            atol=atol,
        )


# --- against the loop oracles ---------------------------------------------------------


@given(index_batches())
def test_cross_entropy_index_targets_match_the_oracle(case):
    x, y, w, eps = case
    expected = oracle.torch_cross_entropy(x, y, w, label_smoothing=eps)
    _check_all(
        lambda r: tc.cross_entropy(x, y, weight=w, reduction=r, label_smoothing=eps), expected, 1e-11, 1e-12
    )


@given(probability_batches())
def test_cross_entropy_probability_targets_match_the_oracle(case):
    x, q, w, eps = case
    expected = oracle.torch_cross_entropy(x, q, w, label_smoothing=eps)
    _check_all(
        lambda r: tc.cross_entropy(x, q, weight=w, reduction=r, label_smoothing=eps), expected, 1e-11, 1e-12
    )


@given(index_batches())
def test_nll_loss_matches_the_oracle(case):
    x, y, w, _ = case
    _check_all(
        lambda r: tc.nll_loss(x, y, weight=w, reduction=r), oracle.torch_nll_loss(x, y, w), 1e-11, 1e-12
    )


@given(elementwise_batches(0.0, 1.0))
def test_binary_cross_entropy_matches_the_oracle(case):
    x, y, w = case
    expected = oracle.torch_binary_cross_entropy(x, y, w)
    _check_all(lambda r: tc.binary_cross_entropy(x, y, weight=w, reduction=r), expected, 1e-11, 1e-12)


@given(elementwise_batches(-30.0, 30.0), st.booleans())
def test_binary_cross_entropy_with_logits_matches_the_oracle(case, with_pos_weight):
    x, y, w = case
    pw = np.linspace(0.5, 3.0, x.shape[-1]) if with_pos_weight else None
    expected = oracle.torch_bce_with_logits(x, y, w, pw)
    _check_all(
        lambda r: tc.binary_cross_entropy_with_logits(x, y, weight=w, reduction=r, pos_weight=pw),
        expected,
        1e-11,
        1e-12,
    )


@pytest.mark.parametrize("kind", ["l1", "mse"])
@given(case=elementwise_batches(-5.0, 5.0), weighted=st.booleans())
def test_regression_matches_the_oracle(kind, case, weighted):
    x, y, _ = case
    w = np.abs(y) if weighted else None
    fn = tc.l1_loss if kind == "l1" else tc.mse_loss
    _check_all(
        lambda r: fn(x, y, reduction=r, weight=w), oracle.torch_regression(kind, x, y, w), 1e-11, 1e-12
    )


# --- against torch -------------------------------------------------------------------


@FRAMEWORK
@given(case=index_batches())
def test_cross_entropy_index_targets_match_torch(torch, case):
    x, y, w, eps = case
    F = torch.nn.functional
    for r in REDUCTIONS:
        expected = F.cross_entropy(
            _t(torch, x), _t(torch, y), weight=_t(torch, w), reduction=r, label_smoothing=eps
        ).numpy()
        assert_matches(tc.cross_entropy(x, y, weight=w, reduction=r, label_smoothing=eps), expected)


@FRAMEWORK
@given(case=probability_batches())
def test_cross_entropy_probability_targets_match_torch(torch, case):
    x, q, w, eps = case
    F = torch.nn.functional
    for r in REDUCTIONS:
        expected = F.cross_entropy(
            _t(torch, x), _t(torch, q), weight=_t(torch, w), reduction=r, label_smoothing=eps
        ).numpy()
        assert_matches(tc.cross_entropy(x, q, weight=w, reduction=r, label_smoothing=eps), expected)


@FRAMEWORK
@given(case=index_batches())
def test_nll_loss_matches_torch(torch, case):
    x, y, w, _ = case
    for r in REDUCTIONS:
        expected = torch.nn.functional.nll_loss(_t(torch, x), _t(torch, y), weight=_t(torch, w), reduction=r)
        assert_matches(tc.nll_loss(x, y, weight=w, reduction=r), expected.numpy())


@FRAMEWORK
@given(case=elementwise_batches(0.0, 1.0))
def test_binary_cross_entropy_matches_torch(torch, case):
    x, y, w = case
    for r in REDUCTIONS:
        expected = torch.nn.functional.binary_cross_entropy(
            _t(torch, x), _t(torch, y), weight=_t(torch, w), reduction=r
        )
        assert_matches(tc.binary_cross_entropy(x, y, weight=w, reduction=r), expected.numpy())


@FRAMEWORK
@given(case=elementwise_batches(-30.0, 30.0), with_pos_weight=st.booleans())
def test_binary_cross_entropy_with_logits_matches_torch(torch, case, with_pos_weight):
    x, y, w = case
    pw = np.linspace(0.5, 3.0, x.shape[-1]) if with_pos_weight else None
    for r in REDUCTIONS:
        expected = torch.nn.functional.binary_cross_entropy_with_logits(
            _t(torch, x), _t(torch, y), weight=_t(torch, w), reduction=r, pos_weight=_t(torch, pw)
        )
        assert_matches(
            tc.binary_cross_entropy_with_logits(x, y, weight=w, reduction=r, pos_weight=pw), expected.numpy()
        )


@FRAMEWORK
@given(case=elementwise_batches(-5.0, 5.0), weighted=st.booleans())
def test_l1_and_mse_match_torch(torch, case, weighted):
    x, y, _ = case
    w = np.abs(y) if weighted else None
    F = torch.nn.functional
    for ours, theirs in ((tc.l1_loss, F.l1_loss), (tc.mse_loss, F.mse_loss)):
        for r in REDUCTIONS:
            expected = theirs(_t(torch, x), _t(torch, y), reduction=r, weight=_t(torch, w)).numpy()
            assert_matches(ours(x, y, reduction=r, weight=w), expected)


@FRAMEWORK
@given(case=index_batches())
def test_core_sparse_crossentropy_token_mean_is_torch_cross_entropy_mean(torch, case):
    """Pins the core: (B, T, C) logits + ignore_index=-100 + class weights + smoothing."""
    x, y, w, eps = case
    if x.ndim < 2:
        return
    expected = torch.nn.functional.cross_entropy(
        _t(torch, x), _t(torch, y), weight=_t(torch, w), label_smoothing=eps
    ).numpy()
    core = maskloss.sparse_categorical_crossentropy(
        y,
        np.moveaxis(x, 1, -1),
        from_logits=True,
        ignore_index=-100,
        class_weight=w,
        label_smoothing=eps,
        reduction="token_mean",
    )
    assert_matches(core, expected)


# --- quirks, each also checked against torch -------------------------------------------


def test_all_ignored_mean_is_nan_and_sum_is_zero(torch):
    x = np.zeros((2, 3))
    y = np.array([-100, -100])
    F = torch.nn.functional
    assert np.isnan(tc.cross_entropy(x, y)) and np.isnan(F.cross_entropy(_t(torch, x), _t(torch, y)).item())
    assert (
        tc.cross_entropy(x, y, reduction="sum")
        == 0.0
        == F.cross_entropy(_t(torch, x), _t(torch, y), reduction="sum").item()
    )
    assert np.isnan(tc.cross_entropy(x, y, label_smoothing=0.2))
    assert np.isnan(tc.nll_loss(x, y))


def test_zero_total_class_weight_gives_nan_mean(torch):
    x = np.array([[1.0, 2.0], [0.5, 0.0]])
    y = np.array([0, 0])
    w = np.array([0.0, 1.0])
    expected = torch.nn.functional.cross_entropy(_t(torch, x), _t(torch, y), weight=_t(torch, w)).item()
    assert np.isnan(expected) and np.isnan(tc.cross_entropy(x, y, weight=w))


def test_binary_cross_entropy_clamps_the_log_at_minus_100(torch):
    x = np.array([0.0, 1.0, 1e-60])
    y = np.array([1.0, 0.0, 1.0])
    ours = tc.binary_cross_entropy(x, y, reduction="none")
    # torch 2.13: tensor([100., 100., 100.]) (log 1e-60 = -138 is clamped too)
    np.testing.assert_array_equal(ours, [100.0, 100.0, 100.0])
    theirs = torch.nn.functional.binary_cross_entropy(_t(torch, x), _t(torch, y), reduction="none").numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_binary_cross_entropy_mean_ignores_the_weights_in_the_denominator():
    # mean of w * l over the 2 elements, not sum(w l) / sum(w): (2 ln 2 + 0 ln 2) / 2
    assert tc.binary_cross_entropy([0.5, 0.5], [1.0, 1.0], weight=[2.0, 0.0]) == pytest.approx(
        np.log(2), 1e-15
    )


def test_a_zero_weight_does_not_hide_nan_but_ignore_index_does(torch):
    x = np.array([[np.nan, 0.0], [1.0, 0.0]])
    F = torch.nn.functional
    bce = tc.binary_cross_entropy_with_logits(x, np.ones_like(x), weight=np.array([[0.0, 1.0], [1.0, 1.0]]))
    assert np.isnan(bce)
    assert np.isnan(
        F.binary_cross_entropy_with_logits(
            _t(torch, x), _t(torch, np.ones_like(x)), weight=_t(torch, np.array([[0.0, 1.0], [1.0, 1.0]]))
        ).item()
    )
    y = np.array([-100, 1])
    assert np.isfinite(tc.cross_entropy(x, y))
    assert tc.cross_entropy(x, y) == pytest.approx(
        F.cross_entropy(_t(torch, x), _t(torch, y)).item(), rel=1e-14
    )


def test_probability_targets_give_nan_for_a_minus_inf_logit_with_zero_target(torch):
    x = np.array([[0.0, -np.inf, 1.0]])
    q = np.array([[0.5, 0.0, 0.5]])
    assert np.isnan(tc.cross_entropy(x, q))
    assert np.isnan(torch.nn.functional.cross_entropy(_t(torch, x), _t(torch, q)).item())


def test_documented_deviation_zero_class_weight_on_a_minus_inf_logit(torch):
    """Index targets use the core's 0 * log 0 = 0: finite here, NaN in torch (see the module docstring)."""
    x = np.array([[0.0, -np.inf, 1.0]])
    y = np.array([0])
    w = np.array([1.0, 0.0, 1.0])
    ours = tc.cross_entropy(x, y, weight=w, label_smoothing=0.1)
    theirs = torch.nn.functional.cross_entropy(
        _t(torch, x), _t(torch, y), weight=_t(torch, w), label_smoothing=0.1
    ).item()
    assert np.isfinite(ours) and np.isnan(theirs)


def test_unbatched_input(torch):
    x = np.array([0.3, -1.0, 2.0])
    ours = tc.cross_entropy(x, np.array(2), reduction="none")
    theirs = torch.nn.functional.cross_entropy(_t(torch, x), torch.tensor(2), reduction="none")
    assert ours.shape == tuple(theirs.shape) == ()
    assert_matches(ours, theirs.numpy())


def test_float32_input_gives_float64_and_inputs_are_not_written():
    x = np.array([[1.0, 2.0, np.nan], [0.0, 1.0, 2.0]], dtype=np.float32).T.copy()  # (3, 2): N=3, C=2
    y = np.array([0, 1, -100])
    x_before, y_before = x.copy(), y.copy()
    out = tc.cross_entropy(x, y, reduction="none")
    assert out.dtype == np.float64 and isinstance(tc.cross_entropy(x, y), np.float64)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


def test_l1_loss_broadcasts_with_a_warning_like_torch():
    with pytest.warns(UserWarning, match="different to the input size"):
        assert tc.l1_loss([[1.0], [3.0]], [0.0, 1.0]) == pytest.approx(1.5)  # |[[1,0],[3,2]]| mean


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: tc.cross_entropy([[0.0, 1.0]], [0], reduction="avg"),
            ValueError,
            "reduction must be one of",
        ),
        (lambda: tc.cross_entropy([[0.0, 1.0]], [0, 1]), ValueError, r"target must have shape \(1,\)"),
        (lambda: tc.cross_entropy([[0.0, 1.0]], [0.0]), TypeError, "must hold integers"),
        (lambda: tc.cross_entropy([[0.0, 1.0]], [2]), ValueError, "outside"),
        (lambda: tc.cross_entropy([[0.0, 1.0]], [[0.5, 0.5]], ignore_index=0), ValueError, "ignore_index"),
        (
            lambda: tc.cross_entropy([[0.0, 1.0]], [0], weight=[1.0]),
            ValueError,
            r"weight must have shape \(2,\)",
        ),
        (lambda: tc.cross_entropy([[0.0, 1.0]], [0], label_smoothing=1.5), ValueError, "label_smoothing"),
        (lambda: tc.binary_cross_entropy([1.5], [1.0]), ValueError, "input should be between 0 and 1"),
        (lambda: tc.binary_cross_entropy([0.5], [[1.0]]), ValueError, "target must have the input's shape"),
        (
            lambda: tc.binary_cross_entropy_with_logits([0.5, 1.0], [1.0, 0.0], pos_weight=[1.0, 2.0, 3.0]),
            ValueError,
            "pos_weight",
        ),
        (lambda: tc.mse_loss([1.0, 2.0], [1.0, 2.0], weight=[1.0]), ValueError, "weight must have"),
    ],
)
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_torch_label_smoothing_mean_overflows_before_the_true_value_does(torch):
    # Pinned finding (torch 2.13.0): the smoothed mean divides the unscaled smoothing sum by
    # Σ w_y before scaling by eps/C, so it overflows while the true value, 1.0397e307, is finite.
    F = torch.nn.functional
    x = np.zeros((3, 4))
    y = np.array([0, 0, 1])
    w = np.array([0.0, 1e-308, 0.0, 1.0])
    real = F.cross_entropy(torch.tensor(x), torch.tensor(y), weight=torch.tensor(w), label_smoothing=0.1)
    assert np.isinf(real.item())
    # By hand: 0.9·ln 4 + (0.1/4)·(1 + 1e-308)·ln 4·3 / 1e-308.
    exact = 0.9 * np.log(4) + 0.1 / 4 * np.log(4) * 3 / 1e-308
    ours = tc.cross_entropy(x, y, weight=w, label_smoothing=0.1)
    assert np.isfinite(ours)
    assert ours == pytest.approx(exact, rel=1e-12)


@st.composite
def any_weight_batches(draw):
    """Index batches with class weights the core rejects: negative, mixed sign, summing to 0."""
    x, labels, _, eps = draw(index_batches())
    classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    weight = np.array(draw(st.lists(st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]),
                                    min_size=classes, max_size=classes)))
    if not np.any(weight < 0):
        weight[0] = -1.5
    return x, labels, weight, eps


@FRAMEWORK
@given(case=any_weight_batches())
def test_negative_and_zero_sum_class_weights_match_torch(torch, case):
    # torch accepts any real class weights; the mirror reproduces its arithmetic, including the
    # inf or NaN of a zero weight sum (torch: sum / total_weight).
    x, y, w, eps = case
    F = torch.nn.functional
    for r in REDUCTIONS:
        expected = F.cross_entropy(_t(torch, x), _t(torch, y), weight=_t(torch, w), reduction=r,
                                   label_smoothing=eps).numpy()
        assert_matches(tc.cross_entropy(x, y, weight=w, reduction=r, label_smoothing=eps), expected)
        expected = F.nll_loss(_t(torch, x), _t(torch, y), weight=_t(torch, w), reduction=r).numpy()
        assert_matches(tc.nll_loss(x, y, weight=w, reduction=r), expected)


def test_zero_weight_sum_gives_torch_inf_not_nan(torch):
    x = np.array([[0.1, 0.5, -0.2], [1.0, 0.0, 0.3]])
    y = np.array([0, 1])
    w = np.array([-1.0, 1.0, 0.0])
    for kwargs in ({}, {"label_smoothing": 0.2}):
        expected = torch.nn.functional.cross_entropy(_t(torch, x), _t(torch, y), weight=_t(torch, w), **kwargs)
        assert np.isinf(expected.item())
        assert tc.cross_entropy(x, y, weight=w, **kwargs) == expected.item()
    assert tc.nll_loss(x, y, weight=w) == torch.nn.functional.nll_loss(_t(torch, x), _t(torch, y),
                                                                       weight=_t(torch, w)).item()


def test_class_weight_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        tc.cross_entropy(np.zeros((2, 3)), [0, 1], weight=[1.0, 2.0])
