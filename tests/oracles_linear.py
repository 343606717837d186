"""Slow loop oracle for :func:`maskloss.linear_cross_entropy`, on Python floats.

Each valid row's logits are built one class at a time with ``math.fsum`` (an exactly
rounded dot product), then the head options in the documented order: divide by the
temperature, softcap ``c * tanh(z / c)``, log-sum-exp, the smoothed gold term, z-loss.
Shares no code with the library.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tests.oracles import _exact_product, _weight, reductions_from_pairs


def _logits(h: list[float], weight: np.ndarray, bias: Any, temperature: float, softcap: Any) -> list[float]:
    out = []
    for c in range(weight.shape[0]):
        z = math.fsum(float(h[k]) * float(weight[c, k]) for k in range(len(h)))
        if bias is not None:
            z += float(bias[c])
        z /= temperature
        if softcap is not None:
            z = softcap * math.tanh(z / softcap)
        out.append(z)
    return out


def linear_sparse(
    hidden, weight, labels, mask, *, bias=None, ignore_index=None, label_smoothing=0.0,
    class_weight=None, z_loss=0.0, softcap=None, temperature=1.0, sample_weight=None,
) -> dict[str, Any]:
    """Every reduction of the linear cross-entropy, by loops over the valid steps."""
    pairs = {}
    vocab = weight.shape[0]
    cw = [1.0] * vocab if class_weight is None else [float(c) for c in class_weight]
    for b in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            y = labels[b, t]
            if not mask[b, t] or (ignore_index is not None and y == ignore_index):
                continue
            y = int(y)
            z = _logits(list(hidden[b, t]), weight, bias, temperature, softcap)
            top = max(z)
            lse = top + math.log(math.fsum(math.exp(v - top) for v in z))
            loss = (1 - label_smoothing) * cw[y] * (lse - z[y])
            if label_smoothing:
                loss += math.fsum(label_smoothing / vocab * cw[c] * (lse - z[c]) for c in range(vocab))
            loss += z_loss * lse * lse
            w = _weight(sample_weight, b, t)
            pairs[(b, t)] = (_exact_product(w, loss), _exact_product(w, cw[y]))
    return reductions_from_pairs(mask, pairs)
