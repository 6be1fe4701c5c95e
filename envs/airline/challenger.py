"""The airline scripted challenger: tau-bench-style reservation tasks on a generated airline.

Families: cancel a reservation, add checked bags (paying for the extra ones), correct a passenger's
details, send a goodwill certificate, and look-ups of a reservation's trip and of the cheapest direct
flight. Each task is judged by its outcome (:mod:`envs.scripted`); failure cases are an agent's
near-misses: the wrong reservation, bag count, payment method, passenger, amount or answer, or
doing nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

from envs.cat import Attempt, CodeAsTask
from envs.scripted import Draft, call, finish_drafts
from envs.state import State, fork


def _user(rng: random.Random, view: State) -> tuple[str, dict[str, Any]]:
    user_id = rng.choice(list(view["users"]))
    return user_id, view["users"].get_readonly(user_id)


def _reservations(view: State, user: dict[str, Any]) -> list[dict[str, Any]]:
    found = (view["reservations"].get_readonly(r) for r in user["reservations"])
    return [r for r in found if r is not None and r.get("status") != "cancelled"]


def _trip(r: dict[str, Any]) -> str:
    return f"{r['origin']} to {r['destination']} ({r['flight_type'].replace('_', ' ')}, {r['cabin'].replace('_', ' ')})"


def _cancel(rng: random.Random, view: State) -> Draft | None:
    user_id, user = _user(rng, view)
    mine = _reservations(view, user)
    if not mine:
        return None
    r = rng.choice(mine)
    rid = r["reservation_id"]
    refund = sum(p["amount"] for p in r["payment_history"])
    others = [x for x in view["reservations"].values() if x["reservation_id"] != rid and x.get("status") != "cancelled"]
    same_trip = [x for x in mine if _trip(x) == _trip(r)]
    if len(same_trip) > 1:
        return None
    # The user names the trip, not the reservation: the agent reads each of theirs to find it.
    act = (call("get_user_details", user_id=user_id),
           *(call("get_reservation_details", reservation_id=x["reservation_id"]) for x in mine),
           call("cancel_reservation", reservation_id=rid))
    answer = f"Reservation {rid} is cancelled; {refund} will be refunded."
    return Draft("cancel", f"You are helping the user {user_id}. Cancel their reservation from {_trip(r)} "
                 "and tell them how much is refunded.", Attempt(act, answer), (
                     Attempt(act[:-1], "I cancelled it."),
                     Attempt((call("cancel_reservation", reservation_id=rng.choice(others)["reservation_id"]),), answer),
                     Attempt(act, f"Reservation {rid} is cancelled; {refund + 100} will be refunded."),
                 ), (str(refund),))


def _bags(rng: random.Random, view: State) -> Draft | None:
    user_id, user = _user(rng, view)
    mine = _reservations(view, user)
    methods = [m for m in user["payment_methods"].values() if m["source"] == "credit_card"]
    if not mine or not methods:
        return None
    r = rng.choice(mine)
    extra = rng.randint(1, 3)
    pay = rng.choice(methods)["id"]
    rid = r["reservation_id"]

    def bags(total: int, nonfree: int, payment: str) -> Any:
        return call("update_reservation_baggages", reservation_id=rid, total_baggages=total,
                    nonfree_baggages=nonfree, payment_id=payment)

    total, nonfree = r["total_baggages"] + extra, r["nonfree_baggages"] + extra
    act = (call("get_reservation_details", reservation_id=rid), bags(total, nonfree, pay))
    cost = 50 * extra
    answer = f"Added {extra} bag(s) for {cost} dollars."
    return Draft("bags", f"You are helping the user {user_id}. On reservation {rid} they want {extra} more checked "
                 f"bag(s), none of them free, paid with their credit card {pay}. Tell them what it costs.",
                 Attempt(act, answer), (
                     Attempt((act[0], bags(total, r["nonfree_baggages"], pay)), answer),
                     Attempt((act[0], bags(total + 1, nonfree + 1, pay)), answer),
                     Attempt(act[:1], answer),
                     Attempt(act, f"Added {extra} bag(s) for {cost + 50} dollars."),
                 ), (str(cost),))


def _passenger(rng: random.Random, view: State) -> Draft | None:
    user_id, user = _user(rng, view)
    mine = _reservations(view, user)
    if not mine:
        return None
    r = rng.choice(mine)
    rid = r["reservation_id"]
    index = rng.randrange(len(r["passengers"]))
    old = r["passengers"][index]
    year = int(old["dob"][:4]) + rng.choice((-2, -1, 1, 2))
    fixed = dict(old, dob=f"{year}{old['dob'][4:]}")
    people = [dict(p) for p in r["passengers"]]
    people[index] = fixed
    wrong_year = [dict(p) for p in r["passengers"]]
    wrong_year[index] = dict(old, dob=f"{year + 10}{old['dob'][4:]}")
    act = (call("get_reservation_details", reservation_id=rid),
           call("update_reservation_passengers", reservation_id=rid, passengers=people))
    failures = [
        Attempt((act[0], call("update_reservation_passengers", reservation_id=rid, passengers=wrong_year)), "Done."),
        Attempt(act[:1], "Done."),
        Attempt((act[0], call("update_reservation_passengers", reservation_id=rid, passengers=[fixed])), "Done."),
    ]
    return Draft("passenger", f"You are helping the user {user_id}. On reservation {rid}, passenger "
                 f"{old['first_name']} {old['last_name']} has the wrong date of birth: it should be {fixed['dob']}. "
                 "Correct it and keep every other passenger as is.", Attempt(act, "The passenger is corrected."),
                 tuple(failures) if len(r["passengers"]) > 1 else tuple(failures[:2]) + (
                     Attempt((act[0], call("send_certificate", user_id=user_id, amount=50)), "Done."),))


def _certificate(rng: random.Random, view: State) -> Draft | None:
    user_id, user = _user(rng, view)
    amount = rng.choice((50, 100, 150, 200, 250, 300))
    other = rng.choice([u for u in view["users"] if u != user_id])
    act = (call("get_user_details", user_id=user_id), call("send_certificate", user_id=user_id, amount=amount))
    name = f"{user['name']['first_name']} {user['name']['last_name']}"
    return Draft("certificate", f"You are helping {name} (user id {user_id}), whose flight was delayed. As a "
                 f"gesture of goodwill, send them a certificate of {amount} dollars.",
                 Attempt(act, f"A {amount} dollar certificate is on its way."), (
                     Attempt((act[0], call("send_certificate", user_id=user_id, amount=amount + 50)), "Done."),
                     Attempt((call("send_certificate", user_id=other, amount=amount),), "Done."),
                     Attempt(act[:1], "Done."),
                 ))


def _trip_lookup(rng: random.Random, view: State) -> Draft | None:
    user_id, user = _user(rng, view)
    mine = _reservations(view, user)
    if not mine:
        return None
    r = rng.choice(mine)
    rid = r["reservation_id"]
    steps = (call("get_reservation_details", reservation_id=rid),)
    required = (r["origin"], r["destination"], str(len(r["passengers"])))
    answer = f"Reservation {rid}: {r['origin']} to {r['destination']}, {len(r['passengers'])} passenger(s)."
    return Draft("trip_lookup", f"You are helping the user {user_id}. Tell them where their reservation {rid} "
                 "departs from (airport code), where it goes, and for how many passengers. Change nothing.",
                 Attempt(steps, answer), (
                     Attempt(steps, f"Reservation {rid}: {r['destination']} to somewhere, {len(r['passengers']) + 1} passenger(s)."),
                     Attempt((*steps, call("cancel_reservation", reservation_id=rid)), answer),
                     Attempt((), "I do not know."),
                 ), required)


def _cheapest(rng: random.Random, view: State) -> Draft | None:
    from envs.airline.tools import search_direct_flight

    flight = view["flights"].get_readonly(rng.choice(list(view["flights"])))
    dates = [d for d, day in flight["dates"].items() if day["status"] == "available"]
    if not dates:
        return None
    date = rng.choice(dates)
    found = json.loads(search_direct_flight(view, flight["origin"], flight["destination"], date))
    cabin = rng.choice(("economy", "business"))
    if not found:
        return None
    best = min(found, key=lambda f: f["prices"][cabin])
    prices = sorted({f["prices"][cabin] for f in found})
    wrong = prices[1] if len(prices) > 1 else best["prices"][cabin] + 1
    steps = (call("search_direct_flight", origin=flight["origin"], destination=flight["destination"], date=date),)
    answer = f"The cheapest is {best['flight_number']} at {best['prices'][cabin]} dollars."
    return Draft("cheapest", f"Which direct flight from {flight['origin']} to {flight['destination']} on {date} has "
                 f"the cheapest {cabin} seat, and what does it cost? Give the flight number and the price. Book nothing.",
                 Attempt(steps, answer), (
                     Attempt(steps, f"The cheapest costs {wrong} dollars."),
                     Attempt(steps, f"It is {best['flight_number']}."),
                     Attempt((), "There is none."),
                 ), (best["flight_number"], str(best["prices"][cabin])))


FAMILIES: tuple[Callable[[random.Random, State], Draft | None], ...] = (
    _cancel, _bags, _passenger, _certificate, _trip_lookup, _cheapest)


def _drafts(rng: random.Random, view: State) -> Iterator[Draft | None]:
    while True:
        for family in FAMILIES:
            yield family(rng, view)


def make_tasks(seed: int, n: int, users: int = 50) -> list[CodeAsTask]:
    """``n`` distinct airline tasks in the generated world ``{"seed": seed, "users": users}``."""
    from envs.airline.env import AirlineEnv

    world = {"seed": seed, "users": users}
    base = AirlineEnv.base_state(world)
    return finish_drafts(_drafts(random.Random(seed), fork(base)), domain="airline", world=world, base=base,
                         toolset=AirlineEnv.toolset, seed=seed, n=n, max_tries=n * 20)
