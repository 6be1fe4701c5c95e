"""What the policy sees: the system prompt, and an episode as token ids that only ever grow.

The system prompt is the domain's policy plus its tools. Chat templates that take ``tools=`` (Qwen,
Llama 3.1, Hermes, …) render the tools themselves, in the format the model was trained on. Templates
that ignore ``tools=`` (SmolLM2's) get the **fallback**: the tools' JSON schemas written into the
system prompt, with one example of the JSON call format and one of ``finish``, which
:func:`envs.actions.parse_action` reads. Which case applies is detected, not configured: the
template is rendered with and without a probe tool and the two texts compared.

Rollouts never re-tokenize a chat (a sampled token sequence need not be the tokenizer's own
tokenization of its text, so re-tokenizing would change what the policy was trained on). Instead
:class:`ChatFormat` renders, through ``apply_chat_template``, only the text a turn adds, and
tokenizes that piece alone: the tokens that close the assistant's turn, then the observation's turn
and the next generation prompt. Each piece starts at a special token in common templates, so the
ids agree with the template's own rendering while the policy's tokens stay exactly as sampled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

Message = dict[str, str]
ToolSchema = dict[str, Any]

_PROBE = "PROBE-9f4c2e"
"""Stand-in content for rendering a template around a message whose text we do not know yet."""

_PROBE_TOOL: ToolSchema = {"type": "function", "function": {
    "name": "probe_tool", "description": "Probe whether the chat template renders tools.",
    "parameters": {"type": "object", "properties": {"x": {"type": "string", "description": "x"}}, "required": ["x"]}}}

_EXAMPLE_VALUES: dict[str, Any] = {"string": "...", "integer": 1, "number": 1.5, "boolean": True,
                                   "array": [], "object": {}}


def render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None,
           add_generation_prompt: bool = False) -> str:
    """The chat template's text for ``messages`` (no tokenizing: see the module docstring)."""
    return tokenizer.apply_chat_template(list(messages), tools=list(tools) if tools else None, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def template_supports_tools(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the chat template shows ``tools=`` to the model (it changes the rendered text)."""
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    try:
        with_tools = render(tokenizer, messages, [_PROBE_TOOL], add_generation_prompt=True)
    except Exception:  # a template may reject tools outright; then it cannot show them either
        return False
    return with_tools != render(tokenizer, messages, add_generation_prompt=True) and "probe_tool" in with_tools


def example_call(schema: ToolSchema) -> str:
    """A JSON call of ``schema``'s tool with placeholder values for its required arguments."""
    function = schema["function"]
    params = function.get("parameters", {})
    arguments = {name: _EXAMPLE_VALUES.get(params["properties"][name].get("type"), "...")
                 for name in params.get("required", [])}
    return json.dumps({"name": function["name"], "arguments": arguments})


def tools_in_system_prompt(tools: Sequence[ToolSchema]) -> str:
    """The fallback's tool section: each schema, then the call format by example."""
    schemas = "\n".join(json.dumps(t["function"]) for t in tools)
    finish = next((t for t in tools if t["function"]["name"] == "finish"), None)
    first = next((t for t in tools if t is not finish), finish)
    lines = ["# Tools", "", "You can call these tools (JSON schemas):", schemas, "",
             "To call a tool, reply with one JSON object and nothing else, for example:"]
    if first is not None:
        lines.append(example_call(first))
    if finish is not None:
        lines += ["When the task is done, give the answer with finish:",
                  json.dumps({"name": "finish", "arguments": {"answer": "..."}})]
    return "\n".join(lines)


@dataclass(frozen=True)
class ChatFormat:
    """How one tokenizer's chat template renders an episode, as pieces of token ids.

    Built once per tokenizer with :meth:`of`. ``turn_end_ids`` are the tokens the template puts
    after an assistant message's text (SmolLM2: ``<|im_end|>`` and a newline); ``stop_ids`` are the
    tokens that end a generated turn; ``observation_role`` is ``"tool"`` where the template renders
    that role with the observation in it, else ``"user"``.
    """

    tokenizer: PreTrainedTokenizerBase = field(repr=False)
    supports_tools: bool
    observation_role: str
    turn_end_ids: tuple[int, ...]
    stop_ids: frozenset[int]

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> "ChatFormat":
        probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                 {"role": "assistant", "content": _PROBE}]
        rendered = render(tokenizer, probe)
        tail = rendered[rendered.rindex(_PROBE) + len(_PROBE):]
        turn_end = tuple(tokenizer(tail, add_special_tokens=False)["input_ids"])
        stops = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        if turn_end and turn_end[0] in tokenizer.all_special_ids:
            stops.add(turn_end[0])
        return cls(tokenizer, template_supports_tools(tokenizer), _observation_role(tokenizer, probe), turn_end,
                   frozenset(stops))

    def system_prompt(self, policy: str, tools: Sequence[ToolSchema]) -> str:
        """The domain policy, plus the tools where the template cannot show them."""
        return policy if self.supports_tools else f"{policy}\n\n{tools_in_system_prompt(tools)}"

    def first_messages(self, policy: str, tools: Sequence[ToolSchema], instruction: str) -> list[Message]:
        return [{"role": "system", "content": self.system_prompt(policy, tools)},
                {"role": "user", "content": instruction}]

    def prompt_ids(self, messages: Sequence[Message], tools: Sequence[ToolSchema]) -> list[int]:
        """The first prompt (system and instruction, then the generation prompt) as token ids."""
        text = render(self.tokenizer, messages, tools if self.supports_tools else None, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def close_turn_ids(self, generated: Sequence[int]) -> list[int]:
        """What closes an assistant turn after ``generated``: the turn-end tokens the policy did not write.

        A turn that stopped on the template's end-of-turn token already holds it; a turn cut at the
        token cap (or stopped on another stop token) gets the whole closing sequence.
        """
        if generated and self.turn_end_ids and generated[-1] == self.turn_end_ids[0]:
            return list(self.turn_end_ids[1:])
        return list(self.turn_end_ids)

    def observation_ids(self, observation: str, role: str = "tool") -> list[int]:
        """The observation's turn and the next generation prompt, as the template renders them.

        ``role`` is where the observation comes from: ``"tool"`` (a tool's output, shown in
        :attr:`observation_role`) or ``"user"`` (a message of the other party of a conversation)."""
        probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                 {"role": "assistant", "content": _PROBE}]
        before = render(self.tokenizer, probe)
        after = render(self.tokenizer, probe + [self.observation_message(observation, role)],
                       add_generation_prompt=True)
        if not after.startswith(before):
            raise ValueError("the chat template renders earlier messages differently once an observation "
                             "follows them, so a turn cannot extend the previous prompt token for token")
        return self.tokenizer(after[len(before):], add_special_tokens=False)["input_ids"]

    def observation_message(self, observation: str, role: str = "tool") -> Message:
        return {"role": self.observation_role if role == "tool" else role, "content": observation}


def _observation_role(tokenizer: PreTrainedTokenizerBase, probe: list[Message]) -> str:
    """``"tool"`` where the template renders a tool message showing its content, else ``"user"``.

    Some templates reject a tool message that answers no structured tool call, or drop its
    content; a user turn then carries the observation.
    """
    try:
        rendered = render(tokenizer, probe + [{"role": "tool", "content": _PROBE + "-obs"}],
                          add_generation_prompt=True)
    except Exception:
        return "user"
    return "tool" if _PROBE + "-obs" in rendered else "user"
