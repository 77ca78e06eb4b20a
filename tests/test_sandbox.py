"""The sandbox runs correct programs and contains escape attempts (network, files, forks, loops, memory)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from avengers.config.sandbox import SandboxConfig
from avengers.sandbox import SubprocessSandbox, create_sandbox
from avengers.sandbox.processes import _process_table

HUMANEVAL_TEST = textwrap.dedent(
    """
    METADATA = {}

    def check(candidate):
        assert candidate(1, 2) == 3
        assert candidate(-1, 1) == 0
    """
)


@pytest.fixture(scope="module")
def sandbox() -> SubprocessSandbox:
    return create_sandbox(SandboxConfig(timeout_seconds=2.0, startup_seconds=3.0))


@pytest.fixture(scope="module")
def guards_only() -> SubprocessSandbox:
    """Neither a dedicated uid nor a network namespace: only the rlimits and in-process guards."""
    return create_sandbox(
        SandboxConfig(
            timeout_seconds=2.0, startup_seconds=3.0, drop_privileges=False, network_namespace="off"
        )
    )


def leftovers(marker: str) -> list[int]:
    """Processes whose command line carries ``marker`` (candidates that outlived their run)."""
    pids = []
    for pid in _process_table():
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return pids


def test_correct_program_passes_plain_and_humaneval_tests(sandbox):
    program = "def add(a, b):\n    return a + b\nprint('loaded')\n"
    result = sandbox.run(program, ["assert add(2, 2) == 4", HUMANEVAL_TEST], entry_point="add")
    assert result.passed, result
    assert [t.status for t in result.tests] == ["passed", "passed"]
    assert result.outcomes == (True, True)
    assert "loaded" in result.stdout
    assert result.error is None and not result.timed_out


def test_wrong_program_fails_with_per_test_outcomes(sandbox):
    program = "def add(a, b):\n    return a - b\n"
    result = sandbox.run(program, ["assert add(0, 0) == 0", "assert add(1, 2) == 3", HUMANEVAL_TEST], "add")
    assert not result.passed
    assert [t.status for t in result.tests] == ["passed", "failed", "failed"]
    assert result.tests[1].message.startswith("AssertionError")


def test_missing_entry_point_and_syntax_error_are_errors(sandbox):
    missing = sandbox.run("def other():\n    return 1\n", [HUMANEVAL_TEST], entry_point="add")
    assert missing.tests[0].status == "error" and "add" in missing.tests[0].message
    broken = sandbox.run("def add(a, b) return a\n", ["assert add(1, 2) == 3"])
    assert not broken.passed and broken.error.startswith("SyntaxError")
    assert broken.tests[0].status == "error"


def test_network_connect_to_local_listener_fails(sandbox, guards_only):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        attempts = {
            "socket module": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n",
            "raw _socket": f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
        }
        for box in (sandbox, guards_only):
            for name, program in attempts.items():
                result = box.run(program, ["assert True"])
                assert not result.passed, name
                assert "network access is disabled" in result.error, (name, result.error)
        with pytest.raises(socket.timeout):
            server.accept()


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root (or user namespaces) here")
def test_network_namespace_holds_past_the_python_guard(sandbox):
    # The in-process guard is plain Python: the C socket type is still reachable through its MRO.
    # Only the network namespace then stands between the candidate and the listener.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        program = textwrap.dedent(
            f"""
            import socket
            raw = socket.socket.__mro__[2]
            s = raw()
            s.settimeout(1)
            s.connect(("127.0.0.1", {port}))
            """
        )
        result = sandbox.run(program)
        assert result.network_isolated
        assert not result.passed and result.error.startswith("OSError"), result.error
        with pytest.raises(socket.timeout):
            server.accept()


def test_writing_outside_the_temp_dir_is_refused(sandbox, guards_only, tmp_path):
    os.chmod(tmp_path, 0o777)  # only the sandbox's own layers may stop the write
    target = tmp_path / "escaped.txt"
    attempts = [
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
        f"import shutil, os\nos.makedirs('d')\nshutil.move('d', {str(tmp_path / 'moved')!r})",
        "import os\nos.symlink('/etc/passwd', 'link')\nopen('link', 'a').write('x')",
    ]
    for box in (sandbox, guards_only):
        for program in attempts:
            result = box.run(program)
            assert not result.passed and "PermissionError" in result.error, (program, result.error)
    assert list(tmp_path.iterdir()) == []
    # Inside its own directory the candidate may write freely.
    inside = sandbox.run(
        "import os\nos.mkdir('d')\nopen('d/f.txt', 'w').write('x')\nassert os.path.exists('d/f.txt')"
    )
    assert inside.passed, inside


@pytest.mark.skipif(
    os.geteuid() != 0, reason="a dedicated uid needs root; the kernel layer is then not in use"
)
def test_dedicated_uid_blocks_writes_that_bypass_the_python_guard(sandbox, tmp_path):
    target = tmp_path / "bypass.txt"
    result = sandbox.run(f"import _io\n_io.open({str(target)!r}, 'w').write('x')")
    assert result.privileges_dropped
    assert not result.passed and "Permission denied" in result.error
    assert not target.exists()


def test_fork_bomb_is_bounded_and_cleaned_up(sandbox):
    program = textwrap.dedent(
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """
    )
    result = sandbox.run(program, ["assert True"])
    assert not result.passed
    assert result.error.startswith("timeout")
    time.sleep(0.2)
    assert leftovers("_become_subreaper") == []  # no runner or forked copy of it survives
    if sandbox.drops_privileges:
        uids = range(sandbox.config.uid_base, sandbox.config.uid_base + sandbox.config.uid_slots)
        assert not [p for p, info in _process_table().items() if info.uid in uids and info.alive]


def test_child_that_leaves_the_session_is_killed(sandbox, guards_only):
    for box in (sandbox, guards_only):
        marker = f"setsid-escape-{id(box)}"
        program = textwrap.dedent(
            f"""
            import os
            if os.fork() == 0:
                os.setsid()
                os.execv("/bin/sleep", ["sleep", "300", {marker!r}])
            """
        )
        result = box.run(program, ["assert True"])
        assert result.passed, result
        time.sleep(0.2)
        assert leftovers(marker) == []


def test_endless_loop_is_killed_at_the_timeout(sandbox):
    per_test = sandbox.run("def f():\n    while True:\n        pass\n", ["f()", "assert True"])
    assert [t.status for t in per_test.tests] == ["timeout", "passed"]
    assert not per_test.timed_out  # the per-test alarm stopped it; the run went on
    # A loop that ignores the alarm is killed at the run's wall-clock limit.
    stubborn = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n"
    started = time.monotonic()
    result = sandbox.run(stubborn, ["assert True"], timeout_seconds=0.5)
    assert result.timed_out and not result.passed
    assert result.tests[0].status == "timeout"
    assert time.monotonic() - started < 60  # bounded, not a timing assertion on speed


def test_huge_memory_allocation_fails(sandbox):
    result = sandbox.run("x = bytearray(8 * 1024 ** 3)\n", ["assert True"])
    assert not result.passed and result.error.startswith("MemoryError")
    grown = sandbox.run("x = []\nwhile True:\n    x.append(bytearray(64 * 1024 ** 2))\n", ["assert True"])
    assert not grown.passed and "MemoryError" in grown.error


def test_large_output_is_cut_to_its_tail(sandbox):
    result = sandbox.run("for i in range(100000):\n    print('line', i)\n", ["assert True"])
    assert result.passed
    assert result.stdout.endswith("line 99999\n")
    assert len(result.stdout) <= sandbox.config.output_tail_chars


def test_timeout_out_of_range_is_refused(sandbox):
    with pytest.raises(ValueError):
        sandbox.run("x = 1", timeout_seconds=sandbox.config.max_timeout_seconds + 1)
    with pytest.raises(ValueError):
        sandbox.run("x = 1", timeout_seconds=0)


AS_SERVICE_USER = """
import json, os
from avengers.config.sandbox import SandboxConfig
from avengers.sandbox import create_sandbox

box = create_sandbox(SandboxConfig(timeout_seconds=2, startup_seconds=3))
good = box.run("import os\\nassert os.getuid() == %d" % os.getuid(), ["assert True"])
net = box.run("import socket\\ns = socket.socket.__mro__[2]()\\ns.settimeout(1)\\ns.connect(('127.0.0.1', 9))\\n")
bomb = box.run("import os\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        pass\\n", ["assert True"])
print(json.dumps({"good": good.passed, "isolated": net.network_isolated, "net_error": net.error, "bomb": bomb.error}))
"""


def _system_python_matches() -> bool:
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
        return False
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() == str(tuple(sys.version_info[:2]))


@pytest.mark.skipif(
    not _system_python_matches(),
    reason="needs root to become an unprivileged user, and a system python3 of this version",
)
def test_unprivileged_service_user():
    """As a Kubernetes pod runs it: no root, so no uid switch; user namespaces and rlimits still hold."""
    site = next(p for p in sys.path if p.endswith("site-packages"))
    src = str(Path(__file__).resolve().parent.parent / "src")
    done = subprocess.run(
        ["/usr/bin/python3", "-c", AS_SERVICE_USER],
        capture_output=True,
        text=True,
        timeout=300,
        user=65534,
        group=65534,
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{src}:{site}"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["good"]
    assert report["net_error"].startswith(("OSError", "PermissionError"))
    if report["isolated"]:  # user namespaces allowed: the raw socket cannot reach the host's loopback
        assert "unreachable" in report["net_error"]
    assert report["bomb"].startswith("timeout")
    time.sleep(0.5)
    assert [p for p, info in _process_table().items() if info.uid == 65534 and info.alive] == []
