"""The local sandbox where the machine refuses it the strongest isolation: root without the right to
make namespaces (a container without CAP_SYS_ADMIN), and jobs that get no namespaces of their own
(user namespaces refused). ``tests/test_sandbox.py`` holds the sandbox to its contract where it
gets everything; these hold the fallbacks to theirs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import envs.sandbox.local as local
from envs.sandbox import WorkerLost
from envs.sandbox.local import Isolation, LocalSandbox
from test_sandbox import NO_JOB_NAMESPACES, landlock_abi

REPO = Path(__file__).resolve().parents[1]


def user_namespaces() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--user", "--map-root-user", "true"], capture_output=True).returncode == 0


needs_user_namespaces = pytest.mark.skipif(not user_namespaces(), reason="this machine refuses user namespaces")

needs_landlock = pytest.mark.skipif(landlock_abi() == 0, reason="this kernel has no Landlock")


def gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie that its new parent has not reaped yet has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_the_strongest_isolation_that_runs_is_chosen_and_what_it_lacks_is_logged(monkeypatch, caplog) -> None:
    ways = [Isolation("strong", (), True, "strong"), Isolation("middle", (), True, "middle", "middle lacks a root"),
            Isolation("weak", (), False, "weak", "weak lacks everything")]
    refused = {"strong"}
    monkeypatch.setattr(local, "isolations", lambda: ways)
    monkeypatch.setattr(local, "runs", lambda way: way.name not in refused)
    local.worker_isolation.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=local.__name__):
            assert local.worker_isolation() is ways[1]
        assert [r.getMessage() for r in caplog.records] == ["middle lacks a root"]
        local.worker_isolation.cache_clear()
        refused |= {"middle", "weak"}
        assert local.worker_isolation() is ways[2]  # the last, when nothing runs: its worker says why it fails
    finally:
        local.worker_isolation.cache_clear()


def test_a_way_runs_only_if_its_worker_comes_up() -> None:
    assert local.runs(Isolation("this python", (sys.executable, "-s", "-S", "-c"), False, ""))
    assert not local.runs(Isolation("no worker", ("sh", "-c", 'exit 0; "$0"'), False, ""))  # it ran, but never greeted
    assert not local.runs(Isolation("nothing", ("no-such-program-here",), False, ""))


def test_without_a_python3_on_the_workers_path_the_plainest_worker_runs_this_python(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("SANDBOX_PYTHON", raising=False)
    monkeypatch.setattr(local, "WORKER_PATH", str(tmp_path))  # a PATH with no program on it
    assert local.runs(local.isolations()[-1])


def test_a_worker_that_cannot_start_says_why_in_one_error(monkeypatch) -> None:
    refusal = Isolation("refused", ("sh", "-c", 'echo "no namespaces for you" >&2; exit 3; "$0"'), False, "refused")
    monkeypatch.setattr(local, "worker_isolation", lambda: refusal)
    with LocalSandbox(workers=1) as sandbox:
        with pytest.raises(WorkerLost, match="did not start") as caught:
            sandbox.verify("def verify(state, answer):\n    return True", {}, "")
    assert str(caught.value).count("no namespaces for you") == 1


ROOT_WITHOUT_NAMESPACES = """
import json, sys
from envs.sandbox.local import LocalSandbox
with LocalSandbox(workers=1) as sandbox:
    job = sandbox.verify(sys.argv[1], {}, "")
    with open(f"/proc/{sandbox.host_pids()[0]}/status") as f:
        uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
    print(json.dumps({"backend": sandbox.describe()["backend"], "status": job.status, "uid": int(uid)}))
"""
SEES_THE_PROJECT = f"""import os
def verify(state, answer):
    return os.path.exists({str(REPO / "setup.cfg")!r})
"""
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@needs_root
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv, to drop a right")
@needs_user_namespaces
def test_root_refused_its_namespaces_runs_workers_as_nobody_on_a_private_root_in_a_user_namespace() -> None:
    """As in a container without CAP_SYS_ADMIN: root cannot make the worker's namespaces, so the
    worker makes them in a user namespace, as nobody, and its jobs still see none of the host's files."""
    drop = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]
    ran = subprocess.run([*drop, sys.executable, "-c", ROOT_WITHOUT_NAMESPACES, SEES_THE_PROJECT], capture_output=True,
                         text=True, cwd=REPO, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert ran.returncode == 0, ran.stderr
    said = json.loads(ran.stdout)
    assert "user namespace of nobody's, on a private read-only root" in said["backend"]
    assert (said["status"], said["uid"]) == ("failed", 65534)
    assert "root's namespaces are refused" in ran.stderr


READS_ROOTS_FILE = """import os
def verify(state, answer):
    try:
        open({path!r}).read()
    except PermissionError:
        return os.path.exists({path!r})
    return False
"""


@needs_root
@needs_user_namespaces
def test_without_a_private_root_root_runs_workers_as_nobody_who_cannot_read_roots_files(monkeypatch) -> None:
    host_files = next(way for way in local.isolations() if way.name == "host-files")
    monkeypatch.setattr(local, "worker_isolation", lambda: host_files)
    folder = Path(tempfile.mkdtemp(dir="/var/tmp"))  # a job's /tmp is its own
    try:
        folder.chmod(0o755)  # anyone may look the file up; only root may read it
        secret = folder / "secret"
        secret.write_text("root's alone")
        secret.chmod(0o600)
        with LocalSandbox(workers=1) as sandbox:
            assert sandbox.verify(READS_ROOTS_FILE.format(path=str(secret)), {}, "").status == "ok"
    finally:
        shutil.rmtree(folder)


NO_MOUNTS = """import ctypes, os, struct, sys
filter = [(0x20, 0, 0, 0), (0x15, 0, 1, 165), (0x06, 0, 0, 0x00050001), (0x06, 0, 0, 0x7FFF0000)]  # mount: EPERM
code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *line) for line in filter))
program = ctypes.create_string_buffer(struct.pack("=HxxxxxxQ", len(filter), ctypes.addressof(code)))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
assert libc.prctl(38, 1, 0, 0, 0) == 0 and libc.prctl(22, 2, ctypes.addressof(program), 0, 0) == 0
os.execv(sys.executable, [sys.executable, "-s", "-S", "-c", sys.argv[1]])
"""
"""Runs the program given it under a seccomp filter that refuses mount (x86_64's number), and so
every world a job's namespaces would need."""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter holds x86_64's number for mount")
def test_namespaces_that_grant_no_right_to_mount_leave_jobs_as_plain_children(monkeypatch) -> None:
    """As under Ubuntu's AppArmor, which lets a user make namespaces but denies every right in them:
    the worker must not die building each job a world it cannot mount."""
    no_mounts = Isolation("no-mounts", ("python3", "-c", NO_MOUNTS), False, "namespaces without mounts")
    monkeypatch.setattr(local, "worker_isolation", lambda: no_mounts)
    with LocalSandbox(workers=1) as sandbox:
        assert "sharing its /tmp" in sandbox.describe()["job"]
        verdicts = [sandbox.verify(f"def verify(state, answer):\n    return {n % 2 == 0}", {}, "").status
                    for n in range(4)]
    assert verdicts == ["ok", "failed"] * 2


SIGNALS = """import builtins, importlib, sys
builtins.__import__ = importlib.__import__
import ctypes
def verify(state, answer):
    posix, outside, refused = sys.modules['posix'], state["outside"], []
    for pid in (outside, -1, 0, posix.getpid()):
        try:
            posix.kill(pid, 0)  # signal 0: only whether it may
        except PermissionError:
            refused.append(pid)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.argtypes = [ctypes.c_long] * 6
    # at the outside process (x86_64's numbers): tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo, tkill, pidfd_open;
    # prlimit64 (reading nothing), setpriority (PRIO_PROCESS, to 0 as it is), kcmp; and prlimit64 of itself
    for number, args in ((234, (outside, outside)), (129, (outside,)), (297, (outside, outside)), (200, (outside,)),
                         (434, (outside,)), (302, (outside,)), (141, (0, outside)), (312, (posix.getpid(), outside)),
                         (302, (0,))):
        if libc.syscall(number, *args, *[0] * (5 - len(args))) == -1 and ctypes.get_errno() == 1:
            refused.append(number)
    return refused == [outside, -1, 234, 129, 297, 200, 434, 302, 141, 312]
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter holds x86_64's number for mount")
def test_a_job_without_namespaces_may_act_on_its_own_group_and_itself_alone_whatever_the_kernel(monkeypatch) -> None:
    """Jobs without a PID namespace of their own name the host's processes: a signal, or a limit set on
    the process that trains (prlimit64), would reach it. Here (no right to mount, and no Landlock: the
    worker is not told the host's files are in view) seccomp alone refuses them."""
    no_mounts = Isolation("no-mounts", ("python3", "-c", NO_MOUNTS), False, "namespaces without mounts")
    monkeypatch.setattr(local, "worker_isolation", lambda: no_mounts)
    outside = subprocess.Popen(["sleep", "30"])
    try:
        with LocalSandbox(workers=1) as sandbox:
            assert "Landlock" not in sandbox.describe()["job"]
            assert sandbox.verify(SIGNALS, {"outside": outside.pid}, "").status == "ok"
    finally:
        outside.kill()
        outside.wait()


@pytest.fixture(scope="module")
def without_namespaces() -> Iterator[LocalSandbox]:
    if not user_namespaces():
        pytest.skip("this machine refuses user namespaces, so none can be made that refuses nested ones")
    patch = pytest.MonkeyPatch()
    patch.setattr(local, "worker_isolation", lambda: NO_JOB_NAMESPACES)
    try:
        with LocalSandbox(workers=1) as sandbox:
            yield sandbox
    finally:
        patch.undo()


def test_jobs_without_namespaces_say_so(without_namespaces: LocalSandbox) -> None:
    job = without_namespaces.describe()["job"]
    assert "sharing its /tmp" in job
    assert (f"Landlock (ABI {landlock_abi()}): of the host's files, system programs and libraries to read, nothing "
            "to write" in job) == (landlock_abi() > 0)


HOST_FILES = f"""import errno, os, sys
def verify(state, answer):
    def reach(path, mode):
        try:
            with open(path, mode) as f:
                f.write("x") if "w" in mode else f.read(1)
        except OSError as exc:  # Landlock's refusal, or a read-only view's
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            return "refused"
        return "done"
    return {{"project": reach({str(REPO / "setup.cfg")!r}, "r"), "standard library": reach(os.__file__, "r"),
             "etc": reach("/etc/passwd", "r"), "/dev/null": reach("/dev/null", "w"), "here": reach("left", "w"),
             "/tmp": reach("/tmp/left-" + str(os.getpid()), "w"), "/var/tmp": reach("/var/tmp/left", "w"),
             "other processes": reach("/proc/1/environ", "r")}} == state["expected"]
"""


@needs_landlock
def test_landlock_leaves_jobs_without_namespaces_the_system_files_to_read_and_nothing_to_write(
        without_namespaces: LocalSandbox) -> None:
    """Where jobs share the host's files, Landlock holds them to what a private root would show them:
    they cannot read the project or another process's /proc, nor write anywhere (the shared /tmp and
    the folder they start in included), so no job can leave anything for the next or touch the host's."""
    expected = {"project": "refused", "standard library": "done", "etc": "done", "/dev/null": "done",
                "here": "refused", "/tmp": "refused", "/var/tmp": "refused", "other processes": "refused"}
    assert without_namespaces.verify(HOST_FILES, {"expected": expected}, "").status == "ok"


SIGNALS_OUTSIDE = """import sys
def verify(state, answer):
    try:
        sys.modules['posix'].kill(state["pid"], 15)
    except PermissionError:
        return True
    return False
"""


@pytest.mark.skipif(landlock_abi() < 6, reason="Landlock scopes signals from ABI 6")
def test_landlock_keeps_a_job_without_namespaces_from_signalling_a_process_outside_it(
        without_namespaces: LocalSandbox) -> None:
    """Without a PID namespace a job can name the host's processes; Landlock's scope refuses it a
    signal to any outside the job (seccomp lets ``kill`` through: jobs signal their own)."""
    outside = subprocess.Popen(["sleep", "30"])
    try:
        assert without_namespaces.verify(SIGNALS_OUTSIDE, {"pid": outside.pid}, "").status == "ok"
        assert outside.poll() is None
    finally:
        outside.kill()
        outside.wait()


CANNOT_READ_THE_PROJECT = f"""def verify(state, answer):
    try:
        open({str(REPO / "setup.cfg")!r}).read()
    except PermissionError:
        return True
    return False
"""


@needs_landlock
@pytest.mark.parametrize("name", ["host-files", "limits", "limits-as-root"])
def test_every_way_that_shows_jobs_the_hosts_files_holds_them_with_landlock(monkeypatch, name) -> None:
    way = next((way for way in local.isolations() if way.name == name), None)
    if way is None or not local.runs(way):
        pytest.skip(f"no {name} worker here")
    monkeypatch.setattr(local, "worker_isolation", lambda: way)
    with LocalSandbox(workers=1) as sandbox:
        assert sandbox.verify(CANNOT_READ_THE_PROJECT, {}, "").status == "ok"


@needs_landlock
@needs_user_namespaces
def test_with_the_hosts_files_in_view_landlock_leaves_a_job_its_own_tmp_and_proc_and_the_system_files(
        monkeypatch) -> None:
    host_files = next(way for way in local.isolations() if way.name == "host-files")
    monkeypatch.setattr(local, "worker_isolation", lambda: host_files)
    expected = {"project": "refused", "standard library": "done", "etc": "done", "/dev/null": "done",
                "here": "done", "/tmp": "done", "/var/tmp": "refused", "other processes": "done"}
    with LocalSandbox(workers=1) as sandbox:
        assert "Landlock" in sandbox.describe()["job"]
        assert sandbox.verify(HOST_FILES, {"expected": expected}, "").status == "ok"


WRITABLE_MOUNTS = """def verify(state, answer):
    mounts = [line.split() for line in open('/proc/self/mountinfo')]
    print(sorted(fields[4] for fields in mounts if 'rw' in fields[5].split(',')))
    return True
"""


@needs_user_namespaces
def test_with_the_hosts_files_in_view_a_job_sees_them_read_only_and_the_host_keeps_its_mounts(monkeypatch) -> None:
    """A read through a writable mount sets the file's access time, which a later job could read as a message."""
    host_files = next(way for way in local.isolations() if way.name == "host-files")
    monkeypatch.setattr(local, "worker_isolation", lambda: host_files)
    with LocalSandbox(workers=1) as sandbox:
        result = sandbox.verify(WRITABLE_MOUNTS, {}, "")
    assert result.status == "ok", result
    writable = json.loads(result.output.replace("'", '"'))
    assert [m for m in writable if m not in ("/proc", "/tmp")] == [] and "/tmp" in writable
    assert not os.statvfs("/").f_flag & os.ST_RDONLY, "the host's own root became read-only"


def test_only_a_worker_with_a_mount_namespace_of_its_own_touches_its_mounts() -> None:
    """Where the worker shares the host's mounts (the limits-only ways), making them read-only would be the host's."""
    for way in local.isolations():
        assert not way.own_mounts or "--mount" in way.command, way.name
    assert any(way.own_mounts for way in local.isolations())


def test_jobs_without_namespaces_run_one_after_another_on_one_worker(without_namespaces: LocalSandbox) -> None:
    workers = without_namespaces.host_pids()
    verdicts = [without_namespaces.verify(f"def verify(state, answer):\n    return {n % 2 == 0}", {}, "").status
                for n in range(12)]
    assert verdicts == ["ok", "failed"] * 6
    assert without_namespaces.host_pids() == workers  # no job cost its worker


ESCAPE = """import sys, time
def verify(state, answer):
    posix = sys.modules['posix']
    if posix.fork() == 0:
        for leave in (posix.setsid, lambda: posix.setpgid(0, 0)):
            try:
                leave()
            except OSError:
                pass
        pid = posix.fork()
        if pid == 0:
            time.sleep(60)
        posix.write(1, b"%d\\n" % pid)
        posix._exit(0)
    time.sleep(0.2)
    return True
"""


def test_a_process_of_a_job_without_namespaces_cannot_leave_its_group_and_outlive_the_job(
        without_namespaces: LocalSandbox) -> None:
    """Where jobs get no PID namespace, killing the job's process group ends the job; the seccomp
    filter refuses setsid and setpgid, so no process of the job gets out of that group."""
    result = without_namespaces.verify(ESCAPE, {}, "")
    grandchild = int(result.output.split()[-1])
    end = time.monotonic() + 5
    while not gone(grandchild) and time.monotonic() < end:
        time.sleep(0.05)
    assert gone(grandchild), result
    assert without_namespaces.verify("def verify(state, answer):\n    return True", {}, "").status == "ok"
