"""The Rust tokenizer alone, in threads and in processes: how much of two cores each gets.

``mask_conversations`` tokenizes on the tokenizer's own threads (``Tokenizer.encode_batch``
spreads a chunk's texts over the cores); ``datasets.map(num_proc=2)`` and Ray use processes.
This times, on the bench_speed workloads' rendered texts and with no labelmask code at all:

* ``one``: one text per ``encode_batch`` call, one thread (the floor's tokenization);
* ``threads``: ``encode_batch`` on all texts (the tokenizer's thread pool, every core);
* ``processes``: two forked processes, each encoding every other text one at a time.

Contenders alternate within each run (the order rotating); wall clock, medians over runs
of the per-run ratios to ``one``. On this project's 2-core machine the cores are not steady
(one busy thread sometimes runs twice as fast as each of two), so compare ``threads`` with
``processes`` run by run, not with 2.0.

Run from the repository root::

    python benchmarks/bench_threads.py [--runs 9] [--workload long]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

from bench_speed import MODELS, workloads

_TEXTS: dict[str, object] = {}  # set before the pool forks; the workers read it


def _encode_share(share: int) -> None:
    backend, texts = _TEXTS["backend"], _TEXTS["texts"]
    for text in texts[share::2]:
        backend.encode_batch([text], add_special_tokens=False)


def time_model(backend, texts: list[str], runs: int) -> dict[str, list[float]]:
    """Wall seconds per run of each contender on ``texts``."""
    # Use the thread pool before forking: the tokenizer then runs each child's calls on the calling
    # thread (it disables its pool in a child forked after use), as a datasets worker does.
    backend.encode_batch(texts[:2], add_special_tokens=False)
    _TEXTS.update(backend=backend, texts=texts)
    with multiprocessing.get_context("fork").Pool(2) as pool:

        def one():
            for text in texts:
                backend.encode_batch([text], add_special_tokens=False)

        def threads():
            backend.encode_batch(texts, add_special_tokens=False)

        def processes():
            pool.map(_encode_share, (0, 1), chunksize=1)

        contenders = [("one", one), ("threads", threads), ("processes", processes)]
        for _, f in contenders:
            f()
        times: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for r in range(runs):
            for name, f in contenders[r % 3 :] + contenders[: r % 3]:
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    _TEXTS.clear()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--workload", default="long", choices=("single", "chat8", "tools", "long"))
    args = parser.parse_args()
    for model in MODELS:
        found = workloads(model, 60).get(args.workload)
        if found is None:
            continue
        tokenizer, convs = found
        texts = [tokenizer.apply_chat_template(m, tools=t, tokenize=False) for m, t in convs]
        times = time_model(tokenizer.backend_tokenizer, texts, args.runs)
        speedup = {n: statistics.median(a / b for a, b in zip(times["one"], times[n])) for n in times}
        per_run = statistics.median(a / b for a, b in zip(times["processes"], times["threads"]))
        print(
            f"{model:7s} {args.workload:6s} {len(texts)} texts: threads {speedup['threads']:.2f}x, "
            f"processes {speedup['processes']:.2f}x the one-thread throughput; threads/processes {per_run:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
