"""The notation appendix against the course: one symbol, one meaning, introduced before it is used.

``docs/appendix/notation.md`` lists every symbol with the chapter (or reference page) that
introduces it. Here the math of every course chapter (``$...$`` and ``$$...$$`` outside code
blocks) is split into symbols (a LaTeX command such as ``\\lambda``, ``\\mathcal{L}``, or one
letter), and

- no chapter uses a symbol of the appendix before the chapter that introduces it (a symbol
  introduced on a reference page is used by no chapter);
- the introducing chapter does use it;
- the clashes that a reader once met cannot come back: ``c_b`` for the per-sequence scale
  (chapter 5 uses chapter 3's ``\\lambda_b``), a second ``N`` that is a count (``N_{\\text{global}}``),
  ``L`` or ``L_b`` for a loss or a length (the loss is ``\\mathcal{L}``, a length is ``D_b``), and
  ``C`` defined as anything but the number of classes (``C = B \\cdot ...`` in chapter 9), a bare
  ``N`` for a token count (``N = 8``, ``\\frac1N`` in chapter 12), a shard's ``f_s``/``S_s`` (``f``
  is the feature index, ``S_b`` counts steps) and ``b`` for the LM-head bias (chapter 11).

The checks are tested on small hand-written pages, including pages that must fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "docs" / "course"
APPENDIX = ROOT / "docs" / "appendix" / "notation.md"
REFERENCE_PAGE = 99  # a symbol introduced on a reference page: no course chapter may use it

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
MATH = re.compile(r"\$\$(.+?)\$\$|\$((?:[^$\n]|\n(?!\s*\n))+?)\$", re.S)  # inline math may wrap a line
WORDS = re.compile(r"\\(?:text|mathrm|operatorname|texttt|textstyle|mathbf|begin|end)\{[^{}]*\}")
TOKEN = re.compile(r"\\mathcal\{[A-Za-z]\}|\\[A-Za-z]+|[A-Za-z]")
ACCENTS = {"\\hat", "\\tilde", "\\bar"}
LINK = re.compile(r"\]\(([^)]+)\)")

#: (what must not come back, where, why)
CLASHES = (
    (r"\bc_b\b|c_\{b\}", "any chapter", "the per-sequence scale is chapter 3's \\lambda_b"),
    (r"N_\{\\text\{global\}\}", "any chapter", "N_b is a numerator, not a token count"),
    (r"(?<![\\A-Za-z{])L(?![A-Za-z])", "any chapter", "the loss is \\mathcal{L}; a length is D_b"),
    (r"(?<![\\A-Za-z{])C\s*=\s*[A-Za-z\\]", "any chapter", "C is the number of classes"),
    (
        r"(?<![\\A-Za-z{])N(?![_A-Za-z])\s*=\s*\d|\\frac\s*1\s*N\b",
        "any chapter",
        "N_b is a numerator: a token count is \\sum_b D_b",
    ),
    (r"\\gamma_s", "any chapter", "\\gamma is the softcap (chapter 10); a shard's factor is \\alpha_s"),
    (r"\bf_s\b|\bS_s\b", "any chapter", "a shard's factor is \\alpha_s, its sum N_s (f: features, S_b: steps)"),
    (r"W\^\\top\s*\+\s*b\b", "any chapter", "the LM-head bias is \\beta; b is the sequence index"),
)


def chapter_number(path: Path) -> int:
    """``03-reductions.md`` -> 3."""
    return int(path.name[:2])


def math_of(text: str) -> list[str]:
    """The math spans of a markdown page, code blocks left out."""
    prose = FENCE.sub("", text)
    return [a or b for a, b in MATH.findall(prose)]


def symbols(math: str) -> set[str]:
    """The symbols a math span uses: commands and single letters, words in \\text{...} left out."""
    return set(TOKEN.findall(WORDS.sub(" ", math)))


def introduced(text: str) -> dict[str, int]:
    """Symbol -> the chapter that introduces it, from the appendix's tables (first token of the cell)."""
    table: dict[str, int] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| $") or len(cells) < 3:
            continue
        target = LINK.findall(cells[-1])
        assert target, f"notation.md: no 'introduced in' link in {line!r}"
        name = Path(target[0]).name
        where = chapter_number(Path(name)) if "/course/" in target[0] else REFERENCE_PAGE
        for cell_math in math_of(cells[0]):
            if WORDS.search(cell_math) or re.match(r"[A-Za-z]{2}", cell_math):
                continue  # a named symbol (nnz) or a two-letter one (cw): not a letter of the math
            tokens = [t for t in TOKEN.findall(cell_math) if t not in ACCENTS]
            table.setdefault(tokens[0], where)  # the first row of a letter is its meaning
    return table


def violations(appendix: str, chapters: dict[int, list[str]]) -> list[str]:
    """Every use before introduction, every unused introduction, every known clash."""
    table = introduced(appendix)
    found: list[str] = []
    used = {n: set().union(*(symbols(m) for text in texts for m in math_of(text))) for n, texts in chapters.items()}
    for symbol, where in sorted(table.items()):
        early = sorted(n for n, s in used.items() if n < where and symbol in s)
        if early:
            found.append(f"{symbol} (introduced in {where}) is used in chapter(s) {early}")
        if where != REFERENCE_PAGE and where in used and symbol not in used[where]:
            found.append(f"{symbol} is said to be introduced in chapter {where}, which does not use it")
    for pattern, _, why in CLASHES:
        for n, texts in chapters.items():
            for text in texts:
                for m in math_of(text):
                    if re.search(pattern, m):
                        found.append(f"chapter {n}: ${m.strip()}$ ({why})")
    return found


def course() -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    # every chapter: 00-13
    for path in sorted(COURSE.glob("[0-9][0-9]-*.md")):
        out.setdefault(chapter_number(path), []).append(path.read_text(encoding="utf-8"))
    return out


def test_the_course_follows_the_notation_appendix() -> None:
    problems = violations(APPENDIX.read_text(encoding="utf-8"), course())
    assert not problems, "\n".join(problems)


def test_every_course_chapter_is_seen() -> None:
    chapters = course()
    assert set(range(14)) <= set(chapters)
    assert len(introduced(APPENDIX.read_text(encoding="utf-8"))) >= 30


APPENDIX_TOY = """
| symbol | meaning | introduced in |
|---|---|---|
| $B$ | batch size | [0](../course/00-a.md) |
| $N_b$ | numerator | [3](../course/03-c.md) |
| $\\lambda_b$ | scale | [3](../course/03-c.md) |
| $\\mathcal{L}$ | the loss | [3](../course/03-c.md) |
| $V$ | valid steps | [dask](../reference/dask.md) |
"""


def test_the_symbols_of_a_math_span() -> None:
    assert symbols(r"\mathcal{L} = \sum_b \lambda_b N_b") == {"\\mathcal{L}", "\\sum", "b", "\\lambda", "N"}
    assert symbols(r"\log \operatorname{softmax}(x/\text{temperature})_y") == {"\\log", "x", "y"}
    assert sorted(math_of("a $x$ b\n```python\n>>> '$y$'\n```\n$$z$$")) == ["x", "z"]  # code is not math
    table = introduced(APPENDIX_TOY)
    assert table == {"B": 0, "N": 3, "\\lambda": 3, "\\mathcal{L}": 3, "V": REFERENCE_PAGE}


def test_a_toy_course_that_follows_the_appendix_passes() -> None:
    chapters = {0: ["$B$ sequences"], 3: [r"$N_b$, $\lambda_b$ and $\mathcal{L} = \sum_b \lambda_b N_b$"]}
    assert violations(APPENDIX_TOY, chapters) == []


@pytest.mark.parametrize(
    ("chapters", "message"),
    [
        (
            {0: ["$B$ and $N_b$"], 3: [r"$N_b$ $\lambda_b$ $\mathcal{L}$"]},
            "N (introduced in 3) is used in chapter(s) [0]",
        ),
        ({0: ["$B$"], 3: [r"$N_b$ $\lambda_b$ $\mathcal{L}$"], 5: ["$V$ valid steps"]}, "V (introduced in 99)"),
        ({0: ["$B$"], 3: [r"$N_b$ $\mathcal{L}$"]}, "\\lambda is said to be introduced in chapter 3"),
        ({0: ["$B$"], 3: [r"$N_b$ $\lambda_b$ $\mathcal{L}$"], 5: [r"$L = \sum_b c_b N_b$"]}, "c_b"),
        ({0: ["$B$"], 3: [r"$N_b$ $\lambda_b$ $\mathcal{L}$"], 9: [r"$L_b = \sum_t m_{bt}$"]}, "a length is D_b"),
        ({0: ["$B$"], 3: [r"$N_b$ $\lambda_b$ $\mathcal{L}$"], 9: [r"$C = B \cdot T$"]}, "C is the number of classes"),
        (
            {0: ["$B$"], 3: [r"$N_b$ $\lambda_b$ $\mathcal{L}$"], 9: [r"$\sum m / N_{\text{global}}$"]},
            "not a token count",
        ),
        ({0: ["$B$"], 3: [r"$N_b$ $\lambda_b$ $\mathcal{L}$"], 12: [r"$N = 8$ tokens, $\frac1N$"]}, "\\sum_b D_b"),
        ({0: ["$B$"], 3: [r"$N_b$ $\lambda_b$ $\mathcal{L}$"], 12: [r"$f_s\,S_s$"]}, "\\alpha_s"),
        ({0: ["$B$"], 3: [r"$N_b$ $\lambda_b$ $\mathcal{L}$"], 11: [r"$x = hW^\top + b$"]}, "bias is \\beta"),
    ],
)
def test_a_toy_course_that_breaks_the_appendix_fails(chapters: dict[int, list[str]], message: str) -> None:
    problems = violations(APPENDIX_TOY, chapters)
    assert any(message in p for p in problems), problems


def test_a_value_is_not_a_definition() -> None:
    chapters = {0: ["$B$"], 3: [r"$N_b$ $\lambda_b$ $\mathcal{L}$, with $C = 3$ classes"]}
    assert violations(APPENDIX_TOY, chapters) == []
