"""Mask the bundled conversation with the vendored Qwen3 tokenizer and show the labels.

Run from the repository root:  python examples/quickstart.py
Trained tokens are printed in [brackets]; everything else has label -100.
"""

import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))
# START quickstart
import labelmask
from tests.fixtures import load_tokenizer  # the vendored tokenizer files

tokenizer = load_tokenizer("qwen3")  # or AutoTokenizer.from_pretrained("Qwen/Qwen3-8B")
messages = json.loads((root / "examples" / "conversation.json").read_text())
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]

out = labelmask.mask_conversation(messages, tokenizer, tools=tools)
for (start, end), label in zip(out.offsets.tolist(), out["labels"]):
    piece = out.text[start:end]
    print(f"[{piece}]" if label != labelmask.IGNORE_INDEX else piece, end="")
print("\n", out.report)
# END quickstart
