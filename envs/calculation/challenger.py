"""The calculation domain's scripted challenger: Code-as-Tasks written by exploring a world with its tools.

The challenger first explores the world as an agent would (listing currencies, countries, duties and
units through the tools). For each task it then plays the solution on its own fork of the state,
calling the tools, which gives the true answer, and plays each failure case the same way: a plausible
mistake (a skipped step, a wrong rate or unit, a reversed direction, an off-by-one, a right
computation with a wrong final answer, a missing or wrong ledger entry). It writes the verifier from
a few readable checks (the answer's last number within a tolerance, the answer's final text, the
ledger's entries) and runs it, its own trusted code, in process on every play: a failure case the
verifier accepts is dropped, and a draft left with fewer than three is redrawn. So every task passes
:func:`envs.filter.filter_tasks`, which runs the same verifier in the sandbox.

Tasks come from task families drawn in turn, with random parameters from ``(seed, draw)``: the same
seed always gives the same tasks, in the same order.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envs.calculation.tools import CODONS, TOOLSET
from envs.calculation.world import build_world
from envs.cat import MIN_FAILURES, Attempt, CodeAsTask, ToolCall
from envs.sandbox import verifier_helpers
from envs.state import State, fork, to_plain

MAX_FAILURES = 4
"""Failure cases kept per task: enough for a varied check, few enough to keep filtering fast."""
MAX_DRAWS_PER_TASK = 20
"""Drafts drawn per task asked for before giving up (about 1.03 are needed)."""

ITEMS = (  # (item, plural, tariff category)
    ("laptop", "laptops", "electronics"), ("espresso machine", "espresso machines", "electronics"),
    ("smartphone", "smartphones", "electronics"), ("wool blanket", "wool blankets", "textiles"),
    ("silk scarf", "silk scarves", "textiles"), ("pair of hiking boots", "pairs of hiking boots", "footwear"),
    ("pair of running shoes", "pairs of running shoes", "footwear"), ("office chair", "office chairs", "furniture"),
    ("oak desk", "oak desks", "furniture"), ("board game", "board games", "toys"),
    ("model train set", "model train sets", "toys"), ("steel beam", "steel beams", "steel"),
    ("sack of coffee beans", "sacks of coffee beans", "coffee"), ("case of red wine", "cases of red wine", "wine"),
    ("wheel of cheese", "wheels of cheese", "cheese"), ("road bike", "road bikes", "bicycles"),
    ("cookbook", "cookbooks", "books"), ("jar of face cream", "jars of face cream", "cosmetics"),
    ("cordless drill", "cordless drills", "tools"), ("ceramic vase", "ceramic vases", "ceramics"),
    ("set of wine glasses", "sets of wine glasses", "glassware"), ("violin", "violins", "musical instruments"),
    ("electric guitar", "electric guitars", "musical instruments"),
)
SUPPLIERS = ("Northwind", "Bluefin Trading", "Cedar & Co", "Atlas Supply", "Kestrel Imports",
             "Harbor Goods", "Meridian", "Silverline", "Oakridge Wholesale", "Pioneer Freight")
UNIT_WORDS = {
    "mm": "millimetres", "cm": "centimetres", "m": "metres", "km": "kilometres", "in": "inches",
    "ft": "feet", "yd": "yards", "mi": "miles", "g": "grams", "kg": "kilograms", "t": "tonnes",
    "oz": "ounces", "lb": "pounds", "ml": "millilitres", "l": "litres", "m3": "cubic metres",
    "qt": "quarts", "gal": "gallons", "celsius": "degrees Celsius", "fahrenheit": "degrees Fahrenheit",
    "kelvin": "kelvin", "crate": "crates", "sack": "sacks", "bolt": "bolts", "barrel": "barrels",
    "drum": "drums",
}
RATE_WORDS = {"kg": "kilogram", "lb": "pound", "t": "tonne", "m": "metre", "yd": "yard", "ft": "foot",
              "l": "litre", "gal": "gallon", "qt": "quart"}
RATE_UNITS = {"mass": ("kg", "lb", "t"), "length": ("m", "yd", "ft"), "volume": ("l", "gal", "qt")}
TRADE_GOODS = {"crate": "crates of machine parts", "sack": "sacks of grain", "bolt": "bolts of cotton cloth",
               "barrel": "barrels of olive oil", "drum": "drums of solvent"}
SERIES = (  # (what the numbers are, their unit, low, high, decimals, whether a total makes sense)
    ("daily high temperatures last week", "°C", -5, 35, 1, False), ("package weights", "kg", 0.2, 30, 2, True),
    ("delivery times", "minutes", 12, 95, 0, True), ("monthly electricity bills", "EUR", 40, 180, 2, True),
    ("test scores", "points", 35, 100, 0, False), ("daily step counts", "steps", 2000, 16000, 0, True),
    ("lap times", "seconds", 61, 79, 2, True), ("rainfall readings", "mm", 0, 42, 1, True),
)
STATISTIC_WORDS = {"mean": "average", "median": "median", "max": "highest value", "min": "lowest value",
                   "sum": "total"}
PLACES = ("OLD MILL", "NORTH GATE", "TRAIN STATION", "RIVER BRIDGE", "CLOCK TOWER", "MARKET SQUARE",
          "EAST DOCK", "CITY LIBRARY", "ROSE GARDEN", "LIGHTHOUSE", "STONE CHAPEL", "FISH MARKET")
TIMES = ("DAWN", "NOON", "MIDNIGHT", "SUNSET", "NINE", "TEN TONIGHT", "SIX SHARP")
THINGS = ("MAP", "KEY", "LETTER", "LANTERN", "COMPASS", "SILVER RING", "LEDGER", "BLUE BOX", "OLD COIN")
COLORS = ("RED", "GREEN", "GOLDEN", "SILVER", "BLACK", "WHITE")
MESSAGES = (
    "MEET ME AT THE {place} AT {time}", "THE {thing} IS HIDDEN UNDER THE {place}",
    "BRING THE {thing} TO THE {place} BEFORE {time}", "WAIT FOR THE {color} SIGNAL AT {time}",
    "THE {color} BOAT LEAVES THE {place} AT {time}", "LEAVE THE {thing} BY THE {place} AND GO",
)
_DNA_CODONS = tuple(c.replace("U", "T") for c, aa in CODONS.items() if aa != "*")
_STOP_CODONS = tuple(c.replace("U", "T") for c, aa in CODONS.items() if aa == "*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


# ---------------------------------------------------------------- playing the world

class ToolError(Exception):
    """One of the challenger's own tool calls came back as an error (that play is dropped)."""


class Play:
    """One way through a task, played with the agent's tools on its own fork of the world."""

    def __init__(self, base: State):
        self.state = fork(base)
        self.calls: list[ToolCall] = []
        self.answer = ""

    def __call__(self, name: str, **arguments: Any) -> str:
        self.calls.append(ToolCall(name, arguments))
        output = TOOLSET.call(self.state, name, arguments)
        if output.startswith("Error"):
            raise ToolError(output)
        return output

    def number(self, name: str, **arguments: Any) -> float:
        """The last number of a tool's output (the result, in every numeric tool's format)."""
        return float(_NUMBER.findall(self(name, **arguments))[-1])

    def convert(self, amount: float, source: str, target: str) -> float:
        return self.number("convert_currency", amount=amount, from_currency=source, to_currency=target)

    def country(self, name: str) -> dict[str, Any]:
        return json.loads(self("get_country", country=name))

    def duty(self, category: str) -> float:
        return json.loads(self("get_tariff", category=category))["duty_percent"]

    def plus(self, amount: float, percent: float) -> float:
        return self.number("add_percentage", amount=amount, percent=percent)

    def calc(self, expression: str) -> float:
        return self.number("calculate", expression=expression)

    def stat(self, numbers: list[float], operation: str) -> float:
        return self.number("aggregate", numbers=numbers, operation=operation)

    def units(self, value: float, source: str, target: str) -> float:
        return self.number("convert_units", value=value, from_unit=source, to_unit=target)

    def shift(self, text: str, shift: int) -> str:
        return self("caesar_shift", text=text, shift=shift)

    def protein(self, coding_strand: str) -> str:
        return self("translate", sequence=self("transcribe", sequence=coding_strand))

    def record(self, label: str, amount: float, currency: str) -> None:
        self("record_entry", label=label, amount=amount, currency=currency)

    def attempt(self) -> Attempt:
        return Attempt(tuple(self.calls), self.answer)


Strategy = Callable[[Play], str]
"""A way to play a task: tool calls on the play, returning the final answer."""


def _but_answer(strategy: Strategy, answer: str) -> Strategy:
    """The strategy's calls, then another final answer: a right computation, wrongly reported."""
    def play(p: Play) -> str:
        strategy(p)
        return answer
    return play


class Scout:
    """What the challenger learns by exploring a world with the tools, once per world."""

    def __init__(self, base: State):
        self.base = base
        look = Play(base)
        self.currencies = [c["code"] for c in json.loads(look("list_currencies"))]
        self.countries = {name: look.country(name) for name in json.loads(look("list_countries"))}
        self.duties = {c: look.duty(c) for c in json.loads(look("list_tariff_categories"))}
        self.units: dict[str, Any] = json.loads(look("list_units"))  # dimension -> its units

    def tool(self, name: str, **arguments: Any) -> str:
        """One exploratory call on a scratch fork."""
        return Play(self.base)(name, **arguments)

    def play(self, strategy: Strategy) -> Play | None:
        """``strategy`` played on a fresh fork; ``None`` if one of its calls errs."""
        play = Play(self.base)
        try:
            play.answer = strategy(play)
        except ToolError:
            return None
        return play

    def dutiable_items(self) -> list[tuple[str, str, str]]:
        return [item for item in ITEMS if self.duties[item[2]] > 0]

    def countries_paying(self, currency: str) -> list[str]:
        return [name for name, info in self.countries.items() if info["currency"] == currency]


@dataclass
class Draft:
    """A task before the challenger plays it: the verifier is written from the solution's play."""

    instruction: str
    solution: Strategy
    failures: list[Strategy]
    answer: str = "money"
    """How the answer is checked: its last number as ``money``, ``real``, ``decimal``, ``rate`` or
    ``count`` (each with its tolerance in ``TOLERANCES``), or its final ``text``."""
    ledger: bool = False
    """Whether the ledger must also hold exactly the solution's entries."""


# ---------------------------------------------------------------- verifiers

def _money_tolerance(value: float) -> float:
    """A cent, or 0.1% of large amounts: room for rounding along another chain of tools."""
    return round(max(0.011, 0.001 * abs(value)), 4)


TOLERANCES: dict[str, str] = {
    "money": "max(0.011, 0.001 * abs({v}))",
    "real": "max(0.01, 0.001 * abs({v}))",
    "decimal": "max(0.006, 1e-06 * abs({v}))",
    "rate": "0.001 * abs({v})",
    "count": "0",
}
"""Each answer kind's tolerance around the expected value ``v``, as the verifier writes it: a
formula of the value rather than its result, so that a verifier is written by copying values (as
an LLM challenger learning from these tasks can), not by computing them."""


def _verifier(draft: Draft, solution: Play) -> str:
    """The verifier source: the answer check of the draft's kind, and the ledger check if asked."""
    if draft.answer == "text":
        checks = [f"final_text(answer) == {verifier_helpers.final_text(solution.answer)!r}"]
    else:
        expected = verifier_helpers.final_number(solution.answer)
        tolerance = TOLERANCES[draft.answer].format(v=repr(expected))
        checks = [f"near(final_number(answer), {expected!r}, {tolerance})"]
    if draft.ledger:
        expected_entries = {e["label"]: (e["currency"], e["amount"], _money_tolerance(e["amount"]))
                            for e in solution.state["ledger"]}
        checks.insert(0, f"ledger_holds(state['ledger'], {expected_entries!r})")
    body = checks[0] if len(checks) == 1 else "(" + "\n            and ".join(checks) + ")"
    return f"def verify(state, answer):\n    return {body}\n"


def _accepts(verifier: str, play: Play) -> bool:
    """Run the challenger's own verifier in process (trusted code, written just above), with the
    readers the sandbox gives every verifier."""
    namespace: dict[str, Any] = dict(vars(verifier_helpers))
    exec(compile(verifier, "<verifier>", "exec"), namespace)
    return namespace["verify"](to_plain(play.state), play.answer) is True


# ---------------------------------------------------------------- numbers in text

def _cents(value: float) -> str:
    return f"{value:.2f}"


def _lit(value: float) -> str:
    """A number as written in an expression or an instruction: no '.0', no float noise."""
    value = round(float(value), 6)
    return str(int(value)) if value.is_integer() else repr(value)


def _price(rng: random.Random, low: float = 5, high: float = 2500) -> float:
    """A price: a whole amount half of the time, else one with cents."""
    value = rng.uniform(low, high)
    return float(round(value)) if rng.random() < 0.5 else round(value, 2)


def _aside(rng: random.Random, currency: str, amount: float) -> str:
    """Now and then a distractor: a true but irrelevant fact, or a wrong guess to ignore."""
    return rng.choice((
        "", "",
        f" A colleague guessed about {round(amount * rng.uniform(0.6, 1.4))} {currency}; do not rely on that.",
        f" The paperwork also shows reference number {rng.randint(1000, 9999)}, which does not affect the amount.",
        f" The goods weigh {rng.randint(2, 90)} kg in all; weight plays no part here.",
    ))


def _listing(parts: list[str]) -> str:
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]


# ---------------------------------------------------------------- trade

def _currency_conversion(s: Scout, rng: random.Random) -> Draft:
    source, target, other = rng.sample(s.currencies, 3)
    amount = _price(rng)
    countries = s.countries_paying(target)
    if countries and rng.random() < 0.4:
        country = rng.choice(countries)
        ask = f"in the local currency of {country}"

        def solve(p: Play) -> str:
            return f"{_cents(p.convert(amount, source, p.country(country)['currency']))} {target}"
    else:
        ask = f"in {target}"

        def solve(p: Play) -> str:
            return f"{_cents(p.convert(amount, source, target))} {target}"
    instruction = rng.choice((
        f"How much is {_lit(amount)} {source} {ask}?",
        f"A supplier quotes {_lit(amount)} {source} for a consignment. What is that {ask}, to the cent?",
        f"Convert {_lit(amount)} {source} to its value {ask} at today's rate.",
    ))
    return Draft(instruction, solve, [
        lambda p: _cents(p.convert(amount, target, source)),
        lambda p: _cents(p.convert(amount, source, other)),
        lambda p: p("get_exchange_rate", from_currency=source, to_currency=target).split("= ")[1],
        _but_answer(solve, _lit(amount)),
    ])


def _exchange_rate(s: Scout, rng: random.Random) -> Draft:
    source, target, other = rng.sample(s.currencies, 3)
    instruction = rng.choice((
        f"How many {target} does one {source} buy today?",
        f"What is today's exchange rate from {source} to {target}, in {target} per {source}?",
        f"I need the {source}/{target} rate: how much {target} do I get for 1 {source}?",
    ))

    def rate(a: str, b: str) -> Strategy:
        return lambda p: p("get_exchange_rate", from_currency=a, to_currency=b).split("= ")[1]
    return Draft(instruction, rate(source, target),
                 [rate(target, source), rate(source, other), rate(other, target), rate(source, "USD")], answer="rate")


def _price_with_tax(s: Scout, rng: random.Random) -> Draft:
    country, elsewhere = rng.sample(list(s.countries), 2)
    code = s.countries[country]["currency"]
    item = rng.choice(ITEMS)[0]
    price = _price(rng, 10, 3000)
    instruction = rng.choice((
        f"In {country} a {item} sells for {_lit(price)} {code} before tax. "
        f"What does it cost once {country}'s consumption tax is added?",
        f"What is the tax-inclusive price in {country} of a {item} whose pre-tax price is {_lit(price)} {code}?",
    ))

    def with_tax(where: str, sign: int = 1) -> Strategy:
        return lambda p: f"{_cents(p.plus(price, sign * p.country(where)['tax_percent']))} {code}"
    return Draft(instruction, with_tax(country), [
        with_tax(elsewhere), with_tax(country, -1),
        lambda p: _cents(p.calc(f"{_lit(price)} * {_lit(p.country(country)['tax_percent'])} / 100")),
        _but_answer(with_tax(country), _lit(price)),
    ])


def _net_price(s: Scout, rng: random.Random) -> Draft:
    country, elsewhere = rng.sample(list(s.countries), 2)
    code = s.countries[country]["currency"]
    item = rng.choice(ITEMS)[0]
    gross = _price(rng, 10, 3000)
    instruction = rng.choice((
        f"In {country} a {item} is labelled {_lit(gross)} {code}, consumption tax included. "
        "What is its price before tax?",
        f"A receipt from {country} shows {_lit(gross)} {code} for a {item}, tax included. "
        "How much of that is the pre-tax price?",
    ))

    def before_tax(where: str) -> Strategy:
        return lambda p: _cents(p.calc(f"{_lit(gross)} / (1 + {_lit(p.country(where)['tax_percent'])} / 100)"))
    return Draft(instruction, before_tax(country), [
        before_tax(elsewhere),
        lambda p: _cents(p.plus(gross, -p.country(country)["tax_percent"])),
        lambda p: _cents(p.calc(f"{_lit(gross)} * {_lit(p.country(country)['tax_percent'])} / 100")),
        _but_answer(before_tax(country), _lit(gross)),
    ])


def _import_duty(s: Scout, rng: random.Random) -> Draft:
    (_, plural, category), other = rng.choice(s.dutiable_items()), rng.choice(list(s.duties))
    code = rng.choice(s.currencies)
    qty, price = rng.randint(2, 40), _price(rng, 5, 800)
    instruction = (f"{qty} {plural} at {_lit(price)} {code} each are being imported; they fall under the "
                   f"'{category}' tariff category. How much import duty is owed, in {code}?"
                   + _aside(rng, code, qty * price * 0.1))

    def duty_on(units: int, category: str, per_cent: str = " / 100") -> Strategy:
        return lambda p: _cents(p.calc(f"{units} * {_lit(price)} * {_lit(p.duty(category))}{per_cent}"))
    return Draft(instruction, duty_on(qty, category), [
        duty_on(1, category), duty_on(qty, other), duty_on(qty, category, per_cent=""),
        lambda p: _cents(p.plus(p.calc(f"{qty} * {_lit(price)}"), p.duty(category))),
    ])


@dataclass(frozen=True)
class Order:
    """Goods bought abroad: ``qty`` at ``price`` in the supplier's ``currency``, for ``country``."""

    item: str
    plural: str
    category: str
    qty: int
    price: float
    currency: str
    origin: str
    country: str

    def describe(self) -> str:
        goods = f"a {self.item}" if self.qty == 1 else f"{self.qty} {self.plural}"
        each = "" if self.qty == 1 else " each"
        return (f"A company in {self.country} buys {goods} from a supplier in {self.origin}, at "
                f"{_lit(self.price)} {self.currency}{each}. The goods are in the '{self.category}' tariff category.")


def _order(s: Scout, rng: random.Random) -> Order:
    item, plural, category = rng.choice(s.dutiable_items())
    origin, country = rng.sample(list(s.countries), 2)
    while s.countries[origin]["currency"] == s.countries[country]["currency"]:
        origin, country = rng.sample(list(s.countries), 2)
    qty = 1 if rng.random() < 0.4 else rng.randint(2, 12)
    return Order(item, plural, category, qty, _price(rng, 20, 1500), s.countries[origin]["currency"], origin, country)


def _landed(p: Play, order: Order, skip: str = "", merged: bool = False, tax_from: str = "") -> tuple[float, str]:
    """The landed cost: duty on the price, then the destination's tax on that, in its currency.

    ``skip`` leaves out one step (``quantity``, ``duty``, ``tax`` or ``conversion``); ``merged`` adds
    duty and tax as one percentage; ``tax_from`` takes another country's tax: the usual mistakes.
    """
    total = p.calc(f"{order.qty} * {_lit(order.price)}") if order.qty > 1 and skip != "quantity" else order.price
    duty = p.duty(order.category) if skip != "duty" else 0.0
    destination = p.country(order.country)
    tax = 0.0 if skip == "tax" else p.country(tax_from)["tax_percent"] if tax_from else destination["tax_percent"]
    for percent in ([duty + tax] if merged else [duty, tax]):
        if percent:
            total = p.plus(total, percent)
    if skip == "conversion":
        return total, order.currency
    return p.convert(total, order.currency, destination["currency"]), destination["currency"]


def _landed_failures(order: Order) -> list[Strategy]:
    def mistake(**how: Any) -> Strategy:
        return lambda p: "{0:.2f} {1}".format(*_landed(p, order, **how))
    failures = [mistake(skip="duty"), mistake(skip="tax"), mistake(skip="conversion"), mistake(merged=True),
                mistake(tax_from=order.origin)]
    return failures + ([mistake(skip="quantity")] if order.qty > 1 else [])


def _landed_cost(s: Scout, rng: random.Random) -> Draft:
    order = _order(s, rng)
    currency = rng.choice((f"{order.country}'s currency", s.countries[order.country]["currency"]))
    instruction = (order.describe() + " Import duty is charged on the price, then the destination's consumption "
                   f"tax on the price including duty. What is the total landed cost in {currency}?"
                   + _aside(rng, order.currency, order.price * order.qty))
    return Draft(instruction, lambda p: "{0:.2f} {1}".format(*_landed(p, order)), _landed_failures(order))


def _ledger_landed_cost(s: Scout, rng: random.Random) -> Draft:
    order = _order(s, rng)
    label = f"PO-{rng.randint(100, 9999)}"
    instruction = (order.describe() + " Work out the landed cost: import duty on the price, then the destination's "
                   f"consumption tax on the price including duty, in {order.country}'s currency. Record it in the "
                   f"ledger under the label '{label}' in that currency, and tell me the amount.")

    def recorded(**how: Any) -> Strategy:
        def play(p: Play) -> str:
            amount, code = _landed(p, order, **how)
            p.record(label, amount, code)
            return f"{_cents(amount)} {code}"
        return play

    def wrong_code(p: Play) -> str:
        amount, code = _landed(p, order)
        p.record(label, amount, order.currency)
        return f"{_cents(amount)} {code}"
    return Draft(instruction, recorded(), [
        lambda p: "{0:.2f} {1}".format(*_landed(p, order)),
        recorded(skip="conversion"), recorded(skip="duty"), recorded(merged=True), wrong_code,
    ], ledger=True)


def _basket_total(s: Scout, rng: random.Random) -> Draft:
    target = rng.choice(s.currencies)
    currencies = rng.sample([c for c in s.currencies if c != target], rng.randint(1, 2)) + [target]
    goods = rng.sample(ITEMS, rng.randint(3, 5))
    prices = [(item, _price(rng, 5, 900), rng.choice(currencies)) for item, _, _ in goods]
    returned = prices.pop() if len(prices) > 3 and rng.random() < 0.5 else None
    if all(code == target for _, _, code in prices):
        return None
    listed = prices + ([returned] if returned else [])
    rng.shuffle(listed)
    bought = _listing([f"a {item} for {_lit(price)} {code}" for item, price, code in listed])
    if returned:
        ask = (f"I returned the {returned[0]} for a full refund, so leave it out. "
               f"What did the rest cost me altogether, in {target}?")
    else:
        ask = f"What did they cost altogether, in {target}?"
    instruction = f"Last month I bought {bought}. {ask}"

    def total(bought: list[tuple[str, float, str]], into: str = target, raw: str = "") -> Strategy:
        def play(p: Play) -> str:
            values = [price if code == into or code == raw else p.convert(price, code, into) for _, price, code in bought]
            return f"{_cents(p.stat(values, 'sum'))} {into}"
        return play
    foreign = next(code for _, _, code in prices if code != target)
    other = rng.choice([c for c in s.currencies if c not in currencies])
    return Draft(instruction, total(prices), [
        lambda p: _cents(p.stat([price for _, price, _ in prices], "sum")),
        total(prices[:-1]), total(prices, raw=foreign), total(prices, into=other),
    ] + ([total(prices + [returned])] if returned else []))


def _cheapest_offer(s: Scout, rng: random.Random) -> Draft:
    item = rng.choice(ITEMS)[0]
    suppliers = rng.sample(SUPPLIERS, rng.randint(3, 4))
    base = rng.uniform(50, 2000)
    offers = [(name, code, round(float(s.tool("convert_currency", amount=base * rng.uniform(0.85, 1.15),
                                                  from_currency="USD", to_currency=code).split()[0]), 2))
              for name, code in zip(suppliers, rng.sample(s.currencies, len(suppliers)))]
    common = rng.choice([code for _, code, _ in offers])
    instruction = (f"{len(offers)} suppliers quote for the same {item}: "
                   + _listing([f"{name} asks {_lit(price)} {code}" for name, code, price in offers])
                   + ". Which supplier is cheapest at today's exchange rates? Answer with the supplier's name.")

    def ranked(p: Play, inverted: bool = False) -> list[str]:
        values = {name: price if code == common else p.convert(price, *((common, code) if inverted else (code, common)))
                  for name, code, price in offers}
        return sorted(values, key=values.__getitem__)
    return Draft(instruction, lambda p: ranked(p)[0], [
        lambda p: min(offers, key=lambda offer: offer[2])[0], lambda p: ranked(p)[-1], lambda p: ranked(p)[1],
        lambda p: ranked(p, inverted=True)[0], _but_answer(lambda p: ranked(p)[0], offers[0][0]),
    ], answer="text")


def _freight_cost(s: Scout, rng: random.Random) -> Draft:
    unit = rng.choice(list(TRADE_GOODS))
    dimension = next(dim for dim, units in s.units.items() if unit in units)
    per, wrong_per = rng.sample(RATE_UNITS[dimension], 2)
    count, rate = rng.randint(3, 60), round(rng.uniform(0.05, 4.0), 2)
    source, target = rng.sample(s.currencies, 2)
    instruction = (f"A shipment of {count} {TRADE_GOODS[unit]} is going by sea. Freight is charged at {_lit(rate)} "
                   f"{source} per {RATE_WORDS[per]}, using this world's standard size of a {unit}. "
                   f"What does the freight cost in {target}?")

    def freight(into: str = per, convert_to: str = target, measure: bool = True) -> Strategy:
        def play(p: Play) -> str:
            quantity = p.units(count, unit, into) if measure else count
            cost = p.calc(f"{_lit(quantity)} * {_lit(rate)}")
            return f"{_cents(p.convert(cost, source, convert_to) if convert_to != source else cost)} {convert_to}"
        return play
    return Draft(instruction, freight(), [
        freight(measure=False), freight(into=wrong_per), freight(convert_to=source),
        lambda p: _cents(p.convert(p.calc(f"{_lit(p.units(count, unit, per))} * {_lit(rate)}"), target, source)),
    ])


# ---------------------------------------------------------------- measures and numbers

def _unit_conversion(s: Scout, rng: random.Random) -> Draft:
    dimension = rng.choice(list(s.units))
    source, target, other = rng.sample(list(s.units[dimension]), 3)
    value = round(rng.uniform(-40, 120), 1) if dimension == "temperature" else _price(rng, 0.5, 500)
    if source == "kelvin":  # the same weather, above absolute zero
        value = round(value + 273.15, 1)
    instruction = rng.choice((
        f"Convert {_lit(value)} {UNIT_WORDS[source]} to {UNIT_WORDS[target]}.",
        f"How much is {_lit(value)} {UNIT_WORDS[source]} in {UNIT_WORDS[target]}?",
    ))

    def convert(a: str, b: str) -> Strategy:
        return lambda p: f"{_lit(p.units(value, a, b))} {b}"
    return Draft(instruction, convert(source, target), [
        convert(target, source), convert(source, other), convert(other, target),
        _but_answer(convert(source, target), _lit(value)),
    ], answer="real")


SHAPES = (
    "({a} + {b}) * {c}", "{a} + {b} * {c} - {d}", "({a} - {b}) / {c} + {d}", "{a} * ({b} + {c}) / {d}",
    "{a} / {b} * {c}", "({a} + {b}) / ({c} - {d})", "{a} - {b} * ({c} - {d})", "{a} ** 2 - {b} * {c}",
    "({a} + {b} + {c}) / {d}", "{a} * {b} - {c} * {d}",
)


def _arithmetic(s: Scout, rng: random.Random) -> Draft:
    numbers = {k: rng.randint(2, 99) if rng.random() < 0.75 else round(rng.uniform(1, 50), 1) for k in "abcd"}
    shape = rng.choice(SHAPES)
    expression = shape.format(**numbers)
    last = re.findall(r"\{(\w)\}", shape)[-1]
    shown = expression.replace("**", "^").replace("*", "×").replace("/", "÷").replace(" - ", " − ")
    instruction = rng.choice((f"What is {shown}?", f"Evaluate {shown}.",
                              f"Work out {shown}, to 2 decimal places if it is not whole."))
    dropped = expression.rsplit(" ", 2)[0]  # the last operation forgotten
    mistakes = [expression.replace("(", "").replace(")", ""), _left_to_right(expression),
                expression.replace("/", "//"), shape.format(**numbers | {last: round(numbers[last] + 1, 1)}),
                expression.replace("+", "-", 1), dropped if dropped.count("(") == dropped.count(")") else expression]

    def evaluate(text: str, places: int = 2) -> Strategy:
        return lambda p: _lit(round(p.calc(text), places))
    return Draft(instruction, evaluate(expression),
                 [evaluate(m) for m in dict.fromkeys(mistakes) if m != expression] + [evaluate(expression, 0)],
                 answer="decimal")


def _left_to_right(expression: str) -> str:
    """The expression as if evaluated left to right, ignoring precedence (for flat expressions)."""
    if "(" in expression:
        return expression
    first, *rest = expression.split(" ")
    for op, number in zip(rest[::2], rest[1::2]):
        first = f"({first} {op} {number})"
    return first


def _compound_interest(s: Scout, rng: random.Random) -> Draft:
    code, principal = rng.choice(s.currencies), _price(rng, 100, 20000)
    rate, years = round(rng.uniform(0.5, 9), rng.choice((1, 2))), rng.randint(2, 15)
    instruction = (f"{_lit(principal)} {code} is deposited at {_lit(rate)}% interest per year, compounded yearly. "
                   f"What is the balance after {years} years?")

    def grow(expression: str) -> Strategy:
        return lambda p: f"{_cents(p.calc(expression))} {code}"
    return Draft(instruction, grow(f"{_lit(principal)} * (1 + {_lit(rate)} / 100) ** {years}"), [
        grow(f"{_lit(principal)} * (1 + {_lit(rate)} * {years} / 100)"),
        grow(f"{_lit(principal)} * (1 + {_lit(rate)} / 100) ** {years - 1}"),
        grow(f"{_lit(principal)} * (1 + {_lit(rate)} / 100) ** {years} - {_lit(principal)}"),
        grow(f"{_lit(principal)} * (1 + {_lit(rate)}) ** {years}"),
    ])


def _shared_stock(s: Scout, rng: random.Random) -> Draft:
    crates, per_crate, shops = rng.randint(4, 60), rng.choice((6, 12, 20, 24, 48)), rng.randint(3, 12)
    broken = rng.randint(1, crates * per_crate // 5)
    broken += (crates * per_crate - broken) % shops
    if broken >= crates * per_crate:
        return None
    instruction = (f"A warehouse receives {crates} crates holding {per_crate} bottles each. {broken} bottles arrive "
                   f"broken, and the rest are shared equally among {shops} shops. How many bottles does each shop get?")

    def share(expression: str) -> Strategy:
        return lambda p: _lit(p.calc(expression))
    return Draft(instruction, share(f"({crates} * {per_crate} - {broken}) / {shops}"), [
        share(f"{crates} * {per_crate} / {shops}"), share(f"{crates} * {per_crate} - {broken} / {shops}"),
        share(f"({crates} * {per_crate} - {broken}) / {shops - 1}"), share(f"{crates} * {per_crate} - {broken}"),
    ], answer="count")


def _discount_and_tax(s: Scout, rng: random.Random) -> Draft:
    country = rng.choice(list(s.countries))
    code, item = s.countries[country]["currency"], rng.choice(ITEMS)[0]
    price, discount = _price(rng, 20, 3000), rng.choice((5, 10, 15, 20, 25, 30, 40))
    instruction = (f"A {item} is listed at {_lit(price)} {code} before tax in {country}. It is on sale at {discount}% "
                   f"off, and {country}'s consumption tax is charged on the sale price. What does the buyer pay?")

    def pay(off: float, taxed: bool = True, net: bool = False) -> Strategy:
        def play(p: Play) -> str:
            tax = p.country(country)["tax_percent"] if taxed else 0.0
            if net:
                return f"{_cents(p.plus(price, tax - off))} {code}"
            amount = p.plus(price, -off) if off else price
            return f"{_cents(p.plus(amount, tax) if tax else amount)} {code}"
        return play
    return Draft(instruction, pay(discount), [pay(discount, taxed=False), pay(0), pay(-discount), pay(discount, net=True)])


def _fuel_consumption(s: Scout, rng: random.Random) -> Draft:
    miles = rng.randint(40, 900)
    gallons = round(miles / rng.uniform(8, 40), 1)
    instruction = (f"A truck covered {miles} miles on {_lit(gallons)} gallons of fuel. What was its fuel consumption "
                   "in litres per 100 km, to 2 decimal places?")

    def consumption(volume_unit: str = "l", convert_distance: bool = True, inverted: bool = False) -> Strategy:
        def play(p: Play) -> str:
            km = p.units(miles, "mi", "km") if convert_distance else miles
            litres = p.units(gallons, "gal", volume_unit)
            ratio = f"{_lit(km)} / {_lit(litres)}" if inverted else f"{_lit(litres)} / {_lit(km)}"
            return _cents(p.calc(f"{ratio} * 100"))
        return play
    return Draft(instruction, consumption(), [
        lambda p: _cents(p.calc(f"{_lit(gallons)} / {miles} * 100")), consumption(convert_distance=False),
        consumption(inverted=True), consumption(volume_unit="qt"),
    ], answer="real")


def _list_statistic(s: Scout, rng: random.Random) -> Draft:
    what, unit, low, high, decimals, summable = rng.choice(SERIES)
    values = [round(rng.uniform(low, high), decimals) for _ in range(rng.randint(6, 12))]
    values = [int(v) if decimals == 0 else v for v in values]
    operations = ["mean", "median", "max", "min"] + (["sum"] if summable else [])
    operation = rng.choice(operations)
    instruction = (f"Here are the {what}, in {unit}: {', '.join(_lit(v) for v in values)}. "
                   f"What is the {STATISTIC_WORDS[operation]}?")

    def summary(numbers: list[float], op: str) -> Strategy:
        return lambda p: _lit(p.stat(numbers, op))
    others = rng.sample([op for op in operations if op != operation], 2)
    return Draft(instruction, summary(values, operation), [
        summary(values, others[0]), summary(values, others[1]), summary(values[:-1], operation), summary(values, "count"),
    ], answer="real")


def _spread(s: Scout, rng: random.Random) -> Draft:
    what, unit, low, high, decimals, _ = rng.choice(SERIES)
    values = [round(rng.uniform(low, high), decimals) for _ in range(rng.randint(6, 12))]
    instruction = (f"The {what} were, in {unit}: {', '.join(_lit(v) for v in values)}. "
                   "How far apart are the highest and the lowest of them?")

    def spread(numbers: list[float], low_op: str = "min", flipped: bool = False) -> Strategy:
        def play(p: Play) -> str:
            top, bottom = _lit(p.stat(numbers, "max")), _lit(p.stat(numbers, low_op))
            return _lit(p.calc(f"{bottom} - {top}" if flipped else f"{top} - {bottom}"))
        return play
    return Draft(instruction, spread(values), [
        lambda p: _lit(p.stat(values, "max")), spread(values, low_op="mean"), spread(values[:-1]),
        spread(values, flipped=True),
    ], answer="real")


def _average_converted(s: Scout, rng: random.Random) -> Draft:
    source, target = rng.sample(s.currencies, 2)
    invoices = [_price(rng, 20, 900) for _ in range(rng.randint(4, 8))]
    instruction = (f"The last {len(invoices)} invoices from a supplier came to {', '.join(_lit(v) for v in invoices)} "
                   f"{source}. What was the average invoice, in {target}?")

    def average(numbers: list[float], op: str = "mean", into: str = target) -> Strategy:
        def play(p: Play) -> str:
            value = p.stat(numbers, op)
            return f"{_cents(p.convert(value, source, into) if into != source else value)} {into}"
        return play
    return Draft(instruction, average(invoices), [
        average(invoices, "sum"), average(invoices, into=source), average(invoices, "median"), average(invoices[:-1]),
    ])


# ---------------------------------------------------------------- text

def _message(rng: random.Random) -> str:
    return rng.choice(MESSAGES).format(place=rng.choice(PLACES), time=rng.choice(TIMES),
                                       thing=rng.choice(THINGS), color=rng.choice(COLORS))


def _caesar(s: Scout, rng: random.Random) -> Draft:
    shift = rng.randint(1, 25)
    cipher = s.tool("caesar_shift", text=_message(rng), shift=shift)
    how = "encoded with ROT13" if shift == 13 else f"encrypted by moving every letter {shift} places forward in the alphabet"
    instruction = rng.choice((f"This message was {how}: '{cipher}'. What does it say?",
                              f"Decode this message, {how}: {cipher}"))

    def decode(by: int) -> Strategy:
        return lambda p: p.shift(cipher, by)
    return Draft(instruction, decode(-shift), [decode(shift), decode(-shift - 1), decode(1 - shift),
                                              _but_answer(decode(-shift), cipher)], answer="text")


def _reversed_cipher(s: Scout, rng: random.Random) -> Draft:
    shift = rng.randint(1, 25)
    cipher = s.tool("reverse_text", text=s.tool("caesar_shift", text=_message(rng), shift=shift))
    instruction = (f"A message was written backwards, and then every letter was moved {shift} places forward in the "
                   f"alphabet. It now reads '{cipher}'. What was the original message?")

    def decode(by: int, reverse: bool = True) -> Strategy:
        def play(p: Play) -> str:
            text = p("reverse_text", text=cipher) if reverse else cipher
            return p.shift(text, by) if by else text
        return play
    return Draft(instruction, decode(-shift), [decode(-shift, reverse=False), decode(0), decode(shift), decode(-shift - 1)],
                 answer="text")


def _letter_count(s: Scout, rng: random.Random) -> Draft:
    shift, message = rng.randint(1, 25), _message(rng)
    letter = rng.choice(sorted(set(message) - {" "}))
    cipher = s.tool("caesar_shift", text=message, shift=shift)
    instruction = (f"Every letter of this message was moved {shift} places forward in the alphabet: '{cipher}'. "
                   f"How many times does the letter {letter} appear in the decoded message?")

    def count(by: int, what: str = letter) -> Strategy:
        return lambda p: p("count_occurrences", text=p.shift(cipher, by) if by else cipher, substring=what)
    return Draft(instruction, count(-shift), [
        count(0), count(shift), count(-shift, letter.lower()),
        lambda p: p("text_length", text=p.shift(cipher, -shift)),
    ], answer="count")


# ---------------------------------------------------------------- DNA

AMINO_ACIDS = {"A": "alanine", "R": "arginine", "N": "asparagine", "D": "aspartate", "C": "cysteine",
               "Q": "glutamine", "E": "glutamate", "G": "glycine", "H": "histidine", "I": "isoleucine",
               "L": "leucine", "K": "lysine", "M": "methionine", "F": "phenylalanine", "P": "proline",
               "S": "serine", "T": "threonine", "W": "tryptophan", "Y": "tyrosine", "V": "valine"}
SAMPLE_NAMES = ("Kappa", "Delta", "Sigma", "Omega", "Theta", "Lambda")


def _dna(rng: random.Random, length: int) -> str:
    return "".join(rng.choice("ACGT") for _ in range(length))


def _gene(rng: random.Random) -> str:
    """A short coding strand: a start codon, a few codons, a stop codon and maybe a base or two."""
    body = "".join(rng.choice(_DNA_CODONS) for _ in range(rng.randint(4, 9)))
    return "ATG" + body + rng.choice(_STOP_CODONS) + _dna(rng, rng.randint(0, 2))


def _reverse_complement(s: Scout, rng: random.Random) -> Draft:
    sequence = _dna(rng, rng.randint(12, 30))
    instruction = rng.choice((f"What is the reverse complement of the DNA sequence {sequence}?",
                              f"Give the opposite strand, read 5' to 3', of this DNA: {sequence}"))
    solve: Strategy = lambda p: p("reverse_complement", sequence=sequence)
    return Draft(instruction, solve, [
        lambda p: p("reverse_text", text=sequence),
        lambda p: p("reverse_text", text=p("reverse_complement", sequence=sequence)),
        _but_answer(solve, sequence), lambda p: p("reverse_complement", sequence=sequence[:-1]),
    ], answer="text")


def _gc_content(s: Scout, rng: random.Random) -> Draft:
    names = rng.sample(SAMPLE_NAMES, 2)
    samples = {name: _dna(rng, rng.randint(15, 40)) for name in names}
    asked, other = names if rng.random() < 0.5 else names[::-1]
    instruction = (f"Sample {names[0]} reads {samples[names[0]]} and sample {names[1]} reads {samples[names[1]]}. "
                   f"What is the GC content of sample {asked}, in percent?")

    def gc(sequence: str) -> Strategy:
        return lambda p: p("gc_content", sequence=sequence).rstrip("%")
    return Draft(instruction, gc(samples[asked]), [
        gc(samples[other]), lambda p: _lit(p.calc(f"100 - {gc(samples[asked])(p)}")),
        lambda p: p("count_occurrences", text=samples[asked], substring="G"), gc(samples[asked][:-1]),
    ], answer="real")


def _protein(s: Scout, rng: random.Random) -> Draft:
    gene = _gene(rng)
    instruction = (f"This is the coding strand of a short gene, 5' to 3': {gene}. What protein does it encode? "
                   "Give the one-letter amino-acid sequence.")
    return Draft(instruction, lambda p: p.protein(gene), [
        lambda p: p.protein(gene[1:]), lambda p: p.protein(p("reverse_complement", sequence=gene)),
        lambda p: p("transcribe", sequence=gene), lambda p: p.protein(gene)[1:],
    ], answer="text")


def _template_protein(s: Scout, rng: random.Random) -> Draft:
    template = s.tool("reverse_complement", sequence=_gene(rng))
    instruction = (f"The template strand of a short gene reads, 5' to 3': {template}. Which protein does the gene "
                   "encode? Give the one-letter amino-acid sequence.")
    return Draft(instruction, lambda p: p.protein(p("reverse_complement", sequence=template)), [
        lambda p: p.protein(template), lambda p: p.protein(p("reverse_text", text=template)),
        lambda p: p("reverse_complement", sequence=template),
        lambda p: p.protein(p("reverse_complement", sequence=template)[1:]),
    ], answer="text")


def _amino_count(s: Scout, rng: random.Random) -> Draft:
    gene = _gene(rng)
    protein = s.tool("translate", sequence=s.tool("transcribe", sequence=gene))
    letter = rng.choice(sorted(set(protein)))
    instruction = (f"How many {AMINO_ACIDS[letter]} residues ({letter}) are in the protein encoded by this coding "
                   f"strand? {gene}")
    return Draft(instruction, lambda p: p("count_occurrences", text=p.protein(gene), substring=letter), [
        lambda p: p("count_occurrences", text=p("transcribe", sequence=gene), substring=letter),
        lambda p: p("text_length", text=p.protein(gene)),
        lambda p: p("count_occurrences", text=p.protein(gene[1:]), substring=letter),
        lambda p: p("count_occurrences", text=p.protein(p("reverse_complement", sequence=gene)), substring=letter),
    ], answer="count")


# ---------------------------------------------------------------- ledger

def _ledger_invoices(s: Scout, rng: random.Random) -> Draft:
    target = rng.choice(s.currencies)
    first = rng.randint(1000, 9000)
    invoices = [(f"INV-{first + i}", _price(rng, 20, 5000), rng.choice(s.currencies)) for i in range(rng.randint(2, 3))]
    if all(code == target for _, _, code in invoices):
        return None
    instruction = (f"Record these invoices in the ledger in {target}, each under its invoice number: "
                   + _listing([f"{label} for {_lit(amount)} {code}" for label, amount, code in invoices])
                   + f". Then tell me their total in {target}.")

    def book(forget_last: bool = False, convert: bool = True, own_codes: bool = False,
             report_raw: bool = False) -> Strategy:
        def play(p: Play) -> str:
            values = []
            for label, amount, code in invoices:
                values.append(p.convert(amount, code, target) if convert and code != target else amount)
                if not (forget_last and label == invoices[-1][0]):
                    p.record(label, values[-1], code if own_codes else target)
            total = p.stat([amount for _, amount, _ in invoices] if report_raw else values, "sum")
            return f"{_cents(total)} {target}"
        return play
    return Draft(instruction, book(), [
        book(forget_last=True), book(convert=False), book(convert=False, own_codes=True), book(report_raw=True),
    ], ledger=True)


FAMILIES: tuple[Callable[[Scout, random.Random], Draft | None], ...] = (
    _currency_conversion, _exchange_rate, _price_with_tax, _net_price, _import_duty, _landed_cost,
    _ledger_landed_cost, _basket_total, _cheapest_offer, _freight_cost, _unit_conversion, _arithmetic,
    _compound_interest, _shared_stock, _discount_and_tax, _fuel_consumption, _list_statistic, _spread,
    _average_converted, _caesar, _reversed_cipher, _letter_count, _reverse_complement, _gc_content,
    _protein, _template_protein, _amino_count, _ledger_invoices,
)


# ---------------------------------------------------------------- tasks

def _task(draft: Draft, scout: Scout, rng: random.Random) -> tuple[str, Play, list[Play]] | None:
    """The verifier, solution and failure cases of a draft, or ``None`` when too few failures are
    real ones (rejected by the verifier) or the solution cannot be played."""
    solution = scout.play(draft.solution)
    if solution is None:
        return None
    verifier = _verifier(draft, solution)
    if not _accepts(verifier, solution):
        return None
    failures, seen = [], set()
    for strategy in draft.failures:
        play = scout.play(strategy)
        if play is None or (key := repr(play.attempt())) in seen or _accepts(verifier, play):
            continue
        seen.add(key)
        failures.append(play)
    rng.shuffle(failures)
    return (verifier, solution, failures[:MAX_FAILURES]) if len(failures) >= MIN_FAILURES else None


def make_tasks(seed: int, n: int) -> list[CodeAsTask]:
    """``n`` distinct tasks in world ``seed``, each passing the filter; the same for the same seed
    (and ``make_tasks(seed, k)`` is the start of ``make_tasks(seed, n)`` for ``k < n``)."""
    scout = Scout(build_world(seed))
    tasks: list[CodeAsTask] = []
    instructions: set[str] = set()
    for draw in range(MAX_DRAWS_PER_TASK * n + 100):
        if len(tasks) == n:
            break
        family = FAMILIES[draw % len(FAMILIES)]
        rng = random.Random(f"calculation-task-{seed}-{draw}")
        draft = family(scout, rng)
        if draft is None or draft.instruction in instructions:
            continue
        made = _task(draft, scout, rng)
        if made is None:
            continue
        verifier, solution, failures = made
        instructions.add(draft.instruction)
        tasks.append(CodeAsTask(
            id=f"calculation-{seed}-{len(tasks)}", domain="calculation", world={"seed": seed},
            instruction=draft.instruction, verifier=verifier, solution=solution.attempt(),
            failures=tuple(f.attempt() for f in failures),
            provenance={"challenger": "scripted", "family": family.__name__.lstrip("_"),
                        "difficulty": len(solution.calls), "draw": draw},
        ))
    if len(tasks) < n:
        raise RuntimeError(f"the challenger found only {len(tasks)} distinct tasks in world {seed}")
    return tasks
