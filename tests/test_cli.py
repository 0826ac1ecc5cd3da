"""The ``labelmask`` command on the shipped examples: output, exit status, clear errors, the HTML report in Chromium.

Commands run in process through ``labelmask.cli.main`` (the exit status is its return
value); two run as real processes (``python -m labelmask``) to check the status a shell sees.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys

import pytest

import labelmask
from labelmask import cli
from labelmask._view import HTML_COLORS
from labelmask.cli import main
from tests.fixtures import HERE, load_tokenizer

ROOT = HERE.parent.parent
EXAMPLES = ROOT / "examples"
CONVERSATION = str(EXAMPLES / "conversation.json")
DATASET = str(EXAMPLES / "dataset.jsonl")


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    """The vendored Qwen3 tokenizer saved to a folder, as a user's model snapshot would be."""
    folder = tmp_path_factory.mktemp("qwen3")
    load_tokenizer("qwen3").save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def my_model(tmp_path_factory):
    """A tokenizer folder whose chat template is the how-to's new model (examples/my-model.stock.jinja)."""
    folder = tmp_path_factory.mktemp("my-model")
    tokenizer = load_tokenizer("qwen3")
    tokenizer.chat_template = (EXAMPLES / "my-model.stock.jinja").read_text(encoding="utf-8")
    tokenizer.save_pretrained(folder)
    return str(folder)


# Each folder's tokenizer is loaded by the command's own loader once per module, not once per
# command (the command does not change it); a folder that fails to load raises every time.
_load_once = functools.cache(cli._load_processor)


@pytest.fixture(autouse=True)
def load_once(monkeypatch):
    monkeypatch.setattr(cli, "_load_processor", _load_once)


@pytest.fixture(autouse=True)
def _restore_registry(registry):
    """Templates registered by --template do not outlive the test (conftest's registry fixture)."""


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def counts(out: str) -> dict[str, tuple[int, int]]:
    """The per-role table of ``show``: role -> (tokens, trained)."""
    return {m[1]: (int(m[2]), int(m[3])) for m in re.finditer(r"^(\w+)\s+(\d+)\s+(\d+)$", out, re.M)}


# ---------------------------------------------------------------------------- show


def test_show_brackets_the_trained_tokens_of_the_shipped_conversation(capsys, qwen3):
    status, out, err = run(capsys, "show", CONVERSATION, qwen3)
    assert status == 0, err
    assert '[<tool_call>][\n][{"][name]' in out
    assert "[ Paris][.][<|im_end|>]" in out
    assert "<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n" in out  # untrained, unbracketed
    assert "\x1b[" not in out  # not a terminal: no colour
    assert "legend: [token] trained" in out
    assert counts(out) == {
        "system": (12, 0),
        "user": (12, 0),
        "assistant": (53, 45),
        "tool": (23, 0),
        "total": (100, 45),
    }
    assert "template qwen3 (annotated); 45/100 tokens trained" in out


def test_show_counts_agree_with_mask_conversation(capsys, qwen3):
    messages = json.loads((EXAMPLES / "conversation.json").read_text(encoding="utf-8"))
    result = labelmask.mask_conversation(messages, load_tokenizer("qwen3"), return_tensors="np")
    trained = result["labels"] != labelmask.IGNORE_INDEX
    expected = {}
    for role in labelmask.Role:
        mine = result["role"] == role
        if mine.any():
            name = "template" if role == labelmask.Role.NONE else role.name.lower()
            expected[name] = (int(mine.sum()), int((mine & trained).sum()))
    expected["total"] = (result.report.n_tokens, result.report.n_trained)
    _, out, _ = run(capsys, "show", CONVERSATION, qwen3)
    assert counts(out) == expected


def test_show_colours_by_role_and_trained_and_respects_no_color(capsys, qwen3, monkeypatch):
    status, out, _ = run(capsys, "show", CONVERSATION, qwen3, "--color", "always")
    assert status == 0
    assert "\x1b[30;42m<tool_call>\x1b[0m" in out  # trained: black on green
    assert "\x1b[30;102m<|im_end|>\x1b[0m\x1b[36m\u21b5\x1b[0m\n" in out  # trained eot, untrained newline: visible
    assert "\x1b[34mWhat\x1b[0m" in out  # an untrained user token: blue
    assert "\x1b[35m<|im_start|>\x1b[0m" in out  # the system turn: magenta
    assert "[<tool_call>]" not in out
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    _, out, _ = run(capsys, "show", CONVERSATION, qwen3)
    assert "\x1b[" not in out and "[<tool_call>]" in out
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["show", CONVERSATION, qwen3]) == 0
    assert "\x1b[30;42m" in capsys.readouterr().out


def test_show_reads_a_jsonl_row_with_its_tools(capsys, qwen3):
    status, out, _ = run(capsys, "show", DATASET, qwen3, "--row", 0)
    assert status == 0
    assert '"name": "get_weather"' in out  # row 0 carries tools: Qwen3 writes them into the system turn
    status, out, _ = run(capsys, "show", DATASET, qwen3, "--row", 1)
    assert status == 0 and "[Hi][!][<|im_end|>]" in out
    status, _, err = run(capsys, "show", DATASET, qwen3, "--row", 6)
    assert status == 2 and "--row 6:" in err and "has 6 conversation(s)" in err


def test_show_html_is_standalone_and_describes_every_token(capsys, qwen3, tmp_path):
    page = tmp_path / "report.html"
    status, _, err = run(capsys, "show", CONVERSATION, qwen3, "--html", page)
    assert status == 0 and f"wrote {page}" in err
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert "<script" not in html and "http" not in html and "src=" not in html and "<link" not in html
    titles = re.findall(r'<span class="tok ([\w-]+)" title="([^"]*)"', html)
    assert len(titles) == 100
    # The first assistant turn's generation prompt and its first trained token.
    assert ("assistant", "token 24 · id 151644 · role assistant · part header · message 2 · label -100") in titles
    assert ("trained", "token 27 · id 151667 · role assistant · part reasoning · message 2 · label 151667") in titles
    assert sum(cls.startswith("trained") for cls, _ in titles) == 45
    assert "<td>assistant</td><td>53</td><td>45</td>" in html


def test_show_errors_are_clear_with_exit_status_2(capsys, qwen3, tmp_path):
    status, _, err = run(capsys, "show", tmp_path / "missing.json", qwen3)
    assert status == 2 and err == f"labelmask show: error: {tmp_path / 'missing.json'}: no such file\n"
    status, _, err = run(capsys, "show", CONVERSATION, tmp_path / "no-tokenizer")
    assert status == 2 and "no-tokenizer: no such file or directory (expected a tokenizer or processor folder)" in err
    status, _, err = run(capsys, "show", CONVERSATION, CONVERSATION)
    assert status == 2 and "not a folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, err = run(capsys, "show", CONVERSATION, empty)
    assert status == 2 and "cannot load a tokenizer from this folder" in err
    assert err.count("\n") == 1  # transformers' reason runs over five lines: joined into one

    broken = tmp_path / "broken.json"
    broken.write_text('[{"role": "user", "content": "Hi"},\n {"role": "assistant", "content": "Hello"\n]')
    status, _, err = run(capsys, "show", broken, qwen3)
    assert status == 2 and f"{broken}:3:1: not valid JSON (Expecting ',' delimiter)" in err
    lines = tmp_path / "broken.jsonl"
    lines.write_text('{"messages": []}\n{"messages": [}\n')
    status, _, err = run(capsys, "show", lines, qwen3, "--row", 1)
    assert status == 2 and f"{lines}:2: not valid JSON" in err
    shape = tmp_path / "shape.json"
    shape.write_text('{"conversation": []}')
    status, _, err = run(capsys, "show", shape, qwen3)
    assert status == 2 and "expected a list of messages or an object with a 'messages' list" in err
    no_role = tmp_path / "no-role.json"
    no_role.write_text('[{"content": "Hi"}, {"role": "assistant", "content": "Hello"}]')
    status, _, err = run(capsys, "show", no_role, qwen3)
    assert status == 2 and f"{no_role}: ConversationError: Message 0 has no string 'role'" in err
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe[]")
    status, _, err = run(capsys, "show", binary, qwen3)
    assert status == 2 and "not UTF-8 text" in err


def test_show_refuses_a_conversation_over_its_token_limit_unless_lifted(capsys, qwen3, tmp_path):
    # Issue 19, item 11. On f01e381 a 20 MB conversation (about 10M tokens) grew `labelmask show` past
    # 10 GB in two minutes (the view takes about 1 KB a token). Here: a small limit, then lifted.
    long = tmp_path / "long.json"
    words = " ".join(f"w{i}" for i in range(400))
    long.write_text(json.dumps([{"role": "user", "content": words}, {"role": "assistant", "content": "ok"}]))
    n_tokens = labelmask.mask_conversation(json.loads(long.read_text()), load_tokenizer("qwen3")).report.n_tokens
    status, out, err = run(capsys, "show", long, qwen3, "--max-tokens", 100, "--color", "never")
    assert status == 2 and out == ""
    assert f"{n_tokens:,} tokens, over the view's limit of 100: pass --max-tokens N" in err
    # Far longer than the limit allows: refused before tokenizing, by the render's length.
    status, out, err = run(capsys, "show", long, qwen3, "--max-tokens", 10, "--color", "never")
    assert status == 2 and "renders to more than 640 characters" in err and "--max-tokens 0" in err
    for lifted in (n_tokens, 0):
        status, out, _ = run(capsys, "show", long, qwen3, "--max-tokens", lifted, "--color", "never")
        assert status == 0 and "w399" in out
    with pytest.raises(SystemExit) as info:
        run(capsys, "show", long, qwen3, "--max-tokens", -1)
    assert info.value.code == 2 and "--max-tokens: -1 is negative" in capsys.readouterr().err


def test_show_keeps_a_conversation_with_nothing_to_train(capsys, qwen3):
    status, out, _ = run(capsys, "show", DATASET, qwen3, "--row", 4)
    assert status == 0
    assert "[" not in out.split("legend")[0]
    assert counts(out)["total"][1] == 0


def test_show_never_passes_escape_sequences_from_the_conversation_to_the_terminal(capsys, qwen3, tmp_path):
    sneaky = tmp_path / "sneaky.json"
    sneaky.write_text(json.dumps([{"role": "user", "content": "\x1b[2J"}, {"role": "assistant", "content": "ok"}]))
    status, out, _ = run(capsys, "show", sneaky, qwen3, "--color", "always")
    assert status == 0
    assert "\x1b[34m\u241b[\x1b[0m" in out and "\x1b[2J" not in out
    status, out, _ = run(capsys, "show", sneaky, qwen3, "--color", "never")
    assert status == 0 and "\n\u241b[2J<|im_end|>" in out


def test_show_takes_a_registered_template_name_with_a_dot(capsys, tmp_path):
    folder = tmp_path / "qwen2.5"
    load_tokenizer("qwen2.5").save_pretrained(folder)
    status, out, err = run(capsys, "show", DATASET, folder, "--row", 1, "--template", "qwen2.5")
    assert status == 0, err
    assert "template qwen2.5 (annotated)" in out and "[Hi][!][<|im_end|>]" in out


def test_show_reads_a_processor_folder_and_writes_an_image_run_once(capsys, tmp_path, monkeypatch):
    from PIL import Image

    import labelmask._pipeline
    from tests.fixtures import load_processor

    # The warning is issued once per template per process: forget earlier tests' warnings.
    monkeypatch.setattr(labelmask._pipeline, "_WARNED_NO_EOT", set())

    folder = tmp_path / "llava"
    load_processor("llava-1.5").save_pretrained(folder)
    png = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(png)
    conversation = tmp_path / "image.json"
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}
    conversation.write_text(json.dumps([user, {"role": "assistant", "content": "Red."}]))
    status, out, err = run(capsys, "show", conversation, folder, "--image", png)
    assert status == 0, err
    # LLaVA-1.5's template writes no </s>: the NoEndOfTurnWarning is one clean line, without a file path.
    assert err == (
        "labelmask show: note: Template 'llava-1.5' writes no end-of-turn token after assistant replies, so a model "
        "trained on its samples never learns to stop. Pass add_eos=True to write '</s>' after each reply and train "
        "it.\n"
    )
    run_length = re.search(r"^USER: <image>\u00d7(\d+)\nWhat colour\? ASSISTANT:\[ Red\]", out, re.M)
    assert run_length, out[:300]
    assert counts(out)["user"][0] > int(run_length[1]) >= 500  # the run is counted token by token
    assert "[<image>" not in out
    status, _, err = run(capsys, "show", conversation, folder, "--image", conversation)
    assert status == 2 and f"--image {conversation}: not an image Pillow can read" in err
    status, _, err = run(capsys, "show", conversation, folder, "--image", tmp_path / "none.png")
    assert status == 2 and "none.png: no such file" in err


# ---------------------------------------------------------------------------- check


def test_check_passes_the_shipped_qwen3_template(capsys, qwen3):
    status, out, err = run(capsys, "check", qwen3, "--examples", 15, "--max-turns", 3, "--eot", "<|im_end|>")
    assert status == 0, out + err
    assert "template qwen3; end of turn '<|im_end|>'" in out
    for row in ("render parity", "token parity", "soundness", "completeness", "end of turn is trained"):
        assert re.search(rf"^{row}\s+ok\s+15\s+0$", out, re.M), row
    assert out.rstrip().endswith("verdict: all properties hold")


def test_check_proves_the_how_to_annotation_and_fails_a_broken_one(capsys, my_model, tmp_path):
    status, out, _ = run(
        capsys, "check", my_model, "--template", EXAMPLES / "my-model.jinja", "--eot", "<|im_end|>", "--examples", 15
    )
    assert status == 0, out
    assert "template my-model;" in out
    # The end-of-turn token left out of its span: never trained.
    broken = tmp_path / "broken.jinja"
    source = (EXAMPLES / "my-model.jinja").read_text(encoding="utf-8")
    broken.write_text(source.replace("{% span 'eot' %}<|im_end|>{% endspan %}", "<|im_end|>"), encoding="utf-8")
    status, out, _ = run(capsys, "check", my_model, "--template", broken, "--eot", "<|im_end|>", "--examples", 15)
    assert status == 1
    assert re.search(r"^end of turn is trained\s+FAIL\s+0\s+15$", out, re.M)
    assert re.search(r"^render parity\s+ok\s+15\s+0$", out, re.M)
    assert "end of turn is trained: FAIL\n  AssertionError: reply 1 does not end with ('<|im_end|>',)" in out
    assert "smallest failing conversation: [" in out
    assert out.rstrip().endswith("verdict: FAIL")


def test_check_errors_are_clear_with_exit_status_2(capsys, qwen3, my_model, tmp_path):
    status, _, err = run(capsys, "check", tmp_path / "nowhere")
    assert status == 2 and "nowhere: no such file or directory" in err
    status, _, err = run(capsys, "check", qwen3, "--template", "no-such-template")
    assert status == 2 and "--template no-such-template: no such file, and no registered template" in err
    malformed = tmp_path / "malformed.jinja"
    malformed.write_text("{% for m in messages %}{% span 'turn', loop.index0 %}{{ m.content }}{% endfor %}")
    status, _, err = run(capsys, "check", my_model, "--template", malformed)
    assert status == 2 and f"labelmask check: error: --template {malformed}:" in err
    status, _, err = run(capsys, "check", qwen3, "--examples", 0)
    assert status == 2 and "--examples 0: use a positive number" in err


# ---------------------------------------------------------------------------- stats


def test_stats_over_the_shipped_dataset(capsys, qwen3):
    status, out, err = run(capsys, "stats", DATASET, qwen3)
    assert status == 0, err
    assert out.startswith(f"labelmask stats {DATASET}: 6 samples, 6 masked, ")
    table = {m[1]: m.groups()[1:] for m in re.finditer(r"^(\w+)\s+(\d+)\s+(\d+)\s+([\d.]+)%\s+([\d.]+)%$", out, re.M)}
    assert set(table) == {"system", "user", "assistant", "tool", "total"}
    assert table["assistant"][3] == "100.0" and table["user"][1] == "0"
    assert int(table["total"][0]) == sum(int(table[r][0]) for r in ("system", "user", "assistant", "tool"))
    assert "samples truncated: 0, 0 tokens cut" in out
    # Row 4 has no reply, row 5's reply says "train": false.
    assert "samples with nothing to train: 2" in out
    assert "masking" not in err  # no terminal: no progress bar


def test_stats_counts_truncated_samples_and_shows_progress(capsys, qwen3):
    status, out, err = run(
        capsys, "stats", DATASET, qwen3, "--max-length", 128, "--progress", "always", "--progress-delay", 0
    )
    assert status == 0
    assert "samples truncated: 2 (max_length=128, truncation=right)" in out
    assert "masking: 100%" in err and "6/6" in err
    status, out, _ = run(capsys, "stats", DATASET, qwen3, "--max-length", 128, "--truncation", "drop")
    assert status == 0
    assert "6 samples, 4 masked" in out
    assert "samples refused, TruncationError: 2 (first: " in out


def test_stats_counts_what_the_template_does_not_render(capsys, qwen3, tmp_path):
    # Qwen3 writes the reasoning of the last exchange only: two of three traces are lost.
    exchange = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": "why"},
    ]
    data = tmp_path / "reasoning.jsonl"
    data.write_text(json.dumps({"messages": exchange * 3}) + "\n" + json.dumps({"messages": exchange}) + "\n")
    status, out, err = run(capsys, "stats", data, qwen3)
    assert status == 0, err
    assert "not rendered by the template, reasoning: 2 messages in 1 samples" in out


def test_stats_errors_are_clear_with_exit_status_2(capsys, qwen3, tmp_path):
    status, _, err = run(capsys, "stats", tmp_path / "none.jsonl", qwen3)
    assert status == 2 and "none.jsonl: no such file" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text((EXAMPLES / "dataset.jsonl").read_text().splitlines()[1] + "\nnot json\n")
    status, _, err = run(capsys, "stats", bad, qwen3)
    assert status == 2 and err.startswith(f"labelmask stats: error: {bad}:2: not valid JSON")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"messages": [], "tools": "{oops"}\n')
    status, _, err = run(capsys, "stats", wrong, qwen3)
    assert status == 2 and f"{wrong}:1: 'tools' is a string but not JSON" in err
    status, _, err = run(capsys, "stats", DATASET, qwen3, "--max-length", 0)
    assert status == 2 and "--max-length 0" in err


# ---------------------------------------------------------------------------- templates


def test_templates_lists_every_registered_template_with_its_source(capsys):
    status, out, _ = run(capsys, "templates")
    assert status == 0
    known = labelmask.templates()
    for name, template in known.items():
        assert re.search(rf"^{re.escape(name)}\s+(text|parts)\s+\d+\s+{re.escape(template.origin)}$", out, re.M), name
    assert f"{len(known)} annotated templates" in out
    status, out, _ = run(capsys, "templates", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list(known)
    assert rows[0]["matches"] == list(known[rows[0]["name"]].matches)


# ---------------------------------------------------------------------------- the real process


def test_the_console_script_and_its_exit_status(tmp_path):
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is 3.11+; labelmask supports 3.10
    assert '[project.scripts]\nlabelmask = "labelmask.cli:main"\n' in pyproject
    env_run = [sys.executable, "-m", "labelmask"]
    done = subprocess.run([*env_run, "show", tmp_path / "x.json", tmp_path], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "labelmask show: error:" in done.stderr and "no such file" in done.stderr
    done = subprocess.run(env_run, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "required: COMMAND" in done.stderr
    done = subprocess.run([*env_run, "templates"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("name ")


# ---------------------------------------------------------------------------- the HTML report in a browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def screenshot(page, png, tmp_path, size=(900, 1000)):
    """Render ``page`` with headless Chromium (Debian's ``chromium``, installed by .ci/run) to ``png``."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed (apt-get install -y chromium; .ci/run does it)"
    profile = tmp_path / "chromium-profile"
    command = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={png}",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and png.exists(), done.stderr


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def test_the_html_report_renders_trained_and_untrained_colours_in_chromium(capsys, qwen3, tmp_path):
    from PIL import Image

    page = tmp_path / "report.html"
    assert run(capsys, "show", CONVERSATION, qwen3, "--html", page)[0] == 0
    png = tmp_path / "report.png"
    screenshot(page, png, tmp_path)
    image = Image.open(png).convert("RGB")
    width, height = image.size
    pixels = image.load()
    # Only the conversation box counts (the legend above it shows every colour too): the rows
    # between its top and bottom border (#d1d5db), the only full-width lines of that colour.
    border = rgb("#d1d5db")
    rows = [y for y in range(height) if sum(pixels[x, y] == border for x in range(width)) > width // 2]
    assert len(rows) >= 2, "the conversation box was not found in the screenshot"
    top, bottom = rows[0], rows[-1]
    assert bottom - top > 300
    seen: dict[tuple, int] = {}
    for y in range(top + 1, bottom):
        for x in range(width):
            seen[pixels[x, y]] = seen.get(pixels[x, y], 0) + 1
    for name in ("trained", "trained-alt", "system", "user", "assistant", "tool"):
        assert seen.get(rgb(HTML_COLORS[name]), 0) > 300, f"{name} ({HTML_COLORS[name]}) is missing from the tokens"


# Issue 19, item 12: --kwarg with an argument the command sets itself, or a bad option, is the command's
# input error (one line, exit status 2), not a traceback.
@pytest.mark.parametrize(
    ("kwarg", "fragment"),
    [
        ("tools=[]", "the command sets tools itself; use --tools"),
        ("verify=true", "the command sets verify itself"),
        ("template=x", "the command sets template itself; use --template"),
        ("policy=x", "the command sets policy itself"),
        ("check=bogus", "check='bogus'"),
        ("max_length=0", "max_length=0: use a positive int"),
        ("max_lenght=3", "did you mean max_length="),
    ],
)
@pytest.mark.parametrize("command", ["show", "stats"])
def test_bad_kwargs_are_input_errors(capsys, qwen3, command, kwarg, fragment):
    status, _, err = run(capsys, command, CONVERSATION, qwen3, "--kwarg", kwarg)
    assert status == 2
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_show_and_stats_report_a_lone_surrogate(capsys, qwen3, tmp_path):
    # Issue 19, item 8: a JSON "\ud800" escape without its pair; on f01e381 the tokenizer's TypeError escaped.
    path = tmp_path / "bad.json"
    path.write_text('[{"role": "user", "content": "a\\ud800"}, {"role": "assistant", "content": "ok"}]')
    status, _, err = run(capsys, "show", path, qwen3)
    assert status == 2 and "lone surrogate" in err
    status, out, err = run(capsys, "stats", path, qwen3)
    assert "ConversationError" in out + err and "lone surrogate" in out + err
