"""Qwen3.5, 3.6, 3.8 and Qwen3-VL: what is trained, written out by hand from the format.

Each test masks a small conversation with the stock template of TRL 1.16.0 over the family's
vocabulary and compares the trained text (the characters of each run of consecutive trained
tokens) with a string written here from the template's format, never with labelmask's output.
"""

from __future__ import annotations

import pytest

import labelmask
from tests.trained import mask_annotated, trained_runs


@pytest.fixture
def tok(tokenizers):
    """Name -> tokenizer, loaded once per test session."""
    return tokenizers.__getitem__


mask = mask_annotated


TWO_QUESTIONS = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "reasoning_content": "Two and two.", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "reasoning_content": "Three and three.", "content": "6."},
]


def test_qwen36_trains_only_the_reasoning_it_renders(tok):
    """By default Qwen3.6 drops the reasoning of replies before the last user message: the first
    reply is trained without it (it is not in the text), the last one with it and its </think>."""
    out = mask(tok("qwen3.6"), TWO_QUESTIONS, "qwen3.6")
    assert "Two and two." not in out.text
    assert trained_runs(out) == ["4.<|im_end|>", "Three and three.\n</think>\n\n6.<|im_end|>"]


def test_qwen36_preserve_thinking_trains_every_reasoning(tok):
    out = mask(tok("qwen3.6"), TWO_QUESTIONS, "qwen3.6", preserve_thinking=True)
    assert trained_runs(out) == [
        "Two and two.\n</think>\n\n4.<|im_end|>",
        "Three and three.\n</think>\n\n6.<|im_end|>",
    ]


def test_qwen36_reasoning_written_in_the_content(tok):
    """Reasoning given as <think>...</think> inside the content is taken out of it by the template
    and trained in its place; the content after it is trained as the reply."""
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nGreet back.\n</think>\n\nHello!"},
    ]
    out = mask(tok("qwen3.6"), messages, "qwen3.6")
    assert out.text.endswith("<|im_start|>assistant\n<think>\nGreet back.\n</think>\n\nHello!<|im_end|>\n")
    assert trained_runs(out) == ["Greet back.\n</think>\n\nHello!<|im_end|>"]


WEATHER = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "reasoning_content": "Ask the tool.",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "sunny, 21 C"},
    {"role": "assistant", "content": "Sunny, 21 C."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.mark.parametrize("name", ["qwen3.5", "qwen3.6", "qwen3.8"])
def test_tool_call_round_trip(tok, name):
    """The call (reasoning, <tool_call> block in Qwen3.5's XML-like syntax, <|im_end|>) and the
    final reply are trained; the tool result, in a user turn, is not; the final reply, whose
    message carried no reasoning, gets an empty think block from the template, not trained."""
    out = mask(tok(name), WEATHER, name, tools=TOOLS)
    assert "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response><|im_end|>\n" in out.text
    assert out.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nSunny, 21 C.<|im_end|>\n")
    call = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
    assert trained_runs(out) == [
        "Ask the tool.\n</think>\n\n" + call + "<|im_end|>",
        "Sunny, 21 C.<|im_end|>",
    ]


def test_qwen3_vl_tool_call_round_trip(tok):
    """Qwen3-VL writes tool calls as JSON in <tool_call> blocks, with no think block."""
    messages = list(WEATHER)
    messages[1] = {k: v for k, v in WEATHER[1].items() if k != "reasoning_content"}
    out = mask(tok("qwen3-vl"), messages, "qwen3-vl", tools=TOOLS)
    assert trained_runs(out) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "Sunny, 21 C.<|im_end|>",
    ]


HELLO = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


@pytest.mark.parametrize("name", ["qwen3.5", "qwen3.6", "qwen3.8"])
def test_empty_reasoning_is_untrained_by_default_and_trained_on_request(tok, name):
    """A reply without reasoning after the last user message: the template writes
    <think>\\n\\n</think>\\n\\n, of which the generation prompt wrote only <think>\\n. The rest
    is the template's, not the data's: untrained by default; Policy(empty_reasoning=True) trains
    it. Its first token is the \\n\\n that begins in the generation prompt (a straddling token)."""
    tokenizer = tok(name)
    out = mask(tokenizer, HELLO, name)
    assert out.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n")
    assert trained_runs(out) == ["Hello!<|im_end|>"]

    out = mask(tokenizer, HELLO, name, policy=labelmask.Policy(empty_reasoning=True))
    trained = [tokenizer.decode([t]) for t, label in zip(out["input_ids"], out["labels"]) if label != -100]
    assert trained == ["\n\n", "</think>", "\n\n", "Hello", "!", "<|im_end|>"]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("qwen3.6", {"enable_thinking": False}), ("qwen3.5-nothink", {}), ("qwen3.8", {"enable_thinking": False})],
)
def test_an_empty_block_the_generation_prompt_writes_is_header(tok, name, kwargs):
    """Without thinking the generation prompt itself ends with <think>\\n\\n</think>\\n\\n: the
    model never generates it, so it is not trained, whatever the policy."""
    tokenizer = tok(name)
    for policy in (labelmask.Policy(), labelmask.Policy(empty_reasoning=True)):
        out = mask(tokenizer, HELLO, name, policy=policy, **kwargs)
        assert out.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n")
        assert trained_runs(out) == ["Hello!<|im_end|>"]


def test_an_empty_think_block_in_the_data_is_trained(tok):
    """An empty <think></think> the message wrote itself is the data's: trained as reasoning."""
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\n\n</think>\n\nHello!"}]
    out = mask(tok("qwen3.6"), messages, "qwen3.6")
    assert out.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n")
    assert trained_runs(out) == ["\n\n</think>\n\nHello!<|im_end|>"]


def test_qwen38_keeps_earlier_reasoning_by_default(tok):
    """Qwen3.8 preserves earlier replies' reasoning unless preserve_thinking=false."""
    out = mask(tok("qwen3.8"), TWO_QUESTIONS, "qwen3.8")
    assert trained_runs(out) == [
        "Two and two.\n</think>\n\n4.<|im_end|>",
        "Three and three.\n</think>\n\n6.<|im_end|>",
    ]
    out = mask(tok("qwen3.8"), TWO_QUESTIONS, "qwen3.8", preserve_thinking=False)
    assert trained_runs(out) == ["4.<|im_end|>", "Three and three.\n</think>\n\n6.<|im_end|>"]


@pytest.mark.parametrize("name", ["qwen3.6", "qwen3-vl"])
def test_image_placeholders_are_never_trained(tok, name):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A cat."},
    ]
    out = mask(tok(name), messages, name, add_vision_id=True)
    assert "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>" in out.text
    assert trained_runs(out)[-1] == "A cat.<|im_end|>"
    assert all("vision" not in run and "Picture" not in run for run in trained_runs(out))
