r"""Exact gradient accumulation and sharding: :func:`masked_totals`.

A mean of micro-batch means is not the full-batch mean when the micro-batches hold
different numbers of valid tokens (HF transformers before 4.46). The cure is to keep,
per sequence, the numerator :math:`N_b = \sum_t n_{bt}` and the denominator
:math:`D_b = \sum_t d_{bt}` of the loss (``docs/appendix/notation.md``), and to reduce only once everything is in:
:class:`maskloss.MaskedTotals` holds exactly that, and :meth:`MaskedTotals.concat`
merges micro-batches (or shards) into the full batch, for every reduction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maskloss.losses import Pipeline, pipeline_transform
from maskloss.reductions import MaskedTotals

__all__ = ["masked_totals"]


def masked_totals(fn: Callable[..., Any]) -> Callable[..., MaskedTotals]:
    r"""Return a function with ``fn``'s signature that returns the loss's :class:`MaskedTotals`.

    The ``reduction`` argument is ignored (every scalar reduction can be read off the
    totals with :meth:`MaskedTotals.value`). Merge the totals of micro-batches with
    :meth:`MaskedTotals.concat`: the merged value is the full-batch value, exactly.

    Examples
    --------
    Two micro-batches with 3 and 1 valid tokens (labels padded with -100):

    >>> import numpy as np, maskloss
    >>> logits = np.log([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]], [[0.25, 0.75], [0.5, 0.5], [0.5, 0.5]]])
    >>> labels = np.array([[0, 0, 1], [1, -100, -100]])
    >>> totals = maskloss.masked_totals(maskloss.sparse_categorical_crossentropy)
    >>> parts = [totals(labels[i:i + 1], logits[i:i + 1], from_logits=True, ignore_index=-100) for i in (0, 1)]
    >>> mean_of_means = np.mean([p.value("token_mean") for p in parts])
    >>> full = maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True, ignore_index=-100)
    >>> merged = maskloss.MaskedTotals.concat(parts).value("token_mean")
    >>> bool(merged == full), bool(np.isclose(mean_of_means, full))
    (True, False)
    """
    return pipeline_transform(fn, "masked_totals", Pipeline.totals)
