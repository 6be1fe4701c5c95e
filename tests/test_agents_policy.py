"""The model as a chat policy (:meth:`agents.policy.ModelPolicy.complete`, the benchmarks' protocol):
chat -> next message, greedy, observations in the role training used, the base model reachable with the adapter off, the context limit reported, a
batch of chats decoded as each would be alone, and a row stopped where its stop predicate holds."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from agents.models import DEFAULT_MODEL, LoraSettings, ModelNotFoundError, add_lora, load_tokenizer
from eval.cli import InputError
from agents.decoding import SamplingSettings, stop_ids_of
from agents.policy import ContextLimitExceeded, ModelPolicy, TextPolicy, scripted
from agents.prompting import ChatFormat
from eval.cli import load_policy
from eval.m3tooleval import batched


@pytest.fixture(scope="module")
def tokenizer():
    try:
        return load_tokenizer(DEFAULT_MODEL)
    except ModelNotFoundError as error:
        pytest.skip(str(error))


def tiny_model(context: int = 256) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context)
    return LlamaForCausalLM(config).eval()


CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "{}"}, {"role": "tool", "content": "ok"}]


def test_greedy_turns_are_deterministic_and_capped(tokenizer):
    policy = ModelPolicy(tiny_model(), tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=6))
    first, second = policy(CHAT), policy(CHAT)
    assert first == second and isinstance(first, str)
    assert len(tokenizer(first, add_special_tokens=False)["input_ids"]) <= 6
    assert policy.chat.observation_role in ("tool", "user")


def test_the_base_policy_runs_with_the_adapter_switched_off(tokenizer):
    model = tiny_model()
    plain = ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=6))(CHAT)
    lora = add_lora(tiny_model())
    with torch.no_grad():
        for name, weight in lora.named_parameters():
            if "lora_B" in name:
                weight.fill_(0.5)  # a trained adapter: far from the base
    adapted = ModelPolicy(lora, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=6))
    assert adapted.base()(CHAT) == plain
    assert adapted(CHAT) != plain


def test_a_chat_longer_than_the_context_is_reported(tokenizer):
    policy = ModelPolicy(tiny_model(context=32), tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=4))
    with pytest.raises(ContextLimitExceeded):
        policy([{"role": "user", "content": "word " * 64}])


def prompt_tokens(tokenizer, chat) -> int:
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_batch_of_chats_of_different_lengths_decodes_each_as_it_would_alone(tokenizer):
    policy = ModelPolicy(tiny_model(), tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=8))
    longer = CHAT + [{"role": "assistant", "content": "Looked it up."}, {"role": "user", "content": "And then? " * 6}]
    chats = [CHAT, CHAT[:2], longer]
    assert len({prompt_tokens(tokenizer, chat) for chat in chats}) == 3  # the shorter rows are padded
    together = policy.complete(chats)
    assert together == [policy(chat) for chat in chats]
    assert all(together)


def test_in_a_batch_a_chat_past_the_context_fails_alone_and_one_near_its_end_gets_only_the_room_left(tokenizer):
    short, near, past = ([{"role": "user", "content": "Hi"}], [{"role": "user", "content": "word " * 20}],
                         [{"role": "user", "content": "word " * 64}])
    policy = ModelPolicy(tiny_model(context=prompt_tokens(tokenizer, near) + 3), tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=8))
    replies = policy.complete([short, past, near])
    assert isinstance(replies[1], ContextLimitExceeded)
    assert replies[0] == policy(short) and replies[2] == policy(near)
    assert len(tokenizer(replies[2], add_special_tokens=False)["input_ids"]) <= 3
    assert len(tokenizer(replies[0], add_special_tokens=False)["input_ids"]) > 3


def forward_calls(model) -> list[int]:
    """A list that grows by one at each forward pass of ``model`` (one per generated token, after the prompt's)."""
    calls: list[int] = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def counting_batches(sizes: list[int]):
    """A stand-in for :func:`eval.m3tooleval.batched` (monkeypatch it in a harness) that records how many
    chats each batched call gets."""

    def wrap(policy):
        generate = batched(policy)

        def call(chats):
            sizes.append(len(chats))
            return generate(chats)

        return call

    return wrap


def counting_player(policy, sizes: list[int]) -> TextPolicy:
    """``policy`` as a player that records how many seats act in each of its (batched) calls."""

    class Counting(TextPolicy):
        def start(self, openings, seed=None):
            seats = super().start(openings, seed)
            act = seats.act

            def counted(rows):
                sizes.append(len(rows))
                return act(rows)

            seats.act = counted
            return seats

    return Counting(policy)


def test_a_row_stops_where_its_text_meets_the_stop_predicate_and_the_other_rows_decode_as_before(tokenizer):
    model = tiny_model()
    longer = CHAT + [{"role": "assistant", "content": "Looked it up."}, {"role": "user", "content": "And then? " * 6}]
    chats = [CHAT, CHAT[:2], longer]
    full = ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=12)).complete(chats)
    prefix = full[0][:len(full[0]) * 2 // 3]
    assert prefix and not any(reply.startswith(prefix) for reply in full[1:])  # (the last shares its first words)
    stopped = ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=12), stop=lambda text: text.startswith(prefix)).complete(chats)
    assert stopped[1:] == full[1:]
    assert stopped[0].startswith(prefix) and full[0].startswith(stopped[0]) and len(stopped[0]) < len(full[0])


def test_generation_ends_once_every_row_has_stopped(tokenizer):
    model = tiny_model()
    chats = [CHAT, CHAT[:2]]
    calls = forward_calls(model)
    full = ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=12)).complete(chats)
    decoded = len(calls)
    assert decoded >= 12
    prefixes = [reply[:len(reply) // 3] for reply in full]
    calls.clear()
    stopped = ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=12),
                          stop=lambda text: any(text.startswith(p) for p in prefixes)).complete(chats)
    assert all(whole.startswith(part) and part.startswith(p) for whole, part, p in zip(full, stopped, prefixes))
    assert all(len(part) < len(whole) for whole, part in zip(full, stopped)) and len(calls) < decoded


def test_a_plain_policy_is_batched_one_chat_at_a_time_keeping_a_context_limit_as_that_chats_reply():
    def policy(messages):
        if len(messages) > 1:
            raise ContextLimitExceeded("too long")
        return messages[0]["content"].upper()

    one, two = [{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}] * 2
    replies = batched(policy)([one, two, one])
    assert replies[0] == replies[2] == "A" and isinstance(replies[1], ContextLimitExceeded)


def test_a_model_that_cannot_be_loaded_is_an_input_error():
    with pytest.raises(InputError, match="cannot load model"):
        load_policy(argparse.Namespace(model="/no/such/model/dir", adapter=None, device="cpu"))


def test_scripted_policies_say_their_replies_in_turn():
    policy = scripted(["a", "b"])
    chat = [{"role": "user", "content": "x"}]
    assert policy(chat) == "a"
    assert policy(chat + [{"role": "assistant", "content": "a"}]) == "b"
    assert policy(chat + [{"role": "assistant", "content": "a"}] * 5) == "b"


def test_the_system_prompt_is_the_policy_then_the_tools(tokenizer):
    tool = {"type": "function", "function": {"name": "lookup", "description": "Look up.",
                                             "parameters": {"type": "object", "properties": {}, "required": []}}}
    prompt = ChatFormat.of(tokenizer).system_prompt("Serve the customer.", [tool])
    assert prompt.startswith("Serve the customer.\n\n") and '"name": "lookup"' in prompt


def test_sampling_follows_the_torch_seed(tokenizer):
    policy = ModelPolicy(tiny_model(), tokenizer, SamplingSettings(temperature=1.0, max_new_tokens=8))
    replies = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        replies.append(policy(CHAT))
    assert replies[0] == replies[1] != replies[2]


def first_widths(model) -> list[int]:
    """The width of each forward pass's input ids (prompt chunks, then one column per decoded token)."""
    widths: list[int] = []
    model.register_forward_hook(lambda module, args, kwargs, out: widths.append(kwargs["input_ids"].shape[-1]),
                                with_kwargs=True)
    return widths


def test_each_turn_starts_from_the_last_turns_keys_and_values_and_decodes_as_a_fresh_policy_would(tokenizer):
    model = tiny_model(context=512)
    widths = first_widths(model)
    cached = ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=8))
    chats = [[CHAT[1]], [CHAT[1]], [{"role": "user", "content": "Something else entirely."}]]
    for turn in range(3):
        widths.clear()
        replies = cached.complete(chats)
        assert replies == [ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=8))(chat) for chat in chats]
        fed = widths[0]
        if turn:  # the chats' earlier turns come from the cache: only the new tokens are fed
            assert fed <= max(prompt_tokens(tokenizer, chat) - prompt_tokens(tokenizer, chat[:-2]) for chat in chats)
        chats = [chat + [{"role": "assistant", "content": reply}, {"role": "user", "content": f"Go on ({turn})."}]
                 for chat, reply in zip(chats, replies)]
        chats.append([CHAT[1], {"role": "assistant", "content": "New here."}, {"role": "user", "content": "Yes?"}])


def test_the_adapter_and_the_base_keep_separate_caches(tokenizer):
    lora = add_lora(tiny_model())
    with torch.no_grad():
        for name, weight in lora.named_parameters():
            if "lora_B" in name:
                weight.fill_(0.5)
    adapted = ModelPolicy(lora, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=6))
    base = adapted.base()
    first = adapted(CHAT)
    with_base = base(CHAT)
    assert adapted(CHAT) == first and base(CHAT) == with_base != first


@pytest.mark.parametrize("training", [True, False])
def test_a_policy_plays_its_own_adapter_in_eval_mode_and_puts_the_model_back_as_it_was(tokenizer, training):
    model = add_lora(tiny_model())
    model.add_adapter("other", LoraSettings(rank=4).config())
    model.set_adapter("default")
    model.train(training)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append((module.active_adapter, module.training)))
    ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=3), adapter="other")(CHAT)
    assert seen and set(seen) == {("other", False)}
    assert (model.active_adapter, model.training) == ("default", training)


def test_a_chat_that_fills_the_context_exactly_is_reported_and_one_token_short_gets_one_token(tokenizer):
    chat = [{"role": "user", "content": "word " * 10}]
    n = prompt_tokens(tokenizer, chat)
    full = ModelPolicy(tiny_model(context=n), tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=8))
    assert isinstance(full.complete([chat])[0], ContextLimitExceeded)
    roomy = ModelPolicy(tiny_model(context=n + 1), tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=8))
    reply = roomy.complete([chat])[0]
    assert isinstance(reply, str) and len(tokenizer(reply, add_special_tokens=False)["input_ids"]) <= 1


def test_a_text_players_system_prompt_lists_tools_only_where_it_has_some():
    from agents.policy import Opening, Trajectory
    from agents.prompting import tools_in_system_prompt

    tools = [{"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {}}}]
    openings = [Opening(Trajectory(), "Be brief.", tools, "Hi"), Opening(Trajectory(), "You are a customer.", [], "Hi")]
    TextPolicy(scripted(["ok"])).start(openings)
    agent, user = (o.trajectory.messages for o in openings)
    assert agent[0]["content"] == f"Be brief.\n\n{tools_in_system_prompt(tools)}" and agent[1]["content"] == "Hi"
    assert user[0] == {"role": "system", "content": "You are a customer."}


def test_a_models_own_eos_tokens_stop_a_turn_too(tokenizer):
    """A model that ends turns with its own EOS (Llama 3.1's <|eom_id|>, <|eot_id|>) would otherwise run to the token
    cap."""
    chat = ChatFormat.of(tokenizer)
    for eos, extra in ((7, {7}), ([7, 9], {7, 9}), (None, set())):
        model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=eos))
        assert stop_ids_of(model, chat) == chat.stop_ids | extra
