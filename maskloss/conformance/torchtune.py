r"""Conformance of :mod:`maskloss.conventions.torchtune` with the installed torchtune (its KD losses).

Random ``(N, V)`` student and teacher logits (sometimes a ``-inf`` padded vocabulary lane),
labels with ``ignore_index`` -100 (sometimes all of them: the empty batch), ``normalize``
drawn; every loss class of ``torchtune/modules/loss/kd_losses.py``, the chunked ones on
``(B, T/k, V)`` chunks.

Tolerance: ``2e-5 * max(1, |torchtune|)``: torchtune computes its softmax in float32
(``dtype=torch.float32``) even for float64 inputs; the mirror in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maskloss.conformance import Tally
from maskloss.conformance._result import ConformanceResult
from maskloss.conventions import torchtune as conv

FRAMEWORK = "torchtune"
TOLERANCE = 2e-5
CLASSES = ("ForwardKLLoss", "ReverseKLLoss", "SymmetricKLLoss")


def version() -> str | None:
    try:
        import torchtune
    except ImportError:
        return None
    return str(torchtune.__version__)


def _case(rng: np.random.Generator, batch: int, steps: int) -> tuple[Any, Any, Any]:
    vocab = int(rng.integers(2, 9))
    student = rng.normal(0.0, 3.0, (batch, steps, vocab))
    teacher = rng.normal(0.0, 3.0, (batch, steps, vocab))
    if rng.random() < 0.3 and vocab > 2:
        student[..., -1] = teacher[..., -1] = -np.inf
    labels = np.where(rng.random((batch, steps)) < 0.3, -100, rng.integers(0, vocab, (batch, steps)))
    if rng.random() < 0.1:
        labels[:] = -100  # the empty batch
    return student, teacher, labels


def run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    import torch
    import torchtune
    from torchtune.modules import loss as kd

    tallies = {name: Tally(TOLERANCE) for name in CLASSES}
    chunked = {name.replace("Loss", "WithChunkedOutputLoss"): Tally(TOLERANCE) for name in CLASSES}
    for _ in range(n_cases):
        chunks = int(rng.integers(1, 4))
        student, teacher, labels = _case(rng, int(rng.integers(1, 4)), chunks * int(rng.integers(1, 4)))
        s2, t2 = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
        normalize = bool(rng.random() < 0.8)
        ratio = float(rng.choice([0.5, 0.2, 1.0, 0.0]))
        for name in CLASSES:
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
    note = f"torchtune in float32, the mirror in float64; tol {TOLERANCE:g} x max(1, |torchtune|)"
    ver = str(torchtune.__version__)
    return [tally.result(FRAMEWORK, ver, name, n_cases, note) for name, tally in {**tallies, **chunked}.items()]
