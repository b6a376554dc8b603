"""The machinery every check shares: tasks, cases, outcomes, comparison and diagnosis.

A *task* is one function a student writes (``softmax``, ``dot_product_attention``...). A
check runs the student's function and the library's reference on the same seeded
*cases*, compares the results per the tolerance policy, and on failure asks the mistake
catalogue (:mod:`attncourse.grading.mistakes`) which known wrong variant behaves exactly
like the student's code. Checks print a short line on success, raise ``AssertionError``
with a readable message on failure, and never write to stderr (nbgrader scores a test
cell 0 when it does).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .audit import AtenRecorder, OpLog, OpRecord
from .sandbox.wire import Foreign
from .tripwire import Tripwire, aten_ops_for

SUITES = ("visible", "hidden")

# Tolerances of DESIGN.md's policy, by dtype of the compared tensors: (rtol, atol).
TOLERANCE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (5e-2, 1e-2),
    torch.bfloat16: (5e-2, 1e-2),
}


@dataclass(frozen=True)
class Case:
    """One set of inputs for a task.

    ``args``/``kwargs`` are passed to the function under test (cloned for every call, so
    in-place edits by one function never leak into the next). ``visible`` cases make up
    the visible suite; the hidden suite runs all cases, built from another seed.
    ``raises`` marks a case of bad input: the reference raises this exception type there,
    and the student's function must raise it too.
    """

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    visible: bool = True
    raises: type[Exception] | None = None

    def fresh_inputs(self) -> tuple[tuple, dict]:
        return _clone(self.args), _clone(self.kwargs)

    def describe(self) -> str:
        shapes = [_describe_value(a) for a in self.args]
        shapes += [f"{k}={_describe_value(v)}" for k, v in self.kwargs.items()]
        return f"{self.name} ({', '.join(shapes)})"


@dataclass(frozen=True)
class Outcome:
    """What one call returned (``value``) or raised (``error``, as 'Type: message'), and
    which input tensor, if any, the call changed in place (``changed_input``)."""

    value: Any = None
    error: str | None = None
    changed_input: str | None = None


@dataclass(frozen=True)
class Task:
    """A function students write, with its reference and the cases that grade it.

    Attributes:
        name: key of the task, used by checks, the mistake catalogue and the tests.
        function_name: the name the notebook gives the student's function.
        reference: the library's correct implementation with the student's signature.
        make_cases: seed -> list of cases; the first case is the small hand-sized one.
        result_names: names of the returned tensors, e.g. ("weights",) for a single
            tensor or ("output", "weights") for a pair.
        forbidden: dotted names the student's function must not call (delegation).
        chapter: the book chapter that teaches it, for messages.
        adapt: optional; turns what the notebook defines (a class, or a function whose
            arguments are objects a case cannot hold) into a callable with the
            reference's signature. ``run_task_check`` applies it to the student's object.
        probe, interpret: optional, for tasks whose result is not plain data (a matplotlib
            Axes, a layer left with hooks). In the sandbox, ``probe(student_object)`` is
            called like the reference and returns a plain-data *description* (tensors,
            strings, booleans); on the trusted side, ``interpret(description, case)`` judges
            it against the case and returns the value to compare (or raises, as the
            student's call would).
            ``adapt`` must equal ``interpret`` after ``probe``. Without them, ``adapt`` is
            the probe and values are compared as they come.
        audit: optional; for tasks that ask for a method, not only a result. Called as
            ``audit(case, records)`` with the torch calls the student's function made on
            that case (see :mod:`attncourse.grading.audit`); returns a message when the
            method is not the one asked for. Applied once the outputs are right.
    """

    name: str
    function_name: str
    reference: Callable
    make_cases: Callable[[int], list[Case]]
    result_names: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    chapter: str = ""
    adapt: Callable[[Any], Callable] | None = None
    audit: Callable[[Case, Sequence[OpRecord]], str | None] | None = None
    probe: Callable[[Any], Callable] | None = None
    interpret: Callable[[Any, Case], Any] | None = None
    memory_audit: "MemoryAudit | None" = None

    @property
    def forbidden_ops(self) -> frozenset[str]:
        """The aten operators that give delegation away (see ``tripwire.aten_ops_for``)."""
        return aten_ops_for(self.forbidden)

    @property
    def sandbox_probe(self) -> Callable[[Any], Callable] | None:
        """What the sandbox wraps the student's object in: ``probe``, else ``adapt``."""
        return self.probe if self.probe is not None else self.adapt

    def cases(self, suite: str) -> list[Case]:
        if suite not in SUITES:
            raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
        if suite == "visible":
            return [c for c in self.make_cases(0) if c.visible]
        return self.make_cases(1)

    def graded_cases(self, suite: str, fresh_seed: int) -> list[Case]:
        """The cases the trusted grader runs: the suite's, then the suite's cases of
        ``make_cases(fresh_seed)`` whose inputs differ from those (new random numbers,
        drawn at grading time, so that answers looked up from the published cases
        fail)."""
        cases = self.cases(suite)
        drawn = self.make_cases(fresh_seed)
        if suite == "visible":
            drawn = [c for c in drawn if c.visible]
        fresh = [
            Case(f"{c.name} (numbers drawn at grading time)", c.args, c.kwargs, c.visible, c.raises)
            for c in drawn
            if not any(_same_inputs(c, known) for known in cases)
        ]
        return cases + fresh


@dataclass(frozen=True)
class MemoryAudit:
    """A method audit measured from outside the student's process.

    The trusted grader runs ``make_case(seed)`` once, in a fresh sandbox holding only the
    set-up cell and the cells that define the student's function, and reads the sandbox's
    peak resident memory from the operating system. ``limit(case)`` is the largest
    growth, in bytes, a right method can need; ``message(case, peak)`` explains a breach.
    """

    make_case: Callable[[int], Case]
    limit: Callable[[Case], int]
    message: Callable[[Case, int], str]


@dataclass
class TaskRun:
    """What the student's object did on every case of a check, as the trusted side sees it.

    ``outcomes`` and ``op_logs`` have one entry per case. ``delegations`` names forbidden
    functions or operators the calls reached. ``refusal`` is a complete failure message
    decided before any value was compared (the static read of the answer's code);
    ``measure_memory``, when set, runs the task's memory audit (a fresh sandbox and a large
    case, so :func:`judge` calls it only once every value has passed) and gives
    ``(peak_growth, notes, memory_problem)``: the growth in bytes, review notes, and what
    went wrong on the large case, if anything;
    ``notes`` are lines for the instructor's review, printed after the verdict.
    """

    outcomes: list[Outcome]
    op_logs: list[list[OpRecord]]
    delegations: list[str] = field(default_factory=list)
    refusal: str | None = None
    measure_memory: "Callable[[], tuple[int | None, list[str], str | None]] | None" = None
    notes: list[str] = field(default_factory=list)


class RemoteObject:
    """Base of the trusted side's stand-in for a name defined in a sandboxed notebook.

    A check given a ``RemoteObject`` runs the task in the sandbox through it
    (``run_task``) instead of calling it in this process; see
    :mod:`attncourse.grading.engine`.
    """

    name: str

    def kind(self) -> str | None:
        """None when the object is callable; otherwise how to describe it in a message."""
        raise NotImplementedError

    def run_task(self, task: "Task", cases: list[Case], suite: str) -> TaskRun:
        raise NotImplementedError


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add a task to the registry; names are unique across the course."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


# ---------------------------------------------------------------------------------------
# Calling and comparing
# ---------------------------------------------------------------------------------------


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, tuple):
        return tuple(_clone(o) for o in obj)
    if isinstance(obj, list):
        return [_clone(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


def _describe_value(v) -> str:
    if isinstance(v, torch.Tensor):
        dtype = str(v.dtype).replace("torch.", "")
        return f"{dtype} {tuple(v.shape)}"
    return repr(v)


def call(fn: Callable, case: Case) -> Outcome:
    """Run ``fn`` on fresh copies of the case's inputs; exceptions become outcomes.

    ``SystemExit`` is caught too (a function that calls ``sys.exit`` fails its check and
    the kernel lives on); ``KeyboardInterrupt`` is not, so a timeout still interrupts.
    """
    args, kwargs = case.fresh_inputs()
    try:
        with torch.no_grad():
            value = fn(*args, **kwargs)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the student's code may raise anything
        return Outcome(error=f"{type(exc).__name__}: {exc}")
    return Outcome(value=value, changed_input=_changed_input(fn, case, args, kwargs))


def _changed_input(fn: Callable, case: Case, args: tuple, kwargs: dict) -> str | None:
    """The name of the first input tensor that no longer equals the case's, or None."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = []
    pairs = [
        (names[i] if i < len(names) else f"number {i + 1}", after, before)
        for i, (after, before) in enumerate(zip(args, case.args))
    ]
    pairs += [(key, kwargs[key], case.kwargs[key]) for key in case.kwargs]
    for name, after, before in pairs:
        if isinstance(before, torch.Tensor) and not _same_tensor(after, before):
            return name
    return None


def _same_inputs(a: Case, b: Case) -> bool:
    """True when two cases have equal arguments (tensors equal entry for entry)."""
    if len(a.args) != len(b.args) or set(a.kwargs) != set(b.kwargs):
        return False
    pairs = list(zip(a.args, b.args)) + [(a.kwargs[k], b.kwargs[k]) for k in a.kwargs]
    for x, y in pairs:
        if isinstance(y, torch.Tensor):
            if not _same_tensor(x, y):
                return False
        elif isinstance(x, torch.Tensor) or x != y:
            return False
    return True


def _same_tensor(a, b: torch.Tensor) -> bool:
    """Equal shape, dtype and entries, NaN equal to NaN."""
    if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    if b.is_floating_point() or b.is_complex():
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    return torch.equal(a, b)


def split_result(task: Task, value) -> list[Any]:
    """The returned value as a list with one entry per name in ``task.result_names``."""
    if len(task.result_names) == 1:
        return [value]
    if not isinstance(value, (tuple, list)) or len(value) != len(task.result_names):
        raise AssertionError(
            f"{task.function_name} must return a tuple ({', '.join(task.result_names)}), "
            f"got {_kind_of(value)}"
        )
    return list(value)


def _kind_of(value) -> str:
    if isinstance(value, Foreign):  # an object the sandbox could only describe
        return f"{value.type_name} {value.text}"[:120]
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, torch.Tensor):
        return f"a single tensor ({_describe_value(value)})"
    return f"{type(value).__name__} {value!r}"[:120]


def _raised(outcome: Outcome, kind: type[Exception]) -> bool:
    return outcome.error is not None and outcome.error.startswith(f"{kind.__name__}:")


def compare(
    task: Task, expected: Outcome, got: Outcome, raises: type[Exception] | None = None
) -> str | None:
    """None when ``got`` agrees with ``expected`` per the tolerance policy, else why not.

    On a case of bad input (``raises`` given) both must have raised that exception type.
    """
    if raises is not None:
        if not _raised(expected, raises):  # a broken case, not a student's mistake
            raise RuntimeError(f"reference of {task.name} did not raise {raises.__name__}")
        if _raised(got, raises):
            return None
        did = f"raised {got.error}" if got.error is not None else f"returned {_kind_of(got.value)}"
        return f"this input must raise {raises.__name__}, but your function {did}"
    if expected.error is not None:  # the reference itself must run on every case
        raise RuntimeError(f"reference of {task.name} failed: {expected.error}")
    if got.error is not None:
        return f"your function raised {got.error}"
    if got.changed_input is not None:
        return (
            f"your function changed its input {got.changed_input!r} in place (with an "
            "operation such as -=, masked_fill_ or an assignment into a slice). Leave the "
            "inputs as they are: compute into new tensors (x = x - m instead of x -= m)."
        )
    try:
        parts = split_result(task, got.value)
    except AssertionError as exc:
        return str(exc)
    for name, want, have in zip(task.result_names, split_result(task, expected.value), parts):
        if not isinstance(have, torch.Tensor):
            return f"{name} must be a torch.Tensor, got {_kind_of(have)}"
        rtol, atol = TOLERANCE.get(want.dtype, (1e-5, 1e-5))
        try:
            torch.testing.assert_close(have, want, rtol=rtol, atol=atol)
        except AssertionError as exc:
            return f"{name} is wrong: " + _first_lines(str(exc), 4)
    return None


def _first_lines(text: str, n: int) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " ".join(line.strip() for line in lines[:n])


def same_behaviour(task: Task, a: Outcome, b: Outcome) -> bool:
    """True when two outcomes are indistinguishable: same error, or same values
    (shape, dtype, and close within the dtype's tolerance, NaN equal to NaN)."""
    if a.error is not None or b.error is not None:
        return a.error == b.error
    try:
        parts_a, parts_b = split_result(task, a.value), split_result(task, b.value)
    except AssertionError:
        return type(a.value) is type(b.value) and not isinstance(a.value, torch.Tensor)
    for x, y in zip(parts_a, parts_b):
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            return False
        if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device:
            return False
        rtol, atol = TOLERANCE.get(x.dtype, (1e-5, 1e-5))
        if not torch.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            return False
    return True


# ---------------------------------------------------------------------------------------
# Output hygiene
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_output():
    """Send everything meant for stderr to stdout, and warnings as one line each.

    nbgrader gives a test cell 0 points as soon as it writes to stderr, so a torch
    ``UserWarning`` raised by a correct answer must not reach stderr.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.redirect_stderr(sys.stdout):
            try:
                yield
            finally:
                _report_warnings(caught)


def _report_warnings(caught: Sequence[warnings.WarningMessage]) -> None:
    seen: set[str] = set()
    for w in caught:
        line = f"{w.category.__name__}: {w.message}"
        if line not in seen:
            seen.add(line)
            print(f"(a warning was raised while checking: {line})")


# ---------------------------------------------------------------------------------------
# The check itself
# ---------------------------------------------------------------------------------------


def run_task_check(task_name: str, student_fn: Callable, suite: str = "visible") -> None:
    """Grade ``student_fn`` as the task ``task_name``; raise AssertionError on failure.

    ``student_fn`` is the student's object in this process (the notebook's own visible
    test cells, and the library's tests), or a :class:`RemoteObject` standing for it in
    a sandbox (the trusted grader). The verdict is decided here either way.
    """
    task = TASKS[task_name]
    seed = grading_seed() if isinstance(student_fn, RemoteObject) else None
    cases, expected = expected_outcomes(task_name, suite, seed)
    notes: list[str] = []
    with quiet_output():
        failure, notes = _find_failure(task, student_fn, cases, expected, suite)
    if failure is None:
        print(f"passed: {task.function_name} ({suite} tests, {len(cases)} cases)")
        for note in notes:
            print(f"review: {note}")
        return
    if notes:
        failure += "\n" + "\n".join(f"review: {note}" for note in notes)
    raise AssertionError(failure)


@functools.lru_cache(maxsize=64)
def expected_outcomes(task_name: str, suite: str, fresh_seed: int | None = None) -> tuple[list[Case], list[Outcome]]:
    """The cases of a suite and the reference's outcome on each, computed once per process.

    With ``fresh_seed`` (the trusted grader), a suite also has cases drawn from that seed
    (``Task.graded_cases``). Callers must not change the returned tensors
    (``call`` gives every function fresh copies of the inputs, and comparisons only read
    the outcomes).
    """
    task = TASKS[task_name]
    cases = task.cases(suite) if fresh_seed is None else task.graded_cases(suite, fresh_seed)
    return cases, [call(task.reference, case) for case in cases]


_GRADING_SEED: list[int] = []


def grading_seed() -> int:
    """The seed of the hidden cases drawn at grading time: random, once per process, or
    the integer in the environment variable ``ATTNCOURSE_GRADING_SEED`` (to reproduce a
    grading run exactly)."""
    if not _GRADING_SEED:
        chosen = os.environ.get("ATTNCOURSE_GRADING_SEED", "").strip()
        _GRADING_SEED.append(int(chosen) if chosen else 2 + int.from_bytes(os.urandom(4), "little"))
    return _GRADING_SEED[0]


def call_recorded(
    target: Any,
    case: Case,
    *,
    probe: Callable[[Any], Callable] | None = None,
    forbidden: Sequence[str] = (),
    forbidden_ops: frozenset[str] = frozenset(),
    record_ops: bool = False,
) -> tuple[Outcome, list[OpRecord], list[str]]:
    """Call the student's object on one case, recording what a check needs to know.

    ``probe`` (a task's adapter) wraps the object first. Returns the outcome, the torch
    calls made (when ``record_ops``) and the forbidden names or aten operators reached.
    The same function runs in a local check and, for the trusted grader, in the sandbox.
    """
    fn = probe(target) if probe is not None else target
    with Tripwire(forbidden, fn) as wire:
        aten = AtenRecorder(forbidden_ops) if forbidden_ops else contextlib.nullcontext()
        with aten as recorder, OpLog() if record_ops else contextlib.nullcontext() as log:
            outcome = call(fn, case)
    calls = list(wire.calls) + (recorder.calls if recorder is not None else [])
    return outcome, (log.records if log is not None else []), calls


def run_locally(task: Task, student_fn: Callable, cases: list[Case]) -> TaskRun:
    """Run the student's object on every case in this process."""
    outcomes, logs, calls = [], [], []
    for case in cases:
        outcome, records, reached = call_recorded(
            student_fn,
            case,
            probe=task.adapt,
            forbidden=task.forbidden,
            forbidden_ops=task.forbidden_ops,
            record_ops=task.audit is not None,
        )
        outcomes.append(outcome)
        logs.append(records)
        calls += [name for name in reached if name not in calls]
    return TaskRun(outcomes, logs, calls)


def _find_failure(
    task: Task, student_fn: Any, cases: list[Case], expected: list[Outcome], suite: str
) -> tuple[str | None, list[str]]:
    """(failure message or None, review notes)."""
    if isinstance(student_fn, RemoteObject):
        kind = student_fn.kind()
        if kind is not None:
            return f"{task.function_name} must be a function, got {kind}", []
        run = student_fn.run_task(task, cases, suite)
    elif not callable(student_fn):
        return f"{task.function_name} must be a function, got {_kind_of(student_fn)}", []
    else:
        run = run_locally(task, student_fn, cases)
    failure = judge(task, cases, expected, run, suite)  # may add the memory audit's notes
    return failure, run.notes


def judge(task: Task, cases: list[Case], expected: list[Outcome], run: TaskRun, suite: str) -> str | None:
    """The verdict on a run: None when it passes, else the failure message. Once every
    value and operator passed, runs the task's memory audit, whose notes join ``run.notes``."""
    if run.refusal is not None:
        return run.refusal
    if run.delegations:
        return delegation_message(task, run.delegations)
    got, logs = run.outcomes, run.op_logs
    for index, (case, want, have) in enumerate(zip(cases, expected, got)):
        problem = compare(task, want, have, case.raises)
        if problem is not None:
            if index == 0:
                _print_small_case(task, case, want, have)
            return failure_message(task, cases, got, index, problem, suite)
    if task.audit is not None:
        for case, records in zip(cases, logs):
            problem = task.audit(case, records)
            if problem is not None:
                return method_message(task, case, problem)
    if task.memory_audit is not None and run.measure_memory is not None:
        peak_growth, notes, memory_problem = run.measure_memory()
        run.notes += notes
        case = task.memory_audit.make_case(0)
        if memory_problem is not None:
            return method_message(task, case, memory_problem)
        if peak_growth is not None and peak_growth > task.memory_audit.limit(case):
            return method_message(task, case, task.memory_audit.message(case, peak_growth))
    return None


def delegation_message(task: Task, calls: Sequence[str]) -> str:
    names = ", ".join(sorted(set(calls)))
    return (
        f"{task.function_name}: delegation refused, 0 points. Your function called {names}. "
        f"This exercise asks you to write {task.function_name} yourself from basic tensor "
        "operations; calling torch's or the library's ready-made version does not count."
    )


def method_message(task: Task, case: Case, problem: str) -> str:
    return (
        f"{task.function_name}: right values, but not the method the exercise asks for, "
        f"0 points. On the case {case.describe()}, {problem}"
    )


def failure_message(
    task: Task, cases: list[Case], got: list[Outcome], index: int, problem: str, suite: str
) -> str:
    from .mistakes import diagnose, hint_lines

    lines = [
        f"{task.function_name} failed the {suite} tests on case {index + 1} of {len(cases)}, "
        f"{cases[index].describe()}: {problem}"
    ]
    if got[index].error is not None and got[index].error.startswith("NotImplementedError"):
        lines.append(
            f"Hint: {task.function_name} still raises NotImplementedError; replace that line "
            "with your implementation."
        )
    elif cases[index].raises is not None:
        lines.append(
            f"Hint: the task asks for a {cases[index].raises.__name__} on this input, with a "
            "message that names the argument and the values it accepts; check the argument "
            "before computing anything."
        )
    else:
        lines.extend(hint_lines(diagnose(task, cases, got, index), small_case_printed=index == 0))
    return "\n".join(lines)


def _print_small_case(task: Task, case: Case, want: Outcome, have: Outcome) -> None:
    print(f"The small case that failed: {case.name}")
    args, kwargs = case.fresh_inputs()
    for i, value in enumerate(args):
        print(f"  argument {i + 1}:\n{_indent(value)}")
    for key, value in kwargs.items():
        print(f"  {key}:\n{_indent(value)}")
    if want.error is not None:
        print(f"  expected: an exception, {want.error}")
        print(f"  got: {have.error or _kind_of(have.value)}")
        return
    expected_parts = split_result(task, want.value)
    for name, value in zip(task.result_names, expected_parts):
        print(f"  expected {name}:\n{_indent(value)}")
    if have.error is not None:
        print(f"  got: an exception, {have.error}")
        return
    try:
        parts = split_result(task, have.value)
    except AssertionError:
        print(f"  got: {_kind_of(have.value)}")
        return
    for name, value in zip(task.result_names, parts):
        print(f"  got {name}:\n{_indent(value)}")


def _indent(value) -> str:
    return "\n".join("    " + line for line in str(value).splitlines())
