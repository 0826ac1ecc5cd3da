"""Templates nobody annotated: spans derived per conversation, verified, or refused.

Over every stock template of TRL's wheel that has no registered annotation, each
drawn conversation is either masked correctly (checked against transformers and
against markers planted in every message) or refused with a labelmask error;
never silently wrong. The tokenizer is the Qwen3 vocabulary with the template's
control tokens added as special tokens (a stand-in: no other vocabularies are
vendored); the derivation only needs the template and a fast tokenizer.
"""

from __future__ import annotations

import collections
import re
from functools import cache

import numpy as np
import pytest
import time_machine
from hypothesis import given, settings
from hypothesis import strategies as st

import labelmask
from labelmask._render import FROZEN_NOW
from labelmask.testing import Expect
from labelmask.testing._checks import Sample, _written_control_tokens
from tests.fixtures import HERE, load_tokenizer
from tests.strategies import conversations
from tests.test_invariants import CASES

TRL = HERE / "templates" / "trl"
# TRL's stock templates (its training variants end in _training).
STOCK = sorted(p.name for p in TRL.glob("*.jinja") if not p.stem.endswith("_training"))
REGISTERED = {h for t in labelmask.templates().values() for h in t.matches}
UNANNOTATED = [f for f in STOCK if labelmask.template_hash((TRL / f).read_text()) not in REGISTERED]
# Every stock template of TRL's wheel is annotated now (tests/test_registry.py), so the fallback is
# exercised on each of them made unrecognisable (a trailing comment changes the hash): the same real
# templates a user's unannotated revision would resemble.

# Control tokens written in the templates' string literals: <|...|>, <｜...｜>, <...|>, <start_of_turn> ...
_CONTROL = re.compile(
    r"<[|｜][^<>'\"\s]{1,40}[|｜]>|<[a-z_]{2,30}\|>|<\|[a-z_]{2,30}>|<(?:start|end)_of_[a-z_]+>"
    r"|<end_of_utterance>|</?s>|\[/?INST\]|\[/?(?:TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS)\]"
)


@cache
def tokenizer_for(file: str):
    tokenizer = load_tokenizer("qwen3")
    source = (TRL / file).read_text()
    vocab = tokenizer.get_vocab()
    tokenizer.add_tokens([t for t in sorted(set(_CONTROL.findall(source))) if t not in vocab], special_tokens=True)
    if file not in UNANNOTATED:
        source += "{# not the registered revision #}"
    tokenizer.chat_template = source
    assert labelmask.template_hash(source) not in REGISTERED
    return tokenizer


MIXED = st.one_of(
    conversations(max_turns=8),
    conversations(alternate=True, max_turns=8),
    conversations(tools=True, tool_role=True, reasoning=True, max_turns=8),
)
MARK = "⟦{}⟧"  # planted at the start of every message's content, to find each message in the render


def plant(messages):
    planted = []
    for i, m in enumerate(messages):
        m = dict(m)
        m["content"] = MARK.format(i) + (m.get("content") or "")
        planted.append(m)
    return planted


def stock(tokenizer, messages, tools, **kwargs):
    # labelmask renders strftime_now() at a fixed instant (gpt-oss writes today's date);
    # transformers reads the clock, so it renders at the same instant for comparison.
    with time_machine.travel(FROZEN_NOW, tick=False):
        return tokenizer.apply_chat_template(messages, tools=tools, **kwargs)


def check_masked(tokenizer, messages, tools, out):
    """The invariants, with references outside labelmask's derivation."""
    text = stock(tokenizer, messages, tools, tokenize=False)
    assert out.text == text
    ids = stock(tokenizer, messages, tools, tokenize=True)["input_ids"]
    assert out["input_ids"].tolist() == ids
    trained = out["labels"] != labelmask.IGNORE_INDEX
    assert (out["role"][trained] == labelmask.Role.ASSISTANT).all()
    covered = np.zeros(len(text), dtype=bool)
    for a, b in out.offsets[trained]:
        covered[a:b] = True
    for i, m in enumerate(messages):
        mark = MARK.format(i)
        where = [k.start() for k in re.finditer(re.escape(mark), text)]
        if m["role"] == "assistant":
            # A reply is trained wherever its turn is written after its generation prompt
            # (the derivation checks that; here the marker must be covered).
            for k in where:
                assert covered[k : k + len(mark)].all(), f"message {i}'s reply is not trained"
        else:
            for k in where:
                assert not covered[k : k + len(mark)].any(), f"message {i} ({m['role']}) is trained"
    if out.report.method == "differential":
        # Training starts exactly where a model would start generating.
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = stock(tokenizer, messages[:i], tools, tokenize=False, add_generation_prompt=True)
            assert text.startswith(prompt)
            before = np.flatnonzero(trained & (out.offsets[:, 1] <= len(prompt)))
            assert not len(before) or out["message_index"][before].max() < i


@pytest.mark.parametrize("file", STOCK)
def test_fallback_masks_correctly_or_refuses(file, capsys):
    tokenizer = tokenizer_for(file)
    outcomes: collections.Counter = collections.Counter()

    # An eighth of the profile's examples per template (25 in CI): there are about fifty templates.
    @settings(max_examples=max(1, settings.default.max_examples // 8))
    @given(drawn=MIXED)
    def run(drawn):
        messages, tools = drawn
        messages = plant(messages)
        try:
            out = labelmask.mask_conversation(messages, tokenizer, tools=tools, return_tensors="np")
        except labelmask.LabelmaskError as exc:
            assert str(exc)
            assert isinstance(exc, labelmask.TemplateRaisedError) or exc.template.startswith("unregistered-")
            if isinstance(exc, labelmask.UnverifiedTemplateError):
                assert "register_template" in str(exc)
            outcomes[type(exc).__name__] += 1
            return
        assert out.report.method in ("differential", "generation")
        check_masked(tokenizer, messages, tools, out)
        outcomes["masked"] += 1

    run()
    with capsys.disabled():
        print(f"\n{file}: {dict(sorted(outcomes.items()))}")


# --- Example tests ---------------------------------------------------------------------------

KEEP = labelmask.Policy(on_empty="keep")  # compare samples with nothing to train too
KEEP_EMPTY = labelmask.Policy(on_empty="keep", empty_reasoning=True)
USER_ASSISTANT = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


def unregistered(name: str, source: str):
    """Setup ``name``'s tokenizer with its stock template made unrecognisable (a trailing comment)."""
    tokenizer = load_tokenizer(name)
    tokenizer.chat_template = source + "{# not the registered revision #}"
    return tokenizer


def test_without_fallback_an_unregistered_template_raises_naming_it():
    tok = load_tokenizer("llama2")
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
    with pytest.raises(
        labelmask.TemplateNotFoundError, match=r"sha256:[0-9a-f]{64}, first line \"\{% for m in messages"
    ) as info:
        labelmask.mask_conversation(USER_ASSISTANT, tok, fallback=False)
    assert not isinstance(info.value, labelmask.UnverifiedTemplateError)


def test_a_template_without_generation_prompt_trains_what_a_model_would_have_to_write():
    # No add_generation_prompt branch: prompted with the user turn alone, a model must write
    # the "### assistant" line itself, so that is part of what it learns.
    tok = load_tokenizer("llama2")
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
    out = labelmask.mask_conversation(USER_ASSISTANT, tok)
    assert out.report.method == "differential"
    trained = [t for t, label in zip(out["input_ids"], out["labels"]) if label != labelmask.IGNORE_INDEX]
    assert tok.decode(trained) == "### assistant\nb\n"


def test_a_template_that_rewrites_history_is_refused_at_the_rewritten_turn():
    # Qwen3 drops the reasoning of assistant turns before the last user query.
    tok = unregistered("qwen3", load_tokenizer("qwen3").chat_template)
    messages = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "reasoning_content": "thinking about q1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    with pytest.raises(labelmask.UnverifiedTemplateError, match="at message 1: the template renders") as info:
        labelmask.mask_conversation(messages, tok)
    assert info.value.message_index == 1
    assert "register_template" in str(info.value)
    # Even without reasoning, Qwen3 writes an empty think block only into the last turn.
    del messages[1]["reasoning_content"]
    with pytest.raises(labelmask.UnverifiedTemplateError, match="at message 1"):
        labelmask.mask_conversation(messages, tok)
    # One exchange rewrites nothing: the derived mask is used, and equals the annotation's.
    derived = labelmask.mask_conversation(messages[2:], tok)
    annotated = labelmask.mask_conversation(messages[2:], load_tokenizer("qwen3"))
    assert (derived.report.method, annotated.report.method) == ("differential", "annotated")
    assert derived["labels"] == annotated["labels"]


def test_policies_the_derivation_cannot_honour_are_refused():
    tok = unregistered("qwen3", load_tokenizer("qwen3").chat_template)
    for policy in (labelmask.Policy(roles={"user", "assistant"}), labelmask.Policy(reasoning=False)):
        with pytest.raises(labelmask.UnverifiedTemplateError, match="the policy asks for"):
            labelmask.mask_conversation(USER_ASSISTANT, tok, policy=policy)


def test_an_end_of_conversation_suffix_is_not_trained():
    # Phi-3 appends <|endoftext|> only at the very end; the reply's own <|end|> is its end of turn.
    tok = unregistered("phi3", load_tokenizer("phi3").chat_template)
    out = labelmask.mask_conversation(USER_ASSISTANT * 2, tok)
    trained = tok.decode([t for t, label in zip(out["input_ids"], out["labels"]) if label != labelmask.IGNORE_INDEX])
    assert out.text.endswith("<|end|>\n<|endoftext|>")
    assert trained == "b<|end|>b<|end|>"


@pytest.mark.parametrize("name", sorted(CASES))
def test_derived_labels_equal_the_annotation_wherever_the_derivation_is_verified(name, tokenizers, capsys):
    """The annotated templates, made unrecognisable: the derived mask, when not refused, is the annotated one."""
    case = CASES[name]
    annotated_tok = tokenizers[name]
    tok = unregistered(name, annotated_tok.chat_template)
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=max(1, settings.default.max_examples // 16))
    @given(drawn=case.strategy, kwargs=case.kwargs)
    def run(drawn, kwargs):
        messages, tools = drawn
        # A derivation cannot tell an empty think block the template inserted (Part.EMPTY_REASONING,
        # untrained by default) from other template text in the reply: it trains it, as the
        # annotation does under Policy(empty_reasoning=True). add_eos=False: the stock render,
        # which is all the fallback sees (GLM-4.5's last reply is otherwise closed by its final_eot).
        annotated = labelmask.mask_conversation(
            messages, annotated_tok, tools=tools, policy=KEEP_EMPTY, add_eos=False, **kwargs
        )
        if case.parts:
            # The annotation's header says the template reads typed parts (labelmask wraps string
            # content for it); the fallback cannot know, so it is given what the template reads.
            messages = [
                {**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m.get("content"), str) else m
                for m in messages
            ]
        try:
            derived = labelmask.mask_conversation(messages, tok, tools=tools, policy=KEEP, **kwargs)
        except labelmask.UnverifiedTemplateError:
            outcomes["refused"] += 1
            return
        assert derived.text == annotated.text
        assert derived["input_ids"] == annotated["input_ids"]
        if derived.report.method == "generation":
            # LLaVA's stock template carries {% generation %} around "reply + ' '": the blocks are
            # trusted as written, so the space before a block (turn text the annotation trains,
            # its header ending before it), alone or merged with the reply's first word, is left
            # out.
            d = {i for i, label in enumerate(derived["labels"]) if label != labelmask.IGNORE_INDEX}
            a = {i for i, label in enumerate(annotated["labels"]) if label != labelmask.IGNORE_INDEX}
            # LFM2.5's blocks end with "<|im_end|>\n": the newline right after a reply's end of turn,
            # which the model never generates (it has stopped), is trained by the blocks only.
            eot_ends = {s.end for s in annotated.spans if s.kind == "eot"}
            for t in d - a:
                start, end = derived.offsets[t]
                assert start in eot_ends and derived.text[start:end].isspace(), derived.text[start:end]
            d &= a
            blocks = [(s.start, s.end) for s in derived.spans if s.kind == "content"]
            for t in a - d:  # trained by the annotation only: never a token wholly inside a block
                start, end = derived.offsets[t]
                assert not any(b0 <= start and end <= b1 for b0, b1 in blocks), derived.text[start:end]
            outcomes["equal up to block edges"] += 1
            return
        unknowable = unknowable_tokens(annotated)
        if unknowable:
            # Those tokens aside, the labels agree.
            same = [t for t in range(len(derived["labels"])) if t not in unknowable]
            assert [derived["labels"][t] for t in same] == [annotated["labels"][t] for t in same]
            outcomes["equal but where a derivation cannot know"] += 1
            return
        assert derived["labels"] == annotated["labels"]
        outcomes["equal"] += 1

    run()
    with capsys.disabled():
        print(f"\n{name}: {dict(sorted(outcomes.items()))}")


def unknowable_tokens(out) -> set[int]:
    """Tokens an annotation decides from what prefix renders cannot show: an empty reasoning block
    the template inserts (which reads as the reply's own text), and an end of turn written
    outside its reply's turn (GLM's <|user|>, <|observation|>: it reads as the next turn's header)."""
    turns = [(s.message, s.start, s.end) for s in out.spans if s.kind == "turn"]
    spans = [
        (s.start, s.end)
        for s in out.spans
        if s.kind == "empty_reasoning"
        or (s.kind == "eot" and not any(m == s.message and a <= s.start and s.end <= b for m, a, b in turns))
    ]
    return {t for t, (a, b) in enumerate(out.offsets) if any(a < end and start < b for start, end in spans)}


# --- {% generation %} templates -----------------------------------------------------------

GENERATION_IN_SET_BLOCK = (
    "{%- for message in messages %}{% if message.role == 'assistant' %}"
    "{% set body %}{% generation %}{{ message.content }}<|im_end|>{% endgeneration %}{% endset %}"
    "<|im_start|>assistant\n{{ body }}\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def trained_text(tokenizer, out):
    return tokenizer.decode([t for t, label in zip(out["input_ids"], out["labels"]) if label != labelmask.IGNORE_INDEX])


def test_generation_blocks_are_exact_inside_a_set_block_where_transformers_tracker_is_not():
    tok = load_tokenizer("qwen3")
    tok.chat_template = GENERATION_IN_SET_BLOCK
    messages = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello you"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "See you"},
    ]
    out = labelmask.mask_conversation(messages, tok)
    assert out.report.method == "generation"
    assert trained_text(tok, out) == "Hello you<|im_end|>See you<|im_end|>"
    # transformers counts emitted characters, and a set block emits them later, elsewhere.
    enc = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assert enc["input_ids"] == out["input_ids"]
    flagged = tok.decode([t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m])
    assert flagged != trained_text(tok, out)
    assert "<|im_start|>assistant" in flagged


TRAINING_TEMPLATES = {
    "qwen3_training.jinja": conversations(tools=True, tool_role=True, reasoning=True, max_turns=8),
    "llama3_training.jinja": conversations(max_turns=8),
    "phi3_training.jinja": conversations(max_turns=8),
}


@pytest.mark.parametrize("file", sorted(TRAINING_TEMPLATES))
@given(data=st.data())
def test_trl_training_templates_train_their_generation_blocks(file, data):
    """TRL's training variants carry {% generation %}: labelmask trains exactly the characters
    of those blocks (transformers' return_assistant_tokens_mask is the reference here, where
    its tracker is right), with no annotation and one render."""
    messages, tools = data.draw(TRAINING_TEMPLATES[file])
    tok = tokenizer_for(file)
    try:
        enc = tok.apply_chat_template(
            messages, tools=tools, return_dict=True, return_assistant_tokens_mask=True, return_offsets_mapping=True
        )
    except Exception:
        with pytest.raises(labelmask.LabelmaskError):
            labelmask.mask_conversation(messages, tok, tools=tools)
        return
    out = labelmask.mask_conversation(messages, tok, tools=tools, return_tensors="np")
    assert out.report.method == "generation"
    assert out["input_ids"].tolist() == enc["input_ids"]
    # Character level: the characters of flagged tokens are the characters of trained tokens,
    # up to tokens that straddle a block's edge (counted as boundary drops or straddles).
    flagged = np.zeros(len(out.text), dtype=bool)
    trained = np.zeros(len(out.text), dtype=bool)
    for (a, b), m, label in zip(out.offsets, enc["assistant_masks"], out["labels"]):
        flagged[a:b] |= bool(m)
        trained[a:b] |= label != labelmask.IGNORE_INDEX
    # A control token the data wrote inside a block is never trained (issue 19), though flagged.
    written, ambiguous = _written_control_tokens(Sample(tok, messages, tools, {}, out, Expect()))
    flagged &= ~(written | ambiguous)
    trained &= ~(written | ambiguous)
    differ = np.flatnonzero(flagged != trained)
    assert len(differ) == 0 or out.report.n_boundary_dropped + out.report.n_straddle > 0, out.text[differ[0] :][:40]


# --- Attribution: derived spans train only the reply's own text (issue 18, point 3) --------

# A ChatML-like template whose assistant turn writes another message's text: the text of the
# latest earlier message of role SOURCE (the user's question, the system prompt, a tool result,
# an earlier reply), at a PLACE in the turn.
_ECHO_MACRO = (
    "{% macro echo(i) %}{% set ns = namespace(text='') %}{% for p in messages[:i] %}"
    "{% if p.role == '@SOURCE' and p.content is string %}{% set ns.text = p.content %}{% endif %}"
    "{% endfor %}{{ ns.text }}{% endmacro %}"
)
ECHO_PLACES = ("header", "before", "middle", "after", "after_eot")


def echo_template(source: str, place: str, blocks: str) -> str:
    """The template echoing ``source`` at ``place``; ``blocks``: no {% generation %} tags,
    tags around the reply's own text and end of turn only ("own"), or around the whole turn
    after its header, echo included ("all")."""
    echo = "{{ echo(loop.index0) }}"
    content = "(m.content if m.content is string else '')"
    half = f"({content}|length // 2)"
    header = f" (re: {echo})" if place == "header" else ""
    # The assistant turn after its header, as (template text, is an echo) pieces.
    if place == "middle":
        pieces = [(f"{{{{ {content}[:{half}] }}}}", False), (echo, True), (f"{{{{ {content}[{half}:] }}}}", False)]
    else:
        pieces = [(f"{{{{ {content} }}}}", False)]
    if place == "before":
        pieces.insert(0, (echo + "\n", True))
    if place == "after":
        pieces.append(("\n" + echo, True))
    pieces.append(("<|im_end|>", False))
    pieces.append(("\n" + (f"[reminder: {echo}]\n" if place == "after_eot" else ""), place == "after_eot"))
    if blocks == "all":
        body = "{% generation %}" + "".join(p for p, _ in pieces) + "{% endgeneration %}"
    elif blocks == "own":
        body = ""
        for piece, is_echo in pieces:
            body += piece if is_echo or piece == "\n" else "{% generation %}" + piece + "{% endgeneration %}"
    else:
        body = "".join(p for p, _ in pieces)
    prompt_header = header.replace("loop.index0", "messages|length")
    return (
        _ECHO_MACRO.replace("@SOURCE", source)
        + "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant"
        + header
        + "\n"
        + body
        + "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
        + "{% if add_generation_prompt %}<|im_start|>assistant"
        + prompt_header
        + "\n{% endif %}"
    )


@cache
def chatml_tokenizer():
    return load_tokenizer("qwen3")  # ChatML's tokens; each test sets its template


ECHO_MARK = "⟦m{}⟧"  # letters and digits, which the derivation's perturbation changes


def trained_foreign_marks(messages, out) -> list[tuple[int, int]]:
    """(message, trained token's message) for each character of a message's planted mark that a
    token of another message trains."""
    trained = out["labels"] != labelmask.IGNORE_INDEX
    owner = np.full(len(out.text), -1)
    for t in np.flatnonzero(trained):
        a, b = out.offsets[t]
        owner[a:b] = out["message_index"][t]
    found = []
    for i in range(len(messages)):
        mark = ECHO_MARK.format(i)
        for k in (k.start() for k in re.finditer(re.escape(mark), out.text)):
            found += [(i, int(o)) for o in set(owner[k : k + len(mark)].tolist()) if o not in (-1, i)]
    return found


# The echo templates write no tool calls: replies that carry some are trained as rendered, so the
# attribution check still runs on them (the default refusal is tests/test_dropped.py's).
ECHO_POLICY = labelmask.Policy(on_empty="keep", on_dropped_tool_calls="train")


@settings(max_examples=max(1, settings.default.max_examples // 2))
@given(
    drawn=conversations(tools=True, tool_role=True, max_turns=6),
    source=st.sampled_from(["user", "system", "tool", "assistant"]),
    place=st.sampled_from(ECHO_PLACES),
    blocks=st.sampled_from(["none", "own", "all"]),
)
def test_the_fallback_never_trains_text_another_message_wrote(drawn, source, place, blocks):
    """Acceptance 3: over templates echoing another message's text into the assistant turn,
    the fallback refuses or trains no character of that text."""
    messages, tools = drawn
    # A mark at both ends: the first half of a reply cut in two still holds one whole.
    messages = [
        {**m, "content": ECHO_MARK.format(i) + (m.get("content") or "") + ECHO_MARK.format(i)}
        for i, m in enumerate(messages)
    ]
    tok = chatml_tokenizer()
    tok.chat_template = echo_template(source, place, blocks)
    try:
        out = labelmask.mask_conversation(messages, tok, tools=tools, return_tensors="np", policy=ECHO_POLICY)
    except labelmask.LabelmaskError as exc:
        assert isinstance(exc, labelmask.UnverifiedTemplateError), exc
        assert "register_template" in str(exc)
        return
    assert out.report.method == ("differential" if blocks == "none" else "generation")
    assert out.text == tok.apply_chat_template(messages, tools=tools, tokenize=False)
    assert trained_foreign_marks(messages, out) == []
    # The reply's own text is still trained: its mark's first occurrence is its own (an echo
    # of it comes later), trained as that reply's.
    trained = out["labels"] != labelmask.IGNORE_INDEX
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            k = out.text.find(ECHO_MARK.format(i))
            mine = trained & (out["message_index"] == i) & (out.offsets[:, 0] <= k) & (out.offsets[:, 1] > k)
            assert mine.any(), f"message {i}'s reply is not trained"


CHATML_TURN = "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
CHATML_PROMPT = "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"


def chatml_with_reply(reply: str) -> str:
    """A ChatML template whose assistant turn is ``reply`` (Jinja), every other turn stock."""
    return (
        "{% for m in messages %}{% if m.role == 'assistant' %}"
        + reply
        + "{% else %}"
        + CHATML_TURN
        + "{% endif %}{% endfor %}"
        + CHATML_PROMPT
    )


ISSUE_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Six."},
]


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        # The issue's four reproducers, each trained under check="full" before.
        (
            "<|im_start|>assistant\nRe: {{ messages[loop.index0-1].content }}\n{{ m.content }}<|im_end|>\n",
            r"at message 2: the reply's output changes when the text of message 1 \(user\) changes: "
            "the template writes another message's text into this turn",
        ),
        (
            "<|im_start|>assistant\n{{ m.content }} ({{ messages[0].content }})<|im_end|>\n",
            r"at message 2: .* text of message 0 \(system\) changes",
        ),
        (
            "<|im_start|>assistant\n{% if loop.index0 > 2 %}As I said: {{ messages[loop.index0-2].content }} "
            "{% endif %}{{ m.content }}<|im_end|>\n",
            r"at message 4: .* text of message 2 \(assistant\) changes",
        ),
        (
            "<|im_start|>assistant\n{{ m.content }}<|im_end|>\n[reminder: {{ messages[0].content }}]\n",
            r"at message 2: the template writes text after this reply's end of turn '<\|im_end\|>' "
            r"\('\[reminder: Be brief.\]'\), which a model never generates",
        ),
        # Template text after the end of turn, no other message's text in it.
        (
            "<|im_start|>assistant\n{{ m.content }}<|im_end|>\n[be kind]\n",
            r"at message 2: the template writes text after this reply's end of turn '<\|im_end\|>'",
        ),
    ],
    ids=[
        "user-question-echoed",
        "system-prompt-in-reply",
        "earlier-reply-quoted",
        "reminder-after-eot",
        "literal-after-eot",
    ],
)
def test_a_reply_holding_text_it_did_not_write_is_refused(reply, match):
    tok = chatml_tokenizer()
    tok.chat_template = chatml_with_reply(reply)
    with pytest.raises(labelmask.UnverifiedTemplateError, match=match) as info:
        labelmask.mask_conversation(ISSUE_CONVERSATION, tok, check="full")
    assert "register_template" in str(info.value)
    assert info.value.message_index == int(re.search(r"at message (\d)", match).group(1))


def test_the_same_echoes_in_generation_blocks_are_refused():
    tok = chatml_tokenizer()
    for reply, match in [
        (
            "<|im_start|>assistant\n{% generation %}Re: {{ messages[loop.index0-1].content }}\n{{ m.content }}"
            "<|im_end|>{% endgeneration %}\n",
            r"at message 2: .* text of message 1 \(user\) changes",
        ),
        (  # look-ahead: the reply's block quotes the next user message
            "<|im_start|>assistant\n{% generation %}{{ m.content }}{% if not loop.last %} "
            "{{ messages[loop.index0+1].content }}{% endif %}<|im_end|>{% endgeneration %}\n",
            r"at message 2: .* text of message 3 \(user\) changes",
        ),
        (
            "<|im_start|>assistant\n{% generation %}{{ m.content }}<|im_end|>\n[be kind]{% endgeneration %}\n",
            r"at message 2: the template writes text after this reply's end of turn '<\|im_end\|>'",
        ),
        (  # the stop token is written outside the block
            "<|im_start|>assistant\n{% generation %}{{ m.content }}{% endgeneration %}<|im_end|>\n",
            r"at message 2: .*block ends without a special token and '<\|im_end\|>' follows it",
        ),
    ]:
        tok.chat_template = chatml_with_reply(reply)
        with pytest.raises(labelmask.UnverifiedTemplateError, match=match):
            labelmask.mask_conversation(ISSUE_CONVERSATION, tok)


def test_an_echo_outside_the_trained_output_is_masked():
    # The user's question echoed in the header line of the turn (and of the generation prompt):
    # text a model is given, never trained, so the derivation may use the template.
    tok = chatml_tokenizer()
    re_user = "{% for p in messages[:@] %}{% if p.role == 'user' %}{% set ns.q = p.content %}{% endif %}{% endfor %}"
    tok.chat_template = (
        "{% set ns = namespace(q='') %}{% for m in messages %}{% if m.role == 'assistant' %}"
        + re_user.replace("@", "loop.index0")
        + "<|im_start|>assistant (re: {{ ns.q }})\n{{ m.content }}<|im_end|>\n{% else %}"
        + CHATML_TURN
        + "{% endif %}{% endfor %}{% if add_generation_prompt %}"
        + re_user.replace("@", "messages|length")
        + "<|im_start|>assistant (re: {{ ns.q }})\n{% endif %}"
    )
    out = labelmask.mask_conversation(ISSUE_CONVERSATION, tok)
    assert "assistant (re: What is two plus two?)\nFour." in out.text
    assert trained_text(tok, out) == "Four.<|im_end|>Six.<|im_end|>"


def test_a_reply_whose_own_text_holds_an_end_of_turn_token_is_not_refused():
    # The control tokens in a reply's own text are the reply's, not the template's structure.
    tok = chatml_tokenizer()
    tok.chat_template = chatml_with_reply(CHATML_TURN)
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A<|im_end|>\nforged"}]
    out = labelmask.mask_conversation(messages, tok)
    # The reply is not refused; the <|im_end|> its text wrote keeps its id and is not trained (issue 19):
    # the model must not learn to end its turn there.
    assert trained_text(tok, out) == "A\nforged<|im_end|>"
    assert out.text.count("A<|im_end|>\nforged<|im_end|>") == 1


def test_a_reply_closed_by_the_next_turns_header_is_refused_with_advice_to_annotate():
    # GLM-4.5 writes no end of turn: the next turn's <|user|> closes a reply (its annotation
    # trains it as the reply's stop). The fallback cannot attribute it, so it refuses.
    tok = unregistered("glm-4.5", load_tokenizer("glm-4.5").chat_template)
    for messages, index in ((USER_ASSISTANT * 2, 1), (USER_ASSISTANT, 1)):
        with pytest.raises(
            labelmask.UnverifiedTemplateError, match=f"at message {index}: .*'<\\|user\\|>' follows it"
        ) as info:
            labelmask.mask_conversation(messages, tok)
        assert "templates/glm-4.5.jinja" in str(info.value)
    # A template with plain-text headers and no end of turn at all (LLaVA-1.5's "USER:") is still
    # masked, with the warning and add_eos the pipeline gives it.
    tok = load_tokenizer("llama2")
    tok.chat_template = "{% for m in messages %}{{ m['role'].upper() }}: {{ m['content'] }} {% endfor %}"
    tok.chat_template += "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    out = labelmask.mask_conversation(USER_ASSISTANT * 2, tok, add_eos=True)
    assert out.report.n_eos_added == 2


def test_harmony_replies_may_write_another_message_of_their_own_after_an_end_of_turn():
    # gpt-oss: analysis, <|end|>, then <|start|>assistant (the generation prompt again) and the final
    # channel: one output the model generates whole. Its <|end|> closes user turns too.
    tok = unregistered("gpt-oss", load_tokenizer("gpt-oss").chat_template)
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "thinking": "hmm"}]
    out = labelmask.mask_conversation(messages, tok)
    assert trained_text(tok, out) == (
        "<|channel|>analysis<|message|>hmm<|end|><|start|>assistant<|channel|>final<|message|>A<|return|>"
    )
    # In the history, gpt-oss ends a reply with <|end|>, written only once the next message follows.
    with pytest.raises(labelmask.UnverifiedTemplateError, match="at message 1: .*'<\\|end\\|>' follows it"):
        labelmask.mask_conversation(USER_ASSISTANT * 2, tok)
