"""The reference layers against real Keras 3 (jax backend), weights copied from the Keras layers.

Keras runs in its default float32 (switching floatx/x64 is process-global state that other
framework tests would inherit), so values agree to float32 rounding: ATOL below. Every
batch holds one row per mask kind: right padding, left padding (leading masked steps),
holes, all valid, all masked, one leading masked step.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")

import maskloss  # noqa: E402
from maskloss import layers as ml  # noqa: E402

pytestmark = pytest.mark.framework("keras")

ATOL = 2e-5  # float32 Keras vs float64 reference, values of order 1

MASK = np.array(
    [
        [1, 1, 1, 0, 0],  # right padding
        [0, 0, 1, 1, 1],  # left padding: leading masked steps
        [1, 0, 1, 0, 1],  # holes
        [1, 1, 1, 1, 1],  # all valid
        [0, 0, 0, 0, 0],  # all masked
        [0, 1, 1, 1, 1],  # one leading masked step
    ],
    dtype=bool,
)
RNG = np.random.default_rng(20261127)
X = RNG.normal(size=(6, 5, 2)).astype(np.float32)

KERAS_RNN = {"SimpleRNN": keras.layers.SimpleRNN, "LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU}
REF_RNN = {"SimpleRNN": ml.SimpleRNN, "LSTM": ml.LSTM, "GRU": ml.GRU}


def randomise(layer, x, seed=0, **call):
    """Build a Keras layer on ``x`` and give it random weights (biases included, unlike Keras's zeros)."""
    layer(x, **call)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(scale=0.6, size=w.shape).astype(np.float32) for w in layer.get_weights()])
    return layer


def as_list(out):
    return [np.asarray(o, dtype=np.float64) for o in (out if isinstance(out, (list, tuple)) else [out])]


def same_mask(ours, theirs):
    """Equal masks, None included; lists and tuples (multi-output layers) compared item by item."""
    if isinstance(ours, (list, tuple)) or isinstance(theirs, (list, tuple)):
        return (
            isinstance(ours, (list, tuple))
            and isinstance(theirs, (list, tuple))
            and len(ours) == len(theirs)
            and all(same_mask(o, t) for o, t in zip(ours, theirs, strict=True))
        )
    if theirs is None or ours is None:
        return ours is None and theirs is None
    return np.array_equal(np.asarray(ours, dtype=bool), np.asarray(theirs, dtype=bool))


# --- mask sources and per-step layers -------------------------------------------------------
@pytest.mark.parametrize("value", [0.0, 0.5, np.nan])
def test_masking_matches_keras(value):
    x = X.copy()
    x[MASK == 0] = 0.0 if np.isnan(value) else value
    x[2, 1, 0] = 7.0  # only one feature equals the value: a valid step
    k = keras.layers.Masking(mask_value=value)
    ref = ml.Masking(value)
    np.testing.assert_array_equal(ref(x), np.asarray(k(x)))
    expected = np.asarray(k.compute_mask(x))
    assert np.array_equal(ref.compute_mask(x), expected)
    if np.isnan(value):
        assert expected.all()  # Masking(nan) masks nothing: nan != nan


def test_embedding_matches_keras():
    ids = np.array([[3, 1, 0, 0], [0, 0, 4, 2]])
    k = randomise(keras.layers.Embedding(5, 3, mask_zero=True), ids)
    ref = ml.Embedding(5, 3, mask_zero=True)
    ref.set_weights(k.get_weights())
    np.testing.assert_allclose(ref(ids), np.asarray(k(ids)), atol=ATOL)
    assert np.array_equal(ref.compute_mask(ids), np.asarray(k.compute_mask(ids)))
    k0 = keras.layers.Embedding(5, 3)
    assert k0.compute_mask(ids) is None and ml.Embedding(5, 3).compute_mask(ids) is None


@pytest.mark.parametrize("act", [None, "tanh", "sigmoid", "relu", "softmax"])
def test_dense_per_step_matches_keras(act):
    k = randomise(keras.layers.Dense(4, activation=act), X)
    ref = ml.Dense(4, activation=act)
    ref.set_weights(k.get_weights())
    np.testing.assert_allclose(ref(X, mask=MASK), np.asarray(k(X)), atol=ATOL)
    assert same_mask(ref.compute_mask(X, MASK), k.compute_mask(X, MASK))


def test_global_average_pooling_matches_keras():
    k = keras.layers.GlobalAveragePooling1D()
    ref = ml.GlobalAveragePooling1D()
    theirs = np.asarray(k(X, mask=MASK), dtype=np.float64)
    ours = ref(X, mask=MASK)
    np.testing.assert_allclose(ours, theirs, atol=ATOL)  # row 4 (all masked): NaN in both
    assert np.isnan(ours[4]).all() and np.isnan(theirs[4]).all()
    np.testing.assert_allclose(ref(X), np.asarray(k(X)), atol=ATOL)
    assert k.compute_mask(X, MASK) is None and ref.compute_mask(X, MASK) is None


# --- recurrent layers ---------------------------------------------------------------------
RNN_CONFIGS = [
    (kind, rs, gb, zero)
    for kind in ["SimpleRNN", "LSTM", "GRU", "GRU-reset_before"]
    for rs in (True, False)
    for gb in (False, True)
    for zero in (False, True)
    if not (zero and not rs)  # zero_output_for_mask without sequences: see the pinned difference below
]


FLAGS = ("return_sequences", "return_state", "go_backwards", "zero_output_for_mask")


@functools.cache
def _built_rnn(kind, units=3, seed=0):
    base = kind.split("-")[0]
    kw = {"reset_after": False} if kind == "GRU-reset_before" else {}
    k = randomise(KERAS_RNN[base](units, **kw), X, seed=seed, mask=MASK)
    ref = REF_RNN[base](units, **kw)
    ref.set_weights(k.get_weights())
    return k, ref


def make_rnn(kind, units=3, seed=0, **flags):
    """A Keras RNN with random weights and its reference twin, reused across tests (building
    Keras layers under jax is slow); the flags are read at call time, so they are set here."""
    k, ref = _built_rnn(kind, units, seed)
    for name in FLAGS:
        setattr(k, name, flags.get(name, False))
        setattr(ref, name, flags.get(name, False))
    return k, ref


@pytest.mark.parametrize(("kind", "rs", "gb", "zero"), RNN_CONFIGS)
def test_rnn_matches_keras_on_every_mask_kind(kind, rs, gb, zero):
    flags = dict(return_sequences=rs, go_backwards=gb, zero_output_for_mask=zero, return_state=True)
    k, ref = make_rnn(kind, **flags)
    theirs = as_list(k(X, mask=MASK))
    ours = ref(X, mask=MASK)
    assert len(ours) == len(theirs)  # output, then one array per state
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=ATOL)  # valid AND masked (carried / zero) steps
    for return_state in (False, True):
        ref.return_state = k.return_state = return_state
        for mask in (MASK, None):
            assert same_mask(ref.compute_mask(X, mask), k.compute_mask(X, mask))


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_rnn_carried_values_at_masked_steps(kind):
    """Leading masked steps emit h0 (Keras 3 scan path); later ones repeat the last valid output."""
    k, ref = make_rnn(kind, return_sequences=True)
    h0 = [np.full((6, 3), 0.25, dtype=np.float32) for _ in range(ref.n_states)]
    theirs = np.asarray(k(X, mask=MASK, initial_state=h0), dtype=np.float64)
    ours = ref(X, mask=MASK, initial_state=h0)
    np.testing.assert_allclose(ours, theirs, atol=ATOL)
    np.testing.assert_allclose(theirs[1, :2], 0.25, atol=1e-7)  # leading masked: h0
    np.testing.assert_allclose(theirs[0, 3:], theirs[0, [2, 2]], atol=1e-7)  # trailing: last valid
    np.testing.assert_allclose(theirs[2, 3], theirs[2, 2], atol=1e-7)  # a hole repeats the step before
    np.testing.assert_allclose(theirs[4], 0.25, atol=1e-7)  # nothing valid: h0 everywhere


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_rnn_initial_state_and_no_mask_match_keras(kind):
    k, ref = make_rnn(kind, return_sequences=True, return_state=True)
    rng = np.random.default_rng(1)
    init = [rng.normal(size=(6, 3)).astype(np.float32) for _ in range(ref.n_states)]
    for mask in (MASK, None):
        theirs = as_list(k(X, mask=mask, initial_state=init))
        for a, b in zip(ref(X, mask=mask, initial_state=init), theirs, strict=True):
            np.testing.assert_allclose(a, b, atol=ATOL)


@settings(max_examples=8, deadline=None)
@given(
    mask=st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=6, max_size=6).map(np.array),
    rs=st.booleans(),
    gb=st.booleans(),
)
def test_lstm_matches_keras_on_arbitrary_masks(mask, rs, gb):
    k, ref = make_rnn("LSTM", seed=3, return_sequences=rs, go_backwards=gb)
    np.testing.assert_allclose(ref(X, mask=mask), np.asarray(k(X, mask=mask)), atol=ATOL)


def test_use_bias_false_and_hard_sigmoid_match_keras():
    k = randomise(keras.layers.GRU(2, use_bias=False, recurrent_activation="hard_sigmoid"), X, mask=MASK)
    ref = ml.GRU(2, use_bias=False, recurrent_activation="hard_sigmoid")
    ref.set_weights(k.get_weights())
    np.testing.assert_allclose(ref(X, mask=MASK), np.asarray(k(X, mask=MASK)), atol=ATOL)


# --- where real Keras 3 departs from its own documented rules ------------------------------
def test_keras3_zero_output_for_mask_leaks_into_return_sequences_false():
    """Documented: zero_output_for_mask is "only used when return_sequences is True". Keras 3.15
    on jax takes the last *emitted* step instead, so a trailing masked step gives zeros. The
    reference keeps the documented rule: the output at the last valid step."""
    k, ref = make_rnn("LSTM", zero_output_for_mask=True)
    theirs = np.asarray(k(X, mask=MASK), dtype=np.float64)
    ours = ref(X, mask=MASK)
    np.testing.assert_array_equal(theirs[0], 0.0)  # right-padded row: Keras 3 returns zeros
    ref_rule = ml.LSTM(3)
    ref_rule.set_weights(k.get_weights())
    np.testing.assert_allclose(ours, ref_rule(X, mask=MASK))  # the flag changes nothing here
    assert np.abs(ours[0]).max() > 1e-3
    ends_valid = MASK[:, -1]  # where the last step is valid the two agree
    np.testing.assert_allclose(ours[ends_valid], theirs[ends_valid], atol=ATOL)


def test_keras3_unroll_emits_zero_at_leading_masked_steps():
    """Keras 3's two code paths differ at a leading masked step: the scan path (default, and the
    reference) emits h0, ``unroll=True`` emits 0. Later masked steps agree (the last output)."""
    k, ref = make_rnn("GRU", return_sequences=True)
    h0 = [np.full((6, 3), 0.25, dtype=np.float32)]
    k.unroll = True
    try:
        theirs = np.asarray(k(X, mask=MASK, initial_state=h0), dtype=np.float64)
    finally:
        k.unroll = False
    ours = ref(X, mask=MASK, initial_state=h0)
    np.testing.assert_array_equal(theirs[1, :2], 0.0)  # unroll: zeros, not h0
    np.testing.assert_array_equal(ours[1, :2], 0.25)  # reference / scan path: h0
    np.testing.assert_allclose(theirs[MASK], ours[MASK], atol=ATOL)  # valid steps agree
    np.testing.assert_allclose(theirs[0, 3:], ours[0, 3:], atol=ATOL)  # trailing masked steps agree


def test_keras3_ignores_the_mask_inside_the_rnn_when_initial_state_is_passed():
    """Documented: an RNN skips masked steps. Keras 3.15 fills ``mask=`` from the input only when
    the call has one tensor argument; with ``initial_state`` there are several, so in a model
    the LSTM runs over the padding (as if unmasked) while its output still carries the mask,
    which the loss then applies. The reference keeps the documented rule."""
    inp = keras.Input((5, 2))
    h0, c0 = keras.Input((3,)), keras.Input((3,))
    masked = keras.layers.Masking(0.0)(inp)
    k_lstm = keras.layers.LSTM(3, return_sequences=True)
    out = k_lstm(masked, initial_state=[h0, c0])
    model = keras.Model([inp, h0, c0], out)
    randomise(k_lstm, X, seed=5)
    x = np.where(MASK[..., None], X, 0.0).astype(np.float32)
    init = [np.full((6, 3), 0.3, np.float32), np.full((6, 3), -0.2, np.float32)]
    y = model([x, *init])
    theirs = np.asarray(y, dtype=np.float64)
    ref = ml.LSTM(3, return_sequences=True)
    ref.set_weights(k_lstm.get_weights())
    mask = ml.Masking(0.0).compute_mask(x)
    np.testing.assert_allclose(theirs, ref(x, mask=None, initial_state=init), atol=ATOL)  # unmasked
    documented = ref(x, mask=mask, initial_state=init)
    assert np.abs(theirs[1] - documented[1]).max() > 1e-2  # leading padding changed the state
    assert same_mask(getattr(y, "_keras_mask", None), mask)  # ... but the mask still reaches the loss
    # Passing the mask explicitly follows the rule:
    theirs_explicit = np.asarray(k_lstm(x, mask=mask, initial_state=init), dtype=np.float64)
    np.testing.assert_allclose(theirs_explicit, documented, atol=ATOL)


# --- Bidirectional ------------------------------------------------------------------------
@functools.cache
def _built_bidirectional(kind, rs):
    k = keras.layers.Bidirectional(KERAS_RNN[kind](3, return_sequences=rs, return_state=True))
    randomise(k, X, seed=7, mask=MASK)
    return k


BI_CONFIGS = [
    (kind, rs, merge)
    for kind in ("LSTM", "GRU")
    for rs in (True, False)
    for merge in (("concat", "sum", "ave", "mul", None) if kind == "LSTM" else ("concat", None))
]


@pytest.mark.parametrize(("kind", "rs", "merge"), BI_CONFIGS)
def test_bidirectional_matches_keras(kind, rs, merge):
    k = _built_bidirectional(kind, rs)
    k.merge_mode = merge  # read at call time
    k.return_state = True
    ref = ml.Bidirectional(REF_RNN[kind](3, return_sequences=rs, return_state=True), merge_mode=merge)
    ref.set_weights(k.get_weights())
    theirs = as_list(k(X, mask=MASK))
    ours = ref(X, mask=MASK)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)
    if rs:  # both halves emit zeros at masked steps (zero_output_for_mask forced)
        first = ours[0] if merge is not None else np.concatenate(ours[:2], axis=-1)
        np.testing.assert_array_equal(first[~MASK], 0.0)
    # Keras's Bidirectional.compute_mask lists no state masks unless stateful; the output mask agrees.
    k.return_state = ref.return_state = False
    assert same_mask(ref.compute_mask(X, MASK), k.compute_mask(X, MASK))


@pytest.mark.parametrize("rs", [True, False])
def test_bidirectional_initial_state_matches_keras(rs):
    k = _built_bidirectional("LSTM", rs)
    k.merge_mode, k.return_state = "concat", True  # the halves were built with return_state
    ref = ml.Bidirectional(ml.LSTM(3, return_sequences=rs, return_state=True))
    ref.set_weights(k.get_weights())
    init = [np.full((6, 3), v, np.float32) for v in (0.1, -0.2, 0.3, 0.4)]  # forward h, c, backward h, c
    theirs = as_list(k(X, mask=MASK, initial_state=init))
    ours = ref(X, mask=MASK, initial_state=init)
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)


# --- whole models: mask propagation and evaluate ----------------------------------------------
def keras_model(layers):
    inp = keras.Input((5, 2))
    out = inp
    for layer in layers:
        out = layer(out)
    return keras.Model(inp, out)


SEED_X = np.array(
    [[[0, 0], [0, 0], [1, 0], [0, 1], [0, 1]], [[0, 0], [0, 1], [1, 0], [0, 1], [0, 1]]], dtype=np.float32
)


@pytest.mark.parametrize(
    "spec",
    [
        "seed",  # Masking -> LSTM(3, return_sequences=True), the seed's model
        "dense",  # ... -> Dense(3) per step: the mask passes through
        "last",  # ... LSTM(3) without sequences: the mask stops
        "pool",  # ... -> GlobalAveragePooling1D: the mask is used up
        "bi",  # Masking -> Bidirectional(GRU(2, return_sequences=True), merge sum) -> Dense(3)
    ],
)
def test_sequential_evaluate_matches_keras_model_evaluate(spec):
    loss = "mse" if spec == "dense" else "mae"
    pairs = {
        "seed": [(keras.layers.LSTM(3, return_sequences=True), ml.LSTM(3, return_sequences=True))],
        "dense": [
            (keras.layers.LSTM(4, return_sequences=True), ml.LSTM(4, return_sequences=True)),
            (keras.layers.Dense(3), ml.Dense(3)),
        ],
        "last": [(keras.layers.LSTM(3), ml.LSTM(3))],
        "pool": [
            (keras.layers.GRU(3, return_sequences=True), ml.GRU(3, return_sequences=True)),
            (keras.layers.GlobalAveragePooling1D(), ml.GlobalAveragePooling1D()),
        ],
        "bi": [
            (
                keras.layers.Bidirectional(keras.layers.GRU(2, return_sequences=True), merge_mode="sum"),
                ml.Bidirectional(ml.GRU(2, return_sequences=True), merge_mode="sum"),
            ),
            (keras.layers.Dense(3), ml.Dense(3)),
        ],
    }[spec]
    model = keras_model([keras.layers.Masking(0.0)] + [k for k, _ in pairs])
    rng = np.random.default_rng(11)
    model.set_weights([rng.normal(scale=0.6, size=w.shape).astype(np.float32) for w in model.get_weights()])
    ours = ml.Sequential([ml.Masking(0.0)] + [r for _, r in pairs])
    for k_layer, r_layer in pairs:
        r_layer.set_weights(k_layer.get_weights())
    y_keras = model(SEED_X)
    y_ours = ours(SEED_X)
    np.testing.assert_allclose(y_ours, np.asarray(y_keras), atol=ATOL)
    assert same_mask(ours.compute_mask(SEED_X), getattr(y_keras, "_keras_mask", None))
    y_true = rng.normal(size=y_ours.shape).astype(np.float32)
    model.compile(loss=loss)
    theirs = model.evaluate(SEED_X, y_true, batch_size=2, verbose=0)
    fn = {"mae": maskloss.mae, "mse": maskloss.mse}[loss]
    np.testing.assert_allclose(ours.evaluate(SEED_X, y_true, loss=fn), theirs, rtol=1e-5)


def test_embedding_model_mask_reaches_the_loss_like_keras():
    ids = np.array([[0, 0, 3, 1, 2], [0, 4, 4, 1, 2]])
    inp = keras.Input((5,), dtype="int32")
    emb = keras.layers.Embedding(5, 2, mask_zero=True)
    rnn = keras.layers.SimpleRNN(3, return_sequences=True)
    model = keras.Model(inp, rnn(emb(inp)))
    randomise(emb, ids, seed=2)
    rng = np.random.default_rng(4)
    rnn.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in rnn.get_weights()])
    ours = ml.Sequential([ml.Embedding(5, 2, mask_zero=True), ml.SimpleRNN(3, return_sequences=True)])
    ours.layers[0].set_weights(emb.get_weights())
    ours.layers[1].set_weights(rnn.get_weights())
    y_true = np.ones((2, 5, 3), np.float32)
    model.compile(loss="mae")
    np.testing.assert_allclose(
        ours.evaluate(ids, y_true), model.evaluate(ids, y_true, batch_size=2, verbose=0), rtol=1e-5
    )
    assert same_mask(ours.compute_mask(ids), getattr(model(ids), "_keras_mask", None))
