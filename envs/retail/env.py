"""The retail environment: an online shop's customer service, with tau-bench's tools and data shape."""

from __future__ import annotations

from typing import ClassVar

from envs.retail import world as shop
from envs.retail.tools import TOOLS, UPSTREAM_PACKAGE
from envs.conversation import ConversationEnv
from envs.tools import Toolset

POLICY = """\
You are a customer service agent of an online shop. You can look up users, orders and products, and
change orders for the customer: cancel a pending order, change a pending order's address, items or
payment method, return or exchange items of a delivered order, and update a user's default address.
Act only on the customer's own orders, check an order's status before changing it, and use the
exact ids the tools give (order ids start with '#'). Tell the customer the outcome, with amounts,
through `respond` or in your final answer, then call `finish`."""


class RetailEnv(ConversationEnv):
    """Customer service for an online shop (tau-bench's retail domain).

    ## Description
    The agent serves one customer request (the task's instruction) with tau-bench's 16 retail tools:
    look-ups (users by email or name and zip, orders, products), writes (cancel, modify address,
    items or payment of pending orders; return or exchange delivered items; a user's address), and
    `think`, `calculate`, `transfer_to_human_agents`. `respond` speaks to the user; `finish` ends.

    ## Action Space
    Text: one JSON tool call `{"name": ..., "arguments": {...}}` (bare, in `<tool_call>` tags or after
    `Action:`) or a ```python block calling the tools as functions.

    ## Observation Space
    Text: the instruction after `reset`, then each tool's output (tau-bench's strings and errors).

    ## Rewards
    0 until the episode ends, then 1 if the task's verifier accepts the final database and what the
    agent said (scripted tasks: the database hash after the example solution, and the required
    amounts or facts in the answer), else 0.

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

    domain: ClassVar[str] = "retail"
    toolset: ClassVar[Toolset] = Toolset.of(TOOLS, upstream=UPSTREAM_PACKAGE)
    policy: ClassVar[str] = POLICY
    world_module = shop
