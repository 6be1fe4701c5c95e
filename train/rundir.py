"""A run's folder, and the checkpoints that let a killed run continue exactly where it stopped.

```
runs/<name>/
  config.yaml          the resolved config
  pool.jsonl           the tasks the run wrote (or a copy of the pool it was given)
  split.json           which task ids train and which are held out; tasks.json: how they were made
  metrics.jsonl        one line per update and per evaluation, each with its step
  trajectories.jsonl   every episode (messages, reward), each with its step
  checkpoints/step-000012/   adapter (peft format), optimizer.pt, rng.pt, state.json
  adapter/             the final adapter (peft format, for eval --adapter); adapter/challenger/ the
                       challenger's, when the run trained one (python -m agents.challenge --adapter)
  plots/*.png
```

A checkpoint is written to a temporary folder, flushed to disk, and renamed into place: a
checkpoint folder that exists is complete, whenever the process was killed; a save the disk refuses
removes the temporary folder and is the OSError it is (a full disk: exit code 2, saying how to
continue). It records how many lines metrics.jsonl, trajectories.jsonl and parsed.jsonl held when it
was taken; resuming cuts the files back to those lines (dropping a half-written last line too), and
the work after the checkpoint is run, and logged, once more: every step, evaluation and proposal ends
up logged exactly once.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from peft import PeftModel, set_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file

from envs.cat import CodeAsTask
from envs.pool import load_pool
from envs.records import RecordsError, append_jsonl, read_jsonl, read_lines, write_atomic

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step-"


@dataclass
class RunState:
    """Where a run stands: what a checkpoint holds besides weights and RNG states."""

    stage: str
    """The next stage to run (see :data:`train.run.STAGES`)."""
    step: int = 0
    """Updates done so far, warm start and RL together; metrics are keyed by it."""
    phase_step: int = 0
    """Updates done in the current stage."""
    cursor: dict[str, int] = field(default_factory=lambda: {"epoch": 0, "index": 0})
    """The data cursor of the current stage (see :class:`train.trainer.Cursor`)."""
    evals: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Held-out success per stage ("base", "warm_start", "rl") and domain."""
    lines: dict[str, int] = field(default_factory=dict)
    """Lines of metrics.jsonl and trajectories.jsonl when the checkpoint was taken."""
    saves: int = 0
    """Checkpoints saved so far: the last part of a checkpoint's name, so that no two share one."""


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


OS_ERROR_NUMBER = re.compile(r"\(os error (\d+)\)|\bOs \{ code: (\d+)")
"""The OS's error number in a safetensors write failure: "I/O error: No space left on device (os error 28)"
(older versions: "IoError(Os { code: 28, ... })"). Any other SafetensorError is no write failure."""


def _write_failure(error: Exception, target: Path) -> OSError | None:
    """The OSError behind a failed save of ``target``, or ``None`` where no write failed (a bug, raised as it
    is). A full disk reaches us as a SafetensorError (peft's save_pretrained) or a RuntimeError with the
    OSError as its context (:func:`_torch_save`), neither an OSError: a command would show a traceback, not
    the full disk it is (exit code 2, saying how to continue the run)."""
    if isinstance(error, OSError):
        return error
    if isinstance(error, SafetensorError) and (found := OS_ERROR_NUMBER.search(str(error))):
        number = int(found[1] or found[2])
        return OSError(number, os.strerror(number), str(target))
    if isinstance(error, RuntimeError) and isinstance(error.__context__, OSError) and error.__context__.errno:
        return OSError(error.__context__.errno, error.__context__.strerror, str(target))
    return None


@contextlib.contextmanager
def _saving(tmp: Path, target: Path) -> Iterator[None]:
    """Write into ``tmp``, a fresh folder that becomes ``target``. A failed save removes it (on a full disk it
    holds space that a resume needs) and is raised as the OSError saying why (:func:`_write_failure`)."""
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = _write_failure(error, target) if isinstance(error, Exception) else None
        if failure is None or failure is error:
            raise
        raise failure from error


def _torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a Python file: a failed write then leaves the OSError saying why (the context of
    torch's RuntimeError), where torch's own file writer says only "unexpected pos"."""
    with open(path, "wb") as handle:
        torch.save(obj, handle)


def _damaged(path: Path, problem: str) -> RecordsError:
    """The error for a file the run wrote whole that is ``problem`` now: changed or removed since, and the
    run cannot go on without it (exit code 2, naming it, as a damaged checkpoint does)."""
    return RecordsError(f"{path} {problem}: the run cannot go on without it; put the file back, or start a new "
                        "run with another --name")


def _read_json(path: Path) -> Any:
    """A JSON file the run wrote whole (:func:`write_atomic`), so one that is gone or does not parse was
    damaged since: :func:`_damaged`, not a traceback."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise _damaged(path, "is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(path, f"is not valid JSON ({error})") from None


def _split_fits(split: Any, tasks: dict[str, CodeAsTask], domains: Sequence[str]) -> bool:
    """Whether ``split`` names, for each domain, training and held-out ids of tasks in the pool, as
    :func:`train.tasks.split` writes it."""
    parts = [split.get(domain) for domain in domains] if isinstance(split, dict) else [None]
    return all(isinstance(ids, dict) and all(isinstance(ids.get(part), list) for part in ("train", "heldout"))
               and all(isinstance(i, str) and i in tasks for i in ids["train"] + ids["heldout"]) for ids in parts)


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RunDir:
    """The files of one run; only the main process writes (others read checkpoints on resume)."""

    def __init__(self, path: Path, writer: bool = True):
        self.path = path
        self.writer = writer
        self.config = path / "config.yaml"
        self.pool = path / "pool.jsonl"
        self.split = path / "split.json"
        self.tasks = path / "tasks.json"
        self.metrics = path / "metrics.jsonl"
        self.trajectories = path / "trajectories.jsonl"
        self.parsed = path / "parsed.jsonl"
        """Every challenger proposal that parsed, with the stage it reached (:func:`train.challenger.propose`)."""
        self.checkpoints = path / "checkpoints"
        self.adapter = path / "adapter"
        self.lines: dict[str, int] = {logged.name: 0 for logged in self.logs}
        self.stop_requested = False
        """Set by a Ctrl-C (:func:`train.run.note_ctrl_c`): the next checkpoint, once saved, stops the run."""
        self.tracker: Callable[[dict[str, Any]], None] | None = None
        """Also gets every metrics record (the config's ``report_to``); metrics.jsonl stays the record."""

    # ------------------------------------------------------------------ lines keyed by step

    def append(self, path: Path, records: list[dict[str, Any]]) -> None:
        """Append JSON lines and flush them to disk (main process only)."""
        if not self.writer or not records:
            return
        append_jsonl(path, records, separators=(",", ":"))
        self.lines[path.name] = self.lines.get(path.name, 0) + len(records)

    def log_metrics(self, record: dict[str, Any]) -> None:
        self.append(self.metrics, [record])
        if self.writer and self.tracker is not None:
            self.tracker(record)

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics)

    @property
    def logs(self) -> tuple[Path, ...]:
        """The files appended to as the run goes, whose lines a checkpoint counts."""
        return self.metrics, self.trajectories, self.parsed

    def truncate(self, lines: dict[str, int]) -> None:
        """Cut the logs back to their first ``lines[name]`` lines (resume); one the checkpoint does not
        count (parsed.jsonl, by a checkpoint from before it was counted) is left as it is."""
        self.lines = {path.name: lines[path.name] if path.name in lines else len(read_lines(path))
                      for path in self.logs}
        if not self.writer:
            return
        for path in self.logs:
            if path.exists():  # the lines as written: what came after them (cut off here) is never read
                with open(path, "rb") as handle:
                    kept = b"".join(itertools.islice(handle, self.lines[path.name]))
                write_atomic(path, kept)  # byte for byte: a line that is not UTF-8 stays an error to read

    # ------------------------------------------------------------------ tasks

    def read_tasks(self, domains: Sequence[str]) -> tuple[dict[str, CodeAsTask], dict[str, dict[str, list[str]]]]:
        """The run's tasks by id and its split, once the ``tasks`` stage wrote them. A resume finds them as
        they were written, or stops here naming the file that is gone or damaged; tasks.json too, which the
        report reads at each stage's end (a run from before it was written has none, which is fine)."""
        if not self.pool.is_file():
            raise _damaged(self.pool, "is missing")
        tasks = {t.id: t for t in load_pool(self.pool)}
        split = _read_json(self.split)
        if not _split_fits(split, tasks, domains):
            raise _damaged(self.split, f"does not list training and held-out ids of {self.pool}'s tasks for each "
                                      f"domain ({', '.join(domains)})")
        if self.tasks.exists() and not isinstance(_read_json(self.tasks), dict):
            raise _damaged(self.tasks, "is not a JSON object of domains")
        return tasks, split

    # ------------------------------------------------------------------ checkpoints

    def latest_checkpoint(self) -> Path | None:
        if not self.checkpoints.is_dir():
            return None
        done = sorted(p for p in self.checkpoints.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and p.is_dir())
        return done[-1] if done else None

    def save_checkpoint(self, policy: PeftModel, optimizer: torch.optim.Optimizer | None, state: RunState) -> None:
        """Adapter, optimizer, RNG states and run state, atomically, under a name never used before
        (a stage can end on the step of the last periodic checkpoint); then the older ones go. A
        Ctrl-C the run has not stopped at (:attr:`stop_requested`) stops it here, once it is saved."""
        if self.writer:
            self._save_checkpoint(policy, optimizer, state)
        if self.stop_requested:
            raise KeyboardInterrupt

    def _save_checkpoint(self, policy: PeftModel, optimizer: torch.optim.Optimizer | None, state: RunState) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        state.saves += 1
        final = self.checkpoints / f"{CHECKPOINT_PREFIX}{state.step:06d}-{state.saves:05d}"
        tmp = self.checkpoints / f".tmp-{final.name}"
        with _saving(tmp, final):
            policy.save_pretrained(tmp / "adapter")
            if optimizer is not None:
                _torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
            _torch_save(rng_states(), tmp / "rng.pt")
            state.lines = dict(self.lines)
            (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))
            _fsync_tree(tmp)
            tmp.rename(final)
        for old in self.checkpoints.iterdir():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, checkpoint: Path, policy: PeftModel) -> tuple[RunState, dict[str, Any] | None]:
        """Restore the adapter weights and RNG states; the run state and the optimizer's state dict."""
        saved = checkpoint / "adapter"  # the active adapter at the top, any other in a folder of its name
        for name in policy.peft_config:
            folder = saved if name == "default" else saved / name
            if not (folder / "adapter_model.safetensors").is_file():
                raise RuntimeError(f"checkpoint {checkpoint} has no weights of adapter {name!r}")
            weights = load_file(str(folder / "adapter_model.safetensors"))
            result = set_peft_model_state_dict(policy, weights, adapter_name=name)
            if getattr(result, "unexpected_keys", None):
                raise RuntimeError(f"checkpoint {checkpoint} does not fit this model: {result.unexpected_keys[:3]}")
        set_rng_states(torch.load(checkpoint / "rng.pt", weights_only=False))
        optimizer = checkpoint / "optimizer.pt"
        optimizer_state = torch.load(optimizer, weights_only=False) if optimizer.exists() else None
        state = RunState(**json.loads((checkpoint / "state.json").read_text()))
        return state, optimizer_state

    def save_adapter(self, policy: PeftModel) -> None:
        """The final adapter, in peft's format, renamed into place like a checkpoint."""
        if not self.writer:
            return
        tmp = self.path / ".tmp-adapter"
        with _saving(tmp, self.adapter):
            policy.save_pretrained(tmp)
            _fsync_tree(tmp)
            shutil.rmtree(self.adapter, ignore_errors=True)
            tmp.rename(self.adapter)

    def write_config(self, config: dict[str, Any]) -> None:
        if self.writer:
            write_atomic(self.config, yaml.safe_dump(config, sort_keys=False))
