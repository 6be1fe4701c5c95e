"""The run's tasks, apart from how the LLM challenger writes them (:mod:`train.challenger`): the
scripted challengers' tasks that top a pool up, a given pool's tasks, which tasks a run keeps
(:class:`Selection`), how a domain's tasks were made (:class:`DomainMix`), and the split into
training and held-out tasks.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from envs.cat import CodeAsTask
from envs.pool import load_pool
from envs.prompt_tools import ListedTools
from envs.registry import env_class

if TYPE_CHECKING:
    from train.config import TrainConfig

class EmptyPoolError(ValueError):
    """A domain without tasks; the message says which and how to make some (exit code 2)."""


@dataclass
class DomainMix:
    """How a domain's tasks were made."""

    llm: int = 0
    """Tasks the LLM challenger wrote and the filter kept."""
    scripted: int = 0
    proposals: int = 0
    new: int = 0
    """Of the LLM's tasks, those that copy no demonstration."""
    funnel: dict[str, Any] = field(default_factory=dict)
    example: str = ""
    """The start of the model's first proposal, to see what it writes."""


def make_env(domain: str, task: CodeAsTask, max_turns: int, prompt_tools: dict[str, list[str]]) -> gym.Env:
    """An env of ``domain`` holding ``task`` alone, listing the domain's prompt tools."""
    env = env_class(domain)(tasks=[task], max_turns=max_turns)
    return ListedTools(env, prompt_tools[domain]) if prompt_tools.get(domain) else env


def is_llm(task: CodeAsTask) -> bool:
    """Whether a model wrote the task (its provenance says ``llm:<model>``)."""
    return str(task.provenance.get("challenger", "")).startswith("llm:")


@dataclass(frozen=True)
class Selection:
    """Which tasks a run keeps, per domain: a budget of tool calls, the tools its prompt lists and the
    scripted families it trains on."""

    max_actions: dict[str, int] = field(default_factory=dict)
    prompt_tools: dict[str, list[str]] = field(default_factory=dict)
    families: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, config: TrainConfig) -> Selection:
        return cls(config.max_solution_actions, config.prompt_tools, config.task_families)

    def fits(self, task: CodeAsTask) -> bool:
        """Whether the task's example solution stays within its domain's budget (absent or 0: none),
        calls only tools its domain's prompt lists (a domain not listed lists all), and, where the
        domain names families, comes from one of them (a task that names no family, as the LLM's, fits)."""
        budget, listed = self.max_actions.get(task.domain, 0), self.prompt_tools.get(task.domain)
        family, wanted = task.provenance.get("family"), self.families.get(task.domain)
        return ((budget == 0 or len(task.solution.actions) <= budget)
                and (not listed or all(a.name in listed for a in task.solution.actions))
                and (not wanted or family is None or family in wanted))


def is_multi_call(task: CodeAsTask) -> bool:
    """Whether the task's example solution makes two or more tool calls (a multi-turn task)."""
    return len(task.solution.actions) >= 2


def scripted_tasks(domain: str, seed: int, n: int, selection: Selection) -> list[CodeAsTask]:
    """``n`` tasks from the domain's scripted challenger that fit the selection."""
    if n == 0:
        return []
    try:
        make_tasks = importlib.import_module(f"envs.{domain}.challenger").make_tasks
    except ModuleNotFoundError:
        raise EmptyPoolError(f"domain {domain!r} has no scripted challenger to write tasks with: pass a pool "
                             f"holding its tasks (--pool PATH)") from None
    asked = n
    while True:  # the budget keeps a share of the families; ask for more until enough fit
        tasks = [t for t in make_tasks(seed, asked) if selection.fits(t)]
        if len(tasks) >= n or asked >= 64 * n:
            return tasks[:n]
        asked *= 2


def pool_tasks(path: str, domains: Sequence[str], selection: Selection) -> list[CodeAsTask]:
    """The tasks of a given pool that the run uses; a domain without any raises :class:`EmptyPoolError`
    saying how to fill it (checked before the model loads)."""
    if not Path(path).is_file():
        raise EmptyPoolError(f"there is no pool file {path}: make one with `python -m agents.challenge --domain "
                             f"{domains[0]} --n 64 --out {path}`, or leave `pool` empty and the run writes its own")
    tasks = [t for t in load_pool(path) if t.domain in domains]
    for domain in domains:
        have = [t for t in tasks if t.domain == domain]
        if not any(selection.fits(t) for t in have):
            because = f" ({len(have)} there, none within max_solution_actions/prompt_tools)" if have else ""
            raise EmptyPoolError(f"pool {path} has no {domain} tasks{because}: add some with `python -m agents.challenge "
                                 f"--domain {domain} --n 64 --out {path}`, or drop {domain} from domains")
    return [t for t in tasks if selection.fits(t)]


def split(tasks: Sequence[CodeAsTask], domains: Sequence[str], heldout: dict[str, int],
          seed: int) -> dict[str, dict[str, list[str]]]:
    """Per domain, task ids for training and held out (shuffled by ``seed``; at least one trains). The
    held-out tasks are scripted ones when the domain has enough: the LLM's tasks are for training,
    and held-out success is measured on tasks no challenger wrote. A domain without tasks raises
    :class:`EmptyPoolError` saying how to make some."""
    result = {}
    for domain in domains:
        ids = sorted({t.id for t in tasks if t.domain == domain})
        if not ids:
            raise EmptyPoolError(f"the pool has no {domain} tasks: make some with `python -m agents.challenge "
                                 f"--domain {domain} --n 64 --out POOL` (or leave `pool` empty and the run writes them)")
        written = {t.id for t in tasks if t.domain == domain and is_llm(t)}
        random.Random(f"{seed}-{domain}").shuffle(ids)
        n_heldout = min(heldout.get(domain, 0), max(len(ids) - 1, 0))
        candidates = [i for i in ids if i not in written] + [i for i in ids if i in written]
        held = set(candidates[:n_heldout])
        result[domain] = {"train": [i for i in ids if i not in held], "heldout": [i for i in ids if i in held]}
    return result
