"""Reports: each eval's table and chart, and a training run's page gathering its curves and evals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval import report
from eval.cli import run

HELDOUT = {"kind": "heldout", "k": 4, "n": 8, "runs": {
    "base": {"model": "m", "domains": {"retail": {"tasks": 10, "pass@1": 0.1, "pass@k": 0.3},
                                       "all": {"tasks": 10, "pass@1": 0.1, "pass@k": 0.3}}},
    "adapter": {"model": "m+a", "domains": {"retail": {"tasks": 10, "pass@1": 0.4, "pass@k": 0.6},
                                            "all": {"tasks": 10, "pass@1": 0.4, "pass@k": 0.6}}}}}
M3 = {"kind": "m3tooleval", "model": "m", "action_mode": "code", "domains": {
    "web_browsing": {"tasks": 34, "correct": 17, "success_rate": 0.5, "average_turns": 4.25},
    "all": {"tasks": 34, "correct": 17, "success_rate": 0.5, "average_turns": 4.25}}}
TAU = {"kind": "taubench", "domain": "retail", "split": "test", "model": "m", "tasks": 115, "trials": 2,
       "pass^k": {"1": 0.3, "2": 0.2}, "average_reward": 0.3, "successes": {}}


def synthetic_run(tmp_path: Path) -> Path:
    folder = tmp_path / "run-7"
    folder.mkdir()
    lines = [json.dumps({"step": s, "reward_mean": s / 10, "success_rate": s / 20, "loss": 1 / (s + 1),
                         "note": "rl", "ok": True}) for s in range(10)]
    lines.insert(5, json.dumps({"step": 4, "phase": "eval", "success": {"retail": 0.25, "airline": 0.5}}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 10, "rew')  # a crash mid-line
    (folder / "config.yaml").write_text("algorithm: grpo\nlr: 1.0e-5\n")
    for name, summary in (("heldout", HELDOUT), ("m3tooleval", M3), ("taubench-retail", TAU)):
        report.write_eval(summary, folder / "eval" / name)
    return folder


@pytest.mark.parametrize("summary, row", [
    (HELDOUT, "| retail | 10 | 10.0% | 30.0% | 40.0% | 60.0% |"),
    (M3, "| web_browsing | 34 | 17 | 50.0% | 4.25 |"),
    (TAU, "| 2 | 20.0% |"),
])
def test_each_eval_gets_a_markdown_table_and_a_png_chart(tmp_path, summary, row):
    report.write_eval(summary, tmp_path)
    page = (tmp_path / "summary.md").read_text()
    assert row in page and "![chart](chart.png)" in page
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_a_runs_page_gathers_its_curves_config_and_evals(tmp_path):
    folder = synthetic_run(tmp_path)
    assert run(report.main, [str(folder)]) == 0
    page = (folder / "report.md").read_text()
    assert page.startswith("# Run `run-7`") and "algorithm: grpo" in page
    assert "## Training (10 steps)" in page and "![training curves](curves.png)" in page
    assert "| reward_mean | 10 | 0.9 | 0 | 0.9 |" in page and "| loss | 10 | 0.1 | 0.1 | 1 |" in page
    assert "| eval: success.retail | 1 | 0.25 | 0.25 | 0.25 |" in page  # a phase's per-domain values
    assert "note" not in page and "| ok |" not in page  # not numbers: no curves
    assert page.index("| reward_mean") < page.index("| success_rate") < page.index("| eval: success") \
        < page.index("| loss")
    for folder_name in ("eval/heldout", "eval/m3tooleval", "eval/taubench-retail"):
        assert f"![chart]({folder_name}/chart.png)" in page and (folder / folder_name / "chart.png").is_file()
    assert "| retail | 10 | 10.0% | 30.0% | 40.0% | 60.0% |" in page
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_with_only_metrics_gets_a_page_too(tmp_path):
    folder = tmp_path / "early"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 0, "reward_mean": 0.0}) + "\n")
    page = report.write_run_page(folder).read_text()
    assert "## Training (1 steps)" in page and "Evaluations" not in page


@pytest.mark.parametrize("make, message", [(lambda p: p / "missing", "does not exist"),
                                           (lambda p: p, "neither metrics.jsonl nor any eval summary")])
def test_a_missing_or_empty_run_folder_exits_2(tmp_path, caplog, make, message):
    assert run(report.main, [str(make(tmp_path))]) == 2
    assert message in caplog.text


def test_names_become_folder_names():
    assert report.slug("HuggingFaceTB/SmolLM2-135M-Instruct+adapter 3") == "HuggingFaceTB-SmolLM2-135M-Instruct+adapter-3"
