"""Control groups for the local backend: memory and process limits that hold for a job as a whole,
its children and its ``/tmp`` files included.

Each worker gets two leaf groups of its own (its jobs alternate between them, so that the next
job's world is built while the current job runs), made by this (root) process with the job's
limits. The worker receives open descriptors of the leaves' ``cgroup.procs``, and each job's
builder joins by writing ``0`` to one before it forks the job. The kernel checks such a write against the credentials
of whoever *opened* the file, so the unprivileged worker needs no access of its own to the
hierarchy, and never sees it (its private root has no ``/sys``).

cgroup v2 is used where this process's group, or its parent, hands the ``memory`` and ``pids``
controllers down; otherwise cgroup v1's ``memory`` and ``pids`` hierarchies, where mounted; where
neither can be written, there is no control group, and the sandbox says so
(:meth:`envs.sandbox.Sandbox.describe`).

Layout: ``<base>/self-challenge-<owner pid>/worker-<n>-<slot>``, ``<base>`` being this process's own group
(v1), or its parent (v2, where a group holding processes cannot hand controllers down; a group of
its own is its sibling there). Groups whose owner has died are removed when the next local sandbox
starts.
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PREFIX = "self-challenge-"
CONTROLLERS = ("memory", "pids")
_numbers = itertools.count()


@dataclass(frozen=True)
class Hierarchy:
    """Where this process's sandbox groups go in one mounted hierarchy, and which controllers it
    brings."""

    version: int
    base: Path
    controllers: tuple[str, ...]

    @property
    def owner(self) -> Path:
        """This process's folder of worker groups."""
        return self.base / f"{PREFIX}{os.getpid()}"


def _cgroup_mounts() -> Iterator[tuple[Path, str, set[str]]]:
    """(mount point, filesystem type, super options) of each cgroup mount this process sees."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                yield Path(fields[4]), fstype, set(fields[fields.index("-") + 3].split(","))


def _own_groups() -> dict[str, str]:
    """This process's group in each hierarchy, by controller ("" for the v2 hierarchy)."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def find() -> list[Hierarchy]:
    """The hierarchies this process can put worker groups in, v2 first; empty when there are none."""
    try:
        own, mounts = _own_groups(), list(_cgroup_mounts())
    except OSError:
        return []
    for point, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            group = point / own[""].lstrip("/")
            base = group if group == point else group.parent
            try:
                handed_down = set((base / "cgroup.subtree_control").read_text().split())
            except OSError:
                continue
            if set(CONTROLLERS) <= handed_down:
                return [Hierarchy(2, base, CONTROLLERS)]
    return [Hierarchy(1, point / own[controller].lstrip("/"), (controller,))
            for controller in CONTROLLERS
            for point, fstype, options in mounts
            if fstype == "cgroup" and controller in options and controller in own]


def _limit_files(hierarchy: Hierarchy, memory_bytes: int, processes: int) -> list[tuple[str, str]]:
    """(file, value) pairs setting a leaf's limits; files that may be missing are checked for."""
    files: list[tuple[str, str]] = []
    if hierarchy.version == 2:
        files += [("memory.max", str(memory_bytes)), ("memory.swap.max", "0"),
                  ("memory.oom.group", "1"),  # out of memory, the whole job ends at once
                  ("pids.max", str(processes))]
    if "memory" in hierarchy.controllers and hierarchy.version == 1:
        files += [("memory.limit_in_bytes", str(memory_bytes)), ("memory.memsw.limit_in_bytes", str(memory_bytes))]
    if "pids" in hierarchy.controllers and hierarchy.version == 1:
        files += [("pids.max", str(processes))]
    return files


def _remove(path: Path, until: float) -> None:
    """Remove an empty group; its processes may still be on their way out (EBUSY) until ``until``."""
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > until:
                raise
            time.sleep(0.01)


class WorkerGroup:
    """One worker's leaf groups: one per slot (the worker builds the next job's world while the
    current job runs, each in a group of its own) in each hierarchy, each with the job's limits."""

    SLOTS = 2

    def __init__(self, hierarchies: list[Hierarchy], memory_bytes: int, processes: int):
        self.hierarchies = hierarchies
        self.slots: list[list[Path]] = [[] for _ in range(self.SLOTS)]
        worker = next(_numbers)
        try:
            for hierarchy in hierarchies:
                owner = hierarchy.owner
                if not owner.is_dir():
                    owner.mkdir(exist_ok=True)
                    if hierarchy.version == 2:
                        (owner / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in CONTROLLERS))
                for slot, leaves in enumerate(self.slots):
                    leaf = owner / f"worker-{worker}-{slot}"
                    leaf.mkdir()
                    leaves.append(leaf)
                    for file, value in _limit_files(hierarchy, memory_bytes, processes):
                        if (leaf / file).exists():
                            (leaf / file).write_text(value)
        except OSError:
            self.remove()
            raise

    def open_procs(self) -> list[list[int]]:
        """For each slot, descriptors of its leaves' ``cgroup.procs``, opened here (so with this
        process's rights) for the worker to put its jobs in."""
        return [[os.open(leaf / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for leaf in leaves]
                for leaves in self.slots]

    def remove(self) -> None:
        """Remove the leaves (once their processes are gone: two seconds at most) and the owner's
        folder once empty."""
        until = time.monotonic() + 2.0
        for leaf in [leaf for leaves in self.slots for leaf in leaves]:
            try:
                _remove(leaf, until)
            except OSError:
                continue  # still busy: the next sandbox's remove_stale() takes it
        for hierarchy in self.hierarchies:
            try:
                hierarchy.owner.rmdir()
            except OSError:
                pass  # other workers' leaves remain


def remove_stale(hierarchies: list[Hierarchy]) -> None:
    """Remove the groups of owners that have died (a crashed run's)."""
    for hierarchy in hierarchies:
        try:
            owners = [p for p in hierarchy.base.iterdir() if p.name.startswith(PREFIX)]
        except OSError:
            continue
        for owner in owners:
            pid = owner.name[len(PREFIX):]
            if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
                continue
            try:
                for leaf in [p for p in owner.iterdir() if p.is_dir()]:
                    _remove(leaf, until=0)
                owner.rmdir()
            except OSError:
                continue
