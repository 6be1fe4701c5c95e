"""Domains where the agent serves a user, as in tau-bench: retail and airline.

They share tau-bench's shape: ``respond`` talks to the user (what the agent says is its answer),
``transfer_to_human_agents`` ends the episode, a world is either tau-bench's JSON files
(``{"data_dir": path}``) or generated from ``{"seed", "users"}``, and the default pool comes from
the domain's scripted challenger, as in every domain.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from envs.base import ToolEnv
from envs.state import State, make_base


class ConversationEnv(ToolEnv):
    conversational: ClassVar[bool] = True
    terminal_tools: ClassVar[frozenset[str]] = frozenset({"transfer_to_human_agents"})
    world_module: ClassVar[ModuleType]
    """The domain's world module: ``TABLES``, ``load(data_dir)`` and ``generate(seed, users)``."""

    @classmethod
    def build_world(cls, world: dict[str, Any]) -> State:
        if "data_dir" in world:
            data = cls.world_module.load(Path(world["data_dir"]))
        else:
            data = cls.world_module.generate(int(world.get("seed", 0)), int(world.get("users", 50)))
        return make_base(data, cls.world_module.TABLES)
