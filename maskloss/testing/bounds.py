r""":class:`Bounds`: what :func:`maskloss.testing.check_loss` generates, in one value.

check_loss's own parameters are about *checking* (tolerances, the gradient, the adapter, the
run settings); what to generate, the batches' sizes, padding styles, weights, the label that
padded steps hold and the value the candidate gives when nothing is valid, is one frozen
:class:`Bounds` (or, instead, a hypothesis strategy of the user's own batches, ``batches=``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from maskloss.strategies import PADDINGS

__all__ = ["BOUND_FIELDS", "MAX_SIZE", "WEIGHT_SHAPES", "Bounds"]

#: Largest ``max_batch``/``max_steps`` (hypothesis draws far smaller batches; larger bounds only allocate).
MAX_SIZE = 1024

#: The accepted ``weights`` values.
WEIGHT_SHAPES: tuple[bool | str, ...] = (False, True, "sequence", "step")


@dataclass(frozen=True)
class Bounds:
    r"""What :func:`~maskloss.testing.check_loss` generates, and the candidate's value on empty batches.

    Every field has check_loss's historical default, so ``Bounds()`` is the default check and
    ``Bounds(max_batch=8, weights="step")`` changes only what it names. Invalid values raise a
    ``ValueError``/``TypeError`` naming the field when the value is made.

    Parameters
    ----------
    max_batch, max_steps : int, default 4 and 6
        Size of the generated batches (small sizes find bugs as well and shrink fast); each an
        int in ``[1, 1024]``.
    min_features, max_features : int, optional
        Bounds on the last axis (features, or classes: default 2 to 5); fix it when an
        option depends on it, e.g. ``class_weight`` of length C.
    padding : str or sequence of str, default all of :data:`maskloss.strategies.PADDINGS`
        Padding styles to generate (``"right"``, ``"left"``, ``"arbitrary"``).
    weights : bool or {"sequence", "step"}, default False
        Also generate ``sample_weight`` and pass it: ``True`` either shape, ``"sequence"``
        one weight per sequence ``(B,)``, ``"step"`` one per step ``(B, T)``.
    kind : str, optional
        The batch kind (see :func:`maskloss.strategies.padded_batches`) when ``like`` is not a
        registered maskloss loss (whose kind is known).
    pad_label : int, optional
        Sparse labels only: every padded label holds this class id (real code often computes
        cross-entropy at every step and needs a valid id there; pad often equals eos, so
        ``ignore_index`` cannot describe it). Must be in ``[0, min_features)`` (default 2 classes).
    allow_empty_rows : bool, default True
        Whether generated batches may hold a sequence with no valid step. ``False`` for code
        that divides per sequence and cannot take one; the all-masked batch is then not
        checked (a warning says so).
    all_masked : float, optional
        The value the candidate's convention gives where the oracle gives NaN, that is when no
        step is valid (default: keep the oracle's NaN; ``0.0`` for Keras 3, AllenNLP, fairseq).

    Examples
    --------
    >>> from maskloss.testing import Bounds
    >>> b = Bounds(max_batch=8, weights="step")
    >>> b.changed()
    {'max_batch': 8, 'weights': 'step'}
    >>> b.max_steps, b.padding
    (6, ('right', 'left', 'arbitrary'))
    >>> Bounds(max_batch=0)
    Traceback (most recent call last):
    ...
    ValueError: max_batch must be an int in [1, 1024], got 0
    """

    max_batch: int = 4
    max_steps: int = 6
    min_features: int | None = None
    max_features: int | None = None
    padding: str | Sequence[str] = PADDINGS
    weights: bool | str = False
    kind: str | None = None
    pad_label: int | None = None
    allow_empty_rows: bool = True
    all_masked: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_steps"):
            size = getattr(self, name)
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= MAX_SIZE:
                raise ValueError(f"{name} must be an int in [1, {MAX_SIZE}], got {size!r:.80}")
        if self.weights not in WEIGHT_SHAPES or not isinstance(self.weights, (bool, str)):
            raise ValueError(f"weights must be one of {WEIGHT_SHAPES}, got {self.weights!r}")
        if not isinstance(self.allow_empty_rows, bool):
            raise TypeError(f"allow_empty_rows must be True or False, got {self.allow_empty_rows!r}")
        if self.kind is not None and not isinstance(self.kind, str):
            raise TypeError(f"kind must be a batch kind (a str) or None, got {self.kind!r}")
        if self.all_masked is not None and (
            isinstance(self.all_masked, bool) or not isinstance(self.all_masked, (int, float))
        ):
            raise TypeError(f"all_masked must be a float (or None for the oracle's value), got {self.all_masked!r}")

    def changed(self) -> dict[str, Any]:
        """The fields that differ from their defaults, by name (what a check that ignores them must refuse)."""
        default = Bounds()
        out = {}
        for f in fields(self):
            value, base = getattr(self, f.name), getattr(default, f.name)
            if value is not base and value != base:
                out[f.name] = value
        return out


#: The field names of :class:`Bounds` (check_loss's deprecated keywords of the same names map to them).
BOUND_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Bounds))
