"""The shared environment machinery, on the toy domain."""

import json
import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.cat import Attempt, ToolCall
from envs.state import state_hash
from toy_domain import ToyEnv, copy_task

FINISH = json.dumps({"name": "finish", "arguments": {"answer": "note 1"}})


def call(name, **arguments):
    return json.dumps({"name": name, "arguments": arguments})


def test_check_env_passes(toy_env):
    check_env(toy_env, skip_render_check=True)


def test_reset_gives_instruction_and_tools_but_never_the_answer_key(toy_env):
    obs, info = toy_env.reset(seed=1)
    assert obs == copy_task().instruction
    names = [t["function"]["name"] for t in info["tools"]]
    assert names == ["get_note", "set_note", "add", "finish"]
    assert "state" not in info["tools"][0]["function"]["parameters"]["properties"]
    blob = json.dumps(info)
    assert "verify" not in blob and "note 2" not in blob


def test_solving_the_task_scores_one_and_only_at_the_end(toy_env):
    toy_env.reset(seed=0)
    obs, reward, terminated, truncated, _ = toy_env.step(call("get_note", key="k1"))
    assert (obs, reward, terminated, truncated) == ("note 1", 0.0, False, False)
    _, reward, terminated, _, _ = toy_env.step(call("set_note", key="dst", text="note 1"))
    assert reward == 0.0 and not terminated
    _, reward, terminated, truncated, info = toy_env.step(FINISH)
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["verifier"]["status"] == "ok"


def test_wrong_final_state_scores_zero(toy_env):
    toy_env.reset(seed=0)
    _, reward, terminated, _, info = toy_env.step(FINISH)
    assert (reward, terminated) == (0.0, True)
    assert info["verifier"]["status"] == "failed"


def test_turn_limit_truncates_and_still_verifies():
    env = ToyEnv(max_turns=2)
    env.reset(seed=0)
    env.step(call("set_note", key="dst", text="note 1"))
    _, reward, terminated, truncated, info = env.step(call("add", a=1, b=2))
    assert (terminated, truncated) == (False, True)
    assert reward == 0.0 and info["verifier"]["status"] == "failed"  # no answer given


def test_code_action_calls_tools_on_the_episode_state_and_can_finish(toy_env):
    toy_env.reset(seed=0)
    code = "```python\ntext = get_note('k1')\nset_note('dst', text)\nprint(text)\nfinish(text)\n```"
    obs, reward, terminated, _, _ = toy_env.step(code)
    assert obs == "note 1\n"
    assert (reward, terminated) == (1.0, True)


def test_code_action_errors_come_back_as_text(toy_env):
    toy_env.reset(seed=0)
    obs, _, terminated, _, info = toy_env.step("```python\nprint('before')\n1/0\n```")
    assert obs.startswith("before\n") and "ZeroDivisionError" in obs and "line 2" in obs
    assert not terminated and "code_error" in info


@pytest.mark.parametrize("code", ["finish('note 2', answer='note 1')", "get_note('k1', key='k1')"])
def test_code_action_giving_an_argument_twice_is_a_type_error_as_in_python(toy_env, code):
    toy_env.reset(seed=0)
    obs, _, terminated, _, info = toy_env.step(f"```python\n{code}\n```")
    assert "TypeError" in obs and "multiple values for argument" in obs
    assert not terminated and "code_error" in info


def test_a_task_of_another_domain_is_refused_at_reset(toy_env):
    foreign = copy_task(id="elsewhere", domain="calculation")
    with pytest.raises(ValueError, match="of domain 'calculation'"):
        toy_env.reset(options={"task": foreign})
    with pytest.raises(ValueError, match="of domain 'calculation'"):
        toy_env.reset(options={"task": foreign.to_json()})


def test_step_after_the_end_is_an_error_observation(toy_env):
    toy_env.reset(seed=0)
    toy_env.step(FINISH)
    obs, reward, terminated, truncated, info = toy_env.step(FINISH)
    assert "episode is over" in obs and (reward, terminated, truncated) == (0.0, True, False)
    assert info["task_id"] == copy_task().id and info["invalid_action"] == "episode over"


def test_a_step_before_any_reset_is_an_error_observation_and_the_first_reset_plays():
    """Outside ``gym.make``'s order check: the env itself, unwrapped."""
    env = ToyEnv()
    obs, reward, terminated, truncated, info = env.step(FINISH)
    assert "no episode has started; call reset()" in obs and (reward, terminated, truncated) == (0.0, True, False)
    assert info == {"invalid_action": "no episode"} and env.transcript == []
    env.reset(seed=0)
    assert "invalid_action" not in env.step(FINISH)[4]


@pytest.mark.parametrize("options, error, said", [
    ({"task": copy_task(id="bad", world={"notes": None})}, ValueError,
     "task 'bad': the toy world {'notes': None} cannot be"),
    ({"task_id": "missing"}, KeyError, "no task 'missing'"),
    ({"task_id": ["unhashable"]}, KeyError, "no task ['unhashable']"),
    ({"taskid": "a"}, ValueError, "unknown reset option 'taskid'; this env knows task, task_id"),
    ({"world": {"notes": 2}}, ValueError, "unknown reset option 'world'"),  # the challenger env's option
    ({"task": copy_task(), "task_id": "a"}, ValueError, "task and task_id each pick a task: give one"),
    ("task_id", TypeError, "reset options must be a dict, got str"),
])
def test_a_reset_that_raises_leaves_the_episode_as_it_was(toy_env, options, error, said):
    toy_env.reset(seed=0)
    toy_env.step(call("set_note", key="k0", text="mine"))
    before = (toy_env.task, state_hash(toy_env.state), list(toy_env.transcript), toy_env._turn)
    with pytest.raises(error, match=re.escape(said)):
        toy_env.reset(options=options)
    assert (toy_env.task, state_hash(toy_env.state), toy_env.transcript, toy_env._turn) == before


def test_step_after_a_truncation_says_truncated_again():
    env = ToyEnv(max_turns=1)
    env.reset(seed=0)
    assert env.step(call("add", a=1, b=2))[2:4] == (False, True)
    obs, reward, terminated, truncated, info = env.step(FINISH)
    assert "episode is over" in obs and (reward, terminated, truncated) == (0.0, False, True)
    assert info["turn"] == 1, "the step after the end takes no turn"


def test_episodes_never_leak_writes_into_the_world_or_each_other(toy_env):
    base = ToyEnv.base_state({"notes": 3})
    before = state_hash(base)
    for i in range(1000):
        toy_env.reset(seed=i)
        assert "dst" not in toy_env.state["notes"]
        toy_env.step(call("set_note", key="dst", text=f"v{i}"))
        toy_env.step(call("set_note", key="k0", text=f"v{i}"))
    assert state_hash(base) == before
    assert base["notes"].records["k0"] == {"text": "note 0"}


def test_reset_by_task_id_and_unknown_id(tmp_path):
    env = ToyEnv(tasks=[copy_task(id="a"), copy_task(id="b")])
    _, info = env.reset(options={"task_id": "b"})
    assert info["task_id"] == "b"
    with pytest.raises(KeyError, match="no task 'zzz'"):
        env.reset(options={"task_id": "zzz"})


def test_tasks_of_another_domain_or_an_empty_pool_are_refused(tmp_path):
    with pytest.raises(ValueError, match="another domain"):
        ToyEnv(tasks=[copy_task(domain="retail")])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no toy tasks"):
        ToyEnv(tasks=empty)


def test_render_ansi_shows_the_transcript():
    env = ToyEnv(render_mode="ansi")
    env.reset(seed=0)
    env.step(call("get_note", key="k1"))
    text = env.render()
    assert "[user] Copy note k1" in text and "[tool] note 1" in text
    env.step(json.dumps({"name": "get_note", "arguments": {"key": "\ud800"}}, ensure_ascii=False))  # a lone surrogate
    assert '[assistant] {"name": "get_note", "arguments": {"key": "\\ud800"}}' in env.render()
    env.render().encode("utf-8")  # printable: the surrogate is shown as its escape


@pytest.mark.parametrize("mode, copy", [("sync", True), ("async", True), ("async", False)])
def test_vector_envs_carry_any_text(mode, copy):
    envs = gym.make_vec("Toy-v0", num_envs=3, vectorization_mode=mode, vector_kwargs={"copy": copy})
    try:
        obs, _ = envs.reset(seed=0)
        assert tuple(obs) == (copy_task().instruction,) * 3 and envs.observation_space.contains(obs)
        actions = (call("get_note", key="k1"), call("add", a=2, b=40), 'not {json "é')
        obs, rewards, terminated, truncated, _ = envs.step(actions)
        assert obs[0] == "note 1" and obs[1] == "42" and obs[2].startswith("Error: could not parse")
        assert obs[:2] == ("note 1", "42") and envs.observation_space.contains(obs)
        obs, rewards, terminated, _, _ = envs.step((FINISH,) * 3)
        assert list(terminated) == [True] * 3
        assert list(rewards) == [0.0, 0.0, 0.0]  # nobody wrote dst
    finally:
        envs.close()


ACTION_TEXT = st.one_of(
    st.text(max_size=80),
    st.builds(lambda name, args: json.dumps({"name": name, "arguments": args}),
              st.sampled_from(["get_note", "set_note", "add", "nope", "finish", ""]),
              st.dictionaries(st.sampled_from(["key", "text", "a", "b", "c"]),
                              st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)),
                              max_size=3)),
    st.builds(lambda body: "<tool_call>" + body, st.text(max_size=40)),
    st.builds(lambda body: "Action: " + body, st.text(max_size=40)),
)


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ACTION_TEXT)
def test_fuzzed_actions_never_raise_and_invalid_ones_change_nothing(toy_env, text):
    toy_env.reset(seed=0)
    before = state_hash(toy_env.state)
    obs, reward, terminated, truncated, info = toy_env.step(text)
    assert isinstance(obs, str) and reward in (0.0, 1.0)
    if "invalid_action" in info:
        assert state_hash(toy_env.state) == before
        assert obs.startswith("Error:")


def test_async_envs_forked_after_the_parent_used_the_sandbox_get_their_own_rewards(toy_env):
    """Forked vector workers must not share the parent's sandbox pipes (results would cross)."""
    toy_env.reset(seed=0)
    toy_env.step(FINISH)  # the parent's default sandbox is now running
    envs = gym.make_vec("Toy-v0", num_envs=4, vectorization_mode="async")
    try:
        for _ in range(3):
            envs.reset(seed=0)
            write = call("set_note", key="dst", text="note 1")
            envs.step((write, call("add", a=1, b=1), write, call("add", a=1, b=1)))
            _, rewards, terminated, _, _ = envs.step((FINISH,) * 4)
            assert list(rewards) == [1.0, 0.0, 1.0, 0.0] and all(terminated)
            envs.step((FINISH,) * 4)  # autoreset step
    finally:
        envs.close()


@pytest.mark.parametrize("arguments", [{"answer": "note 1", "note": "x"}, {"answer": ["note 1"]}, {"answer": None}])
def test_finish_with_other_arguments_is_refused_and_the_episode_goes_on(toy_env, arguments):
    toy_env.reset(seed=0)
    observation, reward, terminated, truncated, info = toy_env.step(call("finish", **arguments))
    assert observation.startswith("Error: finish takes one argument") and "invalid_action" in info
    assert (reward, terminated, truncated) == (0.0, False, False)
    toy_env.step(call("set_note", key="dst", text="note 1"))
    assert toy_env.step(FINISH)[1:3] == (1.0, True) and toy_env.answer == "note 1"


@pytest.mark.parametrize("max_turns, said", [(None, "the answer"), (3, "the answer"), (2, ""), (1, "")])
def test_a_replay_says_its_answer_at_the_end_unless_its_calls_used_every_turn(toy_env, max_turns, said):
    read = ToolCall("get_note", {"key": "k1"})
    toy_env.replay(copy_task(), Attempt((read, read), "the answer"), max_turns)
    assert toy_env.answer == said


def test_a_replay_ended_by_finish_says_only_what_finish_said(toy_env):
    finish = ToolCall("finish", {"answer": "note 1"})
    result, observations, _ = toy_env.replay(copy_task(), Attempt((finish, ToolCall("add", {"a": 1, "b": 1})), "more"))
    assert toy_env.answer == "note 1" and observations == ["Episode finished."] and result.status == "failed"


@pytest.mark.parametrize("kwargs, error, said", [
    ({"max_turns": 0}, ValueError, "max_turns must be at least 1"),
    ({"max_action_length": 0}, ValueError, "max_action_length must be at least 1"),
    ({"max_turns": 2.5}, TypeError, "max_turns must be an int, got 2.5"),  # would truncate at turn 3
    ({"max_turns": True}, TypeError, "max_turns must be an int, got True"),
    ({"max_action_length": "10"}, TypeError, "max_action_length must be an int, got '10'"),
])
def test_a_turn_limit_or_an_action_length_not_a_count_of_at_least_one_is_refused_at_make(kwargs, error, said):
    """An episode with no turn to play, or an action space holding only the empty text, is a config mistake."""
    with pytest.raises(error, match=said):
        ToyEnv(**kwargs)


@pytest.mark.parametrize("options", [{"task_id": "missing"}, {"task": copy_task(id="bad", world={"notes": None})},
                                     {"taskid": "a"}])
def test_a_seeded_reset_that_raises_leaves_the_generator_as_it_was(options):
    """Unseeded resets after it draw what they would have drawn had it not been tried."""
    env = ToyEnv(tasks=[copy_task(id=str(i)) for i in range(8)])
    env.reset(seed=0)
    expected = [env.reset()[1]["task_id"] for _ in range(6)]
    env.reset(seed=0)
    with pytest.raises((KeyError, ValueError)):
        env.reset(seed=99, options=options)
    assert [env.reset()[1]["task_id"] for _ in range(6)] == expected


def test_gymnasium_vector_envs_pass_their_reset_mask_on_to_each_env():
    envs = gym.vector.SyncVectorEnv([ToyEnv, ToyEnv])
    envs.reset(seed=0)
    _, infos = envs.reset(options={"reset_mask": np.array([False, True])})
    assert list(infos["_task_id"]) == [False, True]


def test_seeded_resets_draw_every_task_of_the_pool_and_the_same_seed_draws_the_same_task():
    env = ToyEnv(tasks=[copy_task(id="a"), copy_task(id="b")])
    drawn = [env.reset(seed=seed)[1]["task_id"] for seed in range(20)]
    assert set(drawn) == {"a", "b"}
    assert drawn == [env.reset(seed=seed)[1]["task_id"] for seed in range(20)]


@pytest.mark.parametrize("action", [ToolCall("finish", ["note 1"]), ToolCall("get_note", None)])
def test_a_tool_call_object_whose_arguments_are_no_dict_is_refused_as_text(toy_env, action):
    """A wrapper's ToolCall is taken as read only when its arguments are a dict; anything else is an
    error observation, never an AttributeError from the env."""
    toy_env.reset(seed=0)
    observation, reward, terminated, truncated, info = toy_env.step(action)
    assert observation.startswith("Error: an action must be text") and "invalid_action" in info
    assert (reward, terminated, truncated) == (0.0, False, False)


def test_finish_takes_a_number_as_its_answer(toy_env):
    """A model often answers a calculation with a bare JSON number: it is said as its text."""
    toy_env.reset(seed=0)
    observation, _, terminated, _, info = toy_env.step(json.dumps({"name": "finish", "arguments": {"answer": 42}}))
    assert observation == "Episode finished." and terminated and "invalid_action" not in info
    assert toy_env.answer == "42"


def test_a_code_action_ended_by_finish_runs_no_tool_after_it(toy_env):
    toy_env.reset(seed=0)
    code = "```python\nfinish('note 1')\nprint(set_note('dst', 'note 1'))\n```"
    observation, reward, terminated, _, _ = toy_env.step(code)
    assert terminated and "Error: the episode has ended." in observation
    assert "dst" not in toy_env.state["notes"] and reward == 0.0
