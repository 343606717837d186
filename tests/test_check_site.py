"""The browser check of the built site (docs/check_site.py) catches what it promises to catch.

Tiny hand-written sites, not the real build: one page per defect (unrendered TeX, a broken
image, a console error, an uncaught exception) must each be reported, and a clean page must
pass. Chromium is a Debian package that `.ci/run` installs before the tests; the module is
skipped only where no Chromium exists.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_site", ROOT / "docs" / "check_site.py")
assert spec is not None and spec.loader is not None
check_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_site)

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None and not Path(check_site.CHROMIUM).exists(),
    reason="Chromium is not installed (.ci/run installs the Debian package)",
)

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def site(tmp_path: Path, pages: dict[str, str]) -> Path:
    root = tmp_path / "html"
    root.mkdir()
    (root / "ok.png").write_bytes(PNG_1x1)
    for name, body in pages.items():
        head = "<head><link rel='icon' href='data:,'></head>"  # no favicon request, no 404
        (root / name).write_text(f"<!doctype html><html>{head}<body>{body}</body></html>", encoding="utf-8")
    return root


def run(root: Path, tmp_path: Path) -> list[str]:
    failures: list[str] = check_site.check(root, tmp_path / "shots")
    return [f for f in failures if "page missing, no screenshot" not in f]


def test_a_clean_page_passes(tmp_path: Path) -> None:
    root = site(tmp_path, {"index.html": "<p>plain text</p><img src='ok.png'><pre>$$ in code is fine</pre>"})
    assert run(root, tmp_path) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<p>the loss is $$\\frac{a}{b}$$</p>", "unrendered TeX"),
        ("<img src='missing.png'>", "broken image: missing.png"),
        ("<script>console.error('boom')</script>", "console error: boom"),
        ("<script>throw new Error('kaput')</script>", "kaput"),
    ],
    ids=["tex", "image", "console", "exception"],
)
def test_each_defect_is_reported(tmp_path: Path, body: str, expected: str) -> None:
    root = site(tmp_path, {"index.html": "<p>fine</p>", "bad.html": body})
    failures = run(root, tmp_path)
    assert len(failures) >= 1 and all(f.startswith("bad.html: ") for f in failures), failures
    assert any(expected in f for f in failures), failures


def test_a_missing_screenshot_page_is_a_failure(tmp_path: Path) -> None:
    root = site(tmp_path, {"index.html": "<p>fine</p>"})
    failures = check_site.check(root, tmp_path / "shots")
    assert any("course/03-reductions.html: page missing" in f for f in failures), failures
