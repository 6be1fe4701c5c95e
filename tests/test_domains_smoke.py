"""Every registered domain: check_env-clean, makeable with no arguments, and its default tasks'
solutions score 1 while their failure cases score 0 when played through ``step``."""

import json
import subprocess
import sys

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from envs.registry import CHALLENGER_ID, ENV_IDS, env_id


@pytest.mark.parametrize("env_id", ENV_IDS.values())
def test_domain_env_is_checkable_and_its_default_tasks_are_sound(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    raw = env.unwrapped
    for task in raw.tasks[:6]:
        for attempt, expected in [(task.solution, 1.0)] + [(f, 0.0) for f in task.failures]:
            raw.reset(options={"task": task})
            reward, done = 0.0, False
            for action in attempt.actions:
                _, reward, done, _, _ = raw.step(json.dumps(action.to_json()))
                if done:
                    break
            if not done:
                _, reward, done, _, _ = raw.step(json.dumps({"name": "finish", "arguments": {"answer": attempt.answer}}))
            assert done and reward == expected, (task.id, attempt)
    env.close()


@pytest.mark.parametrize("env_id", [*ENV_IDS.values(), CHALLENGER_ID])
def test_an_env_whose_first_reset_raised_plays_after_the_next(env_id):
    """Gymnasium 1.4's passive env checker broke such an env for good (every step a TypeError)."""
    env = gym.make(env_id, **({"domain": "calculation"} if env_id == CHALLENGER_ID else {}))
    with pytest.raises((KeyError, ValueError)):
        env.reset(options={"task_id": "no-such-task"} if env_id != CHALLENGER_ID else {"world": {"seed": "x"}})
    env.reset(seed=0)
    observation, _, _, _, _ = env.step('{"name": "nope", "arguments": {}}')
    assert "nope" in observation
    env.close()


def test_a_domain_keeps_its_gym_id_and_an_added_one_is_registered_under_its_name():
    """Runs and evaluations make their envs by env_id: a built-in domain's is its documented id (the README's), an added
    domain (the tests' toy) gets SelfChallenge-<domain>-v0, registered on first use."""
    assert env_id("retail") == "SelfChallenge-Retail-v0" and env_id("web") == "SelfChallenge-WebBrowsing-v0"
    assert env_id("toy") == "SelfChallenge-toy-v0" and gym.make("SelfChallenge-toy-v0").unwrapped.domain == "toy"


def test_importing_envs_imports_no_domain_env_until_one_is_made():
    """``import envs`` registers every id but imports a domain's env (and loads its data) only when one is made."""
    code = "import sys, envs; print(sorted(m for m in sys.modules if m.startswith('envs.') and m.endswith('.env')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
