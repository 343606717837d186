r"""Conformance of :mod:`maskloss.conventions.optax` with the installed optax (jax, x64).

Both cross-entropies are compared per example (optax does not reduce) on random
padded batches of logits ``(B, T, C)`` (the class axis sometimes moved to axis 1), in
three ``where`` modes: none, a ``(B, T)`` row mask with NaN logits (and out-of-range
labels) under it, and a ``(B, T, C)`` class mask that may exclude every class of a row
or the label's own class. jax runs inside ``jax.enable_x64(True)``, so both sides are
float64; the setting is restored afterwards.

Tolerance: ``1e-12 * max(1, |optax|)`` per number (same formulas, summation order only).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maskloss.conformance import Tally, random_mask
from maskloss.conformance._result import ConformanceResult
from maskloss.conventions import optax as conv

FRAMEWORK = "optax"
TOLERANCE = 1e-12
#: A few fixed shapes: jax compiles every operation once per shape, so random shapes would
#: spend minutes compiling; the masks, not the shapes, carry the variety.
SHAPES = ((4, 6, 5), (1, 3, 2))
MODES = ("no where", "where = row mask", "where = class mask")
KL_FUNCTIONS = ("kl_divergence", "kl_divergence_with_log_targets", "generalized_kl_divergence")
#: optax's KLs sum with ``jnp.sum(..., where=where)``: a row mask is ``(B, T, 1)``, broadcast by numpy's rules.
KL_MODES = ("no where", "where = (B, T, 1) row mask", "where = element mask")


def version() -> str | None:
    try:
        import jax
        import optax
    except ImportError:
        return None
    return f"{optax.__version__} (jax {jax.__version__})"


def _case(rng: np.random.Generator, mode: str) -> dict[str, Any]:
    batch, steps, classes = SHAPES[int(rng.integers(len(SHAPES)))]
    logits = rng.normal(0.0, 3.0, (batch, steps, classes))
    labels = rng.integers(0, classes, (batch, steps))
    soft = rng.dirichlet(np.ones(classes), (batch, steps))
    where: Any = None
    if mode == "where = row mask":
        where = random_mask(rng, batch, steps)
        logits[~where] = np.nan
        soft[~where] = np.nan
        labels = np.where(where, labels, 10**6)
    elif mode == "where = class mask":
        where = rng.random((batch, steps, classes)) < 0.7
        where[rng.random((batch, steps)) < 0.15] = False  # rows with no class at all
    axis = -1
    if rng.random() < 0.3:  # classes on axis 1
        axis = 1
        logits, soft = np.moveaxis(logits, -1, 1), np.moveaxis(soft, -1, 1)
        if where is not None and where.ndim == 3:
            where = np.moveaxis(where, -1, 1)
    return {"logits": logits, "labels": labels, "soft": soft, "where": where, "axis": axis}


def run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    import jax
    import jax.numpy as jnp
    import optax

    tallies = {
        (fn, mode): Tally(TOLERANCE)
        for fn in ("softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels", "poly_loss_cross_entropy")
        for mode in MODES
    }
    tallies[("sigmoid_binary_cross_entropy", "elementwise")] = Tally(TOLERANCE)
    tallies[("safe_softmax_cross_entropy", "-inf logits under labels of 0")] = Tally(TOLERANCE)
    for fn in KL_FUNCTIONS:
        for mode in KL_MODES:
            tallies[(fn, mode)] = Tally(TOLERANCE)
    with jax.enable_x64(True):
        # jit: one compilation per shape instead of per-operation dispatch (same XLA numerics)
        soft_ce = jax.jit(optax.softmax_cross_entropy, static_argnames=("axis",))
        int_ce = jax.jit(optax.softmax_cross_entropy_with_integer_labels, static_argnames=("axis",))
        for _ in range(n_cases):
            for mode in MODES:
                c = _case(rng, mode)
                where = None if c["where"] is None else jnp.asarray(c["where"])
                logits = jnp.asarray(c["logits"], dtype=jnp.float64)
                theirs = soft_ce(logits, jnp.asarray(c["soft"]), axis=c["axis"], where=where)
                ours = conv.softmax_cross_entropy(c["logits"], c["soft"], axis=c["axis"], where=c["where"])
                tallies[("softmax_cross_entropy", mode)].compare(ours, np.asarray(theirs), mode)
                theirs = int_ce(
                    logits, jnp.asarray(c["labels"]), axis=c["axis"], where=where
                )
                ours = conv.softmax_cross_entropy_with_integer_labels(
                    c["logits"], c["labels"], axis=c["axis"], where=c["where"]
                )
                tally = tallies[("softmax_cross_entropy_with_integer_labels", mode)]
                tally.compare(ours, np.asarray(theirs), mode)
        _run_more(rng, n_cases, optax, jax, jnp, tallies)
        _run_kl(rng, n_cases, optax, jax, jnp, tallies)
        ver = f"{optax.__version__} (jax {jax.__version__})"
    note = f"float64 (jax x64); per example; tol {TOLERANCE:g} x max(1, |optax|)"
    return [
        tally.result(FRAMEWORK, ver, f"{fn}, {mode}", n_cases, note) for (fn, mode), tally in tallies.items()
    ]


def _run_kl(rng: np.random.Generator, n_cases: int, optax: Any, jax: Any, jnp: Any,
            tallies: dict[tuple[str, str], Tally]) -> None:
    """The three KLs: log-predictions against targets with exact zeros, NaN under a row mask."""
    fns = {name: jax.jit(getattr(optax.losses, name)) for name in KL_FUNCTIONS}
    for _ in range(n_cases):
        batch, steps, classes = SHAPES[int(rng.integers(len(SHAPES)))]
        log_p = np.asarray(jax.nn.log_softmax(jnp.asarray(rng.normal(0.0, 3.0, (batch, steps, classes)))))
        q = rng.dirichlet(np.ones(classes), (batch, steps))
        q[rng.random(q.shape) < 0.2] = 0.0
        for mode in KL_MODES:
            where: Any = None
            if mode == "where = (B, T, 1) row mask":
                where = random_mask(rng, batch, steps)[..., None]
            elif mode == "where = element mask":
                where = rng.random(q.shape) < 0.7
            for name in KL_FUNCTIONS:
                with np.errstate(divide="ignore"):
                    second = np.log(q) if name == "kl_divergence_with_log_targets" else q.copy()
                if where is not None and where.shape[-1] == 1:
                    second[~np.broadcast_to(where, q.shape)] = np.nan  # never summed by optax's where
                theirs = fns[name](jnp.asarray(log_p), jnp.asarray(second),
                                   where=None if where is None else jnp.asarray(where))
                ours = getattr(conv, name)(log_p, second, where=where)
                tallies[(name, mode)].compare(ours, np.asarray(theirs), mode)


def _run_more(rng: np.random.Generator, n_cases: int, optax: Any, jax: Any, jnp: Any,
              tallies: dict[tuple[str, str], Tally]) -> None:
    """``sigmoid_binary_cross_entropy``, ``safe_softmax_cross_entropy``, ``poly_loss_cross_entropy``."""
    sigmoid = jax.jit(optax.sigmoid_binary_cross_entropy)
    safe = jax.jit(optax.safe_softmax_cross_entropy)
    poly = jax.jit(optax.losses.poly_loss_cross_entropy, static_argnames=("axis",))
    for _ in range(n_cases):
        batch, steps, classes = SHAPES[int(rng.integers(len(SHAPES)))]
        logits = rng.normal(0.0, 8.0, (batch, steps, classes))
        labels = rng.random((batch, steps, classes))
        tally = tallies[("sigmoid_binary_cross_entropy", "elementwise")]
        tally.compare(conv.sigmoid_binary_cross_entropy(logits, labels),
                      np.asarray(sigmoid(jnp.asarray(logits), jnp.asarray(labels))), "elementwise")
        soft = rng.dirichlet(np.ones(classes), (batch, steps))
        zero = rng.random(soft.shape) < 0.3
        soft = np.where(zero, 0.0, soft)
        with_inf = np.where(zero, -np.inf, logits)
        tally = tallies[("safe_softmax_cross_entropy", "-inf logits under labels of 0")]
        tally.compare(conv.safe_softmax_cross_entropy(with_inf, soft),
                      np.asarray(safe(jnp.asarray(with_inf), jnp.asarray(soft))), "-inf logits")
        for mode in MODES:
            where: Any = None
            if mode == "where = row mask":  # poly_loss needs the row mask as (..., 1)
                where = random_mask(rng, batch, steps)[..., None]
            elif mode == "where = class mask":
                where = rng.random((batch, steps, classes)) < 0.7
            epsilon = float(rng.choice([2.0, -1.0, 0.5]))
            kwargs: dict[str, Any] = {"epsilon": epsilon}
            theirs = poly(jnp.asarray(logits), jnp.asarray(soft), where=None if where is None else jnp.asarray(where),
                          **kwargs)
            ours = conv.poly_loss_cross_entropy(logits, soft, where=where, **kwargs)
            tallies[("poly_loss_cross_entropy", mode)].compare(ours, np.asarray(theirs), mode)
