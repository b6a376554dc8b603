"""A throwaway nbgrader course for the end-to-end test: build it, submit, autograde, read
the gradebook."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from grading_helpers import SOLUTIONS, grade_id, notebook_path, read_notebook, venv_env

CONFIG = """\
from attncourse.grading.nbgrader_plugin import configure

c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.db_url = "sqlite:///{root}/gradebook.db"
# The set-up cell imports torch, which is slow on a busy machine.
configure(c, timeout={timeout}, setup_timeout=300)
"""


class Course:
    """An nbgrader course directory in ``root`` holding copies of some assignments."""

    def __init__(self, root: Path, assignments: list[str], cell_timeout: int):
        self.root = root
        self.assignments = assignments
        (root / "nbgrader_config.py").write_text(CONFIG.format(root=str(root), timeout=cell_timeout))
        for name in assignments:
            shutil.copytree(SOLUTIONS / name, root / "source" / name)
        self.autograde_seconds: dict[str, float] = {}
        self.extra_env: dict[str, str] = {}
        self.db_url = f"sqlite:///{root}/gradebook.db"  # tests may point the course elsewhere

    def nbgrader(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nbgrader", *args],
            cwd=self.root, env={**venv_env(), **self.extra_env}, capture_output=True, text=True, timeout=1800,
        )

    def generate(self) -> None:
        for name in self.assignments:
            result = self.nbgrader("generate_assignment", name, "--force")
            assert result.returncode == 0, result.stderr

    def release_notebook(self, name: str) -> nbformat.NotebookNode:
        return read_notebook(notebook_path(self.root / "release", name))

    def submit(self, student: str, name: str, nb: nbformat.NotebookNode) -> None:
        folder = self.root / "submitted" / student / name
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(folder / f"{name}.ipynb"))
        (folder / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")

    def autograde(self, name: str) -> subprocess.CompletedProcess:
        start = time.monotonic()
        result = self.nbgrader("autograde", name, "--force")
        self.autograde_seconds[name] = time.monotonic() - start
        return result

    def export(self) -> str:
        result = self.nbgrader("export", "--to", str(self.root / "grades.csv"))
        assert result.returncode == 0, result.stderr
        return (self.root / "grades.csv").read_text()

    def cell_scores(self, name: str, student: str) -> dict[str, float]:
        """grade_id -> score of every graded cell of one submission, from the gradebook."""
        from nbgrader.api import Gradebook

        with Gradebook(self.db_url) as gradebook:
            notebook = gradebook.find_submission_notebook(name, name, student)
            return {grade.name: grade.score for grade in notebook.grades}

    def max_points(self, name: str, grade_id: str) -> float:
        from nbgrader.api import Gradebook

        with Gradebook(self.db_url) as gradebook:
            return gradebook.find_grade_cell(grade_id, name, name).max_score

    def total_score(self, name: str, student: str) -> float:
        from nbgrader.api import Gradebook

        with Gradebook(self.db_url) as gradebook:
            return gradebook.find_submission(name, student).score


# ---------------------------------------------------------------------------------------
# Building submissions from the release notebook
# ---------------------------------------------------------------------------------------


def reference_answers(name: str) -> dict[str, str]:
    """answer grade_id -> the source notebook's solution cell."""
    nb = read_notebook(notebook_path(SOLUTIONS, name))
    return {grade_id(c): c.source for c in nb.cells if grade_id(c).endswith("_answer")}


def mistake_answer(function_name: str, mistake: str, task: str) -> str:
    """An answer cell holding a catalogued wrong variant, written out as a student would
    (the variant's code and its helpers, no import of the grading package)."""
    from attncourse.grading.mistakes import CATALOGUE
    from sandbox_helpers import variant_source

    variant = CATALOGUE[mistake].variants[task]
    return variant_source(variant) + f"\n\n{function_name} = {variant.__name__}\n"


def submission(
    release: nbformat.NotebookNode,
    answers: dict[str, str],
    edit: dict[str, str] | None = None,
    delete: tuple[str, ...] = (),
) -> nbformat.NotebookNode:
    """A copy of the release notebook with answer cells replaced (by grade_id), other
    cells' sources edited, and some cells deleted."""
    nb = nbformat.from_dict(release)
    replacements = {**answers, **(edit or {})}
    kept = []
    for cell in nb.cells:
        gid = grade_id(cell)
        if gid in delete:
            continue
        if gid in replacements:
            cell.source = replacements[gid]
        kept.append(cell)
    nb.cells = kept
    return nb
