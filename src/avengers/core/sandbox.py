"""Run untrusted candidate programs against tests in a sandboxed subprocess.

:class:`SubprocessSandbox` starts a fresh, isolated interpreter (``python -I -S``: no site-packages, no
user site, no ``PYTHON*`` variables, cwd not on ``sys.path``) per candidate, in a new session, with a
fresh private temp dir as cwd, HOME and TMPDIR and a minimal environment. A bootstrap runs first, while
the process is still the only thing in it, and in this order:

1. reads the job (program, tests, limits) from stdin, then points stdin at /dev/null;
2. network: ``unshare(CLONE_NEWNET)`` (as root; otherwise through an unprivileged user namespace when
   the kernel allows) — the candidate sees only a loopback interface that is down;
3. ``nice`` and resource limits: CPU seconds, address space, file size (SIGXFSZ ignored, so a big write
   fails with EFBIG instead of killing), open files, processes, no core dumps;
4. as root: drops to a dedicated unused uid (one per concurrently running candidate, claimed with a file
   lock so that no two runs on a host share it) with no supplementary groups. Only then does the kernel
   enforce the process limit (RLIMIT_NPROC does not apply to root) and file permissions: the candidate
   can write only its temp dir and world-writable places, and every process left behind by the
   candidate — even one that left the process group with setsid — is found by uid and killed;
5. defence in depth inside the interpreter: ``socket.socket`` and friends raise, and ``open``/``io.open``
   /``os.open`` in a write mode, ``os.remove``/``rename``/``mkdir``/... refuse paths outside the temp dir.
   These patches are plain Python and can be undone by a determined program (``import _io``,
   ``ctypes``); they catch accidents, the kernel-level layers above are the boundary.

Each test runs with a per-test timeout (SIGALRM); the whole run is killed (process group, then every
process of the sandbox uid) after ``startup_seconds + timeout * (tests + 1)``. Results come back over an
inherited file descriptor, one JSON line per event, so that partial results survive a kill.

What it is not: a boundary against a program that targets the sandbox itself (it runs in the same
interpreter as the test harness and could forge its own test results), nor a read barrier (the candidate
can read world-readable files). Without root and without user namespaces only the rlimits, the session
kill and the in-process guards apply, and RLIMIT_NPROC then counts every process of the service's user.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from avengers.config.sandbox import SandboxConfig

log = logging.getLogger(__name__)

TestStatus = Literal["passed", "failed", "error", "timeout", "not_run"]

MESSAGE_CHARS = 500
"""Longest per-test message kept (exception type and text)."""


@dataclass(frozen=True)
class TestOutcome:
    """How one test went."""

    index: int
    status: TestStatus
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class SandboxResult:
    """Outcome of running one program against its tests."""

    passed: bool
    """The program loaded, every test passed and nothing timed out."""
    tests: list[TestOutcome]
    stdout: str = ""
    """Tail of the candidate's stdout."""
    stderr: str = ""
    """Tail of the candidate's stderr."""
    timed_out: bool = False
    """The run hit its wall limit and was killed."""
    error: str | None = None
    """Why the program did not load or the run failed as a whole (None when it loaded and ended normally)."""
    exit_code: int | None = None
    network_isolated: bool = False
    """The candidate ran in its own network namespace."""
    privileges_dropped: bool = False
    """The candidate ran as a dedicated unprivileged uid."""
    duration_seconds: float = 0.0

    @property
    def outcomes(self) -> tuple[bool, ...]:
        """Pass/fail of each test: the candidate's behaviour, for grouping."""
        return tuple(t.passed for t in self.tests)

    @property
    def tests_passed(self) -> int:
        return sum(self.outcomes)


class SandboxError(RuntimeError):
    """The sandbox cannot run at all here (a required isolation is unavailable, no free sandbox uid)."""


class Sandbox(ABC):
    """Runs an untrusted program and its tests in isolation."""

    @abstractmethod
    def run(
        self,
        program: str,
        tests: Sequence[str] = (),
        entry_point: str | None = None,
        timeout_seconds: float | None = None,
    ) -> SandboxResult:
        """Load ``program``, then run each test in a copy of its namespace.

        A test is Python code: plain asserts, or (HumanEval style) a ``check(candidate)`` function
        that is called with the program's ``entry_point``. ``timeout_seconds`` bounds loading the
        program and each test (default: the config's).
        """


SandboxFactory = Callable[[SandboxConfig], Sandbox]
_REGISTRY: dict[str, SandboxFactory] = {}


def register_sandbox(name: str) -> Callable[[SandboxFactory], SandboxFactory]:
    def wrap(factory: SandboxFactory) -> SandboxFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def create_sandbox(config: SandboxConfig | None = None) -> Sandbox:
    """Build the configured sandbox."""
    config = config or SandboxConfig()
    try:
        factory = _REGISTRY[config.backend]
    except KeyError:
        raise ValueError(f"unknown sandbox backend {config.backend!r}; known: {sorted(_REGISTRY)}") from None
    return factory(config)


# The bootstrap and test harness, run as ``python -I -S -c _RUNNER``. It must only use the standard
# library and keep the candidate's namespace separate from its own.
_RUNNER = r'''
import json, os, resource, signal, sys

job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
_result_fd = job["result_fd"]


def _emit(event):
    data = (json.dumps(event) + "\n").encode("utf-8")
    while data:
        data = data[os.write(_result_fd, data):]


def _isolate_network(mode):
    if mode == "off":
        return False
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
    if libc.unshare(CLONE_NEWNET) == 0:
        return True
    if os.geteuid() != 0:
        uid, gid = os.geteuid(), os.getegid()
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
            try:
                with open("/proc/self/setgroups", "w") as fh:
                    fh.write("deny")
                with open("/proc/self/uid_map", "w") as fh:
                    fh.write("%d %d 1" % (uid, uid))
                with open("/proc/self/gid_map", "w") as fh:
                    fh.write("%d %d 1" % (gid, gid))
            except OSError:
                pass
            return True
    return False


def _escaped_descendants():
    """Descendants that left the runner's process group (setsid/setpgid); the group itself is killed
    by the service at once after the runner exits."""
    me, group = os.getpid(), os.getpgid(0)
    children, groups = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            children.setdefault(int(fields[1]), []).append(int(name))
            groups[int(name)] = int(fields[2])
    found, todo = [], [me]
    while todo:
        for child in children.get(todo.pop(), ()):
            todo.append(child)
            if groups.get(child) != group:
                found.append(child)
    return found


def _kill_escaped():
    for _ in range(50):
        pids = _escaped_descendants()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _become_subreaper():
    import ctypes
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _tasks_of_my_user():
    # RLIMIT_NPROC counts every task (process or thread) of the real uid, the service's own included.
    me, count = os.getuid(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat("/proc/" + name).st_uid == me:
                    count += len(os.listdir("/proc/%s/task" % name))
            except OSError:
                continue
    return count


_become_subreaper()
if job["uid"] is None and os.getuid() != 0:
    job["limits"]["nproc"] += _tasks_of_my_user()
_network = _isolate_network(job["network"])
if not _network and job["network"] == "required":
    _emit({"event": "fatal", "error": "a network namespace is required but unavailable here"})
    os._exit(3)
limits = job["limits"]
try:
    os.nice(limits["nice"])
except OSError:
    pass
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
for _name, _value in (
    ("RLIMIT_CPU", (limits["cpu"], limits["cpu"] + 1)),
    ("RLIMIT_AS", (limits["memory"], limits["memory"])),
    ("RLIMIT_FSIZE", (limits["fsize"], limits["fsize"])),
    ("RLIMIT_NOFILE", (limits["nofile"], limits["nofile"])),
    ("RLIMIT_NPROC", (limits["nproc"], limits["nproc"])),
    ("RLIMIT_CORE", (0, 0)),
):
    resource.setrlimit(getattr(resource, _name), _value)
_uid = job["uid"]
if _uid is not None:
    os.setgroups([])
    os.setgid(_uid)
    os.setuid(_uid)
_emit({"event": "isolation", "network": _network, "uid": os.getuid()})

_root = os.path.realpath(job["workdir"])
os.chdir(_root)


def _guard():
    import builtins, io, socket, _socket

    errno_EACCES = 13

    def refuse_network(*args, **kwargs):
        raise PermissionError(errno_EACCES, "network access is disabled in the sandbox")

    class _NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse_network()

    socket.socket = _NoSocket
    _socket.socket = _NoSocket
    for name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        setattr(socket, name, refuse_network)

    def inside(path):
        if isinstance(path, int):
            return True
        real = os.path.realpath(os.fsdecode(path))
        return real == _root or real.startswith(_root + os.sep) or real == os.devnull

    def refuse_write(path):
        raise PermissionError(errno_EACCES, "writing outside the sandbox directory is not allowed", str(path))

    real_open = io.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+") and not inside(file):
            refuse_write(file)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = guarded_open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    real_os_open = os.open

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path):
            refuse_write(path)
        return real_os_open(path, flags, *args, **kwargs)

    os.open = guarded_os_open

    def guarded(function, path_args):
        def wrapper(*args, **kwargs):
            for position in path_args:
                if position < len(args) and not inside(args[position]):
                    refuse_write(args[position])
            return function(*args, **kwargs)
        return wrapper

    for name, path_args in (
        ("remove", (0,)), ("unlink", (0,)), ("rmdir", (0,)), ("mkdir", (0,)), ("rename", (0, 1)),
        ("replace", (0, 1)), ("symlink", (1,)), ("link", (0, 1)), ("chmod", (0,)), ("chown", (0,)),
        ("truncate", (0,)), ("utime", (0,)), ("mkfifo", (0,)), ("mknod", (0,)), ("lchown", (0,)),
    ):
        if hasattr(os, name):
            setattr(os, name, guarded(getattr(os, name), path_args))


_guard()


class _TestTimeout(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _TestTimeout()


def _describe(exc):
    text = "%s: %s" % (type(exc).__name__, exc)
    return text[:job["message_chars"]]


signal.signal(signal.SIGALRM, _on_alarm)
_timeout = job["timeout"]
_namespace = {"__name__": "candidate", "__builtins__": __builtins__}
_load_error = None
try:
    try:
        signal.setitimer(signal.ITIMER_REAL, _timeout)
        exec(compile(job["program"], "<candidate>", "exec"), _namespace)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
except _TestTimeout:
    _load_error = "timeout: loading the program took longer than %gs" % _timeout
except BaseException as exc:
    _load_error = _describe(exc)
_emit({"event": "loaded", "error": _load_error})
_entry_point = job["entry_point"]
for _index, _test in enumerate(job["tests"]):
    if _load_error is not None:
        _emit({"event": "test", "index": _index, "status": "error", "message": "program did not load: " + _load_error})
        continue
    _test_namespace = dict(_namespace)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, _timeout)
            exec(compile(_test, "<test %d>" % _index, "exec"), _test_namespace)
            _check = _test_namespace.get("check")
            if _entry_point and callable(_check) and _check is not _namespace.get("check"):
                if _entry_point not in _namespace:
                    raise NameError("entry point %r is not defined by the program" % _entry_point)
                _check(_namespace[_entry_point])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        _status, _message = "passed", ""
    except _TestTimeout:
        _status, _message = "timeout", "test took longer than %gs" % _timeout
    except AssertionError as exc:
        _status, _message = "failed", _describe(exc)
    except BaseException as exc:
        _status, _message = "error", _describe(exc)
    _emit({"event": "test", "index": _index, "status": _status, "message": _message})
signal.signal(signal.SIGALRM, signal.SIG_IGN)
try:
    sys.stdout.flush()
    sys.stderr.flush()
except BaseException:
    pass
_kill_escaped()
_emit({"event": "done"})
os._exit(0)
'''


def _tail(path: Path, chars: int) -> str:
    """Last ``chars`` characters of a file (read from the end, never the whole of a large file)."""
    if chars <= 0:
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 4 * chars))
        return fh.read().decode("utf-8", errors="replace")[-chars:]


@dataclass(frozen=True)
class _ProcessInfo:
    ppid: int
    pgid: int
    state: bytes
    uid: int

    @property
    def alive(self) -> bool:
        return self.state not in (b"Z", b"X")


def _process_table() -> dict[int, _ProcessInfo]:
    """Every process on the host (as far as /proc shows), by pid."""
    table: dict[int, _ProcessInfo] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            uid = entry.stat().st_uid
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            table[int(entry.name)] = _ProcessInfo(int(fields[1]), int(fields[2]), fields[0], uid)
        except (OSError, IndexError, ValueError):
            continue
    return table


def _kill_rounds(select: Callable[[dict[int, _ProcessInfo]], list[int]], rounds: int) -> bool:
    """SIGKILL the live processes ``select`` picks until it picks none; True when none is left."""
    for _ in range(rounds):
        pids = select(_process_table())
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)
    return False


def kill_user_processes(uid: int, rounds: int = 100) -> bool:
    """SIGKILL every live process of ``uid`` (zombies are skipped); True when none is left."""
    return _kill_rounds(lambda table: [pid for pid, p in table.items() if p.uid == uid and p.alive], rounds)


def kill_escaped_descendants(root: int, rounds: int = 100) -> bool:
    """SIGKILL the live descendants of ``root`` that left its process group (setsid, setpgid).

    ``root`` should be stopped or a subreaper, so that orphans stay below it while this runs.
    """

    def escaped(table: dict[int, _ProcessInfo]) -> list[int]:
        children: dict[int, list[int]] = {}
        for pid, info in table.items():
            children.setdefault(info.ppid, []).append(pid)
        group = table[root].pgid if root in table else root
        found, todo = [], [root]
        while todo:
            for child in children.get(todo.pop(), ()):
                todo.append(child)
                if table[child].pgid != group and table[child].alive:
                    found.append(child)
        return found

    return _kill_rounds(escaped, rounds)


def _private_dir(path: Path) -> Path:
    """A directory only this user can use (created 0700; refused if someone else owns it)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SandboxError(f"{path} is not a private directory of uid {os.geteuid()}")
    return path


class UidPool:
    """Claims a free sandbox uid for the duration of a run; exclusive across threads and processes (flock)."""

    def __init__(self, base: int, slots: int, lock_dir: Path):
        self.base = base
        self.slots = slots
        self.lock_dir = _private_dir(lock_dir)

    @contextmanager
    def claim(self, wait_seconds: float = 300.0) -> Iterator[int]:
        deadline = time.monotonic() + wait_seconds
        while True:
            start = random.randrange(self.slots)
            for offset in range(self.slots):
                uid = self.base + (start + offset) % self.slots
                fd = os.open(self.lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    continue
                try:
                    kill_user_processes(uid)  # leftovers of a run whose service died
                    yield uid
                finally:
                    kill_user_processes(uid)
                    os.close(fd)  # releases the lock
                return
            if time.monotonic() > deadline:
                raise SandboxError(f"no free sandbox uid among {self.slots} slots")
            time.sleep(0.05)


_PROBE = "import json, collections, re, math, itertools, functools; print('ok')"
_FALLBACK_INTERPRETERS = ("/usr/bin/python3", "/usr/local/bin/python3")


def _probe_interpreter(python: str, uid: int | None) -> bool:
    """Whether ``python -I -S`` starts and imports the stdlib as ``uid``."""
    try:
        done = subprocess.run(
            [python, "-I", "-S", "-c", _PROBE],
            check=False,
            capture_output=True,
            timeout=30,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            user=uid,
            group=uid,
            extra_groups=[] if uid is not None else None,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == b"ok"


@register_sandbox("subprocess")
class SubprocessSandbox(Sandbox):
    """One isolated interpreter per run; see the module docstring for the layers and their limits."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self._work_root = Path(self.config.work_root or tempfile.gettempdir())
        self._work_root.mkdir(parents=True, exist_ok=True)
        self._uids: UidPool | None = None
        self.python = self.config.python or sys.executable
        if self.config.drop_privileges and os.geteuid() == 0:
            self._uids = UidPool(
                self.config.uid_base,
                self.config.uid_slots,
                Path(tempfile.gettempdir()) / f"avengers-sandbox-uids-{os.geteuid()}",
            )
            self.python = self._interpreter_for(self.config.uid_base)
            if self.python is None:
                log.warning(
                    "no interpreter is usable by an unprivileged sandbox uid; running without dropping"
                )
                self._uids = None
                self.python = self.config.python or sys.executable
        if self.config.network_namespace == "required":
            self.run("pass")  # raises SandboxError now rather than failing every candidate later

    @property
    def drops_privileges(self) -> bool:
        return self._uids is not None

    def _interpreter_for(self, uid: int) -> str | None:
        choices = [self.config.python] if self.config.python else [sys.executable, *_FALLBACK_INTERPRETERS]
        for python in dict.fromkeys(choices):
            if python and _probe_interpreter(python, uid):
                return python
        return None

    @contextmanager
    def _identity(self) -> Iterator[int | None]:
        if self._uids is None:
            yield None
            return
        with self._uids.claim() as uid:
            yield uid

    def run(
        self,
        program: str,
        tests: Sequence[str] = (),
        entry_point: str | None = None,
        timeout_seconds: float | None = None,
    ) -> SandboxResult:
        config = self.config
        timeout = config.timeout_seconds if timeout_seconds is None else float(timeout_seconds)
        if not 0 < timeout <= config.max_timeout_seconds:
            raise ValueError(f"timeout_seconds must be in (0, {config.max_timeout_seconds}], got {timeout}")
        tests = list(tests)
        wall = config.startup_seconds + timeout * (len(tests) + 1)
        started = time.monotonic()
        with self._identity() as uid:
            workdir = Path(tempfile.mkdtemp(prefix="avengers-sandbox-", dir=self._work_root))
            private = Path(tempfile.mkdtemp(prefix="avengers-sandbox-io-"))
            try:
                if uid is not None:
                    os.chown(workdir, uid, uid)
                os.chmod(workdir, 0o700)
                return self._run_in(
                    workdir, private, uid, program, tests, entry_point, timeout, wall, started
                )
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
                shutil.rmtree(private, ignore_errors=True)

    def _run_in(
        self,
        workdir: Path,
        private: Path,
        uid: int | None,
        program: str,
        tests: list[str],
        entry_point: str | None,
        timeout: float,
        wall: float,
        started: float,
    ) -> SandboxResult:
        config = self.config
        results_path, stdout_path, stderr_path = private / "results", private / "stdout", private / "stderr"
        result_fd = os.open(results_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        job = {
            "program": program,
            "tests": tests,
            "entry_point": entry_point or None,
            "timeout": timeout,
            "workdir": str(workdir),
            "uid": uid,
            "network": config.network_namespace,
            "result_fd": result_fd,
            "message_chars": MESSAGE_CHARS,
            "limits": {
                "cpu": int(wall) + 1,
                "memory": config.memory_mb * 1024 * 1024,
                "fsize": config.file_size_mb * 1024 * 1024,
                "nofile": config.max_open_files,
                "nproc": config.max_processes,
                "nice": config.nice,
            },
        }
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8",
        }
        timed_out = False
        try:
            with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
                process = subprocess.Popen(
                    [self.python, "-I", "-S", "-c", _RUNNER],
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    cwd=workdir,
                    env=env,
                    start_new_session=True,
                    pass_fds=(result_fd,),
                )
                try:
                    process.communicate(json.dumps(job).encode("utf-8"), timeout=wall)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    # Freeze the group at once (no more forks there), kill what escaped it while the
                    # runner (a subreaper) still holds the orphans below it, then the whole group.
                    self._signal_session(process.pid, signal.SIGSTOP)
                    kill_escaped_descendants(process.pid)
                finally:
                    self._signal_session(process.pid, signal.SIGKILL)
                    process.kill()
                    process.wait()
                    if uid is not None:
                        kill_user_processes(uid)
        finally:
            os.close(result_fd)
        events = self._read_events(results_path)
        return self._result(
            events,
            tests,
            timed_out=timed_out,
            exit_code=process.returncode,
            stdout=_tail(stdout_path, config.output_tail_chars),
            stderr=_tail(stderr_path, config.output_tail_chars),
            started=started,
        )

    @staticmethod
    def _signal_session(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _read_events(path: Path) -> list[dict]:
        events = []
        with path.open("rb") as fh:
            for line in fh:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    events.append(event)
        return events

    def _result(
        self,
        events: list[dict],
        tests: list[str],
        *,
        timed_out: bool,
        exit_code: int | None,
        stdout: str,
        stderr: str,
        started: float,
    ) -> SandboxResult:
        isolation = next((e for e in events if e.get("event") == "isolation"), {})
        # Only the bootstrap, before any candidate code runs, may report a fatal setup error.
        fatal = events[0] if events and events[0].get("event") == "fatal" else None
        loaded = next((e for e in events if e.get("event") == "loaded"), None)
        by_index: dict[int, TestOutcome] = {}
        for event in events:
            if event.get("event") != "test" or not isinstance(event.get("index"), int):
                continue
            status = event.get("status")
            if status in ("passed", "failed", "error", "timeout") and 0 <= event["index"] < len(tests):
                by_index.setdefault(
                    event["index"], TestOutcome(event["index"], status, str(event.get("message", "")))
                )
        done = any(e.get("event") == "done" for e in events)
        if fatal is not None:
            raise SandboxError(str(fatal.get("error")))
        if loaded is None:
            error = (
                "timeout: the program did not load in time" if timed_out else self._crash(exit_code, stderr)
            )
        elif loaded.get("error"):
            error = str(loaded["error"])
        elif not done:
            error = "timeout: killed at the wall-clock limit" if timed_out else self._crash(exit_code, stderr)
        else:
            error = None
        outcomes: list[TestOutcome] = []
        interrupted = False
        for index in range(len(tests)):
            if index in by_index:
                outcomes.append(by_index[index])
            elif not interrupted:
                interrupted = True
                status: TestStatus = "timeout" if timed_out else "error"
                outcomes.append(TestOutcome(index, status, error or "no result"))
            else:
                outcomes.append(TestOutcome(index, "not_run", "an earlier test ended the run"))
        passed = error is None and not timed_out and all(t.passed for t in outcomes)
        uid = isolation.get("uid")
        return SandboxResult(
            passed=passed,
            tests=outcomes,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            error=error,
            exit_code=exit_code,
            network_isolated=bool(isolation.get("network")),
            privileges_dropped=isinstance(uid, int) and uid != 0 and self._uids is not None,
            duration_seconds=time.monotonic() - started,
        )

    @staticmethod
    def _crash(exit_code: int | None, stderr: str) -> str:
        if exit_code is not None and exit_code < 0:
            try:
                name = signal.Signals(-exit_code).name
            except ValueError:
                name = str(-exit_code)
            reason = f"killed by {name}"
        else:
            reason = f"exited with status {exit_code}"
        last = stderr.strip().splitlines()[-1:] if stderr.strip() else []
        return f"the program ended early ({reason})" + (f": {last[0][:MESSAGE_CHARS]}" if last else "")
