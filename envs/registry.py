"""The domains: their Gymnasium ids and where their environment classes live.

Classes are imported on first use, so ``import envs`` stays cheap and a domain's data is only
loaded when an environment of it is made.
"""

from __future__ import annotations

import importlib

import gymnasium as gym

from envs.base import ToolEnv

ENV_IDS = {
    "retail": "SelfChallenge-Retail-v0",
    "airline": "SelfChallenge-Airline-v0",
    "calculation": "SelfChallenge-Calculation-v0",
    "web": "SelfChallenge-WebBrowsing-v0",
}

ENTRY_POINTS = {
    "retail": "envs.retail.env:RetailEnv",
    "airline": "envs.airline.env:AirlineEnv",
    "calculation": "envs.calculation.env:CalculationEnv",
    "web": "envs.web.env:WebEnv",
}

DOMAINS: dict[str, str | type[ToolEnv]] = dict(ENTRY_POINTS)
"""Domain name -> environment class (or its ``module:Class`` path). Tests may add their own."""


def env_class(domain: str) -> type[ToolEnv]:
    if domain not in DOMAINS:
        raise KeyError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    entry = DOMAINS[domain]
    if isinstance(entry, str):
        module, name = entry.split(":")
        entry = DOMAINS[domain] = getattr(importlib.import_module(module), name)
    return entry


CHALLENGER_ID = "SelfChallenge-Challenger-v0"
"""The challenger's episode in any domain (``gym.make(CHALLENGER_ID, domain=...)``; :mod:`envs.challenger`)."""


def env_id(domain: str) -> str:
    """The Gymnasium id of ``domain``'s env; a domain added to :data:`DOMAINS` (a test's, a config's
    ``extra_domains``) is registered as ``SelfChallenge-<domain>-v0`` on first use."""
    if domain in ENV_IDS:
        return ENV_IDS[domain]
    name = f"SelfChallenge-{domain}-v0"
    _register(name, env_class(domain))
    return name


def _register(name: str, entry_point: str | type[gym.Env]) -> None:
    """Register without ``gym.make``'s passive env checker: Gymnasium 1.4's breaks the env for good
    once a first ``reset`` raises (an unknown ``task_id``: every later step is a TypeError), and the
    tests hold every env to ``check_env``, which checks more."""
    if name not in gym.registry:
        gym.register(id=name, entry_point=entry_point, disable_env_checker=True)


def register_all() -> None:
    for domain, env_id in ENV_IDS.items():
        _register(env_id, ENTRY_POINTS[domain])
    _register(CHALLENGER_ID, "envs.challenger:ChallengerEnv")
