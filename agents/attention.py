"""The attention our models run: transformers' ``sdpa``, minus one copy on the CPU.

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


def grouped_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa_attention_forward``, except for masked grouped-query attention of several
    queries on the CPU, which attends to the key/value heads as they are."""
    if (query.device.type != "cpu" or getattr(module, "num_key_value_groups", 1) == 1 or attention_mask is None
            or query.shape[2] == 1 or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                              dropout_p=dropout, scale=scaling, enable_gqa=True)
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, grouped_sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)
