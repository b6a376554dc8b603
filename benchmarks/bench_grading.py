"""How long does grading take with the sandboxed engine, next to stock nbgrader?

Cases, on the same submissions in the same run:

* ``stock``: ``nbgrader autograde`` with nbgrader's own ``Execute`` (a Jupyter kernel per
  notebook, the checks inside the student's kernel: the design before the sandbox);
* ``sandboxed``: ``nbgrader autograde`` configured like the course's ``nbgrader_config.py``
  (``attncourse.grading.nbgrader_plugin``: the notebook in a sandbox, the checks outside).
  Target: at most 1.0 times stock, per notebook;
* ``self_check``: ``attncourse check`` on the same notebooks, one command for all of them,
  and one command for a single notebook (start-up included). Target: at most 10 s a
  notebook.

And for a whole class (``--part class``): 40 submissions of ex01_stable_softmax (the
reference, the stub and a catalogued mistake in turn), graded by serial ``nbgrader
autograde`` and by ``attncourse autograde --jobs 2`` in the same run (target: at most 0.6
of the serial time), then ``attncourse autograde --jobs 2`` on the first 10, 20 and 40
(the cost per notebook must stay flat), and, on a machine with more cores, with 4, 8 and
16 jobs.

Submissions: for every assignment (or those named), its reference solution and its
untouched release (the stub), so that both passing and failing checks are timed. Each
configuration grades them in a course directory of its own, in alternating order over
``--repeats`` rounds; the table shows the median seconds per notebook and the ratio.

Run: ``python -m benchmarks grading`` or ``python benchmarks/bench_grading.py
[--part engine|class|all] [--assignments ex01_stable_softmax ...] [--repeats N]``. Writes
``benchmarks/results/grading.json`` and ``benchmarks/results/grading_class.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BOOK_DATA = REPO / "book" / "data" / "grading_bench.json"  # what the instructors' appendix quotes

COURSE_CONFIG = """\
c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.db_url = "sqlite:///{root}/gradebook.db"
{engine}
"""
STOCK = """\
c.ExecutePreprocessor.timeout = 30


def _cell_timeout(cell):
    is_setup = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "setup"
    return 300 if is_setup else 30


c.ExecutePreprocessor.timeout_func = _cell_timeout
"""
SANDBOXED = """\
from attncourse.grading.nbgrader_plugin import configure

configure(c, timeout=30, setup_timeout=300)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _nbgrader(root: Path, *args: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=root, env=_env(), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def _solution_cells(name: str) -> dict[str, str]:
    nb = nbformat.read(str(REPO / "solutions" / name / f"{name}.ipynb"), as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }


def make_course(root: Path, engine: str, assignments: list[str]) -> list[Path]:
    """A course in ``root`` with a reference and a stub submission per assignment; returns
    the submitted notebooks."""
    (root / "nbgrader_config.py").write_text(COURSE_CONFIG.format(root=str(root), engine=engine))
    for name in assignments:
        shutil.copytree(REPO / "solutions" / name, root / "source" / name)
    for name in assignments:
        _nbgrader(root, "generate_assignment", name, "--force")
    notebooks = []
    for name in assignments:
        release = nbformat.read(str(root / "release" / name / f"{name}.ipynb"), as_version=4)
        answers = _solution_cells(name)
        for student, filled in (("reference", True), ("stub", False)):
            nb = nbformat.from_dict(release)
            if filled:
                for cell in nb.cells:
                    gid = cell.metadata.get("nbgrader", {}).get("grade_id")
                    if gid in answers:
                        cell.source = answers[gid]
            folder = root / "submitted" / student / name
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(folder / f"{name}.ipynb"))
            (folder / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")
            notebooks.append(folder / f"{name}.ipynb")
    return notebooks


def autograde_seconds(root: Path, assignments: list[str]) -> float:
    return sum(_nbgrader(root, "autograde", name, "--force") for name in assignments)


def check_seconds(notebooks: list[Path]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "attncourse.cli", "check", "--json", *map(str, notebooks)],
        env=_env(), capture_output=True, text=True,
    )
    return time.perf_counter() - start


def engine_part(assignments: list[str], repeats: int) -> dict:
    samples: dict[str, list[float]] = {"stock": [], "sandboxed": [], "self_check": [], "self_check_single": []}
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        os.chmod(tmp, 0o755)
        courses = {}
        for engine, config in (("stock", STOCK), ("sandboxed", SANDBOXED)):
            root = Path(tmp) / engine
            root.mkdir()
            courses[engine] = (root, make_course(root, config, assignments))
        count = len(courses["stock"][1])
        for round_ in range(repeats):
            order = ("stock", "sandboxed") if round_ % 2 == 0 else ("sandboxed", "stock")
            for engine in order:
                root, _ = courses[engine]
                samples[engine].append(autograde_seconds(root, assignments) / count)
            notebooks = courses["sandboxed"][1]
            samples["self_check"].append(check_seconds(notebooks) / count)
            samples["self_check_single"].append(check_seconds(notebooks[:1]))
    medians = {key: statistics.median(values) for key, values in samples.items()}
    ratio = statistics.median(s / t for s, t in zip(samples["sandboxed"], samples["stock"]))
    print(f"{count} notebooks ({len(assignments)} assignments x reference and stub), {repeats} rounds, "
          f"{os.cpu_count()} cores")
    print(f"  {'configuration':<46} {'s / notebook':>12}")
    print(f"  {'nbgrader autograde, stock (in-kernel checks)':<46} {medians['stock']:>12.2f}")
    print(f"  {'nbgrader autograde, sandboxed engine':<46} {medians['sandboxed']:>12.2f}")
    print(f"  {'attncourse check, all in one command':<46} {medians['self_check']:>12.2f}")
    print(f"  {'attncourse check, one notebook':<46} {medians['self_check_single']:>12.2f}")
    print(f"  ratio sandboxed / stock: {ratio:.2f} (target <= 1.0)")
    result = {
        "notebooks": count, "assignments": assignments, "rounds": repeats, "seconds_per_notebook": medians,
        "samples": samples, "ratio_sandboxed_over_stock": ratio, "machine": platform.platform(), "cores": os.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "grading.json").write_text(json.dumps(result, indent=1))
    return result


def make_class(root: Path, size: int, name: str = "ex01_stable_softmax") -> list[str]:
    """A sandboxed course with ``size`` submissions of one assignment; the students' ids."""
    (root / "nbgrader_config.py").write_text(COURSE_CONFIG.format(root=str(root), engine=SANDBOXED))
    shutil.copytree(REPO / "solutions" / name, root / "source" / name)
    _nbgrader(root, "generate_assignment", name, "--force")
    release = nbformat.read(str(root / "release" / name / f"{name}.ipynb"), as_version=4)
    answers = _solution_cells(name)
    wrong = {gid: source.replace("amax", "mean") for gid, source in answers.items()}  # shifts by the mean
    students = []
    for index in range(size):
        nb = nbformat.from_dict(release)
        chosen = (answers, {}, wrong)[index % 3]
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in chosen:
                cell.source = chosen[gid]
        student = f"student{index:03d}"
        folder = root / "submitted" / student / name
        folder.mkdir(parents=True)
        nbformat.write(nb, str(folder / f"{name}.ipynb"))
        (folder / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")
        students.append(student)
    return students


def batch_seconds(root: Path, students: list[str], jobs: int, name: str = "ex01_stable_softmax") -> float:
    args = [sys.executable, "-m", "attncourse.cli", "autograde", name, "--jobs", str(jobs), "--force"]
    for student in students:
        args += ["--student", student]
    start = time.perf_counter()
    result = subprocess.run(args, cwd=root, env=_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"attncourse autograde failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def class_part(size: int = 40) -> dict:
    name = "ex01_stable_softmax"
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench-class-") as tmp:
        os.chmod(tmp, 0o755)
        root = Path(tmp) / "course"
        root.mkdir()
        students = make_class(root, size)
        serial = _nbgrader(root, "autograde", name, "--force")
        parallel = batch_seconds(root, students, 2)
        scaling = {n: batch_seconds(root, students[:n], 2) / n for n in (10, 20, 40) if n <= size}
        more_jobs = {jobs: batch_seconds(root, students, jobs) for jobs in (4, 8, 16) if jobs <= cores}
    ratio = parallel / serial
    print(f"{size} submissions of {name}, {cores} usable cores")
    print(f"  serial nbgrader autograde:          {serial:7.1f} s  ({serial / size:.2f} s per notebook)")
    print(f"  attncourse autograde --jobs 2:      {parallel:7.1f} s  ({parallel / size:.2f} s per notebook)")
    print(f"  ratio parallel / serial: {ratio:.2f} (target <= 0.6)")
    print("  --jobs 2, seconds per notebook as the class grows: "
          + ", ".join(f"{n}: {seconds:.2f}" for n, seconds in scaling.items()))
    for jobs, seconds in more_jobs.items():
        print(f"  --jobs {jobs}: {seconds:.1f} s, speed-up over serial {serial / seconds:.2f}")
    result = {
        "submissions": size, "serial_seconds": serial, "parallel_seconds_jobs2": parallel, "ratio": ratio,
        "seconds_per_notebook_by_class_size": scaling, "seconds_by_jobs": more_jobs, "cores": cores,
        "machine": platform.platform(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "grading_class.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("engine", "class", "all"), default="all")
    parser.add_argument("--assignments", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--class-size", type=int, default=40)
    parser.add_argument("--write-book-data", action="store_true", help=f"also write {BOOK_DATA.relative_to(REPO)}")
    args = parser.parse_args(argv or [])
    assignments = args.assignments or sorted(
        p.parent.name for p in (REPO / "solutions").glob("*/*.ipynb") if p.stem == p.parent.name
    )
    measured = {}
    if args.part in ("engine", "all"):
        measured["engine"] = engine_part(assignments, args.repeats)
    if args.part in ("class", "all"):
        measured["class"] = class_part(args.class_size)
    if args.write_book_data:
        if set(measured) != {"engine", "class"}:
            raise SystemExit("--write-book-data needs --part all")
        measured["measured_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        BOOK_DATA.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
