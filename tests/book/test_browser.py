"""Every page of the built book, as headless Chromium sees it.

Each page in _toc.yml is visited once; the tests then look at what that visit found: the
page loads without console errors and without reaching beyond 127.0.0.1, MathJax typesets
all of its math, every image decodes, every relative link points at a file of the built
book, no output shows the error stream, and every question keeps its answer folded.

The visit also measures the layout, with every fold opened, at two window widths: at
1280 px no equation (display or inline), table, figure, code cell or output may be wider
than the text column (neither clipped nor scrolling), and at a phone's 390 px nothing may
be clipped or push the page sideways, and every equation must fit the column (code,
outputs and tables may scroll inside their own box there). Each offending element is
listed. Full-page screenshots at both widths are saved in _build/screenshots/ for a human
to look at.
"""

from __future__ import annotations

import json
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

# The layout of the page at the current window width. Every display equation, table,
# image, code block and output in the article is measured against the text column: the
# nearest box (itself included) that clips or scrolls it, or else the column, must hold
# all of its content. Any other element that sticks out of the column is reported too.
LAYOUT_REPORT = r"""
const viewport = document.documentElement.clientWidth;
const article = document.querySelector('main article') || document.querySelector('main');
const style = getComputedStyle(article);
const box = article.getBoundingClientRect();
const colLeft = box.left + parseFloat(style.paddingLeft);
const colRight = box.right - parseFloat(style.paddingRight);
const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 || r.height > 0; };
const kindOf = (el) => {
  if (el.matches('mjx-container[display="true"]')) return 'display math';
  if (el.matches('mjx-container')) return 'inline math';
  if (el.matches('table')) return 'table';
  if (el.matches('img')) return 'figure';
  if (el.closest('.cell_output')) return 'output';
  return 'code';
};
const describe = (el) => {
  let text = '';
  if (el.matches('img')) text = el.getAttribute('src') || '';
  else if (el.matches('mjx-container')) {
    const mml = el.querySelector('mjx-assistive-mml');
    text = (mml ? mml.textContent : el.textContent);
  } else text = el.innerText || el.textContent || '';
  const section = el.closest('section[id]');
  return {section: section ? section.id : '', text: text.replace(/\s+/g, ' ').trim().slice(0, 100)};
};
// The extent of an element's content, in page coordinates.
const extent = (el) => {
  const r = el.getBoundingClientRect();
  let left = r.left, right = r.left + Math.max(el.scrollWidth || 0, r.width);
  if (el.matches('mjx-container')) {
    const math = el.querySelector('mjx-math');
    if (math) { const m = math.getBoundingClientRect(); left = Math.min(left, m.left); right = Math.max(right, m.right); }
  }
  return {left, right};
};
const measured = [];
const selector = 'mjx-container[display="true"], table, img, div.highlight pre';
for (const el of article.querySelectorAll(selector)) {
  if (!visible(el)) continue;
  const {left, right} = extent(el);
  let holder = null;  // the nearest box that clips or scrolls this content
  for (let node = el; node && node !== article; node = node.parentElement) {
    const overflow = getComputedStyle(node).overflowX;
    if (overflow === 'visible') continue;
    const r = node.getBoundingClientRect();
    const reach = node === el ? r.left + node.scrollWidth : right;
    if (node.scrollWidth > node.clientWidth + 1 || reach > r.right + 1 || left < r.left - 1) {
      holder = {mode: (overflow === 'auto' || overflow === 'scroll') ? 'scrolls' : 'clipped', rect: r};
      break;
    }
  }
  let problem = null, room = colRight - colLeft;
  if (holder) {
    problem = holder.mode;
    room = holder.rect.width;
    if (holder.rect.right > colRight + 1 || holder.rect.left < colLeft - 1) problem += ' in a box wider than the column';
  } else if (right > colRight + 1 || left < colLeft - 1) {
    problem = 'sticks out of the column';
  }
  if (problem) measured.push({kind: kindOf(el), problem, width: Math.round(right - left), room: Math.round(room), ...describe(el)});
}
// Anything else that sticks out of the column (a long inline literal, a wide figure caption).
const inScroller = (el) => {
  for (let node = el.parentElement; node && node !== article; node = node.parentElement) {
    if (getComputedStyle(node).overflowX !== 'visible') return true;
  }
  return false;
};
const sticking = (el) => { const r = el.getBoundingClientRect(); return (r.width > 0) && (r.right > colRight + 1 || r.left < colLeft - 1); };
for (const el of article.querySelectorAll('*')) {
  if (el.closest('mjx-container') || el.matches(selector) || el.closest(selector)) continue;
  if (!sticking(el) || inScroller(el)) continue;
  if (el.parentElement && el.parentElement !== article && sticking(el.parentElement)) continue;  // report the outermost only
  const r = el.getBoundingClientRect();
  measured.push({kind: el.tagName.toLowerCase() + (el.className ? '.' + String(el.className).split(' ')[0] : ''),
                 problem: 'sticks out of the column', width: Math.round(r.width), room: Math.round(colRight - colLeft), ...describe(el)});
}
// An inline formula never breaks across lines, and the theme's span.math around it clips
// whatever does not fit (no scroll bar, the page does not widen): one wider than the block
// it sits in is cut off. (A formula at a line's end may overhang by a glyph: not counted.)
const blockOf = (el) => {
  let node = el.parentElement;
  while (node && node !== article && getComputedStyle(node).display.startsWith('inline')) node = node.parentElement;
  return node;
};
for (const el of article.querySelectorAll('mjx-container:not([display="true"])')) {
  if (!visible(el) || inScroller(el.closest('span.math') || el)) continue;
  const block = blockOf(el.closest('span.math') || el);
  const style = getComputedStyle(block);
  const room = block.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const {left, right} = extent(el);
  if (right - left > room + 1) {
    measured.push({kind: kindOf(el), problem: 'clipped', width: Math.round(right - left), room: Math.round(room), ...describe(el)});
  }
}
const figures = Array.from(article.querySelectorAll('.cell_output img')).filter(visible)
  .map((img) => ({src: img.getAttribute('src'), shown: img.getBoundingClientRect().width, ...describe(img)}));
// As a JSON string: WebDriver cannot carry every value a measurement may produce.
return JSON.stringify({viewport, column: Math.round(colRight - colLeft),
  pageWidth: document.documentElement.scrollWidth, offending: measured, figures});
"""

# The outputs that show the error stream (myst-nb marks them with the class "stderr").
STDERR_REPORT = """
return Array.from(document.querySelectorAll('main .output.stderr, main .cell_output .stderr')).map((el) => {
  const section = el.closest('section[id]');
  return {section: section ? section.id : '', text: el.innerText.slice(0, 200)};
});
"""

# Questions and their folded answers, as the page first shows them. A question is an
# admonition titled "Question ..."; its answer is the dropdown admonition right after it.
# After its first question, a section may show no code cell outside the answers, not even
# one folded behind a "show code" toggle: its code or its output would give an answer away
# next to the question. (Cells that check the answers are removed from the page.)
FOLDS_REPORT = r"""
const titleOf = (el) => { const t = el.querySelector(':scope > .admonition-title'); return t ? t.textContent.trim() : ''; };
const folded = (el) => Array.from(el.children).filter((c) => !c.matches('.admonition-title'))
  .every((c) => c.getBoundingClientRect().height === 0);
const questions = [];
for (const q of document.querySelectorAll('main .admonition')) {
  if (!/^Question\b/.test(titleOf(q)) || q.classList.contains('dropdown')) continue;
  const answer = q.nextElementSibling;
  const isAnswer = answer && answer.matches('.admonition.dropdown') && /^Answer\b/.test(titleOf(answer));
  questions.push({
    title: titleOf(q), answered: !!isAnswer,
    folded: isAnswer ? folded(answer) : null,
    answerLength: isAnswer ? answer.textContent.replace(titleOf(answer), '').trim().length : 0,
  });
}
const dropdowns = Array.from(document.querySelectorAll('main .admonition.dropdown')).map((d) => ({title: titleOf(d), folded: folded(d)}));
// The first question of each section that asks some; cells after it must not show.
const firstQuestion = new Map();
document.querySelectorAll('main .admonition').forEach((q) => {
  if (/^Question\b/.test(titleOf(q)) && !q.classList.contains('dropdown')) {
    const s = q.closest('section'); if (s && !firstQuestion.has(s)) firstQuestion.set(s, q);
  }
});
const shown = [];
for (const [section, first] of firstQuestion) {
  for (const cell of section.querySelectorAll('.cell')) {
    if (cell.closest('.admonition.dropdown')) continue;
    if (!(first.compareDocumentPosition(cell) & Node.DOCUMENT_POSITION_FOLLOWING)) continue;
    const sub = cell.closest('section');
    shown.push({section: sub ? sub.id : section.id, text: cell.textContent.replace(/\s+/g, ' ').trim().slice(0, 120)});
  }
}
const boldNumbers = Array.from(document.querySelectorAll('main p > strong:first-child'))
  .filter((b) => /^\d+\.$/.test(b.textContent.trim()) && b.parentElement.textContent.trim().startsWith(b.textContent.trim()))
  .map((b) => b.parentElement.textContent.trim().slice(0, 80));
return {questions, dropdowns, shown, boldNumbers};
"""

# Opens every fold (dropdown admonitions, "show code" toggles, <details>) for measuring.
OPEN_FOLDS = """
document.querySelectorAll('.toggle-hidden').forEach((el) => el.classList.remove('toggle-hidden'));
document.querySelectorAll('details').forEach((el) => { el.open = true; });
"""

WIDTHS = (1280, 390)
WINDOW_HEIGHT = 1600

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


def screenshot_path(docname: str, width: int) -> Path:
    return SCREENSHOT_DIR / f"{docname.replace('/', '__')}@{width}.png"


def emulate_window(browser, width: int, height: int) -> None:
    """Lay the page out as in a window of this size (Chromium's DevTools protocol)."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def save_full_page_screenshot(browser, target: Path, width: int) -> None:
    """The whole page, at this width, as a PNG: the emulated window is made as tall as the
    page, so that everything is laid out and painted as a reader scrolling down sees it."""
    import base64

    height = browser.execute_script("return document.documentElement.scrollHeight")
    emulate_window(browser, width, int(height))
    try:
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        emulate_window(browser, width, WINDOW_HEIGHT)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base64.b64decode(shot["data"]))


@dataclass
class PageReport:
    """What one visit to a page found; each test below looks at one part of it."""

    mathjax: dict
    console_errors: list[str]
    resources: list[str]
    math: list[dict]
    images: list[dict]
    links: list[dict]
    stderr: list[dict]
    folds: dict
    layout: dict[int, dict]  # window width -> LAYOUT_REPORT with every fold open
    screenshots: dict[int, Path]


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
        report = dict(
            mathjax=mathjax,
            console_errors=console_errors,
            resources=browser.execute_script(RESOURCES_LOADED),
            math=browser.execute_script(MATH_REPORT),
            images=browser.execute_async_script(IMAGE_REPORT),
            links=browser.execute_script(LINK_REPORT),
            stderr=browser.execute_script(STDERR_REPORT),
            folds=browser.execute_script(FOLDS_REPORT),
        )
        browser.execute_script(OPEN_FOLDS)
        layout, screenshots = {}, {}
        try:
            for width in WIDTHS:
                emulate_window(browser, width, WINDOW_HEIGHT)
                layout[width] = json.loads(browser.execute_script(LAYOUT_REPORT))
                screenshots[width] = screenshot_path(toc_page, width)
                save_full_page_screenshot(browser, screenshots[width], width)
        finally:
            browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        _visited[toc_page] = PageReport(**report, layout=layout, screenshots=screenshots)
    return _visited[toc_page]


def format_offending(items: list[dict]) -> str:
    return "\n".join(
        f"  {item['kind']} in #{item['section']}: {item['problem']} "
        f"({item['width']} px of content, {item['room']} px of room): {item['text']!r}"
        for item in items
    )


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


def test_nothing_is_wider_than_the_column_at_1280_px(page, toc_page):
    layout = page.layout[1280]
    problems = layout["offending"]
    page_width = layout["pageWidth"]
    assert not problems and page_width <= layout["viewport"], (
        f"{toc_page} at 1280 px (text column {layout['column']} px, page {page_width} px "
        f"in a {layout['viewport']} px window): {len(problems)} elements do not fit:\n"
        + format_offending(problems)
    )


# At a phone's width these may scroll inside their own box, which keeps the page in place.
# Display equations may not: each must fit a phone's text column, so the book's pages
# set them one definition or one step of a chain per line.
MAY_SCROLL_ON_A_PHONE = {"code", "output", "table"}


def test_nothing_is_clipped_at_390_px(page, toc_page):
    layout = page.layout[390]
    problems = [
        item
        for item in layout["offending"]
        if not (item["problem"] == "scrolls" and item["kind"] in MAY_SCROLL_ON_A_PHONE)
    ]
    page_width = layout["pageWidth"]
    assert not problems and page_width <= layout["viewport"], (
        f"{toc_page} at 390 px (text column {layout['column']} px, page {page_width} px "
        f"in a {layout['viewport']} px window): {len(problems)} elements are clipped or "
        "stick out:\n" + format_offending(problems)
    )


# A text group of a matplotlib SVG (text drawn as outlines): the text in a comment, then
# its placement, scaled by font size / 100 (matplotlib's text-to-path scale).
SVG_TEXT = re.compile(
    r'<g id="text_\d+">\s*<!--\s*(?P<text>.*?)\s*-->\s*'
    r'<g transform="translate\([^)]*\)\s*scale\((?P<scale>[\d.e-]+)\s+-[\d.e-]+\)"',
    re.DOTALL,
)
SVG_VIEWBOX = re.compile(r'<svg[^>]*viewBox="[\d.-]+ [\d.-]+ (?P<width>[\d.]+) [\d.]+"')
MIN_FIGURE_TEXT_PT = 9.0


def figure_text_sizes(svg: str, shown_width_px: float) -> list[tuple[str, float]]:
    """(text, size in points as shown) of every text of a matplotlib SVG shown at that width.

    The SVG's units are points; shown at `shown_width_px` CSS pixels (96 per inch, 72
    points per inch), every length is multiplied by shown_width_px / (width_pt * 4/3).
    """
    viewbox = SVG_VIEWBOX.search(svg)
    factor = shown_width_px / (float(viewbox["width"]) * 4 / 3)
    return [
        (match["text"], 100 * float(match["scale"]) * factor) for match in SVG_TEXT.finditer(svg)
    ]


def test_figure_text_is_readable_at_1280_px(page, book_html, toc_page):
    """Every text of every figure (ticks, legends, labels, values in cells) is shown at
    9 pt or more in the text column. Figures are SVG (attncourse.plot.use_book_style())."""
    page_dir = (book_html / toc_page).parent
    problems = []
    for figure in page.layout[1280]["figures"]:
        path = (page_dir / unquote(urlsplit(figure["src"]).path)).resolve()
        if path.suffix != ".svg":
            problems.append(
                f"  #{figure['section']}: {path.name} is not SVG, so its text cannot be measured "
                "(call attncourse.plot.use_book_style() in the page's set-up cell)"
            )
            continue
        sizes = figure_text_sizes(path.read_text(encoding="utf-8"), figure["shown"])
        small = [(text, size) for text, size in sizes if size < MIN_FIGURE_TEXT_PT]
        if small:
            shown = ", ".join(f"{text!r} {size:.1f} pt" for text, size in small[:6])
            problems.append(f"  #{figure['section']}: {path.name}, {len(small)} of {len(sizes)} texts: {shown}")
    assert not problems, (
        f"{toc_page}: figure text below {MIN_FIGURE_TEXT_PT:g} pt as shown at 1280 px:\n" + "\n".join(problems)
    )


def test_no_output_shows_stderr(page, toc_page):
    assert not page.stderr, f"{toc_page}: outputs on the error stream:\n" + "\n".join(
        f"  #{item['section']}: {item['text']!r}" for item in page.stderr
    )


def test_answers_stay_folded(page, toc_page):
    folds = page.folds
    problems = [
        f"{q['title']}: no 'Answer' dropdown right after it" for q in folds["questions"] if not q["answered"]
    ]
    problems += [f"{q['title']}: the answer is empty" for q in folds["questions"] if q["answered"] and not q["answerLength"]]
    problems += [f"dropdown {d['title']!r} is open when the page loads" for d in folds["dropdowns"] if not d["folded"]]
    problems += [
        f"#{o['section']}: a code cell outside the answers gives them away: {o['text']!r}"
        for o in folds["shown"]
    ]
    problems += [f"a question numbered as a paragraph, not a 'Question' box: {text!r}" for text in folds["boldNumbers"]]
    assert not problems, f"{toc_page}:\n" + "\n".join(problems)


def test_screenshots_are_saved(page, toc_page):
    for width, target in page.screenshots.items():
        assert target.is_file(), f"no screenshot of {toc_page} at {width} px"
        assert target.stat().st_size > 10_000, f"{target} is suspiciously small"
