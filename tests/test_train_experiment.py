"""``python -m train.experiment``: the loop for several seeds on one shared held-out set, each stage's
mean with a bootstrap interval over tasks and seeds, and RL's gain over the warm start."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from agents.models import load_tokenizer
from envs.pool import append_pool, load_pool
from envs.records import append_jsonl, read_jsonl
from eval.estimators import bootstrap_interval, wilson_interval
from test_train_support import save_model, tiny_llama, toy_answer_task
from toy_domain import copy_task
from train import experiment
from train.config import TrainConfig


def runs_of(table: dict[int, dict[str, list[float]]]) -> dict[int, dict[str, dict[str, dict[str, float]]]]:
    """Per seed, per stage: the rewards of tasks t0, t1, ... of one domain."""
    return {seed: {stage: {"calculation": {f"t{i}": r for i, r in enumerate(rewards)}}
                   for stage, rewards in stages.items()} for seed, stages in table.items()}


def test_each_stage_is_the_mean_over_seeds_and_tasks_and_rl_gain_is_paired():
    runs = runs_of({0: {"base": [0, 0, 0, 0], "warm_start": [1, 0, 0, 1], "rl": [1, 1, 0, 1]},
                    1: {"base": [0, 0, 0, 0], "warm_start": [1, 1, 0, 0], "rl": [1, 1, 1, 0]}})
    row = experiment.summarize(runs)["calculation"]
    # every cell 0: no resample moves, so the interval is Wilson's over the 4 tasks, not the point [0, 0]
    assert row["base"]["mean"] == 0 and (row["base"]["low"], row["base"]["high"]) == wilson_interval(0, 4)
    assert row["warm_start"]["mean"] == pytest.approx(4 / 8) and row["rl"]["mean"] == pytest.approx(6 / 8)
    assert row["rl_gain"]["mean"] == pytest.approx(2 / 8)
    assert row["rl_gain"]["low"] <= 2 / 8 <= row["rl_gain"]["high"] and row["rl"]["tasks"] == 4
    page = experiment.markdown(experiment.summarize(runs), [0, 1])
    assert "| calculation | 4 | 0 | 0.0% [0.0, 49.0] | 50.0% [" in page and "| 25.0% [" in page


def test_the_base_model_measured_by_one_seed_and_tasks_of_two_calls_get_their_own_row():
    runs = runs_of({0: {"base": [0, 0, 1, 0], "warm_start": [1, 0, 0, 1], "rl": [1, 1, 1, 1]},
                    1: {"warm_start": [1, 1, 0, 0], "rl": [1, 1, 0, 0]}})
    table = experiment.summarize(runs, multi_call={"t2", "t3", "elsewhere"})
    base = table["calculation"]["base"]
    assert (base["mean"], base["tasks"], base["seeds"], table["calculation"]["rl"]["seeds"]) == (0.25, 4, 1, 2)
    multi = table["calculation, 2+ calls"]
    assert multi["warm_start"]["tasks"] == 2 and multi["warm_start"]["mean"] == pytest.approx(1 / 4)
    assert multi["rl"]["mean"] == pytest.approx(2 / 4) and multi["rl_gain"]["mean"] == pytest.approx(1 / 4)
    assert multi["base"]["mean"] == pytest.approx(1 / 2)
    assert "calculation, 2+ calls" not in experiment.summarize(runs, multi_call={"t0", "t1", "t2", "t3"})
    page = experiment.markdown(table, [0, 1])
    assert "| calculation | 4 | 2 | 25.0% [" in page and "(1 seed) | 50.0% [" in page
    assert "| calculation, 2+ calls | 2 |  | 50.0% [" in page


def test_rl_curves_count_steps_from_rls_start_and_follow_the_domains_measured_between_steps():
    metrics = [{"phase": "warm_start", "step": s} for s in (1, 2, 3)] + [
        {"phase": "eval", "stage": "base", "step": 0, "success": {"calculation": 0.0, "web": 0.0}},
        {"phase": "eval", "stage": "warm_start", "step": 3, "success": {"calculation": 0.5, "web": 0.25}},
        {"phase": "rl", "step": 4, "reward_mean": 0.25}, {"phase": "rl", "step": 5, "reward_mean": 0.5},
        {"phase": "eval", "stage": "rl@2", "step": 5, "success": {"calculation": 0.625}},
        {"phase": "rl", "step": 6, "reward_mean": 0.75},
        {"phase": "eval", "stage": "rl", "step": 6, "success": {"calculation": 0.75, "web": 0.25}}]
    curves = experiment.rl_curves({0: metrics, 1: metrics[:3]})
    assert curves == {0: {"reward": [[1, 0.25], [2, 0.5], [3, 0.75]],
                          "heldout": {"calculation": [[0, 0.5], [2, 0.625], [3, 0.75]]}}}
    no_warm_start = [{"phase": "eval", "stage": "base", "step": 0, "success": {"calculation": 0.125}},
                     {"phase": "rl", "step": 1, "reward_mean": 0.25},
                     {"phase": "eval", "stage": "rl", "step": 1, "success": {"calculation": 0.5}}]
    assert experiment.rl_curves({0: no_warm_start})[0]["heldout"] == {"calculation": [[0, 0.125], [1, 0.5]]}, \
        "without a warm start RL starts from the base model: its evaluation is the curve's first point"


@pytest.mark.slow
def test_seeds_share_one_held_out_set_and_a_rerun_resumes(tmp_path: Path, capsys):
    tokenizer = load_tokenizer()
    model = save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "model")
    argv = ["--seeds", "0,1", "--out", str(tmp_path / "exp"), "--set", f"model={model}",
            "--set", "domains=[calculation]", "--set", "challenger_proposals=0", "--set", "steps=1",
            "--set", "tasks_per_step=2", "--set", "group_size=2", "--set", "tasks_per_domain.calculation=6",
            "--set", "heldout_per_domain.calculation=3", "--set", "max_new_tokens=4", "--set", "warm_start_epochs=1"]
    assert experiment.main(argv) == 0
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    assert set(summary["table"]["calculation"]) == {"base", "warm_start", "rl", "rl_gain", "multi_call_tasks"}
    held = {json.loads(line)["id"] for line in (tmp_path / "exp" / "heldout.jsonl").read_text().splitlines()}
    for seed in (0, 1):
        split = json.loads((tmp_path / "exp" / f"seed-{seed}" / "split.json").read_text())
        assert set(split["calculation"]["heldout"]) == held and not held & set(split["calculation"]["train"])
    assert (tmp_path / "exp" / "chart.png").is_file() and "| calculation | 3 |" in capsys.readouterr().out
    phases = [{json.loads(line)["phase"] for line in (tmp_path / "exp" / f"seed-{seed}" / "trajectories.jsonl")
               .read_text().splitlines()} for seed in (0, 1)]
    assert "eval:base" in phases[0] and "eval:base" not in phases[1], "greedy: the base model is measured once"
    assert [len(summary["rl_curves"][seed]["reward"]) for seed in ("0", "1")] == [1, 1]
    assert (tmp_path / "exp" / "rl_curves.png").is_file()
    assert experiment.main(argv) == 0  # both seeds are done: resumed at once, the same summary
    assert json.loads((tmp_path / "exp" / "summary.json").read_text()) == summary
    assert experiment.main(argv + ["--set", "steps=2"]) == 2, "a seed continues only with the config it started with"


def test_ctrl_c_exits_130_saying_that_a_rerun_goes_on(tmp_path: Path, monkeypatch, caplog):
    import train.run

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.run, "train", ctrl_c)
    with caplog.at_level("ERROR"):
        assert experiment.main(["--seeds", "0", "--out", str(tmp_path / "exp"), "--set", "domains=[calculation]",
                                "--set", "heldout_per_domain.calculation=2"]) == 130
    assert f"run again with the same --out ({tmp_path / 'exp'})" in caplog.text


def test_the_heldout_set_is_written_whole_once_and_a_killed_writes_leftover_is_replaced(tmp_path):
    def config(n: int) -> TrainConfig:
        return TrainConfig(domains=["calculation"], heldout_per_domain={"calculation": n})

    whole = experiment.heldout_tasks(config(3), tmp_path / "elsewhere.jsonl").read_text()
    path = tmp_path / "heldout.jsonl"
    (tmp_path / ".heldout.jsonl.tmp").write_text(whole[:whole.index("\n") + 20])  # what a kill mid-write left
    assert experiment.heldout_tasks(config(3), path) == path
    first = path.read_text()
    assert first == whole and len(load_pool(path)) == 3 and not (tmp_path / ".heldout.jsonl.tmp").exists()
    assert experiment.heldout_tasks(config(5), path) == path
    assert path.read_text() == first, "later runs score on the set the first wrote"


@pytest.mark.parametrize("flags, said", [
    (["--set", "steps"], "--set needs KEY=VALUE"),
    (["--out", "{file}"], "is a file: pass a folder"),
    (["--seeds", ","], "name at least one seed"),
    (["--set", "eval_base=false", "--set", "steps=0", "--set", "warm_start_epochs=0"],
     "the runs would evaluate nothing to report"),
])
def test_bad_input_exits_2_in_a_line_before_any_run(flags, said, tmp_path, monkeypatch, caplog):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr("train.run.train", lambda config, default_name: pytest.fail("trained"))
    argv = [flag.format(file=tmp_path / "file") for flag in flags]
    assert experiment.main(["--seeds", "0", "--set", "domains=[calculation]", *argv]) == 2
    assert said in caplog.text


@pytest.mark.parametrize("read", [load_pool, read_jsonl], ids=["pool", "records"])
def test_a_file_a_run_cannot_read_exits_2_naming_its_line(read, tmp_path, monkeypatch, caplog):
    """A pool, or another of a run's records (its metrics, its proposals), with a line that is not a record."""
    (tmp_path / "bad.jsonl").write_bytes(b"{not json\n" if read is load_pool else b'{"a": "\xff"}\n')
    monkeypatch.setattr("train.run.train", lambda config, default_name: read(config.pool))  # as a run reads it
    assert experiment.main(["--seeds", "0", "--out", str(tmp_path / "exp"), "--set", "domains=[calculation]",
                            "--set", "heldout_per_domain.calculation=2",
                            "--set", f"pool={tmp_path / 'bad.jsonl'}"]) == 2
    assert "bad.jsonl:1" in caplog.text


def test_seeds_that_are_not_numbers_exit_2_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        experiment.main(["--seeds", "0,a"])
    assert exit_.value.code == 2 and "--seeds takes comma-separated whole numbers, got '0,a'" in capsys.readouterr().err


@pytest.mark.parametrize("seeds, said", [
    ("0,-1", "--seeds takes comma-separated whole numbers, got '0,-1': a seed is from 0 to 4294967295, got -1"),
    (str(2 ** 32), "a seed is from 0 to 4294967295, got 4294967296"),
    ("0,0", "--seeds names 0 more than once"),
    ("3,1,3,1,2", "--seeds names 1, 3 more than once"),
])
def test_seeds_the_generators_refuse_or_named_twice_exit_2_before_any_run(seeds, said, monkeypatch, capsys):
    """A seed numpy and gymnasium refuse would crash its run; one named twice would count its scores twice
    while the table says one seed measured them."""
    monkeypatch.setattr("train.run.train", lambda config, default_name: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        experiment.main(["--seeds", seeds])
    assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_a_seed_whose_run_evaluated_nothing_has_no_scores_and_the_table_says_which_seeds_measured(tmp_path):
    """With greedy evaluation and no training, only the first seed measures (the base model, once): the
    others' runs play no episode and write no trajectories.jsonl."""
    first, second = tmp_path / "seed-0", tmp_path / "seed-1"
    first.mkdir()
    second.mkdir()
    append_jsonl(first / "trajectories.jsonl", [
        {"phase": "eval:base", "domain": "calculation", "task_id": f"t{i}", "reward": float(i == 0)} for i in range(2)])
    runs = {0: experiment.scores(first), 1: experiment.scores(second)}
    assert runs == {0: {"base": {"calculation": {"t0": 1.0, "t1": 0.0}}}, 1: {}}
    table = experiment.summarize(runs)
    assert table["calculation"]["base"]["seeds"] == 1
    page = experiment.markdown(table, [0, 1])
    assert "| calculation | 2 | 0 | 50.0% [" in page and "(1 seed) | - | - | - |" in page



def test_rl_gain_pairs_only_the_seeds_that_measured_both_stages():
    """A seed with an RL result but no warm-start one is left out of the gain, not a KeyError."""
    runs = {0: {"warm_start": {"d": {"a": 0.0, "b": 0.0}}, "rl": {"d": {"a": 1.0, "b": 0.0}}},
            1: {"rl": {"d": {"a": 1.0, "b": 1.0}}}}
    row = experiment.summarize(runs)["d"]
    assert row["rl_gain"]["mean"] == 0.5 and row["rl"]["seeds"] == 2 and row["warm_start"]["seeds"] == 1


def test_rl_gain_gets_the_paired_bootstrap_even_when_every_difference_is_0_or_1():
    """Differences are not successes: no Wilson interval for them."""
    runs = {0: {"warm_start": {"d": {"a": 0.0, "b": 0.0, "c": 1.0, "e": 1.0}},
                "rl": {"d": {"a": 1.0, "b": 1.0, "c": 1.0, "e": 1.0}}}}
    gain = experiment.summarize(runs)["d"]["rl_gain"]
    assert (gain["low"], gain["high"]) == bootstrap_interval([[1.0, 1.0, 0.0, 0.0]])


def test_a_runs_scores_are_its_held_out_evaluations_not_its_training_episodes(tmp_path):
    """trajectories.jsonl also holds RL's own episodes (phase "rl", training tasks) and evaluations between RL
    steps ("eval:rl@2"): neither is a stage's held-out score."""
    records = [{"phase": "rl", "domain": "d", "task_id": "train-1", "reward": 1.0},
               {"phase": "eval:rl", "domain": "d", "task_id": "a", "reward": 0.0},
               {"phase": "eval:rl@2", "domain": "d", "task_id": "a", "reward": 1.0},
               {"phase": "eval:base", "domain": "d", "task_id": "a", "reward": 1.0}]
    (tmp_path / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert experiment.scores(tmp_path) == {"rl": {"d": {"a": 0.0}}, "base": {"d": {"a": 1.0}}}


def test_each_seed_trains_with_its_own_seed_and_only_the_first_measures_the_greedy_base_model(tmp_path, monkeypatch):
    """Seeds run with one seed would be copies of one run, and their interval would claim a spread never measured."""
    import train.run

    seen = []

    def fake_train(config, default_name):
        seen.append(config)
        path = Path(config.runs_dir) / config.name
        path.mkdir(parents=True, exist_ok=True)
        (path / "trajectories.jsonl").write_text(json.dumps(
            {"phase": "eval:rl", "domain": "calculation", "task_id": "a", "reward": 1.0}) + "\n")
        return SimpleNamespace(path=path, read_metrics=lambda: []), None

    monkeypatch.setattr(train.run, "train", fake_train)
    for out, flags in (("greedy", []), ("sampled", ["--set", "eval_temperature=0.7"])):
        assert experiment.main(["--seeds", "3,5", "--out", str(tmp_path / out), "--set", "domains=[calculation]",
                                "--set", "heldout_per_domain.calculation=2", *flags]) == 0
    assert [(c.seed, c.name, c.eval_base) for c in seen] == [(3, "seed-3", True), (5, "seed-5", False),
                                                             (3, "seed-3", True), (5, "seed-5", True)]
    assert seen[0].heldout_pool == seen[1].heldout_pool == str(tmp_path / "greedy" / "heldout.jsonl")


def test_the_multi_call_tasks_are_those_whose_solution_makes_two_calls_or_more(tmp_path):
    append_pool(tmp_path / "held.jsonl", [copy_task(), toy_answer_task()])  # two calls; one
    assert experiment.multi_call_tasks(tmp_path / "held.jsonl") == {"toy-copy"}
