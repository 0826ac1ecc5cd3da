"""Mask a two-turn LLaVA-1.5 conversation with one image and print what is trained.

Run with a processor folder (default: llava-processor, which
`python -m tests.fixtures llava-1.5 llava-processor --processor` writes) or a Hub id:
    python examples/llava.py [PROCESSOR]
LLaVA-1.5's chat template writes no end-of-turn token, so labelmask warns once;
``add_eos=True`` writes the tokenizer's ``</s>`` after each reply and trains it.
"""

# START llava
import sys

from PIL import Image
from transformers import AutoProcessor

import labelmask

# A processor folder, or a Hub id such as "llava-hf/llava-1.5-7b-hf".
processor = AutoProcessor.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else "llava-processor")
image = Image.new("RGB", (640, 480), (230, 120, 30))
messages = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is this picture?"}]},
    {"role": "assistant", "content": "Orange."},
    {"role": "user", "content": "Are you sure?"},
    {"role": "assistant", "content": "Yes, it is plain orange."},
]
for add_eos in (False, True):
    out = labelmask.mask_conversation(messages, processor, images=[image], add_eos=add_eos, return_tensors="np")
    trained = out["input_ids"][out["labels"] != labelmask.IGNORE_INDEX]
    n_image = int((out["part"] == labelmask.Part.IMAGE).sum())
    print(f"add_eos={add_eos}: {out.report.n_tokens} tokens, {n_image} of them the image's, none trained")
    print("  trained:", repr(processor.tokenizer.decode(trained)))
print("pixel_values:", out["pixel_values"].shape)
# END llava
