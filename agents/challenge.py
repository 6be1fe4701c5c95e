"""The LLM challenger: the model explores a domain's tools, then writes Code-as-Tasks for a pool.

Each proposal is an episode of the challenger env (:mod:`envs.challenger`), played in a vector env
like any other episode; the env parses the proposal and runs it through the filter in the sandbox.
The funnel counts how far proposals get, and why the others stopped::

    proposals -> parsed -> verifier ran -> solution passes -> kept (every failure case rejected) -> new

Command line (resumable: re-running tops the pool up to ``--n`` kept tasks of that domain, going on
from the proposals the last run made, and stops after ``--max-proposals`` proposals in any case)::

    python -m agents.challenge --domain retail --n 200 --model <id or path> --out pools/retail.jsonl

It shows the live funnel and an ETA while it runs, and ends with a summary: the funnel, and the
most common reasons proposals failed with an example of each, also saved beside the pool, one
file per domain (``<out>.<domain>.funnel.json``: it is also where a rerun goes on from).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.cli import ShowDefaults, seed_number
from envs.challenger import STAGES
from envs.registry import DOMAINS

log = logging.getLogger(__name__)

PROPOSALS_PER_TASK = 8
"""Default proposals per kept task wanted: a warm-started 135M challenger keeps about one in ten."""
EXAMPLE_CHARS = 600
"""How much of a failed proposal the summary keeps as the example of its reason."""


@dataclass
class Funnel:
    """How many proposals reached each stage, why the others stopped, and an example of each reason."""

    reached: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, info: Mapping[str, Any], proposal: str = "", fallback: str = "unparsed") -> None:
        """Count one finished challenger episode by its final ``info`` (:mod:`envs.challenger`);
        ``fallback`` names why an episode with no stage ended (a context limit, say)."""
        stage = info.get("stage", "proposals")
        for reached in STAGES[:STAGES.index(stage) + 1]:
            self.reached[reached] += 1
        if stage != "new":
            reason = info.get("reason") or fallback
            self.reasons[reason] += 1
            self.examples.setdefault(reason, {"detail": str(info.get("detail", ""))[:EXAMPLE_CHARS],
                                              "proposal": proposal[:EXAMPLE_CHARS]})

    def postfix(self) -> str:
        """The funnel in one line, for a progress bar."""
        return " > ".join(f"{self.reached[s]}" for s in STAGES[1:])

    def table(self, top: int = 5) -> str:
        total = self.reached["proposals"] or 1
        lines = [f"{stage:16s} {self.reached[stage]:6d}  {100 * self.reached[stage] / total:5.1f}%" for stage in STAGES]
        for reason, count in self.reasons.most_common(top):
            example = self.examples.get(reason, {})
            detail = example.get("detail")  # escaped: text from the model and its code
            lines.append(f"  stopped: {reason} {count}" + (f" ({detail[:160]!r})" if detail else ""))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"reached": {s: self.reached[s] for s in STAGES}, "reasons": dict(self.reasons),
                "examples": self.examples}


def proposals_made(saved: Path, domain: str, seed: int) -> int:
    """How many proposals earlier runs into this pool made from ``seed`` (as its funnel file says):
    a rerun starts after them, on worlds and draws of its own, rather than writing their tasks again."""
    try:
        earlier = json.loads(saved.read_text())
        if earlier["domain"] == domain and earlier["seed"] == seed:
            return int(earlier["first_proposal"]) + int(earlier["proposals"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no earlier run, or one from before this was saved: start at the seed
    return 0


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from agents.models import DEFAULT_MODEL, DeviceError, ModelNotFoundError
    from agents.policy import load_model_policy
    from agents.rollout import VECTORIZATION_MODES, make_vector_env, play
    from envs.cat import CodeAsTask
    from envs.records import writable
    from envs.pool import PoolError, append_pool, load_pool
    from envs.records import write_atomic
    from envs.registry import CHALLENGER_ID
    from eval.cli import InputError, check_sampling

    parser = argparse.ArgumentParser(prog="python -m agents.challenge", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowDefaults)
    parser.add_argument("--domain", required=True, choices=sorted(DOMAINS), default=argparse.SUPPRESS,
                        help="the domain to write tasks for")
    parser.add_argument("--out", type=Path, required=True, default=argparse.SUPPRESS,
                        help="the pool (JSONL) to append kept tasks to")
    parser.add_argument("--n", type=int, default=50, help="kept tasks of this domain wanted in the pool")
    parser.add_argument("--max-proposals", type=int, default=argparse.SUPPRESS,
                        help=f"stop after this many proposals in this run (default: {PROPOSALS_PER_TASK} per task "
                        "wanted, about 1.5 min each on a 2-core CPU)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"HF model id or local directory ({DEFAULT_MODEL!r}: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--adapter", help="a challenger LoRA adapter directory (peft format)")
    parser.add_argument("--batch-size", type=int, default=4, help="challenger episodes generated together (the "
                        "funnel and the ETA update after each batch)")
    parser.add_argument("--explore-turns", type=int, default=1, help="tool calls before the task is written")
    parser.add_argument("--max-new-tokens", type=int, default=384, help="token cap of one turn")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    parser.add_argument("--vectorization", choices=VECTORIZATION_MODES, default="sync",
                        help="episodes stepped (and judged) in this process or in worker processes")
    parser.add_argument("--seed", type=seed_number, default=0, help="seed of the worlds and the sampler")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ..., or auto: the GPU if there is one")
    args = parser.parse_args(argv)
    args.max_proposals = getattr(args, "max_proposals", PROPOSALS_PER_TASK * max(args.n, 1))
    if args.n < 1 or args.max_proposals < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        parser.error("--n, --max-proposals, --batch-size and --max-new-tokens must be positive")
    try:
        check_sampling(temperature=args.temperature)
    except InputError as error:
        parser.error(str(error))
    if args.explore_turns < 0:
        parser.error(f"--explore-turns must be at least 0, got {args.explore_turns}")
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a folder: name a JSONL file")
    if not writable(args.out):  # found before the model loads and the proposals are played
        parser.error(f"--out {args.out} cannot be written here (a read-only disk, or another's file)")
    try:
        pool = load_pool(args.out) if args.out.exists() else []
    except PoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    held, have = {task.id for task in pool}, sum(task.domain == args.domain for task in pool)
    saved = args.out.with_name(f"{args.out.name}.{args.domain}.funnel.json")
    first = proposals_made(saved, args.domain, args.seed)
    try:
        player = load_model_policy(args.model, args.adapter, device=args.device, temperature=args.temperature,
                                   max_new_tokens=args.max_new_tokens)
    except (ModelNotFoundError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted while loading the model: nothing was written", file=sys.stderr)
        return 130
    name = args.model + (f"+{Path(args.adapter).name}" if args.adapter else "")
    envs = make_vector_env(CHALLENGER_ID, args.batch_size, args.vectorization, domain=args.domain,
                           explore_turns=args.explore_turns, challenger=f"llm:{name}")
    funnel, proposals, started, had = Funnel(), 0, time.perf_counter(), have
    interrupted = False
    with tqdm(total=args.max_proposals, desc=f"{args.domain} proposals", unit="proposal") as bar:
        try:
            while have < args.n and proposals < args.max_proposals:
                size = min(args.batch_size, args.max_proposals - proposals)
                for episode in play(envs, player, size, seed=args.seed + first + proposals):
                    proposal = next((m["content"] for m in reversed(episode.messages) if m["role"] == "assistant"), "")
                    funnel.add(episode.final_info, proposal, episode.end_reason)
                    task = CodeAsTask.from_json(episode.final_info["task"]) if "task" in episode.final_info else None
                    if task is not None and task.id not in held and have < args.n:
                        append_pool(args.out, [task])
                        held.add(task.id)
                        have += 1
                proposals += size
                bar.update(size)
                bar.set_postfix_str(f"parsed > ran > passed > kept > new: {funnel.postfix()}")
        except KeyboardInterrupt:  # the kept tasks are in the pool already; the funnel so far is saved below
            interrupted = True
        except OSError as exc:  # a full disk: the tasks appended before stay in the pool
            envs.close()
            print(f"error: {exc}; the pool holds the tasks kept before it", file=sys.stderr)
            return 2
    envs.close()
    minutes = (time.perf_counter() - started) / 60
    summary = {"domain": args.domain, "model": name, "seed": args.seed, "first_proposal": first,
               "proposals": proposals, "minutes": round(minutes, 2), "pool": str(args.out), "pool_tasks": have,
               **funnel.to_json()}
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(saved, json.dumps(summary, indent=1))
    except OSError as exc:
        print(f"error: the funnel was not saved ({exc}); the pool holds the tasks kept", file=sys.stderr)
        return 2
    stop = ("interrupted (the batch under way is not counted)" if interrupted else "it holds the --n wanted"
            if have >= args.n else f"--max-proposals {args.max_proposals} reached")
    print(f"{args.domain}: {proposals} proposals in {minutes:.1f} min, {funnel.reached['kept']} kept "
          f"({have - had} added); pool {args.out} holds {have} {args.domain} tasks; "
          f"stopped: {stop}")
    print(funnel.table())
    print(f"funnel and an example of each failure: {saved}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
