r"""Training-step recipes of the frameworks, as step functions for :func:`~maskloss.testing.check_training_step`.

A framework's training loop decides the factor each shard's summed token loss is
multiplied by before the backward pass, and whether the backend then sums or averages the
ranks' gradients. Each recipe here re-creates that rule in NumPy from the framework's
source, on the per-token cross-entropy of the shard's logits (from the per-vocabulary-shard
partial sums of :mod:`maskloss.vocab_parallel`, so vocabulary shards work too), and
returns for every shard ``(loss, gradient)``: exactly what ``check_training_step`` takes
with NumPy shards. Pass ``recipe.grad_reduction`` and ``**recipe.like_options`` on:

>>> import maskloss
>>> from maskloss.conventions import recipes
>>> recipe = recipes.torchtitan()
>>> recipe.grad_reduction, recipe.like_options
('sum', {'reduction': 'token_mean', 'from_logits': True})

(``check_training_step(recipe, maskloss.sparse_categorical_crossentropy,
grad_reduction=recipe.grad_reduction, **recipe.like_options)`` then passes.) The factors,
with :math:`S_s` the shard's sum of token losses, :math:`N` the valid tokens of the whole
step, :math:`R` the ranks, :math:`P` the data-parallel ranks, ``GA`` the micro-batches per rank:

* ``hf_trainer()`` (transformers 5.24): :math:`S_s / N \cdot R` (``num_items_in_batch``
  gathered over the ranks, the loss times ``num_processes``); ranks averaged.
* ``hf_trainer(average_tokens_across_devices=False)``: :math:`S_s / N_r`, :math:`N_r` the
  rank's own tokens (transformers#34373 when ranks differ); ranks averaged.
* ``hf_trainer(version="4.45")``: each micro-batch's own mean over ``GA``
  (transformers#34191); ranks averaged.
* ``torchtitan()``: :math:`S_s / N` (``global_valid_tokens``); ranks summed.
* ``megatron()``: :math:`S_s`, the gradients times :math:`1/N` after the all-reduce
  (``calculate_per_token_loss``); ranks summed.
* ``megatron(calculate_per_token_loss=False)``: :math:`S_s / n_s / GA`, :math:`n_s` the
  shard's own count (Megatron-LM#7513: CP=2 and one valid token, half the gradient);
  ``cp_fix=True``: :math:`S_s / n_{cp} \cdot c / GA`; ranks averaged.
* ``verl(loss_agg_mode)`` (0.9.1): ``agg_loss`` with the global ``batch_num_tokens`` or
  ``global_batch_size`` and ``dp_size``; ranks averaged.
* ``hf_trainer(cp_counted_as_dp=True)``: :math:`S_s / (c N) \cdot R`, every token counted by
  its ``c`` context-parallel ranks (transformers#39648); ranks averaged.
* ``verl(dp_size=False)``: the global counts without the ``dp_size`` factor, :math:`1/P` of
  the gradient; ranks averaged.
* ``nemo_rl()``: each micro-batch's own mean over all ``GA`` micro-batches, empty ones
  included (NVIDIA-NeMo/RL#212); ranks averaged.
* ``trl(loss_type)`` (1.16): ``GRPOTrainer._compute_loss``'s normalizers; ranks averaged.

``megatron(label_smoothing=eps)`` smooths as megatron-core 0.16.1's
``vocab_parallel_cross_entropy`` does: each vocabulary shard of :math:`K_s` classes uses
:math:`K_s` and the mean of *its own* log-probabilities (Megatron-LM#737, open), right
only without tensor parallelism; ``global_vocab=True`` is the fix. ``eps`` is maskloss's
(torch's) label smoothing; megatron's own argument is :math:`\alpha = \varepsilon (V-1)/V`,
which its :math:`\alpha V/(V-1)` turns back into :math:`\varepsilon`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskloss._types import FloatArray
from maskloss.conventions import verl as _verl
from maskloss.vocab_parallel import merge_vocab_partials, merged_cross_entropy, vocab_partials, vocab_shard_grad

__all__ = ["TRL_LOSS_TYPES", "VERL_MODES", "Recipe", "hf_trainer", "megatron", "nemo_rl", "torchtitan", "trl",
           "verl"]

#: ``loss_type`` values :func:`trl` re-creates.
TRL_LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo")
#: ``loss_agg_mode`` values :func:`verl` re-creates (verl 0.9.1).
#: (``"seq-mean-token-sum"``, a mean of sequence sums over the non-empty sequences, is no maskloss reduction.)
VERL_MODES: tuple[str, ...] = ("token-mean", "token-sum", "seq-mean-token-mean")


@dataclass(frozen=True)
class _Topology:
    """Where the shards sit, as a loop sees it through its process groups."""

    shards: Sequence[Any]
    valid: list[np.ndarray[Any, Any]]  # per shard (rows, time): mask and label not ignored

    @property
    def ranks(self) -> list[int]:
        return sorted({s.rank for s in self.shards})

    def key(self, i: int) -> tuple[Any, ...]:
        s = self.shards[i]
        return (s.rows, s.time_range, s.rank, s.micro_batch)

    def unique(self) -> list[int]:
        """One shard per token group: vocabulary shards of the same tokens count once."""
        seen: dict[tuple[Any, ...], int] = {}
        for i in range(len(self.shards)):
            seen.setdefault(self.key(i), i)
        return list(seen.values())

    def tokens(self, pick: Callable[[Any], bool] = lambda s: True) -> float:
        return float(sum(self.valid[i].sum() for i in self.unique() if pick(self.shards[i])))

    def cp_size(self, i: int) -> int:
        s = self.shards[i]
        return len({t.time_range for t in self.shards if t.rows == s.rows and t.micro_batch == s.micro_batch})

    def micro_batches(self, rank: int) -> int:
        return len(_window(self, rank))


Weights = Callable[[_Topology], list[FloatArray]]


def _window(topo: _Topology, rank: int) -> set[int]:
    """The micro-batches of one rank's accumulation window."""
    return {s.micro_batch for s in topo.shards if s.rank == rank}


def _token_terms(shards: Sequence[Any], eps: float, local_smoothing: bool) -> tuple[list[Any], list[Any]]:
    """Per shard: the token losses (rows, time) at valid steps (0 elsewhere) and their logit gradients."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, s in enumerate(shards):
        groups.setdefault((s.rows, s.time_range, s.rank, s.micro_batch), []).append(i)
    losses: list[Any] = [None] * len(shards)
    grads: list[Any] = [None] * len(shards)
    for members in groups.values():
        first = shards[members[0]]
        valid = np.asarray(first.mask, dtype=bool)
        labels = np.asarray(first.y_true)[valid]
        size = int(first.vocab_size)
        logits = {i: np.asarray(shards[i].y_pred, dtype=np.float64)[valid] for i in members}
        ranges = {i: shards[i].vocab_range or (0, size) for i in members}
        merged = merge_vocab_partials([vocab_partials(logits[i], labels, ranges[i]) for i in members])
        for i in members:
            a, b = ranges[i]
            if local_smoothing and eps:  # megatron-core: K_s and the mean of this shard's log-probs
                k = b - a
                s_local = eps * (size - 1) / size * k / (k - 1)
                log_p = logits[i] - merged.lse[:, None]
                token = (1 - s_local) * (merged.lse - merged.target_logit) - s_local * log_p.mean(axis=1)
                classes = np.arange(a, b)[None, :]
                g = np.exp(log_p) - (1 - s_local) * (classes == labels[:, None]) - s_local / k
            else:
                token = merged_cross_entropy(merged, label_smoothing=eps)
                g = vocab_shard_grad(logits[i], labels, (a, b), merged, label_smoothing=eps)
            full_loss = np.zeros(valid.shape)
            full_loss[valid] = token
            full_grad = np.zeros(valid.shape + (b - a,))
            full_grad[valid] = g
            losses[i], grads[i] = full_loss, full_grad
    return losses, grads


@dataclass(frozen=True)
class Recipe:
    r"""A framework's training step: call it on ``check_training_step``'s NumPy shards.

    Attributes
    ----------
    name : str
        The framework, version and options re-created.
    grad_reduction : {"sum", "mean"}
        How that framework's backend combines the ranks' gradients.
    like_options : dict
        The options of :func:`maskloss.sparse_categorical_crossentropy` the recipe means to compute.
    source : str
        Where the rule is written in the framework.
    """

    name: str
    grad_reduction: str
    like_options: dict[str, Any]
    source: str
    weights: Weights = field(repr=False)
    label_smoothing: float = 0.0
    local_smoothing: bool = False
    logged: Callable[[_Topology, list[float]], float] | None = field(default=None, repr=False)

    def __call__(self, shards: Sequence[Any]) -> Any:
        losses, grads = _token_terms(shards, self.label_smoothing, self.local_smoothing)
        topo = _Topology(shards, [np.asarray(s.mask, dtype=bool) for s in shards])
        out = []
        for w, loss, grad in zip(self.weights(topo), losses, grads, strict=True):
            out.append((float((w * loss).sum()), w[..., None] * grad))
        if self.logged is None:
            return out
        return out, self.logged(topo, [v for v, _ in out])


def _options(reduction: str = "token_mean", eps: float = 0.0) -> dict[str, Any]:
    return {"reduction": reduction, "from_logits": True, **({"label_smoothing": eps} if eps else {})}


def _each(topo: _Topology, factor: Callable[[int], float]) -> list[FloatArray]:
    return [np.full(v.shape, factor(i)) for i, v in enumerate(topo.valid)]


def _per_rank_mean(topo: _Topology, values: list[float]) -> float:
    """What a loop logs: the sum over one rank's shards, averaged over the ranks."""
    unique = set(topo.unique())
    per_rank = [sum(v for i, v in enumerate(values) if i in unique and topo.shards[i].rank == r) for r in topo.ranks]
    return float(np.mean(per_rank))


def hf_trainer(
    *, average_tokens_across_devices: bool = True, version: str = "5.24", cp_counted_as_dp: bool = False
) -> Recipe:
    r"""The HF ``Trainer``'s step: ``compute_loss`` with ``num_items_in_batch``, DDP averaging.

    ``version="5.24"`` (``transformers/trainer.py``, ``_get_num_items_in_batch`` and
    ``compute_loss``): the step's valid labels are counted over the accumulation window,
    gathered over all ranks when ``average_tokens_across_devices`` (the default) and divided
    by the ranks that share a batch (``tp * cp * sp``); the model divides its summed loss by
    that count and ``compute_loss`` multiplies by ``num_processes // tp_size``. Without
    ``average_tokens_across_devices`` each rank divides by its own count (transformers#34373).
    ``version="4.45"``: every micro-batch's own token mean divided by the accumulation steps
    (transformers#34191, fixed in 4.46). ``cp_counted_as_dp=True`` is transformers#39648
    (pull request #39674): the count gathered over every process without dividing by the
    context-parallel ranks that share a batch. Each CP rank counts the labels of its whole
    sequences (the Trainer counts before the batch is sharded), so every token is counted
    ``cp`` times while the loss is still multiplied by all the processes: under CP the
    gradient and the logged loss are ``1/cp`` of the truth.
    """
    if version not in ("5.24", "4.45"):
        raise ValueError(f"version must be '5.24' or '4.45', got {version!r}")

    def weights(topo: _Topology) -> list[FloatArray]:
        ranks = len(topo.ranks)
        if version == "4.45":
            def old(i: int) -> float:
                s = topo.shards[i]
                count = topo.tokens(lambda t: t.rank == s.rank and t.micro_batch == s.micro_batch)
                return 0.0 if count == 0 else 1.0 / count / topo.micro_batches(s.rank)
            return _each(topo, old)
        if average_tokens_across_devices:
            total = topo.tokens()
            if cp_counted_as_dp:  # every rank's whole sequences, summed over all ranks (transformers#39648)
                def whole(rank: int) -> float:
                    held = {r for t in topo.shards if t.rank == rank for r in t.rows}
                    return topo.tokens(lambda t: set(t.rows) <= held)
                total = float(sum(whole(rank) for rank in topo.ranks))
            return _each(topo, lambda i: 0.0 if total == 0 else ranks / total)

        def local(i: int) -> float:  # the rank's whole sequences, over the ranks sharing them (cp)
            held = {r for t in topo.shards if t.rank == topo.shards[i].rank for r in t.rows}
            count = topo.tokens(lambda t: set(t.rows) <= held) / topo.cp_size(i)
            return 0.0 if count == 0 else 1.0 / count
        return _each(topo, local)

    name = (f"transformers {version} Trainer" + ("" if average_tokens_across_devices else
                                                  " (average_tokens_across_devices=False)")
            + (" (context parallelism counted as data parallelism)" if cp_counted_as_dp else ""))
    return Recipe(name, "mean", _options(), "transformers/trainer.py: _get_num_items_in_batch, compute_loss",
                  weights, logged=_per_rank_mean)


def torchtitan() -> Recipe:
    r"""torchtitan's step: each micro-batch's summed loss over ``global_valid_tokens``, gradients summed.

    ``torchtitan/trainer.py`` divides the local loss sum by the valid tokens of the whole
    step (all micro-batches, all data- and context-parallel ranks) and
    ``torchtitan/distributed/fsdp.py`` calls ``disable_fsdp_gradient_division`` ("We handle
    gradient scaling ourselves in the training loop with global token count").
    """

    def weights(topo: _Topology) -> list[FloatArray]:
        total = topo.tokens()
        return _each(topo, lambda i: 0.0 if total == 0 else 1.0 / total)

    def logged(topo: _Topology, values: list[float]) -> float:
        return float(sum(values[i] for i in topo.unique()))

    return Recipe("torchtitan", "sum", _options(), "torchtitan/trainer.py, torchtitan/distributed/fsdp.py",
                  weights, logged=logged)


def megatron(
    *, calculate_per_token_loss: bool = True, cp_fix: bool = False, label_smoothing: float = 0.0,
    global_vocab: bool = False,
) -> Recipe:
    r"""Megatron-LM's step (``megatron/core/pipeline_parallel/schedules.py``, ``finalize_model_grads``).

    ``calculate_per_token_loss=True``: the loss function returns the local sum and count,
    the backward runs on the sum, DDP sums the gradients (``gradient_scaling_factor=1``) and
    ``finalize_model_grads`` scales them by one over the token count all-reduced over DP x CP.
    ``False`` with a three-value loss function: each shard's sum over *its own* count, over
    the number of micro-batches, gradients averaged over DP x CP (Megatron-LM#7513);
    ``cp_fix=True`` is that pull request: the count all-reduced over the CP group and the
    CP averaging compensated. Either way ``False`` is a mean of micro-batch means.
    """
    eps = float(label_smoothing)
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")

    def weights(topo: _Topology) -> list[FloatArray]:
        if calculate_per_token_loss:
            total = topo.tokens()
            return _each(topo, lambda i: 0.0 if total == 0 else 1.0 / total)

        def per_micro(i: int) -> float:
            s = topo.shards[i]
            if cp_fix:
                count = topo.tokens(lambda t: t.rows == s.rows and t.micro_batch == s.micro_batch) / topo.cp_size(i)
            else:
                count = float(topo.valid[i].sum())
            return 0.0 if count == 0 else 1.0 / count / topo.micro_batches(s.rank)
        return _each(topo, per_micro)

    name = (f"Megatron-LM (calculate_per_token_loss={calculate_per_token_loss}"
            + (", cp_fix" if cp_fix else "") + (f", label_smoothing={eps}" if eps else "") + ")")
    return Recipe(name, "sum" if calculate_per_token_loss else "mean", _options(eps=eps),
                  "megatron/core/pipeline_parallel/schedules.py, megatron/core/tensor_parallel/cross_entropy.py",
                  weights, label_smoothing=eps, local_smoothing=not global_vocab)


def verl(loss_agg_mode: str = "token-mean", *, global_counts: bool = True, dp_size: bool = True) -> Recipe:
    r"""verl 0.9.1's actor update: :func:`maskloss.conventions.verl.agg_loss` per micro-batch, FSDP averaging.

    ``batch_num_tokens`` (``"token-mean"``) and ``global_batch_size`` (sequence modes) are the
    mini-batch's valid tokens and non-empty sequences summed over the data-parallel group,
    ``dp_size`` the group's size (``verl/workers/actor/dp_actor.py``). ``global_counts=False``
    is the legacy FSDP actor of verl#5625: ``global_batch_info`` empty, so ``agg_loss`` falls
    back to the micro-batch's own counts (the fallback discussed in verl#7321), and each
    micro-batch's loss is scaled by its share of the rank's sequences (``loss_scale_factor``).
    ``dp_size=False`` passes the global counts but not ``dp_size`` (it defaults to 1), the
    factor verl#5366 made ``agg_loss`` insist on and Arctic-Platform pull request #119 found
    dropped: the ranks' average is then ``1/P`` of the gradient on ``P`` data-parallel ranks.
    Sequence shards (context parallelism) are out of scope: verl's sequence modes need whole
    sequences.
    """
    if loss_agg_mode not in VERL_MODES:
        raise ValueError(f"loss_agg_mode must be one of {VERL_MODES}, got {loss_agg_mode!r}")

    def weights(topo: _Topology) -> list[FloatArray]:
        dp = len(topo.ranks) if global_counts and dp_size else 1
        tokens = topo.tokens()
        nonempty = float(sum(int(v.any(axis=1).sum()) for i, v in enumerate(topo.valid) if i in topo.unique()))
        out = []
        for i, valid in enumerate(topo.valid):
            count = float(valid.sum()) if not global_counts else tokens
            rows = float(valid.any(axis=1).sum()) if not global_counts else nonempty
            share = 1.0
            if not global_counts:  # samples_i / total_samples of the rank (verl#5625)
                s = topo.shards[i]
                rank_rows = {r for t in topo.shards if t.rank == s.rank for r in t.rows}
                share = len(s.rows) / max(len(rank_rows), 1)
            w = np.zeros(valid.shape)
            for b, t in np.argwhere(valid):  # agg_loss is linear in loss_mat: unit losses read its weights
                unit = np.zeros(valid.shape)
                unit[b, t] = 1.0
                w[b, t] = _verl.agg_loss(unit, valid, loss_agg_mode, dp_size=dp, batch_num_tokens=count or 1.0,
                                         global_batch_size=rows or 1.0) * share
            out.append(w)
        return out

    reduction = {"token-mean": "token_mean", "token-sum": "sum"}.get(loss_agg_mode, "sequence_mean")
    extra = ("" if global_counts else ", local counts") + ("" if dp_size else ", without dp_size")
    return Recipe(f"verl 0.9.1 ({loss_agg_mode}{extra})", "mean", _options(reduction),
                  "verl/trainer/ppo/core_algos.py: agg_loss", weights)


def nemo_rl(*, valid_microbatches: bool = False) -> Recipe:
    r"""NeMo-RL's early HF policy worker (NVIDIA-NeMo/RL#212): each micro-batch's token mean over the micro-batches.

    ``nemo_reinforcer/models/policy/hf_policy.py`` divided every micro-batch's loss (its own
    token mean) by the number of micro-batches before the backward pass, FSDP averaging the
    ranks. A micro-batch with no valid token (a sample masked because it exceeds
    ``max_seq_length``) still counted: with one empty micro-batch among three equally full
    ones every token gets 2/3 of its weight. ``valid_microbatches=True`` is the fix #212
    proposes (divide by the micro-batches holding a valid token): exact only when those hold
    equally many tokens, so still a mean of micro-batch means.
    """

    def weights(topo: _Topology) -> list[FloatArray]:
        def factor(i: int) -> float:
            s = topo.shards[i]
            count = topo.tokens(lambda t: t.rank == s.rank and t.micro_batch == s.micro_batch)
            def held(m: int) -> float:
                return topo.tokens(lambda t: t.rank == s.rank and t.micro_batch == m)
            window = [m for m in _window(topo, s.rank) if not valid_microbatches or held(m) > 0]
            return 0.0 if count == 0 else 1.0 / count / len(window)
        return _each(topo, factor)

    name = "NeMo-RL HF policy (" + ("valid micro-batches" if valid_microbatches else "all micro-batches") + ")"
    return Recipe(name, "mean", _options(), "nemo_reinforcer/models/policy/hf_policy.py (NVIDIA-NeMo/RL#212)",
                  weights)


def trl(loss_type: str = "dapo", *, steps_per_generation: int | None = None,
        generation_tokens: float | None = None, window_rescale: bool = True) -> Recipe:
    r"""TRL 1.16's ``GRPOTrainer._compute_loss`` normalizers on a per-token loss, accelerate averaging.

    Per micro-batch (``GA`` micro-batches per rank, ``P`` ranks, ``B`` sequences in the
    micro-batch, ``L_b`` valid tokens, ``T`` = ``max_completion_length`` = the padded length):
    ``grpo``/``sapo`` :math:`\frac1B\sum_b S_b/\max(L_b,1)/GA`; ``bnpo`` :math:`S/\max(\sum L,1)/GA`;
    ``dr_grpo`` :math:`S/(B T)/GA`; ``dapo``/``cispo`` :math:`S / (\frac{\max(N,1)}{P}\cdot
    \frac{GA}{\text{steps\_per\_generation}})` with ``N`` = ``num_items_in_batch``, the valid
    tokens of the whole *generation* batch; ``luspo`` :math:`\frac1B\sum_b S_b / GA`.
    ``steps_per_generation`` defaults to ``GA`` and ``generation_tokens`` to this step's
    tokens times ``steps_per_generation / GA`` (the other optimizer steps of the generation
    batch as full as this one: only then is the step's token mean exact, otherwise TRL divides
    by the generation batch's average per window). ``window_rescale=False`` drops the
    :math:`GA/	ext{steps\_per\_generation}` factor, as TRL did before pull requests #5890 and
    #6024 (``steps_per_generation=4``, ``GA=2``: half the gradient).
    """
    if loss_type not in TRL_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {TRL_LOSS_TYPES}, got {loss_type!r}")

    def weights(topo: _Topology) -> list[FloatArray]:
        ranks = len(topo.ranks)
        out = []
        for i, valid in enumerate(topo.valid):
            s = topo.shards[i]
            ga = topo.micro_batches(s.rank)
            spg = ga if steps_per_generation is None else steps_per_generation
            rows = max(valid.shape[0], 1)
            lengths = valid.sum(axis=1, keepdims=True).astype(np.float64)
            if loss_type in ("grpo", "sapo"):
                w = np.broadcast_to(1.0 / np.maximum(lengths, 1.0) / rows / ga, valid.shape)
            elif loss_type == "bnpo":
                w = np.full(valid.shape, 1.0 / max(float(lengths.sum()), 1.0) / ga)
            elif loss_type == "dr_grpo":
                w = np.full(valid.shape, 1.0 / (rows * valid.shape[1]) / ga)
            elif loss_type == "luspo":
                w = np.full(valid.shape, 1.0 / rows / ga)
            else:
                n = topo.tokens() * spg / ga if generation_tokens is None else float(generation_tokens)
                window = ga / spg if window_rescale else 1.0
                w = np.full(valid.shape, 1.0 / (max(n, 1.0) / ranks * window))
            out.append(np.where(valid, w, 0.0))
        return out

    reduction = {"grpo": "sequence_mean", "sapo": "sequence_mean", "dr_grpo": "element_mean",
                 "luspo": "batch_mean"}.get(loss_type, "token_mean")
    return Recipe(f"TRL 1.16 GRPOTrainer (loss_type={loss_type!r})", "mean", _options(reduction),
                  "trl/trainer/grpo_trainer.py: GRPOTrainer._compute_loss", weights)
