r"""Conformance of :mod:`maskloss.conventions.torch` with the installed torch (float64 tensors).

Each function of ``torch.nn.functional`` that the convention module mirrors is called on
the same random padded batches, in float64, with all three reductions; the padding of
index targets is ``ignore_index`` (-100) with NaN logits underneath, so a leak shows up
as NaN. The first case of the index-target functions has every step ignored (the NaN of
an empty ``"mean"``).

Tolerance: ``1e-12 * max(1, |torch|)`` per number. Both sides compute in float64 and
differ only in summation order and in algebraically equal forms (torch's
``(1-y)x - log_sigmoid(x)`` against the core's ``max(x, 0) - xy + log1p(e^{-|x|})``);
the observed errors are around 1e-15.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from maskloss.conformance import Tally, grad_of, random_mask
from maskloss.conformance._result import ConformanceResult
from maskloss.conventions import torch as conv
from maskloss.linear import linear_cross_entropy_value_and_grad

FRAMEWORK = "torch"
TOLERANCE = 1e-12
IGNORE = -100


def version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return str(torch.__version__)


def _shape(rng: np.random.Generator) -> tuple[int, int, int]:
    return int(rng.integers(1, 5)), int(rng.integers(1, 7)), int(rng.integers(2, 7))


def _class_weight(rng: np.random.Generator, classes: int) -> Any:
    return rng.uniform(0.0, 3.0, classes) if rng.random() < 0.5 else None


def _smoothing(rng: np.random.Generator) -> float:
    return float(rng.choice([0.0, 0.1, rng.uniform(0.0, 1.0)]))


def _index_batch(rng: np.random.Generator, first: bool) -> tuple[Any, Any]:
    """Logits in torch layout ``(B, C, T)`` and targets ``(B, T)``, -100 and NaN at padding."""
    batch, steps, classes = _shape(rng)
    mask = random_mask(rng, batch, steps) & (not first)
    logits = rng.normal(0.0, 3.0, (batch, steps, classes))
    logits[~mask] = np.nan
    labels = np.where(mask, rng.integers(0, classes, (batch, steps)), IGNORE)
    if rng.random() < 0.25:  # a 2-D input (N, C): the steps of the batch as rows
        return logits.reshape(-1, classes), labels.reshape(-1)
    return np.moveaxis(logits, -1, 1), labels


def _linear_case(rng: np.random.Generator, case: int, check: Callable[..., None], grads: Tally) -> None:
    """``F.linear_cross_entropy`` (reference and chunked paths): values, and gradients of the mean."""
    import torch
    import torch.nn.functional as F

    tokens, hidden, classes = int(rng.integers(1, 12)), int(rng.integers(1, 6)), int(rng.integers(2, 9))
    x = rng.normal(0.0, 1.0, (tokens, hidden))
    w = rng.normal(0.0, 1.0, (classes, hidden))
    b = rng.normal(0.0, 1.0, classes) if rng.random() < 0.5 else None
    y = np.where(rng.random(tokens) < 0.3, IGNORE, rng.integers(0, classes, tokens))
    if case == 0:
        y[:] = IGNORE
    x[y == IGNORE] = np.nan  # ignored rows are never read
    cw = _class_weight(rng, classes)
    eps = _smoothing(rng)
    # torch's chunked path (options) takes no label smoothing (it would warn and fall back).
    chunked = rng.random() < 0.5
    eps = 0.0 if chunked else eps
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=3) if chunked else None
    check("linear_cross_entropy", conv.linear_cross_entropy, F.linear_cross_entropy, x, w, y,
          linear_bias=b, weight=cw, label_smoothing=eps, options=options)
    if case == 0:
        return
    xt = torch.tensor(np.where(np.isnan(x), 0.0, x), requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    cw_t = None if cw is None else torch.as_tensor(cw)
    loss: Any = F.linear_cross_entropy(xt, wt, torch.as_tensor(y), linear_bias=bt, weight=cw_t, label_smoothing=eps)
    loss.backward()
    _, (dx, dw, db) = linear_cross_entropy_value_and_grad(
        x[None], w, y[None], bias=b, ignore_index=IGNORE, class_weight=cw, label_smoothing=eps
    )
    grads.compare(dx[0], grad_of(xt), "d input")
    grads.compare(dw, grad_of(wt), "d linear_weight")
    if bt is not None and db is not None:
        grads.compare(db, grad_of(bt), "d linear_bias")


def _kl_case(rng: np.random.Generator, tally: Tally) -> None:
    """``kl_div`` on log-probabilities against targets with exact zeros (and -inf inputs), every reduction."""
    import warnings

    import torch
    import torch.nn.functional as F

    batch, steps, classes = _shape(rng)
    log_p = torch.log_softmax(torch.as_tensor(rng.normal(0.0, 3.0, (batch * steps, classes))), dim=-1).numpy()
    q = rng.dirichlet(np.ones(classes), batch * steps)
    q[rng.random(q.shape) < 0.2] = 0.0  # xlogy(0, 0) = 0
    if rng.random() < 0.3:
        log_p[0, 0] = -np.inf  # 0 * -inf = NaN where the target is 0, inf where it is not
    log_target = bool(rng.random() < 0.5)
    with np.errstate(divide="ignore"):
        target = np.log(q) if log_target else q
    for reduction in ("none", "mean", "sum", "batchmean"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note that "mean" is not the KL
            theirs = F.kl_div(torch.as_tensor(log_p), torch.as_tensor(target), reduction=reduction,
                              log_target=log_target).numpy()
        ours = conv.kl_div(log_p, target, reduction=reduction, log_target=log_target)
        tally.compare(ours, theirs, f"kl_div, reduction={reduction!r}, log_target={log_target}")


def run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-offs cost 100x the arithmetic on a busy machine
    try:
        return _run(rng, n_cases)
    finally:
        torch.set_num_threads(threads)


def _run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    import torch
    import torch.nn.functional as F

    def t(x: Any) -> Any:
        return torch.as_tensor(x) if isinstance(x, np.ndarray) else x

    tallies: dict[str, Tally] = {}

    def check(
        name: str, ours: Callable[..., Any], theirs: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Call both with the same arguments (tensors for torch) under every reduction."""
        tally = tallies.setdefault(name, Tally(TOLERANCE))
        t_args = [t(a) for a in args]
        t_kwargs = {k: t(v) for k, v in kwargs.items()}
        for reduction in ("none", "mean", "sum"):
            expected = theirs(*t_args, reduction=reduction, **t_kwargs).numpy()
            actual = ours(*args, reduction=reduction, **kwargs)
            tally.compare(actual, expected, f"{name}, reduction={reduction!r}")

    for case in range(n_cases):
        x, y = _index_batch(rng, first=case == 0)
        cw = _class_weight(rng, x.shape[1])
        eps = _smoothing(rng)
        check("cross_entropy, index targets", conv.cross_entropy, F.cross_entropy, x, y, weight=cw,
              label_smoothing=eps)
        log_p = torch.log_softmax(torch.as_tensor(x), dim=1).numpy()
        check("nll_loss", conv.nll_loss, F.nll_loss, log_p, y, weight=cw)

        batch, steps, classes = _shape(rng)
        logits = rng.normal(0.0, 3.0, (batch, classes, steps))
        probs = rng.dirichlet(np.ones(classes), (batch, steps)).transpose(0, 2, 1)
        if rng.random() < 0.3:
            probs = rng.uniform(0.0, 1.0, probs.shape)  # soft targets that do not sum to 1
        check("cross_entropy, probability targets", conv.cross_entropy, F.cross_entropy, logits, probs,
              weight=_class_weight(rng, classes), label_smoothing=_smoothing(rng))

        shape = (batch, steps, classes)
        p = rng.uniform(0.0, 1.0, shape)
        p[rng.random(shape) < 0.1] = 0.0  # exact 0 and 1: the -100 clamp of the log
        p[rng.random(shape) < 0.1] = 1.0
        target = rng.uniform(0.0, 1.0, shape)
        target[rng.random(shape) < 0.3] = 1.0
        w = rng.uniform(0.0, 2.0, shape[-1:] if rng.random() < 0.5 else shape) if rng.random() < 0.6 else None
        check("binary_cross_entropy", conv.binary_cross_entropy, F.binary_cross_entropy, p, target, weight=w)
        z = rng.normal(0.0, 6.0, shape)
        pw = rng.uniform(0.1, 4.0, classes) if rng.random() < 0.5 else None
        check("binary_cross_entropy_with_logits", conv.binary_cross_entropy_with_logits,
              F.binary_cross_entropy_with_logits, z, target, weight=w, pos_weight=pw)

        a = rng.normal(0.0, 2.0, shape)
        b = rng.normal(0.0, 2.0, shape)
        mask = random_mask(rng, batch, steps)
        sw = np.broadcast_to(mask[..., None], shape).astype(np.float64) if rng.random() < 0.5 else None
        check("l1_loss", conv.l1_loss, F.l1_loss, a, b, weight=sw)
        check("mse_loss", conv.mse_loss, F.mse_loss, a, b, weight=sw)

        _linear_case(rng, case, check, tallies.setdefault("linear_cross_entropy, gradients", Tally(TOLERANCE)))
        _kl_case(rng, tallies.setdefault("kl_div (none/mean/sum/batchmean, log_target)", Tally(TOLERANCE)))

    ver = str(torch.__version__)
    note = f"float64; tol {TOLERANCE:g} x max(1, |torch|); reductions none/mean/sum"
    return [tally.result(FRAMEWORK, ver, name, n_cases, note) for name, tally in tallies.items()]
