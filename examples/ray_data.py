"""Mask a Ray Data dataset of conversations with labelmask (docs/scaling.md).

Conversations travel as JSON strings: Arrow, under Ray Data as under ``datasets``,
gives every row of a struct column the keys of all rows (missing ones as None), which
would change what the template renders.

Run with a tokenizer folder (default: qwen3-tokenizer, which
``python -m tests.fixtures qwen3 qwen3-tokenizer`` writes); starts a local Ray instance::

    python examples/ray_data.py [TOKENIZER]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# START ray
import labelmask


class MaskBatch:
    """A ``map_batches`` callable: each Ray worker builds it once and masks batch after batch."""

    def __init__(self, tokenizer, policy=None):
        self.tokenizer = tokenizer  # or a path, loaded here with AutoTokenizer.from_pretrained
        self.policy = policy

    def __call__(self, batch):
        conversations = [json.loads(m) for m in batch["messages"]]
        tools = [json.loads(t) if t else None for t in batch["tools"]] if "tools" in batch else None
        results = labelmask.mask_conversations(
            conversations, self.tokenizer, tools=tools, policy=self.policy, on_error="return"
        )
        kept = [r for r in results if not isinstance(r, labelmask.LabelmaskError)]
        return {
            "input_ids": [r["input_ids"] for r in kept],
            "labels": [r["labels"] for r in kept],
            "n_trained": [r.report.n_trained for r in kept],
        }


def mask_ray_dataset(dataset, tokenizer, *, batch_size=256, concurrency=2):
    """``dataset``: a ``ray.data.Dataset`` with a ``messages`` column of JSON strings (and optional ``tools``)."""
    return dataset.map_batches(
        MaskBatch, fn_constructor_args=(tokenizer,), batch_size=batch_size, concurrency=concurrency
    )


# END ray


def main() -> None:
    import ray
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else "qwen3-tokenizer")

    conversation = json.loads((Path(__file__).parent / "conversation.json").read_text(encoding="utf-8"))
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    rows = [{"messages": json.dumps(c)} for c in [conversation, short] * 4]
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        masked = mask_ray_dataset(ray.data.from_items(rows), tokenizer, batch_size=4, concurrency=1)
        for row in masked.take_all():
            print(len(row["input_ids"]), "tokens,", row["n_trained"], "trained")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
