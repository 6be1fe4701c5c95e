"""The loop for several seeds, and what it shows with 95% intervals (``python -m train.experiment``).

    python -m train.experiment --seeds 0,1,2 [--config train/configs/experiment.yaml] [--set steps=16 ...]

Runs the whole loop (:func:`train.run.train`) once per seed, each in ``<out>/seed-<s>`` (a run
that exists is resumed, so a killed experiment continues). Every seed is scored on one held-out set:
scripted tasks from a world no seed trains on (``<out>/heldout.jsonl``), so that a task's score can
be compared across seeds and stages. The report (``<out>/summary.md``, ``summary.json`` and
``chart.png``) gives each domain's held-out success after each stage as the mean over seeds and tasks
with a 95% interval (a bootstrap over tasks and seeds, or Wilson's where that has nothing to resample:
:func:`eval.estimators.success_interval`), and RL's gain over the warm start with the paired bootstrap
interval of the difference.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence, Set as AbstractSet
from dataclasses import replace
from pathlib import Path
from typing import Any

from envs.cli import seed_number
from envs.pool import append_pool, load_pool
from envs.records import write_atomic
from eval import cli, curves
from eval.estimators import bootstrap_interval, success_interval
from train.config import CONFIG_DIR, FIELD_TYPES, ConfigError, TrainConfig, load_config, parse_overrides
from train.tasks import EmptyPoolError, Selection, is_multi_call, scripted_tasks

log = logging.getLogger("train.experiment")

HELDOUT_WORLD = 50_000
"""The scripted world of the shared held-out tasks: no seed's pool or demonstrations use it."""
STAGES = ("base", "warm_start", "rl")


def heldout_tasks(config: TrainConfig, path: Path) -> Path:
    """The held-out set every seed is scored on: ``heldout_per_domain`` scripted tasks a domain.

    Written once, whole (through a temporary file and a rename), and read back by every later run
    into the same folder: a run killed while writing it leaves no short set behind."""
    if not path.is_file():
        partial = path.with_name(f".{path.name}.tmp")
        partial.unlink(missing_ok=True)
        append_pool(partial, [t for d in config.domains
                              for t in scripted_tasks(d, HELDOUT_WORLD, config.heldout_for(d), Selection.of(config))])
        partial.replace(path)
    return path


def scores(run: Path) -> dict[str, dict[str, dict[str, float]]]:
    """A run's held-out rewards: stage -> domain -> task id -> reward (trajectories.jsonl). A run that played
    no episode has no such file, and no scores: with no training and greedy evaluation, only the first seed
    measures (the base model, once). The table counts, per stage, the seeds that measured it."""
    found: dict[str, dict[str, dict[str, float]]] = {}
    path = run / "trajectories.jsonl"
    for line in (path.read_text().splitlines() if path.is_file() else ()):
        record = json.loads(line)
        stage = record.get("phase", "").removeprefix("eval:")
        if record.get("phase", "").startswith("eval:") and stage in STAGES:
            found.setdefault(stage, {}).setdefault(record["domain"], {})[record["task_id"]] = record["reward"]
    return found


def multi_call_tasks(held: Path) -> set[str]:
    """The held-out tasks whose example solution makes two or more tool calls."""
    return {t.id for t in load_pool(held) if is_multi_call(t)}


def summarize(runs: dict[int, dict[str, dict[str, dict[str, float]]]],
              multi_call: AbstractSet[str] = frozenset()) -> dict[str, Any]:
    """Per domain and stage: mean success over seeds and tasks, its 95% interval, and RL's gain over
    the warm start with the paired interval (every seed scored the same tasks). A stage some seeds did
    not measure (the base model, measured once) is over the seeds that did. A domain with tasks of
    two or more calls among others also gets a row for those alone ("<domain>, 2+ calls")."""
    table: dict[str, Any] = {}
    domains = sorted({d for run in runs.values() for stage in run.values() for d in stage})
    for domain in domains:
        tasks = {t for run in runs.values() for stage in run.values() for t in stage.get(domain, {})}
        table[domain] = {**_row(runs, domain, tasks), "multi_call_tasks": len(tasks & multi_call)}
        if tasks & multi_call and tasks - multi_call:
            table[f"{domain}, 2+ calls"] = _row(runs, domain, tasks & multi_call)
    return table


def _row(runs: dict[int, dict[str, dict[str, dict[str, float]]]], domain: str,
         tasks: AbstractSet[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for stage in STAGES:
        seeds = [s for s in sorted(runs) if domain in runs[s].get(stage, {})]
        if not seeds:
            continue
        asked = sorted(tasks & set(runs[seeds[0]][stage][domain]))
        grid = [[runs[s][stage][domain][t] for t in asked] for s in seeds]
        low, high = success_interval(grid)
        row[stage] = {"mean": sum(map(sum, grid)) / (len(seeds) * len(asked)), "low": low, "high": high,
                      "tasks": len(asked), "seeds": len(seeds)}
    paired = [s for s in sorted(runs) if domain in runs[s].get("rl", {}) and domain in runs[s].get("warm_start", {})]
    if paired:
        asked = sorted(tasks & set(runs[paired[0]]["rl"][domain]))
        gain = [[runs[s]["rl"][domain][t] - runs[s]["warm_start"][domain][t] for t in asked] for s in paired]
        low, high = bootstrap_interval(gain)
        row["rl_gain"] = {"mean": sum(map(sum, gain)) / (len(paired) * len(asked)), "low": low, "high": high}
    return row


def rl_curves(metrics: dict[int, list[dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """Per seed, RL's curves with steps counted from RL's start: the training reward at each step, and
    held-out success on the RL domains at each evaluation from RL's start on (``eval_every`` sets how
    many there are between): the warm start's, or the base model's in a run without a warm start."""
    found: dict[int, dict[str, Any]] = {}
    for seed, records in metrics.items():
        rl = [m for m in records if m.get("phase") == "rl"]
        if not rl:
            continue
        start = rl[0]["step"] - 1
        evals = [m for m in records if m.get("phase") == "eval" and m["step"] >= start]
        between = [m for m in evals if m["stage"].startswith("rl@")]
        domains = sorted({d for m in between or evals for d in m["success"]})
        found[seed] = {"reward": [[m["step"] - start, m["reward_mean"]] for m in rl],
                       "heldout": {d: [[m["step"] - start, m["success"][d]] for m in evals if d in m["success"]]
                                   for d in domains}}
    return found


def curve_chart(per_seed: dict[int, dict[str, Any]], path: Path) -> None:
    """Training reward and held-out success against RL steps, a thin line per seed."""
    plt = curves.pyplot()
    fig, (reward, held) = plt.subplots(1, 2, figsize=(11, 4))
    for seed, curve in per_seed.items():
        reward.plot(*zip(*curve["reward"]), marker="o", ms=3, lw=1, label=f"seed {seed}")
        for domain, points in curve["heldout"].items():
            held.plot(*zip(*points), marker="o", lw=1, label=f"{domain}, seed {seed}")
    reward.set(xlabel="RL step", ylabel="training reward (mean of the step's episodes)", ylim=(0, 1))
    held.set(xlabel="RL step (0: where RL starts)", ylabel="held-out success", ylim=(0, 1))
    for ax in (reward, held):
        ax.legend(fontsize=7)
    curves.save(fig, path)


def markdown(table: dict[str, Any], seeds: Sequence[int]) -> str:
    def cell(value: dict[str, float] | None) -> str:
        if value is None:
            return "-"
        measured = value.get("seeds", len(seeds))
        fewer = f" ({measured} seed{'s' * (measured > 1)})" if measured < len(seeds) else ""
        return f"{100 * value['mean']:.1f}% [{100 * value['low']:.1f}, {100 * value['high']:.1f}]{fewer}"

    lines = [f"# Experiment: {len(seeds)} seeds ({', '.join(map(str, seeds))})", "",
             "Held-out success, mean over seeds and tasks [95% interval, bootstrap over tasks and seeds; Wilson's "
             "over tasks for one seed, or where every result is alike]; "
             "every seed scored on the same held-out tasks. With greedy evaluation the base model is measured "
             "once, with the first seed (its episodes do not depend on the seed).", "",
             "| domain | held-out tasks | of 2+ calls | base | warm start | RL | RL minus warm start |",
             "|---|---|---|---|---|---|---|"]
    for domain, row in table.items():
        tasks = next((v["tasks"] for v in row.values() if isinstance(v, dict) and "tasks" in v), 0)
        multi = row.get("multi_call_tasks", "")
        lines.append(f"| {domain} | {tasks} | {multi} | {cell(row.get('base'))} | {cell(row.get('warm_start'))} | "
                     f"{cell(row.get('rl'))} | {cell(row.get('rl_gain'))} |")
    return "\n".join(lines)


def chart(table: dict[str, Any], path: Path) -> None:
    plt = curves.pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(table)), 4))
    width = 0.8 / len(STAGES)
    for k, stage in enumerate(STAGES):
        domains = [d for d in table if stage in table[d]]
        xs = [list(table).index(d) + (k - 1) * width for d in domains]
        means = [100 * table[d][stage]["mean"] for d in domains]
        errors = [[m - 100 * table[d][stage]["low"] for m, d in zip(means, domains)],
                  [100 * table[d][stage]["high"] - m for m, d in zip(means, domains)]]
        ax.bar(xs, means, width, yerr=errors, capsize=4, label=stage.replace("_", " "))
    ax.set_xticks(range(len(table)), list(table))
    ax.set_ylabel("held-out success (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("held-out success per stage, 95% intervals over tasks and seeds")
    curves.save(fig, path)


def parse_seeds(text: str, parser: argparse.ArgumentParser) -> list[int]:
    """``--seeds``' seeds, in order; a non-number, a seed the generators refuse (:func:`envs.cli.seed_number`) or one
    named twice (its run, and its scores, would count twice) exits 2 through ``parser``, naming the flag."""
    try:
        seeds = [seed_number(s) for s in text.split(",") if s.strip()]
    except argparse.ArgumentTypeError as error:
        parser.error(f"--seeds takes comma-separated whole numbers, got {text!r}: {error}")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        parser.error(f"--seeds names {', '.join(map(str, twice))} more than once: each seed is one run")
    return seeds


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    parser = cli.parser("python -m train.experiment", __doc__)
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "experiment.yaml",
                        help="the loop's config (default: train/configs/experiment.yaml, every domain trained)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one run each")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--out", type=Path, default=Path("runs/experiment"), help="the experiment's folder")
    args = parser.parse_args(argv)
    from train.run import RUN_ERRORS, resumed_config, stop_code, train

    seeds = parse_seeds(args.seeds, parser)
    try:
        config = load_config(args.config, parse_overrides(args.set))
        if not seeds:
            raise ConfigError("seeds", "name at least one seed")
        if not (config.eval_base or config.warm_start_epochs or config.steps):
            raise ConfigError("eval_base", "with no warm start (warm_start_epochs=0) and no RL (steps=0) only "
                                           "eval_base measures anything, and it is off: the runs would evaluate "
                                           "nothing to report")
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError("out", f"{args.out} is a file: pass a folder")
        args.out.mkdir(parents=True, exist_ok=True)
        held = heldout_tasks(config, args.out / "heldout.jsonl")
    except (ConfigError, EmptyPoolError) as error:
        log.error("%s", error)
        return 2
    except OSError as error:  # a read-only or full disk
        log.error("%s cannot hold the experiment: %s", args.out, error)
        return 2
    runs, metrics = {}, {}
    for seed in seeds:
        name = f"seed-{seed}"
        log.info("seed %d: %s", seed, args.out / name)
        seeded = replace(config, seed=seed, name=name, runs_dir=str(args.out), heldout_pool=str(held),
                         resume=(args.out / name / "config.yaml").is_file(), save_trajectories=True,
                         eval_base=config.eval_base and (seed == seeds[0] or config.eval_temperature > 0))
        try:  # a seed run already there continues only with the config it started with
            run, _ = train(resumed_config(seeded, FIELD_TYPES) if seeded.resume else seeded, default_name=name)
        except (*RUN_ERRORS, OSError, KeyboardInterrupt) as error:
            if (code := stop_code(error, "the experiment goes on from its runs when this command is run again with "
                                         f"the same --out ({args.out})")) is None:
                raise
            return code
        runs[seed], metrics[seed] = scores(run.path), run.read_metrics()
    table, learning = summarize(runs, multi_call_tasks(held)), rl_curves(metrics)
    page = markdown(table, seeds)
    write_atomic(args.out / "summary.json",
                 json.dumps({"seeds": seeds, "table": table, "rl_curves": learning}, indent=1))
    chart(table, args.out / "chart.png")
    page += "\n\n![held-out success per stage](chart.png)\n"
    if learning:
        curve_chart(learning, args.out / "rl_curves.png")
        page += "\n![training reward and held-out success against RL steps](rl_curves.png)\n"
    write_atomic(args.out / "summary.md", page)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
