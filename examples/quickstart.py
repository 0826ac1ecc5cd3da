"""Mask the bundled conversation and show the labels.

Run from the repository root, with a tokenizer folder (save_pretrained output or a model snapshot;
`python -m tests.fixtures qwen3 qwen3-tokenizer` writes the vendored Qwen3 one) or a Hub id:

    python examples/quickstart.py [TOKENIZER]        # default: qwen3-tokenizer

Trained tokens are printed in [brackets]; everything else has label -100.
"""

# START quickstart
import json
import sys

from transformers import AutoTokenizer

import labelmask

# A tokenizer folder, or a Hub id such as "Qwen/Qwen3-8B".
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else "qwen3-tokenizer")
with open("examples/conversation.json", encoding="utf-8") as f:
    messages = json.load(f)
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]

out = labelmask.mask_conversation(messages, tokenizer, tools=tools)
for (start, end), label in zip(out.offsets.tolist(), out["labels"]):
    piece = out.text[start:end]
    print(f"[{piece}]" if label != labelmask.IGNORE_INDEX else piece, end="")
print("\n", out.report)
# END quickstart
