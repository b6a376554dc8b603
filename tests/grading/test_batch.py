"""``attncourse autograde``: a whole class, in parallel, resumable, with real nbgrader.

One class of ex01 submissions (honest, stub, catalogued mistakes, a crash, a hang and
attacks from the tamper catalogue) is graded twice: by serial ``nbgrader autograde`` in one
course directory, and by ``attncourse autograde --jobs 2`` in a copy, killed with SIGKILL
half-way and run again. Every cell's score must be the same in both gradebooks, every
student graded exactly once. Then: a worker killed while it grades, ``--force``, the
progress output on a terminal and off it, and two shards grading one PostgreSQL gradebook
at the same time.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest

from attncourse.grading.batch import Ledger, shard_of
from attncourse.grading.sandbox.isolation import descendants
from grading_helpers import venv_env
from nbgrader_course import Course, mistake_answer, reference_answers, submission
from tamper_catalogue import ATTACKS, RIGHT_LSE, RIGHT_SOFTMAX

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

EX01 = "ex01_stable_softmax"
SEED = {"ATTNCOURSE_GRADING_SEED": "20261130"}  # both runs draw the same cases


def class_plan() -> dict[str, dict[str, str]]:
    """student -> answer cells."""
    ref = reference_answers(EX01)
    attacks = {a.name: a for a in ATTACKS}
    return {
        "ada": ref,
        "ben": ref,
        "cleo": {},
        "dan": {**ref, "stable_softmax_answer": mistake_answer("softmax", "no_max_subtraction", "stable_softmax")},
        "eve": {**ref, "log_sum_exp_answer": mistake_answer("log_sum_exp", "lse_keeps_dim", "log_sum_exp")},
        "fay": {"stable_softmax_answer": RIGHT_SOFTMAX + "\nimport os\nos.kill(os.getpid(), 9)\n", "log_sum_exp_answer": RIGHT_LSE},
        "gus": {"stable_softmax_answer": RIGHT_SOFTMAX, "log_sum_exp_answer": "while True:\n    pass\n"},
        "hal": attacks["compare_patched"].cells,
        "ida": attacks["lookup_table_from_the_package"].cells,
        "joe": {"stable_softmax_answer": RIGHT_SOFTMAX},
    }


def _make_course(root: Path) -> Course:
    course = Course(root, [EX01], cell_timeout=10)
    course.extra_env = dict(SEED)
    course.generate()
    release = course.release_notebook(EX01)
    for student, answers in class_plan().items():
        course.submit(student, EX01, submission(release, answers))
    return course


def _autograde(course: Course, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "attncourse.cli", "autograde", EX01, *args],
        cwd=course.root, env={**venv_env(), **SEED}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )


def _scores(course: Course) -> dict[str, dict[str, float]]:
    return {student: course.cell_scores(EX01, student) for student in class_plan()}


def _ledger(course: Course) -> dict[str, dict]:
    ledger = Ledger(course.db_url)
    try:
        return ledger.entries(EX01)
    finally:
        ledger.dispose()


def _wait(condition, limit: float = 300.0, step: float = 0.2) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(step)


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                if "State:\tZ" not in status.read():
                    return False
        except FileNotFoundError:
            continue
    return True


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    serial = _make_course(tmp_path_factory.mktemp("serial"))
    result = serial.autograde(EX01)
    assert result.returncode == 0, result.stderr[-3000:]
    parallel_root = tmp_path_factory.mktemp("parallel")
    parallel = _make_course(parallel_root)

    # Kill the batch's parent with SIGKILL once a few submissions are graded.
    first = _autograde(parallel, "--jobs", "2")
    _wait(lambda: sum(e["state"] == "graded" for e in _ledger(parallel).values()) >= 3)
    below = descendants(first.pid)[1:]
    done_before_kill = {s for s, e in _ledger(parallel).items() if e["state"] == "graded"}
    first.send_signal(signal.SIGKILL)
    first.communicate()
    _wait(lambda: _gone(below), limit=60)

    second = _autograde(parallel, "--jobs", "2")
    out, err = second.communicate(timeout=1200)
    return serial, parallel, done_before_kill, second.returncode, out, err, below


def test_parallel_grades_equal_serial_nbgrader(classes):
    serial, parallel, *_ = classes
    assert _scores(parallel) == _scores(serial)
    expected = {"ada": 6, "ben": 6, "cleo": 0, "hal": 0, "ida": 0, "joe": 3, "fay": 3, "gus": 3}
    for student, total in expected.items():
        assert parallel.total_score(EX01, student) == total, student


def test_a_killed_batch_finishes_on_rerun_with_everyone_graded_once(classes):
    _serial, parallel, done_before_kill, returncode, out, err, below = classes
    assert returncode == 0, err[-3000:]
    assert below, "the batch had started workers"
    ledger = _ledger(parallel)
    assert set(ledger) == set(class_plan()) and all(e["state"] == "graded" for e in ledger.values())
    summary = out
    assert f"{len(done_before_kill)} up to date (skipped)" in summary
    assert f"{len(class_plan()) - len(done_before_kill)} graded" in summary
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{parallel.root}/gradebook.db") as gradebook:
        for student in class_plan():
            assert len([s for s in gradebook.find_student(student).submissions]) == 1
            grades = gradebook.find_submission_notebook(EX01, EX01, student).grades
            assert all(g.auto_score is not None for g in grades), student  # no half-written grade
            assert (parallel.root / "autograded" / student / EX01 / f"{EX01}.ipynb").is_file()


def test_plain_progress_lines_and_summary_when_not_on_a_terminal(classes):
    _serial, _parallel, _done, _code, out, _err, _below = classes
    lines = out.splitlines()
    assert lines[0].startswith("grading ")
    assert any(line.startswith("[1/") and " left" in line for line in lines)
    assert any("stable_softmax" in line and "out of" not in line for line in lines)  # a row of the table
    assert "mean" in out and "spread" in out


def test_a_killed_worker_costs_one_retry_and_force_regrades(classes):
    _serial, parallel, *_ = classes
    before = {s: e["finished"] for s, e in _ledger(parallel).items()}
    batch = _autograde(parallel, "--jobs", "2", "--force")
    _wait(lambda: len([p for p in descendants(batch.pid)[1:] if _is_batch_worker(p)]) == 2, limit=120)
    time.sleep(3)  # both workers have a submission in hand
    victim = [p for p in descendants(batch.pid)[1:] if _is_batch_worker(p)][0]
    os.kill(victim, signal.SIGKILL)
    out, err = batch.communicate(timeout=1200)
    assert batch.returncode == 0, out + err[-3000:]
    assert f"{len(class_plan())} graded, 0 up to date" in out
    after = _ledger(parallel)
    assert all(after[s]["finished"] > before[s] for s in before)  # --force graded everyone again
    rerun = _autograde(parallel, "--json")
    out, _ = rerun.communicate(timeout=600)
    summary = json.loads(out)
    assert rerun.returncode == 0 and summary["graded"] == [] and len(summary["skipped"]) == len(class_plan())


def _is_batch_worker(pid: int) -> bool:
    """A grading worker of the batch (not multiprocessing's resource tracker)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read()
    except OSError:
        return False
    return b"spawn_main" in command and b"resource_tracker" not in command


def test_a_progress_bar_on_a_terminal(classes):
    _serial, parallel, *_ = classes
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100 x 24 terminal
    process = subprocess.Popen(
        [sys.executable, "-m", "attncourse.cli", "autograde", EX01, "--student", "ada", "--student", "cleo", "--force", "--jobs", "1"],
        cwd=parallel.root, env={**venv_env(), **SEED, "COLUMNS": "100"}, stdout=secondary, stderr=secondary,
    )
    os.close(secondary)
    captured = b""
    while True:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            captured += chunk
        elif process.poll() is not None:
            break
    process.wait(timeout=600)
    os.close(main)
    text = captured.decode("utf-8", "replace")
    assert process.returncode == 0, text[-2000:]
    assert "2/2" in text and "%|" in text and "nb/s" in text  # tqdm's bar, count and rate
    assert "[1/2]" not in text  # no plain lines on a terminal


# ---------------------------------------------------------------------------------------
# Two shards, one PostgreSQL gradebook
# ---------------------------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster in a temporary folder, reachable on a Unix socket."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian's postgresql package; `make test` installs it as root)")
    tmp_path = Path(tempfile.mkdtemp(prefix="attncourse-postgres-"))  # under /tmp: the server's user can reach it
    data, sockets = tmp_path / "pgdata", tmp_path / "pgsock"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres account to start the server as")
        os.chmod(tmp_path, 0o755)
        for path in (sockets,):
            os.chown(path, account.pw_uid, account.pw_gid)
        as_user = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups"]
        data.mkdir()
        os.chown(data, account.pw_uid, account.pw_gid)
    port = "54329"

    def run(*command: str) -> None:
        result = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "gradebook", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"),
        "-o", f"-k {sockets} -p {port} -c listen_addresses=''", "start")
    try:
        run(str(bin_dir / "createdb"), "-h", str(sockets), "-p", port, "-U", "gradebook", "gradebook")
        yield f"postgresql://gradebook@/gradebook?host={sockets}&port={port}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_two_shards_grade_one_postgres_gradebook_at_once(tmp_path, postgres):
    root = tmp_path / "course"
    root.mkdir()
    course = Course(root, [EX01], cell_timeout=30)  # honest work only: no cell should come near it
    with open(root / "nbgrader_config.py", "a") as config:
        # PostgreSQL enforces the gradebook's foreign keys: an assignment needs its course.
        config.write(f"\nc.CourseDirectory.db_url = {postgres!r}\nc.CourseDirectory.course_id = 'attncourse'\n")
    course.db_url = postgres
    course.generate()
    release = course.release_notebook(EX01)
    ref = reference_answers(EX01)
    students = {f"s{i:02d}": (ref if i % 3 else {}) for i in range(8)}
    assert {shard_of(s, 2) for s in students} == {1, 2}  # both shards have work
    for student, answers in students.items():
        course.submit(student, EX01, submission(release, answers))
    shards = [_autograde(course, "--shard", f"{i}/2", "--jobs", "1") for i in (1, 2)]
    results = [process.communicate(timeout=1200) for process in shards]
    for process, (out, err) in zip(shards, results):
        assert process.returncode == 0, out + err[-3000:]
    graded = [line for out, _ in results for line in out.splitlines() if line.startswith(f"{EX01}:")]
    counts = [int(line.split(":")[1].split("graded")[0]) for line in graded]
    assert sorted(counts) == sorted(sum(shard_of(s, 2) == i for s in students) for i in (1, 2))
    exported = course.export()
    rows = [r for r in csv.DictReader(io.StringIO(exported)) if r["assignment"] == EX01]
    assert sorted(r["student_id"] for r in rows) == sorted(students)  # every student once
    for row in rows:
        assert float(row["score"]) == (6.0 if students[row["student_id"]] else 0.0), row
