"""One way a model plays: training, held-out evaluation, tau-bench and the challenger all play through
:func:`agents.rollout.play` in Gymnasium vector envs, render the same prompt token for token, and give
the same episodes whether the vector env is sync or async (fp32, fixed seeds)."""

from __future__ import annotations

import json

import pytest
from accelerate import Accelerator
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents.decoding import SamplingSettings
from agents.policy import ModelPolicy, TextPolicy, Trajectory, scripted
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
