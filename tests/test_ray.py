"""The Ray Data path of docs/scaling.md, on a local Ray instance: the documented code, run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import ray

import labelmask
from examples.ray_data import mask_ray_dataset
from tests.fixtures import load_tokenizer
from tests.strategies import TOOLS
from tests.test_docs import snippet

ROOT = Path(__file__).resolve().parent.parent

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "Sunny"},
    {"role": "assistant", "content": "Sunny, 21°C."},
]


def test_the_docs_show_the_example_code():
    docs = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    assert snippet(ROOT / "examples" / "ray_data.py", "ray") in docs


# Ray's DataContext sets its own deprecated fields when it is created.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_map_batches_on_a_local_ray_instance():
    tokenizer = load_tokenizer("qwen3")
    conversations = [HI, TOOL_CHAT, [{"role": "user", "content": "no reply"}]] * 10  # every third: nothing to train
    tools = [None, TOOLS, None] * 10
    rows = [{"messages": json.dumps(c), "tools": json.dumps(t)} for c, t in zip(conversations, tools)]
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        masked = mask_ray_dataset(ray.data.from_items(rows), tokenizer, batch_size=8, concurrency=1).take_all()
    finally:
        ray.shutdown()
    expected = [
        labelmask.mask_conversation(c, tokenizer, tools=t)
        for c, t in zip(conversations, tools)
        if c[-1]["role"] == "assistant"
    ]
    assert len(masked) == len(expected) == 20
    for row, single in zip(masked, expected):
        assert np.asarray(row["input_ids"]).tolist() == single["input_ids"]
        assert np.asarray(row["labels"]).tolist() == single["labels"]
        assert row["n_trained"] == single.report.n_trained > 0
