"""Gradients and the mask: garbage never leaks, padding never matters, edge cases are pinned."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss import _rows
from maskloss.gradients import value_and_grad
from tests.cases import GARBAGE, Case, cases

SCALAR = maskloss.SCALAR_REDUCTIONS
LOSSES = (
    maskloss.mae,
    maskloss.mse,
    maskloss.binary_crossentropy,
    maskloss.categorical_crossentropy,
    maskloss.sparse_categorical_crossentropy,
)


def counted(case: Case) -> np.ndarray:
    steps = case.mask.copy()
    if case.kind == "sparse" and case.options.get("ignore_index") is not None:
        steps &= case.y_true != case.options["ignore_index"]
    return steps


def run(case: Case, reduction: str, **overrides):
    return value_and_grad(case.function)(
        case.y_true, case.y_pred, case.mask, reduction=reduction, **{**case.options, **overrides}
    )


@given(case=cases())
def test_garbage_under_the_mask_gives_finite_zero_gradient(case):
    """NaN, inf and 1e300 at masked steps: the gradient is finite everywhere and exactly 0 there."""
    keep = counted(case)
    for reduction in SCALAR:
        value, grad = run(case, reduction)
        assert grad.dtype == np.float64 and grad.shape == case.y_pred.shape
        assert np.all(np.isfinite(grad))
        assert np.all(grad[~keep] == 0.0)
        forward = case.run(reduction)
        assert (math.isnan(value) and math.isnan(forward)) or value == forward  # the same pipeline


def test_torch_leaks_nan_from_an_ignored_row_but_we_do_not():
    """torch 2.13: NaN logits at an ignore_index row leave the loss finite but NaN its gradient row."""
    torch = pytest.importorskip("torch")
    logits = np.random.default_rng(1).normal(size=(2, 3, 5))
    labels = np.array([[1, 4, -100], [0, 2, 3]])
    logits[0, 2] = np.nan  # the ignored row
    x = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(
        x.reshape(-1, 5), torch.as_tensor(labels.reshape(-1)), ignore_index=-100
    )
    loss.backward()
    torch_grad = x.grad.numpy()
    value, grad = value_and_grad(maskloss.sparse_categorical_crossentropy)(
        labels, logits, from_logits=True, ignore_index=-100
    )
    assert math.isfinite(loss.item())
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    assert np.all(np.isnan(torch_grad[0, 2]))  # torch: log_softmax backward computes g - softmax(x)·Σg
    assert np.all(grad[0, 2] == 0.0)  # maskloss: the row is never computed
    assert np.all(np.isfinite(grad))
    clean = np.ones(labels.shape, dtype=bool)
    clean[0, 2] = False
    np.testing.assert_allclose(grad[clean], torch_grad[clean], rtol=1e-10)


def _pad_time(case: Case, extra: int, junk: float) -> Case:
    """Append ``extra`` masked steps holding ``junk`` to every sequence (weights and labels too)."""
    batch, _steps = case.mask.shape
    mask = np.concatenate([case.mask, np.zeros((batch, extra), dtype=bool)], axis=1)
    pad_pred = np.full((batch, extra, *case.y_pred.shape[2:]), junk)
    y_pred = np.concatenate([case.y_pred, pad_pred], axis=1)
    if case.kind == "sparse":
        y_true = np.concatenate([case.y_true, np.full((batch, extra), 10**6)], axis=1)
    else:
        y_true = np.concatenate([case.y_true, np.full((batch, extra, *case.y_true.shape[2:]), junk)], axis=1)
    options = dict(case.options)
    w = options.get("sample_weight")
    if w is not None and w.ndim == 2:
        options["sample_weight"] = np.concatenate([w, np.full((batch, extra), np.nan)], axis=1)
    return Case(case.kind, y_true, y_pred, mask, options)


@given(case=cases(), extra=st.integers(1, 4), junk=st.sampled_from(GARBAGE))
def test_padding_does_not_change_the_gradient_at_valid_steps(case, extra, junk):
    """Extra padded steps change nothing, except element_mean, scaled by T / (T + extra)."""
    padded = _pad_time(case, extra, junk)
    steps = case.mask.shape[1]
    for reduction in SCALAR:
        value, grad = run(case, reduction)
        padded_value, padded_grad = run(padded, reduction)
        factor = steps / (steps + extra) if reduction == "element_mean" else 1.0
        # atol: two roundings (the division and value * factor) of one subnormal spacing each, where a
        # tiny loss puts element_mean below the normal range (hypothesis seed 202: 2.2e-311, 1 spacing apart)
        atol = 2 * np.finfo(np.float64).smallest_subnormal
        np.testing.assert_allclose(padded_value, value * factor, rtol=1e-13, atol=atol, equal_nan=True)
        np.testing.assert_allclose(padded_grad[:, :steps], grad * factor, rtol=1e-13, atol=atol)
        assert np.all(padded_grad[:, steps:] == 0.0)


@settings(max_examples=20)
@given(case=cases(max_batch=4, max_steps=6))
def test_gradient_is_the_same_across_chunk_boundaries(case):
    """Rows computed in many small chunks are scattered to the same places as in one chunk."""
    whole = {r: run(case, r) for r in SCALAR}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_rows, "CHUNK_ELEMENTS", 3)  # one or two rows per chunk
        for reduction in SCALAR:
            value, grad = run(case, reduction)
            np.testing.assert_allclose(value, whole[reduction][0], rtol=1e-13, equal_nan=True)
            np.testing.assert_array_equal(grad, whole[reduction][1])


@pytest.mark.parametrize("fn", LOSSES)
def test_reduction_none_is_refused(fn):
    y_true = np.array([[1]]) if fn is maskloss.sparse_categorical_crossentropy else np.array([[[1.0, 0.0]]])
    with pytest.raises(ValueError, match=r"reduction='none'.*pick a scalar reduction"):
        value_and_grad(fn)(y_true, np.array([[[0.5, 0.5]]]), reduction="none")


def test_unknown_function_is_refused():
    with pytest.raises(TypeError, match="fn must be one of maskloss's losses"):
        value_and_grad(np.mean)


@pytest.mark.parametrize("fn", LOSSES)
def test_same_signature_and_arguments_checked_like_the_loss(fn):
    wrapped = value_and_grad(fn)
    assert inspect.signature(wrapped) == inspect.signature(fn)
    assert wrapped.__name__ == fn.__name__
    with pytest.raises(TypeError):
        wrapped(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), None, "token_mean")  # reduction is keyword-only
    with pytest.raises(TypeError):
        wrapped(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), no_such_option=1)


def test_float32_input_float64_gradient_and_inputs_untouched():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(3, 4))
    mask = maskloss.mask_from_lengths([4, 2, 0], 4)
    before = logits.copy(), labels.copy(), mask.copy()
    sparse = value_and_grad(maskloss.sparse_categorical_crossentropy)
    value, grad = sparse(labels, logits, mask, from_logits=True)
    assert isinstance(value, np.float64) and grad.dtype == np.float64 and grad.shape == logits.shape
    for a, b in zip(before, (logits, labels, mask), strict=True):
        np.testing.assert_array_equal(a, b)
    # Rows of softmax - onehot sum to 0 at each valid step (the float32 input, promoted first).
    np.testing.assert_allclose(grad.sum(axis=-1), 0.0, atol=1e-15)
    probs = np.exp(logits.astype(np.float64))
    probs /= probs.sum(axis=-1, keepdims=True)
    expected = (probs - np.eye(5)[labels]) / mask.sum()
    np.testing.assert_allclose(grad, np.where(mask[..., None], expected, 0.0), rtol=1e-12, atol=1e-16)


def test_all_masked_value_nan_gradient_zero():
    for reduction in ("token_mean", "sequence_mean"):
        value, grad = value_and_grad(maskloss.mse)(np.ones((2, 3, 1)), np.full((2, 3, 1), np.nan),
                                                   np.zeros((2, 3), dtype=bool), reduction=reduction)
        assert math.isnan(value) and np.all(grad == 0.0)
    # Valid steps that all carry weight 0 count for nothing either: 0/0 and a zero gradient.
    value, grad = value_and_grad(maskloss.mae)(np.ones((1, 2, 1)), np.zeros((1, 2, 1)), sample_weight=[0.0])
    assert math.isnan(value) and np.all(grad == 0.0)


def test_probability_zero_infinite_only_where_target_has_mass():
    """0·log 0 terms have derivative 0 at p = 0; positive target mass at p = 0 is -inf."""
    y_true = np.array([[[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]])
    y_pred = np.array([[[0.0, 0.5, 0.5], [0.0, 1.0, 0.0]]])
    _, grad = value_and_grad(maskloss.categorical_crossentropy)(y_true, y_pred, reduction="sum")
    # Step 0: p=0 on a class of target 0 -> 0; class 1: -1/0.5; class 2: target 0 -> 0.
    np.testing.assert_array_equal(grad[0, 0], [0.0, -2.0, 0.0])
    # Step 1: p=0 where the target is 0.5 -> -inf; p=0 where the target is 0 -> 0.
    np.testing.assert_array_equal(grad[0, 1], [-np.inf, -0.5, 0.0])
    # Binary: y=0 at p=0 -> d/dp = (1-y)/(1-p) = 1; y=1 at p=1 -> -1; y=1 at p=0 -> -inf.
    _, grad = value_and_grad(maskloss.binary_crossentropy)([[[0.0, 1.0, 1.0]]], [[[0.0, 1.0, 0.0]]],
                                                           reduction="sum")
    np.testing.assert_array_equal(grad[0, 0], [1.0 / 3, -1.0 / 3, -np.inf])
    # Sparse: p=0 on a non-label class costs nothing without smoothing; with smoothing it is -inf.
    _, grad = value_and_grad(maskloss.sparse_categorical_crossentropy)([[1]], [[[0.0, 1.0]]], reduction="sum")
    np.testing.assert_array_equal(grad[0, 0], [0.0, -1.0])
    _, grad = value_and_grad(maskloss.sparse_categorical_crossentropy)([[1]], [[[0.0, 1.0]]], reduction="sum",
                                                                       label_smoothing=0.2)
    np.testing.assert_array_equal(grad[0, 0], [-np.inf, -0.9])
