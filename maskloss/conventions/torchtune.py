r"""torchtune's losses: the chunked cross-entropy and knowledge distillation, as NumPy truth in float64.

Reproduces ``torchtune/modules/loss/ce_chunked_output_loss.py`` and ``kd_losses.py`` of
**torchtune 0.6.1** (checked against it by ``maskloss conformance``,
``tests/test_conventions_torchtune.py`` and ``tests/test_conventions_torchtune_kd.py``).

**The chunked cross-entropy.** torchtune's decoders can return the LM head's output in
``num_output_chunks`` pieces along time (``model.set_num_output_chunks``:
``[output(h_k) for h_k in h.chunk(n, dim=1)]``) so that only one chunk is upcast to
float32 at a time; ``CEWithChunkedOutputLoss`` takes that list.

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

**The knowledge-distillation losses.** The classes become functions of the same names in
snake case, their constructor arguments keywords:
``ForwardKLLoss(ignore_index)(student_logits, teacher_logits, labels, normalize)`` is
``forward_kl_loss(student_logits, teacher_logits, labels, normalize, ignore_index=...)``.
Logits are ``(N, V)`` (or ``(..., V)``, flattened as torchtune's ``view(-1)`` does) and
``labels`` hold ``N`` entries; a row counts when its label is not ``ignore_index`` (-100).

With :math:`p = \operatorname{softmax}(\text{teacher})`, :math:`q = \operatorname{softmax}(\text{student})`
and :math:`n` the number of counted rows:

==============================  ==================================================================  ===================
function                        value (``normalize=True``)                                          nothing counted
==============================  ==================================================================  ===================
``forward_kl_loss``             :math:`-\frac1n \sum_i \sum_c p_{ic} \log q_{ic}`                   0
``reverse_kl_loss``             :math:`\frac1n \sum_i \sum_c q_{ic} (\log q_{ic} - \log p_{ic})`    0
``symmetric_kl_loss``           :math:`r \cdot \text{forward} + (1 - r) \cdot \text{reverse}`       0
``*_with_chunked_output_loss``  the same over the concatenated chunks                               0 forward, NaN
                                                                                                    reverse/symmetric
==============================  ==================================================================  ===================

The quirks, stated plainly:

* ``forward_kl_loss`` is the **cross-entropy** :math:`H(p, q)`, not
  :math:`\operatorname{KL}(p\|q)`: the teacher's entropy :math:`H(p)` is left out (a
  constant for the student, so the gradient is the KL's), so its value is
  ``maskloss.kl_divergence(p, q) + maskloss.entropy(teacher)``, never 0 for
  :math:`p = q`. ``reverse_kl_loss`` is the true :math:`\operatorname{KL}(q\|p)`.
* Lanes where a logit is :math:`\pm\infty` (the student's; either model's for the
  reverse) contribute 0 (``masked_fill(inf_mask, 0)``), so ``-inf`` padded vocabulary
  lanes are safe.
* Ignored rows are *multiplied* by 0 (``x * mask``): a NaN or inf in an ignored row's
  logits makes the loss NaN (the mirror reproduces it).
* torchtune computes in float32 (``softmax(..., dtype=torch.float32)``), also for float64
  inputs; the mirror computes in float64, so the two agree to float32 rounding.
* The empty batch: ``0.0`` for the three losses and the chunked forward KL; the chunked
  reverse and symmetric KLs have no guard and give 0/0 = NaN.

Examples
--------
>>> import numpy as np
>>> from maskloss.conventions import torchtune as tt
>>> student = np.log([[0.25, 0.75], [0.5, 0.5]])
>>> teacher = np.log([[0.5, 0.5], [0.5, 0.5]])
>>> labels = np.array([1, -100])            # the second row is ignored
>>> round(float(tt.forward_kl_loss(student, teacher, labels)), 6)   # H(p, q) = (log 4 + log 4/3) / 2
0.836988
>>> round(float(tt.reverse_kl_loss(student, teacher, labels)), 6)   # KL(q || p)
0.130812
>>> float(tt.forward_kl_loss(student, teacher, np.array([-100, -100])))   # nothing counted
0.0
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
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import as_numeric, check_flag
from maskloss._types import BoolArray, FloatArray
from maskloss.losses import sparse_categorical_crossentropy
from maskloss.pointwise import log_softmax_and_softmax

__all__ = [
    "ce_with_chunked_output_loss",
    "forward_kl_loss",
    "forward_kl_with_chunked_output_loss",
    "reverse_kl_loss",
    "reverse_kl_with_chunked_output_loss",
    "symmetric_kl_loss",
    "symmetric_kl_with_chunked_output_loss",
]


def _rows(student_logits: npt.ArrayLike, teacher_logits: npt.ArrayLike, labels: npt.ArrayLike,
          ignore_index: object) -> tuple[FloatArray, FloatArray, BoolArray]:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    s = as_numeric(student_logits, "student_logits", min_ndim=1)
    t = as_numeric(teacher_logits, "teacher_logits", min_ndim=1)
    if s.shape != t.shape:
        raise ValueError(f"student_logits {s.shape} and teacher_logits {t.shape} must have the same shape")
    s2 = s.reshape(-1, s.shape[-1]).astype(np.float64)
    t2 = t.reshape(-1, t.shape[-1]).astype(np.float64)
    lab = as_numeric(labels, "labels").reshape(-1)
    if lab.shape[0] != s2.shape[0]:
        raise ValueError(f"labels must hold one entry per row of the logits ({s2.shape[0]}), got {lab.shape[0]}")
    return s2, t2, lab != ignore_index


def _masked_total(x: FloatArray, counted: BoolArray) -> float:
    """``-sum(x * mask)`` as torchtune writes it: an ignored row's NaN/inf still reaches the sum."""
    with np.errstate(invalid="ignore"):
        leaked = np.where(counted, x, np.where(np.isfinite(x), 0.0, np.nan))
    return float(-np.sum(leaked))


def _forward_rows(s: FloatArray, t: FloatArray) -> FloatArray:
    """Per row :math:`\\sum_c p_c \\log q_c`, 0 at lanes where the student's logit is infinite."""
    with np.errstate(invalid="ignore", over="ignore"):
        _, p = log_softmax_and_softmax(t)
        log_q, _ = log_softmax_and_softmax(s)
        out: FloatArray = np.sum(np.where(np.isinf(s), 0.0, p * log_q), axis=-1)
    return out


def _reverse_rows(s: FloatArray, t: FloatArray) -> FloatArray:
    """Per row :math:`\\sum_c q_c (\\log p_c - \\log q_c)`, 0 where either logit is infinite."""
    with np.errstate(invalid="ignore", over="ignore"):
        log_q, q = log_softmax_and_softmax(s)
        log_p, _ = log_softmax_and_softmax(t)
        inf = np.isinf(s) | np.isinf(t)
        out: FloatArray = np.sum(np.where(inf, 0.0, q * log_p) - np.where(inf, 0.0, q * log_q), axis=-1)
    return out


def _value(total: float, counted: BoolArray, normalize: bool, empty: float) -> np.float64:
    if not normalize:
        return np.float64(total)
    n = int(np.sum(counted))
    return np.float64(empty if n == 0 else total / n)


def forward_kl_loss(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    normalize: bool = True,
    *,
    ignore_index: int = -100,
) -> np.float64:
    r"""``torchtune.modules.loss.ForwardKLLoss``: :math:`-\frac1n\sum_i\sum_c p_{ic}\log q_{ic}` (see the module)."""
    s, t, counted = _rows(student_logits, teacher_logits, labels, ignore_index)
    total = _masked_total(_forward_rows(s, t), counted)
    return _value(total, counted, check_flag(normalize, "normalize"), 0.0)


def reverse_kl_loss(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    normalize: bool = True,
    *,
    ignore_index: int = -100,
) -> np.float64:
    r"""``torchtune.modules.loss.ReverseKLLoss``: :math:`\frac1n\sum_i \operatorname{KL}(q_i \| p_i)`."""
    s, t, counted = _rows(student_logits, teacher_logits, labels, ignore_index)
    total = _masked_total(_reverse_rows(s, t), counted)
    return _value(total, counted, check_flag(normalize, "normalize"), 0.0)


def _check_ratio(sym_kd_ratio: object) -> float:
    if isinstance(sym_kd_ratio, bool) or not isinstance(sym_kd_ratio, (int, float, np.floating, np.integer)):
        raise TypeError(f"sym_kd_ratio must be a real number in [0, 1], got {sym_kd_ratio!r}")
    r = float(sym_kd_ratio)
    if r < 0.0 or r > 1.0:
        raise ValueError("sym_kd_ratio must be in the range [0, 1]")  # torchtune's words
    return r


def symmetric_kl_loss(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    normalize: bool = True,
    *,
    sym_kd_ratio: float = 0.5,
    ignore_index: int = -100,
) -> np.float64:
    r"""``torchtune.modules.loss.SymmetricKLLoss``: :math:`r\,\text{forward} + (1-r)\,\text{reverse}`.

    ``sym_kd_ratio`` :math:`r = 1` is :func:`forward_kl_loss`, 0 :func:`reverse_kl_loss`.
    """
    r = _check_ratio(sym_kd_ratio)
    forward = forward_kl_loss(student_logits, teacher_logits, labels, normalize, ignore_index=ignore_index)
    reverse = reverse_kl_loss(student_logits, teacher_logits, labels, normalize, ignore_index=ignore_index)
    return np.float64(r * forward + (1 - r) * reverse)


def _chunked(
    student_chunks: Sequence[npt.ArrayLike], teacher_chunks: Sequence[npt.ArrayLike], labels: npt.ArrayLike,
    ignore_index: int, rows: Any, empty: float,
) -> np.float64:
    """Sum of the un-normalised loss over the chunks (axis 1 of ``(B, T/k, V)``), over the counted rows."""
    given: tuple[object, object] = (student_chunks, teacher_chunks)  # untyped callers may pass an array
    if any(isinstance(c, np.ndarray) for c in given):
        raise TypeError("student_logits and teacher_logits must be lists of (B, T/k, V) chunks, as torchtune takes")
    s = np.concatenate([np.asarray(as_numeric(c, "student_logits"), dtype=np.float64) for c in student_chunks], 1)
    t = np.concatenate([np.asarray(as_numeric(c, "teacher_logits"), dtype=np.float64) for c in teacher_chunks], 1)
    s2, t2, counted = _rows(s, t, labels, ignore_index)
    return _value(_masked_total(rows(s2, t2), counted), counted, True, empty)


def forward_kl_with_chunked_output_loss(
    student_logits: Sequence[npt.ArrayLike],
    teacher_logits: Sequence[npt.ArrayLike],
    labels: npt.ArrayLike,
    *,
    num_output_chunks: int = 8,
    ignore_index: int = -100,
) -> np.float64:
    """``ForwardKLWithChunkedOutputLoss``: :func:`forward_kl_loss` of the chunks put back together (0 when empty).

    ``num_output_chunks`` only says how torchtune splits the labels; the chunks given decide.
    """
    return _chunked(student_logits, teacher_logits, labels, ignore_index, _forward_rows, 0.0)


def reverse_kl_with_chunked_output_loss(
    student_logits: Sequence[npt.ArrayLike],
    teacher_logits: Sequence[npt.ArrayLike],
    labels: npt.ArrayLike,
    *,
    num_output_chunks: int = 8,
    ignore_index: int = -100,
) -> np.float64:
    """``ReverseKLWithChunkedOutputLoss``: :func:`reverse_kl_loss` of the chunks; **NaN** when empty (no guard)."""
    return _chunked(student_logits, teacher_logits, labels, ignore_index, _reverse_rows, np.nan)


def symmetric_kl_with_chunked_output_loss(
    student_logits: Sequence[npt.ArrayLike],
    teacher_logits: Sequence[npt.ArrayLike],
    labels: npt.ArrayLike,
    *,
    num_output_chunks: int = 8,
    sym_kd_ratio: float = 0.5,
    ignore_index: int = -100,
) -> np.float64:
    """``SymmetricKLWithChunkedOutputLoss``: :func:`symmetric_kl_loss` of the chunks; **NaN** when empty."""
    r = _check_ratio(sym_kd_ratio)

    def rows(s: FloatArray, t: FloatArray) -> FloatArray:
        return r * _forward_rows(s, t) + (1 - r) * _reverse_rows(s, t)

    return _chunked(student_logits, teacher_logits, labels, ignore_index, rows, np.nan)


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
