r"""optax's classification losses with ``where``, as NumPy truth in float64.

Reproduces ``optax/losses/_classification.py`` of **optax 0.2.4 - 0.2.8** (``axis``
and ``where`` arrived in 0.2.4; checked against optax 0.2.8 on jax 0.10.2 with
``jax_enable_x64`` by ``maskloss conformance`` and the tests), including what it
inherits from ``jax.nn.log_softmax`` and ``jax.nn.logsumexp``.

optax never averages: every function returns one loss per example (the shape of the
logits without the class axis), and the reduction is the caller's. ``where`` (True =
include) plays two roles, by its shape:

* **row mask** (``where.ndim < logits.ndim``, e.g. ``(B, T)`` for ``(B, T, C)``
  logits): it is expanded on ``axis`` and broadcast over the classes, so a masked row
  includes no class and its loss is exactly 0, whatever its logits hold (NaN
  included): NaN-safe. The masked mean is then ``loss.sum() / where.sum()``.
* **class mask** (``where.shape == logits.shape``): the normaliser (log-sum-exp) runs
  over the included classes only, so excluded classes get no probability mass. A row
  with no included class gives 0.

The quirks, stated plainly:

* ``softmax_cross_entropy`` sums ``labels * log_softmax`` over the included classes,
  with a plain product: a label of 0 on a class whose log-probability is
  :math:`-\infty` (an included logit of :math:`-\infty`) gives NaN (optax's
  ``safe_softmax_cross_entropy`` exists for that).
* ``softmax_cross_entropy_with_integer_labels`` takes the label's logit even when the
  class mask excludes that class, so the loss is :math:`\operatorname{lse}_{where}(x) -
  x_y` and can be negative.
* Integer labels are gathered with jax's rules: a negative label in ``[-C, -1]`` wraps
  around (-1 is the last class), any other label outside ``[0, C)`` gives NaN, silently
  (no error), unless its row is masked out.
* ``logits`` must be floating point and integer ``labels`` of an integer dtype
  (``TypeError`` otherwise, as optax's ``check_subdtype``).

Examples
--------
A padded batch of 2 sequences x 3 steps over 4 classes; padding holds NaN. The numbers
are what optax 0.2.8 returns for the same arrays (jax x64).

>>> import numpy as np
>>> from maskloss.conventions import optax as ox
>>> logits = np.zeros((2, 3, 4)); logits[0, :, 1] = 2.0; logits[1, 2] = np.nan
>>> labels = np.array([[1, 1, 0], [3, 2, 0]])
>>> where = np.array([[True, True, True], [True, True, False]])
>>> per_step = ox.softmax_cross_entropy_with_integer_labels(logits, labels, where=where)
>>> per_step.round(6)
array([[0.340753, 0.340753, 2.340753],
       [1.386294, 1.386294, 0.      ]])
>>> round(float(per_step.sum() / where.sum()), 6)    # the masked mean is the caller's
1.15897
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import as_numeric
from maskloss._types import BoolArray, FloatArray

__all__ = [
    "convex_kl_divergence",
    "generalized_kl_divergence",
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "poly_loss_cross_entropy",
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
]

Axis = int | tuple[int, ...]


def _axes(axis: object, ndim: int) -> tuple[int, ...]:
    items = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in items:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise ValueError(f"axis must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for logits with {ndim} dimensions")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out) or not out:
        raise ValueError(f"axis must name distinct axes, got {axis!r}")
    return tuple(out)


def _logits(logits: npt.ArrayLike) -> np.ndarray[Any, Any]:
    x = as_numeric(logits, "logits", min_ndim=1)
    if x.dtype.kind in "biu":
        raise TypeError(f"logits must be floating point (optax check_subdtype), got dtype {x.dtype}")
    return x


def _classes_last(arr: np.ndarray[Any, Any], class_axes: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """Move ``class_axes`` to the end (in order) and flatten them into one axis."""
    batch_axes = tuple(a for a in range(arr.ndim) if a not in class_axes)
    moved = np.transpose(arr, batch_axes + class_axes)
    return moved.reshape((*moved.shape[: len(batch_axes)], -1))


def _where(where: npt.ArrayLike | None, shape: tuple[int, ...], axes: tuple[int, ...]) -> BoolArray | None:
    """optax's ``where``: expanded on ``axis`` when it lacks the class axes, then broadcast."""
    if where is None:
        return None
    w = as_numeric(where, "where")
    if w.ndim != len(shape):
        try:
            w = np.expand_dims(w, axes)
        except (ValueError, np.exceptions.AxisError):
            raise ValueError(f"where of shape {w.shape} cannot expand on axis {axes} to {shape}") from None
    try:
        return np.broadcast_to(w != 0, shape)
    except ValueError:
        raise ValueError(
            f"where must have the logits' shape {shape} (class mask) or their shape without the "
            f"class axis (row mask); got {np.shape(where)}"
        ) from None


def _logsumexp(x: FloatArray, where: BoolArray | None) -> FloatArray:
    """``jax.nn.logsumexp(x, axis=-1, where=where)``, including its guard on a non-finite max."""
    if where is not None:
        x = np.where(where, x, 0.0)
    top = np.max(x, axis=-1, where=where if where is not None else True, initial=-np.inf, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        total = np.sum(np.exp(x - top), axis=-1, where=where if where is not None else True)
        out: FloatArray = np.log(np.abs(total)) + top[..., 0]
    return out


def softmax_cross_entropy(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    axis: Axis = -1,
    where: npt.ArrayLike | None = None,
) -> FloatArray:
    r"""``optax.softmax_cross_entropy``: :math:`-\sum_{c \in W} y_c \log\operatorname{softmax}_W(x)_c`.

    :math:`W` is the set of included classes of the row (all, without ``where``), and
    :math:`\operatorname{softmax}_W` normalises over :math:`W` only. A row with empty
    :math:`W` gives 0.

    Parameters
    ----------
    logits : array_like of float
        Unnormalised log-probabilities; ``axis`` holds the classes.
    labels : array_like
        Target distributions, broadcastable to ``logits`` (not checked to sum to 1).
    axis : int or tuple of ints, default -1
        Class axis (axes are flattened together).
    where : array_like of bool, optional
        Row mask (shape without ``axis``) or class mask (shape of ``logits``); True = include.

    Returns
    -------
    ndarray of float64, the shape of ``logits`` without ``axis``

    Examples
    --------
    A class mask restricts the normaliser (optax 0.2.8 gives the same):

    >>> import numpy as np
    >>> from maskloss.conventions.optax import softmax_cross_entropy
    >>> logits = np.array([[0.0, 0.0, 5.0]])
    >>> labels = np.array([[1.0, 0.0, 0.0]])
    >>> softmax_cross_entropy(logits, labels).round(6)
    array([5.013386])
    >>> softmax_cross_entropy(logits, labels, where=np.array([[True, True, False]])).round(6)   # ln 2
    array([0.693147])
    """
    x = _logits(logits)
    axes = _axes(axis, x.ndim)
    y = as_numeric(labels, "labels")
    try:
        y = np.broadcast_to(y, x.shape)
    except ValueError:
        raise ValueError(f"labels of shape {y.shape} must broadcast to the logits' shape {x.shape}") from None
    w = _where(where, x.shape, axes)
    x2 = _classes_last(x, axes).astype(np.float64)
    y2 = _classes_last(y, axes).astype(np.float64)
    if w is None:
        with np.errstate(invalid="ignore"):
            return np.asarray(-np.sum(y2 * pointwise.log_softmax(x2), axis=-1), dtype=np.float64)
    w2 = _classes_last(w, axes)
    with np.errstate(invalid="ignore"):  # rows with no included class: -inf - -inf, never summed
        log_p = pointwise.log_softmax(np.where(w2, x2, -np.inf))
        return np.asarray(-np.sum(y2 * log_p, axis=-1, where=w2), dtype=np.float64)


def _gather_like_jax(x: FloatArray, labels: npt.NDArray[np.integer[Any]]) -> FloatArray:
    """``take_along_axis`` with jax's defaults: negative labels wrap once, others out of range give NaN."""
    classes = x.shape[-1]
    lab = labels.astype(np.int64)
    lab = np.where(lab < 0, lab + classes, lab)
    inside = (lab >= 0) & (lab < classes)
    picked = np.take_along_axis(x, np.where(inside, lab, 0)[..., None], axis=-1)[..., 0]
    return np.where(inside, picked, np.nan)


def softmax_cross_entropy_with_integer_labels(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    axis: Axis = -1,
    where: npt.ArrayLike | None = None,
) -> FloatArray:
    r"""``optax.softmax_cross_entropy_with_integer_labels``: :math:`\operatorname{lse}_W(x) - x_y`.

    .. math::
        \ell = \log\sum_{c \in W} e^{x_c} - x_y

    :math:`W` = the included classes of the row (all, without ``where``); rows with empty
    :math:`W` give 0. :math:`x_y` is read even when ``y`` is not in :math:`W`.

    Parameters
    ----------
    logits : array_like of float
    labels : array_like of int
        Shape of ``logits`` without ``axis``; with a tuple ``axis``, a flat index into the
        slice of those axes.
    axis : int or tuple of ints, default -1
    where : array_like of bool, optional
        Row mask or class mask, as in :func:`softmax_cross_entropy`.

    Examples
    --------
    A label outside the class mask still reads its logit (optax 0.2.8 gives the same):

    >>> import numpy as np
    >>> from maskloss.conventions.optax import softmax_cross_entropy_with_integer_labels as sce
    >>> logits = np.array([[0.0, 0.0, 5.0]])
    >>> sce(logits, np.array([2]), where=np.array([[True, True, False]])).round(6)   # ln 2 - 5
    array([-4.306853])
    """
    x = _logits(logits)
    axes = _axes(axis, x.ndim)
    lab = as_numeric(labels, "labels")
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers (optax check_subdtype), got dtype {lab.dtype}")
    batch_shape = tuple(s for a, s in enumerate(x.shape) if a not in axes)
    if lab.shape != batch_shape:
        raise ValueError(
            f"labels must have the logits' shape without axis {axis!r}, {batch_shape}; got {lab.shape}"
        )
    w = _where(where, x.shape, axes)
    x2 = _classes_last(x, axes).astype(np.float64)
    w2 = None if w is None else _classes_last(w, axes)
    with np.errstate(invalid="ignore"):
        out = _logsumexp(x2, w2) - _gather_like_jax(x2, lab)
    if w2 is not None:
        out = np.where(np.any(w2, axis=-1), out, 0.0)
    return np.asarray(out, dtype=np.float64)


def _log_sigmoid(x: FloatArray) -> FloatArray:
    r"""``jax.nn.log_sigmoid``: :math:`-\operatorname{softplus}(-x) = -(\max(-x, 0) + \log(1 + e^{-|x|}))`."""
    with np.errstate(invalid="ignore", over="ignore"):
        out: FloatArray = -(np.maximum(-x, 0.0) + np.log1p(np.exp(-np.abs(x))))
    return out


def sigmoid_binary_cross_entropy(logits: npt.ArrayLike, labels: npt.ArrayLike) -> FloatArray:
    r"""``optax.sigmoid_binary_cross_entropy``: elementwise, no ``where``, no reduction.

    .. math:: \ell = -y \log\sigma(x) - (1 - y)\log\sigma(-x)

    with both logs from the stable ``log_sigmoid``; the products are plain, so an infinite
    logit with a label that gives its term a zero coefficient is NaN (``0 \cdot \infty``),
    as in optax. ``labels`` broadcast against ``logits`` (optax casts them to the logits'
    dtype); the result has the broadcast shape. Nothing is masked: select the valid
    elements afterwards (``np.where``), never multiply.

    Examples
    --------
    ln 2; then :math:`0.25 \log(1 + e^{-2}) + 0.75\,(2 + \log(1 + e^{-2}))`:

    >>> from maskloss.conventions.optax import sigmoid_binary_cross_entropy
    >>> sigmoid_binary_cross_entropy([0.0, 2.0], [1.0, 0.25]).round(6)
    array([0.693147, 1.626928])
    """
    x = _logits(logits).astype(np.float64)
    y = as_numeric(labels, "labels").astype(np.float64)
    try:
        np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        raise ValueError(f"labels of shape {y.shape} must broadcast against the logits' shape {x.shape}") from None
    with np.errstate(invalid="ignore"):
        return np.asarray(-y * _log_sigmoid(x) - (1.0 - y) * _log_sigmoid(-x), dtype=np.float64)


def _broadcast_labels(labels: npt.ArrayLike, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    y = as_numeric(labels, "labels")
    try:
        return np.broadcast_to(y, shape)
    except ValueError:
        raise ValueError(f"labels of shape {y.shape} must broadcast to the logits' shape {shape}") from None


def safe_softmax_cross_entropy(logits: npt.ArrayLike, labels: npt.ArrayLike) -> FloatArray:
    r"""``optax.safe_softmax_cross_entropy``: cross-entropy with :math:`0 \log 0 = 0`.

    .. math:: \ell = -\sum_{c:\, y_c \ne 0} y_c \log\operatorname{softmax}(x)_c


    Unlike :func:`softmax_cross_entropy`, a class with label 0 contributes exactly 0 even
    where its logit is :math:`-\infty` (optax's ``weighted_logsoftmax``). Classes on the
    last axis; no ``axis`` and no ``where`` (optax has neither here).

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.optax import safe_softmax_cross_entropy, softmax_cross_entropy
    >>> logits = np.array([[0.0, 0.0, -np.inf]])
    >>> labels = np.array([[1.0, 0.0, 0.0]])
    >>> safe_softmax_cross_entropy(logits, labels).round(6), softmax_cross_entropy(logits, labels)
    (array([0.693147]), array([nan]))
    """
    x = _logits(logits).astype(np.float64)
    y = _broadcast_labels(labels, x.shape).astype(np.float64)
    with np.errstate(invalid="ignore"):
        log_p = pointwise.log_softmax(x)
        return np.asarray(-np.sum(np.where(y != 0.0, y * log_p, 0.0), axis=-1), dtype=np.float64)


def poly_loss_cross_entropy(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    epsilon: npt.ArrayLike = 2.0,
    axis: Axis = -1,
    where: npt.ArrayLike | None = None,
) -> FloatArray:
    r"""``optax.poly_loss_cross_entropy`` (Poly-1): cross-entropy plus :math:`\epsilon\sum_c y_c(1 - p_c)`.

    .. math::
        \ell = -\sum_{c \in W} y_c \log p_c + \epsilon \sum_{c \in W} y_c\,(1 - p_c),
        \qquad p = \operatorname{softmax}_W(x)

    (Leng et al. 2022; for one-hot labels the second sum is :math:`1 - p_y`). :math:`W` is
    the set of included classes, as in :func:`softmax_cross_entropy`, with one optax
    quirk: here ``where`` goes to ``jax.nn.softmax`` **without** being expanded on
    ``axis``, so it must broadcast against the logits by NumPy's rules; a row mask is
    passed as ``(..., 1)`` (a ``(B, T)`` mask for ``(B, T, C)`` logits fails in optax too).
    A row with no included class gives 0. ``labels`` must be floating point.

    Examples
    --------
    One-hot label on :math:`p_y = 1/2`: :math:`\ln 2 + 2 \cdot \tfrac12`.

    >>> import numpy as np
    >>> from maskloss.conventions.optax import poly_loss_cross_entropy
    >>> round(float(poly_loss_cross_entropy(np.zeros((1, 2)), np.array([[1.0, 0.0]]))[0]), 6)
    1.693147
    >>> where = np.array([[[True], [False]]])            # a row mask, shaped (B, T, 1)
    >>> poly_loss_cross_entropy(np.zeros((1, 2, 2)), np.array([[[1.0, 0.0], [0.0, 1.0]]]), where=where).round(6)
    array([[1.693147, 0.      ]])
    """
    x = _logits(logits)
    axes = _axes(axis, x.ndim)
    y = _broadcast_labels(labels, x.shape)
    if y.dtype.kind != "f":
        raise TypeError(f"labels must be floating point (optax check_subdtype), got dtype {y.dtype}")
    eps = as_numeric(epsilon, "epsilon").astype(np.float64)
    w: BoolArray | None = None
    if where is not None:
        given = as_numeric(where, "where")
        try:
            w = np.broadcast_to(given != 0, x.shape)
        except ValueError:
            raise ValueError(
                f"where of shape {given.shape} must broadcast against the logits' shape {x.shape} "
                f"(optax's poly_loss_cross_entropy does not expand a row mask on axis: pass it as "
                f"shape (..., 1))"
            ) from None
    cross_entropy = softmax_cross_entropy(x, y, axis=axis, where=w)
    x2 = _classes_last(x, axes).astype(np.float64)
    y2 = _classes_last(y, axes).astype(np.float64)
    with np.errstate(invalid="ignore"):
        if w is None:
            p = np.exp(pointwise.log_softmax(x2))
            one_minus_pt = np.sum(y2 * (1.0 - p), axis=-1)
        else:
            w2 = _classes_last(w, axes)
            p = np.where(w2, np.exp(pointwise.log_softmax(np.where(w2, x2, -np.inf))), 0.0)
            one_minus_pt = np.sum(y2 * (1.0 - p), axis=-1, where=w2)
    try:
        return np.asarray(cross_entropy + eps * one_minus_pt, dtype=np.float64)
    except ValueError:
        raise ValueError(
            f"epsilon of shape {eps.shape} must broadcast against the per-example losses {one_minus_pt.shape}"
        ) from None


def _kl_operands(a: npt.ArrayLike, b: npt.ArrayLike, names: tuple[str, str]) -> tuple[FloatArray, FloatArray]:
    """Both operands float (optax's ``check_subdtype``), broadcast together, as float64."""
    x, y = as_numeric(a, names[0]), as_numeric(b, names[1])
    for arr, name in ((x, names[0]), (y, names[1])):
        if arr.dtype.kind in "biu":
            raise TypeError(f"{name} must be floating point (optax check_subdtype), got dtype {arr.dtype}")
    try:
        bx, by = np.broadcast_arrays(x.astype(np.float64), y.astype(np.float64))
    except ValueError:
        raise ValueError(f"{names[0]} {x.shape} and {names[1]} {y.shape} do not broadcast") from None
    return bx, by


def _sum_where(terms: FloatArray, axis: Axis | None, where: npt.ArrayLike | None) -> FloatArray:
    """``jnp.sum(terms, axis=axis, where=where)``: ``where`` broadcasts with numpy's rules (no expansion)."""
    axes = None if axis is None else _axes(axis, terms.ndim)
    if where is None:
        return np.asarray(np.sum(terms, axis=axes), dtype=np.float64)
    w = as_numeric(where, "where")
    try:
        keep = np.broadcast_to(w != 0, terms.shape)
    except ValueError:
        raise ValueError(
            f"where of shape {w.shape} must broadcast to the loss's shape {terms.shape} (optax sums with "
            f"jnp.sum(..., where=where), no expansion on axis: a row mask needs a trailing axis of 1)"
        ) from None
    return np.asarray(np.sum(terms, axis=axes, where=keep), dtype=np.float64)


def kl_divergence(
    log_predictions: npt.ArrayLike,
    targets: npt.ArrayLike,
    axis: Axis | None = -1,
    where: npt.ArrayLike | None = None,
) -> FloatArray:
    r"""``optax.kl_divergence``: :math:`\sum_{c \in W} y_c (\log y_c - \log\hat p_c)`, :math:`\log 0 := 0`.

    optax writes ``targets * (where(targets == 0, 0, log(targets)) - log_predictions)``, a
    plain product: a target of 0 on a log-prediction of :math:`-\infty` gives NaN
    (:math:`0 \cdot \infty`). ``log_predictions`` are used as given (not normalised).
    ``where`` (True = include) is ``jnp.sum``'s: it broadcasts with numpy's rules to the
    elements, so a ``(B, T)`` row mask needs a trailing axis, ``where[..., None]`` (a
    ``(B, T)`` mask against ``(B, T, C)`` elements raises, or with ``T == C`` silently
    masks classes). ``axis=None`` sums everything. The masked, NaN-safe KL is
    :func:`maskloss.kl_divergence`.

    Examples
    --------
    The numbers optax 0.2.8 returns for the same arrays (jax x64):

    >>> import numpy as np
    >>> from maskloss.conventions.optax import kl_divergence
    >>> log_p = np.log([[0.25, 0.75], [0.5, 0.5]])
    >>> targets = np.array([[0.5, 0.5], [np.nan, np.nan]])
    >>> kl_divergence(log_p, targets, where=np.array([[True], [False]])).round(12).tolist()
    [0.143841036226, 0.0]
    """
    lp, y = _kl_operands(log_predictions, targets, ("log_predictions", "targets"))
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = y * (np.where(y == 0, 0.0, np.log(np.where(y == 0, 1.0, y))) - lp)
    return _sum_where(terms, axis, where)


def kl_divergence_with_log_targets(
    log_predictions: npt.ArrayLike,
    log_targets: npt.ArrayLike,
    axis: Axis | None = -1,
    where: npt.ArrayLike | None = None,
) -> FloatArray:
    r"""``optax.kl_divergence_with_log_targets``: :math:`\sum_{c \in W} e^{\log y_c} (\log y_c - \log\hat p_c)`.

    A plain product, as optax writes it: a log-target of :math:`-\infty` against a
    log-prediction of :math:`-\infty` gives NaN (:math:`0 \cdot (-\infty + \infty)`).
    ``axis`` and ``where`` as in :func:`kl_divergence`.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.optax import kl_divergence_with_log_targets
    >>> kl_divergence_with_log_targets(np.log([[0.25, 0.75]]), np.log([[0.5, 0.5]])).round(12).tolist()
    [0.143841036226]
    """
    lp, lt = _kl_operands(log_predictions, log_targets, ("log_predictions", "log_targets"))
    with np.errstate(invalid="ignore", over="ignore"):
        terms = np.exp(lt) * (lt - lp)
    return _sum_where(terms, axis, where)


def generalized_kl_divergence(
    log_predictions: npt.ArrayLike,
    targets: npt.ArrayLike,
    axis: Axis | None = -1,
    where: npt.ArrayLike | None = None,
) -> FloatArray:
    r"""``optax.generalized_kl_divergence`` (optax >= 0.2.4), for unnormalised distributions.

    .. math:: \sum_{c \in W} y_c (\log y_c - \log\hat p_c) + \sum_{c \in W} (\hat p_c - y_c)

    (the Bregman divergence of :math:`x \log x - x`): :func:`kl_divergence` plus the
    difference of the masses, 0 for two distributions. ``axis`` and ``where`` as there.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions.optax import generalized_kl_divergence
    >>> generalized_kl_divergence(np.log([[1.0, 1.0]]), np.array([[0.5, 0.5]])).round(12).tolist()  # -log 2 + (2 - 1)
    [0.30685281944]
    """
    lp, y = _kl_operands(log_predictions, targets, ("log_predictions", "targets"))
    with np.errstate(over="ignore", invalid="ignore"):
        mass = _sum_where(np.exp(lp) - y, axis, where)
    return kl_divergence(lp, y, axis=axis, where=where) + mass


def convex_kl_divergence(
    log_predictions: npt.ArrayLike,
    targets: npt.ArrayLike,
    axis: Axis | None = -1,
    where: npt.ArrayLike | None = None,
) -> FloatArray:
    """``optax.convex_kl_divergence``: the deprecated name of :func:`generalized_kl_divergence`.

    optax 0.2.8 warns (``DeprecationWarning``) and returns the same numbers; so does this.
    """
    import warnings

    warnings.warn(
        "The function convex_kl_divergence is deprecated. Please use generalized_kl_divergence instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return generalized_kl_divergence(log_predictions, targets, axis=axis, where=where)
