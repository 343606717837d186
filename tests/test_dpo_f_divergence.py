"""DPO's f-divergence scores (issue 20): the core dpo_loss and the TRL mirror, a loop oracle and TRL 1.16.

TRL's own ``DPOTrainer._compute_loss`` runs unbound on the stand-in of ``maskloss.conformance.trl``.
``reverse_kl``, ``forward_kl`` and ``js_divergence`` are compared in float64 (``rel=1e-12``);
``alpha_divergence`` only exists in float32 in TRL 1.16 (its clamp table has no float64 entry), so
it is compared on float32 log-probs with a float32 tolerance (``rel=2e-5``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import maskloss
from maskloss.conventions import trl as conv


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _score(rho, kind, alpha):
    """f'(t) at t = exp(rho), written from the f-DPO definitions (not from the code under test)."""
    t = math.exp(rho) if kind != "js_divergence" else None
    if kind == "reverse_kl" or (kind == "alpha_divergence" and alpha == 1.0):
        return rho
    if kind == "forward_kl":
        return 1.0 - 1.0 / t
    if kind == "js_divergence":
        return math.log(2.0) + _log_sigmoid(rho)  # log(2t / (1 + t))
    return (t ** (alpha - 1.0) - 1.0) / (alpha - 1.0)


def _loop_dpo(chosen, rejected, ref_c, ref_r, beta, kind, alpha, loss_type="sigmoid", eps=0.0):
    out = []
    for c, r, rc, rr in zip(chosen, rejected, ref_c, ref_r, strict=True):
        h = _score(c - rc, kind, alpha) - _score(r - rr, kind, alpha)
        if loss_type == "ipo":
            out.append((h - 1.0 / (2.0 * beta)) ** 2)
        else:
            out.append(-(1.0 - eps) * _log_sigmoid(beta * h) - eps * _log_sigmoid(-beta * h))
    return out


KINDS = [("reverse_kl", 0.5), ("forward_kl", 0.5), ("js_divergence", 0.5), ("alpha_divergence", 0.5),
         ("alpha_divergence", 0.2), ("alpha_divergence", 2.0), ("alpha_divergence", 1.0)]


def _pairs(seed, pairs=4):
    rng = np.random.default_rng(seed)
    ref_c, ref_r = rng.normal(-8, 2, (2, pairs))
    return ref_c + rng.normal(0, 1.5, pairs), ref_r + rng.normal(0, 1.5, pairs), ref_c, ref_r


@pytest.mark.parametrize(("kind", "alpha"), KINDS)
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
@pytest.mark.parametrize("seed", range(3))
def test_core_dpo_loss_f_divergences_match_the_loop(kind, alpha, loss_type, seed):
    c, r, rc, rr = _pairs(seed)
    got = maskloss.dpo_loss(c, r, rc, rr, beta=0.3, loss_type=loss_type, label_smoothing=0.1 * (loss_type == "sigmoid"),
                            f_divergence_type=kind, f_alpha_divergence_coef=alpha)
    want = _loop_dpo(c, r, rc, rr, 0.3, kind, alpha, loss_type, eps=0.1 * (loss_type == "sigmoid"))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_reverse_kl_is_the_default_and_alpha_one_is_reverse_kl():
    c, r, rc, rr = _pairs(7)
    base = maskloss.dpo_loss(c, r, rc, rr)
    np.testing.assert_array_equal(maskloss.dpo_loss(c, r, rc, rr, f_divergence_type="reverse_kl"), base)
    np.testing.assert_array_equal(
        maskloss.dpo_loss(c, r, rc, rr, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1.0), base)
    near = maskloss.dpo_loss(c, r, rc, rr, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1 + 1e-9)
    np.testing.assert_allclose(near, base, rtol=1e-7)  # the limit is continuous (expm1 keeps it accurate)


def test_core_f_divergence_errors_name_the_argument():
    args = ([-1.0], [-2.0], [-1.0], [-1.0])
    with pytest.raises(ValueError, match=r"f_divergence_type must be one of 'reverse_kl', .*; got 'kl'"):
        maskloss.dpo_loss(*args, f_divergence_type="kl")
    with pytest.raises(TypeError, match=r"f_alpha_divergence_coef must be a real number, got '0.5'"):
        maskloss.dpo_loss(*args, f_divergence_type="alpha_divergence", f_alpha_divergence_coef="0.5")
    with pytest.raises(ValueError, match=r"f_alpha_divergence_coef must be finite, got nan"):
        maskloss.dpo_loss(*args, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=float("nan"))
    with pytest.raises(ValueError, match=r"the alpha_divergence score of log-ratio 800.0 \(pair 0\) overflows float64"):
        maskloss.dpo_loss([0.0], [0.0], [-800.0], [0.0], f_divergence_type="alpha_divergence",
                          f_alpha_divergence_coef=2.0)


@pytest.mark.parametrize(("kind", "alpha"), KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_mirror_sigmoid_is_the_core_mean(kind, alpha, seed):
    c, r, rc, rr = _pairs(seed)
    core = maskloss.dpo_loss(c, r, rc, rr, beta=0.1, f_divergence_type=kind, f_alpha_divergence_coef=alpha).mean()
    mirror = conv.dpo_loss(c, r, rc, rr, beta=0.1, f_divergence_type=kind, f_alpha_divergence_coef=alpha)
    assert float(mirror) == pytest.approx(float(core), rel=1e-12)


def test_mirror_clamps_the_alpha_exponent_at_80_like_trl():
    # log-ratio 100 with alpha 2: TRL's score is (exp(80) - 1) / 1, not exp(100) - 1
    got = conv.dpo_loss([100.0], [0.0], [0.0], [0.0], beta=1e-30, f_divergence_type="alpha_divergence",
                        f_alpha_divergence_coef=2.0)
    margin = math.expm1(80.0)
    assert float(got) == pytest.approx(-_log_sigmoid(1e-30 * margin), rel=1e-12)
    with pytest.raises(ValueError, match=r"Unknown f_divergence_type: 'kl'"):
        conv.dpo_loss([0.0], [0.0], [0.0], [0.0], f_divergence_type="kl")


# --- TRL 1.16 itself


def _trl_case(seed, pairs=3, steps=6, scale=1.0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, steps, 2 * pairs)
    completion_mask = np.arange(steps)[None] >= steps - lengths[:, None]
    shifted = completion_mask[:, 1:]
    per_token = np.where(shifted, rng.normal(-2, 1, shifted.shape), 0.0)
    seq = per_token.sum(1)
    ref = seq + scale * rng.normal(0, 1.5, 2 * pairs)  # log-ratios of a few nats (or many, with scale)
    return per_token, completion_mask, ref[:pairs], ref[pairs:]


def _both(per_token, completion_mask, ref_c, ref_r, loss_type, beta, kind, alpha, dtype):
    from maskloss.conformance.trl import trl_dpo_loss

    per_token = per_token.astype(dtype)
    ref_c, ref_r = ref_c.astype(dtype), ref_r.astype(dtype)
    theirs = trl_dpo_loss(per_token, completion_mask, ref_c, ref_r, loss_type, beta, f_divergence_type=kind,
                          f_alpha_divergence_coef=alpha, dtype=dtype)
    pairs = ref_c.shape[0]
    seq, counts = per_token.astype(np.float64).sum(1), completion_mask.sum(1)
    ours = conv.dpo_loss(seq[:pairs], seq[pairs:], ref_c, ref_r, beta=beta, loss_type=loss_type,
                         chosen_lengths=counts[:pairs], rejected_lengths=counts[pairs:], f_divergence_type=kind,
                         f_alpha_divergence_coef=alpha)
    return float(ours), theirs


@pytest.mark.framework("trl")
@pytest.mark.parametrize("kind", ["reverse_kl", "forward_kl", "js_divergence"])
@pytest.mark.parametrize("loss_type", conv.DPO_LOSS_TYPES)
@pytest.mark.parametrize("seed", range(3))
def test_mirror_matches_trl_in_float64(kind, loss_type, seed):
    pytest.importorskip("trl")
    ours, theirs = _both(*_trl_case(seed), loss_type, 0.1, kind, 0.5, np.float64)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-14)


@pytest.mark.framework("trl")
@pytest.mark.parametrize("alpha", [0.5, 0.2, 2.0, 1.0, 1.0 + 1e-7])
@pytest.mark.parametrize("loss_type", conv.DPO_LOSS_TYPES)
@pytest.mark.parametrize(("seed", "scale"), [(0, 1.0), (1, 1.0), (2, 60.0)])  # scale 60: the clamp at 80 bites
def test_mirror_matches_trl_alpha_divergence_in_float32(alpha, loss_type, seed, scale):
    pytest.importorskip("trl")
    ours, theirs = _both(*_trl_case(seed, scale=scale), loss_type, 0.1, "alpha_divergence", alpha, np.float32)
    if math.isinf(theirs):  # ipo squares a clamped score of ~e^80: float32 overflows in TRL, float64 does not
        # float(...): a Python float ours > a float32 max would cast ours to float32 and warn (overflow)
        assert loss_type == "ipo" and scale > 1 and ours > float(np.finfo(np.float32).max)
        return
    assert ours == pytest.approx(theirs, rel=2e-5, abs=1e-6)


@pytest.mark.framework("trl")
def test_trl_has_no_float64_alpha_divergence():
    """The reason the alpha comparison is in float32: TRL 1.16's clamp table has no float64 key."""
    pytest.importorskip("trl")
    from maskloss.conformance.trl import trl_dpo_loss

    per_token, mask, ref_c, ref_r = _trl_case(0)
    with pytest.raises(KeyError):
        trl_dpo_loss(per_token, mask, ref_c, ref_r, "sigmoid", 0.1, f_divergence_type="alpha_divergence")
