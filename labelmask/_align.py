"""Stage 3: map character spans to tokens, giving every token its provenance.

Everything here is numpy over per-character arrays. Whether a token touches a set
of characters is a prefix-sum lookup: ``prefix[end] - prefix[start] > 0``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from labelmask._encode import Encoded
from labelmask._parts import Part, Role
from labelmask._render import Rendered

__all__ = ["Aligned", "align"]


@dataclasses.dataclass(frozen=True)
class Aligned:
    """Per-character and per-token provenance of one rendered conversation.

    Attributes:
        starts: ``int64[n_tokens]`` first character of each token.
        ends: ``int64[n_tokens]`` one past the last character of each token.
        char_message: ``int32[n_chars]`` message of each character, -1 for none.
        char_role: ``int8[n_chars]`` :class:`Role` of each character.
        char_part: ``int8[n_chars]`` :class:`Part` of each character.
        char_generated: ``bool[n_chars]``, True where a character lies in its
            message's generated region: after the message's header (for an
            assistant turn, after the generation prompt) through its end-of-turn
            marker, or through the end of its turn when the template writes none.
        token_message: ``int32[n_tokens]`` message of each token, -1 for none.
        token_role: ``int8[n_tokens]`` :class:`Role` of each token.
        token_part: ``int8[n_tokens]`` :class:`Part` of each token.

    A token that spans several parts takes the provenance of its last character:
    ``"\\n\\n\\n"`` merging a header's newline with content's is content, and
    ``"▁USER"`` merging a reply's trailing space with the next header is header.
    """

    starts: np.ndarray
    ends: np.ndarray
    char_message: np.ndarray
    char_role: np.ndarray
    char_part: np.ndarray
    char_generated: np.ndarray
    token_message: np.ndarray
    token_role: np.ndarray
    token_part: np.ndarray

    def touches(self, char_mask: np.ndarray) -> np.ndarray:
        """``bool[n_tokens]``: which tokens overlap at least one character where ``char_mask`` is True."""
        prefix = np.zeros(len(char_mask) + 1, dtype=np.int64)
        np.cumsum(char_mask, out=prefix[1:])
        return prefix[self.ends] > prefix[self.starts]


def align(rendered: Rendered, encoded: Encoded, roles: tuple[Role, ...]) -> Aligned:
    """Give every character and token its message, role and part."""
    n_chars = len(rendered.text)
    n_messages = len(roles)
    message = rendered.char_message
    # Per message: where its generated region starts and ends (as character positions).
    lo = np.full(n_messages + 1, -1, dtype=np.int64)
    hi = np.full(n_messages + 1, n_chars, dtype=np.int64)
    for m, (_, end) in rendered.headers.items():
        lo[m] = end
    for m, (_, end) in rendered.eots.items():
        hi[m] = end
    has_message = message >= 0
    m_or_last = np.where(has_message, message, n_messages)  # index n_messages is a sentinel row
    positions = np.arange(n_chars)
    char_generated = has_message & (positions >= lo[m_or_last]) & (positions < hi[m_or_last])
    char_generated &= rendered.char_part != Part.HEADER

    role_of = np.array([*roles, Role.NONE], dtype=np.int8)
    char_role = role_of[m_or_last]

    starts = encoded.offsets[:, 0]
    ends = encoded.offsets[:, 1]
    if n_chars:
        last_char = np.clip(np.maximum(ends - 1, starts), 0, n_chars - 1)
        token_message = message[last_char]
        token_role = char_role[last_char]
        token_part = rendered.char_part[last_char]
    else:
        token_message = np.full(len(starts), -1, dtype=np.int32)
        token_role = np.full(len(starts), Role.NONE, dtype=np.int8)
        token_part = np.zeros(len(starts), dtype=np.int8)
    return Aligned(
        starts=starts,
        ends=ends,
        char_message=message,
        char_role=char_role,
        char_part=rendered.char_part,
        char_generated=char_generated,
        token_message=token_message,
        token_role=token_role,
        token_part=token_part,
    )
