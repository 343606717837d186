r"""A text diagram of the mask flowing through a :class:`~maskloss.layers.Sequential` model.

Each step of each sequence is drawn as ``#`` (valid) or ``.`` (masked), after every
layer; ``none`` means the layer's output carries no mask (every step counts).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss.layers.sequential import Sequential

__all__ = ["describe", "draw_mask"]


def draw_mask(mask: Any) -> str:
    """A ``(B, T)`` mask as one word per sequence, ``#`` valid, ``.`` masked; ``none`` for None.

    >>> draw_mask([[False, True, True], [True, True, False]])
    '.## ##.'
    """
    if mask is None:
        return "none"
    return " ".join("".join("#" if v else "." for v in row) for row in np.asarray(mask, dtype=bool))


def describe(model: Sequential, x: npt.ArrayLike) -> str:
    r"""Draw the output shape and mask of every layer of ``model`` on ``x``, then what the loss sees.

    Examples
    --------
    The seed's model, and its ``return_sequences=False`` variant, where the mask stops:

    >>> import numpy as np
    >>> from maskloss.layers import LSTM, Masking, Sequential, describe
    >>> X = np.array([[[0, 0], [0, 0], [1, 0], [0, 1], [0, 1]],
    ...               [[0, 0], [0, 1], [1, 0], [0, 1], [0, 1]]], dtype=float)
    >>> print(describe(Sequential([Masking(0.0), LSTM(3, return_sequences=True)]), X))
    input (2, 5, 2)                     mask none
      -> Masking(mask_value=0.0)        (2, 5, 2)  mask ..### .####
      -> LSTM(3, return_sequences=True) (2, 5, 3)  mask ..### .####
    loss: the output mask applies: 7 of 10 steps count
    >>> print(describe(Sequential([Masking(0.0), LSTM(3)]), X))
    input (2, 5, 2)                     mask none
      -> Masking(mask_value=0.0)        (2, 5, 2)  mask ..### .####
      -> LSTM(3)                        (2, 3)     mask none
    loss: no mask reaches the loss: all 2 outputs count
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a maskloss.layers.Sequential, got {model!r}")
    records = model.trace(x)
    names = [f"  -> {r.layer!r}" for r in records]
    width = max(len("input " + str(np.shape(x))), *(len(n) for n in names)) + 1
    shapes = [str(np.shape(r.output)) for r in records]
    shape_width = max(len(s) for s in shapes) + 2
    lines = [f"{'input ' + str(np.shape(x)):<{width}}mask none"]
    for name, shape, r in zip(names, shapes, records, strict=True):
        lines.append(f"{name:<{width}}{shape:<{shape_width}}mask {draw_mask(r.mask)}")
    last = records[-1]
    if last.mask is None:
        count = int(np.prod(np.shape(last.output)[:-1]))
        lines.append(f"loss: no mask reaches the loss: all {count} outputs count")
    else:
        valid = np.asarray(last.mask, dtype=bool)
        lines.append(f"loss: the output mask applies: {int(valid.sum())} of {valid.size} steps count")
    return "\n".join(lines)
