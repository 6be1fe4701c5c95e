"""Each algorithm learns: a tiny model goes from under 20% to over 80% success in a fixed number of steps.

The RL algorithms and the offline ones play the one-word bandit (:mod:`test_train_support`): the
right word is one of eight the tiny model says, a little less often than the others (8% of the
time). The warm start learns the toy domain's read-a-note task from its example solutions: a lookup
call, then the answer, which a random model never writes. Each test runs the real trainer loop
(:func:`train.run.train`) in process, and reads the success rates from the run's metrics.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path
from types import SimpleNamespace
from dataclasses import replace
from typing import Any

import pytest
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker
from accelerate.utils import LoggerType

from agents.models import load_tokenizer
from envs.cat import Attempt, ToolCall
from envs.pool import append_pool
from test_train_support import bandit_model_dir, bandit_pool, save_model, tiny_llama, toy_answer_task
from train.config import ConfigError, TrainConfig, apply
from train.run import scalars, train
from train.tasks import Selection, scripted_tasks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bandit(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bandit")
    return {"model": bandit_model_dir(root / "model"), "pool": bandit_pool(root / "pool.jsonl")}


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory) -> Path:
    """A tiny random model with the default model's tokenizer (each run loads it afresh from disk)."""
    tokenizer = load_tokenizer()
    return save_model(tiny_llama(tokenizer), tokenizer, tmp_path_factory.mktemp("toy") / "model")


def config(tmp_path: Path, **values: Any) -> TrainConfig:
    settings: dict[str, Any] = dict(
        runs_dir=str(tmp_path / "runs"), name="run", seed=0, lora_rank=8, lora_alpha=16, warm_start_epochs=0,
        checkpoint_every=1000, save_trajectories=False, challenger_proposals=0, rl_domains=[], prompt_tools={},
        warm_start_domains=[], max_solution_actions={})
    settings.update(values)
    resolved: dict[str, Any] = {}
    apply(resolved, settings)
    result = TrainConfig(**resolved)
    result.validate()
    return result


def bandit_config(tmp_path: Path, bandit: dict[str, Path], **values: Any) -> TrainConfig:
    settings: dict[str, Any] = dict(
        model=str(bandit["model"]), pool=str(bandit["pool"]), domains=["bandit"], max_turns=1, max_new_tokens=1,
        extra_domains={"bandit": "test_train_support:BanditEnv"}, heldout_per_domain={"bandit": 4},
        tasks_per_step=4, group_size=4)
    return config(tmp_path, **{**settings, **values})


def ctrl_c(*args: Any, **kwargs: Any) -> None:
    """What a stand-in does on Ctrl-C: the run stops where it is called."""
    raise KeyboardInterrupt


def rl_rewards(metrics: list[dict[str, Any]]) -> list[float]:
    return [m["reward_mean"] for m in metrics if m["phase"] == "rl"]


def heldout(metrics: list[dict[str, Any]], stage: str, domain: str) -> float:
    return next(m["success"][domain] for m in metrics if m["phase"] == "eval" and m["stage"] == stage)


@pytest.mark.parametrize("algorithm, steps, lr", [("grpo", 10, 0.01), ("rloo", 10, 0.01), ("reinforce", 10, 0.01),
                                                 ("ppo", 8, 0.005), ("rft", 12, 0.01)])
def test_online_algorithm_learns_the_word_from_its_own_episodes(tmp_path, bandit, algorithm, steps, lr):
    """Every algorithm learned with each of seeds 0-7, so the test does not hang on one seed's draws. PPO makes
    four optimizer steps a step (2 passes x 2 minibatches): at the others' rate it collapsed to reward 0 for seed 0."""
    run, _ = train(bandit_config(tmp_path, bandit, algorithm=algorithm, steps=steps, lr=lr))
    metrics = run.read_metrics()
    rewards = rl_rewards(metrics)
    assert len(rewards) == steps
    assert rewards[0] < 0.2, "the first step samples the untrained model"
    assert sum(rewards[-4:]) / 4 > 0.8, rewards
    assert heldout(metrics, "base", "bandit") < 0.2 and heldout(metrics, "rl", "bandit") > 0.8


def test_distillation_learns_from_another_models_trajectories(tmp_path, bandit):
    transcripts = tmp_path / "teacher.jsonl"
    records = [{"task_id": f"bandit-{i}", "reward": 1.0, "messages": [
        {"role": "system", "content": "(the teacher's prompt)"}, {"role": "user", "content": "Say yes."},
        {"role": "assistant", "content": "yes"}, {"role": "tool", "content": "Done."}]} for i in range(16)]
    records.append({"task_id": "bandit-3", "reward": 0.0, "messages": [{"role": "assistant", "content": "no"}]})
    transcripts.write_text("".join(json.dumps(r) + "\n" for r in records))
    run, _ = train(bandit_config(tmp_path, bandit, algorithm="distill", distill_path=str(transcripts), steps=6,
                                 lr=0.02, tasks_per_step=4, group_size=2))
    metrics = run.read_metrics()
    assert heldout(metrics, "base", "bandit") < 0.2 and heldout(metrics, "rl", "bandit") > 0.8
    assert all(m["reward_mean"] == 1.0 for m in metrics if m["phase"] == "rl"), "only the successes are learned from"


def test_warm_start_learns_the_tool_call_format_from_the_pools_solutions(tmp_path, toy_model):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [toy_answer_task(i) for i in range(10)])
    run, _ = train(config(tmp_path, model=str(toy_model), pool=str(pool), domains=["toy"],
                          heldout_per_domain={"toy": 4}, warm_start_epochs=40, warm_start_batch=6,
                          warm_start_lr=0.01, steps=0, max_turns=3, max_new_tokens=24))
    metrics = run.read_metrics()
    assert heldout(metrics, "base", "toy") < 0.2
    assert heldout(metrics, "warm_start", "toy") > 0.8
    losses = [m["loss"] for m in metrics if m["phase"] == "warm_start"]
    assert len(losses) == 40 and losses[-1] < losses[0] / 2


def test_the_warm_start_shows_its_first_tasks_and_rl_draws_from_every_training_task_with_the_kl_on_rl_only(tmp_path, toy_model):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [toy_answer_task(i) for i in range(10)])
    run, _ = train(config(tmp_path, model=str(toy_model), pool=str(pool), domains=["toy"],
                          heldout_per_domain={"toy": 4}, warm_start_epochs=2, warm_start_batch=1,
                          warm_start_tasks={"toy": 2}, rl_domains=["toy"], steps=3, tasks_per_step=2, group_size=2,
                          max_turns=1, max_new_tokens=4, eval_base=False, save_trajectories=True,
                          algorithm="rloo", kl_coef=0.1))  # (rloo updates on every episode when a KL is on)
    metrics = run.read_metrics()
    assert sum(m["phase"] == "warm_start" for m in metrics) == 2 * 2, "2 demonstrations, 2 epochs"
    weighed = [("kl_base" in m) for m in metrics if m["phase"] in ("warm_start", "rl")]
    assert weighed == [False] * 4 + [True] * 3, "the KL to the base model weighs on RL steps, not on the warm start"
    trained = json.loads((run.path / "split.json").read_text())["toy"]["train"]
    played = [json.loads(line) for line in (run.path / "trajectories.jsonl").read_text().splitlines()]
    assert len(trained) == 6 and {r["task_id"] for r in played if r["phase"] == "rl"} == set(trained)


def test_held_out_success_is_also_given_on_the_tasks_of_two_or_more_calls(tmp_path, toy_model):
    twice = [replace(toy_answer_task(i), id=f"toy-twice-{i}", solution=Attempt((ToolCall("get_note", {"key": "k2"}),
                                                                               ToolCall("get_note", {"key": "k1"})), "note 1"))
             for i in range(6)]
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [toy_answer_task(i) for i in range(6)] + twice)
    run, _ = train(config(tmp_path, model=str(toy_model), pool=str(pool), domains=["toy"],
                          heldout_per_domain={"toy": 8}, steps=0, max_turns=2, max_new_tokens=4))
    held = json.loads((run.path / "split.json").read_text())["toy"]["heldout"]
    [evaluation] = [m for m in run.read_metrics() if m["phase"] == "eval"]
    assert evaluation["n"] == {"toy": 8}
    assert evaluation["n_multi_call"] == {"toy": sum(i.startswith("toy-twice") for i in held)} and 0 < len(held) < 12
    assert evaluation["success_multi_call"]["toy"] == 0.0  # a random model solves nothing


def test_evaluations_between_rl_steps_measure_the_rl_domains_and_a_stages_end_every_domain(tmp_path, toy_model):
    pool = tmp_path / "pool.jsonl"
    calculation = scripted_tasks("calculation", 0, 6, Selection({"calculation": 1}))
    append_pool(pool, [toy_answer_task(i) for i in range(6)] + calculation)
    run, _ = train(config(tmp_path, model=str(toy_model), pool=str(pool), domains=["toy", "calculation"],
                          heldout_per_domain={"toy": 2, "calculation": 2}, rl_domains=["toy"], steps=2, eval_every=1,
                          tasks_per_step=2, group_size=2, max_turns=1, max_new_tokens=4, eval_base=False))
    evaluated = {m["stage"]: set(m["n"]) for m in run.read_metrics() if m["phase"] == "eval"}
    assert evaluated == {"rl@1": {"toy"}, "rl": {"toy", "calculation"}}


MEASURED = ("seconds", "peak_memory_gib")
"""Metric keys that measure the machine, not the run (with the timings, ``*_s``): the only ones two runs may
differ in."""


def what_was_learned(run) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k not in MEASURED and not k.endswith("_s")} for m in run.read_metrics()]


def test_two_runs_of_one_pool_and_seed_log_identical_metrics_and_each_stage_draws_its_own_numbers(tmp_path, bandit):
    settings = dict(steps=3, lr=0.02, eval_temperature=1.0, rl_domains=["bandit"])
    first, _ = train(bandit_config(tmp_path / "a", bandit, **settings))
    second, _ = train(bandit_config(tmp_path / "b", bandit, **settings))
    learned = what_was_learned(first)
    assert learned == what_was_learned(second)
    assert {m["phase"] for m in learned} >= {"rl", "eval"}
    # without the base model's evaluation, the stages after it draw the same numbers as before
    skipped, _ = train(bandit_config(tmp_path / "c", bandit, eval_base=False, **settings))
    assert what_was_learned(skipped) == [m for m in learned if m.get("stage") != "eval_base"
                                         and not (m["phase"] == "eval" and m["stage"] == "base")]
    other_seed, _ = train(bandit_config(tmp_path / "d", bandit, seed=1, **settings))
    assert what_was_learned(other_seed) != learned


def test_every_stage_of_a_run_says_it_is_alive_while_it_works(tmp_path, bandit, caplog, monkeypatch):
    """A stage that takes long logs "still running" lines (here every 0.05 s, as every 20 s for real)."""
    import functools
    import logging
    import time

    from train import progress, run as runner, trainer

    slow_evaluate = trainer.evaluate

    def evaluate(*args, **kwargs):
        time.sleep(0.3)
        return slow_evaluate(*args, **kwargs)

    monkeypatch.setattr(runner, "heartbeat", functools.partial(progress.heartbeat, every=0.05))
    monkeypatch.setattr(trainer, "evaluate", evaluate)
    caplog.set_level(logging.INFO)
    started = time.time()
    train(bandit_config(tmp_path, bandit, algorithm="grpo", steps=1))
    assert "eval base: still running" in caplog.text and "eval rl: still running" in caplog.text
    stamps = [started] + [r.created for r in caplog.records] + [time.time()]
    assert max(b - a for a, b in zip(stamps, stamps[1:])) < 30


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files in ``folder`` (TFRecord framing: length, crc, event, crc), as TensorBoard
    shows that run: its files in name order, and a session's start at step ``s`` (``purge_step``) hides what came
    before it from step ``s`` on."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (size,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + size])
            at += 16 + size
            if event.session_log.status == SessionLog.START:
                found = {tag: [(step, value) for step, value in points if step < event.step]
                         for tag, points in found.items()}
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_scalars_name_each_metric_by_phase_stage_and_domain():
    assert scalars({"step": 3, "phase": "eval", "stage": "rl", "success": {"web": 0.5, "retail": 1}, "n": {"web": 2},
                    "seconds": 4}) == {"eval/rl/success/web": 0.5, "eval/rl/success/retail": 1.0,
                                       "eval/rl/n/web": 2.0, "eval/rl/seconds": 4.0}
    assert scalars({"step": 1, "phase": "rl", "domain": "bandit", "loss": -0.25, "reward_mean": 0.5, "done": True,
                    "note": "x"}) == {"rl/bandit/loss": -0.25, "rl/bandit/reward_mean": 0.5}
    # what a tracker may refuse (mlflow stops a run at "rl@2") is "_"
    assert scalars({"step": 2, "phase": "eval", "stage": "rl@2", "success": {"wéb 2": 1.0, "web-2.x": 0.5}}) == {
        "eval/rl_2/success/w_b_2": 1.0, "eval/rl_2/success/web-2.x": 0.5}  # "-" and "." every tracker takes


def test_report_to_tensorboard_writes_the_same_metrics_as_metrics_jsonl(tmp_path, bandit):
    run, _ = train(bandit_config(tmp_path, bandit, steps=2, lr=0.02, report_to="tensorboard"))
    logged = tensorboard_scalars(run.path / "trackers" / "self-challenge")
    rl = [m for m in run.read_metrics() if m["phase"] == "rl"]
    assert logged["rl/reward_mean"] == [(m["step"], pytest.approx(m["reward_mean"])) for m in rl]
    evals = [m for m in run.read_metrics() if m["phase"] == "eval"]
    assert [v for _, v in logged["eval/rl/success/bandit"]] == [pytest.approx(evals[-1]["success"]["bandit"])]


class RecordingTracker(GeneralTracker):
    """Stands in for wandb's tracker (not installed here): what accelerate hands it, it keeps; and, as wandb
    does, it drops what is logged at a step before the last one it kept."""

    name, requires_logging_directory, made = "wandb", False, []

    def __init__(self, project: str, **kwargs: Any):
        super().__init__()
        self.project, self.kwargs, self.logged, self.dropped, self.finished = project, kwargs, [], [], False
        RecordingTracker.made.append(self)

    @property
    def tracker(self) -> None:
        return None

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        earlier = bool(self.logged) and step < self.logged[-1][0]
        (self.dropped if earlier else self.logged).append((step, values))

    def finish(self) -> None:
        self.finished = True


@pytest.fixture
def wandb_stand_in(monkeypatch) -> type[RecordingTracker]:
    """:class:`RecordingTracker` as accelerate's wandb tracker, and wandb as installed."""
    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, "wandb", RecordingTracker)
    monkeypatch.setattr(RecordingTracker, "made", [])
    for module in ("train.config", "accelerate.tracking"):
        monkeypatch.setattr(f"{module}.get_available_trackers", lambda: [LoggerType.TENSORBOARD, LoggerType.WANDB])
    return RecordingTracker


def test_each_tracker_files_the_run_by_its_folders_name_in_the_project_given(tmp_path, bandit, wandb_stand_in):
    run, _ = train(bandit_config(tmp_path, bandit, steps=2, lr=0.02, report_to="wandb,tensorboard",
                                 tracker_project="lab"))
    [wandb] = wandb_stand_in.made
    kept_id = (run.path / "trackers" / "wandb-id").read_text()
    assert (wandb.project, wandb.kwargs) == ("lab", {"name": "run", "dir": str(run.path / "trackers"), "id": kept_id,
                                                     "resume": "allow"})
    rl = [m for m in run.read_metrics() if m["phase"] == "rl"]
    logged = [(step, values["rl/reward_mean"]) for step, values in wandb.logged if "rl/reward_mean" in values]
    assert logged == [(m["step"], pytest.approx(m["reward_mean"])) for m in rl] and wandb.finished
    assert tensorboard_scalars(run.path / "trackers" / "lab")["rl/reward_mean"] == logged
    # resumed from its checkpoint, the run goes on in the same wandb run; a run started anew gets a new one
    train(bandit_config(tmp_path, bandit, steps=2, lr=0.02, report_to="wandb,tensorboard", tracker_project="lab",
                        resume=True))
    train(bandit_config(tmp_path, bandit, steps=2, lr=0.02, report_to="wandb,tensorboard", tracker_project="lab",
                        name="again"))
    _, resumed, again = wandb_stand_in.made
    assert resumed.kwargs["id"] == kept_id and again.kwargs["id"] != kept_id and len(kept_id) == 16
    (run.path / "trackers" / "wandb-id").unlink()  # trackers/ cleared by hand: resumed, it is a new wandb run
    train(bandit_config(tmp_path, bandit, steps=2, lr=0.02, report_to="wandb,tensorboard", tracker_project="lab",
                        resume=True))
    assert wandb_stand_in.made[-1].kwargs["id"] not in (kept_id, again.kwargs["id"])


class MlflowStandIn(RecordingTracker):
    """Stands in for accelerate's mlflow tracker: the store gives a new run its id as it starts, and goes on in the
    run of the id it is given."""

    name, params = "mlflow", {}  # the parameters the store holds, per run

    def __init__(self, project: str, **kwargs: Any):
        super().__init__(project, **kwargs)
        self.run_id = kwargs.get("run_id") or f"{len(RecordingTracker.made):032x}"

    @property
    def tracker(self) -> SimpleNamespace:
        return SimpleNamespace(info=SimpleNamespace(run_id=self.run_id))

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """As mlflow, refuses to log a parameter of its run again with another value."""
        held = MlflowStandIn.params.setdefault(self.run_id, {})
        if changed := [key for key, value in values.items() if held.get(key, value) != value]:
            raise MlflowStoreError(f"INVALID_PARAMETER_VALUE: changing {changed} is not allowed")
        held.update(values)


class MlflowStoreError(Exception):
    def __init__(self, error_code: str):
        super().__init__(error_code)
        self.error_code = error_code


def test_mlflow_files_the_run_by_its_folders_name_and_a_resume_goes_on_in_its_run(tmp_path, bandit, wandb_stand_in,
                                                                                   monkeypatch, caplog):
    """As with wandb, a run resumed from its checkpoint goes on in the mlflow run it started (with the parameters it
    logged: `resume` is not one), unless the tracking store no longer holds that run (another MLFLOW_TRACKING_URI):
    then every resume would fail, so it gets a new one."""
    stored: set[str] = set()

    def get_run(run_id: str) -> None:
        if run_id not in stored:
            raise MlflowStoreError("RESOURCE_DOES_NOT_EXIST")

    monkeypatch.setitem(sys.modules, "mlflow", SimpleNamespace(
        MlflowClient=lambda: SimpleNamespace(get_run=get_run), get_tracking_uri=lambda: "sqlite:///elsewhere.db",
        exceptions=SimpleNamespace(MlflowException=MlflowStoreError)))
    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, "mlflow", MlflowStandIn)
    monkeypatch.setattr(MlflowStandIn, "params", {})
    monkeypatch.setattr("train.config.get_available_trackers", lambda: [LoggerType.MLFLOW])
    monkeypatch.setattr("accelerate.tracking.get_available_trackers", lambda: [LoggerType.MLFLOW])
    settings = dict(steps=1, report_to="mlflow", tracker_project="lab")
    run, _ = train(bandit_config(tmp_path, bandit, **settings))
    [first] = wandb_stand_in.made
    kept = run.path / "trackers" / "mlflow-run-id"
    assert (first.project, first.kwargs, kept.read_text()) == ("lab", {"run_name": "run"}, first.run_id)
    assert any("eval/rl/success/bandit" in values for _, values in first.logged)
    stored.add(first.run_id)
    train(bandit_config(tmp_path, bandit, resume=True, **settings))
    assert wandb_stand_in.made[-1].kwargs == {"run_name": "run", "run_id": first.run_id}
    stored.clear()
    train(bandit_config(tmp_path, bandit, resume=True, **settings))
    assert wandb_stand_in.made[-1].kwargs == {"run_name": "run"} and kept.read_text() == wandb_stand_in.made[-1].run_id
    assert f"mlflow has no run {first.run_id}" in caplog.text and "sqlite:///elsewhere.db" in caplog.text
    from train import run as runner

    with monkeypatch.context() as patch:
        patch.setattr(runner, "write_tasks", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            train(bandit_config(tmp_path, bandit, name="early", **settings))
    stored.add(wandb_stand_in.made[-1].run_id)
    train(bandit_config(tmp_path, bandit, name="early", resume=True, **settings))
    assert "run_id" not in wandb_stand_in.made[-1].kwargs, "resumed before its first checkpoint, it starts afresh"


class UnstartableTracker(RecordingTracker):
    """wandb's tracker where wandb cannot start (no API key); like accelerate's, it then has no run to finish."""

    error: BaseException = RuntimeError("No API key configured. Use `wandb login` to log in.")

    def start(self) -> None:
        raise self.error

    def finish(self) -> None:
        raise AttributeError("'WandBTracker' object has no attribute 'run'")


def test_a_tracker_that_cannot_start_is_a_config_error_and_the_run_goes_on_with_resume(tmp_path, bandit,
                                                                                       wandb_stand_in, monkeypatch):
    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, "wandb", UnstartableTracker)
    settings = dict(steps=1, report_to="tensorboard,wandb")
    continued = re.escape(f"--runs-dir {tmp_path / 'runs'} --name run --resume`")  # a command that works as given
    with pytest.raises(ConfigError, match=r"could not start \(RuntimeError: No API key.*" + continued):
        train(bandit_config(tmp_path, bandit, **settings))
    monkeypatch.setattr(UnstartableTracker, "error", KeyboardInterrupt())  # Ctrl-C at wandb's login prompt
    with pytest.raises(KeyboardInterrupt):
        train(bandit_config(tmp_path, bandit, resume=True, **settings))
    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, "wandb", RecordingTracker)
    run, state = train(bandit_config(tmp_path, bandit, resume=True, **settings))
    [_, _, wandb] = wandb_stand_in.made
    assert state.stage == "done" and wandb.logged and wandb.finished


def test_a_run_resumed_before_its_first_checkpoint_starts_a_new_wandb_run(tmp_path, bandit, wandb_stand_in,
                                                                          monkeypatch):
    """It starts from its first step again, so the old tracker run's steps would hide the new ones."""
    from train import run as runner

    with monkeypatch.context() as patch:
        patch.setattr(runner, "write_tasks", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            train(bandit_config(tmp_path, bandit, steps=1, report_to="wandb"))
    assert not (tmp_path / "runs" / "run" / "checkpoints").exists()
    run, _ = train(bandit_config(tmp_path, bandit, steps=1, report_to="wandb", resume=True))
    first, again = wandb_stand_in.made
    assert first.kwargs["id"] != again.kwargs["id"] == (run.path / "trackers" / "wandb-id").read_text()
    assert [step for step, _ in again.logged] == [m["step"] for m in run.read_metrics()]


def test_trackers_that_started_are_finished_when_another_cannot_start(tmp_path, bandit, wandb_stand_in, monkeypatch):
    """mlflow started, then wandb could not: mlflow's run is ended, not left open ("running") on its server."""
    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, "mlflow", RecordingTracker)
    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, "wandb", UnstartableTracker)
    for module in ("train.config", "accelerate.tracking"):
        monkeypatch.setattr(f"{module}.get_available_trackers", lambda: [LoggerType.MLFLOW, LoggerType.WANDB])
    with pytest.raises(ConfigError, match="could not start"):
        train(bandit_config(tmp_path, bandit, steps=1, report_to="mlflow,wandb"))
    [mlflow] = [tracker for tracker in wandb_stand_in.made if type(tracker) is RecordingTracker]
    assert mlflow.finished


def test_a_run_resumed_before_its_first_checkpoint_shows_each_record_once(tmp_path, bandit, monkeypatch):
    """It starts from its first step again: what the first try logged (here the tasks stage's record, written just
    before its checkpoint failed) is cut from metrics.jsonl and hidden in TensorBoard, not shown twice."""
    from train.rundir import RunDir

    settings = dict(steps=1, report_to="tensorboard")
    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "save_checkpoint", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            train(bandit_config(tmp_path, bandit, **settings))
    run, _ = train(bandit_config(tmp_path, bandit, resume=True, **settings))
    assert "\nresume: false\n" in (run.path / "config.yaml").read_text(), "its config.yaml starts a run, as ever"
    metrics = run.read_metrics()
    assert [m["stage"] for m in metrics if m["phase"] == "stage"].count("tasks") == 1
    shown: dict[str, list] = {}
    for m in metrics:
        for tag, value in scalars(m).items():
            shown.setdefault(tag, []).append((m["step"], pytest.approx(value)))
    assert tensorboard_scalars(run.path / "trackers" / "self-challenge") == shown


def test_a_run_resumed_inside_its_warm_start_gives_rl_a_fresh_optimizer(tmp_path, toy_model, monkeypatch):
    """The checkpoint's optimizer state belongs to the stage it was saved in: loaded into RL's optimizer it would
    also bring the warm start's learning rate and moments."""
    from train import trainer

    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [toy_answer_task(i) for i in range(6)])
    settings = dict(model=str(toy_model), pool=str(pool), domains=["toy"], heldout_per_domain={"toy": 2},
                    warm_start_epochs=2, warm_start_batch=1, warm_start_tasks={"toy": 2}, warm_start_lr=0.003,
                    checkpoint_every=1, rl_domains=["toy"], steps=1, tasks_per_step=2, group_size=2, lr=0.02,
                    max_turns=1, max_new_tokens=4, eval_base=False)
    update, updates = trainer.update, []

    def stop_at_the_third(*args: Any, **kwargs: Any) -> dict[str, float]:
        updates.append(1)
        return ctrl_c() if len(updates) == 3 else update(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "update", stop_at_the_third)
        with pytest.raises(KeyboardInterrupt):
            train(config(tmp_path, **settings))
    make_optimizer, made = trainer.make_optimizer, []

    def recorded(policy: Any, lr: float, state: dict[str, Any] | None) -> Any:
        optimizer = make_optimizer(policy, lr, state)
        made.append((state is not None, optimizer.param_groups[0]["lr"]))
        return optimizer

    monkeypatch.setattr(trainer, "make_optimizer", recorded)
    run, _ = train(config(tmp_path, resume=True, **settings))
    assert made == [(True, 0.003), (False, 0.02)], "the warm start goes on with its state, RL starts afresh"
    assert sum(m["phase"] == "warm_start" for m in run.read_metrics()) == 2 * 2, "2 demonstrations, 2 epochs"


def test_a_run_stopped_after_writing_its_pool_writes_it_afresh_when_resumed(tmp_path, bandit, monkeypatch):
    """The pool is appended to task by task: the tasks stage done again starts it anew, or each task is in it twice."""
    from train import run as runner

    with monkeypatch.context() as patch:
        patch.setattr(runner, "write_atomic", ctrl_c)  # the tasks' mix, written right after the pool
        with pytest.raises(KeyboardInterrupt):
            train(bandit_config(tmp_path, bandit, steps=0))
    run, _ = train(bandit_config(tmp_path, bandit, steps=0, resume=True))
    ids = [json.loads(line)["id"] for line in run.pool.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(bandit["pool"].read_text().splitlines())


def test_every_stage_of_the_loop_logs_at_the_runs_step_so_a_tracker_keeps_every_record(tmp_path, toy_model,
                                                                                      wandb_stand_in):
    """wandb drops a record logged at a step before its last one: the challenger's funnels, once logged at step 0
    after its warm start's updates, never reached it."""
    run, _ = train(config(tmp_path, model=str(toy_model), report_to="wandb", domains=["calculation"],
                          tasks_per_domain={"calculation": 6}, heldout_per_domain={"calculation": 2},
                          prompt_tools={"calculation": ["convert_currency", "convert_units"]},
                          max_solution_actions={"calculation": 1}, challenger_domains=["calculation"],
                          challenger_demos=2, challenger_batch=2, challenger_warm_start_epochs=1,
                          challenger_proposals=2, challenger_max_new_tokens=4, challenger_rl_steps=1,
                          challenger_worlds_per_step=1, challenger_group_size=2, warm_start_epochs=1,
                          warm_start_domains=["calculation"], rl_domains=["calculation"], steps=1, tasks_per_step=1,
                          group_size=2, max_turns=1, max_new_tokens=4, eval_base=True))
    metrics = run.read_metrics()
    assert [(m["phase"], m.get("stage")) for m in metrics if m["phase"] not in ("stage", "eval")] == [
        ("challenger_warm_start", None), ("challenger", "warm_start"), ("challenger_rl", None), ("challenger", "pool"),
        ("warm_start", None), ("rl", None)]
    [wandb] = wandb_stand_in.made
    assert not wandb.dropped and [step for step, _ in wandb.logged] == [m["step"] for m in metrics]


def test_report_to_names_a_known_tracker(tmp_path):
    with pytest.raises(ConfigError, match="report_to"):
        config(tmp_path, report_to="tensorbored")
