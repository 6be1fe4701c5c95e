"""The web-browsing environment: answer questions by reading an offline company website with a browser."""

from __future__ import annotations

from typing import Any

from envs.base import ToolEnv
from envs.state import State, make_base
from envs.tools import Toolset
from envs.web.world import build_site
from envs.web.tools import TOOLS

START_URL = "/"


class WebEnv(ToolEnv):
    """Web browsing: answer questions about a company by reading its offline website.

    ## Description

    Each world (``{"seed": s}``, optionally with ``"products"``, ``"people"`` and ``"articles"``
    counts: 88, 48 and 12 by default) is a generated website of a small electronics company: a home page, a product catalogue
    (ten products a page) with product pages (price, rating, stock, SKU, product manager,
    specifications), category pages (prices and ratings side by side), a staff directory with
    profiles (title, department, manager, email, phone extension, office), department pages and
    news articles. Pages link to each other (a person to their manager and department, a product
    to its manager, an article to its author and product), so questions may take several hops:
    "who heads the department that X's manager works in?", "which laptop is the cheapest?", "on
    which catalogue page is Y?". Tasks are Code-as-Tasks written by a challenger: the instruction
    says what to find, and a verifier checks the final answer (and, for some tasks, the page the
    browser ended on).

    ## Action Space

    A text: one tool call, as JSON ``{"name": "click_url", "arguments": {"url": "/staff"}}`` (bare,
    in ``<tool_call>`` tags or after ``Action:``), or Python code calling the tools as functions.
    The tools:

    - ``view()``: the lines of the current page in the window (10 lines at a time);
    - ``click_url(url)``: open a page of the site, at its top (links read ``[text](/url)``);
    - ``scroll_down()`` / ``scroll_up()``: move the window by 10 lines;
    - ``go_to_previous_page()``: back to the previous page, where it was left;
    - ``finish(answer)``: end the episode with the final answer.

    ## Observation Space

    Text (:class:`envs.spaces.AnyText`). After ``reset``, the task's instruction, which says that the
    browser is on the home page (``/``); after a step, the tool's output: a view of the page (its
    URL, title, which lines are shown, then the lines) or an ``Error: …`` text when the call could
    not be done (an unknown URL, scrolling past either end, no previous page), in which case the
    browser has not moved.

    ## Rewards

    0 on every step but the last; at the end of the episode, 1.0 if the task's verifier accepts the
    final state and answer, else 0.0.

    ## Starting State

    A task drawn from the pool (``options={"task_id": …}`` picks one); the browser on the home page
    ``/``, scrolled to the top, with an empty history. The pages are shared with every episode of the
    world; the browser is the episode's own.

    ## Episode End

    Terminated when the agent calls ``finish``; truncated after ``max_turns`` actions.

    ## Arguments

    - ``tasks``: a pool path (JSONL), a list of CaTs, or ``None`` for 32 tasks from the scripted
      challenger on the world of seed 0.
    - ``max_turns``: the turn limit (default 20).
    - ``sandbox``: where verifiers and code actions run: ``"local"`` (the default, the shared local
      sandbox), ``"docker"`` or a :class:`envs.sandbox.Sandbox`.
    - ``render_mode``: ``"ansi"`` gives the transcript as text.
    """

    domain = "web"
    toolset = Toolset.of(TOOLS)
    policy = (
        "You are browsing a company's website to answer a question. The browser starts on the home "
        "page (/). Use view to read the part of the page in the window, scroll_down and scroll_up to "
        "move through a long page, click_url with a link's URL (links are written [text](/url)) to "
        "open a page, and go_to_previous_page to go back. Answer only from what the pages say; when "
        "you know the answer, call finish with it, in the form the question asks for (e.g. the "
        "number alone, or a name exactly as the site writes it)."
    )

    @classmethod
    def build_world(cls, world: dict[str, Any]) -> State:
        site = build_site(int(world.get("seed", 0)), n_products=int(world.get("products", 88)),
                          n_people=int(world.get("people", 48)), n_articles=int(world.get("articles", 12)))
        return make_base({"pages": site, "browser": {"url": START_URL, "top": 0, "history": []}}, ("pages",))
