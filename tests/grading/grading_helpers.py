"""Shared helpers of the grader tests: notebooks, their answer cells, the venv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = REPO_ROOT / "solutions"
EXERCISES = REPO_ROOT / "exercises"


def assignment_names() -> list[str]:
    """Assignments = solutions/<name>/<name>.ipynb (the efficient-attention one included)."""
    return sorted(p.parent.name for p in SOLUTIONS.glob("*/*.ipynb") if p.stem == p.parent.name)


def notebook_path(edition: Path, name: str) -> Path:
    return edition / name / f"{name}.ipynb"


def read_notebook(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def grade_id(cell) -> str:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")


def answer_cells() -> dict[str, tuple[str, str]]:
    """task name -> (assignment, grade id of its answer cell), from the source notebooks."""
    found = {}
    for name in assignment_names():
        for cell in read_notebook(notebook_path(SOLUTIONS, name)).cells:
            gid = grade_id(cell)
            if gid.endswith("_answer"):
                found[gid[: -len("_answer")]] = (name, gid)
    return found


def function_from_notebook(path: Path, task_grade_id: str, function_name: str):
    """Run the set-up cell and one answer cell in a fresh namespace; return the function."""
    namespace: dict = {"__name__": "__student__"}
    for cell in read_notebook(path).cells:
        if grade_id(cell) in ("setup", task_grade_id):
            exec(compile(cell.source, f"<{path.name}:{grade_id(cell)}>", "exec"), namespace)
    return namespace[function_name]


def venv_env() -> dict[str, str]:
    """The environment with this interpreter's bin first on PATH (nbgrader runs alembic)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env
