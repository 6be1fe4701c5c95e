"""Which tasks teach the executor: the challenger's filtered tasks, its unfiltered ones, or scripted ones.

``python -m train.compare --run runs/<run> --domain calculation`` reads a run that wrote its pool
with the LLM challenger (its ``parsed.jsonl``: every proposal that parsed, with how far it got) and
trains three executors from the same base model and config, one per training set of equal size:

- **filtered**: the challenger's tasks that the filter kept (the paper's self-challenge);
- **unfiltered**: as many of its parsed proposals, kept or not, warm-started on their example
  solutions whether or not their verifier accepts them (the paper's filtering ablation);
- **scripted**: as many tasks of the domain's scripted challenger.

All three are scored on one held-out set of scripted tasks that no challenger saw (world ``seed``,
as the run's own held-out tasks), greedy, and the report gives each arm's held-out success with a
95% interval (Wilson, over the held-out tasks) in ``<out>/summary.md`` with a bar chart.

A rerun into the same ``--out`` resumes its arms; one with another size, held-out set, ``--set`` or
training sets (the run's challenger wrote more since) is refused, exit 2: its arms would be
reported with results they did not train for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from envs.cat import CodeAsTask
from envs.pool import PoolError, append_pool, load_pool
from envs.records import write_atomic
from eval import cli, curves
from eval.estimators import wilson_interval
from train.config import ConfigError, TrainConfig, load_config, parse_overrides
from train.tasks import EmptyPoolError, Selection, scripted_tasks

log = logging.getLogger(__name__)

ARMS = ("filtered", "unfiltered", "scripted")


def training_sets(run: Path, domain: str, size: int, heldout: int, seed: int,
                  selection: Selection) -> tuple[dict[str, list[CodeAsTask]], list[CodeAsTask]]:
    """Each arm's training tasks (``size`` each, or as many as the smallest arm has) and the held-out tasks."""
    # A proposal whose verifier does not compile parsed too, but no pool can hold it: left out.
    parsed = load_pool(run / "parsed.jsonl", domain=domain, compiled_only=True, label="pool")
    kept = [t for t in parsed if t.provenance.get("stage") in ("kept", "new")]
    scripted = scripted_tasks(domain, seed, heldout + size, selection)
    held, scripted = scripted[:heldout], scripted[heldout:]
    size = min(size, len(kept), len(parsed), len(scripted))
    if size == 0:
        raise EmptyPoolError(f"{run} has no kept {domain} proposals to compare (parsed.jsonl holds {len(parsed)} "
                             f"parsed, {len(kept)} kept): run the challenger with more proposals")
    unfiltered = random.Random(seed).sample(parsed, size)  # kept or not, in the share the challenger wrote them
    return {"filtered": kept[:size], "unfiltered": unfiltered, "scripted": scripted[:size]}, held


def arm_result(run: Path, domain: str) -> dict[str, Any]:
    """An arm's held-out success after its last stage, per task, from its run folder."""
    records = [json.loads(line) for line in (run / "trajectories.jsonl").read_text().splitlines()]
    phases = [r["phase"] for r in records if r["phase"].startswith("eval:") and r["domain"] == domain]
    last = phases[-1]
    rewards = [r["reward"] for r in records if r["phase"] == last and r["domain"] == domain]
    wins = sum(r == 1.0 for r in rewards)
    low, high = wilson_interval(wins, len(rewards))
    base = [r["reward"] for r in records if r["phase"] == "eval:base" and r["domain"] == domain]
    return {"stage": last.split(":", 1)[1], "n": len(rewards), "successes": wins, "success": wins / len(rewards),
            "low": low, "high": high, **({"base": sum(r == 1.0 for r in base) / len(base)} if base else {})}


def markdown(domain: str, sizes: dict[str, int], results: dict[str, dict[str, Any]]) -> str:
    lines = [f"# Training sets compared: {domain}", "",
             "| training set | tasks | held-out n | base | held-out success | 95% interval |",
             "|---|---|---|---|---|---|"]
    for arm, result in results.items():
        lines.append(f"| {arm} | {sizes[arm]} | {result['n']} | {100 * result['base']:.1f}% | "
                     f"{100 * result['success']:.1f}% ({result['stage']}) | "
                     f"{100 * result['low']:.1f}% to {100 * result['high']:.1f}% |")
    return "\n".join(lines)


def chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    plt = curves.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(results)
    values = [100 * results[a]["success"] for a in names]
    errors = [[values[i] - 100 * results[a]["low"] for i, a in enumerate(names)],
              [100 * results[a]["high"] - values[i] for i, a in enumerate(names)]]
    ax.bar(names, values, yerr=errors, capsize=6, color=["tab:green", "tab:orange", "tab:blue"][:len(names)])
    ax.set_ylabel("held-out success (%)")
    ax.set_ylim(0, 100)
    ax.set_title("executor trained on each set, scored on scripted held-out tasks")
    curves.save(fig, path)


def train_arms(arms: Sequence[str], sets: dict[str, list[CodeAsTask]], held: list[CodeAsTask], config: TrainConfig,
               out: Path, domain: str) -> dict[str, Any]:
    """Train and score one executor per arm, each resuming its run folder if it has one; each arm's
    held-out result."""
    from train.run import train

    heldout_pool = out / "heldout.jsonl"
    heldout_pool.unlink(missing_ok=True)
    append_pool(heldout_pool, held)
    results: dict[str, Any] = {}
    for arm in arms:
        pool = out / f"{arm}.jsonl"
        pool.unlink(missing_ok=True)
        append_pool(pool, sets[arm])
        arm_config = replace(config, name=arm, runs_dir=str(out), resume=(out / arm / "config.yaml").exists(),
                             pool=str(pool), heldout_pool=str(heldout_pool), domains=[domain],
                             rl_domains=[domain], warm_start_domains=[domain],
                             warm_start_verified=arm != "unfiltered", save_trajectories=True,
                             eval_base=arm == arms[0])  # the same model on the same tasks: measured once
        arm_config.validate()
        log.info("training an executor on the %s set (%d tasks)", arm, len(sets[arm]))
        run, _ = train(arm_config, default_name=arm)
        results[arm] = arm_result(run.path, domain)
        results[arm].setdefault("base", results[arms[0]]["base"])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    parser = cli.parser("python -m train.compare", __doc__)
    parser.add_argument("--run", type=Path, required=True, help="a run whose pool the LLM challenger wrote")
    parser.add_argument("--domain", default="calculation", help="the domain to compare on")
    parser.add_argument("--size", type=int, default=32, help="training tasks per arm (fewer if an arm has fewer)")
    parser.add_argument("--heldout", type=int, default=64, help="scripted held-out tasks")
    parser.add_argument("--arms", default=",".join(ARMS), help="which training sets, comma-separated")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the run's config for the executors (steps=8, say)")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN/compare-DOMAIN)")
    args = parser.parse_args(argv)
    from train.run import RUN_ERRORS, stop_code

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if args.size < 1 or args.heldout < 1 or not arms:
        parser.error("--size and --heldout must be at least 1, and --arms must name at least one arm")
    if not (args.run / "parsed.jsonl").is_file() or not (args.run / "config.yaml").is_file():
        log.error("%s holds no parsed.jsonl and config.yaml: pass a run whose pool the LLM challenger wrote", args.run)
        return 2
    if unknown := [a for a in arms if a not in ARMS]:
        log.error("unknown arms %s (known: %s)", unknown, ", ".join(ARMS))
        return 2
    out = args.out or args.run / f"compare-{args.domain}"
    base = yaml.safe_load((args.run / "config.yaml").read_text())
    try:
        overrides = parse_overrides(args.set)
        config = load_config(args.run / "config.yaml", overrides)
        sets, held = training_sets(args.run, args.domain, args.size, args.heldout, base.get("seed", 0),
                                   Selection.of(config))
        # An arm whose folder exists is resumed: only by the comparison that started it.
        tasks = json.dumps([[t.id for t in held]] + [[t.id for t in sets[arm]] for arm in ARMS])
        cli.claim_output(out, str(args.run.resolve()), None, domain=args.domain, set=dict(sorted(overrides.items())),
                         size=len(sets["filtered"]), heldout=len(held),
                         tasks=hashlib.sha256(tasks.encode()).hexdigest()[:12])
    except (ConfigError, EmptyPoolError, PoolError, cli.InputError) as error:
        log.error("%s", error)
        return 2
    try:
        results = train_arms(arms, sets, held, config, out, args.domain)
    except (*RUN_ERRORS, OSError, KeyboardInterrupt) as error:
        if (code := stop_code(error, f"the comparison goes on from its arms when this same command is run again "
                                     f"({out})")) is None:
            raise
        return code
    sizes = {arm: len(sets[arm]) for arm in arms}
    write_atomic(out / "summary.json",
                 json.dumps({"domain": args.domain, "sizes": sizes, "results": results}, indent=1))
    page = markdown(args.domain, sizes, results)
    chart(results, out / "chart.png")
    write_atomic(out / "summary.md", page + "\n\n![chart](chart.png)\n")
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
