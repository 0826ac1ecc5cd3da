"""Stage 3: map character spans to tokens, giving every token its provenance.

The rendered text is a sequence of *segments* (runs of text between span
markers, each inside one part of one message). Tokens tile the text, so each
segment's tokens are a run, found with the tokenizer's ``char_to_token`` at the
segment's first character: per-token offsets are never materialised on the hot
path, and the work per conversation is a Python loop over its segments (a few
dozen) plus one ``np.repeat`` per per-token array, whatever the token count.

A token whose characters lie in one segment takes that segment's provenance.
A token that runs over several segments (a header's newline merged with the
reply's first characters) is a *straddle*: listed with the segments it covers,
and decided one by one by the policy. Per token, such a token takes the
provenance of its last character, so per-token arrays are the segments' values
repeated by how many tokens *end* in each segment.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from labelmask._encode import Encoded
from labelmask._parts import Part, Role
from labelmask._rendered import Rendered
from labelmask.errors import TokenizerError

__all__ = ["Aligned", "align", "first_tokens", "generated_segments"]

_HEADER_PART = int(Part.HEADER)
_NO_TOKENS = np.zeros(0, dtype=np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class Aligned:
    """Per-segment and per-token provenance of one rendered conversation.

    Per segment, as Python lists (a few dozen items; the policy walks them):

    Attributes:
        rendered: The render aligned; its segment table gives ``messages`` (the message of
            each segment, -1 for none) and ``parts`` (the :class:`Part` of each segment),
            as lists and, cached there, as arrays (``seg_message``, ``seg_part``).
        role_of: The :class:`Role` of each message, then ``Role.NONE`` (read by message -1).
        generated: True where a segment lies in its message's generated region:
            after the message's header (for an assistant turn, after the generation
            prompt) through its end-of-turn marker, or through the end of its turn
            when the template writes none.
        firsts: ``n_segments + 1`` ints: the first token of each segment (the one
            covering its first character), then the token count. The tokens that
            *end* in segment ``k`` are ``firsts[k]`` to ``firsts[k + 1] - 1``.
        straddles: ``(token, first segment, last segment)`` of every token that
            covers characters of more than one segment, in token order.
        unowned: Tokens that cover no text and belong to no message (a BOS the
            tokenizer of a processor adds); never trained.

    Made on first use: ``roles`` and ``counts`` (tokens ending in each segment);
    the same per segment as numpy arrays (``seg_message``, ``seg_role``,
    ``seg_part``, ``seg_generated``), and per token (``token_message``,
    ``token_role``, ``token_part``, ``first_seg``, ``last_seg``), are made on
    first use. A token that spans several parts takes the provenance of its last
    character: ``"\\n\\n\\n"`` merging a header's newline with content's is
    content, and ``"▁USER"`` merging a reply's trailing space with the next header
    is header.
    """

    rendered: Rendered
    role_of: list[int]
    generated: list[bool]
    firsts: list[int]
    straddles: tuple[tuple[int, int, int], ...]
    unowned: np.ndarray = dataclasses.field(default_factory=lambda: _NO_TOKENS)

    @property
    def n_tokens(self) -> int:
        return self.firsts[-1]

    @property
    def messages(self) -> list[int]:
        return self.rendered.messages

    @property
    def parts(self) -> list[int]:
        return self.rendered.parts

    @functools.cached_property
    def roles(self) -> list[int]:
        """The :class:`Role` of each segment."""
        role_of = self.role_of
        return [role_of[m] for m in self.messages]

    @functools.cached_property
    def counts(self) -> np.ndarray:
        """``int64[n_segments]``: how many tokens end in each segment (their last character is in it)."""
        firsts = np.array(self.firsts, dtype=np.int64)
        return firsts[1:] - firsts[:-1]

    def per_token(self, seg_values: list | np.ndarray, none: int | bool, dtype: type) -> np.ndarray:
        """``seg_values`` (one per segment) spread over the tokens, as ``dtype``; ``none`` for unowned tokens."""
        if not self.messages:
            return np.full(self.n_tokens, none, dtype=dtype)
        out = np.repeat(np.asarray(seg_values, dtype=dtype), self.counts)
        if len(self.unowned):
            out[self.unowned] = none
        return out

    @property
    def seg_message(self) -> np.ndarray:
        """``int32[n_segments]``."""
        return self.rendered.seg_message

    @functools.cached_property
    def seg_role(self) -> np.ndarray:
        """``int8[n_segments]``."""
        return np.array(self.roles, dtype=np.int8)

    @property
    def seg_part(self) -> np.ndarray:
        """``int8[n_segments]``."""
        return self.rendered.seg_part

    @functools.cached_property
    def seg_generated(self) -> np.ndarray:
        """``bool[n_segments]``."""
        return np.array(self.generated, dtype=bool)

    @functools.cached_property
    def token_message(self) -> np.ndarray:
        """``int32[n_tokens]`` message of each token, -1 for none."""
        return self.per_token(self.messages, -1, np.int32)

    @functools.cached_property
    def token_role(self) -> np.ndarray:
        """``int8[n_tokens]`` :class:`Role` of each token."""
        return self.per_token(self.roles, int(Role.NONE), np.int8)

    @functools.cached_property
    def token_part(self) -> np.ndarray:
        """``int8[n_tokens]`` :class:`Part` of each token."""
        return self.per_token(self.parts, int(Part.NONE), np.int8)

    @functools.cached_property
    def last_seg(self) -> np.ndarray:
        """``int64[n_tokens]`` last segment each token covers (-1 for an unowned token)."""
        return self.per_token(np.arange(len(self.messages)), -1, np.int64)

    @functools.cached_property
    def first_seg(self) -> np.ndarray:
        """``int64[n_tokens]`` first segment each token covers (``> last_seg`` for an unowned token)."""
        first = self.per_token(np.arange(len(self.messages)), 0, np.int64)
        for token, start, _ in self.straddles:
            first[token] = start
        return first

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


def generated_segments(rendered: Rendered, roles: tuple[int, ...]) -> list[bool]:
    """Per segment: whether it lies in its message's generated region (after the message's
    header through the end of its end-of-turn marker, or of its turn when there is none)."""
    n_messages = len(roles)
    n_chars = len(rendered.text)
    bounds = rendered.bounds
    parts = rendered.parts
    # Row n_messages (read by message -1) stands for "no message": an empty region.
    lo = [-1] * n_messages + [n_chars]
    hi = [n_chars] * n_messages + [0]
    for m, (_, end) in rendered.headers.items():
        lo[m] = end
    for m, (_, end) in rendered.eots.items():
        hi[m] = end
    # Span edges are segment edges, so a segment is wholly inside or outside its region.
    return [
        bounds[k] >= lo[m] and bounds[k + 1] <= hi[m] and parts[k] != _HEADER_PART
        for k, m in enumerate(rendered.messages)
    ]


def first_tokens(encoded: Encoded, bounds: list[int]) -> tuple[list[int], dict[int, list[int]]]:
    """Where the tokens of each run of text begin.

    Args:
        bounds: Where each run starts (the first at 0), then the text's length.

    Returns:
        ``(firsts, straddles)``: ``firsts`` has the first token of each run (the one
        covering its first character), then the token count, so the tokens that *end*
        in run ``k`` are ``firsts[k]`` to ``firsts[k + 1] - 1``; ``straddles`` maps each
        token that covers characters of several runs to ``[first run, last run]``.

    Raises:
        TokenizerError: the tokenizer maps characters to tokens out of order.
    """
    n_runs = len(bounds) - 1
    n_tokens = len(encoded.id_list)
    straddles: dict[int, list[int]] = {}
    if not n_tokens:
        return [0] * n_runs + [0], straddles
    firsts = [0] if n_runs else []  # the first run starts at character 0, which the first token covers
    # A Python loop over the runs (a few dozen; each numpy call would cost more), asking the
    # tokenizer's alignment only at run starts.
    encoding = encoded.encoding
    char_to_token = encoding.char_to_token
    token_to_chars = encoding.token_to_chars
    previous = 0
    for k in range(1, n_runs):
        start = pos = bounds[k]
        token = char_to_token(pos)
        # A character no token claims (a normalizer composed e + U+0301 into one character, so
        # the token stops before the accent) belongs to the token before it.
        while token is None and pos > 0:
            pos -= 1
            token = char_to_token(pos)
        if token is None:
            token = 0
        if token < previous:
            msg = (
                "The tokenizer maps characters to tokens out of order (degenerate offsets): labelmask cannot "
                "tell which characters each token covers. Check the tokenizer's normalizer and "
                "post-processor (trim_offsets), or report it."
            )
            raise TokenizerError(msg)
        if token_to_chars(token)[0] < start:
            # This token also covers the previous run's end: it straddles.
            span = straddles.get(token)
            if span is None:
                straddles[token] = [k - 1, k]
            else:
                span[1] = k
        firsts.append(token)
        previous = token
    firsts.append(n_tokens)
    return firsts, straddles


def align(rendered: Rendered, encoded: Encoded, roles: tuple[int, ...], unowned: np.ndarray | None = None) -> Aligned:
    """Give every segment and token its message, role and part.

    Args:
        unowned: Tokens that cover no text (a BOS the tokenizer added), owned by no message.

    Raises:
        TokenizerError: the tokenizer maps characters to tokens out of order.
    """
    firsts, straddles = first_tokens(encoded, rendered.bounds)
    return Aligned(
        rendered=rendered,
        role_of=[*roles, int(Role.NONE)],
        generated=generated_segments(rendered, roles),
        firsts=firsts,
        straddles=tuple((token, a, b) for token, (a, b) in straddles.items()),
        unowned=_NO_TOKENS if unowned is None or not len(unowned) else np.asarray(unowned, dtype=np.int64),
    )
