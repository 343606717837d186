r"""litgpt's ``chunked_cross_entropy`` (``litgpt/utils.py``), as NumPy truth in float64.

Reproduces **litgpt 0.5.13** (checked against it on torch 2.13 CPU by ``maskloss
conformance`` and the tests). litgpt fine-tunes with the LM head computed in chunks
along time (``logits`` a list of ``(B, T_i, V)`` chunks) or in one piece, and chunks the
cross-entropy to limit the backward pass's memory.

What it computes, with :math:`K` the positions whose target is not ``ignore_index``:

* ``chunk_size > 0`` (the default 128), or a list of logit chunks:
  :math:`\sum_{i \in K} \ell_i / \max(1, |K|)`: a token mean that is **0 when nothing is
  valid** (torch's mean would be NaN).
* ``chunk_size == 0``: one ``torch.nn.functional.cross_entropy`` mean: **NaN** when
  nothing is valid.

The chunk size never changes the value otherwise (each chunk's losses are summed, then
divided once by the total count: the correct recombination). No label shift is done
here: litgpt shifts ``targets`` before the call.

Examples
--------
>>> import numpy as np
>>> from maskloss.conventions.litgpt import chunked_cross_entropy
>>> logits = np.zeros((1, 2, 4)); targets = np.array([[-100, -100]])
>>> float(chunked_cross_entropy(logits, targets)), float(chunked_cross_entropy(logits, targets, chunk_size=0))
(0.0, nan)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric
from maskloss.losses import sparse_categorical_crossentropy

__all__ = ["chunked_cross_entropy"]


def chunked_cross_entropy(
    logits: npt.ArrayLike | Sequence[npt.ArrayLike],
    targets: npt.ArrayLike,
    chunk_size: int = 128,
    ignore_index: int = -100,
) -> np.float64:
    r"""``litgpt.utils.chunked_cross_entropy``: token mean over the kept targets, 0 or NaN when empty.

    Parameters
    ----------
    logits : array_like of shape (B, T, V), or a list of (B, T_i, V) chunks along time
    targets : array_like of int, shape (B, T)
    chunk_size : int, default 128
        0 selects torch's plain mean (NaN when nothing is valid); any other value the
        chunked sum divided by ``max(1, count)``.
    ignore_index : int, default -100
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 0:
        raise ValueError(f"chunk_size must be an int >= 0, got {chunk_size!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    if isinstance(logits, (list, tuple)):
        parts = [as_numeric(p, f"logits[{i}]", min_ndim=1) for i, p in enumerate(logits)]
        if not parts:
            raise ValueError("logits must hold at least one chunk, got an empty list")
        x = np.concatenate(parts, axis=1)
    else:
        x = as_numeric(logits, "logits", min_ndim=1)  # type: ignore[arg-type]
    t = as_numeric(targets, "targets")
    flat_x = x.reshape(1, -1, x.shape[-1])
    flat_t = t.reshape(1, -1)
    if flat_t.shape[1] != flat_x.shape[1]:
        raise ValueError(f"logits {x.shape} and targets {t.shape} do not hold the same number of positions")
    kwargs = {"from_logits": True, "ignore_index": int(ignore_index)}
    if chunk_size == 0:
        return np.float64(sparse_categorical_crossentropy(flat_t, flat_x, **kwargs))  # type: ignore[arg-type]
    total = float(sparse_categorical_crossentropy(flat_t, flat_x, reduction="sum", **kwargs))  # type: ignore[arg-type]
    count = int(np.sum(flat_t != ignore_index))
    return np.float64(total / max(1, count))
