"""The attention our models run (agents.attention): transformers' sdpa, without repeated keys and values on the CPU or a
prefix shared by every row copied into each."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations import sdpa_attention

from agents import attention
from agents.kvcache import KVBatch
from agents.models import add_lora, load_model, load_tokenizer
from test_train_support import save_model, tiny_llama


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture
def repeats(monkeypatch) -> list[int]:
    """How many keys or values transformers' sdpa repeats per query head (its ``repeat_kv`` calls)."""
    calls: list[int] = []
    real = sdpa_attention.repeat_kv

    def counted(hidden: torch.Tensor, n_rep: int) -> torch.Tensor:
        calls.append(n_rep)
        return real(hidden, n_rep)

    monkeypatch.setattr(sdpa_attention, "repeat_kv", counted)
    return calls


def padded_batch(tokenizer) -> dict[str, torch.Tensor]:
    return tokenizer(["Look up order #W2378156 and its items.", "Hello.", "Return the second item, please."],
                     return_tensors="pt", padding=True, padding_side="left")


def forward_and_grads(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    logits = model(**batch).logits
    (logits.log_softmax(-1)[..., :50].sum()).backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_load_model_gives_sdpa_models_the_grouped_attention(tokenizer, tmp_path):
    model, _ = load_model(str(save_model(tiny_llama(tokenizer), tokenizer, tmp_path)), device="cpu")
    assert model.config._attn_implementation == attention.NAME


def test_grouped_attention_equals_sdpa_in_outputs_and_lora_gradients_without_repeating_keys(tokenizer, repeats):
    model = add_lora(tiny_llama(tokenizer))
    batch = padded_batch(tokenizer)
    assert batch["attention_mask"].min() == 0  # padded: a mask reaches the attention
    model.set_attn_implementation("sdpa")
    logits, grads = forward_and_grads(model, batch)
    assert repeats  # the copy this module exists to skip
    repeats.clear()
    model.set_attn_implementation(attention.NAME)
    grouped_logits, grouped_grads = forward_and_grads(model, batch)
    assert repeats == []
    torch.testing.assert_close(grouped_logits, logits, rtol=0, atol=1e-6)
    for grouped, plain in zip(grouped_grads, grads, strict=True):
        torch.testing.assert_close(grouped, plain, rtol=0, atol=1e-6)


def test_a_turn_of_the_kv_batch_decodes_the_same_tokens_with_either_attention(tokenizer):
    model = tiny_llama(tokenizer)
    texts = ("Find the cheapest flight.", "Hi.", "Cancel my order, thanks.")
    prompts = [tokenizer(text)["input_ids"] for text in texts]

    def greedy(name: str) -> list[list[int]]:
        model.set_attn_implementation(name)
        batch = KVBatch(model, tokenizer.pad_token_id)
        logits, rows = batch.prefill(prompts), [[] for _ in prompts]
        with torch.no_grad(), batch.fixed_width(8) as step:
            for _ in range(8):
                tokens = logits.argmax(-1).tolist()
                for row, token in zip(rows, tokens):
                    row.append(token)
                logits = step([[token] for token in tokens])
        logits = batch.extend([[5, 6, 7], [8], []])  # a padded chunk after the turn, through the grouped path
        return rows + [logits.argmax(-1).tolist()]

    assert greedy(attention.NAME) == greedy("sdpa")


@pytest.mark.parametrize("where, queries, masked", [("meta", 4, True), ("cpu", 1, True), ("cpu", 4, False)])
def test_gpus_unmasked_attention_and_decode_steps_stay_with_transformers_sdpa(monkeypatch, where, queries, masked):
    deferred = []
    monkeypatch.setattr(attention, "sdpa_attention_forward", lambda *args, **kwargs: deferred.append(args))
    module = torch.nn.Module()
    module.num_key_value_groups = 2
    query = torch.zeros(1, 4, queries, 8, device=where)
    key = value = torch.zeros(1, 2, 6, 8, device=where)
    mask = torch.ones(1, 1, queries, 6, dtype=torch.bool, device=where) if masked else None
    attention.grouped_sdpa(module, query, key, value, mask)
    assert len(deferred) == 1


@pytest.mark.parametrize("queries, masked, groups, dtype", [(1, True, 3, torch.float32), (1, False, 1, torch.float32),
                                                            (4, True, 3, torch.float32), (4, False, 1, torch.float32),
                                                            (1, True, 3, torch.bfloat16)])
def test_attention_after_a_shared_prefix_equals_attention_over_the_prefix_copied_into_each_row(queries, masked, groups,
                                                                                                 dtype):
    torch.manual_seed(0)
    rows, kv_heads, dim, prefix, own = 3, 2, 8, 5, 6
    module = torch.nn.Module()
    module.layer_idx, module.num_key_value_groups, module.is_causal = 1, groups, True
    query = torch.randn(rows, kv_heads * groups, queries, dim, dtype=dtype)
    key, value = torch.randn(2, rows, kv_heads, own, dim, dtype=dtype)
    layers = [(torch.zeros(1, kv_heads, prefix, dim, dtype=dtype),) * 2,  # another layer's: never read
              tuple(torch.randn(2, 1, kv_heads, prefix, dim, dtype=dtype))]
    causal = torch.ones(queries, own, dtype=torch.bool).tril(own - queries).expand(rows, 1, queries, own)
    mask = causal & (torch.rand(rows, 1, 1, own) > 0.4) if masked else None  # a row may see none of its own keys
    got, _ = attention.grouped_sdpa(module, query, key, value, mask, scaling=0.3, shared_prefix=layers)
    copied = [torch.cat([shared.expand(rows, -1, -1, -1), mine], dim=2)
              for shared, mine in zip(layers[1], (key, value))]
    seen = torch.cat([torch.ones(rows, 1, queries, prefix, dtype=torch.bool), causal if mask is None else mask], -1)
    expected, _ = sdpa_attention.sdpa_attention_forward(module, query, *copied, seen, scaling=0.3)
    assert got.shape == expected.shape == (rows, queries, kv_heads * groups, dim)
    tolerance = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, expected, rtol=0, atol=tolerance)


def test_a_decode_step_after_a_shared_prefix_reads_it_once_and_scales_as_sdpa_without_a_scaling(monkeypatch):
    """A decode step's single query a row takes the one-read path: neither transformers' sdpa nor torch's kernel, which
    both need the prefix copied into every row (what share_prefix exists to save); and with no ``scaling`` it scales
    by 1/sqrt(head_dim), as sdpa does."""
    torch.manual_seed(0)
    rows, kv_heads, groups, dim, prefix, own = 3, 2, 3, 8, 5, 4
    module = torch.nn.Module()
    module.layer_idx, module.num_key_value_groups, module.is_causal = 0, groups, True
    query = torch.randn(rows, kv_heads * groups, 1, dim)
    key, value = torch.randn(2, rows, kv_heads, own, dim)
    shared = tuple(torch.randn(2, 1, kv_heads, prefix, dim))
    copied = [torch.cat([part.expand(rows, -1, -1, -1), mine], dim=2) for part, mine in zip(shared, (key, value))]
    seen = torch.ones(rows, 1, 1, prefix + own, dtype=torch.bool)
    expected, _ = sdpa_attention.sdpa_attention_forward(module, query, *copied, seen)

    def copies(*args, **kwargs):
        raise AssertionError("the prefix went to a kernel that needs it copied into every row")

    monkeypatch.setattr(attention, "sdpa_attention_forward", copies)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", copies)
    got, _ = attention.grouped_sdpa(module, query, key, value, seen[..., prefix:], shared_prefix=[shared])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
