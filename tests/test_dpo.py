"""End to end with TRL's DPOTrainer: a tiny model trains on mask_preference_dataset rows through
PreferenceCollator, and the first logged loss is the DPO loss computed by hand from the model's
log-probabilities over exactly the labelled positions (issue 21, acceptance 2)."""

from __future__ import annotations

import copy

import pytest
import torch
import trl
from datasets import Dataset

import labelmask
from tests.test_trl import THREE_STEPS, tiny_model

PAIRS = [
    {
        "prompt": [{"role": "user", "content": "Capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon, I think."}],
    },
    {
        "prompt": [{"role": "user", "content": "2 + 2?"}],
        "chosen": [{"role": "assistant", "content": "4", "reasoning_content": "Two and two."}],
        "rejected": [{"role": "assistant", "content": "5"}],
    },
    {
        "prompt": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "Greetings, dear friend; how do you do today?"}],
    },
    {
        "prompt": [{"role": "user", "content": "Say hi in Japanese."}],
        "chosen": [{"role": "assistant", "content": "こんにちは"}],
        "rejected": [{"role": "assistant", "content": "Bonjour"}],
    },
]
BETA = 0.1

# TRL 1.16's DPOTrainer calls transformers' deprecated is_gradient_checkpointing for its reference pass.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def tokenizer():
    from tests.fixtures import load_tokenizer

    tok = load_tokenizer("qwen3")
    tok.pad_token = "<|endoftext|>"
    return tok


def models(tokenizer):
    """The policy, and a reference that differs from it (with the policy as its own reference the
    first loss would be log 2 whatever the positions)."""
    policy = tiny_model(tokenizer)
    reference = tiny_model(tokenizer)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return policy, reference


def train(tokenizer, dataset, collator, tmp_path, config=trl.DPOConfig, trainer_class=trl.DPOTrainer, **extra):
    """Three logged steps of a preference trainer on one batch of every row; the logs, the policy as it
    started and the reference."""
    policy, reference = models(tokenizer)
    start = copy.deepcopy(policy)
    args = config(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(dataset),  # one batch: every row
        remove_unused_columns=False,  # the collator reads labelmask's columns
        max_length=None,
        **extra,
        **THREE_STEPS,
    )
    trainer = trainer_class(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=collator,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return logs, start, reference


def sequence_logp(model, prompt_ids, ids, labels):
    """Sum of log p(token | before) over the positions whose label is not -100, one sequence alone."""
    full = torch.tensor([list(prompt_ids) + list(ids)])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=full).logits[0].float(), dim=-1)
    total = torch.zeros((), dtype=torch.float64)
    for k, label in enumerate(labels):
        if label != labelmask.IGNORE_INDEX:
            t = len(prompt_ids) + k
            total += logps[t - 1, full[0, t]].double()
    return total


def dpo_loss(rows, policy, reference):
    losses, chosen = [], []
    for row in rows:
        logp = {}
        for side in ("chosen", "rejected"):
            args = (row["prompt_input_ids"], row[f"{side}_input_ids"], row[f"{side}_labels"])
            logp[side] = (sequence_logp(policy, *args), sequence_logp(reference, *args))
        margin = (logp["chosen"][0] - logp["chosen"][1]) - (logp["rejected"][0] - logp["rejected"][1])
        losses.append(-torch.nn.functional.logsigmoid(BETA * margin))
        chosen.append(logp["chosen"][0])
    return torch.stack(losses).mean().item(), torch.stack(chosen).mean().item()


def test_dpo_trainer_loss_is_the_dpo_loss_over_exactly_the_labelled_positions(tokenizer, tmp_path):
    dataset, stats = labelmask.mask_preference_dataset(Dataset.from_list(PAIRS), tokenizer)
    assert stats.n_kept == len(PAIRS) and stats.n_prompt_mismatch == 0
    logs, start, reference = train(tokenizer, dataset, labelmask.PreferenceCollator(tokenizer), tmp_path, beta=BETA)
    loss, chosen_logps = dpo_loss(list(dataset), start, reference)
    assert logs[0]["loss"] == pytest.approx(loss, rel=1e-4)
    assert logs[0]["logps/chosen"] == pytest.approx(chosen_logps, rel=1e-4)
    assert len(logs) == 3 and logs[-1]["loss"] < logs[0]["loss"]


def test_trls_own_collator_scores_other_positions_so_the_check_can_fail(tokenizer, tmp_path):
    """TRL's collator scores every completion token (the newline after <|im_end|> too): its first loss
    is not the hand computation over labelmask's positions."""
    dataset, _ = labelmask.mask_preference_dataset(Dataset.from_list(PAIRS), tokenizer)
    trl_collator = trl.trainer.dpo_trainer.DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)
    logs, start, reference = train(tokenizer, dataset, trl_collator, tmp_path, beta=BETA)
    loss, _ = dpo_loss(list(dataset), start, reference)
    assert logs[0]["loss"] != pytest.approx(loss, rel=1e-3)


def test_kto_trainer_scores_the_labelled_positions_of_unpaired_completions(tokenizer, tmp_path):
    rows = [
        {"prompt": "Capital of France?", "completion": "Paris.", "label": True},
        {"prompt": "Capital of France?", "completion": "Lyon, I think.", "label": False},
        {"prompt": "2 + 2?", "completion": "4", "label": True},
        {"prompt": "2 + 2?", "completion": "5", "label": False},
    ]
    dataset, _ = labelmask.mask_preference_dataset(Dataset.from_list(rows), tokenizer)
    collator = labelmask.PreferenceCollator(tokenizer)
    logs, start, _ = train(tokenizer, dataset, collator, tmp_path, config=trl.KTOConfig, trainer_class=trl.KTOTrainer)
    logps = {
        label: torch.stack(
            [
                sequence_logp(start, row["prompt_input_ids"], row["completion_input_ids"], row["completion_labels"])
                for row in dataset
                if row["label"] is label
            ]
        ).mean()
        for label in (True, False)
    }
    assert logs[0]["logps/chosen"] == pytest.approx(logps[True].item(), rel=1e-4)
    assert logs[0]["logps/rejected"] == pytest.approx(logps[False].item(), rel=1e-4)
    assert len(logs) == 3 and logs[-1]["loss"] < logs[0]["loss"]
