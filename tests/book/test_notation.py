"""One notation from cover to cover: every symbol is in the preface's table.

The tests read the math of every page of the book (in _toc.yml) and of every exercise
notebook in exercises/, cut it into symbols, and fail on any symbol that the notation
table of the preface (the tables of its "Notation" section) does not define.

A symbol is a letter (Latin or Greek, possibly decorated: \\tilde o, \\mathcal K,
\\mathbf 1) with the subscripts and superscripts that are part of its name: d_k,
d_{\\text{model}}, W_Q, M^{+}, j^\\ast. A subscript made only of indices (i, j, 1, n_k,
i + 1, ...) or a superscript in parentheses, (b), numbers an instance of the symbol
instead: q_i and q_1 are both the symbol q, S^{(b)} is S. Powers and transposes are not
part of a symbol. Functions and standard sets (exp, softmax, \\mathbb{R}, \\mathbb{E}) and
Euler's number e are not symbols that need the table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_sources import read_page

REPO_ROOT = Path(__file__).resolve().parents[2]
EXERCISES = sorted((REPO_ROOT / "exercises").glob("*/*.ipynb"))

# Letters that the table defines as indices: a subscript made of these (and of numbers,
# operators and sizes) numbers an instance of a symbol.
INDEX_LETTERS = {"i", "j", "l", "c", "b", "r", "t", "p"}
STANDARD = {"e", r"\mathbb{R}", r"\mathbb{E}", r"\mathbb{N}"}
GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
    "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau",
    "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda",
    "Xi", "Pi", "Sigma", "Phi", "Psi", "Omega", "ell",
}
DECORATIONS = {"tilde", "widetilde", "hat", "widehat", "bar", "overline", "mathbf", "mathcal", "boldsymbol", "vec"}
# Commands whose braced argument is words or a name, not math: skipped whole.
WORDS = {"text", "mathrm", "operatorname", "textbf", "textit", "mathit", "mbox", "mathbb", "begin", "end"}

# Inline math may run over a line break, never over a blank line.
MATH = re.compile(r"\$\$(?P<display>.+?)\$\$|(?<![\\$])\$(?P<inline>(?:[^$\n]|\n(?!\s*\n))+?)\$", re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:.+?)\1", re.DOTALL)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
# A MyST role or directive option line such as {eq}`...` is removed with the code spans.


# ---------------------------------------------------------------------------------------
# Reading math


def math_spans(markdown: str) -> list[str]:
    text = FENCE.sub("", markdown)
    text = CODE_SPAN.sub("", text)
    return [m["display"] or m["inline"] for m in MATH.finditer(text)]


def _group(tex: str, start: int) -> tuple[str, int]:
    """The braced group (or single token) at `start`; returns (content, next index)."""
    while start < len(tex) and tex[start] == " ":
        start += 1
    if start >= len(tex):
        return "", start
    if tex[start] == "{":
        depth = 0
        for end in range(start, len(tex)):
            depth += {"{": 1, "}": -1}.get(tex[end], 0)
            if depth == 0:
                return tex[start + 1 : end], end + 1
        return tex[start + 1 :], len(tex)
    if tex[start] == "\\":
        match = re.match(r"\\([A-Za-z]+|.)", tex[start:])
        return match.group(0), start + match.end()
    return tex[start], start + 1


def _words_removed(tex: str) -> str:
    return re.sub(r"\\(?:text|mathrm|operatorname|textbf|mathit)\s*\{([^{}]*)\}", r"\1", tex)


def _is_index(tex: str) -> bool:
    """A sub- or superscript that numbers instances: indices, numbers, sizes, operators."""
    body = tex.strip()
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    body = re.sub(r"\\(?:dots|cdots|ldots|cdot|,|;|!|ast|prime)|\^\\ast|'", " ", body)
    body = re.sub(r"[nd]_\{?[a-z]+\}?", "1", body)  # sizes such as n_k, d_k
    if not re.search(r"[\d" + "".join(INDEX_LETTERS) + "]", body):
        return False  # only operators, such as the + of M^{+}
    body = re.sub(r"[\d\s+\-,*/()]", "", body)
    return all(ch in INDEX_LETTERS for ch in body)


def symbols(tex: str) -> list[str]:
    """The symbols of a piece of TeX math, normalised (see the module's docstring)."""
    tex = re.sub(r"\\\\(\[[^\]]*\])?", " ", tex)  # line breaks, with their spacing
    tex = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])", " ", tex)
    found: list[str] = []
    i = 0
    while i < len(tex):
        ch = tex[i]
        base = None
        if ch == "\\":
            match = re.match(r"\\([A-Za-z]+|.)", tex[i:])
            name = match.group(1)
            i += match.end()
            if name in WORDS:
                argument, i = _group(tex, i)
                if name == "mathbb":
                    base = rf"\mathbb{{{argument.strip()}}}"
                elif name in ("begin", "end"):
                    continue
                else:
                    continue
            elif name in DECORATIONS:
                argument, i = _group(tex, i)
                inner = symbols(argument)
                base = rf"\{name}{{{inner[0] if inner else argument.strip()}}}"
            elif name in GREEK:
                base = "\\" + name
            else:
                continue  # an operator, a function, spacing: not a symbol
        elif ch.isalpha():
            i += 1
            if ch == "d" and i < len(tex) and tex[i].isupper():  # dQ: a gradient
                base = "d" + tex[i]
                i += 1
            else:
                base = ch
        else:
            i += 1
            continue
        name = base
        # Sub- and superscripts and primes that follow the base.
        while i < len(tex):
            while i < len(tex) and tex[i] == " ":
                i += 1
            if i < len(tex) and tex[i] == "'":
                i += 1
                continue
            if i < len(tex) and tex[i] in "_^":
                mark = tex[i]
                argument, i = _group(tex, i + 1)
                plain = _words_removed(argument).strip()
                if mark == "^" and (plain in (r"\top", "T", r"\prime") or re.fullmatch(r"[-\d./]+", plain)):
                    continue
                if _is_index(argument) and not (mark == "^" and plain in (r"\ast", "*")):
                    found.extend(symbols(argument))  # the indices are symbols too
                    continue
                if mark == "^" and not plain.startswith("{") and not (plain in ("+", "-", r"\ast", "*")):
                    found.extend(symbols(argument))  # a power such as e^{s_j - m}
                    continue
                name += f"{mark}{{{plain}}}"
                continue
            break
        found.append(name)
    return [s for s in found if s not in STANDARD]


# ---------------------------------------------------------------------------------------
# The table and the pages


def notation_section(markdown: str) -> str:
    match = re.search(r"^## Notation\s*$(.*?)(?=^## )", markdown, re.DOTALL | re.MULTILINE)
    assert match, "the preface has no '## Notation' section"
    return match.group(1)


def table_symbols() -> set[str]:
    """The symbols defined in the first column of the tables of the preface's Notation section."""
    from sphinx_external_toc.parsing import parse_toc_yaml

    root = parse_toc_yaml(REPO_ROOT / "_toc.yml").root.docname
    text = "\n".join(cell.source for cell in read_page(root).cells if cell.cell_type == "markdown")
    defined: set[str] = set()
    rows = 0
    for line in notation_section(text).splitlines():
        if not line.startswith("|") or set(line.replace("|", "").strip()) <= set("-: "):
            continue
        first = line.strip("|").split("|")[0]
        for span in math_spans(first):
            defined.update(symbols(span))
        rows += 1
    assert rows > 10, "the notation table has fewer than ten rows"
    return defined


@pytest.fixture(scope="module")
def defined() -> set[str]:
    return table_symbols()


def undefined_symbols(sources: list[tuple[str, str]], defined: set[str]) -> list[str]:
    problems = []
    for where, markdown in sources:
        for span in math_spans(markdown):
            missing = sorted({s for s in symbols(span) if s not in defined})
            if missing:
                problems.append(f"  {where}: {', '.join(missing)} in ${span.strip()[:70]}$")
    return problems


def test_the_table_defines_the_index_letters(defined):
    assert INDEX_LETTERS <= defined, f"the table does not define the indices {sorted(INDEX_LETTERS - defined)}"


def test_book_pages_use_only_symbols_of_the_table(toc_page, defined):
    notebook = read_page(toc_page)
    sources = [(f"{toc_page} cell {i}", c.source) for i, c in enumerate(notebook.cells) if c.cell_type == "markdown"]
    problems = undefined_symbols(sources, defined)
    assert not problems, (
        f"{toc_page} uses symbols that the preface's notation table does not define:\n" + "\n".join(problems)
    )


@pytest.mark.parametrize("notebook", EXERCISES, ids=lambda p: p.stem)
def test_exercises_use_only_symbols_of_the_table(notebook, defined):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    sources = [
        (f"{notebook.stem} cell {i}", "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "markdown"
    ]
    problems = undefined_symbols(sources, defined)
    assert not problems, (
        f"{notebook.stem} uses symbols that the preface's notation table does not define:\n" + "\n".join(problems)
    )


# ---------------------------------------------------------------------------------------
# Counting from 1 in the text

ZERO_BASED = re.compile(
    r"\b(?:heads?|tokens?|keys?|quer(?:y|ies)|rows?|columns?|sequences?|blocks?)"
    r"\s+\$?0\$?(?![.\d])",
    re.IGNORECASE,
)


def prose(markdown: str) -> str:
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def test_prose_counts_from_one(toc_page):
    notebook = read_page(toc_page)
    found = [
        f"  cell {i}: ...{m.group(0)}..."
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "markdown"
        for m in ZERO_BASED.finditer(prose(cell.source))
    ]
    assert not found, (
        f"{toc_page} counts from 0 in its text (the book counts tokens, keys, heads... from 1; "
        "only code and positions count from 0):\n" + "\n".join(found)
    )


# ---------------------------------------------------------------------------------------
# The reader of the symbols: tested on its own


@pytest.mark.parametrize(
    "tex, expected",
    [
        (r"S = Q K^\top", ["S", "Q", "K"]),
        (r"d_{\text{model}} \times d_k", ["d_{model}", "d_{k}"]),
        (r"q_i \cdot k_{j,c} + x_{n_k - 1}", ["q", "i", "k", "j", "c", "x", "n_{k}"]),
        (r"M^{(b)}_{ij} = [\, j < \ell_b \,]", ["M", "b", "i", "j", "j", "\\ell", "b"]),
        (r"A = \operatorname{softmax}(S + M^{+})", ["A", "S", "M^{+}"]),
        (r"\tilde o' = \tilde o\, e^{m - m'}", [r"\tilde{o}", r"\tilde{o}", "m", "m"]),
        (r"dQ \mathrel{+}= dS\, K", ["dQ", "dS", "K"]),
        (r"\mathbb{R}^{n_q \times d_k}", ["n_{q}", "d_{k}"]),
        (r"a_{j^\ast}", ["a", "j^{\\ast}"]),
        (r"W_Q^\top W_K", ["W_{Q}", "W_{K}"]),
    ],
)
def test_symbols_are_read_as_the_docstring_says(tex, expected):
    assert sorted(symbols(tex)) == sorted(expected)
