"""The invariants of labelmask, as checks on one masked conversation.

References come from outside labelmask wherever they can: the stock template
rendered and tokenized by transformers' ``apply_chat_template``, the generation
prompt it appends (``add_generation_prompt=True`` minus ``False``), the
end-of-turn token the caller names. Each check raises ``AssertionError`` with
what went wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import jinja2
import numpy as np

from labelmask._mask import mask_conversation
from labelmask._parts import Role
from labelmask._policy import IGNORE_INDEX, Policy
from labelmask._render import FROZEN_NOW
from labelmask._result import MaskedConversation

__all__ = ["CHECKS", "Expect", "Sample", "check_sample"]

# Span kinds holding text a message wrote itself (not the template's).
OWN_TEXT = ("content", "reasoning", "tool_calls")


@dataclasses.dataclass(frozen=True)
class Expect:
    """What the caller knows about a template, to check against.

    Args:
        eot: The end-of-turn string the template writes after a reply (``"<|im_end|>"``),
            or ``None`` when it writes none; ``...`` (the default) takes it from the
            annotation's ``eot`` spans, a weaker check.
        other_eots: Other end-of-turn strings a reply may end with (Llama 3.1's ``<|eom_id|>``).
        history_eots: Strings that close a reply in the history in place of the stop token the
            model generated (gpt-oss writes a final message's ``<|return|>`` as ``<|end|>`` once
            another message follows): such a reply, never the last message, is followed by one of
            them, as one token, untrained.
        trailer: Text the stock template appends only without a generation prompt (Phi-3's eos).
        parts: The stock template reads only typed content parts: string content is
            given to it as ``[{"type": "text", "text": ...}]``, as labelmask does.
        image_tokens: Placeholder tokens the template writes for images (never trained
            unless a reply's own text contains them).
        template: The registered annotation expected to be used (``None``: any).
        next_header_eots: ``(role, token)`` pairs for a family whose replies end with the
            next turn's header token (GLM: ``(("user", "<|user|>"), ("tool", "<|observation|>"))``):
            a reply followed by a message of such a role ends with its token, written after the
            reply's turn; a reply followed by another role, or by nothing, has no end of turn.
            Replaces ``eot`` and ``other_eots``.
        final_eot: With ``next_header_eots``: the stop token labelmask writes after a last reply
            that nothing follows (the annotation's ``final_eot``, written unless ``add_eos=False``);
            the render and ids are then the stock ones plus this token.
    """

    eot: Any = ...
    other_eots: tuple[str, ...] = ()
    history_eots: tuple[str, ...] = ()
    trailer: str = ""
    parts: bool = False
    image_tokens: tuple[str, ...] = ()
    template: str | None = None
    next_header_eots: tuple[tuple[str, str], ...] = ()
    final_eot: str = ""


@dataclasses.dataclass
class Sample:
    """One masked conversation and what is needed to check it."""

    tokenizer: Any
    messages: list
    tools: list | None
    kwargs: dict
    out: MaskedConversation
    expect: Expect
    policy: Policy = dataclasses.field(default_factory=Policy)

    @classmethod
    def mask(
        cls,
        tokenizer: Any,
        messages: list,
        tools: list | None = None,
        expect: Expect | None = None,
        template: str | None = None,
        policy: Policy | None = None,
        **kwargs: Any,
    ) -> Sample:
        expect = Expect() if expect is None else expect
        policy = Policy() if policy is None else policy
        out = mask_conversation(
            messages, tokenizer, tools=tools, return_tensors="np", template=template, policy=policy, **kwargs
        )
        return cls(tokenizer, messages, tools, kwargs, out, expect, policy)

    def stock_input(self, messages: list) -> list:
        if not self.expect.parts:
            return messages
        return [
            {**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m.get("content"), str) else m
            for m in messages
        ]

    def stock(self, messages: list | None = None, **extra: Any) -> str:
        messages = self.messages if messages is None else messages
        with labelmask_clock():
            return self.tokenizer.apply_chat_template(
                self.stock_input(messages), tools=self.tools, tokenize=False, **self.kwargs, **extra
            )

    def regions(self) -> dict[int, tuple[int, int, int]]:
        """{assistant message index: (header start, header end, region end)} from labelmask's spans."""
        found = {}
        heads = {s.message: s for s in self.out.spans if s.kind == "header"}
        eots = {s.message: s for s in self.out.spans if s.kind == "eot"}
        turns = {s.message: s for s in self.out.spans if s.kind == "turn"}
        for i, m in enumerate(self.messages):
            if m["role"] == "assistant":
                assert i in heads and i in turns, f"assistant message {i} has no header or turn span"
                end = eots[i].end if i in eots else turns[i].end
                found[i] = (heads[i].start, heads[i].end, end)
        return found

    def owners(self) -> np.ndarray:
        """Per character: the message whose turn (or, for a message with no reply region, whose
        part) writes it, innermost last; -1 for text outside every message."""
        regions = self.regions()
        owner = np.full(len(self.out.text), -1)
        for span in self.out.spans:
            if span.kind == "turn" or span.message not in regions:
                owner[span.start : span.end] = span.message
        for span in self.out.spans:
            if span.kind == "eot" and span.message in regions:
                # An end of turn outside every turn (GLM's next header token) is its reply's text.
                chars = owner[span.start : span.end]
                chars[chars == -1] = span.message
        return owner

    def segments(self, i: int, owner: np.ndarray | None = None) -> list[tuple[int, int]]:
        """The generated segments of reply ``i``: the runs of its region (after its header through
        its end of turn) that the reply itself writes. One run, unless the template writes other
        messages inside the reply's turn (Gemma 4 writes tool results after the calls, and the
        reply goes on after them): then each run is a segment the model generates."""
        _, h_end, end = self.regions()[i]
        owner = self.owners() if owner is None else owner
        own = np.concatenate(([False], owner[h_end:end] == i, [False]))
        edges = np.flatnonzero(own[1:] != own[:-1])
        return [(h_end + int(a), h_end + int(b)) for a, b in zip(edges[::2], edges[1::2])]

    def joined(self, i: int) -> bool:
        """Reply ``i`` has no end of turn and the next reply starts, with an empty header, where
        it ends: the template writes the two into one turn with nothing between (Gemma 4's fifth
        revision), so the model's stop comes only after the next one."""
        regions = self.regions()
        _, _, end = regions[i]
        if any(s.kind == "eot" and s.message == i for s in self.out.spans):
            return False
        return any(j > i and h_start == h_end == end for j, (h_start, h_end, _) in regions.items())

    def trained_spans(self) -> list[tuple[int, int]]:
        trained = np.flatnonzero(self.out["labels"] != IGNORE_INDEX)
        return [tuple(self.out.offsets[t]) for t in trained]


def check_annotation_used(d: Sample) -> None:
    assert d.out.report.method == "annotated", f"no annotation was used ({d.out.report.method})"
    if d.expect.template is not None:
        assert d.out.report.template == d.expect.template, (d.out.report.template, d.expect.template)


def _appended(d: Sample) -> str:
    """What labelmask writes after the stock render: a last reply's ``final_eot``, where it applies."""
    if d.expect.final_eot and d.messages and d.messages[-1]["role"] == "assistant":
        assert d.out.report.n_eos_added == 1, "the last reply's stop token was not written"
        return d.expect.final_eot
    assert d.out.report.n_eos_added == 0, "labelmask wrote a stop token that the stock render lacks"
    return ""


def check_render_parity(d: Sample) -> None:
    stock = d.stock() + _appended(d)
    if d.out.text != stock:
        k = next((i for i, (a, b) in enumerate(zip(d.out.text, stock)) if a != b), min(len(stock), len(d.out.text)))
        raise AssertionError(f"render differs at {k}: {d.out.text[k - 20 : k + 20]!r} vs {stock[k - 20 : k + 20]!r}")


def labelmask_clock() -> Any:
    """The clock at labelmask's render instant, for transformers' renders: labelmask freezes
    ``strftime_now`` (gpt-oss writes "Current date: ..." from it, with no argument to pass a
    date), transformers reads the clock. Needs ``time-machine`` (in ``labelmask[test]``)."""
    try:
        import time_machine
    except ImportError:  # then a date-writing template matches only on FROZEN_NOW's day
        return contextlib.nullcontext()
    # Naive FROZEN_NOW is read as local time, as strftime_now's datetime.now() gives it.
    return time_machine.travel(FROZEN_NOW.astimezone(), tick=False)


def check_token_parity(d: Sample) -> None:
    with labelmask_clock():
        expected = d.tokenizer.apply_chat_template(d.stock_input(d.messages), tools=d.tools, tokenize=True, **d.kwargs)[
            "input_ids"
        ]
    appended = _appended(d)
    if appended:
        expected = expected + d.tokenizer.encode(appended, add_special_tokens=False)
    assert d.out["input_ids"].tolist() == expected, "input_ids differ from apply_chat_template(tokenize=True)"
    assert d.out["attention_mask"].tolist() == [1] * len(expected)


def check_header_is_the_generation_prompt(d: Sample) -> None:
    """Each assistant header is exactly what add_generation_prompt=True appends, so the
    trained region starts where generation starts; where the prefix renders agree with
    the whole, the region's start and end match differential rendering."""
    trailer = d.expect.trailer
    for i, (h_start, h_end, end) in d.regions().items():
        if i == 0:
            continue  # transformers renders no empty conversation: no reference for a reply that comes first
        try:
            before = d.stock(d.messages[:i])
            prompt = d.stock(d.messages[:i], add_generation_prompt=True)
            whole = d.stock(d.messages[: i + 1])
        except jinja2.TemplateError:
            # The template refuses the conversation cut here, though it takes the whole (Qwen3 calls
            # .strip() on the reasoning of replies after the last user message): no differential reference.
            continue
        assert before.endswith(trailer)
        before = before[: len(before) - len(trailer)]
        if not prompt.startswith(before):
            # The template writes the cut conversation's last message otherwise when a generation
            # prompt follows (gpt-oss ends a final reply with <|end|> instead of <|return|> and drops
            # its analysis): no differential reference for the generation prompt here.
            continue
        generation_prompt = prompt[len(before) :]
        header = d.out.text[h_start:h_end]
        # A turn the template rewrites (Qwen3 drops an earlier turn's empty think block)
        # may show less than the generation prompt; wherever the whole prompt is
        # written, all of it is header.
        assert generation_prompt.startswith(header), (i, header, generation_prompt)
        # Where the message's own text begins inside what would be the generation prompt (an
        # earlier Qwen3.5 reply, rendered without its think block, whose content starts with
        # "<think>\n"), the rest of it is the message's, not the template's.
        own = [s.start for s in d.out.spans if s.message == i and s.kind in OWN_TEXT and s.end > s.start]
        if d.out.text.startswith(generation_prompt, h_start) and min(own, default=end) >= h_start + len(
            generation_prompt
        ):
            assert header == generation_prompt, (i, header, generation_prompt)
        if not d.out.text.startswith(prompt) or not whole.startswith(prompt):
            continue  # a rewritten history: no differential reference
        if d.joined(i):
            continue  # the prefix render closes the reply, the whole writes the next one on: no reference
        eots = [e for e in _eots(d, i) if e]
        if d.expect.next_header_eots:
            # The end of turn is the next message's first token: the reply ends after it.
            whole += next((e for e in eots if d.out.text.startswith(e, len(whole))), "")
        ends = [whole.rfind(e) + len(e) for e in eots if e in whole[len(prompt) :]]
        reply_end = max(ends) if ends else len(whole) - (len(trailer) if whole.endswith(trailer) else 0)
        if eots and not ends:
            continue
        if d.out.text.startswith(whole[:reply_end]):
            # Rendered as the last message, a reply ends its first generated segment (a reply that
            # Gemma 4 continues after tool results stops at its first <|tool_response>).
            segments = d.segments(i)
            end = segments[0][1] if segments else end
            assert (len(prompt), reply_end) == (h_end, end), (
                f"reply {i}: the annotation's region {d.out.text[h_end:end]!r} differs from differential "
                f"rendering's {d.out.text[len(prompt) : reply_end]!r}"
            )


def _eots(d: Sample, i: int) -> tuple:
    """The end-of-turn strings expected after reply ``i`` (empty: none)."""
    if d.expect.next_header_eots:
        if i + 1 == len(d.messages):
            return (d.expect.final_eot,) if d.expect.final_eot else ()
        following = d.messages[i + 1]["role"]
        return tuple(token for role, token in d.expect.next_header_eots if role == following)
    if d.expect.eot is ...:
        return tuple({d.out.text[s.start : s.end] for s in d.out.spans if s.kind == "eot" and s.message == i})
    if d.expect.eot is None:
        return ()
    return (d.expect.eot, *d.expect.other_eots)


def check_soundness(d: Sample) -> None:
    """No trained token touches another message, a header of another turn, an image
    placeholder, or text outside the reply."""
    regions = d.regions()
    owner = d.owners()
    image = np.zeros(len(d.out.text), dtype=bool)
    for span in d.out.spans:
        if span.kind == "image":
            image[span.start : span.end] = True
    # Replies the template joins into one turn with nothing between (see Sample.joined) are one
    # stream of generated text: a token may run from the end of one into the next.
    homes_of: dict[int, tuple[int, ...]] = {}
    for i in sorted(regions):
        group = homes_of.get(i, (i,))
        if d.joined(i):
            j = min(j for j, (h_start, h_end, _) in regions.items() if j > i and h_start == h_end == regions[i][2])
            group = (*group, j)
        for k in group:
            homes_of[k] = group
    for start, end in d.trained_spans():
        assert end > start
        assert not image[start:end].any(), "a trained token touches an image placeholder"
        homes = {
            homes_of[i] for i in regions if regions[homes_of[i][0]][0] <= start and end <= regions[homes_of[i][-1]][2]
        }
        assert len(homes) == 1, f"trained token {d.out.text[start:end]!r} at {start} is outside every reply"
        group = homes.pop()
        assert end > regions[group[0]][1], "a trained token lies inside the generation prompt"
        chars = owner[start:end]
        assert set(chars.tolist()) <= set(group), "a trained token touches another message's text"
    roles = d.out["role"][d.out["labels"] != IGNORE_INDEX]
    assert (roles == Role.ASSISTANT).all(), "a token of a non-assistant message is trained"


def check_completeness(d: Sample) -> None:
    """Every character of every reply (after the generation prompt, through the end of
    turn; not the text of other messages the template writes inside it) is covered by a
    trained token, except where the only tokens covering it also cover text that must not
    be trained (counted in the report)."""
    n = len(d.out.text)
    trained_cover = np.zeros(n, dtype=bool)
    for start, end in d.trained_spans():
        trained_cover[start:end] = True
    region = np.zeros(n, dtype=bool)
    owner = d.owners()
    for i, (_, h_end, end) in d.regions().items():
        # Text of another message written inside the reply's turn (Gemma 4's tool results) is not the reply's.
        region[h_end:end] = owner[h_end:end] == i
    for span in d.out.spans:
        if span.kind == "image":
            region[span.start : span.end] = False  # image placeholders are never trained
        elif span.kind == "empty_reasoning" and not d.policy.empty_reasoning:
            region[span.start : span.end] = False  # template-inserted, trained only when the policy says so
    # A control token the reply's data wrote (in its content, reasoning or tool-call arguments) is never
    # trained: under control_tokens="keep" it keeps its special id and gets no loss.
    written, ambiguous = _written_control_tokens(d)
    region &= ~(written | ambiguous)
    uncovered = np.flatnonzero(region & ~trained_cover)
    for c in uncovered:
        covering = [t for t, (a, b) in enumerate(d.out.offsets) if a <= c < b]
        assert covering, f"character {c} ({d.out.text[c]!r}) is covered by no token"
        for t in covering:
            a, b = d.out.offsets[t]
            assert not region[a:b].all(), f"token {t} {d.out.text[a:b]!r} lies inside a reply but is not trained"
    assert d.out.report.n_boundary_dropped >= (1 if len(uncovered) else 0)


def _written_control_tokens(d: Sample) -> tuple[np.ndarray, np.ndarray]:
    """``(written, ambiguous)``, each ``bool[n_chars]``: characters of special-id tokens inside a
    message's content span whose string the message holds (the data wrote them; not an image
    placeholder), and inside its tool-call or reasoning span when the message holds that string (the
    data or the template's syntax and tags may have written each: which one, only a render can tell)."""
    chars = np.zeros(len(d.out.text), dtype=bool)
    ambiguous = np.zeros(len(d.out.text), dtype=bool)
    tok = d.tokenizer
    specials = {t.content for t in tok.added_tokens_decoder.values() if t.special} | set(tok.all_special_tokens)
    if not specials:
        return chars, ambiguous
    special_ids = set(tok.convert_tokens_to_ids(sorted(specials)))
    image = np.zeros(len(d.out.text), dtype=bool)
    for span in d.out.spans:
        if span.kind == "image":
            image[span.start : span.end] = True
    ids = np.asarray(d.out["input_ids"]).tolist()
    offsets = d.out.offsets.tolist()
    for span in d.out.spans:
        if span.kind not in ("content", "reasoning", "tool_calls") or span.message is None:
            continue
        message = d.messages[span.message]
        data = repr(message.get("tool_calls") if span.kind == "tool_calls" else message)
        for t, (a, b) in enumerate(offsets):
            if span.start <= a and b <= span.end and ids[t] in special_ids and d.out.text[a:b] in data:
                if image[a:b].any():
                    continue  # an image placeholder the template wrote for an image part
                if span.kind in ("tool_calls", "reasoning"):
                    ambiguous[a:b] = True  # the span holds the template's syntax or tags too (gpt-oss's <|end|>)
                else:
                    chars[a:b] = True
    return chars, ambiguous


def check_end_of_turn_is_trained(d: Sample) -> None:
    """The end-of-turn token after each reply is trained; the next turn's header is not.

    Where the template writes other messages inside a reply's turn, each generated segment
    of the reply ends with a stop token (Gemma 4: the calls with <|tool_response>, the
    answer after the results with <turn|>); a reply joined to the next one has none."""
    labels, ids, starts = d.out["labels"], d.out["input_ids"], d.out.offsets[:, 0]
    owner = d.owners()
    regions = d.regions()
    for i, (_, _, end) in regions.items():
        eots = _eots(d, i)
        if not eots:
            if d.expect.next_header_eots:
                assert not any(s.kind == "eot" and s.message == i for s in d.out.spans), (
                    f"reply {i} is followed by no stop token, but the annotation marks an end of turn"
                )
            continue
        closing = next((h for h in d.expect.history_eots if d.out.text.startswith(h, end)), None)
        if closing is not None:
            # A reply in the history, closed by what stands for the stop token the model generated.
            assert i < len(d.messages) - 1, f"the last reply ends with {closing!r}, a history closing"
            t = int(np.searchsorted(starts, end))
            assert t < len(ids) and starts[t] == end, f"reply {i}'s history closing {closing!r} is not one token"
            assert ids[t] == d.tokenizer.convert_tokens_to_ids(closing), f"reply {i} is not closed by {closing!r}"
            assert labels[t] == IGNORE_INDEX, f"reply {i}'s history closing {closing!r} is trained"
            continue
        segments = d.segments(i, owner)
        if not segments:
            segments = [(end, end)]
        if d.joined(i):
            segments = segments[:-1]
        for _, seg_end in segments:
            eot = next((e for e in eots if d.out.text.endswith(e, 0, seg_end)), None)
            assert eot is not None, f"reply {i} does not end with {eots}" + (
                f" (segment ending at {seg_end})" if len(segments) > 1 else ""
            )
            t = int(np.searchsorted(starts, seg_end - len(eot)))
            assert t < len(ids) and starts[t] == seg_end - len(eot), f"reply {i}'s end of turn {eot!r} is not one token"
            assert labels[t] == ids[t], f"reply {i}'s end of turn {eot!r} is not trained"
            # The next token is not trained, unless it is another reply's, after its header (DeepSeek-V3
            # writes a later tool-call reply with no header, right after the reply before it).
            if t + 1 < len(ids) and not any(
                j != i and h_end <= starts[t + 1] < e for j, (_, h_end, e) in regions.items()
            ):
                assert labels[t + 1] == IGNORE_INDEX, f"the token after reply {i}'s end of turn is trained"


def check_image_placeholders_are_not_trained(d: Sample) -> None:
    """No image placeholder token is trained: not the template's or the processor's, nor one a
    reply's own text writes (a special token the data wrote is never trained, whatever
    ``control_tokens`` says; under ``"escape"`` it is no placeholder token any more)."""
    labels, owner = d.out["labels"], d.out["message_index"]
    for i, m in enumerate(d.messages):
        if m["role"] != "assistant":
            continue
        for token in d.expect.image_tokens:
            token_id = d.tokenizer.convert_tokens_to_ids(token)
            n_trained = int(np.count_nonzero((labels == token_id) & (owner == i)))
            assert n_trained == 0, (i, token)


CHECKS = (
    check_annotation_used,
    check_render_parity,
    check_token_parity,
    check_header_is_the_generation_prompt,
    check_soundness,
    check_completeness,
    check_end_of_turn_is_trained,
    check_image_placeholders_are_not_trained,
)


def check_sample(d: Sample) -> None:
    """Run every check on one sample."""
    for check in CHECKS:
        check(d)
