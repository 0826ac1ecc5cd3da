"""Hypothesis strategies for conversations.

Structure is drawn before content (how many turns, which roles, then the text),
so failures shrink to short conversations with short texts.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

# Strings that look like role markers or control tokens of the templates under test.
LOOKALIKES = (
    "ASSISTANT:",
    "USER:",
    " ASSISTANT: ",
    "<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>",
    "<|im_end|>",
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "<|eot_id|>",
    "<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>",
    "</s><s>[INST]",
    "<think>",
    "</think>",
    "<tool_call>",
    "<tool_response>",
    "<image>",
    "\n",
    "\n\n",
    " ",
    "  ",
    "\t",
)

# Full Unicode except surrogates (not encodable) and labelmask's reserved noncharacters.
_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters=[chr(c) for c in range(0xFDD0, 0xFDF0)])


# Ordinary words in several scripts; cheap to draw, so conversations can be long.
WORDS = ("Hello", "the cat sat", "42", "naïve café", "東京", "Привет", "🙂", "e\u0301", "x" * 40, "a,b;c", "\\n")


@st.composite
def texts(draw, *, min_size: int = 0) -> str:
    """Message text: full-Unicode runs, marker look-alikes, words, whitespace; sometimes empty."""
    kind = draw(st.sampled_from(["pieces", "pieces", "pieces", "unicode", "empty", "whitespace"]))
    if kind == "empty" and min_size == 0:
        return ""
    if kind == "whitespace":
        return draw(st.text(st.sampled_from(" \n\t"), min_size=max(1, min_size), max_size=4))
    if kind == "unicode":
        return draw(st.text(_CHARS, min_size=max(1, min_size), max_size=10))
    pieces = draw(st.lists(st.sampled_from(LOOKALIKES + WORDS), min_size=1, max_size=4))
    return "".join(pieces)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@st.composite
def tool_calls(draw, *, max_calls: int = 3, string_arguments: bool = True) -> list[dict]:
    n = draw(st.integers(1, max_calls))
    calls = []
    for _ in range(n):
        arguments = {"city": draw(texts())}
        if string_arguments and draw(st.booleans()):
            arguments = json.dumps(arguments, ensure_ascii=draw(st.booleans()))
        calls.append({"type": "function", "function": {"name": "get_weather", "arguments": arguments}})
    return calls


@st.composite
def conversations(
    draw,
    *,
    tools: bool = False,
    tool_role: bool = False,
    reasoning: bool = False,
    alternate: bool = False,
    system: bool = True,
    max_turns: int = 40,
    max_tool_calls: int = 3,
    tool_role_names: tuple[str, ...] = ("tool",),
    string_arguments: bool = True,
    image_roles: tuple[str, ...] = (),
    image_parts: tuple[dict, ...] = ({"type": "image"},),
) -> tuple[list[dict], list[dict] | None]:
    """A conversation with at least one assistant turn, and its tools (or None).

    Args:
        tools: draw tool definitions and assistant tool calls.
        tool_role: allow tool-result messages after a tool call.
        reasoning: draw reasoning (``reasoning_content`` or ``<think>`` in content).
        alternate: strict user/assistant alternation (Gemma).
        system: allow a leading system message.
        max_turns: most user/assistant exchanges.
        max_tool_calls: most tool calls in one assistant message (Llama 3.1: 1).
        tool_role_names: roles tool results are drawn with (Llama 3.1 also reads "ipython").
        string_arguments: also draw tool-call arguments as JSON strings, not only dicts
            (Llama 3.1's builtin-tool syntax iterates over a dict).
        image_roles: roles whose content may be drawn as typed parts: text parts and
            image parts (drawn from ``image_parts``) in any order, never an empty list.
    """
    # Mostly short conversations, sometimes up to max_turns messages of exchanges.
    n_exchanges = draw(st.one_of(st.integers(1, 3), st.integers(1, max(1, max_turns // 2))))
    messages: list[dict] = []
    if system and draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts())})
    for _ in range(n_exchanges):
        messages.append({"role": "user", "content": draw(texts())})
        n_replies = 1 if alternate else draw(st.integers(1, 2))
        for _ in range(n_replies):
            message: dict = {"role": "assistant", "content": draw(texts())}
            if reasoning and draw(st.booleans()):
                thought = draw(texts())
                if draw(st.booleans()):
                    message["reasoning_content"] = thought
                else:
                    message["content"] = f"<think>\n{thought}\n</think>\n\n" + message["content"]
            has_calls = tools and draw(st.booleans())
            if has_calls:
                message["tool_calls"] = draw(tool_calls(max_calls=max_tool_calls, string_arguments=string_arguments))
                if draw(st.booleans()):
                    message["content"] = ""
            messages.append(message)
            if has_calls and tool_role:
                for _ in range(len(message["tool_calls"])):
                    role = draw(st.sampled_from(tool_role_names)) if len(tool_role_names) > 1 else tool_role_names[0]
                    messages.append({"role": role, "content": draw(texts())})
    if alternate or not draw(st.booleans()):
        # End on an assistant turn most of the time (some templates require it).
        while messages[-1]["role"] != "assistant":
            messages.pop()
    for message in messages:
        if message["role"] in image_roles and draw(st.booleans()):
            message["content"] = draw(typed_parts(message["content"], image_parts))
    return messages, (TOOLS if tools and draw(st.booleans()) else None)


@st.composite
def typed_parts(draw, text: str, image_parts: tuple[dict, ...]) -> list[dict]:
    """Typed content: ``text`` as a text part (sometimes followed by another), and up to
    two image parts, shuffled; sometimes only images. Never an empty list."""
    n_images = draw(st.integers(0, 2))
    parts = [dict(draw(st.sampled_from(image_parts))) for _ in range(n_images)]
    if not n_images or draw(st.integers(0, 3)):
        parts.append({"type": "text", "text": text})
        if draw(st.booleans()):
            parts.append({"type": "text", "text": draw(texts())})
    return draw(st.permutations(parts))
