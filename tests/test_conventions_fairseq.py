"""fairseq label_smoothed_nll_loss and the trainer's normalisation (maskloss.conventions.fairseq).

fairseq cannot be installed here (its last release does not build for this Python/torch),
so the proof is (a) the loop oracle in ``oracles_golden.py`` written from
``fairseq/criterions/label_smoothed_cross_entropy.py`` (both rules), (b) hand-derived
cases, and (c) fairseq's function body (plain torch) run with the installed torch, plus
torch's own ``cross_entropy(label_smoothing=...)``, which equals both rules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskloss.conventions.fairseq import label_smoothed_nll_loss, sample_size, update_loss
from tests.oracles_golden import fairseq_label_smoothed, padded_batches

VERSIONS = {"0.10.2": False, "0.12.2": True}  # version -> uses the eps/(V-1) rule
EPS = st.sampled_from([0.0, 0.1, 0.3])
PAD = 1  # fairseq's usual padding_idx


def _padded(case):
    """Targets with the padding id at padded steps (fairseq pads targets, not weights)."""
    return np.where(case["valid"], case["targets"], PAD)


@given(
    case=padded_batches(fractional=False),
    eps=EPS,
    version=st.sampled_from(sorted(VERSIONS)),
    ignore=st.booleans(),
    reduce=st.booleans(),
)
def test_matches_the_loop_oracle(case, eps, version, ignore, reduce):
    target = _padded(case) if ignore else np.where(case["valid"], case["targets"], 0)
    lprobs = case["logits"] if ignore else np.where(case["valid"][..., None], case["logits"], -1.0)
    loss, nll = label_smoothed_nll_loss(
        lprobs, target, eps, ignore_index=PAD if ignore else None, reduce=reduce, version=version
    )
    total, total_nll, per_loss, per_nll = fairseq_label_smoothed(
        lprobs, target, eps, PAD if ignore else None, VERSIONS[version]
    )
    if reduce:
        assert loss == pytest.approx(total, rel=1e-12, abs=1e-12)
        assert nll == pytest.approx(total_nll, rel=1e-12, abs=1e-12)
        assert isinstance(loss, np.float64) and isinstance(nll, np.float64)
    else:
        shape = target.shape + ((1,) if ignore else ())  # fairseq squeezes only without ignore_index
        assert loss.shape == shape and nll.shape == shape
        np.testing.assert_allclose(loss.ravel(), per_loss, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(nll.ravel(), per_nll, rtol=1e-12, atol=1e-12)


LP = np.log([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
L = math.log(2)


def test_hand_derived_values_both_rules():
    # Token 0: gold p = 1/2 -> nll = L; smooth = ln 2 + ln 4 + ln 4 = 5L. Token 1 is padding (target 1).
    new, nll = label_smoothed_nll_loss(LP, [0, 1], 0.1, ignore_index=1)
    assert nll == pytest.approx(L, rel=1e-15)
    assert new == pytest.approx((1 - 0.1 - 0.05) * L + 0.05 * 5 * L, rel=1e-14)  # eps/(V-1) = 0.05
    old, _ = label_smoothed_nll_loss(LP, [0, 1], 0.1, ignore_index=1, version="0.10.2")
    assert old == pytest.approx(0.9 * L + 0.1 / 3 * 5 * L, rel=1e-14)  # eps/V = 1/30
    # Without ignore_index token 1 counts: nll ln 10; smooth ln 10 + ln 10 + ln 1.25.
    s1 = 2 * math.log(10) + math.log(1.25)
    new_all, nll_all = label_smoothed_nll_loss(LP, [0, 1], 0.1)
    assert nll_all == pytest.approx(L + math.log(10), rel=1e-15)
    assert new_all == pytest.approx(0.85 * (L + math.log(10)) + 0.05 * (5 * L + s1), rel=1e-14)


def test_unreduced_shapes_follow_fairseq():
    loss, nll = label_smoothed_nll_loss(LP, [0, 1], 0.1, ignore_index=1, reduce=False)
    assert loss.shape == (2, 1) and nll.shape == (2, 1) and loss[1, 0] == 0.0 and nll[1, 0] == 0.0
    loss, nll = label_smoothed_nll_loss(LP, [[0], [1]], 0.1, reduce=False)  # target (N, 1) accepted
    assert loss.shape == (2,) and nll.shape == (2,)


def test_padding_rows_are_never_read():
    lp = LP.copy()
    lp[1] = np.nan
    loss, nll = label_smoothed_nll_loss(lp, [0, 1], 0.1, ignore_index=1)
    assert np.isfinite(loss) and nll == pytest.approx(L, rel=1e-15)


def test_zero_epsilon_with_a_banned_token_is_nan_as_in_fairseq():
    # lprobs [0, -inf], gold 0: nll = 0, smooth = +inf; eps_i * smooth = 0 * inf = NaN (torch too).
    loss, nll = label_smoothed_nll_loss(np.array([[0.0, -np.inf]]), [0], 0.0)
    assert math.isnan(loss) and nll == 0.0
    # With eps > 0 the banned token costs eps_i * inf = inf.
    loss, _ = label_smoothed_nll_loss(np.array([[0.0, -np.inf]]), [0], 0.1)
    assert loss == math.inf


@pytest.mark.parametrize(
    ("version", "new"),
    [
        ("0.9.0", False),
        ("0.10.2", False),
        ("v0.10.0", False),
        ("0.12.0", True),
        ("0.12.3", True),
        ("1.0.0a0", True),
    ],
)
def test_version_selects_the_rule(version, new):
    # V = 3, eps = 0.3, gold p = 1/2 -> nll = L, smooth 5L; new: 0.55 L + 0.15 * 5L, old: 0.7 L + 0.1 * 5L.
    loss, _ = label_smoothed_nll_loss(LP[:1], [0], 0.3, version=version)
    assert loss == pytest.approx((0.55 + 0.75) * L if new else (0.7 + 0.5) * L, rel=1e-14)


def test_trainer_normalisation():
    # Targets [[5, 6, 2], [7, 2, 1]] with padding_idx 1: 5 tokens, 2 sentences.
    target = np.array([[5, 6, 2], [7, 2, 1]])
    assert sample_size(target) == 5 and sample_size(target, sentence_avg=True) == 2
    # Two micro-batches, summed losses 8 (5 tokens) and 4 (1 token): (8 + 4) / 6 = 2.
    assert update_loss([8.0, 4.0], [5, 1]) == 2.0
    assert update_loss([0.0], [0]) == 0.0  # (sample_size or 1.0)


@given(case=padded_batches(fractional=False), eps=EPS, split=st.integers(0, 4))
def test_update_loss_of_micro_batches_is_the_full_batch_token_mean(case, eps, split):
    target = _padded(case)
    split = min(split, target.shape[0])
    parts = [(case["logits"][:split], target[:split]), (case["logits"][split:], target[split:])]
    losses = [label_smoothed_nll_loss(lp, t, eps, ignore_index=PAD)[0] for lp, t in parts]
    sizes = [sample_size(t, PAD) for _, t in parts]
    full, _ = label_smoothed_nll_loss(case["logits"], target, eps, ignore_index=PAD)
    expected = full / (sample_size(target, PAD) or 1.0)
    assert update_loss(losses, sizes) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="epsilon must be in"):
        label_smoothed_nll_loss(LP, [0, 1], 1.5)
    with pytest.raises(ValueError, match="version must be"):
        label_smoothed_nll_loss(LP, [0, 1], 0.1, version="latest")
    with pytest.raises(ValueError, match="target holds label"):
        label_smoothed_nll_loss(LP, [0, 3], 0.1, ignore_index=1)
    with pytest.raises(ValueError, match="V - 1"):
        label_smoothed_nll_loss(np.zeros((2, 1)), [0, 0], 0.1)
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        label_smoothed_nll_loss(LP, [0, 1], 0.1, ignore_index=1.0)


# ----------------------------------------------------------------------------- framework


def _fairseq_body_in_torch(lprobs, target, epsilon, ignore_index, reduce, new_rule):
    """fairseq's label_smoothed_nll_loss (both rules), transcribed; it is plain torch."""
    if target.dim() == lprobs.dim() - 1:
        target = target.unsqueeze(-1)
    nll_loss = -lprobs.gather(dim=-1, index=target)
    smooth_loss = -lprobs.sum(dim=-1, keepdim=True)
    if ignore_index is not None:
        pad_mask = target.eq(ignore_index)
        nll_loss.masked_fill_(pad_mask, 0.0)
        smooth_loss.masked_fill_(pad_mask, 0.0)
    else:
        nll_loss = nll_loss.squeeze(-1)
        smooth_loss = smooth_loss.squeeze(-1)
    if reduce:
        nll_loss = nll_loss.sum()
        smooth_loss = smooth_loss.sum()
    if new_rule:
        eps_i = epsilon / (lprobs.size(-1) - 1)
        loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss
    else:
        eps_i = epsilon / lprobs.size(-1)
        loss = (1.0 - epsilon) * nll_loss + eps_i * smooth_loss
    return loss, nll_loss


@pytest.mark.framework("torch")
@settings(max_examples=40)
@given(
    case=padded_batches(fractional=False, garbage=False),
    eps=EPS,
    version=st.sampled_from(sorted(VERSIONS)),
    ignore=st.booleans(),
    reduce=st.booleans(),
)
def test_fairseq_body_in_torch_agrees(case, eps, version, ignore, reduce):
    torch = pytest.importorskip("torch")
    lprobs = torch.log_softmax(torch.from_numpy(case["logits"]), dim=-1)
    target = _padded(case) if ignore else case["targets"]
    loss_t, nll_t = _fairseq_body_in_torch(
        lprobs, torch.from_numpy(target), eps, PAD if ignore else None, reduce, VERSIONS[version]
    )
    loss, nll = label_smoothed_nll_loss(
        lprobs.numpy(), target, eps, ignore_index=PAD if ignore else None, reduce=reduce, version=version
    )
    assert np.shape(loss) == tuple(loss_t.shape)
    np.testing.assert_allclose(loss, loss_t.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nll, nll_t.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.framework("torch")
@settings(max_examples=40)
@given(case=padded_batches(fractional=False, garbage=False), eps=EPS)
def test_both_rules_are_torch_label_smoothing(case, eps):
    torch = pytest.importorskip("torch")
    vocab = case["classes"]
    logits = torch.from_numpy(case["logits"]).reshape(-1, vocab)
    target_np = _padded(case)
    target = torch.from_numpy(target_np).reshape(-1)
    lprobs = torch.log_softmax(logits, dim=-1).numpy()

    def torch_sum(smoothing):
        return float(
            torch.nn.functional.cross_entropy(
                logits, target, ignore_index=PAD, reduction="sum", label_smoothing=smoothing
            )
        )

    old, _ = label_smoothed_nll_loss(lprobs, target_np.reshape(-1), eps, ignore_index=PAD, version="0.10.2")
    assert old == pytest.approx(torch_sum(eps), rel=1e-10, abs=1e-10)  # eps/V: torch's own rule
    new, nll = label_smoothed_nll_loss(lprobs, target_np.reshape(-1), eps, ignore_index=PAD)
    assert new == pytest.approx(
        torch_sum(eps * vocab / (vocab - 1)), rel=1e-10, abs=1e-10
    )  # eps' = eps V/(V-1)
    expected_nll = float(
        torch.nn.functional.nll_loss(torch.from_numpy(lprobs), target, ignore_index=PAD, reduction="sum")
    )
    assert nll == pytest.approx(expected_nll, rel=1e-12, abs=1e-12)


def test_inputs_are_not_modified():
    lprobs, target = LP.copy(), np.array([0, 1])
    label_smoothed_nll_loss(lprobs, target, 0.1, ignore_index=1, reduce=False)
    np.testing.assert_array_equal(lprobs, LP)
    np.testing.assert_array_equal(target, [0, 1])
