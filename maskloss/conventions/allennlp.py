r"""AllenNLP ``allennlp.nn.util.sequence_cross_entropy_with_logits``, in NumPy.

Reproduces the function of ``allennlp/nn/util.py`` in AllenNLP 1.x and 2.x (up to 2.10.1,
the last release; source read at allenai/allennlp commit 00a0716) with the same argument
names, defaults and output shapes; results are float64.

With step weights :math:`w` (bool or float, the mask), :math:`\ell_{bt}` the step's
negative log-likelihood (label-smoothed if asked), the focal factor
:math:`f_{bt} = (1 - p_{y})^{\gamma}` and the class factor :math:`\alpha_{y}`:

.. math::
    N_b = \sum_t \ell_{bt}\, w_{bt} f_{bt} \alpha_{y_{bt}}, \qquad
    D_b = \sum_t w_{bt}, \qquad \tau = 10^{-13}

================  ==============================================================  ========
``average``       value                                                           shape
================  ==============================================================  ========
``"batch"``       :math:`\sum_b \frac{N_b}{D_b + \tau} \Big/ (K + \tau)`,         ``()``
                  :math:`K = \#\{b : D_b > 0\}`
``"token"``       :math:`\sum_b N_b / (\sum_b D_b + \tau)`                        ``()``
``None``          :math:`N_b / (D_b + \tau)`                                      ``(B,)``
================  ==============================================================  ========

Quirks, stated plainly:

* ``"batch"`` (the default) is a *mean of per-sequence means*: a short sequence counts as
  much as a long one. Empty sequences (:math:`D_b = 0`) are left out of :math:`K`.
* :math:`\tau` is ``tiny_value_of_dtype``: ``1e-13`` for float32/float64 logits, ``1e-4``
  for float16 (mirrored from the input dtype). So nothing is ever NaN: an all-masked batch
  gives 0, and a full batch is off by a relative ~1e-13.
* Label smoothing is torch's: target :math:`(1-\varepsilon)` on the gold class plus
  :math:`\varepsilon/C` on every class (the gold one too).
* ``gamma`` and ``alpha`` multiply the *numerator only*: the denominators :math:`D_b`
  use the raw weights. ``gamma`` is applied only if truthy (``gamma=0`` means none).
  A scalar ``alpha`` means ``[1 - alpha, alpha]`` (binary labels: any other label is an
  error); a list gives one factor per class.
* AllenNLP multiplies by the weights, so NaN logits or out-of-range targets at a
  zero-weight step give NaN or an index error there; here zero-weight steps are never read.
* Here weights must be finite and >= 0 and ``label_smoothing`` in ``[0, 1]`` (AllenNLP
  checks neither).

Examples
--------
Two sequences with 2 and 1 valid steps, step losses ``[[ln 2, ln 4/3], [ln 10/9, .]]``:

>>> import numpy as np
>>> from maskloss.conventions.allennlp import sequence_cross_entropy_with_logits
>>> logits = np.log([[[0.5, 0.5], [0.25, 0.75]], [[0.9, 0.1], [0.5, 0.5]]])
>>> targets = np.array([[0, 1], [0, 0]])
>>> weights = np.array([[1, 1], [1, 0]], dtype=bool)
>>> round(float(sequence_cross_entropy_with_logits(logits, targets, weights)), 6)
0.297888
>>> round(float(sequence_cross_entropy_with_logits(logits, targets, weights, average="token")), 6)
0.362063
>>> sequence_cross_entropy_with_logits(logits, targets, weights, average=None).round(6)
array([0.490415, 0.105361])
"""

from __future__ import annotations

import numbers
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
from maskloss.reductions import MaskedTotals

__all__ = ["sequence_cross_entropy_with_logits", "tiny_value_of_dtype"]

AVERAGES = (None, "token", "batch")


def tiny_value_of_dtype(dtype: npt.DTypeLike) -> float:
    """AllenNLP's ``tiny_value_of_dtype``: 1e-13 for float32/float64, 1e-4 for float16.

    Non-float inputs (ints, bools) count as float32 here, the dtype AllenNLP would see
    after ``logits.float()``.

    >>> tiny_value_of_dtype(np.float16), tiny_value_of_dtype(np.float64)
    (0.0001, 1e-13)
    """
    return 1e-4 if np.dtype(dtype) == np.float16 else 1e-13


def _is_real(value: object) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, numbers.Real)


def _alpha_factor(alpha: object) -> FloatArray | None:
    """AllenNLP's ``alpha_factor``: scalar => ``[1 - alpha, alpha]``, sequence => per class."""
    if alpha is None:
        return None
    if _is_real(alpha):
        assert isinstance(alpha, numbers.Real)
        return np.array([1.0 - float(alpha), float(alpha)])
    if isinstance(alpha, (list, tuple, np.ndarray)):
        arr = as_numeric(alpha, "alpha").astype(np.float64)
        if arr.ndim == 0:
            return np.array([1.0 - float(arr), float(arr)])
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"alpha must be a float or a 1-D list of class factors; got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"alpha must be finite, got {arr.tolist()!r}")
        return arr
    raise TypeError(f"alpha must be float, list of float, or an array, {type(alpha)} provided.")


def _broadcast_steps(weight_shape: tuple[int, ...], steps: tuple[int, ...]) -> tuple[int, ...]:
    """The steps' shape once the weights broadcast against them (same number of axes only)."""
    try:
        if len(weight_shape) != len(steps):
            raise ValueError
        return tuple(np.broadcast_shapes(weight_shape, steps))
    except ValueError:
        raise ValueError(
            f"weights must have the steps' shape {steps} (logits.shape[:-1]) or broadcast against it "
            f"with the same number of axes; got {weight_shape}"
        ) from None


def sequence_cross_entropy_with_logits(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    weights: npt.ArrayLike,
    average: str | None = "batch",
    label_smoothing: float | None = None,
    gamma: float | None = None,
    alpha: float | list[float] | npt.ArrayLike | None = None,
) -> Any:
    r"""Weighted sequence cross-entropy, averaged as AllenNLP does.

    See the table in :mod:`maskloss.conventions.allennlp` for the three ``average`` modes.
    Per valid step (non-zero weight):

    .. math::
        \ell = (1-\varepsilon)(-\log p_y) + \frac{\varepsilon}{C}\sum_c(-\log p_c),
        \qquad n = \ell \cdot w \cdot (1 - p_y)^{\gamma} \cdot \alpha_y

    Parameters
    ----------
    logits : array_like, shape (B, ..., C)
    targets : array_like of int, shape (B, ...)
        Gold classes; anything at zero-weight steps.
    weights : array_like of bool or float, shape (B, ...)
        Step weights (the mask), finite and >= 0; as in AllenNLP, weights of the same number
        of axes that broadcast against the steps are accepted (each weight row then sees the
        broadcast logits and targets).
    average : {"batch", "token", None}, default "batch"
    label_smoothing : float in [0, 1], optional
        ``None`` or 0 for no smoothing.
    gamma : float, optional
        Focal-loss focusing parameter; ``None`` or 0 for none.
    alpha : float, list of float or 1-D array, optional
        Focal-loss class factor (numerator only).

    Returns
    -------
    numpy.float64, or ndarray of shape (B,) when ``average`` is None

    Examples
    --------
    Focal factor, one step with :math:`p_y = 0.75`: :math:`(1-0.75)^2 \ln(4/3)`.

    >>> import numpy as np
    >>> from maskloss.conventions.allennlp import sequence_cross_entropy_with_logits
    >>> logits = np.log([[[0.25, 0.75]]])
    >>> round(float(sequence_cross_entropy_with_logits(logits, [[1]], [[1.0]], gamma=2.0)), 8)
    0.01798013
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of None, 'token' or 'batch'; got {average!r}")
    lg = check_scores(logits, "logits")
    if lg.ndim < 2:
        raise ValueError(f"logits must have shape (batch, ..., classes), got {lg.shape}")
    num_classes = lg.shape[-1]
    steps = lg.shape[:-1]
    w_given = as_numeric(weights, "weights")
    if w_given.shape != steps:
        # AllenNLP multiplies the per-step losses by the weights, so weights of the same rank
        # broadcast against the steps (its own label-smoothing test passes (2, 3) weights with
        # (1, 3, C) logits): every weight row sees the broadcast logits and targets.
        steps = _broadcast_steps(w_given.shape, steps)
        t_given = as_numeric(targets, "targets")
        if t_given.shape != lg.shape[:-1]:
            raise ValueError(f"targets must have shape {lg.shape[:-1]} (logits.shape[:-1]), got {t_given.shape}")
        lg = np.broadcast_to(lg, (*steps, num_classes))
        targets = np.broadcast_to(t_given, steps)
    w = check_step_weights(w_given, steps)
    valid = w != 0
    labels = check_targets(targets, steps, valid, num_classes)
    eps = 0.0 if label_smoothing is None else check_label_smoothing(label_smoothing)
    if gamma is not None and not _is_real(gamma):
        raise TypeError(f"gamma must be a real number or None, got {gamma!r}")
    focal = float(gamma) if gamma else 0.0
    alpha_factor = _alpha_factor(alpha)
    if alpha_factor is not None and np.any(valid & (labels >= alpha_factor.size)):
        bad = int(labels[valid & (labels >= alpha_factor.size)][0])
        raise ValueError(
            f"alpha has {alpha_factor.size} factors ({alpha_factor.tolist()!r}) but targets holds "
            f"class {bad} "
            f"at a weighted step; a scalar alpha is for binary labels 0/1"
        )

    def rows(lab: IntArray, x: FloatArray) -> FloatArray:
        log_p = pointwise.log_softmax(x)
        loss = pointwise.sparse_cross_entropy(lab, log_p, None, eps)
        if focal:
            loss = loss * (1.0 - np.exp(log_p[np.arange(lab.size), lab])) ** focal
        if alpha_factor is not None:
            loss = loss * alpha_factor[lab]
        return loss

    numerator = per_valid_row(rows, valid, labels, lg, 1)[0] * w
    totals = MaskedTotals.from_terms(numerator, w)
    tiny = tiny_value_of_dtype(lg.dtype if lg.dtype.kind == "f" else np.float32)
    if average == "token":
        return np.float64(totals.numerator.sum() / (totals.denominator.sum() + tiny))
    per_sequence = totals.numerator / (totals.denominator + tiny)
    if average is None:
        return per_sequence
    return np.float64(per_sequence.sum() / (np.count_nonzero(totals.denominator > 0) + tiny))
