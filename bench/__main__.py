"""Run every benchmark in ``bench/``, each in its own process (``python -m bench``, ``make bench``).

    python -m bench [--full] [--device auto|cpu|cuda] [--model NAME_OR_DIR] [--only NAME ...]

By default each runs at its quick size, so that the whole takes about 8 minutes on 2 CPU cores (13 on
a busy machine) with every ratio printed; ``--full`` (``make bench FULL=1``) runs the long versions (about an
hour there, estimated). A benchmark's output shows as it comes; a line says it is still running
whenever it has been silent for 20 s. At the end: each benchmark's wall time, and every ratio line
again, in one place. The exit code is 1 when a benchmark failed (the others still run).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench import LOG_FORMAT, add_argument_device
from train.progress import HEARTBEAT_S
from envs.cli import ShowDefaults

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Benchmark:
    """A module of ``bench/`` and the arguments of its quick and long versions."""

    name: str
    quick: tuple[str, ...] = ()
    full: tuple[str, ...] = ()
    on_device: bool = False
    """Takes ``--device`` and ``--model`` (the model benchmarks)."""


BENCHMARKS = (
    Benchmark("envs"),
    # Best of 3 rounds: this 2-core machine swings the ratio 12-20x from run to run (fork-heavy work).
    Benchmark("sandbox", quick=("--seconds", "1.5", "--rounds", "3")),
    Benchmark("rollout", full=("--full",), on_device=True),
    Benchmark("policy", full=("--full",), on_device=True),
    Benchmark("train", full=("--full",), on_device=True),
    Benchmark("challenger", full=("--full",), on_device=True),
)

RATIO = re.compile(r"\bratios?\b|\d\.?\d*x\b")
"""A line that reports a ratio ("ratio 3.35x", "local / naive  12.0x (1 caller)")."""


@dataclass
class Outcome:
    name: str
    seconds: float
    returncode: int
    ratios: list[str] = field(default_factory=list)


def relay(command: Sequence[str], what: str, heartbeat: float = HEARTBEAT_S) -> tuple[int, str]:
    """Run ``command``, passing its output (stdout and stderr) through as it comes and logging
    "<what>: still running" after each ``heartbeat`` seconds of silence; its exit code and output."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})  # prints in order with the log
    seen = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while True:
            if not selector.select(timeout=heartbeat):
                log.info("%s: still running (%.0f s)", what, time.perf_counter() - started)
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                break
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            seen += chunk
    return child.wait(), seen.decode("utf-8", "replace")


def run_one(benchmark: Benchmark, full: bool, device: str | None, model: str | None) -> Outcome:
    command = [sys.executable, "-m", f"bench.{benchmark.name}", *(benchmark.full if full else benchmark.quick)]
    if benchmark.on_device and device:
        command += ["--device", device]
    if benchmark.on_device and model:
        command += ["--model", model]
    log.info("== bench.%s (%s)", benchmark.name, " ".join(command[3:]) or "no arguments")
    started = time.perf_counter()
    code, output = relay(command, f"bench.{benchmark.name}")
    ratios = [line.strip() for line in output.replace("\r", "\n").splitlines()
              if RATIO.search(line) and not re.match(r"\d\d:\d\d:\d\d ", line)]
    return Outcome(benchmark.name, time.perf_counter() - started, code, ratios)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowDefaults)
    parser.add_argument("--full", action="store_true", help="the long version of every benchmark")
    add_argument_device(parser, "device of the model benchmarks (default: auto, cuda when there is one, else cpu)",
                        default=argparse.SUPPRESS)
    parser.add_argument("--model", default=argparse.SUPPRESS, help="model name or directory of the model "
                        "benchmarks (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], metavar="NAME",
                        default=argparse.SUPPRESS, help=f"run only these (default: all of {', '.join(b.name for b in BENCHMARKS)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, **LOG_FORMAT)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train/__main__.py: spinning threads thrash 2 cores
    only, device, model = (getattr(args, name, None) for name in ("only", "device", "model"))
    outcomes = [run_one(b, args.full, device, model) for b in BENCHMARKS if not only or b.name in only]
    print(f"\n== bench summary ({'full' if args.full else 'quick'} sizes)")
    for outcome in outcomes:
        status = "" if outcome.returncode == 0 else f"  FAILED (exit code {outcome.returncode})"
        print(f"bench.{outcome.name}: {outcome.seconds / 60:.1f} min{status}")
        for line in outcome.ratios:
            print(f"    {line}")
    print(f"total: {sum(o.seconds for o in outcomes) / 60:.1f} min")
    return 1 if any(o.returncode for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
