"""The local backend: worker processes on this machine, no daemon needed.

As root, each worker starts inside ``unshare`` with new network (no interfaces up), mount (private
tmpfs over every world-writable directory) and PID namespaces, then drops to ``nobody`` with
``setpriv`` (no capabilities, no new privileges). Its jobs' children get resource limits, a fresh
working directory and a wall-clock kill, and the worker, PID 1 of its namespace, kills every other
process in it after each job. Without root, the worker falls back to an unprivileged user namespace
when the kernel allows one, and otherwise to limits alone (logged once as a warning).
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import subprocess
import time

from envs.sandbox import WORKER_SOURCE, Limits, Sandbox, Worker, WorkerLost

log = logging.getLogger(__name__)

NOBODY = 65534
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
SYSTEM_PYTHON = "/usr/bin/python3"


class ProcessWorker(Worker):
    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"},
                                     start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        ready = self.read_message(time.monotonic() + 30)
        if "ready" not in ready:
            raise WorkerLost(f"unexpected greeting {ready!r}")
        self.uid = ready["uid"]

    def send(self, data: bytes) -> None:
        while data:
            data = data[os.write(self._in, data):]

    def receive(self, n: int, deadline: float) -> bytes:
        chunks = []
        while n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                raise WorkerLost("no answer before the deadline")
            chunk = os.read(self._out, n)
            if not chunk:
                raise WorkerLost("the worker exited")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def _isolated_argv(python: str) -> list[str]:
    mounts = "; ".join(f"mount -t tmpfs -o size=64m,mode=1777 none {d}" for d in PRIVATE_DIRS if os.path.isdir(d))
    drop = (f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups --inh-caps=-all "
            f"--bounding-set=-all --no-new-privs")
    script = f'{mounts}; ip link set lo up 2>/dev/null; exec {drop} {python} -I -S -c "$0"'
    return ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
            "--propagation", "private", "sh", "-c", script, WORKER_SOURCE]


def worker_argv() -> list[str]:
    """How to start a worker here, from the strongest isolation this machine allows."""
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("setpriv"):
        python = SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else "python3"
        return _isolated_argv(python)
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "true"], capture_output=True)
    python = os.environ.get("SANDBOX_PYTHON", "python3")
    if probe.returncode == 0:
        return ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork",
                "--kill-child", "--mount-proc", python, "-I", "-S", "-c", WORKER_SOURCE]
    log.warning("no namespaces available to this user: sandboxed code runs with resource limits only")
    return [python, "-I", "-S", "-c", WORKER_SOURCE]


class LocalSandbox(Sandbox):
    """Sandbox on local processes (the default backend)."""

    def __init__(self, workers: int = 2, limits: Limits = Limits()):
        super().__init__(workers, limits)
        self._argv = worker_argv()

    def _start_worker(self) -> Worker:
        return ProcessWorker(self._argv)
