"""The reference layers without a framework: loop oracles, mask rules, garbage under the mask, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from maskloss import layers as ml


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


# --- loop oracles: one sequence at a time, one step at a time, formulas written out ---------
def oracle_cell(kind, weights, x, h, c):
    """One step of one sequence (vectors), straight from the Keras 3 cell equations."""
    kernel, recurrent, bias = weights
    u = h.shape[0]
    if kind == "SimpleRNN":
        h = np.tanh(x @ kernel + bias + h @ recurrent)
        return h, c
    if kind == "LSTM":
        cols = [slice(j * u, (j + 1) * u) for j in range(4)]  # gates i, f, c, o
        gate = [x @ kernel[:, s] + h @ recurrent[:, s] + bias[s] for s in cols]
        c = _sigmoid(gate[1]) * c + _sigmoid(gate[0]) * np.tanh(gate[2])
        return _sigmoid(gate[3]) * np.tanh(c), c
    if kind == "GRU":  # reset_after=True: bias rows (input, recurrent)
        xs = [x @ kernel[:, j * u : (j + 1) * u] + bias[0, j * u : (j + 1) * u] for j in range(3)]
        hs = [h @ recurrent[:, j * u : (j + 1) * u] + bias[1, j * u : (j + 1) * u] for j in range(3)]
        z, r = _sigmoid(xs[0] + hs[0]), _sigmoid(xs[1] + hs[1])
        return z * h + (1 - z) * np.tanh(xs[2] + r * hs[2]), c
    # GRU reset_after=False: one bias, the reset gate scales h before the candidate's kernel
    xs = [x @ kernel[:, j * u : (j + 1) * u] + bias[j * u : (j + 1) * u] for j in range(3)]
    z = _sigmoid(xs[0] + h @ recurrent[:, :u])
    r = _sigmoid(xs[1] + h @ recurrent[:, u : 2 * u])
    return z * h + (1 - z) * np.tanh(xs[2] + (r * h) @ recurrent[:, 2 * u :]), c


def oracle_rnn(kind, weights, x, mask, h0, c0, go_backwards, zero_output_for_mask):
    """Per sequence: skip masked steps, emit the previous output (or 0) there."""
    outputs, lasts, hs, cs = [], [], [], []
    for b in range(x.shape[0]):
        h, c = h0[b].copy(), c0[b].copy()
        seq = []
        order = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
        for t in order:
            if mask[b, t]:
                h, c = oracle_cell(kind, weights, x[b, t], h, c)
                seq.append(h)
            else:
                seq.append(np.zeros_like(h) if zero_output_for_mask else h)
        outputs.append(seq)
        lasts.append(h)
        hs.append(h)
        cs.append(c)
    return np.array(outputs), np.array(lasts), np.array(hs), np.array(cs)


REF = {"SimpleRNN": ml.SimpleRNN, "LSTM": ml.LSTM, "GRU": ml.GRU, "GRU-reset_before": ml.GRU}


@st.composite
def rnn_cases(draw):
    b, t, f, u = (draw(st.integers(1, hi)) for hi in (4, 6, 3, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = rng.random((b, t)) < draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    x = rng.normal(size=(b, t, f))
    x[~mask] = draw(st.sampled_from([np.nan, np.inf, -1e300, 0.0]))  # garbage under the mask
    return dict(
        kind=draw(st.sampled_from(sorted(REF))),
        x=x,
        mask=mask,
        units=u,
        h0=rng.normal(size=(b, u)),
        c0=rng.normal(size=(b, u)),
        go_backwards=draw(st.booleans()),
        zero_output_for_mask=draw(st.booleans()),
        seed=draw(st.integers(0, 100)),
        initial=draw(st.booleans()),
    )


@given(case=rnn_cases())
def test_recurrent_layers_match_the_loop_oracle(case):
    kind, x, mask, u = case["kind"], case["x"], case["mask"], case["units"]
    extra = {"reset_after": False} if kind == "GRU-reset_before" else {}
    layer = REF[kind](
        u,
        return_sequences=True,
        return_state=True,
        go_backwards=case["go_backwards"],
        zero_output_for_mask=case["zero_output_for_mask"],
        seed=case["seed"],
        **extra,
    )
    n_states = 2 if kind == "LSTM" else 1
    h0 = case["h0"] if case["initial"] else np.zeros_like(case["h0"])
    c0 = case["c0"] if case["initial"] else np.zeros_like(case["c0"])
    init = [h0, c0][:n_states] if case["initial"] else None
    x_before = x.copy()
    out, *states = layer(x, mask=mask, initial_state=init)
    np.testing.assert_array_equal(x, x_before)  # the caller's array is untouched
    assert out.dtype == np.float64 and np.isfinite(out).all()  # garbage never reaches an output
    oracle_kind = "GRU-before" if kind == "GRU-reset_before" else kind
    seq, last, h, c = oracle_rnn(
        oracle_kind, layer.get_weights(), x, mask, h0, c0, case["go_backwards"], case["zero_output_for_mask"]
    )
    np.testing.assert_allclose(out, seq, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(states[0], h, rtol=1e-12, atol=1e-12)
    if n_states == 2:
        np.testing.assert_allclose(states[1], c, rtol=1e-12, atol=1e-12)
    layer.return_sequences = layer.return_state = False
    np.testing.assert_allclose(layer(x, mask=mask, initial_state=init), last, rtol=1e-12, atol=1e-12)


@given(
    data=st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 3), st.integers(0, 2**32 - 1)),
    fill=st.sampled_from([np.nan, np.inf, 1e308]),
)
def test_global_average_pooling_matches_a_loop(data, fill):
    b, t, f, seed = data
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, t, f))
    mask = rng.random((b, t)) < 0.6
    x[~mask] = fill
    out = ml.GlobalAveragePooling1D()(x, mask=mask)
    for i in range(b):
        rows = [x[i, s] for s in range(t) if mask[i, s]]
        if rows:
            np.testing.assert_allclose(out[i], sum(rows) / len(rows), rtol=1e-12)
        else:
            assert np.isnan(out[i]).all()  # 0/0, as Keras on jax


# --- mask rules ----------------------------------------------------------------------------
def test_masking_ignores_the_incoming_mask_and_zeroes_masked_steps():
    x = np.array([[[0.0, 0.0], [2.0, 0.0]]])
    layer = ml.Masking(0.0)
    np.testing.assert_array_equal(layer.compute_mask(x, np.array([[True, False]])), [[False, True]])
    y = ml.Masking(2.0)(np.array([[[2.0, 2.0], [2.0, 1.0]]]))
    np.testing.assert_array_equal(y, [[[0.0, 0.0], [2.0, 1.0]]])  # zeros, not the mask value


@pytest.mark.parametrize(
    ("layers", "expect_mask"),
    [
        ([ml.Masking(0.0), ml.LSTM(2, return_sequences=True)], True),
        ([ml.Masking(0.0), ml.GRU(2, return_sequences=True), ml.Dense(3)], True),
        ([ml.Masking(0.0), ml.Bidirectional(ml.SimpleRNN(2, return_sequences=True))], True),
        ([ml.Masking(0.0), ml.LSTM(2)], False),
        ([ml.Masking(0.0), ml.GRU(2, return_sequences=True), ml.GlobalAveragePooling1D()], False),
        ([ml.Masking(0.0), ml.Bidirectional(ml.LSTM(2))], False),
        ([ml.Dense(2), ml.LSTM(2, return_sequences=True)], False),
    ],
)
def test_sequential_output_mask_follows_the_rules(layers, expect_mask):
    x = np.random.default_rng(0).normal(size=(3, 4, 2))
    x[0, :2] = 0.0
    x[2, 3] = 0.0
    model = ml.Sequential(layers)
    mask = model.compute_mask(x)
    if expect_mask:
        np.testing.assert_array_equal(mask, maskloss.mask_from_padding(x, 0.0))
    else:
        assert mask is None


@pytest.mark.parametrize("reduction", maskloss.REDUCTIONS)
def test_evaluate_applies_the_output_mask_with_any_reduction(reduction):
    x = np.zeros((2, 4, 2))
    x[0, 1:] = 1.0
    x[1, 2:] = -1.0
    model = ml.Sequential([ml.Masking(0.0), ml.LSTM(3, return_sequences=True)])
    y = np.ones((2, 4, 3))
    got = model.evaluate(x, y, reduction=reduction)
    mask = np.array([[False, True, True, True], [False, False, True, True]])
    # independent: per-step MAE by a loop over the valid steps only
    per_step = np.zeros((2, 4))
    pred = model(x)
    for b in range(2):
        for t in range(4):
            if mask[b, t]:
                per_step[b, t] = np.mean(np.abs(y[b, t] - pred[b, t]))
    expected = {
        "none": per_step,
        "sum": per_step.sum(),
        "token_mean": per_step.sum() / mask.sum(),
        "sequence_mean": np.mean(per_step.sum(1) / mask.sum(1)),
        "batch_mean": per_step.sum() / 2,
        "element_mean": per_step.sum() / 8,
    }[reduction]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_evaluate_without_an_output_mask_counts_every_output():
    x = np.zeros((2, 4, 2))
    x[:, 2:] = 1.0
    model = ml.Sequential([ml.Masking(0.0), ml.LSTM(3)])
    y = np.zeros((2, 3))
    np.testing.assert_allclose(model.evaluate(x, y), np.mean(np.abs(model(x))), rtol=1e-12)


def test_embedding_mask_zero_flows_to_the_loss():
    model = ml.Sequential([ml.Embedding(6, 2, mask_zero=True), ml.GRU(2, return_sequences=True)])
    ids = np.array([[0, 3, 5], [4, 0, 0]])
    np.testing.assert_array_equal(model.compute_mask(ids), ids != 0)
    assert ml.Sequential([ml.Embedding(6, 2), ml.GRU(2, return_sequences=True)]).compute_mask(ids) is None


def test_describe_draws_every_layer():
    x = np.zeros((1, 3, 1))
    x[0, 2] = 1.0
    text = ml.describe(ml.Sequential([ml.Masking(0.0), ml.Dense(2), ml.GlobalAveragePooling1D()]), x)
    lines = text.splitlines()
    assert lines[1].split()[-1] == "..#" and lines[2].split()[-1] == "..#"
    assert lines[3].endswith("mask none") and "all 1 outputs count" in lines[4]


# --- weights ---------------------------------------------------------------------------------
def test_seeded_init_is_deterministic_and_documented():
    a, b, c = ml.LSTM(4, seed=1), ml.LSTM(4, seed=1), ml.LSTM(4, seed=2)
    x = np.ones((1, 2, 3))
    for layer in (a, b, c):
        layer(x)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    kernel, recurrent, bias = a.get_weights()
    assert np.abs(kernel).max() <= np.sqrt(6 / (3 + 16)) and np.abs(recurrent).max() <= np.sqrt(6 / (4 + 16))
    assert np.abs(bias).max() <= 0.1
    rng = np.random.default_rng(1)  # the documented draw order: kernel, recurrent kernel, bias
    np.testing.assert_array_equal(kernel, rng.uniform(-np.sqrt(6 / 19), np.sqrt(6 / 19), size=(3, 16)))


def test_set_weights_round_trip_and_copies():
    layer = ml.GRU(2)
    weights = [np.ones((3, 6)), np.zeros((2, 6)), np.full((2, 6), 0.5)]
    layer.set_weights(weights)
    got = layer.get_weights()
    got[0][0, 0] = 99.0
    assert layer.get_weights()[0][0, 0] == 1.0 and weights[0][0, 0] == 1.0


# --- bad input ---------------------------------------------------------------------------------
ONE = np.ones((1, 2))
X1 = np.ones((1, 2, 1))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ml.LSTM(0), ValueError, "units"),
        (lambda: ml.LSTM(2, activation="swish"), ValueError, "activation"),
        (lambda: ml.LSTM(2, return_sequences=1), TypeError, "return_sequences"),
        (lambda: ml.LSTM(2, seed=-1), ValueError, "seed"),
        (lambda: ml.LSTM(2)(np.ones((2, 3))), ValueError, "x must have shape"),
        (lambda: ml.LSTM(2)(np.ones((2, 3, 1)), mask=np.ones((2, 4))), ValueError, "mask must have shape"),
        (lambda: ml.LSTM(2)(np.ones((2, 3, 1)), mask=np.full((2, 3), 2)), ValueError, "mask must hold"),
        (lambda: ml.LSTM(2)(np.ones((2, 3, 1)), initial_state=[np.ones((2, 2))]), ValueError, "initial_st"),
        (lambda: ml.LSTM(2)(np.ones((2, 0, 1))), ValueError, "no steps"),
        (lambda: ml.LSTM(2).set_weights([np.ones((3, 8))]), ValueError, "shapes"),
        (lambda: ml.GRU(2).set_weights([np.ones((3, 6)), np.ones((2, 6)), np.ones(6)]), ValueError, "shapes"),
        (lambda: ml.LSTM(2).get_weights(), ValueError, "no weights yet"),
        (lambda: ml.Masking("pad"), TypeError, "value"),
        (lambda: ml.Embedding(3, 2)(np.array([[1, 3]])), ValueError, "ids"),
        (lambda: ml.Embedding(3, 2)(np.array([1, 2])), ValueError, "ids must have shape"),
        (lambda: ml.Embedding(3, 2, mask_zero="yes"), TypeError, "mask_zero"),
        (lambda: ml.Dense(2, activation="gelu"), ValueError, "activation"),
        (lambda: ml.Bidirectional(ml.Dense(2)), TypeError, "layer"),
        (lambda: ml.Bidirectional(ml.LSTM(2), merge_mode="max"), ValueError, "merge_mode"),
        (lambda: ml.Bidirectional(ml.LSTM(2, go_backwards=True)), ValueError, "go_backwards"),
        (lambda: ml.Bidirectional(ml.LSTM(2))(X1, initial_state=[ONE]), ValueError, "initial_st"),
        (lambda: ml.Sequential([]), ValueError, "at least one"),
        (lambda: ml.Sequential(5), TypeError, "layers must be a list.*int 5"),
        (lambda: ml.Sequential(ml.Dense(2)), TypeError, "single layer"),
        (lambda: ml.LSTM(2).set_weights(None), TypeError, "weights for LSTM must be a list of arrays.*None"),
        (lambda: ml.Dense(2).set_weights(np.ones((2, 2))), TypeError, "weights for Dense must be a list"),
        (lambda: ml.Sequential([ml.Dense(1)]).evaluate(X1, X1, loss="hinge"), ValueError, "loss must be.*'hinge'"),
        (lambda: ml.Sequential([ml.Dense(1)]).evaluate(X1, X1, loss=5), TypeError, "loss must be"),
        (lambda: ml.Sequential([np.ones(2)]), TypeError, "layers\\[0\\]"),
        (lambda: ml.Sequential([ml.LSTM(2, return_state=True)])(X1), ValueError, "single-out"),
        (lambda: ml.describe([ml.Dense(2)], np.ones((1, 2, 1))), TypeError, "model"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_layer_built_for_one_width_rejects_another():
    layer = ml.Dense(2)
    layer(np.ones((1, 1, 3)))
    with pytest.raises(ValueError, match="built for 3 input features, got 4"):
        layer(np.ones((1, 1, 4)))


def test_evaluate_takes_the_names_keras_gives_the_losses():
    keras = pytest.importorskip("keras")
    from maskloss.layers.sequential import LOSS_NAMES

    L = keras.losses
    keras_twin = {  # each maskloss loss and Keras's own function and class for it
        maskloss.mae: (L.mean_absolute_error, L.MeanAbsoluteError),
        maskloss.mse: (L.mean_squared_error, L.MeanSquaredError),
        maskloss.binary_crossentropy: (L.binary_crossentropy, L.BinaryCrossentropy),
        maskloss.categorical_crossentropy: (L.categorical_crossentropy, L.CategoricalCrossentropy),
        maskloss.sparse_categorical_crossentropy: (L.sparse_categorical_crossentropy, L.SparseCategoricalCrossentropy),
    }
    for name, fn in LOSS_NAMES.items():
        got = L.get(name)  # Keras accepts the name, for the same loss
        function, cls = keras_twin[fn]
        assert got is function or isinstance(got, cls), (name, got)
    for name in ("mae", "MAE", "mean_squared_error", "bce", "MeanSquaredError"):
        assert name in LOSS_NAMES

    x = np.array([[[0.0], [1.0], [2.0]]])
    y = np.array([[[0.5], [0.25], [1.0]]])
    model = ml.Sequential([ml.Masking(0.0), ml.Dense(1)])
    model.layers[1].set_weights([np.array([[0.3]]), np.array([0.1])])  # outputs 0.4, 0.7 in (0, 1)
    mask = model.compute_mask(x)
    for name in ("mae", "MSE", "bce", "MeanAbsoluteError"):
        assert model.evaluate(x, y, loss=name) == LOSS_NAMES[name](y, model(x), mask)
