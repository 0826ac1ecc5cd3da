"""``labelmask.testing.check_append_only``: is a stock chat template append-only, as multi-turn RL needs?

The verdicts are checked against what is known of the templates from outside labelmask (Llama 3
writes each turn once; Qwen3 drops the reasoning of replies before the last user message), against
hand-written templates that append, rewrite history, or merge tokens at the boundary, and every
reported break is re-derived here from transformers' own renders. Also: the ``check --append-only``
command, and the table of docs/append-only.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

import labelmask
from labelmask.testing import AppendOnlyResult, check_append_only, conversations
from tests.fixtures import HERE, load_tokenizer

ROOT = HERE.parent.parent
# Few conversations per check in CI (the checks below find their breaks within the first few);
# LABELMASK_HYPOTHESIS=thorough draws ten times as many.
EXAMPLES = 200 if os.environ.get("LABELMASK_HYPOTHESIS") == "thorough" else 20


def shown(text: str) -> str:
    """``text`` as an excerpt shows it (inside its repr)."""
    return repr(text)[1:-1]


def render(tokenizer, messages, tools=None, *, generation_prompt=False, **kwargs):
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt, **kwargs
    )


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reproduce(tokenizer, result: AppendOnlyResult) -> None:
    """The reported break, from transformers' renders: the prompt before message ``turn`` plus the
    reply (the render through it) is not a prefix of the later render, in text or (only) in tokens."""
    messages, turn = result.messages, result.turn
    prompt = render(tokenizer, messages[:turn], result.tools, generation_prompt=True, **result.kwargs)
    through = render(tokenizer, messages[: turn + 1], result.tools, **result.kwargs)
    later = render(
        tokenizer, messages[: result.later], result.tools, generation_prompt=result.later_prompt, **result.kwargs
    )
    rollout, reference = (prompt, through) if result.later == turn + 1 else (through, later)
    if result.level == "text":
        assert not reference.startswith(rollout)
    else:
        assert reference.startswith(rollout)
        rollout_ids, reference_ids = ids(tokenizer, rollout), ids(tokenizer, reference)
        assert reference_ids[: len(rollout_ids)] != rollout_ids


# ---------------------------------------------------------------------------- acceptance


def test_llama3_is_append_only(tokenizers):
    result = check_append_only(tokenizers["llama3"], max_examples=EXAMPLES)
    assert result.append_only, str(result)
    assert result.template == "llama3" and result.kwargs == {} and result.tokens
    # The default conversations (tools, tool results, reasoning) are all rendered by Llama 3's template.
    assert result.checked >= EXAMPLES // 2 and result.skipped == 0
    assert result.messages is None and result.turn is None and result.level is None
    assert str(result).startswith("append-only: template llama3, kwargs {}; ")


def test_qwen3_drops_the_reasoning_of_earlier_replies(tokenizers):
    tokenizer = tokenizers["qwen3"]
    result = check_append_only(tokenizer, max_examples=EXAMPLES)
    assert not result.append_only and result.template == "qwen3"
    # The smallest break: a reply, a user message after it, and the next reply (whose prompt drops
    # the first reply's think block).
    roles = [m["role"] for m in result.messages]
    assert roles == ["user", "assistant", "user", "assistant"], result.messages
    assert result.turn == 1 and result.later == 3 and result.later_prompt and result.level == "text"
    reasoning = result.messages[1].get("reasoning_content", "")
    assert shown(f"<think>\n{reasoning.strip()}") in result.excerpt.split("later render")[0]
    assert "<think>" not in result.excerpt.split("later render")[1]
    reproduce(tokenizer, result)


def test_qwen3_break_shows_the_dropped_reasoning_text(tokenizers):
    """With every reply carrying reasoning, the excerpt holds the reasoning text the later render drops."""

    def reasoned(drawn):
        messages, tools = drawn
        return [{**m, "reasoning_content": "Let me think."} if m["role"] == "assistant" else m for m in messages], tools

    tokenizer = tokenizers["qwen3"]
    result = check_append_only(tokenizer, max_examples=EXAMPLES, conversations=conversations().map(reasoned))
    assert not result.append_only
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user", "assistant"]
    rollout, later = result.excerpt.split("later render")
    assert shown("<think>\nLet me think.\n</think>") in rollout and "Let me think." not in later
    reproduce(tokenizer, result)
    text = str(result)
    assert text.startswith("not append-only: template qwen3, kwargs {}; ")
    assert (
        "the rollout after assistant message 1 is not a prefix of the render of messages[:3] with the generation "
        in text
    )
    listed = re.search(r"^  smallest breaking conversation: (.*)$", text, re.M)[1]
    assert json.loads(listed) == result.messages


# ---------------------------------------------------------------------------- both ways, on hand-written templates

# A template that writes each message once, at the end: append-only. Content is trimmed (as Llama 3's
# is), so a reply starting with a newline cannot merge with the header's "\n\n".
APPENDS = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{{ m.content | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# The same, but a reply followed by another message is written as a placeholder: history rewritten.
REWRITES = APPENDS.replace(
    "{{ m.content | trim }}",
    "{% if m.role == 'assistant' and not loop.last %}[earlier reply]{% else %}{{ m.content | trim }}{% endif %}",
)
# Plain-text turns whose generation prompt ends with a space: every render is a prefix of the next,
# but a reply starting with a word merges with that space into one token (" Hello").
MERGES = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def with_template(source: str):
    tokenizer = load_tokenizer("llama3")
    tokenizer.chat_template = source
    return tokenizer


def test_a_template_that_appends_is_append_only():
    result = check_append_only(with_template(APPENDS), max_examples=EXAMPLES)
    assert result.append_only, str(result)
    assert result.template.startswith("unregistered-") and result.checked >= EXAMPLES // 2


def test_a_template_that_rewrites_history_is_reported():
    tokenizer = with_template(REWRITES)
    result = check_append_only(tokenizer, max_examples=EXAMPLES)
    assert not result.append_only and result.level == "text"
    assert result.turn == 1 and len(result.messages) <= 4
    assert "[earlier reply]" in result.excerpt.split("later render")[1]
    reproduce(tokenizer, result)


def test_tokens_that_merge_at_the_boundary_are_a_distinct_break():
    tokenizer = with_template(MERGES)
    text_only = check_append_only(tokenizer, max_examples=EXAMPLES, tokens=False)
    assert text_only.append_only and not text_only.tokens and "(text only)" in str(text_only)
    result = check_append_only(tokenizer, max_examples=EXAMPLES)
    assert not result.append_only and result.level == "tokens"
    # The break is between the prompt and the reply: the prompt's ids are not a prefix of the reply's render.
    assert result.later == result.turn + 1 and not result.later_prompt
    assert "the text is a prefix but the tokens differ" in str(result)
    reproduce(tokenizer, result)


def test_the_closing_eos_phi3_writes_only_at_the_end_is_not_part_of_a_rollout(tokenizers):
    """Phi-3 ends a conversation with its eos when no generation prompt follows: the model does not
    generate it, and the check leaves it out of the rollout (otherwise every turn would break)."""
    tokenizer = tokenizers["phi3"]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    through = render(tokenizer, messages)
    later = render(tokenizer, [*messages, {"role": "user", "content": "Bye"}], generation_prompt=True)
    assert through.endswith("<|endoftext|>") and not later.startswith(through)
    assert later.startswith(through.removesuffix("<|endoftext|>"))
    assert check_append_only(tokenizer, max_examples=EXAMPLES).append_only


# ---------------------------------------------------------------------------- options


def test_refused_conversations_are_skipped_and_counted(tokenizers):
    """Gemma 3 raises on conversations that do not alternate: skipped, not reported as breaks."""
    result = check_append_only(tokenizers["gemma3"], max_examples=EXAMPLES)
    assert result.append_only and result.skipped > 0 and result.checked > 0
    assert "alternate" in result.skip_reason
    assert f"{result.skipped} skipped (refused by the template)" in str(result)
    narrowed = check_append_only(
        tokenizers["gemma3"], max_examples=EXAMPLES, conversations=conversations(alternate=True)
    )
    assert narrowed.append_only and narrowed.skipped == 0


def test_settings_give_one_result_per_setting(tokenizers):
    """Qwen3.6 drops earlier reasoning unless preserve_thinking is set (its text is then append-only)."""
    results = check_append_only(
        tokenizers["qwen3.6"],
        settings=[{"preserve_thinking": False}, {"preserve_thinking": True}],
        max_examples=EXAMPLES,
        tokens=False,
    )
    assert isinstance(results, list) and [r.kwargs for r in results] == [
        {"preserve_thinking": False},
        {"preserve_thinking": True},
    ]
    assert [r.append_only for r in results] == [False, True], [str(r) for r in results]
    # Settings are merged over the keyword arguments.
    merged = check_append_only(
        tokenizers["qwen3"], settings=[{"enable_thinking": True}], max_examples=3, enable_thinking=False
    )
    assert merged[0].kwargs == {"enable_thinking": True}


def test_a_registered_name_selects_its_stock_template(tokenizers):
    """template="qwen3" renders the stock template the annotation stands for: the same verdict and
    the same smallest conversation as the tokenizer's own (identical) template."""
    own = check_append_only(tokenizers["qwen3"], max_examples=EXAMPLES)
    named = check_append_only(tokenizers["qwen3"], "qwen3", max_examples=EXAMPLES)
    assert (named.append_only, named.messages, named.turn, named.excerpt) == (
        own.append_only,
        own.messages,
        own.turn,
        own.excerpt,
    )
    # By name, the Qwen3 template over the Llama 3 tokenizer, whose own template is append-only.
    other = check_append_only(tokenizers["llama3"], "qwen3", max_examples=EXAMPLES)
    assert not other.append_only and other.template == "qwen3" and other.level == "text"


def test_bad_arguments_raise_labelmask_errors(tokenizers):
    tokenizer = tokenizers["llama3"]
    with pytest.raises(labelmask.TemplateNotFoundError, match="no-such"):
        check_append_only(tokenizer, "no-such")
    with pytest.raises(labelmask.OptionError, match="enable_thinkin="):
        check_append_only(tokenizers["qwen3"], enable_thinkin=False)
    with pytest.raises(labelmask.OptionError, match="max_examples"):
        check_append_only(tokenizer, max_examples=0)
    with pytest.raises(labelmask.OptionError, match="settings"):
        check_append_only(tokenizer, settings={"enable_thinking": True})


def test_the_search_is_deterministic(tokenizers):
    first = check_append_only(tokenizers["qwen3"], max_examples=EXAMPLES)
    assert check_append_only(tokenizers["qwen3"], max_examples=EXAMPLES) == first


# ---------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for name in ("llama3", "qwen3"):
        folder = tmp_path_factory.mktemp(name)
        load_tokenizer(name).save_pretrained(folder)
        out[name] = str(folder)
    return out


def run(capsys, *argv):
    from labelmask.cli import main

    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_append_only_verdicts_and_exit_status(capsys, folders, registry):
    status, out, err = run(capsys, "check", folders["llama3"], "--append-only", "--examples", 10)
    assert status == 0, out + err
    assert "\nappend-only: template llama3, kwargs {}; " in out
    status, out, err = run(capsys, "check", folders["qwen3"], "--append-only", "--examples", 10)
    assert status == 1, out + err
    assert "\nnot append-only: template qwen3, kwargs {}; " in out
    listed = re.search(r"^  smallest breaking conversation: (.*)$", out, re.M)[1]
    assert [m["role"] for m in json.loads(listed)] == ["user", "assistant", "user", "assistant"]
    status, out, _ = run(
        capsys, "check", folders["qwen3"], "--append-only", "--examples", 10, "--kwarg", "enable_thinking=false"
    )
    assert status == 1 and 'kwargs {"enable_thinking": false}' in out
    # A registered template by name, over another tokenizer.
    status, out, _ = run(capsys, "check", folders["llama3"], "--append-only", "--examples", 10, "--template", "qwen3")
    assert status == 1 and "not append-only: template qwen3" in out


def test_cli_append_only_as_a_process_leaves_the_folder_clean(folders, tmp_path):
    """The exit status a shell sees; and Hypothesis' cache goes to the user's cache folder, not ./.hypothesis."""
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_STORAGE_DIRECTORY"}
    env.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "-m", "labelmask", "check", folders["qwen3"], "--append-only", "--examples", "5"]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not append-only: template qwen3" in done.stdout
    assert list(work.iterdir()) == []


def test_cli_append_only_input_errors_exit_2(capsys, folders, registry):
    status, _, err = run(capsys, "check", folders["qwen3"], "--append-only", "--kwarg", "enable_thinkin=false")
    assert status == 2 and "enable_thinkin=" in err
    status, _, err = run(capsys, "check", folders["qwen3"], "--append-only", "--template", "no-such")
    assert status == 2 and "no registered template" in err
    status, _, err = run(capsys, "check", folders["qwen3"], "--append-only", "--eot", "<|im_end|>")
    assert status == 2 and "--eot" in err
    status, _, err = run(capsys, "check", folders["qwen3"], "--append-only", "--examples", 0)
    assert status == 2 and "--examples 0" in err


# ---------------------------------------------------------------------------- the docs table


def table_rows() -> list[dict]:
    doc = (ROOT / "docs" / "append-only.md").read_text(encoding="utf-8")
    body = doc.split("<!-- append-only table: begin -->")[1].split("<!-- append-only table: end -->")[0]
    rows = []
    for line in body.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 7, line  # no "|" inside a cell: Markdown would split it there
        rows.append(dict(zip(("template", "fixture", "setting", "text", "tokens", "reasoned", "why"), cells)))
    return rows


def load_table_script():
    spec = importlib.util.spec_from_file_location("append_only_table", ROOT / "benchmarks" / "append_only.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_lists_exactly_the_registered_templates():
    rows = table_rows()
    assert {r["template"] for r in rows} == set(labelmask.templates())
    for row in rows:
        assert row["fixture"] == f"`{row['template']}`"
        assert row["text"] in ("append-only", "breaks") and row["tokens"] in ("append-only", "breaks")
        assert row["reasoned"] in ("append-only", "breaks", "—")
        if "breaks" in (row["text"], row["tokens"], row["reasoned"]):
            assert row["why"], f"{row['template']}: no reason given"


# Two append-only templates, two that rewrite history, one whose tokens alone break, and one that
# breaks on replies without reasoning but keeps history whole with truncate_history_thinking=false.
RECHECKED = ("llama3", "gemma3", "qwen3", "gpt-oss", "qwen2.5", "nemotron-3-nano")


@pytest.mark.parametrize("name", RECHECKED)
def test_table_verdicts_agree_with_the_check_run_now(name):
    script = load_table_script()
    for row in [r for r in table_rows() if r["template"] == name]:
        setting = next(s for s in script.SETTINGS.get(name, [{}]) if script.setting_text(s) == row["setting"])
        text = script.check(name, setting, script.EXAMPLES, tokens=False)
        assert script.verdict(text) == row["text"], str(text)
        if text.append_only:
            assert script.verdict(script.check(name, setting, script.EXAMPLES, tokens=True)) == row["tokens"]
        if row["reasoned"] != "—":
            reasoned = script.check(name, setting, script.EXAMPLES, tokens=False, reasoned=True)
            assert script.verdict(reasoned) == row["reasoned"], str(reasoned)
