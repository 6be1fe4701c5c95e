"""The KV cache of growing chats: appends in place hold what ``torch.cat`` would, a row cut out of one
batch and resumed in another continues exactly, the prefix store finds the longest stored start, and a
fixed-width decode step decodes what extending did and exchanges nothing with the host (on the meta
device), so that a GPU can capture it as a CUDA graph."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicLayer

from agents import attention, kvcache
from agents.decoding import SamplingSettings, generate_turn
from agents.kvcache import InPlaceLayer, KVBatch, PrefixCache
from agents.models import adapters_in_fp32, add_lora


def test_in_place_appends_hold_what_concatenation_holds_through_row_selection_and_repeats():
    torch.manual_seed(0)
    plain, in_place = DynamicLayer(), InPlaceLayer()
    for step, width in enumerate([5, 1, 1, 70, 1, 3]):
        keys, values = torch.randn(4, 2, width, 8), torch.randn(4, 2, width, 8)
        if step == 3:
            for layer in (plain, in_place):
                layer.batch_select_indices(torch.tensor([3, 0, 1, 2]))
        if step == 4:
            for layer in (plain, in_place):
                layer.batch_repeat_interleave(1)
        expected = plain.update(keys, values)
        got = in_place.update(keys, values)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert in_place._key_buffer.shape[-2] > in_place.keys.shape[-2]  # spare room: the next append copies nothing


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


@torch.inference_mode()
def test_a_row_cut_from_one_batch_and_resumed_in_another_gives_the_logits_of_a_fresh_pass():
    model = tiny_model()
    first = KVBatch(model, pad_id=0)
    first.prefill([[5, 6, 7, 8, 9], [5, 6, 10]])
    first.extend([[11], [12, 13, 14, 15]])
    kept = [first.row(0), first.row(1)]
    assert [kv[0][0].shape[-2] for kv in kept] == [6, 7]  # real tokens only, padding dropped
    second = KVBatch(model, pad_id=0)
    second.resume([kept[1], None, kept[0]])
    chunks = [[16, 17], [20, 21, 22], [18]]
    logits = second.extend(chunks)
    full = [[5, 6, 10, 12, 13, 14, 15, 16, 17], [20, 21, 22], [5, 6, 7, 8, 9, 11, 18]]
    for row, ids in enumerate(full):
        fresh = model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert torch.allclose(logits[row], fresh, atol=1e-5)


def row_of(length: int, marker: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((2, length, 4), marker), torch.full((2, length, 4), -marker))]


def test_the_prefix_store_gives_the_longest_shared_start_and_leaves_a_token_to_feed():
    cache = PrefixCache()
    assert cache.lookup([1, 2, 3]) == (0, None)
    cache.replace([([1, 2, 3, 4], row_of(4, 1.0)), ([1, 2, 9], row_of(3, 2.0)), ([7], None)])
    length, kv = cache.lookup([1, 2, 3, 4, 5, 6])
    assert length == 4 and kv[0][0].shape[-2] == 4 and kv[0][0][0, 0, 0] == 1.0
    length, kv = cache.lookup([1, 2, 9, 5])
    assert length == 3 and kv[0][0][0, 0, 0] == 2.0
    length, kv = cache.lookup([1, 2, 3, 4])
    assert length == 3 and kv[0][1].shape[-2] == 3  # the whole prompt is stored, but its last token is fed again
    assert cache.lookup([7, 8]) == (0, None)  # a row without keys and values is not stored
    cache.replace([([5, 6], row_of(2, 3.0))])
    assert cache.lookup([1, 2, 3, 4, 5]) == (0, None)  # the last batch's rows are gone
    [(length, kv), nothing] = cache.take([[5, 6, 7], [9]])
    assert length == 2 and kv[0][0][0, 0, 0] == 3.0 and nothing == (0, None)
    assert cache.lookup([5, 6, 7]) == (0, None)  # taken: the next batch stores its own rows


def extending_every_step(self: KVBatch, steps: int, graphs: bool = True):
    """What :meth:`KVBatch.fixed_width` replaced: each step one :meth:`KVBatch.extend`."""
    yield self.extend


@torch.inference_mode()
def two_turns(model: LlamaForCausalLM, temperature: float) -> tuple[list, list, list[int], list]:
    """Two turns of three left-padded rows (one idle in the first), some stopping early, sampled with a
    seeded generator: each turn's tokens and log-probabilities, then the cache's lengths and rows."""
    batch = KVBatch(model, pad_id=0)
    logits = batch.prefill([[5, 6, 7, 8, 9], [5, 6, 10], [20, 21, 22, 23, 24, 25, 26]])
    generator = torch.Generator().manual_seed(0)
    settings = SamplingSettings(temperature=temperature, max_new_tokens=12)
    stop_ids = frozenset([3])

    def stop(tokens: list[int]) -> bool:  # rows stop after 2 to 12 tokens
        return len(tokens) >= 2 + tokens[0] % 11

    first = generate_turn(batch, logits, settings, stop_ids, generator, stop, running=[True, False, True])
    chunks = [first[2][0] + [40, 41], [42], first[2][2] + [43, 44, 45]]  # the unfed tokens, an observation
    logits = batch.extend(chunks)
    second = generate_turn(batch, logits, settings, stop_ids, generator, stop)
    kv = [batch.row(row) for row in range(3)]
    return [first[0], second[0]], [first[1], second[1]], batch.lengths.tolist(), kv


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_fixed_width_turn_decodes_token_for_token_what_extending_every_step_did(temperature, monkeypatch):
    model = tiny_model()
    tokens, logprobs, lengths, kv = two_turns(model, temperature)
    monkeypatch.setattr(KVBatch, "fixed_width", contextlib.contextmanager(extending_every_step))
    expected_tokens, expected_logprobs, expected_lengths, expected_kv = two_turns(model, temperature)
    assert tokens == expected_tokens and lengths == expected_lengths
    turn_lengths = [len(row) for turn in tokens for row in turn]
    assert 0 in turn_lengths and len(set(turn_lengths)) >= 4  # an idle row, rows stopping at different steps
    for got, want in zip(logprobs, expected_logprobs):
        assert all(torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5) for a, b in zip(got, want))
    for got, want in zip(kv, expected_kv):
        assert all(torch.allclose(a, b, atol=1e-5) and torch.allclose(c, d, atol=1e-5)
                   for (a, c), (b, d) in zip(got, want))


@torch.inference_mode()
def test_reserved_room_is_zeroed_so_masked_columns_cannot_poison_attention():
    model = tiny_model()
    batch, expected = KVBatch(model, pad_id=0), KVBatch(model, pad_id=0)
    batch.prefill([[5, 6, 7]])
    expected.prefill([[5, 6, 7]])
    for layer in batch.cache.layers:  # the spare room as uninitialised memory may hold it
        layer._key_buffer[:, :, 3:] = float("nan")
        layer._value_buffer[:, :, 3:] = float("nan")
    with batch.fixed_width(4) as step:
        logits = step([[8]])
    assert torch.allclose(logits, expected.extend([[8]]), atol=1e-5)


def test_a_model_whose_decode_step_cannot_be_captured_is_warned_of_once_and_decoded_without(monkeypatch, caplog):
    tried = []

    def refuse(forward):
        tried.append(forward)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(kvcache, "_captured", refuse)
    model, forward, cuda = tiny_model(), (lambda: torch.zeros(1)), torch.device("cuda")  # a device object only
    assert kvcache._replayable(forward, model, torch.device("cpu"), graphs=True) is forward
    assert kvcache._replayable(forward, model, cuda, graphs=False) is forward
    assert not tried
    with caplog.at_level(logging.WARNING, logger="agents.kvcache"):
        assert kvcache._replayable(forward, model, cuda, graphs=True) is forward
        assert kvcache._replayable(forward, model, cuda, graphs=True) is forward
    assert len(tried) == 1 and len(caplog.records) == 1 and "without CUDA graphs" in caplog.text
    assert kvcache._replayable(forward, tiny_model(), cuda, graphs=True) is forward and len(tried) == 2  # per model


def test_a_failed_capture_leaves_the_stream_that_was_current_before_it(monkeypatch):
    """torch's graph context makes its capture stream current and, when the capture fails, raises from
    capture_end before it restores the stream: the rest of the process would run on the capture stream."""

    class Stream:
        def __init__(self, name: str = "side"):
            self.name = name

        def wait_stream(self, other: Stream) -> None:
            pass

    current = [Stream("default")]

    class Graph:  # torch.cuda.graph's order of calls, on a capture that a host sync broke
        def __init__(self, cuda_graph):
            pass

        def __enter__(self):
            current[0] = Stream("capture")

        def __exit__(self, *exc):
            raise RuntimeError("operation failed due to a previous error during capture")  # from capture_end

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "set_stream", lambda stream: current.__setitem__(0, stream))
    monkeypatch.setattr(torch.cuda, "stream", lambda _: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "graph", Graph)
    with pytest.raises(RuntimeError, match="during capture"):
        kvcache._captured(lambda: torch.zeros(1))
    assert current[0].name == "default"


ANSWERS = {torch.ops.aten._local_scalar_dense.default: 1, torch.ops.aten.item.default: 1,
           torch.ops.aten.is_nonzero.default: True}
"""Ops that read one value back to the host (``.item()``, ``bool``), and what :func:`host_traffic` answers on meta."""
READS = (*ANSWERS, torch.ops.aten.nonzero.default, torch.ops.aten.equal.default)
"""Ops that read values back to the host (the last two, a shape or a verdict that depends on the data)."""
COPIES = (torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default)


class _ReadsAndHostOperands(TorchDispatchMode):
    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in READS:
            self.seen.append(f"{func} reads a value back")
            if func in ANSWERS and args[0].device.type == "meta":
                return ANSWERS[func]
        host = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.device.type == "cpu"]
        if any(t.dim() or func in COPIES for t in host):  # a 0-dim operand of another op goes to the kernel as a scalar
            self.seen.append(f"{func} takes a host tensor")
        return func(*args, **kwargs)


class _HostData(TorchFunctionMode):
    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        device = (kwargs or {}).get("device")
        if func in (torch.tensor, torch.as_tensor) and device is not None and torch.device(device).type != "cpu":
            self.seen.append(f"torch.{func.__name__} copies host data to {device}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def host_traffic() -> Iterator[list[str]]:
    """What the code run inside would exchange with the host on a device: a value read back (``.item()``,
    ``bool``, a shape that depends on data), a tensor built from host data, a host tensor fed to an op.
    Each waits for the GPU or copies from pageable memory, and CUDA graph capture fails on either, so
    the decode step it captures must do none. A value read from a meta tensor (which has none) is
    answered, so that code reading one outside the captured step can run on meta."""
    seen: list[str] = []
    with _HostData(seen), _ReadsAndHostOperands(seen):
        yield seen


@pytest.mark.parametrize("attention_name, lora", [("sdpa", False), (attention.NAME, False), (attention.NAME, True)])
def test_a_fixed_width_step_exchanges_nothing_with_the_host_so_it_can_be_captured(monkeypatch, attention_name, lora):
    """On the meta device (shapes without data, and a device other than the CPU, so transformers and
    our attention take their GPU branches) every step's forward pass runs under :func:`host_traffic`:
    what it would capture as a CUDA graph on a GPU, with and without a prompt held once, with LoRA in bf16."""
    monkeypatch.setattr(kvcache, "HOLD_ONCE_FROM", 4)
    captured: list[list[str]] = []

    def watched(forward, model, device, graphs):
        def run() -> torch.Tensor:
            with host_traffic() as seen:
                out = forward()
            captured.append(seen)
            return out
        return run

    monkeypatch.setattr(kvcache, "_replayable", watched)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).eval()
    model.set_attn_implementation(attention_name)
    if lora:  # as the trainer's policy on a GPU: a bf16 base, its adapter in fp32
        model = adapters_in_fp32(add_lora(model.to(torch.bfloat16)))
    with torch.inference_mode(), host_traffic():  # a prefill may read values back (it is not captured)
        batch = KVBatch(model, pad_id=0)
        batch.prefill([[5, 6, 7, 8, 9], [5, 6, 7, 10], [5, 6, 7, 11, 12, 13]])
    assert (batch.shared is not None) == (attention_name == attention.NAME)
    with torch.inference_mode(), batch.fixed_width(4) as step:
        for chunks in ([[8], [9], [10]], [[8], [], [10]], [[8], [9], []]):
            assert step(chunks).shape == (3, 128)
    assert captured == [[], [], []]


def test_host_traffic_sees_a_read_back_a_host_operand_and_host_data_but_not_a_scalar():
    x = torch.ones(2, 3, device="meta")
    with host_traffic() as seen:
        assert bool(x.sum())  # answered: meta tensors hold no value
        x.add_(torch.ones(3))
        x.add_(torch.tensor(1.0))  # a 0-dim operand goes to the kernel as a scalar: no copy
        torch.tensor([1, 2], device="meta")
    assert len(seen) == 3
    assert "reads a value back" in seen[0] and "takes a host tensor" in seen[1] and "copies host data" in seen[2]


@torch.inference_mode()
def test_a_prompt_every_row_shares_is_held_once_and_decodes_as_a_copy_per_row_does(monkeypatch):
    monkeypatch.setattr(kvcache, "HOLD_ONCE_FROM", 10)  # 2 copies of 5 tokens saved
    model = tiny_model()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 8, 9, 12], [5, 6, 7, 8, 9, 13, 14, 15]]  # 5 tokens shared

    def play(attention_name: str) -> tuple[KVBatch, list]:
        model.set_attn_implementation(attention_name)
        batch = KVBatch(model, pad_id=0)
        logits = batch.prefill(prompts)
        outputs = [logits]
        settings = SamplingSettings(temperature=0.0, max_new_tokens=6)
        tokens, _, unfed = generate_turn(batch, logits, settings, frozenset({3}))
        outputs.append(batch.extend([unfed[0] + [20, 21], unfed[1] + [22], unfed[2]]))  # a padded chunk, a row without
        batch.keep([2, 0])
        outputs.append(batch.extend([[23], [24, 25]]))
        return batch, [tokens, outputs, batch.lengths.tolist(), [batch.row(row) for row in range(2)]]

    copied, expected = play("sdpa")
    shared, got = play(attention.NAME)
    assert copied.shared is None and shared.shared is not None
    assert shared.cache.layers[0].keys.shape[-2] == copied.cache.layers[0].keys.shape[-2] - 5  # rows hold their own
    assert got[0] == expected[0] and got[2] == expected[2]
    for a, b in zip(got[1], expected[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    for row, expected_row in zip(got[3], expected[3]):
        for (keys, values), (expected_keys, expected_values) in zip(row, expected_row, strict=True):
            torch.testing.assert_close(keys, expected_keys, rtol=0, atol=1e-5)
            torch.testing.assert_close(values, expected_values, rtol=0, atol=1e-5)


@pytest.mark.parametrize("prefix, held_once", [(10, False), (11, True)])
def test_a_shared_start_is_held_once_only_when_that_saves_enough_copies(monkeypatch, prefix, held_once):
    monkeypatch.setattr(kvcache, "HOLD_ONCE_FROM", 22)
    model = tiny_model()
    model.set_attn_implementation(attention.NAME)
    batch = KVBatch(model, pad_id=0)
    with torch.inference_mode():
        batch.prefill([list(range(5, 5 + prefix)) + [row] for row in (1, 2, 3)])  # 2 copies of the start saved
    assert (batch.shared is not None) == held_once
    assert batch.lengths.tolist() == [prefix + 1] * 3


def test_an_append_after_rows_are_reordered_writes_beside_the_reordered_rows_not_the_old_buffer():
    torch.manual_seed(0)
    plain, in_place = DynamicLayer(), InPlaceLayer()
    for step, width in enumerate([5, 1, 2]):
        if step == 1:
            for layer in (plain, in_place):
                layer.batch_select_indices(torch.tensor([2, 0, 1]))
        keys, values = torch.randn(3, 2, width, 4), torch.randn(3, 2, width, 4)
        expected, got = plain.update(keys, values), in_place.update(keys, values)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_keeping_rows_drops_the_columns_only_the_dropped_rows_used_and_decodes_on_exactly():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64)).eval()
    with torch.inference_mode():
        batch = KVBatch(model, pad_id=0)
        batch.prefill([[5, 6, 7, 8, 9, 10, 11, 12], [20, 21], [30, 31, 32]])
        batch.keep([1, 2])
        assert batch.mask.shape[1] == 3 and batch.cache.layers[0].keys.shape[-2] == 3
        logits = batch.extend([[22], [33, 34]])
        for row, ids in enumerate([[20, 21, 22], [30, 31, 32, 33, 34]]):
            assert torch.allclose(logits[row], model(input_ids=torch.tensor([ids])).logits[0, -1], atol=1e-5)
