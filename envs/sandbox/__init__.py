"""Running untrusted, LLM-written code: verifiers and code actions.

One interface, :class:`Sandbox`, with two backends that share the worker program
(``worker.py``) and its wire protocol:

- ``local`` (default): pre-started worker processes in their own network, IPC, mount and PID
  namespaces, on a private root that shows only the system's programs and libraries, as an
  unprivileged user (see :mod:`envs.sandbox.local`);
- ``docker``: long-lived worker containers with no network and a read-only root
  (see :mod:`envs.sandbox.docker`).

Each job runs in a fresh child of a worker with resource limits, a seccomp filter and a wall-clock
kill, and nothing it starts or writes outlives it, so a hostile snippet ends as an ``error`` or
``timeout`` result while the caller carries on (``tests/test_sandbox_attacks.py`` holds the attacks
both backends are held to).
"""

from __future__ import annotations

import functools
import json
import os
import logging
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from envs.state import State, Table, state_hash

log = logging.getLogger(__name__)

WORKER_SOURCE = (Path(__file__).parent / "worker.py").read_text()

Status = Literal["ok", "failed", "error", "timeout"]


@dataclass(frozen=True)
class Limits:
    """Per-job limits, enforced inside the sandbox."""

    wall_seconds: float = 3.0
    cpu_seconds: int = 2  # then SIGXCPU, and SIGKILL a second later
    memory_mb: int = 256  # address space
    processes: int = 32  # RLIMIT_NPROC: the kernel counts every process and thread of the sandbox
    #                      user on the machine (all workers, both backends), not the job's alone
    file_mb: int = 4  # largest file a job may write
    open_files: int = 64
    output_bytes: int = 16384  # printed output kept; the rest is cut with "[output truncated]"


@dataclass(frozen=True)
class RunResult:
    """What a job came to.

    ``status`` is ``ok``/``failed`` (a verifier's True/False; ``ok`` for code that ran to the end),
    ``error`` (an exception, a broken limit, a verifier that returned a non-bool) or ``timeout``.
    ``kind`` narrows an error down (``syntax``, ``exception``, ``non_bool``, ``memory``, ``cpu``, …).
    """

    status: Status
    message: str = ""
    kind: str = ""
    output: str = ""
    seconds: float = 0.0

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "RunResult":
        return cls(status=data["status"], message=data.get("message", ""), kind=data.get("kind", ""),
                   output=data.get("output", ""), seconds=float(data.get("seconds", 0.0)))


ToolCaller = Callable[[str, dict[str, Any]], str]


class WorkerLost(RuntimeError):
    """The worker stopped answering; the backend replaces it."""


def frame(message: Any) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body


@functools.lru_cache(maxsize=16)
def _wire_limits(limits: Limits) -> dict[str, Any]:
    """``limits`` as the worker reads them; cached, since every job sends them."""
    return asdict(limits)


class Worker(ABC):
    """One running worker (a process or a container) speaking the framed protocol.

    ``host_pid`` is the host's id of the worker process (PID 1 of its own PID namespace, where it
    has one): every process of a job descends from it, so monitoring, and the tests that prove
    nothing outlives a job, look there.
    """

    host_pid: int

    def __init__(self) -> None:
        self._buffer = bytearray()  # bytes read past the last message: one read often holds a whole frame

    @abstractmethod
    def send(self, data: bytes, deadline: float) -> None:
        """Write all of ``data``, or :class:`WorkerLost` when the worker stops reading until ``deadline``."""

    @abstractmethod
    def _read_some(self, deadline: float) -> bytes:
        """The worker's next output bytes (at least one), or :class:`WorkerLost` on EOF or at ``deadline``."""

    @abstractmethod
    def kill(self) -> None: ...

    def read_message(self, deadline: float) -> Any:
        buffer = self._buffer
        while len(buffer) < 4:
            buffer += self._read_some(deadline)
        end = 4 + struct.unpack_from(">I", buffer)[0]
        while len(buffer) < end:
            buffer += self._read_some(deadline)
        body = bytes(buffer[4:end])
        del buffer[:end]
        return json.loads(body)

    def greet(self, deadline: float) -> None:
        """Wait for the worker's first message, and warn about a weaker sandbox than expected."""
        ready = self.read_message(deadline)
        if "ready" not in ready:
            raise WorkerLost(f"unexpected greeting {ready!r}")
        if not ready.get("undumpable"):
            log.warning("the sandbox worker could not make itself non-dumpable: a job may tamper with it")
        if not ready.get("seccomp"):
            log.warning("the sandbox worker runs without its seccomp filter (no ctypes, or an unknown architecture)")


def _answer(request: Any, state: State, tools: ToolCaller | None) -> dict[str, Any]:
    """The parent's side of a request made by sandboxed code. The request is the code's own (it
    may forge any), so a malformed one, or a tool that raises, gets an error reply, never an
    exception in the caller."""
    if not isinstance(request, dict):
        return {"error": "malformed request"}
    op = request.get("op")
    try:
        if op == "tool" and tools is not None:
            name, arguments = request.get("name"), request.get("arguments", {})
            if not isinstance(name, str) or not isinstance(arguments, dict):
                return {"error": "malformed tool call"}
            return {"value": tools(name, arguments)}
        name = request.get("table")
        table = state.get(name) if op in ("get", "keys") and isinstance(name, str) else None
        if isinstance(table, Table):
            if op == "keys":
                return {"value": list(table)}
            key = request.get("key")
            return {"value": table.get_readonly(key) if isinstance(key, str) else None}
    except Exception as exc:  # a tool's own bug must not end the caller's run
        log.exception("serving the sandbox request %r failed", op)
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"error": f"the sandbox cannot serve the request {op!r}"}


class Sandbox(ABC):
    """A pool of workers; thread-safe, each job holds one worker for its duration."""

    def __init__(self, workers: int = 2, limits: Limits = Limits()):
        self.limits = limits
        self.size = workers
        self._idle: deque[Worker] = deque()  # FIFO: a worker recycles its child while others serve
        self._started = 0
        self._cond = threading.Condition()
        self._closed = False

    @abstractmethod
    def _start_worker(self) -> Worker: ...

    def _acquire(self) -> Worker:
        with self._cond:
            if self._closed:
                raise RuntimeError("the sandbox is closed")
            while not self._idle and self._started >= self.size:
                self._cond.wait()
            if self._idle:
                return self._idle.popleft()
            self._started += 1
        try:
            return self._start_worker()
        except BaseException:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise

    def _release(self, worker: Worker | None) -> None:
        with self._cond:
            closed = self._closed
            if worker is None or closed:
                self._started -= 1
            else:
                self._idle.append(worker)
            self._cond.notify()
        if closed and worker is not None:  # a job that outlasted close(): its worker goes too
            worker.kill()

    def warm_up(self) -> None:
        """Start every worker now (side by side) rather than on first use."""
        with ThreadPoolExecutor(self.size) as pool:
            workers = list(pool.map(lambda _: self._acquire(), range(self.size)))
        for worker in workers:
            self._release(worker)

    def host_pids(self) -> list[int]:
        """Host process ids of the idle workers (see :attr:`Worker.host_pid`)."""
        with self._cond:
            return [worker.host_pid for worker in self._idle]

    def _run(self, job: dict[str, Any], state: State, tools: ToolCaller | None, limits: Limits) -> RunResult:
        job["limits"] = _wire_limits(limits)
        data = frame(job)
        for _ in range(2):
            worker = self._acquire()
            # The worker enforces the wall clock itself; this outer deadline only catches a lost worker.
            deadline = time.monotonic() + limits.wall_seconds + 10.0
            try:
                worker.send(data, deadline)
            except (WorkerLost, OSError) as exc:  # it died while idle: the job never reached it
                worker.kill()
                self._release(None)
                log.warning("a sandbox worker was found dead (%s); starting another", exc)
                continue
            try:
                while True:
                    message = worker.read_message(deadline)
                    if "result" in message:
                        self._release(worker)
                        return RunResult.from_wire(message["result"])
                    worker.send(frame(_answer(message["request"], state, tools)), deadline)
            except (WorkerLost, OSError, ValueError) as exc:
                worker.kill()
                self._release(None)
                return RunResult("error", kind="worker_lost", message=f"the sandbox worker was lost: {exc}")
        return RunResult("error", kind="worker_lost", message="no sandbox worker would take the job")

    def verify(self, source: str, state: State, answer: str, *, limits: Limits | None = None) -> RunResult:
        """Run ``verify(state, answer)`` from ``source``. Big tables are served record by record;
        the verifier may also call ``state_hash()`` for the canonical hash of the final state."""
        plain = {k: v for k, v in state.items() if not isinstance(v, Table)}
        job = {"kind": "verify", "source": source, "answer": answer, "state": plain,
               "tables": [k for k, v in state.items() if isinstance(v, Table)],
               "helpers": {"state_hash": state_hash(state)}}
        return self._run(job, state, None, limits or self.limits)

    def run_code(self, source: str, tools: ToolCaller, tool_params: dict[str, list[str]],
                 *, limits: Limits | None = None) -> RunResult:
        """Run a code action: each tool is a function in its namespace whose calls come back to
        ``tools(name, arguments)`` in the caller; what the code prints is the result's output."""
        job = {"kind": "code", "source": source, "tools": tool_params}
        return self._run(job, {}, tools, limits or self.limits)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers, self._idle = list(self._idle), deque()
        for worker in workers:
            worker.kill()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS = ("local", "docker")


def make_sandbox(backend: str = "local", **kwargs: Any) -> Sandbox:
    """The sandbox for ``backend`` (``local`` or ``docker``)."""
    if backend == "local":
        from envs.sandbox.local import LocalSandbox
        return LocalSandbox(**kwargs)
    if backend == "docker":
        from envs.sandbox.docker import DockerSandbox
        return DockerSandbox(**kwargs)
    raise ValueError(f"unknown sandbox backend {backend!r}; choose one of {', '.join(BACKENDS)}")


_default: Sandbox | None = None
_default_pid = 0
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process-wide local sandbox that environments use unless given one.

    Per process: a forked child (an ``AsyncVectorEnv`` worker, say) must not talk to its parent's
    workers over inherited pipes, where the two would read each other's results, so it starts its own.
    """
    global _default, _default_pid
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            _default, _default_pid = make_sandbox("local"), os.getpid()
        return _default
