import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from agents.packed_linear import PackedLinear, available, pack_linears

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN to pack weights for")


def layer() -> tuple[torch.nn.Linear, PackedLinear]:
    torch.manual_seed(0)
    plain = torch.nn.Linear(48, 80)
    return plain, PackedLinear.of(plain)


@pytest.mark.parametrize("rows", [1, 4, 8, 32, 33])
def test_a_packed_layer_gives_what_its_linear_gives_for_any_number_of_rows(rows):
    plain, packed = layer()
    x = torch.randn(rows, 1, 48)
    with torch.inference_mode():
        assert torch.allclose(packed(x), plain(x), atol=1e-5)
    assert packed.weight is plain.weight and packed.bias is plain.bias
    assert packed.state_dict().keys() == plain.state_dict().keys()


def test_an_input_of_the_wrong_width_is_refused_as_by_the_plain_layer():
    _, packed = layer()
    with torch.no_grad(), pytest.raises(RuntimeError, match="cannot be multiplied"):
        packed(torch.randn(8, 96))  # as many numbers as 16 rows of 48


def test_only_a_few_rows_without_autograd_take_the_packed_path():
    _, packed = layer()
    with torch.no_grad():
        packed(torch.randn(3, 48))
        assert packed._packed is None  # as fast unpacked
        packed(torch.randn(33, 48))
        assert packed._packed is None  # bound by arithmetic
    packed(torch.randn(8, 48))
    assert packed._packed is None  # autograd on: the packed op has no backward
    with torch.no_grad():
        packed(torch.randn(8, 48))
    assert packed._packed is not None


def test_the_packed_copy_follows_the_weight_when_it_is_replaced_or_changes_in_place():
    _, packed = layer()
    x = torch.randn(8, 48)
    with torch.no_grad():
        packed.weight = torch.nn.Parameter(torch.full_like(packed.weight, 3))  # another tensor
        assert torch.allclose(packed(x), 3 * x.sum(-1, keepdim=True) + packed.bias, atol=1e-5)
        packed.weight.data = torch.ones_like(packed.weight)  # the same tensor, at the same version, other data
        assert torch.allclose(packed(x), x.sum(-1, keepdim=True) + packed.bias, atol=1e-5)
        packed.weight.mul_(2)  # an optimizer's in-place update
        assert torch.allclose(packed(x), 2 * x.sum(-1, keepdim=True) + packed.bias, atol=1e-5)


def test_with_autograd_on_gradients_flow_as_through_the_plain_layer():
    plain, packed = layer()
    x = torch.randn(8, 48, requires_grad=True)
    packed(x).square().sum().backward()
    ours = x.grad.clone()
    x.grad = None
    plain(x).square().sum().backward()
    assert torch.equal(ours, x.grad)


def test_a_packed_model_keeps_its_tied_weights_and_logits_and_takes_a_lora_adapter():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 128, (8, 1))
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
    keys = model.state_dict().keys()
    pack_linears(model)
    assert all(type(m) is not torch.nn.Linear for m in model.modules())
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.state_dict().keys() == keys
    with torch.inference_mode():
        assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-5)
    assert model.lm_head._packed is not None

    policy = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    policy(input_ids=torch.randint(0, 128, (2, 6))).logits.sum().backward()
    assert all(p.grad is not None for name, p in policy.named_parameters() if "lora_" in name)


def test_a_layer_that_has_packed_its_weight_can_still_be_copied_and_saved(tmp_path):
    plain, packed = layer()
    x = torch.randn(8, 48)
    with torch.no_grad():
        packed(x)
        copied = copy.deepcopy(packed)
        torch.save(packed, tmp_path / "layer.pt")
        loaded = torch.load(tmp_path / "layer.pt", weights_only=False)
        assert torch.allclose(copied(x), plain(x), atol=1e-5) and torch.allclose(loaded(x), plain(x), atol=1e-5)
