"""A CPU process that keeps the memory it frees, so that using it again costs no page faults.

A forward and backward pass on the CPU allocates and frees buffers of megabytes to hundreds of
megabytes many times over (activations, the logits over the vocabulary). glibc serves each one past
its mmap threshold (128 kB, raised as it goes to at most 32 MB) with fresh pages from the kernel and
gives them back on ``free``, and the kernel zeroes every fresh page at its first touch. In the GRPO
update of ``bench.train`` (16 episodes of SmolLM2-135M in one pass, two threads) that was about a
million page faults a step, the kernel's page clearing 17% of all samples, and system time as large
as user time.

:func:`keep_freed_memory` tells glibc to serve every allocation from its heap (``M_MMAP_MAX`` 0) and
never to hand the heap's top back (``M_TRIM_THRESHOLD`` -1), so freed memory is used again as it is:
that update took 7.3 s a step instead of 10.4 s (TRL's whole step: 27 s instead of 37 s). Rollouts
and ``make train`` (whose updates run in microbatches of a few megabytes, which glibc reuses anyway)
take as long as before. The process holds on to its peak until it exits, as torch's caching allocator
does on a GPU, and a bit more: torch asks for aligned blocks, which a freed block of just that size
cannot serve, so the heap grows for a while before freed blocks merge into ones that fit (``make
train``'s peak RSS 8.48 GiB instead of 8.29). Only glibc has ``mallopt``; elsewhere (macOS, musl)
nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
"""``mallopt`` parameters, from glibc's ``malloc.h``."""


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed memory in this process from now on (see the module docstring); whether it could."""
    libc = platform.libc_ver()[0]
    if libc != "glibc":
        log.info("freed memory goes back to the system: this C library (%s) has no mallopt", libc or "unknown")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # from the C library this process already runs on
    except (OSError, AttributeError) as error:  # a Python linked statically, say
        log.info("freed memory goes back to the system: mallopt is out of reach (%s)", error)
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
