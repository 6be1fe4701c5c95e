"""The scripted challenger of the web domain: it browses its world's site with the agent's own tools
and writes Code-as-Tasks about what it read.

It works as an LLM challenger would, only exhaustively:

1. **Explore.** Starting from the home page, it opens every page it finds a link to with
   ``click_url`` and reads it to the end with ``scroll_down``, parsing only the tool outputs.
2. **Plan.** For every page it finds the cheapest way there from the home page (each link costs the
   scrolls that bring it into view, then a click): that is how a solution reaches a fact.
3. **Ask.** Question families over what it read: a fact on a page, a fact a few links away ("the
   email of the manager of X"), comparisons across a category ("the cheapest laptop"), positions in
   the paginated catalogue and directory, and counts of a list. Each draft carries its solution
   (the calls that bring the answer into view, then the answer) and candidate failures: a
   neighbour's value, the right page's other field, stopping a hop short or going one too far, a
   number off by a little, the right answer on the wrong page.
4. **Check.** Each draft's verifier is run here on the replayed solution (it must pass) and on each
   candidate failure (kept only if the replay is error-free and the verifier rejects it), so every
   task it writes passes :func:`envs.filter.filter_tasks`.

Families are drawn from in turn, so even a small pool spreads from one-call questions (a fact on the
home page) to ten-call ones (a product on the last catalogue page).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from envs.cat import MIN_FAILURES, Attempt, CodeAsTask, ToolCall
from envs.sandbox import verifier_helpers
from envs.state import State, fork
from envs.web.env import START_URL, WebEnv
from envs.web.tools import SEPARATOR, TOOLS, VIEW_LINES, click_url, scroll_down

MAX_FAILURES = 4
"""Failure cases kept per task (at least ``MIN_FAILURES``): enough variety, little filter time."""

LINK = re.compile(r"\[([^\]]+)\]\((/[^)]*)\)")
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
QUANTITY = re.compile(r"\d[\d,]*(?:\.\d+)?(?: [A-Za-z]+)?")
"""A value that is one number, maybe with a unit ("390 g", "13.3 inches"): asked for as a number."""
TITLE = re.compile(r"^Current page: \S+ \((.*)\)$")
CATEGORY_ITEM = re.compile(r"^\[(.+)\]\((/products/[^)]+)\) — \$([\d,]+\.\d\d) — rated (\d\.\d)$")

NUMBER_KEYS = frozenset({"Price", "Rating", "Reviews", "Stock", "Warranty", "Phone extension", "Joined", "Founded"})
PERSON_KEYS = ("Title", "Department", "Reports to", "Email", "Phone extension", "Office", "Joined")
PRODUCT_KEYS = ("Price", "Rating", "Reviews", "SKU", "Stock", "Warranty", "Product manager")
DEPARTMENT_KEYS = ("Head", "Location", "Phone extension")
ARTICLE_KEYS = ("Published", "Author", "Featured product")
HOME_KEYS = ("Founded", "Headquarters", "Customer support", "Support phone")
SPECS = None
"""In a chain's keys: every fact under the page's "Specifications" heading."""

CHAINS: tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None], ...] = (
    # start pages (a URL prefix, or the home page), links to follow, facts to ask at the end
    ("/", (), HOME_KEYS),
    ("/staff/", (), PERSON_KEYS),
    ("/staff/", ("Reports to",), ("Title", "Email", "Phone extension", "Office", "Joined", "Reports to")),
    ("/staff/", ("Department",), ("Head", "Location", "Phone extension")),
    ("/staff/", ("Reports to", "Department"), ("Head", "Location")),
    ("/products/", (), PRODUCT_KEYS),
    ("/products/", (), SPECS),
    ("/products/", ("Product manager",), ("Email", "Phone extension", "Office", "Reports to")),
    ("/departments/", (), DEPARTMENT_KEYS),
    ("/departments/", ("Head",), ("Email", "Phone extension", "Joined", "Office")),
    ("/news/", (), ARTICLE_KEYS),
    ("/news/", ("Author",), ("Title", "Email", "Department")),
    ("/news/", ("Featured product",), ("Price", "Rating", "SKU", "Product manager")),
)
QUESTIONS = {
    "Price": "What is the price of {s}?",
    "Rating": "What is the customer rating of {s}, out of 5?",
    "Reviews": "How many customer reviews does {s} have?",
    "Stock": "How many units of {s} are in stock?",
    "Warranty": "How many years of warranty does {s} come with?",
    "SKU": "What is the SKU of {s}?",
    "Product manager": "Who is the product manager of {s}?",
    "Title": "What is the job title of {s}?",
    "Department": "Which department does {s} work in?",
    "Reports to": "Who does {s} report to?",
    "Email": "What is the email address of {s}?",
    "Phone extension": "What is the phone extension of {s}?",
    "Office": "Which office is {s} in?",
    "Joined": "In what year did {s} join the company?",
    "Head": "Who is the head of {s}?",
    "Location": "Where is {s} located?",
    "Published": "On what date (YYYY-MM-DD) was {s} published?",
    "Author": "Who wrote {s}?",
    "Featured product": "Which product does {s} feature?",
    "Founded": "In what year was {s} founded?",
    "Headquarters": "In which city is {s} headquartered?",
    "Customer support": "What is the customer support email address of {s}?",
    "Support phone": "What is the support phone number of {s}?",
    "Noise cancelling": "Does {s} have noise cancelling (Yes or No)?",
    "Wireless": "Is {s} wireless (Yes or No)?",
    "Type": "What type of headphones is {s}?",
    "Switches": "What kind of switches does {s} use?",
    "Panel": "What panel type does {s} use?",
    "Video": "What is the best video mode of {s}?",
    "Main camera": "How many megapixels does the main camera of {s} have?",
    "Shots per charge": "How many shots per charge does {s} manage?",
}
HOPS = {
    "Reports to": "the manager of {s}",
    "Department": "the department of {s}",
    "Product manager": "the product manager of {s}",
    "Head": "the head of {s}",
    "Author": "the author of {s}",
    "Featured product": "the product featured in {s}",
}
SUBJECTS = {"/": "{t}", "/staff/": "{t}", "/products/": "the {t}", "/departments/": "the {t}",
            "/news/": "the news article “{t}”"}


# ---------------------------------------------------------------- reading the site


@dataclass(frozen=True)
class Page:
    """A page as the challenger read it through the tools."""

    url: str
    title: str
    lines: tuple[str, ...]

    def line_of(self, key: str) -> int | None:
        return next((i for i, line in enumerate(self.lines) if line.startswith(f"{key}: ")), None)

    def fact(self, key: str) -> str | None:
        """The value of a ``Key: value`` line, links read as their text."""
        line = self.line_of(key)
        return None if line is None else LINK.sub(r"\1", self.lines[line].split(": ", 1)[1])

    def target(self, key: str) -> str | None:
        """Where the link in a ``Key: value`` line goes."""
        line = self.line_of(key)
        found = None if line is None else LINK.search(self.lines[line])
        return found.group(2) if found else None

    def links(self) -> Iterator[tuple[int, str, str]]:
        for i, line in enumerate(self.lines):
            for match in LINK.finditer(line):
                yield i, match.group(1), match.group(2)

    def section(self, heading: str) -> list[int]:
        """The lines under ``## heading``, up to the next heading or the closing navigation line."""
        start = self.lines.index(f"## {heading}") + 1 if f"## {heading}" in self.lines else len(self.lines)
        end = next((i for i in range(start, len(self.lines)) if self.lines[i].startswith("## ")), len(self.lines) - 1)
        return list(range(start, end))


def _body(output: str) -> list[str]:
    return output.split(f"\n{SEPARATOR}\n", 1)[1].split("\n")


def read_page(state: State, url: str) -> Page:
    """Open ``url`` and scroll to its end, collecting its lines from the views."""
    output = click_url(state, url)
    title = TITLE.match(output.split("\n", 1)[0])
    if title is None:
        raise ValueError(f"cannot read {url}: {output[:200]}")
    lines = _body(output)
    while not (output := scroll_down(state)).startswith("Error:"):
        lines += _body(output)
    return Page(url, title.group(1), tuple(lines))


def crawl(state: State) -> dict[str, Page]:
    """Every page reachable from the home page, read through the browser tools."""
    pages: dict[str, Page] = {}
    queue = deque([START_URL])
    while queue:
        url = queue.popleft()
        if url in pages:
            continue
        pages[url] = read_page(state, url)
        queue.extend(target for _, _, target in pages[url].links() if target not in pages)
    return pages


def scrolls(line: int) -> tuple[ToolCall, ...]:
    """The scrolls that bring ``line`` into the window of a page opened at its top."""
    return (ToolCall("scroll_down"),) * (line // VIEW_LINES)


def click(url: str) -> ToolCall:
    return ToolCall("click_url", {"url": url})


def plan_routes(pages: dict[str, Page]) -> dict[str, tuple[ToolCall, ...]]:
    """The fewest calls from the home page to each page: scroll a link into view, click it."""
    routes: dict[str, tuple[ToolCall, ...]] = {}
    order = itertools.count()
    frontier: list[tuple[int, int, str, tuple[ToolCall, ...]]] = [(0, next(order), START_URL, ())]
    while frontier:
        _, _, url, actions = heapq.heappop(frontier)
        if url in routes:
            continue
        routes[url] = actions
        for line, _, target in pages[url].links():
            if target not in routes:
                step = actions + scrolls(line) + (click(target),)
                heapq.heappush(frontier, (len(step), next(order), target, step))
    return routes


@dataclass
class SiteMap:
    """What the challenger knows of a site: the pages it read and how to reach each."""

    pages: dict[str, Page]
    routes: dict[str, tuple[ToolCall, ...]]

    @property
    def company(self) -> str:
        return self.pages[START_URL].title

    def entities(self, prefix: str) -> list[str]:
        """The pages of one kind (``/staff/`` for people…), in URL order; ``/`` is the home page."""
        if prefix == START_URL:
            return [START_URL]
        return sorted(u for u in self.pages if u.startswith(prefix) and len(u) > len(prefix))

    def neighbours(self, url: str, prefix: str) -> list[str]:
        """The pages of the same kind just before and after ``url``: easy to mistake for it."""
        same = self.entities(prefix)
        i = same.index(url)
        return [same[j] for j in (i + 1, i - 1, i + 2) if 0 <= j < len(same)]

    def reach(self, url: str, line: int) -> tuple[ToolCall, ...]:
        """Calls that show ``line`` of ``url`` in the window (on the home page: just look)."""
        return self.routes[url] + scrolls(line) or (ToolCall("view"),)

    def follow(self, url: str, hops: Iterable[str]) -> tuple[tuple[ToolCall, ...], str] | None:
        """Calls from the top of ``url`` along the links of the ``hops`` facts, and where they end."""
        actions: tuple[ToolCall, ...] = ()
        for hop in hops:
            page = self.pages[url]
            target, line = page.target(hop), page.line_of(hop)
            if target is None or line is None:
                return None
            actions += scrolls(line) + (click(target),)
            url = target
        return actions, url

    def attempt(self, url: str, hops: tuple[str, ...], key: str) -> Attempt | None:
        """Go to ``url``, follow ``hops``, show ``key`` and answer with its value (None if that
        path does not exist)."""
        followed = self.follow(url, hops)
        if followed is None:
            return None
        actions, end = followed
        page = self.pages[end]
        line, value = page.line_of(key), page.fact(key)
        if line is None or value is None:
            return None
        actions = self.routes[url] + actions + scrolls(line) or (ToolCall("view"),)
        return Attempt(actions, answer_of(key, value))


def is_number(key: str, value: str) -> bool:
    return key in NUMBER_KEYS or QUANTITY.fullmatch(value) is not None


def answer_of(key: str, value: str) -> str:
    """The answer a page's value gives: its number when the fact is a number, else the text."""
    if is_number(key, value):
        found = NUMBER.search(value)
        return found.group(0) if found else value
    return value


def near_misses(number: str) -> list[str]:
    """Numbers a careless reader might give: one unit off in the last digit, or rounded."""
    decimals = len(number.split(".")[1]) if "." in number else 0
    value, step = float(number.replace(",", "")), 10 ** -decimals
    style = f"{',' if ',' in number else ''}.{decimals}f"
    misses = [format(value + step, style)] + ([format(value - step, style)] if value >= step else [])
    if decimals and round(value) != value:
        misses.append(str(round(value)))
    return misses


# ---------------------------------------------------------------- drafts


@dataclass(frozen=True)
class Draft:
    """A task before checking: the question, how to answer it, and tempting wrong ways."""

    family: str
    question: str
    number: bool
    solution: Attempt
    wrong: tuple[tuple[Attempt | None, ...], ...]
    """Candidate failures in groups of one kind each; the builder takes from each group in turn."""
    end_url: str | None = None
    """The page the browser must end on, for tasks that say to leave it there."""


def subject(sitemap: SiteMap, prefix: str, url: str, hops: tuple[str, ...]) -> str:
    phrase = SUBJECTS[prefix].format(t=sitemap.pages[url].title)
    for hop in hops:
        phrase = HOPS[hop].format(s=phrase)
    return phrase


def fact_drafts(sitemap: SiteMap, prefix: str, hops: tuple[str, ...], keys: tuple[str, ...] | None) -> Iterator[Draft]:
    """A fact on a page, or on the page at the end of a few links from it."""
    family = "fact:" + (">".join(hops) or "page") + (":specs" if keys is SPECS else "")
    for url in sitemap.entities(prefix):
        followed = sitemap.follow(url, hops)
        if followed is None:
            continue
        end = sitemap.pages[followed[1]]
        asked = keys if keys is not SPECS else tuple(end.lines[i].split(": ")[0] for i in end.section("Specifications"))
        for key in asked:
            solution, value = sitemap.attempt(url, hops, key), end.fact(key)
            if solution is None or value is None:
                continue
            number = is_number(key, value)
            facts = {k: end.fact(k) for k in (*PERSON_KEYS, *PRODUCT_KEYS, *DEPARTMENT_KEYS, *ARTICLE_KEYS, *HOME_KEYS)}
            others = [k for k, v in facts.items() if k != key and v is not None and is_number(k, v) == number]
            wrong = (
                tuple(sitemap.attempt(n, hops, key) for n in sitemap.neighbours(url, prefix)),
                (sitemap.attempt(url, hops[:-1], key) if hops else None,
                 sitemap.attempt(url, hops + hops[-1:], key) if hops else None,
                 sitemap.attempt(url, hops + ("Reports to",), key)),
                tuple(sitemap.attempt(url, hops, other) for other in others[:3]),
                tuple(Attempt(solution.actions, miss) for miss in near_misses(solution.answer)) if number else (),
            )
            question = QUESTIONS.get(key, "What is the {k} of {s}?").format(
                s=subject(sitemap, prefix, url, hops), k=key.lower())
            yield Draft(family, question, number, solution, wrong)


@dataclass(frozen=True)
class Item:
    line: int
    name: str
    url: str
    price: float
    rating: float


def category_items(page: Page) -> list[Item]:
    items = []
    for i, line in enumerate(page.lines):
        found = CATEGORY_ITEM.match(line)
        if found:
            items.append(Item(i, found.group(1), found.group(2), float(found.group(3).replace(",", "")),
                              float(found.group(4))))
    return items


RANKINGS: tuple[tuple[str, Callable[[Item], float]], ...] = (
    ("cheapest", lambda it: it.price),
    ("most expensive", lambda it: -it.price),
    ("highest-rated", lambda it: -it.rating),
    ("lowest-rated", lambda it: it.rating),
)


def comparison_drafts(sitemap: SiteMap, rng: random.Random) -> Iterator[Draft]:
    """Questions that compare every product of a category: the whole list must be read."""
    for url in sitemap.entities("/categories/"):
        page = sitemap.pages[url]
        items = category_items(page)
        if len(items) < 4:
            continue
        category = page.title
        see_all = sitemap.reach(url, items[-1].line)
        first_screen = [it for it in items if it.line < VIEW_LINES]
        for label, rank in RANKINGS:
            best, second, *_, worst = sorted(items, key=rank)
            if rank(best) == rank(second):
                continue  # a tie has no single answer
            screen_best = min(first_screen, key=rank)
            yield Draft("compare", f"Which product in the {category} category is the {label}?", False,
                        Attempt(see_all, best.name), (
                            (Attempt(see_all, second.name), Attempt(see_all, worst.name)),
                            (Attempt(sitemap.reach(url, 0), screen_best.name),),
                            (Attempt(see_all, items[0].name),)))
            open_best = see_all + (click(best.url),)
            product = sitemap.pages[best.url]
            sku = product.fact("SKU") or ""
            yield Draft("compare:open",
                        f"Open the product page of the {label} product in the {category} category and leave the "
                        "browser on it. What is that product's SKU?", False, Attempt(open_best, sku), (
                            (Attempt(open_best + (ToolCall("go_to_previous_page"),), sku),),
                            (Attempt(see_all + (click(second.url),), sitemap.pages[second.url].fact("SKU") or ""),),
                            (Attempt(open_best, answer_of("Price", product.fact("Price") or "")),
                             Attempt(see_all, sku))),
                        end_url=best.url)
        yield from _threshold_draft(sitemap, url, items, see_all, rng)
        prices = sorted(it.price for it in items)
        spread = f"{prices[-1] - prices[0]:,.2f}"
        yield Draft("compare:spread", f"How much more does the most expensive product in the {category} category "
                    "cost than the cheapest one?", True, Attempt(see_all, spread), (
                        (Attempt(see_all, f"{prices[-1]:,.2f}"), Attempt(see_all, f"{prices[0]:,.2f}")),
                        (Attempt(see_all, f"{prices[-2] - prices[0]:,.2f}"), Attempt(see_all, f"{prices[-1] - prices[1]:,.2f}")),
                        tuple(Attempt(see_all, miss) for miss in near_misses(spread))))


def _threshold_draft(sitemap: SiteMap, url: str, items: list[Item], see_all: tuple[ToolCall, ...],
                     rng: random.Random) -> Iterator[Draft]:
    """How many products of a category cost less than a round price that splits the list."""
    prices = sorted(it.price for it in items)
    splits = [k for k in range(1, len(prices)) if int(prices[k - 1]) + 1 <= prices[k]]
    if not splits:
        return
    k = rng.choice(splits)
    limit = int(prices[k - 1]) + 1
    on_screen = sum(1 for it in items if it.line < VIEW_LINES and it.price < limit)
    yield Draft("compare:count", f"How many products in the {sitemap.pages[url].title} category cost less than "
                f"${limit:,}?", True, Attempt(see_all, str(k)), (
                    (Attempt(see_all, str(k + 1)), Attempt(see_all, str(k - 1))),
                    (Attempt(sitemap.reach(url, 0), str(on_screen)),),
                    (Attempt(see_all, str(len(items) - k)),)))


def listing_rows(sitemap: SiteMap, first: str, prefix: str) -> list[tuple[str, int, int, str]]:
    """The entries of a paginated listing, in order: (page URL, page number, line, name)."""
    rows: list[tuple[str, int, int, str]] = []
    url: str | None = first
    number = 0
    while url is not None:
        number += 1
        page = sitemap.pages[url]
        rows += [(url, number, line, text) for line, text, target in page.links()
                 if target.startswith(prefix) and page.lines[line].startswith("[")]
        url = next((target for _, text, target in page.links() if text == "Next page"), None)
    return rows


def position_drafts(sitemap: SiteMap, first: str, prefix: str, listing: str, entry: str) -> Iterator[Draft]:
    """Where an entry sits in a paginated listing, and what follows it (maybe on the next page)."""
    rows = listing_rows(sitemap, first, prefix)
    for i, (url, number, line, name) in enumerate(rows):
        seen = sitemap.reach(url, line)
        page_rows = [row for row in rows if row[0] == url]
        yield Draft("position:page", f"On which page of the {listing} is {name} listed?", True,
                    Attempt(seen, str(number)), (
                        tuple(Attempt(seen, miss) for miss in near_misses(str(number))),
                        (Attempt(seen, str(i + 1)), Attempt(seen, str(page_rows.index(rows[i]) + 1)))))
        if i + 1 < len(rows):
            after_url, _, after_line, after = rows[i + 1]
            shown = sitemap.reach(after_url, after_line)
            yield Draft("position:next", f"Which {entry} comes right after {name} in the {listing}?", False,
                        Attempt(shown, after), (
                            (Attempt(shown, rows[i - 1][3]) if i else None,
                             Attempt(shown, rows[i + 2][3]) if i + 2 < len(rows) else None),
                            (Attempt(seen, name),),
                            (Attempt(sitemap.reach(url, 0), page_rows[0][3]),)))


def count_drafts(sitemap: SiteMap, prefix: str, heading: str, question: str) -> Iterator[Draft]:
    """How many entries a page lists under a heading (the list runs past the first screen)."""
    for url in sitemap.entities(prefix):
        page = sitemap.pages[url]
        lines = page.section(heading)
        if not lines:
            continue
        count = len(lines)
        seen = sitemap.reach(url, lines[-1])
        on_screen = sum(1 for i in lines if i < VIEW_LINES)
        others = [len(sitemap.pages[n].section(heading)) for n in sitemap.neighbours(url, prefix)]
        yield Draft("count", question.format(t=page.title), True, Attempt(seen, str(count)), (
            tuple(Attempt(seen, miss) for miss in near_misses(str(count))),
            (Attempt(sitemap.reach(url, 0), str(on_screen)),),
            tuple(Attempt(sitemap.reach(n, 0), str(c)) for n, c in zip(sitemap.neighbours(url, prefix), others))))


def all_drafts(sitemap: SiteMap, rng: random.Random) -> list[list[Draft]]:
    """Every draft the challenger can write about the site, one list per family."""
    families = [list(fact_drafts(sitemap, prefix, hops, keys)) for prefix, hops, keys in CHAINS]
    families.append(list(comparison_drafts(sitemap, rng)))
    families.append(list(position_drafts(sitemap, "/products", "/products/", "product catalogue", "product")))
    families.append(list(position_drafts(sitemap, "/staff", "/staff/", "staff directory", "person")))
    families.append(list(count_drafts(sitemap, "/departments/", "Members",
                                      "How many people are listed as members of the {t}?")))
    families.append(list(count_drafts(sitemap, "/staff/", "Products managed", "How many products does {t} manage?")))
    return [family for family in families if family]


# ---------------------------------------------------------------- checking and writing tasks


def verifier_source(draft: Draft) -> str:
    """The verifier of a draft: the answer compared by value, and maybe the final page."""
    expected = draft.solution.answer
    check = f"{'same_numbers' if draft.number else 'same_text'}(answer, {expected!r})"
    if draft.end_url:
        check += f' and state["browser"]["url"] == {draft.end_url!r}'
    return f"def verify(state, answer):\n    return {check}\n"


def play(base: State, actions: tuple[ToolCall, ...]) -> State | None:
    """The state after ``actions`` from the start of an episode; None if any call errs."""
    state = fork(base)
    tools = {fn.__name__: fn for fn in TOOLS}
    for call in actions:
        if tools[call.name](state, **call.arguments).startswith("Error:"):
            return None
    return state


def check(draft: Draft, base: State) -> tuple[str, tuple[Attempt, ...]] | None:
    """The draft's verifier and the failures it rejects, or None with too few of those."""
    source = verifier_source(draft)
    namespace: dict[str, Any] = dict(vars(verifier_helpers))
    exec(compile(source, "<verifier>", "exec"), namespace)  # our own template: no sandbox needed here

    def accepted(attempt: Attempt) -> bool | None:
        state = play(base, attempt.actions)
        return None if state is None else namespace["verify"]({"browser": state["browser"]}, attempt.answer)

    if accepted(draft.solution) is not True:
        raise AssertionError(f"the scripted solution of {draft.question!r} does not pass its own verifier")
    failures: list[Attempt] = []
    for attempt in _in_turn(draft.wrong):
        if attempt is not None and attempt not in failures and attempt.answer and accepted(attempt) is False:
            failures.append(attempt)
            if len(failures) == MAX_FAILURES:
                break
    return (source, tuple(failures)) if len(failures) >= MIN_FAILURES else None


def _in_turn(groups: Iterable[Iterable[Any]]) -> Iterator[Any]:
    """One from each group in turn, then the next from each, until all are used."""
    for row in itertools.zip_longest(*groups):
        yield from (x for x in row if x is not None)


def make_tasks(seed: int, n: int) -> list[CodeAsTask]:
    """Up to ``n`` distinct checked tasks about the site of world ``{"seed": seed}`` (fewer only if the
    site offers fewer), the question families taken in turn. Deterministic: the first ``n`` of a
    larger call are the same tasks."""
    world = {"seed": seed}
    base = WebEnv.base_state(world)
    pages = crawl(fork(base))
    sitemap = SiteMap(pages, plan_routes(pages))
    rng = random.Random(seed)
    families = all_drafts(sitemap, rng)
    for family in families:
        rng.shuffle(family)
    tasks: list[CodeAsTask] = []
    asked: set[str] = set()
    for draft in _in_turn(families):
        if len(tasks) == n:
            break
        instruction = (f"The browser is on the home page (/) of the {sitemap.company} website. {draft.question} "
                       + ("Answer with the number only." if draft.number else "Answer exactly as the website writes it."))
        checked = None if instruction in asked else check(draft, base)
        if checked is None:
            continue
        asked.add(instruction)
        source, failures = checked
        tasks.append(CodeAsTask(
            id=f"web-{seed}-{len(tasks)}", domain=WebEnv.domain, world=world, instruction=instruction,
            verifier=source, solution=draft.solution, failures=failures,
            provenance={"challenger": "scripted", "family": draft.family, "tool_calls": len(draft.solution.actions),
                        "explored_pages": len(pages)}))
    return tasks
