"""Warm-start demonstrations look token for token like the policy's own episodes."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

from agents.models import load_tokenizer
from agents.prompting import ChatFormat
from envs.cat import Attempt
from envs.registry import env_class
from test_train_support import toy_answer_task
from toy_domain import ToyEnv, copy_task
from train.demos import demonstration, solution_actions, transcript_actions
from envs.prompt_tools import ListedTools
from train.tasks import Selection, make_env


@pytest.fixture(scope="module")
def chat() -> ChatFormat:
    return ChatFormat.of(load_tokenizer())


def spans(trajectory) -> list[list[int]]:
    """Each turn's loss-masked tokens."""
    out = []
    for start in trajectory.turn_starts:
        end = start
        while end < len(trajectory.token_ids) and trajectory.loss_mask[end]:
            end += 1
        out.append(trajectory.token_ids[start:end])
    return out


def test_a_solution_becomes_the_episode_the_policy_would_have_played(chat):
    task = copy_task()
    env = ToyEnv(tasks=[task])
    demo = demonstration(env, chat, solution_actions(task), {"task_id": task.id})
    assert demo.reward == 1.0 and demo.terminated and demo.invalid_actions == 0
    actions = solution_actions(task)
    assert json.loads(actions[-1]) == {"name": "finish", "arguments": {"answer": "note 1"}}
    first = chat.first_messages(ToyEnv.policy, env.tool_schemas, task.instruction)
    assert demo.token_ids[:demo.prompt_length] == chat.prompt_ids(first, env.tool_schemas)
    tokenizer = chat.tokenizer
    for action, tokens in zip(actions, spans(demo)):
        assert tokenizer.decode(tokens, skip_special_tokens=False) == action + "<|im_end|>"
    # between actions: the turn's closing tokens and the real observation, with no loss
    observations = [m["content"] for m in demo.messages[3::2]]
    assert observations[0] == "note 1" and observations[1] == "saved dst"
    for turn in range(len(actions) - 1):
        between = demo.token_ids[demo.turn_starts[turn] + len(spans(demo)[turn]):demo.turn_starts[turn + 1]]
        assert between == chat.close_turn_ids(spans(demo)[turn]) + chat.observation_ids(observations[turn])
    assert sum(demo.loss_mask) == sum(len(s) for s in spans(demo))
    assert demo.token_ids[-1] == chat.turn_end_ids[0], "the episode ends on the policy's last token"


@pytest.mark.parametrize("text", ["\u4e2d" * 12000, "note \ud800", " note 1\n"],
                         ids=["long-cjk", "lone-surrogate", "surrounding-whitespace"])
def test_a_solution_is_written_as_a_model_writes_it_whatever_its_characters(chat, text):
    """Characters as they are (12,000 CJK ones escaped are 72,000: over the action limit), but a lone
    surrogate, which no tokenizer takes, escaped."""
    verifier = f"def verify(state, answer):\n    return answer == {text!r}\n"
    task = copy_task(id="chars", verifier=verifier, solution=Attempt((), text))
    actions = solution_actions(task)
    assert json.loads(actions[-1])["arguments"]["answer"] == text and len(actions[-1]) < len(text) + 60
    demo = demonstration(ToyEnv(tasks=[task]), chat, actions, {"task_id": task.id})
    assert demo.reward == 1.0 and demo.invalid_actions == 0


def test_a_transcript_that_does_not_solve_its_task_shows_reward_zero(chat):
    task = copy_task()
    record = {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": task.instruction},
                           {"role": "assistant", "content": '{"name": "finish", "arguments": {"answer": "no idea"}}'},
                           {"role": "tool", "content": "Episode finished."}]}
    demo = demonstration(ToyEnv(tasks=[task]), chat, transcript_actions(record), {"task_id": task.id})
    assert demo.reward == 0.0 and demo.num_turns == 1


def test_a_demonstration_plays_the_task_its_options_name_and_is_labelled_with_it(chat):
    """The env holds other tasks too: the options pick the one played, and the trajectory names it and its
    domain (which the trainer groups and reports by)."""
    other = copy_task(id="toy-other", instruction="Copy note k2 to the key 'dst'.")
    task = copy_task()
    demo = demonstration(ToyEnv(tasks=[other, task]), chat, solution_actions(task), {"task_id": task.id})
    assert (demo.task_id, demo.domain, demo.reward) == (task.id, "toy", 1.0)
    assert demo.messages[1]["content"] == task.instruction


def test_a_transcript_that_runs_out_of_turns_ends_truncated_where_the_env_cut_it(chat):
    """Past ``max_turns`` the env truncates the episode: the demonstration stops there, unsolved and marked
    truncated, and counts each action the env could not run."""
    task = copy_task()
    malformed = ["get the note please", '{"name": "no_such_tool", "arguments": {}}']
    demo = demonstration(ToyEnv(tasks=[task], max_turns=3), chat, malformed + solution_actions(task),
                         {"task_id": task.id})
    assert demo.num_turns == 3 and demo.invalid_actions == 2
    assert demo.truncated and not demo.terminated and demo.reward == 0.0
    assert demo.token_ids[-1] == chat.turn_end_ids[0], "the episode ends on the policy's last token"


def test_a_demonstrations_reward_is_the_envs_own_even_partial_credit(chat):
    task = copy_task()
    env = gym.wrappers.TransformReward(ToyEnv(tasks=[task]), lambda reward: reward / 2)
    assert demonstration(env, chat, solution_actions(task), {"task_id": task.id}).reward == 0.5


def test_a_transcript_record_without_messages_has_no_actions():
    assert transcript_actions({"task_id": "toy-copy"}) == []


def test_listed_tools_shorten_the_prompt_and_leave_the_env_as_it_was(chat):
    task = toy_answer_task()
    env = make_env("toy", task, max_turns=4, prompt_tools={"toy": ["get_note"]})
    assert isinstance(env, ListedTools)
    _, info = env.reset(options={"task_id": task.id})
    assert [t["function"]["name"] for t in info["tools"]] == ["get_note", "finish"]
    observation, *_ = env.step('{"name": "add", "arguments": {"a": 2, "b": 3}}')
    assert observation == "5"
    full = env_class("toy")(tasks=[task])
    assert len(demonstration(env, chat, solution_actions(task), {"task_id": task.id}).token_ids) < \
        len(demonstration(full, chat, solution_actions(task), {"task_id": task.id}).token_ids)


def test_tasks_fit_their_domains_action_budget_and_listed_tools():
    task = copy_task()  # get_note, set_note
    assert Selection().fits(task) and Selection({"toy": 2}).fits(task) and not Selection({"toy": 1}).fits(task)
    assert Selection({"calculation": 1}).fits(task), "another domain's budget does not apply"
    assert Selection(prompt_tools={"toy": ["get_note", "set_note"]}).fits(task)
    assert not Selection(prompt_tools={"toy": ["get_note"]}).fits(task)
    assert Selection(prompt_tools={"calculation": ["calculate"]}).fits(task), "another domain's list does not apply"


def test_tasks_fit_their_domains_families_and_the_llms_tasks_name_none():
    scripted = copy_task(provenance={"challenger": "scripted", "family": "copy"})
    assert Selection(families={"toy": ["copy", "move"]}).fits(scripted)
    assert not Selection(families={"toy": ["move"]}).fits(scripted)
    assert Selection(families={"calculation": ["move"]}).fits(scripted), "another domain's families do not apply"
    assert Selection(families={"toy": ["move"]}).fits(copy_task(provenance={"challenger": "llm:tiny"}))
