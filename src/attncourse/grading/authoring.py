"""Helpers to write nbgrader source notebooks with the course's cell layout.

The committed notebooks in ``solutions/`` are the source of truth; these helpers only
save typing when a notebook is first written (see AUTHORING.md). Every notebook has:

1. a locked set-up cell (grade_id ``setup``) that imports torch and protects the kernel;
2. per task: a markdown explanation linking to the chapter, an autograded-answer cell
   (grade_id ``<task>_answer``) with ``### BEGIN SOLUTION``/``### END SOLUTION``, a
   visible test cell (``<task>_visible``) and a hidden test cell (``<task>_hidden``) whose
   body sits between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``;
3. notebook metadata ``attncourse.assignment`` naming the assignment (the self-check uses
   it to find the shipped hidden tests).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

# The published book (its html_baseurl in _config.yml): notebooks link to its pages, and
# to a section with "#<label>", the MyST label before the section's heading.
BOOK_BASE_URL = "https://attncourse.github.io/attncourse/"
BOOK_URL = BOOK_BASE_URL + "book/{chapter}.html"
VISIBLE_POINTS = 1
HIDDEN_POINTS = 2
VISIBLE_CASES_INTRO = "The visible test ({points} point) runs these cases:"

SETUP_SOURCE = """\
# Set-up (locked): run this cell first.
import math

import torch

from attncourse.grading import protect_kernel

protect_kernel()  # a stray os._exit in a cell fails that cell instead of killing the kernel
torch.set_printoptions(precision=4, sci_mode=False)"""


def _nbgrader(grade_id: str, *, grade: bool, solution: bool, locked: bool, points: int | None = None) -> dict:
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def book_link(text: str, chapter: str, section: str | None = None) -> str:
    """A Markdown link to a page of the published book, or to one of its sections."""
    url = BOOK_URL.format(chapter=chapter) + (f"#{section}" if section else "")
    return f"[{text}]({url})"


def visible_case_names(task: str) -> list[str]:
    """The names of the cases that the visible test of ``task`` runs, in order."""
    from . import checks  # noqa: F401 - registers every task
    from .core import TASKS

    return [case.name for case in TASKS[task].cases("visible")]


def visible_cases_markdown(task: str) -> str:
    """The paragraph of a task's explanation that says what its visible test covers."""
    lines = [VISIBLE_CASES_INTRO.format(points=VISIBLE_POINTS), ""]
    lines += [f"- {name}" for name in visible_case_names(task)]
    lines += [
        "",
        f"The hidden tests ({HIDDEN_POINTS} points) run these kinds of cases again, with other "
        "random numbers, and a few more.",
    ]
    return "\n".join(lines)


def markdown(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def setup_cell(extra: str = "") -> nbformat.NotebookNode:
    source = SETUP_SOURCE + ("\n" + extra.strip() if extra.strip() else "")
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata.update(_nbgrader("setup", grade=False, solution=False, locked=True))
    return cell


def answer_cell(task: str, signature: str, docstring: str, solution: str) -> nbformat.NotebookNode:
    """``def <signature>:`` with a docstring, the solution, and the release stub."""
    body = "\n".join("    " + line if line else "" for line in solution.strip().splitlines())
    source = (
        f"def {signature}:\n"
        f'    """{docstring.strip()}\n    """\n'
        "    ### BEGIN SOLUTION\n"
        f"{body}\n"
        "    ### END SOLUTION"
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata.update(_nbgrader(f"{task}_answer", grade=False, solution=True, locked=False))
    return cell


def visible_test_cell(task: str, check: str, function: str) -> nbformat.NotebookNode:
    source = (
        f"# Test (visible, {VISIBLE_POINTS} point): run this cell to check your {function}.\n"
        f"from attncourse.grading.checks import {check}\n\n"
        f"{check}({function})"
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata.update(
        _nbgrader(f"{task}_visible", grade=True, solution=False, locked=True, points=VISIBLE_POINTS)
    )
    return cell


def hidden_test_cell(task: str, check: str, function: str) -> nbformat.NotebookNode:
    source = (
        f"# Hidden tests ({HIDDEN_POINTS} points) run here when your notebook is graded;\n"
        "# `attncourse check <this notebook>` runs them for self-study.\n"
        "### BEGIN HIDDEN TESTS\n"
        f"from attncourse.grading.checks import {check}\n\n"
        f'{check}({function}, suite="hidden")\n'
        "### END HIDDEN TESTS"
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata.update(
        _nbgrader(f"{task}_hidden", grade=True, solution=False, locked=True, points=HIDDEN_POINTS)
    )
    return cell


def task_cells(
    task: str, check: str, signature: str, docstring: str, solution: str, explanation: str
) -> list[nbformat.NotebookNode]:
    """The four cells of one task: explanation, answer, visible test, hidden test."""
    function = signature.split("(", 1)[0]
    return [
        markdown(explanation),
        answer_cell(task, signature, docstring, solution),
        visible_test_cell(task, check, function),
        hidden_test_cell(task, check, function),
    ]


def write_notebook(path: Path, assignment: str, cells: list) -> None:
    """Write an output-free notebook with the course's notebook metadata."""
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["attncourse"] = {"assignment": assignment}
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"{assignment.split('_')[0]}-{index:02d}"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
