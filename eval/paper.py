"""The paper's benchmark table (Zhou et al., 2025): Pass@1 and Pass@4 on its four environments.

    python -m eval.paper [--adapter runs/<run>/adapter] [--limit 4]     (make eval-paper ADAPTER=… LIMIT=…)

The paper evaluates on other people's test tasks, never on its own CaTs, and so does this command:

- **Calculation**: M3ToolEval's four domains other than web browsing (upstream's checkout, as
  :mod:`eval.m3tooleval` plays it: upstream's prompt, protocol and answer check);
- **Web Browsing**: M3ToolEval's ``web_browsing`` domain;
- **Retail** and **Airline**: tau-bench's test tasks with a simulated user (:mod:`eval.taubench`),
  whose model can be named (default: the evaluated model without its adapter; the table says which).

Each task is played ``--samples`` times (default 4) at ``--temperature``; Pass@1 is the mean success
of the samples and Pass@4 the chance that one of 4 succeeds (:func:`eval.estimators.pass_at_k`), per
environment and averaged over the environments, as the paper reports them. The table prints the
paper's published averages beside for reference (Llama-3.1-8B-Instruct, a far larger model).

``--limit N`` takes N tasks an environment (M3ToolEval's spread over its domains, tau-bench's first
N), for a CPU. Episodes of one environment play side by side (``--batch-size``), and every episode is
appended to ``OUT/<environment>.jsonl`` (tau-bench: ``OUT/<environment>/episodes.jsonl``) as it ends:
a killed run resumes where it stopped. The table and its chart go to ``OUT`` (``summary.md``,
``chart.png``); with an adapter of a training run, ``OUT`` defaults to ``<run>/eval/paper``, and the
run's page (``RUN/report.md``) is written again with them.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from agents.policy import ModelPolicy, Player, Policy
from envs.records import RecordsError, append_jsonl, read_jsonl
from envs.sandbox import Sandbox
from eval import cli, m3tooleval, report, taubench
from eval.cli import InputError, run
from eval.estimators import pass_at_k

ENVIRONMENTS = tuple(report.PAPER_HEADINGS)
"""The paper's environments, in its column order (the table's headings are :data:`eval.report.PAPER_HEADINGS`)."""
WEB_DOMAIN = "web_browsing"
SAMPLES = 4
K = 4
PAPER_ROWS = (("Llama-3.1-8B-Instruct, zero-shot", 12.0), ("Llama-3.1-8B-Instruct, self-improvement (SCA)", 23.5),
              ("Llama-3.1-8B-Instruct, distillation (SCA)", 32.2))
"""The paper's published average Pass@1 over the four environments, in percent, for reference."""

Counts = dict[str, tuple[int, int]]
"""Each task's samples played and how many of them succeeded."""


@dataclass(frozen=True)
class Plan:
    """How every environment is played: the sampling and the sizes the table reports."""

    samples: int = SAMPLES
    limit: int | None = None
    batch_size: int = 8
    seed: int = 0
    temperature: float = 0.7
    action_mode: str = "json"
    max_steps: int = taubench.MAX_STEPS
    """A tau-bench conversation's agent steps (upstream's 30; fewer on a CPU, and the table says so)."""
    max_new_tokens: int = m3tooleval.MAX_NEW_TOKENS
    """A message's new tokens, agent's and user's (upstream M3ToolEval's 512); the table says it."""


# ---------------------------------------------------------------- M3ToolEval: calculation and web browsing


def m3tooleval_tasks(benchmark: m3tooleval.Benchmark, environment: str, limit: int | None) -> list[Any]:
    """The environment's M3ToolEval tasks: ``limit`` of them taken in turn from each upstream domain
    (the first task of each, then the second, …), so that a small subset still covers them all."""
    web = environment == "web"
    by_domain: dict[str, list[Any]] = {}
    for task in benchmark.tasks:
        domain = m3tooleval.domain_of(task.name)
        if (domain == WEB_DOMAIN) == web:
            by_domain.setdefault(domain, []).append(task)
    interleaved = [t for t in chain.from_iterable(zip_longest(*by_domain.values())) if t is not None]
    return interleaved if limit is None else interleaved[:limit]


def play_m3tooleval(benchmark: m3tooleval.Benchmark, tasks: Sequence[Any], policy: ModelPolicy | Policy,
                    path: Path, plan: Plan, sandbox: Sandbox | None = None) -> Counts:
    """Play each task until ``path`` holds its samples 0 to ``plan.samples - 1``, all in one queue of
    ``plan.batch_size`` side by side; each episode is appended as it ends, with its sample index.
    Samples are numbered as they are queued, not as they end: a right answer ends an episode sooner,
    so the first samples to end are the likelier successes, and reading fewer samples than a folder
    holds would favour them."""
    try:
        records = read_jsonl(path)
    except RecordsError as error:
        raise InputError(f"{error}; move the file away to start afresh") from None
    names = {t.name for t in tasks}
    held = {(r["task_name"], r.get("sample", 0)) for r in records if r["task_name"] in names}
    todo = [(t, sample) for t in tasks for sample in range(plan.samples) if (t.name, sample) not in held]
    if todo:
        torch.manual_seed(random.Random(f"{plan.seed}-{path.stem}-{len(records)}").randrange(2**31))
        with tqdm(total=len(todo), desc=f"paper: {path.stem}", unit="episode") as bar:
            def keep(place: int, record: dict[str, Any]) -> None:
                record["sample"] = todo[place][1]
                append_jsonl(path, [record], default=repr)
                records.append(record)
                bar.update(1)

            generate = m3tooleval.showing_turns(m3tooleval.batched(policy), bar)
            m3tooleval.run_tasks([t for t, _ in todo], benchmark, plan.action_mode, generate, plan.batch_size, keep,
                                 sandbox)
    counted = [r for r in records if r["task_name"] in names and r.get("sample", 0) < plan.samples]
    return {t.name: (sum(r["task_name"] == t.name for r in counted),
                     sum(r["task_name"] == t.name and bool(r["is_correct"]) for r in counted)) for t in tasks}


# ---------------------------------------------------------------- tau-bench: retail and airline


def play_taubench(source: taubench.Source, policy: Player | Policy, user: Player | Policy, out: Path,
                  plan: Plan, model: str = "") -> Counts:
    """``plan.samples`` conversations of each of the first ``plan.limit`` tasks (:func:`eval.taubench.evaluate`,
    resumable in ``out``)."""
    count = len(source.tasks) if plan.limit is None else min(plan.limit, len(source.tasks))
    summary = taubench.evaluate(source, policy, user, plan.samples, range(count), out, model=model,
                                max_steps=plan.max_steps, batch_size=plan.batch_size, seed=plan.seed)
    return {task: (plan.samples, successes) for task, successes in summary["successes"].items()}


# ---------------------------------------------------------------- the table


def score(counts_by_task: Counts, k: int = K) -> dict[str, Any]:
    """Pass@1 (mean success of the samples) and Pass@k of one environment, averaged over its tasks."""
    counts = list(counts_by_task.values())
    if not counts or any(n < k for n, _ in counts):
        raise ValueError(f"every task needs at least {k} samples for Pass@{k}; got {[n for n, _ in counts]}")
    return {"tasks": len(counts), "samples": counts[0][0],
            "pass@1": sum(c / n for n, c in counts) / len(counts),
            f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)}


def summarize(results: dict[str, Counts], plan: Plan, model: str, user_model: str,
              totals: dict[str, int]) -> dict[str, Any]:
    """The ``paper`` summary :mod:`eval.report` renders: each environment's scores (``totals``: how many
    test tasks it has, so a subset says so) and their average over the environments played."""
    environments = {name: {**score(results[name]), "of": totals[name]} for name in ENVIRONMENTS if name in results}
    average = {key: sum(row[key] for row in environments.values()) / len(environments)
               for key in ("pass@1", f"pass@{K}")}
    return {"kind": "paper", "model": model, "user_model": user_model, "temperature": plan.temperature,
            "action_mode": plan.action_mode, "samples": plan.samples, "k": K, "limit": plan.limit,
            "max_steps": plan.max_steps, "max_new_tokens": plan.max_new_tokens,
            "environments": environments, "average": average,
            "paper": [{"model": name, "average_pass@1": value} for name, value in PAPER_ROWS]}


# ---------------------------------------------------------------- the command


def evaluate(environments: Sequence[str], plan: Plan, out: Path, agent: ModelPolicy | Policy, user: Player | Policy,
             benchmark: m3tooleval.Benchmark | None, sources: dict[str, taubench.Source], model: str,
             user_model: str, sandbox: Sandbox | None = None) -> dict[str, Any]:
    """Play each environment in turn (a model agent stops a turn where upstream's M3ToolEval trim is
    final), then write the table and chart to ``out``; the summary."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Counts] = {}
    totals: dict[str, int] = {}
    for name in environments:
        if name in sources:
            source = sources[name]
            totals[name] = len(source.tasks)
            results[name] = play_taubench(source, agent, user, out / name, plan, model)
            continue
        assert benchmark is not None, "M3ToolEval environments need a benchmark"
        tasks = m3tooleval_tasks(benchmark, name, plan.limit)
        if not tasks:
            raise InputError(f"{benchmark.root} has no M3ToolEval tasks for {name}")
        totals[name] = len(m3tooleval_tasks(benchmark, name, None))
        player = replace(agent, stop=m3tooleval.trim_is_final) if isinstance(agent, ModelPolicy) else agent
        results[name] = play_m3tooleval(benchmark, tasks, player, out / f"{name}.jsonl", plan, sandbox)
    summary = summarize(results, plan, model, user_model, totals)
    report.write_eval(summary, out)
    return summary


def default_out(adapter: str | None, label: str) -> Path:
    """``<run>/eval/paper`` for an adapter inside a training run, so that the run's page shows the
    table; else ``runs/eval/paper/<label>``."""
    if adapter:
        for folder in Path(adapter).resolve().parents:
            if report.is_run(folder):
                return folder / "eval" / "paper"
    return Path("runs/eval/paper") / report.slug(label)


def _environments(spec: str) -> list[str]:
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in ENVIRONMENTS]
    if unknown or not names:
        raise InputError(f"--environments {spec!r}: choose among {', '.join(ENVIRONMENTS)}")
    return [name for name in ENVIRONMENTS if name in names]


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.parser("python -m eval.paper", __doc__)
    parser.add_argument("--environments", default=",".join(ENVIRONMENTS), help="which of them, comma-separated")
    parser.add_argument("--samples", type=int, default=SAMPLES, help=f"episodes per task (at least {K}, for Pass@{K})")
    parser.add_argument("--limit", type=int, help="at most this many tasks per environment (None: every task)")
    parser.add_argument("--temperature", type=float, default=0.7, help="the agent's sampling temperature")
    parser.add_argument("--action-mode", choices=sorted(m3tooleval.ACTION_MODES), default="json",
                        help="how the agent acts in M3ToolEval (json: the closest to the tool calls it trains on)")
    parser.add_argument("--m3tooleval-dir", default=os.environ.get(m3tooleval.ENV_VAR),
                        help=f"M3ToolEval's folder ({m3tooleval.SUBDIR} of code-act); default ${m3tooleval.ENV_VAR}, "
                             "else a clone at the pinned commit in the cache")
    parser.add_argument("--taubench-dir", default=os.environ.get(taubench.ENV_VAR),
                        help=f"a tau-bench checkout, for retail and airline (default ${taubench.ENV_VAR})")
    parser.add_argument("--user-model", help="the simulated user's model (default: the agent's model, no adapter)")
    parser.add_argument("--max-new-tokens", type=int, default=m3tooleval.MAX_NEW_TOKENS,
                        help="cap on the tokens of one message (agent and user)")
    parser.add_argument("--max-steps", type=int, default=taubench.MAX_STEPS,
                        help="a tau-bench conversation's agent steps (upstream: 30)")
    cli.add_model_flags(parser, "episodes", "<run>/eval/paper for an adapter inside a training run, else "
                        "runs/eval/paper/<model>", vectorized=False)
    args = parser.parse_args(argv)
    environments = _environments(args.environments)
    if args.samples < K:
        raise InputError(f"--samples must be at least {K} (Pass@{K}), got {args.samples}")
    if args.max_steps < 1:
        raise InputError(f"--max-steps must be at least 1, got {args.max_steps}")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    cli.check_batch_size(args.batch_size)
    cli.check_sampling(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    tau = [name for name in environments if name in taubench.DOMAINS]
    if tau and not args.taubench_dir:
        raise InputError(f"{' and '.join(tau)}: tau-bench's test tasks are needed; pass --taubench-dir (or set "
                         f"${taubench.ENV_VAR}) to a checkout of https://github.com/sierra-research/tau-bench, "
                         "or leave them out with --environments")
    sources = {name: taubench.from_checkout(Path(args.taubench_dir), name, "test") for name in tau}
    benchmark = (m3tooleval.load_benchmark(m3tooleval.find_checkout(args.m3tooleval_dir))
                 if len(tau) < len(environments) else None)
    plan = Plan(args.samples, args.limit, args.batch_size, args.seed, args.temperature, args.action_mode,
                args.max_steps, args.max_new_tokens)
    model = cli.model_label(args)
    out = args.out or default_out(args.adapter, model)
    cli.claim_output(out, model, args.adapter, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                     action_mode=args.action_mode, max_steps=args.max_steps, user_model=args.user_model)
    agent = cli.load_policy(args, temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    user = taubench.user_policy(agent, args.user_model, args.device, temperature=1.0,
                                max_new_tokens=args.max_new_tokens)
    summary = evaluate(environments, plan, out, agent, user, benchmark, sources, model,
                       args.user_model or f"{args.model} (no adapter)")
    print(report.markdown(summary))
    print(f"\nwrote {out / 'summary.md'}")


if __name__ == "__main__":
    sys.exit(run(main))
