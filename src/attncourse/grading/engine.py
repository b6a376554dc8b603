"""The grading engine: a notebook's code runs in a sandbox, its checks run here.

:class:`NotebookGrader` goes through a notebook cell by cell, the way a kernel would:

- a cell the student controls (every code cell but the trusted test cells) runs in the
  sandbox (:mod:`attncourse.grading.sandbox`), and what it printed or raised comes back
  as plain text for the cell's outputs;
- a **trusted test cell** (its grade id is one of the course's test cells and its source
  is exactly the course's) runs *in this process*, with every name the notebook defines
  replaced by a :class:`RemoteName`: a check such as ``check_softmax(softmax,
  suite="hidden")`` then runs the student's ``softmax`` in the sandbox through it, and
  compares, diagnoses and decides here. The cell's outputs are written from the verdict
  only: a stdout stream when it passes, an error when it fails, never anything the
  sandbox produced.

A cell that kills the sandbox (``os._exit``, a crash, a memory limit) or runs past its
timeout loses its own outputs or check; the sandbox is started again and the cells that
ran before are replayed (without their outputs) before grading goes on. A cell that kills
the sandbox is not replayed, and after ``max_restarts`` restarts the remaining cells
are reported as not run.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import nbformat

from . import static_audit
from .core import Case, Outcome, RemoteObject, Task, TaskRun, call, compare
from .audit import OpRecord
from .sandbox import wire
from .sandbox.isolation import Policy, Sandbox, SandboxDied, SandboxError, SandboxTimeout

DEFAULT_TIMEOUT = 30.0
SETUP_TIMEOUT = 300.0
MEMORY_CASE_TIMEOUT = 120.0


def default_timeout(cell) -> float:
    """30 s a cell, 300 s for the set-up cell (it imports torch)."""
    return SETUP_TIMEOUT if grade_id(cell) == "setup" else DEFAULT_TIMEOUT


def grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


@dataclass
class GradingReport:
    """What happened while grading one notebook, beyond the cells' outputs."""

    restarts: int = 0
    problems: list[str] = field(default_factory=list)  # cells lost to crashes, timeouts
    review: list[str] = field(default_factory=list)  # notes for the instructor
    warnings: list[str] = field(default_factory=list)  # weaker isolation than asked for
    seconds: float = 0.0


class StudentCodeError(Exception):
    """The student's function raised, or could not be run, when a trusted test called it."""


class NotebookGrader:
    """Grade one notebook: ``grade()`` fills every code cell's outputs and returns a report.

    ``trusted_tests`` maps the grade id of each test cell to its trusted source; only a
    cell with that grade id and exactly that source runs in this process.
    ``instructor_cells`` does the same for the other cells the course provides (the
    locked set-up cell): they run in the sandbox like the rest, but the static read of
    the student's code leaves them out. ``timeout_for`` gives each cell's timeout in
    seconds.
    """

    def __init__(
        self,
        nb: nbformat.NotebookNode,
        trusted_tests: dict[str, str],
        *,
        instructor_cells: dict[str, str] | None = None,
        policy: Policy | None = None,
        timeout_for: Callable[[Any], float] = default_timeout,
        notebook_name: str = "notebook.ipynb",
        max_restarts: int = 6,
    ):
        self.nb = nb
        self.trusted_tests = trusted_tests
        self.instructor_cells = instructor_cells or {}
        self.policy = policy or Policy()
        self.timeout_for = timeout_for
        self.notebook_name = notebook_name
        self.max_restarts = max_restarts
        self.report = GradingReport()
        self.sandbox: Sandbox | None = None
        self._history: list[int] = []  # indices of cells run in the sandbox, in order
        self._poison: set[int] = set()  # cells that killed the sandbox: never replayed
        self._deadline: float | None = None
        self._current_cell: int | None = None
        self._code_numbers = {}  # cell index -> its number among code cells (from 1)
        number = 0
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                number += 1
                self._code_numbers[index] = number

    # -- which cells are which ----------------------------------------------------------

    def is_trusted_test(self, cell) -> bool:
        gid = grade_id(cell)
        return (
            cell.cell_type == "code"
            and gid in self.trusted_tests
            and cell.source == self.trusted_tests[gid]
        )

    def is_instructor_cell(self, cell) -> bool:
        gid = grade_id(cell)
        return cell.cell_type == "code" and gid in self.instructor_cells and cell.source == self.instructor_cells[gid]

    def code_cells(self, before: int | None = None) -> list[static_audit.CodeCell]:
        """The code cells before a cell, test cells left out, for the static read: the
        student's, and the course's own (``trusted``), which define names but are never
        reported."""
        end = len(self.nb.cells) if before is None else before
        return [
            static_audit.CodeCell(self._code_numbers[i], cell.source, trusted=self.is_instructor_cell(cell))
            for i, cell in enumerate(self.nb.cells[:end])
            if cell.cell_type == "code" and not self.is_trusted_test(cell)
        ]

    # -- the run ------------------------------------------------------------------------

    def grade(self) -> GradingReport:
        start = time.monotonic()
        data = nbformat.writes(self.nb).encode("utf-8")
        self._notebook_bytes = data
        count = 0
        try:
            for index, cell in enumerate(self.nb.cells):
                if cell.cell_type != "code":
                    continue
                count += 1
                self._current_cell = index
                cell.execution_count = count
                if self.is_trusted_test(cell):
                    cell.outputs = self._run_trusted_test(index, cell)
                else:
                    cell.outputs = self._run_student_cell(index, cell)
            findings = static_audit.notebook_findings(self.code_cells())
            self.report.review += [
                f"{f.where()}: {f.text} (no effect on grading under the sandbox)" for f in findings if f.kind == "hook"
            ]
        finally:
            self._stop()
            self.report.seconds = time.monotonic() - start
        return self.report

    def _stop(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None

    # -- the sandbox, started and restarted ----------------------------------------------

    def _ensure_sandbox(self) -> Sandbox:
        """A live sandbox in the state of the notebook so far (restarted and replayed)."""
        while self.sandbox is None or not self.sandbox.alive:
            if self.sandbox is not None:
                self.sandbox.close()
                self.sandbox = None
                self.report.restarts += 1
            if self.report.restarts > self.max_restarts:
                raise SandboxDied(f"the sandbox was restarted {self.max_restarts} times; giving up on this notebook")
            sandbox = Sandbox(self.policy, self._notebook_bytes, self.notebook_name)
            sandbox.start()
            self.report.warnings += [w for w in sandbox.warnings if w not in self.report.warnings]
            self.sandbox = sandbox
            for index in list(self._history):
                if index in self._poison:
                    continue
                try:
                    sandbox.request(
                        {"op": "run_cell", "source": self.nb.cells[index].source},
                        timeout=self.timeout_for(self.nb.cells[index]),
                    )
                except SandboxError:
                    self._poison.add(index)
                    break
        return self.sandbox

    def _request(self, header: dict, buffers: list[bytes] = (), timeout: float | None = None) -> tuple[dict, list[bytes]]:
        sandbox = self._ensure_sandbox()
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            timeout = left if timeout is None else min(timeout, left)
            if timeout <= 0:
                sandbox.kill()
                raise SandboxTimeout("the test cell's time ran out")
        return sandbox.request(header, buffers, timeout=timeout)

    # -- student cells -----------------------------------------------------------------

    def _run_student_cell(self, index: int, cell) -> list:
        timeout = self.timeout_for(cell)
        try:
            answer, _ = self._request({"op": "run_cell", "source": cell.source}, timeout=timeout)
        except SandboxTimeout:
            self._poison.add(index)
            self._history.append(index)
            self.report.problems.append(f"code cell {self._code_numbers[index]}: stopped after {timeout:g} s")
            return [_error_output("CellTimeoutError", f"the cell ran longer than {timeout:g} seconds and was stopped")]
        except SandboxError as exc:
            self._poison.add(index)
            self._history.append(index)
            self.report.problems.append(f"code cell {self._code_numbers[index]}: {exc}")
            return [_error_output("DeadKernelError", f"the cell ended its process: {exc}")]
        self._history.append(index)
        return _student_outputs(answer, scored=grade_id(cell) is not None and bool(cell.metadata.get("nbgrader", {}).get("grade")))

    # -- trusted test cells --------------------------------------------------------------

    def _run_trusted_test(self, index: int, cell) -> list:
        source = cell.source
        printed = io.StringIO()
        self._deadline = time.monotonic() + self.timeout_for(cell)
        error: BaseException | None = None
        try:
            namespace = self._trusted_namespace(source, index)
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                exec(compile(source, f"<test cell {grade_id(cell)}>", "exec"), namespace)  # noqa: S102 - the course's own test source
        except Exception as exc:  # noqa: BLE001 - any failure of the check fails the cell
            error = exc
        finally:
            self._deadline = None
        outputs = []
        text = printed.getvalue()
        if text:
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=text))
        if error is not None:
            outputs.append(_error_output(type(error).__name__, str(error), _trusted_traceback(error)))
        return outputs

    def _trusted_namespace(self, source: str, index: int) -> dict[str, Any]:
        """The globals of a trusted test cell: the imports of the course's own cells (a test
        may use ``torch`` that the set-up cell imported), then, for every other name the
        test reads, the notebook's value when it is plain data (a number, a tensor...) and
        a :class:`RemoteName` otherwise (a function: calls go to the sandbox)."""
        namespace: dict[str, Any] = {"__name__": "__attncourse_trusted_test__", "__builtins__": builtins}
        for cell in self.nb.cells[:index]:
            if self.is_instructor_cell(cell):
                imports = [n for n in static_audit.parse_cell(cell.source).body if isinstance(n, (ast.Import, ast.ImportFrom))]
                exec(compile(ast.Module(body=imports, type_ignores=[]), "<course imports>", "exec"), namespace)  # noqa: S102
        for name in _free_names(source):
            if name in namespace:
                continue
            remote = RemoteName(name, self, index)
            namespace[name] = remote
            try:
                answer, buffers = self._request({"op": "describe", "name": name, "value": True}, timeout=30)
            except SandboxError:
                continue
            if answer.get("exists") and not answer.get("callable") and answer.get("value") is not None:
                try:
                    value = wire.decode(answer["value"], buffers)
                except wire.WireError:
                    continue
                if not _holds_foreign(value):
                    namespace[name] = value  # plain data, rebuilt here
        return namespace

    # -- serving RemoteName ---------------------------------------------------------------

    def describe(self, name: str) -> dict:
        answer, _ = self._request({"op": "describe", "name": name}, timeout=30)
        return answer

    def call(self, name: str, case: Case, *, probe: str | None, task: Task | None) -> tuple[dict, list[bytes]]:
        buffers: list[bytes] = []
        args, kwargs = case.fresh_inputs()
        header = {
            "op": "call",
            "name": name,
            "case": case.name,
            "probe": probe,
            "args": wire.encode(tuple(args), buffers),
            "kwargs": wire.encode(dict(kwargs), buffers),
            "record_ops": bool(task is not None and task.audit is not None),
            "forbidden": list(task.forbidden) if task is not None else [],
            "forbidden_ops": sorted(task.forbidden_ops) if task is not None else [],
        }
        return self._request(header, buffers)

    def static_refusal(self, name: str, task: Task, before: int) -> tuple[str | None, list[str]]:
        """(a failure message from the static read, or None; review notes)."""
        cells = self.code_cells(before)
        rules = static_audit.Rules.for_task(task.forbidden, audited=task.audit is not None or task.memory_audit is not None)
        findings = static_audit.audit_function(cells, name, rules)
        findings += [f for f in static_audit.notebook_findings(cells) if f.kind == "tampering"]
        return refusal_message(task, findings), []

    def measure_memory(self, name: str, task: Task, before: int) -> tuple[int | None, list[str], str | None]:
        """(peak memory growth, notes, failure) of the task's memory case, in a fresh
        sandbox that holds only the instructor's locked cells and the cells defining
        ``name``. The large case must also give the right values: a function that fails
        or errs on it fails the audit (it cannot dodge the measurement that way)."""
        audit = task.memory_audit
        cells = self.code_cells(before)
        keep = static_audit.closure_cells(cells, name)
        indices = [
            i for i, c in enumerate(self.nb.cells[:before])
            if c.cell_type == "code" and not self.is_trusted_test(c)
            and (self.is_instructor_cell(c) or self._code_numbers[i] in keep)
        ]
        case = audit.make_case(0)
        notes: list[str] = []
        try:
            with Sandbox(self.policy, self._notebook_bytes, self.notebook_name) as fresh:
                if not fresh.measures_memory:
                    return None, [f"the memory audit of {name} was not run: this sandbox's memory cannot be measured from the grader"], None
                locked = [i for i in indices if self.is_instructor_cell(self.nb.cells[i])]
                for i in locked:
                    fresh.request({"op": "run_cell", "source": self.nb.cells[i].source}, timeout=self.timeout_for(self.nb.cells[i]))
                fresh.request({"op": "describe", "name": name}, timeout=60)  # loads what a call needs
                # Two windows, each against its own baseline: the cells that define the
                # function (a buffer allocated there counts), then the call itself.
                fresh.begin_memory_measure()
                for i in indices:
                    if i not in locked:
                        fresh.request({"op": "run_cell", "source": self.nb.cells[i].source}, timeout=self.timeout_for(self.nb.cells[i]))
                growth_defining, notes = fresh.end_memory_measure()
                buffers: list[bytes] = []
                args, kwargs = case.fresh_inputs()
                fresh.begin_memory_measure()
                answer, answer_buffers = fresh.request(
                    {"op": "call", "name": name, "case": case.name, "probe": None,
                     "args": wire.encode(tuple(args), buffers), "kwargs": wire.encode(dict(kwargs), buffers)},
                    buffers, timeout=MEMORY_CASE_TIMEOUT,
                )
                growth_call, call_notes = fresh.end_memory_measure()
                growth, notes = max(growth_defining, growth_call), notes + call_notes
        except SandboxTimeout:
            return None, [], f"your function did not finish on the large case within {MEMORY_CASE_TIMEOUT:g} s"
        except SandboxError as exc:
            return None, [], f"your function could not be run on the large case ({exc})"
        outcome = _outcome_from(answer, answer_buffers, task, case)
        problem = compare(task, call(task.reference, case), outcome)
        if problem is not None:
            return None, notes, f"on this large case, {problem}"
        return growth, notes, None


def refusal_message(task: Task, findings: Sequence[static_audit.Finding]) -> str | None:
    """The failure message for findings that cost the check its points, or None."""
    by_kind: dict[str, list[static_audit.Finding]] = {}
    for finding in findings:
        by_kind.setdefault(finding.kind, []).append(finding)

    def listing(kind: str) -> str:
        return "; ".join(f"{f.text} ({f.where()})" if f.cell else f.text for f in by_kind[kind][:5])

    name = task.function_name
    if "delegation" in by_kind:
        return (
            f"{name}: delegation refused, 0 points. Your code uses {listing('delegation')}. "
            f"This exercise asks you to write {name} yourself from basic tensor operations; "
            "calling torch's or the library's ready-made version does not count."
        )
    if "tampering" in by_kind:
        return (
            f"{name}: 0 points. Your notebook changes torch, the library or the grading "
            f"machinery, or reaches into the interpreter: {listing('tampering')}. The grader "
            "cannot then confirm that the function does its own work. Remove that code; if "
            "you think this is a mistake, ask your instructor to review your notebook."
        )
    if "unreadable" in by_kind:
        return (
            f"{name}: 0 points. The grader reads your code to check that it does not "
            f"delegate, and cannot follow {listing('unreadable')}. Write {name} with plain "
            "calls (no getattr with computed names, eval, exec, torch.ops or torch._C)."
        )
    if "outside_torch" in by_kind:
        return (
            f"{name}: 0 points. This exercise checks how the result is computed, from the "
            f"torch operations your function makes, and your code computes outside torch: "
            f"{listing('outside_torch')}. Use torch tensor operations only."
        )
    return None


class RemoteName(RemoteObject):
    """A name of the sandboxed notebook, as trusted test code sees it.

    A check given one runs the task in the sandbox (``run_task``); test code may also call
    it directly (``name(*args)``) with plain data, and gets plain data back. Nothing else
    can be done with it: no attribute of the student's object ever reaches this process.
    """

    def __init__(self, name: str, grader: NotebookGrader, cell_index: int):
        self.name = name
        self._grader = grader
        self._cell_index = cell_index

    def __repr__(self) -> str:
        return f"<the notebook's {self.name}>"

    def __getattr__(self, attribute: str):
        message = (
            f"{self.name} is defined by the student's notebook, which runs in a sandbox: a "
            "test can call it with plain data (tensors, numbers, strings) but cannot look "
            f"inside it (.{attribute})"
        )
        if attribute.startswith("__"):  # Python's own probes (copy, inspect...) expect this type
            raise AttributeError(message)
        raise TypeError(message)

    def kind(self) -> str | None:
        try:
            answer = self._grader.describe(self.name)
        except SandboxError as exc:
            return f"nothing: the notebook's process could not answer ({exc})"
        if not answer.get("exists"):
            return f"nothing: NameError: name {self.name!r} is not defined"
        if answer.get("callable"):
            return None
        return str(answer.get("kind", "something that is not callable"))[:120]

    def __call__(self, *args, **kwargs):
        case = Case(name="a call from a test", args=args, kwargs=kwargs)
        try:
            answer, buffers = self._grader.call(self.name, case, probe=None, task=None)
        except SandboxTimeout as exc:
            raise StudentCodeError(f"{self.name} did not return in time ({exc})") from None
        except SandboxError as exc:
            raise StudentCodeError(f"{self.name} ended the notebook's process ({exc})") from None
        outcome = _outcome_from(answer, buffers, None, case)
        if outcome.error is not None:
            raise StudentCodeError(f"{self.name} raised {outcome.error}")
        return outcome.value

    def run_task(self, task: Task, cases: list[Case], suite: str) -> TaskRun:
        grader = self._grader
        refusal, notes = grader.static_refusal(self.name, task, self._cell_index)
        outcomes: list[Outcome] = []
        logs: list[list[OpRecord]] = []
        delegations: list[str] = []
        probe = _probe_name(task.sandbox_probe)
        for case in cases:
            try:
                answer, buffers = grader.call(self.name, case, probe=probe, task=task)
            except SandboxTimeout:
                lost = Outcome(error=f"TimeoutError: {task.function_name} did not finish within the test cell's time limit")
                outcomes += [lost] * (len(cases) - len(outcomes))
                logs += [[]] * (len(cases) - len(logs))
                break
            except SandboxError as exc:
                lost = Outcome(error=f"SystemExit: {task.function_name} ended the notebook's process ({exc})")
                outcomes += [lost] * (len(cases) - len(outcomes))
                logs += [[]] * (len(cases) - len(logs))
                break
            outcomes.append(_outcome_from(answer, buffers, task, case))
            logs.append(_records_from(answer))
            delegations += [d for d in _delegations_from(answer) if d not in delegations]
        run = TaskRun(outcomes, logs, delegations, refusal=refusal, notes=notes)
        if task.memory_audit is not None and refusal is None and not delegations:
            cell_index = self._cell_index
            run.measure_memory = lambda: grader.measure_memory(self.name, task, cell_index)
        return run


def _holds_foreign(value: Any) -> bool:
    if isinstance(value, wire.Foreign):
        return True
    if isinstance(value, (tuple, list)):
        return any(_holds_foreign(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_foreign(v) for v in value.values())
    return False


def _probe_name(probe: Callable | None) -> str | None:
    if probe is None:
        return None
    return f"{probe.__module__}:{probe.__qualname__}"


def _outcome_from(answer: dict, buffers: list[bytes], task: Task | None, case: Case) -> Outcome:
    """The outcome the sandbox reported, rebuilt from plain data (and interpreted)."""
    data = answer.get("outcome")
    if type(data) is not dict:
        return Outcome(error=f"RuntimeError: the notebook's process gave no result ({str(answer.get('problem', ''))[:200]})")
    error = data.get("error")
    changed = data.get("changed_input")
    if error is not None:
        return Outcome(error=str(error)[:2000])
    try:
        value = wire.decode(data.get("value"), buffers)
    except wire.WireError as exc:
        return Outcome(error=f"TypeError: the result could not be read as plain data ({exc})")
    if task is not None and task.interpret is not None:
        try:
            value = task.interpret(value, case)
        except Exception as exc:  # noqa: BLE001 - the description fails the task's rules
            return Outcome(error=f"{type(exc).__name__}: {exc}")
    return Outcome(value=value, changed_input=str(changed)[:200] if changed is not None else None)


def _records_from(answer: dict) -> list[OpRecord]:
    records = answer.get("records")
    if type(records) is not list:
        return []
    result = []
    for item in records[:100_000]:
        try:
            result.append(OpRecord.from_plain(item))
        except ValueError:
            continue
    return result


def _delegations_from(answer: dict) -> list[str]:
    names = answer.get("delegations")
    if type(names) is not list:
        return []
    return [str(n)[:200] for n in names[:50] if type(n) is str]


def _free_names(source: str) -> list[str]:
    """Names a test cell reads without binding them itself (nor builtins): the notebook's."""
    tree = ast.parse(source)
    bound: set[str] = set()
    loaded: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                loaded.append(node.id)
            else:
                bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    names = []
    for name in loaded:
        if name not in bound and not hasattr(builtins, name) and name not in names:
            names.append(name)
    return names


def _error_output(ename: str, evalue: str, traceback_lines: list[str] | None = None):
    return nbformat.v4.new_output(
        "error", ename=ename, evalue=evalue, traceback=traceback_lines or [f"{ename}: {evalue}"]
    )


def _trusted_traceback(error: BaseException) -> list[str]:
    """The failure as the cell shows it: the check's message, without the grader's frames."""
    return [f"{type(error).__name__}: {error}"]


def _student_outputs(answer: dict, scored: bool) -> list:
    """nbformat outputs from what the sandbox reported for a cell (text only)."""
    outputs = []
    for stream in ("stdout", "stderr"):
        text = answer.get(stream)
        if type(text) is str and text:
            outputs.append(nbformat.v4.new_output("stream", name=stream, text=text))
    results = answer.get("results")
    if type(results) is list and not scored:
        for text in results[:20]:
            if type(text) is str and text:
                outputs.append(nbformat.v4.new_output("execute_result", data={"text/plain": text}, execution_count=None))
    if answer.get("status") == "error":
        error = answer.get("error") if type(answer.get("error")) is dict else {}
        tb = error.get("traceback")
        tb = [str(line) for line in tb[:200]] if type(tb) is list else None
        outputs.append(_error_output(str(error.get("ename", "Error"))[:200], str(error.get("evalue", ""))[:100_000], tb))
    elif answer.get("status") != "ok":
        outputs.append(_error_output("SandboxError", str(answer.get("problem", "no answer"))[:2000]))
    return outputs
