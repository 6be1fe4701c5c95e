"""Challenger RL learns on a toy challenger task: a one-word challenger whose words stand for whole
proposals (one new task, one copy of a demonstration, the rest unparseable) goes from about one new
task in eight to most of its proposals, with the trainer's own challenger stages."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from accelerate import Accelerator
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents.models import load_tokenizer
from agents.prompting import ChatFormat
from envs.challenger import ChallengerEnv
from test_agents_challenge import WORLD, proposal
from test_train_learning import bandit, config  # noqa: F401 (bandit is a fixture)
from toy_domain import copy_task
from train import challenger, run as runner, trainer
from train.config import load_config
from train.rundir import RunDir, RunState

pytestmark = pytest.mark.slow

COPIED = copy_task(id="toy-demo", instruction="Copy note k1 to 'dst' and tell me its text.")
WORDS = {"yes": proposal(instruction="Copy note k1 to 'dst', then tell me what it says (world 3)."),
         "no": proposal()}  # "no" writes the demonstration's task again: kept, but a copy


class WordChallenger(ChallengerEnv):
    """The toy domain's challenger, whose first word picks a whole proposal (anything else is taken as written)."""

    def __init__(self) -> None:
        super().__init__("toy", explore_turns=0, challenger="llm:bandit", known=[COPIED])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        return super().reset(seed=seed, options={"world": WORLD})

    def step(self, action: str | None) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if action is not None:
            words = action.strip().lower().split()
            action = WORDS.get(words[0] if words else "", action)
        return super().step(action)


def new_rate(ctx: trainer.Context, label: str, step: int) -> float:
    challenger.evaluate(ctx, label, step)
    record = [m for m in ctx.run.read_metrics() if m.get("phase") == "challenger" and m["stage"] == label][-1]
    return record["funnel"]["new"] / record["funnel"]["proposals"]


@pytest.mark.parametrize("algorithm", ["grpo", "rft"])
def test_challenger_rl_raises_the_rate_of_kept_new_tasks(tmp_path: Path, bandit, monkeypatch, algorithm):  # noqa: F811
    settings = config(tmp_path, model=str(bandit["model"]), domains=["toy"], challenger_domains=["toy"],
                      tasks_per_domain={"toy": 8}, challenger_algorithm=algorithm,
                      challenger_proposals=16, challenger_rl_steps=12, challenger_worlds_per_step=2,
                      challenger_group_size=8, challenger_max_new_tokens=1, challenger_temperature=1.0,
                      challenger_rl_lr=0.02, challenger_warm_start_epochs=0, rollout_batch=16)
    def word_challengers(ctx: trainer.Context, domain: str) -> SyncVectorEnv:
        if domain not in ctx.envs:
            ctx.envs[domain] = SyncVectorEnv([WordChallenger] * 16, autoreset_mode=AutoresetMode.DISABLED)
        return ctx.envs[domain]

    monkeypatch.setattr(challenger, "vector_env", word_challengers)
    accelerator = Accelerator(cpu=True)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    player = runner.load(settings, accelerator)
    ctx = trainer.Context(settings, accelerator, run, player.model, player, {}, {})
    state = RunState(stage="challenger_rl")
    before = new_rate(ctx, "before", state.step)
    challenger.reinforce(ctx, state, None)
    after = new_rate(ctx, "after", state.step)
    ctx.close()
    assert before < 0.3, "a random one-word challenger writes the new task about one time in eight"
    assert after > 2 * before and after > 0.6, (before, after)
    steps = [m for m in run.read_metrics() if m.get("phase") == "challenger_rl"]
    assert len(steps) == 12 and all(m["algorithm"] == algorithm for m in steps)
    assert [m["step"] for m in run.read_metrics()] == [0, *range(1, 13), 12], "the funnels at the run's step"
    assert player.model.active_adapter == "default", "the executor's adapter is active again"


@pytest.mark.parametrize("domain", ["calculation", "web", "retail", "airline"])
def test_demonstrations_give_failures_as_wrong_answers_and_the_filter_keeps_every_one(domain: str) -> None:
    # every tool listed, as a challenger domain's prompt needs its lookups (make train's retail lists three)
    settings = {"challenger_demos": 3, "challenger_explore_turns": 2, "prompt_tools": {}, "task_families": {}}
    ctx = SimpleNamespace(config=load_config(None, settings),
                          chat=ChatFormat.of(load_tokenizer()))
    tasks, demos = challenger.demonstrations(ctx, domain)
    assert len(tasks) == 3 and len(demos) == 3
    assert all(len(t.solution.actions) <= 2 for t in tasks)
    assert all(f.answer and not f.actions for t in tasks for f in t.failures)
    assert [d.reward for d in demos] == [1.0] * 3


def test_each_process_plays_its_own_share_of_a_challenger_step_and_says_which(monkeypatch):
    """Advantages are taken over the whole step's episodes, gathered from every process in rank order,
    and each process applies them to its own episodes through ``mine``: so the processes split the
    step, each playing the worlds of its share, as one process plays them all."""
    asked: list[list[Any]] = []

    def play(env, policy, options, seed):
        asked.append([o["world"] for o in options])
        return [SimpleNamespace() for _ in options]

    monkeypatch.setattr(challenger, "play", play)
    monkeypatch.setattr(challenger, "vector_env", lambda ctx, domain: None)
    monkeypatch.setattr(challenger, "player", lambda ctx: None)
    settings = load_config(overrides={"challenger_worlds_per_step": 3, "challenger_group_size": 4})
    alone = challenger.collect(SimpleNamespace(config=settings, rank=0, num_processes=1), "calculation", 2)
    batches = [challenger.collect(SimpleNamespace(config=settings, rank=rank, num_processes=3), "calculation", 2)
               for rank in range(3)]
    assert [i for batch in batches for i in batch.mine] == list(alone.mine) == list(range(12))
    for rank, batch in enumerate(batches, start=1):
        assert batch.groups == alone.groups and len(batch.trajectories) == len(batch.mine) == 4
        assert asked[rank] == [asked[0][i] for i in batch.mine]


def test_each_rl_step_plays_fresh_distinct_worlds_with_a_seed_per_process(monkeypatch):
    asked = []
    monkeypatch.setattr(challenger, "play", lambda env, policy, options, seed: asked.append(
        ([json.dumps(o["world"], sort_keys=True) for o in options], seed)) or [SimpleNamespace() for _ in options])
    monkeypatch.setattr(challenger, "vector_env", lambda ctx, domain: None)
    monkeypatch.setattr(challenger, "player", lambda ctx: None)
    settings = load_config(overrides={"challenger_worlds_per_step": 3, "challenger_group_size": 2})
    for step, rank in [(1, 0), (2, 0), (2, 1)]:
        challenger.collect(SimpleNamespace(config=settings, rank=rank, num_processes=2), "calculation", step)
    worlds = [set(w) for w, _ in asked[:2]] + [set(asked[2][0])]
    assert len(worlds[0]) == len(worlds[1]) == 2 and not worlds[0] & (worlds[1] | worlds[2])
    assert asked[1][1] != asked[2][1]


def test_the_runs_tasks_are_the_challengers_that_fit_up_to_the_training_share_then_scripted_ones(monkeypatch):
    """A challenger domain trains on its kept tasks that fit the config, no more than its tasks less its
    held-out ones (held-out tasks are scripted), topped up with scripted tasks; other domains are all scripted."""
    from dataclasses import replace

    from agents.challenge import Funnel
    from train.tasks import Selection, is_llm, scripted_tasks

    config = load_config(overrides={"domains": ["calculation", "web"], "challenger_domains": ["calculation"],
                                    "challenger_proposals": 10, "pool": "", "tasks_per_domain": {"calculation": 6,
                                    "web": 4}, "heldout_per_domain": {"calculation": 2, "web": 1},
                                    "max_solution_actions": {"calculation": 2}})
    written = [replace(t, id=f"llm-{i}", provenance={"challenger": "llm:tiny", "novelty": "new" if i % 2 else "copy"})
               for i, t in enumerate(scripted_tasks("calculation", 99, 6, Selection.of(config)))]
    too_long = replace(written[0], id="llm-long", solution=replace(written[0].solution,
                                                                    actions=written[0].solution.actions * 3))
    funnel = Funnel()
    for _ in range(10):
        funnel.add({"stage": "proposals", "reason": "unparsed"}, "")
    asked = []
    monkeypatch.setattr(challenger, "propose", lambda ctx, domain, label, step: asked.append((domain, step)) or (
        funnel, [too_long, *written], "<instruction>"))
    tasks, mix = challenger.write_tasks(SimpleNamespace(config=config), 5)
    assert asked == [("calculation", 5)]
    calculation = [t for t in tasks if t.domain == "calculation"]
    assert [t.id for t in calculation if is_llm(t)] == ["llm-0", "llm-1", "llm-2", "llm-3"]
    assert len(calculation) == 6 and len([t for t in tasks if t.domain == "web"]) == 4
    assert not any(is_llm(t) for t in tasks if t.domain == "web")
    assert {k: mix["calculation"][k] for k in ("llm", "scripted", "proposals", "new", "example")} == {
        "llm": 4, "scripted": 2, "proposals": 10, "new": 2, "example": "<instruction>"}
    assert (mix["web"]["llm"], mix["web"]["scripted"], mix["web"]["proposals"], mix["web"]["funnel"]) == (0, 4, 0, {})


def test_propose_keeps_only_the_kept_tasks_and_records_every_parsed_one_with_its_stage(tmp_path, monkeypatch):
    from test_agents_challenge import kept_info

    kept = kept_info()
    rejected = {k: v for k, v in kept.items() if k != "task"} | {"stage": "solution_passed", "reason": "failure_passed"}
    infos = [kept, rejected, {"stage": "proposals", "reason": "unparsed"}]
    episodes = [SimpleNamespace(final_info=info, end_reason="terminated", reward=0.0,
                                messages=[{"role": "assistant", "content": f"proposal {i}"}])
                for i, info in enumerate(infos)]
    monkeypatch.setattr(challenger, "play", lambda envs, player, n, seed: episodes[:n])
    monkeypatch.setattr(challenger, "vector_env", lambda ctx, domain: None)
    monkeypatch.setattr(challenger, "player", lambda ctx: None)
    ctx = SimpleNamespace(config=load_config(overrides={"challenger_proposals": 3}), run=RunDir(tmp_path))
    funnel, tasks, example = challenger.propose(ctx, "toy", "pool", 7)
    assert [t.id for t in tasks] == [kept["task"]["id"]] and example == "proposal 0"
    [logged] = ctx.run.read_metrics()
    assert (logged["step"], logged["stage"], logged["funnel"]["kept"]) == (7, "pool", 1)
    assert (funnel.reached["proposals"], funnel.reached["kept"]) == (3, 1)
    parsed = [json.loads(line)["provenance"] for line in ctx.run.parsed.read_text().splitlines()]
    assert [(p["stage"], p["label"]) for p in parsed] == [(kept["stage"], "pool"), ("solution_passed", "pool")]


@pytest.mark.parametrize("explore_turns, budget", [(1, 0), (3, 2), (3, 1)])
def test_demonstrations_fit_the_challengers_exploration_and_the_run_on_worlds_the_pool_does_not_use(
        explore_turns, budget):
    """Worlds from seed + 1 (the scripted tasks and the held-out ones are drawn at the seed), a solution
    no longer than the exploration or the run's budget, and at most MIN_FAILURES failures, each its
    wrong answer alone."""
    config = load_config(overrides={"challenger_demos": 6, "challenger_explore_turns": explore_turns, "seed": 4,
                                    "max_solution_actions": {"calculation": budget}})
    demos = challenger.demo_tasks(SimpleNamespace(config=config), "calculation")
    assert len(demos) == 6 and all(t.world["seed"] > 4 for t in demos)
    assert all(len(t.solution.actions) <= min(explore_turns, budget or explore_turns) for t in demos)
    assert max(len(t.solution.actions) for t in demos) > 1 or min(explore_turns, budget or explore_turns) == 1
    assert all(0 < len(t.failures) <= challenger.MIN_FAILURES and all(f.actions == () for f in t.failures)
               for t in demos)


def test_only_the_demonstrations_the_filter_keeps_are_learned_from(monkeypatch):
    config = load_config(overrides={"challenger_demos": 4})
    rewards = iter([1.0, 0.0, 1.0, 0.0])
    monkeypatch.setattr(challenger, "demonstration", lambda env, chat, actions, options: SimpleNamespace(
        reward=next(rewards), world=options["world"]))
    tasks, demos = challenger.demonstrations(SimpleNamespace(config=config, chat=None), "calculation")
    assert len(tasks) == 4 and [d.world for d in demos] == [tasks[0].world, tasks[2].world]
