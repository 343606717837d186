"""Aggregation of per-token losses into one scalar: :func:`maskloss.reduce` on the table of the reductions."""

from __future__ import annotations

import typing

import numpy as np
import numpy.typing as npt

from maskloss._types import Aggregation, ScalarReduction
from maskloss.posttraining._common import _positive, _steps, _valid_values, check_mask, check_reduction
from maskloss.reductions import GIVEN_COUNTS, count_below, overflow_free, reduce, segment_ids_for

#: Names accepted by :func:`aggregate`'s ``mode``: rows of the table of :mod:`maskloss.reductions`.
AGGREGATIONS: tuple[Aggregation, ...] = typing.get_args(Aggregation)


def aggregate(
    per_token_loss: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    mode: Aggregation = "token_mean",
    constant: float | None = None,
    global_count: float | None = None,
    sample_weight: npt.ArrayLike | None = None,
    segment_ids: npt.ArrayLike | None = None,
) -> np.float64:
    r"""Aggregate a per-token loss ``(B, T)`` into the scalar of one of :data:`AGGREGATIONS`.

    The modes are rows of the table of :mod:`maskloss.reductions`, computed by
    :func:`maskloss.reduce`: ``"constant"`` and ``"global_token_mean"`` are the weighted sum
    divided by a count the caller gives. ``constant`` is the configured divisor of
    ``mode="constant"`` (Dr. GRPO: ``B * max_completion_length``, never the batch's padded
    length); ``global_count`` is the number of valid tokens of the whole optimiser step, all
    micro-batches and ranks, for ``mode="global_token_mean"`` (DAPO): summing the micro-batch
    values then gives the global token mean exactly (with ``sample_weight``, the weighted count
    :math:`\sum m\,w` of the step; a count below the micro-batch's own is refused, exactly for
    whole-number counts and beyond a relative :data:`maskloss.reductions.COUNT_RTOL` for weighted
    ones, whose float sums differ in the last bits by order). ``sample_weight`` (shape of the
    mask, ``(B,)`` or a scalar; finite and >= 0 at valid steps) weighs each token as in
    :func:`maskloss.reduce`. Values at masked steps are never read; non-finite values at valid
    steps are errors. ``"token_mean"`` and
    ``"sequence_mean"`` of a batch with no valid token are NaN (0/0); ``"sequence_mean"`` leaves
    empty responses out of its count. ``segment_ids`` (packed rows, the mask's shape, -1 at
    padding; see :mod:`maskloss.segments`) makes every mode treat each document as one response,
    exactly as :func:`maskloss.reduce` does (``"sequence_mean"``: the mean of the documents' own
    means, GRPO's rule; ``"batch_mean"``: over the number of documents).

    Examples
    --------
    Two responses of 3 and 1 tokens, the second loss per token 4:

    >>> import numpy as np, maskloss
    >>> loss = np.array([[1.0, 1.0, 1.0], [4.0, np.nan, np.nan]])
    >>> mask = np.array([[1, 1, 1], [1, 0, 0]], dtype=bool)
    >>> [float(maskloss.aggregate(loss, mask, mode=m)) for m in ("token_mean", "sequence_mean", "batch_mean")]
    [1.75, 2.5, 3.5]
    >>> float(maskloss.aggregate(loss, mask, mode="constant", constant=2 * 8))  # B * max_completion_length
    0.4375
    >>> float(maskloss.aggregate(loss, mask, mode="global_token_mean", global_count=10))
    0.7
    >>> float(maskloss.aggregate(loss, mask, sample_weight=[1.0, 3.0]))   # (3 + 3 * 4) / (3 + 3)
    2.5

    The same two responses packed into one row: the same per-response mean.

    >>> packed = np.array([[1.0, 1.0, 1.0, 4.0]])
    >>> float(maskloss.aggregate(packed, mode="sequence_mean", segment_ids=[[0, 0, 0, 1]]))
    2.5
    """
    check_reduction(mode, allowed=AGGREGATIONS, name="mode")
    loss = _steps(per_token_loss, "per_token_loss")
    valid = check_mask(mask, loss.shape)
    seg = None if segment_ids is None else segment_ids_for(segment_ids, valid.shape)
    if seg is not None:
        valid = valid & (seg >= 0)
    values = _valid_values(loss, valid, "per_token_loss")
    given = GIVEN_COUNTS.get(mode)
    if given is None:
        rule = typing.cast(ScalarReduction, mode)  # not a given-count mode: a scalar reduction
        return reduce(  # type: ignore[return-value]  # a scalar rule gives a float64
            values, valid, reduction=rule, sample_weight=sample_weight, segment_ids=seg
        )
    keyword, _ = given
    count = constant if mode == "constant" else global_count
    if count is None:
        why = "Dr. GRPO: batch size * max_completion_length" if mode == "constant" else "valid tokens of the whole step"
        raise TypeError(f"mode={mode!r} needs {keyword}= ({why})")
    divisor = _positive(count, keyword)
    if mode == "global_token_mean":
        local = reduce(valid, valid, reduction="sum", sample_weight=sample_weight)
        if count_below(divisor, float(local), weighted=sample_weight is not None):
            own = int(local) if sample_weight is None else float(local)
            raise ValueError(
                f"global_count={count!r} is below this micro-batch's own {own} valid tokens; it counts the "
                "valid tokens of the whole optimiser step (all micro-batches and ranks)"
            )
    # The sum over a given count, rescaled where the sum of huge finite losses overflows.
    return overflow_free(lambda v: reduce(v, valid, reduction="sum", sample_weight=sample_weight) / divisor, values)
