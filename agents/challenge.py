"""The LLM challenger: the model explores a domain's tools, then writes a Code-as-Task.

Challenging is itself an episode (:class:`ChallengerEnv`): the model sees the domain's policy and
tools, calls tools on a fresh copy of a world for a few turns (real outputs come back), and then
writes a task in a tagged format. So the same batched rollout that plays tasks also proposes them.
Each proposal is parsed, run through the filter in the sandbox, and kept tasks are appended to a
pool; the funnel counts how far proposals get::

    proposals -> parsed -> verifier ran -> solution passes -> kept (every failure case rejected)

Command line (resumable: re-running tops the pool up to ``--n`` kept tasks of that domain)::

    python -m agents.challenge --domain retail --n 200 --model <id or path> --out pools/retail.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym

from envs.actions import Malformed, parse_action
from envs.cat import MIN_FAILURES, CatFormatError, CodeAsTask
from envs.filter import Verdict, filter_task, stamp
from envs.registry import DOMAINS, env_class
from envs.spaces import AnyText
from envs.state import fork

log = logging.getLogger(__name__)

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
mistakes such as a wrong value, a missing step or a wrong final answer."""

INSTRUCTION = "Explore the tools, then write your task."
WRITE_NOW = "\n\nNow write your task in the format, with no more tool calls."

_TAG = re.compile(r"<(instruction|verifier|solution|failure)>(.*?)</\1>", re.S)


class ProposalError(ValueError):
    """A proposal that does not fit the tagged format (it never reaches the filter)."""


def parse_proposal(text: str, domain: str, world: dict[str, Any], task_id: str,
                   provenance: dict[str, Any] | None = None) -> CodeAsTask:
    """The CaT in a proposal, or :class:`ProposalError` saying what is wrong with it."""
    parts: dict[str, list[str]] = {}
    for tag, body in _TAG.findall(text):
        parts.setdefault(tag, []).append(body.strip())
    for tag in ("instruction", "verifier", "solution"):
        if len(parts.get(tag, [])) != 1:
            raise ProposalError(f"expected one <{tag}> section, found {len(parts.get(tag, []))}")
    if len(parts.get("failure", [])) < MIN_FAILURES:
        raise ProposalError(f"expected at least {MIN_FAILURES} <failure> sections, found {len(parts.get('failure', []))}")

    def attempt(body: str, where: str) -> Any:
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise ProposalError(f"{where} is not valid JSON ({exc.msg})") from None

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


class ChallengerEnv(gym.Env[str, str]):
    """The challenger's episode in one domain's world.

    ## Description
    The model explores the domain's tools on its own copy of ``world`` for up to ``explore_turns``
    tool calls, then writes a task in the tagged format (see :data:`FORMAT`). The episode ends on
    the first message holding an ``<instruction>`` section, or after ``explore_turns + 1`` turns.
    The last message is the proposal (:attr:`proposal`); the exploration is kept as provenance.

    ## Rewards
    Always 0 here: the filter judges the proposal afterwards.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, domain: str, world: dict[str, Any], explore_turns: int = 3):
        self.env_cls = env_class(domain)
        self.domain, self.world, self.explore_turns = domain, world, explore_turns
        self.observation_space = AnyText()
        self.action_space = AnyText()
        self.proposal = ""
        self.exploration: list[dict[str, Any]] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = fork(self.env_cls.base_state(self.world))
        self.proposal, self.exploration, self._turn = "", [], 0
        info = {"task_id": f"challenge-{self.domain}", "domain": self.domain,
                "tools": self.env_cls.toolset.schemas, "policy": f"{self.env_cls.policy}\n\n{ROLE}"}
        return INSTRUCTION, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._turn += 1
        if "<instruction>" in action or self._turn > self.explore_turns:
            self.proposal = action
            return "Task received.", 0.0, True, False, {}
        parsed = parse_action(action)
        if isinstance(parsed, Malformed) or not hasattr(parsed, "name"):
            observation = parsed.message if isinstance(parsed, Malformed) else "Error: explore with JSON tool calls."
        else:
            observation = self.env_cls.toolset.call(self.state, parsed.name, parsed.arguments)
            self.exploration.append({"call": parsed.to_json(), "output": observation[:2000]})
        if self._turn == self.explore_turns:
            observation += WRITE_NOW
        return observation, 0.0, False, False, {}


STAGES = ("proposals", "parsed", "verifier_ran", "solution_passed", "kept")
_STOPS_BEFORE = {  # the filter's reason -> the first stage the proposal did not reach
    "parse_error": "verifier_ran", "too_few_failures": "parsed", "unknown_domain": "parsed",
    "infeasible_solution": "verifier_ran", "verifier_error": "verifier_ran", "verifier_timeout": "verifier_ran",
    "verifier_non_bool": "verifier_ran", "solution_failed": "solution_passed", "lenient_verifier": "kept",
}


@dataclass
class Funnel:
    """How many proposals reached each stage, and why the others stopped."""

    reached: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: Verdict | None, problem: str | None = None) -> None:
        """Count one proposal: ``verdict`` from the filter, or ``None`` with the parse ``problem``."""
        self.reached["proposals"] += 1
        if verdict is None:
            self.reasons["unparsed"] += 1
            return
        stop = "kept" if verdict.kept else _STOPS_BEFORE.get(verdict.reason or "", "verifier_ran")
        for stage in STAGES[1:STAGES.index(stop) + (1 if verdict.kept else 0)]:
            self.reached[stage] += 1
        if not verdict.kept:
            self.reasons[verdict.reason or "unknown"] += 1

    def table(self) -> str:
        total = self.reached["proposals"] or 1
        lines = [f"{stage:16s} {self.reached[stage]:6d}  {100 * self.reached[stage] / total:5.1f}%" for stage in STAGES]
        lines += [f"  stopped: {reason} {count}" for reason, count in self.reasons.most_common()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"reached": {s: self.reached[s] for s in STAGES}, "reasons": dict(self.reasons)}


def judge(env: ChallengerEnv, task_id: str, model_name: str, funnel: Funnel) -> CodeAsTask | None:
    """Parse and filter one finished challenger episode; the stamped task if it is kept."""
    provenance = {"challenger": f"llm:{model_name}", "exploration": env.exploration,
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        task = parse_proposal(env.proposal, env.domain, env.world, task_id, provenance)
    except ProposalError as exc:
        log.debug("proposal %s unparsed: %s", task_id, exc)
        funnel.add(None, str(exc))
        return None
    verdict = filter_task(task)
    funnel.add(verdict)
    return stamp(task, verdict) if verdict.kept else None


def default_world(domain: str, seed: int) -> dict[str, Any]:
    """The world the scripted challenger uses for the domain, at ``seed``."""
    world = dict(env_class(domain).default_tasks()[0].world)
    world["seed"] = seed
    return world


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from agents.models import DEFAULT_MODEL, ModelNotFoundError, load_model
    from agents.rollout import SamplingSettings, rollout
    from envs.pool import PoolError, append_pool, load_pool

    parser = argparse.ArgumentParser(prog="python -m agents.challenge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True, choices=sorted(DOMAINS), help="the domain to write tasks for")
    parser.add_argument("--n", type=int, default=200, help="kept tasks of this domain wanted in the pool")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="HF model id or local directory (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--out", type=Path, required=True, help="the pool (JSONL) to append kept tasks to")
    parser.add_argument("--max-proposals", type=int, default=400, help="stop after this many proposals in this run")
    parser.add_argument("--batch-size", type=int, default=8, help="challenger episodes generated together")
    parser.add_argument("--explore-turns", type=int, default=3, help="tool calls before the task is written")
    parser.add_argument("--max-new-tokens", type=int, default=384, help="token cap of one turn")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    parser.add_argument("--seed", type=int, default=0, help="seed of the worlds and the sampler")
    args = parser.parse_args(argv)
    if args.n < 1 or args.max_proposals < 1 or args.batch_size < 1:
        parser.error("--n, --max-proposals and --batch-size must be positive")
    try:
        have = len(load_pool(args.out, domain=args.domain)) if args.out.exists() else 0
    except PoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        model, tokenizer = load_model(args.model)
    except ModelNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = SamplingSettings(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    funnel = Funnel()
    proposals = 0
    with tqdm(total=args.n, initial=min(have, args.n), desc=f"{args.domain} tasks kept", unit="task") as bar:
        while have < args.n and proposals < args.max_proposals:
            size = min(args.batch_size, args.max_proposals - proposals)
            seed = args.seed + proposals
            envs = [ChallengerEnv(args.domain, default_world(args.domain, seed + i), args.explore_turns) for i in range(size)]
            rollout(model, tokenizer, envs, settings, seed=seed)
            for i, env in enumerate(envs):
                task_id = f"{args.domain}-llm-{args.seed}-{proposals + i}-{have}"
                task = judge(env, task_id, args.model, funnel)
                if task is not None and have < args.n:
                    append_pool(args.out, [task])
                    have += 1
                    bar.update(1)
            proposals += size
            bar.set_postfix(proposals=proposals)
    print(f"{args.domain}: {proposals} proposals this run; pool {args.out} holds {have} {args.domain} tasks")
    print(funnel.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
