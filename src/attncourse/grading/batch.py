"""``attncourse autograde ASSIGNMENT``: grade a whole class, in parallel, resumably.

Run from the course directory. Every submission under ``submitted/*/ASSIGNMENT/`` is
graded by nbgrader's own ``autograde`` for that one student, configured by
``nbgrader_config.py`` (so with the sandboxed engine), in one of ``--jobs`` worker
processes; the gradebook rows and the autograded notebooks are nbgrader's, and
``generate_feedback``, ``export`` and formgrader work on them unchanged.

What makes a batch safe to stop at any moment:

- **One commit per submission.** The course's configuration saves a notebook's grades in
  one transaction (:class:`AtomicSaveAutoGrades`), after all its checks ran.
- **A ledger** in the gradebook's own database (table ``attncourse_autograde``) records,
  per assignment and student, the submitted timestamp that was graded, once nbgrader has
  finished with it. A submission whose ledger row matches its timestamp is skipped as up
  to date (unless ``--force``); any other, including one whose grading was cut short by a
  kill, is graded again, and grading is idempotent. So a rerun of the same command after
  ``kill -9``, Ctrl-C or a power cut finishes the class with every student graded once.
- **Workers die with the batch** (``PR_SET_PDEATHSIG``), and their sandboxes with them.
  A worker that dies or overruns ``--submission-timeout`` costs only its submission,
  which is tried once more, then recorded as failed with the reason.

``--shard I/N`` grades the students whose id hashes to slice I of N: N machines (or N
processes) sharing one PostgreSQL gradebook grade disjoint slices at the same time.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import statistics
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

LEDGER_TABLE = "attncourse_autograde"
RETRIES = 1  # a submission whose worker died is tried this many more times
LOCKED_RETRIES = 3  # and one that met a locked SQLite database, this many


# ---------------------------------------------------------------------------------------
# The course
# ---------------------------------------------------------------------------------------


def load_config(course_dir: Path):
    """nbgrader's configuration for the course directory (its ``nbgrader_config.py``)."""
    from nbgrader.apps.baseapp import NbGrader

    previous = os.getcwd()
    os.chdir(course_dir)
    try:
        app = NbGrader()
        app.load_config_file()
        return app.config
    finally:
        os.chdir(previous)


def _coursedir(config, course_dir: Path):
    from nbgrader.coursedir import CourseDirectory

    coursedir = CourseDirectory(config=config)
    if not coursedir.root or coursedir.root == os.getcwd():
        coursedir.root = str(course_dir)
    return coursedir


@dataclass(frozen=True)
class Submission:
    student: str
    timestamp: str  # the submitted timestamp, or "" when the folder has none


def find_submissions(coursedir, assignment: str) -> list[Submission]:
    """Every student with a folder ``submitted/<student>/<assignment>/``, sorted."""
    root = Path(coursedir.root) / coursedir.submitted_directory
    found = []
    for folder in sorted(root.glob(f"*/{assignment}")):
        if not folder.is_dir():
            continue
        stamp = folder / "timestamp.txt"
        timestamp = stamp.read_text(encoding="utf-8", errors="replace").strip() if stamp.is_file() else ""
        found.append(Submission(folder.parent.name, timestamp))
    return found


def shard_of(student: str, shards: int) -> int:
    """The slice (1 to ``shards``) a student falls in, the same on every machine."""
    return zlib.crc32(student.encode("utf-8")) % shards + 1


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, total = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N, such as 1/2, got {text!r}") from None
    if total < 1 or not 1 <= index <= total:
        raise argparse.ArgumentTypeError(f"--shard I/N needs 1 <= I <= N, got {text!r}")
    return index, total


# ---------------------------------------------------------------------------------------
# The ledger
# ---------------------------------------------------------------------------------------


class Ledger:
    """Which submission (assignment, student, timestamp) was graded to the end, in the
    gradebook's database, so that every machine of a sharded batch sees the same."""

    def __init__(self, db_url: str):
        import sqlalchemy as sa

        self.sa = sa
        self.engine = sa.create_engine(db_url)
        self.table = sa.Table(
            LEDGER_TABLE,
            sa.MetaData(),
            sa.Column("assignment", sa.String(128), primary_key=True),
            sa.Column("student", sa.String(128), primary_key=True),
            sa.Column("timestamp", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),  # "graded" or "failed"
            sa.Column("reason", sa.Text, nullable=False, default=""),
            sa.Column("seconds", sa.Float, nullable=False, default=0.0),
            sa.Column("finished", sa.Float, nullable=False, default=0.0),
        )
        for attempt in range(3):  # shards starting together may race to create it
            try:
                self.table.metadata.create_all(self.engine, checkfirst=True)
                break
            except sa.exc.SQLAlchemyError:
                if attempt == 2:
                    raise
                time.sleep(0.5)

    def entries(self, assignment: str) -> dict[str, dict]:
        with self.engine.connect() as connection:
            rows = connection.execute(self.sa.select(self.table).where(self.table.c.assignment == assignment))
            return {row.student: dict(row._mapping) for row in rows}

    def record(self, assignment: str, student: str, timestamp: str, state: str, reason: str = "", seconds: float = 0.0) -> None:
        values = {"timestamp": timestamp, "state": state, "reason": reason[:4000], "seconds": seconds, "finished": time.time()}
        key = (self.table.c.assignment == assignment) & (self.table.c.student == student)
        with self.engine.begin() as connection:  # one transaction
            if connection.execute(self.sa.select(self.table.c.student).where(key)).first() is None:
                connection.execute(self.sa.insert(self.table).values(assignment=assignment, student=student, **values))
            else:
                connection.execute(self.sa.update(self.table).where(key).values(**values))

    def dispose(self) -> None:
        self.engine.dispose()


# ---------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def worker_main(connection, course_dir: str, parent_pid: int) -> None:
    """A grading process: nbgrader's autograde for one student at a time, on request."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.chdir(course_dir)
    import warnings

    from sqlalchemy.exc import SAWarning

    warnings.simplefilter("ignore", SAWarning)  # nbgrader's own, harmless, one per submission
    from nbgrader.apps import NbGraderAPI

    from . import nbgrader_plugin

    config = load_config(Path(course_dir))
    api = NbGraderAPI(coursedir=_coursedir(config, Path(course_dir)), config=config)
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        if request is None:
            return
        assignment, student = request
        nbgrader_plugin.REPORTS.clear()
        start = time.monotonic()
        result = api.autograde(assignment, student, force=True, create=True)
        reports = list(nbgrader_plugin.REPORTS)
        connection.send({
            "student": student,
            "success": bool(result.get("success")),
            "error": str(result.get("error") or "")[-4000:],
            "log": str(result.get("log") or "")[-4000:],
            "problems": [p for r in reports for p in r.problems],
            "review": [p for r in reports for p in r.review],
            "warnings": [p for r in reports for p in r.warnings],
            "seconds": time.monotonic() - start,
        })


class Worker:
    def __init__(self, context, course_dir: Path):
        parent_end, child_end = context.Pipe()
        self.connection = parent_end
        self.process = context.Process(target=worker_main, args=(child_end, str(course_dir), os.getpid()), daemon=True)
        self.process.start()
        child_end.close()
        self.task: Submission | None = None
        self.started = 0.0

    def send(self, assignment: str, submission: Submission) -> None:
        self.task = submission
        self.started = time.monotonic()
        self.connection.send((assignment, submission.student))

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


# ---------------------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    student: str
    state: str  # "graded", "skipped" (up to date) or "failed"
    reason: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class BatchSummary:
    assignment: str
    graded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    jobs: int = 1
    shard: str = ""
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


def run_batch(
    course_dir: Path,
    assignment: str,
    *,
    jobs: int,
    students: list[str] | None = None,
    force: bool = False,
    shard: tuple[int, int] | None = None,
    submission_timeout: float = 3600.0,
    progress=None,
) -> BatchSummary:
    """Grade the class; ``progress(done, total, outcome)`` is called after each submission."""
    start = time.monotonic()
    config = load_config(course_dir)
    coursedir = _coursedir(config, course_dir)
    summary = BatchSummary(assignment, jobs=jobs, shard=f"{shard[0]}/{shard[1]}" if shard else "")
    submissions = find_submissions(coursedir, assignment)
    if students:
        wanted = set(students)
        submissions = [s for s in submissions if s.student in wanted]
    if shard is not None:
        submissions = [s for s in submissions if shard_of(s.student, shard[1]) == shard[0]]
    ledger = Ledger(coursedir.db_url)
    done = ledger.entries(assignment)
    todo: list[Submission] = []
    for submission in submissions:
        entry = done.get(submission.student)
        if not force and entry and entry["state"] == "graded" and entry["timestamp"] == submission.timestamp:
            summary.skipped.append(submission.student)
        else:
            todo.append(submission)
    total, finished = len(todo), 0
    if progress is not None:
        progress(0, total, None)
    if todo:
        _prepare_gradebook(coursedir, assignment)
    context = multiprocessing.get_context("spawn")
    workers: list[Worker] = []
    attempts: dict[str, int] = {}
    queue = list(todo)
    try:
        workers = [Worker(context, course_dir) for _ in range(min(jobs, len(todo)))]

        def replace(dead: Worker) -> Worker:
            dead.kill()
            fresh = Worker(context, course_dir)
            workers[workers.index(dead)] = fresh
            return fresh

        idle = list(workers)
        busy: list[Worker] = []
        while queue or busy:
            while idle and queue:
                worker = idle.pop()
                if not worker.process.is_alive():  # died while idle: replace it
                    worker = replace(worker)
                try:
                    worker.send(assignment, queue[0])
                except (BrokenPipeError, OSError):
                    idle.append(replace(worker))
                    continue
                queue.pop(0)
                busy.append(worker)
            waitables = [w.connection for w in busy] + [w.process.sentinel for w in busy]
            ready = multiprocessing.connection.wait(waitables, timeout=5.0)
            for worker in list(busy):
                outcome = None
                submission = worker.task
                if worker.connection in ready:
                    try:
                        reply = worker.connection.recv()
                    except (EOFError, OSError):
                        reply = None
                    if reply is not None:
                        outcome = _outcome_of(reply, submission)
                        if outcome.state == "retry" and attempts.get(submission.student, 0) < LOCKED_RETRIES:
                            attempts[submission.student] = attempts.get(submission.student, 0) + 1
                            queue.append(submission)
                            outcome = None
                        elif outcome.state == "retry":
                            outcome.state = "failed"
                        busy.remove(worker)
                        idle.append(worker)
                        if outcome is None:
                            continue
                if outcome is None and (not worker.process.is_alive() or time.monotonic() - worker.started > submission_timeout):
                    overrun = worker.process.is_alive()
                    busy.remove(worker)
                    idle.append(replace(worker))
                    reason = (
                        f"grading took longer than {submission_timeout:g} s" if overrun
                        else f"the grading process died ({_exit_reason(worker.process.exitcode)})"
                    )
                    tries = attempts.get(submission.student, 0)
                    if not overrun and tries < RETRIES:
                        attempts[submission.student] = tries + 1
                        queue.append(submission)
                        continue
                    outcome = Outcome(submission.student, "failed", reason, time.monotonic() - worker.started)
                if outcome is None:
                    continue
                ledger.record(assignment, submission.student, submission.timestamp, outcome.state, outcome.reason, outcome.seconds)
                if outcome.state == "graded":
                    summary.graded.append(outcome.student)
                else:
                    summary.failed[outcome.student] = outcome.reason
                if outcome.notes:
                    summary.notes[outcome.student] = outcome.notes
                finished += 1
                if progress is not None:
                    progress(finished, total, outcome)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        for worker in workers:
            if summary.interrupted:
                worker.kill()
            else:
                worker.stop()
        ledger.dispose()
    summary.tasks = task_statistics(coursedir.db_url, assignment, [s.student for s in submissions])
    summary.seconds = time.monotonic() - start
    return summary


def _prepare_gradebook(coursedir, assignment: str) -> None:
    """Make sure the gradebook knows the assignment before workers write to it at once."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(coursedir.db_url, coursedir.course_id) as gradebook:
        try:
            gradebook.find_assignment(assignment)
        except MissingEntry:
            raise SystemExit(
                f"attncourse autograde: the gradebook has no assignment {assignment!r}; "
                "run `nbgrader generate_assignment` for it first"
            ) from None


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _outcome_of(reply: dict, submission: Submission) -> Outcome:
    notes = [f"lost: {p}" for p in reply["problems"]] + [f"review: {p}" for p in reply["review"]]
    notes += [f"warning: {w}" for w in reply["warnings"]][:1]
    if reply["success"]:
        return Outcome(submission.student, "graded", "", reply["seconds"], notes)
    text = reply["error"] + reply["log"]
    if "database is locked" in text:
        return Outcome(submission.student, "retry", "the gradebook was locked", reply["seconds"])
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "Error" in line]
    reason = (errors or lines or ["nbgrader autograde failed"])[-1].strip()
    return Outcome(submission.student, "failed", reason[:500], reply["seconds"], notes)


def task_statistics(db_url: str, assignment: str, students: list[str]) -> dict[str, dict[str, float]]:
    """Per task (grade ids ``<task>_visible`` and ``<task>_hidden`` summed): the mean,
    standard deviation, minimum and maximum of the graded students' scores, and the
    task's maximum."""
    from nbgrader.api import Gradebook, MissingEntry

    per_task: dict[str, list[float]] = {}
    maximum: dict[str, float] = {}
    with Gradebook(db_url) as gradebook:
        for student in students:
            try:
                submission = gradebook.find_submission(assignment, student)
            except MissingEntry:
                continue
            totals: dict[str, float] = {}
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if grade.auto_score is None and grade.manual_score is None:
                        continue
                    task = grade.name.rsplit("_", 1)[0] if grade.name.endswith(("_visible", "_hidden")) else grade.name
                    totals[task] = totals.get(task, 0.0) + float(grade.score)
                    maximum[task] = maximum.get(task, 0.0)
            for task, value in totals.items():
                per_task.setdefault(task, []).append(value)
        try:
            for notebook in gradebook.find_assignment(assignment).notebooks:
                for cell in notebook.grade_cells:
                    task = cell.name.rsplit("_", 1)[0] if cell.name.endswith(("_visible", "_hidden")) else cell.name
                    if task in maximum:
                        maximum[task] += float(cell.max_score)
        except MissingEntry:
            pass
    return {
        task: {
            "mean": statistics.fmean(values),
            "stdev": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
            "out_of": maximum.get(task, math.nan),
            "students": len(values),
        }
        for task, values in per_task.items()
    }


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


def format_summary(summary: BatchSummary) -> str:
    lines = [
        f"{summary.assignment}: {len(summary.graded)} graded, {len(summary.skipped)} up to date (skipped), "
        f"{len(summary.failed)} failed, in {summary.seconds:.1f} s with {summary.jobs} jobs"
        + (f", shard {summary.shard}" if summary.shard else "")
        + (" -- INTERRUPTED: run the same command again to finish" if summary.interrupted else "")
    ]
    if summary.tasks:
        lines.append(f"  {'task':<28} {'mean':>6} {'spread':>7} {'min':>5} {'max':>5}  out of  students")
        for task, s in summary.tasks.items():
            lines.append(
                f"  {task:<28} {s['mean']:>6.2f} {s['stdev']:>7.2f} {s['min']:>5g} {s['max']:>5g}  "
                f"{s['out_of']:>6g}  {s['students']:>8d}"
            )
    for student, reason in summary.failed.items():
        lines.append(f"  FAILED {student}: {reason}")
    for student, notes in summary.notes.items():
        for note in notes[:5]:
            lines.append(f"  {student}: {note}")
    return "\n".join(lines)


class _Progress:
    """A progress bar on a terminal (tqdm), plain lines otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.bar = None
        self.start = time.monotonic()

    def __call__(self, done: int, total: int, outcome: Outcome | None) -> None:
        if self.stream.isatty():
            if self.bar is None:
                import shutil

                from tqdm import tqdm

                size = shutil.get_terminal_size()  # a terminal that was never sized says 0 x 0
                self.bar = tqdm(
                    total=total, unit="nb", file=self.stream, ncols=max(size.columns, 40), nrows=max(size.lines, 24)
                )
            if outcome is not None:
                self.bar.set_postfix_str(f"{outcome.student}: {outcome.state}", refresh=False)
                self.bar.update(1)
            return
        if outcome is None:
            print(f"grading {total} submissions", file=self.stream, flush=True)
            return
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else 0.0
        print(
            f"[{done}/{total}] {outcome.student}: {outcome.state}"
            + (f" ({outcome.reason})" if outcome.reason else "")
            + f" in {outcome.seconds:.1f} s; {rate:.2f}/s, about {left:.0f} s left",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("assignment", help="the assignment to grade, as nbgrader names it")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="submissions graded at once (default: the usable cores)")
    parser.add_argument("--student", action="append", default=None, help="grade only this student (repeatable)")
    parser.add_argument("--force", action="store_true", help="grade again submissions already graded from the same timestamp")
    parser.add_argument("--shard", type=parse_shard, default=None, help="I/N: grade slice I of N of the class (several machines, one gradebook)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--submission-timeout", type=float, default=3600.0, help="seconds one submission may take in all (default 3600)")
    parser.add_argument("--course-dir", type=Path, default=Path.cwd(), help="the course directory (default: the current one)")


def main(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        print("attncourse autograde: --jobs must be at least 1", file=sys.stderr)
        return 2
    course_dir = args.course_dir.resolve()
    if not (course_dir / "nbgrader_config.py").is_file():
        print(f"attncourse autograde: no nbgrader_config.py in {course_dir}; run it from the course directory", file=sys.stderr)
        return 2
    progress = _Progress(sys.stderr if args.json else sys.stdout)
    try:
        summary = run_batch(
            course_dir, args.assignment, jobs=args.jobs, students=args.student, force=args.force,
            shard=args.shard, submission_timeout=args.submission_timeout, progress=progress,
        )
    finally:
        progress.close()
    if args.json:
        print(json.dumps({**asdict(summary), "ok": summary.ok}, indent=1))
    else:
        print(format_summary(summary))
    if summary.interrupted:
        return 130
    return 0 if summary.ok else 1

