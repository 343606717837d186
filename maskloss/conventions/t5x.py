r"""T5X ``compute_weighted_cross_entropy`` and its loss-normalising factors, in NumPy.

Reproduces ``t5x/losses.py`` (T5X 0.x, source read at google-research/t5x commit
08058ed): ``compute_weighted_cross_entropy``, ``SpecialLossNormalizingFactor`` and
``get_loss_normalizing_factor_and_weights``, with T5X's names, defaults and return values;
results are float64. The flax examples (wmt, lm1b ``train.py``) use the same smoothed
loss without z-loss and divide by :math:`\sum w` per device.

Per step, with :math:`V` classes, confidence :math:`c = 1 - \varepsilon`, off value
:math:`o = \varepsilon/(V-1)` and :math:`\mathrm{lse} = \log\sum_k e^{x_k}`:

.. math::
    \ell = -c\,\mathrm{lp}_y - o\sum_{k\ne y}\mathrm{lp}_k + z\,\mathrm{lse}^2 - H,
    \qquad H = -\big(c\log c + (V-1)\,o\log(o + 10^{-20})\big)

and the function returns the sums :math:`(\sum \ell w / F,\ \sum z\,\mathrm{lse}^2 w / F,\
\sum w)` (:math:`F` = ``loss_normalizing_factor``, 1 when None).

Quirks, stated plainly:

* No averaging: the loss is a *sum*, and the returned loss *includes* the z-loss (the
  second value is the z-loss part alone, for logging).
* :math:`H` (the soft target's entropy, with T5X's ``1e-20``) is subtracted so that a
  prediction equal to the soft target scores exactly 0; the loss is a KL divergence, not a
  cross-entropy. ``label_smoothing=1`` gives NaN (``0 * log 0``), as in T5X.
* T5X multiplies plainly: a ``-inf`` logit at a weighted step with ``label_smoothing=0``
  gives ``0 * -inf = NaN``; reproduced. Zero-weight steps are never read here (T5X
  multiplies them by 0, so NaN there leaks into T5X's sum).
* ``weights=None`` counts every step, padding included, and ``weight_sum = B*T``.
* T5X's one-hot of an out-of-range target is all "off"; here a target outside ``[0, V)``
  at a weighted step is an error.
* The normalising factor is divided per step, before the sum; the special factors
  (:class:`SpecialLossNormalizingFactor`) are turned into a number and new weights by
  :func:`get_loss_normalizing_factor_and_weights` (``NUM_REAL_TARGET_TOKENS``:
  :math:`\sum w`; ``NUM_TOTAL_TARGET_TOKENS``: :math:`B\cdot T`; ``AVERAGE_PER_SEQUENCE``:
  weights :math:`w/\sum_t w` (0 for empty sequences), factor = their sum = the number of
  non-empty sequences). A factor of 0 (all masked) gives NaN.

Examples
--------
>>> import numpy as np
>>> from maskloss.conventions import t5x
>>> logits = np.log([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]])
>>> targets = np.array([[0, 1, 0]])            # T5X pads with id 0 ...
>>> weights = (np.array([[1, 1, 0]]) > 0).astype(float)   # ... and weights targets > 0
>>> loss, z_loss, weight_sum = t5x.compute_weighted_cross_entropy(logits, targets, weights)
>>> round(float(loss), 6), float(z_loss), float(weight_sum)   # ln 2 + ln 4/3
(0.980829, 0.0, 2.0)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import as_numeric, check_label_smoothing
from maskloss._types import FloatArray, IntArray
from maskloss.conventions._golden_steps import (
    check_scores,
    check_step_weights,
    check_targets,
    per_valid_row,
)

__all__ = [
    "SpecialLossNormalizingFactor",
    "compute_weighted_cross_entropy",
    "convert_special_loss_normalizing_factor_to_enum",
    "get_loss_normalizing_factor_and_weights",
]


def _log_normalizer(logits: FloatArray, log_p: FloatArray) -> FloatArray:
    """:math:`\\log\\sum_k e^{x_k}` read off a log-softmax row at its arg-max (exact there)."""
    top = np.argmax(logits, axis=-1)
    rows = np.arange(logits.shape[0])
    lse: FloatArray = logits[rows, top] - log_p[rows, top]
    return lse


def _soft_target_terms(vocab: int, label_smoothing: float) -> tuple[float, float, float]:
    """T5X's (confidence, low_confidence, normalizing_constant), in float64."""
    confidence = 1.0 - label_smoothing
    low = (1.0 - confidence) / (vocab - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        constant = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
    return confidence, low, float(constant)


def compute_weighted_cross_entropy(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    loss_normalizing_factor: float | None = None,
) -> tuple[np.float64, np.float64, np.float64]:
    r"""T5X's weighted, label-smoothed cross-entropy with z-loss: ``(loss, z_loss, weight_sum)``.

    See :mod:`maskloss.conventions.t5x` for the formula and quirks.

    Parameters
    ----------
    logits : array_like, shape (B, T, V) (any ``targets.shape + (V,)``)
    targets : array_like of int, shape (B, T)
    weights : array_like, shape (B, T), optional
        Finite, >= 0; a zero-weight step is never read. ``None``: every step counts.
    label_smoothing : float in [0, 1]
    z_loss : float
        Coefficient of :math:`\mathrm{lse}^2` (PaLM/T5X use ``1e-4``).
    loss_normalizing_factor : float, optional
        Divides every step's loss and z-loss (T5X: "intended for backward compatibility
        with T5-MTF"); a special factor must first go through
        :func:`get_loss_normalizing_factor_and_weights`.

    Returns
    -------
    (loss, z_loss, weight_sum) : numpy.float64 each
        Summed loss (z-loss included), summed z-loss, and :math:`\sum w` (or ``B*T``).

    Examples
    --------
    With smoothing, a prediction equal to the soft target costs 0 (here ``V = 3``,
    ``eps = 0.3``: target ``[0.7, 0.15, 0.15]``):

    >>> import numpy as np
    >>> from maskloss.conventions.t5x import compute_weighted_cross_entropy
    >>> logits = np.log([[[0.7, 0.15, 0.15]]])
    >>> loss, _, _ = compute_weighted_cross_entropy(logits, [[0]], label_smoothing=0.3)
    >>> abs(float(loss)) < 1e-15
    True
    """
    lg = check_scores(logits, "logits")
    t = as_numeric(targets, "targets")
    if lg.ndim != t.ndim + 1:
        raise ValueError(f"Incorrect shapes. Got shape {lg.shape} logits and {t.shape} targets")
    vocab = lg.shape[-1]
    if vocab < 2:
        raise ValueError(f"logits need V >= 2 classes (T5X divides by V - 1), got shape {lg.shape}")
    steps = lg.shape[:-1]
    eps = check_label_smoothing(label_smoothing)
    z = float(as_numeric(z_loss, "z_loss"))
    if not np.isfinite(z):
        raise ValueError(f"z_loss must be finite, got {z_loss!r}")
    if loss_normalizing_factor is not None:
        if isinstance(loss_normalizing_factor, (str, SpecialLossNormalizingFactor)):
            raise TypeError(
                f"loss_normalizing_factor={loss_normalizing_factor!r} is special: turn it into a number and "
                "weights with get_loss_normalizing_factor_and_weights(factor, batch) first, as T5X does"
            )
        factor = float(as_numeric(loss_normalizing_factor, "loss_normalizing_factor"))
    w = None if weights is None else check_step_weights(weights, steps)
    valid = np.ones(steps, dtype=bool) if w is None else w != 0
    labels = check_targets(t, steps, valid, vocab)
    confidence, low, constant = _soft_target_terms(vocab, eps)

    def rows(lab: IntArray, x: FloatArray) -> FloatArray:
        log_p = pointwise.log_softmax(x)
        soft = np.full(log_p.shape, low)
        soft[np.arange(lab.size), lab] = confidence
        lse = _log_normalizer(x, log_p)
        with np.errstate(invalid="ignore"):
            cross = -np.sum(soft * log_p, axis=-1)
        total_z = z * np.square(lse)
        return np.stack([cross + total_z - constant, total_z], axis=-1)

    total_loss, total_z_loss = per_valid_row(rows, valid, labels, lg, 2)
    weight_sum = np.float64(np.prod(steps)) if w is None else np.float64(w.sum())
    if w is not None:
        total_loss, total_z_loss = total_loss * w, total_z_loss * w
    if loss_normalizing_factor is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            total_loss, total_z_loss = total_loss / factor, total_z_loss / factor
    return np.float64(total_loss.sum()), np.float64(total_z_loss.sum()), weight_sum


@enum.unique
class SpecialLossNormalizingFactor(enum.Enum):
    """T5X's special loss-normalising factors (computed per batch, not constants)."""

    NUM_REAL_TARGET_TOKENS = 1
    NUM_TOTAL_TARGET_TOKENS = 2
    AVERAGE_PER_SEQUENCE = 3


def convert_special_loss_normalizing_factor_to_enum(x: str) -> SpecialLossNormalizingFactor:
    """The enum member named ``x`` (case-insensitive), as T5X's gin configs spell it.

    >>> convert_special_loss_normalizing_factor_to_enum("average_per_sequence")
    <SpecialLossNormalizingFactor.AVERAGE_PER_SEQUENCE: 3>
    """
    try:
        return SpecialLossNormalizingFactor[x.upper()]
    except (KeyError, AttributeError):
        raise ValueError(f'Could not convert string "{x}" to SpecialLossNormalizingFactor') from None


def _segment_sums(
    weights: FloatArray, positions: npt.NDArray[Any], segment_ids: npt.NDArray[Any]
) -> FloatArray:
    """Per packed segment, the sum of its weights at each of its positions; 0 at padding.

    A segment starts where ``positions == 0`` (T5X's rule; padding assumed at the end).
    """
    starts = positions == 0
    segment = np.cumsum(starts, axis=-1) + np.arange(weights.shape[0])[:, None] * (weights.shape[1] + 1)
    keys, inverse = np.unique(segment.ravel(), return_inverse=True)
    sums = np.bincount(inverse, weights=weights.ravel(), minlength=keys.size)
    return np.where(segment_ids != 0, sums[inverse].reshape(weights.shape), 0.0)


def get_loss_normalizing_factor_and_weights(
    loss_normalizing_factor: float | int | str | SpecialLossNormalizingFactor | None,
    batch: Mapping[str, npt.ArrayLike],
) -> tuple[Any, FloatArray | None]:
    r"""T5X's ``(loss_normalizing_factor, loss_weights)`` for a batch.

    ``batch`` holds ``"decoder_target_tokens"`` (B, T) and optionally
    ``"decoder_loss_weights"`` (default: ``targets > 0``, pad id 0), and for packed
    examples ``"decoder_segment_ids"`` and ``"decoder_positions"``. A number or None is
    returned unchanged with the batch's weights (or None).

    ==========================  ====================================  =======================
    factor                      returned factor                       returned weights
    ==========================  ====================================  =======================
    NUM_REAL_TARGET_TOKENS      :math:`\sum w`                        :math:`w`
    NUM_TOTAL_TARGET_TOKENS     :math:`B \cdot T`                     :math:`w`
    AVERAGE_PER_SEQUENCE        :math:`\#\{b: \sum_t w_{bt} > 0\}`    :math:`w / \sum_t w`
    ==========================  ====================================  =======================

    (for packed examples the per-sequence sums run over each packed segment.)

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.t5x import get_loss_normalizing_factor_and_weights
    >>> batch = {"decoder_target_tokens": np.array([[5, 6, 7, 0], [8, 0, 0, 0], [0, 0, 0, 0]])}
    >>> factor, w = get_loss_normalizing_factor_and_weights("AVERAGE_PER_SEQUENCE", batch)
    >>> float(factor)
    2.0
    >>> w.round(4)
    array([[0.3333, 0.3333, 0.3333, 0.    ],
           [1.    , 0.    , 0.    , 0.    ],
           [0.    , 0.    , 0.    , 0.    ]])
    """
    raw_weights = batch.get("decoder_loss_weights", None)
    if not isinstance(loss_normalizing_factor, (str, SpecialLossNormalizingFactor)):
        passed = None if raw_weights is None else np.asarray(raw_weights, dtype=np.float64)
        return loss_normalizing_factor, passed
    if isinstance(loss_normalizing_factor, str):
        loss_normalizing_factor = convert_special_loss_normalizing_factor_to_enum(loss_normalizing_factor)
    if "decoder_target_tokens" not in batch:
        raise ValueError("batch must hold 'decoder_target_tokens' of shape (batch, length)")
    tokens = as_numeric(batch["decoder_target_tokens"], "decoder_target_tokens")
    if tokens.ndim != 2:
        raise ValueError(f"decoder_target_tokens must have shape (batch, length), got {tokens.shape}")
    if raw_weights is None:
        w = (tokens > 0).astype(np.float64)
    else:
        w = check_step_weights(raw_weights, tokens.shape, name="decoder_loss_weights")
    if loss_normalizing_factor is SpecialLossNormalizingFactor.NUM_REAL_TARGET_TOKENS:
        return np.float64(w.sum()), w
    if loss_normalizing_factor is SpecialLossNormalizingFactor.NUM_TOTAL_TARGET_TOKENS:
        return np.float64(tokens.size), w
    if "decoder_segment_ids" in batch:
        segment_ids = as_numeric(batch["decoder_segment_ids"], "decoder_segment_ids")
        positions = as_numeric(batch["decoder_positions"], "decoder_positions")
        if segment_ids.shape != tokens.shape or positions.shape != tokens.shape:
            raise ValueError(
                f"decoder_segment_ids {segment_ids.shape} and decoder_positions {positions.shape} must "
                f"have the "
                f"shape of decoder_target_tokens {tokens.shape}"
            )
        norm = _segment_sums(w, positions, segment_ids)
    else:
        norm = np.broadcast_to(w.sum(axis=-1, keepdims=True), w.shape)
    scaled = np.divide(w, norm, out=np.zeros_like(w), where=norm != 0)
    return np.float64(scaled.sum()), scaled
