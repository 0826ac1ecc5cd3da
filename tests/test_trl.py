"""End to end with TRL: SFTTrainer trains a tiny model with labelmask's collator, and the
loss it reports is the mean cross-entropy over exactly the trained positions."""

from __future__ import annotations

import copy

import pytest
import torch
import trl

import labelmask
from tests.fixtures import load_tokenizer

CONVERSATIONS = [
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    [
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 3?"},
        {"role": "assistant", "content": "6, naturally."},
    ],
    [{"role": "user", "content": "Say hi in Japanese."}, {"role": "assistant", "content": "こんにちは"}],
    [{"role": "user", "content": "A long question " * 8}, {"role": "assistant", "content": "A short answer."}],
]


def tiny_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.5,  # far from uniform predictions, so positions differ in loss
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


# Three logged steps on the CPU, in float32, as every trainer here runs.
THREE_STEPS = dict(
    max_steps=3,
    logging_steps=1,
    learning_rate=1e-3,
    report_to="none",
    use_cpu=True,
    save_strategy="no",
    seed=0,
    activation_checkpointing=False,  # TRL sets the deprecated gradient_checkpointing alias
    bf16=False,  # TRL defaults to bf16 where supported; the references here are float32
)


def train_and_log(tokenizer, model, collator, tmp_path):
    from datasets import Dataset

    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(CONVERSATIONS),  # one batch: the whole dataset
        remove_unused_columns=False,  # the collator reads the raw "messages"
        dataset_kwargs={"skip_prepare_dataset": True},
        **THREE_STEPS,
    )
    dataset = Dataset.from_list([{"messages": m} for m in CONVERSATIONS])
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator
    )
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def mean_cross_entropy(model, batch):
    """By hand: logits at t predict token t + 1; average over the positions whose target is trained."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    keep = targets != labelmask.IGNORE_INDEX
    losses = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="none")
    return losses.mean().item(), int(keep.sum())


@pytest.fixture(scope="module")
def tokenizer():
    tok = load_tokenizer("qwen3")
    tok.pad_token = "<|endoftext|>"
    return tok


def test_sft_trainer_loss_is_the_mean_cross_entropy_over_trained_positions(tokenizer, tmp_path):
    collator = labelmask.Collator(tokenizer)
    model = tiny_model(tokenizer)
    initial = copy.deepcopy(model).eval()
    expected, n_trained = mean_cross_entropy(initial, collator([{"messages": m} for m in CONVERSATIONS]))
    assert n_trained > 0
    losses = train_and_log(tokenizer, model, collator, tmp_path)
    assert len(losses) == 3
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert losses[-1] < losses[0]  # it trains


def test_training_the_prompt_too_changes_the_loss_so_the_check_can_fail(tokenizer, tmp_path):
    """A collator that also trains system and user turns: the same hand-computed
    assistant-only loss no longer matches what the trainer reports."""
    assistant_only = labelmask.Collator(tokenizer)
    everything = labelmask.Collator(tokenizer, policy=labelmask.Policy(roles={"system", "user", "assistant"}))
    model = tiny_model(tokenizer)
    initial = copy.deepcopy(model).eval()
    expected, _ = mean_cross_entropy(initial, assistant_only([{"messages": m} for m in CONVERSATIONS]))
    losses = train_and_log(tokenizer, model, everything, tmp_path)
    assert losses[0] != pytest.approx(expected, rel=1e-2)
    # and it is the mean over the positions that collator trains
    assert losses[0] == pytest.approx(
        mean_cross_entropy(initial, everything([{"messages": m} for m in CONVERSATIONS]))[0], rel=1e-4
    )


# The README's path (issue 20, item 1): mask_dataset's output given to SFTTrainer as it is, with TRL's own
# max_length, packing and padding-free settings; no skip_prepare_dataset, no custom collator.


def readme_trainer(tokenizer, model, train, tmp_path, **config):
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=64,  # one batch: every row TRL built
        **THREE_STEPS,
        **config,
    )
    return trl.SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)


def sequences(row):
    """The sequences a packed row holds (TRL's seq_lengths), or the row itself."""
    lengths = row.get("seq_lengths") or [len(row["input_ids"])]
    starts = [sum(lengths[:k]) for k in range(len(lengths))]
    return [(row["input_ids"][a : a + n], row["labels"][a : a + n]) for a, n in zip(starts, lengths, strict=True)]


def loss_over_sequences(model, seqs):
    """By hand, each sequence on its own (packed rows must not attend across sequences): the mean
    cross-entropy over every position whose next token is trained, over all sequences."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in seqs:
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            targets = torch.tensor(labels[1:])
            keep = targets != labelmask.IGNORE_INDEX
            if keep.any():
                losses = torch.nn.functional.cross_entropy(logits[:-1][keep].float(), targets[keep], reduction="sum")
                total += losses.item()
                count += int(keep.sum())
    return total / count, count


@pytest.mark.parametrize("packing", [True, False], ids=["packed, padding-free", "truncated, padded"])
def test_the_readme_path_trains_with_trls_own_max_length_and_packing(tokenizer, tmp_path, packing):
    from datasets import Dataset

    raw = Dataset.from_list([{"messages": m} for m in CONVERSATIONS])
    train, stats = labelmask.mask_dataset(raw, tokenizer)
    masks = [(row["input_ids"], row["labels"]) for row in train]
    longest = max(len(ids) for ids, _ in masks)
    max_length = (sorted(len(ids) for ids, _ in masks)[-2] + longest) // 2  # cuts the longest row only
    assert sorted(len(ids) for ids, _ in masks)[-2] < max_length < longest

    model = tiny_model(tokenizer)
    initial = copy.deepcopy(model).eval()
    trainer = readme_trainer(tokenizer, model, train, tmp_path, max_length=max_length, packing=packing)

    # The rows TRL built: each sequence is a labelmask row (ids and labels), cut to max_length at its end.
    built = [seq for row in trainer.train_dataset for seq in sequences(row)]
    assert sorted(built) == sorted((ids[:max_length], labels[:max_length]) for ids, labels in masks)
    assert all(len(row["input_ids"]) <= max_length for row in trainer.train_dataset)
    assert trainer.padding_free == packing

    expected, n_trained = loss_over_sequences(initial, built)
    assert n_trained > 0
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert losses[-1] < losses[0]


def test_a_plain_trainer_takes_mask_dataset_output_with_the_collator(tokenizer, tmp_path):
    """transformers.Trainer: mask_dataset's rows (cut by labelmask's own max_length) and the Collator;
    the loss is the hand-computed mean over the trained positions."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    raw = Dataset.from_list([{"messages": m} for m in CONVERSATIONS])
    train, _ = labelmask.mask_dataset(raw, tokenizer, max_length=48, truncation="right")
    assert max(len(ids) for ids in train["input_ids"]) <= 48
    model = tiny_model(tokenizer)
    initial = copy.deepcopy(model).eval()
    expected, _ = loss_over_sequences(initial, [(row["input_ids"], row["labels"]) for row in train])
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=len(CONVERSATIONS), **THREE_STEPS)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=labelmask.Collator(tokenizer))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[0] == pytest.approx(expected, rel=1e-4)
