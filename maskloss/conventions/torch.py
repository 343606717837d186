r"""PyTorch's ``torch.nn.functional`` losses, as NumPy truth in float64.

Reproduces ``torch/nn/functional.py`` and the ATen kernels behind it
(``aten/src/ATen/native/LossNLL.cpp``, ``Loss.cpp``) of **torch 2.1 - 2.13** (checked
against torch 2.13.0 CPU by ``maskloss conformance`` and the tests). Names, argument
names, defaults and shapes are torch's: the class axis is axis 1, ``input`` is
``(N, C)`` or ``(N, C, d1, ...)`` (or unbatched ``(C,)``), index targets are
``(N,)`` / ``(N, d1, ...)`` (or ``()``), and ``reduction`` is ``"none"``, ``"mean"`` or
``"sum"``. Inputs are NumPy arrays or array-likes, outputs float64 (a
``numpy.float64`` scalar, or an array for ``"none"``). The deprecated
``size_average``/``reduce`` arguments are not mirrored.

The quirks, stated plainly:

* ``cross_entropy`` / ``nll_loss`` with index targets: ``"mean"`` is
  :math:`\sum_i cw_{y_i}\ell_i / \sum_{i \text{ valid}} cw_{y_i}`: class weights enter the
  numerator **and** the denominator. Steps whose target is ``ignore_index`` (default
  -100) are never read (NaN logits there do not reach the value). When every step is
  ignored (or every valid weight is 0), ``"mean"`` is **NaN** (0/0), ``"sum"`` is 0.
* Label smoothing spreads :math:`\varepsilon/C` over all classes (including the target)
  and keeps the same denominator :math:`\sum cw_y`:
  :math:`\ell = (1-\varepsilon)cw_y(-\log p_y) + \frac{\varepsilon}{C}\sum_c cw_c(-\log p_c)`.
* Probability targets (``target`` shaped like ``input``): ``"mean"`` divides by the
  number of positions :math:`N \cdot d_1 \cdots`, **not** by the weights;
  ``ignore_index >= 0`` raises (torch: "not supported for floating point target");
  the per-class product is taken as is, so a class with target 0 and logit
  :math:`-\infty` gives NaN (:math:`0 \cdot -\infty`), as in torch.
* ``binary_cross_entropy`` clamps each log at -100 (so one element costs at most 100,
  and :math:`0 \log 0` is 0); it uses ``log1p(-x)`` for :math:`\log(1-x)`; ``input`` and
  ``target`` must lie in [0, 1]. Its ``weight`` multiplies the elements and ``"mean"``
  still divides by the number of elements (**not** a weighted mean).
* ``l1_loss`` / ``mse_loss`` with ``weight``: ``"mean"`` is the weighted mean
  :math:`\sum w e / \sum w` (torch >= 2.6 argument); without it, the mean over elements.
  ``input`` and ``target`` of different shapes are broadcast with a ``UserWarning``.
* Every ``weight`` *multiplies*: a weight of 0 does not hide a NaN (``nan * 0 = nan``);
  only ``ignore_index`` selects.

Known deviation, for non-finite logits only: with index targets the core's
:math:`0 \cdot \log 0 = 0` rule is used, so a class weight of 0 on a class whose logit is
:math:`-\infty` (with label smoothing), or ``label_smoothing=1`` with a target logit of
:math:`-\infty`, gives a finite value where torch gives NaN. Class weights may be any real numbers, as in
torch (negative, zero-sum, even non-finite: the division by their sum is torch's, so a zero
sum gives inf or NaN as torch does).

Examples
--------
The numbers below are what torch 2.13.0 prints for the same tensors (float64).

>>> import numpy as np
>>> from maskloss.conventions import torch as tc
>>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [np.nan, 0.0, 0.0]])
>>> target = np.array([0, 1, -100])                     # the last step is padding
>>> round(float(tc.cross_entropy(logits, target)), 6)   # mean over the 2 valid steps
0.395495
>>> w = np.array([1.0, 3.0, 1.0])
>>> round(float(tc.cross_entropy(logits, target, weight=w)), 6)   # divided by 1 + 3
0.47347
>>> float(tc.cross_entropy(logits, np.array([-100, -100, -100])))   # nothing valid: NaN
nan
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import as_numeric, check_flag, check_label_smoothing, check_labels
from maskloss._rows import as_rows
from maskloss._types import FloatArray
from maskloss.linear import linear_cross_entropy as _linear_cross_entropy
from maskloss.losses import sparse_categorical_crossentropy, step_losses
from maskloss.reductions import Reduction, reduce_terms

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "kl_div",
    "l1_loss",
    "linear_cross_entropy",
    "mse_loss",
    "nll_loss",
]

_REDUCTIONS = ("none", "mean", "sum")

#: The maskloss reduction of each of torch's.
_OURS: dict[str, Reduction] = {"none": "none", "sum": "sum", "mean": "token_mean"}


def _check_reduction(reduction: object) -> str:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of 'none', 'mean', 'sum' (torch's names); got {reduction!r}")
    return reduction


def _check_ignore_index(ignore_index: object) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    return int(ignore_index)


def _reduce(terms: FloatArray, denominators: FloatArray | None, reduction: str) -> Any:
    """torch's ``"none"``/``"sum"``/``"mean"`` of per-position terms, via the core reductions.

    ``denominators`` given: ``"mean"`` is ``sum(terms) / sum(denominators)`` (token mean);
    ``None``: ``"mean"`` divides by the number of positions (element mean). Empty or
    all-zero denominators give NaN, as torch's 0/0.
    """
    if reduction == "none":
        return np.asarray(terms, dtype=np.float64)
    flat = np.asarray(terms, dtype=np.float64).reshape(1, -1)
    if denominators is None:
        return reduce_terms(flat, np.ones_like(flat), "element_mean" if reduction == "mean" else "sum")
    den = np.asarray(denominators, dtype=np.float64).reshape(1, -1)
    return reduce_terms(flat, den, "token_mean" if reduction == "mean" else "sum")


def _class_weight(weight: npt.ArrayLike | None, classes: int) -> FloatArray | None:
    """torch's ``weight``: a 1-D tensor of size C, any real values (only the shape is checked)."""
    if weight is None:
        return None
    cw = as_numeric(weight, "weight")
    if cw.shape != (classes,):
        raise ValueError(f"weight must have shape ({classes},), one weight per class; got {cw.shape}")
    return cw.astype(np.float64)


def _core_accepts(cw: FloatArray | None) -> bool:
    """Class weights the core losses take (finite, >= 0), hence the core's exact arithmetic."""
    return cw is None or bool(np.all(np.isfinite(cw) & (cw >= 0)))


def _index_cross_entropy_any_weight(
    logits: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], valid: np.ndarray[Any, Any],
    cw: FloatArray, eps: float, reduction: str,
) -> Any:
    r"""torch's index-target cross-entropy for weights the core rejects, term by term as torch.

    ``"mean"`` is :math:`(1-\varepsilon)\,A/W + \frac{\varepsilon}{C} S/W` with
    :math:`A = \sum cw_y(-\log p_y)`, :math:`S = \sum_i\sum_c cw_c(-\log p_{ic})` and
    :math:`W = \sum cw_y` over valid steps (``cross_entropy_loss_label_smoothing``), each
    division IEEE (a zero :math:`W` gives inf or NaN, as in torch).
    """
    classes = logits.shape[-1]
    rows = as_rows(logits)
    flat_labels = labels.reshape(-1)

    def label_terms(_: Any, lab: Any, x_rows: Any) -> FloatArray:
        return pointwise.sparse_cross_entropy(lab, pointwise.log_softmax(x_rows.astype(np.float64)), cw, 0.0)

    def smoothing_terms(_: Any, lab: Any, x_rows: Any) -> FloatArray:
        log_p = pointwise.log_softmax(x_rows.astype(np.float64))
        return pointwise.cross_entropy(np.ones_like(log_p), log_p, cw)

    nll = step_losses(label_terms, valid, flat_labels, rows).reshape(labels.shape)
    smooth = step_losses(smoothing_terms, valid, flat_labels, rows).reshape(labels.shape) if eps else None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if reduction == "none":
            return nll if smooth is None else (1.0 - eps) * nll + eps / classes * smooth
        if reduction == "sum":
            total = np.float64(nll.sum())
            return total if smooth is None else (1.0 - eps) * total + eps / classes * np.float64(smooth.sum())
        weight_sum = np.float64(np.where(valid, cw[labels], 0.0).sum())
        mean = np.float64(nll.sum()) / weight_sum
        return mean if smooth is None else (1.0 - eps) * mean + eps / classes * (np.float64(smooth.sum()) / weight_sum)


def _class_last(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """torch's ``(N, C, d1, ...)`` (or unbatched ``(C,)``) as ``(N, d1, ..., C)``."""
    return x if x.ndim == 1 else np.moveaxis(x, 1, -1)


def _index_target(x: np.ndarray[Any, Any], target: npt.ArrayLike, input_name: str) -> np.ndarray[Any, Any]:
    t = as_numeric(target, "target")
    expected = x.shape[:1] + x.shape[2:] if x.ndim >= 2 else ()
    if t.shape != expected:
        raise ValueError(
            f"target must have shape {expected} ({input_name} {x.shape} without its class axis 1) "
            f"for class-index targets, or {x.shape} for class probabilities; got {t.shape}"
        )
    if t.dtype.kind not in "iu":
        raise TypeError(f"class-index target must hold integers (torch: Long), got dtype {t.dtype}")
    return t


def _input(input: npt.ArrayLike) -> np.ndarray[Any, Any]:
    x = as_numeric(input, "input", min_ndim=1)
    if x.shape[0 if x.ndim == 1 else 1] == 0:
        raise ValueError(f"input has no classes: its class axis has size 0 (shape {x.shape})")
    return x


def cross_entropy(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Any:
    r"""``torch.nn.functional.cross_entropy``: log-softmax over axis 1, then NLL.

    Index targets (``target`` of shape ``(N, d1, ...)``), with :math:`v_i` = target is
    not ``ignore_index``:

    .. math::
        \ell_i = (1-\varepsilon)\,cw_{y_i}(-\log p_{i,y_i})
                 + \frac{\varepsilon}{C}\sum_c cw_c(-\log p_{ic}), \qquad
        \text{mean} = \frac{\sum_{i: v_i} \ell_i}{\sum_{i: v_i} cw_{y_i}}

    Probability targets (``target`` shaped like ``input``), :math:`q' = q(1-\varepsilon)
    + \varepsilon/C`:

    .. math::
        \ell_i = -\sum_c cw_c\, q'_{ic} \log p_{ic}, \qquad
        \text{mean} = \frac{1}{N d_1 \cdots}\sum_i \ell_i

    This is the core :func:`maskloss.sparse_categorical_crossentropy` with the class axis
    moved last (``reduction="token_mean"`` is torch's ``"mean"``).

    Parameters
    ----------
    input : array_like, shape (N, C), (N, C, d1, ...) or (C,)
        Logits.
    target : array_like
        Class indices of shape ``(N, d1, ...)`` (or ``()``), integer dtype, in ``[0, C)``
        or ``ignore_index``; or class probabilities of the shape of ``input``.
    weight : array_like, shape (C,), optional
        Class weights, any real values as in torch.
    ignore_index : int, default -100
        Target value whose steps are skipped (index targets only).
    reduction : {"mean", "sum", "none"}
    label_smoothing : float in [0, 1], default 0.0

    Returns
    -------
    numpy.float64, or for ``"none"`` an array of the target's (index) or the input's
    shape without axis 1 (probabilities); 0 at ignored steps.

    Examples
    --------
    A padded batch ``(N=2, C=3, T=2)`` whose second sequence has one valid step:

    >>> import numpy as np
    >>> from maskloss.conventions.torch import cross_entropy
    >>> logits = np.zeros((2, 3, 2)); logits[0, 0, 0] = np.log(2.0)
    >>> labels = np.array([[0, 2], [1, -100]])
    >>> cross_entropy(logits, labels, reduction="none").round(6)
    array([[0.693147, 1.098612],
           [1.098612, 0.      ]])
    >>> round(float(cross_entropy(logits, labels, label_smoothing=0.3)), 6)
    1.009667
    """
    x = _input(input)
    red = _check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    ignore = _check_ignore_index(ignore_index)
    classes = int(x.shape[0 if x.ndim == 1 else 1])
    logits = _class_last(x)
    t_arr = as_numeric(target, "target")
    if t_arr.shape == x.shape:
        if t_arr.dtype.kind != "f":
            raise TypeError(f"probability target must be floating point, got dtype {t_arr.dtype}")
        if ignore >= 0:
            raise ValueError(
                f"ignore_index is not supported for probability targets; got ignore_index={ignore}"
            )
        cw = _class_weight(weight, classes)
        q = pointwise.smooth_categorical_targets(_class_last(t_arr).astype(np.float64), eps)
        coef = q if cw is None else q * cw
        with np.errstate(invalid="ignore"):  # 0 * -inf = nan, as in torch
            terms = -np.sum(pointwise.log_softmax(logits.astype(np.float64)) * coef, axis=-1)
        return _reduce(terms, None, red)
    t = _index_target(x, t_arr, "input")
    cw = _class_weight(weight, classes)
    if not _core_accepts(cw):
        assert cw is not None
        valid = np.asarray(t != ignore)
        labels = check_labels(t, valid, classes, name="target")
        return _index_cross_entropy_any_weight(logits, labels, valid, cw, eps, red)
    out = sparse_categorical_crossentropy(
        t.reshape(1, -1),
        logits.reshape(1, -1, classes),
        from_logits=True,
        ignore_index=ignore,
        label_smoothing=eps,
        class_weight=weight,
        reduction=_OURS[red],
    )
    return out.reshape(t.shape) if red == "none" else out


def nll_loss(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Any:
    r"""``torch.nn.functional.nll_loss``: pick ``-input[i, y_i]``, weighted by class.

    .. math::
        \ell_i = -cw_{y_i}\, x_{i,y_i}, \qquad
        \text{mean} = \frac{\sum_{i: v_i} \ell_i}{\sum_{i: v_i} cw_{y_i}}

    ``input`` is taken as given (log-probabilities, not checked); steps whose target is
    ``ignore_index`` are never read. All ignored: ``"mean"`` is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.torch import nll_loss
    >>> log_p = np.log([[0.5, 0.5], [0.25, 0.75], [np.nan, np.nan]])
    >>> round(float(nll_loss(log_p, [0, 1, -100])), 6)    # (ln 2 + ln 4/3) / 2
    0.490415
    """
    x = _input(input)
    red = _check_reduction(reduction)
    ignore = _check_ignore_index(ignore_index)
    classes = int(x.shape[0 if x.ndim == 1 else 1])
    t = _index_target(x, target, "input")
    cw = _class_weight(weight, classes)
    valid = np.asarray(t != ignore)
    labels = check_labels(t, valid, classes, name="target")
    losses = step_losses(
        lambda rows, lab, x_rows: pointwise.sparse_cross_entropy(lab, x_rows.astype(np.float64), cw, 0.0),
        valid,
        labels.reshape(-1),
        as_rows(_class_last(x)),
    )
    denominators = np.where(valid, 1.0 if cw is None else cw[labels], 0.0)
    if red == "mean" and not _core_accepts(cw):
        with np.errstate(divide="ignore", invalid="ignore"):  # torch's sum / total_weight, IEEE
            return np.float64(losses.sum()) / np.float64(denominators.sum())
    return _reduce(losses, denominators, red)


def _same_shape(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], what: str) -> None:
    if x.shape != y.shape:
        raise ValueError(
            f"{what}: target must have the input's shape; got target {y.shape} and input {x.shape}"
        )


def _broadcast_weight(
    weight: npt.ArrayLike | None, shape: tuple[int, ...], name: str = "weight"
) -> FloatArray | None:
    if weight is None:
        return None
    w = as_numeric(weight, name).astype(np.float64)
    try:
        return np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {w.shape} does not broadcast to the input's {shape}") from None


def binary_cross_entropy(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    weight: npt.ArrayLike | None = None,
    reduction: str = "mean",
) -> Any:
    r"""``torch.nn.functional.binary_cross_entropy`` on probabilities, elementwise.

    .. math::
        \ell = -w\Big(y \max(\log x, -100) + (1-y)\max(\operatorname{log1p}(-x), -100)\Big),
        \qquad \text{mean} = \frac{1}{\#\text{elements}}\sum \ell

    ``input`` and ``target`` must have one shape and lie in [0, 1] (torch raises
    otherwise); ``weight`` broadcasts to it. The -100 clamp makes ``x = 0, y = 1`` cost
    100, not infinity.

    Examples
    --------
    >>> from maskloss.conventions.torch import binary_cross_entropy
    >>> binary_cross_entropy([0.0, 0.5, 1.0], [1.0, 1.0, 1.0], reduction="none").round(6)
    array([100.      ,   0.693147,  -0.      ])
    """
    red = _check_reduction(reduction)
    x = as_numeric(input, "input").astype(np.float64)
    y = as_numeric(target, "target").astype(np.float64)
    _same_shape(x, y, "binary_cross_entropy")
    for name, arr in (("input", x), ("target", y)):
        bad = ~((arr >= 0.0) & (arr <= 1.0))
        if np.any(bad):
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"all elements of {name} should be between 0 and 1; found {arr[pos].item()!r} at {pos}")
    w = _broadcast_weight(weight, x.shape)
    with np.errstate(divide="ignore"):
        log_x = np.maximum(np.log(x), -100.0)
        log_1mx = np.maximum(np.log1p(-x), -100.0)
    terms = (y - 1.0) * log_1mx - y * log_x
    return _reduce(terms if w is None else terms * w, None, red)


def _elementwise(fn: Any, a: FloatArray, b: FloatArray) -> FloatArray:
    """Apply a core per-row loss (mean over the last axis) to single elements."""
    out: FloatArray = fn(a[..., None], b[..., None])
    return out


def binary_cross_entropy_with_logits(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    weight: npt.ArrayLike | None = None,
    reduction: str = "mean",
    pos_weight: npt.ArrayLike | None = None,
) -> Any:
    r"""``torch.nn.functional.binary_cross_entropy_with_logits``, elementwise.

    .. math::
        \ell = w\Big((1-y)\,x + \big(1 + (p_w - 1)\,y\big)\operatorname{softplus}(-x)\Big),
        \qquad \text{mean} = \frac{1}{\#\text{elements}}\sum \ell

    (the stable logit form of the core, plus the ``pos_weight`` term). ``target`` must
    have the input's shape; ``weight`` and ``pos_weight`` broadcast to it (``pos_weight``
    is usually one entry per class, the last axis). ``target`` is not range-checked.

    Examples
    --------
    >>> from maskloss.conventions.torch import binary_cross_entropy_with_logits as bce
    >>> round(float(bce([0.0, 0.0], [1.0, 0.0], pos_weight=[3.0, 3.0])), 6)   # (3 ln 2 + ln 2) / 2
    1.386294
    """
    red = _check_reduction(reduction)
    x = as_numeric(input, "input").astype(np.float64)
    y = as_numeric(target, "target").astype(np.float64)
    _same_shape(x, y, "binary_cross_entropy_with_logits")
    terms = _elementwise(pointwise.binary_cross_entropy_with_logits, y, x)
    pw = _broadcast_weight(pos_weight, x.shape, "pos_weight")
    if pw is not None:
        softplus_neg = _elementwise(pointwise.binary_cross_entropy_with_logits, np.ones_like(x), x)
        terms = terms + (pw - 1.0) * y * softplus_neg
    w = _broadcast_weight(weight, x.shape)
    return _reduce(terms if w is None else terms * w, None, red)


def _regression(
    fn: Any, input: npt.ArrayLike, target: npt.ArrayLike, reduction: str, weight: npt.ArrayLike | None
) -> Any:
    red = _check_reduction(reduction)
    x = as_numeric(input, "input").astype(np.float64)
    y = as_numeric(target, "target").astype(np.float64)
    if x.shape != y.shape:
        warnings.warn(
            f"Using a target size ({y.shape}) that is different to the input size ({x.shape}). "
            "This will likely lead to incorrect results due to broadcasting (torch broadcasts them too).",
            UserWarning,
            stacklevel=3,
        )
    try:
        bx, by = np.broadcast_arrays(x, y)
    except ValueError:
        raise ValueError(f"input {x.shape} and target {y.shape} do not broadcast") from None
    errors = _elementwise(fn, by, bx)
    if weight is None:
        return _reduce(errors, None, red)
    w = as_numeric(weight, "weight").astype(np.float64)
    if w.shape != x.shape:
        raise ValueError(f"weight must have the input's shape {x.shape} (torch: same size); got {w.shape}")
    weighted = errors * w
    return _reduce(weighted, w, red)


def kl_div(
    input: npt.ArrayLike, target: npt.ArrayLike, reduction: str = "mean", log_target: bool = False
) -> Any:
    r"""``torch.nn.functional.kl_div``: :math:`\ell = y (\log y - x)` elementwise, ``input`` :math:`x` in log-space.

    torch's ATen ``kl_div``: ``xlogy(target, target) - target * input`` (so a target of 0
    contributes 0 unless ``input`` is :math:`\pm\infty` or NaN there: :math:`0 \cdot
    (-\infty)` is NaN, as in torch); with ``log_target=True``,
    ``exp(target) * (target - input)`` (a target of :math:`-\infty` on an input of
    :math:`-\infty` is NaN too). Nothing is validated: a target that is not a
    distribution is used as given. Reductions: ``"none"``, ``"sum"``, ``"mean"`` (over
    **all elements**, classes included: torch warns that it is not the KL) and
    ``"batchmean"`` (the sum divided by ``input.shape[0]``, the KL per row of an
    ``(N, C)`` input; the plain sum for a 0-d input). ``input`` and ``target`` broadcast.
    The masked, NaN-safe KL is :func:`maskloss.kl_divergence`.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.torch import kl_div
    >>> log_p = np.log([[0.25, 0.75]])
    >>> float(kl_div(log_p, [[0.5, 0.5]], reduction="batchmean"))   # torch 2.13 prints the same numbers
    0.14384103622589045
    >>> float(kl_div(log_p, [[0.5, 0.5]], reduction="mean"))        # divided by 2 elements
    0.07192051811294523
    """
    if reduction != "batchmean":
        _check_reduction(reduction)
    log = check_flag(log_target, "log_target")
    x = as_numeric(input, "input").astype(np.float64)
    y = as_numeric(target, "target").astype(np.float64)
    try:
        bx, by = np.broadcast_arrays(x, y)
    except ValueError:
        raise ValueError(f"input {x.shape} and target {y.shape} do not broadcast") from None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if log:
            terms = np.exp(by) * (by - bx)
        else:
            xlogy = np.where(by == 0, 0.0, by * np.log(np.where(by == 0, 1.0, by)))
            terms = xlogy - by * bx
    if reduction == "none":
        return terms
    if reduction == "batchmean":
        total = np.float64(np.sum(terms))
        return total if x.ndim == 0 else np.float64(total / x.shape[0])
    return _reduce(terms, None, reduction)


def l1_loss(
    input: npt.ArrayLike, target: npt.ArrayLike, reduction: str = "mean", weight: npt.ArrayLike | None = None
) -> Any:
    r"""``torch.nn.functional.l1_loss``: :math:`\ell = w\,|x - y|` elementwise.

    ``"mean"``: over all elements without ``weight``; the weighted mean
    :math:`\sum w|x-y| / \sum w` with it (NaN when the weights sum to 0).

    Examples
    --------
    >>> from maskloss.conventions.torch import l1_loss
    >>> float(l1_loss([1.0, 2.0, 4.0], [0.0, 0.0, 0.0]))
    2.3333333333333335
    >>> float(l1_loss([1.0, 2.0, 4.0], [0.0, 0.0, 0.0], weight=[1.0, 1.0, 0.0]))   # (1 + 2) / 2
    1.5
    """
    return _regression(pointwise.absolute_error, input, target, reduction, weight)


def mse_loss(
    input: npt.ArrayLike, target: npt.ArrayLike, reduction: str = "mean", weight: npt.ArrayLike | None = None
) -> Any:
    r"""``torch.nn.functional.mse_loss``: :math:`\ell = w\,(x - y)^2` elementwise.

    Reductions as in :func:`l1_loss`.

    Examples
    --------
    >>> from maskloss.conventions.torch import mse_loss
    >>> float(mse_loss([1.0, 2.0], [0.0, 0.0], reduction="sum"))
    5.0
    """
    return _regression(pointwise.squared_error, input, target, reduction, weight)


def linear_cross_entropy(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
) -> Any:
    r"""``torch.nn.functional.linear_cross_entropy`` (torch >= 2.12): cross-entropy of ``linear(input)``.

    torch defines it as ``cross_entropy(linear(input, linear_weight, linear_bias), target,
    weight=..., ignore_index=..., label_smoothing=..., reduction=...)`` with
    ``ignore_index=None`` meaning -100. ``options`` (a ``LinearCrossEntropyOptions``)
    selects torch's chunked implementation, which (torch 2.13) **reads the ignored rows**:
    a NaN or inf in the input of an ignored row makes that row's ``"none"`` value NaN, and
    ``"mean"``/``"sum"`` NaN (and NaN reaches their gradient), where the reference path
    (``options=None``) gives 0 there; this mirror reproduces that (torch applies the
    chunked path only without label smoothing). For a 2-D ``input`` (N, H) and
    non-negative class weights the value comes from
    :func:`maskloss.linear_cross_entropy` (the logits are never held); otherwise the
    logits are formed and :func:`cross_entropy` applied. With ``options=None`` this is
    also the naive composition ``F.cross_entropy(x @ W.T + b, ...)`` that fused kernels'
    own tests (Liger, CCE) take as their reference.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.torch import linear_cross_entropy
    >>> x = np.array([[1.0, 2.0], [0.5, -1.0]]); W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> y = np.array([2, -100])                     # row 0's logits are [1, 2, 3]; row 1 is ignored
    >>> round(float(linear_cross_entropy(x, W, y)), 6), round(float(np.log(np.exp([1, 2, 3]).sum()) - 3), 6)
    (0.407606, 0.407606)
    """
    value = _linear_cross_entropy_reference(
        input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing
    )
    if options is None or label_smoothing != 0:  # torch's chunked path takes no smoothing
        return value
    # The chunked path reads ignored rows: a NaN or inf in their input gives NaN (x * 0).
    x = as_numeric(input, "input", min_ndim=1)
    t = as_numeric(target, "target")
    ignore = -100 if ignore_index is None else int(ignore_index)
    with np.errstate(invalid="ignore"):
        poisoned = (t == ignore) & ~np.all(np.isfinite(x.astype(np.float64)), axis=-1)
    if not np.any(poisoned):
        return value
    if reduction == "none":
        return np.where(poisoned, np.nan, value)
    return np.float64(np.nan)


def _linear_cross_entropy_reference(
    input: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    target: npt.ArrayLike,
    linear_bias: npt.ArrayLike | None,
    weight: npt.ArrayLike | None,
    reduction: str,
    ignore_index: int | None,
    label_smoothing: float,
) -> Any:
    """torch's reference path: ``cross_entropy(linear(input))``; ignored rows are never read."""
    ignore = -100 if ignore_index is None else _check_ignore_index(ignore_index)
    x = as_numeric(input, "input", min_ndim=1)
    w = as_numeric(linear_weight, "linear_weight")
    red = _check_reduction(reduction)
    cw = None if weight is None else _class_weight(weight, int(w.shape[0]) if w.ndim == 2 else -1)
    if x.ndim == 2 and w.ndim == 2 and _core_accepts(cw):
        t = as_numeric(target, "target")
        if t.shape != x.shape[:1]:
            raise ValueError(f"target must have shape ({x.shape[0]},) for input {x.shape}; got {t.shape}")
        out = _linear_cross_entropy(
            x[None], w, t[None], bias=linear_bias, ignore_index=ignore, label_smoothing=label_smoothing,
            class_weight=cw, reduction=_OURS[red],
        )
        return np.asarray(out)[0] if red == "none" else out
    if w.ndim != 2 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"input {x.shape} and linear_weight {w.shape} do not fit linear(): need (..., H) and (C, H)")
    logits = x.astype(np.float64) @ w.astype(np.float64).T
    if linear_bias is not None:
        logits = logits + as_numeric(linear_bias, "linear_bias").astype(np.float64)
    if logits.ndim > 2:  # linear keeps the feature axis last; cross_entropy wants classes at axis 1
        logits = np.moveaxis(logits, -1, 1)
    return cross_entropy(logits, target, weight=weight, ignore_index=ignore, reduction=red,
                         label_smoothing=label_smoothing)
