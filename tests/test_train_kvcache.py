"""Rollouts through the in-place KV cache play exactly the episodes the plain cache plays."""

from __future__ import annotations

import torch

from agents.models import load_tokenizer
from agents.rollout import SamplingSettings, rollout
from test_train_support import tiny_llama
from toy_domain import ToyEnv
from train.kvcache import InPlaceCacheModel


def test_in_place_cache_rollouts_match_the_plain_ones_token_for_token():
    tokenizer = load_tokenizer()
    model = tiny_llama(tokenizer)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= 4  # some turns stop early, others run to the cap
    settings = SamplingSettings(temperature=1.0, max_new_tokens=12)
    plain = rollout(model, tokenizer, [ToyEnv(max_turns=3) for _ in range(4)], settings, seed=3)
    in_place = rollout(InPlaceCacheModel(model), tokenizer, [ToyEnv(max_turns=3) for _ in range(4)], settings, seed=3)
    assert [t.token_ids for t in in_place] == [t.token_ids for t in plain]
    assert [t.loss_mask for t in in_place] == [t.loss_mask for t in plain]
    for a, b in zip(in_place, plain):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
