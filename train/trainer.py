"""The self-challenging loop, top to bottom: tasks, base score, warm start, score, RL, score.

1. **Tasks**: the model writes tasks as challenger; scripted challengers top each domain up; each
   domain is split into training and held-out tasks (:mod:`train.tasks`). The main process writes
   them; every process reads them.
2. **Base score**: held-out success of the base model (greedy, one episode per task).
3. **Warm start**: fine-tuning on the training tasks' example solutions, played through the env
   and rendered as the policy's own episodes (:mod:`train.demos`); then the held-out score again.
4. **RL**: each step samples tasks from the training split, plays ``group_size`` episodes of each,
   turns rewards into advantages and updates the LoRA adapter (:mod:`train.losses`); then the
   held-out score a third time.

Processes: under ``accelerate launch --num_processes N`` every process holds the model and plays
its contiguous share of each step's episodes; rewards are gathered so that advantages (and the
loss's token count) are those of the whole batch, and the adapter's gradients are summed across
processes with one all-reduce per update. So N processes take the same steps as one, on a batch
split N ways. Only the main process writes the run folder.

Resuming: a checkpoint holds the stage, the step, the data cursor, the adapter, the optimizer and
the RNG states (:mod:`train.rundir`); rollout seeds derive from the seed and the step, so a
resumed run plays the same episodes an uninterrupted one would have.
"""

from __future__ import annotations

import json
import logging
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from peft import PeftModel
from tqdm import tqdm

from agents.models import LoraSettings, load_policy
from agents.prompting import ChatFormat
from agents.rollout import SamplingSettings, Trajectory, rollout
from envs.cat import CodeAsTask
from envs.pool import load_pool
from envs.records import read_jsonl
from envs.registry import DOMAINS
from train import losses, plots
from train.config import ConfigError, TrainConfig
from train.demos import demonstration, solution_actions, transcript_actions
from train.rundir import RunDir, RunState, write_atomic
from train.scoring import score, shared_prefix_length
from train.tasks import DomainMix, EmptyPoolError, Selection, is_llm, make_env, pool_tasks, split, write_tasks

log = logging.getLogger(__name__)

STAGES = ("eval_base", "warm_start", "eval_warm_start", "rl", "eval_rl", "done")
EVAL_NAMES = {"eval_base": "base", "eval_warm_start": "warm_start", "eval_rl": "rl"}


# ---------------------------------------------------------------------------- the pieces a step uses


@dataclass
class Context:
    """What every stage of a run uses."""

    config: TrainConfig
    accelerator: Accelerator
    run: RunDir
    policy: PeftModel
    chat: ChatFormat
    tasks: dict[str, CodeAsTask]
    split: dict[str, dict[str, list[str]]]

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def sampling(self, temperature: float) -> SamplingSettings:
        return SamplingSettings(temperature=temperature, max_new_tokens=self.config.max_new_tokens,
                                max_context_tokens=self.config.max_context_tokens or None)

    def split_tasks(self, part: str, domains: Sequence[str]) -> list[CodeAsTask]:
        return [self.tasks[i] for d in domains for i in self.split[d][part]]


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
        taken = []
        while len(taken) < n:
            if self.index == self.size:
                self.epoch, self.index = self.epoch + 1, 0
            taken.append(self.order(self.epoch)[self.index])
            self.index += 1
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
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def play(ctx: Context, tasks: Sequence[CodeAsTask], temperature: float, seed: int) -> list[Trajectory]:
    """One episode of each task, in order; all episodes of a domain generated together in batches."""
    trajectories: list[Trajectory | None] = [None] * len(tasks)
    by_domain: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        by_domain.setdefault(task.domain, []).append(i)
    settings = ctx.sampling(temperature)
    for domain, indices in by_domain.items():
        for start in range(0, len(indices), ctx.config.rollout_batch):
            chunk = indices[start:start + ctx.config.rollout_batch]
            envs = [make_env(domain, tasks[i], ctx.config.max_turns, ctx.config.prompt_tools) for i in chunk]
            played = rollout(ctx.policy, ctx.chat.tokenizer, envs, settings, seed=seed + start,
                             options=[{"task": tasks[i]} for i in chunk], chat=ctx.chat)
            for i, trajectory in zip(chunk, played):
                trajectories[i] = trajectory
            for env in envs:
                env.close()
    return [t for t in trajectories if t is not None]


def episode_record(trajectory: Trajectory, step: int, phase: str, rank: int) -> dict[str, Any]:
    return {"step": step, "phase": phase, "rank": rank, "task_id": trajectory.task_id, "domain": trajectory.domain,
            "reward": trajectory.reward, "turns": trajectory.num_turns, "invalid_actions": trajectory.invalid_actions,
            "truncated": trajectory.truncated, "completion_tokens": sum(trajectory.loss_mask),
            "messages": trajectory.messages}


def success_by_domain(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    domains = sorted({r["domain"] for r in records})
    return {d: float(np.mean([r["reward"] for r in records if r["domain"] == d])) for d in domains}


# ---------------------------------------------------------------------------- the update


def microbatches(trajectories: Sequence[Trajectory], budget: int) -> list[list[int]]:
    """Indices grouped by domain (one shared system prompt each), each group cut so that its
    tokens after the shared prefix stay within ``budget``."""
    by_domain: dict[str, list[int]] = {}
    for i, t in enumerate(trajectories):
        by_domain.setdefault(t.domain, []).append(i)
    batches = []
    for indices in by_domain.values():
        prefix = shared_prefix_length([trajectories[i] for i in indices]) if len(indices) > 1 else 0
        batch, used = [], 0
        for i in indices:
            cost = len(trajectories[i].token_ids) - prefix
            if batch and used + cost > budget:
                batches.append(batch)
                batch, used = [], 0
            batch.append(i)
            used += cost
        batches.append(batch)
    return batches


def update(ctx: Context, optimizer: torch.optim.Optimizer, trajectories: Sequence[Trajectory],
           advantages: Sequence[float], loss: str) -> dict[str, float]:
    """One optimizer step on this process's ``trajectories`` (all processes call it together).

    ``loss`` is "pg" (advantage-weighted log-likelihood), "ppo" (clipped surrogate against the
    stored log-probabilities) or "sft" (log-likelihood, advantages ignored). The per-token losses
    are summed and divided by the loss tokens of the whole batch across processes; the gradients
    are then summed across processes, clipped and applied.
    """
    config, accelerator, policy = ctx.config, ctx.accelerator, ctx.policy
    device = accelerator.device
    local_tokens = sum(sum(t.loss_mask) for t in trajectories)
    total_tokens = int(accelerator.reduce(torch.tensor([local_tokens], device=device), "sum").item())
    stats = torch.zeros(5, device=device)  # loss, entropy, kl to base, kl to rollout, tokens (sums)
    if total_tokens == 0:
        return {}
    # policy-gradient losses score the distribution the tokens were drawn from (logits / temperature,
    # unscaled for greedy rollouts); fine-tuning scores the model itself
    temperature = 1.0 if loss == "sft" else config.temperature or 1.0
    optimizer.zero_grad(set_to_none=False)
    policy.train()
    pad = ctx.chat.tokenizer.pad_token_id or 0
    for batch in microbatches(trajectories, config.micro_batch_tokens):
        group = [trajectories[i] for i in batch]
        scores = score(policy, group, temperature, config.share_prefix, pad)
        adv = torch.tensor([advantages[i] for i in batch], device=device, dtype=torch.float32)[scores.owner]
        if loss == "sft":
            per_token = losses.sft_loss(scores.logprobs)
        elif loss == "ppo":
            per_token = losses.ppo_loss(scores.logprobs, scores.old_logprobs, adv, config.clip_eps)
        else:
            per_token = losses.policy_gradient_loss(scores.logprobs, adv)
        if config.kl_coef > 0:
            with torch.no_grad(), policy.disable_adapter():
                base = score(policy, group, temperature, config.share_prefix, pad).logprobs
            kl = losses.kl_to_base(scores.logprobs, base)
            per_token = per_token + config.kl_coef * kl
            stats[2] += kl.detach().sum()
        if config.entropy_coef > 0:
            per_token = per_token - config.entropy_coef * scores.entropy
        accelerator.backward(per_token.sum() / total_tokens)
        stats[0] += per_token.detach().sum()
        stats[1] += scores.entropy.detach().sum()
        stats[3] += (scores.old_logprobs - scores.logprobs.detach()).sum()
        stats[4] += scores.logprobs.numel()
    params = [p for p in policy.parameters() if p.requires_grad]
    for p in params:  # a process with nothing to score this time still joins the all-reduce
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if ctx.world > 1:  # one all-reduce of every gradient, however many microbatches each process ran
        flat = accelerator.reduce(torch.cat([p.grad.flatten() for p in params]), "sum")
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm if config.max_grad_norm > 0 else float("inf"))
    optimizer.step()
    stats = accelerator.reduce(stats, "sum")
    tokens = max(float(stats[4]), 1.0)
    result = {"loss": float(stats[0]) / tokens, "entropy": float(stats[1]) / tokens, "grad_norm": float(norm),
              "loss_tokens": int(stats[4])}
    if loss != "sft":  # how far the policy has moved since it sampled these tokens (PPO's later passes)
        result["kl_rollout"] = float(stats[3]) / tokens
    if config.kl_coef > 0:
        result["kl_base"] = float(stats[2]) / tokens
    return result


def make_optimizer(policy: PeftModel, lr: float, state: dict[str, Any] | None) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    if state is not None:
        optimizer.load_state_dict(state)
    return optimizer


# ---------------------------------------------------------------------------- stages


def evaluate(ctx: Context, name: str, step: int) -> dict[str, dict[str, float]]:
    """Held-out success per domain (each process plays its share; results gathered)."""
    tasks = ctx.split_tasks("heldout", ctx.config.domains)
    mine = shard(len(tasks), ctx.rank, ctx.world)
    started = time.perf_counter()
    records = []
    bar = tqdm(total=len(tasks), desc=f"held-out ({name})", unit="task", disable=not ctx.accelerator.is_main_process)
    for domain in ctx.config.domains:  # one domain at a time, so the bar moves
        chosen = [tasks[i] for i in mine if tasks[i].domain == domain]
        played = play(ctx, chosen, ctx.config.eval_temperature, step_seed(ctx.config, f"eval-{name}", step, ctx.rank))
        records += [episode_record(t, step, f"eval:{name}", ctx.rank) for t in played]
        bar.update(sum(1 for t in tasks if t.domain == domain))
    bar.close()
    records = gather_object(records)
    result = {d: {"success": float(np.mean([r["reward"] for r in records if r["domain"] == d])),
                  "n": sum(1 for r in records if r["domain"] == d)}
              for d in ctx.config.domains if any(r["domain"] == d for r in records)}
    ctx.run.log_metrics({"step": step, "phase": "eval", "stage": name,
                         "success": {d: v["success"] for d, v in result.items()},
                         "n": {d: v["n"] for d, v in result.items()}, "seconds": time.perf_counter() - started})
    if ctx.config.save_trajectories:
        ctx.run.append(ctx.run.trajectories, records)
    log.info("held-out success (%s): %s", name, ", ".join(f"{d} {v['success']:.2f}" for d, v in result.items()))
    return result


def demonstrations(ctx: Context, tasks: Sequence[CodeAsTask], actions: Sequence[Sequence[str]]) -> list[Trajectory]:
    """Each task's actions played through its env; only demonstrations that solve their task."""
    demos = []
    for task, acts in zip(tasks, actions):
        env = make_env(task.domain, task, max(ctx.config.max_turns, len(acts)), ctx.config.prompt_tools)
        demo = demonstration(env, ctx.chat, task, acts)
        env.close()
        if demo.reward > 0:
            demos.append(demo)
    log.info("%d of %d demonstrations solve their task", len(demos), len(tasks))
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


def warm_start(ctx: Context, state: RunState, optimizer_state: dict[str, Any] | None) -> None:
    """Fine-tune on the training tasks' example solutions (loss on the actions only)."""
    config = ctx.config
    tasks = ctx.split_tasks("train", config.warm_start_domain_list())
    demos = demonstrations(ctx, tasks, [solution_actions(t) for t in tasks])
    if not demos:
        raise EmptyPoolError("no training task's example solution could be replayed for the warm start")
    plan_size = len(warm_start_plan(demos, config.warm_start_batch, config.seed, 0))
    total = config.warm_start_epochs * plan_size
    optimizer = make_optimizer(ctx.policy, config.warm_start_lr, optimizer_state)
    bar = tqdm(total=total, initial=state.phase_step, desc="warm start", unit="update",
               disable=not ctx.accelerator.is_main_process)
    while state.phase_step < total:
        epoch, index = divmod(state.phase_step, plan_size)
        batch = warm_start_plan(demos, config.warm_start_batch, config.seed, epoch)[index]
        mine = [demos[batch[i]] for i in shard(len(batch), ctx.rank, ctx.world)]
        started = time.perf_counter()
        stats = update(ctx, optimizer, mine, [0.0] * len(mine), "sft")
        seconds = time.perf_counter() - started
        state.step += 1
        state.phase_step += 1
        ctx.run.log_metrics({"step": state.step, "phase": "warm_start", "epoch": epoch, "domain": demos[batch[0]].domain,
                             **stats, "update_s": seconds,
                             "tokens_per_s": stats.get("loss_tokens", 0) / max(seconds, 1e-9),
                             "peak_memory_gib": peak_memory_gib(ctx.accelerator.device)})
        bar.update(1)
        bar.set_postfix(loss=f"{stats.get('loss', float('nan')):.3f}")
        if state.phase_step < total and state.phase_step % config.checkpoint_every == 0:
            ctx.run.save_checkpoint(ctx.policy, optimizer, state)
    bar.close()


def advantages_for(config: TrainConfig, rewards: torch.Tensor, groups: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each episode's advantage and whether it enters the update, per the algorithm."""
    if config.algorithm in ("grpo", "ppo"):
        return losses.group_advantages(rewards, groups)
    if config.algorithm == "rloo":
        advantages = losses.rloo_advantages(rewards, groups)
        return advantages, advantages != 0
    if config.algorithm == "reinforce":
        advantages = losses.batch_advantages(rewards)
        keep = advantages != 0 if config.entropy_coef == 0 and config.kl_coef == 0 else torch.ones_like(rewards, dtype=torch.bool)
        return advantages, keep
    return torch.zeros_like(rewards), rewards > 0  # rft: fine-tune on the successes


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


def rl_step(ctx: Context, optimizer: torch.optim.Optimizer, batch: Sequence[CodeAsTask] | Sequence[Trajectory],
            step: int) -> dict[str, Any]:
    """One RL step on ``batch``: tasks (each played ``group_size`` times, this process playing its
    share) or, for distill, demonstrations. Advantages are computed over the whole batch, then one
    update (several for PPO). Returns the step's metrics and episode records; ``bench.train`` times it."""
    config = ctx.config
    started = time.perf_counter()
    if config.algorithm == "distill":
        mine = shard(len(batch), ctx.rank, ctx.world)
        trajectories = [batch[i] for i in mine]
        groups = list(range(len(batch)))
    else:
        groups = [g for g in range(len(batch)) for _ in range(config.group_size)]
        mine = shard(len(groups), ctx.rank, ctx.world)
        trajectories = play(ctx, [batch[groups[i]] for i in mine], config.temperature,
                            step_seed(config, "rl", step, ctx.rank))
    rollout_s = time.perf_counter() - started
    records = gather_object([episode_record(t, step, "rl", ctx.rank) for t in trajectories])
    rewards = torch.tensor([r["reward"] for r in records], dtype=torch.float32)
    advantages, keep = advantages_for(config, rewards, groups)
    chosen = [(t, float(advantages[i])) for i, t in zip(mine, trajectories) if keep[i]]
    updated = time.perf_counter()
    if config.algorithm == "ppo":
        stats: dict[str, float] = {}
        order = list(range(len(chosen)))
        for epoch in range(config.ppo_epochs):
            random.Random(f"{config.seed}-ppo-{step}-{epoch}-{ctx.rank}").shuffle(order)
            for m in range(config.ppo_minibatches):
                part = [chosen[i] for i in order[m * len(order) // config.ppo_minibatches:
                                                 (m + 1) * len(order) // config.ppo_minibatches]]
                stats = update(ctx, optimizer, [t for t, _ in part], [a for _, a in part], "ppo") or stats
    else:
        loss = "sft" if config.algorithm in ("rft", "distill") else "pg"
        stats = update(ctx, optimizer, [t for t, _ in chosen], [a for _, a in chosen], loss)
    update_s = time.perf_counter() - updated
    completion = sum(r["completion_tokens"] for r in records)
    metrics = {"step": step, "phase": "rl", "algorithm": config.algorithm,
               "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
               "success": success_by_domain(records),
               "dropped_groups": (losses.dropped_group_fraction(rewards, groups)
                                  if config.algorithm != "distill" and config.group_size > 1 else 0.0),
               "kept_episodes": int(keep.sum()), "episodes": len(records), "processes": ctx.world, **stats,
               "completion_tokens": completion, "rollout_s": rollout_s, "update_s": update_s,
               "tokens_per_s": completion / max(rollout_s + update_s, 1e-9),
               "rollout_tokens_per_s": completion / max(rollout_s, 1e-9),
               "peak_memory_gib": peak_memory_gib(ctx.accelerator.device)}
    return {"metrics": metrics, "records": records}


def reinforce(ctx: Context, state: RunState, optimizer_state: dict[str, Any] | None) -> None:
    """The RL stage: ``steps`` steps over the training tasks of the RL domains."""
    config = ctx.config
    if config.algorithm == "distill":
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
        batch = [pool[i] for i in cursor.take(per_step)]
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
            evaluate(ctx, f"rl@{state.phase_step}", state.step)
        if not last and state.phase_step % config.checkpoint_every == 0:
            ctx.run.save_checkpoint(ctx.policy, optimizer, state)
    bar.close()


# ---------------------------------------------------------------------------- the run


def open_run(config: TrainConfig, accelerator: Accelerator, default_name: str) -> RunDir:
    """The run folder: the main process picks it (a new name, or the run to resume), checks it and
    makes it; every process gets the same name, or the same error."""
    root = Path(config.runs_dir)
    name, problem = config.name or f"{default_name}-{time.strftime('%Y%m%d-%H%M%S')}", None
    if accelerator.is_main_process:
        if config.resume and not config.name:
            runs = sorted((p for p in root.glob("*") if (p / "config.yaml").exists()), key=lambda p: p.stat().st_mtime)
            name = runs[-1].name if runs else name
        held = (root / name / "config.yaml").exists()
        if config.resume and not held:
            problem = ("resume", f"there is no run {root / name} to resume" if config.name else f"there is no run in {root}")
        if not config.resume and held:
            problem = ("name", f"{root / name} already holds a run: pass --resume to continue it, or another --name")
    name, problem = broadcast_object_list([name, problem])
    if problem:
        raise ConfigError(*problem)
    run = RunDir(root / name, writer=accelerator.is_main_process)
    if accelerator.is_main_process:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config({**config.to_dict(), "name": name, "resume": False})
    accelerator.wait_for_everyone()
    return run


def selection(config: TrainConfig) -> Selection:
    return Selection(config.max_solution_actions, config.prompt_tools)


def prepare_tasks(config: TrainConfig, run: RunDir, accelerator: Accelerator, policy: PeftModel,
                  chat: ChatFormat) -> tuple[dict[str, CodeAsTask], dict[str, dict[str, list[str]]]]:
    """The run's pool and split: written once by the main process (challenger, or the given pool)."""
    if accelerator.is_main_process and not run.split.exists():
        if config.pool:
            tasks = pool_tasks(config.pool, config.domains, selection(config))
            mix = {d: asdict(DomainMix(llm=sum(t.domain == d and is_llm(t) for t in tasks),
                                       scripted=sum(t.domain == d and not is_llm(t) for t in tasks)))
                   for d in config.domains}
        else:
            settings = SamplingSettings(temperature=config.challenger_temperature,
                                        max_new_tokens=config.challenger_max_new_tokens)
            with policy.disable_adapter():
                written, domain_mix = write_tasks(policy, chat.tokenizer, config.domains, config.tasks_per_domain,
                                                  config.challenger_proposals, settings, config.challenger_explore_turns,
                                                  selection(config), config.seed, config.model)
            tasks, mix = written, {d: asdict(m) for d, m in domain_mix.items()}
        parts = split(tasks, config.domains, config.heldout_per_domain, config.seed)
        write_atomic(run.pool, "".join(t.dumps() + "\n" for t in tasks))
        write_atomic(run.tasks, json.dumps(mix, indent=1))
        write_atomic(run.split, json.dumps(parts, indent=1))  # last: its presence means the stage is done
    accelerator.wait_for_everyone()
    tasks = {t.id: t for t in load_pool(run.pool)}
    return tasks, json.loads(run.split.read_text())


def restore(ctx: Context) -> tuple[RunState, dict[str, Any] | None]:
    """The state to start from: the last checkpoint's when resuming (logs cut back to its lines)."""
    checkpoint = ctx.run.latest_checkpoint() if ctx.config.resume else None
    if checkpoint is None:
        ctx.run.truncate({})
        return RunState(stage=STAGES[0]), None
    state, optimizer_state = ctx.run.load_checkpoint(checkpoint, ctx.policy)
    ctx.run.truncate(state.lines)
    log.info("resuming %s at step %d (stage %s, %d updates into it)", ctx.run.path, state.step, state.stage,
             state.phase_step)
    return state, optimizer_state


def next_stage(stage: str, config: TrainConfig) -> str:
    """The stage after ``stage``, skipping the warm start or RL (and their scores) when they have no updates."""
    skipped = set()
    if config.warm_start_epochs == 0:
        skipped |= {"warm_start", "eval_warm_start"}
    if config.steps == 0:
        skipped |= {"rl", "eval_rl"}
    following = STAGES[STAGES.index(stage) + 1:]
    return next(s for s in following if s not in skipped)


def draw_plots(run: RunDir) -> list[Path]:
    """The held-out and training curves of ``run`` (main process; others get no paths)."""
    if not run.writer:
        return []
    metrics = run.read_metrics()
    return [plots.plot_heldout(metrics, run.plots / "heldout.png"),
            plots.plot_training(metrics, run.plots / "training.png")]


def train(config: TrainConfig, default_name: str = "run") -> tuple[RunDir, RunState]:
    """Run (or resume) the whole loop; returns the run folder and its final state."""
    for name, entry in config.extra_domains.items():
        DOMAINS[name] = entry
    if config.pool:  # a pool without tasks for a domain: say so before loading anything
        pool_tasks(config.pool, config.domains, selection(config))
    accelerator = Accelerator(cpu=config.device == "cpu")
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    run = open_run(config, accelerator, default_name)

    targets = config.lora_targets if config.lora_targets == "all-linear" else tuple(config.lora_targets.split(","))
    policy, tokenizer = load_policy(config.model, lora=LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha,
                                                                    target_modules=targets),
                                    device=accelerator.device)
    for p in policy.parameters():  # the adapter trains in fp32 even on a bf16 model
        if p.requires_grad:
            p.data = p.data.float()
    if config.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.enable_input_require_grads()
    chat = ChatFormat.of(tokenizer)
    tasks, parts = prepare_tasks(config, run, accelerator, policy, chat)
    ctx = Context(config, accelerator, run, policy, chat, tasks, parts)
    state, optimizer_state = restore(ctx)

    while state.stage != "done":
        stage = state.stage
        if stage in EVAL_NAMES:
            state.evals[EVAL_NAMES[stage]] = evaluate(ctx, EVAL_NAMES[stage], state.step)
        elif stage == "warm_start":
            warm_start(ctx, state, optimizer_state)
        elif stage == "rl":
            reinforce(ctx, state, optimizer_state)
        optimizer_state = None
        state.stage, state.phase_step, state.cursor = next_stage(stage, config), 0, {"epoch": 0, "index": 0}
        run.save_checkpoint(policy, None, state)
        draw_plots(run)
    run.save_adapter(policy)
    accelerator.wait_for_everyone()
    return run, state
