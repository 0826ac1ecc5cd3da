"""Dataset formats (ShareGPT, Alpaca, TRL prompt/completion, messages) and streaming for mask_dataset.

Each format is written to a small JSON or JSONL file, loaded with ``datasets.load_dataset("json")`` as a
user would, and must mask exactly as the equivalent OpenAI messages, written out by hand here (or, in the
property tests, the drawn conversation the row was made from) and masked by ``mask_conversation``.
"""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

datasets = pytest.importorskip("datasets")

from labelmask import ConversationError, NothingToTrainError, OptionError, mask_conversation, mask_dataset  # noqa: E402
from labelmask.testing.strategies import TOOLS  # noqa: E402
from tests.strategies import conversations  # noqa: E402

BARE_TOOLS = [tool["function"] for tool in TOOLS]  # LLaMA-Factory writes function schemas unwrapped


def write(tmp_path, name: str, rows: list[dict]) -> str:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return str(path)


def load(path: str, streaming: bool = False):
    return datasets.load_dataset("json", data_files=path, split="train", streaming=streaming)


def expected_rows(tokenizer, conversations_and_tools) -> list[tuple[list[int], list[int]]]:
    out = []
    for messages, tools in conversations_and_tools:
        result = mask_conversation(messages, tokenizer, tools=tools)
        out.append((list(result["input_ids"]), list(result["labels"])))
    return out


def masks_of(masked) -> list[tuple[list[int], list[int]]]:
    return [(row["input_ids"], row["labels"]) for row in masked]


@pytest.fixture(scope="module")
def qwen3(tokenizers):
    return tokenizers["qwen3"]


def call(name: str, arguments) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


# ---------------------------------------------------------------------- one file per format


SHAREGPT = [
    {
        "conversations": [
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
            {"from": "observation", "value": "sunny, 21 C"},
            {"from": "gpt", "value": "Sunny and 21 degrees."},
        ],
        "system": "You are terse.",
        "tools": json.dumps(BARE_TOOLS),
    },
    {
        "conversations": [
            {"from": "system", "value": "Be kind."},
            {"from": "human", "value": "Oslo and Rome?"},
            {
                "from": "function_call",
                "value": json.dumps(
                    [{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "get_weather", "arguments": "{}"}]
                ),
            },
            {"from": "observation", "value": "rain"},
            {"from": "observation", "value": "sun"},
            {"from": "gpt", "value": "Rain in Oslo, sun in Rome."},
            {"from": "human", "value": "Thanks"},
            {"from": "gpt", "value": "You're welcome."},
        ],
        "system": "",
        "tools": "",
    },
]
SHAREGPT_AS_MESSAGES = [
    (
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Paris"})]},
            {"role": "tool", "content": "sunny, 21 C"},
            {"role": "assistant", "content": "Sunny and 21 degrees."},
        ],
        TOOLS,
    ),
    (
        [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Oslo and Rome?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [call("get_weather", {"city": "Oslo"}), call("get_weather", "{}")],
            },
            {"role": "tool", "content": "rain"},
            {"role": "tool", "content": "sun"},
            {"role": "assistant", "content": "Rain in Oslo, sun in Rome."},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "You're welcome."},
        ],
        None,
    ),
]


def test_sharegpt_masks_as_its_messages(qwen3, tmp_path):
    data = load(write(tmp_path, "glaive.json", SHAREGPT))
    masked, stats = mask_dataset(data, qwen3)
    assert masks_of(masked) == expected_rows(qwen3, SHAREGPT_AS_MESSAGES)
    assert stats.n_kept == 2


ALPACA = [
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    {"instruction": "Say hi.", "input": "", "output": "Hi!", "system": "You are a parrot."},
    {
        "instruction": "And now?",
        "input": "",
        "output": "Still here.",
        "system": "",
        "history": [["Hello", "Hi there."], ["Are you there?", "Yes."]],
    },
]
ALPACA_AS_MESSAGES = [
    ([{"role": "user", "content": "Translate to French.\ncat"}, {"role": "assistant", "content": "chat"}], None),
    (
        [
            {"role": "system", "content": "You are a parrot."},
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi!"},
        ],
        None,
    ),
    (
        [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there."},
            {"role": "user", "content": "Are you there?"},
            {"role": "assistant", "content": "Yes."},
            {"role": "user", "content": "And now?"},
            {"role": "assistant", "content": "Still here."},
        ],
        None,
    ),
]


@pytest.mark.parametrize("name", ["alpaca.json", "alpaca.jsonl"])
def test_alpaca_masks_as_its_messages(qwen3, tmp_path, name):
    masked, _ = mask_dataset(load(write(tmp_path, name, ALPACA)), qwen3)
    assert masks_of(masked) == expected_rows(qwen3, ALPACA_AS_MESSAGES)


def test_prompt_completion_plain_is_one_exchange(qwen3, tmp_path):
    rows = [{"prompt": "2+2?", "completion": "4"}, {"prompt": "Capital of Peru?", "completion": "Lima"}]
    masked, _ = mask_dataset(load(write(tmp_path, "pc.jsonl", rows)), qwen3)
    expected = [
        ([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], None),
        ([{"role": "user", "content": "Capital of Peru?"}, {"role": "assistant", "content": "Lima"}], None),
    ]
    assert masks_of(masked) == expected_rows(qwen3, expected)


def test_prompt_completion_conversational_trains_the_completion_only(qwen3, tmp_path):
    shot = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    rows = [
        {
            "prompt": [{"role": "system", "content": "Math."}, *shot, {"role": "user", "content": "2+2?"}],
            "completion": [{"role": "assistant", "content": "4"}],
        },
        {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Hello"}]},
    ]
    masked, _ = mask_dataset(load(write(tmp_path, "pc.jsonl", rows)), qwen3)
    # TRL's completion-only loss: the few-shot reply in the prompt is context, not trained.
    first = [{"role": "system", "content": "Math."}, shot[0], {**shot[1], "train": False}]
    first += [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    second = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert masks_of(masked) == expected_rows(qwen3, [(first, None), (second, None)])
    as_messages = mask_conversation(
        [{"role": "system", "content": "Math."}, *shot, *rows[0]["prompt"][3:], *rows[0]["completion"]], qwen3
    )
    assert masked[0]["input_ids"] == list(as_messages["input_ids"])
    assert masked[0]["n_trained"] < as_messages.report.n_trained  # the same tokens, the few-shot "2" untrained


def test_messages_and_role_shaped_conversations(qwen3, tmp_path):
    messages = [m for m, _ in ALPACA_AS_MESSAGES]
    from_messages, _ = mask_dataset(load(write(tmp_path, "m.jsonl", [{"messages": m} for m in messages])), qwen3)
    # A "conversations" column of role/content messages (common on the Hub) is read as OpenAI messages.
    from_conv, _ = mask_dataset(load(write(tmp_path, "c.jsonl", [{"conversations": m} for m in messages])), qwen3)
    expected = expected_rows(qwen3, [(m, None) for m in messages])
    assert masks_of(from_messages) == masks_of(from_conv) == expected


def test_columns_and_tags_map_other_names(qwen3, tmp_path):
    rows = [
        {
            "dialog": [
                {"speaker": "USER", "text": "Hi"},
                {"speaker": "BOT", "text": "Hello"},
                {"speaker": "USER", "text": "Bye"},
                {"speaker": "BOT", "text": "Bye!"},
            ]
        }
    ]
    tags = {"role_tag": "speaker", "content_tag": "text", "user_tag": "USER", "assistant_tag": "BOT"}
    masked, _ = mask_dataset(load(write(tmp_path, "d.jsonl", rows)), qwen3, columns={"messages": "dialog"}, tags=tags)
    expected = [{"role": r, "content": c} for r, c in [("user", "Hi"), ("assistant", "Hello")]]
    expected += [{"role": r, "content": c} for r, c in [("user", "Bye"), ("assistant", "Bye!")]]
    assert masks_of(masked) == expected_rows(qwen3, [(expected, None)])
    qa = [{"question": "Why?", "answer": "Because."}]
    masked, _ = mask_dataset(
        load(write(tmp_path, "qa.jsonl", qa)),
        qwen3,
        format="alpaca",
        columns={"prompt": "question", "response": "answer"},
    )
    pair = [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}]
    assert masks_of(masked) == expected_rows(qwen3, [(pair, None)])


def test_format_overrides_detection(qwen3):
    # Both shapes' columns: detection takes messages first; format= picks Alpaca.
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    row.update({"instruction": "c", "output": "d"})
    data = datasets.Dataset.from_list([row])
    detected, _ = mask_dataset(data, qwen3)
    chosen, _ = mask_dataset(data, qwen3, format="alpaca")
    assert masks_of(detected) == expected_rows(qwen3, [(row["messages"], None)])
    pair = [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    assert masks_of(chosen) == expected_rows(qwen3, [(pair, None)])


# ---------------------------------------------------------------------- shapes that do not fit


@pytest.mark.parametrize(
    ("rows", "kwargs", "error", "match"),
    [
        (
            [{"instruction": "a", "response": "b"}],
            {},
            ConversationError,
            "looks like Alpaca but has no column 'output'",
        ),
        (
            [{"prompt": "a", "answer": "b"}],
            {},
            ConversationError,
            "TRL prompt/completion but has no column 'completion'",
        ),
        ([{"chosen": "a", "rejected": "b"}], {}, ConversationError, "looks like a preference dataset"),
        ([{"text": "a"}], {}, ConversationError, "plain text for language modelling"),
        ([{"foo": "a"}], {}, ConversationError, r"in no format labelmask reads \(OpenAI messages: messages; ShareGPT"),
        ([{"messages": []}], {"format": "sharegpt"}, ConversationError, "read as ShareGPT but has no column"),
        ([{"instruction": "a", "output": "b"}], {"format": "xml"}, OptionError, "format='xml'"),
        (
            [{"instruction": "a", "output": "b"}],
            {"columns": {"answer": "b"}},
            OptionError,
            r"unknown keys \['answer'\]",
        ),
        ([{"instruction": "a", "output": "b"}], {"tags": {"bot_tag": "b"}}, OptionError, r"unknown keys \['bot_tag'\]"),
        (
            [{"instruction": "a", "output": "b"}],
            {"format": "alpaca", "columns": {"completion": "x"}},
            OptionError,
            "mean nothing for format='alpaca'",
        ),
    ],
)
def test_unknown_shapes_name_what_they_resemble(qwen3, rows, kwargs, error, match):
    with pytest.raises(error, match=match):
        mask_dataset(datasets.Dataset.from_list(rows), qwen3, **kwargs)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (
            {"conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]},
            r"Row 0: ShareGPT row: conversations\[1\] has from='bot', which is none of 'human', 'gpt'",
        ),
        (
            {"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "get(1)"}]},
            r"conversations\[1\] is a function call whose value is not JSON",
        ),
        (
            {"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": '{"args": 1}'}]},
            r"is not a \{'name': str, 'arguments': ...\} object",
        ),
        (
            {"conversations": [{"from": "human"}, {"from": "gpt", "value": "b"}]},
            r"conversations\[0\] has no 'value' \(it has \['from'\]\)",
        ),
        (
            {"conversations": [{"from": "system", "value": "x"}, {"from": "gpt", "value": "b"}], "system": "y"},
            "both column 'system' and message 0 give a system prompt, and they differ",
        ),
        (
            {"conversations": [{"role": "user", "content": "a"}, {"from": "gpt", "value": "b"}]},
            "mixes OpenAI messages",
        ),
        ({"instruction": "a", "output": None}, r"Alpaca row: column 'output' is empty \(None\)"),
        ({"instruction": "a", "output": "b", "history": [["x"]]}, r"Alpaca row: history\[0\] is \['x'\]"),
        ({"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]}, "must both be strings"),
    ],
)
def test_row_in_the_wrong_shape_names_the_format(qwen3, row, match):
    data = datasets.Dataset.from_list([row])
    with pytest.raises(ConversationError, match=match):
        mask_dataset(data, qwen3)


def test_drop_counts_rows_in_the_wrong_shape_and_refuses_to_drop_all(qwen3):
    good = {"instruction": "Say hi.", "input": "", "output": "Hi!"}
    data = datasets.Dataset.from_list([good, {"instruction": "x", "input": "", "output": None}, good])
    masked, stats = mask_dataset(data, qwen3, on_error="drop")
    assert (stats.n_kept, stats.dropped) == (2, {"ConversationError": 1})
    assert stats.first_error["ConversationError"].startswith("Row 1: Alpaca row: column 'output' is empty")
    bad = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "no reply"}]}] * 3)
    with pytest.raises(NothingToTrainError, match=r"dropped every row \(3 NothingToTrainError\).*Row 0: Nothing"):
        mask_dataset(bad, qwen3, on_error="drop")


# ---------------------------------------------------------------------- property: drawn conversations


def as_sharegpt(messages: list[dict], tools, system_column: bool) -> dict | None:
    """The ShareGPT row of a drawn conversation, or None when ShareGPT cannot say it (a reply with both text
    and tool calls)."""
    out, row = [], {}
    if tools is not None:
        row["tools"] = json.dumps([tool["function"] for tool in tools])
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system" and i == 0 and system_column and message["content"]:
            row["system"] = message["content"]
        elif message.get("tool_calls"):
            if message["content"] != "":
                return None
            calls = [
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in message["tool_calls"]
            ]
            out.append({"from": "function_call", "value": json.dumps(calls[0] if len(calls) == 1 else calls)})
        else:
            tag = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}[role]
            out.append({"from": tag, "value": message["content"]})
    row["conversations"] = out
    return row


def as_alpaca(messages: list[dict]) -> dict | None:
    """The Alpaca row of a drawn conversation that alternates user and assistant (after a system prompt)."""
    row = {}
    if messages[0]["role"] == "system":
        row["system"], messages = messages[0]["content"], messages[1:]
    roles = [m["role"] for m in messages]
    if not messages or roles != ["user", "assistant"] * (len(messages) // 2) or len(messages) % 2:
        return None
    if row.get("system") == "":
        return None  # an empty system column means no system prompt
    pairs = [[messages[i]["content"], messages[i + 1]["content"]] for i in range(0, len(messages) - 2, 2)]
    row.update(instruction=messages[-2]["content"], input="", output=messages[-1]["content"], history=pairs)
    return row


@settings(max_examples=20)
@given(
    drawn=st.lists(conversations(tools=True, tool_role=True, max_turns=4), min_size=1, max_size=3),
    system_column=st.booleans(),
)
def test_sharegpt_and_alpaca_rows_mask_as_the_drawn_messages(qwen3, tmp_path_factory, drawn, system_column):
    shared = [(m, t, as_sharegpt(m, t, system_column)) for m, t in drawn]
    shared = [(m, t, row) for m, t, row in shared if row is not None]
    folder = tmp_path_factory.mktemp("drawn")
    if shared:
        masked, _ = mask_dataset(
            load(write(folder, "s.jsonl", [row for _, _, row in shared])), qwen3, format="sharegpt"
        )
        assert masks_of(masked) == expected_rows(qwen3, [(m, t) for m, t, _ in shared])
    alpaca = [(m, as_alpaca(m)) for m, t in drawn if t is None and not any("tool_calls" in x for x in m)]
    alpaca = [(m, row) for m, row in alpaca if row is not None]
    if alpaca:
        masked, _ = mask_dataset(load(write(folder, "a.jsonl", [row for _, row in alpaca])), qwen3, format="alpaca")
        assert masks_of(masked) == expected_rows(qwen3, [(m, None) for m, _ in alpaca])


# ---------------------------------------------------------------------- streaming


@settings(max_examples=15)
@given(
    drawn=st.lists(conversations(max_turns=4), min_size=1, max_size=6),
    broken=st.sets(st.integers(0, 5), max_size=2),
    expand=st.sampled_from([None, "turns"]),
    on_error=st.sampled_from(["raise", "drop"]),
    batch_size=st.integers(1, 4),
    num_shards=st.integers(1, 3),
    keep=st.booleans(),
)
def test_iterable_dataset_equals_the_map_style_result(
    qwen3, drawn, broken, expand, on_error, batch_size, num_shards, keep
):
    rows = [{"messages": m, "id": i} for i, (m, _) in enumerate(drawn)]
    for i in sorted(broken):
        if i < len(rows):
            rows[i] = {"messages": [{"role": "user", "content": "no reply"}], "id": i}  # NothingToTrainError
    data = datasets.Dataset.from_list(rows)
    stream = data.to_iterable_dataset(num_shards=min(num_shards, len(rows)))
    kwargs = dict(
        expand=expand, on_error=on_error, batch_size=batch_size, remove_columns=["messages"] if keep else True
    )
    try:
        expected, stats = mask_dataset(data, qwen3, **kwargs)
    except NothingToTrainError as exc:
        lazy, none = mask_dataset(stream, qwen3, **kwargs)  # nothing is masked before the rows are read
        assert none is None
        if on_error == "raise":
            with pytest.raises(NothingToTrainError, match=str(exc).split(":")[0] + ":"):
                list(lazy)
        else:  # every row dropped: a stream cannot know before it is read, and warns as it drops
            first = str(exc).split("The first error: ")[1]
            with pytest.warns(UserWarning, match="dropping the stream's rows that raise NothingToTrainError") as caught:
                assert list(lazy) == []
            assert [str(w.message).split("the first: ")[1] for w in caught] == [first]
        return
    lazy, none = mask_dataset(stream, qwen3, **kwargs)
    assert none is None
    assert isinstance(lazy, datasets.IterableDataset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = list(lazy)
    assert got == [dict(row) for row in expected]
    # No MaskStats for a stream: the first dropped row of each error class is a warning instead.
    assert sorted(str(w.message).split("the first: ")[1] for w in caught) == sorted(stats.first_error.values())
    assert list(got[0]) == expected.column_names
    assert sum(row["n_trained"] for row in got) == stats.n_trained


def test_streamed_json_files_in_every_format(qwen3, tmp_path):
    for name, rows in (("s.jsonl", SHAREGPT), ("a.jsonl", ALPACA)):
        path = write(tmp_path, name, rows)
        mapped, _ = mask_dataset(load(path), qwen3)
        lazy, stats = mask_dataset(load(path, streaming=True), qwen3)
        assert stats is None
        assert list(lazy) == [dict(row) for row in mapped]


def test_iterable_dataset_refuses_num_proc(qwen3):
    stream = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "a"}]}]).to_iterable_dataset()
    with pytest.raises(OptionError, match="num_proc"):
        mask_dataset(stream, qwen3, num_proc=2)


# ---------------------------------------------------------------------- the CLI reads the same formats


@pytest.fixture(scope="module")
def qwen3_folder(tmp_path_factory, qwen3):
    folder = tmp_path_factory.mktemp("qwen3")
    qwen3.save_pretrained(folder)
    return str(folder)


def cli(capsys, *argv) -> tuple[int, str, str]:
    from labelmask.cli import main

    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def without_first_line(text: str) -> str:
    return text.split("\n", 1)[1]  # the header names the file


def test_cli_stats_and_show_read_each_format(capsys, qwen3_folder, tmp_path):
    as_messages = [{"messages": m, "tools": t} for m, t in SHAREGPT_AS_MESSAGES + ALPACA_AS_MESSAGES]
    reference = write(tmp_path, "messages.jsonl", as_messages)
    status, expected, _ = cli(capsys, "stats", reference, qwen3_folder, "--progress", "never")
    assert status == 0 and "5 samples, 5 masked" in expected
    # A .json list of rows (LLaMA-Factory's files) and a .jsonl of rows, in two formats.
    for name in ("rows.json", "rows.jsonl"):
        status, out, err = cli(
            capsys, "stats", write(tmp_path, name, SHAREGPT + ALPACA), qwen3_folder, "--progress", "never"
        )
        assert status == 0, err
        assert without_first_line(out) == without_first_line(expected)
    status, expected, _ = cli(capsys, "show", reference, qwen3_folder, "--row", 3, "--color", "never")
    status, out, err = cli(
        capsys, "show", write(tmp_path, "a.json", ALPACA), qwen3_folder, "--row", 1, "--color", "never"
    )
    assert status == 0, err
    assert out == expected


def test_cli_format_column_and_tag_options(capsys, qwen3_folder, tmp_path):
    qa = write(tmp_path, "qa.jsonl", [{"q": "Why?", "a": "Because."}])
    status, _, err = cli(capsys, "stats", qa, qwen3_folder)
    assert status == 2 and "qa.jsonl:1: expected a list of messages or an object with a 'messages' list" in err
    assert "is in no format labelmask reads" in err
    status, out, err = cli(
        capsys, "stats", qa, qwen3_folder, "--format", "alpaca", "--column", "prompt=q", "--column", "response=a"
    )
    assert status == 0 and "1 samples, 1 masked" in out, err
    half = write(tmp_path, "half.jsonl", [{"instruction": "Why?", "answer": "Because."}])
    status, _, err = cli(capsys, "show", half, qwen3_folder)
    assert status == 2 and "looks like Alpaca but has no column 'output'" in err
    status, _, err = cli(capsys, "show", qa, qwen3_folder, "--column", "prompt")
    assert status == 2 and "--column 'prompt': use KEY=NAME" in err
    dialog = write(
        tmp_path, "d.jsonl", [{"conversations": [{"from": "USER", "value": "Hi"}, {"from": "BOT", "value": "Yo"}]}]
    )
    status, out, err = cli(
        capsys, "stats", dialog, qwen3_folder, "--tag", "user_tag=USER", "--tag", "assistant_tag=BOT"
    )
    assert status == 0 and "1 samples, 1 masked" in out, err
    # Without the tags the row is refused and counted, as any conversation labelmask refuses.
    status, out, err = cli(capsys, "stats", dialog, qwen3_folder, "--progress", "never")
    assert status == 0, err
    assert "samples refused, ConversationError: 1 (first: " in out and "has from='USER'" in out


def test_stream_with_turns_keeps_the_column_order(qwen3):
    # Reproducer: expand="turns" with kept columns gave them after labelmask's own in a stream.
    messages = [
        {"role": m, "content": c} for m, c in [("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")]
    ]
    data = datasets.Dataset.from_list([{"messages": messages, "id": 7}])
    expected, _ = mask_dataset(data, qwen3, expand="turns", remove_columns=["messages"])
    lazy, _ = mask_dataset(data.to_iterable_dataset(), qwen3, expand="turns", remove_columns=["messages"])
    got = list(lazy)
    assert [list(row) for row in got] == [expected.column_names] * 2
    assert got == [dict(row) for row in expected]


def test_stream_whose_schema_is_known_only_once_read(qwen3):
    data = datasets.Dataset.from_list(SHAREGPT)
    stream = data.to_iterable_dataset().map(lambda row: row)  # a map without features= forgets the schema
    assert stream.features is None
    lazy, _ = mask_dataset(stream, qwen3)
    expected, _ = mask_dataset(data, qwen3)
    assert list(lazy) == [dict(row) for row in expected]
