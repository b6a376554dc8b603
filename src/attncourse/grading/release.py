"""Regenerate the student release and the self-study hidden tests.

    python -m attncourse.grading.release [NAME ...] [--release-dir DIR] [--data-dir DIR]

For every assignment in ``solutions/`` (or the ones named), this runs the real
``nbgrader generate_assignment`` into ``exercises/`` (outputs cleared, solutions replaced
by stubs, hidden tests removed), with a throwaway gradebook, and writes the test cells of
the source notebook (hidden tests included) to ``attncourse/grading/data/<name>.json``,
which ``attncourse check`` uses. Other directories can be given for tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = Path(__file__).resolve().parent / "data"


def assignment_names(source_dir: Path) -> list[str]:
    """Assignments = folders of ``solutions/`` holding a notebook of the same name."""
    return sorted(p.parent.name for p in source_dir.glob("*/*.ipynb") if p.stem == p.parent.name)


def _env_with_venv_on_path() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def generate(names: list[str], course_root: Path, release_dir: Path) -> None:
    """Run nbgrader's generate_assignment for each name, into ``release_dir``.

    nbgrader's Python API runs in this process (one start-up for all assignments); it
    creates a throwaway gradebook with ``alembic``, looked up on PATH.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    os.environ["PATH"] = _env_with_venv_on_path()["PATH"]
    with tempfile.TemporaryDirectory(prefix="attncourse-release-") as tmp:
        coursedir = CourseDirectory(
            root=str(course_root),
            source_directory="solutions",
            release_directory=str(release_dir),
            db_url="sqlite:///" + str(Path(tmp) / "gradebook.db"),
        )
        api = NbGraderAPI(coursedir=coursedir)
        for name in names:
            result = api.generate_assignment(name, force=True, create=True)
            if not result["success"]:
                raise RuntimeError(
                    f"nbgrader generate_assignment {name} failed:\n{result.get('error', '')}\n"
                    f"{result.get('log', '')}"
                )


def test_cells(notebook: nbformat.NotebookNode) -> list[dict]:
    """The graded test cells of a source notebook: grade_id, points, full source."""
    cells = []
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
            cells.append({"grade_id": meta["grade_id"], "points": meta.get("points", 0), "source": cell.source})
    return cells


def locked_cells(notebook: nbformat.NotebookNode) -> list[dict]:
    """The course's other locked code cells (the set-up cell): grade_id and source."""
    cells = []
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("locked") and not meta.get("grade") and cell.cell_type == "code":
            cells.append({"grade_id": meta["grade_id"], "source": cell.source})
    return cells


def hidden_tests_data(source_notebook: Path) -> dict:
    """What the self-study edition ships for one assignment."""
    nb = nbformat.read(str(source_notebook), as_version=4)
    name = nb.metadata.get("attncourse", {}).get("assignment", source_notebook.stem)
    return {"assignment": name, "test_cells": test_cells(nb), "locked_cells": locked_cells(nb)}


def write_data(names: list[str], source_dir: Path, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = hidden_tests_data(source_dir / name / f"{name}.ipynb")
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
        (data_dir / f"{name}.json").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="assignments (default: all in solutions/)")
    parser.add_argument("--course-root", type=Path, default=REPO_ROOT)
    parser.add_argument("--release-dir", type=Path, default=None, help="default: <root>/exercises")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    root = args.course_root.resolve()
    source_dir = root / "solutions"
    names = args.names or assignment_names(source_dir)
    release_dir = (args.release_dir or root / "exercises").resolve()
    generate(names, root, release_dir)
    write_data(names, source_dir, args.data_dir)
    print(f"released {len(names)} assignments to {release_dir}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
