"""maskloss.vjp: the per-step values and the gradient of sum(cotangent * values), against torch autograd.

torch 2.13 CPU in float64 defines it: the per-step losses of ``tests.test_gradients_torch``
(``F.cross_entropy``/``F.l1_loss``/... with ``reduction="none"``), masked with
``torch.where`` and weighted by the sample weight, then ``(ct * values).sum().backward()``:
exactly what a framework's backward does with ``grad_output`` for an unreduced loss.
Cotangents are of either sign; masked steps hold NaN cotangents, which must not matter.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss import registry
from tests.cases import KINDS, cases

torch = pytest.importorskip("torch")
from tests.test_gradients_torch import ATOL, RTOL, counted, torch_per_step  # noqa: E402

pytestmark = pytest.mark.framework("torch")


def _torch_vjp(case, ct):
    x = torch.tensor(np.asarray(case.y_pred, dtype=np.float64), requires_grad=True)
    loss, _ = torch_per_step(case, x)
    keep = torch.as_tensor(counted(case))
    w = case.options.get("sample_weight")
    w = torch.ones(case.mask.shape, dtype=torch.float64) if w is None else torch.as_tensor(np.asarray(w, float))
    if w.ndim == 1:
        w = w[:, None]
    values = torch.where(keep, w * loss, 0.0)
    (torch.where(keep, torch.as_tensor(np.nan_to_num(ct)), 0.0) * values).sum().backward()
    return values.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_vjp_matches_torch_autograd(kind):
    @settings(max_examples=30)
    @given(case=cases(kinds=(kind,), garbage=False), seed=st.integers(0, 2**32 - 1))
    def check(case, seed):
        ct = np.random.default_rng(seed).normal(size=case.mask.shape) * 3
        ct[~case.mask] = np.nan  # never read
        values, grad = maskloss.vjp(case.function)(
            case.y_true, case.y_pred, case.mask, reduction="none", cotangent=ct, **case.options
        )
        # the values are exactly the loss's own reduction="none"
        np.testing.assert_array_equal(values, case.run("none"))
        want_values, want_grad = _torch_vjp(case, ct)
        np.testing.assert_allclose(values, want_values, rtol=RTOL, atol=ATOL)
        scale = np.max(np.abs(want_grad), initial=0.0)
        np.testing.assert_allclose(grad, want_grad, rtol=RTOL, atol=ATOL * max(1.0, scale))

    check()


def test_vjp_of_every_registered_pipeline_loss_is_the_sum_of_weighted_value_and_grads():
    """Linearity: vjp with a cotangent ct >= 0 is value_and_grad of "sum" with ct folded into the step
    weights, for every registered loss with a gradient that takes sample_weight (value_and_grad is
    checked against torch in tests/test_gradients_torch.py)."""
    rng = np.random.default_rng(19)
    y, logits = rng.integers(0, 4, size=(2, 3)), rng.normal(size=(2, 3, 4))
    mask = np.array([[True, True, False], [True, False, False]])
    ct = rng.uniform(0.5, 2.0, size=(2, 3))
    checked = 0
    for spec in registry.specs():
        if not spec.grad or spec.pipeline is None or spec.kind != "sparse":
            continue
        _, grad = maskloss.vjp(spec.function)(y, logits, mask, from_logits=True, reduction="none", cotangent=ct)
        _, want = maskloss.value_and_grad(spec.function)(
            y, logits, mask, from_logits=True, reduction="sum", sample_weight=ct
        )
        np.testing.assert_allclose(grad, want, rtol=1e-14, atol=1e-16)
        checked += 1
    assert checked >= 1


def test_vjp_of_linear_cross_entropy_is_its_cotangent_path():
    rng = np.random.default_rng(3)
    hidden, weight, bias = rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)
    labels = rng.integers(0, 5, size=(2, 3))
    ct = rng.normal(size=(2, 3))
    got = maskloss.vjp(maskloss.linear_cross_entropy)(hidden, weight, labels, bias=bias, reduction="none", cotangent=ct)
    want = maskloss.linear.linear_cross_entropy_value_and_grad(
        hidden, weight, labels, bias=bias, reduction="none", cotangent=ct
    )
    np.testing.assert_array_equal(got[0], want[0])
    for g, w in zip(got[1], want[1], strict=True):
        np.testing.assert_array_equal(g, w)


def test_vjp_errors_name_what_to_do():
    y, p = np.zeros((1, 2, 1)), np.ones((1, 2, 1))
    with pytest.raises(ValueError, match=r"vjp needs reduction='none'.*use maskloss.value_and_grad"):
        maskloss.vjp(maskloss.mse)(y, p, cotangent=[[1.0, 1.0]])
    with pytest.raises(TypeError, match=r"vjp\(mse\) needs cotangent="):
        maskloss.vjp(maskloss.mse)(y, p, reduction="none")
    with pytest.raises(ValueError, match=r"cotangent must have the shape of the steps \(1, 2\), got \(2,\)"):
        maskloss.vjp(maskloss.mse)(y, p, reduction="none", cotangent=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"cotangent must be finite at valid steps; found inf at step \(0, 1\)"):
        maskloss.vjp(maskloss.mse)(y, p, reduction="none", cotangent=[[1.0, np.inf]])
    with pytest.raises(TypeError, match=r"vjp\(fn\): fn must be one of maskloss's losses \(.*token_accuracy has no"):
        maskloss.vjp(maskloss.token_accuracy)
