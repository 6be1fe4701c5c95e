"""tau-bench (Yao et al., 2024) in our retail and airline environments, with a simulated user.

Each tau-bench task becomes a CaT of our env loaded with tau-bench's data (``{"data_dir": …}``): its
solution is the gold actions (``respond`` left out), its verifier the final-state hash of replaying
them in *our* env plus the required outputs under upstream's rule (lowercase, commas stripped,
substring of what the agent said) — :func:`envs.scripted.outcome_verifier`. Since our tools replay
every golden task exactly as upstream's do (``tests/test_taubench_compat.py``), this is upstream's
reward.

An episode follows upstream's protocol (``tau_bench/envs/base.py``, ``agents/tool_calling_agent.py``),
kept by :class:`envs.user.SimulatedUser`: the agent's system text is the domain's wiki (rendered
with the tools as training renders them); the simulated user sees only its instruction, speaks
first (after the agent's greeting), and ends the conversation with ``###STOP###``, which is when
the reward is computed; a message that is not a tool call (code included, which upstream's agents
cannot run) is said to the user, as is a ``respond`` call; at most 30 agent steps (a message to the
user on the 30th still gets its answer, which may stop and score the conversation; one still going
then scores 0). Only a ``respond`` (or plain text) reaches the user and counts for the required
outputs; as upstream, a ``respond`` is read for its ``content`` alone,
and one without text content ends the episode with 0, where upstream's step fails. Our envs'
``finish`` also ends a conversation (upstream answers it "Unknown action finish" and goes on), but
what it says reaches no user and counts for nothing; and ``calculate`` refuses
integer arithmetic past about a million bits with Python's own "int too large to convert to float"
(``2 ** 2000000 / 2 ** 1999999``, which upstream's ``eval`` answers, and ``9 ** 9 ** 9``, on which
it would hang; only the observation differs, since ``calculate`` writes nothing). pass^k over k trials is
upstream's: per task C(c, k) / C(n, k) with c successes in n trials, averaged over tasks.
Conversations play side by side in a vector env (``--batch-size``, :func:`agents.rollout.play`): each
round, the users due to speak answer in one batched decode, then the agents due to act. The envs run
their tools in upstream mode: malformed and failing calls are handled as upstream handles them, so
that a sloppy agent scores as it would upstream.

Tasks come from a tau-bench checkout (``--taubench-dir``/``$TAUBENCH_DIR``: its
``tau_bench/envs/<domain>/tasks_<split>.py``, read as data without importing tau-bench, together with
its data and ``wiki.md``) or from a golden file (``../shared/taubench/golden/*.json``, with the data
and wikis beside it). No task here is ever trained on.

Each episode's record also says which part held, as upstream's reward info does: ``r_actions`` (the
final data equals the gold replay's) and ``outputs`` (each required output, said or not); the summary
counts the failed conversations by cause.

``python -m eval.taubench --domain retail --taubench-dir ~/tau-bench --trials 4`` (``make eval-taubench``).
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gymnasium.vector import VectorEnv
from tqdm import tqdm

from agents.policy import ModelPolicy, Player, Policy, Trajectory
from agents.prompting import Message
from agents.rollout import make_vector_env, play
from envs.base import ToolEnv
from envs.cat import Attempt, CodeAsTask, ToolCall
from envs.records import RecordsError, append_jsonl, read_jsonl
from envs.registry import env_class, env_id
from envs.scripted import outcome_verifier
from envs.scripted import play as replay
from envs.taubench import load_golden, shared_dir
from envs.tools import ToolMode
from envs.user import SimulatedUser
from eval import cli, report
from eval.cli import InputError, run
from eval.estimators import pass_hat_k

log = logging.getLogger(__name__)

DOMAINS = ("retail", "airline")
SPLITS = {"retail": ("test", "train", "dev"), "airline": ("test",)}
ENV_VAR = "TAUBENCH_DIR"
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


def _task(index: int, raw: Any) -> TauTask:
    """Task ``index`` of a file, held to the types upstream's pydantic ``Task`` and ``Action`` take
    (a TypeError naming what is wrong: ``outputs='abc'`` is not three outputs)."""
    if not isinstance(raw, dict):
        raise TypeError(f"task {index} is not a Task(...)")
    user_id, instruction, listed = raw.get("user_id", ""), raw["instruction"], raw["actions"]
    outputs = raw.get("outputs", raw.get("required_outputs", []))
    if not (isinstance(user_id, str) and isinstance(instruction, str)):
        raise TypeError(f"task {index}: user_id and instruction must be text")
    if not (isinstance(listed, list) and all(isinstance(a, dict) and isinstance(a.get("name"), str)
                                             and isinstance(a.get("kwargs", a.get("arguments", {})), dict)
                                             for a in listed)):
        raise TypeError(f"task {index}: actions must be a list of Action(name='...', kwargs={{...}})")
    if not (isinstance(outputs, list) and all(isinstance(output, str) for output in outputs)):
        raise TypeError(f"task {index}: outputs must be a list of text")
    actions = tuple(ToolCall(a["name"], a.get("kwargs", a.get("arguments", {}))) for a in listed)
    return TauTask(index, user_id, instruction, actions, tuple(outputs))


def read_task_file(path: Path) -> tuple[TauTask, ...]:
    """The tasks of an upstream ``tasks_*.py``: its module-level list, read without running the file
    (which would import tau-bench and its dependencies)."""
    try:
        tree = ast.parse(path.read_text(), str(path))
        listed = next((node.value for node in tree.body
                       if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.List)), None)
        if listed is None:
            raise ValueError("no module-level list of tasks")
        return tuple(_task(i, raw) for i, raw in enumerate(_data(listed)))
    except (OSError, SyntaxError, ValueError, KeyError, TypeError) as error:
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
    try:
        tasks = tuple(_task(i, raw) for i, raw in enumerate(golden["tasks"]))
    except (KeyError, TypeError) as error:
        raise InputError(f"{path} is not a tau-bench golden file: {type(error).__name__}: {error}") from None
    return Source(domain, golden.get("split", path.stem), tasks, root / "data" / domain, wiki.read_text())


def as_cat(task: TauTask, source: Source, env: type[ToolEnv]) -> CodeAsTask:
    """``task`` as a CaT of ``env``: gold actions as the solution, the gold replay's hash and the
    required outputs as the verifier."""
    world = {"data_dir": str(source.data_dir.resolve())}
    solution = Attempt(tuple(a for a in task.actions if a.name != "respond"), "\n".join(task.outputs))
    final = replay(env.base_state(world), env.toolset, solution)
    return CodeAsTask(
        id=f"taubench-{source.domain}-{source.split}-{task.index}", domain=source.domain, world=world,
        instruction=task.instruction, verifier=outcome_verifier(final, task.outputs), solution=solution,
        failures=(), provenance={"source": "tau-bench", "split": source.split, "index": task.index,
                                 "user_id": task.user_id, "data_hash": final, "outputs": list(task.outputs)})


# ---------------------------------------------------------------- the simulated user


_GOAL = re.compile(r"Your goal:\n(.*)\n\nHow to talk:", re.DOTALL)


def goal_of(messages: list[Message]) -> str:
    """The instruction in a simulated user's system prompt (:data:`envs.user.USER_PROMPT`)."""
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
        plans[task.instruction] = ([_call(a.name, **a.arguments) for a in task.actions] + said
                                   + [_call("finish", answer="")])

    def policy(messages: list[Message]) -> str:
        plan = plans.get(messages[1]["content"], [_call("finish", answer="")])
        return plan[min(sum(m["role"] == "assistant" for m in messages), len(plan) - 1)]

    return policy


def do_nothing_policy(messages: list[Message]) -> str:
    """Ends the conversation at once: scores exactly the tasks whose goal needs no change and no output."""
    return _call("finish", answer="")


# ---------------------------------------------------------------- conversations


def conversations(source: Source, cats: Sequence[CodeAsTask], batch_size: int, max_steps: int = MAX_STEPS,
                  mode: str = "sync", tool_mode: ToolMode = "upstream") -> VectorEnv:
    """The vector env the conversations play in: ``batch_size`` sub-envs of the domain's env holding
    ``cats``, its tools in ``tool_mode``, each with a simulated user (:class:`envs.user.SimulatedUser`,
    tau-bench's protocol) and the wiki as the agent's system text; at most ``max_steps`` agent steps each."""
    return make_vector_env(env_id(source.domain), batch_size, mode,
                           [functools.partial(SimulatedUser, policy=source.wiki)], tasks=list(cats),
                           max_turns=max_steps, tool_mode=tool_mode)


def record(task_index: int, trial: int, trajectory: Trajectory, task: CodeAsTask) -> dict[str, Any]:
    """A conversation as the agent saw it: its reward, why it ended (``user_stop``, ``terminated``
    by a terminal tool or ``finish``, ``truncated`` at the step limit, or ``context_limit``) and, as
    upstream's reward info, which part of ``task`` held: ``r_actions`` (the final data equals the gold
    actions' replay) and ``outputs`` (each required output said, under upstream's rule). A
    conversation cut off before the env ended it (the model's context full) has neither."""
    entry = {"task_index": task_index, "trial": trial, "reward": trajectory.reward, "end_reason": trajectory.end_reason,
             "steps": trajectory.num_turns, "messages": trajectory.messages}
    final = trajectory.final_info.get("final_state")
    if final is not None:
        said = final["said"].lower().replace(",", "")
        entry["r_actions"] = final["hash"] == task.provenance["data_hash"]
        entry["outputs"] = {output: output.lower() in said for output in task.provenance["outputs"]}
    return entry


def failure_causes(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many conversations scored 0 (``failed``), and of those how many ended with the wrong data
    (``data``) or without a required output said (``outputs``): both when both went wrong. A record
    without the parts (cut off at the model's context) counts as failed alone."""
    failed = [r for r in records if r["reward"] < 1 - 1e-6]
    return {"failed": len(failed), "data": sum(r.get("r_actions") is False for r in failed),
            "outputs": sum(not all(r.get("outputs", {}).values()) for r in failed)}


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
        if last < first:
            raise InputError(f"--tasks {spec!r}: the range {first}-{last} holds no task (write it low-high)")
        if last >= count:  # checked before the range is listed: 0-99999999999 must not fill the memory
            raise InputError(f"--tasks {spec!r}: there are only {count} tasks (indices 0-{count - 1})")
        ids += range(first, last + 1)
    return ids


def pass_hat(successes: dict[int, list[bool]], trials: int) -> dict[str, float]:
    """pass^k for k = 1..``trials``, each the average over tasks of C(c, k) / C(n, k)."""
    if not successes:
        return {}
    return {str(k): sum(pass_hat_k(len(s), sum(s), k) for s in successes.values()) / len(successes)
            for k in range(1, trials + 1)}


def evaluate(source: Source, policy: Player | Policy, user: Player | Policy, trials: int = 1,
             task_ids: Sequence[int] | None = None, out: Path | None = None, model: str = "",
             max_steps: int = MAX_STEPS, batch_size: int = 1, mode: str = "sync", seed: int | None = None,
             tool_mode: ToolMode = "upstream") -> dict[str, Any]:
    """Run ``trials`` conversations of each selected task (all by default; a task selected twice plays
    once), ``batch_size`` at a time in one vector env (:func:`conversations`); the summary (pass^k,
    average reward).

    With ``out``, each episode is appended to ``out/episodes.jsonl`` as it ends, episodes already
    there are not run again, and the summary's markdown and chart are written beside it.
    """
    if trials < 1:
        raise InputError(f"--trials must be at least 1, got {trials}")
    cls = env_class(source.domain)
    ids = list(dict.fromkeys(task_ids)) if task_ids is not None else list(range(len(source.tasks)))
    path = out / "episodes.jsonl" if out else None
    try:
        records = read_jsonl(path) if path else []
    except RecordsError as error:
        raise InputError(f"{error}; move the file away to start afresh") from None
    done = {(r["task_index"], r["trial"]) for r in records}
    todo = [(i, trial) for trial in range(trials) for i in ids if (i, trial) not in done]
    cats = {i: as_cat(source.tasks[i], source, cls) for i in sorted({i for i, _ in todo})}
    if todo:
        envs = conversations(source, list(cats.values()), min(batch_size, len(todo)), max_steps, mode, tool_mode)
        with tqdm(total=len(todo), desc=f"tau-bench {source.domain}", unit="episode") as progress:
            def keep(job: int, trajectory: Trajectory) -> None:
                index, trial = todo[job]
                records.append(record(index, trial, trajectory, cats[index]))
                if path:
                    append_jsonl(path, [records[-1]])
                progress.update()

            try:
                play(envs, policy, [{"task_id": cats[index].id} for index, _ in todo], seed, user, keep)
            finally:
                envs.close()
    chosen = [r for r in records if r["task_index"] in set(ids) and r["trial"] < trials]
    successes: dict[int, list[bool]] = {}
    for entry in chosen:
        successes.setdefault(entry["task_index"], []).append(entry["reward"] > 1 - 1e-6)
    summary = {"kind": "taubench", "domain": source.domain, "split": source.split, "model": model,
               "tool_mode": tool_mode, "tasks": len(successes), "trials": trials,
               "pass^k": pass_hat(successes, trials),
               "average_reward": sum(r["reward"] for r in chosen) / len(chosen) if chosen else 0.0,
               "successes": {str(i): sum(s) for i, s in sorted(successes.items())},
               "failures": failure_causes(chosen)}
    if out:
        report.write_eval(summary, out)
    return summary


def user_policy(agent: ModelPolicy, user_model: str | None, device: str, **settings: Any) -> ModelPolicy:
    """The simulated user, sampling with ``settings``: ``user_model`` when one is named, else the agent's
    own weights with its adapter off (one model in memory)."""
    if user_model:
        return cli.load_policy(argparse.Namespace(model=user_model, adapter=None, device=device), **settings)
    return agent.base(settings=replace(agent.settings, **settings))


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.parser("python -m eval.taubench", __doc__)
    parser.add_argument("--domain", default="retail", help="retail or airline")
    parser.add_argument("--split", default="test", help="retail: test, train or dev; airline: test")
    parser.add_argument("--taubench-dir", default=os.environ.get(ENV_VAR),
                        help=f"a tau-bench checkout (default ${ENV_VAR})")
    parser.add_argument("--golden", type=Path, help="a golden file instead of a checkout (data and wiki beside it)")
    cli.add_model_flags(parser, "conversations", "runs/eval/taubench/<domain>-<split>-<model>")
    parser.add_argument("--user-model", help="the simulated user's model (default: the agent's base model)")
    parser.add_argument("--policy", choices=("model", "gold", "nothing"), default="model",
                        help="gold replays each task's gold actions and nothing ends at once, both with a "
                             "scripted user: they check the harness and data, no model needed")
    parser.add_argument("--trials", type=int, default=1, help="conversations per task (pass^k for k up to this)")
    parser.add_argument("--tasks", help="task indices, e.g. 0-9,12 (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="cap on the tokens of one message")
    parser.add_argument("--user-temperature", type=float, default=1.0, help="the simulated user's sampling temperature")
    args = parser.parse_args(argv)
    if args.domain not in DOMAINS:
        raise InputError(f"unknown domain {args.domain!r}; tau-bench has {', '.join(DOMAINS)}")
    cli.check_batch_size(args.batch_size)
    cli.check_sampling(max_new_tokens=args.max_new_tokens, user_temperature=args.user_temperature)
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
    name = cli.model_label(args) if args.policy == "model" else args.policy
    out = args.out or Path("runs/eval/taubench") / report.slug(f"{source.domain}-{source.split}-{name}")
    cli.claim_output(out, name, args.adapter, domain=source.domain, split=source.split, user_model=args.user_model,
                     user_temperature=args.user_temperature, max_new_tokens=args.max_new_tokens)
    if args.policy == "model":
        policy: Player | Policy = cli.load_policy(args, temperature=0.0, max_new_tokens=args.max_new_tokens)
        user: Player | Policy = user_policy(policy, args.user_model, args.device, temperature=args.user_temperature,
                                            max_new_tokens=args.max_new_tokens)
    else:
        policy = gold_policy(source.tasks) if args.policy == "gold" else do_nothing_policy
        user = scripted_user()
    summary = evaluate(source, policy, user, args.trials, ids, out, model=name, batch_size=args.batch_size,
                       mode=args.vectorization, seed=args.seed)
    print(f"tools in {summary['tool_mode']} mode: tau-bench's own handling of malformed and failing calls")
    print(report.markdown(summary))


if __name__ == "__main__":
    sys.exit(run(main))
