r"""Where each shard of a training step sits, and the exact factor its ``"sum"`` needs: :func:`shard_scales`.

A training step splits a batch ``(B, T)`` into shards: micro-batches (gradient
accumulation), data-parallel ranks, context-parallel sequence shards (contiguous or
load-balanced "zigzag", where CP rank :math:`r` of :math:`c` holds time chunks :math:`r`
and :math:`2c-1-r`) and tensor-parallel vocabulary shards. Every scalar reduction is
linear in the per-sequence numerators, :math:`\mathcal{L} = \sum_b \lambda_b N_b`
(:meth:`maskloss.MaskedTotals.sequence_scale`), with :math:`\lambda_b` fixed by the
*full-batch* counts. So a shard whose local loss is the weighted ``"sum"``
:math:`\sum_{(b,t)\in s} w_{bt}\ell_{bt}` must be multiplied by :math:`\lambda_b` for
each of its rows; when the backend averages gradients over :math:`R` ranks (DDP, FSDP:
``grad_reduction="mean"``) by :math:`R\lambda_b`. Summed over shards, the losses and
gradients are the full-batch ones. A shard of the vocabulary does not change the factor:
the token's loss is merged from its vocabulary shards first.

>>> import maskloss
>>> mask = maskloss.mask_from_lengths([4, 1, 2, 3], 4)
>>> layout = maskloss.ShardLayout.split(4, 4, ranks=2, micro_batches=[1, 1], context_parallel=2)
>>> len(layout.shards)
8
>>> scales = maskloss.shard_scales(mask, layout, reduction="token_mean", grad_reduction="mean")
>>> layout.ranks                                   # 2 DP x 2 CP ranks average the gradient
4
>>> sorted({float(f[0]) for f in scales.factors})   # R / D = 4 / 10 for every shard
[0.4]
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_mask, check_sample_weight
from maskloss._types import Aggregation, FloatArray, ScalarReduction
from maskloss.reductions import GIVEN_COUNTS, SCALAR_MODES, MaskedTotals, count_below

__all__ = ["GRAD_REDUCTIONS", "SHARD_MODES", "Shard", "ShardLayout", "ShardScales", "shard_scales"]

#: Names accepted by :func:`shard_scales`'s ``grad_reduction``.
GRAD_REDUCTIONS: tuple[str, ...] = ("sum", "mean")
#: Names accepted by :func:`shard_scales`'s ``reduction``: the scalar rows of the table of
#: :mod:`maskloss.reductions` (the scalar reductions and the aggregation modes).
SHARD_MODES: tuple[str, ...] = SCALAR_MODES


def _index(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise TypeError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _range(value: object, name: str) -> tuple[int, int]:
    if not (isinstance(value, tuple) and len(value) == 2):
        raise TypeError(f"{name} must be a (start, stop) tuple, got {value!r}")
    start, stop = _index(value[0], f"{name}[0]"), _index(value[1], f"{name}[1]")
    if stop < start:
        raise ValueError(f"{name} must have start <= stop, got {value!r}")
    return start, stop


@dataclass(frozen=True)
class Shard:
    r"""One piece of a training step: which rows and time steps it holds, and where it runs.

    Attributes
    ----------
    rows : tuple of int
        The batch rows (sequences) of the shard, in the order the shard holds them.
    time_ranges : tuple of (start, stop)
        The time steps of those rows: one range when contiguous, two under zigzag CP.
    rank : int
        The process that computes the shard (gradients are reduced over ranks).
    micro_batch : int
        The accumulation step on that rank.
    vocab_range : (start, stop) or None
        The classes the shard holds (tensor parallelism); None for all of them.
    """

    rows: tuple[int, ...]
    time_ranges: tuple[tuple[int, int], ...]
    rank: int = 0
    micro_batch: int = 0
    vocab_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(_index(r, "Shard.rows[i]") for r in self.rows))
        ranges = tuple(_range(r, "Shard.time_ranges[i]") for r in self.time_ranges)
        object.__setattr__(self, "time_ranges", ranges)
        object.__setattr__(self, "rank", _index(self.rank, "Shard.rank"))
        object.__setattr__(self, "micro_batch", _index(self.micro_batch, "Shard.micro_batch"))
        if self.vocab_range is not None:
            object.__setattr__(self, "vocab_range", _range(self.vocab_range, "Shard.vocab_range"))

    @property
    def time_index(self) -> npt.NDArray[np.intp]:
        """The time steps of the shard, in order."""
        return np.concatenate([np.arange(a, b, dtype=np.intp) for a, b in self.time_ranges] or [np.zeros(0, np.intp)])

    def take(self, x: npt.ArrayLike) -> np.ndarray:
        """The shard's part ``x[rows][:, time_index]`` of a ``(B, T, ...)`` array (a copy)."""
        arr = np.asarray(x)
        return arr[np.asarray(self.rows, dtype=np.intp)][:, self.time_index]


def _check_vocab_groups(shards: tuple[Shard, ...]) -> None:
    """The vocabulary shards of one token group tile ``[0, V)`` exactly, with the same ``V`` for every group."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, s in enumerate(shards):
        groups.setdefault((s.rows, s.time_ranges, s.rank, s.micro_batch), []).append(i)
    sizes: dict[int, int] = {}
    for members in groups.values():
        cut = [i for i in members if shards[i].vocab_range is not None]
        if not cut:
            continue  # unsplit shards: two of them with the same tokens are duplicates, found by the count
        whole = [i for i in members if shards[i].vocab_range is None]
        if whole:
            raise ValueError(
                f"shards[{whole[0]}] holds every class of the tokens that the vocabulary shards "
                f"shards[{cut[0]}] split: a token's classes must be held once"
            )
        stop = 0
        for i in sorted(cut, key=lambda j: shards[j].vocab_range or (0, 0)):
            a, b = shards[i].vocab_range or (0, 0)
            if a != stop or b == a:
                what = "is empty" if b == a else ("overlaps" if a < stop else "leaves a gap")
                raise ValueError(
                    f"shards[{i}] has vocab_range {(a, b)}, which {what} in the classes of its tokens "
                    f"(the vocabulary shards of a token must tile [0, V) from class 0; the previous one ends at {stop})"
                )
            stop = b
        sizes[cut[0]] = stop
    first = min(sizes, default=None)
    for j, w in sorted(sizes.items()):
        if first is not None and w != sizes[first]:
            raise ValueError(
                f"inconsistent class counts: the vocabulary shards of shards[{first}] tile {sizes[first]} classes, "
                f"those of shards[{j}] {w}"
            )


@dataclass(frozen=True)
class ShardLayout:
    r"""A split of a ``(batch, length)`` grid into :class:`Shard` s that covers every step once.

    Vocabulary shards of the same ``(rows, time_ranges)`` count once: together they hold
    one token's logits. Raises ValueError naming the first step lost or held twice.

    Examples
    --------
    >>> import maskloss
    >>> layout = maskloss.ShardLayout.split(2, 4, context_parallel=2, zigzag=True)
    >>> [s.time_ranges for s in layout.shards if s.rows == (0, 1)]
    [((0, 1), (3, 4)), ((1, 2), (2, 3))]
    >>> maskloss.ShardLayout(2, 2, (maskloss.Shard((0,), ((0, 2),)),))
    Traceback (most recent call last):
    ...
    ValueError: layout loses step (1, 0): no shard holds it
    """

    batch: int
    length: int
    shards: tuple[Shard, ...]

    def __post_init__(self) -> None:
        batch, length = _index(self.batch, "batch"), _index(self.length, "length")
        object.__setattr__(self, "batch", batch)
        object.__setattr__(self, "length", length)
        shards = tuple(self.shards)
        for i, s in enumerate(shards):
            if not isinstance(s, Shard):
                raise TypeError(f"shards[{i}] must be a maskloss.Shard, got {type(s).__name__}")
        object.__setattr__(self, "shards", shards)
        count = np.zeros((batch, length), dtype=np.int64)
        seen: set[tuple[tuple[int, ...], tuple[tuple[int, int], ...], int, int]] = set()
        _check_vocab_groups(shards)
        for i, s in enumerate(shards):
            key = (s.rows, s.time_ranges, s.rank, s.micro_batch)
            if s.vocab_range is not None and key in seen:
                continue
            seen.add(key)
            if any(r >= batch for r in s.rows) or any(b > length for _, b in s.time_ranges):
                raise ValueError(
                    f"shards[{i}] reaches outside the ({batch}, {length}) batch: "
                    f"rows {s.rows}, time_ranges {s.time_ranges}"
                )
            np.add.at(count, np.ix_(np.asarray(s.rows, dtype=np.intp), s.time_index), 1)
        for what, bad in (("loses", count == 0), ("duplicates", count > 1)):
            if bad.any():
                b, t = (int(v) for v in np.argwhere(bad)[0])
                detail = "no shard holds it" if what == "loses" else f"{int(count[b, t])} shards hold it"
                raise ValueError(f"layout {what} step ({b}, {t}): {detail}")

    @property
    def ranks(self) -> int:
        """The number of distinct ranks (the group gradients are averaged over)."""
        return len({s.rank for s in self.shards})

    @property
    def vocab_size(self) -> int | None:
        """The number of classes the vocabulary shards tile (None: no shard is cut by class)."""
        ends = [s.vocab_range[1] for s in self.shards if s.vocab_range is not None]
        return max(ends) if ends else None  # every token's shards tile [0, V) for one V (__post_init__)

    @classmethod
    def split(
        cls,
        batch: int,
        length: int,
        *,
        ranks: int = 1,
        micro_batches: Sequence[int] | None = None,
        context_parallel: int = 1,
        zigzag: bool = False,
    ) -> ShardLayout:
        r"""The usual layout: DP ranks x micro-batches x CP sequence shards.

        The rows are split into ``ranks`` equal consecutive blocks; each block into
        micro-batches of ``micro_batches`` rows (sizes that sum to ``batch / ranks``, an
        empty one allowed); each micro-batch's time axis into ``context_parallel`` shards
        (``zigzag``: :math:`2c` chunks, CP rank :math:`r` holding chunks :math:`r` and
        :math:`2c-1-r`). The global rank is ``dp_rank * context_parallel + cp_rank``.
        """
        batch, length = _index(batch, "batch"), _index(length, "length")
        ranks, cp = _index(ranks, "ranks"), _index(context_parallel, "context_parallel")
        if ranks == 0 or cp == 0:
            raise ValueError(f"ranks and context_parallel must be >= 1, got {ranks} and {cp}")
        if batch % ranks:
            raise ValueError(f"batch={batch} does not split into ranks={ranks} equal blocks")
        per_rank = batch // ranks
        sizes = [per_rank] if micro_batches is None else [_index(m, "micro_batches[i]") for m in micro_batches]
        if sum(sizes) != per_rank:
            raise ValueError(
                f"micro_batches {sizes} sum to {sum(sizes)}, not to the {per_rank} rows of each rank "
                f"(batch={batch} / ranks={ranks})"
            )
        chunks = 2 * cp if zigzag else cp
        if length % chunks:
            raise ValueError(
                f"length={length} does not split into {chunks} equal chunks "
                f"(context_parallel={cp}{', zigzag' if zigzag else ''})"
            )
        step = length // chunks
        shards = []
        for dp in range(ranks):
            start = dp * per_rank
            for mb, size in enumerate(sizes):
                rows = tuple(range(start, start + size))
                start += size
                for r in range(cp):
                    parts = (r, 2 * cp - 1 - r) if zigzag else (r,)
                    times = tuple((c * step, (c + 1) * step) for c in parts)
                    shards.append(Shard(rows, times, rank=dp * cp + r, micro_batch=mb))
        return cls(batch, length, tuple(shards))


@dataclass(frozen=True)
class ShardScales:
    r"""The result of :func:`shard_scales`.

    Attributes
    ----------
    factors : tuple of ndarray
        Per shard (order of ``layout.shards``), shape ``(len(rows),)``: the factor each
        row's weighted ``"sum"`` on that shard must be multiplied by.
    token_weight : ndarray, shape (B, T)
        The weight :math:`\partial\mathcal{L}/\partial\ell_{bt}` every token must end with
        in the full-batch gradient (0 at masked steps).
    """

    factors: tuple[FloatArray, ...]
    token_weight: FloatArray


def shard_scales(
    mask: npt.ArrayLike,
    layout: ShardLayout,
    *,
    reduction: ScalarReduction | Aggregation,
    grad_reduction: str = "sum",
    sample_weight: npt.ArrayLike | None = None,
    constant: float | None = None,
    global_count: float | None = None,
) -> ShardScales:
    r"""The exact factor each shard's ``"sum"`` needs so that the step equals the full batch.

    Parameters
    ----------
    mask : array_like, shape (B, T)
        True = valid, of the whole optimizer step.
    layout : ShardLayout
        Where every shard sits.
    reduction : str
        One of :data:`SHARD_MODES`: a scalar reduction, or an aggregation mode of
        :func:`maskloss.aggregate` (``"global_token_mean"`` is ``"token_mean"`` over the
        step; ``"constant"`` divides by ``constant``).
    grad_reduction : {"sum", "mean"}
        How the backend combines the ranks' gradients; ``"mean"`` (DDP, FSDP) divides
        by ``layout.ranks``, so the factors are that many times larger.
    sample_weight : array_like, optional
        Weights as in the losses (shape of the mask, ``(B,)`` or scalar).
    constant : float, optional
        The divisor of ``reduction="constant"`` (Dr. GRPO).
    global_count : float, optional
        For ``reduction="global_token_mean"``: the (weighted) valid tokens the step's sum is
        divided by, as in :func:`maskloss.aggregate`, at least the step's own. Default: the
        step's own count. With ``steps_per_generation`` optimizer steps per generation batch
        (TRL, DAPO) pass the generation batch's count: the steps' losses then sum to its token mean.

    Returns
    -------
    ShardScales
        Per-shard factors :math:`R^{[\text{mean}]}\lambda_b` and the token weights
        :math:`\lambda_b w_{bt}`.

    Examples
    --------
    Two micro-batches of 3 and 1 valid tokens: each divides its sum by 4, not by its own count.

    >>> import maskloss
    >>> mask = maskloss.mask_from_lengths([3, 1], 3)
    >>> layout = maskloss.ShardLayout.split(2, 3, micro_batches=[1, 1])
    >>> [f.tolist() for f in maskloss.shard_scales(mask, layout, reduction="token_mean").factors]
    [[0.25], [0.25]]
    >>> [f.tolist() for f in maskloss.shard_scales(mask, layout, reduction="sequence_mean").factors]
    [[0.16666666666666666], [0.5]]

    One of 2 optimizer steps of a generation batch of 10 valid tokens (``steps_per_generation=2``):

    >>> [f.tolist() for f in maskloss.shard_scales(mask, layout, reduction="global_token_mean",
    ...                                            global_count=10).factors]
    [[0.1], [0.1]]
    """
    if not isinstance(layout, ShardLayout):
        raise TypeError(f"layout must be a maskloss.ShardLayout, got {type(layout).__name__}")
    if reduction not in SHARD_MODES:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, SHARD_MODES))}; got {reduction!r}")
    if grad_reduction not in GRAD_REDUCTIONS:
        raise ValueError(f"grad_reduction must be 'sum' or 'mean'; got {grad_reduction!r}")
    arr = as_numeric(mask, "mask")
    if arr.shape != (layout.batch, layout.length):
        raise ValueError(
            f"mask has shape {arr.shape} but the layout splits a ({layout.batch}, {layout.length}) batch"
        )
    valid = check_mask(arr, arr.shape)
    weight = check_sample_weight(sample_weight, valid)
    weight = np.where(valid, weight, 0.0)
    totals = MaskedTotals.from_terms(np.zeros(valid.shape), weight)
    if global_count is not None:
        if reduction != "global_token_mean":
            raise TypeError(f"global_count= is the count of reduction='global_token_mean', not of {reduction!r}")
        given: object = global_count  # typed float, but a caller may pass anything
        if isinstance(given, bool) or not isinstance(given, numbers.Real):
            raise TypeError(f"global_count must be a number, got {global_count!r}")
        g, own = float(given), float(weight.sum())
        if not np.isfinite(g) or g <= 0:
            raise ValueError(f"global_count must be finite and > 0, got {global_count!r}")
        if count_below(g, own, weighted=sample_weight is not None):
            raise ValueError(
                f"global_count={global_count!r} is below this step's own {own:g} valid tokens; it counts the "
                "valid tokens of every step it averages over (the generation batch)"
            )
        per_row = totals.sequence_scale(reduction, count=g)
        token_weight = totals.step_scale(reduction, weight, count=g)
    elif reduction == "constant":
        if constant is None:
            raise TypeError("reduction='constant' needs constant= (Dr. GRPO: batch size * max_completion_length)")
        c = float(constant)
        if not np.isfinite(c) or c <= 0:
            raise ValueError(f"constant must be finite and > 0, got {constant!r}")
        per_row, token_weight = totals.sequence_scale(reduction, count=c), totals.step_scale(reduction, weight, count=c)
    else:
        # global_token_mean: the rule of token_mean, whose count is this step's own (the whole step)
        name = GIVEN_COUNTS[reduction][1] if reduction in GIVEN_COUNTS else reduction
        if name in ("token_mean", "sequence_mean") and not np.any(totals.denominator > 0):
            raise ValueError(
                f"the step has no valid token: nothing to average under reduction={reduction!r} "
                "(its full-batch loss is 0/0); skip the step or use 'sum'"
            )
        per_row, token_weight = totals.sequence_scale(name), totals.step_scale(name, weight)
    multiplier = float(layout.ranks) if grad_reduction == "mean" else 1.0
    factors = tuple(per_row[np.asarray(s.rows, dtype=np.intp)] * multiplier for s in layout.shards)
    return ShardScales(factors, token_weight)
