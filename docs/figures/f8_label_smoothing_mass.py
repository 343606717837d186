r"""F8: label-smoothing mass, eps/C vs eps/(C-1).

Alt text: Two bar charts of the target distribution over 5 classes with the gold class 2 and
smoothing 0.3. Left (torch label_smoothing, fairseq 0.10 and earlier): the gold class gets
0.76 and every other class 0.06. Right (fairseq 0.12 and later): the gold class gets 0.7 and
every other class 0.075.

Caption: Both rules take mass $\varepsilon$ from the gold class, but $\varepsilon/C$ spreads it over
all $C$ classes, the gold one included (so the gold class keeps $1-\varepsilon+\varepsilon/C$),
while $\varepsilon/(C-1)$ spreads it over the $C-1$ wrong classes only (the gold class keeps
exactly $1-\varepsilon$). The same $\varepsilon$ is a different loss.
"""

from __future__ import annotations

import numpy as np
from _style import BLUE, ORANGE
from matplotlib.figure import Figure

from maskloss.conventions import fairseq

CLASSES = 5
GOLD = 2
EPSILON = 0.3
#: (panel title, fairseq version selecting the rule)
RULES = (
    ("eps / C\ntorch label_smoothing, fairseq <= 0.10", "0.10"),
    ("eps / (C-1)\nfairseq >= 0.12", "0.12"),
)


def target_distribution(version: str) -> np.ndarray:
    """The mass each class gets: the loss is -sum_c q_c lp_c, so q_c is the loss at lp = -e_c."""
    unit = -np.eye(CLASSES)  # row c: log-probabilities -1 at class c, 0 elsewhere
    loss, _ = fairseq.label_smoothed_nll_loss(unit, np.full(CLASSES, GOLD), EPSILON, reduce=False, version=version)
    return np.asarray(loss, dtype=np.float64).reshape(CLASSES)


def draw() -> Figure:
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")  # drawn at the size the site shows it
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (title, version) in zip(axes, RULES, strict=True):
        q = target_distribution(version)
        colours = [ORANGE if c == GOLD else BLUE for c in range(CLASSES)]
        ax.bar(range(CLASSES), q, color=colours)
        for c, mass in enumerate(q):
            ax.text(c, mass + 0.02, f"{mass:.3g}", ha="center", fontsize=8)
        # short tick labels, the gold one on two lines: five fit under a half-width panel
        ax.set_xticks(range(CLASSES), [f"{c}\n(gold)" if c == GOLD else f"{c}" for c in range(CLASSES)])
        ax.set_xlabel("class")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.0)
    axes[0].set_ylabel("target mass")
    fig.suptitle(f"Label smoothing eps = {EPSILON}, C = {CLASSES} classes", fontsize=10)
    return fig
