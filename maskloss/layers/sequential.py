r"""``Sequential``: run a stack of reference layers, passing masks as Keras's functional graph does.

Each layer gets the mask the previous layer computed (``layer(x, mask=m)``), and the
next mask is ``layer.compute_mask(x, m)``: ``Masking``/``Embedding(mask_zero=True)``
create one, ``Dense`` passes it on, ``return_sequences=False`` and pooling drop it.
:meth:`Sequential.evaluate` applies the *output* mask to the loss, the way Keras
attaches ``output._keras_mask`` to the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._types import BoolArray, Reduction
from maskloss.layers._base import Layer, Mask
from maskloss.losses import (
    binary_crossentropy,
    categorical_crossentropy,
    mae,
    mse,
    sparse_categorical_crossentropy,
)

__all__ = ["LOSS_NAMES", "Sequential", "Trace"]

#: The names ``keras.losses.get`` accepts for the losses maskloss has: the function
#: names, the class names and Keras's short aliases (``"mae"``, ``"MSE"``, ``"bce"``...).
LOSS_NAMES: dict[str, Callable[..., Any]] = {
    **dict.fromkeys(["mae", "MAE", "mean_absolute_error", "MeanAbsoluteError"], mae),
    **dict.fromkeys(["mse", "MSE", "mean_squared_error", "MeanSquaredError"], mse),
    **dict.fromkeys(["bce", "BCE", "binary_crossentropy", "BinaryCrossentropy"], binary_crossentropy),
    **dict.fromkeys(["categorical_crossentropy", "CategoricalCrossentropy"], categorical_crossentropy),
    **dict.fromkeys(
        ["sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"], sparse_categorical_crossentropy
    ),
}


def _loss_function(loss: object) -> Callable[..., Any]:
    if isinstance(loss, str):
        if loss not in LOSS_NAMES:
            raise ValueError(f"loss must be a maskloss loss or one of {', '.join(LOSS_NAMES)}; got {loss!r}")
        return LOSS_NAMES[loss]
    if not callable(loss):
        raise TypeError(f"loss must be a loss function or its Keras name (such as 'mae'), got {loss!r}")
    return loss


@dataclass(frozen=True)
class Trace:
    """What one layer of a :class:`Sequential` produced: its output and its output mask."""

    layer: Layer
    output: Any
    mask: Mask


class Sequential:
    r"""A stack of single-output reference layers, with Keras's mask propagation.

    Parameters
    ----------
    layers : sequence of Layer
        Applied in order. Layers that return several arrays (``return_state=True``,
        ``Bidirectional(merge_mode=None)``) are not allowed, as in a Keras ``Sequential``.

    Examples
    --------
    The seed's model: ``Masking(0) -> LSTM(3, return_sequences=True)``, loss ``mae``.

    >>> import numpy as np, maskloss
    >>> from maskloss.layers import LSTM, Masking, Sequential
    >>> X = np.array([[[0, 0], [0, 0], [1, 0], [0, 1], [0, 1]],
    ...               [[0, 0], [0, 1], [1, 0], [0, 1], [0, 1]]], dtype=float)
    >>> model = Sequential([Masking(0.0), LSTM(3, return_sequences=True)])
    >>> model.compute_mask(X).astype(int)
    array([[0, 0, 1, 1, 1],
           [0, 1, 1, 1, 1]])
    >>> y_pred = model(X)
    >>> bool((y_pred[0, :2] == 0).all())           # leading masked steps emit h0 = 0
    True
    >>> y = np.ones((2, 5, 3))
    >>> loss = model.evaluate(X, y)                 # mean over the 7 valid steps
    >>> bool(np.isclose(loss, maskloss.mae(y, y_pred, model.compute_mask(X))))
    True
    >>> Sequential([Masking(0.0), LSTM(3)]).compute_mask(X) is None   # the mask stops here
    True
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        given: object = layers  # untyped callers pass anything
        if isinstance(given, Layer):
            raise TypeError(f"layers must be a list of layers, got a single layer; pass Sequential([{given!r}])")
        if isinstance(given, (str, bytes)) or not hasattr(given, "__iter__"):
            raise TypeError(f"layers must be a list of maskloss.layers layers, got {type(given).__name__} {given!r}")
        stack = list(layers)
        if not stack:
            raise ValueError("layers must hold at least one layer, got an empty sequence")
        for i, layer in enumerate(stack):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a maskloss.layers layer, got {layer!r}")
        self.layers = stack

    def trace(self, x: npt.ArrayLike) -> list[Trace]:
        """Run the stack and record every layer's output and output mask."""
        records: list[Trace] = []
        out: Any = x
        mask: Mask = None
        for i, layer in enumerate(self.layers):
            new = layer(out, mask=mask)
            if isinstance(new, list):
                raise ValueError(
                    f"layers[{i}] ({layer!r}) returns {len(new)} arrays; "
                    "Sequential takes single-output layers"
                )
            mask = layer.compute_mask(out, mask)
            out = new
            records.append(Trace(layer, out, mask))
        return records

    def __call__(self, x: npt.ArrayLike) -> Any:
        """The output of the last layer."""
        return self.trace(x)[-1].output

    def compute_mask(self, x: npt.ArrayLike) -> BoolArray | None:
        """The model's output mask, None when a layer dropped it."""
        mask: BoolArray | None = self.trace(x)[-1].mask
        return mask

    def evaluate(
        self,
        x: npt.ArrayLike,
        y_true: npt.ArrayLike,
        *,
        loss: Callable[..., Any] | str = mae,
        reduction: Reduction = "token_mean",
        sample_weight: npt.ArrayLike | None = None,
    ) -> Any:
        r"""The loss of the model's output against ``y_true``, with the output mask applied.

        ``loss(y_true, model(x), model.compute_mask(x), reduction=..., sample_weight=...)``;
        without an output mask every step counts. The default ``"token_mean"`` is the
        seed's Keras 2 semantics (``score *= mask; score /= mean(mask)``, then the mean)
        and, without sample weights, Keras 3's ``sum_over_batch_size``:
        :math:`\sum L m / \sum m`. ``loss`` is a maskloss loss or a name Keras gives it
        (``"mae"``, ``"mean_squared_error"``, ``"SparseCategoricalCrossentropy"``...; see
        :data:`LOSS_NAMES`).
        """
        fn = _loss_function(loss)
        last = self.trace(x)[-1]
        y_pred = np.asarray(last.output)
        return fn(y_true, y_pred, last.mask, reduction=reduction, sample_weight=sample_weight)

    def __repr__(self) -> str:
        return f"Sequential({self.layers!r})"
