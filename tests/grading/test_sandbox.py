"""The pieces of the grading engine, one at a time: the plain-data wire format, the
sandbox's isolation and limits, the static read, and the engine's restarts and replays.
(The whole engine under nbgrader is tested by test_tamper.py and the end-to-end tests.)"""

from __future__ import annotations

import os
import signal
import struct
import time

import nbformat
import pytest
import torch

from attncourse.grading import static_audit
from attncourse.grading.engine import NotebookGrader
from attncourse.grading.sandbox import wire
from attncourse.grading.sandbox.isolation import PRIVATE_UIDS, Limits, Policy, Sandbox, SandboxDied, SandboxTimeout, bwrap_works

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is not available")


# ---------------------------------------------------------------------------------------
# The wire format
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None, True, 3, -2.5, float("inf"), "text",
        torch.arange(6, dtype=torch.float64).reshape(2, 3),
        torch.randn(2, 0, 3, dtype=torch.float32),
        torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        torch.tensor([[True, False]]),
        torch.tensor(7, dtype=torch.int64),
        (torch.ones(2), [1, "a", None], {"k": torch.zeros(1, dtype=torch.float16)}),
    ],
)
def test_plain_values_cross_unchanged(value):
    buffers: list[bytes] = []
    tree = wire.encode(value, buffers)
    header, back_buffers = wire.Reader(_pipe_with(wire.pack({"v": tree}, buffers))).read()
    back = wire.decode(header["v"], back_buffers)
    _assert_same(back, value)


def _assert_same(a, b):
    if isinstance(b, torch.Tensor):
        assert type(a) is torch.Tensor and a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    elif isinstance(b, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(b, dict):
        assert a.keys() == b.keys()
        for key in b:
            _assert_same(a[key], b[key])
    else:
        assert a == b


def _pipe_with(data: bytes) -> int:
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    return read


def test_a_tensor_subclass_crosses_as_its_numbers_only():
    class Liar(torch.Tensor):
        pass

    buffers: list[bytes] = []
    tree = wire.encode(torch.zeros(3).as_subclass(Liar), buffers)
    back = wire.decode(tree, buffers)
    assert type(back) is torch.Tensor and wire.tensor_kind(tree) == "Liar"


def test_objects_cross_as_text():
    class Weird:
        def __repr__(self):
            raise RuntimeError("no")

    buffers: list[bytes] = []
    back = wire.decode(wire.encode([Weird(), object], buffers), buffers)
    assert all(isinstance(item, wire.Foreign) for item in back)


@pytest.mark.parametrize(
    "tree",
    [
        {"t": "tensor", "dtype": "float64", "shape": [2, 2], "buffer": 0},  # 8 bytes for 4 numbers
        {"t": "tensor", "dtype": "object", "shape": [1], "buffer": 0},
        {"t": "tensor", "dtype": "float64", "shape": [-1], "buffer": 0},
        {"t": "tensor", "dtype": "float64", "shape": [1], "buffer": 5},
        {"t": "pickle", "data": "gASV"},
        {"t": "dict", "items": [[1, 2]]},
        ["a", "list", "without", "kind"],
    ],
)
def test_malformed_values_are_refused(tree):
    with pytest.raises(wire.WireError):
        wire.decode(tree, [b"\x00" * 8])


def test_a_reader_refuses_oversized_and_broken_frames():
    with pytest.raises(wire.WireError):
        wire.Reader(_pipe_with(struct.pack(">Q", 2**40))).read()
    with pytest.raises(wire.WireError):
        wire.Reader(_pipe_with(struct.pack(">Q", 3) + b"{x}")).read()
    with pytest.raises(EOFError):
        wire.Reader(_pipe_with(struct.pack(">Q", 10) + b"{}")).read()
    with pytest.raises(wire.WireError):
        head = b'{"buffers": 1}'
        wire.Reader(_pipe_with(struct.pack(">Q", len(head)) + head + struct.pack(">Q", 2**40)), max_message=2**20).read()


# ---------------------------------------------------------------------------------------
# The sandbox
# ---------------------------------------------------------------------------------------


def _run(sandbox: Sandbox, source: str, timeout: float = 60) -> dict:
    answer, _ = sandbox.request({"op": "run_cell", "source": source}, timeout=timeout)
    return answer


@needs_bwrap
def test_the_sandbox_sees_no_course_no_network_and_runs_as_a_user_of_its_own():
    import attncourse

    course_root = os.path.dirname(os.path.dirname(os.path.dirname(attncourse.__file__)))
    with Sandbox(Policy(isolation="bwrap")) as sandbox:
        answer = _run(
            sandbox,
            "import os, socket\n"
            f"print(sorted(os.listdir({course_root!r})))\n"
            "print(os.getuid(), os.getcwd(), sorted(os.environ))\n"
            "try:\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\nexcept OSError as exc:\n    print('network:', exc.errno)\n"
            "print(sorted(os.listdir('/root')) if os.path.exists('/root') else [], len([p for p in os.listdir('/proc') if p.isdigit()]) < 10)\n"
            "import tempfile\nprint(tempfile.mkstemp()[1].startswith('/tmp/'))\n",
        )
    lines = answer["stdout"].splitlines()
    visible = eval(lines[0])  # noqa: S307 - our own printed list
    assert set(visible) <= {"src", ".venv"}  # only the library and the environment, read-only
    uid, cwd, *_ = lines[1].split(" ", 2)
    if os.geteuid() == 0:
        assert PRIVATE_UIDS[0] <= int(uid) < PRIVATE_UIDS[1]  # a user of its own, no account's
    assert cwd == "/home/student"
    assert "PATH" in lines[1] and "PYTHONPATH" not in lines[1] and "NBGRADER_EXECUTION" not in lines[1]
    assert lines[2].startswith("network:")
    home, own_pids = lines[3].rsplit(" ", 1)
    assert set(eval(home)) <= {".pyenv"} and own_pids == "True"  # noqa: S307 - no one's files; a pid namespace
    assert lines[4] == "True"  # a private /tmp it can write


@needs_bwrap
def test_the_library_is_read_only_in_the_sandbox():
    with Sandbox(Policy(isolation="bwrap")) as sandbox:
        answer = _run(sandbox, "import attncourse\nopen(attncourse.__file__, 'a').write('# changed')\n")
    assert answer["status"] == "error" and answer["error"]["ename"] in ("OSError", "PermissionError")


def test_limits_hold_and_the_sandbox_dies_alone():
    limits = Limits(address_space_bytes=6 * 2**30, file_size_bytes=2**20, cpu_seconds=60)
    with Sandbox(Policy(limits=limits)) as sandbox:
        memory = _run(sandbox, "hog = bytearray(8 * 2**30)")
        assert memory["error"]["ename"] == "MemoryError"
        size = _run(sandbox, "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\nopen('big', 'wb').write(b'x' * 2**21)")
        assert size["status"] == "error"
        with pytest.raises(SandboxTimeout):
            _run(sandbox, "while True:\n    pass", timeout=2)
        assert not sandbox.alive
    with Sandbox(Policy()) as sandbox:
        with pytest.raises(SandboxDied):
            _run(sandbox, "import os\nos._exit(3)")


def test_ctrl_c_while_a_sandbox_starts_takes_it_down():
    # A sandbox command that never says it is ready: the start waits, and Ctrl-C (here a
    # timer raising KeyboardInterrupt) comes while it waits.
    sandbox = Sandbox(Policy(isolation="command", command=("sleep", "60")))

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            sandbox.start(timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    pid = sandbox._proc.pid
    assert not sandbox.alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_memory_growth_is_measured_from_outside():
    with Sandbox(Policy()) as sandbox:
        _run(sandbox, "import torch")
        sandbox.begin_memory_measure()
        _run(sandbox, "big = torch.ones(64 * 2**20 // 8, dtype=torch.float64)\ndel big")
        growth, notes = sandbox.end_memory_measure()
    assert 48 * 2**20 < growth < 200 * 2**20 and notes == []


# A process that shares the worker's address space, as a child of vfork does between its
# start and its exec (every `subprocess` call, and matplotlib's first import, which runs
# fc-list): here made with clone(CLONE_VM) and held in pause() for a while, so that the
# sampler surely sees it. Its pages are the worker's own.
SHARED_ADDRESS_SPACE_CHILD = """
import ctypes, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
stack = ctypes.create_string_buffer(1 << 16)
top = ctypes.c_void_p(ctypes.addressof(stack) + (1 << 16) - 64)
pause = ctypes.cast(libc.pause, ctypes.c_void_p)
child = libc.clone(pause, top, 0x100 | signal.SIGCHLD, None)  # CLONE_VM
assert child > 0, ctypes.get_errno()
time.sleep(0.5)
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
"""


def test_a_process_sharing_the_address_space_is_not_counted_twice():
    with Sandbox(Policy()) as sandbox:
        _run(sandbox, "import torch")
        sandbox.begin_memory_measure()
        _run(sandbox, SHARED_ADDRESS_SPACE_CHILD)
        growth, notes = sandbox.end_memory_measure()
    # Counted twice, the worker's 200 MiB and more (Python and torch) would be growth.
    assert growth < 32 * 2**20 and notes == [], (growth, notes)


# ---------------------------------------------------------------------------------------
# The static read
# ---------------------------------------------------------------------------------------

SETUP = static_audit.CodeCell(1, "import math\nimport torch\nimport torch.nn.functional as F", trusted=True)
SOFTMAX_RULES = static_audit.Rules.for_task(("torch.softmax", "attncourse.*"), audited=False)


def _findings(*sources: str, name: str = "softmax") -> list[str]:
    cells = [SETUP] + [static_audit.CodeCell(i + 2, s) for i, s in enumerate(sources)]
    return [f.kind for f in static_audit.audit_function(cells, name, SOFTMAX_RULES)]


@pytest.mark.parametrize(
    "sources, kinds",
    [
        (["def softmax(x, dim=-1):\n    e = torch.exp(x - x.amax(dim, keepdim=True))\n    return e / e.sum(dim, keepdim=True)"], []),
        (["def helper(x, d):\n    return F.softmax(x, d)", "def softmax(x, dim=-1):\n    return helper(x, dim)"], ["delegation"]),
        (["sm = torch.softmax", "def softmax(x, dim=-1):\n    return sm(x, dim)"], ["delegation"]),
        (["def softmax(x, dim=-1, f=F.softmax):\n    return f(x, dim)"], ["delegation"]),
        (["def softmax(x, dim=-1):\n    return x.softmax(dim)"], ["delegation"]),
        (["def softmax(x, dim=-1):\n    return getattr(torch, 'soft' + 'max')(x, dim)"], ["unreadable"]),
        (["def softmax(x, dim=-1):\n    return torch.ops.aten._softmax(x, dim, False)"], ["delegation", "unreadable"]),
        (["globals()['helper'] = torch.softmax", "def softmax(x, dim=-1):\n    return helper(x, dim)"], ["unreadable"]),
        (["from attncourse.functional import masked_softmax\ndef softmax(x, dim=-1):\n    return masked_softmax(x, None, dim=dim)"], ["delegation"]),
        (["exec('def softmax(x, dim=-1):\\n    return x')"], ["unreadable"]),
        # Right answers the static read must leave alone.
        (["class M:\n    def __init__(self):\n        for n in ('a', 'b'):\n            setattr(self, n, 1)\n\ndef softmax(x, dim=-1):\n    m = M()\n    return torch.exp(x) / torch.exp(x).sum(dim, keepdim=True)"], []),
        (["def softmax(x, dim=-1):\n    def inner(y):\n        return torch.exp(y)\n    try:\n        e = inner(x - x.amax(dim, keepdim=True))\n    except RuntimeError as err:\n        raise err\n    return e / e.sum(dim, keepdim=True)"], []),
    ],
)
def test_the_static_read_finds_what_a_closure_uses(sources, kinds):
    assert sorted(set(_findings(*sources))) == sorted(set(kinds))


def test_the_static_read_finds_tampering_anywhere_but_in_the_course_s_cells():
    cells = [
        static_audit.CodeCell(1, "import attncourse.grading.core as core\ncore.compare = None", trusted=True),
        static_audit.CodeCell(2, "import torch\ntorch.testing.assert_close = print"),
        static_audit.CodeCell(3, "torch.backends.cudnn.deterministic = True\nimport os\nos.environ['X'] = '1'"),
        static_audit.CodeCell(4, "get_ipython().events.register('pre_run_cell', print)"),
    ]
    found = {(f.kind, f.cell) for f in static_audit.notebook_findings(cells)}
    assert found == {("tampering", 2), ("hook", 4)}


# ---------------------------------------------------------------------------------------
# The engine: a dead sandbox is restarted and the notebook replayed
# ---------------------------------------------------------------------------------------


def test_a_cell_that_kills_the_sandbox_costs_only_itself():
    nb = nbformat.v4.new_notebook()
    sources = [
        "import torch\ncounter = [0]",
        "def softmax(x, dim=-1):\n    e = torch.exp(x - x.amax(dim, keepdim=True))\n    return e / e.sum(dim, keepdim=True)",
        "import os\nos._exit(1)",
        "while True:\n    pass",
        "counter[0] += 1",
        "from attncourse.grading.core import run_task_check\nrun_task_check('stable_softmax', softmax, 'hidden')",
    ]
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[-1].metadata["nbgrader"] = {"grade_id": "t", "grade": True}
    report = NotebookGrader(nb, {"t": sources[-1]}, timeout_for=lambda cell: 5).grade()
    assert report.restarts == 2 and len(report.problems) == 2
    outputs = [cell.outputs for cell in nb.cells]
    assert outputs[2][0]["ename"] == "DeadKernelError" and outputs[3][0]["ename"] == "CellTimeoutError"
    assert outputs[5][0]["text"].startswith("passed: softmax")


def test_an_instructor_s_own_test_sees_the_course_s_imports_values_and_functions():
    nb = nbformat.v4.new_notebook()
    setup = "import torch"
    sources = [
        setup,
        "lengths = [3, 1]\nweights = torch.ones(2, 3) / 3\n\ndef shift(x):\n    return x + 1",
        "assert torch.equal(shift(torch.zeros(2)), torch.ones(2))\n"
        "assert lengths == [3, 1] and torch.allclose(weights.sum(-1), torch.ones(2))\n"
        "print('custom test passed')",
        "assert shift.__code__ is not None",
    ]
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[0].metadata["nbgrader"] = {"grade_id": "setup", "locked": True}
    for gid, cell in (("custom", nb.cells[2]), ("peek", nb.cells[3])):
        cell.metadata["nbgrader"] = {"grade_id": gid, "grade": True, "locked": True}
    NotebookGrader(nb, {"custom": sources[2], "peek": sources[3]}, instructor_cells={"setup": setup}).grade()
    assert nb.cells[2].outputs[0]["text"] == "custom test passed\n"
    refused = nb.cells[3].outputs[-1]  # no looking inside the student's function
    assert refused["ename"] == "AttributeError" and "runs in a sandbox" in refused["evalue"]


def test_without_bubblewrap_the_sandbox_says_what_it_lacks():
    # still a user of its own and no network, but the host's file system
    with Sandbox(Policy(isolation="basic")) as sandbox:
        answer = _run(
            sandbox,
            "import os, socket\nprint(os.getuid())\n"
            "try:\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\nexcept OSError as exc:\n    print('network:', exc.errno)\n",
        )
        warnings = list(sandbox.warnings)
    uid, network = answer["stdout"].splitlines()[:2]
    if os.geteuid() == 0:
        assert PRIVATE_UIDS[0] <= int(uid) < PRIVATE_UIDS[1]
    assert network.startswith("network:")  # refused: no route, or nothing listening on loopback
    assert any("bubblewrap is not available" in w for w in warnings)


@pytest.mark.skipif(os.geteuid() != 0, reason="users of their own need a grader that runs as root")
def test_a_fork_bomb_in_one_sandbox_leaves_a_sandbox_graded_beside_it_alone():
    import threading

    limits = Limits(processes=64)
    with Sandbox(Policy(limits=limits)) as bomb, Sandbox(Policy(limits=limits)) as other:
        assert bomb.ids != other.ids  # a user id of its own each

        def explode():
            try:
                _run(bomb, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout=8)
            except (SandboxTimeout, SandboxDied):
                pass

        thread = threading.Thread(target=explode)
        thread.start()
        time.sleep(3)  # the bomb has used up its own quota of processes by now
        answer = _run(
            other,
            "import threading, os\nworkers = [threading.Thread(target=os.getpid) for _ in range(32)]\n"
            "for w in workers:\n    w.start()\nfor w in workers:\n    w.join()\nprint('fine')",
        )
        thread.join()
    assert answer["stdout"] == "fine\n"
