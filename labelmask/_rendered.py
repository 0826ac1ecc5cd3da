"""The rendered text and where each message's parts are in it: the data every stage after render reads.

No Jinja here: the alignment, policy, edit and vision stages import this module, not
``_render``, so they never load the template engine.

The marker codec. An annotated template wraps every tagged block in private sentinel
characters (written by ``_render``'s span extension); :func:`decode` strips them in one
pass and records where each block began and ended in the stripped text. Every marker is
``OPEN`` then one code character: ``CLOSE`` ends the innermost span; a kind character opens
a span of that kind, one of U+FDD2.. when the span names no message (it takes the enclosing
one), one of U+FDE0.. when it does, then followed by one character that is the message index
(see :func:`index_char`). So the render splits on ``OPEN`` alone (a ``str.split``, several
times cheaper than a regular expression) and each piece says by its first one or two
characters what marker it follows. The index character is read by its place, never searched
for, so message text may contain such characters; the markers' own range, U+FDD0..U+FDEF
(:data:`RESERVED`), may not appear in input.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from itertools import islice
from typing import NamedTuple

import numpy as np

from labelmask._parts import Part
from labelmask.errors import AnnotationError

__all__ = [
    "CLOSE",
    "CLOSE_MARKER",
    "INDEXED_CHAR",
    "INDEX_BMP",
    "INDEX_CHARS",
    "KINDS",
    "KIND_CHAR",
    "OPEN",
    "RESERVED",
    "TURN_KIND",
    "Rendered",
    "Span",
    "decode",
    "index_char",
    "named_spans",
]

OPEN = "\ufdd0"
CLOSE = "\ufdd1"
RESERVED = re.compile("[\ufdd0-\ufdef]")
"""The characters labelmask reserves for span markers (Unicode noncharacters): refused in input."""
KINDS = ("turn",) + tuple(p.name.lower() for p in Part if p is not Part.NONE)
KIND_CHAR = {k: chr(0xFDD2 + i) for i, k in enumerate(KINDS)}  # a span that names no message
INDEXED_CHAR = {k: chr(0xFDE0 + i) for i, k in enumerate(KINDS)}  # a span that names one
TURN_KIND = -1
"""The kind code of a ``turn`` span in :attr:`Rendered.spans` (parts use their :class:`Part` value)."""
# Message i is written as chr(0x4E00 + i) (CJK ideographs: no filter such as upper() or trim
# changes them), and from message 20992 on as chr(0x20000 + i - 20992).
_INDEX_BASE = 0x4E00
INDEX_BMP = 0xA000 - _INDEX_BASE
INDEX_CHARS = [chr(_INDEX_BASE + i) for i in range(INDEX_BMP)]
CLOSE_MARKER = OPEN + CLOSE
assert max(map(ord, INDEXED_CHAR.values())) <= 0xFDEF, "span kinds overflow the reserved range"


def index_char(index: int) -> str:
    """The character that writes message ``index`` into a marker."""
    if 0 <= index < INDEX_BMP:
        return INDEX_CHARS[index]
    if INDEX_BMP <= index < 0xE0000 - 0x20000 + INDEX_BMP:
        return chr(0x20000 + index - INDEX_BMP)
    raise AnnotationError(f"a span names message {index}, which is out of range")


def _index_of(char: str) -> int:
    code = ord(char)
    return code - _INDEX_BASE if code < 0x20000 else code - 0x20000 + INDEX_BMP


def _code_table() -> dict[str, tuple[int, int, bool]]:
    """code character -> (kind code, part of the text directly inside such a span, names a message)."""
    table = {}
    for kind in KINDS:
        codes = (TURN_KIND, int(Part.TEMPLATE)) if kind == "turn" else (int(Part[kind.upper()]),) * 2
        table[KIND_CHAR[kind]] = (*codes, False)
        table[INDEXED_CHAR[kind]] = (*codes, True)
    return table


_CODES = _code_table()
_HEADER_PART = int(Part.HEADER)
_EOT_PART = int(Part.EOT)


class Span(NamedTuple):
    """One tagged block: ``text[start:end]`` is ``kind`` (``"turn"`` or a part name) of message ``message``."""

    kind: str
    message: int
    start: int
    end: int


@dataclasses.dataclass(frozen=True, eq=False)
class Rendered:
    """The rendered text and where each message's parts are in it.

    Segments are the non-empty runs of text between span markers; they tile the
    text, and each lies wholly inside one part of one message. The segment table is
    kept as Python lists (a conversation has a few dozen segments, and the stages
    after this one walk them in Python); ``seg_start``, ``seg_message`` and
    ``seg_part`` are the same as numpy arrays, made on first use.

    Attributes:
        text: The rendered conversation, identical to the stock template's render.
        bounds: ``n_segments + 1`` ints, where each segment starts, then ``len(text)``.
        messages: The message of each segment, -1 for none.
        parts: The :class:`Part` of each segment.
        headers: ``{message index: (start, end)}`` of each message's header span (the last one if several).
        eots: ``{message index: (start, end)}`` of each message's end-of-turn span.
        spans: Every tagged block as ``(kind, message, start, end)``, kind a
            :class:`Part` value or -1 for a turn (see :func:`named_spans`).
    """

    text: str
    bounds: list[int]
    messages: list[int]
    parts: list[int]
    headers: dict[int, tuple[int, int]]
    eots: dict[int, tuple[int, int]]
    spans: tuple[tuple[int, int, int, int], ...]

    @functools.cached_property
    def seg_start(self) -> np.ndarray:
        """``int64[n_segments + 1]``: :attr:`bounds` as an array."""
        return np.array(self.bounds, dtype=np.int64)

    @functools.cached_property
    def seg_message(self) -> np.ndarray:
        """``int32[n_segments]``: :attr:`messages` as an array."""
        return np.array(self.messages, dtype=np.int32)

    @functools.cached_property
    def seg_part(self) -> np.ndarray:
        """``int8[n_segments]``: :attr:`parts` as an array."""
        return np.array(self.parts, dtype=np.int8)


def decode(raw: str, name: str, *, n_messages: int, inherit_orphans: bool = False) -> Rendered:
    """Strip the span markers from an annotated render and locate every part.

    Args:
        raw: The render, markers included.
        name: The annotated template's name, for error messages.
        n_messages: Number of messages, to validate the indices spans name.
        inherit_orphans: A part span outside every turn that names no message belongs
            to the message of the span closed last (for ``{% generation %}`` blocks
            written after a template's loop); otherwise it is an error.

    Raises:
        AnnotationError: span tags are unbalanced or name a message that does not exist.
    """
    chunks = raw.split(OPEN)
    # chunks[0] is the text before the first marker; every other chunk starts with a marker's code.
    # Segments: the non-empty pieces of text between markers, each taking the message and part of
    # the innermost open span. (Lists, not numpy: a few dozen items; one loop over the markers.)
    first = chunks[0]
    pieces = [first]
    pos = len(first)
    bounds = [0] if pos else []
    seg_message = [-1] if pos else []
    seg_part = [0] if pos else []
    spans: list[tuple[int, int, int, int]] = []  # (kind, message, start, end), in the order spans close
    headers: dict[int, tuple[int, int]] = {}
    eots: dict[int, tuple[int, int]] = {}
    stack: list[tuple[int, int, int, int]] = []  # (kind, message, start, part of the text inside)
    top_message, top_part = -1, 0
    codes = _CODES
    add_piece, add_bound, add_message, add_part = pieces.append, bounds.append, seg_message.append, seg_part.append
    push, pop, close = stack.append, stack.pop, spans.append
    try:
        for chunk in islice(chunks, 1, None):
            code = chunk[0]
            if code == CLOSE:
                piece = chunk[1:]
                if not stack:
                    _raise_unbalanced(name)
                kind, message, start, _ = pop()
                close((kind, message, start, pos))
                if kind == _HEADER_PART:
                    headers[message] = (start, pos)
                elif kind == _EOT_PART:
                    eots[message] = (start, pos)
                if stack:
                    _, top_message, _, top_part = stack[-1]
                else:
                    top_message, top_part = -1, 0
            else:
                kind, top_part, indexed = codes[code]
                if indexed:
                    message = _index_of(chunk[1])
                    piece = chunk[2:]
                    if not 0 <= message < n_messages:
                        msg = f"annotated template {name!r}: a span names message {message}, but there are {n_messages}"
                        raise AnnotationError(msg, template=name)
                else:
                    piece = chunk[1:]
                    message = top_message
                    if message == -1 and kind != TURN_KIND:
                        message = spans[-1][1] if inherit_orphans and spans else -1
                        if message == -1:
                            msg = (
                                f"annotated template {name!r}: a {Part(kind).name.lower()!r} span is outside every "
                                "turn and names no message"
                            )
                            raise AnnotationError(msg, template=name)
                push((kind, message, pos, top_part))
                top_message = message
            if piece:
                add_piece(piece)
                add_bound(pos)
                add_message(top_message)
                add_part(top_part)
                pos += len(piece)
    except (IndexError, KeyError):
        # A marker cut short or a stray code: a filter or slice reached into a span's output.
        _raise_unbalanced(name)
    if stack:
        _raise_unbalanced(name)
    text = "".join(pieces)
    bounds.append(len(text))
    return Rendered(text, bounds, seg_message, seg_part, headers, eots, tuple(spans))


def _raise_unbalanced(name: str) -> None:
    msg = (
        f"annotated template {name!r}: span markers are unbalanced, so a filter or slice cut through a span's "
        "output. Apply filters inside spans, never to text that contains one."
    )
    raise AnnotationError(msg, template=name)


def named_spans(raw: tuple[tuple[int, int, int, int], ...]) -> tuple[Span, ...]:
    """Readable :class:`Span` tuples from :attr:`Rendered.spans`, sorted by start (outer spans first)."""
    named = (Span("turn" if k == TURN_KIND else Part(k).name.lower(), m, a, b) for k, m, a, b in raw)
    return tuple(sorted(named, key=lambda s: (s.start, -s.end)))
