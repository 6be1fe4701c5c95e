"""Shared fixtures: the toy test domain, registered the way a real domain is."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gymnasium as gym
import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from envs.registry import DOMAINS  # noqa: E402
from toy_domain import ToyEnv  # noqa: E402

DOMAINS["toy"] = ToyEnv
if "Toy-v0" not in gym.registry:
    gym.register(id="Toy-v0", entry_point="toy_domain:ToyEnv")


@pytest.fixture
def toy_env() -> ToyEnv:
    env = ToyEnv()
    yield env
    env.close()
