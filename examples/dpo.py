"""Preference training with TRL's DPOTrainer and labelmask, on two small pairs.

Run from the repository root, with a tokenizer folder (default: qwen3-tokenizer, which
`python -m tests.fixtures qwen3 qwen3-tokenizer` writes):  python examples/dpo.py [TOKENIZER]
A tiny randomly initialised model stands in for yours (nothing is downloaded); swap in
AutoModelForCausalLM.from_pretrained.

The path: mask the pairs once with mask_preference_dataset (ids of the stock template, each
completion labelled on its replies only), then give the rows to DPOTrainer with
PreferenceCollator, which turns the labels into TRL's completion_mask.
"""

# START dpo
import copy
import sys
import tempfile

from datasets import Dataset
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl import DPOConfig, DPOTrainer

import labelmask

# A tokenizer folder, or a Hub id such as "Qwen/Qwen3-8B".
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else "qwen3-tokenizer")
tokenizer.pad_token = "<|endoftext|>"
config = LlamaConfig(
    vocab_size=len(tokenizer),
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    tie_word_embeddings=True,
)
model = LlamaForCausalLM(config)  # or AutoModelForCausalLM.from_pretrained(...)
reference = copy.deepcopy(model)  # DPOTrainer makes this copy itself for a model loaded by name

pairs = Dataset.from_list(
    [
        {
            "prompt": [{"role": "user", "content": "What is 2 + 2?"}],
            "chosen": [{"role": "assistant", "content": "4", "reasoning_content": "Two and two make four."}],
            "rejected": [{"role": "assistant", "content": "5"}],
        },
        {
            "prompt": [{"role": "user", "content": "Capital of France?"}],
            "chosen": [{"role": "assistant", "content": "Paris."}],
            "rejected": [{"role": "assistant", "content": "Lyon, I believe."}],
        },
    ]
)
train, stats = labelmask.mask_preference_dataset(pairs, tokenizer)
print(stats)

args = DPOConfig(
    output_dir=tempfile.mkdtemp(),
    remove_unused_columns=False,  # PreferenceCollator reads labelmask's columns
    max_length=None,  # the collator cuts (max_length=, truncation_mode=)
    max_steps=3,
    per_device_train_batch_size=2,
    logging_steps=1,
    learning_rate=1e-3,
    report_to="none",
    use_cpu=True,
    bf16=False,
    activation_checkpointing=False,
    save_strategy="no",
)
trainer = DPOTrainer(
    model=model,
    ref_model=reference,
    args=args,
    train_dataset=train,
    processing_class=tokenizer,
    data_collator=labelmask.PreferenceCollator(tokenizer, max_length=1024),
)
trainer.train()
print("losses:", [round(e["loss"], 3) for e in trainer.state.log_history if "loss" in e])
# END dpo
