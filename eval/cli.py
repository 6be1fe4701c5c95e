"""What the evaluation command lines share: one exit code (2) for input the user must fix.

A missing pool or checkout, an unknown domain or a model that cannot be loaded offline is the
user's to fix, not a crash: each command raises :class:`InputError` with a message that says what
to pass, and :func:`run` turns it into a logged error and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.models import DEFAULT_MODEL, DeviceError, ModelNotFoundError
from agents.policy import ModelPolicy, load_model_policy
from agents.rollout import VECTORIZATION_MODES
from envs.cli import ShowDefaults, seed_number
from envs.records import STORAGE_ERRORS, write_atomic

log = logging.getLogger("eval")


class InputError(Exception):
    """Input the user must fix (a missing file, an unknown name): exit code 2, with this message."""


RESUMES = ("interrupted: the records written so far are kept; run the same command again, with the same --out, "
           "to go on from them")
"""What Ctrl-C says in a command that writes each episode's record as it ends and skips those on a rerun."""


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None,
        interrupted: str = RESUMES) -> int:
    """Run a command's ``main`` with logging set up; its exit code (0, 2 on :class:`InputError` or a write the disk
    refuses, 130 on Ctrl-C, logging ``interrupted``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        main(argv)
    except InputError as error:
        log.error("%s", error)
        return 2
    except OSError as error:
        if error.errno not in STORAGE_ERRORS:
            raise
        log.error("%s; the records written before are kept", error)
        return 2
    except KeyboardInterrupt:  # files are written whole (records as episodes end): nothing half-written to report
        log.error("%s", interrupted)
        return 130
    return 0


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """An evaluation command's parser: its docstring's first paragraph as description, defaults in ``--help``."""
    return argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0], formatter_class=ShowDefaults)


def add_model_flags(parser: argparse.ArgumentParser, batch: str, out: str, vectorized: bool = True) -> None:
    """The flags every evaluation shares: the model and adapter, where and how many play side by
    side (``batch`` says what plays), the seed, the output folder (``out`` says its default)."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model: {DEFAULT_MODEL!r} (the embedded SmolLM2-135M-Instruct), a local directory or "
                             "a Hugging Face id in the local cache")
    parser.add_argument("--adapter", help="a LoRA adapter directory (peft format) to put on the model")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ..., or auto: the GPU if there is one")
    parser.add_argument("--batch-size", type=int, default=8,
                        help=f"{batch} played side by side, their turns decoded in one batched call (memory grows "
                             "with it: lower it if RAM runs out)")
    if vectorized:
        parser.add_argument("--vectorization", choices=VECTORIZATION_MODES, default="sync",
                            help="sub-envs stepped in this process (sync) or in worker processes (async); the "
                                 "episodes are the same")
    parser.add_argument("--seed", type=seed_number, default=0, help="seeds the sampling")
    parser.add_argument("--out", type=Path, help=f"output folder (default: {out})")


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")


def check_sampling(**flags: float) -> None:
    """Temperatures (``*temperature``: 0 or more) and token caps (``max_new_tokens``: 1 or more), by flag name.

    Both must be finite: ``float`` parses ``inf`` and ``nan``, which the sampler refuses only once the model
    has loaded (:class:`agents.decoding.SamplingSettings`)."""
    for name, value in flags.items():
        least, flag = (0 if name.endswith("temperature") else 1), f"--{name.replace('_', '-')}"
        if not value >= least:
            raise InputError(f"{flag} must be at least {least}, got {value}")
        if not math.isfinite(value):
            raise InputError(f"{flag} must be a finite number, got {value}")


def load_policy(args: argparse.Namespace, **settings: Any) -> ModelPolicy:
    """The model of ``--model`` (with ``--adapter``) on ``--device``, sampling with ``settings``; one
    that cannot be loaded offline is an :class:`InputError`, saying what to install or pass."""
    try:
        return load_model_policy(args.model, args.adapter, device=args.device, **settings)
    except (ModelNotFoundError, DeviceError) as error:
        raise InputError(str(error)) from None


SETTINGS = "settings.json"
"""The file in an evaluation's output folder that says what its records are results of."""


def claim_output(out: Path, evaluated: str, adapter: str | None, **how: Any) -> None:
    """Make ``out`` the folder of results of ``evaluated`` (with ``adapter``, and the settings ``how``), or check
    that it is: a rerun resumes the records there, so one with other settings would report their results as its
    own. A difference, or an ``out`` that cannot be a folder, is an :class:`InputError`. A folder that holds no
    results yet (a run that stopped before its first record: a model that did not load, say) is claimed anew."""
    path = out / SETTINGS
    settings = {"evaluated": evaluated, "adapter": adapter and str(Path(adapter).resolve()), **how}
    try:
        out.mkdir(parents=True, exist_ok=True)
        results = any(entry.name != SETTINGS for entry in out.iterdir())
        held = json.loads(path.read_text()) if path.exists() and results else None
        settings = json.loads(json.dumps(settings))  # as they read back
        if held is not None and not isinstance(held, dict):
            raise ValueError(f"{path.name} holds no settings")
        if held is None:
            write_atomic(path, json.dumps(settings, indent=1) + "\n")
            return
    except (OSError, ValueError) as error:
        raise InputError(f"{out} cannot hold this evaluation's results ({error}): pass another --out") from None
    changed = sorted(key for key in settings.keys() | held.keys() if held.get(key) != settings.get(key))
    if changed:
        theirs = ", ".join(f"{key}={held.get(key)!r}" for key in changed)
        ours = ", ".join(f"{key}={settings.get(key)!r}" for key in changed)
        raise InputError(f"{out} holds results of {theirs}, and a rerun adds to them; this run has {ours}: "
                         f"pass another --out, or move {out} away to start afresh")


def model_label(args: argparse.Namespace) -> str:
    """The name a report gives what was evaluated: the model, with the adapter's folder name."""
    return args.model + (f"+{Path(args.adapter).name}" if args.adapter else "")
