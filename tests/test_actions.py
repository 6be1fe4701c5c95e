import pytest

from envs.actions import CodeAction, Malformed, parse_action
from envs.cat import ToolCall

CALL = ToolCall("get_note", {"key": "k1"})


@pytest.mark.parametrize("text", [
    '{"name": "get_note", "arguments": {"key": "k1"}}',
    'I will look it up.\n<tool_call>\n{"name": "get_note", "arguments": {"key": "k1"}}\n</tool_call>',
    'Thought: read it.\nAction: {"name": "get_note", "arguments": {"key": "k1"}}',
    'Sure! {"name": "get_note", "arguments": "{\\"key\\": \\"k1\\"}"} done',
    '<tool_call>{"name": "get_note", "arguments": {"key": "k1"}}',
])
def test_tool_call_formats(text):
    assert parse_action(text) == CALL


@pytest.mark.parametrize("text, source", [
    ("Let me compute.\n```python\nprint(add(1, 2))\n```", "print(add(1, 2))"),
    ("<execute>x = 1\nprint(x)</execute>", "x = 1\nprint(x)"),
])
def test_code_actions(text, source):
    assert parse_action(text) == CodeAction(source)


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("hello there", "no JSON object"),
    ('{"name": 3}', 'string "name"'),
    ('{"name": "x", "arguments": [1]}', "must be a JSON object"),
    ('{"name": "x", "arguments": "{oops"}', "not JSON"),
    ('{"name": "x", "arguments": ', "invalid JSON"),
    ("```python\n```", "code block is empty"),
])
def test_malformed_actions_explain_themselves(text, message):
    action = parse_action(text)
    assert isinstance(action, Malformed)
    assert message in action.message
    assert action.message.startswith("Error:")


def test_non_text_action_is_malformed_not_an_exception():
    assert isinstance(parse_action(None), Malformed)  # type: ignore[arg-type]
