"""mask_turns: each exchange trained as the template renders it when it is the last."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import labelmask
from labelmask.testing.strategies import conversations

KEEP = labelmask.Policy(on_empty="keep")


@settings(max_examples=100)
@given(drawn=conversations(tools=True, tool_role=True, reasoning=True, max_turns=8))
def test_each_example_is_its_prefix_trained_only_on_its_exchange(tokenizers, drawn):
    tokenizer = tokenizers["qwen3"]
    messages, tools = drawn
    examples = labelmask.mask_turns(messages, tokenizer, tools=tools, policy=KEEP, return_tensors="np")
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    exchanges = [
        (start, max(i for i in range(start, stop) if messages[i]["role"] == "assistant"))
        for start, stop in zip(users, users[1:] + [len(messages)])
        if any(messages[i]["role"] == "assistant" for i in range(start, stop))
    ]
    assert len(examples) == len(exchanges)
    covered = set()
    for out, (start, last) in zip(examples, exchanges):
        prefix = labelmask.mask_conversation(
            messages[: last + 1], tokenizer, tools=tools, policy=KEEP, return_tensors="np"
        )
        assert out["input_ids"].tolist() == prefix["input_ids"].tolist()
        mine = prefix["message_index"] > start
        assert out["labels"].tolist() == np.where(mine, prefix["labels"], labelmask.IGNORE_INDEX).tolist()
        assert out.report.n_trained == int((out["labels"] != labelmask.IGNORE_INDEX).sum())
        assert (out["loss_weights"][out["labels"] == labelmask.IGNORE_INDEX] == 0).all()
        covered |= set(out["message_index"][out["labels"] != labelmask.IGNORE_INDEX].tolist())
    # Every reply that one whole-conversation example trains is trained in some exchange's example.
    whole = labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=KEEP, return_tensors="np")
    assert set(whole["message_index"][whole["labels"] != labelmask.IGNORE_INDEX].tolist()) <= covered


def test_earlier_reasoning_is_trained_as_the_model_wrote_it(tokenizers):
    tokenizer = tokenizers["qwen3"]
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two and two make four."},
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "6", "reasoning_content": "Three and three make six."},
    ]

    def trained(out):
        return tokenizer.decode([t for t, label in zip(out["input_ids"], out["labels"]) if label != -100])

    whole = labelmask.mask_conversation(messages, tokenizer)
    assert "Two and two" not in whole.text  # Qwen3 drops the earlier reasoning from the history
    first, second = labelmask.mask_turns(messages, tokenizer)
    assert trained(first) == "<think>\nTwo and two make four.\n</think>\n\n4<|im_end|>"
    assert trained(second) == "<think>\nThree and three make six.\n</think>\n\n6<|im_end|>"


def test_an_exchange_with_nothing_to_train_raises_naming_it(tokenizers):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    with pytest.raises(labelmask.NothingToTrainError, match="exchange starting at message 0"):
        labelmask.mask_turns(messages, tokenizers["qwen3"], policy=labelmask.Policy(roles=set()))


class LyingRole(dict):
    """A message whose get("role") says "user" while its items() (what a dict copy reads) say "assistant"."""

    def get(self, key, default=None):
        return "user" if key == "role" else super().get(key, default)


def test_exchanges_are_split_by_the_roles_the_template_sees(tokenizers):
    tok = tokenizers["qwen3"]
    messages = [{"role": "user", "content": "q"}, LyingRole(role="assistant", content="a")]
    examples = labelmask.mask_turns(messages, tok)
    assert len(examples) == 1
    out = examples[0]
    trained = [t for t, label in zip(out["input_ids"], out["labels"]) if label != labelmask.IGNORE_INDEX]
    assert tok.decode(trained).endswith("a<|im_end|>")
    assert out.report.not_rendered == ()
