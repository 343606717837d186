"""F9: the gradient weight of one token against its response's length, under each aggregation mode.

Alt text: Gradient weight of one token against the length of its response, one line per
aggregation mode, log scale.

Caption: The weight of one token of a response of $D_b$ tokens, in a batch with three responses of
8 tokens. The sequence mean falls as $1/D_b$; the token mean falls slowly as the batch's token
count grows; the two sums do not depend on $D_b$.

A batch of four responses: three of 8 tokens and one of length D_b (1..16). Every mode is linear in
the per-token losses, so the weight of a token, d(loss)/d(loss_bt), is the change of
:func:`maskloss.aggregate` when that token's loss grows by 1: computed by maskloss, not by formula.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

import maskloss

MAX_LEN = 16
OTHERS = 8
MODES = ("token_mean", "sequence_mean", "batch_mean", "constant")
LABELS = {
    "token_mean": "token mean (bnpo, DAPO per step)",
    "sequence_mean": "sequence mean (GRPO)",
    "batch_mean": "sum per sequence / B",
    "constant": "sum / (B · max length) (Dr. GRPO)",
}


def weights(mode: str) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.arange(1, MAX_LEN + 1)
    out = []
    for length in lengths:
        mask = np.arange(MAX_LEN)[None, :] < np.array([length, OTHERS, OTHERS, OTHERS])[:, None]
        loss = np.zeros(mask.shape)
        bumped = loss.copy()
        bumped[0, 0] = 1.0
        before = maskloss.aggregate(loss, mask, mode=mode, constant=4 * MAX_LEN)
        out.append(float(maskloss.aggregate(bumped, mask, mode=mode, constant=4 * MAX_LEN) - before))
    return lengths, np.array(out)


def draw() -> Figure:
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    for mode in MODES:
        lengths, w = weights(mode)
        ax.plot(lengths, w, marker="o", markersize=3, label=LABELS[mode])
    ax.set_xlabel("length $D_b$ of the response holding the token")
    ax.set_ylabel("gradient weight of one token")
    ax.set_yscale("log")
    ax.set_title("Length bias: batch of 3 responses of 8 tokens and one of $D_b$")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
