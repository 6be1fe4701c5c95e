"""Parsing the agent's text into one action.

Accepted, whichever comes first in the text:
- a JSON tool call ``{"name": …, "arguments": {…}}`` inside ``<tool_call>…</tool_call>``;
- a code action: a fenced ```` ```python ```` block or ``<execute>…</execute>`` (CodeAct style);
- a JSON tool call after ``Action:``;
- a bare JSON tool call.

So a tag or ``Action:`` quoted inside a bare call's strings (``{"name": "respond", "arguments":
{"content": "use <execute> tags"}}``) is text, not a marker. With none of the markers, the text's first
JSON object is the call.

``arguments`` may also be a JSON-encoded string (the OpenAI wire format). Anything else parses to a
:class:`Malformed` action whose message tells the agent what was expected.

The text is the agent's and may be hostile, so parsing never raises and takes time linear in the
text. An action longer than the env's limit is refused unread. JSON is read by a small scanner of
our own rather than ``json``: the standard decoder recurses (a thousand nested brackets raise
``RecursionError``), converts integers past Python's 4,300-digit limit by raising ``ValueError``,
and builds each error message by scanning back to the start of the text, so that trying every
``{`` of a long text takes time quadratic in its length.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from dataclasses import dataclass
from typing import Any

from envs.cat import ToolCall

FORMAT_HINT = ('Write one tool call as JSON, e.g. {"name": "finish", "arguments": {"answer": "..."}}, '
               "or Python code in a ```python block.")

MAX_DEPTH = 100
"""Deepest nesting of JSON arrays and objects read; deeper is an error (no tool takes such data)."""
MAX_INT_DIGITS = 4300
"""Longest integer read: Python's own limit for converting text to ``int`` (``sys.int_info``)."""

_TOOL_CALL_TAG = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)
_CODE_FENCE = re.compile(r"```(?:python|py)\s*\n(.*?)(?:```|$)", re.S)
_EXECUTE_TAG = re.compile(r"<execute>(.*?)(?:</execute>|$)", re.S)
_ACTION_PREFIX = re.compile(r"\bAction:\s*", re.I)  # a word of its own: not the end of "transaction:"

_SPACE = re.compile(r"[ \t\n\r]*")
# A whole JSON string, its loop unrolled so that a failed match backtracks in linear time.
_STRING = re.compile(r'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"')
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_OBJECT_START = re.compile(r'\{[ \t\n\r]*(?:\}|' + _STRING.pattern + r'[ \t\n\r]*:)')
_CONSTANTS = (("true", True), ("false", False), ("null", None),
              ("NaN", math.nan), ("Infinity", math.inf), ("-Infinity", -math.inf))


@dataclass(frozen=True)
class CodeAction:
    source: str


@dataclass(frozen=True)
class Malformed:
    message: str


Action = ToolCall | CodeAction | Malformed


@dataclass
class _Open:
    """An array or object being read: where it starts, what it holds so far, and (objects) the key
    whose value comes next."""

    start: int
    value: dict[str, Any] | list[Any]
    key: str = ""


@dataclass(frozen=True)
class _Read:
    """The outcome of reading one JSON value: ``end`` is where it stopped (just past the value, or
    at the problem). A failed read still reports the earliest-starting object it completed inside,
    since reading from that object's own ``{`` would have found it."""

    ok: bool
    value: Any
    end: int
    problem: str = ""
    inner: dict[str, Any] | None = None


def _scalar(text: str, pos: int) -> tuple[Any, int] | str:
    """The string, number or constant at ``pos`` and where it ends, or what is wrong there."""
    if text[pos] == '"':
        match = _STRING.match(text, pos)
        if match is None:
            return "a string that is unterminated or holds a bad escape or control character"
        return json.decoder.scanstring(text, pos + 1)
    match = _NUMBER.match(text, pos)
    if match:
        integer, fraction, exponent = match.groups()
        if fraction or exponent:
            return float(match.group()), match.end()
        if len(integer.lstrip("-")) > MAX_INT_DIGITS:
            return f"an integer of {len(integer.lstrip('-')):,} digits (at most {MAX_INT_DIGITS:,} are read)"
        return int(integer), match.end()
    for word, value in _CONSTANTS:
        if text.startswith(word, pos):
            return value, pos + len(word)
    return "no JSON value"


def _read(text: str, pos: int) -> _Read:
    """Read the JSON value at ``pos`` (after any whitespace), iteratively: no recursion, each
    character looked at once."""
    stack: list[_Open] = []
    inner: tuple[int, dict[str, Any]] | None = None
    expect = "value"  # value, value_or_close, key, key_or_close, colon, comma_or_close

    def fail(at: int, problem: str) -> _Read:
        return _Read(False, None, at, problem, inner[1] if inner else None)

    while True:
        pos = _SPACE.match(text, pos).end()
        if pos == len(text):
            return fail(pos, "the text ends inside it" if stack else "no JSON value")
        char = text[pos]
        closing = stack and char == ("}" if isinstance(stack[-1].value, dict) else "]")
        if closing and expect in ("value_or_close", "key_or_close", "comma_or_close"):
            done = stack.pop()
            pos += 1
            if not stack:
                return _Read(True, done.value, pos)
            if isinstance(done.value, dict) and (inner is None or done.start < inner[0]):
                inner = (done.start, done.value)
            value: Any = done.value
        elif expect in ("value", "value_or_close") and char in "{[":
            if len(stack) == MAX_DEPTH:
                return fail(pos, f"nesting deeper than {MAX_DEPTH} levels")
            stack.append(_Open(pos, {} if char == "{" else []))
            expect = "key_or_close" if char == "{" else "value_or_close"
            pos += 1
            continue
        elif expect in ("key", "key_or_close"):
            if char != '"':
                return fail(pos, "expecting a property name in double quotes")
            read = _scalar(text, pos)
            if isinstance(read, str):
                return fail(pos, read)
            stack[-1].key, pos = read
            expect = "colon"
            continue
        elif expect == "colon":
            if char != ":":
                return fail(pos, "expecting ':' after a property name")
            expect = "value"
            pos += 1
            continue
        elif expect == "comma_or_close":
            if char != ",":
                return fail(pos, "expecting ',' or the end of the " +
                            ("object" if isinstance(stack[-1].value, dict) else "array"))
            expect = "key" if isinstance(stack[-1].value, dict) else "value"
            pos += 1
            continue
        else:
            read = _scalar(text, pos)
            if isinstance(read, str):
                return fail(pos, read)
            value, pos = read
            if not stack:
                return _Read(True, value, pos)
        top = stack[-1]
        if isinstance(top.value, dict):
            top.value[top.key] = value
        else:
            top.value.append(value)
        expect = "comma_or_close"


def _column(text: str, pos: int) -> int:
    return pos - text.rfind("\n", 0, pos)


def _first_json_object(text: str) -> tuple[Any, str | None]:
    """The first JSON object in ``text``, or why there is none.

    Candidates are the ``{`` that could open an object (``{}`` or ``{"key":``, found by one regular
    expression). A failed read resumes the search where it failed: the ``{`` it passed on the way
    opened objects that fail at the same place (or completed, and then the earliest of them is the
    answer), or lay inside its strings, which are not candidates. So no character is read twice.
    """
    furthest: _Read | None = None
    candidate = _OBJECT_START.search(text)
    while candidate:
        read = _read(text, candidate.start())
        if read.ok:
            return read.value, None
        if read.inner is not None:
            return read.inner, None
        if furthest is None or read.end > furthest.end:
            furthest = read
        candidate = _OBJECT_START.search(text, read.end)
    if furthest is None:
        brace = text.find("{")
        if brace == -1:
            return None, "no JSON object found"
        furthest = _read(text, brace)
    return None, f"invalid JSON ({furthest.problem} at column {_column(text, furthest.end)})"


def read_json(text: str) -> tuple[Any, str | None]:
    """The one JSON value that ``text`` holds (whitespace around it allowed), or why it is not one; as
    hostile-proof as the rest of this module (``json.loads`` is not: see above)."""
    read = _read(text, 0)
    if read.ok and _SPACE.match(text, read.end).end() != len(text):
        return None, f"extra text after the JSON value at column {_column(text, read.end)}"
    if not read.ok:
        return None, f"{read.problem} at column {_column(text, read.end)}"
    return read.value, None


def _call_before(text: str, end: int) -> Action | None:
    """The first complete JSON object starting before ``end`` that names a tool, as its action; it may
    read past ``end`` (a marker there then lies inside one of its strings). Each character is read once,
    as in :func:`_first_json_object`."""
    candidate = _OBJECT_START.search(text, 0, end)
    while candidate:
        read = _read(text, candidate.start())
        if read.ok and isinstance(read.value, dict) and isinstance(read.value.get("name"), str):
            return _tool_call(text[candidate.start():read.end])
        candidate = _OBJECT_START.search(text, max(read.end, candidate.start() + 1), end)
    return None


def _tool_call(text: str) -> Action:
    value, error = _first_json_object(text)
    if error:
        return Malformed(f"Error: could not parse a tool call: {error}. {FORMAT_HINT}")
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return Malformed(f'Error: a tool call needs a string "name". {FORMAT_HINT}')
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        arguments, error = read_json(arguments) if arguments.strip() else ({}, None)
        if error:
            return Malformed(f'Error: "arguments" of {value["name"]} is a string that is not JSON ({error}). '
                             f"{FORMAT_HINT}")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return Malformed(f'Error: "arguments" of {value["name"]} must be a JSON object. {FORMAT_HINT}')
    return ToolCall(value["name"], arguments)


def shown(action: Any) -> str:
    """An action that is not text, as a transcript shows it: its ``repr``, shortened, or its type where even
    that fails (an integer past Python's digit limit, a ``__repr__`` that raises)."""
    try:
        return reprlib.repr(action)
    except Exception:  # whatever a hostile object's __repr__ raises
        return f"<{type(action).__name__}>"


def parse_action(text: str, max_length: int | None = None) -> Action:
    """The action in one agent turn; a text over ``max_length`` characters is refused unread."""
    if not isinstance(text, str):
        return Malformed(f"Error: an action must be text, got {type(text).__name__}. {FORMAT_HINT}")
    if max_length is not None and len(text) > max_length:
        return Malformed(f"Error: the action is {len(text):,} characters long, over this environment's limit "
                         f"of {max_length:,}. Write one shorter action.")
    markers = [match for pattern in (_TOOL_CALL_TAG, _CODE_FENCE, _EXECUTE_TAG, _ACTION_PREFIX)
               if (match := pattern.search(text))]
    if markers:
        first = min(markers, key=lambda match: match.start())
        if call := _call_before(text, first.start()):
            return call
        if first.re is _ACTION_PREFIX:
            return _tool_call(text[first.end():])
        if first.re is _TOOL_CALL_TAG:
            return _tool_call(first.group(1))
        source = first.group(1).strip()
        return CodeAction(source) if source else Malformed(f"Error: the code block is empty. {FORMAT_HINT}")
    if not text.strip():
        return Malformed(f"Error: the action is empty. {FORMAT_HINT}")
    return _tool_call(text)
