"""The multi-turn tool environment that every domain subclasses.

A domain supplies its tools (:class:`envs.tools.Toolset`), its policy text, how to build a world's
base state, and a scripted challenger for a default pool; this class does the rest: drawing a CaT,
parsing actions, running tools on the episode's own copy-on-write state, code actions in the
sandbox, and the verifier's reward when the episode ends.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym

from envs.actions import Action, CodeAction, Malformed, parse_action, shown
from envs.cat import Attempt, CodeAsTask, ToolCall
from envs.pool import load_pool
from envs.sandbox import RunResult, Sandbox, resolve_sandbox
from envs.spaces import AnyText
from envs.state import State, canonical_json, fork, state_hash
from envs.tools import Toolset, ToolMode, UpstreamFailure, tool_schema

TaskSource = str | os.PathLike[str] | Sequence[CodeAsTask | dict[str, Any]] | None


def finish(state: State, answer: str) -> str:
    """End the task and give the final answer.

    Args:
        state: The episode state.
        answer: The final answer to the task (the requested value, or a short summary of what was done).
    """
    return answer


def respond(state: State, content: str) -> str:
    """Send a message to the user.

    Args:
        state: The episode state.
        content: The message to the user.
    """
    return content


NO_USER = "(No user is on this conversation: the instruction holds everything you need. Call finish when done.)"


DEFAULT_POOL_SIZE = 32
DEFAULT_MAX_ACTION_LENGTH = 65_536
DEFAULT_MAX_TURNS = 20
VECTOR_OPTIONS = frozenset({"reset_mask"})
"""Gymnasium's vector envs hand their own reset options on to every sub-env: accepted, not read."""


def count_argument(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is a whole number of at least ``minimum``; else an error naming the argument
    (``2.5`` turns or ``"5"`` would otherwise compare, or fail to, deep inside an episode)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def reset_options(options: Any, known: frozenset[str]) -> Mapping[str, Any]:
    """A reset's ``options``, refused when they are not a mapping or name an option the env does not
    know: a misspelt ``task_id`` would otherwise draw a random task without a word."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"reset options must be a dict, got {type(options).__name__}: {options!r:.80}")
    unknown = sorted(map(repr, set(options) - known - VECTOR_OPTIONS))
    if unknown:
        raise ValueError(f"unknown reset option {', '.join(unknown)}; this env knows {', '.join(sorted(known))}")
    return options


@contextlib.contextmanager
def seeded_or_as_it_was(env: gym.Env, seed: int | None) -> Iterator[None]:
    """Seed ``env`` as ``gym.Env.reset`` does, for a reset whose body runs inside; if that body raises (a
    task id not in the pool, a world that cannot be built), put the generator back: the reset changed nothing."""
    generator = env._np_random, env._np_random_seed
    try:
        gym.Env.reset(env, seed=seed)
        yield
    except BaseException:
        env._np_random, env._np_random_seed = generator
        raise


@functools.lru_cache(maxsize=16)
def _cached_base(cls: type["ToolEnv"], world_key: str) -> State:
    return cls.build_world(json.loads(world_key))


@functools.cache
def _default_pool(cls: type["ToolEnv"]) -> tuple[CodeAsTask, ...]:
    package = cls.__module__.rpartition(".")[0]
    make_tasks = importlib.import_module(f"{package}.challenger").make_tasks
    return tuple(make_tasks(seed=0, n=DEFAULT_POOL_SIZE))


class ToolEnv(gym.Env[str, str]):
    """Base class; see each domain's docstring for its sections.

    ## Arguments

    - ``tasks``: a pool path (JSONL), a list of CaTs (objects or dicts), or ``None`` for the
      domain's default pool made by its scripted challenger.
    - ``max_turns``: the episode is truncated after this many actions (default 20), and the verifier
      scores the state reached. Limit episodes with it, not with ``gym.make``'s ``max_episode_steps``:
      that TimeLimit wrapper cuts an episode off from outside, where the env cannot see it, unscored.
    - ``max_action_length``: longest action read, in characters (default 65,536); a longer one is
      refused with an error observation, unread.
    - ``tool_mode``: ``"strict"`` (default) checks each call's arguments and undoes a call that
      fails; ``"upstream"``, for domains that reproduce a benchmark's tools (retail and airline:
      tau-bench's), handles calls as upstream does (see :mod:`envs.tools`); there only ``respond`` speaks
      to the user, read for its ``content`` alone, and ``finish``'s answer is said to no one.
    - ``sandbox``: where verifiers and code actions run: ``"local"`` (the default) or ``"docker"`` for
      the process's shared sandbox of that backend, or a :class:`~envs.sandbox.Sandbox`; anything
      else is a ValueError.
    - ``render_mode``: ``"ansi"`` returns the transcript as text.

    The last step's ``info`` holds the verifier's verdict (``"verifier"``: status, kind, message) and
    ``"final_state"``: the final state's hash (:func:`envs.state.state_hash`) and what the agent said.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}
    domain: ClassVar[str]
    toolset: ClassVar[Toolset]
    policy: ClassVar[str]
    conversational: ClassVar[bool] = False
    """Conversation domains (retail, airline) have ``respond``; what the agent says is its answer."""
    terminal_tools: ClassVar[frozenset[str]] = frozenset()
    """Tools that end the episode in the domain itself (e.g. a transfer to a human agent)."""

    def __init__(self, tasks: TaskSource = None, max_turns: int = DEFAULT_MAX_TURNS,
                 sandbox: Sandbox | str | None = None,
                 render_mode: str | None = None, max_action_length: int = DEFAULT_MAX_ACTION_LENGTH,
                 tool_mode: ToolMode = "strict"):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        count_argument("max_turns", max_turns, 1)
        count_argument("max_action_length", max_action_length, 1)
        if tool_mode not in self.toolset.modes:
            raise ValueError(f"tool_mode must be one of {', '.join(self.toolset.modes)} for the {self.domain} env, "
                             f"got {tool_mode!r}")
        self.tool_mode = tool_mode
        self.observation_space = AnyText()
        self.action_space = AnyText(max_action_length)
        self.render_mode = render_mode
        self.max_turns = max_turns
        resolve_sandbox(sandbox)  # a wrong choice (or a docker engine that is not there) fails here, at make
        self._sandbox = sandbox
        self.tasks = self._load_tasks(tasks)
        self._by_id = {t.id: t for t in self.tasks}
        extra = [finish] + ([respond] if self.conversational else [])
        self.tool_schemas = self.toolset.schemas + [tool_schema(fn) for fn in extra]
        self.tool_names = [schema["function"]["name"] for schema in self.tool_schemas]
        self.task: CodeAsTask | None = None
        self.state: State = {}
        self.transcript: list[tuple[str, str]] = []
        self._said: list[str] = []
        self._upstream_failure: str | None = None
        self._done = True
        self._truncated = False
        self._turn = 0

    # ---------------------------------------------------------------- the domain's part

    @classmethod
    def build_world(cls, world: dict[str, Any]) -> State:
        """The base state of ``world`` (built once per process and shared by episodes)."""
        raise NotImplementedError

    @classmethod
    def default_tasks(cls) -> list[CodeAsTask]:
        """The pool of ``gym.make(id)`` alone: the first ``DEFAULT_POOL_SIZE`` tasks the domain's
        scripted challenger (``make_tasks`` in the ``challenger`` module beside the env's) writes on
        world seed 0, made once per process."""
        return list(_default_pool(cls))

    # ---------------------------------------------------------------- plumbing

    @classmethod
    def base_state(cls, world: dict[str, Any]) -> State:
        """The shared base state of ``world``; a ValueError naming the world if it cannot be built (a world
        builder reads a record's data: whatever it raises, the record is at fault)."""
        try:
            return _cached_base(cls, canonical_json(world))
        except Exception as exc:
            raise ValueError(f"the {cls.domain} world {world!r} cannot be built: {type(exc).__name__}: {exc}") from exc

    @property
    def sandbox(self) -> Sandbox:
        return resolve_sandbox(self._sandbox)

    def _load_tasks(self, tasks: TaskSource) -> list[CodeAsTask]:
        if tasks is None:
            loaded = self.default_tasks()
        elif isinstance(tasks, (str, os.PathLike)):
            loaded = load_pool(Path(tasks), domain=self.domain)
        else:
            loaded = [t if isinstance(t, CodeAsTask) else CodeAsTask.from_json(t) for t in tasks]
        wrong = [t.id for t in loaded if t.domain != self.domain]
        if wrong:
            raise ValueError(f"{self.domain} env got tasks of another domain: {wrong[:3]}")
        if not loaded:
            raise ValueError(f"no {self.domain} tasks in {tasks}: make some with "
                             f"`python -m agents.challenge --domain {self.domain}` or pass tasks=None")
        return loaded

    def _info(self) -> dict[str, Any]:
        assert self.task is not None
        return {"task_id": self.task.id, "domain": self.domain, "tools": self.tool_schemas,
                "policy": self.policy, "turn": self._turn}

    # ---------------------------------------------------------------- gymnasium API

    def _chosen(self, options: Mapping[str, Any]) -> CodeAsTask:
        """The task a reset plays: the one ``options`` bring or name, else one drawn from the pool."""
        if "task" in options and "task_id" in options:
            raise ValueError("the reset options task and task_id each pick a task: give one of them")
        if "task" in options:
            task = options["task"]
            task = task if isinstance(task, CodeAsTask) else CodeAsTask.from_json(task)
            if task.domain != self.domain:  # its verifier reads another world
                raise ValueError(f"{self.domain} env got task {task.id!r} of domain {task.domain!r}")
            return task
        if "task_id" in options:
            task_id = options["task_id"]
            if not isinstance(task_id, str) or task_id not in self._by_id:
                raise KeyError(f"no task {task_id!r} in this {self.domain} pool")
            return self._by_id[task_id]
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Draw a task (``options={"task_id": …}`` picks one, ``{"task": CaT}`` brings one of this domain)."""
        options = reset_options(options, frozenset({"task", "task_id"}))
        with seeded_or_as_it_was(self, seed):
            task = self._chosen(options)
            try:
                base = self.base_state(task.world)
            except ValueError as exc:
                raise ValueError(f"task {task.id!r}: {exc}") from exc
        self.task, self.state = task, fork(base)
        instruction = self.observation_space.fit(self.task.instruction)
        self.transcript = [("user", instruction)]
        self._said = []
        self._upstream_failure = None
        self._done = self._truncated = False
        self._turn = 0
        return instruction, self._info()

    def step(self, action: str | ToolCall | None) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """One action: text (see the domain's Action Space). A :class:`~envs.cat.ToolCall` is a call a
        wrapper has read from text its own way (:class:`envs.user.SimulatedUser`'s messages), under its
        own length limit."""
        if action is None:  # no action (a vector env's sub-env sitting out a round): no turn passes
            return "", 0.0, False, False, self._info() if self.task is not None else {}
        if self.task is None:
            info = {"invalid_action": "no episode"}
            return "Error: no episode has started; call reset() first.", 0.0, True, False, info
        if self._done:  # as it ended: truncated stays truncated
            info = {**self._info(), "invalid_action": "episode over"}
            return ("Error: the episode is over; call reset() to start another.", 0.0, not self._truncated,
                    self._truncated, info)
        self._turn += 1
        parsed, text = self._read(action)
        self.transcript.append(("assistant", self.action_space.fit(text)))  # printable, as observations are
        info: dict[str, Any] = {}
        terminated = False
        if isinstance(parsed, Malformed):
            observation = parsed.message
            info["invalid_action"] = parsed.message
        elif isinstance(parsed, CodeAction):
            observation, terminated = self._run_code(parsed.source, info)
        else:
            observation, terminated = self._call(parsed, info)
        truncated = self._truncated = not terminated and self._turn >= self.max_turns
        observation = self.observation_space.fit(observation)
        self.transcript.append(("tool", observation))
        reward = 0.0
        if terminated or truncated:
            result = self.end()
            reward = 1.0 if result.status == "ok" else 0.0
            info.update(self.ending(result))
        info.update(self._info())
        return observation, reward, terminated, truncated, info

    def _read(self, action: Any) -> tuple[Action, str]:
        """The action read, and its text for the transcript."""
        if isinstance(action, ToolCall) and isinstance(action.name, str) and isinstance(action.arguments, dict):
            with contextlib.suppress(ValueError, TypeError, RecursionError):  # arguments JSON cannot write
                return action, json.dumps(action.to_json(), ensure_ascii=False)
        if isinstance(action, str):
            return parse_action(action, self.action_space.max_length), action
        return parse_action(action), shown(action)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n".join(f"[{role}] {text}" for role, text in self.transcript)

    # ---------------------------------------------------------------- actions

    @property
    def _finish_is_heard(self) -> bool:
        """Whether ``finish``'s answer counts as said: in upstream's conversations only ``respond`` reaches the user."""
        return not (self.conversational and self.tool_mode == "upstream")

    def _call(self, call: ToolCall, info: dict[str, Any]) -> tuple[str, bool]:
        """One tool call on the episode's state; returns (observation, episode ended)."""
        if call.name == "finish":
            answer = call.arguments.get("answer", "")
            if set(call.arguments) - {"answer"} or not isinstance(answer, (str, int, float)):
                info["invalid_action"] = 'finish takes one argument, "answer" (a string)'
                return 'Error: finish takes one argument, "answer" (a string).', False
            if self._finish_is_heard:
                self._said.append(str(answer))
            return "Episode finished.", True
        if call.name == "respond" and self.conversational:
            content = call.arguments.get("content")
            if self.tool_mode == "upstream":  # upstream's Env.step hands kwargs["content"] to its user model
                if not isinstance(content, str):
                    failure = (f"respond with {'no content' if content is None else type(content).__name__ + ' content'}"
                               ": upstream's env fails on it (a KeyError, or a message no user model takes), which "
                               "ends upstream's episode with reward 0")
                    self._upstream_failure = info["upstream_failure"] = failure
                    return f"Error: {failure}", True
            elif set(call.arguments) != {"content"} or not isinstance(content, str):
                info["invalid_action"] = 'respond takes one argument, "content" (a string)'
                return 'Error: respond takes one argument, "content" (a string).', False
            self._said.append(content)
            return NO_USER, False
        problem = self.toolset.check(call.name, call.arguments, offered=self.tool_names, mode=self.tool_mode)
        if problem:
            info["invalid_action"] = problem
            return problem, False
        try:
            observation = self.toolset.call(self.state, call.name, call.arguments, self.tool_mode)
        except UpstreamFailure as failure:
            self._upstream_failure = info["upstream_failure"] = str(failure)
            return f"Error: {failure}", True
        return observation, call.name in self.terminal_tools

    def _run_code(self, source: str, info: dict[str, Any]) -> tuple[str, bool]:
        ended = False

        def tools(name: str, arguments: dict[str, Any]) -> str:
            nonlocal ended
            if ended:
                return "Error: the episode has ended."
            observation, ended = self._call(ToolCall(name, arguments), info)
            return observation

        params = self.toolset.params() | {"finish": ["answer"]}
        if self.conversational:
            params["respond"] = ["content"]
        result = self.sandbox.run_code(source, tools, params)
        observation = result.output
        if result.status != "ok":
            observation += f"\n{result.message}" if observation else result.message
            info["code_error"] = result.message
        return observation or "(no output)", ended

    # ---------------------------------------------------------------- reward

    @property
    def answer(self) -> str:
        """What the agent said: its ``respond`` messages and final answer, joined."""
        return "\n".join(self._said)

    def verify(self, elsewhere: bool = False) -> RunResult:
        """Run the task's verifier on the current state and answer (``elsewhere``: on another sandbox
        worker than the last job's, see :meth:`Sandbox.verify`). An episode that upstream itself
        fails on, or whose state cannot be written down (an upstream-mode tool may keep an integer
        past Python's 4,300 digits, and upstream's own hash then fails too), scores 0."""
        assert self.task is not None
        if self._upstream_failure:
            return RunResult("error", kind="upstream_failure", message=self._upstream_failure)
        try:
            return self.sandbox.verify(self.task.verifier, self.state, self.answer, elsewhere=elsewhere)
        except ValueError as exc:
            return RunResult("error", kind="state", message=f"the final state cannot be serialised: {exc}")

    def ending(self, result: RunResult) -> dict[str, Any]:
        """The info entries of an episode's last step: the verifier's verdict on ``result``, and the
        final state's hash and what the agent said beside it, so that a task judged on both (tau-bench's
        data and outputs) can say which one failed. The hash is ``None`` for a state that cannot be
        written down."""
        try:
            digest = state_hash(self.state)
        except ValueError:
            digest = None
        return {"verifier": {"status": result.status, "kind": result.kind, "message": result.message},
                "final_state": {"hash": digest, "said": self.answer}}

    def end(self) -> RunResult:
        """End the episode and verify it: every later step is an error until :meth:`reset`. The env's
        own end, a replay's, and a wrapper's (a simulated user who stops the conversation)."""
        self._done = True
        return self.verify()

    def replay(self, task: CodeAsTask, attempt: Attempt,
               max_turns: int | None = None) -> tuple[RunResult, list[str], list[str]]:
        """Play ``attempt`` on a fresh state of ``task``'s world and verify the end.

        Returns the verifier's result, the observations, and the problems of invalid actions (an
        unknown tool or wrong arguments): a solution with any of those is infeasible. The answer is
        said at the end, as an agent's ``finish`` says it, unless a call (``finish`` itself, a
        terminal tool such as a transfer to a human) ended the episode first: played, it ends there.
        With ``max_turns``, as an episode of that many actions plays it: cut after that many calls, its
        answer unsaid.
        """
        self.reset(options={"task": task})
        observations, problems = [], []
        ended = False
        for call in attempt.actions[:max_turns]:
            info: dict[str, Any] = {}
            observation, ended = self._call(call, info)
            observations.append(observation)
            if "invalid_action" in info:
                problems.append(f"{call.name}: {info['invalid_action']}")
            if ended:
                break
        if not ended and (max_turns is None or len(attempt.actions) < max_turns) and self._finish_is_heard:
            self._said.append(attempt.answer)
        return self.end(), observations, problems
