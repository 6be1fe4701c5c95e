"""Long work that says it is alive: a line every 20 seconds while a block runs.

One model call on a long prompt can take minutes on a CPU (a wave of challenger proposals, a
warm-start update on long demonstrations), and a command silent for that long looks hung. The
trainer's stages and the benchmarks run inside :func:`heartbeat`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

HEARTBEAT_S = 20.0
"""Seconds between "still running" lines: under 30, whatever the scheduling delay of a busy machine."""


@contextmanager
def heartbeat(what: str, log: logging.Logger, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Log "<what>: still running" every ``every`` seconds until the block ends."""
    done = threading.Event()
    started = time.perf_counter()

    def beat() -> None:
        while not done.wait(every):
            log.info("%s: still running (%.0f s)", what, time.perf_counter() - started)

    thread = threading.Thread(target=beat, name=f"heartbeat: {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
