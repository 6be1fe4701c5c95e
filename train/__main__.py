"""``python -m train`` (``make train``): the whole self-challenging loop, then a table per domain.

    python -m train                                       # train/configs/default.yaml
    python -m train --config train/configs/llama8b_gpu.yaml --set steps=50 --lr 2e-5
    python -m train --resume                              # continue the latest run (or --name NAME --resume)
                                                          # with its own config (config.yaml in its folder)
    accelerate launch --num_processes 4 -m train --config train/configs/llama8b_gpu.yaml   # 4 GPUs (NCCL)
    accelerate launch --multi_gpu --num_processes 2 -m train --device cpu   # 2 CPU processes (gloo)

Every config key can be set with ``--set key=value`` or ``--key value``; ``python -m train --help`` lists
them all with their help and defaults (from :class:`train.config.TrainConfig`).
A bad key or value, a missing model or a pool without tasks for a domain exits with code 2 and a
message saying what to change.
"""

from __future__ import annotations

import os

# OpenMP threads that spin at barriers while another process holds the core make every small step
# (one decoded token) about 5x slower on a shared 2-core machine (0.83 s against 0.16 s a step);
# waiting passively costs little when the machine is quiet. Read once, when torch loads: set it first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from agents.models import DeviceError, ModelNotFoundError  # noqa: E402
from train.config import (DEFAULT_CONFIG, FIELD_TYPES, ConfigError, TrainConfig, command_value,  # noqa: E402
                          load_config, parse_overrides)
from train.rundir import RunDir, RunState  # noqa: E402
from envs.challenger import STAGES as FUNNEL  # noqa: E402
from envs.records import STORAGE_ERRORS, RecordsError  # noqa: E402
from train.tasks import EmptyPoolError  # noqa: E402

log = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``--config``, ``--set KEY=VALUE``, and one ``--key VALUE`` flag per field of
    :class:`TrainConfig`, its help and default taken from the field."""
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Values are read as YAML (numbers, true/false, [a, b], {k: v}); a bad key "
                                            "or value exits with code 2 naming it.")
    parser.add_argument("--config", type=Path,
                        help=f"YAML config (default: {DEFAULT_CONFIG}; with --resume, the run's own)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key; a dotted key sets one entry of a mapping "
                             "(tasks_per_domain.web=24)")
    keys = parser.add_argument_group("config keys", f"each overrides the config file (train/config.py, TrainConfig); "
                                                    f"each default is {DEFAULT_CONFIG.name}'s, what a plain run uses")
    defaults = load_config()
    for spec in dataclasses.fields(TrainConfig):
        flags = [f"--{spec.name.replace('_', '-')}"] + ([f"--{spec.name}"] if "_" in spec.name else [])
        kind = FIELD_TYPES[spec.name]
        keys.add_argument(*flags, dest=f"key.{spec.name}", default=argparse.SUPPRESS,
                          nargs="?" if kind is bool else None, const="true" if kind is bool else None,
                          metavar=getattr(kind, "__name__", str(kind)).upper(),
                          help=f"{spec.metadata['help']} (default: {getattr(defaults, spec.name)!r})"
                          .replace("%", "%%"))
    return parser


def parse_args(argv: Sequence[str] | None) -> tuple[TrainConfig, str, frozenset[str]]:
    """The config (file, then ``--set`` and ``--key value`` overrides), the config file's stem, and the keys
    the command gives (each it overrides; every key, with ``--config``)."""
    args, rest = build_parser().parse_known_args(argv)
    unknown = next((flag for flag in rest if flag.startswith("--")), rest[0] if rest else None)
    if unknown is not None:
        raise ConfigError(unknown.lstrip("-").split("=")[0].replace("-", "_"),
                          f"unknown key (known: {', '.join(FIELD_TYPES)})")
    overrides = parse_overrides(args.set)
    for name, value in vars(args).items():
        if name.startswith("key."):
            overrides[name[4:]] = command_value(name[4:], value)
    given = frozenset(FIELD_TYPES if args.config else (key.split(".")[0] for key in overrides))
    path = args.config or DEFAULT_CONFIG
    config = load_config(path, overrides, validate=False)
    if not config.resume:  # a resumed run's keys are checked against its own config (train.run.resumed_config)
        config.validate()
    return config, path.stem, given


def table(run: RunDir, state: RunState, page: Path | None) -> str:
    """Held-out success per domain after each stage, with how the tasks were made: the challenger's
    funnel (proposals -> parsed -> verifier ran -> solution passed -> kept -> new) and the mix of
    LLM-written and scripted tasks (scripted ones top up what the challenger did not keep)."""
    mix = json.loads(run.tasks.read_text()) if run.tasks.exists() else {}
    split = json.loads(run.split.read_text()) if run.split.exists() else {}
    stages = [s for s in ("base", "warm_start", "rl") if s in state.evals]
    header = f"{'domain':12s} {'tasks (llm+scripted)':>20s} {'train':>5s} {'held-out':>8s} " + \
        " ".join(f"{s:>10s}" for s in stages)
    lines = [header, "-" * len(header)]
    for domain, parts in split.items():
        made = mix.get(domain, {})
        cells = []
        for s in stages:
            value = state.evals[s].get(domain)
            cells.append(f"{value['success'] * 100:9.1f}%" if value else f"{'-':>10s}")
        lines.append(f"{domain:12s} {made.get('llm', 0):>9d} + {made.get('scripted', 0):<8d} "
                     f"{len(parts['train']):5d} {len(parts['heldout']):8d} " + " ".join(cells))
    funnels = {d: m["funnel"]["reached"] for d, m in mix.items() if m.get("proposals")}
    if funnels:
        lines += ["", "challenger funnel: proposals > parsed > verifier ran > solution passed > kept > new"]
        for domain, reached in funnels.items():
            written = mix[domain].get("llm", 0)
            lines.append(f"{domain:12s} " + " > ".join(str(reached.get(s, 0)) for s in FUNNEL)
                         + f"   (in the pool: {written} written by the model, {mix[domain].get('new', 0)} of them new; "
                           f"{mix[domain].get('scripted', 0)} scripted)")
    lines += ["", f"run folder: {run.path}", f"adapter:    {run.adapter}"]
    if page is not None:
        lines += [f"report:     {page} (the table with intervals, the funnel, plots, example episodes)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        config, stem, given = parse_args(argv)
        from train.run import resumed_config, train, write_report  # heavy imports after the arguments are checked

        if config.resume:
            config = resumed_config(config, given)
        run, state = train(config, default_name=stem)
    except (ConfigError, EmptyPoolError, RecordsError, ModelNotFoundError, DeviceError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:  # the run has said where it stopped and how to go on
        return 130
    except OSError as exc:
        if exc.errno not in STORAGE_ERRORS:
            raise
        log.error("%s", exc)
        return 2
    if run.writer:
        try:
            print(table(run, state, write_report(run)))
        except KeyboardInterrupt:
            log.error("interrupted while writing the report: the run is complete (%s); `python -m eval.report %s` "
                      "writes its report", run.adapter, run.path)
            return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
