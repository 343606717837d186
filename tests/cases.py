"""Generated loss cases shared by the core tests: one strategy, every loss and option.

A case holds the arguments of one maskloss loss call and knows how to run it and its
loop oracle. Padded steps hold garbage (NaN, inf, huge values, out-of-range labels) so
every comparison also checks that padding never leaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from hypothesis import strategies as st

import maskloss
from maskloss import strategies
from tests import oracles

KINDS = ("mae", "mse", "binary", "categorical", "sparse")
GARBAGE = (np.nan, np.inf, -np.inf, 1e300, -1e300)


@dataclass(frozen=True)
class Case:
    kind: str
    y_true: np.ndarray
    y_pred: np.ndarray
    mask: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def function(self) -> Any:
        return {
            "mae": maskloss.mae,
            "mse": maskloss.mse,
            "binary": maskloss.binary_crossentropy,
            "categorical": maskloss.categorical_crossentropy,
            "sparse": maskloss.sparse_categorical_crossentropy,
        }[self.kind]

    def run(self, reduction: str, **overrides: Any) -> Any:
        options = {**self.options, **overrides}
        return self.function(self.y_true, self.y_pred, self.mask, reduction=reduction, **options)

    def oracle(self) -> dict[str, Any]:
        opts = dict(self.options)
        if self.kind in ("mae", "mse"):
            return oracles.regression(self.kind, self.y_true, self.y_pred, self.mask, **opts)
        fn = {"binary": oracles.binary, "categorical": oracles.categorical, "sparse": oracles.sparse}
        fn = fn[self.kind]
        return fn(self.y_true, self.y_pred, self.mask, **opts)

    def with_arrays(self, **arrays: Any) -> Case:
        return replace(self, **arrays)


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def _array(draw: Any, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    flat = draw(st.lists(_floats(lo, hi), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return np.array(flat, dtype=np.float64).reshape(shape)


def masks(batch: int, steps: int, *, allow_empty_rows: bool = True) -> st.SearchStrategy[np.ndarray]:
    """Right-padded, left-padded or arbitrary ``(batch, steps)`` masks; rows may be empty.

    The public :func:`maskloss.strategies.masks` (shrinks to right padding, no padded step).
    """
    return strategies.masks(shape=(batch, steps), allow_empty_rows=allow_empty_rows)


def fill_garbage(draw: Any, arr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``arr`` with one garbage value drawn for all its masked steps."""
    junk = draw(st.sampled_from(GARBAGE))
    out = np.array(arr, dtype=np.float64, copy=True)
    out[~mask] = junk
    return out


@st.composite
def cases(
    draw: Any,
    kinds: tuple[str, ...] = KINDS,
    *,
    max_batch: int = 4,
    max_steps: int = 5,
    min_batch: int = 1,
    garbage: bool = True,
    weights: bool = True,
) -> Case:
    kind = draw(st.sampled_from(kinds))
    batch = draw(st.integers(min_batch, max_batch))
    steps = draw(st.integers(1, max_steps))
    width = draw(st.integers(1, 4))
    if kind in ("categorical", "sparse"):
        width = draw(st.integers(2, 5))
    mask = draw(masks(batch, steps))
    options: dict[str, Any] = {}
    if weights and draw(st.booleans()):
        per_step = draw(st.booleans())
        shape = (batch, steps) if per_step else (batch,)
        options["sample_weight"] = _array(draw, shape, 0.0, 3.0)
    from_logits = draw(st.booleans())
    if kind in ("mae", "mse"):
        y_true = _array(draw, (batch, steps, width), -5, 5)
        y_pred = _array(draw, (batch, steps, width), -5, 5)
    elif kind == "binary":
        y_true = _array(draw, (batch, steps, width), 0, 1)
        lo, hi = (-8.0, 8.0) if from_logits else (0.01, 0.99)
        y_pred = _array(draw, (batch, steps, width), lo, hi)
        options["from_logits"] = from_logits
        options["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.5]))
    else:
        lo, hi = (-8.0, 8.0) if from_logits else (0.01, 1.0)
        y_pred = _array(draw, (batch, steps, width), lo, hi)
        if not from_logits and draw(st.booleans()):
            y_pred = y_pred / y_pred.sum(axis=-1, keepdims=True)
        options["from_logits"] = from_logits
        options["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.3]))
        if weights and draw(st.booleans()):
            options["class_weight"] = _array(draw, (width,), 0.0, 3.0)
        n = batch * steps
        labels = np.array(draw(st.lists(st.integers(0, width - 1), min_size=n, max_size=n)), dtype=np.int64)
        labels = labels.reshape(batch, steps)
        if kind == "sparse":
            if draw(st.booleans()):
                options["ignore_index"] = -100
                ignored = np.array(
                    draw(st.lists(st.booleans(), min_size=batch * steps, max_size=batch * steps))
                ).reshape(batch, steps)
                labels = np.where(ignored, -100, labels)
            y_true = labels
        else:
            y_true = np.eye(width)[labels]
            if draw(st.booleans()):  # soft targets, not necessarily summing to 1
                y_true = _array(draw, (batch, steps, width), 0, 1)
    if garbage:
        y_pred = fill_garbage(draw, y_pred, mask)
        if kind == "sparse":
            junk = draw(st.sampled_from([10**6, -7, width]))
            y_true = np.where(mask, y_true, junk)
        else:
            y_true = fill_garbage(draw, y_true, mask)
        if "sample_weight" in options and options["sample_weight"].ndim == 2:
            junk = draw(st.sampled_from([np.nan, -1.0]))
            options["sample_weight"] = np.where(mask, options["sample_weight"], junk)
    return Case(kind, y_true, y_pred, mask, options)


def assert_matches(actual: Any, expected: Any, *, rtol: float = 1e-12, atol: float = 1e-12) -> None:
    """Compare with NaN == NaN (an all-masked mean must be NaN on both sides)."""
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
                               rtol=rtol, atol=atol, equal_nan=True)
