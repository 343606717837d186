r"""``Bidirectional``: a forward and a backward copy of an RNN layer, merged.

Keras rules reproduced here:

- the forward layer is a copy of ``layer``'s configuration, the backward one the same
  with ``go_backwards=True`` (fresh weights: seeds ``layer.seed`` and ``layer.seed + 1``);
- both copies get ``zero_output_for_mask = return_sequences``: masked steps of the
  merged sequence are zeros in both halves;
- with ``return_sequences`` the backward output is flipped back to forward time before
  merging; without it, each half is its output at its last valid step (for the
  backward half: the *first* valid step in time);
- ``compute_mask``: the input mask if ``return_sequences`` else None (a pair with
  ``merge_mode=None``), plus one None per state with ``return_state``;
- weights: the forward layer's, then the backward layer's (Keras 3 ``get_weights()``);
  ``initial_state``: forward states first, then backward states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._types import FloatArray
from maskloss.layers._base import Layer, Mask, as_sequences, input_mask
from maskloss.layers.recurrent import _Recurrent, sequence_mask

__all__ = ["Bidirectional"]

_MERGES = ("concat", "sum", "ave", "mul", None)


class Bidirectional(Layer):
    r"""Keras ``Bidirectional(layer, merge_mode="concat")`` over a reference RNN layer.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.layers import LSTM, Bidirectional
    >>> bi = Bidirectional(LSTM(2, return_sequences=True))
    >>> x = np.ones((1, 4, 3))
    >>> mask = np.array([[True, True, True, False]])
    >>> y = bi(x, mask=mask)
    >>> y.shape, y[0, 3].tolist()          # zeros at the masked step, both halves
    ((1, 4, 4), [0.0, 0.0, 0.0, 0.0])
    >>> bi.compute_mask(x, mask) is mask
    True
    """

    def __init__(self, layer: _Recurrent, merge_mode: str | None = "concat") -> None:
        if not isinstance(layer, _Recurrent):
            raise TypeError(f"layer must be a SimpleRNN, LSTM or GRU from maskloss.layers, got {layer!r}")
        if merge_mode not in _MERGES:
            raise ValueError(f"merge_mode must be one of {_MERGES}, got {merge_mode!r}")
        if layer.go_backwards:
            raise ValueError("layer must have go_backwards=False: Bidirectional makes the backward copy")
        super().__init__(seed=layer.seed)
        zero = layer.return_sequences
        self.forward_layer = layer.clone(zero_output_for_mask=zero)
        self.backward_layer = layer.clone(
            go_backwards=True, zero_output_for_mask=zero, seed=layer.seed + 1
        )
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state

    # -- weights: the two halves', concatenated ----------------------------------------
    def get_weights(self) -> list[FloatArray]:
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def set_weights(self, weights: Sequence[npt.ArrayLike]) -> None:
        half = len(weights) // 2
        self.forward_layer.set_weights(weights[:half])
        self.backward_layer.set_weights(weights[half:])

    @property
    def weights(self) -> list[FloatArray]:
        return self.forward_layer.weights + self.backward_layer.weights

    # -- call ----------------------------------------------------------------------
    def __call__(
        self, x: npt.ArrayLike, mask: Mask = None, initial_state: Sequence[npt.ArrayLike] | None = None
    ) -> Any:
        """The merged output (a pair with ``merge_mode=None``), then the states with ``return_state``."""
        arr = as_sequences(x)
        valid = input_mask(mask, arr)
        n = self.forward_layer.n_states
        if initial_state is not None and len(initial_state) != 2 * n:
            raise ValueError(
                f"initial_state must hold {2 * n} arrays (forward states, then backward), "
                f"got {len(initial_state)}"
            )
        fwd_state = None if initial_state is None else list(initial_state[:n])
        bwd_state = None if initial_state is None else list(initial_state[n:])
        y = self.forward_layer(arr, mask=valid, initial_state=fwd_state)
        y_rev = self.backward_layer(arr, mask=valid, initial_state=bwd_state)
        states: list[FloatArray] = []
        if self.return_state:
            states = list(y[1:]) + list(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = np.flip(y_rev, axis=1)
        merged = _merge(y, y_rev, self.merge_mode)
        if not self.return_state:
            return merged
        return (merged if isinstance(merged, list) else [merged]) + states

    def compute_mask(self, x: npt.ArrayLike, mask: Mask = None) -> Mask:
        out = sequence_mask(x, mask, self.return_sequences)
        outputs: list[Any] = [out, out] if self.merge_mode is None else [out]
        if self.return_state:
            return outputs + [None] * (2 * self.forward_layer.n_states)
        return outputs if self.merge_mode is None else out

    def __repr__(self) -> str:
        return f"Bidirectional({self.forward_layer!r}, merge_mode={self.merge_mode!r})"


def _merge(y: FloatArray, y_rev: FloatArray, merge_mode: str | None) -> FloatArray | list[FloatArray]:
    if merge_mode == "concat":
        return np.concatenate([y, y_rev], axis=-1)
    if merge_mode == "sum":
        return y + y_rev
    if merge_mode == "ave":
        return (y + y_rev) / 2.0
    if merge_mode == "mul":
        return y * y_rev
    return [y, y_rev]
