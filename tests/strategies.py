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
