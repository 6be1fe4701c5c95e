"""Rollout throughput: our batched multi-turn rollout vs plain ``model.generate`` on the same prompts.

    python -m bench.rollout [--device auto|cpu|cuda] [--full] [--episodes N] [--turns N] [--cap N]

Plays web-browsing episodes (quick: 8 episodes of 3 turns, 32 new tokens a turn; ``--full``: 8 of 4,
64) with the default model, greedy, in a vector env as training plays them, then replays every
turn's exact prompts through ``model.generate`` (left-padded batch, same token cap), and prints
generated tokens per second of each, their ratio (target: at least 0.85x) and, on the CPU, the share of
rollout time spent outside the model (env steps, tokenizing, bookkeeping); then plays them again, sync
and async, and prints the share of the time spent in env steps with the sub-envs in this process and
with one worker process each.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from gymnasium.vector import VectorEnv, VectorWrapper

from agents.decoding import SamplingSettings
from agents.policy import ModelPolicy, Trajectory
from agents.rollout import make_vector_env, play
from bench import EPISODES_HELPS, LOG_FORMAT, Episodes, add_model_arguments, chosen_sizes, load_or_exit
from train.progress import heartbeat
from envs.cli import ShowDefaults
from envs.registry import ENV_IDS

log = logging.getLogger("bench.rollout")


QUICK, FULL = Episodes(episodes=8, turns=3, cap=32), Episodes(episodes=8, turns=4, cap=64)


class ForwardClock:
    """Seconds spent inside the model's forward passes (hooks on the top module)."""

    def __init__(self, model: torch.nn.Module):
        self.seconds = 0.0
        self._start = 0.0
        model.register_forward_pre_hook(lambda *_: self._begin())
        model.register_forward_hook(lambda *_: self._end())

    def _begin(self) -> None:
        self._start = time.perf_counter()

    def _end(self) -> None:
        self.seconds += time.perf_counter() - self._start


class TimedEnvs(VectorWrapper):
    """A vector env that adds up the seconds its steps and resets take (in its worker processes and
    the pipes to them, when it is async)."""

    def __init__(self, env: VectorEnv):
        super().__init__(env)
        self.seconds = 0.0

    def step(self, actions: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.env.step(actions)
        finally:
            self.seconds += time.perf_counter() - started

    def reset(self, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.env.reset(**kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def env_share(model: torch.nn.Module, tokenizer: Any, settings: SamplingSettings, sizes: Episodes,
              mode: str) -> tuple[float, list[Trajectory]]:
    """The share of a rollout's time spent in env steps and resets, with ``mode`` vectorization."""
    envs = TimedEnvs(make_vector_env(ENV_IDS["web"], sizes.episodes, mode, max_turns=sizes.turns))
    started = time.perf_counter()
    with heartbeat(f"rollout ({mode})", log):
        played = play(envs, ModelPolicy(model, tokenizer, settings), sizes.episodes, seed=0)
    share = envs.seconds / (time.perf_counter() - started)
    envs.close()
    return share, played


@torch.inference_mode()
def generate_same_turns(model: torch.nn.Module, pad_id: int, eos_id: int, trajectories: list[Trajectory],
                        settings: SamplingSettings, turns: int) -> tuple[int, float]:
    """Tokens generated and seconds taken by ``model.generate`` on each turn's recorded prompts."""
    tokens, seconds = 0, 0.0
    for turn in range(turns):
        prompts = [t.token_ids[:t.turn_starts[turn]] for t in trajectories if t.num_turns > turn]
        if not prompts:
            break
        width = max(map(len, prompts))
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
        start = time.perf_counter()
        with heartbeat(f"generate, turn {turn + 1}", log):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                 do_sample=False, pad_token_id=pad_id)
        took = time.perf_counter() - start
        seconds += took
        for row in out[:, width:].tolist():
            tokens += row.index(eos_id) + 1 if eos_id in row else len(row)
        log.info("generate: turn %d of %d took %.1f s", turn + 1, turns, took)
    return tokens, seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowDefaults)
    add_model_arguments(parser, QUICK, FULL, EPISODES_HELPS)
    args = parser.parse_args(argv)
    sizes = chosen_sizes(args, QUICK, FULL)
    if args.device == "cpu":
        torch.set_num_threads(1)  # on a shared 2-core machine, 2 threads thrash: a forward takes 10x longer
    log.info("loading %s on %s", args.model, args.device)
    model, tokenizer = load_or_exit(parser, args)
    clock = ForwardClock(model)
    settings = SamplingSettings(temperature=0.0, max_new_tokens=sizes.cap)
    envs = make_vector_env(ENV_IDS["web"], sizes.episodes, max_turns=sizes.turns)
    play(envs, ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=4)), 1, seed=0)  # warm-up
    clock.seconds = 0.0
    log.info("rollout: %d episodes x %d turns, cap %d", sizes.episodes, sizes.turns, sizes.cap)
    start = time.perf_counter()
    with heartbeat("rollout", log):
        trajectories = play(envs, ModelPolicy(model, tokenizer, settings), sizes.episodes, seed=0)
    ours_seconds = time.perf_counter() - start
    envs.close()
    log.info("rollout: took %.1f s", ours_seconds)
    ours_tokens = sum(sum(t.loss_mask) for t in trajectories)
    outside = (ours_seconds - clock.seconds) / ours_seconds
    theirs_tokens, theirs_seconds = generate_same_turns(model, tokenizer.pad_token_id, tokenizer.eos_token_id,
                                                        trajectories, settings, sizes.turns)
    ours, theirs = ours_tokens / ours_seconds, theirs_tokens / theirs_seconds
    print(f"rollout   {sizes.episodes} envs x {sizes.turns} turns, cap {sizes.cap}, {args.device}: "
          f"{ours_tokens} tokens in {ours_seconds:.1f} s = {ours:.1f} tokens/s")
    print(f"generate  same prompts and budget:       {theirs_tokens} tokens in {theirs_seconds:.1f} s = {theirs:.1f} tokens/s")
    print(f"ratio     {ours / theirs:.2f}x  (target >= 0.85x)")
    if args.device == "cpu":  # on a GPU the hooks would time kernel launches, and a CUDA graph's replay calls none
        print(f"outside the model (env steps, tokenizing, bookkeeping): {100 * outside:.1f}% of rollout time")
    shares = {mode: env_share(model, tokenizer, settings, sizes, mode) for mode in ("sync", "async")}
    same = [t.token_ids for t in shares["sync"][1]] == [t.token_ids for t in shares["async"][1]]
    print(f"env steps {100 * shares['sync'][0]:.1f}% of rollout time in this process (sync), "
          f"{100 * shares['async'][0]:.1f}% with {sizes.episodes} worker processes (async); "
          f"the same episodes: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, **LOG_FORMAT)
    main()
