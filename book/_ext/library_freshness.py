"""Sphinx extension: keep incremental book builds honest.

Jupyter Book caches executed notebooks (execute_notebooks: cache) and Sphinx reuses the
doctrees of pages whose text did not change. Two things can then go stale:

1. Outputs made with an older library. A chapter that checks hand-worked numbers against
   ``attncourse`` must re-run when ``src/attncourse`` or constraints.txt changes. The
   inputs are hashed when a build starts; when the hash differs from the previous build's,
   the notebook cache and the doctrees are emptied and every page executes again.
2. A failed build that "passes" the second time. Sphinx does not re-read a page only
   because it produced warnings, so a page with an erroring cell would build cleanly on the
   next run. When a build ends with warnings or an exception it leaves a marker, and the
   next build drops the doctrees (not the notebook cache, which only holds notebooks that
   executed without error), so every page is read again and its warnings come back.

Two builds into the same build folder at once would delete each other's cache; a lock on
the build folder makes the second one wait.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

from sphinx.util import logging

logger = logging.getLogger(__name__)

STAMP_NAME = ".attncourse-inputs.sha256"
DIRTY_NAME = ".attncourse-last-build-failed"
LOCK_NAME = ".attncourse-build.lock"

_held_locks = []  # open lock files, kept until the build process exits


def inputs_digest(repo_root: Path) -> str:
    """sha256 over the library's files (path and bytes) and constraints.txt."""
    digest = hashlib.sha256()
    library = repo_root / "src" / "attncourse"
    files = sorted(
        path
        for path in library.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    constraints = repo_root / "constraints.txt"
    if constraints.is_file():
        files.append(constraints)
    for path in files:
        digest.update(path.relative_to(repo_root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)


def _repository_root(start: Path) -> Path:
    """The nearest folder at or above `start` that holds pyproject.toml."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return start


def _lock_build_folder(build_root: Path) -> None:
    if fcntl is None:
        return
    build_root.mkdir(parents=True, exist_ok=True)
    handle = open(build_root / LOCK_NAME, "w")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logger.info(f"another book build is using {build_root}; waiting for it to finish")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held_locks.append(handle)


def setup(app):
    # Runs while Sphinx loads extensions, before it opens the saved environment.
    repo_root = _repository_root(Path(app.srcdir))
    build_root = Path(app.outdir).resolve().parent  # <book>/_build, or the --path-output
    # Where myst-nb puts the cache: <build folder>/.jupyter_cache unless configured, and a
    # configured relative path is taken from the working directory.
    cache_setting = app.config.nb_execution_cache_path
    cache_dir = Path(cache_setting).resolve() if cache_setting else build_root / ".jupyter_cache"
    doctree_dir = Path(app.doctreedir).resolve()
    stamp = build_root / STAMP_NAME
    dirty = build_root / DIRTY_NAME

    _lock_build_folder(build_root)

    current = inputs_digest(repo_root)
    previous = stamp.read_text().strip() if stamp.is_file() else None
    if previous != current:
        if previous is not None:
            logger.info("attncourse or constraints.txt changed: executing every page again")
        _remove_tree(cache_dir)
        _remove_tree(doctree_dir)
        build_root.mkdir(parents=True, exist_ok=True)
        stamp.write_text(current + "\n")
    elif dirty.exists():
        logger.info("the previous build had warnings or errors: reading every page again")
        _remove_tree(doctree_dir)

    def record_outcome(app, exception):
        failed = exception is not None or getattr(app, "_warncount", 0) > 0
        if failed:
            dirty.touch()
        elif dirty.exists():
            dirty.unlink()

    app.connect("build-finished", record_outcome)
    return {"version": "1.2", "parallel_read_safe": True, "parallel_write_safe": True}
