"""Threads and chunk sizes change nothing: values and gradients are bit for bit identical.

Every row's loss and gradient row is written into its own slot and the reductions sum
the slots afterwards in a fixed order, so the thread count (``maskloss.set_num_threads``)
and the chunk size (``maskloss._rows.CHUNK_ELEMENTS``) may change only the time.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from maskloss import _rows
from maskloss.conventions import fairseq, t5x
from tests.cases import cases

# (threads, chunk elements): one thread and one big chunk is the reference.
CONFIGS = [(1, 1 << 18), (2, 1 << 18), (1, 3), (2, 1), (2, 7), (3, 16)]


def _run_all(case, threads: int, chunk: int, mp: pytest.MonkeyPatch):
    """Every reduction's value, and every scalar reduction's (value, gradient), of ``case``."""
    mp.setattr(_rows, "CHUNK_ELEMENTS", chunk)
    mp.setattr(_rows, "MIN_ELEMENTS_PER_THREAD", 1)  # small test batches still use every thread
    previous = maskloss.set_num_threads(threads)
    try:
        values = [case.run(r) for r in maskloss.REDUCTIONS]
        vg = maskloss.value_and_grad(case.function)
        grads = [vg(case.y_true, case.y_pred, case.mask, reduction=r, **case.options)
                 for r in maskloss.SCALAR_REDUCTIONS]
    finally:
        maskloss.set_num_threads(previous)
    return values, grads


def _assert_bitwise(a, b) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    # Compare the bits: NaN == NaN, and -0.0 != 0.0.
    np.testing.assert_array_equal(a.view(np.int64), b.view(np.int64))


@given(case=cases(max_batch=5, max_steps=6), config=st.sampled_from(CONFIGS[1:]))
def test_every_loss_and_reduction_is_bit_identical_for_any_threads_and_chunks(case, config):
    inputs = [case.y_true, case.y_pred, case.mask] + [v for v in case.options.values() if isinstance(v, np.ndarray)]
    copies = [a.copy() for a in inputs]
    for a in inputs:  # the chunk loop works in its own buffers: writing into an input would raise
        a.flags.writeable = False
    with pytest.MonkeyPatch.context() as mp:
        ref_values, ref_grads = _run_all(case, *CONFIGS[0], mp)
        values, grads = _run_all(case, *config, mp)
    for a, c in zip(inputs, copies, strict=True):
        np.testing.assert_array_equal(a, c)
    for got, want in zip(values, ref_values, strict=True):
        _assert_bitwise(got, want)
    for (gv, gg), (wv, wg) in zip(grads, ref_grads, strict=True):
        _assert_bitwise(gv, wv)
        _assert_bitwise(gg, wg)
        # Garbage under the mask (NaN, inf, 1e300) never reaches the gradient.
        assert np.all(gg[~case.mask] == 0)


#: (threads, chunk elements) of the real-size tests: the thread split is not forced there.
REAL_CONFIGS = [(1, 1 << 18), (2, 1 << 18), (2, 1 << 12), (1, 5000)]


def _bit_identical_over_real_configs(call):
    """``call()``'s (value, gradient) under every REAL_CONFIGS entry: asserted bit-identical, returned once."""
    results = []
    for threads, chunk in REAL_CONFIGS:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_rows, "CHUNK_ELEMENTS", chunk)
            previous = maskloss.set_num_threads(threads)
            try:
                results.append(call())
            finally:
                maskloss.set_num_threads(previous)
    for value, grad in results[1:]:
        _assert_bitwise(value, results[0][0])
        _assert_bitwise(grad, results[0][1])
    return results[0]


def _assert_splits_over_two_threads(elements: int) -> None:
    """The batch is big enough that 2 threads really split it (without lowering the threshold)."""
    assert elements // _rows.MIN_ELEMENTS_PER_THREAD >= 2, elements


def _lm_batch(dtype=np.float32):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(4, 128, 1000)) * 3).astype(dtype)
    labels = rng.integers(0, 1000, size=(4, 128))
    labels[rng.random((4, 128)) < 0.3] = -100
    _assert_splits_over_two_threads(int(np.sum(labels != -100)) * 1000)
    logits[labels == -100] = np.nan  # garbage at ignored steps
    return labels, logits


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "class_weight": np.linspace(0.5, 2, 1000)}])
def test_a_real_multithreaded_batch_is_bit_identical(options):
    labels, logits = _lm_batch()
    vg = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)
    value, grad = _bit_identical_over_real_configs(
        lambda: vg(labels, logits, from_logits=True, ignore_index=-100, **options))
    assert np.isfinite(value) and np.all(grad[labels == -100] == 0)


def _dense_batch(kind: str):
    """A batch big enough for the real thread split and the buffered gather, NaN under the mask."""
    rng = np.random.default_rng(1)
    shape = (4, 128, 1000)
    mask = rng.random(shape[:2]) > 0.3
    _assert_splits_over_two_threads(int(mask.sum()) * shape[-1])
    logits = kind.endswith("logits")
    if kind.startswith("categorical"):
        y_true = np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], size=shape[:2])]
        y_pred = rng.normal(size=shape) * 3 if logits else rng.dirichlet(np.ones(shape[-1]), size=shape[:2])
    else:
        y_true = rng.random(shape)
        y_pred = rng.normal(size=shape) * 3 if logits else rng.uniform(0.01, 0.99, size=shape)
    y_pred = y_pred.astype(np.float32)
    y_pred[~mask] = np.nan
    options = {"from_logits": True} if logits else {}
    return y_true, y_pred, mask, options


_DENSE_LOSSES = {
    "mae": maskloss.mae, "mse": maskloss.mse,
    "binary": maskloss.binary_crossentropy, "binary logits": maskloss.binary_crossentropy,
    "categorical": maskloss.categorical_crossentropy, "categorical logits": maskloss.categorical_crossentropy,
}


@pytest.mark.parametrize("kind", list(_DENSE_LOSSES))
def test_every_dense_loss_on_a_real_multithreaded_batch_is_bit_identical(kind):
    y_true, y_pred, mask, options = _dense_batch(kind)
    vg = maskloss.value_and_grad(_DENSE_LOSSES[kind])
    value, grad = _bit_identical_over_real_configs(lambda: vg(y_true, y_pred, mask, **options))
    assert np.isfinite(value) and np.all(np.isfinite(grad)) and np.all(grad[~mask] == 0)
    assert value == _DENSE_LOSSES[kind](y_true, y_pred, mask, **options)


def test_the_conventions_share_the_chunk_loop_and_its_bit_identity():
    labels, logits = _lm_batch(np.float64)
    labels = np.where(labels < 0, 1, labels)  # fairseq/t5x take a padding id / weights instead
    weights = (labels != 1).astype(float)
    lp = logits - np.logaddexp.reduce(np.nan_to_num(logits), axis=-1, keepdims=True)
    lp = np.nan_to_num(lp)
    out = []
    for threads, chunk in [(1, 1 << 18), (2, 1 << 10)]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_rows, "CHUNK_ELEMENTS", chunk)
            mp.setattr(_rows, "MIN_ELEMENTS_PER_THREAD", 1)
            previous = maskloss.set_num_threads(threads)
            try:
                out.append((
                    fairseq.label_smoothed_nll_loss(lp, labels, 0.1, ignore_index=1),
                    t5x.compute_weighted_cross_entropy(np.nan_to_num(logits), labels, weights, 0.1, 1e-4),
                ))
            finally:
                maskloss.set_num_threads(previous)
    for a, b in zip(np.asarray(out[0], dtype=object).ravel(), np.asarray(out[1], dtype=object).ravel(), strict=True):
        _assert_bitwise(a, b)


def test_value_and_grad_writes_into_out_in_float64_or_the_input_dtype():
    labels, logits = _lm_batch()
    vg = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)
    value, grad = vg(labels, logits, from_logits=True, ignore_index=-100)
    for dtype in (np.float64, np.float32):
        out = np.full(logits.shape, 7.0, dtype=dtype)  # stale content must be overwritten
        v, g = vg(labels, logits, from_logits=True, ignore_index=-100, out=out)
        assert g is out and v == value
        np.testing.assert_array_equal(out, grad.astype(dtype))
    # A batch small enough for the one-chunk path: its masked rows are zeroed in out= too.
    assert np.any(labels[:1, 3:7] == -100)  # an ignored step (NaN logits) among them
    assert np.sum(labels[:1, 3:7] != -100) * logits.shape[-1] <= _rows.SMALL_CHUNK
    small_value, small_grad = vg(labels[:1, 3:7], logits[:1, 3:7], from_logits=True, ignore_index=-100)
    out = np.full(logits[:1, 3:7].shape, 7.0)
    v, g = vg(labels[:1, 3:7], logits[:1, 3:7], from_logits=True, ignore_index=-100, out=out)
    assert g is out and v == small_value
    np.testing.assert_array_equal(out, small_grad)


@pytest.mark.parametrize(
    ("out", "error", "message"),
    [
        ([0.0], TypeError, "out must be a numpy array"),
        (np.zeros((2, 2)), ValueError, r"out must have y_pred's shape \(1, 2, 3\), got \(2, 2\)"),
        (np.zeros((1, 2, 3), dtype=np.float16), TypeError, "out must be float64 or y_pred's dtype"),
        (np.zeros((1, 2, 6))[..., ::2], ValueError, "C-contiguous"),
    ],
)
def test_a_bad_out_is_refused_clearly(out, error, message):
    vg = maskloss.value_and_grad(maskloss.mse)
    with pytest.raises(error, match=message):
        vg(np.zeros((1, 2, 3)), np.ones((1, 2, 3)), out=out)


def test_out_may_not_be_the_predictions():
    y_pred = np.ones((1, 2, 3))
    with pytest.raises(ValueError, match="share memory"):
        maskloss.value_and_grad(maskloss.mse)(np.zeros((1, 2, 3)), y_pred, out=y_pred)


def test_set_num_threads_returns_the_previous_value_and_checks_its_argument():
    previous = maskloss.set_num_threads(3)
    try:
        assert maskloss.set_num_threads(2) == 3
        assert maskloss.get_num_threads() == 2
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="n must be a positive int"):
                maskloss.set_num_threads(bad)
    finally:
        maskloss.set_num_threads(previous)


def test_the_environment_variable_sets_the_default():
    code = "import maskloss; print(maskloss.get_num_threads())"
    env = {**os.environ, "MASKLOSS_NUM_THREADS": "5"}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "5"
    env["MASKLOSS_NUM_THREADS"] = "zero"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "MASKLOSS_NUM_THREADS must be a positive int, got 'zero'" in bad.stderr
    env.pop("MASKLOSS_NUM_THREADS")
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(default.stdout) == min(len(os.sched_getaffinity(0)), 8)


def test_an_error_in_a_chunk_is_the_first_bad_step_whatever_the_threads():
    p = np.full((2, 50, 3), 0.5)
    p[0, 40, 1] = 2.0
    p[1, 10, 0] = -1.0
    for threads in (1, 2):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_rows, "CHUNK_ELEMENTS", 6)
            mp.setattr(_rows, "MIN_ELEMENTS_PER_THREAD", 1)
            previous = maskloss.set_num_threads(threads)
            try:
                with pytest.raises(ValueError, match=r"step \(0, 40\)"):
                    maskloss.binary_crossentropy(np.ones_like(p), p)
            finally:
                maskloss.set_num_threads(previous)
