"""linear_cross_entropy's convention options (issue 19): ``shift=``, ``smoothing_rule=``, ``smoothing_form=``.

Each is checked against the dense sparse cross-entropy on the materialised logits
``x @ W.T + b`` with the same options, a slow loop oracle written here from the formulas
(it shares no code with the library), torch autograd in float64 for the value, the three
gradients and the vector-Jacobian product of ``reduction="none"``, and the real frameworks:
Cut Cross-Entropy's ``shift=1`` (its ``impl="torch_compile"``, in a process of its own), HF's
``ForCausalLMLoss`` (``labels[..., 1:]``), litgpt's ``chunked_cross_entropy`` and torchtune's
``CEWithChunkedOutputLoss`` (those two take the logits: the head is applied here in torch).
"""

from __future__ import annotations

import importlib.util
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
from maskloss.linear import linear_cross_entropy, linear_cross_entropy_value_and_grad
from tests.oracles import reductions_from_pairs

REDUCTIONS = ["none", "sum", "token_mean", "sequence_mean", "batch_mean", "element_mean"]
RULES = [
    ("uniform", "cross_entropy"),
    ("uniform", "kl"),
    ("others", "cross_entropy"),
    ("others", "kl"),
    ("others_except_pad", "cross_entropy"),
    ("others_except_pad", "kl"),
]
PAD = 3  # the ignore_index, a class: OpenNMT-py's padding_idx


def _case(seed: int = 0, B: int = 3, T: int = 7, H: int = 5, V: int = 11, shift: int = 0):
    """Hidden states, a head, labels with ignored steps; NaN in every hidden row that scores nothing."""
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((B, T, H))
    weight = rng.standard_normal((V, H))
    bias = rng.standard_normal(V)
    labels = rng.integers(0, V, (B, T))
    labels[labels == PAD] = 0
    labels[rng.random((B, T)) < 0.25] = PAD
    labels[0, shift if shift < T else 0] = 1  # at least one scored step
    mask = rng.random((B, T)) > 0.15
    mask[0, shift if shift < T else 0] = True
    sample_weight = rng.uniform(0.5, 2.0, (B, T))
    # the prediction at t scores label t + shift: rows scoring a masked/ignored label or none are garbage
    scored = np.zeros((B, T), bool)
    scored[:, : T - shift] = (mask & (labels != PAD))[:, shift:]
    hidden[~scored] = np.nan
    labels[~mask] = 10**6  # masked labels are never read
    return hidden, weight, bias, labels, mask, sample_weight


def _target(V: int, y: int, eps: float, rule: str) -> list[float]:
    """The smoothed target q of one row, from the formulas of the rules (torch; fairseq; OpenNMT-py)."""
    if rule == "uniform":
        q = [eps / V] * V
        q[y] += 1.0 - eps
    elif rule == "others":
        q = [eps / (V - 1)] * V
        q[y] = 1.0 - eps
    else:
        q = [eps / (V - 2)] * V
        q[PAD] = 0.0
        q[y] = 1.0 - eps
    return q


def loop_oracle(hidden, weight, labels, mask, *, bias, eps, rule, form, shift, z_loss=0.0, softcap=None,
                sample_weight=None):
    """Every reduction, by loops over (b, t) of the shifted steps, in Python floats."""
    B, T = labels.shape
    V = weight.shape[0]
    steps = np.zeros((B, T - shift), bool)
    pairs = {}
    for b in range(B):
        for t in range(T - shift):
            y = labels[b, t + shift]
            if not mask[b, t + shift] or y == PAD:
                continue
            steps[b, t] = True
            z = []
            for c in range(V):
                v = math.fsum(float(hidden[b, t, k]) * float(weight[c, k]) for k in range(weight.shape[1]))
                v += float(bias[c])
                z.append(v if softcap is None else softcap * math.tanh(v / softcap))
            top = max(z)
            lse = top + math.log(math.fsum(math.exp(v - top) for v in z))
            q = _target(V, int(y), eps, rule)
            loss = math.fsum(q[c] * (lse - z[c]) for c in range(V))
            if form == "kl":
                loss += math.fsum(qc * math.log(qc) for qc in q if qc > 0)
            loss += z_loss * lse * lse
            w = 1.0 if sample_weight is None else float(sample_weight[b, t + shift])
            pairs[(b, t)] = (w * loss, w)
    return reductions_from_pairs(steps, pairs)


def _options(rule, form, shift, **extra):
    return dict(ignore_index=PAD, label_smoothing=0.2, smoothing_rule=rule, smoothing_form=form, shift=shift,
                **extra)


# --- the dense sparse cross-entropy on the materialised logits ---------------------------------


@pytest.mark.parametrize(("rule", "form"), RULES)
@pytest.mark.parametrize("shift", [0, 1, 3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_equals_sparse_ce_on_the_materialised_logits(rule, form, shift, reduction):
    hidden, weight, bias, labels, mask, sw = _case(1, shift=shift)
    logits = np.nan_to_num(hidden) @ weight.T + bias  # the NaN rows are never scored
    kw = _options(rule, form, shift, mask=mask, sample_weight=sw, reduction=reduction, z_loss=1e-2, softcap=3.0)
    ours = linear_cross_entropy(hidden, weight, labels, bias=bias, **kw)
    dense = maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True, **kw)
    assert np.shape(ours) == np.shape(dense) == ((3, 7 - shift) if reduction == "none" else ())
    np.testing.assert_allclose(ours, dense, rtol=1e-12, atol=1e-14)
    if reduction == "none":
        return
    _, (dh, dw, db) = maskloss.value_and_grad(linear_cross_entropy)(hidden, weight, labels, bias=bias, **kw)
    _, dz = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(labels, logits, from_logits=True,
                                                                                **kw)
    x = np.nan_to_num(hidden)
    np.testing.assert_allclose(dh, dz @ weight, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dw, np.einsum("btv,bth->vh", dz, x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(db, dz.sum(axis=(0, 1)), rtol=1e-12, atol=1e-14)
    assert np.all(dh[:, 7 - shift:] == 0.0) and np.all(np.isfinite(dh))


# --- the loop oracle ---------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "form"), RULES)
@pytest.mark.parametrize("shift", [0, 2])
def test_equals_the_loop_oracle(rule, form, shift):
    hidden, weight, bias, labels, mask, sw = _case(2, shift=shift)
    want = loop_oracle(hidden, weight, labels, mask, bias=bias, eps=0.2, rule=rule, form=form, shift=shift,
                       z_loss=1e-3, softcap=2.5, sample_weight=sw)
    for reduction in REDUCTIONS:
        got = linear_cross_entropy(hidden, weight, labels, mask, bias=bias, sample_weight=sw, z_loss=1e-3,
                                   softcap=2.5, reduction=reduction, **_options(rule, form, shift))
        np.testing.assert_allclose(got, np.array(want[reduction]), rtol=1e-12, atol=1e-14, err_msg=reduction)


def test_kl_form_is_the_cross_entropy_less_the_target_entropy():
    hidden, weight, bias, labels, mask, _ = _case(3)
    V, eps = weight.shape[0], 0.2
    for rule in ("uniform", "others", "others_except_pad"):
        q = np.array(_target(V, 0, eps, rule))
        entropy = -float(np.sum(q[q > 0] * np.log(q[q > 0])))
        ce = linear_cross_entropy(hidden, weight, labels, mask, bias=bias, reduction="none",
                                  **_options(rule, "cross_entropy", 0))
        kl = linear_cross_entropy(hidden, weight, labels, mask, bias=bias, reduction="none", **_options(rule, "kl", 0))
        valid = mask & (labels != PAD)
        np.testing.assert_allclose(kl[valid], ce[valid] - entropy, rtol=1e-12)
        assert np.all(kl[~valid] == 0.0)


# --- torch autograd, float64 -------------------------------------------------------------------


def _torch_loss(torch, x, w, b, y, mask, *, eps, rule, form, shift, reduction, sw, softcap=None):
    """The loss in torch float64 from its own parts: x @ W.T + b, the shift, q by the rule, torch's losses."""
    import torch.nn.functional as F

    T = y.shape[1]
    z = x @ w.T + b
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    z, y, mask, sw = z[:, : T - shift], y[:, shift:], mask[:, shift:], sw[:, shift:]
    valid = mask & (y != PAD)
    V = w.shape[0]
    yy = torch.where(valid, y, torch.zeros_like(y))
    q = torch.tensor([_target(V, c, eps, rule) for c in range(V)], dtype=torch.float64)[yy]  # (B, T', V)
    log_p = torch.log_softmax(z, dim=-1)
    if form == "kl":
        per = F.kl_div(log_p, q, reduction="none").sum(-1)
    else:
        per = F.cross_entropy(z.reshape(-1, V), q.reshape(-1, V), reduction="none").reshape(yy.shape)
    per = torch.where(valid, per * sw, torch.zeros_like(per))
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / torch.where(valid, sw, torch.zeros_like(sw)).sum()  # token_mean


@pytest.mark.framework("torch")
@pytest.mark.parametrize(("rule", "form"), RULES)
@pytest.mark.parametrize("shift", [0, 1])
def test_gradients_equal_torch_autograd(rule, form, shift):
    torch = pytest.importorskip("torch")
    hidden, weight, bias, labels, mask, sw = _case(4, shift=shift)
    x = torch.tensor(np.nan_to_num(hidden), requires_grad=True)
    w = torch.tensor(weight, requires_grad=True)
    b = torch.tensor(bias, requires_grad=True)
    for reduction in ("sum", "token_mean"):
        for t in (x, w, b):
            t.grad = None
        loss = _torch_loss(torch, x, w, b, torch.tensor(labels), torch.tensor(mask), eps=0.2, rule=rule, form=form,
                           shift=shift, reduction=reduction, sw=torch.tensor(sw), softcap=2.0)
        loss.backward()
        value, (dh, dw, db) = linear_cross_entropy_value_and_grad(
            hidden, weight, labels, mask, bias=bias, sample_weight=sw, reduction=reduction, softcap=2.0,
            **_options(rule, form, shift))
        np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
        np.testing.assert_allclose(dh, x.grad.numpy(), rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(dw, w.grad.numpy(), rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(db, b.grad.numpy(), rtol=1e-11, atol=1e-14)


@pytest.mark.framework("torch")
@pytest.mark.parametrize(("rule", "form"), [("uniform", "cross_entropy"), ("others", "kl"),
                                            ("others_except_pad", "cross_entropy")])
@pytest.mark.parametrize("shift", [0, 2])
def test_vjp_of_reduction_none_equals_torch_autograd(rule, form, shift):
    torch = pytest.importorskip("torch")
    hidden, weight, bias, labels, mask, sw = _case(5, shift=shift)
    ct = np.random.default_rng(9).standard_normal((3, 7 - shift))  # a cotangent of the shifted steps
    ct_nan = ct.copy()
    valid = (mask & (labels != PAD))[:, shift:]
    ct_nan[~valid] = np.nan  # a cotangent at a masked step is never read
    x = torch.tensor(np.nan_to_num(hidden), requires_grad=True)
    w = torch.tensor(weight, requires_grad=True)
    b = torch.tensor(bias, requires_grad=True)
    per = _torch_loss(torch, x, w, b, torch.tensor(labels), torch.tensor(mask), eps=0.2, rule=rule, form=form,
                      shift=shift, reduction="none", sw=torch.tensor(sw))
    (per * torch.tensor(np.where(valid, ct, 0.0))).sum().backward()
    values, (dh, dw, db) = maskloss.vjp(linear_cross_entropy)(
        hidden, weight, labels, mask, bias=bias, sample_weight=sw, reduction="none", cotangent=ct_nan,
        **_options(rule, form, shift))
    np.testing.assert_allclose(values, per.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dh, x.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(dw, w.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(db, b.grad.numpy(), rtol=1e-11, atol=1e-14)


# --- properties --------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 3),
    T=st.integers(1, 6),
    shift=st.integers(0, 7),
    rule_form=st.sampled_from(RULES),
    reduction=st.sampled_from(REDUCTIONS[1:]),
)
def test_shift_is_slicing_bit_for_bit(seed, B, T, shift, rule_form, reduction):
    """shift=s is the unshifted loss of hidden[:, :T-s] against labels[:, s:] (mask, sample_weight too),
    bit for bit, value and gradients; d_hidden is exactly 0 at the last s steps; garbage there is never read."""
    rule, form = rule_form
    s = min(shift, T)
    hidden, weight, bias, labels, mask, sw = _case(seed % 1000, B=B, T=T, H=3, V=6, shift=s)
    kw = dict(ignore_index=PAD, label_smoothing=0.1, smoothing_rule=rule, smoothing_form=form, reduction=reduction,
              bias=bias)
    shifted = linear_cross_entropy_value_and_grad(hidden, weight, labels, mask, sample_weight=sw, shift=shift, **kw)
    sliced = linear_cross_entropy_value_and_grad(hidden[:, : T - s], weight, labels[:, s:], mask[:, s:],
                                                 sample_weight=sw[:, s:], **kw)
    np.testing.assert_equal(shifted[0], sliced[0])
    dh, dw, db = shifted[1]
    np.testing.assert_equal(dh[:, : T - s], sliced[1][0])
    assert np.all(dh[:, T - s:] == 0.0)
    np.testing.assert_equal(dw, sliced[1][1])
    np.testing.assert_equal(db, sliced[1][2])
    none = linear_cross_entropy(hidden, weight, labels, mask, sample_weight=sw, shift=shift,
                                **{**kw, "reduction": "none"})
    assert none.shape == (B, T - s)


def test_defaults_change_no_bit():
    hidden, weight, bias, labels, mask, _ = _case(6)
    kw = dict(bias=bias, ignore_index=PAD, label_smoothing=0.1)
    plain = linear_cross_entropy_value_and_grad(hidden, weight, labels, mask, **kw)
    explicit = linear_cross_entropy_value_and_grad(hidden, weight, labels, mask, shift=0, smoothing_rule="uniform",
                                                   smoothing_form="cross_entropy", **kw)
    np.testing.assert_equal(plain, explicit)


def test_the_options_are_declared_for_check_loss():
    loss_options.check_applies(linear_cross_entropy, {"shift": 1, "smoothing_rule": "others",
                                                      "smoothing_form": "kl"})  # raised before
    # scale= and weight_normalization= are options of the pipeline losses only (the registry adds them)
    assert loss_options.OPTIONS_OF["linear_cross_entropy"] == ("shift", "smoothing_rule", "smoothing_form")


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"shift": -1}, ValueError, "shift must be an int >= 0"),
        ({"shift": 1.0}, TypeError, "shift must be an int >= 0"),
        ({"shift": True}, TypeError, "got True"),
        ({"smoothing_rule": "fairseq", "label_smoothing": 0.1}, ValueError, "smoothing_rule must be one of"),
        ({"smoothing_form": "kld"}, ValueError, "smoothing_form must be one of"),
        ({"smoothing_rule": "others"}, ValueError, "contradicts label_smoothing=0.0"),
        ({"smoothing_rule": "others", "label_smoothing": 0.1, "class_weight": np.ones(11)}, ValueError,
         "do not take class_weight"),
        ({"smoothing_rule": "others_except_pad", "label_smoothing": 0.1, "ignore_index": None}, ValueError,
         "ignore_index=None"),
        ({"smoothing_rule": "others_except_pad", "label_smoothing": 0.1, "ignore_index": 11}, ValueError,
         "ignore_index=11"),
    ],
)
def test_bad_options_are_named(kwargs, error, words):
    hidden, weight, _, labels, mask, _ = _case(7)
    kw = {"ignore_index": PAD, **kwargs}
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        linear_cross_entropy(hidden, weight, labels, mask, **kw)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        linear_cross_entropy_value_and_grad(hidden, weight, labels, mask, **kw)


def test_shift_needs_a_steps_axis():
    with pytest.raises(ValueError, match="needs labels with a steps axis"):
        linear_cross_entropy(np.ones(3), np.ones((4, 3)), 1, shift=1)


# --- the real frameworks -----------------------------------------------------------------------


@pytest.mark.framework("torch")
def test_shift_equals_hf_causal_lm_loss():
    """HF's ForCausalLMLoss scores logits[..., :-1, :] against labels[..., 1:] (in float32: logits.float())."""
    torch = pytest.importorskip("torch")
    loss_utils = pytest.importorskip("transformers.loss.loss_utils")
    rng = np.random.default_rng(8)
    B, T, H, V = 3, 9, 6, 13
    x, w, b = rng.standard_normal((B, T, H)), rng.standard_normal((V, H)), rng.standard_normal(V)
    labels = rng.integers(0, V, (B, T))
    labels[rng.random((B, T)) < 0.3] = -100
    logits = torch.tensor(x) @ torch.tensor(w).T + torch.tensor(b)  # float64
    hf = loss_utils.ForCausalLMLoss(logits, torch.tensor(labels), vocab_size=V)
    ours = linear_cross_entropy(x, w, labels, bias=b, ignore_index=-100, shift=1)
    np.testing.assert_allclose(ours, hf.item(), rtol=1e-6)
    # HF's per-prediction layout in float64: the labels padded with -100 at the end, then shifted
    padded = torch.nn.functional.pad(torch.tensor(labels), (0, 1), value=-100)[:, 1:]
    per = torch.nn.functional.cross_entropy(logits.transpose(1, 2), padded, reduction="none").numpy()
    ours_none = linear_cross_entropy(x, w, labels, bias=b, ignore_index=-100, shift=1, reduction="none")
    np.testing.assert_allclose(ours_none, per[:, :-1], rtol=1e-12)
    np.testing.assert_allclose(linear_cross_entropy(x, w, labels, bias=b, ignore_index=-100, shift=1),
                               per.sum() / np.sum(padded.numpy() != -100), rtol=1e-12)


_CCE = """
import json, sys, torch
from cut_cross_entropy import linear_cross_entropy
d = json.loads(sys.stdin.read())
out = {}
e = torch.tensor(d["e"], dtype=torch.float32, requires_grad=True)
c = torch.tensor(d["c"], dtype=torch.float32, requires_grad=True)
t = torch.tensor(d["t"])
loss = linear_cross_entropy(e, c, t, shift=1, reduction="mean", impl="torch_compile")
loss.backward()
out["mean"] = loss.item(); out["de"] = e.grad.double().tolist(); out["dc"] = c.grad.double().tolist()
with torch.no_grad():
    out["none"] = linear_cross_entropy(e, c, t, shift=1, reduction="none", impl="torch_compile").double().tolist()
print(json.dumps(out))
"""


@pytest.mark.framework("torch")
def test_shift_equals_cut_cross_entropy_value_gradients_and_none():
    """CCE 25.1.1's linear_cross_entropy(shift=1), impl="torch_compile" (float32), one shape, in a process
    of its own (its Triton and TensorFlow cannot share one; see conftest.py)."""
    pytest.importorskip("torch")
    if importlib.util.find_spec("cut_cross_entropy") is None:
        pytest.skip("cut_cross_entropy is not installed")
    rng = np.random.default_rng(10)
    B, T, H, V = 2, 9, 8, 37
    # float32-exact inputs (multiples of 1/8), so float32 CCE and float64 maskloss see the same numbers
    e = np.round(rng.normal(size=(B, T, H)) * 4) / 8
    c = np.round(rng.normal(size=(V, H)) * 4) / 8
    t = rng.integers(0, V, size=(B, T))
    t[0, 3] = t[1, 6] = t[1, 1] = -100
    proc = subprocess.run([sys.executable, "-c", _CCE], input=json.dumps({"e": e.tolist(), "c": c.tolist(),
                          "t": t.tolist()}), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cce = json.loads(proc.stdout.strip().splitlines()[-1])
    value, (dh, dw, db) = maskloss.value_and_grad(linear_cross_entropy)(e, c, t, ignore_index=-100, shift=1)
    assert db is None
    np.testing.assert_allclose(value, cce["mean"], rtol=1e-5)
    np.testing.assert_allclose(dh, np.array(cce["de"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dw, np.array(cce["dc"]), rtol=1e-4, atol=1e-6)
    assert np.all(np.array(cce["de"])[:, -1] == 0.0) and np.all(dh[:, -1] == 0.0)  # the last prediction scores none
    none = linear_cross_entropy(e, c, t, ignore_index=-100, shift=1, reduction="none")
    assert none.shape == np.array(cce["none"]).shape == (B, T - 1)
    np.testing.assert_allclose(none, np.array(cce["none"]), rtol=2e-5, atol=2e-6)


@pytest.mark.framework("torch")
@pytest.mark.parametrize("chunks", [None, 3])
def test_equals_litgpt_chunked_cross_entropy(chunks):
    """litgpt 0.5's chunked_cross_entropy on float64 logits (the head applied in torch; litgpt shifts the
    targets before the call, so none here), one tensor or a list of chunks along the steps."""
    torch = pytest.importorskip("torch")
    litgpt_utils = pytest.importorskip("litgpt.utils")
    rng = np.random.default_rng(11)
    B, T, H, V = 2, 10, 6, 17
    x, w = rng.standard_normal((B, T, H)), rng.standard_normal((V, H))
    labels = rng.integers(0, V, (B, T))
    labels[rng.random((B, T)) < 0.3] = -100
    logits = torch.tensor(x) @ torch.tensor(w).T
    given_logits = logits if chunks is None else list(logits.chunk(chunks, dim=1))
    for chunk_size in (0, 4, 128):
        theirs = litgpt_utils.chunked_cross_entropy(given_logits, torch.tensor(labels), chunk_size=chunk_size)
        assert theirs.dtype == torch.float64
        np.testing.assert_allclose(linear_cross_entropy(x, w, labels, ignore_index=-100), theirs.item(), rtol=1e-12)


@pytest.mark.framework("torch")
@pytest.mark.parametrize("n", [1, 4])
def test_equals_torchtune_chunked_output_loss(n):
    """torchtune 0.6's CEWithChunkedOutputLoss on the head's output chunks (it upcasts each to float32)."""
    torch = pytest.importorskip("torch")
    loss_module = pytest.importorskip("torchtune.modules.loss")
    rng = np.random.default_rng(12)
    B, T, H, V = 3, 11, 6, 19
    x, w = rng.standard_normal((B, T, H)), rng.standard_normal((V, H))
    labels = rng.integers(0, V, (B, T))
    labels[rng.random((B, T)) < 0.3] = -100
    chunks = [h @ torch.tensor(w).T for h in torch.tensor(x).chunk(n, dim=1)]  # the model's chunks, as torchtune's
    theirs = loss_module.CEWithChunkedOutputLoss(num_output_chunks=n)(chunks, torch.tensor(labels))
    np.testing.assert_allclose(linear_cross_entropy(x, w, labels, ignore_index=-100), theirs.item(), rtol=2e-6)
