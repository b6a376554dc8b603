"""Every link from an exercise notebook to a section of the book lands on that section of
the built book (the published address is replaced by the local build)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from attncourse.grading.authoring import BOOK_BASE_URL

pytestmark = [pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO_ROOT / "exercises").glob("*/*.ipynb"))
LINK = re.compile(r"\]\((?P<url>" + re.escape(BOOK_BASE_URL) + r"[^)\s]+)\)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_links_to_the_book_land_on_their_sections(path, book_html):
    nb = nbformat.read(str(path), as_version=4)
    urls = [m["url"] for c in nb.cells if c.cell_type == "markdown" for m in LINK.finditer(c.source)]
    assert urls, f"{path.name} has no link to the book"
    problems = []
    for url in urls:
        page, _, anchor = url[len(BOOK_BASE_URL) :].partition("#")
        built = book_html / page
        if not built.is_file():
            problems.append(f"{url}: {page} is not in the build")
        elif anchor and f'id="{anchor}"' not in built.read_text(encoding="utf-8"):
            problems.append(f"{url}: {page} has no section with id {anchor!r}")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)
