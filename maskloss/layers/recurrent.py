r"""``SimpleRNN``, ``LSTM`` and ``GRU`` with Keras 3's defaults, weight layout and mask rules.

Mask rules (Keras ``RNN``; the recurrence itself is in :mod:`maskloss.layers._scan`):

- a masked step leaves the states unchanged and emits the previous output (the initial
  state :math:`h_0` at a leading masked step), or zeros with ``zero_output_for_mask=True``;
- ``compute_mask``: the input mask if ``return_sequences`` else None; with
  ``return_state``, ``[output_mask, None, ...]`` (one None per state);
- ``return_sequences=False`` returns the output at the last valid step (the documented
  rule; ``zero_output_for_mask`` only applies to sequences);
- ``go_backwards`` processes time in reverse and returns the sequence in that order.

Weights (Keras 3 ``get_weights()`` order): ``[kernel (F, k·u), recurrent_kernel (u, k·u),
bias]`` with ``k`` = 1 (SimpleRNN), 4 (LSTM: gates i, f, c, o) or 3 (GRU: z, r, h);
GRU's bias is ``(2, 3u)`` (input and recurrent biases) with ``reset_after=True``, the
Keras 3 default, and ``(3u,)`` otherwise.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_flag
from maskloss._types import BoolArray, FloatArray
from maskloss.layers._base import Layer, Mask, _check_count, as_sequences, glorot, input_mask
from maskloss.layers._base import activation as get_activation
from maskloss.layers._scan import masked_scan

__all__ = ["GRU", "LSTM", "SimpleRNN"]


class _Recurrent(Layer):
    """Shared constructor, call and mask logic of the three RNN layers."""

    gates: ClassVar[int] = 1
    n_states: ClassVar[int] = 1

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        recurrent_activation: str | None = "sigmoid",
        use_bias: bool = True,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        zero_output_for_mask: bool = False,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        self.units = _check_count(units, "units")
        self.activation_name = activation
        self.recurrent_activation_name = recurrent_activation
        self._act = get_activation(activation, "activation")
        self._rec_act = get_activation(recurrent_activation, "recurrent_activation")
        for name, value in [
            ("use_bias", use_bias),
            ("return_sequences", return_sequences),
            ("return_state", return_state),
            ("go_backwards", go_backwards),
            ("zero_output_for_mask", zero_output_for_mask),
        ]:
            check_flag(value, name)
        self.use_bias = bool(use_bias)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.zero_output_for_mask = bool(zero_output_for_mask)

    # -- weights -------------------------------------------------------------------
    def bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.units,)

    def weight_shapes(self, input_dim: int) -> list[tuple[int, ...]]:
        width = self.gates * self.units
        shapes: list[tuple[int, ...]] = [(input_dim, width), (self.units, width)]
        return shapes + ([self.bias_shape()] if self.use_bias else [])

    def init_weights(self, input_dim: int, rng: np.random.Generator) -> list[FloatArray]:
        width = self.gates * self.units
        weights = [glorot(rng, (input_dim, width)), glorot(rng, (self.units, width))]
        return weights + ([rng.uniform(-0.1, 0.1, size=self.bias_shape())] if self.use_bias else [])

    def clone(self, **changes: Any) -> _Recurrent:
        """A copy with the same configuration (not weights) and some attributes changed."""
        new = copy.copy(self)
        new._weights = None
        new.input_dim = None
        for key, value in changes.items():
            setattr(new, key, value)
        return new

    # -- the cell ------------------------------------------------------------------
    def project(self, x: FloatArray) -> FloatArray:
        """The input part of every step at once: ``x K (+ b)``, shape (B, T, k·u)."""
        z = x @ self.weights[0]
        return z + self.weights[2] if self.use_bias else z

    def step(self, xk: FloatArray, states: list[FloatArray]) -> tuple[FloatArray, list[FloatArray]]:
        raise NotImplementedError  # pragma: no cover

    # -- call ----------------------------------------------------------------------
    def _initial_state(
        self, initial_state: Sequence[npt.ArrayLike] | FloatArray | None, batch: int
    ) -> list[FloatArray]:
        if initial_state is None:
            return [np.zeros((batch, self.units)) for _ in range(self.n_states)]
        if isinstance(initial_state, np.ndarray):
            initial_state = [initial_state]
        states = [np.array(as_numeric(s, "initial_state"), dtype=np.float64) for s in initial_state]
        shapes = [s.shape for s in states]
        if shapes != [(batch, self.units)] * self.n_states:
            raise ValueError(
                f"initial_state must be {self.n_states} array(s) of shape {(batch, self.units)}, "
                f"got shapes {shapes}"
            )
        return states

    def __call__(
        self, x: npt.ArrayLike, mask: Mask = None, initial_state: Sequence[npt.ArrayLike] | None = None
    ) -> Any:
        """Run the layer: the output, or ``[output, *states]`` with ``return_state``."""
        arr = as_sequences(x)
        valid = input_mask(mask, arr)
        self.build(arr.shape[2])
        states = self._initial_state(initial_state, arr.shape[0])
        with np.errstate(invalid="ignore", over="ignore"):  # garbage at masked steps stays there
            projected = self.project(arr)
        outputs, last, final = masked_scan(
            self.step,
            projected,
            valid,
            states,
            go_backwards=self.go_backwards,
            zero_output_for_mask=self.zero_output_for_mask,
        )
        out = outputs if self.return_sequences else last
        return [out, *final] if self.return_state else out

    def compute_mask(self, x: npt.ArrayLike, mask: Mask = None) -> Mask:
        """The input mask if ``return_sequences`` else None; ``[that, None, ...]`` with ``return_state``."""
        out = sequence_mask(x, mask, self.return_sequences)
        return [out] + [None] * self.n_states if self.return_state else out

    def __repr__(self) -> str:
        flags = [
            f"{name}=True"
            for name in ("return_sequences", "return_state", "go_backwards", "zero_output_for_mask")
            if getattr(self, name)
        ]
        return f"{type(self).__name__}({', '.join([str(self.units), *flags])})"



def sequence_mask(x: npt.ArrayLike, mask: Mask, return_sequences: bool) -> BoolArray | None:
    """The output mask of a recurrent layer: the input mask with ``return_sequences``, else None."""
    if not return_sequences or mask is None:
        return None
    return input_mask(mask, as_sequences(x))


class SimpleRNN(_Recurrent):
    r"""Keras ``SimpleRNN``: :math:`h_t = \tanh(x_t K + b + h_{t-1} R)`.

    Weights ``[kernel (F, u), recurrent_kernel (u, u), bias (u,)]``. See the module
    docstring for the mask rules.

    Examples
    --------
    One unit, weights chosen by hand; the leading masked step emits :math:`h_0 = 0`,
    the trailing one repeats the last valid output:

    >>> import numpy as np
    >>> from maskloss.layers import SimpleRNN
    >>> rnn = SimpleRNN(1, return_sequences=True)
    >>> rnn.set_weights([[[1.0]], [[0.5]], [0.0]])
    >>> x = np.array([[[9.0], [1.0], [2.0], [9.0]]])
    >>> mask = np.array([[False, True, True, False]])
    >>> np.round(rnn(x, mask=mask)[0, :, 0], 4).tolist()   # tanh(1), tanh(2 + 0.5 tanh(1))
    [0.0, 0.7616, 0.983, 0.983]
    """

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        use_bias: bool = True,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        zero_output_for_mask: bool = False,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__(
            units,
            activation,
            None,
            use_bias,
            return_sequences,
            return_state,
            go_backwards,
            zero_output_for_mask,
            seed=seed,
        )

    def step(self, xk: FloatArray, states: list[FloatArray]) -> tuple[FloatArray, list[FloatArray]]:
        h = self._act(xk + states[0] @ self.weights[1])
        return h, [h]


class LSTM(_Recurrent):
    r"""Keras 3 ``LSTM`` (``activation="tanh"``, ``recurrent_activation="sigmoid"``).

    .. math::
        [z_i, z_f, z_c, z_o] = x_t K + h_{t-1} R + b, \quad
        c_t = \sigma(z_f)\, c_{t-1} + \sigma(z_i) \tanh(z_c), \quad
        h_t = \sigma(z_o) \tanh(c_t)

    States ``[h, c]``; weights ``[kernel (F, 4u), recurrent_kernel (u, 4u), bias (4u,)]``.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.layers import LSTM
    >>> lstm = LSTM(3, return_sequences=True, seed=0)
    >>> x = np.ones((2, 4, 2))
    >>> mask = np.array([[False, True, True, True], [True, True, False, False]])
    >>> y = lstm(x, mask=mask)
    >>> y.shape, bool((y[0, 0] == 0).all()), bool((y[1, 3] == y[1, 1]).all())
    ((2, 4, 3), True, True)
    >>> lstm.compute_mask(x, mask) is mask
    True
    """

    gates = 4
    n_states = 2

    def step(self, xk: FloatArray, states: list[FloatArray]) -> tuple[FloatArray, list[FloatArray]]:
        h_prev, c_prev = states
        z_i, z_f, z_c, z_o = np.split(xk + h_prev @ self.weights[1], 4, axis=-1)
        c = self._rec_act(z_f) * c_prev + self._rec_act(z_i) * self._act(z_c)
        h = self._rec_act(z_o) * self._act(c)
        return h, [h, c]


class GRU(_Recurrent):
    r"""Keras 3 ``GRU`` (``reset_after=True`` by default).

    With ``reset_after=True`` (bias ``(2, 3u)``: input row, recurrent row):

    .. math::
        [x_z, x_r, x_h] = x_t K + b_{in}, \quad [r_z, r_r, r_h] = h_{t-1} R + b_{rec}, \\
        z = \sigma(x_z + r_z), \quad r = \sigma(x_r + r_r), \quad
        \tilde h = \tanh(x_h + r \odot r_h), \quad h_t = z\, h_{t-1} + (1 - z)\, \tilde h

    With ``reset_after=False`` (bias ``(3u,)``): :math:`\tilde h = \tanh(x_h + (r \odot h_{t-1}) R_h)`.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.layers import GRU
    >>> gru = GRU(2)
    >>> x = np.ones((1, 3, 4))
    >>> y = gru(x, mask=np.array([[True, True, False]]))   # last valid output
    >>> bool(np.allclose(y, GRU(2)(x[:, :2])))
    True
    >>> [w.shape for w in gru.get_weights()]
    [(4, 6), (2, 6), (2, 6)]
    """

    gates = 3

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        recurrent_activation: str | None = "sigmoid",
        use_bias: bool = True,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        zero_output_for_mask: bool = False,
        reset_after: bool = True,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__(
            units,
            activation,
            recurrent_activation,
            use_bias,
            return_sequences,
            return_state,
            go_backwards,
            zero_output_for_mask,
            seed=seed,
        )
        self.reset_after = check_flag(reset_after, "reset_after")

    def bias_shape(self) -> tuple[int, ...]:
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def project(self, x: FloatArray) -> FloatArray:
        z = x @ self.weights[0]
        if not self.use_bias:
            return z
        return z + (self.weights[2][0] if self.reset_after else self.weights[2])

    def step(self, xk: FloatArray, states: list[FloatArray]) -> tuple[FloatArray, list[FloatArray]]:
        (h_prev,) = states
        u = self.units
        recurrent = self.weights[1]
        x_z, x_r, x_h = np.split(xk, 3, axis=-1)
        if self.reset_after:
            inner = h_prev @ recurrent
            if self.use_bias:
                inner = inner + self.weights[2][1]
            r_z, r_r, r_h = np.split(inner, 3, axis=-1)
            z = self._rec_act(x_z + r_z)
            r = self._rec_act(x_r + r_r)
            candidate = self._act(x_h + r * r_h)
        else:
            r_z, r_r = np.split(h_prev @ recurrent[:, : 2 * u], 2, axis=-1)
            z = self._rec_act(x_z + r_z)
            r = self._rec_act(x_r + r_r)
            candidate = self._act(x_h + (r * h_prev) @ recurrent[:, 2 * u :])
        h = z * h_prev + (1.0 - z) * candidate
        return h, [h]
