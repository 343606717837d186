r"""Cross-entropy over vocabulary shards: per-shard partial sums that merge exactly.

A tensor-parallel head holds logits :math:`z_{c}` for classes :math:`c \in [a, b)` only.
Each shard reports, per token, its maximum :math:`M_s`, its sum of exponentials
:math:`E_s = \sum_{c\in s} e^{z_c - M_s}`, the target logit when the label falls inside it
(else 0) and the sum of its logits; these merge into
:math:`\operatorname{lse} = M + \log\sum_s E_s e^{M_s - M}` (:math:`M = \max_s M_s`),
and the per-token loss of :func:`merged_cross_entropy` is

.. math::
    \ell = \operatorname{lse} - (1-\varepsilon) z_y - \varepsilon\,\bar z + \zeta\,\operatorname{lse}^2,

with :math:`\bar z = \frac1V\sum_c z_c` (torch, ``smoothing_rule="uniform"``: mass
:math:`\varepsilon/V` on every class) or :math:`\bar z = \frac{1}{V-1}\sum_{c\ne y} z_c`
(``"others"``: mass :math:`\varepsilon/(V-1)` on the other classes, Liger-Kernel#1260).
:math:`V` is the *global* vocabulary size: dividing by a shard's own size is Megatron-LM#737.

>>> import numpy as np, maskloss.vocab_parallel as vp
>>> logits = np.array([[2.0, 0.0, 1.0, -1.0]])
>>> parts = [vp.vocab_partials(logits[:, a:b], [2], (a, b)) for a, b in ((0, 1), (1, 4))]
>>> merged = vp.merge_vocab_partials(parts)
>>> round(float(merged.lse[0]), 12) == round(float(np.log(np.exp(logits).sum())), 12)
True
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_head_option, check_label_smoothing
from maskloss._types import FloatArray

__all__ = ["SMOOTHING_RULES", "MergedVocab", "VocabPartials", "merge_vocab_partials", "merged_cross_entropy",
           "vocab_partials", "vocab_shard_grad"]

#: Names accepted by ``smoothing_rule``.
SMOOTHING_RULES: tuple[str, ...] = ("uniform", "others")


@dataclass(frozen=True)
class VocabPartials:
    """One vocabulary shard's per-token partial sums (all shape ``(N,)``, float64).

    ``labels`` (the global labels the shard was given, int64) lets
    :func:`merge_vocab_partials` check that every shard saw the same labels and that each
    falls in ``[0, V)``; None (hand-built partials) skips those checks.
    """

    vocab_range: tuple[int, int]
    max: FloatArray
    sum_exp: FloatArray
    target_logit: FloatArray
    logit_sum: FloatArray
    labels: npt.NDArray[np.int64] | None = None


@dataclass(frozen=True)
class MergedVocab:
    """The merged statistics of every token: ``lse``, target logit, sum of all logits, ``V``."""

    lse: FloatArray
    target_logit: FloatArray
    logit_sum: FloatArray
    vocab_size: int


def _shard(logits: npt.ArrayLike, labels: npt.ArrayLike, vocab_range: tuple[int, int]) -> tuple[FloatArray, np.ndarray]:
    z = np.asarray(as_numeric(logits, "logits"), dtype=np.float64)
    y = np.asarray(as_numeric(labels, "labels"))
    a, b = _check_range(vocab_range)
    if z.ndim != 2 or z.shape[1] != b - a:
        raise ValueError(f"logits must have shape (N, {b - a}) for vocab_range {vocab_range}, got {z.shape}")
    if y.shape != (z.shape[0],):
        raise ValueError(f"labels must have shape ({z.shape[0]},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite (select valid tokens before sharding)")
    return z, y.astype(np.int64)


def _check_range(vocab_range: object) -> tuple[int, int]:
    """``vocab_range`` must be two ints ``(a, b)`` with ``0 <= a < b`` (a float or bool would be truncated)."""
    pair = tuple(vocab_range) if isinstance(vocab_range, (tuple, list)) else ()
    ints = [v for v in pair if isinstance(v, (int, np.integer)) and not isinstance(v, bool)]
    if len(pair) != 2 or len(ints) != 2:
        raise TypeError(f"vocab_range must be a pair of ints (a, b), got {vocab_range!r}")
    a, b = int(ints[0]), int(ints[1])
    if not 0 <= a < b:
        raise ValueError(f"vocab_range must be (a, b) with 0 <= a < b (classes a to b - 1), got {vocab_range!r}")
    return a, b


def vocab_partials(logits: npt.ArrayLike, labels: npt.ArrayLike, vocab_range: tuple[int, int]) -> VocabPartials:
    r"""The partial sums of one shard: ``logits`` ``(N, b - a)`` holds classes ``[a, b)``; ``labels`` global ids."""
    z, y = _shard(logits, labels, vocab_range)
    a, b = _check_range(vocab_range)
    local = y - a
    inside = (local >= 0) & (local < b - a)
    top = z.max(axis=1)
    picked = np.take_along_axis(z, np.where(inside, local, 0)[:, None], axis=1)[:, 0]
    return VocabPartials(
        (a, b), top, np.exp(z - top[:, None]).sum(axis=1), np.where(inside, picked, 0.0), z.sum(axis=1), y
    )


def merge_vocab_partials(parts: Sequence[VocabPartials]) -> MergedVocab:
    """Merge the shards' partials (they must tile ``[0, V)`` exactly) into the full-vocabulary statistics."""
    items = sorted(parts, key=lambda p: p.vocab_range)
    if not items or items[0].vocab_range[0] != 0:
        raise ValueError("vocabulary shards must start at class 0")
    for left, right in itertools.pairwise(items):
        if left.vocab_range[1] != right.vocab_range[0]:
            raise ValueError(f"vocabulary shards {left.vocab_range} and {right.vocab_range} leave a gap or overlap")
    tokens = {p.max.shape for p in items}
    if len(tokens) != 1:
        raise ValueError(f"vocabulary shards hold different numbers of tokens: {sorted(s[0] for s in tokens)}")
    vocab = items[-1].vocab_range[1]
    given = [p for p in items if p.labels is not None]
    for p in given[1:]:
        assert p.labels is not None and given[0].labels is not None
        if not np.array_equal(p.labels, given[0].labels):
            i = int(np.flatnonzero(p.labels != given[0].labels)[0])
            raise ValueError(f"vocabulary shards were given different labels: token {i} has label "
                             f"{int(given[0].labels[i])} on shard {given[0].vocab_range} and {int(p.labels[i])} "
                             f"on shard {p.vocab_range}")
    if given:
        y = given[0].labels
        assert y is not None
        outside = (y < 0) | (y >= vocab)
        if outside.any():  # its target logit would be 0 on every shard: a silent wrong loss
            i = int(np.flatnonzero(outside)[0])
            raise ValueError(f"labels must be classes in [0, {vocab}) (select valid tokens before sharding); "
                             f"token {i} has label {int(y[i])}")
    top = np.max([p.max for p in items], axis=0)
    total = np.sum([p.sum_exp * np.exp(p.max - top) for p in items], axis=0)
    return MergedVocab(
        top + np.log(total),
        np.sum([p.target_logit for p in items], axis=0),
        np.sum([p.logit_sum for p in items], axis=0),
        vocab,
    )


def _smoothing_mean(merged: MergedVocab, smoothing_rule: str) -> FloatArray:
    if smoothing_rule not in SMOOTHING_RULES:
        raise ValueError(f"smoothing_rule must be 'uniform' or 'others'; got {smoothing_rule!r}")
    if smoothing_rule == "uniform":
        return merged.logit_sum / merged.vocab_size
    return (merged.logit_sum - merged.target_logit) / max(merged.vocab_size - 1, 1)


def merged_cross_entropy(
    merged: MergedVocab, *, label_smoothing: float = 0.0, smoothing_rule: str = "uniform", z_loss: float = 0.0
) -> FloatArray:
    r"""The per-token loss :math:`\ell` of the module formula, shape ``(N,)``."""
    eps = check_label_smoothing(label_smoothing)
    z_loss = check_head_option(z_loss, "z_loss", allow_zero=True)
    return (
        merged.lse - (1.0 - eps) * merged.target_logit - eps * _smoothing_mean(merged, smoothing_rule)
        + float(z_loss) * merged.lse**2
    )


def vocab_shard_grad(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    vocab_range: tuple[int, int],
    merged: MergedVocab,
    *,
    label_smoothing: float = 0.0,
    smoothing_rule: str = "uniform",
    z_loss: float = 0.0,
) -> FloatArray:
    r"""The gradient of :func:`merged_cross_entropy` on one shard's logits, shape of ``logits``.

    .. math::
        \partial\ell/\partial z_c = p_c(1 + 2\zeta\,\operatorname{lse}) - (1-\varepsilon)[c=y]
            - \varepsilon\,\partial\bar z/\partial z_c
    """
    z, y = _shard(logits, labels, vocab_range)
    _smoothing_mean(merged, smoothing_rule)
    eps = check_label_smoothing(label_smoothing)
    z_loss = check_head_option(z_loss, "z_loss", allow_zero=True)
    classes = np.arange(*vocab_range)[None, :]
    is_target = classes == y[:, None]
    p = np.exp(z - merged.lse[:, None])
    if smoothing_rule == "uniform":
        smooth = np.full(z.shape, 1.0 / merged.vocab_size)
    else:
        smooth = np.where(is_target, 0.0, 1.0 / max(merged.vocab_size - 1, 1))
    grad: FloatArray = p * (1.0 + 2.0 * float(z_loss) * merged.lse[:, None]) - (1.0 - eps) * is_target - eps * smooth
    return grad
