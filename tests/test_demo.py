"""``maskloss demo``: the seed replayed end to end, with and without real Keras."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from maskloss.demo import SEED_X, SEED_Y_PRED, demo


def run(**kw):
    buf = io.StringIO()
    assert demo(buf, **kw) == 0
    return buf.getvalue()


def value_after(text, label):
    match = re.search(re.escape(label) + r"\s+(-?\d+\.\d+)", text)
    assert match, f"{label!r} not in the demo output"
    return float(match.group(1))


def test_demo_shows_the_mask_after_each_layer_and_where_it_stops():
    text = run()
    lines = [ln for ln in text.splitlines() if ln.startswith("  -> ")]  # the diagrams' layer lines
    masking = [ln for ln in lines if "-> Masking(mask_value=0.0)" in ln]
    lstm_seq = [ln for ln in lines if "-> LSTM(3, return_sequences=True)" in ln]
    lstm_last = [ln for ln in lines if re.search(r"-> LSTM\(3\)\s", ln)]
    # the seed's X: two leading padded steps in sequence 0, one in sequence 1
    assert all(ln.endswith("mask ..### .####") for ln in masking + lstm_seq)
    assert len(lstm_last) == 1 and lstm_last[0].endswith("mask none")
    assert "7 of 10 steps count" in text and "all 2 outputs count" in text


def test_demo_prediction_has_zeros_at_the_leading_masked_steps():
    np.testing.assert_array_equal(SEED_Y_PRED[0, :2], 0.0)
    np.testing.assert_array_equal(SEED_Y_PRED[1, :1], 0.0)
    assert np.abs(SEED_Y_PRED[0, 2:]).min() > 0 and np.abs(SEED_Y_PRED[1, 1:]).max() > 0.01


def test_demo_reports_every_reduction_and_the_wrong_mean():
    text = run()
    y = SEED_Y_PRED
    valid = [(0, 2), (0, 3), (0, 4), (1, 1), (1, 2), (1, 3), (1, 4)]
    per_step = {bt: sum(abs(1.0 - v) for v in y[bt]) / 3 for bt in valid}  # loop, not the library
    total = sum(per_step.values())
    seq0 = sum(v for (b, _), v in per_step.items() if b == 0) / 3
    seq1 = sum(v for (b, _), v in per_step.items() if b == 1) / 4
    expected = {
        "sum": total,
        "token_mean": total / 7,
        "sequence_mean": (seq0 + seq1) / 2,
        "batch_mean": total / 2,
        "element_mean": total / 10,
    }
    for name, value in expected.items():
        assert value_after(text, f"  {name}") == pytest.approx(value, abs=1e-6)
    unmasked = float(np.mean(np.abs(1.0 - y)))
    assert value_after(text, "unmasked mean") == pytest.approx(unmasked, abs=1e-6)
    assert "WRONG" in text
    # Golden: real Keras 3.15.1 (jax backend) model.evaluate of this model with these weights,
    # loss "mae", run by `maskloss demo --keras` on 2026-11-27: 1.055273 and 1.104864.
    assert value_after(text, "model.evaluate(X, y_true) =") == pytest.approx(1.055273, abs=2e-6)
    assert value_after(text, "model.evaluate(X, ones((2, 3))) =") == pytest.approx(1.104864, abs=2e-6)


def test_demo_keeps_the_sentinel_case():
    text = run()
    masked = -(math.log(0.7) + math.log(0.6) + math.log(0.5)) / 3
    unmasked = -(math.log(0.7) + math.log(0.6) + math.log(0.5) + math.log(0.6) + math.log(0.8)) / 5
    assert "mask_from_sentinel(y_true, [0, 0, 1]) -> [[1, 1, 1, 0, 0]]" in text
    assert value_after(text, "sum(ce * mask) / sum(mask) =") == pytest.approx(masked, abs=1e-6)
    assert value_after(text, "scores the '#' padding)     =") == pytest.approx(unmasked, abs=1e-6)


def test_demo_without_keras_flag_imports_no_framework():
    code = (
        "import io, sys, maskloss.demo; maskloss.demo.demo(io.StringIO()); "
        "frameworks = ('keras', 'jax', 'torch', 'tensorflow', 'hypothesis', 'pytest'); "
        "print(sorted(m for m in frameworks if m in sys.modules))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "real Keras" not in run()
    assert SEED_X.shape == (2, 5, 2)


def test_demo_keras_flag_without_keras_installed_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)  # makes `import keras` raise ImportError
    text = run(keras=True)
    assert "Keras 3 is not installed" in text
    assert "token_mean" in text  # the rest of the demo still runs


@pytest.mark.framework("keras")
def test_demo_keras_flag_replays_the_seed_in_real_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("keras")
    text = run(keras=True)
    assert "The same model in real Keras 3." in text
    diffs = [float(d) for d in re.findall(r"\s(\d\.\de[-+]\d\d)$", text, flags=re.M)]
    assert len(diffs) >= 10 and max(diffs) < 1e-5  # float32 Keras vs float64 reference
    assert "output mask: reference ..### .####  Keras ..### .####  (the same)" in text
    ref, theirs = (float(v) for v in re.search(r"evaluate: reference (\S+)  Keras (\S+)", text).groups())
    assert abs(ref - theirs) < 1e-5


def test_demo_lines_fit_100_columns():
    text = run()
    assert max(len(line) for line in text.splitlines()) <= 100


def test_demo_keras_columns_line_up():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("keras")
    text = run(keras=True)
    assert max(len(line) for line in text.splitlines()) <= 100
    rows = [line for line in text.splitlines() if re.match(r"\s+b=\d t=\d ", line)]
    assert len(rows) == 10
    # Every row has its two vectors and its difference at the same columns.
    assert len({tuple(m.start() for m in re.finditer(r"[\[\]]", line)) for line in rows}) == 1
    assert len({len(line) for line in rows}) == 1
