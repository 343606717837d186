"""Table: which post-training aggregation modes survive micro-batching, more ranks and more padding.

One batch of four responses (lengths 5, 1, 3, 0: one is empty), per-token losses fixed below. Every
number is computed by :func:`maskloss.aggregate`; "combined" is what a trainer gets from the pieces:
the mean of the pieces' values for the mean modes (gradient accumulation divides each by the number
of steps; data-parallel ranks average their gradients), their sum for the additive modes (whose
divisor is the whole step's: ``constant`` and ``global_count``).
"""

from __future__ import annotations

import numpy as np

import maskloss
from maskloss.posttraining import AGGREGATIONS

LENGTHS = (5, 1, 3, 0)
STEPS = 6
MAX_LEN = 8  # configured max_completion_length (Dr. GRPO)
ADDITIVE = ("sum", "constant", "global_token_mean")


def batch() -> tuple[np.ndarray, np.ndarray]:
    mask = np.arange(STEPS)[None, :] < np.array(LENGTHS)[:, None]
    loss = np.where(mask, np.round(np.random.default_rng(0).uniform(0.0, 2.0, mask.shape), 2), 0.0)
    return loss, mask


def value(mode: str, loss: np.ndarray, mask: np.ndarray) -> float:
    n = len(LENGTHS)
    return float(maskloss.aggregate(loss, mask, mode=mode, constant=n * MAX_LEN, global_count=float(sum(LENGTHS))))


def combined(mode: str, loss: np.ndarray, mask: np.ndarray, pieces: list[np.ndarray]) -> float:
    values = [value(mode, loss[i], mask[i]) for i in pieces]
    return float(np.sum(values) if mode in ADDITIVE else np.mean(values))


def rows() -> list[tuple[str, float, float, float, float]]:
    loss, mask = batch()
    wide = np.concatenate([loss, np.zeros((len(LENGTHS), STEPS))], axis=1)
    wide_mask = np.concatenate([mask, np.zeros_like(mask)], axis=1)
    out = []
    for mode in AGGREGATIONS:
        full = value(mode, loss, mask)
        micro = combined(mode, loss, mask, [np.array([0, 1]), np.array([2, 3])])
        ranks = combined(mode, loss, mask, [np.array([0]), np.array([1]), np.array([2]), np.array([3])])
        padded = value(mode, wide, wide_mask)
        out.append((mode, full, micro, ranks, padded))
    return out


def _cell(x: float, full: float) -> str:
    if np.isnan(x):
        return "NaN ✗"
    return f"{x:.4f} " + ("✓" if np.isclose(x, full, rtol=1e-12, atol=1e-15) else "✗")


def render() -> str:
    lines = [
        "| mode | full batch | 2 micro-batches | 4 ranks | padded to 12 |",
        "|---|---|---|---|---|",
    ]
    for mode, full, micro, ranks, padded in rows():
        lines.append(f"| `{mode}` | {full:.4f} | {_cell(micro, full)} | {_cell(ranks, full)} | {_cell(padded, full)} |")
    return "\n".join(lines) + "\n"
