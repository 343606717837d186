"""Linear cross-entropy (``maskloss.linear_cross_entropy``): time against the float64 GEMM floor, peak memory.

Run from the repository root (prints a markdown section; nothing is written)::

    python -m benchmarks --only linear            # (4096, 1024) hidden, V = 32000 and 128000
    python benchmarks/linear.py --tokens 512      # smaller, for a smoke run

The float64 GEMM floor is the time of the three products a value and gradient must do,
:math:`hW^\\top`, :math:`dz\\,W` and :math:`dz^\\top h`, in float64, in maskloss's own tiles
(the full float64 logits of V = 128000 would be 4 GiB). maskloss's value and gradient
recompute the logits once (four products), so about 4/3 of the floor is the best it can
do. Peak memory is measured in a fresh subprocess (peak RSS after the call minus the peak
after the inputs were built), then the float64 gradients it returns are subtracted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from maskloss.linear import (  # noqa: E402
    TOKEN_TILE,
    VOCAB_TILE,
    linear_cross_entropy,
    linear_cross_entropy_value_and_grad,
)

HIDDEN = 1024


def inputs(n: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, HIDDEN), dtype=np.float32)
    weight = (rng.standard_normal((vocab, HIDDEN), dtype=np.float32) / np.float32(32.0))
    labels = rng.integers(0, vocab, n)
    return hidden, weight, labels


def gemm_floor(hidden: np.ndarray, weight: np.ndarray) -> float:
    """Seconds of the three float64 products, tile by tile (the tiles of maskloss.linear)."""
    t0 = time.perf_counter()
    for r0 in range(0, hidden.shape[0], TOKEN_TILE):
        h64 = hidden[r0:r0 + TOKEN_TILE].astype(np.float64)
        dh = np.zeros_like(h64)
        for v0 in range(0, weight.shape[0], VOCAB_TILE):
            w64 = weight[v0:v0 + VOCAB_TILE].astype(np.float64)
            z = h64 @ w64.T            # the logits
            dh += z @ w64              # d_hidden (z stands in for the logits' gradient)
            _ = z.T @ h64              # d_weight
    return time.perf_counter() - t0


def contenders(hidden: np.ndarray, weight: np.ndarray, labels: np.ndarray, torch64: bool
               ) -> dict[str, Callable[[], Any]]:
    fns: dict[str, Callable[[], Any]] = {
        "maskloss value": lambda: linear_cross_entropy(hidden, weight, labels),
        "maskloss value_and_grad": lambda: linear_cross_entropy_value_and_grad(hidden, weight, labels),
    }
    try:
        import torch
    except ImportError:
        return fns
    dtypes = [("float32", torch.float32)] + ([("float64", torch.float64)] if torch64 else [])
    for name, dt in dtypes:
        h = torch.from_numpy(hidden).to(dt)
        w = torch.from_numpy(weight).to(dt)
        y = torch.from_numpy(labels)

        def value(h: Any = h, w: Any = w, y: Any = y) -> Any:
            with torch.no_grad():
                return torch.nn.functional.cross_entropy(h @ w.T, y)

        def value_and_grad(h: Any = h, w: Any = w, y: Any = y) -> Any:
            hh, ww = h.detach().requires_grad_(True), w.detach().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(hh @ ww.T, y)
            loss.backward()
            return loss, hh.grad, ww.grad

        fns[f"naive torch {name} value"] = value
        fns[f"naive torch {name} value_and_grad"] = value_and_grad
    return fns


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise OSError("no VmHWM in /proc/self/status")


def memory_child(n: int, vocab: int, grad: bool) -> None:
    hidden, weight, labels = inputs(n, vocab)
    base = _peak_rss_kib()
    if grad:
        linear_cross_entropy_value_and_grad(hidden, weight, labels)
    else:
        linear_cross_entropy(hidden, weight, labels)
    print(json.dumps({"extra_MiB": (_peak_rss_kib() - base) / 1024}))


def peak_extra_mib(n: int, vocab: int, grad: bool) -> float:
    """Peak RSS growth of one call beyond the float64 gradients it returns, in MiB (fresh subprocess)."""
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from benchmarks.linear import memory_child; "
            f"memory_child({n}, {vocab}, {grad})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    extra = float(json.loads(out.stdout.strip().splitlines()[-1])["extra_MiB"])
    gradients = (n * HIDDEN + vocab * HIDDEN) * 8 / 2**20 if grad else 0.0
    return extra - gradients


def section(n: int = 4096, vocabs: tuple[int, ...] = (32000, 128000), rounds: int = 1) -> str:
    import platform

    load = os.getloadavg()
    start = time.time()
    lines = ["## Linear cross-entropy: hidden (N, 1024) float32, weight (V, 1024) float32", "",
             f"N = {n}, no ignored token; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(start))}; "
             f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores usable, numpy {np.__version__}; "
             f"seconds (median of {rounds}); load average (1, 5, 15 min) at the start "
             f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on {os.cpu_count()} cores"
             + (" (**a loaded, shared machine**: timings are inflated)." if load[0] > 1.5 else "."), "",
             "| V | contender | seconds | vs float64 GEMM floor |", "|---|---|---|---|"]
    ratios: dict[int, float] = {}
    for vocab in vocabs:
        hidden, weight, labels = inputs(n, vocab)
        floor = statistics.median(gemm_floor(hidden, weight) for _ in range(rounds))
        lines.append(f"| {vocab} | float64 GEMM floor (3 products) | {floor:.2f} | 1.00x |")
        # naive torch float64 holds the (N, V) float64 logits and their gradient: 8 GiB at V = 128000
        for name, fn in contenders(hidden, weight, labels, torch64=vocab <= 32000).items():
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            if name == "maskloss value_and_grad":
                ratios[vocab] = t / floor
            lines.append(f"| {vocab} | {name} | {t:.2f} | {t / floor:.2f}x |")
        del hidden, weight, labels
    lines += ["", "Peak memory beyond the inputs and the float64 gradients returned (MiB, fresh subprocess):", "",
              "| V | value | value_and_grad |", "|---|---|---|"]
    peaks: list[float] = []
    for vocab in sorted({8000, *vocabs}):
        value_mib, grad_mib = peak_extra_mib(n, vocab, False), peak_extra_mib(n, vocab, True)
        peaks += [value_mib, grad_mib]
        lines.append(f"| {vocab} | {value_mib:.0f} | {grad_mib:.0f} |")
    end_load = os.getloadavg()
    lines += ["", f"Load average at the end {end_load[0]:.1f}, {end_load[1]:.1f}, {end_load[2]:.1f}; "
              f"the section took {time.time() - start:.0f} s.", "",
              "| target | this run | met |", "|---|---|---|"]
    for vocab, ratio in ratios.items():
        lines.append(f"| value_and_grad <= 1.5x the float64 GEMM floor, V = {vocab} | {ratio:.2f}x "
                     f"| {'yes' if ratio <= 1.5 else '**no**'} |")
    worst = max(peaks)
    lines.append(f"| peak extra memory <= 256 MiB | at most {worst:.0f} MiB | {'yes' if worst <= 256 else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128000])
    args = parser.parse_args(argv)
    print(section(args.tokens, tuple(args.vocab), args.rounds))


if __name__ == "__main__":
    main()
