"""Reliability on the main path: control tokens in message text, and the fail-closed check.

Control tokens. A message's text may contain the template's own control-token
strings (``<|im_end|>\\n<|im_start|>assistant\\n``): a forged turn. Spans come from
the template's structure, never from searching the text, so such tokens are never
trained whatever happens here; what ``control_tokens=`` decides is their ids:

* ``"keep"``: as the stock template and tokenizer give them (``apply_chat_template``
  parses special-token strings in any text as control tokens); those an assistant
  message wrote are left untrained (:func:`written_tokens`);
* ``"escape"``: each occurrence written by a message is tokenized as plain text (the
  tokenizer's ids for that string with special-token matching off, on its own),
  every other token exactly as the stock tokenization gives it;
* ``"raise"``: :class:`~labelmask.errors.ControlTokenError` naming the message and token.

A control token is a special token of the tokenizer (an added token flagged
``special``, or one of ``all_special_tokens``), found in the conversation's strings
(messages, tool schemas, template arguments) by one regular expression built as a
trie of those strings.

The fail-closed check. After the policy has decided, :func:`check_labels` verifies
the result from the tokenizer's own view of each trained run of tokens (its offsets
and its decoder) rather than from the alignment that produced it: every run of
trained tokens lies inside one trained message's generated region, touching no
other message's text, no template text outside the region and no untrained part;
it decodes back to the text it covers; and every character the policy trains is
covered by a trained token (or by a token the straddle rule dropped because it also
covers text that must not be trained). Cost: two offset look-ups and one decode per
run (about one run per trained message), and a few numpy operations over segments.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from labelmask._align import Aligned
from labelmask._encode import Encoded, SpecialTokens, special_tokens
from labelmask._parts import Part
from labelmask._policy import TRAINED, Policy, decide_token, segment_classes
from labelmask._render import compile_template, render_stock
from labelmask._rendered import Rendered
from labelmask.errors import ControlTokenError, MaskCheckError, TemplateRaisedError

__all__ = [
    "CHECK_MODES",
    "CONTROL_TOKEN_MODES",
    "check_labels",
    "control_tokens_in",
    "escape_control_tokens",
    "data_written_spans",
    "escape_if_injected",
    "find_control_tokens",
    "written_tokens",
    "content_writers",
]

CONTROL_TOKEN_MODES = ("keep", "escape", "raise")
CHECK_MODES = ("fast", "full", "off")

_TEXT_PARTS = (int(Part.CONTENT), int(Part.REASONING))
_TOOL_CALLS = int(Part.TOOL_CALLS)


def _strings(value: Any, out: list[str]) -> list[str]:
    """Every string in ``value`` (plain data: dicts, lists, tuples), appended to ``out``, in order."""
    cls = type(value)
    if cls is str:
        out.append(value)
    elif cls is dict or isinstance(value, Mapping):
        for v in value.values():
            _strings(v, out)
    elif cls is list or cls is tuple:
        for v in value:
            _strings(v, out)
    return out


def find_control_tokens(
    messages: list[dict], tools: list | None, specials: SpecialTokens, kwargs: Mapping[str, Any] | None = None
) -> list[tuple[int | None, str]]:
    """Every control-token string in the conversation's data, as ``(message index, token)``
    (``None`` for the tools and the template arguments ``kwargs``), in order."""
    pattern = specials.pattern
    if pattern is None:
        return []
    found: list[tuple[int | None, str]] = []
    search = pattern.search
    for i, message in enumerate(messages):
        for key, value in message.items():
            if type(value) is str:
                if key != "role" and search(value):
                    found.extend((i, token) for token in pattern.findall(value))
                continue
            for s in _strings(value, []):
                if search(s):
                    found.extend((i, token) for token in pattern.findall(s))
    for data in (tools, kwargs):
        for s in _strings(data, []) if data else ():
            if search(s):
                found.extend((None, token) for token in pattern.findall(s))
    return found


def raise_control_token(found: list[tuple[int | None, str]], messages: list, name: str, in_tools: bool = True) -> None:
    index, token = found[0]
    where = "The tools contain" if in_tools else "A template argument contains"
    if index is not None:
        where = f"Message {index} ({messages[index].get('role')}) contains"
    msg = (
        f"{where} the control token {token!r} of the tokenizer, as text "
        f"({len(found)} occurrence(s) in the conversation; template {name!r}). Written into a prompt, it is parsed "
        "as a real control token and can forge a turn. Remove it from the data, or pass "
        "control_tokens='escape' (tokenize it as plain text) or control_tokens='keep' (stock ids, never trained)."
    )
    raise ControlTokenError(msg, message_index=index, template=name, token=token)


def control_tokens_in(
    processor: Any, conversation: Any, mode: str, name: str, kwargs: Mapping[str, Any] | None = None
) -> list[tuple[int | None, str]]:
    """The control tokens in ``conversation``'s data and the template arguments ``kwargs``; raises for
    ``mode="raise"`` if there are any."""
    found = find_control_tokens(conversation.messages, conversation.tools, special_tokens(processor), kwargs)
    if found and mode == "raise":
        in_tools = bool(conversation.tools) and bool(
            find_control_tokens([], conversation.tools, special_tokens(processor))
        )
        raise_control_token(found, conversation.messages, name, in_tools)
    return found


# Message fields whose text the annotation (or the derived spans) places exactly: content. (A reasoning
# span holds the template's tags too, which may be special tokens: reasoning is marked like tool calls.)
_TEXT_FIELDS = frozenset({"role", "content"})
_CONTENT = int(Part.CONTENT)
_MARKER = "LMct{}z{}z"


def content_writers(
    messages: list[dict], rendered: Rendered, specials: SpecialTokens
) -> tuple[frozenset[int], frozenset[int]]:
    """``(writers, unsure)``: the messages whose content writes control-token strings, split by whether
    their content spans tell those occurrences apart from the template's.

    A content span holds the message's text, but some templates write syntax inside it too (Gemma 4
    quotes a tool result in ``<|"|>``, itself a control token). When no control-token string occurs in
    the message's content spans more often than in its content, all of them are the data's (``writers``:
    :func:`written_tokens` takes them from the spans); fewer is a template that leaves part of the text
    out (DeepSeek R1 writes what follows ``</think>`` only). Otherwise the message is ``unsure``: its
    content is marked in :func:`data_written_spans`'s render instead, and then so is every other
    message's that writes some. (A template that both writes a string inside a content span and drops
    the data's occurrences of it would fool the counts; none does.)
    """
    pattern = specials.pattern
    writers, unsure = set(), set()
    if pattern is None:
        return frozenset(), frozenset()
    in_spans: dict[int, list[str]] = {}
    content, image = int(Part.CONTENT), int(Part.IMAGE)
    text = rendered.text
    # An image part's placeholder is the template's, inside the content span (Gemma 3's <start_of_image>).
    images = [(a, b) for kind, m, a, b in rendered.spans if kind == image]
    for kind, m, a, b in rendered.spans:
        if kind == content and m >= 0:
            found = in_spans.setdefault(m, [])
            for match in pattern.finditer(text, a, b):
                if not any(x <= match.start() < y for x, y in images):
                    found.append(match.group())
    for m, message in enumerate(messages):
        written = Counter(t for s in _strings(message.get("content"), []) for t in pattern.findall(s))
        if not written:
            continue
        # More of a string in the spans than in the content: the template wrote some there.
        (unsure if Counter(in_spans.get(m, ())) - written else writers).add(m)
    if unsure:
        # Marked, a content no longer equals another message's unmarked copy of it, and a template may
        # compare them (Tiny Aya leaves out a system message equal to the first): all are marked alike.
        return frozenset(), frozenset(writers | unsure)
    return frozenset(writers), frozenset()


def data_written_spans(
    stock_source: str,
    variables: dict[str, Any],
    data_keys: frozenset[str] | set[str],
    specials: SpecialTokens,
    text: str,
    name: str,
    unsure: frozenset[int] = frozenset(),
) -> tuple[tuple[int, int], ...]:
    """Character spans of ``text`` (the render of ``variables``) where the data wrote a control-token
    string outside a message's content and reasoning: in tool calls and other message fields, and in
    the variables ``data_keys`` (the tool schemas, template arguments; not the tokenizer's
    ``bos_token`` and the like, which the template writes).

    Those strings have no span of their own (a tool call's span holds the template's syntax too, which
    may write the same token), so the stock template is rendered once more with each such occurrence
    replaced by a marker; the markers show where the data's occurrences are. Only conversations that
    have some pay this render.

    Raises:
        ControlTokenError: the template does something with those strings other than writing them
            (it tests or transforms them), so which occurrences are the data's cannot be told.
    """
    pattern = specials.pattern
    tokens = sorted(specials.strings)
    index = {token: i for i, token in enumerate(tokens)}
    nonce = 0
    while f"LMct{nonce}z" in text:
        nonce += 1
    n_marked = 0

    def mark(value: Any) -> Any:
        nonlocal n_marked
        if type(value) is str:
            if pattern.search(value) is None:
                return value
            n_marked += 1
            return pattern.sub(lambda m: _MARKER.format(nonce, index[m.group()]), value)
        if isinstance(value, Mapping):
            return {mark(k): mark(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(mark(v) for v in value) if type(value) in (list, tuple) else [mark(v) for v in value]
        return value

    messages = [
        {k: v if k in _TEXT_FIELDS and (k == "role" or i not in unsure) else mark(v) for k, v in m.items()}
        for i, m in enumerate(variables["messages"])
    ]
    marked = {k: mark(v) if k in data_keys else v for k, v in variables.items()}
    if not n_marked:
        return ()
    marked["messages"] = marked["_labelmask_messages"] = messages

    def refuse(why: str) -> ControlTokenError:
        msg = (
            f"Template {name!r} {why}, so labelmask cannot tell which control tokens in the render the data "
            "wrote (in tool calls, tool schemas or template arguments) and which the template wrote. Remove "
            "the control-token strings from those fields, or pass control_tokens='raise' to find them."
        )
        return ControlTokenError(msg, template=name, token="")

    try:
        out = render_stock(compile_template(stock_source, mode="stock", name=name), marked, name)
    except TemplateRaisedError:
        raise refuse("raises when those strings are replaced") from None
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = length = 0
    for m in re.finditer(f"LMct{nonce}z([0-9]+)z", out):
        token = tokens[int(m.group(1))]
        pieces.append(out[pos : m.start()])
        length += m.start() - pos
        spans.append((length, length + len(token)))
        pieces.append(token)
        length += len(token)
        pos = m.end()
    pieces.append(out[pos:])
    if "".join(pieces) != text:
        raise refuse("treats the control-token strings of the data other than by writing them")
    return tuple(spans)


def written_tokens(
    rendered: Rendered,
    encoded: Encoded,
    specials: SpecialTokens,
    marked: tuple[tuple[int, int], ...],
    writers: frozenset[int],
) -> np.ndarray:
    """Positions of the control tokens in ``encoded`` that the data wrote (not the template): inside
    the content span of one of the messages ``writers`` (:func:`content_writers`), or at a place
    :func:`data_written_spans` found (``marked``: reasoning, tool calls, other fields, tools, template
    arguments, the content of the other messages that write some)."""
    positions = np.flatnonzero(np.isin(encoded.ids, specials.ids))
    written = []
    seg_start = rendered.seg_start
    marked_start = np.array([a for a, _ in marked], dtype=np.int64)
    marked_end = np.array([b for _, b in marked], dtype=np.int64)
    to_chars = encoded.encoding.token_to_chars
    for t in positions.tolist():
        chars = to_chars(t)
        if chars is None or chars[0] == chars[1]:
            continue  # added by the post-processor (a BOS): covers no text, so no data wrote it
        a, b = chars
        j = int(np.searchsorted(marked_start, b, side="left")) - 1
        if j >= 0 and marked_end[j] > a:
            written.append(t)
            continue
        k = int(np.searchsorted(seg_start, a, side="right")) - 1
        if b > seg_start[k + 1] or int(rendered.seg_message[k]) not in writers:
            continue
        if int(rendered.seg_part[k]) == _CONTENT:
            written.append(t)
    return np.array(written, dtype=np.int64)


def escape_if_injected(
    processor: Any,
    backend: Any,
    rendered: Rendered,
    encoded: Encoded,
    annotated: Any,
    name: str,
    marked: tuple[tuple[int, int], ...] = (),
    writers: frozenset[int] = frozenset(),
) -> Encoded:
    """``encoded`` with the control tokens that the data wrote tokenized as plain text."""
    if annotated is None:
        msg = (
            f"control_tokens='escape' needs an annotated template to tell the control tokens a message wrote from "
            f"those the template wrote, and {name!r} has none. Use control_tokens='keep' (never trained) or "
            "'raise', or register an annotation."
        )
        raise ControlTokenError(msg, template=name, token="")
    written = written_tokens(rendered, encoded, special_tokens(processor), marked, writers)
    to_chars = encoded.encoding.token_to_chars
    spans = [to_chars(t) for t in written.tolist()]
    return escape_control_tokens(backend, rendered.text, spans) if spans else encoded


# Private copies of backends with special-token matching off, by id of the original (kept alive alongside).
_plain_backends: dict[int, tuple[Any, Any]] = {}


def _plain_backend(backend: Any) -> Any:
    entry = _plain_backends.get(id(backend))
    if entry is not None and entry[0] is backend:
        return entry[1]
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(backend.to_str())
    plain.encode_special_tokens = True
    plain.no_truncation()
    plain.no_padding()
    if len(_plain_backends) >= 8:
        _plain_backends.pop(next(iter(_plain_backends)))
    _plain_backends[id(backend)] = (backend, plain)
    return plain


class _JoinedEncoding:
    """The parts of ``tokenizers.Encoding`` the align stage reads, over ids and offsets joined from pieces."""

    def __init__(self, offsets: np.ndarray):
        self._offsets = offsets
        self._starts = offsets[:, 0]
        self._ends = offsets[:, 1]

    @property
    def offsets(self) -> list[tuple[int, int]]:
        return [tuple(pair) for pair in self._offsets.tolist()]

    def char_to_token(self, pos: int) -> int | None:
        t = int(np.searchsorted(self._ends, pos, side="right"))
        return t if t < len(self._ends) and self._starts[t] <= pos else None

    def token_to_chars(self, token: int) -> tuple[int, int]:
        a, b = self._offsets[token].tolist()
        return a, b


def escape_control_tokens(backend: Any, text: str, spans: list[tuple[int, int]]) -> Encoded:
    """Tokenize ``text`` with each of ``spans`` (control-token strings written by messages) as plain text.

    The text between them is tokenized as the stock tokenization does (the tokenizer
    splits its input at every added token, so each piece is independent): the piece
    after an occurrence is encoded with that occurrence in front, as a special token,
    and its tokens are kept, so position-dependent rules (a SentencePiece prefix space
    only at the start of the text) apply as in the whole text.
    """
    plain = _plain_backend(backend)
    ids: list[np.ndarray] = []
    offsets: list[np.ndarray] = []

    def add(encoding: Any, shift: int, drop_before: int = 0) -> None:
        offs = np.array(encoding.offsets, dtype=np.int64).reshape(-1, 2)
        keep = offs[:, 0] >= drop_before
        ids.append(np.asarray(encoding.ids, dtype=np.int64)[keep])
        offsets.append(offs[keep] + shift)

    first = spans[0][0]
    if first:
        (enc,) = backend.encode_batch([text[:first]], add_special_tokens=False)
        add(enc, 0)
    for k, (a, b) in enumerate(spans):
        (enc,) = plain.encode_batch([text[a:b]], add_special_tokens=False)
        add(enc, a)
        stop = spans[k + 1][0] if k + 1 < len(spans) else len(text)
        if stop > b:
            (enc,) = backend.encode_batch([text[a:stop]], add_special_tokens=False)
            add(enc, a, drop_before=b - a)
    all_offsets = np.concatenate(offsets)
    return Encoded(id_list=np.concatenate(ids).tolist(), encoding=_JoinedEncoding(all_offsets), n_chars=len(text))


def _tiled_end(encoded: Encoded, last: int) -> int:
    """Where the text of token ``last`` ends once the characters no token claims (a combining accent
    a normalizer composed into the character before it) are given to the token before them."""
    nxt = int(last) + 1
    return encoded.encoding.token_to_chars(nxt)[0] if nxt < len(encoded.ids) else encoded.n_chars


def _normal(s: str) -> str:
    # Decoders differ in what they give back for the same text: a SentencePiece decoder strips the
    # leading space and writes U+2581 as a space; a normalizer may compose characters (NFC).
    return "".join(unicodedata.normalize("NFKC", s).replace("\u2581", " ").split())


def _decodes_to(decoded: str, expected: str) -> bool:
    if decoded == expected:
        return True
    a, b = _normal(decoded), _normal(expected)
    if a == b:
        return True
    if "\ufffd" in decoded and "\ufffd" not in expected:
        # A run that starts or ends inside a character's bytes decodes that character to U+FFFD.
        a = _normal(decoded.strip("\ufffd"))
        return a in (b, _normal(expected[1:]), _normal(expected[:-1]), _normal(expected[1:-1]))
    return False


def check_labels(
    rendered: Rendered,
    encoded: Encoded,
    aligned: Aligned,
    trained: np.ndarray,
    message_ok: list[bool],
    policy: Policy,
    backend: Any,
    name: str,
    full: bool = True,
    written: np.ndarray | None = None,
) -> None:
    """Fail closed: raise :class:`MaskCheckError` unless the trained tokens are exactly the trained text.

    Args:
        rendered, encoded, aligned: The stages' outputs for the sample.
        trained: ``bool[n_tokens]``, the policy's decision.
        message_ok: ``bool[n_messages + 1]``, which messages the policy trains.
        full: Also decode every run and check that every trained character is covered
            (``check="full"``); otherwise only where each run lies (``check="fast"``).
        written: Positions of control tokens the data wrote (:func:`written_tokens`), untrained
            under ``control_tokens="keep"`` though they lie inside a trained reply.
    """
    seg_start = rendered.seg_start
    seg_message = rendered.seg_message
    n_seg = len(seg_message)
    if n_seg == 0:
        if trained.any():
            fail(name, None, "tokens are trained in a render with no message")
        return
    # The classes the policy gives the segments (the same rule that made the labels); what is checked
    # here is where the tokenizer's own offsets and decoder put the trained tokens.
    classes = segment_classes(aligned.messages, aligned.generated, aligned.parts, message_ok, policy)
    seg_class = np.asarray(classes, dtype=np.int8)
    seg_trained = seg_class == TRAINED
    idx = np.flatnonzero(trained)
    if len(idx):
        owner = aligned.token_message[idx]
        breaks = np.flatnonzero((np.diff(idx) != 1) | (np.diff(owner) != 0)) + 1
        run_first = idx[np.concatenate(([0], breaks))]
        run_last = idx[np.concatenate((breaks - 1, [len(idx) - 1]))]
        run_message = owner[np.concatenate(([0], breaks))]
    else:
        run_first = run_last = run_message = idx
    token_to_chars = encoded.encoding.token_to_chars
    run_start = np.array([token_to_chars(t)[0] for t in run_first.tolist()], dtype=np.int64)
    run_end = np.array([token_to_chars(t)[1] for t in run_last.tolist()], dtype=np.int64)
    text = rendered.text

    # 1. Each run lies in one trained message's region: segments k0..k1 all trained segments of
    #    that message (one code per segment: its message where trained, -2 where not), except that
    #    a run may start in its own header with one token running on into the reply (straddle).
    if len(run_first):
        code = np.where(seg_trained, seg_message, -2)
        change = np.zeros(n_seg + 1, dtype=np.int64)
        np.cumsum(code[1:] != code[:-1], out=change[2:])
        k0 = np.searchsorted(seg_start, run_start, side="right") - 1
        k1 = np.searchsorted(seg_start, np.maximum(run_end - 1, run_start), side="right") - 1
        for r in np.flatnonzero(code[k0] != run_message).tolist():
            # A run may start with a token that covers several segments and that the straddle rule
            # trains: over its own header, or from the end of one reply into the next where a template
            # writes two replies with nothing between (Gemma 4's fifth revision). The rule vouches for
            # that token's segments; the rest of the run is checked from the segment the token ends in.
            k = int(k0[r])
            t_end = token_to_chars(int(run_first[r]))[1]
            kt = int(np.searchsorted(seg_start, max(t_end - 1, int(run_start[r])), side="right")) - 1
            ok, _, _ = decide_token(classes[k : kt + 1], seg_message[k] == seg_message[kt], policy)
            if ok and kt > k:
                k0[r] = kt
        wrong = (code[k0] != run_message) | (change[k1 + 1] != change[k0 + 1]) | (run_end <= run_start)
        if wrong.any():
            r = int(np.flatnonzero(wrong)[0])
            a, b = int(run_start[r]), int(run_end[r])
            m = int(run_message[r])
            fail(name, m, f"trained tokens cover {text[a:b]!r:.120} (characters {a}..{b}), outside a trained reply")

    if not full:
        return
    # 2. Each run decodes back to the text it covers.
    ids = encoded.ids
    for r in range(len(run_first)):
        a, b = int(run_start[r]), int(run_end[r])
        decoded = backend.decode(ids[run_first[r] : run_last[r] + 1].tolist(), skip_special_tokens=False)
        if not _decodes_to(decoded, text[a:b]) and not _decodes_to(decoded, text[a : _tiled_end(encoded, run_last[r])]):
            m = int(aligned.token_message[run_first[r]])
            fail(name, m, f"trained tokens decode to {decoded!r:.120} but cover {text[a:b]!r:.120}")

    # 3. Every trained segment is covered, but where a token the policy dropped also covers blocked text.
    segs = np.flatnonzero(seg_trained)
    if not len(segs):
        return
    s_start, s_end = seg_start[segs], seg_start[segs + 1]
    r = np.searchsorted(run_start, s_start, side="right") - 1
    covered = (r >= 0) & (run_end[np.maximum(r, 0)] >= s_end) if len(run_start) else np.zeros(len(segs), bool)
    excused = frozenset(written.tolist()) if written is not None else frozenset()
    runs = _Runs(run_start, run_end, trained, excused)
    for j in np.flatnonzero(~covered).tolist():
        _check_uncovered(int(segs[j]), int(s_start[j]), int(s_end[j]), runs, rendered, encoded, classes, policy, name)


class _Runs(NamedTuple):
    """The runs of trained tokens: where each starts and ends in the text, and the per-token decision."""

    start: np.ndarray
    end: np.ndarray
    trained: np.ndarray
    excused: frozenset = frozenset()  # untrained tokens the data wrote (control tokens under "keep")


def _check_uncovered(
    k: int,
    start: int,
    end: int,
    runs: _Runs,
    rendered: Rendered,
    encoded: Encoded,
    classes: list[int],
    policy: Policy,
    name: str,
) -> None:
    """Characters ``start..end`` of trained segment ``k`` not inside one run: each must lie in a
    trained token (a character no token claims belongs to the token before it), or in an
    untrained token that the straddle rule leaves untrained (it also covers text the policy does not train)."""
    encoding = encoded.encoding
    run_start, run_end, trained, excused = runs
    seg_start, seg_message, text = rendered.seg_start, rendered.messages, rendered.text
    pos = start
    while pos < end:
        r = int(np.searchsorted(run_start, pos, side="right")) - 1
        if r >= 0 and run_end[r] > pos:
            pos = int(run_end[r])
            continue
        t = encoding.char_to_token(pos)
        back = pos
        while t is None and back > 0:
            back -= 1
            t = encoding.char_to_token(back)
        if t is None:
            fail(name, int(seg_message[k]), f"character {pos} ({text[pos]!r}) is covered by no token")
        a, b = encoding.token_to_chars(t)
        if t in excused:
            pos = max(pos + 1, b)
            continue
        if trained[t]:
            # The token before an unclaimed character is trained: that character is its.
            nxt = encoding.char_to_token(pos + 1) if pos + 1 < end else None
            pos = pos + 1 if nxt is None or nxt == t else max(pos + 1, a)
            continue
        k0 = int(np.searchsorted(seg_start, a, side="right")) - 1
        k1 = int(np.searchsorted(seg_start, max(b - 1, a), side="right")) - 1
        if decide_token(classes[k0 : k1 + 1], seg_message[k0] == seg_message[k1], policy)[0]:
            msg = f"token {t} ({text[a:b]!r:.60}) lies inside a trained reply but is not trained"
            fail(name, int(seg_message[k]), msg)
        pos = max(pos + 1, b)


def fail(name: str, message_index: int | None, what: str) -> None:
    where = f"message {message_index}" if message_index is not None and message_index >= 0 else "the sample"
    msg = (
        f"Fail-closed check, template {name!r}, {where}: {what}. labelmask refuses to return labels it cannot "
        "verify. Either the tokenizer's ids do not spell the text its offsets point at (a normalizer that "
        "lowercases or inserts text: use the model's own tokenizer.json), or this is a labelmask bug: report it "
        "with this conversation. mask_dataset(on_error='drop') drops and counts such rows; check='off' skips "
        "the check."
    )
    raise MaskCheckError(msg, message_index=message_index, template=name)
