"""The package's structure: each stage imports only the stages below it, and the numpy-only stages
(alignment, policy) never load Jinja or transformers, not even through another module.

Imports are read from the source with ``ast`` (imports inside functions included; ``labelmask``'s
own ``__init__`` aside, which only re-exports), so the test needs no import side effect and sees
what a reader sees.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "labelmask"

# The stages from the bottom up; a module may import only modules listed before it. See
# docs/how-it-works.md for what each does.
ORDER = [
    "errors",
    "_parts",
    "_rendered",  # the rendered text and its spans (no Jinja)
    "_encode",  # ids and offsets; the tokenizer's special tokens
    "_messages",  # normalize
    "_dropped",  # what the render does not show
    "_align",  # locate: runs and segments to tokens
    "_edit",
    "_policy",  # plan and label
    "_render",  # Jinja
    "_guard",  # control tokens, fail-closed check
    "_vision",
    "_derive",  # the fallback
    "_registry",
    "_result",
    "_pipeline",
    "_truncate",
    "_mask",
    "_batch",
    "_turns",
    "_collate",
    "_formats",  # dataset row shapes (ShareGPT, Alpaca, prompt/completion) read as messages
    "_datasets",
    "_preference",  # preference pairs (DPO, KTO): prompt and completions split where the model writes
    "_view",
    "_train",  # the weighted loss and the trainer mixin (torch, transformers imported when used)
    "testing.strategies",
    "testing._checks",
    "testing._append",  # the append-only check of a stock template (multi-turn RL)
    "testing",
    "cli",
    "__main__",
]
# Modules that must not depend, directly or through package modules, on these libraries.
PURE = {"_align": ("jinja2", "transformers"), "_policy": ("jinja2", "transformers")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """``(package modules imported, outside top-level packages imported)`` anywhere in the file."""
    inside, outside = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "labelmask" or not name.startswith("labelmask."):
                if not name.startswith("labelmask"):
                    outside.add(name.split(".")[0])
                continue
            inside.add(name.removeprefix("labelmask."))
    return inside, outside


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Each module's package imports (only names that are modules) and outside imports."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    files.pop("", None)  # labelmask/__init__.py
    edges, outside = {}, {}
    for name, path in files.items():
        inside, outer = imports_of(path)
        edges[name] = {m for m in inside if m in files and m != name}
        outside[name] = outer
    return edges, outside


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def closure(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_module_has_a_stage():
    edges, _ = graph()
    assert set(edges) == set(ORDER), "add the new module to ORDER (and docs/how-it-works.md), or remove the stale name"


def test_no_cycle():
    edges, _ = graph()
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"


def test_stages_import_only_stages_below():
    edges, _ = graph()
    rank = {name: i for i, name in enumerate(ORDER)}
    upward = sorted((m, dep) for m, deps in edges.items() for dep in deps if rank[dep] >= rank[m])
    assert not upward, f"modules importing a stage at or above their own: {upward}"


@pytest.mark.parametrize("module", sorted(PURE))
def test_alignment_and_policy_load_neither_jinja_nor_transformers(module):
    edges, outside = graph()
    reached = closure(edges, module)
    bad = sorted((m, lib) for m in reached for lib in PURE[module] if lib in outside[m])
    assert not bad, f"{module} depends on {bad} through {sorted(reached)}"


def test_the_checks_catch_what_they_look_for():
    """The helpers above find a cycle, an upward edge and a reach into a banned library when there is one."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert closure({"_policy": {"_align"}, "_align": {"_render"}, "_render": set()}, "_policy") == {
        "_policy",
        "_align",
        "_render",
    }
    inside, outside = imports_of(PACKAGE / "_render.py")
    assert "jinja2" in outside and "_rendered" in inside
