"""The docker backend: long-lived worker containers on a real Docker engine.

Each pool slot is one container of the locally built image (``make sandbox-image``: a Debian root
filesystem from ``debootstrap``, imported with ``docker import``, no registry involved) running the
same worker program as the local backend, ``python3 -s -S -c WORKER_SOURCE``, as its PID 1. The
container has no network, a read-only root, an IPC namespace of its own, no ``/dev/shm`` and an
empty read-only ``/dev/mqueue``, memory/CPU/pids limits, the user ``nobody``, no capabilities and no
new privileges. Inside it, each job gets a world of its own from the worker (user, mount, PID and IPC
namespaces, a fresh ``/tmp``; see :mod:`envs.sandbox.worker`). Docker's default seccomp profile
refuses the clone into new namespaces and the ``mount`` calls that takes, so the container runs
under a profile of its own instead (:func:`seccomp_profile`): what the worker refuses its jobs stays
refused for the whole container, but for those, and each job still gets the worker's filters. The
parent talks to the worker through the container's attached stdin/stdout (docker multiplexes stdout
and stderr on that socket behind 8-byte headers), so a job pays no container start.

Containers are removed when their sandbox closes (or is collected, or the process exits), and by
docker itself when their worker ends (it does when the parent's end of stdin closes). They carry the
label ``self-challenge.sandbox`` with their owner (host and process id): any whose owner has died
are removed when the next sandbox starts. By hand:
``docker rm -f $(docker ps -aq --filter label=self-challenge.sandbox)``.

A job's memory and processes are bounded as a whole by the container's cgroup (the sandbox's
``Limits.memory_mb`` plus room for the worker; ``Limits.processes`` plus a few), so per-call limits
above the sandbox's own do not raise them; out of memory, the kernel ends the job's processes
first.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import struct
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

from envs.sandbox import WORKER_ENV, WORKER_FLAGS, WORKER_SOURCE, Limits, Sandbox, Worker, WorkerLost
from envs.sandbox.worker import REFUSED_SYSCALLS, WORLD_SYSCALLS

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "self-challenge-sandbox:latest"
IMAGE = os.environ.get("SANDBOX_IMAGE", DEFAULT_IMAGE)
LABEL = "self-challenge.sandbox"  # value: owner host/pid
POOL_LABEL = "self-challenge.sandbox.pool"  # value: one sandbox's id
NOBODY = "65534:65534"
SCRATCH_MB = 64  # the container's own /tmp, which jobs only see where user namespaces are refused
WORKER_MB = 64  # the worker itself, beside each job's memory limit
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


def seccomp_profile() -> str:
    """The containers' seccomp profile (JSON, as the engine takes it): everything allowed but what
    the worker's own filter refuses (which leaves out the calls that build each job's world)."""
    refused = [name for name in REFUSED_SYSCALLS if name not in WORLD_SYSCALLS]
    return json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": refused, "action": "SCMP_ACT_ERRNO"}]})


def remove_pool(client: Any, pool: str, owner: int) -> None:
    """Remove every container of one sandbox (at exit, or when it is collected unclosed), in the
    process ``owner`` that made it: a forked child (an async vector env's worker) that drops the copy it
    inherited leaves its parent's containers alone."""
    if os.getpid() != owner:
        return
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
            image, ["python3", *WORKER_FLAGS, "-c", WORKER_SOURCE],
            # Not detached, docker-py sets StdinOnce: the worker's stdin closes, and it ends, when
            # this attach connection does (this process exits or dies).
            stdin_open=True, tty=False, detach=False,
            user=NOBODY, working_dir="/tmp",
            environment={"SANDBOX_TMP_MB": str(limits.tmp_mb), **WORKER_ENV},
            network_mode="none", ipc_mode="none", read_only=True,
            # /dev/mqueue, docker's message-queue filesystem, would outlive jobs: an empty read-only one.
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={SCRATCH_MB}m,mode=1777",
                   "/dev/mqueue": "ro,size=4k,mode=555"},
            cap_drop=["ALL"], security_opt=["no-new-privileges", f"seccomp={seccomp_profile()}"],
            mem_limit=f"{limits.memory_mb + WORKER_MB}m", memswap_limit=f"{limits.memory_mb + WORKER_MB}m",
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
        self._finalizer = weakref.finalize(self, remove_pool, self._client, self._pool, os.getpid())

    def _start_worker(self) -> Worker:
        worker = ContainerWorker(self._client, self.image, self.limits, self._pool)
        log.debug("sandbox container %s started", worker.container.short_id)
        return worker

    def _describe_backend(self) -> str:
        return (f"docker: a container per worker (image {self.image}) as nobody with no capabilities, no "
                "network, a read-only root and the sandbox's own seccomp profile")

    def _describe_memory(self, greeting: Mapping[str, Any]) -> str:
        limit = self.limits.memory_mb
        return (f"{limit} MB for the job as a whole, its processes and /tmp files (the container's memory cgroup, "
                f"with {WORKER_MB} MB more for the worker); {limit} MB of address space per process")

    def _describe_processes(self, greeting: Mapping[str, Any]) -> str:
        limit = self.limits.processes
        counted = ("counted in its own user namespace" if greeting.get("namespaces")
                   else "above those its user runs as the job starts")
        return (f"{limit} processes and threads for the job as a whole (RLIMIT_NPROC, {counted}; the container's "
                f"pids limit is {limit + 8})")

    def close(self) -> None:
        super().close()
        self._finalizer()
