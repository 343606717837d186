"""Time value_and_grad against the forward pass alone: sparse CE on LM-sized logits.

Default: (16, 512, 32000) float32 logits (1 GiB), 30% of labels ignored (-100),
``from_logits=True``, ``reduction="token_mean"``. Reports, for the best of ``--repeat``
interleaved runs, wall and process CPU time of each and their ratio, with the 1-minute
load average (a shared machine skews wall times, CPU times much less), and the time to
allocate and write a fresh float64 array of the gradient's shape (a floor for any
function that returns the gradient). With ``--memory``, also the peak memory allocated
during one call of each, measured with tracemalloc (NumPy reports its buffers to it);
the float64 gradient alone is ``B*T*C*8`` bytes.

Run from the repository root::

    python benchmarks/bench_value_and_grad.py            # full size
    python benchmarks/bench_value_and_grad.py --shape 4 128 1000 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import maskloss
from maskloss.gradients import value_and_grad


def best_times(fns: list[Callable[[], Any]], repeat: int) -> list[tuple[float, float]]:
    """Best (wall, CPU) seconds of each function over ``repeat`` interleaved runs.

    Interleaving spreads load from other processes on a shared machine over all of them;
    process CPU time (user + system, this process only; NumPy is single-threaded here)
    is far less sensitive to that load than wall time.
    """
    best = [(float("inf"), float("inf"))] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return best


def peak_bytes(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(16, 512, 32000), metavar=("B", "T", "C"))
    parser.add_argument("--ignored", type=float, default=0.3, help="fraction of labels set to -100")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also measure peak memory with tracemalloc")
    args = parser.parse_args()
    batch, steps, classes = args.shape

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((batch, steps, classes), dtype=np.float32)
    labels = rng.integers(0, classes, size=(batch, steps))
    labels[rng.random((batch, steps)) < args.ignored] = -100
    options: dict[str, Any] = {"from_logits": True, "ignore_index": -100}

    def forward() -> Any:
        return maskloss.sparse_categorical_crossentropy(labels, logits, **options)

    def both() -> Any:
        return value_and_grad(maskloss.sparse_categorical_crossentropy)(labels, logits, **options)

    value, _ = both()
    assert value == forward()
    def floor() -> Any:
        """Allocate and write a float64 array of y_pred's shape: what returning any gradient costs."""
        out = np.zeros(logits.shape)
        out[...] = 1.0
        return out

    load_before = os.getloadavg()[0]
    t_forward, t_both, t_floor = best_times([forward, both, floor], args.repeat)
    load_after = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
          f"python {platform.python_version()}, load average {load_before:.1f} -> {load_after:.1f}")
    print(f"logits {logits.shape} {logits.dtype} ({logits.nbytes / 2**30:.2f} GiB), "
          f"{(labels == -100).mean():.1%} ignored, best of {args.repeat}")
    print("                    wall s    CPU s")
    print(f"forward         {t_forward[0]:9.3f} {t_forward[1]:8.3f}")
    print(f"value_and_grad  {t_both[0]:9.3f} {t_both[1]:8.3f}")
    print(f"ratio           {t_both[0] / t_forward[0]:9.2f} {t_both[1] / t_forward[1]:8.2f}")
    print(f"floor: write a new float64 array of y_pred's shape {t_floor[0]:9.3f} {t_floor[1]:8.3f}")
    if args.memory:
        m_forward, m_both = peak_bytes(forward), peak_bytes(both)
        grad_bytes = logits.size * 8
        print(f"peak forward        {m_forward / 2**20:10.1f} MiB")
        print(f"peak value_and_grad {m_both / 2**20:10.1f} MiB (the float64 gradient is "
              f"{grad_bytes / 2**20:.1f} MiB of it)")


if __name__ == "__main__":
    main()
