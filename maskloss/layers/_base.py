r"""What every reference layer shares: weights in Keras order, seeded init, mask pass-through.

Weight initialisation (deterministic, from ``np.random.default_rng(seed)``; the arrays are
drawn in the order of :meth:`Layer.get_weights`, one generator per layer):

=====================  =======================================================
weight                 distribution
=====================  =======================================================
kernels (2-D)          Glorot uniform, :math:`U(-l, l)`, :math:`l = \sqrt{6/(\text{rows}+\text{cols})}`
biases                 :math:`U(-0.1, 0.1)` (Keras uses zeros: a non-zero bias makes
                       a masked step visibly change an RNN that ignores the mask)
embeddings             :math:`U(-0.05, 0.05)` (Keras's default)
=====================  =======================================================

The values only need to be fixed and reproducible; to compare with a framework, copy
its weights in with :meth:`Layer.set_weights` (Keras 3 layout, ``keras_layer.get_weights()``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_fits, check_mask
from maskloss._types import BoolArray, FloatArray
from maskloss.pointwise import log_softmax

__all__ = ["ACTIVATIONS", "Layer", "Mask", "activation", "as_sequences", "glorot", "input_mask"]

#: A layer's mask: one ``(B, T)`` bool array, None (no mask), or a list for multi-output layers.
Mask = Any



def _sigmoid(x: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # exact, and overflow-free for large |x|


def _hard_sigmoid(x: FloatArray) -> FloatArray:
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0  # Keras 3: relu6(x + 3) / 6


def _linear(x: FloatArray) -> FloatArray:
    return x


def _relu(x: FloatArray) -> FloatArray:
    return np.maximum(x, 0.0)


def _softmax(x: FloatArray) -> FloatArray:
    return np.exp(log_softmax(x))


#: Activations by their Keras name.
ACTIVATIONS: dict[str, Callable[[FloatArray], FloatArray]] = {
    "linear": _linear,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "relu": _relu,
    "softmax": _softmax,
}


def activation(name: str | None, argument: str) -> Callable[[FloatArray], FloatArray]:
    """The activation called ``name`` (None means linear), or a ValueError naming ``argument``."""
    key = "linear" if name is None else name
    if not isinstance(key, str) or key not in ACTIVATIONS:
        raise ValueError(f"{argument} must be one of {sorted(ACTIVATIONS)} or None, got {name!r}")
    return ACTIVATIONS[key]


def glorot(rng: np.random.Generator, shape: tuple[int, int]) -> FloatArray:
    r"""Glorot-uniform draw: :math:`U(-l, l)`, :math:`l = \sqrt{6 / (\text{rows} + \text{cols})}`."""
    limit = np.sqrt(6.0 / max(shape[0] + shape[1], 1))
    return rng.uniform(-limit, limit, size=shape)


def as_sequences(x: npt.ArrayLike, name: str = "x") -> FloatArray:
    """``x`` as a fresh float64 ``(B, T, F)`` array (never a view of the caller's array)."""
    arr = as_numeric(x, name)
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape (batch, steps, features), got shape {arr.shape}")
    return np.array(arr, dtype=np.float64)


def input_mask(mask: Mask, x: np.ndarray[Any, Any]) -> BoolArray | None:
    """Validate an incoming ``(B, T)`` mask against the steps of ``x``; None stays None.

    A list of masks (from a multi-output layer) contributes its first, as in Keras's ``RNN``.
    """
    if isinstance(mask, list):
        mask = mask[0]
    if mask is None:
        return None
    return check_mask(mask, tuple(x.shape[:2]))


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


class Layer:
    """Base of the reference layers.

    A subclass describes its weights with :meth:`weight_shapes` (Keras order) and draws
    them in :meth:`init_weights`; weights are created on the first call (or loaded with
    :meth:`set_weights`). The default :meth:`compute_mask` passes the mask on unchanged,
    as a Keras layer with ``supports_masking=True`` does.
    """

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = _check_seed(seed)
        self._weights: list[FloatArray] | None = None
        self.input_dim: int | None = None

    # -- weights -------------------------------------------------------------------
    def weight_shapes(self, input_dim: int) -> list[tuple[int, ...]]:
        """Shapes of the weights for inputs with ``input_dim`` features, in Keras order."""
        return []

    def init_weights(self, input_dim: int, rng: np.random.Generator) -> list[FloatArray]:
        """Draw fresh weights (see the module docstring for the distributions)."""
        return []

    def input_dim_of(self, weights: Sequence[FloatArray]) -> int:
        """The input width implied by a weight list (the kernel's first axis)."""
        return int(weights[0].shape[0])

    def build(self, input_dim: int) -> None:
        """Create the weights for ``input_dim`` features unless they exist; check the width."""
        if self._weights is None:
            shapes = self.weight_shapes(input_dim)
            check_fits(8 * sum(math.prod(shape) for shape in shapes),
                       f"{self!r} with {input_dim} input features (weights of shapes {shapes})")
            self._weights = self.init_weights(input_dim, np.random.default_rng(self.seed))
            self.input_dim = input_dim
        elif self.input_dim is not None and input_dim != self.input_dim:
            raise ValueError(
                f"{type(self).__name__} was built for {self.input_dim} input features, got {input_dim}"
            )

    @property
    def weights(self) -> list[FloatArray]:
        """The weights (built on first call); raises if the layer has none yet."""
        if self._weights is None:
            raise ValueError(f"{type(self).__name__} has no weights yet: call it once or use set_weights")
        return self._weights

    def get_weights(self) -> list[FloatArray]:
        """Copies of the weights, in the order of Keras 3 ``get_weights()``."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[npt.ArrayLike]) -> None:
        """Load weights in Keras 3 order, e.g. ``layer.set_weights(keras_layer.get_weights())``."""
        given: object = weights  # untyped callers pass anything
        if isinstance(given, (str, bytes, np.ndarray)) or not isinstance(given, (list, tuple)):
            raise TypeError(
                f"weights for {type(self).__name__} must be a list of arrays (as get_weights() returns), "
                f"got {type(given).__name__} {given!r:.80}"
            )
        arrays = [np.array(as_numeric(w, f"weights[{i}]"), dtype=np.float64) for i, w in enumerate(weights)]
        if not arrays and not self.weight_shapes(1):
            return
        if not arrays:
            raise ValueError(f"weights for {type(self).__name__} must not be empty")
        input_dim = self.input_dim_of(arrays)
        expected = self.weight_shapes(input_dim)
        got = [a.shape for a in arrays]
        if got != expected:
            raise ValueError(f"weights for {type(self).__name__} must have shapes {expected}, got {got}")
        self._weights = arrays
        self.input_dim = input_dim

    # -- call and masks ------------------------------------------------------------
    def __call__(self, x: npt.ArrayLike, mask: Mask = None) -> Any:
        """The layer's output for ``x``; subclasses define it."""
        raise NotImplementedError  # pragma: no cover

    def compute_mask(self, x: npt.ArrayLike, mask: Mask = None) -> Mask:
        """The output mask: the input mask, unchanged (Keras ``supports_masking=True``)."""
        return mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
