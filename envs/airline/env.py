"""The airline environment: an airline's reservation desk, with tau-bench's tools and data shape."""

from __future__ import annotations

from typing import ClassVar

from envs.airline import world as fleet
from envs.airline.tools import TOOLS, UPSTREAM_PACKAGE
from envs.conversation import ConversationEnv
from envs.tools import Toolset

POLICY = """\
You are a reservation agent of an airline. You can look up users, reservations, airports and
flights, and for the user: book, cancel or change reservations (flights, cabin, passengers,
checked bags) and send certificates. Today is 2024-05-15. Use the exact ids the tools give, charge
only payment methods in the user's profile, and tell the user the outcome, with amounts, through
`respond` or in your final answer, then call `finish`."""


class AirlineEnv(ConversationEnv):
    """An airline's reservation desk (tau-bench's airline domain).

    ## Description
    The agent serves one traveller's request (the task's instruction) with tau-bench's 14 airline
    tools: look-ups (users, reservations, airports, direct and one-stop flights), writes (book,
    cancel, change flights, passengers or bags, send a certificate), and `think`, `calculate`,
    `transfer_to_human_agents`. `respond` speaks to the user; `finish` ends.

    ## Action Space
    Text: one JSON tool call `{"name": ..., "arguments": {...}}` (bare, in `<tool_call>` tags or after
    `Action:`) or a ```python block calling the tools as functions.

    ## Observation Space
    Text: the instruction after `reset`, then each tool's output (tau-bench's strings and errors).

    ## Rewards
    0 until the episode ends, then 1 if the task's verifier accepts the final database and what the
    agent said (scripted tasks: the database hash after the example solution, and the required
    facts in the answer), else 0.

    ## Starting State
    A fresh copy-on-write view of the task's world: generated from `{"seed", "users"}` or loaded
    from tau-bench's JSON files with `{"data_dir": path}`.

    ## Episode End
    Terminates on `finish` or `transfer_to_human_agents`; truncates after `max_turns` actions.

    ## Arguments
    See :class:`envs.base.ToolEnv`: `tasks`, `max_turns`, `sandbox`, `render_mode`, `max_action_length`, and
    `tool_mode`: `"strict"` (the default, for training) or `"upstream"` (tau-bench's own handling of
    malformed and failing calls, for scores comparable with upstream's).
    """

    domain: ClassVar[str] = "airline"
    toolset: ClassVar[Toolset] = Toolset.of(TOOLS, upstream=UPSTREAM_PACKAGE)
    policy: ClassVar[str] = POLICY
    world_module = fleet
