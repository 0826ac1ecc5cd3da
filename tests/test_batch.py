"""mask_conversations: one batched encoding, results identical to mask_conversation's, safe across threads."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labelmask
from labelmask import _batch, _registry, _render
from labelmask.errors import (
    ControlTokenError,
    ConversationError,
    NothingToTrainError,
    TemplateRaisedError,
    TokenizerError,
)
from tests.strategies import TOOLS, conversations
from tests.test_fallback import tokenizer_for
from tests.test_invariants import CASES

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
NAMES = ("qwen3", "llama3", "gemma3", "llava-1.5", "llama3.1")
THREAD_CONVERSATIONS = [
    (HI, None),
    ([{"role": "system", "content": "Be brief."}, *HI, {"role": "user", "content": "Why?"}, *HI[1:]], None),
    ([{"role": "user", "content": "Only a question"}], None),  # nothing to train: an error, in every thread
    ([{"role": "user", "content": "<|im_end|> résumé 東京 🙂"}, {"role": "assistant", "content": " x "}], None),
]
REASONING_AND_TOOLS = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "Call the tool.",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "Sunny"},
    {"role": "assistant", "content": "Sunny."},
]


def assert_same(batched, single):
    assert batched.report == single.report
    assert batched.text == single.text
    assert batched.spans == single.spans
    assert list(batched) == list(single)
    for key in single:
        a, b = np.asarray(batched[key]), np.asarray(single[key])
        assert a.dtype == b.dtype and np.array_equal(a, b), key
    assert np.array_equal(batched.offsets, single.offsets)


def outcome(call, *args, **kwargs):
    """A result, or the error raised, so failures compare too."""
    try:
        return call(*args, **kwargs)
    except labelmask.LabelmaskError as exc:
        return exc


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(data=st.data())
def test_batch_equals_one_at_a_time(name, tokenizers, data):
    case = CASES[name]
    drawn = data.draw(st.lists(case.strategy, min_size=1, max_size=5), label="conversations")
    kwargs = data.draw(case.kwargs, label="template kwargs")
    chunk_size = data.draw(st.integers(1, 4), label="chunk_size")
    tokenizer = tokenizers[name]
    batch = labelmask.mask_conversations(
        [m for m, _ in drawn],
        tokenizer,
        tools=[t for _, t in drawn],
        return_tensors="np",
        on_error="return",
        chunk_size=chunk_size,
        **kwargs,
    )
    assert len(batch) == len(drawn)
    for i, ((messages, tools), got) in enumerate(zip(drawn, batch)):
        single = outcome(labelmask.mask_conversation, messages, tokenizer, tools=tools, return_tensors="np", **kwargs)
        if isinstance(single, Exception):
            assert type(got) is type(single)
            assert str(got) == f"Conversation {i}: {single}"
            assert got.index == i
        else:
            assert_same(got, single)


@settings(max_examples=10)
@given(drawn=st.lists(conversations(max_turns=4), min_size=1, max_size=4))
def test_batch_equals_one_at_a_time_without_an_annotation(drawn):
    # TRL's Qwen3 training template has no annotation: spans come from its {% generation %} blocks.
    tokenizer = tokenizer_for("qwen3_training.jinja")
    batch = labelmask.mask_conversations(
        [m for m, _ in drawn], tokenizer, tools=[t for _, t in drawn], on_error="return"
    )
    for (messages, tools), got in zip(drawn, batch):
        single = outcome(labelmask.mask_conversation, messages, tokenizer, tools=tools)
        if isinstance(single, Exception):
            assert type(got) is type(single)
        else:
            assert got.report.method == single.report.method != "annotated"
            assert_same(got, single)


def test_policy_and_tensor_options_reach_every_conversation(tokenizers):
    tokenizer = tokenizers["qwen3"]
    convs = [HI, [*HI, {"role": "user", "content": "And?"}, {"role": "assistant", "content": "Bye."}]]
    policy = labelmask.Policy(roles=("user", "assistant"), last_turn_only=True)
    batch = labelmask.mask_conversations(convs, tokenizer, policy=policy, return_tensors="pt", enable_thinking=False)
    for conversation, got in zip(convs, batch):
        single = labelmask.mask_conversation(
            conversation, tokenizer, policy=policy, return_tensors="pt", enable_thinking=False
        )
        assert got["labels"].dtype == single["labels"].dtype
        assert got["labels"].tolist() == single["labels"].tolist()


def test_errors_raise_with_the_conversation_index(tokenizers):
    tokenizer = tokenizers["gemma3"]
    bad = [{"role": "assistant", "content": "Hello!"}, {"role": "assistant", "content": "Again"}]
    with pytest.raises(TemplateRaisedError, match=r"^Conversation 2: ") as info:
        labelmask.mask_conversations([HI, HI, bad, HI], tokenizer, chunk_size=2)
    assert info.value.index == 2
    only_user = [{"role": "user", "content": "Hi"}]
    results = labelmask.mask_conversations([only_user, HI], tokenizer, on_error="return")
    assert isinstance(results[0], NothingToTrainError) and results[0].index == 0
    assert results[1].report.n_trained > 0


def test_empty_input_gives_an_empty_list(tokenizers):
    assert labelmask.mask_conversations([], tokenizers["qwen3"]) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tools": [TOOLS]}, ValueError, r"tools has 1 entries for 2 conversations"),
        ({"tools": [TOOLS[0], None]}, ValueError, r"tools\[0\] is a dict.*tools=\[schemas\] \* len"),
        ({"on_error": "skip"}, labelmask.OptionError, r"on_error='skip'\): use 'raise': .*'drop': .*'return'"),
        ({"chunk_size": 0}, ValueError, r"chunk_size=0: use a positive int"),
        ({"max_length": 8}, ValueError, r"does not truncate; call mask_conversation\(\.\.\., max_length"),
        ({"return_tensors": "tf"}, ValueError, r"return_tensors='tf'"),
        ({"policy": "assistant"}, TypeError, r"policy must be a labelmask.Policy"),
        ({"add_generation_prompt": True}, ConversationError, r"does not take add_generation_prompt"),
    ],
)
def test_invalid_arguments(tokenizers, kwargs, error, match):
    with pytest.raises(error, match=match):
        labelmask.mask_conversations([HI, HI], tokenizers["qwen3"], **kwargs)


def test_on_error_drop_leaves_failures_out_and_return_keeps_their_place(tokenizers):
    """The on_error words mean what they mean in mask_dataset: "drop" leaves the failing conversation out."""
    bad = [{"role": "user", "content": "only a question"}]  # nothing to train
    conversations = [HI, bad, HI]
    returned = labelmask.mask_conversations(conversations, tokenizers["qwen3"], on_error="return")
    assert isinstance(returned[1], labelmask.NothingToTrainError) and returned[1].index == 1
    dropped = labelmask.mask_conversations(conversations, tokenizers["qwen3"], on_error="drop")
    assert len(dropped) == 2
    assert [d["labels"] for d in dropped] == [returned[0]["labels"], returned[2]["labels"]]
    with pytest.raises(labelmask.OptionError, match="mask_dataset has no 'return'"):
        from labelmask._pipeline import check_on_error

        check_on_error("return", ("raise", "drop"), "mask_dataset")


def test_refuses_what_has_no_offsets_and_multimodal_processors(tokenizers):
    from transformers import CLIPImageProcessor, LlavaProcessor

    with pytest.raises(TokenizerError, match="is not a fast tokenizer"):
        labelmask.mask_conversations([HI], object())
    tokenizer = tokenizers["llava-1.5"]
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(), tokenizer=tokenizer, chat_template=tokenizer.chat_template, patch_size=14
    )
    with pytest.raises(TokenizerError, match="batches text conversations only.*mask_conversation"):
        labelmask.mask_conversations([HI], processor)


def test_threads_share_the_caches_and_get_the_serial_results(tokenizers):
    names = ("qwen3", "llama3", "gemma3", "llava-1.5")
    data = {name: THREAD_CONVERSATIONS for name in names}
    data["qwen3"] = [*THREAD_CONVERSATIONS, (REASONING_AND_TOOLS, TOOLS)]
    expected = {
        name: [outcome(labelmask.mask_conversation, m, tokenizers[name], tools=t) for m, t in convs]
        for name, convs in data.items()
    }
    # Cold caches, so threads race to compile the same templates and fill the same verdicts.
    _render.compile_template.cache_clear()
    _registry.REGISTRY.lookup.cache_clear()
    _render._SAFE_ATTRIBUTE.clear()
    barrier = threading.Barrier(8)
    got: dict[tuple[str, int], list] = {}

    def work(name: str, k: int) -> None:
        convs = data[name]
        barrier.wait()
        for _ in range(3):
            if k % 2:
                out = labelmask.mask_conversations(
                    [m for m, _ in convs],
                    tokenizers[name],
                    tools=[t for _, t in convs],
                    on_error="return",
                    chunk_size=2,
                )
            else:
                out = [outcome(labelmask.mask_conversation, m, tokenizers[name], tools=t) for m, t in convs]
            got.setdefault((name, k), []).append(out)

    threads = [threading.Thread(target=work, args=(name, k)) for name in names for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8
    for (name, _), runs in got.items():
        for out in runs:
            for single, result in zip(expected[name], out):
                if isinstance(single, Exception):
                    assert type(result) is type(single)
                else:
                    assert_same(result, single)


def test_control_tokens_and_check_reach_every_conversation(tokenizers):
    tokenizer = tokenizers["qwen3"]
    forged = [{"role": "user", "content": "Hi<|im_end|>"}, {"role": "assistant", "content": "Hello!"}]
    with pytest.raises(ControlTokenError, match=r"^Conversation 1: ") as info:
        labelmask.mask_conversations([HI, forged], tokenizer, control_tokens="raise")
    assert info.value.index == 1
    for mode in ("keep", "escape"):
        batch = labelmask.mask_conversations([HI, forged], tokenizer, control_tokens=mode, check="full")
        for conversation, got in zip([HI, forged], batch):
            single = labelmask.mask_conversation(conversation, tokenizer, control_tokens=mode, check="full")
            assert_same(got, single)
    assert batch[1].report.n_control_tokens == 1


@given(n=st.integers(0, 3000), size=st.integers(1, 300))
def test_chunks_cover_every_conversation_once_in_order(n, size):
    chunks = _batch._chunks(n, size)
    assert [i for lo, hi in chunks for i in range(lo, hi)] == list(range(n))
    assert all(1 <= hi - lo <= size for lo, hi in chunks)


def test_the_switch_interval_is_restored_after_every_call(tokenizers):
    tokenizer = tokenizers["llama3"]
    before = sys.getswitchinterval()
    seen = []
    real = _batch.encode_batch

    def spy(backend, texts):
        seen.append(sys.getswitchinterval())
        return real(backend, texts)

    try:
        _batch.encode_batch = spy
        labelmask.mask_conversations([HI] * 5, tokenizer, chunk_size=2)
        with pytest.raises(NothingToTrainError):
            labelmask.mask_conversations([HI, [{"role": "user", "content": "Hi"}]], tokenizer)
        threads = [threading.Thread(target=labelmask.mask_conversations, args=([HI] * 20, tokenizer)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        _batch.encode_batch = real
    assert seen and max(seen) <= _batch._HANDOFF_INTERVAL < before
    assert sys.getswitchinterval() == before
