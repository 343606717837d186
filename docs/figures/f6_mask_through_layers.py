"""F6: the mask flowing through Masking -> LSTM -> loss, and return_sequences=False dropping it.

Alt text: Two pipelines for a batch of two sequences of 4 steps, one left-padded and one
right-padded with all-zero steps. Each stage (input, after Masking, after LSTM, at the loss) shows
the mask it carries as a row of cells. With return_sequences=True the mask reaches the loss
unchanged; with return_sequences=False the LSTM returns one vector per sequence and no mask.

Caption: ``Masking(0.0)`` creates the mask (a step is padding when all its features are 0); a
recurrent layer with ``return_sequences=True`` passes it on, so the loss skips the padded steps.
With ``return_sequences=False`` the output has no time axis and the mask is dropped: the loss of
a per-sequence output has nothing left to mask.
"""

from __future__ import annotations

import numpy as np
from _style import GREY, SKY, VERMILION
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from maskloss.layers import LSTM, Masking, Sequential

X = np.array([[[0.0], [0.0], [1.0], [2.0]], [[1.0], [2.0], [3.0], [0.0]]])


def stage_masks(return_sequences: bool) -> dict[str, np.ndarray | None]:
    """The mask after each stage, from maskloss.layers' compute_mask."""
    masking = Masking(0.0)
    model = Sequential([Masking(0.0), LSTM(2, return_sequences=return_sequences)])
    return {
        "input x": None,
        "after Masking(0.0)": masking.compute_mask(X, None),
        f"after LSTM(return_sequences={return_sequences})": model.compute_mask(X),
        "mask the loss sees": model.compute_mask(X),
    }


def draw() -> Figure:
    fig = Figure(figsize=(6.4, 3.5), layout="constrained")  # drawn at the size the site shows it (about 700 px)
    rows = fig.subfigures(2, 1)
    for row, flag in enumerate((True, False)):
        axes = rows[row].subplots(1, 4)
        fate = "the mask reaches the loss" if flag else "the mask is dropped"
        rows[row].suptitle(f"return_sequences={flag}: {fate}", fontsize=9)
        for ax, (name, mask) in zip(axes, stage_masks(flag).items(), strict=True):
            ax.set_xlim(0, X.shape[1])
            ax.set_ylim(X.shape[0], 0)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title(name.replace("(return", "\n(return").replace(" sees", "\nsees"), fontsize=8)
            if name == "input x":
                for (b, t), value in np.ndenumerate(X[..., 0]):
                    ax.add_patch(Rectangle((t, b), 1, 1, facecolor="white", edgecolor="black"))
                    ax.text(t + 0.5, b + 0.5, f"{value:g}", ha="center", va="center", fontsize=8)
            elif mask is None:
                text = "mask = None\n(one output\nper sequence)"
                ax.text(2, 1, text, ha="center", va="center", fontsize=8, color=VERMILION)
            else:
                for (b, t), valid in np.ndenumerate(mask):
                    ax.add_patch(
                        Rectangle(
                            (t, b),
                            1,
                            1,
                            facecolor=SKY if valid else GREY,
                            edgecolor="black",
                            hatch=None if valid else "//",
                        )
                    )
                    box = None if valid else {"boxstyle": "square,pad=0.15", "facecolor": "white", "edgecolor": "none"}
                    ax.text(t + 0.5, b + 0.5, "T" if valid else "F", ha="center", va="center", fontsize=8, bbox=box)
    return fig
