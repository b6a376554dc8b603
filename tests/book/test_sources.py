"""Rules the sources of the book keep, checked without building it.

Every page in _toc.yml is read as a notebook (jupytext reads MyST Markdown and .ipynb
alike): its code cells and the code blocks of its text keep to the width of the text
column, and its prose speaks to a reader who has only the book.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# At the book's code font (book/_static/book.css) 79 characters fit the text column at
# 1280 px; the browser test measures the built pages, this rule keeps the sources there.
MAX_CODE_LINE = 79

FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
# Fences whose content is code: no info, a language name, or MyST's code directives.
CODE_INFO = re.compile(r"^(|[\w+-]+|\{(?:code|code-block|sourcecode)\}.*)$")


def page_path(docname: str) -> Path:
    for suffix in (".md", ".ipynb"):
        path = REPO_ROOT / f"{docname}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no source for {docname}")


def read_page(docname: str):
    import jupytext

    return jupytext.read(page_path(docname))


def fenced_code(markdown: str):
    """(first line number, lines) of every fenced code block of a Markdown cell.

    Directives such as ```{admonition} are fences too, whose content is Markdown: the code
    blocks nested in them count, their own text does not.
    """
    stack: list[tuple[str, bool, int, list[str]]] = []  # (fence, is code, start, lines)
    for number, line in enumerate(markdown.splitlines(), 1):
        match = FENCE.match(line)
        if match and stack and not match["info"].strip() and match["fence"][0] == stack[-1][0][0] \
                and len(match["fence"]) >= len(stack[-1][0]):
            fence, is_code, start, lines = stack.pop()
            if is_code:
                yield start, lines
            continue
        if stack and stack[-1][1]:
            stack[-1][3].append(line)  # inside a code block, fences are text
            continue
        if match:
            is_code = bool(CODE_INFO.match(match["info"].strip()))
            stack.append((match["fence"], is_code, number + 1, []))


def test_code_lines_fit_the_column(toc_page):
    notebook = read_page(toc_page)
    long_lines = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            blocks = [(1, cell.source.splitlines())]
            where = f"code cell {index}"
        else:
            blocks = list(fenced_code(cell.source))
            where = f"code block in markdown cell {index}"
        for start, lines in blocks:
            for offset, line in enumerate(lines):
                if len(line) > MAX_CODE_LINE:
                    long_lines.append(f"  {where}, line {start + offset} ({len(line)} characters): {line.strip()[:60]}")
    assert not long_lines, (
        f"{toc_page}: {len(long_lines)} code lines longer than {MAX_CODE_LINE} characters "
        "(they would scroll sideways in the text column):\n" + "\n".join(long_lines)
    )


def test_prose_mentions_no_file_a_reader_lacks(toc_page):
    text = page_path(toc_page).read_text(encoding="utf-8")
    assert "DESIGN.md" not in text, f"{toc_page} refers to DESIGN.md, which readers of the book do not have"


def test_fenced_code_counts_code_inside_directives_only():
    markdown = "\n".join(
        [
            "some text",  # 1
            "```{admonition} Question 1",  # 2
            "prose inside a directive is not code, however long",  # 3
            "```python",  # 4
            "x = 1",  # 5
            "```",  # 6
            "```",  # 7
            "```bash",  # 8
            "ls ```",  # 9: not a closing fence
            "```",  # 10
        ]
    )
    assert list(fenced_code(markdown)) == [(5, ["x = 1"]), (9, ["ls ```"])]
