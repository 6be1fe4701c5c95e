"""Running untrusted, LLM-written code: verifiers and code actions.

One interface, :class:`Sandbox`, with two backends that share the worker program
(``worker.py``) and its wire protocol:

- ``local`` (default): pre-started worker processes in their own network, IPC, mount and PID
  namespaces, on a private root that shows only the system's programs and libraries, as an
  unprivileged user (see :mod:`envs.sandbox.local`);
- ``docker``: long-lived worker containers with no network and a read-only root
  (see :mod:`envs.sandbox.docker`).

Each job runs in a world of its own inside a worker (its own user, mount, PID and IPC namespaces,
an empty size-capped ``/tmp``) with resource limits, a seccomp filter and a wall-clock kill, and
nothing it starts or writes outlives it, so a hostile snippet ends as an ``error`` or ``timeout``
result while the caller, and the next job, carry on (``tests/test_sandbox_attacks.py`` holds the
attacks both backends are held to). :meth:`Sandbox.describe` says what applies on this machine.
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
WORKER_FLAGS = ["-s", "-S"]
"""How a worker's ``python`` starts it (``-c WORKER_SOURCE``): no site and no user site. Not ``-I``,
whose ``-E`` would ignore :data:`WORKER_ENV`'s hash seed; the environment a worker gets is ours
alone, and the worker takes the working directory off ``sys.path`` first thing, as ``-I`` does."""
WORKER_ENV = {"PYTHONHASHSEED": "0"}
"""One hash seed in every worker: a set of strings iterates in one order in every job, so what a
verifier or a code action makes of one cannot depend on which worker ran it (the filter's second
run of a verifier may land on the same worker, a replayed code cell on another)."""
VERIFIER_HELPERS = (Path(__file__).parent / "verifier_helpers.py").read_text()
"""The source every verifier's namespace runs first (:mod:`envs.sandbox.verifier_helpers`)."""

Status = Literal["ok", "failed", "error", "timeout"]


@dataclass(frozen=True)
class Limits:
    """Per-job limits, enforced inside the sandbox.

    ``memory_mb`` and ``processes`` hold for the job as a whole where a control group backs them
    (the docker backend's container; the local backend's cgroup where the machine has one), and per
    process otherwise; ``tmp_mb`` and the control group are fixed when a worker starts, so per-call
    limits do not change them. :meth:`Sandbox.describe` says which applies.
    """

    wall_seconds: float = 3.0
    cpu_seconds: int = 2  # per process; then SIGXCPU, and SIGKILL a second later
    memory_mb: int = 256  # each process's address space; and the job's memory, its /tmp files included
    processes: int = 32  # processes and threads of the job (RLIMIT_NPROC, counted in its own user namespace,
    # or, where it has none, above those its user runs as it starts)
    file_mb: int = 4  # largest file a job may write
    open_files: int = 64
    output_bytes: int = 16384  # printed output kept; the rest is cut with "[output truncated]"
    tmp_mb: int = 64  # size of each job's own empty /tmp


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
        try:
            return json.loads(body)
        except RecursionError:  # the worker bounds a request's nesting: this one is not its own
            raise ValueError("a message from the worker nests too deeply") from None

    def greet(self, deadline: float) -> None:
        """Send the worker the verifier helpers, wait for its first message (what isolates its jobs,
        kept as :attr:`greeting`), and warn once about a weaker sandbox than expected."""
        self.send(frame({"helpers": VERIFIER_HELPERS}), deadline)
        ready = self.read_message(deadline)
        if "ready" not in ready:
            raise WorkerLost(f"unexpected greeting {ready!r}")
        self.greeting: dict[str, Any] = ready
        for check, warning in WEAKNESSES:
            if not check(ready):
                _warn_once(warning)


WEAKNESSES: tuple[tuple[Callable[[dict[str, Any]], bool], str], ...] = (
    (lambda g: g.get("undumpable"), "the sandbox worker could not make itself non-dumpable: a job may tamper with it"),
    (lambda g: g.get("seccomp"), "sandbox jobs run without a seccomp filter (no ctypes, or an unknown architecture)"),
    (lambda g: g.get("namespaces"), "user namespaces are refused here (or grant no right to mount): sandbox jobs "
                                    "share their worker's /tmp, and their process count with every job of the same "
                                    "user"),
    (lambda g: g.get("cgroup") != "refused", "the sandbox worker could not join its control group: memory and "
                                             "process limits hold per process only"),
)


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


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
        self._greeting: dict[str, Any] | None = None  # the first worker's: what isolates jobs here
        self._last = threading.local()  # the worker of each thread's last job, for ``verify(elsewhere=True)``

    @abstractmethod
    def _start_worker(self) -> Worker: ...

    def _acquire(self, fresh: bool = False, avoid: Worker | None = None) -> Worker:
        """An idle worker, or a new one while the pool has room; ``fresh``: a new one in any case
        (an idle worker retires if it must make room); ``avoid``: any worker but that one, when the
        pool holds more than one (waiting for another to come free if it must)."""
        retired = None
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the sandbox is closed")
                usable = [w for w in self._idle if w is not avoid or self.size == 1]
                if usable and not fresh:
                    self._idle.remove(usable[0])
                    return usable[0]
                if self._started < self.size:
                    self._started += 1
                    break
                if self._idle and fresh:
                    retired = self._idle.popleft()  # its slot passes to the fresh worker
                    break
                self._cond.wait()
        if retired is not None:
            retired.kill()
        try:
            worker = self._start_worker()
        except BaseException:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise
        if self._greeting is None:
            self._greeting = worker.greeting
        return worker

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

    def _run(self, job: dict[str, Any], state: State, tools: ToolCaller | None, limits: Limits,
             elsewhere: bool = False) -> RunResult:
        """Run ``job`` (``elsewhere``: not on the worker that ran this thread's last job); if its worker
        is lost (something the job cannot cause: it cannot reach the worker), once more on a fresh
        worker, unless tools it called have already changed the caller's state. A job lost twice is an
        ``error`` of kind ``worker_lost`` saying so."""
        job["limits"] = _wire_limits(limits)
        data = frame(job)
        for attempt in range(2):
            avoid = getattr(self._last, "worker", None) if elsewhere else None
            worker = self._acquire(fresh=attempt > 0, avoid=avoid)
            # The worker enforces the wall clock itself; this outer deadline only catches a lost worker.
            deadline = time.monotonic() + limits.wall_seconds + 10.0
            called_tools = False
            try:
                worker.send(data, deadline)
                while True:
                    message = worker.read_message(deadline)
                    if "result" in message:
                        self._last.worker = worker
                        self._release(worker)
                        return RunResult.from_wire(message["result"])
                    request = message["request"]
                    called_tools |= isinstance(request, dict) and request.get("op") == "tool"
                    worker.send(frame(_answer(request, state, tools)), deadline)
            except (WorkerLost, OSError, ValueError) as exc:
                worker.kill()
                self._release(None)
                lost = f"the sandbox worker was lost: {exc}"
            except BaseException:  # the caller's own interrupt or bug: the worker, mid-job, cannot serve again
                worker.kill()
                self._release(None)
                raise
            if called_tools:
                log.error("%s, after the job had called tools: not run again", lost)
                return RunResult("error", kind="worker_lost", message=f"{lost} (after the code had called tools, "
                                                                      "so it was not run again)")
            log.warning("%s; %s", lost, "running the job again on a fresh worker" if attempt == 0 else "twice")
        return RunResult("error", kind="worker_lost", message=f"{lost} (twice: the job ran on a fresh worker too)")

    def verify(self, source: str, state: State, answer: str, *, limits: Limits | None = None,
               elsewhere: bool = False) -> RunResult:
        """Run ``verify(state, answer)`` from ``source``. Big tables are served record by record;
        the verifier may also call ``state_hash()`` for the canonical hash of the final state, and
        the readers of :mod:`envs.sandbox.verifier_helpers` (``final_number``, ``near``, …).
        ``elsewhere``: on another worker than this thread's last job's (a second judgement: a verifier
        that reads something of its worker, such as an object's address, then disagrees with itself)."""
        plain = {k: v for k, v in state.items() if not isinstance(v, Table)}
        job = {"kind": "verify", "source": source, "answer": answer, "state": plain,
               "tables": [k for k, v in state.items() if isinstance(v, Table)],
               "helpers": {"state_hash": state_hash(state)}}
        return self._run(job, state, None, limits or self.limits, elsewhere)

    def run_code(self, source: str, tools: ToolCaller, tool_params: dict[str, list[str]],
                 *, limits: Limits | None = None) -> RunResult:
        """Run a code action: each tool is a function in its namespace whose calls come back to
        ``tools(name, arguments)`` in the caller; what the code prints is the result's output."""
        job = {"kind": "code", "source": source, "tools": tool_params}
        return self._run(job, {}, tools, limits or self.limits)

    def describe(self) -> dict[str, str]:
        """What isolates a job here and how each limit holds, as this machine allows (a worker is
        started if none has been): for logs, run reports and the tests. Keys: ``backend``, ``job``,
        ``memory``, ``processes``, ``time``, ``files``."""
        if self._greeting is None:
            self._release(self._acquire())
        greeting = self._greeting
        assert greeting is not None
        limits = self.limits
        if greeting.get("namespaces"):
            proc = PROC_VIEWS.get(greeting.get("proc"), "the worker's /proc")
            job = (f"its own user, mount, PID and IPC namespaces: an empty {greeting.get('tmp_mb')} MB /tmp, "
                   f"{proc}, no capabilities")
        else:
            job = ("a child of the worker, sharing its /tmp (user namespaces are refused here, or grant no right "
                   "to mount)")
        job += ", a seccomp filter" if greeting.get("seccomp") else ", no seccomp filter"
        if greeting.get("landlock"):
            job += (f", Landlock (ABI {greeting['landlock']}): of the host's files, system programs and libraries "
                    "to read, nothing to write")
        return {
            "backend": self._describe_backend(),
            "job": job,
            "memory": self._describe_memory(greeting),
            "processes": self._describe_processes(greeting),
            "time": f"{limits.wall_seconds:g} s of wall-clock time for the job, {limits.cpu_seconds} CPU-seconds "
                    "per process",
            "files": f"files up to {limits.file_mb} MB, {limits.open_files} open files per process, "
                     f"{limits.output_bytes} bytes of output kept",
        }

    @abstractmethod
    def _describe_backend(self) -> str: ...

    @abstractmethod
    def _describe_memory(self, greeting: Mapping[str, Any]) -> str: ...

    @abstractmethod
    def _describe_processes(self, greeting: Mapping[str, Any]) -> str: ...

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


PROC_VIEWS = {"own": "a /proc of its own", "hidden": "no /proc (the container forbids a new one)"}
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


_defaults: dict[str, Sandbox] = {}
_defaults_pid = 0
_default_lock = threading.Lock()


def default_sandbox(backend: str = "local") -> Sandbox:
    """The process-wide sandbox of ``backend`` that environments use unless given one.

    Per process: a forked child (an ``AsyncVectorEnv`` worker, say) must not talk to its parent's
    workers over inherited pipes, where the two would read each other's results, so it starts its own.
    """
    global _defaults_pid
    with _default_lock:
        if _defaults_pid != os.getpid():
            _defaults.clear()
            _defaults_pid = os.getpid()
        if backend not in _defaults:
            _defaults[backend] = make_sandbox(backend)
        return _defaults[backend]


def resolve_sandbox(choice: "Sandbox | str | None") -> Sandbox:
    """The sandbox an environment's ``sandbox=`` argument names: a :class:`Sandbox` itself, or the
    process-wide sandbox of a backend named ``"local"`` (also ``None``) or ``"docker"``. Anything
    else is a ValueError; a docker engine that is not there, a :class:`~envs.sandbox.docker.DockerUnavailable`."""
    if isinstance(choice, Sandbox):
        return choice
    if choice is None or (isinstance(choice, str) and choice in BACKENDS):
        return default_sandbox(choice or "local")
    raise ValueError(f"sandbox must be {' or '.join(map(repr, BACKENDS))} or a Sandbox instance, got {choice!r}")
