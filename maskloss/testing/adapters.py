r"""Framework adapters: run torch or JAX losses (and their autograd gradients) on NumPy batches."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["jax_adapter", "jax_grad", "torch_adapter", "torch_grad", "torch_linear_grad"]


def torch_adapter(fn: Callable[..., Any], *, dtype: Any = None) -> Callable[..., Any]:
    r"""Wrap a loss that takes and returns torch tensors so that it takes and returns NumPy.

    NumPy float arrays become tensors of the same dtype (or of ``dtype``, e.g.
    ``torch.bfloat16``), integer arrays ``torch.long``, bool arrays ``torch.bool``; the
    result is returned as a float64 NumPy array or ``numpy.float64``. The dtype the result
    had before that conversion is kept as the wrapper's ``result_dtype`` attribute
    (``"float32"``, ``"bfloat16"``, ...; None before the first call), from which
    :func:`check_loss` picks its tolerance row.

    Examples
    --------
    >>> import numpy as np
    >>> torch = __import__("pytest").importorskip("torch")
    >>> from maskloss.testing import torch_adapter
    >>> f = torch_adapter(lambda y, p, m: ((y - p) ** 2).mean(-1)[m].mean())
    >>> float(f(np.ones((1, 2, 1)), np.zeros((1, 2, 1)), np.array([[True, False]])))
    1.0
    """
    import torch

    def to_torch(x: Any) -> Any:
        if not isinstance(x, np.ndarray):
            return x
        t = torch.from_numpy(np.ascontiguousarray(x) if x.flags.writeable else np.array(x, copy=True))
        if x.dtype.kind == "f" and dtype is not None:
            t = t.to(dtype)
        elif x.dtype.kind in "iu":
            t = t.to(torch.long)
        return t

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*(to_torch(a) for a in args), **{k: to_torch(v) for k, v in kwargs.items()})
        if isinstance(out, torch.Tensor):  # read before converting: check_loss picks its tolerance from it
            call.result_dtype = str(out.dtype).removeprefix("torch.")  # type: ignore[attr-defined]
        return _torch_to_numpy(out)

    call.result_dtype = None  # type: ignore[attr-defined]
    return call


def _torch_to_numpy(out: Any) -> Any:
    import torch

    if isinstance(out, tuple):  # several gradients; None stays None (no bias)
        return tuple(None if o is None else _torch_to_numpy(o) for o in out)
    if isinstance(out, torch.Tensor):
        arr = out.detach().to(torch.float64).cpu().numpy()
        return np.float64(arr) if arr.ndim == 0 else arr
    return np.asarray(out, dtype=np.float64)


def torch_grad(fn: Callable[..., Any], *, dtype: Any = None) -> Callable[..., Any]:
    r"""The gradient of a torch loss with respect to ``y_pred`` (its 2nd argument), by autograd.

    Returns a NumPy callable with the loss's call shape, for ``check_loss(..., grad=)``.

    Examples
    --------
    >>> import numpy as np
    >>> torch = __import__("pytest").importorskip("torch")
    >>> from maskloss.testing import torch_grad
    >>> g = torch_grad(lambda y, p, m: ((y - p) ** 2).mean(-1)[m].mean())
    >>> grad = g(np.ones((1, 2, 1)), np.zeros((1, 2, 1)), np.array([[True, False]]))
    >>> (grad.ravel() + 0.0).tolist()  # + 0.0 turns torch's -0.0 into 0.0
    [-2.0, 0.0]
    """
    import torch

    def loss_and_pred(*args: Any, **kwargs: Any) -> Any:
        y_pred = args[1].detach().requires_grad_(True)
        value = fn(args[0], y_pred, *args[2:], **kwargs)
        (g,) = torch.autograd.grad(value, y_pred, allow_unused=True)
        return torch.zeros_like(y_pred) if g is None else g

    return torch_adapter(loss_and_pred, dtype=dtype)


def torch_linear_grad(fn: Callable[..., Any], *, dtype: Any = None) -> Callable[..., Any]:
    r"""Gradients ``(d_hidden, d_weight, d_bias)`` of a torch fused LM-head loss, by autograd.

    ``fn(hidden, weight, labels, mask, bias=None, ...)`` is the call shape of
    ``check_loss(..., like=maskloss.linear_cross_entropy)``; ``d_bias`` is None without a
    bias. A ``cotangent=`` keyword (what check_loss passes for ``reduction="none"``)
    becomes autograd's ``grad_outputs``, the ``grad_output`` a fused kernel's backward
    receives, so the result is the gradient of ``sum(cotangent * values)``.

    Examples
    --------
    >>> import numpy as np
    >>> torch = __import__("pytest").importorskip("torch")
    >>> from maskloss.testing import torch_linear_grad
    >>> def naive(hidden, weight, labels, mask, bias=None):
    ...     return torch.nn.functional.cross_entropy(hidden[mask] @ weight.T, labels[mask])
    >>> dh, dw, db = torch_linear_grad(naive)(np.array([[[1.0, 0.0]]]), np.eye(2), np.array([[1]]),
    ...                                        np.array([[True]]))
    >>> p = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()       # softmax of the logits [1, 0]
    >>> bool(np.allclose(dw, np.outer(p - [0, 1], [1.0, 0.0]))), db is None
    (True, True)
    """
    import torch

    def grads(hidden: Any, weight: Any, labels: Any, *rest: Any, bias: Any = None, cotangent: Any = None,
              **kwargs: Any) -> Any:
        leaves = [hidden.detach().requires_grad_(True), weight.detach().requires_grad_(True)]
        if bias is not None:
            leaves.append(bias.detach().requires_grad_(True))
            kwargs["bias"] = leaves[2]
        value = fn(leaves[0], leaves[1], labels, *rest, **kwargs)
        outputs = None if cotangent is None else cotangent.to(value.dtype).reshape(value.shape)
        found = torch.autograd.grad(value, leaves, grad_outputs=outputs, allow_unused=True)
        got = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, found, strict=True)]
        return (got[0], got[1], got[2] if bias is not None else None)

    return torch_adapter(grads, dtype=dtype)


def jax_adapter(fn: Callable[..., Any], *, dtype: Any = None) -> Callable[..., Any]:
    r"""Wrap a loss that takes and returns JAX arrays so that it takes and returns NumPy.

    JAX computes in float32 unless ``jax.config.update("jax_enable_x64", True)``; with
    the default, call ``check_loss(..., dtype="float32")`` so the tolerances match.
    ``dtype`` (e.g. ``jax.numpy.bfloat16``) casts the float inputs. As for
    :func:`torch_adapter`, the result's dtype before the float64 conversion is kept as the
    wrapper's ``result_dtype`` attribute, and :func:`check_loss` picks its tolerance from it.

    Examples
    --------
    >>> import numpy as np
    >>> jnp = __import__("pytest").importorskip("jax.numpy")
    >>> from maskloss.testing import jax_adapter
    >>> f = jax_adapter(lambda y, p, m: jnp.sum(jnp.where(m, ((y - p) ** 2).mean(-1), 0)) / m.sum())
    >>> float(f(np.ones((1, 2, 1), np.float32), np.zeros((1, 2, 1), np.float32), np.array([[True, False]])))
    1.0
    """
    import jax.numpy as jnp

    def to_jax(x: Any) -> Any:
        if not isinstance(x, np.ndarray):
            return x
        if x.dtype.kind == "f" and dtype is not None:
            return jnp.asarray(x, dtype=dtype)
        return jnp.asarray(x)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*(to_jax(a) for a in args), **{k: to_jax(v) for k, v in kwargs.items()})
        raw = np.asarray(out)
        call.result_dtype = raw.dtype.name  # type: ignore[attr-defined]  # before converting (check_loss reads it)
        arr = raw.astype(np.float64)
        return np.float64(arr) if arr.ndim == 0 else arr

    call.result_dtype = None  # type: ignore[attr-defined]
    return call


def jax_grad(fn: Callable[..., Any], *, dtype: Any = None) -> Callable[..., Any]:
    r"""The gradient of a JAX loss with respect to ``y_pred`` (``jax.grad(fn, argnums=1)``), for NumPy."""
    import jax

    return jax_adapter(jax.grad(fn, argnums=1), dtype=dtype)

