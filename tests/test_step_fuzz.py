"""``env.step`` never raises, whatever the text: hypothesis-generated actions against every domain.

The actions mix prose, tool-call wrappers, real and unknown tool names, real and unknown argument
names, wrongly typed values, and the hostile shapes that once raised or took quadratic time:
integer literals up to 100,000 digits, arrays and objects nested up to 10,000 deep, and 1 MB texts.

Every env runs in strict mode, and retail and airline in upstream mode too (no argument checks);
conversations with a simulated user take fuzzed turns on both sides, text or not.
``FUZZ_EXAMPLES`` sets the examples per env: 300 by default, to keep CI short; the issue's bar is
``FUZZ_EXAMPLES=10000 python -m pytest tests/test_step_fuzz.py`` (several minutes).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

from envs.actions import Malformed, parse_action
from envs.cat import ToolCall
from envs.registry import CHALLENGER_ID, ENV_IDS
from envs.spaces import AnyText
from envs.user import STOP, SimulatedUser

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
MEGABYTE = 1 << 20

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
_json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _nested(opening: str, depth: int, closed: bool) -> str:
    closing = {"[": "]", '{"a":': "}", '[{"a":': "}]"}[opening]
    return opening * depth + "0" + (closing * depth if closed else "")


# Values as JSON text, so that they can hold what Python's json cannot write (100k-digit integers).
_value_texts = st.one_of(
    _json_values.map(lambda v: json.dumps(v)),
    st.integers(4_000, 100_000).map(lambda n: "9" * n),
    st.builds(_nested, st.sampled_from(["[", '{"a":', '[{"a":']), st.integers(90, 10_000), st.booleans()),
    st.sampled_from(["NaN", "-Infinity", "1e999", '"\\ud800"', "-0", '"' + "\\u0000" * 3 + '"']),
)


def _call_text(name: str, arguments: list[tuple[str, str]], encoded: bool) -> str:
    body = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in arguments) + "}"
    return f'{{"name": {json.dumps(name)}, "arguments": {json.dumps(body) if encoded else body}}}'


_TYPED = {
    "string": st.text(max_size=12) | st.sampled_from(["#W0000000", "credit_card_0000000", "2024-05-15", "1 + 2"]),
    "integer": st.integers() | st.integers(-(10 ** 4299), 10 ** 4299),
    "number": st.floats() | st.integers(),
    "boolean": st.booleans(),
    "object": st.dictionaries(st.text(max_size=6), _scalars, max_size=3),
}


def _typed_value(spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value of the type a schema asks for (its enum's values among them), so that the call
    passes the checks and runs the tool."""
    kind = spec.get("type", "string")
    if kind == "array":
        return st.lists(_typed_value(spec.get("items", {})), max_size=3)
    values = _TYPED.get(kind, _scalars)
    return st.sampled_from(spec["enum"]) | values if "enum" in spec else values


def _typed_call(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    properties = schema["function"]["parameters"]["properties"]
    arguments = st.fixed_dictionaries({}, optional={name: _typed_value(spec) for name, spec in properties.items()})
    return arguments.map(lambda args: json.dumps({"name": schema["function"]["name"], "arguments": args}))


def _actions(env: Any) -> st.SearchStrategy[str]:
    argument_names = sorted({name for schema in env.tool_schemas
                             for name in schema["function"]["parameters"]["properties"]})
    typed = st.sampled_from(env.tool_schemas).flatmap(_typed_call)
    calls = typed | st.builds(
        _call_text,
        st.sampled_from(env.tool_names + ["nope", "", "Finish", "respond"]),
        st.lists(st.tuples(st.sampled_from(argument_names) | st.text(max_size=6), _value_texts), max_size=4),
        st.booleans(),
    )
    wrapped = st.builds(lambda call, wrapper: wrapper.replace("CALL", call), calls, st.sampled_from(
        ["CALL", "<tool_call>CALL</tool_call>", "Action: CALL", "Sure, I will do that. CALL Done.", "CALL}}",
         "{{CALL"]))
    huge = st.builds(lambda unit, size: unit * (size // len(unit)), st.sampled_from(
        ["{", "[", '{"', '{"a":', '{"a":[', "x", '"', "\\", "9", "<tool_call>", "Action: {"]),
        st.sampled_from([70_000, MEGABYTE]))
    code = st.builds(lambda body: f"```python\n{body}\n```", st.sampled_from(
        ["print(1)", "print(calculate('1 + 1'))", "raise SystemExit", "x = " + "[" * 5000]))
    return st.one_of(wrapped, wrapped, wrapped, huge, st.text(max_size=200), code)


ENVS = [pytest.param(env_id, "strict", id=env_id) for env_id in ENV_IDS.values()] + [
    pytest.param(ENV_IDS[domain], "upstream", id=f"{ENV_IDS[domain]}-upstream") for domain in ("retail", "airline")]


@pytest.mark.parametrize("env_id, tool_mode", ENVS)
def test_fuzzed_actions_never_raise(env_id: str, tool_mode: str) -> None:
    env = gym.make(env_id, max_turns=1_000_000, tool_mode=tool_mode).unwrapped
    limit = env.action_space.max_length

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(action=_actions(env), seed=st.integers(0, 1000))
    def step_once(action: str, seed: int) -> None:
        env.reset(seed=seed)
        observation, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(observation)
        observation.encode("utf-8")  # valid Unicode: what a tokenizer or a UTF-8 file takes
        assert reward in (0.0, 1.0) and isinstance(terminated, bool) and isinstance(truncated, bool)
        if len(action) > limit:
            assert "over this environment's limit" in observation and "invalid_action" in info

    try:
        step_once()
    finally:
        env.close()


@pytest.mark.parametrize("env_id, tool_mode", ENVS[-2:] + [pytest.param(ENV_IDS["airline"], "strict", id="airline")])
def test_fuzzed_turns_in_a_conversation_never_raise(env_id: str, tool_mode: str) -> None:
    """Both sides of a simulated-user conversation, whatever they say: text or not, over the limit
    or not. A message is refused for its length only when its own text is over the limit."""
    env = SimulatedUser(gym.make(env_id, max_turns=1_000_000, tool_mode=tool_mode, max_action_length=300).unwrapped)
    limit = env.action_space.max_length
    turns = _actions(env.unwrapped) | st.sampled_from([None, 5, b"bytes", ["x"], {"name": "respond"}, STOP])

    @settings(max_examples=max(FUZZ_EXAMPLES // 3, 10), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(said=st.lists(turns, min_size=1, max_size=6), seed=st.integers(0, 1000))
    def converse(said: list[Any], seed: int) -> None:
        env.reset(seed=seed)
        for action in said:
            speaker = env._speaker
            observation, reward, terminated, truncated, info = env.step(action)
            assert env.observation_space.contains(observation) and reward in (0.0, 1.0)
            assert info["speaker"] in ("user", "agent")
            observation.encode("utf-8")
            if speaker == "agent" and isinstance(action, str) and len(action) <= limit:
                assert "over this environment's limit" not in observation
            if terminated or truncated:
                break

    try:
        converse()
    finally:
        env.close()


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _hostile_objects() -> list[Any]:
    """Actions that are not text, and that break what shows them: ``repr`` raises on each."""
    circular: list[Any] = []
    circular.append(circular)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    return [10 ** 5000, deep, _Unprintable(), ToolCall("respond", {"content": circular}),
            ToolCall("respond", {"content": 10 ** 5000})]


@pytest.mark.parametrize("env_id", [*ENV_IDS.values(), CHALLENGER_ID])
def test_an_action_that_is_not_text_is_refused_however_it_breaks_repr(env_id: str) -> None:
    env = gym.make(env_id, **({"domain": "calculation"} if env_id == CHALLENGER_ID else {}))
    for action in _hostile_objects():
        env.reset(seed=0)
        observation, reward, _, _, info = env.step(action)
        assert env.observation_space.contains(observation) and reward == 0.0
        if env_id != CHALLENGER_ID:
            assert observation.startswith("Error: an action must be text") and "invalid_action" in info
    env.close()


def test_a_conversation_refuses_an_agents_hostile_object_and_shows_a_users_shortened():
    env = SimulatedUser(gym.make(ENV_IDS["retail"]))
    for action in _hostile_objects():
        env.reset(seed=0)
        said = env.step(action)[0]
        assert env.observation_space.contains(said) and len(said) < 100
        observation, _, _, _, info = env.step(action)
        assert observation.startswith("Error: an action must be text") and info["speaker"] == "agent"
    env.close()


@pytest.mark.parametrize("text", [
    "{" * MEGABYTE, '{"a":' * (MEGABYTE // 5), "[" * MEGABYTE, '{"' * (MEGABYTE // 2),
    '{"name": "f", "arguments": {"x": ' + "9" * MEGABYTE + "}}",
    '{"name": "f", "arguments": {"x": "' + "x" * MEGABYTE,
], ids=["braces", "nested-objects", "brackets", "open-keys", "megadigit-int", "unterminated-string"])
def test_megabyte_texts_parse_to_an_error_without_a_size_limit(text: str) -> None:
    action = parse_action(text)
    assert isinstance(action, Malformed) and action.message.startswith("Error:")


@pytest.mark.parametrize("env_id", ENV_IDS.values())
def test_a_lone_surrogate_the_agent_wrote_comes_back_as_its_escape(env_id: str) -> None:
    """Python's "\\ud800" makes a lone surrogate, which the sandbox's error message carries back."""
    env = gym.make(env_id)
    env.reset(seed=0)
    observation = env.step('<execute>raise ValueError("\\ud800")</execute>')[0]
    assert "ValueError: \\ud800" in observation and observation.encode("utf-8")
    env.close()


def test_any_text_passes_through_shared_memory_and_nothing_longer_is_written():
    """The longest text (in 4-byte characters) fills its slot and no more: the next slot keeps its own."""
    space = AnyText(max_length=8)
    memory = create_shared_memory(space, n=3)
    for index, text in [(1, "a\ud800b"), (2, "ok"), (0, "\U0001F600" * 8), (1, "\U0001F600" * 8)]:
        write_to_shared_memory(space, index, text, memory)
    with pytest.raises(ValueError, match="not in AnyText"):
        write_to_shared_memory(space, 2, "x" * 9, memory)
    batch = read_from_shared_memory(space, memory, n=3)
    assert list(batch) == ["\U0001F600" * 8, "\U0001F600" * 8, "ok"] and batch[-1] == "ok"
    for outside in (3, -4):
        with pytest.raises(IndexError):
            batch[outside]


@pytest.mark.parametrize("limit", [1, 5, 19, 20, 64])
def test_a_text_past_the_space_is_cut_to_it_with_a_note_where_the_note_fits(limit: int) -> None:
    space = AnyText(limit)
    assert space.fit("y" * limit) == "y" * limit
    cut = space.fit("y" * (limit + 1))
    assert space.contains(cut) and len(cut) == limit
    assert cut.endswith("\n[output truncated]") == (limit > len("\n[output truncated]"))


def test_an_instruction_past_the_observation_space_is_cut_at_reset() -> None:
    env = gym.make(ENV_IDS["calculation"]).unwrapped
    task = env.tasks[0]
    long = dataclasses.replace(task, instruction=task.instruction + " " + "\U0001F600" * 70000)
    observation, _ = env.reset(options={"task": long})
    assert env.observation_space.contains(observation) and observation.endswith("[output truncated]")
    assert observation.startswith(task.instruction)



def test_a_lone_surrogate_comes_back_from_shared_memory_as_itself():
    """A lone surrogate a tool said reaches the agent through shared memory as itself, not as U+FFFD."""
    space = AnyText(max_length=8)
    memory = create_shared_memory(space, n=2)
    write_to_shared_memory(space, 0, "a\ud800b", memory)
    write_to_shared_memory(space, 1, "\udfff", memory)
    assert list(read_from_shared_memory(space, memory, n=2)) == ["a\ud800b", "\udfff"]
