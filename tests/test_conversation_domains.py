"""Retail and airline as Gymnasium environments, with their scripted challengers."""

import dataclasses
import json

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.cat import Attempt
from envs.filter import filter_tasks
from envs.scripted import Draft, answer_verifier, as_challenger_writes, finish_drafts
from envs.state import state_hash

IDS = {"retail": "SelfChallenge-Retail-v0", "airline": "SelfChallenge-Airline-v0"}


def challenger(domain):
    if domain == "retail":
        from envs.retail.challenger import make_tasks
    else:
        from envs.airline.challenger import make_tasks
    return make_tasks


def play(env, task, attempt):
    env.reset(options={"task": task})
    reward, done = 0.0, False
    for action in attempt.actions:
        _, reward, done, truncated, _ = env.step(json.dumps(action.to_json()))
        assert not truncated
        if done:
            return reward
    _, reward, done, _, _ = env.step(json.dumps({"name": "finish", "arguments": {"answer": attempt.answer}}))
    assert done
    return reward


@pytest.mark.parametrize("domain", IDS)
def test_check_env_and_make_without_arguments(domain):
    env = gym.make(IDS[domain])
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs and {t["function"]["name"] for t in info["tools"]} >= {"think", "respond", "finish"}
    obs, *_ = env.step(json.dumps({"name": "think", "arguments": {"thought": "look first"}}))
    assert isinstance(obs, str)
    env.close()


@pytest.mark.parametrize("domain", IDS)
def test_solution_scores_one_and_each_failure_zero_through_step(domain):
    env = envs.env_class(domain)()
    for task in env.tasks[:12]:
        assert play(env, task, task.solution) == 1.0, task.id
        for failure in task.failures:
            assert play(env, task, failure) == 0.0, task.id


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("domain", IDS)
def test_vector_envs(domain, mode):
    vec = gym.make_vec(IDS[domain], num_envs=8, vectorization_mode=mode)
    try:
        obs, info = vec.reset(seed=1)
        assert len(obs) == 8 and all(isinstance(o, str) and o for o in obs)
        think = json.dumps({"name": "think", "arguments": {"thought": "ok"}})
        obs, rewards, terminated, truncated, _ = vec.step((think,) * 8)
        assert list(obs) == [""] * 8 and not terminated.any()
    finally:
        vec.close()


@pytest.mark.parametrize("domain", IDS)
def test_challenger_makes_500_distinct_tasks_that_all_pass_the_filter(domain):
    tasks = challenger(domain)(seed=3, n=500)
    assert len(tasks) == 500
    assert len({t.instruction for t in tasks}) == 500
    assert len({t.id for t in tasks}) == 500
    kept, report, _ = filter_tasks(tasks)
    assert report.kept == report.total == 500, str(report)
    assert {t.provenance["family"] for t in tasks} >= {"cancel"}
    assert min(t.provenance["difficulty"] for t in tasks) <= 1
    assert max(t.provenance["difficulty"] for t in tasks) >= 6


@pytest.mark.parametrize("domain", IDS)
def test_failure_cases_are_well_formed_and_rejected_by_the_verifier_itself(domain):
    env = envs.env_class(domain)()
    for task in challenger(domain)(seed=5, n=40):
        assert len(task.failures) >= 3
        for failure in task.failures:
            result, _, problems = env.replay(task, failure)
            assert problems == [], (task.id, problems)
            assert result.status == "failed", (task.id, result)


@pytest.mark.parametrize("domain", IDS)
def test_a_thousand_episodes_with_writes_leave_the_world_unchanged(domain):
    env = envs.env_class(domain)()
    task = next(t for t in env.tasks if t.provenance["family"] == "cancel")
    base = env.base_state(task.world)
    before = state_hash(base)
    for _ in range(1000):
        env.reset(options={"task": task})
        for action in task.solution.actions:
            env.toolset.call(env.state, action.name, action.arguments)
        assert state_hash(env.state) != before
    assert state_hash(base) == before


@pytest.mark.parametrize("mode", ["strict", "upstream"])
def test_finish_says_its_answer_played_or_replayed_except_in_upstream_mode_where_only_respond_is_heard(mode):
    env = gym.make(IDS["retail"], tool_mode=mode).unwrapped
    task = env.tasks[0]
    attempt = dataclasses.replace(task.solution, answer="the answer at the end")
    env.replay(task, attempt)
    replayed = env.answer
    play(env, task, attempt)
    assert env.answer == replayed and ("the answer at the end" in replayed) == (mode == "strict")


@pytest.mark.parametrize("arguments", [{"content": 5}, {"content": "Hello.", "tone": "warm"}, {}])
def test_a_strict_respond_takes_one_text_and_a_refused_one_leaves_the_episode_going(arguments):
    env = gym.make(IDS["retail"]).unwrapped
    env.reset(seed=0)
    observation, _, terminated, truncated, info = env.step(json.dumps({"name": "respond", "arguments": arguments}))
    assert observation.startswith("Error: respond takes one argument") and "invalid_action" in info
    assert not (terminated or truncated)
    assert env.step(json.dumps({"name": "finish", "arguments": {"answer": "done"}}))[2] and env.answer == "done"


@pytest.mark.parametrize("domain", IDS)
def test_a_world_spec_left_out_is_seed_0_with_50_users(domain):
    cls = type(gym.make(IDS[domain]).unwrapped)
    assert state_hash(cls.build_world({})) == state_hash(cls.build_world({"seed": 0, "users": 50}))
    assert state_hash(cls.build_world({"users": 5})) == state_hash(cls.build_world({"seed": 0, "users": 5}))
    assert len(cls.build_world({})["users"]) == 50




def test_an_upstream_failure_ends_its_own_episode_only():
    env = gym.make(IDS["retail"], tool_mode="upstream").unwrapped
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(json.dumps({"name": "respond", "arguments": {}}))
    assert terminated and reward == 0.0 and info["verifier"]["kind"] == "upstream_failure"
    task = next(t for t in env.tasks if env.replay(t, t.solution)[0].status == "ok")
    env.reset(seed=0)
    env.step(json.dumps({"name": "respond", "arguments": {}}))
    assert env.replay(task, task.solution)[0].status == "ok", "the next episode starts without the failure"


@pytest.mark.parametrize("mode", ["strict", "upstream"])
@pytest.mark.parametrize("domain", IDS)
def test_respond_keeps_the_episode_going_and_a_transfer_to_a_human_ends_it(domain, mode):
    env = gym.make(IDS[domain], tool_mode=mode).unwrapped
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(json.dumps({"name": "respond", "arguments": {"content": "Hello."}}))
    assert not (terminated or truncated) and "invalid_action" not in info and env.answer == "Hello."
    summary = {"summary": "The user wants a human."}
    observation, reward, terminated, _, info = env.step(
        json.dumps({"name": "transfer_to_human_agents", "arguments": summary}))
    assert observation == "Transfer successful" and terminated and "verifier" in info


def test_finish_drafts_keeps_the_failures_its_verifier_rejects_and_one_task_per_instruction():
    """A failure is kept when its state or its answer is wrong (a write with the right answer is one); one whose answer
    says every output in another case, leaving the state as the solution does, would pass and is dropped. A repeated
    instruction makes no second task; the id names the domain, the seed and the task's place."""
    env = envs.env_class("retail")()
    cancel = next(t for t in env.tasks if t.provenance["family"] == "cancel")
    right = Attempt((), "It costs 1,234 USD.")
    wrong = (Attempt((), "It costs 99 USD."), Attempt(cancel.solution.actions, "it costs 1234 usd"), Attempt((), "No."))
    draft = Draft("lookup", "What does it cost?", right, (*wrong, Attempt((), "IT COSTS 1234 usd")), ("1234 USD",))
    other = dataclasses.replace(draft, instruction="What does it cost, again?")
    tasks = finish_drafts(iter([draft, draft, other]), domain="retail", world=cancel.world,
                          base=env.base_state(cancel.world), toolset=env.toolset, seed=7, n=2, max_tries=9)
    assert [t.id for t in tasks] == ["retail-7-0", "retail-7-1"] and tasks[0].failures == wrong
    assert [t.instruction for t in tasks] == [draft.instruction, other.instruction]
    assert tasks[0].provenance == {"challenger": "scripted", "family": "lookup", "difficulty": 0,
                                   "required": ["1234 USD"], "read_only": True}


@pytest.mark.parametrize("domain", IDS)
def test_a_challenger_could_write_only_read_only_tasks_and_verifies_them_by_the_answer_alone(domain):
    """No tool shows the state's hash, so the tasks a challenger is shown as its own (its demonstrations) check the
    answer only; a task that writes is none of them."""
    tasks = envs.env_class(domain)().tasks
    written = {t.id: as_challenger_writes(t) for t in tasks}
    assert all(written[t.id] is None for t in tasks if not t.provenance["read_only"])
    kept = [w for w in written.values() if w is not None]
    assert kept and all("state_hash" not in w.verifier and w.verifier == answer_verifier(w.provenance["required"])
                        for w in kept)
