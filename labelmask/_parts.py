"""Codes for roles and parts, shared by every stage.

Per-token provenance is returned as small integers so it fits in numpy arrays and
torch tensors; these enums decode them (``Part(result["part"][i]).name``).
"""

from __future__ import annotations

import enum

__all__ = ["ROLE_ALIASES", "Part", "Role"]


class Role(enum.IntEnum):
    """Who wrote a message; the code stored in ``result["role"]``."""

    NONE = -1  # template text that belongs to no message (BOS, a tools preamble)
    SYSTEM = 0  # system prompt ("system", "developer")
    USER = 1  # the human turn
    ASSISTANT = 2  # the model's turn: what training usually targets
    TOOL = 3  # a tool result ("tool", "ipython", "function")


# Role strings accepted in messages, and the code each one is stored as.
ROLE_ALIASES: dict[str, Role] = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
    "tool": Role.TOOL,
    "ipython": Role.TOOL,
    "function": Role.TOOL,
}


class Part(enum.IntEnum):
    """Which part of a message a character or token comes from; ``result["part"]``.

    The names double as the span kinds an annotated template may use
    (``{% span "content" %}``), lower-cased.
    """

    NONE = 0  # template text outside every message
    HEADER = 1  # the role header; for an assistant turn, the generation prompt
    CONTENT = 2  # the message's text
    REASONING = 3  # a reasoning block, with its tags (<think>...</think>)
    TOOL_CALLS = 4  # tool calls, with the syntax the template wraps them in
    EOT = 5  # the end-of-turn marker written after the message (<|im_end|>, <|eot_id|>)
    TEMPLATE = 6  # other template text inside a message's turn (separators, newlines)
    IMAGE = 7  # image placeholders and image-structure tokens; never trained
    # An empty reasoning block the template wrote into a reply whose message carried no reasoning
    # (Qwen3.5's, Nemotron 3's <think>\n\n</think>): not the model's words; trained only under
    # Policy(empty_reasoning=True), see Policy.
    EMPTY_REASONING = 8
