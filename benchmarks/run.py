"""maskloss against torch float32/float64 and jax (jit): time, scaling, peak memory, floors.

Run from the repository root (writes ``benchmarks/README.md`` and ``benchmarks/vocab.png``)::

    python -m benchmarks                 # full sizes, 5 rounds
    python benchmarks/run.py --rounds 5 --scale 0.25
    python -m benchmarks --only check_loss --rounds 5   # one section, printed (README.md untouched)

Contenders are interleaved within each round (load from other processes spreads over all
of them); each cell is the median of the rounds, with min and max. Peak memory is measured
in a fresh subprocess per contender: peak RSS after the call minus peak RSS after the
inputs were built. No test asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import maskloss  # noqa: E402

HERE = os.path.join(ROOT, "benchmarks")


def lm_inputs(n: int, vocab: int, ignored: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, vocab), dtype=np.float32)
    labels = rng.integers(0, vocab, size=n)
    labels[rng.random(n) < ignored] = -100
    return labels, logits


#: maskloss's value_and_grad writing into a float64 gradient buffer allocated once (``out=``).
OUT_BUFFER = "maskloss (out= buffer)"


def contenders(
    kind: str, labels: np.ndarray, logits: np.ndarray, only: str | None = None
) -> dict[str, Callable[[], Any]]:
    """Zero-argument callables computing the token-mean sparse CE (``fwd``) or value and gradient (``vag``).

    With ``only``, just that contender is built (its setup, e.g. a float64 copy, costs no other's memory).
    """
    out: _Only = _Only(only)
    vg = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)
    if kind == "fwd":
        out["maskloss"] = lambda: maskloss.sparse_categorical_crossentropy(
            labels, logits, from_logits=True, ignore_index=-100)
    else:
        out["maskloss"] = lambda: vg(labels, logits, from_logits=True, ignore_index=-100)
        if out.wants(OUT_BUFFER):
            buffer = np.full(logits.shape, np.nan)  # float64, touched here: one gradient buffer for every call
            out[OUT_BUFFER] = lambda: vg(labels, logits, from_logits=True, ignore_index=-100, out=buffer)
    try:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        tl = torch.from_numpy(labels)
        for name, dtype in (("torch float32", torch.float32), ("torch float64", torch.float64)):
            if not out.wants(name):
                continue
            tx = torch.from_numpy(logits).to(dtype)
            if kind == "fwd":
                out[name] = lambda tx=tx: F.cross_entropy(tx, tl, ignore_index=-100).item()
            else:
                def fb(tx: Any = tx) -> Any:
                    x = tx.detach().requires_grad_(True)
                    loss = F.cross_entropy(x, tl, ignore_index=-100)
                    loss.backward()
                    return loss.item(), x.grad
                out[name] = fb
    except ImportError:
        pass
    try:
        import jax
        import jax.numpy as jnp

        def jloss(x: Any, y: Any) -> Any:
            valid = y != -100
            lp = jax.nn.log_softmax(x, axis=-1)
            picked = jnp.take_along_axis(lp, jnp.where(valid, y, 0)[:, None], axis=-1)[:, 0]
            return -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.sum(valid)

        if not out.wants("jax float32 (jit)"):
            raise ImportError  # skip building it
        jx, jy = jnp.asarray(logits), jnp.asarray(labels.astype(np.int32))
        f = jax.jit(jloss) if kind == "fwd" else jax.jit(jax.value_and_grad(jloss))
        jax.block_until_ready(f(jx, jy))  # compile outside the timing
        out["jax float32 (jit)"] = lambda: jax.block_until_ready(f(jx, jy))
    except ImportError:
        pass
    return out


class _Only(dict):  # type: ignore[type-arg]
    """A dict that drops every key but ``only`` (when given)."""

    def __init__(self, only: str | None) -> None:
        super().__init__()
        self.only = only

    def wants(self, name: str) -> bool:
        return self.only is None or self.only == name

    def __setitem__(self, key: str, value: Any) -> None:
        if self.wants(key):
            super().__setitem__(key, value)


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def cell(ts: list[float], unit: float = 1.0, fmt: str = "{:.3f}") -> str:
    med = statistics.median(ts) * unit
    return f"{fmt.format(med)} ({fmt.format(min(ts) * unit)}-{fmt.format(max(ts) * unit)})"


def floors(n_bytes: int, rounds: int) -> dict[str, float]:
    """Memory bandwidth (GB/s, copy of a large array) and float64 exp throughput (G/s), medians."""
    a = np.ones(n_bytes // 8)
    b = np.empty_like(a)
    e = np.linspace(-5, 0, 1 << 22)
    eo = np.empty_like(e)
    copy, exps = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        np.copyto(b, a)
        copy.append(time.perf_counter() - t)
        t = time.perf_counter()
        np.exp(e, out=eo)
        exps.append(time.perf_counter() - t)
    return {"copy_GBps": 2 * a.nbytes / statistics.median(copy) / 1e9,
            "exp_Gps": e.size / statistics.median(exps) / 1e9}


def _peak_rss_kib() -> int:
    """This process's peak RSS in KiB: ``VmHWM`` of ``/proc/self/status`` where there is one.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that over from the parent through
    fork and exec, so a child of the (large) benchmark process would start at its peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def memory_child(kind: str, name: str, n: int, vocab: int, ignored: float) -> None:
    labels, logits = lm_inputs(n, vocab, ignored)
    fns = contenders(kind, labels, logits, only=name)  # jax compiles here, before the baseline
    base = _peak_rss_kib()
    fns[name]()
    peak = _peak_rss_kib()
    print(json.dumps({"extra_MiB": (peak - base) / 1024}))


@functools.cache  # the targets table and the memory section share measurements
def peak_memory(kind: str, name: str, n: int, vocab: int, ignored: float) -> float:
    """Peak RSS growth during one call, in a fresh subprocess (inputs and jit compile before the baseline).

    The baseline is the peak after building the inputs and the contender (torch float64's
    copy of the logits, jax's compiled function), so the number is what the call itself adds.
    """
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from benchmarks.run import memory_child; "
            f"memory_child({kind!r}, {name!r}, {n}, {vocab}, {ignored})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return float(json.loads(out.stdout.strip().splitlines()[-1])["extra_MiB"])


MEMORY_HEADING = "## Peak extra memory"


def _gradient_mib(n: int) -> float:
    """Size of maskloss's float64 gradient of (n, 32000) logits, in MiB."""
    return n * 32000 * 8 / 2**20


def memory_section(n: int) -> str:
    """The markdown section of peak RSS growth per contender (fresh subprocess each)."""
    rows = [MEMORY_HEADING, "",
            f"Sparse CE on ({n}, 32000) float32 logits, 30% ignored: peak RSS during one call minus the peak "
            "after building the inputs and the contender, in a fresh subprocess per contender (MiB). "
            "The value_and_grad rows include the gradient returned (float64 for maskloss and torch float64, "
            f"{_gradient_mib(n):.0f} MiB; float32 for torch float32 and jax), except with `out=`, where "
            "the caller's buffer exists before the call. jax's compiling call runs before the baseline, "
            "and its allocator keeps what that call allocated, so its rows show only what a later call adds.", "",
            "| contender | forward | value and gradient |", "|---|---|---|"]
    names = ["maskloss", OUT_BUFFER, "torch float32", "torch float64", "jax float32 (jit)"]
    for name in names:
        cells = []
        for kind in ("fwd", "vag"):
            if name == OUT_BUFFER and kind == "fwd":
                cells.append("-")
                continue
            try:
                cells.append(f"{max(peak_memory(kind, name, n, 32000, 0.3), 0.0):.0f}")
            except (subprocess.CalledProcessError, ValueError, IndexError):
                cells.append("not installed")
        rows.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows) + "\n"


def small_calls(rounds: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(1)
    t, p = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    mask = rng.random((2, 5)) < 0.7
    reps = 2000

    def rep(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(reps):
                fn()
        return run

    def bare() -> Any:
        err = np.abs(t - p).mean(-1)
        return np.where(mask, err, 0.0).sum() / mask.sum()

    fns = {"maskloss.mae": rep(lambda: maskloss.mae(t, p, mask)), "bare NumPy expression": rep(bare)}
    times = interleaved(fns, rounds)
    return {k: [v / reps for v in ts] for k, ts in times.items()}


def regression_cases(rounds: int, scale: float) -> dict[str, dict[str, list[float]]]:
    shape = (max(1, int(64 * scale)), 2048, 256)
    rng = np.random.default_rng(2)
    t = rng.random(shape, dtype=np.float32)
    p = rng.random(shape, dtype=np.float32) * 0.98 + 0.01
    mask = rng.random(shape[:2]) < 0.7
    out: dict[str, dict[str, list[float]]] = {}
    for name, fn, torch_name in (("mae", maskloss.mae, "l1"), ("mse", maskloss.mse, "mse"),
                                 ("binary CE", maskloss.binary_crossentropy, "bce")):
        fns: dict[str, Callable[[], Any]] = {"maskloss": lambda fn=fn: fn(t, p, mask)}
        try:
            import torch
            import torch.nn.functional as F
            tt, tp, tm = torch.from_numpy(t), torch.from_numpy(p), torch.from_numpy(mask)
            per = {"l1": lambda a, b: (a - b).abs().mean(-1), "mse": lambda a, b: ((a - b) ** 2).mean(-1),
                   "bce": lambda a, b: F.binary_cross_entropy(b, a, reduction="none").mean(-1)}[torch_name]
            fns["torch float32"] = lambda per=per, tt=tt, tp=tp, tm=tm: (per(tt, tp)[tm].mean()).item()
        except ImportError:
            pass
        out[f"{name} {shape}"] = interleaved(fns, rounds)
    return out


CHECK_LOSS_HEADING = "## check_loss overhead"
CHECK_LOSS_EXAMPLES = 100


class _Stopwatch:
    """Seconds spent inside wrapped callables, by name (reset per check_loss call)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[what] = self.seconds.get(what, 0.0) + time.perf_counter() - start

        timed.__name__ = getattr(fn, "__name__", what)
        timed.unwrapped = fn  # type: ignore[attr-defined]
        return timed


@contextlib.contextmanager
def _timed_check_loss(watch: _Stopwatch) -> Iterator[None]:
    """Time check_loss's reference (its oracle and masked_totals), its examples and hypothesis's draws.

    The oracle is wrapped where check_loss resolves it, masked_totals where the properties
    build it, the test function where hypothesis's ``given`` receives it (and the special
    batches run after it: together "examples"), and the batch strategy in a composite that
    times each draw; all restored after.
    """
    from hypothesis import strategies as st

    import maskloss.testing.check as check
    import maskloss.testing.properties as properties

    names = [(check, "resolve"), (properties, "masked_totals"), (check, "padded_batches"), (check, "given"),
             (check, "_special_batches")]
    resolve, totals, batches, given, special = (getattr(module, name) for module, name in names)

    def timed_resolve(*args: Any, **kwargs: Any) -> Any:
        setup = resolve(*args, **kwargs)
        setup.oracle = watch.wrap("reference", setup.oracle)
        return setup

    def timed_totals(fn: Callable[..., Any]) -> Callable[..., Any]:
        return watch.wrap("reference", totals(getattr(fn, "unwrapped", fn)))

    def timed_batches(*args: Any, **kwargs: Any) -> Any:
        inner = batches(*args, **kwargs)

        @st.composite
        def drawn(draw: Any) -> Any:
            start = time.perf_counter()
            try:
                return draw(inner)
            finally:
                watch.seconds["drawing"] = watch.seconds.get("drawing", 0.0) + time.perf_counter() - start

        return drawn()

    def timed_given(*strategies: Any) -> Callable[[Callable[..., Any]], Any]:
        def decorate(test: Callable[..., Any]) -> Any:
            return given(*strategies)(functools.wraps(test)(watch.wrap("examples", test)))
        return decorate

    timed = [timed_resolve, timed_totals, timed_batches, timed_given, watch.wrap("examples", special)]
    for (module, name), fn in zip(names, timed, strict=True):
        setattr(module, name, fn)
    try:
        yield
    finally:
        for (module, name), fn in zip(names, [resolve, totals, batches, given, special], strict=True):
            setattr(module, name, fn)


def check_loss_cases(rounds: int) -> dict[str, dict[str, list[float]]]:
    """check_loss(candidate, maskloss.mae, max_examples=100) with a correct NumPy and a correct torch candidate.

    Per contender and round: total seconds, and the seconds inside the candidate, the
    reference, the examples and hypothesis's draws (wrappers around each).
    """
    from maskloss.testing import check_loss, torch_adapter

    watch = _Stopwatch()
    runs: dict[str, Callable[[int], None]] = {}

    def numpy_mae(y_true: Any, y_pred: Any, mask: Any) -> Any:
        return maskloss.mae(y_true, y_pred, mask)

    timed_numpy = watch.wrap("candidate", numpy_mae)
    runs["NumPy candidate (maskloss.mae)"] = lambda n: check_loss(timed_numpy, maskloss.mae, max_examples=n)
    try:
        import torch

        def torch_mae(y_true: Any, y_pred: Any, mask: Any) -> Any:
            per_step = torch.where(mask[..., None], (y_true - y_pred).abs(), 0.0).mean(-1)
            return per_step.sum() / mask.sum()

        timed_torch = watch.wrap("candidate", torch_mae)  # inside the adapter: conversions are overhead
        runs["torch candidate (torch_adapter)"] = lambda n: check_loss(
            timed_torch, maskloss.mae, adapter=torch_adapter, max_examples=n)
    except ImportError:
        pass
    parts = ("total", "candidate", "reference", "examples", "drawing")
    out: dict[str, dict[str, list[float]]] = {name: {k: [] for k in parts} for name in runs}

    def measured(name: str) -> Callable[[], None]:
        def run() -> None:
            watch.seconds = {}
            start = time.perf_counter()
            runs[name](CHECK_LOSS_EXAMPLES)
            out[name]["total"].append(time.perf_counter() - start)
            for k in parts[1:]:
                out[name][k].append(watch.seconds.get(k, 0.0))
        return run

    with _timed_check_loss(watch):
        for run in runs.values():
            run(5)  # imports and first-call setup outside the timing
        interleaved({name: measured(name) for name in runs}, rounds)
    return out


def check_loss_section(rounds: int) -> str:
    """The markdown section of check_loss's time, split into candidate, reference, draws and the rest."""
    cases = check_loss_cases(rounds)
    n = CHECK_LOSS_EXAMPLES
    rows = [CHECK_LOSS_HEADING, "",
            f"`check_loss(candidate, maskloss.mae, max_examples={n})` on its default batches (regression, up to "
            "4 sequences x 6 steps x 2-5 features), seconds per call, split by wrappers into: the candidate "
            "(the torch function itself: torch_adapter's NumPy/torch conversions count as overhead); the "
            "reference (maskloss's oracle and `masked_totals`); outside the examples (hypothesis drawing the "
            "batches, of which the drawing is shown, and its engine; check_loss's once-per-call setup). "
            f"Overhead per example: (total - candidate - reference) / {n}, in ms; check_loss's own: the time "
            "inside the examples (the properties, the special batches) minus candidate and reference, per "
            f"example. Medians of {rounds} interleaved rounds (min-max).", "",
            "| candidate | total s | candidate s | reference s | outside the examples s | of which drawing s "
            "| overhead / example ms | check_loss's own / example ms |", "|---|---|---|---|---|---|---|---|"]
    for name, t in cases.items():
        cand_ref = [c + r for c, r in zip(t["candidate"], t["reference"], strict=True)]
        outside = [a - e for a, e in zip(t["total"], t["examples"], strict=True)]
        rest = [(a - cr) / n for a, cr in zip(t["total"], cand_ref, strict=True)]
        own = [(e - cr) / n for e, cr in zip(t["examples"], cand_ref, strict=True)]
        rows.append(f"| {name} | {cell(t['total'])} | {cell(t['candidate'])} | {cell(t['reference'])} "
                    f"| {cell(outside)} | {cell(t['drawing'])} | {cell(rest, 1e3, '{:.2f}')} "
                    f"| {cell(own, 1e3, '{:.2f}')} |")
    if len(cases) < 2:
        rows.append("| torch candidate | torch not installed | | | | | | |")
    return "\n".join(rows) + "\n"


def linear_section(rounds: int) -> str:
    """Linear cross-entropy at (4096, 1024) x V = 32000, 128000 (benchmarks/linear.py): one round, it is slow."""
    from benchmarks.linear import section

    return section()


SECTIONS = {"check_loss": check_loss_section, "linear": linear_section}
LINEAR_HEADING = "## Linear cross-entropy"


def kept_linear_section(path: str) -> str:
    """The linear cross-entropy section of the README at ``path`` ('' if none): a full run keeps it.

    It is measured by ``--only linear`` (slow: minutes) and pasted in by hand, so a full run,
    which does not measure it, must not drop it.
    """
    if not os.path.exists(path):
        return ""
    with open(path) as f:  # closed at once: an unclosed file is a ResourceWarning (an error in the suite)
        text = f.read()
    if LINEAR_HEADING not in text:
        return ""
    rest = text.split(LINEAR_HEADING, 1)[1]
    return LINEAR_HEADING + rest.split("\n## ", 1)[0].rstrip() + "\n"


def _memory_target(n: int | None) -> str:
    """maskloss's peak extra memory beyond its inputs and its result (the gradient), in MiB."""
    if n is None:
        return "not measured (--no-memory)"
    forward = peak_memory("fwd", "maskloss", n, 32000, 0.3)
    beyond_gradient = peak_memory("vag", "maskloss", n, 32000, 0.3) - _gradient_mib(n)
    with_out = peak_memory("vag", OUT_BUFFER, n, 32000, 0.3)
    return (f"forward {max(forward, 0.0):.0f}; value_and_grad {max(beyond_gradient, 0.0):.0f} beyond its "
            f"float64 gradient, {max(with_out, 0.0):.0f} with `out=`")


def targets_section(
    main_times: dict[str, dict[str, list[float]]], small_ratio: float, memory_n: int | None = None
) -> list[str]:
    """Issue 10's targets against this run's medians (the how: docs/reference/speed.rst)."""
    def vs_torch(kind: str, name: str = "maskloss") -> str:
        times = main_times[kind]
        if "torch float32" not in times or name not in times:
            return "torch not installed"
        return f"{statistics.median(times[name]) / statistics.median(times['torch float32']):.2f}x"

    rows = ["## Against the targets", "",
            "How the oracle gets there without changing a bit: `docs/reference/speed.rst`.", "",
            "| target | this run |", "|---|---|",
            f"| sparse CE forward <= 0.8x torch float32 | {vs_torch('fwd')} |",
            f"| sparse CE value_and_grad <= 0.8x torch float32 forward + backward | {vs_torch('vag')} "
            f"(with `out=`: {vs_torch('vag', OUT_BUFFER)}) |",
            f"| masked MAE on (2, 5, 3) <= 3x the bare NumPy expression | {small_ratio:.1f}x |",
            f"| peak memory beyond inputs and result <= 256 MiB | {_memory_target(memory_n)} |", ""]
    return rows


def versions() -> str:
    parts = [f"Python {platform.python_version()}", f"numpy {np.__version__}"]
    for mod in ("torch", "jax"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            parts.append(f"{mod} not installed")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full batch sizes")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--only-memory", action="store_true", help="measure memory only; rewrite that section")
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run one section and print it (README.md untouched)")
    args = parser.parse_args(argv)
    if args.only:
        print(SECTIONS[args.only](max(5, args.rounds)))
        return
    if args.only_memory:
        n = max(64, int(8192 * args.scale))
        section = memory_section(n)
        path = os.path.join(HERE, "README.md")
        text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
        text = text.split(MEMORY_HEADING)[0].rstrip() + "\n\n" + section
        with open(path, "w") as fh:
            fh.write(text)
        print(section)
        return
    rounds, scale = max(5, args.rounds), args.scale
    n_main = max(64, int(8192 * scale))
    lines: list[str] = []
    load = os.getloadavg()
    t0 = time.time()

    labels, logits = lm_inputs(n_main, 32000, 0.3)
    main_times = {k: interleaved(contenders(k, labels, logits), rounds) for k in ("fwd", "vag")}
    del labels, logits
    small = small_calls(rounds)
    sweep_ignored: dict[float, dict[str, list[float]]] = {}
    for frac in (0.0, 0.3, 0.9):
        lab, lg = lm_inputs(max(64, int(4096 * scale)), 32000, frac)
        sweep_ignored[frac] = interleaved(contenders("fwd", lab, lg), rounds)
    sweep_vocab: dict[int, tuple[int, dict[str, list[float]]]] = {}
    for vocab in (1000, 32000, 128000):
        n = max(64, int(scale * (1 << 27) // vocab))
        lab, lg = lm_inputs(n, vocab, 0.3)
        valid = int(np.sum(lab != -100))
        sweep_vocab[vocab] = (valid, interleaved(contenders("fwd", lab, lg), rounds))
        del lab, lg
    regression = regression_cases(rounds, scale)
    check_section = check_loss_section(rounds)
    floor = floors(1 << 29, rounds)

    def ratio_row(times: dict[str, list[float]]) -> dict[str, str]:
        ref = statistics.median(times.get("torch float32", times["maskloss"]))
        return {k: f"{statistics.median(v) / ref:.2f}x" for k, v in times.items()}

    lines += ["# Benchmarks", "",
              "Written by `python -m benchmarks` (`benchmarks/run.py`); timings are not tests. Each cell: "
              f"median seconds of {rounds} interleaved rounds (min-max). Ratios are medians over torch float32.", "",
              f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores usable, {versions()}; "
              f"maskloss threads: {maskloss.get_num_threads()}; scale {scale}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}; run took {time.time() - t0:.0f} s.",
              f"1-minute load average at the start {load[0]:.1f} on {os.cpu_count()} cores: "
              + ("**a loaded, shared machine**; timings are noisy and inflated." if load[0] > 1.5 else "quiet."), "",
              f"Physical floor measured here: memory copy {floor['copy_GBps']:.1f} GB/s (read + write), "
              f"float64 exp {floor['exp_Gps']:.3f} G/s on one core.", ""]
    size = f"({n_main}, 32000) float32 logits, 30% ignored"
    for kind, title in (("fwd", "forward"), ("vag", "value and gradient (torch/jax: forward + backward)")):
        t = main_times[kind]
        ratios = ratio_row(t)
        lines += [f"## Sparse CE {title}: {size}", "", "| contender | seconds | vs torch float32 |",
                  "|---|---|---|"]
        for k, v in t.items():
            lines.append(f"| {k} | {cell(v)} | {ratios[k]} |")
        lines.append("")
    lines += ["## Small call: masked MAE on (2, 5, 3)", "", "| contender | microseconds |", "|---|---|"]
    for k, v in small.items():
        lines.append(f"| {k} | {cell(v, 1e6, '{:.1f}')} |")
    ratio = statistics.median(small["maskloss.mae"]) / statistics.median(small["bare NumPy expression"])
    lines += ["", f"maskloss / bare expression: {ratio:.1f}x.", ""]
    lines += targets_section(main_times, ratio, None if args.no_memory else n_main)
    lines += ["## Forward vs fraction ignored (V = 32000)", "", "| ignored | " + " | ".join(sweep_ignored[0.0]) + " |",
              "|---" * (len(sweep_ignored[0.0]) + 1) + "|"]
    for frac, t in sweep_ignored.items():
        lines.append(f"| {int(frac * 100)}% | " + " | ".join(cell(v) for v in t.values()) + " |")
    lines += ["", "## Forward vs vocabulary (30% ignored; time per valid token, ns)", "",
              "| vocab | " + " | ".join(sweep_vocab[1000][1]) + " |", "|---" * (len(sweep_vocab[1000][1]) + 1) + "|"]
    for vocab, (valid, t) in sweep_vocab.items():
        lines.append(f"| {vocab} | " + " | ".join(cell(v, 1e9 / valid, "{:.0f}") for v in t.values()) + " |")
    lines += ["", "![time per valid token vs vocabulary](vocab.png)", "",
              "## Regression and binary CE (token_mean, 30% masked, float32 inputs)", "",
              "| case | contender | seconds |", "|---|---|---|"]
    for case, t in regression.items():
        for k, v in t.items():
            lines.append(f"| {case} | {k} | {cell(v)} |")
    lines += ["", check_section]
    linear = kept_linear_section(os.path.join(HERE, "README.md"))
    if linear:
        lines.append(linear)
    if not args.no_memory:
        lines.append(memory_section(n_main))
    with open(os.path.join(HERE, "README.md"), "w") as fh:
        fh.write("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=80)
        vocabs = list(sweep_vocab)
        for name in sweep_vocab[1000][1]:
            ax.plot(vocabs, [statistics.median(sweep_vocab[v][1][name]) * 1e9 / sweep_vocab[v][0] for v in vocabs],
                    marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vocabulary size")
        ax.set_ylabel("ns per valid token (median)")
        ax.set_title("sparse CE forward")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(HERE, "vocab.png"))
    except ImportError:
        pass
    print("\n".join(lines))


if __name__ == "__main__":
    main()
