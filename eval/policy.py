"""The policy the evaluations run: any function from the chat so far to the next assistant message.

Keeping the interface this small lets one harness serve a scripted policy in tests and a model in
real runs. :class:`HFPolicy` is the thin adapter over a Hugging Face causal LM (the default model,
or any other, with a LoRA adapter): it renders the chat with the model's own template and decodes
one turn, greedy and capped at 512 new tokens by default (M3ToolEval's and tau-bench's agent
settings), with the trainer's decoding (:func:`agents.rollout.generate_turn`). Loading goes through
:mod:`agents.models`, so a model is found (and a missing one reported) exactly as in training.

A harness that plays many episodes at once asks for a :data:`BatchPolicy`: the next message of each
of several chats. :meth:`HFPolicy.batch` decodes them together, left-padded in one KV cache (calling
the policy is a batch of one). Since a harness re-renders the whole chat each turn, each call keeps
its rows' keys and values and the next starts from them, so a turn encodes only what is new.
:func:`batched` lifts any other policy by calling it once per chat, and :func:`play_in_batches` is
the harnesses' one loop that keeps a batch of episodes going.
A harness that keeps only the start of a message can give :class:`HFPolicy` a ``stop`` predicate, so
that a row stops decoding once nothing after it would be kept (M3ToolEval's trim).

Messages use the roles ``system``, ``user``, ``assistant`` and ``tool`` (an environment's
observation); :class:`HFPolicy` shows ``tool`` turns in the role that training used for them
(:class:`agents.prompting.ChatFormat`), so a trained adapter sees observations as it learned them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from eval.cli import InputError

log = logging.getLogger(__name__)

Message = dict[str, str]
Policy = Callable[[list[Message]], str]
"""The chat so far (system, user, assistant and tool turns) -> the next assistant message."""


class ContextLimitExceeded(Exception):
    """The chat no longer fits the model's context; the episode ends there (M3ToolEval's ``context_limit``)."""


Reply = str | ContextLimitExceeded
"""One chat's next assistant message, or the reason there is none (a batch does not fail for one chat)."""
BatchPolicy = Callable[[list[list[Message]]], list[Reply]]
"""Several chats -> the :data:`Reply` to each, in order."""


def batched(policy: Policy) -> BatchPolicy:
    """``policy`` over a batch of chats: an :class:`HFPolicy`'s own batched generation, any other
    policy called once per chat, a :class:`ContextLimitExceeded` it raises kept as that chat's reply."""
    if isinstance(policy, HFPolicy):
        return policy.batch

    def generate(chats: list[list[Message]]) -> list[Reply]:
        replies: list[Reply] = []
        for chat in chats:
            try:
                replies.append(policy(chat))
            except ContextLimitExceeded as error:
                replies.append(error)
        return replies

    return generate


Job = TypeVar("Job")
Play = TypeVar("Play")


def play_in_batches(jobs: Iterable[Job], start: Callable[[Job], Play], play_round: Callable[[list[Play]], None],
                    done: Callable[[Play], bool], batch_size: int) -> Iterator[Play]:
    """Episodes of ``jobs`` side by side, up to ``batch_size`` at a time: ``play_round`` advances
    every active episode by one round (its batched policy calls); an episode that is ``done`` leaves
    the batch, yielded as it ends, and the next job's episode takes its place."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    queue, none_left = iter(jobs), object()
    active: list[Play] = []
    while True:
        while len(active) < batch_size and (job := next(queue, none_left)) is not none_left:
            episode = start(job)
            if done(episode):
                yield episode
            else:
                active.append(episode)
        if not active:
            return
        play_round(active)
        yield from (episode for episode in active if done(episode))
        active = [episode for episode in active if not done(episode)]


def scripted(replies: Sequence[str]) -> Policy:
    """A policy that says ``replies`` in turn, one per assistant turn already in the chat, then the last again."""
    if not replies:
        raise ValueError("a scripted policy needs at least one reply")

    def policy(messages: list[Message]) -> str:
        said = sum(m["role"] == "assistant" for m in messages)
        return replies[min(said, len(replies) - 1)]

    return policy


def system_prompt(policy: str, tools: Sequence[dict[str, Any]]) -> str:
    """The domain's policy with its tools written out, as training shows them to a model whose chat
    template cannot render tools (:func:`agents.prompting.tools_in_system_prompt`), so that an
    evaluated adapter sees the prompt it was trained on."""
    from agents.prompting import tools_in_system_prompt

    return f"{policy}\n\n{tools_in_system_prompt(tools)}"


@dataclass
class HFPolicy:
    """A causal LM as a :data:`Policy`: one batched decode per turn (of one chat, or of a batch).

    ``temperature`` 0 decodes greedily (the benchmarks' agent setting); above 0 it samples (the
    held-out eval's n samples, a simulated user). With a peft model, ``use_adapter=False`` runs the
    base model under ``disable_adapter()``: :meth:`base` gives that policy on the same weights, so a
    base-vs-adapter comparison or a simulated user backed by the base model costs no second copy.

    ``stop``, when given, is tested on each row's generated text after every new token; a row may stop
    once it holds, because the caller discards what follows. The reply is then that text: the decode of
    the tokens so far, which matches the full generation's text except perhaps in its last characters
    (a character whose bytes are split across tokens), so ``stop`` must not depend on those.
    """

    model: Any
    tokenizer: Any
    max_new_tokens: int = 512
    temperature: float = 0.0
    use_adapter: bool = True
    stop: Callable[[str], bool] | None = None
    observation_role: str = field(init=False)
    _stop_ids: frozenset[int] = field(init=False, repr=False)
    _cache: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from agents.kvcache import PrefixCache
        from agents.prompting import ChatFormat
        from agents.rollout import stop_ids_of

        chat = ChatFormat.of(self.tokenizer)
        self.observation_role = chat.observation_role
        self._stop_ids = stop_ids_of(self.model, chat)
        self._cache = PrefixCache()  # per policy: its keys and values depend on the adapter being on

    def base(self, **changes: Any) -> HFPolicy:
        """The same weights with the adapter switched off (and any other field changed)."""
        return replace(self, use_adapter=False, **changes)

    def _adapter_context(self) -> contextlib.AbstractContextManager[Any]:
        if not self.use_adapter and hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def __call__(self, messages: list[Message]) -> str:
        reply = self.batch([messages])[0]
        if isinstance(reply, ContextLimitExceeded):
            raise reply
        return reply

    def batch(self, chats: list[list[Message]]) -> list[Reply]:
        """The next message of each chat, generated together (greedy rows match token for token
        what each would generate alone, in fp32). A chat that does not fit the context gets a
        :class:`ContextLimitExceeded` as its reply. Each row may generate up to the context's end;
        rows whose cap that makes smaller than ``max_new_tokens`` (chats near the end of the context)
        generate in a call of their own cap.

        Each row starts from the cached keys and values of the longest prefix of its tokens that the
        previous call computed (:class:`agents.kvcache.PrefixCache`): the chat's own last turn, or the
        shared instructions of another chat. Memory grows with the batch: the cache holds rows x
        tokens (with a quarter of spare room), once more while its rows are stored for the next call."""
        prompts = [self.encode(chat) for chat in chats]
        starts = self._cache.take(prompts)
        replies: list[Reply] = [""] * len(chats)
        by_cap: dict[int, list[int]] = {}
        for row, ids in enumerate(prompts):
            limit = getattr(self.model.config, "max_position_embeddings", None) or len(ids) + self.max_new_tokens
            if len(ids) >= limit:
                replies[row] = ContextLimitExceeded(f"the chat takes {len(ids)} tokens; the model's context "
                                                    f"holds {limit}")
            else:
                by_cap.setdefault(min(self.max_new_tokens, limit - len(ids)), []).append(row)
        stored: list[tuple[list[int], Any]] = []
        for cap, rows in by_cap.items():
            group = [starts[row] for row in rows]
            for row in rows:
                starts[row] = (0, None)  # the group holds them now, and lets go once they are in its batch
            for row, reply in zip(rows, self._generate([prompts[row] for row in rows], cap, group, stored)):
                replies[row] = reply
        self._cache.replace(stored)
        return replies

    def encode(self, messages: list[Message]) -> list[int]:
        """The prompt this policy decodes from: ``messages`` in the model's chat template, ready for the reply."""
        chat = [{"role": self.observation_role if m["role"] == "tool" else m["role"], "content": m["content"]}
                for m in messages]
        text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _generate(self, prompts: list[list[int]], max_new_tokens: int, starts: list[tuple[int, Any]],
                  stored: list[tuple[list[int], Any]]) -> list[str]:
        """Decode one turn of each prompt from its cached start (emptying ``starts`` once copied into
        the batch); append each row's tokens and keys and values to ``stored``."""
        import torch

        from agents.kvcache import KVBatch
        from agents.rollout import SamplingSettings, generate_turn

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        settings = SamplingSettings(temperature=self.temperature, max_new_tokens=max_new_tokens)
        stop: Callable[[list[int]], bool] | None = None
        if self.stop is not None:
            text_stop = self.stop

            def stop_at_text(tokens: list[int]) -> bool:
                return text_stop(self.tokenizer.decode(tokens, skip_special_tokens=True))

            stop = stop_at_text

        started = time.perf_counter()
        with torch.inference_mode(), self._adapter_context():
            batch = KVBatch(self.model, pad)
            cached = [length for length, _ in starts]
            if any(cached):
                batch.resume([kv for _, kv in starts])
                starts.clear()
                logits = batch.extend([ids[length:] for ids, length in zip(prompts, cached)])
            else:
                logits = batch.prefill(prompts)
            tokens, _, _ = generate_turn(batch, logits, settings, self._stop_ids, stop=stop)
            lengths = batch.lengths.tolist()
            stored += [((ids + new)[:length], batch.row(row))
                       for row, (ids, new, length) in enumerate(zip(prompts, tokens, lengths))]
        log.debug("generated %d rows, %s tokens cached, new tokens per row %s (prompts up to %d tokens) in %.1f s",
                  len(prompts), cached, [len(new) for new in tokens],
                  max(map(len, prompts)), time.perf_counter() - started)
        return [self.tokenizer.decode(new, skip_special_tokens=True) for new in tokens]


def load_hf_policy(model: str, adapter: str | None = None, device: str | None = None, **settings: Any) -> HFPolicy:
    """``model`` (the default model's name, a Hugging Face id in the local cache or a directory),
    with the LoRA ``adapter`` saved at that path when given, as an :class:`HFPolicy`.

    A model or adapter that cannot be loaded offline is an :class:`InputError` (exit code 2), with
    :mod:`agents.models`' message saying what to install or pass.
    """
    from agents.models import ModelNotFoundError, load_adapter, load_model

    try:
        loaded, tokenizer = load_model(model, device=device)
        if adapter is not None:
            loaded = load_adapter(loaded, adapter, trainable=False)
    except ModelNotFoundError as error:
        raise InputError(str(error)) from None
    loaded.eval()
    log.info("loaded %s%s on %s", model, f" with adapter {adapter}" if adapter else "", loaded.device)
    return HFPolicy(loaded, tokenizer, **settings)
