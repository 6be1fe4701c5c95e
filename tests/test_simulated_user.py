"""The simulated-user wrapper on its own: whose turn it is, what reaches the user, and the end."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401 (registers the environments)
from envs.user import GREETING, STOP, SimulatedUser


def call(name: str, **arguments: object) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def conversation(**kwargs: object) -> SimulatedUser:
    """A retail env with a user who has spoken: the agent's turn."""
    env = SimulatedUser(gym.make("SelfChallenge-Retail-v0", **kwargs).unwrapped)
    env.reset(seed=0)
    env.step("Hi, I need help with an order.")
    return env


# check_env warns that it checks a wrapper: on purpose, the wrapper is what users make
@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
def test_a_conversation_is_remade_from_its_spec_and_passes_gymnasiums_checks():
    env = SimulatedUser(gym.make("SelfChallenge-Retail-v0", max_turns=5), policy="Be brief.")
    remade = gym.make(env.spec)
    assert isinstance(remade, SimulatedUser) and remade.agent_policy == "Be brief."
    assert remade.unwrapped.max_turns == 5
    check_env(env, skip_render_check=True)


def test_after_the_user_stops_every_step_is_over_until_reset():
    env = conversation()
    task = env.unwrapped.task
    assert env.step("How can I help?")[4]["speaker"] == "user"
    _, reward, terminated, _, info = env.step(f"Thanks. {STOP}")
    assert terminated and info["end_reason"] == "user_stop" and reward == 0.0
    for action in [call(a.name, **a.arguments) for a in task.solution.actions] + [call("finish", answer="")]:
        observation, reward, terminated, _, _ = env.step(action)
        assert "episode is over" in observation and (reward, terminated) == (0.0, True)
    env.reset(seed=0)
    assert env.step("Hi again.")[0] == "Hi again."


def test_a_user_who_stops_at_the_end_of_a_message_past_the_observation_limit_stops():
    """Upstream looks for the stop in the user's whole message; the agent reads it cut to the limit."""
    env = conversation()
    env.step("How can I help?")
    limit = env.observation_space.max_length
    observation, _, terminated, _, info = env.step("x" * limit + STOP)
    assert terminated and info["end_reason"] == "user_stop" and len(observation) <= limit


@pytest.mark.parametrize("message", ["w" * 60, '"q\\\n' * 15, "退款已处理" * 12, "退款已处理" * 2400],
                         ids=["plain", "escapes", "non-ascii", "long"])
def test_a_message_up_to_the_limit_is_said_to_the_user_and_one_past_it_is_refused(message):
    """The limit is the message's own length, not its length as JSON escaped inside a respond call;
    a refused message comes back to the agent with its length, and the user hears nothing."""
    limit = 60 if len(message) == 60 else None
    env = conversation(**({} if limit is None else {"max_action_length": limit}))
    observation, _, _, _, info = env.step(message)
    assert observation == message and info["speaker"] == "user" and "invalid_action" not in info
    if limit is None:
        return
    env.step("Go on.")
    observation, reward, terminated, truncated, info = env.step(message + "!")
    assert "61 characters" in observation and "invalid_action" in info and info["speaker"] == "agent"
    assert not (terminated or truncated) and reward == 0.0
    assert env.step("Short and sweet.")[4]["speaker"] == "user"


@pytest.mark.parametrize("action", [5, b"hi", object(), ["x"]], ids=["int", "bytes", "object", "list"])
def test_an_agent_action_that_is_not_text_is_refused_as_the_env_refuses_it(action):
    env = conversation()
    observation, reward, terminated, truncated, info = env.step(action)
    assert observation.startswith(f"Error: an action must be text, got {type(action).__name__}.")
    assert info["speaker"] == "agent" and "invalid_action" in info
    assert (reward, terminated, truncated) == (0.0, False, False)


def test_a_user_message_that_is_not_text_is_read_as_its_repr():
    env = conversation()
    env.step("What is your order id?")
    assert env.step(b"#W0000000")[0] == "b'#W0000000'"


def test_a_turn_before_any_reset_is_the_envs_error_whoever_speaks_and_reset_starts_with_the_user():
    env = SimulatedUser(gym.make("SelfChallenge-Retail-v0").unwrapped)
    for message in ("Hi, I need help.", "How can I help?"):
        observation, reward, terminated, _, info = env.step(message)
        assert "call reset()" in observation and (reward, terminated, info["speaker"]) == (0.0, True, "agent")
    env.reset(seed=0)
    observation, _, _, _, info = env.step("Hi, I need help.")
    assert observation == "Hi, I need help." and info["speaker"] == "agent" and "invalid_action" not in info


def test_code_is_a_message_to_the_user_as_upstream_where_agents_cannot_run_it():
    env = conversation()
    task = env.unwrapped.task
    first = task.solution.actions[0]
    message = f"I would run this:\n```python\n{first.name}(**{first.arguments!r})\n```"
    observation, _, _, _, info = env.step(message)
    assert observation == message and info["speaker"] == "user" and "invalid_action" not in info
    assert env.unwrapped.answer == message  # said, and counted for the required outputs


def test_a_conversation_cut_at_the_step_limit_says_so_in_its_verdict():
    env = conversation(max_turns=1)
    task = env.unwrapped.task
    first = task.solution.actions[0]
    _, reward, terminated, truncated, info = env.step(call(first.name, **first.arguments))
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["verifier"]["kind"] == "step_limit" and info["verifier"]["status"] == "failed"
    assert "still going after 1 agent step (the final state alone: " in info["verifier"]["message"]


@pytest.mark.parametrize("stops", [True, False])
def test_a_message_on_the_last_step_gets_its_answer_and_only_a_stop_scores_it(stops):
    """The task done, the agent's last allowed step is a message: the user answers it. A stop scores
    the task as the verifier says; any other answer ends the episode truncated, at 0, saying why."""
    solution = conversation().unwrapped.task.solution
    env = conversation(max_turns=len(solution.actions) + 1)
    for action in solution.actions:
        assert env.step(call(action.name, **action.arguments))[4]["speaker"] == "agent"
    observation, reward, terminated, truncated, info = env.step(solution.answer)
    assert (observation, reward, terminated, truncated) == (solution.answer, 0.0, False, False)
    assert info["speaker"] == "user"
    _, reward, terminated, truncated, info = env.step(f"Thanks! {STOP}" if stops else "And one more thing...")
    if stops:
        assert (reward, terminated, truncated, info["end_reason"]) == (1.0, True, False, "user_stop")
        assert info["verifier"]["status"] == "ok"
    else:
        assert (reward, terminated, truncated) == (0.0, False, True)
        assert info["verifier"]["kind"] == "step_limit" and info["verifier"]["status"] == "failed"
        assert info["verifier"]["message"].endswith("(the final state alone: ok)")


def test_the_user_is_briefed_with_the_hidden_goal_and_the_agent_reads_the_policy_it_was_given():
    env = SimulatedUser(gym.make("SelfChallenge-Retail-v0").unwrapped, policy="Our own wiki.")
    instruction, info = env.reset(seed=0)
    assert (info["speaker"], info["greeting"], info["policy"]) == ("user", GREETING, "Our own wiki.")
    assert instruction == env.unwrapped.task.instruction and instruction in info["user_prompt"]
    assert env.step("Hi, I need help.")[4]["policy"] == "Our own wiki."


@pytest.mark.parametrize("tool_mode", ["strict", "upstream"])
def test_render_shows_the_conversation_both_sides_had_with_the_users_goal_first(tool_mode):
    env = SimulatedUser(gym.make("SelfChallenge-Retail-v0", render_mode="ansi", tool_mode=tool_mode))
    goal, _ = env.reset(seed=0)
    env.step("Hi, I want to return my order.")
    env.step(call("respond", content="Sure, what is your order id?"))
    env.step("It is #W0000000.")
    env.step(call("get_order_details", order_id="#W0000000"))
    env.step("Thanks.")
    lines = env.render().split("\n[")
    assert lines[0] == f"[user's goal] {goal}"
    assert [line.split("]")[0] for line in lines[1:]] == ["user", "assistant", "user", "assistant", "tool", "assistant"]
    assert lines[3] == "user] It is #W0000000." and "No user is on this conversation" not in env.render()


def test_a_stop_in_the_users_first_message_does_not_end_the_conversation() -> None:
    """As upstream, where only the user's answer to a respond can end an episode: a ###STOP### before
    the agent has said anything is just a message for the agent to read."""
    env = SimulatedUser(gym.make("SelfChallenge-Retail-v0").unwrapped)
    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(f"Never mind. {STOP}")
    assert observation == f"Never mind. {STOP}" and not (terminated or truncated) and reward == 0.0
    assert info["speaker"] == "agent" and "end_reason" not in info
