r"""Conformance of :mod:`maskloss.conventions.trl` with the installed TRL (torch, float64).

TRL computes its losses inside trainer methods, so the runner calls TRL's own unbound
``GRPOTrainer._compute_loss`` and ``DPOTrainer._compute_loss`` on a stand-in ``self``
(:func:`grpo_stand_in`, :func:`dpo_stand_in`: the config fields TRL reads, a single-process
accelerator, a "model" returning the batch's per-token log-probs). Every line of TRL's
loss arithmetic runs unmodified; no model is built and nothing is downloaded.

Cases: random padded batches (empty responses included) for every mirrored GRPO
``loss_type`` with clip-higher, two-sided ``delta``, a KL term, sequence-level ratios and
gradient accumulation drawn at random; every mirrored DPO ``loss_type``; every DPO
``f_divergence_type`` (``alpha_divergence`` on float32 log-probs, tolerance ``2e-5``: TRL 1.16
has no float64 clamp for it); ``GRPOTrainer.get_high_entropy_mask`` against
:func:`maskloss.high_entropy_mask`, exactly.

Tolerance: ``1e-12 * max(1, |TRL|)`` (both float64); ``sapo`` ``1e-6`` (TRL builds its
temperatures as float32 tensors).
"""

from __future__ import annotations

import collections
import types
from typing import Any

import numpy as np

from maskloss.conformance import Tally, random_mask
from maskloss.conformance._result import ConformanceResult
from maskloss.conventions import trl as conv

FRAMEWORK = "trl"
TOLERANCE = 1e-12
SAPO_TOLERANCE = 1e-6
F32_TOLERANCE = 2e-5  # DPO's alpha_divergence: float32 log-probs in TRL


def version() -> str | None:
    try:
        import trl
    except ImportError:
        return None
    return str(trl.__version__)


class _Accelerator:
    num_processes = 1
    device = "cpu"

    def gather(self, x: Any) -> Any:
        return x

    gather_for_metrics = gather

    def reduce(self, x: Any, reduction: str = "sum") -> Any:
        return x


def _metrics() -> dict[str, Any]:
    return {"train": collections.defaultdict(list), "eval": collections.defaultdict(list)}


def grpo_stand_in(per_token_logps: Any, cfg: dict[str, Any]) -> Any:
    """The ``self`` TRL's ``GRPOTrainer._compute_loss`` reads, for the config ``cfg``."""
    import torch

    args = types.SimpleNamespace(
        delta=cfg.get("delta"), use_bias_correction_kl=cfg.get("use_bias_correction_kl", False),
        steps_per_generation=cfg.get("steps_per_generation") or cfg.get("ga", 1),
        sapo_temperature_pos=1.0, sapo_temperature_neg=1.05,
    )
    return types.SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (per_token_logps, torch.zeros_like(per_token_logps), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level=cfg.get("importance_sampling_level", "token"),
        beta=cfg.get("beta", 0.0), args=args, loss_type=cfg["loss_type"],
        epsilon_low=cfg.get("epsilon_low", 0.2), epsilon_high=cfg.get("epsilon_high", 0.2),
        use_vllm=False, vllm_importance_sampling_correction=False,
        model=types.SimpleNamespace(training=True), current_gradient_accumulation_steps=cfg.get("ga", 1),
        max_completion_length=cfg.get("max_completion_length", 8), accelerator=_Accelerator(),
        _entropy_bonus_enabled=False, aux_loss_enabled=False, _metrics=_metrics(),
    )


def trl_grpo_loss(logps: Any, old: Any, adv: Any, mask: Any, ref: Any, num_items: float, cfg: dict[str, Any]) -> float:
    """TRL's ``GRPOTrainer._compute_loss`` on these float64 tensors (``cfg`` as :func:`grpo_stand_in`)."""
    import torch
    from trl.trainer.grpo_trainer import GRPOTrainer

    def t(x: Any) -> Any:
        return torch.tensor(np.asarray(x, dtype=np.float64))

    inputs = {
        "prompt_ids": torch.zeros((mask.shape[0], 1), dtype=torch.long),
        "prompt_mask": torch.ones((mask.shape[0], 1), dtype=torch.long),
        "completion_ids": torch.zeros(mask.shape, dtype=torch.long),
        "completion_mask": torch.tensor(np.asarray(mask, dtype=np.int64)),
        "advantages": t(adv), "old_per_token_logps": t(old), "ref_per_token_logps": t(ref),
        "num_items_in_batch": torch.tensor(float(num_items)),
    }
    stand_in: Any = grpo_stand_in(t(logps), cfg)
    return float(GRPOTrainer._compute_loss(stand_in, None, inputs))  # type: ignore[no-untyped-call]


def trl_dpo_loss(per_token_logps: Any, completion_mask: Any, ref_chosen: Any, ref_rejected: Any,
                 loss_type: str, beta: float, *, f_divergence_type: str = "reverse_kl",
                 f_alpha_divergence_coef: float = 0.5, dtype: Any = np.float64) -> float:
    """TRL's ``DPOTrainer._compute_loss`` with precomputed reference log-probs and a stand-in model.

    ``dtype`` of the log-probs (``np.float32`` for ``"alpha_divergence"``: TRL 1.16 has no
    clamp for float64 and raises ``KeyError``).
    """
    import torch
    from trl.trainer.dpo_trainer import DPOTrainer

    lp = torch.tensor(np.asarray(per_token_logps, dtype=dtype))
    ref_chosen, ref_rejected = np.asarray(ref_chosen, dtype=dtype), np.asarray(ref_rejected, dtype=dtype)
    out = types.SimpleNamespace(log_probs=lp, entropy=torch.zeros_like(lp), mean_logits=torch.zeros_like(lp),
                                is_top1=torch.zeros_like(lp, dtype=torch.bool))
    fake: Any = types.SimpleNamespace(
        model=types.SimpleNamespace(training=False), accelerator=_Accelerator(), aux_loss_enabled=False,
        ld_alpha=None, precompute_ref_logps=True, f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=f_alpha_divergence_coef, loss_types=[loss_type],
        loss_weights=[1.0], beta=beta, use_weighting=False, _total_train_tokens=0, _tp_size=1, _metrics=_metrics(),
    )
    inputs = {
        "input_ids": torch.zeros(completion_mask.shape, dtype=torch.long),
        "attention_mask": torch.ones(completion_mask.shape, dtype=torch.long),
        "completion_mask": torch.tensor(np.asarray(completion_mask, dtype=np.int64)),
        "ref_chosen_logps": torch.tensor(ref_chosen), "ref_rejected_logps": torch.tensor(ref_rejected),
    }
    return float(DPOTrainer._compute_loss(fake, lambda **kwargs: out, inputs, False))  # type: ignore[no-untyped-call]


def ours_grpo(logps: Any, old: Any, adv: Any, mask: Any, ref: Any, num_items: float, cfg: dict[str, Any]) -> float:
    """The mirror with the same configuration."""
    return float(conv.grpo_loss(
        logps, old, adv, mask, loss_type=cfg["loss_type"], epsilon_low=cfg.get("epsilon_low", 0.2),
        epsilon_high=cfg.get("epsilon_high", 0.2), delta=cfg.get("delta"), beta=cfg.get("beta", 0.0),
        ref_per_token_logps=ref, use_bias_correction_kl=cfg.get("use_bias_correction_kl", False),
        importance_sampling_level=cfg.get("importance_sampling_level", "token"),
        max_completion_length=cfg.get("max_completion_length", 8), gradient_accumulation_steps=cfg.get("ga", 1),
        steps_per_generation=cfg.get("steps_per_generation"), num_items_in_batch=num_items,
    ))


def _grpo_case(rng: np.random.Generator, loss_type: str) -> tuple[Any, ...]:
    batch, steps = int(rng.integers(1, 6)), int(rng.integers(1, 8))
    mask = random_mask(rng, batch, steps)
    logps = rng.normal(-2, 0.5, (batch, steps))
    old, ref = logps + rng.normal(0, 0.3, (2, batch, steps))
    adv = rng.normal(0, 1, batch)
    cfg: dict[str, Any] = {"loss_type": loss_type, "max_completion_length": steps + int(rng.integers(0, 4))}
    if rng.random() < 0.5:
        cfg["epsilon_high"] = 0.28
    if rng.random() < 0.3:
        cfg["delta"] = 1.5
    if rng.random() < 0.4:
        cfg["beta"] = 0.04
        cfg["use_bias_correction_kl"] = bool(rng.random() < 0.5)
    if loss_type == "luspo" or rng.random() < 0.3:
        cfg["importance_sampling_level"] = "sequence"
    if rng.random() < 0.4:
        cfg["ga"], cfg["steps_per_generation"] = 4, 2
    num_items = int(mask.sum()) * int(rng.integers(1, 4)) + int(rng.integers(0, 3))
    return logps, old, adv, mask, ref, num_items, cfg


def run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    import trl

    ver = str(trl.__version__)
    results = []
    for loss_type in conv.GRPO_LOSS_TYPES:
        tally = Tally(SAPO_TOLERANCE if loss_type == "sapo" else TOLERANCE)
        for _ in range(n_cases):
            case = _grpo_case(rng, loss_type)
            tally.compare(ours_grpo(*case), trl_grpo_loss(*case), str(case[-1]))
        tol = SAPO_TOLERANCE if loss_type == "sapo" else TOLERANCE
        results.append(tally.result(FRAMEWORK, ver, f"GRPOTrainer loss_type={loss_type!r}", n_cases,
                                    f"float64; TRL's _compute_loss on a stand-in trainer; tol {tol:g}"))
    for loss_type in conv.DPO_LOSS_TYPES:
        tally = Tally(TOLERANCE)
        for _ in range(n_cases):
            pairs, steps = int(rng.integers(1, 5)), int(rng.integers(2, 8))
            lengths = rng.integers(1, steps, 2 * pairs)
            completion_mask = np.arange(steps)[None] >= steps - lengths[:, None]
            per_token = np.where(completion_mask[:, 1:], rng.normal(-2, 1, (2 * pairs, steps - 1)), 0.0)
            ref_c, ref_r = rng.normal(-8, 2, (2, pairs))
            beta = float(rng.choice([0.1, 0.5]))
            theirs = trl_dpo_loss(per_token, completion_mask, ref_c, ref_r, loss_type, beta)
            seq, counts = per_token.sum(1), completion_mask.sum(1)
            ours = conv.dpo_loss(seq[:pairs], seq[pairs:], ref_c, ref_r, beta=beta, loss_type=loss_type,
                                 chosen_lengths=counts[:pairs], rejected_lengths=counts[pairs:])
            tally.compare(ours, theirs, loss_type)
        results.append(tally.result(FRAMEWORK, ver, f"DPOTrainer loss_type={loss_type!r}", n_cases,
                                    f"float64; TRL's _compute_loss, stand-in model; tol {TOLERANCE:g}"))
    tally = Tally(0.0)
    for _ in range(n_cases):
        _padding_free_case(rng, tally)
    results.append(tally.result(FRAMEWORK, ver, "DataCollatorForLanguageModeling(padding_free=True)", n_cases,
                                "every array compared exactly, dtypes included"))
    results.extend(_run_utils(rng, n_cases, ver))
    results.extend(_run_issue20_terms(rng, n_cases, ver))
    return results


def _padding_free_case(rng: np.random.Generator, tally: Tally) -> None:
    """TRL's padding-free collator (with and without ``seq_lengths``) against the mirror, exactly."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    packed = bool(rng.integers(2))
    examples = []
    for _ in range(int(rng.integers(1, 4))):
        lengths = rng.integers(1, 5, size=int(rng.integers(1, 4)) if packed else 1)
        ids = rng.integers(1, 9, size=int(lengths.sum()))
        example: dict[str, list[int]] = {"input_ids": ids.tolist()}
        if rng.random() < 0.5:
            example["labels"] = np.where(rng.random(ids.size) < 0.3, -100, ids).tolist()
        if packed:
            example["seq_lengths"] = lengths.tolist()
        examples.append(example)
    multiple = None if rng.random() < 0.4 else int(rng.integers(1, 6))
    theirs = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True, pad_to_multiple_of=multiple)(examples)
    ours = conv.padding_free_collate(examples, pad_token_id=0, pad_to_multiple_of=multiple)
    if sorted(ours) != sorted(theirs):
        tally.compare(0.0, 1.0, f"keys {sorted(ours)} vs {sorted(theirs)}")
        return
    for key, value in theirs.items():
        b = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        a = np.asarray(ours[key])
        tally.compare(a.astype(np.float64) if a.dtype == b.dtype else np.nan, b.astype(np.float64), key)


def _run_utils(rng: np.random.Generator, n_cases: int, ver: str) -> list[ConformanceResult]:
    """``entropy_from_logits`` (with -inf lanes: TRL's NaN) and ``selective_log_softmax`` (temperature, row_mask)."""
    import torch
    from trl.trainer import utils

    entropy, selective = Tally(TOLERANCE), Tally(TOLERANCE)
    for _ in range(n_cases):
        batch, steps, vocab = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(2, 9))
        logits = rng.normal(0.0, 3.0, (batch, steps, vocab))
        if rng.random() < 0.3:
            logits[..., -1] = -np.inf  # a padded vocabulary lane
        entropy.compare(conv.entropy_from_logits(logits), utils.entropy_from_logits(torch.tensor(logits)).numpy())
        index = rng.integers(0, vocab, (batch, steps, 2) if rng.random() < 0.3 else (batch, steps))
        row_mask = random_mask(rng, batch, steps) if index.ndim == 2 and rng.random() < 0.6 else None
        if row_mask is not None:
            logits[~row_mask] = np.nan  # TRL fills these rows with 0 after computing them
        temperature = float(rng.choice([1.0, 0.6, 1.5]))
        theirs = utils.selective_log_softmax(torch.tensor(logits), torch.tensor(index), temperature=temperature,
                                             row_mask=None if row_mask is None else torch.tensor(row_mask))
        ours = conv.selective_log_softmax(logits, index, temperature=temperature, row_mask=row_mask)
        selective.compare(ours, theirs.numpy(), f"T={temperature}, index {index.shape}")
    note = f"float64; trl.trainer.utils on CPU tensors (no Triton); tol {TOLERANCE:g}"
    return [entropy.result(FRAMEWORK, ver, "entropy_from_logits", n_cases, note),
            selective.result(FRAMEWORK, ver, "selective_log_softmax", n_cases, note)]


def _run_issue20_terms(rng: np.random.Generator, n_cases: int, ver: str) -> list[ConformanceResult]:
    """DPO's f-divergence scores (``alpha_divergence`` in float32: TRL 1.16 has no float64 clamp) and
    ``GRPOTrainer.get_high_entropy_mask`` (compared exactly) against :func:`maskloss.high_entropy_mask`."""
    import types

    import torch
    from trl.trainer.grpo_trainer import GRPOTrainer

    import maskloss

    results = []
    for kind in conv.F_DIVERGENCE_TYPES:
        f32 = kind == "alpha_divergence"
        tol = F32_TOLERANCE if f32 else TOLERANCE
        tally = Tally(tol)
        for _ in range(n_cases):
            pairs, steps = int(rng.integers(1, 5)), int(rng.integers(2, 8))
            lengths = rng.integers(1, steps, 2 * pairs)
            completion_mask = np.arange(steps)[None] >= steps - lengths[:, None]
            per_token = np.where(completion_mask[:, 1:], rng.normal(-2, 1, (2 * pairs, steps - 1)), 0.0)
            dtype = np.float32 if f32 else np.float64
            per_token = per_token.astype(dtype)
            seq, counts = per_token.astype(np.float64).sum(1), completion_mask.sum(1)
            ref = (seq + rng.normal(0, 1.5, 2 * pairs)).astype(dtype)
            alpha = float(rng.choice([0.2, 0.5, 2.0])) if f32 else 0.5
            loss_type = str(rng.choice(["sigmoid", "hinge", "sigmoid_norm"]))
            theirs = trl_dpo_loss(per_token, completion_mask, ref[:pairs], ref[pairs:], loss_type, 0.1,
                                  f_divergence_type=kind, f_alpha_divergence_coef=alpha, dtype=dtype)
            ours = conv.dpo_loss(seq[:pairs], seq[pairs:], ref[:pairs], ref[pairs:], beta=0.1, loss_type=loss_type,
                                 chosen_lengths=counts[:pairs], rejected_lengths=counts[pairs:],
                                 f_divergence_type=kind, f_alpha_divergence_coef=alpha)
            tally.compare(ours, theirs, f"{loss_type}, alpha={alpha}")
        where = "float32 (TRL has no float64 alpha clamp)" if f32 else "float64"
        results.append(tally.result(FRAMEWORK, ver, f"DPOTrainer f_divergence_type={kind!r}", n_cases,
                                    f"{where}; TRL's _compute_loss, stand-in model; tol {tol:g}"))
    tally = Tally(0.0)
    accelerator = types.SimpleNamespace(pad_across_processes=lambda x, dim=0, pad_index=0: x, gather=lambda x: x)
    for _ in range(n_cases):
        batch, steps = int(rng.integers(1, 5)), int(rng.integers(1, 8))
        mask = random_mask(rng, batch, steps)
        entropies = np.where(mask, rng.gamma(2.0, 1.0, (batch, steps)), np.nan)
        threshold = float(rng.choice([0.0, 0.5, 0.8, 1.0, rng.random()]))
        stand_in: Any = types.SimpleNamespace(accelerator=accelerator)
        trl_mask = GRPOTrainer.get_high_entropy_mask(stand_in, torch.tensor(entropies), torch.tensor(mask), threshold)
        got = maskloss.high_entropy_mask(entropies, mask, threshold)
        tally.compare(got.astype(np.float64), trl_mask.numpy().astype(np.float64), f"threshold={threshold}")
    results.append(tally.result(FRAMEWORK, ver, "GRPOTrainer.get_high_entropy_mask", n_cases,
                                "float64 entropies, TRL's float32 quantile; masks compared exactly"))
    return results
