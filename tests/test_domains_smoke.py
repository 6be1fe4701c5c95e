"""Every registered domain: check_env-clean, makeable with no arguments, and its default tasks'
solutions score 1 while their failure cases score 0 when played through ``step``."""

import json

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from envs.registry import CHALLENGER_ID, ENV_IDS


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
