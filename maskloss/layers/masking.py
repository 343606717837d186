r"""The layers where a mask is born: ``Masking`` (padding values) and ``Embedding`` (id 0).

Both *replace* whatever mask arrives with the one they compute, as Keras does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_flag, check_labels
from maskloss._types import BoolArray, FloatArray
from maskloss.layers._base import Layer, Mask, _check_count, as_sequences
from maskloss.masks import mask_from_ids, mask_from_padding

__all__ = ["Embedding", "Masking"]


class Masking(Layer):
    r"""Keras ``Masking(mask_value)``: a step is masked when all its features equal the value.

    .. math:: m_{bt} = \exists f:\ x_{btf} \ne v, \qquad y_{bt} = m_{bt} \,?\, x_{bt} : 0

    Masked steps come out as zeros (not as ``mask_value``); ``mask_value=nan`` masks
    nothing, since ``nan != nan``. The incoming mask is ignored.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.layers import Masking
    >>> x = np.array([[[9., 9.], [1., 9.], [9., 9.]]])
    >>> layer = Masking(9.0)
    >>> layer(x)[0].tolist()
    [[0.0, 0.0], [1.0, 9.0], [0.0, 0.0]]
    >>> layer.compute_mask(x)
    array([[False,  True, False]])
    """

    def __init__(self, mask_value: float = 0.0) -> None:
        super().__init__()
        mask_from_padding(np.zeros((1, 1)), mask_value)  # validates the value's type
        self.mask_value = float(mask_value)

    def __call__(self, x: npt.ArrayLike, mask: Mask = None) -> FloatArray:
        arr = as_sequences(x)
        valid = mask_from_padding(arr, self.mask_value)
        return np.where(valid[..., None], arr, 0.0)

    def compute_mask(self, x: npt.ArrayLike, mask: Mask = None) -> BoolArray:
        """``any(x != mask_value, axis=-1)``, whatever ``mask`` says."""
        return mask_from_padding(as_sequences(x), self.mask_value)

    def __repr__(self) -> str:
        return f"Masking(mask_value={self.mask_value})"


class Embedding(Layer):
    r"""Keras ``Embedding(input_dim, output_dim, mask_zero=False)``: a table lookup.

    Weights: ``[embeddings (input_dim, output_dim)]``. With ``mask_zero=True`` the mask
    is ``ids != 0``; the row of id 0 is still looked up, not zeroed. Without it the
    layer does not support masking and drops any incoming mask.

    Examples
    --------
    >>> from maskloss.layers import Embedding
    >>> emb = Embedding(5, 2, mask_zero=True)
    >>> ids = [[3, 1, 0, 0]]
    >>> emb(ids).shape
    (1, 4, 2)
    >>> emb.compute_mask(ids)
    array([[ True,  True, False, False]])
    >>> bool((emb(ids)[0, 2] == emb.get_weights()[0][0]).all())   # id 0 is looked up too
    True
    """

    def __init__(self, input_dim: int, output_dim: int, mask_zero: bool = False, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.vocabulary = _check_count(input_dim, "input_dim")
        self.output_dim = _check_count(output_dim, "output_dim")
        self.mask_zero = check_flag(mask_zero, "mask_zero")

    def weight_shapes(self, input_dim: int) -> list[tuple[int, ...]]:
        return [(self.vocabulary, self.output_dim)]

    def init_weights(self, input_dim: int, rng: np.random.Generator) -> list[FloatArray]:
        return [rng.uniform(-0.05, 0.05, size=(self.vocabulary, self.output_dim))]

    def input_dim_of(self, weights: Any) -> int:
        return 1

    def _ids(self, ids: npt.ArrayLike) -> npt.NDArray[np.intp]:
        arr = as_numeric(ids, "ids")
        if arr.ndim != 2:
            raise ValueError(f"ids must have shape (batch, steps), got shape {arr.shape}")
        return check_labels(arr, np.ones(arr.shape, dtype=bool), self.vocabulary, name="ids")

    def __call__(self, ids: npt.ArrayLike, mask: Mask = None) -> FloatArray:
        index = self._ids(ids)
        self.build(1)
        return self.weights[0][index]

    def compute_mask(self, ids: npt.ArrayLike, mask: Mask = None) -> BoolArray | None:
        """``ids != 0`` with ``mask_zero=True``, else None (the incoming mask is dropped)."""
        if not self.mask_zero:
            return None
        return mask_from_ids(self._ids(ids), 0)

    def __repr__(self) -> str:
        return f"Embedding({self.vocabulary}, {self.output_dim}, mask_zero={self.mask_zero})"
