"""The cost of a preference pair: labelmask.mask_preference vs TRL's own tokenization of it.

What is measured: CPU time (``time.process_time``) to process the same 200 generated pairs (the
conversations of ``bench_overhead.py``, cut at their last user message: the replies after it are
the chosen completion, a generated reply the rejected one) with

* TRL 1.16's ``DPOTrainer`` tokenization of a row (``_prepare_dataset``'s ``tokenize_fn``: three
  ``apply_chat_template(tokenize=True)`` calls, the prompt with the generation prompt and each
  ``prompt + completion``, then the common-prefix split), written out here as TRL does it; and
* ``labelmask.mask_preference(prompt, chosen, rejected, tokenizer)`` (two whole masks, the
  generation prompt rendered and tokenized once, the split).

The two alternate pair by pair; five runs after a warm-up; the table gives the median ratio and
the median totals. Run from the repository root::

    python benchmarks/bench_preference.py [TEMPLATE ...] [--runs 5]
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
from benchmarks.bench_overhead import ALTERNATE, KWARGS, conversation  # noqa: E402
from benchmarks.bench_speed import sentence  # noqa: E402
from tests.fixtures import load_tokenizer  # noqa: E402

DEFAULT = ("qwen3", "llama3", "gemma3")


def pairs(name: str, n: int = 200) -> list[tuple[list, list, list, list | None]]:
    rng = random.Random(0)
    out = []
    while len(out) < n:
        messages, tools = conversation(rng, rich=name not in ALTERNATE, alternate=name in ALTERNATE)
        cut = max(i for i, m in enumerate(messages) if m["role"] == "user") + 1
        rejected = [{"role": "assistant", "content": sentence(rng, rng.randint(5, 120))}]
        out.append((messages[:cut], messages[cut:], rejected, tools))
    return out


def trl_tokenize(tokenizer, prompt, chosen, rejected, tools, kwargs):
    """TRL 1.16's DPOTrainer tokenize_fn for a conversational row."""

    def ids(messages, **extra):
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, **kwargs, **extra)["input_ids"]

    prompt_ids = ids(prompt, add_generation_prompt=True)
    chosen_ids, rejected_ids = ids(prompt + chosen), ids(prompt + rejected)

    def common(a, b):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    n = min(common(prompt_ids, chosen_ids), common(prompt_ids, rejected_ids))
    return prompt_ids[:n], chosen_ids[n:], rejected_ids[n:]


def usable(tokenizer, pair, kwargs) -> bool:
    prompt, chosen, rejected, tools = pair
    try:
        labelmask.mask_preference(prompt, chosen, rejected, tokenizer, tools=tools, **kwargs)
        trl_tokenize(tokenizer, prompt, chosen, rejected, tools, kwargs)
    except Exception:
        return False
    return True


def run(name: str, runs: int) -> tuple[int, float, float, float]:
    tokenizer = load_tokenizer(name)
    kwargs = KWARGS.get(name, {})
    data = [p for p in pairs(name) if usable(tokenizer, p, kwargs)]
    ratios, ours, theirs = [], [], []
    for _ in range(runs):
        t_trl = t_lm = 0.0
        for k, (prompt, chosen, rejected, tools) in enumerate(data):
            order = (0, 1) if k % 2 else (1, 0)
            for which in order:
                start = time.process_time()
                if which == 0:
                    trl_tokenize(tokenizer, prompt, chosen, rejected, tools, kwargs)
                    t_trl += time.process_time() - start
                else:
                    labelmask.mask_preference(prompt, chosen, rejected, tokenizer, tools=tools, **kwargs)
                    t_lm += time.process_time() - start
        ratios.append(t_lm / t_trl)
        ours.append(t_lm)
        theirs.append(t_trl)
    return len(data), statistics.median(theirs), statistics.median(ours), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("templates", nargs="*", default=list(DEFAULT))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("| template | pairs | TRL tokenize_fn (s) | mask_preference (s) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in args.templates:
        n, t_trl, t_lm, ratio = run(name, args.runs)
        print(f"| {name} | {n} | {t_trl:.3f} | {t_lm:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
