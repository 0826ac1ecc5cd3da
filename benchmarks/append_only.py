"""The append-only table of docs/append-only.md: every registered template, checked now.

For each template (``labelmask.templates()``), with the tokenizer fixture of the same name
(tests/fixtures) and the conversations tests/test_invariants.py draws for it (cut to their first
``MAX_MESSAGES`` messages, to keep the search quick), :func:`labelmask.testing.check_append_only`
runs per relevant setting of the template's arguments: once on the text alone, and, where the text
is append-only, once more on the token ids. For a template that writes reasoning, the text is
checked once more on conversations whose every reply carries reasoning (as a model generates in
thinking mode): a template may break only on replies without it. The table is printed as Markdown; ``--write``
replaces the generated part of docs/append-only.md (between its ``append-only table`` markers).
tests/test_append_only.py checks that the table lists exactly the registered templates and that
a handful of its verdicts agree with the check run again.

Run from the repository root (a few minutes on one core)::

    python benchmarks/append_only.py [--write] [--examples 100] [--only NAME ...] [--save FILE | --load FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import labelmask  # noqa: E402
from labelmask.testing import check_append_only  # noqa: E402
from tests.fixtures import load_tokenizer  # noqa: E402
from tests.test_invariants import CASES  # noqa: E402

DOC = ROOT / "docs" / "append-only.md"
BEGIN, END = "<!-- append-only table: begin -->", "<!-- append-only table: end -->"
MAX_MESSAGES = 10
EXAMPLES = 100

# The template arguments that change what a template writes into history, both ways.
THINKING = [{"enable_thinking": True}, {"enable_thinking": False}]
PRESERVE = [{"preserve_thinking": False}, {"preserve_thinking": True}]
TRUNCATE = [{"truncate_history_thinking": True}, {"truncate_history_thinking": False}]
SETTINGS: dict[str, list[dict]] = {
    "qwen3": THINKING,
    "qwen3-trl": THINKING,
    "qwen3.5": THINKING,
    "qwen3.5-nothink": THINKING,
    "qwen3.6": PRESERVE,
    "qwen3.8": PRESERVE,
    "glm-4.5": THINKING,
    "gemma4-v5": PRESERVE,
    "diffusion-gemma": PRESERVE,
    "lfm2.5": PRESERVE,
    "lfm2.5-v2": PRESERVE,
    "lfm2.5-vl": PRESERVE,
    **{
        name: TRUNCATE for name in ("nemotron-3-nano", "nemotron-3-super", "nemotron-3-ultra", "nemotron-3.5-lightning")
    },
}

# Templates that write reasoning: also checked with reasoning in every reply.
REASONING = {
    *SETTINGS,
    "deepseek-r1-distill",
    "deepseek-v3",
    "gpt-oss",
    "gemma4",
    "gemma4-v3",
    "gemma4-v4",
    "muse-glimmer",
}
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")

# Why a template is not append-only, read off the smallest breaking conversations (one line each;
# the verdicts themselves are computed, and tests/test_append_only.py re-checks some).
NEWLINE = (
    "token ids: a reply that starts with a newline merges with the generation prompt's closing newline "
    "(`\\n\\n` is one token)"
)
DROPS = "drops the reasoning of replies before the last user message"
EMPTY_THINK = "the generation prompt writes an empty think block, which a reply with reasoning does not begin with"
PRESERVED = (
    "token ids: a reply without reasoning is written `<think>\\n\\n</think>`, whose `\\n\\n` merges across the "
    "generation prompt's `<think>\\n`"
)
NEMOTRON = "the generation prompt opens `<think>\\n`, but a reply without reasoning is written `<think></think>`"
GEMMA4_CALLS = "writes a reply's text after the results of its tool calls, not where the reply ended before them"
WHY: dict[str | tuple[str, str], str] = {
    **{name: NEWLINE for name in ("chatml", "qwen2.5", "qwen2.5-vl", "qwen3-instruct-2507", "lfm2", "lfm2-v2")},
    "qwen3-vl": NEWLINE + " (it writes one before tool calls)",
    "gemma4-v2": NEWLINE + " (an image part is written after two newlines)",
    "llava-1.5": "token ids: the space after a reply merges with the next `USER:` (`▁` + `US` vs `▁US`)",
    "llava-next": "token ids: the space after `</s>` merges with the next `[INST]` (`▁` + `[` vs `▁[`)",
    "tiny-aya": "moves a later system message into the first turn's Developer Preamble",
    **{
        name: "moves the tools block (`[AVAILABLE_TOOLS]`) to just before the last user message"
        for name in ("mistral-v3", "mistral-v3-tekken", "mistral-v7")
    },
    **{
        name: "the generation prompt opens `<think>\\n`, which no rendered reply begins with (reasoning is "
        "dropped from every reply, the last one too)"
        for name in ("deepseek-r1-distill", "deepseek-v3")
    },
    **{
        name: DROPS + " (`preserve_thinking` keeps it only for replies with tool calls)"
        for name in ("gemma4-v5", "diffusion-gemma")
    },
    **{name: GEMMA4_CALLS for name in ("gemma4", "gemma4-v3", "gemma4-v4")},
    ("glm-4.5", "`enable_thinking=true`"): DROPS + " (written as an empty `<think></think>`)",
    (
        "glm-4.5",
        "`enable_thinking=false`",
    ): "the generation prompt writes an empty `<think></think>`, which a reply with "
    "reasoning does not begin with; " + DROPS,
    "gpt-oss": "a final reply in history is closed by Harmony's end token, not the return token the model generated, "
    "and loses its analysis",
    **{
        (name, f"`preserve_thinking={value}`"): text
        for name in ("lfm2.5", "lfm2.5-v2", "lfm2.5-vl")
        for value, text in (("false", DROPS), ("true", NEWLINE))
    },
    **{
        (name, f"`truncate_history_thinking={value}`"): text
        for name in ("nemotron-3-nano", "nemotron-3-super", "nemotron-3-ultra", "nemotron-3.5-lightning")
        for value, text in (("true", NEMOTRON + "; " + DROPS), ("false", NEMOTRON))
    },
    **{
        (name, f"`enable_thinking={value}`"): text
        for name in ("qwen3", "qwen3-trl", "qwen3.5", "qwen3.5-nothink")
        for value, text in (
            ("true", DROPS + " (and the empty think block of one without)"),
            ("false", EMPTY_THINK + "; " + DROPS),
        )
    },
    **{
        (name, f"`preserve_thinking={value}`"): text
        for name in ("qwen3.6", "qwen3.8")
        for value, text in (("false", DROPS + " (and the empty think block of one without)"), ("true", PRESERVED))
    },
}


def strategy(name: str, reasoned: bool = False):
    """The conversations tests/test_invariants.py draws for ``name``, cut to their first MAX_MESSAGES messages;
    ``reasoned``: every reply carries reasoning (``reasoning_content`` added where it has none)."""

    def cut(drawn: tuple) -> tuple:
        messages, tools = drawn
        messages = messages[:MAX_MESSAGES]
        if reasoned:
            messages = [with_reasoning(m) if m["role"] == "assistant" else m for m in messages]
        return messages, tools

    return CASES[name].strategy.map(cut)


def with_reasoning(message: dict) -> dict:
    content = message.get("content")
    if any(isinstance(message.get(key), str) and message[key].strip() for key in REASONING_KEYS) or (
        isinstance(content, str) and "</think>" in content
    ):
        return message
    return {**message, "reasoning_content": "Let me think."}


def check(name: str, setting: dict, examples: int, tokens: bool, reasoned: bool = False):
    conversations = strategy(name, reasoned)
    return check_append_only(
        load_tokenizer(name), max_examples=examples, conversations=conversations, tokens=tokens, **setting
    )


def verdict(result) -> str:
    if result.append_only:
        return "append-only"
    return "breaks"


def rows(names: list[str], examples: int) -> list[dict]:
    out = []
    for name in names:
        for setting in SETTINGS.get(name, [{}]):
            started = time.perf_counter()
            text = check(name, setting, examples, tokens=False)
            ids = check(name, setting, examples, tokens=True) if text.append_only else None
            # Every reply reasoning: where the template writes reasoning and thinking is not switched off.
            thinking = name in REASONING and setting.get("enable_thinking", True)
            reasoned = check(name, setting, examples, tokens=False, reasoned=True) if thinking else None
            found = text if not text.append_only else ids
            out.append(
                {
                    "template": name,
                    "fixture": name,
                    "setting": setting,
                    "text": verdict(text),
                    "tokens": verdict(ids) if ids is not None else "breaks",
                    "reasoned": verdict(reasoned) if reasoned is not None else "",
                    "reasoned_example": reasoned if reasoned is not None and not reasoned.append_only else None,
                    "checked": text.checked,
                    "skipped": text.skipped,
                    "example": found if not found.append_only else None,
                    "seconds": time.perf_counter() - started,
                }
            )
            row = out[-1]
            also = f", every reply reasoning {row['reasoned']}" if row["reasoned"] else ""
            print(
                f"{name} {setting}: text {row['text']}, tokens {row['tokens']}{also} ({row['seconds']:.0f} s)",
                file=sys.stderr,
            )
    return out


def setting_text(setting: dict) -> str:
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in setting.items()) or "(defaults)"


def table(found: list[dict]) -> str:
    lines = [
        "| template | fixture | setting | text | token ids | text, every reply reasoning | why it breaks |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in found:
        why = WHY.get((row["template"], setting_text(row["setting"])), WHY.get(row["template"], ""))
        if row["text"] == "append-only" and row["tokens"] == "append-only" and row["reasoned"] != "breaks":
            why = ""
        lines.append(
            f"| {row['template']} | `{row['fixture']}` | {setting_text(row['setting'])} | {row['text']} "
            f"| {row['tokens']} | {row['reasoned'] or '—'} | {why} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the table in docs/append-only.md")
    parser.add_argument("--examples", type=int, default=EXAMPLES, help=f"conversations per check (default {EXAMPLES})")
    parser.add_argument("--only", nargs="*", help="these templates only (printed, never written)")
    parser.add_argument("--examples-out", help="also write each smallest breaking conversation as JSON lines here")
    parser.add_argument("--save", help="also save the verdicts as JSON here")
    parser.add_argument("--load", help="format the verdicts saved with --save instead of checking again")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    names = args.only or sorted(labelmask.templates())
    if args.load:
        found = json.loads(Path(args.load).read_text(encoding="utf-8"))
    else:
        found = rows(names, args.examples)
    if args.save:
        keys = ("template", "fixture", "setting", "text", "tokens", "reasoned", "checked", "skipped")
        Path(args.save).write_text(json.dumps([{k: row[k] for k in keys} for row in found], indent=1), encoding="utf-8")
    markdown = table(found)
    print(markdown)
    if args.examples_out and not args.load:
        with open(args.examples_out, "w", encoding="utf-8") as f:
            for row in found:
                for key in ("example", "reasoned_example"):
                    if row[key] is not None:
                        record = {"template": row["template"], "setting": row["setting"], "which": key}
                        f.write(json.dumps({**record, "result": str(row[key])}) + "\n")
    if args.write and not args.only:
        doc = DOC.read_text(encoding="utf-8")
        head, rest = doc.split(BEGIN)
        _, tail = rest.split(END)
        DOC.write_text(f"{head}{BEGIN}\n{markdown}\n{END}{tail}", encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
