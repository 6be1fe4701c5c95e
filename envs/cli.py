"""How every command line of the project shows its defaults in ``--help``, and reads a seed.

It lives in ``envs``, the folder every other imports, so that ``python -m envs.filter`` and
``python -m agents.challenge`` show defaults (and check seeds) as ``eval``, ``train`` and ``bench`` do.
"""

from __future__ import annotations

import argparse


class ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default in ``--help``, but for ``None`` or where the help already names it: an option
    whose default depends on others (``--out``, ``--k``) says what it is in its own help, and a second
    "(default: ...)" after that would contradict it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        says_it = action.default is None or "(default: " in (action.help or "")
        return action.help if says_it else super()._get_help_string(action)


SEEDS = 2 ** 32
"""How many seeds there are: numpy's and gymnasium's generators take 0 to ``2**32 - 1``, and refuse others."""


def seed_number(text: str) -> int:
    """A seed from the command line (argparse's ``type=`` for ``--seed``): a whole number from 0 to ``2**32 - 1``.

    Checked as the command starts, so that a seed the generators refuse is a line naming the option (exit
    code 2), not a traceback once the model has loaded and the first episode is seeded."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < SEEDS:
        raise argparse.ArgumentTypeError(f"a seed is from 0 to {SEEDS - 1}, got {value}")
    return value
