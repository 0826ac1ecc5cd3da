"""Stage 1: render a conversation to text plus the character span of every part.

An annotated template is a chat template with span tags::

    {% span "turn", loop.index0 %}                       one message's whole output
      {% span "header" %}<|im_start|>assistant\n{% endspan %}
      {% span "content" %}{{ message.content }}{% endspan %}
      {% span "eot" %}<|im_end|>{% endspan %}\n
    {% endspan %}

The first argument is the kind (``"turn"`` or a :class:`~labelmask.Part` name in
lower case); the optional second one names the message, by index or by the
message mapping itself. A part without it belongs to the enclosing turn.

How spans are found: every tag wraps its output in private sentinel characters
(each marker starts with the Unicode noncharacter U+FDD0, which input may not
contain, and says what it is in the next character; a span that names a message
writes the index as one more character). After the render one ``str.split`` on
U+FDD0 strips them and records where each block began and ended in the stripped
text. Because the positions travel with the text, they stay exact inside macros,
loops, ``set`` blocks and filter blocks, where a running count of emitted
characters (transformers' ``{% generation %}`` tracker) is wrong. A filter applied
*around* a span (``{{ x | trim }}`` where ``x`` holds a tagged block) would see the
sentinels: a cut marker raises (unbalanced), and a changed text is caught by
``verify=True`` and by the property suite, which renders the stock template and
compares. The marker codec and the decoding pass live in ``_rendered`` (no Jinja there),
with the :class:`~labelmask._rendered.Rendered` result every later stage reads.
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
import jinja2.runtime
import jinja2.sandbox
import jinja2.utils

from labelmask._rendered import (
    CLOSE_MARKER,
    INDEX_BMP,
    INDEX_CHARS,
    INDEXED_CHAR,
    KIND_CHAR,
    KINDS,
    OPEN,
    Rendered,
    decode,
    index_char,
)
from labelmask.errors import AnnotationError, OptionError, RenderBudgetError, RenderParityError, TemplateRaisedError


class _SpanExtension(jinja2.ext.Extension):
    """``{% span kind[, message] %}...{% endspan %}``, and ``{% generation %}``.

    The environment's ``labelmask_mode`` decides what a span compiles to:

    * ``"stock"``: its body, unchanged (so are ``{% generation %}`` blocks, so a
      stock template that uses them renders as in transformers);
    * ``"annotate"``: its body between sentinel strings written inline as template
      data, so a span costs nothing at render time but the marker characters;
    * ``"trace"``: a call block that also records which turn an exception was
      raised in; used only to name the message when a template raises;
    * ``"generation"``: for a stock template that carries ``{% generation %}``
      tags, each block becomes a ``content`` span of the message in the
      template's ``message`` variable (see ``_derive.py``).
    """

    tags = {"span", "generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node | list[jinja2.nodes.Node]:
        token = next(parser.stream)
        lineno = token.lineno
        if token.value == "generation":
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            if self.environment.labelmask_mode != "generation":
                return body
            # A stock template's own {% generation %} block: assistant output of the message held by
            # the template's loop variable (looked up by identity, as spans are). Loop variables are
            # compiled to locals, so the usual names are read directly; a block where none holds a
            # message (Phi-3's closing eos after the loop) names none (see render_annotated).
            names = jinja2.nodes.Tuple([jinja2.nodes.Name(n, "load") for n in LOOP_NAMES], "load")
            opening = [jinja2.nodes.Filter(names, "labelmask_owner", [], [], None, None)]
            close = jinja2.nodes.Output([jinja2.nodes.TemplateData(CLOSE_MARKER)])
            return [jinja2.nodes.Output(opening).set_lineno(lineno), *body, close]
        kind = parser.parse_expression()
        if not isinstance(kind, jinja2.nodes.Const) or kind.value not in KIND_CHAR:
            parser.fail(f"a span's kind must be one of {', '.join(map(repr, KINDS))}", lineno)
        message: jinja2.nodes.Expr = jinja2.nodes.Const(None)
        if parser.stream.skip_if("comma"):
            message = parser.parse_expression()
        body = parser.parse_statements(("name:endspan",), drop_needle=True)
        mode = self.environment.labelmask_mode
        if mode == "stock":
            return body
        if mode == "trace":
            call = self.call_method("_annotate", [kind, message])
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)
        opening: list[jinja2.nodes.Expr] = [jinja2.nodes.TemplateData(OPEN + KIND_CHAR[kind.value])]
        if not (isinstance(message, jinja2.nodes.Const) and message.value is None):
            opening = [
                jinja2.nodes.TemplateData(OPEN + INDEXED_CHAR[kind.value]),
                jinja2.nodes.Filter(message, "labelmask_index", [], [], None, None),
            ]
        close = jinja2.nodes.Output([jinja2.nodes.TemplateData(CLOSE_MARKER)])
        return [jinja2.nodes.Output(opening).set_lineno(lineno), *body, close]

    @jinja2.pass_context
    def _annotate(self, context: Any, kind: Any, message: Any, caller: Any) -> str:
        try:
            body = caller()
        except Exception as exc:
            # The innermost turn a template raised in names the message it objected to.
            if kind == "turn" and not hasattr(exc, "labelmask_message_index"):
                exc.labelmask_message_index = _message_index(context, message)  # type: ignore[attr-defined]
            raise
        if message is None:
            return f"{OPEN}{KIND_CHAR[kind]}{body}{CLOSE_MARKER}"
        index = index_char(_message_index(context, message))
        return f"{OPEN}{INDEXED_CHAR[kind]}{index}{body}{CLOSE_MARKER}"


@jinja2.pass_context
def _index_filter(context: Any, message: Any) -> str:
    # A filter, not a method call: compiled templates call filters directly, outside the sandbox's call checks.
    if type(message) is int and 0 <= message < INDEX_BMP:
        return INDEX_CHARS[message]
    return index_char(_message_index(context, message))


LOOP_NAMES = ("message", "m", "msg", "turn", "item", "entry")


@jinja2.pass_context
def _owner_filter(context: Any, candidates: tuple) -> str:
    """The opening marker of a ``{% generation %}`` block: a content span of the message a loop variable holds."""
    messages = context.get("_labelmask_messages") or ()
    for candidate in candidates:
        for i, message in enumerate(messages):
            if candidate is message:
                return OPEN + INDEXED_CHAR["content"] + index_char(i)
    return OPEN + KIND_CHAR["content"]


def _message_index(context: Any, message: Any) -> int:
    if isinstance(message, int) and not isinstance(message, bool):
        return message
    # The list as passed in: a template may rebind `messages` (Llama 3.1: messages[1:]).
    messages = context.get("_labelmask_messages") or context.get("messages") or ()
    for i, candidate in enumerate(messages):
        if candidate is message:
            return i
    raise AnnotationError(f"span names a message that is not in `messages`: {message!r:.80}")


class _Namespace(jinja2.utils.Namespace):
    # As transformers: no underscore attributes, so templates cannot reach CPython internals.
    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} may not start with '_'")


class _Dict:
    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


# A date-writing template (Llama 3.1: "Today Date: ...") must not make the output
# depend on the day it runs. strftime_now is frozen to this instant; templates that
# accept ``date_string`` get it passed through like any other template kwarg.
FROZEN_NOW = datetime(2026, 1, 1)


def _strftime_now(format: str) -> str:
    return FROZEN_NOW.strftime(format)


# Types for which the sandbox's verdict on an attribute depends only on (type, name): plain data as
# chat templates see it, loop variables and namespaces. Their verdicts are cached: Jinja's checks
# run isinstance against a dozen types and ABCs on every lookup such as ``loop.index0`` or
# ``content.strip``, a tenth of a render. The verdict reads the type and the name, never the
# value, so the cache is safe to share between threads.
_CACHED_TYPES = frozenset(
    {str, dict, list, tuple, int, float, bool, type(None), jinja2.runtime.LoopContext, jinja2.utils.Namespace}
)
_SAFE_ATTRIBUTE: dict[tuple[type, str], bool] = {}
_DICT_ATTRIBUTES = frozenset(dir(dict))


@dataclasses.dataclass(frozen=True)
class RenderBudget:
    """How long one render of a chat template may take, and how much it may write.

    A chat template is code, and a hostile or broken one can loop for hours (two nested
    ``range(100000)`` loops) or write gigabytes (``'x' * 10**9``) before anything is tokenized.
    Each render (the stock template's, the annotation's, the fallback's extra renders) stops
    with :class:`~labelmask.RenderBudgetError` once it passes either limit. The defaults are far
    above any real template: the shipped ones render a 100-message conversation in
    milliseconds, and 2**25 characters is about eight million tokens.

    Attributes:
        seconds: Wall-clock time for one render. Checked between outputs and every 1,024 steps
            of a ``range`` loop (a loop that writes nothing is still stopped).
        chars: Characters one render may write (the conversation's own text included), and the
            largest string or list a ``*`` in the template may build.
    """

    seconds: float = 60.0
    chars: int = 2**25

    def __post_init__(self) -> None:
        for field, value in (("seconds", self.seconds), ("chars", self.chars)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise OptionError(f"RenderBudget({field}={value!r}): use a positive number.")


DEFAULT_BUDGET = RenderBudget()
# The budget of the renders under way in this context, and the monotonic time the current one must end by.
_BUDGET: ContextVar[RenderBudget] = ContextVar("labelmask_render_budget", default=DEFAULT_BUDGET)
_DEADLINE: ContextVar[float] = ContextVar("labelmask_render_deadline", default=float("inf"))


def set_budget(budget: RenderBudget | None) -> Any:
    """Make ``budget`` (``None``: the default) the budget of renders in this context; returns the
    token for :func:`reset_budget`."""
    return _BUDGET.set(budget if budget is not None else DEFAULT_BUDGET)


def reset_budget(token: Any) -> None:
    _BUDGET.reset(token)


class _OverBudget(Exception):
    """Raised inside a render; :func:`_render` turns it into :class:`RenderBudgetError`."""


def _check_deadline() -> None:
    if time.monotonic() > _DEADLINE.get():
        raise _OverBudget("time")


class _BudgetedRange:
    """``range`` for templates: the sandbox's (at most 100,000 items), checking the render's deadline
    every 1,024 items, so nested loops that write nothing still stop."""

    __slots__ = ("_range",)

    def __init__(self, r: range):
        self._range = r

    def __iter__(self):
        for i in self._range:
            if not i & 1023:
                _check_deadline()
            yield i

    def __reversed__(self):
        return _BudgetedRange(self._range[::-1]).__iter__()

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, key: Any) -> Any:
        item = self._range[key]
        return _BudgetedRange(item) if isinstance(item, range) else item

    def __contains__(self, value: Any) -> bool:
        return value in self._range

    def __repr__(self) -> str:
        return repr(self._range)


def _range(*args: Any) -> _BudgetedRange:
    return _BudgetedRange(jinja2.sandbox.safe_range(*args))


class _Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """transformers' sandbox (immutable), with two shortcuts that decide exactly as it does, and
    the render budget on ``*`` and ``**``."""

    labelmask_mode = "stock"
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            limit = _BUDGET.get().chars
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > limit:
                    raise _OverBudget("chars")
        elif isinstance(left, int) and isinstance(right, int) and right > 64 and abs(left) > 1:
            if right * abs(left).bit_length() > 1 << 20:
                raise _OverBudget("chars")  # an integer of more than a million bits
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # ``message.content`` on a dict: Jinja tries the attribute, catches AttributeError, then
        # indexes. A plain dict has no attributes but dict's own, so index directly.
        if type(obj) is dict and type(attribute) is str and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
        tree = super()._parse(source, name, filename)
        _merge_outputs(tree)
        return tree

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        cls = type(obj)
        if cls not in _CACHED_TYPES and cls is not _Namespace:
            return super().is_safe_attribute(obj, attr, value)
        key = (cls, attr)
        verdict = _SAFE_ATTRIBUTE.get(key)
        if verdict is None:
            verdict = _SAFE_ATTRIBUTE[key] = super().is_safe_attribute(obj, attr, value)
        return verdict


def _merge_outputs(node: jinja2.nodes.Node) -> None:
    """Join adjacent output statements into one, everywhere in ``node``.

    Jinja yields once per output statement (a compiled render is a generator joined at the
    end), grouping only the constant pieces of one statement. A span's markers are outputs of
    their own, so an annotated template would yield about three times as often as its stock
    template; joined, a marker folds into the constant text beside it (``{% span "header" %}``
    around a literal header is one constant). Output is the same: the pieces go out in order.
    """
    for field in node.fields:
        value = getattr(node, field, None)
        if type(value) is list and len(value) > 1:
            merged: list[Any] = []
            for item in value:
                if type(item) is jinja2.nodes.Output and merged and type(merged[-1]) is jinja2.nodes.Output:
                    merged[-1] = jinja2.nodes.Output(merged[-1].nodes + item.nodes, lineno=merged[-1].lineno)
                else:
                    merged.append(item)
            if len(merged) != len(value):
                setattr(node, field, merged)
    for child in node.iter_child_nodes():
        _merge_outputs(child)


def _make_env(mode: str) -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    # A subclass per mode: the extension reads the mode while parsing.
    cls = type(f"_{mode.title()}Environment", (_Sandbox,), {"labelmask_mode": mode})
    env = cls(trim_blocks=True, lstrip_blocks=True, extensions=[_SpanExtension, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.filters["labelmask_index"] = _index_filter
    env.filters["labelmask_owner"] = _owner_filter
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _Dict()
    env.globals["namespace"] = _Namespace
    env.globals["range"] = _range
    return env


_ENVS = {mode: _make_env(mode) for mode in ("stock", "annotate", "trace", "generation")}


@lru_cache(maxsize=64)
def compile_template(source: str, *, mode: str, name: str) -> jinja2.Template:
    """Compile (once) a template for ``mode``: ``"stock"``, ``"annotate"``, ``"trace"`` or ``"generation"``."""
    try:
        return _ENVS[mode].from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        kind = "chat template" if mode == "stock" else "annotated template"
        raise AnnotationError(f"{kind} {name!r} does not compile: {exc} (line {exc.lineno})", template=name) from None


def _render(template: jinja2.Template, variables: dict[str, Any], name: str) -> str:
    budget = _BUDGET.get()
    deadline = time.monotonic() + budget.seconds
    token = _DEADLINE.set(deadline)
    try:
        # Template.render, with the budget checked every 64 outputs and at the end (a loop that writes
        # nothing is stopped by its range; one output is bounded by the checks on '*' and '**').
        pieces: list[str] = []
        append = pieces.append
        size, limit, checked = 0, budget.chars, 0
        try:
            for piece in template.root_render_func(template.new_context(variables)):
                append(piece)
                if len(pieces) & 63 == 0:
                    size += sum(map(len, pieces[checked:]))
                    checked = len(pieces)
                    if size > limit:
                        raise _OverBudget("chars")
                    if time.monotonic() > deadline:
                        raise _OverBudget("time")
        except Exception:
            template.environment.handle_exception()
        text = "".join(pieces)
        if len(text) > limit:
            raise _OverBudget("chars")
        return text
    except _OverBudget as exc:
        raise _over_budget(str(exc), budget, name) from None
    except AnnotationError as exc:
        exc.template = name
        raise
    except Exception as exc:
        index = getattr(exc, "labelmask_message_index", None)
        where = f" at message {index}" if index is not None else ""
        if isinstance(exc, jinja2.TemplateError):
            what = (
                f"rejected the conversation{where}: {exc}. This is the template's own check; "
                "fix the conversation (e.g. alternate user/assistant turns)."
            )
        else:
            # A template fed data it does not expect fails with whatever Python raises ('str' + list).
            what = (
                f"failed on this conversation{where}: {type(exc).__name__}: {exc}. "
                "Check that the message's fields have the types this template expects."
            )
        raise TemplateRaisedError(f"The chat template {name!r} {what}", message_index=index, template=name) from exc
    finally:
        _DEADLINE.reset(token)


def _over_budget(what: str, budget: RenderBudget, name: str) -> RenderBudgetError:
    spent = f"wrote more than {budget.chars:,} characters"
    if what == "time":
        spent = f"ran longer than {budget.seconds:g} s"
    msg = (
        f"Rendering chat template {name!r} {spent} (the render budget). Real chat templates render a conversation "
        "in milliseconds and write about its own length: this template loops or writes far more (a broken or "
        "hostile template), or the conversation itself is that long. Check the template; if the work is real, "
        "pass render_budget=labelmask.RenderBudget(seconds=..., chars=...)."
    )
    return RenderBudgetError(msg, template=name, limit=what)


def render_stock(template: jinja2.Template, variables: dict[str, Any], name: str) -> str:
    """Render the stock chat template, as ``apply_chat_template(tokenize=False)`` does."""
    return _render(template, variables, name)


def render_annotated(
    template: jinja2.Template,
    variables: dict[str, Any],
    name: str,
    *,
    expected: str | None,
    n_messages: int,
    inherit_orphans: bool = False,
) -> Rendered:
    """Render an annotated template, strip its span markers and locate every part
    (:func:`labelmask._rendered.decode`, whose arguments these are).

    Args:
        expected: The stock render, which the stripped text must equal; ``None`` skips the check.

    Raises:
        RenderParityError: the stripped text differs from ``expected``.
        AnnotationError: span tags are unbalanced or name a message that does not exist.
    """
    rendered = decode(_render(template, variables, name), name, n_messages=n_messages, inherit_orphans=inherit_orphans)
    if expected is not None and rendered.text != expected:
        _raise_parity(rendered.text, expected, name)
    return rendered


def _raise_parity(text: str, expected: str, name: str) -> None:
    position = next((i for i, (a, b) in enumerate(zip(text, expected)) if a != b), min(len(text), len(expected)))
    lo = max(0, position - 30)
    msg = (
        f"annotated template {name!r} rendered different text from the stock template at character {position}: "
        f"annotated {text[lo : position + 30]!r} vs stock {expected[lo : position + 30]!r}. "
        "The annotation is wrong for this input (or a filter saw span markers); "
        "report it with this conversation, or pass template= to choose another annotation."
    )
    raise RenderParityError(msg, position=position, template=name)


@lru_cache(maxsize=64)
def template_variables(source: str) -> frozenset[str] | None:
    """The names ``source`` reads from its context (``jinja2.meta.find_undeclared_variables``), or ``None``
    if it does not parse (its compile error is raised where it is rendered)."""
    try:
        return frozenset(jinja2.meta.find_undeclared_variables(_ENVS["stock"].parse(source)))
    except jinja2.TemplateSyntaxError:
        return None
