"""LFM2, LFM2.5 and LFM2.5-VL (Liquid AI): what is trained, written out by hand from the format.

Each test masks a small conversation with the stock template of TRL 1.16.0 over the stand-in
vocabulary (Qwen3's with LFM2's control tokens, see tests/fixtures/NOTICE.md) and compares the
trained text (the characters of each run of consecutive trained tokens) with a string written
here from the template's format, never with labelmask's output. The LFM2.5 templates carry
{% generation %} blocks: the trained tokens are checked against them too.
"""

from __future__ import annotations

import numpy as np
import pytest

import labelmask
from labelmask import IGNORE_INDEX
from labelmask.testing.strategies import TOOLS
from tests.trained import mask_annotated, trained_runs

TOOL_EXCHANGE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "18 C, sunny"},
    {"role": "assistant", "content": "It is 18 C and sunny."},
]

TWO_QUESTIONS = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "thinking": "Two and two.", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "thinking": "Three and three.", "content": "6."},
]


@pytest.fixture
def tok(tokenizers):
    """Name -> tokenizer, loaded once per test session."""
    return tokenizers.__getitem__


mask = mask_annotated


def test_lfm2_refuses_or_skips_the_reply_whose_tool_calls_it_drops(tok):
    """The first revision writes no tool calls (LFM2 expects them written into the content): the reply
    that made one renders as a bare <|im_end|>, refused by default, left untrained under "skip", and
    trained as rendered under "train"; the tool result (inside <|tool_response_start|>...) never is."""
    call = TOOL_EXCHANGE.index(next(m for m in TOOL_EXCHANGE if m.get("tool_calls")))
    with pytest.raises(labelmask.NotRenderedError, match=f"Message {call}: template 'lfm2' does not render"):
        mask(tok("lfm2"), TOOL_EXCHANGE, "lfm2", tools=[TOOLS[0]])
    skip = labelmask.Policy(on_dropped_tool_calls="skip")
    out = mask(tok("lfm2"), TOOL_EXCHANGE, "lfm2", tools=[TOOLS[0]], policy=skip)
    assert out.text.startswith("<|startoftext|><|im_start|>system\nBe brief.\nList of tools: <|tool_list_start|>[")
    assert "<|im_start|>tool\n<|tool_response_start|>18 C, sunny<|tool_response_end|><|im_end|>\n" in out.text
    assert trained_runs(out) == ["It is 18 C and sunny.<|im_end|>"]
    assert out.report.not_rendered == ((call, "tool_calls"),)
    train = labelmask.Policy(on_dropped_tool_calls="train")
    out = mask(tok("lfm2"), TOOL_EXCHANGE, "lfm2", tools=[TOOLS[0]], policy=train)
    assert trained_runs(out) == ["<|im_end|>", "It is 18 C and sunny.<|im_end|>"]


@pytest.mark.parametrize("name", ["lfm2-v2", "lfm2.5", "lfm2.5-v2", "lfm2.5-vl"])
def test_a_tool_call_reply_trains_the_pythonic_call_and_im_end(tok, name):
    out = mask(tok(name), TOOL_EXCHANGE, name, tools=[TOOLS[0]])
    assert trained_runs(out) == [
        "<|tool_call_start|>[get_weather(city='Paris')]<|tool_call_end|><|im_end|>",
        "It is 18 C and sunny.<|im_end|>",
    ]


def test_lfm2_v2_writes_text_before_the_calls(tok):
    messages = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "O'slo"}}},
            ],
        },
    ]
    out = mask(tok("lfm2-v2"), messages, "lfm2-v2")
    assert trained_runs(out) == [
        "Checking.<|tool_call_start|>[get_weather(city='Paris'), get_weather(city='O\\'slo')]"
        "<|tool_call_end|><|im_end|>"
    ]


@pytest.mark.parametrize("name", ["lfm2.5", "lfm2.5-v2", "lfm2.5-vl"])
def test_lfm25_trains_only_the_reasoning_it_renders(tok, name):
    """Reasoning of a reply before the last user message is not written (so not trained); the last
    reply's is written right after the header, <think>...</think> with no newlines, and trained."""
    out = mask(tok(name), TWO_QUESTIONS, name)
    assert "Two and two." not in out.text
    assert trained_runs(out) == ["4.<|im_end|>", "<think>Three and three.</think>6.<|im_end|>"]
    out = mask(tok(name), TWO_QUESTIONS, name, preserve_thinking=True)
    assert trained_runs(out) == [
        "<think>Two and two.</think>4.<|im_end|>",
        "<think>Three and three.</think>6.<|im_end|>",
    ]
    # The reasoning is its own part: a policy that drops it trains the rest of the reply.
    out = mask(tok(name), TWO_QUESTIONS, name, policy=labelmask.Policy(reasoning=False))
    assert trained_runs(out) == ["4.<|im_end|>", "6.<|im_end|>"]


@pytest.mark.parametrize("field", ["thinking", "reasoning_content", "reasoning"])
@pytest.mark.parametrize("name", ["lfm2.5", "lfm2.5-v2", "lfm2.5-vl"])
def test_lfm25_reasoning_under_any_field_name(tok, name, field):
    """transformers fills `thinking` (and `reasoning_content`) from whichever reasoning field a
    message carries, so even the first revision, which reads `thinking` only, writes each."""
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", field: "Two and two.", "content": "4."},
    ]
    assert trained_runs(mask(tok(name), messages, name)) == ["<think>Two and two.</think>4.<|im_end|>"]


def test_lfm25_vl_image_in_the_user_message_is_not_trained(tok):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A cat."},
    ]
    out = mask(tok("lfm2.5-vl"), messages, "lfm2.5-vl")
    assert "<|im_start|>user\n<image>What is this?<|im_end|>\n" in out.text
    assert trained_runs(out) == ["A cat.<|im_end|>"]


GENERATION_CASES = [
    (TOOL_EXCHANGE, {"tools": [TOOLS[0]]}),
    (TWO_QUESTIONS, {}),
    (TWO_QUESTIONS, {"preserve_thinking": True}),
    (
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "reasoning": "Greet.", "content": "<think>old</think> Hello!"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": ""},
        ],
        {},
    ),
]


@pytest.mark.parametrize("name", ["lfm2.5", "lfm2.5-v2", "lfm2.5-vl"])
@pytest.mark.parametrize("case", range(len(GENERATION_CASES)))
def test_lfm25_trains_what_the_generation_blocks_mark_but_the_newline_after_im_end(tok, name, case):
    """The stock {% generation %} block of an LFM2.5 reply spans everything after the header through
    "<|im_end|>\\n"; labelmask trains the same tokens except that final newline, which the model never
    generates (it stops at <|im_end|>, its eos_token)."""
    messages, kwargs = GENERATION_CASES[case]
    tokenizer = tok(name)
    stock = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **kwargs
    )
    ids = list(stock["input_ids"])
    generation = np.asarray(stock["assistant_masks"], dtype=bool)
    im_end, newline = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.encode("\n")
    assert len(newline) == 1
    after_im_end = np.array([i > 0 and ids[i - 1] == im_end and ids[i] == newline[0] for i in range(len(ids))])
    out = mask(tokenizer, messages, name, **kwargs)
    assert list(out["input_ids"]) == ids
    trained = np.asarray(out["labels"]) != IGNORE_INDEX
    assert generation.any() and (generation & after_im_end).any()
    np.testing.assert_array_equal(trained, generation & ~after_im_end)


def test_lfm25_vl_image_in_a_reply_is_not_trained_but_its_text_is(tok):
    """An image part of a reply is written <image> between its text parts: the text around it is
    trained, the placeholder (which the model does not write) is not. In an earlier reply only what
    follows </think>, trimmed, is written, and the cut runs through the parts."""
    reply = [{"type": "text", "text": "Here: "}, {"type": "image"}, {"type": "text", "text": " done."}]
    earlier = [
        {"type": "text", "text": "<think>plan</think>  "},
        {"type": "image"},
        {"type": "text", "text": "Seen. "},
    ]
    messages = [
        {"role": "user", "content": "Draw."},
        {"role": "assistant", "content": earlier},
        {"role": "user", "content": "Again."},
        {"role": "assistant", "content": reply},
    ]
    out = mask(tok("lfm2.5-vl"), messages, "lfm2.5-vl")
    assert "<|im_start|>assistant\n<image>Seen.<|im_end|>\n" in out.text
    assert "<|im_start|>assistant\nHere: <image> done.<|im_end|>\n" in out.text
    assert trained_runs(out) == ["Seen.<|im_end|>", "Here: ", " done.<|im_end|>"]


@pytest.mark.parametrize("name", ["lfm2.5", "lfm2.5-v2"])
def test_lfm25_text_templates_do_not_train_an_image_in_a_reply(tok, name):
    messages = [
        {"role": "user", "content": "Draw."},
        {"role": "assistant", "content": [{"type": "text", "text": "Here: "}, {"type": "image"}]},
    ]
    out = mask(tok(name), messages, name)
    assert out.text.endswith("<|im_start|>assistant\nHere: <image><|im_end|>\n")
    assert trained_runs(out) == ["Here: ", "<|im_end|>"]


def test_empty_thinking_is_written_by_the_first_lfm25_revision_only(tok):
    """What keeps lfm2.5 and lfm2.5-v2 two annotations: the first writes <think></think> for a reply
    whose thinking is the empty string (the message's own, empty reasoning: trained), the second
    writes nothing for it."""
    messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "thinking": "", "content": "4."}]
    assert trained_runs(mask(tok("lfm2.5"), messages, "lfm2.5")) == ["<think></think>4.<|im_end|>"]
    for name in ("lfm2.5-v2", "lfm2.5-vl"):
        assert trained_runs(mask(tok(name), messages, name)) == ["4.<|im_end|>"]


@pytest.mark.parametrize("name", ["lfm2.5", "lfm2.5-v2", "lfm2.5-vl"])
def test_an_image_in_a_system_or_user_message_is_never_trained(tok, name):
    # Found by the not_rendered report (an image part with no image span): the annotations marked a
    # non-reply's <image> as content, so a policy training users or the system prompt trained it.
    messages = [
        {"role": "system", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A cat."},
    ]
    every_role = labelmask.Policy(roles={"system", "user", "assistant"})
    out = mask(tok(name), messages, name, policy=every_role)
    assert out.report.not_rendered == ()
    assert trained_runs(out) == ["Describe.<|im_end|>", "What is it?<|im_end|>", "A cat.<|im_end|>"]
