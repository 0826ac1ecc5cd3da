"""The documentation site: it builds with warnings as errors, its API reference names every
public name, and every code sample in it runs.

Code samples are the fenced blocks of ``docs/*.md``:

* ``python``: run as a script from the repository root, in the test process (a block that is the snippet of an
  example script is instead checked equal to it: that script is run by ``tests/test_docs.py``);
* ``bash``: the page's blocks run in order in one temporary folder holding ``examples/``,
  ``labelmask`` standing for ``python -m labelmask`` of this checkout;
* ``text`` right after a ``bash`` or ``python`` block: its expected output; every line must appear in it;
* ``jinja`` and other ``text`` blocks are template fragments and prose, not programs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import labelmask
import labelmask.testing
from tests.test_docs import snippet

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
LANGUAGES = {"python", "bash", "text", "jinja"}
# Examples whose snippet a page shows verbatim, and the test that runs each script.
RUN_ELSEWHERE = {
    ("sft.py", "sft"): "tests/test_docs.py::test_sft_script_trains_on_the_shipped_example",
    ("dpo.py", "dpo"): "tests/test_docs.py::test_dpo_script_trains_on_two_pairs",
    ("quickstart.py", "quickstart"): "tests/test_docs.py::test_quickstart_runs_and_brackets_only_the_replies",
    ("ray_data.py", "ray"): "tests/test_ray.py::test_map_batches_on_a_local_ray_instance",
}


def blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of a page, in order."""
    text = page.read_text(encoding="utf-8")
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)]


def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis"),  # not ./.hypothesis
        "NO_COLOR": "1",
        "NO_MKDOCS_2_WARNING": "1",
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built by ``mkdocs build --strict`` (every warning an error)."""
    out = tmp_path_factory.mktemp("site")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
        + ["--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env(out),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"mkdocs build --strict: {time.perf_counter() - started:.1f} s")
    return out


def test_the_site_builds_with_warnings_as_errors(site):
    pages = {p.stem for p in PAGES}
    built = {p.parent.name if p.parent != site else "index" for p in site.rglob("index.html")}
    assert pages <= built, pages - built
    tutorial = (site / "tutorial" / "index.html").read_text(encoding="utf-8")
    assert 'src="../assets/show-report.png"' in tutorial
    assert (site / "assets" / "show-report.png").stat().st_size > 10_000


def test_the_api_reference_documents_every_public_name(site):
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    missing = [name for name in labelmask.__all__ if f'id="labelmask.{name}"' not in api]
    missing += [f"testing.{n}" for n in labelmask.testing.__all__ if f'id="labelmask.testing.{n}"' not in api]
    assert missing == []
    # Generated from the docstrings, not written by hand.
    assert "Tokenize a conversation as its chat template does and label what to train." in api


def test_the_api_page_asks_for_every_public_name():
    """The same check on the source, without building (fails fast and names the missing ``:::`` line)."""
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    wanted = [f"::: labelmask.{name}" for name in labelmask.__all__]
    wanted += [f"::: labelmask.testing.{name}" for name in labelmask.testing.__all__]
    assert [w for w in wanted if not re.search(rf"^{re.escape(w)}$", page, re.M)] == []


def test_every_code_block_has_a_known_language():
    found = {(page.name, language) for page in PAGES for language, _ in blocks(page)}
    assert {(page, language) for page, language in found if language not in LANGUAGES} == set()


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert [p.name for p in PAGES if f": {p.name}" not in nav] == []


def assert_shows(page: Path, expected: str, output: str) -> None:
    """Every line of a page's output block is a line of what the sample printed."""
    lines = {line.rstrip() for line in output.splitlines()}
    missing = [line for line in expected.splitlines() if line.strip() and line.rstrip() not in lines]
    assert missing == [], f"{page.name}: lines the page shows that the sample did not print"


PYTHON = [(page, i) for page in PAGES for i, (lang, _) in enumerate(blocks(page)) if lang == "python"]


@pytest.mark.parametrize(("page", "index"), PYTHON, ids=[f"{p.stem}-{i}" for p, i in PYTHON])
def test_python_samples_run(page, index, monkeypatch, registry, capsys):
    code = blocks(page)[index][1]
    for (script, name), test in RUN_ELSEWHERE.items():
        if code.strip() == snippet(ROOT / "examples" / script, name):
            assert test.split("::")[1] in (ROOT / test.split("::")[0]).read_text(encoding="utf-8")
            return
    # In this process (the imports are paid once), from the repository root, as a script.
    monkeypatch.chdir(ROOT)
    exec(compile(code, f"{page.name} python block {index}", "exec"), {"__name__": "__main__"})
    following = blocks(page)[index + 1 : index + 2]
    if following and following[0][0] == "text":
        assert_shows(page, following[0][1], capsys.readouterr().out)


BASH = [page for page in PAGES if any(lang == "bash" for lang, _ in blocks(page))]


@pytest.mark.parametrize("page", BASH, ids=[p.stem for p in BASH])
def test_shell_samples_run_and_print_what_the_page_shows(page, tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    prelude = 'set -euo pipefail\nlabelmask() { python -m labelmask "$@"; }\n'
    output = None
    for language, code in blocks(page):
        if language == "bash":
            done = subprocess.run(
                ["bash", "-c", prelude + code],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                env=env(tmp_path),
                timeout=600,
            )
            assert done.returncode == 0, f"{page.name}:\n{code}\n{done.stdout}\n{done.stderr}"
            output = done.stdout + done.stderr
        elif language == "text" and output is not None:
            assert_shows(page, code, output)
            output = None
        else:
            output = None
