"""Aggregation of per-token losses into one scalar, on :class:`maskloss.MaskedTotals`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from maskloss._checks import check_mask
from maskloss.posttraining._common import _positive, _steps, _valid_values
from maskloss.reductions import overflow_free, reduce_terms

#: Names accepted by :func:`aggregate`'s ``mode``.
AGGREGATIONS: tuple[str, ...] = (
    "token_mean", "sequence_mean", "batch_mean", "sum", "constant", "global_token_mean",
)

def aggregate(
    per_token_loss: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    mode: str = "token_mean",
    constant: float | None = None,
    global_count: float | None = None,
) -> np.float64:
    r"""Aggregate a per-token loss ``(B, T)`` into the scalar of one of :data:`AGGREGATIONS`.

    ``constant`` is the configured divisor of ``mode="constant"`` (Dr. GRPO:
    ``B * max_completion_length``, never the batch's padded length); ``global_count`` is the
    number of valid tokens of the whole optimiser step, all micro-batches and ranks, for
    ``mode="global_token_mean"`` (DAPO): summing the micro-batch values then gives the
    global token mean exactly. Values at masked steps are never read; non-finite values at
    valid steps are errors. ``"token_mean"`` and ``"sequence_mean"`` of a batch with no valid
    token are NaN (0/0); ``"sequence_mean"`` leaves empty responses out of its count.

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
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"mode must be one of {', '.join(map(repr, AGGREGATIONS))}; got {mode!r}")
    loss = _steps(per_token_loss, "per_token_loss")
    valid = check_mask(mask, loss.shape)
    terms, counts = _valid_values(loss, valid, "per_token_loss"), valid.astype(np.float64)
    if mode == "constant":
        if constant is None:
            raise TypeError("mode='constant' needs constant= (Dr. GRPO: batch size * max_completion_length)")
        divisor = _positive(constant, "constant")
        return overflow_free(lambda totals: totals.value("sum") / divisor, terms, counts)
    if mode == "global_token_mean":
        if global_count is None:
            raise TypeError("mode='global_token_mean' needs global_count= (valid tokens of the whole step)")
        count = _positive(global_count, "global_count")
        if count < int(np.count_nonzero(valid)):
            raise ValueError(
                f"global_count={global_count!r} is below this micro-batch's own {np.count_nonzero(valid)} valid "
                "tokens; it counts the valid tokens of the whole optimiser step (all micro-batches and ranks)"
            )
        return overflow_free(lambda totals: totals.value("sum") / count, terms, counts)
    return reduce_terms(terms, counts, mode)  # type: ignore[return-value]  # a scalar mode
