r"""check_loss for padding-free (packed) code: :func:`check_packed_loss`.

Padding-free training packs several documents into one row and tells the model where each
one starts with ``position_ids`` (HF ``DataCollatorWithFlattening``, TRL ``padding_free``) or
``cu_seqlens`` (flash-attention varlen). ``check_packed_loss(candidate, like, packed=...)``
draws documents, packs them (:func:`maskloss.pack`) and calls the candidate as such code is
called:

``candidate(y_true, y_pred, mask, position_ids=...)`` or ``candidate(y_true, y_pred, mask, cu_seqlens=...)``

with packed ``(R, L, ...)`` arrays (``packed="cu_seqlens"``: one flat row ``(1, N, ...)``,
flash-attention's layout) and ``mask`` True at the packed tokens. With ``shift=1`` (the
default for ``like=maskloss.sparse_categorical_crossentropy``) ``y_true`` holds the token ids
and the candidate does the causal shift itself: the target of a step is the next token **of
the same document**, and the last token of each document predicts nothing.

The expected value is ``like`` on the **padded batch of the same documents** (one document per
row, each shifted inside itself), never on the packed rows, so the check states the
definition, not maskloss's packed code path. ``**options`` are ``like``'s keywords (what the
candidate computes: ``reduction="sequence_mean"`` for a per-document mean, ``from_logits``,
``ignore_index``, ...), passed to ``like`` only. Properties, per drawn batch:

``packing``
    the candidate on the packed rows equals ``like`` on the padded documents, for the
    packing in batch order and for first-fit (``packed="position_ids"``, rows of a drawn
    length with padding at their ends);
``boundary``
    changing the predictions at the last token of every document (the boundary step, which
    has no target when ``shift=1``) and at the padding changes nothing.

On failure an ``AssertionError`` (:class:`PackedCheckError`) names the property, the two
numbers and the documents' lengths and segment ids. check_loss routes
``check_loss(candidate, like, packed=...)`` here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis
import numpy as np
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st

from maskloss import registry
from maskloss.packing import Packing, pack
from maskloss.strategies import PaddedBatch, padded_batches
from maskloss.testing._search import isolated_search
from maskloss.testing.tolerances import assert_loss_close

__all__ = ["PACKED_LAYOUTS", "PackedCheckError", "check_packed_loss"]

#: The ``packed=`` layouts: the keyword the candidate receives.
PACKED_LAYOUTS: tuple[str, ...] = ("position_ids", "cu_seqlens")


class PackedCheckError(AssertionError):
    """A packed-rows property failed; ``prop`` names it."""

    def __init__(self, message: str, *, prop: str) -> None:
        super().__init__(message)
        self.prop = prop


def _padded_targets(batch: PaddedBatch, shift: int, fill: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Targets and mask of the padded documents: step t predicts token t + shift of its own row."""
    ids, lengths = batch.y_true, batch.lengths
    steps = ids.shape[1]
    t = np.arange(steps)
    has_target = t[None, :] < (lengths - shift)[:, None]
    nxt = np.concatenate([ids[:, shift:], np.zeros((ids.shape[0], shift), dtype=ids.dtype)], axis=1)
    return np.where(has_target, nxt, fill), has_target


def _boundary_junk(packing: Packing, pred: np.ndarray[Any, Any], shift: int) -> np.ndarray[Any, Any]:
    """``pred`` with other values at each document's last ``shift`` steps and at the padding."""
    seg = packing.segment_ids
    nxt = np.full(seg.shape, -2)
    nxt[:, :-1] = seg[:, 1:]
    last = (seg >= 0) & (nxt != seg)
    boundary = ~packing.mask | (last if shift else np.zeros_like(last))
    junk = np.where(np.arange(pred.shape[-1]) % 2 == 0, 7.0, -5.0).astype(pred.dtype)
    return np.where(boundary[..., None], junk, pred)


def check_packed_loss(
    candidate: Callable[..., Any],
    like: Callable[..., Any],
    *,
    packed: str = "position_ids",
    shift: int | None = None,
    max_examples: int = 50,
    max_documents: int = 5,
    max_document_length: int = 6,
    rtol: float | None = None,
    atol: float | None = None,
    derandomize: bool = True,
    seed: int | None = None,
    **options: Any,
) -> None:
    r"""Check a padding-free loss against ``like`` on the padded batch of the same documents.

    Parameters
    ----------
    candidate : callable
        ``candidate(y_true, y_pred, mask, position_ids=...)`` (or ``cu_seqlens=...``), returning
        a scalar (a torch tensor or anything ``float()`` accepts).
    like : callable
        A maskloss loss with a batch kind (``maskloss.registry.names(kind=True)``).
    packed : {"position_ids", "cu_seqlens"}
        The keyword the candidate receives.
    shift : {0, 1}, optional
        1: ``y_true`` holds token ids and the candidate shifts them inside each document
        (``like=maskloss.sparse_categorical_crossentropy`` only, its default); 0: ``y_true``
        is already aligned with ``y_pred``.
    max_examples, derandomize, seed
        Hypothesis settings, as in :func:`maskloss.testing.check_loss`.
    max_documents, max_document_length : int
        Bounds of the drawn documents (:func:`maskloss.strategies.packed_batches`).
    rtol, atol : float, optional
        Tolerances (default: float64's of :data:`maskloss.testing.TOLERANCES`).
    **options
        ``like``'s keyword arguments.

    Examples
    --------
    A per-document mean, written right:

    >>> import numpy as np, maskloss
    >>> from maskloss.testing.packed_check import check_packed_loss
    >>> def per_document(y_true, y_pred, mask, position_ids):
    ...     seg = maskloss.segment_ids_from_position_ids(position_ids, mask)
    ...     return maskloss.mse(y_true, y_pred, reduction="sequence_mean", segment_ids=seg)
    >>> check_packed_loss(per_document, maskloss.mse, reduction="sequence_mean", max_examples=10)
    """
    if packed not in PACKED_LAYOUTS:
        raise ValueError(f"packed must be one of {PACKED_LAYOUTS}, got {packed!r}")
    spec = registry.spec_of(like)
    if spec is None or spec.kind is None:
        raise TypeError(f"like must be a maskloss loss with a batch kind ({', '.join(registry.names(kind=True))}), "
                        f"got {like!r}")
    kind = spec.kind
    steps_shift = (1 if kind == "sparse" else 0) if shift is None else shift
    if steps_shift not in (0, 1) or isinstance(steps_shift, bool):
        raise ValueError(f"shift must be 0 or 1, got {shift!r}")
    if steps_shift and kind != "sparse":
        raise ValueError(f"shift=1 needs token ids: like must take integer labels, but {spec.name} is {kind!r}")
    ignore = options.get("ignore_index")
    fill = -100 if ignore is None else int(ignore)
    from_logits = bool(options.get("from_logits", False))
    documents = padded_batches(kind, max_batch=max_documents, max_steps=max_document_length, padding="right",
                               allow_empty_rows=False, from_logits=from_logits)
    row_lengths = st.integers(0, 10**6)
    like(*_expected_inputs(_tiny(kind), steps_shift, fill), **options)  # options are checked before any draw
    name = getattr(candidate, "__name__", repr(candidate))

    def expected_of(batch: PaddedBatch) -> float:
        y_true, y_pred, mask = _expected_inputs(batch, steps_shift, fill)
        return float(like(y_true, y_pred, mask, **options))

    def call(packing: Packing, y_true: Any, y_pred: Any) -> float:
        layout = {packed: packing.position_ids if packed == "position_ids" else packing.cu_seqlens}
        with np.errstate(all="ignore"):
            return float(candidate(y_true, y_pred, packing.mask, **layout))

    def fail(prop: str, batch: PaddedBatch, packing: Packing, actual: float, expected: float, why: str) -> None:
        raise PackedCheckError(
            f"check_packed_loss({name}, like=maskloss.{spec.name}, packed={packed!r}): property {prop!r} "
            f"failed: {why}\n  candidate {actual!r}, expected {expected!r} ({spec.name} on the padded documents)"
            f"\n  document lengths {batch.lengths.tolist()}; segment_ids {packing.segment_ids.tolist()}",
            prop=prop,
        )

    def one(batch: PaddedBatch, row_pick: int) -> None:
        expected = expected_of(batch)
        lens = batch.lengths
        if packed == "cu_seqlens":
            packings = [pack(batch.mask, None)]
        else:
            row_length = int(lens.max()) + row_pick % (int(lens.sum()) - int(lens.max()) + 1)
            packings = [pack(batch.mask, row_length), pack(batch.mask, row_length, order="first_fit")]
        for packing in packings:
            label_fill = fill if (kind == "sparse" and not steps_shift and ignore is not None) else 0
            y_true = packing.pack_array(batch.y_true, label_fill)
            y_pred = packing.pack_array(batch.y_pred, 0.0)
            actual = call(packing, y_true, y_pred)
            try:
                assert_loss_close(actual, expected, dtype="float64", rtol=rtol, atol=atol)
            except AssertionError:
                fail("packing", batch, packing, actual, expected,
                     "the packed rows do not give the value of the padded batch of the same documents")
            junk = call(packing, y_true, _boundary_junk(packing, y_pred, steps_shift))
            try:
                assert_loss_close(junk, expected, dtype="float64", rtol=rtol, atol=atol)
            except AssertionError:
                fail("boundary", batch, packing, junk, expected,
                     "other predictions at the last token of each document (which has no target) or at the "
                     "padding changed the value: a boundary step counts")

    test = settings(max_examples=max_examples, deadline=None, database=None,
                    derandomize=derandomize and seed is None, report_multiple_bugs=False,
                    verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck))(
        given(documents, row_lengths)(one))
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    with isolated_search():  # the same batches whatever the caller imported
        test()


def _tiny(kind: str) -> PaddedBatch:
    """One document of two steps, to check ``like``'s options before anything is drawn."""
    y_true: np.ndarray[Any, Any] = np.zeros((1, 2), dtype=np.int64) if kind == "sparse" else np.zeros((1, 2, 2))
    if kind == "dense":
        y_true[..., 0] = 1.0
    y_pred = np.full((1, 2, 2), 0.5)
    mask = np.ones((1, 2), dtype=bool)
    return PaddedBatch(y_true, y_pred, mask, np.array([2]), None, kind, "right")


def _expected_inputs(batch: PaddedBatch, shift: int, fill: int) -> tuple[Any, Any, Any]:
    if shift:
        targets, mask = _padded_targets(batch, shift, fill)
        return targets, batch.y_pred, mask
    return batch.y_true, batch.y_pred, batch.mask
