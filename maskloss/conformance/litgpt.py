r"""Conformance of :mod:`maskloss.conventions.litgpt` with the installed litgpt.

``litgpt.utils.chunked_cross_entropy`` is called on float64 logits (one tensor, or a
list of chunks along time) with ignored targets (an all-ignored batch first, where the
chunked path gives 0 and ``chunk_size=0`` gives NaN), for several chunk sizes.
Tolerance: ``1e-12 * max(1, |litgpt|)`` (both float64).
"""

from __future__ import annotations

import numpy as np

from maskloss.conformance import Tally, random_mask
from maskloss.conformance._result import ConformanceResult
from maskloss.conventions import litgpt as conv

FRAMEWORK = "litgpt"
TOLERANCE = 1e-12
IGNORE = -100


def version() -> str | None:
    try:
        import torch
        from litgpt.utils import chunked_cross_entropy  # noqa: F401
    except ImportError:
        return None
    from importlib.metadata import version as dist_version

    return f"{dist_version('litgpt')} (torch {torch.__version__})"


def run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    import torch
    from litgpt.utils import chunked_cross_entropy

    tallies = {name: Tally(TOLERANCE) for name in ("one tensor", "list of chunks")}
    for case in range(n_cases):
        batch, steps, vocab = int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(2, 9))
        logits = rng.normal(0.0, 3.0, (batch, steps, vocab))
        mask = random_mask(rng, batch, steps) & (case != 0)
        targets = np.where(mask, rng.integers(0, vocab, (batch, steps)), IGNORE)
        for chunk_size in (0, 1, 3, 128):
            theirs = chunked_cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets), chunk_size=chunk_size)
            tallies["one tensor"].compare(conv.chunked_cross_entropy(logits, targets, chunk_size=chunk_size),
                                          theirs.item(), f"chunk_size={chunk_size}")
        width = int(rng.integers(1, steps + 1))
        chunks = [logits[:, i : i + width] for i in range(0, steps, width)]
        if steps % width == 0:  # litgpt splits the targets by the first chunk's length
            for chunk_size in (0, 128):
                theirs = chunked_cross_entropy([torch.from_numpy(x) for x in chunks], torch.from_numpy(targets),
                                               chunk_size=chunk_size)
                tallies["list of chunks"].compare(conv.chunked_cross_entropy(chunks, targets, chunk_size=chunk_size),
                                                  theirs.item(), f"list, chunk_size={chunk_size}")
    ver = version() or "?"
    note = f"float64; tol {TOLERANCE:g} x max(1, |litgpt|)"
    return [tally.result(FRAMEWORK, ver, f"chunked_cross_entropy, {name}", n_cases, note)
            for name, tally in tallies.items()]
