import copy
import logging

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from agents import packed_linear
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


@pytest.mark.parametrize("shape", [(4, 48), (32, 48), (2, 4, 48)], ids=["4-rows", "32-rows", "2-chats-of-4-tokens"])
def test_from_four_to_thirty_two_rows_counted_over_every_leading_dimension_take_the_packed_path(shape):
    """The ends of ROWS are packed too, and a row is a token: a batch of chats of a few tokens each is
    as many rows as it has tokens, not as many as it has chats."""
    plain, packed = layer()
    x = torch.randn(*shape)
    with torch.no_grad():
        out = packed(x)
    assert packed._packed is not None
    assert out.shape == plain(x).shape and torch.allclose(out, plain(x), atol=1e-5)


def test_a_layer_off_the_cpu_multiplies_unpacked():
    """oneDNN's packed weight is a CPU one: a layer on another device (here ``meta``, where a model is
    built before its weights load) takes the plain path."""
    packed = PackedLinear.of(torch.nn.Linear(48, 80, device="meta"))
    with torch.no_grad():
        out = packed(torch.randn(8, 48, device="meta"))
    assert out.shape == (8, 80) and out.device.type == "meta" and packed._packed is None


@pytest.mark.parametrize("weight, data", [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)])
def test_an_input_of_another_dtype_than_the_weight_is_refused_as_by_the_plain_layer(weight, data):
    """Only fp32 takes the packed path; a mixed product fails with torch's own message, not oneDNN's."""
    packed = PackedLinear.of(torch.nn.Linear(48, 80).to(weight))
    with torch.no_grad(), pytest.raises(RuntimeError, match="must have the same dtype"):
        packed(torch.randn(8, 48, dtype=data))


def test_a_weight_replaced_by_another_tensor_at_the_same_address_is_packed_anew():
    """Address and version alone do not name a weight: its transpose starts at the same address with the
    same version counter, and multiplying by it must not reuse the old packed copy."""
    torch.manual_seed(0)
    packed = PackedLinear.of(torch.nn.Linear(48, 48))
    x = torch.randn(8, 48)
    with torch.no_grad():
        packed(x)
        old = packed.weight
        packed.weight = torch.nn.Parameter(old.detach().t())
        assert packed.weight.data_ptr() == old.data_ptr() and packed.weight._version == old._version
        assert torch.allclose(packed(x), x @ old + packed.bias, atol=1e-5)


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


def test_a_packed_model_stays_in_the_mode_it_was_in_and_keeps_its_linear_subclasses():
    """Packing an eval model leaves every layer in eval; a subclass of ``nn.Linear`` (which may compute
    something else in its forward) is left as it is."""

    class Doubled(torch.nn.Linear):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(input)

    model = torch.nn.Sequential(torch.nn.Linear(48, 48), Doubled(48, 48)).eval()
    pack_linears(model)
    assert [type(m) for m in model] == [PackedLinear, Doubled]
    assert not any(m.training for m in model.modules())
    assert PackedLinear.of(torch.nn.Linear(4, 4).train()).training


def test_without_onednn_a_model_keeps_its_plain_layers(monkeypatch):
    monkeypatch.setattr(packed_linear, "available", lambda: False)
    model = torch.nn.Sequential(torch.nn.Linear(48, 48))
    assert pack_linears(model) is model and type(model[0]) is torch.nn.Linear


@pytest.fixture
def asked_afresh(caplog):
    """available as if not yet called in this process (it answers once), logging at INFO."""
    caplog.set_level(logging.INFO, logger="agents.packed_linear")
    available.cache_clear()
    yield available
    available.cache_clear()


def test_a_torch_without_mkldnn_or_whose_packing_fails_packs_nothing(monkeypatch, caplog, asked_afresh):
    with monkeypatch.context() as patched:
        patched.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        assert asked_afresh() is False
    asked_afresh.cache_clear()

    def fails(*args: object) -> None:
        raise RuntimeError("no oneDNN kernel for this op")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", fails)
    assert asked_afresh() is False
    assert "cannot pack weights for oneDNN (no oneDNN kernel for this op)" in caplog.text
