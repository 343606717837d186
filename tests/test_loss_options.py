"""The convention options of the losses (maskloss.loss_options): shift=, smoothing_rule=, smoothing_form=.

Each is checked against a slow loop oracle written here, against the framework that defines the
convention (HF's ForCausalLMLoss, Cut Cross-Entropy's shift=1, torch's label_smoothing, the
fairseq >= 0.12 rule), its gradient against torch autograd, and by hypothesis invariants.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from maskloss import loss_options

sce = maskloss.sparse_categorical_crossentropy


def _loop_log_softmax(row: np.ndarray) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _loop_target(label: int, num_classes: int, eps: float, rule: str, pad: int | None) -> list[float]:
    """The smoothed target, class by class, as the rules are stated (torch / fairseq / OpenNMT-py)."""
    q = []
    for c in range(num_classes):
        if rule == "uniform":
            q.append((1 - eps if c == label else 0.0) + eps / num_classes)
        elif rule == "others":
            q.append(1 - eps if c == label else eps / (num_classes - 1))
        else:
            q.append(1 - eps if c == label else (0.0 if c == pad else eps / (num_classes - 2)))
    return q


def loop_oracle(labels, logits, mask, *, shift=0, eps=0.0, rule="uniform", form="cross_entropy",
                ignore_index=None, reduction="token_mean"):
    """Slow oracle: step t of row b scores label t + shift with logits t; per-token layout in label positions."""
    B, T = labels.shape
    C = logits.shape[-1]
    per = np.zeros((B, T))
    valid = np.zeros((B, T), dtype=bool)
    for b in range(B):
        for t in range(shift, T):
            y = int(labels[b, t])
            if not mask[b, t] or (ignore_index is not None and y == ignore_index):
                continue
            lp = _loop_log_softmax(logits[b, t - shift])
            q = _loop_target(y, C, eps, rule, ignore_index)
            loss = sum(-qc * lpc for qc, lpc in zip(q, lp, strict=True) if qc != 0)
            if form == "kl":
                loss -= sum(-qc * math.log(qc) for qc in q if qc > 0)
            per[b, t] = loss
            valid[b, t] = True
    if reduction == "none":
        return per[:, shift:]  # documented layout: T - shift steps, label t + shift at t
    if reduction == "sum":
        return per.sum()
    if reduction == "token_mean":
        return per.sum() / valid.sum()
    if reduction == "element_mean":
        return per.sum() / (B * (T - shift))
    if reduction == "batch_mean":
        return per.sum() / B
    means = [per[b].sum() / valid[b].sum() for b in range(B) if valid[b].any()]
    return sum(means) / len(means)  # sequence_mean


def _batch(seed, B=3, T=6, C=5, ignore=True):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, T, C)) * 2
    labels = rng.integers(0, C, size=(B, T))
    mask = rng.random((B, T)) > 0.2
    mask[:, -1] = True
    if ignore:
        labels[~mask] = -100
    return labels, logits, mask


@pytest.mark.parametrize("reduction", ["none", "sum", "token_mean", "sequence_mean", "batch_mean", "element_mean"])
@pytest.mark.parametrize("shift", [0, 1, 2])
def test_shift_matches_loop_oracle(shift, reduction):
    labels, logits, mask = _batch(shift)
    got = sce(labels, logits, mask, from_logits=True, ignore_index=-100, shift=shift, reduction=reduction)
    want = loop_oracle(labels, logits, mask, shift=shift, ignore_index=-100, reduction=reduction)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    if reduction == "none":
        assert got.shape == (labels.shape[0], labels.shape[1] - shift)


@pytest.mark.parametrize("rule", ["uniform", "others", "others_except_pad"])
@pytest.mark.parametrize("form", ["cross_entropy", "kl"])
@pytest.mark.parametrize("reduction", ["none", "token_mean"])
def test_smoothing_matches_loop_oracle(rule, form, reduction):
    labels, logits, mask = _batch(7, C=6, ignore=False)
    pad = 5
    labels[~mask] = pad
    got = sce(labels, logits, mask, from_logits=True, ignore_index=pad, label_smoothing=0.2,
              smoothing_rule=rule, smoothing_form=form, reduction=reduction)
    want = loop_oracle(labels, logits, mask, eps=0.2, rule=rule, form=form, ignore_index=pad, reduction=reduction)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    # probabilities give the same numbers
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    got_p = sce(labels, probs, mask, ignore_index=pad, label_smoothing=0.2, smoothing_rule=rule,
                smoothing_form=form, reduction=reduction)
    np.testing.assert_allclose(got_p, want, rtol=1e-10, atol=1e-12)


def test_smoothing_with_shift_and_head_matches_loop_oracle():
    labels, logits, mask = _batch(3)
    got = sce(labels, logits, mask, from_logits=True, ignore_index=-100, shift=1, label_smoothing=0.1,
              smoothing_rule="others", reduction="sum", temperature=2.0)
    want = loop_oracle(labels, logits / 2.0, mask, shift=1, eps=0.1, rule="others", ignore_index=-100,
                       reduction="sum")
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_shift_equals_hf_for_causal_lm_loss():
    torch = pytest.importorskip("torch")
    loss_utils = pytest.importorskip("transformers.loss.loss_utils")
    labels, logits, _ = _batch(11, B=4, T=9, C=7)
    logits = logits.astype(np.float32).astype(np.float64)  # ForCausalLMLoss computes in float32 (logits.float())
    hf = loss_utils.ForCausalLMLoss(torch.tensor(logits), torch.tensor(labels), vocab_size=7)
    ours = sce(labels, logits, from_logits=True, ignore_index=-100, shift=1)
    np.testing.assert_allclose(ours, hf.item(), rtol=1e-6)
    # num_items_in_batch: HF sums and divides by the given count (the shifted labels' count here)
    n = int((labels[:, 1:] != -100).sum())
    hf_sum = loss_utils.ForCausalLMLoss(torch.tensor(logits), torch.tensor(labels), vocab_size=7,
                                        num_items_in_batch=torch.tensor(n))
    np.testing.assert_allclose(sce(labels, logits, from_logits=True, ignore_index=-100, shift=1,
                                   reduction="sum") / n, hf_sum.item(), rtol=1e-6)
    # HF's per-prediction layout: the labels padded at the end, F.cross_entropy per token
    shift_labels = torch.nn.functional.pad(torch.tensor(labels), (0, 1), value=-100)[:, 1:]
    per = torch.nn.functional.cross_entropy(torch.tensor(logits).transpose(1, 2), shift_labels,
                                            reduction="none").numpy()
    ours_none = sce(labels, logits, from_logits=True, ignore_index=-100, shift=1, reduction="none")
    np.testing.assert_allclose(ours_none, per[:, :-1], rtol=1e-12)  # float64 torch here


_CCE = """
import json, sys, torch
from cut_cross_entropy import linear_cross_entropy
d = json.loads(sys.stdin.read())
e = torch.tensor(d["e"], dtype=torch.float32); c = torch.tensor(d["c"], dtype=torch.float32)
t = torch.tensor(d["t"])
out = linear_cross_entropy(e, c, t, shift=1, reduction="none", impl="torch_compile")
print(json.dumps(out.double().tolist()))
"""


def test_shift_none_layout_equals_cut_cross_entropy():
    """CCE 25.1.1 in a process of its own (its Triton and TensorFlow cannot share one; see conftest.py)."""
    pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("cut_cross_entropy") is None:
        pytest.skip("cut_cross_entropy is not installed")
    rng = np.random.default_rng(5)
    B, T, H, V = 2, 7, 4, 11
    # float32-exact inputs (multiples of 1/8), so float32 CCE and float64 maskloss see the same numbers
    e = np.round(rng.normal(size=(B, T, H)) * 8) / 8
    c = np.round(rng.normal(size=(V, H)) * 8) / 8
    t = rng.integers(0, V, size=(B, T))
    t[0, 2] = t[1, 5] = -100
    proc = subprocess.run([sys.executable, "-c", _CCE], input=json.dumps({"e": e.tolist(), "c": c.tolist(),
                          "t": t.tolist()}), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cce = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    ours = sce(t, e @ c.T, from_logits=True, ignore_index=-100, shift=1, reduction="none")
    assert cce.shape == ours.shape == (B, T - 1)
    np.testing.assert_allclose(ours, cce, rtol=2e-5, atol=2e-5)


def test_uniform_smoothing_and_shift_equal_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    labels, logits, _ = _batch(2)
    want = torch.nn.functional.cross_entropy(torch.tensor(logits[:, :-1]).reshape(-1, 5),
                                             torch.tensor(labels[:, 1:]).reshape(-1), ignore_index=-100,
                                             label_smoothing=0.3)
    got = sce(labels, logits, from_logits=True, ignore_index=-100, label_smoothing=0.3, shift=1,
              smoothing_rule="uniform")
    np.testing.assert_allclose(got, want.item(), rtol=1e-12)


def test_others_rule_equals_fairseq_formula():
    """fairseq >= 0.12 ``label_smoothed_nll_loss`` (as restated in maskloss/conventions/fairseq.py):
    ``eps_i = epsilon / (V - 1)``; ``loss = (1 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss`` with
    ``nll_loss = -lprobs[y]``, ``smooth_loss = -lprobs.sum(-1)``, summed over the non-pad tokens."""
    torch = pytest.importorskip("torch")
    labels, logits, mask = _batch(4, C=6, ignore=False)
    pad = 1
    labels[~mask] = pad
    lp = torch.log_softmax(torch.tensor(logits), -1).reshape(-1, 6)
    y = torch.tensor(labels).reshape(-1)
    keep = y != pad
    eps, eps_i = 0.1, 0.1 / 5
    nll = -lp[keep].gather(1, y[keep, None]).squeeze(1)
    smooth = -lp[keep].sum(-1)
    want = ((1 - eps - eps_i) * nll + eps_i * smooth).sum().item()
    got = sce(labels, logits, from_logits=True, ignore_index=pad, label_smoothing=eps, smoothing_rule="others",
              reduction="sum")
    np.testing.assert_allclose(got, want, rtol=1e-12)
    from maskloss.conventions import fairseq

    mirror = fairseq.label_smoothed_nll_loss(lp.numpy(), y.numpy(), eps, ignore_index=pad)
    np.testing.assert_allclose(got, mirror[0], rtol=1e-12)


@pytest.mark.parametrize("rule,form", [("uniform", "cross_entropy"), ("others", "kl"), ("others_except_pad", "kl")])
def test_gradient_matches_torch_autograd(rule, form):
    torch = pytest.importorskip("torch")
    labels, logits, mask = _batch(9, C=6)
    pad = 0
    labels = np.where(labels == -100, pad, labels)
    eps, shift = 0.2, 1
    w = np.random.default_rng(1).random(labels.shape)
    value, grad = maskloss.value_and_grad(sce)(labels, logits, mask, from_logits=True, ignore_index=pad,
                                               label_smoothing=eps, smoothing_rule=rule, smoothing_form=form,
                                               shift=shift, sample_weight=w)
    x = torch.tensor(logits, requires_grad=True)
    lp = torch.log_softmax(x[:, :-shift], -1)
    lab = torch.tensor(labels[:, shift:])
    q = torch.tensor([[_loop_target(int(v), 6, eps, rule, pad) for v in row] for row in labels[:, shift:]],
                     dtype=torch.float64)
    per = -(q * torch.where(q > 0, lp, torch.zeros_like(lp))).sum(-1)
    if form == "kl":
        per = per + (q * torch.log(torch.where(q > 0, q, torch.ones_like(q)))).sum(-1)
    keep = torch.tensor(mask[:, shift:]) & (lab != pad)
    ww = torch.tensor(w[:, shift:])
    loss = torch.where(keep, per * ww, torch.zeros_like(per)).sum() / torch.where(keep, ww, 0 * ww).sum()
    loss.backward()
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert not np.any(grad[:, -shift:])


def test_vjp_with_shift_matches_the_shifted_call():
    labels, logits, mask = _batch(13)
    ct = np.random.default_rng(0).normal(size=labels.shape)
    values, grad = maskloss.vjp(sce)(labels, logits, mask, from_logits=True, ignore_index=-100, shift=2,
                                     reduction="none", cotangent=ct[:, 2:])
    v0, g0 = maskloss.vjp(sce)(labels[:, 2:], logits[:, :-2], mask[:, 2:], from_logits=True, ignore_index=-100,
                               reduction="none", cotangent=ct[:, 2:])
    np.testing.assert_array_equal(values, v0)
    np.testing.assert_array_equal(grad[:, :-2], g0)
    assert not np.any(grad[:, -2:])


@pytest.mark.parametrize("shift", [4, 5, 9])
def test_a_shift_beyond_the_row_leaves_no_step_as_a_shift_of_the_row_length_does(shift):
    # T = 4: every label lies beyond the row, so there is no step; the gradient is zero in
    # y_pred's shape (a bare numpy reshape error before: the zero rows were padded by shift, not T).
    labels = np.array([[1, 2, 0, 1]])
    logits = np.random.default_rng(0).normal(size=(1, 4, 3))
    mask = np.ones((1, 4), bool)
    vg = maskloss.value_and_grad(sce)
    value, grad = vg(labels, logits, mask, from_logits=True, shift=shift, reduction="sum")
    assert value == 0.0 and grad.shape == logits.shape and not np.any(grad)
    assert sce(labels, logits, mask, from_logits=True, shift=shift, reduction="none").shape == (1, 0)
    assert np.isnan(sce(labels, logits, mask, from_logits=True, shift=shift, reduction="token_mean"))
    # packed: a row shorter than the shift still has its document (one sequence with no step)
    v, g = vg(labels, logits, mask, from_logits=True, shift=shift, reduction="sum", segment_ids=[[0, 0, 1, 1]])
    assert v == 0.0 and g.shape == logits.shape and not np.any(g)


def test_value_and_grad_out_with_shift():
    labels, logits, mask = _batch(1)
    out = np.full(logits.shape, np.nan)
    v, g = maskloss.value_and_grad(sce)(labels, logits, mask, from_logits=True, ignore_index=-100, shift=1, out=out)
    v1, g1 = maskloss.value_and_grad(sce)(labels, logits, mask, from_logits=True, ignore_index=-100, shift=1)
    assert g is out and v == v1
    np.testing.assert_array_equal(out, g1)


@given(seed=st.integers(0, 2**31 - 1), shift=st.integers(0, 3),
       reduction=st.sampled_from(["none", "sum", "token_mean", "sequence_mean", "element_mean"]))
def test_padding_content_never_changes_the_value(seed, shift, reduction):
    labels, logits, mask = _batch(seed, T=5)
    a = sce(labels, logits, mask, from_logits=True, ignore_index=-100, shift=shift, reduction=reduction,
            label_smoothing=0.1, smoothing_rule="others")
    rng = np.random.default_rng(seed + 1)
    noisy_logits = logits.copy()
    # predictions that score no valid label: masked/ignored label positions, and the last `shift` steps
    scored = np.zeros(mask.shape, dtype=bool)
    scored[:, : mask.shape[1] - shift] = mask[:, shift:] & (labels[:, shift:] != -100)
    noisy_logits[~scored] = rng.choice([np.nan, np.inf, -np.inf, 1e308], size=(int((~scored).sum()), 5))
    noisy_labels = np.where(mask, labels, rng.integers(-10**6, 10**6, size=labels.shape))
    noisy_labels[:, :shift] = 10**9  # the first `shift` labels are scored by nothing
    b = sce(noisy_labels, noisy_logits, mask & (np.arange(5) >= shift), from_logits=True, ignore_index=-100,
            shift=shift, reduction=reduction, label_smoothing=0.1, smoothing_rule="others")
    np.testing.assert_array_equal(a, b)


@given(seed=st.integers(0, 2**31 - 1), reduction=st.sampled_from(["none", "token_mean", "element_mean"]))
def test_default_options_equal_no_option(seed, reduction):
    labels, logits, mask = _batch(seed)
    plain = sce(labels, logits, mask, from_logits=True, ignore_index=-100, reduction=reduction, label_smoothing=0.1)
    opts = sce(labels, logits, mask, from_logits=True, ignore_index=-100, reduction=reduction, label_smoothing=0.1,
               shift=0, smoothing_rule="uniform", smoothing_form="cross_entropy")
    np.testing.assert_array_equal(plain, opts)


def test_inputs_are_not_written():
    labels, logits, mask = _batch(3)
    copies = labels.copy(), logits.copy(), mask.copy()
    maskloss.value_and_grad(sce)(labels, logits, mask, from_logits=True, ignore_index=-100, shift=1)
    for a, b in zip((labels, logits, mask), copies, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs,match", [
    ({"shift": -1}, "shift must be an int >= 0"),
    ({"shift": 1.5}, "shift must be an int >= 0"),
    ({"shift": True}, "shift must be an int >= 0"),
    ({"smoothing_rule": "fairseq"}, "smoothing_rule must be one of"),
    ({"smoothing_form": "js"}, "smoothing_form must be one of"),
    ({"smoothing_rule": "others"}, "pass label_smoothing > 0"),
    ({"smoothing_rule": "others", "label_smoothing": 0.1, "class_weight": np.ones(5)}, "class_weight"),
    ({"smoothing_rule": "others_except_pad", "label_smoothing": 0.1}, "ignore_index=None"),
    ({"smoothing_rule": "others_except_pad", "label_smoothing": 0.1, "ignore_index": -100}, "to be a class"),
])
def test_bad_options_are_clear_errors(kwargs, match):
    labels, logits, mask = _batch(0, ignore=False)
    with pytest.raises((ValueError, TypeError), match=match):
        sce(labels, logits, mask, from_logits=True, **kwargs)


def test_option_on_a_loss_it_does_not_apply_to_is_named():
    with pytest.raises(ValueError, match=r"option shift=1 does not apply to maskloss.mse.*sparse_categorical"):
        loss_options.check_applies(maskloss.mse, {"shift": 1})
    loss_options.check_applies(sce, {"shift": 1, "smoothing_rule": "others", "reduction": "sum"})
