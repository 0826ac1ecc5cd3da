"""The collator: a batch row, its padding removed, is the single-conversation result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import labelmask
from labelmask.testing.strategies import conversations

TEMPLATES = {
    "qwen3": conversations(tools=True, tool_role=True, reasoning=True, max_turns=6),
    "llama3": conversations(max_turns=6),
}


def singles(tokenizer, drawn):
    return [labelmask.mask_conversation(m, tokenizer, tools=t, return_tensors="np") for m, t in drawn]


def draw_batch(data, tokenizers):
    name = data.draw(st.sampled_from(sorted(TEMPLATES)), label="template")
    drawn = data.draw(st.lists(TEMPLATES[name], min_size=1, max_size=4), label="conversations")
    return tokenizers[name], drawn


@settings(max_examples=100)
@given(data=st.data(), side=st.sampled_from(["left", "right"]), multiple=st.sampled_from([None, 8]))
def test_a_padded_row_without_its_padding_is_the_single_result(tokenizers, data, side, multiple):
    tokenizer, drawn = draw_batch(data, tokenizers)
    collator = labelmask.Collator(tokenizer, padding_side=side, pad_to_multiple_of=multiple)
    batch = collator([{"messages": m, "tools": t} for m, t in drawn])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.int64 for v in batch.values())
    width = batch["input_ids"].shape[1]
    assert multiple is None or width % multiple == 0
    for row, single in enumerate(singles(tokenizer, drawn)):
        mask = batch["attention_mask"][row].numpy().astype(bool)
        n = len(single["input_ids"])
        assert mask.sum() == n
        # Padding sits on the chosen side only.
        expected_mask = np.zeros(width, dtype=bool)
        if side == "left":
            expected_mask[width - n :] = True
        else:
            expected_mask[:n] = True
        assert (mask == expected_mask).all()
        assert batch["input_ids"][row].numpy()[mask].tolist() == single["input_ids"].tolist()
        assert batch["labels"][row].numpy()[mask].tolist() == single["labels"].tolist()
        assert (batch["labels"][row].numpy()[~mask] == labelmask.IGNORE_INDEX).all()


@settings(max_examples=100)
@given(data=st.data(), multiple=st.sampled_from([None, 16]))
def test_a_packed_sequence_is_the_single_result_and_no_label_crosses_a_boundary(tokenizers, data, multiple):
    tokenizer, drawn = draw_batch(data, tokenizers)
    collator = labelmask.Collator(tokenizer, packing=True, pad_to_multiple_of=multiple, return_tensors="np")
    batch = collator([{"messages": m, "tools": t} for m, t in drawn])
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    ids, labels, positions = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
    assert multiple is None or len(ids) % multiple == 0
    starts = np.flatnonzero(positions == 0).tolist() + [len(ids)]
    pieces = list(zip(starts, starts[1:]))
    results = singles(tokenizer, drawn)
    assert len(pieces) == len(results) + (1 if len(ids) > sum(len(r["input_ids"]) for r in results) else 0)
    for (a, b), single in zip(pieces, results):
        assert ids[a:b].tolist() == single["input_ids"].tolist()
        assert positions[a:b].tolist() == list(range(b - a))
        # The first token of a sequence is never a target (it would be predicted from the
        # previous sequence); every other label is the single result's.
        assert labels[a] == labelmask.IGNORE_INDEX
        assert labels[a + 1 : b].tolist() == single["labels"][1:].tolist()
    for a, b in pieces[len(results) :]:
        assert (labels[a:b] == labelmask.IGNORE_INDEX).all()


def test_pad_token_equal_to_eos_keeps_the_trained_end_of_turn(tokenizers):
    from tests.fixtures import load_tokenizer

    tokenizer = load_tokenizer("qwen3")
    tokenizer.pad_token = "<|im_end|>"  # as many SFT recipes set it
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, friend."}]
    short = [{"role": "user", "content": "?"}, {"role": "assistant", "content": "!"}]
    batch = labelmask.Collator(tokenizer)([{"messages": messages}, {"messages": short}])
    ids, labels = batch["input_ids"][1], batch["labels"][1]
    padding = batch["attention_mask"][1] == 0
    assert padding.any() and (ids[padding] == im_end).all()  # padding is <|im_end|> too
    real_eots = (ids == im_end) & ~padding
    trained_eots = real_eots & (labels == im_end)
    # The reply's <|im_end|> is trained; the user's and the padding are not.
    assert trained_eots.sum() == 1
    assert (labels[padding] == labelmask.IGNORE_INDEX).all()


def test_masked_examples_collate_like_raw_conversations(tokenizers):
    tokenizer = tokenizers["qwen3"]
    convs = [
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": "c"}, {"role": "assistant", "content": "dd"}],
    ]
    collator = labelmask.Collator(tokenizer, return_tensors="np")
    raw = collator([{"messages": m} for m in convs])
    masked = [dict(labelmask.mask_conversation(m, tokenizer)) for m in convs]  # lists, as a dataset holds them
    pre = collator(masked)
    for key in raw:
        assert (raw[key] == pre[key]).all()
    torch_batch = labelmask.Collator(tokenizer)(masked)
    for key in raw:
        assert torch_batch[key].numpy().tolist() == raw[key].tolist()


def test_provenance_is_padded_on_request(tokenizers):
    tokenizer = tokenizers["qwen3"]
    convs = [
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        [{"role": "user", "content": "longer question"}, {"role": "assistant", "content": "longer answer"}],
    ]
    batch = labelmask.Collator(tokenizer, return_provenance=True, return_tensors="np")([{"messages": m} for m in convs])
    assert {"message_index", "role", "part"} <= set(batch)
    padding = batch["attention_mask"] == 0
    assert (batch["message_index"][padding] == -1).all() and (batch["role"][padding] == -1).all()


@pytest.mark.parametrize(
    "features, error, fragment",
    [
        ([], ValueError, "empty batch"),
        ([["not", "a", "mapping"]], TypeError, "feature 0 is a list"),
        ([{"input_ids": [1, 2]}], KeyError, "no labels"),
        ([{"text": "hi"}], KeyError, "neither 'messages' nor input_ids"),
        ([{"input_ids": [1, 2], "labels": [1]}], ValueError, "differ in length"),
        (
            [{"input_ids": [1, 2, 3], "labels": [-100, 3, -100]}],
            ValueError,
            r"labels\[1\] is 3 but input_ids\[1\] is 2",
        ),
        ([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}], ValueError, "every one of its 3 tokens is trained"),
    ],
)
def test_bad_features_raise_clearly(tokenizers, features, error, fragment):
    with pytest.raises(error, match=fragment) as info:
        labelmask.Collator(tokenizers["qwen3"])(features)
    assert isinstance(info.value, labelmask.FeatureError)


def test_rows_a_tokenizer_only_step_labelled_are_refused(tokenizers):
    # Issue 19, item 6. On f01e381, features tokenized by the stock template with labels copied from the
    # ids (what SFTTrainer's preparation and DataCollatorForLanguageModeling give) were batched as they
    # came: every token trained, the user's turns included.
    tokenizer = tokenizers["qwen3"]
    messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    with pytest.raises(labelmask.FeatureError, match="skip_prepare_dataset") as info:
        labelmask.Collator(tokenizer)([{"input_ids": ids, "labels": list(ids)}])
    assert "every one of its" in str(info.value) and "SFTConfig(remove_unused_columns=False" in str(info.value)
    # The same conversation, raw or masked by labelmask, goes through.
    masked = labelmask.mask_conversation(messages, tokenizer)
    for feature in ({"messages": messages}, {"input_ids": masked["input_ids"], "labels": masked["labels"]}):
        batch = labelmask.Collator(tokenizer, return_tensors="np")([feature])
        assert batch["labels"][0].tolist() == masked["labels"]


@settings(max_examples=40)
@given(data=st.data(), roles=st.sets(st.sampled_from(["system", "user", "assistant", "tool"]), min_size=1))
def test_every_mask_labelmask_gives_is_accepted_as_a_feature(tokenizers, data, roles):
    # The check that refuses foreign labels never refuses labelmask's own, whatever the policy trains.
    tokenizer, drawn = draw_batch(data, tokenizers)
    policy = labelmask.Policy(roles=roles, on_empty="keep", on_dropped_tool_calls="train")
    masked = [labelmask.mask_conversation(m, tokenizer, tools=t, policy=policy) for m, t in drawn]
    features = [{"input_ids": out["input_ids"], "labels": out["labels"]} for out in masked]
    batch = labelmask.Collator(tokenizer, return_tensors="np", padding_side="right")(features)
    for row, out in enumerate(masked):
        assert batch["labels"][row, : len(out["labels"])].tolist() == out["labels"]


def test_bad_options_raise_clearly(tokenizers):
    for kwargs, fragment in [
        ({"padding_side": "middle"}, "padding_side"),
        ({"pad_to_multiple_of": 0}, "pad_to_multiple_of"),
        ({"return_tensors": "tf"}, "return_tensors"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            labelmask.Collator(tokenizers["qwen3"], **kwargs)


def test_loss_weights_are_padded_with_zero_and_packed_on_request(tokenizers):
    tokenizer = tokenizers["qwen3"]
    convs = [
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0.5}],
        [{"role": "user", "content": "longer question"}, {"role": "assistant", "content": "longer answer"}],
    ]
    singles_ = [labelmask.mask_conversation(m, tokenizer, return_tensors="np") for m in convs]
    padded = labelmask.Collator(tokenizer, return_loss_weights=True)([{"messages": m} for m in convs])
    assert padded["loss_weights"].dtype == torch.float32
    for row, single in enumerate(singles_):
        mask = padded["attention_mask"][row].bool()
        assert padded["loss_weights"][row][mask].tolist() == single["loss_weights"].tolist()
        assert (padded["loss_weights"][row][~mask] == 0).all()
    assert 0.5 in padded["loss_weights"][0].tolist()
    packed = labelmask.Collator(tokenizer, return_loss_weights=True, packing=True)([{"messages": m} for m in convs])
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert (packed["loss_weights"][0][starts] == 0).all()
    assert (packed["loss_weights"][0] > 0).sum() == (packed["labels"][0] != labelmask.IGNORE_INDEX).sum()
