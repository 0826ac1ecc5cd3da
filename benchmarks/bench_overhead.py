"""labelmask's cost over the tokenizer's own: mask_conversation vs apply_chat_template.

What is measured: wall time to process the same 200 generated conversations
(1 to 8 exchanges, system prompts, for Qwen3 also reasoning and tool calls) with

* ``tokenizer.apply_chat_template(messages, tools=tools, tokenize=True)``, and
* ``labelmask.mask_conversation(messages, tokenizer, tools=tools)``,

for each shipped template, in one process. The two calls alternate conversation by
conversation, timed with the process CPU clock (``time.process_time``): on a shared
virtual machine, wall-clock runs of a whole batch drift by tens of percent between
runs, while the ratio of the per-conversation sums stays within about 0.02. Five
runs after a warm-up; the table gives the median ratio and the median totals.
``--verify`` also times ``mask_conversation(..., verify=True)`` (which renders the
stock template too and compares). ``--check`` also times ``check="off"`` (the default,
again), ``check="fast"`` and ``check="full"`` one after another on each conversation, and
reports the fail-closed check's cost as the CPU-time ratio of each to ``"off"``, minus one.
``--fallback`` times the fallback instead of the annotation: each template made unrecognisable
(a trailing comment), so ``mask_conversation`` derives and verifies its spans per conversation
(``docs/how-it-works.md``); conversations the fallback refuses are left out like those the stock
template refuses.

Templates: by default the four core fixtures; name others (test setups of ``tests/fixtures``,
e.g. ``gpt-oss glm-4.5``) or pass ``--all`` for every annotated setup. Conversations a stock
template refuses (Gemma's alternation, a family without tool calls) are left out of that
template's set, and the table says how many were timed. Every conversation may carry
reasoning and tool calls; templates that need a date or other argument get it from ``KWARGS``.

Run from the repository root::

    python benchmarks/bench_overhead.py [TEMPLATE ...] [--all] [--verify] [--check] [--fallback] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import labelmask  # noqa: E402
from benchmarks.bench_speed import TOOLS, sentence  # noqa: E402  (the same words and tool)
from tests.fixtures import load_tokenizer  # noqa: E402


def conversation(rng: random.Random, *, rich: bool, alternate: bool) -> tuple[list[dict], list | None]:
    messages: list[dict] = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": sentence(rng, 12)})
    use_tools = rich and rng.random() < 0.4
    for _ in range(rng.randint(1, 8)):
        messages.append({"role": "user", "content": sentence(rng, rng.randint(5, 60))})
        reply: dict = {"role": "assistant", "content": sentence(rng, rng.randint(5, 120))}
        if rich and rng.random() < 0.3:
            reply["reasoning_content"] = sentence(rng, rng.randint(10, 60))
        if use_tools and not alternate and rng.random() < 0.5:
            city = rng.choice(["Paris", "Tokyo", "Lima"])
            reply["tool_calls"] = [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}
            ]
            messages.append(reply)
            messages.append({"role": "tool", "content": sentence(rng, 8)})
            reply = {"role": "assistant", "content": sentence(rng, 20)}
        messages.append(reply)
    if not rich:
        messages = [{**m, "content": m["content"]} for m in messages]
    return messages, TOOLS if use_tools else None


DEFAULT = ("qwen3", "llama3", "gemma3", "llava-1.5")
# Templates that require alternating user/assistant turns (no tool role).
ALTERNATE = {
    "gemma3",
    "gemma",
    "llava-1.5",
    "llava-next",
    "mistral-v1",
    "mistral-v3",
    "mistral-v7",
    "mistral-v3-tekken",
}
# Templates that read only typed content parts.
PARTS = {"llava-1.5", "llava-next", "idefics3", "smolvlm"}
# Arguments a template needs to render the same text in labelmask and transformers (a date).
KWARGS = {
    "llama3.1": {"date_string": "26 Jul 2024"},
    "llama3.2": {"date_string": "26 Jul 2024"},
    "muse-glimmer": {"current_date": "2026-08-01"},
}


def as_parts(messages: list[dict]) -> list[dict]:
    return [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--check", action="store_true", help="also time check='off', 'fast', 'full'")
    parser.add_argument("--fallback", action="store_true", help="time the fallback (templates made unrecognisable)")
    parser.add_argument("templates", nargs="*", help="test setups to time (default: the four core ones)")
    parser.add_argument("--all", action="store_true", help="every annotated test setup")
    args = parser.parse_args()
    names = args.templates or list(DEFAULT)
    if args.all:
        from tests.test_invariants import CASES

        names = sorted(CASES)

    extra = " verify=True ratio |" if args.verify else ""
    extra += ' check="off" (ms) | "fast" cost | "full" cost |' if args.check else ""
    print(f"| template | conversations | tokens | apply_chat_template (ms) | mask_conversation (ms) | ratio |{extra}")
    print(f"|---|---|---|---|---|---|{'---|' * (args.verify + 3 * args.check)}")
    for name in names:
        tokenizer = load_tokenizer(name)
        if args.fallback:
            tokenizer.chat_template += "{# not the registered revision #}"
        kwargs = KWARGS.get(name, {})
        rng = random.Random(0)
        rich = name not in ALTERNATE and name not in DEFAULT or name == "qwen3"
        drawn = [conversation(rng, rich=rich, alternate=name in ALTERNATE) for _ in range(args.n)]
        convs, stock_convs = [], []
        for messages, tools in drawn:  # warm-up: compile templates, fill caches; keep what both render
            stock_messages = as_parts(messages) if name in PARTS else messages
            try:
                tokenizer.apply_chat_template(stock_messages, tools=tools, tokenize=True, **kwargs)
                labelmask.mask_conversation(messages, tokenizer, tools=tools, verify=True, **kwargs)
            except Exception:  # noqa: BLE001  (the stock template refuses it: not this template's data)
                continue
            convs.append((messages, tools))
            stock_convs.append((stock_messages, tools))
        runs: list[dict[str, float]] = []
        for _ in range(args.runs):
            total = {"ref": 0.0, "ours": 0.0, "verify": 0.0, "unchecked": 0.0, "fast": 0.0, "full": 0.0}
            for (messages, tools), (stock_messages, _) in zip(convs, stock_convs):
                t0 = time.process_time()
                tokenizer.apply_chat_template(stock_messages, tools=tools, tokenize=True, **kwargs)
                t1 = time.process_time()
                labelmask.mask_conversation(messages, tokenizer, tools=tools, **kwargs)
                t2 = time.process_time()
                total["ref"] += t1 - t0
                total["ours"] += t2 - t1
                if args.verify:
                    labelmask.mask_conversation(messages, tokenizer, tools=tools, verify=True, **kwargs)
                    total["verify"] += time.process_time() - t2
                if args.check:
                    for mode, key in (("off", "unchecked"), ("fast", "fast"), ("full", "full")):
                        t3 = time.process_time()
                        labelmask.mask_conversation(messages, tokenizer, tools=tools, check=mode, **kwargs)
                        total[key] += time.process_time() - t3
            runs.append(total)
        med = {k: statistics.median(run[k] for run in runs) * 1e3 for k in ("ref", "ours", "verify", "unchecked")}
        ratio = statistics.median(run["ours"] / run["ref"] for run in runs)
        n_tokens = sum(len(labelmask.mask_conversation(m, tokenizer, tools=t, **kwargs)["input_ids"]) for m, t in convs)
        row = f"| {name} | {len(convs)} | {n_tokens} | {med['ref']:.0f} | {med['ours']:.0f} | {ratio:.2f} |"
        if args.verify:
            row += f" {statistics.median(run['verify'] / run['ref'] for run in runs):.2f} |"
        if args.check:
            fast = statistics.median(run["fast"] / run["unchecked"] - 1 for run in runs)
            full = statistics.median(run["full"] / run["unchecked"] - 1 for run in runs)
            row += f" {med['unchecked']:.0f} | {fast:+.1%} | {full:+.1%} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
