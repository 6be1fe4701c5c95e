"""The docker backend: long-lived worker containers on a real Docker engine.

Each pool slot is one container of the locally built image (``make sandbox-image``: a Debian root
filesystem from ``debootstrap``, imported with ``docker import``, no registry involved) running the
same worker program as the local backend, ``python3 -I -S -c WORKER_SOURCE``, as its PID 1. The
container has no network, a read-only root, a tmpfs ``/tmp`` (the only writable place, wiped after
every job), an IPC namespace of its own and no ``/dev/shm``, memory/CPU/pids limits, the user
``nobody``, no capabilities and no new privileges (and the worker's own seccomp filter on top of
docker's). The parent talks to the worker through the
container's attached stdin/stdout (docker multiplexes stdout and stderr on that socket behind
8-byte headers), so a job pays no container start.

Containers are removed when their sandbox closes (or is collected, or the process exits), and by
docker itself when their worker ends (it does when the parent's end of stdin closes). They carry the
label ``self-challenge.sandbox`` with their owner (host and process id): any whose owner has died
are removed when the next sandbox starts. By hand:
``docker rm -f $(docker ps -aq --filter label=self-challenge.sandbox)``.

A job's memory is bounded by the container too (the sandbox's ``Limits.memory_mb`` plus room for
the worker and the tmpfs), so per-call limits above the sandbox's own do not raise it.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import time
import uuid
import weakref
from typing import Any

from envs.sandbox import WORKER_SOURCE, Limits, Sandbox, Worker, WorkerLost

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "self-challenge-sandbox:latest"
IMAGE = os.environ.get("SANDBOX_IMAGE", DEFAULT_IMAGE)
LABEL = "self-challenge.sandbox"  # value: owner host/pid
POOL_LABEL = "self-challenge.sandbox.pool"  # value: one sandbox's id
NOBODY = "65534:65534"
SCRATCH_MB = 64
WORKER_MB = 64  # the worker itself, beside each job's memory limit and the tmpfs
STREAM_HEADER = struct.Struct(">BxxxL")  # stream (0 stdin, 1 stdout, 2 stderr), payload size
HOW_TO_START = ("start the engine (as root: dockerd --bridge=none --iptables=false &), "
                "or install it first (apt-get install -y docker.io)")


class DockerUnavailable(RuntimeError):
    """No engine answers, or the sandbox image is missing; the message says what to run."""


def _owner() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def connect(image: str = IMAGE) -> Any:
    """A client of a running engine that holds ``image``, or :class:`DockerUnavailable`."""
    try:
        import docker
    except ImportError as exc:
        raise DockerUnavailable("the docker backend needs the docker SDK: pip install '.[docker]'") from exc
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # the SDK raises several types for "no engine here"
        raise DockerUnavailable(f"no Docker engine answers ({exc}); {HOW_TO_START}") from exc
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        build = "make sandbox-image" if image == DEFAULT_IMAGE else f"SANDBOX_IMAGE={image} make sandbox-image"
        raise DockerUnavailable(f"the sandbox image {image} is missing; build it with: {build}") from exc
    return client


def remove_pool(client: Any, pool: str) -> None:
    """Remove every container of one sandbox (at exit, or when it is collected unclosed)."""
    for container in client.containers.list(all=True, filters={"label": f"{POOL_LABEL}={pool}"}):
        try:
            container.remove(force=True)
        except Exception as exc:  # auto-removed meanwhile, or the engine is gone
            log.debug("removing sandbox container %s: %s", container.short_id, exc)


def remove_stale(client: Any) -> int:
    """Remove sandbox containers whose owning process (on this host) is gone; returns how many."""
    host = socket.gethostname()
    removed = 0
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        owner_host, _, pid = container.labels.get(LABEL, "").rpartition("/")
        if owner_host == host and pid.isdigit() and os.path.exists(f"/proc/{pid}"):
            continue
        if owner_host not in (host, ""):
            continue  # another machine's engine client: not ours to judge
        try:
            container.remove(force=True)
            removed += 1
        except Exception as exc:  # auto-removed meanwhile
            log.debug("removing stale sandbox container %s: %s", container.short_id, exc)
    if removed:
        log.info("removed %d stale sandbox containers", removed)
    return removed


class ContainerWorker(Worker):
    """A worker container, spoken to over its attached stdin/stdout."""

    def __init__(self, client: Any, image: str, limits: Limits, pool: str):
        super().__init__()
        self.container = client.containers.create(
            image, ["python3", "-I", "-S", "-c", WORKER_SOURCE],
            # Not detached, docker-py sets StdinOnce: the worker's stdin closes, and it ends, when
            # this attach connection does (this process exits or dies).
            stdin_open=True, tty=False, detach=False,
            user=NOBODY, working_dir="/tmp",
            environment={"SANDBOX_WORK_ROOT": "/tmp", "SANDBOX_SCRATCH": "/tmp:/dev/mqueue"},
            network_mode="none", ipc_mode="none", read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={SCRATCH_MB}m,mode=1777"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            mem_limit=f"{limits.memory_mb + SCRATCH_MB + WORKER_MB}m",
            memswap_limit=f"{limits.memory_mb + SCRATCH_MB + WORKER_MB}m",
            nano_cpus=1_000_000_000, pids_limit=limits.processes + 8,
            log_config={"type": "none"},  # the protocol's bytes are no log
            labels={LABEL: _owner(), POOL_LABEL: pool},
            auto_remove=True,
        )
        self._stderr = bytearray()
        try:
            # Attached before the start, so the greeting cannot be missed.
            self._io = client.api.attach_socket(self.container.id,
                                                params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self._sock: socket.socket = getattr(self._io, "_sock", self._io)
            self._sock.setblocking(False)
            self._raw = bytearray()
            self.container.start()
            self.container.reload()
            self.host_pid = int(self.container.attrs["State"]["Pid"])
            self.greet(time.monotonic() + 60)
        except BaseException as exc:
            said = self._stderr.decode(errors="replace").strip() or "nothing"
            self.kill()
            if isinstance(exc, Exception):
                raise WorkerLost(f"the sandbox container did not start ({exc}); its stderr said: {said}") from exc
            raise

    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self._sock], [], left)[1]:
                raise WorkerLost("the worker stopped reading")
            try:
                view = view[self._sock.send(view):]
            except BlockingIOError:
                continue

    def _recv(self, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self._sock], [], [], left)[0]:
            raise WorkerLost("no answer before the deadline")
        try:
            chunk = self._sock.recv(65536)
        except BlockingIOError:
            return b""
        if not chunk:
            raise WorkerLost("the container's stream ended")
        return chunk

    def _read_some(self, deadline: float) -> bytes:
        """The next stdout payload, taken out of docker's multiplexed stream."""
        raw = self._raw
        while True:
            if len(raw) >= STREAM_HEADER.size:
                stream, size = STREAM_HEADER.unpack_from(raw)
                end = STREAM_HEADER.size + size
                if len(raw) >= end:
                    payload = bytes(raw[STREAM_HEADER.size:end])
                    del raw[:end]
                    if stream == 1:
                        return payload
                    self._stderr += payload[:4000 - len(self._stderr)]  # start-up errors
                    continue
            raw += self._recv(deadline)

    def kill(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception as exc:  # already gone, or the engine is: nothing left to free here
            log.debug("removing sandbox container %s: %s", self.container.short_id, exc)
        io = getattr(self, "_io", None)
        if io is not None:
            self._sock.close()
            io.close()


class DockerSandbox(Sandbox):
    """Sandbox on long-lived Docker containers (``make_sandbox("docker")``)."""

    def __init__(self, workers: int = 2, limits: Limits = Limits(), image: str = IMAGE):
        super().__init__(workers, limits)
        self.image = image
        self._client = connect(image)
        self._pool = uuid.uuid4().hex
        remove_stale(self._client)
        # Containers must not outlive the sandbox, even one that is never closed.
        self._finalizer = weakref.finalize(self, remove_pool, self._client, self._pool)

    def _start_worker(self) -> Worker:
        worker = ContainerWorker(self._client, self.image, self.limits, self._pool)
        log.debug("sandbox container %s started", worker.container.short_id)
        return worker

    def close(self) -> None:
        super().close()
        self._finalizer()
