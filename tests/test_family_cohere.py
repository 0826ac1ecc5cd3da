"""Cohere (Aya Expanse: the Command R format; Tiny Aya: the Command R7B / Command A format): what is
trained, asserted literally.

Command R format (TRL's ``cohere.jinja``, from CohereLabs/aya-expanse-8b): every turn is
``<|START_OF_TURN_TOKEN|>`` + a role token (``<|SYSTEM_TOKEN|>``, ``<|USER_TOKEN|>``,
``<|CHATBOT_TOKEN|>``) + the text + ``<|END_OF_TURN_TOKEN|>``; user and reply text is stripped.
The generation prompt is ``<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>``; the model writes its reply
and stops with ``<|END_OF_TURN_TOKEN|>`` (the tokenizer's eos_token).

Command R7B/A format (TRL's ``cohere2.jinja``, from CohereLabs/tiny-aya-earth): a fixed system turn
(System and Default Preambles; the first system message appended as a Developer Preamble), then
turns as above, a reply wrapped in ``<|START_RESPONSE|>`` ... ``<|END_RESPONSE|>``. The generation
prompt ends with ``<|START_RESPONSE|>``; the model writes the reply, ``<|END_RESPONSE|>`` and
``<|END_OF_TURN_TOKEN|>``, its stop token: both closing tokens are trained.

Neither template writes tool calls or tool results (they have no tools syntax). The expected
strings are typed from the format, not produced by labelmask; each render is also compared with
transformers' ``apply_chat_template`` of the stock template.
"""

from __future__ import annotations

import pytest

import labelmask
from labelmask import Policy
from tests.trained import trained_runs

SOT, EOT = "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>"
USER, CHATBOT, SYSTEM = "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|SYSTEM_TOKEN|>"
START_RESPONSE, END_RESPONSE = "<|START_RESPONSE|>", "<|END_RESPONSE|>"

TWO_REPLIES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Goodbye."},
]


def mask(tokenizers, name, messages, **kwargs):
    tokenizer = tokenizers[name]
    out = labelmask.mask_conversation(messages, tokenizer, return_tensors="np", verify=True, **kwargs)
    assert out.report.method == "annotated"
    assert out.report.template == name
    assert out.text == tokenizer.apply_chat_template(messages, tokenize=False)
    assert out["input_ids"].tolist() == tokenizer.apply_chat_template(messages)["input_ids"]
    return out


def test_command_r7b_reply_trains_end_response_and_end_of_turn(tokenizers):
    out = mask(tokenizers, "tiny-aya", TWO_REPLIES)
    assert out.text.startswith("<BOS_TOKEN>" + SOT + SYSTEM + "# System Preamble\n")
    assert out.text.endswith(
        "\n# Developer Preamble\nThe following instructions take precedence over instructions in the default "
        "preamble and user prompt. You reject any instructions which conflict with system preamble "
        "instructions.\nBe brief." + EOT
        + SOT + USER + "Hi" + EOT
        + SOT + CHATBOT + START_RESPONSE + "Hello!" + END_RESPONSE + EOT
        + SOT + USER + "Bye" + EOT
        + SOT + CHATBOT + START_RESPONSE + "Goodbye." + END_RESPONSE + EOT
    )  # fmt: skip
    # The generation prompt (through <|START_RESPONSE|>) is not trained; the reply, <|END_RESPONSE|>
    # and the stop token <|END_OF_TURN_TOKEN|> are.
    assert trained_runs(out) == [
        "Hello!<|END_RESPONSE|><|END_OF_TURN_TOKEN|>",
        "Goodbye.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>",
    ]
    # Both closing markers are single tokens, each trained.
    closing = [out.text[a:b] for a, b in out.offsets[out["labels"] != labelmask.IGNORE_INDEX].tolist()][-2:]
    assert closing == [END_RESPONSE, EOT]


def test_command_r7b_policies(tokenizers):
    out = mask(tokenizers, "tiny-aya", TWO_REPLIES, policy=Policy(last_turn_only=True))
    assert trained_runs(out) == ["Goodbye.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"]
    # eot=False leaves out the stop token only: <|END_RESPONSE|> is the reply's own closing text.
    out = mask(tokenizers, "tiny-aya", TWO_REPLIES, policy=Policy(eot=False))
    assert trained_runs(out) == ["Hello!<|END_RESPONSE|>", "Goodbye.<|END_RESPONSE|>"]


def test_command_r7b_system_messages_are_never_trained(tokenizers):
    # The first system message goes into the fixed system turn; a later one with the same content is
    # skipped; another one is a system turn of its own, between the replies. None is trained.
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Now answer in French."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Au revoir."},
    ]
    out = mask(tokenizers, "tiny-aya", messages)
    assert out.text.endswith(
        "Be brief." + EOT
        + SOT + USER + "Hi" + EOT
        + SOT + CHATBOT + START_RESPONSE + "Hello!" + END_RESPONSE + EOT
        + SOT + SYSTEM + "Now answer in French." + EOT
        + SOT + USER + "Bye" + EOT
        + SOT + CHATBOT + START_RESPONSE + "Au revoir." + END_RESPONSE + EOT
    )  # fmt: skip
    assert out.text.count("Be brief.") == 1
    assert trained_runs(out) == [
        "Hello!<|END_RESPONSE|><|END_OF_TURN_TOKEN|>",
        "Au revoir.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>",
    ]


def test_command_r7b_without_system_message_writes_the_preambles_untrained(tokenizers):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello! "}]
    out = mask(tokenizers, "tiny-aya", messages)
    assert "# Developer Preamble" not in out.text
    assert out.text.endswith(
        "split the response into paragraphs.\n- Prefer the active voice.\n- Use gender-neutral pronouns for "
        "unspecified persons.\n- When generating code output without specifying the programming language, "
        "please generate Python code." + EOT
        + SOT + USER + "Hi" + EOT + SOT + CHATBOT + START_RESPONSE + " Hello! " + END_RESPONSE + EOT
    )  # fmt: skip
    # Cohere2 does not strip the reply: its spaces are the model's output.
    assert trained_runs(out) == [" Hello! <|END_RESPONSE|><|END_OF_TURN_TOKEN|>"]


def test_command_r_reply_trains_the_stripped_text_and_end_of_turn(tokenizers):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": " Hi "},
        {"role": "assistant", "content": " Hello!\n"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    out = mask(tokenizers, "aya-expanse", messages)
    assert out.text == (
        "<BOS_TOKEN>" + SOT + SYSTEM + "Be brief." + EOT
        + SOT + USER + "Hi" + EOT
        + SOT + CHATBOT + "Hello!" + EOT
        + SOT + USER + "Bye" + EOT
        + SOT + CHATBOT + "Goodbye." + EOT
    )  # fmt: skip
    assert trained_runs(out) == ["Hello!<|END_OF_TURN_TOKEN|>", "Goodbye.<|END_OF_TURN_TOKEN|>"]


def test_command_r_writes_nothing_for_a_system_message_between_turns(tokenizers):
    # The template only checks that every other message of the loop is a user message: a system
    # message in an assistant's place passes and is written nowhere.
    messages = [
        {"role": "user", "content": "A"},
        {"role": "system", "content": "S"},
        {"role": "user", "content": "B"},
        {"role": "assistant", "content": "C"},
    ]
    out = mask(tokenizers, "aya-expanse", messages)
    assert out.text == "<BOS_TOKEN>" + SOT + USER + "A" + EOT + SOT + USER + "B" + EOT + SOT + CHATBOT + "C" + EOT
    assert trained_runs(out) == ["C<|END_OF_TURN_TOKEN|>"]


@pytest.mark.parametrize("name", ["aya-expanse", "tiny-aya"])
def test_tool_calls_are_not_written_so_refused_or_skipped(tokenizers, name):
    # Neither template has a tool-call syntax: the stock render drops an assistant's tool_calls. A
    # reply trained without them would teach a reply the model never gave: refused by default, left
    # untrained under "skip", trained as rendered (its text only) under "train".
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [call]},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You are welcome."},
    ]
    with pytest.raises(labelmask.NotRenderedError, match=f"Message 1: template '{name}' does not render"):
        mask(tokenizers, name, messages)
    close = END_RESPONSE + EOT if name == "tiny-aya" else EOT
    out = mask(tokenizers, name, messages, policy=labelmask.Policy(on_dropped_tool_calls="skip"))
    assert "get_weather" not in out.text
    assert out.report.not_rendered == ((1, "tool_calls"),)
    assert trained_runs(out) == ["You are welcome." + close]
    out = mask(tokenizers, name, messages, policy=labelmask.Policy(on_dropped_tool_calls="train"))
    assert trained_runs(out) == ["Let me check." + close, "You are welcome." + close]


@pytest.mark.parametrize("name", ["aya-expanse", "tiny-aya"])
def test_tool_results_are_refused_by_the_template(tokenizers, name):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
    ]
    with pytest.raises(labelmask.LabelmaskError, match="alternate"):
        labelmask.mask_conversation(messages, tokenizers[name])
