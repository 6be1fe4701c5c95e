"""Which tools an env's prompt lists: a curriculum knob for small models.

On a CPU every rollout and update costs in proportion to the system prompt, and a domain's full
tool list is most of it (calculation's 22 tools take about 2,400 tokens, two take 670). Listing
only some of them shortens every episode; the env still runs any tool it has.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym


class ListedTools(gym.Wrapper):
    """A domain env whose system prompt lists only some of its tools (``finish`` always).

    Only what the policy is shown changes: the tool schemas in ``info``. The env still runs any
    tool it has, so a call to an unlisted one is not an error, just one the policy was not told of.
    """

    def __init__(self, env: gym.Env, names: Sequence[str]):
        super().__init__(env)
        self.names = set(names) | {"finish"}

    def _trim(self, info: dict[str, Any]) -> dict[str, Any]:
        if "tools" in info:
            info = {**info, "tools": [t for t in info["tools"] if t["function"]["name"] in self.names]}
        return info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        return observation, self._trim(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated, truncated, self._trim(info)


def listed_tools(names: Sequence[str] | None) -> list[Callable[[gym.Env], gym.Env]]:
    """The wrappers that list only ``names`` (none when ``names`` is empty or ``None``), as
    ``gym.make_vec(wrappers=…)`` takes them."""
    return [functools.partial(ListedTools, names=tuple(names))] if names else []
