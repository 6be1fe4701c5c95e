"""The sandbox worker: a long-lived process that runs each untrusted job in a fresh, limited child.

This file runs *inside* the sandbox (as an unprivileged user, in its own network, mount and PID
namespaces, or in a Docker container), under whatever ``python3`` is there, so it uses the standard
library alone and imports nothing from the project. The parent sends it the source with ``-c``.

Protocol, on the worker's stdin/stdout: each message is a 4-byte big-endian length and a JSON body.
The parent sends a job; while the job runs the worker may send requests (``{"request": …}``: a tool
call, or a record of a big state table) and waits for each reply; it ends with ``{"result": …}``.
The child talks only to the worker, over a SOCK_SEQPACKET pair, so a child killed mid-message can
never desynchronise the parent's stream.
"""

import builtins
import gc
import json
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback

MAX_MESSAGE = 65536  # one child-to-worker message (a request or a result) on the SEQPACKET pair
BLOCKED_MODULES = frozenset({
    "ctypes", "_ctypes", "cffi", "subprocess", "_posixsubprocess", "multiprocessing",
    "_multiprocessing", "pty", "socket", "_socket", "ssl", "_ssl", "mmap", "resource",
})
BLOCKED_OS_FUNCTIONS = (
    "system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execl", "execle",
    "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle",
    "posix_spawn", "posix_spawnp", "setuid", "setgid", "setsid", "setpgid", "chroot", "putenv",
)


WARM_UP = "def verify(state, answer):\n    return state.get('x') == [1, 2] and 'a' in answer\n"


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


def read_message(fd):
    head = read_exact(fd, 4)
    if head is None:
        return None
    body = read_exact(fd, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


def write_message(fd, message):
    body = json.dumps(message).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(fd, data):]


# ---------------------------------------------------------------- inside the child

def _blocked(name):
    def refuse(*args, **kwargs):
        raise PermissionError(f"os.{name} is not allowed in the sandbox")
    return refuse


def _narrow():
    """Take the dangerous parts of the standard library out of reach (before the job arrives:
    it is the same for every job, and doing it early keeps it off the job's critical path)."""
    gc.disable()  # no collector passes dirtying pages the child shares with the worker
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails with an error instead
    os.environ.clear()
    for name in BLOCKED_OS_FUNCTIONS:
        if hasattr(os, name):
            setattr(os, name, _blocked(name))
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name.split(".")[0] in BLOCKED_MODULES:
            raise ImportError(f"module {name!r} is blocked in the sandbox")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import


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
    for name in BLOCKED_MODULES:
        sys.modules.pop(name, None)


class Remote:
    """The child's end of its link to the worker: a request out, a reply back."""

    def __init__(self, sock, replies):
        self.sock, self.replies = sock, replies

    def ask(self, request):
        message = json.dumps({"request": request}).encode()
        if len(message) > MAX_MESSAGE:
            raise ValueError("request too large for the sandbox")
        self.sock.send(message)
        reply = read_message(self.replies)
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
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<sandbox>"]
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


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
        try:
            exec(code, namespace)
            verify = namespace.get("verify")
            if not callable(verify):
                return {"status": "error", "kind": "syntax", "message": "the source defines no function verify(state, answer)"}
            state = dict(job["state"])
            for name in job.get("tables", []):
                state[name] = RemoteTable(remote, name)
            value = verify(state, job["answer"])
        except MemoryError:
            return {"status": "error", "kind": "memory", "message": "MemoryError: the memory limit was reached"}
        except BaseException as exc:  # the verifier's own failure is a result, not a crash
            return {"status": "error", "kind": "exception", "message": _describe(exc)}
        if type(value).__name__ not in ("bool", "bool_"):
            return {"status": "error", "kind": "non_bool",
                    "message": f"verify() returned {type(value).__name__} {str(value)[:80]!r}; it must return True or False"}
        return {"status": "ok" if value else "failed", "value": bool(value)}
    for name, params in job.get("tools", {}).items():
        namespace[name] = _tool_function(remote, name, params)
    try:
        exec(code, namespace)
    except MemoryError:
        return {"status": "error", "kind": "memory", "message": "MemoryError: the memory limit was reached"}
    except BaseException as exc:
        return {"status": "error", "kind": "exception", "message": _describe(exc)}
    return {"status": "ok"}


def child_main(job_fd, sock, workdir):
    """A pre-forked child: set up its output and directory, then wait for the job."""
    fd = os.open(os.path.join(workdir, ".output"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = sys.stdout
    os.chdir(workdir)
    _narrow()
    # Touch the compiler's memory now, while waiting: after a fork its first use pays page faults.
    exec(compile(WARM_UP, "<warm-up>", "exec"), {})
    job = read_message(job_fd)
    if job is None:
        return
    remote = Remote(sock, job_fd)
    try:
        result = run_child(job, remote)
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


def _read_output(workdir, cap):
    try:
        with open(os.path.join(workdir, ".output"), "rb") as f:
            data = f.read(cap + 1)
    except OSError:
        return ""
    text = data[:cap].decode("utf-8", "replace")
    return text + "\n[output truncated]" if len(data) > cap else text


def _clean_up(pid):
    """Kill the child and anything it started, then reap them."""
    if os.getpid() == 1:  # init of our own PID namespace: every other process here is the job's
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    while True:
        try:
            if os.waitpid(-1, 0)[0] == 0:
                break
        except ChildProcessError:
            break


def _write_all(fd, data, deadline):
    """Write to a child that may have stopped reading: give up at the deadline."""
    while data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([], [fd], [], left)[1]:
            return False
        data = data[os.write(fd, data[:65536]):]
    return True


class Child:
    """A child forked ahead of its job, so that the fork overlaps the parent's own work."""

    def __init__(self, inp, out):
        self.workdir = tempfile.mkdtemp(prefix="job-", dir=WORK_ROOT)
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        job_r, self.job_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.setsid()
                self.sock.close()
                for fd in (inp, out, self.job_w):
                    os.close(fd)
                child_main(job_r, theirs, self.workdir)
            finally:
                os._exit(0)
        theirs.close()
        os.close(job_r)
        os.set_blocking(self.job_w, False)

    def run(self, job, inp, out):
        limits = job["limits"]
        start = time.monotonic()
        deadline = start + limits["wall_seconds"]
        timeout = {"status": "timeout", "kind": "timeout",
                   "message": f"timed out after {limits['wall_seconds']:g} s of wall-clock time"}
        body = json.dumps(job).encode()
        if not _write_all(self.job_w, struct.pack(">I", len(body)) + body, deadline):
            return self._finish(timeout, start, limits)
        result = None
        while result is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                result = timeout
                break
            data = self.sock.recv(MAX_MESSAGE)
            if not data:
                break
            message = json.loads(data)
            if "done" in message:
                result = message["done"]
                break
            write_message(out, message)
            reply = read_message(inp)
            if reply is None:
                sys.exit(0)
            body = json.dumps(reply).encode()
            if not _write_all(self.job_w, struct.pack(">I", len(body)) + body, deadline):
                result = timeout
        if result is None:  # the child died without a word: find out how
            _, status = os.waitpid(self.pid, 0)
            self.pid = None
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                kind, why = SIGNAL_REASONS.get(sig, ("killed", f"killed by signal {sig}"))
                result = {"status": "error", "kind": kind, "message": why}
            else:
                result = {"status": "error", "kind": "exited",
                          "message": f"the code exited with status {os.WEXITSTATUS(status)}"}
        return self._finish(result, start, limits)

    def _finish(self, result, start, limits):
        result["seconds"] = time.monotonic() - start
        result["output"] = _read_output(self.workdir, limits["output_bytes"])
        return result

    def close(self):
        if self.pid is not None:
            _clean_up(self.pid)
            self.pid = None
        self.sock.close()
        os.close(self.job_w)


def main():
    inp, out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.environ.clear()
    gc.freeze()  # objects alive now are never scanned again, so forked children share their pages
    child = Child(inp, out)
    write_message(out, {"ready": os.getpid(), "uid": os.getuid()})
    while True:
        job = read_message(inp)
        if job is None:
            child.close()
            shutil.rmtree(child.workdir, ignore_errors=True)
            return
        result = child.run(job, inp, out)
        write_message(out, {"result": result})
        child.close()  # after answering: the child's teardown overlaps the parent's own work
        shutil.rmtree(child.workdir, ignore_errors=True)
        child = Child(inp, out)


WORK_ROOT = os.environ.get("SANDBOX_WORK_ROOT") or tempfile.gettempdir()

if __name__ == "__main__":
    main()
