"""Environment speed: resets, rewards and tool steps, against tau-bench's own way of doing them.

``python -m bench.envs`` prints, in one run, for the retail world loaded with tau-bench's data:
- reset: ours (a copy-on-write fork of the cached world) vs reloading the JSON files, as tau-bench
  does for every episode (target: at least 100x faster);
- reward: ours (the verifier in the sandbox, on the incremental state hash) vs rehashing the whole
  database as tau-bench does at the end of every episode (target: at least 20x faster);
and tool steps per second for each domain's default tasks.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

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


def main() -> None:
    data_dir = shared_dir()
    if data_dir is None:
        print("bench.envs: tau-bench data not found (../shared/taubench or $TAUBENCH_DATA_DIR); skipping the reset/reward comparison")
    else:
        taubench_retail(data_dir / "data" / "retail")
    tool_steps()


if __name__ == "__main__":
    main()
