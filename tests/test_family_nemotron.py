"""Nemotron 3 and Muse Glimmer: what is trained, written out by hand from the formats.

Each expected string below is the text the model writes after its generation prompt, as
the chat format defines it (not a value labelmask produced); the test compares it with
the text of the tokens labelmask trains, joined into contiguous runs.
"""

from __future__ import annotations

import pytest

import labelmask
from labelmask import Policy
from labelmask.testing.strategies import TOOLS
from tests.trained import trained_runs


def weather_call(city: str) -> dict:
    return {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}


WEATHER_CALL = weather_call("Paris")


def mask(messages, tokenizer, name, **kwargs):
    out = labelmask.mask_conversation(messages, tokenizer, verify=True, **kwargs)
    assert out.report.method == "annotated"
    assert out.report.template == name
    return out


TWO_TURNS_WITH_REASONING = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "reasoning_content": "Add them.", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "reasoning_content": "Add again.", "content": "6"},
]


@pytest.mark.parametrize("name", ["nemotron-3-nano", "nemotron-3-super"])
def test_nemotron_reasoning_on_every_turn(name, tokenizers):
    """Kept history (truncate_history_thinking=false): each reply is <think>\\n reasoning \\n</think>\\n
    answer <|im_end|>; the generation prompt wrote <think>\\n, so training starts after it."""
    out = mask(TWO_TURNS_WITH_REASONING, tokenizers[name], name, truncate_history_thinking=False)
    assert trained_runs(out) == [
        "Add them.\n</think>\n4<|im_end|>",
        "Add again.\n</think>\n6<|im_end|>",
    ]


def test_nemotron_truncated_history_trains_no_inserted_think_block(tokenizers):
    """By default the earlier reply's reasoning is replaced by <think></think>, which the message
    did not carry: untrained, unless Policy(empty_reasoning=True)."""
    tokenizer = tokenizers["nemotron-3-nano"]
    out = mask(TWO_TURNS_WITH_REASONING, tokenizer, "nemotron-3-nano")
    assert "<|im_start|>assistant\n<think></think>\n4<|im_end|>" in out.text
    assert trained_runs(out) == ["\n4<|im_end|>", "Add again.\n</think>\n6<|im_end|>"]
    out = mask(TWO_TURNS_WITH_REASONING, tokenizer, "nemotron-3-nano", policy=Policy(empty_reasoning=True))
    assert trained_runs(out) == ["<think></think>\n4<|im_end|>", "Add again.\n</think>\n6<|im_end|>"]


def test_nemotron_reply_without_reasoning(tokenizers):
    """With thinking on, the template inserts <think></think> (untrained by default); with
    enable_thinking=false the generation prompt writes it, so it is header."""
    tokenizer = tokenizers["nemotron-3-nano"]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    out = mask(messages, tokenizer, "nemotron-3-nano")
    assert out.text.endswith("<|im_start|>assistant\n<think></think>Hello!<|im_end|>\n")
    assert trained_runs(out) == ["Hello!<|im_end|>"]
    out = mask(messages, tokenizer, "nemotron-3-nano", policy=Policy(empty_reasoning=True))
    assert trained_runs(out) == ["<think></think>Hello!<|im_end|>"]
    out = mask(messages, tokenizer, "nemotron-3-nano", enable_thinking=False, policy=Policy(empty_reasoning=True))
    assert trained_runs(out) == ["Hello!<|im_end|>"]


def test_nemotron_tool_call(tokenizers):
    """A call in the Qwen3-Coder XML syntax, after reasoning; the tool result is not trained."""
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "reasoning_content": "Need the tool.", "content": "", "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    out = mask(messages, tokenizers["nemotron-3-nano"], "nemotron-3-nano", tools=TOOLS)
    assert "<tool_response>\nsunny\n</tool_response>" in out.text
    assert trained_runs(out) == [
        "Need the tool.\n</think>\n"
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>\n"
        "<|im_end|>",
        "It is sunny.<|im_end|>",
    ]


def test_nemotron_super_low_effort_note_is_not_trained(tokenizers):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    out = mask(messages, tokenizers["nemotron-3-super"], "nemotron-3-super", low_effort=True)
    assert "Hi\n\n{reasoning effort: low}<|im_end|>" in out.text
    assert trained_runs(out) == ["Hello!<|im_end|>"]


@pytest.mark.parametrize("name", ["nemotron-3.5-lightning", "nemotron-3-ultra"])
def test_nemotron_lightning_joins_reasoning_without_newlines(name, tokenizers):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "reasoning_content": "Greet.", "content": "Hello!"},
    ]
    out = mask(messages, tokenizers[name], name)
    assert out.text.endswith("<|im_start|>assistant\n<think>\nGreet.</think>Hello!<|im_end|>\n")
    assert trained_runs(out) == ["Greet.</think>Hello!<|im_end|>"]


def test_muse_glimmer_reasoning_and_tool_call(tokenizers):
    """After the generation prompt <|start|>assistant the model writes every channel of its reply:
    the to=self reasoning ending <|eom|>, the next <|start|>assistant, the call or the answer, and
    the <|eot|> that stops it."""
    paris = {**WEATHER_CALL, "id": "call_1"}  # the tool result names its call: the header names the tool
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "reasoning_content": "Call the tool.", "content": "", "tool_calls": [paris]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "reasoning_content": "It said sunny.", "content": "Sunny."},
        {"role": "user", "content": "Thanks, and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [weather_call("Rome")]},
        {"role": "assistant", "content": "Checking."},
    ]
    out = mask(messages, tokenizers["muse-glimmer"], "muse-glimmer", tools=TOOLS, current_date="2026-08-12")
    assert out.text.startswith("<|begin_of_text|><|start|>system<|message|>You are a helpful AI assistant.")
    assert (
        '<|start|>tool get_weather<|message|><tool_output name="get_weather">\nsunny\n</tool_output><|eot|>' in out.text
    )
    call = (
        '<atem:function_calls>\n<atem:invoke name="get_weather">\n'
        '<atem:parameter name="city">{}</atem:parameter>\n</atem:invoke>\n</atem:function_calls>'
    )
    assert trained_runs(out) == [
        " to=self<|message|>Call the tool.<|eom|><|start|>assistant to=get_weather<|message|>"
        + call.format("Paris")
        + "<|eot|>",
        " to=self<|message|>It said sunny.<|eom|><|start|>assistant to=user<|message|>Sunny.<|eot|>",
        # A call the next assistant message continues ends with <|eom|>; that message's
        # <|start|>assistant is its generation prompt.
        " to=get_weather<|message|>" + call.format("Rome") + "<|eom|>",
        " to=user<|message|>Checking.<|eot|>",
    ]


HISTORY_CALL_WITH_THINK_IN_CONTENT = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "<think>\nLook it up.\n</think>\n  Checking.  ", "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "content": "sunny"},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "content": " Bye. "},
]
PARIS_CALL_TEXT = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>\n"
)


@pytest.mark.parametrize(
    ("name", "earlier"),
    [
        # Nano: "<think></think>" ~ (what follows the last </think> | trim), then "\n" before the calls.
        ("nemotron-3-nano", "Checking.\n"),
        # Lightning: the same without the trim.
        ("nemotron-3.5-lightning", "\n  Checking.  \n"),
    ],
)
def test_nemotron_history_rewrite_cuts_into_the_content(name, earlier, tokenizers):
    """An earlier reply that wrote its own <think> block in its content, with tool calls: the template
    keeps what follows </think> after an inserted <think></think> (untrained). The last reply is trimmed
    after the inserted <think></think> is put before it, so its leading space stays."""
    out = mask(HISTORY_CALL_WITH_THINK_IN_CONTENT, tokenizers[name], name, tools=TOOLS)
    assert f"<|im_start|>assistant\n<think></think>{earlier}{PARIS_CALL_TEXT}<|im_end|>" in out.text
    assert out.text.endswith("<|im_start|>assistant\n<think></think> Bye.<|im_end|>\n")
    assert trained_runs(out) == [earlier + PARIS_CALL_TEXT + "<|im_end|>", " Bye.<|im_end|>"]
