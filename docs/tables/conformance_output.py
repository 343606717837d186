"""``maskloss conformance`` run at build time with few cases: versions and largest errors.

A framework that is not installed is shown as such; the full run (50 cases each) is CI's
``maskloss conformance`` step. :func:`maskloss.conformance.run_all` runs each framework in
a Python process of its own, so the site shows the frameworks of the environment that
builds it; the docs extra installs none of them.
"""

from __future__ import annotations

from maskloss.conformance import run_all

SEED = 0
CASES = 3


def render() -> str:
    lines = [
        "| framework | version | convention | cases | max abs err | max rel err | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in run_all(SEED, CASES):
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
        f"Generated at build time by `maskloss.conformance.run_all(seed={SEED}, n_cases={CASES})`, "
        "one process per framework."
    )
    return "\n".join(lines) + "\n"

