"""What the policy is shown: tools in the template or in the system prompt, and turn pieces as ids."""

from __future__ import annotations

import copy
import json

import pytest

from agents.models import load_tokenizer
from agents.prompting import ChatFormat, example_call, render
from envs.actions import parse_action
from envs.cat import ToolCall
from toy_domain import ToyEnv

TOOLS_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n{{ messages[0]['content'] }}\n<tools>"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools><|im_end|>\n"
    "{% set rest = messages[1:] %}{% else %}{% set rest = messages %}{% endif %}"
    "{%- for m in rest %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def episode():
    env = ToyEnv()
    instruction, info = env.reset(seed=0)
    return instruction, info


def with_template(tokenizer, template: str):
    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    return other


def test_smollm2_template_ignores_tools_so_the_system_prompt_lists_them(tokenizer, episode):
    instruction, info = episode
    chat = ChatFormat.of(tokenizer)
    assert not chat.supports_tools
    system = chat.system_prompt(info["policy"], info["tools"])
    assert system.startswith(info["policy"])
    for tool in info["tools"]:
        assert json.dumps(tool["function"]) in system
    examples = [line for line in system.splitlines() if line.startswith('{"name"') and '"parameters"' not in line]
    assert [parse_action(line) for line in examples] == [ToolCall("get_note", {"key": "..."}),
                                                         ToolCall("finish", {"answer": "..."})]
    text = tokenizer.decode(chat.prompt_ids(chat.first_messages(info["policy"], info["tools"], instruction),
                                            info["tools"]))
    assert system in text and text.endswith(f"{instruction}<|im_end|>\n<|im_start|>assistant\n")


def test_a_template_that_renders_tools_gets_them_through_tools_and_the_bare_policy(tokenizer, episode):
    instruction, info = episode
    chat = ChatFormat.of(with_template(tokenizer, TOOLS_TEMPLATE))
    assert chat.supports_tools
    messages = chat.first_messages(info["policy"], info["tools"], instruction)
    assert messages[0]["content"] == info["policy"]
    text = tokenizer.decode(chat.prompt_ids(messages, info["tools"]))
    assert "<tools>" in text and all(t["function"]["name"] in text for t in info["tools"])


def test_turn_pieces_rebuild_the_templates_own_rendering_of_the_chat(tokenizer, episode):
    instruction, info = episode
    chat = ChatFormat.of(tokenizer)
    messages = chat.first_messages(info["policy"], info["tools"], instruction)
    action = '{"name": "get_note", "arguments": {"key": "k1"}}'
    generated = tokenizer(action, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (chat.prompt_ids(messages, info["tools"]) + generated + chat.close_turn_ids(generated)
           + chat.observation_ids("note 1"))
    whole = render(tokenizer, messages + [{"role": "assistant", "content": action},
                                          chat.observation_message("note 1")], add_generation_prompt=True)
    assert ids == tokenizer(whole, add_special_tokens=False)["input_ids"]


def test_a_turn_cut_at_the_cap_gets_the_whole_end_of_turn(tokenizer):
    chat = ChatFormat.of(tokenizer)
    end, newline = chat.turn_end_ids
    assert end == tokenizer.eos_token_id and end in chat.stop_ids
    assert chat.close_turn_ids([42, end]) == [newline]
    assert chat.close_turn_ids([42, 43]) == [end, newline]


def test_a_template_without_a_tool_role_shows_observations_as_user_turns(tokenizer):
    template = tokenizer.chat_template.replace(
        "{% for message in messages %}",
        "{% for message in messages %}{% if message['role'] == 'tool' %}{{ raise_exception('no tool role') }}"
        "{% endif %}")
    chat = ChatFormat.of(with_template(tokenizer, template))
    assert chat.observation_role == "user"
    assert tokenizer.decode(chat.observation_ids("note 1")) == (
        "<|im_start|>user\nnote 1<|im_end|>\n<|im_start|>assistant\n")


def test_the_example_call_fills_the_required_arguments_alone():
    """The fallback's example shows the call a model must make, optional arguments left out."""
    properties = {"amount": {"type": "number"}, "to": {"type": "string"}, "note": {"type": "string"}}
    schema = {"type": "function", "function": {"name": "convert", "parameters": {
        "type": "object", "properties": properties, "required": ["amount", "to"]}}}
    assert json.loads(example_call(schema)) == {"name": "convert", "arguments": {"amount": 1.5, "to": "..."}}


def test_a_template_that_changes_with_tools_but_never_shows_them_gets_the_fallback(tokenizer):
    """A template that only notes that tools exist does not show the model their schemas, so they must go into the
    system prompt."""
    template = ("{% if tools %}(tools available){% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                "{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert not ChatFormat.of(with_template(tokenizer, template)).supports_tools


def test_a_users_message_stays_a_user_turn_where_tool_output_is_a_tool_turn(tokenizer):
    """In a conversation the other party's message is the user's, even where the template shows tool output in a tool
    turn."""
    chat = ChatFormat.of(with_template(tokenizer, TOOLS_TEMPLATE))
    assert chat.observation_role == "tool"
    assert chat.observation_message("out", "tool") == {"role": "tool", "content": "out"}
    assert chat.observation_message("Hi", "user") == {"role": "user", "content": "Hi"}


def test_a_template_that_drops_a_tool_messages_content_gets_observations_as_user_turns(tokenizer):
    """An observation the template would not show must come as a user turn, or the policy never reads it."""
    template = ("{% for m in messages %}{% if m['role'] != 'tool' %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert ChatFormat.of(with_template(tokenizer, template)).observation_role == "user"
