"""The challenger's episode: explore a domain's tools on a fresh world, then write a Code-as-Task.

Challenging is itself an environment (``SelfChallenge-Challenger-v0``), so the loop that plays tasks
also proposes them, batched and vectorized alike. The episode's last message is the proposal, in a
tagged format (:data:`FORMAT`); when the episode ends the env parses it and runs it through the
filter (in the sandbox), and its reward says whether the task was kept. How far a proposal got is
its stage::

    proposals -> parsed -> verifier_ran -> solution_passed -> kept -> new

(``info["stage"]``, with ``info["reason"]`` for a proposal that stopped short and ``info["task"]``,
the stamped CaT, for a kept one). A kept task is *new* unless it copies a demonstration the
challenger learned from (:class:`Novelty`): the same tool calls with the same arguments, and an
instruction with the same facts. Demonstrations live on worlds of seeds below
:data:`PROPOSAL_WORLDS`; proposals never do.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import textwrap
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, ClassVar

import gymnasium as gym

from envs.actions import Malformed, parse_action, read_json, shown
from envs.base import count_argument, reset_options, seeded_or_as_it_was
from envs.cat import MIN_FAILURES, CatFormatError, CodeAsTask
from envs.filter import Verdict, filter_task, stamp
from envs.registry import DOMAINS, env_class
from envs.sandbox import Sandbox
from envs.spaces import AnyText
from envs.state import fork

FORMAT = """\
<instruction>What the user asks for, with every detail the agent needs.</instruction>
<verifier>
def verify(state, answer):
    # state: the final domain state (plain JSON data); answer: what the agent said.
    return ...  # True or False
</verifier>
<solution>{"actions": [{"name": "<tool>", "arguments": {...}}], "answer": "..."}</solution>
<failure>{"actions": [...], "answer": "..."}</failure>
<failure>{"actions": [...], "answer": "..."}</failure>
<failure>{"actions": [...], "answer": "..."}</failure>"""

ROLE = f"""\
You are writing a task for an AI assistant that will work in this environment with the same tools.
First explore: call tools to see real data. Then write ONE task in exactly this format:

{FORMAT}

The verifier must accept the solution and reject each failure case (at least {MIN_FAILURES}): plausible
mistakes such as a wrong value, a missing step or a wrong final answer. It may use state_hash(),
final_number(answer), final_text(answer), near(value, expected, tolerance), same_text(answer, expected)
and same_numbers(answer, expected)."""

INSTRUCTION = "Explore the tools, then write your task."
WRITE_NOW = "\n\nNow write your task in the format, with no more tool calls."
RECEIVED = "Task received."

STAGES = ("proposals", "parsed", "verifier_ran", "solution_passed", "kept", "new")
"""How far a proposal can get, in order."""
_STOPS_BEFORE = {  # the filter's reason -> the first stage the proposal did not reach
    "parse_error": "verifier_ran", "too_few_failures": "parsed", "unknown_domain": "parsed",
    "infeasible_solution": "verifier_ran", "verifier_error": "verifier_ran", "verifier_timeout": "verifier_ran",
    "verifier_non_bool": "verifier_ran", "solution_failed": "solution_passed", "verifier_flaky": "solution_passed",
    "lenient_verifier": "kept",
}

_OPENING = re.compile(r"<(instruction|verifier|solution|failure)>", re.I)
_INSTRUCTION = re.compile(r"<instruction>", re.I)
_CLOSING = {tag: re.compile(f"</{tag}>", re.I) for tag in ("instruction", "verifier", "solution", "failure")}
_FENCED = re.compile(r"```[\w+-]*[ \t]*\n(.*?)\n?[ \t]*```", re.S)
"""A section written as a Markdown code block, as models often write code and JSON."""
_QUOTED = re.compile(r"'[^']+'|\"[^\"]+\"")
_VALUE = re.compile(r"#?\w*\d[\w.-]*|" + _QUOTED.pattern)
"""A fact's value: a number or an id (anything with a digit), a quoted string."""
_NAME = re.compile(r"\b[A-Z][A-Za-z]+(?: [A-Z][A-Za-z0-9]+)*")
"""A name: capitalized words (a sentence's first word aside)."""


def _tagged(text: str) -> list[tuple[str, str]]:
    """Each section of ``text`` (its tag, lowercased, and its body), in order: from an opening tag to the
    first closing tag of its name. In linear time (a lazy regex rescans the rest of the text from each
    opening tag never closed): once a name has no closing tag after one opening, it has none after any."""
    sections, unclosed, position = [], set(), 0
    while opening := _OPENING.search(text, position):
        tag = opening[1].lower()
        closing = None if tag in unclosed else _CLOSING[tag].search(text, opening.end())
        if closing is None:
            unclosed.add(tag)
            position = opening.start() + 1
            continue
        sections.append((tag, text[opening.end():closing.start()]))
        position = closing.end()
    return sections


def _section(body: str) -> str:
    """A section's text: inside its code block if it is one, dedented (a verifier indented as a block)."""
    fenced = _FENCED.fullmatch(body.strip())
    return textwrap.dedent(fenced[1] if fenced else body.strip("\n")).strip()


def _bare(section: str) -> str:
    return section.strip().rstrip(".?!").casefold()


_PLACEHOLDERS = {tag: _bare(_section(body)) for tag, body in _tagged(FORMAT)}
"""Each section's placeholder in :data:`FORMAT`: a proposal that copies one has written no task."""

PROPOSAL_WORLDS = 100_000
"""Proposals play on worlds of seed ``PROPOSAL_WORLDS + reset seed``; demonstrations on seeds below it."""


class ProposalError(ValueError):
    """A proposal that does not fit the tagged format (it never reaches the filter)."""


def paired_surrogates(text: str) -> str:
    """``text`` with each high surrogate that a low one follows joined with it into the character
    they encode, as JSON reads their escapes back (a pool writes a task's text as JSON): so a kept
    task reads back from its pool equal. A lone surrogate stays as it is, and reads back as itself."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def finite(value: Any) -> bool:
    """Whether no number in ``value`` (JSON: nested lists and dicts) is NaN or infinite."""
    stack = [value]
    while stack:  # no recursion: JSON from a proposal nests as deep as the reader allows
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, (list, dict)):
            stack.extend(item.values() if isinstance(item, dict) else item)
    return True


def parse_proposal(text: str, domain: str, world: dict[str, Any], task_id: str,
                   provenance: dict[str, Any] | None = None) -> CodeAsTask:
    """The CaT in a proposal, or :class:`ProposalError` saying what is wrong with it."""
    parts: dict[str, list[str]] = {}
    for tag, body in _tagged(paired_surrogates(text)):
        parts.setdefault(tag, []).append(_section(body))
    for tag in ("instruction", "verifier", "solution"):
        if len(parts.get(tag, [])) != 1:
            raise ProposalError(f"expected one <{tag}> section, found {len(parts.get(tag, []))}")
    if len(parts.get("failure", [])) < MIN_FAILURES:
        raise ProposalError(f"expected at least {MIN_FAILURES} <failure> sections, found {len(parts.get('failure', []))}")
    for tag, bodies in parts.items():
        if any(_bare(body) == _PLACEHOLDERS[tag] for body in bodies):
            raise ProposalError(f"the <{tag}> section is the format's placeholder, not a task's")

    def attempt(body: str, where: str) -> Any:
        value, error = read_json(body)
        if error:
            raise ProposalError(f"{where} is not valid JSON ({error})")
        if not finite(value):  # read as json.loads reads them; a task holding one is unequal to itself
            raise ProposalError(f"{where} holds NaN or Infinity, which JSON has not")
        answer = value.get("answer") if isinstance(value, dict) else None
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):  # as finish says a number: str()
            value["answer"] = str(answer)
        return value

    record = {
        "id": task_id, "domain": domain, "world": world,
        "instruction": parts["instruction"][0], "verifier": parts["verifier"][0] + "\n",
        "solution": attempt(parts["solution"][0], "<solution>"),
        "failures": [attempt(body, f"<failure> {i}") for i, body in enumerate(parts["failure"])],
        "provenance": provenance or {},
    }
    try:
        return CodeAsTask.from_json(record)
    except CatFormatError as exc:
        raise ProposalError(str(exc)) from None


def as_written(value: Any) -> str:
    """``value`` as JSON the way a model writes it: characters as they are, not ``\\u`` escapes (six
    times as long; an answer could go over the action length limit), but a lone surrogate, which
    no UTF-8 text (and no tokenizer) holds, as its escape, which JSON reads back as itself."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")


def render_proposal(task: CodeAsTask) -> str:
    """``task`` as a challenger writes it: the tagged format :func:`parse_proposal` reads back."""
    parts = [f"<instruction>{task.instruction}</instruction>", f"<verifier>\n{task.verifier.strip()}\n</verifier>",
             f"<solution>{as_written(task.solution.to_json())}</solution>"]
    parts += [f"<failure>{as_written(failure.to_json())}</failure>" for failure in task.failures]
    return "\n".join(parts)


def facts(instruction: str) -> frozenset[str]:
    """The facts an instruction states (numbers, ids, quoted strings, names), case aside: two
    instructions with the same facts ask the same, however they are worded."""
    found = {match.lower() for match in _VALUE.findall(instruction)}
    unquoted = _QUOTED.sub("''", instruction)  # a quoted string is one fact, whatever its case: not a name too
    for sentence in re.split(r"(?<=[.!?])\s+", unquoted.strip()):
        rest = sentence.split(maxsplit=1)[1:]
        found |= {match.lower() for match in _NAME.findall(rest[0] if rest else "")}
    return frozenset(found)


def calls(task: CodeAsTask) -> str:
    """The solution's tool calls with their arguments, canonically."""
    return json.dumps([[call.name, call.arguments] for call in task.solution.actions], sort_keys=True)


class Novelty:
    """Whether a kept task is new: not a copy of a demonstration, i.e. not the same calls with the
    same arguments *and* an instruction with the same facts as one of them."""

    def __init__(self, demonstrations: Sequence[CodeAsTask | dict[str, Any]] = ()):
        self.known: dict[tuple[str, frozenset[str]], str] = {}
        for demo in demonstrations:
            task = demo if isinstance(demo, CodeAsTask) else CodeAsTask.from_json(demo)
            self.known[(calls(task), facts(task.instruction))] = task.id

    def copy_of(self, task: CodeAsTask) -> str | None:
        """The id of the demonstration ``task`` copies, or ``None`` when it is new."""
        return self.known.get((calls(task), facts(task.instruction)))


def stage_of(verdict: Verdict | None) -> str:
    """The last stage a proposal reached: ``proposals`` when it did not parse (``verdict`` ``None``)."""
    if verdict is None:
        return "proposals"
    if verdict.kept:
        return "kept"
    stop = _STOPS_BEFORE.get(verdict.reason or "", "verifier_ran")
    return STAGES[STAGES.index(stop) - 1]


def default_world(domain: str, seed: int) -> dict[str, Any]:
    """The world the domain's scripted challenger uses, at ``seed``."""
    world = dict(env_class(domain).default_tasks()[0].world)
    world["seed"] = seed
    return world


class ChallengerEnv(gym.Env[str, str]):
    """The challenger's episode in one domain's world.

    ## Description
    The model explores the domain's tools on its own copy of a world for up to ``explore_turns``
    tool calls, then writes a task in the tagged format (:data:`FORMAT`). The last message is the
    proposal (:attr:`proposal`); the exploration is kept as the task's provenance.

    ## Action Space
    Text: a JSON tool call while exploring (as the domain's env reads it), then the tagged task.
    ``None`` is no action (a vector env's sub-env sitting out a round): no turn passes.

    ## Observation Space
    Text: the instruction to explore and write, then each tool's output; the last exploring turn's
    output asks for the task.

    ## Rewards
    0 until the end; then 1.0 if the filter keeps the proposed task and it is new (it copies none of
    the ``known`` demonstrations), else ``shaping`` times the share of the stages the proposal passed
    (0 by default). ``info["stage"]`` says how far the proposal got (:data:`STAGES`),
    ``info["reason"]`` why it stopped there (``copy`` for a kept copy, with ``info["copy_of"]``),
    ``info["task"]`` holds the kept task (its filter record stamped on it), ``info["parsed"]`` any
    task that parsed, kept or not (what a run without the filter would train on), and
    ``info["seconds"]`` the time the episode's tool calls and its judging (parse, filter) took.

    ## Starting State
    A fresh copy of a world of the domain: ``options={"world": {...}}``, else the domain's default
    world at seed :data:`PROPOSAL_WORLDS` plus the reset's ``seed`` (or one drawn from the env's
    generator).

    ## Episode End
    Terminated by the first message that holds an ``<instruction>`` section, or by the message
    after ``explore_turns`` exploring turns.

    ## Arguments
    ``domain`` (required), ``explore_turns`` (default 3), ``challenger`` (the provenance's name of
    who writes, e.g. ``"llm:<model>"``), ``sandbox`` (where verifiers run), ``known`` (the
    demonstrations, CaTs or their JSON, that a new task must not copy), ``shaping`` (see Rewards).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, domain: str, explore_turns: int = 3, challenger: str = "llm", sandbox: Sandbox | None = None,
                 known: Sequence[CodeAsTask | dict[str, Any]] = (), shaping: float = 0.0):
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
        count_argument("explore_turns", explore_turns, 0)
        if not 0.0 <= shaping <= 1.0:  # a reward stays in [0, 1]: 1 is a new task's alone
            raise ValueError(f"shaping must be between 0 and 1, got {shaping!r}")
        self.env_cls = env_class(domain)
        self.domain, self.explore_turns, self.challenger, self.sandbox = domain, explore_turns, challenger, sandbox
        self.novelty, self.shaping = Novelty(known), shaping
        self.observation_space = AnyText()
        self.action_space = AnyText()
        self.world: dict[str, Any] | None = None  # None until the first reset
        self.proposal = ""
        self.exploration: list[dict[str, Any]] = []
        self._turn = 0
        self._done = True
        self.seconds = {"tools": 0.0, "filter": 0.0}

    def _info(self) -> dict[str, Any]:
        return {"task_id": f"challenge-{self.domain}-{self.world.get('seed', '')}", "domain": self.domain,
                "tools": self.env_cls.toolset.schemas, "policy": f"{self.env_cls.policy}\n\n{ROLE}"}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        options = reset_options(options, frozenset({"world"}))
        with seeded_or_as_it_was(self, seed):
            world_seed = PROPOSAL_WORLDS + (seed if seed is not None else int(self.np_random.integers(2**30)))
            world = dict(options["world"]) if "world" in options else default_world(self.domain, world_seed)
            base = self.env_cls.base_state(world)
        self.world, self.state = world, fork(base)
        self.proposal, self.exploration, self._turn, self._done = "", [], 0, False
        self.seconds = {"tools": 0.0, "filter": 0.0}
        return INSTRUCTION, self._info()

    def step(self, action: str | None) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if action is None:
            return "", 0.0, False, False, self._info() if self.world is not None else {}
        if self.world is None:
            info = {"invalid_action": "no episode"}
            return "Error: no episode has started; call reset() first.", 0.0, True, False, info
        if self._done:
            return "Error: the episode is over; call reset() to start another.", 0.0, True, False, self._info()
        self._turn += 1
        text = action if isinstance(action, str) else shown(action)  # not text: parsed as nothing, like any junk
        if _INSTRUCTION.search(text) or self._turn > self.explore_turns:
            self.proposal, self._done = text, True
            started = time.perf_counter()
            parsed, verdict, problem = self.judge()
            self.seconds["filter"] += time.perf_counter() - started
            stage = stage_of(verdict)
            info = {**self._info(), "stage": stage, "reason": "unparsed" if verdict is None else verdict.reason,
                    "detail": problem or "", "seconds": dict(self.seconds)}
            if parsed is not None:
                info["parsed"] = parsed.to_json()
            task = stamp(parsed, verdict) if parsed is not None and verdict is not None and verdict.kept else None
            if task is not None:
                copied = self.novelty.copy_of(task)
                if copied is None:
                    info["stage"] = stage = "new"
                else:
                    info.update(reason="copy", copy_of=copied, detail=f"copies demonstration {copied}")
                novelty = "new" if copied is None else f"copy of {copied}"
                info["task"] = replace(task, provenance={**task.provenance, "novelty": novelty}).to_json()
            passed = STAGES.index(stage) / (len(STAGES) - 1)
            reward = 1.0 if stage == "new" else self.shaping * passed
            return RECEIVED, reward, True, False, info
        parsed = parse_action(action, self.action_space.max_length)
        if isinstance(parsed, Malformed) or not hasattr(parsed, "name"):
            observation = parsed.message if isinstance(parsed, Malformed) else "Error: explore with JSON tool calls."
        else:
            started = time.perf_counter()
            observation = self.env_cls.toolset.call(self.state, parsed.name, parsed.arguments)
            self.seconds["tools"] += time.perf_counter() - started
            self.exploration.append({"call": parsed.to_json(), "output": observation[:2000]})
        if self._turn == self.explore_turns:
            observation += WRITE_NOW
        return self.observation_space.fit(observation), 0.0, False, False, self._info()

    def judge(self) -> tuple[CodeAsTask | None, Verdict | None, str | None]:
        """Parse and filter the proposal: the parsed task, the filter's verdict (both ``None`` if it
        did not parse) and the problem found."""
        limit = self.action_space.max_length
        if len(self.proposal) > limit:
            return None, None, f"the proposal is {len(self.proposal):,} characters long, over the limit of {limit:,}"
        digest = hashlib.sha256(self.proposal.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        provenance = {"challenger": self.challenger, "exploration": self.exploration,
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            task = parse_proposal(self.proposal, self.domain, self.world,
                                  f"{self.domain}-llm-{self.world.get('seed', 0)}-{digest}", provenance)
        except ProposalError as exc:
            return None, None, str(exc)
        verdict = filter_task(task, self.sandbox)
        return task, verdict, verdict.detail
