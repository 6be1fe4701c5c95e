"""Calculation worlds: the exchange rates, consumption taxes, import duties and trade units of one seed.

A world is JSON data; its four reference collections are tables (:mod:`envs.state`), shared by every
episode and never copied, since only the ledger is ever written (and verifiers, which run in the
sandbox, then get just the ledger up front and fetch any record they read):

- ``currencies[code]``: ``name`` and ``per_usd`` (how many units one US dollar buys);
- ``countries[name]``: its ``currency`` and ``tax_percent`` (VAT, GST or sales tax on goods);
- ``tariffs[category]``: the import duty on a product category, in percent of the price;
- ``units[name]``: ``dimension`` (length, mass, volume, temperature) and ``factor``, the unit's size in
  its dimension's base unit (m, kg, l); the three temperature scales have none (they convert by formula);
- ``ledger``: the entries an episode has recorded (empty in the base state).

Every number is drawn around a plausible value from the seed, so that an agent has to look it up
with the tools: the real world's rates are wrong here, and so are another seed's. The trade units
(crate, sack, bolt, barrel, drum) have world-specific sizes for the same reason.
"""

from __future__ import annotations

import random

from envs.state import State, make_base

TABLES = ("currencies", "countries", "tariffs", "units")

CURRENCIES: dict[str, tuple[str, float]] = {  # code: (name, typical units per US dollar)
    "USD": ("US dollar", 1.0), "EUR": ("euro", 0.92), "GBP": ("pound sterling", 0.79),
    "JPY": ("Japanese yen", 150.0), "CHF": ("Swiss franc", 0.88), "CAD": ("Canadian dollar", 1.36),
    "AUD": ("Australian dollar", 1.52), "INR": ("Indian rupee", 83.0), "CNY": ("Chinese yuan", 7.2),
    "BRL": ("Brazilian real", 5.0), "MXN": ("Mexican peso", 17.0), "SEK": ("Swedish krona", 10.5),
    "NOK": ("Norwegian krone", 10.6), "ZAR": ("South African rand", 18.5),
    "KRW": ("South Korean won", 1330.0), "SGD": ("Singapore dollar", 1.34),
}

COUNTRIES: dict[str, tuple[str, float]] = {  # name: (currency, typical consumption tax in percent)
    "United States": ("USD", 7.0), "Germany": ("EUR", 19.0), "France": ("EUR", 20.0),
    "Spain": ("EUR", 21.0), "Italy": ("EUR", 22.0), "United Kingdom": ("GBP", 20.0),
    "Japan": ("JPY", 10.0), "Switzerland": ("CHF", 8.1), "Canada": ("CAD", 5.0),
    "Australia": ("AUD", 10.0), "India": ("INR", 18.0), "China": ("CNY", 13.0),
    "Brazil": ("BRL", 17.0), "Mexico": ("MXN", 16.0), "Sweden": ("SEK", 25.0),
    "Norway": ("NOK", 25.0), "South Africa": ("ZAR", 15.0), "South Korea": ("KRW", 10.0),
    "Singapore": ("SGD", 9.0),
}

CATEGORIES = (
    "electronics", "textiles", "footwear", "furniture", "toys", "steel", "coffee", "wine", "cheese",
    "bicycles", "books", "cosmetics", "tools", "ceramics", "glassware", "musical instruments",
)

STANDARD_UNITS: dict[str, tuple[str, float]] = {  # name: (dimension, size in the base unit: m, kg, l)
    "mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "km": ("length", 1000.0),
    "in": ("length", 0.0254), "ft": ("length", 0.3048), "yd": ("length", 0.9144), "mi": ("length", 1609.344),
    "g": ("mass", 0.001), "kg": ("mass", 1.0), "t": ("mass", 1000.0), "oz": ("mass", 0.028349523125),
    "lb": ("mass", 0.45359237),
    "ml": ("volume", 0.001), "l": ("volume", 1.0), "m3": ("volume", 1000.0), "qt": ("volume", 0.946352946),
    "gal": ("volume", 3.785411784),
}
TEMPERATURE_SCALES = ("celsius", "fahrenheit", "kelvin")

TRADE_UNITS: dict[str, tuple[str, float, float]] = {  # name: (dimension, smallest, largest size)
    "crate": ("mass", 12.0, 30.0), "sack": ("mass", 25.0, 60.0), "bolt": ("length", 25.0, 60.0),
    "barrel": ("volume", 150.0, 180.0), "drum": ("volume", 190.0, 220.0),
}


def _significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def world_data(seed: int) -> dict:
    """The plain data of world ``seed`` (see the module docstring for its shape)."""
    rng = random.Random(f"calculation-world-{seed}")
    currencies = {code: {"name": name, "per_usd": 1.0 if code == "USD" else _significant(rate * rng.uniform(0.85, 1.15))}
                  for code, (name, rate) in CURRENCIES.items()}
    countries = {name: {"currency": code, "tax_percent": max(0.0, round(2 * (tax + rng.uniform(-2, 2))) / 2)}
                 for name, (code, tax) in COUNTRIES.items()}
    tariffs = {category: round(2 * rng.uniform(0, 25)) / 2 for category in CATEGORIES}
    units = {name: {"dimension": dim, "factor": factor} for name, (dim, factor) in STANDARD_UNITS.items()}
    units |= {name: {"dimension": "temperature", "factor": None} for name in TEMPERATURE_SCALES}
    units |= {name: {"dimension": dim, "factor": round(2 * rng.uniform(low, high)) / 2}
              for name, (dim, low, high) in TRADE_UNITS.items()}
    return {"currencies": currencies, "countries": countries, "tariffs": tariffs, "units": units, "ledger": []}


def build_world(seed: int) -> State:
    """The base state of world ``seed``."""
    return make_base(world_data(seed), TABLES)
