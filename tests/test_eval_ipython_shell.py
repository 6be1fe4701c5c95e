"""The emulated IPython shell's display (eval.ipython_shell): values laid out as IPython's pretty
printer lays them out. Every expected text here is what IPython 9.19 (``IPython.lib.pretty.pretty``,
the shell's plain-text formatter) gave for the same value; the end-to-end cases run through
M3ToolEval's code actions in the sandbox and are upstream's observations for the same cells."""

from __future__ import annotations

import ast
import builtins
import collections
import contextlib
import hashlib
import io
import linecache
import os
import re
import signal
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eval import ipython_shell, m3tooleval
from eval.ipython_shell import Shell, cleaned, compiled, frame_head, frame_texts, pretty
from eval.m3tooleval import load_benchmark, run_task
from envs.sandbox import default_sandbox
from agents.policy import scripted
from test_eval_m3tooleval import FIXTURE, action, task


class Vec:
    def __repr__(self):
        return "Vec(\n  1,\n  2)"


class Plain:
    pass


class Ruler:
    """IPython's protocol: a class lays itself out with the printer's own calls."""

    def _repr_pretty_(self, p, cycle):
        with p.group(6, "Ruler(", ")"):
            for mark in range(0, 1500, 100):
                if mark:
                    p.text(",")
                    p.breakable()
                p.text(str(mark))


def f(a, b=2, *c, d, **e):
    pass


def cycle() -> list:
    looped: list = [1]
    looped.append(looped)
    return looped


@pytest.mark.parametrize("value, shown", [
    (list(range(30)), "[" + ",\n ".join(map(str, range(30))) + "]"),  # too long for a line: an item a line
    ({"k" + str(i): list(range(i * 3)) for i in range(5)},
     "{'k0': [],\n 'k1': [0, 1, 2],\n 'k2': [0, 1, 2, 3, 4, 5],\n 'k3': [0, 1, 2, 3, 4, 5, 6, 7, 8],\n"
     " 'k4': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}"),
    ([list(range(12))] * 3, "[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],\n [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],\n"
                            " [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]"),  # the outer group breaks, inner ones fit
    (("x" * 40, "y" * 40), "('" + "x" * 40 + "',\n '" + "y" * 40 + "')"),
    ({3, 1, 2}, "{1, 2, 3}"), ({"b", 2, "a", 1}, "{1, 2, 'a', 'b'}"),  # sorted; by str where they don't compare
    (set(), "set()"), (frozenset({2, 1}), "frozenset({1, 2})"), ((1,), "(1,)"),
    (collections.Counter("abracadabra"), "Counter({'a': 5, 'b': 2, 'r': 2, 'c': 1, 'd': 1})"),
    (collections.defaultdict(list, {"a": [1]}), "defaultdict(list, {'a': [1]})"),
    (collections.deque([1, 2], maxlen=5), "deque([1, 2], maxlen=5)"),
    (collections.OrderedDict(a=1), "OrderedDict([('a', 1)])"),
    (types.SimpleNamespace(x=1, y="z"), "namespace(x=1, y='z')"),
    (ValueError("bad", 3), "ValueError('bad', 3)"),
    (re.compile(r"\d+", re.I), r"re.compile(r'\d+', re.IGNORECASE|re.UNICODE)"),
    (int, "int"), (Plain, "test_eval_ipython_shell.Plain"),
    (f, "<function test_eval_ipython_shell.f(a, b=2, *c, d, **e)>"), (len, "<function len(obj, /)>"),
    (cycle(), "[1, [...]]"), ([Vec(), Vec()], "[Vec(\n   1,\n   2),\n Vec(\n   1,\n   2)]"),
    (Ruler(), "Ruler(0,\n      " + ",\n      ".join(map(str, range(100, 1500, 100))) + ")"),
])
def test_values_are_laid_out_as_ipythons_pretty_printer_lays_them_out(value, shown):
    assert pretty(value) == shown


def test_an_object_without_a_repr_of_its_own_shows_its_class_and_address():
    plain = Plain()
    assert pretty(plain) == f"<test_eval_ipython_shell.Plain at 0x{id(plain):x}>"


def test_a_container_shows_its_first_thousand_items_then_an_ellipsis():
    assert pretty(list(range(1002))).endswith("998,\n 999,\n ...]")
    assert pretty(set(range(1001))).endswith("999,\n ...}")


literals = st.recursive(
    st.integers(-999, 999) | st.text("ab'\"\\\n", max_size=5) | st.none() | st.booleans(),
    lambda inner: (st.lists(inner, max_size=12) | st.tuples(inner, inner)
                   | st.dictionaries(st.text("kq", max_size=3), inner, max_size=8)
                   | st.frozensets(st.integers(0, 99), max_size=8).map(set)),
    max_leaves=60)


@given(literals)
def test_a_literal_reads_back_and_is_written_as_python_writes_it_where_it_fits(value):
    """Whatever the layout, the text is the value's literal (upstream reads it back with
    ``literal_eval``); a value that fits on one line is written as Python writes it."""
    text = pretty(value)
    assert ast.literal_eval(text) == value
    if len(repr(value)) <= 79 and not holds_a_set(value):  # (a set is shown sorted)
        assert text == repr(value)


def holds_a_set(value) -> bool:
    if isinstance(value, set):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return any(holds_a_set(item) for item in items)


@pytest.fixture(scope="module")
def bench() -> m3tooleval.Benchmark:
    return load_benchmark(FIXTURE)


@pytest.mark.parametrize("cells, shown", [
    (["list(range(1000))", "from collections import Counter\nCounter('abracadabra')", "def g(x, y=1):\n    pass\ng",
      "class P:\n    pass\n[P, print, {3, 1}, {'k': 'v' * 70}]"],
     [" \n[" + ",\n ".join(map(str, range(350))) + ",\n ...\n[Output Truncated]",
      " Counter({'a': 5, 'b': 2, 'r': 2, 'c': 1, 'd': 1})\n", " <function __main__.g(x, y=1)>\n",
      " \n[__main__.P,\n <function print(*args, sep=' ', end='\\n', file=None, flush=False)>,\n {1, 3},\n"
      " {'k': '" + "v" * 70 + "'}]\n"]),
    (["_ + __", "1", "2", "_ = 7", "3", "(_, __, ___, _2, Out[3])"],  # code that sets _ stops the hook writing it
     ["", "1", "2", m3tooleval.NO_OUTPUT, "3", "(7, 1, '', 1, 2)"]),
    (["display('a', [1, 2], raw=True)\ndisplay()", "'display' in dir()"], ["a [1, 2]\n\n", "False"]),
    (["print(type(__builtins__), __builtin__ is __builtins__)"], ["<class 'module'> True\n"]),
    # annotations are evaluated, not strings (the shell's module has a future import its cells must not inherit)
    (["def f(x: int = 3) -> str:\n    pass\nf.__annotations__", "f"],
     [" {'x': int, 'return': str}\n", " <function __main__.f(x: int = 3) -> str>\n"]),
])
def test_code_actions_show_what_upstreams_ipython_shell_shows(bench, cells, shown):
    replies = [action(cell) for cell in cells] + ["Answer: 42"]
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(replies))
    assert [m["content"] for m in record["messages"][2:2 * len(cells) + 1:2]] == shown


def test_a_tool_shows_as_upstreams_function_under_upstreams_package_name(bench):
    """Upstream's namespace holds the tools themselves; ours, stand-ins that call them across the
    sandbox, named and shown as the real ones (the checkout's ``tasks`` package under its own name)."""
    cells = ["add", "print(add.__name__, add.__qualname__, add.__module__, type(add).__name__)", "add(2, 3)"]
    replies = [action(cell) for cell in cells] + ["Answer: 42"]
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(replies))
    assert [m["content"] for m in record["messages"][2:7:2]] == [
        " <function tasks.arithmetic.add(a, b)>\n", "add add tasks.arithmetic function\n", "5"]
    replies = [action("take_ticket"), "Answer: 2"]
    record = run_task(task(bench, "tickets/second_ticket"), bench, "code", scripted(replies))
    assert re.fullmatch(r" <bound method Dispenser.take_ticket of <tasks.tickets.Dispenser object at 0x[0-9a-f]+>>\n",
                        record["messages"][2]["content"])


RULE = "-" * 75


def header(name: str) -> str:
    return name + "Traceback (most recent call last)".rjust(75 - len(name))


@pytest.mark.parametrize("cells, shown", [
    (["x = 1\ny = 0\nx / y"],
     [RULE, header("ZeroDivisionError"), "File <ipython-input-1-514936153616>:3", "      1 x = 1", "      2 y = 0",
      "----> 3 x / y", "", "ZeroDivisionError: division by zero", ""]),
    (["try:\n    1/0\nexcept ZeroDivisionError as e:\n    raise ValueError('wrapped') from e"],  # a cause: 1 around
     [RULE, header("ZeroDivisionError"), "File <ipython-input-1-9b0644145021>:2", "      1 try:", "----> 2     1/0",
      "      3 except ZeroDivisionError as e:", "", "ZeroDivisionError: division by zero", "",
      "The above exception was the direct cause of the following exception:", "",
      header("ValueError"), "File <ipython-input-1-9b0644145021>:4", "      2     1/0",
      "      3 except ZeroDivisionError as e:", "----> 4     raise ValueError('wrapped') from e", "",
      "ValueError: wrapped", ""]),
    (["def f(x):\n    return 1 / x", "f(0)"],  # a function of an earlier cell, under that cell's name
     [RULE, header("ZeroDivisionError"), "File <ipython-input-2-6bfbdbfff9c4>:1", "----> 1 f(0)", "",
      "File <ipython-input-1-def7d6d68803>:2, in f(x)", "      1 def f(x):", "----> 2     return 1 / x", "",
      "ZeroDivisionError: division by zero", ""]),
    (["\n".join(f"a{i} = [\n" + f"    {i},\n" * 7 + "]" for i in range(3)) + "\nb = a0[9]"],  # long pieces cut
     [RULE, header("IndexError"), "File <ipython-input-1-c37a79c1edd1>:28", "     10 a1 = [", "     11     1,",
      "     12     1,", "   (...)     17     1,", "     18 ]", "     19 a2 = [", "     20     2,", "     21     2,",
      "   (...)     26     2,", "     27 ]", "---> 28 b = a0[9]", "", "IndexError: list index out of range", ""]),
    (["exec('1/0')"],  # no source to show
     [RULE, header("ZeroDivisionError"), "File <ipython-input-1-b6f54f061351>:1", "----> 1 exec('1/0')", "",
      "File <string>:1",
      "----> 1 'Could not get source, probably due dynamically evaluated source code.'",
      "ZeroDivisionError: division by zero", ""]),
    (["x = ("], ["  File <ipython-input-1-f396fd8cefcf>:1", "    x = (", "         ^", "SyntaxError: incomplete input",
                 "", ""]),
    (["e = ValueError('a'); e.__notes__ = 5; raise e"],
     [RULE, header("ValueError"), "File <ipython-input-1-6f45ab37e211>:1",
      "----> 1 e = ValueError('a'); e.__notes__ = 5; raise e", "", "ValueError: a", "5", ""]),
    (["e = ValueError('a'); e.__notes__ = ['n', 3]; raise e"],
     ["Unexpected exception formatting exception. Falling back to standard exception", ""]),
])
def test_errors_show_as_ipythons_verbose_traceback(bench, cells, shown):
    replies = [action(cell) for cell in cells] + ["Answer: 42"]
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(replies))
    assert record["messages"][2 * len(cells)]["content"] == "\n".join(shown)


def test_a_cell_is_cleaned_and_named_as_ipython_cleans_and_names_it():
    """Leading blank lines and the common indentation go, a line end closes it; the name holds the
    count and the SHA-1 of the cleaned text; its lines are in ``linecache`` (tracebacks read them)."""
    text = cleaned("\n \n  x = 1\n  print(x)")
    assert text == "x = 1\nprint(x)\n"
    code, _ = compiled(text, 3)
    assert code.co_filename == "<ipython-input-3-" + hashlib.sha1(text.encode()).hexdigest()[:12] + ">"
    assert linecache.getline(code.co_filename, 2) == "print(x)\n"


def attribute_error(count: int, digest: str, cell: str, message: str, kind: str = "AttributeError") -> str:
    return "\n".join([RULE, header(kind), f"File <ipython-input-{count}-{digest}>:1", f"----> 1 {cell}", "",
                      f"{kind}: {message}", ""])


NO_ASK_EXIT = "'InteractiveShell' object has no attribute 'ask_exit'"
TOO_MANY = "ExitAutocall.__call__() takes 1 positional argument but 2 were given"


@pytest.mark.parametrize("cells, shown", [
    (["print(1)\nexit()", "exit", "quit 0", "exit = 5"],  # a one-line cell naming one calls it with the rest
     ["1\n" + "\n".join([RULE, header("AttributeError"), "File <ipython-input-1-5a212d7ad22e>:2", "      1 print(1)",
                          "----> 2 exit()", "", f"AttributeError: {NO_ASK_EXIT}", ""]),
      attribute_error(2, "e828459ebe2b", "exit()", NO_ASK_EXIT),
      attribute_error(3, "48f48f7cacf5", "quit(0)", TOO_MANY, "TypeError"),
      "  File <ipython-input-4-71a3d7805a03>:1\n    exit(= 5)\n         ^\nSyntaxError: invalid syntax\n\n"]),
    (["exit ()", "exit;", "exit.x", "print(quit)"],
     [attribute_error(1, "c6b901b41404", "exit ()", NO_ASK_EXIT),
      attribute_error(2, "ab9fda90671b", "exit();", NO_ASK_EXIT),
      attribute_error(3, "fe5841af6c67", "exit.x", "'ExitAutocall' object has no attribute 'x'"),
      "<IPython.core.autocall.ExitAutocall object at 0x"]),
    (["x = 1", "quit 0", "exit()", "1/0", "(In, _i, _ii, _iii, _i1, _i2)", "In = 3\n_i = 4", "(In, _i, _ih[-1])"],
     [m3tooleval.NO_OUTPUT, None, None, None,  # In: the cells as run, not the exit command; _i*: as written
      (['', 'x = 1', 'quit(0)', '1/0', '(In, _i, _ii, _iii, _i1, _i2)'], '1/0', 'quit 0', 'x = 1', 'x = 1', 'quit 0'),
      m3tooleval.NO_OUTPUT, (3, 'In = 3\n_i = 4', '(In, _i, _ih[-1])')]),  # In can be reassigned; _i cannot
    (["open(1)", "type(open).__name__"],
     [attribute_error(1, "ee79e62333b6", "open(1)", "IPython won't let you open fd=1 by default as it is likely to "
                      "crash IPython. If you know what you are doing, you can use builtins' open.", "ValueError"),
      "function"]),
])
def test_exit_quit_open_and_the_input_history_are_ipythons(bench, cells, shown):
    """Upstream's observations for these cells (IPython 9.19's shell without a terminal)."""
    replies = [action(cell) for cell in cells] + ["Answer: 42"]
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(replies))
    observations = [m["content"] for m in record["messages"][2:2 * len(cells) + 1:2]]
    for observation, expected in zip(observations, shown):
        if expected is not None:
            assert observation.startswith(expected) if str(expected).endswith("0x") else observation == str(expected)


def test_deep_recursion_shows_its_first_frames_a_count_and_its_last(bench):
    replies = [action("def h():\n    h()\nh()"), "Answer: 42"]
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(replies))
    frame = "File <ipython-input-1-2c32b1c436d8>:2, in h()\n      1 def h():\n----> 2     h()\n"
    assert re.fullmatch(re.escape(RULE + "\n" + header("RecursionError") + "\nFile <ipython-input-1-2c32b1c436d8>:3\n"
                                  "      1 def h():\n      2     h()\n----> 3 h()\n\n" + frame + "\n" + frame + "\n")
                        + r"    \[\.\.\. skipping similar frames: h at line 2 \(\d+ times\)\]\n\n"
                        + re.escape(frame + "\nRecursionError: maximum recursion depth exceeded\n"),
                        record["messages"][2]["content"])


def test_a_tools_error_shows_the_tools_own_frames(bench):
    replies = [action("divide(1, 0)"), "Answer: 3"]
    record = run_task(task(bench, "arithmetic/quotient"), bench, "code", scripted(replies))
    assert re.fullmatch(re.escape(RULE + "\n" + header("ZeroDivisionError") + "\n"
                                  "File <ipython-input-1-b4d7e8b388b7>:1\n----> 1 divide(1, 0)\n\nFile ")
                        + r"\S*tasks/arithmetic\.py:16, in divide\(a, b\)\n"
                        + re.escape("     14 def divide(a, b):\n     15     if b == 0:\n"
                                    "---> 16         raise ZeroDivisionError(\"cannot divide by zero\")\n     17     "
                                    "return divmod(a, b)\n\nZeroDivisionError: cannot divide by zero\n"),
                        record["messages"][2]["content"])


def test_help_writes_what_pydoc_writes_a_tools_help_that_of_the_real_tool(bench):
    """Upstream's observations for these cells (its shell, with the fixture's tools imported as ``tasks``)."""
    cells = ["help(add)", "help", "x = help(len); print(x)"]
    replies = [action(cell) for cell in cells] + ["Answer: 42"]
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(replies))
    assert [m["content"] for m in record["messages"][2:7:2]] == [
        "Help on function add in module tasks.arithmetic:\n\nadd(a, b)\n\n",
        " Type help() for interactive help, or help(object) for help about object.\n",
        "Help on built-in function len in module builtins:\n\nlen(obj, /)\n"
        "    Return the number of items in a container.\n\nNone\n"]
    record = run_task(task(bench, "tickets/second_ticket"), bench, "code",
                      scripted([action("help(take_ticket)"), "Answer: 2"]))
    assert record["messages"][2]["content"] == ("Help on method take_ticket in module tasks.tickets:\n\n"
                                                "take_ticket() method of tasks.tickets.Dispenser instance\n\n")


def test_a_cell_gets_its_seconds_as_upstreams_alarm_gives_them_and_replays_do_not_count(bench, monkeypatch):
    monkeypatch.setattr(m3tooleval, "CELL_SECONDS", 1)
    cells = ["import time\ntime.sleep(0.7)\nprint('slept')", "time.sleep(0.7)\nprint('again')",
             "print('hi')\nwhile True:\n    pass", "print('after', In[3][:11])"]
    replies = [action(cell) for cell in cells] + ["Answer: 42"]
    record = run_task(task(bench, "arithmetic/sum"), bench, "code", scripted(replies))
    observations = [m["content"] for m in record["messages"][2:9:2]]
    assert observations[:2] == ["slept\n", "again\n"]  # the first cell's replay is not taken from the second's second
    assert observations[2].startswith("hi\n" + RULE + "\n" + header("TimeoutError") + "\nFile <ipython-input-3-")
    assert observations[2].endswith("\n\nTimeoutError: Timed out after 1 seconds.\n")
    assert observations[3] == "after print('hi')\n"  # the cell that ran out of time is not replayed, but kept in In


def test_a_timed_out_cells_traceback_ends_with_the_checkouts_alarm_handler_as_upstreams_does(tmp_path, monkeypatch):
    """Upstream's shell raises the TimeoutError in a handler of its tasks/repl.py; its traceback shows that frame."""
    repl = tmp_path / "tasks" / "repl.py"
    repl.parent.mkdir()
    repl.write_text("import signal\n\n\nclass PythonREPL:\n    def time_limit(self, seconds):\n"
                    "        def signal_handler(signum, frame):\n"
                    "            raise TimeoutError(f'Timed out after {seconds} seconds.')\n\n"
                    "        signal.signal(signal.SIGALRM, signal_handler)\n")
    handler = (f"File {repl}:7, in PythonREPL.time_limit.<locals>.signal_handler(signum, frame)\n"
               "      6 def signal_handler(signum, frame):\n"
               "----> 7     raise TimeoutError(f'Timed out after {seconds} seconds.')\n")
    assert m3tooleval.alarm_frames(tmp_path) == [handler]
    monkeypatch.setattr(m3tooleval, "CELL_SECONDS", 1)
    session = m3tooleval.CodeSession({}, default_sandbox(), alarm_frames=[handler])
    assert session.run("while True:\n    pass") == "\n".join(
        [RULE, header("TimeoutError"), "File <ipython-input-1-b7133701d76c>:1", "----> 1 while True:",
         "      2     pass", "", handler, "TimeoutError: Timed out after 1 seconds.", ""])


def test_a_value_exactly_as_wide_as_a_line_stays_on_it_one_wider_breaks():
    """IPython's max_width is 79: a 79-character literal is one line, an 80-character one breaks."""
    fits, too_wide = ["a" * 35, "b" * 36], ["a" * 36, "b" * 36]
    assert len(repr(fits)) == 79 and len(repr(too_wide)) == 80
    assert pretty(fits) == repr(fits)
    assert pretty(too_wide) == "['" + "a" * 36 + "',\n '" + "b" * 36 + "']"


def test_a_set_of_a_thousand_items_is_shown_in_its_own_order_as_ipython_does():
    """IPython sorts a set only below max_seq_length (1000) items; at 1000 it keeps the set's order."""
    values = set(range(2000, 3000))  # ints: a fixed order, not the sorted one
    assert list(values) != sorted(values)
    assert pretty(values) == "{" + ",\n ".join(map(str, values)) + "}"


def test_a_set_whose_items_do_not_compare_is_sorted_by_their_text():
    assert pretty({3, 20, 100, (1,)}) == "{(1,), 100, 20, 3}"


@pytest.mark.parametrize("value, shown", [
    (frozenset(), "frozenset()"),
    (collections.Counter(), "Counter()"),
    (collections.deque([1], maxlen=0), "deque([], maxlen=0)"),
])
def test_empty_and_edge_collections_show_as_ipython_shows_them(value, shown):
    assert pretty(value) == shown


def test_a_mapping_that_holds_itself_shows_the_cycle_as_ipythons_dict_printer_does():
    """IPython writes any mapping met again inside itself as ``{...}``, a mappingproxy too."""
    inner: dict = {}
    proxy = types.MappingProxyType(inner)
    inner["m"] = proxy
    assert pretty(proxy) == "mappingproxy({'m': {...}})"


def test_a_class_without_a_module_shows_by_its_bare_name():
    """IPython's type printer: a ``__module__`` of None (as builtins) names the class alone."""
    assert pretty(type("Moduleless", (), {"__module__": None})) == "Moduleless"


def shown(*cells: str) -> list[str]:
    """What the shell prints for each cell, run one after another in one namespace."""
    shell, printed = Shell({}), []
    for count, cell in enumerate(cells, 1):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            shell.live(cell, count, 30)
        printed.append(out.getvalue())
    return printed


def test_out_itself_is_shown_but_not_kept_as_ipythons_display_hook_skips_it():
    """IPython's DisplayHook.update_user_ns returns early for ``Out``: no ``_``, no ``Out[n]``."""
    assert shown("Out", "_", "Out") == ["Out[1]: {}\n", "Out[2]: ''\n", "Out[3]: {2: ''}\n"]


def test_raise_from_none_shows_only_the_new_exception():
    cell = "try:\n    1/0\nexcept Exception:\n    raise ValueError('x') from None"
    [text] = shown(cell)
    assert "ZeroDivisionError" not in text and "During handling" not in text
    assert text.endswith("----> 4     raise ValueError('x') from None\n\nValueError: x\n")


@pytest.mark.parametrize("blank_lines, numbered", [(4, True), (5, False)])
def test_code_given_to_exec_names_its_first_line_within_ipythons_window_only(blank_lines, numbered):
    """No source for exec'd code: IPython marks the code's first line if the failing one is at most
    2 * context (4) lines below it, and writes only ``File <string>:n`` further down."""
    [text] = shown(f"exec({chr(10) * blank_lines + '1/0'!r})")
    where = f"File <string>:{blank_lines + 1}\n"
    no_source = "      1 'Could not get source, probably due dynamically evaluated source code.'\n"
    assert (where + no_source in text) is numbered
    assert where + ("" if numbered else "\n") in text


def test_blank_lines_between_statements_are_not_shown_around_the_line():
    """stack_data drops blank lines at a piece's ends: a comment's piece shows without the blank lines after it."""
    [text] = shown("x = 1\n# note\n\n\ny = 1/0")
    assert "File <ipython-input-1-dceb724bc500>:5\n      1 x = 1\n      2 # note\n----> 5 y = 1/0\n" in text


def test_ipythons_open_refuses_each_standard_stream():
    for fd, text in zip((0, 1, 2), shown("open(0)", "open(1)", "open(2)")):
        assert f"ValueError: IPython won't let you open fd={fd} by default" in text


class Oops(Exception):
    pass


def test_an_exception_of_a_class_outside_builtins_shows_with_its_module():
    assert pretty(Oops("m", 2)) == f"{__name__}.Oops('m', 2)"
    assert pretty(KeyError("k")) == "KeyError('k')"


def test_recursion_is_collapsed_per_stretch_of_frames_seen_more_than_three_times():
    """stack_data collapses only (code, line)s seen more than three times: ``g``'s three frames stay,
    and split ``f``'s frames into two stretches, each collapsed on its own (IPython 9.19's text)."""
    [text] = shown("def f(n, m):\n    return f(n - 1, m) if n else g(m)\ndef g(m):\n"
                   "    return 1/0 if m is None else g(m - 1) if m else f(4, None)\nf(4, 1)")
    heads = [line for line in text.splitlines() if line.startswith(("File", "    [..."))]
    f, g = "File <ipython-input-1-d77472e05a74>:2, in f(n, m)", "File <ipython-input-1-d77472e05a74>:4, in g(m)"
    skipped = "    [... skipping similar frames: f at line 2 (2 times)]"
    assert heads == ["File <ipython-input-1-d77472e05a74>:5", f, f, skipped, f, g, g, f, f, skipped, f, g]


def test_a_seven_line_statement_around_the_line_is_cut_as_stack_data_cuts_it():
    """Pieces longer than six lines (other than the failing one) show three lines, a gap, the last two."""
    [text] = shown("a = [\n    1,\n    2,\n    3,\n    4,\n    5,\n]\nb = a[9]")
    cut = "      1 a = [\n      2     1,\n      3     2,\n   (...)      6     5,\n      7 ]\n----> 8 b = a[9]\n"
    assert cut in text
    [text] = shown("a = [\n    1,\n    2,\n    3,\n    4,\n]\nb = a[9]")  # six lines: whole
    assert "      4     3,\n      5     4,\n      6 ]\n----> 7 b = a[9]\n" in text


def test_a_file_under_the_home_folder_is_written_from_a_tilde():
    home = os.path.expanduser("~")
    assert frame_head(os.path.join(home, "lib", "m.py"), 3, "f(x)") == f"File ~{os.sep}lib{os.sep}m.py:3, in f(x)"
    assert frame_head("/elsewhere/m.py", 3) == "File /elsewhere/m.py:3"


def test_a_cell_leaves_no_alarm_pending():
    """The cell's time limit is cleared when it ends, as upstream's ``time_limit`` does: a pending
    SIGALRM would interrupt whatever runs next in the process."""
    shown("1")
    assert signal.alarm(0) == 0


def test_a_value_is_formatted_before_it_is_kept_and_one_that_cannot_be_is_kept_unshown():
    """IPython 9.19's output for these cells: ``Out`` shown holds the earlier values only; a value whose
    repr fails (or too deep to lay out) gets the bare prompt, its error unseen on stderr, and is still
    kept as ``_`` and ``Out[n]``."""
    failing = "class A:\n    def __repr__(self):\n        raise ValueError('no')\nA()"
    deep = "d = {}\nfor i in range(600):\n    d = {'k': d}\nd"
    assert shown("1", "Out.keys()", failing, "type(_).__name__, sorted(Out)", deep, "3") == [
        "Out[1]: 1\n", "Out[2]: dict_keys([1])\n", "Out[3]: ", "Out[4]: ('A', [1, 2, 3])\n", "Out[5]: ", "Out[6]: 3\n"]


def test_the_prompt_is_written_as_ipython_writes_it_and_the_value_as_it_prints_it():
    """IPython writes ``Out[n]: `` to stdout and prints the value: a cell that silences ``print`` (as
    IPython 9.19 shows) leaves the prompt alone."""
    real = builtins.print
    try:
        printed = shown("import builtins\nbuiltins.print = lambda *args, **kwargs: None\n5", "6")
    finally:
        builtins.print = real
    assert printed == ["Out[1]: ", "Out[2]: "]


def test_a_dedent_that_matches_no_level_fails_in_ipythons_tokenizer_and_the_cell_is_kept_as_written():
    """IPython 9.19's output: its token transforms read the cell before it compiles, so the error is
    tokenize's, at ``<tokenize>`` (lines counted once leading blank ones are dropped) with the caret at
    the line's text, and ``In`` keeps the raw cell."""
    cell = "\n\n  def f():\n      return 1\n    x = 2"
    unindent = "IndentationError: unindent does not match any outer indentation level\n\n"
    assert shown(cell, "In[1], _i1", "x = 1\n\tif x:\n  pass") == [
        "  File <tokenize>:3\n    x = 2\n    ^\n" + unindent, f"Out[2]: \n({cell!r},\n {cell!r})\n",
        "  File <tokenize>:3\n    pass\n    ^\n" + unindent]


def test_from_the_sandboxs_first_frame_on_a_traceback_shows_nothing_of_its_bridge(monkeypatch):
    """A cell's time may run out while a tool call waits in the sandbox's bridge (its ``json``, its pipes):
    those frames are the sandbox's, not the cell's, and IPython upstream has none of them."""
    bridge: dict = {}
    exec("import json\ndef ask(request):\n    return json.dumps(request)\n", bridge)
    monkeypatch.setattr(ipython_shell, "SANDBOX", [bridge])
    try:
        bridge["ask"](object())
    except TypeError as error:
        texts = frame_texts(error.__traceback__, 2)
    assert len(texts) == 1 and "bridge[\"ask\"](object())" in texts[0]


def test_the_namespace_holds_ipythons_folder_history():
    assert shown("type(_dh).__name__, '_dh' in dir()") == ["Out[1]: ('list', True)\n"]


def test_an_error_whose_text_cannot_be_written_shows_as_ipython_shows_it_then_the_failures_own_traceback():
    """IPython 9.19's output: its words for an exception whose ``str`` raises, then that failure's traceback."""
    cell = "class Broken(Exception):\n    def __str__(self):\n        raise ValueError('no text')\nraise Broken()"
    name = f"<ipython-input-1-{hashlib.sha1((cell + chr(10)).encode()).hexdigest()[:12]}>"
    assert shown(cell) == [
        f"{RULE}\n{header('Broken')}\nFile {name}:4\n      2     def __str__(self):\n"
        "      3         raise ValueError('no text')\n----> 4 raise Broken()\n\n"
        "<class 'str'>: (<class 'ValueError'>, ValueError('no text'))\n"
        f"{RULE}\n{header('ValueError')}\nFile {name}:3, in Broken.__str__(self)\n      2 def __str__(self):\n"
        "----> 3     raise ValueError('no text')\n\nValueError: no text\n"]
