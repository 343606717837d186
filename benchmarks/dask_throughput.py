"""Valid tokens per second: in-memory loss, maskloss.dask on threads, and on a 2-process LocalCluster.

Run from the repository root: ``PYTHONPATH=. python benchmarks/dask_throughput.py [--batch B --time T --classes C]``.
Sparse cross-entropy from logits (float32), about half the steps valid; each path is timed
on the same arrays (best of ``--repeat``), and every result is checked against the in-memory value.
"""

from __future__ import annotations

import argparse
import time

import dask.array as da
import distributed
import numpy as np

import maskloss
import maskloss.dask

LOSS = maskloss.sparse_categorical_crossentropy


def best_of(repeat: int, fn):  # type: ignore[no-untyped-def]
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=512)
    parser.add_argument("--chunk-batch", type=int, default=16)
    parser.add_argument("--chunk-time", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    b, t, c = args.batch, args.time, args.classes
    logits = rng.normal(size=(b, t, c)).astype(np.float32)
    labels = rng.integers(0, c, size=(b, t))
    mask = np.arange(t) < rng.integers(0, t + 1, size=b)[:, None]
    tokens = int(mask.sum())
    steps = (args.chunk_batch, args.chunk_time)
    y_true, y_pred = da.from_array(labels, chunks=steps), da.from_array(logits, chunks=(*steps, c))
    m = da.from_array(mask, chunks=steps)
    lazy = maskloss.dask.evaluate(LOSS, y_true, y_pred, m, from_logits=True)

    seconds, expected = best_of(args.repeat, lambda: LOSS(labels, logits, mask, from_logits=True))
    rows = [("in-memory (NumPy)", seconds, expected)]
    seconds, value = best_of(args.repeat, lambda: lazy.compute(scheduler="threads"))
    rows.append(("maskloss.dask, threads", seconds, value))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster, distributed.Client(cluster) as client:
        # the blocks are moved to the workers once (persist), as a dataset read by the workers would be
        on_workers = client.persist([y_true, y_pred, m])
        distributed.wait(on_workers)
        lazy_cluster = maskloss.dask.evaluate(LOSS, *on_workers, from_logits=True)
        seconds, value = best_of(args.repeat, lambda: client.compute(lazy_cluster).result())
        rows.append(("maskloss.dask, 2-process cluster", seconds, value))
    print(f"B={b} T={t} C={c} float32 logits ({logits.nbytes / 2**20:.0f} MiB), {tokens} valid tokens, "
          f"dask blocks {steps}, best of {args.repeat}")
    print(f"{'path':<34} {'seconds':>8} {'valid tokens/s':>15} {'rel. diff':>10}")
    for name, sec, val in rows:
        rel = abs(float(val) - float(expected)) / abs(float(expected))
        print(f"{name:<34} {sec:8.3f} {tokens / sec:15.3g} {rel:10.1e}")


if __name__ == "__main__":
    main()
