"""The Python shell M3ToolEval's code actions run in, as our sandbox runs it: IPython's ways, emulated.

:mod:`eval.m3tooleval` sends this file's text to the sandbox as the head of every code action's
program (the sandbox never imports it; the tests do). Upstream runs each task's actions in one live
IPython shell; here every action is a fresh job that replays the earlier cells silently (see
:meth:`eval.m3tooleval.CodeSession.run`), so what IPython keeps between cells is rebuilt each time.

What a cell shows follows IPython: the value of a last bare expression, unless a ``;`` ends the cell,
after the ``Out[n]:`` prompt, laid out by IPython's pretty printer (``IPython.lib.pretty``): lines
of at most 79 characters, where a container too long for one line shows an item a line; sets sorted;
classes and functions by their qualified names (``__main__.f(a, b=2)``); objects without a
``__repr__`` of their own as ``<__main__.A at 0x...>``; ``collections`` types as calls; at most 1,000
items of a container. The printer here is this project's own, written to IPython's rules, and
checked against IPython's output in the tests. A shown value is kept as ``_`` (older ones as ``__``
and ``___``, unless the code assigned one of those itself), as ``_<n>`` and in ``Out``; ``display``
prints its objects, as it does in a shell without a frontend such as upstream's.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import os
import random
import re
import sys
import tokenize
import traceback
import types
from collections import deque

WIDTH = 79  # IPython's PlainTextFormatter.max_width
MAX_ITEMS = 1000  # and its max_seq_length: items shown of one container


class Discard(io.TextIOBase):
    """Where stderr goes: upstream's shell shows what a cell prints to stdout only (no warnings)."""

    def write(self, text):
        return len(text)


def tool(name, about):
    """One of the task's tools as a function of the cell's namespace: its calls cross to the caller
    through the sandbox's ``_m3_tool`` bridge; values come back as literals, errors keep their type.
    ``about``: the real tool's ``module``, ``qualname`` and ``doc``, and the text IPython ``shows``
    for it, all from the caller, where the tool lives."""
    def call(*args, **kwargs):
        reply = _m3_tool(name, repr(args), repr(kwargs))  # noqa: F821 (the bridge the sandbox defines)
        if "error" in reply:
            kind = getattr(builtins, reply["type"], None)
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                kind = RuntimeError
            raise kind(reply["error"])
        return ast.literal_eval(reply["literal"]) if "literal" in reply else reply["text"]
    call.__name__ = name
    call.__module__, call.__qualname__, call.__doc__ = about["module"], about["qualname"], about["doc"]
    STAND_INS[id(call)] = (call, about["shows"])
    return call


STAND_INS = {}  # id -> (a tool's stand-in, what IPython shows for the real tool); held, so no id is reused


# ---------------------------------------------------------------- layout: IPython's line breaking

class Group:
    """Spaces that break together: all of a group's, or none."""

    def __init__(self, depth):
        self.depth = depth
        self.spaces = deque()  # its spaces not yet written
        self.broken = False


class Space:
    def __init__(self, text, indentation, group):
        self.text, self.indentation, self.group = text, indentation, group


class Layout:
    """Text and breakable spaces in nested groups, written as they come. Text waits while a space
    before it may still break; when the line would pass the width, the outermost group with spaces
    waiting breaks them (and its later ones) into new lines at their indentation. Its method names
    are IPython's, so a ``_repr_pretty_(p, cycle)`` method of the cell's own classes works here."""

    def __init__(self, width=WIDTH, max_items=MAX_ITEMS):
        self.width, self.max_items = width, max_items
        self.written = []
        self.column = 0
        self.waiting = deque()  # texts and Spaces
        self.waiting_width = 0
        self.indentation = 0
        root = Group(0)
        self.open = [root]
        self.breakable_groups = [[root]]  # by depth
        self.showing = []  # ids of the values being shown, outermost first: a cycle shows as "..."

    def text(self, text):
        if not self.waiting:
            self.written.append(text)
            self.column += len(text)
            return
        self.waiting.append(text)
        self.waiting_width += len(text)
        self._fit()

    def breakable(self, sep=" "):
        group = self.open[-1]
        if group.broken:
            self._new_line()
            return
        space = Space(sep, self.indentation, group)
        group.spaces.append(space)
        self.waiting.append(space)
        self.waiting_width += len(sep)
        self._fit()

    def break_(self):
        """A line break here, whatever fits: the outermost breakable group breaks with it."""
        group = self._next_to_break()
        if group is not None:
            self._break(group)
        self._new_line()

    def begin_group(self, indent=0, open=""):
        if open:
            self.text(open)
        group = Group(self.open[-1].depth + 1)
        self.open.append(group)
        while len(self.breakable_groups) <= group.depth:
            self.breakable_groups.append([])
        self.breakable_groups[group.depth].append(group)
        self.indentation += indent

    def end_group(self, dedent=0, close=""):
        self.indentation -= dedent
        group = self.open.pop()
        if not group.spaces:
            self._forget(group)
        if close:
            self.text(close)

    @contextlib.contextmanager
    def group(self, indent=0, open="", close=""):
        self.begin_group(indent, open)
        try:
            yield
        finally:
            self.end_group(indent, close)

    def items(self, values):
        """The values, then ``, ...`` in place of those past ``max_items``."""
        for index, value in enumerate(values):
            if index >= self.max_items:
                self.text(",")
                self.breakable()
                self.text("...")
                return
            yield index, value

    def pretty(self, value):
        cycle = id(value) in self.showing
        self.showing.append(id(value))
        self.begin_group()
        try:
            printer(value)(value, self, cycle)
        finally:
            self.end_group()
            self.showing.pop()

    def getvalue(self):
        self._flush()
        return "".join(self.written)

    def _fit(self):
        while self.column + self.waiting_width > self.width:
            group = self._next_to_break()
            if group is None:
                return
            self._break(group)

    def _next_to_break(self):
        """The outermost group with spaces waiting (the latest of its depth), marked broken; groups
        passed over on the way, having none, are marked too: their spaces to come break at once."""
        for groups in self.breakable_groups:
            for group in reversed(groups):
                if group.spaces:
                    groups.remove(group)
                    group.broken = True
                    return group
            for group in groups:
                group.broken = True
            groups.clear()
        return None

    def _break(self, group):
        while group.spaces:
            self._write(self.waiting.popleft())
        while self.waiting and isinstance(self.waiting[0], str):
            self._write(self.waiting.popleft())

    def _write(self, item):
        if isinstance(item, str):
            self.written.append(item)
            self.column += len(item)
            self.waiting_width -= len(item)
            return
        group = item.group
        group.spaces.popleft()
        self.waiting_width -= len(item.text)
        if group.broken:
            self.written.append("\n" + " " * item.indentation)
            self.column = item.indentation
            return
        if not group.spaces:
            self._forget(group)
        self.written.append(item.text)
        self.column += len(item.text)

    def _flush(self):
        while self.waiting:
            self._write(self.waiting.popleft())

    def _new_line(self):
        self._flush()
        self.written.append("\n" + " " * self.indentation)
        self.column = self.indentation
        self.waiting_width = 0

    def _forget(self, group):
        with contextlib.suppress(ValueError):
            self.breakable_groups[group.depth].remove(group)


def pretty(value, width=WIDTH, max_items=MAX_ITEMS):
    """The text IPython's shell shows for ``value`` after its ``Out[n]:`` prompt."""
    layout = Layout(width, max_items)
    layout.pretty(value)
    return layout.getvalue()


# ---------------------------------------------------------------- printers: IPython's rules per type

def attribute(value, name, default=None):
    """``getattr`` that takes any error as absence: a shown object's attributes are its own code's."""
    try:
        return getattr(value, name, default)
    except Exception:
        return default


def printer(value):
    """How IPython shows ``value``: by identity for the singletons; else the first class of its MRO
    that has a printer of its own here (by class, or by module and name for ``collections``), a
    ``_repr_pretty_`` method or a ``__repr__`` of its own; else the default ``<class at address>``."""
    if any(value is singleton for singleton in (None, True, False, Ellipsis, NotImplemented)):
        return show_repr
    stand_in, shows = STAND_INS.get(id(value), (None, ""))
    if stand_in is value:
        return lambda value, p, cycle: p.text(shows)
    kind = attribute(value, "__class__") or type(value)
    for cls in kind.__mro__ if hasattr(kind, "__mro__") else (kind,):
        if cls in BY_TYPE:
            return BY_TYPE[cls]
        by_name = BY_NAME.get((attribute(cls, "__module__"), attribute(cls, "__name__")))
        if by_name is not None:
            return by_name
        if "_repr_pretty_" in cls.__dict__ and callable(cls._repr_pretty_):
            return cls._repr_pretty_
        if cls is not object and "__repr__" in cls.__dict__ and callable(attribute(cls, "__repr__")):
            return show_repr
    return show_default


def show_repr(value, p, cycle):
    """``repr``, its lines kept as lines."""
    with p.group():
        for index, line in enumerate(repr(value).splitlines()):
            if index:
                p.break_()
            p.text(line)


def show_default(value, p, cycle):
    kind = attribute(value, "__class__") or type(value)
    if attribute(kind, "__repr__") is not object.__repr__:
        show_repr(value, p, cycle)
        return
    p.begin_group(1, "<")
    p.pretty(kind)
    p.text(f" at 0x{id(value):x}")
    if cycle:
        p.text(" ...")
    p.end_group(1, ">")


def show_items(start, end):
    """Lists and tuples: ``start`` items ``end``, a one-item tuple with its comma."""
    def show(value, p, cycle):
        if cycle:
            p.text(start + "..." + end)
            return
        with p.group(len(start), start, end):
            for index, item in p.items(value):
                if index:
                    p.text(",")
                    p.breakable()
                p.pretty(item)
            if len(value) == 1 and isinstance(value, tuple):
                p.text(",")
    return show


def show_set(start, end):
    """Sets and frozensets, sorted where their items sort (by ``str`` where they don't compare)."""
    def show(value, p, cycle):
        if cycle:
            p.text(start + "..." + end)
        elif not value:
            p.text(type(value).__name__ + "()")
        else:
            with p.group(len(start), start, end):
                for index, item in p.items(value if len(value) >= p.max_items else sorted_if_possible(value)):
                    if index:
                        p.text(",")
                        p.breakable()
                    p.pretty(item)
    return show


def sorted_if_possible(values):
    values = list(values)
    for key in (None, str):
        try:
            return sorted(values, key=key)
        except Exception:
            pass
    return values


def show_mapping(start, end):
    """Dicts in their own order, ``key: value`` pairs."""
    def show(value, p, cycle):
        if cycle:
            p.text("{...}")
            return
        with p.group(len(start), start, end):
            for index, key in p.items(value.keys()):
                if index:
                    p.text(",")
                    p.breakable()
                p.pretty(key)
                p.text(": ")
                p.pretty(value[key])
    return show


class Raw:
    """Text shown as it is, inside a call."""

    def __init__(self, text):
        self.text = text

    def _repr_pretty_(self, p, cycle):
        p.text(self.text)


def show_call(p, name, *args, **kwargs):
    """``name(arg, ..., key=value)``: how IPython shows collections, exceptions, patterns."""
    prefix = name + "("
    with p.group(len(prefix), prefix, ")"):
        for index, arg in enumerate([*args, *kwargs.items()]):
            if index:
                p.text(",")
                p.breakable()
            if index < len(args):
                p.pretty(arg)
            else:
                with p.group(len(arg[0]) + 1, arg[0] + "="):
                    p.pretty(arg[1])


def show_type(value, p, cycle):
    """A class by its qualified name (builtins bare), unless its metaclass has a ``__repr__``."""
    if next(cls for cls in type(value).__mro__ if "__repr__" in vars(cls)) is not type:
        show_repr(value, p, cycle)
        return
    name = attribute(value, "__qualname__")
    if not isinstance(name, str):
        name = value.__name__ if isinstance(value.__name__, str) else "<unknown type>"
    module = attribute(value, "__module__")
    p.text(name if module in (None, "__builtin__", "builtins", "exceptions") else f"{module}.{name}")


def show_function(value, p, cycle):
    """``<function module.name(signature)>``."""
    import inspect  # only here: each cell's job pays for what it imports
    name = attribute(value, "__qualname__", value.__name__)
    module = value.__module__
    if module and module not in ("__builtin__", "builtins", "exceptions"):
        name = f"{module}.{name}"
    try:
        name += str(inspect.signature(value))
    except (ValueError, TypeError):
        pass
    p.text(f"<function {name}>")


def show_exception(value, p, cycle):
    kind = value.__class__
    name = getattr(kind, "__qualname__", kind.__name__)
    if kind.__module__ not in ("exceptions", "builtins"):
        name = f"{kind.__module__}.{name}"
    show_call(p, name, *getattr(value, "args", ()))


def show_super(value, p, cycle):
    p.begin_group(8, "<super: ")
    p.pretty(value.__thisclass__)
    p.text(",")
    p.breakable()
    p.pretty(value.__self__)
    p.end_group(8, ">")


FLAGS = ("IGNORECASE", "LOCALE", "MULTILINE", "DOTALL", "UNICODE", "VERBOSE", "DEBUG")


def show_pattern(value, p, cycle):
    """``re.compile(r'...', re.FLAG|...)``: every flag set, ``re.UNICODE`` of a str pattern too."""
    literal = repr(value.pattern)
    literal = ("ur" + literal[1:] if literal[:1] in "uU" else "r" + literal).replace("\\\\", "\\")
    flags = "|".join("re." + flag for flag in FLAGS if value.flags & getattr(re, flag))
    show_call(p, "re.compile", *([Raw(literal), Raw(flags)] if value.flags else [Raw(literal)]))


def show_namespace(value, p, cycle):
    if cycle:
        show_call(p, "namespace", Raw("..."))
    else:
        show_call(p, "namespace", **value.__dict__)


def show_as_call(arguments):
    """A ``collections`` type as a call of its class: ``arguments(value)`` gives (args, kwargs)."""
    def show(value, p, cycle):
        name = value.__class__.__name__
        if cycle:
            show_call(p, name, Raw("..."))
        else:
            args, kwargs = arguments(value)
            show_call(p, name, *args, **kwargs)
    return show


BY_TYPE = {
    int: show_repr, float: show_repr, str: show_repr, bytes: show_repr, range: show_repr, slice: show_repr,
    types.MethodType: show_repr,
    tuple: show_items("(", ")"), list: show_items("[", "]"),
    dict: show_mapping("{", "}"), types.MappingProxyType: show_mapping("mappingproxy({", "})"),
    type(os.environ): show_mapping("environ{", "}"),
    set: show_set("{", "}"), frozenset: show_set("frozenset({", "})"),
    super: show_super, re.Pattern: show_pattern, type: show_type,
    types.FunctionType: show_function, types.BuiltinFunctionType: show_function,
    types.SimpleNamespace: show_namespace, BaseException: show_exception,
}
BY_NAME = {
    ("collections", "defaultdict"): show_as_call(lambda d: ((d.default_factory, dict(d)), {})),
    ("collections", "OrderedDict"): show_as_call(lambda d: (([*d.items()],) if d else (), {})),
    ("collections", "deque"): show_as_call(
        lambda d: (([*d],), {} if d.maxlen is None else {"maxlen": d.maxlen})),
    ("collections", "Counter"): show_as_call(lambda c: ((dict(c.most_common()),) if c else (), {})),
    ("collections", "UserList"): show_as_call(lambda u: ((u.data,), {})),
}


# ---------------------------------------------------------------- cells

def start(tools):
    """The shell as a code action's job begins: Python's ``random`` seeded alike in every job (so a
    replayed cell draws what it drew live), stderr unseen, IPython's ``display`` a builtin, the tools
    (name: about) in the namespace."""
    random.seed(0)
    sys.stderr = Discard()
    builtins.display = display
    return Shell({name: tool(name, about) for name, about in tools.items()})


def display(*objects, **options):
    """IPython's ``display`` in a shell without a frontend, as upstream's is: it prints its objects."""
    print(*objects)


def run(cell, namespace):
    """Run a cell; its value (IPython shows it), or None when it has none or a ``;`` hides it."""
    tree = ast.parse(cell, "<cell>")
    shown = tree.body and isinstance(tree.body[-1], ast.Expr) and not quiet(cell)
    last = tree.body.pop() if shown else None
    exec(compile(tree, "<cell>", "exec"), namespace)
    return None if last is None else eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)


def quiet(cell):
    """IPython's rule: a cell whose last token, comments and line ends aside, is ";" shows no value."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(cell).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    skipped = (tokenize.ENDMARKER, tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)
    last = next((token for token in reversed(tokens) if token.type not in skipped), None)
    return last is not None and last.type == tokenize.OP and last.string == ";"


UNDERS = ("_", "__", "___")


class Shell:
    """One task's namespace and what IPython's display hook keeps in it."""

    def __init__(self, namespace):
        self.namespace = namespace
        self.outputs = {}
        self.unders = ["", "", ""]  # the last three values shown, as the hook holds them
        self.put = {}  # what the hook last wrote to _, __, ___
        namespace.update(__name__="__main__", __builtins__=builtins, __builtin__=builtins,  # modules, as IPython's
                         _="", __="", ___="", Out=self.outputs, _oh=self.outputs)

    def keep(self, value, count):
        """IPython's ``DisplayHook.update_user_ns``: ``_``, ``__``, ``___`` move on unless the code
        has one of them holding what the hook did not put there; ``_<count>`` and ``Out[count]``."""
        if value is self.outputs:
            return
        own = any(name in self.namespace and self.namespace[name] is not self.put.get(name, held)
                  for name, held in zip(UNDERS, self.unders))
        self.unders = [value, *self.unders[:2]]
        if not own:
            self.put = dict(zip(UNDERS, self.unders))
            self.namespace.update(self.put)
        self.namespace[f"_{count}"] = self.outputs[count] = value

    def replay(self, cell, count):
        """An earlier cell, run again without a word, to rebuild what it left."""
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                value = run(cell, self.namespace)
                if value is not None:
                    self.keep(value, count)
            except BaseException:  # SystemExit too: a shell survives it
                pass

    def live(self, cell, count):
        """The new cell, with what IPython prints for it."""
        try:
            value = run(cell, self.namespace)
            if value is not None:
                self.keep(value, count)
                text = pretty(value)
                print(f"Out[{count}]: " + ("\n" if "\n" in text else "") + text)  # the prompt, as IPython writes it
        except SystemExit as error:  # IPython's words for it
            print("An exception has occurred, use %tb to see the full traceback.\n")
            print("".join(traceback.format_exception_only(type(error), error)))
        except BaseException as error:
            frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == "<cell>"]
            print("Traceback (most recent call last):")
            print("".join(traceback.format_list(frames)), end="")
            print("".join(traceback.format_exception_only(type(error), error)), end="")
