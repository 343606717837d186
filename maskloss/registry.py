r"""The loss registry: every loss of maskloss declared once, and every list of losses read off it.

A loss is one declaration. For a loss built as a :class:`maskloss.pipeline.Pipeline` (all
but the linear cross-entropy), :func:`loss` decorates the function that validates the
arguments and returns the pipeline; the decorated name becomes the public loss, with the
builder's signature and docstring, returning ``pipeline.value()``:

.. code-block:: python

    @registry.loss(kind="regression", evaluate=True)
    def mae(y_true, y_pred, mask=None, *, reduction="token_mean", sample_weight=None) -> Pipeline:
        r'''Masked mean absolute error. ...'''
        return Pipeline(...)

A loss with its own gradient code (:func:`maskloss.linear_cross_entropy`) is declared with
:func:`register`. The declaration (a :class:`LossSpec`) holds everything the rest of the
package asks about a loss:

======================  ==========================================================================
asked by                from the declaration
======================  ==========================================================================
the public loss         the builder's signature and docstring; returns ``pipeline.value()``
value_and_grad, vjp     the pipeline (:meth:`~maskloss.pipeline.Pipeline.value_and_grad`,
                        :meth:`~maskloss.pipeline.Pipeline.vjp`) or the loss's own gradient code
masked_totals, dask     the pipeline (:meth:`~maskloss.pipeline.Pipeline.totals`)
check_loss, strategies  ``kind``: the batch :func:`maskloss.strategies.padded_batches` draws
``maskloss evaluate``   ``evaluate=True``: offered as a ``loss`` choice
error messages          :func:`names`, in declaration order
======================  ==========================================================================

Nothing here imports a framework, hypothesis or pytest.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar, overload

import numpy as np

from maskloss import loss_options
from maskloss._checks import check_mask
from maskloss._types import LossValue as _LossValue
from maskloss.pipeline import Pipeline
from maskloss.reductions import same_document, segment_ids_for

__all__ = [
    "BATCH_KINDS",
    "LossSpec",
    "LossValue",
    "loss",
    "names",
    "pipeline_of",
    "pipeline_transform",
    "register",
    "register_pipeline",
    "require",
    "spec_of",
    "specs",
    "unregister",
]

P = ParamSpec("P")
T = TypeVar("T")

#: What a loss returns: a ``numpy.float64`` for a scalar reduction, a float64 array of the
#: steps' shape for ``reduction="none"`` (defined in :mod:`maskloss._types`).
LossValue = _LossValue

#: The kinds of batch :func:`maskloss.strategies.padded_batches` draws (``kind=`` of a
#: declaration): ``"regression"`` ``(B, T, F)`` targets and predictions, ``"binary"`` 0/1
#: targets and probabilities or logits of the same shape, ``"dense"`` one-hot targets and
#: ``(B, T, C)`` predictions, ``"sparse"`` ``(B, T)`` integer labels and ``(B, T, C)`` predictions.
BATCH_KINDS: tuple[str, ...] = ("regression", "binary", "dense", "sparse")


@dataclass(frozen=True)
class LossSpec:
    r"""The declaration of one loss.

    Attributes
    ----------
    function : callable
        The public loss.
    pipeline : callable or None
        Its pipeline builder (same parameters, returns a :class:`~maskloss.pipeline.Pipeline`);
        None for a loss with its own code.
    kind : str or None
        The batch check_loss and the strategies generate for it (one of :data:`BATCH_KINDS`),
        None if they cannot (its arguments are not ``(y_true, y_pred, mask)`` batches).
    evaluate : bool
        Offered by ``maskloss evaluate``.
    grad : bool
        Has a gradient (:func:`maskloss.value_and_grad`).
    wrt : str
        What the gradient is with respect to (the name of an argument, or a tuple of them).
    value_and_grad : callable or None
        Own gradient code, ``value_and_grad(*args, cotangent=None, **kwargs)`` returning
        ``(value, grads)``; None for a pipeline loss.
    """

    function: Callable[..., Any]
    pipeline: Callable[..., Pipeline] | None
    kind: str | None
    evaluate: bool
    grad: bool
    wrt: str
    value_and_grad: Callable[..., Any] | None = None

    @property
    def name(self) -> str:
        return str(self.function.__name__)


_SPECS: dict[Callable[..., Any], LossSpec] = {}


def register(
    function: Callable[..., Any],
    *,
    pipeline: Callable[..., Pipeline] | None = None,
    kind: str | None = None,
    evaluate: bool = False,
    grad: bool = True,
    wrt: str = "y_pred",
    value_and_grad: Callable[..., Any] | None = None,
) -> LossSpec:
    """Declare ``function`` a loss (see :class:`LossSpec` for the fields); returns the declaration.

    A loss needs a ``pipeline``, or (with ``grad``) its own ``value_and_grad``. Declaring a
    function again replaces its declaration.
    """
    if not callable(function):
        raise TypeError(f"register(function): function must be callable, got {function!r}")
    if kind is not None and kind not in BATCH_KINDS:
        raise ValueError(f"kind must be one of {BATCH_KINDS} or None, got {kind!r}")
    if pipeline is None and grad and value_and_grad is None:
        raise ValueError(f"{function.__name__}: a loss with a gradient needs pipeline= or value_and_grad=")
    spec = LossSpec(function, pipeline, kind, bool(evaluate), bool(grad), wrt, value_and_grad)
    _SPECS[function] = spec
    return spec


def unregister(function: Callable[..., Any]) -> None:
    """Remove the declaration of ``function`` (a loss declared for a test or an example)."""
    _SPECS.pop(function, None)


@overload
def loss(
    *, kind: str | None = ..., evaluate: bool = ..., grad: bool = ..., wrt: str = ..., scalar: Literal[False] = ...
) -> Callable[[Callable[P, Pipeline]], Callable[P, LossValue]]: ...
@overload
def loss(
    *, kind: str | None = ..., evaluate: bool = ..., grad: bool = ..., wrt: str = ..., scalar: Literal[True]
) -> Callable[[Callable[P, Pipeline]], Callable[P, np.float64]]: ...
def loss(
    *, kind: str | None = None, evaluate: bool = False, grad: bool = True, wrt: str = "y_pred", scalar: bool = False
) -> Callable[[Callable[P, Pipeline]], Callable[P, Any]]:
    r"""Declare a pipeline loss: the decorated builder becomes the public loss.

    The decorated function validates its arguments and returns a
    :class:`~maskloss.pipeline.Pipeline`; the public function that replaces it has its name,
    signature (with the return annotation of a loss) and docstring and returns
    ``pipeline.value()``. ``scalar=True`` types the return as ``numpy.float64`` (a loss
    without a ``reduction`` argument); the other arguments are those of :func:`register`.
    The builder stays reachable as :func:`pipeline_of` ``(public)``.
    """

    def declare(build: Callable[P, Pipeline]) -> Callable[P, Any]:
        segmented = _with_pipeline_options(build)

        @functools.wraps(build)
        def public(*args: Any, **kwargs: Any) -> Any:
            return segmented(*args, **kwargs).value()

        returns = "numpy.float64" if scalar else "numpy.float64 | numpy.ndarray"
        signature = inspect.signature(segmented)
        public.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
        public.__annotations__ = {**segmented.__annotations__, "return": returns}
        public.__doc__ = segmented.__doc__
        del public.__wrapped__  # inspect.signature reads __signature__
        register(public, pipeline=segmented, kind=kind, evaluate=evaluate, grad=grad, wrt=wrt)
        return public

    return declare


def _with_pipeline_options(build: Callable[..., Pipeline]) -> Callable[..., Pipeline]:
    """``build`` with the keyword-only options every pipeline loss takes, added here once.

    ``segment_ids=None`` (packed rows; :meth:`maskloss.pipeline.Pipeline.with_segments` makes
    the sequences the documents), ``scale=1.0`` and, for a loss with ``sample_weight=``,
    ``weight_normalization="weighted"`` (:mod:`maskloss.loss_options`;
    :meth:`~maskloss.pipeline.Pipeline.with_options`). Each loss's convention options are
    declared in :data:`maskloss.loss_options.OPTIONS_OF`.
    """
    signature = inspect.signature(build)
    weighted = "sample_weight" in signature.parameters
    if weighted:
        extra = {"segment_ids": (None, "npt.ArrayLike | None"), "scale": (1.0, "float"),
                 "weight_normalization": ("weighted", "str")}
    else:
        extra = {"segment_ids": (None, "npt.ArrayLike | None"), "scale": (1.0, "float")}

    @functools.wraps(build)
    def optioned(
        *args: Any, segment_ids: Any = None, scale: Any = 1.0, weight_normalization: Any = "weighted", **kwargs: Any
    ) -> Pipeline:
        if not weighted and not (isinstance(weight_normalization, str) and weight_normalization == "weighted"):
            raise ValueError(
                f"option weight_normalization={weight_normalization!r} does not apply to maskloss.{build.__name__}: "
                "it takes no sample_weight="
            )
        pipeline = _build_segmented(build, signature, args, kwargs, segment_ids)
        return pipeline.with_options(
            scale=scale, weight_normalization=weight_normalization, sample_weight=kwargs.get("sample_weight")
        )

    parameters = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (default, annotation) in extra.items()
    ]
    optioned.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *parameters]
    )
    optioned.__annotations__ = {**build.__annotations__, **{n: a for n, (_, a) in extra.items()}}
    optioned.__doc__ = (build.__doc__ or "") + _SEGMENT_IDS_DOC + (_WEIGHTED_OPTIONS_DOC if weighted else _SCALE_DOC)
    del optioned.__wrapped__
    loss_options.declare(build.__name__, ("scale", "weight_normalization") if weighted else ("scale",))
    return optioned


def _build_segmented(
    build: Callable[..., Pipeline], signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any],
    segment_ids: Any,
) -> Pipeline:
    """``build(*args, **kwargs).with_segments(segment_ids)``, the segments' dropped steps masked first.

    If the masked call fails but the plain one builds, ``segment_ids`` itself is wrong (its
    shape): :meth:`Pipeline.with_segments` then names it. Otherwise the masked call's error
    stands (it never concerns a step the segments drop).
    """
    if segment_ids is None:
        return build(*args, **kwargs)
    try:
        masked = _mask_segments(signature, args, kwargs, segment_ids)
        return build(*masked[0], **masked[1]).with_segments(segment_ids)
    except (ValueError, TypeError) as error:
        try:
            plain = build(*args, **kwargs)
        except (ValueError, TypeError):
            raise error from None
        return plain.with_segments(segment_ids)


def _mask_segments(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any], segment_ids: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``args``/``kwargs`` with ``mask`` also False where :meth:`Pipeline.with_segments` drops the step.

    Steps at -1 (padding) and, with ``shift`` :math:`s`, labels whose predicting step lies in
    another document never count: the loss's own checks (labels in range, ...) must not read
    them either, so garbage under padding is ignored, never refused. Without a ``mask``
    parameter, or when the call cannot be bound (its own error comes from ``build``), unchanged.
    """
    if "mask" not in signature.parameters:
        return args, kwargs
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError:
        return args, kwargs
    seg = segment_ids_for(segment_ids, np.shape(segment_ids))
    shift = bound.arguments.get("shift", 0)
    s = shift if isinstance(shift, int) and not isinstance(shift, bool) and 0 < shift < seg.shape[-1] else 0
    keep = np.zeros(seg.shape, dtype=bool)  # label u is scored by the prediction at u - s: both in one document
    keep[..., s:] = same_document(seg, s)
    mask = bound.arguments.get("mask")
    if mask is None:
        bound.arguments["mask"] = keep
    else:
        given = np.asarray(mask)
        if given.shape != keep.shape or given.dtype == object:
            return args, kwargs  # the loss names the bad mask
        bound.arguments["mask"] = check_mask(mask, keep.shape) & keep
    return bound.args, bound.kwargs


#: Appended to the docstring of every pipeline loss (the keywords :func:`_with_pipeline_options` adds).
_SEGMENT_IDS_DOC = """
    Packed rows: ``segment_ids=`` (array of int, the steps' shape; see :mod:`maskloss.segments`) numbers
    the document of each step of packed rows, -1 at padding: every reduction then treats each
    document as one sequence (``"sequence_mean"`` is the mean of the documents' own means,
    ``"batch_mean"`` divides by the number of documents), and steps at -1 never count. The
    value and gradient equal those of the padded batch of the same documents.
"""
_SCALE_DOC = """
    ``scale=`` (float, default 1.0): the loss times this finite non-zero constant, value and
    gradient (see :mod:`maskloss.loss_options`).
"""
_WEIGHTED_OPTIONS_DOC = _SCALE_DOC + """
    ``weight_normalization=`` (``"weighted"``, ``"numerator"`` or ``"nonzero_fraction"``): how
    ``sample_weight`` enters a mean; ``"numerator"`` divides by the valid steps, not the weights
    (Keras 3); see :mod:`maskloss.loss_options`.
"""


def spec_of(fn: object) -> LossSpec | None:
    """The declaration of ``fn``, or None if ``fn`` is not a registered loss."""
    try:
        return _SPECS.get(fn)  # type: ignore[call-overload, no-any-return]
    except TypeError:  # unhashable
        return None


def specs() -> tuple[LossSpec, ...]:
    """Every declaration, in declaration order (after ``import maskloss``: all of maskloss's losses)."""
    return tuple(_SPECS.values())


def names(*, grad: bool | None = None, kind: bool | None = None, evaluate: bool | None = None) -> tuple[str, ...]:
    """Names of the registered losses, in declaration order; each filter keeps only those that have it
    (``grad=True``: a gradient; ``kind=True``: a batch kind; ``evaluate=True``: ``maskloss evaluate``)."""
    return tuple(
        s.name
        for s in _SPECS.values()
        if (grad is None or s.grad == grad)
        and (kind is None or (s.kind is not None) == kind)
        and (evaluate is None or s.evaluate == evaluate)
    )


def require(fn: object, caller: str, *, pipeline: bool = False, grad: bool = False) -> LossSpec:
    """The declaration of ``fn``, if it has what ``caller`` needs; else a TypeError listing the losses that do."""
    spec = spec_of(fn)
    if spec is None or (pipeline and spec.pipeline is None) or (grad and not spec.grad):
        which = [
            s.name for s in _SPECS.values() if (not pipeline or s.pipeline is not None) and (not grad or s.grad)
        ]
        why = "" if spec is None else f" ({spec.name} has no {'pipeline' if pipeline else 'gradient'})"
        raise TypeError(f"{caller}(fn): fn must be one of maskloss's losses ({', '.join(which)}); got {fn!r}{why}")
    return spec


def pipeline_of(fn: Callable[..., Any]) -> Callable[..., Pipeline] | None:
    """The pipeline builder of the loss ``fn`` (same parameters), or None if ``fn`` has none."""
    spec = spec_of(fn)
    return None if spec is None else spec.pipeline


def register_pipeline(fn: Callable[..., Any], builder: Callable[..., Pipeline]) -> None:
    """Declare ``fn`` a loss whose pipeline is ``builder`` (the older spelling of :func:`register`)."""
    register(fn, pipeline=builder)


def with_signature(wrapper: Callable[..., T], fn: Callable[..., Any], name: str) -> Callable[..., T]:
    """``wrapper`` named, documented and signed as ``fn`` (``inspect.signature`` gives ``fn``'s).

    Done once, when the transform is made; the calls pass their arguments on as given.
    """
    functools.update_wrapper(wrapper, fn)
    wrapper.__doc__ = f"{name} of maskloss.{fn.__name__}; see maskloss.{name}.\n\n{fn.__doc__ or ''}"
    return wrapper


def pipeline_transform(
    fn: Callable[..., Any], name: str, run: Callable[..., T], keywords: tuple[str, ...] = ()
) -> Callable[..., T]:
    """A function with ``fn``'s signature that builds ``fn``'s pipeline and returns ``run(pipeline)``.

    The shared machinery of :func:`maskloss.value_and_grad`, :func:`maskloss.vjp` and
    :func:`maskloss.masked_totals`. Extra keyword-only arguments named in ``keywords`` are
    passed on to ``run``. The arguments go to the builder as given (no re-binding per call).
    """
    build = require(fn, name, pipeline=True).pipeline
    assert build is not None

    def transformed(*args: Any, **kwargs: Any) -> T:
        extra = {key: kwargs.pop(key) for key in keywords if key in kwargs}
        return run(build(*args, **kwargs), **extra)

    return with_signature(transformed, fn, name)
