"""What the evaluation command lines share: one exit code (2) for input the user must fix.

A missing pool or checkout, an unknown domain or a model that cannot be loaded offline is the
user's to fix, not a crash: each command raises :class:`InputError` with a message that says what
to pass, and :func:`run` turns it into a logged error and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

log = logging.getLogger("eval")


class InputError(Exception):
    """Input the user must fix (a missing file, an unknown name): exit code 2, with this message."""


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main`` with logging set up; its exit code (0, or 2 on :class:`InputError`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        main(argv)
    except InputError as error:
        log.error("%s", error)
        return 2
    return 0
