"""``maskloss demo``: the seed example, step by step, needing no framework."""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np

import maskloss
from maskloss._types import FloatArray

#: The seed's inputs: two sequences of 5 steps with 2 features, padded with zeros on the left.
SEED_X = np.array(
    [
        [[0, 0], [0, 0], [1, 0], [0, 1], [0, 1]],
        [[0, 0], [0, 1], [1, 0], [0, 1], [0, 1]],
    ],
    dtype=np.float64,
)
#: The seed's targets: ones, 3 units per step.
SEED_Y_TRUE = np.ones((2, 5, 3))
#: A fixed stand-in for the output of the seed's LSTM(3): zeros at the leading masked
#: steps (what Keras emits there), small activations elsewhere. Chosen by hand.
SEED_Y_PRED = np.array(
    [
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.1, -0.2, 0.3], [0.2, -0.1, 0.4], [0.3, 0.0, 0.5]],
        [[0.0, 0.0, 0.0], [0.1, 0.2, -0.1], [0.2, 0.1, 0.2], [0.3, 0.2, 0.3], [0.4, 0.3, 0.4]],
    ]
)

_MEANINGS = {
    "sum": "sum over valid steps",
    "token_mean": "mean over the valid steps: what Keras 2 `evaluate` reports (score *= mask; score /= mean(mask))",
    "sequence_mean": "mean of each sequence's own mean (AllenNLP's default)",
    "batch_mean": "sum over valid steps / number of sequences",
    "element_mean": "sum over valid steps / all steps, padding counted (tf.keras 2.0-2.10)",
}


def _fmt(a: FloatArray) -> str:
    return np.array2string(np.asarray(a), precision=4, suppress_small=True, separator=", ")


def demo(out: TextIO | None = None) -> int:
    """Print the seed example: inputs, mask, per-step losses, every reduction, the wrong mean."""
    stream = out if out is not None else sys.stdout
    p = lambda *a: print(*a, file=stream)  # noqa: E731
    mask = maskloss.mask_from_padding(SEED_X, 0.0)
    p("maskloss demo: the seed example (Keras: Input(5, 2) -> Masking(0) -> LSTM(3), loss 'mae')")
    p()
    p("X (batch 2, 5 steps, 2 features); a step is padding when ALL its features equal 0:")
    p(_fmt(SEED_X))
    p()
    p("mask = maskloss.mask_from_padding(X, 0.0)   (True = valid step)")
    p(_fmt(mask.astype(int)))
    p(f"-> {int(mask.sum())} valid steps out of {mask.size}")
    p()
    p("y_true = ones((2, 5, 3)); y_pred = a fixed stand-in for the LSTM output (0 at leading masked steps):")
    p(_fmt(SEED_Y_PRED))
    p()
    per_step = maskloss.mae(SEED_Y_TRUE, SEED_Y_PRED, mask, reduction="none")
    p("per-step MAE (mean over the 3 units), exactly 0 at masked steps  [reduction='none']:")
    p(_fmt(per_step))
    p()
    p("every reduction of the masked loss:")
    for name in maskloss.SCALAR_REDUCTIONS:
        value = float(maskloss.mae(SEED_Y_TRUE, SEED_Y_PRED, mask, reduction=name))
        p(f"  {name:<14} {value:10.6f}   {_MEANINGS[name]}")
    wrong = float(maskloss.mae(SEED_Y_TRUE, SEED_Y_PRED))
    p(f"  {'unmasked mean':<14} {wrong:10.6f}   WRONG: the padded steps' error leaks into the mean")
    p()
    p("The seed's second case: one-hot targets over [a, b, #], where '#' marks padding.")
    y_true = np.array([[[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]]], dtype=np.float64)
    y_pred = np.array([[[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]]])
    sentinel_mask = maskloss.mask_from_sentinel(y_true, [0, 0, 1])
    p("mask = maskloss.mask_from_sentinel(y_true, [0, 0, 1]) ->", _fmt(sentinel_mask.astype(int)))
    ce_masked = float(maskloss.categorical_crossentropy(y_true, y_pred, sentinel_mask))
    ce_all = float(maskloss.categorical_crossentropy(y_true, y_pred))
    p(f"  masked cross-entropy  sum(ce * mask) / sum(mask) = {ce_masked:.6f}")
    p(f"  unmasked mean (wrong: scores the '#' padding)     = {ce_all:.6f}")
    return 0
