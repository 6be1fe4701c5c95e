"""A CPU process keeps the memory it frees: a buffer allocated again costs no fresh pages."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys

import pytest
import torch

from agents import cpu_memory, models

# A fresh process fills a new 64 MB tensor (16,384 pages) 12 times, each freed before the next; printed:
# whether it kept freed memory, and the page faults of the last 4 fills. (The first few fills grow the
# heap: torch asks for aligned memory, which a freed block of the same size alone cannot serve.)
REFILL = """
import resource, sys, torch
from agents.cpu_memory import keep_freed_memory
kept = sys.argv[1] == "keep" and keep_freed_memory()
for fill in range(12):
    if fill == 8:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 << 20).fill_(fill)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def refill(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", REFILL, mode], capture_output=True, text=True, check=True)
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere nothing changes")
def test_freed_memory_is_used_again_without_page_faults():
    assert refill("default") == ("False", pytest.approx(4 * 16_384, rel=0.1))  # fresh pages from the kernel
    kept, faults = refill("keep")
    assert kept == "True" and faults < 500


def test_off_glibc_nothing_changes(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="agents.cpu_memory")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", None)  # calling it would raise
    cpu_memory.keep_freed_memory.cache_clear()
    try:
        assert cpu_memory.keep_freed_memory() is False
    finally:
        cpu_memory.keep_freed_memory.cache_clear()
    assert "has no mallopt" in caplog.text


def test_a_cpu_model_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(models, "keep_freed_memory", lambda: calls.append(1))
    model = torch.nn.Linear(2, 2)
    model.config = type("Config", (), {"_attn_implementation": "eager"})()
    models.with_our_layers(model, torch.device("cpu"))
    models.with_our_layers(model, torch.device("meta"))
    assert calls == [1]
