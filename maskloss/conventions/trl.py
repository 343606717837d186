r"""TRL's GRPO and DPO losses, as NumPy truth in float64.

TRL computes its losses inside trainer methods; this module mirrors them as functions
with TRL's names, for **TRL 1.16.0** (checked against its code by ``maskloss
conformance`` and ``tests/test_conventions_trl.py``, which run TRL's own
``GRPOTrainer._compute_loss`` and ``DPOTrainer._compute_loss`` on stand-in trainer
objects whose model returns given log-probs: TRL's arithmetic, no model, no download).

:func:`grpo_loss` is ``GRPOTrainer._compute_loss`` (``trl/trainer/grpo_trainer.py``) from the
per-token log-probs on: importance ratio (``importance_sampling_level`` ``"token"`` or
``"sequence"``, GSPO), clipping (``epsilon_low``, ``epsilon_high``, two-sided ``delta``), the
k3 KL term with ``beta`` (optionally times the ratio, ``use_bias_correction_kl``), and the
aggregation of each ``loss_type``, which is where TRL's loss types differ:

==============  ===================================================================================
``loss_type``   value returned for one micro-batch (``GA`` = gradient-accumulation steps)
==============  ===================================================================================
``grpo``        :math:`\frac1B\sum_b \frac{\sum_t m\ell}{\max(L_b, 1)} / GA` (also ``sapo``)
``bnpo``        :math:`\frac{\sum m\ell}{\max(\sum m, 1)} / GA` (this micro-batch's tokens)
``dr_grpo``     :math:`\frac{\sum m\ell}{B\cdot\text{max\_completion\_length}} / GA`
``dapo``        :math:`\sum m\ell \,/\, \big(\frac{\max(N, 1)}{P}\cdot\frac{GA}{\text{steps\_per\_generation}}\big)`,
                ``N`` = ``num_items_in_batch`` (valid tokens of the generation batch, all ranks),
                ``P`` = ``num_processes`` (also ``cispo``; in eval the last factor is 1)
``luspo``       :math:`\frac1B\sum_b\sum_t m\ell / GA`
==============  ===================================================================================

Quirks, stated plainly: the ``clamp(min=1)`` makes an empty response count 0 in its
sequence mean (``grpo``) but still count in the ``1/B`` (so empty responses dilute the
batch, unlike maskloss's ``"sequence_mean"``); ``grpo``/``bnpo`` are means *per
micro-batch*, so their sum over accumulation steps is not the mean of the whole step
unless every micro-batch holds the same number of tokens; TRL multiplies by the mask, so
NaN under the mask would leak (the mirror reproduces it); ``sapo``'s temperatures are
float32 tensors in TRL (``torch.where`` of Python floats), so it agrees to float32 rounding. ``vespo`` (gamma-weighted
sequence ratios) is not mirrored.

:func:`dpo_loss` is the loss part of ``DPOTrainer._compute_loss`` (``trl/trainer/dpo_trainer.py``),
with its f-divergence scores (``f_divergence_type``, :data:`F_DIVERGENCE_TYPES`).

Packed (padding-free) paths of TRL 1.16: only SFT's. ``pack_dataset(strategy="bfd")`` packs whole
documents (one longer than ``seq_length`` is truncated: its tail is dropped) and
:func:`padding_free_collate` is its collator, whose row loss is the token mean over the
documents; ``strategy="bfd_split"`` cuts an over-long document into documents of their own, so
the first token of each continuation is no target (one target per cut fewer than the document's
own loss; ``tests/test_conventions_trl_packing.py``); ``"wrapped"`` cuts without boundaries.
``GRPOTrainer`` has no padding-free path, and ``DPOConfig(padding_free=True)`` is disabled in
1.16 (TRL warns and pads), so :func:`grpo_loss` and :func:`dpo_loss` have no packed form to mirror.

Examples
--------
One micro-batch of two responses (3 and 1 tokens), on-policy (ratio 1), so the per-token
loss is :math:`-A`:

>>> import numpy as np
>>> from maskloss.conventions import trl
>>> lp = np.zeros((2, 3)); mask = np.array([[1, 1, 1], [1, 0, 0]]); adv = np.array([1.0, -2.0])
>>> [round(float(trl.grpo_loss(lp, lp, adv, mask, loss_type=t, max_completion_length=4)), 6)
...  for t in ("grpo", "bnpo", "dr_grpo")]      # (-1 + 2) / 2, (-3 + 2) / 4, (-3 + 2) / (2 * 4)
[0.5, -0.25, -0.125]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import as_numeric, check_mask
from maskloss._types import BoolArray, FloatArray
from maskloss.conventions.hf import _token_ids

__all__ = [
    "DPO_LOSS_TYPES",
    "F_DIVERGENCE_TYPES",
    "GRPO_LOSS_TYPES",
    "dpo_loss",
    "entropy_from_logits",
    "grpo_loss",
    "padding_free_collate",
    "selective_log_softmax",
    "selective_log_softmax_and_entropy",
]

#: The ``loss_type`` values of ``GRPOTrainer`` (TRL 1.16) mirrored here (all but ``vespo``).
GRPO_LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo")
#: The DPO ``loss_type`` values mirrored here.
DPO_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "hinge", "ipo", "sigmoid_norm")
#: ``DPOConfig.f_divergence_type`` values (TRL 1.16), all mirrored.
F_DIVERGENCE_TYPES: tuple[str, ...] = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def _f64(x: npt.ArrayLike, name: str) -> FloatArray:
    return np.asarray(as_numeric(x, name), dtype=np.float64)


def _times_mask(x: FloatArray, valid: BoolArray) -> FloatArray:
    """``x * mask`` as torch computes it: 0 where masked and finite, NaN where masked and NaN/inf."""
    with np.errstate(invalid="ignore"):
        return np.where(valid, x, np.where(np.isfinite(x), 0.0, np.nan))


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.exp(np.minimum(x, 0.0)) / (1.0 + np.exp(-np.abs(x)))


def padding_free_collate(
    examples: Sequence[Mapping[str, Any]], *, pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, Any]:
    r"""``trl.trainer.sft_trainer.DataCollatorForLanguageModeling(pad_token_id, padding_free=True,
    pad_to_multiple_of=...)(examples)``, as NumPy arrays, exactly (**TRL 1.16**).

    Every example's ``input_ids`` (and ``labels``, its ``input_ids`` when absent) are
    concatenated into **one** row; ``position_ids`` restart at 0 for every example, or for
    every document of an already packed example that carries ``seq_lengths`` (TRL's
    ``packing=True`` datasets). The row is padded on the right to ``pad_to_multiple_of``
    (``pad_token_id`` in ``input_ids``, -100 in ``labels``, 0 in ``position_ids``); then
    **every label at position 0 becomes -100**, so the causal shift of the model's loss
    never predicts a document's first token from the previous document.

    ``cu_seq_lens_q``/``cu_seq_lens_k`` (int32) start a sequence at every position 0 and end
    at the padded length, ``max_length_q``/``max_length_k`` are the longest, and ``seq_idx``
    (int32) numbers them. The quirk, stated plainly: **each padding token is a sequence of
    its own** there (its position id is 0), so with ``pad_to_multiple_of`` the varlen
    kernels see extra length-1 sequences; the labels of padding are -100, so the loss is not
    affected. The loss on the row is the token mean over every document's tokens after its
    first, as for HF's :func:`maskloss.conventions.hf.data_collator_with_flattening`.

    Examples
    --------
    >>> from maskloss.conventions.trl import padding_free_collate
    >>> out = padding_free_collate([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}],
    ...                            pad_token_id=0, pad_to_multiple_of=4)
    >>> out["labels"].tolist(), out["position_ids"].tolist()
    ([[-100, 6, 7, -100, 9, -100, -100, -100]], [[0, 1, 2, 0, 1, 0, 0, 0]])
    >>> out["cu_seq_lens_q"].tolist()          # the three padding tokens: three sequences
    [0, 3, 5, 6, 7, 8]
    """
    for number, name in ((pad_token_id, "pad_token_id"), (pad_to_multiple_of, "pad_to_multiple_of")):
        if name == "pad_to_multiple_of" and number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {number!r}")
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
    if isinstance(examples, Mapping) or not isinstance(examples, Sequence) or not examples:
        raise TypeError(f"examples must be a non-empty sequence of mappings with 'input_ids', got {examples!r}")
    packed = "seq_lengths" in examples[0]
    ids, labels, positions = [], [], []
    for i, example in enumerate(examples):
        if not isinstance(example, Mapping) or "input_ids" not in example:
            raise TypeError(f"examples[{i}] must be a mapping with 'input_ids', got {example!r}")
        own = _token_ids(example["input_ids"], f"examples[{i}]['input_ids']")
        own_labels = _token_ids(example.get("labels", example["input_ids"]), f"examples[{i}]['labels']")
        if own_labels.shape != own.shape:
            raise ValueError(f"examples[{i}]: labels {own_labels.shape} and input_ids {own.shape} differ in length")
        if packed:
            if "seq_lengths" not in example:
                raise ValueError(f"examples[0] has 'seq_lengths' but examples[{i}] does not")
            lengths = _token_ids(example["seq_lengths"], f"examples[{i}]['seq_lengths']")
            if np.any(lengths < 0) or int(lengths.sum()) != own.size:
                raise ValueError(f"examples[{i}]['seq_lengths'] {lengths.tolist()} must be >= 0 and sum to "
                                 f"its {own.size} input_ids")
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            positions.append(np.arange(own.size, dtype=np.int64) - starts)
        else:
            positions.append(np.arange(own.size, dtype=np.int64))
        ids.append(own)
        labels.append(own_labels)
    total = sum(x.size for x in ids)
    width = total if pad_to_multiple_of is None else -(-total // pad_to_multiple_of) * pad_to_multiple_of
    pad = width - total
    row_ids = np.concatenate([*ids, np.full(pad, pad_token_id, dtype=np.int64)])
    row_positions = np.concatenate([*positions, np.zeros(pad, dtype=np.int64)])
    row_labels = np.where(row_positions == 0, np.int64(-100),
                          np.concatenate([*labels, np.full(pad, -100, dtype=np.int64)]))
    starts = np.flatnonzero(row_positions == 0)
    cu = np.concatenate([starts, [width]]).astype(np.int32)
    lengths_of = np.diff(cu)
    return {
        "input_ids": row_ids[None, :],
        "labels": row_labels[None, :],
        "position_ids": row_positions[None, :],
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": int(lengths_of.max()) if lengths_of.size else 0,
        "max_length_k": int(lengths_of.max()) if lengths_of.size else 0,
        "seq_idx": np.repeat(np.arange(lengths_of.size, dtype=np.int32), lengths_of)[None, :],
    }


def grpo_loss(
    per_token_logps: npt.ArrayLike,
    old_per_token_logps: npt.ArrayLike | None,
    advantages: npt.ArrayLike,
    completion_mask: npt.ArrayLike,
    *,
    loss_type: str = "dapo",
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    delta: float | None = None,
    beta: float = 0.0,
    ref_per_token_logps: npt.ArrayLike | None = None,
    use_bias_correction_kl: bool = False,
    importance_sampling_level: str = "token",
    max_completion_length: int = 256,
    gradient_accumulation_steps: int = 1,
    num_processes: int = 1,
    num_items_in_batch: float | None = None,
    steps_per_generation: int | None = None,
    sapo_temperature_pos: float = 1.0,
    sapo_temperature_neg: float = 1.05,
    training: bool = True,
) -> np.float64:
    r"""The loss TRL's ``GRPOTrainer._compute_loss`` returns for one micro-batch (TRL 1.16).

    Arguments are the tensors TRL uses there (``(B, T)`` log-probs, ``(B,)`` or ``(B, T)``
    advantages, the completion mask) and the config fields it reads (``epsilon_low`` is
    ``GRPOConfig.epsilon``; ``gradient_accumulation_steps`` is the trainer's
    ``current_gradient_accumulation_steps``; ``steps_per_generation`` defaults to it, as in
    ``GRPOConfig``; ``num_items_in_batch`` defaults to this micro-batch's token count times
    ``num_processes * steps_per_generation / gradient_accumulation_steps``, as if every
    micro-batch held as many tokens). ``old_per_token_logps=None`` is on-policy (TRL's
    ``per_token_logps.detach()``). The entropy bonus, off-policy mask, vLLM importance
    correction and aux losses are off (TRL's defaults).
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"Unknown loss type: {loss_type!r}; mirrored: {', '.join(map(repr, GRPO_LOSS_TYPES))}")
    logps = _f64(per_token_logps, "per_token_logps")
    if logps.ndim != 2:
        raise ValueError(f"per_token_logps must have shape (B, T), got {logps.shape}")
    valid = check_mask(completion_mask, logps.shape, name="completion_mask")
    mask = valid.astype(np.float64)
    old = logps if old_per_token_logps is None else _f64(old_per_token_logps, "old_per_token_logps")
    adv = _f64(advantages, "advantages")
    if adv.ndim == 1:
        adv = adv[:, None]
    if adv.shape not in ((logps.shape[0], 1), logps.shape):
        raise ValueError(f"advantages must have shape (B,) or (B, T) with B, T = {logps.shape}, got {adv.shape}")
    log_ratio = logps - old
    if importance_sampling_level == "token":
        log_w = log_ratio
    elif importance_sampling_level == "sequence":
        log_w = (_times_mask(log_ratio, valid).sum(-1) / np.maximum(mask.sum(-1), 1.0))[:, None]
    else:
        raise ValueError(f"importance_sampling_level must be 'token' or 'sequence', got {importance_sampling_level!r}")
    coef_1 = np.exp(log_w)
    if beta != 0.0:
        if ref_per_token_logps is None:
            raise TypeError("beta != 0 needs ref_per_token_logps")
        ref = _f64(ref_per_token_logps, "ref_per_token_logps")
        per_token_kl = np.exp(ref - logps) - (ref - logps) - 1
        if use_bias_correction_kl:
            per_token_kl = per_token_kl * coef_1
    if loss_type == "cispo":
        per_token_loss = -np.minimum(coef_1, epsilon_high) * adv * logps
    elif loss_type == "sapo":
        temperatures = np.where(adv > 0, sapo_temperature_pos, sapo_temperature_neg)
        per_token_loss = -(_sigmoid(temperatures * (coef_1 - 1)) * 4 / temperatures) * adv
    else:
        coef_2 = np.clip(coef_1, 1 - epsilon_low, 1 + epsilon_high)
        if delta is not None:
            coef_1 = np.minimum(coef_1, delta)
        per_token_loss = -np.minimum(coef_1 * adv, coef_2 * adv)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    per_token_loss = np.broadcast_to(per_token_loss, logps.shape)
    masked = _times_mask(per_token_loss, valid)
    ga = float(gradient_accumulation_steps) if training else 1.0
    if loss_type in ("grpo", "sapo"):
        return np.float64(np.mean(masked.sum(-1) / np.maximum(mask.sum(-1), 1.0)) / ga)
    if loss_type == "bnpo":
        return np.float64(masked.sum() / max(float(mask.sum()), 1.0) / ga)
    if loss_type == "dr_grpo":
        return np.float64(masked.sum() / (logps.shape[0] * max_completion_length) / ga)
    if loss_type == "luspo":
        return np.float64(masked.sum(-1).mean() / ga)
    spg = gradient_accumulation_steps if steps_per_generation is None else steps_per_generation
    if num_items_in_batch is None:
        num_items_in_batch = float(mask.sum()) * num_processes * spg / gradient_accumulation_steps
    normalizer = max(float(num_items_in_batch), 1.0) / num_processes
    if training:
        normalizer = normalizer * gradient_accumulation_steps / spg
    return np.float64(masked.sum() / normalizer)


def dpo_loss(
    chosen_logps: npt.ArrayLike,
    rejected_logps: npt.ArrayLike,
    ref_chosen_logps: npt.ArrayLike,
    ref_rejected_logps: npt.ArrayLike,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    chosen_lengths: npt.ArrayLike | None = None,
    rejected_lengths: npt.ArrayLike | None = None,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
) -> np.float64:
    r"""The DPO loss of ``DPOTrainer._compute_loss`` (TRL 1.16).

    Each log-ratio :math:`\rho = \log\pi - \log\pi^{ref}` (summed sequence log-probs) first
    becomes a score :math:`s = f'(e^\rho)` of the f-DPO regulariser ``f_divergence_type``:
    ``"reverse_kl"`` (standard DPO) :math:`\rho`; ``"forward_kl"`` :math:`1 - e^{-\rho}`;
    ``"js_divergence"`` :math:`\log 2 + \log\sigma(\rho)`; ``"alpha_divergence"`` with
    :math:`\alpha` = ``f_alpha_divergence_coef``:
    :math:`(e^{\min((\alpha-1)\rho,\, 80)} - 1)/(\alpha-1)`, and :math:`\rho` when
    :math:`|\alpha - 1| < 10^{-6}` (TRL's limit case). The 80 is TRL's clamp for float32 and
    bfloat16 log-probs (11 for float16; float64 log-probs raise ``KeyError`` in TRL 1.16, so
    TRL computes this one in float32 at most and agrees with the mirror to float32 rounding,
    except where a float32 result overflows: ``ipo`` squares a clamped score of
    :math:`\sim e^{80}`, which is ``inf`` in TRL and finite here).
    With :math:`h = s_c - s_r`: ``sigmoid`` :math:`-\log\sigma(\beta h)`; ``hinge``
    :math:`\operatorname{relu}(1 - \beta h)`; ``ipo`` and ``sigmoid_norm`` first divide each
    score by its completion length ``clamp(min=1)`` (``chosen_lengths``,
    ``rejected_lengths``: completion tokens per sequence), then
    :math:`(h - \frac{1}{2\beta})^2` and :math:`-\log\sigma(\beta h)`. The mean over pairs.

    Examples
    --------
    >>> import math
    >>> from maskloss.conventions import trl
    >>> args = ([-1.0], [-2.0], [-1.5], [-1.5])          # log-ratios 0.5 and -0.5
    >>> js = float(trl.dpo_loss(*args, beta=1.0, f_divergence_type="js_divergence"))
    >>> h = math.log(1 / (1 + math.exp(-0.5))) - math.log(1 / (1 + math.exp(0.5)))  # = 0.5
    >>> round(js, 12) == round(math.log1p(math.exp(-h)), 12)
    True
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"Unknown loss type: {loss_type!r}. Should be one of {', '.join(map(repr, DPO_LOSS_TYPES))}")
    chosen = _f64(chosen_logps, "chosen_logps") - _f64(ref_chosen_logps, "ref_chosen_logps")
    rejected = _f64(rejected_logps, "rejected_logps") - _f64(ref_rejected_logps, "ref_rejected_logps")
    if f_divergence_type not in F_DIVERGENCE_TYPES:
        raise ValueError(f"Unknown f_divergence_type: {f_divergence_type!r}")  # TRL's words
    chosen = _f_divergence_scores(chosen, f_divergence_type, f_alpha_divergence_coef)
    rejected = _f_divergence_scores(rejected, f_divergence_type, f_alpha_divergence_coef)
    if chosen.shape != rejected.shape or chosen.ndim != 1:
        raise ValueError(f"chosen and rejected log-probs must be (B,) each, got {chosen.shape} and {rejected.shape}")
    if loss_type in ("ipo", "sigmoid_norm"):
        if chosen_lengths is None or rejected_lengths is None:
            raise TypeError(f"loss_type={loss_type!r} needs chosen_lengths and rejected_lengths")
        chosen = chosen / np.maximum(_f64(chosen_lengths, "chosen_lengths"), 1.0)
        rejected = rejected / np.maximum(_f64(rejected_lengths, "rejected_lengths"), 1.0)
    h = chosen - rejected
    per: Any
    if loss_type == "ipo":
        per = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        per = np.maximum(1 - beta * h, 0.0)
    else:
        x = beta * h
        per = -(np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x))))
    return np.float64(np.mean(per))


def _f_divergence_scores(logratio: FloatArray, kind: str, alpha: float) -> FloatArray:
    """TRL 1.16's ``chosen_scores``/``rejected_scores`` of one ``f_divergence_type``, in float64."""
    if kind == "reverse_kl":
        return logratio
    with np.errstate(over="ignore"):
        if kind == "forward_kl":
            return np.asarray(1 - np.exp(-logratio), dtype=np.float64)
        if kind == "js_divergence":
            return np.asarray(np.log(2.0) + (np.minimum(logratio, 0.0) - np.log1p(np.exp(-np.abs(logratio)))),
                              dtype=np.float64)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise TypeError(f"f_alpha_divergence_coef must be a real number, got {alpha!r}")
        if abs(alpha - 1.0) < 1e-6:  # TRL's limit case: reverse KL
            return logratio
        t = np.minimum((alpha - 1.0) * logratio, 80.0)  # TRL's clamp for float32 / bfloat16
        return np.asarray((np.exp(t) - 1.0) * (1.0 / (alpha - 1.0)), dtype=np.float64)


def _logits_rows(logits: npt.ArrayLike, temperature: float) -> FloatArray:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)):
        raise TypeError(f"temperature must be a real number > 0, got {temperature!r}")
    if not temperature > 0:
        raise ValueError("temperature must be positive")  # TRL's words
    x = _f64(logits, "logits")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"logits must have shape (..., num_classes) with num_classes >= 1, got {x.shape}")
    return x if temperature == 1.0 else x / temperature


def entropy_from_logits(logits: npt.ArrayLike, chunk_size: int = 128) -> FloatArray:
    r"""``trl.trainer.utils.entropy_from_logits``: :math:`-\sum_c e^{\ell_c}\ell_c` per row.

    :math:`\ell = \log\operatorname{softmax}(x)`, over the last axis.

    Shape ``logits.shape[:-1]``; no mask (TRL masks afterwards). TRL writes the plain
    product ``-(exp(logps) * logps).sum(-1)``, so a logit of :math:`-\infty` (a padded
    vocabulary lane) gives **NaN** (:math:`0 \cdot (-\infty)`); the mirror reproduces it.
    :func:`maskloss.entropy` gives that lane 0 and reduces over a mask. ``chunk_size`` only
    bounds TRL's memory; the numbers do not depend on it.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.trl import entropy_from_logits
    >>> entropy_from_logits(np.array([[0.0, 0.0], [0.0, -np.inf]])).tolist()   # log 2, and TRL's NaN
    [0.6931471805599453, nan]
    """
    x = _logits_rows(logits, 1.0)
    with np.errstate(invalid="ignore"):
        log_p = pointwise.log_softmax(x)
        return np.asarray(-np.sum(np.exp(log_p) * log_p, axis=-1), dtype=np.float64)


def selective_log_softmax(
    logits: npt.ArrayLike,
    index: npt.ArrayLike,
    temperature: float = 1.0,
    row_mask: npt.ArrayLike | None = None,
) -> FloatArray:
    r"""``trl.trainer.utils.selective_log_softmax``: :math:`\log\operatorname{softmax}(x/\tau)` at ``index``.

    ``index`` is ``(...)`` (one token per row) or ``(..., K)`` (K tokens per row, top-K);
    the result has its shape. ``row_mask`` (the shape of ``index``) sets the entries where
    it is 0 to exactly 0 (TRL's ``masked_fill``; the logits of such a row may hold
    anything). Every index must lie in ``[0, V)``, masked or not (``torch.gather`` raises
    otherwise). The masked, reducible version is :func:`maskloss.token_logprobs`.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.trl import selective_log_softmax
    >>> logits = np.log([[[0.5, 0.5], [0.25, 0.75], [np.nan, np.nan]]])
    >>> selective_log_softmax(logits, [[0, 1, 0]], row_mask=[[1, 1, 0]]).round(6).tolist()
    [[-0.693147, -0.287682, 0.0]]
    """
    x = _logits_rows(logits, temperature)
    idx = as_numeric(index, "index")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"index must hold integers (torch.gather), got dtype {idx.dtype}")
    squeeze = idx.ndim == x.ndim - 1
    full = idx[..., None] if squeeze else idx
    if full.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"index must have shape logits.shape[:-1] (+ (K,)) = {x.shape[:-1]}, got {idx.shape}")
    vocab = x.shape[-1]
    if np.any((full < 0) | (full >= vocab)):
        raise ValueError(f"index must lie in [0, {vocab}) everywhere (torch.gather: index out of bounds)")
    with np.errstate(invalid="ignore"):
        out = np.take_along_axis(pointwise.log_softmax(x), full.astype(np.intp), axis=-1)
    out = out[..., 0] if squeeze else out
    if row_mask is None:
        return np.asarray(out, dtype=np.float64)
    keep = as_numeric(row_mask, "row_mask")
    if keep.shape != idx.shape:
        raise ValueError(f"row_mask must have the shape of index {idx.shape}, got {keep.shape}")
    return np.where(keep != 0, out, 0.0)


def selective_log_softmax_and_entropy(
    logits: npt.ArrayLike,
    index: npt.ArrayLike,
    entropy_requires_grad: bool = True,
    temperature: float = 1.0,
    row_mask: npt.ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """``trl.trainer.utils.selective_log_softmax_and_entropy``: both of the above at temperature ``tau``.

    The entropy is of the tempered logits, 0 where ``row_mask`` is 0;
    ``entropy_requires_grad`` changes no number.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.trl import selective_log_softmax_and_entropy
    >>> lp, h = selective_log_softmax_and_entropy(np.array([[0.0, 2.0]]), [1], temperature=2.0)
    >>> lp.round(6).tolist(), h.round(6).tolist()      # softmax((0, 1)) = (0.268941, 0.731059)
    ([-0.313262], [0.582203])
    """
    logps = selective_log_softmax(logits, index, temperature, row_mask)
    entropy = entropy_from_logits(_logits_rows(logits, temperature))
    if row_mask is not None:
        entropy = np.where(as_numeric(row_mask, "row_mask") != 0, entropy, 0.0)
    return logps, entropy
