"""Issue 19: every loss declared once in maskloss.registry, and every list of losses read off it."""

from __future__ import annotations

import argparse
import inspect
import re

import numpy as np
import pytest

import maskloss
from maskloss import registry, strategies
from maskloss.cli import _build_parser
from maskloss.evaluate import LOSSES
from maskloss.pipeline import Pipeline
from maskloss.testing import setup

PUBLIC_LOSSES = (
    "mae", "mse", "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
    "kl_divergence", "jensen_shannon", "entropy", "z_loss", "token_accuracy", "linear_cross_entropy",
    "policy_gradient_objective", "clipped_value_loss",
)


def test_every_public_loss_is_declared_once():
    assert sorted(registry.names()) == sorted(PUBLIC_LOSSES)
    for name in PUBLIC_LOSSES:
        spec = registry.spec_of(getattr(maskloss, name))
        assert spec is not None and spec.name == name
    assert registry.names(grad=False) == ("token_accuracy",)


def test_value_and_grad_docstring_lists_exactly_the_losses_with_a_gradient():
    listed = set(re.findall(r":func:`maskloss\.(\w+)`", maskloss.value_and_grad.__doc__.split("Returns")[0]))
    assert listed == set(registry.names(grad=True))


def test_value_and_grad_error_lists_every_loss_with_a_gradient():
    with pytest.raises(TypeError) as err:
        maskloss.value_and_grad(np.mean)
    listed = re.search(r"fn must be one of maskloss's losses \((.*)\); got", str(err.value)).group(1).split(", ")
    assert listed == list(registry.names(grad=True))


def test_evaluate_choices_and_batch_kinds_come_from_the_registry():
    assert registry.names(evaluate=True) == LOSSES
    sub = next(a for a in _build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = next(a for a in sub.choices["evaluate"]._actions if a.dest == "loss").choices
    assert tuple(choices) == LOSSES
    assert strategies.KINDS == registry.BATCH_KINDS
    for spec in registry.specs():
        assert spec.kind is None or spec.kind in strategies.KINDS
        assert setup.kind_of(spec.function) == spec.kind


def test_a_declared_loss_keeps_its_signature_and_docstring_without_a_twin():
    spec = registry.spec_of(maskloss.sparse_categorical_crossentropy)
    params = inspect.signature(maskloss.sparse_categorical_crossentropy).parameters
    assert list(params) == list(inspect.signature(spec.pipeline).parameters)
    assert maskloss.sparse_categorical_crossentropy.__doc__ == spec.pipeline.__doc__
    assert isinstance(spec.pipeline([[0]], [[[0.0, 1.0]]], from_logits=True), Pipeline)
    assert not any(name.endswith("_pipeline") and name.startswith("_") for name in vars(maskloss.losses))
    with pytest.raises(TypeError, match=r"sparse_categorical_crossentropy.. got an unexpected keyword"):
        maskloss.sparse_categorical_crossentropy([[0]], [[[0.0, 1.0]]], nope=1)


def test_policy_gradient_objective_and_linear_cross_entropy_work_with_value_and_grad():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(2, 3, 4)), rng.integers(0, 4, size=(2, 3))
    value, grad = maskloss.value_and_grad(maskloss.policy_gradient_objective)(labels, logits, [1.0, -1.0])
    assert value == maskloss.policy_gradient_objective(labels, logits, [1.0, -1.0]) and grad.shape == logits.shape

    hidden, weight, bias = rng.normal(size=(2, 3, 5)), rng.normal(size=(4, 5)), rng.normal(size=4)
    value, (d_hidden, d_weight, d_bias) = maskloss.value_and_grad(maskloss.linear_cross_entropy)(
        hidden, weight, labels, bias=bias, label_smoothing=0.1
    )
    want_value, want = maskloss.linear.linear_cross_entropy_value_and_grad(
        hidden, weight, labels, bias=bias, label_smoothing=0.1
    )
    assert value == want_value == maskloss.linear_cross_entropy(hidden, weight, labels, bias=bias, label_smoothing=0.1)
    for got, expected in zip((d_hidden, d_weight, d_bias), want, strict=True):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match=r"needs a scalar loss.*maskloss.vjp\(linear_cross_entropy\)"):
        maskloss.value_and_grad(maskloss.linear_cross_entropy)(hidden, weight, labels, reduction="none")
    with pytest.raises(TypeError, match=r"masked_totals.*linear_cross_entropy has no pipeline"):
        maskloss.masked_totals(maskloss.linear_cross_entropy)


def test_register_refuses_what_it_cannot_use():
    with pytest.raises(ValueError, match="kind must be one of"):
        registry.register(lambda: None, kind="ragged", grad=False)
    with pytest.raises(ValueError, match="needs pipeline= or value_and_grad="):
        registry.register(lambda: None)


def test_the_old_registration_api_still_works():
    from maskloss import losses

    assert losses.pipeline_of(maskloss.mae) is registry.pipeline_of(maskloss.mae)
    assert losses.pipeline_transform is registry.pipeline_transform

    def twice(y_true, y_pred, mask=None, *, reduction="token_mean"):
        return 2 * maskloss.mse(y_true, y_pred, mask, reduction=reduction)

    def build(y_true, y_pred, mask=None, *, reduction="token_mean"):
        pipeline = registry.pipeline_of(maskloss.mse)(y_true, y_pred, mask, reduction=reduction, sample_weight=2.0)
        return pipeline

    losses.register_pipeline(twice, build)
    try:
        value, grad = maskloss.value_and_grad(twice)(np.zeros((1, 1, 1)), np.ones((1, 1, 1)), reduction="sum")
        assert (float(value), grad.ravel().tolist()) == (2.0, [4.0])
    finally:
        registry.unregister(twice)
    assert registry.spec_of(twice) is None
