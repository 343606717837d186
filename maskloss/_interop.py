r"""Accept framework tensors (torch, jax) wherever an array enters maskloss.

Users pass model outputs straight in: a torch tensor that requires grad, lives on a GPU
or holds ``bfloat16`` cannot be read by :func:`numpy.asarray`. :func:`to_numpy` detaches
it, moves it to the CPU and widens ``bfloat16`` to ``float32`` (exact: every bfloat16 is
a float32). A jax array needs nothing: :func:`numpy.asarray` copies it to the host, and
its ``bfloat16`` arrives as ``ml_dtypes.bfloat16``, which promotes to float64 exactly.
Anything else is returned unchanged.

No framework is imported here: a tensor is recognised by the module of its type, so
``import maskloss`` still imports only numpy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["to_numpy"]


def _module(x: object) -> str:
    return type(x).__module__ or ""


def to_numpy(x: Any, name: str = "the argument") -> Any:
    r"""``x`` as something :func:`numpy.asarray` reads, if it is a torch or jax array.

    Torch tensors that hold no readable numbers are refused with a TypeError naming
    ``name`` and saying why: a ``meta`` tensor (no data), a sparse layout (call
    ``.to_dense()``), a nested one (``.to_padded_tensor``), a quantised tensor (call
    ``.dequantize()``: its integers are not the values it stands for). ``float8`` tensors,
    like ``bfloat16``, are widened to ``float32``, which holds each of their values exactly.

    Examples
    --------
    >>> torch = __import__("pytest").importorskip("torch")
    >>> from maskloss._interop import to_numpy
    >>> to_numpy(torch.tensor([0.5], dtype=torch.bfloat16, requires_grad=True))
    array([0.5], dtype=float32)
    >>> to_numpy([1, 2])
    [1, 2]
    >>> to_numpy(torch.zeros(2, device="meta"), "y_pred")
    Traceback (most recent call last):
    TypeError: y_pred is a torch tensor on the meta device: it has a shape but no data to compute with
    """
    if _module(x).startswith("torch"):
        import torch  # the object is a torch tensor, so torch is already imported

        if isinstance(x, torch.Tensor):
            return _torch_to_numpy(torch, x.detach(), name)
        return x
    return x  # numpy, lists, and jax arrays (numpy reads those itself, bfloat16 included)


def _torch_to_numpy(torch: Any, t: Any, name: str) -> Any:
    if t.is_meta:
        raise TypeError(f"{name} is a torch tensor on the meta device: it has a shape but no data to compute with")
    if t.is_quantized:
        raise TypeError(
            f"{name} is a quantised torch tensor ({t.dtype}): its stored integers are not the values it stands "
            "for; pass x.dequantize()"
        )
    if getattr(t, "is_nested", False):
        raise TypeError(
            f"{name} is a nested (ragged) torch tensor, which NumPy cannot read; pass "
            "x.to_padded_tensor(0.0) and a mask of its valid steps"
        )
    if t.layout != torch.strided:
        raise TypeError(f"{name} is a torch tensor with {t.layout} layout, which NumPy cannot read; pass x.to_dense()")
    try:
        if t.is_complex():
            return t.cpu().resolve_conj().numpy()
        if (t.is_floating_point() and t.element_size() < 2) or t.dtype == torch.bfloat16:
            t = t.to(torch.float32)  # bfloat16 and every float8 format are exact in float32
        return t.cpu().resolve_conj().resolve_neg().numpy()
    except (TypeError, RuntimeError, NotImplementedError) as exc:
        raise TypeError(f"{name} is a torch tensor of dtype {t.dtype}, which NumPy cannot read: {exc}") from None
