r""":func:`check_loss`: a user's masked loss against the oracle on generated padded batches."""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
from hypothesis import HealthCheck, Verbosity, given, settings

from maskloss.strategies import PADDINGS, PaddedBatch, padded_batches, round_to_bfloat16
from maskloss.testing import linear_check
from maskloss.testing.batches import (
    _all_masked_batch,
    _junk_label_variants,
    _junk_variants,
    _single_token_batches,
)
from maskloss.testing.properties import _Checker, _error, _Failure
from maskloss.testing.setup import check_options_apply as _check_options_apply  # noqa: F401
from maskloss.testing.setup import check_pad_label as _check_pad_label  # noqa: F401
from maskloss.testing.setup import resolve
from maskloss.testing.tolerances import _check_tolerance, _dtype_name

#: Largest ``max_batch``/``max_steps`` check_loss accepts (hypothesis draws far smaller batches).
_MAX_SIZE = 1024

__all__ = ["check_loss"]

_QUIET_CHECKS = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]


@contextlib.contextmanager
def _private_storage() -> Iterator[None]:
    """Keep hypothesis's files out of the user's working directory while check_loss runs.

    ``database=None`` is not enough: hypothesis caches the constants it reads from local
    modules (its "local constants" for generation) under ``storage_directory("constants")``,
    whose default home is ``.hypothesis/`` in the current directory. Unless the user chose
    a home (``HYPOTHESIS_STORAGE_DIRECTORY`` or ``set_hypothesis_home_dir``), point it at a
    directory under the system temp dir for the duration of the check and restore it after.
    """
    from hypothesis import configuration

    key = "__hypothesis_home_directory"
    previous = vars(configuration).get(key)
    if previous is not None or os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield  # the user's own choice of storage: leave it alone
        return
    configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "maskloss-hypothesis")
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


def _oracle_grad(like: Callable[..., Any]) -> Callable[..., Any]:
    try:
        from maskloss.gradients import value_and_grad  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ImportError(
            "check_loss(grad=...) compares with maskloss.gradients.value_and_grad, which this version of "
            "maskloss does not have; pass expected_grad= (a callable returning the true gradient) instead"
        ) from exc
    value_grad = value_and_grad(like)

    def expected(*args: Any, **kwargs: Any) -> Any:
        return value_grad(*args, **kwargs)[1]

    return expected


def check_loss(
    candidate: Callable[..., Any],
    like: Callable[..., Any],
    *,
    max_examples: int = 100,
    grad: Callable[..., Any] | None = None,
    expected_grad: Callable[..., Any] | None = None,
    adapter: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    dtype: Any = "float64",
    rtol: float | None = None,
    atol: float | None = None,
    reference_lowp: Callable[..., Any] | None = None,
    factor: float = 2.0,
    all_masked: float | None = None,
    padding: str | Sequence[str] = PADDINGS,
    weights: bool | str = False,
    max_batch: int = 4,
    max_steps: int = 6,
    min_features: int | None = None,
    max_features: int | None = None,
    kind: str | None = None,
    pad_label: int | None = None,
    scale: float = 1.0,
    shift: int = 0,
    smoothing_rule: str | None = None,
    smoothing_form: str | None = None,
    weight_normalization: str | None = None,
    allow_empty_rows: bool = True,
    derandomize: bool = True,
    seed: int | None = None,
    **options: Any,
) -> None:
    r"""Check a masked loss against the maskloss oracle on generated padded batches.

    ``candidate(y_true, y_pred, mask)`` is your loss with the call shape of the maskloss
    loss ``like`` (``sample_weight=`` is passed too when ``weights=True``);
    ``**options`` are ``like``'s keyword arguments that say what your loss computes
    (``reduction``, ``from_logits``, ``ignore_index``, ``label_smoothing``,
    ``class_weight``) and are passed to ``like`` only. ``mask`` is True at valid steps;
    with ``ignore_index`` every padded label also holds that index, so a loss may use
    either.

    ``like=maskloss.linear_cross_entropy`` checks a fused LM-head loss,
    ``candidate(hidden, weight, labels, mask[, bias=])``, on generated hidden states and
    head weights, with chunk invariance and the gradients for hidden, weight and bias:
    see :mod:`maskloss.testing.linear_check`.

    ``packed="position_ids"`` (or ``"cu_seqlens"``) checks a padding-free loss on packed rows
    with :func:`maskloss.testing.packed_check.check_packed_loss`, which receives
    ``max_examples``, ``rtol``, ``atol``, ``derandomize``, ``seed``, a non-zero ``shift`` and
    ``**options``; the other named parameters must keep their defaults there (a ``ValueError``
    names any that do not).

    ``like`` may also be a framework mirror of :mod:`maskloss.conventions`
    (``maskloss.conventions.torch.cross_entropy``, ``...fairseq.label_smoothed_nll_loss``,
    ``...keras3.sparse_categorical_crossentropy``, ...; the list and each call are in
    :mod:`maskloss.testing.likes`). The candidate is then called exactly as the mirror is,
    with the mirror's own arguments (``candidate(logits.reshape(-1, C), labels.reshape(-1),
    ignore_index=-100, ...)`` for torch), ``**options`` go to both, and every property
    runs, split and recombine with the mirror's own denominator; a property that cannot
    apply to a mirror is named in a warning with the reason.

    Properties checked on every generated batch, in this order (the first that fails
    on the smallest failing batch is reported):

    1. **agreement**: the value matches ``like`` (padded steps hold ordinary values);
    2. **padding content**: NaN, +inf or minus the dtype's largest value at padded steps
       (in the predictions, float targets; NaN/negative per-step weights) change nothing;
       then **junk labels**: out-of-range sparse labels at padded steps change nothing and
       crash nothing (a finding of its own, checked after the predictions, so that a loss
       that needs a valid id at padding still has its real findings seen; skipped, by
       contract, when ``ignore_index`` or ``pad_label`` says what padded labels hold);
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
    ``"sum"``, ``"batch_mean"`` and ``"element_mean"``; ``all_masked=0.0`` states a
    convention that returns 0 where the oracle gives NaN, like Keras 3, AllenNLP or
    fairseq).

    With ``grad`` (a callable with the candidate's call shape returning d loss / d
    ``y_pred``, e.g. :func:`torch_grad`) every property is checked again for the
    gradient, against ``maskloss.gradients.value_and_grad(like)`` or ``expected_grad``.

    Parameters
    ----------
    candidate : callable
        Your loss, NumPy in and out (or use ``adapter``).
    like : callable
        The maskloss loss it should equal, e.g. :func:`maskloss.sparse_categorical_crossentropy`.
    max_examples : int, default 100
        Generated batches (hypothesis examples) before declaring success.
    grad, expected_grad : callable, optional
        The candidate's gradient and (optionally) the true one.
    adapter : callable, optional
        Wraps ``candidate``, ``grad`` and ``reference_lowp`` so that framework code takes
        NumPy, e.g. :func:`torch_adapter` or :func:`jax_adapter`.
    dtype : {"float64", "float32", "float16", "bfloat16"}
        The dtype of the generated ``y_pred`` (and float targets) and so the tolerance
        row of :data:`TOLERANCES`; ``"bfloat16"`` batches are float32 arrays holding
        bfloat16 values (``torch_adapter(fn, dtype=torch.bfloat16)`` casts them).
    rtol, atol : float, optional
        Override the tolerance table.
    reference_lowp : callable, optional
        A framework's own low-precision implementation with the candidate's call shape;
        the value check becomes ``|actual - expected| <= factor * |reference - expected| + atol``.
    all_masked : float, optional
        The value the candidate's convention gives where the oracle gives NaN, that is
        when no step is valid (default: keep the oracle's NaN).
    padding : str or sequence of str
        Padding styles to generate (right, left, arbitrary).
    weights : bool or {"sequence", "step"}, default False
        Also generate ``sample_weight`` and pass it: ``True`` either shape, ``"sequence"``
        one weight per sequence ``(B,)``, ``"step"`` one per step ``(B, T)``.
    max_batch, max_steps : int
        Size of the generated batches (small sizes find bugs as well and shrink fast); each an
        int in ``[1, 1024]`` (hypothesis cannot draw larger batches, and larger bounds only
        allocate).
    min_features, max_features : int, optional
        Bounds on the last axis (features, or classes: default 2 to 5); fix it when an
        option depends on it, e.g. ``class_weight`` of length C.
    kind : str, optional
        The batch kind (see :func:`maskloss.strategies.padded_batches`) when ``like`` is
        not one of the five maskloss losses.
    pad_label : int, optional
        Sparse labels only: every padded label holds this class id (real code often
        computes cross-entropy at every step and needs a valid id there; pad often equals
        eos, so ``ignore_index`` cannot describe it). Must be a class of every generated
        batch (``0 <= pad_label < min_features``, default 2 classes).
    shift : int, default 0
        The causal language-model shift (HF's ``ForCausalLMLoss``): the candidate gets
        unshifted ``labels``, ``logits`` and ``mask`` and scores ``logits[:, :-shift]``
        against ``labels[:, shift:]``; the oracle is ``like`` on those, valid where
        ``mask[:, shift:]`` is. A token count the candidate divides by
        (``num_items_in_batch``) must count the shifted labels, ``mask[:, shift:].sum()``.
        The micro-batch weights of split and recombine are the shifted counts too.
    scale : float, default 1.0
        The candidate computes ``scale * like`` (a loss scaled by a constant, e.g. a
        sum over steps divided by a fixed length); every property still applies.
    smoothing_rule : {"uniform", "others", "others_except_pad"}, optional
        Where ``label_smoothing`` puts its mass (sparse cross-entropy only; see
        :func:`maskloss.pointwise.smoothed_target`): ``"uniform"`` (default) ε/C on every
        class (torch, Keras, HF); ``"others"`` ε/(C-1) on the wrong classes (fairseq >=
        0.12, T5X); ``"others_except_pad"`` ε/(C-2) on the wrong classes but the pad class
        ``ignore_index``, which gets 0 (OpenNMT-py ``LabelSmoothingLoss``).
    smoothing_form : {"cross_entropy", "kl"}, optional
        Score the prediction by the smoothed target's cross-entropy (default) or by the KL
        divergence, the cross-entropy minus the target's entropy (``F.kl_div``: OpenNMT-py, T5X).
    weight_normalization : {"weighted", "numerator", "nonzero_fraction"}, optional
        How the sample weight enters the mean (see
        :func:`maskloss.reductions.renormalized_value`): ``"weighted"`` (default)
        :math:`\sum mw\ell/\sum mw` (torch, maskloss); ``"numerator"``
        :math:`\sum mw\ell/\sum m` (Keras 3 and tf.keras ``sum_over_batch_size``);
        ``"nonzero_fraction"`` that times :math:`K/\operatorname{nnz}(w)` (Keras 2.0-2.2
        ``weighted_masked_objective``). Needs ``weights``.
    allow_empty_rows : bool, default True
        Whether generated batches may hold a sequence with no valid step. ``False`` for
        code that divides per sequence and cannot take one; the all-masked batch is then
        not checked (a warning says so).
    derandomize : bool, default True
        Use hypothesis's fixed example sequence so that a test is reproducible (the
        sequence is derived from check_loss's own code, so it changes between maskloss
        versions).
    seed : int, optional
        Another reproducible sequence (``hypothesis.seed``); overrides ``derandomize``.

    Raises
    ------
    LossCheckError (an AssertionError)
        Naming the property that broke, the candidate's and the oracle's numbers, and
        the smallest failing batch.

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> from maskloss.testing import check_loss
    >>> def my_mse(y_true, y_pred, mask):           # select, then average over valid steps
    ...     per_step = np.square(np.where(mask[..., None], y_true - y_pred, 0.0)).mean(-1)
    ...     return per_step.sum() / mask.sum()
    >>> check_loss(my_mse, maskloss.mse, max_examples=20)   # passes silently
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
    if "packed" in options:  # packed rows with position_ids= / cu_seqlens=: maskloss.testing.packed_check
        from maskloss.testing.packed_check import check_packed_loss

        _refuse_changed(
            "check_loss(packed=...)", grad=grad, expected_grad=expected_grad, adapter=adapter, dtype=dtype,
            reference_lowp=reference_lowp, factor=factor, all_masked=all_masked, padding=padding, weights=weights,
            max_batch=max_batch, max_steps=max_steps, min_features=min_features, max_features=max_features,
            kind=kind, pad_label=pad_label, scale=scale, smoothing_rule=smoothing_rule,
            smoothing_form=smoothing_form, weight_normalization=weight_normalization,
            allow_empty_rows=allow_empty_rows,
        )
        if shift:  # else the packed check's own default (the causal shift 1 for a sparse like)
            options["shift"] = shift
        return check_packed_loss(candidate, like, max_examples=max_examples, rtol=rtol, atol=atol,
                                 derandomize=derandomize, seed=seed, **options)
    if linear_check.is_linear(like):  # hidden states and a head's weight, not logits: its own module
        _refuse_changed("check_loss(like=linear_cross_entropy)", kind=kind, pad_label=pad_label, scale=scale,
                        shift=shift, weights=weights, smoothing_rule=smoothing_rule, smoothing_form=smoothing_form,
                        weight_normalization=weight_normalization, expected_grad=expected_grad)
        return linear_check.check_linear_loss(
            candidate, max_examples=max_examples, grad=grad, adapter=adapter, dtype=dtype, rtol=rtol, atol=atol,
            reference_lowp=reference_lowp, factor=factor, all_masked=all_masked, padding=padding,
            max_batch=max_batch, max_steps=max_steps, min_features=min_features, max_features=max_features,
            allow_empty_rows=allow_empty_rows, derandomize=derandomize, seed=seed, options=options,
        )
    for size_name, size in (("max_batch", max_batch), ("max_steps", max_steps)):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= _MAX_SIZE:
            raise ValueError(f"{size_name} must be an int in [1, {_MAX_SIZE}], got {size!r:.80}")
    rtol, atol = _check_tolerance(rtol, "rtol"), _check_tolerance(atol, "atol")
    if not callable(candidate) or not callable(like):
        raise TypeError(f"candidate and like must be callables, got {candidate!r} and {like!r}")
    if not isinstance(allow_empty_rows, bool):
        raise TypeError(f"allow_empty_rows must be True or False, got {allow_empty_rows!r}")
    dt = _dtype_name(dtype)
    setup = resolve(
        like,
        options,
        kind=kind,
        pad_label=pad_label,
        shift=shift if isinstance(shift, int) and not isinstance(shift, bool) else 0,
        grad=grad,
        weights=weights,
        min_features=min_features,
        smoothing_rule=smoothing_rule,
        smoothing_form=smoothing_form,
        weight_normalization=weight_normalization,
    )
    kind, reduction, label_fill = setup.kind, setup.reduction, setup.label_fill
    if grad is not None and reduction == "none":
        raise ValueError("grad= needs a scalar reduction, not reduction='none'")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale == 0:
        raise ValueError(f"scale must be a finite nonzero number (the candidate is scale * like), got {scale!r}")
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
        raise ValueError(f"shift must be an int >= 0 (the causal shift), got {shift!r}")
    if shift and kind != "sparse":
        raise ValueError(
            f"shift={shift} is the causal language-model shift of sparse labels; it does not apply "
            f"to kind={kind!r}"
        )
    if shift and reduction == "none":
        raise ValueError(f"shift={shift} needs a scalar reduction, not reduction='none'")
    if all_masked is not None and not isinstance(all_masked, (int, float)):
        raise TypeError(f"all_masked must be a float (or None for the oracle's value), got {all_masked!r}")
    wrap = adapter if adapter is not None else (lambda f: f)
    checker = _Checker(
        candidate=wrap(candidate),
        grad=None if grad is None else wrap(grad),
        oracle=setup.oracle,
        oracle_grad=None if grad is None else (expected_grad or _oracle_grad(setup.oracle)),
        reference_lowp=None if reference_lowp is None else wrap(reference_lowp),
        options=setup.options,
        reduction=reduction,
        dtype=dt,
        rtol=rtol,
        atol=atol,
        factor=factor,
        all_masked=all_masked,
        label_fill=label_fill,
        splittable=setup.splittable,
        scale=float(scale),
        shift=shift,
        spec=setup.spec,
        denominator_of=setup.denominator_of,
        pure=setup.pure,
    )
    strategy = padded_batches(
        kind,
        max_batch=max_batch,
        min_features=setup.min_features,
        max_features=max_features,
        max_steps=max_steps,
        padding=padding,
        allow_empty_rows=allow_empty_rows,
        from_logits=setup.from_logits,
        ignore_index=label_fill if kind == "sparse" else None,  # fills padded labels only
        weights=bool(weights),
        dtype=dt,
    )
    if weights in ("sequence", "step"):
        strategy = strategy.map(lambda b: _weights_as(b, weights))
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

    test = settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=derandomize and seed is None,
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
        suppress_health_check=_QUIET_CHECKS,
    )(given(strategy)(one_batch))
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        test = hypothesis.seed(seed)(test)
    if setup.not_applicable:
        for prop, why in setup.not_applicable.items():
            warnings.warn(f"check_loss: {prop} not checked for {like_call}: {why}", UserWarning, stacklevel=2)
    elif not checker.splittable:
        warnings.warn(
            f"check_loss: split and recombine not checked for like={getattr(like, '__name__', like)!r}: "
            "it is not a maskloss loss, so the micro-batch weights (its per-sequence denominators) are "
            "unknown; use a maskloss loss with shift=, scale=, pad_label= where they state the convention",
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
        with _private_storage():
            test()
        with np.errstate(all="ignore"):
            base = _base_batch(checker, kind, weights)
            _special_batches(checker, base, grad is not None, label_fill, count, allow_empty_rows)
    except _Failure as failure:
        raise _error(failure, name, like_call, checker, count) from None


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


def _refuse_changed(call: str, **given: Any) -> None:
    """check_loss's named parameters that ``call`` does not take must keep their defaults (no silent drop)."""
    defaults = inspect.signature(check_loss).parameters
    changed = [f"{k}={v!r}" for k, v in given.items() if v is not defaults[k].default and v != defaults[k].default]
    if changed:
        raise ValueError(f"{call} does not take {', '.join(changed)}")
