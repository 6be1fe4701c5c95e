import json

import pytest

import envs.actions
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




def test_nesting_one_level_past_the_limit_is_refused():
    deep = "[" * 99 + "1" + "]" * 99  # 101 levels with the call and its arguments
    action = parse_action('{"name": "f", "arguments": {"y": ' + deep + "}}")
    assert isinstance(action, Malformed) and "nesting deeper than 100" in action.message


@pytest.mark.parametrize("number", ["1e5", "2E-1", "-3e+2", "1.5", "-0", "0", "NaN", "Infinity", "-Infinity", "1e999"])
def test_every_number_json_loads_reads_is_read_as_it_reads_it(number):
    """Exponents make floats, as do Python's json.dumps constants (which it writes for nan and inf)."""
    value, error = read_json(number)
    assert error is None and repr(value) == repr(json.loads(number))


def test_a_parse_error_names_the_problem_of_the_candidate_read_furthest():
    """The agent's attempt at a call is the candidate that got furthest, not a stray brace before it."""
    action = parse_action('{"a": oops} then {"name": "f", "arguments": {"b": 1')
    assert isinstance(action, Malformed) and "the text ends inside it" in action.message


def test_an_object_without_a_name_before_a_marker_does_not_hide_the_call_after_it():
    assert parse_action('{"step": 1} Action: {"name": "get_note", "arguments": {"key": "k1"}}') == CALL
    assert parse_action('{"step": 1}\n<tool_call>{"name": "get_note", "arguments": {"key": "k1"}}</tool_call>') == CALL


@pytest.mark.parametrize("text", ['{"a":' * 2000 + " <execute>x</execute>",
                                  '{"a": {}, ' * 2000 + " Action: x"])
def test_objects_before_a_marker_are_read_once(monkeypatch, text):
    """Parsing takes time linear in the text: the characters the JSON reader goes over, summed over
    every candidate it tries, are a small multiple of the text's length."""
    read, total = envs.actions._read, [0]

    def counting(text, pos):
        result = read(text, pos)
        total[0] += result.end - pos
        return result

    monkeypatch.setattr(envs.actions, "_read", counting)
    parse_action(text)
    assert total[0] <= 2 * len(text)


def test_arguments_may_come_as_parameters_or_as_an_empty_string():
    """Llama-style calls name their arguments "parameters"; an empty JSON-string of arguments is none."""
    assert parse_action('{"name": "get_note", "parameters": {"key": "k1"}}') == CALL
    assert parse_action('{"name": "list_tools", "arguments": ""}') == ToolCall("list_tools", {})
    assert parse_action('{"name": "list_tools", "arguments": "  "}') == ToolCall("list_tools", {})


def test_an_action_of_exactly_the_limit_is_read():
    text = '{"name": "get_note", "arguments": {"key": "k1"}}'
    assert parse_action(text, max_length=len(text)) == CALL
    assert isinstance(parse_action(text, max_length=len(text) - 1), Malformed)


@pytest.mark.parametrize("text, action", [
    ("```py\nprint(1)\n```", CodeAction("print(1)")),
    ("Per your transaction: ```python\nprint(1)\n```", CodeAction("print(1)")),  # "transaction:" is no marker
    ('{"step": 1} ACTION: {"name": "get_note", "arguments": {"key": "k1"}}', CALL),  # any case
])
def test_marker_spellings(text, action):
    assert parse_action(text) == action


def test_a_text_of_only_whitespace_is_called_empty():
    action = parse_action("  \n\t ")
    assert isinstance(action, Malformed) and "the action is empty" in action.message


@pytest.mark.parametrize("number", ["01", "-01", "00", "1.", ".5", "+1", "-", "1e", "nan", "inf"])
def test_a_number_json_loads_refuses_is_refused(number):
    with pytest.raises(ValueError):
        json.loads(number)
    assert read_json(number)[1] is not None
    assert isinstance(parse_action('{"name": "f", "arguments": {"x": ' + number + "}}"), Malformed)


def test_a_list_completed_inside_a_broken_object_is_not_taken_for_the_call():
    assert parse_action('{"ids": [1], "call": {"name": "get_note", "arguments": {"key": "k1"}} oops') == CALL


@pytest.mark.parametrize("text", ['{\n  "a": 1,\n  oops}', '[1,\n 2\n 3]', '{"a":\n\n   }'])
def test_the_column_of_an_error_is_counted_on_its_own_line_as_json_counts_it(text):
    with pytest.raises(json.JSONDecodeError) as error:
        json.loads(text)
    assert read_json(text)[1].endswith(f"at column {error.value.colno}")


@pytest.mark.parametrize("text", ["```python\nprint(1)", "<execute>print(1)"])
def test_a_code_block_cut_off_before_its_end_is_run_as_far_as_it_goes(text):
    """A stop sequence of ``` (or </execute>) ends the generation without writing it."""
    assert parse_action(text) == CodeAction("print(1)")
