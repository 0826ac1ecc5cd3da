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
    differ = np.flatnonzero(flagged != trained)
    assert len(differ) == 0 or out.report.n_boundary_dropped + out.report.n_straddle > 0, out.text[differ[0] :][:40]
