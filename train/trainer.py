"""The executor's training, stage by stage: base score, warm start, score, RL, score.

1. **Base score**: held-out success of the base model (greedy, one episode per task), with the
   same function ``python -m eval.heldout`` uses.
2. **Warm start**: fine-tuning on the training tasks' example solutions, played through the env
   and rendered as the policy's own episodes (:mod:`train.demos`); then the held-out score again.
3. **RL**: each step samples tasks from the training split, plays ``group_size`` episodes of each,
   turns rewards into advantages and updates the LoRA adapter (:mod:`train.losses`); then the
   held-out score a third time.

:mod:`train.run` runs these after the challenger's stages (:mod:`train.challenger`), which write
the tasks. Episodes play in each domain's Gymnasium vector env (:func:`agents.rollout.play`).

Processes: under ``accelerate launch --num_processes N`` every process holds the model and plays
its contiguous share of each step's episodes; rewards are gathered so that advantages (and the
loss's token count) are those of the whole batch, and the adapter's gradients are summed across
processes with one all-reduce per update. So N processes take the same update as one would on the
same episodes, on a batch split N ways; sampling seeds include the process's rank, so at a temperature
above 0 they play other episodes than one process does. Only the main process writes the run folder.

Resuming: a checkpoint holds the stage, the step, the data cursor, the adapter, the optimizer and
the RNG states (:mod:`train.rundir`); rollout seeds derive from the seed and the step, so a
resumed run plays the same episodes an uninterrupted one would have.
"""

from __future__ import annotations

import logging
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from gymnasium.vector import VectorEnv
from peft import PeftModel
from tqdm import tqdm

from agents.policy import ModelPolicy, Trajectory
from agents.rollout import make_vector_env, play_tasks
from envs.cat import CodeAsTask
from envs.prompt_tools import listed_tools
from envs.records import read_jsonl
from envs.registry import env_id
from eval import heldout
from train import losses
from train.config import TrainConfig
from train.demos import demonstration, solution_actions, transcript_actions
from train.rundir import RunDir, RunState
from train.scoring import score, shared_prefix_length
from train.tasks import EmptyPoolError, is_multi_call, make_env

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- the pieces a step uses


@dataclass
class Context:
    """What every stage of a run uses."""

    config: TrainConfig
    accelerator: Accelerator
    run: RunDir
    policy: PeftModel
    player: ModelPolicy
    """The policy as a player (:mod:`agents.policy`), sampling as the config says."""
    tasks: dict[str, CodeAsTask]
    split: dict[str, dict[str, list[str]]]
    envs: dict[str, VectorEnv] = field(default_factory=dict)
    """Each domain's vector env (its pool: the run's tasks of that domain), made on first use."""

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def chat(self) -> Any:
        return self.player.chat

    def playing(self, temperature: float) -> ModelPolicy:
        return self.player.with_settings(temperature=temperature)

    def vector_envs(self, domains: Sequence[str]) -> dict[str, VectorEnv]:
        """The vector envs of ``domains``: ``rollout_batch`` sub-envs at most, as many as a step or an
        evaluation plays at once, each holding the domain's tasks of the run."""
        config = self.config
        for domain in domains:
            if domain not in self.envs:
                pool = [t for t in self.tasks.values() if t.domain == domain]
                width = max(config.tasks_per_step * config.group_size, len(self.split[domain]["heldout"]), 1)
                self.envs[domain] = make_vector_env(env_id(domain), min(config.rollout_batch, width),
                                                    config.vectorization, listed_tools(config.prompt_tools.get(domain)),
                                                    tasks=pool, max_turns=config.max_turns)
        return {d: self.envs[d] for d in domains}

    def split_tasks(self, part: str, domains: Sequence[str]) -> list[CodeAsTask]:
        return [self.tasks[i] for d in domains for i in self.split[d][part]]

    def close(self) -> None:
        for envs in self.envs.values():
            envs.close()


class Cursor:
    """Walks ``size`` items in a seeded order, epoch after epoch (a new order each epoch).

    Its position (epoch, index) goes into every checkpoint, so a resumed run draws the same items next.
    """

    def __init__(self, size: int, seed: int, state: dict[str, int] | None = None):
        self.size, self.seed = size, seed
        self.epoch, self.index = (state["epoch"], state["index"]) if state else (0, 0)

    def order(self, epoch: int) -> list[int]:
        items = list(range(self.size))
        random.Random(f"{self.seed}-{epoch}").shuffle(items)
        return items

    def take(self, n: int) -> list[int]:
        taken: list[int] = []
        while len(taken) < n:
            if self.index == self.size:
                self.epoch, self.index = self.epoch + 1, 0
            end = min(self.size, self.index + n - len(taken))
            taken += self.order(self.epoch)[self.index:end]
            self.index = end
        return taken

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}


def shard(n: int, rank: int, world: int) -> range:
    """This process's contiguous share of ``n`` items (episodes of one task stay together)."""
    return range(rank * n // world, (rank + 1) * n // world)


def step_seed(config: TrainConfig, phase: str, step: int, rank: int) -> int:
    """A rollout seed from the run seed, the phase, the step and the process: resumable and distinct."""
    return random.Random(f"{config.seed}-{phase}-{step}-{rank}").randrange(2**31)


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory since the stage began (:func:`reset_peak_memory`) on CUDA, the GPU's allocations;
    elsewhere the process's peak resident memory so far, which the OS cannot reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak_memory(device: torch.device) -> None:
    """Start a stage's peak memory afresh (CUDA; a CPU process's peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def play(ctx: Context, tasks: Sequence[CodeAsTask], temperature: float, seed: int) -> list[Trajectory]:
    """One episode of each task, in order, in its domain's vector env; a domain's episodes generate together."""
    return play_tasks(ctx.vector_envs(sorted({t.domain for t in tasks})), ctx.playing(temperature), tasks, seed)


def episode_record(trajectory: Trajectory, step: int, phase: str, rank: int) -> dict[str, Any]:
    return {"step": step, "phase": phase, "rank": rank, "task_id": trajectory.task_id, "domain": trajectory.domain,
            "reward": trajectory.reward, "turns": trajectory.num_turns, "invalid_actions": trajectory.invalid_actions,
            "truncated": trajectory.truncated, "completion_tokens": sum(trajectory.loss_mask),
            "messages": trajectory.messages}


def success_by_domain(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    domains = sorted({r["domain"] for r in records})
    return {d: float(np.mean([r["reward"] for r in records if r["domain"] == d])) for d in domains}


# ---------------------------------------------------------------------------- the update


def microbatches(trajectories: Sequence[Trajectory], budget: int, share_prefix: bool) -> list[list[int]]:
    """Indices grouped by domain (one shared system prompt each), each group cut so that the tokens
    one forward pass processes stay within ``budget``: every row padded to the batch's longest (as
    :func:`train.scoring.score` runs them), and the prefix the group shares once (``share_prefix``) or
    in every row. A trajectory with no token to score (an episode cut off before the policy wrote one)
    is in none: it has nothing to learn or rescore."""
    by_domain: dict[str, list[int]] = {}
    for i, t in enumerate(trajectories):
        if any(t.loss_mask[1:]):  # the first token is never scored
            by_domain.setdefault(t.domain, []).append(i)
    batches = []
    for indices in by_domain.values():
        prefix = shared_prefix_length([trajectories[i] for i in indices]) if share_prefix and len(indices) > 1 else 0
        batch, widest = [], 0
        for i in indices:
            width = len(trajectories[i].token_ids) - 1 - prefix  # its row: every token but the last, past the prefix
            if batch and prefix + (len(batch) + 1) * max(widest, width) > budget:
                batches.append(batch)
                batch, widest = [], 0
            batch.append(i)
            widest = max(widest, width)
        batches.append(batch)
    return batches


def rescored(ctx: Context, trajectories: Sequence[Trajectory], temperature: float) -> list[Trajectory]:
    """``trajectories`` with the log-probabilities the policy's training forward pass gives their
    tokens, in place of the sampler's: in fp32 the two agree to about 1e-6, in bf16 by up to 2e-2
    (:mod:`agents.decoding`), which PPO's first pass would take for the policy having moved."""
    config, policy = ctx.config, ctx.policy
    pad = ctx.chat.tokenizer.pad_token_id or 0
    out = list(trajectories)
    policy.train()  # as the update scores them
    with torch.no_grad():
        for batch in microbatches(trajectories, config.micro_batch_tokens, config.share_prefix):
            values = iter(score(policy, [trajectories[i] for i in batch], temperature, config.share_prefix,
                                pad).logprobs.tolist())
            for i in batch:  # the scored tokens: those with loss, in order (the first token never has any)
                t = trajectories[i]
                out[i] = replace(t, logprobs=[next(values) if index and counted else old for index, (counted, old)
                                              in enumerate(zip(t.loss_mask, t.logprobs))])
    return out


def lower_precision(policy: PeftModel) -> bool:
    """Whether the model computes below fp32 (bf16 on a GPU)."""
    return policy.get_output_embeddings().weight.dtype != torch.float32


@dataclass
class UpdateSums:
    """What an update adds up over its loss tokens, across processes (one all-reduce of these fields)."""

    loss: float = 0.0
    entropy: float = 0.0
    kl_base: float = 0.0
    kl_rollout: float = 0.0
    """The sampling log-probability minus the current one: how far the policy moved since it sampled
    these tokens (PPO's later passes)."""
    tokens: float = 0.0


def update(ctx: Context, optimizer: torch.optim.Optimizer, trajectories: Sequence[Trajectory],
           advantages: Sequence[float], algorithm: losses.Algorithm, temperature: float = 1.0,
           kl_coef: float = 0.0, entropy_coef: float = 0.0) -> dict[str, float]:
    """One optimizer step on this process's ``trajectories`` (all processes call it together), with
    ``algorithm``'s per-token objective; ``temperature`` is the one the episodes were sampled at.
    ``kl_coef`` and ``entropy_coef`` weigh the regularisers, which are the RL steps' (fine-tuning on
    demonstrations has none).

    The per-token losses are summed and divided by the loss tokens of the whole batch across
    processes; the gradients are then summed across processes, clipped and applied.
    """
    config, accelerator, policy = ctx.config, ctx.accelerator, ctx.policy
    device = accelerator.device
    local_tokens = sum(sum(t.loss_mask) for t in trajectories)
    total_tokens = int(accelerator.reduce(torch.tensor([local_tokens], device=device), "sum").item())
    if total_tokens == 0:
        return {}
    sums = {f.name: torch.zeros((), device=device) for f in fields(UpdateSums)}
    # policy-gradient losses score the distribution the tokens were drawn from (logits / temperature,
    # unscaled for greedy rollouts); fine-tuning scores the model itself
    temperature = temperature or 1.0 if algorithm.scores_sampled_distribution else 1.0
    optimizer.zero_grad(set_to_none=False)
    policy.train()
    pad = ctx.chat.tokenizer.pad_token_id or 0
    for batch in microbatches(trajectories, config.micro_batch_tokens, config.share_prefix):
        group = [trajectories[i] for i in batch]
        scores = score(policy, group, temperature, config.share_prefix, pad)
        adv = torch.tensor([advantages[i] for i in batch], device=device, dtype=torch.float32)[scores.owner]
        per_token = algorithm.objective(scores.logprobs, scores.old_logprobs, adv, config.clip_eps)
        if kl_coef > 0:
            with torch.no_grad(), policy.disable_adapter():
                base = score(policy, group, temperature, config.share_prefix, pad).logprobs
            kl = losses.kl_to_base(scores.logprobs, base)
            per_token = per_token + kl_coef * kl
            sums["kl_base"] += kl.detach().sum()
        if entropy_coef > 0:
            per_token = per_token - entropy_coef * scores.entropy
        accelerator.backward(per_token.sum() / total_tokens)
        sums["loss"] += per_token.detach().sum()
        sums["entropy"] += scores.entropy.detach().sum()
        sums["kl_rollout"] += (scores.old_logprobs - scores.logprobs.detach()).sum()
        sums["tokens"] += scores.logprobs.numel()
    params = [p for p in policy.parameters() if p.requires_grad]
    for p in params:  # a process with nothing to score this time still joins the all-reduce
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if ctx.num_processes > 1:  # one all-reduce of every gradient, however many microbatches each process ran
        flat = accelerator.reduce(torch.cat([p.grad.flatten() for p in params]), "sum")
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm if config.max_grad_norm > 0 else float("inf"))
    optimizer.step()
    reduced = accelerator.reduce(torch.stack([sums[f.name] for f in fields(UpdateSums)]), "sum")
    totals = UpdateSums(*reduced.tolist())
    tokens = max(totals.tokens, 1.0)
    result = {"loss": totals.loss / tokens, "entropy": totals.entropy / tokens, "grad_norm": float(norm),
              "loss_tokens": int(totals.tokens)}
    if algorithm.scores_sampled_distribution:
        result["kl_rollout"] = totals.kl_rollout / tokens
    if kl_coef > 0:
        result["kl_base"] = totals.kl_base / tokens
    return result


def make_optimizer(policy: PeftModel, lr: float, state: dict[str, Any] | None) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    if state is not None:
        optimizer.load_state_dict(state)
    return optimizer


# ---------------------------------------------------------------------------- stages


def evaluate(ctx: Context, name: str, step: int, domains: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """Held-out success per domain (``domains``, default all): :func:`eval.heldout.score`, the command
    line's held-out score, each process playing its share (results gathered). The metrics also give it
    on the tasks whose example solution makes 2 or more tool calls (``success_multi_call``), the
    multi-turn ones."""
    tasks = ctx.split_tasks("heldout", domains or ctx.config.domains)
    mine = [tasks[i] for i in shard(len(tasks), ctx.rank, ctx.num_processes)]
    started = time.perf_counter()
    played = heldout.score(ctx.vector_envs(sorted({t.domain for t in mine})), ctx.playing(ctx.config.eval_temperature),
                           mine, 1, step_seed(ctx.config, f"eval-{name}", step, ctx.rank), f"({name})",
                           show=ctx.accelerator.is_main_process)
    records = gather_object([episode_record(t, step, f"eval:{name}", ctx.rank) for t in played])
    result = {d: {"success": float(np.mean([r["reward"] for r in records if r["domain"] == d])),
                  "n": sum(1 for r in records if r["domain"] == d)}
              for d in ctx.config.domains if any(r["domain"] == d for r in records)}
    multi_call = {t.id for t in tasks if is_multi_call(t)}
    multi = {d: [r["reward"] for r in records if r["domain"] == d and r["task_id"] in multi_call] for d in result}
    multi = {d: rewards for d, rewards in multi.items() if rewards}
    ctx.run.log_metrics({"step": step, "phase": "eval", "stage": name,
                         "success": {d: v["success"] for d, v in result.items()},
                         "n": {d: v["n"] for d, v in result.items()},
                         "success_multi_call": {d: float(np.mean(rewards)) for d, rewards in multi.items()},
                         "n_multi_call": {d: len(rewards) for d, rewards in multi.items()},
                         "seconds": time.perf_counter() - started})
    if ctx.config.save_trajectories:
        ctx.run.append(ctx.run.trajectories, records)
    log.info("held-out success (%s): %s", name, ", ".join(f"{d} {v['success']:.2f}" for d, v in result.items()))
    return result


def demonstrations(ctx: Context, tasks: Sequence[CodeAsTask], actions: Sequence[Sequence[str]],
                   verified: bool = True) -> list[Trajectory]:
    """Each task's actions played through its env; only demonstrations that solve their task
    (all of them when not ``verified``)."""
    demos = []
    for task, acts in zip(tasks, actions):
        env = make_env(task.domain, task, max(ctx.config.max_turns, len(acts)), ctx.config.prompt_tools)
        demo = demonstration(env, ctx.chat, acts, {"task_id": task.id})
        env.close()
        if demo.reward > 0 or not verified:
            demos.append(demo)
    log.info("%d of %d demonstrations solve their task", sum(d.reward > 0 for d in demos), len(tasks))
    return demos


def warm_start_plan(demos: Sequence[Trajectory], batch: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's updates: each domain's demonstrations shuffled and cut into batches of one
    domain (one shared system prompt per update), the batches of all domains shuffled together."""
    rng = random.Random(f"{seed}-warm-{epoch}")
    plan = []
    for domain in sorted({d.domain for d in demos}):
        indices = [i for i, d in enumerate(demos) if d.domain == domain]
        rng.shuffle(indices)
        plan += [indices[k:k + batch] for k in range(0, len(indices), batch)]
    rng.shuffle(plan)
    return plan


@dataclass(frozen=True)
class FineTuning:
    """A fine-tuning stage's knobs: the executor's warm start, or the challenger's."""

    phase: str
    epochs: int
    lr: float
    batch: int


def fine_tune(ctx: Context, state: RunState, optimizer_state: dict[str, Any] | None, demos: Sequence[Trajectory],
              plan: FineTuning) -> None:
    """``plan.epochs`` epochs of fine-tuning the active adapter on ``demos`` (loss on the actions only),
    resumable at any update."""
    config = ctx.config
    plan_size = len(warm_start_plan(demos, plan.batch, config.seed, 0))
    total = plan.epochs * plan_size
    optimizer = make_optimizer(ctx.policy, plan.lr, optimizer_state)
    bar = tqdm(total=total, initial=state.phase_step, desc=plan.phase.replace("_", " "), unit="update",
               disable=not ctx.accelerator.is_main_process)
    while state.phase_step < total:
        epoch, index = divmod(state.phase_step, plan_size)
        batch = warm_start_plan(demos, plan.batch, config.seed, epoch)[index]
        mine = [demos[batch[i]] for i in shard(len(batch), ctx.rank, ctx.num_processes)]
        started = time.perf_counter()
        stats = update(ctx, optimizer, mine, [0.0] * len(mine), losses.FINE_TUNING)
        seconds = time.perf_counter() - started
        state.step += 1
        state.phase_step += 1
        ctx.run.log_metrics({"step": state.step, "phase": plan.phase, "epoch": epoch, "domain": demos[batch[0]].domain,
                             **stats, "update_s": seconds,
                             "tokens_per_s": stats.get("loss_tokens", 0) / max(seconds, 1e-9),
                             "peak_memory_gib": peak_memory_gib(ctx.accelerator.device)})
        bar.update(1)
        bar.set_postfix(loss=f"{stats.get('loss', float('nan')):.3f}")
        if state.phase_step < total and state.phase_step % config.checkpoint_every == 0:
            ctx.run.save_checkpoint(ctx.policy, optimizer, state)
    bar.close()


def warm_start(ctx: Context, state: RunState, optimizer_state: dict[str, Any] | None) -> None:
    """Fine-tune on the training tasks' example solutions (loss on the actions only)."""
    config = ctx.config
    tasks = [t for d in config.warm_start_domain_list()
             for t in ctx.split_tasks("train", [d])[:config.warm_start_tasks.get(d)]]
    demos = demonstrations(ctx, tasks, [solution_actions(t) for t in tasks], config.warm_start_verified)
    if not demos:
        raise EmptyPoolError("no training task's example solution could be replayed for the warm start")
    fine_tune(ctx, state, optimizer_state, demos,
              FineTuning("warm_start", config.warm_start_epochs, config.warm_start_lr, config.warm_start_batch))


def load_distill(ctx: Context) -> list[Trajectory]:
    """The stronger model's successful trajectories, replayed in our envs and rendered in our format."""
    records = [r for r in read_jsonl(Path(ctx.config.distill_path)) if r.get("reward", 1) > 0]
    known = [r for r in records if r.get("task_id") in ctx.tasks]
    if len(known) < len(records):
        log.warning("distill: %d of %d trajectories are of tasks not in the pool; skipped",
                    len(records) - len(known), len(records))
    demos = demonstrations(ctx, [ctx.tasks[r["task_id"]] for r in known], [transcript_actions(r) for r in known])
    if not demos:
        raise EmptyPoolError(f"distill: no trajectory in {ctx.config.distill_path} solves a task of the pool")
    return demos


@dataclass
class StepBatch:
    """One RL step's episodes as this process holds them: its share of the step's trajectories
    (``mine``: their places among all of the step's episodes), each episode's group (the task it
    plays, over the whole step: advantages compare episodes across processes), and the seconds
    their rollout took."""

    trajectories: list[Trajectory]
    groups: list[int]
    mine: range
    rollout_s: float = 0.0


def collect(ctx: Context, tasks: Sequence[CodeAsTask], step: int) -> StepBatch:
    """``group_size`` episodes of each task, this process playing its contiguous share."""
    started = time.perf_counter()
    groups = [g for g in range(len(tasks)) for _ in range(ctx.config.group_size)]
    mine = shard(len(groups), ctx.rank, ctx.num_processes)
    played = play(ctx, [tasks[groups[i]] for i in mine], ctx.config.temperature,
                  step_seed(ctx.config, "rl", step, ctx.rank))
    return StepBatch(played, groups, mine, time.perf_counter() - started)


def recorded(ctx: Context, demos: Sequence[Trajectory]) -> StepBatch:
    """Another model's trajectories as a step's episodes (distillation): one group each."""
    mine = shard(len(demos), ctx.rank, ctx.num_processes)
    return StepBatch([demos[i] for i in mine], list(range(len(demos))), mine)


def over_passes(updates: Sequence[dict[str, float]], epochs: int) -> dict[str, float]:
    """A step's metrics from its several updates (PPO's minibatches over ``epochs``): each per-token
    mean over all of them, the mean gradient norm, and the step's own tokens (each epoch sees them all)."""
    if not updates:
        return {}
    tokens = sum(u["loss_tokens"] for u in updates)
    stats = {key: sum(u[key] * u["loss_tokens"] for u in updates) / max(tokens, 1)
             for key in updates[0] if key not in ("grad_norm", "loss_tokens")}
    return {**stats, "grad_norm": sum(u["grad_norm"] for u in updates) / len(updates),
            "loss_tokens": round(tokens / epochs)}


def rl_step(ctx: Context, optimizer: torch.optim.Optimizer, batch: StepBatch, step: int,
            algorithm: losses.Algorithm | None = None, phase: str = "rl", temperature: float | None = None,
            ) -> dict[str, Any]:
    """One RL step on ``batch``: advantages over the whole step's episodes, then one update (several
    for algorithms that make passes). ``algorithm``, ``temperature`` (the sampling one) and the
    metrics' ``phase`` default to the executor's RL. Returns the step's metrics and episode records;
    ``bench.train`` times it."""
    config = ctx.config
    algorithm = algorithm or losses.ALGORITHMS[config.algorithm]
    temperature = config.temperature if temperature is None else temperature
    records = gather_object([episode_record(t, step, phase, ctx.rank) for t in batch.trajectories])
    rewards = torch.tensor([r["reward"] for r in records], dtype=torch.float32)
    advantages, keep = algorithm.weigh(rewards, batch.groups, config.kl_coef > 0 or config.entropy_coef > 0)
    chosen = [(t, float(advantages[i])) for i, t in zip(batch.mine, batch.trajectories) if keep[i]]
    updated = time.perf_counter()
    if algorithm.passes:
        if lower_precision(ctx.policy):  # the first pass's ratio starts at 1, but for another batch shape's rounding
            chosen = list(zip(rescored(ctx, [t for t, _ in chosen], temperature), [a for _, a in chosen]))
        passes: list[dict[str, float]] = []
        order = list(range(len(chosen)))
        for epoch in range(config.ppo_epochs):
            random.Random(f"{config.seed}-ppo-{step}-{epoch}-{ctx.rank}").shuffle(order)
            for m in range(config.ppo_minibatches):
                part = [chosen[i] for i in order[m * len(order) // config.ppo_minibatches:
                                                 (m + 1) * len(order) // config.ppo_minibatches]]
                passes.append(update(ctx, optimizer, [t for t, _ in part], [a for _, a in part], algorithm,
                                     temperature, config.kl_coef, config.entropy_coef))
        stats = over_passes([p for p in passes if p], config.ppo_epochs)
    else:
        stats = update(ctx, optimizer, [t for t, _ in chosen], [a for _, a in chosen], algorithm, temperature,
                       config.kl_coef, config.entropy_coef)
    update_s = time.perf_counter() - updated
    completion = sum(r["completion_tokens"] for r in records)
    rollout_s = batch.rollout_s
    metrics = {"step": step, "phase": phase, "algorithm": algorithm.name,
               "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
               "success": success_by_domain(records),
               "dropped_groups": losses.dropped_group_fraction(keep, batch.groups),
               "kept_episodes": int(keep.sum()), "episodes": len(records), "processes": ctx.num_processes, **stats,
               "completion_tokens": completion, "rollout_s": rollout_s, "update_s": update_s,
               "tokens_per_s": completion / max(rollout_s + update_s, 1e-9),
               "rollout_tokens_per_s": completion / max(rollout_s, 1e-9),
               "peak_memory_gib": peak_memory_gib(ctx.accelerator.device)}
    return {"metrics": metrics, "records": records}


def reinforce(ctx: Context, state: RunState, optimizer_state: dict[str, Any] | None) -> None:
    """The RL stage: ``steps`` steps over the training tasks of the RL domains."""
    config = ctx.config
    algorithm = losses.ALGORITHMS[config.algorithm]
    if algorithm.offline:
        pool: Sequence[Any] = load_distill(ctx)
        per_step = config.tasks_per_step * config.group_size
    else:
        pool = ctx.split_tasks("train", config.rl_domain_list())
        per_step = config.tasks_per_step
    if not pool:
        raise EmptyPoolError(f"no training tasks in the RL domains {config.rl_domain_list()}")
    cursor = Cursor(len(pool), config.seed, state.cursor)
    optimizer = make_optimizer(ctx.policy, config.lr, optimizer_state)
    bar = tqdm(total=config.steps, initial=state.phase_step, desc=f"RL ({config.algorithm})", unit="step",
               disable=not ctx.accelerator.is_main_process)
    while state.phase_step < config.steps:
        drawn = [pool[i] for i in cursor.take(per_step)]
        batch = recorded(ctx, drawn) if algorithm.offline else collect(ctx, drawn, state.step + 1)
        result = rl_step(ctx, optimizer, batch, state.step + 1)
        state.step += 1
        state.phase_step += 1
        state.cursor = cursor.state()
        ctx.run.log_metrics(result["metrics"])
        if config.save_trajectories:
            ctx.run.append(ctx.run.trajectories, result["records"])
        bar.update(1)
        bar.set_postfix(reward=f"{result['metrics']['reward_mean']:.2f}")
        last = state.phase_step == config.steps
        if config.eval_every and state.phase_step % config.eval_every == 0 and not last:
            evaluate(ctx, f"rl@{state.phase_step}", state.step, config.rl_domain_list())  # what the steps train
        if not last and state.phase_step % config.checkpoint_every == 0:
            ctx.run.save_checkpoint(ctx.policy, optimizer, state)
    bar.close()
