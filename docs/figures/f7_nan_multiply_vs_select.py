"""F7: NaN under the mask, multiply vs select, forward and backward.

Alt text: Two rows of bars for one sequence of 4 valid steps and 2 padded steps holding NaN.
Left: the loss value by `x * mask` (NaN) and by `np.where` (finite). Right: the per-step
gradient by each rule; with multiply every step's gradient is NaN, with select the padded steps
get exactly 0.

Caption: ``NaN * 0`` is NaN, so multiplying by the mask lets one NaN under the mask poison the
loss and, through the sum, every gradient. Selecting with ``np.where`` never reads the padded
values: the loss is finite and padded steps get a zero gradient.
"""

from __future__ import annotations

import numpy as np
from _style import BLUE, VERMILION
from matplotlib.figure import Figure

import maskloss

LOSSES = np.array([[0.5, 1.0, 1.5, 2.0, np.nan, np.nan]])
MASK = np.array([[True, True, True, True, False, False]])


def multiply() -> tuple[float, np.ndarray]:
    """The wrong rule, mean of ``x * mask``, and its analytic gradient ``mask / sum(mask)``."""
    with np.errstate(invalid="ignore"):
        value = float(np.sum(LOSSES * MASK) / np.sum(MASK))
        # d/dx of sum(x * m) / sum(m) is m / sum(m); the chain rule through a NaN sum is NaN.
        grad = np.where(np.isnan(value), np.nan, MASK / MASK.sum())
    return value, grad[0]


def select() -> tuple[float, np.ndarray]:
    """The right rule, by maskloss: ``reduce`` for the value, ``MaskedTotals.sequence_scale`` for the gradient."""
    value = float(maskloss.reduce(LOSSES, MASK))
    totals = maskloss.MaskedTotals.from_terms(np.where(MASK, LOSSES, 0.0), MASK.astype(float))
    grad = np.where(MASK, totals.sequence_scale("token_mean")[:, None], 0.0)
    return value, grad[0]


def draw() -> Figure:
    (v_mul, g_mul), (v_sel, g_sel) = multiply(), select()
    fig = Figure(figsize=(11, 3.4))
    ax_value, ax_grad = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2.5]})
    labels = ["x * mask", "np.where"]
    ax_value.bar(labels, [0.0 if np.isnan(v_mul) else v_mul, v_sel], color=[VERMILION, BLUE])
    for i, v in enumerate([v_mul, v_sel]):
        ax_value.text(i, 0.05, "NaN" if np.isnan(v) else f"{v:.3g}", ha="center", fontsize=11, color="black")
    ax_value.set_title("forward: loss value")
    steps = np.arange(LOSSES.shape[1])
    width = 0.38
    ax_grad.bar(steps - width / 2, np.nan_to_num(g_mul), width, color=VERMILION, label="x * mask")
    ax_grad.bar(steps + width / 2, g_sel, width, color=BLUE, label="np.where")
    for t in steps:
        if np.isnan(g_mul[t]):
            ax_grad.text(t - width / 2, 0.01, "NaN", ha="center", rotation=90, fontsize=9, color=VERMILION)
    ax_grad.set_xticks(steps, [f"t={t}\n{'valid' if MASK[0, t] else 'pad (NaN)'}" for t in steps])
    ax_grad.set_title("backward: gradient per step")
    ax_grad.legend(loc="upper right")
    return fig
