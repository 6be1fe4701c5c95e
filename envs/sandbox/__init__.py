"""Running untrusted, LLM-written code: verifiers and code actions.

One interface, :class:`Sandbox`, with two backends that share the worker program
(``worker.py``) and its wire protocol:

- ``local`` (default): pre-started worker processes in their own network, mount and PID namespaces,
  as an unprivileged user (see :mod:`envs.sandbox.local`);
- ``docker``: long-lived worker containers with no network and a read-only root
  (see :mod:`envs.sandbox.docker`).

Each job runs in a fresh child of a worker with resource limits and a wall-clock kill, so a hostile
snippet ends as an ``error`` or ``timeout`` result while the caller carries on.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from envs.state import State, Table

WORKER_SOURCE = (Path(__file__).parent / "worker.py").read_text()

Status = Literal["ok", "failed", "error", "timeout"]


@dataclass(frozen=True)
class Limits:
    """Per-job limits, enforced inside the sandbox."""

    wall_seconds: float = 3.0
    cpu_seconds: int = 2
    memory_mb: int = 256
    processes: int = 32
    file_mb: int = 4
    open_files: int = 64
    output_bytes: int = 16384


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


class Worker(ABC):
    """One running worker (a process or a container) speaking the framed protocol."""

    @abstractmethod
    def send(self, data: bytes) -> None: ...

    @abstractmethod
    def receive(self, n: int, deadline: float) -> bytes:
        """Exactly ``n`` bytes, or :class:`WorkerLost` on EOF or at ``deadline``."""

    @abstractmethod
    def kill(self) -> None: ...

    def read_message(self, deadline: float) -> Any:
        (size,) = struct.unpack(">I", self.receive(4, deadline))
        return json.loads(self.receive(size, deadline))


def _answer(request: dict[str, Any], state: State, tools: ToolCaller | None) -> dict[str, Any]:
    """The parent's side of a request made by sandboxed code."""
    op = request.get("op")
    if op == "tool" and tools is not None:
        return {"value": tools(request["name"], request.get("arguments", {}))}
    table = state.get(request.get("table", "")) if op in ("get", "keys") else None
    if isinstance(table, Table):
        if op == "keys":
            return {"value": list(table)}
        return {"value": table.get_readonly(request["key"])}
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
            if worker is None:
                self._started -= 1
            else:
                self._idle.append(worker)
            self._cond.notify()

    def warm_up(self) -> None:
        """Start every worker now rather than on first use."""
        workers = [self._acquire() for _ in range(self.size)]
        for worker in workers:
            self._release(worker)

    def _run(self, job: dict[str, Any], state: State, tools: ToolCaller | None, limits: Limits) -> RunResult:
        job["limits"] = asdict(limits)
        worker = self._acquire()
        # The worker enforces the wall clock itself; this outer deadline only catches a lost worker.
        deadline = time.monotonic() + limits.wall_seconds + 10.0
        try:
            worker.send(frame(job))
            while True:
                message = worker.read_message(deadline)
                if "result" in message:
                    self._release(worker)
                    return RunResult.from_wire(message["result"])
                worker.send(frame(_answer(message["request"], state, tools)))
        except (WorkerLost, OSError, ValueError) as exc:
            worker.kill()
            self._release(None)
            return RunResult("error", kind="worker_lost", message=f"the sandbox worker was lost: {exc}")

    def verify(self, source: str, state: State, answer: str, *, limits: Limits | None = None) -> RunResult:
        """Run ``verify(state, answer)`` from ``source``. Big tables are served record by record;
        the verifier may also call ``state_hash()`` for the canonical hash of the final state."""
        from envs.state import state_hash

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
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process-wide local sandbox that environments use unless given one."""
    global _default
    with _default_lock:
        if _default is None:
            _default = make_sandbox("local")
        return _default
