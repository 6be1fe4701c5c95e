"""The three training sets of ``python -m train.compare``: equal size, filtered = kept proposals,
unfiltered = parsed proposals kept or not, scripted = the domain's scripted tasks, one held-out set
of scripted tasks apart from all three."""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path

import pytest

from agents.models import ModelNotFoundError
from envs.calculation.challenger import make_tasks
from envs.pool import append_pool
from train import compare
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
