"""Rollout throughput: our batched multi-turn rollout vs plain ``model.generate`` on the same prompts.

``python -m bench.rollout`` plays 8 web-browsing episodes of 4 turns with the default model (in a
vector env, as training plays them), then
replays every turn's exact prompts through ``model.generate`` (left-padded batch, same token cap and
sampling), and prints generated tokens per second of each, their ratio (target: at least 0.85x) and
the share of rollout time spent outside the model (env steps, tokenizing, bookkeeping).
"""

from __future__ import annotations

import time

import torch

from agents.decoding import SamplingSettings
from agents.models import load_model
from agents.policy import ModelPolicy, Trajectory
from agents.rollout import make_vector_env, play
from envs.registry import ENV_IDS

EPISODES, TURNS, CAP = 8, 4, 64


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


@torch.inference_mode()
def generate_same_turns(model: torch.nn.Module, pad_id: int, eos_id: int, trajectories: list[Trajectory],
                        settings: SamplingSettings) -> tuple[int, float]:
    """Tokens generated and seconds taken by ``model.generate`` on each turn's recorded prompts."""
    tokens, seconds = 0, 0.0
    for turn in range(TURNS):
        prompts = [t.token_ids[:t.turn_starts[turn]] for t in trajectories if t.num_turns > turn]
        if not prompts:
            break
        width = max(map(len, prompts))
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        start = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                             do_sample=False, pad_token_id=pad_id)
        seconds += time.perf_counter() - start
        for row in out[:, width:].tolist():
            tokens += row.index(eos_id) + 1 if eos_id in row else len(row)
    return tokens, seconds


def main() -> None:
    torch.set_num_threads(1)  # on a shared 2-core machine, 2 threads thrash: a forward takes 10x longer
    model, tokenizer = load_model()
    clock = ForwardClock(model)
    settings = SamplingSettings(temperature=0.0, max_new_tokens=CAP)
    envs = make_vector_env(ENV_IDS["web"], EPISODES, max_turns=TURNS)
    play(envs, ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=4)), 1, seed=0)  # warm-up
    clock.seconds = 0.0
    start = time.perf_counter()
    trajectories = play(envs, ModelPolicy(model, tokenizer, settings), EPISODES, seed=0)
    ours_seconds = time.perf_counter() - start
    envs.close()
    ours_tokens = sum(sum(t.loss_mask) for t in trajectories)
    outside = (ours_seconds - clock.seconds) / ours_seconds
    theirs_tokens, theirs_seconds = generate_same_turns(model, tokenizer.pad_token_id, tokenizer.eos_token_id,
                                                        trajectories, settings)
    ours, theirs = ours_tokens / ours_seconds, theirs_tokens / theirs_seconds
    print(f"rollout   {EPISODES} envs x {TURNS} turns, cap {CAP}: {ours_tokens} tokens in {ours_seconds:.1f} s = {ours:.1f} tokens/s")
    print(f"generate  same prompts and budget:       {theirs_tokens} tokens in {theirs_seconds:.1f} s = {theirs:.1f} tokens/s")
    print(f"ratio     {ours / theirs:.2f}x  (target >= 0.85x)")
    print(f"outside the model (env steps, tokenizing, bookkeeping): {100 * outside:.1f}% of rollout time")


if __name__ == "__main__":
    main()
