"""Dataset formats: the row shapes people train on, read as OpenAI messages.

A :class:`RowFormat` says which columns of a row hold the conversation and how to turn
them into ``(messages, tools)``, the input of :func:`mask_conversation`. Four formats:

- ``"messages"``: OpenAI messages in a ``messages`` column (TRL's conversational
  language-modelling form), tools in ``tools``.
- ``"sharegpt"``: LLaMA-Factory's ShareGPT: a ``conversations`` column of
  ``{"from": ..., "value": ...}``, roles ``human``, ``gpt``, ``system``,
  ``function_call`` (JSON text of one call ``{"name", "arguments"}`` or a list of them:
  an assistant message with ``tool_calls``) and ``observation`` (a ``tool`` message);
  optional ``system`` and ``tools`` (JSON text of bare function schemas) columns.
- ``"alpaca"``: ``instruction``, ``input``, ``output``, optional ``system`` and
  ``history`` ([user, assistant] pairs), read as LLaMA-Factory reads them: the user
  message is the instruction and the input joined by a newline.
- ``"prompt_completion"``: TRL's ``prompt`` and ``completion``, both lists of messages
  (the prompt's messages untrained, as TRL's completion-only loss) or both strings (one
  user message and its assistant reply, rendered with the chat template).

Column names follow LLaMA-Factory's ``dataset_info.json`` ``columns`` keys (``messages``,
``system``, ``tools``, ``prompt``, ``query``, ``response``, ``history``; TRL's
``completion``) and ShareGPT's ``tags`` keys (``role_tag``, ``content_tag``, ``user_tag``,
``assistant_tag``, ``observation_tag``, ``function_tag``, ``system_tag``), so an entry
of that file can be passed as it is.

Only ``errors`` is imported: the module is plain data handling, shared by
:func:`mask_dataset` and the CLI.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from labelmask.errors import ConversationError, OptionError

__all__ = ["FORMATS", "RowFormat", "resolve_format"]

FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion")

# Per format: column key -> default column name. The first keys are required, the rest optional.
_COLUMNS: dict[str, dict[str, str]] = {
    "messages": {"messages": "messages", "tools": "tools"},
    "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools"},
    "alpaca": {
        "prompt": "instruction",
        "response": "output",
        "query": "input",
        "system": "system",
        "history": "history",
        "tools": "tools",
    },
    "prompt_completion": {"prompt": "prompt", "completion": "completion", "tools": "tools"},
}
_REQUIRED = {"messages": ("messages",), "sharegpt": ("messages",), "alpaca": ("prompt", "response")}
_REQUIRED["prompt_completion"] = ("prompt", "completion")
_LABELS = {
    "messages": "OpenAI messages",
    "sharegpt": "ShareGPT",
    "alpaca": "Alpaca",
    "prompt_completion": "TRL prompt/completion",
}
COLUMN_KEYS = ("messages", "system", "tools", "prompt", "query", "response", "history", "completion")
TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
# Columns that say what a dataset is for when no format fits.
_OTHER_SHAPES = (
    ("chosen", "a preference dataset (chosen/rejected, for DPO or reward models), which has no single conversation"),
    ("rejected", "a preference dataset (chosen/rejected, for DPO or reward models), which has no single conversation"),
    ("text", "plain text for language modelling, which has no chat turns to mask"),
)


@dataclasses.dataclass(frozen=True)
class RowFormat:
    """How to read one row of a dataset as a conversation.

    Attributes:
        name: One of :data:`FORMATS`.
        columns: Column key -> column name, for the keys the format reads (see the module
            docstring), including optional columns the dataset may lack.
        tags: ShareGPT tag key -> value, or ``None`` for the defaults; given tags make every
            row of a messages column read as ShareGPT with them.
    """

    name: str
    columns: Mapping[str, str]
    tags: Mapping[str, str] | None = None

    @property
    def label(self) -> str:
        return _LABELS[self.name]

    def used(self, names: Collection[str]) -> list[str]:
        """The column names this format reads, among ``names`` (the dataset's columns)."""
        return [column for column in dict.fromkeys(self.columns.values()) if column in names]

    def message_columns(self) -> list[str]:
        """Columns that hold lists of OpenAI messages (Arrow may store their tool calls as structs)."""
        keys = {"messages": ("messages",), "prompt_completion": ("prompt", "completion")}.get(self.name, ())
        return [self.columns[key] for key in keys]

    def read(self, row: Mapping[str, Any]) -> tuple[Any, Any]:
        """``(messages, tools)`` for one row: a mapping of column name to value.

        Raises:
            ConversationError: the row does not have this format's shape; the message
                names the format and the column or key that is missing or wrong.
        """
        tools = self._value(row, "tools")
        if self.name in ("messages", "sharegpt"):
            messages = self._messages_list(row)
        elif self.name == "alpaca":
            messages = self._alpaca(row)
        else:
            messages = self._prompt_completion(row)
        if self.name in ("sharegpt", "alpaca"):  # LLaMA-Factory writes bare function schemas
            tools = _wrapped_tools(_json_tools(tools, self.columns["tools"]))
        return messages, tools

    # ------------------------------------------------------------------ per format

    def _value(self, row: Mapping[str, Any], key: str) -> Any:
        column = self.columns.get(key)
        return None if column is None else row.get(column)

    def _required(self, row: Mapping[str, Any], key: str) -> Any:
        value = self._value(row, key)
        if value is None:
            column = self.columns[key]
            present = column in row
            have = sorted(k for k in row if row[k] is not None)
            why = "is empty (None)" if present else "is missing"
            msg = f"{self.label} row: column {column!r} {why} (the row has {have})."
            raise ConversationError(msg)
        return value

    def _messages_list(self, row: Mapping[str, Any]) -> Any:
        messages = self._required(row, "messages")
        column = self.columns["messages"]
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            msg = f"{self.label} row: column {column!r} holds a {type(messages).__name__}, not a list of messages."
            raise ConversationError(msg)
        if self.tags is None and _shape(messages) == "messages":
            converted = list(messages)
        elif self.tags is None and _shape(messages) == "mixed":
            msg = (
                f"{self.label} row: column {column!r} mixes OpenAI messages (with 'role') and ShareGPT messages "
                "(with 'from'); use one shape per conversation."
            )
            raise ConversationError(msg)
        else:
            converted = _sharegpt(messages, {**TAGS, **(self.tags or {})}, column)
        system = self._value(row, "system")
        if system is not None and system != "":
            if not isinstance(system, str):
                msg = f"{self.label} row: column {self.columns['system']!r} holds a {type(system).__name__}, not text."
                raise ConversationError(msg)
            first = converted[0] if converted else None
            if isinstance(first, Mapping) and first.get("role") == "system":
                if first.get("content") != system:
                    msg = (
                        f"{self.label} row: both column {self.columns['system']!r} and message 0 give a system "
                        "prompt, and they differ; keep one."
                    )
                    raise ConversationError(msg, message_index=0)
            else:
                converted = [{"role": "system", "content": system}, *converted]
        return converted

    def _alpaca(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        system = self._value(row, "system")
        if system is not None and system != "":
            messages.append({"role": "system", "content": self._text(system, "system")})
        history = self._value(row, "history")
        if history is not None:
            column = self.columns["history"]
            if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
                kind = type(history).__name__
                msg = f"Alpaca row: column {column!r} holds a {kind}, not a list of [user, assistant] pairs."
                raise ConversationError(msg)
            for i, pair in enumerate(history):
                ok = isinstance(pair, Sequence) and not isinstance(pair, (str, bytes)) and len(pair) == 2
                if not ok or not all(isinstance(text, str) for text in pair):
                    msg = f"Alpaca row: {column}[{i}] is {pair!r:.80}; use [user, assistant] pairs of strings."
                    raise ConversationError(msg)
                messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        prompt = self._text(self._required(row, "prompt"), "prompt")
        query = self._value(row, "query")
        query = "" if query is None else self._text(query, "query")
        user = "\n".join(text for text in (prompt, query) if text)  # LLaMA-Factory: "instruction\ninput"
        response = self._text(self._required(row, "response"), "response")
        return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": response}]

    def _text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            msg = f"{self.label} row: column {self.columns[key]!r} holds a {type(value).__name__}, not text."
            raise ConversationError(msg)
        return value

    def _prompt_completion(self, row: Mapping[str, Any]) -> list[Any]:
        prompt = self._required(row, "prompt")
        completion = self._required(row, "completion")
        names = f"{self.columns['prompt']!r} and {self.columns['completion']!r}"
        if isinstance(prompt, str) and isinstance(completion, str):
            return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        if isinstance(prompt, str) or isinstance(completion, str):
            msg = (
                f"TRL prompt/completion row: columns {names} must both be strings (plain) or both lists "
                f"of messages (conversational), not a {type(prompt).__name__} and a {type(completion).__name__}."
            )
            raise ConversationError(msg)
        for key, value in (("prompt", prompt), ("completion", completion)):
            if isinstance(value, (bytes, Mapping)) or not isinstance(value, Sequence):
                kind = type(value).__name__
                msg = f"TRL prompt/completion row: column {self.columns[key]!r} holds a {kind}, not a list of messages."
                raise ConversationError(msg)
        # TRL trains the completion only: a prompt message is untrained unless it says otherwise.
        context = [_untrained(message) for message in prompt]
        return [*context, *completion]


def _untrained(message: Any) -> Any:
    if isinstance(message, Mapping) and message.get("train") is None:
        return {**message, "train": False}
    return message  # not a mapping: mask_conversation names it


def _shape(messages: Sequence[Any]) -> str:
    """``"messages"`` (every message has a ``role``), ``"sharegpt"`` (none has) or ``"mixed"``."""
    with_role = [isinstance(m, Mapping) and m.get("role") is not None for m in messages]
    if all(with_role):
        return "messages"
    with_from = [isinstance(m, Mapping) and m.get("from") is not None for m in messages]
    if any(with_role) and any(with_from):
        return "mixed"
    return "sharegpt"


def _sharegpt(messages: Sequence[Any], tags: Mapping[str, str], column: str) -> list[dict[str, Any]]:
    roles = {
        tags["user_tag"]: "user",
        tags["assistant_tag"]: "assistant",
        tags["system_tag"]: "system",
        tags["observation_tag"]: "tool",
        tags["function_tag"]: "function_call",
    }
    role_tag, content_tag = tags["role_tag"], tags["content_tag"]
    out = []
    for i, message in enumerate(messages):
        where = f"ShareGPT row: {column}[{i}]"
        if not isinstance(message, Mapping):
            raise ConversationError(f"{where} is a {type(message).__name__}, not a mapping.", message_index=i)
        tag, value = message.get(role_tag), message.get(content_tag)
        if tag is None or value is None:
            missing = role_tag if tag is None else content_tag
            have = sorted(k for k in message if message[k] is not None)
            shape = f"{{{role_tag!r}: ..., {content_tag!r}: ...}}"
            msg = f"{where} has no {missing!r} (it has {have}); ShareGPT messages are {shape}."
            raise ConversationError(msg, message_index=i)
        role = roles.get(tag)
        if role is None:
            known = ", ".join(repr(t) for t in roles)
            msg = (
                f"{where} has {role_tag}={tag!r}, which is none of {known}; map the dataset's roles with "
                "tags={'user_tag': ..., 'assistant_tag': ...} (LLaMA-Factory's dataset_info tags)."
            )
            raise ConversationError(msg, message_index=i)
        if role == "function_call":
            out.append({"role": "assistant", "content": "", "tool_calls": _tool_calls(value, where, i)})
        else:
            out.append({"role": role, "content": value})
    return out


def _tool_calls(value: Any, where: str, index: int) -> list[dict[str, Any]]:
    calls = value
    if isinstance(value, str):
        try:
            calls = json.loads(value)
        except json.JSONDecodeError as exc:
            msg = f"{where} is a function call whose value is not JSON ({exc.msg}, column {exc.colno}): {value!r:.80}."
            raise ConversationError(msg, message_index=index) from None
    calls = [calls] if isinstance(calls, Mapping) else calls
    if not isinstance(calls, list) or not calls:
        msg = f"{where} is a function call; its value must be one {{'name', 'arguments'}} object or a list of them."
        raise ConversationError(msg, message_index=index)
    out = []
    for call in calls:
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str) or "arguments" not in call:
            msg = f"{where} is a function call; {call!r:.80} is not a {{'name': str, 'arguments': ...}} object."
            raise ConversationError(msg, message_index=index)
        out.append({"type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}})
    return out


def _json_tools(tools: Any, column: str) -> Any:
    if isinstance(tools, str):
        if not tools.strip():
            return None
        try:
            return json.loads(tools)
        except json.JSONDecodeError as exc:
            raise ConversationError(f"Column {column!r} holds text that is not JSON ({exc.msg}).") from None
    return tools


def _wrapped_tools(tools: Any) -> Any:
    """Bare function schemas (``{"name", "parameters"}``) as OpenAI tools (``{"type": "function", "function": …}``)."""
    if isinstance(tools, Mapping):
        tools = [tools]
    if not isinstance(tools, list):
        return tools  # None, or something mask_conversation names
    if not tools:
        return None
    bare = [isinstance(t, Mapping) and "name" in t and "function" not in t for t in tools]
    return [{"type": "function", "function": dict(t)} if b else t for t, b in zip(tools, bare)]


# ---------------------------------------------------------------------- choosing a format


def check_mapping(argument: str, value: Any, known: Sequence[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise OptionError(f"{argument}= must be a mapping of names to strings, not {value!r:.80}.")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise OptionError(f"{argument}= has unknown keys {unknown}; use {', '.join(known)}.")
    return dict(value)


def resolve_format(
    names: Collection[str],
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    messages_column: str = "messages",
    tools_column: str = "tools",
    where: str = "The dataset",
) -> RowFormat:
    """The format of a dataset with columns ``names`` (or of a row with these keys).

    ``format`` (one of :data:`FORMATS`) is used as given; ``None`` takes the first of
    ``FORMATS`` whose required columns are all present. ``columns`` renames columns
    (``messages_column`` and ``tools_column`` are the defaults of the ``messages`` and
    ``tools`` keys); ``tags`` are ShareGPT's.

    Raises:
        OptionError: an unknown format, column key or tag key.
        ConversationError: no format fits, or the given one lacks a required column; the
            message names the format the columns resemble and the columns missing.
    """
    if format is not None and format not in FORMATS:
        raise OptionError(f"format={format!r}: use None (detect from the columns) or one of {', '.join(FORMATS)}.")
    renamed = check_mapping("columns", columns, COLUMN_KEYS)
    given_tags = check_mapping("tags", tags, tuple(TAGS)) or None
    candidates = {}
    for name in FORMATS:
        defaults = dict(_COLUMNS[name])
        if name == "messages":
            defaults["messages"] = messages_column
        defaults["tools"] = tools_column
        candidates[name] = RowFormat(
            name, {key: renamed.get(key, column) for key, column in defaults.items()}, given_tags
        )
        extra = sorted(set(renamed) - set(defaults))
        if format == name and extra:
            raise OptionError(f"columns= keys {extra} mean nothing for format={name!r}; it reads {sorted(defaults)}.")
    names = set(names)
    order = [format] if format is not None else list(FORMATS)
    for name in order:
        candidate = candidates[name]
        if all(candidate.columns[key] in names for key in _REQUIRED[name]):
            return candidate
    raise ConversationError(_unknown_shape(names, candidates, format, where))


def _unknown_shape(names: set[str], candidates: dict[str, RowFormat], format: str | None, where: str) -> str:
    def hits(name: str) -> int:
        read = set(candidates[name].columns.values()) - {candidates[name].columns["tools"]}
        return sum(column in names for column in read)

    best = format or max(FORMATS, key=lambda name: (hits(name), -FORMATS.index(name)))
    candidate = candidates[best]
    missing = [candidate.columns[key] for key in _REQUIRED[best] if candidate.columns[key] not in names]
    listed = sorted(names)
    if format is None and not hits(best):
        for column, shape in _OTHER_SHAPES:
            if column in names:
                return f"{where} (columns {listed}) looks like {shape}; labelmask masks conversations."
        formats = "; ".join(
            f"{candidates[n].label}: {', '.join(candidates[n].columns[k] for k in _REQUIRED[n])}" for n in FORMATS
        )
        return (
            f"{where} (columns {listed}) is in no format labelmask reads ({formats}). Name the columns with "
            "columns={...} and the format with format=... (the CLI's --column KEY=NAME and --format)."
        )
    keys = [key for key in _REQUIRED[best] if candidate.columns[key] not in names]
    rename = ", ".join(f"{key!r}: ..." for key in keys)
    resemble = "is read as" if format else "looks like"
    return (
        f"{where} (columns {listed}) {resemble} {candidate.label} but has no column {', '.join(map(repr, missing))}; "
        f"add it, or name the column that holds it with columns={{{rename}}} (the CLI's --column KEY=NAME)."
    )
