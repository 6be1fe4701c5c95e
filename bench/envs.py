"""Environment speed: resets, rewards and tool steps, against tau-bench's own way of doing them.

``python -m bench.envs`` prints, in one run, for the retail world loaded with tau-bench's data:
- reset: ours (a copy-on-write fork of the cached world) vs reloading the JSON files, as tau-bench
  does for every episode (target: at least 100x faster);
- reward: ours (the verifier in the sandbox, on the incremental state hash) vs rehashing the whole
  database as tau-bench does at the end of every episode (target: at least 20x faster);
- actions: hostile texts (a run of ``{``, deep nesting, a 1 MB integer…) parsed at the 64 K
  default limit, ours vs the standard decoder tried at every ``{`` as the parser once did (target:
  linear, not quadratic), and a 1 MB action stepped into an env (target: refused in < 100 ms);
and tool steps per second for each domain's default tasks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from envs.actions import parse_action
from envs.cli import ShowDefaults
from envs.base import DEFAULT_MAX_ACTION_LENGTH
from envs.registry import ENV_IDS, env_class
from envs.retail.challenger import make_tasks
from envs.retail.env import RetailEnv
from envs.taubench import shared_dir, upstream_hash


def _seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of one call over ``repeat`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _reload(data_dir: Path) -> dict:
    return {name: json.loads((data_dir / f"{name}.json").read_text()) for name in ("users", "orders", "products")}


def taubench_retail(data_dir: Path) -> None:
    env = RetailEnv(tasks=make_tasks(seed=0, n=4))
    task = env.tasks[0]
    world = {"data_dir": str(data_dir)}
    task = type(task)(**{**task.__dict__, "world": world, "id": "bench"})
    env.reset(options={"task": task})  # builds and caches the world once
    ours = _seconds(lambda: env.reset(options={"task": task}), 200)
    theirs = _seconds(lambda: _reload(data_dir), 10)
    print(f"reset   ours {ours * 1e3:8.3f} ms   tau-bench reload {theirs * 1e3:8.2f} ms   "
          f"ratio {theirs / ours:8.1f}x  (target >= 100x)")

    order = next(iter(env.state["orders"]))
    env.toolset.call(env.state, "get_order_details", {"order_id": order})
    plain = _reload(data_dir)
    ours = _seconds(lambda: env.verify(), 50)
    theirs = _seconds(lambda: upstream_hash(plain), 5)
    print(f"reward  ours {ours * 1e3:8.3f} ms   tau-bench rehash {theirs * 1e3:8.2f} ms   "
          f"ratio {theirs / ours:8.1f}x  (target >= 20x)")


def _decode_at_every_brace(text: str) -> object:
    """The baseline: the first JSON object by ``json``'s decoder tried at each ``{`` in turn."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            return decoder.raw_decode(text, start)[0]
        except (json.JSONDecodeError, RecursionError, ValueError):
            start = text.find("{", start + 1)
    return None


HOSTILE = {
    "run of {": "{",
    'run of {"': '{"',
    "nested objects": '{"a":',
    "flat object": '{"a":1,',
}


def actions() -> None:
    size = DEFAULT_MAX_ACTION_LENGTH
    for name, unit in HOSTILE.items():
        text = unit * (size // len(unit))
        ours = _seconds(lambda: parse_action(text), 5)
        theirs = _seconds(lambda: _decode_at_every_brace(text), 1)
        print(f"parse   {name:16s} {len(text) // 1024} K   ours {ours * 1e3:8.2f} ms   decoder at every {{ "
              f"{theirs * 1e3:9.2f} ms   ratio {theirs / ours:8.1f}x")
    for name, unit in HOSTILE.items():  # linear: doubling the text doubles the time
        small, large = unit * (size // len(unit) // 2), unit * (size // len(unit))
        growth = _seconds(lambda: parse_action(large), 5) / _seconds(lambda: parse_action(small), 5)
        print(f"parse   {name:16s} time at 64 K / time at 32 K {growth:5.2f}  (linear: ~2)")
    env = env_class("calculation")()
    env.reset(seed=0)
    megabyte = "{" * (1 << 20)
    refuse = _seconds(lambda: env.step(megabyte), 20)
    unlimited = max(_seconds(lambda: parse_action(unit * ((1 << 20) // len(unit))), 1) for unit in HOSTILE.values())
    print(f"action  1 MB stepped: refused in {refuse * 1e6:6.1f} us (target < 100 ms); "
          f"parsed with no limit, slowest hostile text: {unlimited * 1e3:7.1f} ms")
    env.close()


def tool_steps() -> None:
    for domain, env_id in ENV_IDS.items():
        try:
            env = env_class(domain)()
        except (ImportError, AttributeError) as exc:
            print(f"steps   {env_id:32s} not available ({exc})")
            continue
        calls = [(t, json.dumps(a.to_json())) for t in env.tasks for a in t.solution.actions[:1]]
        count = 0
        start = time.perf_counter()
        while time.perf_counter() - start < 2.0:
            task, action = calls[count % len(calls)]
            if count % 10 == 0:
                env.reset(options={"task": task})
            env.step(action)
            count += 1
        print(f"steps   {env_id:32s} {count / (time.perf_counter() - start):10.0f} tool steps/s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.envs", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowDefaults)
    parser.add_argument("--taubench-data", type=Path, default=shared_dir(),
                        help="tau-bench's data, a folder holding data/retail (default: $TAUBENCH_DATA_DIR, else "
                        "../shared/taubench where it exists; without it the comparison with tau-bench is skipped)")
    data_dir = parser.parse_args(argv).taubench_data
    if data_dir is None:
        print("bench.envs: tau-bench data not found (../shared/taubench or $TAUBENCH_DATA_DIR); "
              "skipping the reset/reward comparison")
    else:
        taubench_retail(data_dir / "data" / "retail")
    actions()
    tool_steps()


if __name__ == "__main__":
    main()
