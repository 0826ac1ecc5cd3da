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


def train_and_log(tokenizer, model, collator, tmp_path):
    from datasets import Dataset

    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(CONVERSATIONS),  # one batch: the whole dataset
        max_steps=3,
        logging_steps=1,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
        activation_checkpointing=False,  # TRL sets the deprecated gradient_checkpointing alias
        bf16=False,  # TRL defaults to bf16 where supported; the reference below is float32
        remove_unused_columns=False,  # the collator reads the raw "messages"
        dataset_kwargs={"skip_prepare_dataset": True},
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
