"""Batched multi-turn rollouts in vector envs: exact token ids, loss masks, log-probabilities,
batch = one at a time, sync = async.

A tiny random Llama with the real SmolLM2 tokenizer and chat template plays the toy domain. Its
EOS logit is scaled up so that some turns stop on the end-of-turn token and others run into the
token cap, which exercises both ways a turn is closed.
"""

from __future__ import annotations

import copy
import os
import signal
import time

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents.decoding import SamplingSettings, sample
from agents.models import LoraSettings, add_lora, load_tokenizer
from agents.policy import ModelPolicy, Trajectory
from agents.prompting import ChatFormat, render
from agents.rollout import make_vector_env, play
from toy_domain import ToyEnv

CAP = 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's matrices gain nothing from threads, and on a busy machine OpenMP threads
    waiting for a taken core make each step several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= 35
    return model


def rollout(model, tokenizer, envs, settings: SamplingSettings, seed: int | None = None, n: int | None = None):
    """``n`` episodes (default: one per sub-env) of ``model`` in ``envs``."""
    return play(envs, ModelPolicy(model, tokenizer, settings), envs.num_envs if n is None else n, seed)


def toy_envs(*turn_limits: int) -> SyncVectorEnv:
    """A vector env built by hand, as a user would: one toy env per turn limit, autoreset off."""
    return SyncVectorEnv([lambda limit=limit: ToyEnv(max_turns=limit) for limit in turn_limits],
                         autoreset_mode=AutoresetMode.DISABLED)


@pytest.fixture(scope="module")
def sampled(model, tokenizer) -> list[Trajectory]:
    envs = make_vector_env("Toy-v0", 8, max_turns=5)
    return rollout(model, tokenizer, envs, SamplingSettings(temperature=1.0, max_new_tokens=CAP), seed=0)


def assistant_spans(trajectory: Trajectory) -> list[range]:
    """Each turn's run of loss-masked tokens, starting at its turn start."""
    spans = []
    for start in trajectory.turn_starts:
        end = start
        while end < len(trajectory.token_ids) and trajectory.loss_mask[end]:
            end += 1
        spans.append(range(start, end))
    return spans


def test_every_episode_plays_its_five_turns_in_one_batch(sampled):
    assert len(sampled) == 8
    for trajectory in sampled:
        assert trajectory.num_turns == 5 and trajectory.truncated and not trajectory.terminated
        assert trajectory.reward == 0.0 and trajectory.task_id == "toy-copy" and trajectory.domain == "toy"
        assert len(trajectory.token_ids) == len(trajectory.loss_mask) == len(trajectory.logprobs)
    ends = [trajectory.token_ids[span[-1]] for trajectory in sampled for span in assistant_spans(trajectory)]
    assert 2 in ends and any(end != 2 for end in ends), "both stop and cap endings should occur"


def test_each_turn_prompt_is_the_chat_so_far_extended_token_for_token(sampled, tokenizer):
    chat = ChatFormat.of(tokenizer)
    for trajectory in sampled:
        messages = trajectory.messages
        assert trajectory.token_ids[:trajectory.prompt_length] == chat.prompt_ids(messages[:2], [])
        for turn, start in enumerate(trajectory.turn_starts):
            prompt = trajectory.token_ids[:start]
            expected = render(tokenizer, messages[:2 + 2 * turn], add_generation_prompt=True)
            assert tokenizer.decode(prompt, skip_special_tokens=False) == expected
            if turn + 1 < trajectory.num_turns:
                assert trajectory.token_ids[:trajectory.turn_starts[turn + 1]][:start] == prompt


def test_loss_mask_covers_exactly_the_generated_tokens(sampled, tokenizer):
    for trajectory in sampled:
        spans = assistant_spans(trajectory)
        assert sum(trajectory.loss_mask) == sum(len(span) for span in spans)
        actions = [m["content"] for m in trajectory.messages if m["role"] == "assistant"]
        for span, action in zip(spans, actions):
            assert 1 <= len(span) <= CAP and trajectory.loss_mask[span.start - 1] == 0
            ids = [trajectory.token_ids[i] for i in span]
            text_ids = ids[:-1] if ids[-1] == tokenizer.eos_token_id else ids
            assert tokenizer.decode(text_ids, skip_special_tokens=False) == action
        unmasked = [lp for lp, m in zip(trajectory.logprobs, trajectory.loss_mask) if not m]
        assert set(unmasked) == {0.0}


def fresh_logprobs(model, trajectory: Trajectory, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored and recomputed log-probabilities of the sampled tokens: log-softmax(logits / temperature)
    of each given all tokens before it, in one unbatched forward pass."""
    ids = torch.tensor([trajectory.token_ids])
    sampled = torch.tensor(trajectory.loss_mask).nonzero().squeeze(-1)
    with torch.no_grad():
        logits = model(input_ids=ids, logits_to_keep=sampled - 1).logits[0] / temperature
    fresh = torch.log_softmax(logits.float(), -1).gather(-1, ids[0, sampled, None]).squeeze(-1)
    return torch.tensor(trajectory.logprobs)[sampled], fresh


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_stored_logprobs_equal_a_fresh_forward_pass_at_the_sampling_temperature(model, tokenizer, temperature, sampled):
    if temperature == 1.0:
        trajectories = sampled
    else:
        trajectories = rollout(model, tokenizer, make_vector_env("Toy-v0", 4, max_turns=3),
                               SamplingSettings(temperature=temperature, max_new_tokens=CAP), seed=1)
    for trajectory in trajectories:
        stored, fresh = fresh_logprobs(model, trajectory, temperature)
        assert torch.allclose(stored, fresh, atol=1e-4, rtol=0)


def test_greedy_batched_rollout_acts_like_one_episode_at_a_time(model, tokenizer):
    greedy = SamplingSettings(temperature=0, max_new_tokens=CAP)
    turn_limits = [1, 2, 3, 4, 5, 5, 3, 2]
    batched = rollout(model, tokenizer, toy_envs(*turn_limits), greedy)
    for limit, together in zip(turn_limits, batched):
        (alone,) = rollout(model, tokenizer, toy_envs(limit), greedy)
        assert together.num_turns == alone.num_turns == limit
        assert together.messages == alone.messages
        assert together.token_ids == alone.token_ids
        assert together.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_a_lora_policy_in_training_mode_rolls_out_in_eval_mode_and_gets_its_mode_back(model, tokenizer):
    policy = add_lora(copy.deepcopy(model), LoraSettings(rank=4, dropout=0.5))
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    policy.train()
    (trajectory,) = rollout(policy, tokenizer, toy_envs(2), SamplingSettings(max_new_tokens=CAP), seed=0)
    assert policy.training
    policy.eval()
    stored, fresh = fresh_logprobs(policy, trajectory, 1.0)
    assert torch.allclose(stored, fresh, atol=1e-4, rtol=0)
    with policy.disable_adapter():
        _, base = fresh_logprobs(policy, trajectory, 1.0)
    assert not torch.allclose(stored, base, atol=1e-3)


def test_episodes_that_would_outgrow_the_context_end_truncated(model, tokenizer):
    env = ToyEnv()
    prompt = len(ChatFormat.of(tokenizer).prompt_ids(
        ChatFormat.of(tokenizer).first_messages(ToyEnv.policy, env.tool_schemas, env.tasks[0].instruction),
        env.tool_schemas))
    limit = prompt + 2 * CAP + 20
    trajectories = rollout(model, tokenizer, toy_envs(5, 5), SamplingSettings(max_new_tokens=CAP, max_context_tokens=limit),
                           seed=0)
    for trajectory in trajectories:
        assert 1 <= trajectory.num_turns < 5 and trajectory.truncated and trajectory.reward == 0.0
        assert trajectory.end_reason == "context_limit"
        assert len(trajectory.token_ids) <= limit


def test_a_prompt_longer_than_the_context_is_refused(model, tokenizer):
    with pytest.raises(ValueError, match="context limit"):
        rollout(model, tokenizer, toy_envs(20), SamplingSettings(max_new_tokens=CAP, max_context_tokens=50))


def test_nucleus_sampling_draws_inside_the_nucleus_and_stores_its_renormalized_logprob():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(64, 1)
    generator = torch.Generator().manual_seed(0)
    tokens, logprobs = sample(logits, SamplingSettings(top_p=0.75), generator)
    assert set(tokens.tolist()) == {0, 1}
    expected = torch.log(torch.tensor([0.5, 0.3]) / 0.8)
    assert torch.allclose(logprobs, expected[tokens], atol=1e-6)


def test_sampling_follows_the_tempered_distribution():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(20000, 1)
    tokens, _ = sample(logits, SamplingSettings(temperature=1.0), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=3).float() / len(tokens)
    assert torch.allclose(frequencies, torch.tensor([0.6, 0.3, 0.1]), atol=0.02)


def test_sampling_never_draws_a_token_of_probability_zero():
    logits = torch.tensor([[float("-inf"), 0.0, float("-inf"), 1.0, float("-inf")]]).repeat(5000, 1)
    tokens, logprobs = sample(logits, SamplingSettings(temperature=1.0), torch.Generator().manual_seed(0))
    assert set(tokens.tolist()) == {1, 3} and torch.isfinite(logprobs).all()
    last_only = torch.tensor([[float("-inf")] * 4 + [0.0]]).repeat(100, 1)
    assert sample(last_only, SamplingSettings(), torch.Generator().manual_seed(0))[0].eq(4).all()


def test_greedy_decoding_stores_the_log_softmax_of_the_logits():
    """The policy's own log-probability of the argmax, as a fresh forward pass computes it."""
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    tokens, logprobs = sample(logits, SamplingSettings(temperature=0.0))
    assert tokens.tolist() == [0, 1]
    assert torch.allclose(logprobs, torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1))


def test_the_nucleus_stops_at_the_first_token_that_reaches_top_p():
    """Probabilities 1/2, 1/4, 1/4 and top_p 1/2: the smallest set holding 1/2 is the first token alone."""
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]])).repeat(20, 1)
    tokens, logprobs = sample(logits, SamplingSettings(top_p=0.5), torch.Generator().manual_seed(0))
    assert tokens.eq(0).all() and logprobs.eq(0.0).all()


@pytest.mark.parametrize("settings, wrong", [
    ({"temperature": float("nan")}, "temperature"), ({"temperature": float("inf")}, "temperature"),
    ({"temperature": -0.5}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"max_new_tokens": True}, "max_new_tokens"), ({"max_context_tokens": 0}, "max_context_tokens"),
    ({"max_context_tokens": 64.0}, "max_context_tokens"),
])
def test_settings_that_cannot_sample_are_refused_when_made_not_deep_in_a_rollout(settings, wrong):
    with pytest.raises(ValueError, match=wrong):
        SamplingSettings(**settings)


def test_async_workers_leave_ctrl_c_to_the_main_process():
    """A terminal's Ctrl-C reaches every process of the group: the workers ignore it (the main process
    stops and closes them), so the main process gets its KeyboardInterrupt, not a broken pipe."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI's may ignore it)
    try:
        envs = make_vector_env("SelfChallenge-Calculation-v0", 2, "async")
        try:
            for worker in envs.processes:
                os.kill(worker.pid, signal.SIGINT)
            time.sleep(0.5)
            observations, _ = envs.reset(seed=0)
            assert len(observations) == 2 and all(worker.is_alive() for worker in envs.processes)
        finally:
            envs.close()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the main process's own is back"
    finally:
        signal.signal(signal.SIGINT, inherited)
