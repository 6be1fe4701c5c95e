"""Our RL step (rollout + GRPO update) against TRL's ``GRPOTrainer``, side by side on one workload.

    python -m bench.train [--device auto|cpu|cuda] [--full] [--rounds N] [--steps N] [--prompts short|calculation]

Both train the same model (the default SmolLM2-135M-Instruct, or ``--model``) with the same LoRA
adapter (rank 16 on q/k/v/o), on the same 4 prompts x 4 generations a step, up to 64 new tokens at
temperature 1, no KL term (beta 0), one optimizer step per batch, on the same device: fp32 on the
CPU, bf16 on a GPU. Prompts: ``short`` ones (a one-line system prompt and a calculation task's
instruction), or the calculation domain's system prompt as ``make train`` shows it (its listed
tools, about 670 tokens) with the instruction, where our shared-prefix encoding counts most. The
reward is a continuous function of the completion (distinct characters / 100), so that no group
has all-equal rewards and both do the full update.

On the CPU each engine runs as its users get it: TRL with glibc's allocator as it is, ours keeping
the memory it frees (:mod:`agents.cpu_memory`, which our CPU models turn on). Given that setting too,
TRL's step was 28% faster and the ratio 1.50 instead of 1.79 (2026-12-05, two rounds of two steps).

Each engine runs in its own process (so that peak memory is its own), one warm-up step and then
``--steps`` timed steps (quick: 1; ``--full``: 4); rounds (quick: 1; ``--full``: 2) interleave the
engines so that a shared machine's drift hits both. Reported: median seconds a step, completion
tokens per second end to end, peak memory (RSS on the CPU, allocated GPU memory on a GPU), and
ours/TRL. Target: ratio >= 1.0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import LOG_FORMAT, add_model_arguments, chosen_sizes
from train.progress import heartbeat
from envs.cli import ShowDefaults

log = logging.getLogger("bench.train")


@dataclass(frozen=True)
class Sizes:
    rounds: int
    steps: int


QUICK, FULL = Sizes(rounds=1, steps=1), Sizes(rounds=2, steps=4)
HELPS = {"rounds": "passes of each engine, interleaved", "steps": "timed steps a pass (after one warm-up step)"}

SHORT_POLICY = "You are a helpful assistant. Answer with a JSON tool call."
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
PROMPTS_PER_STEP, GENERATIONS, MAX_NEW_TOKENS, LR = 4, 4, 64, 1e-4


def reward(text: str) -> float:
    """A continuous reward, the same for both engines: distinct characters of the completion / 100."""
    return len(set(text)) / 100


def workload(kind: str, n: int) -> list[tuple[str, list[dict[str, Any]], Any]]:
    """``n`` (policy, tools, task) triples: the calculation domain's policy and listed tools, or a short policy."""
    from envs.calculation.challenger import make_tasks
    from envs.registry import env_class
    from train.config import load_config

    tasks = make_tasks(0, n)
    if kind == "short":
        return [(SHORT_POLICY, [], t) for t in tasks]
    listed = set(load_config().prompt_tools["calculation"]) | {"finish"}
    env = env_class("calculation")(tasks=tasks)
    tools = [t for t in env.tool_schemas if t["function"]["name"] in listed]
    return [(env.policy, tools, t) for t in tasks]


def run_ours(kind: str, steps: int, model: str, device: str) -> dict[str, Any]:
    """Our ``rl_step`` (the trainer's own) on a one-turn env that shows exactly the workload's prompt."""
    import dataclasses

    import gymnasium as gym
    import torch
    from accelerate import Accelerator

    from agents.decoding import SamplingSettings
    from agents.models import LoraSettings, load_policy
    from agents.policy import ModelPolicy
    from envs.registry import DOMAINS
    from envs.spaces import AnyText
    from train.config import TrainConfig
    from train.rundir import RunDir
    from train.trainer import Context, collect, make_optimizer, rl_step

    items = workload(kind, PROMPTS_PER_STEP * (steps + 1))
    by_id = {t.id: (policy, tools, t) for policy, tools, t in items}

    class OneTurn(gym.Env):
        """Shows the workload's system prompt and instruction; one action, rewarded by :func:`reward`."""

        def __init__(self, tasks: Any = None, max_turns: int = 1):
            self.task = None
            self.observation_space, self.action_space = AnyText(), AnyText()

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
            policy, tools, self.task = by_id[(options or {}).get("task_id", items[0][2].id)]
            return self.task.instruction, {"task_id": self.task.id, "domain": "bench", "tools": tools,
                                           "policy": policy}

        def step(self, action: str | None) -> Any:
            if action is None:  # a sub-env sitting out a round
                return "", 0.0, False, False, {}
            return "", reward(action), True, False, {}

    DOMAINS["bench"] = OneTurn
    torch.manual_seed(0)
    config = TrainConfig(model=model, device=device, domains=["bench"], algorithm="grpo",
                         tasks_per_step=PROMPTS_PER_STEP, group_size=GENERATIONS, max_new_tokens=MAX_NEW_TOKENS,
                         max_turns=1, temperature=1.0, lr=LR, lora_rank=16, lora_alpha=32, max_grad_norm=1.0,
                         save_trajectories=False)
    accelerator = Accelerator(cpu=device == "cpu")
    policy, tokenizer = load_policy(config.model, lora=LoraSettings(rank=16, alpha=32, target_modules=tuple(LORA_TARGETS)),
                                    device=accelerator.device)
    tasks = {t.id: dataclasses.replace(t, domain="bench") for _, _, t in items}
    player = ModelPolicy(policy, tokenizer, SamplingSettings(temperature=1.0, max_new_tokens=MAX_NEW_TOKENS))
    ctx = Context(config, accelerator, RunDir(Path("/nonexistent"), writer=False), policy, player, tasks,
                  {"bench": {"train": list(tasks), "heldout": []}})
    optimizer = make_optimizer(policy, LR, None)
    times, tokens, split = [], [], []
    for step in range(steps + 1):
        batch = [tasks[t.id] for _, _, t in items[step * PROMPTS_PER_STEP:(step + 1) * PROMPTS_PER_STEP]]
        started = time.perf_counter()
        metrics = rl_step(ctx, optimizer, collect(ctx, batch, step + 1), step + 1)["metrics"]
        took = time.perf_counter() - started
        log.info("ours: %s took %.1f s", f"step {step} of {steps}" if step else "warm-up step", took)
        if step > 0:  # the first step warms up
            times.append(took)
            tokens.append(metrics["completion_tokens"])
            split.append((metrics["rollout_s"], metrics["update_s"]))
    ctx.close()
    return {"times": times, "tokens": tokens, "generation_s": statistics.median(s[0] for s in split),
            "update_s": statistics.median(s[1] for s in split)}


def run_trl(kind: str, steps: int, model_name: str, device: str) -> dict[str, Any]:
    """TRL's ``GRPOTrainer`` on the same prompts, model, adapter and lengths; a callback times each step."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agents.models import HUB_KERNELS, load_tokenizer, pick_dtype, resolve
    from agents.prompting import ChatFormat

    tokenizer = load_tokenizer(model_name)
    chat = ChatFormat.of(tokenizer)  # the system prompt exactly as our rollouts render it
    items = workload(kind, PROMPTS_PER_STEP * (steps + 1))
    data = Dataset.from_list([{"prompt": [{"role": "system", "content": chat.system_prompt(policy, tools)},
                                          {"role": "user", "content": task.instruction}]}
                              for policy, tools, task in items])
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(resolve(model_name), dtype=pick_dtype(torch.device(device)),
                                                 use_kernels=HUB_KERNELS)  # the same layers as ours

    def reward_fn(completions: list[Any], **_: Any) -> list[float]:
        return [reward(c[-1]["content"] if isinstance(c, list) else c) for c in completions]

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.started = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter() - self.started)
            step = len(self.times) - 1
            log.info("TRL: %s took %.1f s", f"step {step} of {steps}" if step else "warm-up step", self.times[-1])

    timer = Timer()
    out = tempfile.mkdtemp(prefix="bench-trl-")
    args = GRPOConfig(output_dir=out, per_device_train_batch_size=PROMPTS_PER_STEP * GENERATIONS,
                      num_generations=GENERATIONS, max_completion_length=MAX_NEW_TOKENS, temperature=1.0, beta=0.0,
                      learning_rate=LR, max_steps=steps + 1, logging_steps=1, save_strategy="no", report_to="none",
                      use_cpu=device == "cpu", bf16=device == "cuda", seed=0, shuffle_dataset=False,
                      disable_dropout=True, disable_tqdm=True)  # the timer logs each step
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=args, train_dataset=data,
                          processing_class=tokenizer, callbacks=[timer],
                          peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"times": timer.times[1:], "tokens": [m * PROMPTS_PER_STEP * GENERATIONS for m in lengths[1:]]}


def measure(engine: str, kind: str, steps: int, model: str, device: str) -> dict[str, Any]:
    """One engine in this process, logging while it loads and steps; adds its peak memory."""
    import torch

    from train.trainer import peak_memory_gib

    log.info("%s: loading %s on %s", engine, model, device)
    with heartbeat(engine, log):
        result = (run_ours if engine == "ours" else run_trl)(kind, steps, model, device)
    result["peak_memory_gib"] = peak_memory_gib(torch.device(device))
    return result


def check_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Before any engine starts: a device this machine lacks, or a model without a tokenizer to load, ends
    the command as a bad flag does (its reason, exit code 2), not as a child's traceback."""
    from agents.models import DeviceError, ModelNotFoundError, load_tokenizer, pick_device

    try:
        pick_device(args.device)
        load_tokenizer(args.model)
    except (ModelNotFoundError, DeviceError) as error:
        parser.error(str(error))


def in_subprocess(engine: str, kind: str, steps: int, model: str, device: str) -> dict[str, Any]:
    """One engine's pass in a child process; its progress lines (stderr) show as they come."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    done = subprocess.run([sys.executable, "-m", "bench.train", "--engine", engine, "--prompts", kind,
                           "--steps", str(steps), "--model", model, "--device", device],
                          stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        log.error("bench.train --engine %s failed (exit code %d); its log is above", engine, done.returncode)
        raise SystemExit(done.returncode)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowDefaults)
    add_model_arguments(parser, QUICK, FULL, HELPS)
    parser.add_argument("--prompts", choices=("short", "calculation"), default="short",
                        help="a one-line system prompt, or the calculation domain's as make train shows it")
    parser.add_argument("--engine", choices=("ours", "trl"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = chosen_sizes(args, QUICK, FULL)
    if args.engine:  # a child: measure one engine, print JSON
        logging.basicConfig(level=logging.INFO, **LOG_FORMAT)
        print(json.dumps(measure(args.engine, args.prompts, sizes.steps, args.model, args.device)))
        return
    check_model(parser, args)
    results: dict[str, list[dict[str, Any]]] = {"ours": [], "trl": []}
    for round_ in range(sizes.rounds):
        for engine in ("ours", "trl"):
            log.info("round %d of %d, %s (%s prompts, %s)", round_ + 1, sizes.rounds, engine, args.prompts, args.device)
            results[engine].append(in_subprocess(engine, args.prompts, sizes.steps, args.model, args.device))
    rows = {}
    for engine, passes in results.items():
        times = [t for p in passes for t in p["times"]]
        tokens = [n for p in passes for n in p["tokens"]]
        rows[engine] = {"step_s": statistics.median(times), "tokens_per_s": sum(tokens) / sum(times),
                        "peak_memory_gib": max(p["peak_memory_gib"] for p in passes)}
    memory = "peak GPU GiB" if args.device == "cuda" else "peak RSS GiB"
    print(f"\nRL step, {PROMPTS_PER_STEP} prompts x {GENERATIONS} generations, <= {MAX_NEW_TOKENS} new tokens, "
          f"LoRA r16 q/k/v/o, {args.prompts} prompts, {args.device}, {sizes.rounds} rounds x {sizes.steps} steps")
    print(f"{'engine':8s} {'s/step':>8s} {'completion tok/s':>17s} {memory:>13s}")
    for engine, row in rows.items():
        print(f"{engine:8s} {row['step_s']:8.1f} {row['tokens_per_s']:17.1f} {row['peak_memory_gib']:13.2f}")
    ours = results["ours"]
    print(f"ours: generation {statistics.median(p['generation_s'] for p in ours):.1f} s, "
          f"update {statistics.median(p['update_s'] for p in ours):.1f} s a step (medians)")
    print(f"ratio ours/TRL, completion tokens/s: {rows['ours']['tokens_per_s'] / rows['trl']['tokens_per_s']:.2f} "
          f"(target >= 1.0); peak memory ours/TRL: {rows['ours']['peak_memory_gib'] / rows['trl']['peak_memory_gib']:.2f}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, **LOG_FORMAT)
    main()
