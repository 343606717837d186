"""The browser check of the built site (docs/check_site.py) catches what it promises to catch.

Tiny hand-written sites, not the real build: one page per defect (unrendered TeX, a broken
image, a console error, an uncaught exception) must each be reported, and a clean page must
pass. Chromium is a Debian package that `.ci/run` installs before the tests; the module is
skipped only where no Chromium exists.
"""

from __future__ import annotations

import importlib.util
import shutil
import struct
import zlib
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

def png(width: int, height: int) -> bytes:
    """A white RGB PNG of ``width`` x ``height`` pixels (for the image-size rule)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + b"\xff" * (3 * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def site(tmp_path: Path, pages: dict[str, str]) -> Path:
    root = tmp_path / "html"
    root.mkdir()
    (root / "ok.png").write_bytes(PNG_1x1)
    (root / "big.png").write_bytes(png(400, 10))
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
    assert len(failures) >= 1 and all(f.startswith("bad.html at ") for f in failures), failures
    assert any(expected in f for f in failures), failures


LONG = "x" * 400  # 400 monospace characters: far wider than 800 pixels


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"<div style='width:1500px'>{LONG}</div>", "page overflows"),
        (f"<div style='width:600px;overflow:hidden'><pre>{LONG}</pre></div>", "code block overflows"),
        (f"<div style='width:600px;overflow:hidden'><table><tr><td>{LONG}</td></tr></table></div>",
         "table overflows"),
        ("<img src='big.png' style='width:100px'>", "image shrunk to 100 of 400 px"),
    ],
    ids=["page", "code", "table", "shrunk-image"],
)
def test_each_layout_defect_is_reported(tmp_path: Path, body: str, expected: str) -> None:
    root = site(tmp_path, {"index.html": "<p>fine</p>", "bad.html": body})
    failures = run(root, tmp_path)
    assert failures and all(f.startswith("bad.html at ") for f in failures), failures
    assert any(expected in f for f in failures), failures


def test_the_same_layout_done_right_passes(tmp_path: Path) -> None:
    body = (
        f"<div style='width:600px'><pre style='white-space:pre-wrap;overflow-wrap:anywhere'>{LONG}</pre>"
        f"<div style='overflow-x:auto'><table><tr><td>{LONG}</td></tr></table></div>"
        "<a href='big.png'><img src='big.png' style='width:100px'></a><img src='big.png'></div>"
    )
    root = site(tmp_path, {"index.html": body})
    assert run(root, tmp_path) == []


def test_every_page_is_checked_at_both_widths(tmp_path: Path) -> None:
    root = site(tmp_path, {"index.html": "<p>fine</p>", "bad.html": "<div style='width:1000px'>wide</div>"})
    failures = run(root, tmp_path)
    assert check_site.WIDTHS == (1280, 800)
    assert [f.split(":")[0] for f in failures] == ["bad.html at 800 px"], failures


def test_a_missing_screenshot_page_is_a_failure(tmp_path: Path) -> None:
    root = site(tmp_path, {"index.html": "<p>fine</p>"})
    failures = check_site.check(root, tmp_path / "shots")
    assert any("course/03-reductions.html: page missing" in f for f in failures), failures
