"""Edits to a rendered conversation, keeping every span exact.

Two things change the text after the template rendered it: a processor expands
each image placeholder into the image's token run (``<image>`` becomes 576
``<image>`` for LLaVA-1.5), and ``add_eos=True`` writes the tokenizer's EOS after
each reply of a template that writes no end of turn. Each is an :class:`Edit`:
replace ``text[start:end]`` (empty for an insertion) with new text, which becomes
a segment of its own with a given part. Segments, headers, end-of-turn spans and
the span table move with the text.

Where a position equals an insertion point, a span that *ends* there stays
before the inserted text and a span that *starts* there moves after it: an EOS
inserted where a reply's content ends follows the content, and the text after
it (LLaVA's separating space) stays outside the reply.
"""

from __future__ import annotations

from itertools import accumulate
from typing import NamedTuple

import numpy as np

from labelmask._parts import Part
from labelmask._rendered import TURN_KIND, Rendered
from labelmask.errors import AnnotationError

__all__ = ["Edit", "apply_edits", "eos_edits", "shift_spans"]

_EOT_PART = int(Part.EOT)
_HEADER_PART = int(Part.HEADER)


class Edit(NamedTuple):
    """Replace ``text[start:end]`` with ``text``, a new segment of ``part`` owned by
    ``message`` (``None``: the message of the segment it lands in)."""

    start: int
    end: int
    text: str
    part: int
    message: int | None = None


def apply_edits(rendered: Rendered, edits: list[Edit], *, name: str) -> Rendered:
    """The rendered conversation with ``edits`` (sorted, not overlapping) applied.

    Raises:
        AnnotationError: an edit replaces text across a segment boundary (a span
            tag inside an image placeholder).
    """
    if not edits:
        return rendered
    text = rendered.text
    n_chars = len(text)
    seg_start = rendered.bounds
    seg_message = rendered.messages
    seg_part = rendered.parts
    pieces: list[str] = []
    lengths: list[int] = []
    messages: list[int] = []
    parts: list[int] = []
    added: list[tuple[int, int, int, int]] = []  # new spans (kind, message, start, end), in new coordinates
    out_pos = 0

    def emit(piece: str, message: int, part: int) -> None:
        nonlocal out_pos
        if piece:
            pieces.append(piece)
            lengths.append(len(piece))
            messages.append(message)
            parts.append(part)
            out_pos += len(piece)

    j = 0
    for k in range(len(seg_message)):
        a, b = seg_start[k], seg_start[k + 1]
        pos = a
        while j < len(edits) and edits[j].start < b:
            edit = edits[j]
            if edit.start < pos or edit.end > b:
                msg = (
                    f"template {name!r}: an edit of characters {edit.start}..{edit.end} crosses a span boundary "
                    "(a span tag inside an image placeholder?). Tag the whole placeholder as one image span."
                )
                raise AnnotationError(msg, template=name)
            emit(text[pos : edit.start], seg_message[k], seg_part[k])
            owner = seg_message[k] if edit.message is None else edit.message
            added.append((edit.part, owner, out_pos, out_pos + len(edit.text)))
            emit(edit.text, owner, edit.part)
            pos = edit.end
            j += 1
        emit(text[pos:b], seg_message[k], seg_part[k])
    for edit in edits[j:]:  # insertions at the very end
        if edit.start != n_chars:
            raise AnnotationError(f"template {name!r}: an edit at {edit.start} lies outside the text.", template=name)
        owner = -1 if edit.message is None else edit.message
        added.append((edit.part, owner, out_pos, out_pos + len(edit.text)))
        emit(edit.text, owner, edit.part)

    starts = np.array([e.start for e in edits], dtype=np.int64)
    ends = np.array([e.end for e in edits], dtype=np.int64)
    deltas = np.array([len(e.text) - (e.end - e.start) for e in edits], dtype=np.int64)
    replaces = starts < ends

    def shift(positions: list[int], *, is_end: bool) -> list[int]:
        p = np.asarray(positions, dtype=np.int64)[:, None]
        moved = (ends < p) | ((ends == p) & replaces) if is_end else ends <= p
        return (p[:, 0] + (moved * deltas).sum(axis=1)).tolist()

    def moved_pairs(pairs: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        if not pairs:
            return {}
        keys = list(pairs)
        new_starts = shift([pairs[m][0] for m in keys], is_end=False)
        new_ends = shift([pairs[m][1] for m in keys], is_end=True)
        return {m: (s, e) for m, s, e in zip(keys, new_starts, new_ends)}

    spans = list(rendered.spans)
    if spans:
        new_starts = shift([s[2] for s in spans], is_end=False)
        new_ends = shift([s[3] for s in spans], is_end=True)
        spans = [(kind, m, s, e) for (kind, m, _, _), s, e in zip(spans, new_starts, new_ends)]
    eots = moved_pairs(rendered.eots)
    for kind, m, s, e in added:
        if kind == _EOT_PART and m >= 0:
            eots[m] = (s, e)
            # An end of turn inserted where its message's turn ended belongs to that turn.
            spans = [(k, o, a, e if (k == TURN_KIND and o == m and b == s) else b) for k, o, a, b in spans]
    return Rendered(
        text="".join(pieces),
        bounds=[0, *accumulate(lengths)],
        messages=[int(m) for m in messages],
        parts=[int(p) for p in parts],
        headers=moved_pairs(rendered.headers),
        eots=eots,
        spans=tuple(spans) + tuple(added),
    )


def eos_edits(
    rendered: Rendered, roles: tuple[int, ...], assistant: int, eos: str, only: int | None = None
) -> list[Edit]:
    """Insertions of ``eos`` after each reply (role code ``assistant``) that has no end-of-turn span
    (``only``: after that message alone, if it is such a reply).

    The EOS goes where the reply's last part (content, reasoning or tool calls)
    ends; a reply with none of them gets it after its header.
    """
    last_end: dict[int, int] = {}
    for kind, m, _, end in rendered.spans:
        if 0 <= m < len(roles) and roles[m] == assistant and kind not in (TURN_KIND, _HEADER_PART, _EOT_PART):
            last_end[m] = max(end, last_end.get(m, -1))
    edits = []
    for m, role in enumerate(roles):
        if role != assistant or m in rendered.eots or (only is not None and m != only):
            continue
        at = last_end.get(m, rendered.headers.get(m, (None, None))[1])
        if at is not None:
            edits.append(Edit(at, at, eos, _EOT_PART, m))
    return sorted(edits)


def shift_spans(spans: tuple[tuple[int, int], ...], edits: list[Edit]) -> tuple[tuple[int, int], ...]:
    """``spans`` (sorted, each inside one segment, none across an edit) moved as :func:`apply_edits` moves
    the text: a span starting where text is inserted moves after it."""
    shifts = list(accumulate(len(e.text) - (e.end - e.start) for e in edits))
    out = []
    j = 0
    for a, b in spans:
        while j < len(edits) and edits[j].start <= a:
            j += 1
        d = shifts[j - 1] if j else 0
        out.append((a + d, b + d))
    return tuple(out)
