"""``attncourse check NOTEBOOK``: grade an exercise notebook without nbgrader.

The self-study edition of the exercises, on the same engine as ``nbgrader autograde``
(:mod:`attncourse.grading.engine`): the notebook's test cells are replaced by the ones
shipped with the package (``attncourse/grading/data/<assignment>.json``, hidden tests
included), exactly as nbgrader's autograde restores them from its gradebook; the
notebook's own code runs in a sandbox, and the checks run in this process. A test cell
scores its points when its check passes (nbgrader's rule on the outputs the engine
writes). Every cell has a timeout; Ctrl-C stops the sandbox.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import nbformat

HINT_PREFIXES = ("Likely mistake", "Hint:")
# The set-up cell imports torch, which can take long on a busy machine: it gets at least
# this many seconds, whatever the per-cell timeout.
SETUP_TIMEOUT = 300


def cell_timeout(default: float, setup: float = SETUP_TIMEOUT):
    """Cell timeouts: ``default`` seconds per cell, more for the set-up cell."""

    def timeout_for(cell) -> int:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "setup":
            return int(max(default, setup))
        return int(default)

    return timeout_for


@dataclass
class TestResult:
    grade_id: str
    task: str
    suite: str
    points: float
    max_points: float
    passed: bool
    message: str = ""
    hints: list[str] = field(default_factory=list)


@dataclass
class NotebookResult:
    path: str
    assignment: str
    tests: list[TestResult]
    problem: str = ""  # something that stopped the run (the sandbox could not start)
    lost_cells: list[str] = field(default_factory=list)  # cells stopped by a crash or timeout
    review: list[str] = field(default_factory=list)  # notes for an instructor's review
    warnings: list[str] = field(default_factory=list)  # isolation weaker than asked for

    @property
    def score(self) -> float:
        return sum(t.points for t in self.tests)

    @property
    def max_score(self) -> float:
        return sum(t.max_points for t in self.tests)

    @property
    def passed(self) -> bool:
        return not self.problem and bool(self.tests) and all(t.passed for t in self.tests)


def shipped_data(assignment: str) -> dict | None:
    """What the package ships for ``assignment`` (test cells and locked cells), or None."""
    resource = resources.files("attncourse.grading") / "data" / f"{assignment}.json"
    if not resource.is_file():
        return None
    return json.loads(resource.read_text(encoding="utf-8"))


def shipped_tests(assignment: str) -> list[dict] | None:
    """The test cells shipped with the package for ``assignment``, or None."""
    data = shipped_data(assignment)
    return None if data is None else data["test_cells"]


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def prepare(nb: nbformat.NotebookNode, tests: list[dict]) -> list[str]:
    """Put the shipped test sources into ``nb``; return grade ids missing from it."""
    by_id = {_grade_id(c): c for c in nb.cells if _grade_id(c)}
    missing = []
    for test in tests:
        cell = by_id.get(test["grade_id"])
        if cell is None or cell.cell_type != "code":
            missing.append(test["grade_id"])
            continue
        cell.source = test["source"]
        cell.outputs = []
    return missing


def _split_grade_id(grade_id: str) -> tuple[str, str]:
    task, _, suite = grade_id.rpartition("_")
    return (task, suite) if suite in ("visible", "hidden") else (grade_id, "")


def judge_cell(cell) -> tuple[bool, str, list[str]]:
    """(passed, message, hints) from a test cell's outputs, nbgrader's rule."""
    if cell.get("execution_count") is None and not cell.get("outputs"):
        return False, "not run (the notebook stopped before this cell)", []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            text = f"{output.get('ename', '')}: {output.get('evalue', '')}".strip(": ")
            return False, text, _hints(output.get("evalue", ""))
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            return False, "wrote to stderr: " + output.get("text", "").strip()[:200], []
    return True, "", []


def _hints(evalue: str) -> list[str]:
    lines = [line.strip() for line in evalue.splitlines()]
    hints = [line for line in lines if line.startswith(HINT_PREFIXES)]
    hints += [line for line in lines if "delegation refused" in line]
    return hints


def grade_notebook(path: Path, timeout: float, isolation: str = "auto") -> NotebookResult:
    from .engine import NotebookGrader
    from .sandbox.isolation import Policy, SandboxError

    nb = nbformat.read(str(path), as_version=4)
    assignment = nb.metadata.get("attncourse", {}).get("assignment", path.stem)
    data = shipped_data(assignment)
    if data is None:
        return NotebookResult(str(path), assignment, [], f"no shipped tests for {assignment!r}")
    tests = data["test_cells"]
    missing = prepare(nb, tests)
    grader = NotebookGrader(
        nb,
        {t["grade_id"]: t["source"] for t in tests},
        instructor_cells={c["grade_id"]: c["source"] for c in data.get("locked_cells", [])},
        policy=Policy(isolation=isolation),
        timeout_for=cell_timeout(timeout),
        notebook_name=path.name,
    )
    try:
        report = grader.grade()
    except SandboxError as exc:
        return NotebookResult(str(path), assignment, [], f"the sandbox could not run the notebook: {exc}")
    cells = {_grade_id(c): c for c in nb.cells if _grade_id(c)}
    results = []
    for test in tests:
        task, suite = _split_grade_id(test["grade_id"])
        if test["grade_id"] in missing:
            passed, message, hints = False, "this test cell is missing from the notebook", []
        else:
            passed, message, hints = judge_cell(cells[test["grade_id"]])
        points = test["points"] if passed else 0
        results.append(TestResult(test["grade_id"], task, suite, points, test["points"], passed, message, hints))
    return NotebookResult(
        str(path), assignment, results, lost_cells=report.problems, review=report.review, warnings=report.warnings
    )


def format_table(result: NotebookResult) -> str:
    lines = [f"{result.assignment}  ({result.path})"]
    lines.append(f"  {'task':<28} {'test':<8} {'points':>7}  result")
    for t in result.tests:
        score = f"{t.points:g}/{t.max_points:g}"
        status = "passed" if t.passed else "FAILED"
        lines.append(f"  {t.task:<28} {t.suite:<8} {score:>7}  {status}")
        if not t.passed:
            for hint in t.hints or [t.message.splitlines()[0] if t.message else ""]:
                lines.append(f"      {hint}")
    if result.problem:
        lines.append(f"  stopped: {result.problem}")
    for lost in result.lost_cells:
        lines.append(f"  lost: {lost}")
    for note in result.review:
        lines.append(f"  for review: {note}")
    for warning in result.warnings:
        lines.append(f"  warning: {warning}")
    lines.append(f"  total {result.score:g}/{result.max_score:g}")
    return "\n".join(lines)


def run_check(paths: Sequence[str], as_json: bool = False, timeout: float = 120.0, isolation: str = "auto") -> int:
    """Grade each notebook, print a table (or JSON); 0 when everything passed, else 1."""
    results = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            print(f"attncourse check: no such notebook: {raw}", file=sys.stderr)
            return 2
        try:
            results.append(grade_notebook(path, timeout, isolation))
        except KeyboardInterrupt:
            print("attncourse check: interrupted; the sandbox was stopped", file=sys.stderr)
            return 130
    if as_json:
        payload = {
            "passed": all(r.passed for r in results),
            "notebooks": [
                {**asdict(r), "score": r.score, "max_score": r.max_score, "passed": r.passed}
                for r in results
            ],
        }
        print(json.dumps(payload, indent=1))
    else:
        print("\n\n".join(format_table(r) for r in results))
    return 0 if all(r.passed for r in results) else 1
