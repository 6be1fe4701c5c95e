"""Retail worlds: tau-bench's data files, or a synthetic shop of any size drawn from a seed.

A world is a dict of three tables keyed by id, in tau-bench's shape:

- ``users[user_id]``: ``name`` (first/last), ``address``, ``email``, ``payment_methods`` (credit
  cards, PayPal, gift cards with a ``balance``) and the ids of their ``orders``;
- ``orders["#W1234567"]``: ``user_id``, ``address``, ``items`` (name, product and item id, price,
  options), ``fulfillments`` (tracking ids), ``status`` (pending, processed, delivered, cancelled)
  and ``payment_history``;
- ``products[product_id]``: ``name`` and ``variants`` by item id (options, availability, price).
"""

from __future__ import annotations

import gc
import itertools
import json
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TABLES = ("users", "orders", "products")

FIRST_NAMES = (
    "Aarav", "Ahmed", "Amelia", "Anya", "Ava", "Chen", "Daiki", "Emma", "Ethan", "Fatima", "Harper",
    "Isabella", "Ivan", "James", "Juan", "Lei", "Liam", "Lucas", "Mason", "Mei", "Mia", "Mohamed",
    "Noah", "Olivia", "Omar", "Raj", "Sofia", "Sophia", "Yara", "Yusuf", "Zeynep", "Evelyn", "Aisha",
    "Sara", "Ines", "Kenji", "Priya", "Mateo", "Nora", "Hugo",
)
LAST_NAMES = (
    "Ahmed", "Anderson", "Brown", "Davis", "Garcia", "Gonzalez", "Hernandez", "Ito", "Jackson",
    "Johansson", "Johnson", "Khan", "Kim", "Kovacs", "Lee", "Li", "Lopez", "Martin", "Moore", "Muller",
    "Nguyen", "Patel", "Rossi", "Sanchez", "Santos", "Silva", "Smith", "Sullivan", "Taylor", "Thomas",
    "Wilson", "Wright", "Yamamoto", "Young", "Okafor", "Novak", "Haddad", "Larsen", "Costa", "Weber",
)
STREETS = (
    "Main Street", "Park Avenue", "Oak Street", "Pine Lane", "Maple Drive", "Cedar Avenue",
    "Elm Street", "Sunset Drive", "River Road", "Hillcrest Drive", "Lakeview Drive", "Broadway",
    "Laurel Lane", "Hickory Lane", "Willow Lane", "Spruce Street", "Chestnut Street", "Highland Drive",
)
CITIES = (  # city, state, zip prefix
    ("New York", "NY", "100"), ("Los Angeles", "CA", "900"), ("Chicago", "IL", "606"),
    ("Houston", "TX", "770"), ("Phoenix", "AZ", "850"), ("Philadelphia", "PA", "191"),
    ("San Antonio", "TX", "782"), ("San Diego", "CA", "921"), ("Dallas", "TX", "752"),
    ("San Jose", "CA", "951"), ("Austin", "TX", "787"), ("Jacksonville", "FL", "322"),
    ("Fort Worth", "TX", "761"), ("Columbus", "OH", "432"), ("Charlotte", "NC", "282"),
    ("San Francisco", "CA", "941"), ("Indianapolis", "IN", "462"), ("Seattle", "WA", "981"),
    ("Denver", "CO", "802"), ("Washington", "DC", "200"),
)

CATALOG: tuple[tuple[str, float, dict[str, tuple[str, ...]]], ...] = (
    # product type, typical price, option values
    ("Action Camera", 480, {
        "resolution": ("4K", "5K", "1080p"), "waterproof": ("yes", "no"), "color": ("black", "silver")}),
    ("Air Purifier", 520, {
        "room size": ("small", "medium", "large"), "filter type": ("HEPA", "carbon", "ionic"),
        "features": ("quiet operation", "smart sensors", "night mode")}),
    ("Backpack", 200, {
        "color": ("black", "green", "grey", "navy"), "size": ("small", "medium", "large"),
        "material": ("nylon", "polyester", "leather")}),
    ("Bicycle", 1900, {
        "frame size": ("small", "medium", "large"), "color": ("red", "blue", "black", "green"),
        "type": ("road", "mountain", "city")}),
    ("Bluetooth Speaker", 220, {
        "color": ("black", "blue", "red", "green"), "battery life": ("10 hours", "20 hours"),
        "water resistance": ("yes", "no")}),
    ("Bookshelf", 500, {
        "material": ("wood", "metal", "glass"), "color": ("white", "black", "brown"),
        "height": ("3 ft", "4 ft", "5 ft", "6 ft")}),
    ("Coffee Maker", 260, {
        "color": ("black", "white", "stainless steel"), "capacity": ("1 cup", "4 cups", "8 cups"),
        "type": ("drip", "espresso", "french press")}),
    ("Cycling Helmet", 190, {
        "size": ("S", "M", "L"), "color": ("red", "blue", "black", "white"),
        "ventilation": ("low", "medium", "high")}),
    ("Desk Lamp", 140, {
        "color": ("black", "white", "silver"), "brightness": ("low", "medium", "high"),
        "power source": ("AC adapter", "battery", "USB")}),
    ("Digital Camera", 2700, {
        "resolution": ("20MP", "24MP", "30MP"), "zoom": ("3x", "5x", "10x"),
        "storage": ("SD card", "CF card")}),
    ("Dumbbell Set", 450, {
        "weight range": ("5-25 lbs", "30-50 lbs", "55-75 lbs"), "material": ("iron", "rubber", "urethane"),
        "set type": ("fixed", "adjustable")}),
    ("E-Reader", 270, {
        "screen size": ("6-inch", "7-inch", "8-inch"), "connectivity": ("Wi-Fi", "Wi-Fi + Cellular"),
        "storage": ("8GB", "32GB")}),
    ("Electric Kettle", 140, {
        "capacity": ("1L", "1.5L", "2L"), "material": ("glass", "plastic", "stainless steel"),
        "color": ("black", "white", "silver")}),
    ("Electric Toothbrush", 180, {
        "color": ("white", "black", "blue"), "speed settings": ("low", "high"),
        "battery type": ("AA batteries", "rechargeable")}),
    ("Espresso Machine", 2600, {
        "pressure": ("9 bar", "15 bar", "19 bar"), "capacity": ("1L", "1.5L", "2L"),
        "type": ("manual", "automatic", "capsule")}),
    ("Fleece Jacket", 170, {
        "size": ("S", "M", "L", "XL"), "color": ("red", "black", "navy"), "zipper": ("full", "half")}),
    ("Gaming Mouse", 140, {
        "color": ("black", "white", "RGB"), "sensor type": ("optical", "laser"),
        "connectivity": ("wired", "wireless")}),
    ("Garden Hose", 100, {
        "length": ("25ft", "50ft", "100ft"), "material": ("rubber", "vinyl", "latex"),
        "color": ("green", "blue", "black")}),
    ("Grill", 1000, {
        "type": ("electric", "gas", "charcoal"), "size": ("portable", "medium", "large"),
        "features": ("rotisserie", "side burner", "none")}),
    ("Headphones", 200, {
        "type": ("in-ear", "on-ear", "over-ear"), "connectivity": ("wired", "wireless"),
        "color": ("black", "white", "red", "blue")}),
    ("Hiking Boots", 240, {
        "size": ("7", "8", "9", "10", "11", "12"), "material": ("leather", "synthetic"),
        "waterproof": ("yes", "no")}),
    ("Indoor Security Camera", 2900, {
        "resolution": ("1080p", "2K", "4K"), "field of view": ("110 degrees", "130 degrees", "160 degrees"),
        "connectivity": ("Wi-Fi", "Ethernet")}),
    ("Jigsaw Puzzle", 60, {
        "pieces": ("500", "1000", "1500", "2000"), "theme": ("animals", "art", "fantasy", "landscape"),
        "difficulty level": ("beginner", "intermediate", "expert")}),
    ("LED Light Bulb", 50, {
        "brightness": ("60W equivalent", "75W equivalent", "100W equivalent"),
        "color temperature": ("daylight", "warm white"), "connectivity": ("none", "Wi-Fi", "Bluetooth")}),
    ("Laptop", 2500, {
        "screen size": ("13-inch", "15-inch", "17-inch"), "processor": ("i5", "i7", "i9"),
        "ram": ("8GB", "16GB", "32GB"), "storage": ("256GB SSD", "512GB SSD", "1TB SSD")}),
    ("Luggage Set", 500, {
        "piece count": ("2-piece", "3-piece", "4-piece"), "color": ("black", "blue", "red", "silver"),
        "material": ("hardshell", "softshell")}),
    ("Makeup Kit", 250, {
        "skin tone": ("light", "medium", "dark"), "kit size": ("basic", "professional"),
        "brand": ("Brand A", "Brand B", "Brand C")}),
    ("Mechanical Keyboard", 250, {
        "switch type": ("linear", "tactile", "clicky"), "backlight": ("none", "white", "RGB"),
        "size": ("60%", "80%", "full size")}),
    ("Notebook", 30, {"size": ("A4", "A5"), "cover type": ("hard cover", "soft cover")}),
    ("Office Chair", 480, {
        "material": ("fabric", "leather", "mesh"), "color": ("black", "gray", "blue", "red"),
        "armrest": ("none", "fixed", "adjustable")}),
    ("Patio Umbrella", 280, {
        "size": ("6 ft", "7 ft", "8 ft"), "color": ("red", "green", "blue", "black"),
        "material": ("polyester", "olefin", "sunbrella")}),
    ("Perfume", 290, {
        "scent family": ("fresh", "oriental", "woody"), "size": ("30ml", "50ml", "100ml"),
        "gender": ("men", "women", "unisex")}),
    ("Pet Bed", 190, {
        "size": ("small", "medium", "large"), "material": ("memory foam", "polyester", "fleece"),
        "color": ("brown", "grey", "beige")}),
    ("Portable Charger", 140, {
        "capacity": ("5000mAh", "10000mAh", "20000mAh"), "output": ("USB-A", "USB-C", "Wireless"),
        "color": ("black", "white", "blue")}),
    ("Running Shoes", 190, {
        "size": ("8", "9", "10", "11"), "color": ("black", "white", "red", "yellow"),
        "material": ("mesh", "leather", "synthetic")}),
    ("Skateboard", 190, {
        "deck material": ("maple", "bamboo", "plastic"), "length": ("28 inch", "31 inch", "34 inch"),
        "design": ("plain", "graphic", "custom")}),
    ("Smart Thermostat", 260, {
        "compatibility": ("Apple HomeKit", "Amazon Alexa", "Google Assistant"),
        "color": ("black", "white", "stainless steel")}),
    ("Smart Watch", 320, {
        "color": ("black", "silver", "gold"), "band material": ("leather", "metal", "silicone"),
        "display": ("LCD", "AMOLED")}),
    ("Smartphone", 1100, {
        "color": ("black", "gold", "rose gold"), "storage": ("64GB", "128GB", "256GB"),
        "RAM": ("4GB", "6GB", "8GB")}),
    ("Sneakers", 190, {
        "size": ("8", "9", "10", "11"), "color": ("black", "white", "gray"),
        "material": ("canvas", "leather", "synthetic")}),
    ("Sunglasses", 270, {
        "frame color": ("black", "brown", "silver"), "lens color": ("black", "blue", "green", "brown"),
        "lens type": ("polarized", "non-polarized")}),
    ("T-Shirt", 50, {
        "color": ("black", "blue", "purple", "red"), "size": ("S", "M", "L", "XL", "XXL"),
        "material": ("cotton", "polyester"), "style": ("crew neck", "v-neck")}),
    ("Tablet", 2900, {
        "screen size": ("8-inch", "10-inch", "12-inch"), "storage": ("64GB", "128GB"),
        "color": ("black", "silver", "gold")}),
    ("Tea Kettle", 90, {
        "material": ("ceramic", "glass", "stainless steel"),
        "capacity": ("1 liter", "1.5 liters", "2 liters"),
        "stovetop compatibility": ("gas", "electric", "induction")}),
    ("Vacuum Cleaner", 560, {
        "type": ("upright", "canister", "robotic"), "bagged/bagless": ("bagged", "bagless"),
        "features": ("cordless", "HEPA filter", "pet hair removal")}),
    ("Wall Clock", 210, {
        "diameter": ("10 inches", "12 inches", "14 inches"), "color": ("black", "white", "wood"),
        "type": ("analog", "digital")}),
    ("Water Bottle", 40, {
        "capacity": ("500ml", "750ml", "1000ml"), "material": ("plastic", "glass", "stainless steel"),
        "color": ("blue", "red", "green", "black")}),
    ("Wireless Earbuds", 200, {
        "color": ("black", "white", "blue"), "battery life": ("4 hours", "6 hours", "8 hours"),
        "water resistance": ("IPX4", "IPX7", "not resistant")}),
    ("Wristwatch", 2000, {
        "strap material": ("leather", "metal", "silicone"), "dial color": ("black", "white", "blue")}),
    ("Yoga Mat", 100, {
        "thickness": ("4mm", "5mm", "6mm"), "material": ("PVC", "natural rubber", "TPE"),
        "color": ("blue", "green", "pink", "purple")}),
)
"""The shop's 50 product types (tau-bench's tools tell the agent there are exactly 50)."""

ORDER_STATUSES = ("pending", "delivered", "processed", "cancelled")
ORDER_STATUS_CUM_WEIGHTS = tuple(itertools.accumulate((42, 37, 11, 10)))
ORDERS_PER_USER_CUM_WEIGHTS = tuple(itertools.accumulate((6, 27, 28, 21, 11, 7)))  # 0 to 5, about 2
"""Cumulative weights, computed once: ``rng.choices`` would otherwise add them up on every draw."""


def load(data_dir: Path) -> dict[str, Any]:
    """Read ``users.json``, ``orders.json`` and ``products.json`` (tau-bench's retail data folder)."""
    data_dir = Path(data_dir)
    return {name: json.loads((data_dir / f"{name}.json").read_text()) for name in TABLES}


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the garbage collector while a world is built: millions of fresh containers, none in a
    cycle, would set off full collections over the growing heap and double the generation time."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def unique_id(rng: random.Random, taken: set[str], make: Callable[[random.Random], str]) -> str:
    """Draw ids with ``make(rng)`` until one is new; ids are sparse, so this is O(1) expected."""
    while True:
        value = make(rng)
        if value not in taken:
            taken.add(value)
            return value


def _digits(n: int) -> Callable[[random.Random], str]:
    return lambda rng: f"{rng.randrange(10 ** n):0{n}d}"


def _products(rng: random.Random, ids: set[str]) -> dict[str, Any]:
    products = {}
    for name, price, options in CATALOG:
        combos = list(itertools.product(*options.values()))
        chosen = rng.sample(combos, min(len(combos), rng.randint(5, 20)))
        product_id = unique_id(rng, ids, _digits(10))
        variants = {}
        for combo in chosen:
            item_id = unique_id(rng, ids, _digits(10))
            variants[item_id] = {
                "item_id": item_id,
                "options": dict(zip(options, combo)),
                "available": rng.random() < 0.8,
                "price": round(price * rng.uniform(0.85, 1.15), 2),
            }
        products[product_id] = {"name": name, "product_id": product_id, "variants": variants}
    return products


def draw_address(rng: random.Random) -> dict[str, str]:
    """A US street address in tau-bench's shape (the airline's users live at such addresses too)."""
    city, state, zip_prefix = rng.choice(CITIES)
    return {
        "address1": f"{rng.randint(100, 999)} {rng.choice(STREETS)}",
        "address2": f"Suite {rng.randint(100, 999)}",
        "city": city,
        "country": "USA",
        "state": state,
        "zip": f"{zip_prefix}{rng.randint(0, 99):02d}",
    }


def _payment_methods(rng: random.Random, ids: set[str]) -> dict[str, Any]:
    sources = [s for s in ("credit_card", "paypal", "gift_card") if rng.random() < 0.45] or [
        rng.choice(("credit_card", "paypal", "gift_card"))]
    if "credit_card" in sources and rng.random() < 0.1:
        sources.append("credit_card")
    methods = {}
    for source in sources:
        method_id = unique_id(rng, ids, lambda r, s=source: f"{s}_{r.randint(1000000, 9999999)}")
        if source == "credit_card":
            methods[method_id] = {"source": source, "brand": rng.choice(("visa", "mastercard")),
                                  "last_four": f"{rng.randint(0, 9999):04d}", "id": method_id}
        elif source == "gift_card":
            methods[method_id] = {"source": source, "balance": rng.randint(0, 100), "id": method_id}
        else:
            methods[method_id] = {"source": source, "id": method_id}
    return methods


def _order(rng: random.Random, order_id: str, user_id: str, user: dict, catalog: list[tuple[dict, list]],
           ids: set[str]) -> dict[str, Any]:
    items = []
    for _ in range(rng.randint(1, 5)):
        product, variants = rng.choice(catalog)
        variant = rng.choice(variants)
        items.append({"name": product["name"], "product_id": product["product_id"], "item_id": variant["item_id"],
                      "price": variant["price"], "options": dict(variant["options"])})
    status = rng.choices(ORDER_STATUSES, cum_weights=ORDER_STATUS_CUM_WEIGHTS)[0]
    fulfillments = [] if status == "pending" else [
        {"tracking_id": [unique_id(rng, ids, _digits(12))], "item_ids": [item["item_id"] for item in items]}]
    method_id = rng.choice(list(user["payment_methods"]))
    amount = round(sum(item["price"] for item in items), 2)
    payments = [{"transaction_type": "payment", "amount": amount, "payment_method_id": method_id}]
    if status == "cancelled":
        payments.append({"transaction_type": "refund", "amount": amount, "payment_method_id": method_id})
    return {
        "order_id": order_id,
        "user_id": user_id,
        "address": dict(user["address"]) if rng.random() < 0.9 else draw_address(rng),
        "items": items,
        "fulfillments": fulfillments,
        "status": status,
        "payment_history": payments,
    }


def generate(seed: int, users: int = 50) -> dict[str, Any]:
    """A synthetic shop of ``users`` customers (about two orders each) over 50 product types.

    Deterministic for a seed and O(users): 100,000 users take a few seconds.
    """
    with gc_paused():
        return _generate(random.Random(seed), users)


def _generate(rng: random.Random, users: int) -> dict[str, Any]:
    ids: set[str] = set()
    products = _products(rng, ids)
    catalog = [(p, list(p["variants"].values())) for p in products.values()]
    user_table: dict[str, Any] = {}
    orders: dict[str, Any] = {}
    user_ids: set[str] = set()
    seen: set[tuple[str, str, str]] = set()  # name and zip find a user: keep them unique, as emails
    emails: set[str] = set()
    for _ in range(users):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        address = draw_address(rng)
        while (first, last, address["zip"]) in seen:
            address = draw_address(rng)
        seen.add((first, last, address["zip"]))
        user_id = unique_id(rng, user_ids, lambda r: f"{first.lower()}_{last.lower()}_{r.randint(1000, 9999)}")
        handle = f"{first.lower()}.{last.lower()}"
        user = {
            "name": {"first_name": first, "last_name": last},
            "address": address,
            "email": unique_id(rng, emails, lambda r: f"{handle}{r.randint(1000, 9999)}@example.com"),
            "payment_methods": _payment_methods(rng, ids),
            "orders": [],
        }
        for _ in range(rng.choices(range(6), cum_weights=ORDERS_PER_USER_CUM_WEIGHTS)[0]):
            order_id = unique_id(rng, ids, lambda r: f"#W{r.randint(1000000, 9999999)}")
            orders[order_id] = _order(rng, order_id, user_id, user, catalog, ids)
            user["orders"].append(order_id)
        user_table[user_id] = user
    return {"users": user_table, "orders": orders, "products": products}
