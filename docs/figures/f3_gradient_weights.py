"""F3: the per-step gradient weight of each reduction, as heatmaps.

Alt text: Four heatmaps of a 3-by-5 padded batch (3, 5 and 1 valid steps), one per reduction,
each cell coloured and labelled with the derivative of the loss with respect to that step's loss;
padded cells are 0.

Caption: The gradient a step receives is the reduction's coefficient for its sequence.
``token_mean`` gives every valid step 1/9; ``sequence_mean`` gives the steps of a short sequence
more weight (1/3 for the single step, 1/15 for the long one); ``batch_mean`` 1/3 each;
``element_mean`` 1/15 = 1/(BT), the padded steps counted too (padding the batch to twice the length
would halve it). Padding always gets 0.
"""

from __future__ import annotations

import numpy as np
from _style import seed_batch
from matplotlib.figure import Figure

import maskloss

REDUCTIONS = ("token_mean", "sequence_mean", "batch_mean", "element_mean")


def weights() -> dict[str, np.ndarray]:
    """d loss / d per-step loss under each reduction: MaskedTotals.sequence_scale on the valid steps."""
    losses, mask = seed_batch()
    numerator = np.where(mask, np.nan_to_num(losses), 0.0)
    totals = maskloss.MaskedTotals.from_terms(numerator, mask.astype(np.float64))
    return {name: np.where(mask, totals.sequence_scale(name)[:, None], 0.0) for name in REDUCTIONS}


def draw() -> Figure:
    grads = weights()
    fig = Figure(figsize=(6.4, 4.5), layout="constrained")  # drawn at the size the site shows it
    grid = fig.subplots(2, 2, sharex=True, sharey=True)
    axes = list(grid.flat)
    top = max(float(g.max()) for g in grads.values())
    for i, (ax, name) in enumerate(zip(axes, REDUCTIONS, strict=True)):
        g = grads[name]
        image = ax.imshow(g, cmap="cividis", vmin=0, vmax=top)
        for (b, t), value in np.ndenumerate(g):
            colour = "black" if value > top / 2 else "white"
            ax.text(t, b, f"{value:.3f}" if value else "0", ha="center", va="center", fontsize=8, color=colour)
        ax.set_title(name, fontsize=10)
        if i >= 2:  # axis labels on the outer panels only, so none runs into a neighbouring panel
            ax.set_xlabel("step t")
        if i % 2 == 0:
            ax.set_ylabel("sequence b")
        ax.set_xticks(range(g.shape[1]))
        ax.set_yticks(range(g.shape[0]))
    fig.colorbar(image, ax=axes, shrink=0.8, label="d loss / d step loss")
    fig.suptitle("Gradient weight per step (padding: 0)", fontsize=11)
    return fig
