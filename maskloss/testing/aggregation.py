r"""Check *your* post-training loss aggregation against maskloss: :func:`check_aggregation`.

A candidate is ``candidate(per_token_loss, mask) -> scalar`` (``(B, T)`` float64 losses and a
bool mask, True at response tokens), the line of a trainer that turns per-token losses into
the number it calls ``backward()`` on. For ``mode="global_token_mean"`` it is called as
``candidate(per_token_loss, mask, global_count=N)``, ``N`` the valid tokens of the whole
optimiser step. The reference is :func:`maskloss.aggregate` with the same ``mode`` (and
``constant``).

The properties, each on hypothesis-generated batches (shrunk to the smallest failure):

``oracle``
    the value equals maskloss's on a clean batch (non-empty responses, zeros as padding);
``padding content``
    NaN, inf or huge values under the mask change nothing (``loss * mask`` leaks NaN);
``padding amount``
    extra padded columns change nothing (Dr. GRPO normalised by the padded length);
``left vs right``
    moving every response to the other side changes nothing;
``batch order``
    shuffling the sequences changes nothing;
``split and recombine``
    for the additive modes (``sum``, ``constant``, ``global_token_mean``) the values of
    micro-batches sum to the full batch's (token means per micro-batch are not global);
``empty responses``
    a batch with an empty response gives maskloss's (finite) value, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maskloss
from maskloss.posttraining import AGGREGATIONS
from maskloss.testing._search import no_local_constants

__all__ = ["AggregationCheckError", "check_aggregation"]

ADDITIVE = ("sum", "constant", "global_token_mean")


class AggregationCheckError(AssertionError):
    """Raised by :func:`check_aggregation`; attributes hold the failing batch."""

    __module__ = "maskloss.testing"

    def __init__(self, message: str, *, prop: str, per_token_loss: Any, mask: Any, actual: Any, expected: Any):
        super().__init__(message)
        self.property = prop
        self.per_token_loss, self.mask = per_token_loss, mask
        self.actual, self.expected = actual, expected


class _Failure(Exception):
    def __init__(self, prop: str, loss: Any, mask: Any, actual: Any, expected: Any) -> None:
        super().__init__(prop)
        self.prop, self.loss, self.mask, self.actual, self.expected = prop, loss, mask, actual, expected


def _close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    x, y = float(a), float(b)
    if np.isnan(x) or np.isnan(y):
        return bool(np.isnan(x) and np.isnan(y))
    return abs(x - y) <= atol + rtol * abs(y)


def check_aggregation(
    candidate: Callable[..., Any],
    mode: str = "token_mean",
    *,
    constant: float | None = None,
    max_examples: int = 100,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> None:
    r"""Raise :class:`AggregationCheckError` if ``candidate`` is not ``maskloss.aggregate(..., mode=mode)``.

    Parameters
    ----------
    candidate : callable
        ``candidate(per_token_loss, mask)`` (plus ``global_count=`` for
        ``"global_token_mean"``) returning a scalar.
    mode : str
        One of :data:`maskloss.posttraining.AGGREGATIONS`.
    constant : float, optional
        The configured divisor of ``mode="constant"`` (the candidate must use it too).

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.testing import check_aggregation
    >>> def dr_grpo(loss, mask):   # divides by the padded length: the Dr. GRPO bug
    ...     return np.where(mask, loss, 0.0).sum() / (loss.shape[0] * loss.shape[1])
    >>> try:
    ...     check_aggregation(dr_grpo, "constant", constant=4 * 8, max_examples=20)
    ... except AssertionError as err:
    ...     print(err.property)
    oracle
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"mode must be one of {', '.join(map(repr, AGGREGATIONS))}; got {mode!r}")
    if mode == "constant" and constant is None:
        raise TypeError("mode='constant' needs constant= (the divisor the candidate is configured with)")

    def expected(loss: Any, mask: Any, count: float | None = None) -> Any:
        return maskloss.aggregate(loss, mask, mode=mode, constant=constant, global_count=count)  # type: ignore[arg-type]

    def call(loss: Any, mask: Any, count: float | None = None) -> Any:
        if mode == "global_token_mean":
            return candidate(loss.copy(), mask.copy(), global_count=count)
        return candidate(loss.copy(), mask.copy())

    def check(prop: str, loss: Any, mask: Any, got: Any, want: Any) -> None:
        if not _close(got, want, rtol, atol):
            raise _Failure(prop, loss, mask, got, want)

    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 6), st.integers(1, 3))
    def run(seed: int, batch: int, steps: int, extra: int) -> None:
        rng = np.random.default_rng(seed)
        lengths = rng.integers(1, steps + 1, batch)
        mask = np.arange(steps)[None, :] < lengths[:, None]
        loss = np.where(mask, np.round(rng.normal(0, 2, (batch, steps)), 3), 0.0)
        count = float(mask.sum()) + float(rng.integers(0, 4)) if mode == "global_token_mean" else None
        want = expected(loss, mask, count)
        check("oracle", loss, mask, call(loss, mask, count), want)
        junk = np.where(mask, loss, rng.choice([np.nan, np.inf, -1e300], loss.shape))
        check("padding content", junk, mask, call(junk, mask, count), want)
        wide = np.concatenate([loss, np.zeros((batch, extra))], axis=1)
        wide_mask = np.concatenate([mask, np.zeros((batch, extra), bool)], axis=1)
        check("padding amount", wide, wide_mask, call(wide, wide_mask, count), want)
        left, left_mask = maskloss.repad(wide, wide_mask, side="left")
        check("left vs right", left, left_mask, call(left, left_mask, count), want)
        perm = rng.permutation(batch)
        check("batch order", loss[perm], mask[perm], call(loss[perm], mask[perm], count), want)
        if mode in ADDITIVE and batch > 1:
            cut = int(rng.integers(1, batch))
            parts = float(call(loss[:cut], mask[:cut], count)) + float(call(loss[cut:], mask[cut:], count))
            check("split and recombine", loss, mask, parts, want)
        empty_mask = mask.copy()
        empty_mask[int(rng.integers(batch))] = False
        if empty_mask.any():
            empty_count = None if count is None else count
            check("empty responses", loss, empty_mask, call(loss, empty_mask, empty_count),
                  expected(loss, empty_mask, empty_count))

    try:
        with no_local_constants():  # derandomised: the same draws whatever the caller imported
            run()
    except _Failure as f:
        name = getattr(candidate, "__name__", repr(candidate))
        message = (
            f"check_aggregation: {name} is not maskloss.aggregate(mode={mode!r}).\n"
            f"  property broken: {f.prop}\n  candidate value: {float(f.actual)!r}\n"
            f"  expected value: {float(f.expected)!r}\n"
            f"  mask (1 = valid):\n{np.asarray(f.mask, dtype=int)}\n  per_token_loss:\n{f.loss}"
        )
        raise AggregationCheckError(
            message, prop=f.prop, per_token_loss=f.loss, mask=f.mask, actual=f.actual, expected=f.expected
        ) from None
