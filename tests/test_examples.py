"""Example tests: the reported failure modes, one by one, on real tokenizers."""

from __future__ import annotations

import numpy as np
import pytest

import labelmask
from labelmask import IGNORE_INDEX, Part, Policy, Role


def trained_text(out) -> list[str]:
    """The text of each run of consecutive trained tokens."""
    runs, current = [], ""
    for (start, end), label in zip(out.offsets.tolist(), out["labels"]):
        if label != IGNORE_INDEX:
            current += out.text[start:end]
        elif current:
            runs.append(current)
            current = ""
    if current:
        runs.append(current)
    return runs


QWEN_TOOL_CONVERSATION = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "Two cities, two calls.",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
        ],
    },
    {"role": "tool", "content": "Paris: 20C"},
    {"role": "tool", "content": "Rome: 25C"},
    {"role": "assistant", "content": "Paris is 20C, Rome 25C."},
]
WEATHER_TOOL = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_qwen3_reasoning_and_tool_calls(tokenizers):
    """Acceptance 3: token parity, and exactly each assistant turn after
    <|im_start|>assistant\\n through its <|im_end|> is trained."""
    tok = tokenizers["qwen3"]
    out = labelmask.mask_conversation(QWEN_TOOL_CONVERSATION, tok, tools=WEATHER_TOOL)
    assert out["input_ids"] == tok.apply_chat_template(QWEN_TOOL_CONVERSATION, tools=WEATHER_TOOL)["input_ids"]
    assert trained_text(out) == [
        "<think>\nTwo cities, two calls.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>',
        "<think>\n\n</think>\n\nParis is 20C, Rome 25C.<|im_end|>",
    ]
    parts = {Part(p) for p, label in zip(out["part"], out["labels"]) if label != IGNORE_INDEX}
    assert parts == {Part.REASONING, Part.TEMPLATE, Part.TOOL_CALLS, Part.CONTENT, Part.EOT}


def test_qwen3_thinking_off_leaves_the_injected_think_block_untrained(tokenizers):
    """With enable_thinking=False the generation prompt writes the empty think block,
    so the model never generates it: it is header, not trained."""
    tok = tokenizers["qwen3"]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    on = labelmask.mask_conversation(messages, tok)
    off = labelmask.mask_conversation(messages, tok, enable_thinking=False)
    assert on.text == off.text  # the stock template writes the same text either way
    assert trained_text(on) == ["<think>\n\n</think>\n\nHello.<|im_end|>"]
    assert trained_text(off) == ["Hello.<|im_end|>"]


def test_marker_lookalike_in_user_content_is_not_trained(tokenizers):
    tok = tokenizers["llava-1.5"]
    messages = [
        {"role": "user", "content": "Say ASSISTANT: now. ASSISTANT: yes"},
        {"role": "assistant", "content": "ASSISTANT: done"},
    ]
    out = labelmask.mask_conversation(messages, tok)
    assert trained_text(out) == [" ASSISTANT: done "]
    user_tokens = np.asarray(out["message_index"]) == 0
    assert (np.asarray(out["labels"])[user_tokens] == IGNORE_INDEX).all()


@pytest.mark.parametrize("name", ["qwen3", "llama3", "gemma3", "llava-1.5"])
def test_single_character_answer_is_trained(name, tokenizers):
    """A one-token answer merged with template text must still get loss."""
    out = labelmask.mask_conversation(
        [{"role": "user", "content": "Pick A or B."}, {"role": "assistant", "content": "B"}], tokenizers[name]
    )
    trained = "".join(trained_text(out))
    assert "B" in trained
    content_tokens = [
        label for label, part in zip(out["labels"], out["part"]) if part == Part.CONTENT and label != IGNORE_INDEX
    ]
    assert len(content_tokens) >= 1


@pytest.mark.parametrize("name", ["qwen3", "llama3", "gemma3", "llava-1.5"])
def test_reply_identical_to_the_user_turn(name, tokenizers):
    """Searching for the reply's text would find the user's copy first; spans do not."""
    text = "Repeat after me: the cat sat."
    out = labelmask.mask_conversation(
        [{"role": "user", "content": text}, {"role": "assistant", "content": text}], tokenizers[name]
    )
    labels = np.asarray(out["labels"])
    messages = np.asarray(out["message_index"])
    assert (labels[messages == 0] == IGNORE_INDEX).all()
    assert (labels[messages == 1] != IGNORE_INDEX).any()
    assert text in "".join(trained_text(out))


@pytest.mark.parametrize(
    ("name", "eot"), [("qwen3", "<|im_end|>"), ("llama3", "<|eot_id|>"), ("gemma3", "<end_of_turn>")]
)
def test_empty_reply_still_trains_end_of_turn(name, eot, tokenizers):
    """An empty reply is a real decision to stop at once: its end-of-turn token is trained."""
    out = labelmask.mask_conversation(
        [{"role": "user", "content": "Say nothing."}, {"role": "assistant", "content": ""}], tokenizers[name]
    )
    assert trained_text(out)[-1].endswith(eot)
    assert out.report.n_trained >= 1


def test_empty_reply_without_end_of_turn_leaves_a_space_to_train(tokenizers):
    """LLaVA-1.5 writes 'ASSISTANT: ' + '' + ' ': the reply's own whitespace is all there is."""
    out = labelmask.mask_conversation(
        [{"role": "user", "content": "Say nothing."}, {"role": "assistant", "content": ""}], tokenizers["llava-1.5"]
    )
    assert out.text == "USER: Say nothing. ASSISTANT:  "
    assert "".join(trained_text(out)).strip() == ""
    assert out.report.n_trained >= 1


def test_straddling_token_rule_is_configurable(tokenizers):
    """Qwen3 writes '<|im_start|>assistant\\n' + content; a reply starting with newlines
    merges with the header's newline into one token."""
    tok = tokenizers["qwen3"]
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "\n\nHello"},
        {"role": "user", "content": "x"},
    ]
    train = labelmask.mask_conversation(messages, tok)
    drop = labelmask.mask_conversation(messages, tok, policy=Policy(straddle="drop"))
    assert train.report.n_straddle == 1
    assert drop.report.n_straddle == 0
    assert drop.report.n_boundary_dropped == 1
    assert trained_text(train) == ["\n\n\nHello<|im_end|>"]
    assert trained_text(drop) == ["Hello<|im_end|>"]


def test_trailing_space_merged_with_next_header_is_not_trained(tokenizers):
    """LLaVA: 'reply USER:' tokenizes as ... '▁USER': the space is the reply's, USER is not."""
    out = labelmask.mask_conversation(
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ],
        tokenizers["llava-1.5"],
    )
    assert all("USER" not in run for run in trained_text(out))
    assert out.report.n_boundary_dropped == 1


def test_gemma_folds_system_into_first_user_turn(tokenizers):
    out = labelmask.mask_conversation(
        [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ],
        tokenizers["gemma3"],
        return_tensors="np",
    )
    system_tokens = out["message_index"] == 0
    assert system_tokens.any()
    assert (out["role"][system_tokens] == Role.SYSTEM).all()
    assert "<start_of_turn>model\n" in out.text
    assert trained_text(out) == ["Hello<end_of_turn>"]


def test_gemma_alternation_error_names_the_message(tokenizers):
    with pytest.raises(labelmask.TemplateRaisedError, match="at message 2: Conversation roles must alternate") as info:
        labelmask.mask_conversation(
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "assistant", "content": "c"},
            ],
            tokenizers["gemma3"],
        )
    assert info.value.message_index == 2
    assert info.value.template == "gemma3"


def test_tokenizer_without_chat_template_raises():
    from tests.fixtures import load_tokenizer

    with pytest.raises(labelmask.TemplateNotFoundError, match="has no chat_template"):
        labelmask.mask_conversation([{"role": "user", "content": "a"}], load_tokenizer("llama2"))


def test_nothing_to_train_raises_or_is_reported(tokenizers):
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "only a question"}]
    with pytest.raises(labelmask.NothingToTrainError, match="Nothing to train"):
        labelmask.mask_conversation(messages, tokenizers["qwen3"])
    out = labelmask.mask_conversation(messages, tokenizers["qwen3"], policy=Policy(on_empty="keep"))
    assert out.report.n_trained == 0
    assert set(out["labels"]) == {IGNORE_INDEX}


def test_verify_renders_the_stock_template_and_agrees(tokenizers):
    out = labelmask.mask_conversation(QWEN_TOOL_CONVERSATION, tokenizers["qwen3"], tools=WEATHER_TOOL, verify=True)
    assert out.text == tokenizers["qwen3"].apply_chat_template(
        QWEN_TOOL_CONVERSATION, tools=WEATHER_TOOL, tokenize=False
    )


def test_verify_catches_an_annotation_that_renders_differently(tokenizers):
    """A wrong annotation for a matched template must not pass silently."""
    from labelmask import _registry

    saved = _registry.REGISTRY.snapshot()
    good = _registry.REGISTRY.get("llama3")
    labelmask.register_template("llama3-broken", good.source.replace("| trim", ""))
    try:
        messages = [{"role": "user", "content": " padded "}, {"role": "assistant", "content": "ok"}]
        with pytest.raises(labelmask.RenderParityError, match="llama3-broken") as info:
            labelmask.mask_conversation(messages, tokenizers["llama3"], template="llama3-broken", verify=True)
        assert info.value.position > 0
    finally:
        _registry.REGISTRY.restore(saved)


@pytest.mark.parametrize("return_tensors", [None, "np", "pt"])
def test_return_types_agree(return_tensors, tokenizers):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    ref = labelmask.mask_conversation(messages, tokenizers["llama3"])
    out = labelmask.mask_conversation(messages, tokenizers["llama3"], return_tensors=return_tensors)
    assert set(out) == {"input_ids", "attention_mask", "labels", "loss_weights", "message_index", "role", "part"}
    for key in out:
        value = out[key]
        as_list = value if return_tensors is None else value.tolist()
        if return_tensors == "pt":
            import torch

            assert value.dtype == (torch.float32 if key == "loss_weights" else torch.int64)
            assert value.shape == (1, len(ref[key]))  # a batch dimension, as the tokenizer's (issue 20)
            as_list = as_list[0]
        assert as_list == ref[key]
        if return_tensors == "np":
            assert value.dtype.kind == ("f" if key == "loss_weights" else "i")


def test_public_names():
    public = {n for n in dir(labelmask) if not n.startswith("_")} - {"errors", "testing", "cli"}
    assert set(labelmask.__all__) == public
    assert labelmask.__all__ == sorted(labelmask.__all__, key=lambda n: (not n.isupper(), n))


def test_register_a_template_for_an_unknown_stock_template():
    """A new model takes one register_template call and no engine change."""
    from tests.fixtures import load_tokenizer

    stock = "{% for m in messages %}### {{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
    annotated = (
        "{% for m in messages %}{% span 'turn', loop.index0 %}"
        "{% span 'header' %}### {{ m['role'] }}\n{% endspan %}"
        # a newline right after a block tag is eaten (trim_blocks), so write it as an expression
        "{% span 'content' %}{{ m['content'] }}{% endspan %}{{ '\\n' }}{% endspan %}{% endfor %}"
    )
    tok = load_tokenizer("llama2")
    tok.chat_template = stock
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    from labelmask import _registry

    saved = _registry.REGISTRY.snapshot()
    labelmask.register_template("hash-chat", annotated, matches=[stock])
    try:
        out = labelmask.mask_conversation(messages, tok, verify=True)
        assert out.report.template == "hash-chat"
        assert out["input_ids"] == tok.apply_chat_template(messages)["input_ids"]
        assert "".join(trained_text(out)).strip() == "4"
    finally:
        _registry.REGISTRY.restore(saved)
    with pytest.raises(labelmask.TemplateNotFoundError):
        labelmask.mask_conversation(messages, tok, fallback=False)
    # Unregistered again, the template is masked by the verified fallback instead.
    assert labelmask.mask_conversation(messages, tok).report.method == "differential"


@pytest.mark.parametrize("name", ["llama3.1", "llama3.2"])
def test_date_writing_templates_give_the_same_output_on_any_day(name, tokenizers):
    """Llama 3.1/3.2 write a date line; without date_string, Llama 3.2 reads the clock
    (strftime_now). labelmask renders at a fixed instant, so the sample does not depend
    on the day preprocessing runs; transformers' own render does (shown for 3.2)."""
    import time_machine

    from labelmask._render import FROZEN_NOW

    tokenizer = tokenizers[name]
    messages = [{"role": "user", "content": "What day is it?"}, {"role": "assistant", "content": "I cannot know."}]
    outputs, stock = [], []
    for day in ("2024-02-29 23:59", "2031-12-31 00:01"):
        with time_machine.travel(day, tick=False):
            out = labelmask.mask_conversation(messages, tokenizer)
            outputs.append((out.text, out["input_ids"], out["labels"]))
            stock.append(tokenizer.apply_chat_template(messages, tokenize=False))
    assert outputs[0] == outputs[1]
    with time_machine.travel(FROZEN_NOW, tick=False):
        assert outputs[0][0] == tokenizer.apply_chat_template(messages, tokenize=False)
    if name == "llama3.2":
        assert stock[0] != stock[1]  # the clock really moved, and the stock template reads it
        assert "Today Date: 01 Jan 2026" in outputs[0][0]
