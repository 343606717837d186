"""Every figure of ``docs/figures/`` with its alt text and caption, taken from the module docstrings.

Each figure module's docstring holds a title line, then ``Alt text: ...`` and ``Caption: ...``
paragraphs: the one place they are written, shown on the figures appendix and pasted by chapters.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

FIGURES = Path(__file__).resolve().parent.parent / "figures"


def figure_texts(path: Path) -> tuple[str, str, str]:
    """(title, alt text, caption) of a figure module, from its docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    title = doc.split("\n", 1)[0].strip()
    alt = re.search(r"^Alt text:(.*?)(?:\n\n|\Z)", doc, re.S | re.M)
    caption = re.search(r"^Caption:(.*?)(?:\n\n|\Z)", doc, re.S | re.M)
    if not (title and alt and caption):
        raise ValueError(f"{path.name}: its docstring needs a title line, 'Alt text:' and 'Caption:'")
    return title, " ".join(alt.group(1).split()), " ".join(caption.group(1).split())


def render() -> str:
    parts = []
    for path in sorted(p for p in FIGURES.glob("*.py") if not p.name.startswith("_")):
        title, alt, caption = figure_texts(path)
        parts.append(
            f"## {title}\n\n```{{figure}} /_generated/{path.stem}.png\n:alt: {alt}\n\n{caption}\n```\n"
        )
    return "\n".join(parts)
