r"""What check_loss checks against, resolved from ``like`` and the options, before any batch runs.

A maskloss loss (optionally with another label-smoothing rule or weight rule, see
:mod:`maskloss.testing.oracles`) or a framework mirror (:mod:`maskloss.testing.likes`);
every option that contradicts ``like`` is a ``ValueError`` naming it and its value.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskloss import loss_options, registry
from maskloss.accumulation import masked_totals
from maskloss.loss_options import CONVENTION_OPTIONS
from maskloss.pointwise import SMOOTHING_FORMS, SMOOTHING_RULES
from maskloss.reductions import WEIGHT_NORMALIZATIONS
from maskloss.strategies import PaddedBatch
from maskloss.testing import oracles
from maskloss.testing.bounds import Bounds
from maskloss.testing.likes import Like, like_of


def kind_of(like: Callable[..., Any]) -> str | None:
    """The batch kind of a registered loss (its declaration in :mod:`maskloss.registry`), else None."""
    spec = registry.spec_of(like)
    return None if spec is None else spec.kind



@dataclass
class Setup:
    kind: str
    oracle: Callable[..., Any]
    options: dict[str, Any]
    reduction: str
    label_fill: int | None
    from_logits: bool
    like_call: str
    spec: Like | None = None
    denominator_of: Callable[[PaddedBatch], float | None] | None = None
    pure: bool = True
    splittable: bool = True
    min_features: int | None = None
    not_applicable: dict[str, str] = field(default_factory=dict)
    shift: int = 0  # the causal shift (what validity means)
    oracle_shifts: bool = False  # like computes the shift itself (else the checker slices the batch)


def _fmt(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def check_options_apply(like: Callable[..., Any], options: dict[str, Any]) -> None:
    """Every ``**options`` entry is a keyword of ``like`` (label_smoothing for mse contradicts it)."""
    try:
        params = inspect.signature(like).parameters
    except (TypeError, ValueError):
        return  # no signature to read (a builtin): like itself will say
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if p.kind is not inspect.Parameter.POSITIONAL_ONLY]
    for key in options:
        if key not in names:
            raise ValueError(
                f"option {key}={options[key]!r} does not apply to like={getattr(like, '__name__', like)!r}: "
                f"it takes {', '.join(n for n in names if n not in ('y_true', 'y_pred', 'mask'))}"
            )


def check_pad_label(pad_label: object, kind: str, ignore_index: object, min_features: int | None) -> None:
    """``pad_label`` is a class id every generated batch has, for sparse labels without ignore_index."""
    if pad_label is None:
        return
    if kind != "sparse":
        raise ValueError(f"pad_label={pad_label!r} applies only to sparse labels (kind='sparse'), not kind={kind!r}")
    if ignore_index is not None:
        raise ValueError(
            f"pad_label={pad_label!r} contradicts ignore_index={ignore_index!r}: padded labels hold the "
            "ignore index; pass one of the two"
        )
    if isinstance(pad_label, bool) or not isinstance(pad_label, (int, np.integer)):
        raise TypeError(f"pad_label must be an int (a class id), got {pad_label!r}")
    classes = 2 if min_features is None else min_features
    if not 0 <= int(pad_label) < classes:
        raise ValueError(
            f"pad_label={int(pad_label)} is outside the classes: generated batches have at least "
            f"{classes} classes (min_features={min_features}), so pad_label must be in [0, {classes - 1}]"
        )


def _mirror(
    like: Callable[..., Any], spec: Like, options: dict[str, Any], kind: str | None, pad_label: int | None,
    shift: int, grad: object, weights: object, min_features: int | None, extra: dict[str, Any],
) -> Setup:
    name = f"like=maskloss.conventions.{spec.name}"
    if kind is not None and kind != spec.kind:
        raise ValueError(f"kind={kind!r} contradicts {name}, whose batches are kind={spec.kind!r}")
    for key, value in extra.items():
        raise ValueError(
            f"option {key}={value!r} does not apply to {name}: a framework mirror states its own convention "
            "(pass its own options instead)"
        )
    for key in options:
        if key not in spec.defaults:
            raise ValueError(
                f"option {key}={options[key]!r} does not apply to {name}: it takes "
                f"{', '.join(spec.defaults) or 'no options'}"
            )
    for key in spec.required:
        if options.get(key) is None:
            raise ValueError(f"{name} needs the option {key}= (it has no default), got {options.get(key)!r}")
    if shift:
        raise ValueError(
            f"shift={shift} does not apply to {name}: "
            + ("the mirror shifts the labels itself" if spec.name.startswith("hf.") else "it is not a causal LM loss")
        )
    if grad is not None:
        raise ValueError(
            f"grad= is not supported with {name}: no expected gradient can be derived for a framework mirror "
            "(its candidate is called in the framework's own shapes, and expected_grad= is not taken here); "
            "check the gradient with like= the maskloss loss that states the same convention (e.g. "
            "maskloss.sparse_categorical_crossentropy with from_logits=True, ignore_index=, label_smoothing=, "
            "smoothing_rule=), which derives it"
        )
    if weights and not spec.takes_weights:
        raise ValueError(f"weights={weights!r} does not apply to {name}: it takes no per-sequence or per-step weight")
    call_options = dict(options)
    fill = None
    if spec.label_fill is not None:
        fill = call_options.setdefault(spec.label_fill, spec.defaults[spec.label_fill])
        if isinstance(fill, bool) or not isinstance(fill, (int, np.integer)):
            raise TypeError(f"{spec.label_fill} must be an int, got {fill!r}")
    check_pad_label(pad_label, spec.kind, fill, min_features if min_features is not None else spec.min_features)
    na = spec.not_applicable(call_options)
    return Setup(
        kind=spec.kind,
        oracle=like,
        options=call_options,
        reduction="none",
        label_fill=fill if fill is not None else pad_label,
        from_logits=spec.logits(call_options),
        like_call=f"maskloss.conventions.{spec.name}({_fmt(call_options)})",
        spec=spec,
        denominator_of=lambda b: spec.denominator(b, call_options),
        pure=not spec.reads_padding,
        splittable="split and recombine" not in na,
        min_features=min_features if min_features is not None else spec.min_features,
        not_applicable=na,
    )


def resolve(
    like: Callable[..., Any],
    options: dict[str, Any],
    *,
    bounds: Bounds,
    grad: object,
    weight_normalization: str | None = None,
) -> Setup:
    """The oracle, its options and the micro-batch rule for ``like``; ValueError on a contradiction.

    The convention options (:data:`maskloss.loss_options.CONVENTION_OPTIONS`) in ``options`` go
    to ``like``, which computes them; ``weight_normalization`` (deprecated, checker-side) wraps it.
    """
    kind, pad_label, weights, min_features = bounds.kind, bounds.pad_label, bounds.weights, bounds.min_features
    spec = like_of(like)
    if spec is not None:
        rest = {k: v for k, v in options.items() if k not in CONVENTION_OPTIONS}
        extra = {k: v for k, v in options.items() if k in CONVENTION_OPTIONS and k != "shift"}
        if weight_normalization is not None:
            extra["weight_normalization"] = weight_normalization
        shift = _shift_of(options)
        return _mirror(like, spec, rest, kind, pad_label, shift, grad, weights, min_features, extra)
    registered = kind_of(like) is not None
    kind = kind_of(like) if kind is None else kind
    name = getattr(like, "__name__", like)
    if kind is None:
        raise ValueError(
            f"like={name!r} is not a maskloss loss or mirror; pass kind= in bounds=Bounds(kind=...)"
        )
    shift = _shift_of(options)
    if shift and kind != "sparse":
        raise ValueError(
            f"shift={shift} is the causal language-model shift of sparse labels; it does not apply "
            f"to kind={kind!r} (like={name!r})"
        )
    options = dict(options)
    oracle_shifts = bool(shift)
    if registered:
        loss_options.check_applies(like, options)
    elif shift and not _takes(like, "shift"):  # a custom like without shift=: the old checker-side shift
        warnings.warn(
            f"check_loss(shift={shift}) for like={name!r}, which takes no shift=, is deprecated: the checker "
            "slices labels[:, s:] and predictions[:, :-s] itself; give like a shift= keyword (or use "
            "maskloss.sparse_categorical_crossentropy, which computes it) instead",
            DeprecationWarning,
            stacklevel=4,
        )
        del options["shift"]
        oracle_shifts = False
    check_options_apply(like, options)
    reduction = options.get("reduction", "token_mean")
    ignore_index = options.get("ignore_index")
    check_pad_label(pad_label, kind, ignore_index, min_features)
    rule, form = options.get("smoothing_rule"), options.get("smoothing_form")
    if registered and (rule is not None or form is not None):
        _check_smoothing(options, rule, form, ignore_index, min_features)
    oracle, denominator_of = like, None
    if weight_normalization is not None:
        if oracle_shifts:  # the weight rule wraps like's totals: shift checker-side, as before
            del options["shift"]
            oracle_shifts = False
        oracle, denominator_of = _weights(like, options, weight_normalization, weights, reduction, shift, oracle)
    elif shift and not oracle_shifts and reduction == "none":
        raise ValueError(f"shift={shift} needs a scalar reduction, not reduction='none'")
    extra = {} if weight_normalization is None else {"weight_normalization": weight_normalization}
    if shift and not oracle_shifts:
        extra["shift"] = shift
    call = {**options, **extra}
    return Setup(
        kind=kind,
        oracle=oracle,
        options=options,
        reduction=reduction,
        label_fill=ignore_index if ignore_index is not None else pad_label,
        from_logits=bool(options.get("from_logits", False)),
        like_call=f"maskloss.{name}({_fmt(call)})",
        denominator_of=denominator_of,
        # Keras 2's nonzero_fraction counts the weights at padded steps too (K / nnz(w)): the
        # oracle reads padding by definition, so junk there is compared with the oracle on it
        pure=registered and weight_normalization != "nonzero_fraction",
        splittable=registered,
        min_features=min_features,
        shift=shift,
        oracle_shifts=oracle_shifts,
    )


def _shift_of(options: dict[str, Any]) -> int:
    """The causal shift in ``options`` (0 when absent), validated."""
    shift = options.get("shift", 0)
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or shift < 0:
        raise ValueError(f"shift must be an int >= 0 (the causal shift), got {shift!r}")
    return int(shift)


def _takes(like: Callable[..., Any], key: str) -> bool:
    """Whether ``like``'s signature takes the keyword ``key`` (or any keyword)."""
    try:
        params = inspect.signature(like).parameters
    except (TypeError, ValueError):
        return False
    return key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _check_smoothing(
    options: dict[str, Any], rule: str | None, form: str | None, ignore_index: int | None, min_features: int | None,
) -> None:
    """Eager checks of ``smoothing_rule``/``smoothing_form`` against the generated classes (like computes them)."""
    if rule is not None and rule not in SMOOTHING_RULES:
        raise ValueError(f"smoothing_rule must be one of {SMOOTHING_RULES}, got {rule!r}")
    if form is not None and form not in SMOOTHING_FORMS:
        raise ValueError(f"smoothing_form must be one of {SMOOTHING_FORMS}, got {form!r}")
    eps = options.get("label_smoothing", 0.0)
    if rule not in (None, "uniform") and not eps:
        raise ValueError(
            f"smoothing_rule={rule!r} contradicts label_smoothing={eps!r}: a loss without smoothing has no rule; "
            "pass label_smoothing > 0"
        )
    if options.get("class_weight") is not None and (rule not in (None, "uniform") or form not in (None,
                                                                                                "cross_entropy")):
        raise ValueError(
            f"smoothing_rule={rule!r} / smoothing_form={form!r} do not take class_weight= "
            f"(got {options['class_weight']!r}): only the uniform cross-entropy form weighs classes"
        )
    if rule == "others_except_pad":
        if ignore_index is None:
            raise ValueError(
                "smoothing_rule='others_except_pad' excludes the pad class, which is ignore_index=; got "
                "ignore_index=None (OpenNMT-py's padding_idx is both)"
            )
        classes = 2 if min_features is None else min_features
        if classes < 3:
            raise ValueError(
                f"smoothing_rule='others_except_pad' spreads eps / (C - 2): bounds=Bounds(min_features=...) must have "
                f"min_features >= 3, got min_features={min_features!r}"
            )
        if not 0 <= int(ignore_index) < classes:
            raise ValueError(
                f"smoothing_rule='others_except_pad' needs the pad class ignore_index={ignore_index!r} to be a "
                f"class, in [0, {classes - 1}] (min_features={min_features!r})"
            )


def _weights(
    like: Callable[..., Any], options: dict[str, Any], normalization: str, weights: object, reduction: str,
    shift: int, oracle: Callable[..., Any],
) -> tuple[Callable[..., Any], Callable[[PaddedBatch], float | None]]:
    if normalization not in WEIGHT_NORMALIZATIONS:
        raise ValueError(f"weight_normalization must be one of {WEIGHT_NORMALIZATIONS}, got {normalization!r}")
    if not weights:
        raise ValueError(
            f"weight_normalization={normalization!r} says how sample weights are normalised, but weights="
            f"{weights!r} draws none; pass bounds=Bounds(weights=True, 'sequence' or 'step')"
        )
    if reduction == "none":
        raise ValueError(f"weight_normalization={normalization!r} needs a scalar reduction, not reduction='none'")
    if oracle is not like:
        raise ValueError(
            f"weight_normalization={normalization!r} cannot be combined with smoothing_rule/smoothing_form"
        )
    oracle = oracles.weight_normalized(like, normalization)
    return oracle, _denominator_of(like, options, reduction, shift, normalization)


def _denominator_of(
    like: Callable[..., Any], options: dict[str, Any], reduction: str, shift: int, normalization: str = "weighted"
) -> Callable[[PaddedBatch], float | None]:
    """D(batch) of ``like``'s totals (the unweighted ones for the numerator-only rules), for split weights."""
    totals = masked_totals(like)
    plain = {k: v for k, v in options.items() if k != "reduction"}

    def denominator(b: PaddedBatch) -> float | None:
        if shift:
            sw = b.sample_weight
            b = b._replace(
                y_true=b.y_true[:, shift:],
                y_pred=b.y_pred[:, : b.y_pred.shape[1] - shift],
                mask=b.mask[:, shift:],
                sample_weight=sw if sw is None or sw.ndim == 1 else sw[:, shift:],
            )
        w = b.sample_weight
        if normalization == "weighted":
            t = totals(b.y_true, b.y_pred, b.mask, sample_weight=w, **plain)
        else:
            t = totals(b.y_true, b.y_pred, b.mask, **plain)
        den = oracles.denominator(t, reduction)
        if normalization == "nonzero_fraction" and w is not None:
            den *= np.count_nonzero(w) / w.size
        return den

    return denominator
