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


def to_numpy(x: Any) -> Any:
    r"""``x`` as something :func:`numpy.asarray` reads, if it is a torch or jax array.

    Examples
    --------
    >>> torch = __import__("pytest").importorskip("torch")
    >>> from maskloss._interop import to_numpy
    >>> to_numpy(torch.tensor([0.5], dtype=torch.bfloat16, requires_grad=True))
    array([0.5], dtype=float32)
    >>> to_numpy([1, 2])
    [1, 2]
    """
    if _module(x).startswith("torch"):
        import torch  # the object is a torch tensor, so torch is already imported

        if isinstance(x, torch.Tensor):
            t = x.detach()
            if t.is_complex():
                return t.cpu().resolve_conj().numpy()
            if t.dtype == torch.bfloat16:
                t = t.to(torch.float32)
            return t.cpu().resolve_conj().resolve_neg().numpy()
        return x
    return x  # numpy, lists, and jax arrays (numpy reads those itself, bfloat16 included)
