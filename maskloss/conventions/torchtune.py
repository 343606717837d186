r"""torchtune's losses (``torchtune.modules.loss``), as NumPy truth in float64.

Reproduces **torchtune 0.6.1** (checked against it on torch 2.13 CPU by ``maskloss
conformance`` and tests/test_conventions_torchtune.py). torchtune's decoders can return
the LM head's output in ``num_output_chunks`` pieces along time
(``model.set_num_output_chunks``: ``[output(h_k) for h_k in h.chunk(n, dim=1)]``) so that
only one chunk is upcast to float32 at a time; ``CEWithChunkedOutputLoss`` takes that list.

What ``CEWithChunkedOutputLoss(num_output_chunks, ignore_index)(logits, labels)`` computes,
with :math:`K` the positions whose label is not ``ignore_index`` (counted over **all** of
``labels``):

.. math:: \frac{1}{|K|} \sum_k \sum_{i \in K \cap \text{chunk}_k} \big(\mathrm{lse}(z_i) - z_{i,y_i}\big)

The quirks, stated plainly:

* Each chunk is cast to float32 (``logits.float()``) before its cross-entropy, whatever
  its dtype: float64 logits are cast *down*. This mirror is exact.
* **NaN when nothing is valid** (0 / 0).
* ``labels`` is split with ``labels.chunk(num_output_chunks, dim=1)`` and paired with the
  logit chunks by ``zip``: when the list holds **fewer chunks** than the labels split into,
  the tokens of the missing chunks are silently left out of the sum but still counted in
  :math:`|K|` (the loss shrinks, no error). A chunk whose positions differ from its labels'
  is an error in torch, and here.
* No label shift: torchtune's recipes shift the labels before the call.

Examples
--------
>>> import numpy as np
>>> from maskloss.conventions.torchtune import ce_with_chunked_output_loss
>>> logits = np.zeros((1, 4, 2)); labels = np.array([[0, 1, -100, 1]])
>>> chunks = [logits[:, :2], logits[:, 2:]]          # logits.chunk(2, dim=1)
>>> round(float(ce_with_chunked_output_loss(chunks, labels, num_output_chunks=2)), 6)   # log 2
0.693147
>>> round(float(ce_with_chunked_output_loss(chunks[:1], labels, num_output_chunks=2)), 6)  # 2 log 2 / 3
0.462098
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric
from maskloss.losses import sparse_categorical_crossentropy

__all__ = ["ce_with_chunked_output_loss"]


def _label_chunks(steps: int, n: int) -> list[tuple[int, int]]:
    """``torch.chunk(n, dim=1)`` boundaries: pieces of ``ceil(T / n)`` steps, possibly fewer than ``n``."""
    if steps == 0:
        return [(0, 0)]
    size = math.ceil(steps / n)
    return [(start, min(start + size, steps)) for start in range(0, steps, size)]


def ce_with_chunked_output_loss(
    logits: Sequence[npt.ArrayLike],
    labels: npt.ArrayLike,
    *,
    num_output_chunks: int = 8,
    ignore_index: int = -100,
) -> np.float64:
    r"""``CEWithChunkedOutputLoss(num_output_chunks, ignore_index)(logits, labels)``, in float64.

    Parameters
    ----------
    logits : list of array_like, each (B, T_k, V)
        The chunks along time, as torchtune's decoder returns them.
    labels : array_like of int, shape (B, T)
    num_output_chunks : int, default 8
        How ``labels`` is split (``labels.chunk(num_output_chunks, dim=1)``).
    ignore_index : int, default -100
    """
    if not isinstance(logits, (list, tuple)):  # an array would be iterated over its batch axis
        raise TypeError(
            "logits must be a list of (B, T_k, V) chunks along time, as torchtune's decoder returns them "
            f"with num_output_chunks set; got {type(logits).__name__}"
        )
    if isinstance(num_output_chunks, bool) or not isinstance(num_output_chunks, (int, np.integer)) \
            or num_output_chunks < 1:
        raise ValueError(f"num_output_chunks must be an int >= 1, got {num_output_chunks!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    y = as_numeric(labels, "labels")
    if y.ndim != 2:
        raise ValueError(f"labels must have shape (B, T), got {y.shape}")
    total = 0.0
    pieces = _label_chunks(y.shape[1], int(num_output_chunks))
    for k, ((t0, t1), chunk) in enumerate(zip(pieces, logits, strict=False)):  # torchtune's zip truncates
        x = as_numeric(chunk, f"logits[{k}]")
        if x.ndim != 3 or x.shape[:2] != (y.shape[0], t1 - t0):
            raise ValueError(
                f"logits[{k}] must have shape (B, T_k, V) = ({y.shape[0]}, {t1 - t0}, V), the shape of "
                f"labels.chunk({num_output_chunks}, dim=1)[{k}]; got {x.shape}"
            )
        total += float(sparse_categorical_crossentropy(
            y[:, t0:t1].reshape(1, -1), x.reshape(1, -1, x.shape[-1]), from_logits=True,
            ignore_index=int(ignore_index), reduction="sum",
        ))
    count = int(np.sum(y != ignore_index))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float64(total) / np.float64(count)
