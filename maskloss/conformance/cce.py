r"""Conformance of :mod:`maskloss.conventions.cce` with the installed Cut Cross-Entropy.

``cut_cross_entropy.linear_cross_entropy(..., impl="torch_compile")`` (the path that runs
on a CPU; the Triton ``"cce"`` kernel needs a GPU) is called on random embeddings and
classifiers with ignored targets, ``shift`` on and off, ``softcap`` on and off and the
three reductions; the values and the gradients with respect to ``e`` and ``c`` (of the
mean) are compared with :mod:`maskloss.conventions.cce` and
:func:`maskloss.linear.linear_cross_entropy_value_and_grad`.

CCE casts the logits to float32 (``logits.float()``), whatever the input dtype, so both
sides get the same float32 inputs and the tolerance is float32 rounding:
``2e-5 * max(1, |cce|)``. Every distinct call signature costs a ``torch.compile`` (about
20 s on the first call, a few seconds after), so the cases reuse a few shapes.
"""

from __future__ import annotations

import numpy as np

from maskloss.conformance import Tally, grad_of
from maskloss.conformance._result import ConformanceResult
from maskloss.conventions import cce as conv
from maskloss.linear import linear_cross_entropy_value_and_grad

FRAMEWORK = "cut-cross-entropy"
TOLERANCE = 2e-5
IGNORE = -100


def version() -> str | None:
    try:
        import torch
        from cut_cross_entropy import linear_cross_entropy  # noqa: F401
    except ImportError:
        return None
    from importlib.metadata import version as dist_version

    return f"{dist_version('cut-cross-entropy')} (torch {torch.__version__}, impl=torch_compile)"


def run(rng: np.random.Generator, n_cases: int) -> list[ConformanceResult]:
    import torch
    from cut_cross_entropy import linear_cross_entropy

    tallies = {name: Tally(TOLERANCE) for name in ("value", "gradient")}
    cases = max(1, min(n_cases, 6))  # each softcap/shift/reduction combination compiles once
    for case in range(cases):
        batch, steps, dim, vocab = 2, 7, 8, 37
        e = rng.normal(0.0, 1.0, (batch, steps, dim)).astype(np.float32)
        c = rng.normal(0.0, 1.0, (vocab, dim)).astype(np.float32)
        targets = rng.integers(0, vocab, (batch, steps))
        targets[rng.random((batch, steps)) < 0.3] = IGNORE
        if case == 0:
            targets[0, :] = IGNORE
        softcap = None if case % 2 == 0 else 4.0
        shift = case % 3 != 0
        for reduction in ("mean", "sum", "none"):
            theirs = linear_cross_entropy(
                torch.from_numpy(e), torch.from_numpy(c), torch.from_numpy(targets),
                softcap=softcap, reduction=reduction, shift=shift, impl="torch_compile",
            )
            ours = conv.linear_cross_entropy(e.astype(np.float64), c.astype(np.float64), targets,
                                             softcap=softcap, reduction=reduction, shift=shift)
            tallies["value"].compare(ours, theirs.detach().numpy(), f"{reduction}, shift={shift}, softcap={softcap}")
        et = torch.from_numpy(e).requires_grad_(True)
        ct = torch.from_numpy(c).requires_grad_(True)
        linear_cross_entropy(et, ct, torch.from_numpy(targets), softcap=softcap, shift=shift,
                             reduction="sum", impl="torch_compile").backward()
        _, (dh, dw, _) = linear_cross_entropy_value_and_grad(  # shift=1: d e is 0 at the last step
            e.astype(np.float64), c.astype(np.float64), targets, ignore_index=IGNORE, softcap=softcap,
            reduction="sum", shift=int(shift),
        )
        tallies["gradient"].compare(dh, grad_of(et), "d e")
        tallies["gradient"].compare(dw, grad_of(ct), "d c")
    ver = version() or "?"
    note = f"impl=torch_compile computes in float32; tol {TOLERANCE:g} x max(1, |cce|)"
    return [
        tally.result(FRAMEWORK, ver, f"linear_cross_entropy, {name}", cases, note) for name, tally in tallies.items()
    ]
