r"""Conformance of :mod:`maskloss.conventions.hf` with the installed transformers.

``transformers.loss.loss_utils.ForCausalLMLoss`` is called on random batches of
``(B, T, V)`` logits whose labels are right or left padded with -100, with and without
``num_items_in_batch`` (the exact count of valid shifted targets, or a larger count as
for one micro-batch of an accumulation window) and with ready-made ``shift_labels``.

The padding-free path: random documents (lengths 1 to 6, labels with a masked prompt or
none) go through the real ``DataCollatorWithFlattening`` (compared array for array with
:func:`maskloss.conventions.hf.data_collator_with_flattening`, exactly), and HF's loss on the
packed row is compared with maskloss's ``sparse_categorical_crossentropy(...,
reduction="token_mean")`` on the *padded* batch of the same documents, shifted inside each
document: the packed row is the token mean over the documents.

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
    packed = {name: Tally(TOLERANCE) for name in ("collator", "packed row")}
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
            _packed_case(rng, packed)
    finally:
        torch.set_num_threads(threads)
    ver = f"{_version_of_transformers()} (torch {torch.__version__})"
    note = f"HF computes in float32 (logits.float()); tol {TOLERANCE:g} x max(1, |hf|)"
    return [
        *(tally.result(FRAMEWORK, ver, f"ForCausalLMLoss, {name}", n_cases, note) for name, tally in tallies.items()),
        packed["collator"].result(FRAMEWORK, ver, "DataCollatorWithFlattening (every array, exactly)", n_cases,
                                  "integer arrays compared exactly"),
        packed["packed row"].result(FRAMEWORK, ver, "DataCollatorWithFlattening + ForCausalLMLoss = token_mean "
                                    "of the padded documents", n_cases, note),
    ]


def _packed_case(rng: np.random.Generator, tallies: dict[str, Tally]) -> None:
    import torch
    from transformers import DataCollatorWithFlattening
    from transformers.loss.loss_utils import ForCausalLMLoss

    import maskloss

    vocab = int(rng.integers(2, 9))
    lengths = rng.integers(1, 7, size=int(rng.integers(1, 5)))
    with_labels = bool(rng.integers(2))
    features = []
    for n in lengths:
        ids = rng.integers(0, vocab, size=int(n))
        feature = {"input_ids": ids.tolist()}
        if with_labels:  # a masked prompt of random length
            feature["labels"] = np.where(np.arange(n) < rng.integers(0, n + 1), IGNORE, ids).tolist()
        features.append(feature)
    options = {"return_flash_attn_kwargs": bool(rng.integers(2)), "return_seq_idx": bool(rng.integers(2))}
    theirs = DataCollatorWithFlattening(**options)(features, return_tensors="np")  # type: ignore[no-untyped-call]
    ours = conv.data_collator_with_flattening(features, **options)
    if sorted(theirs) != sorted(ours):
        tallies["collator"].compare(0.0, 1.0, f"keys {sorted(ours)} vs {sorted(theirs)}")
        return
    for key in ours:
        a, b = np.asarray(ours[key]), np.asarray(theirs[key])
        same_dtype = a.dtype == b.dtype
        tallies["collator"].compare(a.astype(np.float64) if same_dtype else np.nan, b.astype(np.float64), key)
    # The model's loss on the packed row against maskloss on the padded documents.
    batch, steps = len(lengths), int(lengths.max())
    logits = rng.normal(0.0, 3.0, (batch, steps, vocab)).astype(np.float32)
    valid = maskloss.mask_from_lengths(lengths, steps)
    packed_logits = logits[valid][None]  # documents one after another, as the collator packs them
    hf = ForCausalLMLoss(torch.from_numpy(packed_logits), torch.from_numpy(theirs["labels"]), vocab).item()
    labels = np.full((batch, steps), IGNORE)
    labels[valid] = np.concatenate([f.get("labels", f["input_ids"]) for f in features])
    targets = np.full((batch, steps), IGNORE)
    targets[:, :-1] = labels[:, 1:]  # next token of the same document; the last predicts nothing
    ours_loss = maskloss.sparse_categorical_crossentropy(
        targets, logits.astype(np.float64), from_logits=True, ignore_index=IGNORE, reduction="token_mean")
    tallies["packed row"].compare(ours_loss, hf, f"packed row of {len(lengths)} documents")


def _version_of_transformers() -> str:
    import transformers

    return str(transformers.__version__)
