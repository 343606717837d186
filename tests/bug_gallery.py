"""A gallery of the masked-loss bugs users actually hit, each next to its fixed version.

Every entry is a small NumPy re-creation of a bug class seen in real code (the source is
named in its docstring), written the way the buggy code computes, plus the fix.
``tests/test_bug_gallery.py`` shows that ``maskloss.testing.check_loss`` rejects every
bug with a readable message and accepts every fix.

Run ``python -m tests.bug_gallery`` to print, for each bug, how many generated examples
check_loss needed to find it and how long it took, and the time on the fixed versions
(the numbers quoted in ``docs/course/08-testing.md``).

All candidates take ``(y_true, y_pred, mask)`` with the mask True at valid steps, as
check_loss calls them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import maskloss
from maskloss.testing import Bounds

IGNORE = -100


# -- shared pieces, written like user code -------------------------------------------------------


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    top = np.max(x, axis=-1, keepdims=True)
    return x - top - np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True))


def token_nll(labels: np.ndarray, logits: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """-log p(label) at every step; labels at invalid steps are replaced by 0 before the gather."""
    safe = np.where(valid, labels, 0)
    return -np.take_along_axis(log_softmax(logits), safe[..., None], axis=-1)[..., 0]


def masked_token_mean(per_step: np.ndarray, valid: np.ndarray) -> float:
    """The right way: select with where, divide by the number of valid steps."""
    return float(np.sum(np.where(valid, per_step, 0.0)) / np.sum(valid))


# -- 1. mean over all steps, padding included ----------------------------------------------------


def bug_mean_over_all_steps(labels, logits, mask):
    """tf.keras 2.0-2.10 (mask merged into the sample weight, divided by B*T) and the d2l
    textbook's ``MaskedSoftmaxCELoss`` (``(loss * weights).mean(dim=1)``): padding counts in the
    denominator."""
    nll = token_nll(labels, logits, mask)
    return float(np.mean(np.where(mask, nll, 0.0)))


def fixed_mean_over_valid_steps(labels, logits, mask):
    return masked_token_mean(token_nll(labels, logits, mask), mask)


# -- 2. multiply by the mask with NaN under it ---------------------------------------------------


def bug_multiply_by_mask(labels, logits, mask):
    """``(loss * mask).sum() / mask.sum()``: a NaN (or inf) logit at a padded step makes the
    padded loss NaN, and NaN * 0 is NaN."""
    nll = token_nll(labels, logits, mask)
    return float(np.sum(nll * mask) / np.sum(mask))


def fixed_select_with_where(labels, logits, mask):
    return masked_token_mean(token_nll(labels, logits, mask), mask)


# -- 3. mean of per-sequence means as a token mean -----------------------------------------------


def bug_mean_of_sequence_means(labels, logits, mask):
    """AllenNLP's ``average="batch"`` (the default of ``sequence_cross_entropy_with_logits``),
    reported as if it were the per-token mean: short sequences weigh as much as long ones."""
    nll = np.where(mask, token_nll(labels, logits, mask), 0.0)
    per_sequence = nll.sum(axis=1) / (mask.sum(axis=1) + 1e-13)
    return float(per_sequence.sum() / ((mask.sum(axis=1) > 0).sum() + 1e-13))


# The same function is correct for what it really computes: reduction="sequence_mean" with
# AllenNLP's 0 for an all-masked batch (see the gallery entry).


# -- 4. label smoothing that counts ignored tokens -----------------------------------------------


def _smoothing_terms(labels, logits, valid, eps):
    lp = log_softmax(logits)
    nll = token_nll(labels, logits, valid)
    smooth = -lp.mean(axis=-1)  # eps/C * sum_c -log p_c, divided by eps
    return (1 - eps) * nll, eps * smooth


def bug_smoothing_counts_ignored(labels, logits, mask, eps=0.1):
    """The smoothing term averaged over every position, ignored ones included, while the NLL
    term is averaged over the valid ones (a classic hand-written label smoother that forgets to
    mask the smoothing part)."""
    valid = labels != IGNORE
    nll_term, smooth_term = _smoothing_terms(labels, logits, valid, eps)
    return float(np.sum(np.where(valid, nll_term, 0.0)) / np.sum(valid) + np.mean(smooth_term))


def fixed_smoothing_over_valid(labels, logits, mask, eps=0.1):
    valid = labels != IGNORE
    nll_term, smooth_term = _smoothing_terms(labels, logits, valid, eps)
    return masked_token_mean(nll_term + smooth_term, valid)


# -- 5. mean of micro-batch means ---------------------------------------------------------------


def bug_mean_of_microbatch_means(labels, logits, mask, micro=2):
    """Gradient accumulation in HF transformers before 4.46 (2024): every micro-batch's loss is
    its own token mean, and the optimizer step averages them."""
    means = [
        fixed_mean_over_valid_steps(labels[i : i + micro], logits[i : i + micro], mask[i : i + micro])
        for i in range(0, len(labels), micro)
    ]
    return float(np.mean(means))


def fixed_microbatch_sums_over_total(labels, logits, mask, micro=2):
    """The fix: sum each micro-batch, divide by the valid tokens of the whole window
    (``num_items_in_batch``)."""
    total = np.sum(mask)
    sums = [
        np.sum(np.where(mask[i : i + micro], token_nll(labels[i : i + micro], logits[i : i + micro],
                                                         mask[i : i + micro]), 0.0))
        for i in range(0, len(labels), micro)
    ]
    return float(np.sum(sums) / total)


# -- 6. mask polarity inverted -------------------------------------------------------------------


def bug_inverted_polarity(labels, logits, mask):
    """A True = padding mask (torch ``key_padding_mask``, ``numpy.ma``) used where True = valid
    was meant."""
    keep = ~mask
    return masked_token_mean(token_nll(labels, logits, keep), keep)


# -- 7. left-padded batch, right-padding mask ----------------------------------------------------


def bug_right_mask_from_lengths(labels, logits, mask):
    """The mask rebuilt from lengths as ``tf.sequence_mask(lengths)`` (right padding), for a
    batch that a decoder-only tokenizer padded on the left."""
    lengths = mask.sum(axis=1)
    right = np.arange(mask.shape[1])[None, :] < lengths[:, None]
    return masked_token_mean(token_nll(labels, logits, right), right)


def fixed_mask_from_lengths_and_side(labels, logits, mask):
    lengths = mask.sum(axis=1)
    side = maskloss.padding_side(mask)
    if side in ("right", "left"):
        rebuilt = maskloss.mask_from_lengths(lengths, mask.shape[1], side=side)
    else:  # no padding, or holes: use the mask as given
        rebuilt = mask
    return masked_token_mean(token_nll(labels, logits, rebuilt), rebuilt)


# -- 8. causal shift counted on unshifted labels --------------------------------------------------


def causal_lm_oracle(labels, logits, mask=None, **options):
    """The oracle for a causal-LM loss: ``logits[:, t]`` predicts ``labels[:, t + 1]`` (what
    ``check_loss(..., shift=1)`` compares with; kept for readers building their own)."""
    return maskloss.sparse_categorical_crossentropy(
        labels[:, 1:], logits[:, :-1], None if mask is None else mask[:, 1:], **options
    )


def bug_causal_count_unshifted(labels, logits, mask):
    """HF-style causal LM loss whose token count uses the labels before the shift, so it divides
    by ``n_targets + rows`` (a 2026 fix in transformers' ``num_items_in_batch``)."""
    shifted_labels, shifted_logits = labels[:, 1:], logits[:, :-1]
    valid = shifted_labels != IGNORE
    nll = np.where(valid, token_nll(shifted_labels, shifted_logits, valid), 0.0)
    return float(nll.sum() / np.sum(labels != IGNORE))


def fixed_causal_count_shifted(labels, logits, mask):
    shifted_labels, shifted_logits = labels[:, 1:], logits[:, :-1]
    valid = shifted_labels != IGNORE
    return masked_token_mean(token_nll(shifted_labels, shifted_logits, valid), valid)


# -- 9. all-masked batch ------------------------------------------------------------------------


def bug_clamped_count(labels, logits, mask):
    """``loss.sum() / mask.sum().clamp(min=1)``: 0 for a batch with no valid token, where torch's
    ``cross_entropy(reduction="mean")`` (the convention checked) gives NaN."""
    nll = np.where(mask, token_nll(labels, logits, mask), 0.0)
    return float(nll.sum() / max(int(mask.sum()), 1))


def bug_plain_count(labels, logits, mask):
    """The reverse: ``loss.sum() / mask.sum()`` is NaN for a batch with no valid token, where
    Keras 3 (the convention checked, ``all_masked=0.0``) gives 0."""
    return masked_token_mean(token_nll(labels, logits, mask), mask)


# -- the gallery ---------------------------------------------------------------------------------

SPARSE = maskloss.sparse_categorical_crossentropy


@dataclass(frozen=True)
class Entry:
    """A bug, what check_loss should say about it, and the version that passes."""

    name: str
    bug: Callable[..., Any]
    fixed: Callable[..., Any]
    like: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)
    fixed_options: dict[str, Any] | None = None  # check the fix with other options (same convention)
    properties: tuple[str, ...] = ()  # what check_loss may name as broken


GALLERY: tuple[Entry, ...] = (
    Entry("1. mean over all steps, padding included", bug_mean_over_all_steps,
          fixed_mean_over_valid_steps, SPARSE, {"from_logits": True},
          properties=("agreement", "padding amount")),
    Entry("2. (loss * mask).sum() / mask.sum() with NaN under the mask", bug_multiply_by_mask,
          fixed_select_with_where, SPARSE, {"from_logits": True}, properties=("padding content",)),
    Entry("3. mean of per-sequence means as a token mean", bug_mean_of_sequence_means,
          bug_mean_of_sequence_means, SPARSE, {"from_logits": True},
          fixed_options={"from_logits": True, "reduction": "sequence_mean", "bounds": Bounds(all_masked=0.0)},
          properties=("agreement",)),
    Entry("4. label smoothing that counts ignored tokens", bug_smoothing_counts_ignored,
          fixed_smoothing_over_valid, SPARSE,
          {"from_logits": True, "ignore_index": IGNORE, "label_smoothing": 0.1},
          properties=("agreement", "padding amount")),
    Entry("5. mean of micro-batch means", bug_mean_of_microbatch_means, fixed_microbatch_sums_over_total,
          SPARSE, {"from_logits": True}, properties=("agreement", "batch order")),
    Entry("6. mask polarity inverted", bug_inverted_polarity, fixed_mean_over_valid_steps, SPARSE,
          {"from_logits": True}, properties=("agreement",)),
    Entry("7. left-padded batch with a right-padding mask", bug_right_mask_from_lengths,
          fixed_mask_from_lengths_and_side, SPARSE, {"from_logits": True},
          properties=("agreement", "padding amount", "padding content", "left vs right padding")),
    Entry("8. causal shift counted on unshifted labels", bug_causal_count_unshifted,
          fixed_causal_count_shifted, SPARSE,
          {"from_logits": True, "ignore_index": IGNORE, "shift": 1}, properties=("agreement",)),
    Entry("9a. all-masked batch gives 0 where the convention says NaN", bug_clamped_count,
          bug_plain_count, SPARSE, {"from_logits": True}, properties=("all-masked batch",)),
    Entry("9b. all-masked batch gives NaN where the convention says 0", bug_plain_count,
          bug_clamped_count, SPARSE, {"from_logits": True, "bounds": Bounds(all_masked=0.0)},
          properties=("all-masked batch",)),
)


SEEDS = range(10)


def measure() -> list[tuple[str, list[int], str, float, float]]:  # pragma: no cover - the docs' table
    """Per bug: examples to the first failure under ``SEEDS``, the property reported with the
    default settings, and the CPU seconds to reject the bug and to accept the fix (defaults)."""
    import time

    from maskloss.testing import LossCheckError, check_loss

    rows = []
    for entry in GALLERY:
        counts = []
        for seed in SEEDS:
            try:
                check_loss(entry.bug, entry.like, seed=seed, **entry.options)
            except LossCheckError as err:
                counts.append(err.examples)
            else:
                counts.append(-1)
        start = time.process_time()
        try:
            check_loss(entry.bug, entry.like, **entry.options)
        except LossCheckError as err:
            prop = err.property
        else:
            prop = "NOT CAUGHT"
        reject = time.process_time() - start
        start = time.process_time()
        check_loss(entry.fixed, entry.like, **(entry.fixed_options or entry.options))
        rows.append((entry.name, counts, prop, reject, time.process_time() - start))
    return rows


if __name__ == "__main__":  # pragma: no cover
    print("| bug | examples to first failure: median (min-max) over 10 seeds | property reported | "
          "CPU s to reject | CPU s to accept the fix |")
    print("|---|---|---|---|---|")
    for name, counts, prop, reject, accept in measure():
        spread = f"{int(np.median(counts))} ({min(counts)}-{max(counts)})"
        print(f"| {name} | {spread} | {prop} | {reject:.1f} | {accept:.1f} |")
