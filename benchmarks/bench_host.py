"""How much of two cores this machine gives, with no labelmask and no tokenizer: a pure-Python loop.

Each try times the same loop in one process alone, then in two processes at once. On a
machine with two steady cores the two take as long each as the one alone, so two
processes do twice the work in the same time. On the project's shared machine a lone
process sometimes runs about 1.7x faster than usual (the host's doing: an idle sibling
thread or a frequency boost), and two busy ones almost never do; in those stretches a
perfectly parallel job gets little more than one core's throughput over a single thread.
bench_speed.py's batched table measures the same thing in place, with the floor split
over two processes; this shows it with nothing else in the way.

Run from the repository root (about a minute)::

    python benchmarks/bench_host.py [--tries 40]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

LOOP = 2_000_000


def spin(n: int = LOOP) -> float:
    """Seconds for ``n`` iterations of a pure-Python loop."""
    t0 = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=40)
    args = parser.parse_args()
    alone: list[float] = []
    each: list[float] = []
    ceilings: list[float] = []
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(spin, [1000, 1000])
        for _ in range(args.tries):
            one = spin()
            t0 = time.perf_counter()
            pair = pool.map(spin, [LOOP, LOOP], chunksize=1)
            both = time.perf_counter() - t0
            alone.append(one)
            each.extend(pair)
            ceilings.append(2 * one / both)
    fast = min(alone) * 1.25  # within a quarter of the fastest lone run
    print(f"one process alone, s:    {' '.join(f'{x:.3f}' for x in sorted(alone))}")
    print(f"each of two at once, s:  {' '.join(f'{x:.3f}' for x in sorted(each)[::2])}")
    print(
        f"lone runs within 25% of the fastest: {sum(x <= fast for x in alone)}/{len(alone)}; "
        f"runs of two: {sum(x <= fast for x in each)}/{len(each)}"
    )
    q = statistics.quantiles(ceilings, n=10)
    print(
        f"two processes' throughput over one alone, per try: median {statistics.median(ceilings):.2f}x, "
        f"10th-90th percentile {q[0]:.2f}x-{q[-1]:.2f}x, below 1.6x in {sum(c < 1.6 for c in ceilings)}/{len(ceilings)}"
    )


if __name__ == "__main__":
    main()
