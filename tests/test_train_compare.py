"""The three training sets of ``python -m train.compare``: equal size, filtered = kept proposals,
unfiltered = parsed proposals kept or not, scripted = the domain's scripted tasks, one held-out set
of scripted tasks apart from all three."""

from __future__ import annotations

import errno
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from agents.models import ModelNotFoundError
from envs.calculation.challenger import make_tasks
from envs.pool import append_pool
from envs.records import append_jsonl
from train import compare
from train.config import load_config
from train.tasks import EmptyPoolError, Selection


def parsed_run(tmp_path: Path, stages: list[str]) -> Path:
    """A run folder whose parsed.jsonl holds one proposal per stage given (LLM-written calculation tasks)."""
    written = make_tasks(seed=77, n=len(stages))
    append_pool(tmp_path / "parsed.jsonl", [
        replace(task, id=f"calculation-llm-{i}", provenance={"challenger": "llm:m", "stage": stage, "label": "pool"})
        for i, (task, stage) in enumerate(zip(written, stages))])
    return tmp_path


def test_each_arm_gets_as_many_tasks_and_the_held_out_set_is_scripted_and_apart(tmp_path):
    stages = ["new", "kept", "lenient_verifier", "new", "solution_passed", "parsed", "new", "verifier_ran"]
    sets, held = compare.training_sets(parsed_run(tmp_path, stages), "calculation", size=8, heldout=5, seed=0,
                                       selection=Selection())
    assert {arm: len(tasks) for arm, tasks in sets.items()} == {"filtered": 4, "unfiltered": 4, "scripted": 4}
    assert all(t.provenance["stage"] in ("kept", "new") for t in sets["filtered"])
    assert {t.id for t in sets["unfiltered"]} <= {f"calculation-llm-{i}" for i in range(8)}
    assert all(t.provenance["challenger"] == "scripted" for t in sets["scripted"] + held) and len(held) == 5
    assert not {t.id for t in held} & {t.id for arm in sets.values() for t in arm}


def test_a_proposal_whose_verifier_does_not_compile_is_left_out_of_the_unfiltered_arm(tmp_path):
    run = parsed_run(tmp_path, ["new", "parsed", "new"])
    broken = replace(make_tasks(seed=78, n=1)[0], id="calculation-llm-broken", verifier="def verify(state, answer):\n    return (1))\n",
                     provenance={"challenger": "llm:m", "stage": "parse_error", "label": "pool"})
    append_pool(run / "parsed.jsonl", [broken])
    sets, _ = compare.training_sets(run, "calculation", size=3, heldout=2, seed=0, selection=Selection())
    assert len(sets["unfiltered"]) == 2 and "calculation-llm-broken" not in {t.id for t in sets["unfiltered"]}


def test_a_run_without_kept_proposals_has_nothing_to_compare(tmp_path):
    with pytest.raises(EmptyPoolError, match="no kept calculation proposals"):
        compare.training_sets(parsed_run(tmp_path, ["parsed", "lenient_verifier"]), "calculation", 8, 5, 0, Selection())


def test_the_report_gives_each_arm_its_interval():
    results = {arm: {"stage": "rl", "n": 20, "successes": k, "success": k / 20, "low": 0.1, "high": 0.5, "base": 0.0}
               for arm, k in zip(compare.ARMS, (6, 3, 5))}
    page = compare.markdown("calculation", dict.fromkeys(compare.ARMS, 12), results)
    assert "| filtered | 12 | 20 | 0.0% | 30.0% (rl) | 10.0% to 50.0% |" in page
    assert page.count("\n| ") == 4  # header, and one row per arm


class Started(Exception):
    """Raised by a stand-in for training: the comparison got as far as training an arm."""


def test_a_rerun_into_the_same_folder_resumes_only_the_comparison_that_started_it(tmp_path, monkeypatch, caplog):
    run = parsed_run(tmp_path, ["new", "kept", "parsed", "new", "kept", "parsed"])
    (run / "config.yaml").write_text("domains: [calculation]\nchallenger_proposals: 0\n")

    def training(config, default_name):
        raise Started(config.name)

    monkeypatch.setattr("train.run.train", training)
    args = ["--run", str(run), "--heldout", "3", "--size", "4"]
    with pytest.raises(Started):
        compare.main(args)
    for changed in (["--size", "2"], ["--heldout", "4"], ["--set", "steps=3"]):
        assert compare.main([*args, *changed]) == 2
    assert "size=4" in caplog.text and "size=2" in caplog.text and "pass another --out" in caplog.text
    with pytest.raises(Started):  # the same comparison goes on
        compare.main([*args, "--arms", "scripted"])


@pytest.mark.parametrize("flags", [["--size", "0"], ["--heldout", "-1"], ["--arms", ","]])
def test_sizes_and_arms_that_compare_nothing_exit_2(flags, tmp_path, capsys):
    run = parsed_run(tmp_path, ["new", "kept"])
    (run / "config.yaml").write_text("domains: [calculation]\n")
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--run", str(run), *flags])
    assert exit_.value.code == 2 and "must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--size", "1"], ["--heldout", "1"]])
def test_a_size_or_held_out_set_of_one_task_is_accepted(flags, tmp_path, capsys, caplog):
    """The flags pass; the run folder (no parsed.jsonl here) is what is refused next."""
    assert compare.main(["--run", str(tmp_path), *flags]) == 2
    assert "must be at least 1" not in capsys.readouterr().err and "holds no parsed.jsonl" in caplog.text


def test_a_run_folder_without_its_config_exits_2_in_a_line(tmp_path, caplog):
    """A run whose pool is there but not its config.yaml: said in a line, not a FileNotFoundError."""
    run = parsed_run(tmp_path, ["new", "kept"])
    assert compare.main(["--run", str(run)]) == 2
    assert "holds no parsed.jsonl and config.yaml" in caplog.text


def trajectories(folder: Path, phases: dict[str, list[float]], domain: str = "calculation") -> None:
    """A run folder's trajectories.jsonl: one episode per reward, phase by phase, in the order given."""
    append_jsonl(folder / "trajectories.jsonl", [{"phase": phase, "domain": domain, "step": 0, "reward": reward}
                                                 for phase, rewards in phases.items() for reward in rewards])


def test_an_arms_result_is_its_last_evaluation_with_the_base_models_success(tmp_path):
    trajectories(tmp_path, {"eval:base": [1.0, 0.0, 0.0, 0.0], "rl": [1.0, 1.0, 1.0, 1.0],
                            "eval:rl": [1.0, 1.0, 1.0, 0.0]})
    trajectories(tmp_path, {"eval:base": [0.0, 0.0]}, domain="web")  # another domain's episodes count for nothing
    result = compare.arm_result(tmp_path, "calculation")
    assert result == {"stage": "rl", "n": 4, "successes": 3, "success": 0.75, "low": pytest.approx(0.301, abs=1e-3),
                      "high": pytest.approx(0.954, abs=1e-3), "base": 0.25}


def training_stand_in(trained: list):
    """A stand-in for ``train.run.train``: each arm's run folder gets a held-out evaluation (3 of 4 solved), and a
    base one (1 of 4) only when its config asks for it; the configs it was given go into ``trained``."""

    def training(config, default_name):
        trained.append(config)
        folder = Path(config.runs_dir) / config.name
        trajectories(folder, {"eval:base": [1.0, 0.0, 0.0, 0.0]} if config.eval_base else {})
        trajectories(folder, {"eval:rl": [1.0, 1.0, 1.0, 0.0]})
        return SimpleNamespace(path=folder), None

    return training


def test_the_base_model_is_measured_once_on_the_first_arm_and_reported_for_every_arm(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr("train.run.train", training_stand_in(trained))
    sets = {arm: make_tasks(seed=77, n=2) for arm in compare.ARMS}
    config = load_config(None, {"domains": ["calculation"], "challenger_proposals": 0})
    results = compare.train_arms(compare.ARMS, sets, make_tasks(seed=78, n=2), config, tmp_path, "calculation")
    assert [(c.name, c.eval_base) for c in trained] == [("filtered", True), ("unfiltered", False), ("scripted", False)]
    assert {arm: (r["base"], r["success"]) for arm, r in results.items()} == dict.fromkeys(compare.ARMS, (0.25, 0.75))


def test_a_finished_comparison_writes_each_arms_result_to_its_summary_and_chart(tmp_path, monkeypatch):
    run = parsed_run(tmp_path, ["new", "kept", "parsed", "new"])
    (run / "config.yaml").write_text("domains: [calculation]\nchallenger_proposals: 0\n")
    monkeypatch.setattr("train.run.train", training_stand_in([]))
    assert compare.main(["--run", str(run), "--heldout", "2", "--size", "2", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sizes"] == dict.fromkeys(compare.ARMS, 2)
    assert {arm: (r["successes"], r["n"], r["base"]) for arm, r in summary["results"].items()} == \
        dict.fromkeys(compare.ARMS, (3, 4, 0.25))
    page = (tmp_path / "out" / "summary.md").read_text()
    assert all(f"| {arm} | 2 | 4 | 25.0% | 75.0% (rl) | 30.1% to 95.4% |" in page for arm in compare.ARMS)
    assert "![chart](chart.png)" in page and (tmp_path / "out" / "chart.png").stat().st_size > 0


@pytest.mark.parametrize("raised, code, said", [
    (ModelNotFoundError("cannot load model '/nonexist'"), 2, "cannot load model '/nonexist'"),
    (OSError(errno.EROFS, "Read-only file system"), 2, "Read-only file system; the comparison goes on from its arms"),
    (KeyboardInterrupt(), 130, "goes on from its arms when this same command is run again"),
])
def test_an_arm_that_cannot_train_ends_the_comparison_in_a_line(raised, code, said, tmp_path, monkeypatch, caplog):
    run = parsed_run(tmp_path, ["new", "kept", "parsed"])
    (run / "config.yaml").write_text("domains: [calculation]\nchallenger_proposals: 0\n")

    def training(config, default_name):
        raise raised

    monkeypatch.setattr("train.run.train", training)
    assert compare.main(["--run", str(run), "--heldout", "2", "--size", "2"]) == code
    assert said in caplog.text
