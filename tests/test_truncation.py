"""Truncation to max_length: what is kept, what is cut, and never a sample silently empty."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import labelmask
from labelmask.testing.strategies import conversations

# Llama 3's template writes no tool calls: the drawn ones are masked as rendered (tests/test_dropped.py
# has the default refusal); truncation is what is tested here.
KEEP = labelmask.Policy(on_empty="keep", on_dropped_tool_calls="train")
CONVERSATIONS = conversations(tools=True, tool_role=True, max_turns=8)


def full(tokenizer, messages, tools):
    return labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=KEEP, return_tensors="np")


def check_consistent(out):
    """Kept offsets still index the rendered text, token for token."""
    assert len(out.offsets) == len(out["input_ids"]) == out.report.n_tokens
    assert out.report.n_trained == int((out["labels"] != labelmask.IGNORE_INDEX).sum())


@settings(max_examples=100)
@given(drawn=CONVERSATIONS, data=st.data())
def test_right_keeps_the_first_tokens(tokenizers, drawn, data):
    tokenizer = tokenizers["qwen3"]
    messages, tools = drawn
    whole = full(tokenizer, messages, tools)
    n = whole.report.n_tokens
    max_length = data.draw(st.integers(1, n + 5), label="max_length")
    out = labelmask.mask_conversation(
        messages, tokenizer, tools=tools, policy=KEEP, return_tensors="np", max_length=max_length
    )
    k = min(n, max_length)
    assert out["input_ids"].tolist() == whole["input_ids"][:k].tolist()
    assert out["labels"].tolist() == whole["labels"][:k].tolist()
    assert out.offsets.tolist() == whole.offsets[:k].tolist()
    assert out.report.n_cut == n - k
    check_consistent(out)


@settings(max_examples=100)
@given(drawn=CONVERSATIONS, data=st.data())
def test_left_keeps_the_system_prompt_and_the_last_tokens(tokenizers, drawn, data):
    tokenizer = tokenizers["qwen3"]
    messages, tools = drawn
    whole = full(tokenizer, messages, tools)
    n = whole.report.n_tokens
    roles, owners = whole["role"], whole["message_index"]
    other = np.flatnonzero((owners >= 0) & (roles != labelmask.Role.SYSTEM))
    prefix = int(other[0])
    max_length = data.draw(st.integers(1, n + 5), label="max_length")
    kwargs = dict(tools=tools, policy=KEEP, return_tensors="np", max_length=max_length, truncation="left")
    if n > max_length and prefix >= max_length:
        with pytest.raises(labelmask.TruncationError, match="system prompt"):
            labelmask.mask_conversation(messages, tokenizer, **kwargs)
        return
    out = labelmask.mask_conversation(messages, tokenizer, **kwargs)
    if n <= max_length:
        assert out["input_ids"].tolist() == whole["input_ids"].tolist()
        return
    tail = max_length - prefix
    expected = np.concatenate([whole["input_ids"][:prefix], whole["input_ids"][n - tail :]])
    assert out["input_ids"].tolist() == expected.tolist()
    assert out["labels"][:prefix].tolist() == whole["labels"][:prefix].tolist()
    assert out["labels"][prefix:].tolist() == whole["labels"][n - tail :].tolist()
    # The system prompt survives whole.
    system = [i for i, m in enumerate(messages) if m["role"] == "system"]
    for i in system:
        assert (whole["message_index"] == i).sum() == (out["message_index"] == i).sum()
    assert out.report.n_cut == n - max_length
    check_consistent(out)


@settings(max_examples=60)
@given(drawn=CONVERSATIONS, data=st.data())
def test_turns_drops_whole_earliest_exchanges_and_renders_again(tokenizers, drawn, data):
    tokenizer = tokenizers["llama3"]
    messages, tools = drawn
    whole = full(tokenizer, messages, None)
    n = whole.report.n_tokens
    max_length = data.draw(st.integers(1, n + 5), label="max_length")
    lead = 1 if messages[0]["role"] == "system" else 0
    starts = [i for i, m in enumerate(messages) if m["role"] == "user" and i >= lead]
    kwargs = dict(policy=KEEP, return_tensors="np", max_length=max_length, truncation="turns")
    fits = [s for s in starts if full(tokenizer, messages[:lead] + messages[s:], None).report.n_tokens <= max_length]
    if n <= max_length:
        out = labelmask.mask_conversation(messages, tokenizer, **kwargs)
        assert out.report.n_cut == 0
        return
    if not [s for s in fits if s != starts[0]]:
        with pytest.raises(labelmask.TruncationError, match="last one"):
            labelmask.mask_conversation(messages, tokenizer, **kwargs)
        return
    out = labelmask.mask_conversation(messages, tokenizer, **kwargs)
    start = min(s for s in fits if s != starts[0])
    expected = full(tokenizer, messages[:lead] + messages[start:], None)
    assert out["input_ids"].tolist() == expected["input_ids"].tolist()
    assert out["labels"].tolist() == expected["labels"].tolist()
    assert out.report.n_dropped_messages == start - lead
    assert out.report.n_cut == n - out.report.n_tokens
    check_consistent(out)


@given(drawn=CONVERSATIONS)
def test_drop_refuses_exactly_the_samples_over_max_length(tokenizers, drawn):
    tokenizer = tokenizers["qwen3"]
    messages, tools = drawn
    n = full(tokenizer, messages, tools).report.n_tokens
    assume(n > 2)
    out = labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=KEEP, max_length=n, truncation="drop")
    assert out.report.n_tokens == n
    with pytest.raises(labelmask.TruncationError, match="over max_length"):
        labelmask.mask_conversation(messages, tokenizer, tools=tools, max_length=n - 1, truncation="drop")


def test_a_cut_that_leaves_nothing_to_train_raises_or_is_kept_and_counted(tokenizers):
    tokenizer = tokenizers["qwen3"]
    messages = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "Short reply."}]
    with pytest.raises(labelmask.NothingToTrainError, match="after truncation='right' cut"):
        labelmask.mask_conversation(messages, tokenizer, max_length=20)
    out = labelmask.mask_conversation(messages, tokenizer, max_length=20, policy=KEEP)
    assert out.report.n_trained == 0 and out.report.n_cut > 0
    # Left truncation keeps the reply instead.
    left = labelmask.mask_conversation(messages, tokenizer, max_length=20, truncation="left")
    assert left.report.n_trained > 0


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"max_length": 0}, ValueError, "max_length=0"),
        ({"max_length": 10, "truncation": "middle"}, ValueError, "truncation='middle'"),
        ({"max_length": 10, "policy": "assistant"}, TypeError, "labelmask.Policy"),
    ],
)
def test_bad_truncation_arguments_raise_clearly(tokenizers, kwargs, error, fragment):
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(error, match=fragment):
        labelmask.mask_conversation(messages, tokenizers["qwen3"], **kwargs)
