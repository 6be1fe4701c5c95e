"""One way a model plays: training, held-out evaluation, tau-bench and the challenger all play through
:func:`agents.rollout.play` in Gymnasium vector envs, render the same prompt token for token, and give
the same episodes whether the vector env is sync or async (fp32, fixed seeds)."""

from __future__ import annotations

import json

import pytest
from accelerate import Accelerator
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents.decoding import SamplingSettings
from agents.policy import ContextLimitExceeded, ModelPolicy, TextPolicy, Trajectory, scripted
from agents.prompting import ChatFormat
from agents.rollout import make_vector_env, play, play_tasks
from envs.registry import CHALLENGER_ID
from eval import heldout
from test_agents_challenge import WORLD, proposal
from test_agents_prompting import TOOLS_TEMPLATE, with_template
from test_agents_rollout import model, tokenizer  # noqa: F401 (fixtures)
from test_train_learning import bandit, bandit_config  # noqa: F401 (bandit is a fixture)
from toy_domain import ToyEnv, copy_task
from train.config import TrainConfig
from train.rundir import RunDir
from train.run import train
from train.trainer import Context, play as train_play

TASKS = [copy_task(id=f"toy-{i}", instruction=f"({i}) Copy note k1 to the key 'dst' and tell me its text.")
         for i in range(5)]


def as_tuples(trajectories: list[Trajectory]) -> list[tuple]:
    return [(t.task_id, t.token_ids, t.loss_mask, t.logprobs, t.messages, t.reward, t.end_reason)
            for t in trajectories]


@pytest.mark.parametrize("template", ["plain", "tools"])
def test_training_and_evaluation_render_the_same_prompt_token_for_token(model, tokenizer, template, tmp_path):
    tokenizer = with_template(tokenizer, TOOLS_TEMPLATE) if template == "tools" else tokenizer
    player = ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=6))
    config = TrainConfig(domains=["toy"], max_turns=3, max_new_tokens=6, rollout_batch=4, prompt_tools={},
                         tasks_per_step=2, group_size=2)
    ctx = Context(config, Accelerator(cpu=True), RunDir(tmp_path, writer=False), model, player,
                  {t.id: t for t in TASKS}, {"toy": {"train": [], "heldout": [t.id for t in TASKS]}})
    trained = train_play(ctx, TASKS, temperature=0.0, seed=3)
    ctx.close()
    envs = heldout.vector_envs(TASKS, batch_size=2, max_turns=3)
    evaluated = heldout.score(envs, player, TASKS, seed=3, show=False)
    assert [t.token_ids for t in trained] == [t.token_ids for t in evaluated]
    assert [t.messages for t in trained] == [t.messages for t in evaluated]
    prompt = tokenizer.decode(trained[0].token_ids[:trained[0].prompt_length])
    listed_in_system = '"name": "get_note"' in trained[0].messages[0]["content"]
    if template == "tools":  # the template shows the tools; the system message is the bare policy
        assert "<tools>" in prompt and not listed_in_system
    else:  # the template cannot: the system prompt lists them
        assert "<tools>" not in prompt and listed_in_system


def test_sync_and_async_vector_envs_give_the_same_sampled_episodes(model, tokenizer):
    player = ModelPolicy(model, tokenizer, SamplingSettings(temperature=1.0, max_new_tokens=8))
    played = {}
    for mode in ("sync", "async"):
        envs = make_vector_env("Toy-v0", 3, mode, tasks=TASKS, max_turns=4)
        played[mode] = as_tuples(play_tasks({"toy": envs}, player, TASKS + TASKS[:2], seed=11))
        envs.close()
    assert played["sync"] == played["async"]
    assert len(played["sync"]) == 7 and [t[0] for t in played["sync"]] == [t.id for t in TASKS + TASKS[:2]]


def test_more_jobs_than_sub_envs_play_in_waves_as_they_would_one_at_a_time(model, tokenizer):
    player = ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=8))
    limits = [1, 3, 2]
    envs = SyncVectorEnv([lambda n=n: ToyEnv(tasks=TASKS, max_turns=n) for n in limits],
                         autoreset_mode=AutoresetMode.DISABLED)
    jobs = [{"task_id": t.id} for t in TASKS]
    together = play(envs, player, jobs)
    for index, (job, trajectory) in enumerate(zip(jobs, together)):
        alone_env = SyncVectorEnv([lambda n=limits[index % 3]: ToyEnv(tasks=TASKS, max_turns=n)],
                                  autoreset_mode=AutoresetMode.DISABLED)
        (alone,) = play(alone_env, player, [job])
        assert (trajectory.token_ids, trajectory.messages) == (alone.token_ids, alone.messages)
        assert trajectory.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        assert trajectory.num_turns == limits[index % 3]


def test_a_user_built_vector_env_with_the_default_autoreset_plays_too(model, tokenizer):
    """Gymnasium's default (autoreset on the next step) works as well: a sub-env is reset as its episode ends."""
    player = TextPolicy(scripted(['{"name": "get_note", "arguments": {"key": "k1"}}',
                                  '{"name": "set_note", "arguments": {"key": "dst", "text": "note 1"}}',
                                  '{"name": "finish", "arguments": {"answer": "note 1"}}']))
    envs = SyncVectorEnv([lambda: ToyEnv(tasks=TASKS, max_turns=5)] * 2)
    played = play(envs, player, [{"task_id": t.id} for t in TASKS])
    assert [t.reward for t in played] == [1.0] * 5 and {t.num_turns for t in played} == {3}


def test_the_challenger_plays_in_a_vector_env_and_its_kept_task_comes_back_sync_and_async():
    writer = TextPolicy(scripted([proposal()]))
    results = {}
    for mode in ("sync", "async"):
        envs = make_vector_env(CHALLENGER_ID, 2, mode, domain="toy", explore_turns=0, challenger="llm:fixed")
        episodes = play(envs, writer, [{"world": WORLD}] * 3, seed=0)
        envs.close()
        results[mode] = [(e.reward, e.final_info["stage"], e.final_info["task"]["instruction"]) for e in episodes]
    assert results["sync"] == results["async"] == [(1.0, "new", "Copy note k1 to 'dst' and tell me its text.")] * 3


def test_a_training_run_gives_the_same_metrics_with_async_envs(tmp_path, bandit):  # noqa: F811
    metrics = {}
    for mode in ("sync", "async"):
        run, _ = train(bandit_config(tmp_path / mode, bandit, algorithm="grpo", steps=2, lr=0.02, vectorization=mode,
                                     save_trajectories=True))
        kept = ("reward_mean", "success", "loss", "kept_episodes")
        metrics[mode] = [{k: m.get(k) for k in kept} for m in run.read_metrics() if m["phase"] in ("rl", "eval")]
        metrics[mode + "-episodes"] = [(r["task_id"], r["reward"], r["messages"]) for r in
                                       map(json.loads, (run.path / "trajectories.jsonl").read_text().splitlines())]
    assert metrics["sync"] == metrics["async"] and metrics["sync-episodes"] == metrics["async-episodes"]
    assert len(metrics["sync"]) == 4  # base, two RL steps, after RL
    page = (tmp_path / "async" / "runs" / "run" / "report.md").read_text()
    assert "## Held-out success per stage" in page and "## Wall time per stage" in page and (tmp_path / "async" / "runs" / "run" / "plots" / "training.png").is_file()


def test_the_train_command_help_lists_every_config_key_with_its_default(capsys):
    from train.__main__ import build_parser

    text = " ".join(build_parser().format_help().split())
    for field in TrainConfig.__dataclass_fields__.values():
        assert f"--{field.name.replace('_', '-')}" in text
    assert "(default: 'sync')" in text and "(default: 64)" in text


def toy(n: int, tasks=TASKS, cls=ToyEnv, turns: int = 2) -> SyncVectorEnv:
    return SyncVectorEnv([lambda: cls(tasks=tasks, max_turns=turns)] * n, autoreset_mode=AutoresetMode.DISABLED)


def episodes(trajectories):
    return [(t.task_id, t.token_ids, t.messages) for t in trajectories]


def test_each_wave_samples_with_the_seed_of_its_first_job(model, tokenizer):
    """play's docstring: a wave starting at job j samples with seed + j (and resets sub-env i with seed + j + i)."""
    player = ModelPolicy(model, tokenizer, SamplingSettings(temperature=1.0, max_new_tokens=6))
    jobs = [{"task_id": t.id} for t in TASKS[:4]]
    together = play(toy(2), player, jobs, seed=5)
    apart = play(toy(2), player, jobs[:2], seed=5) + play(toy(2), player, jobs[2:], seed=7)
    assert episodes(together) == episodes(apart)
    for a, b in zip(together, apart):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


class OtherToy(ToyEnv):
    domain = "toy2"


def test_play_tasks_reports_each_end_with_the_tasks_index_in_its_list():
    tasks = [TASKS[0], copy_task(id="other-0", domain="toy2"), TASKS[1], copy_task(id="other-1", domain="toy2")]
    envs = {"toy": toy(2, [t for t in tasks if t.domain == "toy"]),
            "toy2": toy(2, [t for t in tasks if t.domain == "toy2"], OtherToy)}
    ended = {}
    player = TextPolicy(scripted(['{"name": "finish", "arguments": {"answer": "x"}}']))
    played = play_tasks(envs, player, tasks, on_end=lambda index, t: ended.__setitem__(index, t.task_id))
    assert [t.task_id for t in played] == [t.id for t in tasks]
    assert ended == {i: t.id for i, t in enumerate(tasks)}


def test_a_seat_whose_episode_ends_is_told_so_once_and_acts_no_more():
    """An ended episode leaves its player's batch at once (Seats.end): a model's seats free its cache row."""
    log = []

    class Recording(TextPolicy):
        def start(self, openings, seed=None):
            seats = super().start(openings, seed)
            act = seats.act
            seats.act = lambda rows: (log.append(("act", tuple(rows))), act(rows))[1]
            seats.end = lambda seat: log.append(("end", seat))
            return seats

    envs = SyncVectorEnv([lambda n=n: ToyEnv(tasks=TASKS, max_turns=n) for n in (1, 3)],
                         autoreset_mode=AutoresetMode.DISABLED)
    play(envs, Recording(scripted(['{"name": "add", "arguments": {"a": 1, "b": 2}}'])), [{"task_id": TASKS[0].id}] * 2)
    assert log == [("act", (0, 1)), ("end", 0), ("act", (1,)), ("act", (1,)), ("end", 1)]


def test_the_agents_invalid_actions_are_counted_each_in_its_own_episode():
    finish = '{"name": "finish", "arguments": {"answer": "x"}}'

    def policy(messages):
        said = sum(m["role"] == "assistant" for m in messages)
        if "(0)" in messages[1]["content"] and said < 2:
            return ['not a tool call', '{"name": "nope", "arguments": {}}'][said]
        return '{"name": "add", "arguments": {"a": 1, "b": 2}}' if said < 2 else finish

    bad, good = play(toy(2, turns=5), TextPolicy(policy), [{"task_id": t.id} for t in TASKS[:2]])
    assert bad.num_turns == good.num_turns == 3
    assert (bad.invalid_actions, good.invalid_actions) == (2, 0)


def test_an_episode_cut_by_the_context_reads_nothing_after_its_last_turn():
    def policy(messages):
        if "(0)" in messages[1]["content"] and sum(m["role"] == "assistant" for m in messages) == 1:
            raise ContextLimitExceeded("full")
        return '{"name": "add", "arguments": {"a": 1, "b": 2}}'

    cut, whole = play(toy(2, turns=3), TextPolicy(policy), [{"task_id": t.id} for t in TASKS[:2]])
    assert cut.end_reason == "context_limit" and cut.truncated and not cut.terminated
    assert [m["role"] for m in cut.messages] == ["system", "user", "assistant", "tool"]
    assert whole.end_reason == "truncated" and whole.num_turns == 3


def test_a_model_trajectory_ends_at_the_policys_last_token_and_its_chat_at_the_last_observation(model, tokenizer):
    """Trajectory's docstring: the token ids end at the policy's last token; the messages hold the last observation."""
    player = ModelPolicy(model, tokenizer, SamplingSettings(temperature=1.0, max_new_tokens=6))
    for trajectory in play(toy(2, turns=2), player, [{"task_id": TASKS[0].id}] * 2, seed=0):
        assert trajectory.truncated and trajectory.loss_mask[-1] == 1
        assert trajectory.messages[-1]["role"] != "assistant" and len(trajectory.messages) == 2 + 2 * 2


def test_pool_draws_follow_the_seed_of_each_sub_env_and_wave():
    """play's docstring: sub-env i of a wave starting at job j resets with seed + j + i."""
    finish = TextPolicy(scripted(['{"name": "finish", "arguments": {"answer": "x"}}']))
    played = play(toy(3), finish, 6, seed=3)
    expected = [ToyEnv(tasks=TASKS).reset(seed=3 + k)[1]["task_id"] for k in range(6)]
    assert [t.task_id for t in played] == expected and len(set(expected)) > 1


def test_the_end_reason_says_whether_the_env_terminated_or_truncated_the_episode():
    finish, call = '{"name": "finish", "arguments": {"answer": "x"}}', '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    (done,) = play(toy(1, turns=3), TextPolicy(scripted([finish])), [{"task_id": TASKS[0].id}])
    (cut,) = play(toy(1, turns=2), TextPolicy(scripted([call])), [{"task_id": TASKS[0].id}])
    assert (done.terminated, done.truncated, done.end_reason) == (True, False, "terminated")
    assert (cut.terminated, cut.truncated, cut.end_reason) == (False, True, "truncated")


def test_a_vector_env_that_resets_in_the_same_step_gives_the_last_steps_observation_and_info():
    replies = ['{"name": "get_note", "arguments": {"key": "k1"}}',
               '{"name": "set_note", "arguments": {"key": "dst", "text": "note 1"}}',
               '{"name": "finish", "arguments": {"answer": "note 1"}}']
    envs = SyncVectorEnv([lambda: ToyEnv(tasks=TASKS, max_turns=5)] * 2, autoreset_mode=AutoresetMode.SAME_STEP)
    for t in play(envs, TextPolicy(scripted(replies)), [{"task_id": t.id} for t in TASKS[:3]]):
        assert t.reward == 1.0 and t.terminated and t.num_turns == 3
        assert t.final_info["task_id"] == t.task_id and "instruction" not in t.messages[-1]["content"].lower()
        assert t.messages[-1]["role"] == "tool" and "Copy note" not in t.messages[-1]["content"]


def test_a_first_prompt_must_leave_room_for_a_whole_turn_and_exactly_that_is_enough(model, tokenizer):
    env = ToyEnv(tasks=TASKS)
    chat = ChatFormat.of(tokenizer)
    prompt = len(chat.prompt_ids(chat.first_messages(ToyEnv.policy, env.tool_schemas, TASKS[0].instruction),
                                 env.tool_schemas))
    job = [{"task_id": TASKS[0].id}]

    def settings(context: int) -> SamplingSettings:
        return SamplingSettings(max_new_tokens=6, max_context_tokens=context)

    with pytest.raises(ValueError, match="context limit"):
        play(toy(1), ModelPolicy(model, tokenizer, settings(prompt + 5)), job)
    (t,) = play(toy(1), ModelPolicy(model, tokenizer, settings(prompt + 6)), job, seed=0)
    assert t.num_turns == 1 and len(t.token_ids) <= prompt + 6
