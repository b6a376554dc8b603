"""The book builds with warnings as errors (a failing cell is an error), and reads offline."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO_ROOT = Path(__file__).resolve().parents[2]


class _AssetCollector(HTMLParser):
    """Collects the URLs a page loads by itself: scripts, stylesheets, images, frames."""

    def __init__(self):
        super().__init__()
        self.assets: list[str] = []
        self.has_math = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "math" in (attrs.get("class") or "").split():
            self.has_math = True
        if tag in ("script", "img", "iframe", "source", "video", "audio") and attrs.get("src"):
            self.assets.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            rel = set((attrs.get("rel") or "").lower().split())
            if rel & {"stylesheet", "preload", "modulepreload", "icon", "manifest"}:
                self.assets.append(attrs["href"])


def collect(page: Path) -> _AssetCollector:
    parser = _AssetCollector()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def is_remote(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme in ("http", "https") or url.startswith("//"))


def test_book_builds_with_warnings_as_errors(book_build):
    assert book_build.returncode == 0, (
        f"`jupyter-book build . -W -n --keep-going` exited with {book_build.returncode}:\n"
        + book_build.problems()
    )


def test_toc_page_is_built(book_html, toc_page):
    assert (book_html / f"{toc_page}.html").is_file(), f"{toc_page} is in _toc.yml but was not built"


def test_root_index_redirects_to_the_root_page(book_html):
    from sphinx_external_toc.parsing import parse_toc_yaml

    root = parse_toc_yaml(REPO_ROOT / "_toc.yml").root.docname
    index = (book_html / "index.html").read_text(encoding="utf-8")
    assert f"{root}.html" in index, "_build/html/index.html does not lead to the root page"


def test_page_loads_nothing_from_the_network(book_html, toc_page):
    page = collect(book_html / f"{toc_page}.html")
    remote = [url for url in page.assets if is_remote(url)]
    assert not remote, f"{toc_page} loads assets from the network: {remote}"


def test_mathjax_is_served_from_the_book(book_html, toc_page):
    page_file = book_html / f"{toc_page}.html"
    page = collect(page_file)
    if not page.has_math:
        pytest.skip(f"{toc_page} has no math")
    mathjax = [url for url in page.assets if "mathjax" in url.lower()]
    assert mathjax, f"{toc_page} has math but loads no MathJax script"
    for url in mathjax:
        assert not is_remote(url), f"{toc_page} loads MathJax from the network: {url}"
        local = (page_file.parent / urlsplit(url).path).resolve()
        assert local.is_file(), f"{toc_page} loads {url}, which is not in the built book"
