"""value_and_grad against real torch autograd (torch 2.13 CPU, float64).

torch defines the conventions here: ``F.cross_entropy`` with ``ignore_index``, class
weights (``weight=``) and ``label_smoothing`` (index and probability targets),
``F.binary_cross_entropy(_with_logits)``, ``F.l1_loss`` (whose subgradient at zero
error is ``sign(0) = 0``) and ``F.mse_loss``. Per-step losses come from torch with
``reduction="none"``; masking and every maskloss reduction are then written by hand in
torch with ``torch.where`` (selection, as the library does), and ``.backward()`` gives
the gradient. Where torch has the reduction itself (``cross_entropy``'s ``"mean"``
and ``"sum"`` with ``ignore_index``), torch's own reduction is used.

Inputs are clean here (finite everywhere, as torch needs them to be); garbage under
the mask is the subject of ``test_gradients_masking.py``. Agreement: 1e-10 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

import maskloss
from maskloss.gradients import value_and_grad
from tests.cases import KINDS, Case, cases

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.framework("torch")

RTOL = 1e-10
ATOL = 1e-13


def _t(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def counted(case: Case) -> np.ndarray:
    steps = case.mask.copy()
    if case.kind == "sparse" and case.options.get("ignore_index") is not None:
        steps &= case.y_true != case.options["ignore_index"]
    return steps


def torch_per_step(case: Case, x):
    """Per-step loss (B, T) and per-step denominator weight (torch's cw[y] or 1), from torch."""
    o = case.options
    eps = o.get("label_smoothing", 0.0)
    batch, steps, width = case.y_pred.shape
    ones = torch.ones(batch, steps, dtype=torch.float64)
    if case.kind == "mae":
        return F.l1_loss(x, _t(case.y_true), reduction="none").mean(-1), ones
    if case.kind == "mse":
        return F.mse_loss(x, _t(case.y_true), reduction="none").mean(-1), ones
    if case.kind == "binary":
        target = _t(case.y_true) * (1 - eps) + eps / 2  # Keras binary smoothing
        if o["from_logits"]:
            return F.binary_cross_entropy_with_logits(x, target, reduction="none").mean(-1), ones
        return F.binary_cross_entropy(x, target, reduction="none").mean(-1), ones
    cw = None if o.get("class_weight") is None else _t(o["class_weight"])
    cw_all = torch.ones(width, dtype=torch.float64) if cw is None else cw
    if case.kind == "categorical":
        if o["from_logits"]:  # torch's probability-target cross_entropy: -sum cw q' log_softmax
            loss = F.cross_entropy(
                x.reshape(-1, width), _t(case.y_true).reshape(-1, width), weight=cw,
                label_smoothing=eps, reduction="none",
            )
            return loss.reshape(batch, steps), ones
        smoothed = _t(case.y_true) * (1 - eps) + eps / width
        return -(cw_all * smoothed * torch.log(x)).sum(-1), ones
    keep = counted(case)
    labels = torch.as_tensor(np.where(keep, case.y_true, -100)).reshape(-1)
    if o["from_logits"]:
        loss = F.cross_entropy(
            x.reshape(-1, width), labels, weight=cw, ignore_index=-100, label_smoothing=eps, reduction="none"
        )
    else:  # nll_loss on log-probabilities, plus torch's eps/C smoothing term written out
        log_p = torch.log(x).reshape(-1, width)
        loss = (1 - eps) * F.nll_loss(log_p, labels, weight=cw, ignore_index=-100, reduction="none")
        spread = -(eps / width) * (cw_all * log_p).sum(-1)
        loss = loss + torch.where(torch.as_tensor(keep.reshape(-1)), spread, 0.0)
    step_weight = cw_all[torch.as_tensor(np.where(keep, case.y_true, 0))]
    return loss.reshape(batch, steps), step_weight


def torch_reduce(loss, step_weight, case: Case, reduction: str):
    """Masked reductions by hand in torch: selection with torch.where, then sums."""
    keep = torch.as_tensor(counted(case))
    batch, steps = case.mask.shape
    w = case.options.get("sample_weight")
    w = torch.ones(batch, steps, dtype=torch.float64) if w is None else _t(w)
    if w.ndim == 1:
        w = w[:, None]
    num = torch.where(keep, w * loss, 0.0)
    den = torch.where(keep, w * step_weight, 0.0)
    if reduction == "sum":
        return num.sum()
    if reduction == "token_mean":
        # Real F.cross_entropy(reduction="mean") gives NaN when the counted weights sum to 0, even
        # when the numerator is inf (torch.log(0) in the smoothing term, weight=[1, 0]):
        # F.cross_entropy(log([[0., 1.]]), [1], weight=[1., 0.], label_smoothing=0.1) is nan,
        # while inf / 0 would be inf. Only the value is compared in that case.
        total = den.sum()
        return num.sum() / total if total != 0 else num.sum() * 0.0 + float("nan")
    if reduction == "sequence_mean":
        n_b, d_b = num.sum(1), den.sum(1)
        nonempty = d_b > 0
        if not nonempty.any():  # no sequence counts: NaN, as above (not inf / 0)
            return num.sum() * 0.0 + float("nan")
        return (n_b[nonempty] / d_b[nonempty]).sum() / nonempty.sum()
    if reduction == "batch_mean":
        return num.sum() / batch
    assert reduction == "element_mean"
    return num.sum() / (batch * steps)


def torch_value_and_grad(case: Case, reduction: str):
    x = torch.tensor(np.asarray(case.y_pred, dtype=np.float64), requires_grad=True)
    loss, step_weight = torch_per_step(case, x)
    value = torch_reduce(loss, step_weight, case, reduction)
    value.backward()
    return value.item(), x.grad.numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_matches_torch_autograd(kind):
    @settings(max_examples=40)
    @given(case=cases(kinds=(kind,), garbage=False))
    def check(case):
        for reduction in maskloss.SCALAR_REDUCTIONS:
            value, grad = value_and_grad(case.function)(
                case.y_true, case.y_pred, case.mask, reduction=reduction, **case.options
            )
            expected_value, expected_grad = torch_value_and_grad(case, reduction)
            if math.isnan(expected_value):
                assert math.isnan(value) and np.all(grad == 0.0)
                continue
            np.testing.assert_allclose(value, expected_value, rtol=RTOL, atol=ATOL)
            scale = np.max(np.abs(expected_grad), initial=0.0)
            np.testing.assert_allclose(grad, expected_grad, rtol=RTOL, atol=ATOL * max(1.0, scale),
                                       err_msg=reduction)

    check()


@pytest.mark.parametrize("torch_reduction, ours", [("mean", "token_mean"), ("sum", "sum")])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_matches_torch_cross_entropy_own_reduction(torch_reduction, ours, label_smoothing, weighted):
    """F.cross_entropy reduces by itself (mean = sum / sum of cw[y] over non-ignored steps)."""
    rng = np.random.default_rng(3)
    batch, steps, classes = 4, 7, 6
    logits = rng.normal(scale=3.0, size=(batch, steps, classes))
    labels = rng.integers(0, classes, size=(batch, steps))
    labels[rng.random((batch, steps)) < 0.3] = -100
    labels[1] = -100  # one sequence entirely ignored
    cw = rng.uniform(0.2, 2.0, size=classes) if weighted else None
    x = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(
        x.reshape(-1, classes), torch.as_tensor(labels.reshape(-1)), ignore_index=-100,
        weight=None if cw is None else torch.as_tensor(cw), label_smoothing=label_smoothing,
        reduction=torch_reduction,
    )
    loss.backward()
    value, grad = value_and_grad(maskloss.sparse_categorical_crossentropy)(
        labels, logits, from_logits=True, ignore_index=-100, class_weight=cw,
        label_smoothing=label_smoothing, reduction=ours,
    )
    np.testing.assert_allclose(value, loss.item(), rtol=RTOL)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=RTOL, atol=1e-15)
    assert np.all(grad[1] == 0.0)


def test_all_ignored_is_nan_with_zero_gradient_like_torch():
    logits = np.random.default_rng(0).normal(size=(2, 3, 4))
    labels = np.full((2, 3), -100)
    x = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x.reshape(-1, 4), torch.as_tensor(labels.reshape(-1)), ignore_index=-100)
    loss.backward()
    value, grad = value_and_grad(maskloss.sparse_categorical_crossentropy)(
        labels, logits, from_logits=True, ignore_index=-100
    )
    assert math.isnan(loss.item()) and math.isnan(value)
    assert np.all(x.grad.numpy() == 0.0) and np.all(grad == 0.0)


def test_mae_subgradient_at_zero_error_is_torch_sign_zero():
    y_true = np.array([[[1.0, 2.0, 3.0]]])
    y_pred = np.array([[[1.0, 2.5, 2.0]]])  # zero error on the first feature
    x = torch.tensor(y_pred, requires_grad=True)
    F.l1_loss(x, _t(y_true)).backward()
    _, grad = value_and_grad(maskloss.mae)(y_true, y_pred)
    assert x.grad.numpy()[0, 0, 0] == 0.0 and grad[0, 0, 0] == 0.0
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=RTOL)


def test_reference_is_nan_not_inf_when_every_weight_is_zero():
    """The pinned flaky case: probabilities with a 0, label_smoothing=0.1, class_weight=[1, 0]."""
    case = Case(
        "sparse", np.array([[1, 1]]),
        np.array([[[0.0, 1.0], [0.0, 1.0]]]), np.ones((1, 2), bool),
        {"from_logits": False, "label_smoothing": 0.1, "class_weight": np.array([1.0, 0.0])},
    )
    logits = torch.log(_t(case.y_pred).reshape(-1, 2))
    real = F.cross_entropy(logits, torch.tensor([1, 1]), weight=_t([1.0, 0.0]), label_smoothing=0.1)
    assert math.isnan(real.item())  # the real torch definition
    x = _t(case.y_pred).requires_grad_(True)
    loss, step_weight = torch_per_step(case, x)
    for reduction in ("token_mean", "sequence_mean"):
        assert math.isnan(torch_reduce(loss, step_weight, case, reduction).item())
        value, grad = value_and_grad(case.function)(
            case.y_true, case.y_pred, case.mask, reduction=reduction, **case.options
        )
        assert math.isnan(value) and np.all(grad == 0.0)
