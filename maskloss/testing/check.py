r""":func:`check_loss`: a user's masked loss against the oracle on generated padded batches."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Collection, Sequence
from typing import Any

import hypothesis
import numpy as np
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis.strategies import SearchStrategy

from maskloss import loss_options, registry
from maskloss.loss_options import CONVENTION_OPTIONS
from maskloss.strategies import PaddedBatch, padded_batches, round_to_bfloat16
from maskloss.testing import linear_check, oracles
from maskloss.testing._search import isolated_search
from maskloss.testing.batches import (
    _all_masked_batch,
    _junk_label_variants,
    _junk_variants,
    _single_token_batches,
)
from maskloss.testing.bounds import BOUND_FIELDS, Bounds
from maskloss.testing.properties import _Checker, _error, _Failure, known_labels
from maskloss.testing.setup import check_options_apply as _check_options_apply  # noqa: F401
from maskloss.testing.setup import check_pad_label as _check_pad_label  # noqa: F401
from maskloss.testing.setup import resolve
from maskloss.testing.tolerances import _check_tolerance, _dtype_name

__all__ = ["Bounds", "check_loss"]

#: After the first failure: at most this many more searches (of a quarter of ``max_examples`` each)
#: with the failing properties found so far set aside, to name the properties it hid.
_MORE_SEARCHES = 2

_QUIET_CHECKS = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]


def _oracle_grad(oracle: Callable[..., Any], like: Callable[..., Any]) -> Callable[..., Any]:
    """d oracle / d y_pred, derived from the maskloss loss the oracle is (or carries, see
    :func:`maskloss.testing.oracles.gradient_of`); else a ValueError saying to pass ``expected_grad=``."""
    try:
        from maskloss.gradients import value_and_grad  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ImportError(
            "check_loss(grad=...) compares with maskloss.gradients.value_and_grad, which this version of "
            "maskloss does not have; pass expected_grad= (a callable returning the true gradient) instead"
        ) from exc
    loss, extra = oracles.gradient_of(oracle)
    spec = registry.spec_of(loss)
    name = getattr(like, "__name__", like)
    if spec is None or not spec.grad:
        raise ValueError(
            f"check_loss(grad=...): no expected gradient can be derived for like={name!r}: "
            + ("it is not" if loss is like else f"its oracle is built on {getattr(loss, '__name__', loss)!r}, not")
            + f" one of maskloss's losses with a gradient ({', '.join(registry.names(grad=True))}); pass "
            "expected_grad= (a callable with like's call shape returning d loss / d y_pred), or use such a "
            "loss as like"
        )
    takes = loss_options.OPTIONS_OF.get(spec.name, ())
    missing = [k for k in extra if k in _CHECKER_SIDE and k not in takes]  # partial keywords: the loss checks
    if missing:
        raise ValueError(
            f"check_loss(grad=...): no expected gradient can be derived for like={name!r} with "
            f"{', '.join(f'{k}={extra[k]!r}' for k in missing)}: maskloss.{spec.name} does not take it; pass "
            "expected_grad= (a callable with like's call shape returning d loss / d y_pred)"
        )
    value_grad = value_and_grad(loss)

    def expected(*args: Any, **kwargs: Any) -> Any:
        return value_grad(*args, **kwargs, **extra)[1]

    return expected


#: check_loss's conventions that are options of the maskloss losses (``scale=`` of every pipeline loss,
#: ``weight_normalization=`` of those with ``sample_weight=``, :mod:`maskloss.loss_options`): passed
#: to such a ``like`` as options. For any other ``like`` (a mirror, your own function) they stay
#: deprecated checker-side spellings, applied by the checker, with what to use instead.
_CHECKER_SIDE = {
    "scale": (
        1.0,
        "a maskloss loss with scale= as like (every pipeline loss takes it), or a candidate divided by the "
        "constant, check_loss(lambda *a, **k: candidate(*a, **k) / scale, like)",
    ),
    "weight_normalization": (
        None,
        "a maskloss loss with sample_weight= as like: it takes weight_normalization= itself",
    ),
}


def _warn_deprecated(old: str, new: str) -> None:
    """A DeprecationWarning pointing at check_loss's caller (check_loss -> helper -> here -> caller)."""
    warnings.warn(f"{old} is deprecated; use {new} instead", DeprecationWarning, stacklevel=4)


def _bounds_from(bounds: Bounds | None, options: dict[str, Any]) -> Bounds:
    """``bounds``, or the deprecated keywords of its fields popped from ``options`` (with a warning)."""
    old = {k: options.pop(k) for k in list(options) if k in BOUND_FIELDS}
    if bounds is not None and not isinstance(bounds, Bounds):
        raise TypeError(f"bounds must be a maskloss.testing.Bounds (or None), got {bounds!r:.80}")
    if not old:
        return Bounds() if bounds is None else bounds
    spelled = ", ".join(f"{k}={v!r}" for k, v in old.items())
    if bounds is not None:
        raise TypeError(f"check_loss() got bounds= and the deprecated {spelled}; pass bounds=Bounds(...) only")
    _warn_deprecated(f"check_loss({spelled})", f"check_loss(bounds=maskloss.testing.Bounds({spelled}))")
    return Bounds(**old)


def _checker_side(like: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The checker-side conventions popped from ``options`` (defaults for those not given).

    A maskloss loss that takes ``scale=`` computes it: the option stays in ``options`` (passed to
    ``like``) and the checker's scale is 1. ``weight_normalization=`` of a loss that takes it is
    no longer deprecated; the checker still reads it, because it also sets how split batches
    recombine (the value is the loss's own: :func:`maskloss.reductions.renormalized_value`).
    Anything else is a deprecated spelling, with a warning that says what to use.
    """
    spec = registry.spec_of(like)
    takes = loss_options.OPTIONS_OF.get(spec.name, ()) if spec is not None else ()
    if "scale" in options:  # a clear error now, not from inside the search (before any deprecation warning)
        loss_options.check_scale(options["scale"])  # the one home: TypeError for a non-number, ValueError for 0/inf/nan
    out = {}
    for key, (default, instead) in _CHECKER_SIDE.items():
        if key not in options:
            out[key] = default
        elif key == "scale" and key in takes:
            out[key] = default  # like computes it
        elif key in takes:
            out[key] = options.pop(key)
        else:
            value = options.pop(key)
            _warn_deprecated(f"check_loss({key}={value!r}) with like={getattr(like, '__name__', like)!r}", instead)
            out[key] = value
    return out


def check_loss(
    candidate: Callable[..., Any],
    like: Callable[..., Any],
    *,
    batches: SearchStrategy[PaddedBatch] | None = None,
    bounds: Bounds | None = None,
    max_examples: int = 100,
    derandomize: bool = True,
    seed: int | None = None,
    dtype: Any = "float64",
    rtol: float | None = None,
    atol: float | None = None,
    reference_lowp: Callable[..., Any] | None = None,
    factor: float = 2.0,
    grad: Callable[..., Any] | None = None,
    expected_grad: Callable[..., Any] | None = None,
    adapter: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    known: str | Collection[str] | None = None,
    **options: Any,
) -> None:
    r"""Check a masked loss against the maskloss oracle on generated padded batches.

    ``candidate(y_true, y_pred, mask)`` is your loss with the call shape of the maskloss
    loss ``like`` (``sample_weight=`` is passed too when ``Bounds(weights=True)``);
    ``**options`` are ``like``'s keyword arguments that say what your loss computes
    (``reduction``, ``from_logits``, ``ignore_index``, ``label_smoothing``,
    ``class_weight``, and the conventions ``shift``, ``smoothing_rule``, ``smoothing_form``
    of :mod:`maskloss.loss_options`) and are passed to ``like`` only: ``like`` computes
    them, the checker does not. An option that does not apply to ``like`` is a
    ``ValueError`` naming it. ``mask`` is True at valid steps; with ``ignore_index`` every
    padded label also holds that index, so a loss may use either.

    check_loss's own parameters are only about checking: what to generate (``bounds`` or
    your own ``batches``), how to compare (``dtype``, ``rtol``, ``atol``,
    ``reference_lowp``, ``factor``), the gradient (``grad``, ``expected_grad``), the
    ``adapter`` and the run settings (``max_examples``, ``derandomize``, ``seed``).

    ``like=maskloss.linear_cross_entropy`` checks a fused LM-head loss,
    ``candidate(hidden, weight, labels, mask[, bias=])``, on generated hidden states and
    head weights, with chunk invariance and the gradients for hidden, weight and bias:
    see :mod:`maskloss.testing.linear_check`.

    ``packed="position_ids"`` (or ``"cu_seqlens"``), an option check_loss keeps for itself,
    checks a padding-free loss on packed rows with
    :func:`maskloss.testing.packed_check.check_packed_loss`, which receives
    ``max_examples``, ``rtol``, ``atol``, ``derandomize``, ``seed`` and ``**options``
    (``shift`` included); the other parameters must keep their defaults there (a
    ``ValueError`` names any that do not).

    ``like`` may also be a framework mirror of :mod:`maskloss.conventions`
    (``maskloss.conventions.torch.cross_entropy``, ``...fairseq.label_smoothed_nll_loss``,
    ``...keras3.sparse_categorical_crossentropy``, ...; the list and each call are in
    :mod:`maskloss.testing.likes`). The candidate is then called exactly as the mirror is,
    with the mirror's own arguments (``candidate(logits.reshape(-1, C), labels.reshape(-1),
    ignore_index=-100, ...)`` for torch), ``**options`` go to both, and every property
    runs, split and recombine with the mirror's own denominator; a property that cannot
    apply to a mirror is named in a warning with the reason.

    Properties checked on every generated batch, in this order (every property runs on
    every batch; the first that fails is reported in full on the smallest failing batch, and
    every other property that failed is listed by name, values and the smallest batch seen, in
    ``LossCheckError.others``; ``known=`` sets findings aside):

    1. **agreement**: the value matches ``like`` (padded steps hold ordinary values);
    2. **padding content**: NaN, +inf or minus the dtype's largest value at padded steps
       (in the predictions, float targets; NaN/negative per-step weights) change nothing;
       then **junk labels**: out-of-range sparse labels at padded steps change nothing and
       crash nothing (a finding of its own, checked after the predictions, so that a loss
       that needs a valid id at padding still has its real findings seen; skipped, by
       contract, when ``ignore_index`` or ``Bounds(pad_label=)`` says what padded labels hold);
    3. **padding amount**: two more fully padded steps change nothing (but
       ``"element_mean"``'s denominator, as the oracle says);
    4. **left vs right padding**: the valid steps moved to the other side;
    5. **batch order**: the sequences in reverse order;
    6. **split and recombine**: the candidate on two micro-batches, recombined with
       their counts (token counts for ``"token_mean"``, non-empty sequences for
       ``"sequence_mean"``, sequences, steps, or plain sums), equals the full batch
       (the gradient-accumulation rule).

    All-masked batches are left out of the generated ones and checked afterwards, with
    single-token batches: 7. **single-token batch**, 8. **all-masked batch** (the
    oracle's value: NaN for ``"token_mean"`` and ``"sequence_mean"``, as in torch, 0 for
    ``"sum"``, ``"batch_mean"`` and ``"element_mean"``; ``Bounds(all_masked=0.0)`` states a
    convention that returns 0 where the oracle gives NaN, like Keras 3, AllenNLP or
    fairseq).

    With ``grad`` (a callable with the candidate's call shape returning d loss / d
    ``y_pred``, e.g. :func:`torch_grad`) every property is checked again for the
    gradient, against ``maskloss.value_and_grad(like)`` with the options or ``expected_grad``.

    Parameters
    ----------
    candidate : callable
        Your loss, NumPy in and out (or use ``adapter``).
    like : callable
        The maskloss loss it should equal, e.g. :func:`maskloss.sparse_categorical_crossentropy`.
    batches : hypothesis strategy of PaddedBatch, optional
        Your own batches instead of the generated ones. Each drawn value must be a
        :class:`maskloss.strategies.PaddedBatch` of ``like``'s kind (``Bounds(kind=)`` for a
        custom ``like``): ``y_pred`` (and float ``y_true``) in ``dtype`` (bfloat16 values as
        float32), a boolean ``mask`` of shape ``(B, T)``, ``lengths``, ``sample_weight``
        (``None``, ``(B,)`` or ``(B, T)``), and, when ``ignore_index`` or ``Bounds(pad_label=)``
        is given, that label at every padded step. :func:`maskloss.strategies.padded_batches`
        and its ``.map``/``.filter`` are the easy way. With ``batches=``, ``bounds`` still
        says ``kind``, ``pad_label``, ``weights``, ``min_features``, ``allow_empty_rows`` and
        ``all_masked`` (the single-token and all-masked batches are built from them), and
        its size fields (``max_batch``, ``max_steps``, ``max_features``, ``padding``) must
        keep their defaults.
    bounds : Bounds, optional
        What to generate (sizes, padding styles, weights, the batch kind, the padded label)
        and the candidate's value on all-masked batches; default ``Bounds()``.
    max_examples : int, default 100
        Generated batches (hypothesis examples) before declaring success.
    derandomize : bool, default True
        Use hypothesis's fixed example sequence so that a test is reproducible (the
        sequence is derived from check_loss's own code, so it changes between maskloss
        versions). It does not depend on what the caller has imported: hypothesis's
        "local constants" (drawn from the imported modules) are switched off during the
        search (:func:`maskloss.testing._search.no_local_constants`; with a hypothesis
        version without those internals the plain behaviour applies).
    seed : int, optional
        Another reproducible sequence (``hypothesis.seed``); overrides ``derandomize``.
    dtype : {"float64", "float32", "float16", "bfloat16"}
        The dtype of the generated ``y_pred`` (and float targets) and so the tolerance
        row of :data:`TOLERANCES`; ``"bfloat16"`` batches are float32 arrays holding
        bfloat16 values (``torch_adapter(fn, dtype=torch.bfloat16)`` casts them).
    rtol, atol : float, optional
        Override the tolerance table.
    reference_lowp : callable, optional
        A framework's own low-precision implementation with the candidate's call shape;
        the value check becomes ``|actual - expected| <= factor * |reference - expected| + atol``.
    factor : float, default 2.0
        See ``reference_lowp``.
    grad, expected_grad : callable, optional
        The candidate's gradient and (optionally) the true one.
    adapter : callable, optional
        Wraps ``candidate``, ``grad`` and ``reference_lowp`` so that framework code takes
        NumPy, e.g. :func:`torch_adapter` or :func:`jax_adapter`.
    known : str or collection of str, optional
        Findings to set aside: property names (``"padding content"``, ``"split and recombine"``,
        ``"padding_content"`` also works, ``"nan_leak"`` is ``"padding content"``), each for the
        value and the gradient, or ``"<property> (gradient)"`` for the gradient only. Those
        properties are still run (their failures are not reported), so that a known NaN leak
        through ``loss * mask`` does not hide a wrong denominator. A ``ValueError`` names an
        unknown entry.
    **options
        ``like``'s keyword arguments (see above), and ``packed=``.

    Notes
    -----
    Deprecated keywords, still accepted with a ``DeprecationWarning`` that says what to use:
    the fields of :class:`Bounds` (``max_batch=``, ``max_steps=``, ``min_features=``,
    ``max_features=``, ``padding=``, ``weights=``, ``kind=``, ``pad_label=``,
    ``allow_empty_rows=``, ``all_masked=``) map to ``bounds=Bounds(...)``. Two conventions
    no maskloss loss computes yet stay checker-side behaviour, deprecated:

    ``scale=`` (float, default 1.0)
        The candidate computes ``scale * like`` (a loss scaled by a constant).
    ``weight_normalization=`` ({"weighted", "numerator", "nonzero_fraction"})
        How the sample weight enters the mean (see
        :func:`maskloss.reductions.renormalized_value`): ``"weighted"``
        :math:`\sum mw\ell/\sum mw` (torch, maskloss); ``"numerator"``
        :math:`\sum mw\ell/\sum m` (Keras 3 and tf.keras ``sum_over_batch_size``);
        ``"nonzero_fraction"`` that times :math:`K/\operatorname{nnz}(w)` (Keras 2.0-2.2
        ``weighted_masked_objective``). Needs ``Bounds(weights=...)``.

    ``shift=`` for a custom ``like`` (not a maskloss loss) whose signature has no ``shift``
    is also applied checker-side, deprecated: ``like`` is called on ``labels[:, s:]`` against
    ``predictions[:, :-s]``.

    Raises
    ------
    LossCheckError (an AssertionError)
        Naming the property that broke, the candidate's and the oracle's numbers, and
        the smallest failing batch.

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> from maskloss.testing import Bounds, check_loss
    >>> def my_mse(y_true, y_pred, mask):           # select, then average over valid steps
    ...     per_step = np.square(np.where(mask[..., None], y_true - y_pred, 0.0)).mean(-1)
    ...     return per_step.sum() / mask.sum()
    >>> check_loss(my_mse, maskloss.mse, max_examples=20)   # passes silently
    >>> check_loss(my_mse, maskloss.mse, bounds=Bounds(max_batch=2, padding="left"), max_examples=10)
    >>> def my_mse_times_mask(y_true, y_pred, mask):  # multiply by the mask: nan * 0 = nan
    ...     return (np.square(y_true - y_pred).mean(-1) * mask).sum() / mask.sum()
    >>> check_loss(my_mse_times_mask, maskloss.mse, max_examples=20)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    maskloss.testing.LossCheckError: check_loss: my_mse_times_mask is not maskloss.mse()
    property broken: padding content: junk under the mask (NaN, inf, huge values) ...
    ...
    """
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples must be an int >= 1, got {max_examples!r}")
    options = dict(options)
    bounds = _bounds_from(bounds, options)
    side = _checker_side(like, options)
    scale, weight_normalization = side["scale"], side["weight_normalization"]
    if "packed" in options:  # packed rows with position_ids= / cu_seqlens=: maskloss.testing.packed_check
        from maskloss.testing.packed_check import check_packed_loss

        _refuse_changed(
            "check_loss(packed=...)", bounds, batches=batches, known=known, grad=grad, expected_grad=expected_grad,
            adapter=adapter, dtype=dtype, reference_lowp=reference_lowp, factor=factor, scale=scale,
            weight_normalization=weight_normalization,
        )
        return check_packed_loss(candidate, like, max_examples=max_examples, rtol=rtol, atol=atol,
                                 derandomize=derandomize, seed=seed, **options)
    if linear_check.is_linear(like):  # hidden states and a head's weight, not logits: its own module
        # smoothing_rule= / smoothing_form= go to linear_cross_entropy (the oracle computes them);
        # shift= is still refused: the linear check's padding properties do not know the shift yet
        conventions = {k: options[k] for k in CONVENTION_OPTIONS if k in options
                       and k not in ("smoothing_rule", "smoothing_form")}
        _refuse_changed(
            "check_loss(like=linear_cross_entropy)", bounds, ("kind", "pad_label", "weights"), batches=batches,
            known=known, scale=scale, weight_normalization=weight_normalization, expected_grad=expected_grad,
            **conventions,
        )
        return linear_check.check_linear_loss(
            candidate, max_examples=max_examples, grad=grad, adapter=adapter, dtype=dtype, rtol=rtol, atol=atol,
            reference_lowp=reference_lowp, factor=factor, all_masked=bounds.all_masked, padding=bounds.padding,
            max_batch=bounds.max_batch, max_steps=bounds.max_steps, min_features=bounds.min_features,
            max_features=bounds.max_features, allow_empty_rows=bounds.allow_empty_rows, derandomize=derandomize,
            seed=seed, options=options,
        )
    rtol, atol = _check_tolerance(rtol, "rtol"), _check_tolerance(atol, "atol")
    known_set = known_labels(known)
    if not callable(candidate) or not callable(like):
        raise TypeError(f"candidate and like must be callables, got {candidate!r} and {like!r}")
    if batches is not None:
        if not isinstance(batches, SearchStrategy):
            raise TypeError(f"batches must be a hypothesis strategy of PaddedBatch, got {batches!r:.80}")
        sizes = {k: v for k, v in bounds.changed().items() if k in ("max_batch", "max_steps", "max_features",
                                                                     "padding")}
        if sizes:
            raise ValueError(
                f"batches= draws your own batches: bounds {', '.join(f'{k}={v!r}' for k, v in sizes.items())} "
                "would be ignored; leave them at their defaults"
            )
    dt = _dtype_name(dtype)
    setup = resolve(like, options, bounds=bounds, grad=grad, weight_normalization=weight_normalization)
    kind, reduction, label_fill, shift = setup.kind, setup.reduction, setup.label_fill, setup.shift
    weights, allow_empty_rows = bounds.weights, bounds.allow_empty_rows
    if grad is not None and reduction == "none":
        raise ValueError("grad= needs a scalar reduction, not reduction='none'")
    wrap = adapter if adapter is not None else (lambda f: f)
    checker = _Checker(
        candidate=wrap(candidate),
        grad=None if grad is None else wrap(grad),
        oracle=setup.oracle,
        oracle_grad=None if grad is None else (expected_grad or _oracle_grad(setup.oracle, like)),
        reference_lowp=None if reference_lowp is None else wrap(reference_lowp),
        options=setup.options,
        reduction=reduction,
        dtype=dt,
        rtol=rtol,
        atol=atol,
        factor=factor,
        all_masked=bounds.all_masked,
        label_fill=label_fill,
        splittable=setup.splittable,
        scale=float(scale),
        shift=shift,
        oracle_shifts=setup.oracle_shifts,
        spec=setup.spec,
        denominator_of=setup.denominator_of,
        pure=setup.pure,
        known=known_set,
    )
    if batches is not None:
        strategy = batches.map(lambda b: _user_batch(b, kind))
    else:
        strategy = padded_batches(
            kind,
            max_batch=bounds.max_batch,
            min_features=setup.min_features,
            max_features=bounds.max_features,
            max_steps=bounds.max_steps,
            padding=bounds.padding,
            allow_empty_rows=allow_empty_rows,
            from_logits=setup.from_logits,
            ignore_index=label_fill if kind == "sparse" else None,  # fills padded labels only
            weights=bool(weights),
            dtype=dt,
        )
        if weights in ("sequence", "step"):
            strategy = strategy.map(lambda b: _weights_as(b, str(weights)))
    name = getattr(candidate, "__name__", repr(candidate))
    like_call = setup.like_call
    if scale != 1.0:
        like_call = f"{float(scale)!r} * {like_call}"
    if shift:
        like_call += f" on labels[:, {shift}:] vs predictions[:, :-{shift}]"
    count = [0, 0]  # examples run, examples run at the first failure

    def one_batch(b: PaddedBatch) -> None:
        count[0] += 1
        try:
            # Junk, NaN and inf are the point here: numpy's warnings about them are noise.
            with np.errstate(all="ignore"):
                if reduction != "none" and np.isnan(checker.oracle_value(b)):
                    return  # no valid step: all-masked batches are checked on their own, afterwards
                for gradient in (False, True) if grad is not None else (False,):
                    checker.gradient = gradient
                    checker.properties(b)
        except _Failure:
            if not count[1]:
                count[1] = count[0]
            raise

    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")

    def search(examples: int) -> None:
        checker.collecting, checker.pending = True, []
        test = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=derandomize and seed is None,
            report_multiple_bugs=False,
            verbosity=Verbosity.quiet,
            suppress_health_check=_QUIET_CHECKS,
        )(given(strategy)(one_batch))
        if seed is not None:
            test = hypothesis.seed(seed)(test)
        with isolated_search():  # the same batches whatever the caller imported; no files in its directory
            test()
        with np.errstate(all="ignore"):
            base = _base_batch(checker, kind, weights)
            _special_batches(checker, base, grad is not None, label_fill, count, allow_empty_rows)

    if setup.not_applicable:
        for prop, why in setup.not_applicable.items():
            warnings.warn(f"check_loss: {prop} not checked for {like_call}: {why}", UserWarning, stacklevel=2)
    elif not checker.splittable:
        warnings.warn(
            f"check_loss: split and recombine not checked for like={getattr(like, '__name__', like)!r}: "
            "it is not a maskloss loss, so the micro-batch weights (its per-sequence denominators) are "
            "unknown; use a maskloss loss with shift= or bounds=Bounds(pad_label=) where they state the convention",
            UserWarning,
            stacklevel=2,
        )
    if not allow_empty_rows:
        warnings.warn(
            "check_loss: all-masked batch not checked: allow_empty_rows=False says the candidate cannot take "
            "a sequence with no valid step",
            UserWarning,
            stacklevel=2,
        )
    try:
        search(max_examples)
    except _Failure as failure:
        first = failure
    else:
        return
    # The first failing property is reported in full; search again with the ones found set aside,
    # so that a second bug the first hides (a NaN leak hiding a wrong denominator) is named too.
    first_count = list(count)
    for _ in range(_MORE_SEARCHES):
        checker.known = known_set | set(checker.seen)
        before = set(checker.seen)
        try:
            search(max(10, max_examples // 4))
        except _Failure:
            pass
        if set(checker.seen) <= before:
            break
    checker.known = known_set
    raise _error(first, name, like_call, checker, first_count) from None


def _weights_as(b: PaddedBatch, shape: str) -> PaddedBatch:
    """``weights="sequence"``: one weight per sequence, (B,); ``"step"``: one per step, (B, T)."""
    w = b.sample_weight
    if w is None:
        return b
    if shape == "sequence" and w.ndim == 2:
        return b._replace(sample_weight=w[:, 0].copy())
    if shape == "step" and w.ndim == 1:
        return b._replace(sample_weight=np.repeat(w[:, None], b.mask.shape[1], axis=1))
    return b


def _special_batches(
    checker: _Checker,
    base: PaddedBatch,
    with_grad: bool,
    label_fill: int | None,
    count: list[int],
    allow_empty_rows: bool = True,
) -> None:
    """Single-token and all-masked batches, made from one simple valid step."""
    for gradient in (False, True) if with_grad else (False,):
        checker.gradient = gradient
        for single in _single_token_batches(base, label_fill):
            count[0] += 1
            checker.check("single-token batch", single)
        if not allow_empty_rows:
            continue
        empty = _all_masked_batch(base, label_fill)
        count[0] += 1
        for junked in [empty, *_junk_variants(empty, label_fill, checker.dtype)[:1]]:
            checker.check("all-masked batch", junked)
        if label_fill is None:
            for junked in _junk_label_variants(empty)[:1]:
                checker.check("junk labels", junked)
        checker.flush()


def _base_batch(checker: _Checker, kind: str, weights: bool | str) -> PaddedBatch:
    """One valid step with simple fixed values, in the checked dtype: the seed of the special batches."""
    logits = bool(checker.options.get("from_logits", False))
    if kind == "regression":
        y_true: np.ndarray[Any, Any] = np.array([[[1.0, -0.5]]])
        y_pred = np.array([[[0.25, 0.5]]])
    elif kind == "binary":
        y_true = np.array([[[1.0, 0.0]]])
        y_pred = np.array([[[0.5, -1.0]]])
        y_pred = y_pred if logits else 1.0 / (1.0 + np.exp(-y_pred))
    else:
        y_pred = np.array([[[0.5, 1.0, -1.0]]])
        if not logits:
            y_pred = np.exp(y_pred) / np.exp(y_pred).sum(axis=-1, keepdims=True)
        y_true = np.array([[1]]) if kind == "sparse" else np.array([[[0.0, 1.0, 0.0]]])
    storage = np.float32 if checker.dtype == "bfloat16" else np.dtype(checker.dtype).type
    y_pred = y_pred.astype(storage)
    if kind != "sparse":
        y_true = y_true.astype(storage)
    if checker.dtype == "bfloat16":
        y_pred = round_to_bfloat16(y_pred)
        y_true = y_true if kind == "sparse" else round_to_bfloat16(y_true)
    mask = np.ones((1, 1), dtype=bool)
    w = (np.ones((1, 1)) if weights == "step" else np.ones(1)) if weights else None
    return PaddedBatch(y_true, y_pred, mask, mask.sum(axis=1), w, kind, "right")


def _refuse_changed(call: str, bounds: Bounds, fields: Sequence[str] | None = None, **given: Any) -> None:
    """Parameters ``call`` does not take must keep their defaults (no silent drop): named ones, then bounds.

    ``fields`` are the :class:`Bounds` fields ``call`` cannot honour (default: all of them).
    """
    defaults = inspect.signature(check_loss).parameters
    side = {k: default for k, (default, _) in _CHECKER_SIDE.items()}
    changed = []
    for k, v in given.items():
        default = defaults[k].default if k in defaults else side.get(k)
        if v is not default and v != default:
            changed.append(f"{k}={v!r}")
    changed += [f"{k}={v!r}" for k, v in bounds.changed().items() if fields is None or k in fields]
    if changed:
        raise ValueError(f"{call} does not take {', '.join(changed)}")


def _user_batch(b: object, kind: str) -> PaddedBatch:
    """A batch drawn from the user's ``batches=`` strategy, checked for what check_loss relies on."""
    if not isinstance(b, PaddedBatch):
        raise TypeError(f"batches= must draw maskloss.strategies.PaddedBatch values, drew {type(b).__name__}")
    if b.kind != kind:
        raise ValueError(f"batches= drew a batch of kind={b.kind!r}; like's batches are kind={kind!r}")
    mask = np.asarray(b.mask)
    if mask.dtype != np.bool_ or mask.ndim != 2:
        raise ValueError(f"batches= drew a mask of dtype {mask.dtype} and shape {mask.shape}; it must be bool (B, T)")
    if np.shape(b.y_pred)[:2] != mask.shape or np.shape(b.y_true)[:2] != mask.shape:
        raise ValueError(
            f"batches= drew y_true {np.shape(b.y_true)}, y_pred {np.shape(b.y_pred)} and mask {mask.shape}: "
            "their first two axes must be the mask's (B, T)"
        )
    return b
