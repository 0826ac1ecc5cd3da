"""Supervised fine-tuning with TRL's SFTTrainer and labelmask, on the bundled conversation.

Run from the repository root:  python examples/sft.py
A tiny randomly initialised model and the vendored Qwen3 tokenizer stand in for yours
(nothing is downloaded); swap in AutoModelForCausalLM / AutoTokenizer.from_pretrained.
"""

import json
import sys
import tempfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))
# START sft
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

import labelmask
from tests.fixtures import load_tokenizer  # the vendored tokenizer files

tokenizer = load_tokenizer("qwen3")  # or AutoTokenizer.from_pretrained("Qwen/Qwen3-8B")
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

conversation = json.loads((root / "examples" / "conversation.json").read_text())
for message in conversation:  # Arrow would type dict arguments as structs; JSON strings keep them exact
    for call in message.get("tool_calls", []):
        call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
raw = Dataset.from_list([{"messages": conversation, "tools": json.dumps(tools)}] * 8)

# Mask once (num_proc=... for big datasets); rows that cannot be masked are dropped and counted.
train, stats = labelmask.mask_dataset(raw, tokenizer, on_error="drop", max_length=1024, truncation="turns")
print(stats)

args = SFTConfig(
    output_dir=tempfile.mkdtemp(),
    max_steps=3,
    per_device_train_batch_size=2,
    logging_steps=1,
    learning_rate=1e-3,
    report_to="none",
    use_cpu=True,
    bf16=False,
    activation_checkpointing=False,
    save_strategy="no",
    dataset_kwargs={"skip_prepare_dataset": True},  # labelmask did the preparation
)
trainer = SFTTrainer(
    model=model, args=args, train_dataset=train, processing_class=tokenizer, data_collator=labelmask.Collator(tokenizer)
)
trainer.train()
print("losses:", [round(e["loss"], 3) for e in trainer.state.log_history if "loss" in e])
# END sft
