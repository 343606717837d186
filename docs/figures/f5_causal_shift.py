"""F5: the causal shift: tokens, labels, shifted targets, ignored positions, num_items_in_batch.

Alt text: Three grids, one above the other, for two right-padded sequences of 4 and 2 tokens: the
input ids, the labels (-100 at padding) and the shifted targets the loss compares position t with
(the label at t+1, -100 at the last position). Ignored positions are hatched and each grid is
labelled with how many positions it counts; the title gives the count of valid shifted targets,
the number num_items_in_batch must be.

Caption: A causal LM predicts token t+1 at position t, so the loss compares each position with the
*next* label and the last valid position of every sequence has nothing to predict. The valid
targets are one fewer per sequence than the valid tokens: ``num_items_in_batch`` must count the
shifted labels that are not -100, not the mask or the unshifted labels.
"""

from __future__ import annotations

import numpy as np
from _style import GREEN, GREY, SKY
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import maskloss
from maskloss.conventions import hf

IGNORE = -100
LENGTHS = [4, 2]
STEPS = 5


def rows() -> dict[str, np.ndarray]:
    """Input ids, labels and the shifted targets of transformers' ForCausalLMLoss (maskloss.conventions.hf)."""
    mask = maskloss.mask_from_lengths(LENGTHS, STEPS)
    ids = np.where(mask, np.cumsum(mask, axis=1) + 100 * np.arange(1, len(LENGTHS) + 1)[:, None], 0)
    labels = np.where(mask, ids, IGNORE)
    return {"input_ids": ids, "labels": labels, "shifted targets": hf._shift(labels, IGNORE)}


def num_items_in_batch() -> int:
    """The count the summed loss must be divided by: shifted targets that are not ignored."""
    return int(np.sum(rows()["shifted targets"] != IGNORE))


def draw() -> Figure:
    data = rows()
    mask = maskloss.mask_from_lengths(LENGTHS, STEPS)
    fig = Figure(figsize=(5.6, 3.3), layout="constrained")  # drawn at the size the site shows it (about 700 px)
    axes = fig.subplots(3, 1, sharex=True)  # one above the other: the shift reads as one column to the left
    for ax, (name, values) in zip(axes, data.items(), strict=True):
        valid = mask if name == "input_ids" else values != IGNORE
        colour = GREEN if name == "shifted targets" else SKY
        for (b, t), value in np.ndenumerate(values):
            ax.add_patch(
                Rectangle(
                    (t, b),
                    1,
                    1,
                    facecolor=colour if valid[b, t] else GREY,
                    edgecolor="black",
                    hatch=None if valid[b, t] else "//",
                )
            )
            box = None if valid[b, t] else {"boxstyle": "square,pad=0.15", "facecolor": "white", "edgecolor": "none"}
            ax.text(t + 0.5, b + 0.5, str(value), ha="center", va="center", fontsize=8, bbox=box)
        ax.set_xlim(0, STEPS)
        ax.set_ylim(len(LENGTHS), 0)
        ax.set_aspect("equal")
        ax.set_yticks(np.arange(len(LENGTHS)) + 0.5, [f"seq {b}" for b in range(len(LENGTHS))], fontsize=8)
        ax.tick_params(length=0)
        ax.set_ylabel(f"{name}\n{int(valid.sum())} counted", fontsize=8, rotation=0, ha="right", va="center")
    axes[-1].set_xticks(np.arange(STEPS) + 0.5, [f"t={t}" for t in range(STEPS)], fontsize=8)
    fig.suptitle(
        f"Valid tokens: {int(mask.sum())}; valid shifted targets = num_items_in_batch = {num_items_in_batch()}",
        fontsize=9,
    )
    return fig
