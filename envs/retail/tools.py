"""tau-bench's 16 retail tools, one plain function each, over a retail state.

Each tool reads, checks and writes in upstream's order, gives the agent exactly the text upstream
gives (``json.dumps`` of a record, or upstream's ``Error: …`` strings), and raises where upstream
raises (e.g. a ``KeyError`` for an order whose user is missing), so that ``Toolset.call`` turns it
into the same ``Error: …`` observation. In upstream mode that holds for any arguments, wrongly
typed ones included, and what a failing call wrote before it failed stays written, as upstream's;
strict mode checks the arguments first and undoes a failed call (:mod:`envs.tools`). The state,
``data`` as upstream names it, holds the tables ``users``, ``orders`` and ``products``
(copy-on-write :class:`envs.state.Table` views): a record that will change is fetched by key.

The docstrings are the schemas: their summaries and argument texts are upstream's, word for word.
"""

from __future__ import annotations

import ast
import json
import math
import operator
from typing import Any, Literal

from envs.state import copy_json

UPSTREAM_PACKAGE = "tau_bench.envs.retail.tools"
"""Where upstream keeps these tools (for upstream mode's error texts: see :func:`envs.taubench.upstream_tool`)."""


MAX_INT_BITS = 1 << 20
"""Largest integer ``calculate`` builds (a million bits take ~30 ms to make; beyond, time grows fast)."""
MAX_BITS_BUILT = 1 << 23
"""Most bits of big-integer results one expression may build in all (a few hundred ms of work)."""
MAX_DIVISION_WORK = 1 << 36
"""Largest product of the divisor's size and the quotient's, in bits, of one integer floor division: CPython's
long division works through that many pairs of digits (a million-bit quotient of a million-bit divisor: 1.6 s)."""

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.UAdd: operator.pos, ast.USub: operator.neg}
_RUNAWAY = "int too large to convert to float"
"""What a refused expression answers: what ``float()`` says of the huge integers it would build."""


def _bits_built(op: ast.operator, left: Any, right: Any) -> int:
    """The size in bits of the integer that ``left <op> right`` builds (0 unless both are integers
    and the result can be big); ``OverflowError`` if building it would take too long."""
    if type(left) is not int or type(right) is not int:
        return 0
    if isinstance(op, ast.Pow):
        bits = 0 if right < 0 or abs(left) < 2 else math.ceil(right * math.log2(abs(left)))
    elif isinstance(op, ast.Mult):
        bits = left.bit_length() + right.bit_length()
    elif isinstance(op, ast.FloorDiv):
        bits = max(0, left.bit_length() - right.bit_length()) + 1
        if right.bit_length() * bits > MAX_DIVISION_WORK:
            raise OverflowError(_RUNAWAY)
    else:
        return 0
    if bits > MAX_INT_BITS:
        raise OverflowError(_RUNAWAY)
    return bits


def _value(node: ast.AST, values: dict[ast.AST, Any]) -> Any:
    """What ``eval`` computes for ``node``, its operands being in ``values``."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](values[node.operand])
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](values[node.left], values[node.right])
    if isinstance(node, ast.Tuple) and not node.elts:
        return ()
    raise TypeError(f"{type(node).__name__} is not evaluated here")  # a call: eval fails at it too


def _refuse_runaway_integers(expression: str) -> None:
    """Raise ``OverflowError`` if evaluating ``expression`` would build integers too big to finish
    (``9**9**9`` would take hours and gigabytes); otherwise return, and ``eval`` gives upstream's
    result or error, for big integers too (``2 ** 40000 / 2 ** 39999`` is ``2.0``).

    The expression is evaluated node by node, in Python's order, with the sizes checked before
    each power, product and floor division. At the first node that raises (``1 / 0``, a call of a
    number) evaluation stops: ``eval`` raises there too, before anything that comes later.
    Iterative, so deep nesting costs no recursion here."""
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return  # eval fails in the same way
    values: dict[ast.AST, Any] = {}
    built = 0
    stack: list[tuple[ast.AST, bool]] = [(tree.body, False)]
    while stack:
        node, operands_done = stack.pop()
        if isinstance(node, (ast.operator, ast.unaryop, ast.expr_context)):
            continue
        if not operands_done:
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(list(ast.iter_child_nodes(node))))
            continue
        if isinstance(node, ast.BinOp):
            built += _bits_built(node.op, values[node.left], values[node.right])
            if built > MAX_BITS_BUILT:
                raise OverflowError(_RUNAWAY)
        try:
            values[node] = _value(node, values)
        except Exception:  # eval raises here too, before anything that comes later
            return


def calculate(data: dict, expression: str) -> str:
    """Calculate the result of a mathematical expression.

    Args:
        data: The domain state (not shown to the agent).
        expression: The mathematical expression to calculate, such as '2 + 2'. The expression can
            contain numbers, operators (+, -, *, /), parentheses, and spaces.
    """
    if not all(char in "0123456789+-*/(). " for char in expression):
        return "Error: invalid characters in expression"
    try:
        if isinstance(expression, str):
            _refuse_runaway_integers(expression)
        return str(round(float(eval(expression, {"__builtins__": None}, {})), 2))
    except Exception as e:
        return f"Error: {e}"


def cancel_pending_order(
    data: dict, order_id: str, reason: Literal["no longer needed", "ordered by mistake"]
) -> str:
    """Cancel a pending order. If the order is already processed or delivered, it cannot be cancelled. The agent needs to explain the cancellation detail and ask for explicit user confirmation (yes/no) to proceed. If the user confirms, the order status will be changed to 'cancelled' and the payment will be refunded. The refund will be added to the user's gift card balance immediately if the payment was made using a gift card, otherwise the refund would take 5-7 business days to process. The function returns the order details after the cancellation.

    Args:
        data: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
        reason: The reason for cancellation, which should be either 'no longer needed' or 'ordered
            by mistake'.
    """
    orders = data["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "pending":
        return "Error: non-pending order cannot be cancelled"
    if reason not in ["no longer needed", "ordered by mistake"]:
        return "Error: invalid reason"

    refunds = []
    for payment in order["payment_history"]:
        payment_id = payment["payment_method_id"]
        refunds.append({"transaction_type": "refund", "amount": payment["amount"], "payment_method_id": payment_id})
        if "gift_card" in payment_id:  # refunded at once
            card = data["users"][order["user_id"]]["payment_methods"][payment_id]
            card["balance"] += payment["amount"]
            card["balance"] = round(card["balance"], 2)
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    order["payment_history"].extend(refunds)
    return json.dumps(order)


def _price_difference(data: dict, order: dict, item_ids: list[str], new_item_ids: list[str]) -> float | str:
    """The summed price change of swapping ``item_ids`` for ``new_item_ids`` in ``order``, or
    upstream's error text; shared by the exchange and the modify tools, which check alike."""
    all_item_ids = [item["item_id"] for item in order["items"]]
    for item_id in item_ids:
        if item_ids.count(item_id) > all_item_ids.count(item_id):
            return f"Error: {item_id} not found"
    if len(item_ids) != len(new_item_ids):
        return "Error: the number of items to be exchanged should match"
    products = data["products"]
    diff_price = 0
    for item_id, new_item_id in zip(item_ids, new_item_ids):
        item = [item for item in order["items"] if item["item_id"] == item_id][0]
        variants = products[item["product_id"]]["variants"]
        if not (new_item_id in variants and variants[new_item_id]["available"]):
            return f"Error: new item {new_item_id} not found or available"
        diff_price += variants[new_item_id]["price"] - item["price"]
    return diff_price


def exchange_delivered_order_items(
    data: dict, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> str:
    """Exchange items in a delivered order to new items of the same product type. For a delivered order, return or exchange can be only done once by the agent. The agent needs to explain the exchange detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        data: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
        item_ids: The item ids to be exchanged, each such as '1008292230'. There could be duplicate
            items in the list.
        new_item_ids: The item ids to be exchanged for, each such as '1008292230'. There could be
            duplicate items in the list. Each new item id should match the item id in the same
            position and be of the same product.
        payment_method_id: The payment method id to pay or receive refund for the item price
            difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked
            up from the user or order details.
    """
    orders = data["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "delivered":
        return "Error: non-delivered order cannot be exchanged"
    diff_price = _price_difference(data, order, item_ids, new_item_ids)
    if isinstance(diff_price, str):
        return diff_price
    diff_price = round(diff_price, 2)

    methods = data["users"][order["user_id"]]["payment_methods"]
    if payment_method_id not in methods:
        return "Error: payment method not found"
    method = methods[payment_method_id]
    if method["source"] == "gift_card" and method["balance"] < diff_price:
        return "Error: insufficient gift card balance to pay for the price difference"

    order["status"] = "exchange requested"
    order["exchange_items"] = sorted(item_ids)
    order["exchange_new_items"] = sorted(new_item_ids)
    order["exchange_payment_method_id"] = payment_method_id
    order["exchange_price_difference"] = diff_price
    return json.dumps(order)


def find_user_id_by_email(data: dict, email: str) -> str:
    """Find user id by email. If the user is not found, the function will return an error message.

    Args:
        data: The domain state (not shown to the agent).
        email: The email of the user, such as 'something@example.com'.
    """
    for user_id, profile in data["users"].items():
        if profile["email"].lower() == email.lower():
            return user_id
    return "Error: user not found"


def find_user_id_by_name_zip(data: dict, first_name: str, last_name: str, zip: str) -> str:
    """Find user id by first name, last name, and zip code. If the user is not found, the function will return an error message. By default, find user id by email, and only call this function if the user is not found by email or cannot remember email.

    Args:
        data: The domain state (not shown to the agent).
        first_name: The first name of the customer, such as 'John'.
        last_name: The last name of the customer, such as 'Doe'.
        zip: The zip code of the customer, such as '12345'.
    """
    for user_id, profile in data["users"].items():
        if (
            profile["name"]["first_name"].lower() == first_name.lower()
            and profile["name"]["last_name"].lower() == last_name.lower()
            and profile["address"]["zip"] == zip
        ):
            return user_id
    return "Error: user not found"


def get_order_details(data: dict, order_id: str) -> str:
    """Get the status and details of an order.

    Args:
        data: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
    """
    if order_id in data["orders"]:
        return json.dumps(data["orders"][order_id])
    return "Error: order not found"


def get_product_details(data: dict, product_id: str) -> str:
    """Get the inventory details of a product.

    Args:
        data: The domain state (not shown to the agent).
        product_id: The product id, such as '6086499569'. Be careful the product id is different
            from the item id.
    """
    if product_id in data["products"]:
        return json.dumps(data["products"][product_id])
    return "Error: product not found"


def get_user_details(data: dict, user_id: str) -> str:
    """Get the details of a user, including their orders.

    Args:
        data: The domain state (not shown to the agent).
        user_id: The user id, such as 'sara_doe_496'.
    """
    if user_id in data["users"]:
        return json.dumps(data["users"][user_id])
    return "Error: user not found"


def list_all_product_types(data: dict) -> str:
    """List the name and product id of all product types. Each product type has a variety of different items with unique item ids and options. There are only 50 product types in the store.

    Args:
        data: The domain state (not shown to the agent).
    """
    product_dict = {product["name"]: product["product_id"] for product in data["products"].values()}
    return json.dumps(dict(sorted(product_dict.items())))


def _address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict[str, str]:
    """An address record, keys in upstream's order (the order ``json.dumps`` shows)."""
    return {"address1": address1, "address2": address2, "city": city, "state": state, "country": country, "zip": zip}


def modify_pending_order_address(
    data: dict, order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> str:
    """Modify the shipping address of a pending order. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        data: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
        address1: The first line of the address, such as '123 Main St'.
        address2: The second line of the address, such as 'Apt 1' or ''.
        city: The city, such as 'San Francisco'.
        state: The state, such as 'CA'.
        country: The country, such as 'USA'.
        zip: The zip code, such as '12345'.
    """
    orders = data["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "pending":
        return "Error: non-pending order cannot be modified"
    order["address"] = _address(address1, address2, city, state, country, zip)
    return json.dumps(order)


def modify_pending_order_items(
    data: dict, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> str:
    """Modify items in a pending order to new items of the same product type. For a pending order, this function can only be called once. The agent needs to explain the exchange detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        data: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
        item_ids: The item ids to be modified, each such as '1008292230'. There could be duplicate
            items in the list.
        new_item_ids: The item ids to be modified for, each such as '1008292230'. There could be
            duplicate items in the list. Each new item id should match the item id in the same
            position and be of the same product.
        payment_method_id: The payment method id to pay or receive refund for the item price
            difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked
            up from the user or order details.
    """
    orders = data["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "pending":
        return "Error: non-pending order cannot be modified"
    diff_price = _price_difference(data, order, item_ids, new_item_ids)
    if isinstance(diff_price, str):
        return diff_price

    users = data["users"]
    if payment_method_id not in users[order["user_id"]]["payment_methods"]:
        return "Error: payment method not found"
    method = users[order["user_id"]]["payment_methods"][payment_method_id]
    if method["source"] == "gift_card" and method["balance"] < diff_price:
        return "Error: insufficient gift card balance to pay for the new item"

    # upstream does not round the difference it records
    order["payment_history"].append({
        "transaction_type": "payment" if diff_price > 0 else "refund",
        "amount": abs(diff_price),
        "payment_method_id": payment_method_id,
    })
    if method["source"] == "gift_card":
        method["balance"] -= diff_price
        method["balance"] = round(method["balance"], 2)
    products = data["products"]
    for item_id, new_item_id in zip(item_ids, new_item_ids):
        item = [item for item in order["items"] if item["item_id"] == item_id][0]
        item["item_id"] = new_item_id
        item["price"] = products[item["product_id"]]["variants"][new_item_id]["price"]
        item["options"] = copy_json(products[item["product_id"]]["variants"][new_item_id]["options"])
    order["status"] = "pending (item modified)"
    return json.dumps(order)


def modify_pending_order_payment(data: dict, order_id: str, payment_method_id: str) -> str:
    """Modify the payment method of a pending order. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        data: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
        payment_method_id: The payment method id to pay or receive refund for the item price
            difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked
            up from the user or order details.
    """
    orders = data["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "pending":
        return "Error: non-pending order cannot be modified"
    methods = data["users"][order["user_id"]]["payment_methods"]
    if payment_method_id not in methods:
        return "Error: payment method not found"
    history = order["payment_history"]
    if len(history) > 1 or history[0]["transaction_type"] != "payment":
        return "Error: there should be exactly one payment for a pending order"
    if history[0]["payment_method_id"] == payment_method_id:
        return "Error: the new payment method should be different from the current one"
    amount = history[0]["amount"]
    method = methods[payment_method_id]
    if method["source"] == "gift_card" and method["balance"] < amount:
        return "Error: insufficient gift card balance to pay for the order"

    history.extend([
        {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
        {"transaction_type": "refund", "amount": amount, "payment_method_id": history[0]["payment_method_id"]},
    ])
    if method["source"] == "gift_card":
        method["balance"] -= amount
        method["balance"] = round(method["balance"], 2)
    if "gift_card" in history[0]["payment_method_id"]:  # the refund goes back to it at once
        old_method = data["users"][order["user_id"]]["payment_methods"][history[0]["payment_method_id"]]
        old_method["balance"] += amount
        old_method["balance"] = round(old_method["balance"], 2)
    return json.dumps(order)


def modify_user_address(
    data: dict, user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> str:
    """Modify the default address of a user. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        data: The domain state (not shown to the agent).
        user_id: The user id, such as 'sara_doe_496'.
        address1: The first line of the address, such as '123 Main St'.
        address2: The second line of the address, such as 'Apt 1' or ''.
        city: The city, such as 'San Francisco'.
        state: The state, such as 'CA'.
        country: The country, such as 'USA'.
        zip: The zip code, such as '12345'.
    """
    users = data["users"]
    if user_id not in users:
        return "Error: user not found"
    user = users[user_id]
    user["address"] = _address(address1, address2, city, state, country, zip)
    return json.dumps(user)


def return_delivered_order_items(data: dict, order_id: str, item_ids: list[str], payment_method_id: str) -> str:
    """Return some items of a delivered order. The order status will be changed to 'return requested'. The agent needs to explain the return detail and ask for explicit user confirmation (yes/no) to proceed. The user will receive follow-up email for how and where to return the item.

    Args:
        data: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
        item_ids: The item ids to be returned, each such as '1008292230'. There could be duplicate
            items in the list.
        payment_method_id: The payment method id to pay or receive refund for the item price
            difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked
            up from the user or order details.
    """
    orders = data["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "delivered":
        return "Error: non-delivered order cannot be returned"
    if payment_method_id not in data["users"][order["user_id"]]["payment_methods"]:
        return "Error: payment method not found"
    if "gift_card" not in payment_method_id and payment_method_id != order["payment_history"][0]["payment_method_id"]:
        return "Error: payment method should be either the original payment method or a gift card"
    all_item_ids = [item["item_id"] for item in order["items"]]
    for item_id in item_ids:
        if item_ids.count(item_id) > all_item_ids.count(item_id):
            return "Error: some item not found"

    order["status"] = "return requested"
    order["return_items"] = sorted(item_ids)
    order["return_payment_method_id"] = payment_method_id
    return json.dumps(order)


def think(data: dict, thought: str) -> str:
    """Use the tool to think about something. It will not obtain new information or change the database, but just append the thought to the log. Use it when complex reasoning or some cache memory is needed.

    Args:
        data: The domain state (not shown to the agent).
        thought: A thought to think about.
    """
    return ""


def transfer_to_human_agents(data: dict, summary: str) -> str:
    """Transfer the user to a human agent, with a summary of the user's issue. Only transfer if the user explicitly asks for a human agent, or if the user's issue cannot be resolved by the agent with the available tools.

    Args:
        data: The domain state (not shown to the agent).
        summary: A summary of the user's issue.
    """
    return "Transfer successful"


TOOLS: tuple = (
    calculate,
    cancel_pending_order,
    exchange_delivered_order_items,
    find_user_id_by_email,
    find_user_id_by_name_zip,
    get_order_details,
    get_product_details,
    get_user_details,
    list_all_product_types,
    modify_pending_order_address,
    modify_pending_order_items,
    modify_pending_order_payment,
    modify_user_address,
    return_delivered_order_items,
    think,
    transfer_to_human_agents,
)
"""The retail tools in upstream's order (the order of the schemas the agent sees)."""
