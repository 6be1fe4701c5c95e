"""Upstream mode against tau-bench itself: the same calls in our env and in upstream's must answer
the same and leave the same data.

Random sequences of tool calls, a thousand per domain by default (``DIFF_SEQUENCES``), play in our
env built with ``tool_mode="upstream"`` (through ``env.step``, as an agent's text) and in upstream's
own ``Env.step``, on the same data: subsets of upstream's database, a new subset every few
sequences. Half the calls are malformed (an argument missing, wrongly typed or unknown, an unknown
tool), the others well-formed from the current data, with scenarios that exercise upstream's
partial writes and id sequences (one certificate paid with twice, a fourth booking, a fourth
certificate). Every step's text and every sequence's final data hash (upstream's own
``consistent_hash``) must be equal; where upstream's step itself raises, our episode must end with
reward 0 and say why. A second test replays the gold actions of every upstream task in both our
modes and compares outputs and hashes with upstream's replay.

Needs a tau-bench checkout (``TAUBENCH_DIR=/path/to/tau-bench``; clone
https://github.com/sierra-research/tau-bench); skipped without one. Upstream is imported from the
checkout; its LLM client (``litellm``) is replaced by a stub when it is not installed, since no model
is ever called here.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import random
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

from envs.cat import Attempt, CodeAsTask
from envs.registry import ENV_IDS, env_class
from envs.state import fork
from envs.taubench import upstream_hash
from envs.tools import ToolMode

TAUBENCH_DIR = os.environ.get("TAUBENCH_DIR", "")
SEQUENCES = int(os.environ.get("DIFF_SEQUENCES", "1000"))
SEQUENCES_PER_WORLD = 25
DOMAINS = ("retail", "airline")
MODES: tuple[ToolMode, ...] = ("strict", "upstream")

pytestmark = [pytest.mark.filterwarnings("ignore::SyntaxWarning"), pytest.mark.skipif(
    not (Path(TAUBENCH_DIR) / "tau_bench").is_dir(),
    reason="set TAUBENCH_DIR to a tau-bench checkout (git clone https://github.com/sierra-research/tau-bench) "
           "to compare upstream mode with upstream itself")]  # eval warns of `(1)(2)`, on both sides

Call = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def upstream() -> Iterator[types.SimpleNamespace]:
    """Upstream's env classes, ``Action`` and hash, imported from the checkout."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(TAUBENCH_DIR)
        if importlib.util.find_spec("litellm") is None:
            patch.setitem(sys.modules, "litellm", types.SimpleNamespace(completion=None))
        base = importlib.import_module("tau_bench.envs.base")
        yield types.SimpleNamespace(
            Action=importlib.import_module("tau_bench.types").Action,
            data_hash=lambda data: base.consistent_hash(base.to_hashable(data)),
            retail=importlib.import_module("tau_bench.envs.retail").MockRetailDomainEnv,
            airline=importlib.import_module("tau_bench.envs.airline").MockAirlineDomainEnv,
        )


def _upstream_env(upstream: types.SimpleNamespace, domain: str) -> Any:
    env = getattr(upstream, domain)(user_strategy="human", user_model="none", task_split="test", task_index=0)
    env.terminate_tools = []  # a transfer then answers like any tool: upstream's reward replay is not under test
    return env


# ---------------------------------------------------------------- worlds: subsets of upstream's data

def _subset(data: dict[str, Any], domain: str, rng: random.Random) -> dict[str, Any]:
    users = {u: data["users"][u] for u in rng.sample(sorted(data["users"]), 30)}
    if domain == "retail":
        orders = {o: data["orders"][o] for user in users.values() for o in user["orders"] if o in data["orders"]}
        return {"users": users, "orders": orders, "products": data["products"]}
    reservations = {r: data["reservations"][r] for user in users.values() for r in user["reservations"]
                    if r in data["reservations"]}
    booked = {leg["flight_number"] for r in reservations.values() for leg in r["flights"]}
    numbers = booked | set(rng.sample(sorted(data["flights"]), 60))
    flights = {n: f for n, f in data["flights"].items() if n in numbers}
    return {"users": users, "flights": flights, "reservations": reservations}


# ---------------------------------------------------------------- calls

WRONG = [123, -1, 0, 1.5, True, None, "", "garbage", [], ["x"], {"a": 1}, [{"flight_number": 7}], 10 ** 30,
         [[1]], "#W0000000"]
UNKNOWN_TOOLS = ["get_order", "Calculate", "", "cancel_reservation ", "respond_to_user", "book"]
EXPRESSIONS = ["2 + 2", "(10 - 3) / 3", "2 ** 40000 / 2 ** 39999", "2 ** 1024 * 1.0", "1 / 0", "2 ** -1", "((1)",
               "", "abc", "10 ** 400 / 10 ** 399", "3 * (2 + 1.5)", "(1)(2)", "()", "...", "1 // 0", "2.5 ** 1000",
               "-(-(-1))", "1e5", "100 ** 100", "7 // 2", "3 ** 100000 // 3 ** 99999", "0.1 + 0.2", "2 ** 2 ** 10"]


def _malformed(rng: random.Random, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` with some left out, some wrongly typed and perhaps one unknown."""
    out = {}
    for name, value in arguments.items():
        roll = rng.random()
        if roll >= 0.12:
            out[name] = rng.choice(WRONG) if roll < 0.3 else value
    if rng.random() < 0.15:
        out[rng.choice(["foo", "data", "state", "kwargs", "Order_id"])] = rng.choice(WRONG)
    return out


def _retail_values(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    """Well-formed arguments for every retail tool, drawn from the current data."""
    users, orders, products = data["users"], data["orders"], data["products"]
    user_id = rng.choice(list(users))
    user = users[user_id]
    order_id = rng.choice([o for o in user["orders"] if o in orders] or list(orders))
    items = orders[order_id]["items"]
    chosen = rng.sample(items, rng.randint(1, len(items))) if items else []
    item_ids = [item["item_id"] for item in chosen] + (["1234567890"] if rng.random() < 0.1 else [])
    new_item_ids = [rng.choice(list(products[item["product_id"]]["variants"])) for item in chosen]
    if rng.random() < 0.1:
        new_item_ids = new_item_ids[1:]
    name = user["name"]
    return {
        "user_id": user_id if rng.random() < 0.9 else "nobody_0000",
        "order_id": order_id if rng.random() < 0.9 else "#W0000000",
        "item_ids": item_ids, "new_item_ids": new_item_ids,
        "payment_method_id": rng.choice([*user["payment_methods"], "gift_card_0000000"]),
        "reason": rng.choice(["no longer needed", "ordered by mistake", "changed my mind"]),
        "address1": "1 Elm St", "address2": rng.choice(["", "Apt 2"]), "city": "Austin", "state": "TX",
        "country": "USA", "zip": rng.choice([user["address"]["zip"], "00000"]),
        "email": rng.choice([user["email"], user["email"].upper(), "nobody@example.com"]),
        "first_name": name["first_name"], "last_name": rng.choice([name["last_name"], "Nobody"]),
        "product_id": rng.choice([*(item["product_id"] for item in items), "0"]),
        "expression": rng.choice(EXPRESSIONS), "thought": "Let me think.", "summary": "The user wants help.",
    }


def _airline_legs(rng: random.Random, flights: dict[str, Any]) -> list[dict[str, str]]:
    first = flights[rng.choice(list(flights))]
    legs = [first]
    onward = [f for f in flights.values() if f["origin"] == first["destination"]]
    if onward and rng.random() < 0.4:
        legs.append(rng.choice(onward))
    day = rng.randint(1, 30) if rng.random() < 0.3 else rng.randint(16, 30)
    return [{"flight_number": leg["flight_number"], "date": f"2024-05-{day + i:02d}"} for i, leg in enumerate(legs)]


def _price(flights: dict[str, Any], legs: list[dict[str, str]], cabin: str, passengers: int, insurance: str,
           nonfree: int) -> float:
    """What upstream charges for a booking, or 0 when a leg cannot be booked."""
    total = 0
    for leg in legs:
        day = flights[leg["flight_number"]]["dates"].get(leg["date"], {})
        if day.get("status") != "available" or cabin not in day["prices"]:
            return 0
        total += day["prices"][cabin] * passengers
    return total + 30 * passengers * (insurance == "yes") + 50 * nonfree


def _airline_values(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    """Well-formed arguments for every airline tool, drawn from the current data, with bookings
    whose payments add up more often than not."""
    users, flights, reservations = data["users"], data["flights"], data["reservations"]
    user_id = rng.choice(list(users))
    user = users[user_id]
    own = [r for r in user["reservations"] if r in reservations]
    reservation_id = rng.choice(own + ["HATHAT", "HATHAU", "HATHAV", "ZZZZZZ"] if own else list(reservations))
    owner = users.get(reservations.get(reservation_id, {}).get("user_id"), user)
    legs = _airline_legs(rng, flights)
    cabin = rng.choice(["basic_economy", "economy", "business", "first"])
    people = [{"first_name": "Ada", "last_name": "Lovelace", "dob": "1990-12-10"}] * rng.randint(1, 3)
    insurance, nonfree = rng.choice(["yes", "no", "maybe"]), rng.randint(0, 2)
    total = _price(flights, legs, cabin, len(people), insurance, nonfree) or rng.randint(50, 900)
    methods = list(user["payment_methods"]) or ["credit_card_0000000"]
    split = rng.random()
    if split < 0.6:
        payments = [{"payment_id": rng.choice(methods), "amount": total}]
    else:
        first = rng.choice(methods)
        second = first if split < 0.75 else rng.choice(methods)
        payments = [{"payment_id": first, "amount": total / 2}, {"payment_id": second, "amount": total - total / 2}]
    airport = flights[legs[0]["flight_number"]]
    return {
        "user_id": user_id, "reservation_id": reservation_id, "origin": airport["origin"],
        "destination": rng.choice([airport["destination"], flights[rng.choice(list(flights))]["destination"]]),
        "flight_type": rng.choice(["one_way", "round_trip"]), "cabin": cabin, "flights": legs, "passengers": people,
        "payment_methods": payments, "total_baggages": rng.randint(0, 4), "nonfree_baggages": nonfree,
        "insurance": insurance, "payment_id": rng.choice([*owner["payment_methods"], "gift_card_0000000"]),
        "date": rng.choice([legs[0]["date"], "2024-05-1x", "2024-05-30"]),
        "amount": rng.choice([100, 250.5, 5000, -10]),
        "expression": rng.choice(EXPRESSIONS), "thought": "Let me think.", "summary": "The user wants help.",
    }


VALUES: dict[str, Callable[[random.Random, dict[str, Any]], dict[str, Any]]] = {
    "retail": _retail_values, "airline": _airline_values}


def _random_call(rng: random.Random, domain: str, params: dict[str, list[str]], data: dict[str, Any]) -> Call:
    if rng.random() < 0.05:
        return rng.choice(UNKNOWN_TOOLS), {}
    name = rng.choice([n for n in params if n != "transfer_to_human_agents" or rng.random() < 0.2])
    values = VALUES[domain](rng, data)
    arguments = {p: values[p] for p in params[name]}
    return name, _malformed(rng, arguments) if rng.random() < 0.5 else arguments


def _scenario(rng: random.Random, data: dict[str, Any]) -> list[Call]:
    """An airline sequence aimed at upstream's partial writes and fixed ids."""
    user_id = rng.choice(list(data["users"]))
    kind = rng.choice(["certificate twice", "four bookings", "four certificates"])
    if kind == "four certificates":
        return [("send_certificate", {"user_id": user_id, "amount": 100 * i}) for i in range(1, 5)]
    booking = {**_airline_values(rng, data), "user_id": user_id}
    arguments = {k: booking[k] for k in ("user_id", "origin", "destination", "flight_type", "flights", "passengers",
                                         "total_baggages", "nonfree_baggages", "insurance")}
    arguments["cabin"] = "economy"
    total = _price(data["flights"], arguments["flights"], "economy", len(arguments["passengers"]),
                   arguments["insurance"], arguments["nonfree_baggages"])
    if kind == "certificate twice":
        halves = [{"payment_id": "certificate_3221322", "amount": total / 2}] * 2
        return [("send_certificate", {"user_id": user_id, "amount": 100_000}),
                ("book_reservation", {**arguments, "payment_methods": halves}),
                ("get_user_details", {"user_id": user_id})]
    card = next((m for m, v in data["users"][user_id]["payment_methods"].items() if v["source"] == "credit_card"),
                "credit_card_0000000")
    book = ("book_reservation", {**arguments, "payment_methods": [{"payment_id": card, "amount": total}]})
    return [book] * 4 + [("get_reservation_details", {"reservation_id": "HATHAV"}),
                         ("get_user_details", {"user_id": user_id})]


# ---------------------------------------------------------------- the comparison

def _ours(domain: str, worlds: list[Path]) -> Any:
    cats = [CodeAsTask(id=f"world-{i}", domain=domain, world={"data_dir": str(folder)},
                       instruction="(differential test)", verifier="def verify(state, answer):\n    return False\n",
                       solution=Attempt(()), failures=())
            for i, folder in enumerate(worlds)]
    return gym.make(ENV_IDS[domain], tasks=cats, tool_mode="upstream", max_turns=10_000).unwrapped


def _play(ours: Any, theirs: Any, upstream: types.SimpleNamespace, calls: Iterator[Call]) -> list[str]:
    """Play ``calls`` on both sides; every difference (empty: none)."""
    played, problems = [], []
    for name, arguments in calls:
        text = json.dumps({"name": name, "arguments": arguments})
        played.append(text)
        failure: Exception | None = None
        try:
            expected = theirs.step(upstream.Action(name=name, kwargs=json.loads(text)["arguments"])).observation
        except Exception as exc:  # upstream's own step failed: ours must end the episode, scoring 0
            failure = exc
        observation, reward, terminated, _, info = ours.step(text)
        if failure is not None:
            if not (terminated and reward == 0.0 and "upstream_failure" in info):
                problems.append(f"upstream's step raised {failure!r}; ours answered {observation[:300]!r}")
            break
        if observation != expected:
            problems.append(f"step {len(played)}: ours {observation[:300]!r}, upstream {expected[:300]!r}")
        if terminated:
            break
    if upstream_hash(ours.state) != upstream.data_hash(theirs.data):
        problems.append("the final data hashes differ")
    return [f"{p}\n  calls: {played}" for p in problems]


@pytest.mark.slow
@pytest.mark.parametrize("domain", DOMAINS)
def test_upstream_mode_answers_and_writes_as_upstream_on_random_sequences(domain: str, upstream: types.SimpleNamespace,
                                                                          tmp_path: Path) -> None:
    theirs = _upstream_env(upstream, domain)
    full = theirs.data_load_func()
    rng = random.Random(f"{domain}-worlds")
    texts, folders = [], []
    for i in range(-(-SEQUENCES // SEQUENCES_PER_WORLD)):
        world = _subset(full, domain, rng)
        folder = tmp_path / f"world-{i}"
        folder.mkdir()
        texts.append({table: json.dumps(records) for table, records in world.items()})
        for table, text in texts[-1].items():
            (folder / f"{table}.json").write_text(text)
        folders.append(folder)
    ours = _ours(domain, folders)
    params = ours.toolset.params()
    problems: list[str] = []
    try:
        for sequence in range(SEQUENCES):
            world = sequence // SEQUENCES_PER_WORLD
            ours.reset(options={"task_id": f"world-{world}"})
            theirs.data = {table: json.loads(text) for table, text in texts[world].items()}
            rng = random.Random(f"{domain}-{sequence}")
            if domain == "airline" and rng.random() < 0.2:
                calls = iter(_scenario(rng, theirs.data))
            else:  # each call drawn from the data as the calls before it left it
                calls = (_random_call(rng, domain, params, theirs.data) for _ in range(rng.randint(1, 8)))
            problems += [f"sequence {sequence}: {p}" for p in _play(ours, theirs, upstream, calls)]
    finally:
        ours.close()
    assert not problems, f"{len(problems)} differences; the first:\n" + "\n".join(problems[:5])


@pytest.mark.slow
@pytest.mark.parametrize("domain", DOMAINS)
def test_every_upstream_tasks_gold_actions_replay_as_upstream_in_both_modes(domain: str,
                                                                             upstream: types.SimpleNamespace) -> None:
    theirs = _upstream_env(upstream, domain)
    tasks = _upstream_tasks(domain, "test")  # the golden files hold the others (test_taubench_compat.py)
    cls = env_class(domain)
    base = cls.base_state({"data_dir": str(Path(TAUBENCH_DIR) / "tau_bench" / "envs" / domain / "data")})
    problems = []
    for index, task in enumerate(tasks):
        theirs.data = theirs.data_load_func()
        states = {mode: fork(base) for mode in MODES}
        for action in task.actions:
            if action.name == "respond":
                continue
            expected = theirs.step(action).observation
            for mode, state in states.items():
                got = cls.toolset.call(state, action.name, action.kwargs, mode)
                if got != expected:
                    problems.append(f"task {index} {mode}: {action.name}: ours {got[:200]!r}, "
                                    f"upstream {expected[:200]!r}")
        final = upstream.data_hash(theirs.data)
        problems += [f"task {index} {mode}: the final data hashes differ"
                     for mode, state in states.items() if upstream_hash(state) != final]
    assert not problems, "\n".join(problems[:10])


def _upstream_tasks(domain: str, split: str) -> list[Any]:
    module = importlib.import_module(f"tau_bench.envs.{domain}.tasks_{split}")
    return next(value for name, value in vars(module).items() if name.startswith("TASKS") and isinstance(value, list))

