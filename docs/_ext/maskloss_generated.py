"""Sphinx extension: draw the figures and render the tables of the site at ``builder-inited``.

Every module ``docs/figures/<name>.py`` defines ``draw() -> matplotlib.figure.Figure``, written to
``docs/_generated/<name>.png``; every module ``docs/tables/<name>.py`` defines ``render() -> str``
(markdown), written to ``docs/_generated/<name>.md``. Modules whose name starts with ``_`` are
helpers. A generator that raises or returns the wrong type fails the build, naming the module.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

DPI = 110


def generator_modules(folder: Path) -> list[Path]:
    """The output modules of ``folder`` (``*.py`` not starting with ``_``), sorted by name."""
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def load(path: Path) -> ModuleType:
    """Import ``path`` as module ``<folder>.<stem>`` (its folder on ``sys.path`` for helpers)."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"maskloss_docs_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_figure(path: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    figure = load(path).draw()
    if not isinstance(figure, Figure):
        raise TypeError(f"draw() returned {type(figure).__name__}, not a matplotlib Figure")
    target = out / f"{path.stem}.png"
    figure.savefig(target, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(figure)
    return target


def write_table(path: Path, out: Path) -> Path:
    text = load(path).render()
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"render() returned {text!r:.60}, not non-empty markdown")
    target = out / f"{path.stem}.md"
    target.write_text(text.rstrip() + "\n", encoding="utf-8")
    return target


def generate(docs: Path) -> list[Path]:
    """Write every figure and table of ``docs`` into ``docs/_generated``; return the files."""
    out = docs / "_generated"
    out.mkdir(exist_ok=True)
    written = []
    # Tables first: hypothesis (under check_loss in the bug-gallery table) draws "local constants"
    # from every module of this checkout already imported, so importing the figure modules first
    # changed the batches it generated, and with them the property that caught a gallery bug.
    jobs = [(p, write_table) for p in generator_modules(docs / "tables")]
    jobs += [(p, write_figure) for p in generator_modules(docs / "figures")]
    for path, job in jobs:
        try:
            written.append(job(path, out))
        except Exception as exc:
            kind = path.parent.name
            raise RuntimeError(f"docs/{kind}/{path.name} failed: {type(exc).__name__}: {exc}") from exc
    return written


def _on_builder_inited(app: Any) -> None:
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    try:
        written = generate(Path(app.srcdir))
    except RuntimeError as exc:
        raise ExtensionError(str(exc)) from exc
    logging.getLogger(__name__).info(f"maskloss_generated: wrote {len(written)} figures and tables")


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _on_builder_inited)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
