"""The post-training bug gallery: five aggregation bugs of RL trainers, each caught by check_aggregation.

Each bug is written the way it appears in trainers (torch idioms transcribed to NumPy), next to
its fix; ``check_aggregation`` must reject the bug through the named property and accept the fix.
"""

from __future__ import annotations

import numpy as np
import pytest

from maskloss.testing import AggregationCheckError, check_aggregation

MAX_LEN = 16  # the configured max_completion_length of the Dr. GRPO entry
GLOBAL_BATCH = 8  # sequences per optimiser step: Dr. GRPO divides by GLOBAL_BATCH * MAX_LEN


def seq_mean_over_token_count(loss, mask):
    """Bug 1: a "sequence mean" that divides the total by the token count (a token mean)."""
    return np.where(mask, loss, 0.0).sum() / mask.sum()


def seq_mean_fixed(loss, mask):
    lengths = mask.sum(-1)
    per_seq = np.where(mask, loss, 0.0).sum(-1) / np.maximum(lengths, 1)
    return per_seq[lengths > 0].mean()


def dapo_local_token_mean(loss, mask, global_count):
    """Bug 2: token mean per micro-batch; the global count is ignored (mean of micro-batch means)."""
    return np.where(mask, loss, 0.0).sum() / mask.sum()


def dapo_fixed(loss, mask, global_count):
    return np.where(mask, loss, 0.0).sum() / global_count


def dr_grpo_padded_length(loss, mask):
    """Bug 3: Dr. GRPO normalised by the batch's padded length T instead of the configured maximum."""
    return np.where(mask, loss, 0.0).sum() / (GLOBAL_BATCH * loss.shape[1])


def dr_grpo_fixed(loss, mask):
    return np.where(mask, loss, 0.0).sum() / (GLOBAL_BATCH * MAX_LEN)


def seq_mean_nan_on_empty(loss, mask):
    """Bug 4: an empty response divides 0 by 0 and turns the batch loss into NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(mask, loss, 0.0).sum(-1) / mask.sum(-1)).mean()


def token_mean_times_mask(loss, mask):
    """Bug 5: ``(loss * mask).sum() / mask.sum()``: NaN or inf under the mask leaks (NaN * 0 = NaN)."""
    with np.errstate(invalid="ignore"):
        return (loss * mask).sum() / mask.sum()


def token_mean_fixed(loss, mask):
    return np.where(mask, loss, 0.0).sum() / mask.sum()


GALLERY = [
    ("sequence mean over token count", seq_mean_over_token_count, seq_mean_fixed, {"mode": "sequence_mean"},
     {"oracle"}),
    ("token mean per micro-batch", dapo_local_token_mean, dapo_fixed, {"mode": "global_token_mean"},
     {"oracle", "split and recombine"}),
    ("Dr. GRPO over the padded length", dr_grpo_padded_length, dr_grpo_fixed,
     {"mode": "constant", "constant": GLOBAL_BATCH * MAX_LEN}, {"oracle", "padding amount"}),
    ("empty response is NaN", seq_mean_nan_on_empty, seq_mean_fixed, {"mode": "sequence_mean"},
     {"empty responses"}),
    ("loss * mask", token_mean_times_mask, token_mean_fixed, {"mode": "token_mean"}, {"padding content"}),
]


@pytest.mark.parametrize(("name", "bug", "fix", "options", "props"), GALLERY, ids=[g[0] for g in GALLERY])
def test_bug_is_caught_and_fix_accepted(name, bug, fix, options, props):
    with pytest.raises(AggregationCheckError) as info:
        check_aggregation(bug, max_examples=40, **options)
    assert info.value.property in props, str(info.value)
    message = str(info.value)
    assert f"property broken: {info.value.property}" in message and "candidate value:" in message
    check_aggregation(fix, max_examples=40, **options)
