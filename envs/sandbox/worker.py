"""The sandbox worker: a long-lived process that runs each untrusted job in a fresh world of its own.

This file runs *inside* the sandbox (as an unprivileged user, in its own network, mount, IPC and PID
namespaces, or in a Docker container), under whatever ``python3`` is there, so it uses the standard
library alone and imports nothing from the project. The parent sends it the source with ``-c``.

Protocol, on the worker's stdin/stdout: each message is a 4-byte big-endian length and a JSON body.
The parent sends a job; while the job runs the worker may send requests (``{"request": …}``: a tool
call, or a record of a big state table) and waits for each reply; it ends with ``{"result": …}``.

Life of a job. Ahead of the job (while the previous job runs, so that the work overlaps it), the
worker's zygote (:class:`Zygote`: a copy of the worker taken before its first job, which never holds
anything of a job) makes the job's process with ``clone()``, as a child of the worker: PID 1 of new
user, mount, PID and IPC namespaces.
That process joins the job's control group (where the local backend made one), maps its user,
mounts a fresh, size-capped tmpfs on ``/tmp`` and a ``/proc`` of its own (or hides the worker's,
where a container forbids a new one), gives up every capability, installs the seccomp filter, and
waits for the worker's go. Only then does it read the job from the
worker's stdin, close that descriptor and run untrusted code. It tells the worker ``started``
(which starts the wall clock) and at the end its verdict, over a SOCK_SEQPACKET pair, so a process
killed mid-message can never desynchronise the parent's stream. A verdict is one byte, ``1`` or
``0``, chosen by ``value is True``: a verifier's result counts only when it is a real ``bool``.
After the result is sent the worker kills the job's PID 1, and the kernel ends every process of its
namespace with it (the worker reaps it, so all are gone, before the next job's go); ``/tmp`` goes
with the job's mount namespace. Nothing is wiped, so nothing a job leaves (a tree past ``PATH_MAX``,
a full ``/tmp``) can reach the next job or break the worker.

What protects the host and the next job is the operating system: the namespaces or container, the
unprivileged user, the resource limits (``RLIMIT_NPROC`` is counted in the job's own user namespace,
so one job's processes never use up another's), the control group where there is one, the seccomp
filter (no new socket, tracing, namespaces, mounts, keyrings, System V IPC, file watches or file
locks: no word passes through the files jobs share with the host and each other), a non-dumpable
worker, and a job that cannot name the worker (another PID namespace) to signal or trace it. The
module and ``os`` blocks below are only a speed bump that gives naive code a clear error
(``sys.modules['posix']`` and ``importlib`` get around them).

Where user namespaces are refused, or grant no right to build a world in them (the local backend's
last fallback), jobs run in plain children of the worker, sharing its ``/tmp``, made by the zygote
as elsewhere, so that none finds what the worker freed of earlier jobs (by the worker itself only
where it has no seccomp filter to keep a job in its process group); the worker's greeting says so.
Killing the job's process group then ends every process of the job: its seccomp filter refuses
``setsid`` and ``setpgid``, the ways out of that group, and any signal but to that group or to
itself, and limits, priorities or scheduling set on any process but itself
(:func:`others_program`): the host's processes are in its PID namespace. The worker is its
orphans' subreaper, and reaps every process of the group before the next job starts: left to the
host's init, they could linger as zombies that count against the next job's limits. Its
RLIMIT_NPROC counts every process of its user, so the worker tells it at its go how many its user
runs (:meth:`Setting.user_tasks`), and its limit is its own share above them.

Where jobs see the host's files (the parent passes ``SANDBOX_READABLE`` and ``SANDBOX_WRITABLE``),
each job's process confines itself with Landlock, if the kernel has it, before any untrusted code:
it may read and execute what lies under the readable paths (and the worker's ``sys.path``), write
the writable ones, and, where it has a world of its own, read its ``/proc`` and use its ``/tmp``;
nothing else. From Landlock's ABI 6 it may neither signal nor reach by abstract socket a process
outside it: without a PID namespace, the host's. Where the worker has a mount namespace of its own
(``SANDBOX_READ_ONLY_VIEW``), it first makes every mount in it read-only, so that a job's reads leave
no access time on the host's files for a later job to read; where it has none (limits only), they do.
"""

import sys

if sys.path and sys.path[0] == "":  # started with -c: no module is imported from the working directory
    del sys.path[0]

import builtins  # noqa: E402 (the imports come after that line)
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402 (os has imported it)
import struct  # noqa: E402
import time  # noqa: E402

# Only these imports: every module makes each fork dearer (``tempfile``, through ``random``, even
# runs code in every child), so tracebacks are handled by hand below.

MAX_MESSAGE = 65536  # one child-to-worker message (a request or a result) on the SEQPACKET pair
MAX_TEXT = 4000  # longest message or kind a result may carry
MAX_DEPTH = 64  # deepest nesting of a request passed on: the parent's JSON parser nests on its own call stack
VERDICTS = {b"\x01": "ok", b"\x00": "failed"}  # how a job that ran to its end says so: one byte
ERROR_STATUSES = ("error", "timeout")  # what a job may say in JSON; ok/failed only as a verdict byte
BLOCKED_MODULES = frozenset({
    "ctypes", "_ctypes", "cffi", "subprocess", "_posixsubprocess", "multiprocessing",
    "_multiprocessing", "pty", "socket", "_socket", "ssl", "_ssl", "mmap", "resource",
})
BLOCKED_OS_FUNCTIONS = (
    "system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execl", "execle",
    "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle",
    "posix_spawn", "posix_spawnp", "setuid", "setgid", "setsid", "setpgid", "chroot", "putenv",
)
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER = 4, 38, 22, 36
REAP_SECONDS = 2.0  # longest wait for a job's last processes to end, where they are not in a namespace of its own
SECCOMP_MODE_FILTER = 2
MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1  # on every architecture
CAPABILITY_VERSION_3 = 0x20080522
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID = 0x20000, 0x8000000, 0x10000000, 0x20000000
CLONE_PARENT = 0x8000
JOB_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC
CLONE_NEW_FLAGS = 0x7E020080  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
# Audit architecture of each machine, and its column in the system call tables below.
ARCHITECTURES = {"x86_64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1)}
# System calls a job never needs and that open ways around the namespaces or out of one job into
# the next: tracing, namespaces and mounts, the kernel keyrings and System V / POSIX IPC, BPF, perf,
# userfaultfd, io_uring, modules, leaving the job's process group (where jobs get no namespaces,
# killing that group is what ends every process of a job), and watching or locking the files jobs
# share with the host and each other (inotify and fanotify see who opens them; flock, and fcntl's
# locks below, pass word between jobs that run at once). Name: (x86_64 number, aarch64 number).
REFUSED_SYSCALLS = {
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "open_tree": (428, 428), "move_mount": (429, 429),
    "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442), "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
    "shmget": (29, 194), "semget": (64, 190), "msgget": (68, 186), "mq_open": (240, 180),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "acct": (163, 89), "swapon": (167, 224),
    "reboot": (169, 142), "name_to_handle_at": (303, 264), "open_by_handle_at": (304, 265),
    "setsid": (112, 157), "setpgid": (109, 154),
    "inotify_init1": (294, 26), "inotify_add_watch": (254, 27), "fanotify_init": (300, 262),
    "fanotify_mark": (301, 263), "flock": (73, 32),
}
# Each job's process builds its world with these (and clone into new namespaces), so a container's
# own filter must allow them; the untrusted code never gets them.
WORLD_SYSCALLS = ("mount", "setsid", "setpgid")
# socket (allowed for AF_UNIX only), clone (allowed without CLONE_NEW*), clone3 (ENOSYS, so that the
# C library falls back to the checked clone).
SOCKET_CLONE_CLONE3 = {"x86_64": (41, 56, 435), "aarch64": (198, 220, 435)}
# fcntl, refused its commands that take, test or drop a lock on a file: F_GETLK, F_SETLK, F_SETLKW and
# their open-file-description forms (x86_64 number, aarch64 number).
FCNTL = (72, 25)
LOCK_COMMANDS = (5, 6, 7, 36, 37, 38)

# Where jobs share the host's PID namespace, the system calls that act on another process of the
# same user: (x86_64 number, aarch64 number). Those whose first argument names the process, 0 for
# the caller (kill: its process group); those that take the caller's own pid alone; those that take
# a kind of target and then a target (setpriority's PRIO_PROCESS, ioprio_set's IOPRIO_WHO_PROCESS);
# and those refused outright.
TARGET_FIRST = {"kill": (62, 129), "prlimit64": (302, 261), "sched_setparam": (142, 118),
                "sched_setscheduler": (144, 119), "sched_setaffinity": (203, 122), "sched_setattr": (314, 274),
                "migrate_pages": (256, 238), "move_pages": (279, 239), "get_robust_list": (274, 100)}
ITSELF_FIRST = {"tgkill": (234, 131), "rt_sigqueueinfo": (129, 138), "rt_tgsigqueueinfo": (297, 240)}
KIND_THEN_TARGET = {"setpriority": ((141, 140), 0), "ioprio_set": ((251, 30), 1)}
OTHERS_REFUSED = {"tkill": (200, 130), "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "kcmp": (312, 272)}

# Landlock (Linux 5.13+): where jobs see the host's files, what of them they may read and write.
LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446  # on every architecture
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR, FS_TRUNCATE, FS_IOCTL_DEV = 1, 2, 4, 8, 1 << 14, 1 << 15
FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
FS_OF_A_FILE = FS_READ_FILE | FS_WRITE_FILE | FS_EXECUTE | FS_TRUNCATE | FS_IOCTL_DEV  # all a rule on a file may hold
FS_HANDLED = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}  # by ABI; 5 on: (1 << 16) - 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2  # ABI 6 on: nothing outside the job's own processes

WARM_UP = "def verify(state, answer):\n    return state.get('x') == [1, 2] and 'a' in answer\n"

# The worker's own references, taken before the ``os`` functions are blocked for jobs.
_fork, _kill, _killpg, _setsid = os.fork, os.kill, os.killpg, os.setsid


# ---------------------------------------------------------------- framing on the parent channel

def read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd):
    """The body of the next frame on ``fd``, or None at end of stream."""
    head = read_exact(fd, 4)
    return None if head is None else read_exact(fd, struct.unpack(">I", head)[0])


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def write_message(fd, message):
    body = json.dumps(message).encode()
    write_all(fd, struct.pack(">I", len(body)) + body)


# ---------------------------------------------------------------- the kernel calls Python lacks

def seccomp_program(machine, stage):
    """A classic-BPF seccomp filter, in two stages: ``worker`` (installed once, so every job
    inherits it: EPERM for REFUSED_SYSCALLS but the WORLD_SYSCALLS, for network sockets and for
    fcntl's LOCK_COMMANDS, ENOSYS for clone3 so that the C library falls back to clone, which the
    next stage can check) and
    ``job`` (added by each job's process once its world is built: EPERM for the WORLD_SYSCALLS, for
    any new socket and for clone into new namespaces). Split so that a job attaches a few instructions
    rather than the whole list. None for an architecture without a table."""
    if machine not in ARCHITECTURES:
        return None
    audit_arch, column = ARCHITECTURES[machine]
    socket_nr, clone_nr, clone3_nr = SOCKET_CLONE_CLONE3[machine]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    program = [(ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    if machine == "x86_64":
        program += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]  # the x32 ABI's numbers
    worker = stage == "worker"
    for name, numbers in REFUSED_SYSCALLS.items():
        if (name in WORLD_SYSCALLS) != worker:
            program += [(jeq, 0, 1, numbers[column]), (ret, 0, 0, eperm)]
    if worker:
        locks = len(LOCK_COMMANDS)
        program += [
            (jeq, 0, 1, clone3_nr), (ret, 0, 0, enosys),
            (jeq, 0, 4, socket_nr), (ld, 0, 0, 16), (jeq, 0, 1, socket.AF_UNIX), (ret, 0, 0, allow), (ret, 0, 0, eperm),
            (jeq, 0, locks + 3, FCNTL[column]), (ld, 0, 0, 24),
            *((jeq, locks - i, 0, command) for i, command in enumerate(LOCK_COMMANDS)), (ret, 0, 0, allow),
            (ret, 0, 0, eperm),
        ]
    else:  # a job has its sockets from the worker: a new one could only reach a socket on the host's files
        program += [(jeq, 0, 1, socket_nr), (ret, 0, 0, eperm),
                    (jeq, 0, 3, clone_nr), (ld, 0, 0, 16), (jset, 0, 1, CLONE_NEW_FLAGS), (ret, 0, 0, eperm)]
    program.append((ret, 0, 0, allow))
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


def others_program(machine, pid):
    """A seccomp filter for a job's process ``pid`` where jobs share the host's PID namespace (they
    get no namespaces): it may signal its own process group and itself, and set limits, priorities,
    scheduling and memory placement of itself alone; of no other process of the user (Landlock's
    scope holds signals from ABI 6, and nothing else of these)."""
    audit_arch, column = ARCHITECTURES[machine]
    ld, jeq, ret = 0x20, 0x15, 0x06
    allow, eperm = 0x7FFF0000, 0x00050000 | 1
    first, second = 16, 24  # offsets of the arguments' low words in ``struct seccomp_data``

    def one_of(offset, values):
        """Allow when the argument at ``offset`` is one of ``values``; else EPERM."""
        return [(ld, 0, 0, offset), *((jeq, len(values) - i, 0, v) for i, v in enumerate(values)),
                (ret, 0, 0, eperm), (ret, 0, 0, allow)]

    program = [(ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    for numbers, check in [*((n, one_of(first, [0, pid])) for n in TARGET_FIRST.values()),
                           *((n, one_of(first, [pid])) for n in ITSELF_FIRST.values()),
                           *((n, [(ld, 0, 0, first), (jeq, 0, 3, kind), *one_of(second, [0, pid])])  # 3: EPERM
                             for n, kind in KIND_THEN_TARGET.values()),
                           *((n, [(ret, 0, 0, eperm)]) for n in OTHERS_REFUSED.values())]:
        program += [(jeq, 0, len(check), numbers[column]), *check]
    program.append((ret, 0, 0, allow))
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


class Kernel:
    """prctl, clone, mount and capset through ``ctypes``, which the worker takes before it is
    blocked for jobs (a job that digs these out finds them refused by its seccomp filter). What a
    job's process passes them is made here, once: every object the process touches after clone()
    costs it a copied page."""

    def __init__(self, ctypes):
        self.ctypes = ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl, self._mount, self._capset, self._syscall = libc.prctl, libc.mount, libc.capset, libc.syscall
        self._syscall.argtypes, self._syscall.restype = [ctypes.c_long] * 6, ctypes.c_long
        self._clone_nr = SOCKET_CLONE_CLONE3[os.uname().machine][1]
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        self._mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        self._capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        header = ctypes.create_string_buffer(struct.pack("=Ii", CAPABILITY_VERSION_3, 0))
        empty = ctypes.create_string_buffer(24)  # effective, permitted, inheritable: all empty
        self._buffers = [header, empty]
        self._no_capabilities = ctypes.addressof(header), ctypes.addressof(empty)
        self.filters = {}  # each seccomp stage's ``struct sock_fprog``, where this machine has a table
        for stage in ("worker", "job"):
            program = seccomp_program(os.uname().machine, stage)
            if program is not None:
                self.filters[stage] = self._fprog(program)

    def _fprog(self, program):
        """The address of a ``struct sock_fprog`` for ``program``, its memory held."""
        code = self.ctypes.create_string_buffer(program)
        fprog = self.ctypes.create_string_buffer(struct.pack("=HxxxxxxQ", len(program) // 8,
                                                             self.ctypes.addressof(code)))
        self._buffers += [code, fprog]
        return self.ctypes.addressof(fprog)

    def _check(self, status, what):
        if status != 0:
            errno = self.ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    def prctl(self, option, value=0, pointer=None):
        self._check(self._prctl(option, value, pointer, 0, 0), f"prctl({option})")

    def clone(self, flags):
        """fork() into new namespaces: the raw system call with no new stack, so the child runs on
        from here on a copy of this process, as after fork(). One process per job instead of a
        fork, an unshare() and a second fork (a PID namespace takes only children), at half the
        cost. Safe here because the worker has one thread: no lock can be held across it, and the
        C library's and Python's fork handlers have nothing to reset. Returns 0 in the child."""
        pid = self._syscall(self._clone_nr, flags | signal.SIGCHLD, 0, 0, 0, 0)
        if pid < 0:
            errno = self.ctypes.get_errno()
            raise OSError(errno, f"clone: {os.strerror(errno)}")
        return pid

    def mount(self, source, target, fstype, flags, data=None):
        self._check(self._mount(source, target, fstype, flags, data), "mount")

    def read_only_view(self):
        """Make every mount this worker sees read-only but ``/proc`` (where each job writes its user
        namespace's maps), in its own mount namespace: the host's mounts stay as they are. Reading a
        file through a read-only mount changes no access time, which a later job would read as a message."""
        for path, attr_set, attr_clr, flags in ((b"/", MOUNT_ATTR_RDONLY, 0, AT_RECURSIVE),
                                                (b"/proc", 0, MOUNT_ATTR_RDONLY, 0)):
            target = self.ctypes.create_string_buffer(path)
            attr = self.ctypes.create_string_buffer(struct.pack("=QQQQ", attr_set, attr_clr, 0, 0), 32)  # mount_attr
            self._check(self._syscall(MOUNT_SETATTR, AT_FDCWD, self.ctypes.addressof(target), flags,
                                      self.ctypes.addressof(attr), 32), "mount_setattr")

    def drop_capabilities(self):
        """Empty the effective, permitted and inheritable sets (the job's uid in its namespace is
        not 0, so no later exec brings any back)."""
        self._check(self._capset(*self._no_capabilities), "capset")

    def landlock_abi(self):
        """This kernel's Landlock ABI version; 0 where it has none or has it off."""
        return max(0, self._syscall(LANDLOCK_CREATE_RULESET, 0, 0, 1, 0, 0))  # LANDLOCK_CREATE_RULESET_VERSION

    def confine(self, abi, readable, writable):
        """Confine this process and every process it makes with Landlock: the ``readable`` paths (and
        all under them) to read and execute, the ``writable`` ones to anything, the rest of the
        filesystem to nothing; from ABI 6, no signal and no abstract socket to a process outside.
        A path that does not exist is skipped."""
        handled = FS_HANDLED.get(abi, (1 << 16) - 1)
        attr = (struct.pack("=QQQ", handled, 0, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6
                else struct.pack("=Q", handled))
        attr = self.ctypes.create_string_buffer(attr, len(attr))
        ruleset = self._syscall(LANDLOCK_CREATE_RULESET, self.ctypes.addressof(attr), len(attr), 0, 0, 0)
        if ruleset < 0:
            self._check(ruleset, "landlock_create_ruleset")
        try:
            for paths, rights in ((readable, FS_READ), (writable, handled)):
                for path in paths:
                    try:
                        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                    except OSError:
                        continue
                    try:
                        allowed = rights & handled & (~0 if stat.S_ISDIR(os.fstat(fd).st_mode) else FS_OF_A_FILE)
                        rule = self.ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)  # packed
                        added = self._syscall(LANDLOCK_ADD_RULE, ruleset, 1, self.ctypes.addressof(rule), 0, 0)
                        self._check(added, "landlock_add_rule")
                    finally:
                        os.close(fd)
            self.prctl(PR_SET_NO_NEW_PRIVS, 1)
            self._check(self._syscall(LANDLOCK_RESTRICT_SELF, ruleset, 0, 0, 0, 0), "landlock_restrict_self")
        finally:
            os.close(ruleset)

    def install_filter(self, stage):
        if stage == "worker":
            self.prctl(PR_SET_NO_NEW_PRIVS, 1)  # jobs inherit it
        self.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self.filters[stage])

    def install_others_filter(self):
        """Add :func:`others_program` for this process (built here: it names the process)."""
        self.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._fprog(others_program(os.uname().machine, os.getpid())))


def _load_kernel():
    try:
        import ctypes
        return Kernel(ctypes)
    except (ImportError, OSError, AttributeError, KeyError):  # KeyError: an architecture without tables
        return None


def _blocked(name):
    def refuse(*args, **kwargs):
        raise PermissionError(f"os.{name} is not allowed in the sandbox")
    return refuse


def _narrow():
    """Take the dangerous parts of the standard library out of naive code's reach. Done once in the
    worker, before any fork, so that children inherit it without paying for it."""
    for name in BLOCKED_OS_FUNCTIONS:
        if hasattr(os, name):
            setattr(os, name, _blocked(name))
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name.split(".")[0] in BLOCKED_MODULES:
            raise ImportError(f"module {name!r} is blocked in the sandbox")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import
    for name in BLOCKED_MODULES:
        sys.modules.pop(name, None)


# ---------------------------------------------------------------- each job's world

class Setting:
    """How this worker builds its jobs' worlds, decided once at start-up. ``cgroup_slots``: for
    each of the worker's two control groups (one job's, and the next one's, built ahead), a
    ``cgroup.procs`` descriptor per hierarchy. ``view``: where jobs see the host's files, the paths of
    them they may read and those they may write, for Landlock to hold them to (None elsewhere)."""

    def __init__(self, kernel, cgroup_slots, tmp_mb, view=None):
        self.kernel = kernel
        self.cgroup_slots = cgroup_slots
        self.seccomp = kernel is not None and len(kernel.filters) == 2
        # What a job's process writes and mounts, made here once (see Kernel).
        uid, gid = os.geteuid(), os.getegid()
        self._maps = ((b"/proc/self/setgroups", b"deny"), (b"/proc/self/uid_map", b"%d %d 1" % (uid, uid)),
                      (b"/proc/self/gid_map", b"%d %d 1" % (gid, gid)))
        self.view = view
        self.landlock = kernel.landlock_abi() if kernel is not None and view is not None else 0  # the probe tries it
        self.namespaces, joins, own_proc, confines = self._probe()
        if not confines:
            self.landlock = 0
        self.proc = "own" if own_proc else "hidden" if self.namespaces else "shared"
        # Where jobs share the worker's PID namespace, their orphans come to the worker (as PID 1, or as their
        # subreaper), which reaps them (Child.reap), not to the host's init, which may leave them as zombies
        # that hold the next job's process slots for a while.
        self.reaps_orphans = False
        if not self.namespaces and kernel is not None:
            try:
                if os.getpid() != 1:
                    kernel.prctl(PR_SET_CHILD_SUBREAPER, 1)
                self.reaps_orphans = True
            except OSError:
                pass
        self.cgroup = "none" if not cgroup_slots else "joined" if joins else "refused"
        if not joins:
            for fd in self.cgroup_fds():
                os.close(fd)
            self.cgroup_slots = []
        self.tmp_mb = tmp_mb
        self._tmp_options = b"size=%dm,mode=1777" % tmp_mb

    def cgroup_fds(self):
        return [fd for slot in self.cgroup_slots for fd in slot]

    def _probe(self):
        """Whether a child may have the job namespaces and build its world in them (map its user
        and mount a ``/tmp``: a kernel may grant the namespaces but no rights in them, as Ubuntu's
        AppArmor does), join both control groups, and mount a /proc of its own (a container's
        masked /proc forbids that)."""
        try:
            pid = self.kernel.clone(JOB_NAMESPACES) if self.kernel else None
        except OSError:
            pid = None
        namespaces = pid is not None
        if pid is None:
            pid = _fork()
        if pid == 0:
            code = 0
            try:
                for fd in self.cgroup_fds():
                    os.write(fd, b"0")
            except OSError:
                code |= 1
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
            try:
                if namespaces:
                    for path, text in self._maps:
                        _write_file(path, text)
                    self.kernel.mount(b"tmpfs", b"/tmp", b"tmpfs", flags, b"size=1m")
            except OSError:
                code |= 4
            try:
                if namespaces and not code & 4:
                    self.kernel.mount(b"proc", b"/proc", b"proc", flags)
            except OSError:
                code |= 2
            try:
                if self.landlock:
                    self.confine(own_world=namespaces and not code & 4)
            except OSError:
                code |= 8
            os._exit(code)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        namespaces = namespaces and not code & 4
        return namespaces, not code & 1, namespaces and not code & 2, not code & 8

    def confine(self, own_world):
        """Hold a job's process to :attr:`view` with Landlock; where it has a world of its own, also to
        its ``/tmp`` and its ``/proc`` (rules on what it mounted there: a rule on the folder beneath
        would not reach into a mount)."""
        readable, writable = self.view
        if own_world:
            readable, writable = [*readable, "/proc"], [*writable, "/tmp"]
        self.kernel.confine(self.landlock, readable, writable)

    def user_tasks(self):
        """Where jobs share the host's user, the processes and threads it runs now (as
        RLIMIT_NPROC counts them: every one of the user's, other jobs' and the trainer's too), so
        that a job's limit is its own share above them; 0 where a job's user namespace counts its
        own alone."""
        if self.namespaces:
            return 0
        uid, tasks = b"\nUid:\t%d\t" % os.getuid(), 0
        try:
            names = os.listdir("/proc")
        except OSError:  # no /proc to count in: the job's own share is its limit
            return 0
        for name in names:
            if not name.isdigit():
                continue
            try:  # its real user from status: /proc/<pid> itself is root's while a process is non-dumpable
                with open(f"/proc/{name}/status", "rb") as f:
                    status = f.read()
            except OSError:  # gone meanwhile
                continue
            if uid in status:
                at = status.index(b"\nThreads:") + 9
                tasks += int(status[at:status.index(b"\n", at)])
        return tasks

    def spawn(self, sibling=False):
        """A new job process: PID 1 of new user, mount, PID and IPC namespaces where jobs get
        them; returns its pid here, 0 in it. ``sibling``: a child of this process's parent."""
        flags = (JOB_NAMESPACES if self.namespaces else 0) | (CLONE_PARENT if sibling else 0)
        return self.kernel.clone(flags) if flags else _fork()

    def furnish(self, slot):
        """In a new job process, before any untrusted code: join the control group of ``slot``,
        map its user, mount its own /tmp and /proc, then give up every capability and install the
        seccomp filter."""
        kernel = self.kernel
        if kernel is not None:
            # Its /proc/self files are root's while it is non-dumpable (as the worker is); the job
            # has no way to name the worker to take advantage.
            kernel.prctl(PR_SET_DUMPABLE, 1)
        _write_file(b"/proc/self/oom_score_adj", b"1000")  # out of memory, jobs go first, never the worker
        for fd in self.cgroup_slots[slot] if self.cgroup_slots else ():
            os.write(fd, b"0")
        for fd in self.cgroup_fds():
            os.close(fd)
        _setsid()
        if self.namespaces:
            for path, text in self._maps:
                _write_file(path, text)
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
            kernel.mount(b"tmpfs", b"/tmp", b"tmpfs", flags, self._tmp_options)
            if self.proc == "own":
                kernel.mount(b"proc", b"/proc", b"proc", flags)
            else:  # a container's masked /proc forbids another: hide the worker's
                kernel.mount(b"tmpfs", b"/proc", b"tmpfs", flags | MS_RDONLY, b"size=4k,mode=555")
            kernel.drop_capabilities()
        if self.landlock:
            self.confine(own_world=self.namespaces)
        if self.seccomp:
            kernel.install_filter("job")
            if not self.namespaces:
                kernel.install_others_filter()


def _keep_only(fds):
    """Close every descriptor above stderr but ``fds``."""
    start = 3
    for fd in sorted(fds):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))


def _write_file(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- inside the job's process

def _error(kind, message):
    return {"status": "error", "kind": kind, "message": message}


def _limit(limits, user_tasks):
    """The job's resource limits (soft = hard, so the code cannot raise them again). ``user_tasks``:
    the processes and threads its user ran as the job started, where RLIMIT_NPROC counts them all."""
    mb = 1024 * 1024
    cpu = max(1, int(limits["cpu_seconds"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ceiling = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    processes = limits["processes"] + user_tasks
    resource.setrlimit(resource.RLIMIT_NPROC, (processes if ceiling < 0 else min(processes, ceiling),) * 2)


class Remote:
    """The child's end of its link to the worker: a request out, a reply back."""

    def __init__(self, sock, replies):
        self.sock, self.replies = sock, replies

    def ask(self, request):
        message = json.dumps({"request": request}).encode()
        if len(message) > MAX_MESSAGE:
            raise ValueError("request too large for the sandbox")
        self.sock.send(message)
        body = read_frame(self.replies)
        if body is None:
            raise RuntimeError("the sandbox's parent went away")
        reply = json.loads(body)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["value"]


class RemoteTable:
    """A big state table kept by the parent; records are fetched when the verifier reads them."""

    def __init__(self, remote, name):
        self._remote, self._name, self._cache, self._keys = remote, name, {}, None

    def __getitem__(self, key):
        if key not in self._cache:
            self._cache[key] = self._remote.ask({"op": "get", "table": self._name, "key": key})
        if self._cache[key] is None:
            raise KeyError(key)
        return self._cache[key]

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key):
        return self.get(key) is not None

    def keys(self):
        if self._keys is None:
            self._keys = self._remote.ask({"op": "keys", "table": self._name})
        return list(self._keys)

    __iter__ = lambda self: iter(self.keys())
    __len__ = lambda self: len(self.keys())

    def values(self):
        return [self[k] for k in self.keys()]

    def items(self):
        return [(k, self[k]) for k in self.keys()]


def _tool_function(remote, name, params):
    def call(*args, **kwargs):
        if len(args) > len(params):
            raise TypeError(f"{name}() takes {len(params)} positional arguments, got {len(args)}")
        for param in params[:len(args)]:
            if param in kwargs:
                raise TypeError(f"{name}() got multiple values for argument '{param}'")
        kwargs.update(zip(params, args))
        return remote.ask({"op": "tool", "name": name, "arguments": kwargs})
    call.__name__ = name
    return call


def _describe(exc):
    """``Type: message (line N)``, N the last line of the job's own code in the traceback."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<sandbox>":
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f" (line {line})" if line is not None else ""
    return f"{type(exc).__name__}: {str(exc)[:MAX_TEXT // 2]}{where}"


def _run_code(code, namespace, after):
    """Run the job's code, then ``after()``; an exception or a limit becomes an error result."""
    try:
        exec(code, namespace)
        return after()
    except MemoryError:
        return _error("memory", "MemoryError: the memory limit was reached")
    except BaseException as exc:  # the code's own failure is a result, not a crash
        return _error("exception", _describe(exc))


def run_child(job, remote, user_tasks):
    """Run one job: its verdict byte when it ran to the end, else an error dict (never raises)."""
    _limit(job["limits"], user_tasks)
    namespace = {"__name__": "__sandbox__"}
    try:
        code = compile(job["source"], "<sandbox>", "exec")
    except SyntaxError as exc:
        return _error("syntax", f"SyntaxError: {exc.msg} (line {exc.lineno})")
    except (ValueError, RecursionError, MemoryError) as exc:  # a null byte; nesting past what the compiler holds
        why = str(exc)[:200]
        return _error("syntax", f"{type(exc).__name__}: the code cannot be compiled" + (f" ({why})" if why else ""))
    if job["kind"] == "verify":
        helpers = job.get("helpers", {})
        try:  # the readers every verifier is given (the parent's envs/sandbox/verifier_helpers.py)
            exec(HELPERS, namespace)
        except BaseException as exc:
            return _error("exception", f"the verifier helpers failed: {_describe(exc)}")
        namespace["state_hash"] = lambda: helpers.get("state_hash")

        def call_verify():
            verify = namespace.get("verify")
            if not callable(verify):
                return _error("syntax", "the source defines no function verify(state, answer)")
            state = dict(job["state"])
            for name in job.get("tables", []):
                state[name] = RemoteTable(remote, name)
            value = verify(state, job["answer"])
            # Identity with the two bool objects, i.e. ``type(value) is bool``; unlike a call to
            # ``type`` or ``isinstance``, no verifier can rebind ``True`` and ``False``.
            if value is True:
                return b"\x01"
            if value is False:
                return b"\x00"
            return _error("non_bool", f"verify() returned {type(value).__name__} {str(value)[:80]!r}; "
                                      "it must return True or False")

        return _run_code(code, namespace, call_verify)
    for name, params in job.get("tools", {}).items():
        namespace[name] = _tool_function(remote, name, params)
    return _run_code(code, namespace, lambda: b"\x01")


def child_main(inp, sock, replies, output):
    """The job's process, its world furnished: set up its output, read the job and run it."""
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    os.chdir("/tmp")
    gc.disable()  # no collector passes dirtying pages the child shares with the worker
    # Touch the compiler's memory now, while waiting: after a fork its first use pays page faults.
    exec(compile(WARM_UP, "<warm-up>", "exec"), {})
    go = os.read(replies, 5)  # the worker's go: the next job on stdin is this process's
    if go[:1] != b"g" or len(go) != 5:
        return
    body = read_frame(inp)
    os.close(inp)  # before any untrusted code: the parent's stream is the worker's alone
    if body is None:
        sock.send(b'{"eof": true}')
        return
    job = json.loads(body)
    limits = job["limits"]
    sock.send(json.dumps({"started": [limits["wall_seconds"], limits["output_bytes"], limits["cpu_seconds"]]}).encode())
    try:
        result = run_child(job, Remote(sock, replies), struct.unpack("=I", go[1:])[0])
    except BaseException as exc:
        result = _error("exception", f"sandbox: {type(exc).__name__}: {exc}")
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    if result == b"\x01" or result == b"\x00":
        sock.send(result)
        sock.close()  # the end the worker waits for, ahead of this process's own
        return
    try:
        message = json.dumps({"done": result})
    except BaseException:
        message = json.dumps({"done": _error("exception", "the result could not be serialised")})
    sock.send(message.encode()[:MAX_MESSAGE])


# ---------------------------------------------------------------- the worker's side of a job

BUILT = b'{"built": true}'  # a job process's first word: its world is ready
SIGNAL_REASONS = {
    signal.SIGXCPU: ("cpu", "the CPU time limit was reached"),
    signal.SIGKILL: ("killed", "the process was killed (memory or CPU limit)"),
    signal.SIGSEGV: ("crash", "the process crashed (segmentation fault)"),
}


class WorldBroken(RuntimeError):
    """A job's world could not be built: the worker cannot go on, and says why before it exits."""


def _timeout(wall):
    return {"status": "timeout", "kind": "timeout", "message": f"timed out after {wall:g} s of wall-clock time"}


def _checked(result):
    """An error a job reported, as the parent may see it: it comes from untrusted code, so only an
    error status and bounded text pass (success comes only as a verdict byte), the text as valid
    Unicode (a lone surrogate, as from ``raise ValueError("\\ud800")``, as its escape: UTF-8 has none)."""
    if (not isinstance(result, dict) or result.get("status") not in ERROR_STATUSES
            or not all(isinstance(result.get(key, ""), str) for key in ("kind", "message"))):
        return _error("protocol", "the code sent the sandbox a malformed result")
    return {"status": result["status"], "kind": _valid_text(result.get("kind", "")),
            "message": _valid_text(result.get("message", ""))}


def _valid_text(text):
    """``text`` cut to ``MAX_TEXT`` characters, with its lone surrogates escaped."""
    return text[:MAX_TEXT].encode("utf-8", "backslashreplace").decode("utf-8")[:MAX_TEXT]


def _depth(value):
    """How deeply ``value`` nests, counted without recursion (the code may nest its request past the limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _read_output(fd, cap):
    """The first ``cap`` characters the job printed (its output is a memory file that only the
    job's descriptors and the worker's reach)."""
    try:
        data = os.pread(fd, cap + 1, 0)
    except OSError:
        return ""
    text = data[:cap].decode("utf-8", "replace")
    return text + "\n[output truncated]" if len(data) > cap else text


def _write_all(fd, data, deadline):
    """Write a reply to a child that may have stopped reading (False: the deadline came first) or
    gone (its remaining messages, or its end, are still to be read)."""
    while data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([], [fd], [], left)[1]:
            return False
        try:
            data = data[os.write(fd, data[:65536]):]
        except BrokenPipeError:
            return True
    return True


def _job_process(inp, setting, slot, sibling=False):
    """A job's process, waiting for its go (:meth:`Child.go`): its pid, and the worker's ends of its
    channel, its replies pipe and its output file. ``sibling``: made by the zygote, for the worker."""
    output = os.memfd_create("job-output")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    replies_r, replies = os.pipe()
    pid = setting.spawn(sibling)
    if pid == 0:
        try:
            ours.close()
            # Nothing of the worker's may stay open here: not its own channels, and not those of
            # the job before this one, which is still running when this process is made.
            _keep_only([inp, theirs.fileno(), replies_r, output, *setting.cgroup_fds()])
            setting.furnish(slot)
            theirs.send(BUILT)
            child_main(inp, theirs, replies_r, output)
        except BaseException as exc:  # the world could not be built: the worker must hear why
            try:
                theirs.send(json.dumps({"broken": f"{type(exc).__name__}: {exc}"}).encode())
            except OSError:
                pass
        finally:
            os._exit(0)
    theirs.close()
    os.close(replies_r)
    return pid, ours, replies, output


class Zygote:
    """The process that makes jobs' processes: a copy of the worker taken before its first job,
    which never holds anything of a job. A job's process is a copy of the one that made it, and its
    code can read its own memory (``ctypes`` is only blocked: its classes are there to find). Made by
    the worker, which passes on every job's output, requests and replies, it would find earlier
    jobs' in what the worker has freed. Made with ``CLONE_PARENT``, a job's process is still the
    worker's child, which waits for it and counts its CPU time."""

    def __init__(self, inp, setting):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = _fork()
        if self.pid == 0:
            try:
                self.sock.close()
                _zygote_main(theirs, inp, setting)
            finally:
                os._exit(0)
        theirs.close()

    def make(self, slot):
        """A job's process in the control group of ``slot``, as :func:`_job_process` gives it."""
        self.sock.send(bytes([slot]))
        message, fds, _, _ = socket.recv_fds(self.sock, MAX_TEXT, 3)
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            raise WorldBroken(f"no job process was made: {message.decode(errors='replace') or 'the zygote ended'}")
        return int(message), socket.socket(fileno=fds[0]), fds[1], fds[2]


def _zygote_main(sock, inp, setting):
    """Make a job's process for each slot asked for, until the worker closes its end."""
    while request := sock.recv(1):
        try:
            pid, ours, replies, output = _job_process(inp, setting, request[0], sibling=True)
        except OSError as exc:
            sock.send(f"{type(exc).__name__}: {exc}".encode())
            continue
        socket.send_fds(sock, [str(pid).encode()], [ours.fileno(), replies, output])
        ours.close()
        os.close(replies)
        os.close(output)


class Child:
    """A job's process in its world, made ahead of its job: while the previous job runs where
    jobs get namespaces of their own (each then in the other of the worker's two control groups,
    ``slot`` 0 or 1), else right after it. It takes the job from the worker's stdin once told to
    (:meth:`go`)."""

    def __init__(self, inp, setting, slot, zygote=None):
        self.slot = slot
        self.ends_all = zygote is None and os.getpid() == 1  # see kill()
        self.reaps_orphans = setting.reaps_orphans
        if zygote is None:
            self.pid, self.sock, self.replies, self.output = _job_process(inp, setting, slot)
        else:
            self.pid, self.sock, self.replies, self.output = zygote.make(slot)
        os.set_blocking(self.replies, False)
        self.ready = False

    def built(self):
        """Wait until the job's world is built."""
        if not self.ready:
            message = self._next(None)
            if "built" not in message:
                raise WorldBroken(f"the job's world could not be built: {message.get('broken', message)}")
            self.ready = True

    def go(self, user_tasks):
        """Let the job process take the next job from the worker's stdin (it waits for this, so
        that a process made ahead never takes its predecessor's job), telling it ``user_tasks``
        (:meth:`Setting.user_tasks`)."""
        self.built()
        os.write(self.replies, b"g" + struct.pack("=I", user_tasks))

    def _next(self, deadline):
        """The child's next message; ``{}`` when it has closed its end, None at the deadline."""
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and (left <= 0 or not select.select([self.sock], [], [], left)[0]):
            return None
        data = self.sock.recv(MAX_MESSAGE)
        if not data:
            return {}
        if data in VERDICTS:
            return {"verdict": VERDICTS[data]}
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            return {"done": None}
        if not isinstance(message, dict) or "verdict" in message:  # a verdict comes only as its byte
            return {"done": None}
        return message

    def run(self, inp, out):
        """Serve the job the child reads; None when no job came (the parent closed stdin)."""
        message = self._next(None)
        if "eof" in message:
            return None
        if "started" not in message:
            ended = self._exit_status(time.monotonic() + 1.0, float("inf"), os.times())
            why = message.get("broken") or f"{message!r}, {ended and ended['message']}"
            raise WorldBroken(f"the job's process ended before its job came ({why})")
        wall, cap, cpu = message["started"]
        start, times = time.monotonic(), os.times()
        deadline = start + wall
        result = None
        while result is None:
            message = self._next(deadline)
            if message is None:
                result = _timeout(wall)
            elif not message:
                result = self._exit_status(deadline, cpu, times) or _timeout(wall)
            elif "verdict" in message:
                result = self._last_word(message["verdict"], deadline, wall)
            elif "done" in message:
                result = _checked(message["done"])
            elif "request" in message:
                if _depth(message["request"]) > MAX_DEPTH:
                    body = json.dumps({"error": "the request nests too deeply for the sandbox"}).encode()
                else:
                    write_message(out, {"request": message["request"]})
                    body = read_frame(inp)
                    if body is None:
                        sys.exit(0)
                if not _write_all(self.replies, struct.pack(">I", len(body)) + body, deadline):
                    result = _timeout(wall)
            else:
                result = _error("protocol", "the code sent the sandbox a malformed message")
        result["seconds"] = time.monotonic() - start
        result["output"] = _read_output(self.output, cap)
        return result

    def _last_word(self, verdict, deadline, wall):
        """The verdict, once the job's process has closed its channel with nothing after it. The
        byte is written by the job's own process, so code that writes one itself decides its verdict
        (as it could by returning it); what this keeps is the rule that an exception or a non-bool is
        an error, since the harness's own word then follows the forged byte."""
        after = self._next(deadline)
        if after is None:
            return _timeout(wall)
        if after:
            return _error("protocol", "the code sent the sandbox more than one result")
        return {"status": verdict}

    def _exit_status(self, deadline, cpu, times):
        """The child closed its channel without a word: wait (until the deadline; it may have
        closed the socket and lived on) for it to end, and say how; None if it is still running.
        ``times`` (``os.times()`` from before the job) tells the CPU time it used: as PID 1 of its
        namespace it ignores the soft limit's SIGXCPU, and the hard limit's SIGKILL ends it."""
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.001)
        self.pid = None  # reaped
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            now = os.times()
            if now.children_user + now.children_system - times.children_user - times.children_system >= cpu:
                sig = signal.SIGXCPU
            kind, why = SIGNAL_REASONS.get(sig, ("killed", f"killed by signal {sig}"))
            return _error(kind, why)
        return _error("exited", f"the code exited with status {os.WEXITSTATUS(status)}")

    def kill(self, everything):
        """SIGKILL the job: its PID 1, which takes the job's namespace along; ``everything`` (for
        jobs without namespaces): the job's process group, which its seccomp filter keeps every
        process of the job in, or, as PID 1 of the worker's namespace with no zygote to spare (and
        so no filter to hold the group), every other process in it."""
        if everything and self.ends_all:
            targets = [(_kill, -1)]
        else:
            targets = [(_kill, self.pid)] + ([(_killpg, self.pid)] if everything else [])
        for kill, target in targets:
            try:
                if target is not None:
                    kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def reap(self, everything):
        """Wait for the killed job to end, free its descriptors; ``everything`` (jobs without
        namespaces): also its orphans, where they come to the worker (:attr:`Setting.reaps_orphans`):
        where :meth:`kill` ended every process, until none is left; else until the job's process
        group is empty (an orphan is handed over once its parent has ended), killing any process of
        it still there."""
        if self.pid is not None:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        deadline = time.monotonic() + REAP_SECONDS
        while everything and self.reaps_orphans:
            try:
                if os.waitpid(-1 if self.ends_all else -self.pid, 0 if self.ends_all else os.WNOHANG)[0]:
                    continue
            except ChildProcessError:
                if self.ends_all:
                    break
                try:
                    _killpg(self.pid, signal.SIGKILL)  # any of the group not handed over yet
                except (ProcessLookupError, PermissionError):  # none of the group is left
                    break
            if time.monotonic() > deadline:  # one the kill cannot end (stuck in the kernel): leave it
                break
            time.sleep(0.001)
        self.sock.close()
        os.close(self.replies)
        os.close(self.output)


HELPERS = compile("", "<verifier helpers>", "exec")
"""The verifier helpers' code, sent by the parent when the worker starts (:func:`main`)."""
_last_words = 2  # the worker's own stderr (why it stopped); replaced by a private copy in main()


def _serve(child, inp, out):
    """Serve ``child``'s job and send its result; whether a job came. The result lives in this frame
    alone: the next job's process is forked from the worker, and code can walk up its stack to the
    worker's frames (``sys._getframe().f_back``), where a result kept in ``main`` would still be."""
    result = child.run(inp, out)
    if result is None:
        return False
    write_message(out, {"result": result})
    return True


def main():
    global _last_words
    inp, out, _last_words = os.dup(0), os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    environment = dict(os.environ)
    os.environ.clear()
    # Children print through these; fds 1 and 2 point at each child's own output file.
    sys.stdout = sys.stderr = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails with an error instead
    # No handler for SIGINT (Python's would raise KeyboardInterrupt): PID 1 of a namespace, the worker
    # then never gets an unhandled signal from inside it, and each job starts with the defaults.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    kernel = _load_kernel()
    cgroup_slots = [[int(fd) for fd in slot.split(",")] for slot in environment.get("SANDBOX_CGROUP_FDS", "").split(";")
                    if slot]
    if kernel is not None and environment.get("SANDBOX_READ_ONLY_VIEW"):
        try:
            kernel.read_only_view()
        except OSError:  # a kernel before 5.12: jobs' reads still mark the host's files' access times
            pass
    view = None
    if "SANDBOX_READABLE" in environment:  # the worker's python reads its standard library from sys.path
        view = ([*environment["SANDBOX_READABLE"].split(os.pathsep), *sys.path],
                environment.get("SANDBOX_WRITABLE", "").split(os.pathsep))
    setting = Setting(kernel, cgroup_slots, int(environment.get("SANDBOX_TMP_MB", "64")), view)
    undumpable = False
    if kernel is not None:
        try:
            kernel.prctl(PR_SET_DUMPABLE, 0)
            undumpable = True
        except OSError:
            pass
        if setting.seccomp:
            kernel.install_filter("worker")
    # The parent's first message: the verifier helpers, compiled once here so that every child
    # inherits the code instead of compiling it for each job.
    global HELPERS
    setup = read_frame(inp)
    if setup is None:
        return
    HELPERS = compile(json.loads(setup)["helpers"], "<verifier helpers>", "exec")
    _narrow()
    # Compile once here: the compiler's lazily built tables and memory then exist before any fork,
    # and each child's first compile touches (and copies) a third of the pages it would otherwise.
    for _ in range(3):
        exec(compile(WARM_UP, "<warm-up>", "exec"), {})
    gc.freeze()  # objects alive now are never scanned again, so forked children share their pages
    try:
        # It needs clone() for CLONE_PARENT, and where jobs share the worker's namespace, a filter that keeps
        # each job in its process group: Child.kill ends that group, not every process but the worker.
        zygote = Zygote(inp, setting) if setting.namespaces or setting.seccomp else None
        current = Child(inp, setting, 0, zygote)
        current.built()
        write_message(out, {"ready": os.getpid(), "undumpable": undumpable, "seccomp": setting.seccomp,
                            "namespaces": setting.namespaces, "cgroup": setting.cgroup, "tmp_mb": setting.tmp_mb,
                            "proc": setting.proc, "landlock": setting.landlock})
        previous = None
        while True:
            if previous is not None:  # every process of the last job has ended before this job's code runs
                previous.reap(everything=False)
            current.go(setting.user_tasks())
            ahead = None
            if setting.namespaces:  # the next job's world is built while this job runs, in the last job's group
                ahead = Child(inp, setting, 1 - current.slot, zygote)
            served = _serve(current, inp, out)
            current.kill(everything=ahead is None)
            if not served:
                return
            if ahead is None:  # no namespaces: this job's processes are gone before the next is made
                current.reap(everything=True)
                previous, current = None, Child(inp, setting, 0, zygote)
            else:
                previous, current = current, ahead
    except WorldBroken as exc:
        os.write(_last_words, f"sandbox worker: {exc}\n".encode())
        sys.exit(3)
    except Exception:  # a bug of the worker's own: its parent reports these last words
        import traceback
        os.write(_last_words, traceback.format_exc()[-MAX_TEXT:].encode())
        raise


if __name__ == "__main__":
    main()
