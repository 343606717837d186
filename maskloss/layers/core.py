r"""Per-step and pooling layers: ``Dense`` passes the mask on, ``GlobalAveragePooling1D`` uses it up."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric
from maskloss._types import FloatArray
from maskloss.layers._base import Layer, Mask, _check_count, as_sequences, glorot, input_mask
from maskloss.layers._base import activation as get_activation
from maskloss.pointwise import overflow_free_mean

__all__ = ["Dense", "GlobalAveragePooling1D"]


class Dense(Layer):
    r"""Keras ``Dense(units, activation=None, use_bias=True)`` applied to every step.

    .. math:: y_{bt} = \sigma(x_{bt} K + b)

    Weights: ``[kernel (F, units), bias (units,)]``. The mask passes through unchanged;
    masked steps are computed like any other (the loss ignores them later).

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.layers import Dense
    >>> dense = Dense(2)
    >>> dense.set_weights([np.eye(2), np.array([1.0, -1.0])])
    >>> dense(np.array([[[1.0, 2.0], [0.0, 0.0]]])).tolist()
    [[[2.0, 1.0], [1.0, -1.0]]]
    >>> dense.compute_mask(None, np.array([[True, False]]))
    array([[ True, False]])
    """

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True, *, seed: int = 0):
        super().__init__(seed=seed)
        self.units = _check_count(units, "units")
        self.activation_name = activation
        self._activation = get_activation(activation, "activation")
        self.use_bias = bool(use_bias)

    def weight_shapes(self, input_dim: int) -> list[tuple[int, ...]]:
        return [(input_dim, self.units)] + ([(self.units,)] if self.use_bias else [])

    def init_weights(self, input_dim: int, rng: np.random.Generator) -> list[FloatArray]:
        kernel = glorot(rng, (input_dim, self.units))
        return [kernel] + ([rng.uniform(-0.1, 0.1, size=self.units)] if self.use_bias else [])

    def __call__(self, x: npt.ArrayLike, mask: Mask = None) -> FloatArray:
        arr = np.array(as_numeric(x, "x", min_ndim=1), dtype=np.float64)
        self.build(arr.shape[-1])
        z = arr @ self.weights[0]
        if self.use_bias:
            z = z + self.weights[1]
        return self._activation(z)

    def __repr__(self) -> str:
        return f"Dense({self.units}, activation={self.activation_name!r})"


class GlobalAveragePooling1D(Layer):
    r"""Keras ``GlobalAveragePooling1D``: the mean over the valid steps of each sequence.

    .. math:: y_{bf} = \frac{\sum_{t:\,m_{bt}} x_{btf}}{\sum_t m_{bt}}

    Masked steps are selected out (NaN there has no effect); a sequence with no valid
    step gives NaN (0/0, as Keras on jax). The output has no time axis, so no mask.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.layers import GlobalAveragePooling1D
    >>> x = np.array([[[1.0], [3.0], [np.nan]]])
    >>> GlobalAveragePooling1D()(x, mask=np.array([[True, True, False]])).tolist()
    [[2.0]]
    """

    def __call__(self, x: npt.ArrayLike, mask: Mask = None) -> FloatArray:
        arr = as_sequences(x)
        valid = input_mask(mask, arr)
        if valid is None:
            return overflow_free_mean(arr, 1, arr.shape[1])
        count = valid.sum(axis=1, keepdims=True).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return overflow_free_mean(np.where(valid[..., None], arr, 0.0), 1, count)

    def compute_mask(self, x: npt.ArrayLike, mask: Mask = None) -> None:
        """None: pooling removes the time axis, and the mask with it."""
        return None
