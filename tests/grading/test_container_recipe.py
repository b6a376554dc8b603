"""The appendix's container recipe, with bubblewrap standing in for Docker.

The recipe makes a container the sandbox (``isolation="command"``): nbgrader and the
gradebook stay on the host, the engine talks to ``python -I -m
attncourse.grading.sandbox.worker --stdio`` in the container on its standard input and
output, and sends it the notebook's copy; nothing of the course directory is mounted.
Here the command is a bubblewrap line with the same properties (no network, the
Python installation and the library read-only, an empty ``/tmp`` as working directory, an
unprivileged user), so the test runs where no Docker daemon does. It checks the scores,
that the sandbox saw nothing of the course, and that ``generate_feedback`` and ``export``
run none of the submission's code.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys

import pytest

from attncourse.grading.sandbox.isolation import SYSTEM_DIRS, _ancestors, bwrap_works, library_paths
from nbgrader_course import Course, reference_answers, submission

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is not available to stand in for Docker"),
]

EX01 = "ex01_stable_softmax"


def docker_standin() -> list[str]:
    """What ``docker run -i --rm --network none --read-only --tmpfs /tmp --user 65534
    attncourse-sandbox python -I -m attncourse.grading.sandbox.worker --stdio`` gives,
    made with bubblewrap."""
    args = [shutil.which("bwrap"), "--perms", "1777", "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for directory in _ancestors(library_paths()):
        args += ["--perms", "0755", "--dir", directory]
    for path in library_paths():
        args += ["--ro-bind", path, path]
    args += [
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--new-session", "--chdir", "/tmp", "--",
    ]
    if os.geteuid() == 0:
        args += ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs"]
    return args + [sys.executable, "-I", "-m", "attncourse.grading.sandbox.worker", "--stdio"]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("container")
    course = Course(root, [EX01], cell_timeout=20)
    with open(root / "nbgrader_config.py", "a") as config:
        config.write(f'\nc.SandboxedExecute.isolation = "command"\nc.SandboxedExecute.sandbox_command = {docker_standin()!r}\n')
    course.generate()
    marker = root / "student_code_ran_here"
    release = course.release_notebook(EX01)
    sees_the_course = (
        "import os\n"
        f"assert not os.path.exists({str(root)!r}), 'the course directory is visible'\n"
        "try:\n"
        f"    open({str(marker)!r}, 'w').write('ran')  # only possible outside a sandbox\n"
        "except OSError:\n"
        "    pass\n"
    )
    answers = reference_answers(EX01)
    answers["stable_softmax_answer"] = sees_the_course + "\n" + answers["stable_softmax_answer"]
    course.submit("reference", EX01, submission(release, answers))
    course.submit("stub", EX01, submission(release, {}))
    steals = (
        "import json\n"
        f"for cell in json.load(open({str(root / 'source' / EX01 / (EX01 + '.ipynb'))!r}))['cells']:\n"
        "    exec(''.join(cell['source']))\n"
    )
    course.submit("thief", EX01, submission(release, {"stable_softmax_answer": steals}))
    autograde = course.autograde(EX01)
    marker_after_autograde = marker.exists()
    feedback = course.nbgrader("generate_feedback", EX01, "--force")
    exported = course.export()
    return course, autograde, feedback, exported, marker_after_autograde, marker


def test_scores_through_the_command_sandbox(graded):
    course, autograde, *_ = graded
    assert autograde.returncode == 0, autograde.stderr[-3000:]
    assert course.total_score(EX01, "reference") == 6
    assert course.total_score(EX01, "stub") == 0
    assert course.total_score(EX01, "thief") == 0


def test_the_sandbox_saw_nothing_of_the_course(graded):
    course, _autograde, _feedback, _exported, marker_after_autograde, _marker = graded
    assert not marker_after_autograde
    # The reference's first check passed: its assertion that the course is not visible held.
    assert course.cell_scores(EX01, "reference")["stable_softmax_visible"] == 1


def test_feedback_and_export_run_no_student_code(graded):
    course, _autograde, feedback, exported, _before, marker = graded
    assert feedback.returncode == 0, feedback.stderr[-3000:]
    assert not marker.exists()
    for student in ("reference", "stub", "thief"):
        assert (course.root / "feedback" / student / EX01 / f"{EX01}.html").is_file()
    rows = {r["student_id"]: float(r["score"]) for r in csv.DictReader(io.StringIO(exported)) if r["assignment"] == EX01}
    assert rows == {"reference": 6.0, "stub": 0.0, "thief": 0.0}


def test_the_log_says_the_memory_audit_is_not_measured_in_a_container(graded):
    _course, autograde, *_ = graded
    assert "its memory cannot be measured from here" in autograde.stderr
