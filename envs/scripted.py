"""What the scripted challengers of the conversation domains share: tasks judged by their outcome.

A retail or airline task, like a tau-bench task, is judged by where the database ends up and by what
the agent told the user: the verifier checks that the final state hash equals the hash after the
example solution, and that every required output appears in the answer (tau-bench's rule: lowercase,
commas stripped, substring). A challenger drafts a task with an instruction, a solution and candidate
failure cases; :func:`finish_drafts` replays them, writes the verifier, and keeps only failure cases
that the verifier really rejects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from envs.cat import MIN_FAILURES, Attempt, CodeAsTask, ToolCall
from envs.state import State, fork, state_hash
from envs.tools import Toolset


@dataclass(frozen=True)
class Draft:
    family: str
    instruction: str
    solution: Attempt
    failures: tuple[Attempt, ...]
    required: tuple[str, ...] = field(default=())


def outcome_verifier(final_hash: str, required: tuple[str, ...] | list[str]) -> str:
    """Verifier source: the state must hash to ``final_hash`` and the answer hold each output."""
    return (
        "def verify(state, answer):\n"
        "    said = answer.lower().replace(',', '')\n"
        f"    required = {json.dumps([o.lower() for o in required])}\n"
        f"    return state_hash() == {final_hash!r} and all(o in said for o in required)\n"
    )


def answer_verifier(required: tuple[str, ...] | list[str]) -> str:
    """Verifier source: the answer holds each output (tau-bench's rule); the state is not checked."""
    return (
        "def verify(state, answer):\n"
        "    said = answer.lower().replace(',', '')\n"
        f"    return all(o in said for o in {json.dumps([o.lower() for o in required])})\n"
    )


def as_challenger_writes(task: CodeAsTask) -> CodeAsTask | None:
    """``task`` as an LLM challenger could write it, from what its exploration shows, or ``None``.

    An outcome verifier compares the final state's hash, which no tool shows, so a challenger cannot
    write one; a read-only task it can, judged by the answer alone (keeping the failure cases whose
    answers miss an output, when at least :data:`MIN_FAILURES` do). Tasks of other verifiers (no
    ``required`` in their provenance) are as they are."""
    if "required" not in task.provenance:
        return task
    if not task.provenance.get("read_only"):
        return None
    required = task.provenance["required"]
    failures = tuple(f for f in task.failures
                     if not all(o.lower() in f.answer.lower().replace(",", "") for o in required))
    if len(failures) < MIN_FAILURES:
        return None
    return replace(task, verifier=answer_verifier(required), failures=failures)


def play(base: State, toolset: Toolset, attempt: Attempt) -> str:
    """The state hash after ``attempt``'s tool calls on a fresh fork of ``base``."""
    state = fork(base)
    for call in attempt.actions:
        toolset.call(state, call.name, call.arguments)
    return state_hash(state)


def _rejected(final_hash: str, required: tuple[str, ...], reached: str, answer: str) -> bool:
    said = answer.lower().replace(",", "")
    return reached != final_hash or not all(o.lower() in said for o in required)


def finish_drafts(drafts: Iterator[Draft | None], *, domain: str, world: dict[str, Any], base: State,
                  toolset: Toolset, seed: int, n: int, max_tries: int) -> list[CodeAsTask]:
    """Turn drafts into CaTs until ``n`` distinct ones are made (or ``max_tries`` drafts are spent)."""
    tasks: list[CodeAsTask] = []
    seen: set[str] = set()
    for _, draft in zip(range(max_tries), drafts):
        if draft is None or draft.instruction in seen:
            continue
        final = play(base, toolset, draft.solution)
        failures = tuple(f for f in draft.failures
                         if _rejected(final, draft.required, play(base, toolset, f), f.answer))
        if len(failures) < MIN_FAILURES:
            continue
        seen.add(draft.instruction)
        tasks.append(CodeAsTask(
            id=f"{domain}-{seed}-{len(tasks)}", domain=domain, world=world,
            instruction=draft.instruction, verifier=outcome_verifier(final, draft.required),
            solution=draft.solution, failures=failures,
            provenance={"challenger": "scripted", "family": draft.family,
                        "difficulty": len(draft.solution.actions), "required": list(draft.required),
                        "read_only": final == state_hash(base)},
        ))
        if len(tasks) == n:
            break
    return tasks


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(name, arguments)
