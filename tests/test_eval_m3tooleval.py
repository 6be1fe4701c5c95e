"""The M3ToolEval harness on a fixture checkout with upstream's interface (tests/fixtures/m3tooleval_fixture):
upstream's protocol (retries, turn limit, single-tool checks), code actions in the sandbox with a
persistent namespace, filters, resume, batches of episodes played turn by turn (the same records as
one at a time), turns stopped once their trim is final (the same records again), and the command
line's exit codes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eval import m3tooleval
from envs.sandbox import default_sandbox
from eval.cli import InputError, run
from eval.m3tooleval import (RETRY_MESSAGE, load_benchmark, oracle_policy, run_task, run_tasks, select, summarize,
                             trim_generation, trim_is_final)
from agents.decoding import SamplingSettings
from agents.policy import ContextLimitExceeded, ModelPolicy, Policy, scripted
from eval.m3tooleval import batched
from test_agents_policy import forward_calls, tiny_model, tokenizer  # noqa: F401 (tokenizer is a fixture)

FIXTURE = Path(__file__).parent / "fixtures" / "m3tooleval_fixture"
NAMES = ["arithmetic/sum", "arithmetic/product_of_sums", "arithmetic/quotient", "tickets/second_ticket",
         "tickets/shout"]


@pytest.fixture(scope="module")
def bench() -> m3tooleval.Benchmark:
    return load_benchmark(FIXTURE)


def task(bench: m3tooleval.Benchmark, name: str):
    return next(t for t in bench.tasks if t.name == name)


def action(code: str) -> str:
    return f"Thought: let me compute.\nAction:\n{code}\nEnd Action"


def test_the_checkout_loads_with_its_tasks_in_order_without_importing_its_ipython_repl(bench):
    assert [t.name for t in bench.tasks] == NAMES
    assert bench.action_mode("code").value == "code_as_action"
    assert load_benchmark(FIXTURE) is bench  # loaded once: upstream's registry would double otherwise


def test_answering_each_expected_output_gets_every_task_right_in_one_turn(bench, tmp_path):
    summary = m3tooleval.evaluate(bench, "code", oracle_policy(bench.tasks), tmp_path, model="oracle")
    assert summary["domains"]["all"] == {"tasks": 5, "correct": 5, "success_rate": 1.0, "average_turns": 1.0}
    assert set(summary["domains"]) == {"arithmetic", "tickets", "all"}
    record = json.loads((tmp_path / "code_as_action.jsonl").read_text().splitlines()[0])
    assert {"task_name", "action_mode", "messages", "expected_output", "is_correct", "n_turns",
            "end_reason"} <= set(record)
    assert record["end_reason"] == "correct" and record["messages"][0]["role"] == "user"
    written = tmp_path / "code_as_action"
    assert (written / "summary.md").is_file() and (written / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_each_action_mode_keeps_its_own_summary_in_a_shared_output_folder(bench, tmp_path):
    for mode in ("code", "text"):
        m3tooleval.evaluate(bench, mode, oracle_policy(bench.tasks), tmp_path, model="oracle")
    for mode in ("code_as_action", "text_as_action"):
        assert json.loads((tmp_path / mode / "summary.json").read_text())["action_mode"] == mode.split("_")[0]
        assert (tmp_path / f"{mode}.jsonl").is_file()


def test_a_wrong_answer_gets_the_retry_message_and_the_episode_goes_on(bench):
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(["Answer: 41", "Answer: 42"]))
    assert record["is_correct"] and record["n_turns"] == 2
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "user", "assistant"]
    assert record["messages"][2]["content"] == RETRY_MESSAGE


def test_an_agent_that_never_gets_it_right_stops_at_ten_turns(bench):
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(["Answer: 0"]))
    assert (record["is_correct"], record["n_turns"], record["end_reason"]) == (False, 10, "limit")


def test_a_chat_past_the_context_ends_the_episode(bench):
    def full(messages):
        raise ContextLimitExceeded("too long")

    record = run_task(task(bench, "arithmetic/sum"), bench, "code", full)
    assert (record["n_turns"], record["end_reason"]) == (0, "context_limit")


def test_code_actions_call_the_tools_and_later_turns_see_earlier_variables(bench):
    replies = [action("s = add(2, 3)\nt = add(4, 5)"), action("multiply(s, t)"), "Answer: 45"]
    record = run_task(task(bench, "arithmetic/product_of_sums"), bench, "code", scripted(replies))
    observations = [m["content"] for m in record["messages"][2::2]]
    assert observations[0] == m3tooleval.NO_OUTPUT
    assert observations[1] == "45"  # the last expression is shown, as IPython's Out[n]
    assert record["is_correct"] and record["n_turns"] == 3


@pytest.mark.parametrize("cell, shown", [("add(2, 3);", m3tooleval.NO_OUTPUT),
                                         ("add(2, 3);  # quiet", m3tooleval.NO_OUTPUT),
                                         ("s = add(2, 3)\ns;\n# done\n", m3tooleval.NO_OUTPUT),
                                         ("print('sum', add(2, 3));", "sum 5\n"), ("add(2, 3)  # ;", "5")])
def test_a_semicolon_ending_the_cell_hides_its_last_value_as_in_ipython(bench, cell, shown):
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted([action(cell), "Answer: 42"]))
    assert record["messages"][2]["content"] == shown


@pytest.mark.parametrize("cells, shown", [
    (["raise SystemExit(3)", "print('after')"],
     ["An exception has occurred, use %tb to see the full traceback.\n\nSystemExit: 3\n\n", "after\n"]),
    (["import sys\nsys.stderr.write('E\\n')", "import warnings\nwarnings.warn('w')\nprint('next')"], ["2", "next\n"]),
    (["if __name__ == '__main__':\n    print('main')", "class A:\n    pass\nA.__module__"], ["main\n", "__main__"]),
    (["add(2, 3)", "_ * 10", "_;", "_ + 1"], ["5", "50", m3tooleval.NO_OUTPUT, "51"]),
    (["print('p'); 5", "print('value: Out[12]:x')"], ["p\n 5\n", "value: x\n"]),  # upstream strips "Out[n]:"
    (["1", "'q' * 1995"], ["1", " '" + "q" * 1991 + "...\n[Output Truncated]"]),  # "Out[2]: " counts in the cut
])
def test_the_shell_shows_what_ipython_shows(bench, cells, shown):
    """Observations IPython (upstream's PythonREPL, then its ``execute_action``) gives for these cells: a
    SystemExit noted and survived (a replayed one included), stderr and warnings unseen, ``__main__``,
    the last value kept as ``_``, the value's prompt stripped after the output is cut."""
    replies = [action(cell) for cell in cells] + ["Answer: 42"]
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(replies))
    assert [m["content"] for m in record["messages"][2:2 * len(cells) + 1:2]] == shown


def test_replayed_cells_do_not_call_a_stateful_tool_again(bench):
    replies = [action("first = take_ticket()\nprint(first)"), action("print(first, take_ticket())"), "Answer: 2"]
    record = run_task(task(bench, "tickets/second_ticket"), bench, "code", scripted(replies))
    assert [m["content"] for m in record["messages"][2:5:2]] == ["1", "1 2\n"]  # a literal output is read as one
    assert record["is_correct"]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_each_episode_of_a_task_starts_with_tools_of_its_own(bench, batch_size):
    """Samples of one task (eval.paper plays several) each take ticket 1 first, side by side or one after another."""
    take = 'Action: {"tool": "take_ticket", "args": []} End Action'
    second = task(bench, "tickets/second_ticket")
    records = run_tasks([second, second], bench, "json", batched(scripted([take, take, "Answer: 2"])), batch_size)
    assert [[m["content"] for m in r["messages"][2:5:2]] + [r["is_correct"]] for r in records] == [["1", "2", True]] * 2


def test_a_replayed_cell_draws_the_random_numbers_it_drew_live(bench):
    replies = [action("import random\nr = random.random()\nprint(r)"), action("print(r, random.random())"),
               "Answer: 42"]
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(replies))
    first, (again, after) = record["messages"][2]["content"], record["messages"][4]["content"].split()
    assert float(first) == float(again) != float(after)


def test_tool_values_cross_the_sandbox_as_python_literals_and_errors_keep_their_type(bench):
    replies = [action("q, r = divide(17, 5)\nprint(type(divide(17, 5)).__name__, q, r)"), action("divide(1, 0)"),
               "Answer: 3"]
    record = run_task(task(bench, "arithmetic/quotient"), bench, "code", scripted(replies))
    assert record["messages"][2]["content"] == "tuple 3 2\n"
    assert "ZeroDivisionError: cannot divide by zero" in record["messages"][4]["content"]
    assert "----> 1 divide(1, 0)" in record["messages"][4]["content"]



class ToolError(LookupError):
    """An error class of a tool's own, outside builtins."""


def lookup(key):
    return {"a": 1}[key]


def strange():
    raise ToolError("no such thing", 7)


def undecodable():
    return b"\xff".decode()


def non_finite():
    return [float("nan"), -math.inf]


def huge():
    return 10 ** 5000


def session(*functions) -> m3tooleval.CodeSession:
    return m3tooleval.CodeSession({f.__name__: SimpleNamespace(function=f) for f in functions}, default_sandbox())


def test_a_tools_built_in_error_is_rebuilt_with_its_own_type_and_arguments():
    """What the cell catches and IPython writes is the tool's own error: ``KeyError: 'b'`` (not its text
    quoted again), a UnicodeDecodeError with its five arguments."""
    code = session(lookup, undecodable)
    assert code.run("lookup('b')").endswith("\nKeyError: 'b'\n")
    assert code.run("try:\n    lookup('b')\nexcept KeyError as e:\n    print(type(e) is KeyError, e.args)") == \
        "True ('b',)\n"
    assert code.run("try:\n    undecodable()\nexcept UnicodeDecodeError as e:\n    print(e.reason, e.start)") == \
        "invalid start byte 0\n"


def test_an_error_of_a_tools_own_class_keeps_its_name_and_is_caught_as_its_built_in_base():
    code = session(strange)
    shown = code.run("strange()")
    assert shown.splitlines()[1].startswith("ToolError   ") and shown.endswith("\nToolError: ('no such thing', 7)\n")
    assert code.run("try:\n    strange()\nexcept LookupError as e:\n    print(type(e).__name__, e.args)") == \
        "ToolError ('no such thing', 7)\n"


def test_non_finite_floats_cross_as_floats_and_a_value_python_cannot_write_fails_as_printing_it_would():
    code = session(non_finite, huge)
    assert code.run("x = non_finite()\nprint(x[0] != x[0], x[1] < 0, type(x[1]).__name__)") == "True True float\n"
    assert code.run("huge()").endswith("\nValueError: Exceeds the limit (4300 digits) for integer string conversion; "
                                       "use sys.set_int_max_str_digits() to increase the limit\n")
    assert code.run("x[1] * 2") == " -inf\n"  # the session goes on, its earlier cells replayed


def smallest(*numbers):
    return min(numbers)


def test_non_finite_floats_cross_to_a_tool_as_arguments():
    """The running minimum that starts from infinity, as agents write it."""
    assert session(smallest).run('best = float("inf")\nfor price in (450, 300):\n    best = smallest(best, price)\n'
                                 'best') == 300


def test_a_tool_that_is_a_python_builtin_is_the_jobs_own_and_takes_what_no_literal_holds():
    """Upstream's travel tasks give ``min`` and ``max`` as tools: agents pass them ``key=`` functions
    and generators, and see them as IPython shows a builtin."""
    code = session(max)
    assert code.run('flights = [{"price": 450}, {"price": 300}]\nmax(flights, key=lambda f: f["price"])') == \
        {"price": 450}
    assert code.run('max(f["price"] for f in flights)') == 450
    assert code.run("print(max)") == "<built-in function max>\n"


def test_a_long_cell_that_makes_cycles_has_them_collected_as_upstreams_shell_does():
    """Each ring of a list and a kilobyte holds itself: 300 MB of them, past the job's 256 MB, unless the
    collector frees them as it runs (a sandbox job starts without it)."""
    cell = "for i in range(300_000):\n    ring = [bytearray(1000)]\n    ring.append(ring)\nprint('done')"
    assert session().run(cell) == "done\n"


def test_a_single_tool_task_is_checked_on_the_action_result(bench):
    record = run_task(task(bench, "tickets/shout"), bench, "code", scripted([action("shout('hello')")]))
    assert (record["is_correct"], record["n_turns"]) == (True, 1)


@pytest.mark.parametrize("mode, call", [("text", "Action: add, 12, 30 End Action"),
                                        ("json", 'Action: {"tool": "add", "args": [12, 30]} End Action')])
def test_text_and_json_actions_run_through_the_tasks_own_executor(bench, mode, call):
    record = run_task(task(bench, "arithmetic/sum"), bench, mode, scripted([call, "Answer: 42"]))
    assert record["messages"][2]["content"] == "42" and record["is_correct"]
    assert record["action_mode"] == f"{mode}_as_action"


def test_an_action_that_upstreams_executor_raises_on_becomes_the_observation_and_play_goes_on(bench):
    replies = ['Action: {"tool": ["add"], "args": [1, 2]} End Action', "Answer: 42"]
    record = run_task(task(bench, "arithmetic/sum"), bench, "json", scripted(replies))
    assert record["messages"][2]["content"].startswith("Invalid action. TypeError: ")
    assert (record["is_correct"], record["n_turns"]) == (True, 2)


def test_generations_are_trimmed_before_a_second_action_or_answer():
    assert trim_generation("  Answer: 3") == "Answer: 3"
    assert trim_generation("Action: add, 1, 2 End Action\nAnswer: 3") == "Action: add, 1, 2 End Action"
    assert trim_generation("Action: a End Action trailing text\nAction: b") == "Action: a End Action"
    assert trim_generation("Action: a\nThought: more\nAction: b") == "Action: a"


PIECES = ["Action:", "Answer:", "Action", "Answer", "A", ":", "ction:", "nswer:", "End Action", "Thought:", " ", "\n",
          "x", "print(1)", "é", "😀", "日本語"]
"""Generations made of these put markers, their fragments and multi-byte characters side by side."""


@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=14).map("".join))
@example("  Action: a\nThought: b\nAnswer: c")
@example("Answer: 1 Answer")
@example("Action: a End Action x Action: b")
def test_a_generation_cut_anywhere_after_its_trim_is_final_trims_as_the_whole_one(text):
    first = next((end for end in range(len(text) + 1) if trim_is_final(text[:end])), None)
    for end in range(first, len(text) + 1) if first is not None else ():
        assert trim_generation(text[:end]) == trim_generation(text)


def test_a_generation_stopped_at_the_first_token_with_a_final_trim_trims_as_the_whole_one(tokenizer):  # noqa: F811
    """As the policy sees it: the decoded text of a token prefix, where a token may end inside a
    character (the emoji and CJK pieces' bytes are split across tokens)."""
    pool = sorted({token for piece in PIECES for token in tokenizer(piece, add_special_tokens=False)["input_ids"]})
    assert any("\ufffd" in tokenizer.decode([token]) for token in pool)  # some tokens hold part of a character

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(pool), max_size=30))
    def check(tokens):
        texts = [tokenizer.decode(tokens[:end], skip_special_tokens=True) for end in range(len(tokens) + 1)]
        first = next((text for text in texts if trim_is_final(text)), None)
        if first is not None:
            assert trim_generation(first) == trim_generation(texts[-1])

    check()


def cycling_model(tokenizer, text: str, context: int = 4096):  # noqa: F811
    """A tiny model whose greedy continuation of any chat is ``text`` over and over: its layers add
    nothing to the residual stream, so each token's embedding alone picks the next token of ``text``
    (whose tokens must be distinct; the chat template's last, a newline, must be one of them)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    model = tiny_model(context)
    assert len(set(ids)) == len(ids) <= model.config.hidden_size
    embed, head = model.model.embed_tokens.weight, model.lm_head.weight
    assert embed.data_ptr() != head.data_ptr()
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                weight.zero_()
        head.zero_()
        for dimension, (token, following) in enumerate(zip(ids, ids[1:] + ids[:1])):
            embed[token] = 0.0
            embed[token, dimension] = 1.0
            head[following, dimension] = 1.0
    return model


def test_turns_stopped_once_their_trim_is_final_give_the_records_of_full_turns(tokenizer, tmp_path):  # noqa: F811
    model = cycling_model(tokenizer, "Action: shout, hi End Action\n")  # a second "Action:" on its 10th token
    calls = forward_calls(model)
    records, tokens = {}, {}
    for stop in (None, trim_is_final):
        calls.clear()
        checkout = fresh(tmp_path, f"stop-{stop is not None}")
        policy = ModelPolicy(model, tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=24), stop=stop)
        played = run_tasks(checkout.tasks, checkout, "text", batched(policy), batch_size=5)
        records[stop] = [json.dumps(r) for r in sorted(played, key=lambda r: r["task_name"])]
        tokens[stop] = len(calls)
    assert records[trim_is_final] == records[None]
    # 10 turns, the 5 episodes side by side, and once the prompts' shared start
    assert (tokens[None], tokens[trim_is_final]) == (1 + 10 * 24, 1 + 10 * 10)
    shout = json.loads(records[None][-1])
    assert shout["task_name"] == "tickets/shout" and shout["n_turns"] == 10
    assert shout["messages"][1:3] == [{"role": "assistant", "content": "Action: shout, hi End Action"},
                                      {"role": "user", "content": "HI"}]


def test_the_command_line_model_stops_each_turn_once_its_trim_is_final(tmp_path, monkeypatch):
    options = {}

    def load(model, adapter=None, **given):
        options.update(given)
        return oracle_policy(load_benchmark(FIXTURE).tasks)

    monkeypatch.setattr("eval.cli.load_model_policy", load)
    assert run(m3tooleval.main, ["--checkout", str(FIXTURE), "--tasks", "sum", "--out", str(tmp_path)]) == 0
    assert options["stop"] is trim_is_final


def test_task_regex_and_limit_select_the_tasks_run(bench, tmp_path):
    assert [t.name for t in select(bench.tasks, "^arithmetic/", 2)] == NAMES[:2]
    assert [t.name for t in select(bench.tasks, "ticket")] == NAMES[3:]
    with pytest.raises(InputError, match="matches none of the 5 tasks"):
        select(bench.tasks, "zzz")
    m3tooleval.evaluate(bench, "json", oracle_policy(bench.tasks), tmp_path, pattern="tickets", limit=1)
    records = [json.loads(line) for line in (tmp_path / "json_as_action.jsonl").read_text().splitlines()]
    assert [r["task_name"] for r in records] == ["tickets/second_ticket"]


def test_a_rerun_skips_the_tasks_already_in_the_output_file(bench, tmp_path):
    calls = []

    def counting(messages):
        calls.append(1)
        return oracle_policy(bench.tasks)(messages)

    m3tooleval.evaluate(bench, "code", counting, tmp_path, limit=2)
    with (tmp_path / "code_as_action.jsonl").open("a") as f:
        f.write('{"task_name": "tickets/sh')  # a crash in the middle of a record
    summary = m3tooleval.evaluate(bench, "code", counting, tmp_path)
    names = [json.loads(line)["task_name"] for line in (tmp_path / "code_as_action.jsonl").read_text().splitlines()]
    assert len(calls) == 5 and sorted(names) == sorted(NAMES)
    assert summary["domains"]["all"]["tasks"] == 5


REPLIES = {  # episodes of 2, 3, 10, 3 and 1 turns: a batch loses and refills episodes at different turns
    "arithmetic/sum": ["Answer: 41", "Answer: 42"],
    "arithmetic/product_of_sums": [action("s = add(2, 3)\nt = add(4, 5)"), action("multiply(s, t)"), "Answer: 45"],
    "arithmetic/quotient": ["Answer: 0"],
    "tickets/second_ticket": [action("first = take_ticket()\nprint(first)"), action("print(first, take_ticket())"),
                              "Answer: 2"],
    "tickets/shout": [action("shout('hello')")],
}


def per_task(bench: m3tooleval.Benchmark) -> Policy:
    """Each task's own scripted replies (the task found by its instruction in the prompt)."""
    policies = {t.instruction: scripted(REPLIES[t.name]) for t in bench.tasks}

    def policy(messages):
        return next(p for i, p in policies.items() if f"Instruction: {i}" in messages[0]["content"])(messages)

    return policy


def fresh(tmp_path: Path, name: str) -> m3tooleval.Benchmark:
    """The fixture loaded from a copy of its own: as upstream's, a task makes its stateful tools once
    and keeps them across resets, so a task played twice in one process needs a second checkout."""
    root = tmp_path / name
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return load_benchmark(root)


def lines(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines())


def test_a_batch_of_episodes_generates_together_and_ends_each_as_it_would_alone(tmp_path):
    batch_bench, alone_bench = fresh(tmp_path, "batch"), fresh(tmp_path, "alone")
    sizes = []

    def generate(chats):
        sizes.append(len(chats))
        return batched(per_task(batch_bench))(chats)

    together = run_tasks(batch_bench.tasks, batch_bench, "code", generate, batch_size=3)
    alone = [run_task(t, alone_bench, "code", per_task(alone_bench)) for t in alone_bench.tasks]
    assert [json.dumps(r) for r in sorted(together, key=lambda r: r["task_name"])] == \
        [json.dumps(r) for r in sorted(alone, key=lambda r: r["task_name"])]
    assert [(r["n_turns"], r["is_correct"]) for r in alone] == [(2, True), (3, True), (10, False), (3, True), (1, True)]
    assert [r["task_name"] for r in together] == ["arithmetic/sum", "arithmetic/product_of_sums", "tickets/shout",
                                                 "tickets/second_ticket", "arithmetic/quotient"]  # as they ended
    assert sizes == [3, 3, 3, 3, 2, 1, 1, 1, 1, 1]  # the batch stays full while tasks are queued


def test_a_model_run_in_batches_writes_the_records_of_one_task_at_a_time(bench, tokenizer, tmp_path):  # noqa: F811
    # the chats outgrow the model's context at various turns
    policy = ModelPolicy(tiny_model(context=330), tokenizer, SamplingSettings(temperature=0.0, max_new_tokens=4))
    one = m3tooleval.evaluate(bench, "code", policy, tmp_path / "one", batch_size=1)
    three = m3tooleval.evaluate(bench, "code", policy, tmp_path / "three", batch_size=3)
    assert lines(tmp_path / "one" / "code_as_action.jsonl") == lines(tmp_path / "three" / "code_as_action.jsonl")
    assert one == three
    records = [json.loads(line) for line in lines(tmp_path / "three" / "code_as_action.jsonl")]
    assert {r["end_reason"] for r in records} == {"context_limit"} and len({r["n_turns"] for r in records}) > 1


def test_a_batched_run_interrupted_midway_resumes_without_repeating_a_task(tmp_path):
    calls = []

    def interrupted(messages):
        if len(calls) == 12:  # in the fifth turn of the batch
            raise KeyboardInterrupt
        calls.append(1)
        return per_task(first)(messages)

    first, out = fresh(tmp_path, "first"), tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        m3tooleval.evaluate(first, "code", interrupted, out, batch_size=3)
    names = [json.loads(line)["task_name"] for line in (out / "code_as_action.jsonl").read_text().splitlines()]
    assert names == ["arithmetic/sum", "arithmetic/product_of_sums", "tickets/shout"]  # the tasks that had ended
    second, clean = fresh(tmp_path, "second"), fresh(tmp_path, "clean")
    summary = m3tooleval.evaluate(second, "code", per_task(second), out, batch_size=3)
    m3tooleval.evaluate(clean, "code", per_task(clean), tmp_path / "clean-out", batch_size=1)
    assert lines(out / "code_as_action.jsonl") == lines(tmp_path / "clean-out" / "code_as_action.jsonl")
    assert summary["domains"]["all"] == {"tasks": 5, "correct": 4, "success_rate": 0.8, "average_turns": 19 / 5}


def test_summary_rates_and_turns_per_domain():
    records = [{"task_name": "a/1", "is_correct": True, "n_turns": 2}, {"task_name": "a/2", "is_correct": False,
                                                                         "n_turns": 10},
               {"task_name": "b/1", "is_correct": True, "n_turns": 1}]
    domains = summarize(records, "code", "m")["domains"]
    assert domains["a"] == {"tasks": 2, "correct": 1, "success_rate": 0.5, "average_turns": 6.0}
    assert domains["all"]["correct"] == 2 and domains["all"]["average_turns"] == pytest.approx(13 / 3)


def test_the_command_line_runs_the_fixture_and_prints_the_table(tmp_path, capsys):
    code = run(m3tooleval.main, ["--checkout", str(FIXTURE), "--policy", "oracle", "--action-mode", "text",
                                 "--tasks", "arithmetic", "--out", str(tmp_path)])
    assert code == 0
    assert "| arithmetic | 3 | 3 | 100.0% | 1.00 |" in capsys.readouterr().out


def test_a_folder_that_is_not_the_benchmark_is_refused(tmp_path):
    with pytest.raises(InputError, match="no tasks/__init__.py"):
        m3tooleval.find_checkout(tmp_path)


def test_without_a_checkout_or_network_the_command_exits_2_saying_how_to_provide_one(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(m3tooleval.ENV_VAR, raising=False)
    monkeypatch.setenv("SELF_CHALLENGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(m3tooleval, "REPOSITORY", str(tmp_path / "no-such-repository"))
    assert run(m3tooleval.main, ["--policy", "oracle", "--out", str(tmp_path / "out")]) == 2
    assert m3tooleval.ENV_VAR in caplog.text and "cloning" in caplog.text
    assert not list((tmp_path / "cache").rglob("tasks"))  # nothing half-cloned is left to be taken for a checkout


def test_a_thought_before_the_action_is_kept_by_the_trim():
    """Upstream's postprocess_fn looks for a 'Thought:' only after the first 'Action:': the usual
    'Thought: ... Action: ... End Action' survives whole."""
    generation = "Thought: I add them.\nAction: add, 1, 2 End Action\nAnswer: 3"
    assert trim_generation(generation) == "Thought: I add them.\nAction: add, 1, 2 End Action"


def test_an_output_that_is_a_literal_after_blank_lines_is_read_as_that_literal():
    """Upstream strips the shell's output before literal_eval: 'print()' then a value gives the
    observation '5', as upstream's execute_action gives)."""
    bench = load_benchmark(FIXTURE)
    sum_task = next(t for t in bench.tasks if t.name == "arithmetic/sum")
    record = run_task(sum_task, bench, "code", scripted(["Action:\nprint()\n5\nEnd Action", "Answer: 42"]))
    assert record["messages"][2]["content"] == "5"


def test_a_blank_cell_does_not_count_as_an_executed_cell():
    """IPython leaves its execution count alone for a blank cell, so the next cell's traceback names
    input 1."""
    bench = load_benchmark(FIXTURE)
    sum_task = next(t for t in bench.tasks if t.name == "arithmetic/sum")
    record = run_task(sum_task, bench, "code", scripted(["Action:\n\nEnd Action", "Action:\n1/0\nEnd Action",
                                                           "Answer: 42"]))
    assert "File <ipython-input-1-" in record["messages"][4]["content"]
