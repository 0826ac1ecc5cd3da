"""gpt-oss (Harmony): what is trained, written out by hand from the format.

Harmony (openai/harmony docs/format.md): every message is ``<|start|>{header}<|message|>{text}<|end|>``.
The generation prompt is ``<|start|>assistant``; the model writes the rest of its reply: the
channel (``analysis``, ``commentary``, ``final``), a recipient for a tool call, ``<|message|>``,
the text, and the closing token. It stops with ``<|return|>`` after the final answer or
``<|call|>`` after a tool call (gpt-oss generation_config ``eos_token_id``); ``<|end|>`` closes a
message it goes on from (its analysis). A final answer kept in the history is closed by
``<|end|>`` where the model wrote ``<|return|>``: not its output, so not trained.

The expected strings below are typed from that format, not produced by labelmask; the stock
render (transformers' ``apply_chat_template`` at labelmask's fixed instant: the template writes
today's date) checks that each conversation is rendered as the model sees it.
"""

from __future__ import annotations

import numpy as np
import pytest

import labelmask
from labelmask import IGNORE_INDEX, Policy
from labelmask.testing._checks import labelmask_clock
from labelmask.testing.strategies import TOOLS
from tests.trained import trained_runs

WEATHER_CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}

# Analysis, a tool call, its result, then analysis and a final answer.
TOOL_EXCHANGE = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "thinking": "Need the weather tool.", "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "content": "18C, sunny"},
    {"role": "assistant", "content": "Sunny, 18C.", "thinking": "The tool says sunny."},
]


@pytest.fixture(scope="module")
def tokenizer(tokenizers):
    return tokenizers["gpt-oss"]


def mask(messages, tokenizer, **kwargs):
    out = labelmask.mask_conversation(messages, tokenizer, return_tensors="np", **kwargs)
    assert out.report.method == "annotated"
    assert out.report.template == "gpt-oss"
    tools = kwargs.get("tools")
    with labelmask_clock():
        assert out.text == tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
        assert out["input_ids"].tolist() == tokenizer.apply_chat_template(messages, tools=tools)["input_ids"]
    return out


def trained_decoded(out, tokenizer) -> str:
    ids = np.asarray(out["input_ids"])
    return tokenizer.decode(ids[np.asarray(out["labels"]) != IGNORE_INDEX].tolist())


def test_analysis_tool_call_result_and_final(tokenizer):
    out = mask(TOOL_EXCHANGE, tokenizer, tools=TOOLS)
    # The tool call's analysis is dropped by the template (a final answer follows it); the
    # tool call and its <|call|>, then the last reply's analysis and final answer and <|return|>,
    # including the <|end|><|start|>assistant between its two messages, which the model writes.
    assert trained_runs(out) == [
        ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>',
        "<|channel|>analysis<|message|>The tool says sunny.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Sunny, 18C.<|return|>",
    ]
    assert trained_decoded(out, tokenizer) == "".join(trained_runs(out))
    assert "Need the weather tool." not in out.text
    # The reply headers, the system, developer, user and tool messages are not trained.
    assert out.text.count("<|start|>assistant") == 3
    assert "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>" in out.text
    assert "Current date: 2026-01-01" in out.text  # labelmask's fixed instant


def test_a_tool_calls_analysis_is_trained_while_no_final_answer_follows(tokenizer):
    # The same call, its analysis given as thinking or as content (the template writes both as analysis).
    for analysis in ({"thinking": "Look it up."}, {"content": "Look it up."}):
        messages = [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "tool_calls": [WEATHER_CALL], **analysis},
            {"role": "tool", "content": "18C, sunny"},
        ]
        out = mask(messages, tokenizer, tools=TOOLS)
        assert trained_runs(out) == [
            "<|channel|>analysis<|message|>Look it up.<|end|>"
            '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>'
        ]
        assert out.text.endswith(
            '<|call|><|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"18C, sunny"<|end|>'
        )


def test_a_final_answer_in_the_history_is_trained_without_its_closing_end(tokenizer):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "thinking": "Greet back."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye!"},
    ]
    out = mask(messages, tokenizer)
    # Written as the template keeps history: analysis dropped, <|end|> in place of the model's <|return|>.
    assert "<|start|>assistant<|channel|>final<|message|>Hello!<|end|><|start|>user<|message|>Bye<|end|>" in out.text
    assert "Greet back." not in out.text
    assert trained_runs(out) == [
        "<|channel|>final<|message|>Hello!",
        "<|channel|>final<|message|>Bye!<|return|>",
    ]
    # The <|end|> after "Hello!" is one token, of no message, untrained.
    end = out.text.index("Hello!<|end|>") + len("Hello!")
    t = int(np.searchsorted(out.offsets[:, 0], end))
    assert out.text[slice(*out.offsets[t])] == "<|end|>"
    assert out["labels"][t] == IGNORE_INDEX
    assert out["message_index"][t] == -1


def test_a_conversation_ending_on_a_user_message_trains_no_stop_token(tokenizer):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "?"},
    ]
    out = mask(messages, tokenizer)  # (the reply's <|return|> was replaced; nothing here stops it)
    assert trained_runs(out) == ["<|channel|>final<|message|>Hello!"]


def test_policy_without_reasoning(tokenizer):
    out = mask(TOOL_EXCHANGE, tokenizer, tools=TOOLS, policy=Policy(reasoning=False))
    # The analysis message (through its <|end|>) is reasoning; the <|start|>assistant that opens
    # the final message is still what the model writes after it.
    assert trained_runs(out) == [
        ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>',
        "<|start|>assistant<|channel|>final<|message|>Sunny, 18C.<|return|>",
    ]


def test_template_arguments_reach_the_system_block_untrained(tokenizer):
    messages = [{"role": "developer", "content": "Be terse."}, *TOOL_EXCHANGE[1:]]
    kwargs = {"reasoning_effort": "high", "model_identity": "You are Tester.", "builtin_tools": ["python"]}
    out = labelmask.mask_conversation(messages, tokenizer, tools=TOOLS, return_tensors="np", **kwargs)
    with labelmask_clock():
        assert out.text == tokenizer.apply_chat_template(messages, tools=TOOLS, tokenize=False, **kwargs)
    assert out.text.startswith("<|start|>system<|message|>You are Tester.\nKnowledge cutoff: 2024-06\n")
    assert "Reasoning: high\n\n# Tools\n\n## python\n\n" in out.text
    assert "<|start|>developer<|message|># Instructions\n\nBe terse.\n\n# Tools\n\n## functions\n\n" in out.text
    assert trained_runs(out) == trained_runs(mask(TOOL_EXCHANGE, tokenizer, tools=TOOLS))
