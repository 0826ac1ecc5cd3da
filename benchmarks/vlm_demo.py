"""LLaVA-1.5 on LLaMA-Factory's multimodal demo conversations: token parity and trained text.

The demo (``mllm_demo.json``, Apache-2.0, not vendored: pass its path) writes images as
``<image>`` markers inside string content, with the image files listed per sample. Each
marker becomes an image part where it stands (LLaVA's template writes a message's images
before its text, whatever the order). For every sample this prints whether labelmask's
``input_ids`` and ``pixel_values`` equal the processor's own
(``processor.apply_chat_template(..., tokenize=True)``) and the text of the trained tokens,
without and with ``add_eos=True``.

Run from the repository root::

    python benchmarks/vlm_demo.py ../shared/data/llamafactory/mllm_demo.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import labelmask  # noqa: E402
from tests.fixtures import load_processor  # noqa: E402


def to_parts(text: str, marker: str = "<image>") -> list[dict]:
    """``"<image>Who are they?"`` as ``[{"type": "image"}, {"type": "text", "text": "Who are they?"}]``."""
    parts: list[dict] = []
    for k, piece in enumerate(text.split(marker)):
        if k:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="path to mllm_demo.json")
    args = parser.parse_args()
    processor = load_processor("llava-1.5")
    tokenizer = processor.tokenizer
    samples = json.loads(args.demo.read_text(encoding="utf-8"))
    warnings.simplefilter("ignore", labelmask.NoEndOfTurnWarning)
    columns = ["sample", "turns", "images", "tokens", "ids = processor", "pixel_values = processor"]
    print("| " + " | ".join([*columns, "trained text", "trained text, add_eos=True"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for n, sample in enumerate(samples):
        images = [Image.open(args.demo.parent / path).convert("RGB") for path in sample["images"]]
        messages = [{"role": m["role"], "content": to_parts(m["content"])} for m in sample["messages"]]
        out = labelmask.mask_conversation(messages, processor, images=images, return_tensors="np")
        with_eos = labelmask.mask_conversation(messages, processor, images=images, add_eos=True, return_tensors="np")
        it = iter(images)
        inline = [
            {**m, "content": [{**p, "image": next(it)} if p["type"] == "image" else p for p in m["content"]]}
            for m in messages
        ]
        ref = processor.apply_chat_template(inline, tokenize=True, return_dict=True, return_tensors="np")
        same_ids = out["input_ids"].tolist() == ref["input_ids"][0].tolist()
        same_pixels = np.array_equal(out["pixel_values"], ref["pixel_values"])
        image_trained = bool(((out["labels"] != -100) & (out["input_ids"] == processor.image_token_id)).any())
        assert not image_trained
        trained = tokenizer.decode(out["input_ids"][out["labels"] != -100])
        trained_eos = tokenizer.decode(with_eos["input_ids"][with_eos["labels"] != -100])
        row = [
            n,
            len(messages),
            len(images),
            out.report.n_tokens,
            same_ids,
            same_pixels,
            repr(trained),
            repr(trained_eos),
        ]
        print("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")


if __name__ == "__main__":
    main()
