r"""Analytic gradients of the masked losses: :func:`value_and_grad`.

``value_and_grad(fn)`` turns any public loss into a function with the same signature
that returns ``(value, grad)``, where ``grad`` is the derivative of the scalar loss
with respect to ``y_pred``, like ``jax.value_and_grad(fn, argnums=1)``. The gradient
is in closed form (no finite differences), computed in the same chunked pass over the
valid rows as the value, so it costs about one more forward pass.

Per step the loss contributes :math:`\lambda_b\, w_{bt}\, \ell_{bt}` to the scalar
:math:`\mathcal{L}`, where :math:`\lambda_b` is the reduction's scale of sequence ``b``
(:meth:`maskloss.MaskedTotals.sequence_scale`); hence

.. math::
    \frac{\partial \mathcal{L}}{\partial \hat y_{bt}} = \lambda_b\, w_{bt}\,
    \frac{\partial \ell_{bt}}{\partial \hat y_{bt}} \quad\text{(valid steps)}, \qquad
    \frac{\partial \mathcal{L}}{\partial \hat y_{bt}} = 0 \quad\text{(masked steps)}.

The per-step derivatives live beside the per-step losses in :mod:`maskloss.pointwise`;
the derivations are in ``docs/course/04-gradients.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from maskloss import registry
from maskloss._types import FloatArray
from maskloss.pipeline import Pipeline

__all__ = ["value_and_grad", "vjp"]


def value_and_grad(fn: Callable[..., Any]) -> Callable[..., tuple[np.float64, Any]]:
    r"""Return a function computing the loss ``fn`` and its gradient with respect to ``y_pred``.

    Familiar to JAX users: ``maskloss.value_and_grad(maskloss.mse)(y_true, y_pred, mask)``
    is ``jax.value_and_grad(loss, argnums=1)(y_true, y_pred, mask)`` for the masked loss.

    Parameters
    ----------
    fn : callable
        A loss declared with a gradient in :mod:`maskloss.registry`
        (``maskloss.registry.names(grad=True)``; a test keeps this list equal to it):
        :func:`maskloss.mae`, :func:`maskloss.mse`, :func:`maskloss.binary_crossentropy`,
        :func:`maskloss.categorical_crossentropy`, :func:`maskloss.sparse_categorical_crossentropy`,
        :func:`maskloss.kl_divergence`, :func:`maskloss.jensen_shannon`, :func:`maskloss.entropy`,
        :func:`maskloss.z_loss`, :func:`maskloss.policy_gradient_objective`,
        :func:`maskloss.clipped_value_loss` (gradient with respect to their prediction argument:
        ``y_pred``, ``pred``, ``logits`` or ``values``) and
        :func:`maskloss.linear_cross_entropy` (returns ``(value, (d_hidden, d_weight, d_bias))``).

    Returns
    -------
    callable
        Same signature as ``fn``, plus a keyword ``out=None``: an array of ``y_pred``'s
        shape, float64 or ``y_pred``'s dtype (C-contiguous, not sharing memory with the
        inputs) that receives the gradient (rounded to its dtype) and is returned as
        ``grad``, so that repeated calls reuse one buffer. Returns ``(value, grad)``: ``value`` is exactly
        ``fn(...)`` (a ``numpy.float64``) and ``grad`` is
        :math:`\partial\,\text{value}/\partial\,\text{y\_pred}`, float64, with
        ``y_pred``'s shape: with respect to the probabilities or to the logits,
        whichever was passed (``from_logits``).

    Notes
    -----
    - Every option of the loss is supported (sample and class weights, label smoothing,
      ``ignore_index``, ``from_logits``) and every reduction but ``"none"``, which is
      refused with a ValueError (a gradient needs a scalar loss).
    - Masked (and ignored) steps get a gradient of exactly 0, whatever ``y_pred`` holds
      there (NaN, inf, huge values): they are never computed, never multiplied by 0.
    - Where the value is NaN because nothing counts (no valid step, or all weights 0),
      the gradient is all zeros, as torch reports for ``cross_entropy`` over only
      ignored targets.
    - MAE at zero error uses the subgradient :math:`\operatorname{sign}(0) = 0`
      (torch's ``l1_loss``).
    - Probabilities at 0 give the honest :math:`-\infty` derivative only where the
      target has positive mass (at valid steps); a class with zero target mass
      (:math:`0\log 0`) contributes derivative 0 even at :math:`p = 0`.

    Raises
    ------
    TypeError
        If ``fn`` is not a registered loss with a gradient (the message lists them).

    Examples
    --------
    Masked MSE over 1 valid step out of 2: the padded step gets exactly 0, even holding NaN.

    >>> import numpy as np, maskloss
    >>> from maskloss.gradients import value_and_grad
    >>> y_true = np.array([[[1.0], [2.0]]])
    >>> y_pred = np.array([[[0.0], [np.nan]]])
    >>> value, grad = value_and_grad(maskloss.mse)(y_true, y_pred, [[True, False]])
    >>> float(value), grad.ravel().tolist()        # d (y - 1)^2 / dy at 0 is -2
    (1.0, [-2.0, 0.0])

    Softmax cross-entropy from logits: the gradient is ``softmax - onehot``, over the
    number of valid tokens:

    >>> logits = np.zeros((1, 2, 2))
    >>> value, grad = value_and_grad(maskloss.sparse_categorical_crossentropy)(
    ...     [[0, -100]], logits, from_logits=True, ignore_index=-100)
    >>> grad.tolist()
    [[[-0.5, 0.5], [0.0, 0.0]]]
    """
    spec = registry.require(fn, "value_and_grad", grad=True)
    own = spec.value_and_grad
    if own is None:
        return registry.pipeline_transform(fn, "value_and_grad", Pipeline.value_and_grad, keywords=("out",))

    def transformed(*args: Any, **kwargs: Any) -> tuple[np.float64, Any]:
        if "cotangent" in kwargs:
            raise TypeError(f"value_and_grad({spec.name}) takes no cotangent=: use maskloss.vjp({spec.name})")
        if kwargs.get("reduction") == "none":
            raise ValueError(_NOT_SCALAR.format(name=spec.name))
        return own(*args, **kwargs)  # type: ignore[no-any-return]

    return registry.with_signature(transformed, fn, "value_and_grad")


_NOT_SCALAR = (
    "value_and_grad({name}) needs a scalar loss, but reduction='none' returns one value per step; pick a "
    "scalar reduction, or use maskloss.vjp({name}) with a cotangent"
)


def vjp(fn: Callable[..., Any]) -> Callable[..., tuple[FloatArray, Any]]:
    r"""Return a function computing the per-step loss ``fn`` and its vector-Jacobian product.

    ``maskloss.vjp(fn)(..., reduction="none", cotangent=ct)`` returns ``(values, grads)``:
    ``values`` is exactly ``fn(..., reduction="none")``, and ``grads`` is the gradient of
    :math:`\sum_{bt} ct_{bt}\,\text{values}_{bt}` (what a framework's backward receives as
    ``grad_output`` for an unreduced loss), with respect to what :func:`value_and_grad`
    differentiates (``y_pred``; the tuple ``(d_hidden, d_weight, d_bias)`` for
    :func:`maskloss.linear_cross_entropy`). Masked steps get exactly 0 whatever their
    cotangent; ``cotangent`` has the shape of the steps and must be finite at valid ones.

    Examples
    --------
    >>> import numpy as np, maskloss
    >>> values, grad = maskloss.vjp(maskloss.mse)(
    ...     np.zeros((1, 2, 1)), np.ones((1, 2, 1)), reduction="none", cotangent=[[3.0, np.nan]],
    ...     mask=[[True, False]])
    >>> values.tolist(), grad.ravel().tolist()        # d (3 (y - 0)^2) / dy at 1 is 6
    ([[1.0, 0.0]], [6.0, 0.0])
    """
    spec = registry.require(fn, "vjp", grad=True)
    own = spec.value_and_grad
    if own is None:

        def run(pipeline: Pipeline, cotangent: Any = None) -> tuple[FloatArray, FloatArray]:
            if cotangent is None:
                raise TypeError(f"vjp({spec.name}) needs cotangent= (the shape of the steps), got None")
            return pipeline.vjp(cotangent)

        return registry.pipeline_transform(fn, "vjp", run, keywords=("cotangent",))

    def transformed(*args: Any, cotangent: Any = None, **kwargs: Any) -> tuple[FloatArray, Any]:
        if cotangent is None:
            raise TypeError(f"vjp({spec.name}) needs cotangent= (the shape of the steps), got None")
        return own(*args, cotangent=cotangent, **kwargs)  # type: ignore[no-any-return]

    return registry.with_signature(transformed, fn, "vjp")
