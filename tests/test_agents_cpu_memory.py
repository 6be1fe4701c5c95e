"""A CPU process keeps the memory it frees: a buffer allocated again costs no fresh pages."""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
import sys

import pytest
import torch

from agents import cpu_memory, models

# A fresh process allocates, fills and frees 64 MB (16,384 pages) 4 times; printed: whether it kept freed
# memory, and the page faults of the last 3 rounds. (Through malloc itself: torch asks for aligned memory,
# which a freed block of just that size cannot serve, so its heap grows for a few rounds before it settles.)
REFILL = """
import ctypes, resource, sys
from agents.cpu_memory import keep_freed_memory
kept = sys.argv[1] == "keep" and keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
for round in range(4):
    if round == 1:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 << 20)
    libc.memset(block, round, 64 << 20)
    libc.free(block)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def refill(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", REFILL, mode], capture_output=True, text=True, check=True)
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere nothing changes")
def test_freed_memory_is_used_again_without_page_faults():
    assert refill("default") == ("False", pytest.approx(3 * 16_384, rel=0.1))  # fresh pages from the kernel
    kept, faults = refill("keep")
    assert kept == "True" and faults < 100


@pytest.fixture
def asked_afresh(caplog):
    """keep_freed_memory as if not yet called in this process (it answers once), logging at INFO."""
    caplog.set_level(logging.INFO, logger="agents.cpu_memory")
    cpu_memory.keep_freed_memory.cache_clear()
    yield cpu_memory.keep_freed_memory
    cpu_memory.keep_freed_memory.cache_clear()


def test_off_glibc_nothing_changes(monkeypatch, caplog, asked_afresh):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", None)  # calling it would raise
    assert asked_afresh() is False
    assert "this C library (unknown) has no mallopt" in caplog.text


def test_a_c_library_without_mallopt_changes_nothing_and_says_so(monkeypatch, caplog, asked_afresh):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.41"))
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda name: object())  # no mallopt in it
    assert asked_afresh() is False
    assert "mallopt is out of reach" in caplog.text


def test_a_c_library_that_cannot_be_opened_changes_nothing_and_says_so(monkeypatch, caplog, asked_afresh):
    """A statically linked Python has no C library to open: ``CDLL`` raises OSError, which is no crash."""

    def cannot_open(name: object) -> None:
        raise OSError("dlopen: no such library")

    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.41"))
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", cannot_open)
    assert asked_afresh() is False
    assert "mallopt is out of reach (dlopen: no such library)" in caplog.text


MALLOC_H = "/usr/include/malloc.h"


@pytest.mark.skipif(not os.path.exists(MALLOC_H), reason="glibc's malloc.h is not installed")
def test_the_mallopt_parameters_are_glibcs():
    """Another parameter number can look as good in a page-fault count (``M_TOP_PAD`` at -1 also keeps the
    heap's top) while setting something else: the numbers must be the header's."""
    header = open(MALLOC_H).read()
    for name in ("M_TRIM_THRESHOLD", "M_MMAP_MAX"):
        match = re.search(rf"#define\s+{name}\s+(-?\d+)", header)
        assert match and int(match.group(1)) == getattr(cpu_memory, name), name


def test_a_cpu_model_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(models, "keep_freed_memory", lambda: calls.append(1))
    model = torch.nn.Linear(2, 2)
    model.config = type("Config", (), {"_attn_implementation": "eager"})()
    models.with_our_layers(model, torch.device("cpu"))
    models.with_our_layers(model, torch.device("meta"))
    assert calls == [1]
