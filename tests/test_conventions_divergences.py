"""The KL / entropy mirrors (torch ``kl_div``, optax's KLs, TRL's entropy and selective log-softmax).

Each against a loop oracle (the formula as the framework's source writes it, one element at a
time) and against the installed framework in float64: torch 2.13, optax 0.2.8 (jax x64), TRL
1.16. Tolerance ``rtol=1e-12`` (same formulas, summation order only).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from maskloss.conventions import optax as ox
from maskloss.conventions import torch as tc
from maskloss.conventions import trl as trl_conv


def _dist(rng, shape):
    x = rng.normal(0, 2, shape)
    p = np.exp(x - x.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def _loop_kl_div(x, y, log_target):
    """torch's ATen kl_div, one element at a time (xlogy(y, y) - y x, or e^y (y - x))."""
    out = np.empty(x.shape)
    for i in np.ndindex(x.shape):
        a, b = float(x[i]), float(y[i])
        if log_target:
            out[i] = math.exp(b) * (b - a) if not (b == -math.inf and a == -math.inf) else math.nan
        else:
            xlogy = 0.0 if b == 0 else b * math.log(b)
            out[i] = xlogy - (b * a if not (b == 0 and math.isinf(a)) else math.nan)
    return out


CASES = [(False, "none"), (False, "sum"), (False, "mean"), (False, "batchmean"), (True, "batchmean"), (True, "none")]


@pytest.mark.parametrize("log_target,reduction", CASES)
def test_torch_kl_div_matches_the_loop_oracle_and_torch(log_target, reduction):
    rng = np.random.default_rng(0)
    log_p = np.log(_dist(rng, (4, 3, 5)))
    q = _dist(rng, (4, 3, 5))
    q[0, 0, :2] = 0.0  # targets of 0 (xlogy(0, 0) = 0)
    log_p[1, 1, 0] = -np.inf  # a target > 0 on an input of -inf: inf
    with np.errstate(divide="ignore"):
        target = np.log(q) if log_target else q
    ours = tc.kl_div(log_p, target, reduction=reduction, log_target=log_target)
    elements = _loop_kl_div(log_p, target, log_target)
    oracle = {"none": elements, "sum": elements.sum(), "mean": elements.mean(),
              "batchmean": elements.sum() / log_p.shape[0]}[reduction]
    np.testing.assert_allclose(ours, oracle, rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's warning about reduction="mean"
        theirs = torch.nn.functional.kl_div(torch.tensor(log_p), torch.tensor(target), reduction=reduction,
                                            log_target=log_target)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12)


def test_torch_kl_div_keeps_the_nan_of_zero_times_minus_inf():
    x, y = np.array([[-np.inf, 0.0]]), np.array([[0.0, 1.0]])
    ours = tc.kl_div(x, y, reduction="none")
    theirs = torch.nn.functional.kl_div(torch.tensor(x), torch.tensor(y), reduction="none").numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    assert np.isnan(ours[0, 0])


@pytest.fixture(scope="module")
def optax_call():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")

    def call(name, *arrays, **kwargs):
        fn = getattr(optax.losses, name)
        with jax.enable_x64(True), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            args = [jax.numpy.asarray(a, dtype=jax.numpy.float64) for a in arrays]
            where = kwargs.pop("where", None)
            return np.asarray(fn(*args, where=None if where is None else jax.numpy.asarray(where), **kwargs))

    return call


@pytest.mark.parametrize("name", ["kl_divergence", "kl_divergence_with_log_targets", "generalized_kl_divergence",
                                  "convex_kl_divergence"])
@pytest.mark.parametrize("mode", ["no where", "row where", "element where", "axis None"])
def test_optax_kls_match_the_loop_oracle_and_optax(optax_call, name, mode):
    rng = np.random.default_rng(1)
    log_p = np.log(_dist(rng, (3, 4, 5)))
    q = _dist(rng, (3, 4, 5))
    q[0, 0, 0] = 0.0
    with np.errstate(divide="ignore"):
        second = np.log(q) if name == "kl_divergence_with_log_targets" else q
    kwargs = {}
    where = np.ones(q.shape, dtype=bool)
    if mode == "row where":
        where = np.broadcast_to(rng.random((3, 4, 1)) < 0.7, q.shape)
        kwargs["where"] = where[..., :1]
        second = second.copy()
        second[~where] = np.nan  # garbage optax's where never sums
    elif mode == "element where":
        where = rng.random(q.shape) < 0.7
        kwargs["where"] = where
    elif mode == "axis None":
        kwargs["axis"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ours = getattr(ox, name)(log_p, second, **kwargs)
    # the oracle: optax's element formula, then the sum over the included classes
    elements = np.empty(q.shape)
    for i in np.ndindex(q.shape):
        lp, t = float(log_p[i]), float(second[i])
        if name == "kl_divergence_with_log_targets":
            elements[i] = math.exp(t) * (t - lp)
        else:
            elements[i] = t * ((0.0 if t == 0 else math.log(t)) - lp)
            if name in ("generalized_kl_divergence", "convex_kl_divergence"):
                elements[i] += math.exp(lp) - t
    elements = np.where(where, elements, 0.0)
    oracle = elements.sum() if mode == "axis None" else elements.sum(-1)
    np.testing.assert_allclose(ours, oracle, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours, optax_call(name, log_p, second, **kwargs), rtol=1e-12, atol=1e-15)


def test_optax_kl_where_is_plain_broadcasting_and_says_so():
    q = np.full((2, 3, 4), 0.25)
    with pytest.raises(ValueError, match="trailing axis of 1"):
        ox.kl_divergence(np.log(q), q, where=np.ones((2, 3), dtype=bool))
    with pytest.raises(TypeError, match="floating point"):
        ox.kl_divergence(np.zeros((2, 2), dtype=int), q[0, :2, :2])
    with pytest.warns(DeprecationWarning, match="generalized_kl_divergence"):
        ox.convex_kl_divergence(np.log(q), q)


def test_trl_entropy_and_selective_log_softmax_match_trl():
    from trl.trainer import utils

    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (3, 5, 7))
    logits[0, 0, 3] = -np.inf  # TRL's entropy is NaN there (0 * -inf); the mirror too
    index = rng.integers(0, 7, (3, 5))
    row_mask = rng.random((3, 5)) < 0.7
    t = torch.tensor(logits)
    theirs = utils.entropy_from_logits(t).numpy()
    ours = trl_conv.entropy_from_logits(logits)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert np.isnan(ours[0, 0])
    for temperature in (1.0, 0.7):
        for mask in (None, row_mask):
            ref = utils.selective_log_softmax(t, torch.tensor(index), temperature=temperature,
                                              row_mask=None if mask is None else torch.tensor(mask))
            got = trl_conv.selective_log_softmax(logits, index, temperature=temperature, row_mask=mask)
            np.testing.assert_allclose(got, ref.numpy(), rtol=1e-12, atol=1e-14)
    topk = rng.integers(0, 7, (3, 5, 2))
    np.testing.assert_allclose(trl_conv.selective_log_softmax(logits, topk),
                               utils.selective_log_softmax(t, torch.tensor(topk)).numpy(), rtol=1e-12)
    lp, h = utils.selective_log_softmax_and_entropy(t, torch.tensor(index), temperature=1.3,
                                                    row_mask=torch.tensor(row_mask))
    our_lp, our_h = trl_conv.selective_log_softmax_and_entropy(logits, index, temperature=1.3, row_mask=row_mask)
    np.testing.assert_allclose(our_lp, lp.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(our_h, h.numpy(), rtol=1e-12, atol=1e-14)


def test_trl_selective_log_softmax_ignores_nan_rows_under_the_row_mask_and_rejects_bad_input():
    logits = np.zeros((2, 3))
    logits[1] = np.nan
    got = trl_conv.selective_log_softmax(logits, [0, 1], row_mask=[1, 0])
    # -log1p(2) (log_softmax's form) is within one ulp of -log(3); numpy's float64 log1p kernels
    # (AVX-512F or not) round it differently, so one ulp, not bit-equality. The masked row is exactly 0.
    np.testing.assert_allclose(got[0], -math.log(3), rtol=2.3e-16, atol=0)
    assert got[1] == 0.0
    with pytest.raises(ValueError, match="temperature must be positive"):
        trl_conv.selective_log_softmax(logits, [0, 1], temperature=0.0)
    with pytest.raises(ValueError, match=r"index must lie in \[0, 3\)"):
        trl_conv.selective_log_softmax(logits, [0, 3])
