"""Scoring with the shared prompt encoded once gives the same log-probabilities and gradients as
running each trajectory on its own."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from agents.policy import Trajectory
from train.scoring import score, shared_prefix_length
from train.losses import ALGORITHMS
from train.trainer import lower_precision, microbatches, rescored, update


def tiny_policy():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules="all-linear",
                                                               init_lora_weights=False)).train()


def trajectories() -> list[Trajectory]:
    generator = torch.Generator().manual_seed(1)
    prompt = list(range(10, 40))
    out = []
    for length in (6, 11, 3):
        own = torch.randint(0, 300, (length,), generator=generator).tolist()
        mask = [0] * len(prompt) + [i % 3 != 1 for i in range(length)]
        logprobs = [-0.5 * m for m in mask]
        out.append(Trajectory(prompt + own, [int(m) for m in mask], logprobs, [len(prompt)], [], "t", "d"))
    return out


def reference(policy, batch: list[Trajectory]) -> torch.Tensor:
    """Each trajectory alone through the full model, its loss-masked tokens' log-probabilities."""
    values = []
    for t in batch:
        logp = policy(input_ids=torch.tensor([t.token_ids])).logits[0].float().log_softmax(-1)
        values += [logp[i - 1, t.token_ids[i]] for i in range(1, len(t.token_ids)) if t.loss_mask[i]]
    return torch.stack(values)


def gradients(policy) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
    policy.zero_grad()
    return grads


def test_shared_prefix_stops_before_the_first_scored_token():
    batch = trajectories()
    assert shared_prefix_length(batch) == 29  # the 30-token prompt, less its last token (it predicts a scored one)


def test_shared_prefix_scores_and_gradients_equal_those_of_each_trajectory_alone():
    policy, batch = tiny_policy(), trajectories()
    shared = score(policy, batch, share_prefix=True)
    shared.logprobs.sum().backward()
    shared_grads = gradients(policy)
    expected = reference(policy, batch)
    expected.sum().backward()
    expected_grads = gradients(policy)
    assert torch.allclose(shared.logprobs, expected, atol=1e-5)
    for name, grad in expected_grads.items():
        assert torch.allclose(shared_grads[name], grad, atol=1e-5), name
    assert shared.owner.tolist() == [0] * 4 + [1] * 7 + [2] * 2
    assert torch.allclose(shared.old_logprobs, torch.full_like(shared.old_logprobs, -0.5))
    assert (shared.entropy > 0).all()


@pytest.mark.parametrize("odd, at", [(1, 20), (2, 20), (2, 1)])
def test_the_shared_prefix_ends_where_any_trajectory_leaves_it(odd, at):
    """Episodes of different tasks share the system prompt, not the instruction: the prefix stops at the first
    token any trajectory differs on (one of one token included), or that one is scored on another's tokens."""
    policy, batch = tiny_policy(), trajectories()
    ids = list(batch[odd].token_ids)
    ids[at] = 299
    batch[odd] = replace(batch[odd], token_ids=ids)
    assert shared_prefix_length(batch) == at
    assert torch.allclose(score(policy, batch).logprobs, reference(policy, batch), atol=1e-5)


def test_tokens_are_scored_under_the_temperature_they_were_sampled_at_and_greedy_ones_unscaled():
    """Sampled at 0.5, a token's log-probability is log-softmax(logits / 0.5); greedy (0) stores the model's own."""
    policy, batch = tiny_policy(), trajectories()
    expected = []
    for t in batch:
        logp = (policy(input_ids=torch.tensor([t.token_ids])).logits[0].float() / 0.5).log_softmax(-1)
        expected += [logp[i - 1, t.token_ids[i]] for i in range(1, len(t.token_ids)) if t.loss_mask[i]]
    assert torch.allclose(score(policy, batch, 0.5).logprobs, torch.stack(expected), atol=1e-5)
    assert torch.allclose(score(policy, batch, 0.0).logprobs, reference(policy, batch), atol=1e-5)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_micro_batches_hold_the_tokens_a_forward_pass_processes_within_the_budget(share_prefix):
    from train.trainer import microbatches

    prompt = list(range(100, 140))  # 40 tokens every trajectory shares
    group = [Trajectory(prompt + [7] * n, [0] * 40 + [1] * n, [0.0] * (40 + n), [40], [], f"t{n}", "d")
             for n in (10, 20, 30, 10, 20)]
    budget = 100
    shared = shared_prefix_length(group) if share_prefix else 0  # 39: it stops before the first scored token
    batches = microbatches(group, budget, share_prefix)
    assert sorted(i for batch in batches for i in batch) == list(range(len(group)))
    for batch in batches:
        processed = shared + sum(len(group[i].token_ids) - shared for i in batch)
        assert processed <= budget or len(batch) == 1, (batch, processed)
    # shared: 39 + 11 + 21 | 39 + 31 + 11 | 39 + 21; without it every trajectory (50 to 70 tokens) alone
    assert len(batches) == (3 if share_prefix else 5)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_micro_batches_count_every_row_padded_to_the_longest(share_prefix):
    """score() pads each row to the batch's longest and runs the padding through every layer: one long episode
    among short ones costs its length in every row, so it is that rectangle the memory cap must hold."""
    prompt = list(range(100, 140))
    group = [Trajectory(prompt + [7] * n, [0] * 40 + [1] * n, [0.0] * (40 + n), [40], [], f"t{i}", "d")
             for i, n in enumerate((5, 5, 5, 5, 60))]
    shared = shared_prefix_length(group) if share_prefix else 0
    for batch in microbatches(group, 150, share_prefix):
        width = max(len(group[i].token_ids) - 1 - shared for i in batch)  # score()'s row width
        assert shared + len(batch) * width <= 150 or len(batch) == 1, batch


@pytest.mark.parametrize("share_prefix", [True, False])
def test_a_trajectory_over_the_budget_gets_a_micro_batch_of_its_own_and_none_is_empty(share_prefix):
    """The budget cannot split a trajectory: one longer than it is still scored, alone (an empty batch crashes)."""
    batch = trajectories()  # 36, 41 and 33 tokens
    assert microbatches(batch, 20, share_prefix) == [[0], [1], [2]]


def test_micro_batches_hold_one_domains_episodes_whatever_the_budget():
    """A domain's episodes share its system prompt, encoded once; mixed with another's they would share next to none."""
    batch = trajectories()
    mixed = [batch[0], replace(batch[1], domain="e"), batch[2], replace(batch[0], domain="e")]
    assert microbatches(mixed, 10**6, True) == [[0, 2], [1, 3]]


@pytest.mark.parametrize("share_prefix", [True, False])
def test_episodes_cut_off_before_the_policy_wrote_a_token_are_left_out_and_the_rest_scores_as_alone(share_prefix):
    """A group of one task whose prompt filled the context: identical trajectories, nothing to score."""
    from train.trainer import microbatches

    policy, batch = tiny_policy(), trajectories()
    cut = Trajectory(list(range(10, 40)), [0] * 30, [0.0] * 30, [30], [], "t", "d")
    mixed = [cut, batch[0], cut, batch[1], batch[2]]
    chosen = microbatches(mixed, 10**6, share_prefix)
    assert sorted(i for part in chosen for i in part) == [1, 3, 4]
    for part in chosen:
        scores = score(policy, [mixed[i] for i in part], share_prefix=share_prefix)
        assert torch.allclose(scores.logprobs, reference(policy, [mixed[i] for i in part]), atol=1e-5)
    assert microbatches([cut, cut], 10**6, share_prefix) == [], "a domain of them alone makes no batch"


def test_a_head_in_chunks_gives_the_same_scores_and_gradients():
    policy, batch = tiny_policy(), trajectories()
    whole = score(policy, batch)
    (whole.logprobs.sum() + whole.entropy.sum()).backward()
    whole_grads = gradients(policy)
    chunked = score(policy, batch, max_logits=3 * 300)  # 13 scored tokens in chunks of 3
    (chunked.logprobs.sum() + chunked.entropy.sum()).backward()
    assert torch.allclose(chunked.logprobs, whole.logprobs, atol=1e-6)
    assert torch.allclose(chunked.entropy, whole.entropy, atol=1e-6)
    for name, grad in gradients(policy).items():
        assert torch.allclose(grad, whole_grads[name], atol=1e-6), name


@pytest.mark.parametrize("max_logits, kept", [(3 * 300, 0), (10**9, 13)])
def test_the_backward_pass_keeps_no_more_logits_than_the_bound(max_logits, kept):
    """Rows of vocabulary-wide tensors autograd keeps for the backward pass: the 13 scored tokens' logits
    when the head runs whole; none in chunks, whose logits the backward pass recomputes."""
    policy, batch = tiny_policy(), trajectories()
    rows: list[int] = [0]
    weights = {p.untyped_storage().data_ptr() for p in policy.parameters()}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() == 2 and tensor.shape[-1] == 300 and tensor.untyped_storage().data_ptr() not in weights:
            rows.append(tensor.shape[0])
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        scores = score(policy, batch, max_logits=max_logits)
    scores.logprobs.sum().backward()
    assert max(rows) == kept


def test_rescored_trajectories_carry_the_training_pass_log_probabilities_so_ppos_first_ratio_is_one():
    """In bf16 the sampler's stored values differ from a training pass's; PPO rescored them first."""
    policy, batch = tiny_policy().to(torch.bfloat16), trajectories()
    assert lower_precision(policy) and not lower_precision(tiny_policy())
    config = SimpleNamespace(micro_batch_tokens=40, share_prefix=True)
    ctx = SimpleNamespace(config=config, policy=policy, chat=SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=0)))
    fresh = rescored(ctx, batch, 1.0)
    assert [(t.token_ids, t.loss_mask) for t in fresh] == [(t.token_ids, t.loss_mask) for t in batch]
    assert all(new == old for t, u in zip(fresh, batch) for new, old, m in zip(t.logprobs, u.logprobs, t.loss_mask)
               if not m), "only the scored tokens' values change"
    groups = microbatches(fresh, config.micro_batch_tokens, config.share_prefix)
    assert len(groups) > 1
    for group in groups:
        scores = score(policy, [fresh[i] for i in group], 1.0, True)
        assert torch.equal(scores.logprobs, scores.old_logprobs)


# ---------------------------------------------------------------------------- the update


ADVANTAGES = [1.5, -0.5, 0.75]


def update_context(policy, micro_batch_tokens: int = 10**6, max_grad_norm: float = 0.0) -> SimpleNamespace:
    config = SimpleNamespace(micro_batch_tokens=micro_batch_tokens, share_prefix=True, clip_eps=0.2,
                             max_grad_norm=max_grad_norm)
    accelerator = SimpleNamespace(device=torch.device("cpu"), reduce=lambda tensor, op: tensor,
                                  backward=lambda loss: loss.backward())
    return SimpleNamespace(config=config, accelerator=accelerator, policy=policy, num_processes=1,
                           chat=SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=0)))


def standing_still(policy) -> torch.optim.Optimizer:
    """An optimizer whose steps leave the weights where they are, so gradients can be compared."""
    return torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.0)


def test_a_policy_gradient_update_scores_the_distribution_the_episodes_were_sampled_from():
    """Episodes sampled at temperature 0.5 are scored as log-softmax(logits / 0.5), not as the model itself."""
    policy, batch = tiny_policy(), trajectories()
    update(update_context(policy), standing_still(policy), batch, ADVANTAGES, ALGORITHMS["grpo"], 0.5)
    got = gradients(policy)
    scores = score(policy, batch, 0.5, True)
    (-(torch.tensor(ADVANTAGES)[scores.owner] * scores.logprobs)).sum().div(scores.logprobs.numel()).backward()
    for name, grad in gradients(policy).items():
        assert torch.allclose(got[name], grad, atol=1e-6), name


def test_microbatches_give_the_gradient_of_one_batch_and_one_update_does_not_add_to_the_last():
    """Each microbatch's loss is divided by the batch's tokens, not its own, and each update starts from zero."""
    policy, batch = tiny_policy(), trajectories()
    optimizer = standing_still(policy)
    update(update_context(policy), optimizer, batch, ADVANTAGES, ALGORITHMS["grpo"])
    whole = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
    assert len(microbatches(batch, 40, True)) > 1
    update(update_context(policy, micro_batch_tokens=40), optimizer, batch, ADVANTAGES, ALGORITHMS["grpo"])
    for name, grad in gradients(policy).items():
        assert torch.allclose(whole[name], grad, atol=1e-6), name


def test_the_entropy_bonus_lowers_the_loss_and_the_kl_term_weighs_by_its_coefficient():
    policy, batch = tiny_policy(), trajectories()
    zero = [0.0] * len(batch)
    stats = update(update_context(policy), standing_still(policy), batch, zero, ALGORITHMS["grpo"], entropy_coef=0.1)
    assert stats["loss"] == pytest.approx(-0.1 * stats["entropy"], rel=1e-5)
    stats = update(update_context(policy), standing_still(policy), batch, zero, ALGORITHMS["grpo"], kl_coef=0.25)
    assert stats["kl_base"] > 0 and stats["loss"] == pytest.approx(0.25 * stats["kl_base"], rel=1e-5)


def test_max_grad_norm_zero_means_no_clipping_not_no_step():
    policy, batch = tiny_policy(), trajectories()
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.1)
    update(update_context(policy, max_grad_norm=0.0), optimizer, batch, ADVANTAGES, ALGORITHMS["grpo"])
    assert all(not torch.equal(p, before[n]) for n, p in policy.named_parameters() if p.requires_grad)


def test_ppo_on_a_bf16_model_starts_its_first_pass_from_the_training_pass_values_not_the_samplers():
    """rl_step rescores before PPO's passes on a model below fp32: with the sampler's values kept, the first
    pass reads its rounding differences (here made large) as the policy having moved, and clips on them."""
    from dataclasses import replace

    from train.config import TrainConfig
    from train.trainer import StepBatch, rl_step

    policy = tiny_policy().to(torch.bfloat16)
    batch = [replace(t, reward=float(i == 0)) for i, t in enumerate(trajectories())]
    ctx = update_context(policy)
    ctx.config, ctx.rank = TrainConfig(algorithm="ppo", ppo_epochs=1, ppo_minibatches=1, kl_coef=0.0), 0
    metrics = rl_step(ctx, standing_still(policy), StepBatch(batch, [0, 0, 0], range(3)), step=1)["metrics"]
    assert metrics["kept_episodes"] == 3 and metrics["loss_tokens"] > 0
    assert abs(metrics["kl_rollout"]) < 1e-2, "the sampler's stored values (-0.5 a token) reached the first pass"
