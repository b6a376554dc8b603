"""exercises/ and the shipped hidden tests are what nbgrader makes of solutions/ now, and
nothing secret leaked into the release."""

from __future__ import annotations

import json
import re

import pytest

from attncourse.grading import release
from grading_helpers import EXERCISES, REPO_ROOT, SOLUTIONS, assignment_names, grade_id, notebook_path, read_notebook

pytestmark = pytest.mark.timeout(600)

NAMES = assignment_names()
SECRET_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", 'suite="hidden"')


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """Release every assignment again, into a temporary folder."""
    out = tmp_path_factory.mktemp("release")
    release.generate(NAMES, REPO_ROOT, out / "exercises")
    release.write_data(NAMES, SOLUTIONS, out / "data")
    return out


def _cells(nb):
    return [(c.cell_type, c.source, c.metadata.get("nbgrader")) for c in nb.cells]


def test_there_are_assignments():
    assert {"ex01_stable_softmax", "ex02_dot_product", "ex03_scaled_dot_product"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_exercises_are_up_to_date_with_solutions(regenerated, name):
    committed = notebook_path(EXERCISES, name)
    assert committed.is_file(), f"{committed} is missing: run python -m attncourse.grading.release {name}"
    fresh = read_notebook(notebook_path(regenerated / "exercises", name))
    current = read_notebook(committed)
    assert _cells(current) == _cells(fresh), f"exercises/{name} is out of date: rerun the release"
    assert current.metadata == fresh.metadata


@pytest.mark.parametrize("name", NAMES)
def test_shipped_hidden_tests_are_up_to_date(regenerated, name):
    shipped = REPO_ROOT / "src" / "attncourse" / "grading" / "data" / f"{name}.json"
    assert shipped.is_file(), f"{shipped} is missing: run the release"
    fresh = json.loads((regenerated / "data" / f"{name}.json").read_text())
    assert json.loads(shipped.read_text()) == fresh
    assert any("BEGIN HIDDEN TESTS" in cell["source"] for cell in fresh["test_cells"])


def _solution_lines(nb) -> set[str]:
    """Meaningful lines inside the solution regions of a source notebook."""
    lines = set()
    for cell in nb.cells:
        for region in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S):
            for line in region.splitlines():
                code = line.split("#", 1)[0].strip()
                if len(code) >= 12:
                    lines.add(code)
    return lines


@pytest.mark.parametrize("name", NAMES)
def test_no_solution_or_hidden_test_leaked(name):
    source = read_notebook(notebook_path(SOLUTIONS, name))
    released = read_notebook(notebook_path(EXERCISES, name))
    solution_lines = _solution_lines(source)
    assert solution_lines, "the source notebook has no solution region"
    for cell in released.cells:
        for marker in SECRET_MARKERS:
            assert marker not in cell.source, f"{marker!r} leaked into {grade_id(cell) or cell.cell_type}"
        if cell.cell_type == "code":
            code_lines = {line.split("#", 1)[0].strip() for line in cell.source.splitlines()}
            assert not (solution_lines & code_lines), f"solution code leaked into {grade_id(cell)}"


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_follow_the_layout_and_have_no_outputs(name):
    for edition in (SOLUTIONS, EXERCISES):
        nb = read_notebook(notebook_path(edition, name))
        assert nb.metadata["attncourse"]["assignment"] == name
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        ids = [grade_id(c) for c in nb.cells if grade_id(c)]
        assert ids[0] == "setup"
        tasks = [gid[: -len("_answer")] for gid in ids if gid.endswith("_answer")]
        assert tasks, "no task"
        for task in tasks:
            position = ids.index(f"{task}_answer")
            assert ids[position : position + 3] == [f"{task}_answer", f"{task}_visible", f"{task}_hidden"]
    released = read_notebook(notebook_path(EXERCISES, name))
    for cell in released.cells:
        if grade_id(cell).endswith("_answer"):
            assert "raise NotImplementedError()" in cell.source
