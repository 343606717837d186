"""maskloss.conventions.torchtune's KD losses against a loop oracle, the core and torchtune 0.6.1.

torchtune computes in float32 (``softmax(..., dtype=torch.float32)`` even for float64 inputs),
so the comparison with it is to float32 rounding: ``rtol=2e-5, atol=2e-6``. The loop oracle and
the core are float64: ``rtol=1e-12``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import maskloss
from maskloss.conventions import torchtune as tt

kd = pytest.importorskip("torchtune.modules.loss", reason="torchtune 0.6.1 is in the frameworks extra")

F32 = {"rtol": 2e-5, "atol": 2e-6}


def _case(seed, rows=12, vocab=7):
    rng = np.random.default_rng(seed)
    student = rng.normal(0, 2, (rows, vocab))
    teacher = rng.normal(0, 2, (rows, vocab))
    labels = np.where(rng.random(rows) < 0.3, -100, rng.integers(0, vocab, rows))
    labels[0] = 1
    student[:, -1] = -np.inf  # a padded vocabulary lane in both models
    teacher[:, -1] = -np.inf
    return student, teacher, labels


def _loop(student, teacher, labels, kind, ratio=0.5):
    total, n = 0.0, 0
    for s, t, y in zip(student.tolist(), teacher.tolist(), labels.tolist(), strict=True):
        if y == -100:
            continue
        n += 1
        ls = [v - max(s) for v in s]
        lse_s = math.log(sum(math.exp(v) for v in ls if v != -math.inf))
        lt = [v - max(t) for v in t]
        lse_t = math.log(sum(math.exp(v) for v in lt if v != -math.inf))
        fwd = rev = 0.0
        for a, b in zip(ls, lt, strict=True):
            if a == -math.inf or b == -math.inf:
                continue
            log_q, log_p = a - lse_s, b - lse_t
            fwd -= math.exp(log_p) * log_q
            rev += math.exp(log_q) * (log_q - log_p)
        total += {"forward": fwd, "reverse": rev, "symmetric": ratio * fwd + (1 - ratio) * rev}[kind]
    return total / n if n else 0.0


KINDS = {"forward": (tt.forward_kl_loss, "ForwardKLLoss"), "reverse": (tt.reverse_kl_loss, "ReverseKLLoss"),
         "symmetric": (tt.symmetric_kl_loss, "SymmetricKLLoss")}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("normalize", [True, False])
def test_kd_losses_match_the_loop_oracle_and_torchtune(kind, normalize):
    student, teacher, labels = _case(0)
    fn, cls = KINDS[kind]
    ours = fn(student, teacher, labels, normalize)
    if normalize:
        np.testing.assert_allclose(ours, _loop(student, teacher, labels, kind), rtol=1e-12)
    theirs = getattr(kd, cls)()(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), normalize)
    np.testing.assert_allclose(ours, theirs.item(), **F32)


@pytest.mark.parametrize("kind", ["forward", "reverse", "symmetric"])
def test_chunked_kd_losses_match_torchtune_and_their_empty_batch(kind):
    student, teacher, labels = _case(1, rows=2 * 8)
    s3, t3, l2 = student.reshape(2, 8, -1), teacher.reshape(2, 8, -1), labels.reshape(2, 8)
    ours_fn = getattr(tt, f"{kind}_kl_with_chunked_output_loss")
    theirs_fn = getattr(kd, f"{kind.capitalize()}KLWithChunkedOutputLoss")(num_output_chunks=4)
    s_chunks, t_chunks = np.split(s3, 4, axis=1), np.split(t3, 4, axis=1)
    ours = ours_fn(s_chunks, t_chunks, l2, num_output_chunks=4)
    theirs = theirs_fn([torch.tensor(c) for c in s_chunks], [torch.tensor(c) for c in t_chunks], torch.tensor(l2))
    np.testing.assert_allclose(ours, theirs.item(), **F32)
    np.testing.assert_allclose(ours, KINDS[kind][0](student, teacher, labels), rtol=1e-12)
    empty = np.full_like(l2, -100)
    ours_empty = ours_fn(s_chunks, t_chunks, empty, num_output_chunks=4)
    theirs_empty = theirs_fn([torch.tensor(c) for c in s_chunks], [torch.tensor(c) for c in t_chunks],
                             torch.tensor(empty)).item()
    assert (math.isnan(ours_empty) and math.isnan(theirs_empty)) or ours_empty == theirs_empty == 0.0
    assert math.isnan(ours_empty) == (kind != "forward")


def test_the_empty_batch_is_zero_and_an_ignored_nan_leaks_as_in_torchtune():
    student, teacher, labels = _case(2)
    empty = np.full_like(labels, -100)
    for kind, (fn, cls) in KINDS.items():
        assert fn(student, teacher, empty) == 0.0, kind
        assert getattr(kd, cls)()(torch.tensor(student), torch.tensor(teacher), torch.tensor(empty)).item() == 0.0
    ignored = int(np.flatnonzero(labels == -100)[0])
    student[ignored, 0] = np.nan  # x * mask: NaN * 0 is NaN
    assert math.isnan(tt.forward_kl_loss(student, teacher, labels))
    assert math.isnan(kd.ForwardKLLoss()(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels)).item())


def test_forward_kl_loss_is_the_core_kl_plus_the_teacher_entropy():
    """torchtune's "forward KL" leaves out the teacher's entropy: it is a cross-entropy."""
    student, teacher, labels = _case(3)
    mask = labels != -100
    s, t = student[None, :, :-1], teacher[None, :, :-1]  # the core without the padded lane
    core = maskloss.kl_divergence(t, s, mask[None], from_logits=True, target_from_logits=True)
    core += maskloss.entropy(t, mask[None])
    np.testing.assert_allclose(tt.forward_kl_loss(student, teacher, labels), core, rtol=1e-12)
    np.testing.assert_allclose(tt.reverse_kl_loss(student, teacher, labels),
                               maskloss.kl_divergence(s, t, mask[None], from_logits=True, target_from_logits=True),
                               rtol=1e-12)


def test_bad_input_is_named():
    student, teacher, labels = _case(4)
    with pytest.raises(ValueError, match=r"sym_kd_ratio must be in the range \[0, 1\]"):
        tt.symmetric_kl_loss(student, teacher, labels, sym_kd_ratio=1.5)
    with pytest.raises(ValueError, match="same shape"):
        tt.forward_kl_loss(student, teacher[:, :3], labels)
    with pytest.raises(ValueError, match="one entry per row"):
        tt.reverse_kl_loss(student, teacher, labels[:3])
    with pytest.raises(TypeError, match="lists of"):
        tt.forward_kl_with_chunked_output_loss(student, teacher, labels)
