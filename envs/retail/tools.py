"""tau-bench's 16 retail tools, one plain function each, over a retail state.

Each tool gives the agent exactly the text upstream gives (``json.dumps`` of a record, or upstream's
``Error: …`` strings), and raises where upstream raises (e.g. a ``KeyError`` for an order whose user
is missing) so that ``Toolset.call`` turns it into the same ``Error: …`` observation. Unlike
upstream, every tool checks everything before it writes, so a failing call leaves the state as it
was. ``state`` holds the tables ``users``, ``orders`` and ``products`` (copy-on-write
:class:`envs.state.Table` views): a record that will change is fetched by key first.

The docstrings are the schemas: their summaries and argument texts are upstream's, word for word.
"""

from __future__ import annotations

import ast
import json
from typing import Literal

from envs.state import copy_json

_MAX_INT_BITS = 1 << 16
"""Past this size an integer result would overflow ``float()`` anyway: refuse it before computing it."""


def _int_bits(node: ast.AST) -> int | None:
    """An upper bound on the bits of the integer that ``node`` evaluates to; ``None`` for a float
    (floats cost O(1) whatever their size). Raises ``OverflowError`` as soon as a sub-expression
    could outgrow ``_MAX_INT_BITS``, so that ``9**9**9`` is refused instead of hanging the worker."""
    if isinstance(node, ast.Constant):
        return abs(node.value).bit_length() if isinstance(node.value, int) else None
    if isinstance(node, ast.UnaryOp):
        return _int_bits(node.operand)
    if not isinstance(node, ast.BinOp):
        for child in ast.iter_child_nodes(node):
            _int_bits(child)
        return None
    left, right = _int_bits(node.left), _int_bits(node.right)
    if left is None or right is None or isinstance(node.op, ast.Div):
        bits = None
    elif isinstance(node.op, (ast.Add, ast.Sub)):
        bits = max(left, right) + 1
    elif isinstance(node.op, ast.Mult):
        bits = left + right
    elif isinstance(node.op, ast.Pow):
        if left <= 1:
            return 1
        if right > 32:
            raise OverflowError("int too large to convert to float")
        exponent = eval(compile(ast.Expression(node.right), "<string>", "eval"), {"__builtins__": None}, {})
        bits = None if exponent < 0 else left * exponent
    else:
        bits = left
    if bits is not None and bits > _MAX_INT_BITS:
        raise OverflowError("int too large to convert to float")
    return bits


def calculate(state: dict, expression: str) -> str:
    """Calculate the result of a mathematical expression.

    Args:
        state: The domain state (not shown to the agent).
        expression: The mathematical expression to calculate, such as '2 + 2'. The expression can
            contain numbers, operators (+, -, *, /), parentheses, and spaces.
    """
    if not all(char in "0123456789+-*/(). " for char in expression):
        return "Error: invalid characters in expression"
    try:
        try:
            _int_bits(ast.parse(expression, mode="eval"))
        except SyntaxError:
            pass  # eval below raises it with upstream's exact message
        return str(round(float(eval(expression, {"__builtins__": None}, {})), 2))
    except Exception as e:
        return f"Error: {e}"


def cancel_pending_order(
    state: dict, order_id: str, reason: Literal["no longer needed", "ordered by mistake"]
) -> str:
    """Cancel a pending order. If the order is already processed or delivered, it cannot be cancelled. The agent needs to explain the cancellation detail and ask for explicit user confirmation (yes/no) to proceed. If the user confirms, the order status will be changed to 'cancelled' and the payment will be refunded. The refund will be added to the user's gift card balance immediately if the payment was made using a gift card, otherwise the refund would take 5-7 business days to process. The function returns the order details after the cancellation.

    Args:
        state: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
        reason: The reason for cancellation, which should be either 'no longer needed' or 'ordered
            by mistake'.
    """
    orders = state["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "pending":
        return "Error: non-pending order cannot be cancelled"
    if reason not in ["no longer needed", "ordered by mistake"]:
        return "Error: invalid reason"

    refunds = [
        {"transaction_type": "refund", "amount": p["amount"], "payment_method_id": p["payment_method_id"]}
        for p in order["payment_history"]
    ]
    gift_refunds = [r for r in refunds if "gift_card" in r["payment_method_id"]]
    if gift_refunds:  # refunded at once: look every card up before the first write
        methods = state["users"][order["user_id"]]["payment_methods"]
        cards = [methods[r["payment_method_id"]] for r in gift_refunds]
        for card, refund in zip(cards, gift_refunds):
            card["balance"] = round(card["balance"] + refund["amount"], 2)
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    order["payment_history"].extend(refunds)
    return json.dumps(order)


def _price_difference(state: dict, order: dict, item_ids: list[str], new_item_ids: list[str]) -> float | str:
    """The summed price change of swapping ``item_ids`` for ``new_item_ids`` in ``order``, or
    upstream's error text; shared by the exchange and the modify tools, which check alike."""
    all_item_ids = [item["item_id"] for item in order["items"]]
    for item_id in item_ids:
        if item_ids.count(item_id) > all_item_ids.count(item_id):
            return f"Error: {item_id} not found"
    if len(item_ids) != len(new_item_ids):
        return "Error: the number of items to be exchanged should match"
    products = state["products"]
    diff_price = 0
    for item_id, new_item_id in zip(item_ids, new_item_ids):
        item = [item for item in order["items"] if item["item_id"] == item_id][0]
        variants = products[item["product_id"]]["variants"]
        if not (new_item_id in variants and variants[new_item_id]["available"]):
            return f"Error: new item {new_item_id} not found or available"
        diff_price += variants[new_item_id]["price"] - item["price"]
    return diff_price


def exchange_delivered_order_items(
    state: dict, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> str:
    """Exchange items in a delivered order to new items of the same product type. For a delivered order, return or exchange can be only done once by the agent. The agent needs to explain the exchange detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        state: The domain state (not shown to the agent).
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
    orders = state["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "delivered":
        return "Error: non-delivered order cannot be exchanged"
    diff_price = _price_difference(state, order, item_ids, new_item_ids)
    if isinstance(diff_price, str):
        return diff_price
    diff_price = round(diff_price, 2)

    methods = state["users"][order["user_id"]]["payment_methods"]
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


def find_user_id_by_email(state: dict, email: str) -> str:
    """Find user id by email. If the user is not found, the function will return an error message.

    Args:
        state: The domain state (not shown to the agent).
        email: The email of the user, such as 'something@example.com'.
    """
    for user_id, profile in state["users"].items():
        if profile["email"].lower() == email.lower():
            return user_id
    return "Error: user not found"


def find_user_id_by_name_zip(state: dict, first_name: str, last_name: str, zip: str) -> str:
    """Find user id by first name, last name, and zip code. If the user is not found, the function will return an error message. By default, find user id by email, and only call this function if the user is not found by email or cannot remember email.

    Args:
        state: The domain state (not shown to the agent).
        first_name: The first name of the customer, such as 'John'.
        last_name: The last name of the customer, such as 'Doe'.
        zip: The zip code of the customer, such as '12345'.
    """
    for user_id, profile in state["users"].items():
        if (
            profile["name"]["first_name"].lower() == first_name.lower()
            and profile["name"]["last_name"].lower() == last_name.lower()
            and profile["address"]["zip"] == zip
        ):
            return user_id
    return "Error: user not found"


def get_order_details(state: dict, order_id: str) -> str:
    """Get the status and details of an order.

    Args:
        state: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
    """
    if order_id in state["orders"]:
        return json.dumps(state["orders"][order_id])
    return "Error: order not found"


def get_product_details(state: dict, product_id: str) -> str:
    """Get the inventory details of a product.

    Args:
        state: The domain state (not shown to the agent).
        product_id: The product id, such as '6086499569'. Be careful the product id is different
            from the item id.
    """
    if product_id in state["products"]:
        return json.dumps(state["products"][product_id])
    return "Error: product not found"


def get_user_details(state: dict, user_id: str) -> str:
    """Get the details of a user, including their orders.

    Args:
        state: The domain state (not shown to the agent).
        user_id: The user id, such as 'sara_doe_496'.
    """
    if user_id in state["users"]:
        return json.dumps(state["users"][user_id])
    return "Error: user not found"


def list_all_product_types(state: dict) -> str:
    """List the name and product id of all product types. Each product type has a variety of different items with unique item ids and options. There are only 50 product types in the store.

    Args:
        state: The domain state (not shown to the agent).
    """
    product_dict = {product["name"]: product["product_id"] for product in state["products"].values()}
    return json.dumps(dict(sorted(product_dict.items())))


def _address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict[str, str]:
    """An address record, keys in upstream's order (the order ``json.dumps`` shows)."""
    return {"address1": address1, "address2": address2, "city": city, "state": state, "country": country, "zip": zip}


def modify_pending_order_address(
    data: dict, order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> str:
    """Modify the shipping address of a pending order. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        data: The domain state (not shown to the agent); named ``data`` here, as upstream does,
            because ``state`` is the address's state.
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
    state: dict, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> str:
    """Modify items in a pending order to new items of the same product type. For a pending order, this function can only be called once. The agent needs to explain the exchange detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        state: The domain state (not shown to the agent).
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
    orders = state["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "pending":
        return "Error: non-pending order cannot be modified"
    diff_price = _price_difference(state, order, item_ids, new_item_ids)
    if isinstance(diff_price, str):
        return diff_price

    users = state["users"]
    if payment_method_id not in users[order["user_id"]]["payment_methods"]:
        return "Error: payment method not found"
    method = users[order["user_id"]]["payment_methods"][payment_method_id]
    if method["source"] == "gift_card" and method["balance"] < diff_price:
        return "Error: insufficient gift card balance to pay for the new item"

    # upstream neither rounds the difference it records nor copies the options it takes
    order["payment_history"].append({
        "transaction_type": "payment" if diff_price > 0 else "refund",
        "amount": abs(diff_price),
        "payment_method_id": payment_method_id,
    })
    if method["source"] == "gift_card":
        method["balance"] = round(method["balance"] - diff_price, 2)
    products = state["products"]
    for item_id, new_item_id in zip(item_ids, new_item_ids):
        item = [item for item in order["items"] if item["item_id"] == item_id][0]
        variant = products[item["product_id"]]["variants"][new_item_id]
        item["item_id"] = new_item_id
        item["price"] = variant["price"]
        item["options"] = copy_json(variant["options"])
    order["status"] = "pending (item modified)"
    return json.dumps(order)


def modify_pending_order_payment(state: dict, order_id: str, payment_method_id: str) -> str:
    """Modify the payment method of a pending order. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        state: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
        payment_method_id: The payment method id to pay or receive refund for the item price
            difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked
            up from the user or order details.
    """
    orders = state["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "pending":
        return "Error: non-pending order cannot be modified"
    methods = state["users"][order["user_id"]]["payment_methods"]
    if payment_method_id not in methods:
        return "Error: payment method not found"
    history = order["payment_history"]
    if len(history) > 1 or history[0]["transaction_type"] != "payment":
        return "Error: there should be exactly one payment for a pending order"
    old_method_id = history[0]["payment_method_id"]
    if old_method_id == payment_method_id:
        return "Error: the new payment method should be different from the current one"
    amount = history[0]["amount"]
    method = methods[payment_method_id]
    if method["source"] == "gift_card" and method["balance"] < amount:
        return "Error: insufficient gift card balance to pay for the order"
    old_method = methods[old_method_id] if "gift_card" in old_method_id else None

    history.extend([
        {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
        {"transaction_type": "refund", "amount": amount, "payment_method_id": old_method_id},
    ])
    if method["source"] == "gift_card":
        method["balance"] = round(method["balance"] - amount, 2)
    if old_method is not None:
        old_method["balance"] = round(old_method["balance"] + amount, 2)
    return json.dumps(order)


def modify_user_address(
    data: dict, user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> str:
    """Modify the default address of a user. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        data: The domain state (not shown to the agent); named ``data`` here, as upstream does,
            because ``state`` is the address's state.
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


def return_delivered_order_items(state: dict, order_id: str, item_ids: list[str], payment_method_id: str) -> str:
    """Return some items of a delivered order. The order status will be changed to 'return requested'. The agent needs to explain the return detail and ask for explicit user confirmation (yes/no) to proceed. The user will receive follow-up email for how and where to return the item.

    Args:
        state: The domain state (not shown to the agent).
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the
            beginning of the order id.
        item_ids: The item ids to be returned, each such as '1008292230'. There could be duplicate
            items in the list.
        payment_method_id: The payment method id to pay or receive refund for the item price
            difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked
            up from the user or order details.
    """
    orders = state["orders"]
    if order_id not in orders:
        return "Error: order not found"
    order = orders[order_id]
    if order["status"] != "delivered":
        return "Error: non-delivered order cannot be returned"
    if payment_method_id not in state["users"][order["user_id"]]["payment_methods"]:
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


def think(state: dict, thought: str) -> str:
    """Use the tool to think about something. It will not obtain new information or change the database, but just append the thought to the log. Use it when complex reasoning or some cache memory is needed.

    Args:
        state: The domain state (not shown to the agent).
        thought: A thought to think about.
    """
    return ""


def transfer_to_human_agents(state: dict, summary: str) -> str:
    """Transfer the user to a human agent, with a summary of the user's issue. Only transfer if the user explicitly asks for a human agent, or if the user's issue cannot be resolved by the agent with the available tools.

    Args:
        state: The domain state (not shown to the agent).
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
