"""F2: one grid five times, shading what each reduction's denominator counts.

Alt text: Five copies of a 3-by-5 grid of per-step losses (three sequences of 3, 5 and 1 valid
steps). In each copy the cells its denominator counts are shaded; the title gives the reduction,
its denominator and the resulting loss.

Caption: The numerator is always the sum of the valid losses (19 here); only the denominator
changes. ``sum`` divides by nothing, ``token_mean`` by the 9 valid steps, ``sequence_mean`` averages
the per-sequence means, ``batch_mean`` divides by the 3 sequences and ``element_mean`` by all 15
steps, padding included.
"""

from __future__ import annotations

from _style import BLUE, GREY, ORANGE, seed_batch
from matplotlib.figure import Figure

import maskloss

#: (reduction, what its denominator counts) in the order of the panels.
PANELS = (
    ("sum", "no denominator"),
    ("token_mean", "valid steps"),
    ("sequence_mean", "valid steps per\nsequence, then sequences"),
    ("batch_mean", "sequences"),
    ("element_mean", "all steps,\npadding included"),
)


def values() -> dict[str, float]:
    """Each reduction of the seed batch, computed by :func:`maskloss.reduce`."""
    losses, mask = seed_batch()
    return {name: float(maskloss.reduce(losses, mask, reduction=name)) for name, _ in PANELS}


def draw() -> Figure:
    losses, mask = seed_batch()
    results = values()
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")  # drawn at the size the site shows it (about 700 px)
    grid = fig.subplots(2, 3)
    grid[1, 2].axis("off")  # five panels in a 2 x 3 grid: the last cell stays empty
    axes = list(grid.flat)[: len(PANELS)]
    batch, steps = mask.shape
    for ax, (name, counts) in zip(axes, PANELS, strict=True):
        for b in range(batch):
            for t in range(steps):
                counted = {
                    "sum": False,
                    "token_mean": bool(mask[b, t]),
                    "sequence_mean": bool(mask[b, t]),
                    "batch_mean": t == 0,
                    "element_mean": True,
                }[name]
                face = (ORANGE if counted else "white") if mask[b, t] else (ORANGE if counted else GREY)
                ax.add_patch(_cell(t, b, face, hatch=None if mask[b, t] else "//"))
                text = f"{losses[b, t]:g}" if mask[b, t] else "pad"
                size = 8 if mask[b, t] else 7
                ax.text(t + 0.5, b + 0.5, text, ha="center", va="center", fontsize=size)
            if name == "sequence_mean":
                ax.text(steps + 0.1, b + 0.5, f"/{int(mask[b].sum())}", va="center", fontsize=9, color=BLUE)
            if name == "batch_mean":
                ax.text(steps + 0.1, b + 0.5, "1 seq", va="center", fontsize=8, color=BLUE)
        ax.set_xlim(0, steps + 1.2)
        ax.set_ylim(batch, 0)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{name}\ncounts: {counts}\n= {results[name]:.4g}", fontsize=9)
    fig.suptitle(
        f"Numerator: sum of valid losses = {results['sum']:g}.\nShaded: what the denominator counts.", fontsize=10
    )
    return fig


def _cell(t: int, b: int, face: str, hatch: str | None) -> object:
    from matplotlib.patches import Rectangle

    return Rectangle((t, b), 1, 1, facecolor=face, edgecolor="black", hatch=hatch, linewidth=0.8)
