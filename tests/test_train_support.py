"""What the trainer's tests share (no tests here): a one-word bandit domain, tiny models, pools.

The bandit: the instruction asks for one word, and the episode's one action is rewarded 1 when it
starts with that word. The tiny model puts all its probability on eight candidate words (one of
them right), so the untrained policy succeeds 8% of the time and learning is a matter of a few
dozen small steps, which is what the learning tests need on two CPU cores.

The model's head sees one hidden dimension that no layer writes (its embedding is 1 everywhere and
the layers' output projections leave it alone), so the head can give the candidates a large,
input-independent lead, and level them: what the other dimensions give each word on the bandit's
prompt is taken back through that one, and the right word set half a logit behind (so that greedy
decoding says another). The order then moves with the other dimensions, which the LoRA adapter
can change. Subprocess runs import this module through ``extra_domains``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from agents.models import load_tokenizer
from agents.prompting import ChatFormat
from envs.base import ToolEnv
from envs.cat import Attempt, CodeAsTask, ToolCall
from envs.pool import append_pool
from envs.state import State, make_base
from envs.tools import Toolset

WORDS = ("yes", "no", "maybe", "blue", "red", "cat", "dog", "sun")
"""The candidates: each is a single token of the SmolLM2 tokenizer at the start of a turn."""
YES_BEHIND = 0.5
"""How far the untrained model's logit for "yes" is behind the other words' (all level)."""


class BanditEnv(ToolEnv):
    """One turn: say the word the instruction asks for (the task's solution answer). Reward 1 if the
    action starts with it; verified in process (no sandbox), since the check is this simple."""

    domain = "bandit"
    toolset = Toolset.of([])
    policy = "Reply with one word."

    @classmethod
    def build_world(cls, world: dict[str, Any]) -> State:
        return make_base({}, ())

    def step(self, action: str | None) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if action is None:  # a vector env's parked sub-env: the base env's no-op
            return super().step(action)
        assert self.task is not None
        reward = float(action.strip().lower().startswith(self.task.solution.answer))
        self._done = True
        return "Done.", reward, True, False, self._info()


def bandit_task(index: int, word: str = "yes") -> CodeAsTask:
    return CodeAsTask(
        id=f"bandit-{index}", domain="bandit", world={}, instruction=f"Say {word}. (#{index})",
        verifier=f"def verify(state, answer):\n    return answer.startswith({word!r})\n",
        solution=Attempt((), word), failures=tuple(Attempt((), w) for w in WORDS if w != word)[:3])


def bandit_pool(path: Path, n: int = 16, words: tuple[str, ...] = ("yes",)) -> Path:
    append_pool(path, [bandit_task(i, words[i % len(words)]) for i in range(n)])
    return path


def word_ids(tokenizer: Any) -> list[int]:
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in WORDS]
    assert all(len(i) == 1 for i in ids), ids
    return [i[0] for i in ids]


def tiny_llama(tokenizer: Any, seed: int = 0, hidden: int = 64) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False, initializer_range=0.1,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def bandit_model(tokenizer: Any, seed: int = 0, level: bool = True) -> LlamaForCausalLM:
    """A tiny model that says one of :data:`WORDS` to the bandit's instructions: each of the others one
    time in eight, "yes" (the right one) about one in thirteen (see the module docstring). Unlevelled
    (``level=False``), how often it says each word is left to the random weights (2% to 27%)."""
    model = tiny_llama(tokenizer, seed)
    words = word_ids(tokenizer)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        model.lm_head.weight[:, 0] = -8.0
        model.lm_head.weight[words, 0] = 8.0
        if not level:
            return model
        # level the words: take back through dimension 0 what the other dimensions give each on the bandit's
        # prompt, then set "yes" half a logit behind (greedy decoding says another word)
        chat = ChatFormat.of(tokenizer)
        prompt = chat.prompt_ids(chat.first_messages(BanditEnv.policy, [], bandit_task(0).instruction), [])
        hidden = model.model(input_ids=torch.tensor([prompt])).last_hidden_state[0, -1]
        lead = model.lm_head.weight[words, 1:] @ hidden[1:]
        model.lm_head.weight[words, 0] -= (lead - lead.mean()) / hidden[0]
        model.lm_head.weight[words[0], 0] -= YES_BEHIND / hidden[0]
    return model


def save_model(model: LlamaForCausalLM, tokenizer: Any, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def bandit_model_dir(path: Path, seed: int = 0, level: bool = True) -> Path:
    tokenizer = load_tokenizer()
    return save_model(bandit_model(tokenizer, seed, level), tokenizer, path)


def toy_answer_task(index: int = 0) -> CodeAsTask:
    """A toy-domain task solved by one lookup and the answer."""
    return CodeAsTask(
        id=f"toy-read-{index}", domain="toy", world={"notes": 3}, instruction=f"What does note k1 say? (#{index})",
        verifier="def verify(state, answer):\n    return 'note 1' in answer\n",
        solution=Attempt((ToolCall("get_note", {"key": "k1"}),), "note 1"),
        failures=(Attempt((), "note 2"), Attempt((ToolCall("get_note", {"key": "k2"}),), "note 2"), Attempt((), "")))
