"""The calculation domain's tools: trade lookups and conversions, arithmetic, text and DNA utilities,
and a ledger.

Each tool is one plain function over the episode state (see :mod:`envs.calculation.world` for its
shape). Lookups read the world's rates, taxes, duties and units (copy-on-write tables, read without
copying); only ``record_entry`` writes, to the plain ``ledger`` list, and it checks everything
first, so a failing call leaves the state as it was. Bad input comes back as an ``Error: …`` text
the agent can read. Numbers come back as plain decimal text (money to the cent) so that an agent
can pass them straight on to the next tool.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import operator
import statistics
from collections.abc import Callable
from typing import Any, Literal

from envs.state import State, Table
from envs.tools import Toolset

MAX_EXPRESSION = 500
"""Longer expressions are refused: with no names or loops, this bounds the work one call can do."""
MAX_EXPONENT = 1000

_AMINO_ACIDS = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
CODONS = {"".join(c): aa for c, aa in zip(itertools.product("UCAG", repeat=3), _AMINO_ACIDS)}
"""The standard genetic code, mRNA codon -> one-letter amino acid (``*`` is a stop codon)."""
_COMPLEMENT = str.maketrans("ACGT", "TGCA")


# ---------------------------------------------------------------- formatting and lookups

def _number(value: float) -> str:
    """A result as plain text: whole numbers without a point (an integer's every digit), others to at
    most 6 decimals; a float from 1e16 up, where floats hold no fractions and few exact digits, as
    Python writes it (``1e+16``)."""
    if type(value) is int:
        return str(value)
    if not math.isfinite(value):
        raise ValueError("the result is too large or not a number")
    value = round(value, 6)
    if abs(value) >= 1e16:
        return repr(value)
    return str(int(value)) if value.is_integer() else f"{value:.6f}".rstrip("0")


def _money(value: float) -> str:
    """An amount to the cent (never ``-0.00``)."""
    if not math.isfinite(value):
        raise ValueError("the amount is too large or not a number")
    return f"{round(value, 2) + 0.0:.2f}"


def _lookup(table: Table, name: str, what: str) -> tuple[str, Any]:
    """The key and (read-only) record of ``table`` matching ``name`` case-insensitively; raises
    with the known keys, so that the agent can correct itself."""
    record = table.get_readonly(name)
    if record is not None:
        return name, record
    wanted = name.strip().lower()
    for key, record in table.items():
        if key.lower() == wanted:
            return key, record
    raise ValueError(f"unknown {what} {name!r}; known: {', '.join(table)}")


def _rate(state: State, from_currency: str, to_currency: str) -> tuple[str, str, float]:
    source, source_record = _lookup(state["currencies"], from_currency, "currency")
    target, target_record = _lookup(state["currencies"], to_currency, "currency")
    return source, target, target_record["per_usd"] / source_record["per_usd"]


# ---------------------------------------------------------------- trade

def list_currencies(state: State) -> str:
    """List the currencies of this world, by code and name.

    Args:
        state: The episode state.
    """
    return json.dumps([{"code": code, "name": c["name"]} for code, c in state["currencies"].items()])


def get_exchange_rate(state: State, from_currency: str, to_currency: str) -> str:
    """Get today's exchange rate: how many units of the target currency one unit of the source buys.

    Args:
        state: The episode state.
        from_currency: The source currency code, such as 'EUR'.
        to_currency: The target currency code, such as 'JPY'.
    """
    source, target, rate = _rate(state, from_currency, to_currency)
    decimals = max(0, 5 - math.floor(math.log10(rate)))  # 6 significant digits, never in e-notation
    return f"1 {source} = {rate:.{decimals}f} {target}"


def convert_currency(state: State, amount: float, from_currency: str, to_currency: str) -> str:
    """Convert an amount of money between currencies at today's rate, rounded to the cent.

    Args:
        state: The episode state.
        amount: The amount in the source currency.
        from_currency: The source currency code, such as 'EUR'.
        to_currency: The target currency code, such as 'JPY'.
    """
    _, target, rate = _rate(state, from_currency, to_currency)
    return f"{_money(amount * rate)} {target}"


def list_countries(state: State) -> str:
    """List the countries whose currency and consumption tax are known.

    Args:
        state: The episode state.
    """
    return json.dumps(list(state["countries"]))


def get_country(state: State, country: str) -> str:
    """Get a country's currency and its consumption tax (VAT, GST or sales tax) on goods, in percent.

    Args:
        state: The episode state.
        country: The country's name, such as 'Germany'.
    """
    name, record = _lookup(state["countries"], country, "country")
    return json.dumps({"country": name} | record)


def list_tariff_categories(state: State) -> str:
    """List the product categories that have an import duty rate.

    Args:
        state: The episode state.
    """
    return json.dumps(list(state["tariffs"]))


def get_tariff(state: State, category: str) -> str:
    """Get the import duty on a product category, in percent of the goods' price.

    Args:
        state: The episode state.
        category: The product category, such as 'electronics'.
    """
    name, duty = _lookup(state["tariffs"], category, "product category")
    return json.dumps({"category": name, "duty_percent": duty})


def add_percentage(state: State, amount: float, percent: float) -> str:
    """Add a percentage (a tax, a duty or a markup) to an amount: amount * (1 + percent / 100), rounded to the cent.

    Args:
        state: The episode state.
        amount: The amount before the percentage is added.
        percent: The percentage to add, such as 19 for 19%; negative for a discount.
    """
    return _money(amount * (1 + percent / 100))


def list_units(state: State) -> str:
    """List the units of measure by dimension, each with its size in the dimension's base unit (m, kg, l); temperature scales by name only.

    Args:
        state: The episode state.
    """
    out: dict[str, Any] = {}
    for name, unit in state["units"].items():
        if unit["factor"] is None:  # a temperature scale: converted by formula, not by a factor
            out.setdefault(unit["dimension"], []).append(name)
        else:
            out.setdefault(unit["dimension"], {})[name] = unit["factor"]
    return json.dumps(out)


_TO_KELVIN: dict[str, Callable[[float], float]] = {
    "celsius": lambda v: v + 273.15, "fahrenheit": lambda v: (v - 32) * 5 / 9 + 273.15, "kelvin": lambda v: v}
_FROM_KELVIN: dict[str, Callable[[float], float]] = {
    "celsius": lambda k: k - 273.15, "fahrenheit": lambda k: (k - 273.15) * 9 / 5 + 32, "kelvin": lambda k: k}


def convert_units(state: State, value: float, from_unit: str, to_unit: str) -> str:
    """Convert a quantity between two units of the same dimension (length, mass, volume or temperature).

    Args:
        state: The episode state.
        value: The quantity in the source unit.
        from_unit: The source unit, such as 'kg', 'mi', 'gal', 'celsius' or a trade unit such as 'crate'.
        to_unit: The target unit.
    """
    source, source_unit = _lookup(state["units"], from_unit, "unit")
    target, target_unit = _lookup(state["units"], to_unit, "unit")
    dimension = source_unit["dimension"]
    if target_unit["dimension"] != dimension:
        raise ValueError(f"cannot convert {source} ({dimension}) to {target} ({target_unit['dimension']})")
    if dimension == "temperature":
        kelvin = _TO_KELVIN[source](value)
        if kelvin < 0:
            raise ValueError(f"{_number(value)} {source} is below absolute zero")
        result = _FROM_KELVIN[target](kelvin)
    else:
        result = value * source_unit["factor"] / target_unit["factor"]
    return f"{_number(round(result, 4))} {target}"


# ---------------------------------------------------------------- arithmetic

def _power(base: float, exponent: float) -> float:
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"exponents above {MAX_EXPONENT} are not supported")
    result = float(base) ** exponent
    if isinstance(result, complex):
        raise ValueError("a negative number to a fractional power has no real value")
    return result


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
def _round(value: float, digits: int | None = None) -> float:
    # round(5, -10**7) computes 10**(10**7) exactly: a minute of one core for one short call
    if digits is not None and (type(digits) is not int or abs(digits) > MAX_EXPONENT):
        raise ValueError(f"round takes a whole number of digits from -{MAX_EXPONENT} to {MAX_EXPONENT}")
    return round(value, digits)


_FUNCTIONS: dict[str, Callable[..., Any]] = {"abs": abs, "round": _round, "sqrt": math.sqrt, "min": min, "max": max}


def _evaluate(node: ast.AST) -> float:
    """The value of a parsed expression made only of numbers, operators and ``_FUNCTIONS``."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords and node.args):
        return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))
    raise ValueError(f"unsupported element {ast.unparse(node)!r}; use numbers, + - * / // % **, "
                     f"parentheses and {', '.join(_FUNCTIONS)}")


def calculate(state: State, expression: str) -> str:
    """Evaluate an arithmetic expression, such as '(12.5 + 3) * 4 / 2'.

    Args:
        state: The episode state.
        expression: Numbers with + - * / // % ** (or ×, ÷, ^), parentheses, and the functions abs, round, sqrt, min and max.
    """
    if len(expression) > MAX_EXPRESSION:
        return f"Error: the expression is longer than {MAX_EXPRESSION} characters"
    text = expression.replace("×", "*").replace("÷", "/").replace("^", "**").replace("−", "-")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        return f"Error: could not parse the expression {expression!r} ({exc.msg})"
    except RecursionError:
        return "Error: the expression is nested too deeply"
    try:
        return _number(_evaluate(tree.body))
    except ZeroDivisionError:
        return "Error: division by zero"
    except OverflowError:
        return "Error: the result is too large"
    except RecursionError:
        return "Error: the expression is nested too deeply"


_STATISTICS: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum, "mean": statistics.fmean, "median": statistics.median, "min": min, "max": max,
    "count": len,
}


def aggregate(state: State, numbers: list[float], operation: Literal["sum", "mean", "median", "min", "max", "count"]) -> str:
    """Summarise a list of numbers with one statistic.

    Args:
        state: The episode state.
        numbers: The numbers, such as [3, 1.5, 7].
        operation: The statistic: sum, mean (the average), median, min, max or count.
    """
    if not numbers and operation not in ("sum", "count"):
        return f"Error: the {operation} of an empty list is undefined"
    return _number(_STATISTICS[operation](numbers))


# ---------------------------------------------------------------- text

def reverse_text(state: State, text: str) -> str:
    """Reverse a text character by character.

    Args:
        state: The episode state.
        text: The text to reverse.
    """
    return text[::-1]


def _shift_letter(char: str, shift: int) -> str:
    for alphabet in ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"):
        if char in alphabet:
            return alphabet[(alphabet.index(char) + shift) % 26]
    return char


def caesar_shift(state: State, text: str, shift: int) -> str:
    """Shift every letter of a text along the alphabet (a Caesar cipher); other characters stay as they are.

    Args:
        state: The episode state.
        text: The text to shift.
        shift: How many places to move each letter forward; negative moves back, so -3 undoes a shift of 3 (13 is ROT13).
    """
    return "".join(_shift_letter(char, shift) for char in text)


def count_occurrences(state: State, text: str, substring: str) -> str:
    """Count how many times a substring occurs in a text (case-sensitive, without overlaps).

    Args:
        state: The episode state.
        text: The text to search.
        substring: What to count, such as a letter.
    """
    if not substring:
        return "Error: the substring to count is empty"
    return str(text.count(substring))


def text_length(state: State, text: str) -> str:
    """Count the characters of a text, spaces included.

    Args:
        state: The episode state.
        text: The text to measure.
    """
    return str(len(text))


# ---------------------------------------------------------------- DNA

def _sequence(sequence: str, alphabet: str, kind: str) -> str:
    """``sequence`` upper-cased, or a ValueError naming the letters outside ``alphabet``."""
    seq = "".join(sequence.split()).upper()
    bad = sorted(set(seq) - set(alphabet))
    if bad:
        raise ValueError(f"a {kind} sequence holds only {', '.join(alphabet)}; found {', '.join(bad)}")
    if not seq:
        raise ValueError(f"the {kind} sequence is empty")
    return seq


def reverse_complement(state: State, sequence: str) -> str:
    """The reverse complement of a DNA sequence (the other strand, read 5' to 3').

    Args:
        state: The episode state.
        sequence: A DNA sequence of A, C, G and T.
    """
    return _sequence(sequence, "ACGT", "DNA").translate(_COMPLEMENT)[::-1]


def gc_content(state: State, sequence: str) -> str:
    """The GC content of a DNA or RNA sequence: the percentage of its bases that are G or C, to 2 decimals.

    Args:
        state: The episode state.
        sequence: A DNA or RNA sequence.
    """
    seq = _sequence(sequence, "ACGTU", "DNA or RNA")
    return f"{100 * (seq.count('G') + seq.count('C')) / len(seq):.2f}%"


def transcribe(state: State, sequence: str) -> str:
    """Transcribe the coding strand of DNA into mRNA (every T becomes U).

    Args:
        state: The episode state.
        sequence: The DNA coding strand, 5' to 3', of A, C, G and T.
    """
    return _sequence(sequence, "ACGT", "DNA").replace("T", "U")


def translate(state: State, sequence: str) -> str:
    """Translate mRNA into a protein (one-letter amino acid codes) with the standard genetic code.

    Reading starts at the first base, three bases per codon, and stops before the first stop codon;
    bases left over after the last whole codon are ignored.

    Args:
        state: The episode state.
        sequence: The mRNA sequence, of A, C, G and U (transcribe DNA first).
    """
    seq = _sequence(sequence, "ACGU", "mRNA")
    protein = []
    for start in range(0, len(seq) - 2, 3):
        amino_acid = CODONS[seq[start:start + 3]]
        if amino_acid == "*":
            break
        protein.append(amino_acid)
    return "".join(protein) or "(no amino acids: the sequence starts with a stop codon or is shorter than a codon)"


# ---------------------------------------------------------------- ledger

def record_entry(state: State, label: str, amount: float, currency: str) -> str:
    """Record an amount of money in the ledger under a new label.

    Args:
        state: The episode state.
        label: A label for the entry that no other entry has, such as 'INV-17'.
        amount: The amount, rounded to the cent when recorded.
        currency: The amount's currency code.
    """
    label = label.strip()
    if not label:
        return "Error: the label is empty"
    if any(entry["label"] == label for entry in state["ledger"]):
        return f"Error: the ledger already has an entry labelled {label!r}"
    code, _ = _lookup(state["currencies"], currency, "currency")
    entry = {"label": label, "amount": float(_money(amount)), "currency": code}
    state["ledger"].append(entry)
    return f"Recorded {label}: {_money(amount)} {code}"


def get_ledger(state: State) -> str:
    """List the ledger's entries in the order they were recorded.

    Args:
        state: The episode state.
    """
    return json.dumps(state["ledger"]) if state["ledger"] else "The ledger is empty."


TOOLSET = Toolset.of([
    list_currencies, get_exchange_rate, convert_currency, list_countries, get_country,
    list_tariff_categories, get_tariff, add_percentage, list_units, convert_units,
    calculate, aggregate,
    reverse_text, caesar_shift, count_occurrences, text_length,
    reverse_complement, gc_content, transcribe, translate,
    record_entry, get_ledger,
])
