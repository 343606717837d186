"""Label-smoothing rules and forms (maskloss.pointwise.smoothed_cross_entropy, the check_loss
options smoothing_rule= and smoothing_form=): a slow loop oracle, torch, and the mirrors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import maskloss
import maskloss.conventions as cv
from maskloss.pointwise import SMOOTHING_FORMS, SMOOTHING_RULES
from maskloss.testing import Bounds, LossCheckError, check_loss
from maskloss.testing.oracles import smoothed_sparse
from tests import real_code

SPARSE = maskloss.sparse_categorical_crossentropy


def loop_oracle(labels, logits, mask, eps, rule, form, pad, reduction):
    """Python loops over every step and class, from the formulas: q, then -sum q log p or KL(q || p)."""
    b_, t_, c_ = logits.shape
    total, count = 0.0, 0
    for b in range(b_):
        for t in range(t_):
            y = int(labels[b, t])
            if not mask[b, t] or (pad is not None and y == pad):
                continue
            top = max(logits[b, t])
            lse = top + math.log(sum(math.exp(v - top) for v in logits[b, t]))
            q = []
            for c in range(c_):
                if rule == "uniform":
                    q.append((1 - eps) * (c == y) + eps / c_)
                elif rule == "others":
                    q.append(1 - eps if c == y else eps / (c_ - 1))
                else:  # others_except_pad (OpenNMT-py)
                    q.append(1 - eps if c == y else (0.0 if c == pad else eps / (c_ - 2)))
            step = 0.0
            for c in range(c_):
                if q[c] > 0:
                    step += q[c] * ((math.log(q[c]) if form == "kl" else 0.0) - (logits[b, t, c] - lse))
            total += step
            count += 1
    return total if reduction == "sum" else (total / count if count else math.nan)


def _batch(seed, b=3, t=4, c=5, pad=1):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (b, t, c))
    labels = rng.integers(0, c, (b, t))
    lengths = rng.integers(0, t + 1, b)
    mask = np.arange(t)[None] < lengths[:, None]
    labels = np.where(mask, labels, pad)
    logits = np.where(mask[..., None], logits, np.nan)  # junk at padding: never read
    return labels, logits, mask


@pytest.mark.parametrize("rule", SMOOTHING_RULES)
@pytest.mark.parametrize("form", SMOOTHING_FORMS)
@pytest.mark.parametrize("reduction", ["sum", "token_mean"])
@pytest.mark.parametrize("seed", range(4))
def test_each_rule_and_form_matches_the_loop_oracle(rule, form, reduction, seed):
    labels, logits, mask = _batch(seed)
    got = smoothed_sparse(labels, logits, mask, from_logits=True, ignore_index=1, label_smoothing=0.2,
                          smoothing_rule=rule, smoothing_form=form, reduction=reduction)
    want = loop_oracle(labels, np.nan_to_num(logits), mask, 0.2, rule, form, 1, reduction)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12) or (math.isnan(got) and math.isnan(want))


@pytest.mark.parametrize("seed", range(3))
def test_uniform_cross_entropy_is_maskloss_and_torch(seed):
    torch = pytest.importorskip("torch")
    labels, logits, mask = _batch(seed, pad=-100)
    ours = smoothed_sparse(labels, logits, mask, from_logits=True, ignore_index=-100, label_smoothing=0.3)
    assert ours == pytest.approx(float(SPARSE(labels, logits, mask, from_logits=True, ignore_index=-100,
                                              label_smoothing=0.3)), rel=1e-12)
    t_logits = torch.from_numpy(np.where(mask[..., None], logits, 0.0).reshape(-1, 5))
    theirs = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(labels.reshape(-1)), ignore_index=-100,
                                               label_smoothing=0.3)
    assert ours == pytest.approx(float(theirs), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_kl_form_is_torch_kl_div(seed):
    """The KL form, OpenNMT-py's way: F.kl_div(log_softmax, q, reduction='sum'), with torch."""
    torch = pytest.importorskip("torch")
    labels, logits, mask = _batch(seed)
    c, pad = 5, 1
    q = torch.full((labels.size, c), 0.2 / (c - 2), dtype=torch.float64)
    q[:, pad] = 0
    t = torch.from_numpy(labels.reshape(-1))
    q.scatter_(1, t.unsqueeze(1), 0.8)
    q.masked_fill_((t == pad).unsqueeze(1), 0)
    out = torch.log_softmax(torch.from_numpy(np.where(mask[..., None], logits, 0.0).reshape(-1, c)), -1)
    theirs = torch.nn.functional.kl_div(out, q, reduction="sum")
    ours = smoothed_sparse(labels, logits, mask, from_logits=True, ignore_index=pad, label_smoothing=0.2,
                           smoothing_rule="others_except_pad", smoothing_form="kl", reduction="sum")
    assert ours == pytest.approx(float(theirs), rel=1e-12)


def test_the_mirrors_are_the_rules():
    """fairseq >= 0.12 is the 'others' rule (a cross-entropy); T5X is 'others' in the KL form."""
    labels, logits, mask = _batch(7, pad=1)
    clean = np.where(mask[..., None], logits, 0.0)
    lprobs = maskloss.pointwise.log_softmax(clean.reshape(-1, 5))
    fairseq, _ = cv.fairseq.label_smoothed_nll_loss(lprobs, labels.reshape(-1), 0.1, ignore_index=1)
    ours = smoothed_sparse(labels, logits, mask, from_logits=True, ignore_index=1, label_smoothing=0.1,
                           smoothing_rule="others", reduction="sum")
    assert ours == pytest.approx(float(fairseq), rel=1e-12)
    t5x, _, _ = cv.t5x.compute_weighted_cross_entropy(clean, labels, mask.astype(float), label_smoothing=0.1)
    ours = smoothed_sparse(labels, logits, mask, from_logits=True, label_smoothing=0.1, smoothing_rule="others",
                           smoothing_form="kl", reduction="sum")
    assert ours == pytest.approx(float(t5x), rel=1e-12)  # T5X's log(low + 1e-20): far below rel 1e-12


def test_opennmt_agrees_and_its_only_finding_is_the_leak():
    """The OpenNMT-py case: with the rule and form stated it agrees; its finding is kl_div's 0 * NaN.
    Selecting the padded rows out of ``output`` first makes it pass every property."""

    def opennmt_selected(target, logits, mask):
        return real_code.opennmt_label_smoothing_loss(target, np.where((target != 1)[..., None], logits, 0.0), mask)

    opts = dict(from_logits=True, ignore_index=1, reduction="sum", label_smoothing=0.1,
                smoothing_rule="others_except_pad", smoothing_form="kl", bounds=Bounds(min_features=3))
    check_loss(opennmt_selected, SPARSE, **opts)
    with pytest.raises(LossCheckError) as info:
        check_loss(opennmt_selected, SPARSE, **{**opts, "smoothing_rule": "others"})
    assert info.value.property == "agreement"
    with pytest.raises(LossCheckError) as info:
        check_loss(opennmt_selected, SPARSE, **{**opts, "smoothing_form": "cross_entropy"})
    assert info.value.property == "agreement"


def test_fairseq_rule_is_not_the_uniform_rule():
    with pytest.raises(LossCheckError, match="agreement"):
        check_loss(real_code.fairseq_label_smoothed_nll, SPARSE, from_logits=True, ignore_index=1, reduction="sum",
                   label_smoothing=0.1)


def test_smoothing_bad_input():
    with pytest.raises(ValueError, match=r"smoothing_rule='others' does not apply to maskloss.mae: it applies to "
                       r".*maskloss\.sparse_categorical_crossentropy"):
        check_loss(real_code.saits_masked_mae_cal, maskloss.mae, smoothing_rule="others")
    with pytest.raises(ValueError, match=r"smoothing_rule='others' contradicts label_smoothing=0"):
        check_loss(real_code.fairseq_label_smoothed_nll, SPARSE, smoothing_rule="others")
    with pytest.raises(ValueError, match=r"smoothing_rule must be one of .*'fairseq'"):
        check_loss(real_code.fairseq_label_smoothed_nll, SPARSE, label_smoothing=0.1, smoothing_rule="fairseq")
    with pytest.raises(ValueError, match=r"smoothing_form must be one of .*'kld'"):
        check_loss(real_code.fairseq_label_smoothed_nll, SPARSE, label_smoothing=0.1, smoothing_form="kld")
    with pytest.raises(ValueError, match=r"'others_except_pad' excludes the pad class.*ignore_index=None"):
        check_loss(real_code.fairseq_label_smoothed_nll, SPARSE, label_smoothing=0.1,
                   smoothing_rule="others_except_pad", bounds=Bounds(min_features=3))
    with pytest.raises(ValueError, match=r"min_features >= 3, got min_features=None"):
        check_loss(real_code.fairseq_label_smoothed_nll, SPARSE, label_smoothing=0.1, ignore_index=1,
                   smoothing_rule="others_except_pad")
    with pytest.raises(ValueError, match=r"ignore_index=-100 to be a class"):
        check_loss(real_code.fairseq_label_smoothed_nll, SPARSE, label_smoothing=0.1, ignore_index=-100,
                   smoothing_rule="others_except_pad", bounds=Bounds(min_features=3))
    with pytest.raises(ValueError, match=r"class_weight"):
        check_loss(real_code.fairseq_label_smoothed_nll, SPARSE, label_smoothing=0.1, smoothing_rule="others",
                   class_weight=[1.0, 2.0], bounds=Bounds(min_features=2, max_features=2))
