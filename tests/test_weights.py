"""Loss weights by part and by role (issue 21, item 2 and acceptance 3).

A trained token's ``loss_weights`` entry is its message's ``"weight"`` times the policy's
weight for its role times the policy's weight for its part; every path that makes a result
agrees; and ``transformers.Trainer`` and TRL's ``SFTTrainer`` with ``labelmask.WeightedLoss``
report, as their first loss, the weighted mean computed here by hand from the model's logits
and the weights derived here from the provenance arrays and the messages' weights.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import trl
from hypothesis import given, settings
from hypothesis import strategies as st

import labelmask
from labelmask import IGNORE_INDEX, ConversationError, FeatureError, OptionError, Part, Policy, Role
from tests.fixtures import load_tokenizer
from tests.test_policies import ALL_ROLES, NAMES, draw
from tests.test_trl import THREE_STEPS, tiny_model

ROLE_NAME = {int(Role.SYSTEM): "system", int(Role.USER): "user", int(Role.ASSISTANT): "assistant"}
ROLE_NAME[int(Role.TOOL)] = "tool"
PARTS = ["content", "reasoning", "tool_calls", "eot", "template"]


def derived_weights(labels, message_index, role, part, message_weights, part_weights, role_weights) -> np.ndarray:
    """The weights by the rule, from a result's (or a batch row's) provenance: float64."""
    out = np.zeros(len(labels))
    for t, (label, m, r, p) in enumerate(zip(labels, message_index, role, part)):
        if label == IGNORE_INDEX:
            continue
        weight = message_weights[m]
        weight *= role_weights.get(ROLE_NAME.get(int(r)), 1.0)
        weight *= part_weights.get(Part(int(p)).name.lower(), 1.0)
        out[t] = weight
    return out


def message_weights(messages) -> list[float]:
    return [1.0 if m.get("weight") is None else float(m["weight"]) for m in messages]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 10))
@given(data=st.data())
def test_loss_weights_are_message_times_role_times_part_weight(name, tokenizers, data):
    tokenizer, messages, tools, kwargs = draw(name, tokenizers, data)
    weight = st.sampled_from([0.0, 0.25, 0.5, 1, 2.0, 3.5])
    per_message = data.draw(st.lists(st.none() | weight, min_size=len(messages), max_size=len(messages)))
    messages = [m if w is None else {**m, "weight": w} for m, w in zip(messages, per_message)]
    part_weights = data.draw(st.dictionaries(st.sampled_from(PARTS), weight), label="part_weights")
    role_weights = data.draw(st.dictionaries(st.sampled_from(sorted(ALL_ROLES)), weight), label="role_weights")
    roles = data.draw(st.sampled_from([{"assistant"}, set(ALL_ROLES)]), label="roles")
    common = dict(tools=tools, return_tensors="np", **kwargs)
    plain = labelmask.mask_conversation(messages, tokenizer, policy=Policy(roles=roles, on_empty="keep"), **common)
    policy = Policy(roles=roles, on_empty="keep", part_weights=part_weights, role_weights=role_weights)
    out = labelmask.mask_conversation(messages, tokenizer, policy=policy, **common)
    # Weights never change what is trained.
    assert (out["labels"] == plain["labels"]).all()
    expected = derived_weights(
        out["labels"], out["message_index"], out["role"], out["part"], message_weights(messages), part_weights,
        role_weights,
    )  # fmt: skip
    assert out["loss_weights"].dtype == np.float32
    np.testing.assert_allclose(out["loss_weights"], expected, rtol=1e-6, atol=0)
    assert ((out["loss_weights"] == 0) | (out["labels"] != IGNORE_INDEX)).all()


# Conversations with reasoning, tool calls, a tool result and message weights, for Qwen3 (which writes the
# reasoning of the replies after the last user message). Arguments are JSON text, so a datasets column holds them.
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
WEIGHTED = [
    [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "reasoning_content": "I should call the tool.", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "18C and sunny"},
        {"role": "assistant", "reasoning_content": "Report it.", "content": "It is 18C and sunny.", "weight": 2.0},
    ],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "reasoning_content": "Two and two make four.", "content": "4"},
    ],
    [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hello there!", "weight": 0.5}],
    [
        {"role": "user", "content": "A long question " * 6},
        {"role": "assistant", "reasoning_content": "Keep it short.", "content": "A short answer."},
    ],
]
PART_WEIGHTS = {"reasoning": 0.5, "tool_calls": 2.0, "eot": 1.5}
ROLE_WEIGHTS = {"tool": 0.5}
POLICY = Policy(roles={"assistant", "tool"}, part_weights=PART_WEIGHTS, role_weights=ROLE_WEIGHTS)


@pytest.fixture(scope="module")
def tokenizer():
    tok = load_tokenizer("qwen3")
    tok.pad_token = "<|endoftext|>"
    return tok


def by_hand(model, tokenizer, conversations) -> tuple[float, float]:
    """``(weighted, unweighted)`` loss of ``model`` on the conversations, in plain torch: the weights
    derived from the batch's provenance and the messages' weights, the cross-entropy of the logits at
    t - 1 against token t, summed with the weights and divided by the number of trained positions."""
    plain = labelmask.Collator(tokenizer, policy=Policy(roles=POLICY.roles), return_provenance=True)
    batch = plain([{"messages": m} for m in conversations])
    weights = torch.tensor(
        np.stack(
            [
                derived_weights(
                    batch["labels"][row].numpy(),
                    batch["message_index"][row].numpy(),
                    batch["role"][row].numpy(),
                    batch["part"][row].numpy(),
                    message_weights(messages),
                    PART_WEIGHTS,
                    ROLE_WEIGHTS,
                )  # fmt: skip
                for row, messages in enumerate(conversations)
            ]
        )
    )
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    losses = torch.nn.functional.cross_entropy(logits[:, :-1][keep].double(), targets[keep], reduction="none")
    weighted = (losses * weights[:, 1:][keep]).sum() / keep.sum()
    return weighted.item(), losses.mean().item()


def logged(trainer) -> list[float]:
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


class WeightedSFTTrainer(labelmask.WeightedLoss, trl.SFTTrainer):
    pass


def sft_config(tmp_path, **changes):
    config = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(WEIGHTED),
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        **THREE_STEPS,
    )
    return trl.SFTConfig(**{**config, **changes})


@pytest.mark.parametrize("accumulation", [1, 2])
def test_sft_trainer_reports_the_weighted_mean(tokenizer, tmp_path, accumulation):
    from datasets import Dataset

    model = tiny_model(tokenizer)
    expected, unweighted = by_hand(copy.deepcopy(model).eval(), tokenizer, WEIGHTED)
    assert expected != pytest.approx(unweighted, rel=1e-2)  # the weights change the loss: the check can fail
    args = sft_config(
        tmp_path,
        per_device_train_batch_size=len(WEIGHTED) // accumulation,
        gradient_accumulation_steps=accumulation,
    )
    collator = labelmask.Collator(tokenizer, policy=POLICY, return_loss_weights=True)
    train = Dataset.from_list([{"messages": m} for m in WEIGHTED])
    trainer = WeightedSFTTrainer(
        model=model, args=args, train_dataset=train, processing_class=tokenizer, data_collator=collator
    )
    losses = logged(trainer)
    assert len(losses) == 3
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_with_mask_dataset_rows_reports_the_weighted_mean(tokenizer, tmp_path, accumulation):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    class WeightedTrainer(labelmask.WeightedLoss, Trainer):
        pass

    raw = Dataset.from_list([{"messages": m} for m in WEIGHTED])
    train, _ = labelmask.mask_dataset(raw, tokenizer, policy=POLICY, keep_loss_weights=True)
    model = tiny_model(tokenizer)
    expected, _ = by_hand(copy.deepcopy(model).eval(), tokenizer, WEIGHTED)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(WEIGHTED) // accumulation,
        gradient_accumulation_steps=accumulation,
        remove_unused_columns=False,
        **{k: v for k, v in THREE_STEPS.items() if k != "activation_checkpointing"},
    )
    collator = labelmask.Collator(tokenizer, return_loss_weights=True)
    losses = logged(WeightedTrainer(model=model, args=args, train_dataset=train, data_collator=collator))
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert losses[-1] < losses[0]


def test_weighted_loss_with_every_weight_one_is_transformers_loss(tokenizer):
    model = tiny_model(tokenizer).eval()
    batch = labelmask.Collator(tokenizer)([{"messages": m} for m in WEIGHTED])
    ones = (batch["labels"] != IGNORE_INDEX).float()
    with torch.no_grad():
        out = model(**batch)
        assert labelmask.weighted_loss(out.logits, batch["labels"], ones).item() == pytest.approx(
            out.loss.item(), rel=1e-6
        )
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        given = model(**batch, num_items_in_batch=torch.tensor(3 * n)).loss
        mine = labelmask.weighted_loss(out.logits, batch["labels"], ones, num_items_in_batch=torch.tensor(3 * n))
        assert mine.item() == pytest.approx(given.item(), rel=1e-6)
        # A weight scales its token's share absolutely: all weights 2.0 double the loss.
        assert labelmask.weighted_loss(out.logits, batch["labels"], 2 * ones).item() == pytest.approx(
            2 * out.loss.item(), rel=1e-6
        )


def test_every_path_gives_the_same_weights(tokenizer):
    """mask_conversations, mask_dataset, the Collator (padded and packed) and truncation give the weights
    mask_conversation gives; mask_turns' examples follow the rule from their own provenance."""
    from datasets import Dataset

    singles = [labelmask.mask_conversation(m, tokenizer, policy=POLICY, return_tensors="np") for m in WEIGHTED]
    for single, messages in zip(singles, WEIGHTED):
        expected = derived_weights(
            single["labels"], single["message_index"], single["role"], single["part"], message_weights(messages),
            PART_WEIGHTS, ROLE_WEIGHTS,
        )  # fmt: skip
        np.testing.assert_allclose(single["loss_weights"], expected, rtol=1e-6)
    assert len(set(singles[0]["loss_weights"].tolist())) > 3  # tool calls, reasoning, eot, content: all differ
    many = labelmask.mask_conversations(WEIGHTED, tokenizer, policy=POLICY, return_tensors="np")
    assert all((a["loss_weights"] == b["loss_weights"]).all() for a, b in zip(many, singles))
    raw = Dataset.from_list([{"messages": m} for m in WEIGHTED])
    rows, _ = labelmask.mask_dataset(raw, tokenizer, policy=POLICY, keep_loss_weights=True)
    assert [np.float32(r).tolist() for r in rows["loss_weights"]] == [s["loss_weights"].tolist() for s in singles]
    for packing in (False, True):
        collator = labelmask.Collator(tokenizer, policy=POLICY, return_loss_weights=True, packing=packing)
        for batch in (collator([{"messages": m} for m in WEIGHTED]), collator(list(rows))):
            if packing:  # the first token of each sequence, never trained, weighs 0.0 here too
                assert (batch["loss_weights"][0].numpy() == np.concatenate([s["loss_weights"] for s in singles])).all()
            else:
                for row, single in enumerate(singles):
                    n = len(single["input_ids"])
                    assert (batch["loss_weights"][row, :n].numpy() == single["loss_weights"]).all()
                    assert (batch["loss_weights"][row, n:] == 0).all()
    first = singles[0]
    cut = labelmask.mask_conversation(WEIGHTED[0], tokenizer, policy=POLICY, return_tensors="np", max_length=30)
    assert (cut["loss_weights"] == first["loss_weights"][:30]).all()
    turns = labelmask.mask_turns(WEIGHTED[0], tokenizer, policy=POLICY, return_tensors="np")
    for example in turns:
        expected = derived_weights(
            example["labels"], example["message_index"], example["role"], example["part"],
            message_weights(WEIGHTED[0]), PART_WEIGHTS, ROLE_WEIGHTS,
        )  # fmt: skip
        np.testing.assert_allclose(example["loss_weights"], expected, rtol=1e-6)


def test_a_straddling_token_takes_its_replys_part_weight(tokenizer):
    """Qwen3 writes '<|im_start|>assistant\\n' + content; a reply starting with newlines merges with the
    header's newline into one token, trained under straddle="train" and weighed as content (its last
    character's part), never as header."""
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "\n\nHello"},
        {"role": "user", "content": "x"},
    ]
    out = labelmask.mask_conversation(messages, tokenizer, policy=Policy(part_weights={"content": 3.0}))
    assert out.report.n_straddle == 1
    first = int(np.flatnonzero(np.array(out["labels"]) != IGNORE_INDEX)[0])
    assert out.text[slice(*out.offsets[first])] == "\n\n\n"
    assert out["part"][first] == Part.CONTENT
    assert out["loss_weights"][first] == 3.0


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"part_weights": {"resoning": 0.5}}, "did you mean 'reasoning'"),
        ({"part_weights": {"header": 0.5}}, "a header is never trained"),
        ({"part_weights": {"image": 2}}, "image tokens are never trained"),
        ({"part_weights": {"content": -1}}, "must be a finite number >= 0"),
        ({"part_weights": {"content": math.nan}}, "must be a finite number >= 0"),
        ({"part_weights": {"content": math.inf}}, "must be a finite number >= 0"),
        ({"part_weights": {"content": 1e39}}, "at most float32's 3.4e38"),
        ({"part_weights": {"content": True}}, "must be a finite number >= 0"),
        ({"part_weights": {"content": "2"}}, "must be a finite number >= 0"),
        ({"part_weights": ["content"]}, "use a mapping of names to weights"),
        ({"role_weights": {"tol": 0.5}}, "did you mean 'tool'"),
        ({"role_weights": {"ipython": 0.5}}, "use one of system, user, assistant, tool"),
        ({"reasoning": False, "part_weights": {"reasoning": 0.5}}, "trains no reasoning"),
        ({"part_weights": {"empty_reasoning": 0.5}}, "empty_reasoning=True"),
    ],
)
def test_bad_weights_raise_option_error(option, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(")):
        Policy(**option)


def test_weights_by_enum_member_and_pairs_are_the_same_policy():
    by_name = Policy(part_weights={"reasoning": 0.5, "eot": 2}, role_weights={"tool": 0.5})
    by_member = Policy(part_weights={Part.EOT: 2.0, Part.REASONING: 0.5}, role_weights={Role.TOOL: 0.5})
    assert by_name == by_member and hash(by_name) == hash(by_member)
    assert dict(by_name.part_weights) == {"reasoning": 0.5, "eot": 2.0}
    assert Policy(**{f: getattr(by_name, f) for f in ("part_weights", "role_weights")}) == by_name


def test_a_product_over_float32_raises_naming_the_message(tokenizer):
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 1e20}]
    policy = Policy(part_weights={"content": 1e19})
    with pytest.raises(ConversationError, match="Message 1: its loss weight") as caught:
        labelmask.mask_conversation(messages, tokenizer, policy=policy)
    assert caught.value.message_index == 1


def test_a_batch_without_loss_weights_raises_feature_error(tokenizer, tmp_path):
    from datasets import Dataset

    train = Dataset.from_list([{"messages": m} for m in WEIGHTED])
    model = tiny_model(tokenizer)
    collator = labelmask.Collator(tokenizer, policy=POLICY, return_loss_weights=True)
    trainer = WeightedSFTTrainer(
        model=model, args=sft_config(tmp_path), train_dataset=train, processing_class=tokenizer, data_collator=collator
    )
    batch = labelmask.Collator(tokenizer)([{"messages": m} for m in WEIGHTED])
    with pytest.raises(FeatureError, match=r"Collator\(tokenizer, return_loss_weights=True"):
        trainer.compute_loss(model, batch)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset_kwargs": {}}, "skip_prepare_dataset"),
        ({"max_length": 1024}, r"max_length=1024\) would be ignored"),
        # (TRL itself refuses a custom collator with padding_free, or with packing="bfd", which implies it.)
        ({"packing": True, "packing_strategy": "wrapped"}, "packing=True"),
        ({"remove_unused_columns": True}, "drops the loss_weights column"),
        ({"loss_type": "dft"}, "loss_type='dft'"),
    ],
)
def test_sft_configs_that_would_lose_or_ignore_the_weights_are_refused(tokenizer, tmp_path, changes, message):
    from datasets import Dataset

    rows, _ = labelmask.mask_dataset(
        Dataset.from_list([{"messages": m} for m in WEIGHTED]), tokenizer, policy=POLICY, keep_loss_weights=True
    )
    collator = labelmask.Collator(tokenizer, return_loss_weights=True)
    with pytest.raises(OptionError, match=message):
        WeightedSFTTrainer(
            model=tiny_model(tokenizer), args=sft_config(tmp_path, **changes), train_dataset=rows,
            processing_class=tokenizer, data_collator=collator,
        )  # fmt: skip


def test_a_collator_without_loss_weights_is_refused(tokenizer, tmp_path):
    from datasets import Dataset

    train = Dataset.from_list([{"messages": m} for m in WEIGHTED])
    with pytest.raises(OptionError, match="does not return loss_weights"):
        WeightedSFTTrainer(
            model=tiny_model(tokenizer), args=sft_config(tmp_path), train_dataset=train,
            processing_class=tokenizer, data_collator=labelmask.Collator(tokenizer),
        )  # fmt: skip


def test_misaligned_weights_are_refused_by_the_collator_and_the_loss(tokenizer):
    row = labelmask.mask_conversation(WEIGHTED[1], tokenizer, policy=POLICY, return_tensors="np")
    feature = {k: row[k] for k in ("input_ids", "labels", "loss_weights")}
    collator = labelmask.Collator(tokenizer, return_loss_weights=True)
    with pytest.raises(FeatureError, match="loss_weights and input_ids differ in length"):
        collator([{**feature, "loss_weights": feature["loss_weights"][:-3]}])
    with pytest.raises(FeatureError, match="0.0 wherever the label is -100"):
        collator([{**feature, "loss_weights": np.roll(feature["loss_weights"], 2)}])
    batch = collator([feature])
    logits = torch.zeros((*batch["labels"].shape, 8))
    labels = torch.where(batch["labels"] == IGNORE_INDEX, IGNORE_INDEX, 1)
    with pytest.raises(FeatureError, match="0.0 wherever the label is -100"):
        labelmask.weighted_loss(logits, labels, torch.roll(batch["loss_weights"], 2, dims=1))
    with pytest.raises(FeatureError, match="differ in shape"):
        labelmask.weighted_loss(logits, labels, batch["loss_weights"][:, 1:])


def test_a_packed_batch_gives_the_padded_batchs_weighted_loss(tokenizer):
    """Collator(packing=True): each sequence's first label is -100 and weighs 0.0, so no loss crosses a
    boundary; the model run on the packed row (without a cache, as the Trainer runs it: transformers
    then reads the sequences from position_ids and keeps their attention apart) gives the padded loss."""
    model = tiny_model(tokenizer).eval()
    expected, _ = by_hand(model, tokenizer, WEIGHTED)
    packed = labelmask.Collator(tokenizer, policy=POLICY, return_loss_weights=True, packing=True)
    batch = packed([{"messages": m} for m in WEIGHTED])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        got = labelmask.weighted_loss(logits, batch["labels"], batch["loss_weights"])
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_evaluate_reports_the_weighted_mean_too(tokenizer, tmp_path):
    """Trainer.evaluate runs the mixin's compute_loss through prediction_step (no num_items_in_batch
    there): eval_loss is the same weighted mean over the batch's trained positions."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    class WeightedTrainer(labelmask.WeightedLoss, Trainer):
        pass

    raw = Dataset.from_list([{"messages": m} for m in WEIGHTED])
    rows, _ = labelmask.mask_dataset(raw, tokenizer, policy=POLICY, keep_loss_weights=True)
    model = tiny_model(tokenizer)
    expected, unweighted = by_hand(copy.deepcopy(model).eval(), tokenizer, WEIGHTED)
    assert expected != pytest.approx(unweighted, rel=1e-3)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=len(WEIGHTED),
        remove_unused_columns=False,
        **{k: v for k, v in THREE_STEPS.items() if k != "activation_checkpointing"},
    )
    collator = labelmask.Collator(tokenizer, return_loss_weights=True)
    metrics = WeightedTrainer(model=model, args=args, eval_dataset=rows, data_collator=collator).evaluate()
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-4)
