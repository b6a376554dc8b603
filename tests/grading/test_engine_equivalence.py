"""The sandboxed engine gives every answer of the grader tests the verdict of an
in-process check: the right answers in other styles pass, the plausible wrong answers
fail the hidden suite. One sandbox per assignment runs them all (a notebook with one cell
per answer and one trusted test cell per check), so this also exercises the wire format,
the probes of ex06 and ex07 and the static read on many styles of code."""

from __future__ import annotations

import contextlib
import io

import pytest

import test_alternative_solutions as alternatives
import test_wrong_answers_fail as wrong_answers
from attncourse.grading.core import SUITES, TASKS, run_task_check
from attncourse.grading.mistakes import CATALOGUE
from grading_helpers import answer_cells
from sandbox_helpers import PREAMBLE, check_source, grade, notebook_of, source_with_helpers, variant_source

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ASSIGNMENT_OF = {task: assignment for task, (assignment, _gid) in answer_cells().items()}


def _plan():
    """assignment -> (cells, checks, expected verdict per grade id)."""
    plans: dict[str, tuple[list[str], dict[str, str], dict[str, bool]]] = {}
    entries = [(t, fn, "alt", known) for t, fn, known in alternatives.IMPLEMENTATIONS]
    entries += [(t, fn, "wrong", false_pass) for t, fn, false_pass in wrong_answers.WRONG_ANSWERS]
    for task, fn, kind, extra in entries:
        cells, checks, expected = plans.setdefault(ASSIGNMENT_OF[task], ([PREAMBLE], {}, {}))
        for source in source_with_helpers(fn, ("implements", "wrong")):
            if source not in cells:
                cells.append(source)
        suites = SUITES if kind == "alt" else ("hidden",)
        for suite in suites:
            gid = f"{kind}-{fn.__name__}-{suite}"
            checks[gid] = check_source(task, fn.__name__, suite)
            if kind == "alt":
                expected[gid] = suite not in extra  # a known false failure still fails
            else:
                expected[gid] = extra is not None  # a known false pass still passes
    return plans


PLANS = _plan()


@pytest.fixture(scope="module")
def verdicts():
    found = {}
    for assignment, (cells, checks, _expected) in PLANS.items():
        nb, trusted = notebook_of(cells, checks)
        result, report = grade(nb, trusted, timeout_for=lambda cell: 120)
        assert report.problems == [], report.problems
        found.update({(assignment, gid): verdict for gid, verdict in result.items()})
    return found


@pytest.mark.parametrize("assignment", sorted(PLANS))
def test_sandboxed_verdicts_equal_in_process_ones(verdicts, assignment):
    _cells, _checks, expected = PLANS[assignment]
    wrong = {
        gid: verdicts[(assignment, gid)][1][-600:]
        for gid, should_pass in expected.items()
        if verdicts[(assignment, gid)][0] != should_pass
    }
    assert wrong == {}


def _catalogue_plans():
    """Per assignment module, a notebook with every catalogued variant of that module that
    is a plain function, written out as notebook code, and a hidden-suite check of each:
    module -> (cells, checks, variants by grade id)."""
    plans: dict[str, tuple[list[str], dict[str, str], dict]] = {}
    for mistake in CATALOGUE.values():
        for task, variant in mistake.variants.items():
            try:
                source = variant_source(variant)
            except TypeError:
                continue  # wrapped variants (ex06's module, ex07's capture and plot)
            cells, checks, variants = plans.setdefault(variant.__module__, ([PREAMBLE], {}, {}))
            name = f"{mistake.name}__{task}"
            cells.append(source + f"\n\n{name} = {variant.__name__}\n")
            checks[name] = check_source(task, name, "hidden")
            variants[name] = (task, variant)
    return plans


def _hints(message: str) -> list[str]:
    return sorted(line for line in message.splitlines() if line.startswith(("Likely mistake", "Hint:")))


def test_catalogued_mistakes_get_their_in_process_verdict_and_hint():
    plans = _catalogue_plans()
    assert sum(len(variants) for _c, _k, variants in plans.values()) >= 40
    differ = {}
    for cells, checks, variants in plans.values():
        nb, trusted = notebook_of(cells, checks)
        result, report = grade(nb, trusted, timeout_for=lambda cell: 120)
        assert report.problems == []
        for gid, (task, variant) in variants.items():
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    run_task_check(task, variant, "hidden")
                local = (True, "")
            except AssertionError as exc:
                local = (False, str(exc))
            passed, text = result[gid]
            if passed != local[0] or _hints(text) != _hints(local[1]):
                differ[gid] = (local[1][-300:], text[-300:])
    assert differ == {}


def test_every_task_is_covered():
    covered = {task for task, *_ in alternatives.IMPLEMENTATIONS}
    assert covered == set(TASKS)
