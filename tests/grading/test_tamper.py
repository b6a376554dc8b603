"""The tamper catalogue, graded by the real ``nbgrader autograde`` as the course ships it.

Every attack of ``tamper_catalogue.py`` is submitted by its own student into one
temporary course, next to honest submissions, and the whole class is graded by one
``nbgrader autograde`` run per assignment (configured like ``nbgrader_config.py``, through
``attncourse.grading.nbgrader_plugin.configure``). Then:

- no attack gets a point it does not deserve (per test cell, from the gradebook);
- the honest submissions keep their exact scores;
- ``nbgrader_config.py``, the grading package, the other submissions and the gradebook's
  source cells are byte for byte as they were;
- ``attncourse check`` gives every attack the same points as the gradebook.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

import attncourse
from attncourse.grading.core import TASKS
from attncourse.grading.sandbox.isolation import bwrap_works
from grading_helpers import notebook_path, venv_env
from nbgrader_course import Course, reference_answers, submission
from tamper_catalogue import ATTACKS, CLASSES, EX08_ATTACKS, FULL_EX01, RIGHT_LSE, RIGHT_SOFTMAX, SOFTMAX_ONLY, Attack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is not available: the sandbox has no private file system here"),
]

EX01, EX08 = "ex01_stable_softmax", "ex08_efficient_attention"
CELL_TIMEOUT = 10


def _tree_hash(root: Path) -> dict[str, str]:
    """path -> sha256 of every file under ``root`` (links by their target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "link:" + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _source_cells(course: Course) -> dict[tuple[str, str], str]:
    from nbgrader.api import Gradebook

    cells = {}
    with Gradebook(f"sqlite:///{course.root}/gradebook.db") as gradebook:
        for name in course.assignments:
            notebook = gradebook.find_notebook(name, name)
            cells.update({(name, cell.name): cell.source for cell in notebook.source_cells})
    return cells


def _pasted_table() -> str:
    """The published cases' answers, as a student would paste them: repr of the flat
    input -> flat output of the reference, for every case of both suites."""
    task = TASKS["stable_softmax"]
    table = {}
    for suite in ("visible", "hidden"):
        for case in task.cases(suite):
            x = case.args[0]
            table[repr(x.flatten().tolist())] = task.reference(*case.args, **case.kwargs).flatten().tolist()
    return repr(table)


class _SolutionServer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the handler's API
        body = (RIGHT_SOFTMAX + "\n" + RIGHT_LSE).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _fill(source: str, paths: dict[str, str]) -> str:
    for key, value in paths.items():
        source = source.replace("{" + key + "}", value)
    return source


def _build(course: Course, name: str, attack: Attack, paths: dict[str, str]) -> nbformat.NotebookNode:
    release = course.release_notebook(name)
    nb = submission(release, {gid: _fill(source, paths) for gid, source in attack.cells.items()})
    for source in attack.extra:
        nb.cells.append(nbformat.v4.new_code_cell(_fill(source, paths)))
    if attack.edit is not None:
        attack.edit(nb)
    return nb


@pytest.fixture(scope="module")
def tampered(tmp_path_factory):
    root = tmp_path_factory.mktemp("tamper")
    os.chmod(root, 0o755)
    course = Course(root, [EX01, EX08], CELL_TIMEOUT)
    course.generate()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SolutionServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    paths = {
        "gradebook": str(root / "gradebook.db"),
        "config": str(root / "nbgrader_config.py"),
        "solutions": str(notebook_path(root / "source", EX01)),
        "other": str(notebook_path(root / "submitted" / "honest_reference", EX01)),
        "port": str(server.server_address[1]),
        "table": _pasted_table(),
    }
    honest = {
        EX01: {
            "honest_reference": (reference_answers(EX01), FULL_EX01),
            "honest_softmax_only": ({"stable_softmax_answer": RIGHT_SOFTMAX}, SOFTMAX_ONLY),
            "honest_stub": ({}, {}),
        },
        EX08: {"honest_ex08_reference": (reference_answers(EX08), None)},
    }
    for name, students in honest.items():
        for student, (answers, _points) in students.items():
            course.submit(student, name, submission(course.release_notebook(name), answers))
    notebooks: dict[str, Path] = {}
    for attack in ATTACKS + EX08_ATTACKS:
        student = f"attack_{attack.name}"
        folder = root / "submitted" / student / attack.assignment
        if attack.link:
            folder.mkdir(parents=True)
            (folder / f"{attack.assignment}.ipynb").symlink_to(notebook_path(root / "source", attack.assignment))
            (folder / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")
        else:
            course.submit(student, attack.assignment, _build(course, attack.assignment, attack, paths))
        for relative, text in attack.files.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(text)
        notebooks[attack.name] = folder / f"{attack.assignment}.ipynb"
    package = Path(attncourse.__file__).resolve().parent
    before = {
        "config": hashlib.sha256((root / "nbgrader_config.py").read_bytes()).hexdigest(),
        "package": _tree_hash(package),
        "submitted": _tree_hash(root / "submitted"),
        "source_cells": _source_cells(course),
    }
    course.extra_env = {"PYTHONDONTWRITEBYTECODE": "1"}
    checked = [a for a in ATTACKS + EX08_ATTACKS if a.self_check]
    # attncourse check grades the same notebooks while nbgrader does: the two cores share the work.
    check = subprocess.Popen(
        [sys.executable, "-m", "attncourse.cli", "check", "--json", "--timeout", str(CELL_TIMEOUT),
         *[str(notebooks[a.name]) for a in checked]],
        env={**venv_env(), "PYTHONDONTWRITEBYTECODE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    results = {name: course.autograde(name) for name in (EX01, EX08)}
    check_out, check_err = check.communicate(timeout=1800)
    check = subprocess.CompletedProcess(check.args, check.returncode, check_out, check_err)
    after = {
        "config": hashlib.sha256((root / "nbgrader_config.py").read_bytes()).hexdigest(),
        "package": _tree_hash(package),
        "submitted": _tree_hash(root / "submitted"),
        "source_cells": _source_cells(course),
    }
    server.shutdown()
    return course, honest, results, before, after, check, notebooks


def _deserved(attack: Attack) -> dict[str, float]:
    return dict(attack.deserved)


@pytest.mark.parametrize("attack", ATTACKS + EX08_ATTACKS, ids=lambda a: a.name)
def test_attack_gets_no_undeserved_point(tampered, attack):
    course, *_ = tampered
    student = f"attack_{attack.name}"
    try:
        scores = course.cell_scores(attack.assignment, student)
    except Exception:  # noqa: BLE001 - no submission row: nothing was scored
        scores = {}
    deserved = _deserved(attack)
    undeserved = {gid: score for gid, score in scores.items() if score > deserved.get(gid, 0)}
    assert undeserved == {}
    lost = {gid: points for gid, points in deserved.items() if scores.get(gid) != points}
    assert lost == {}, "honest answers next to the attack lost points"


def test_honest_submissions_keep_their_exact_scores(tampered):
    course, honest, results, *_ = tampered
    for name, result in results.items():
        assert result.returncode == 0, result.stderr[-3000:]
    for name, students in honest.items():
        for student, (_answers, points) in students.items():
            scores = course.cell_scores(name, student)
            if points is None:  # the reference: every cell full
                assert all(score == course.max_points(name, gid) for gid, score in scores.items()), scores
            else:
                assert {gid: s for gid, s in scores.items() if s} == points, (student, scores)


def test_course_files_package_and_other_submissions_are_unchanged(tampered):
    _course, _honest, _results, before, after, _check, _notebooks = tampered
    for key in ("config", "package", "submitted", "source_cells"):
        assert after[key] == before[key], key


def test_self_check_gives_the_attacks_the_gradebook_s_points(tampered):
    course, _honest, _results, _before, _after, check, notebooks = tampered
    assert check.stdout.strip(), check.stderr[-3000:]
    payload = json.loads(check.stdout)
    by_path = {entry["path"]: entry for entry in payload["notebooks"]}
    differ = {}
    for attack in ATTACKS + EX08_ATTACKS:
        if not attack.self_check:
            continue
        entry = by_path[str(notebooks[attack.name])]
        checked = {test["grade_id"]: test["points"] for test in entry["tests"]}
        graded = course.cell_scores(attack.assignment, f"attack_{attack.name}")
        if checked != graded:
            differ[attack.name] = (checked, graded)
    assert differ == {}


def test_the_catalogue_covers_every_class():
    counts = {klass: sum(a.klass == klass for a in ATTACKS + EX08_ATTACKS) for klass in CLASSES}
    assert len(ATTACKS + EX08_ATTACKS) >= 40
    assert all(count >= 3 for count in counts.values()), counts
