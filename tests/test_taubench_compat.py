"""Replaying tau-bench's gold actions through our tools reproduces upstream exactly, in both tool modes.

For every golden task (20 retail dev, 500 retail train, 10 airline test) a fresh fork of the
domain's base world replays the gold actions, once in strict mode and once in upstream mode; every
tool output, every changed record and the final upstream hash must equal what upstream produced.
The base is built once per domain and only forked, so a leak from one episode into the next would
make later tasks fail.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import pytest

from envs import taubench
from envs.airline import tools as airline_tools
from envs.airline import world as airline_world
from envs.retail import tools as retail_tools
from envs.retail import world as retail_world
from envs.registry import env_class
from envs.state import State, fork, make_base, to_plain
from envs.taubench import ENV_VAR, load_golden, shared_dir, upstream_hash, upstream_tool
from envs.tools import Toolset, ToolMode

# where the data is, else where it was looked for: a TAUBENCH_DATA_DIR naming a missing folder is where, so that
# CI's pass with it set that way runs the suite as a clone with no ../shared beside it does
BESIDE_REPO = Path(__file__).resolve().parents[1].parent / "shared" / "taubench"
SHARED = shared_dir() or Path(os.environ.get(ENV_VAR) or BESIDE_REPO)
GOLDEN = {"retail_dev": "retail", "retail_train": "retail", "airline_test_0_10": "airline"}
GOLDEN_TASKS = 530
MODES: tuple[ToolMode, ...] = ("strict", "upstream")
DOMAINS: dict[str, tuple[ModuleType, ModuleType]] = {
    "retail": (retail_world, retail_tools),
    "airline": (airline_world, airline_tools),
}

needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"tau-bench reference data not found at {SHARED}: set {ENV_VAR} to a folder "
                                "holding its data/ and golden/")


@functools.cache
def _golden(name: str) -> dict[str, Any]:
    return load_golden(SHARED / "golden" / f"{name}.json")


@functools.cache
def _base(domain: str) -> State:
    world, _ = DOMAINS[domain]
    return make_base(world.load(SHARED / "data" / domain), world.TABLES)


@functools.cache
def _toolset(domain: str) -> Toolset:
    tools = DOMAINS[domain][1]
    return Toolset.of(tools.TOOLS, upstream=tools.UPSTREAM_PACKAGE)


def _plain(state: State) -> dict[str, Any]:
    """``to_plain`` with the garbage collector paused: it builds a few hundred thousand dicts, which
    would set off full collections over the whole test process and double the file's runtime."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return to_plain(state)
    finally:
        if paused:
            gc.enable()


def _short(text: Any) -> str:
    text = str(text)
    return text if len(text) < 400 else text[:400] + "…"


@functools.cache
def _replay(name: str, index: int) -> tuple[str, ...]:
    """Every way the replays of one golden task, in each tool mode, differ from upstream (empty:
    both match)."""
    domain = GOLDEN[name]
    task = _golden(name)["tasks"][index]
    problems = []
    hashes: dict[str, str] = {}  # the full hash by a hash of the touched records (both modes mostly agree)
    for mode in MODES:
        state = fork(_base(domain))
        for step, (action, expected) in enumerate(zip(task["actions"], task["tool_outputs"])):
            if action["name"] == "respond":
                continue
            got = _toolset(domain).call(state, action["name"], action["arguments"], mode)
            if got != expected:
                problems.append(f"{mode}: action {step} {action['name']}: got {_short(got)!r}, "
                                f"upstream {_short(expected)!r}")
        world = DOMAINS[domain][0]
        changed = {table: state[table].changed() for table in world.TABLES}
        changed = {table: records for table, records in changed.items() if records}
        if changed != task["changed_records"]:
            problems.append(f"{mode}: changed records differ: got {_short(changed)}, "
                            f"upstream {_short(task['changed_records'])}")
        touched = upstream_hash({t: {k: state[t].get_readonly(k) for k in state[t].touched()} for t in world.TABLES})
        if touched not in hashes:
            hashes[touched] = upstream_hash(_plain(state))
        if hashes[touched] != task["final_data_hash"]:
            problems.append(f"{mode}: final upstream hash differs")
    return tuple(problems)


def _cases() -> list[Any]:
    if not SHARED.is_dir():
        return []
    return [pytest.param(name, index, id=f"{name}-{index}")
            for name in GOLDEN for index in range(len(_golden(name)["tasks"]))]


@needs_shared
@pytest.mark.parametrize("name", list(GOLDEN))
def test_loaded_data_hashes_to_upstream_initial_hash(name: str) -> None:
    domain, expected = GOLDEN[name], _golden(name)["initial_data_hash"]
    assert upstream_hash(_plain(_base(domain))) == expected
    world = env_class(domain).build_world({"data_dir": str(SHARED / "data" / domain)})  # an env's world on it
    assert upstream_hash(_plain(world)) == expected


@needs_shared
@pytest.mark.parametrize("name, index", _cases())
def test_gold_replay_matches_upstream_outputs_records_and_hash(name: str, index: int) -> None:
    problems = _replay(name, index)
    assert not problems, "\n".join(problems)


@needs_shared
@pytest.mark.slow  # on its own it replays all 530 tasks; after the tests above it reuses their replays
def test_all_golden_tasks_match_and_leave_the_base_world_untouched() -> None:
    cases = [(name, index) for name in GOLDEN for index in range(len(_golden(name)["tasks"]))]
    matched = sum(not _replay(name, index) for name, index in cases)
    assert (len(cases), matched) == (GOLDEN_TASKS, GOLDEN_TASKS)
    for name, domain in GOLDEN.items():  # hundreds of episodes wrote nothing back into the world
        assert upstream_hash(_plain(_base(domain))) == _golden(name)["initial_data_hash"]


def test_upstream_hash_is_sha256_of_the_sorted_tuple_form() -> None:
    data = {"b": [1, {"y": "z", "x": {2, 1}}], "a": 1.0}
    canonical = (("a", 1.0), ("b", (1, (("x", (1, 2)), ("y", "z")))))
    assert upstream_hash(data) == hashlib.sha256(str(canonical).encode()).hexdigest()
    assert upstream_hash({"a": 1}) != upstream_hash({"a": 1.0})  # as upstream: str() tells them apart


def test_shared_dir_prefers_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ENV_VAR == "TAUBENCH_DATA_DIR", "the name the README and the error messages give users"
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert shared_dir() == tmp_path
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    assert shared_dir() is None
    monkeypatch.delenv(ENV_VAR)
    beside_repo = Path(taubench.__file__).resolve().parents[1].parent / "shared" / "taubench"
    assert shared_dir() == (beside_repo if beside_repo.is_dir() else None)


def test_load_golden_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"tasks": []}))
    with pytest.raises(ValueError, match="not a tau-bench golden file"):
        load_golden(path)



def test_upstream_hash_sorts_a_set_whatever_order_it_iterates_in() -> None:
    """Upstream's to_hashable sorts sets."""
    items = {8, 1}
    assert list(items) != sorted(items)  # the precondition: iteration order is not sorted order
    assert upstream_hash({"s": items}) == upstream_hash({"s": {1, 8}}) == upstream_hash({"s": [1, 8]})


def test_upstream_hash_of_a_forked_state_equals_that_of_its_plain_copy() -> None:
    """Copy-on-write tables (and other mappings) hash as the dicts they stand for."""
    base = make_base({"users": {"u2": {"name": "b", "tags": ["x"]}, "u1": {"name": "a"}}, "meta": [1]}, ("users",))
    state = fork(base)
    state["users"]["u1"]["name"] = "changed"
    assert upstream_hash(state) == upstream_hash(to_plain(state))
    assert upstream_hash(MappingProxyType({"b": 1, "a": 2})) == upstream_hash({"a": 2, "b": 1})


@pytest.mark.parametrize("enabled", [True, False])
def test_upstream_hash_leaves_the_garbage_collector_as_it_found_it(enabled: bool) -> None:
    """Hashing pauses the collector and puts it back as it was, on or off."""
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        upstream_hash({"a": [1, 2]})
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_load_golden_names_a_missing_tasks_list(tmp_path) -> None:
    """A golden file without its tasks says which key it lacks."""
    path = tmp_path / "golden.json"
    path.write_text(json.dumps({"domain": "retail", "initial_data_hash": "x"}))
    with pytest.raises(ValueError, match=r"not a tau-bench golden file: it lacks \['tasks'\]"):
        load_golden(path)


@pytest.mark.parametrize("top", [[{"domain": "retail"}], 5, "domain initial_data_hash tasks", None])
def test_load_golden_rejects_json_that_is_not_an_object(tmp_path, top) -> None:
    """JSON that is not an object (a list of objects, a number) is no golden file, not a crash."""
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(top))
    with pytest.raises(ValueError, match="not a tau-bench golden file"):
        load_golden(path)


def test_an_empty_data_dir_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """TAUBENCH_DATA_DIR= (empty) is not the current folder."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    unset = shared_dir()
    monkeypatch.setenv(ENV_VAR, "")
    assert shared_dir() == unset


def test_an_upstream_copy_keeps_the_tools_defaults() -> None:
    """upstream_tool is general: a tool's default arguments survive the copy."""

    def get_thing(data, thing_id, limit=3, *, verbose=False):
        return f"{thing_id}:{limit}:{verbose}"

    copy = upstream_tool(get_thing, "tau_bench.envs.retail.tools")
    assert copy(data={}, thing_id="x") == "x:3:False"
    assert copy.__qualname__ == "GetThing.invoke"


def test_load_golden_names_a_missing_initial_hash(tmp_path) -> None:
    """The initial hash says which data the golden tasks were recorded on: a file without it is refused, naming it."""
    path = tmp_path / "golden.json"
    path.write_text(json.dumps({"domain": "retail", "tasks": []}))
    with pytest.raises(ValueError, match=r"not a tau-bench golden file: it lacks \['initial_data_hash'\]"):
        load_golden(path)
