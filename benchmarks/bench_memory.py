"""Peak memory while streaming many conversations through labelmask.

What is measured: the process's peak resident set size (``ru_maxrss``) after every
tenth of a streaming pass that masks ``--n`` generated conversations (1 to 8
exchanges, Qwen3's template and tokenizer) with ``mask_conversations`` in chunks of
``--chunk``, keeping only running totals, as a pipeline writing each chunk to disk
would. Memory is flat when the peak stops growing after the first chunks.

Run from the repository root (a few minutes for 100,000 conversations)::

    python benchmarks/bench_memory.py [--n 100000] [--chunk 1000]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import labelmask  # noqa: E402
from benchmarks.bench_speed import chat  # noqa: E402
from tests.fixtures import load_tokenizer  # noqa: E402


def stream(n: int):
    rng = random.Random(0)
    for _ in range(n):
        yield chat(rng, rng.randint(1, 8), (5, 60), (5, 120))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    args = parser.parse_args()

    tokenizer = load_tokenizer("qwen3")
    labelmask.mask_conversation([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], tokenizer)
    print(f"after loading the tokenizer: peak RSS {peak_mib():.0f} MiB")
    print("| conversations masked | tokens | trained | peak RSS (MiB) | elapsed (s) |")
    print("|---|---|---|---|---|")
    conversations = stream(args.n)
    done = tokens = trained = 0
    step = max(args.n // 10, args.chunk)
    next_report = step
    start = time.perf_counter()
    while chunk := list(islice(conversations, args.chunk)):
        for result in labelmask.mask_conversations(chunk, tokenizer, return_tensors="np"):
            tokens += result.report.n_tokens
            trained += result.report.n_trained
        done += len(chunk)
        if done >= next_report or done == args.n:
            elapsed = time.perf_counter() - start
            print(f"| {done:,} | {tokens:,} | {trained:,} | {peak_mib():.0f} | {elapsed:.0f} |", flush=True)
            next_report += step


if __name__ == "__main__":
    main()
