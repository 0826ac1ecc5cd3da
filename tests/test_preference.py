"""Preference pairs: ``prompt + completion`` ids are the stock template's, and each completion
trains exactly its replies' generated region (issue 21, acceptance 1).

The reference for the labels is the whole conversation masked with every reply trained, checked by
``labelmask.testing``'s invariants against the stock template (render and token parity, soundness,
completeness, the end of turn trained): the completion must train exactly those of its tokens that
belong to the completion's messages. The reference for the prompt is transformers' own
``apply_chat_template(prompt, add_generation_prompt=True)``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

import labelmask
from labelmask.testing import texts
from labelmask.testing._checks import Sample, check_sample, labelmask_clock
from tests.strategies import harmony_texts
from tests.test_invariants import CASES, expect

IGNORE = labelmask.IGNORE_INDEX

# Qwen3, Llama 3 and Gemma 3 (the three), and gpt-oss: a template that rewrites history (an
# earlier reply loses its analysis, and its <|return|> becomes <|end|>, once another message follows).
PROPERTY_TEMPLATES = ("qwen3", "llama3", "gemma3", "gpt-oss")


def stock_ids(tokenizer, messages, tools, kwargs, **extra):
    with labelmask_clock():  # gpt-oss writes today's date: labelmask renders at a fixed instant
        out = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, **kwargs, **extra)
    return list(out["input_ids"] if not isinstance(out, list) else out)


@st.composite
def pairs(draw, name):
    """(prompt, chosen, rejected, tools, kwargs): a conversation of the template's own strategy cut
    at its last user message; the replies after it are one completion, and a drawn reply the other."""
    case = CASES[name]
    messages, tools = draw(case.strategy, label="conversation")
    kwargs = draw(case.kwargs, label="template kwargs")
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    assume(users and messages[-1]["role"] == "assistant")
    cut = users[-1] + 1
    completion = messages[cut:]
    assume(all(m["role"] in ("assistant", "tool") for m in completion) and completion[0]["role"] == "assistant")
    text = harmony_texts() if name == "gpt-oss" else texts()
    other = {"role": "assistant", "content": draw(text, label="other reply")}
    if name in ("qwen3", "gpt-oss") and draw(st.booleans()):
        other["reasoning_content"] = draw(text, label="other reasoning")
    if draw(st.booleans()):
        return messages[:cut], completion, [other], tools, kwargs
    return messages[:cut], [other], completion, tools, kwargs


def reference(tokenizer, name, messages, tools, kwargs, n_prompt):
    """The whole conversation masked with every reply trained and checked against the stock template;
    its labels kept on the completion's messages only."""
    sample = Sample.mask(tokenizer, messages, tools, expect(CASES[name], name), **kwargs)
    check_sample(sample)
    out = sample.out
    labels = np.where(out["message_index"] >= n_prompt, out["labels"], IGNORE)
    return out["input_ids"].tolist(), labels


@pytest.mark.parametrize("name", PROPERTY_TEMPLATES)
@settings(max_examples=max(1, settings.default.max_examples // 4), deadline=None)
@given(data=st.data())
def test_prompt_plus_completion_is_the_stock_render_and_labels_are_the_completions_replies(name, tokenizers, data):
    tokenizer = tokenizers[name]
    prompt, chosen, rejected, tools, kwargs = data.draw(pairs(name))
    try:
        pair = labelmask.mask_preference(prompt, chosen, rejected, tokenizer, tools=tools, **kwargs)
    except labelmask.NothingToTrainError:
        # A reply that renders to nothing trainable (gpt-oss drops a tool-call reply's empty analysis): say so.
        assume(False)
    n_prompt = len(prompt)
    event(f"split at the {pair.report.split}; {len(chosen) + len(rejected)} completion messages")
    prompt_ids = list(pair["prompt_input_ids"])
    generation = stock_ids(tokenizer, prompt, tools, kwargs, add_generation_prompt=True)
    matches = True
    for side, completion in (("chosen", chosen), ("rejected", rejected)):
        messages = prompt + completion
        ids, expected = reference(tokenizer, name, messages, tools, kwargs, n_prompt)
        assert ids == stock_ids(tokenizer, messages, tools, kwargs)
        assert prompt_ids + list(pair[f"{side}_input_ids"]) == ids
        split = len(prompt_ids)
        assert (expected[:split] == IGNORE).all(), "the split cuts into a completion's trained tokens"
        assert list(pair[f"{side}_labels"]) == expected[split:].tolist()
        assert (expected[split:] != IGNORE).any()
        matches &= ids[: len(generation)] == generation
    # The prompt is the generation prompt exactly when both conversations start with its ids.
    assert pair.report.prompt_matches_generation == (matches and prompt_ids == generation)
    if pair.report.prompt_matches_generation:
        assert pair.report.split == "generation_prompt" and pair.report.n_moved == 0


# ---------------------------------------------------------------------------------------------- examples

QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]


def trained_text(tokenizer, ids, labels):
    return tokenizer.decode([i for i, label in zip(ids, labels) if label != IGNORE])


def test_qwen3_pair_trains_each_reply_through_its_stop_token_not_the_newline_after_it(tokenizers):
    tokenizer = tokenizers["qwen3"]
    pair = labelmask.mask_preference(
        QUESTION,
        {"role": "assistant", "content": "4", "reasoning_content": "Two and two."},
        {"role": "assistant", "content": "5"},
        tokenizer,
    )
    assert tokenizer.decode(pair["prompt_input_ids"]).endswith("2 + 2?<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(pair["chosen_input_ids"]) == "<think>\nTwo and two.\n</think>\n\n4<|im_end|>\n"
    assert trained_text(tokenizer, pair["chosen_input_ids"], pair["chosen_labels"]) == (
        "<think>\nTwo and two.\n</think>\n\n4<|im_end|>"
    )
    # Qwen3 writes an empty think block into the last reply without reasoning; with thinking on, the
    # model writes that block itself when it answers without thinking, so it is trained.
    assert tokenizer.decode(pair["rejected_input_ids"]) == "<think>\n\n</think>\n\n5<|im_end|>\n"
    assert trained_text(tokenizer, pair["rejected_input_ids"], pair["rejected_labels"]) == (
        "<think>\n\n</think>\n\n5<|im_end|>"
    )
    assert pair.report.split == "generation_prompt" and pair.report.prompt_matches_generation


def test_a_completion_with_tool_calls_trains_the_replies_and_not_the_tool_result(tokenizers):
    tokenizer = tokenizers["qwen3"]
    call = {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}
    chosen = [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "4"},
        {"role": "assistant", "content": "It is 4."},
    ]
    pair = labelmask.mask_preference(QUESTION, chosen, {"role": "assistant", "content": "5"}, tokenizer)
    trained = trained_text(tokenizer, pair["chosen_input_ids"], pair["chosen_labels"])
    assert trained == (
        '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call><|im_end|>'
        "<think>\n\n</think>\n\nIt is 4.<|im_end|>"
    )
    assert "<tool_response>" in tokenizer.decode(pair["chosen_input_ids"])


def test_qwen3_without_thinking_moves_the_split_to_the_header_and_says_so(tokenizers):
    """With enable_thinking=False the generation prompt ends with an empty think block; a chosen reply
    with reasoning renders its own block there, so the generation prompt is not a prefix of it."""
    tokenizer = tokenizers["qwen3"]
    pair = labelmask.mask_preference(
        QUESTION,
        {"role": "assistant", "content": "4", "reasoning_content": "Two and two."},
        {"role": "assistant", "content": "5"},
        tokenizer,
        enable_thinking=False,
    )
    assert pair.report.split == "header" and not pair.report.prompt_matches_generation
    assert tokenizer.decode(pair["prompt_input_ids"]).endswith("<|im_start|>assistant\n")
    # The rejected reply's empty block is the generation prompt's (the header's, to the annotation),
    # left in its completion untrained.
    assert pair.report.n_moved == len(tokenizer.encode("<think>\n\n</think>\n\n", add_special_tokens=False))
    assert trained_text(tokenizer, pair["rejected_input_ids"], pair["rejected_labels"]) == "5<|im_end|>"


def test_deepseek_r1_prompt_is_split_at_the_header_because_its_generation_prompt_opens_think(tokenizers):
    tokenizer = tokenizers["deepseek-r1-distill"]
    prompt = [{"role": "user", "content": "2 + 2?"}]
    pair = labelmask.mask_preference(
        prompt, {"role": "assistant", "content": "4"}, {"role": "assistant", "content": "5"}, tokenizer
    )
    generation = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert generation.endswith("<｜Assistant｜><think>\n")
    assert pair.report.split == "header" and not pair.report.prompt_matches_generation
    assert tokenizer.decode(pair["prompt_input_ids"]).endswith("<｜Assistant｜>")
    assert trained_text(tokenizer, pair["chosen_input_ids"], pair["chosen_labels"]) == "4<｜end▁of▁sentence｜>"


def test_a_token_merging_the_header_with_the_reply_moves_the_split_to_the_header(tokenizers):
    """ChatML's header ends with a newline; a reply starting with two merges with it into one token
    (ĊĊĊ). The generation prompt's ids are then not a prefix of the chosen conversation: the split is
    at the header's end, the merged token starts the completion (trained: it writes the reply's first
    characters), and the rejected conversation's own header newline moves to its completion, untrained."""
    tokenizer = tokenizers["chatml"]
    prompt = [{"role": "user", "content": "2 + 2?"}]
    pair = labelmask.mask_preference(prompt, "\n\nFour.", "5", tokenizer)
    assert pair.report.split == "header" and not pair.report.prompt_matches_generation
    assert pair.report.n_moved == 1
    assert tokenizer.decode(pair["prompt_input_ids"]).endswith("<|im_start|>assistant")
    chosen = tokenizer.convert_ids_to_tokens(pair["chosen_input_ids"])
    assert chosen[:2] == ["ĊĊĊ", "Four"] and pair["chosen_labels"][0] == pair["chosen_input_ids"][0]
    assert tokenizer.convert_ids_to_tokens(pair["rejected_input_ids"][:1]) == ["Ċ"]
    assert pair["rejected_labels"][0] == IGNORE
    assert trained_text(tokenizer, pair["rejected_input_ids"], pair["rejected_labels"]) == "5<|im_end|>"
    for completion in ("\n\nFour.", "5"):
        messages = [*prompt, {"role": "assistant", "content": completion}]
        side = "chosen" if completion != "5" else "rejected"
        assert pair["prompt_input_ids"] + pair[f"{side}_input_ids"] == stock_ids(tokenizer, messages, None, {})


def test_glm_completion_ends_with_the_stop_token_the_model_generates(tokenizers):
    """GLM-4.5 closes a reply with the next turn's header; after the last reply the stock render writes
    nothing, and labelmask writes the <|user|> the model generates there (as mask_conversation does)."""
    tokenizer = tokenizers["glm-4.5"]
    pair = labelmask.mask_preference(
        [{"role": "user", "content": "2 + 2?"}],
        {"role": "assistant", "content": "4"},
        {"role": "assistant", "content": "5"},
        tokenizer,
    )
    assert trained_text(tokenizer, pair["chosen_input_ids"], pair["chosen_labels"]) == "\n4<|user|>"
    assert trained_text(tokenizer, pair["rejected_input_ids"], pair["rejected_labels"]) == "\n5<|user|>"


@pytest.mark.parametrize("name", ["llama3", "gemma3"])
def test_a_template_nobody_annotated_is_split_from_its_derived_spans(name):
    from tests.fixtures import load_tokenizer

    tokenizer = load_tokenizer(name)
    tokenizer.chat_template = "{#- an edited copy: no annotation matches it -#}" + tokenizer.chat_template
    prompt = [{"role": "user", "content": "2 + 2?"}]
    pair = labelmask.mask_preference(prompt, "4", "5", tokenizer)
    assert pair.report.template.startswith("unregistered-") and pair.report.prompt_matches_generation
    messages = [*prompt, {"role": "assistant", "content": "4"}]
    assert pair["prompt_input_ids"] + pair["chosen_input_ids"] == stock_ids(tokenizer, messages, None, {})
    eot = {"llama3": "<|eot_id|>", "gemma3": "<end_of_turn>"}[name]
    assert trained_text(tokenizer, pair["chosen_input_ids"], pair["chosen_labels"]) == "4" + eot


def test_plain_strings_are_one_user_message_and_one_reply(tokenizers):
    tokenizer = tokenizers["llama3"]
    pair = labelmask.mask_preference("2 + 2?", "4", "5", tokenizer)
    messages = [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]
    assert pair["prompt_input_ids"] + pair["chosen_input_ids"] == stock_ids(tokenizer, messages, None, {})
    assert trained_text(tokenizer, pair["chosen_input_ids"], pair["chosen_labels"]) == "4<|eot_id|>"


def test_unpaired_completion_for_kto(tokenizers):
    tokenizer = tokenizers["llama3"]
    out = labelmask.mask_unpaired("2 + 2?", "5", tokenizer, label=False, return_tensors="np")
    assert set(out) == {"prompt_input_ids", "completion_input_ids", "completion_labels", "label"}
    assert out["label"] is False and isinstance(out["completion_labels"], np.ndarray)
    assert trained_text(tokenizer, out["completion_input_ids"], out["completion_labels"]) == "5<|eot_id|>"
    with pytest.raises(labelmask.OptionError, match="label"):
        labelmask.mask_unpaired("2 + 2?", "5", tokenizer, label="no")


@pytest.mark.parametrize(
    ("prompt", "chosen", "match"),
    [
        ([], "4", "non-empty list"),
        (QUESTION, [], "non-empty list"),
        (QUESTION, [{"role": "user", "content": "hm"}], "role 'user'"),
        (QUESTION, [{"role": "assistant", "content": "4"}, {"role": "tool", "content": "x"}], "must end"),
        (QUESTION, [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "4"}], "must start"),
        ([{"role": "user", "content": "2 + 2?", "train": True}], "4", '"train": True'),
    ],
)
def test_malformed_pairs_raise_conversation_errors(tokenizers, prompt, chosen, match):
    with pytest.raises(labelmask.ConversationError, match=match):
        labelmask.mask_preference(prompt, chosen, "5", tokenizers["llama3"])


def test_options_a_pair_cannot_take_are_refused(tokenizers):
    with pytest.raises(labelmask.OptionError, match="PreferenceCollator"):
        labelmask.mask_preference(QUESTION, "4", "5", tokenizers["llama3"], max_length=8)
    with pytest.raises(labelmask.OptionError, match="return_tensors"):
        labelmask.mask_preference(QUESTION, "4", "5", tokenizers["llama3"], return_tensors="pt")


# ---------------------------------------------------------------------------------------------- collator


def test_collator_completion_mask_is_exactly_the_labels_chosen_first(tokenizers):
    tokenizer = tokenizers["qwen3"]
    pairs_ = [
        labelmask.mask_preference(QUESTION, "4", "5, or so I believe", tokenizer),
        labelmask.mask_preference([{"role": "user", "content": "Hi"}], "Hello there.", "Go away.", tokenizer),
    ]
    batch = labelmask.PreferenceCollator(tokenizer)(pairs_)
    assert set(batch) == {"input_ids", "attention_mask", "completion_mask"}
    assert batch["input_ids"].shape[0] == 4
    for row, (pair, side) in enumerate([(p, "chosen") for p in pairs_] + [(p, "rejected") for p in pairs_]):
        ids = pair["prompt_input_ids"] + pair[f"{side}_input_ids"]
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        trained = [0] * len(pair["prompt_input_ids"]) + [int(x != IGNORE) for x in pair[f"{side}_labels"]]
        assert batch["completion_mask"][row, :n].tolist() == trained
        assert not batch["completion_mask"][row, n:].any()
    # The newline Qwen writes after <|im_end|> is in the ids and never in the mask.
    assert batch["input_ids"][0, len(pairs_[0]["prompt_input_ids"] + pairs_[0]["chosen_input_ids"]) - 1] == 198


def test_collator_masks_raw_rows_as_mask_preference_does(tokenizers):
    tokenizer = tokenizers["llama3"]
    raw = {"prompt": QUESTION, "chosen": "4", "rejected": "5", "prompt_ids": [1, 2], "chosen_ids": [3]}
    collator = labelmask.PreferenceCollator(tokenizer)
    masked = labelmask.mask_preference(QUESTION, "4", "5", tokenizer)
    assert {k: v.tolist() for k, v in collator([raw]).items()} == {k: v.tolist() for k, v in collator([masked]).items()}


@pytest.mark.parametrize("mode", ["keep_start", "keep_end"])
def test_collator_cuts_like_trl_and_refuses_a_cut_that_leaves_nothing_to_train(tokenizers, mode):
    tokenizer = tokenizers["llama3"]
    pair = labelmask.mask_preference(QUESTION, "four, which is two plus two", "5", tokenizer)
    n_prompt = len(pair["prompt_input_ids"])
    ids = pair["prompt_input_ids"] + pair["chosen_input_ids"]
    batch = labelmask.PreferenceCollator(tokenizer, max_length=n_prompt + 3, truncation_mode=mode)([pair])
    kept = ids[: n_prompt + 3] if mode == "keep_start" else ids[-(n_prompt + 3) :]
    assert batch["input_ids"][0].tolist() == kept
    assert batch["completion_mask"][0].any()
    if mode == "keep_start":
        with pytest.raises(labelmask.TruncationError, match="nothing to train"):
            labelmask.PreferenceCollator(tokenizer, max_length=n_prompt - 1)([pair])


def test_collator_refuses_features_it_cannot_read(tokenizers):
    collator = labelmask.PreferenceCollator(tokenizers["llama3"])
    with pytest.raises(labelmask.FeatureError, match="raw"):
        collator([{"input_ids": [1, 2]}])
    pair = dict(labelmask.mask_preference(QUESTION, "4", "5", tokenizers["llama3"]))
    forged = {**pair, "chosen_labels": [7] * len(pair["chosen_labels"])}
    with pytest.raises(labelmask.FeatureError, match="not the ids"):
        collator([forged])
    for junk in (["a", "b"], [[1, 2], [3]], [2**70]):
        with pytest.raises(labelmask.FeatureError, match="lists of ints"):
            collator([{**pair, "chosen_input_ids": junk}])
    with pytest.raises(labelmask.OptionError):
        labelmask.PreferenceCollator(tokenizers["llama3"], truncation_mode="left")
    unpaired = dict(labelmask.mask_unpaired(QUESTION, "4", tokenizers["llama3"], label=True))
    for label in ("False", None, 1):
        with pytest.raises(labelmask.FeatureError, match="True or False"):
            collator([{**unpaired, "label": label}])
    with pytest.raises(labelmask.FeatureError, match="True or False"):
        collator([{"prompt": "2 + 2?", "completion": "4", "label": "yes"}])


def test_collator_builds_ktos_batch_with_mismatched_kl_pairs(tokenizers):
    tokenizer = tokenizers["llama3"]
    rows = [
        labelmask.mask_unpaired(QUESTION, "4", tokenizer, label=True),
        labelmask.mask_unpaired([{"role": "user", "content": "Hi"}], "Go away.", tokenizer, label=False),
    ]
    batch = labelmask.PreferenceCollator(tokenizer)(rows)
    assert batch["label"].tolist() == [True, False]
    for row, (own, other) in enumerate([(rows[0], rows[1]), (rows[1], rows[0])]):
        ids = own["prompt_input_ids"] + own["completion_input_ids"]
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
        kl = own["prompt_input_ids"] + other["completion_input_ids"]
        assert batch["KL_input_ids"][row, : len(kl)].tolist() == kl
        mask = [0] * len(own["prompt_input_ids"]) + [int(x != IGNORE) for x in other["completion_labels"]]
        assert batch["KL_completion_mask"][row, : len(kl)].tolist() == mask


# ---------------------------------------------------------------------------------------------- datasets


def test_dataset_formats_give_the_pairs_mask_preference_gives(tokenizers):
    from datasets import Dataset

    tokenizer = tokenizers["qwen3"]
    chosen = [{"role": "assistant", "content": "4"}]
    rejected = [{"role": "assistant", "content": "5"}]
    expected = dict(labelmask.mask_preference(QUESTION, chosen, rejected, tokenizer))
    explicit = Dataset.from_list([{"prompt": QUESTION, "chosen": chosen, "rejected": rejected}])
    implicit = Dataset.from_list([{"chosen": QUESTION + chosen, "rejected": QUESTION + rejected}])
    for dataset in (explicit, implicit):
        masked, stats = labelmask.mask_preference_dataset(dataset, tokenizer)
        row = masked[0]
        assert {k: row[k] for k in expected} == expected
        assert row["prompt_matches_generation"] and stats.n_kept == 1
        assert set(dataset.column_names) <= set(masked.column_names)  # TRL's DPOTrainer reads them
    plain = Dataset.from_list([{"prompt": "2 + 2?", "chosen": "4", "rejected": "5"}])
    masked, _ = labelmask.mask_preference_dataset(plain, tokenizer, remove_columns=True)
    assert masked[0] == {
        **dict(labelmask.mask_preference("2 + 2?", "4", "5", tokenizer)),
        "prompt_matches_generation": True,
        "not_rendered": [],
    }


def test_a_rows_chat_template_kwargs_reach_its_template(tokenizers):
    from datasets import Dataset

    tokenizer = tokenizers["qwen3"]
    rows = [
        {"prompt": "2 + 2?", "chosen": "4", "rejected": "5", "chat_template_kwargs": {"enable_thinking": False}},
        {"prompt": "2 + 2?", "chosen": "4", "rejected": "5", "chat_template_kwargs": {}},
    ]
    masked, _ = labelmask.mask_preference_dataset(Dataset.from_list(rows), tokenizer)
    off = labelmask.mask_preference("2 + 2?", "4", "5", tokenizer, enable_thinking=False)
    on = labelmask.mask_preference("2 + 2?", "4", "5", tokenizer)
    assert off["prompt_input_ids"] != on["prompt_input_ids"]  # the generation prompt holds the empty block
    assert masked[0]["prompt_input_ids"] == off["prompt_input_ids"]
    assert masked[1]["prompt_input_ids"] == on["prompt_input_ids"]
    bad = Dataset.from_list([{**rows[0], "chat_template_kwargs": {"enable_thinkin": False}}])
    with pytest.raises(labelmask.OptionError, match="enable_thinking"):
        labelmask.mask_preference_dataset(bad, tokenizer)


def test_unpaired_dataset_for_kto(tokenizers):
    from datasets import Dataset

    tokenizer = tokenizers["llama3"]
    rows = [
        {"prompt": "2 + 2?", "completion": "4", "label": True},
        {"prompt": "2 + 2?", "completion": "5", "label": False},
    ]
    masked, stats = labelmask.mask_preference_dataset(Dataset.from_list(rows), tokenizer)
    assert masked["label"] == [True, False] and stats.n_kept == 2
    assert (
        masked[1]["completion_input_ids"]
        == labelmask.mask_unpaired("2 + 2?", "5", tokenizer, label=False)["completion_input_ids"]
    )


def test_dataset_drops_and_counts_bad_rows_and_rows_the_cut_leaves_empty(tokenizers):
    from datasets import Dataset

    tokenizer = tokenizers["llama3"]
    rows = [
        {"prompt": "2 + 2?", "chosen": "4", "rejected": "5"},
        {"prompt": "x " * 200, "chosen": "4", "rejected": "5"},  # the prompt alone fills max_length
        {"prompt": "2 + 2?", "chosen": "", "rejected": "5"},  # an empty reply still trains its stop token
    ]
    rows.append({"prompt": "2 + 2?", "chosen": "4", "rejected": "5"})
    dataset = Dataset.from_list(rows)
    with pytest.raises(labelmask.TruncationError, match="Row 1: "):
        labelmask.mask_preference_dataset(dataset, tokenizer, max_length=64)
    masked, stats = labelmask.mask_preference_dataset(dataset, tokenizer, max_length=64, on_error="drop")
    assert stats.n_rows == 4 and stats.n_kept == 3 and stats.dropped == {"TruncationError": 1}
    assert "Row 1: " in stats.first_error["TruncationError"]
    assert len(masked) == 3


def test_dataset_columns_that_fit_no_format_are_refused(tokenizers):
    from datasets import Dataset

    with pytest.raises(labelmask.ConversationError, match="prompt, chosen and rejected"):
        labelmask.mask_preference_dataset(Dataset.from_list([{"question": "?", "answer": "!"}]), tokenizers["llama3"])
