"""Batched multi-turn rollouts of an LLM policy in tool environments, keeping exact token ids.

Each turn, every active episode generates together in one batch; then each env steps on its own
episode's action, and the episodes that ended drop out of the batch. An episode is one growing
list of token ids: the first prompt, then per turn the policy's sampled tokens (loss mask 1, their
log-probabilities stored) and the tokens that close the turn and show the observation (loss mask 0,
rendered by :class:`agents.prompting.ChatFormat`). Nothing is ever re-tokenized, so each turn's
prompt is a token-for-token prefix of the next one's and the trainer scores exactly what was sampled.

Efficiency (what a CPU run spends its time on):

- One KV cache holds all active episodes across turns, so a turn feeds only its new tokens (the
  turn's closing tokens and the observation) instead of re-encoding the whole conversation.
- The prompt prefix shared by all episodes of the batch (the system prompt of one domain; the whole
  prompt when one task is sampled several times, as GRPO does) is encoded once and copied.
- Chunks are left-padded, so each row's next-token logits sit in the last column and only that
  column goes through the output head (``logits_to_keep=1``). Padding inside the cache is masked
  out, positions count real tokens only, and the cache columns that no remaining episode uses are
  dropped when episodes leave the batch (:class:`agents.kvcache.KVBatch`, which also grows the
  cache in place rather than copying it every token).

Environments come as a list of single envs, not a vector env: episodes end at different turns and
must then leave the batch, while a vector env steps all its sub-envs in lockstep and autoresets
finished ones. Env steps are cheap next to generation, so stepping them one by one costs little.

Numerics: in fp32, a batched greedy rollout matches one-episode-at-a-time rollouts token for token,
and the stored log-probabilities match a fresh unpadded forward pass to about 1e-6. In bf16 (the
CUDA default) padding and batch shape change the rounding: on an H100 the stored values differed
from a fresh pass by up to 2e-2 and near-tied greedy choices broke differently. A trainer that
needs exact old log-probabilities (PPO ratios) should recompute them with one forward pass.
Padding in the middle of the cache also shortens a sliding attention window's reach (Mistral-style
models); full-attention models (Llama, Qwen, SmolLM2) are unaffected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agents.kvcache import KVBatch
from agents.prompting import ChatFormat, Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings:
    """How each turn is generated.

    Log-probabilities are stored under the distribution each token was drawn from: the log-softmax
    of the logits divided by ``temperature``, restricted to the ``top_p`` nucleus and renormalized.
    At temperature 1 and top_p 1 that is the policy's own log-probability, as a fresh forward pass
    computes it. Greedy decoding (temperature 0) stores the log-softmax of the unscaled logits.
    """

    temperature: float = 1.0
    """Divides the logits before sampling; 0 means greedy (argmax)."""
    top_p: float = 1.0
    """Nucleus sampling: draw from the smallest set of tokens holding this much probability."""
    max_new_tokens: int = 256
    """Cap on the tokens of one turn; a turn cut there is closed as if it had ended."""
    max_context_tokens: int | None = None
    """Cap on an episode's tokens (default: the model's max positions); an episode that could pass
    it in its next turn ends there, truncated, with reward 0."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")


@dataclass
class Trajectory:
    """One episode as the policy saw and wrote it: what a policy-gradient update consumes.

    ``token_ids``, ``loss_mask`` and ``logprobs`` have one entry per token; ``loss_mask`` is 1
    exactly on the tokens the policy sampled (including the end-of-turn token it wrote), where
    ``logprobs`` holds their sampling log-probability (0 elsewhere). Turn ``t``'s prompt is
    ``token_ids[:turn_starts[t]]``. ``messages`` is the readable chat: system, instruction, then the
    policy's actions and the observations (including the one after the last action, which the token
    ids, ending at the policy's last token, leave out).
    """

    token_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    turn_starts: list[int]
    messages: list[Message]
    task_id: str
    domain: str
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    invalid_actions: int = 0
    """Actions the env could not run (malformed, unknown tool, bad arguments)."""

    @property
    def num_turns(self) -> int:
        return len(self.turn_starts)

    @property
    def prompt_length(self) -> int:
        return self.turn_starts[0] if self.turn_starts else len(self.token_ids)

    def append(self, ids: Sequence[int], logprobs: Sequence[float] | None = None) -> None:
        """Add tokens: the policy's (with their log-probabilities) or the environment's (without)."""
        self.token_ids.extend(ids)
        self.loss_mask.extend([0 if logprobs is None else 1] * len(ids))
        self.logprobs.extend([0.0] * len(ids) if logprobs is None else logprobs)


@dataclass
class _Episode:
    env: gym.Env
    trajectory: Trajectory


def sample(logits: torch.Tensor, settings: SamplingSettings,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens for a batch of logits, and their log-probabilities (see :class:`SamplingSettings`)."""
    logits = logits.float()
    if settings.temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits / settings.temperature, -1)
    if settings.top_p < 1:
        logp = _nucleus(logp, settings.top_p)
    tokens = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _nucleus(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """``logp`` restricted to each row's top-p nucleus and renormalized."""
    sorted_logp, order = logp.sort(-1, descending=True)
    mass_before = sorted_logp.exp().cumsum(-1) - sorted_logp.exp()
    outside = torch.zeros_like(logp, dtype=torch.bool).scatter(-1, order, mass_before >= top_p)
    return torch.log_softmax(logp.masked_fill(outside, float("-inf")), -1)


def generate_turn(batch: KVBatch, logits: torch.Tensor, settings: SamplingSettings, stop_ids: frozenset[int],
                  generator: torch.Generator | None = None, stop: Callable[[list[int]], bool] | None = None,
                  ) -> tuple[list[list[int]], list[list[float]], list[list[int]]]:
    """One turn for every row from its next-token ``logits``: the sampled tokens, their
    log-probabilities, and the tokens left unfed (the cache holds the rest).

    A row stops at a token of ``stop_ids``, or once ``stop`` holds for its tokens so far; rows that
    stop early are fed nothing until the last row stops or the cap is reached.
    """
    rows = logits.shape[0]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    logprobs: list[list[float]] = [[] for _ in range(rows)]
    running = [True] * rows
    steps = 0
    while True:
        drawn, drawn_logp = sample(logits, settings, generator)
        steps += 1
        feed: list[list[int]] = []
        for row, (token, logp) in enumerate(zip(drawn.tolist(), drawn_logp.tolist())):
            if not running[row]:
                feed.append([])
                continue
            tokens[row].append(token)
            logprobs[row].append(logp)
            feed.append([token])
            running[row] = token not in stop_ids and not (stop is not None and stop(tokens[row]))
        if not any(running) or steps == settings.max_new_tokens:
            return tokens, logprobs, feed
        logits = batch.extend(feed)


def stop_ids_of(model: PreTrainedModel, chat: ChatFormat) -> frozenset[int]:
    """The template's end-of-turn token, the tokenizer's EOS and the model's own EOS tokens."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return chat.stop_ids | frozenset(eos)


def _start(env: gym.Env, chat: ChatFormat, seed: int | None, options: dict[str, Any] | None) -> _Episode:
    instruction, info = env.reset(seed=seed, options=options)
    messages = chat.first_messages(info["policy"], info["tools"], instruction)
    trajectory = Trajectory(token_ids=[], loss_mask=[], logprobs=[], turn_starts=[], messages=messages,
                            task_id=info["task_id"], domain=info["domain"])
    trajectory.append(chat.prompt_ids(messages, info["tools"]))
    return _Episode(env, trajectory)


def _act(episode: _Episode, chat: ChatFormat, tokens: list[int], logprobs: list[float],
         stop_ids: frozenset[int]) -> list[int] | None:
    """Record the turn and step the env; the tokens that show the observation, or ``None`` when the episode ended."""
    trajectory = episode.trajectory
    trajectory.turn_starts.append(len(trajectory.token_ids))
    trajectory.append(tokens, logprobs)
    text_ids = tokens[:-1] if tokens and tokens[-1] in stop_ids else tokens
    action = chat.tokenizer.decode(text_ids, skip_special_tokens=False)
    observation, reward, terminated, truncated, info = episode.env.step(action)
    trajectory.messages += [{"role": "assistant", "content": action}, chat.observation_message(observation)]
    trajectory.invalid_actions += "invalid_action" in info
    if terminated or truncated:
        trajectory.reward, trajectory.terminated, trajectory.truncated = float(reward), terminated, truncated
        return None
    return chat.close_turn_ids(tokens) + chat.observation_ids(observation)


@torch.inference_mode()
def rollout(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, envs: Sequence[gym.Env],
            settings: SamplingSettings = SamplingSettings(), seed: int | None = None,
            options: Sequence[dict[str, Any] | None] | None = None, chat: ChatFormat | None = None) -> list[Trajectory]:
    """Play one episode in each env, all turns batched; one :class:`Trajectory` per env, in order.

    ``seed`` seeds env ``i``'s reset with ``seed + i`` and the sampler; ``options[i]`` goes to env
    ``i``'s reset (e.g. ``{"task_id": …}``, so that several envs play the same task). The model is
    put in eval mode for the rollout and back to its previous mode after.
    """
    if not envs:
        return []
    chat = chat or ChatFormat.of(tokenizer)
    stop_ids = stop_ids_of(model, chat)
    episodes = [_start(env, chat, None if seed is None else seed + i, options[i] if options else None)
                for i, env in enumerate(envs)]
    limit = settings.max_context_tokens or getattr(model.config, "max_position_embeddings", None) or float("inf")
    too_long = [e.trajectory.task_id for e in episodes if len(e.trajectory.token_ids) + settings.max_new_tokens > limit]
    if too_long:
        raise ValueError(f"the first prompt plus max_new_tokens={settings.max_new_tokens} exceeds the context "
                         f"limit of {limit} tokens for tasks {too_long[:3]}")
    batch = KVBatch(model, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids))
    generator = None
    if seed is not None:
        generator = torch.Generator(device=batch.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        active = episodes
        logits = batch.prefill([e.trajectory.token_ids for e in active])
        while active:
            started = time.perf_counter()
            tokens, logprobs, unfed = generate_turn(batch, logits, settings, stop_ids, generator)
            kept, chunks = [], []
            for row, episode in enumerate(active):
                added = _act(episode, chat, tokens[row], logprobs[row], stop_ids)
                if added is None:
                    continue
                if len(episode.trajectory.token_ids) + len(added) + settings.max_new_tokens > limit:
                    episode.trajectory.truncated = True
                    continue
                episode.trajectory.append(added)
                kept.append(row)
                chunks.append(unfed[row] + added)
            log.debug("turn: %d episodes, %d tokens sampled in %.2fs; %d go on", len(active),
                      sum(map(len, tokens)), time.perf_counter() - started, len(kept))
            active = [active[row] for row in kept]
            if active:
                batch.keep(kept)
                logits = batch.extend(chunks)
    finally:
        model.train(was_training)
    return [e.trajectory for e in episodes]
