"""Sphinx extension: every course chapter as a Jupyter notebook, executed when the site is built.

Each chapter ``docs/course/<name>.md`` (not starting with ``_``) becomes ``<name>.ipynb`` beside
its HTML page, and the page gets a "Download this chapter as a notebook" link under its title:

* the prose becomes markdown cells (MyST targets dropped, links pointing at the built pages,
  figures embedded as cell attachments, ``{include}`` files inlined);
* every ``>>>`` doctest block becomes one code cell (its ``>>>``/``...`` prompts removed), and an
  example whose expected output is a traceback gets a cell of its own, tagged
  ``raises-exception``; a fence without prompts stays code shown in a markdown cell;
* ``__import__("pytest").importorskip(name)`` becomes ``__import__("importlib").import_module(name)``:
  the notebook needs no pytest. Where ``name`` (a framework: torch, transformers) is not installed
  in the environment that builds the site, every code cell of that example block is tagged
  ``skip-execution`` (nbclient does not run it) and starts with a comment saying so, exactly as
  pytest skips the example; the page still shows the chapter's expected output, which the doctest
  run with the frameworks (CI) checks. The docs extra thus needs no framework.

The notebooks are executed with nbclient in this checkout (so ``import maskloss`` is this code)
and each code cell's output is compared with the doctest's expected output, with pytest's
doctest flags (``NORMALIZE_WHITESPACE`` plus each example's own); an error or a mismatch fails
the build, naming the chapter and the cell. The expected output travels in the cell metadata
(``maskloss.want`` or ``maskloss.exception``), so the comparison needs only the notebook.
"""

from __future__ import annotations

import base64
import doctest
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KERNEL = "python3"
CELL_TIMEOUT_S = 600
FLAGS = doctest.NORMALIZE_WHITESPACE  # pytest's doctest_optionflags (pyproject.toml)

#: First code cell: show every expression's value with ``repr``, as a doctest does.
SETUP = (
    '%config InteractiveShell.ast_node_interactivity = "all"  # show every value, as the chapter does\n'
    "%config PlainTextFormatter.pprint = False  # with repr(), as the doctests print it"
)
INTRO = (
    "*This notebook is the chapter **{title}** of the maskloss course, generated from "
    "`docs/course/{name}.md` and executed when the site was built: the outputs are the ones "
    "computed. Run it from a maskloss checkout with `pip install -e \".[docs]\"`.*"
)
DOWNLOAD = (
    '<p class="notebook-download"><a class="reference download" href="{name}.ipynb" download>'
    "Download this chapter as a notebook</a> (executed when this site was built)</p>"
)

FENCE = re.compile(r"^(?P<mark>`{3,}|~{3,})(?P<info>.*)$")
TARGET = re.compile(r"^\([\w.:-]+\)=\s*$")  # a MyST target line, ``(fw-table)=``
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
IMPORTORSKIP = re.compile(r"""__import__\((["'])pytest\1\)\.importorskip\(""")
SKIPPED_MODULE = re.compile(r"""__import__\((["'])pytest\1\)\.importorskip\((["'])(?P<name>[\w.]+)\2""")
SKIP_TAG = "skip-execution"  # nbclient's default skip_cells_with_tag
SKIP_NOTE = "# needs {names}, not installed where this notebook was built: this cell was not run\n"
DIRECTIVE_COMMENT = re.compile(r"\s*# doctest:.*$", re.MULTILINE)


def chapters(docs: Path) -> list[Path]:
    """The course chapters of ``docs`` (``course/*.md`` not starting with ``_``), sorted by name."""
    return sorted(p for p in (docs / "course").glob("*.md") if not p.name.startswith("_"))


@dataclass
class Cell:
    kind: str  # "markdown" or "code"
    source: str
    metadata: dict[str, Any]
    attachments: dict[str, dict[str, str]] | None = None


def _blocks(text: str) -> Iterator[tuple[str | None, list[str]]]:
    """Split markdown into ``(None, prose lines)`` and ``(fence info, body lines)`` blocks.

    Only fences at the start of a line are blocks; a fence closes on a line of the same mark,
    at least as long, with nothing else on it (CommonMark).
    """
    prose: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        opening = FENCE.match(line)
        if not opening:
            prose.append(line)
            continue
        if prose:
            yield None, prose
            prose = []
        mark, body = opening["mark"], []
        for inner in lines:
            if inner.startswith(mark[0] * len(mark)) and not inner.strip().strip(mark[0]):
                break
            body.append(inner)
        yield opening["info"].strip(), body
    if prose:
        yield None, prose


def _options(body: list[str]) -> tuple[dict[str, str], str]:
    """A MyST directive body: its ``:key: value`` options and the content after them."""
    options: dict[str, str] = {}
    index = 0
    for index, line in enumerate(body):  # noqa: B007 - the index after the options is used
        match = re.match(r"^:(\w[\w-]*):\s*(.*)$", line)
        if not match:
            break
        options[match[1]] = match[2]
    else:
        index = len(body)
    return options, "\n".join(body[index:]).strip()


def _resolve(path: Path, argument: str, docs: Path) -> Path:
    return docs / argument.lstrip("/") if argument.startswith("/") else path.parent / argument


def _examples(body: str) -> list[doctest.Example]:
    return [e for e in doctest.DocTestParser().parse(body) if isinstance(e, doctest.Example)]


def _code_cells(examples: list[doctest.Example]) -> Iterator[Cell]:
    """One cell per run of examples, and one cell for each example that expects an exception."""
    run: list[doctest.Example] = []

    def cell(group: list[doctest.Example], **meta: Any) -> Cell:
        source = "".join(DIRECTIVE_COMMENT.sub("", e.source.rstrip("\n")) + "\n" for e in group).rstrip("\n")
        source = IMPORTORSKIP.sub('__import__("importlib").import_module(', source)
        flags = FLAGS
        for example in group:
            flags |= sum(flag for flag, on in example.options.items() if on)
        info: dict[str, Any] = {"flags": flags, "examples": len(group), **meta}
        tags = ["raises-exception"] if "exception" in meta else []
        return Cell("code", source, {"tags": tags, "maskloss": info} if tags else {"maskloss": info})

    for example in examples:
        if example.exc_msg is None:
            run.append(example)
            continue
        if run:
            yield cell(run, want="".join(e.want for e in run))
            run = []
        yield cell([example], exception=example.exc_msg)
    if run:
        yield cell(run, want="".join(e.want for e in run))


def _figure(path: Path, info: str, body: list[str], docs: Path) -> Cell:
    options, caption = _options(body)
    image = _resolve(path, info.split(maxsplit=1)[1], docs)
    alt = options.get("alt", image.stem).replace("]", ")").replace("[", "(")
    data = base64.b64encode(image.read_bytes()).decode("ascii")
    mime = "image/svg+xml" if image.suffix == ".svg" else f"image/{image.suffix.lstrip('.')}"
    source = f"![{alt}](attachment:{image.name})\n\n{caption}".rstrip()
    return Cell("markdown", source, {}, {image.name: {mime: data}})


def _prose(lines: list[str], link: Callable[[str], str]) -> str:
    kept = [line for line in lines if not TARGET.match(line) and not line.startswith("% ")]
    text = "\n".join(kept)
    return LINK.sub(lambda m: f"]({link(m['target'])})", text).strip("\n")


def cells(path: Path, docs: Path, link: Callable[[str], str] = lambda target: target) -> list[Cell]:
    """The cells of the chapter ``path``, in order (``link`` rewrites every markdown link target)."""
    out: list[Cell] = []
    for info, body in _blocks(path.read_text(encoding="utf-8")):
        if info is None:
            text = _prose(body, link)
            if text.strip():
                out.append(Cell("markdown", text, {}))
        elif info.startswith("{include}"):
            included = _resolve(path, info.split(maxsplit=1)[1], docs)
            if included.suffix == ".md" and "_generated" not in included.parts:
                out += cells(included, docs, link)  # a course include: its prose and its examples
            else:
                out.append(Cell("markdown", _prose(included.read_text(encoding="utf-8").splitlines(), link), {}))
        elif info.startswith("{figure}"):
            out.append(_figure(path, info, body, docs))
        elif info.startswith("{"):
            out.append(Cell("markdown", _prose(_options(body)[1].splitlines(), link), {}))
        elif any(line.lstrip().startswith(">>>") for line in body):
            block = list(_code_cells(_examples("\n".join(body) + "\n")))
            missing = missing_modules("\n".join(body))
            out += [_skipped(c, missing) for c in block] if missing else block
        else:
            out.append(Cell("markdown", "\n".join([f"```{info}", *body, "```"]), {}))
    return _merge_markdown(out)


def missing_modules(text: str) -> list[str]:
    """The modules ``text`` asks for with ``importorskip`` that this environment cannot import."""
    import importlib.util

    names = dict.fromkeys(m["name"] for m in SKIPPED_MODULE.finditer(text))
    return [name for name in names if importlib.util.find_spec(name.split(".")[0]) is None]


def _skipped(cell: Cell, missing: list[str]) -> Cell:
    """``cell`` marked not to run (nbclient's ``skip-execution`` tag), with a note naming ``missing``."""
    tags = [*cell.metadata.get("tags", []), SKIP_TAG]
    note = SKIP_NOTE.format(names=" and ".join(missing))
    return Cell(cell.kind, note + cell.source, {**cell.metadata, "tags": tags}, cell.attachments)


def _merge_markdown(found: list[Cell]) -> list[Cell]:
    merged: list[Cell] = []
    for cell in found:
        last = merged[-1] if merged else None
        if last and last.kind == cell.kind == "markdown" and not last.attachments and not cell.attachments:
            last.source += "\n\n" + cell.source
        else:
            merged.append(cell)
    return merged


def title(path: Path) -> str:
    first = next((line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# ")), "")
    return first[2:].strip() or path.stem


def notebook(path: Path, docs: Path, link: Callable[[str], str] = lambda target: target) -> Any:
    """The chapter ``path`` as an unexecuted :mod:`nbformat` v4 notebook."""
    import nbformat

    v4 = nbformat.v4
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells.append(v4.new_markdown_cell(INTRO.format(title=title(path), name=path.stem)))
    nb.cells.append(v4.new_code_cell(SETUP))
    for cell in cells(path, docs, link):
        if cell.kind == "code":
            nb.cells.append(v4.new_code_cell(cell.source, metadata=cell.metadata))
        else:
            made = v4.new_markdown_cell(cell.source, metadata=cell.metadata)
            if cell.attachments:
                made["attachments"] = cell.attachments
            nb.cells.append(made)
    nbformat.validate(nb)
    return nb


def execute(nb: Any, cwd: Path) -> float:
    """Run every cell of ``nb`` in a fresh kernel started in ``cwd``; return the seconds it took.

    The kernel talks over IPC sockets in a temporary folder (no TCP port, no warning about one).
    A cell that raises without the ``raises-exception`` tag raises nbclient's CellExecutionError.
    """
    from nbclient import NotebookClient
    from traitlets.config import Config

    sockets = tempfile.mkdtemp(prefix="maskloss-kernel-")
    config = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "kernel")}})
    start = time.perf_counter()
    try:
        client = NotebookClient(nb, config=config, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                                resources={"metadata": {"path": str(cwd)}})
        client.execute()
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    return time.perf_counter() - start


def shown(cell: Any) -> str:
    """What a code cell printed and displayed (stdout and ``text/plain`` values, in order)."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream" and output["name"] == "stdout":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data") and "text/plain" in output["data"]:
            parts.append(output["data"]["text/plain"] + "\n")
    return "".join(parts)


def mismatches(nb: Any) -> list[str]:
    """Every code cell whose outputs differ from its doctest's expected output, described."""
    checker = doctest.OutputChecker()
    found = []
    for number, cell in enumerate(nb.cells):
        info = cell.metadata.get("maskloss")
        if cell.cell_type != "code" or info is None or SKIP_TAG in cell.metadata.get("tags", []):
            continue
        errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
        where = f"cell {number} ({cell.source.splitlines()[0][:60]!r})"
        if "exception" in info:
            if not errors:
                found.append(f"{where}: expected {info['exception'].strip()!r}, raised nothing")
                continue
            got = f"{errors[0]['ename']}: {errors[0]['evalue']}\n"
            want = re.sub(r"^[\w.]+\.(?=\w+:)", "", info["exception"])  # doctest shows module.Name
            if not checker.check_output(want, got, info["flags"]):
                found.append(f"{where}: expected {want.strip()!r}, raised {got.strip()!r}")
        elif errors:
            found.append(f"{where}: raised {errors[0]['ename']}: {errors[0]['evalue']}")
        elif not checker.check_output(info["want"], shown(cell), info["flags"]):
            found.append(f"{where}: expected {info['want']!r}, got {shown(cell)!r}")
    return found


def build(path: Path, docs: Path, cwd: Path, link: Callable[[str], str] = lambda target: target) -> tuple[Any, float]:
    """The chapter's notebook, executed in ``cwd`` (the checkout); raises on any mismatch."""
    nb = notebook(path, docs, link)
    seconds = execute(nb, cwd)
    problems = mismatches(nb)
    if problems:
        listed = "\n  ".join(problems)
        raise RuntimeError(f"{path.name}: the notebook's outputs differ from the chapter's:\n  {listed}")
    return nb, seconds


# --- Sphinx ---------------------------------------------------------------------------------------


def _add_download_link(app: Any, doctree: Any) -> None:
    """Under the title of each chapter page, the link to its notebook."""
    from docutils import nodes

    docname = app.env.docname
    folder, _, name = docname.rpartition("/")
    if folder != "course" or name.startswith("_"):
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        return
    section.insert(1, nodes.raw("", DOWNLOAD.format(name=name), format="html"))


def _linker(app: Any, docname: str) -> Callable[[str], str]:
    """Rewrite a link of the chapter ``docname`` to the built page (``x.md#a`` -> ``x.html#a``)."""
    labels = app.env.domaindata["std"]["labels"]

    def link(target: str) -> str:
        if "://" in target or target.startswith("mailto:"):
            return target
        page, _, anchor = target.partition("#")
        if not page:
            if anchor in labels:  # a MyST target, maybe in another page
                other, label_id = labels[anchor][0], labels[anchor][1]
                return f"{app.builder.get_relative_uri(docname, other)}#{label_id}"
            return f"{app.builder.get_relative_uri(docname, docname)}#{anchor}"
        if page.endswith(".md"):
            page = page[: -len(".md")] + app.builder.out_suffix
        return f"{page}#{anchor}" if anchor else page

    return link


def _on_build_finished(app: Any, exception: BaseException | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    import nbformat
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    docs, out = Path(app.srcdir), Path(app.outdir)
    log = logging.getLogger(__name__)
    total = 0.0
    for path in chapters(docs):
        try:
            nb, seconds = build(path, docs, docs.parent, _linker(app, f"course/{path.stem}"))
        except Exception as exc:
            raise ExtensionError(f"maskloss_notebooks: docs/course/{path.name}: {exc}") from exc
        total += seconds
        nbformat.write(nb, out / "course" / f"{path.stem}.ipynb")
        log.info(f"maskloss_notebooks: {path.stem}.ipynb executed in {seconds:.1f} s")
    log.info(f"maskloss_notebooks: {len(chapters(docs))} chapter notebooks executed in {total:.1f} s")


def setup(app: Any) -> dict[str, Any]:
    app.connect("doctree-read", _add_download_link)
    app.connect("build-finished", _on_build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
