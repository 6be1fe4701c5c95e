"""Airline worlds: tau-bench's data files, or a synthetic airline of any size drawn from a seed.

A world is a dict of three tables keyed by id, in tau-bench's shape, on tau-bench's calendar (May
2024, "today" being the 15th: earlier flights have landed or were cancelled, later ones are bookable):

- ``users[user_id]``: ``name``, ``address``, ``email``, ``dob``, ``payment_methods`` (credit cards,
  gift cards and certificates with an ``amount``), ``saved_passengers``, ``membership`` (regular,
  silver, gold) and the ids of their ``reservations``;
- ``flights["HAT001"]``: route, scheduled times (an arrival the next day ends in ``+1``) and
  ``dates``: per day a ``status`` with its times, or, when ``available``, seats and prices per cabin;
- ``reservations["ZFA04Y"]``: user, route, ``flight_type``, ``cabin``, priced ``flights``,
  ``passengers``, ``payment_history``, ``created_at``, baggage counts and ``insurance``.
"""

from __future__ import annotations

import itertools
import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from envs.airline.tools import AIRPORTS
from envs.retail.world import FIRST_NAMES, LAST_NAMES, draw_address, gc_paused, unique_id

TABLES = ("users", "flights", "reservations")

CABINS = ("basic_economy", "economy", "business")
PRICE_RANGES = {"basic_economy": (50, 100), "economy": (100, 200), "business": (200, 500)}
DAYS = range(1, 31)
TODAY = 15
RESERVATION_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
RESERVATIONS_CUM_WEIGHTS = tuple(itertools.accumulate((5, 5, 15, 14, 16, 13, 10, 7, 5, 3, 2)))  # 0 to 10
PASSENGERS_CUM_WEIGHTS = tuple(itertools.accumulate((46, 33, 16, 5)))  # 1 to 4
BAGGAGES_CUM_WEIGHTS = tuple(itertools.accumulate((50, 22, 14, 8, 6)))  # 0 to 4
"""Cumulative weights, computed once: ``rng.choices`` would otherwise add them up on every draw."""


def load(data_dir: Path) -> dict[str, Any]:
    """Read ``users.json``, ``flights.json`` and ``reservations.json`` (tau-bench's airline data folder)."""
    data_dir = Path(data_dir)
    return {name: json.loads((data_dir / f"{name}.json").read_text()) for name in TABLES}


def _clock(minutes: int) -> str:
    """A scheduled time of day; ``+1`` marks the next day, as upstream writes it."""
    day, rest = divmod(minutes, 24 * 60)
    return f"{rest // 60:02d}:{rest % 60:02d}:00" + ("+1" if day else "")


def _day(rng: random.Random, day: int, departure: int, duration: int) -> dict[str, Any]:
    """One date of a flight's calendar: what happened before today, what is bookable after."""
    if day > TODAY:
        return {
            "status": "available",
            "available_seats": {cabin: rng.randint(0, 20) for cabin in CABINS},
            "prices": {cabin: rng.randint(*PRICE_RANGES[cabin]) for cabin in CABINS},
        }
    start = datetime(2024, 5, day) + timedelta(minutes=departure)
    leave = (start + timedelta(minutes=rng.randint(-30, 40))).isoformat()
    land = (start + timedelta(minutes=duration + rng.randint(-30, 40))).isoformat()
    if rng.random() < 0.08:
        return {"status": "cancelled"}
    if day < TODAY:
        return {"status": "landed", "actual_departure_time_est": leave, "actual_arrival_time_est": land}
    status = rng.choice(("landed", "flying", "on time", "delayed"))
    if status == "landed":
        return {"status": status, "actual_departure_time_est": leave, "actual_arrival_time_est": land}
    if status == "flying":
        return {"status": status, "actual_departure_time_est": leave, "estimated_arrival_time_est": land}
    if status == "delayed":
        late = timedelta(minutes=rng.randint(30, 240))
        leave = (start + late).isoformat()
        land = (start + late + timedelta(minutes=duration)).isoformat()
    return {"status": status, "estimated_departure_time_est": leave, "estimated_arrival_time_est": land}


def _flight(rng: random.Random, number: int, origin: str, destination: str) -> dict[str, Any]:
    departure = rng.randrange(0, 24 * 60, 30)
    duration = rng.randrange(60, 6 * 60 + 1, 30)
    flight_number = f"HAT{number:03d}"
    return {
        "flight_number": flight_number,
        "origin": origin,
        "destination": destination,
        "scheduled_departure_time_est": _clock(departure),
        "scheduled_arrival_time_est": _clock(departure + duration),
        "dates": {f"2024-05-{day:02d}": _day(rng, day, departure, duration) for day in DAYS},
    }


def _flights(rng: random.Random, count: int) -> dict[str, Any]:
    """``count`` flights, in pairs out and back over the same route, so that round trips exist."""
    airports = list(AIRPORTS)
    flights = {}
    for number in range(1, count + 1, 2):
        origin, destination = rng.sample(airports, 2)
        for n, route in ((number, (origin, destination)), (number + 1, (destination, origin))):
            if n <= count:
                flight = _flight(rng, n, *route)
                flights[flight["flight_number"]] = flight
    return flights


def _person(rng: random.Random) -> dict[str, str]:
    return {"first_name": rng.choice(FIRST_NAMES), "last_name": rng.choice(LAST_NAMES),
            "dob": f"{rng.randint(1945, 2010)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"}


def _payment_methods(rng: random.Random, ids: set[str]) -> dict[str, Any]:
    sources = ["credit_card"] * rng.randint(1, 2) + ["gift_card"] * rng.choice((0, 0, 1, 2)) \
        + ["certificate"] * rng.choice((0, 0, 1, 2))
    rng.shuffle(sources)
    methods = {}
    for source in sources:
        method_id = unique_id(rng, ids, lambda r, s=source: f"{s}_{r.randint(1000000, 9999999)}")
        if source == "credit_card":
            methods[method_id] = {"source": source, "brand": rng.choice(("visa", "mastercard")),
                                  "last_four": f"{rng.randint(0, 9999):04d}", "id": method_id}
        elif source == "gift_card":
            methods[method_id] = {"source": source, "amount": rng.randint(0, 300), "id": method_id}
        else:
            methods[method_id] = {"source": source, "amount": rng.choice((50, 100, 150, 250, 500)), "id": method_id}
    return methods


def _segment(rng: random.Random, flight: dict, day: int, cabin: str) -> dict[str, Any]:
    """A booked leg, priced from the day's fares when they are still on sale."""
    date = f"2024-05-{day:02d}"
    on_date = flight["dates"][date]
    price = on_date["prices"][cabin] if on_date["status"] == "available" else rng.randint(*PRICE_RANGES[cabin])
    return {"origin": flight["origin"], "destination": flight["destination"],
            "flight_number": flight["flight_number"], "date": date, "price": price}


def _itinerary(rng: random.Random, flights: list[dict], from_airport: dict[str, list[dict]],
               routes: dict[tuple[str, str], list[dict]], cabin: str) -> tuple[str, list[dict]]:
    """Legs out (direct or one stop) and, for most round trips, a direct flight back."""
    first = rng.choice(flights)
    day = rng.randint(1, 27)
    legs = [_segment(rng, first, day, cabin)]
    destination = first["destination"]
    second = rng.choice(from_airport[destination]) if from_airport[destination] and rng.random() < 0.5 else None
    if second is not None and second["destination"] != first["origin"]:
        day2 = day + 1 if first["scheduled_arrival_time_est"].endswith("+1") else day
        legs.append(_segment(rng, second, day2, cabin))
        destination = second["destination"]
    back = routes.get((destination, first["origin"]))
    if back and rng.random() < 0.6:
        legs.append(_segment(rng, rng.choice(back), min(30, day + rng.randint(1, 3)), cabin))
        return "round_trip", legs
    return "one_way", legs


def generate(seed: int, users: int = 50) -> dict[str, Any]:
    """A synthetic airline: ``users`` customers with about four reservations each, flying between
    tau-bench's 20 airports (100 to 999 flights, growing with the number of users).

    Deterministic for a seed and O(users): 100,000 users take a few seconds.
    """
    with gc_paused():
        return _generate(random.Random(seed), users)


def _generate(rng: random.Random, users: int) -> dict[str, Any]:
    flights = _flights(rng, min(999, max(100, users * 3 // 5)))
    flight_list = list(flights.values())
    from_airport: dict[str, list[dict]] = {code: [] for code in AIRPORTS}
    routes: dict[tuple[str, str], list[dict]] = {}
    for flight in flight_list:
        from_airport[flight["origin"]].append(flight)
        routes.setdefault((flight["origin"], flight["destination"]), []).append(flight)

    ids: set[str] = set()
    user_ids: set[str] = set()
    reservation_ids: set[str] = set()
    user_table: dict[str, Any] = {}
    reservations: dict[str, Any] = {}
    for _ in range(users):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        user_id = unique_id(rng, user_ids, lambda r: f"{first.lower()}_{last.lower()}_{r.randint(1000, 9999)}")
        user = {
            "name": {"first_name": first, "last_name": last},
            "address": draw_address(rng),
            "email": f"{first.lower()}.{last.lower()}{rng.randint(1000, 9999)}@example.com",
            "dob": f"{rng.randint(1950, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "payment_methods": _payment_methods(rng, ids),
            "saved_passengers": [_person(rng) for _ in range(rng.randint(1, 2))],
            "membership": rng.choice(("regular", "silver", "gold")),
            "reservations": [],
        }
        payable = [m for m, v in user["payment_methods"].items() if v["source"] != "certificate"]
        for _ in range(rng.choices(range(11), cum_weights=RESERVATIONS_CUM_WEIGHTS)[0]):
            # upstream's own new bookings are HATHAT, HATHAU, ...: never draw one of those
            reservation_id = unique_id(rng, reservation_ids, lambda r: "".join(r.choices(RESERVATION_ID_CHARS, k=6)))
            if reservation_id.startswith("HATH"):
                continue
            cabin = rng.choice(CABINS)
            flight_type, legs = _itinerary(rng, flight_list, from_airport, routes, cabin)
            passengers = [{"first_name": first, "last_name": last, "dob": user["dob"]}] if rng.random() < 0.6 else []
            count = rng.choices((1, 2, 3, 4), cum_weights=PASSENGERS_CUM_WEIGHTS)[0]
            passengers += [_person(rng) for _ in range(count - len(passengers))]
            insurance = rng.choice(("yes", "no"))
            amount = (sum(leg["price"] for leg in legs) + (30 if insurance == "yes" else 0)) * len(passengers)
            created = datetime(2024, 5, 1) + timedelta(seconds=rng.randrange(-10 * 86400, 14 * 86400))
            reservations[reservation_id] = {
                "reservation_id": reservation_id,
                "user_id": user_id,
                "origin": legs[0]["origin"],
                "destination": legs[-1]["origin"] if flight_type == "round_trip" else legs[-1]["destination"],
                "flight_type": flight_type,
                "cabin": cabin,
                "flights": legs,
                "passengers": passengers,
                "payment_history": [{"payment_id": rng.choice(payable), "amount": amount}],
                "created_at": created.isoformat(),
                "total_baggages": rng.choices(range(5), cum_weights=BAGGAGES_CUM_WEIGHTS)[0],
                "nonfree_baggages": 0,
                "insurance": insurance,
            }
            user["reservations"].append(reservation_id)
        user_table[user_id] = user
    return {"users": user_table, "flights": flights, "reservations": reservations}
