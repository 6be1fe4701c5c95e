"""What every verifier finds in its namespace besides ``state_hash()``: readers of an answer.

Verifiers are written by a challenger, scripted or an LLM; most of them read a number or a text
from the agent's answer and compare it within a tolerance. With these helpers given, a verifier
says only what it checks (``return near(final_number(answer), 151.45, 0.15)``), which keeps the
tasks a model writes short and its mistakes few. The sandbox runs this module's source (standard
library only) in each verifier's namespace (:meth:`envs.sandbox.Sandbox.verify`); the scripted
challengers import it to check their own verifiers in process.
"""

import re

FINAL_NUMBER = r"(?<![\w.-])-?\d+(?:,\d{3})*(?:\.\d+)?"
"""A number in an answer, not counting digits inside labels such as 'INV-1043' or 'PO7'."""


def final_number(text):
    """The answer's last number (thousands separators allowed), or None."""
    found = re.findall(FINAL_NUMBER, text)
    return float(found[-1].replace(",", "")) if found else None


def final_text(text):
    """The answer after its last colon, without quotes or a final period, upper-cased."""
    tail = text.rsplit(":", 1)[-1].strip().strip("\"'`").rstrip(".").strip("\"'`")
    return " ".join(tail.split()).upper()


def same_text(answer, expected):
    """Whether the answer says ``expected``, case, spacing, quotes and a final full stop aside."""
    def norm(text):
        return " ".join(text.split()).strip(" \"'`.").casefold()
    return norm(answer) == norm(expected)


def same_numbers(answer, expected):
    """Whether the answer holds the same numbers as ``expected`` (units, currency signs and thousands
    separators aside), e.g. ``same_numbers("$1,299.00", "1299")``."""
    def numbers(text):
        return {float(n) for n in re.findall(r"\d+(?:\.\d+)?", re.sub(r"(?<=\d),(?=\d{3})", "", text))}
    return numbers(answer) == numbers(expected)


def near(value, expected, tolerance):
    """Whether ``value`` (None when the answer holds no number) is within ``tolerance`` of ``expected``."""
    return value is not None and abs(value - expected) <= tolerance


def ledger_holds(ledger, expected):
    """The ledger holds exactly the expected entries: label -> (currency, amount, tolerance)."""
    if sorted(entry["label"] for entry in ledger) != sorted(expected):
        return False
    return all(entry["currency"] == expected[entry["label"]][0]
               and abs(entry["amount"] - expected[entry["label"]][1]) <= expected[entry["label"]][2]
               for entry in ledger)
