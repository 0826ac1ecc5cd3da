"""Stage 3: map character spans to tokens, giving every token its provenance.

The rendered text is a sequence of *segments* (runs of text between span
markers, each inside one part of one message). A token covers a contiguous run
of segments, found with two ``searchsorted`` calls; whether that run contains a
segment of some class is a prefix-sum lookup over segments. Which tokens touch
each segment comes from the tokenizer's ``char_to_token`` at segment starts, so
per-token offsets are never materialised on the hot path. Everything is numpy
over tokens and segments, never a Python loop over either.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from labelmask._encode import Encoded
from labelmask._parts import Part, Role
from labelmask._render import Rendered

__all__ = ["Aligned", "align"]

_HEADER = int(Part.HEADER)


@dataclasses.dataclass(frozen=True)
class Aligned:
    """Per-segment and per-token provenance of one rendered conversation.

    Attributes:
        seg_message: ``int32[n_segments]`` message of each segment, -1 for none.
        seg_role: ``int8[n_segments]`` :class:`Role` of each segment.
        seg_part: ``int8[n_segments]`` :class:`Part` of each segment.
        seg_generated: ``bool[n_segments]``, True where a segment lies in its
            message's generated region: after the message's header (for an
            assistant turn, after the generation prompt) through its end-of-turn
            marker, or through the end of its turn when the template writes none.
        first_seg: ``int64[n_tokens]`` first segment each token covers.
        last_seg: ``int64[n_tokens]`` last segment each token covers (``< first_seg``
            for a token that covers no character).
        token_message: ``int32[n_tokens]`` message of each token, -1 for none.
        token_role: ``int8[n_tokens]`` :class:`Role` of each token.
        token_part: ``int8[n_tokens]`` :class:`Part` of each token.

    A token that spans several parts takes the provenance of its last character:
    ``"\\n\\n\\n"`` merging a header's newline with content's is content, and
    ``"▁USER"`` merging a reply's trailing space with the next header is header.
    """

    seg_message: np.ndarray
    seg_role: np.ndarray
    seg_part: np.ndarray
    seg_generated: np.ndarray
    first_seg: np.ndarray
    last_seg: np.ndarray
    token_message: np.ndarray
    token_role: np.ndarray
    token_part: np.ndarray

    def touches(self, seg_class: np.ndarray, n_classes: int) -> np.ndarray:
        """``bool[n_tokens, n_classes]``: which tokens cover a segment of each class.

        Args:
            seg_class: ``int[n_segments]``, a class in ``range(n_classes)`` for each segment.
        """
        n = len(seg_class)
        counts = np.zeros((n + 1, n_classes), dtype=np.int32)
        counts[np.arange(1, n + 1), seg_class] = 1
        np.cumsum(counts, axis=0, out=counts)
        return counts[self.last_seg + 1] > counts[self.first_seg]


def align(rendered: Rendered, encoded: Encoded, roles: tuple[int, ...]) -> Aligned:
    """Give every segment and token its message, role and part."""
    n_messages = len(roles)
    seg_start = rendered.seg_start
    message = rendered.seg_message
    n_segments = len(message)
    # Per message: its generated region, from the end of its header to the end of its
    # end-of-turn marker. Row n_messages stands for "no message": an empty region.
    n_chars = len(rendered.text)
    lo = [-1] * n_messages + [n_chars]
    hi = [n_chars] * n_messages + [0]
    for m, (_, end) in rendered.headers.items():
        lo[m] = end
    for m, (_, end) in rendered.eots.items():
        hi[m] = end
    # Per segment, in Python: a segment holds many characters, so this loop is small next to
    # tokenizing them, and cheaper than a dozen numpy calls on a short conversation.
    role_of = [*roles, -1]
    starts = seg_start.tolist()
    generated = []
    seg_roles = []
    for k, (m, part) in enumerate(zip(message.tolist(), rendered.seg_part.tolist())):
        # Span edges are segment edges, so a segment is wholly inside or outside its region.
        generated.append(starts[k] >= lo[m] and starts[k + 1] <= hi[m] and part != _HEADER)
        seg_roles.append(role_of[m])  # -1 (no message) reads the last row
    seg_generated = np.array(generated, dtype=bool)
    seg_role = np.array(seg_roles, dtype=np.int8)

    # Token t covers segment k iff seg_first[k] <= t <= seg_last[k]; both are non-decreasing.
    seg_first, seg_last = encoded.boundary_tokens(seg_start)
    tokens = np.arange(len(encoded.ids))
    first_seg = np.searchsorted(seg_last, tokens, side="left")
    last_seg = np.searchsorted(seg_first, tokens, side="right") - 1
    if n_segments:
        # Tokens tile the text, so every token covers a segment: 0 <= first_seg <= last_seg.
        token_message = message[last_seg]
        token_role = seg_role[last_seg]
        token_part = rendered.seg_part[last_seg]
    else:
        token_message = np.full(len(tokens), -1, dtype=np.int32)
        token_role = np.full(len(tokens), Role.NONE, dtype=np.int8)
        token_part = np.zeros(len(tokens), dtype=np.int8)
    return Aligned(
        seg_message=message,
        seg_role=seg_role,
        seg_part=rendered.seg_part,
        seg_generated=seg_generated,
        first_seg=first_seg,
        last_seg=last_seg,
        token_message=token_message,
        token_role=token_role,
        token_part=token_part,
    )
