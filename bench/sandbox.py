"""Sandbox throughput: verifications per second for each backend against the naive way of doing
the same thing, all measured in one process so that the ratios compare like with like.

    python -m bench.sandbox [--seconds 3] [--rounds 3] [--workers N] [--no-docker]

Contenders, each running the same small verifier on the same small state and answer:
- ``local``: the local sandbox (pre-started workers, each job in a pre-forked child);
- ``naive``: ``subprocess.run([python, "-c", RUNNER, source, state_and_answer_json])`` per call, what
  a verifier runner without a sandbox does (and it isolates nothing), ``python`` being this
  interpreter; ``naive -I -S`` is the same with the interpreter's quickest start (no site
  packages), the hardest baseline a fresh process per call can set;
- ``docker``: the docker sandbox (long-lived worker containers);
- ``docker run``: ``docker run --rm --network none IMAGE python3 -c …`` per call.
Each is timed for one sequential caller and for 2 caller threads. A rate is the best of
``--rounds`` rounds; the rounds interleave the contenders so that a shared machine's drift hits all
alike. Targets: local ≥ 15× naive, docker ≥ 100× docker run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from bench import at_least
from envs.cli import ShowDefaults
from envs.sandbox import Sandbox, make_sandbox

log = logging.getLogger(__name__)

SOURCE = """def verify(state, answer):
    order = state["orders"]["#W1"]
    return order["status"] == "cancelled" and "#W1" in answer and len(order["items"]) == 2
"""
STATE = {"orders": {"#W1": {"status": "cancelled", "items": [{"id": 1, "price": 9.5}, {"id": 2, "price": 3.0}]}},
         "user": {"id": "u1", "name": "Ada"}}
ANSWER = "Order #W1 is cancelled."
# What a naive runner executes per call: load the verifier, decode state and answer, print the verdict.
RUNNER = ("import json, sys\nns = {}\nexec(sys.argv[1], ns)\nstate, answer = json.loads(sys.argv[2])\n"
          "print(json.dumps(bool(ns['verify'](state, answer))))\n")
# (faster, baseline): target ratio, or None for a ratio reported without one.
TARGETS: dict[tuple[str, str], float | None] = {
    ("local", "naive"): 15.0, ("local", "naive -I -S"): None, ("docker", "docker run"): 100.0}


def sandbox_call(sandbox: Sandbox) -> Callable[[], None]:
    def call() -> None:
        result = sandbox.verify(SOURCE, STATE, ANSWER)
        if result.status != "ok":
            raise RuntimeError(f"the sandbox got the verification wrong: {result}")
    return call


def naive_call(argv_head: list[str]) -> Callable[[], None]:
    """One process per verification, with ``argv_head`` in front (``[python]`` or ``docker run …``)."""
    payload = json.dumps([STATE, ANSWER])

    def call() -> None:
        out = subprocess.run([*argv_head, "-c", RUNNER, SOURCE, payload], capture_output=True, text=True)
        if out.stdout.strip() != "true":
            raise RuntimeError(f"{argv_head[0]} got the verification wrong: {out.stdout!r} {out.stderr[-500:]!r}")
    return call


def rate(call: Callable[[], None], seconds: float, threads: int, min_calls: int = 3) -> float:
    """Calls per second from ``threads`` callers looping for ``seconds`` (and at least ``min_calls`` each)."""
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while counts[i] < min_calls or time.perf_counter() < deadline:
            call()
            counts[i] += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[tuple[str, int], float]:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowDefaults)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing of one contender in one round")
    parser.add_argument("--rounds", type=at_least(1), default=3, help="rounds; each rate is the best round")
    parser.add_argument("--workers", type=at_least(1), default=None,
                        help="pool size of both sandboxes (unset: each backend's own size)")
    parser.add_argument("--no-docker", action="store_true", help="leave out the docker contenders")
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error(f"--seconds must be above 0, got {args.seconds}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    pool = {} if args.workers is None else {"workers": args.workers}
    sandboxes: dict[str, Sandbox] = {"local": make_sandbox("local", **pool)}
    contenders: dict[str, Callable[[], None]] = {"local": sandbox_call(sandboxes["local"]),
                                                 "naive": naive_call([sys.executable]),
                                                 "naive -I -S": naive_call([sys.executable, "-I", "-S"])}
    if not args.no_docker:
        try:
            from envs.sandbox.docker import IMAGE
            sandboxes["docker"] = make_sandbox("docker", **pool)
            contenders["docker"] = sandbox_call(sandboxes["docker"])
            contenders["docker run"] = naive_call(["docker", "run", "--rm", "--network", "none", IMAGE, "python3"])
        except Exception as exc:  # no engine, no image, no SDK: say so and bench the rest
            log.warning("docker contenders left out: %s", exc)
    try:
        for sandbox in sandboxes.values():
            sandbox.warm_up()
        best: dict[tuple[str, int], float] = {}
        for round_ in range(args.rounds):
            for name, call in contenders.items():
                call()  # a warm call: first use may start a worker or page in an interpreter
                for threads in (1, 2):
                    r = rate(call, args.seconds, threads)
                    best[name, threads] = max(best.get((name, threads), 0.0), r)
                    log.info("round %d  %-10s %d caller(s)  %8.1f /s", round_ + 1, name, threads, r)
    finally:
        for sandbox in sandboxes.values():
            sandbox.close()

    sizes = {name: box.size for name, box in sandboxes.items()}
    print(f"\nsandbox throughput, verifications/s (best of {args.rounds} rounds of {args.seconds:g} s; "
          f"{os.cpu_count()} CPUs)")
    print(f"  {'contender':<24}{'1 caller':>10}{'2 threads':>11}")
    for name in contenders:
        label = f"{name} ({sizes[name]} workers)" if name in sizes else name
        print(f"  {label:<24}{best[name, 1]:>10.1f}{best[name, 2]:>11.1f}")
    print("  ratios (same process, same rounds):")
    for (fast, slow), target in TARGETS.items():
        if fast in contenders:
            cells = "  ".join(f"{best[fast, t] / best[slow, t]:6.1f}x ({t} caller{'s' if t > 1 else ''})"
                              for t in (1, 2))
            print(f"    {fast + ' / ' + slow:<22}{cells}" + (f"   target >= {target:g}x" if target else ""))
    return best


if __name__ == "__main__":
    main()
