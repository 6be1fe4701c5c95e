"""The local backend: worker processes on this machine, no daemon needed.

As root, each worker starts inside ``unshare`` with new network (loopback only), IPC, UTS, mount and
PID namespaces. In its mount namespace it gets a root of its own, a read-only tmpfs holding
read-only binds of ``/usr`` (and the ``/bin``, ``/lib``… links into it), a few files of ``/etc``,
``/dev/null`` and friends, a ``/proc`` of its PID namespace and a private ``/tmp``: the host's files
(the project, its task pools, home directories) are out of sight. It then drops to ``nobody`` with
``setpriv`` (no capabilities, no new privileges) and makes itself non-dumpable. Each job then gets a
world of its own inside the worker (user, mount, PID and IPC namespaces, an empty size-capped
``/tmp``, no capabilities, a seccomp filter; see :mod:`envs.sandbox.worker`), and a control group
of the worker's where this machine has one (:mod:`envs.sandbox.cgroup`), so that its memory and
processes are limited as a whole.

Where root's namespaces cannot be made (not root, or root in a container without
``CAP_SYS_ADMIN``), the worker makes the same ones, and the same private root, inside a user
namespace where the kernel allows one (a user who is not root gets no control group); where that
fails too, a user namespace with the host's files in view, and last, limits alone. Root runs these
as nobody. In those two, Landlock holds jobs, where the kernel has it, to what a private root would
show them (:data:`HOST_VIEW`). Each way is tried once a process, strongest first, until a worker
comes up (:func:`worker_isolation`); what a fallback lacks is logged as a warning, and
:meth:`~envs.sandbox.Sandbox.describe` says what applies.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envs.sandbox import WORKER_ENV, WORKER_FLAGS, WORKER_SOURCE, Limits, Sandbox, Worker, WorkerLost
from envs.sandbox.cgroup import Hierarchy, WorkerGroup, find, remove_stale

log = logging.getLogger(__name__)

NOBODY = 65534
SYSTEM_FOLDERS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")  # or links into /usr
ETC_FILES = ("ld.so.cache", "passwd", "group", "localtime")
DEVICES = ("null", "zero", "full", "random", "urandom")
HOST_VIEW = {
    "SANDBOX_READABLE": ":".join([*(f"/{d}" for d in SYSTEM_FOLDERS), *(f"/etc/{f}" for f in ETC_FILES)]),
    "SANDBOX_WRITABLE": ":".join(f"/dev/{n}" for n in DEVICES),
}
"""What jobs that see the host's files may read and write of them: what a private root holds. The
worker holds them to it with Landlock, where the kernel has it."""
SCRATCH_MB = 64  # the worker's own /tmp, which jobs only see where user namespaces are refused


def private_root(python: str, user: str = "") -> str:
    """The shell script that starts a worker on a private read-only root: run as root of new mount,
    network, IPC, UTS and PID namespaces (the machine's root, or root of a user namespace), it builds
    the root and executes ``python`` there on ``"$0"``, the worker's source, as ``user`` (setpriv's
    options) with no capabilities. Where ``user`` is empty the worker stays root of its user
    namespace and keeps CAP_SETFCAP there alone: its jobs map that root into user namespaces of their
    own, which Linux allows only to a creator that held it. Every mount happens in this mount
    namespace alone (propagation is private), so the host sees none of it."""
    bounding = "-all" if user else "-all,+setfcap"
    return f"""set -e
ip link set lo up 2>/dev/null || true
hostname sandbox 2>/dev/null || echo sandbox > /proc/sys/kernel/hostname 2>/dev/null || true
root=/tmp
mount -t tmpfs -o size=4m,mode=755 sandbox-root "$root"
cd "$root"
mkdir etc dev proc tmp old
for d in {' '.join(SYSTEM_FOLDERS)}; do
    if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$d"
    elif [ -d "/$d" ]; then mkdir "$d"; mount --rbind -o ro "/$d" "$d"; fi
done
for f in {' '.join(ETC_FILES)}; do if [ -e "/etc/$f" ]; then cp -L "/etc/$f" etc/; fi; done
for n in {' '.join(DEVICES)}; do touch "dev/$n"; mount --bind "/dev/$n" "dev/$n"; done
mount -t proc -o nosuid,nodev,noexec proc proc
mount -t tmpfs -o size={SCRATCH_MB}m,mode=1777,nosuid,nodev,noexec tmpfs tmp
pivot_root . old
umount -l /old
rmdir /old
mount -o remount,ro,bind /
cd /tmp
exec setpriv {user} --inh-caps=-all --bounding-set={bounding} --no-new-privs {python} {' '.join(WORKER_FLAGS)} -c "$0"
"""


class ProcessWorker(Worker):
    """A worker process, spoken to over its stdin and stdout pipes; ``group`` is the control group
    its jobs join (removed with the worker)."""

    def __init__(self, isolation: Isolation, env: dict[str, str], group: WorkerGroup | None = None):
        super().__init__()
        self.group = group
        self._said: str | None = None
        slots = group.open_procs() if group else []
        procs = [fd for slot in slots for fd in slot]
        env = env | {"SANDBOX_CGROUP_FDS": ";".join(",".join(map(str, s)) for s in slots)}
        try:
            self.proc = subprocess.Popen(
                isolation.argv(WORKER_SOURCE), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True, pass_fds=procs, env=env)
        finally:
            for fd in procs:  # the worker has its own copies
                os.close(fd)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)  # a worker that stops reading must not block the caller
        try:
            self.greet(time.monotonic() + 30)
        except WorkerLost as exc:
            said = self._last_words()
            self.kill()
            also = "" if said in str(exc) else f"; its stderr said: {said}"
            raise WorkerLost(f"the sandbox worker did not start ({exc}){also}") from None
        self.host_pid = _only_child(self.proc.pid) if isolation.forks else self.proc.pid

    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self._in], [], left)[1]:
                raise WorkerLost("the worker stopped reading")
            try:
                view = view[os.write(self._in, view):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise WorkerLost("the worker has gone") from None

    def _read_some(self, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self._out], [], [], left)[0]:
            raise WorkerLost("no answer before the deadline")
        chunk = os.read(self._out, 65536)
        if not chunk:
            raise WorkerLost(f"the worker exited; its stderr said: {self._last_words()}")
        return chunk

    def _last_words(self) -> str:
        """What the worker wrote to stderr before it ended (it says why it could not go on)."""
        self._end()
        assert self.proc.stderr is not None
        if self._said is None:
            self._said = self.proc.stderr.read(4000).decode(errors="replace").strip() or "nothing"
        return self._said

    def _end(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def kill(self) -> None:
        self._end()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        if self.group is not None:
            self.group.remove()


def _only_child(pid: int) -> int:
    """The one child of ``pid`` (found through /proc, which every Linux has)."""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            return int(entry.name)
                except (OSError, IndexError, ValueError):
                    continue
    raise WorkerLost(f"the worker under process {pid} has gone")


@dataclass(frozen=True)
class Isolation:
    """One way to start a worker here: a command that runs a program (``-c`` source) as the worker,
    and what it gives."""

    name: str
    command: tuple[str, ...]
    """Everything before the program's source, which comes last."""
    forks: bool
    """The worker is the started process's one child (``unshare --fork``), not that process."""
    description: str
    warning: str = ""
    """Logged once it is chosen: what this machine refused of the stronger ways."""
    host_files: bool = False
    """Jobs see the host's files, so the worker holds them to :data:`HOST_VIEW`."""
    own_mounts: bool = False
    """The worker has a mount namespace of its own, where it makes the host's files read-only."""

    def argv(self, program: str) -> list[str]:
        return [*self.command, program]


WORKER_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
BECOME_NOBODY = (f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")  # setpriv's options
AS_NOBODY = ("setpriv", *BECOME_NOBODY, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs")
"""How root starts a worker that gets no private root of root's: as nobody, so that its jobs cannot
read or write root's files or fork past ``RLIMIT_NPROC`` (root ignores it)."""
NAMESPACES = ("--net", "--ipc", "--uts", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private")
ON_A_PRIVATE_ROOT = ("on a private read-only root (system programs and libraries only), in their own network (none), "
                     "IPC, UTS, mount and PID namespaces")


def isolations() -> list[Isolation]:
    """Every way this machine might start a worker, strongest first: a private root, made by root or
    in a user namespace; a user namespace with the host's files in view; limits alone. Root runs the
    user-namespace and limits-only ways as nobody (where it may)."""
    # The worker needs the standard library alone: any python 3 will do, the system's by preference.
    python = os.environ.get("SANDBOX_PYTHON") or shutil.which("python3", path=WORKER_PATH) or sys.executable
    worker = (python, *WORKER_FLAGS, "-c")
    visible = os.path.realpath(python).startswith(("/usr/", "/bin/"))  # on a private root, which binds these
    root = os.geteuid() == 0
    who, as_who = ("nobody", AS_NOBODY) if root else ("this user", ())
    refused = "root's namespaces are refused here (a container without CAP_SYS_ADMIN?)" if root else "not root"
    user_namespace = ("unshare", "--user", "--map-root-user")
    ways = []
    if visible:
        if root:
            script = private_root(python, " ".join(BECOME_NOBODY))  # root becomes nobody on its private root
            ways.append(Isolation("private-root", ("unshare", *NAMESPACES, "sh", "-c", script), True,
                                  f"local: worker processes as nobody {ON_A_PRIVATE_ROOT}"))
        ways.append(Isolation(
            "user-namespace", (*as_who, *user_namespace, *NAMESPACES, "sh", "-c", private_root(python)), True,
            f"local: worker processes in a user namespace of {who}'s, {ON_A_PRIVATE_ROOT}",
            f"{refused}: the local sandbox's workers run in a user namespace" if root else ""))
    ways.append(Isolation(
        "host-files", (*as_who, *user_namespace, *NAMESPACES[:-2], "--mount-proc", *worker), True,
        f"local: worker processes in a user namespace of {who}'s, with no network but the host's files in view",
        f"{refused}, and no private root can be made: the local sandbox runs in a user namespace, with the "
        "host's files in view", host_files=True, own_mounts=True))
    ways.append(Isolation("limits", (*as_who, *worker), False, f"local: plain worker processes of {who} (limits only)",
                          "no namespaces available to this user: sandboxed code runs with resource limits only",
                          host_files=True))
    if root:  # where root may not become nobody
        ways.append(Isolation("limits-as-root", worker, False, "local: plain worker processes of root (limits only)",
                              "no namespaces, and no other user, available here: sandboxed code runs as root "
                              "with resource limits only", host_files=True))
    return ways


def runs(isolation: Isolation) -> bool:
    """Whether a worker started this way comes up: it greets once it has built its first job's world."""
    try:
        ProcessWorker(isolation, {"PATH": WORKER_PATH, **WORKER_ENV}).kill()
    except (OSError, WorkerLost):
        return False
    return True


@functools.cache
def worker_isolation() -> Isolation:
    """The strongest isolation that runs here, found once a process (the machine does not change)."""
    ways = isolations()
    chosen = next((way for way in ways if runs(way)), ways[-1])
    if chosen.warning:
        log.warning(chosen.warning)
    return chosen


class LocalSandbox(Sandbox):
    """Sandbox on local processes (the default backend)."""

    def __init__(self, workers: int = 2, limits: Limits = Limits()):
        super().__init__(workers, limits)
        self._isolation = worker_isolation()
        self._env = {"PATH": WORKER_PATH, "SANDBOX_TMP_MB": str(limits.tmp_mb), **WORKER_ENV,
                     **(HOST_VIEW if self._isolation.host_files else {}),
                     **({"SANDBOX_READ_ONLY_VIEW": "1"} if self._isolation.own_mounts else {})}
        # Control groups need root here (a delegated subtree is not looked for).
        self._hierarchies: list[Hierarchy] = find() if os.geteuid() == 0 else []
        self._no_group = "" if self._hierarchies else "no writable cgroup v2 or v1 memory/pids hierarchy here"
        remove_stale(self._hierarchies)

    def _start_worker(self) -> Worker:
        group = None
        if self._hierarchies:
            try:
                group = WorkerGroup(self._hierarchies, self.limits.memory_mb << 20, self.limits.processes)
            except OSError as exc:
                log.warning("no control group for the sandbox's jobs (%s): their limits hold per process", exc)
                self._hierarchies, self._no_group = [], f"making one failed: {exc}"
        try:
            return ProcessWorker(self._isolation, self._env, group)
        except BaseException:
            if group is not None:
                group.remove()
            raise

    def _describe_backend(self) -> str:
        return self._isolation.description

    def _group(self, greeting: Mapping[str, Any]) -> str:
        """Which control group holds the jobs, or why none does."""
        if greeting.get("cgroup") == "joined" and self._hierarchies:
            version = self._hierarchies[0].version
            return f"cgroup v{version} ({', '.join(c for h in self._hierarchies for c in h.controllers)})"
        return ""

    def _describe_memory(self, greeting: Mapping[str, Any]) -> str:
        limit = self.limits.memory_mb
        group = self._group(greeting)
        if group and any("memory" in h.controllers for h in self._hierarchies):
            return (f"{limit} MB for the job as a whole, its processes and /tmp files ({group}); "
                    f"{limit} MB of address space per process")
        why = "the worker could not join it" if greeting.get("cgroup") == "refused" else self._no_group
        return f"{limit} MB of address space per process only (RLIMIT_AS): no control group ({why})"

    def _describe_processes(self, greeting: Mapping[str, Any]) -> str:
        limit = self.limits.processes
        if not greeting.get("namespaces"):
            return (f"{limit} processes and threads (RLIMIT_NPROC) above those its user runs as the job starts, "
                    "which count too")
        group = self._group(greeting)
        pids = group and any("pids" in h.controllers for h in self._hierarchies)
        return (f"{limit} processes and threads for the job as a whole (RLIMIT_NPROC, counted in its own user "
                f"namespace{f'; pids.max of its {group}' if pids else ''})")
