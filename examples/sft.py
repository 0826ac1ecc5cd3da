"""Supervised fine-tuning with TRL's SFTTrainer and labelmask, on the bundled conversation.

Run from the repository root, with a tokenizer folder (default: qwen3-tokenizer, which
`python -m tests.fixtures qwen3 qwen3-tokenizer` writes):  python examples/sft.py [TOKENIZER]
A tiny randomly initialised model stands in for yours (nothing is downloaded); swap in
AutoModelForCausalLM.from_pretrained.

The path: mask the dataset once with mask_dataset, then give its rows to SFTTrainer as they are.
TRL sees input_ids and labels, keeps labelmask's labels, and applies its own max_length
(truncation_mode), packing and padding-free settings; no skip_prepare_dataset, no custom collator.
"""

# START sft
import json
import sys
import tempfile

from datasets import Dataset
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

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

with open("examples/conversation.json", encoding="utf-8") as f:
    conversation = json.load(f)
for message in conversation:  # Arrow would type dict arguments as structs; JSON strings keep them exact
    for call in message.get("tool_calls", []):
        call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
raw = Dataset.from_list([{"messages": conversation, "tools": json.dumps(tools)}] * 8)

# Mask once (num_proc=... for big datasets); rows that cannot be masked are dropped and counted.
train, stats = labelmask.mask_dataset(raw, tokenizer, on_error="drop")
print(stats)

args = SFTConfig(
    max_length=512,  # TRL cuts labelmask's rows (input_ids and labels alike) to this
    packing=True,  # and packs them, padding-free
    output_dir=tempfile.mkdtemp(),
    max_steps=3,
    per_device_train_batch_size=1,  # one packed row of up to 512 tokens a step
    logging_steps=1,
    learning_rate=1e-3,
    report_to="none",
    use_cpu=True,
    bf16=False,
    activation_checkpointing=False,
    save_strategy="no",
)
trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
trainer.train()
print("losses:", [round(e["loss"], 3) for e in trainer.state.log_history if "loss" in e])
# END sft
