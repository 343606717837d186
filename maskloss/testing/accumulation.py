r"""Check that an accumulating training step reproduces the full-batch gradient.

:func:`check_accumulation` hands a user's training step the same batch cut into
``ranks`` x ``micro_batches`` pieces, for every configuration asked for, and compares
the gradient the step returns with the gradient of the whole batch in one piece. The
first configuration that differs is reported with its layout and its relative error:
the "mean of micro-batch means" bug shows up as soon as the micro-batches hold
different numbers of valid tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["AccumulationCheckError", "check_accumulation"]

#: The shards a step receives: ``shards[rank][micro_batch]`` is a tuple of arrays, the
#: rows of every array of the batch that this micro-batch holds.
Shards = list[list[tuple[np.ndarray[Any, Any], ...]]]


class AccumulationCheckError(AssertionError):
    """An accumulating step whose gradient is not the full-batch gradient."""


def _flat(gradient: Any, what: str) -> np.ndarray[Any, Any]:
    parts = gradient if isinstance(gradient, (list, tuple)) else [gradient]
    try:
        arrays = [np.asarray(getattr(p, "detach", lambda p=p: p)(), dtype=np.float64).ravel() for p in parts]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be an array or a sequence of arrays (one per parameter): {exc}") from None
    return np.concatenate(arrays) if arrays else np.zeros(0)


def _split(batch: tuple[np.ndarray[Any, Any], ...], ranks: int, micro_batches: int) -> Shards:
    pieces = np.array_split(np.arange(batch[0].shape[0]), ranks * micro_batches)
    return [[tuple(a[rows] for a in batch) for rows in pieces[r * micro_batches:(r + 1) * micro_batches]]
            for r in range(ranks)]


def check_accumulation(
    step: Callable[[Shards], Any],
    batch: Sequence[npt.ArrayLike],
    *,
    micro_batches: Sequence[int] = (1, 2, 3),
    ranks: Sequence[int] = (1, 2),
    rtol: float = 1e-12,
) -> dict[tuple[int, int], float]:
    r"""Assert that ``step`` gives the full-batch gradient however the batch is split.

    Parameters
    ----------
    step : callable
        ``step(shards) -> gradient``: one optimizer step's gradient (an array, or a
        sequence of arrays/tensors, one per parameter) from ``shards[rank][micro]``,
        each a tuple of the batch's arrays restricted to that micro-batch's sequences.
        The step combines the ranks as its data-parallel engine would (DDP: the mean of
        the ranks' gradients); it must not modify its inputs.
    batch : sequence of array_like
        The full batch: arrays sharing their first (sequence) axis, e.g.
        ``(inputs, labels)``.
    micro_batches, ranks : sequence of int
        Micro-batches per rank and rank counts to try, every pair; the batch is cut into
        ``ranks * micro_batches`` contiguous pieces of near-equal size (pairs that would
        leave a micro-batch empty are skipped).
    rtol : float, default 1e-12
        Largest relative error :math:`\lVert g - g_{full}\rVert / \lVert g_{full}\rVert`
        allowed (1e-12 suits float64 models).

    Returns
    -------
    dict
        ``{(ranks, micro_batches): relative error}`` of every configuration checked.

    Raises
    ------
    AccumulationCheckError
        At the first configuration (ranks, then micro-batches, in the order given) whose
        gradient is off, naming it, the sequences per micro-batch and the error.
    ValueError
        If ``batch`` is empty or its arrays disagree on the number of sequences.

    Examples
    --------
    A "model" whose gradient is the per-token error, averaged: the correct step divides
    each micro-batch's sum by the global token count, the buggy one averages means.

    >>> import numpy as np
    >>> from maskloss.testing import check_accumulation
    >>> errors = np.array([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0], [2.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    >>> mask = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0]], dtype=bool)
    >>> def good(shards):
    ...     tokens = sum(m.sum() for rank in shards for _, m in rank)
    ...     return [sum(np.where(m, e, 0).sum() / tokens for rank in shards for e, m in rank)]
    >>> def mean_of_means(shards):
    ...     micro = [np.where(m, e, 0).sum() / m.sum() for rank in shards for e, m in rank]
    ...     return [np.mean(micro)]
    >>> sorted(check_accumulation(good, (errors, mask)))
    [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    >>> from maskloss.testing import AccumulationCheckError
    >>> try:
    ...     check_accumulation(mean_of_means, (errors, mask))
    ... except AccumulationCheckError as exc:
    ...     print(exc)                       # means 7/4 and 7/3 average to 2.04167, not 14/7
    the accumulating step is not the full-batch gradient at ranks=1, micro_batches=2
    (sequences per micro-batch, by rank: [[2, 2]]): relative error 0.0208333 > rtol 1e-12
    (norm 2.04167 vs 2)
    """
    arrays = tuple(np.asarray(a) for a in batch)
    if not arrays:
        raise ValueError("batch must hold at least one array, got an empty sequence")
    sizes = [a.shape[0] if a.ndim else None for a in arrays]
    if None in sizes or len(set(sizes)) != 1:
        shapes = [a.shape for a in arrays]
        raise ValueError(f"batch arrays must share their first (sequence) axis, got shapes {shapes}")
    for name, values in (("micro_batches", micro_batches), ("ranks", ranks)):
        bad = [v for v in values if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or int(v) < 1]
        if bad:
            raise ValueError(f"{name} must be positive integers, got {bad[0]!r}")
    full = _flat(step(_split(arrays, 1, 1)), "the step's gradient")
    full_norm = float(np.linalg.norm(full))
    results: dict[tuple[int, int], float] = {(1, 1): 0.0}
    for r in ranks:
        for m in micro_batches:
            r, m = int(r), int(m)
            if (r, m) == (1, 1) or r * m > arrays[0].shape[0]:
                continue
            shards = _split(arrays, r, m)
            grad = _flat(step(shards), "the step's gradient")
            if grad.shape != full.shape:
                raise AccumulationCheckError(
                    f"the accumulating step returns {grad.size} gradient entries at ranks={r}, micro_batches={m}, "
                    f"but {full.size} for the full batch")
            diff = float(np.linalg.norm(grad - full))
            error = diff / full_norm if full_norm else diff
            if not error <= rtol:
                layout = [[int(p[0].shape[0]) for p in rank] for rank in shards]
                raise AccumulationCheckError(
                    f"the accumulating step is not the full-batch gradient at ranks={r}, micro_batches={m} "
                    f"(sequences per micro-batch, by rank: {layout}): relative error {error:.6g} > rtol {rtol:g} "
                    f"(norm {float(np.linalg.norm(grad)):.6g} vs {full_norm:.6g})")
            results[(r, m)] = error
    return results
