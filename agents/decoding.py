"""Decoding one turn of a batch of rows: sampling, log-probabilities, stop tokens.

Numerics: in fp32, a batched greedy turn matches one-row-at-a-time decoding token for token, and
the stored log-probabilities match a fresh unpadded forward pass to about 1e-6. A model that
:func:`agents.models.load_model` put on the CPU multiplies 4-32 rows by packed weights
(:mod:`agents.packed_linear`), which add in another order than a fresh pass of many tokens does: in
8 web-browsing episodes of the default model (batch 8) its stored values differed from the unpacked
ones by up to 3e-5, with the same greedy tokens. In bf16 (the CUDA
default) padding and batch shape change the rounding: on an H100 the stored values differed from a
fresh pass by up to 2e-2 and near-tied greedy choices broke differently. PPO, which needs exact old
log-probabilities for its ratios, recomputes them with one forward pass there
(:func:`train.trainer.rescored`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from agents.kvcache import KVBatch
from agents.prompting import ChatFormat


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
    cuda_graphs: bool = True
    """On a GPU, replay each turn's decode step as a CUDA graph (:meth:`agents.kvcache.KVBatch.fixed_width`);
    off, every kernel is launched from Python each step. Same tokens either way."""

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < math.inf:  # NaN too: it failed only inside the sampler
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not _counts(self.max_new_tokens):
            raise ValueError(f"max_new_tokens must be a whole number at least 1, got {self.max_new_tokens!r}")
        if self.max_context_tokens is not None and not _counts(self.max_context_tokens):
            raise ValueError(f"max_context_tokens must be a whole number at least 1, got {self.max_context_tokens!r}")


def _counts(value: object) -> bool:
    """A count of tokens: an int of at least 1 (2.5 and True are not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


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
                  running: Sequence[bool] | None = None) -> tuple[list[list[int]], list[list[float]], list[list[int]]]:
    """One turn for every ``running`` row (default: all) from its next-token ``logits``: the sampled
    tokens, their log-probabilities, and the tokens left unfed (the cache holds the rest).

    A row stops at a token of ``stop_ids``, or once ``stop`` holds for its tokens so far; rows that
    stop early, and rows not running at all, are fed nothing until the last row stops or the cap is
    reached. Only running rows are sampled, so a row's draws do not depend on the idle rows beside it.
    """
    rows = logits.shape[0]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    logprobs: list[list[float]] = [[] for _ in range(rows)]
    running = list(running) if running is not None else [True] * rows
    feed: list[list[int]] = [[] for _ in range(rows)]
    steps = 0
    with batch.fixed_width(settings.max_new_tokens - 1, settings.cuda_graphs) as step:
        while any(running):
            live = [row for row in range(rows) if running[row]]
            drawn, drawn_logp = sample(logits if len(live) == rows else logits[live], settings, generator)
            steps += 1
            feed = [[] for _ in range(rows)]
            drawn_both = torch.stack([drawn.double(), drawn_logp.double()], 1).tolist()  # one wait for the GPU a step
            for row, (token, logp) in zip(live, drawn_both):
                token = int(token)
                tokens[row].append(token)
                logprobs[row].append(logp)
                feed[row] = [token]
                running[row] = token not in stop_ids and not (stop is not None and stop(tokens[row]))
            if not any(running) or steps == settings.max_new_tokens:
                break
            logits = step(feed)
    return tokens, logprobs, feed


def stop_ids_of(model: PreTrainedModel, chat: ChatFormat) -> frozenset[int]:
    """The template's end-of-turn token, the tokenizer's EOS and the model's own EOS tokens."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return chat.stop_ids | frozenset(eos)
