r"""Conformance of :mod:`maskloss.conventions.torchtune` with the installed torchtune.

``torchtune.modules.loss.CEWithChunkedOutputLoss`` is called on float64 logit chunks
(``logits.chunk(n, dim=1)``, as torchtune's decoder returns them) with ignored labels
(an all-ignored batch first: NaN on both sides), for several ``num_output_chunks``, and
once with the last chunk left out of the list (torchtune's ``zip`` drops its tokens but
keeps counting them). torchtune casts every chunk to float32, so the tolerance is
``1e-5 * max(1, |torchtune|)``.
"""

from __future__ import annotations

import numpy as np

from maskloss.conformance import Tally, random_mask
from maskloss.conformance._result import ConformanceResult
from maskloss.conventions import torchtune as conv

FRAMEWORK = "torchtune"
TOLERANCE = 1e-5
IGNORE = -100


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
            for name, tally in tallies.items()]
