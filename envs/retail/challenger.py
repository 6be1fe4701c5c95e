"""The retail scripted challenger: tau-bench-style customer-service tasks on a generated shop.

It looks around the shop through the same tools the agent has, then drafts tasks of seven families
(cancel one or all pending orders, change an order's or a user's address, return, exchange,
look-ups), naming the customer by
user id, email, or name and zip code (the latter two add look-up calls). Each task is judged by its
outcome (:mod:`envs.scripted`); its failure cases are the near-misses an agent makes: the wrong
reason, order, item, payment method or address field, doing nothing, or saying the wrong amount.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from envs.cat import Attempt, CodeAsTask, ToolCall
from envs.retail.world import draw_address
from envs.scripted import Draft, call, finish_drafts
from envs.state import State, fork

REASONS = ("no longer needed", "ordered by mistake")
ADDRESS_FIELDS = ("address1", "address2", "city", "state", "country", "zip")


def _money(x: float) -> str:
    return f"{x:.2f}"


def _who(rng: random.Random, user_id: str, user: dict[str, Any]) -> tuple[str, list[ToolCall]]:
    """How the instruction names the customer, and the look-ups that turn it into the user id."""
    name = f"{user['name']['first_name']} {user['name']['last_name']}"
    style = rng.randrange(3)
    if style == 0:
        return f"the customer with user id {user_id}", []
    if style == 1:
        return f"{name} (email {user['email']})", [call("find_user_id_by_email", email=user["email"])]
    return (f"{name}, zip code {user['address']['zip']}",
            [call("find_user_id_by_name_zip", first_name=user["name"]["first_name"],
                  last_name=user["name"]["last_name"], zip=user["address"]["zip"])])


def _orders(base: State, user: dict[str, Any], status: str) -> list[dict[str, Any]]:
    return [o for oid in user["orders"] if (o := base["orders"].get_readonly(oid))["status"] == status]


def _cancel(rng: random.Random, base: State, user_id: str, user: dict[str, Any]) -> Draft | None:
    pending = _orders(base, user, "pending")
    if not pending:
        return None
    order = rng.choice(pending)
    reason = rng.choice(REASONS)
    refund = _money(sum(p["amount"] for p in order["payment_history"] if p["transaction_type"] == "payment"))
    who, lookups = _who(rng, user_id, user)
    oid = order["order_id"]
    act = [*lookups, call("cancel_pending_order", order_id=oid, reason=reason)]
    answer = f"Order {oid} is cancelled; {refund} will be refunded."
    other = [o for o in base["orders"].values() if o["status"] == "pending" and o["order_id"] != oid]
    failures = [
        Attempt((*lookups, call("cancel_pending_order", order_id=oid, reason=REASONS[1 - REASONS.index(reason)])), answer),
        Attempt(tuple(act), f"Order {oid} is cancelled; {_money(float(refund) + 10)} will be refunded."),
        Attempt(tuple(lookups), "I could not cancel the order."),
    ]
    if other:
        failures.append(Attempt((*lookups, call("cancel_pending_order", order_id=rng.choice(other)["order_id"], reason=reason)), answer))
    return Draft("cancel", f"You are helping {who}. Cancel their pending order {oid}; the reason is "
                 f"'{reason}'. Tell them how much will be refunded.", Attempt(tuple(act), answer),
                 tuple(failures), (refund,))


def _order_address(rng: random.Random, base: State, user_id: str, user: dict[str, Any]) -> Draft | None:
    pending = _orders(base, user, "pending")
    if not pending:
        return None
    oid = rng.choice(pending)["order_id"]
    new = draw_address(rng)
    who, lookups = _who(rng, user_id, user)
    typo = dict(new, zip=new["zip"][:-1] + str((int(new["zip"][-1]) + 1) % 10))
    act = call("modify_pending_order_address", order_id=oid, **new)
    failures = (
        Attempt((*lookups, call("modify_pending_order_address", order_id=oid, **typo)), "Done."),
        Attempt((*lookups, call("modify_user_address", user_id=user_id, **new)), "Done."),
        Attempt(tuple(lookups), "Done."),
    )
    where = ", ".join(new[f] for f in ADDRESS_FIELDS)
    return Draft("order_address", f"You are helping {who}. Their pending order {oid} should ship to "
                 f"{where} instead. Change the order's shipping address (not their default address).",
                 Attempt((*lookups, act), "The order's address is updated."), failures)


def _user_address(rng: random.Random, base: State, user_id: str, user: dict[str, Any]) -> Draft | None:
    new = draw_address(rng)
    who, lookups = _who(rng, user_id, user)
    moved = dict(new, city=user["address"]["city"]) if new["city"] != user["address"]["city"] else None
    failures = [
        Attempt((*lookups, call("modify_user_address", user_id=user_id, **dict(new, address2=""))), "Done."),
        Attempt(tuple(lookups), "Done."),
    ]
    if moved:
        failures.append(Attempt((*lookups, call("modify_user_address", user_id=user_id, **moved)), "Done."))
    pending = _orders(base, user, "pending")
    if pending:
        failures.append(Attempt((*lookups, call("modify_pending_order_address", order_id=pending[0]["order_id"], **new)), "Done."))
    where = ", ".join(new[f] for f in ADDRESS_FIELDS)
    return Draft("user_address", f"You are helping {who}. They moved: set their default address to {where}.",
                 Attempt((*lookups, call("modify_user_address", user_id=user_id, **new)), "Your address is updated."),
                 tuple(failures))


def _return(rng: random.Random, base: State, user_id: str, user: dict[str, Any]) -> Draft | None:
    delivered = _orders(base, user, "delivered")
    if not delivered:
        return None
    order = rng.choice(delivered)
    oid, items = order["order_id"], order["items"]
    chosen = rng.sample(items, rng.randint(1, len(items)))
    ids = [i["item_id"] for i in chosen]
    method = order["payment_history"][0]["payment_method_id"]
    refund = _money(sum(i["price"] for i in chosen))
    who, lookups = _who(rng, user_id, user)
    act = [*lookups, call("get_order_details", order_id=oid),
           call("return_delivered_order_items", order_id=oid, item_ids=ids, payment_method_id=method)]
    answer = f"The return is requested; {refund} will be refunded."
    others = [i["item_id"] for i in items if i["item_id"] not in ids]
    wrong_items = ids[:-1] + others[:1] if others else ids[:-1]
    failures = [
        Attempt((*lookups, call("return_delivered_order_items", order_id=oid, item_ids=[i["item_id"] for i in items] + ids[:1],
                                payment_method_id=method)), answer),
        Attempt(tuple(act), f"The return is requested; {_money(float(refund) + 1)} will be refunded."),
        Attempt(tuple(lookups), answer),
    ]
    if wrong_items:
        failures.append(Attempt((*lookups, call("return_delivered_order_items", order_id=oid, item_ids=wrong_items,
                                                payment_method_id=method)), answer))
    names = "; ".join(f"the {i['name']} ({', '.join(f'{k} {v}' for k, v in i['options'].items())})" for i in chosen)
    return Draft("return", f"You are helping {who}. From their delivered order {oid} they want to return {names}, "
                 f"refunded to the original payment method. Tell them the refund amount.",
                 Attempt(tuple(act), answer), tuple(failures), (refund,))


def _exchange(rng: random.Random, base: State, user_id: str, user: dict[str, Any]) -> Draft | None:
    delivered = _orders(base, user, "delivered")
    if not delivered:
        return None
    order = rng.choice(delivered)
    item = rng.choice(order["items"])
    product = base["products"].get_readonly(item["product_id"])
    options = [v for v in product["variants"].values() if v["available"] and v["item_id"] != item["item_id"]]
    if len(options) < 2:
        return None
    new, decoy = rng.sample(options, 2)
    method = order["payment_history"][0]["payment_method_id"]
    oid = order["order_id"]
    who, lookups = _who(rng, user_id, user)

    def swap(variant: dict[str, Any]) -> ToolCall:
        return call("exchange_delivered_order_items", order_id=oid, item_ids=[item["item_id"]],
                    new_item_ids=[variant["item_id"]], payment_method_id=method)

    act = [*lookups, call("get_product_details", product_id=item["product_id"]), swap(new)]
    wanted = ", ".join(f"{k} {v}" for k, v in new["options"].items())
    failures = (
        Attempt((*lookups, swap(decoy)), "Done."),
        Attempt((*lookups, call("return_delivered_order_items", order_id=oid, item_ids=[item["item_id"]],
                                payment_method_id=method)), "Done."),
        Attempt(tuple(lookups), "Done."),
    )
    return Draft("exchange", f"You are helping {who}. In their delivered order {oid}, exchange the {item['name']} "
                 f"for the variant with {wanted}; settle any price difference with the original payment method.",
                 Attempt(tuple(act), "The exchange is requested."), failures)


def _lookup(rng: random.Random, base: State, user_id: str, user: dict[str, Any]) -> Draft | None:
    if not user["orders"]:
        return None
    oid = rng.choice(user["orders"])
    order = base["orders"].get_readonly(oid)
    total = _money(sum(i["price"] for i in order["items"]))
    who, lookups = _who(rng, user_id, user)
    steps = (*lookups, call("get_user_details", user_id=user_id), call("get_order_details", order_id=oid))
    answer = f"Order {oid} is {order['status']} and its items cost {total} in all."
    other = next((base["orders"].get_readonly(o) for o in base["orders"] if o != oid
                  and base["orders"].get_readonly(o)["status"] != order["status"]), None)
    failures = [
        Attempt(steps, f"Order {oid} costs {_money(float(total) + 5)}."),
        Attempt(steps, f"Order {oid} is {other['status'] if other else 'unknown'} and costs {total}."),
        Attempt((*steps, call("modify_user_address", user_id=user_id, **draw_address(rng))), answer),
        Attempt((), "I could not find it."),
    ]
    return Draft("lookup", f"You are helping {who}. Tell them the status of their order {oid} and the total "
                 f"price of its items. Change nothing.", Attempt(steps, answer), tuple(failures),
                 (order["status"], total))


def _cancel_all(rng: random.Random, base: State, user_id: str, user: dict[str, Any]) -> Draft | None:
    pending = _orders(base, user, "pending")
    if len(pending) < 2:
        return None
    who, lookups = _who(rng, user_id, user)
    reason = rng.choice(REASONS)
    ids = [o["order_id"] for o in pending]
    reads = [call("get_user_details", user_id=user_id)] + [call("get_order_details", order_id=o) for o in user["orders"]]
    cancels = [call("cancel_pending_order", order_id=o, reason=reason) for o in ids]
    refund = _money(sum(p["amount"] for o in pending for p in o["payment_history"] if p["transaction_type"] == "payment"))
    answer = f"Cancelled {len(ids)} orders; {refund} will be refunded in all."
    return Draft("cancel_all", f"You are helping {who}. Cancel every one of their orders that is still pending "
                 f"(reason: '{reason}') and tell them the total refund.",
                 Attempt((*lookups, *reads, *cancels), answer), (
                     Attempt((*lookups, *reads, *cancels[:-1]), answer),
                     Attempt((*lookups, *reads, *cancels), f"Cancelled {len(ids)} orders; {_money(float(refund) / 2)} will be refunded in all."),
                     Attempt((*lookups, *reads), answer),
                     Attempt((*lookups, *[call("cancel_pending_order", order_id=o, reason=REASONS[1 - REASONS.index(reason)]) for o in ids]), answer),
                 ), (refund,))


FAMILIES: tuple[Callable[[random.Random, State, str, dict[str, Any]], Draft | None], ...] = (
    _cancel, _order_address, _user_address, _return, _exchange, _lookup, _cancel_all)


def _drafts(rng: random.Random, base: State) -> Iterator[Draft | None]:
    user_ids = list(base["users"])
    while True:
        for family in FAMILIES:
            user_id = rng.choice(user_ids)
            yield family(rng, base, user_id, base["users"].get_readonly(user_id))


def make_tasks(seed: int, n: int, users: int = 50) -> list[CodeAsTask]:
    """``n`` distinct retail tasks in the generated world ``{"seed": seed, "users": users}``."""
    from envs.retail.env import RetailEnv

    world = {"seed": seed, "users": users}
    base = RetailEnv.base_state(world)
    view = fork(base)  # the challenger's own look around; nothing it reads is written back
    return finish_drafts(_drafts(random.Random(seed), view), domain="retail", world=world, base=base,
                         toolset=RetailEnv.toolset, seed=seed, n=n, max_tries=n * 20)
