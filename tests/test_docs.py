"""Docs never go stale: the README quickstart is the example script's code, and it runs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def snippet(path: Path, name: str) -> str:
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"# START {name}\n(.*?)# END {name}\n", text, re.S)
    assert match, f"no START/END {name} markers in {path}"
    return match.group(1).strip()


def test_readme_quickstart_is_the_example_script():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert snippet(ROOT / "examples" / "quickstart.py", "quickstart") in readme


def test_quickstart_runs_and_brackets_only_the_replies():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, check=True
    ).stdout
    assert "[<tool_call>]" in out
    assert "[<|im_end|>]" in out
    assert "[Paris]" in out
    assert "What's the weather in Paris?<|im_end|>" in out  # the user turn, unbracketed
    assert "n_trained=" in out


def test_reference_names_every_public_name():
    import labelmask

    reference = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    missing = [name for name in labelmask.__all__ if f"`{name}" not in reference]
    assert missing == []


def test_readme_sft_script_is_the_example_script():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert snippet(ROOT / "examples" / "sft.py", "sft") in readme


def test_sft_script_trains_on_the_shipped_example():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sft.py")], capture_output=True, text=True, check=True
    ).stdout
    assert "8/8 rows kept" in out
    losses = ast.literal_eval(out.split("losses:", 1)[1].strip())
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_readme_llava_example_is_the_example_script():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert snippet(ROOT / "examples" / "llava.py", "llava") in readme


def test_llava_example_trains_only_the_replies_and_with_add_eos_their_eos():
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "llava.py")], capture_output=True, text=True, check=True
    )
    assert "NoEndOfTurnWarning" in run.stderr and "'llava-1.5'" in run.stderr
    trained = [
        ast.literal_eval(line.split("trained:", 1)[1].strip()) for line in run.stdout.splitlines() if "trained:" in line
    ]
    assert len(trained) == 2
    plain, with_eos = trained
    for text in trained:
        assert "Orange." in text and "Yes, it is plain orange." in text
        assert "USER" not in text and "ASSISTANT" not in text and "colour" not in text and "sure" not in text
    assert "</s>" not in plain
    assert with_eos.count("</s>") == 2 and with_eos.endswith("orange.</s>")
    assert "pixel_values: (1, 3, 336, 336)" in run.stdout
