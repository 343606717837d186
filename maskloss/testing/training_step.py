r""":func:`check_training_step`: a user's whole training step against the full-batch oracle.

A step splits its batch into shards (micro-batches, data-parallel ranks, context-parallel
sequence shards, tensor-parallel vocabulary shards), computes one scalar per shard and
back-propagates it; the backend then sums the gradients (or averages them over the ranks,
as DDP and FSDP do). The result is right only if every shard's scalar carries the factor
:func:`maskloss.shard_scales` gives. :func:`check_training_step` hands the step the same
generated batch split many ways and compares the gradient the backend ends with, and the
loss the step logs, with :func:`maskloss.value_and_grad` of ``like`` on the whole batch.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import hypothesis
import numpy as np
from hypothesis import Verbosity, given, settings
from hypothesis import strategies as st

from maskloss import registry
from maskloss.gradients import value_and_grad
from maskloss.sharding import GRAD_REDUCTIONS, Shard, ShardLayout, shard_scales
from maskloss.strategies import PaddedBatch, padded_batches
from maskloss.testing._search import isolated_search
from maskloss.testing.adapters import _torch_to_numpy, torch_adapter
from maskloss.testing.batches import _describe_batch
from maskloss.testing.check import _QUIET_CHECKS
from maskloss.testing.setup import check_options_apply, kind_of
from maskloss.testing.tolerances import TOLERANCES, _check_tolerance, _dtype_name

__all__ = ["PARALLELISMS", "StepResult", "TrainingShard", "TrainingStepCheckError", "check_training_step", "run_step",
           "step_splits"]

#: The ways of splitting a step that :func:`check_training_step` can try.
PARALLELISMS: tuple[str, ...] = ("accumulation", "data", "context", "tensor")
#: Batch shapes ``(B, T)`` drawn: B splits over 2 ranks, T into 2 contiguous or 4 zigzag chunks.
_SHAPES = ((2, 4), (4, 4), (2, 8), (4, 8))
_MAX_EXAMPLES = 1000


class TrainingStepCheckError(AssertionError):
    """A training step whose gradient or logged loss is not the full batch's."""


@dataclass(frozen=True)
class TrainingShard:
    r"""What one shard of the step holds, and where it sits.

    Attributes
    ----------
    y_true, y_pred, mask, sample_weight
        The shard's part of the batch: rows ``rows``, time steps of ``time_range``, classes
        of ``vocab_range`` (``y_pred`` only; sparse labels stay global class ids). With
        ``adapter=torch_adapter`` torch tensors, ``y_pred`` a leaf that requires grad.
    rank : int
        The process (data-parallel x context-parallel rank; vocabulary shards of one token share it).
    micro_batch : int
        The accumulation step on that rank.
    time_range : tuple of (start, stop)
        The time steps held: one range, or two under zigzag context parallelism.
    vocab_range : (start, stop) or None
        The classes held (tensor parallelism), None for all.
    rows : tuple of int
        The batch rows held.
    vocab_size : int
        The full number of classes (features), whatever the shard holds.
    """

    y_true: Any
    y_pred: Any
    mask: Any
    sample_weight: Any
    rank: int
    micro_batch: int
    time_range: tuple[tuple[int, int], ...]
    vocab_range: tuple[int, int] | None
    rows: tuple[int, ...]
    vocab_size: int


@dataclass(frozen=True)
class _Split:
    name: str
    layout: ShardLayout


def _vocab_split(layout: ShardLayout, classes: int) -> ShardLayout:
    cut = classes // 2
    shards = tuple(
        Shard(s.rows, s.time_ranges, rank=s.rank, micro_batch=s.micro_batch, vocab_range=v)
        for s in layout.shards
        for v in ((0, cut), (cut, classes))
    )
    return ShardLayout(layout.batch, layout.length, shards)


def step_splits(batch: int, length: int, classes: int, parallel: Sequence[str] = PARALLELISMS) -> list[_Split]:
    r"""The splits tried on a ``(batch, length)`` batch, fewest shards first.

    Each parallelism alone, then all of them at once: uneven micro-batches with an empty one
    (``[1, 0, n - 1]`` rows), 2 data-parallel ranks, context parallelism 2 (contiguous and
    zigzag), 2 vocabulary shards.

    >>> [(s.name, len(s.layout.shards)) for s in step_splits(4, 4, 3)][:3]
    [('one shard', 1), ('2 data-parallel ranks', 2), ('context-parallel 2, contiguous', 2)]
    """

    def micro(rows: int) -> list[int]:
        return [1, 0, rows - 1] if rows >= 2 else [0, rows]

    on = set(parallel)
    found = [_Split("one shard", ShardLayout.split(batch, length))]
    if "accumulation" in on:
        sizes = micro(batch)
        found.append(_Split(f"micro-batches of {sizes} rows", ShardLayout.split(batch, length, micro_batches=sizes)))
    if "data" in on:
        found.append(_Split("2 data-parallel ranks", ShardLayout.split(batch, length, ranks=2)))
    if "context" in on:
        for zigzag in (False, True):
            name = f"context-parallel 2, {'zigzag' if zigzag else 'contiguous'}"
            found.append(_Split(name, ShardLayout.split(batch, length, context_parallel=2, zigzag=zigzag)))
    if "tensor" in on:
        found.append(_Split("2 vocabulary shards", _vocab_split(ShardLayout.split(batch, length), classes)))
    if len(on) > 1:
        ranks = 2 if "data" in on else 1
        layout = ShardLayout.split(
            batch, length, ranks=ranks, micro_batches=micro(batch // ranks) if "accumulation" in on else None,
            context_parallel=2 if "context" in on else 1, zigzag="context" in on,
        )
        if "tensor" in on:
            layout = _vocab_split(layout, classes)
        found.append(_Split(f"all at once ({', '.join(p for p in PARALLELISMS if p in on)})", layout))
    return sorted(found, key=lambda s: len(s.layout.shards))


# ---- the shards the step sees -------------------------------------------------------------------


def _weight_of(b: PaddedBatch) -> np.ndarray[Any, Any]:
    w = b.sample_weight
    if w is None:
        return np.ones(b.mask.shape)
    return np.broadcast_to(w[:, None] if w.ndim == 1 else w, b.mask.shape).astype(np.float64)


def _pieces(b: PaddedBatch, s: Shard) -> tuple[Any, ...]:
    y_true, y_pred = s.take(b.y_true), s.take(b.y_pred)
    if s.vocab_range is not None:
        y_pred = y_pred[..., s.vocab_range[0]:s.vocab_range[1]]
        if b.kind == "dense":
            y_true = y_true[..., s.vocab_range[0]:s.vocab_range[1]]
    weight = None
    if b.sample_weight is not None:
        w = b.sample_weight
        weight = w[np.asarray(s.rows, dtype=np.intp)] if w.ndim == 1 else s.take(w)
    return np.array(y_true), np.array(y_pred), np.array(s.take(b.mask)), weight


def _shards(b: PaddedBatch, layout: ShardLayout, torch: bool) -> list[TrainingShard]:
    out = []
    for s in layout.shards:
        y_true, y_pred, mask, weight = _pieces(b, s)
        if torch:
            import torch as t

            y_true, mask = t.from_numpy(y_true), t.from_numpy(mask)
            y_pred = t.from_numpy(y_pred).requires_grad_(True)
            weight = None if weight is None else t.from_numpy(np.array(weight))
        out.append(TrainingShard(y_true, y_pred, mask, weight, s.rank, s.micro_batch, s.time_ranges,
                                 s.vocab_range, s.rows, int(b.y_pred.shape[-1])))
    return out


# ---- what the step returned ----------------------------------------------------------------------


def _is_scalar(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, numbers.Real):
        return True
    shape = getattr(x, "shape", None)
    return shape is not None and tuple(shape) == ()


def _scalar(x: Any, what: str) -> float:
    if not _is_scalar(x):
        shape = getattr(x, "shape", None)
        raise TypeError(
            f"{what} must be a scalar (the loss that shard back-propagates), got "
            f"{type(x).__name__}{'' if shape is None else f' of shape {tuple(shape)}'}"
        )
    return float(_torch_to_numpy(x)) if hasattr(x, "detach") else float(x)


def _parse(result: Any, shards: list[TrainingShard], name: str) -> tuple[list[Any], Any]:
    logged = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], (list, tuple)):
        result, logged = result
    if not isinstance(result, (list, tuple)):
        raise TypeError(
            f"step must return a list with one loss per shard (or (losses, logged_loss)), got "
            f"{type(result).__name__} for the split {name!r}"
        )
    if len(result) != len(shards):
        raise ValueError(
            f"step returned {len(result)} shard losses for the {len(shards)} shards of the split {name!r}; "
            "it must return one per shard, in the order given (0 for a shard with nothing to add)"
        )
    if logged is not None:
        logged = _scalar(logged, "the logged loss step returns")
    return list(result), logged


def _gradient(
    losses: list[Any], shards: list[TrainingShard], b: PaddedBatch, layout: ShardLayout, torch: bool
) -> tuple[list[float], np.ndarray[Any, Any] | None]:
    """Every shard's scalar, and the sum of their gradients placed in the batch (None: none given)."""
    total = np.zeros(b.y_pred.shape)
    values, have_grad = [], False
    for i, (loss, shard, where) in enumerate(zip(losses, shards, layout.shards, strict=True)):
        grad: Any = None
        if not torch and isinstance(loss, tuple):
            if len(loss) != 2:
                raise TypeError(f"shard {i}'s result must be a scalar or a (loss, gradient) pair, "
                                f"got {len(loss)} items")
            loss, grad = loss
        values.append(_scalar(loss, f"the loss step returns for shard {i}"))
        if torch and getattr(loss, "requires_grad", False):
            import torch as t

            (grad,) = t.autograd.grad(loss, shard.y_pred, retain_graph=True, allow_unused=True)
        if grad is None:
            continue
        have_grad = True
        g = np.asarray(_torch_to_numpy(grad) if hasattr(grad, "detach") else grad, dtype=np.float64)
        if g.shape != tuple(shard.y_pred.shape):
            raise ValueError(
                f"the gradient of shard {i} has shape {g.shape}, but its y_pred has shape {tuple(shard.y_pred.shape)}"
            )
        v = slice(None) if where.vocab_range is None else slice(*where.vocab_range)
        ix = np.ix_(np.asarray(where.rows, dtype=np.intp), where.time_index)
        part = total[ix]
        part[..., v] += g
        total[ix] = part
    return values, total if have_grad else None


@dataclass(frozen=True)
class StepResult:
    """What :func:`run_step` returns: the shards' scalars, the backend's gradient (None: none), the logged loss."""

    values: list[float]
    grad: np.ndarray[Any, Any] | None
    logged: float | None


def _run(step: Callable[..., Any], b: PaddedBatch, layout: ShardLayout, name: str, grad_reduction: str,
         torch: bool) -> StepResult:
    shards = _shards(b, layout, torch)
    losses, logged = _parse(step(shards), shards, name)
    values, grad = _gradient(losses, shards, b, layout, torch)
    if grad is not None and grad_reduction == "mean":
        grad = grad / layout.ranks
    return StepResult(values, grad, logged)


def run_step(
    step: Callable[[list[TrainingShard]], Any],
    y_true: Any,
    y_pred: Any,
    mask: Any,
    layout: ShardLayout,
    *,
    grad_reduction: str = "sum",
    sample_weight: Any = None,
    adapter: Callable[..., Any] | None = None,
) -> StepResult:
    r"""Run ``step`` once on a batch split as ``layout``: the shards' scalars and the backend's gradient.

    The building block of :func:`check_training_step`, for a fixed batch: the gradient is the
    sum over shards of each scalar's gradient with respect to its own ``y_pred``, divided
    by ``layout.ranks`` when ``grad_reduction="mean"``.

    Examples
    --------
    Megatron-LM#7513: one valid token, CP=2, each shard divided by its own count, DDP
    averaging over the 2 CP ranks: half the full-batch gradient.

    >>> import numpy as np, maskloss
    >>> from maskloss.conventions import recipes
    >>> from maskloss.testing.training_step import run_step
    >>> mask = maskloss.mask_from_lengths([1], 4)
    >>> labels, logits = np.zeros((1, 4), np.int64), np.zeros((1, 4, 3))
    >>> layout = maskloss.ShardLayout.split(1, 4, context_parallel=2)
    >>> recipe = recipes.megatron(calculate_per_token_loss=False)
    >>> got = run_step(recipe, labels, logits, mask, layout, grad_reduction=recipe.grad_reduction).grad
    >>> _, want = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
    ...     labels, logits, mask, from_logits=True)
    >>> round(float(got[0, 0, 0] / want[0, 0, 0]), 12)
    0.5
    """
    if not isinstance(layout, ShardLayout):
        raise TypeError(f"layout must be a maskloss.ShardLayout, got {type(layout).__name__}")
    if grad_reduction not in GRAD_REDUCTIONS:
        raise ValueError(f"grad_reduction must be 'sum' or 'mean'; got {grad_reduction!r}")
    if adapter is not None and adapter is not torch_adapter:
        raise ValueError(f"adapter must be maskloss.testing.torch_adapter or None, got {adapter!r}")
    y_pred = np.asarray(y_pred)
    m = np.asarray(mask, dtype=bool)
    if m.shape != (layout.batch, layout.length) or y_pred.shape[:2] != m.shape:
        raise ValueError(f"mask {m.shape} and y_pred {y_pred.shape} must match the layout's "
                         f"({layout.batch}, {layout.length}) batch")
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    labels = np.asarray(y_true)
    kind = "sparse" if labels.ndim == 2 else "dense"  # dense targets are cut along vocabulary shards too
    if labels.shape not in (m.shape, y_pred.shape):
        raise ValueError(f"y_true has shape {labels.shape}: sparse labels need the mask's {m.shape}, dense "
                         f"targets y_pred's {y_pred.shape}")
    classes = int(y_pred.shape[-1]) if y_pred.ndim == 3 else None
    if layout.vocab_size is not None and layout.vocab_size != classes:
        raise ValueError(f"inconsistent class counts: the layout's vocabulary shards tile {layout.vocab_size} "
                         f"classes, but y_pred has {classes}")
    b = PaddedBatch(labels, y_pred, m, m.sum(axis=1), w, kind, "right")
    return _run(step, b, layout, "the layout given", grad_reduction, adapter is torch_adapter)


# ---- the check ------------------------------------------------------------------------------------


@dataclass
class _Truth:
    value: float
    grad: np.ndarray[Any, Any]
    per_token: np.ndarray[Any, Any]  # w * loss at valid steps, 0 elsewhere
    valid: np.ndarray[Any, Any]


def _truth(like: Callable[..., Any], b: PaddedBatch, options: dict[str, Any]) -> _Truth:
    value, grad = value_and_grad(like)(b.y_true, b.y_pred, b.mask, sample_weight=b.sample_weight, **options)
    plain = {k: v for k, v in options.items() if k != "reduction"}
    per = np.asarray(like(b.y_true, b.y_pred, b.mask, reduction="none", **plain), dtype=np.float64)
    valid = b.mask.copy()
    if options.get("ignore_index") is not None:
        valid &= b.y_true != options["ignore_index"]
    return _Truth(float(value), np.asarray(grad), np.where(valid, _weight_of(b) * per, 0.0), valid)


def _fmt_range(ranges: tuple[tuple[int, int], ...]) -> str:
    return "+".join(f"{a}:{c}" for a, c in ranges)


def _scales_report(
    split: _Split, b: PaddedBatch, truth: _Truth, values: list[float], reduction: str, grad_reduction: str,
    has_class_weight: bool,
) -> list[str]:
    layout = split.layout
    if has_class_weight or reduction == "none":
        return ["  (per-shard scales not shown: class_weight changes the denominator shard_scales assumes)"]
    w = None if b.sample_weight is None else b.sample_weight
    try:
        scales = shard_scales(truth.valid, layout, reduction=reduction,  # type: ignore[arg-type]
                              grad_reduction=grad_reduction, sample_weight=w)
    except ValueError:
        return []
    lines = []
    for i, (s, factor, got) in enumerate(zip(layout.shards, scales.factors, values, strict=True)):
        per_row = s.take(truth.per_token).sum(axis=1)
        local_sum = float(per_row.sum())
        needed = float((factor * per_row).sum())
        where = (f"  shard {i} (rank {s.rank}, micro-batch {s.micro_batch}, rows {list(s.rows)}, "
                 f"time {_fmt_range(s.time_ranges)}"
                 + (f", classes {s.vocab_range[0]}:{s.vocab_range[1]}" if s.vocab_range else "") + ")")
        if local_sum == 0.0:
            lines.append(f"{where}: returned {got:.6g}, needed {needed:.6g} (its weighted sum is 0)")
        else:
            lines.append(f"{where}: scale used {got / local_sum:.6g} x its sum, needed {needed / local_sum:.6g}")
    return lines


def _token_report(grad: np.ndarray[Any, Any], truth: _Truth, rtol: float, atol: float) -> list[str]:
    expected = truth.grad
    flat_e = expected.reshape(expected.shape[:2] + (-1,))
    flat_g = grad.reshape(flat_e.shape)
    norm = (flat_e**2).sum(-1)
    ratio = np.where(norm > 0, (flat_g * flat_e).sum(-1) / np.where(norm > 0, norm, 1.0), 1.0)
    bound = atol + rtol * float(np.abs(expected).max(initial=0.0))
    off = np.abs(flat_g - flat_e).max(-1) > bound
    lines = []
    for label, pick in (("over-weighted", off & truth.valid & (ratio > 1)),
                        ("under-weighted", off & truth.valid & (ratio <= 1)),
                        ("padded but with a gradient", off & ~truth.valid)):
        spots = [tuple(int(i) for i in p) for p in np.argwhere(pick)]
        if spots:
            shown = ", ".join(f"{p} x{ratio[p]:.4g}" if label != "padded but with a gradient" else str(p)
                              for p in spots[:8])
            more = f" and {len(spots) - 8} more" if len(spots) > 8 else ""
            lines.append(f"  {label} tokens (b, t){' x weight got/needed' if 'weighted' in label else ''}: "
                         f"{shown}{more}")
    return lines


def check_training_step(
    step: Callable[[list[TrainingShard]], Any],
    like: Callable[..., Any],
    *,
    grad_reduction: str = "sum",
    adapter: Callable[..., Any] | None = None,
    parallel: Sequence[str] = ("accumulation", "data", "context"),
    weights: bool = False,
    max_examples: int = 25,
    max_classes: int = 5,
    dtype: Any = "float64",
    rtol: float | None = None,
    atol: float | None = None,
    seed: int | None = None,
    **options: Any,
) -> None:
    r"""Check that a training step ends with the full-batch gradient however its batch is split.

    The backend's gradient of one optimizer step is

    .. math::
        G = \frac{1}{R^{[\text{mean}]}} \sum_{s}
            \frac{\partial\,\text{loss}_s}{\partial\,\text{y\_pred}_s},

    (``grad_reduction="mean"`` divides by the number of ranks :math:`R`, as DDP and FSDP do),
    and it must equal :math:`\partial\mathcal{L}/\partial\,\text{y\_pred}` of
    ``like(y_true, y_pred, mask, **options)`` on the whole batch. Every generated batch
    is split each way of :func:`step_splits` (fewest shards first): uneven micro-batches
    with an empty one, 2 data-parallel ranks, context parallelism 2 contiguous and zigzag,
    2 vocabulary shards (``parallel`` includes ``"tensor"``), and all at once.

    Parameters
    ----------
    step : callable
        ``step(shards) -> losses`` or ``(losses, logged_loss)``: ``shards`` is a list of
        :class:`TrainingShard`; ``losses`` one scalar per shard, in order, the loss the
        loop back-propagates on that shard (a torch tensor with ``adapter=torch_adapter``;
        with NumPy a ``(loss, gradient)`` pair, the gradient with respect to the shard's
        ``y_pred``). A vocabulary shard's gradient is taken with respect to its own
        logits only, as on a tensor-parallel rank. ``logged_loss``, if given, must be
        the full-batch loss.
    like : callable
        The maskloss loss that defines the truth (:func:`maskloss.sparse_categorical_crossentropy`, ...);
        ``**options`` are its keyword arguments (``reduction``, ``from_logits``, ...).
    grad_reduction : {"sum", "mean"}
        How the backend combines the shards' gradients over ranks.
    adapter : maskloss.testing.torch_adapter or None
        ``torch_adapter``: shards hold torch tensors and gradients come from autograd.
    parallel : sequence of str
        Which of :data:`PARALLELISMS` to split by; ``"tensor"`` needs a step that merges
        the vocabulary shards of a token (sparse or dense targets).
    weights : bool
        Draw sample weights (shape ``(B,)`` or ``(B, T)``) too.
    max_examples : int
        Batches hypothesis generates.
    max_classes : int
        Largest number of classes (features) drawn, >= 2.
    dtype, rtol, atol
        The dtype of ``y_pred`` and the tolerances (default: :data:`maskloss.testing.TOLERANCES`).
    seed : int, optional
        Hypothesis seed; default: derandomized.

    Raises
    ------
    TrainingStepCheckError
        On the smallest failing batch, at the first split (fewest shards) whose gradient or
        logged loss is off: the split, each shard's scale against the one
        :func:`maskloss.shard_scales` says it needs, and the over- and under-weighted tokens.
    TypeError, ValueError
        At once for a bad argument; from the step for a wrong number of shard losses or a
        loss that is not a scalar.

    Examples
    --------
    >>> torch = __import__("pytest").importorskip("torch")
    >>> import maskloss
    >>> from maskloss.testing import check_training_step, torch_adapter
    >>> def step(shards):              # torchtitan's rule: each shard's sum / global valid tokens
    ...     tokens = sum(int(s.mask.sum()) for s in shards)
    ...     return [torch.nn.functional.cross_entropy(s.y_pred[s.mask], s.y_true[s.mask], reduction="sum")
    ...             / max(tokens, 1) for s in shards]
    >>> check_training_step(step, maskloss.sparse_categorical_crossentropy, adapter=torch_adapter,
    ...                     from_logits=True, max_examples=5)
    >>> def buggy(shards):             # transformers#34191: the mean of the micro-batch means
    ...     return [torch.nn.functional.cross_entropy(s.y_pred[s.mask], s.y_true[s.mask])
    ...             / len(shards) if s.mask.any() else s.y_pred.sum() * 0 for s in shards]
    >>> check_training_step(buggy, maskloss.sparse_categorical_crossentropy, adapter=torch_adapter,
    ...                     from_logits=True, max_examples=5)   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    maskloss.testing.training_step.TrainingStepCheckError: the step's gradient is not the full-batch gradient ...
    """
    if not callable(step):
        raise TypeError(f"step must be callable, got {type(step).__name__}")
    kind = kind_of(like)
    if kind is None:
        raise ValueError(f"like must be a maskloss loss ({', '.join(registry.names(kind=True))}), got {like!r}")
    check_options_apply(like, options)
    reduction = options.get("reduction", "token_mean")
    if reduction == "none":
        raise ValueError("reduction='none' has no gradient to check; use a scalar reduction")
    if grad_reduction not in GRAD_REDUCTIONS:
        raise ValueError(f"grad_reduction must be 'sum' or 'mean'; got {grad_reduction!r}")
    if adapter is not None and adapter is not torch_adapter:
        raise ValueError(f"adapter must be maskloss.testing.torch_adapter or None, got {adapter!r}")
    parallel = tuple([parallel] if isinstance(parallel, str) else parallel)
    unknown = [p for p in parallel if p not in PARALLELISMS]
    if unknown:
        raise ValueError(f"parallel must hold names from {PARALLELISMS}, got {unknown[0]!r}")
    if "tensor" in parallel and kind not in ("sparse", "dense"):
        raise ValueError(f"parallel='tensor' splits classes, but {like.__name__} has no class axis (kind={kind!r})")
    fewest = 4 if "tensor" in parallel else 2
    for name, value, low in (("max_examples", max_examples, 1), ("max_classes", max_classes, fewest)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _MAX_EXAMPLES:
            raise ValueError(f"{name} must be an integer in [{low}, {_MAX_EXAMPLES}], got {value!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if not isinstance(weights, bool):
        raise TypeError(f"weights must be True or False, got {weights!r}")
    dtype_name = _dtype_name(dtype)
    if dtype_name not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32 for a training-step check, got {dtype!r}")
    default_rtol, default_atol = TOLERANCES[dtype_name]
    given_rtol, given_atol = _check_tolerance(rtol, "rtol"), _check_tolerance(atol, "atol")
    rt = default_rtol if given_rtol is None else given_rtol
    at = default_atol if given_atol is None else given_atol
    torch = adapter is torch_adapter
    ignore_index = options.get("ignore_index")
    like_call = f"maskloss.{like.__name__}({', '.join(f'{k}={v!r}' for k, v in options.items())})"

    def strategy(shape: tuple[int, int]) -> st.SearchStrategy[PaddedBatch]:
        low = 4 if "tensor" in parallel else None  # each of the 2 vocabulary shards holds >= 2 classes
        return padded_batches(kind, min_batch=shape[0], max_batch=shape[0], min_steps=shape[1], max_steps=shape[1],
                              weights=weights, dtype=dtype_name, ignore_index=ignore_index,
                              from_logits=bool(options.get("from_logits", False)),
                              min_features=low, max_features=max_classes)

    def one_batch(b: PaddedBatch) -> None:
        with np.errstate(all="ignore"):
            truth = _truth(like, b, options)
        if not np.isfinite(truth.value):
            return  # no valid step: nothing to average, no gradient to compare
        passed: list[str] = []
        for split in step_splits(b.mask.shape[0], b.mask.shape[1], int(b.y_pred.shape[-1]), parallel):
            result = _run(step, b, split.layout, split.name, grad_reduction, torch)
            values, grad, logged = result.values, result.grad, result.logged
            problem = None
            if grad is not None:
                err = np.abs(grad - truth.grad)
                bound = at + rt * float(np.abs(truth.grad).max(initial=0.0))
                if float(err.max(initial=0.0)) > bound or not np.all(np.isfinite(grad)):
                    where = tuple(int(i) for i in np.unravel_index(int(np.nanargmax(err)), err.shape))
                    problem = (f"the step's gradient is not the full-batch gradient of {like_call} when split as "
                               f"{split.name}: max |error| {float(np.nanmax(err)):.6g} > {bound:.3g} at y_pred{where}")
            if problem is None and logged is not None and not abs(logged - truth.value) <= at + rt * abs(truth.value):
                problem = (f"the step logs {logged:.10g} when split as {split.name}, but the full-batch loss of "
                           f"{like_call} is {truth.value:.10g}")
            if problem is not None:
                first = (f"it passes {'; '.join(passed)}, so it changes when the same batch is split differently"
                         if passed else "it fails on the batch in one piece already: the step computes another loss")
                lines = [problem, f"({first}; grad_reduction={grad_reduction!r}, {split.layout.ranks} rank(s))"]
                lines += _scales_report(split, b, truth, values, reduction, grad_reduction,
                                        options.get("class_weight") is not None)
                if grad is not None:
                    lines += _token_report(grad, truth, rt, at)
                lines += ["the smallest failing batch:", _describe_batch(b)]
                raise TrainingStepCheckError("\n".join(lines))
            passed.append(split.name)

    test = settings(
        max_examples=max_examples, deadline=None, database=None, derandomize=seed is None,
        report_multiple_bugs=False, verbosity=Verbosity.quiet, suppress_health_check=_QUIET_CHECKS,
    )(given(st.sampled_from(_SHAPES).flatmap(strategy))(one_batch))
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    with isolated_search():  # the same batches whatever the caller imported
        test()
