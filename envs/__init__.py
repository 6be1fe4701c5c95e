"""Self-Challenge environments: multi-turn tool use over self-generated Code-as-Tasks.

Importing this package registers ``SelfChallenge-Retail-v0``, ``SelfChallenge-Airline-v0``,
``SelfChallenge-Calculation-v0`` and ``SelfChallenge-WebBrowsing-v0`` with Gymnasium::

    import gymnasium as gym
    import envs

    gym.register_envs(envs)
    env = gym.make("SelfChallenge-Retail-v0")
"""

from envs.base import ToolEnv
from envs.cat import Attempt, CatFormatError, CodeAsTask, ToolCall
from envs.registry import DOMAINS, ENV_IDS, env_class, register_all

register_all()

__all__ = ["DOMAINS", "ENV_IDS", "Attempt", "CatFormatError", "CodeAsTask", "ToolCall", "ToolEnv", "env_class"]
