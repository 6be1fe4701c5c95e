"""The self-challenging loop, top to bottom: the challenger learns to write tasks and writes them,
then the executor trains on them.

Stages, each run once, reseeded from the run's seed and its name (so that it draws the same numbers
whichever stages ran before it) and checkpointed at its end (a killed run resumes inside the stage it was in):

1. ``challenger_warm_start``: the challenger's adapter learns the task format from demonstrations
   (:mod:`train.challenger`);
2. ``challenger_eval``, ``challenger_rl``: its funnel on fresh worlds, then RL on its own episodes
   (only with ``challenger_rl_steps``; the pool's proposals then measure the funnel after RL);
3. ``tasks``: the challenger's proposals, filtered, topped up with scripted tasks and split into
   training and held-out tasks (a given ``pool`` replaces stages 1 to 3);
4. ``eval_base``, ``warm_start``, ``eval_warm_start``, ``rl``, ``eval_rl``: the executor
   (:mod:`train.trainer`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import shlex
import signal
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed

from agents.decoding import SamplingSettings
from agents.models import (DeviceError, LoraSettings, LoraTargetError, ModelNotFoundError, adapters_in_fp32,
                           load_policy, pick_device)
from agents.policy import ModelPolicy
from envs.pool import append_pool
from envs.records import STORAGE_ERRORS, RecordsError, write_atomic
from envs.registry import DOMAINS
from eval import report
from train import challenger, trainer
from train.progress import heartbeat
from train.config import FIELD_TYPES, ConfigError, TrainConfig, check_run_name, load_config, read_settings
from train.losses import ALGORITHMS
from train.rundir import RunDir, RunState
from train.tasks import DomainMix, EmptyPoolError, Selection, is_llm, pool_tasks, split

log = logging.getLogger(__name__)

STAGES = ("challenger_warm_start", "challenger_eval", "challenger_rl", "tasks",
          "eval_base", "warm_start", "eval_warm_start", "rl", "eval_rl", "done")
EVAL_NAMES = {"eval_base": "base", "eval_warm_start": "warm_start", "eval_rl": "rl"}


def latest_run(root: Path) -> str | None:
    """The name of the run in ``root`` whose config was written last: the one ``--resume`` takes without ``--name``."""
    runs = sorted((p for p in root.glob("*") if (p / "config.yaml").exists()), key=lambda p: p.stat().st_mtime)
    return runs[-1].name if runs else None


RUN_ERRORS = (ConfigError, EmptyPoolError, RecordsError, ModelNotFoundError, DeviceError)
"""What stops a run for its user to fix (a config, a pool or another records file, a model, a device)."""


def stop_code(error: BaseException, again: str) -> int | None:
    """The exit status of a command whose runs ``error`` stopped, said in a line: 2 for
    :data:`RUN_ERRORS` and a write the disk refuses, 130 for Ctrl-C (each run has said where it
    stopped), ``again`` saying how a rerun goes on; ``None`` for anything else, a bug to raise."""
    if isinstance(error, KeyboardInterrupt):
        log.error("%s", again)
        return 130
    if isinstance(error, OSError) and error.errno in STORAGE_ERRORS:
        log.error("%s; %s", error, again)
        return 2
    if isinstance(error, RUN_ERRORS):
        log.error("%s", error)
        return 2
    return None


UNCHECKED_ON_RESUME = ("name", "resume", "runs_dir")
"""Keys a resumed run takes from the command: where the run is, and that it resumes."""


def resumed_config(config: TrainConfig, given: Collection[str]) -> TrainConfig:
    """For ``--resume``: the config the run started with (its ``config.yaml``), as a run continues as it
    started. A key the command gives another value (a ``--set``, a ``--key``, or any key of a ``--config``
    file) is an error naming it; the same value is fine. With no run to resume, ``config`` as it is
    (:func:`run_folder` then says so), validated."""
    check_run_name(config.name)
    root = Path(config.runs_dir)
    name = config.name or latest_run(root)
    if name is None or not (root / name / "config.yaml").is_file():
        config.validate()
        return config
    if not read_settings(root / name / "config.yaml"):  # written whole as the run began: emptied since
        raise ConfigError("resume", f"{root / name / 'config.yaml'} is empty: the run's config is lost, so it "
                                    "cannot go on as it started; put it back, or start a new run with another --name")
    saved = load_config(root / name / "config.yaml", {key: getattr(config, key) for key in UNCHECKED_ON_RESUME})
    changed = [key for key in FIELD_TYPES if key in given and key not in UNCHECKED_ON_RESUME
               and getattr(config, key) != getattr(saved, key)]
    if changed:
        also = f"; also differing: {', '.join(changed[1:])}" if changed[1:] else ""
        raise ConfigError(changed[0], f"{root / name} started with {changed[0]}={getattr(saved, changed[0])!r}, "
                                      f"this command gives {getattr(config, changed[0])!r}: a resumed run goes on "
                                      "with its own config, so leave the key out (or start afresh elsewhere: another "
                                      f"--name for python -m train, another --out for train.experiment){also}")
    return replace(saved, name=name)


def run_folder(config: TrainConfig, accelerator: Accelerator, default_name: str) -> RunDir:
    """The run's folder, not made yet: the main process picks it (a new name, or the run to resume)
    and checks it; every process gets the same name, or the same error."""
    root = Path(config.runs_dir)
    name, problem = config.name or f"{default_name}-{time.strftime('%Y%m%d-%H%M%S')}", None
    existing = next(p for p in (root, *root.parents) if p.exists())  # the folder, or the one it will be made in
    if not existing.is_dir():  # (a file's "sub-folder" fails only after the model has loaded: NotADirectoryError)
        raise ConfigError("runs_dir", f"{existing} is a file, not a folder of runs")
    if accelerator.is_main_process:
        if config.resume and not config.name:
            name = latest_run(root) or name
        held = (root / name / "config.yaml").exists()
        if config.resume and not held:
            problem = ("resume", f"there is no run {root / name} to resume" if config.name else f"there is no run in {root}")
        if not config.resume and held:
            problem = ("name", f"{root / name} already holds a run: pass --resume to continue it, or another --name")
    name, problem = broadcast_object_list([name, problem])
    if problem:
        raise ConfigError(*problem)
    return RunDir(root / name, writer=accelerator.is_main_process)


def open_run(run: RunDir, config: TrainConfig, accelerator: Accelerator) -> None:
    """Make the run's folder and write its config: once the model has loaded, so that a run that
    never started leaves no folder behind."""
    if accelerator.is_main_process:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config({**config.to_dict(), "name": run.path.name, "resume": False})
    accelerator.wait_for_everyone()


TRACKER_NAME_OUTSIDE = re.compile(r"[^-/.\w]", re.ASCII)
"""What a tracker's metric name may not hold: every tracker takes ASCII letters, digits and ``_-./`` (TensorBoard
writes anything else as ``_``; mlflow refuses the rest, ``rl@2`` among them, and stops the run)."""


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics record as a tracker's flat scalars, named ``phase/stage/domain/key`` (nested dicts
    such as an evaluation's per-domain success go one level deeper, and each character that a tracker
    may refuse is ``_``): what TensorBoard plots."""
    prefix = "/".join(str(record[k]) for k in ("phase", "stage", "domain") if k in record)
    flat: dict[str, float] = {}

    def add(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{name}/{key}", inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[TRACKER_NAME_OUTSIDE.sub("_", name)] = float(value)

    for key, value in record.items():
        if key not in ("step", "phase", "stage", "domain"):
            add(f"{prefix}/{key}", value)
    return flat


def track(run: RunDir, config: TrainConfig, accelerator: Accelerator, from_checkpoint: bool) -> None:
    """Send the run's metrics to ``report_to``'s trackers as well: under the run folder's name in
    ``tracker_project``, and what a tracker writes here in ``<run>/trackers``.

    A run resumed from a checkpoint goes on in the same tracker run where the tracker allows it:
    wandb's run of the id kept in ``<run>/trackers/wandb-id`` (wandb takes no step twice, so the steps that the
    resume redoes keep the values the first try logged); mlflow's of the id kept in ``<run>/trackers/mlflow-run-id``
    (mlflow keeps every value, so a step the resume redoes has two). TensorBoard hides all that earlier tries wrote
    (``purge_step`` 0), and the metrics the checkpoint kept are sent again: a killed run's writer had not yet
    written its last ones out."""
    if not config.report_to:
        return
    folder = run.path / "trackers"
    kwargs: dict[str, dict[str, Any]] = {"wandb": {"name": run.path.name, "dir": str(folder)},
                                         "mlflow": {"run_name": run.path.name}}
    if accelerator.is_main_process:
        folder.mkdir(exist_ok=True)
        if "wandb" in config.report_to:
            kwargs["wandb"].update(id=wandb_id(folder, new=not from_checkpoint), resume="allow")
        if "mlflow" in config.report_to and from_checkpoint and (kept := mlflow_run_id(folder)):
            kwargs["mlflow"]["run_id"] = kept
        if config.resume:
            kwargs["tensorboard"] = {"purge_step": 0}
    accelerator.project_configuration.logging_dir = str(folder)  # known only now; trackers start below
    start_trackers(run, config, accelerator, kwargs)
    if "mlflow" in config.report_to and accelerator.is_main_process:
        write_atomic(folder / "mlflow-run-id", accelerator.get_tracker("mlflow", unwrap=True).info.run_id)
    if config.resume and "tensorboard" in config.report_to and accelerator.is_main_process:
        tensorboard = accelerator.get_tracker("tensorboard", unwrap=False)
        for record in run.read_metrics():
            tensorboard.log(scalars(record), step=record.get("step", 0))
    run.tracker = lambda record: accelerator.log(scalars(record), step=record.get("step", 0))


def resume_command(run: RunDir) -> str:
    """The command that continues ``run``, quoted for a shell: a path with a space pasted as it is would be two."""
    return shlex.join(["python", "-m", "train", "--runs-dir", str(run.path.parent), "--name", run.path.name,
                       "--resume"])


def start_trackers(run: RunDir, config: TrainConfig, accelerator: Accelerator,
                   kwargs: dict[str, dict[str, Any]]) -> None:
    """accelerate's ``init_trackers``; a tracker that cannot start (not logged in, a server out of reach) is a
    config error saying how to continue the run, once the trackers that did start are finished."""
    # without the keys a resume takes from its command (`resume` changes): mlflow refuses to log a parameter again
    # with another value
    settings = {key: value for key, value in config.to_dict().items()
                if isinstance(value, (int, float, str, bool)) and key not in UNCHECKED_ON_RESUME}
    try:
        accelerator.init_trackers(config.tracker_project, config=settings, init_kwargs=kwargs)
    except BaseException as error:  # (or Ctrl-C at wandb's login prompt: raised as it is, once they are finished)
        for tracker in accelerator.trackers:
            with contextlib.suppress(AttributeError):  # (accelerate's trackers that never started have no run)
                tracker.finish()
        accelerator.trackers = []
        if not isinstance(error, Exception):
            raise
        raise ConfigError("report_to", f"a tracker ({', '.join(config.report_to)}) could not start "
                                       f"({type(error).__name__}: {str(error)[:300]}); the run is kept: once it can, "
                                       f"continue it with `{resume_command(run)}`") from None


def wandb_id(folder: Path, new: bool) -> str:
    """The run's wandb id, kept in ``folder``: a ``new`` one for a run that starts from its first step, the
    kept one for a run resumed from a checkpoint."""
    kept = folder / "wandb-id"
    if new or not kept.is_file():
        made = secrets.token_hex(8)
        write_atomic(kept, made)
        return made
    return kept.read_text().strip()


def mlflow_run_id(folder: Path) -> str | None:
    """The id of the mlflow run kept in ``folder``, if the tracking store (``MLFLOW_TRACKING_URI``) still holds
    it: one it does not (another store, a deleted database) would fail every resume, so the run then goes on in a
    new mlflow run."""
    import mlflow

    kept = folder / "mlflow-run-id"
    if not kept.is_file():
        return None
    run_id = kept.read_text().strip()
    try:
        mlflow.MlflowClient().get_run(run_id)
    except Exception as error:  # (a store out of reach: starting the tracker then fails, saying so)
        if getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            log.warning("mlflow has no run %s (the id kept in %s) in %s: the run goes on in a new mlflow run",
                        run_id, kept, mlflow.get_tracking_uri())
            return None
    return run_id


def write_tasks(ctx: trainer.Context, step: int) -> None:
    """The ``tasks`` stage at the run's ``step``: the run's pool (the challenger's and scripted tasks, or the
    given pool), how each domain's were made, and the split; written by the main process, read by every one."""
    config, run = ctx.config, ctx.run
    if ctx.accelerator.is_main_process:
        if config.pool:
            tasks = pool_tasks(config.pool, config.domains, Selection.of(config))
            mix = {d: asdict(DomainMix(llm=sum(t.domain == d and is_llm(t) for t in tasks),
                                       scripted=sum(t.domain == d and not is_llm(t) for t in tasks)))
                   for d in config.domains}
        else:
            tasks, mix = challenger.write_tasks(ctx, step)
        if config.heldout_pool:
            held = pool_tasks(config.heldout_pool, config.domains, Selection.of(config))
            parts = {d: {"train": [t.id for t in tasks if t.domain == d], "heldout": [t.id for t in held if t.domain == d]}
                     for d in config.domains}
            tasks = tasks + held
        else:
            parts = split(tasks, config.domains, config.heldout_per_domain, config.seed)
        run.pool.unlink(missing_ok=True)  # a pool half-written by a run killed here
        append_pool(run.pool, tasks)
        write_atomic(run.tasks, json.dumps(mix, indent=1))
        write_atomic(run.split, json.dumps(parts, indent=1))  # last: its presence means the pool is complete
    ctx.accelerator.wait_for_everyone()
    read_tasks(ctx)


def read_tasks(ctx: trainer.Context) -> None:
    """The run's pool and split, once the ``tasks`` stage has written them (:meth:`RunDir.read_tasks`)."""
    ctx.tasks, ctx.split = ctx.run.read_tasks(ctx.config.domains)


def restore(ctx: trainer.Context) -> tuple[RunState, dict[str, Any] | None]:
    """The state to start from: the last checkpoint's when resuming (logs cut back to its lines)."""
    checkpoint = ctx.run.latest_checkpoint() if ctx.config.resume else None
    if checkpoint is None:  # the logs start empty
        ctx.run.truncate({path.name: 0 for path in ctx.run.logs})
        return RunState(stage=next_stage(None, ctx.config)), None
    try:
        state, optimizer_state = ctx.run.load_checkpoint(checkpoint, ctx.policy)
    except Exception as error:  # written atomically, so damaged since: the run cannot go on from it
        raise ConfigError("resume", f"the checkpoint {checkpoint} cannot be read ({type(error).__name__}: "
                                    f"{str(error)[:300]}): start a new run with another --name") from None
    ctx.run.truncate(state.lines)
    log.info("resuming %s at step %d (stage %s, %d updates into it)", ctx.run.path, state.step, state.stage,
             state.phase_step)
    return state, optimizer_state


def next_stage(stage: str | None, config: TrainConfig) -> str:
    """The stage after ``stage`` (the first for ``None``), skipping those with nothing to do."""
    skipped = set()
    if not config.challenger_domain_list():
        skipped |= {"challenger_warm_start", "challenger_eval", "challenger_rl"}
    if config.challenger_warm_start_epochs == 0 or config.challenger_adapter:
        skipped.add("challenger_warm_start")
    if config.challenger_rl_steps == 0:
        skipped |= {"challenger_eval", "challenger_rl"}
    if not config.eval_base:
        skipped.add("eval_base")
    if config.warm_start_epochs == 0:
        skipped |= {"warm_start", "eval_warm_start"}
    if config.steps == 0:
        skipped |= {"rl", "eval_rl"}
    following = STAGES[STAGES.index(stage) + 1:] if stage else STAGES
    return next(s for s in following if s not in skipped)


def write_report(run: RunDir) -> Path | None:
    """The run's ``report.md`` and its plots, from its files (main process; others get ``None``)."""
    return report.write_run_page(run.path) if run.writer else None


def load(config: TrainConfig, accelerator: Accelerator) -> ModelPolicy:
    """The base model with the executor's fresh LoRA adapter (and the challenger's, fresh or the given
    ``challenger_adapter``, when the run has one), both trained in fp32 even on a bf16 model; the
    executor's active."""
    targets = config.lora_targets if config.lora_targets == "all-linear" else tuple(config.lora_targets.split(","))
    lora = LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha, target_modules=targets)
    try:
        policy, tokenizer = load_policy(config.model, lora=lora, device=accelerator.device)
    except LoraTargetError as error:
        raise ConfigError("lora_targets", str(error)) from None
    if config.challenger_adapter:
        policy.load_adapter(config.challenger_adapter, adapter_name=challenger.ADAPTER, is_trainable=True)
        policy.set_adapter("default")
    elif config.challenger_domain_list():
        policy.add_adapter(challenger.ADAPTER, lora.config())
        policy.set_adapter("default")
    adapters_in_fp32(policy)
    if config.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.enable_input_require_grads()
    return ModelPolicy(policy, tokenizer, SamplingSettings(temperature=config.temperature,
                                                           max_new_tokens=config.max_new_tokens,
                                                           max_context_tokens=config.max_context_tokens or None),
                       adapter="default")


def note_ctrl_c(run: RunDir) -> Callable[[], None]:
    """Ctrl-C raises KeyboardInterrupt as ever, and also sets ``run.stop_requested``: Python drops a
    KeyboardInterrupt raised inside a finalizer or a weakref callback ("Exception ignored in ..."),
    and the run went on to its end. Returns what puts Python's handler back. (Where Ctrl-C is
    ignored, as for a job started in the background, it stays ignored.)"""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler \
            or threading.current_thread() is not threading.main_thread():
        return lambda: None

    def pressed(signum: int, frame: Any) -> None:
        run.stop_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, pressed)
    return lambda: signal.signal(signal.SIGINT, signal.default_int_handler)


def check_pools(config: TrainConfig) -> None:
    """The given pools, before anything loads: each holds tasks of every domain, and none of the held-out
    pool's tasks is in the training pool (a task trained on measures nothing held out)."""
    selection = Selection.of(config)
    train_ids = {t.id for t in pool_tasks(config.pool, config.domains, selection)} if config.pool else set()
    if config.heldout_pool:
        shared = sorted(train_ids & {t.id for t in pool_tasks(config.heldout_pool, config.domains, selection)})
        if shared:
            raise ConfigError("heldout_pool", f"{config.heldout_pool} shares {len(shared)} tasks with pool "
                                              f"{config.pool} ({', '.join(shared[:3])}): a held-out task is never "
                                              "trained on, so give pools without a task in common")


def train(config: TrainConfig, default_name: str = "run") -> tuple[RunDir, RunState]:
    """Run (or resume) the whole loop; returns the run folder and its final state."""
    for name, entry in config.extra_domains.items():
        DOMAINS[name] = entry
    pick_device(config.device)  # a device this machine lacks: say so before anything loads
    if config.distill_path and ALGORITHMS[config.algorithm].offline and not Path(config.distill_path).is_file():
        raise ConfigError("distill_path", f"{config.distill_path} is not a file of trajectories (JSONL)")
    check_pools(config)
    if config.challenger_adapter and not (Path(config.challenger_adapter) / "adapter_config.json").is_file():
        raise ConfigError("challenger_adapter", f"{config.challenger_adapter} holds no LoRA adapter (no "
                                                "adapter_config.json): name the folder a run saved its challenger in")
    accelerator = Accelerator(cpu=config.device == "cpu", log_with=config.report_to or None,
                              project_dir=config.runs_dir)
    set_seed(config.seed)
    run = run_folder(config, accelerator, default_name)
    try:
        player = load(config, accelerator)
    except KeyboardInterrupt:
        log.error("interrupted while loading the model: nothing of the run was written")
        raise
    open_run(run, config, accelerator)
    ctx = trainer.Context(config, accelerator, run, player.model, player, {}, {})
    stage_functions = {
        "challenger_warm_start": challenger.warm_start, "challenger_rl": challenger.reinforce,
        "warm_start": trainer.warm_start, "rl": trainer.reinforce,
    }
    state: RunState | None = None
    restore_ctrl_c = note_ctrl_c(run)
    try:
        state, optimizer_state = restore(ctx)
        track(run, config, accelerator, from_checkpoint=state.saves > 0)
        if STAGES.index(state.stage) > STAGES.index("tasks"):  # written by then: one gone since is an error
            read_tasks(ctx)
        while state.stage != "done":
            stage, started = state.stage, time.perf_counter()
            if state.phase_step == 0:  # a stage resumed midway has its RNG states from the checkpoint
                set_seed(trainer.step_seed(config, f"stage-{stage}", 0, 0))  # the same draws whatever ran before
            trainer.reset_peak_memory(accelerator.device)
            with heartbeat(stage.replace("_", " "), log):
                if stage in EVAL_NAMES:
                    state.evals[EVAL_NAMES[stage]] = trainer.evaluate(ctx, EVAL_NAMES[stage], state.step)
                elif stage == "challenger_eval":
                    challenger.evaluate(ctx, "warm_start", state.step)
                elif stage == "tasks":
                    write_tasks(ctx, state.step)
                else:
                    stage_functions[stage](ctx, state, optimizer_state)
            run.log_metrics({"step": state.step, "phase": "stage", "stage": stage,
                             "seconds": time.perf_counter() - started,
                             "peak_memory_gib": trainer.peak_memory_gib(accelerator.device)})
            optimizer_state = None
            state.stage, state.phase_step, state.cursor = next_stage(stage, config), 0, {"epoch": 0, "index": 0}
            run.save_checkpoint(player.model, None, state)
            write_report(run)
        run.save_adapter(player.model)
    except (KeyboardInterrupt, OSError) as error:  # Ctrl-C; a full disk, say
        what = "interrupted" if isinstance(error, KeyboardInterrupt) else f"stopped by {error}"
        where = f"in stage {state.stage} at step {state.step}" if state else "while the run was starting"
        log.error("%s %s: the run keeps what its last checkpoint holds; continue it with `%s`", what, where,
                  resume_command(run))
        raise
    finally:
        restore_ctrl_c()
        ctx.close()
        for tracker in accelerator.trackers:  # not end_training(): it also ends the process group
            tracker.finish()
    accelerator.wait_for_everyone()
    return run, state
