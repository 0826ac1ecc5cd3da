"""The render budget's cost: one render with it against Jinja's own ``Template.render`` without it.

Each render of a chat template runs under a :class:`labelmask.RenderBudget` (time checked every 64
outputs and every 1,024 ``range`` steps, characters counted, ``*`` and ``**`` checked). Measured here
on the render alone, where the cost is (a render is a fraction of ``mask_conversation``'s time):
the stock and the annotated template of each setup render the same 200 generated conversations
(``bench_overhead.py``'s), once with ``Template.render`` and once with labelmask's budgeted render,
which one first alternating conversation by conversation, timed with the process CPU clock. Five runs; the table
gives the median totals and the median ratio with its range.

Run from the repository root::

    python benchmarks/bench_budget.py [TEMPLATE ...]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_overhead import ALTERNATE, DEFAULT, PARTS, as_parts, conversation  # noqa: E402
from labelmask._messages import normalize_conversation  # noqa: E402
from labelmask._registry import REGISTRY  # noqa: E402
from labelmask._render import _render, compile_template  # noqa: E402
from tests.fixtures import load_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("templates", nargs="*", help="test setups (default: the four core ones)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    print("| template | Template.render (ms) | budgeted (ms) | ratio | range |")
    print("|---|---|---|---|---|")
    for name in args.templates or list(DEFAULT):
        tokenizer = load_tokenizer(name)
        annotated = REGISTRY.find(tokenizer.chat_template)
        compiled = [
            compile_template(tokenizer.chat_template, mode="stock", name=name),
            compile_template(annotated.source, mode="annotate", name=name),
        ]
        rng = random.Random(0)
        rich = name not in ALTERNATE and name not in DEFAULT or name == "qwen3"
        variables = []
        for _ in range(args.n):
            messages, tools = conversation(rng, rich=rich, alternate=name in ALTERNATE)
            messages = as_parts(messages) if name in PARTS else messages
            try:
                conv = normalize_conversation(messages, tools, content_format=annotated.content_format)
            except Exception:  # noqa: BLE001  (not this template's data)
                continue
            variables.append(
                {
                    **tokenizer.special_tokens_map,
                    "messages": conv.messages,
                    "_labelmask_messages": conv.messages,
                    "tools": conv.tools,
                    "add_generation_prompt": False,
                }
            )
        runs = []
        for _ in range(args.runs):
            plain = budgeted = 0.0
            for k, v in enumerate(variables):
                for template in compiled:
                    # Which goes first alternates: the second render of the same input finds warm caches.
                    order = (0, 1) if k % 2 == 0 else (1, 0)
                    spent = [0.0, 0.0]
                    try:
                        for i in order:
                            t0 = time.process_time()
                            if i == 0:
                                template.render(**v)
                            else:
                                _render(template, v, name)
                            spent[i] = time.process_time() - t0
                    except Exception:  # noqa: BLE001  (the template refuses it: both would)
                        continue
                    plain += spent[0]
                    budgeted += spent[1]
            runs.append((plain, budgeted))
        ratios = [b / a for a, b in runs]
        print(
            f"| {name} | {statistics.median(a for a, _ in runs) * 1000:.0f} "
            f"| {statistics.median(b for _, b in runs) * 1000:.0f} | {statistics.median(ratios):.3f} "
            f"| {min(ratios):.3f}-{max(ratios):.3f} |"
        )


if __name__ == "__main__":
    main()
