"""The CaT filter: keep a task only if its verifier accepts its solution and rejects every failure.

Each replay runs in a fresh episode of the task's world, the verifier in the sandbox. A rejected
task gets exactly one reason from :data:`REASONS`, the first problem found, in this order: the
record does not parse, its domain is unknown, it has fewer than :data:`~envs.cat.MIN_FAILURES`
failure cases or distinct ones (doing nothing, tried on every task, counting as one), its world
cannot be built (``parse_error``), the solution is infeasible (playing it takes more actions than an
episode allows, a call is invalid, or its tool refuses it with an ``Error:`` text), the verifier
does not compile (``parse_error``), errs, hangs or returns a non-bool, the solution fails, the
verifier judges the solution's final state again and rejects it, the verifier accepts doing nothing
(:data:`NOTHING`) or a failure case, or judging the task runs past :data:`JUDGING_SECONDS`
(``verifier_timeout``). A failure case is played as an episode plays it: one longer than the episode
is cut off, unfinished; a copy of one played already is not played again.

The second judgement runs on the same final state, in a new job on another worker of the pool: a
verifier that reads the clock, draws random numbers or reads something of its worker (an object's
address) would give the trainer random rewards. A verifier random on the failure cases alone, each
judged once, can still pass.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from envs.base import DEFAULT_MAX_TURNS, ToolEnv
from envs.cat import MIN_FAILURES, Attempt, CatFormatError, CodeAsTask
from envs.cli import ShowDefaults
from envs.sandbox import RunResult, Sandbox, default_sandbox

REASONS = (
    "parse_error",          # the record does not fit the CaT format, its world cannot be built, or its verifier
                            # does not compile
    "unknown_domain",       # no environment for the task's domain
    "too_few_failures",     # fewer than MIN_FAILURES failure cases, or distinct ones with doing nothing
    "infeasible_solution",  # the solution calls an unknown tool, passes wrong arguments, a call errs, or it is too long
    "verifier_error",       # the verifier raised, or broke a resource limit
    "verifier_timeout",     # the verifier did not return in time, or judging the task ran past JUDGING_SECONDS
    "verifier_non_bool",    # the verifier returned something other than True/False
    "solution_failed",      # the verifier rejects the solution
    "verifier_flaky",       # the verifier rejects the solution's final state when it judges it again
    "lenient_verifier",     # the verifier accepts doing nothing or a failure case
)


@dataclass(frozen=True)
class Verdict:
    kept: bool
    reason: str | None = None
    detail: str = ""
    seconds: float = 0.0
    failures_rejected: int = 0


@dataclass
class FilterReport:
    """Counts of kept tasks and of each rejection reason."""

    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: Verdict) -> None:
        if verdict.kept:
            self.kept += 1
        else:
            self.rejected[verdict.reason or "unknown"] += 1

    @property
    def total(self) -> int:
        return self.kept + sum(self.rejected.values())

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "kept": self.kept, "rejected": {r: self.rejected[r] for r in REASONS if self.rejected[r]}}

    def __str__(self) -> str:
        lines = [f"kept {self.kept} of {self.total}"]
        lines += [f"  {reason}: {self.rejected[reason]}" for reason in REASONS if self.rejected[reason]]
        return "\n".join(lines)


def _verifier_problem(result: RunResult) -> tuple[str, str] | None:
    """The rejection reason for a verifier run that did not give a plain True/False."""
    if result.status == "timeout" or result.kind == "cpu":
        return "verifier_timeout", result.message
    if result.status == "error":
        if result.kind == "syntax":
            return "parse_error", result.message
        if result.kind == "non_bool":
            return "verifier_non_bool", result.message
        return "verifier_error", result.message
    return None


NOTHING = Attempt((), "")
"""An agent that does nothing and says nothing: every task's verifier must reject it."""

JUDGING_SECONDS = 60.0
"""Time to judge one task: a sound one takes well under a second, but a proposal may list a thousand failure
cases for a verifier that takes its whole time limit on each."""


def distinct_failures(task: CodeAsTask) -> int:
    """How many different failure cases ``task`` has besides doing nothing (:data:`NOTHING`): with doing
    nothing, which the filter tries on every task, what counts toward :data:`~envs.cat.MIN_FAILURES`
    (copies of one mistake test the verifier once, as do answers that differ only in spacing)."""
    return len({json.dumps([f.to_json()["actions"], f.answer.split()], sort_keys=True)
                for f in task.failures if f.actions or f.answer.strip()})


def turns_to_play(attempt: Attempt, env: ToolEnv) -> int:
    """The actions an agent takes to play ``attempt`` as the replay does: its calls up to the first that
    ends the episode, then ``finish`` with the answer if none did."""
    for turn, call in enumerate(attempt.actions, 1):
        if call.name == "finish" or call.name in env.terminal_tools:
            return turn
    return len(attempt.actions) + 1


def filter_task(task: CodeAsTask | dict[str, Any], sandbox: Sandbox | None = None,
                envs: dict[str, ToolEnv] | None = None, max_turns: int = DEFAULT_MAX_TURNS) -> Verdict:
    """Judge one task. ``envs`` caches an environment per domain across calls; ``max_turns`` is the
    episode length the task will be played in: a solution that needs more actions cannot be played."""
    from envs.registry import DOMAINS, env_class

    start = time.perf_counter()

    def verdict(reason: str | None, detail: str = "", rejected: int = 0) -> Verdict:
        return Verdict(reason is None, reason, detail, time.perf_counter() - start, rejected)

    if not isinstance(task, CodeAsTask):
        try:
            task = CodeAsTask.from_json(task)
        except CatFormatError as exc:
            return verdict("parse_error", str(exc))
    if task.domain not in DOMAINS:
        return verdict("unknown_domain", f"no environment for domain {task.domain!r}; known: {', '.join(DOMAINS)}")
    if len(task.failures) < MIN_FAILURES:
        return verdict("too_few_failures", f"{len(task.failures)} failure cases; at least {MIN_FAILURES} are needed")
    if (distinct := distinct_failures(task) + 1) < MIN_FAILURES:
        return verdict("too_few_failures", f"{distinct} distinct failure cases, doing nothing (which the filter tries "
                                           f"on every task) among them; at least {MIN_FAILURES} are needed")
    envs = {} if envs is None else envs
    env = envs.get(task.domain)
    if env is None:
        env = envs[task.domain] = env_class(task.domain)(tasks=[task], sandbox=sandbox)
    try:
        env.base_state(task.world)
    except ValueError as exc:
        return verdict("parse_error", str(exc)[:500])
    if (turns := turns_to_play(task.solution, env)) > max_turns:
        return verdict("infeasible_solution", f"playing the solution takes {turns} actions (its calls, then finish); "
                                              f"an episode allows {max_turns} (max_turns)")

    result, observations, problems = env.replay(task, task.solution)
    if not problems:  # every call valid; a tool's refusal (an unknown unit, a missing order) means the solution
        # did not do what its instruction asks, whatever its answer then claims (failure cases may fail this way)
        problems = [f"{call.name}: {output[:200]}" for call, output in zip(task.solution.actions, observations)
                    if output.startswith("Error:")]
    if problems:
        return verdict("infeasible_solution", "; ".join(problems))
    if problem := _verifier_problem(result):
        return verdict(*problem)
    if result.status != "ok":
        return verdict("solution_failed", "the verifier rejects the example solution")
    again = env.verify(elsewhere=True)
    if problem := _verifier_problem(again):
        return verdict(*problem)
    if again.status != "ok":
        return verdict("verifier_flaky", "the verifier accepted the example solution, then rejected the same "
                                         "final state when run again")
    # Not one of the task's own claims: a verifier that errs on it also scores it 0, as played.
    if env.replay(task, NOTHING)[0].status == "ok":
        return verdict("lenient_verifier", "the verifier accepts doing nothing (no call, an empty answer)")
    judged: set[str] = set()
    for i, failure in enumerate(task.failures):
        if (copy := json.dumps(failure.to_json(), sort_keys=True)) in judged:
            continue  # a mistake judged already: the same replay, the same verdict
        if time.perf_counter() - start > JUDGING_SECONDS:
            return verdict("verifier_timeout", f"judging the task ran past {JUDGING_SECONDS:g} s, with failures[{i}:] "
                                               "still to play", i)
        judged.add(copy)
        result, _, _ = env.replay(task, failure, max_turns)
        if problem := _verifier_problem(result):
            return verdict(problem[0], f"failures[{i}]: {problem[1]}", i)
        if result.status == "ok":
            return verdict("lenient_verifier", f"the verifier accepts failures[{i}]"
                                               + (f" (played as an episode cuts it, after {max_turns} calls)"
                                                  if len(failure.actions) >= max_turns else ""), i)
    return verdict(None, rejected=len(task.failures))


def stamp(task: CodeAsTask, verdict: Verdict) -> CodeAsTask:
    """The task with its filter record, as stored in pools."""
    return replace(task, filter={"solution": "pass", "failures_rejected": verdict.failures_rejected,
                                 "seconds": round(verdict.seconds, 4)})


def filter_tasks(tasks: list[CodeAsTask | dict[str, Any]], sandbox: Sandbox | None = None,
                 max_turns: int = DEFAULT_MAX_TURNS) -> tuple[list[CodeAsTask], FilterReport, list[Verdict]]:
    """Filter a batch: the kept tasks (stamped), the report, and each task's verdict.

    Tasks are judged on as many threads as the sandbox has workers, since a replay mostly waits
    for the sandbox; each thread keeps its own environments.
    """
    box = sandbox or default_sandbox()
    local = threading.local()

    def judge(task: CodeAsTask | dict[str, Any]) -> Verdict:
        if not hasattr(local, "envs"):
            local.envs = {}
        return filter_task(task, box, local.envs, max_turns)

    with ThreadPoolExecutor(max_workers=box.size) as pool:
        verdicts = list(pool.map(judge, tasks))
    report = FilterReport()
    kept = []
    for task, v in zip(tasks, verdicts):
        report.add(v)
        if v.kept:
            kept.append(stamp(task if isinstance(task, CodeAsTask) else CodeAsTask.from_json(task), v))
    return kept, report, verdicts


def main(argv: list[str] | None = None) -> int:
    """``python -m envs.filter POOL [--out KEPT] [--dedupe]``: filter a pool file and print the
    report. A pool that does not load (a line that is not UTF-8 or not a CaT, a repeated task id, a
    verifier that does not compile) is an error naming its file and line, and exit status 2."""
    import argparse
    import sys

    from envs.pool import PoolError, append_pool, load_pool
    from envs.records import writable

    parser = argparse.ArgumentParser(prog="python -m envs.filter", description=main.__doc__,
                                     formatter_class=ShowDefaults)
    parser.add_argument("pool", help="a JSONL file of CaTs")
    parser.add_argument("--out", help="append the kept tasks (stamped with their filter record) here, but for "
                                      "ids it already holds")
    parser.add_argument("--max-turns", type=int, default=DEFAULT_MAX_TURNS,
                        help="the episode length the tasks will be played in: a longer solution is infeasible")
    parser.add_argument("--dedupe", action="store_true",
                        help="keep the first task of each id instead of stopping at a repeated one")
    args = parser.parse_args(argv)
    if args.max_turns < 1:
        parser.error(f"--max-turns must be at least 1, got {args.max_turns}")
    try:
        if args.out and Path(args.out).is_dir():
            raise IsADirectoryError(f"--out {args.out} is a folder: name a JSONL file")
        if args.out and not writable(Path(args.out)):
            raise PermissionError(f"--out {args.out} cannot be written here (a read-only disk, or another's file)")
        tasks = load_pool(args.pool, dedupe=args.dedupe)
        held = {t.id for t in load_pool(args.out)} if args.out and Path(args.out).exists() else set()
    except (PoolError, OSError) as exc:  # a missing pool, a folder where a file belongs
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kept, report, verdicts = filter_tasks(list(tasks), max_turns=args.max_turns)
    for task, v in zip(tasks, verdicts):
        if not v.kept:
            print(f"rejected {task.id!r}: {v.reason}: {v.detail!r}")  # escaped: text from the model and its code
    print(report)
    if args.out:
        new = [t for t in kept if t.id not in held]
        try:
            append_pool(args.out, new)
        except OSError as exc:  # a full disk: the append is taken back whole
            print(f"error: the kept tasks were not appended to {args.out}: {exc}", file=sys.stderr)
            return 2
        if len(new) < len(kept):
            print(f"{len(kept) - len(new)} kept tasks were already in {args.out}: not appended again")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
