"""End to end with the real nbgrader and its gradebook, in a temporary course directory.

ex02_dot_product carries the full matrix: the reference, the untouched stub, every
catalogued mistake of its two tasks (paired, one per task, in the same submission), and
the faults: an infinite loop (stopped by the cell timeout), sys.exit(), os._exit(1) inside
the function and at the top of a cell, edited test cells (restored by nbgrader), a deleted
test cell, an exception at import, and a correct answer that makes torch warn. ex01 and
ex03 get one submission each (a mistake in the first task, the reference in the second). Every score is asserted, per cell,
from the gradebook; what a mistake should score is what the check gives it in-process.
"""

from __future__ import annotations

import contextlib
import csv
import io
from itertools import zip_longest

import pytest

from attncourse.grading.core import TASKS, run_task_check
from attncourse.grading.mistakes import CATALOGUE, applicable
from grading_helpers import SOLUTIONS, grade_id, notebook_path, read_notebook
from nbgrader_course import Course, mistake_answer, reference_answers, submission

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

CELL_TIMEOUT = 10  # seconds per cell in the test course (the real course uses 30)
FULL = "full"  # marker: the cell keeps all its points


def cell_points(name: str) -> dict[str, float]:
    """grade_id -> points of every graded cell of an assignment."""
    nb = read_notebook(notebook_path(SOLUTIONS, name))
    return {
        grade_id(c): c.metadata["nbgrader"]["points"]
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }


def in_process_points(task: str, fn) -> dict[str, str | int]:
    """What the checks give ``fn`` in this process: FULL or 0 per test cell of ``task``."""
    result = {}
    for suite in ("visible", "hidden"):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                run_task_check(task, fn, suite)
            result[f"{task}_{suite}"] = FULL
        except AssertionError:
            result[f"{task}_{suite}"] = 0
    return result


def both(task: str, value) -> dict[str, str | int]:
    return {f"{task}_visible": value, f"{task}_hidden": value}


INFINITE_LOOP = "def dot_scores(query, key):\n    while True:\n        pass"
EXIT_INSIDE = "import sys\n\ndef dot_scores(query, key):\n    sys.exit()"
OS_EXIT_INSIDE = "import os\n\ndef dot_scores(query, key):\n    os._exit(1)"
IMPORT_ERROR = "import attncourse_no_such_module\n\ndef dot_scores(query, key):\n    return query @ key.transpose(-2, -1)"
WARNS_BUT_RIGHT = (
    "def dot_scores(query, key):\n"
    "    copied = torch.tensor(key)  # UserWarning: copy construct from a tensor\n"
    "    return query @ copied.transpose(-2, -1)"
)


def ex02_plan() -> dict[str, tuple[dict, dict, dict, tuple]]:
    """student -> (answers, test-cell edits, expected per cell, deleted cells)."""
    ref = reference_answers("ex02_dot_product")
    ds, dpa = "dot_scores", "dot_product_attention"
    plan = {
        "reference": (ref, {}, {**both(ds, FULL), **both(dpa, FULL)}, ()),
        "stub": ({}, {}, {**both(ds, 0), **both(dpa, 0)}, ()),
    }
    # Faults in dot_scores, each paired with a catalogued mistake of dot_product_attention.
    ds_faults = [
        ("loop", INFINITE_LOOP, both(ds, 0)),
        ("sys_exit", EXIT_INSIDE, both(ds, 0)),
        ("os_exit", OS_EXIT_INSIDE, both(ds, 0)),
        ("import_error", IMPORT_ERROR, both(ds, 0)),
    ]
    ds_mistakes = [m.name for m in applicable(ds)]
    dpa_mistakes = [m.name for m in applicable(dpa)]
    ds_items = [("mistake_" + m, mistake_answer(ds, m, ds), in_process_points(ds, CATALOGUE[m].variants[ds])) for m in ds_mistakes]
    ds_items += ds_faults
    for index, (ds_item, dpa_mistake) in enumerate(zip_longest(ds_items, dpa_mistakes)):
        ds_label, ds_source, ds_expected = ds_item or ("reference", ref[f"{ds}_answer"], both(ds, FULL))
        answers = {f"{ds}_answer": ds_source}
        expected = dict(ds_expected)
        if dpa_mistake is None:
            answers[f"{dpa}_answer"] = ref[f"{dpa}_answer"]
            expected.update(both(dpa, FULL))
        else:
            source = mistake_answer(dpa, dpa_mistake, dpa)
            if ds_label == "sys_exit":
                source += "\n\nimport sys\nsys.exit()  # at the top of the cell: the cell fails, the function stays"
            if ds_label == "os_exit":
                source += "\n\nimport os\nos._exit(1)  # refused by protect_kernel in the set-up cell"
            answers[f"{dpa}_answer"] = source
            expected.update(in_process_points(dpa, CATALOGUE[dpa_mistake].variants[dpa]))
        edits = {}
        if ds_label == "mistake_scores_transposed":
            # A wrong answer whose test cells were edited to pass: nbgrader restores them.
            edits = {f"{ds}_visible": "print('passed')", f"{ds}_hidden": "pass"}
        plan[f"{index:02d}_{ds_label}_{dpa_mistake or 'reference'}"] = (answers, edits, expected, ())
    plan["warning_and_deleted_test"] = (
        {**ref, f"{ds}_answer": WARNS_BUT_RIGHT},
        {},
        {**both(ds, FULL), f"{dpa}_visible": FULL, f"{dpa}_hidden": 0},
        (f"{dpa}_hidden",),
    )
    return plan


def small_plan(name: str, first_mistake: str) -> dict[str, tuple[dict, dict, dict, tuple]]:
    """One submission: a catalogued mistake in the first task, the reference in the second."""
    ref = reference_answers(name)
    first, second = [gid[: -len("_answer")] for gid in ref]
    answers = {
        f"{first}_answer": mistake_answer(TASKS[first].function_name, first_mistake, first),
        f"{second}_answer": ref[f"{second}_answer"],
    }
    expected = {
        **in_process_points(first, CATALOGUE[first_mistake].variants[first]),
        **both(second, FULL),
    }
    return {f"mixed_{first_mistake}": (answers, {}, expected, ())}


PLANS = {
    "ex02_dot_product": ex02_plan,
    "ex01_stable_softmax": lambda: small_plan("ex01_stable_softmax", "no_max_subtraction"),
    "ex03_scaled_dot_product": lambda: small_plan("ex03_scaled_dot_product", "scale_by_d_k"),
}


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    course = Course(tmp_path_factory.mktemp("course"), sorted(PLANS), CELL_TIMEOUT)
    course.generate()
    plans = {name: make() for name, make in PLANS.items()}
    for name, plan in plans.items():
        release = course.release_notebook(name)
        for student, (answers, edits, _expected, deleted) in plan.items():
            course.submit(student, name, submission(release, answers, edits, deleted))
    outcomes = {name: course.autograde(name) for name in plans}
    return course, plans, outcomes, course.export()


def _cases():
    for name, make in PLANS.items():
        for student in make():
            yield name, student


@pytest.mark.parametrize("name, student", list(_cases()))
def test_score_of_every_cell_of_every_submission(graded_course, name, student):
    course, plans, _outcomes, _csv = graded_course
    _answers, _edits, expected, _deleted = plans[name][student]
    points = cell_points(name)
    want = {gid: (points[gid] if value == FULL else value) for gid, value in expected.items()}
    got = course.cell_scores(name, student)
    assert got == want
    assert course.total_score(name, student) == sum(want.values())


def test_autograde_went_through_every_submission_and_export_agrees(graded_course):
    course, plans, outcomes, exported = graded_course
    for name, result in outcomes.items():
        assert result.returncode == 0, result.stderr[-3000:]
    rows = {(r["assignment"], r["student_id"]): float(r["score"]) for r in csv.DictReader(io.StringIO(exported))}
    submitted = {(name, student) for name, plan in plans.items() for student in plan}
    assert submitted <= set(rows)
    for key, score in rows.items():
        # export lists every student for every assignment; no submission scores 0
        assert score == (course.total_score(*key) if key in submitted else 0.0)


def test_reference_scores_full_and_stub_zero(graded_course):
    course, _plans, _outcomes, _csv = graded_course
    points = cell_points("ex02_dot_product")
    assert course.total_score("ex02_dot_product", "reference") == sum(points.values()) == 6
    assert course.total_score("ex02_dot_product", "stub") == 0
    print(f"autograde seconds per assignment: {course.autograde_seconds}")
