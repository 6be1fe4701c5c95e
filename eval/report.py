"""Reports: each eval's markdown table and chart, and one page per training run.

Every eval writes its results as a *summary* (a JSON object whose ``kind`` says which eval made it)
into its output folder, through :func:`write_eval`: ``summary.json``, ``summary.md`` and
``chart.png``. Rendering lives here, in one place, so that an eval's own page and a run's page show
the same table.

A run's page (``python -m eval.report RUN``, ``make report RUN=…``) gathers the training curves of
``RUN/metrics.jsonl`` (one JSON object per step, with ``step``, numeric fields such as
``reward_mean``, per-domain mappings such as ``success``, and optionally a ``phase``) into
``RUN/curves.png``, and every eval summary found under
``RUN`` (write an eval there with ``--out RUN/eval/<name>``), into ``RUN/report.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from envs.records import RecordsError, read_jsonl
from eval.cli import InputError, run

log = logging.getLogger(__name__)

Summary = dict[str, Any]

FIRST_CURVES = ("reward_mean", "success_rate", "success")
"""Curves shown first on a run's page; any other numeric field of ``metrics.jsonl`` follows."""


def slug(name: str) -> str:
    """``name`` as a folder name: runs of anything but letters, digits, ``.``, ``_``, ``+`` and ``-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-") or "unnamed"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, on any machine
    import matplotlib.pyplot as plt

    return plt


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- held-out CaTs


def _heldout_markdown(summary: Summary) -> str:
    k, runs = summary["k"], summary["runs"]
    domains = sorted({d for r in runs.values() for d in r["domains"]}, key=lambda d: (d == "all", d))
    header = ["domain", "tasks"] + [f"{label} {metric}" for label in runs for metric in ("pass@1", f"pass@{k}")]
    rows = []
    for domain in domains:
        cells = [domain, next(r["domains"][domain]["tasks"] for r in runs.values() if domain in r["domains"])]
        for result in runs.values():
            row = result["domains"].get(domain)
            cells += [_percent(row["pass@1"]), _percent(row["pass@k"])] if row else ["", ""]
        rows.append(cells)
    models = ", ".join(f"{label}: `{r['model']}`" for label, r in runs.items())
    return (f"### Held-out CaTs: Pass@1 and Pass@{k} ({summary['n']} samples a task)\n\n{models}\n\n"
            + _table(header, rows))


def _heldout_chart(summary: Summary, path: Path) -> None:
    plt = _pyplot()
    k, runs = summary["k"], summary["runs"]
    domains = sorted({d for r in runs.values() for d in r["domains"]}, key=lambda d: (d == "all", d))
    bars = [(label, metric) for label in runs for metric in ("pass@1", "pass@k")]
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
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- M3ToolEval


def _m3tooleval_markdown(summary: Summary) -> str:
    rows = [[name, row["tasks"], row["correct"], _percent(row["success_rate"]), f"{row['average_turns']:.2f}"]
            for name, row in sorted(summary["domains"].items(), key=lambda item: (item[0] == "all", item[0]))]
    return (f"### M3ToolEval: `{summary['model']}`, {summary['action_mode']} actions\n\n"
            + _table(["domain", "tasks", "correct", "success rate", "average turns"], rows))


def _m3tooleval_chart(summary: Summary, path: Path) -> None:
    plt = _pyplot()
    names = sorted(summary["domains"], key=lambda name: (name == "all", name))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
    ax.bar(names, [summary["domains"][n]["success_rate"] for n in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title(f"M3ToolEval: {summary['model']} ({summary['action_mode']} actions)")
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- tau-bench


def _taubench_markdown(summary: Summary) -> str:
    rows = [[k, _percent(value)] for k, value in summary["pass^k"].items()]
    return (f"### tau-bench {summary['domain']} ({summary['split']}): `{summary['model']}`, "
            f"{summary['tasks']} tasks x {summary['trials']} trials\n\n"
            f"Average reward {summary['average_reward']:.3f}.\n\n" + _table(["k", "pass^k"], rows))


def _taubench_chart(summary: Summary, path: Path) -> None:
    plt = _pyplot()
    ks = [int(k) for k in summary["pass^k"]]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ks, list(summary["pass^k"].values()), marker="o")
    ax.set_xticks(ks)
    ax.set_ylim(0, 1)
    ax.set_xlabel("k")
    ax.set_ylabel("pass^k")
    ax.set_title(f"tau-bench {summary['domain']}: {summary['model']}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


RENDERERS: dict[str, tuple[Callable[[Summary], str], Callable[[Summary, Path], None]]] = {
    "heldout": (_heldout_markdown, _heldout_chart),
    "m3tooleval": (_m3tooleval_markdown, _m3tooleval_chart),
    "taubench": (_taubench_markdown, _taubench_chart),
}


def markdown(summary: Summary) -> str:
    """The eval's result table, with a heading saying what was evaluated."""
    return RENDERERS[summary["kind"]][0](summary)


def write_eval(summary: Summary, out: Path) -> None:
    """``summary.json``, ``summary.md`` (the table and the chart) and ``chart.png`` in ``out``."""
    if summary.get("kind") not in RENDERERS:
        raise ValueError(f"unknown summary kind {summary.get('kind')!r}; known: {', '.join(RENDERERS)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    RENDERERS[summary["kind"]][1](summary, out / "chart.png")
    (out / "summary.md").write_text(markdown(summary) + "\n\n![chart](chart.png)\n")
    log.info("wrote %s", out / "summary.md")


# ---------------------------------------------------------------- a training run's page


def _numbers(record: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """A record's numeric fields, those of a nested mapping (per-domain success) as ``field.key``."""
    for name, value in record.items():
        inner = value.items() if isinstance(value, dict) else [(None, value)]
        for key, number in inner:
            if isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number):
                yield (name if key is None else f"{name}.{key}"), number


def curves(records: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Each numeric field's (step, value) points, named ``phase: field`` where records carry a
    ``phase`` (warm start, RL, eval): reward and success first, then by name."""
    series: dict[str, list[tuple[float, float]]] = {}
    for index, record in enumerate(records):
        step = record.get("step", index)
        phase = record.get("phase")
        for name, value in _numbers(record):
            if name != "step":
                series.setdefault(f"{phase}: {name}" if isinstance(phase, str) else name, []).append((step, value))

    def order(name: str) -> tuple[int, str]:
        field = name.split(": ")[-1].split(".")[0]
        return (FIRST_CURVES.index(field) if field in FIRST_CURVES else len(FIRST_CURVES), name)

    return {name: series[name] for name in sorted(series, key=order)}


def _curves_chart(series: dict[str, list[tuple[float, float]]], path: Path) -> None:
    plt = _pyplot()
    columns = min(3, len(series))
    rows = math.ceil(len(series) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for ax, (name, points) in zip(axes.flat, series.items()):
        ax.plot([s for s, _ in points], [v for _, v in points])
        ax.set_title(name)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(series):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_run_page(run_dir: Path) -> Path:
    """``RUN/report.md``: the training curves and final values, then every eval found under ``RUN``."""
    if not run_dir.is_dir():
        raise InputError(f"run folder {run_dir} does not exist")
    metrics_path = run_dir / "metrics.jsonl"
    summaries = sorted(run_dir.rglob("summary.json"))
    if not metrics_path.is_file() and not summaries:
        raise InputError(f"{run_dir} has neither metrics.jsonl nor any eval summary (summary.json) to report")
    parts = [f"# Run `{run_dir.name}`"]
    config = next((p for p in (run_dir / "config.yaml", run_dir / "config.json") if p.is_file()), None)
    if config is not None:
        parts.append(f"## Config\n\n```{config.suffix[1:]}\n{config.read_text().rstrip()}\n```")
    if metrics_path.is_file():
        try:
            records = read_jsonl(metrics_path)
        except RecordsError as error:
            raise InputError(str(error)) from None
        series = curves(records)
        if series:
            _curves_chart(series, run_dir / "curves.png")
            rows = [[name, len(points), f"{points[-1][1]:.4g}", f"{min(v for _, v in points):.4g}",
                     f"{max(v for _, v in points):.4g}"] for name, points in series.items()]
            steps = len({r.get("step", i) for i, r in enumerate(records)})
            parts.append(f"## Training ({steps} steps)\n\n![training curves](curves.png)\n\n"
                         + _table(["metric", "points", "last", "min", "max"], rows))
        else:
            parts.append(f"## Training\n\n{metrics_path} holds no numeric fields yet.")
    if summaries:
        parts.append("## Evaluations")
        for path in summaries:
            summary = json.loads(path.read_text())
            if not isinstance(summary, dict) or summary.get("kind") not in RENDERERS:
                log.warning("%s is not an eval summary written by eval/, skipped", path)
                continue
            folder = path.parent.relative_to(run_dir).as_posix()
            chart = f"\n\n![chart]({folder}/chart.png)" if (path.parent / "chart.png").is_file() else ""
            parts.append(f"`{folder}`\n\n{markdown(summary)}{chart}")
    page = run_dir / "report.md"
    page.write_text("\n\n".join(parts) + "\n")
    return page


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a training run's folder (holding metrics.jsonl and/or evals)")
    args = parser.parse_args(argv)
    page = write_run_page(args.run)
    log.info("wrote %s", page)
    print(page.read_text())


if __name__ == "__main__":
    sys.exit(run(main))
