r"""Conformance of :mod:`maskloss.conventions.hf` with the installed transformers.

``transformers.loss.loss_utils.ForCausalLMLoss`` is called on random batches of
``(B, T, V)`` logits whose labels are right or left padded with -100, with and without
``num_items_in_batch`` (the exact count of valid shifted targets, or a larger count as
for one micro-batch of an accumulation window) and with ready-made ``shift_labels``.

HF casts the logits with ``logits.float()``: it computes in **float32** whatever the
input dtype. The logits are therefore drawn as float32 numbers and given to both sides
(to HF as a float32 tensor, to maskloss as the same values in float64), so the only
difference left is float32 arithmetic inside HF. Tolerance: ``1e-5 * max(1, |hf|)``.
"""

from __future__ import annotations

import numpy as np

from maskloss.conformance import Tally, random_mask
from maskloss.conformance._result import ConformanceResult
from maskloss.conventions import hf as conv

FRAMEWORK = "transformers"
TOLERANCE = 1e-5
IGNORE = -100


def version() -> str | None:
    try:
        import torch
        import transformers
    except ImportError:
        return None
    return f"{transformers.__version__} (torch {torch.__version__})"


def run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    tallies = {name: Tally(TOLERANCE) for name in ("mean", "num_items_in_batch", "shift_labels")}
    try:
        for _ in range(n_cases):
            batch, steps, vocab = int(rng.integers(1, 5)), int(rng.integers(1, 8)), int(rng.integers(2, 9))
            logits = rng.normal(0.0, 3.0, (batch, steps, vocab)).astype(np.float32)
            mask = random_mask(rng, batch, steps)
            labels = np.where(mask, rng.integers(0, vocab, (batch, steps)), IGNORE)
            x = torch.from_numpy(logits)
            y = torch.from_numpy(labels)
            ours64 = logits.astype(np.float64)
            tallies["mean"].compare(conv.for_causal_lm_loss(ours64, labels, vocab),
                                    ForCausalLMLoss(x, y, vocab).item(), "mean")
            valid_shifted = int(np.sum(labels[:, 1:] != IGNORE))
            count = valid_shifted + int(rng.integers(0, 2)) * int(rng.integers(1, 10))
            tallies["num_items_in_batch"].compare(
                conv.for_causal_lm_loss(ours64, labels, vocab, num_items_in_batch=count),
                ForCausalLMLoss(x, y, vocab, num_items_in_batch=torch.tensor(count)).item(),
                f"num_items_in_batch={count}",
            )
            shifted = np.where(random_mask(rng, batch, steps), rng.integers(0, vocab, (batch, steps)), IGNORE)
            tallies["shift_labels"].compare(
                conv.for_causal_lm_loss(ours64, labels, vocab, shift_labels=shifted),
                ForCausalLMLoss(x, y, vocab, shift_labels=torch.from_numpy(shifted)).item(),
                "shift_labels",
            )
    finally:
        torch.set_num_threads(threads)
    ver = f"{_version_of_transformers()} (torch {torch.__version__})"
    note = f"HF computes in float32 (logits.float()); tol {TOLERANCE:g} x max(1, |hf|)"
    return [
        tally.result(FRAMEWORK, ver, f"ForCausalLMLoss, {name}", n_cases, note)
        for name, tally in tallies.items()
    ]


def _version_of_transformers() -> str:
    import transformers

    return str(transformers.__version__)
