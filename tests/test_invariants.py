"""The invariants of DESIGN.md, property-tested on every annotated template.

References come from outside labelmask: the stock template rendered and
tokenized by transformers' ``apply_chat_template``, and the generation prompt
it appends (``add_generation_prompt=True`` minus ``False``). Where a template
renders each prefix of the conversation as the start of the whole (every turn of
Llama 3, Gemma 3, LLaVA; most of Qwen3), the assistant region is also derived by
differential rendering and must equal labelmask's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import labelmask
from tests.fixtures import load_tokenizer
from tests.strategies import conversations


@dataclasses.dataclass(frozen=True)
class Case:
    strategy: st.SearchStrategy
    eot: str | None
    kwargs: st.SearchStrategy = st.just({})
    parts: bool = False  # the stock template reads only typed content parts
    template: str | None = None  # registered annotation expected, when not the case's own name
    trailer: str = ""  # text the stock template appends only when add_generation_prompt is false (Phi-3's eos)
    other_eots: tuple[str, ...] = ()  # other end-of-turn strings a reply may end with (Llama 3.1's <|eom_id|>)
    image_tokens: tuple[str, ...] = ()  # special tokens the template writes for image parts (never trained)


# Llama 3.2 writes strftime_now() when no date_string is passed: labelmask freezes it,
# transformers does not, so every case passes a date. Tools go into the first user
# message by default, into the system block with tools_in_user_message=False.
LLAMA_TOOLS_KWARGS = st.sampled_from(
    [
        {"date_string": "26 Jul 2024"},
        {"date_string": "01 Jan 2026"},
        {"date_string": "26 Jul 2024", "tools_in_user_message": False},
        {"date_string": "01 Jan 2026", "tools_in_user_message": False},
    ]
)

# builtin_tools switches Llama 3.1 to ipython mode: a tool call ends with <|eom_id|>, and a
# call to a builtin tool is written <|python_tag|>name.call(arg="value"), from dict arguments.
LLAMA31_BUILTIN_KWARGS = st.sampled_from(
    [
        {"date_string": "26 Jul 2024", "builtin_tools": ["brave_search", "wolfram_alpha"]},
        {"date_string": "26 Jul 2024", "builtin_tools": ["get_weather", "code_interpreter"]},
        {
            "date_string": "01 Jan 2026",
            "builtin_tools": ["code_interpreter", "get_weather"],
            "tools_in_user_message": False,
        },
    ]
)

ALL_ROLES = ("system", "user", "assistant")
# Every part Qwen2.5-VL's template writes a placeholder for: typed images and videos, with or
# without a payload, and OpenAI-style image_url parts.
QWEN_VL_PARTS = (
    {"type": "image"},
    {"type": "image", "image": "file:///tmp/cat.png"},
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    {"type": "video"},
    {"type": "video", "video": "file:///tmp/clip.mp4"},
)

CASES = {
    "qwen3": Case(
        conversations(tools=True, tool_role=True, reasoning=True),
        "<|im_end|>",
        st.sampled_from([{}, {"enable_thinking": False}, {"enable_thinking": True}]),
    ),
    "qwen3-trl": Case(
        conversations(tools=True, tool_role=True, reasoning=True),
        "<|im_end|>",
        st.sampled_from([{}, {"enable_thinking": False}, {"enable_thinking": True}]),
    ),
    "qwen2.5": Case(conversations(tools=True, tool_role=True), "<|im_end|>"),
    "qwen3-instruct-2507": Case(conversations(tools=True, tool_role=True), "<|im_end|>"),
    "llama3": Case(conversations(), "<|eot_id|>"),
    "gemma3": Case(conversations(alternate=True), "<end_of_turn>"),
    "llava-1.5": Case(conversations(image_roles=ALL_ROLES), None, parts=True, image_tokens=("<image>",)),
    "phi3": Case(conversations(), "<|end|>", trailer="<|endoftext|>"),
    "phi3.5": Case(conversations(), "<|end|>", trailer="<|endoftext|>"),
    "gemma": Case(conversations(alternate=True, system=False), "<end_of_turn>"),
    "llama3.1": Case(
        conversations(tools=True, tool_role=True, max_tool_calls=1, tool_role_names=("tool", "ipython")),
        "<|eot_id|>",
        LLAMA_TOOLS_KWARGS,
    ),
    "llama3.1-builtin": Case(
        conversations(
            tools=True, tool_role=True, max_tool_calls=1, tool_role_names=("tool", "ipython"), string_arguments=False
        ),
        "<|eot_id|>",
        LLAMA31_BUILTIN_KWARGS,
        template="llama3.1",
        other_eots=("<|eom_id|>",),
    ),
    "llama3.2": Case(
        conversations(tools=True, tool_role=True, max_tool_calls=1, tool_role_names=("tool", "ipython")),
        "<|eot_id|>",
        LLAMA_TOOLS_KWARGS,
    ),
    "chatml": Case(conversations(), "<|im_end|>"),
    # Vision-language templates, text side: image parts in the roles each template writes them for.
    "qwen2.5-vl": Case(
        conversations(image_roles=ALL_ROLES, image_parts=QWEN_VL_PARTS),
        "<|im_end|>",
        st.sampled_from([{}, {"add_vision_id": True}]),
        image_tokens=("<|vision_start|>", "<|image_pad|>", "<|video_pad|>", "<|vision_end|>"),
    ),
    # LLaVA-NeXT writes images only for user messages; it reads a system or assistant message's first part only.
    "llava-next": Case(conversations(image_roles=("user",)), "</s>", parts=True, image_tokens=("<image>",)),
    "idefics3": Case(conversations(image_roles=ALL_ROLES), "<end_of_utterance>", parts=True, image_tokens=("<image>",)),
    "smolvlm": Case(conversations(image_roles=ALL_ROLES), "<end_of_utterance>", parts=True, image_tokens=("<image>",)),
}
NAMES = sorted(CASES)


def as_stock_input(messages, case):
    if not case.parts:
        return messages
    return [
        {**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m["content"], str) else m
        for m in messages
    ]


@dataclasses.dataclass
class Drawn:
    name: str
    tokenizer: object
    messages: list
    tools: list | None
    kwargs: dict
    out: labelmask.MaskedConversation

    def stock(self, messages=None, **extra):
        case = CASES[self.name]
        messages = self.messages if messages is None else messages
        return self.tokenizer.apply_chat_template(
            as_stock_input(messages, case), tools=self.tools, tokenize=False, **self.kwargs, **extra
        )

    def regions(self):
        """{assistant message index: (header start, header end, region end)} from labelmask's spans."""
        found = {}
        heads = {s.message: s for s in self.out.spans if s.kind == "header"}
        eots = {s.message: s for s in self.out.spans if s.kind == "eot"}
        turns = {s.message: s for s in self.out.spans if s.kind == "turn"}
        for i, m in enumerate(self.messages):
            if m["role"] == "assistant":
                end = eots[i].end if i in eots else turns[i].end
                found[i] = (heads[i].start, heads[i].end, end)
        return found


def draw_case(name, tokenizers, data) -> Drawn:
    case = CASES[name]
    messages, tools = data.draw(case.strategy, label="conversation")
    kwargs = data.draw(case.kwargs, label="template kwargs")
    tokenizer = tokenizers[name]
    out = labelmask.mask_conversation(messages, tokenizer, tools=tools, return_tensors="np", **kwargs)
    assert out.report.template == (case.template or name)
    return Drawn(name, tokenizer, messages, tools, kwargs, out)


def trained_spans(out):
    trained = np.flatnonzero(out["labels"] != labelmask.IGNORE_INDEX)
    return [tuple(out.offsets[t]) for t in trained]


def check_render_parity(d):
    assert d.out.text == d.stock()


def check_token_parity(d):
    case = CASES[d.name]
    expected = d.tokenizer.apply_chat_template(
        as_stock_input(d.messages, case), tools=d.tools, tokenize=True, **d.kwargs
    )["input_ids"]
    assert d.out["input_ids"].tolist() == expected
    assert d.out["attention_mask"].tolist() == [1] * len(expected)


def check_header_is_the_generation_prompt(d):
    """Each assistant header is exactly what add_generation_prompt=True appends, so
    the trained region starts where generation starts; where the prefix renders
    agree with the whole, the region's start and end match differential rendering."""
    eot, trailer = CASES[d.name].eot, CASES[d.name].trailer
    for i, (h_start, h_end, end) in d.regions().items():
        before = d.stock(d.messages[:i])
        assert before.endswith(trailer)
        before = before[: len(before) - len(trailer)]
        prompt = d.stock(d.messages[:i], add_generation_prompt=True)
        assert prompt.startswith(before)
        generation_prompt = prompt[len(before) :]
        header = d.out.text[h_start:h_end]
        # A turn the template rewrites (Qwen3 drops an earlier turn's empty think block)
        # may show less than the generation prompt; wherever the whole prompt is
        # written, all of it is header.
        assert generation_prompt.startswith(header)
        if d.out.text.startswith(generation_prompt, h_start):
            assert header == generation_prompt
        whole = d.stock(d.messages[: i + 1])
        if d.out.text.startswith(prompt) or not whole.startswith(prompt):
            continue  # first turn or a rewritten history: no differential reference
        ends = [whole.rfind(e) + len(e) for e in (eot, *CASES[d.name].other_eots) if eot and e in whole]
        reply_end = max(ends) if eot else len(whole)
        if d.out.text.startswith(whole[:reply_end]):
            assert (len(prompt), reply_end) == (h_end, end)


def check_soundness(d):
    """No trained token touches another message, a header of another turn, an image
    placeholder, or text outside the reply."""
    regions = d.regions()
    owner = np.full(len(d.out.text), -1)
    for span in d.out.spans:
        if span.kind == "turn" or span.message not in regions:
            owner[span.start : span.end] = span.message
    image = np.zeros(len(d.out.text), dtype=bool)
    for span in d.out.spans:
        if span.kind == "image":
            image[span.start : span.end] = True
    for start, end in trained_spans(d.out):
        assert end > start
        assert not image[start:end].any(), "a trained token touches an image placeholder"
        homes = [i for i, (h_start, h_end, r_end) in regions.items() if h_start <= start and end <= r_end]
        assert len(homes) == 1, (start, end, d.out.text[start:end])
        i = homes[0]
        assert end > regions[i][1], "a trained token lies inside the generation prompt"
        chars = owner[start:end]
        assert set(chars.tolist()) <= {i}, "a trained token touches another message's text"
    # tokens of non-assistant messages are never trained
    roles = d.out["role"][d.out["labels"] != labelmask.IGNORE_INDEX]
    assert (roles == labelmask.Role.ASSISTANT).all()


def check_completeness(d):
    """Every character of every reply (after the generation prompt, through the end
    of turn) is covered by a trained token, except where the only tokens covering it
    also cover text that must not be trained (counted in the report)."""
    n = len(d.out.text)
    trained_cover = np.zeros(n, dtype=bool)
    for start, end in trained_spans(d.out):
        trained_cover[start:end] = True
    region = np.zeros(n, dtype=bool)
    for _, h_end, end in d.regions().values():
        region[h_end:end] = True
    for span in d.out.spans:
        if span.kind == "image":
            region[span.start : span.end] = False  # image placeholders are never trained
    uncovered = np.flatnonzero(region & ~trained_cover)
    for c in uncovered:
        covering = [t for t, (a, b) in enumerate(d.out.offsets) if a <= c < b]
        assert covering, f"character {c} ({d.out.text[c]!r}) is covered by no token"
        for t in covering:
            a, b = d.out.offsets[t]
            assert not region[a:b].all(), f"token {t} {d.out.text[a:b]!r} lies inside a reply but is not trained"
    assert d.out.report.n_boundary_dropped >= (1 if len(uncovered) else 0)


def check_end_of_turn_is_trained(d):
    """The end-of-turn token after each reply is trained; the next turn's header is not."""
    case = CASES[d.name]
    if case.eot is None:
        return
    labels, ids, starts = d.out["labels"], d.out["input_ids"], d.out.offsets[:, 0]
    for _, _, end in d.regions().values():
        # The reply ends with the case's end-of-turn string, or one of its others.
        eot = next((e for e in (case.eot, *case.other_eots) if d.out.text.endswith(e, 0, end)), case.eot)
        eot_id = d.tokenizer.convert_tokens_to_ids(eot)
        t = int(np.searchsorted(starts, end - len(eot)))
        assert ids[t] == eot_id
        assert labels[t] == eot_id
        if t + 1 < len(ids):
            assert labels[t + 1] == labelmask.IGNORE_INDEX


def check_image_placeholders_are_not_trained(d):
    """An image placeholder token is trained only where a reply's own text writes it: in
    each assistant message, as many trained placeholder tokens as its text parts contain
    (counted from the messages, not from the annotation's spans)."""
    labels, owner = d.out["labels"], d.out["message_index"]
    for i, m in enumerate(d.messages):
        if m["role"] != "assistant":
            continue
        content = m["content"]
        texts = [content] if isinstance(content, str) else [p["text"] for p in content if p["type"] == "text"]
        for token in CASES[d.name].image_tokens:
            token_id = d.tokenizer.convert_tokens_to_ids(token)
            n_trained = int(np.count_nonzero((labels == token_id) & (owner == i)))
            assert n_trained == sum(t.count(token) for t in texts), (i, token)


CHECKS = [
    check_render_parity,
    check_token_parity,
    check_header_is_the_generation_prompt,
    check_soundness,
    check_completeness,
    check_end_of_turn_is_trained,
    check_image_placeholders_are_not_trained,
]


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_invariants(name, tokenizers, data):
    """Every invariant on every drawn conversation (so each invariant sees every example)."""
    d = draw_case(name, tokenizers, data)
    for check in CHECKS:
        check(d)


@pytest.mark.parametrize("name", [n for n in NAMES if not CASES[n].parts])
@given(data=st.data())
def test_typed_content_parts_render_or_fail_like_the_stock_template(name, tokenizers, data):
    """Content given as typed parts: where the stock template renders it, the text is
    the same; where it fails (Qwen3 concatenates content with strings), labelmask
    raises its own error instead of returning a render the stock template never makes."""
    case = CASES[name]
    messages, tools = data.draw(case.strategy, label="conversation")
    kwargs = data.draw(case.kwargs, label="template kwargs")
    as_parts = data.draw(st.lists(st.booleans(), min_size=len(messages), max_size=len(messages)), label="as parts")
    messages = [
        {**m, "content": [{"type": "text", "text": m["content"]}]} if flag and isinstance(m.get("content"), str) else m
        for m, flag in zip(messages, as_parts)
    ]
    tokenizer = tokenizers[name]
    try:
        stock = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **kwargs)
    except Exception:
        stock = None
    if stock is None:
        with pytest.raises(labelmask.LabelmaskError):
            labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=ANY_OUTCOME, **kwargs)
    else:
        out = labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=ANY_OUTCOME, **kwargs)
        assert out.text == stock


ANY_OUTCOME = labelmask.Policy(on_empty="keep")


def test_chatml_matches_the_docs_string_as_python_evaluates_it(tokenizers):
    """The docs set ChatML from a Python string literal, in which each \\n inside a Jinja
    string is a real newline: the same template under another hash, matched too."""
    stock = tokenizers["chatml"].chat_template
    evaluated = stock.replace("\\n", "\n")
    assert evaluated != stock and "\\n" not in evaluated
    tokenizer = load_tokenizer("chatml")
    tokenizer.chat_template = evaluated
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi\n"},
        {"role": "assistant", "content": "Hello!"},
    ]
    out = labelmask.mask_conversation(messages, tokenizer, verify=True)
    assert out.report.template == "chatml"
    assert out.text == tokenizers["chatml"].apply_chat_template(messages, tokenize=False)
