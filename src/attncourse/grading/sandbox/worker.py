"""The sandboxed side: runs a notebook's cells and calls its functions on request.

Started by :mod:`attncourse.grading.sandbox.isolation` as ``python -I -m
attncourse.grading.sandbox.worker IN_FD OUT_FD``, inside the sandbox, it reads requests on
``IN_FD`` and answers on ``OUT_FD`` in the plain-data format of
:mod:`attncourse.grading.sandbox.wire`:

    {"op": "run_cell", "source": ...}  -> {"status": "ok" | "error", "stdout", "stderr",
                                           "error": {"ename", "evalue", "traceback"},
                                           "results": [text of displayed values]}
    {"op": "call", "name", "probe", "args", "kwargs", "record_ops", "forbidden",
     "forbidden_ops"}                  -> {"outcome": {"value", "error", "changed_input"},
                                           "records", "delegations"}
    {"op": "ping"}                     -> {"status": "ok"}

Everything here runs in the student's process, after the student's code: the notebook can
change any of it, and the trusted side treats every answer as a claim, not a fact. The
worker exists to run the student's code the way a notebook kernel would (IPython's shell:
magics, display of the last expression) and to send results back as plain data.
"""

from __future__ import annotations

import importlib
import io
import sys
from contextlib import redirect_stderr, redirect_stdout

CAPTURE_LIMIT = 100_000  # characters of stdout/stderr kept per cell


class BoundedText(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int = CAPTURE_LIMIT):
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self) -> str:
        text = "".join(self.parts)
        if self.dropped:
            text += f"\n[... {self.dropped} more characters not shown]\n"
        return text


class Worker:
    def __init__(self, in_fd: int, out_fd: int):
        from . import wire

        self.wire = wire
        self.reader = wire.Reader(in_fd)
        self.out_fd = out_fd
        self.shell = self._make_shell()

    # -- the IPython shell -------------------------------------------------------------

    def _make_shell(self):
        from IPython.core.displayhook import DisplayHook
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell

        worker = self

        class CollectingDisplayHook(DisplayHook):
            """The value of a cell's last expression, kept as text."""

            def write_output_prompt(self):
                pass

            def write_format_data(self, format_dict, md_dict=None):
                worker._results.append(str(format_dict.get("text/plain", ""))[:CAPTURE_LIMIT])

        class CollectingPublisher(DisplayPublisher):
            def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
                worker._results.append(str(data.get("text/plain", ""))[:CAPTURE_LIMIT])

        shell = InteractiveShell.instance(
            displayhook_class=CollectingDisplayHook, display_pub_class=CollectingPublisher
        )
        shell.history_manager.enabled = False

        def keep_traceback(etype, evalue, stb):
            worker._traceback = [str(line) for line in stb][:200]

        shell._showtraceback = keep_traceback
        self._results: list[str] = []
        self._traceback: list[str] = []
        return shell

    def run_cell(self, request: dict) -> dict:
        self._results, self._traceback = [], []
        out, err = BoundedText(), BoundedText()
        with redirect_stdout(out), redirect_stderr(err):
            result = self.shell.run_cell(str(request.get("source", "")), store_history=True)
        exc = result.error_before_exec or result.error_in_exec
        answer = {
            "status": "ok" if exc is None else "error",
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "results": self._results[:20],
        }
        if exc is not None:
            answer["error"] = {
                "ename": type(exc).__name__,
                "evalue": str(exc)[:CAPTURE_LIMIT],
                "traceback": self._traceback,
            }
        return answer

    # -- calling a function of the notebook --------------------------------------------

    def call(self, request: dict, buffers: list[bytes]) -> tuple[dict, list[bytes]]:
        from ..core import Case, call_recorded

        name = request["name"]
        target = self.shell.user_ns.get(name, _MISSING)
        args = self.wire.decode(request["args"], buffers)
        kwargs = self.wire.decode(request["kwargs"], buffers)
        if target is _MISSING:
            outcome, records, delegations = None, [], []
            error = f"NameError: name {name!r} is not defined"
        else:
            probe = _import(request["probe"]) if request.get("probe") else None
            case = Case(name=str(request.get("case", "")), args=tuple(args), kwargs=dict(kwargs))
            sink = BoundedText()
            with redirect_stdout(sink), redirect_stderr(sink):
                outcome, records, delegations = call_recorded(
                    target,
                    case,
                    probe=probe,
                    forbidden=tuple(request.get("forbidden", ())),
                    forbidden_ops=frozenset(request.get("forbidden_ops", ())),
                    record_ops=bool(request.get("record_ops")),
                )
            error = outcome.error
        out_buffers: list[bytes] = []
        value = None if outcome is None else self.wire.encode(outcome.value, out_buffers)
        answer = {
            "outcome": {
                "value": value,
                "error": error,
                "changed_input": None if outcome is None else outcome.changed_input,
            },
            "records": [record.to_plain() for record in records],
            "delegations": list(delegations),
        }
        return answer, out_buffers

    def write_notebook(self, request: dict, buffers: list[bytes]) -> dict:
        """Put the notebook's copy in the working directory (sandboxes started by a command
        of the instructor's, such as a container, get it this way)."""
        import os

        name = os.path.basename(str(request.get("name", "notebook.ipynb"))) or "notebook.ipynb"
        with open(name, "wb") as handle:
            handle.write(buffers[0] if buffers else b"")
        return {"status": "ok"}

    def describe(self, request: dict) -> tuple[dict, list[bytes]]:
        """Whether a name exists and is callable, how to call it in a message, and (when
        asked, for a value that is not callable) the value itself as plain data."""
        from ..core import _kind_of

        target = self.shell.user_ns.get(str(request.get("name")), _MISSING)
        if target is _MISSING:
            return {"exists": False, "callable": False, "kind": ""}, []
        answer = {"exists": True, "callable": callable(target), "kind": _kind_of(target)}
        buffers: list[bytes] = []
        if request.get("value") and not answer["callable"]:
            answer["value"] = self.wire.encode(target, buffers)
        return answer, buffers

    # -- the loop ----------------------------------------------------------------------

    def serve(self) -> None:
        wire = self.wire
        wire.write_message(self.out_fd, {"status": "ready"})
        while True:
            try:
                request, buffers = self.reader.read()
            except EOFError:
                return
            op = request.get("op")
            out_buffers: list[bytes] = []
            try:
                if op == "run_cell":
                    answer = self.run_cell(request)
                elif op == "call":
                    answer, out_buffers = self.call(request, buffers)
                elif op == "write_notebook":
                    answer = self.write_notebook(request, buffers)
                elif op == "describe":
                    answer, out_buffers = self.describe(request)
                elif op == "ping":
                    answer = {"status": "ok"}
                elif op == "shutdown":
                    return
                else:
                    answer = {"status": "error", "problem": f"unknown op {op!r}"}
            except BaseException as exc:  # noqa: BLE001 - report, keep serving
                if isinstance(exc, KeyboardInterrupt):
                    raise
                answer = {"status": "error", "problem": f"{type(exc).__name__}: {exc}"[:2000]}
            wire.write_message(self.out_fd, answer, out_buffers)


_MISSING = object()


def _import(dotted: str):
    """``package.module:attribute`` of the library (probes are the library's own code)."""
    module_name, _, attribute = dotted.partition(":")
    if not module_name.startswith("attncourse."):
        raise ValueError(f"probe {dotted!r} is not part of attncourse")
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def _settle_environment() -> None:
    """A home, IPython's and matplotlib's folders in the working directory when the
    environment gives none that is writable (a container's user may have no home)."""
    import os

    here = os.getcwd()
    if not os.access(os.environ.get("HOME", "/nonexistent"), os.W_OK):
        os.environ["HOME"] = here
    home = os.environ["HOME"]
    os.environ.setdefault("IPYTHONDIR", os.path.join(home, ".ipython"))
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(home, ".config", "matplotlib"))
    os.environ.setdefault("MPLBACKEND", "agg")


def main(argv: list[str] | None = None) -> None:
    """``worker IN_FD OUT_FD``, or ``worker --stdio`` to talk on standard input and output
    (for a sandbox started by a command such as ``docker run -i``); then the original
    descriptors 0 and 1 are pointed at /dev/null and stderr, so that stray writes of the
    notebook's code do not land in the conversation."""
    import os

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--stdio"]:
        in_fd, out_fd = os.dup(0), os.dup(1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(2, 1)
        os.close(null)
    else:
        in_fd, out_fd = int(argv[0]), int(argv[1])
    _settle_environment()
    import torch  # noqa: F401 - every exercise uses it; load it before the first cell

    Worker(in_fd, out_fd).serve()


if __name__ == "__main__":
    main()
