r"""Input validation: every public function sends its arguments through here first.

Each check names the argument it rejects and shows the bad value or shapes, so a
user never meets a bare NumPy traceback. Checks that look at values (labels,
probabilities, weights) look only at *valid* steps: whatever lies under the mask
is garbage by definition and is allowed to be anything, NaN included.

Nothing here writes into a caller's array; arrays are only read or copied.
"""

from __future__ import annotations

import numbers
import os
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss._interop import to_numpy
from maskloss._types import BoolArray, FloatArray, Reduction

__all__ = [
    "as_numeric",
    "check_class_weight",
    "check_feature_pair",
    "check_features",
    "check_fits",
    "check_flag",
    "check_head_option",
    "check_head_options",
    "check_label_smoothing",
    "check_labels",
    "check_mask",
    "check_reduction",
    "check_sample_weight",
    "first_bad_position",
    "physical_memory",
]

_NUMERIC_KINDS = "biuf"


def _describe(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."


def as_numeric(x: npt.ArrayLike, name: str, *, min_ndim: int = 0) -> np.ndarray[Any, Any]:
    """Return ``x`` as an ndarray of a real numeric dtype, without copying when possible.

    The dtype is kept (not promoted yet) so that very large inputs can be promoted to
    float64 chunk by chunk; booleans, integers, float16/32/64 and extension floats
    that cast safely to float64 (such as ``ml_dtypes.bfloat16``) are accepted.
    """
    if type(x) is np.ndarray:  # the common case, without the conversions below
        arr: np.ndarray[Any, Any] = x
    else:
        if x is None:
            raise TypeError(f"{name} must be an array of numbers, got None")
        if isinstance(x, np.ma.MaskedArray):
            x = _unmasked_data(x, name)
        x = to_numpy(x, name)  # torch/jax tensors (requires_grad, GPU, bfloat16) become numpy
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:  # ragged nested lists and the like
            raise TypeError(f"{name} must be an array of numbers; could not convert {_describe(x)}: {exc}") from None
    if arr.dtype.kind not in _NUMERIC_KINDS and not np.can_cast(arr.dtype, np.float64, "safe"):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype} ({_describe(x)})")
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {arr.shape}")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        _check_float64_range(arr, name)
    return arr


def _check_float64_range(arr: np.ndarray[Any, Any], name: str) -> None:
    """A ``np.longdouble`` array must hold only values float64 can represent (maskloss computes in float64).

    A finite value beyond float64's range would silently become inf; it is refused instead,
    wherever it is (even under the mask: a longdouble array is read whole into float64).
    """
    top = np.finfo(np.float64).max
    beyond = np.isfinite(arr) & (np.abs(arr) > top)
    if np.any(beyond):
        pos = first_bad_position(beyond, arr.shape)
        raise ValueError(
            f"{name} holds {arr[pos]!r} ({arr.dtype}) at index {pos}, beyond float64's range (+-{top:.6g}): "
            f"maskloss computes in float64, where it would become inf; rescale it, or pass a float64 array"
        )


def _unmasked_data(x: np.ma.MaskedArray[Any, Any], name: str) -> np.ndarray[Any, Any]:
    """The data of a ``numpy.ma`` array that masks nothing; one that masks an entry is refused.

    maskloss's masks are explicit (``mask=``, True = valid) and a ``numpy.ma`` mask is per
    element, not per step: rather than guess, or silently drop it, an array with a masked
    entry is an error saying how to pass the same information.
    """
    hidden = np.ma.getmaskarray(x)
    if hidden.any():
        pos = first_bad_position(hidden, hidden.shape)
        raise TypeError(
            f"{name} is a numpy.ma masked array with {int(hidden.sum())} masked entries (the first at index "
            f"{pos}); maskloss does not read numpy.ma masks: pass np.ma.getdata({name}) and mark its valid "
            f"steps in mask= (True = valid, e.g. ~np.ma.getmaskarray({name}) for per-step values)"
        )
    return np.ma.getdata(x)


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where the OS does not say (not POSIX)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(nbytes: int, what: str) -> None:
    """Refuse, with a ``ValueError`` saying ``what`` needs how much, an allocation larger than physical memory.

    A bare ``MemoryError`` ("Unable to allocate 8.00 TiB") names no argument; sizes that cannot
    fit are refused before anything is allocated (``what`` names the arguments that set the size).
    """
    physical = physical_memory()
    if physical is not None and nbytes > physical:
        raise ValueError(
            f"{what} needs {nbytes} bytes ({nbytes / 2**30:.3g} GiB), more than this machine's "
            f"{physical / 2**30:.3g} GiB of memory"
        )


def first_bad_position(bad: BoolArray, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Index (in ``shape``) of the first True entry of the flat ``bad`` selection."""
    flat = int(np.flatnonzero(bad.ravel())[0])
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def check_mask(mask: npt.ArrayLike | None, shape: tuple[int, ...], *, name: str = "mask") -> BoolArray:
    """Validate a mask (True = valid) of exactly ``shape`` and return it as a bool array.

    ``None`` means every step is valid. Masks may be bool or numeric holding only 0 and 1.
    """
    if mask is None:
        return np.ones(shape, dtype=bool)
    arr = as_numeric(mask, name)
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name} must have shape {tuple(shape)} (the steps of the batch), got {arr.shape}"
        )
    if arr.dtype == bool:
        return arr
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        pos = first_bad_position(~ok, arr.shape)
        raise ValueError(
            f"{name} must hold only 0/1 or True/False (True = valid step); found {arr[pos].item()!r} at "
            f"index {pos}. If your mask marks padding with True (torch key_padding_mask, "
            f"numpy.ma), pass its negation."
        )
    return arr.astype(bool)


def check_feature_pair(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, true_name: str = "y_true", pred_name: str = "y_pred"
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Validate targets and predictions that share one shape ``(..., features)``."""
    t = as_numeric(y_true, true_name, min_ndim=1)
    p = as_numeric(y_pred, pred_name, min_ndim=1)
    if t.shape != p.shape:
        raise ValueError(
            f"{true_name} and {pred_name} must have the same shape (batch, ..., features); "
            f"got {true_name} {t.shape} and {pred_name} {p.shape}"
        )
    return t, p


def check_features(y_pred: np.ndarray[Any, Any], name: str = "y_pred") -> int:
    """The last axis of ``y_pred`` (features or classes) must not be empty; returns its size."""
    width = y_pred.shape[-1]
    if width == 0:
        raise ValueError(f"{name} has no features/classes: its last axis has size 0 (shape {y_pred.shape})")
    return int(width)


def check_flag(value: object, name: str) -> bool:
    """``value`` must be a real boolean (``from_logits`` and friends); returns it as ``bool``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


#: Names accepted by ``reduction=``, read off :data:`maskloss._types.Reduction` (their one definition).
REDUCTION_NAMES: tuple[str, ...] = typing.get_args(Reduction)


def check_reduction(reduction: object, *, allowed: Sequence[str] = REDUCTION_NAMES, name: str = "reduction") -> str:
    """Return ``reduction`` if it names a known reduction, else raise listing the valid ones."""
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {reduction!r}")
    return reduction


def check_ignore_index(ignore_index: object) -> int | None:
    """``ignore_index`` must be an int (a label that marks a step to ignore, HF's -100) or None."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
    return int(ignore_index)


def check_label_smoothing(label_smoothing: object, name: str = "label_smoothing") -> float:
    """A smoothing amount (``label_smoothing``, fairseq's ``epsilon``) must be a real number in ``[0, 1]``."""
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {label_smoothing!r}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {label_smoothing!r}")
    return eps


def check_head_option(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A head option (``temperature``, ``softcap``, ``z_loss``) must be a finite real number > 0
    (>= 0 with ``allow_zero``); returns it as ``float``."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite real number {bound}, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < 0.0 or (v == 0.0 and not allow_zero):
        raise ValueError(f"{name} must be a finite real number {bound}, got {value!r}")
    return v


def check_head_options(
    temperature: object, softcap: object, z_loss: object, *, from_logits: bool = True
) -> tuple[float, float | None, float]:
    """The head options of a loss, ``(temperature, softcap or None, z_loss)``, checked by :func:`check_head_option`.

    They act on logits: with ``from_logits=False`` any of them at a non-default value is an
    error naming it (probabilities have no logits to divide, cap or take the log-sum-exp of).
    """
    t = check_head_option(temperature, "temperature")
    cap = None if softcap is None else check_head_option(softcap, "softcap")
    z = check_head_option(z_loss, "z_loss", allow_zero=True)
    if not from_logits:
        given = [f"{name}={value!r}" for name, value, default in
                 (("temperature", temperature, 1.0), ("softcap", softcap, None), ("z_loss", z_loss, 0.0))
                 if value is not None and value != default]
        if given:
            raise ValueError(
                f"{', '.join(given)} applies to logits only: pass from_logits=True (y_pred holds probabilities, "
                f"which have no logits to divide by a temperature, softcap or take the log-sum-exp of)"
            )
    return t, cap, z


def check_sample_weight(sample_weight: npt.ArrayLike | None, valid: BoolArray) -> FloatArray:
    """Broadcast ``sample_weight`` to the steps of the batch, as float64, 0 at masked steps.

    Accepted shapes: a scalar, the mask's shape, or a prefix of it such as ``(B,)`` (one
    weight per sequence, as Keras takes it); trailing axes are broadcast. Weights must be
    finite and non-negative at valid steps; masked steps may hold anything.
    """
    shape = valid.shape
    if sample_weight is None:
        return valid.astype(np.float64)
    w = as_numeric(sample_weight, "sample_weight")
    if w.ndim > len(shape) or any(ws not in (1, s) for ws, s in zip(w.shape, shape, strict=False)):
        raise ValueError(
            f"sample_weight must have shape {shape}, a prefix of it such as {shape[:1]}, or be a "
            f"scalar; got shape {w.shape}"
        )
    w = w.reshape(w.shape + (1,) * (len(shape) - w.ndim))
    full = np.broadcast_to(w, shape)
    with np.errstate(invalid="ignore"):
        bad = valid & ~(np.isfinite(full) & (full >= 0))
    if np.any(bad):
        pos = first_bad_position(bad, shape)
        raise ValueError(
            f"sample_weight must be finite and >= 0 at valid steps; found {full[pos].item()!r} at step {pos}"
        )
    return np.where(valid, full, 0.0).astype(np.float64)


def check_class_weight(class_weight: npt.ArrayLike | None, num_classes: int) -> FloatArray | None:
    """``class_weight`` must be ``None`` or a finite, non-negative vector of length C."""
    if class_weight is None:
        return None
    cw = as_numeric(class_weight, "class_weight")
    if cw.shape != (num_classes,):
        raise ValueError(
            f"class_weight must have shape ({num_classes},), one weight per class; got {cw.shape}"
        )
    cw64 = cw.astype(np.float64)
    bad = ~(np.isfinite(cw64) & (cw64 >= 0))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"class_weight must be finite and >= 0; found {cw64[i].item()!r} at class {i}")
    return cw64


def check_labels(
    labels: np.ndarray[Any, Any], valid: BoolArray, num_classes: int, *, name: str = "y_true"
) -> npt.NDArray[np.intp]:
    """Integer class labels in ``[0, C)`` at valid steps, returned as intp (0 at masked steps).

    Float labels are accepted when integral at valid steps (Keras often passes float labels).
    """
    if labels.dtype == bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype bool")
    if labels.dtype.kind == "f" or labels.dtype.kind not in "iu":
        lab = labels.astype(np.float64)
        with np.errstate(invalid="ignore"):
            bad = valid & ~(np.isfinite(lab) & (lab == np.round(lab)))
        if np.any(bad):
            pos = first_bad_position(bad, labels.shape)
            raise ValueError(f"{name} must hold integer class labels; found {labels[pos].item()!r} at step {pos}")
        safe = np.where(valid, lab, 0.0)
    else:
        safe = np.where(valid, labels, 0)
    bad = valid & ((safe < 0) | (safe >= num_classes))
    if np.any(bad):
        pos = first_bad_position(bad, labels.shape)
        raise ValueError(
            f"{name} holds label {labels[pos].item()!r} at valid step {pos}, outside [0, {num_classes}) "
            f"for {num_classes} classes; mask it or pass ignore_index"
        )
    return safe.astype(np.intp)
