"""F1: a padded batch, right- and left-padded, with its mask and each framework's polarity.

Alt text: Top: the same three token sequences (lengths 3, 5 and 2) padded on the right and on
the left, padded cells hatched grey. Bottom: the right-padded batch's mask as four frameworks
spell it: Keras mask and optax/jax where (True at valid steps), Hugging Face attention_mask
(1 at valid steps), torch key_padding_mask (True at padding).

Caption: Padding side changes where the valid steps sit, not which they are. Three of the four
conventions mark the valid steps; torch's ``key_padding_mask`` marks the padding, so passing a
Keras-style mask to it silently attends to the padding and masks the tokens.
"""

from __future__ import annotations

import numpy as np
from _style import GREY, SKY
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import maskloss

LENGTHS = [3, 5, 2]
STEPS = 5
PAD_ID = 0


def batches() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(token ids, mask) right- and left-padded; ids 1.. for the valid tokens, PAD_ID elsewhere."""
    right_mask = maskloss.mask_from_lengths(LENGTHS, STEPS)
    ids = np.where(right_mask, np.cumsum(right_mask, axis=1) + 10 * np.arange(1, 4)[:, None], PAD_ID)
    left_ids, left_mask = maskloss.repad(ids, right_mask, side="left", fill=PAD_ID)
    return {"right-padded": (ids, right_mask), "left-padded": (left_ids.astype(int), left_mask)}


def polarities() -> dict[str, np.ndarray]:
    """The right-padded batch's mask in each framework's spelling."""
    _, mask = batches()["right-padded"]
    return {
        "Keras mask (True = valid)": mask,
        "HF attention_mask (1 = valid)": mask.astype(int),
        "torch key_padding_mask (True = padding)": ~mask,
        "optax / jax where (True = valid)": mask,
    }


def _grid(ax: object, values: np.ndarray, valid: np.ndarray, title: str) -> None:
    for (b, t), value in np.ndenumerate(values):
        face = SKY if valid[b, t] else GREY
        ax.add_patch(Rectangle((t, b), 1, 1, facecolor=face, edgecolor="black", hatch=None if valid[b, t] else "//"))  # type: ignore[attr-defined]
        text = str(value) if not isinstance(value, np.bool_) else ("T" if value else "F")
        box = None if valid[b, t] else {"boxstyle": "square,pad=0.15", "facecolor": "white", "edgecolor": "none"}
        ax.text(t + 0.5, b + 0.5, text, ha="center", va="center", fontsize=8, bbox=box)  # type: ignore[attr-defined]
    ax.set_xlim(0, values.shape[1])  # type: ignore[attr-defined]
    ax.set_ylim(values.shape[0], 0)  # type: ignore[attr-defined]
    ax.set_aspect("equal")  # type: ignore[attr-defined]
    ax.axis("off")  # type: ignore[attr-defined]
    ax.set_title(title, fontsize=8)  # type: ignore[attr-defined]


def draw() -> Figure:
    fig = Figure(figsize=(6.4, 3.5), layout="constrained")  # drawn at the size the site shows it (about 700 px)
    top = fig.subfigures(2, 1)
    axes = top[0].subplots(1, 4)
    for i, (side, (ids, mask)) in enumerate(batches().items()):
        _grid(axes[2 * i], ids, mask, f"{side}:\ntoken ids (pad id {PAD_ID})")
        _grid(axes[2 * i + 1], mask, mask, f"{side}:\nmask (True = valid)")
    _, right_mask = batches()["right-padded"]
    for ax, (name, values) in zip(top[1].subplots(1, 4), polarities().items(), strict=True):
        _grid(ax, values, right_mask, name.replace(" (", "\n("))
    top[0].suptitle("The same batch, padded on either side (blue: valid, hatched grey: padding)", fontsize=9)
    top[1].suptitle("One mask, four spellings (right-padded batch)", fontsize=9)
    return fig
