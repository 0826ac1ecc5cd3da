"""Docs never go stale: the README's blocks are the example scripts' code or run as pasted, and the
examples run from the repository root with a tokenizer folder (they import nothing from tests/)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The folders the README's commands write (python -m tests.fixtures), by their default names."""
    where = tmp_path_factory.mktemp("folders")
    for argv in (["qwen3", "qwen3-tokenizer"], ["llava-1.5", "llava-processor", "--processor"]):
        subprocess.run(
            [sys.executable, "-m", "tests.fixtures", argv[0], str(where / argv[1]), *argv[2:]], cwd=ROOT, check=True
        )
    return where


def run_example(name: str, folder: Path) -> subprocess.CompletedProcess:
    """``python examples/NAME FOLDER`` from the repository root, as the README runs it (this checkout's
    labelmask first on the path, as ``pip install -e .`` would make it, whatever else is installed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


def snippet(path: Path, name: str) -> str:
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"# START {name}\n(.*?)# END {name}\n", text, re.S)
    assert match, f"no START/END {name} markers in {path}"
    return match.group(1).strip()


def test_readme_quickstart_is_the_example_script():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert snippet(ROOT / "examples" / "quickstart.py", "quickstart") in readme


def test_quickstart_runs_and_brackets_only_the_replies(folders):
    out = run_example("quickstart.py", folders / "qwen3-tokenizer").stdout
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


def test_sft_script_trains_on_the_shipped_example(folders):
    out = run_example("sft.py", folders / "qwen3-tokenizer").stdout
    assert "8/8 rows kept" in out
    losses = ast.literal_eval(out.split("losses:", 1)[1].strip())
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_dpo_script_trains_on_two_pairs(folders):
    out = run_example("dpo.py", folders / "qwen3-tokenizer").stdout
    assert "2/2 rows kept" in out
    losses = ast.literal_eval(out.split("losses:", 1)[1].strip())
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_readme_llava_example_is_the_example_script():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert snippet(ROOT / "examples" / "llava.py", "llava") in readme


def test_llava_example_trains_only_the_replies_and_with_add_eos_their_eos(folders):
    run = run_example("llava.py", folders / "llava-processor")
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


def test_examples_import_nothing_from_tests():
    """A user who installed the wheel runs them with a tokenizer folder: no tests.fixtures, no sys.path."""
    for path in EXAMPLES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m and m.split(".")[0] == "tests"], path.name
        assert "sys.path" not in path.read_text(encoding="utf-8"), path.name


README_PYTHON = [
    block
    for lang, block in re.findall(r"```(\w*)\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    if lang == "python"
]


@pytest.mark.parametrize("index", range(len(README_PYTHON)))
def test_readme_python_blocks_run_as_pasted(index, folders, tmp_path, monkeypatch):
    """Each python block of the README is an example script's snippet (run above, from the repository root
    with the README's folders) or runs as pasted, in a fresh namespace, from a folder holding those."""
    code = README_PYTHON[index].strip()
    if any(code == snippet(path, path.stem.split("_")[0]) for path in EXAMPLES if "# START" in path.read_text()):
        return
    monkeypatch.chdir(folders)
    (folders / "examples").exists() or (folders / "examples").symlink_to(ROOT / "examples")
    exec(compile(code, f"README python block {index}", "exec"), {"__name__": "__main__"})


def _split_top_level(params: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in params:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in [*parts, current.strip()] if p]


def test_reference_signatures_are_the_code_signatures():
    """Every ``- `name(...)``` line of docs/reference.md lists the parameters of the code, in order, with
    the defaults the code has (a default stale in the docs, as chunk_size was, fails here)."""
    import inspect

    import labelmask

    reference = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    checked = 0
    for name in labelmask.__all__:
        obj = getattr(labelmask, name)
        match = re.search(r"^- `" + re.escape(name) + r"\((.*?)\)`", reference, re.M)
        if match is None or not callable(obj):
            continue
        documented = []
        for param in _split_top_level(match.group(1)):
            key, _, default = param.partition("=")
            documented.append((key, eval(default) if default else inspect.Parameter.empty))  # noqa: S307
        actual = []
        star = False
        for p in inspect.signature(obj).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY and not star:
                actual.append(("*", inspect.Parameter.empty))
                star = True
            key = {inspect.Parameter.VAR_KEYWORD: "**", inspect.Parameter.VAR_POSITIONAL: "*"}.get(p.kind, "") + p.name
            actual.append((key, p.default))
        assert [k for k, _ in documented] == [k for k, _ in actual], name
        for (key, doc_default), (_, default) in zip(documented, actual):
            assert doc_default == default, (name, key, doc_default, default)
        checked += 1
    assert checked >= 8


def test_the_readme_quickstart_command_runs_as_written(tmp_path):
    """The README's one command, minus its `pip install -e .` (the suite runs installed), in a fresh folder
    that holds the checkout's files: it writes qwen3-tokenizer/ and masks the bundled example."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"```bash\n(pip install -e \. && .*?)\n```", readme).group(1)
    assert command.startswith("pip install -e . && python -m tests.fixtures qwen3 qwen3-tokenizer")
    for name in ("labelmask", "tests", "examples", "templates"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run(
        ["bash", "-c", command.removeprefix("pip install -e . && ")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (tmp_path / "qwen3-tokenizer" / "tokenizer.json").is_file()
    assert "[<tool_call>]" in run.stdout and "[<|im_end|>]" in run.stdout and "n_trained=" in run.stdout
