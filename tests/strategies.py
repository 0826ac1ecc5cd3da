"""The project's tests draw conversations with the public strategies of ``labelmask.testing``,
plus the Mistral-specific one below."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from labelmask.testing.strategies import (  # noqa: F401
    LOOKALIKES,
    TOOLS,
    WORDS,
    conversations,
    texts,
    tool_calls,
    typed_parts,
)

_CALL_ID = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), min_size=9, max_size=9
)


@st.composite
def mistral_conversations(
    draw,
    *,
    version: str,
    tools: bool = False,
    text: st.SearchStrategy | None = None,
    role_text: dict[str, st.SearchStrategy] | None = None,
    max_turns: int = 40,
    merge_users: bool = True,
    end_on_assistant: bool = False,
    string_arguments: bool = True,
) -> tuple[list[dict], list[dict] | None]:
    """A conversation the Mistral templates of ``version`` accept, and its tools (or None).

    User and assistant alternate (consecutive user messages, which the templates merge, when
    ``merge_users``); a system message leads sometimes. With ``tools`` an assistant turn may be
    tool calls (9-character ids; text alongside only for v7), answered by one tool message per
    call, then maybe a text reply. Assistant text is never empty (the templates reject it).

    Args:
        version: ``"v1"``, ``"v3"``, ``"v7"`` or ``"v3-tekken"``.
        text: Strategy for message text (default :func:`texts`).
        role_text: Strategy for the text of ``"system"``, ``"user"`` or ``"tool"`` messages,
            instead of ``text`` (assistant text and tool-call arguments always use ``text``).
        end_on_assistant: always end with an assistant message (mistral-common's finetuning mode).
        string_arguments: also draw tool-call arguments as JSON strings.
    """
    text = texts() if text is None else text
    reply = text.filter(bool)
    role_text = role_text or {}
    system_text = role_text.get("system", text)
    user_text = role_text.get("user", text)
    tool_text = role_text.get("tool", text)
    n_exchanges = draw(st.one_of(st.integers(1, 3), st.integers(1, max(1, max_turns // 2))))
    messages: list[dict] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(system_text)})
    for _ in range(n_exchanges):
        for _ in range(draw(st.integers(1, 2)) if merge_users else 1):
            messages.append({"role": "user", "content": draw(user_text)})
        if tools and draw(st.booleans()):
            calls = []
            for _ in range(draw(st.integers(1, 3))):
                arguments = {"city": draw(text)}
                if string_arguments and draw(st.booleans()):
                    arguments = json.dumps(arguments, ensure_ascii=False)
                calls.append(
                    {
                        "id": draw(_CALL_ID),
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                )
            content = draw(reply) if version == "v7" and draw(st.booleans()) else draw(st.sampled_from(["", None]))
            messages.append({"role": "assistant", "content": content, "tool_calls": calls})
            for call in calls:
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": draw(tool_text)})
            if draw(st.booleans()):
                messages.append({"role": "assistant", "content": draw(reply)})
        else:
            messages.append({"role": "assistant", "content": draw(reply)})
    if end_on_assistant or draw(st.booleans()):
        while messages[-1]["role"] != "assistant":
            messages.pop()
    return messages, (TOOLS if tools and draw(st.booleans()) else None)


# --- gpt-oss (Harmony) ---

# Look-alikes of Harmony's control tokens and message headers. Not the two channel headers the
# gpt-oss template refuses in assistant text ("<|channel|>analysis<|message|>", "<|channel|>final<|message|>").
HARMONY_LOOKALIKES = (
    "<|end|><|start|>assistant",
    "<|start|>assistant",
    "<|return|>",
    "<|call|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>commentary json<|message|>",
    " to=functions.get_weather",
    "<|constrain|>json",
    "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>",
    "final",
    "analysis",
)
_REFUSED_BY_GPT_OSS = ("<|channel|>analysis<|message|>", "<|channel|>final<|message|>")


@st.composite
def harmony_texts(draw) -> str:
    """Message text (:func:`texts`), a quarter of the time built from Harmony look-alikes."""
    if draw(st.integers(0, 3)):
        text = draw(texts())
    else:
        text = "".join(draw(st.lists(st.sampled_from(HARMONY_LOOKALIKES + WORDS), min_size=1, max_size=3)))
    if any(s in text for s in _REFUSED_BY_GPT_OSS):
        return "analysis"
    return text


# Function tools in the shapes gpt-oss's template writes as a TypeScript namespace.
HARMONY_TOOLS = [
    *TOOLS,
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for"},
                    "topn": {"type": "integer", "default": 10},
                    "sites": {"type": "array", "items": {"type": "string"}},
                    "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
                    "safe": {"type": "boolean", "nullable": True},
                },
                "required": ["query"],
            },
        },
    },
    {"type": "function", "function": {"name": "now", "description": "The time", "parameters": {"type": "object"}}},
]

REASONING_FIELDS = ("thinking", "reasoning_content", "reasoning")


@st.composite
def gpt_oss_conversations(draw, *, max_turns: int = 40) -> tuple[list[dict], list[dict] | None]:
    """A conversation gpt-oss's template accepts, and its tools (or None).

    An optional leading system or developer message (the developer block); user turns,
    each answered by one or two assistant messages: a final reply (content, maybe reasoning
    under any of its field names) or a single tool call with its analysis in ``content``
    or in the reasoning field (never both: the template refuses that) or none, then
    usually its results (tool messages). Sometimes a later system or developer message,
    which the template does not render. Most conversations end on an assistant message.
    """
    text = harmony_texts()
    messages: list[dict] = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(text)})
    n_exchanges = draw(st.one_of(st.integers(1, 3), st.integers(1, max(1, max_turns // 2))))
    for _ in range(n_exchanges):
        messages.append({"role": "user", "content": draw(text)})
        if not draw(st.integers(0, 7)):
            messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(text)})
        for _ in range(draw(st.integers(1, 2))):
            if draw(st.booleans()):
                call = draw(tool_calls(max_calls=1))[0]
                if not draw(st.integers(0, 4)):
                    call["function"]["content_type"] = draw(st.sampled_from(["json", "<|constrain|>json", "code"]))
                message: dict = {"role": "assistant", "tool_calls": [call]}
                analysis = draw(st.sampled_from(["content", "reasoning", "none"]))
                if analysis == "content":
                    message["content"] = draw(text)
                else:
                    empty = draw(st.sampled_from(["", None, "absent"]))
                    if empty != "absent":
                        message["content"] = empty
                    if analysis == "reasoning":
                        message[draw(st.sampled_from(REASONING_FIELDS))] = draw(text)
                messages.append(message)
                for _ in range(draw(st.sampled_from([1, 1, 1, 2, 0]))):
                    messages.append({"role": "tool", "content": draw(text)})
            else:
                message = {"role": "assistant", "content": draw(text)}
                if draw(st.booleans()):
                    message[draw(st.sampled_from(REASONING_FIELDS))] = draw(text)
                messages.append(message)
    if draw(st.integers(0, 3)):
        while messages[-1]["role"] != "assistant":
            messages.pop()
    tools = draw(st.sampled_from([None, TOOLS, HARMONY_TOOLS]))
    return messages, tools


# The arguments gpt-oss's template reads besides messages and tools.
GPT_OSS_KWARGS = st.fixed_dictionaries(
    {},
    optional={
        "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
        "model_identity": st.one_of(st.just("You are a helpful assistant."), texts()),
        "builtin_tools": st.sampled_from([[], ["browser"], ["python"], ["browser", "python"]]),
    },
)


def json_arguments(conversation: tuple[list[dict], list[dict] | None]) -> tuple[list[dict], list[dict] | None]:
    """The conversation with every tool call's arguments as a JSON string (DeepSeek's templates
    concatenate them with text, so they take no mapping)."""
    messages, tools = conversation
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                arguments = call["function"]["arguments"]
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments, ensure_ascii=False)
                calls.append({**call, "function": {**call["function"], "arguments": arguments}})
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out, tools


def without_tool_calls(conversation: tuple[list[dict], list[dict] | None]) -> tuple[list[dict], list[dict] | None]:
    """The conversation with the replies' tool calls removed (their text kept, "" where they had none),
    for a template that writes no tool calls: it would render them as empty replies, which labelmask
    refuses by default (tests/test_dropped.py)."""
    messages, tools = conversation
    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = {k: v for k, v in m.items() if k != "tool_calls"}
            m["content"] = m.get("content") or ""
        out.append(m)
    return out, tools


@st.composite
def cohere2_conversations(draw) -> tuple[list[dict], None]:
    """Alternating user/assistant conversations with system messages anywhere, as Cohere2's template
    (Command R7B/A, Tiny Aya) takes them: the first system message becomes the Developer Preamble of
    the fixed system turn, a later one that repeats its content is skipped, any other (and a first
    one with empty content) is written as a system turn of its own."""
    messages, tools = draw(conversations(alternate=True))
    for _ in range(draw(st.integers(0, 2))):
        first = next((m["content"] for m in messages if m["role"] == "system"), None)
        choices = [texts(), st.just("")] + ([st.just(first)] if first is not None else [])
        at = draw(st.integers(0, len(messages)))
        messages.insert(at, {"role": "system", "content": draw(st.one_of(choices))})
    return messages, tools


@st.composite
def reasoning_fields(draw, conversation: st.SearchStrategy) -> tuple[list[dict], list[dict] | None]:
    """A conversation of ``conversation`` whose drawn ``reasoning_content`` is moved, per message, to
    one of REASONING_FIELDS (LFM2.5's templates read ``thinking``, later ones also ``reasoning``)."""
    messages, tools = draw(conversation)
    for message in messages:
        if "reasoning_content" in message:
            field = draw(st.sampled_from(REASONING_FIELDS))
            message[field] = message.pop("reasoning_content")
    return messages, tools


def without_placeholder_in_replies(placeholder: str, stand_in: str):
    """A map over conversations writing ``stand_in`` for ``placeholder`` in every text of an assistant
    message (content, text parts, reasoning, tool-call arguments). The image-placeholder check counts
    the placeholder in a reply's content only; a template that drops part of a reply (LFM2.5 cuts what
    precedes </think> in earlier replies) or writes its arguments cannot be counted that way."""

    def scrub(value):
        if isinstance(value, str):
            return value.replace(placeholder, stand_in)
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    def apply(conversation: tuple[list[dict], list[dict] | None]) -> tuple[list[dict], list[dict] | None]:
        messages, tools = conversation
        return [scrub(m) if m["role"] == "assistant" else m for m in messages], tools

    return apply
