"""The attention our models run: transformers' ``sdpa``, without copies of keys and values it does not need.

In a grouped-query model (SmolLM2-135M: 9 query heads over 3 key/value heads) transformers' ``sdpa``
repeats every key and value head once per query head it serves whenever a mask is given and more than
one query is fed: the padded chunks of a rollout's turns, and every training forward pass. It must on
a GPU, whose fast kernels take grouped heads only without a mask. torch's CPU kernel takes them with
one (``enable_gqa``), so there the copy is waste, and in training autograd keeps it for the backward
pass. :data:`NAME` skips it on the CPU, with the same results; everywhere else (a GPU, no mask, a
decode step's single query, which transformers already packs by group) it is transformers' ``sdpa``.

Measured on one thread, SmolLM2-135M with its LoRA adapter, ``train.scoring.score`` and its backward
pass over 8 sequences of 869 tokens (586 of them a shared prompt), the same log-probabilities either way:
75.4 s and a peak of 21.6 GB with ``sdpa``, 71.1 s and 19.6 GB with :data:`NAME`; with the prompt's
keys and values computed once (``share_prefix``), 17.9 s and 17.1 s.

It also reads a **shared prefix**: when a rollout's chats start with the same prompt (the system
prompt and tool list, 586 of a web-browsing chat's first 614 tokens), :class:`agents.kvcache.KVBatch`
keeps that prompt's keys and values once instead of once per row and passes them as
``shared_prefix``. A decode step then reads them once for the whole batch, with every row's queries
in one matmul, and its own tokens per row; the two parts share one softmax. Reading the keys and
values is most of a decode step's attention, and at batch 8 over that prompt, 30 layers of it took
42 ms a step with a copy per row and 22 ms shared (one thread); on a GPU at batch 32 the copies
would be most of a step's memory traffic. A chunk of several tokens a row (prefill, an observation)
attends over the prefix and its own tokens put side by side for that call, with transformers' kernels.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "sdpa_grouped"
"""The name models load with (``attn_implementation``); it takes the masks ``sdpa`` takes."""

SDPA_MASKED = ("sdpa", NAME)
"""Attention implementations that take a prepared boolean mask as ``sdpa`` does."""

SharedPrefix = list[tuple[torch.Tensor, torch.Tensor]]
"""Keys and values that every row attends to before its own, per layer: ``(1, kv_heads, tokens, head_dim)`` each."""


def grouped_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 shared_prefix: SharedPrefix | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa_attention_forward``, except for masked grouped-query attention of several
    queries on the CPU, which attends to the key/value heads as they are, and for attention after a
    ``shared_prefix`` (``key``, ``value`` and the boolean mask then cover each row's own tokens only)."""
    if shared_prefix is not None:
        prefix_keys, prefix_values = shared_prefix[module.layer_idx]
        if query.shape[2] == 1:
            return _step_after_prefix(query, key, value, attention_mask, prefix_keys, prefix_values, scaling), None
        rows, queries, own = query.shape[0], query.shape[2], key.shape[2]
        if attention_mask is None:  # a plain causal mask is left to sdpa's is_causal, which the prefix would break
            attention_mask = torch.ones(queries, own, dtype=torch.bool, device=query.device).tril(own - queries)
        seen = torch.ones(rows, 1, queries, prefix_keys.shape[2], dtype=torch.bool, device=query.device)
        attention_mask = torch.cat([seen, attention_mask.expand(rows, 1, queries, own)], dim=-1)
        key = torch.cat([prefix_keys.expand(rows, -1, -1, -1), key], dim=2)
        value = torch.cat([prefix_values.expand(rows, -1, -1, -1), value], dim=2)
    if (query.device.type != "cpu" or getattr(module, "num_key_value_groups", 1) == 1 or attention_mask is None
            or query.shape[2] == 1 or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                              dropout_p=dropout, scale=scaling, enable_gqa=True)
    return output.transpose(1, 2).contiguous(), None


def _step_after_prefix(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                       prefix_keys: torch.Tensor, prefix_values: torch.Tensor, scaling: float | None) -> torch.Tensor:
    """One query a row over the shared prefix (read once for all rows) and the row's own keys, as
    ``(rows, 1, heads, head_dim)``. The softmax runs in fp32, as in transformers' eager attention."""
    rows, heads, _, dim = query.shape
    kv_heads, prefix = key.shape[1], prefix_keys.shape[2]
    groups = heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    grouped = (query * scale).reshape(rows, kv_heads, groups, dim)  # query head h reads key/value head h // groups
    stacked = grouped.transpose(0, 1).reshape(kv_heads, rows * groups, dim)  # every row's queries, per key/value head
    shared = torch.matmul(stacked, prefix_keys[0].transpose(1, 2)).view(kv_heads, rows, groups, prefix)
    own = torch.matmul(grouped, key.transpose(2, 3))
    if mask is not None:
        own = own.masked_fill_(mask.logical_not(), float("-inf"))
    probs = torch.cat([shared.transpose(0, 1), own], dim=-1).float().softmax(-1).to(value.dtype)
    out = torch.matmul(probs[..., :prefix].transpose(0, 1).reshape(kv_heads, rows * groups, prefix), prefix_values[0])
    out = out.view(kv_heads, rows, groups, dim).transpose(0, 1) + torch.matmul(probs[..., prefix:], value)
    return out.reshape(rows, 1, heads, dim)


AttentionInterface.register(NAME, grouped_sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)
