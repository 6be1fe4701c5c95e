"""Reports: each eval's markdown table and chart, and one page per training run.

Every eval writes its results as a *summary* (a JSON object whose ``kind`` says which eval made it)
into its output folder, through :func:`write_eval`: ``summary.json``, ``summary.md`` and
``chart.png``. Rendering lives here, in one place, so that an eval's own page and a run's page show
the same table.

A run's page, ``RUN/report.md`` (:func:`write_run_page`; ``python -m eval.report RUN``, ``make
report RUN=…``), is built from the run folder's files alone (train/rundir.py lays them out), so it
can be rebuilt at any time, for a finished run or one still going: the config in brief, held-out
success per stage with 95% intervals, how the tasks were made (LLM-written or scripted, the
challenger's funnel), wall time per stage, the plots (drawn again from metrics.jsonl by
:mod:`eval.curves`), example episodes as transcripts, and every eval summary found under ``RUN``
(write an eval there with ``--out RUN/eval/<name>``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from envs.cli import ShowDefaults
from envs.records import RecordsError, read_jsonl, write_atomic
from eval import curves
from eval.cli import InputError, run
from eval.estimators import wilson_interval

log = logging.getLogger(__name__)

Summary = dict[str, Any]

def slug(name: str) -> str:
    """``name`` as a folder name: runs of anything but letters, digits, ``.``, ``_``, ``+`` and ``-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-") or "unnamed"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- held-out CaTs


def _heldout_metrics(k: int) -> tuple[str, ...]:
    """The summary's metrics worth showing: with one sample a task, Pass@k is Pass@1 again."""
    return ("pass@1",) if k == 1 else ("pass@1", "pass@k")


def _heldout_markdown(summary: Summary) -> str:
    k, runs = summary["k"], summary["runs"]
    domains = sorted({d for r in runs.values() for d in r["domains"]}, key=lambda d: (d == "all", d))
    metrics = _heldout_metrics(k)
    header = ["domain", "tasks"] + [f"{label} {metric.replace('@k', f'@{k}')}" for label in runs for metric in metrics]
    rows = []
    for domain in domains:
        cells = [domain, next(r["domains"][domain]["tasks"] for r in runs.values() if domain in r["domains"])]
        for result in runs.values():
            row = result["domains"].get(domain)
            cells += [_percent(row[metric]) if row else "" for metric in metrics]
        rows.append(cells)
    models = ", ".join(f"{label}: `{r['model']}`" for label, r in runs.items())
    title = "Pass@1" if k == 1 else f"Pass@1 and Pass@{k}"
    return (f"### Held-out CaTs: {title} ({summary['n']} samples a task)\n\n{models}\n\n"
            + _table(header, rows))


def _heldout_chart(summary: Summary, path: Path) -> None:
    plt = curves.pyplot()
    k, runs = summary["k"], summary["runs"]
    domains = sorted({d for r in runs.values() for d in r["domains"]}, key=lambda d: (d == "all", d))
    bars = [(label, metric) for label in runs for metric in _heldout_metrics(k)]
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(domains)), 4))
    for i, (label, metric) in enumerate(bars):
        values = [runs[label]["domains"].get(d, {}).get(metric, 0.0) for d in domains]
        ax.bar([x + i * width for x in range(len(domains))], values, width,
               label=f"{label} {metric if metric == 'pass@1' else f'pass@{k}'}")
    ax.set_xticks([x + width * (len(bars) - 1) / 2 for x in range(len(domains))], domains)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success")
    ax.set_title(f"Held-out CaTs ({summary['n']} samples a task)")
    ax.legend()
    fig.tight_layout()
    curves.save(fig, path)


# ---------------------------------------------------------------- M3ToolEval


def _m3tooleval_markdown(summary: Summary) -> str:
    rows = [[name, row["tasks"], row["correct"], _percent(row["success_rate"]), f"{row['average_turns']:.2f}"]
            for name, row in sorted(summary["domains"].items(), key=lambda item: (item[0] == "all", item[0]))]
    return (f"### M3ToolEval: `{summary['model']}`, {summary['action_mode']} actions\n\n"
            + _table(["domain", "tasks", "correct", "success rate", "average turns"], rows))


def _m3tooleval_chart(summary: Summary, path: Path) -> None:
    plt = curves.pyplot()
    names = sorted(summary["domains"], key=lambda name: (name == "all", name))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
    ax.bar(names, [summary["domains"][n]["success_rate"] for n in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title(f"M3ToolEval: {summary['model']} ({summary['action_mode']} actions)")
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    curves.save(fig, path)


# ---------------------------------------------------------------- tau-bench


def _taubench_markdown(summary: Summary) -> str:
    rows = [[k, _percent(value)] for k, value in summary["pass^k"].items()]
    return (f"### tau-bench {summary['domain']} ({summary['split']}): `{summary['model']}`, "
            f"{summary['tasks']} tasks x {summary['trials']} trials\n\n"
            f"Average reward {summary['average_reward']:.3f}.{_taubench_failures(summary)}\n\n"
            + _table(["k", "pass^k"], rows))


def _taubench_failures(summary: Summary) -> str:
    causes = summary.get("failures")  # summaries written before the causes were counted have none
    if not causes or not causes["failed"]:
        return ""
    return (f" Of the {causes['failed']} failed conversations, {causes['data']} ended with the wrong data and "
            f"{causes['outputs']} without a required output said.")


def _taubench_chart(summary: Summary, path: Path) -> None:
    plt = curves.pyplot()
    ks = [int(k) for k in summary["pass^k"]]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ks, list(summary["pass^k"].values()), marker="o")
    ax.set_xticks(ks)
    ax.set_ylim(0, 1)
    ax.set_xlabel("k")
    ax.set_ylabel("pass^k")
    ax.set_title(f"tau-bench {summary['domain']}: {summary['model']}")
    fig.tight_layout()
    curves.save(fig, path)


# ---------------------------------------------------------------- the paper's table (eval/paper.py)

PAPER_HEADINGS = {"calculation": "Calculation", "web": "Web Browsing", "retail": "Retail", "airline": "Airline"}


def _paper_markdown(summary: Summary) -> str:
    """The paper's layout: a column per environment and the average, a row per metric, the paper's
    published averages below ("-" where an environment was not played, or the paper's figure is not given)."""
    played = summary["environments"]
    k = summary["k"]
    header = ["model", "metric", *PAPER_HEADINGS.values(), "Average"]
    rows = [[f"`{summary['model']}`", metric,
             *(_percent(played[name][key]) if name in played else "-" for name in PAPER_HEADINGS),
             _percent(summary["average"][key])]
            for metric, key in (("Pass@1", "pass@1"), (f"Pass@{k}", f"pass@{k}"))]
    rows += [[f"{row['model']} (paper)", "Pass@1", *("-" for _ in PAPER_HEADINGS), f"{row['average_pass@1']:.1f}%"]
             for row in summary["paper"]]
    tasks = ", ".join(f"{PAPER_HEADINGS[name]} {row['tasks']} of {row['of']}" for name, row in played.items())
    limit = f" (LIMIT {summary['limit']})" if summary.get("limit") else ""
    return (f"### The paper's benchmarks: `{summary['model']}`\n\n"
            f"Pass@1 is the mean success of {summary['samples']} samples a task at temperature "
            f"{summary['temperature']} (at most {summary['max_new_tokens']} new tokens a message), Pass@{k} the "
            f"chance that one of {k} succeeds; tasks{limit}: {tasks}. "
            f"M3ToolEval in {summary['action_mode']} actions; tau-bench's user simulated by "
            f"`{summary['user_model']}`, at most {summary['max_steps']} agent steps a conversation (upstream: 30)."
            f"\n\n" + _table(header, rows))


def _paper_chart(summary: Summary, path: Path) -> None:
    plt = curves.pyplot()
    k = summary["k"]
    names = [n for n in PAPER_HEADINGS if n in summary["environments"]]
    labels = [PAPER_HEADINGS[n] for n in names] + ["Average"]
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(labels)), 4))
    for offset, key in ((-0.2, "pass@1"), (0.2, f"pass@{k}")):
        values = [summary["environments"][n][key] for n in names] + [summary["average"][key]]
        ax.bar([i + offset for i in range(len(labels))], values, width=0.4, label=key.replace("pass", "Pass"))
    for row in summary["paper"]:
        ax.axhline(row["average_pass@1"] / 100, linestyle="--", linewidth=0.8, color="grey")
        ax.annotate(f"paper: {row['model']}", (len(labels) - 0.5, row["average_pass@1"] / 100), fontsize=6,
                    ha="right", va="bottom", color="grey")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success")
    ax.set_title(f"The paper's benchmarks: {summary['model']}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    curves.save(fig, path)


RENDERERS: dict[str, tuple[Callable[[Summary], str], Callable[[Summary, Path], None]]] = {
    "heldout": (_heldout_markdown, _heldout_chart),
    "m3tooleval": (_m3tooleval_markdown, _m3tooleval_chart),
    "taubench": (_taubench_markdown, _taubench_chart),
    "paper": (_paper_markdown, _paper_chart),
}


def markdown(summary: Summary) -> str:
    """The eval's result table, with a heading saying what was evaluated."""
    return RENDERERS[summary["kind"]][0](summary)


def write_eval(summary: Summary, out: Path) -> None:
    """``summary.json``, ``summary.md`` (the table and the chart) and ``chart.png`` in ``out``; an eval
    written under a training run's ``eval/`` folder also goes on the run's page at once."""
    if summary.get("kind") not in RENDERERS:
        raise ValueError(f"unknown summary kind {summary.get('kind')!r}; known: {', '.join(RENDERERS)}")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    RENDERERS[summary["kind"]][1](summary, out / "chart.png")
    write_atomic(out / "summary.md", markdown(summary) + "\n\n![chart](chart.png)\n")
    log.info("wrote %s", out / "summary.md")
    if (run_dir := _run_above(out)) is not None:
        try:
            log.info("added it to %s", write_run_page(run_dir))
        except (InputError, RecordsError) as error:  # the eval stands on its own: say why its page is stale
            log.warning("the run's page was not updated (%s); `python -m eval.report %s` rebuilds it", error, run_dir)


def _run_above(out: Path) -> Path | None:
    """The training run ``out`` is an eval folder of (``RUN/eval/<name>``, or deeper), if any."""
    for folder in out.resolve().parents:
        if folder.name == "eval":
            return folder.parent if is_run(folder.parent) else None
    return None


def is_run(folder: Path) -> bool:
    """Whether ``folder`` is a training run's (train/rundir.py writes these first)."""
    return (folder / "config.yaml").is_file() or (folder / "metrics.jsonl").is_file()


# ---------------------------------------------------------------- a training run's page

CONFIG_BRIEF = ("model", "device", "domains", "pool", "tasks_per_domain", "heldout_per_domain", "challenger_proposals",
                "warm_start_epochs", "warm_start_domains", "warm_start_tasks", "algorithm", "rl_domains", "steps",
                "tasks_per_step", "group_size", "max_turns", "max_new_tokens", "temperature", "lr", "seed")
"""The config keys a reader needs to place a run (what model, which domains, how much training);
the whole config is one link away."""

TRAINER_STAGES = ("eval_base", "warm_start", "eval_warm_start", "rl", "eval_rl")
"""The trainer's stages in order; an evaluation stage's eval records carry its name less ``eval_``."""

SYSTEM_CHARS, MESSAGE_CHARS = 300, 1500
"""Characters of a system prompt, and of any other message, an example transcript shows."""


def read_json(file: Path) -> Any:
    """A run's JSON file (``split.json``, ``tasks.json``), ``{}`` while not written yet. One that does not
    parse is an :class:`InputError` naming it: each command that reads a run's files says it the same way."""
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except ValueError as error:  # not JSON, or not text
        raise InputError(f"{file} is not valid JSON: {error}") from None


def read_config(file: Path) -> dict[str, Any]:
    """A run's ``config.yaml``, ``{}`` while not written yet. One that does not parse, or that holds something
    other than keys and values, is an :class:`InputError` in one line naming it, not a traceback (or a wrong
    config) in whatever reads a key of it."""
    try:
        config = yaml.safe_load(file.read_text()) if file.is_file() else {}
    except (yaml.YAMLError, ValueError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InputError(f"{file} is not valid YAML: {getattr(error, 'problem', None) or error}{where}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InputError(f"{file} is not a config: it holds a {type(config).__name__}, not keys and values")
    return config


@dataclass
class RunFiles:
    """The small files of a run's folder (laid out as train/rundir.py says); one not written yet
    reads as empty. trajectories.jsonl, which can be large, is read only for the example episodes."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    tasks: dict[str, dict[str, Any]]
    split: dict[str, dict[str, list[str]]]

    @classmethod
    def read(cls, path: Path) -> RunFiles:
        try:
            metrics = read_jsonl(path / "metrics.jsonl")
        except RecordsError as error:
            raise InputError(str(error)) from None
        return cls(path, read_config(path / "config.yaml"), metrics, read_json(path / "tasks.json"),
                   read_json(path / "split.json"))

    def evals(self) -> list[dict[str, Any]]:
        return [m for m in self.metrics if m.get("phase") == "eval"]


def _duration(seconds: float) -> str:
    if round(seconds, 1) < 60:  # as shown: 59.97 s is a minute
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _brief(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {_brief(item)}" for key, item in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(map(_brief, value)) or "-"
    return f"`{value}`" if isinstance(value, str) and value else str(value if value != "" else "-")


def _config_section(run: RunFiles) -> str:
    domains = run.config.get("domains") or []

    def of_run(value: Any) -> Any:  # a per-domain mapping: the run's domains only
        return {d: v for d, v in value.items() if d in domains} if isinstance(value, dict) and domains else value

    rows = [[key, _brief(of_run(run.config[key]))] for key in CONFIG_BRIEF if key in run.config]
    return "## Config in brief\n\n" + _table(["key", "value"], rows) + "\n\nEvery key: [config.yaml](config.yaml)."


def _success_cell(success: float, n: int | None) -> str:
    """A held-out rate with its 95% Wilson interval over the ``n`` tasks (when ``n`` is known)."""
    if not n:
        return _percent(success)
    low, high = wilson_interval(round(success * n), n)
    return f"{_percent(success)} ({100 * low:.0f}-{100 * high:.0f}%)"


def _stage_section(run: RunFiles) -> str:
    evals = run.evals()
    if not evals:
        return "## Held-out success per stage\n\nNo evaluation logged yet."
    domains = list(dict.fromkeys(d for m in evals for d in m.get("success", {})))
    rows = []
    for domain in domains:
        for label, success, n in ((domain, "success", "n"),
                                  (f"{domain}, 2+ calls", "success_multi_call", "n_multi_call")):
            if not any(domain in m.get(success, {}) for m in evals):
                continue
            sizes = sorted({m[n][domain] for m in evals if domain in m.get(n, {})})
            cells = [_success_cell(m[success][domain], m.get(n, {}).get(domain)) if domain in m.get(success, {})
                     else "-" for m in evals]
            rows.append([label, "/".join(map(str, sizes)) or "?"] + cells)
    header = ["domain", "held-out n"] + [f"{m.get('stage', '?')} (step {m['step']})" for m in evals]
    return ("## Held-out success per stage\n\nOne episode per held-out task at each stage; in brackets the 95% "
            "(Wilson) interval over the held-out tasks; \"2+ calls\": the held-out tasks whose example solution "
            "makes two or more tool calls.\n\n" + _table(header, rows))


def _funnel_table(tasks: dict[str, dict[str, Any]]) -> str:
    funnels = {d: made["funnel"] for d, made in tasks.items() if made.get("funnel", {}).get("reached")}
    if not funnels:
        return ""
    stages = list(dict.fromkeys(stage for f in funnels.values() for stage in f["reached"]))
    rows = []
    for domain, funnel in funnels.items():
        total = funnel["reached"].get(stages[0], 0) or 1
        cells = [f"{funnel['reached'].get(s, 0)} ({100 * funnel['reached'].get(s, 0) / total:.0f}%)" for s in stages]
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(funnel.get("reasons", {}).items(), key=lambda i: -i[1]))
        rows.append([domain] + cells + [reasons or "-"])
    return ("### The LLM challenger's funnel\n\nHow many of the model's proposals reached each stage, and why the "
            "others stopped.\n\n" + _table(["domain"] + stages + ["stopped"], rows))


def _tasks_section(run: RunFiles) -> str:
    domains = list(dict.fromkeys([*run.tasks, *run.split]))
    if not domains:
        return "## Tasks\n\nNo tasks.json or split.json yet."
    rows = [[d, run.tasks.get(d, {}).get("llm", "?"), run.tasks.get(d, {}).get("scripted", "?"),
             len(run.split.get(d, {}).get("train", [])), len(run.split.get(d, {}).get("heldout", []))] for d in domains]
    parts = ["## Tasks\n\nHow each domain's tasks were made (the model as challenger, topped up by the scripted "
             "challenger) and how they were split. All tasks: [pool.jsonl](pool.jsonl).",
             _table(["domain", "LLM-written", "scripted", "train", "held-out"], rows)]
    if funnel := _funnel_table(run.tasks):
        parts.append(funnel)
    for domain, made in run.tasks.items():
        if made.get("example"):
            parts.append(f"Start of the model's first {domain} proposal:\n\n" + _fenced(made["example"]))
    return "\n\n".join(parts)


def stage_seconds(metrics: Sequence[dict[str, Any]]) -> list[tuple[str, float, str]]:
    """(stage, seconds, where the figure comes from) per finished stage: the trainer's stage records,
    or else what the eval and step records add up to."""
    logged = [(m["stage"], float(m["seconds"]), "stage record") for m in metrics
              if m.get("phase") == "stage" and isinstance(m.get("seconds"), (int, float))]
    if logged:
        return logged
    evals = {m.get("stage"): float(m["seconds"]) for m in metrics if m.get("phase") == "eval" and "seconds" in m}
    rows = []
    for stage in TRAINER_STAGES:
        if stage.startswith("eval_") and stage.removeprefix("eval_") in evals:
            rows.append((stage, evals.pop(stage.removeprefix("eval_")), "its eval record"))
        steps = [m for m in metrics if m.get("phase") == stage]
        if steps:
            rows.append((stage, sum(m.get("rollout_s", 0) + m.get("update_s", 0) for m in steps), "sum of its steps"))
    return rows + [(f"eval_{name} (during rl)", seconds, "its eval record") for name, seconds in evals.items()]


def _wall_time_section(run: RunFiles) -> str:
    rows = stage_seconds(run.metrics)
    if not rows:
        return "## Wall time per stage\n\nNo stage has finished yet."
    table = _table(["stage", "wall time", "from"], [[s, _duration(t), src] for s, t, src in rows])
    counted = "" if rows[0][2] == "stage record" else " (updates and evaluations only: writing the tasks, loading " \
        "the model and checkpoints are not in these records)"
    return f"## Wall time per stage\n\n{table}\n\nTotal: {_duration(sum(t for _, t, _ in rows))}{counted}."


def _plots_section(run: RunFiles) -> str:
    curves.save(curves.heldout_figure(run.metrics), run.path / "plots" / "heldout.png")
    curves.save(curves.training_figure(run.metrics), run.path / "plots" / "training.png")
    panels = curves.training_panels(run.metrics)
    rows = [[s.label, len(s.points), f"{s.points[0][1]:.4g}", f"{s.points[-1][1]:.4g}",
             f"{min(v for _, v in s.points):.4g}", f"{max(v for _, v in s.points):.4g}"]
            for p in panels for s in p.drawn]
    constant = [f"{s.label} = {s.points[0][1]:.4g}" for p in panels for s in p.constant]
    parts = ["## Plots", "![held-out success per stage](plots/heldout.png)", "![training curves](plots/training.png)"]
    if rows:
        parts.append(_table(["training curve", "points", "first", "last", "min", "max"], rows))
    if constant:
        parts.append("Constant over the run (not drawn): " + "; ".join(constant) + ".")
    return "\n\n".join(parts)


def _fenced(text: str) -> str:
    """``text`` in a code block whose fence no run of backticks inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def transcript(messages: Sequence[dict[str, Any]]) -> str:
    """An episode's messages as ``[role] content`` blocks, long ones cut (a system prompt the most)."""
    lines = []
    for message in messages:
        content, role = str(message.get("content", "")), message.get("role", "?")
        limit = SYSTEM_CHARS if role == "system" else MESSAGE_CHARS
        if len(content) > limit:
            content = f"{content[:limit]} [... {len(content) - limit:,} more characters]"
        lines.append(f"[{role}] {content}")
    return _fenced("\n\n".join(lines))


def example_episodes(path: Path) -> tuple[dict[str, int], dict[str, dict[str, dict[str, Any]]]]:
    """Episodes per phase in trajectories.jsonl, and per domain one held-out success and one failure,
    from the latest evaluation that has one."""
    counts: dict[str, int] = {}
    examples: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        records = read_jsonl(path)
    except RecordsError as error:
        raise InputError(str(error)) from None
    for record in records:
        counts[record.get("phase", "?")] = counts.get(record.get("phase", "?"), 0) + 1
    for record in reversed(records):
        if str(record.get("phase", "")).startswith("eval:") and "domain" in record:
            kind = "success" if (record.get("reward") or 0) > 0 else "failure"
            examples.setdefault(record["domain"], {}).setdefault(kind, record)
    return counts, examples


def _turns(turns: Any) -> str:
    return "1 turn" if turns == 1 else f"{turns if turns is not None else '?'} turns"


def _episodes_section(run: RunFiles) -> str:
    path = run.path / "trajectories.jsonl"
    if not path.is_file():
        return "## Episodes\n\nNo trajectories.jsonl (the run was started with `save_trajectories: false`, or has " \
               "played nothing yet)."
    counts, examples = example_episodes(path)
    listed = ", ".join(f"{n} {phase}" for phase, n in counts.items())
    parts = [f"## Episodes\n\nEvery episode the run played: [trajectories.jsonl](trajectories.jsonl) ({listed}). "
             "One held-out success and one failure per domain, from the latest evaluation that has one:"]
    for domain in dict.fromkeys([*run.split, *examples]):
        picked = examples.get(domain, {})
        for kind in ("success", "failure"):
            if kind not in picked:
                parts.append(f"### {domain}: no held-out {kind}")
                continue
            r = picked[kind]
            parts.append(f"### {domain}: a {kind} ({r['phase'].removeprefix('eval:')} evaluation, task "
                         f"`{r.get('task_id', '?')}`, reward {r.get('reward')}, {_turns(r.get('turns'))})\n\n"
                         + transcript(r.get("messages", [])))
    return "\n\n".join(parts)


def _evals_section(run_dir: Path) -> str:
    parts = []
    for path in sorted(run_dir.rglob("summary.json"), key=lambda p: (len(p.parts), p)):  # a table before its parts
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
            log.warning("%s cannot be read (%s), skipped", path, error)
            continue
        if not isinstance(summary, dict) or summary.get("kind") not in RENDERERS:
            log.warning("%s is not an eval summary written by eval/, skipped", path)
            continue
        folder = path.parent.relative_to(run_dir).as_posix()
        chart = f"\n\n![chart]({folder}/chart.png)" if (path.parent / "chart.png").is_file() else ""
        parts.append(f"`{folder}`\n\n{markdown(summary)}{chart}")
    return "\n\n".join(["## Evaluations", *parts]) if parts else ""


def write_run_page(run_dir: Path) -> Path:
    """``RUN/report.md`` and its two plots, built from the run folder's files alone: the config in
    brief, held-out success per stage, how the tasks were made, wall time per stage, the plots,
    example episodes, then every eval found under ``RUN``."""
    if not run_dir.is_dir():
        raise InputError(f"run folder {run_dir} does not exist")
    run = RunFiles.read(run_dir)
    evals = _evals_section(run_dir)
    if not (run.config or run.metrics or run.tasks or evals):
        raise InputError(f"{run_dir} has no config.yaml, metrics.jsonl, tasks.json or eval summary (summary.json) "
                         "to report: is it a run folder?")
    parts = [f"# Run `{run_dir.name}`", _config_section(run), _stage_section(run), _tasks_section(run),
             _wall_time_section(run), _plots_section(run), _episodes_section(run), evals]
    page = run_dir / "report.md"
    write_atomic(page, "\n\n".join(p for p in parts if p) + "\n")
    return page


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowDefaults)
    parser.add_argument("run", type=Path, help="a training run's folder (runs/<name>)")
    args = parser.parse_args(argv)
    page = write_run_page(args.run)
    print(f"{_stage_section(RunFiles.read(args.run))}\n\nwrote {page} (plots in {args.run / 'plots'})")


if __name__ == "__main__":
    sys.exit(run(main, interrupted="interrupted: the run is untouched; run the same command again to write its "
                                   "report whole"))
