"""What the exercise notebooks tell a student: where to read, and what each test covers.

Links to the book point at the pages of the published book (never at Markdown sources on
a code host), and every task's explanation lists the cases of its visible test, exactly
as the assignment module defines them. (tests/book/test_exercise_links.py checks that the
linked sections exist in the built book.)
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from attncourse.grading.authoring import (
    BOOK_BASE_URL,
    BOOK_URL,
    VISIBLE_CASES_INTRO,
    VISIBLE_POINTS,
    visible_case_names,
    visible_cases_markdown,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO_ROOT / "solutions").glob("*/*.ipynb")) + sorted((REPO_ROOT / "exercises").glob("*/*.ipynb"))
LINK = re.compile(r"\[[^\]]*\]\((?P<url>[^)\s]+)\)")


def notebook_id(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.stem}"


def markdown_links(path: Path) -> list[str]:
    nb = nbformat.read(str(path), as_version=4)
    return [m["url"] for c in nb.cells if c.cell_type == "markdown" for m in LINK.finditer(c.source)]


def test_book_url_is_where_the_book_is_published():
    config = (REPO_ROOT / "_config.yml").read_text(encoding="utf-8")
    match = re.search(r"^\s*html_baseurl:\s*(\S+)\s*$", config, re.MULTILINE)
    assert match, "_config.yml sets no html_baseurl"
    assert match.group(1) == BOOK_BASE_URL
    assert BOOK_URL.startswith(BOOK_BASE_URL) and BOOK_URL.endswith("{chapter}.html")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_links_lead_to_pages_of_the_book(path):
    from sphinx_external_toc.parsing import parse_toc_yaml

    pages = set(parse_toc_yaml(REPO_ROOT / "_toc.yml"))
    links = markdown_links(path)
    to_sources = [url for url in links if re.search(r"/book/[\w-]+\.md\b", url)]
    assert not to_sources, f"{path.name} links to Markdown sources instead of the book's pages: {to_sources}"
    to_book = [url for url in links if url.startswith(BOOK_BASE_URL)]
    assert to_book, f"{path.name} has no link to the book"
    for url in to_book:
        page = url[len(BOOK_BASE_URL) :].split("#")[0]
        assert page.endswith(".html") and page[: -len(".html")] in pages, f"{path.name}: {url} is no page of the book"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_each_task_says_which_cases_its_visible_test_runs(path):
    nb = nbformat.read(str(path), as_version=4)
    tasks = 0
    for before, cell in zip(nb.cells, nb.cells[1:]):
        grade_id = (cell.metadata.get("nbgrader") or {}).get("grade_id", "")
        if not grade_id.endswith("_answer"):
            continue
        task = grade_id[: -len("_answer")]
        tasks += 1
        assert before.cell_type == "markdown", f"{path.name}: no explanation before {grade_id}"
        assert visible_cases_markdown(task) in before.source, (
            f"{path.name}, task {task}: its explanation does not list the visible cases "
            f"{visible_case_names(task)}; run the notebook edit that appends "
            "attncourse.grading.authoring.visible_cases_markdown(task)"
        )
    assert tasks >= 2


def test_the_list_of_visible_cases_follows_the_module():
    """The paragraph is made from the assignment module, so it changes with the cases."""
    text = visible_cases_markdown("dot_scores")
    assert text.startswith(VISIBLE_CASES_INTRO.format(points=VISIBLE_POINTS))
    listed = [line[2:] for line in text.splitlines() if line.startswith("- ")]
    assert listed == visible_case_names("dot_scores") and len(listed) >= 3
