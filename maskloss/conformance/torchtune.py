r"""Conformance of :mod:`maskloss.conventions.torchtune` with the installed torchtune.

Two families: the chunked cross-entropy and the knowledge-distillation losses.

``torchtune.modules.loss.CEWithChunkedOutputLoss`` is called on float64 logit chunks
(``logits.chunk(n, dim=1)``, as torchtune's decoder returns them) with ignored labels
(an all-ignored batch first: NaN on both sides), for several ``num_output_chunks``, and
once with the last chunk left out of the list (torchtune's ``zip`` drops its tokens but
keeps counting them). torchtune casts every chunk to float32, so the tolerance is
``1e-5 * max(1, |torchtune|)``.

The KD losses (every class of ``torchtune/modules/loss/kd_losses.py``): random ``(N, V)``
student and teacher logits (sometimes a ``-inf`` padded vocabulary lane), labels with -100
(sometimes all of them: the empty batch), ``normalize`` drawn, the chunked forms on ``(B,
T/k, V)`` chunks; tolerance ``2e-5 * max(1, |torchtune|)`` (float32 softmax inside torchtune).

``torchtune.rlhf.loss.PPOLoss``'s value loss (float64, bool masks, ``value_clip_range`` drawn)
against :func:`maskloss.clipped_value_loss`; tolerance ``1e-12 * max(1, |torchtune|)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maskloss.conformance import Tally, random_mask
from maskloss.conformance._result import ConformanceResult
from maskloss.conventions import torchtune as conv

FRAMEWORK = "torchtune"
PPO_TOLERANCE = 1e-12  # PPOLoss runs in the inputs' float64
TOLERANCE = 1e-5
KD_TOLERANCE = 2e-5
IGNORE = -100
KD_CLASSES = ("ForwardKLLoss", "ReverseKLLoss", "SymmetricKLLoss")


def version() -> str | None:
    try:
        import torch
        from torchtune.modules.loss import CEWithChunkedOutputLoss  # noqa: F401
    except ImportError:
        return None
    from importlib.metadata import version as dist_version

    return f"{dist_version('torchtune')} (torch {torch.__version__}, torchao {dist_version('torchao')})"


def run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    import torch
    from torchtune.modules.loss import CEWithChunkedOutputLoss

    tallies = {name: Tally(TOLERANCE) for name in ("all chunks", "a chunk left out")}
    for case in range(n_cases):
        batch, steps, vocab = int(rng.integers(1, 4)), int(rng.integers(1, 12)), int(rng.integers(2, 9))
        logits = rng.normal(0.0, 3.0, (batch, steps, vocab))
        mask = random_mask(rng, batch, steps) & (case != 0)
        labels = np.where(mask, rng.integers(0, vocab, (batch, steps)), IGNORE)
        for n in (1, 3, 8):
            chunks = [c.numpy() for c in torch.from_numpy(logits).chunk(n, dim=1)]
            theirs = CEWithChunkedOutputLoss(num_output_chunks=n)([torch.from_numpy(c) for c in chunks],
                                                                  torch.from_numpy(labels))
            tallies["all chunks"].compare(conv.ce_with_chunked_output_loss(chunks, labels, num_output_chunks=n),
                                          theirs.item(), f"num_output_chunks={n}")
            if len(chunks) > 1:
                short = chunks[:-1]
                theirs = CEWithChunkedOutputLoss(num_output_chunks=n)([torch.from_numpy(c) for c in short],
                                                                      torch.from_numpy(labels))
                tallies["a chunk left out"].compare(
                    conv.ce_with_chunked_output_loss(short, labels, num_output_chunks=n), theirs.item(),
                    f"num_output_chunks={n}, {len(short)} chunks")
    ver = version() or "?"
    note = f"torchtune in float32; tol {TOLERANCE:g} x max(1, |torchtune|)"
    return [tally.result(FRAMEWORK, ver, f"CEWithChunkedOutputLoss, {name}", n_cases, note)
            for name, tally in tallies.items()] + _run_kd(rng, n_cases, ver) + [_run_ppo_value_loss(rng, n_cases, ver)]


def _kd_case(rng: np.random.Generator, batch: int, steps: int) -> tuple[Any, Any, Any]:
    vocab = int(rng.integers(2, 9))
    student = rng.normal(0.0, 3.0, (batch, steps, vocab))
    teacher = rng.normal(0.0, 3.0, (batch, steps, vocab))
    if rng.random() < 0.3 and vocab > 2:
        student[..., -1] = teacher[..., -1] = -np.inf
    labels = np.where(rng.random((batch, steps)) < 0.3, -100, rng.integers(0, vocab, (batch, steps)))
    if rng.random() < 0.1:
        labels[:] = -100  # the empty batch
    return student, teacher, labels


def _run_kd(rng: np.random.Generator, n_cases: int, ver: str) -> list[ConformanceResult]:
    """The six KD losses against the mirror."""
    import torch
    from torchtune.modules import loss as kd

    tallies = {name: Tally(KD_TOLERANCE) for name in KD_CLASSES}
    chunked = {name.replace("Loss", "WithChunkedOutputLoss"): Tally(KD_TOLERANCE) for name in KD_CLASSES}
    for _ in range(n_cases):
        chunks = int(rng.integers(1, 4))
        student, teacher, labels = _kd_case(rng, int(rng.integers(1, 4)), chunks * int(rng.integers(1, 4)))
        s2, t2 = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
        normalize = bool(rng.random() < 0.8)
        ratio = float(rng.choice([0.5, 0.2, 1.0, 0.0]))
        for name in KD_CLASSES:
            extra: dict[str, Any] = {"sym_kd_ratio": ratio} if name == "SymmetricKLLoss" else {}
            theirs = getattr(kd, name)(**extra)(torch.tensor(s2), torch.tensor(t2), torch.tensor(labels.reshape(-1)),
                                               normalize)
            fn = getattr(conv, {"ForwardKLLoss": "forward_kl_loss", "ReverseKLLoss": "reverse_kl_loss",
                                "SymmetricKLLoss": "symmetric_kl_loss"}[name])
            tallies[name].compare(fn(s2, t2, labels.reshape(-1), normalize, **extra), theirs.item(), name)
        s_chunks, t_chunks = np.split(student, chunks, axis=1), np.split(teacher, chunks, axis=1)
        for name, tally in chunked.items():
            extra = {"sym_kd_ratio": ratio} if name.startswith("Symmetric") else {}
            theirs = getattr(kd, name)(num_output_chunks=chunks, **extra)(
                [torch.tensor(c) for c in s_chunks], [torch.tensor(c) for c in t_chunks], torch.tensor(labels))
            snake = {"Forward": "forward", "Reverse": "reverse", "Symmetric": "symmetric"}[name.split("KL")[0]]
            ours = getattr(conv, f"{snake}_kl_with_chunked_output_loss")(s_chunks, t_chunks, labels,
                                                                         num_output_chunks=chunks, **extra)
            tally.compare(ours, theirs.item(), name)
    note = f"torchtune in float32, the mirror in float64; tol {KD_TOLERANCE:g} x max(1, |torchtune|)"
    return [tally.result(FRAMEWORK, ver, name, n_cases, note) for name, tally in {**tallies, **chunked}.items()]


def _run_ppo_value_loss(rng: np.random.Generator, n_cases: int, ver: str) -> ConformanceResult:
    """``torchtune.rlhf.loss.PPOLoss``'s value loss (float64, bool masks) against :func:`maskloss.clipped_value_loss`.

    torchtune's ``masked_mean`` adds 1e-8 to ``mask.sum()``, an int64 tensor for a bool mask, so the sum
    becomes float32 and the 1e-8 vanishes: the same number up to float64 rounding.
    """
    import torch
    from torchtune.rlhf.loss import PPOLoss

    import maskloss

    tally = Tally(PPO_TOLERANCE)
    for _ in range(n_cases):
        batch, steps = int(rng.integers(1, 4)), int(rng.integers(1, 8))
        mask = random_mask(rng, batch, steps)
        mask[0, 0] = True  # torchtune's empty batch is 0, maskloss's token mean NaN: not compared here
        old = rng.normal(0.0, 1.0, (batch, steps))
        values = old + rng.normal(0.0, 0.4, (batch, steps))
        returns = rng.normal(0.0, 1.0, (batch, steps))
        clip = float(rng.choice([0.0, 0.2, 0.5]))
        t = [torch.from_numpy(np.where(mask, x, 0.0)) for x in (old, values, returns)]
        lp = torch.zeros((batch, steps), dtype=torch.float64)
        m = torch.from_numpy(mask)
        theirs = PPOLoss(value_clip_range=clip)(lp, lp, lp, t[0], t[1], t[2], m, m)[2]
        tally.compare(maskloss.clipped_value_loss(values, old, returns, mask, value_clip_range=clip), theirs.item(),
                      f"value_clip_range={clip}")
    return tally.result(FRAMEWORK, ver, "PPOLoss value loss", n_cases,
                        f"float64, bool masks; tol {PPO_TOLERANCE:g} x max(1, |torchtune|)")
