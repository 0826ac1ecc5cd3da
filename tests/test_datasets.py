"""mask_dataset: a datasets.Dataset of conversations in, masked examples out, in one or two processes."""

from __future__ import annotations

import pytest

datasets = pytest.importorskip("datasets")

import labelmask  # noqa: E402
from labelmask import ConversationError, NothingToTrainError, mask_conversation, mask_dataset  # noqa: E402
from labelmask.testing.strategies import TOOLS  # noqa: E402

WORDS = ["Hello", "the cat sat", "42", "naïve café", "東京", "<|im_end|>", "\n\n", "🙂", "ASSISTANT:"]


def word(i: int) -> str:
    return WORDS[i % len(WORDS)] + WORDS[(i * 7 + 3) % len(WORDS)]


def conversations(n: int) -> list[list[dict]]:
    """Deterministic conversations: one to three exchanges, some with a system prompt."""
    out = []
    for i in range(n):
        messages = [{"role": "system", "content": word(i + 5)}] if i % 3 == 0 else []
        for j in range(1 + i % 3):
            messages.append({"role": "user", "content": word(i + j)})
            messages.append({"role": "assistant", "content": word(i * j + 1)})
        out.append(messages)
    return out


def tool_rows() -> list[dict]:
    """Tool calls whose arguments have different keys and number types from row to row."""
    arguments = [{"city": "Paris"}, {"unit": "C", "days": 3}, {"city": "Oslo", "days": 2.5}, {"city": None}]
    rows = []
    for i, args in enumerate(arguments):
        call = {"type": "function", "function": {"name": "get_weather", "arguments": args}}
        messages = [
            {"role": "user", "content": word(i)},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": word(i + 1)},
        ]
        rows.append({"messages": messages, "tools": TOOLS if i % 2 == 0 else None})
    return rows


def rows_of(masked) -> list[dict]:
    return [dict(row) for row in masked]


@pytest.fixture(scope="module")
def qwen3(tokenizers):
    return tokenizers["qwen3"]


@pytest.fixture(scope="module")
def plain():
    return datasets.Dataset.from_list([{"messages": m, "id": i} for i, m in enumerate(conversations(24))])


def test_rows_equal_mask_conversation(qwen3, plain):
    masked, stats = mask_dataset(plain, qwen3, batch_size=5, keep_provenance=True)
    assert masked.column_names == [
        "input_ids", "attention_mask", "labels", "n_tokens", "n_trained", "n_cut", "not_rendered",
        "message_index", "role", "part",
    ]  # fmt: skip
    assert len(masked) == stats.n_rows == stats.n_kept == 24
    assert stats.dropped == {}
    for messages, row in zip(conversations(24), masked):
        expected = mask_conversation(messages, qwen3)
        for key in ("input_ids", "attention_mask", "labels", "message_index", "role", "part"):
            assert row[key] == expected[key], key
        assert (row["n_tokens"], row["n_trained"]) == (expected.report.n_tokens, expected.report.n_trained)
        assert row["not_rendered"] == [f"{m}:{field}" for m, field in expected.report.not_rendered]
    assert stats.n_tokens == sum(masked["n_tokens"])
    assert stats.n_trained == sum(masked["n_trained"])


def test_truncation_is_reported_per_row(qwen3, plain):
    masked, stats = mask_dataset(
        plain, qwen3, on_error="drop", max_length=12, truncation="left", remove_columns=["messages"]
    )
    full, _ = mask_dataset(plain, qwen3)
    assert len(masked) == stats.n_kept
    # Rows whose system prompt alone is over 12 tokens cannot keep it, and rows whose kept
    # end holds no trained token have nothing to train: both dropped and counted.
    assert set(stats.dropped) <= {"TruncationError", "NothingToTrainError"}
    for row in masked:
        whole = full[row["id"]]
        assert row["n_tokens"] == min(12, whole["n_tokens"]) == len(row["input_ids"])
        assert row["n_cut"] == whole["n_tokens"] - row["n_tokens"]
    assert any(row["n_cut"] > 0 for row in masked)


def test_two_processes_give_the_same_examples(qwen3, plain):
    data = plain.add_column("bad", [i % 7 == 3 for i in range(len(plain))])
    # Rows 3, 10, 17 lose their assistant turns: nothing to train, so the drop path runs in both workers.
    data = data.map(lambda r: {"messages": [m for m in r["messages"] if not r["bad"] or m["role"] != "assistant"]})
    one, stats_one = mask_dataset(data, qwen3, on_error="drop", remove_columns=["bad"], batch_size=4)
    two, stats_two = mask_dataset(data, qwen3, on_error="drop", remove_columns=["bad"], batch_size=4, num_proc=2)
    assert rows_of(one) == rows_of(two)
    assert stats_one == stats_two
    assert stats_one.dropped == {"NothingToTrainError": 3}
    assert one["id"] == [i for i in range(24) if i % 7 != 3]


def test_remove_columns(qwen3, plain):
    kept, _ = mask_dataset(plain, qwen3, remove_columns=False)
    assert kept.column_names == [
        "messages",
        "id",
        "input_ids",
        "attention_mask",
        "labels",
        "n_tokens",
        "n_trained",
        "n_cut",
        "not_rendered",
    ]
    assert kept["messages"] == plain["messages"]
    some, _ = mask_dataset(plain, qwen3, remove_columns=["messages"])
    assert some.column_names == [
        "id", "input_ids", "attention_mask", "labels", "n_tokens", "n_trained", "n_cut", "not_rendered"
    ]  # fmt: skip
    assert some["id"] == list(range(24))
    with pytest.raises(KeyError, match="lacks"):
        mask_dataset(plain, qwen3, remove_columns=["nope"])
    with pytest.raises(ValueError, match="overwritten"):
        mask_dataset(plain.add_column("labels", [0] * 24), qwen3, remove_columns=False)


def test_drop_counts_each_error(qwen3):
    rows = [{"messages": m} for m in conversations(4)]
    rows.insert(1, {"messages": [{"role": "user", "content": "no reply"}]})
    rows.insert(3, {"messages": [{"role": "wizard", "content": "hm"}, {"role": "assistant", "content": "x"}]})
    data = datasets.Dataset.from_list(rows)
    masked, stats = mask_dataset(data, qwen3, on_error="drop")
    assert (stats.n_rows, stats.n_kept, stats.n_dropped) == (6, 4, 2)
    assert stats.dropped == {"NothingToTrainError": 1, "ConversationError": 1}
    assert stats.first_error["NothingToTrainError"].startswith("Row 1: Nothing to train")
    assert stats.first_error["ConversationError"].startswith("Row 3: Message 0 has unknown role 'wizard'")
    assert masked["input_ids"] == [mask_conversation(m, qwen3)["input_ids"] for m in conversations(4)]
    assert "2 dropped: 1 ConversationError, 1 NothingToTrainError" in str(stats)


@pytest.mark.parametrize("num_proc", [None, 2])
def test_raise_names_the_row(qwen3, num_proc):
    rows = [{"messages": m} for m in conversations(6)]
    rows[4] = {"messages": [{"role": "user", "content": "no reply"}]}
    data = datasets.Dataset.from_list(rows)
    with pytest.raises(NothingToTrainError, match=r"^Row 4: Nothing to train") as caught:
        mask_dataset(data, qwen3, num_proc=num_proc, batch_size=2)
    assert caught.value.row == 4
    assert caught.value.template == "qwen3"


def test_policy_keep_passes_empty_samples_on(qwen3):
    data = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "no reply"}]}])
    masked, stats = mask_dataset(data, qwen3, policy=labelmask.Policy(on_empty="keep"))
    assert masked["n_trained"] == [0] and stats.n_kept == 1


def test_struct_typed_tool_arguments_are_refused(qwen3):
    data = datasets.Dataset.from_list(tool_rows())
    # What datasets did to the rows: every key of every row, missing ones None, ints widened to floats.
    arguments = [row["messages"][1]["tool_calls"][0]["function"]["arguments"] for row in data]
    assert arguments[0] == {"city": "Paris", "unit": None, "days": None}
    assert arguments[1]["days"] == 3.0
    with pytest.raises(ConversationError, match=r"arguments .*Arrow structs.*Json\(\)"):
        mask_dataset(data, qwen3)
    # Trusted anyway, the rendered JSON differs from the rows as written.
    trusted, _ = mask_dataset(data, qwen3, trust_structs=True)
    expected = [mask_conversation(r["messages"], qwen3, tools=r["tools"])["input_ids"] for r in tool_rows()]
    assert trusted["input_ids"] != expected


def test_json_typed_tool_columns_round_trip(qwen3):
    from datasets import Features, Json, List, Value

    call = {"type": Value("string"), "function": {"name": Value("string"), "arguments": Json()}}
    message = {"role": Value("string"), "content": Value("string"), "tool_calls": List(call)}
    features = Features({"messages": List(message), "tools": List(Json())})
    data = datasets.Dataset.from_list(tool_rows(), features=features)
    masked, stats = mask_dataset(data, qwen3, batch_size=2, keep_provenance=True)
    assert stats.n_kept == 4
    for row, original in zip(masked, tool_rows()):
        expected = mask_conversation(original["messages"], qwen3, tools=original["tools"])
        for key in ("input_ids", "labels", "message_index", "role", "part"):
            assert row[key] == expected[key], key


def test_json_string_tools_and_arguments(qwen3):
    import json

    rows = []
    for row in tool_rows():
        for message in row["messages"]:
            for call in message.get("tool_calls", ()):
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
        rows.append({"messages": row["messages"], "tools": json.dumps(row["tools"]) if row["tools"] else None})
    masked, _ = mask_dataset(datasets.Dataset.from_list(rows), qwen3)
    expected = [mask_conversation(r["messages"], qwen3, tools=r["tools"] and json.loads(r["tools"])) for r in rows]
    assert masked["input_ids"] == [e["input_ids"] for e in expected]
    assert masked["labels"] == [e["labels"] for e in expected]


def test_fingerprint_is_deterministic_and_follows_options(qwen3, plain):
    from labelmask._datasets import _fingerprint, _Masker
    from labelmask._formats import resolve_format
    from labelmask._pipeline import check_options

    def fingerprint(on_error="raise", reading=None, **options):
        masker = _Masker(
            processor=qwen3, row_format=resolve_format(plain.column_names, **(reading or {})), used=("messages",),
            options=check_options(**options), on_error=on_error, keep_provenance=False, registered={},
        )  # fmt: skip
        return _fingerprint(plain, masker, ["messages", "id"], 1000)

    assert fingerprint() == fingerprint()
    assert fingerprint(policy=labelmask.Policy(roles={"assistant", "user"})) == fingerprint(
        policy=labelmask.Policy(roles={"user", "assistant"})
    )
    assert fingerprint() != fingerprint(policy=labelmask.Policy(eot=False))
    assert fingerprint(policy=labelmask.Policy(part_weights={"eot": 2.0})) != fingerprint(
        policy=labelmask.Policy(part_weights={"eot": 3.0})
    )
    assert fingerprint() != fingerprint(enable_thinking=False)
    assert fingerprint() != fingerprint(verify=True)
    assert fingerprint() != fingerprint(on_error="drop")
    assert fingerprint() != fingerprint(reading={"format": "sharegpt", "columns": {"messages": "messages"}})


def test_a_rows_chat_template_kwargs_reach_its_template_in_mask_dataset_and_the_collator(tokenizers):
    """TRL datasets carry template arguments per row in a chat_template_kwargs column; read, not dropped."""
    from datasets import Dataset

    tokenizer = tokenizers["qwen3"]
    messages = [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]
    rows = [
        {"messages": messages, "chat_template_kwargs": {"enable_thinking": False}},
        {"messages": messages, "chat_template_kwargs": {}},
    ]
    masked, _ = labelmask.mask_dataset(Dataset.from_list(rows), tokenizer)
    off = labelmask.mask_conversation(messages, tokenizer, enable_thinking=False)
    on = labelmask.mask_conversation(messages, tokenizer)
    assert list(off["labels"]) != list(on["labels"])  # the empty think block: header without thinking
    assert masked[0]["labels"] == list(off["labels"]) and masked[1]["labels"] == list(on["labels"])
    batch = labelmask.Collator(tokenizer, return_tensors="np")([rows[0]])
    assert batch["labels"][0].tolist() == list(off["labels"])
    bad = Dataset.from_list([{"messages": messages, "chat_template_kwargs": {"enable_thinkin": False}}])
    with pytest.raises(labelmask.OptionError, match="enable_thinking"):
        labelmask.mask_dataset(bad, tokenizer)
    with pytest.raises(labelmask.ConversationError, match="strings"):
        labelmask.Collator(tokenizer)([{"messages": messages, "chat_template_kwargs": {1: True}}])
    with pytest.raises(labelmask.ConversationError, match="mapping"):
        labelmask.Collator(tokenizer)([{"messages": messages, "chat_template_kwargs": [("enable_thinking", 1)]}])
    with pytest.raises(labelmask.ConversationError, match="add_generation_prompt"):
        labelmask.Collator(tokenizer)([{"messages": messages, "chat_template_kwargs": {"add_generation_prompt": True}}])
