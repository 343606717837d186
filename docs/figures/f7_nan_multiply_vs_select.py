"""F7: NaN under the mask, multiply vs select, forward and backward.

Alt text: Three bar charts for one sequence of 4 valid steps and 2 padded steps whose predictions
are NaN, with the per-step loss 0.5 * prediction**2, each comparing `x * mask` with selecting by
`where`. Top left: the loss value, NaN by multiplying, 3.75 by selecting. Top right: the gradient
with respect to the per-step losses, 0.25 at the four valid steps and 0 at the padded ones for
both. Bottom: the gradient with respect to the predictions, 0.25, 0.5, 0.75 and 1 at the valid
steps for both, NaN at the padded steps by multiplying and 0 by selecting.

Caption: ``NaN * 0`` is NaN, so multiplying by the mask makes the loss NaN. The backward pass of
``sum(x * m) / sum(m)`` gives the per-step losses the finite weight ``m / sum(m)`` (0.25 at the
valid steps, 0 at the padded ones), but the chain rule multiplies that 0 by the NaN derivative
of the padded steps' losses: the gradient with respect to the predictions is NaN at the padded
steps only, and reaches every parameter they share. Selecting the predictions before the
arithmetic (``where(m, p, 0)``) never reads the padded values: the loss is finite and the padded
steps get a zero gradient. Every bar is computed by torch autograd in float64 when torch is
installed (the figure's footer says which computed it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from _style import BLUE, VERMILION
from matplotlib.figure import Figure

import maskloss

PREDICTIONS = np.array([[1.0, 2.0, 3.0, 4.0, np.nan, np.nan]])
MASK = np.array([[True, True, True, True, False, False]])
RULES = ("x * mask", "select")


@dataclass(frozen=True)
class Pass:
    """One rule's forward value and its two gradients (one row of the example)."""

    value: float
    grad_losses: np.ndarray  # d loss / d per-step loss
    grad_predictions: np.ndarray  # d loss / d prediction


def by_torch() -> dict[str, Pass]:
    """Both rules run through real torch autograd in float64 (ImportError without torch).

    ``x * mask``: ``l = 0.5 * p**2``, loss ``sum(l * m) / sum(m)``. ``select``: the predictions
    selected first, ``l = 0.5 * where(m, p, 0)**2``, loss ``sum(where(m, l, 0)) / sum(m)``.
    """
    import torch

    mask = torch.tensor(MASK)
    count = mask.sum().to(torch.float64)
    passes = {}
    for rule in RULES:
        p = torch.tensor(PREDICTIONS, dtype=torch.float64, requires_grad=True)
        if rule == "x * mask":
            losses = 0.5 * p**2
            losses.retain_grad()
            loss = torch.sum(losses * mask) / count
        else:
            losses = 0.5 * torch.where(mask, p, torch.zeros_like(p)) ** 2
            losses.retain_grad()
            loss = torch.sum(torch.where(mask, losses, torch.zeros_like(losses))) / count
        loss.backward()
        assert losses.grad is not None and p.grad is not None
        passes[rule] = Pass(float(loss.detach()), losses.grad.numpy()[0].copy(), p.grad.numpy()[0].copy())
    return passes


def by_numpy() -> dict[str, Pass]:
    """The same numbers without torch: the chain rule in NumPy, maskloss for the select rule.

    ``d/dl_t`` of ``sum(l * m) / sum(m)`` is ``m_t / sum(m)`` whatever ``l`` holds; the chain rule
    multiplies it by ``dl_t/dp_t = p_t`` (NaN at the padded steps: ``0 * NaN = NaN``). The select
    rule's value is :func:`maskloss.reduce` and its weights ``MaskedTotals.sequence_scale``.
    ``tests/test_docs_generated.py`` checks that both equal :func:`by_torch`.
    """
    losses = 0.5 * PREDICTIONS**2
    with np.errstate(invalid="ignore"):
        value = float(np.sum(losses * MASK) / np.sum(MASK))
        weight = MASK / MASK.sum()
        multiply = Pass(value, weight[0], (weight * PREDICTIONS)[0])
    totals = maskloss.MaskedTotals.from_terms(np.where(MASK, losses, 0.0), MASK.astype(np.float64))
    scale = np.where(MASK, totals.sequence_scale("token_mean")[:, None], 0.0)
    select = Pass(float(maskloss.reduce(losses, MASK)), scale[0], (scale * np.where(MASK, PREDICTIONS, 0.0))[0])
    return {"x * mask": multiply, "select": select}


def computed() -> tuple[str, dict[str, Pass]]:
    """(what computed the bars, the bars): torch autograd when torch is installed, else NumPy."""
    try:
        import torch
    except ImportError:
        return "NumPy's chain rule (torch not installed; the tests check it equals torch autograd)", by_numpy()
    return f"torch {torch.__version__.split('+')[0]} autograd, float64", by_torch()


def _grouped(ax: object, series: dict[str, np.ndarray], title: str, ylabel: str) -> None:
    steps = np.arange(PREDICTIONS.shape[1])
    width = 0.4
    colours = {"x * mask": VERMILION, "select": BLUE}
    for k, (rule, values) in enumerate(series.items()):
        x = steps + (k - 0.5) * width
        ax.bar(x, np.nan_to_num(values), width, color=colours[rule], label=rule)  # type: ignore[attr-defined]
        for xi, v in zip(x, values, strict=True):
            label = "NaN" if np.isnan(v) else f"{v:g}"
            colour = VERMILION if np.isnan(v) else "black"
            y = (0 if np.isnan(v) else v) + 0.02
            ax.text(xi, y, label, ha="center", va="bottom", fontsize=7, rotation=90, color=colour)  # type: ignore[attr-defined]
    ax.set_xticks(steps, [f"t={t}\n{'valid' if MASK[0, t] else 'pad'}" for t in steps], fontsize=8)  # type: ignore[attr-defined]
    ax.set_title(title, fontsize=9)  # type: ignore[attr-defined]
    ax.set_ylabel(ylabel, fontsize=8)  # type: ignore[attr-defined]
    ax.tick_params(axis="y", labelsize=8)  # type: ignore[attr-defined]


def draw() -> Figure:
    source, passes = computed()
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")  # drawn at the size the site shows it (about 700 px)
    grid = fig.add_gridspec(2, 2, width_ratios=[1, 2.6])
    ax_value = fig.add_subplot(grid[0, 0])
    ax_losses = fig.add_subplot(grid[0, 1])
    ax_pred = fig.add_subplot(grid[1, :])
    values = [passes[r].value for r in RULES]
    ax_value.bar(RULES, np.nan_to_num(values), color=[VERMILION, BLUE])
    for i, v in enumerate(values):
        ax_value.text(i, 0.1 if np.isnan(v) else v + 0.1, "NaN" if np.isnan(v) else f"{v:g}", ha="center", fontsize=9)
    ax_value.set_ylim(0, max(np.nan_to_num(values)) * 1.25)
    ax_value.set_title("forward: loss value", fontsize=9)
    ax_value.tick_params(labelsize=8)
    _grouped(ax_losses, {r: passes[r].grad_losses for r in RULES}, "backward: d loss / d step loss", "")
    ax_losses.set_ylim(0, 0.45)
    _grouped(ax_pred, {r: passes[r].grad_predictions for r in RULES}, "backward: d loss / d prediction", "")
    ax_pred.set_ylim(0, 1.35)
    ax_pred.legend(loc="upper left", fontsize=8)
    fig.suptitle("Predictions NaN at the 2 padded steps, step loss 0.5 p²", fontsize=10)
    fig.get_layout_engine().set(h_pad=0.08)  # type: ignore[union-attr]
    fig.supxlabel(f"computed by {source}", fontsize=7, color="#555555", ha="right", x=0.99)
    return fig
