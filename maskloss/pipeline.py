r"""A validated loss call, :class:`Pipeline`: selection, per-row math, reduction, and its gradients.

Every pipeline loss (see :mod:`maskloss.registry`) is a function that validates its arguments
and returns a :class:`Pipeline`: the valid steps, the per-row step function (its loss and,
when asked, its derivative), the weights and the reduction. The public loss evaluates
:meth:`Pipeline.value`; :func:`maskloss.value_and_grad` evaluates :meth:`Pipeline.value_and_grad`
and :func:`maskloss.vjp` :meth:`Pipeline.vjp` on the same pipeline, with the per-row derivatives
switched on, so value and gradient cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._checks import (
    as_numeric,
    check_feature_pair,
    check_features,
    check_mask,
    check_reduction,
    check_sample_weight,
    first_bad_position,
)
from maskloss._deprecation import warn_renamed
from maskloss._rows import StepFn, as_rows, map_rows, to_float64
from maskloss._types import BoolArray, FloatArray, Reduction
from maskloss.loss_options import check_scale, check_weight_normalization
from maskloss.reductions import (
    SCALAR_REDUCTIONS,
    MaskedTotals,
    power_of_two_scale,
    reduce_terms,
    same_document,
    segment_ids_for,
    totals_of_terms,
    unscale,
    with_exponent,
)

__all__ = ["Pipeline", "per_step", "step_losses"]


def step_losses(step: StepFn, valid: BoolArray, *arrays: np.ndarray[Any, Any]) -> FloatArray:
    """The per-step losses: ``step(rows, *row_chunks)`` on the valid steps only, 0 at masked steps.

    ``arrays`` are ``(steps, width)`` or ``(steps,)`` views aligned with ``valid.ravel()``.
    (:func:`maskloss._rows.map_rows` is the chunk loop beneath, which also gives gradients.)
    """
    return map_rows(step, valid, arrays)[0].reshape(valid.shape)


def per_step(step: StepFn, valid: BoolArray, *arrays: np.ndarray[Any, Any]) -> FloatArray:
    """Deprecated name of :func:`step_losses` (one name for one idea, issue 19)."""
    warn_renamed("maskloss.pipeline.per_step", "maskloss.pipeline.step_losses")
    return step_losses(step, valid, *arrays)


def _with_grad(grad: bool, loss: FloatArray, derivative: Callable[..., FloatArray], *args: Any) -> Any:
    """``loss``, or ``(loss, derivative(*args))`` when the gradient is asked for."""
    return (loss, derivative(*args)) if grad else loss


@dataclass(slots=True)
class Pipeline:
    r"""A validated loss call: everything but the per-row math is decided here, once.

    Attributes
    ----------
    step : StepFn
        Per-row loss (and its derivative, when asked) on chunks of valid rows.
    arrays : tuple of ndarray
        Row views aligned with ``valid.ravel()``; the last one holds the predictions.
    valid : ndarray of bool
        Steps that count (the mask, and for integer labels ``!= ignore_index``).
    weight : ndarray
        Sample weight of each step, 0 at masked steps.
    reduction : str
    pred_shape : tuple of int
        Shape of ``y_pred``, hence of the gradient.
    step_weight : ndarray, optional
        Extra per-step weight of the denominator only (torch's :math:`cw_y`).
    segment_ids : ndarray of int64, optional
        Packed rows: the document of each step (-1 at padding); the reductions' sequences
        are then the documents (:meth:`with_segments`); with ``shift``, those of the
        predicting positions.
    documents : int, optional
        With ``shift`` and ``segment_ids``: the number of documents of the packed rows (a
        document of at most ``shift`` tokens has no step but still counts).
    shift : int, default 0
        The causal shift (:mod:`maskloss.loss_options`): the steps (``valid``, the ``"none"``
        values) are the ``T - shift`` labels from position ``shift`` on, scored by the
        predictions up to ``T - shift``; the gradient is given in ``y_pred``'s shape (0 at the
        last ``shift`` predictions).
    factor : float, default 1.0
        A constant the loss (value, totals' numerators and gradient) is multiplied by: the
        ``scale=`` option times ``"nonzero_fraction"``'s :math:`K/\operatorname{nnz}(w)`
        (:meth:`with_options`).
    unweighted_denominator : bool, default False
        ``weight_normalization="numerator"`` or ``"nonzero_fraction"``: the denominators count
        the valid steps (times ``step_weight``), not the sample weights.
    """

    step: StepFn
    arrays: tuple[np.ndarray[Any, Any], ...]
    valid: BoolArray
    weight: FloatArray
    reduction: Reduction
    pred_shape: tuple[int, ...]
    step_weight: FloatArray | None = None
    segment_ids: npt.NDArray[np.int64] | None = None
    shift: int = 0
    documents: int | None = None
    factor: float = 1.0
    unweighted_denominator: bool = False

    def with_options(
        self, *, scale: object = 1.0, weight_normalization: object = "weighted", sample_weight: Any = None
    ) -> Pipeline:
        r"""This pipeline with the ``scale=`` and ``weight_normalization=`` options (:mod:`maskloss.loss_options`).

        ``scale`` multiplies value and gradient; ``weight_normalization`` other than
        ``"weighted"`` divides by the valid steps instead of the weights, and
        ``"nonzero_fraction"`` multiplies by :math:`K/\operatorname{nnz}(w)` of ``sample_weight``
        as given (NaN if every weight is 0). At the defaults the pipeline is returned unchanged.
        """
        factor = check_scale(scale)
        normalization = check_weight_normalization(weight_normalization, self.reduction)
        if normalization == "nonzero_fraction" and sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64)
            nonzero = int(np.count_nonzero(w))
            factor = factor * (w.size / nonzero) if nonzero else float("nan")
        unweighted = normalization != "weighted"
        if factor == 1.0 and not unweighted:
            return self
        return replace(self, factor=factor, unweighted_denominator=unweighted)

    def _scaled(self, x: Any) -> Any:
        """``x`` times :attr:`factor` (``x`` itself for the default 1, so no bit changes)."""
        return x if self.factor == 1.0 else x * self.factor

    def _weight_scale(self) -> tuple[FloatArray, int]:
        """The weights brought near 1 by an exact power of two (:func:`power_of_two_scale`).

        Not with an unweighted denominator: the denominators do not scale with the weights
        there, so the scale would not cancel.
        """
        return (self.weight, 0) if self.unweighted_denominator else power_of_two_scale(self.weight)

    def with_segments(self, segment_ids: npt.ArrayLike | None) -> Pipeline:
        r"""This pipeline on packed rows: ``segment_ids`` (the labels' shape) numbers the documents.

        Steps at -1 (padding) leave the valid steps; every reduction, total and gradient then
        treats each document as one sequence (:func:`maskloss.reductions.totals_of_terms`).
        With ``shift`` :math:`s` the step scoring label :math:`t + s` by the prediction at
        :math:`t` counts only if both lie in one document (:math:`s_{t} = s_{t+s}`): the
        shift never crosses a document boundary, and the step belongs to the document of
        :math:`t`. None returns the pipeline unchanged.
        """
        if segment_ids is None:
            return self
        s = self.shift
        full = segment_ids_for(segment_ids, self.valid.shape[:-1] + (self.valid.shape[-1] + s,))
        seg = full[..., : full.shape[-1] - s]  # the predicting positions' documents (all of them for s = 0)
        valid = self.valid & same_document(full, s)
        # With a shift, a document of at most s tokens has no step left but still counts.
        documents = (int(full.max()) + 1 if full.size else 0) if s else None
        return replace(self, valid=valid, weight=np.where(valid, self.weight, 0.0), segment_ids=seg,
                       documents=documents)

    def _totals(self, numerators: FloatArray, denominators: FloatArray) -> MaskedTotals:
        """Per-sequence totals, or per-document ones on packed rows (:func:`totals_of_terms`)."""
        return totals_of_terms(numerators, denominators, self.segment_ids, documents=self.documents)

    def _grad_out(self, grad: FloatArray) -> FloatArray:
        """The gradient in ``y_pred``'s positions: ``shift`` zero rows last on the steps axis."""
        if not self.shift:
            return grad
        pad = [(0, 0)] * (grad.ndim - 2) + [(0, self.shift), (0, 0)]
        return np.pad(grad, pad)

    @classmethod
    def from_pairs(
        cls,
        y_true: npt.ArrayLike,
        y_pred: npt.ArrayLike,
        mask: npt.ArrayLike | None = None,
        *,
        reduction: Reduction = "token_mean",
        sample_weight: npt.ArrayLike | None = None,
        loss: Callable[[FloatArray, FloatArray], FloatArray],
        derivative: Callable[[FloatArray, FloatArray], FloatArray] | None = None,
    ) -> Pipeline:
        r"""The pipeline of a loss of targets and predictions of one shape ``(..., F)`` (the regression losses).

        Validates the arguments as every maskloss loss does (a ValueError/TypeError naming the
        argument), selects the valid steps, and scores chunks of valid rows, in float64:
        ``loss(target, pred)`` maps ``(n, F)`` rows to ``(n,)`` per-step losses and
        ``derivative(target, pred)`` to their ``(n, F)`` derivatives with respect to ``pred``
        (None: the loss has no gradient). Masked rows are never passed to either.
        """
        t, p = check_feature_pair(y_true, y_pred)
        check_features(p)
        valid = check_mask(mask, p.shape[:-1])
        check_reduction(reduction)
        weight = check_sample_weight(sample_weight, valid)

        def step(rows: Any, t_rows: Any, p_rows: Any, grad: bool = False) -> Any:
            target, pred = to_float64(t_rows, "target"), to_float64(p_rows)
            if grad and derivative is None:
                raise TypeError(f"{getattr(loss, '__name__', 'this loss')} has no derivative: it has no gradient")
            return _with_grad(grad, loss(target, pred), derivative, target, pred)  # type: ignore[arg-type]

        return cls(step, (as_rows(t), as_rows(p)), valid, weight, reduction, p.shape)

    def _denominator_terms(self, weight: FloatArray | None = None) -> FloatArray:
        w = self.weight if weight is None else weight
        if self.unweighted_denominator:
            w = np.where(self.valid, 1.0, 0.0)
        if self.step_weight is None:
            return w  # already 0 at masked steps
        return np.where(self.valid, w * self.step_weight, 0.0)

    def _reduce(self, losses: FloatArray) -> Any:
        """Numerator terms :math:`w\\,\\ell`, denominator terms :math:`w\\,cw_y`, reduced.

        Scalar reductions use the weights scaled by a power of two (exact), so that a
        uniform weight cancels whatever its size (:func:`power_of_two_scale`).
        """
        seg = self.segment_ids
        if self.reduction == "none":
            return self._scaled(reduce_terms(self.weight * losses, self._denominator_terms(), self.reduction, seg,
                                             documents=self.documents))
        w, exponent = self._weight_scale()
        value = reduce_terms(w * losses, self._denominator_terms(w), self.reduction, seg, documents=self.documents)
        return self._scaled(unscale(value, self.reduction, exponent))

    def value(self) -> Any:
        """The loss under ``reduction`` (an array of the steps' shape for ``"none"``)."""
        return self._reduce(step_losses(self.step, self.valid, *self.arrays))

    def totals(self, headroom: int = 0) -> MaskedTotals:
        """The per-sequence numerator and denominator sums behind every scalar reduction.

        They are summed on the weights brought near 1 (:meth:`_weight_scale`), as the direct
        loss takes them, and times ``2**-headroom`` more (room for sums of huge terms): sums of
        products such as ``1e-170 * 1e-170`` would underflow to 0 (or overflow to inf) and give
        0/0 where the loss does not (:func:`maskloss.reductions.with_exponent`).
        """
        losses = step_losses(self.step, self.valid, *self.arrays)
        w, exponent = self._weight_scale()
        if headroom:
            w = np.ldexp(w, -headroom)
        return with_exponent(self._totals(self._scaled(w * losses), self._denominator_terms(w)), exponent + headroom)

    def value_and_grad(self, out: np.ndarray[Any, Any] | None = None) -> tuple[np.float64, Any]:
        r"""The scalar loss and its gradient with respect to ``y_pred`` (float64, ``pred_shape``).

        The value is :math:`\sum_b \lambda_b N_b` with :math:`N_b = \sum_t w_{bt}\ell_{bt}`
        and :math:`\lambda_b` from :meth:`MaskedTotals.sequence_scale`, which depends on the
        denominators only; so the gradient row of a valid step is
        :math:`\lambda_b\, w_{bt}\, \partial\ell_{bt}/\partial\hat y_{bt}`, computed in the same
        chunk pass as the losses. Masked rows are exactly 0. With ``out`` (see
        :func:`maskloss.value_and_grad`) the gradient is written there and ``out`` returned.
        """
        if self.reduction not in SCALAR_REDUCTIONS:
            raise ValueError(
                f"value_and_grad needs a scalar loss, but reduction={self.reduction!r} returns one value "
                f"per step; pick a scalar reduction: one of {', '.join(map(repr, SCALAR_REDUCTIONS))}"
            )
        if self.shift:
            value, full = replace(self, shift=0).value_and_grad()  # on the shifted steps; layout below
            full = self._grad_out(full)
            if out is None:
                return value, full
            _check_grad_out(out, full.shape, self.arrays)
            out[...] = full
            return value, out
        weight, exponent = self._weight_scale()
        denominators = self._denominator_terms(weight)
        # lambda_b depends only on the denominators (sequence_scale's contract), so it is known
        # before the per-step losses are; zeros stand in for the numerators here.
        totals = self._totals(np.zeros_like(denominators), denominators)
        # One factor per step: the sequence's (document's) lambda_b times the step's sample weight.
        factors = totals.step_scale(self.reduction, weight, segment_ids=self.segment_ids)
        grad_scale = self._scaled(unscale(factors.reshape(-1), self.reduction, exponent))
        grad_out = None if out is None else _check_grad_out(out, self.pred_shape, self.arrays)
        losses, grad = map_rows(self.step, self.valid, self.arrays, grad_scale=grad_scale, grad_out=grad_out)
        assert grad is not None
        value = np.float64(self._reduce(losses.reshape(self.valid.shape)))
        return value, (grad.reshape(self.pred_shape) if out is None else out)

    def totals_and_grad(self, scale_of: Callable[[MaskedTotals], FloatArray]) -> tuple[MaskedTotals, FloatArray]:
        r"""The loss's :class:`MaskedTotals` and the gradient of :math:`\sum_b \lambda_b N_b`.

        ``scale_of`` receives totals holding the denominators :math:`D_b` (numerators 0)
        and returns the coefficients :math:`\lambda_b`, shape (B,): an accumulation rule's
        (:meth:`maskloss.GlobalCounts.scale`), which depend on global, unscaled counts, so
        the weights are used as given here.
        """
        denominators = self._denominator_terms()
        seg = self.segment_ids
        scale = scale_of(self._totals(np.zeros_like(denominators), denominators))
        if seg is not None:  # each step takes its document's coefficient (0 at padding)
            per_doc = np.where(seg >= 0, scale[np.maximum(seg, 0)] if scale.size else 0.0, 0.0)
            grad_scale = (self.weight * per_doc).reshape(-1)
        else:
            steps_per_sequence = self.weight.size // scale.shape[0] if scale.shape[0] else 0
            grad_scale = (self.weight.reshape(scale.shape[0], steps_per_sequence) * scale[:, None]).reshape(-1)
        losses, grad = map_rows(self.step, self.valid, self.arrays, grad_scale=self._scaled(grad_scale))
        assert grad is not None
        numerators = self._scaled(self.weight * losses.reshape(self.valid.shape))
        return self._totals(numerators, denominators), self._grad_out(grad.reshape(self.pred_shape))


    def vjp(self, cotangent: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        r"""The per-step values and the gradient of :math:`\sum_{bt} ct_{bt}\,\text{value}_{bt}`.

        A vector-Jacobian product, what a framework's backward receives as ``grad_output`` for
        a loss with ``reduction="none"``: the gradient row of a valid step is
        :math:`ct_{bt}\, w_{bt}\, \partial\ell_{bt}/\partial\hat y_{bt}`, in the same chunk
        pass as the values; masked rows are exactly 0. ``cotangent`` has the shape of the steps
        and must be finite at valid steps (anything at masked ones).
        """
        if self.reduction != "none":
            raise ValueError(
                f"vjp needs reduction='none' (one value per step, each weighted by its cotangent), got "
                f"reduction={self.reduction!r}; for a scalar loss use maskloss.value_and_grad"
            )
        ct = as_numeric(cotangent, "cotangent")
        if ct.shape != self.valid.shape:
            raise ValueError(f"cotangent must have the shape of the steps {self.valid.shape}, got {ct.shape}")
        with np.errstate(invalid="ignore", over="ignore"):
            ct64 = np.where(self.valid, ct, 0).astype(np.float64)
        bad = ~np.isfinite(ct64)
        if np.any(bad):
            pos = first_bad_position(bad, ct64.shape)
            raise ValueError(f"cotangent must be finite at valid steps; found {ct[pos].item()!r} at step {pos}")
        grad_scale = self._scaled((ct64 * self.weight).reshape(-1))
        losses, grad = map_rows(self.step, self.valid, self.arrays, grad_scale=grad_scale)
        assert grad is not None
        values = self._scaled(reduce_terms(self.weight * losses.reshape(self.valid.shape), self._denominator_terms(),
                                           "none"))
        return np.asarray(values), self._grad_out(grad.reshape(self.pred_shape))


def _check_grad_out(
    out: Any, shape: tuple[int, ...], arrays: tuple[np.ndarray[Any, Any], ...]
) -> np.ndarray[Any, Any]:
    """``out`` as ``(steps, C)`` rows, if it can hold the gradient: else a clear error."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array of y_pred's shape {shape}, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out must have y_pred's shape {shape}, got {out.shape}")
    pred = arrays[-1]
    if out.dtype != np.float64 and out.dtype != pred.dtype:
        raise TypeError(f"out must be float64 or y_pred's dtype {pred.dtype}, got dtype {out.dtype}")
    if out.dtype.kind != "f":
        raise TypeError(f"out must have a floating dtype, got dtype {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array")
    if any(np.may_share_memory(out, a) for a in arrays):
        raise ValueError("out must not share memory with the inputs (the gradient would overwrite them)")
    return out.reshape(-1, shape[-1]) if shape else out.reshape(1, 1)


