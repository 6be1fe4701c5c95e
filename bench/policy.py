"""The benchmarks' chat protocol: :meth:`agents.policy.ModelPolicy.complete` turn by turn vs re-encoding each turn with ``model.generate``.

    python -m bench.policy [--device auto|cpu|cuda] [--full] [--episodes N] [--turns N] [--cap N]

The benchmarks' protocols hand the policy the whole chat as text every turn. ``python -m
bench.policy`` plays retail chats (the retail policy and its 16 tool schemas as the system prompt,
about 3,200 tokens, as tau-bench's eval shows them) for a few turns, greedy, a capped number of new
tokens a turn, each observation a fixed line. It plays them twice: with ``ModelPolicy.complete`` (KV cache
grown in place, each turn started from the last turn's keys and values), and with one left-padded
``model.generate`` call per turn on the re-rendered chats (what the evaluations' policy did before). It prints
the generated tokens per second of each and their ratio (target: at least 1.5x), and how many
replies the two agree on (in fp32 greedy decoding, all of them unless a near-tie breaks
differently). Quick: 2 chats x 3 turns, 32 new tokens; ``--full``: 8 x 4, 64 (about 20 minutes on
2 CPU cores, most of it the baseline re-encoding the long prompt).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence

import torch

from agents.decoding import SamplingSettings
from agents.policy import ModelPolicy
from agents.prompting import Message, tools_in_system_prompt
from bench import EPISODES_HELPS, LOG_FORMAT, Episodes, add_model_arguments, chosen_sizes, load_or_exit
from train.progress import heartbeat
from envs.cli import ShowDefaults
from envs.retail.env import RetailEnv

log = logging.getLogger("bench.policy")


QUICK, FULL = Episodes(episodes=2, turns=3, cap=32), Episodes(episodes=8, turns=4, cap=64)

Generate = Callable[[list[list[Message]]], list[str]]


def first_chats(n: int) -> list[list[Message]]:
    system = f"{RetailEnv.policy}\n\n{tools_in_system_prompt(RetailEnv.toolset.schemas)}"
    asks = ["Cancel my last order.", "Where is order #W0001?", "Change my address to 1 Main St.",
            "Exchange the shoes I bought.", "What did I pay for my lamp?", "Refund my gift card order.",
            "Which orders are pending?", "Swap the blue shirt for a red one."]
    return [[{"role": "system", "content": system}, {"role": "user", "content": asks[i % len(asks)]}]
            for i in range(n)]


def play(name: str, generate: Generate, tokenizer, sizes: Episodes) -> tuple[list[list[str]], int, float]:
    """Replies per chat, tokens generated and seconds spent in ``generate`` over ``sizes.turns`` turns."""
    chats, replies, tokens, seconds = first_chats(sizes.episodes), [[] for _ in range(sizes.episodes)], 0, 0.0
    for turn in range(sizes.turns):
        start = time.perf_counter()
        with heartbeat(f"{name}, turn {turn + 1} of {sizes.turns}", log):
            said = generate(chats)
        took = time.perf_counter() - start
        seconds += took
        for chat, reply, kept in zip(chats, said, replies):
            kept.append(reply)
            tokens += len(tokenizer(reply, add_special_tokens=False)["input_ids"])
            chat += [{"role": "assistant", "content": reply}, {"role": "tool", "content": f"(result {turn})"}]
        log.info("%s: turn %d of %d took %.1f s", name, turn + 1, sizes.turns, took)
    return replies, tokens, seconds


def reencoding(policy: ModelPolicy, cap: int) -> Generate:
    """One ``model.generate`` call per turn on the whole re-rendered chats, left-padded."""
    tokenizer, model = policy.tokenizer, policy.model
    pad = tokenizer.pad_token_id

    @torch.inference_mode()
    def generate(chats: list[list[Message]]) -> list[str]:
        prompts = [policy.encode(chat) for chat in chats]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cap, do_sample=False, pad_token_id=pad)
        return [tokenizer.decode(row, skip_special_tokens=True) for row in out[:, width:].tolist()]

    return generate


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policy", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowDefaults)
    add_model_arguments(parser, QUICK, FULL, EPISODES_HELPS)
    args = parser.parse_args(argv)
    sizes = chosen_sizes(args, QUICK, FULL)
    log.info("loading %s on %s", args.model, args.device)
    model, tokenizer = load_or_exit(parser, args)
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=sizes.cap)
    policy = ModelPolicy(model, tokenizer, greedy)
    policy.complete([[{"role": "user", "content": "Hi"}]])  # warm-up
    prompt = len(policy.encode(first_chats(1)[0]))
    log.info("%d chats x %d turns, %d-token first prompt, cap %d", sizes.episodes, sizes.turns, prompt, sizes.cap)
    ours, ours_tokens, ours_seconds = play("complete", ModelPolicy(model, tokenizer, greedy).complete, tokenizer, sizes)
    theirs, theirs_tokens, theirs_seconds = play("re-encoding", reencoding(policy, sizes.cap), tokenizer, sizes)
    agree = sum(a == b for mine, other in zip(ours, theirs) for a, b in zip(mine, other))
    rate, baseline = ours_tokens / ours_seconds, theirs_tokens / theirs_seconds
    print(f"complete  {sizes.episodes} chats x {sizes.turns} turns, {prompt}-token first prompt, cap {sizes.cap}, "
          f"{args.device}: {ours_tokens} tokens in {ours_seconds:.1f} s = {rate:.1f} tokens/s")
    print(f"generate  re-encoding each turn:  {theirs_tokens} tokens in {theirs_seconds:.1f} s = {baseline:.1f} tokens/s")
    print(f"ratio     {rate / baseline:.2f}x  (target >= 1.5x); replies that agree: {agree} of {sizes.episodes * sizes.turns}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, **LOG_FORMAT)
    main()
