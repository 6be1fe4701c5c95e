"""The challenger's throughput: proposals and kept tasks a minute, and where its time goes.

    python -m bench.challenger [--adapter RUN/adapter/challenger] [--domain calculation] [--proposals N]

Plays ``--proposals`` challenger episodes (quick: 8 of at most 256 new tokens; ``--full``: 32 of
512) on fresh worlds in one vector env, as a run's proposals are played, with the default model
(or ``--model``) and a challenger adapter when given (without one, the base model writes almost
nothing that parses, so kept tasks are few). It prints proposals and kept tasks per minute, and
the share of the wall time spent generating (the model's forward passes), running the tools the
challenger explores with, and judging proposals (parse and filter, the verifiers in the sandbox);
the rest is bookkeeping (tokenizing, the vector env).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from agents.decoding import SamplingSettings
from agents.policy import ModelPolicy
from agents.rollout import make_vector_env, play
from bench import LOG_FORMAT, add_model_arguments, chosen_sizes, load_or_exit
from bench.rollout import ForwardClock
from train.progress import heartbeat
from envs.cli import ShowDefaults
from envs.challenger import STAGES
from envs.registry import CHALLENGER_ID, DOMAINS

log = logging.getLogger("bench.challenger")


@dataclass(frozen=True)
class Proposals:
    proposals: int
    cap: int
    explore_turns: int = field(metadata={"at_least": 0})


QUICK, FULL = Proposals(proposals=8, cap=256, explore_turns=1), Proposals(proposals=32, cap=512, explore_turns=1)
HELPS = {"proposals": "challenger episodes, played side by side", "cap": "new tokens a turn at most",
         "explore_turns": "tool calls before the task is written"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.challenger", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowDefaults)
    add_model_arguments(parser, QUICK, FULL, HELPS)
    parser.add_argument("--adapter", help="a challenger LoRA adapter (a run's adapter/challenger folder)")
    parser.add_argument("--domain", choices=sorted(DOMAINS), default="calculation", help="the domain to write for")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    args = parser.parse_args(argv)
    sizes = chosen_sizes(args, QUICK, FULL)
    log.info("loading %s%s on %s", args.model, f" with {args.adapter}" if args.adapter else "", args.device)
    model, tokenizer = load_or_exit(parser, args, args.adapter)
    clock = ForwardClock(model)
    player = ModelPolicy(model, tokenizer, SamplingSettings(temperature=args.temperature, max_new_tokens=sizes.cap))
    envs = make_vector_env(CHALLENGER_ID, sizes.proposals, domain=args.domain, explore_turns=sizes.explore_turns)
    log.info("%d proposals in %s, cap %d, %d exploring turn(s)", sizes.proposals, args.domain, sizes.cap,
             sizes.explore_turns)
    started = time.perf_counter()
    with heartbeat("proposals", log):
        episodes = play(envs, player, sizes.proposals, seed=0)
    wall = time.perf_counter() - started
    envs.close()
    stages = [e.final_info.get("stage", "proposals") for e in episodes]
    reached = {stage: sum(STAGES.index(s) >= STAGES.index(stage) for s in stages) for stage in STAGES}
    tools = sum(e.final_info.get("seconds", {}).get("tools", 0.0) for e in episodes)
    judging = sum(e.final_info.get("seconds", {}).get("filter", 0.0) for e in episodes)
    tokens = sum(sum(e.loss_mask) for e in episodes)
    print(f"challenger  {sizes.proposals} proposals ({args.domain}), {tokens} tokens written, {wall:.1f} s, "
          f"{args.device}: funnel " + " > ".join(f"{reached[s]}" for s in STAGES))
    print(f"rate        {60 * sizes.proposals / wall:.1f} proposals/min, {60 * reached['kept'] / wall:.2f} kept tasks/min "
          f"({60 * reached['new'] / wall:.2f} new), {tokens / wall:.1f} tokens/s")
    print(f"time        generation {100 * clock.seconds / wall:.1f}%, tools {100 * tools / wall:.1f}%, "
          f"sandbox (parse and filter) {100 * judging / wall:.1f}%, other {100 * (wall - clock.seconds - tools - judging) / wall:.1f}%")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, **LOG_FORMAT)
    main()
