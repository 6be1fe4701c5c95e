import pytest

from envs.actions import CodeAction, Malformed, parse_action, read_json
from envs.cat import ToolCall

CALL = ToolCall("get_note", {"key": "k1"})


@pytest.mark.parametrize("text", [
    '{"name": "get_note", "arguments": {"key": "k1"}}',
    'I will look it up.\n<tool_call>\n{"name": "get_note", "arguments": {"key": "k1"}}\n</tool_call>',
    'Thought: read it.\nAction: {"name": "get_note", "arguments": {"key": "k1"}}',
    'Sure! {"name": "get_note", "arguments": "{\\"key\\": \\"k1\\"}"} done',
    '<tool_call>{"name": "get_note", "arguments": {"key": "k1"}}',
    '{"name":"get_note","arguments":{"key":"k1"}}',  # compact, as json.dumps(separators=(",", ":")) writes it
])
def test_tool_call_formats(text):
    assert parse_action(text) == CALL


def test_every_json_value_kind_is_read_and_arguments_null_means_none():
    text = '{"name": "f", "arguments": {"a": true, "b": false, "c": null, "d": -1.5e2, "e": [1, {"f": "g"}]}}'
    assert parse_action(text) == ToolCall("f", {"a": True, "b": False, "c": None, "d": -150.0, "e": [1, {"f": "g"}]})
    assert parse_action('{"name": "list_tools", "arguments": null}') == ToolCall("list_tools", {})


def test_read_json_reads_one_value_and_says_what_else_is_there():
    assert read_json('  {"a": [1, "x"]}\n') == ({"a": [1, "x"]}, None)
    assert read_json('{"a": 1} trailing') == (None, "extra text after the JSON value at column 9")


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
    ('{"name": "x", "arguments": {"a": oops, "b": 5}}', "invalid JSON"),  # not the number after it
    ('{"name": "x", "arguments": {"a": "bad\x01"}} and "ok"', "invalid JSON"),
    ('{"name": "x", "arguments": {"a\x01": 1}}', "invalid JSON"),
    ('{"name": "x", "arguments": {"a" 1}}', "invalid JSON"),
    ('{"name": "x", "arguments": "{\\"a\\": 1} trailing"}', "extra text after the JSON value"),
])
def test_malformed_actions_explain_themselves(text, message):
    action = parse_action(text)
    assert isinstance(action, Malformed)
    assert message in action.message
    assert action.message.startswith("Error:")


def test_non_text_action_is_malformed_not_an_exception():
    assert isinstance(parse_action(None), Malformed)  # type: ignore[arg-type]


@pytest.mark.parametrize("text, message", [
    ('{"name": "f", "arguments": {"x": ' + "9" * 4301 + "}}", "an integer of 4,301 digits"),
    ('{"name": "f", "arguments": {"x": ' + "[" * 5000 + "]" * 5000 + "}}", "nesting deeper than 100"),
    ('{"name": "f", "arguments": "' + "[" * 5000 + '"}', "nesting deeper than 100"),
    ("{" * 5000, "expecting a property name"),
])
def test_hostile_json_is_an_error_naming_the_problem(text, message):
    action = parse_action(text)
    assert isinstance(action, Malformed) and message in action.message


def test_integers_up_to_pythons_digit_limit_and_moderate_nesting_are_read():
    deep = "[" * 98 + "1" + "]" * 98  # 100 levels with the call and its arguments
    action = parse_action('{"name": "f", "arguments": {"x": ' + "9" * 4300 + ', "y": ' + deep + "}}")
    assert isinstance(action, ToolCall) and action.arguments["x"] == int("9" * 4300)


def test_an_object_completed_inside_a_broken_one_is_the_tool_call():
    assert parse_action('{"thought": "go", "call": {"name": "get_note", "arguments": {"key": "k1"}} oops') == CALL


def test_a_failed_candidate_does_not_hide_a_later_tool_call():
    assert parse_action('I will {look} it up {"a" {"name": "get_note", "arguments": {"key": "k1"}}') == CALL


@pytest.mark.parametrize("text, action", [
    ('{"name": "respond", "arguments": {"content": "Your transaction: a refund"}}',
     ToolCall("respond", {"content": "Your transaction: a refund"})),
    ('{"name": "think", "arguments": {"thought": "use <execute> tags"}}',
     ToolCall("think", {"thought": "use <execute> tags"})),
    ('{"name": "finish", "arguments": {"answer": "<tool_call> Action: ```python\\nx\\n```"}}',
     ToolCall("finish", {"answer": "<tool_call> Action: ```python\nx\n```"})),
    ('{"name": "get_note", "arguments": {"key": "k1"}} Action: done', CALL),
    ('The transaction: {"name": "get_note", "arguments": {"key": "k1"}}', CALL),
    ("```python\nprint('<tool_call>')\n```", CodeAction("print('<tool_call>')")),
    ('<execute>f({"name": "x"})</execute> {"name": "get_note"}', CodeAction('f({"name": "x"})')),
])
def test_the_first_action_in_the_text_counts_and_markers_inside_its_strings_are_text(text, action):
    assert parse_action(text) == action


def test_an_action_over_the_length_limit_is_refused_unread():
    action = parse_action('{"name": "get_note", "arguments": {"key": "k1"}}', max_length=10)
    assert isinstance(action, Malformed) and "over this environment's limit of 10" in action.message
    assert parse_action('{"name": "get_note", "arguments": {"key": "k1"}}', max_length=100) == CALL


def test_the_env_refuses_an_action_over_its_configured_length():
    from toy_domain import ToyEnv

    env = ToyEnv(max_action_length=20)
    env.reset(seed=0)
    observation, _, _, _, info = env.step('{"name": "get_note", "arguments": {"key": "k1"}}')
    assert "over this environment's limit of 20" in observation and "invalid_action" in info
    assert env.action_space.max_length == 20


def test_unknown_tool_error_lists_every_tool_the_env_offers():
    import gymnasium as gym

    env = gym.make("SelfChallenge-Retail-v0")
    _, info = env.reset(seed=0)
    observation, *_ = env.step('{"name": "refund_everything", "arguments": {}}')
    listed = observation.split("Available tools: ")[1].split(", ")
    assert listed == [schema["function"]["name"] for schema in info["tools"]]
    assert {"finish", "respond"} <= set(listed)
