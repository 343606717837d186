"""Float64 truth at the edges: per-step values and gradients against mpmath at 800 digits.

The goal: every per-step value and gradient within 1e-12 relative of the exact value for
finite inputs (a gradient entry that is a genuine difference, such as ``T p_c - k_c``
under label smoothing, is held to 1e-12 of the size of its terms). The exact values
are computed here with mpmath from the definitions, never from maskloss.
"""

from __future__ import annotations

import numpy as np
import pytest

import maskloss

mpmath = pytest.importorskip("mpmath")
mp = mpmath.mp
mp.dps = 800  # enough for 1 - p at p = 1 - 1e-303 (logits 700 apart)
RTOL = 1e-12


def _softmax(x):
    xs = [mpmath.mpf(float(v)) for v in x]
    m = max(xs)
    e = [mpmath.exp(v - m) for v in xs]
    total = mpmath.fsum(e)
    return [v / total for v in e], [v - m - mpmath.log(total) for v in xs]


def exact_sparse(x, y, eps=0.0, cw=None):
    """torch's label-smoothed, class-weighted CE of one row of logits, and d/dx."""
    c = len(x)
    cw = [mpmath.mpf(1)] * c if cw is None else [mpmath.mpf(float(v)) for v in cw]
    p, logp = _softmax(x)
    eps = mpmath.mpf(eps)
    k = [eps / c * cw[i] + ((1 - eps) * cw[y] if i == y else 0) for i in range(c)]
    loss = -mpmath.fsum(ki * li for ki, li in zip(k, logp, strict=True))
    t = mpmath.fsum(k)
    grad = [t * pi - ki for pi, ki in zip(p, k, strict=True)]
    terms = [abs(t * pi) + abs(ki) for pi, ki in zip(p, k, strict=True)]
    return loss, grad, terms


def _close(got, exact, scale=None):
    exact = float(exact)
    bound = RTOL * (abs(exact) if scale is None else float(scale))
    assert abs(float(got) - exact) <= bound, (float(got), exact)


def _sparse(x, y, **options):
    logits = np.array([[x]], dtype=np.float64)
    labels = np.array([[y]])
    loss = maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True, reduction="none", **options)
    _, grad = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
        labels, logits, from_logits=True, reduction="sum", **options)
    return loss[0, 0], grad[0, 0]


@pytest.mark.parametrize(
    ("x", "y", "eps"),
    [
        ([1e308, -1e308, 0.0], 0, 0.1),   # x - max x overflows; the exact value is 1e307-ish
        ([30.0, -1e4, 1.0], 0, 0.0),      # a tiny loss: log1p, not log(1 + tiny)
        ([40.0, 0.0], 0, 0.0),            # a confident step: 4.2e-18, not -0.0
        ([-5.0, 3.0, 2.5, 700.0, -700.0], 3, 0.0),
        ([0.1, 0.2, 0.3], 1, 0.3),
        ([1e10, 1e10 + 1.0, -3.0], 0, 0.05),
    ],
)
def test_sparse_cross_entropy_from_logits_is_exact(x, y, eps):
    loss, grad = _sparse(x, y, label_smoothing=eps)
    exact, exact_grad, terms = exact_sparse(x, y, eps)
    _close(loss, exact)
    assert loss > 0
    for g, e, size in zip(grad, exact_grad, terms, strict=True):
        _close(g, e, size if eps else None)


def test_class_weighted_smoothed_rows_are_exact_at_random():
    rng = np.random.default_rng(11)
    for _ in range(40):
        c = int(rng.integers(2, 9))
        x = rng.normal(size=c) * rng.choice([0.1, 3.0, 30.0, 300.0])
        y = int(rng.integers(c))
        cw = rng.uniform(0.1, 3.0, size=c)
        eps = float(rng.choice([0.0, 0.1, 0.5]))
        loss, grad = _sparse(list(x), y, label_smoothing=eps, class_weight=cw)
        exact, exact_grad, terms = exact_sparse(x, y, eps, cw)
        # The reduction "none" value is the numerator term w·l; with class weights that is l itself.
        _close(loss, exact)
        # With reduction "sum" the gradient is d(sum of numerators) = the per-step gradient.
        for g, e, size in zip(grad, exact_grad, terms, strict=True):
            _close(g, e, size)


def test_dense_cross_entropy_from_logits_is_exact():
    for x, q in [([1e308, -1e308, 0.0], [0.2, 0.3, 0.5]), ([30.0, -1e4, 1.0], [1.0, 0.0, 0.0]),
                 ([40.0, 0.0], [1.0, 0.0])]:
        loss = maskloss.categorical_crossentropy([[q]], [[x]], from_logits=True, reduction="none")[0, 0]
        _, grad = maskloss.value_and_grad(maskloss.categorical_crossentropy)(
            [[q]], [[x]], from_logits=True, reduction="sum")
        p, logp = _softmax(x)
        qs = [mpmath.mpf(v) for v in q]
        _close(loss, -mpmath.fsum(a * b for a, b in zip(qs, logp, strict=True)))
        total = mpmath.fsum(qs)
        for g, pi, qi in zip(grad[0, 0], p, qs, strict=True):
            _close(g, total * pi - qi)


def test_binary_cross_entropy_of_probabilities_uses_log1p():
    loss = maskloss.binary_crossentropy([[[0.0]]], [[[1e-10]]], reduction="none")[0, 0]
    _close(loss, -mpmath.log1p(-mpmath.mpf(1e-10)))
    for y, p in [(0.0, 1e-10), (0.3, 0.999999), (1.0, 0.5), (0.25, 1e-300)]:
        loss = maskloss.binary_crossentropy([[[y]]], [[[p]]], reduction="none")[0, 0]
        yy, pp = mpmath.mpf(y), mpmath.mpf(p)
        exact = -(yy * mpmath.log(pp) + (1 - yy) * mpmath.log(1 - pp))
        _close(loss, exact)


@pytest.mark.parametrize(("x", "y"), [(40.0, 1.0), (-40.0, 0.0), (700.0, 1.0), (3.0, 0.25), (-2.0, 1.0), (0.0, 0.5)])
def test_binary_cross_entropy_with_logits_value_and_gradient_are_exact(x, y):
    value, grad = maskloss.value_and_grad(maskloss.binary_crossentropy)(
        [[[y]]], [[[x]]], from_logits=True, reduction="sum")
    xx, yy = mpmath.mpf(x), mpmath.mpf(y)
    sig = 1 / (1 + mpmath.exp(-xx))
    exact = -(yy * mpmath.log(sig) + (1 - yy) * mpmath.log(1 - sig))  # 1 - sig is exact at 800 digits
    _close(value, exact)
    _close(grad[0, 0, 0], sig - yy)


@pytest.mark.parametrize(
    ("w", "bitwise"),
    [(5e-324, True), (2.0**1023, True), (2.0**-1060, True),      # powers of two: exactly the unweighted loss
     (1e308, False), (np.finfo(np.float64).max, False), (1e-310, False), (3.0, False)],
)
@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
def test_a_uniform_sample_weight_cancels(w, bitwise, reduction):
    # A power of two cancels bit for bit; any other uniform weight to a few ulps (its
    # mantissa rounds each product once), where it used to give NaN (inf/inf) or lose 5%.
    check = (lambda a, b: np.testing.assert_array_equal(a, b)) if bitwise else (
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-15, atol=0))
    rng = np.random.default_rng(3)
    y_true, y_pred = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    plain = maskloss.mse(y_true, y_pred, mask, reduction=reduction)
    check(maskloss.mse(y_true, y_pred, mask, reduction=reduction, sample_weight=np.full(3, w)), plain)
    vg = maskloss.value_and_grad(maskloss.mse)
    _, g_plain = vg(y_true, y_pred, mask, reduction=reduction)
    _, g_weighted = vg(y_true, y_pred, mask, reduction=reduction, sample_weight=np.full((3, 4), w))
    check(g_weighted, g_plain)
    losses = np.abs(y_true - y_pred).mean(-1)
    check(maskloss.reduce(losses, mask, reduction=reduction, sample_weight=w),
          maskloss.reduce(losses, mask, reduction=reduction))


def test_scale_dependent_reductions_keep_the_weight():
    # "sum" of one step of loss 1 with weight 2^-1074: exactly 2^-1074 (the weight times the loss).
    assert maskloss.mse([[[1.0]]], [[[0.0]]], reduction="sum", sample_weight=[5e-324]) == 5e-324
    assert maskloss.mse([[[1.0]]], [[[0.0]]], reduction="batch_mean", sample_weight=[1e308]) == 1e308


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
def test_a_subnormal_denominator_gives_a_finite_gradient(reduction):
    # A class weight at the smallest normal float64 times a sample weight of 0.25 puts
    # the third sequence's D_b in the subnormal range, where 1/D_b overflows (found by
    # hypothesis, seed 89; sequence_mean failed, token_mean's D is normal here). The gradient
    # factor w/D_b <= 1/cw is finite; the exact answer is the same loss with every class
    # weight multiplied by 2**1000 (exact), which leaves both reductions unchanged.
    tiny = np.finfo(np.float64).tiny
    labels = np.array([[0, 0], [0, 0], [1, 0]])
    logits = np.ones((3, 2, 2))
    logits[:, :, 0] = [[0.3, -1.2], [2.0, 0.1], [0.7, -0.4]]
    mask = np.ones((3, 2), dtype=bool)
    weight = np.array([[0.0, 0.0], [0.0, 1.0], [0.25, 0.0]])
    loss = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)
    kwargs = dict(from_logits=True, sample_weight=weight, reduction=reduction)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grad = loss(labels, logits, mask, class_weight=np.array([1.0, tiny]), **kwargs)
    exact_value, exact_grad = loss(labels, logits, mask, class_weight=np.ldexp([1.0, tiny], 1000), **kwargs)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, exact_value, rtol=1e-13)
    np.testing.assert_allclose(grad, exact_grad, rtol=1e-13, atol=1e-300)


def test_a_step_with_class_weight_0_gets_gradient_0_when_the_factor_overflows():
    # token_mean with class weights [1e-310, 0]: D = sum of w * cw_y is subnormal, so each
    # step's factor w/D overflows to inf. The step labelled with the class of weight 0 does
    # not depend on its logits at all (no label smoothing): its gradient is exactly 0, and
    # must not become 0 * inf = NaN. (The other step's gradient w*cw*(p - onehot)/D also needs
    # more range than w/D has, so only its class-weight-0 neighbour is pinned here.)
    labels = np.array([[0, 1]])
    logits = np.array([[[0.3, -1.2], [2.0, 0.1]]])
    loss = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)
    with np.errstate(over="ignore", invalid="ignore"):
        value, grad = loss(labels, logits, from_logits=True, class_weight=np.array([1e-310, 0.0]))
    assert np.isfinite(value)
    np.testing.assert_array_equal(grad[0, 1], [0.0, 0.0])
