"""``maskloss conformance`` run at build time with few cases: versions and largest errors.

A framework that is not installed is shown as such; the full run (50 cases each) is CI's
``maskloss conformance`` step. Each framework runs in its own Python process (torch and
TensorFlow loaded into one process abort it on this machine), so the site shows the
frameworks of the environment that builds it; the docs extra installs none of them.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

from maskloss.conformance import FRAMEWORK_MODULES, NOT_INSTALLABLE, NOT_INSTALLABLE_STATUS, FrameworkRun

ROOT = Path(__file__).resolve().parents[2]
CHILD = "import pickle, sys; from maskloss.conformance import run_one; " \
    "sys.stdout.buffer.write(pickle.dumps(run_one(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))"

SEED = 0
CASES = 3


def render() -> str:
    lines = [
        "| framework | version | convention | cases | max abs err | max rel err | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in run_all():
        if not run.results:
            detail = f" ({run.detail})" if getattr(run, "detail", None) else ""
            lines.append(f"| {run.framework} | {run.version or ''} | {run.status}{detail} | | | | |")
            continue
        for r in run.results:
            verdict = "pass" if r.passed else "**FAIL**"
            lines.append(
                f"| {run.framework} | {r.version} | `{r.convention}` | {r.cases} | {r.max_abs_error:.2g} "
                f"| {r.max_rel_error:.2g} | {verdict} |"
            )
    lines.append("")
    lines.append(
        f"Generated at build time by `maskloss.conformance.run_one(name, seed={SEED}, n_cases={CASES})`, "
        "one process per framework."
    )
    return "\n".join(lines) + "\n"


def run_all() -> list[FrameworkRun]:
    """:func:`maskloss.conformance.run_all`, each framework in a child process of this checkout."""
    runs = []
    for name in FRAMEWORK_MODULES:
        child = subprocess.run(
            [sys.executable, "-c", CHILD, name, str(SEED), str(CASES)],
            cwd=ROOT, capture_output=True, check=True, timeout=600,
        )
        runs.append(pickle.loads(child.stdout))
    runs += [FrameworkRun(name, name, None, NOT_INSTALLABLE_STATUS) for name in NOT_INSTALLABLE]
    return runs
