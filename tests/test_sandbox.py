"""Behaviour of both sandbox backends, through one interface and one parametrized fixture.

The local backend runs twice: as this machine allows (root's private root, under CI), and
``local-rootless``, as a user who may not make namespaces of root's gets it (a laptop's user, a
container without CAP_SYS_ADMIN): its workers make theirs in a user namespace. The docker cases need
a running engine and the image (``make sandbox-image``). Without what they need, the docker and
rootless cases skip with a reason naming what is missing, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

import gymnasium as gym

import envs.sandbox.local as local
from envs.sandbox import Limits, RunResult, Sandbox, Worker, WorkerLost, default_sandbox, make_sandbox
from envs.sandbox.local import LocalSandbox
from envs.state import fork, make_base, state_hash

FAST = Limits(wall_seconds=2.0, cpu_seconds=1, memory_mb=128, output_bytes=4096)
BACKENDS = ["local", "local-rootless", pytest.param("docker", marks=pytest.mark.docker)]
MARGIN = 4.0  # seconds beyond a limit that clean-up and a loaded machine may add


def require_docker() -> None:
    """Skip, naming what is missing, when the docker backend cannot run here; fail under CI."""
    from envs.sandbox.docker import DockerUnavailable, connect

    try:
        connect()
    except DockerUnavailable as exc:
        unavailable(f"docker sandbox unavailable: {exc}")


def unavailable(why: str) -> None:
    """Skip, saying why; fail under CI, which must run every backend."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run every sandbox backend, but: {why}")
    pytest.skip(why)


def rootless_sandbox(**kwargs) -> Sandbox:
    """The local sandbox with its workers in a user namespace, as where root's namespaces are refused."""
    if os.geteuid() != 0:
        pytest.skip("not root: the local backend is rootless here already")
    way = next(way for way in local.isolations() if way.name == "user-namespace")
    if not local.runs(way):
        unavailable("no worker comes up in a user namespace here")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "worker_isolation", lambda: way)
        return LocalSandbox(**kwargs)


NO_JOB_NAMESPACES = local.Isolation(
    "no-job-namespaces", (*(local.AS_NOBODY if os.geteuid() == 0 else ()), "unshare", "--user", "--map-root-user",
                          "sh", "-c", 'echo 0 > /proc/sys/user/max_user_namespaces && exec python3 -s -S -c "$0"'),
    False, "local: a worker whose jobs may make no user namespace", host_files=True)
"""A worker in a user namespace that allows no nested one: its jobs get no namespaces, as where the
machine refuses user namespaces to everyone, or grants no right in them (Ubuntu's AppArmor): the
local backend's limits-only way. Root's runs as nobody, as the local backend's limits-only way does (root
would ignore RLIMIT_NPROC)."""


def landlock_abi() -> int:
    """This kernel's Landlock ABI version (0: none), as the worker asks it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return max(0, libc.syscall(444, None, 0, 1))


def limits_sandbox(**kwargs) -> Sandbox:
    """The local sandbox whose jobs get no namespaces, held by seccomp and Landlock alone."""
    if landlock_abi() < 6:
        unavailable("this kernel's Landlock cannot scope signals (ABI 6): jobs without namespaces could signal "
                    "the host's processes")
    if not local.runs(NO_JOB_NAMESPACES):
        unavailable("no worker comes up in a user namespace here")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "worker_isolation", lambda: NO_JOB_NAMESPACES)
        return LocalSandbox(**kwargs)


def open_sandbox(backend: str, **kwargs) -> Sandbox:
    if backend == "docker":
        require_docker()
    forced = {"local-rootless": rootless_sandbox, "local-limits": limits_sandbox}.get(backend)
    sandbox = forced(**kwargs) if forced else make_sandbox(backend, **kwargs)
    sandbox.warm_up()
    return sandbox


def process_tree() -> dict[int, list[int]]:
    """Every process's children, seen from the host."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (its children, theirs, …), seen from the host."""
    children, found, todo = process_tree(), [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def pid_namespaces(pid: int) -> int:
    """How many PID namespaces ``pid`` is in (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((len(line.split()) - 1 for line in f if line.startswith("NSpid:")), 1)
    except OSError:
        return 0


def leftover_processes(sandbox: Sandbox, timeout: float = 10.0) -> dict[int, list[int]]:
    """Processes under each idle worker beyond the ones it keeps: the ready job processes (the next
    job's, and the one built ahead for the job after it: at most two, each in a PID namespace of its
    own, or with none where jobs get no namespaces) and the zygote that makes them (in the worker's PID
    namespace); none of them with children of its own. Empty, once the workers have cleaned up, when
    nothing survived its job."""
    end = time.monotonic() + timeout
    while True:
        extra = {}
        for pid in sandbox.host_pids():
            kept = process_tree().get(pid, [])
            under = descendants(pid)
            zygotes = [child for child in kept if pid_namespaces(child) == pid_namespaces(pid)]
            nested = len(zygotes) < len(kept)
            if len(kept) - len(zygotes) > 2 or len(zygotes) > (1 if nested else 2) or len(under) > len(kept):
                extra[pid] = under
        if not extra or time.monotonic() > end:
            return extra
        time.sleep(0.05)


@pytest.fixture(scope="module", params=BACKENDS)
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    box = open_sandbox(request.param)
    yield box
    box.close()


# ---------------------------------------------------------------- verifiers


def test_verifier_returning_true_passes(sandbox: Sandbox) -> None:
    result = sandbox.verify("def verify(state, answer):\n    return state['n'] == 3 and answer == 'x'\n",
                            {"n": 3}, "x")
    assert result.status == "ok", result


def test_verifier_returning_false_fails(sandbox: Sandbox) -> None:
    result = sandbox.verify("def verify(state, answer):\n    return answer == 'y'\n", {}, "x")
    assert result.status == "failed", result


def test_syntax_error_is_an_error_with_its_line(sandbox: Sandbox) -> None:
    result = sandbox.verify("def verify(state, answer):\n    return (\n\n", {}, "x")
    assert (result.status, result.kind) == ("error", "syntax")
    assert "line" in result.message


def test_source_without_verify_is_an_error(sandbox: Sandbox) -> None:
    result = sandbox.verify("x = 1\n", {}, "x")
    assert (result.status, result.kind) == ("error", "syntax")
    assert "verify" in result.message


def test_non_bool_return_is_an_error(sandbox: Sandbox) -> None:
    result = sandbox.verify("def verify(state, answer):\n    return 1\n", {}, "x")
    assert (result.status, result.kind) == ("error", "non_bool")


def test_exception_names_its_type_and_line(sandbox: Sandbox) -> None:
    result = sandbox.verify("def verify(state, answer):\n    x = 1\n    return state['missing']\n", {}, "x")
    assert (result.status, result.kind) == ("error", "exception")
    assert "KeyError" in result.message and "line 3" in result.message


def test_code_the_compiler_cannot_hold_is_a_syntax_error(sandbox: Sandbox) -> None:
    result = sandbox.verify("def verify(state, answer):\n    return " + "-" * 200_000 + "1\n", {}, "x")
    assert (result.status, result.kind) == ("error", "syntax"), result
    assert "cannot be compiled" in result.message


def test_an_error_text_with_a_lone_surrogate_reaches_the_host_escaped(sandbox: Sandbox) -> None:
    result = sandbox.verify("def verify(state, answer):\n    raise ValueError('\\ud800 boom')\n", {}, "x")
    assert (result.status, result.kind) == ("error", "exception")
    assert "\\ud800 boom" in result.message and result.message.encode("utf-8")


@pytest.mark.parametrize("verdict", ['"ok"', '{"status": "ok"}', "[" * 980 + "]" * 980])
def test_a_verdict_sent_as_json_is_a_protocol_error_and_costs_no_worker(sandbox: Sandbox, verdict: str) -> None:
    """A verdict comes only as its byte: sent as JSON (any value, nested past what the host's parser
    takes), it is a malformed result, not a status passed through or a lost worker."""
    message = '{"verdict": ' + verdict + "}"
    source = ("import os\ndef verify(state, answer):\n"
              f"    for fd in range(3, 64):\n        try:\n            os.write(fd, {message!r}.encode())\n"
              "        except OSError:\n            pass\n    os._exit(0)\n")
    workers = set(sandbox.host_pids())
    result = sandbox.verify(source, {}, "x")
    assert (result.status, result.kind) == ("error", "protocol"), result
    assert set(sandbox.host_pids()) == workers


def test_state_hash_helper_matches_the_parent(sandbox: Sandbox) -> None:
    state = {"n": 1, "items": [1, 2]}
    source = f"def verify(state, answer):\n    return state_hash() == {state_hash(state)!r}\n"
    assert sandbox.verify(source, state, "").status == "ok"


def test_every_worker_hashes_strings_alike_and_imports_nothing_from_its_working_directory(sandbox: Sandbox) -> None:
    """A set of strings iterates in one order in every job: the filter's second run of a verifier on
    the same worker could not tell a verifier that hangs on it from a sound one."""
    seeded = subprocess.run([sys.executable, "-c", "print(hash('probe-3'))"], env={"PYTHONHASHSEED": "0"},
                            capture_output=True, text=True).stdout.strip()  # any other seed: another number
    source = f"import sys\ndef verify(state, answer):\n    return hash('probe-3') == {seeded} and '' not in sys.path\n"
    assert sandbox.verify(source, {}, "").status == "ok"


# ---------------------------------------------------------------- limits


def test_sleep_forever_times_out_at_the_wall_clock(sandbox: Sandbox) -> None:
    start = time.monotonic()
    result = sandbox.verify("import time\ndef verify(state, answer):\n    time.sleep(10**6)\n", {}, "", limits=FAST)
    assert result.status == "timeout", result
    assert time.monotonic() - start < FAST.wall_seconds + MARGIN


def test_cpu_loop_is_stopped(sandbox: Sandbox) -> None:
    limits = Limits(wall_seconds=5.0, cpu_seconds=1)
    start = time.monotonic()
    result = sandbox.verify("def verify(state, answer):\n    while True:\n        pass\n", {}, "", limits=limits)
    assert result.status in ("error", "timeout"), result
    assert time.monotonic() - start < limits.wall_seconds + MARGIN


def test_memory_bomb_is_an_error(sandbox: Sandbox) -> None:
    result = sandbox.verify("def verify(state, answer):\n    x = bytearray(10**10)\n    return True\n",
                            {}, "", limits=FAST)
    assert (result.status, result.kind) == ("error", "memory"), result


def test_huge_output_is_truncated(sandbox: Sandbox) -> None:
    result = sandbox.run_code("for i in range(10**5):\n    print('x' * 100)\n", lambda n, a: "", {}, limits=FAST)
    assert result.output.endswith("[output truncated]")
    assert len(result.output) <= FAST.output_bytes + 100


def test_per_call_limits_override_the_sandbox_defaults(sandbox: Sandbox) -> None:
    short = Limits(wall_seconds=0.5)
    start = time.monotonic()
    source = "import time\ndef verify(s, a):\n    time.sleep(3)\n"
    assert sandbox.verify(source, {}, "", limits=short).status == "timeout"
    assert time.monotonic() - start < 3


# ---------------------------------------------------------------- talking to the parent


def test_code_action_calls_tools_in_the_caller_and_returns_its_output(sandbox: Sandbox) -> None:
    calls = []

    def tools(name: str, arguments: dict) -> str:
        calls.append((name, arguments))
        return f"{name}:{arguments['a'] + arguments['b']}"

    result = sandbox.run_code("r = add(2, b=3)\nprint('got', r)\nprint(mul(a=1, b=1))\n",
                              tools, {"add": ["a", "b"], "mul": ["a", "b"]})
    assert result.status == "ok", result
    assert calls == [("add", {"a": 2, "b": 3}), ("mul", {"a": 1, "b": 1})]
    assert result.output == "got add:5\nmul:2\n"


def test_big_table_records_are_fetched_one_by_one(sandbox: Sandbox) -> None:
    base = make_base({"users": {f"u{i}": {"id": i, "name": f"user {i}"} for i in range(100_000)},
                      "meta": {"version": 2}}, tables=("users",))
    state = fork(base)
    state["users"]["u7"]["name"] = "renamed"
    served = []
    read = state["users"].get_readonly
    state["users"].get_readonly = lambda key, default=None: served.append(key) or read(key, default)
    source = ("def verify(state, answer):\n"
              "    u = state['users']['u7']\n"
              "    return (u['name'] == 'renamed' and 'u99999' in state['users'] and 'nope' not in state['users']\n"
              "            and state['users'].get('u3')['id'] == 3 and state['meta']['version'] == 2)\n")
    result = sandbox.verify(source, state, "")
    assert result.status == "ok", result
    assert sorted(served) == ["nope", "u3", "u7", "u99999"]  # the other 99,996 records stayed here


def test_a_worker_lost_while_idle_costs_no_job(sandbox: Sandbox) -> None:
    victim = sandbox.host_pids()[0]
    os.kill(victim, signal.SIGKILL)
    source = "def verify(state, answer):\n    return True\n"
    results = [sandbox.verify(source, {}, "") for _ in range(2 * sandbox.size)]
    assert [r.status for r in results] == ["ok"] * len(results), results
    assert victim not in sandbox.host_pids()


def test_a_worker_killed_mid_job_costs_the_job_nothing(sandbox: Sandbox) -> None:
    idle = set(sandbox.host_pids())
    source = "import time\ndef verify(state, answer):\n    time.sleep(0.5)\n    return answer == 'x'\n"
    outcome: dict[str, RunResult] = {}
    job = threading.Thread(target=lambda: outcome.update(result=sandbox.verify(source, {}, "x")))
    job.start()
    end = time.monotonic() + 10
    while not (busy := idle - set(sandbox.host_pids())) and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.1)
    os.kill(busy.pop(), signal.SIGKILL)
    job.join()
    assert outcome["result"].status == "ok", outcome


def test_threads_share_the_pool(sandbox: Sandbox) -> None:
    source = "def verify(state, answer):\n    return state['n'] % 2 == 0 and answer == str(state['n'])\n"
    outcomes: dict[int, str] = {}

    def run(first: int) -> None:
        for n in range(first, first + 10):
            outcomes[n] = sandbox.verify(source, {"n": n}, str(n)).status

    threads = [threading.Thread(target=run, args=(10 * t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == {n: "ok" if n % 2 == 0 else "failed" for n in range(40)}


def test_nothing_outlives_a_job(sandbox: Sandbox) -> None:
    sandbox.verify("import sys, time\ndef verify(s, a):\n    if sys.modules['posix'].fork() == 0:\n"
                   "        time.sleep(1000)\n    return False\n", {}, "", limits=FAST)
    assert leftover_processes(sandbox) == {}


def test_describe_says_what_holds_each_limit(sandbox: Sandbox) -> None:
    described = sandbox.describe()
    assert set(described) == {"backend", "job", "memory", "processes", "time", "files"}
    assert described["backend"].startswith(sandbox_backend(sandbox))
    assert f"{sandbox.limits.memory_mb} MB" in described["memory"]
    assert f"{sandbox.limits.processes} processes" in described["processes"]


def sandbox_backend(sandbox: Sandbox) -> str:
    return "docker" if type(sandbox).__name__ == "DockerSandbox" else "local"


# ---------------------------------------------------------------- infrastructure failures, scripted


class ScriptedWorker(Worker):
    """A worker that answers each read from its script: a message, or an exception to raise."""

    def __init__(self, script: list[object]):
        super().__init__()
        self.script, self.host_pid, self.killed = list(script), 0, False
        self.greeting = {"ready": 0}

    def send(self, data: bytes, deadline: float) -> None:
        pass

    def _read_some(self, deadline: float) -> bytes:
        raise AssertionError("scripted workers answer read_message directly")

    def read_message(self, deadline: float) -> object:
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def kill(self) -> None:
        self.killed = True


class ScriptedSandbox(Sandbox):
    def __init__(self, *scripts: list[object], workers: int = 1):
        super().__init__(workers=workers)
        self.scripts, self.started = list(scripts), []

    def _start_worker(self) -> Worker:
        self.started.append(ScriptedWorker(self.scripts.pop(0)))
        return self.started[-1]

    def _describe_backend(self) -> str:
        return "scripted"

    _describe_memory = _describe_processes = lambda self, greeting: ""


OK = {"result": {"status": "ok"}}


def test_a_job_whose_worker_is_lost_runs_again_on_a_fresh_worker() -> None:
    box = ScriptedSandbox([WorkerLost("the worker exited")], [OK])
    assert box.verify("", {}, "").status == "ok"
    assert [w.killed for w in box.started] == [True, False]


def test_a_judgement_asked_elsewhere_runs_on_another_worker_than_the_threads_last_job() -> None:
    box = ScriptedSandbox([OK] * 3, [OK], workers=2)
    for elsewhere in (False, False, True, True):
        assert box.verify("", {}, "", elsewhere=elsewhere).status == "ok"
    first, second = box.started
    assert (first.script, second.script) == ([], []), "an idle worker serves twice, then each takes a turn"
    alone = ScriptedSandbox([OK, OK])
    assert [alone.verify("", {}, "", elsewhere=e).status for e in (False, True)] == ["ok", "ok"]
    assert len(alone.started) == 1, "a pool of one has nowhere else"


def test_a_job_lost_twice_is_an_error_that_names_the_loss() -> None:
    box = ScriptedSandbox([WorkerLost("the worker exited")], [WorkerLost("no answer before the deadline")])
    result = box.verify("", {}, "")
    assert (result.status, result.kind) == ("error", "worker_lost")
    assert "no answer before the deadline" in result.message and "twice" in result.message


def test_code_that_called_tools_is_not_run_again_when_its_worker_is_lost() -> None:
    calls = []
    box = ScriptedSandbox([{"request": {"op": "tool", "name": "t", "arguments": {}}}, WorkerLost("the worker exited")],
                          [OK])
    result = box.run_code("t()", lambda name, arguments: calls.append(name) or "", {"t": []})
    assert (result.status, result.kind) == ("error", "worker_lost")
    assert calls == ["t"] and len(box.started) == 1  # its tool calls are not repeated


def test_a_message_nested_past_the_parsers_limit_is_a_value_error_not_a_recursion_error() -> None:
    body = b'{"request": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    class Flooding(ScriptedWorker):
        read_message = Worker.read_message

        def _read_some(self, deadline: float) -> bytes:
            return struct.pack(">I", len(body)) + body

    with pytest.raises(ValueError, match="nests too deeply"):
        Flooding([]).read_message(0.0)


def test_a_caller_interrupted_mid_job_kills_the_worker_and_frees_its_slot() -> None:
    box = ScriptedSandbox([{"request": {"op": "tool", "name": "t", "arguments": {}}}], [OK])

    def interrupted(name: str, arguments: dict) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        box.run_code("t()", interrupted, {"t": []})
    assert box.started[0].killed
    assert box.verify("", {}, "").status == "ok"  # on a fresh worker: the one-worker pool is not held


# ---------------------------------------------------------------- choosing a sandbox for an env


@pytest.mark.parametrize("choice", ["dokcer", "", 3, object()])
def test_make_refuses_an_unknown_sandbox(choice: object) -> None:
    with pytest.raises(ValueError, match="'local' or 'docker' or a Sandbox"):
        gym.make("Toy-v0", sandbox=choice)


def test_make_takes_a_backend_name_or_a_sandbox() -> None:
    assert gym.make("Toy-v0", sandbox="local").unwrapped.sandbox is default_sandbox("local")
    assert gym.make("Toy-v0").unwrapped.sandbox is default_sandbox("local")
    own = make_sandbox("local", workers=1)
    assert gym.make("Toy-v0", sandbox=own).unwrapped.sandbox is own


@pytest.mark.docker
def test_make_takes_the_docker_backend_by_name() -> None:
    require_docker()
    env = gym.make("Toy-v0", sandbox="docker").unwrapped
    assert env.sandbox is default_sandbox("docker") and sandbox_backend(env.sandbox) == "docker"


# ---------------------------------------------------------------- the docker backend's errors


def test_missing_engine_says_how_to_start_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    pytest.importorskip("docker")
    from envs.sandbox.docker import DockerUnavailable, connect

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(DockerUnavailable, match="dockerd"):
        connect()


def test_a_forked_child_dropping_the_docker_sandbox_it_inherited_leaves_the_parents_containers(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """An async vector env's worker drops the sandbox it inherited and starts its own; the parent's
    containers (listed by their pool's label to be removed) are the parent's to remove."""
    pytest.importorskip("docker")
    import envs.sandbox.docker as backend

    asked = tmp_path / "asked"

    class Containers:
        def list(self, all: bool = False, filters: dict | None = None) -> list:  # noqa: A002
            with open(asked, "a") as f:
                f.write(f"{os.getpid()} {filters}\n")
            return []

    client = type("Client", (), {"containers": Containers()})()
    monkeypatch.setattr(backend, "connect", lambda image=backend.IMAGE: client)
    monkeypatch.setattr(backend, "remove_stale", lambda client: 0)
    sandbox = backend.DockerSandbox(workers=1)
    child = os.fork()
    if child == 0:
        sandbox._finalizer()  # what collecting its copy does
        os._exit(0)
    os.waitpid(child, 0)
    assert not asked.exists()
    sandbox.close()
    assert asked.read_text().split(" ", 1)[0] == str(os.getpid()) and sandbox._pool in asked.read_text()


@pytest.mark.docker
def test_missing_image_says_how_to_build_it() -> None:
    require_docker()
    from envs.sandbox.docker import DockerUnavailable, connect

    with pytest.raises(DockerUnavailable, match="make sandbox-image"):
        connect("self-challenge-sandbox:no-such-tag")


def test_every_verifier_gets_the_answer_readers(sandbox):
    source = ("def verify(state, answer):\n"
              "    return near(final_number(answer), 1234.5, 0.01) and final_text('code: abc.') == 'ABC'\n")
    assert sandbox.verify(source, {}, "It comes to 1,234.50 EUR").status == "ok"
    assert sandbox.verify(source, {}, "It comes to 1,234.60 EUR").status == "failed"
    assert sandbox.verify(source, {}, "no number here").status == "failed"


@pytest.mark.parametrize("answer, expected, same", [
    ("yusra.ibarra@silvercrest.example", "yusra.ibarra@silvercrest.example", True),
    ("  'Yusra.Ibarra@Silvercrest.example'. ", "yusra.ibarra@silvercrest.example", True),
    ("yusra.wagner@silvercrest.example", "yusra.ibarra@silvercrest.example", False),
    ("The email is yusra.ibarra@silvercrest.example", "yusra.ibarra@silvercrest.example", False),
])
def test_same_text_ignores_case_spacing_quotes_and_a_final_stop_only(sandbox, answer, expected, same):
    source = f"def verify(state, answer):\n    return same_text(answer, {expected!r})\n"
    assert sandbox.verify(source, {}, answer).status == ("ok" if same else "failed")


@pytest.mark.parametrize("answer, same", [("$1,299.00", True), ("1299 dollars", True), ("1,298", False),
                                          ("1299 or 12", False), ("none", False)])
def test_same_numbers_reads_past_units_signs_and_thousands_separators(sandbox, answer, same):
    source = "def verify(state, answer):\n    return same_numbers(answer, '1299')\n"
    assert sandbox.verify(source, {}, answer).status == ("ok" if same else "failed")


# ---------------------------------------------------------------- each limit, and the job's channels

JOB = Limits(wall_seconds=3.0, cpu_seconds=1, memory_mb=256, open_files=32, file_mb=4, output_bytes=1000)


def test_a_cpu_loop_ends_at_its_cpu_seconds_and_says_cpu(sandbox: Sandbox) -> None:
    source = ("import time\ndef verify(s, a):\n    last = 0.0\n    while True:\n        t = time.process_time()\n"
              "        if t - last > 0.05:\n            print(round(t, 2), flush=True)\n            last = t\n")
    result = sandbox.verify(source, {}, "", limits=Limits(wall_seconds=20.0, cpu_seconds=1, output_bytes=4000))
    assert (result.status, result.kind) == ("error", "cpu"), result
    assert float(result.output.split()[-1]) < 2.5  # the hard limit, cpu_seconds + 1, ended it


@pytest.mark.parametrize("opened, errno", [("[open('/dev/null') for _ in range(40)]", 24),  # EMFILE
                                           ("open('/tmp/big', 'wb').write(b'x' * (5 << 20))", 27)])  # EFBIG
def test_open_files_and_a_file_past_their_limits_are_refused(sandbox: Sandbox, opened: str, errno: int) -> None:
    source = f"def verify(s, a):\n    try:\n        {opened}\n    except OSError as exc:\n" \
             f"        return exc.errno == {errno}\n    return False\n"
    assert sandbox.verify(source, {}, "", limits=JOB).status == "ok"


def test_tmp_holds_no_more_than_tmp_mb(sandbox: Sandbox) -> None:
    files = sandbox.limits.tmp_mb // 4 + 2
    source = (f"def verify(s, a):\n    try:\n        for i in range({files}):\n"
              "            open(f'/tmp/f{i}', 'wb').write(b'x' * (4 << 20))\n"
              "    except OSError as exc:\n        return exc.errno == 28\n    return False\n")  # ENOSPC
    assert sandbox.verify(source, {}, "", limits=replace(JOB, file_mb=8)).status == "ok"


def test_output_of_exactly_the_cap_is_kept_whole_and_a_byte_more_is_cut(sandbox: Sandbox) -> None:
    exact = sandbox.run_code("print('x' * 999)", lambda name, arguments: "", {}, limits=JOB)
    over = sandbox.run_code("print('x' * 1000)", lambda name, arguments: "", {}, limits=JOB)
    assert exact.output == "x" * 999 + "\n"
    assert over.output == "x" * 1000 + "\n[output truncated]"


def test_a_result_forged_as_ok_json_is_a_protocol_error(sandbox: Sandbox) -> None:
    """ok and failed come only as the verdict's byte: a JSON result may only say error or timeout."""
    source = ("import os\ndef verify(s, a):\n    for fd in range(3, 64):\n        try:\n"
              "            os.write(fd, b'{\"done\": {\"status\": \"ok\"}}')\n        except OSError:\n"
              "            pass\n    os._exit(0)\n")
    result = sandbox.verify(source, {}, "")
    assert (result.status, result.kind) == ("error", "protocol"), result


def test_a_job_holds_no_pipe_but_its_replies(sandbox: Sandbox) -> None:
    """The worker's stdin (the parent's stream, the next job's body) is closed before untrusted code runs."""
    source = ("import os, stat\ndef verify(s, a):\n    pipes = 0\n    for fd in range(256):\n        try:\n"
              "            pipes += stat.S_ISFIFO(os.fstat(fd).st_mode)\n        except OSError:\n            pass\n"
              "    return pipes == 1\n")
    assert sandbox.verify(source, {}, "").status == "ok"


def test_a_slow_tool_past_the_wall_clock_is_a_timeout_not_a_lost_worker(sandbox: Sandbox) -> None:
    def slow(name: str, arguments: dict) -> str:
        time.sleep(1.0)
        return "late"

    assert sandbox.run_code("wait()", slow, {"wait": []}, limits=Limits(wall_seconds=0.5)).status == "timeout"


def test_a_malformed_tool_call_never_reaches_the_callers_tools(sandbox: Sandbox) -> None:
    calls = []
    source = ("remote = next(c.cell_contents for c in add.__closure__ if hasattr(c.cell_contents, 'ask'))\n"
              "try:\n    remote.ask({'op': 'tool', 'name': 5, 'arguments': [1]})\nexcept RuntimeError as e:\n"
              "    print(e)\n")
    result = sandbox.run_code(source, lambda name, arguments: calls.append((name, arguments)) or "", {"add": ["a"]})
    assert calls == [] and result.output == "malformed tool call\n", result


# ---------------------------------------------------------------- the local pool's workers


def gone(pid: int, within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.05)
    return False


def test_a_worker_killed_mid_job_is_noticed_at_once_and_the_job_retried() -> None:
    with make_sandbox("local", workers=1, limits=JOB) as box:
        box.warm_up()
        timer = threading.Timer(0.5, os.kill, (box.host_pids()[0], signal.SIGKILL))
        timer.start()
        start = time.monotonic()
        result = box.verify("import time\ndef verify(s, a):\n    time.sleep(1)\n    return True\n", {}, "")
        assert result.status == "ok" and time.monotonic() - start < JOB.wall_seconds + MARGIN, result


def test_close_ends_every_worker_and_a_job_that_outlasts_it_takes_its_worker_along() -> None:
    box = make_sandbox("local", workers=2, limits=JOB)
    box.warm_up()
    pids = box.host_pids()
    job = threading.Thread(target=box.verify, args=("import time\ndef verify(s, a):\n    time.sleep(1)\n", {}, ""))
    job.start()
    time.sleep(0.3)
    box.close()
    job.join()
    assert all(gone(pid) for pid in pids)


def test_a_fresh_worker_in_a_full_pool_retires_and_kills_an_idle_one() -> None:
    pool = ScriptedSandbox([], [])
    pool._release(pool._acquire())
    pool._acquire(fresh=True)
    assert pool.started[0].killed and len(pool.started) == 2


def test_a_worker_that_fails_to_start_gives_its_slot_back() -> None:
    pool = ScriptedSandbox()
    with pytest.raises(IndexError):  # no script for it: its start fails
        pool._acquire()
    pool.scripts.append([])
    acquired = []
    thread = threading.Thread(target=lambda: acquired.append(pool._acquire()), daemon=True)
    thread.start()
    thread.join(5)
    assert acquired, "the pool stayed full after a failed start"
