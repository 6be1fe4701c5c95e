"""Hostile snippets against both sandbox backends: each must end as an error, a timeout or a failed
verification within its limits, leave no file outside the sandbox's scratch space and no process
behind, and leave the sandbox serving normal jobs.

Each attack is a verifier that returns True only when it got out (a connection made, a secret read,
a file written where it must not be). Most start by undoing the worker's import guard
(``builtins.__import__ = importlib.__import__``): that guard is a speed bump for naive code, and
what is tested here is the operating system's containment underneath it.

Where the backends differ: the local sandbox's root is a private tmpfs holding read-only binds of
``/usr`` and a few ``/etc`` files (the host's files are out of sight; ``/etc/shadow`` is absent),
while a docker job sees the image (``/etc/shadow`` is there, unreadable). Both refuse network
sockets (seccomp) inside a network namespace of their own; a docker container also has docker's
own seccomp profile, pids cgroup and memory cgroup on top of the worker's rlimits. The local
backend's limits-only way (``local-limits``: jobs are plain children of the worker, on the host's
files) is held by seccomp and Landlock: the host's files but its system files out of reach, nothing
writable, no signal to a process outside the job.
"""

from __future__ import annotations

import os
import socket
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from test_sandbox import BACKENDS, MARGIN, descendants, leftover_processes, open_sandbox, sandbox_backend

from envs.sandbox import Limits, Sandbox

REPO = Path(__file__).resolve().parents[1]
MARK = f"sandbox-attack-{uuid.uuid4().hex[:12]}"
CANARY = f"canary-{uuid.uuid4().hex}"
os.environ["SELF_CHALLENGE_SECRET"] = CANARY  # set before any sandbox starts: it must never see it
HOST_DIRS = ("/", "/etc", "/root", str(REPO), "/var/tmp", "/dev/shm", "/tmp", "/home", os.getcwd())
LIMITS = Limits(wall_seconds=2.0, cpu_seconds=1, memory_mb=128, processes=16, file_mb=4,
                open_files=32, output_bytes=4096)
UNGUARD = "import builtins, importlib\nbuiltins.__import__ = importlib.__import__\n"
PROBE = """import os
def verify(state, answer):
    left = []
    for d in ('/tmp', '/dev/shm', '/dev/mqueue', '/var/tmp'):
        try:
            left += [os.path.join(d, n) for n in os.listdir(d)]
        except OSError:
            continue
    if left:
        raise AssertionError(f'left behind: {left}')
    if state['own_tmp']:
        with open('/tmp/probe', 'wb') as f:  # a full /tmp must not outlive its job
            f.write(b'x' * 2**20)
    return answer == str(state['n'] % 2)
"""
INNOCENT_TRIES = 100
NEED_A_CONTROL_GROUP = {"fork_memory"}  # the local backend contains these only where it has a cgroup


@dataclass(frozen=True)
class Attack:
    name: str
    source: str
    statuses: tuple[str, ...] = ("failed", "error", "timeout")


def attack(name: str, source: str, unguard: bool = False,
           statuses: tuple[str, ...] = ("failed", "error", "timeout")) -> Attack:
    """An attack from an indented source; ``unguard`` first undoes the worker's import guard."""
    return Attack(name, (UNGUARD if unguard else "") + textwrap.dedent(source), statuses)


def written_everywhere(name: str, data: str, ending: str, statuses: tuple[str, ...] = ("failed", "error")) -> Attack:
    """An attack that writes ``data`` (an expression) to every descriptor it may hold, then runs ``ending``."""
    return attack(name, f"""
        import os
        def verify(s, a):
            data = {data}
            for fd in range(3, 64):
                try:
                    os.write(fd, data)
                except OSError:
                    pass
            {ending}
        """, statuses=statuses)


def write_to(name: str, directory: str) -> Attack:
    return attack(f"write_{name}", f"""
        def verify(s, a):
            open({directory!r} + '/{{MARK}}', 'w').write('x')
            return True
        """)


ATTACKS = [
    # ---- network
    attack("connect_to_host_loopback", """
        import socket
        def verify(s, a):
            socket.create_connection(('127.0.0.1', {PORT}), timeout=1)
            return True
        """, unguard=True),
    attack("connect_to_outside_address", """
        import socket
        def verify(s, a):
            socket.create_connection(('1.1.1.1', 80), timeout=1)
            return True
        """, unguard=True),
    attack("dns_lookup", """
        import socket
        def verify(s, a):
            return bool(socket.getaddrinfo('pypi.org', 443))
        """, unguard=True),
    attack("raw_packet_socket", """
        import socket
        def verify(s, a):
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            return True
        """, unguard=True),
    # ---- files
    write_to("etc", "/etc"),
    write_to("root_home", "/root"),
    write_to("repository", str(REPO)),
    write_to("var_tmp", "/var/tmp"),
    write_to("dev_shm", "/dev/shm"),
    write_to("filesystem_root", "/"),
    attack("write_tmp_stays_in_the_sandbox", """
        def verify(s, a):
            open('/tmp/{MARK}', 'w').write('x')
            return False
        """),
    attack("read_shadow", """
        def verify(s, a):
            return len(open('/etc/shadow').read()) > 0
        """),
    attack("list_root_home", """
        import os
        def verify(s, a):
            return len(os.listdir('/root')) >= 0
        """),
    attack("read_repository", f"""
        def verify(s, a):
            return len(open({str(REPO / 'setup.cfg')!r}).read()) > 0
        """),
    attack("write_proc_sys", """
        def verify(s, a):
            open('/proc/sys/kernel/hostname', 'w').write('x')
            return True
        """),
    attack("huge_file", """
        def verify(s, a):
            with open('big', 'wb') as f:
                for _ in range(100):
                    f.write(b'x' * 2**20)
            return False
        """),
    attack("fill_the_scratch_space", """
        def verify(s, a):
            for i in range(40):
                open(f'/tmp/fill-{i}', 'wb').write(b'x' * 3 * 2**20)
            return False
        """),
    attack("replace_the_output_file_with_a_fifo", """
        import os
        def verify(s, a):
            print('before')
            os.unlink('.output')
            os.mkfifo('.output')
            return False
        """),
    attack("many_open_files", """
        def verify(s, a):
            files = [open(f'f{i}', 'w') for i in range(1000)]
            return False
        """),
    attack("locked_directories", """
        import os
        def verify(s, a):
            os.makedirs('/tmp/{MARK}/a/b')
            open('/tmp/{MARK}/a/b/f', 'w').write('x')
            for d in ('/tmp/{MARK}/a/b', '/tmp/{MARK}/a', '/tmp/{MARK}'):
                os.chmod(d, 0)
            return False
        """),
    # ---- processes and resources
    attack("fork_bomb", """
        import sys
        def verify(s, a):
            fork = sys.modules['posix'].fork
            while True:
                try:
                    fork()
                except OSError:
                    pass
        """),
    attack("thread_bomb", """
        import threading, time
        def verify(s, a):
            while True:
                threading.Thread(target=time.sleep, args=(1000,)).start()
        """),
    attack("memory_bomb", """
        def verify(s, a):
            x = []
            while True:
                x.append(bytearray(2**20))
        """),
    attack("cpu_loop", """
        def verify(s, a):
            while True:
                pass
        """),
    attack("sleep_forever", """
        import time
        def verify(s, a):
            time.sleep(10**6)
        """),
    attack("huge_output", """
        def verify(s, a):
            while True:
                print('x' * 10000)
        """),
    attack("ignore_signals_and_spin", """
        import signal
        def verify(s, a):
            for sig in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            while True:
                pass
        """),
    attack("posix_fork_bypass", """
        import sys, time
        def verify(s, a):
            if sys.modules['posix'].fork() == 0:
                time.sleep(1000)
            return False
        """),
    attack("setsid_grandchild", """
        import sys, time
        def verify(s, a):
            posix = sys.modules['posix']
            if posix.fork() == 0:
                posix.setsid()
                if posix.fork() == 0:
                    time.sleep(1000)
                posix._exit(0)
            time.sleep(0.2)
            return False
        """),
    attack("spawn_a_shell", """
        import sys
        def verify(s, a):
            sys.modules['posix'].posix_spawn('/bin/sh', ['sh', '-c', 'sleep 1000'], {})
            return False
        """),
    attack("subprocess_through_importlib", """
        import subprocess
        def verify(s, a):
            subprocess.Popen(['sleep', '1000'])
            return False
        """, unguard=True),
    attack("kill_the_worker", """
        import os, sys
        def verify(s, a):
            sys.modules['posix'].kill(os.getppid(), 9)
            sys.modules['posix'].kill(1, 9)
            return False
        """),
    attack("kill_everything", """
        import sys, time
        def verify(s, a):
            posix = sys.modules['posix']
            if posix.fork() == 0:
                time.sleep(1000)
            posix.kill(-1, 9)
            time.sleep(0.2)
            return False
        """),
    # ---- the worker and its channels
    attack("blocked_module_socket", """
        import socket
        def verify(s, a):
            return True
        """),
    attack("blocked_module_subprocess", """
        import subprocess
        def verify(s, a):
            return True
        """),
    attack("blocked_module_ctypes", """
        import ctypes
        def verify(s, a):
            return True
        """),
    attack("ptrace_the_worker", """
        import ctypes
        def verify(s, a):
            return ctypes.CDLL(None).ptrace(16, 1, 0, 0) == 0  # PTRACE_ATTACH
        """, unguard=True),
    # ---- watching or locking what jobs share with the host and each other (the system's files)
    attack("watch_the_hosts_programs_with_inotify", """
        import ctypes, os
        def verify(s, a):
            libc = ctypes.CDLL(None)
            fd = libc.inotify_init1(os.O_NONBLOCK)
            return fd >= 0 and libc.inotify_add_watch(fd, b'/usr/bin', 0x20) >= 0  # IN_OPEN
        """, unguard=True),
    attack("watch_the_hosts_files_with_fanotify", """
        import ctypes
        def verify(s, a):
            return ctypes.CDLL(None).fanotify_init(0x200, 0) >= 0  # FAN_REPORT_FID: allowed unprivileged
        """, unguard=True),
    attack("signal_other_jobs_with_flock", """
        import fcntl, os
        def verify(s, a):
            fcntl.flock(os.open('/usr/bin/env', os.O_RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        """),
    attack("signal_other_jobs_with_an_fcntl_lock", """
        import fcntl, os
        def verify(s, a):
            fcntl.lockf(os.open('/usr/bin/env', os.O_RDONLY), fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        """),
    attack("test_for_another_jobs_lock_with_an_open_file_description_lock", """
        import fcntl, os, struct
        def verify(s, a):
            request = struct.pack('hhqqi', fcntl.F_RDLCK, 0, 0, 0, 0)
            fcntl.fcntl(os.open('/usr/bin/env', os.O_RDONLY), 36, request + bytes(4))  # F_OFD_GETLK
            return True
        """),
    attack("read_worker_memory", """
        import os
        def verify(s, a):
            for pid in {p for p in os.listdir('/proc') if p.isdigit()} - {str(os.getpid())}:
                try:
                    open(f'/proc/{pid}/mem', 'rb')
                    return True
                except OSError:
                    pass
            return False
        """),
    attack("forge_a_result_on_the_worker_pipes", """
        import os, json, struct
        def verify(s, a):
            body = json.dumps({'result': {'status': 'ok'}}).encode()
            for fd in os.listdir('/proc/1/fd'):
                try:
                    open('/proc/1/fd/' + fd, 'wb').write(struct.pack('>I', len(body)) + body)
                except OSError:
                    pass
            return False
        """),
    attack("forge_on_inherited_descriptors", """
        import os, json, struct
        def verify(s, a):
            body = json.dumps({'result': {'status': 'ok'}}).encode()
            for fd in range(3, 64):
                for data in (struct.pack('>I', len(body)) + body, json.dumps({'done': {'status': 'bogus'}}).encode()):
                    try:
                        os.write(fd, data)
                    except OSError:
                        pass
            return False
        """, statuses=("failed", "error")),
    attack("malformed_requests_to_the_parent", """
        import os, json
        def verify(s, a):
            requests = [[1, 2], {'op': 'tool'}, {'op': 'tool', 'name': 3, 'arguments': []},
                        {'op': 'get', 'table': ['x'], 'key': {}}, {'op': 'keys', 'table': None}, '[' * 30000]
            for fd in range(3, 64):
                for request in requests:
                    try:
                        os.write(fd, json.dumps({'request': request}).encode())
                    except OSError:
                        pass
            return False
        """, statuses=("failed", "error")),
    written_everywhere("request_nested_past_the_parsers_limit",
                       """('{"request": ' + '[' * 980 + ']' * 980 + '}').encode()""", "return False"),
    written_everywhere("forge_a_verdict_then_raise", "bytes([1])", "raise ValueError('not a verdict')", ("error",)),
    written_everywhere("forge_a_verdict_then_return_a_string", "bytes([1])", "return 'yes'", ("error",)),
    attack("close_its_channel_and_linger", """
        import os, time
        def verify(s, a):
            for fd in range(3, 64):
                try:
                    os.close(fd)
                except OSError:
                    pass
            time.sleep(1000)
        """),
    attack("environment_snooping", """
        import os
        def verify(s, a):
            seen = str(dict(os.environ))
            for p in ('/proc/self/environ', '/proc/1/environ'):
                try:
                    seen += open(p).read()
                except OSError:
                    pass
            return '{CANARY}' in seen
        """),
    attack("see_host_processes", """
        import os
        def verify(s, a):
            for p in os.listdir('/proc'):
                try:
                    if b'pytest' in open(f'/proc/{p}/cmdline', 'rb').read():
                        return True
                except OSError:
                    pass
            return False
        """),
    attack("user_namespace", """
        import ctypes
        def verify(s, a):
            return ctypes.CDLL(None).unshare(0x10000000) == 0  # CLONE_NEWUSER
        """, unguard=True),
    attack("mount_a_filesystem", """
        import ctypes
        def verify(s, a):
            return ctypes.CDLL(None).mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0
        """, unguard=True),
    attack("kernel_keyring_channel", """
        import ctypes
        def verify(s, a):
            # add_key('user', …, KEY_SPEC_USER_KEYRING): shared by every process of the user
            return ctypes.CDLL(None).syscall(248, b'user', b'{MARK}', b'v', 1, -4) > 0
        """, unguard=True),
    attack("sysv_shared_memory_channel", """
        import ctypes
        def verify(s, a):
            return ctypes.CDLL(None).shmget(0x5AFE, 4096, 0o1666) >= 0
        """, unguard=True),
    # ---- one job against the next (each must leave the next job a fresh world)
    attack("deep_tree_past_path_max", """
        import os
        def verify(s, a):
            os.chdir('/tmp')
            for _ in range(30):  # 30 levels of 200-character names: far past PATH_MAX
                os.mkdir('d' * 200)
                os.chdir('d' * 200)
            open('planted', 'w').write('{MARK}')
            return False
        """),
    attack("very_deep_tree", """
        import os
        def verify(s, a):
            os.chdir('/tmp')
            for _ in range(1500):
                os.mkdir('d')
                os.chdir('d')
            return False
        """),
    attack("fill_tmp_to_the_cap_in_a_deep_tree", """
        import os
        def verify(s, a):
            os.chdir('/tmp')
            for _ in range(25):
                os.mkdir('x' * 200)
                os.chdir('x' * 200)
            try:
                for i in range(1000):
                    with open(f'f{i}', 'wb') as f:
                        f.write(b'x' * (4 << 20))
            except OSError:
                pass
            return False
        """),
    attack("signal_the_serving_processes", """
        import os, signal, sys
        def verify(s, a):
            posix = sys.modules['posix']
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                        signal.SIGUSR2, signal.SIGALRM, signal.SIGPIPE, signal.SIGCHLD, signal.SIGSTOP):
                for pid in [os.getppid(), 1, *range(2, 300)]:
                    if pid != os.getpid():
                        try:
                            posix.kill(pid, sig)
                        except OSError:
                            pass
            return False
        """),
    attack("signal_after_returning", """
        import os, signal, sys, time
        def verify(s, a):
            posix = sys.modules['posix']
            if posix.fork() == 0:
                end = time.monotonic() + 1.0
                while time.monotonic() < end:
                    for pid in range(1, 300):
                        for sig in (signal.SIGINT, signal.SIGTERM):
                            try:
                                posix.kill(pid, sig)
                            except OSError:
                                pass
                posix._exit(0)
            return False
        """),
    attack("fork_memory", """
        import os, sys, time
        def verify(s, a):
            posix = sys.modules['posix']
            read, write = os.pipe()
            children = []
            for i in range(28):
                try:
                    pid = posix.fork()
                except OSError:
                    break
                if pid == 0:
                    held = bytearray(b'x') * (48 << 20)
                    os.write(write, bytes([i]))
                    time.sleep(10)
                    posix._exit(0)
                children.append(pid)
            os.close(write)
            reported, end = set(), time.monotonic() + 1.5
            os.set_blocking(read, False)
            while time.monotonic() < end:
                try:
                    reported.update(os.read(read, 64))
                except BlockingIOError:
                    time.sleep(0.01)
            holding = {i for i, pid in enumerate(children) if os.waitpid(pid, os.WNOHANG)[0] == 0} & reported
            return len(holding) * 48 > 2 * {MEMORY_MB}  # the job as a whole held twice its limit at once
        """),
    attack("fake_bool_class", """
        class bool:
            def __bool__(self):
                return True
        def verify(s, a):
            return bool()
        """, statuses=("error",)),
    attack("int_subclass_named_bool", """
        class bool(int):
            pass
        def verify(s, a):
            return bool(1)
        """, statuses=("error",)),
    attack("int_subclass", """
        def verify(s, a):
            return type('Verdict', (int,), {})(1)
        """, statuses=("error",)),
    attack("patched_type_check", """
        import builtins
        real_type = type
        def verify(s, a):
            builtins.type = lambda x, *rest: real_type(True) if not rest else real_type(x, *rest)
            return 1
        """, statuses=("error",)),
    attack("raise_own_limits", """
        import resource
        def verify(s, a):
            resource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6))
            return True
        """, unguard=True),
]


class Listener:
    """A TCP server on the host's loopback that counts the connections it accepts."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def without_namespaces(sandbox: Sandbox) -> bool:
    """Whether jobs run as plain children of their worker (the limits-only way), with no /tmp of their own."""
    return "sharing its /tmp" in sandbox.describe()["job"]


@pytest.fixture(scope="module", params=[*BACKENDS, "local-limits"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """Each backend, and the local one where jobs get no namespaces (as Ubuntu's AppArmor leaves a laptop's
    user), which only seccomp, Landlock and the limits hold: every attack must be contained there too."""
    box = open_sandbox(request.param, workers=2, limits=LIMITS)
    yield box
    box.close()


def marked_files() -> list[str]:
    found = []
    for directory in HOST_DIRS:
        try:
            found += [os.path.join(directory, n) for n in os.listdir(directory) if MARK in n]
        except OSError:
            continue
    return found


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(sandbox: Sandbox, listener: Listener, attack: Attack) -> None:
    source = (attack.source.replace("{MARK}", MARK).replace("{PORT}", str(listener.port))
              .replace("{CANARY}", CANARY).replace("{MEMORY_MB}", str(LIMITS.memory_mb)))
    if attack.name in NEED_A_CONTROL_GROUP and "as a whole" not in sandbox.describe()["memory"]:
        pytest.skip(f"memory holds per process only here: {sandbox.describe()['memory']}")
    workers = set(sandbox.host_pids())
    start = time.monotonic()
    result = sandbox.verify(source, {}, "")
    elapsed = time.monotonic() - start

    assert result.status in attack.statuses, result
    assert result.kind != "worker_lost", result  # nor may a job take its worker down
    assert elapsed < LIMITS.wall_seconds + MARGIN, f"took {elapsed:.1f} s"
    assert len(result.output) <= LIMITS.output_bytes + 100
    assert listener.accepted == 0
    assert marked_files() == []
    assert leftover_processes(sandbox) == {}
    assert set(sandbox.host_pids()) == workers, "a worker died: the attack, or its clean-up, killed it"
    # The next innocent jobs run in a fresh world (nothing left in /tmp, room to write there) and
    # get the right verdict: no stray message in a worker's stream turns a failure into a pass.
    own_tmp = not without_namespaces(sandbox)
    verdicts = [sandbox.verify(PROBE, {"n": n, "own_tmp": own_tmp}, "1") for n in range(INNOCENT_TRIES)]
    assert [(v.status, v.kind, v.message) for v in verdicts] == [
        ("ok" if n % 2 else "failed", "", "") for n in range(INNOCENT_TRIES)]


FORK_UNTIL_REFUSED = """import sys, time
def verify(state, answer):
    posix, children = sys.modules['posix'], 0
    while children < 64:
        try:
            if posix.fork() == 0:
                time.sleep(100)
                posix._exit(0)
        except OSError:
            break
        children += 1
    {then}
"""
"""A verifier that starts sleeping processes until the limits refuse one (64 at most), then does ``then``."""
HOG = FORK_UNTIL_REFUSED.format(then="time.sleep(100)")
FORK_ALL = FORK_UNTIL_REFUSED.format(then="print(children)\n    return True")
THREADED = """import threading
def verify(state, answer):
    seen = []
    thread = threading.Thread(target=seen.append, args=(answer,))
    thread.start()
    thread.join()
    return seen == [str(state['n'])]
"""


def test_a_job_holding_every_process_slot_starves_no_other_job(sandbox: Sandbox) -> None:
    idle = set(sandbox.host_pids())
    hog = threading.Thread(target=sandbox.verify, args=(HOG, {}, ""),
                           kwargs={"limits": replace(LIMITS, wall_seconds=5.0)})
    hog.start()
    end, holding = time.monotonic() + 5, False
    while not holding and time.monotonic() < end:
        busy = idle - set(sandbox.host_pids())
        holding = any(len(descendants(pid)) >= LIMITS.processes for pid in busy)
        time.sleep(0.02)
    verdicts = [sandbox.verify(THREADED, {"n": n}, str(n)).status for n in range(20)]  # on the other worker
    still_holding = hog.is_alive()
    hog.join()
    assert holding and still_holding, "the hog never held every slot while the others ran"
    assert verdicts == ["ok"] * 20


def test_a_job_gets_its_whole_process_share_right_after_one_that_used_it_all(
        sandbox: Sandbox, request: pytest.FixtureRequest) -> None:
    """Every process of a job has been reaped before the next job starts: none lingers as a zombie that
    still counts against that job's limits (where jobs share the host's PID namespace, its init would reap
    them, in its own time, were the worker not their subreaper). One worker, so each job follows the last."""
    box = open_sandbox(request.node.callspec.params["sandbox"], workers=1, limits=LIMITS)
    try:
        counts = [box.verify(FORK_ALL, {}, "").output for _ in range(6)]
    finally:
        box.close()
    assert len(set(counts)) == 1 and 0 < int(counts[0]) < 64, counts


def test_a_job_cannot_read_what_an_earlier_job_printed(sandbox: Sandbox) -> None:
    printed = f"printed-{uuid.uuid4().hex}"
    assert sandbox.run_code(f"print({printed!r})", lambda name, arguments: "", {}).output == printed + "\n"
    scan = f"""import os
def verify(state, answer):
    for fd in range(3, 256):
        try:
            if {printed!r}.encode() in os.pread(fd, 1 << 16, 0):
                return True
        except OSError:
            pass
    return False
"""
    # Every worker, twice: the next job's process is made while the one before it still runs.
    assert [sandbox.verify(scan, {}, "").status for _ in range(2 * sandbox.size)] == ["failed"] * 2 * sandbox.size



def test_a_job_cannot_find_an_earlier_jobs_result_up_its_stack(sandbox: Sandbox) -> None:
    """The next job's process is forked from the worker while a job runs: nothing of that job may
    stay in the worker's frames, which code reaches by walking up from its own."""
    printed = f"printed-{uuid.uuid4().hex}"
    sandbox.run_code(f"print({printed!r})", lambda name, arguments: "", {})
    walk = "import sys\nf = sys._getframe()\nwhile f is not None:\n    print(repr(f.f_locals))\n    f = f.f_back\n"
    walked = [sandbox.run_code(walk, lambda name, arguments: "", {}, limits=replace(LIMITS, output_bytes=1 << 16))
              for _ in range(3 * sandbox.size)]
    assert all(r.status == "ok" and r.output.count("{") >= 2 for r in walked)  # it did read frames' locals
    assert not any(printed in r.output for r in walked)



def test_a_job_cannot_find_an_earlier_jobs_output_or_replies_in_its_memory(sandbox: Sandbox) -> None:
    """Code finds ctypes' classes (blocking its import is a speed bump) and reads its whole address
    space: a job's process made from one that held earlier jobs' data would find it there, freed. Where it may
    not read its /proc/self/maps (Landlock, on the host's /proc), the test reads it for the job."""
    printed, replied = f"printed-{uuid.uuid4().hex}", f"replied-{uuid.uuid4().hex}"
    # many copies, so that some outlive the worker's next allocations, which reuse what it freed
    assert sandbox.run_code(f"print({printed!r} * 100)", lambda name, arguments: "", {}).status == "ok"
    assert sandbox.run_code("ask()", lambda name, arguments: replied * 100, {"ask": []}).status == "ok"
    halves = [(marker[:20], marker[20:]) for marker in (printed, replied)]  # whole only where a job left it

    def maps_of(name: str, arguments: dict) -> str:
        """The job's memory map as the host sees it, where the job's pid is a host pid."""
        return Path(f"/proc/{int(arguments['pid'])}/maps").read_text() if without_namespaces(sandbox) else ""

    scan = f"""import os
classes, c_char = [object], None
while classes and c_char is None:
    for sub in type.__subclasses__(classes.pop()):
        classes.append(sub)
        if sub.__name__ == 'c_char' and hasattr(sub, 'from_address'):
            c_char = sub
regions, found = 0, []
try:
    with open('/proc/self/maps') as maps:
        spans = [line.split()[:2] for line in maps]
except OSError:  # a container's hidden /proc, or the host's that Landlock keeps from a job
    spans = [line.split()[:2] for line in maps_of(os.getpid()).splitlines()]
for span, perms in spans:
    low, high = (int(x, 16) for x in span.split('-'))
    if perms.startswith('rw') and high - low <= 1 << 24:
        regions += 1
        data = (c_char * (high - low)).from_address(low).raw
        for head, tail in {halves!r}:
            at = data.find(head.encode())
            while at != -1:
                if data[at + len(head):at + len(head) + len(tail)] == tail.encode():
                    found.append(head)
                at = data.find(head.encode(), at + 1)
print('regions', regions, 'found', found)
"""
    for _ in range(3 * sandbox.size):  # every worker, more than once: each job's process is made ahead
        result = sandbox.run_code(scan, maps_of, {"maps_of": ["pid"]}, limits=replace(LIMITS, memory_mb=256))
        assert result.status == "ok" and result.output.endswith("found []\n"), result
        assert sandbox_backend(sandbox) == "docker" or not result.output.startswith("regions 0 ")



def connecting(sandbox: Sandbox, address: str) -> str:
    """The status of a job that connects to the host's Unix socket listening at ``address``: ``ok``
    if it got through, ``failed`` if it was refused."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    if not address.startswith("\0"):
        os.chmod(address, 0o777)  # anyone may connect
    server.listen(1)
    try:
        source = UNGUARD + ("import socket\ndef verify(s, a):\n    try:\n"
                            f"        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect({address!r})\n"
                            "    except OSError:\n        return False\n    return True\n")
        return sandbox.verify(source, {}, "").status
    finally:
        server.close()
        if not address.startswith("\0"):
            os.unlink(address)


def test_a_job_cannot_reach_an_abstract_socket_of_the_host(sandbox: Sandbox) -> None:
    """Abstract Unix sockets belong to a network namespace, not to the files a mount namespace hides."""
    assert connecting(sandbox, f"\0sandbox-test-{uuid.uuid4().hex}") == "failed"


def test_a_job_cannot_reach_a_unix_socket_of_the_host_by_its_path(sandbox: Sandbox) -> None:
    """A socket anyone may connect to (a session's D-Bus, docker's) is a way out: where jobs see the
    host's files, no file rule stops a connection, so a job may make no socket at all."""
    assert connecting(sandbox, f"/tmp/sandbox-test-{uuid.uuid4().hex}.sock") == "failed"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the raw clone call's number is x86_64's")
def test_a_job_cannot_clone_itself_into_a_new_user_namespace(sandbox: Sandbox) -> None:
    source = UNGUARD + ("import ctypes, os\ndef verify(s, a):\n    libc = ctypes.CDLL(None, use_errno=True)\n"
                        "    pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)\n    if pid == 0:\n"
                        "        os._exit(0)\n    return pid == -1 and ctypes.get_errno() == 1\n")  # EPERM
    assert sandbox.verify(source, {}, "").status == "ok"


LISTEN = UNGUARD + """import os, socket, sys, time
def verify(state, answer):
    if sys.modules['posix'].fork() == 0:
        os.closerange(3, 64)  # not the job's channel: the job's verdict would wait for this process to end
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind('\\0{name}')
        server.listen(8)
        while True:
            server.accept()
    time.sleep(0.05)
    return False
"""
CONNECT = UNGUARD + """import socket
def verify(state, answer):
    try:
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect('\\0{name}')
    except OSError:
        return False
    return True
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_of_a_job_runs_when_the_next_job_starts(backend: str) -> None:
    """One worker, so the next job runs where the last one did, straight after it: a process the last
    job left listening (on an abstract socket, which the worker's network namespace shares) is gone."""
    with open_sandbox(backend, workers=1, limits=LIMITS) as sandbox:
        reached = []
        for attempt in range(10):
            name = f"{MARK}-{attempt}"
            assert sandbox.verify(LISTEN.format(name=name), {}, "").status == "failed"
            reached.append(sandbox.verify(CONNECT.format(name=name), {}, "").status)
    assert reached == ["failed"] * 10


def test_attack_suite_is_big_enough() -> None:
    assert len(ATTACKS) >= 25
