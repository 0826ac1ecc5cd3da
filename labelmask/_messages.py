"""Stage 0: validate a conversation and turn it into what a chat template sees.

The template must see exactly what ``apply_chat_template`` would give it, or the
render is not the stock render. transformers drops keys whose value is ``None``,
copies everything into plain JSON types, and fills ``reasoning_content`` /
``thinking`` from any of the reasoning field names; we do the same, checked
against transformers by the render-parity property tests. Two keys are
labelmask's own and never reach the template: ``"train"`` and ``"weight"``
(training metadata, read into :class:`Conversation`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from labelmask._parts import ROLE_ALIASES
from labelmask._rendered import RESERVED as _MARKERS
from labelmask.errors import ConversationError

__all__ = ["Conversation", "normalize_conversation", "plain_kwargs"]

# Names a message's reasoning may come under; the first is the one templates read.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


@dataclasses.dataclass(frozen=True)
class Conversation:
    """A validated conversation, ready to render.

    Attributes:
        messages: Plain-data copies of the messages, as the template sees them.
        roles: :class:`Role` code (an int) of each message.
        tools: Plain-data tool schemas, or ``None``.
        train: Each message's ``"train"`` flag (``True``, ``False``, or ``None`` when
            it carries none), or ``None`` when no message carries one.
        weights: Each message's ``"weight"`` (1.0 when it carries none), or ``None``
            when no message carries one.
    """

    messages: list[dict[str, Any]]
    roles: tuple[int, ...]
    tools: list[dict[str, Any]] | None
    train: tuple[bool | None, ...] | None = None
    weights: tuple[float, ...] | None = None


# Per-message keys labelmask reads and removes before rendering: training metadata, not text.
LABELMASK_KEYS = ("train", "weight")


def _train_flag(value: Any, index: int) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    msg = f'Message {index}: "train" must be True or False, not {type(value).__name__} ({value!r:.40}).'
    raise ConversationError(msg, message_index=index)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _weight(value: Any, index: int) -> float:
    try:
        ok = not isinstance(value, (bool, str, bytes)) and value == float(value)
    except (TypeError, ValueError):
        ok = False
    weight = float(value) if ok else math.nan
    # loss_weights are float32: a larger weight would become inf there.
    if not math.isfinite(weight) or weight < 0 or weight > _FLOAT32_MAX:
        msg = f'Message {index}: "weight" must be a finite number >= 0 (at most float32\'s 3.4e38), not {value!r:.40}.'
        raise ConversationError(msg, message_index=index)
    return weight


# Characters refused in any string: the span markers' noncharacters, and lone surrogates (a JSON "\ud800"
# escape decodes to one), which no tokenizer can encode (UTF-8 has no bytes for them).
RESERVED = re.compile(f"[{_MARKERS.pattern[1:-1]}\ud800-\udfff]")


class _ReservedCharacter(Exception):
    pass


def _raise_reserved(index: int | None, text: str, where: str = "") -> None:
    where = where or f"Message {index}"
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        msg = (
            f"{where} contains a lone surrogate (U+D800..U+DFFF, as a JSON \\ud800 escape without its pair "
            "decodes to), which is not text: no tokenizer can encode it. Repair the data (decode it with "
            "errors='replace', or drop the row)."
        )
    else:
        msg = (
            f"{where} contains a Unicode noncharacter in U+FDD0..U+FDEF, which labelmask reserves for "
            "span markers. Remove or replace these characters (they carry no meaning in text)."
        )
    raise ConversationError(msg, message_index=index) from None


_ROLE_CODE = {name: int(role) for name, role in ROLE_ALIASES.items()}


# Deeper than this, a value is refused (a cycle is infinitely deep): no schema or message nests so deep,
# and Python's recursion limit (here and in the template's tojson) is not far below.
MAX_DEPTH = 100


class _TooDeep(Exception):
    pass


def _plain(value: Any, depth: int = 0) -> Any:
    """Copy into plain JSON types; other objects (images, arrays) become inert names."""
    cls = type(value)
    if cls is str:
        if RESERVED.search(value):
            raise _ReservedCharacter(value)
        return value
    if depth > MAX_DEPTH:
        raise _TooDeep
    # The plain types first, by identity: this copies every tool schema and tool call of every sample.
    if cls is dict:
        return {_plain(k, depth): _plain(v, depth + 1) for k, v in value.items()}
    if cls is list:
        return [_plain(v, depth + 1) for v in value]
    if value is None or cls is int or cls is float or cls is bool:
        return value
    if isinstance(value, str):
        return _plain(str.__str__(value))
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k, depth): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return _plain(value.item(), depth)  # numpy scalars
    return _plain(f"<{type(value).__name__}>")  # a class name may hold reserved characters too


def _json_problem(value: Any, path: str, depth: int = 0) -> tuple[str, str] | None:
    """``(path, what)`` of the first part of ``value`` that is not a JSON value (a mapping with str keys,
    list, tuple, str, int, float, bool, None), or ``None``."""
    if value is None or isinstance(value, (str, int, float)):  # bool is an int
        return None
    if depth >= MAX_DEPTH:
        return path, f"nested deeper than {MAX_DEPTH} levels (or cyclic)"
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return path, f"a key of type {type(k).__name__} ({k!r:.40}); JSON keys are strings"
            found = _json_problem(v, f"{path}[{k!r:.40}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for n, v in enumerate(value):
            found = _json_problem(v, f"{path}[{n}]", depth + 1)
            if found:
                return found
        return None
    return path, f"a {type(value).__name__}, not a JSON value"


def _check_json(value: Any, path: str, index: int | None) -> None:
    found = _json_problem(value, path)
    if found:
        where = f"Message {index}: " if index is not None else ""
        msg = (
            f"{where}{found[0]} is {found[1]}. Tool-call arguments and tool schemas must be JSON values "
            "(mappings with string keys, lists, strings, numbers, booleans, None): the template writes anything "
            "else as its type's name, which the model would learn. Convert it (a set to a list, an array with "
            ".tolist())."
        )
        raise ConversationError(msg, message_index=index)


def _check_content(content: Any, index: int) -> None:
    if isinstance(content, str):
        return
    if isinstance(content, (list, tuple)):
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                msg = (
                    f"Message {index}: content part {j} is {part!r}; each part must be a mapping with a "
                    'string "type", such as {"type": "text", "text": "..."}.'
                )
                raise ConversationError(msg, message_index=index)
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                msg = f'Message {index}: text part {j} has no string "text" field (got {part.get("text")!r}).'
                raise ConversationError(msg, message_index=index)
        return
    msg = (
        f"Message {index}: content must be a string or a list of typed parts, "
        f"not {type(content).__name__} ({content!r:.80})."
    )
    raise ConversationError(msg, message_index=index)


def _check_tool_calls(tool_calls: Any, index: int) -> None:
    if not isinstance(tool_calls, (list, tuple)):
        msg = f"Message {index}: tool_calls must be a list, not {type(tool_calls).__name__}."
        raise ConversationError(msg, message_index=index)
    for j, call in enumerate(tool_calls):
        function = call.get("function", call) if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            msg = (
                f"Message {index}: tool call {j} is {call!r:.120}; expected "
                '{"type": "function", "function": {"name": str, "arguments": dict}}.'
            )
            raise ConversationError(msg, message_index=index)
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments)
            except RecursionError:
                msg = (
                    f"Message {index}: tool call {j} ({function['name']!r}) has arguments nested too deep to parse "
                    f"(a JSON string of {len(arguments)} characters)."
                )
                raise ConversationError(msg, message_index=index) from None
            except json.JSONDecodeError as exc:
                msg = (
                    f"Message {index}: tool call {j} ({function['name']!r}) has arguments that are not valid "
                    f"JSON: {exc}. Pass a dict, or a JSON object string."
                )
                raise ConversationError(msg, message_index=index) from None
            if not isinstance(parsed, dict):
                msg = f"Message {index}: tool call {j} arguments must be a JSON object, got {arguments!r:.80}."
                raise ConversationError(msg, message_index=index)
        elif not isinstance(arguments, Mapping):
            msg = (
                f"Message {index}: tool call {j} ({function['name']!r}) has arguments of type "
                f"{type(arguments).__name__}; pass a dict or a JSON object string."
            )
            raise ConversationError(msg, message_index=index)
        else:
            where = "function.arguments" if "function" in call else "arguments"
            _check_json(arguments, f"tool_calls[{j}].{where}", index)


def normalize_conversation(
    messages: Any,
    tools: Any = None,
    *,
    content_format: str = "text",
) -> Conversation:
    """Validate ``messages`` and ``tools`` and copy them into template data.

    Args:
        messages: OpenAI-style messages: mappings with ``role`` and ``content``
            (a string or a list of typed parts), optional ``tool_calls`` and
            ``reasoning_content``; optional ``"train"`` (a bool) and ``"weight"`` (a
            finite number >= 0), removed from what the template sees (``None``
            counts as absent).
        tools: JSON-schema tool definitions, or ``None``.
        content_format: ``"parts"`` wraps string content as one text part, for
            templates that only read typed parts (LLaVA's); ``"text"`` leaves it.

    Returns:
        The validated :class:`Conversation`.

    Raises:
        ConversationError: naming the message index and what to change.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        msg = (
            f"messages must be a list of mappings with 'role' and 'content', not {type(messages).__name__}. "
            "(For a dataset row, pass row['messages'].)"
        )
        raise ConversationError(msg)
    if len(messages) == 0:
        raise ConversationError("messages is empty; a conversation needs at least one message.")
    out: list[dict[str, Any]] = []
    roles: list[int] = []
    train: dict[int, bool] = {}
    weights: dict[int, float] = {}
    for i, message in enumerate(messages):
        # Fast path for the common message, {"role": str, "content": str}; same checks, fewer calls.
        if type(message) is dict and len(message) == 2:
            role = message.get("role")
            content = message.get("content")
            if type(content) is str and type(role) is str and role in _ROLE_CODE:
                if RESERVED.search(content):
                    _raise_reserved(i, content)
                out.append(
                    {
                        "role": role,
                        "content": [{"type": "text", "text": content}] if content_format == "parts" else content,
                    }
                )
                roles.append(_ROLE_CODE[role])
                continue
        if not isinstance(message, Mapping):
            msg = f"Message {i} is a {type(message).__name__} ({message!r:.80}); each message must be a mapping."
            raise ConversationError(msg, message_index=i)
        if type(message) is not dict:
            # Read once, as a plain dict: a mapping whose get() and items() disagree must not show the
            # checks one role and the template another.
            message = dict(message.items())
        role = message.get("role")
        if not isinstance(role, str):
            msg = f"Message {i} has no string 'role' (got {role!r}); use one of {sorted(ROLE_ALIASES)}."
            raise ConversationError(msg, message_index=i)
        if role not in ROLE_ALIASES:
            msg = f"Message {i} has unknown role {role!r}; use one of {sorted(ROLE_ALIASES)}."
            raise ConversationError(msg, message_index=i)
        content = message.get("content")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            _check_tool_calls(tool_calls, i)
        if content is None:
            if not tool_calls:
                msg = (
                    f"Message {i} ({role}) has no content. Only an assistant message with tool_calls may "
                    "omit it; use an empty string for an empty message."
                )
                raise ConversationError(msg, message_index=i)
        else:
            _check_content(content, i)
        if message.get("train") is not None:
            train[i] = _train_flag(message["train"], i)
        if message.get("weight") is not None:
            weights[i] = _weight(message["weight"], i)
        try:
            plain = {_plain(k): _plain(v) for k, v in message.items() if v is not None and k not in LABELMASK_KEYS}
        except _ReservedCharacter as exc:
            _raise_reserved(i, exc.args[0])
        except _TooDeep:
            msg = f"Message {i} holds a value nested deeper than {MAX_DEPTH} levels (or cyclic); flatten it."
            raise ConversationError(msg, message_index=i) from None
        if content_format == "parts" and isinstance(plain.get("content"), str):
            plain["content"] = [{"type": "text", "text": plain["content"]}]
        for key in _REASONING_FIELDS:
            reasoning = plain.get(key)
            if reasoning is not None:
                plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
                break
        out.append(plain)
        roles.append(_ROLE_CODE[role])
    if tools is not None:
        if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
            raise ConversationError(f"tools must be a list of JSON-schema dicts, not {type(tools).__name__}.")
        schemas = []
        for j, tool in enumerate(tools):
            if isinstance(tool, Mapping):
                _check_json(tool, f"tools[{j}]", None)
                try:
                    schemas.append(_plain(tool))
                except _ReservedCharacter as exc:
                    _raise_reserved(None, exc.args[0], f"tools[{j}]")
            elif callable(tool):
                from transformers.utils import get_json_schema

                try:
                    schemas.append(get_json_schema(tool))
                except Exception as exc:  # transformers' DocstringParsingException, TypeHintParsingException
                    name = getattr(tool, "__name__", type(tool).__name__)
                    msg = (
                        f"tools[{j}] ({name!r}) is a callable transformers cannot describe: {exc} Give it a "
                        "Google-style docstring with a description of each argument, or pass its JSON schema."
                    )
                    raise ConversationError(msg) from None
            else:
                raise ConversationError(f"tools[{j}] is a {type(tool).__name__}; pass a JSON-schema dict.")
        tools = schemas
    return Conversation(
        messages=out,
        roles=tuple(roles),
        tools=tools,
        train=tuple(train.get(i) for i in range(len(out))) if train else None,
        weights=tuple(weights.get(i, 1.0) for i in range(len(out))) if weights else None,
    )


def plain_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Template keyword arguments as plain data, as transformers passes them."""
    try:
        return {k: _plain(v) for k, v in kwargs.items()}
    except _ReservedCharacter as exc:
        _raise_reserved(None, exc.args[0], "A template argument")
    except _TooDeep:
        raise ConversationError(f"A template argument is nested deeper than {MAX_DEPTH} levels (or cyclic).") from None
