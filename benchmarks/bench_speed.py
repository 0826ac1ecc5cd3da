"""labelmask against the other ways to get assistant-only labels: time per workload, and cost per token.

What is measured. For the Qwen3, Llama 3 and Gemma 3 fixtures, the same generated
conversations go through every contender:

* ``floor``: ``tokenizer.apply_chat_template(messages, tools=tools, tokenize=True)``, no mask;
* ``trl``: transformers' ``apply_chat_template(..., return_dict=True,
  return_assistant_tokens_mask=True)`` with TRL's training template for the model
  (``trl.chat_template_utils.<model>_training_chat_template``, TRL's
  ``{% generation %}``-tagged copy of the stock template);
* ``prefix``: prefix re-rendering as torchtune's Hugging Face tokenizer path does it: for
  each message i, render ``messages[:i + 1]``, tokenize the whole render, keep the tokens
  past the previous render's; ``prefix-text``: the cheaper variant that tokenizes only the
  new text of each render;
* ``marker``: ``apply_chat_template(tokenize=True)``, then the former
  ``DataCollatorForCompletionOnlyLM``'s search for the response and instruction
  templates' token ids;
* ``labelmask``: ``mask_conversation``, one conversation at a time, reading ``input_ids``
  and ``labels`` (lists, as the floor returns its ids);
* ``batched``: ``mask_conversations`` over the whole workload, reading the same.

Workloads: ``single`` (one instruction and its answer), ``chat8`` (8 user/assistant
exchanges), ``tools`` (tool calls and results; Qwen3's template, and for Llama 3 its 3.1
template over the same vocabulary, Llama 3.0's writing no tool syntax; Gemma 3's template
has no tool role, so n/a), ``long`` (about 16k tokens: many long exchanges; 6 one at a
time, 16 batched).

How. One process; a warm-up pass, then ``--runs`` runs. One at a time, each contender is
timed against the floor alone: within a run the two alternate conversation by conversation
(the order flipping), each call timed with the process CPU clock (``time.process_time``),
because the machine is shared and wall-clock totals drift by tens of percent between runs.
Pairs, not all six contenders in turn: on a call of a millisecond, what ran just before
matters (caches), and four of the others run the floor's own code (``apply_chat_template``),
which kept the floor's path warm and every other contender's cold. The floor's time in a
table is the median over all pairs.

The batched engine cannot be interleaved per conversation: it is timed on the whole workload
against the floor run one at a time on the same conversations, and against the floor split
over two processes (every other conversation each, ``multiprocessing``): what a perfectly
parallel job gets from the machine's two cores at that moment. This machine's cores are not
steady: a single thread sometimes runs up to twice as fast as either of two busy ones (the
host's doing; a two-process run of pure Python shows 1.1x to 2.0x from one second to the
next), so the two-process floor is the ceiling any batching could reach in that run. The
three alternate (the order rotating), by wall clock (throughput) and by CPU, in at least 11
such runs; the batched table also gives the batched ratio over only the runs in which two
processes got at least 1.6x (``benchmarks/bench_host.py`` shows the host's two modes).
Tables give medians over runs (of the per-run ratios). A sweep over 1 to 64 exchanges gives
each contender's CPU time per token (the plot).

Run from the repository root (12 to 25 minutes on the project's shared 2-core machine)::

    python benchmarks/bench_speed.py [--runs 5] [--quick]

It writes ``docs/benchmarks.md`` (tables) and ``docs/benchmarks.png`` (plot).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import jinja2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import labelmask  # noqa: E402
from tests.fixtures import load_tokenizer  # noqa: E402

WORDS = (
    "the model answers every question with care and detail about data training tokens "
    "Paris weather 42 résumé naïve 東京 données 🙂 function call result value"
).split()
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
# The generation prompt and the user header, as the marker-search collator is configured for each model.
MARKERS = {
    "qwen3": ("<|im_start|>assistant\n", "<|im_start|>user\n"),
    "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|start_header_id|>user<|end_header_id|>\n\n"),
    "gemma3": ("<start_of_turn>model\n", "<start_of_turn>user\n"),
}
MODELS = ("qwen3", "llama3", "gemma3")
ONE_AT_A_TIME = ("floor", "trl", "prefix", "prefix-text", "marker", "labelmask")
IGNORE = -100


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def chat(rng: random.Random, exchanges: int, user: tuple[int, int], reply: tuple[int, int]) -> list[dict]:
    messages: list[dict] = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": sentence(rng, 12)})
    for _ in range(exchanges):
        messages.append({"role": "user", "content": sentence(rng, rng.randint(*user))})
        messages.append({"role": "assistant", "content": sentence(rng, rng.randint(*reply))})
    return messages


def tool_chat(rng: random.Random) -> list[dict]:
    messages: list[dict] = [{"role": "system", "content": sentence(rng, 12)}]
    for _ in range(rng.randint(1, 4)):
        messages.append({"role": "user", "content": sentence(rng, rng.randint(5, 40))})
        city = rng.choice(["Paris", "Tokyo", "Lima"])
        call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        messages.append({"role": "tool", "content": sentence(rng, rng.randint(5, 20))})
        messages.append({"role": "assistant", "content": sentence(rng, rng.randint(10, 80))})
    return messages


def long_chat(rng: random.Random, tokenizer, target: int = 16_000) -> list[dict]:
    messages = chat(rng, 4, (40, 200), (200, 700))
    while len(tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]) < target:
        messages += chat(rng, 2, (40, 200), (200, 700))[-4:]
    return messages


# Long conversations: the one-at-a-time contenders take the first LONG_ONE_AT_A_TIME (prefix
# re-rendering costs 20-30 times the floor on them); the batched engine all LONG_BATCH, since a
# batch of six 16k-token texts on two cores measures how they divide, not the engine.
LONG_ONE_AT_A_TIME = 6
LONG_BATCH = 16


def workloads(model: str, n: int) -> dict[str, tuple[object, list[tuple[list[dict], list | None]]]]:
    """name -> (tokenizer, [(messages, tools)]); the same conversations for every contender."""
    rng = random.Random(f"{model}-bench")
    tokenizer = load_tokenizer(model)
    out = {
        "single": (tokenizer, [(chat(rng, 1, (5, 60), (20, 200)), None) for _ in range(2 * n)]),
        "chat8": (tokenizer, [(chat(rng, 8, (5, 60), (5, 120)), None) for _ in range(n)]),
        "long": (tokenizer, [(long_chat(rng, tokenizer), None) for _ in range(LONG_BATCH if n >= 30 else 4)]),
    }
    if model == "qwen3":
        out["tools"] = (tokenizer, [(tool_chat(rng), TOOLS) for _ in range(n)])
    elif model == "llama3":
        out["tools"] = (load_tokenizer("llama3.1"), [(tool_chat(rng), TOOLS) for _ in range(n)])
    return out


class Contenders:
    """The one-at-a-time contenders for one tokenizer, each a function of (messages, tools)."""

    def __init__(self, model: str, tokenizer) -> None:
        import trl.chat_template_utils as trl_templates

        self.tokenizer = tokenizer
        # TRL's training template for the model's stock template (Llama 3.1's, used for tools, has none).
        self.training_template = getattr(trl_templates, f"{model}_training_chat_template")
        response, instruction = MARKERS[model]
        self.response_ids = tokenizer.encode(response, add_special_tokens=False)
        self.instruction_ids = tokenizer.encode(instruction, add_special_tokens=False)

    def floor(self, messages, tools):
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=True)

    def trl(self, messages, tools):
        out = self.tokenizer.apply_chat_template(
            messages,
            tools=tools,
            chat_template=self.training_template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        mask = np.asarray(out["assistant_masks"], dtype=bool)
        return np.where(mask, np.asarray(out["input_ids"]), IGNORE)

    def render_prefix(self, messages, tools):
        try:
            return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
        except jinja2.TemplateError:
            # Llama 3.1 puts tools in the first user message and refuses a prefix without one:
            # that message's tokens come with the next prefix.
            return None

    def prefix(self, messages, tools):
        # torchtune HuggingFaceModelTokenizer.tokenize_messages: render each prefix, tokenize it whole,
        # keep the tokens past the previous prefix's; they belong to message i.
        ids: list[int] = []
        labels: list[int] = []
        previous: list[int] = []
        for i, message in enumerate(messages):
            text = self.render_prefix(messages[: i + 1], tools)
            if text is None:
                continue
            current = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            delta = current[len(previous) :]
            previous = current
            ids += delta
            labels += delta if message["role"] == "assistant" else [IGNORE] * len(delta)
        return ids, labels

    def prefix_text(self, messages, tools):
        # The same, tokenizing only the text each prefix render adds.
        ids: list[int] = []
        labels: list[int] = []
        previous = ""
        for i, message in enumerate(messages):
            text = self.render_prefix(messages[: i + 1], tools)
            if text is None:
                continue
            delta = self.tokenizer(text[len(previous) :], add_special_tokens=False)["input_ids"]
            previous = text
            ids += delta
            labels += delta if message["role"] == "assistant" else [IGNORE] * len(delta)
        return ids, labels

    def marker(self, messages, tools):
        # DataCollatorForCompletionOnlyLM.torch_call (TRL <= 0.19) with instruction_template, one row.
        ids = np.asarray(self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=True)["input_ids"])
        labels = ids.copy()
        response, human = self.response_ids, self.instruction_ids
        starts = np.where(labels == response[0])[0]
        response_idxs = [i + len(response) for i in starts if response == labels[i : i + len(response)].tolist()]
        human_idxs = [i for i in np.where(labels == human[0])[0] if human == labels[i : i + len(human)].tolist()]
        if human_idxs and response_idxs and human_idxs[0] > response_idxs[0]:
            human_idxs = [0] + human_idxs
        for k, (start, end) in enumerate(zip(human_idxs, response_idxs)):
            labels[start if k else 0 : end] = IGNORE
        if len(response_idxs) < len(human_idxs):
            labels[human_idxs[-1] :] = IGNORE
        return ids, labels

    def labelmask(self, messages, tools):
        # Read what a trainer reads (the floor returns its ids as a list too).
        out = labelmask.mask_conversation(messages, self.tokenizer, tools=tools)
        return out["input_ids"], out["labels"]

    def call(self, name: str):
        return getattr(self, name.replace("-", "_"))


def time_one_at_a_time(contenders: Contenders, names, convs, runs: int) -> dict[str, list[float]]:
    """CPU seconds per run: each contender against the floor, the two alternating per conversation.

    Returns ``{name: [seconds per run]}`` and, for each contender, ``{"floor/" + name: [...]}``:
    the floor's time in the same runs, the denominator of that contender's ratio.
    """
    calls = [(name, contenders.call(name)) for name in names]
    for messages, tools in convs:  # warm-up: compile templates, fill caches
        for _, call in calls:
            call(messages, tools)
    floor = contenders.call("floor")
    totals: dict[str, list[float]] = {}
    clock = time.process_time
    for name, call in calls:
        if name == "floor":
            continue
        pair = (("floor/" + name, floor), (name, call))
        for key, _ in pair:
            totals[key] = []
        for _ in range(runs):
            run = dict.fromkeys(totals, 0.0)
            for j, (messages, tools) in enumerate(convs):
                for key, f in pair if j % 2 == 0 else pair[::-1]:
                    t0 = clock()
                    f(messages, tools)
                    run[key] += clock() - t0
            for key, _ in pair:
                totals[key].append(run[key])
    totals["floor"] = [statistics.median(t) for t in zip(*(totals["floor/" + n] for n in names if n != "floor"))]
    return totals


def ratios_to_floor(totals: dict[str, list[float]], names) -> dict[str, float]:
    """Each contender's median over runs of its time over the floor's in the same runs."""
    out = {"floor": 1.0}
    for name in names:
        if name != "floor":
            out[name] = statistics.median(a / b for a, b in zip(totals[name], totals["floor/" + name]))
    return out


# Conversations the two-process floor's workers read: set before the pool forks, inherited by it.
_FORKED: dict[str, object] = {}


def _floor_share(share: int) -> None:
    tokenizer, convs = _FORKED["tokenizer"], _FORKED["convs"]
    for m, t in convs[share::2]:
        tokenizer.apply_chat_template(m, tools=t, tokenize=True)


def time_batched(contenders: Contenders, convs, runs: int) -> dict[str, list[float]]:
    """Wall and CPU seconds per run: the floor one at a time; the floor split over two processes (every
    other conversation each: what the machine's two cores give a perfectly parallel job, at that moment);
    and mask_conversations on the whole workload. The three alternate, the order rotating."""
    import multiprocessing

    tokenizer = contenders.tokenizer
    messages = [m for m, _ in convs]
    tools = [t for _, t in convs]
    labelmask.mask_conversations(messages, tokenizer, tools=tools)  # warm-up
    out: dict[str, list[float]] = {f"{n}_{k}": [] for n in ("floor", "floor2", "batched") for k in ("wall", "cpu")}

    def floor():
        for m, t in convs:
            tokenizer.apply_chat_template(m, tools=t, tokenize=True)

    def batched():
        for out in labelmask.mask_conversations(messages, tokenizer, tools=tools):
            out["input_ids"], out["labels"]

    _FORKED.update(tokenizer=tokenizer, convs=convs)
    with multiprocessing.get_context("fork").Pool(2) as pool:

        def floor2():
            pool.map(_floor_share, (0, 1), chunksize=1)

        floor2()  # warm-up: each worker renders and tokenizes once before timing
        order = [("floor", floor), ("floor2", floor2), ("batched", batched)]
        for r in range(runs):
            for name, f in order[r % 3 :] + order[: r % 3]:
                w, c = time.perf_counter(), time.process_time()
                f()
                out[f"{name}_cpu"].append(time.process_time() - c)
                out[f"{name}_wall"].append(time.perf_counter() - w)
    _FORKED.clear()
    return out


def sweep(model: str, runs: int, n: int, turns=(1, 2, 4, 8, 16, 32, 64)) -> dict[str, dict[int, float]]:
    """CPU microseconds per token, per contender, as conversations grow from 1 to 64 exchanges."""
    tokenizer = load_tokenizer(model)
    contenders = Contenders(model, tokenizer)
    names = ("floor", "trl", "prefix", "prefix-text", "marker", "labelmask")
    out: dict[str, dict[int, float]] = {name: {} for name in names}
    rng = random.Random(f"{model}-sweep")
    for k in turns:
        convs = [(chat(rng, k, (20, 40), (40, 80)), None) for _ in range(n)]
        tokens = sum(len(contenders.floor(m, t)["input_ids"]) for m, t in convs)
        totals = time_one_at_a_time(contenders, names, convs, runs)
        # Each contender's ratio to the floor in its own runs, times the floor's median: drift between pairs cancels.
        floor = statistics.median(totals["floor"]) / tokens * 1e6
        for name, ratio in ratios_to_floor(totals, names).items():
            out[name][k] = ratio * floor
        print(f"  sweep {model} {k:>2} exchanges: " + ", ".join(f"{m} {out[m][k]:.2f}" for m in names), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=60, help="conversations per workload (single: twice as many)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few conversations, 2 runs, no files")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.n = 2, 10

    rows = []
    batch_rows = []
    for model in MODELS:
        for workload, (tokenizer, convs) in workloads(model, args.n).items():
            contenders = Contenders(model, tokenizer)
            names = [n for n in ONE_AT_A_TIME if n != "trl" or workload != "tools" or model != "llama3"]
            batch_convs = convs
            if workload == "long":
                convs = convs[:LONG_ONE_AT_A_TIME]
            totals = time_one_at_a_time(contenders, names, convs, args.runs)
            tokens = sum(len(contenders.floor(m, t)["input_ids"]) for m, t in convs)
            floor = statistics.median(totals["floor"])
            ratios = ratios_to_floor(totals, names)
            row = {"model": model, "workload": workload, "n": len(convs), "tokens": tokens, "floor_ms": floor * 1e3}
            row.update({n: ratios[n] for n in names})
            rows.append(row)
            print(
                f"{model:7s} {workload:7s} n={len(convs):4d} tokens={tokens:8d} floor={floor * 1e3:8.1f} ms  "
                + "  ".join(f"{n}={ratios[n]:.2f}x" for n in names),
                flush=True,
            )
            # A batched run is short (a tenth of a second to a second) and the machine is shared:
            # more pairs than the one-at-a-time runs, for a steadier median.
            timed = time_batched(contenders, batch_convs, max(args.runs, 11))
            wall = statistics.median(a / b for a, b in zip(timed["floor_wall"], timed["batched_wall"]))
            ceiling = statistics.median(a / b for a, b in zip(timed["floor_wall"], timed["floor2_wall"]))
            of_ceiling = statistics.median(a / b for a, b in zip(timed["floor2_wall"], timed["batched_wall"]))
            cpu = statistics.median(a / b for a, b in zip(timed["floor_cpu"], timed["batched_cpu"]))
            # The runs in which the machine gave a perfectly parallel job at least 1.6x (its two cores, not
            # one fast lone core: benchmarks/bench_host.py): the batched engine's ratio in those runs alone.
            steady = [
                f / b
                for f, f2, b in zip(timed["floor_wall"], timed["floor2_wall"], timed["batched_wall"])
                if f / f2 >= 1.6
            ]
            batch_rows.append(
                {
                    "model": model,
                    "workload": workload,
                    "n": len(batch_convs),
                    "wall": wall,
                    "ceiling": ceiling,
                    "of_ceiling": of_ceiling,
                    "cpu": cpu,
                    "steady": (statistics.median(steady) if steady else None, len(steady), len(timed["floor_wall"])),
                    "timed": timed,
                }
            )
            print(
                f"{model:7s} {workload:7s} batched throughput vs floor: wall {wall:.2f}x, cpu {cpu:.2f}x; "
                f"floor on two processes {ceiling:.2f}x (batched {of_ceiling:.2f} of it); "
                f"in the {len(steady)} runs where two processes got >= 1.6x: batched "
                + (f"{statistics.median(steady):.2f}x" if steady else "n/a"),
                flush=True,
            )

    sweeps = {model: sweep(model, runs=max(2, args.runs - 2), n=3 if args.quick else 8) for model in MODELS}
    if not args.quick:
        write_docs(rows, batch_rows, sweeps, args)


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def write_docs(rows, batch_rows, sweeps, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "# Benchmarks",
        "",
        "Written by `python benchmarks/bench_speed.py` (its docstring says exactly what is measured).",
        f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores shared with other work; "
        f"Python {platform.python_version()}, transformers {__import__('transformers').__version__}, "
        f"tokenizers {__import__('tokenizers').__version__}, TRL {__import__('trl').__version__}. "
        f"Medians of {args.runs} runs in one process.",
        "",
        "## One conversation at a time",
        "",
        "CPU time relative to the floor (`apply_chat_template(tokenize=True)`, no mask; 1.00 = the floor's time), "
        "each contender timed alternating with the floor alone, conversation by conversation.",
        "",
        "| model | workload | conversations | tokens | floor (ms) | labelmask | trl | prefix | prefix-text | marker |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['workload']} | {r['n']} | {r['tokens']:,} | {r['floor_ms']:.0f} | "
            f"**{fmt(r['labelmask'])}** | {fmt(r.get('trl'))} | {fmt(r['prefix'])} | {fmt(r['prefix-text'])} | "
            f"{fmt(r['marker'])} |"
        )
    lines += [
        "",
        "`trl` is transformers' `return_assistant_tokens_mask=True` with TRL's training template; for the "
        "Llama 3 tool workload (Llama 3.1's template) TRL has none, hence n/a. Gemma 3's template has no tool "
        "role, so it has no tool workload.",
        "",
        "## Batched",
        "",
        "`mask_conversations` on the whole workload against the floor called one conversation at a time: "
        "throughput ratio (higher is better) by wall clock, and by CPU time; and, in the same runs, the floor "
        "split over two processes: the most this machine's two cores gave a perfectly parallel job "
        "(the batched engine's throughput over it is the next column). The last column keeps only the runs "
        "in which two processes got at least 1.6x the floor (how many of all): in the others a lone thread ran "
        "in the host's fast mode, which two busy ones rarely get (`python benchmarks/bench_host.py` shows it "
        "with a pure-Python loop), and no parallel job could reach 1.6x.",
        "",
        "| model | workload | conversations | batched vs floor (wall clock) | floor on two processes vs floor "
        "| batched vs two processes | CPU vs floor | batched vs floor, runs where two processes got 1.6x |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in batch_rows:
        median, k, n = b["steady"]
        lines.append(
            f"| {b['model']} | {b['workload']} | {b['n']} | **{b['wall']:.2f}x** | {b['ceiling']:.2f}x | "
            f"{b['of_ceiling']:.2f} | {b['cpu']:.2f}x | {fmt(median)}{'x' if k else ''} ({k}/{n}) |"
        )
    lines += [
        "",
        "## Cost per token as conversations grow",
        "",
        "CPU microseconds per token (the floor's token count), conversations of 1 to 64 exchanges "
        "(user 20-40 words, reply 40-80 words), 8 conversations per point.",
        "",
    ]
    for model, data in sweeps.items():
        turns = sorted(data["floor"])
        lines += [f"**{model}**", "", "| contender | " + " | ".join(map(str, turns)) + " |"]
        lines.append("|---|" + "---|" * len(turns))
        for name, points in data.items():
            lines.append(f"| {name} | " + " | ".join(f"{points[k]:.2f}" for k in turns) + " |")
        lines.append("")
    lines.append("![cost per token and relative time](benchmarks.png)")
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    fig, axes = plt.subplots(1, len(sweeps), figsize=(5 * len(sweeps), 4), sharey=True)
    for ax, (model, data) in zip(axes, sweeps.items()):
        for name, points in data.items():
            turns = sorted(points)
            style = {"linewidth": 2.5, "color": "black"} if name == "labelmask" else {}
            ax.plot(turns, [points[k] for k in turns], marker="o", label=name, **style)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(model)
        ax.set_xlabel("exchanges per conversation")
    axes[0].set_ylabel("CPU µs per token")
    axes[0].legend(fontsize=8)
    fig.suptitle("Cost per token, one conversation at a time (lower is better)")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "benchmarks.png", dpi=110)


if __name__ == "__main__":
    main()
