"""Loop oracles for the conventions of frameworks that cannot be installed here.

TensorFlow Addons, AllenNLP, fairseq and T5X: each oracle is written from the
framework's own source (cited per function) with Python loops over steps and ``math`` on
Python floats, and shares no code with maskloss. Steps with weight 0 (or an ignored
target) are skipped before anything is read, so garbage there cannot reach an oracle.

The module also holds the hypothesis strategy of padded batches these tests share.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st

# --------------------------------------------------------------------------- helpers


def log_softmax_row(row: list[float]) -> list[float]:
    top = max(row)
    total = 0.0
    for x in row:
        total += math.exp(x - top)
    lse = top + math.log(total)
    return [x - lse for x in row]


def logsumexp_row(row: list[float]) -> float:
    top = max(row)
    total = 0.0
    for x in row:
        total += math.exp(x - top)
    return top + math.log(total)


def _row(arr: np.ndarray, b: int, t: int) -> list[float]:
    return [float(v) for v in arr[b, t]]


def _div_no_nan(num: float, den: float) -> float:
    return 0.0 if den == 0 else num / den


# --------------------------------------------------------------------------- tfa
# tensorflow/addons tensorflow_addons/seq2seq/loss.py, sequence_loss


def tfa_step_losses(logits: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> list[list[float]]:
    """``crossent * weights`` per step, [B][T]; zero-weight steps are 0 and unread."""
    batch, steps = weights.shape
    out = [[0.0] * steps for _ in range(batch)]
    for b in range(batch):
        for t in range(steps):
            w = float(weights[b, t])
            if w == 0:
                continue
            lp = log_softmax_row(_row(logits, b, t))
            if targets.ndim == 3:
                ce = 0.0
                for c, q in enumerate(targets[b, t]):
                    if q != 0:
                        ce -= float(q) * lp[c]
            else:
                ce = -lp[int(targets[b, t])]
            out[b][t] = ce * w
    return out


def tfa_sequence_loss(logits, targets, weights, avg_t=True, avg_b=True, sum_t=False, sum_b=False) -> Any:
    ce = tfa_step_losses(logits, targets, weights)
    batch, steps = weights.shape
    w = [[float(weights[b, t]) for t in range(steps)] for b in range(batch)]
    if avg_t and avg_b:
        return _div_no_nan(sum(sum(r) for r in ce), sum(sum(r) for r in w))
    if sum_t and sum_b:
        nnz = sum(1 for r in w for x in r if x != 0)
        return _div_no_nan(sum(sum(r) for r in ce), nnz)
    if avg_t:  # over time, one value per sequence
        return [_div_no_nan(sum(ce[b]), sum(w[b])) for b in range(batch)]
    if avg_b:  # over the batch, one value per step
        return [
            _div_no_nan(sum(ce[b][t] for b in range(batch)), sum(w[b][t] for b in range(batch)))
            for t in range(steps)
        ]
    if sum_t:
        return [_div_no_nan(sum(ce[b]), sum(1 for x in w[b] if x != 0)) for b in range(batch)]
    if sum_b:
        return [
            _div_no_nan(sum(ce[b][t] for b in range(batch)), sum(1 for b in range(batch) if w[b][t] != 0))
            for t in range(steps)
        ]
    return ce


# --------------------------------------------------------------------------- AllenNLP
# allenai/allennlp allennlp/nn/util.py, sequence_cross_entropy_with_logits


def allennlp_sequence_ce(
    logits, targets, weights, average="batch", label_smoothing=None, gamma=None, alpha=None, tiny=1e-13
) -> Any:
    batch, steps = weights.shape
    classes = logits.shape[-1]
    if alpha is None:
        alpha_factor = None
    elif isinstance(alpha, (int, float)):
        alpha_factor = [1.0 - alpha, float(alpha)]
    else:
        alpha_factor = [float(a) for a in alpha]
    nums, dens = [], []
    for b in range(batch):
        num = 0.0
        den = 0.0
        for t in range(steps):
            w = float(weights[b, t])
            den += w  # the raw weights: focal and alpha factors never reach the denominator
            if w == 0:
                continue
            y = int(targets[b, t])
            lp = log_softmax_row(_row(logits, b, t))
            if label_smoothing:
                nll = 0.0
                for c in range(classes):
                    target_c = label_smoothing / classes + (1.0 - label_smoothing if c == y else 0.0)
                    nll -= lp[c] * target_c
            else:
                nll = -lp[y]
            factor = w
            if gamma:
                factor *= (1.0 - math.exp(lp[y])) ** gamma
            if alpha_factor is not None:
                factor *= alpha_factor[y]
            num += nll * factor
        nums.append(num)
        dens.append(den)
    per_sequence = [nums[b] / (dens[b] + tiny) for b in range(batch)]
    if average == "batch":
        non_empty = sum(1 for d in dens if d > 0)
        return sum(per_sequence) / (non_empty + tiny)
    if average == "token":
        return sum(nums) / (sum(dens) + tiny)
    return per_sequence


# --------------------------------------------------------------------------- fairseq
# facebookresearch/fairseq fairseq/criterions/label_smoothed_cross_entropy.py


def fairseq_label_smoothed(lprobs, target, epsilon, ignore_index=None, new_rule=True):
    """Summed ``(loss, nll_loss)`` and the per-token lists, over the flattened tokens."""
    vocab = lprobs.shape[-1]
    flat_lp = lprobs.reshape(-1, vocab)
    flat_t = np.asarray(target).reshape(-1)
    eps_i = epsilon / (vocab - 1) if new_rule else epsilon / vocab
    gold = 1.0 - epsilon - eps_i if new_rule else 1.0 - epsilon
    per_loss, per_nll = [], []
    for i in range(flat_t.shape[0]):
        if ignore_index is not None and flat_t[i] == ignore_index:
            per_loss.append(0.0)
            per_nll.append(0.0)
            continue
        row = [float(v) for v in flat_lp[i]]
        nll = -row[int(flat_t[i])]
        smooth = 0.0
        for v in row:
            smooth -= v
        per_nll.append(nll)
        per_loss.append(gold * nll + eps_i * smooth)
    return math.fsum(per_loss), math.fsum(per_nll), per_loss, per_nll


# --------------------------------------------------------------------------- T5X
# google-research/t5x t5x/losses.py, compute_weighted_cross_entropy and
# get_loss_normalizing_factor_and_weights


def t5x_weighted_ce(logits, targets, weights=None, label_smoothing=0.0, z_loss=0.0, lnf=None):
    batch, steps = targets.shape
    vocab = logits.shape[-1]
    confidence = 1.0 - label_smoothing
    low = (1.0 - confidence) / (vocab - 1)
    constant = -(confidence * math.log(confidence) + (vocab - 1) * low * math.log(low + 1e-20))
    loss_sum = 0.0
    z_sum = 0.0
    weight_sum = 0.0
    for b in range(batch):
        for t in range(steps):
            w = 1.0 if weights is None else float(weights[b, t])
            weight_sum += w
            if w == 0:
                continue
            row = _row(logits, b, t)
            lp = log_softmax_row(row)
            y = int(targets[b, t])
            cross = 0.0
            for c in range(vocab):
                cross -= (confidence if c == y else low) * lp[c]
            z_term = z_loss * logsumexp_row(row) ** 2
            step_loss = (cross + z_term - constant) * w
            step_z = z_term * w
            if lnf is not None:
                step_loss /= lnf
                step_z /= lnf
            loss_sum += step_loss
            z_sum += step_z
    return loss_sum, z_sum, weight_sum


def t5x_average_per_sequence(weights, segment_ids=None, positions=None):
    """AVERAGE_PER_SEQUENCE: (factor, new weights as lists); segments start at position 0."""
    batch, steps = weights.shape
    new = [[0.0] * steps for _ in range(batch)]
    for b in range(batch):
        groups: dict[int, list[int]] = {}
        group = 0
        for t in range(steps):
            if segment_ids is None:
                key = 0
            else:
                if positions[b, t] == 0:
                    group += 1
                if segment_ids[b, t] == 0:
                    continue  # padding: normaliser 0, weight 0
                key = group
            groups.setdefault(key, []).append(t)
        for members in groups.values():
            total = sum(float(weights[b, t]) for t in members)
            for t in members:
                new[b][t] = float(weights[b, t]) / total if total != 0 else 0.0
    return sum(sum(r) for r in new), new


# --------------------------------------------------------------------------- strategy

GARBAGE_LOGITS = (np.nan, np.inf, -np.inf, 1e300)


@st.composite
def padded_batches(
    draw: Any,
    *,
    min_classes: int = 2,
    max_classes: int = 5,
    fractional: bool = True,
    garbage: bool = True,
    label_range: int | None = None,
    shape: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """A (B, T, C) batch with step weights; logits and targets at zero-weight steps are junk.

    Weights are 0/1 (right/left padded or arbitrary, rows may be empty) or fractional in
    (0, 3] at valid steps. ``label_range`` limits valid targets to ``[0, label_range)``.
    A fixed ``shape`` keeps jit-compiling frameworks (jax) from recompiling per example.
    """
    if shape is None:
        batch = draw(st.integers(1, 4))
        steps = draw(st.integers(1, 5))
        classes = draw(st.integers(min_classes, max_classes))
    else:
        batch, steps, classes = shape
    floats = st.floats(-8, 8, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    size = batch * steps * classes
    logits = np.array(draw(st.lists(floats, min_size=size, max_size=size)))
    logits = logits.reshape(batch, steps, classes)
    high = classes if label_range is None else min(classes, label_range)
    labels = st.integers(0, high - 1)
    targets = np.array(draw(st.lists(labels, min_size=batch * steps, max_size=batch * steps)))
    targets = targets.reshape(batch, steps)
    style = draw(st.sampled_from(["right", "left", "arbitrary"]))
    if style == "arbitrary":
        valid = np.array(draw(st.lists(st.booleans(), min_size=batch * steps, max_size=batch * steps)))
        valid = valid.reshape(batch, steps)
    else:
        lengths = draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch))
        valid = np.array([[t < n for t in range(steps)] for n in lengths])
        if style == "left":
            valid = valid[:, ::-1]
    weights = valid.astype(np.float64)
    if fractional and draw(st.booleans()):
        scale = np.array(draw(st.lists(st.floats(0.05, 3.0), min_size=batch * steps, max_size=batch * steps)))
        weights = np.where(valid, scale.reshape(batch, steps), 0.0)
    if garbage:
        logits = logits.copy()
        logits[~valid] = draw(st.sampled_from(GARBAGE_LOGITS))
        targets = np.where(valid, targets, draw(st.sampled_from([10**6, -7, classes])))
    return {"logits": logits, "targets": targets, "weights": weights, "valid": valid, "classes": classes}
