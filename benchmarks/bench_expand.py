"""Whole conversations vs one example per exchange (``expand="turns"``), on a reasoning dataset.

Templates such as Qwen3's write the reasoning of the last exchange only, so a conversation masked
whole trains the last reply's reasoning alone; ``mask_dataset(..., expand="turns")`` masks each
exchange as the last turn of its own example, which trains every trace once and renders and
tokenizes the history again per exchange. This prints both sides for one dataset: examples, tokens
rendered (what a trainer computes on), tokens trained, reasoning tokens trained, how many of the
dataset's reasoning traces are trained at least once, and the masking time (process CPU).

The dataset is a JSONL file of conversations in LLaMA-Factory's typed-parts format (content parts
``text``, ``reasoning``, ``tool_call``, as in its ``reason_tool_use_demo_50.jsonl``) or in OpenAI's
(``reasoning_content``, ``tool_calls``). Nothing is downloaded; the tokenizer is a test setup.

Run from the repository root::

    python benchmarks/bench_expand.py PATH.jsonl [--template qwen3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import labelmask  # noqa: E402
from labelmask import Part  # noqa: E402
from tests.fixtures import load_tokenizer  # noqa: E402


def openai_messages(messages: list[dict]) -> list[dict]:
    """LLaMA-Factory's typed parts (``{"type": ..., "value": ...}``) as OpenAI messages; others as they are."""
    out = []
    for m in messages:
        content = m.get("content")
        if not (isinstance(content, list) and content and "value" in content[0]):
            out.append(m)
            continue
        message: dict = {"role": m["role"]}
        texts = [p["value"] for p in content if p["type"] == "text"]
        reasoning = [p["value"] for p in content if p["type"] == "reasoning"]
        calls = [json.loads(p["value"]) for p in content if p["type"] == "tool_call"]
        message["content"] = "\n".join(texts)
        if reasoning:
            message["reasoning_content"] = "\n".join(reasoning)
        if calls:
            message["tool_calls"] = [
                {"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}}
                for c in calls
            ]
        out.append(message)
    return out


def tally(outs: list, traces: list[str]) -> dict:
    n_tokens = n_trained = n_reasoning = 0
    seen = set()
    for out in outs:
        labels = np.asarray(out["labels"])
        trained = labels != labelmask.IGNORE_INDEX
        n_tokens += len(labels)
        n_trained += int(trained.sum())
        n_reasoning += int((trained & (np.asarray(out["part"]) == Part.REASONING)).sum())
        covered = np.zeros(len(out.text) + 1, dtype=bool)
        for a, b in out.offsets[trained]:
            covered[a:b] = True
        for k, trace in enumerate(traces):
            at = out.text.find(trace.strip())
            if at >= 0 and covered[at : at + len(trace.strip())].all():
                seen.add(k)
    return {
        "examples": len(outs),
        "tokens": n_tokens,
        "trained": n_trained,
        "reasoning": n_reasoning,
        "traces": len(seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--template", default="qwen3", help="test setup of tests/fixtures (default qwen3)")
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.template)
    rows = [json.loads(line) for line in args.path.read_text().splitlines() if line.strip()]
    conversations = []
    for row in rows:
        tools = row.get("tools")
        tools = json.loads(tools) if isinstance(tools, str) else tools
        conversations.append((openai_messages(row["messages"]), tools or None))
    traces = [[m.get("reasoning_content") or "" for m in messages] for messages, _ in conversations]
    n_traces = sum(1 for t in traces for r in t if r.strip())
    results = {}
    warnings.simplefilter("ignore", labelmask.NotRenderedWarning)
    for mode in ("whole", "turns"):
        totals = {"examples": 0, "tokens": 0, "trained": 0, "reasoning": 0, "traces": 0, "refused": 0}
        seconds = 0.0
        for (messages, tools), trace in zip(conversations, traces):
            start = time.process_time()
            try:
                if mode == "whole":
                    got = [labelmask.mask_conversation(messages, tokenizer, tools=tools, return_tensors="np")]
                else:
                    got = labelmask.mask_turns(messages, tokenizer, tools=tools, return_tensors="np")
            except labelmask.LabelmaskError:
                totals["refused"] += 1
                continue
            finally:
                seconds += time.process_time() - start
            for key, n in tally(got, [r for r in trace if r.strip()]).items():
                totals[key] += n
        results[mode] = {**totals, "seconds": seconds}
    print(f"{args.path.name}: {len(rows)} conversations, {n_traces} reasoning traces, template {args.template}\n")
    print("| | examples | tokens rendered | tokens trained | reasoning tokens trained | traces trained | CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, label in (("whole", "whole conversations"), ("turns", "expand='turns'")):
        r = results[mode]
        print(
            f"| {label} | {r['examples']} | {r['tokens']:,} | {r['trained']:,} | {r['reasoning']:,} | "
            f"{r['traces']}/{n_traces} | {r['seconds']:.2f} |"
        )
    w, t = results["whole"], results["turns"]
    if w["refused"] or t["refused"]:
        print(f"\nrefused (a labelmask error): {w['refused']} whole, {t['refused']} expanded")
    print(
        f"\nexpand='turns': {t['tokens'] / w['tokens']:.2f}x the tokens rendered, "
        f"{t['trained'] / w['trained']:.2f}x the tokens trained, "
        f"{t['reasoning'] / max(1, w['reasoning']):.2f}x the reasoning tokens trained"
    )


if __name__ == "__main__":
    main()
