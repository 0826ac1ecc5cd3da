"""GLM-4.5 and DeepSeek (V3, R1-Distill): what is trained, written out by hand from each format.

The expected strings come from the formats (the stock templates in
tests/fixtures/templates/trl/ and the models' stop tokens), not from labelmask: each
test compares the text of the trained tokens, run by run, with them.
"""

from __future__ import annotations

import pytest

import labelmask
from labelmask.errors import NoEndOfTurnWarning
from tests.trained import trained_runs

WEATHER_CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}


def mask(messages, tokenizer, appended="", **kwargs):
    """Masked, with the ids checked against the stock ones (plus ``appended``: the stop token labelmask
    writes after a GLM conversation's last reply, which the stock render closes with nothing)."""
    out = labelmask.mask_conversation(messages, tokenizer, return_tensors="np", verify=True, **kwargs)
    assert out.report.method == "annotated"
    stock_kwargs = {k: v for k, v in kwargs.items() if k in ("tools", "enable_thinking")}
    stock = tokenizer.apply_chat_template(messages, tokenize=True, **stock_kwargs)["input_ids"]
    assert out["input_ids"].tolist() == stock + tokenizer.encode(appended, add_special_tokens=False)
    assert out.report.n_eos_added == (1 if appended else 0)
    return out


# ------------------------------------------------------------------------------------------ GLM-4.5

GLM_TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "Let me check.", "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "content": "sunny, 21 C"},
    {"role": "assistant", "content": "It is sunny in Paris."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You're welcome."},
]


def test_glm_two_turns_with_a_tool_call_train_the_closing_observation_and_user_tokens(tokenizers):
    tokenizer = tokenizers["glm-4.5"]
    out = mask(GLM_TOOL_CONVERSATION, tokenizer, appended="<|user|>")
    assert out.report.template == "glm-4.5"
    assert out.text == (
        "[gMASK]<sop><|user|>\nWeather in Paris?"
        "<|assistant|>\n<think></think>\nLet me check."
        "\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>"
        "<|observation|>\n<tool_response>\nsunny, 21 C\n</tool_response>"
        "<|assistant|>\n<think></think>\nIt is sunny in Paris."
        "<|user|>\nThanks!"
        "<|assistant|>\n<think></think>\nYou're welcome."
        "<|user|>"  # not in the stock render: labelmask closes the last reply with GLM's stop token
    )
    # Each reply from after its empty think block (template-inserted: not trained by default)
    # through the stop token that opens the next turn: <|observation|> after the tool call,
    # <|user|> after the answer. The newline after either is the next turn's and is not trained.
    # The stock render closes the last reply with nothing; labelmask writes the <|user|> the model
    # generates there (the annotation's final_eot) and trains it.
    assert trained_runs(out) == [
        "\nLet me check."
        "\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>"
        "<|observation|>",
        "\nIt is sunny in Paris.<|user|>",
        "\nYou're welcome.<|user|>",
    ]
    tokens = tokenizer.convert_ids_to_tokens(out["input_ids"][out["labels"] != labelmask.IGNORE_INDEX].tolist())
    assert tokens.count("<|observation|>") == 1 and tokens.count("<|user|>") == 2
    assert "<|assistant|>" not in tokens and "<think>" not in tokens


def test_glm_empty_think_block_is_trained_only_when_the_policy_says_so(tokenizers):
    policy = labelmask.Policy(empty_reasoning=True)
    out = mask(GLM_TOOL_CONVERSATION[:4], tokenizers["glm-4.5"], appended="<|user|>", policy=policy)
    assert trained_runs(out) == [
        "\n<think></think>\nLet me check."
        "\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>"
        "<|observation|>",
        "\n<think></think>\nIt is sunny in Paris.<|user|>",
    ]


def test_glm_without_thinking_the_empty_block_is_the_generation_prompt(tokenizers):
    # enable_thinking=False: the generation prompt is <|assistant|>\n<think></think>, so the
    # block is header (never trained, whatever the policy), and /nothink is appended to user text.
    tokenizer = tokenizers["glm-4.5"]
    prompt = tokenizer.apply_chat_template(
        GLM_TOOL_CONVERSATION[:1], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert prompt.endswith("Weather in Paris?/nothink<|assistant|>\n<think></think>")
    policy = labelmask.Policy(empty_reasoning=True)
    out = mask(GLM_TOOL_CONVERSATION[:4], tokenizer, appended="<|user|>", enable_thinking=False, policy=policy)
    assert out.text.startswith(prompt)
    assert trained_runs(out) == [
        "\nLet me check."
        "\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>"
        "<|observation|>",
        "\nIt is sunny in Paris.<|user|>",
    ]


def test_glm_reasoning_after_the_last_user_message_is_trained_and_earlier_reasoning_is_dropped(tokenizers):
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Add them."},
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "6", "reasoning_content": "Add again."},
    ]
    out = mask(messages, tokenizers["glm-4.5"], appended="<|user|>")
    # The first reply's reasoning comes before the last user message: the template writes an
    # empty block instead (not the model's words, not trained by default).
    assert "Add them." not in out.text
    assert trained_runs(out) == ["\n4<|user|>", "\n<think>Add again.</think>\n6<|user|>"]


def test_glm_system_and_assistant_headers_after_a_reply_are_no_end_of_turn(tokenizers):
    # GLM-4.5's stop tokens are <|endoftext|>, <|user|> and <|observation|>: a <|system|> or
    # <|assistant|> that follows a reply is the next message's header, never trained.
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "assistant", "content": "How can I help?"},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye."},
    ]
    out = mask(messages, tokenizers["glm-4.5"], appended="<|user|>")
    assert trained_runs(out) == ["\nHello.", "\nHow can I help?", "\nBye.<|user|>"]


def test_glm_last_reply_is_closed_by_its_stop_token_unless_add_eos_is_false(tokenizers, monkeypatch):
    # Nothing follows the last reply in the stock render, so its stop token is not there to train:
    # a single-turn GLM dataset would never teach the model to stop. By default labelmask writes the
    # annotation's final_eot, <|user|> (what GLM-4.5 generates after a final reply, one of its stop
    # tokens), after the last reply alone and trains it. add_eos=False keeps the stock ids exactly,
    # and warns once per template.
    import labelmask._pipeline

    monkeypatch.setattr(labelmask._pipeline, "_WARNED_NO_EOT", set())
    tokenizer = tokenizers["glm-4.5"]
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye."},
    ]
    out = labelmask.mask_conversation(messages, tokenizer, return_tensors="np")
    assert out.text == tokenizer.apply_chat_template(messages, tokenize=False) + "<|user|>"
    assert out.report.n_eos_added == 1
    assert trained_runs(out) == ["\nHello.<|user|>", "\nBye.<|user|>"]
    assert trained_runs(labelmask.mask_conversation(messages, tokenizer, return_tensors="np", add_eos=True)) == [
        "\nHello.<|user|>",
        "\nBye.<|user|>",
    ]
    with pytest.warns(NoEndOfTurnWarning, match=r"'glm-4.5' closes a reply with the next turn's header.*<\|user\|>"):
        plain = labelmask.mask_conversation(messages, tokenizer, return_tensors="np", add_eos=False)
    assert plain.text == tokenizer.apply_chat_template(messages, tokenize=False)
    assert trained_runs(plain) == ["\nHello.<|user|>", "\nBye."]
    # A conversation that ends with a user turn has its replies closed already: nothing to add.
    closed = labelmask.mask_conversation(messages[:3], tokenizer, return_tensors="np")
    assert closed.report.n_eos_added == 0 and trained_runs(closed) == ["\nHello.<|user|>"]


# ------------------------------------------------------------------------------- DeepSeek R1-Distill


def test_r1_distill_reasoning_is_cut_from_history_and_the_answer_trained(tokenizers):
    tokenizer = tokenizers["deepseek-r1-distill"]
    messages = [
        {"role": "system", "content": "You are a calculator."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\nSimple arithmetic.\n</think>\n\n2+2 = 4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>\nAgain.\n</think>\n\n6."},
    ]
    out = mask(messages, tokenizer)
    assert out.report.template == "deepseek-r1-distill"
    bos, eos = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
    # The template writes only what follows the last </think> of each reply.
    assert out.text == (
        f"{bos}You are a calculator.<｜User｜>What is 2+2?<｜Assistant｜>\n\n2+2 = 4.{eos}"
        f"<｜User｜>And 3+3?<｜Assistant｜>\n\n6.{eos}"
    )
    assert trained_runs(out) == [f"\n\n2+2 = 4.{eos}", f"\n\n6.{eos}"]


def test_r1_distill_generation_prompt_think_is_header(tokenizers):
    # The generation prompt is <｜Assistant｜><think>\n: a reply whose rendered content starts with
    # <think>\n (no </think> in it) shows the whole prompt, and training starts after it.
    tokenizer = tokenizers["deepseek-r1-distill"]
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\nTwo and two make four.\n"},
    ]
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<｜Assistant｜><think>\n")
    out = mask(messages, tokenizer)
    assert out.text.startswith(prompt)
    assert trained_runs(out) == ["Two and two make four.\n<｜end▁of▁sentence｜>"]


# ------------------------------------------------------------------------------------- DeepSeek-V3


def test_deepseek_v3_tool_call_and_answer_after_tool_results(tokenizers):
    tokenizer = tokenizers["deepseek-v3"]
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    out = mask(messages, tokenizer)
    assert out.report.template == "deepseek-v3"
    eos = "<｜end▁of▁sentence｜>"
    calls = (
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Paris"}\n```'
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
    )
    assert out.text == (
        f"<｜begin▁of▁sentence｜><｜User｜>Weather in Paris?<｜Assistant｜>{calls}{eos}"
        "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>sunny<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"
        f"It is sunny.{eos}"
    )
    # After tool results the generation prompt is empty: the answer is trained from its first character.
    assert trained_runs(out) == [calls + eos, f"It is sunny.{eos}"]


@pytest.mark.parametrize("name", ["glm-4.5", "deepseek-v3", "deepseek-r1-distill"])
def test_each_stock_template_is_matched_by_its_annotation(tokenizers, name):
    out = labelmask.mask_conversation(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
        tokenizers[name],
        add_eos=name == "glm-4.5",
    )
    assert (out.report.method, out.report.template) == ("annotated", name)
