"""Log-probabilities and entropies of the policy's own tokens, with the shared prompt encoded once.

On CPU the system prompt dominates: the calculation domain's lists 22 tools in about 2,400
tokens, while an episode's own tokens (instruction, actions, observations) are a few hundred. All
episodes of a domain share that prefix, so a microbatch encodes it once, as a batch of one, and
its keys and values are repeated for every row; the rows then run only their own tokens on top.
Autograd carries the gradient from every row back through the repeat into the one prefix pass, so
the gradient is exactly that of running each trajectory on its own, at a fraction of the cost.

Only positions whose next token carries loss go through the output head, so the logits tensor
holds those positions alone rather than the whole batch times the vocabulary. Even so it is (scored
tokens) x (vocabulary): 16,384 tokens of a 128,256-token vocabulary (Llama 3) are 8.4 GB in fp32,
and the log-softmax, its exponential and their gradients hold several such tensors at once. Past
:data:`HEAD_LOGITS` logits the head runs in chunks of positions, each recomputed in the backward
pass instead of kept (activation checkpointing), so its memory stays under that bound whatever the
microbatch; below it (every CPU configuration) it runs in one piece, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from agents.policy import Trajectory


HEAD_LOGITS = 1 << 27
"""Logits the output head computes at once (512 MB in fp32): a chunk of positions is this over the vocabulary."""


@dataclass
class TokenScores:
    """Per-token values over the loss-masked tokens of a microbatch, flattened in trajectory order.

    ``owner[i]`` is the index (in the microbatch) of the trajectory token ``i`` belongs to;
    ``old_logprobs`` are the log-probabilities stored when the tokens were sampled.
    """

    logprobs: torch.Tensor
    entropy: torch.Tensor
    old_logprobs: torch.Tensor
    owner: torch.Tensor


def shared_prefix_length(trajectories: Sequence[Trajectory]) -> int:
    """Tokens all trajectories share at the start, stopping before any position whose next token
    carries loss (the prefix pass computes no logits)."""
    first = trajectories[0].token_ids
    limit = min(min(len(t.token_ids) for t in trajectories) - 1,
                min(t.loss_mask.index(1) if 1 in t.loss_mask else len(t.loss_mask) for t in trajectories) - 1)
    length = 0
    while length < limit and all(t.token_ids[length] == first[length] for t in trajectories[1:]):
        length += 1
    return max(length, 0)


def _parts(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack and output head (a peft model's adapters live inside both's modules)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def _head_scores(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                 temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each position's log-probability of its target, and the entropy of its distribution."""
    logp = torch.log_softmax(head(hidden).float() / temperature, dim=-1)
    return logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def head_scores(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, temperature: float,
                max_logits: int = HEAD_LOGITS) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_head_scores` with at most ``max_logits`` logits alive at once: in one piece when they
    fit, else in chunks of positions whose logits the backward pass recomputes rather than keeps."""
    chunk = max(1, max_logits // head.weight.shape[0])
    if len(hidden) <= chunk:
        return _head_scores(head, hidden, targets, temperature)
    parts = [checkpoint(_head_scores, head, h, t, temperature, use_reentrant=False)
             for h, t in zip(hidden.split(chunk), targets.split(chunk))]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def score(model: PreTrainedModel, trajectories: Sequence[Trajectory], temperature: float = 1.0,
          share_prefix: bool = True, pad_id: int = 0, max_logits: int = HEAD_LOGITS) -> TokenScores:
    """Scores of every loss-masked token of ``trajectories`` under ``model`` (with grad when enabled).

    Logits are divided by ``temperature`` before the softmax (the distribution the tokens were
    sampled from; greedy rollouts store the unscaled one, so pass 1 for them). The output head
    holds at most ``max_logits`` logits at once (:func:`head_scores`).
    """
    decoder, head = _parts(model)
    device = head.weight.device
    prefix = shared_prefix_length(trajectories) if share_prefix and len(trajectories) > 1 else 0
    cache = None
    if prefix > 0:
        ids = torch.tensor([trajectories[0].token_ids[:prefix]], device=device)
        cache = decoder(input_ids=ids, use_cache=True).cache
        cache.batch_repeat_interleave(len(trajectories))
    # row r, column j holds token prefix + j; its hidden state predicts token prefix + j + 1
    width = max(len(t.token_ids) - 1 - prefix for t in trajectories)
    ids = torch.full((len(trajectories), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(trajectories), prefix + width, dtype=torch.long)
    mask[:, :prefix] = 1
    rows, cols, targets, old = [], [], [], []
    for r, t in enumerate(trajectories):
        own = torch.tensor(t.token_ids[prefix:])
        ids[r, :len(own) - 1] = own[:-1]
        mask[r, prefix:prefix + len(own) - 1] = 1
        scored = torch.tensor(t.loss_mask[prefix + 1:], dtype=torch.bool).nonzero().squeeze(-1)
        rows.append(torch.full_like(scored, r))
        cols.append(scored)
        targets.append(own[1:][scored])
        old.append(torch.tensor(t.logprobs[prefix + 1:])[scored])
    owner = torch.cat(rows).to(device)
    positions = (prefix + torch.arange(width, device=device)).unsqueeze(0).expand(len(trajectories), -1)
    hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions,
                     cache=cache, use_cache=cache is not None).last_hidden_state
    selected = hidden[owner, torch.cat(cols).to(device)]
    logprobs, entropy = head_scores(head, selected, torch.cat(targets).to(device), temperature or 1.0, max_logits)
    return TokenScores(logprobs, entropy, torch.cat(old).to(device, torch.float32), owner)
