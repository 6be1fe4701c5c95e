"""A run killed with SIGKILL resumes from its last checkpoint: same steps, every metric exactly once.

The trainer runs as a subprocess and is killed as soon as step ``k - 1`` is logged (so during step
``k`` or while checkpointing it), twice at different steps; ``--resume`` then finishes the run. Its
metrics hold every step once, in order, with the rewards an uninterrupted run logs, and its last
checkpoint and final adapter load.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_train_learning import tensorboard_scalars
from test_train_support import bandit_model_dir, bandit_pool
from envs.records import read_jsonl
from train.rundir import RunDir, RunState
from train.run import scalars

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6


def command(tmp_path: Path, name: str, model: Path, pool: Path, resume: bool = False, *more: str) -> list[str]:
    args = [sys.executable, "-m", "train", "--name", name, "--runs-dir", str(tmp_path / "runs"),
            "--model", str(model), "--pool", str(pool), "--domains", "bandit",
            "--extra-domains", "{bandit: test_train_support:BanditEnv}", "--rl-domains", "bandit",
            "--warm-start-epochs", "0", "--algorithm", "grpo", "--steps", str(STEPS), "--tasks-per-step", "4",
            "--group-size", "4", "--lr", "0.02", "--max-turns", "1", "--max-new-tokens", "1", "--lora-rank", "8",
            "--heldout-per-domain", "{bandit: 4}", "--eval-every", "2", "--checkpoint-every", "1", "--device", "cpu",
            "--prompt-tools", "{}", "--max-solution-actions", "{}", "--challenger-proposals", "0", "--eval-base"]
    return args + (["--resume"] if resume else []) + list(more)


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "HF_HUB_OFFLINE": "1"}


def metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written right now
    return lines


def interruptible() -> None:
    """SIGINT as a terminal's Ctrl-C sends it: a command started in the background by a non-interactive shell (a CI
    script's ``&``) inherits it ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_when_logged(cmd: list[str], run: Path, step: int, sig: int = signal.SIGKILL,
                     stderr: Path | None = None) -> int:
    """Start ``cmd`` and send it ``sig`` as soon as a metric line of ``step`` appears; its exit code."""
    with open(stderr or os.devnull, "w") as err:
        process = subprocess.Popen(cmd, cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL, stderr=err,
                                   preexec_fn=interruptible)
        deadline = time.monotonic() + 300
        try:
            while not any(m.get("step") == step for m in metrics(run)):
                assert process.poll() is None, "the run ended before it could be killed"
                assert time.monotonic() < deadline, "the run did not reach the step in time"
                time.sleep(0.02)
        finally:
            process.send_signal(sig)
            code = process.wait(timeout=120)
    return code


def finish(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_run_killed_twice_resumes_to_the_same_steps_with_each_metric_once(tmp_path):
    model = bandit_model_dir(tmp_path / "model")
    pool = bandit_pool(tmp_path / "pool.jsonl")
    run, tensorboard = tmp_path / "runs" / "killed", ("--report-to", "tensorboard")
    kill_when_logged(command(tmp_path, "killed", model, pool, False, *tensorboard), run, step=2)
    kill_when_logged(command(tmp_path, "killed", model, pool, True, *tensorboard), run, step=4)
    finish(command(tmp_path, "killed", model, pool, True, *tensorboard))
    finish(command(tmp_path, "whole", model, pool))

    killed, whole = metrics(run), metrics(tmp_path / "runs" / "whole")
    rl_steps = [m["step"] for m in killed if m["phase"] == "rl"]
    assert rl_steps == list(range(1, STEPS + 1)), "every step logged exactly once, in order"
    evals = [(m["stage"], m["step"]) for m in killed if m["phase"] == "eval"]
    assert evals == [("base", 0), ("rl@2", 2), ("rl@4", 4), ("rl", STEPS)]

    def rewards(lines: list[dict]) -> list[float]:
        return [m["reward_mean"] for m in lines if m["phase"] == "rl"]

    assert rewards(killed) == rewards(whole), "the resumed run played what the uninterrupted one did"
    shown: dict[str, list] = {}
    for m in killed:
        for tag, value in scalars(m).items():
            shown.setdefault(tag, []).append((m["step"], pytest.approx(value)))
    assert tensorboard_scalars(run / "trackers" / "self-challenge") == shown, \
        "TensorBoard shows each metric once, as metrics.jsonl"
    episodes = [json.loads(line) for line in (run / "trajectories.jsonl").read_text().splitlines()]
    per_step = [sum(1 for e in episodes if e["phase"] == "rl" and e["step"] == s) for s in range(1, STEPS + 1)]
    assert per_step == [16] * STEPS, "trajectories too: each step's episodes once"
    checkpoints = list((run / "checkpoints").iterdir())
    assert len(checkpoints) == 1 and checkpoints[0].name.startswith(f"step-{STEPS:06d}-"), \
        "one complete checkpoint, no temporary folder"
    assert json.loads((checkpoints[0] / "state.json").read_text())["stage"] == "done"
    assert (run / "adapter" / "adapter_model.safetensors").exists()


def test_ctrl_c_stops_a_run_saying_how_to_continue_it_and_resume_loses_no_step(tmp_path):
    model = bandit_model_dir(tmp_path / "model")
    pool = bandit_pool(tmp_path / "pool.jsonl")
    run, err = tmp_path / "runs" / "stopped", tmp_path / "stderr.log"
    stopped = kill_when_logged(command(tmp_path, "stopped", model, pool), run, step=3, sig=signal.SIGINT, stderr=err)
    assert stopped == 130
    said = err.read_text()
    assert "Traceback" not in said and "--name stopped --resume" in said
    finish(command(tmp_path, "stopped", model, pool, resume=True))
    assert [m["step"] for m in metrics(run) if m["phase"] == "rl"] == list(range(1, STEPS + 1))
    (checkpoint,) = (run / "checkpoints").iterdir()
    (checkpoint / "state.json").write_text("")  # damaged since it was written
    damaged = subprocess.run(command(tmp_path, "stopped", model, pool, resume=True), cwd=ROOT, env=environment(),
                             capture_output=True, text=True, timeout=600)
    assert damaged.returncode == 2 and "cannot be read (JSONDecodeError" in damaged.stderr
    assert "Traceback" not in damaged.stderr


def test_resume_cuts_the_logs_back_to_the_checkpoints_lines_without_reading_past_them(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.metrics.write_bytes(b'{"step": 1}\n{"step": 2}\n{"step": 3, "cut": \x00\x00\xff')  # a crash's tail
    run.truncate({"metrics.jsonl": 2})
    assert run.read_metrics() == [{"step": 1}, {"step": 2}]


def test_resume_cuts_the_proposals_back_too_and_keeps_those_a_checkpoint_from_before_did_not_count(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    assert run.lines == {"metrics.jsonl": 0, "trajectories.jsonl": 0, "parsed.jsonl": 0}, "a checkpoint counts them all"
    run.append(run.parsed, [{"id": "a"}, {"id": "b"}])
    run.truncate({"metrics.jsonl": 0, "parsed.jsonl": 1})  # the proposals after the checkpoint are made again
    assert read_jsonl(run.parsed) == [{"id": "a"}]
    run.append(run.parsed, [{"id": "b"}])
    run.truncate({"metrics.jsonl": 0})
    assert read_jsonl(run.parsed) == [{"id": "a"}, {"id": "b"}] and run.lines["parsed.jsonl"] == 2


def test_a_process_that_is_not_the_main_one_writes_nothing_but_counts_the_lines_it_resumes_from(tmp_path):
    """Only the main process writes; the others keep count, each as the checkpoint says."""
    run = RunDir(tmp_path, writer=False)
    run.append(run.metrics, [{"step": 1}])
    assert not run.metrics.exists() and run.lines["metrics.jsonl"] == 0
    run.save_adapter(Adapter())
    run.write_config({"steps": 1})
    run.save_checkpoint(Adapter(), None, RunState(stage="rl", step=1))
    assert list(tmp_path.iterdir()) == []
    run.metrics.write_text('{"step":1}\n{"step":2}\n')
    run.truncate({"metrics.jsonl": 1})
    assert run.lines["metrics.jsonl"] == 1 and run.metrics.read_text() == '{"step":1}\n{"step":2}\n'


class Adapter:
    """A stand-in for the policy: ``save_checkpoint`` only asks it to write its adapter into a folder."""

    def save_pretrained(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")


def test_a_half_written_checkpoint_is_never_resumed_from(tmp_path):
    """A run killed while writing its first checkpoint leaves only the temporary folder: it starts over."""
    run = RunDir(tmp_path)
    (run.checkpoints / ".tmp-step-000004-00001" / "adapter").mkdir(parents=True)
    assert run.latest_checkpoint() is None


def test_a_new_checkpoint_replaces_the_old_one_and_is_the_one_resumed_from(tmp_path):
    run = RunDir(tmp_path)
    state = RunState(stage="rl", step=4)
    run.save_checkpoint(Adapter(), None, state)
    state.step = 8
    run.save_checkpoint(Adapter(), None, state)
    assert [p.name for p in run.checkpoints.iterdir()] == ["step-000008-00002"]
    assert run.latest_checkpoint() == run.checkpoints / "step-000008-00002"


def test_resume_keeps_the_lines_it_keeps_byte_for_byte(tmp_path):
    """A kept line that is not UTF-8 (an edit by hand) stays an error naming it, not a line read with its
    bytes replaced."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    kept = b'{"step": 1, "note": "caf\xe9"}\n'
    run.metrics.write_bytes(kept + b'{"step": 2}\n')
    run.truncate({"metrics.jsonl": 1})
    assert run.metrics.read_bytes() == kept


def test_random_states_come_back_with_the_gpus_where_there_are_gpus(monkeypatch):
    """The GPUs' generators are saved and restored beside the CPU's; a checkpoint from a machine
    without them resumes on one with them, and the other way round."""
    import random

    import torch

    from train.rundir import rng_states, set_rng_states
    gpus = {"state": [torch.tensor([1], dtype=torch.uint8)], "set": None}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(gpus["state"]))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: gpus.__setitem__("set", states))
    saved = rng_states()
    assert saved["cuda"] == gpus["state"]
    drawn = random.random(), torch.rand(1)
    set_rng_states(saved)
    assert (random.random(), torch.rand(1)) == drawn and gpus["set"] == gpus["state"]
    gpus["set"] = None
    set_rng_states({key: value for key, value in saved.items() if key != "cuda"})  # saved without GPUs
    assert gpus["set"] is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    set_rng_states(saved)  # saved with GPUs, resumed without
    assert gpus["set"] is None and "cuda" not in rng_states()


def test_a_process_that_is_not_the_main_one_stops_at_a_checkpoint_after_ctrl_c_too(tmp_path):
    """Else the main process stops and the others wait for it at the next collective, for ever."""
    run = RunDir(tmp_path, writer=False)
    run.stop_requested = True
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint(None, None, RunState(stage="rl", step=1))


def test_the_newest_of_two_complete_checkpoints_is_resumed_from(tmp_path):
    """A kill after the new checkpoint's rename and before the old one is removed leaves both."""
    run = RunDir(tmp_path)
    for name in ("step-000004-00001", "step-000008-00002"):
        (run.checkpoints / name).mkdir(parents=True)
    assert run.latest_checkpoint() == run.checkpoints / "step-000008-00002"


def test_a_resumed_run_draws_the_tasks_an_uninterrupted_one_draws(tmp_path):
    """The data cursor goes into every checkpoint: after a kill the run plays the same tasks at each step."""
    model, pool = bandit_model_dir(tmp_path / "model"), bandit_pool(tmp_path / "pool.jsonl")
    kill_when_logged(command(tmp_path, "killed", model, pool), tmp_path / "runs" / "killed", step=3)
    finish(command(tmp_path, "killed", model, pool, resume=True))
    finish(command(tmp_path, "whole", model, pool))

    def drawn(name: str) -> list[tuple[int, str]]:
        lines = (tmp_path / "runs" / name / "trajectories.jsonl").read_text().splitlines()
        return sorted((e["step"], e["task_id"]) for e in map(json.loads, lines) if e["phase"] == "rl")

    assert drawn("killed") == drawn("whole") and len(drawn("whole")) == STEPS * 4 * 4


def lora(targets: list[str], hidden: int = 16, rank: int = 2):
    """A one-layer Llama built from a config, with a LoRA adapter on ``targets``."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=rank, target_modules=targets))


def test_a_checkpoint_of_another_models_adapter_is_refused_not_half_loaded(tmp_path):
    run = RunDir(tmp_path)
    run.save_checkpoint(lora(["q_proj", "v_proj"]), None, RunState(stage="rl", step=1))
    run.load_checkpoint(run.latest_checkpoint(), lora(["q_proj", "v_proj"]))
    with pytest.raises(RuntimeError, match="does not fit this model"):
        run.load_checkpoint(run.latest_checkpoint(), lora(["q_proj"]))


@contextlib.contextmanager
def files_limited_to(size: int) -> Iterator[None]:
    """A write past ``size`` bytes of a file fails in the OS, as on a full disk (EFBIG where a full disk says ENOSPC),
    no root needed: RLIMIT_FSIZE, with the SIGXFSZ that would kill the process ignored meanwhile."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize("what", ["adapter weights", "random states", "final adapter"])
def test_a_save_the_disk_refuses_is_the_os_error_it_is_and_leaves_no_temporary_folder(tmp_path, what):
    """safetensors (under peft's save_pretrained) raises a refused write as a SafetensorError and torch.save as a
    RuntimeError: neither an OSError, so a full disk was a traceback, not a line saying how to continue the run
    (exit code 2), and the half-written folder held on to the space."""
    from safetensors import SafetensorError

    run = RunDir(tmp_path)
    policy = lora(["q_proj", "v_proj"], hidden=256, rank=16)  # 64 KiB of weights, past the limit; the rest is not
    run.save_checkpoint(policy, None, RunState(stage="rl", step=1))
    save = {"adapter weights": lambda: run.save_checkpoint(policy, None, RunState(stage="rl", step=2)),
            "random states": lambda: run.save_checkpoint(Adapter(), None, RunState(stage="rl", step=2)),
            "final adapter": lambda: run.save_adapter(policy)}[what]
    with pytest.raises(OSError) as refused, files_limited_to(8192 if what != "random states" else 1024):
        save()
    assert refused.value.errno == errno.EFBIG
    target = run.adapter if what == "final adapter" else run.checkpoints / "step-000002-00001"
    assert str(target) in str(refused.value)
    if what != "random states":
        assert isinstance(refused.value.__cause__, SafetensorError)
    assert sorted(p.name for p in [*tmp_path.iterdir(), *run.checkpoints.iterdir()]) == \
        ["checkpoints", "step-000001-00001"], "no temporary folder is left behind, the last checkpoint is"


def test_a_failed_save_that_is_no_refused_write_is_raised_as_it_is(tmp_path):
    """A bug stays a traceback; its temporary folder goes all the same."""
    from safetensors import SafetensorError

    class Broken(Adapter):
        def __init__(self, error: Exception):
            self.error = error

        def save_pretrained(self, folder: Path) -> None:
            super().save_pretrained(folder)
            raise self.error

    run = RunDir(tmp_path)
    for error in (RuntimeError("a bug"), SafetensorError("Error while serializing: MisalignedSlice"), KeyError("x")):
        with pytest.raises(type(error)) as raised:
            run.save_checkpoint(Broken(error), None, RunState(stage="rl", step=1))
        assert raised.value is error
        with pytest.raises(type(error)):
            run.save_adapter(Broken(error))
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["checkpoints"]
