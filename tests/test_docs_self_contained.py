"""The docs and the code point only inside the repository (issue 9, item 9), and every
relative markdown link of the README and the course reaches a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "_build", "_generated", ".hypothesis", "__pycache__"}
TEXT_SUFFIXES = {".py", ".md", ".cfg", ".toml", ".txt", ".rst", ""}
# Written in two pieces so that this file does not match itself.
OUTSIDE = ["/wo" + "rk/", "shared/" + "conventions", "../" + "shared"]


def _text_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts[:-1]  # caches and tool directories start with a dot; .ci does not hide
        if any(p in SKIP_DIRS or p.endswith(".egg-info") or (p.startswith(".") and p != ".ci") for p in parts):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.name != ".git":  # a worktree's .git file
            files.append(path)
    return files


def test_nothing_points_outside_the_repository() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if any(marker in line for marker in OUTSIDE)
    ]
    assert not hits, "\n".join(hits)


def test_the_old_pages_moved_into_the_course() -> None:
    for old in ("masking", "gradients", "propagation", "testing", "conventions"):
        assert not (ROOT / "docs" / f"{old}.md").exists(), old


LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")
# Course pages written on other branches; they exist once those are merged.
ELSEWHERE = {"05-accumulation.md", "08-real-code.md", "09-post-training.md"}


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))], ids=lambda p: str(p.relative_to(ROOT))
)
def test_relative_markdown_links_reach_a_file(page: Path) -> None:
    missing = [
        target
        for target in LINK.findall(page.read_text(encoding="utf-8"))
        if "://" not in target
        and Path(target).name not in ELSEWHERE
        and not (page.parent / target).resolve().is_file()
    ]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"
