"""How every command line of the project shows its defaults in ``--help``.

It lives in ``envs``, the folder every other imports, so that ``python -m envs.filter`` and
``python -m agents.challenge`` show defaults as ``eval``, ``train`` and ``bench`` do.
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
