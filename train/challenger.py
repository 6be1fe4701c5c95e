"""The challenger learns to write tasks, and writes the run's pool.

The embedded model writes no task in the challenger's format zero-shot. So, for each challenger
domain:

1. **Demonstrations**: the scripted challenger's tasks (on worlds that neither proposals nor
   held-out tasks use), replayed as the LLM challenger's own episodes (:func:`train.demos.challenger_actions`):
   the solution's calls as the exploration, with their real outputs, then the task in the tagged format.
2. **Warm start**: the challenger's own LoRA adapter (:data:`ADAPTER`, beside the executor's on the
   same base model) is fine-tuned on them.
3. **RL** (beyond the paper, whose challenger is never trained): GRPO (or fine-tuning on its own
   successes) on the challenger's episodes, several on each fresh world, with reward 1 for a kept
   task that copies no demonstration (:class:`envs.challenger.Novelty`), plus the optional shaping of
   ``challenger_shaping``.
4. **Proposals**: the challenger proposes ``challenger_proposals`` tasks per domain on fresh worlds
   (the same seeds before and after RL, so the funnels compare); the filter's kept tasks go to the
   pool, scripted tasks top up the rest, and held-out tasks are scripted ones only.

Each funnel (proposals -> parsed -> verifier ran -> solution passed -> kept -> new) is logged to
metrics.jsonl (phase ``challenger``) and kept in tasks.json with the pool's mix.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import asdict, replace
from typing import Any

from gymnasium.vector import VectorEnv

from agents.challenge import Funnel
from agents.decoding import SamplingSettings
from agents.policy import ModelPolicy, Trajectory
from agents.rollout import make_vector_env, play
from envs.cat import MIN_FAILURES, CodeAsTask
from envs.challenger import PROPOSAL_WORLDS, ChallengerEnv, default_world
from envs.prompt_tools import listed_tools
from envs.registry import CHALLENGER_ID
from envs.scripted import as_challenger_writes
from train import losses
from train.demos import challenger_actions, demonstration
from train.rundir import RunState
from train.tasks import DomainMix, Selection, scripted_tasks
from train.trainer import Context, FineTuning, StepBatch, fine_tune, make_optimizer, rl_step, shard, step_seed

log = logging.getLogger(__name__)

ADAPTER = "challenger"
"""The challenger's adapter; the executor's is peft's ``"default"``."""
DEMO_WORLDS = 1_000
"""Demonstrations use the scripted challenger's worlds ``seed + 1`` up to ``seed + DEMO_WORLDS``;
the pool's scripted tasks (held-out ones among them) use world ``seed``, proposals
:data:`envs.challenger.PROPOSAL_WORLDS` and above."""
RL_WORLDS = 10_000
"""Challenger RL draws its worlds from reset seeds from here on; proposals for the pool use seeds
below it, so RL never trains on the worlds it is measured on."""


def demo_tasks(ctx: Context, domain: str) -> list[CodeAsTask]:
    """``challenger_demos`` scripted tasks of ``domain`` that a challenger could have written: at most
    ``challenger_explore_turns`` calls (its exploration), within the run's selection, verified by
    what the exploration shows (:func:`envs.scripted.as_challenger_writes`), with as many failure
    cases as a task needs, each its wrong answer alone: every token of a demonstration is one the
    challenger learns to write, and a 135M model that must write out an agent's whole wrong path runs
    out of tokens before the task ends. (A failure that no longer fails without its calls drops its
    demonstration in :func:`demonstrations`.)"""
    config, chosen, selection = ctx.config, [], Selection.of(ctx.config)
    make_tasks = importlib.import_module(f"envs.{domain}.challenger").make_tasks
    for world in range(config.seed + 1, config.seed + DEMO_WORLDS):
        written = (as_challenger_writes(t) for t in make_tasks(world, 4 * config.challenger_demos))
        fitting = [replace(t, failures=tuple(replace(f, actions=()) for f in t.failures[:MIN_FAILURES])) for t in written
                   if t is not None and len(t.solution.actions) <= config.challenger_explore_turns
                   and selection.fits(t)]
        chosen += fitting[:config.challenger_demos - len(chosen)]
        if len(chosen) == config.challenger_demos:
            break
    return chosen


def challenger_env(ctx: Context, domain: str) -> ChallengerEnv:
    """One challenger env of ``domain`` (for demonstrations), listing the domain's prompt tools."""
    env = ChallengerEnv(domain, ctx.config.challenger_explore_turns, f"llm:{ctx.config.model}")
    for wrap in listed_tools(ctx.config.prompt_tools.get(domain)):
        env = wrap(env)
    return env


def demonstrations(ctx: Context, domain: str) -> tuple[list[CodeAsTask], list[Trajectory]]:
    """The domain's demonstration tasks, and those of them the filter keeps as challenger episodes."""
    tasks, demos = demo_tasks(ctx, domain), []
    env = challenger_env(ctx, domain)
    for task in tasks:
        demo = demonstration(env, ctx.chat, challenger_actions(task), {"world": task.world})
        if demo.reward > 0:
            demos.append(demo)
    env.close()
    log.info("%s: %d of %d challenger demonstrations kept by the filter", domain, len(demos), len(tasks))
    return tasks, demos


def vector_env(ctx: Context, domain: str) -> VectorEnv:
    """The domain's challenger vector env: it judges proposals against the demonstrations (novelty)."""
    key = f"{ADAPTER}:{domain}"
    if key not in ctx.envs:
        config = ctx.config
        width = min(config.rollout_batch, max(config.challenger_proposals,
                                              config.challenger_worlds_per_step * config.challenger_group_size))
        ctx.envs[key] = make_vector_env(CHALLENGER_ID, width, config.vectorization,
                                        listed_tools(config.prompt_tools.get(domain)), domain=domain,
                                        explore_turns=config.challenger_explore_turns,
                                        challenger=f"llm:{config.model}", shaping=config.challenger_shaping,
                                        known=[t.to_json() for t in demo_tasks(ctx, domain)])
    return ctx.envs[key]


def player(ctx: Context) -> ModelPolicy:
    """The policy with the challenger's adapter, sampling as the challenger does."""
    config = ctx.config
    return ModelPolicy(ctx.policy, ctx.chat.tokenizer, SamplingSettings(
        temperature=config.challenger_temperature, max_new_tokens=config.challenger_max_new_tokens,
        max_context_tokens=config.max_context_tokens or None), adapter=ADAPTER)


def warm_start(ctx: Context, state: RunState, optimizer_state: dict[str, Any] | None) -> None:
    """Fine-tune the challenger's adapter on every challenger domain's demonstrations."""
    config = ctx.config
    demos = [d for domain in config.challenger_domain_list() for d in demonstrations(ctx, domain)[1]]
    ctx.policy.set_adapter(ADAPTER)
    try:
        fine_tune(ctx, state, optimizer_state, demos, FineTuning("challenger_warm_start", config.challenger_warm_start_epochs,
                                                                 config.challenger_lr, config.challenger_batch))
    finally:
        ctx.policy.set_adapter("default")


def propose(ctx: Context, domain: str, label: str, step: int) -> tuple[Funnel, list[CodeAsTask], str]:
    """``challenger_proposals`` proposals of ``domain`` on the pool's fresh worlds (the same seeds
    whenever called): their funnel (logged at the run's ``step``), the kept tasks, and the first proposal's start. Every
    task that parsed, kept or not, is appended to the run's ``parsed.jsonl`` (what a run without
    the filter would train on)."""
    started = time.perf_counter()
    episodes = play(vector_env(ctx, domain), player(ctx), ctx.config.challenger_proposals, seed=ctx.config.seed)
    funnel = Funnel()
    for episode in episodes:
        funnel.add(episode.final_info, last_message(episode), episode.end_reason)
    kept = [CodeAsTask.from_json(e.final_info["task"]) for e in episodes if "task" in e.final_info]
    ctx.run.append(ctx.run.parsed, [{**e.final_info["parsed"], "provenance": {
        **e.final_info["parsed"]["provenance"], "stage": e.final_info["stage"], "label": label}}
        for e in episodes if "parsed" in e.final_info])
    ctx.run.log_metrics({"step": step, "phase": "challenger", "stage": label, "domain": domain,
                         "funnel": funnel.to_json()["reached"], "reasons": dict(funnel.reasons),
                         "seconds": time.perf_counter() - started})
    if ctx.config.save_trajectories:
        ctx.run.append(ctx.run.trajectories, [{"phase": f"challenger:{label}", "domain": domain,
                                               "reward": e.reward, "stage": e.final_info.get("stage", "proposals"),
                                               "messages": e.messages} for e in episodes])
    log.info("challenger (%s) %s:\n%s", label, domain, funnel.table())
    return funnel, kept, last_message(episodes[0])[:400] if episodes else ""


def last_message(trajectory: Trajectory) -> str:
    return next((m["content"] for m in reversed(trajectory.messages) if m["role"] == "assistant"), "")


def evaluate(ctx: Context, label: str, step: int) -> None:
    """The funnel of every challenger domain's proposals (logged at ``step``; the kept tasks are not used)."""
    for domain in ctx.config.challenger_domain_list():
        propose(ctx, domain, label, step)


def collect(ctx: Context, domain: str, step: int) -> StepBatch:
    """``challenger_group_size`` episodes on each of ``challenger_worlds_per_step`` fresh worlds, this
    process playing its contiguous share."""
    config = ctx.config
    started = time.perf_counter()
    first = RL_WORLDS + (step - 1) * config.challenger_worlds_per_step
    worlds = [default_world(domain, PROPOSAL_WORLDS + first + k) for k in range(config.challenger_worlds_per_step)]
    groups = [g for g in range(len(worlds)) for _ in range(config.challenger_group_size)]
    mine = shard(len(groups), ctx.rank, ctx.num_processes)
    played = play(vector_env(ctx, domain), player(ctx), [{"world": worlds[groups[i]]} for i in mine],
                  seed=step_seed(config, "challenger-rl", step, ctx.rank))
    return StepBatch(played, groups, mine, time.perf_counter() - started)


def reinforce(ctx: Context, state: RunState, optimizer_state: dict[str, Any] | None) -> None:
    """``challenger_rl_steps`` steps of ``challenger_algorithm`` on the challenger's own episodes, the
    domains in turn."""
    config, domains = ctx.config, ctx.config.challenger_domain_list()
    ctx.policy.set_adapter(ADAPTER)
    try:
        optimizer = make_optimizer(ctx.policy, config.challenger_rl_lr, optimizer_state)
        while state.phase_step < config.challenger_rl_steps:
            domain = domains[state.phase_step % len(domains)]
            batch = collect(ctx, domain, state.phase_step + 1)
            result = rl_step(ctx, optimizer, batch, state.step + 1, losses.ALGORITHMS[config.challenger_algorithm],
                             "challenger_rl", config.challenger_temperature)
            state.step += 1
            state.phase_step += 1
            stages = [t.final_info.get("stage", "proposals") for t in batch.trajectories]
            ctx.run.log_metrics({**result["metrics"], "domain": domain,
                                 "new_rate": stages.count("new") / len(stages),
                                 "kept_rate": (stages.count("new") + stages.count("kept")) / len(stages)})
            if config.save_trajectories:
                ctx.run.append(ctx.run.trajectories, [{**record, "stage": stage}
                                                      for record, stage in zip(result["records"], stages)])
            log.info("challenger RL step %d (%s): reward %.2f, new %d of %d", state.phase_step, domain,
                     result["metrics"]["reward_mean"], stages.count("new"), len(stages))
            if state.phase_step < config.challenger_rl_steps and state.phase_step % config.checkpoint_every == 0:
                ctx.run.save_checkpoint(ctx.policy, optimizer, state)
    finally:
        ctx.policy.set_adapter("default")


def write_tasks(ctx: Context, step: int) -> tuple[list[CodeAsTask], dict[str, dict[str, Any]]]:
    """Each domain's tasks: the challenger's kept ones (challenger domains; their funnel logged at
    ``step``), then scripted ones for the rest, the held-out share among them; and how each domain's
    tasks were made."""
    config, tasks, mix, selection = ctx.config, [], {}, Selection.of(ctx.config)
    for domain in config.domains:
        wanted, heldout = config.tasks_for(domain), config.heldout_for(domain)
        funnel, kept, example = (propose(ctx, domain, "pool", step) if domain in config.challenger_domain_list()
                                 else (Funnel(), [], ""))
        fitting = [t for t in kept if selection.fits(t)]
        if len(fitting) < len(kept):
            log.info("%s: %d of the %d kept tasks use tools or calls beyond the config's prompt_tools and "
                     "max_solution_actions, and are left out", domain, len(kept) - len(fitting), len(kept))
        kept = fitting[:max(wanted - heldout, 0)]
        topped = scripted_tasks(domain, config.seed, wanted - len(kept), selection)
        written = funnel.reached["proposals"] > 0
        mix[domain] = asdict(DomainMix(llm=len(kept), scripted=len(topped), proposals=funnel.reached["proposals"],
                                       new=sum(t.provenance.get("novelty") == "new" for t in kept),
                                       funnel=funnel.to_json() if written else {}, example=example))
        log.info("%s: %d of %d proposals kept and used; %d scripted tasks make up the rest", domain, len(kept),
                 funnel.reached["proposals"], len(topped))
        tasks += kept + topped
    return tasks, mix
