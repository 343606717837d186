"""``maskloss demo``: the seed example replayed end to end, needing no framework.

The seed: ``Input(5, 2) -> Masking(0) -> LSTM(3, return_sequences=True)``, loss ``mae``,
on two left-padded sequences. The demo builds that model from :mod:`maskloss.layers`
(fixed seeded weights), shows the mask after each layer, the prediction, the per-step
losses, every reduction, the wrong unmasked mean, the ``return_sequences=False`` variant
where the mask stops, and the seed's sentinel-target case. ``keras=True`` replays the
same model, with the same weights, in real Keras 3 and prints both side by side.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

import numpy as np

import maskloss
from maskloss._types import FloatArray
from maskloss.layers import LSTM, Masking, Sequential, describe
from maskloss.layers.describe import draw_mask

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
#: The seed of the LSTM's weights (see :mod:`maskloss.layers._base` for the distributions).
SEED_WEIGHTS = 0


def seed_model(return_sequences: bool = True) -> Sequential:
    """The seed's model, ``Masking(0) -> LSTM(3)``, with the demo's fixed weights."""
    return Sequential([Masking(0.0), LSTM(3, return_sequences=return_sequences, seed=SEED_WEIGHTS)])


#: The seed model's output on :data:`SEED_X`: zeros at the leading masked steps (h0 = 0).
SEED_Y_PRED = seed_model()(SEED_X)

_MEANINGS = {
    "sum": "sum over valid steps",
    "token_mean": "mean over valid steps: Keras 2.0-2.2.5 and 3, sum(L*m)/sum(m)",
    "sequence_mean": "mean of each sequence's own mean (AllenNLP's default)",
    "batch_mean": "sum over valid steps / number of sequences",
    "element_mean": "sum / all steps, padding counted (Keras 2.3, tf.keras 2.0-2.10)",
}


def _fmt(a: Any) -> str:
    arr = np.asarray(a)
    if arr.dtype.kind == "f":  # fixed width, so that columns of vectors line up
        return np.array2string(arr, separator=", ", formatter={"float_kind": lambda v: f"{v:7.4f}"})
    return np.array2string(arr, separator=", ")


def demo(out: TextIO | None = None, keras: bool = False) -> int:
    """Print the seed example end to end; with ``keras=True`` also replay it in real Keras 3."""
    stream = out if out is not None else sys.stdout

    def p(*args: object) -> None:
        print(*args, file=stream)

    model = seed_model()
    mask = model.compute_mask(SEED_X)
    y_pred = model(SEED_X)
    p("maskloss demo: the seed example (Keras: Input(5, 2) -> Masking(0) -> LSTM(3, return_sequences=True),")
    p(f"loss 'mae'), replayed with maskloss.layers and fixed weights (seed={SEED_WEIGHTS})")
    p()
    p("X (batch 2, 5 steps, 2 features); a step is padding when ALL its features equal 0:")
    p(_fmt(SEED_X))
    p()
    p("1. The mask after each layer ('#' valid step, '.' masked;")
    p("   Masking creates it, the LSTM passes it on):")
    p(describe(model, SEED_X))
    p()
    p("2. y_pred = model(X): at the leading masked steps the LSTM emits its initial state h0 = 0;")
    p("   it skips masked steps, carrying its state to the first valid one:")
    p(_fmt(y_pred))
    p()
    per_step = maskloss.mae(SEED_Y_TRUE, y_pred, mask, reduction="none")
    p("3. per-step MAE (mean over the 3 units), exactly 0 at masked steps  [reduction='none']:")
    p(_fmt(per_step))
    p()
    p("4. every reduction of the masked loss (the output mask applied):")
    for name in maskloss.SCALAR_REDUCTIONS:
        value = float(maskloss.mae(SEED_Y_TRUE, y_pred, mask, reduction=name))
        p(f"  {name:<14} {value:10.6f}   {_MEANINGS[name]}")
    wrong = float(maskloss.mae(SEED_Y_TRUE, y_pred))
    p(f"  {'unmasked mean':<14} {wrong:10.6f}   WRONG: the padded steps' error leaks into the mean")
    evaluated = float(model.evaluate(SEED_X, SEED_Y_TRUE))
    p(f"  model.evaluate(X, y_true) = {evaluated:.6f}  (token_mean over the output mask)")
    p()
    last_model = seed_model(return_sequences=False)
    y_last = last_model(SEED_X)
    p("5. LSTM(3) without return_sequences: one output per sequence (the last valid step), and the")
    p("   mask stops there: RNN.compute_mask returns None, so every output counts in the loss:")
    p(describe(last_model, SEED_X))
    p("   y_pred:")
    p(_fmt(y_last))
    p(f"   model.evaluate(X, ones((2, 3))) = {float(last_model.evaluate(SEED_X, np.ones((2, 3)))):.6f}")
    p()
    _sentinel(p)
    if keras:
        p()
        _keras_replay(p, model, last_model)
    return 0


def _sentinel(p: Any) -> None:
    p("6. The seed's second case: one-hot targets over [a, b, #], where '#' marks padding.")
    y_true = np.array([[[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]]], dtype=np.float64)
    y_pred = np.array([[[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]]])
    sentinel_mask = maskloss.mask_from_sentinel(y_true, [0, 0, 1])
    p("mask = maskloss.mask_from_sentinel(y_true, [0, 0, 1]) ->", _fmt(sentinel_mask.astype(int)))
    ce_masked = float(maskloss.categorical_crossentropy(y_true, y_pred, sentinel_mask))
    ce_all = float(maskloss.categorical_crossentropy(y_true, y_pred))
    p(f"  masked cross-entropy  sum(ce * mask) / sum(mask) = {ce_masked:.6f}")
    p(f"  unmasked mean (wrong: scores the '#' padding)     = {ce_all:.6f}")


def _keras_model(keras: Any, reference: Sequential, return_sequences: bool) -> Any:
    inp = keras.Input((5, 2))
    lstm = keras.layers.LSTM(3, return_sequences=return_sequences)
    model = keras.Model(inp, lstm(keras.layers.Masking(0.0)(inp)))
    lstm.set_weights(reference.layers[1].get_weights())
    model.compile(loss="mae")
    return model


def _keras_replay(p: Any, model: Sequential, last_model: Sequential) -> None:
    """Run the same two models in real Keras 3 with the same weights; print both and the difference."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError as exc:
        p(f"7. Keras 3 is not installed ({exc}): install keras and jax to replay the seed in real Keras.")
        return
    p(f"7. The same model in real Keras {keras.__version__} (backend {keras.backend.backend()}, float32),")
    p("   the same weights; reference (float64) | Keras | |difference|:")
    k_model = _keras_model(keras, model, return_sequences=True)
    k_out = k_model(SEED_X.astype(np.float32))
    theirs: FloatArray = np.asarray(k_out, dtype=np.float64)
    ours = model(SEED_X)
    for b in range(ours.shape[0]):
        for t in range(ours.shape[1]):
            diff = np.abs(ours[b, t] - theirs[b, t]).max()
            p(f"   b={b} t={t}  {_fmt(ours[b, t])}  {_fmt(theirs[b, t])}  {diff:.1e}")
    k_mask = getattr(k_out, "_keras_mask", None)
    r_mask = model.compute_mask(SEED_X)
    same = k_mask is not None and r_mask is not None and np.array_equal(np.asarray(k_mask), r_mask)
    p(f"   output mask: reference {draw_mask(r_mask)}  Keras {draw_mask(k_mask)}  "
      f"({'the same' if same else 'DIFFERENT'})")  # fmt: skip
    k_loss = float(k_model.evaluate(SEED_X, SEED_Y_TRUE, batch_size=2, verbose=0))
    r_loss = float(model.evaluate(SEED_X, SEED_Y_TRUE))
    p(f"   evaluate: reference {r_loss:.6f}  Keras {k_loss:.6f}  |difference| {abs(r_loss - k_loss):.1e}")
    k_last = _keras_model(keras, last_model, return_sequences=False)
    y_last = np.asarray(k_last(SEED_X.astype(np.float32)), dtype=np.float64)
    diff = np.abs(last_model(SEED_X) - y_last).max()
    k_loss = float(k_last.evaluate(SEED_X, np.ones((2, 3)), batch_size=2, verbose=0))
    r_loss = float(last_model.evaluate(SEED_X, np.ones((2, 3))))
    p(f"   return_sequences=False: max |difference| of outputs {diff:.1e};")
    p(f"   evaluate: reference {r_loss:.6f}  Keras {k_loss:.6f}  |difference| {abs(r_loss - k_loss):.1e}")
