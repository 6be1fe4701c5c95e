"""The calculation domain: its tools, its Gymnasium env and its scripted challenger."""

import json
import random
import re
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.calculation.env import CalculationEnv
from envs.calculation.challenger import FAMILIES, make_tasks
from envs.calculation.tools import MAX_EXPONENT, MAX_EXPRESSION, TOOLSET
from envs.cat import Attempt, CodeAsTask, ToolCall
from envs.filter import filter_tasks
from envs.sandbox import make_sandbox
from envs.state import fork, state_hash

ENV_ID = "SelfChallenge-Calculation-v0"


def call(name, **arguments):
    return json.dumps({"name": name, "arguments": arguments})


@pytest.fixture
def state():
    return fork(CalculationEnv.base_state({"seed": 0}))


@pytest.fixture(scope="module")
def env():
    env = CalculationEnv()
    yield env
    env.close()


def one_per_family(tasks):
    """The first task of each family, so that a small sample still covers every family."""
    firsts = {}
    for task in tasks:
        firsts.setdefault(task.provenance["family"], task)
    assert len(firsts) == len(FAMILIES)
    return list(firsts.values())


def play(env, task, attempt):
    """An episode through ``env.step``: the attempt's JSON tool calls, then ``finish``."""
    env.reset(options={"task": task})
    for action in attempt.actions:
        _, reward, terminated, truncated, _ = env.step(call(action.name, **action.arguments))
        assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, _, info = env.step(call("finish", answer=attempt.answer))
    assert terminated and info["verifier"]["status"] in ("ok", "failed"), info["verifier"]
    return reward


# ---------------------------------------------------------------- tools

def run(state, name, **arguments):
    return TOOLSET.call(state, name, arguments)


def test_calculate_follows_precedence_and_accepts_the_usual_symbols(state):
    assert run(state, "calculate", expression="(12.5 + 3) * 4 / 2") == "31"
    assert run(state, "calculate", expression="2 + 3 × 4 − 1 ÷ 4") == "13.75"
    assert run(state, "calculate", expression="2 ^ 10 + sqrt(16) + max(1, 7)") == "1035"
    assert run(state, "calculate", expression="1 / 3") == "0.333333"
    assert run(state, "calculate", expression="round(12345, -2) + round(2.345, 2)") == "12302.35"


@pytest.mark.parametrize("expression, text", [
    ("10 ** 15", "1000000000000000"), ("-10 ** 15 - 0.5", "-1000000000000000.5"),
    ("123456789 * 987654321", "121932631112635269"), ("9" * 240 + " * 10", "9" * 240 + "0"),
    ("2 ** 53 + 1", "9007199254740992"), ("10 ** 16", "1e+16"), ("-0.0000001", "0"),
    ("1 " + "+1" * 249, "250"), ("round(1.5, 1000)", "1.5"),  # the longest expression, the most digits
])
def test_calculate_writes_plain_decimals_with_every_digit_of_an_integer(state, expression, text):
    assert len(expression) <= MAX_EXPRESSION and run(state, "calculate", expression=expression) == text


@pytest.mark.parametrize("expression, error", [
    ("1 / (3 - 3)", "Error: division by zero"),
    ("2 +* 3", "Error: could not parse the expression"),
    ("__import__('os').system('true')", "Error: unsupported element"),
    ("9 ** 9 ** 9", "Error: exponents above"),
    ("10.0 ** 300 * 10.0 ** 300", "Error: the result is too large"),
    ("1 " + "+1" * 249 + " ", "Error: the expression is longer than 500 characters"),  # 501 characters
    ("round(5, -30000000)", "Error: round takes a whole number of digits"),  # 10**30000000, exactly: a minute
    ("round(2.5, 0.5)", "Error: round takes a whole number of digits"),
    ("round(2.5, 1001)", "Error: round takes a whole number of digits from -1000 to 1000"),
])
def test_calculate_refuses_bad_expressions_with_a_readable_error(state, expression, error):
    before = state_hash(state)
    assert run(state, "calculate", expression=expression).startswith(error)
    assert state_hash(state) == before


def test_currency_tools_agree_and_ignore_case(state):
    rate = float(run(state, "get_exchange_rate", from_currency="EUR", to_currency="JPY").split("= ")[1].split()[0])
    converted = run(state, "convert_currency", amount=250, from_currency="eur", to_currency="jpy")
    assert converted.endswith(" JPY") and float(converted.split()[0]) == pytest.approx(250 * rate, rel=1e-5)


def test_unknown_currency_is_an_error_that_names_the_known_ones_and_changes_nothing(state):
    before = state_hash(state)
    out = run(state, "convert_currency", amount=10, from_currency="XYZ", to_currency="EUR")
    assert out.startswith("Error: unknown currency 'XYZ'; known: USD, EUR")
    assert run(state, "get_country", country="Atlantis").startswith("Error: unknown country")
    assert state_hash(state) == before


def test_worlds_differ_by_seed_and_are_the_same_for_the_same_seed():
    def rate(seed):
        return run(fork(CalculationEnv.build_world({"seed": seed})), "get_exchange_rate", from_currency="USD", to_currency="EUR")
    assert rate(1) == rate(1) != rate(2)


def test_duty_and_tax_lookups_feed_add_percentage(state):
    duty = json.loads(run(state, "get_tariff", category="Electronics"))["duty_percent"]
    country = json.loads(run(state, "get_country", country="germany"))
    assert country["currency"] == "EUR"
    assert run(state, "add_percentage", amount=200, percent=duty) == f"{200 * (1 + duty / 100):.2f}"


def test_unit_conversion_covers_factors_temperatures_and_trade_units(state):
    assert run(state, "convert_units", value=100, from_unit="celsius", to_unit="fahrenheit") == "212 fahrenheit"
    assert run(state, "convert_units", value=1, from_unit="mi", to_unit="km") == "1.6093 km"
    crate = json.loads(run(state, "list_units"))["mass"]["crate"]
    assert run(state, "convert_units", value=2, from_unit="crate", to_unit="kg") == f"{2 * crate:g} kg"
    assert run(state, "convert_units", value=1, from_unit="kg", to_unit="m").startswith("Error: cannot convert kg (mass)")


def test_temperatures_below_absolute_zero_are_refused_and_absolute_zero_itself_converts(state):
    assert run(state, "convert_units", value=-500, from_unit="celsius", to_unit="kelvin") == \
        "Error: -500 celsius is below absolute zero"
    assert run(state, "convert_units", value=-1, from_unit="kelvin", to_unit="kelvin").startswith("Error:")
    assert run(state, "convert_units", value=-459.67, from_unit="fahrenheit", to_unit="celsius") == "-273.15 celsius"


def test_aggregate_statistics(state):
    assert run(state, "aggregate", numbers=[3, 1.5, 7, 2], operation="mean") == "3.375"
    assert run(state, "aggregate", numbers=[3, 1.5, 7, 2], operation="median") == "2.5"
    assert run(state, "aggregate", numbers=[], operation="max") == "Error: the max of an empty list is undefined"
    assert run(state, "aggregate", numbers=[1], operation="mode").startswith("Error: argument 'operation'")


def test_text_tools(state):
    secret = run(state, "caesar_shift", text="Meet at Noon!", shift=3)
    assert secret == "Phhw dw Qrrq!"
    assert run(state, "caesar_shift", text=secret, shift=-3) == "Meet at Noon!"
    assert run(state, "caesar_shift", text=run(state, "caesar_shift", text="ROT", shift=13), shift=13) == "ROT"
    assert run(state, "reverse_text", text="abc") == "cba"
    assert run(state, "count_occurrences", text="banana", substring="an") == "2"
    assert run(state, "count_occurrences", text="banana", substring="") == "Error: the substring to count is empty"


def test_dna_tools(state):
    assert run(state, "reverse_complement", sequence="aatgc") == "GCATT"
    assert run(state, "gc_content", sequence="GGCA") == "75.00%"
    assert run(state, "transcribe", sequence="ATGGCCTAA") == "AUGGCCUAA"
    assert run(state, "translate", sequence="AUGGCCUAAGG") == "MA"
    assert run(state, "translate", sequence="ATGGCC").startswith("Error: a mRNA sequence holds only A, C, G, U; found T")
    assert run(state, "reverse_complement", sequence="ATXG").startswith("Error: a DNA sequence holds only")


def test_ledger_writes_once_per_label_and_a_failing_write_changes_nothing(state):
    assert run(state, "get_ledger") == "The ledger is empty."
    assert run(state, "record_entry", label="INV-1", amount=12.345, currency="eur") == "Recorded INV-1: 12.35 EUR"
    before = state_hash(state)
    assert run(state, "record_entry", label="INV-1", amount=5, currency="EUR").startswith("Error: the ledger already has")
    assert run(state, "record_entry", label="INV-2", amount=5, currency="XYZ").startswith("Error: unknown currency")
    assert run(state, "record_entry", label=" ", amount=5, currency="EUR") == "Error: the label is empty"
    assert state_hash(state) == before
    assert json.loads(run(state, "get_ledger")) == [{"label": "INV-1", "amount": 12.35, "currency": "EUR"}]


def test_episodes_never_write_into_the_world(env):
    task = env.tasks[0]
    env.reset(options={"task_id": task.id})
    env.step(call("record_entry", label="X", amount=1, currency="USD"))
    env.reset(options={"task_id": task.id})
    assert env.step(call("get_ledger"))[0] == "The ledger is empty."


# ---------------------------------------------------------------- the environment

def test_check_env_passes_without_warnings():
    made = gym.make(ENV_ID)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(made.unwrapped)
    finally:
        made.close()


def test_gym_make_with_no_arguments_works():
    made = gym.make(ENV_ID)
    try:
        obs, info = made.reset(seed=3)
        assert obs == made.unwrapped.task.instruction and info["domain"] == "calculation"
        assert "verify" not in json.dumps(info)
        obs, reward, terminated, _, _ = made.step(call("list_currencies"))
        assert json.loads(obs)[0] == {"code": "USD", "name": "US dollar"} and not terminated
        obs, _, _, _, info = made.step("no action here")
        assert obs.startswith("Error: could not parse a tool call") and "invalid_action" in info
        obs, _, _, _, _ = made.step("```python\nprint(calculate('6 * 7'))\n```")
        assert obs.strip() == "42"
    finally:
        made.close()


def test_help_teaches_the_env_in_gymnasiums_sections():
    for section in ("Description", "Action Space", "Observation Space", "Rewards", "Starting State",
                    "Episode End", "Arguments"):
        assert f"## {section}" in CalculationEnv.__doc__


def test_solutions_score_one_and_failure_cases_score_zero_through_step(env):
    for task in one_per_family(make_tasks(seed=1, n=2 * len(FAMILIES))):
        assert play(env, task, task.solution) == 1.0, task.id
        for failure in task.failures:
            assert play(env, task, failure) == 0.0, task.id


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_play_each_task_and_reward_each_env_on_its_own(mode):
    # Async workers are forked, and a forked process must not talk to the parent's sandbox workers
    # (the default sandbox is process-wide): each gets an unstarted sandbox that starts its own.
    kwargs = {"sandbox": make_sandbox("local")} if mode == "async" else {}
    vec = gym.make_vec(ENV_ID, num_envs=8, vectorization_mode=mode, **kwargs)
    try:
        pool = {task.id: task for task in CalculationEnv.default_tasks()}
        obs, info = vec.reset(seed=1)
        tasks = [pool[task_id] for task_id in info["task_id"]]
        assert list(obs) == [task.instruction for task in tasks]
        for turn in range(max(len(task.solution.actions) for task in tasks)):
            actions = [task.solution.actions[turn] if turn < len(task.solution.actions) else ToolCall("get_ledger")
                       for task in tasks]
            obs, rewards, terminated, truncated, _ = vec.step([call(a.name, **a.arguments) for a in actions])
            assert all(isinstance(o, str) and o and not o.startswith("Error") for o in obs)
            assert not terminated.any() and not rewards.any()
        right = [i % 2 == 0 for i in range(8)]
        answers = [task.solution.answer if ok else "no idea" for task, ok in zip(tasks, right)]
        obs, rewards, terminated, _, info = vec.step([call("finish", answer=a) for a in answers])
        assert list(obs) == ["Episode finished."] * 8 and terminated.all()
        assert list(rewards) == [float(ok) for ok in right], list(info["verifier"]["status"])
    finally:
        vec.close()


# ---------------------------------------------------------------- the challenger

def test_challenger_makes_500_distinct_tasks_that_all_pass_the_filter():
    tasks = make_tasks(seed=0, n=500)
    assert len({t.instruction for t in tasks}) == len({t.id for t in tasks}) == 500
    assert {t.provenance["family"] for t in tasks} == {f.__name__.lstrip("_") for f in FAMILIES}
    difficulties = [t.provenance["difficulty"] for t in tasks]
    assert min(difficulties) == 1 and max(difficulties) >= 6
    assert sum(d >= 4 for d in difficulties) >= 50
    assert all(t.provenance["challenger"] == "scripted" and len(t.failures) >= 3 for t in tasks)
    _, report, _ = filter_tasks(tasks)
    assert report.kept == report.total == 500, str(report)


def test_failure_cases_are_well_formed_and_rejected_by_the_verifier_itself(env):
    for task in one_per_family(make_tasks(seed=5, n=2 * len(FAMILIES))):
        for failure in task.failures:
            result, observations, problems = env.replay(task, failure)
            assert problems == [], (task.id, problems)
            assert not any(o.startswith("Error") for o in observations), (task.id, observations)
            assert result.status == "failed", (task.id, result)


def test_challenger_is_deterministic_per_seed_and_grows_its_pool_by_extension():
    first = [t.dumps() for t in make_tasks(seed=2, n=30)]
    assert first == [t.dumps() for t in make_tasks(seed=2, n=30)]
    assert first[:10] == [t.dumps() for t in make_tasks(seed=2, n=10)]
    assert {t.instruction for t in make_tasks(seed=3, n=30)} != {json.loads(t)["instruction"] for t in first}


def test_default_pool_is_small_and_from_world_zero():
    tasks = CalculationEnv.default_tasks()
    assert len(tasks) == 32 and {t.world["seed"] for t in tasks} == {0}
    assert [t.id for t in tasks] == [f"calculation-0-{i}" for i in range(32)]


def test_numeric_verifiers_read_the_answers_last_number():
    task = next(t for t in make_tasks(seed=0, n=40) if t.provenance["family"] == "currency_conversion")
    value = float(task.solution.answer.split()[0])
    env = CalculationEnv(tasks=[task])

    def score(answer):
        return env.replay(task, Attempt(task.solution.actions, answer))[0].status

    assert score(f"The amount comes to {value:,.2f}") == "ok"
    assert score(f"{value} (ref INV-2041)") == "ok"
    assert score(f"{value} or maybe {value * 2}") == "failed"
    assert score("I could not work it out") == "failed"


def test_ledger_tasks_check_the_ledger_not_only_the_answer():
    task = next(t for t in make_tasks(seed=0, n=40) if t.provenance["family"] == "ledger_invoices")
    env = CalculationEnv(tasks=[task])
    assert env.replay(task, Attempt((), task.solution.answer))[0].status == "failed"
    assert "ledger_holds(state['ledger']" in task.verifier


def test_temperatures_asked_in_kelvin_are_above_absolute_zero_so_no_such_draw_is_lost():
    from envs.calculation.challenger import Scout, _unit_conversion
    from envs.calculation.world import build_world

    scout = Scout(build_world(0))
    drafts = [_unit_conversion(scout, random.Random(i)) for i in range(300)]
    kelvin = [float(m.group(1)) for d in drafts if (m := re.search(r"(-?[\d.]+) kelvin", d.instruction))]
    assert len(kelvin) >= 10 and min(kelvin) > 0


def test_tasks_round_trip_through_json():
    task = make_tasks(seed=0, n=1)[0]
    assert CodeAsTask.loads(task.dumps()) == task
    assert all(isinstance(a, ToolCall) for a in task.solution.actions)
    assert envs.ENV_IDS["calculation"] == ENV_ID


def test_money_rounds_a_tiny_negative_amount_to_zero_without_a_minus_sign(state):
    """_money promises never ``-0.00``."""
    assert run(state, "add_percentage", amount=-0.001, percent=0) == "0.00"
    assert run(state, "convert_currency", amount=-0.001, from_currency="USD", to_currency="USD") == "0.00 USD"


def test_money_rounds_once_to_the_nearest_cent(state):
    """0.3749 is nearer 0.37 than 0.38: rounding to a tenth of a cent first would round twice."""
    assert run(state, "add_percentage", amount=0.3749, percent=0) == "0.37"


def test_lookups_ignore_surrounding_spaces_as_well_as_case(state):
    """An agent's ' eur ' names the euro)."""
    assert run(state, "convert_currency", amount=10, from_currency=" usd ", to_currency="USD ") == "10.00 USD"
    assert json.loads(run(state, "get_country", country=" germany "))["country"] == "Germany"


def test_the_largest_allowed_exponent_is_accepted_and_the_next_refused(state):
    """The error says exponents *above* MAX_EXPONENT are refused."""
    assert not run(state, "calculate", expression=f"2 ** {MAX_EXPONENT}").startswith("Error")
    assert not run(state, "calculate", expression=f"2 ** -{MAX_EXPONENT}").startswith("Error")
    assert run(state, "calculate", expression=f"2 ** {MAX_EXPONENT + 1}").startswith("Error: exponents above")


def test_a_negative_base_to_a_fractional_power_is_a_readable_error(state):
    """Python gives a complex number; the tool says why there is no answer."""
    assert run(state, "calculate", expression="(-8) ** (1 / 3)") == \
        "Error: a negative number to a fractional power has no real value"


def test_calculate_takes_numbers_not_booleans(state):
    """True is no number of the expression language."""
    assert run(state, "calculate", expression="True + 1").startswith("Error: unsupported element")


def test_calculate_refuses_keyword_arguments_rather_than_ignoring_them(state):
    """round(2.567, ndigits=1) must not silently become round(2.567) = 3."""
    assert run(state, "calculate", expression="round(2.567, ndigits=1)").startswith("Error: unsupported element")


def test_calculate_ignores_whitespace_around_the_expression(state):
    """Models often start an argument with a space or a newline before parsing)."""
    assert run(state, "calculate", expression=" 1 + 1") == run(state, "calculate", expression="\n1 + 1\n") == "2"


@pytest.mark.parametrize("expression", ["1.5 / 0", "5 % 0", "7.0 // 0"])
def test_every_kind_of_division_by_zero_gives_the_same_error(state, expression):
    """Not Python's 'float division by zero' or 'integer modulo by zero'."""
    assert run(state, "calculate", expression=expression) == "Error: division by zero"


def test_the_count_and_sum_of_an_empty_list_are_zero(state):
    """Only statistics without a value for [] are errors."""
    assert run(state, "aggregate", numbers=[], operation="count") == "0"
    assert run(state, "aggregate", numbers=[], operation="sum") == "0"


def test_sum_is_exact_where_adding_in_order_loses_a_term(state):
    """1e16 + 1 - 1e16 is 1; float addition in order gives 0."""
    assert run(state, "aggregate", numbers=[1e16, 1.0, -1e16], operation="sum") == "1"


def test_sequences_may_be_written_with_spaces_and_line_breaks(state):
    """A sequence copied from a FASTA-like block has whitespace in it."""
    assert run(state, "transcribe", sequence="atg gcc\ntaa") == "AUGGCCUAA"
    assert run(state, "reverse_complement", sequence=" a c\tg\nt ") == "ACGT"


@pytest.mark.parametrize("tool", ["gc_content", "reverse_complement", "transcribe", "translate"])
def test_an_empty_sequence_is_an_error_that_says_so(state, tool):
    """Not 'division by zero' (gc_content) nor an empty answer."""
    assert run(state, tool, sequence="  ").startswith("Error: the ") and "sequence is empty" in \
        run(state, tool, sequence="  ")


def test_translation_keeps_a_last_codon_that_ends_exactly_at_the_sequence_end(state):
    """Only bases after the last *whole* codon are dropped)."""
    assert run(state, "translate", sequence="AUGGCC") == "MA"
    assert run(state, "translate", sequence="AUGGCCA") == "MA"


@pytest.mark.parametrize("stop", ["UAA", "UAG", "UGA"])
def test_each_of_the_three_standard_stop_codons_ends_translation(state, stop):
    """The standard genetic code (UGA is a stop, UGG tryptophan)."""
    assert run(state, "translate", sequence=f"AUGUGG{stop}GCC") == "MW"


def test_gc_content_accepts_rna_as_its_description_says(state):
    """'A DNA or RNA sequence': U is a base, neither G nor C."""
    assert run(state, "gc_content", sequence="GCAU") == "50.00%"


@pytest.mark.parametrize("amount", [float("nan"), float("inf")])
def test_a_non_finite_amount_is_an_error_and_never_reaches_the_ledger(state, amount):
    """'nan EUR' is no amount of money."""
    assert run(state, "add_percentage", amount=amount, percent=10).startswith("Error: ")
    assert run(state, "record_entry", label="X", amount=amount, currency="EUR").startswith("Error: ")
    assert run(state, "get_ledger") == "The ledger is empty."


def test_ledger_lists_entries_in_the_order_they_were_recorded(state):
    """As get_ledger's docstring says."""
    for label in ("B-2", "A-1", "C-3"):
        run(state, "record_entry", label=label, amount=1, currency="USD")
    assert [e["label"] for e in json.loads(run(state, "get_ledger"))] == ["B-2", "A-1", "C-3"]
