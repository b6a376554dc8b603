"""Fixtures for the book tests: one book build per session, a local web server, Chromium.

The build runs the same command as `make book`. Set ATTNCOURSE_BOOK_BUILT=1 to test an
already built _build/html instead (for instance right after `make book`).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = REPO_ROOT / "_build"
HTML_DIR = BUILD_DIR / "html"
BUILD_LOG = BUILD_DIR / "book-build.log"
SCREENSHOT_DIR = BUILD_DIR / "screenshots"

BUILD_COMMAND = ["jupyter-book", "build", ".", "-W", "-n", "--keep-going"]

CHROMIUM_CANDIDATES = ["/usr/bin/chromium", "chromium", "chromium-browser"]
CHROMEDRIVER_CANDIDATES = ["/usr/bin/chromedriver", "chromedriver"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
]


# ---------------------------------------------------------------------------------------
# The pages of the book, as listed in _toc.yml


def toc_docnames() -> list[str]:
    """Docnames (paths without extension, relative to the repository root) in toc order."""
    from sphinx_external_toc.parsing import parse_toc_yaml

    site_map = parse_toc_yaml(REPO_ROOT / "_toc.yml")
    names = list(site_map)  # root first, then in the order of the file
    for pattern in sorted(site_map.globs()):
        for path in sorted(REPO_ROOT.glob(pattern + ".md")) + sorted(REPO_ROOT.glob(pattern + ".ipynb")):
            name = path.relative_to(REPO_ROOT).with_suffix("").as_posix()
            if name not in names:
                names.append(name)
    return names


def pytest_generate_tests(metafunc):
    # A test that takes `toc_page` runs once per page of the book.
    if "toc_page" in metafunc.fixturenames:
        metafunc.parametrize("toc_page", toc_docnames())


# ---------------------------------------------------------------------------------------
# The build


@dataclass(frozen=True)
class BookBuild:
    returncode: int
    log: str
    html_dir: Path

    def problems(self) -> str:
        """The warning and error lines of the build log, or its tail when there are none."""
        plain = re.sub(r"\x1b\[[0-9;]*m", "", self.log)
        lines = [
            line
            for line in plain.splitlines()
            if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Error:", line)
            and "Kernel is running over TCP" not in line
        ]
        return "\n".join(lines[-60:]) if lines else "\n".join(plain.splitlines()[-60:])


@pytest.fixture(scope="session")
def book_build() -> BookBuild:
    """Build the book once per test session (unless ATTNCOURSE_BOOK_BUILT=1)."""
    if os.environ.get("ATTNCOURSE_BOOK_BUILT") == "1":
        code = 0 if (HTML_DIR / "index.html").is_file() else 1
        return BookBuild(code, "ATTNCOURSE_BOOK_BUILT=1: built outside the tests", HTML_DIR)

    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    # The venv first: notebook kernels start with its python, like under `make book`.
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    command = [str(bin_dir / BUILD_COMMAND[0]), *BUILD_COMMAND[1:]]
    proc = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    BUILD_DIR.mkdir(exist_ok=True)
    BUILD_LOG.write_text(proc.stdout)
    return BookBuild(proc.returncode, proc.stdout, HTML_DIR)


@pytest.fixture(scope="session")
def book_html(book_build: BookBuild) -> Path:
    """The built HTML folder.

    With --keep-going, a build that fails on one page still writes the others, so the page
    tests go on and report on every page; test_book_builds_with_warnings_as_errors carries
    the build's own failure. Only a build that wrote nothing stops them.
    """
    if not (book_build.html_dir / "index.html").is_file():
        pytest.fail(
            f"the book build wrote no HTML (exit {book_build.returncode}); full log in "
            f"{BUILD_LOG}\n" + book_build.problems(),
            pytrace=False,
        )
    return book_build.html_dir


def html_path(html_dir: Path, docname: str) -> Path:
    return html_dir / f"{docname}.html"


# ---------------------------------------------------------------------------------------
# A web server on 127.0.0.1 and headless Chromium


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass


@pytest.fixture(scope="session")
def book_url(book_html: Path):
    """Base URL of a local web server over the built book (ends with a slash)."""
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _find_executable(candidates: list[str]) -> str | None:
    for candidate in candidates:
        found = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if found and os.access(found, os.X_OK):
            return found
    return None


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Headless Chromium driven by chromedriver, with a fresh profile and no network chatter."""
    chromium = _find_executable(CHROMIUM_CANDIDATES)
    chromedriver = _find_executable(CHROMEDRIVER_CANDIDATES)
    if chromium is None or chromedriver is None:
        missing = " and ".join(
            name for name, path in [("chromium", chromium), ("chromedriver", chromedriver)] if path is None
        )
        pytest.skip(
            f"{missing} not found (looked for {CHROMIUM_CANDIDATES[0]} and "
            f"{CHROMEDRIVER_CANDIDATES[0]}); as root, `bash tools/install-system-packages.sh` installs them"
        )

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")  # never let Selenium phone home
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
