"""F7: NaN under the mask, multiply vs select, forward and backward.

Alt text: Two panels for one sequence of 4 valid steps and 2 padded steps whose predictions are
NaN, with the per-step loss 0.5 * prediction**2. Left: the loss value by `x * mask` (NaN) and by
`np.where` (finite). Right: the gradient with respect to each step's prediction: with multiply
the valid steps get the right gradient and the padded steps NaN; with select the padded steps get
exactly 0.

Caption: ``NaN * 0`` is NaN, so multiplying by the mask makes the loss NaN. The backward pass of
``sum(x * m) / sum(m)`` gives the per-step losses the finite weight ``m / sum(m)`` (0.25 at the
valid steps, 0 at the padded ones), but the chain rule multiplies that 0 by the NaN derivative
of the padded steps' losses: the gradient with respect to the predictions is NaN at the padded
steps, and reaches every parameter they share. Selecting with ``np.where`` never reads the
padded values: the loss is finite and padded steps get a zero gradient. The bars are computed
(the chain rule below); ``tests/test_docs_generated.py`` checks them against torch autograd.
"""

from __future__ import annotations

import numpy as np
from _style import BLUE, VERMILION
from matplotlib.figure import Figure

import maskloss

PREDICTIONS = np.array([[1.0, 2.0, 3.0, 4.0, np.nan, np.nan]])
MASK = np.array([[True, True, True, True, False, False]])


def step_losses() -> tuple[np.ndarray, np.ndarray]:
    """The per-step loss ``0.5 * p**2`` and its derivative ``p`` (NaN where ``p`` is NaN)."""
    return 0.5 * PREDICTIONS**2, PREDICTIONS.copy()


def multiply() -> tuple[float, np.ndarray, np.ndarray]:
    """The wrong rule, mean of ``x * mask``: value, gradient w.r.t. the per-step losses, w.r.t. the predictions."""
    losses, dloss = step_losses()
    with np.errstate(invalid="ignore"):
        value = float(np.sum(losses * MASK) / np.sum(MASK))
        # d/dx of sum(x * m) / sum(m) is m / sum(m), whatever x holds; the chain rule then
        # multiplies it by dl/dp, and 0 * NaN = NaN at the padded steps.
        grad_losses = MASK / MASK.sum()
        grad_predictions = grad_losses * dloss
    return value, grad_losses[0], grad_predictions[0]


def select() -> tuple[float, np.ndarray]:
    """The right rule, by maskloss: ``reduce`` for the value, ``MaskedTotals.sequence_scale`` for the gradient."""
    losses, dloss = step_losses()
    value = float(maskloss.reduce(losses, MASK))
    totals = maskloss.MaskedTotals.from_terms(np.where(MASK, losses, 0.0), MASK.astype(float))
    grad = np.where(MASK, totals.sequence_scale("token_mean")[:, None] * np.where(MASK, dloss, 0.0), 0.0)
    return value, grad[0]


def draw() -> Figure:
    (v_mul, _, g_mul), (v_sel, g_sel) = multiply(), select()
    fig = Figure(figsize=(11, 3.4))
    ax_value, ax_grad = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2.5]})
    labels = ["x * mask", "np.where"]
    ax_value.bar(labels, [0.0 if np.isnan(v_mul) else v_mul, v_sel], color=[VERMILION, BLUE])
    for i, v in enumerate([v_mul, v_sel]):
        ax_value.text(i, 0.05, "NaN" if np.isnan(v) else f"{v:.3g}", ha="center", fontsize=11, color="black")
    ax_value.set_title("forward: loss value")
    steps = np.arange(PREDICTIONS.shape[1])
    width = 0.38
    ax_grad.bar(steps - width / 2, np.nan_to_num(g_mul), width, color=VERMILION, label="x * mask")
    ax_grad.bar(steps + width / 2, g_sel, width, color=BLUE, label="np.where")
    for t in steps:
        if np.isnan(g_mul[t]):
            ax_grad.text(t - width / 2, 0.01, "NaN", ha="center", rotation=90, fontsize=9, color=VERMILION)
    ax_grad.set_xticks(steps, [f"t={t}\n{'valid' if MASK[0, t] else 'pad (NaN)'}" for t in steps])
    ax_grad.set_title("backward: gradient w.r.t. each prediction")
    ax_grad.legend(loc="upper right")
    return fig
