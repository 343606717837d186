"""Real masked losses (``tests/real_code.py``) through check_loss: each gets its verdict, with
documented options and no wrapper; each bug is caught by the property that names it."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

import maskloss
from maskloss.testing import Bounds, LossCheckError, check_loss
from tests import real_code
from tests.real_code import CASES


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_real_loss_gets_its_verdict(case):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the chatbot's mean of an empty step
        if case.verdict == "passes":
            check_loss(case.candidate, case.like, **case.options)
        else:
            with pytest.raises(LossCheckError) as info:
                check_loss(case.candidate, case.like, **case.options)
            assert info.value.property == case.verdict, str(info.value)
    assert time.perf_counter() - start < 10.0  # ~1 s each on an idle core; generous for a loaded CI


@pytest.mark.parametrize(
    ("candidate", "like", "rtol"),
    [
        (real_code.verl_value_loss_token_mean, maskloss.mse, 1e-7),
        (real_code.saits_masked_mae_cal, maskloss.mae, 1e-8),
        (real_code.keras225_weighted_masked_objective, maskloss.mse, 1e-5),
    ],
)
def test_an_epsilon_in_a_denominator_is_reported_as_a_tiny_offset(candidate, like, rtol):
    options = {"scale": 0.5, "bounds": Bounds(min_features=1, max_features=1)} if "verl" in candidate.__name__ else {}
    with pytest.raises(LossCheckError) as info:
        check_loss(candidate, like, **options)
    assert info.value.property == "agreement"
    assert "tiny constant offset" in str(info.value)
    if "keras225" in candidate.__name__:  # selects with where: only the epsilon was wrong
        check_loss(candidate, like, rtol=rtol, bounds=Bounds(all_masked=0.0), **options)  # 0 / (0 + eps) = 0
    else:  # the real finding behind the offset: NaN * 0 through the mask
        with pytest.raises(LossCheckError) as info:
            check_loss(candidate, like, rtol=rtol, **options)
        assert info.value.property == "padding content"


def test_a_convention_difference_is_not_called_an_offset():
    with pytest.raises(LossCheckError) as info:
        check_loss(
            real_code.hf_causal_lm_trainer_count,
            maskloss.sparse_categorical_crossentropy,
            from_logits=True,
            ignore_index=-100,
            shift=1,
        )
    assert "tiny constant offset" not in str(info.value)
    assert "on labels[:, 1:] vs predictions[:, :-1]" in str(info.value)


def test_without_shift_the_causal_loss_disagrees():
    """shift=1 is what makes the correct HF loss pass: without it the oracle scores other pairs."""
    with pytest.raises(LossCheckError, match="agreement"):
        check_loss(
            real_code.hf_causal_lm_shifted_count,
            maskloss.sparse_categorical_crossentropy,
            from_logits=True,
            ignore_index=-100,
        )


def test_shift_split_and_recombine_uses_the_shifted_counts():
    """A causal loss divided by the shifted count of each micro-batch recombines to the full
    batch only with shifted weights; an element mean over the shifted grid does not."""
    seen = []

    def spy(labels, logits, mask):
        seen.append(labels.shape[0])
        return real_code.hf_causal_lm_shifted_count(labels, logits, mask)

    check_loss(
        spy, maskloss.sparse_categorical_crossentropy, from_logits=True, ignore_index=-100, shift=1, max_examples=30
    )
    assert min(seen) < max(seen)  # micro-batches ran


def test_float32_code_passes_at_the_default_settings():
    """The TF tutorial's loss computes and returns float32: the float32 row is picked from the
    returned dtype (the leak it has is then the only finding, not a rounding error)."""

    def tf_tutorial_fixed(label, pred, mask):
        m = label != 0
        loss = real_code._nll_every_step(label, pred, np.float32)
        return np.float32(np.where(m, loss, np.float32(0)).sum() / m.sum())

    check_loss(tf_tutorial_fixed, maskloss.sparse_categorical_crossentropy, from_logits=True, ignore_index=0)
    with pytest.raises(LossCheckError, match="candidate returned float32"):
        check_loss(
            lambda *a: np.float32(tf_tutorial_fixed(*a) * 1.001),
            maskloss.sparse_categorical_crossentropy,
            from_logits=True,
            ignore_index=0,
        )


def test_shift_bad_input():
    with pytest.raises(ValueError, match=r"shift=1 is the causal.*kind='regression'"):
        check_loss(real_code.saits_masked_mae_cal, maskloss.mae, shift=1)
    with pytest.raises(ValueError, match=r"shift must be an int >= 0.*-1"):
        check_loss(real_code.hf_causal_lm_shifted_count, maskloss.sparse_categorical_crossentropy, shift=-1)


def test_the_chatbot_objective_is_a_sum_of_per_step_means_not_t_times_the_token_mean():
    # Chapter 08 (issue 24): T times the token mean only when every step has as many valid tokens.
    rng = np.random.default_rng(0)
    target, logits = rng.integers(0, 4, (3, 4)), rng.normal(size=(3, 4, 4))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per_step = -np.take_along_axis(log_probs, target[..., None], -1)[..., 0]
    for lengths in ([4, 4, 4], [4, 2, 1]):
        mask = maskloss.mask_from_lengths(lengths, 4)
        objective = real_code.chatbot_mask_nll_objective(target, logits, mask)
        by_hand = sum(per_step[mask[:, t], t].mean() for t in range(4))  # one mean per step, summed
        token_mean = float(maskloss.reduce(np.where(mask, per_step, np.nan), mask, reduction="token_mean"))
        assert objective == pytest.approx(by_hand, rel=1e-12)
        if len(set(lengths)) == 1:
            assert objective == pytest.approx(4 * token_mean, rel=1e-12)
        else:
            assert abs(objective - 4 * token_mean) > 0.1 * abs(objective)
