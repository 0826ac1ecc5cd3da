"""What a conversation carries that its render does not show.

Chat templates leave data out without a word: Qwen3, Qwen3.5+, DeepSeek R1 and gpt-oss write the
reasoning of earlier replies nowhere; Phi-3 writes no tool calls at all (the reply renders empty,
and its end of turn would be trained as if the model had answered nothing); most templates drop a
tool result's ``tool_call_id`` and many its ``name``. :func:`not_rendered` finds, per message, the
fields the message carries with text in them and the render does not show inside that message's
spans; the pipeline puts them in the sample's report, warns once per template and field, and
refuses a trained reply whose tool calls are gone (``Policy(on_dropped_tool_calls=...)``).

A field counts as shown when its text occurs in the text from the first to the last span that
names its message (a turn and its parts): the stripped text of ``content`` (each text part), ``reasoning_content``,
``name`` and ``tool_call_id``, and each tool call's function name. Text a template writes encoded
as JSON (``| tojson``) is looked for in that form too. Images: the message's image parts against
its image placeholder spans. Without an annotation, only messages whose turn the derivation located
are looked at, and images are not (the derivation has no image spans).
"""

from __future__ import annotations

import json
import re
from typing import Any

from labelmask._parts import Part
from labelmask._rendered import Rendered

__all__ = ["FIELDS", "not_rendered"]

FIELDS = ("content", "reasoning", "tool_calls", "images", "name", "tool_call_id")
"""The fields :func:`not_rendered` looks at, in the order a report lists them."""

_IMAGE = int(Part.IMAGE)
_TAG = re.compile(r"<[^<>\s]{1,40}>")
_ESCAPED = re.compile(r'["\\\x00-\x1f]')  # characters JSON writes escaped
_IMAGE_TYPES = frozenset({"image", "image_url"})


def not_rendered(
    messages: list[dict[str, Any]], rendered: Rendered, *, derived: bool = False
) -> tuple[tuple[int, str], ...]:
    """``(message index, field)`` for each field a message carries and the render does not show.

    Args:
        messages: The normalized messages (as the template saw them).
        rendered: Their render, with the spans that name each message.
        derived: The spans were derived without an annotation: a message with no span is one
            whose place the derivation did not locate (not one the template dropped), and there
            are no image spans to count.
    """
    # Where each message's spans begin and end (its turn holds its parts; a part a template writes
    # outside the turn, GLM's end of turn, widens it).
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    images: dict[int, int] = {}
    for kind, message, start, end in rendered.spans:
        if message < 0:
            continue
        if start < first.get(message, start + 1):
            first[message] = start
        if end > last.get(message, -1):
            last[message] = end
        if kind == _IMAGE:
            images[message] = images.get(message, 0) + 1
    text = rendered.text
    found: list[tuple[int, str]] = []
    for index, message in enumerate(messages):
        if index in first:
            shown = _Region(text, first[index], last[index])
        elif derived:
            continue
        else:
            shown = _Region(text, 0, 0)
        content = message.get("content")
        if isinstance(content, str):
            if not _shows(shown, content):
                found.append((index, "content"))
        elif isinstance(content, list):
            texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if not all(_shows(shown, t) for t in texts if isinstance(t, str)):
                found.append((index, "content"))
            n_images = sum(1 for p in content if isinstance(p, dict) and p.get("type") in _IMAGE_TYPES)
            if n_images > images.get(index, 0) and not derived:
                found.append((index, "images"))
        if len(message) == 2 and "content" in message:
            continue  # {"role", "content"}: the common message has nothing more to look at
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str) and not _shows(shown, reasoning):
            found.append((index, "reasoning"))
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            for call in calls:
                function = call.get("function", call) if isinstance(call, dict) else None
                name = function.get("name") if isinstance(function, dict) else None
                if isinstance(name, str) and name not in shown:
                    found.append((index, "tool_calls"))
                    break
        for field in ("name", "tool_call_id"):
            value = message.get(field)
            if isinstance(value, str) and not _shows(shown, value):
                found.append((index, field))
    return tuple(found)


class _Region:
    """``text[start:end]`` for ``in`` tests, without copying it."""

    __slots__ = ("end", "start", "text")

    def __init__(self, text: str, start: int, end: int):
        self.text, self.start, self.end = text, start, end

    def __contains__(self, needle: str) -> bool:
        return self.text.find(needle, self.start, self.end) >= 0


def _shows(shown: _Region, value: str) -> bool:
    """Whether ``value``'s text (stripped) is in ``shown``, as written or JSON-encoded; empty text is.

    Text that templates take apart at tags (Qwen3 moves what precedes ``</think>`` in a reply's
    content into its reasoning block) is shown when every piece between tags is.
    """
    needle = value.strip()
    if not needle or needle in shown:
        return True
    if _ESCAPED.search(needle) or not needle.isascii():
        encoded = json.dumps(needle, ensure_ascii=False)[1:-1]
        if encoded != needle and encoded in shown:
            return True
        ascii_encoded = json.dumps(needle)[1:-1]
        if ascii_encoded != encoded and ascii_encoded in shown:
            return True
    if "<" not in needle:
        return False
    pieces = [p.strip() for p in _TAG.split(needle)]
    return len(pieces) > 1 and all(p in shown for p in pieces if p)
