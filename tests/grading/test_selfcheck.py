"""`attncourse check`: the self-study grading of a notebook, without nbgrader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from attncourse.cli import main
from attncourse.grading import selfcheck
from grading_helpers import EXERCISES, SOLUTIONS, grade_id, notebook_path, read_notebook, venv_env
from nbgrader_course import mistake_answer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NAME = "ex02_dot_product"
RELEASE = notebook_path(EXERCISES, NAME)
SOLUTION = notebook_path(SOLUTIONS, NAME)


def _release_with_answers(tmp_path: Path, answers: dict[str, str]) -> Path:
    """A copy of the ex02 release notebook with some cells replaced (by grade id)."""
    nb = read_notebook(RELEASE)
    for cell in nb.cells:
        if grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
    path = tmp_path / f"{NAME}.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_release_scores_zero_and_a_faulty_notebook_gets_hints(tmp_path, capsys):
    # dot_scores loops forever (stopped by the per-cell timeout); dot_product_attention
    # has a catalogued mistake and its visible test was edited away (check restores it).
    faulty = _release_with_answers(
        tmp_path,
        {
            "dot_scores_answer": "def dot_scores(query, key):\n    while True:\n        pass",
            "dot_product_attention_answer": mistake_answer(
                "dot_product_attention", "softmax_over_query_axis", "dot_product_attention"
            ),
            "dot_product_attention_visible": "pass",
        },
    )
    status = main(["check", str(RELEASE), str(faulty), "--json", "--timeout", "10"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1 and report["passed"] is False
    released, broken = report["notebooks"]

    assert released["assignment"] == NAME
    assert (released["score"], released["max_score"]) == (0, 6)
    assert [t["grade_id"] for t in released["tests"]] == [
        "dot_scores_visible", "dot_scores_hidden",
        "dot_product_attention_visible", "dot_product_attention_hidden",
    ]
    assert all("NotImplementedError" in " ".join(t["hints"]) for t in released["tests"])

    tests = {t["grade_id"]: t for t in broken["tests"]}
    assert broken["score"] == 0
    assert "Timeout" in tests["dot_scores_visible"]["message"] or "KeyboardInterrupt" in tests["dot_scores_visible"]["message"]
    for suite in ("visible", "hidden"):
        hints = tests[f"dot_product_attention_{suite}"]["hints"]
        assert hints and hints[0].startswith("Likely mistake [softmax_over_query_axis]")


def test_solution_scores_full_and_exits_zero(capsys):
    assert main(["check", str(SOLUTION)]) == 0
    out = capsys.readouterr().out
    assert "total 6/6" in out and "FAILED" not in out


def test_missing_notebook_and_unknown_assignment(tmp_path, capsys):
    assert selfcheck.run_check([str(tmp_path / "nope.ipynb")]) == 2
    stray = tmp_path / "mine.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(stray))
    assert selfcheck.run_check([str(stray)]) == 1
    assert "no shipped tests" in capsys.readouterr().out


def test_ctrl_c_stops_the_command_and_its_sandbox(tmp_path):
    hang = "def dot_scores(query, key):\n    while True:\n        pass"
    path = _release_with_answers(tmp_path, {"dot_scores_answer": hang})
    # Ctrl-C at a terminal: SIGINT reaches a Python whose handler raises KeyboardInterrupt.
    # The handler is set explicitly because a test runner's process may have SIGINT
    # ignored, which a child inherits (Python then installs no handler at all).
    command = [
        sys.executable, "-c",
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from attncourse.cli import main; sys.exit(main())",
    ]
    process = subprocess.Popen([*command, "check", str(path), "--timeout", "300"], env=venv_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _sandbox_processes(process.pid), "the sandbox never started")
        sandbox = _sandbox_processes(process.pid)
        time.sleep(8)  # the set-up cell, the answer, then the check's endless call
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err
    _wait_for(lambda: not any(_alive(pid) for pid in sandbox), "the sandbox survived Ctrl-C")


def _sandbox_processes(root: int) -> list[int]:
    """The processes below ``root`` that run the sandbox's worker."""
    from attncourse.grading.sandbox.isolation import descendants

    found = []
    for pid in descendants(root)[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"attncourse.grading.sandbox.worker" in handle.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper counts as gone
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except FileNotFoundError:
        return False


def _wait_for(condition, message: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.5)
