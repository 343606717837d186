"""F4: micro-batches and ranks, mean of means vs global totals.

Alt text: Two bar charts for a batch of four sequences with 3, 5, 1 and 4 valid steps and
per-step losses 1, 2, 6 and 3. Left: two micro-batches (sequences 0-1 and 2-3), each micro-batch's
token mean, their mean (wrong) and the token mean of the merged totals (right). Right: two ranks
with two micro-batches of one sequence each: the average of every micro-batch mean (wrong) and
the global sum divided by the global count of valid steps (right).

Caption: Loss values, not gradient weights. Averaging micro-batch (or rank) means weighs each
micro-batch equally, whatever its number of valid tokens, so it is not the full-batch token mean.
Summing the numerators and the denominators (``MaskedTotals.concat``) and dividing once by the
global count gives the full-batch loss exactly, and the same rule holds for the gradient: each
micro-batch's ``"sum"`` gradient divided by the global count.
"""

from __future__ import annotations

import functools

import numpy as np
from _style import BLUE, GREEN, SKY, VERMILION
from matplotlib.figure import Figure

import maskloss

LENGTHS = [3, 5, 1, 4]
STEP_LOSS = [1.0, 2.0, 6.0, 3.0]
STEPS = 5


def totals(rows: list[int]) -> maskloss.MaskedTotals:
    """The masked totals of the sequences ``rows`` of the example batch."""
    mask = maskloss.mask_from_lengths([LENGTHS[r] for r in rows], STEPS)
    losses = np.where(mask, np.array([[STEP_LOSS[r]] for r in rows]), 0.0)
    return maskloss.MaskedTotals.from_terms(losses, mask.astype(np.float64))


def numbers() -> dict[str, float]:
    """Every bar of the figure, from MaskedTotals."""
    micro = [totals([0, 1]), totals([2, 3])]
    ranks = [[totals([0]), totals([1])], [totals([2]), totals([3])]]
    full = totals([0, 1, 2, 3])
    per_micro = [float(m.value("token_mean")) for m in micro]
    per_rank_micro = [float(m.value("token_mean")) for rank in ranks for m in rank]
    merged = maskloss.MaskedTotals.concat([m for rank in ranks for m in rank])
    return {
        "micro 0": per_micro[0],
        "micro 1": per_micro[1],
        "mean of means": float(np.mean(per_micro)),
        "merged totals": float(maskloss.MaskedTotals.concat(micro).value("token_mean")),
        "mean over ranks of micro means": float(np.mean(per_rank_micro)),
        "global sum / global count": float(merged.value("token_mean")),
        "full batch": float(full.value("token_mean")),
    }


def draw() -> Figure:
    n = numbers()
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")  # drawn at the size the site shows it (about 700 px)
    left, right = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [4, 2.6]})
    bars = [("micro 0", SKY), ("micro 1", SKY), ("mean of means", VERMILION), ("merged totals", GREEN)]
    _bars(left, n, bars, "one rank, two micro-batches")
    bars = [("mean over ranks of micro means", VERMILION), ("global sum / global count", GREEN)]
    _bars(right, n, bars, "two ranks x two micro-batches")
    for ax in (left, right):
        ax.axhline(n["full batch"], color=BLUE, linestyle="--", label=f"full-batch token_mean\n= {n['full batch']:.4g}")
    right.legend(loc="upper right", fontsize=7)
    left.set_ylabel("loss value", fontsize=8)
    fig.suptitle("Loss values (not gradient weights): mean of means vs merged totals", fontsize=9)
    return fig


def _bars(ax: object, n: dict[str, float], bars: list[tuple[str, str]], title: str) -> None:
    names = [b for b, _ in bars]
    ax.bar(range(len(bars)), [n[b] for b in names], color=[c for _, c in bars])  # type: ignore[attr-defined]
    for i, b in enumerate(names):
        ax.text(i, n[b] + 0.05, f"{n[b]:.4g}", ha="center", fontsize=8)  # type: ignore[attr-defined]
    breaks = ((" of ", "\nof "), (" / ", "\n/ "), ("merged ", "merged\n"), ("ranks ", "ranks\n"))
    ticks = [functools.reduce(lambda text, pair: text.replace(*pair), breaks, b) for b in names]
    ax.set_xticks(range(len(bars)), ticks, fontsize=7)  # type: ignore[attr-defined]
    ax.tick_params(axis="y", labelsize=8)  # type: ignore[attr-defined]
    ax.set_title(title, fontsize=9)  # type: ignore[attr-defined]
    ax.set_ylim(0, max(n.values()) * 1.25)  # type: ignore[attr-defined]
