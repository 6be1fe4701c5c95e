"""The algorithms as short functions: how each turns rewards into advantages, and each per-token loss.

Every loss here returns per-token values over the policy's own tokens (a trajectory's loss mask);
the trainer sums them and divides by the number of such tokens in the whole batch (across all
processes), so long and short episodes weigh per token, and one process or N give the same
gradient.

Advantages (one per episode, spread over its tokens):

- REINFORCE with a baseline: the return minus the batch mean, over the batch's standard deviation.
- RLOO: the return minus the mean of the *other* episodes of the same task (leave-one-out).
- GRPO: the return normalised within its group (the G episodes of one task). A group whose rewards
  are all equal carries no signal and is dropped, and counted.
- RLOO and REINFORCE likewise leave out the episodes of a group (REINFORCE: of a batch) whose rewards
  are all equal, and keep every other, even one whose advantage is 0.
- PPO uses GRPO's group-relative advantages (no value network: a 135M model has no spare capacity
  for a critic, and GRPO showed the group baseline suffices) with the clipped surrogate below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

EPS = 1e-6
SUCCESS = 1.0
"""The reward of a success (a verifier's pass, a new task kept), which fine-tuning algorithms learn
from; partial credit (the challenger's shaping of a proposal that failed) is not one."""


def batch_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE's baseline: returns normalised over the whole batch."""
    if rewards.numel() < 2:
        return torch.zeros_like(rewards)
    return (rewards - rewards.mean()) / (rewards.std() + EPS)


def _groups(group_ids: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for index, group in enumerate(group_ids):
        groups.setdefault(group, []).append(index)
    return groups


def varied(rewards: torch.Tensor, group_ids: Sequence[int]) -> torch.Tensor:
    """Which episodes belong to a group whose rewards differ: a baseline within the group gives the
    others a signal, and an episode of such a group whose advantage happens to be 0 (a graded reward
    equal to the baseline) still counts in the per-token mean, as it does with every algorithm."""
    keep = torch.zeros_like(rewards, dtype=torch.bool)
    for members in _groups(group_ids).values():
        r = rewards[members]
        keep[members] = not bool((r == r[0]).all())
    return keep


def group_advantages(rewards: torch.Tensor, group_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO: each return normalised within its group; and which episodes are kept.

    Groups with all rewards equal (all solved, or none) are dropped: their advantages are 0 and
    ``keep`` is False for their episodes.
    """
    advantages = torch.zeros_like(rewards)
    keep = varied(rewards, group_ids)
    for members in _groups(group_ids).values():
        if keep[members[0]]:
            r = rewards[members]
            advantages[members] = (r - r.mean()) / (r.std() + EPS)
    return advantages, keep


def rloo_advantages(rewards: torch.Tensor, group_ids: Sequence[int]) -> torch.Tensor:
    """RLOO: each return minus the mean return of the other episodes of its group."""
    advantages = torch.zeros_like(rewards)
    for members in _groups(group_ids).values():
        r = rewards[members]
        if len(members) > 1:
            advantages[members] = r - (r.sum() - r) / (len(members) - 1)
    return advantages


def dropped_group_fraction(keep: torch.Tensor, group_ids: Sequence[int]) -> float:
    """The fraction of groups (a task's episodes) of which no episode enters the update (``keep``, from
    :meth:`Algorithm.weigh`): what the step learned nothing from, whichever algorithm decided it."""
    groups = list(_groups(group_ids).values())
    return sum(not bool(keep[members].any()) for members in groups) / len(groups) if groups else 0.0


def policy_gradient_loss(logprobs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE / RLOO / GRPO: minus advantage times log-probability, per token."""
    return -advantages * logprobs


def ppo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
             clip_eps: float) -> torch.Tensor:
    """PPO's clipped surrogate, per token; ``old_logprobs`` are the rollout's sampling log-probabilities."""
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def sft_loss(logprobs: torch.Tensor) -> torch.Tensor:
    """Fine-tuning (warm start, rejection fine-tuning, distillation): negative log-likelihood, per token."""
    return -logprobs


def kl_to_base(logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(policy || base) per token, the unbiased non-negative estimator (Schulman's k3, as GRPO uses)."""
    delta = base_logprobs - logprobs
    return torch.exp(delta) - delta - 1


# ---------------------------------------------------------------------------- the algorithms by name


Advantages = Callable[[torch.Tensor, Sequence[int]], tuple[torch.Tensor, torch.Tensor]]
"""(rewards, each episode's group) -> (each episode's advantage, whether it enters the update)."""
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
"""(log-probabilities, sampling log-probabilities, advantages, clip_eps) -> per-token loss."""


def _grpo(rewards: torch.Tensor, groups: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return group_advantages(rewards, groups)


def _rloo(rewards: torch.Tensor, groups: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return rloo_advantages(rewards, groups), varied(rewards, groups)


def _reinforce(rewards: torch.Tensor, groups: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch_advantages(rewards), varied(rewards, [0] * len(rewards))


def _successes(rewards: torch.Tensor, groups: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros_like(rewards), rewards >= SUCCESS


def _policy_gradient(logprobs: torch.Tensor, old: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    return policy_gradient_loss(logprobs, advantages)


def _ppo(logprobs: torch.Tensor, old: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    return ppo_loss(logprobs, old, advantages, clip)


def _fine_tuning(logprobs: torch.Tensor, old: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    return sft_loss(logprobs)


@dataclass(frozen=True)
class Algorithm:
    """One algorithm: how it weighs episodes, its per-token loss, and what it asks of the config."""

    name: str
    advantages: Advantages
    objective: Objective
    min_group_size: int = 1
    """Episodes per task it needs (baselines within a task's group need 2)."""
    min_step_episodes: int = 1
    """Episodes per step it needs (a baseline over the step's episodes needs 2)."""
    scores_sampled_distribution: bool = True
    """Whether the loss scores the distribution the tokens were drawn from (logits / temperature),
    as policy gradients must; fine-tuning scores the model itself."""
    offline: bool = False
    """Learns from another model's trajectories (``distill_path``) instead of its own episodes."""
    passes: bool = False
    """Several optimizer passes over each step's episodes (``ppo_epochs`` x ``ppo_minibatches``)."""
    regularizers_keep_all: bool = True
    """With a KL or entropy term, every episode enters the update (they give a gradient even where
    the advantage is 0, as in GRPO's paper); fine-tuning learns from successes alone."""

    def weigh(self, rewards: torch.Tensor, group_ids: Sequence[int],
              regularized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Each episode's advantage and whether it enters the update; ``regularized``: the update has a KL
        or entropy term, which every episode of a policy gradient's step feels."""
        advantages, keep = self.advantages(rewards, group_ids)
        if regularized and self.regularizers_keep_all:
            keep = torch.ones_like(keep)
        return advantages, keep

    def problems(self, group_size: int, step_episodes: int, temperature: float,
                 distill_path: str) -> list[tuple[str, str]]:
        """What the config must change for this algorithm: (key, problem) pairs. ``step_episodes`` is
        the number of episodes a step plays, ``temperature`` the one it samples them at."""
        found = []
        if group_size < self.min_group_size:
            found.append(("group_size", f"compares episodes of one task: needs at least {self.min_group_size}"))
        elif self.min_group_size > 1 and temperature == 0:
            found.append(("temperature", "compares episodes of one task, which greedy rollouts (0) play alike: "
                                         "sample them (e.g. 1.0)"))
        if step_episodes < self.min_step_episodes:
            found.append(("tasks_per_step", f"compares the episodes of a step: needs at least {self.min_step_episodes}"
                                            " (tasks_per_step x group_size)"))
        if self.offline and not distill_path:
            found.append(("distill_path", "needs the file of trajectories to learn from"))
        return found


ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm("grpo", _grpo, _policy_gradient, min_group_size=2),
    "rloo": Algorithm("rloo", _rloo, _policy_gradient, min_group_size=2),
    "reinforce": Algorithm("reinforce", _reinforce, _policy_gradient, min_step_episodes=2),
    "ppo": Algorithm("ppo", _grpo, _ppo, min_group_size=2, passes=True),
    "rft": Algorithm("rft", _successes, _fine_tuning, scores_sampled_distribution=False, regularizers_keep_all=False),
    "distill": Algorithm("distill", _successes, _fine_tuning, scores_sampled_distribution=False, offline=True,
                         regularizers_keep_all=False),
}
"""The config's ``algorithm`` names: REINFORCE with a batch baseline, RLOO, GRPO, PPO (GRPO's
advantages, clipped surrogate), rejection fine-tuning on the policy's own successes, and
distillation from another model's successful trajectories."""
FINE_TUNING = ALGORITHMS["rft"]
"""The warm start's update: fine-tuning on demonstrations."""
