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
prints its objects, as it does in a shell without a frontend such as upstream's; ``help`` is pydoc's.
The task's tools are stand-ins that call the real ones in the caller, shown, named and helped as
the real ones; a tool's error is the tool's own where its type is built in, else one of a class
named as the tool's, under the same built-in class.

A cell is cleaned as IPython cleans it (leading blank lines and common indentation dropped; a one-line
cell naming ``exit`` or ``quit`` calls it, as IPython's autocall does), kept in ``In`` and ``_i<n>``,
and compiled under IPython's name for it, ``<ipython-input-<n>-<sha1>>``. An error is written as IPython's
verbose traceback writes it: a rule, each exception of the chain oldest first, each frame as
``File where:line, in function(arguments)`` with the lines around it chosen as ``stack_data`` chooses
them (whole statements, two before and after, one for a cause; deep recursion collapsed), a tool's
own frames as written where the tool ran. A cell that does not compile gets IPython's short form.
What differs: %magics, !commands and ``?`` help are not run (nor kept in ``In`` as IPython rewrites
them); no ``get_ipython``; no top-level ``await``; a SyntaxError raised while running (``eval('1 +')``)
is written as other errors are; a cell that replaces what a standard module holds (``textwrap.dedent
= None``) can break the shell's own use of it in later cells.
"""

from __future__ import annotations

import ast
import builtins
import codeop
import collections
import collections.abc
import contextlib
import functools
import gc
import hashlib
import io
import itertools
import linecache
import os
import random
import re
import signal
import sys
import textwrap
import tokenize
import traceback
import types

WIDTH = 79  # IPython's PlainTextFormatter.max_width
MAX_ITEMS = 1000  # and its max_seq_length: items shown of one container


class Discard(io.TextIOBase):
    """Where stderr goes: upstream's shell shows what a cell prints to stdout only (no warnings)."""

    def write(self, text):
        return len(text)


# ---------------------------------------------------------------- the task's tools

def tool(name, about):
    """One of the task's tools as a function of the cell's namespace: its calls cross to the caller
    through the sandbox's ``_m3_tool`` bridge; values come back as literals (:func:`literal`), errors
    as :func:`tool_error` rebuilds them. ``about``: the real tool's ``module``, ``qualname`` and
    ``doc``, the text IPython ``shows`` for it and the text ``help`` writes of it, all from the caller,
    where the tool lives; an error's reply may hold the tool's ``frames``, as IPython writes them.
    A tool that is a Python builtin (``about["builtin"]``: upstream's ``min``, ``max``) is the job's
    own: it holds no state, and takes what no literal holds (``key=`` functions, generators)."""
    if about.get("builtin"):
        return getattr(builtins, about["builtin"])

    def call(*args, **kwargs):
        reply = _m3_tool(name, repr(args), repr(kwargs))  # noqa: F821 (the bridge the sandbox defines)
        if "error" in reply:
            error = tool_error(reply)
            setattr(error, CALLER_FRAMES, reply.get("frames", []))
            raise error
        return literal(reply["literal"]) if "literal" in reply else reply["text"]
    call.__name__ = name
    call.__module__, call.__qualname__, call.__doc__ = about["module"], about["qualname"], about["doc"]
    STAND_INS[id(call)] = (call, about)
    return call


def tool_error(reply):
    """A tool's error as the cell catches it and IPython shows it: the tool's own exception when its
    type is built in and its ``args`` are literals that rebuild it; else one of a class of the same
    name under the nearest built-in class of the tool's (``base``), with its ``args`` where they are
    literals, saying what the tool's said."""
    base = getattr(builtins, reply.get("base", ""), None)
    if not (isinstance(base, type) and issubclass(base, Exception)):
        base = RuntimeError
    message, args = reply["error"], (reply["error"],)
    with contextlib.suppress(Exception):  # args that are no literal, or a constructor that wants others
        args = literal(reply["args"])
        error = base(*args)
        if reply["type"] == base.__name__ and str(error) == message:
            return error

    def init(self):
        BaseException.__init__(self, *args)

    kind = type(reply["type"], (base,), {"__init__": init, "__str__": lambda self: message,
                                         "__module__": reply.get("module", base.__module__)})
    return kind()


class NonFinite(ast.NodeTransformer):
    """The names ``repr`` writes for non-finite floats, as those floats."""

    def visit_Name(self, node):
        return ast.Constant(float(node.id)) if node.id in ("nan", "inf") else node


def literal(text):
    """``ast.literal_eval`` that also reads ``nan`` and ``inf`` as ``repr`` writes them: a tool's value
    crosses from the caller as its ``repr``."""
    return ast.literal_eval(NonFinite().visit(ast.parse(text.lstrip(" \t"), mode="eval")))


STAND_INS = {}  # id -> (a tool's stand-in, what the caller said of the real tool); held, so no id is reused


def about_stand_in(value):
    """What the caller said of the tool ``value`` stands in for; None if it is no stand-in."""
    stand_in, about = STAND_INS.get(id(value), (None, None))
    return about if stand_in is value else None


# ---------------------------------------------------------------- layout: IPython's line breaking

class Group:
    """Spaces that break together: all of a group's, or none."""

    def __init__(self, depth):
        self.depth = depth
        self.spaces = collections.deque()  # its spaces not yet written
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
        self.waiting = collections.deque()  # texts and Spaces
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
    about = about_stand_in(value)
    if about is not None:
        return lambda value, p, cycle: p.text(about["shows"])
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
    replayed cell draws what it drew live), stderr unseen, IPython's ``display`` and site's ``help``
    builtins, the tools (name: about) in the namespace."""
    random.seed(0)
    gc.enable()  # as in upstream's shell (a job starts without it): a long cell's cycles are freed
    sys.stderr = Discard()
    builtins.display, builtins.help = display, Helper()
    SANDBOX.append(getattr(builtins.__import__, "__globals__", None))  # the sandbox's import guard, if any
    return Shell({name: tool(name, about) for name, about in tools.items()})


def display(*objects, **options):
    """IPython's ``display`` in a shell without a frontend, as upstream's is: it prints its objects."""
    print(*objects)


class Helper:
    """``help`` as upstream's shell has it (site's, through pydoc, writing to stdout); for a tool,
    the text pydoc writes of the real one, from the caller."""

    def __repr__(self):
        return "Type help() for interactive help, or help(object) for help about object."

    def __call__(self, *args, **kwargs):
        about = about_stand_in(args[0]) if len(args) == 1 and not kwargs else None
        if about is not None:
            sys.stdout.write(about["help"] + "\n")  # pydoc's Helper ends with a line end of its own
            return None
        import pydoc  # only here: each cell's job pays for what it imports
        return pydoc.help(*args, **kwargs)


COMPILE_FLAGS = ast.PyCF_ONLY_AST | codeop.PyCF_DONT_IMPLY_DEDENT | codeop.PyCF_ALLOW_INCOMPLETE_INPUT  # IPython's


def cleaned(cell):
    """The cell as IPython's input transformers leave it: leading blank lines dropped, the common
    indentation removed, a last line end."""
    lines = (cell if cell.endswith("\n") else cell + "\n").splitlines(keepends=True)
    first = next((index for index, line in enumerate(lines) if line and not line.isspace()), 0)
    return textwrap.dedent("".join(lines[first:]))


LINE_PARTS = re.compile(r"(\s*)([,;/%]|!!?|\?\??)?\s*(%{0,2}[\w.*]*)(.*?$|$)")  # IPython's split_user_input


def autocalled(text, namespace):
    """IPython's prefilter on a one-line cell whose first name is ``exit`` or ``quit`` (an
    :class:`ExitAutocall`): the rest of the line becomes the call's arguments, whatever it is
    (``exit 0`` is ``exit(0)``, ``exit = 5`` is ``exit(= 5)``), unless it already opens one."""
    if len(text.splitlines()) != 1:
        return text
    _, escape, name, rest = LINE_PARTS.match(text.rstrip("\n")).groups()
    rest = rest.lstrip()
    if escape or not isinstance(namespace.get(name), ExitAutocall) or rest.startswith("("):
        return text
    return f"{name}({rest[:-1]});\n" if rest.endswith(";") else f"{name}({rest})\n"


def tokenized(text):
    """The cleaned cell, once its tokens are read, as IPython's token transforms read them before it
    compiles: a dedent that matches no outer level fails there, as ``tokenize``'s IndentationError
    (at ``<tokenize>``); a cell that ends inside a bracket or string is left to the compiler."""
    with contextlib.suppress(tokenize.TokenError):
        collections.deque(tokenize.generate_tokens(io.StringIO(text).readline), maxlen=0)
    return text


class ExitAutocall:
    """``exit`` and ``quit`` as upstream's shell has them: IPython's, whose call asks a shell without
    a terminal for an ``ask_exit`` it lacks (this frame is left out of the traceback, as IPython's is)."""

    def __call__(self):
        raise AttributeError("'InteractiveShell' object has no attribute 'ask_exit'")


ExitAutocall.__module__ = "IPython.core.autocall"


@functools.wraps(io.open)
def ipython_open(file, *args, **kwargs):
    """IPython's ``open`` in the shell's namespace: ``io.open``, but not of stdin, stdout or stderr."""
    if file in {0, 1, 2}:
        raise ValueError(f"IPython won't let you open fd={file} by default as it is likely to crash IPython. "
                         "If you know what you are doing, you can use builtins' open.")
    return io.open(file, *args, **kwargs)


def compiled(text, count):
    """The cell's code, and the code of its value (None when it has none, or a ``;`` hides it),
    compiled under IPython's name for the cell; its lines go to ``linecache``, as IPython puts them
    there (tracebacks and ``inspect.getsource`` read them)."""
    name = f"<ipython-input-{count}-{hashlib.sha1(text.encode()).hexdigest()[:12]}>"
    linecache.cache[name] = (len(text), None, text.splitlines(keepends=True), name)
    # dont_inherit: a cell's annotations are evaluated, as IPython's, not strings by this module's future import
    tree = compile(text, name, "exec", COMPILE_FLAGS, dont_inherit=True)
    shown = tree.body and isinstance(tree.body[-1], ast.Expr) and not quiet(text)
    last = tree.body.pop() if shown else None
    value = None if last is None else compile(ast.Expression(last.value), name, "eval", dont_inherit=True)
    return compile(tree, name, "exec", dont_inherit=True), value


def run(code, namespace):
    """Run a cell's code and return its value (IPython shows it), or None."""
    statements, value = code
    exec(statements, namespace)
    return None if value is None else eval(value, namespace)


def quiet(cell):
    """IPython's rule: a cell whose last token, comments and line ends aside, is ";" shows no value."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(cell).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    skipped = (tokenize.ENDMARKER, tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)
    last = next((token for token in reversed(tokens) if token.type not in skipped), None)
    return last is not None and last.type == tokenize.OP and last.string == ";"


# ---------------------------------------------------------------- errors: what IPython prints for them

RULE_WIDTH = 75  # IPython's: the terminal's width, at most 75 (upstream's shell has no terminal)
NUMBER_WIDTH = 7
CAUSE = "\nThe above exception was the direct cause of the following exception:\n"
CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n"
SANDBOX = []  # the globals of the sandbox's own code, once a job has started: no frame from its first on is shown
CALLER_FRAMES = "frames_in_caller"  # a tool's error carries the frames of the tool, written where it ran


def syntax_error_text(error):
    """IPython's form of a cell that does not compile: where, the line, a caret, the message."""
    text = error.text if error.text is not None else ""
    if error.lineno and error.filename:
        text = linecache.getline(error.filename, error.lineno) or text
    where = f"{error.filename or '<string>'}:{error.lineno}" if error.lineno else (error.filename or "<string>")
    lines = [f"  File {where}", "    " + text.strip()]
    if error.offset is not None:
        indent = len(text) - len(text.lstrip())
        lines.append("    " + "".join(c if c.isspace() else " " for c in text[indent:error.offset - 1]) + "^")
    lines += [f"{type(error).__name__}: {error.msg}" if error.msg else type(error).__name__,
              *getattr(error, "__notes__", []), ""]
    return "\n".join(lines) + "\n"


def traceback_text(error):
    """IPython's verbose traceback (no colours) of an error a cell raised: its chain of causes,
    oldest first, each with the frames of the cell's code and what it called, and around each
    frame's line the statements before and after it (two, or one for a cause)."""
    chain, links = [error], []
    while True:
        if error.__cause__ is not None:
            link, error = CAUSE, error.__cause__
        elif error.__context__ is not None and not error.__suppress_context__:
            link, error = CONTEXT, error.__context__
        else:
            break
        if any(error is earlier for earlier in chain):
            break
        chain.append(error)
        links.append(link)
    parts = ["-" * RULE_WIDTH]
    for index in reversed(range(len(chain))):
        parts.append(error_block(chain[index], 2 if index == 0 else 1))
        if index:
            parts.append(links[index - 1])
    return "\n".join(parts) + "\n"


def error_block(error, context):
    name = type(error).__name__
    try:
        message = f"{name}: {error}"
    except Exception as failure:  # IPython's words for an error it cannot write, then the failure's traceback
        failure.__suppress_context__ = True
        message = f"<class 'str'>: ({type(failure)!r}, {failure!r})\n" + traceback_text(failure).rstrip("\n")
    return "\n".join([name + "Traceback (most recent call last)".rjust(RULE_WIDTH - len(name)),
                      *frame_texts(error.__traceback__, context), *getattr(error, CALLER_FRAMES, []),
                      message, *notes_of(error)])


def notes_of(error):
    """An exception's notes as IPython writes them: a value that is not a list of them, as its repr."""
    notes = getattr(error, "__notes__", [])
    if not isinstance(notes, collections.abc.Sequence) or isinstance(notes, (str, bytes)):
        try:
            return [repr(notes)]
        except Exception:
            return ["<__notes__ repr() failed>"]
    if not all(isinstance(note, str) for note in notes):
        raise TypeError("a note that is not text")  # IPython gives up on the traceback
    return list(notes)


def frame_texts(tb, context):
    """A traceback's frames as IPython writes them, those of this shell and of the sandbox left out;
    from the sandbox's first on, all are its bridge to the tools (its ``json``, its pipes), so none is."""
    frames = []
    while tb is not None and not any(tb.tb_frame.f_globals is sandbox for sandbox in SANDBOX):
        if tb.tb_frame.f_globals is not globals():  # this shell's own
            frames.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return [frame_text(frame, lineno, context) if frame else repeated_text(lineno)
            for frame, lineno in collapsed(frames)]


def collapsed(frames):
    """The frames, runs of repeated calls (deep recursion) each as one ``(None, keys)`` entry, as
    stack_data collapses them: in a stretch of (code, line)s each seen more than three times in
    all, only each one's first two and last places stay."""
    keys = [(frame.f_code, lineno) for frame, lineno in frames]
    counts = collections.Counter(keys)
    kept = []
    for common, stretch in itertools.groupby(keys, key=lambda key: counts[key] > 3):
        stretch = list(stretch)
        marks = [not common] * len(stretch)
        for key in set(stretch) if common else ():
            places = [index for index, other in enumerate(stretch) if other == key]
            for index in places[:2] + places[-1:]:
                marks[index] = True
        kept += marks
    result = []
    for (frame, lineno), key, keep in zip(frames, keys, kept):
        if keep:
            result.append((frame, lineno))
        elif result and result[-1][0] is None:
            result[-1][1].append(key)
        else:
            result.append((None, [key]))
    return result


def repeated_text(keys):
    counts = sorted(collections.Counter(keys).items(), key=lambda item: (-item[1], item[0][0].co_name))
    said = ", ".join(f"{code.co_qualname} at line {lineno} ({count} times)" for (code, lineno), count in counts)
    return f"    [... skipping similar frames: {said}]\n"


def frame_text(frame, lineno, context):
    """``File where:line[, in function(arguments)]`` and the lines around the frame's line."""
    code = frame.f_code
    call = None
    if code.co_qualname != "<module>":
        import inspect  # only here: each cell's job pays for what it imports
        try:
            arguments = inspect.formatargvalues(*inspect.getargvalues(frame), formatvalue=lambda value: "")
        except KeyError:
            arguments = "(***failed resolving arguments***)"
        call = code.co_qualname + arguments
    head = frame_head(code.co_filename, lineno, call)
    if linecache.getlines(code.co_filename):
        return head + "\n" + "".join(context_lines(code.co_filename, lineno, context))
    # IPython's words where there is no source (code given to exec), in its window of 2 * context
    # lines from the code's first, written without a line end
    if lineno - code.co_firstlineno > 2 * context:
        return head + "\n"
    number = code.co_firstlineno
    arrow_width = NUMBER_WIDTH - len(str(number))
    mark = (arrow(arrow_width) if number == lineno else " " * arrow_width) + str(number)
    return f"{head}\n{mark} {NO_SOURCE}"


def frame_head(filename, lineno, call=None):
    """``File where:line``, the home folder as ``~``, then ``, in function(arguments)`` if in one."""
    where = filename
    if not where.startswith("<"):
        home = os.path.join(os.path.expanduser("~"), "")
        where = "~" + os.sep + where[len(home):] if where.startswith(home) else where
    return f"File {where}:{lineno}" + (f", in {call}" if call else "")


def arrow(width):
    """IPython's marker of a frame's line, as wide as a line number's column leaves."""
    return "-" * (width - 2) + "> " if width >= 2 else ">" * width


NO_SOURCE = "'Could not get source, probably due dynamically evaluated source code.'"


def context_lines(filename, lineno, context):
    """stack_data's choice, as IPython asks it: the source split into pieces (a statement's lines,
    a compound statement's header, what lies between), those of the innermost function, class or
    module around the line; the line's piece whole, ``context`` pieces before and after it, each
    cut to six lines with a gap; indentation they all share removed; numbered, the line marked."""
    lines, tree, pieces = parsed(filename)
    scope = scope_of(tree, lineno) if tree is not None else None
    if scope is not None:
        pieces = [piece for piece in pieces if scope.start <= piece.start and piece.stop <= scope.stop]
    place = next((index for index, piece in enumerate(pieces) if lineno in piece), None)
    if place is None:
        return []
    shown = []
    for index in range(max(0, place - context), min(len(pieces), place + 1 + context)):
        numbers = list(pieces[index])
        if index != place and len(numbers) > 6:
            numbers = numbers[:3] + [None] + numbers[-2:]
        shown += numbers
    texts = [lines[number - 1] for number in shown if number is not None]
    indent = len(texts[0]) - len(textwrap.dedent("\n".join(texts)).splitlines()[0])
    written = []
    for number in shown:
        if number is None:
            written.append("   (...)")
        elif number == lineno:
            written.append(f"{arrow(NUMBER_WIDTH - len(str(number)))}{number} {lines[number - 1][indent:]}\n")
        else:
            written.append(f"{number:>{NUMBER_WIDTH}} {lines[number - 1][indent:]}\n")
    return written


@functools.lru_cache(maxsize=16)
def parsed(filename):
    """A source's lines, its tree (None if it is not Python) and its pieces; once per file, for the
    frames of a traceback that share one."""
    lines = [line.rstrip("\r\n") for line in linecache.getlines(filename)]
    try:
        tree = ast.parse("\n".join(lines))
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return lines, None, [range(number, number + 1) for number in range(1, len(lines) + 1)]
    return lines, tree, source_pieces(tree, lines)


def line_range(node):
    """The lines a statement spans, decorators included, as a range."""
    if not hasattr(node, "lineno"):  # a match statement's case: its pattern to its body's end
        return range(node.pattern.lineno, node.body[-1].end_lineno + 1)
    first = min([node.lineno] + [decorator.lineno for decorator in getattr(node, "decorator_list", [])])
    return range(first, node.end_lineno + 1)


def source_pieces(tree, lines):
    """stack_data's pieces of a source: each statement (its lines), and between statements of a
    body whatever lines lie there (a compound statement's header, ``else:``, comments); pieces
    on one line (``a; b``) merged; blank lines at a piece's ends dropped, blank pieces too."""
    def split(node, start, stop):
        first_at = {}  # statements sharing lines (a; b) count as their first
        for statement in statements_in(node):  # body, handlers, else, finally: in source order
            first_at.setdefault(line_range(statement), statement)
        for span in sorted(first_at, key=lambda r: (r.start, r.stop)):
            for inner_start, inner_stop in split(first_at[span], span.start, span.stop):
                if start < inner_start:
                    yield start, inner_start
                if inner_start < inner_stop:
                    yield inner_start, inner_stop
                start = inner_stop
        yield start, stop

    merged = []
    for start, stop in split(tree, 1, len(lines) + 1):
        if stop <= start:
            continue
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))

    def blank(number):
        return 0 < number <= len(lines) and not lines[number - 1].strip()

    pieces = []
    for start, stop in merged:
        while blank(start):
            start += 1
        while blank(stop - 1):
            stop -= 1
        if start < stop:
            pieces.append(range(start, stop))
    return pieces


STATEMENT_TYPES = (ast.stmt, ast.ExceptHandler, getattr(ast, "match_case", ()))
SCOPE_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def scope_of(tree, lineno):
    """The lines of the innermost function or class whose body holds the innermost statement at
    ``lineno``; None for the module's, which is all of it."""
    scope, node = None, tree
    while True:
        inner = next((child for child in statements_in(node) if lineno in line_range(child)), None)
        if inner is None:
            return scope
        if isinstance(node, SCOPE_TYPES):
            scope = line_range(node)
        node = inner


def statements_in(node):
    for _, body in ast.iter_fields(node):
        if isinstance(body, list) and body and isinstance(body[0], STATEMENT_TYPES):
            yield from body


# ---------------------------------------------------------------- the shell: a task's namespace and its cells

UNDERS = ("_", "__", "___")
EXIT_COMMAND = re.compile(r"(exit|quit)(\s*\(.*\))?$")  # cells IPython's history does not keep


class Shell:
    """One task's namespace and what IPython's display hook keeps in it."""

    def __init__(self, namespace):
        self.namespace = namespace
        self.outputs = {}
        self.unders = ["", "", ""]  # the last three values shown, as the hook holds them
        self.put = {}  # what the hook last wrote to _, __, ___
        self.inputs = [""]  # the cells as run, as IPython's history keeps them
        self.written = ["", "", "", ""]  # IPython's _iii, _ii, _i and the cell being run, as written
        namespace.update(__name__="__main__", __builtins__=builtins, __builtin__=builtins,  # modules, as IPython's
                         _="", __="", ___="", Out=self.outputs, _oh=self.outputs, In=self.inputs, _ih=self.inputs,
                         _dh=[os.getcwd()],
                         exit=ExitAutocall(), quit=ExitAutocall(), open=ipython_open)

    def transformed(self, cell, count):
        """The cell as IPython runs it, kept first as IPython's ``HistoryManager.store_inputs`` keeps
        it: in ``In`` as run, in ``_i<count>`` as written, the cells before as ``_i``, ``_ii``,
        ``_iii``; a blank cell and an exit command not at all. A cell whose tokens fail (see
        :func:`tokenized`) is kept as written, and its error raised."""
        failed = None
        try:
            text = autocalled(tokenized(cleaned(cell)), self.namespace)
        except IndentationError as error:
            failed, text = error, cell
        written = cell.rstrip("\n")
        if cell.strip() and not EXIT_COMMAND.match(written.strip()):
            self.inputs.append(text.rstrip("\n"))
            self.written = [*self.written[1:], written]
            self.namespace.update(zip(("_iii", "_ii", "_i", f"_i{count}"), self.written))
        if failed is not None:
            raise failed
        return text

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

    def replay(self, cell, count, timed_out=False):
        """An earlier cell, run again without a word, to rebuild what it left; one whose time ran out
        is only kept in the history (run again, it would take its time again)."""
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                text = self.transformed(cell, count)
                if timed_out:
                    return
                value = run(compiled(text, count), self.namespace)
                if value is not None:
                    self.keep(value, count)
            except BaseException:  # SystemExit too: a shell survives it
                pass

    def live(self, cell, count, seconds, alarm_frames=()):
        """The new cell, with what IPython prints for it; given ``seconds``, as upstream's shell gives
        a cell, then stopped by a TimeoutError (see :class:`Alarm`). Whether that alarm went off."""
        try:
            code = compiled(self.transformed(cell, count), count)
        except SyntaxError as error:
            print(syntax_error_text(error), end="")
            return False
        except Exception as error:  # the compiler's own limits: too deep, too big
            print(traceback_text(error), end="")
            return False
        alarm = Alarm(seconds, list(alarm_frames))
        try:
            with alarm:
                value = run(code, self.namespace)
                if value is not None:  # IPython formats a value before it keeps it, and keeps one it cannot format
                    text = formatted(value)
                    self.keep(value, count)
                    sys.stdout.write(f"Out[{count}]: ")  # as IPython writes it: the prompt, then print's
                    if text is not None:
                        print(("\n" if "\n" in text else "") + text)
        except SystemExit as error:  # IPython's words for it
            print("An exception has occurred, use %tb to see the full traceback.\n")
            print("".join(traceback.format_exception_only(type(error), error)))
        except BaseException as error:
            try:
                text = traceback_text(error)
            except Exception:
                text = "Unexpected exception formatting exception. Falling back to standard exception\n"
            print(text, end="")
        return alarm.went_off


def formatted(value):
    """The value's text after IPython's prompt; None when formatting it fails (IPython's formatter
    sends that error to stderr, unseen)."""
    try:
        return pretty(value)
    except Exception:
        return None


class Alarm:
    """Upstream's time limit on a cell: SIGALRM after ``seconds`` raises a TimeoutError in it, whose
    traceback ends with ``frames``: upstream's handler's, written by the caller from its source."""

    def __init__(self, seconds, frames):
        self.seconds, self.frames, self.went_off = seconds, frames, False

    def __enter__(self):
        signal.signal(signal.SIGALRM, self.expire)
        signal.alarm(self.seconds)

    def __exit__(self, *error):
        signal.alarm(0)

    def expire(self, signum, frame):
        self.went_off = True
        error = TimeoutError(f"Timed out after {self.seconds} seconds.")
        setattr(error, CALLER_FRAMES, self.frames)
        raise error
