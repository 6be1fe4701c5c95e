"""The retail and airline tools: schemas as upstream's, generated worlds they work on, failures that
answer in upstream's words and, in strict mode, leave the state untouched; upstream mode's handling
of malformed and failing calls (compared with tau-bench itself in test_taubench_upstream.py)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from envs.airline import tools as airline_tools
from envs.airline import world as airline_world
from envs.retail import tools as retail_tools
from envs.retail import world as retail_world
from envs.state import State, fork, make_base, state_hash
from envs.taubench import upstream_hash
from envs.tools import Toolset, tool_schema
from test_taubench_compat import SHARED, needs_shared


RETAIL = Toolset.of(retail_tools.TOOLS, upstream=retail_tools.UPSTREAM_PACKAGE)
AIRLINE = Toolset.of(airline_tools.TOOLS, upstream=airline_tools.UPSTREAM_PACKAGE)

# Where our schemas cannot equal upstream's, and why (get_json_schema is the only schema source):
# - every argument needs a docstring description, but upstream gives none to these enum arguments;
UNDESCRIBED_UPSTREAM = {("book_reservation", "flight_type"), ("book_reservation", "cabin"),
                        ("book_reservation", "insurance"), ("update_reservation_flights", "cabin")}
# - a `list[dict]` hint gives items {"type": "object"}: the item properties and their `required`
#   list cannot be expressed, so their descriptions are appended to the array's description.
OBJECT_ARRAYS = {("book_reservation", "flights"), ("book_reservation", "passengers"),
                 ("book_reservation", "payment_methods"), ("update_reservation_flights", "flights"),
                 ("update_reservation_passengers", "passengers")}


def _retail(seed: int = 11, users: int = 60) -> State:
    return fork(make_base(retail_world.generate(seed, users=users), retail_world.TABLES))


def _airline(seed: int = 11, users: int = 60) -> State:
    return fork(make_base(airline_world.generate(seed, users=users), airline_world.TABLES))


# --- schemas -----------------------------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("domain, tools", [("retail", retail_tools.TOOLS), ("airline", airline_tools.TOOLS)])
def test_schemas_equal_upstream_but_for_documented_differences(domain: str, tools: tuple) -> None:
    upstream = json.loads((SHARED / f"tools_{domain}.json").read_text())
    ours = [tool_schema(fn) for fn in tools]
    assert [u["function"]["name"] for u in upstream] == [o["function"]["name"] for o in ours]
    for up, our in zip(upstream, ours):
        name = up["function"]["name"]
        assert our["type"] == up["type"] == "function"
        assert our["function"]["description"] == up["function"]["description"], name
        up_params, our_params = up["function"]["parameters"], our["function"]["parameters"]
        assert our_params["type"] == up_params["type"] == "object"
        assert our_params["required"] == up_params["required"], name
        assert list(our_params["properties"]) == list(up_params["properties"]), name
        for arg, up_spec in up_params["properties"].items():
            spec = dict(our_params["properties"][arg])
            if (name, arg) in UNDESCRIBED_UPSTREAM:
                assert "description" not in up_spec and spec.pop("description")
            if (name, arg) in OBJECT_ARRAYS:
                up_spec = {**up_spec, "items": {"type": "object"}}
                assert spec.pop("description").startswith(up_spec.pop("description") + " Each object has ")
                assert all(f"'{field}'" in our_params["properties"][arg]["description"]
                           for field in up["function"]["parameters"]["properties"][arg]["items"]["properties"])
            assert spec == up_spec, (name, arg)
    if domain == "retail":
        assert ours == upstream  # no difference at all


def test_tools_are_upstream_names_in_upstream_order() -> None:
    assert [fn.__name__ for fn in retail_tools.TOOLS] == [
        "calculate", "cancel_pending_order", "exchange_delivered_order_items", "find_user_id_by_email",
        "find_user_id_by_name_zip", "get_order_details", "get_product_details", "get_user_details",
        "list_all_product_types", "modify_pending_order_address", "modify_pending_order_items",
        "modify_pending_order_payment", "modify_user_address", "return_delivered_order_items", "think",
        "transfer_to_human_agents"]
    assert [fn.__name__ for fn in airline_tools.TOOLS] == [
        "book_reservation", "calculate", "cancel_reservation", "get_reservation_details", "get_user_details",
        "list_all_airports", "search_direct_flight", "search_onestop_flight", "send_certificate", "think",
        "transfer_to_human_agents", "update_reservation_baggages", "update_reservation_flights",
        "update_reservation_passengers"]


def test_address_tools_take_the_us_state_as_an_argument_named_state() -> None:
    state = _retail()
    user_id = next(iter(state["users"]))
    address = {"address1": "1 Elm St", "address2": "", "city": "Austin", "state": "TX", "country": "USA",
               "zip": "78701"}
    out = RETAIL.call(state, "modify_user_address", {"user_id": user_id, **address})
    assert json.loads(out)["address"] == address
    assert list(json.loads(out)["address"]) == ["address1", "address2", "city", "state", "country", "zip"]


# --- generated worlds --------------------------------------------------------------------------

def _keys(records: Any) -> set[tuple[str, ...]]:
    return {tuple(record) for record in records}


def test_generated_worlds_are_deterministic_per_seed() -> None:
    for world in (retail_world, airline_world):
        assert upstream_hash(world.generate(3, users=40)) == upstream_hash(world.generate(3, users=40))
        assert upstream_hash(world.generate(3, users=40)) != upstream_hash(world.generate(4, users=40))


def test_generated_retail_world_has_tau_bench_shape_and_formats() -> None:
    data = retail_world.generate(5, users=300)
    users, orders, products = data["users"], data["orders"], data["products"]
    assert len(users) == 300 and len(products) == 50 and len(orders) > 300
    assert _keys(users.values()) == {("name", "address", "email", "payment_methods", "orders")}
    assert _keys(orders.values()) == {
        ("order_id", "user_id", "address", "items", "fulfillments", "status", "payment_history")}
    assert {o["status"] for o in orders.values()} == {"pending", "processed", "delivered", "cancelled"}
    for user_id, user in users.items():
        assert re.fullmatch(r"[a-z]+_[a-z]+_\d{4}", user_id)
        assert re.fullmatch(r"[a-z]+\.[a-z]+\d{4}@example\.com", user["email"])
        for method_id, method in user["payment_methods"].items():
            assert re.fullmatch(r"(credit_card|paypal|gift_card)_\d{7}", method_id) and method["id"] == method_id
        assert all(orders[o]["user_id"] == user_id for o in user["orders"])
    for order_id, order in orders.items():
        assert re.fullmatch(r"#W\d{7}", order_id)
        assert order["payment_history"][0]["payment_method_id"] in users[order["user_id"]]["payment_methods"]
        assert order["payment_history"][0]["amount"] == round(sum(i["price"] for i in order["items"]), 2)
        assert (order["fulfillments"] == []) == (order["status"] == "pending")
        for item in order["items"]:
            variant = products[item["product_id"]]["variants"][item["item_id"]]
            assert (item["price"], item["options"]) == (variant["price"], variant["options"])
    assert sum(not v["available"] for p in products.values() for v in p["variants"].values()) > 0


def test_generated_airline_world_has_tau_bench_shape_and_formats() -> None:
    data = airline_world.generate(5, users=300)
    users, flights, reservations = data["users"], data["flights"], data["reservations"]
    assert _keys(users.values()) == {("name", "address", "email", "dob", "payment_methods", "saved_passengers",
                                      "membership", "reservations")}
    assert _keys(flights.values()) == {("flight_number", "origin", "destination", "scheduled_departure_time_est",
                                        "scheduled_arrival_time_est", "dates")}
    assert _keys(reservations.values()) == {
        ("reservation_id", "user_id", "origin", "destination", "flight_type", "cabin", "flights", "passengers",
         "payment_history", "created_at", "total_baggages", "nonfree_baggages", "insurance")}
    assert {u["membership"] for u in users.values()} == {"regular", "silver", "gold"}
    assert {m["source"] for u in users.values() for m in u["payment_methods"].values()} == {
        "credit_card", "gift_card", "certificate"}
    assert {r["flight_type"] for r in reservations.values()} == {"one_way", "round_trip"}
    assert {f["origin"] for f in flights.values()} <= set(airline_tools.AIRPORTS)
    for number, flight in flights.items():
        assert re.fullmatch(r"HAT\d{3}", number)
        assert sorted(flight["dates"]) == [f"2024-05-{d:02d}" for d in range(1, 31)]
        assert all(flight["dates"][f"2024-05-{d}"]["status"] == "available" for d in range(16, 31))
    for reservation_id, reservation in reservations.items():
        assert re.fullmatch(r"[A-Z0-9]{6}", reservation_id) and not reservation_id.startswith("HATH")
        assert reservation_id in users[reservation["user_id"]]["reservations"]
        for leg in reservation["flights"]:
            assert (leg["origin"], leg["destination"]) == (flights[leg["flight_number"]]["origin"],
                                                          flights[leg["flight_number"]]["destination"])


@needs_shared
@pytest.mark.parametrize("world, domain", [(retail_world, "retail"), (airline_world, "airline")])
def test_generated_records_have_the_fields_of_tau_bench_records(world: Any, domain: str) -> None:
    real, generated = world.load(SHARED / "data" / domain), world.generate(9, users=300)
    for table in world.TABLES:
        assert _keys(generated[table].values()) == _keys(real[table].values()), table
    if domain == "airline":  # each day's status comes with the same fields as upstream's
        def days(flights: dict) -> set:
            return {(d["status"], *d) for f in flights.values() for d in f["dates"].values()}
        assert days(generated["flights"]) == days(real["flights"])


def test_generation_is_linear_enough_for_large_worlds() -> None:
    for world in (retail_world, airline_world):
        start = time.process_time()
        data = world.generate(1, users=5000)
        assert len(data["users"]) == 5000
        assert time.process_time() - start < 10


def test_gold_retail_tools_change_a_generated_world() -> None:
    state = _retail()
    base_hash = state_hash(state)
    users, orders, products = state["users"], state["orders"], state["products"]

    def plain_method(user_id: str, exclude: str = "") -> str | None:
        return next((m for m, v in users.get_readonly(user_id)["payment_methods"].items()
                     if v["source"] != "gift_card" and m != exclude), None)

    def other_variant(item: dict) -> str | None:
        variants = products.get_readonly(item["product_id"])["variants"]
        return next((v for v, spec in variants.items() if spec["available"] and v != item["item_id"]), None)

    pending = [o for o in orders.values() if o["status"] == "pending"]
    delivered = [o for o in orders.values() if o["status"] == "delivered"]

    to_cancel = pending[0]
    out = RETAIL.call(state, "cancel_pending_order", {"order_id": to_cancel["order_id"],
                                                        "reason": "ordered by mistake"})
    assert json.loads(out)["status"] == "cancelled"

    order = next(o for o in pending[1:] if plain_method(o["user_id"]) and other_variant(o["items"][0]))
    new_item = other_variant(order["items"][0])
    out = RETAIL.call(state, "modify_pending_order_items", {
        "order_id": order["order_id"], "item_ids": [order["items"][0]["item_id"]], "new_item_ids": [new_item],
        "payment_method_id": plain_method(order["user_id"])})
    assert json.loads(out)["status"] == "pending (item modified)"
    assert json.loads(out)["items"][0]["item_id"] == new_item

    order = next(o for o in pending[1:] if o["order_id"] != order["order_id"]
                 and plain_method(o["user_id"], o["payment_history"][0]["payment_method_id"]))
    new_method = plain_method(order["user_id"], order["payment_history"][0]["payment_method_id"])
    out = RETAIL.call(state, "modify_pending_order_payment", {"order_id": order["order_id"],
                                                                "payment_method_id": new_method})
    assert [p["transaction_type"] for p in json.loads(out)["payment_history"]] == ["payment", "payment", "refund"]

    order = delivered[0]
    out = RETAIL.call(state, "return_delivered_order_items", {
        "order_id": order["order_id"], "item_ids": [order["items"][0]["item_id"]],
        "payment_method_id": order["payment_history"][0]["payment_method_id"]})
    assert json.loads(out)["status"] == "return requested"

    order = next(o for o in delivered[1:] if plain_method(o["user_id"]) and other_variant(o["items"][0]))
    out = RETAIL.call(state, "exchange_delivered_order_items", {
        "order_id": order["order_id"], "item_ids": [order["items"][0]["item_id"]],
        "new_item_ids": [other_variant(order["items"][0])], "payment_method_id": plain_method(order["user_id"])})
    assert json.loads(out)["status"] == "exchange requested"

    user_id = next(iter(users))
    assert RETAIL.call(state, "find_user_id_by_email", {"email": users[user_id]["email"].upper()}) == user_id
    name, zip_code = users[user_id]["name"], users[user_id]["address"]["zip"]
    assert RETAIL.call(state, "find_user_id_by_name_zip", {
        "first_name": name["first_name"], "last_name": name["last_name"], "zip": zip_code}) == user_id
    assert len(json.loads(RETAIL.call(state, "list_all_product_types", {}))) == 50

    assert len(orders.changed()) == 5
    assert state_hash(state) != base_hash
    assert state_hash(_retail()) == base_hash  # the world itself is untouched


def test_gold_airline_tools_change_a_generated_world() -> None:
    state = _airline()
    base_hash = state_hash(state)
    users, flights = state["users"], state["flights"]
    date = "2024-05-20"
    flight = next(f for f in flights.values() if f["dates"][date]["available_seats"]["economy"] >= 1)
    user_id, user = next((u, v) for u, v in users.items()
                         if any(m["source"] == "credit_card" for m in v["payment_methods"].values()))
    card = next(m for m, v in user["payment_methods"].items() if v["source"] == "credit_card")

    found = json.loads(AIRLINE.call(state, "search_direct_flight", {
        "origin": flight["origin"], "destination": flight["destination"], "date": date}))
    assert flight["flight_number"] in [f["flight_number"] for f in found]
    assert isinstance(json.loads(AIRLINE.call(state, "search_onestop_flight", {
        "origin": flight["origin"], "destination": flight["destination"], "date": date})), list)

    price = flight["dates"][date]["prices"]["economy"]
    out = AIRLINE.call(state, "book_reservation", {
        "user_id": user_id, "origin": flight["origin"], "destination": flight["destination"],
        "flight_type": "one_way", "cabin": "economy",
        "flights": [{"flight_number": flight["flight_number"], "date": date}],
        "passengers": [{"first_name": "Ada", "last_name": "Lovelace", "dob": "1990-12-10"}],
        "payment_methods": [{"payment_id": card, "amount": price + 30}],
        "total_baggages": 1, "nonfree_baggages": 0, "insurance": "yes"})
    reservation = json.loads(out)
    assert reservation["reservation_id"] == "HATHAT"
    assert reservation["flights"][0]["price"] == price
    assert "HATHAT" in state["users"][user_id]["reservations"]

    out = AIRLINE.call(state, "update_reservation_baggages", {
        "reservation_id": "HATHAT", "total_baggages": 2, "nonfree_baggages": 1, "payment_id": card})
    assert json.loads(out)["payment_history"][-1] == {"payment_id": card, "amount": 50}
    out = AIRLINE.call(state, "update_reservation_passengers", {
        "reservation_id": "HATHAT", "passengers": [{"first_name": "Ada", "last_name": "King", "dob": "1990-12-10"}]})
    assert json.loads(out)["passengers"][0]["last_name"] == "King"
    out = AIRLINE.call(state, "update_reservation_flights", {
        "reservation_id": "HATHAT", "cabin": "economy",
        "flights": [{"flight_number": flight["flight_number"], "date": date}], "payment_id": card})
    assert len(json.loads(out)["payment_history"]) == 2  # same flight, same cabin: nothing to pay
    assert json.loads(AIRLINE.call(state, "cancel_reservation", {"reservation_id": "HATHAT"}))["status"] == "cancelled"
    assert AIRLINE.call(state, "send_certificate", {"user_id": user_id, "amount": 100}) == (
        f"Certificate certificate_3221322 added to user {user_id} with amount 100.")

    assert set(state["reservations"].changed()) == {"HATHAT"}
    assert state_hash(state) != base_hash
    assert state_hash(_airline()) == base_hash


# --- errors --------------------------------------------------------------------------------------

def test_unknown_ids_answer_in_upstreams_words() -> None:
    retail, airline = _retail(), _airline()
    assert RETAIL.call(retail, "get_order_details", {"order_id": "#W0000000"}) == "Error: order not found"
    assert RETAIL.call(retail, "cancel_pending_order", {"order_id": "W123", "reason": "no longer needed"}) == (
        "Error: order not found")
    assert RETAIL.call(retail, "get_product_details", {"product_id": "1"}) == "Error: product not found"
    assert RETAIL.call(retail, "find_user_id_by_email", {"email": "nobody@example.com"}) == "Error: user not found"
    assert AIRLINE.call(airline, "cancel_reservation", {"reservation_id": "ZZZZZZ"}) == "Error: reservation not found"
    assert AIRLINE.call(airline, "get_reservation_details", {"reservation_id": "ZZZZZZ"}) == "Error: user not found"


def test_failing_writes_leave_the_state_unchanged() -> None:
    state = _retail()
    users, orders, products = state["users"], state["orders"], state["products"]

    def dearer(item: dict) -> str | None:
        variants = products.get_readonly(item["product_id"])["variants"]
        return next((v for v, spec in variants.items() if spec["available"] and spec["price"] > item["price"]), None)

    order_id = next(o["order_id"] for o in orders.values() if o["status"] == "pending" and dearer(o["items"][0]))
    item = orders[order_id]["items"][0]
    user = users[orders[order_id]["user_id"]]
    card = "gift_card_0000001"
    user["payment_methods"][card] = {"source": "gift_card", "balance": 0, "id": card}
    before = state_hash(state)
    assert RETAIL.call(state, "modify_pending_order_items", {
        "order_id": order_id, "item_ids": [item["item_id"]], "new_item_ids": [dearer(item)],
        "payment_method_id": card}) == "Error: insufficient gift card balance to pay for the new item"
    assert RETAIL.call(state, "modify_pending_order_items", {
        "order_id": order_id, "item_ids": [item["item_id"]] * 6, "new_item_ids": [],
        "payment_method_id": card}) == f"Error: {item['item_id']} not found"
    assert RETAIL.call(state, "cancel_pending_order", {"order_id": order_id, "reason": "because"}).startswith(
        "Error: argument 'reason'")
    assert state_hash(state) == before

    airline = _airline()
    reservation_id, user_id = next((r, v["user_id"]) for r, v in airline["reservations"].items())
    certificate = "certificate_0000001"
    airline["users"][user_id]["payment_methods"][certificate] = {"source": "certificate", "amount": 10_000,
                                                                 "id": certificate}
    date = "2024-05-22"
    flight = next(f for f in airline["flights"].values() if f["dates"][date]["available_seats"]["business"] >= 1)
    price = flight["dates"][date]["prices"]["business"]
    booking = {
        "user_id": user_id, "origin": flight["origin"], "destination": flight["destination"],
        "flight_type": "one_way", "cabin": "business",
        "flights": [{"flight_number": flight["flight_number"], "date": date}],
        "passengers": [{"first_name": "Ada", "last_name": "Lovelace", "dob": "1990-12-10"}],
        "total_baggages": 0, "nonfree_baggages": 0, "insurance": "no"}
    before = state_hash(airline)
    assert AIRLINE.call(airline, "book_reservation", {**booking, "payment_methods": [
        {"payment_id": certificate, "amount": 1}]}) == (
        f"Error: payment amount does not add up, total price is {price}, but paid 1")
    # the same certificate twice: the tool fails half-way with upstream's KeyError; strict mode undoes it
    assert AIRLINE.call(airline, "book_reservation", {**booking, "payment_methods": [
        {"payment_id": certificate, "amount": price / 2}, {"payment_id": certificate, "amount": price / 2}]}) == (
        f"Error: '{certificate}'")
    assert AIRLINE.call(airline, "update_reservation_baggages", {
        "reservation_id": reservation_id, "total_baggages": 9, "nonfree_baggages": 9,
        "payment_id": certificate}) == "Error: certificate cannot be used to update reservation"
    assert state_hash(airline) == before


def test_an_upstream_exception_becomes_the_same_error_text_and_changes_nothing() -> None:
    state = _retail()
    order = next(o for o in state["orders"].values() if o["status"] == "pending"
                 and "gift_card" in o["payment_history"][0]["payment_method_id"])
    del state["users"][order["user_id"]]  # upstream then raises KeyError(user_id) in the refund loop
    before = state_hash(state)
    out = RETAIL.call(state, "cancel_pending_order", {"order_id": order["order_id"], "reason": "no longer needed"})
    assert out == f"Error: '{order['user_id']}'"
    assert state_hash(state) == before


def test_calculate_answers_as_upstream_and_refuses_runaway_powers() -> None:
    state = _retail()
    assert RETAIL.call(state, "calculate", {"expression": "2 + 2"}) == "4.0"
    assert RETAIL.call(state, "calculate", {"expression": "(10 - 3) / 3"}) == "2.33"
    assert RETAIL.call(state, "calculate", {"expression": "2 ** 10"}) == "1024.0"
    assert RETAIL.call(state, "calculate", {"expression": "1 / 0"}) == "Error: division by zero"
    assert RETAIL.call(state, "calculate", {"expression": "import os"}) == "Error: invalid characters in expression"
    assert RETAIL.call(state, "calculate", {"expression": "2 +"}).startswith("Error: invalid syntax")
    assert RETAIL.call(state, "calculate", {"expression": "2 ** 40000 / 2 ** 39999"}) == "2.0"
    assert RETAIL.call(state, "calculate", {"expression": "3 ** 100000 // 3 ** 99999"}) == "3.0"
    assert RETAIL.call(state, "calculate", {"expression": "2 ** 600000 // 2 ** 599999"}) == "2.0"  # a one-bit quotient
    assert RETAIL.call(state, "calculate", {"expression": "(2 ** 999999 + 1) // (2 ** 500000 + 1) * 0"}) == \
        "Error: int too large to convert to float"  # half a million bits of quotient: refused, as it is slow
    assert RETAIL.call(state, "calculate", {"expression": "(1)(9**9**9)"}) == "Error: int too large to convert to float"
    for runaway in ("9**9**9**9", "2 ** 10 ** 9 / 2", "-(" * 50 + "9**9**9" + ")" * 50, "(" + "2**999999*" * 20 + "1)"):
        assert RETAIL.call(state, "calculate", {"expression": runaway}) == "Error: int too large to convert to float"
    assert AIRLINE.call(_airline(), "calculate", {"expression": "3 * (2 + 1.5)"}) == "10.5"


# --- upstream mode -------------------------------------------------------------------------------

def test_upstream_mode_writes_wrongly_typed_values_that_strict_mode_refuses() -> None:
    strict, upstream = _retail(), _retail()
    user_id = next(iter(strict["users"]))
    address = {"user_id": user_id, "address1": "1 Elm St", "address2": "", "city": "Austin", "state": 123,
               "country": "USA", "zip": "78701"}
    assert RETAIL.call(strict, "modify_user_address", address).startswith("Error: argument 'state'")
    assert json.loads(RETAIL.call(upstream, "modify_user_address", address, "upstream"))["address"]["state"] == 123
    assert state_hash(strict) == state_hash(_retail()) != state_hash(upstream)


def test_upstream_mode_answers_bad_calls_in_upstreams_words() -> None:
    state = _retail()
    assert RETAIL.call(state, "refund_everything", {}, "upstream") == "Unknown action refund_everything"
    assert RETAIL.call(state, "get_order_details", {}, "upstream") == (
        "Error: GetOrderDetails.invoke() missing 1 required positional argument: 'order_id'")
    assert RETAIL.call(state, "get_order_details", {"order_id": "#W1", "force": True}, "upstream") == (
        "Error: GetOrderDetails.invoke() got an unexpected keyword argument 'force'")
    assert RETAIL.call(state, "get_order_details", {"order_id": "#W1", "data": {}}, "upstream") == (
        "Error: tau_bench.envs.retail.tools.get_order_details.GetOrderDetails.invoke() got multiple values for "
        "keyword argument 'data'")
    assert RETAIL.call(state, "get_order_details", {"order_id": ["#W1"]}, "upstream") == (
        "Error: unhashable type: 'list'")
    order_id = next(o for o, v in state["orders"].items() if v["status"] == "pending")
    assert RETAIL.call(state, "cancel_pending_order", {"order_id": order_id, "reason": "bored"}, "upstream") == (
        "Error: invalid reason")
    assert RETAIL.call(state, "cancel_pending_order", {"order_id": order_id, "reason": "bored"}).startswith(
        "Error: argument 'reason' of cancel_pending_order must be one of")


def _certificate_booking(state: State, amount: float) -> tuple[str, dict[str, Any], str]:
    """A user holding a certificate worth ``amount`` and a one-way economy booking for one."""
    user_id = next(iter(state["users"]))
    certificate = "certificate_0000001"
    state["users"][user_id]["payment_methods"][certificate] = {"source": "certificate", "amount": amount,
                                                                 "id": certificate}
    date = "2024-05-22"
    flight = next(f for f in state["flights"].values() if f["dates"][date]["available_seats"]["economy"] >= 1)
    booking = {
        "user_id": user_id, "origin": flight["origin"], "destination": flight["destination"],
        "flight_type": "one_way", "cabin": "economy",
        "flights": [{"flight_number": flight["flight_number"], "date": date}],
        "passengers": [{"first_name": "Ada", "last_name": "Lovelace", "dob": "1990-12-10"}],
        "total_baggages": 0, "nonfree_baggages": 0, "insurance": "no",
        "payment_methods": [{"payment_id": certificate, "amount": flight["dates"][date]["prices"]["economy"]}]}
    return user_id, booking, certificate


def test_paying_twice_with_one_certificate_deletes_it_before_failing_in_upstream_mode_only() -> None:
    for mode in ("strict", "upstream"):
        state = _airline()
        user_id, booking, certificate = _certificate_booking(state, 10_000)
        price = booking["payment_methods"][0]["amount"]
        booking["payment_methods"] = [{"payment_id": certificate, "amount": price / 2}] * 2
        assert AIRLINE.call(state, "book_reservation", booking, mode) == f"Error: '{certificate}'"
        assert (certificate in state["users"][user_id]["payment_methods"]) == (mode == "strict")
        assert "HATHAT" not in state["reservations"]


def test_a_fourth_booking_overwrites_the_third_upstream_and_gets_an_id_of_its_own_in_strict_mode() -> None:
    for mode, fourth in (("upstream", "HATHAV"), ("strict", "HATHAW")):
        state = _airline()
        user_id, booking, _ = _certificate_booking(state, 0)
        card = next(m for m, v in state["users"].get_readonly(user_id)["payment_methods"].items()
                    if v["source"] == "credit_card")
        booking["payment_methods"][0]["payment_id"] = card
        ids = [json.loads(AIRLINE.call(state, "book_reservation", booking, mode))["reservation_id"] for _ in range(4)]
        assert ids == ["HATHAT", "HATHAU", "HATHAV", fourth]
        assert state["users"][user_id]["reservations"][-4:] == ids


def test_a_fourth_certificate_ends_an_upstream_mode_episode_with_reward_0() -> None:
    import gymnasium as gym

    env = gym.make("SelfChallenge-Airline-v0", tool_mode="upstream").unwrapped
    env.reset(seed=0)
    user_id = next(iter(env.state["users"]))
    send = json.dumps({"name": "send_certificate", "arguments": {"user_id": user_id, "amount": 100}})
    for _ in range(3):
        assert env.step(send)[0].startswith("Certificate certificate_322132")
    observation, reward, terminated, _, info = env.step(send)
    assert terminated and reward == 0.0 and info["verifier"]["kind"] == "upstream_failure"
    assert "send_certificate answered None" in observation and "upstream_failure" in info
    assert AIRLINE.call(env.state, "send_certificate", {"user_id": user_id, "amount": 1}) == (
        "Error: too many certificates sent in this conversation")


def test_strict_mode_undoes_a_call_that_fails_after_writing_and_upstream_mode_keeps_the_write() -> None:
    """Baggage for a 4,300-digit count: the tool writes, then fails to print a price past Python's
    digit limit. Upstream keeps the write (and its own hash of the data then fails)."""
    for mode in ("strict", "upstream"):
        state = _airline()
        reservation_id, reservation = next(iter(state["reservations"].items()))
        card = next(m for m, v in state["users"].get_readonly(reservation["user_id"])["payment_methods"].items()
                    if v["source"] == "credit_card")
        out = AIRLINE.call(state, "update_reservation_baggages", {
            "reservation_id": reservation_id, "total_baggages": 1, "nonfree_baggages": 10 ** 4299,
            "payment_id": card}, mode)
        assert out.startswith("Error: Exceeds the limit (4300 digits)")
        kept = state["reservations"].get_readonly(reservation_id)["nonfree_baggages"]
        assert kept == (reservation["nonfree_baggages"] if mode == "strict" else 10 ** 4299)
        if mode == "strict":
            assert state_hash(state) == state_hash(_airline())


@pytest.mark.parametrize("env_id, mode, message", [
    ("SelfChallenge-Calculation-v0", "upstream", "tool_mode must be one of strict for the calculation env"),
    ("SelfChallenge-Retail-v0", "lenient", "tool_mode must be one of strict, upstream for the retail env"),
])
def test_only_domains_with_an_upstream_take_upstream_mode(env_id: str, mode: str, message: str) -> None:
    import gymnasium as gym

    with pytest.raises(ValueError, match=message):
        gym.make(env_id, tool_mode=mode)


def test_an_upstream_mode_state_that_cannot_be_written_down_scores_0_without_raising() -> None:
    import gymnasium as gym

    env = gym.make("SelfChallenge-Airline-v0", tool_mode="upstream").unwrapped
    env.reset(seed=0)
    reservation_id, reservation = next(iter(env.state["reservations"].items()))
    card = next(m for m, v in env.state["users"].get_readonly(reservation["user_id"])["payment_methods"].items()
                if v["source"] == "credit_card")
    env.step(json.dumps({"name": "update_reservation_baggages", "arguments": {
        "reservation_id": reservation_id, "total_baggages": 1, "nonfree_baggages": 10 ** 4299, "payment_id": card}}))
    _, reward, terminated, _, info = env.step(json.dumps({"name": "finish", "arguments": {"answer": "done"}}))
    assert terminated and reward == 0.0 and info["verifier"]["kind"] == "state"


def _swappable(state, status: str, want_available: bool = True):
    """An order of ``status`` and, for its first item, another variant of the same product that is
    available (or not, when ``want_available`` is False)."""
    products = state["products"]
    for order in state["orders"].values():
        if order["status"] != status:
            continue
        item = order["items"][0]
        variants = products.get_readonly(item["product_id"])["variants"]
        other = next((v for v, spec in variants.items()
                      if v != item["item_id"] and bool(spec["available"]) == want_available), None)
        if other:
            return order, item, other
    raise AssertionError("no such order in the generated world")


def _swap(state: State, tool: str, order: dict[str, Any], old: list[str], new: list[str]) -> str:
    """An item-swapping call of ``tool`` on ``order``, paid with the order's first payment method."""
    method = order["payment_history"][0]["payment_method_id"]
    return RETAIL.call(state, tool, {"order_id": order["order_id"], "item_ids": old, "new_item_ids": new,
                                     "payment_method_id": method})


def test_item_swaps_name_an_item_that_is_not_in_the_order() -> None:
    """An item id the order does not hold is refused in upstream's words ("Error: <id> not found"),
    for both item-swapping tools, before any other check; nothing is written."""
    state = _retail()
    before = state_hash(state)
    for tool, status in (("modify_pending_order_items", "pending"), ("exchange_delivered_order_items", "delivered")):
        order, _, other = _swappable(state, status)
        assert _swap(state, tool, order, ["0000000000"], [other]) == "Error: 0000000000 not found", tool
    assert state_hash(state) == before


def test_item_swaps_need_as_many_new_items_as_old_ones() -> None:
    """Two items for one new item is refused, as upstream does, instead of swapping only the first."""
    state = _retail()
    before = state_hash(state)
    for tool, status in (("modify_pending_order_items", "pending"), ("exchange_delivered_order_items", "delivered")):
        order, item, other = _swappable(state, status)
        out = _swap(state, tool, order, [item["item_id"]] * 2, [other])
        assert out in ("Error: the number of items to be exchanged should match",
                       f"Error: {item['item_id']} not found"), tool  # a single item is refused earlier
        if len([i for i in order["items"] if i["item_id"] == item["item_id"]]) == 1:
            out = _swap(state, tool, order, [item["item_id"]], [other, other])
            assert out == "Error: the number of items to be exchanged should match", tool
    assert state_hash(state) == before


def test_item_swaps_refuse_a_variant_that_is_not_available() -> None:
    """A variant of the same product that is out of stock cannot be swapped in (upstream's text)."""
    state = _retail()
    before = state_hash(state)
    for tool, status in (("modify_pending_order_items", "pending"), ("exchange_delivered_order_items", "delivered")):
        order, item, unavailable = _swappable(state, status, want_available=False)
        out = _swap(state, tool, order, [item["item_id"]], [unavailable])
        assert out == f"Error: new item {unavailable} not found or available", tool
    assert state_hash(state) == before


def test_a_gift_card_holding_exactly_the_price_difference_pays_for_it() -> None:
    """Upstream refuses a gift card only when its balance is below the difference: a balance equal
    to it pays, for an exchange as for a modification."""
    state = _retail()
    products = state["products"]
    for tool, status in (("exchange_delivered_order_items", "delivered"), ("modify_pending_order_items", "pending")):
        order, item = next((o, o["items"][0]) for o in state["orders"].values() if o["status"] == status and any(
            spec["available"] and spec["price"] > o["items"][0]["price"]
            for spec in products.get_readonly(o["items"][0]["product_id"])["variants"].values()))
        variants = products.get_readonly(item["product_id"])["variants"]
        dearer = next(v for v, spec in variants.items() if spec["available"] and spec["price"] > item["price"])
        difference = variants[dearer]["price"] - item["price"]
        if tool == "exchange_delivered_order_items":  # the exchange rounds the difference; the modification does not
            difference = round(difference, 2)
        card = "gift_card_0000009"
        state["users"][order["user_id"]]["payment_methods"][card] = {"source": "gift_card", "balance": difference,
                                                                     "id": card}
        out = RETAIL.call(state, tool, {"order_id": order["order_id"], "item_ids": [item["item_id"]],
                                        "new_item_ids": [dearer], "payment_method_id": card})
        assert not out.startswith("Error"), (tool, out)


def test_name_and_email_lookups_ignore_case_only() -> None:
    """As upstream: names and emails compare case-insensitively, but nothing is stripped, and the
    zip code compares exactly."""
    state = _retail()
    user_id, user = next(iter(state["users"].items()))
    name, zip_code = user["name"], user["address"]["zip"]
    assert RETAIL.call(state, "find_user_id_by_name_zip", {
        "first_name": name["first_name"].upper(), "last_name": name["last_name"].lower(), "zip": zip_code}) == user_id
    for first, last, zip_ in ((name["first_name"] + " ", name["last_name"], zip_code),
                              (name["first_name"], " " + name["last_name"], zip_code),
                              (name["first_name"], name["last_name"], zip_code + " ")):
        assert RETAIL.call(state, "find_user_id_by_name_zip", {
            "first_name": first, "last_name": last, "zip": zip_}) == "Error: user not found"
    assert RETAIL.call(state, "find_user_id_by_email", {"email": " " + user["email"]}) == "Error: user not found"


@needs_shared
def test_product_types_are_listed_by_name_as_upstream() -> None:
    """Upstream sorts the {name: product_id} listing by name; tau-bench's products are stored in id
    order, so an unsorted listing shows."""
    state = fork(make_base(retail_world.load(SHARED / "data" / "retail"), retail_world.TABLES))
    listing = json.loads(RETAIL.call(state, "list_all_product_types", {}))
    assert list(listing) == sorted(listing)
    assert listing == {p["name"]: p["product_id"] for p in state["products"].values()}


def test_an_order_whose_items_were_modified_cannot_have_its_address_modified() -> None:
    """Upstream's address change needs status exactly 'pending': 'pending (item modified)' is refused."""
    state = _retail()
    order, item, other = _swappable(state, "pending")
    method = next(m for m, v in state["users"][order["user_id"]]["payment_methods"].items()
                  if v["source"] != "gift_card")
    swap = {"order_id": order["order_id"], "item_ids": [item["item_id"]], "new_item_ids": [other],
            "payment_method_id": method}
    out = RETAIL.call(state, "modify_pending_order_items", swap)
    assert json.loads(out)["status"] == "pending (item modified)"
    before = state_hash(state)
    assert RETAIL.call(state, "modify_pending_order_address", {
        "order_id": order["order_id"], "address1": "1 Elm St", "address2": "", "city": "Austin", "state": "TX",
        "country": "USA", "zip": "78701"}) == "Error: non-pending order cannot be modified"
    assert state_hash(state) == before


def test_modifying_one_of_two_equal_items_changes_the_first_one() -> None:
    """An order may hold the same item twice; modifying it once changes the first of them (upstream
    takes the first match), the second stays as it was."""
    state = _retail()
    order, item, other = _swappable(state, "pending")
    state["orders"][order["order_id"]]["items"].append({**item, "options": dict(item["options"])})
    method = next(m for m, v in state["users"][order["user_id"]]["payment_methods"].items()
                  if v["source"] != "gift_card")
    out = json.loads(RETAIL.call(state, "modify_pending_order_items", {
        "order_id": order["order_id"], "item_ids": [item["item_id"]], "new_item_ids": [other],
        "payment_method_id": method}))
    assert out["items"][0]["item_id"] == other and out["items"][-1]["item_id"] == item["item_id"]


def _one_way(state, date: str = "2024-05-22"):
    """A user, an available flight on ``date`` and a one-passenger economy booking of it (no payment yet)."""
    user_id = next(iter(state["users"]))
    flight = next(f for f in state["flights"].values()
                  if date in f["dates"] and f["dates"][date]["status"] == "available"
                  and f["dates"][date]["available_seats"]["economy"] >= 1)
    booking = {"user_id": user_id, "origin": flight["origin"], "destination": flight["destination"],
               "flight_type": "one_way", "cabin": "economy",
               "flights": [{"flight_number": flight["flight_number"], "date": date}],
               "passengers": [{"first_name": "Ada", "last_name": "Lovelace", "dob": "1990-12-10"}],
               "total_baggages": 0, "nonfree_baggages": 0, "insurance": "no"}
    return user_id, flight, booking


def test_the_last_seat_can_be_booked() -> None:
    """Upstream refuses only when fewer seats are left than passengers: one seat for one passenger books."""
    state = _airline()
    user_id, flight, booking = _one_way(state)
    date = booking["flights"][0]["date"]
    state["flights"][flight["flight_number"]]["dates"][date]["available_seats"]["economy"] = 1
    price = flight["dates"][date]["prices"]["economy"]
    card = "credit_card_0000009"
    state["users"][user_id]["payment_methods"][card] = {"source": "credit_card", "brand": "visa",
                                                        "last_four": "0009", "id": card}
    out = AIRLINE.call(state, "book_reservation", {**booking, "payment_methods": [{"payment_id": card,
                                                                                    "amount": price}]})
    assert json.loads(out)["flights"][0]["price"] == price


def test_a_certificate_cannot_pay_more_than_it_holds() -> None:
    state = _airline()
    user_id, flight, booking = _one_way(state)
    price = flight["dates"][booking["flights"][0]["date"]]["prices"]["economy"]
    certificate = "certificate_0000009"
    state["users"][user_id]["payment_methods"][certificate] = {"source": "certificate", "amount": price - 1,
                                                               "id": certificate}
    before = state_hash(state)
    assert AIRLINE.call(state, "book_reservation", {**booking, "payment_methods": [
        {"payment_id": certificate, "amount": price}]}) == f"Error: not enough balance in payment method {certificate}"
    assert state_hash(state) == before


def _connections(state, date: str):
    """(flight1, flight2) pairs that connect at an airport, flight1 arriving before flight2 leaves."""
    flights = list(state["flights"].values())
    return [(f1, f2) for f1 in flights for f2 in flights
            if f1["destination"] == f2["origin"] and f2["destination"] != f1["origin"]
            and date in f1["dates"] and f1["dates"][date]["status"] == "available"]


def test_a_connection_leaving_the_minute_the_first_flight_lands_is_found() -> None:
    """Upstream skips a second leg only when the first arrives strictly after it leaves."""
    state = _airline()
    date = "2024-05-16"
    f1, f2 = next((a, b) for a, b in _connections(state, date) if "+1" not in a["scheduled_arrival_time_est"]
                  and date in b["dates"] and b["dates"][date]["status"] == "available")
    state["flights"][f2["flight_number"]]["scheduled_departure_time_est"] = f1["scheduled_arrival_time_est"]
    results = json.loads(AIRLINE.call(state, "search_onestop_flight", {
        "origin": f1["origin"], "destination": f2["destination"], "date": date}))
    assert [f1["flight_number"], f2["flight_number"]] in [[r1["flight_number"], r2["flight_number"]]
                                                          for r1, r2 in results]


def test_an_overnight_connection_keeps_upstreams_date_quirks() -> None:
    """After a first leg landing the next day ('+1'), upstream looks the second leg up on the next day,
    written without zero padding ('2024-05-6'), yet shows that leg's status, seats and prices of the
    search date itself."""
    state = _airline()
    f1 = next(f for f in state["flights"].values() if "+1" in f["scheduled_arrival_time_est"])
    f2 = next(f for f in state["flights"].values() if f["origin"] == f1["destination"]
              and f["destination"] != f1["origin"])
    second = state["flights"][f2["flight_number"]]
    second["scheduled_departure_time_est"] = "23:59:59"  # "…+1" sorts before it: never skipped for its time
    for date, next_day in (("2024-05-15", "2024-05-16"), ("2024-05-05", "2024-05-6")):
        state["flights"][f1["flight_number"]]["dates"][date] = {**f1["dates"]["2024-05-15"], "status": "available"}
        second["dates"][date] = {**f2["dates"]["2024-05-15"], "status": "available",
                                 "prices": {"basic_economy": 1, "economy": 2, "business": 3}}
        second["dates"][next_day] = {**f2["dates"]["2024-05-16"], "status": "available",
                                     "prices": {"basic_economy": 7, "economy": 8, "business": 9}}
        results = json.loads(AIRLINE.call(state, "search_onestop_flight", {
            "origin": f1["origin"], "destination": f2["destination"], "date": date}))
        pair = next(r for r in results if [r[0]["flight_number"], r[1]["flight_number"]]
                    == [f1["flight_number"], f2["flight_number"]])
        assert pair[1]["date"] == next_day
        assert pair[1]["prices"] == {"basic_economy": 1, "economy": 2, "business": 3}  # the search date's
    del second["dates"]["2024-05-6"]  # only the unpadded key counts: the padded one is not looked up
    second["dates"]["2024-05-06"] = {**f2["dates"]["2024-05-16"], "status": "available"}
    results = json.loads(AIRLINE.call(state, "search_onestop_flight", {
        "origin": f1["origin"], "destination": f2["destination"], "date": "2024-05-05"}))
    assert [f1["flight_number"], f2["flight_number"]] not in [[a["flight_number"], b["flight_number"]]
                                                              for a, b in results]


def test_fewer_nonfree_bags_are_not_refunded() -> None:
    """Upstream charges 50 per added non-free bag and never refunds removed ones: no payment is recorded."""
    state = _airline()
    reservation_id = next(iter(state["reservations"]))
    reservation = state["reservations"][reservation_id]
    reservation["total_baggages"], reservation["nonfree_baggages"] = 2, 2
    method = next(m for m, v in state["users"][reservation["user_id"]]["payment_methods"].items()
                  if v["source"] != "certificate")
    history = list(reservation["payment_history"])
    out = json.loads(AIRLINE.call(state, "update_reservation_baggages", {
        "reservation_id": reservation_id, "total_baggages": 0, "nonfree_baggages": 0, "payment_id": method}))
    assert out["payment_history"] == history and out["nonfree_baggages"] == 0
