"""Open every page of the built site in headless Chromium and fail on what a reader would see broken.

Usage (after the Sphinx build)::

    python docs/check_site.py docs/_build/html

The pages are served from 127.0.0.1 by a local static server and driven through the DevTools
protocol over ``--remote-debugging-pipe`` (no websocket library, no browser download, no network).
On every page, after MathJax has finished typesetting, the check fails when

* a text node outside code blocks still shows TeX (``$$``, ``\\frac``, ``\\sum``, ``\\(``, ``\\[``),
  or MathJax reports an error node (``mjx-merror``);
* an image is broken (``naturalWidth == 0``);
* the console logs an error, or a script throws;
* the page, a code block or a table overflows horizontally (wider content than its box, without
  the box scrolling inside itself), at each of the widths of ``WIDTHS`` (1280 and 800 pixels);
* an image is shown below 60% of its natural width and is not inside a link (to its full size).

Full-page screenshots (up to 6000 px tall) of the start page, the reductions chapter and the
figures appendix are saved to ``<site>/../screenshots/*.png`` (that is ``docs/_build/screenshots/``).
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
]
SCREENSHOTS = {
    "index.html": "start-page.png",
    "course/03-reductions.html": "reductions.png",
    "appendix/figures.html": "figures.png",
}
TIMEOUT_S = 30.0
WIDTHS = (1280, 800)  # window widths in CSS pixels: every page is checked at each

# Runs in the page: waits for MathJax, then reports what is broken. Returns a JSON string.
PAGE_CHECK = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const problems = [];
  const tex = [/\$\$/, /\\frac/, /\\sum/, /\\\(/, /\\\[/];
  const skip = "pre, code, script, style, textarea, mjx-container, .highlight, .headerlink";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip)) continue;
    const text = node.textContent;
    for (const pattern of tex) {
      if (pattern.test(text)) {
        problems.push("unrendered TeX " + pattern + " in: " + text.trim().slice(0, 80));
        break;
      }
    }
  }
  for (const err of document.querySelectorAll("mjx-merror, .MathJax_Error")) {
    problems.push("MathJax error: " + (err.getAttribute("data-mjx-error") || err.textContent).slice(0, 80));
  }
  for (const img of document.images) {
    if (!img.complete) await new Promise(r => { img.onload = img.onerror = r; });
    if (img.naturalWidth === 0) problems.push("broken image: " + img.getAttribute("src"));
  }
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth + 1) {
    problems.push("page overflows: " + root.scrollWidth + " px wide in a " + root.clientWidth + " px window");
  }
  for (const box of document.querySelectorAll("pre, table")) {
    const style = getComputedStyle(box);
    const scrolls = ["auto", "scroll"].includes(style.overflowX);
    let wrapped = false;  // inside a box that scrolls horizontally: the reader can reach it all
    for (let up = box.parentElement; up && up !== document.body && !wrapped; up = up.parentElement) {
      wrapped = ["auto", "scroll"].includes(getComputedStyle(up).overflowX);
    }
    const clipped = box.scrollWidth > box.clientWidth + 1 && !scrolls;
    const spills = box.getBoundingClientRect().right > root.clientWidth + 1 && !wrapped;
    if (clipped || spills) {
      const what = box.tagName.toLowerCase() === "pre" ? "code block" : "table";
      problems.push(what + " overflows: " + box.scrollWidth + " px of content in " + box.clientWidth
                    + " px: " + box.textContent.trim().slice(0, 60));
    }
  }
  for (const img of document.images) {
    if (img.naturalWidth > 0 && img.width < 0.6 * img.naturalWidth && !img.closest("a[href]")) {
      problems.push("image shrunk to " + img.width + " of " + img.naturalWidth + " px without a link to the full size: "
                    + img.getAttribute("src"));
    }
  }
  const math = document.querySelectorAll("mjx-container").length;
  const images = document.images.length;
  return JSON.stringify({problems, math, images});
})()
"""


class Browser:
    """A headless Chromium driven over the DevTools pipe (fd 3 writes, fd 4 reads)."""

    def __init__(self, profile: str) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's fd 3 must be the read end of our writes, fd 4 the write end of our reads.
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=functools.partial(_move_fds, to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._read()
            if event.get("method") == method:
                return event
            self.events.append(event)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(raw)
        return parsed

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except RuntimeError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _move_fds(read_end: int, write_end: int) -> None:
    os.dup2(read_end, 3)
    os.dup2(write_end, 4)


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A static server for ``root`` on a free port of 127.0.0.1, running in a daemon thread."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def pages(root: Path) -> list[str]:
    """Every built HTML page, relative to ``root`` (the assets and sources folders left out)."""
    found = (p.relative_to(root).as_posix() for p in root.rglob("*.html"))
    return sorted(p for p in found if not p.startswith(("_static/", "_sources/", "_images/")))


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            errors.append(f"console error: {args[:200]}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(f"uncaught: {details.get('exception', {}).get('description', details.get('text'))}"[:200])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"console error: {entry.get('text')} {entry.get('url', '')}"[:200])
    return errors


def check(site: Path, shots: Path) -> list[str]:
    """Check every page of ``site``; save the screenshots into ``shots``; return the failures."""
    server, base = serve(site)
    shots.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="maskloss-chromium-") as profile:
        browser = Browser(profile)
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                browser.send(f"{domain}.enable", session=session)
            for width, page in ((w, p) for w in WIDTHS for p in pages(site)):
                browser.send(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
                    session=session,
                )
                browser.events.clear()
                browser.send("Page.navigate", {"url": base + page}, session=session)
                browser.wait_event("Page.loadEventFired")
                reply = browser.send(
                    "Runtime.evaluate",
                    {"expression": PAGE_CHECK, "awaitPromise": True, "returnByValue": True},
                    session=session,
                )
                if "exceptionDetails" in reply:
                    text = reply["exceptionDetails"].get("text")
                    failures.append(f"{page} at {width} px: the check script failed: {text}")
                    continue
                report = json.loads(reply["result"]["value"])
                problems = report["problems"] + console_errors(browser.events)
                failures += [f"{page} at {width} px: {problem}" for problem in problems]
                status = "FAIL" if problems else "ok  "
                print(f"{status} {page} at {width} px: {report['math']} formulas, {report['images']} images")
                if page in SCREENSHOTS and width == WIDTHS[0]:
                    size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
                    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}
                    shot = browser.send(
                        "Page.captureScreenshot",
                        {"format": "png", "clip": clip, "captureBeyondViewport": True},
                        session=session,
                    )
                    (shots / SCREENSHOTS[page]).write_bytes(base64.b64decode(shot["data"]))
            missing = [p for p in SCREENSHOTS if not (site / p).exists()]
            failures += [f"{p}: page missing, no screenshot" for p in missing]
        finally:
            browser.close()
            server.shutdown()
            server.server_close()  # shutdown() only stops serving: the listening socket is closed here
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", nargs="?", default="docs/_build/html", type=Path, help="the built HTML folder")
    args = parser.parse_args(argv)
    site: Path = args.site.resolve()
    if not (site / "index.html").exists():
        print(f"no built site at {args.site}: run the Sphinx build first", file=sys.stderr)
        return 2
    failures = check(site, site.parent / "screenshots")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"{len(failures)} problems; screenshots in {site.parent / 'screenshots'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
