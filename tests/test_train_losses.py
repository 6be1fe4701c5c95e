"""Advantages and per-token losses of each algorithm, on hand-made numbers."""

from __future__ import annotations

import math

import pytest
import torch

from train import losses


def test_grpo_normalises_within_groups_and_drops_groups_whose_rewards_are_all_equal():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    groups = [0, 0, 0, 0, 1, 1, 2, 2]
    advantages, keep = losses.group_advantages(rewards, groups)
    assert keep.tolist() == [True] * 4 + [False, False] + [True, True]
    assert advantages[4:6].tolist() == [0.0, 0.0]
    assert advantages[0] > 0 > advantages[1] and advantages[1] == advantages[2] == advantages[3]
    first = rewards[:4]
    assert torch.allclose(advantages[:4], (first - first.mean()) / (first.std() + losses.EPS))
    assert losses.dropped_group_fraction(keep, groups) == pytest.approx(1 / 3)


@pytest.mark.parametrize("name, regularized, dropped", [
    ("grpo", False, 1.0), ("rloo", False, 1.0), ("ppo", False, 1.0),  # each task's episodes alike: no signal
    ("grpo", True, 0.0),  # every episode feels the KL or entropy term
    ("reinforce", False, 0.0),  # the batch's baseline tells the tasks apart
    ("rft", False, 0.5), ("rft", True, 0.5),  # the failed task's episodes teach nothing
])
def test_dropped_groups_counts_the_tasks_no_episode_of_which_enters_the_update(name, regularized, dropped):
    rewards, groups = torch.tensor([1.0, 1.0, 0.0, 0.0]), [0, 0, 1, 1]
    _, keep = losses.ALGORITHMS[name].weigh(rewards, groups, regularized)
    assert losses.dropped_group_fraction(keep, groups) == dropped


def test_rloo_baseline_is_the_mean_of_the_other_episodes_of_the_task():
    advantages = losses.rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0]), [0, 0, 0, 1, 1])
    assert advantages.tolist() == pytest.approx([1.0, -0.5, -0.5, 0.0, 0.0])


def test_reinforce_baseline_normalises_returns_over_the_whole_batch():
    advantages = losses.batch_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert advantages.sum().item() == pytest.approx(0.0, abs=1e-6)
    assert advantages.std().item() == pytest.approx(1.0, abs=1e-4)
    assert losses.batch_advantages(torch.tensor([1.0])).tolist() == [0.0]


def test_ppo_clips_the_ratio_only_where_it_would_gain_from_moving_further():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss = losses.ppo_loss(new, old, advantages, clip_eps=0.2)
    # gains are capped at the clip (1.2, 0.8); losses are not (ratio 1.5 with A<0, 0.5 with A>0)
    assert loss.tolist() == pytest.approx([-1.2, 1.5, -0.5, 0.8])


def test_ppo_weighs_the_ratio_by_the_advantage_not_by_its_sign():
    """Advantages of magnitude 1 hide a surrogate that divides by them; real ones never have it."""
    new = torch.log(torch.tensor([1.5, 0.5, 1.1]))
    loss = losses.ppo_loss(new, torch.zeros(3), torch.tensor([2.0, -0.5, 3.0]), clip_eps=0.2)
    assert loss.tolist() == pytest.approx([-2.4, 0.4, -3.3])  # 1.2 x 2 (clipped), 0.8 x -0.5 (unclipped), 1.1 x 3


def test_policy_gradient_and_fine_tuning_losses_weigh_log_probabilities():
    logprobs = torch.tensor([-1.0, -2.0], requires_grad=True)
    losses.policy_gradient_loss(logprobs, torch.tensor([2.0, -1.0])).sum().backward()
    assert logprobs.grad.tolist() == [-2.0, 1.0]
    assert losses.sft_loss(torch.tensor([-1.0, -2.0])).tolist() == [1.0, 2.0]


def test_kl_to_base_is_zero_at_the_base_and_positive_away_from_it():
    logprobs = torch.tensor([-1.0, -2.0, -0.5])
    assert losses.kl_to_base(logprobs, logprobs).abs().max().item() == 0.0
    assert (losses.kl_to_base(logprobs, logprobs + torch.tensor([0.3, -0.3, 1.0])) > 0).all()


def test_kl_to_base_estimates_kl_of_the_policy_from_the_base_not_the_reverse():
    """k3 with r = base / policy: r - 1 - log r, whose gradient pulls the policy towards the base. Both
    directions are zero at the base and positive elsewhere; only the values tell them apart."""
    logprobs = torch.tensor([-0.1, -2.0], requires_grad=True)
    kl = losses.kl_to_base(logprobs, torch.tensor([-1.0, -1.0]))
    kl.sum().backward()
    assert kl.tolist() == pytest.approx([math.exp(-0.9) + 0.9 - 1, math.exp(1.0) - 1.0 - 1])
    assert logprobs.grad.tolist() == pytest.approx([1 - math.exp(-0.9), 1 - math.exp(1.0)])


@pytest.mark.parametrize("name", losses.ALGORITHMS)
def test_every_algorithm_learns_from_the_smallest_step_its_config_accepts(name: str):
    """The smallest group size, then the fewest tasks a step, that the config accepts for it; one
    success among the step's episodes (in every group) must reach the update."""
    algorithm = losses.ALGORITHMS[name]
    size = next(g for g in range(1, 9) if not any(key == "group_size" for key, _ in algorithm.problems(g, 8, 1.0, "x")))
    tasks = next(t for t in range(1, 9) if not algorithm.problems(size, size * t, 1.0, "x"))
    rewards = torch.tensor([1.0 - index % 2 for index in range(size * tasks)])
    advantages, keep = algorithm.advantages(rewards, [index // size for index in range(size * tasks)])
    assert keep.any()
    if algorithm.scores_sampled_distribution:
        assert advantages[keep].abs().min() > 0


def test_greedy_rollouts_are_refused_where_an_algorithm_compares_a_tasks_episodes():
    assert [name for name, algorithm in losses.ALGORITHMS.items()
            if any(key == "temperature" for key, _ in algorithm.problems(4, 16, 0.0, "x"))] == ["grpo", "rloo", "ppo"]


def test_fine_tuning_learns_from_successes_not_from_partial_credit():
    _, keep = losses.ALGORITHMS["rft"].advantages(torch.tensor([1.0, 0.125, 0.0, 1.0]), [0, 0, 1, 1])
    assert keep.tolist() == [True, False, False, True]


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce", "ppo"])
def test_a_graded_reward_equal_to_its_baseline_still_counts_in_the_token_mean(name: str):
    """Every baseline algorithm keeps each episode of a group whose rewards differ, whatever its own
    advantage: leaving out the one at 0 would weigh its group's tokens up, by algorithm."""
    rewards = torch.tensor([1.0, 0.5, 0.0, 0.5, 0.5, 0.5])
    advantages, keep = losses.ALGORITHMS[name].advantages(rewards, [0, 0, 0, 1, 1, 1])
    assert advantages[1].item() == pytest.approx(0.0, abs=1e-6)
    assert keep.tolist() == ([True] * 6 if name == "reinforce" else [True] * 3 + [False] * 3)


@pytest.mark.parametrize("name", losses.ALGORITHMS)
def test_a_kl_or_entropy_term_reaches_every_episode_of_a_policy_gradient_step(name: str):
    """Groups whose rewards are all equal give no advantage, but the regularisers still pull on their
    tokens (as GRPO's paper's KL does); fine-tuning learns from successes whatever the terms."""
    algorithm = losses.ALGORITHMS[name]
    rewards, groups = torch.tensor([1.0, 1.0, 1.0, 1.0]), [0, 0, 1, 1]  # every task solved every time
    _, plain = algorithm.weigh(rewards, groups)
    _, regularized = algorithm.weigh(rewards, groups, regularized=True)
    if algorithm.scores_sampled_distribution:
        assert regularized.all() and not plain.any()
    else:
        assert plain.all() and regularized.all()
    failed = torch.zeros(4)
    assert algorithm.weigh(failed, groups, regularized=True)[1].all() == algorithm.scores_sampled_distribution


def test_a_ppo_steps_metrics_cover_every_minibatch_of_every_epoch():
    """Not the last minibatch's: per-token means weighed by tokens, the mean gradient norm, and the
    step's own tokens (each of the 2 epochs sees them all)."""
    from train.trainer import over_passes

    parts = [{"loss": 1.0, "entropy": 2.0, "grad_norm": 1.0, "loss_tokens": 30},
             {"loss": 3.0, "entropy": 4.0, "grad_norm": 3.0, "loss_tokens": 10}] * 2
    assert over_passes(parts, epochs=2) == {"loss": 1.5, "entropy": 2.5, "grad_norm": 2.0, "loss_tokens": 40}
    assert over_passes([], epochs=2) == {}


@pytest.mark.parametrize("name, updates, per_pass", [("ppo", 6, 3), ("grpo", 1, 1)])
def test_ppo_makes_ppo_epochs_times_ppo_minibatches_updates_each_pass_over_every_kept_episode(
        monkeypatch, name: str, updates: int, per_pass: int):
    """Made as one plain update, PPO's ratio would stay 1 and its clip never act: GRPO by another name."""
    from types import SimpleNamespace

    from agents.policy import Trajectory
    from train import trainer
    from train.config import TrainConfig

    seen: list[list[str]] = []
    monkeypatch.setattr(trainer, "update", lambda ctx, optimizer, trajectories, *rest: seen.append(
        [t.task_id for t in trajectories]) or {})
    policy = torch.nn.Linear(2, 2)
    policy.get_output_embeddings = lambda: policy  # fp32: no rescoring before the passes
    ctx = SimpleNamespace(config=TrainConfig(algorithm=name, ppo_epochs=2, ppo_minibatches=3), policy=policy,
                          rank=0, num_processes=1, accelerator=SimpleNamespace(device=torch.device("cpu")))
    episodes = [Trajectory([1, 2], [0, 1], [0.0, -1.0], [1], [], f"t{i // 3}-{i}", "d", reward=float(i % 3 == 0))
                for i in range(6)]
    trainer.rl_step(ctx, None, trainer.StepBatch(episodes, [i // 3 for i in range(6)], range(6), 0.0), step=1)
    assert len(seen) == updates
    for first in range(0, updates, per_pass):
        assert sorted(sum(seen[first:first + per_pass], [])) == sorted(t.task_id for t in episodes)


def test_each_algorithms_name_runs_its_own_advantages_and_objective():
    rewards, groups = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0]), [0, 0, 0, 1, 1, 1]
    assert torch.allclose(losses.ALGORITHMS["rloo"].advantages(rewards, groups)[0],
                          losses.rloo_advantages(rewards, groups))
    for name in ("grpo", "ppo"):
        assert torch.allclose(losses.ALGORITHMS[name].advantages(rewards, groups)[0],
                              losses.group_advantages(rewards, groups)[0]), name
    new, old, adv = torch.log(torch.tensor([1.5, 0.5])), torch.zeros(2), torch.tensor([1.0, -1.0])
    assert torch.allclose(losses.ALGORITHMS["ppo"].objective(new, old, adv, 0.2), losses.ppo_loss(new, old, adv, 0.2))


def test_a_regularised_reinforce_step_whose_rewards_are_all_equal_has_zero_advantages_not_nan():
    advantages, keep = losses.ALGORITHMS["reinforce"].weigh(torch.zeros(4), [0, 1, 2, 3], regularized=True)
    assert keep.all() and advantages.tolist() == [0.0] * 4


def test_distillation_needs_its_file_of_trajectories():
    assert [key for key, _ in losses.ALGORITHMS["distill"].problems(2, 8, 1.0, "")] == ["distill_path"]
    assert losses.ALGORITHMS["distill"].problems(2, 8, 1.0, "runs/teacher/trajectories.jsonl") == []


@pytest.mark.parametrize("coefs, entered", [({}, ["t0-0", "t0-1"]), ({"entropy_coef": 0.01}, None),
                                            ({"kl_coef": 0.05}, None)])
def test_an_rl_step_updates_on_the_episodes_its_algorithm_keeps_and_all_of_them_under_a_regulariser(
        monkeypatch, coefs, entered):
    """Task t1's episodes both failed: no GRPO signal, left out, unless a KL or entropy term pulls on them too."""
    from types import SimpleNamespace

    from agents.policy import Trajectory
    from train import trainer
    from train.config import TrainConfig

    seen: list[str] = []
    monkeypatch.setattr(trainer, "update", lambda ctx, optimizer, trajectories, *rest: seen.extend(
        t.task_id for t in trajectories) or {})
    policy = torch.nn.Linear(2, 2)
    policy.get_output_embeddings = lambda: policy
    ctx = SimpleNamespace(config=TrainConfig(algorithm="grpo", **coefs), policy=policy, rank=0, num_processes=1,
                          accelerator=SimpleNamespace(device=torch.device("cpu")))
    episodes = [Trajectory([1, 2], [0, 1], [0.0, -1.0], [1], [], f"t{i // 2}-{i % 2}", "d", reward=float(i == 0))
                for i in range(4)]
    metrics = trainer.rl_step(ctx, None, trainer.StepBatch(episodes, [0, 0, 1, 1], range(4), 0.0), step=1)["metrics"]
    assert seen == (entered or [t.task_id for t in episodes])
    assert (metrics["kept_episodes"], metrics["dropped_groups"]) == (len(seen), 0.5 if entered else 0.0)
