"""Gemma 4 and Diffusion Gemma: what is trained in a reply with tool calls, asserted literally.

Gemma 4 stops with ``<turn|>`` at the end of a reply and with ``<|tool_response>`` after its
tool calls (its generation config's ``eos_token_id`` is ``[1, 106, 50]``: ``<eos>``,
``<turn|>``, ``<|tool_response>``). The templates write tool results inside the calling
reply's turn and the reply goes on after them; so a reply's trained text is its calls through
the first ``<|tool_response>``, then what it writes after the results through ``<turn|>``.
The expected strings below are written by hand from that format.
"""

from __future__ import annotations

import pytest

import labelmask
from tests.fixtures import load_tokenizer
from tests.trained import trained_runs

CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
CALL_TEXT = '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>'
TOOL_CALL_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "reasoning_content": "I need the weather.", "tool_calls": [CALL]},
    {"role": "tool", "content": "sunny, 21 C"},
    {"role": "assistant", "content": "It is sunny in Paris."},
]
GEMMA4_ALL = ("gemma4", "gemma4-v3", "gemma4-v4", "gemma4-v5", "diffusion-gemma")


def mask(tokenizers, name, messages, **kwargs):
    out = labelmask.mask_conversation(messages, tokenizers[name], return_tensors="np", verify=True, **kwargs)
    assert out.report.method == "annotated"
    assert out.report.template == name
    return out


def test_gemma4_tool_call_and_its_result_inside_one_turn(tokenizers):
    out = mask(tokenizers, "gemma4", TOOL_CALL_TURN)
    assert out.text == (
        "<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nWeather in Paris?<turn|>\n<|turn>model\n"
        "<|channel>thought\nI need the weather.\n<channel|>" + CALL_TEXT + "<|tool_response>"
        'response:get_weather{value:<|"|>sunny, 21 C<|"|>}<tool_response|>It is sunny in Paris.<turn|>\n'
    )
    # The calls with the thought channel, through the <|tool_response> the model stops with;
    # then the answer after the result, through <turn|>. The result itself is not trained.
    assert trained_runs(out) == [
        "<|channel>thought\nI need the weather.\n<channel|>" + CALL_TEXT + "<|tool_response>",
        "It is sunny in Paris.<turn|>",
    ]


@pytest.mark.parametrize("name", GEMMA4_ALL)
def test_every_revision_trains_the_calls_then_the_answer(tokenizers, name):
    messages = [dict(m) for m in TOOL_CALL_TURN]
    del messages[2]["reasoning_content"]
    out = mask(tokenizers, name, messages)
    answer = (
        "<|turn>model\nIt is sunny in Paris.<turn|>" if name == "diffusion-gemma" else "It is sunny in Paris.<turn|>"
    )
    assert trained_runs(out) == [CALL_TEXT + "<|tool_response>", answer]
    assert "response:get_weather" not in "".join(trained_runs(out))


@pytest.mark.parametrize("name", GEMMA4_ALL)
def test_a_call_without_its_result_ends_with_tool_response(tokenizers, name):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
    ]
    out = mask(tokenizers, name, messages)
    assert out.text.endswith("<|turn>model\n" + CALL_TEXT + "<|tool_response>")
    assert trained_runs(out) == [CALL_TEXT + "<|tool_response>"]


def test_gemma4_parallel_calls_only_the_first_tool_response_is_the_models(tokenizers):
    messages = [
        {"role": "user", "content": "Paris and Rome?"},
        {"role": "assistant", "content": "Both are sunny.", "tool_calls": [CALL, CALL]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "sunny too"},
    ]
    out = mask(tokenizers, "gemma4", messages)
    # This revision writes the calling message's own content after the results.
    assert out.text.endswith(
        "<|turn>model\n" + CALL_TEXT + CALL_TEXT + '<|tool_response>response:get_weather{value:<|"|>sunny<|"|>}'
        '<tool_response|><|tool_response>response:get_weather{value:<|"|>sunny too<|"|>}<tool_response|>'
        "Both are sunny.<turn|>\n"
    )
    assert trained_runs(out) == [CALL_TEXT + CALL_TEXT + "<|tool_response>", "Both are sunny.<turn|>"]


def test_gemma4_results_and_no_answer_end_the_reply_at_tool_response(tokenizers):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "sunny"},
        {"role": "user", "content": "Thanks."},
        {"role": "assistant", "content": "You are welcome."},
    ]
    out = mask(tokenizers, "gemma4", messages)
    # This revision writes no <turn|> after results when the reply says nothing more.
    assert "<tool_response|><|turn>user\nThanks.<turn|>\n" in out.text
    assert trained_runs(out) == [CALL_TEXT + "<|tool_response>", "You are welcome.<turn|>"]
    # The fifth revision closes the turn before the user's, though no message wrote anything
    # after the result: that <turn|> is not trained.
    out = mask(tokenizers, "gemma4-v5", messages)
    assert "<tool_response|><turn|>\n<|turn>user\nThanks.<turn|>\n" in out.text
    assert trained_runs(out) == [CALL_TEXT + "<|tool_response>", "You are welcome.<turn|>"]


def test_gemma4_v5_thinking_after_results_opens_with_the_generation_prompt(tokenizers):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny.", "reasoning_content": "Sunny, so say so."},
    ]
    prompt = tokenizers["gemma4-v5"].apply_chat_template(
        messages[:3], tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    assert prompt.endswith("<tool_response|><|channel>thought\n")
    out = mask(tokenizers, "gemma4-v5", messages, enable_thinking=True)
    assert out.text.startswith("<bos><|turn>system\n<|think|>\n<turn|>\n")
    # <|channel>thought\n is the generation prompt here: the model writes what follows it.
    assert trained_runs(out) == [CALL_TEXT + "<|tool_response>", "Sunny, so say so.\n<channel|>It is sunny.<turn|>"]


def test_gemma4_v5_two_replies_in_a_row_are_one_turn(tokenizers):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "assistant", "content": "How can I help?"},
    ]
    out = mask(tokenizers, "gemma4-v5", messages)
    assert out.text == "<bos><|turn>user\nHi<turn|>\n<|turn>model\nHello.How can I help?<turn|>\n"
    assert trained_runs(out) == ["Hello.How can I help?<turn|>"]
    # The first revision closes each reply.
    out = mask(tokenizers, "gemma4", messages)
    assert out.text == "<bos><|turn>user\nHi<turn|>\n<|turn>model\nHello.<turn|>\nHow can I help?<turn|>\n"
    assert trained_runs(out) == ["Hello.<turn|>", "How can I help?<turn|>"]


def test_gemma4_v2_writes_tool_results_as_their_own_turn(tokenizers):
    messages = [dict(m) for m in TOOL_CALL_TURN]
    out = mask(tokenizers, "gemma4-v2", messages)
    assert out.text == (
        "<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nWeather in Paris?<turn|>\n<|turn>model\n"
        + CALL_TEXT
        + "<turn|>\n<|turn>tool\nsunny, 21 C<turn|>\n<|turn>model\nIt is sunny in Paris.<turn|>\n"
    )
    assert trained_runs(out) == [CALL_TEXT + "<turn|>", "It is sunny in Paris.<turn|>"]


@pytest.mark.parametrize("name", ("gemma4", "gemma4-v2", "gemma4-v5"))
def test_legacy_tool_responses_are_refused(tokenizers, name):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [CALL],
            "tool_responses": [{"name": "get_weather", "response": "sunny"}],
        },
    ]
    with pytest.raises(labelmask.LabelmaskError, match="tool_responses"):
        labelmask.mask_conversation(messages, tokenizers[name])


def test_the_control_tokens_are_single_tokens():
    tokenizer = load_tokenizer("gemma4")
    for token in ("<|turn>", "<turn|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<|channel>", '<|"|>'):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token


def test_gemma4_v4_a_tool_results_media_placeholder_is_the_tool_messages(tokenizers):
    messages = [
        {"role": "user", "content": "Show Paris."},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": [{"type": "text", "text": "a photo"}, {"type": "image"}]},
        {"role": "assistant", "content": "Here it is."},
    ]
    out = mask(tokenizers, "gemma4-v4", messages)
    assert out.text.endswith(
        '<|tool_response>response:get_weather{value:<|"|>a photo<|"|>}<tool_response|><|image|>Here it is.<turn|>\n'
    )
    assert trained_runs(out) == [CALL_TEXT + "<|tool_response>", "Here it is.<turn|>"]
    # The first revision writes no placeholder for it.
    out = mask(tokenizers, "gemma4", messages)
    assert "<|image|>" not in out.text


def test_gemma4_v5_joined_replies_pass_the_fail_closed_check(tokenizers):
    """Reproducer: a token running from one joined reply into the next (':<') was refused by
    check="full" as "outside a trained reply", though the straddle rule trains it."""
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello:"},
        {"role": "assistant", "content": "<How can I help?"},
    ]
    out = labelmask.mask_conversation(messages, tokenizers["gemma4-v5"], return_tensors="np", check="full")
    assert trained_runs(out) == ["Hello:<How can I help?<turn|>"]
    assert out.report.n_boundary_dropped == 0
