"""The sandbox worker: a long-lived process that runs each untrusted job in a fresh, limited child.

This file runs *inside* the sandbox (as an unprivileged user, in its own network, mount, IPC and PID
namespaces, or in a Docker container), under whatever ``python3`` is there, so it uses the standard
library alone and imports nothing from the project. The parent sends it the source with ``-c``.

Protocol, on the worker's stdin/stdout: each message is a 4-byte big-endian length and a JSON body.
The parent sends a job; while the job runs the worker may send requests (``{"request": …}``: a tool
call, or a record of a big state table) and waits for each reply; it ends with ``{"result": …}``.

Life of a job. The worker forks the job's child *before* the job arrives (fork, page faults and
set-up overlap the parent's own work), and the child itself reads the job from the worker's stdin,
closes that descriptor and only then runs untrusted code; it tells the worker ``started`` (which
starts the wall clock) and later ``done``, over a SOCK_SEQPACKET pair, so a child killed mid-message
can never desynchronise the parent's stream, and nothing a job writes reaches the parent unchecked.
After the result is sent the worker kills every process the job left (as PID 1 of its namespace:
``kill(-1)``), wipes the writable directories and forks the next child.

What protects the host is the operating system: the namespaces or container, the unprivileged user,
the resource limits, a seccomp filter (no network sockets, tracing, namespaces, mounts, keyrings or
System V IPC), a non-dumpable worker (a job of the same user cannot reach into it through /proc)
and the clean-up after each job. The module and ``os`` blocks below are only a speed bump that gives
naive code a clear error (``sys.modules['posix']`` and ``importlib`` get around them).
"""

import builtins
import gc
import json
import os
import resource
import select
import signal
import socket
import stat
import struct
import sys
import time

# Only these imports: every module makes each fork dearer (``tempfile``, through ``random``, even
# runs code in every child), so directories and tracebacks are handled by hand below.

MAX_MESSAGE = 65536  # one child-to-worker message (a request or a result) on the SEQPACKET pair
MAX_TEXT = 4000  # longest message or kind a result may carry
STATUSES = ("ok", "failed", "error", "timeout")
BLOCKED_MODULES = frozenset({
    "ctypes", "_ctypes", "cffi", "subprocess", "_posixsubprocess", "multiprocessing",
    "_multiprocessing", "pty", "socket", "_socket", "ssl", "_ssl", "mmap", "resource",
})
BLOCKED_OS_FUNCTIONS = (
    "system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execl", "execle",
    "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle",
    "posix_spawn", "posix_spawnp", "setuid", "setgid", "setsid", "setpgid", "chroot", "putenv",
)
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 4, 38, 22, 2
# System calls a job never needs and that open ways around the namespaces or out of one job into
# the next: tracing, namespaces and mounts, the kernel keyrings and System V / POSIX IPC (both
# outlive a process), BPF, perf, userfaultfd, io_uring, modules. Per architecture: (audit arch,
# refused, socket, clone, clone3); socket is allowed for AF_UNIX only, clone without CLONE_NEW*.
SECCOMP_TABLES = {
    "x86_64": (0xC000003E, (
        101, 310, 311,  # ptrace, process_vm_readv/writev
        272, 308, 165, 166, 155, 161,  # unshare, setns, mount, umount2, pivot_root, chroot
        428, 429, 430, 431, 432, 433, 442,  # open_tree, move_mount, fsopen…fspick, mount_setattr
        248, 249, 250,  # add_key, request_key, keyctl
        29, 64, 68, 240,  # shmget, semget, msgget, mq_open
        321, 298, 323, 425, 426, 427,  # bpf, perf_event_open, userfaultfd, io_uring_*
        175, 313, 176, 246, 320, 163, 167, 169,  # modules, kexec, acct, swapon, reboot
        303, 304,  # name_to_handle_at, open_by_handle_at
    ), 41, 56, 435),
    "aarch64": (0xC00000B7, (
        117, 270, 271,
        97, 268, 40, 39, 41, 51,
        428, 429, 430, 431, 432, 433, 442,
        217, 218, 219,
        194, 190, 186, 180,
        280, 241, 282, 425, 426, 427,
        105, 273, 106, 104, 294, 89, 224, 142,
        264, 265,
    ), 198, 220, 435),
}
CLONE_NEW_FLAGS = 0x7E020080  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME

WARM_UP = "def verify(state, answer):\n    return state.get('x') == [1, 2] and 'a' in answer\n"

# The worker's own references, taken before the ``os`` functions are blocked for jobs.
_fork, _kill, _killpg, _setsid = os.fork, os.kill, os.killpg, os.setsid


# ---------------------------------------------------------------- framing on the parent channel

def read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd):
    """The body of the next frame on ``fd``, or None at end of stream."""
    head = read_exact(fd, 4)
    return None if head is None else read_exact(fd, struct.unpack(">I", head)[0])


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def write_message(fd, message):
    body = json.dumps(message).encode()
    write_all(fd, struct.pack(">I", len(body)) + body)


# ---------------------------------------------------------------- the worker's lock-down

def _seccomp_program(table):
    """A classic-BPF seccomp filter refusing ``table``'s system calls with EPERM (see
    SECCOMP_TABLES); clone3 gets ENOSYS, so that the C library falls back to the checked clone."""
    audit_arch, refused, socket_nr, clone_nr, clone3_nr = table
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    program = [(ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    if audit_arch == 0xC000003E:
        program += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]  # the x32 ABI's numbers
    for nr in refused:
        program += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
    program += [
        (jeq, 0, 1, clone3_nr), (ret, 0, 0, enosys),
        (jeq, 0, 4, socket_nr), (ld, 0, 0, 16), (jeq, 0, 1, socket.AF_UNIX), (ret, 0, 0, allow), (ret, 0, 0, eperm),
        (jeq, 0, 3, clone_nr), (ld, 0, 0, 16), (jset, 0, 1, CLONE_NEW_FLAGS), (ret, 0, 0, eperm),
        (ret, 0, 0, allow),
    ]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


def _lock_down():
    """Make the worker, and every child it forks, non-dumpable (a job runs as the same user, and
    could otherwise ptrace the worker or open its /proc files: its memory, its pipes to the parent)
    and install the seccomp filter. Needs ``ctypes``, taken out of the jobs' reach right after.
    Returns which of the two took effect."""
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return False, False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    undumpable = prctl(PR_SET_DUMPABLE, 0, None, 0, 0) == 0
    table = SECCOMP_TABLES.get(os.uname().machine)
    if table is None or prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        return undumpable, False
    program = ctypes.create_string_buffer(_seccomp_program(table))
    fprog = ctypes.create_string_buffer(struct.pack("=HxxxxxxQ", len(program.raw) // 8, ctypes.addressof(program)))
    return undumpable, prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) == 0


def _blocked(name):
    def refuse(*args, **kwargs):
        raise PermissionError(f"os.{name} is not allowed in the sandbox")
    return refuse


def _narrow():
    """Take the dangerous parts of the standard library out of naive code's reach. Done once in the
    worker, before any fork, so that children inherit it without paying for it."""
    for name in BLOCKED_OS_FUNCTIONS:
        if hasattr(os, name):
            setattr(os, name, _blocked(name))
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name.split(".")[0] in BLOCKED_MODULES:
            raise ImportError(f"module {name!r} is blocked in the sandbox")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import
    for name in BLOCKED_MODULES:
        sys.modules.pop(name, None)


# ---------------------------------------------------------------- inside the child

def _error(kind, message):
    return {"status": "error", "kind": kind, "message": message}


def _limit(limits):
    """The job's resource limits (soft = hard, so the code cannot raise them again)."""
    mb = 1024 * 1024
    cpu = max(1, int(limits["cpu_seconds"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.getuid() != 0:  # the kernel does not enforce RLIMIT_NPROC for root
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"],) * 2)


class Remote:
    """The child's end of its link to the worker: a request out, a reply back."""

    def __init__(self, sock, replies):
        self.sock, self.replies = sock, replies

    def ask(self, request):
        message = json.dumps({"request": request}).encode()
        if len(message) > MAX_MESSAGE:
            raise ValueError("request too large for the sandbox")
        self.sock.send(message)
        body = read_frame(self.replies)
        if body is None:
            raise RuntimeError("the sandbox's parent went away")
        reply = json.loads(body)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["value"]


class RemoteTable:
    """A big state table kept by the parent; records are fetched when the verifier reads them."""

    def __init__(self, remote, name):
        self._remote, self._name, self._cache, self._keys = remote, name, {}, None

    def __getitem__(self, key):
        if key not in self._cache:
            self._cache[key] = self._remote.ask({"op": "get", "table": self._name, "key": key})
        if self._cache[key] is None:
            raise KeyError(key)
        return self._cache[key]

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key):
        return self.get(key) is not None

    def keys(self):
        if self._keys is None:
            self._keys = self._remote.ask({"op": "keys", "table": self._name})
        return list(self._keys)

    __iter__ = lambda self: iter(self.keys())
    __len__ = lambda self: len(self.keys())

    def values(self):
        return [self[k] for k in self.keys()]

    def items(self):
        return [(k, self[k]) for k in self.keys()]


def _tool_function(remote, name, params):
    def call(*args, **kwargs):
        if len(args) > len(params):
            raise TypeError(f"{name}() takes {len(params)} positional arguments, got {len(args)}")
        kwargs.update(zip(params, args))
        return remote.ask({"op": "tool", "name": name, "arguments": kwargs})
    call.__name__ = name
    return call


def _describe(exc):
    """``Type: message (line N)``, N the last line of the job's own code in the traceback."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<sandbox>":
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f" (line {line})" if line is not None else ""
    return f"{type(exc).__name__}: {str(exc)[:MAX_TEXT // 2]}{where}"


def _run_code(code, namespace, after):
    """Run the job's code, then ``after()``; an exception or a limit becomes an error result."""
    try:
        exec(code, namespace)
        return after()
    except MemoryError:
        return {"status": "error", "kind": "memory", "message": "MemoryError: the memory limit was reached"}
    except BaseException as exc:  # the code's own failure is a result, not a crash
        return {"status": "error", "kind": "exception", "message": _describe(exc)}


def run_child(job, remote):
    """Run one job; returns the result dict (never raises)."""
    _limit(job["limits"])
    namespace = {"__name__": "__sandbox__"}
    try:
        code = compile(job["source"], "<sandbox>", "exec")
    except SyntaxError as exc:
        return {"status": "error", "kind": "syntax", "message": f"SyntaxError: {exc.msg} (line {exc.lineno})"}
    if job["kind"] == "verify":
        helpers = job.get("helpers", {})
        namespace["state_hash"] = lambda: helpers.get("state_hash")

        def call_verify():
            verify = namespace.get("verify")
            if not callable(verify):
                return _error("syntax", "the source defines no function verify(state, answer)")
            state = dict(job["state"])
            for name in job.get("tables", []):
                state[name] = RemoteTable(remote, name)
            value = verify(state, job["answer"])
            if type(value).__name__ not in ("bool", "bool_"):
                return _error("non_bool", f"verify() returned {type(value).__name__} {str(value)[:80]!r}; "
                                          "it must return True or False")
            return {"status": "ok" if value else "failed"}

        return _run_code(code, namespace, call_verify)
    for name, params in job.get("tools", {}).items():
        namespace[name] = _tool_function(remote, name, params)
    return _run_code(code, namespace, lambda: {"status": "ok"})


def child_main(inp, sock, replies, output, workdir):
    """A pre-forked child: set up its output and directory, then read the job and run it."""
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    os.chdir(workdir)
    gc.disable()  # no collector passes dirtying pages the child shares with the worker
    # Touch the compiler's memory now, while waiting: after a fork its first use pays page faults.
    exec(compile(WARM_UP, "<warm-up>", "exec"), {})
    body = read_frame(inp)
    os.close(inp)  # before any untrusted code: the parent's stream is the worker's alone
    if body is None:
        return
    job = json.loads(body)
    limits = job["limits"]
    sock.send(json.dumps({"started": [limits["wall_seconds"], limits["output_bytes"]]}).encode())
    try:
        result = run_child(job, Remote(sock, replies))
    except BaseException as exc:
        result = {"status": "error", "kind": "exception", "message": f"sandbox: {type(exc).__name__}: {exc}"}
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    try:
        message = json.dumps({"done": result})
    except BaseException:
        message = json.dumps({"done": {"status": "error", "kind": "exception",
                                       "message": "the result could not be serialised"}})
    sock.send(message.encode()[:MAX_MESSAGE])


# ---------------------------------------------------------------- the worker's side of a job

SIGNAL_REASONS = {
    signal.SIGXCPU: ("cpu", "the CPU time limit was reached"),
    signal.SIGKILL: ("killed", "the process was killed (memory or CPU limit)"),
    signal.SIGSEGV: ("crash", "the process crashed (segmentation fault)"),
}


def _timeout(wall):
    return {"status": "timeout", "kind": "timeout", "message": f"timed out after {wall:g} s of wall-clock time"}


def _checked(result):
    """A child's result as the parent may see it: it comes from untrusted code, so only a known
    status and bounded text pass."""
    if not isinstance(result, dict) or result.get("status") not in STATUSES:
        return _error("protocol", "the code sent the sandbox a malformed result")
    return {"status": result["status"], "kind": str(result.get("kind", ""))[:MAX_TEXT],
            "message": str(result.get("message", ""))[:MAX_TEXT]}


def _read_output(fd, cap):
    """The first ``cap`` characters the job printed, read through the worker's own descriptor of
    the output file (the job may rename, replace or truncate the file; it cannot swap the one the
    worker holds)."""
    try:
        data = os.pread(fd, cap + 1, 0)
    except OSError:
        return ""
    text = data[:cap].decode("utf-8", "replace")
    return text + "\n[output truncated]" if len(data) > cap else text


def _clean_up(pgid):
    """Kill the child and anything it started, then reap them."""
    if os.getpid() == 1:  # init of our own PID namespace: every other process here is the job's
        try:
            _kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:  # no PID namespace (a fallback): the child's session, which setsid() escapes
        try:
            _killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break


def _remove(path):
    """Delete a file or a whole tree, giving back the owner's permissions a job may have taken off
    its own directories; never follows a symbolic link."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
        os.chmod(path, 0o700)
        with os.scandir(path) as entries:
            for entry in entries:
                _remove(entry.path)
        os.rmdir(path)
    except OSError:
        pass


def _wipe(directories):
    """Delete whatever the job left in the worker's private writable directories, so that nothing
    passes from one job to the next."""
    for directory in directories:
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    _remove(entry.path)
        except OSError:
            pass


def _write_all(fd, data, deadline):
    """Write a reply to a child that may have stopped reading (False: the deadline came first) or
    gone (its remaining messages, or its end, are still to be read)."""
    while data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([], [fd], [], left)[1]:
            return False
        try:
            data = data[os.write(fd, data[:65536]):]
        except BrokenPipeError:
            return True
    return True


def _make_workdir():
    """A new directory of the worker's own in the work root (``os.mkdir`` never reuses a path)."""
    global _jobs
    while True:
        _jobs += 1
        path = os.path.join(WORK_ROOT, f"job-{os.getpid()}-{_jobs}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


_jobs = 0


class Child:
    """A child forked ahead of its job, so that the fork overlaps the parent's own work."""

    def __init__(self, inp, out):
        self.workdir = _make_workdir()
        self.output = os.open(os.path.join(self.workdir, ".output"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        replies_r, self.replies = os.pipe()
        self.pid = self.pgid = _fork()
        if self.pid == 0:
            try:
                _setsid()
                self.sock.close()
                os.close(out)
                os.close(self.replies)
                child_main(inp, theirs, replies_r, self.output, self.workdir)
            finally:
                os._exit(0)
        theirs.close()
        os.close(replies_r)
        os.set_blocking(self.replies, False)

    def _next(self, deadline):
        """The child's next message; ``{}`` when it has closed its end, None at the deadline."""
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and (left <= 0 or not select.select([self.sock], [], [], left)[0]):
            return None
        data = self.sock.recv(MAX_MESSAGE)
        if not data:
            return {}
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            return {"done": None}
        return message if isinstance(message, dict) else {"done": None}

    def run(self, inp, out):
        """Serve the job the child reads; None when no job came (stdin closed, or the child lost)."""
        started = self._next(None).get("started")
        if started is None:
            return None
        wall, cap = started
        start = time.monotonic()
        deadline = start + wall
        result = None
        while result is None:
            message = self._next(deadline)
            if message is None:
                result = _timeout(wall)
            elif not message:
                result = self._exit_status(deadline) or _timeout(wall)
            elif "done" in message:
                result = _checked(message["done"])
            elif "request" in message:
                write_message(out, {"request": message["request"]})
                body = read_frame(inp)
                if body is None:
                    sys.exit(0)
                if not _write_all(self.replies, struct.pack(">I", len(body)) + body, deadline):
                    result = _timeout(wall)
            else:
                result = _error("protocol", "the code sent the sandbox a malformed message")
        result["seconds"] = time.monotonic() - start
        result["output"] = _read_output(self.output, cap)
        return result

    def _exit_status(self, deadline):
        """The child closed its channel without a word: wait (until the deadline; it may have
        closed the socket and lived on) for it to end, and say how; None if it is still running."""
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.001)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            kind, why = SIGNAL_REASONS.get(sig, ("killed", f"killed by signal {sig}"))
            return _error(kind, why)
        return _error("exited", f"the code exited with status {os.WEXITSTATUS(status)}")

    def close(self):
        _clean_up(self.pgid)
        self.sock.close()
        os.close(self.replies)
        os.close(self.output)
        _remove(self.workdir)


def main():
    inp, out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.environ.clear()
    # Children print through these; fds 1 and 2 point at each child's own output file.
    sys.stdout = sys.stderr = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails with an error instead
    undumpable, filtered = _lock_down()
    _narrow()
    # Compile once here: the compiler's lazily built tables and memory then exist before any fork,
    # and each child's first compile touches (and copies) a third of the pages it would otherwise.
    for _ in range(3):
        exec(compile(WARM_UP, "<warm-up>", "exec"), {})
    gc.freeze()  # objects alive now are never scanned again, so forked children share their pages
    child = Child(inp, out)
    write_message(out, {"ready": os.getpid(), "uid": os.getuid(), "undumpable": undumpable, "seccomp": filtered})
    while True:
        result = child.run(inp, out)
        if result is not None:
            write_message(out, {"result": result})
        child.close()  # after answering: the clean-up overlaps the parent's own work
        _wipe(SCRATCH)
        if result is None:
            return
        child = Child(inp, out)


WORK_ROOT = os.environ.get("SANDBOX_WORK_ROOT") or os.environ.get("TMPDIR") or "/tmp"
# Writable directories private to this worker (its own tmpfs), emptied after every job; the
# fallback without namespaces shares the user's /tmp and names none.
SCRATCH = [d for d in os.environ.get("SANDBOX_SCRATCH", "").split(":") if d and os.path.isdir(d)]

if __name__ == "__main__":
    main()
