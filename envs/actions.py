"""Parsing the agent's text into one action.

Accepted, in this order of precedence:
- a JSON tool call ``{"name": …, "arguments": {…}}`` inside ``<tool_call>…</tool_call>``;
- a code action: a fenced ```` ```python ```` block or ``<execute>…</execute>`` (CodeAct style);
- a JSON tool call after ``Action:``;
- a bare JSON tool call anywhere in the text.

``arguments`` may also be a JSON-encoded string (the OpenAI wire format). Anything else parses to a
:class:`Malformed` action whose message tells the agent what was expected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from envs.cat import ToolCall

FORMAT_HINT = ('Write one tool call as JSON, e.g. {"name": "finish", "arguments": {"answer": "..."}}, '
               "or Python code in a ```python block.")

_TOOL_CALL_TAG = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)
_CODE_FENCE = re.compile(r"```(?:python|py)\s*\n(.*?)(?:```|$)", re.S)
_EXECUTE_TAG = re.compile(r"<execute>(.*?)(?:</execute>|$)", re.S)
_ACTION_PREFIX = re.compile(r"Action:\s*", re.I)


@dataclass(frozen=True)
class CodeAction:
    source: str


@dataclass(frozen=True)
class Malformed:
    message: str


Action = ToolCall | CodeAction | Malformed


def _first_json_object(text: str) -> tuple[Any, str | None]:
    """The first JSON object in ``text``, or why there is none."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    last_error = "no JSON object found"
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
            return value, None
        except json.JSONDecodeError as exc:
            last_error = f"invalid JSON ({exc.msg} at column {exc.colno})"
        start = text.find("{", start + 1)
    return None, last_error


def _tool_call(text: str) -> Action:
    value, error = _first_json_object(text)
    if error:
        return Malformed(f"Error: could not parse a tool call: {error}. {FORMAT_HINT}")
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return Malformed(f'Error: a tool call needs a string "name". {FORMAT_HINT}')
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return Malformed(f'Error: "arguments" of {value["name"]} is a string that is not JSON. {FORMAT_HINT}')
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return Malformed(f'Error: "arguments" of {value["name"]} must be a JSON object. {FORMAT_HINT}')
    return ToolCall(value["name"], arguments)


def parse_action(text: str) -> Action:
    """The action in one agent turn."""
    if not isinstance(text, str):
        return Malformed(f"Error: an action must be text, got {type(text).__name__}. {FORMAT_HINT}")
    if match := _TOOL_CALL_TAG.search(text):
        return _tool_call(match.group(1))
    for pattern in (_CODE_FENCE, _EXECUTE_TAG):
        if match := pattern.search(text):
            source = match.group(1).strip()
            return CodeAction(source) if source else Malformed(f"Error: the code block is empty. {FORMAT_HINT}")
    if match := _ACTION_PREFIX.search(text):
        return _tool_call(text[match.end():])
    if not text.strip():
        return Malformed(f"Error: the action is empty. {FORMAT_HINT}")
    return _tool_call(text)
