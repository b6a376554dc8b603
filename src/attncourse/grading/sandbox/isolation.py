"""Starting, limiting, measuring and stopping the sandbox, from the trusted side.

:class:`Sandbox` starts the worker (:mod:`attncourse.grading.sandbox.worker`) as a child
process that can reach nothing of value:

- **Isolated interpreter.** ``python -I`` (no ``PYTHONPATH``, no user site, no script or
  working directory on ``sys.path``), from the grader's own virtual environment, whose
  files the sandbox can only read.
- **A file system of its own** (with bubblewrap, ``bwrap``): a new mount namespace that
  holds the system's read-only directories, the Python installation and the library
  (read-only), an empty ``/tmp``, and a fresh working directory with only the notebook's
  copy. The course directory (source notebooks, gradebook, ``nbgrader_config.py``, other
  submissions) and the home directories are not there at all.
- **No network** (a network namespace with only loopback), **no view of other
  processes** (a pid namespace), a new session (no terminal to inject into).
- **An unprivileged user** when the grader runs as root (a user id of its own by default), without
  capabilities and with ``no_new_privs``.
- **Resource limits** set by the parent: CPU seconds, address space, file size, number of
  processes (when the user is a dedicated one), open files; no core dumps.
- **A scrubbed environment**: only ``PATH``, ``HOME``, locale, thread counts and
  matplotlib's settings.

Where bubblewrap is missing (``isolation="basic"``), the interpreter, environment, working
directory, limits and user are the same, the network is cut with ``unshare -n`` where the
OS allows it, but the sandbox sees the host's file system with the rights of its user:
:attr:`Sandbox.warnings` lists what it can then read, and the appendix says to install
bubblewrap for graded work.

The parent also measures the sandbox's memory from outside (resident set sizes read from
``/proc``, sampled while a measured request runs, and the kernel's peak counters), so the
number cannot be faked by the code inside.
"""

from __future__ import annotations

import functools
import os
import platform
import pwd
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import wire

WORKDIR_INSIDE = "/home/student"  # the sandbox's working directory and HOME (bubblewrap)
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin", "/etc")
DEFAULT_USER = "auto"
# With user "auto", each sandbox runs as a user id of its own drawn from this range, which
# no account uses: limits on processes, and signals, are then per sandbox, so that one
# student's fork bomb or kill(-1) cannot reach another student graded at the same time.
PRIVATE_UIDS = (2_000_000_000, 2_100_000_000)
START_TIMEOUT = 120.0  # seconds for the interpreter to start and import torch


class SandboxError(Exception):
    """The sandbox cannot answer: it died, broke the protocol or ran out of time."""


class SandboxDied(SandboxError):
    pass


class SandboxTimeout(SandboxError):
    pass


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox; ``None`` leaves a limit as inherited."""

    cpu_seconds: int | None = 900
    address_space_bytes: int | None = 8 * 2**30
    file_size_bytes: int | None = 256 * 2**20
    processes: int | None = 128  # applied only when the sandbox has a user of its own
    open_files: int | None = 512


@dataclass(frozen=True)
class Policy:
    """How sandboxes are made.

    ``isolation``: ``"auto"`` (bubblewrap when it works, else basic), ``"bwrap"``
    (required), ``"basic"``, or ``"command"``: ``command`` starts the sandbox (for
    instance ``docker run -i --rm ... python -I -m attncourse.grading.sandbox.worker
    --stdio``), which talks on its standard input and output and receives the notebook's
    copy as a message; its isolation and limits are the command's. ``user``: the account
    the sandbox runs as when the grader is root (name or uid), or ``"auto"``: a user id
    of its own, unused by any account, for every sandbox. ``readable``: extra host
    paths the sandbox may read (bubblewrap only; for instance a data folder an
    assignment needs).
    """

    isolation: str = "auto"
    command: tuple[str, ...] = ()
    user: str | int = DEFAULT_USER
    limits: Limits = field(default_factory=Limits)
    readable: tuple[str, ...] = ()
    threads: int = 1


# ---------------------------------------------------------------------------------------
# What this machine offers
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def bwrap_works() -> bool:
    """True when bubblewrap is installed and can make namespaces here."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    try:
        result = subprocess.run(
            [exe, "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--", "true"],
            capture_output=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


@functools.lru_cache(maxsize=None)
def unshare_net_works() -> bool:
    exe = shutil.which("unshare")
    if exe is None:
        return False
    args = [exe, "--net", "--", "true"] if os.geteuid() == 0 else [exe, "--user", "--map-root-user", "--net", "--", "true"]
    try:
        return subprocess.run(args, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def resolve_isolation(policy: Policy) -> str:
    if policy.isolation not in ("auto", "bwrap", "basic", "command"):
        raise ValueError(f"isolation must be 'auto', 'bwrap', 'basic' or 'command', got {policy.isolation!r}")
    if policy.isolation == "command" and not policy.command:
        raise ValueError("isolation='command' needs the command that starts the sandbox")
    if policy.isolation == "auto":
        return "bwrap" if bwrap_works() else "basic"
    if policy.isolation == "bwrap" and not bwrap_works():
        raise SandboxError(
            "isolation='bwrap' was asked for, but bubblewrap is not installed or cannot "
            "create namespaces here (Debian: apt-get install bubblewrap)"
        )
    return policy.isolation


def sandbox_ids(policy: Policy) -> tuple[int, int] | None:
    """(uid, gid) of the sandbox's user when the grader is root, else None."""
    if os.geteuid() != 0:
        return None
    if isinstance(policy.user, int):
        return policy.user, policy.user
    if policy.user == "auto":
        uid = random.SystemRandom().randrange(*PRIVATE_UIDS)
        return uid, uid
    try:
        entry = pwd.getpwnam(policy.user)
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


def library_paths() -> list[str]:
    """Host paths that hold the Python installation and the library, read-only inside."""
    import attncourse

    package_dir = Path(attncourse.__file__).resolve().parent
    paths = {sys.base_prefix, sys.prefix, str(package_dir)}
    # The interpreter the venv points at may live outside base_prefix's resolved path.
    paths.add(str(Path(sys.executable).resolve().parent.parent))
    return sorted(p for p in paths if os.path.exists(p))


# ---------------------------------------------------------------------------------------
# The sandbox
# ---------------------------------------------------------------------------------------


class Sandbox:
    """One sandboxed worker. Use as a context manager, or call ``close()``.

    ``notebook`` (bytes) is copied into the fresh working directory as ``notebook_name``.
    """

    def __init__(self, policy: Policy | None = None, notebook: bytes | None = None, notebook_name: str = "notebook.ipynb"):
        self.policy = policy or Policy()
        self.isolation = resolve_isolation(self.policy)
        self.ids = sandbox_ids(self.policy) if self.isolation != "command" else None
        self.warnings: list[str] = []
        self._notebook = notebook
        self._notebook_name = Path(notebook_name).name
        self._proc: subprocess.Popen | None = None
        self._workdir: str | None = None
        self._output = bytearray()  # the last bytes the sandbox wrote to stdout/stderr
        self._reader: wire.Reader | None = None
        self._request_fd: int | None = None
        self._sampler: _MemorySampler | None = None

    # -- life cycle --------------------------------------------------------------------

    def __enter__(self) -> "Sandbox":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the sandbox and wait for its worker to be ready. Whatever stops the start
        (an error, a timeout, Ctrl-C while torch loads) takes the sandbox down with it."""
        try:
            self._start(timeout)
        except BaseException:
            self.close()
            raise

    def _start(self, timeout: float) -> None:
        self._workdir = self._make_workdir()
        if self.isolation == "command":
            self._start_command()
        else:
            self._start_worker()
        threading.Thread(target=self._drain_output, daemon=True).start()
        try:
            header, _ = self._reader.read(time.monotonic() + timeout)
        except TimeoutError:
            raise SandboxTimeout(f"the sandbox did not start within {timeout:g} s") from None
        except (EOFError, wire.WireError) as exc:
            raise SandboxDied(f"the sandbox could not start: {exc}\n{self.output_tail()}") from None
        if header.get("status") != "ready":
            raise SandboxDied("the sandbox answered its start with something else than 'ready'")
        if self.isolation == "basic":
            self.warnings += _basic_tier_warnings(self.ids)
        if self.isolation == "command" and self._notebook is not None:
            answer, _ = self.request({"op": "write_notebook", "name": self._notebook_name}, [self._notebook], timeout=timeout)
            if answer.get("status") != "ok":
                raise SandboxDied("the sandbox could not store the notebook's copy")

    def _start_worker(self) -> None:
        request_r, request_w = os.pipe()
        answer_r, answer_w = os.pipe()
        command = self._command(request_r, answer_w)
        try:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(request_r, answer_w),
                cwd=self._workdir if self.isolation == "basic" else "/",
                env=self._environment(),
                preexec_fn=self._limit_child,
                start_new_session=True,
            )
        finally:
            os.close(request_r)
            os.close(answer_w)
        self._request_fd = request_w
        self._reader = wire.Reader(answer_r)

    def _start_command(self) -> None:
        """The instructor's command (a container, say) speaks on its stdin and stdout."""
        self._proc = subprocess.Popen(
            list(self.policy.command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self._workdir,
            start_new_session=True,
        )
        self._request_fd = self._proc.stdin.fileno()
        self._reader = wire.Reader(self._proc.stdout.fileno())
        self.warnings.append(
            "the sandbox is the configured command: its isolation and limits are that command's, "
            "and its memory cannot be measured from here (memory audits are left for review)"
        )
    def close(self) -> None:
        """Kill the sandbox and everything it started, and remove its working directory."""
        self.kill()
        owned = self.isolation != "command"  # the command's pipes are closed with its streams
        for fd in (self._request_fd, self._reader.fd if self._reader else None) if owned else ():
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._request_fd, self._reader = None, None
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr) if self._proc is not None else ():
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if self._workdir is not None:
            shutil.rmtree(os.path.dirname(self._workdir), ignore_errors=True)
            self._workdir = None

    def kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._kill_strays()

    def _kill_strays(self) -> None:
        """Processes the sandbox's user left behind outside the process group (basic
        isolation has no pid namespace to take them down with it). A private user id's
        processes are all the sandbox's; a shared account's only those in its folder."""
        if self.isolation != "basic" or self.ids is None or self.ids[0] == 0:
            return
        private = PRIVATE_UIDS[0] <= self.ids[0] < PRIVATE_UIDS[1]
        for pid in _pids_of_user(self.ids[0]):
            if private or _in_workdir(pid, self._workdir):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    # -- requests ----------------------------------------------------------------------

    def request(self, header: dict, buffers: list[bytes] = (), timeout: float | None = None) -> tuple[dict, list[bytes]]:
        """Send one request and read its answer (plain data only).

        Raises SandboxTimeout (the sandbox is then killed), SandboxDied (it exited or
        broke the protocol; it is killed too).
        """
        if not self.alive or self._request_fd is None or self._reader is None:
            raise SandboxDied(self._death_reason())
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            wire.write_message(self._request_fd, header, list(buffers))
            answer, answer_buffers = self._reader.read(deadline)
        except TimeoutError:
            self.kill()
            raise SandboxTimeout(f"no answer within {timeout:g} s") from None
        except (BrokenPipeError, EOFError, OSError, wire.WireError) as exc:
            reason = self._death_reason(exc)
            self.kill()
            raise SandboxDied(reason) from None
        return answer, answer_buffers

    def _death_reason(self, exc: BaseException | None = None) -> str:
        proc = self._proc
        code = proc.poll() if proc is not None else None
        if code is None and proc is not None:
            try:
                code = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"the sandbox was killed by {name}"
        if code is not None:
            return f"the sandbox process ended (exit status {code})"
        return f"the sandbox broke the protocol ({type(exc).__name__}: {exc})" if exc else "the sandbox is not running"

    def output_tail(self, limit: int = 4000) -> str:
        return bytes(self._output[-limit:]).decode("utf-8", "replace")

    # -- memory, measured from outside -------------------------------------------------

    @property
    def measures_memory(self) -> bool:
        """False for a sandbox started by a command: its processes may not be ours to read."""
        return self.isolation != "command"

    def begin_memory_measure(self) -> None:
        """Start measuring: the baseline is the sandbox's resident memory now."""
        self._sampler = _MemorySampler(self._proc.pid if self._proc else -1)
        self._sampler.start()

    def end_memory_measure(self) -> tuple[int, list[str]]:
        """(peak growth in bytes over the baseline, notes on signs of tampering)."""
        sampler, self._sampler = self._sampler, None
        if sampler is None:
            return 0, []
        return sampler.stop()

    # -- building the child ------------------------------------------------------------

    def _make_workdir(self) -> str:
        parent = tempfile.mkdtemp(prefix="attncourse-sandbox-")
        workdir = os.path.join(parent, "work")
        os.mkdir(workdir, 0o700)
        if self._notebook is not None:
            with open(os.path.join(workdir, self._notebook_name), "wb") as handle:
                handle.write(self._notebook)
        for sub in (".config/matplotlib", ".ipython"):
            os.makedirs(os.path.join(workdir, sub), exist_ok=True)
        if self.ids is not None:
            os.chmod(parent, 0o711)
            for root, dirs, files in os.walk(workdir):
                for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
                    os.chown(name, *self.ids)
        return workdir

    def _home(self) -> str:
        return WORKDIR_INSIDE if self.isolation == "bwrap" else self._workdir

    def _environment(self) -> dict[str, str]:
        home = self._home()
        threads = str(self.policy.threads)
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "USER": "student",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": "/tmp" if self.isolation == "bwrap" else home,
            "MPLBACKEND": "agg",
            "MPLCONFIGDIR": f"{home}/.config/matplotlib",
            "IPYTHONDIR": f"{home}/.ipython",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def _command(self, request_fd: int, answer_fd: int) -> list[str]:
        python = [sys.executable, "-I", "-m", "attncourse.grading.sandbox.worker", str(request_fd), str(answer_fd)]
        drop = []
        if self.ids is not None:
            uid, gid = self.ids
            drop = [
                shutil.which("setpriv") or "setpriv",
                f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all",
            ]
        if self.isolation == "bwrap":
            return [*self._bwrap_arguments(), *drop, *python]
        prefix = []
        if unshare_net_works():
            prefix = ["unshare", "--net", "--"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--net", "--"]
        else:
            self.warnings.append("the sandbox has network access: unshare --net does not work here")
        return [*prefix, *drop, *python]

    def _bwrap_arguments(self) -> list[str]:
        # The fresh /tmp, /proc and /dev first: later binds may lie below /tmp (a course
        # or a virtual environment in a temporary folder) and must not be hidden by it.
        args = [shutil.which("bwrap") or "bwrap", "--perms", "1777", "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        shared = [*library_paths(), *self.policy.readable]
        for directory in _ancestors([*shared, WORKDIR_INSIDE]):
            args += ["--perms", "0755", "--dir", directory]  # readable by the sandbox's user
        for path in shared:
            args += ["--ro-bind", path, path]
        args += [
            "--bind", self._workdir, WORKDIR_INSIDE,
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--hostname", "sandbox",
            "--die-with-parent", "--new-session",
            "--chdir", WORKDIR_INSIDE,
            "--",
        ]
        return args

    def _limit_child(self) -> None:
        """Runs in the child between fork and exec: resource limits, no core dumps."""
        limits = self.policy.limits
        pairs = [
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_CPU, limits.cpu_seconds),
            (resource.RLIMIT_AS, limits.address_space_bytes),
            (resource.RLIMIT_FSIZE, limits.file_size_bytes),
            (resource.RLIMIT_NOFILE, limits.open_files),
        ]
        if self.ids is not None:  # a per-user count only means something for a user of its own
            pairs.append((resource.RLIMIT_NPROC, limits.processes))
        for kind, value in pairs:
            if value is not None:
                resource.setrlimit(kind, (value, value))

    def _drain_output(self) -> None:
        proc = self._proc
        stream = proc.stderr if proc is not None and self.isolation == "command" else (proc.stdout if proc else None)
        if stream is None:
            return
        while True:
            try:
                chunk = stream.read1(65536)
            except (OSError, ValueError):
                return
            if not chunk:
                return
            self._output += chunk
            if len(self._output) > 65536:
                del self._output[: len(self._output) - 65536]


def _ancestors(paths: list[str]) -> list[str]:
    """The directories above ``paths``, parents first (``/a``, ``/a/b`` for ``/a/b/c``)."""
    found: list[str] = []
    for path in paths:
        parts = Path(path).parts[1:-1]
        for depth in range(1, len(parts) + 1):
            directory = "/" + "/".join(parts[:depth])
            if directory not in found and not os.path.islink(directory) and directory not in SYSTEM_DIRS:
                found.append(directory)
    return sorted(found, key=lambda d: d.count("/"))


def _basic_tier_warnings(ids: tuple[int, int] | None) -> list[str]:
    who = "the grader's own user" if ids is None else f"uid {ids[0]}"
    return [
        "bubblewrap is not available: the sandbox runs on the host's file system as "
        f"{who} and can read whatever that user can (install bubblewrap for graded work)"
    ]


def _pids_of_user(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _in_workdir(pid: int, workdir: str | None) -> bool:
    if workdir is None:
        return False
    try:
        return os.readlink(f"/proc/{pid}/cwd").startswith(workdir)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Memory measured from outside
# ---------------------------------------------------------------------------------------

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from ``/proc`` (the host's view)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _status_kib(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# kcmp(2), which tells whether two processes share their address space, by machine.
_KCMP_SYSCALL = {"x86_64": 312, "aarch64": 272, "riscv64": 272}.get(platform.machine())
_KCMP_VM = 1


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def shares_memory(pid_a: int, pid_b: int) -> bool:
    """Whether two processes have one address space (a child between vfork and exec, as
    every ``subprocess`` call makes one). False when the kernel cannot tell us."""
    if _KCMP_SYSCALL is None:
        return False
    try:
        return _libc().syscall(_KCMP_SYSCALL, pid_a, pid_b, _KCMP_VM, 0, 0) == 0
    except OSError:
        return False


def distinct_memories(pids: list[int]) -> list[int]:
    """``pids`` less each process that shares its address space with an earlier one:
    their resident pages are the same pages, which a sum over processes would count
    twice (a notebook that runs a program, or imports matplotlib, which runs fc-list,
    would seem to double its memory for a moment)."""
    kept: list[int] = []
    for pid in pids:
        if not any(shares_memory(pid, other) for other in kept):
            kept.append(pid)
    return kept


def resident_bytes(pids: list[int]) -> int:
    """Resident memory of these processes, each address space counted once."""
    total = 0
    for pid in distinct_memories(pids):
        try:
            with open(f"/proc/{pid}/statm", "rb") as handle:
                total += int(handle.read().split()[1]) * PAGE_SIZE
        except (OSError, ValueError, IndexError):
            continue
    return total


class _MemorySampler:
    """Samples the resident memory of a process tree every millisecond or two, after
    resetting the kernel's peak counters; the peak is the larger of both readings."""

    def __init__(self, root: int, interval: float = 0.001):
        self.root = root
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.baseline = 0
        self.sampled_peak = 0

    def start(self) -> None:
        pids = descendants(self.root)
        for pid in pids:
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as handle:
                    handle.write("5")  # reset VmHWM to the current resident size
            except OSError:
                pass
        self.baseline = resident_bytes(pids)
        self.sampled_peak = self.baseline
        self._thread.start()

    def _run(self) -> None:
        pids, refreshed = descendants(self.root), time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 0.05:
                pids, refreshed = descendants(self.root), time.monotonic()
            self.sampled_peak = max(self.sampled_peak, resident_bytes(pids))
            time.sleep(self.interval)

    def stop(self) -> tuple[int, list[str]]:
        self._stop.set()
        self._thread.join()
        pids = descendants(self.root)
        self.sampled_peak = max(self.sampled_peak, resident_bytes(pids))
        kernel_peak = sum(_status_kib(pid, b"VmHWM:") * 1024 for pid in distinct_memories(pids))
        notes = []
        if kernel_peak and kernel_peak < 0.9 * self.sampled_peak:
            notes.append(
                "the sandbox's peak-memory counter was lower than memory seen while it ran: "
                "the code inside reset it"
            )
        peak = max(kernel_peak, self.sampled_peak)
        return max(0, peak - self.baseline), notes
