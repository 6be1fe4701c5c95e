"""Who plays: a model (:class:`ModelPolicy`) or a plain function of the chat (:class:`TextPolicy`).

A player takes seats at a batch of episodes (:meth:`ModelPolicy.start`), then, each round, acts for
the seats whose turn it is and reads what comes back; :func:`agents.rollout.play` runs that loop
over a Gymnasium vector env. Training rollouts, the held-out score, tau-bench's agent and simulated
user, and the challenger are all played that way, so a model sees the same prompt, token for token,
wherever it plays.

:class:`ModelPolicy` is the one model type. Its seats decode together in one KV cache
(:class:`agents.kvcache.KVBatch`) and keep exact token ids: a turn's prompt is the previous turn's,
extended by the policy's sampled tokens and the observation's tokens as the chat template renders
them (:class:`agents.prompting.ChatFormat`), never re-tokenized. :meth:`ModelPolicy.complete` is
the exception the benchmarks' own protocols need (M3ToolEval re-renders its chat as text each
turn): it decodes the next message of whole chats, resuming each from the keys and values of the
longest prefix the previous call computed (:class:`agents.kvcache.PrefixCache`).

With a peft model, ``use_adapter=False`` plays the base model under ``disable_adapter()``:
:meth:`ModelPolicy.base` gives that policy on the same weights (a base-vs-adapter comparison, a
simulated user), at no second copy.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agents.kvcache import KVBatch, PrefixCache
from agents.prompting import ChatFormat, Message, ToolSchema, tools_in_system_prompt
from agents.decoding import SamplingSettings, generate_turn, stop_ids_of

log = logging.getLogger(__name__)


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

    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn_starts: list[int] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    task_id: str = ""
    domain: str = ""
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    invalid_actions: int = 0
    """Actions the env could not run (malformed, unknown tool, bad arguments)."""
    end_reason: str = ""
    """Why the episode ended: ``terminated`` or ``truncated`` by the env, ``context_limit`` (the model's
    context is full), or the env's own word for it (``info["end_reason"]``, e.g. a user who stopped)."""
    final_info: dict[str, Any] = field(default_factory=dict)
    """The env's ``info`` at the last step (a verifier's verdict, a challenger's judged task)."""

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


class ContextLimitExceeded(Exception):
    """A chat no longer fits the model's context; its episode ends there."""


Reply = str | ContextLimitExceeded
"""One chat's next message from :meth:`ModelPolicy.complete`, or why there is none."""


@dataclass
class Opening:
    """How a seat's episode starts: the system text (a domain's policy, a simulated user's brief), the
    tools the player may call, and the first message it answers."""

    trajectory: Trajectory
    system: str
    tools: list[ToolSchema]
    message: str


class Seats(Protocol):
    """A player's seats at a batch of episodes, one :class:`Trajectory` each (``trajectories[seat]``)."""

    trajectories: list[Trajectory]

    def act(self, seats: Sequence[int]) -> list[str | None]:
        """The next action of each of ``seats`` (indices into :attr:`trajectories`); ``None`` for a
        seat whose episode no longer fits its context (that seat is over)."""

    def observe(self, seat: int, text: str, role: str, last: bool = False) -> None:
        """What the seat's episode answered its last action: a tool's output (``role="tool"``) or the
        other party's message (``role="user"``). ``last``: the episode ended with it, so it is only
        recorded in the readable chat (the seat will not read it)."""

    def end(self, seat: int) -> None:
        """The seat's episode is over; it acts no more."""


class Player(Protocol):
    def start(self, openings: Sequence[Opening], seed: int | None = None) -> Seats:
        """Seats at these episodes; ``seed`` seeds sampling."""


# ---------------------------------------------------------------------------- a plain function


Policy = Callable[[list[Message]], str]
"""The chat so far (system, user, assistant and tool turns) -> the next assistant message."""


@dataclass
class TextPolicy:
    """A plain function of the chat as a player: a scripted agent or user in tests and checks.

    Its chats show the tools in the system prompt (the fallback rendering of
    :mod:`agents.prompting`); a :class:`ContextLimitExceeded` it raises ends that seat.
    """

    policy: Policy

    def start(self, openings: Sequence[Opening], seed: int | None = None) -> _TextSeats:
        for opening in openings:
            system = f"{opening.system}\n\n{tools_in_system_prompt(opening.tools)}" if opening.tools else opening.system
            opening.trajectory.messages[:] = [{"role": "system", "content": system},
                                              {"role": "user", "content": opening.message}]
        return _TextSeats(self.policy, [o.trajectory for o in openings])


@dataclass
class _TextSeats:
    policy: Policy
    trajectories: list[Trajectory]

    def act(self, seats: Sequence[int]) -> list[str | None]:
        actions: list[str | None] = []
        for seat in seats:
            messages = self.trajectories[seat].messages
            try:
                action: str | None = self.policy(list(messages))
            except ContextLimitExceeded:
                action = None
            if action is not None:
                self.trajectories[seat].turn_starts.append(0)  # no tokens: only the turn count
                messages.append({"role": "assistant", "content": action})
            actions.append(action)
        return actions

    def observe(self, seat: int, text: str, role: str, last: bool = False) -> None:
        self.trajectories[seat].messages.append({"role": role, "content": text})

    def end(self, seat: int) -> None:
        pass


def scripted(replies: Sequence[str]) -> Policy:
    """A policy that says ``replies`` in turn, one per assistant turn already in the chat, then the last again."""
    if not replies:
        raise ValueError("a scripted policy needs at least one reply")

    def policy(messages: list[Message]) -> str:
        said = sum(m["role"] == "assistant" for m in messages)
        return replies[min(said, len(replies) - 1)]

    return policy


def as_player(policy: Player | Policy) -> Player:
    """``policy`` as a player: a :class:`ModelPolicy` (or any player) as it is, a function wrapped."""
    return policy if hasattr(policy, "start") else TextPolicy(policy)  # type: ignore[arg-type, return-value]


# ---------------------------------------------------------------------------- a model


@dataclass
class ModelPolicy:
    """A causal LM (with its LoRA adapter, on or off) as a player; see the module docstring.

    ``stop``, when given, is tested on each row's generated text after every new token of
    :meth:`complete`; a row may stop once it holds, because the caller discards what follows.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    use_adapter: bool = True
    stop: Callable[[str], bool] | None = None
    adapter: str | None = None
    """Which of a peft model's adapters plays (the executor's ``"default"``, a challenger's); ``None``:
    the active one."""
    chat: ChatFormat = field(init=False, repr=False)
    _stop_ids: frozenset[int] = field(init=False, repr=False)
    _cache: PrefixCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.chat = ChatFormat.of(self.tokenizer)
        self._stop_ids = stop_ids_of(self.model, self.chat)
        self._cache = PrefixCache()  # per policy: its keys and values depend on the adapter being on

    def base(self, **changes: Any) -> ModelPolicy:
        """The same weights with the adapter switched off (and any other field changed)."""
        return replace(self, use_adapter=False, **changes)

    def with_settings(self, **changes: Any) -> ModelPolicy:
        """The same model and adapter state, sampling with ``changes`` (temperature, max_new_tokens, …)."""
        return replace(self, settings=replace(self.settings, **changes))

    @property
    def context_limit(self) -> int | float:
        return (self.settings.max_context_tokens or getattr(self.model.config, "max_position_embeddings", None)
                or float("inf"))

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self._stop_ids)

    @contextlib.contextmanager
    def playing(self) -> Iterator[None]:
        """Inference mode, eval mode, this policy's adapter active, or none (all put back after)."""
        was_training = self.model.training
        active = getattr(self.model, "active_adapter", None)
        switch = self.adapter is not None and active is not None and self.adapter != active
        self.model.eval()
        if switch:
            self.model.set_adapter(self.adapter)
        disabled = (self.model.disable_adapter() if not self.use_adapter and hasattr(self.model, "disable_adapter")
                    else contextlib.nullcontext())
        try:
            with torch.inference_mode(), disabled:
                yield
        finally:
            if switch:
                self.model.set_adapter(active)
            self.model.train(was_training)

    # ------------------------------------------------------------------ seats (exact tokens)

    def start(self, openings: Sequence[Opening], seed: int | None = None) -> ModelSeats:
        """Seats at these episodes: each first prompt rendered and encoded (their common prefix once).

        A first prompt that leaves no room for a turn is a :class:`ValueError` (a configuration to
        fix, not an episode to score)."""
        for opening in openings:
            trajectory = opening.trajectory
            trajectory.messages[:] = self.chat.first_messages(opening.system, opening.tools, opening.message)
            trajectory.append(self.chat.prompt_ids(trajectory.messages, opening.tools))
        too_long = [o.trajectory.task_id for o in openings
                    if len(o.trajectory.token_ids) + self.settings.max_new_tokens > self.context_limit]
        if too_long:
            raise ValueError(f"the first prompt plus max_new_tokens={self.settings.max_new_tokens} exceeds the "
                             f"context limit of {self.context_limit} tokens for tasks {too_long[:3]}")
        return ModelSeats(self, [o.trajectory for o in openings], seed)

    # ------------------------------------------------------------------ whole chats (re-rendered)

    def __call__(self, messages: list[Message]) -> str:
        reply = self.complete([messages])[0]
        if isinstance(reply, ContextLimitExceeded):
            raise reply
        return reply

    def encode(self, messages: list[Message]) -> list[int]:
        """``messages`` in the model's chat template, ready for the reply; ``tool`` turns in the role
        this template shows observations in (as :meth:`start`'s seats see them)."""
        chat = [self.chat.observation_message(m["content"]) if m["role"] == "tool" else m for m in messages]
        text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def complete(self, chats: list[list[Message]]) -> list[Reply]:
        """The next message of each chat, generated together (greedy rows match token for token
        what each would generate alone, in fp32). A chat that does not fit the context gets a
        :class:`ContextLimitExceeded` as its reply. Each row may generate up to the context's end;
        rows whose cap that makes smaller than ``max_new_tokens`` (chats near the end of the context)
        generate in a call of their own cap.

        Each row starts from the cached keys and values of the longest prefix of its tokens that the
        previous call computed: the chat's own last turn, or the shared instructions of another chat.
        Memory grows with the batch: the cache holds rows x tokens (with a quarter of spare room),
        once more while its rows are stored for the next call."""
        prompts = [self.encode(chat) for chat in chats]
        starts = self._cache.take(prompts)
        replies: list[Reply] = [""] * len(chats)
        by_cap: dict[int, list[int]] = {}
        for row, ids in enumerate(prompts):
            limit = self.context_limit if self.context_limit != float("inf") else len(ids) + self.settings.max_new_tokens
            if len(ids) >= limit:
                replies[row] = ContextLimitExceeded(f"the chat takes {len(ids)} tokens; the model's context "
                                                    f"holds {limit}")
            else:
                by_cap.setdefault(int(min(self.settings.max_new_tokens, limit - len(ids))), []).append(row)
        stored: list[tuple[list[int], Any]] = []
        for cap, rows in by_cap.items():
            group = [starts[row] for row in rows]
            for row in rows:
                starts[row] = (0, None)  # the group holds them now, and lets go once they are in its batch
            for row, reply in zip(rows, self._complete([prompts[row] for row in rows], cap, group, stored)):
                replies[row] = reply
        self._cache.replace(stored)
        return replies

    def _complete(self, prompts: list[list[int]], max_new_tokens: int, starts: list[tuple[int, Any]],
                  stored: list[tuple[list[int], Any]]) -> list[str]:
        """Decode one turn of each prompt from its cached start (emptying ``starts`` once copied into
        the batch); append each row's tokens and keys and values to ``stored``."""
        settings = replace(self.settings, max_new_tokens=max_new_tokens)
        stop: Callable[[list[int]], bool] | None = None
        if self.stop is not None:
            text_stop = self.stop

            def stop_at_text(tokens: list[int]) -> bool:
                return text_stop(self.tokenizer.decode(tokens, skip_special_tokens=True))

            stop = stop_at_text

        started = time.perf_counter()
        with self.playing():
            batch = KVBatch(self.model, self.pad_id)
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
        log.debug("completed %d chats, %s tokens cached, new tokens per row %s (prompts up to %d tokens) in %.1f s",
                  len(prompts), cached, [len(new) for new in tokens], max(map(len, prompts)),
                  time.perf_counter() - started)
        return [self.tokenizer.decode(new, skip_special_tokens=True) for new in tokens]


class ModelSeats:
    """A :class:`ModelPolicy`'s seats at one batch of episodes: one KV cache row each.

    A seat's cache row holds its trajectory's tokens up to ``batch.lengths[row]``; what the
    trajectory holds past that (the last sampled token, the turn's closing tokens, the observation)
    is fed when the seat next acts. Seats whose turn it is not are fed nothing while the others
    decode; seats that are over leave the cache before the next act (their columns with them).
    """

    def __init__(self, policy: ModelPolicy, trajectories: list[Trajectory], seed: int | None):
        self.policy = policy
        self.trajectories = trajectories
        self.batch = KVBatch(policy.model, policy.pad_id)
        self.generator = None if seed is None else torch.Generator(device=self.batch.device).manual_seed(seed)
        self.cache_rows: list[int | None] = list(range(len(trajectories)))
        """Each seat's row in the cache (``None`` once it left)."""
        self.over: set[int] = set()
        """Seats that ended, or whose next observation does not fit the context."""
        with policy.playing():
            self.logits = self.batch.prefill([t.token_ids for t in trajectories])

    def act(self, seats: Sequence[int]) -> list[str | None]:
        policy = self.policy
        self._compact()
        actions: list[str | None] = [None] * len(seats)
        acting = {i: self.cache_rows[seat] for i, seat in enumerate(seats) if seat not in self.over}
        if not acting:
            return actions
        with policy.playing():
            lengths = self.batch.lengths.tolist()
            chunks: list[list[int]] = [[] for _ in lengths]
            for i, row in acting.items():
                chunks[row] = self.trajectories[seats[i]].token_ids[lengths[row]:]
            fed = [row for row, chunk in enumerate(chunks) if chunk]
            if fed:
                self.logits[fed] = self.batch.extend(chunks)[fed]
            running = [row in acting.values() for row in range(len(lengths))]
            tokens, logprobs, _ = generate_turn(self.batch, self.logits, policy.settings, policy._stop_ids,
                                                self.generator, running=running)
        for i, row in acting.items():
            trajectory = self.trajectories[seats[i]]
            trajectory.turn_starts.append(len(trajectory.token_ids))
            trajectory.append(tokens[row], logprobs[row])
            text_ids = tokens[row][:-1] if tokens[row] and tokens[row][-1] in policy._stop_ids else tokens[row]
            actions[i] = policy.tokenizer.decode(text_ids, skip_special_tokens=False)
            trajectory.messages.append({"role": "assistant", "content": actions[i]})
        return actions

    def observe(self, seat: int, text: str, role: str, last: bool = False) -> None:
        trajectory, chat = self.trajectories[seat], self.policy.chat
        trajectory.messages.append(chat.observation_message(text, role))
        if last:
            return
        last_turn = trajectory.token_ids[trajectory.turn_starts[-1]:] if trajectory.turn_starts else []
        added = chat.close_turn_ids(last_turn) + chat.observation_ids(text, role)
        if len(trajectory.token_ids) + len(added) + self.policy.settings.max_new_tokens > self.policy.context_limit:
            self.over.add(seat)  # no room for the observation and another turn: the seat is over
            return
        trajectory.append(added)

    def end(self, seat: int) -> None:
        self.over.add(seat)

    def _compact(self) -> None:
        """Let the seats that are over leave the cache."""
        gone = [seat for seat in self.over if self.cache_rows[seat] is not None]
        if not gone:
            return
        for seat in gone:
            self.cache_rows[seat] = None
        live = sorted((row, seat) for seat, row in enumerate(self.cache_rows) if row is not None)
        self.batch.keep([row for row, _ in live])
        self.logits = self.logits[[row for row, _ in live]]
        for new, (_, seat) in enumerate(live):
            self.cache_rows[seat] = new


def load_model_policy(model: str, adapter: str | None = None, device: str | None = None,
                      stop: Callable[[str], bool] | None = None, **settings: Any) -> ModelPolicy:
    """``model`` (the default model's name, a Hugging Face id in the local cache or a directory),
    with the LoRA ``adapter`` saved at that path when given, as a :class:`ModelPolicy` sampling with
    ``settings`` (:class:`agents.decoding.SamplingSettings` fields), stopping a completion at ``stop``. A model or adapter that cannot be
    loaded offline raises :class:`agents.models.ModelNotFoundError`, whose message says what to install
    or pass."""
    from agents.models import load_adapter, load_model

    loaded, tokenizer = load_model(model, device=device)
    if adapter is not None:
        loaded = load_adapter(loaded, adapter, trainable=False)
    loaded.eval()
    log.info("loaded %s%s on %s", model, f" with adapter {adapter}" if adapter else "", loaded.device)
    return ModelPolicy(loaded, tokenizer, SamplingSettings(**settings), stop=stop)
