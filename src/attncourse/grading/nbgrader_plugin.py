"""The grading engine inside ``nbgrader autograde``.

``nbgrader_config.py`` calls :func:`configure`, which puts :class:`SandboxedExecute` in
the place of nbgrader's ``Execute`` among the autograde preprocessors, and
:class:`SanitizeSubmission` first among the sanitising ones. Everything else of
nbgrader stays: ``OverwriteCells`` restores the locked cells from the gradebook first,
``SaveAutoGrades`` then scores each test cell from its outputs (0 for an error, full
points otherwise), and formgrader, feedback and export work as before.

``SandboxedExecute`` takes the trusted sources of the test cells (and of the other locked
cells) from the gradebook, not from the notebook, and lets :class:`~attncourse.grading.
engine.NotebookGrader` run the notebook: the student's cells in the sandbox, the checks
here, the test cells' outputs written from the checks' verdicts only.
"""

from __future__ import annotations

import os

from nbgrader.preprocessors import NbGraderPreprocessor, SaveAutoGrades
from traitlets import Any, Integer, List, Unicode

from .engine import GradingReport, NotebookGrader
from .sandbox.isolation import Limits, Policy, resolve_isolation

# The engine's reports of the notebooks graded in this process, for `attncourse
# autograde`'s workers (which run nbgrader's autograde in-process and read them after).
REPORTS: list[GradingReport] = []


class SandboxedExecute(NbGraderPreprocessor):
    """Run a submission with the sandboxed engine (replaces nbgrader's ``Execute``)."""

    timeout = Integer(30, help="Seconds a cell (or a test cell's check) may run.").tag(config=True)
    timeout_func = Any(
        None, allow_none=True, help="Optional: a function of the cell giving its timeout in seconds."
    ).tag(config=True)
    isolation = Unicode(
        "auto",
        help="'bwrap' (required), 'basic' (no private file system), 'auto', or 'command' (sandbox_command).",
    ).tag(config=True)
    sandbox_command = List(
        Unicode(),
        default_value=[],
        help="With isolation='command': the command that starts a sandbox speaking on stdin/stdout, e.g. "
        "['docker', 'run', '-i', '--rm', '--network', 'none', 'attncourse-sandbox', 'python', '-I', '-m', "
        "'attncourse.grading.sandbox.worker', '--stdio'].",
    ).tag(config=True)
    sandbox_user = Unicode(
        "auto",
        help="The account student code runs as when the grader is root; 'auto': a user id of its own for every sandbox.",
    ).tag(config=True)
    cpu_seconds = Integer(900, help="CPU seconds one sandbox may use in all.").tag(config=True)
    memory_mb = Integer(8192, help="Address space of one sandbox, in MiB.").tag(config=True)
    file_size_mb = Integer(256, help="Largest file one sandbox may write, in MiB.").tag(config=True)
    processes = Integer(128, help="Processes and threads of the sandbox's user.").tag(config=True)
    max_restarts = Integer(6, help="Restarts of a sandbox that died, per notebook.").tag(config=True)

    def policy(self) -> Policy:
        limits = Limits(
            cpu_seconds=self.cpu_seconds,
            address_space_bytes=self.memory_mb * 2**20,
            file_size_bytes=self.file_size_mb * 2**20,
            processes=self.processes,
        )
        return Policy(isolation=self.isolation, user=self.sandbox_user, limits=limits, command=tuple(self.sandbox_command))

    def cell_timeout(self, cell) -> float:
        if self.timeout_func is not None:
            return float(self.timeout_func(cell))
        return float(self.timeout)

    def preprocess(self, nb, resources):
        policy = self.policy()
        resolve_isolation(policy)  # a sandbox that cannot be made stops here, not as 0 points
        trusted, instructor = gradebook_sources(resources)
        grader = NotebookGrader(
            nb,
            trusted,
            instructor_cells=instructor,
            policy=policy,
            timeout_for=self.cell_timeout,
            notebook_name=f"{resources['nbgrader']['notebook']}.ipynb",
            max_restarts=self.max_restarts,
        )
        report = grader.grade()
        REPORTS.append(report)
        who = f"{resources['nbgrader'].get('student')}/{resources['nbgrader']['notebook']}"
        for warning in report.warnings:
            self.log.warning("%s: %s", who, warning)
        for problem in report.problems:
            self.log.warning("%s: %s", who, problem)
        for note in report.review:
            self.log.warning("%s: for review: %s", who, note)
        self.log.info("%s graded in the sandbox in %.1f s (%d restarts)", who, report.seconds, report.restarts)
        return nb, resources


def gradebook_sources(resources) -> tuple[dict[str, str], dict[str, str]]:
    """(test cells, other locked code cells) of the notebook, grade id -> source, as
    ``generate_assignment`` stored them in the gradebook."""
    from nbgrader.api import Gradebook

    info = resources["nbgrader"]
    with Gradebook(info["db_url"]) as gradebook:
        notebook = gradebook.find_notebook(info["notebook"], info["assignment"])
        graded = {cell.name for cell in notebook.grade_cells}
        answers = {cell.name for cell in notebook.solution_cells}
        tests, locked = {}, {}
        for cell in notebook.source_cells:
            if cell.cell_type != "code":
                continue
            if cell.name in graded and cell.name not in answers:
                tests[cell.name] = cell.source
            elif cell.locked and cell.name not in graded:
                locked[cell.name] = cell.source
    return tests, locked


class SanitizeSubmission(NbGraderPreprocessor):
    """First among the sanitising preprocessors: a submission that nbgrader would choke on
    is made gradable, or graded 0, without stopping the class's batch.

    - **Symbolic links.** nbgrader reads the submitted notebook by its path and copies
      the folder; a link would make it read (and copy into the feedback) a file of the
      submitter's choosing, such as a source notebook with its solutions. Every code cell
      the student controls is replaced by a line that raises, so every check fails, and
      the log says why.
    - **nbgrader metadata the student wrote.** A cell whose grade id the gradebook does
      not know loses its nbgrader metadata (a student cannot create graded cells); of
      several cells with one grade id, all but the last lose it (what nbgrader's
      ``DeduplicateIds`` does, but its empty metadata then fails validation and aborts
      the whole ``autograde`` run); a known cell gets the role, points and schema
      version the gradebook gives it (an answer cell that claims to be graded makes
      ``OverwriteCells`` fail on the notebook). ``OverwriteCells`` then restores the
      known cells' sources.
    """

    def preprocess(self, nb, resources):
        self._refuse_links(nb, resources)
        self._clean_metadata(nb, resources)
        return nb, resources

    def _refuse_links(self, nb, resources) -> None:
        folder = resources.get("metadata", {}).get("path") or ""
        links = []
        for root, dirs, files in os.walk(folder):
            for entry in dirs + files:
                if os.path.islink(os.path.join(root, entry)):
                    links.append(os.path.relpath(os.path.join(root, entry), folder))
        if not links:
            return
        message = (
            f"the submission folder holds symbolic links ({', '.join(sorted(links)[:5])}): "
            "it is graded 0; replace the links by the files themselves"
        )
        self.log.warning("%s/%s: %s", resources["nbgrader"].get("student"), resources["nbgrader"]["notebook"], message)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.source = f"raise RuntimeError({message!r})"

    def _clean_metadata(self, nb, resources) -> None:
        from nbgrader.api import Gradebook
        from nbgrader.nbgraderformat import SCHEMA_VERSION

        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gradebook:
            notebook = gradebook.find_notebook(info["notebook"], info["assignment"])
            locked = {cell.name: bool(cell.locked) for cell in notebook.source_cells}
            points = {cell.name: cell.max_score for cell in notebook.grade_cells}
            answers = {cell.name for cell in notebook.solution_cells}
        last = {}
        for index, cell in enumerate(nb.cells):
            gid = _grade_id_of(cell)
            if gid is not None:
                last[gid] = index
        for index, cell in enumerate(nb.cells):
            if "nbgrader" not in cell.get("metadata", {}):
                continue
            gid = _grade_id_of(cell)
            if gid not in locked or last.get(gid) != index:
                self.log.warning("%s: nbgrader metadata removed from a cell (grade id %r)", info.get("student"), gid)
                del cell.metadata["nbgrader"]
                continue
            meta = {"grade_id": gid, "grade": gid in points, "solution": gid in answers, "locked": locked[gid],
                    "schema_version": SCHEMA_VERSION, "task": False}
            if gid in points:
                meta["points"] = points[gid]
            cell.metadata["nbgrader"] = meta  # what the gradebook says this cell is


def _grade_id_of(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    if not isinstance(meta, dict):
        return None
    gid = meta.get("grade_id")
    return gid if isinstance(gid, str) else None


class AtomicSaveAutoGrades(SaveAutoGrades):
    """nbgrader's ``SaveAutoGrades`` with one commit per notebook instead of one per cell:
    a notebook's grades are in the gradebook all together or not at all, whenever the
    grading is cut short."""

    def preprocess(self, nb, resources):
        from nbconvert.preprocessors import Preprocessor
        from nbgrader.api import Gradebook

        self.notebook_id = resources["nbgrader"]["notebook"]
        self.assignment_id = resources["nbgrader"]["assignment"]
        self.student_id = resources["nbgrader"]["student"]
        self.db_url = resources["nbgrader"]["db_url"]
        self.gradebook = Gradebook(self.db_url)
        with self.gradebook:
            session = self.gradebook.db
            session.commit = session.flush  # the per-cell commits only send the changes
            try:
                nb, resources = Preprocessor.preprocess(self, nb, resources)
            except BaseException:
                session.rollback()
                raise
            finally:
                del session.commit
            session.commit()
        return nb, resources


def configure(c, *, timeout: int = 30, setup_timeout: int = 300, **options) -> None:
    """Set nbgrader's configuration ``c`` to autograde with the sandboxed engine.

    ``timeout``: seconds per cell; the set-up cell (grade id ``setup``) gets
    ``setup_timeout``. Other keyword arguments set traits of :class:`SandboxedExecute`
    (``isolation``, ``sandbox_user``, ``cpu_seconds``, ``memory_mb``...).
    """
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        ClearOutput,
        DeduplicateIds,
        IgnorePattern,
        LimitOutput,
        OverwriteCells,
        OverwriteKernelspec,
    )

    c.Autograde.sanitize_preprocessors = [
        SanitizeSubmission,
        ClearOutput,
        DeduplicateIds,
        OverwriteKernelspec,
        OverwriteCells,
        CheckCellMetadata,
    ]
    c.Autograde.autograde_preprocessors = [
        SandboxedExecute,
        IgnorePattern,
        ClearMetadataPreprocessor,
        LimitOutput,
        AtomicSaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]
    c.SandboxedExecute.timeout = timeout
    c.SandboxedExecute.timeout_func = SetupTimeout(timeout, setup_timeout)
    for key, value in options.items():
        setattr(c.SandboxedExecute, key, value)


class SetupTimeout:
    """Cell timeouts: ``setup`` seconds for the set-up cell (it imports torch), else
    ``default``."""

    def __init__(self, default: float, setup: float):
        self.default = default
        self.setup = setup

    def __call__(self, cell) -> float:
        is_setup = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "setup"
        return self.setup if is_setup else self.default
