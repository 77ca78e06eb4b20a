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

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from avengers.config.sandbox import SandboxConfig
from avengers.core.execution import MESSAGE_CHARS, SandboxError, SandboxResult, TestOutcome, TestStatus
from avengers.sandbox.base import Sandbox, register_sandbox
from avengers.sandbox.processes import UidPool, _tail, kill_escaped_descendants, kill_user_processes

log = logging.getLogger(__name__)

_RUNNER = (Path(__file__).parent / "bootstrap.py").read_text(encoding="utf-8")
"""The bootstrap's source, passed with ``-c`` (never imported into the service)."""

STOP_POLL_SECONDS = 0.05
"""How often a run with a ``stop`` condition checks it."""

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
        stop: Callable[[], bool] | None = None,
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
                    workdir, private, uid, program, tests, entry_point, timeout, wall, started, stop
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
        stop: Callable[[], bool] | None = None,
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
                    self._wait(process, json.dumps(job).encode("utf-8"), time.monotonic() + wall, stop)
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
    def _wait(process: subprocess.Popen, job: bytes, kill_at: float, stop: Callable[[], bool] | None) -> None:
        """Send the job and wait for the run to end; TimeoutExpired at ``kill_at`` or once ``stop()`` is true."""
        data: bytes | None = job
        while True:
            left = kill_at - time.monotonic()
            if left <= 0 or (stop is not None and stop()):
                raise subprocess.TimeoutExpired(process.args, 0)
            try:
                process.communicate(data, timeout=left if stop is None else min(left, STOP_POLL_SECONDS))
                return
            except subprocess.TimeoutExpired:
                data = None  # communicate() goes on with the rest of the job, if any

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

