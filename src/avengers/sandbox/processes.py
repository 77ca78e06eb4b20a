"""Finding and killing the processes a candidate left behind, and the pool of sandbox uids."""

import errno
import fcntl
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from avengers.core.execution import SandboxError

log = logging.getLogger(__name__)


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


