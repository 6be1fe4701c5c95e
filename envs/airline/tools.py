"""tau-bench's 14 airline tools, one plain function each, over an airline state.

Each tool reads, checks and writes in upstream's order, gives the agent exactly the text upstream
gives and raises where upstream raises, so that ``Toolset.call`` turns the exception into the same
``Error: …`` observation; upstream's quirks are kept on purpose (e.g. ``get_reservation_details``
answers "user not found", a one-stop search reads the second flight's prices on the first flight's
date, booking does not take seats), because tau-bench's gold answers depend on them. In upstream
mode that holds for any arguments, and what a failing call wrote stays written (paying twice with
one certificate deletes it, then fails); strict mode checks the arguments first, undoes a failed
call, and departs from upstream in two places marked by :func:`envs.tools.tool_mode` (a fourth
booking, a fourth certificate). The state, ``data`` as upstream names it, holds the tables
``users``, ``flights`` and ``reservations`` (copy-on-write :class:`envs.state.Table` views).

The docstrings are the schemas: their summaries and argument texts are upstream's, word for word.
"""

from __future__ import annotations

import json
from typing import Literal

from envs.retail.tools import calculate, transfer_to_human_agents  # upstream ships identical copies
from envs.state import copy_json
from envs.tools import tool_mode

UPSTREAM_PACKAGE = "tau_bench.envs.airline.tools"
"""Where upstream keeps these tools (for upstream mode's error texts: see :func:`envs.taubench.upstream_tool`)."""

AIRPORTS = {
    "SFO": "San Francisco", "JFK": "New York", "LAX": "Los Angeles", "ORD": "Chicago", "DFW": "Dallas",
    "DEN": "Denver", "SEA": "Seattle", "ATL": "Atlanta", "MIA": "Miami", "BOS": "Boston",
    "PHX": "Phoenix", "IAH": "Houston", "LAS": "Las Vegas", "MCO": "Orlando", "EWR": "Newark",
    "CLT": "Charlotte", "MSP": "Minneapolis", "DTW": "Detroit", "PHL": "Philadelphia", "LGA": "LaGuardia",
}
"""The airline's airports (IATA code -> city), a fixed list upstream; generated worlds fly only these."""

NEW_RESERVATION_IDS = ("HATHAT", "HATHAU", "HATHAV", "HATHAW", "HATHAX", "HATHAY", "HATHAZ")
"""Ids for bookings made in an episode. Upstream has the first three and gives the third again to
every later booking, which overwrites it; strict mode goes on with the others instead."""

CERTIFICATE_IDS = ("certificate_3221322", "certificate_3221323", "certificate_3221324")
"""Ids for certificates sent in an episode (upstream's: it assumes at most three per task)."""

Cabin = Literal["basic_economy", "economy", "business"]


def _new_reservation_id(reservations: dict) -> str | None:
    """The id of the next booking, or ``None`` when strict mode has none left."""
    if tool_mode() == "strict":
        return next((r for r in NEW_RESERVATION_IDS if r not in reservations), None)
    return next((r for r in NEW_RESERVATION_IDS[:2] if r not in reservations), NEW_RESERVATION_IDS[2])


def _price_segment(data: dict, flight: dict, cabin: str, passengers: list) -> str | None:
    """Complete ``flight`` (the caller's copy) with its price and airports; upstream's error text
    when it cannot be booked for ``passengers``."""
    flight_number = flight["flight_number"]
    if flight_number not in data["flights"]:
        return f"Error: flight {flight_number} not found"
    flight_data = data["flights"][flight_number]
    if flight["date"] not in flight_data["dates"]:
        return f"Error: flight {flight_number} not found on date {flight['date']}"
    date_data = flight_data["dates"][flight["date"]]
    if date_data["status"] != "available":
        return f"Error: flight {flight_number} not available on date {flight['date']}"
    if date_data["available_seats"][cabin] < len(passengers):
        return f"Error: not enough seats on flight {flight_number}"
    flight["price"] = date_data["prices"][cabin]
    flight["origin"] = flight_data["origin"]
    flight["destination"] = flight_data["destination"]
    return None


def book_reservation(
    data: dict,
    user_id: str,
    origin: str,
    destination: str,
    flight_type: Literal["one_way", "round_trip"],
    cabin: Cabin,
    flights: list[dict],
    passengers: list[dict],
    payment_methods: list[dict],
    total_baggages: int,
    nonfree_baggages: int,
    insurance: Literal["yes", "no"],
) -> str:
    """Book a reservation.

    Args:
        data: The domain state (not shown to the agent).
        user_id: The ID of the user to book the reservation, such as 'sara_doe_496'.
        origin: The IATA code for the origin city, such as 'SFO'.
        destination: The IATA code for the destination city, such as 'JFK'.
        flight_type: The type of the trip, one way or round trip.
        cabin: The cabin class of the reservation.
        flights: An array of objects containing details about each piece of flight. Each object
            has 'flight_number' (flight number, such as 'HAT001') and 'date' (the date for the
            flight in the format 'YYYY-MM-DD', such as '2024-05-01').
        passengers: An array of objects containing details about each passenger. Each object has
            'first_name' (such as 'Noah'), 'last_name' (such as 'Brown') and 'dob' (the date of
            birth in the format 'YYYY-MM-DD', such as '1990-01-01').
        payment_methods: An array of objects containing details about each payment method. Each
            object has 'payment_id' (the payment id stored in user profile, such as
            'credit_card_7815826', 'gift_card_7815826', 'certificate_7815826') and 'amount' (the
            amount to be paid).
        total_baggages: The total number of baggage items included in the reservation.
        nonfree_baggages: The number of non-free baggage items included in the reservation.
        insurance: Whether the reservation includes travel insurance.
    """
    reservations, users = data["reservations"], data["users"]
    if user_id not in users:
        return "Error: user not found"
    user = users[user_id]
    reservation_id = _new_reservation_id(reservations)
    if reservation_id is None:
        return "Error: too many reservations booked in this conversation"

    segments = copy_json(flights)
    total_price = 0
    for flight in segments:
        problem = _price_segment(data, flight, cabin, passengers)
        if problem:
            return problem
        total_price += flight["price"] * len(passengers)
    if insurance == "yes":
        total_price += 30 * len(passengers)
    total_price += 50 * nonfree_baggages

    methods = user["payment_methods"]
    for payment in payment_methods:
        payment_id, amount = payment["payment_id"], payment["amount"]
        if payment_id not in methods:
            return f"Error: payment method {payment_id} not found"
        if methods[payment_id]["source"] in ["gift_card", "certificate"] and methods[payment_id]["amount"] < amount:
            return f"Error: not enough balance in payment method {payment_id}"
    paid = sum(payment["amount"] for payment in payment_methods)
    if paid != total_price:
        return f"Error: payment amount does not add up, total price is {total_price}, but paid {paid}"

    reservation = {
        "reservation_id": reservation_id,
        "user_id": user_id,
        "origin": origin,
        "destination": destination,
        "flight_type": flight_type,
        "cabin": cabin,
        "flights": segments,
        "passengers": copy_json(passengers),
        "payment_history": copy_json(payment_methods),
        "created_at": "2024-05-15T15:00:00",
        "total_baggages": total_baggages,
        "nonfree_baggages": nonfree_baggages,
        "insurance": insurance,
    }
    for payment in payment_methods:  # a certificate paid with twice is gone the second time: KeyError
        payment_id, amount = payment["payment_id"], payment["amount"]
        if methods[payment_id]["source"] == "gift_card":
            methods[payment_id]["amount"] -= amount
        elif methods[payment_id]["source"] == "certificate":
            del methods[payment_id]
    reservations[reservation_id] = reservation
    user["reservations"].append(reservation_id)
    return json.dumps(reservation)


def cancel_reservation(data: dict, reservation_id: str) -> str:
    """Cancel the whole reservation.

    Args:
        data: The domain state (not shown to the agent).
        reservation_id: The reservation ID, such as 'ZFA04Y'.
    """
    reservations = data["reservations"]
    if reservation_id not in reservations:
        return "Error: reservation not found"
    reservation = reservations[reservation_id]
    refunds = [{"payment_id": p["payment_id"], "amount": -p["amount"]} for p in reservation["payment_history"]]
    reservation["payment_history"].extend(refunds)
    reservation["status"] = "cancelled"
    return json.dumps(reservation)


def get_reservation_details(data: dict, reservation_id: str) -> str:
    """Get the details of a reservation.

    Args:
        data: The domain state (not shown to the agent).
        reservation_id: The reservation id, such as '8JX2WO'.
    """
    if reservation_id in data["reservations"]:
        return json.dumps(data["reservations"][reservation_id])
    return "Error: user not found"  # sic: upstream's text


def get_user_details(data: dict, user_id: str) -> str:
    """Get the details of an user, including their reservations.

    Args:
        data: The domain state (not shown to the agent).
        user_id: The user id, such as 'sara_doe_496'.
    """
    if user_id in data["users"]:
        return json.dumps(data["users"][user_id])
    return "Error: user not found"


def list_all_airports(data: dict) -> str:
    """List all airports and their cities.

    Args:
        data: The domain state (not shown to the agent).
    """
    return json.dumps(AIRPORTS)


def _on_date(flight: dict, dates: dict) -> dict:
    """A search result: the flight without its calendar, with one date's status, seats and prices."""
    result = {k: v for k, v in flight.items() if k != "dates"}
    result.update(dates)
    return result


def search_direct_flight(data: dict, origin: str, destination: str, date: str) -> str:
    """Search direct flights between two cities on a specific date.

    Args:
        data: The domain state (not shown to the agent).
        origin: The origin city airport in three letters, such as 'JFK'.
        destination: The destination city airport in three letters, such as 'LAX'.
        date: The date of the flight in the format 'YYYY-MM-DD', such as '2024-01-01'.
    """
    results = [
        _on_date(flight, flight["dates"][date])
        for flight in data["flights"].values()
        if flight["origin"] == origin and flight["destination"] == destination
        and date in flight["dates"] and flight["dates"][date]["status"] == "available"
    ]
    return json.dumps(results)


def search_onestop_flight(data: dict, origin: str, destination: str, date: str) -> str:
    """Search direct flights between two cities on a specific date.

    Args:
        data: The domain state (not shown to the agent).
        origin: The origin city airport in three letters, such as 'JFK'.
        destination: The destination city airport in three letters, such as 'LAX'.
        date: The date of the flight in the format 'YYYY-MM-DD', such as '2024-05-01'.
    """
    # second legs grouped by where they leave from: the same pairs, in upstream's order, without
    # upstream's scan of every pair of flights
    second_legs: dict[str, list[dict]] = {}
    for flight in data["flights"].values():
        if flight["destination"] == destination:
            second_legs.setdefault(flight["origin"], []).append(flight)
    results = []
    for flight1 in data["flights"].values():
        if flight1["origin"] != origin:
            continue
        for flight2 in second_legs.get(flight1["destination"], []):
            # upstream's date arithmetic: no zero padding, no month rollover
            date2 = f"2024-05-{int(date[-2:]) + 1}" if "+1" in flight1["scheduled_arrival_time_est"] else date
            if flight1["scheduled_arrival_time_est"] > flight2["scheduled_departure_time_est"]:
                continue
            if date in flight1["dates"] and date2 in flight2["dates"]:
                if flight1["dates"][date]["status"] == "available" and flight2["dates"][date2]["status"] == "available":
                    result1 = _on_date(flight1, flight1["dates"][date])
                    result1["date"] = date
                    result2 = _on_date(flight2, flight2["dates"][date])  # sic: upstream reads `date`
                    result2["date"] = date2
                    results.append([result1, result2])
    return json.dumps(results)


def send_certificate(data: dict, user_id: str, amount: float) -> str | None:
    """Send a certificate to a user. Be careful!

    Args:
        data: The domain state (not shown to the agent).
        user_id: The ID of the user to book the reservation, such as 'sara_doe_496'.
        amount: Certificate amount to send.
    """
    users = data["users"]
    if user_id not in users:
        return "Error: user not found"
    user = users[user_id]
    for payment_id in CERTIFICATE_IDS:
        if payment_id not in user["payment_methods"]:
            user["payment_methods"][payment_id] = {"source": "certificate", "amount": amount, "id": payment_id}
            return f"Certificate {payment_id} added to user {user_id} with amount {amount}."
    if tool_mode() == "strict":
        return "Error: too many certificates sent in this conversation"
    return None  # upstream's answer, on which its env fails (see envs.tools.UpstreamFailure)


def think(data: dict, thought: str) -> str:
    """Use the tool to think about something. It will not obtain new information or change the database, but just append the thought to the log. Use it when complex reasoning is needed.

    Args:
        data: The domain state (not shown to the agent).
        thought: A thought to think about.
    """
    return ""


def _payment_for_change(data: dict, reservation: dict, payment_id: str, price: float) -> dict | str:
    """The user's payment method that pays ``price`` for a change, or upstream's error text."""
    methods = data["users"][reservation["user_id"]]["payment_methods"]
    if payment_id not in methods:
        return "Error: payment method not found"
    method = methods[payment_id]
    if method["source"] == "certificate":
        return "Error: certificate cannot be used to update reservation"
    if method["source"] == "gift_card" and method["amount"] < price:
        return "Error: gift card balance is not enough"
    return method


def update_reservation_baggages(
    data: dict, reservation_id: str, total_baggages: int, nonfree_baggages: int, payment_id: str
) -> str:
    """Update the baggage information of a reservation.

    Args:
        data: The domain state (not shown to the agent).
        reservation_id: The reservation ID, such as 'ZFA04Y'.
        total_baggages: The updated total number of baggage items included in the reservation.
        nonfree_baggages: The updated number of non-free baggage items included in the reservation.
        payment_id: The payment id stored in user profile, such as 'credit_card_7815826',
            'gift_card_7815826', 'certificate_7815826'.
    """
    reservations = data["reservations"]
    if reservation_id not in reservations:
        return "Error: reservation not found"
    reservation = reservations[reservation_id]
    total_price = 50 * max(0, nonfree_baggages - reservation["nonfree_baggages"])
    method = _payment_for_change(data, reservation, payment_id, total_price)
    if isinstance(method, str):
        return method

    reservation["total_baggages"] = total_baggages
    reservation["nonfree_baggages"] = nonfree_baggages
    if method["source"] == "gift_card":
        method["amount"] -= total_price
    if total_price != 0:
        reservation["payment_history"].append({"payment_id": payment_id, "amount": total_price})
    return json.dumps(reservation)


def update_reservation_flights(
    data: dict, reservation_id: str, cabin: Cabin, flights: list[dict], payment_id: str
) -> str:
    """Update the flight information of a reservation.

    Args:
        data: The domain state (not shown to the agent).
        reservation_id: The reservation ID, such as 'ZFA04Y'.
        cabin: The cabin class of the reservation.
        flights: An array of objects containing details about each piece of flight in the ENTIRE
            new reservation. Even if the a flight segment is not changed, it should still be
            included in the array. Each object has 'flight_number' (flight number, such as
            'HAT001') and 'date' (the date for the flight in the format 'YYYY-MM-DD', such as
            '2024-05-01').
        payment_id: The payment id stored in user profile, such as 'credit_card_7815826',
            'gift_card_7815826', 'certificate_7815826'.
    """
    reservations = data["reservations"]
    if reservation_id not in reservations:
        return "Error: reservation not found"
    reservation = reservations[reservation_id]

    total_price = 0
    segments = copy_json(flights)
    for flight in segments:
        kept = [f for f in reservation["flights"]
                if f["flight_number"] == flight["flight_number"] and f["date"] == flight["date"]
                and cabin == reservation["cabin"]]
        if kept:  # a segment already booked in the same cabin keeps the price paid for it
            total_price += kept[0]["price"] * len(reservation["passengers"])
            flight["price"] = kept[0]["price"]
            flight["origin"] = kept[0]["origin"]
            flight["destination"] = kept[0]["destination"]
            continue
        problem = _price_segment(data, flight, cabin, reservation["passengers"])
        if problem:
            return problem
        total_price += flight["price"] * len(reservation["passengers"])
    total_price -= sum(flight["price"] for flight in reservation["flights"]) * len(reservation["passengers"])

    method = _payment_for_change(data, reservation, payment_id, total_price)
    if isinstance(method, str):
        return method

    # upstream leaves the cabin field and the flights' seat counts as they were
    if method["source"] == "gift_card":
        method["amount"] -= total_price
    reservation["flights"] = segments
    if total_price != 0:
        reservation["payment_history"].append({"payment_id": payment_id, "amount": total_price})
    return json.dumps(reservation)


def update_reservation_passengers(data: dict, reservation_id: str, passengers: list[dict]) -> str:
    """Update the passenger information of a reservation.

    Args:
        data: The domain state (not shown to the agent).
        reservation_id: The reservation ID, such as 'ZFA04Y'.
        passengers: An array of objects containing details about each passenger. Each object has
            'first_name' (such as 'Noah'), 'last_name' (such as 'Brown') and 'dob' (the date of
            birth in the format 'YYYY-MM-DD', such as '1990-01-01').
    """
    reservations = data["reservations"]
    if reservation_id not in reservations:
        return "Error: reservation not found"
    reservation = reservations[reservation_id]
    if len(passengers) != len(reservation["passengers"]):
        return "Error: number of passengers does not match"
    reservation["passengers"] = copy_json(passengers)
    return json.dumps(reservation)


TOOLS: tuple = (
    book_reservation,
    calculate,
    cancel_reservation,
    get_reservation_details,
    get_user_details,
    list_all_airports,
    search_direct_flight,
    search_onestop_flight,
    send_certificate,
    think,
    transfer_to_human_agents,
    update_reservation_baggages,
    update_reservation_flights,
    update_reservation_passengers,
)
"""The airline tools in upstream's order (the order of the schemas the agent sees)."""
