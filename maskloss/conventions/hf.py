r"""Hugging Face transformers' causal-LM loss, as NumPy truth in float64.

Reproduces ``ForCausalLMLoss`` and ``fixed_cross_entropy`` of
``transformers/loss/loss_utils.py``, **transformers 4.46 - 5.24** (``num_items_in_batch``
arrived in 4.46 with the gradient-accumulation fix; checked against 5.24.0 on torch
2.13 by ``maskloss conformance`` and the tests).

What it computes:

1. Unless ``shift_labels`` is given, the labels are padded on the right with
   ``ignore_index`` and shifted one step left, so ``logits[..., t, :]`` predicts
   ``labels[..., t + 1]`` and the last position predicts nothing.
2. Logits are flattened to ``(-1, vocab_size)`` and the shifted labels to ``(-1,)``.
3. torch's ``cross_entropy`` with ``ignore_index`` (see
   :func:`maskloss.conventions.torch.cross_entropy`): without ``num_items_in_batch`` the
   mean over the valid targets (NaN when there are none); with it,
   ``sum / num_items_in_batch``, the token mean of the whole accumulation window when
   ``num_items_in_batch`` counts its valid *shifted* targets.

The quirks, stated plainly:

* HF computes in **float32**: ``logits.float()`` casts float64 logits *down* (and
  bf16/fp16 up). This module computes in float64, so HF agrees with it only to float32
  rounding (about 1e-7 relative).
* Extra keyword arguments (``label_smoothing``, ``weight``, ...) passed to
  ``ForCausalLMLoss`` are accepted and silently dropped by ``fixed_cross_entropy``; this
  function does not take them.
* ``num_items_in_batch=0`` divides by zero: ``inf`` (NaN when nothing was valid), as
  torch does; nothing raises.
* Counting unshifted labels for ``num_items_in_batch`` divides by ``n_targets + rows``
  and under-weights every micro-batch (a caller bug, not computed here).

Examples
--------
Two sequences, right padded with -100. The numbers are what transformers 5.24 returns
for the same (float32) logits.

>>> import numpy as np
>>> from maskloss.conventions.hf import for_causal_lm_loss
>>> logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
...                           [[0.5, 0.25, 0.25], [1/3, 1/3, 1/3], [0.9, 0.05, 0.05]]]))
>>> labels = np.array([[0, 1, 2], [2, 0, -100]])       # targets: 1, 2 | 0
>>> round(float(for_causal_lm_loss(logits, labels, vocab_size=3)), 6)   # (ln 4 + ln 10 + ln 2) / 3
1.460676
>>> round(float(for_causal_lm_loss(logits, labels, vocab_size=3, num_items_in_batch=6)), 6)
0.730338
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric
from maskloss.conventions.torch import cross_entropy

__all__ = ["for_causal_lm_loss"]


def _shift(labels: np.ndarray[Any, Any], ignore_index: int) -> np.ndarray[Any, Any]:
    """``pad(labels, (0, 1), value=ignore_index)[..., 1:]``: next token, ignore at the end."""
    if labels.ndim == 0:
        raise ValueError("labels must have at least one (time) axis, got a scalar")
    pad = np.full((*labels.shape[:-1], 1), ignore_index, dtype=labels.dtype)
    return np.concatenate([labels[..., 1:], pad], axis=-1)


def for_causal_lm_loss(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    vocab_size: int,
    num_items_in_batch: float | None = None,
    ignore_index: int = -100,
    shift_labels: npt.ArrayLike | None = None,
    **kwargs: Any,
) -> np.float64:
    r"""``transformers.loss.loss_utils.ForCausalLMLoss``, in float64.

    With :math:`y'_{b,t} = y_{b,t+1}` (and ``ignore_index`` at the last step), :math:`V`
    the valid shifted targets and :math:`\ell_{bt} = -\log\operatorname{softmax}(x_{bt})_{y'_{bt}}`:

    .. math::
        \text{loss} = \frac{1}{|V|}\sum_{(b,t) \in V} \ell_{bt}
        \quad\text{or}\quad
        \frac{1}{\text{num\_items\_in\_batch}}\sum_{(b,t) \in V} \ell_{bt}

    Parameters
    ----------
    logits : array_like, shape (..., T, vocab_size)
        Any shape whose size is a multiple of ``vocab_size``.
    labels : array_like of int, shape (..., T)
        Unshifted token ids, ``ignore_index`` at padding. Ignored when ``shift_labels``
        is given.
    vocab_size : int
    num_items_in_batch : number, optional
        Denominator of the summed loss (valid shifted targets of the whole accumulation
        window, all ranks).
    ignore_index : int, default -100
    shift_labels : array_like of int, optional
        Already shifted labels, used as they are.
    **kwargs
        Accepted and ignored, as transformers does (``fixed_cross_entropy`` takes
        ``**kwargs`` and passes none of them on): ``label_smoothing=0.1`` is silently dropped.

    Returns
    -------
    numpy.float64
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size <= 0:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    x = as_numeric(logits, "logits")
    if x.size % int(vocab_size):
        raise ValueError(f"logits of shape {x.shape} cannot be viewed as (-1, vocab_size={vocab_size})")
    if shift_labels is None:
        targets = _shift(as_numeric(labels, "labels"), ignore_index)
    else:
        targets = as_numeric(shift_labels, "shift_labels")
    flat_logits = x.reshape(-1, int(vocab_size))
    flat_targets = targets.reshape(-1)
    if flat_targets.shape[0] != flat_logits.shape[0]:
        raise ValueError(
            f"logits hold {flat_logits.shape[0]} rows of vocab_size={vocab_size} but the shifted labels "
            f"hold {flat_targets.shape[0]} targets (logits {x.shape}, labels {targets.shape})"
        )
    if num_items_in_batch is None:
        mean: np.float64 = cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index)
        return mean
    count = as_numeric(num_items_in_batch, "num_items_in_batch")
    if count.ndim != 0 or count.dtype == bool:
        raise TypeError(f"num_items_in_batch must be a single number or None, got {num_items_in_batch!r}")
    total: np.float64 = cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index, reduction="sum")
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.float64 = np.float64(total) / np.float64(count)
    return out
