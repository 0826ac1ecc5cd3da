"""The ``labelmask`` command as people use it (issue 20, item 6): stdin and JSON lines streams,
``--version``, ``stats --json`` with percentiles and per-role counts, bad lines skipped and
counted, ``--fail-on-refused``, Hub model ids read from the local Hugging Face cache, and
warnings as clean notes. Three checks run as real processes (a real pipe, the version a shell
sees, the cache found through the environment); the rest run in process through ``main``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labelmask
from labelmask import cli
from labelmask.cli import main
from tests.fixtures import HERE, load_tokenizer

ROOT = HERE.parent.parent
EXAMPLES = ROOT / "examples"
DATASET = EXAMPLES / "dataset.jsonl"
CONVERSATION = EXAMPLES / "conversation.json"


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen3")
    load_tokenizer("qwen3").save_pretrained(folder)
    return folder


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def stdin(monkeypatch, data: bytes) -> io.BytesIO:
    """Make ``data`` the process's stdin (``sys.stdin.buffer`` is what the command reads)."""
    raw = io.BytesIO(data)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw, encoding="utf-8"))
    return raw


def nearest_rank(values: list[int], p: int) -> int:
    """The smallest value at least p% of ``values`` do not exceed, by sorting (the oracle)."""
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered) / 100) - 1]


def python(*argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "labelmask", *map(str, argv)], capture_output=True, **kwargs)


# ---------------------------------------------------------------------------- --version


def test_version_prints_the_packaged_version():
    version = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)[1]
    done = python("--version", cwd=ROOT, text=True)
    assert done.returncode == 0 and done.stdout == f"labelmask {version}\n" and done.stderr == ""


# ---------------------------------------------------------------------------- stdin, streams, --json


def test_stats_json_from_a_pipe_agrees_with_mask_conversation(qwen3, tmp_path):
    # Each row of the shipped dataset, masked directly: the oracle for the counts and percentiles.
    tokenizer = load_tokenizer("qwen3")
    policy = labelmask.Policy(on_empty="keep")
    lengths, trained, roles = [], [], Counter()
    lines = DATASET.read_text(encoding="utf-8").splitlines()
    for line in lines:
        row = json.loads(line)
        result = labelmask.mask_conversation(
            row["messages"], tokenizer, tools=row.get("tools"), policy=policy, return_tensors="np"
        )
        labels, role = np.ravel(result["labels"]), np.ravel(result["role"])
        lengths.append(len(labels))
        trained.append(int((labels != labelmask.IGNORE_INDEX).sum()))
        roles["assistant"] += int(((role == labelmask.Role.ASSISTANT) & (labels != labelmask.IGNORE_INDEX)).sum())
    # A row whose earlier reasoning Qwen3 does not render: a NotRenderedWarning, shown as one note.
    exchange = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "why"}]
    data = "\n".join(lines).encode() + b"\n\n" + json.dumps({"messages": exchange * 2}).encode() + b"\n"
    with warnings.catch_warnings():  # the NotRenderedWarning the command shows as a note
        warnings.simplefilter("ignore", labelmask.NotRenderedWarning)
        extra = labelmask.mask_conversation(exchange * 2, tokenizer, return_tensors="np")
    lengths.append(extra.report.n_tokens)
    trained.append(extra.report.n_trained)

    done = python("stats", "-", qwen3, "--json", input=data, cwd=ROOT)  # a real pipe
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["dataset"] == "<stdin>" and stats["rows"] == stats["masked"] == 7 and stats["refused"] == 0
    assert stats["tokens"] == sum(lengths) and stats["trained"] == sum(trained)
    for p in (50, 90, 99):
        assert stats["tokens_per_row"][f"p{p}"] == nearest_rank(lengths, p)
        assert stats["trained_per_row"][f"p{p}"] == nearest_rank(trained, p)
    assert stats["tokens_per_row"]["max"] == max(lengths)
    assert stats["roles"]["user"]["trained"] == 0
    assert stats["roles"]["assistant"]["trained"] == roles["assistant"] + extra.report.n_trained
    assert sum(r["tokens"] for r in stats["roles"].values()) == stats["tokens"]
    assert stats["not_rendered"] == {"reasoning": {"messages": 1, "rows": 1}}
    assert stats["templates"] == {"qwen3": 7} and stats["bad_lines"] == 0
    # The warning: one clean line on stderr, no "path:line: NotRenderedWarning" and no source line.
    err = done.stderr.decode()
    assert err.startswith("labelmask stats: note: Template 'qwen3' does not render what these messages carry")
    assert err.count("\n") == 1 and ".py:" not in err and "Warning" not in err


def test_stats_json_keys_are_stable(capsys, qwen3):
    status, out, _ = run(capsys, "stats", DATASET, qwen3, "--json", "--max-length", 128)
    assert status == 0
    stats = json.loads(out)
    assert list(stats) == [
        "labelmask_version",
        "dataset",
        "tokenizer",
        "rows",
        "masked",
        "refused",
        "refused_by_error",
        "bad_lines",
        "first_bad_line",
        "tokens",
        "trained",
        "roles",
        "tokens_per_row",
        "trained_per_row",
        "truncated",
        "tokens_cut",
        "max_length",
        "truncation",
        "nothing_to_train",
        "not_rendered",
        "templates",
    ]
    assert list(stats["roles"]) == ["system", "user", "assistant", "tool", "template"]
    assert stats["truncated"] == 2 and stats["max_length"] == 128 and stats["truncation"] == "right"
    assert stats["tokens_per_row"]["max"] == 128  # the two long rows, cut to max_length


def test_stdin_holds_one_json_document_or_json_lines(capsys, qwen3, monkeypatch):
    rows = [
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        {"instruction": "Say hi.", "input": "", "output": "Hi!", "system": "You are a parrot."},
    ]
    document = json.dumps(rows, indent=2).encode()  # the first line, "[", is no JSON value by itself
    stdin(monkeypatch, document)
    status, out, err = run(capsys, "show", "-", qwen3, "--row", 1, "--color", "never")
    assert status == 0, err
    assert "You are a parrot." in out and "[Hi][!][<|im_end|>]" in out
    stdin(monkeypatch, document)
    status, out, _ = run(capsys, "stats", "-", qwen3)
    assert status == 0 and out.startswith("labelmask stats <stdin>: 2 samples, 2 masked")
    # The same rows as JSON lines, and a document with an error: its line and column.
    stdin(monkeypatch, b"\n".join(json.dumps(r).encode() for r in rows))
    status, out, _ = run(capsys, "stats", "-", qwen3)
    assert status == 0 and out.startswith("labelmask stats <stdin>: 2 samples, 2 masked")
    stdin(monkeypatch, b'\n[\n  {"instruction": "x",\n  "output": }\n]\n')
    status, _, err = run(capsys, "stats", "-", qwen3)
    assert status == 2 and err.startswith("labelmask stats: error: <stdin>:4:13: not valid JSON (Expecting value)")
    stdin(monkeypatch, b"\n \n")
    status, _, err = run(capsys, "show", "-", qwen3)
    assert status == 2 and err == "labelmask show: error: <stdin>: empty input\n"


def test_json_lines_are_read_one_at_a_time(monkeypatch):
    lines = [json.dumps({"messages": [{"role": "user", "content": str(i)}]}).encode() + b"\n" for i in range(3)]
    raw = stdin(monkeypatch, b"".join(lines) + b"not json at all\n")
    records = cli._records("-")
    assert next(records) == ("<stdin>:1", json.loads(lines[0]))
    assert raw.tell() == len(lines[0])  # nothing after the first line was read
    assert next(records)[0] == "<stdin>:2"
    assert raw.tell() == len(lines[0]) + len(lines[1])


def test_a_json_lines_string_may_hold_a_line_separator(capsys, qwen3, tmp_path):
    # On b783df7 the file was split with str.splitlines, which also splits at U+2028 inside a JSON
    # string: "not valid JSON (Unterminated string ...)" for a valid line.
    data = tmp_path / "u2028.jsonl"
    row = {"messages": [{"role": "user", "content": "a\u2028b"}, {"role": "assistant", "content": "ok"}]}
    data.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    status, out, err = run(capsys, "stats", data, qwen3)
    assert status == 0, err
    assert "1 samples, 1 masked" in out


# ---------------------------------------------------------------------------- bad lines, refusals


def test_bad_lines_stop_the_run_or_are_skipped_and_counted(capsys, qwen3, tmp_path):
    good = DATASET.read_text(encoding="utf-8").splitlines()[1].encode()
    data = tmp_path / "mixed.jsonl"
    data.write_bytes(b"\n".join([good, b"not json", b'{"messages": "\xff"}', b'{"conversation": []}', good]) + b"\n")
    status, _, err = run(capsys, "stats", data, qwen3)
    assert status == 2 and err.startswith(f"labelmask stats: error: {data}:2: not valid JSON")
    status, out, err = run(capsys, "stats", data, qwen3, "--skip-bad-lines")
    assert status == 0, err
    assert out.startswith(f"labelmask stats {data}: 2 samples, 2 masked")
    assert f"bad lines skipped: 3 (first: {data}:2: not valid JSON" in out
    status, out, _ = run(capsys, "stats", data, qwen3, "--skip-bad-lines", "--json")
    stats = json.loads(out)
    assert (stats["rows"], stats["bad_lines"]) == (2, 3) and stats["first_bad_line"].startswith(f"{data}:2: ")
    assert status == 0
    status, _, _ = run(capsys, "stats", data, qwen3, "--skip-bad-lines", "--fail-on-refused")
    assert status == 1  # a skipped line is a row that did not make it
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_bytes(b"nope\n[1, \n")
    status, _, err = run(capsys, "stats", only_bad, qwen3, "--skip-bad-lines")
    assert status == 2 and f"no rows: 2 bad lines skipped (first: {only_bad}:1: not valid JSON" in err


def test_fail_on_refused_sets_the_exit_status(capsys, qwen3):
    refusing = ("--max-length", 128, "--truncation", "drop")
    assert run(capsys, "stats", DATASET, qwen3, *refusing)[0] == 0
    status, out, _ = run(capsys, "stats", DATASET, qwen3, *refusing, "--fail-on-refused")
    assert status == 1 and "samples refused, TruncationError: 2" in out
    status, out, _ = run(capsys, "stats", DATASET, qwen3, *refusing, "--fail-on-refused", "--json")
    assert status == 1 and json.loads(out)["refused_by_error"]["TruncationError"]["rows"] == 2
    assert run(capsys, "stats", DATASET, qwen3, "--fail-on-refused")[0] == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=300))
def test_percentiles_are_numpy_inverted_cdf(values):
    got = cli._percentiles(Counter(values))
    for p in (50, 90, 99):
        assert got[f"p{p}"] == int(np.percentile(values, p, method="inverted_cdf"))
    assert got["max"] == max(values)


# ---------------------------------------------------------------------------- Hub ids from the cache


def test_a_hub_model_id_is_read_from_the_local_cache_never_downloaded(tmp_path):
    # The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/<commit>/...}.
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--acme--chat" / "snapshots" / commit
    load_tokenizer("qwen3").save_pretrained(snapshot)
    (cache / "models--acme--chat" / "refs").mkdir()
    (cache / "models--acme--chat" / "refs" / "main").write_text(commit)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    # A download would go to a closed port and fail: the test sees it instead of the network.
    env.update(HF_HUB_CACHE=str(cache), HF_ENDPOINT="http://127.0.0.1:9")
    done = python("show", DATASET, "acme/chat", "--row", 1, "--color", "never", cwd=ROOT, env=env, text=True)
    assert done.returncode == 0, done.stderr
    assert "[Hi][!][<|im_end|>]" in done.stdout and "template qwen3 (annotated)" in done.stdout
    done = python("stats", DATASET, "acme/other", cwd=ROOT, env=env, text=True)
    assert done.returncode == 2
    assert done.stderr == (
        "labelmask stats: error: acme/other: no such file or directory (expected a tokenizer or processor folder, "
        f"or a Hub model id in the Hugging Face cache at {cache}); nothing is downloaded: fetch it first with "
        "`hf download acme/other`, or give the folder\n"
    )


# ---------------------------------------------------------------------------- docs


def test_docs_list_every_command_and_option():
    import argparse

    docs = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = cli._parser()
    for action in parser._actions:
        for option in action.option_strings:
            assert option in docs, option
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in commands.choices.items():
        assert re.search(rf"^## `labelmask {name}\b", docs, re.M), name
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert re.search(rf"`{re.escape(option)}\b", docs), f"{name} {option}"
