"""Every page of the built book, as headless Chromium sees it.

Each page in _toc.yml is visited once; the tests then look at what that visit found: the
page loads without console errors and without reaching beyond 127.0.0.1, MathJax typesets
all of its math, every image decodes, and every relative link points at a file of the
built book. One chapter is saved as a screenshot in
_build/screenshots/ for a human to look at.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(1800)]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "_build" / "screenshots"

# Resolves once MathJax has finished its first typesetting pass (or at once without MathJax).
WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const mj = window.MathJax;
if (!mj || !mj.startup || !mj.startup.promise) { done({mathjax: false}); return; }
mj.startup.promise.then(() => done({mathjax: true}), (err) => done({mathjax: true, error: String(err)}));
"""

MATH_REPORT = """
return Array.from(document.querySelectorAll('.math')).map((el) => ({
  source: el.outerHTML.slice(0, 160),
  typeset: el.querySelector('mjx-container') !== null,
  errors: Array.from(el.querySelectorAll('mjx-merror')).map((e) => e.getAttribute('data-mjx-error') || e.textContent),
  text: el.innerText,
}));
"""

IMAGE_REPORT = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach((img) => { if (img.loading === 'lazy') img.loading = 'eager'; });
const settled = images.map((img) => img.complete ? Promise.resolve() : new Promise((resolve) => {
  img.addEventListener('load', resolve, {once: true});
  img.addEventListener('error', resolve, {once: true});
}));
Promise.all(settled).then(async () => {
  const report = [];
  for (const img of images) {
    const src = img.currentSrc || img.src;
    let fetched = null;
    // An SVG without width/height may decode with naturalWidth 0: check it was served instead.
    if (img.naturalWidth === 0 && /\\.svg(\\?|#|$)/i.test(src)) {
      try { fetched = (await fetch(src)).ok; } catch (e) { fetched = false; }
    }
    report.push({src: src, complete: img.complete, width: img.naturalWidth, fetched: fetched});
  }
  done(report);
});
"""

LINK_REPORT = """
const inMain = (el) => el.closest('main, article') !== null;
const idExists = (hash) => hash.length > 1 && document.getElementById(decodeURIComponent(hash.slice(1))) !== null;
return Array.from(document.querySelectorAll('a[href]')).map((a) => ({
  href: a.getAttribute('href'), inMain: inMain(a), samePageTarget: idExists(a.hash),
}));
"""

RESOURCES_LOADED = "return performance.getEntriesByType('resource').map((e) => e.name);"

RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\\[A-Za-z]{2,}")


def open_page(browser, book_url: str, docname: str) -> dict:
    """Load a page, wait for MathJax, return MathJax's status."""
    browser.get_log("browser")  # drop messages left by the previous page
    browser.get(f"{book_url}{docname}.html")
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.execute_script("return document.querySelector('main') !== null"), (
        f"{docname}: no <main> element; title is {browser.title!r}"
    )
    return browser.execute_async_script(WAIT_FOR_MATHJAX)


@dataclass
class PageReport:
    """What one visit to a page found; each test below looks at one part of it."""

    mathjax: dict
    console_errors: list[str]
    resources: list[str]
    math: list[dict]
    images: list[dict]
    links: list[dict]


@pytest.fixture(scope="session")
def _visited() -> dict[str, PageReport]:
    return {}


@pytest.fixture
def page(browser, book_url, toc_page, _visited) -> PageReport:
    """The report of `toc_page`, made on its first visit in this session."""
    if toc_page not in _visited:
        mathjax = open_page(browser, book_url, toc_page)
        console_errors = [
            entry["message"]
            for entry in browser.get_log("browser")
            # The browser asks the server root for /favicon.ico by itself; the book has none.
            if entry["level"] == "SEVERE" and "/favicon.ico" not in entry["message"]
        ]
        _visited[toc_page] = PageReport(
            mathjax=mathjax,
            console_errors=console_errors,
            resources=browser.execute_script(RESOURCES_LOADED),
            math=browser.execute_script(MATH_REPORT),
            images=browser.execute_async_script(IMAGE_REPORT),
            links=browser.execute_script(LINK_REPORT),
        )
    return _visited[toc_page]


def test_page_loads_cleanly_and_offline(page, book_url, toc_page):
    assert not page.console_errors, f"{toc_page}: errors in the browser console:\n" + "\n".join(
        page.console_errors
    )
    local = urlsplit(book_url).netloc
    remote = [
        url
        for url in page.resources
        if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc != local
    ]
    assert not remote, f"{toc_page}: requested resources from the network: {remote}"


def test_math_is_typeset(page, toc_page):
    if not page.math:
        pytest.skip(f"{toc_page} has no math")
    status = page.mathjax
    assert status["mathjax"], f"{toc_page} has {len(page.math)} math elements but MathJax did not load"
    assert "error" not in status, f"{toc_page}: MathJax failed to start: {status['error']}"
    problems = []
    for item in page.math:
        if not item["typeset"]:
            problems.append(f"not typeset: {item['source']}")
        elif item["errors"]:
            problems.append(f"TeX error {item['errors']}: {item['source']}")
        elif RAW_TEX.search(item["text"]):
            problems.append(f"raw TeX left in the text {item['text']!r}: {item['source']}")
    assert not problems, f"{toc_page}:\n" + "\n".join(problems)


def test_images_load(page, toc_page):
    broken = [
        image["src"]
        for image in page.images
        if not image["complete"] or (image["width"] == 0 and not image["fetched"])
    ]
    assert not broken, f"{toc_page}: images that did not load: {broken}"


def test_internal_links_resolve(page, book_html, toc_page):
    page_dir = posixpath.dirname(toc_page)
    problems = []
    for link in page.links:
        href = link["href"].strip()
        parts = urlsplit(href)
        if parts.scheme or href.startswith("//"):
            continue  # external (http, https, mailto, javascript, ...)
        fragment = unquote(parts.fragment)
        if not parts.path:
            # Same page. Only anchors in the text are checked; the theme's own "#" buttons are not.
            if fragment and link["inMain"] and not link["samePageTarget"]:
                problems.append(f"{href}: no element with this id on the page")
            continue
        target = posixpath.normpath(posixpath.join(page_dir, unquote(parts.path)))
        if target.startswith("../"):
            problems.append(f"{href}: points outside the built book")
            continue
        path = book_html / target
        if href.endswith("/") or path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            problems.append(f"{href}: {path.relative_to(book_html)} does not exist")
        elif fragment and link["inMain"] and path.suffix == ".html":
            if f'id="{fragment}"' not in path.read_text(encoding="utf-8"):
                problems.append(f"{href}: {path.relative_to(book_html)} has no id {fragment!r}")
    assert not problems, f"{toc_page}: broken links:\n" + "\n".join(problems)


def test_screenshot_of_a_chapter(browser, book_url):
    from sphinx_external_toc.parsing import parse_toc_yaml

    pages = list(parse_toc_yaml(REPO_ROOT / "_toc.yml"))
    docname = pages[1] if len(pages) > 1 else pages[0]  # the first chapter, else the root page
    open_page(browser, book_url, docname)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(800, min(int(height), 6000)))
    try:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        target = SCREENSHOT_DIR / (docname.replace("/", "__") + ".png")
        assert browser.save_screenshot(str(target)), "Chromium did not write a screenshot"
        assert target.stat().st_size > 10_000, f"{target} is suspiciously small"
    finally:
        browser.set_window_size(1280, 1600)
