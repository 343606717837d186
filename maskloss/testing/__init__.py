r"""Test *your* masked loss against maskloss: tolerances, adapters and :func:`check_loss`.

:func:`check_loss` runs a user's loss (a fused kernel, a port from Keras to PyTorch,
a training loop's masked mean) on generated padded batches and compares it with the
maskloss oracle under a set of properties; on failure it raises an ``AssertionError``
naming the property, the two numbers and the smallest failing batch.
:func:`check_training_step` does the same for a whole training step split into micro-batches,
ranks, sequence and vocabulary shards.
:func:`assert_loss_close` is the comparison it uses, with tolerances chosen from the
precision the candidate computes in.

This package needs hypothesis (``pip install -e ".[test]"`` in a checkout); ``import maskloss``
never imports it. See ``docs/course/08-testing.md`` for a walk-through.

Tolerances
----------
The expected value is maskloss's float64 result **on the same (already rounded)
inputs** the candidate saw, so input rounding is not an error; what is left is the
candidate's own arithmetic and the rounding of its output.

==========  =========  ========  =======  ===================================================
dtype       eps        rtol      atol     reasoning
==========  =========  ========  =======  ===================================================
float64     2.2e-16    1e-10     1e-12    log-sum-exp and a sum over <= 1e5 terms lose at most
                                          ~1e3 eps; 1e-10 leaves headroom yet is ~1e6 times
                                          smaller than any convention difference (>= 1/n)
float32     1.2e-7     1e-5      1e-6     ~84 ulps: log-sum-exp of logits up to ~10 loses
                                          ~10 eps absolute per step, float32 sums lose
                                          ~sqrt(n) eps; atol covers losses near 0
float16     9.8e-4     4e-3      1e-3     4 ulps: rounding the output alone costs 0.5 ulp,
                                          float32 accumulation (what torch does) ~1 ulp more
bfloat16    7.8e-3     3.2e-2    1e-2     4 ulps, same reasoning; bfloat16 values travel as
                                          float32 arrays (NumPy has no bfloat16)
==========  =========  ========  =======  ===================================================

A candidate that accumulates in its low precision may need more. Fused-kernel projects
then use a relative rule instead (FlashAttention's tests: "numerical error at most
twice the numerical error of a PyTorch implementation"): pass ``reference_lowp=`` the
framework's own low-precision result and the check becomes
``|actual - expected| <= factor * |reference_lowp - expected| + atol``.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401  (check_loss needs it; fail early with an install hint)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "maskloss.testing needs hypothesis, which is not installed: pip install hypothesis "
        '(or, in a checkout of maskloss, pip install -e ".[test]")'
    ) from exc

from maskloss.testing.accumulation import AccumulationCheckError, check_accumulation
from maskloss.testing.adapters import jax_adapter, jax_grad, torch_adapter, torch_grad, torch_linear_grad
from maskloss.testing.aggregation import AggregationCheckError, check_aggregation
from maskloss.testing.bounds import Bounds
from maskloss.testing.check import check_loss
from maskloss.testing.properties import Finding, LossCheckError
from maskloss.testing.tolerances import TOLERANCES, assert_loss_close
from maskloss.testing.training_step import (
    StepResult,
    TrainingShard,
    TrainingStepCheckError,
    check_training_step,
    run_step,
)

__all__ = [
    "TOLERANCES",
    "AccumulationCheckError",
    "AggregationCheckError",
    "Bounds",
    "Finding",
    "LossCheckError",
    "StepResult",
    "TrainingShard",
    "TrainingStepCheckError",
    "assert_loss_close",
    "check_accumulation",
    "check_aggregation",
    "check_loss",
    "check_training_step",
    "jax_adapter",
    "jax_grad",
    "run_step",
    "torch_adapter",
    "torch_grad",
    "torch_linear_grad",
]
