r"""Hugging Face transformers' causal-LM loss and padding-free collator, as NumPy truth in float64.

:func:`data_collator_with_flattening` is ``DataCollatorWithFlattening`` (documents packed
into one row, each document's first label replaced by the separator, position ids that
restart per document); what follows is about :func:`for_causal_lm_loss`.

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

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric
from maskloss.conventions.torch import cross_entropy

__all__ = ["data_collator_with_flattening", "for_causal_lm_loss"]


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


def data_collator_with_flattening(
    features: Sequence[Mapping[str, npt.ArrayLike]],
    *,
    separator_id: int = -100,
    return_position_ids: bool = True,
    return_flash_attn_kwargs: bool = False,
    return_seq_idx: bool = False,
    position_ids_start: int = 0,
) -> dict[str, Any]:
    r"""``transformers.DataCollatorWithFlattening()(features, return_tensors="np")``, exactly.

    Reproduces the padding-free collator of **transformers 5.24** (checked against it by
    ``maskloss conformance`` and the tests). Every feature (a document: ``input_ids`` and
    optionally ``labels``) is concatenated into **one** row of shape ``(1, total)``:

    * ``labels``: each document's labels with its *first* label replaced by
      ``separator_id`` (its ``input_ids`` when it has no labels). After the causal shift of
      :func:`for_causal_lm_loss` the last token of a document "predicts" that separator, so
      no label is predicted across a document boundary;
    * ``position_ids``: ``position_ids_start, position_ids_start + 1, ...`` restarting at
      every document (what :func:`maskloss.segment_ids_from_position_ids` reads back);
    * ``seq_idx``: the document of each token (int32), and with
      ``return_flash_attn_kwargs`` ``cu_seq_lens_q``/``cu_seq_lens_k`` (int32, the
      cumulative lengths ``[0, l_0, l_0 + l_1, ...]``) and ``max_length_q``/``max_length_k``
      (Python ints).

    Empty documents are dropped; a batch of only empty documents raises, as HF does.

    What the model loss then computes on the packed row is the **token mean over every
    document's tokens after its first** (each document's first token is never a target):
    the same number as ``sparse_categorical_crossentropy(..., reduction="token_mean")`` on
    the padded batch of the same documents with the causal shift inside each document.
    Long documents weigh more than short ones; a per-document mean (``"sequence_mean"``)
    is a different number, which this collator and HF's loss never compute.

    Examples
    --------
    >>> from maskloss.conventions.hf import data_collator_with_flattening
    >>> batch = data_collator_with_flattening([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])
    >>> batch["input_ids"].tolist(), batch["labels"].tolist(), batch["position_ids"].tolist()
    ([[5, 6, 7, 8, 9]], [[-100, 6, 7, -100, 9]], [[0, 1, 2, 0, 1]])
    """
    for flag, name in ((return_position_ids, "return_position_ids"), (return_flash_attn_kwargs,
                       "return_flash_attn_kwargs"), (return_seq_idx, "return_seq_idx")):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    for number, name in ((separator_id, "separator_id"), (position_ids_start, "position_ids_start")):
        if isinstance(number, bool) or not isinstance(number, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {number!r}")
    if isinstance(features, Mapping) or not isinstance(features, Sequence):
        raise TypeError(f"features must be a sequence of mappings with 'input_ids', got {type(features).__name__}")
    docs = []
    for i, feature in enumerate(features):
        if not isinstance(feature, Mapping) or "input_ids" not in feature:
            raise TypeError(f"features[{i}] must be a mapping with 'input_ids', got {feature!r}")
        ids = _token_ids(feature["input_ids"], f"features[{i}]['input_ids']")
        if ids.size:
            docs.append((i, ids, feature))
    if not docs:
        raise ValueError("DataCollatorWithFlattening received a batch where every example is empty.")
    with_labels = "labels" in docs[0][2]
    labels = []
    for i, ids, feature in docs:
        own = _token_ids(feature["labels"], f"features[{i}]['labels']") if with_labels else ids
        labels.append(np.concatenate([[np.int64(separator_id)], own[1:]]))
    lengths = np.array([ids.size for _, ids, _ in docs], dtype=np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    total = int(lengths.sum())
    batch: dict[str, Any] = {
        "input_ids": np.concatenate([ids for _, ids, _ in docs])[None, :],
        "labels": np.concatenate(labels).astype(np.int64)[None, :],
    }
    if return_position_ids:
        batch["position_ids"] = (np.arange(total, dtype=np.int64) - starts + position_ids_start)[None, :]
    if return_seq_idx:
        batch["seq_idx"] = np.repeat(np.arange(lengths.size, dtype=np.int32), lengths)[None, :]
    if return_flash_attn_kwargs:
        cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = cu
        batch["max_length_q"] = batch["max_length_k"] = int(lengths.max())
    return batch


def _token_ids(values: npt.ArrayLike, name: str) -> np.ndarray[Any, Any]:
    ids = as_numeric(values, name)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be one document of token ids (1-d), got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    return ids.astype(np.int64)
