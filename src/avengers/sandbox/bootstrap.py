# The bootstrap and test harness of SubprocessSandbox, run as ``python -I -S -c <this file's text>``.
# It is never imported: it reads its job from stdin and must only use the standard library, keeping the
# candidate's namespace separate from its own. See avengers.sandbox.subprocess_sandbox for the layers.
# ruff: noqa
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
