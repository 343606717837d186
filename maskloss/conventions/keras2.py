r"""Keras 2 (multi-backend Keras 2.0 - 2.3): the legacy masked, weighted objective.

Keras 2.0-2.2.x wrapped every loss in ``weighted_masked_objective``
(``keras/engine/training_utils.py`` in keras-team/keras 2.2.x; ``training.py`` before
2.2): with per-step scores :math:`L` from ``fn(y_true, y_pred)``,

.. code-block:: python

    score_array *= mask
    score_array /= K.mean(mask)              # 2.2.5: K.mean(mask) + K.epsilon()
    if weights is not None:
        score_array = K.mean(score_array, axis=list(range(weight_ndim, ndim)))
        score_array *= weights
        score_array /= K.mean(K.cast(K.not_equal(weights, 0), K.floatx()))
    return K.mean(score_array)

which comes to, with :math:`K` the number of weight entries (``B`` for per-sample
weights, ``B·T`` for temporal ones) and :math:`N = B\,T`:

.. math::
    \text{value} = \frac{\tfrac1N\sum_{bt} L\,m\,w}{\big(\tfrac1N\sum m + \epsilon\big)\,
                   \tfrac1K\,\operatorname{nnz}(w)}

* default weights (Keras passes ones): :math:`\sum L m / \sum m`, the masked mean;
* per-sample weights :math:`(B,)`: :math:`\frac{B}{\operatorname{nnz}(w)}
  \sum_b w_b \sum_t L m / \sum m`, not a weighted mean;
* temporal weights :math:`(B, T)` equal to the mask normalise twice: the masked mean
  times :math:`N / \sum m`; weights at masked steps still count in
  :math:`\operatorname{nnz}(w)`.
* all masked: NaN (``0/0``); with ``epsilon`` (2.2.5): 0.

Keras 2.3 merged the mask into the sample weight and divided by the number of elements:
:math:`\sum L m w / (B\,T)` (:func:`keras23_objective`), 0 when all masked.

Keras 2 multiplies garbage at masked steps by 0 (NaN stays NaN); here it never reaches
the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_mask, check_sample_weight
from maskloss._types import BoolArray, FloatArray
from maskloss.reductions import MaskedTotals

__all__ = ["EPSILON_2_2_5", "keras23_objective", "masked_objective_value", "weighted_masked_objective"]

#: ``K.epsilon()``, added to ``mean(mask)`` from Keras 2.2.5.
EPSILON_2_2_5 = 1e-7

Objective = Callable[[Any, Any], Any]


def _scores_and_mask(
    scores: npt.ArrayLike, mask: npt.ArrayLike | None
) -> tuple[np.ndarray[Any, Any], BoolArray]:
    arr = as_numeric(scores, "scores", min_ndim=1)
    return arr, check_mask(mask, arr.shape)


def _check_weights(weights: npt.ArrayLike | None, valid: BoolArray) -> np.ndarray[Any, Any] | None:
    if weights is None:
        return None
    w = as_numeric(weights, "weights")
    shape = valid.shape
    if w.ndim == 0 or w.ndim > len(shape) or w.shape != shape[: w.ndim]:
        raise ValueError(
            f"weights must have shape {shape[:1]} (per sample) or {shape} (temporal, "
            f"sample_weight_mode='temporal'); got {w.shape}"
        )
    return w


def _numerator_totals(scores: np.ndarray[Any, Any], valid: BoolArray, w: FloatArray) -> MaskedTotals:
    """Per-sequence sums of :math:`L\\,m\\,w` over the valid steps, and of :math:`m`."""
    with np.errstate(invalid="ignore", over="ignore"):
        numerator = np.where(valid, w * np.where(valid, scores, 0.0).astype(np.float64), 0.0)
    return MaskedTotals.from_terms(numerator, valid.astype(np.float64))


def masked_objective_value(
    scores: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    weights: npt.ArrayLike | None = None,
    *,
    epsilon: float = 0.0,
) -> np.float64:
    r"""What Keras 2.0-2.2.x ``weighted_masked_objective`` returns for per-step ``scores``.

    Parameters
    ----------
    scores : array_like, shape (B, T)
        Per-step losses, ``fn(y_true, y_pred)``.
    mask : array_like of bool, shape (B, T), optional
        The output mask (True = valid); ``None``: no mask, no rescaling.
    weights : array_like, shape (B,) or (B, T), optional
        Per-sample or temporal weights, finite and >= 0 at valid steps. ``None`` skips the
        weighting step, which equals weights of ones.
    epsilon : float, default 0.0
        Added to ``mean(mask)``: 0 up to Keras 2.2.4, :data:`EPSILON_2_2_5` in 2.2.5.

    Returns
    -------
    numpy.float64 (NaN when every step is masked and ``epsilon`` is 0, or all weights are 0)

    Examples
    --------
    Golden numbers of transcribed Keras 2.2 and 2.3 runs (``docs/appendix/provenance.md``):

    >>> import numpy as np
    >>> from maskloss.conventions import keras2
    >>> L = np.random.default_rng(0).random((3, 5))
    >>> m = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    >>> float(keras2.masked_objective_value(L, m))
    0.6101289787139047
    >>> round(float(keras2.masked_objective_value(L, m, [2.0, 0.0, 0.5])), 15)  # 0.38389510451730086
    0.383895104517301
    >>> float(keras2.masked_objective_value(L, m, m))   # temporal weights = mask
    1.0168816311898412
    """
    arr, valid = _scores_and_mask(scores, mask)
    w = _check_weights(weights, valid)
    totals = _numerator_totals(arr, valid, check_sample_weight(w, valid))
    n_steps = float(arr.size)
    # score *= m; score /= mean(m) + eps   (skipped without a mask)
    mask_scale = 1.0 if mask is None else float(totals.denominator.sum()) / n_steps + epsilon
    # score *= w; score /= mean(w != 0)    (weights at masked steps count too)
    weight_scale = 1.0 if w is None else float(np.count_nonzero(w)) / w.size
    mean = float(totals.value("sum")) / n_steps
    with np.errstate(invalid="ignore", divide="ignore"):
        value: np.float64 = np.float64(mean) / np.float64(mask_scale * weight_scale)
    return value


def weighted_masked_objective(fn: Objective, *, epsilon: float = 0.0) -> Callable[..., np.float64]:
    r"""Keras 2's wrapper: ``weighted_masked_objective(fn)(y_true, y_pred, weights, mask)``.

    ``fn(y_true, y_pred)`` must return per-step scores of shape ``(B, T)`` (for example
    ``lambda t, p: maskloss.pointwise.squared_error(t, p)``, Keras's ``mse``); the result is
    :func:`masked_objective_value` of those scores. ``epsilon=EPSILON_2_2_5`` gives 2.2.5.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss import pointwise
    >>> from maskloss.conventions import keras2
    >>> mse = keras2.weighted_masked_objective(pointwise.squared_error)
    >>> y_true = np.zeros((1, 3, 1)); y_pred = np.array([[[1.0], [3.0], [0.0]]])
    >>> round(float(mse(y_true, y_pred, None, np.array([[True, True, False]]))), 6)   # (1 + 9) / 2
    5.0
    """

    def weighted(
        y_true: Any, y_pred: Any, weights: npt.ArrayLike | None = None, mask: npt.ArrayLike | None = None
    ) -> np.float64:
        with np.errstate(invalid="ignore", over="ignore"):
            scores = fn(np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64))
        return masked_objective_value(scores, mask, weights, epsilon=epsilon)

    return weighted


def keras23_objective(
    scores: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    weights: npt.ArrayLike | None = None,
) -> np.float64:
    r"""Keras 2.3 (and tf.keras TF 2.0-2.10): mask merged into the weight, padding counted.

    .. math:: \frac{\sum_{bt} L\,m\,w}{B\,T}

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions import keras2
    >>> L = np.random.default_rng(0).random((3, 5))
    >>> m = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    >>> float(keras2.keras23_objective(L, m))   # golden number, Keras 2.3 run
    0.3660773872283428
    >>> float(keras2.keras23_objective(L, np.zeros_like(m)))
    0.0
    """
    arr, valid = _scores_and_mask(scores, mask)
    w = _check_weights(weights, valid)
    return _numerator_totals(arr, valid, check_sample_weight(w, valid)).value("element_mean")
