"""Bad input gets a specific labelmask error naming the argument or message, never a wrong mask."""

from __future__ import annotations

import pytest

import labelmask
from labelmask import ConversationError, LabelmaskError, Policy, TokenizerError

OK = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]

BAD_MESSAGES = [
    ("a string", "hello", ConversationError, "messages must be a list"),
    ("a dict", {"role": "user", "content": "x"}, ConversationError, "messages must be a list"),
    ("empty", [], ConversationError, "messages is empty"),
    ("not a mapping", [OK[0], ["assistant", "x"]], ConversationError, "Message 1 is a list"),
    ("missing role", [OK[0], {"content": "x"}], ConversationError, "Message 1 has no string 'role'"),
    ("unknown role", [OK[0], {"role": "bot", "content": "x"}], ConversationError, "Message 1 has unknown role 'bot'"),
    (
        "content of the wrong type",
        [OK[0], {"role": "assistant", "content": 42}],
        ConversationError,
        "Message 1: content must be",
    ),
    (
        "part without type",
        [{"role": "user", "content": [{"text": "x"}]}, OK[1]],
        ConversationError,
        "Message 0: content part 0",
    ),
    (
        "text part without text",
        [{"role": "user", "content": [{"type": "text"}]}, OK[1]],
        ConversationError,
        'text part 0 has no string "text"',
    ),
    (
        "None content without tool calls",
        [OK[0], {"role": "assistant", "content": None}],
        ConversationError,
        "Message 1 (assistant) has no content",
    ),
    (
        "tool call arguments not JSON",
        [
            OK[0],
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]},
        ],
        ConversationError,
        "tool call 0 ('f') has arguments that are not valid JSON",
    ),
    (
        "tool call arguments a list",
        [OK[0], {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]}],
        ConversationError,
        "arguments of type list",
    ),
    (
        "tool call without a name",
        [OK[0], {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}],
        ConversationError,
        "Message 1: tool call 0",
    ),
    (
        "reserved marker character",
        [OK[0], {"role": "assistant", "content": "a\ufdd0b"}],
        ConversationError,
        "Message 1 contains a Unicode noncharacter",
    ),
    (
        "reserved character in a typed part",
        [{"role": "user", "content": [{"type": "text", "text": "\ufdef"}]}, OK[1]],
        ConversationError,
        "Message 0 contains a Unicode noncharacter",
    ),
]


@pytest.mark.parametrize(("case", "messages", "error", "fragment"), BAD_MESSAGES, ids=[c[0] for c in BAD_MESSAGES])
def test_bad_messages(case, messages, error, fragment, tokenizers):
    with pytest.raises(error) as info:
        labelmask.mask_conversation(messages, tokenizers["qwen3"])
    assert fragment in str(info.value)
    assert isinstance(info.value, LabelmaskError)


def test_message_index_is_carried(tokenizers):
    with pytest.raises(ConversationError) as info:
        labelmask.mask_conversation([OK[0], OK[1], {"role": "user", "content": None}], tokenizers["qwen3"])
    assert info.value.message_index == 2


def test_tools_must_be_a_list(tokenizers):
    with pytest.raises(ConversationError, match="tools must be a list"):
        labelmask.mask_conversation(OK, tokenizers["qwen3"], tools={"name": "f"})


def test_not_a_fast_tokenizer():
    with pytest.raises(TokenizerError, match="is not a fast tokenizer"):
        labelmask.mask_conversation(OK, object())


def test_mistral_common_backend_is_refused():
    pytest.importorskip("mistral_common")
    from transformers.tokenization_mistral_common import MistralCommonBackend

    from tests.fixtures import mistral_data_file

    tokenizer = MistralCommonBackend(tokenizer_path=str(mistral_data_file("mistral-v3-tekken")))
    with pytest.raises(TokenizerError, match="MistralCommonBackend") as info:
        labelmask.mask_conversation(OK, tokenizer)
    assert "convert_tekken_tokenizer" in str(info.value)


@pytest.mark.parametrize("key", ["add_generation_prompt", "continue_final_message"])
def test_generation_arguments_are_refused(key, tokenizers):
    with pytest.raises(ConversationError, match=f"does not take {key}="):
        labelmask.mask_conversation(OK, tokenizers["qwen3"], **{key: True})


def test_bad_return_tensors(tokenizers):
    with pytest.raises(ValueError, match="return_tensors='tf'"):
        labelmask.mask_conversation(OK, tokenizers["qwen3"], return_tensors="tf")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"roles": ("bot",)}, "unknown roles ['bot']"),
        ({"straddle": "keep"}, "straddle='keep'"),
        ({"on_empty": "drop"}, "on_empty='drop'"),
    ],
)
def test_bad_policy(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Policy(**kwargs)


def test_errors_subclass_builtins():
    assert issubclass(labelmask.ConversationError, ValueError)
    assert issubclass(labelmask.TemplateNotFoundError, LookupError)
    assert issubclass(labelmask.TokenizerError, TypeError)
    assert issubclass(labelmask.RenderParityError, labelmask.AnnotationError)


def test_template_type_errors_become_labelmask_errors(tokenizers):
    """Qwen3's template concatenates the system content with a string; a list content fails there."""
    messages = [{"role": "system", "content": [{"type": "text", "text": "s"}]}, *OK]
    with pytest.raises(labelmask.TemplateRaisedError, match="qwen3") as info:
        labelmask.mask_conversation(
            messages, tokenizers["qwen3"], tools=[{"type": "function", "function": {"name": "f"}}]
        )
    assert info.value.message_index == 0
