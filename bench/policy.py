"""The benchmarks' chat protocol: :meth:`agents.policy.ModelPolicy.complete` turn by turn vs re-encoding each turn with ``model.generate``.

The benchmarks' protocols hand the policy the whole chat as text every turn. ``python -m
bench.policy`` plays 8 retail chats (the retail policy and its 16 tool schemas as the system prompt,
as tau-bench's eval shows them) for 4 turns, greedy, at most 64 new tokens a turn, each observation a
fixed line. It plays them twice: with ``ModelPolicy.complete`` (KV cache grown in place, each turn started
from the last turn's keys and values), and with one left-padded ``model.generate`` call per turn on
the re-rendered chats (what the evaluations' policy did before). It prints the generated tokens per second of
each and their ratio (target: at least 1.5x), and how many replies the two agree on (in fp32 greedy
decoding, all of them unless a near-tie breaks differently).
"""

from __future__ import annotations

import time

import torch

from agents.models import load_model
from agents.decoding import SamplingSettings
from agents.policy import ModelPolicy
from agents.prompting import Message, tools_in_system_prompt
from envs.retail.env import RetailEnv

CHATS, TURNS, CAP = 8, 4, 64


def first_chats() -> list[list[Message]]:
    system = f"{RetailEnv.policy}\n\n{tools_in_system_prompt(RetailEnv.toolset.schemas)}"
    asks = ["Cancel my last order.", "Where is order #W0001?", "Change my address to 1 Main St.",
            "Exchange the shoes I bought.", "What did I pay for my lamp?", "Refund my gift card order.",
            "Which orders are pending?", "Swap the blue shirt for a red one."]
    return [[{"role": "system", "content": system}, {"role": "user", "content": asks[i % len(asks)]}]
            for i in range(CHATS)]


def play(generate, tokenizer) -> tuple[list[list[str]], int, float]:
    """Replies per chat, tokens generated and seconds spent in ``generate`` over :data:`TURNS` turns."""
    chats, replies, tokens, seconds = first_chats(), [[] for _ in range(CHATS)], 0, 0.0
    for turn in range(TURNS):
        start = time.perf_counter()
        said = generate(chats)
        seconds += time.perf_counter() - start
        for chat, reply, kept in zip(chats, said, replies):
            kept.append(reply)
            tokens += len(tokenizer(reply, add_special_tokens=False)["input_ids"])
            chat += [{"role": "assistant", "content": reply}, {"role": "tool", "content": f"(result {turn})"}]
    return replies, tokens, seconds


def reencoding(policy: ModelPolicy):
    """One ``model.generate`` call per turn on the whole re-rendered chats, left-padded."""
    tokenizer, model = policy.tokenizer, policy.model
    pad = tokenizer.pad_token_id

    @torch.inference_mode()
    def generate(chats: list[list[Message]]) -> list[str]:
        prompts = [policy.encode(chat) for chat in chats]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=CAP, do_sample=False, pad_token_id=pad)
        return [tokenizer.decode(row, skip_special_tokens=True) for row in out[:, width:].tolist()]

    return generate


def main() -> None:
    model, tokenizer = load_model()
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=CAP)
    policy = ModelPolicy(model, tokenizer, greedy)
    policy.complete([[{"role": "user", "content": "Hi"}]])  # warm-up
    ours, ours_tokens, ours_seconds = play(ModelPolicy(model, tokenizer, greedy).complete, tokenizer)
    theirs, theirs_tokens, theirs_seconds = play(reencoding(policy), tokenizer)
    prompt = len(policy.encode(first_chats()[0]))
    agree = sum(a == b for mine, other in zip(ours, theirs) for a, b in zip(mine, other))
    rate, baseline = ours_tokens / ours_seconds, theirs_tokens / theirs_seconds
    print(f"complete  {CHATS} chats x {TURNS} turns, {prompt}-token first prompt, cap {CAP}: "
          f"{ours_tokens} tokens in {ours_seconds:.1f} s = {rate:.1f} tokens/s")
    print(f"generate  re-encoding each turn:  {theirs_tokens} tokens in {theirs_seconds:.1f} s = {baseline:.1f} tokens/s")
    print(f"ratio     {rate / baseline:.2f}x  (target >= 1.5x); replies that agree: {agree} of {CHATS * TURNS}")


if __name__ == "__main__":
    main()
