r"""``maskloss conformance``: every convention of :mod:`maskloss.conventions` against the real framework.

The protocol
------------
Each framework has a module ``maskloss/conformance/<name>.py`` (``name`` in
:data:`FRAMEWORK_MODULES`) exposing

``FRAMEWORK: str``
    The display name, e.g. ``"torch"``.
``version() -> str | None``
    Imports the framework lazily and returns its version string (for example
    ``"2.13.0+cpu"``); ``None`` when it cannot be imported.
``run(rng: numpy.random.Generator, n_cases: int) -> list[ConformanceResult]``
    One :class:`~maskloss.conformance._result.ConformanceResult` per convention
    (function or mode) compared: ``n_cases`` random padded batches drawn with ``rng``
    (NumPy only: no hypothesis, so the command needs no test extras), each computed by
    :mod:`maskloss.conventions` and by the framework (in float64 where the framework
    supports it), recording the largest absolute and relative error and whether every
    compared number is within the tolerance.

The tolerance rule (:class:`Tally`): a pair (maskloss ``a``, framework ``b``) agrees when
both are NaN, or both are the same infinity, or
:math:`|a - b| \le \text{tol} \cdot \max(1, |b|)`: relative for large values, absolute
near 0. Each module states its ``tol`` in the result's ``note`` (about ``1e-12`` for
frameworks that compute in float64, float32 rounding for those that cannot).

:func:`run_all` runs each framework in a Python process of its own
(:func:`run_isolated`): frameworks cannot disturb one another there (Triton, which Cut
Cross-Entropy needs and TRL imports when present, and TensorFlow both register the same
LLVM options, and a process that loads both aborts), and a framework that kills its
process becomes a failing row instead of ending the run. The child imports the
conformance module with :mod:`importlib` only when it runs, so ``maskloss conformance``
needs no framework to start: a module missing from this checkout or a framework that is
not installed shows as ``not installed``; a crash in a framework becomes a failing row
carrying the error text. Every framework gets a fresh ``numpy.random.default_rng(seed)``,
so its cases do not depend on which others ran.

Examples
--------
>>> from maskloss.conformance import Tally
>>> t = Tally(tolerance=1e-12)
>>> t.compare([1.0, float("nan")], [1.0 + 1e-15, float("nan")])
>>> t.passed, t.max_abs_error > 0
(True, True)
>>> t.compare(2.0, float("nan"))      # NaN on one side only never agrees
>>> t.passed
False
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss.conformance._result import ConformanceResult

__all__ = [
    "DEFAULT_CASES",
    "FRAMEWORK_MODULES",
    "NOT_INSTALLABLE",
    "ConformanceResult",
    "FrameworkRun",
    "Tally",
    "exit_code",
    "format_table",
    "grad_of",
    "nothing_checked",
    "random_mask",
    "run_all",
    "run_isolated",
    "run_one",
    "to_json",
]

#: Conformance modules, in table order; each may be missing or its framework absent.
FRAMEWORK_MODULES: tuple[str, ...] = (
    "torch", "optax", "keras3", "tf_keras", "hf", "trl", "cce", "litgpt", "torchtune",
)
#: Frameworks whose conventions are checked against golden numbers in the tests instead.
NOT_INSTALLABLE: tuple[str, ...] = ("keras2", "tfa", "allennlp", "fairseq", "t5x", "verl")
#: Random batches per convention when ``--cases`` is not given.
DEFAULT_CASES = 50

NOT_INSTALLED = "not installed"
NOT_INSTALLABLE_STATUS = "not installable here: golden numbers in the tests"


def grad_of(tensor: Any) -> Any:
    """The gradient a framework accumulated on a leaf tensor (torch's ``.grad``), as NumPy."""
    return tensor.grad.numpy()


class Tally:
    """Running maximum of the errors between maskloss and a framework, under one tolerance.

    Parameters
    ----------
    tolerance : float
        A pair agrees when both are NaN, both are the same infinity, or
        ``|ours - theirs| <= tolerance * max(1, |theirs|)``.
    """

    def __init__(self, tolerance: float) -> None:
        self.tolerance = float(tolerance)
        self.max_abs_error = 0.0
        self.max_rel_error = 0.0
        self.passed = True
        self.compared = 0
        self.first_failure = ""

    def compare(self, ours: npt.ArrayLike, theirs: npt.ArrayLike, what: str = "") -> None:
        """Compare two numbers or arrays of one shape and update the maxima."""
        a = np.asarray(ours, dtype=np.float64)
        b = np.asarray(theirs, dtype=np.float64)
        if a.shape != b.shape:
            self._fail(f"{what}: shape {a.shape} (maskloss) vs {b.shape} (framework)")
            self.max_abs_error = self.max_rel_error = float("inf")
            return
        self.compared += a.size
        same = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            diff = np.where(same, 0.0, np.abs(a - b))
            diff = np.where(np.isnan(diff), np.inf, diff)
            rel = np.where(diff == 0, 0.0, diff / np.abs(b))
            rel = np.where(np.isnan(rel), np.inf, rel)
            bad = diff > self.tolerance * np.maximum(1.0, np.abs(np.where(np.isfinite(b), b, 0.0)))
        if diff.size:
            self.max_abs_error = max(self.max_abs_error, float(np.max(diff)))
            self.max_rel_error = max(self.max_rel_error, float(np.max(rel)))
        if np.any(bad):
            i = int(np.flatnonzero(bad.ravel())[0])
            self._fail(f"{what}: maskloss {a.ravel()[i].item()!r} vs framework {b.ravel()[i].item()!r}")

    def _fail(self, text: str) -> None:
        if self.passed:
            self.first_failure = text
        self.passed = False

    def result(
        self, framework: str, version: str, convention: str, cases: int, note: str = ""
    ) -> ConformanceResult:
        """The :class:`ConformanceResult` of everything compared so far."""
        parts = [note] if note else []
        if not self.passed:
            parts.append(f"first disagreement: {self.first_failure}")
        if self.compared == 0:
            parts.append("nothing compared")
        return ConformanceResult(
            framework=framework,
            version=version,
            convention=convention,
            cases=cases,
            max_abs_error=self.max_abs_error,
            max_rel_error=self.max_rel_error,
            tolerance=self.tolerance,
            passed=self.passed and self.compared > 0,
            note="; ".join(parts),
        )


@dataclass(frozen=True)
class FrameworkRun:
    """The outcome of one framework: its status and the results of its conventions.

    ``status`` is ``"ok"`` (every result passed), ``"FAIL"`` (some did not, or the run
    crashed: then ``detail`` holds the error), ``"not installed"`` or
    ``"not installable here: golden numbers in the tests"``.
    """

    name: str
    framework: str
    version: str | None
    status: str
    results: tuple[ConformanceResult, ...] = field(default_factory=tuple)
    detail: str = ""

    @property
    def installed(self) -> bool:
        return self.status in ("ok", "FAIL")

    @property
    def passed(self) -> bool:
        """True unless the framework is installed and disagrees (or crashed)."""
        return self.status != "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "framework": self.framework,
            "version": self.version,
            "status": self.status,
            "detail": self.detail,
            "results": [r.as_dict() for r in self.results],
        }


def random_mask(rng: np.random.Generator, batch: int, steps: int) -> npt.NDArray[np.bool_]:
    """A ``(batch, steps)`` mask (True = valid): right, left or arbitrary padding; rows may be empty."""
    style = rng.integers(3)
    if style == 2:
        return np.asarray(rng.random((batch, steps)) < 0.7)
    lengths = rng.integers(0, steps + 1, size=batch)
    t = np.arange(steps)
    if style == 0:
        return np.asarray(t[None, :] < lengths[:, None])
    return np.asarray(t[None, :] >= steps - lengths[:, None])


def _crash_row(framework: str, version: str, exc: BaseException) -> ConformanceResult:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    nan = float("nan")
    return ConformanceResult(framework, version, "(run crashed)", 0, nan, nan, nan, False, text)


def _crashed(name: str, framework: str, version: str | None, exc: BaseException) -> FrameworkRun:
    row = _crash_row(framework, version or "?", exc)
    return FrameworkRun(name, framework, version, "FAIL", (row,), detail=row.note)


#: Lines of TensorFlow's C++ (absl) start-up log: CUDA probing, ``cuInit`` errors, oneDNN and
#: CPU-feature notes. They are written to file descriptor 2 before any setting can stop them.
_FRAMEWORK_NOISE = re.compile(
    r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)


@contextlib.contextmanager
def _quiet_frameworks() -> Iterator[None]:
    """Drop TensorFlow's C++ start-up noise from stderr while a framework runs; keep the rest.

    File descriptor 2 goes to a temporary file for the duration, then every line that is
    not framework noise is written back to stderr (Python warnings and real errors stay).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # what older TensorFlow obeys
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to protect
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not _FRAMEWORK_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def run_one(name: str, seed: int = 0, n_cases: int = DEFAULT_CASES) -> FrameworkRun:
    """Run the conformance module ``maskloss.conformance.<name>``, catching what can go wrong."""
    with _quiet_frameworks():
        return _run_one(name, seed, n_cases)


def _run_one(name: str, seed: int, n_cases: int) -> FrameworkRun:
    module_name = f"{__name__}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return FrameworkRun(name, name, None, NOT_INSTALLED, detail="no conformance module here")
        return _crashed(name, name, None, exc)
    framework = str(getattr(module, "FRAMEWORK", name))
    try:
        version = module.version()
    except Exception as exc:  # a framework that is installed but broken
        return _crashed(name, framework, None, exc)
    if version is None:
        return FrameworkRun(name, framework, None, NOT_INSTALLED)
    try:
        results = tuple(module.run(np.random.default_rng(seed), n_cases))
    except Exception as exc:
        return _crashed(name, framework, version, exc)
    ok = bool(results) and all(r.passed for r in results)
    return FrameworkRun(name, framework, version, "ok" if ok else "FAIL", results,
                        detail="" if results else "the module compared nothing")


#: What a child process of :func:`run_isolated` runs: :func:`run_one`, pickled to a file.
_CHILD = (
    "import pickle, sys\n"
    "from maskloss.conformance import run_one\n"
    "run = run_one(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))\n"
    "with open(sys.argv[4], 'wb') as f:\n"
    "    pickle.dump(run, f)\n"
)
#: Seconds one framework may take in its child process before it counts as a failure.
CHILD_TIMEOUT = 1800.0


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _died(name: str, why: str) -> FrameworkRun:
    nan = float("nan")
    row = ConformanceResult(name, "?", "(child process died)", 0, nan, nan, nan, False, why)
    return FrameworkRun(name, name, None, "FAIL", (row,), detail=why)


def run_isolated(
    name: str, seed: int = 0, n_cases: int = DEFAULT_CASES, *, timeout: float = CHILD_TIMEOUT
) -> FrameworkRun:
    """:func:`run_one` in a fresh Python process of this interpreter and this maskloss.

    The child's output goes to this process's stderr (after :func:`run_one` has dropped
    TensorFlow's start-up noise), never to stdout, so the table and ``--json`` stay clean.
    A child that dies (a signal, an exit before it reports) or runs past ``timeout``
    seconds gives a ``"FAIL"`` run whose detail says how it ended and its last stderr lines.
    """
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="maskloss-conformance-") as tmp:
        report = Path(tmp) / "run.pickle"
        command = [sys.executable, "-c", _CHILD, name, str(seed), str(n_cases), str(report)]
        try:
            child = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                   text=True, errors="replace", timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return _died(name, f"the child process ran past {timeout:g} s and was stopped")
        output = child.stdout + child.stderr
        if output.strip():
            sys.stderr.write(output if output.endswith("\n") else output + "\n")
        if child.returncode == 0 and report.exists():
            with report.open("rb") as f:
                run: FrameworkRun = pickle.load(f)
            return run
    if child.returncode < 0:
        try:
            how = f"signal {signal.Signals(-child.returncode).name}"
        except ValueError:
            how = f"signal {-child.returncode}"
        why = f"the child process was killed by {how}"
    else:
        why = f"the child process exited with code {child.returncode} before reporting"
    tail = _tail(child.stderr)
    return _died(name, f"{why}; its last stderr lines: {tail}" if tail else why)


def run_all(
    seed: int = 0,
    n_cases: int = DEFAULT_CASES,
    *,
    isolate: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[FrameworkRun]:
    """Run every module of :data:`FRAMEWORK_MODULES`, then list :data:`NOT_INSTALLABLE`.

    Each framework runs in a process of its own (:func:`run_isolated`) unless ``isolate``
    is False (then all run in this process, in turn: quicker to start, but Triton and
    TensorFlow in one process abort it). ``progress``, when given, receives one line
    before and after each framework (the command line prints them on stderr).

    Returns one :class:`FrameworkRun` per framework, in table order.
    """
    if isinstance(n_cases, bool) or not isinstance(n_cases, int) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive int, got {n_cases!r}")
    runs = []
    for i, name in enumerate(FRAMEWORK_MODULES, 1):
        if progress is not None:
            progress(f"[{i}/{len(FRAMEWORK_MODULES)}] {name} ...")
        start = time.perf_counter()
        run = run_isolated(name, seed, n_cases) if isolate else run_one(name, seed, n_cases)
        if progress is not None:
            progress(f"[{i}/{len(FRAMEWORK_MODULES)}] {name}: {run.status} "
                     f"({len(run.results)} conventions, {time.perf_counter() - start:.1f} s)")
        runs.append(run)
    runs += [FrameworkRun(name, name, None, NOT_INSTALLABLE_STATUS) for name in NOT_INSTALLABLE]
    return runs


def exit_code(runs: list[FrameworkRun], *, allow_none: bool = False) -> int:
    """0 when every installed framework agrees, else 1.

    A run in which no framework was installed checked nothing: it exits 1 too, unless
    ``allow_none`` (the ``--allow-none`` option).
    """
    if not all(r.passed for r in runs):
        return 1
    return 1 if nothing_checked(runs) and not allow_none else 0


def _num(x: float) -> str:
    return "-" if x != x else f"{x:.1e}"


#: Width the table fits in (an 80-100 column terminal); longer conventions wrap.
TABLE_WIDTH = 100


def nothing_checked(runs: list[FrameworkRun]) -> bool:
    """True when no framework was installed, so nothing was compared at all."""
    return not any(r.installed for r in runs)


def format_table(runs: list[FrameworkRun], *, seed: int, n_cases: int, allow_none: bool = False) -> str:
    """The plain-text table that ``maskloss conformance`` prints, at most :data:`TABLE_WIDTH` wide.

    One section per framework (its name and version on a line of its own), one row per
    convention under it; a framework without results gets one line with its status.
    """
    header = ("convention", "cases", "abs err", "rel err", "tol", "result")
    rows = [
        (r.convention, str(r.cases), _num(r.max_abs_error), _num(r.max_rel_error), _num(r.tolerance),
         "pass" if r.passed else "FAIL")
        for run in runs for r in run.results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    indent = "  "
    rest = sum(widths[1:]) + 2 * (len(header) - 1)
    widths[0] = max(min(widths[0], TABLE_WIDTH - len(indent) - rest), len(header[0]))

    def line(cells: tuple[str, ...]) -> list[str]:
        first, *others = textwrap.wrap(cells[0], widths[0]) or [""]
        out = [indent + "  ".join(c.ljust(w) for c, w in zip((first, *cells[1:]), widths, strict=True)).rstrip()]
        out += [indent + "  " + more for more in others]  # a long convention continues below
        return out

    lines = [f"maskloss conformance: seed {seed}, {n_cases} random padded batches per convention; "
             "largest errors", ""]
    lines += [
        "A convention passes when every number compared (values and, where checked, gradients) has",
        "    |maskloss - framework| <= tol * max(1, |framework|),",
        "that is an absolute error within tol near 0 and a relative error within tol above 1.",
        "The columns show the largest absolute and relative error over all of them.",
        "",
    ]
    lines += line(header) + line(tuple("-" * w for w in widths))
    notes: list[str] = []
    for run in runs:
        label = f"{run.framework} {run.version}" if run.version else run.framework
        if not run.results:
            status = f"{run.status} ({run.detail})" if run.detail else run.status
            lines += textwrap.wrap(f"{label}  {status}{'' if run.passed else '  FAIL'}", TABLE_WIDTH,
                                   subsequent_indent=indent)
            continue
        lines.append(label)
        for r in run.results:
            lines += line((r.convention, str(r.cases), _num(r.max_abs_error), _num(r.max_rel_error),
                           _num(r.tolerance), "pass" if r.passed else "FAIL"))
            if not r.passed and r.note:
                notes.append(f"{label} / {r.convention}: {r.note}")
    lines.append("")
    if not all(r.passed for r in runs):
        lines.append("DISAGREEMENT: see the FAIL rows")
    elif nothing_checked(runs):
        lines += textwrap.wrap(
            "NOTHING CHECKED: no framework is installed (maskloss[frameworks])"
            + ("; allowed by --allow-none" if allow_none else "; --allow-none accepts that"),
            TABLE_WIDTH,
            break_on_hyphens=False,
        )
    else:
        lines.append("every installed framework agrees")
    for note in notes:
        lines += textwrap.wrap(note, TABLE_WIDTH, subsequent_indent=indent)
    return "\n".join(lines)


def to_json(runs: list[FrameworkRun], *, seed: int, n_cases: int) -> str:
    """The ``--json`` output: seed, cases, overall verdict and every framework's results."""

    def clean(x: Any) -> Any:  # JSON has no NaN/inf: write them as strings
        if isinstance(x, float) and not np.isfinite(x):
            return str(x)
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    payload = {
        "seed": seed,
        "cases": n_cases,
        "ok": exit_code(runs) == 0,
        "nothing_checked": nothing_checked(runs),
        "frameworks": [r.as_dict() for r in runs],
    }
    return json.dumps(clean(payload), indent=2)
