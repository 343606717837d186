"""The framework conventions, derived from the code of :mod:`maskloss.conventions`.

For every convention module: its one-line summary and each public function with the first line of
its docstring, read from the modules at build time, so the table lists exactly what the code has.
"""

from __future__ import annotations

import importlib
import inspect

from maskloss.conventions import MODULES


def _summary(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n", 1)[0].split()).replace("|", "\\|")


def rows() -> list[tuple[str, str, str]]:
    """(module, function, summary) for every public function of every convention module."""
    out = []
    for name in MODULES:
        module = importlib.import_module(f"maskloss.conventions.{name}")
        public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for attr in public:
            obj = getattr(module, attr)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
                out.append((name, attr, _summary(obj)))
    return out


def render() -> str:
    lines = ["| module | summary |", "|---|---|"]
    for name in MODULES:
        module = importlib.import_module(f"maskloss.conventions.{name}")
        lines.append(f"| [`{name}`](/reference/conventions/{name}.rst) | {_summary(module)} |")
    lines += ["", "| module | function | what it computes |", "|---|---|---|"]
    lines += [f"| `{m}` | `{f}` | {s} |" for m, f, s in rows()]
    lines += ["", "Generated at build time from the docstrings of `maskloss.conventions`."]
    return "\n".join(lines) + "\n"
