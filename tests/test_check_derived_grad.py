"""check_loss(grad=) derives the expected gradient where the oracle has one (issue 25).

The candidates' gradients come from torch autograd on the candidate's own torch code; each
wrong one differs from the right one only in its gradient (its value is the right one), so
only the derived expected gradient can catch it. On main these tests fail: the
weight_normalization= oracle and a functools.partial like raised value_and_grad's TypeError
("fn must be one of maskloss's losses"), and a like with no gradient had no message naming
expected_grad=.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch

import maskloss
from maskloss.testing import Bounds, LossCheckError, check_loss


def _t(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _mse_numerator_torch(y_true: Any, y_pred: torch.Tensor, mask: Any, sample_weight: Any,
                         renormalise: bool) -> torch.Tensor:
    """Keras 3's sum_over_batch_size: sum m w l / sum m; without renormalise: sum m w l / sum m w."""
    m = torch.as_tensor(np.asarray(mask, dtype=bool))
    w = torch.ones(m.shape, dtype=torch.float64) if sample_weight is None else _t(sample_weight)
    w = w[:, None].expand(m.shape) if w.ndim == 1 else w
    diff = torch.where(m[..., None], _t(y_true) - y_pred, torch.zeros((), dtype=torch.float64))
    per_step = (diff * diff).mean(-1)
    num = torch.where(m, w * per_step, torch.zeros((), dtype=torch.float64)).sum()
    den = m.sum() if renormalise else torch.where(m, w, torch.zeros((), dtype=torch.float64)).sum()
    return num / den


def _value(y_true: Any, y_pred: Any, mask: Any, sample_weight: Any = None) -> Any:
    return float(_mse_numerator_torch(y_true, _t(y_pred), mask, sample_weight, True))


def _grad(renormalise: bool) -> Any:
    def grad(y_true: Any, y_pred: Any, mask: Any, sample_weight: Any = None) -> Any:
        p = _t(np.where(np.asarray(mask)[..., None], y_pred, 0.0)).requires_grad_(True)
        _mse_numerator_torch(y_true, p, mask, sample_weight, renormalise).backward()
        assert p.grad is not None
        return p.grad.numpy()

    return grad


@pytest.mark.parametrize("weights", ["sequence", "step"])
def test_weight_normalization_gradient_is_derived(weights: str) -> None:
    check_loss(_value, maskloss.mse, grad=_grad(True), bounds=Bounds(weights=weights),
               weight_normalization="numerator", max_examples=30)


def test_weight_normalization_gradient_missing_the_renormalisation_is_caught() -> None:
    with pytest.raises(LossCheckError, match="gradient"):
        check_loss(_value, maskloss.mse, grad=_grad(False), bounds=Bounds(weights="sequence"),
                   weight_normalization="numerator", max_examples=30)


def _sum_ce_torch(labels: Any, logits: torch.Tensor, mask: Any, padded_mean: bool) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask, dtype=bool))
    lab = torch.as_tensor(np.where(m.numpy(), labels, 0)).long()
    nll = -torch.log_softmax(logits, -1).gather(-1, lab[..., None])[..., 0]
    total = torch.where(m, nll, torch.zeros((), dtype=torch.float64)).sum()
    return total / m.numel() if padded_mean else total


def _sum_ce(labels: Any, logits: Any, mask: Any) -> Any:
    lg = np.where(np.asarray(mask)[..., None], logits, 0.0)
    return float(_sum_ce_torch(labels, _t(lg), mask, False))


def _sum_ce_grad(padded_mean: bool) -> Any:
    def grad(labels: Any, logits: Any, mask: Any) -> Any:
        p = _t(np.where(np.asarray(mask)[..., None], logits, 0.0)).requires_grad_(True)
        _sum_ce_torch(labels, p, mask, padded_mean).backward()
        assert p.grad is not None
        return p.grad.numpy() * (mask.size if padded_mean else 1.0)  # the sum's gradient scaled back wrongly

    return grad


PARTIAL = functools.partial(maskloss.sparse_categorical_crossentropy, from_logits=True, reduction="sum")


def test_partial_over_a_maskloss_loss_derives_its_gradient() -> None:
    with pytest.warns(UserWarning, match="split and recombine not checked"):
        check_loss(_sum_ce, PARTIAL, grad=_sum_ce_grad(False), bounds=Bounds(kind="sparse"), max_examples=30)


def test_partial_over_a_maskloss_loss_catches_a_wrong_gradient() -> None:
    def wrong(labels: Any, logits: Any, mask: Any) -> Any:  # the gradient of the padded mean (over B*T)
        p = _t(np.where(np.asarray(mask)[..., None], logits, 0.0)).requires_grad_(True)
        _sum_ce_torch(labels, p, mask, True).backward()
        assert p.grad is not None
        return p.grad.numpy()

    with pytest.warns(UserWarning, match="split and recombine not checked"), \
            pytest.raises(LossCheckError, match="gradient"):
        check_loss(_sum_ce, PARTIAL, grad=wrong, bounds=Bounds(kind="sparse"), max_examples=30)


def test_no_derivable_gradient_says_to_pass_expected_grad() -> None:
    def my_like(labels: Any, logits: Any, mask: Any) -> Any:
        return maskloss.sparse_categorical_crossentropy(labels, logits, mask, from_logits=True, reduction="sum")

    with pytest.raises(ValueError, match=r"no expected gradient can be derived for like='my_like'.*expected_grad="):
        check_loss(_sum_ce, my_like, grad=_sum_ce_grad(False), bounds=Bounds(kind="sparse"), max_examples=3)
    # with expected_grad= it runs (and passes on the right gradient)
    with pytest.warns(UserWarning, match="split and recombine not checked"):
        check_loss(_sum_ce, my_like, grad=_sum_ce_grad(False), bounds=Bounds(kind="sparse"), max_examples=10,
                   expected_grad=lambda *a, **k: maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
                       *a, from_logits=True, reduction="sum", **k)[1])


# --- check_loss(like=maskloss.linear_cross_entropy) forwards smoothing_rule= / smoothing_form= ------------


def _torch_head_others(hidden: Any, weight: Any, labels: Any, mask: Any, bias: Any = None, *,
                       eps: float = 0.1, rule: str = "others") -> Any:
    """A torch LM head with the "others" smoothing rule: (1 - eps) on the label, eps / (C - 1) elsewhere
    (OpenNMT-py / Marian's rule); rule="uniform" is F.cross_entropy's eps / C (the wrong one here)."""
    valid = mask
    h, y = hidden[valid], labels[valid]
    z = h @ weight.T if bias is None else h @ weight.T + bias
    logp = torch.log_softmax(z, -1)
    c = z.shape[-1]
    if rule == "others":
        target = torch.full_like(logp, eps / (c - 1)).scatter(-1, y[:, None], 1.0 - eps)
    else:
        target = torch.full_like(logp, eps / c).scatter(-1, y[:, None], 1.0 - eps + eps / c)
    per = -(target * logp).sum(-1)
    return per.sum() / valid.sum()


def test_linear_check_forwards_smoothing_rule() -> None:
    from maskloss.testing import torch_adapter, torch_linear_grad

    check_loss(_torch_head_others, maskloss.linear_cross_entropy, adapter=torch_adapter,
               grad=torch_linear_grad(_torch_head_others), label_smoothing=0.1, smoothing_rule="others",
               bounds=Bounds(max_batch=3, max_steps=4), max_examples=15)


def test_linear_check_catches_the_wrong_smoothing_rule() -> None:
    from maskloss.testing import torch_adapter

    def uniform(*a: Any, **k: Any) -> Any:
        return _torch_head_others(*a, rule="uniform", **k)

    with pytest.raises(LossCheckError):
        check_loss(uniform, maskloss.linear_cross_entropy, adapter=torch_adapter, label_smoothing=0.1,
                   smoothing_rule="others", bounds=Bounds(max_batch=3, max_steps=4), max_examples=15)


def test_a_mirror_says_no_gradient_can_be_derived_and_what_to_use() -> None:
    from maskloss import conventions as cv

    ce = cv.torch.cross_entropy
    with pytest.raises(ValueError, match=r"no expected gradient can be derived for a framework mirror.*maskloss loss"):
        check_loss(ce, ce, grad=ce)
