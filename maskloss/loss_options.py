r"""The convention options of the losses, in one home: ``shift=``, ``smoothing_rule=``, ``smoothing_form=``,
``scale=`` and ``weight_normalization=``.

Each option is defined and validated here, and each loss declares the ones it takes
(:data:`OPTIONS_OF`, read by :func:`check_applies`); the losses compute them, with their
gradients through :func:`maskloss.value_and_grad` and :func:`maskloss.vjp`. At their defaults
they change no bit.

``shift`` : int >= 0, default 0
    The causal language-model shift: the label at step :math:`t + s` is scored by the
    prediction at step :math:`t`, along the last axis of the labels. HF's ``ForCausalLMLoss``
    (``transformers.loss.loss_utils``) pads the labels with ``ignore_index`` and scores
    ``logits[..., :-1, :]`` against ``labels[..., 1:]``; Cut Cross-Entropy's ``shift=1`` does
    the same. ``mask`` and ``sample_weight`` are given in the labels' positions: the step of
    label :math:`t` is valid where ``mask[..., t]`` is and :math:`t \ge s`. The scalar reductions
    count the :math:`T - s` shifted steps (``element_mean`` divides by :math:`B(T - s)`).
    With ``reduction="none"`` the output has shape ``labels.shape[:-1] + (T - s,)``: position
    :math:`t` holds the loss of label :math:`t + s` scored by prediction :math:`t` (0 where that
    label is masked or ignored). That is Cut Cross-Entropy 25.1's ``shift=1, reduction="none"``
    output (the shape of ``targets[..., 1:]``) and HF's ``shift_labels = labels[..., 1:]``
    against ``logits[..., :-1, :]``; HF's padded form (the labels padded with ``ignore_index``
    at the end, then ``F.cross_entropy(..., reduction="none")``) is the same with :math:`s`
    zeros appended. A ``cotangent`` of :func:`maskloss.vjp` has the same shifted shape. The
    gradient has ``y_pred``'s shape and is 0 at the last :math:`s` predictions (they score no
    label).
``smoothing_rule`` : {"uniform", "others", "others_except_pad"}, default "uniform"
    Where label smoothing puts its mass :math:`\varepsilon` (:func:`maskloss.pointwise.smoothed_target`):
    ``"uniform"`` :math:`q_y = 1 - \varepsilon + \varepsilon/C`, :math:`q_c = \varepsilon/C`
    (torch, Keras, HF); ``"others"`` :math:`q_y = 1 - \varepsilon`, :math:`q_c = \varepsilon/(C-1)`
    (fairseq's ``label_smoothed_nll_loss``, T5X); ``"others_except_pad"`` as ``"others"`` with
    :math:`\varepsilon/(C-2)` and no mass on the pad class, which is ``ignore_index`` (OpenNMT-py).
    A rule other than ``"uniform"`` needs ``label_smoothing > 0`` and takes no ``class_weight``.
``smoothing_form`` : {"cross_entropy", "kl"}, default "cross_entropy"
    What is scored against the smoothed target :math:`q`: :math:`-\sum_c q_c \log p_c`, or the KL
    divergence :math:`\sum_c q_c \log(q_c / p_c)` (``F.kl_div(log_p, q, reduction="sum")`` per
    row, OpenNMT-py and T5X), which is the cross-entropy less the constant :math:`H(q)`, so the
    gradient is the same.
``scale`` : float, default 1.0 (every pipeline loss)
    The loss times a constant :math:`c` (finite, non-zero), value and gradient: a sum over the
    steps divided by a fixed length (``loss.sum() / T`` in a hand-written loop, the chatbot
    tutorial's "T times the token mean") is ``reduction="sum", scale=1/T``. ``c = 1`` changes no bit.
``weight_normalization`` : {"weighted", "numerator", "nonzero_fraction"}, default "weighted"
    (every pipeline loss with ``sample_weight=``) How the sample weight :math:`w` enters a scalar
    mean (:func:`maskloss.reductions.renormalized_value`): ``"weighted"``
    :math:`\sum m w \ell / \sum m w` (torch, maskloss); ``"numerator"``
    :math:`\sum m w \ell / \sum m` (Keras 3 and tf.keras ``sum_over_batch_size``);
    ``"nonzero_fraction"`` that times :math:`K/\operatorname{nnz}(w)`, :math:`K` the entries of
    ``sample_weight`` as given (padded ones included), NaN when every weight is 0 (Keras 2.0-2.2
    ``weighted_masked_objective``). ``"sum"`` and ``"element_mean"`` have no weighted
    denominator, so only the factor of ``"nonzero_fraction"`` changes them; ``reduction="none"``
    takes only ``"weighted"``.

Examples
--------
>>> import numpy as np, maskloss
>>> logits = np.array([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [9.0, 9.0, 9.0]]])
>>> labels = np.array([[7, 0, 2]])       # the first label is scored by nothing
>>> a = maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True, shift=1)
>>> b = maskloss.sparse_categorical_crossentropy(labels[:, 1:], logits[:, :-1], from_logits=True)
>>> bool(a == b)
True
>>> y, p, w = np.zeros((2, 1, 1)), np.ones((2, 1, 1)), np.array([3.0, 1.0])
>>> float(maskloss.mse(y, p, sample_weight=w, weight_normalization="numerator"))   # (3 + 1) / 2 steps
2.0
>>> float(maskloss.mse(y, p, reduction="sum", scale=0.5))
1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from maskloss.pointwise import SMOOTHING_FORMS, SMOOTHING_RULES, smoothed_target
from maskloss.reductions import WEIGHT_NORMALIZATIONS

__all__ = [
    "CONVENTION_OPTIONS",
    "OPTIONS_OF",
    "SMOOTHING_FORMS",
    "SMOOTHING_RULES",
    "WEIGHT_NORMALIZATIONS",
    "Smoothing",
    "check_applies",
    "check_scale",
    "check_shift",
    "check_smoothing",
    "check_weight_normalization",
    "declare",
]

#: The convention options a loss may take, by name.
CONVENTION_OPTIONS: tuple[str, ...] = ("shift", "smoothing_rule", "smoothing_form", "scale", "weight_normalization")

#: The convention options each loss takes, by the loss's name (filled by :func:`declare`).
OPTIONS_OF: dict[str, tuple[str, ...]] = {}


def declare(name: str, options: tuple[str, ...]) -> None:
    """Declare that the loss ``name`` takes the convention ``options`` (names of :data:`CONVENTION_OPTIONS`).

    Declarations add up: the registry declares the options of every pipeline loss, a loss
    module those it computes itself.
    """
    unknown = [o for o in options if o not in CONVENTION_OPTIONS]
    if unknown:
        raise ValueError(f"declare({name!r}): unknown convention options {unknown}; known: {CONVENTION_OPTIONS}")
    known = OPTIONS_OF.get(name, ())
    OPTIONS_OF[name] = known + tuple(o for o in options if o not in known)


def check_applies(fn: Callable[..., Any] | str, options: dict[str, Any]) -> None:
    """Every convention option in ``options`` applies to the loss ``fn``; else a ValueError naming it."""
    name = fn if isinstance(fn, str) else getattr(fn, "__name__", repr(fn))
    takes = OPTIONS_OF.get(name, ())
    for key, value in options.items():
        if key in CONVENTION_OPTIONS and key not in takes:
            which = [n for n, o in OPTIONS_OF.items() if key in o]
            raise ValueError(
                f"option {key}={value!r} does not apply to maskloss.{name}: it applies to "
                f"{', '.join('maskloss.' + n for n in which) or 'no loss'}"
            )


def check_scale(scale: object) -> float:
    """``scale`` must be a finite, non-zero real number (the loss is multiplied by it)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"scale must be a finite non-zero number (the loss is multiplied by it), got {scale!r}")
    value = float(scale)
    if not math.isfinite(value) or value == 0.0:
        raise ValueError(f"scale must be a finite non-zero number (the loss is multiplied by it), got {scale!r}")
    return value


def check_weight_normalization(normalization: object, reduction: str) -> str:
    """``weight_normalization`` must name a rule, and a non-default rule needs a scalar reduction."""
    if not isinstance(normalization, str) or normalization not in WEIGHT_NORMALIZATIONS:
        raise ValueError(f"weight_normalization must be one of {WEIGHT_NORMALIZATIONS}, got {normalization!r}")
    if normalization != "weighted" and reduction == "none":
        raise ValueError(
            f"weight_normalization={normalization!r} says how the sample weight enters a mean; "
            "reduction='none' has no mean: use a scalar reduction or weight_normalization='weighted'"
        )
    return normalization


def check_shift(shift: object, steps: int) -> int:
    """``shift`` must be an int >= 0 (the causal shift along the labels' last axis of ``steps`` steps).

    A shift of ``steps`` or more leaves no step (every label lies beyond the row), as a shift
    of exactly ``steps`` does: it is returned as ``steps``, so the steps, the ``"none"`` values
    (none) and the gradient (zeros in ``y_pred``'s shape) are laid out as for that shift.
    """
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)):
        raise TypeError(f"shift must be an int >= 0 (the causal shift), got {shift!r}")
    if shift < 0:
        raise ValueError(f"shift must be an int >= 0 (the causal shift), got {shift!r}")
    return min(int(shift), steps)


@dataclass(frozen=True)
class Smoothing:
    """A validated non-uniform smoothing: the target's masses, the pad class and :math:`H(q)` for ``"kl"``."""

    q_gold: float
    q_other: float
    pad: int | None
    entropy: float

    def coefficients(self, labels: np.ndarray[Any, Any], num_classes: int) -> np.ndarray[Any, Any]:
        r"""The ``(n, C)`` target :math:`q` of each row (0 at the pad class)."""
        coef = np.full((labels.shape[0], num_classes), self.q_other)
        if self.pad is not None:
            coef[:, self.pad] = 0.0
        coef[np.arange(labels.shape[0]), labels] = self.q_gold
        return coef


def _xlogx(q: float) -> float:
    return float(q * np.log(q)) if q > 0 else 0.0


def check_smoothing(
    rule: object, form: object, label_smoothing: float, *, class_weight: object, ignore_index: int | None,
    num_classes: int,
) -> Smoothing | None:
    """Validate ``smoothing_rule``/``smoothing_form``; None for the default (uniform cross-entropy)."""
    if rule not in SMOOTHING_RULES:
        raise ValueError(f"smoothing_rule must be one of {SMOOTHING_RULES}, got {rule!r}")
    if form not in SMOOTHING_FORMS:
        raise ValueError(f"smoothing_form must be one of {SMOOTHING_FORMS}, got {form!r}")
    if rule == "uniform" and form == "cross_entropy":
        return None
    if rule != "uniform" and not label_smoothing:
        raise ValueError(
            f"smoothing_rule={rule!r} contradicts label_smoothing={label_smoothing!r}: a loss without smoothing "
            "has no rule; pass label_smoothing > 0"
        )
    if class_weight is not None:
        raise ValueError(
            f"smoothing_rule={rule!r} / smoothing_form={form!r} do not take class_weight= "
            f"(got {class_weight!r}): only the uniform cross-entropy form weighs classes"
        )
    pad = None
    if rule == "others_except_pad":
        if ignore_index is None:
            raise ValueError(
                "smoothing_rule='others_except_pad' excludes the pad class, which is ignore_index=; got "
                "ignore_index=None (OpenNMT-py's padding_idx is both)"
            )
        if num_classes < 3:
            raise ValueError(
                "smoothing_rule='others_except_pad' spreads eps / (C - 2): it needs C >= 3 classes, "
                f"got C={num_classes}"
            )
        if not 0 <= ignore_index < num_classes:
            raise ValueError(
                f"smoothing_rule='others_except_pad' needs the pad class ignore_index={ignore_index!r} to be a "
                f"class, in [0, {num_classes - 1}]"
            )
        pad = ignore_index
    elif rule == "others" and num_classes < 2:
        raise ValueError(f"smoothing_rule='others' spreads eps / (C - 1): it needs C >= 2 classes, got C={num_classes}")
    q_gold, q_other = smoothed_target(num_classes, label_smoothing, str(rule), pad)
    entropy = 0.0
    if form == "kl":
        others = num_classes - 1 - (pad is not None)
        entropy = -_xlogx(q_gold) - others * _xlogx(q_other)
    return Smoothing(q_gold, q_other, pad, entropy)
