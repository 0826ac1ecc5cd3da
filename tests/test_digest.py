"""Outputs pinned by digest: a fixed corpus masked on every template under four policies.

The digests were recorded on commit 2160430, before the package was restructured (issue 16),
and the restructuring must not change one id, label, weight, provenance code, offset, span,
report count or error. A change of behaviour that is meant shows up here first: record the new
digest in the same commit and say in its message why the outputs changed.

The corpus: the shipped examples (``examples/conversation.json``, ``examples/dataset.jsonl``)
and 24 conversations drawn from a seeded generator per template (system prompts, 1 to 4
exchanges, reasoning, tool calls with their results, look-alikes of control tokens, non-ASCII
text). A conversation a template refuses contributes its error's class and message.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

import labelmask
from tests.fixtures import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent

POLICIES = {
    "default": labelmask.Policy(),
    "last-turn": labelmask.Policy(last_turn_only=True),
    "user-and-assistant, drop straddle": labelmask.Policy(roles=("user", "assistant"), straddle="drop"),
    "content only": labelmask.Policy(reasoning=False, tool_calls=False, eot=False, on_empty="keep"),
}

WORDS = ["the", "weather", "Paris", "é", "日本語", "<|im_end|>", "ASSISTANT:", "[INST]", "\n", "  ", "🙂", "x"]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).strip() or "ok"


def drawn(seed: int, *, tools: bool, alternate: bool) -> tuple[list[dict], list | None]:
    """One conversation from a seeded generator (no Hypothesis: the corpus must be the same every run)."""
    rng = random.Random(seed)
    messages: list[dict] = []
    if not alternate and rng.random() < 0.5:
        messages.append({"role": "system", "content": _text(rng, 6)})
    use_tools = tools and rng.random() < 0.5
    for _ in range(rng.randint(1, 4)):
        messages.append({"role": "user", "content": _text(rng, rng.randint(1, 12))})
        reply: dict = {"role": "assistant", "content": _text(rng, rng.randint(1, 20))}
        if tools and rng.random() < 0.3:
            reply["reasoning_content"] = _text(rng, 8)
        if use_tools and rng.random() < 0.5:
            call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": _text(rng, 1)}}}
            messages.append({**reply, "content": "", "tool_calls": [call]})
            messages.append({"role": "tool", "content": _text(rng, 4)})
            reply = {"role": "assistant", "content": _text(rng, 6)}
        messages.append(reply)
    return messages, (TOOLS if use_tools else None)


def corpus(name: str) -> list[tuple[list[dict], list | None]]:
    shipped = [(json.loads((ROOT / "examples" / "conversation.json").read_text()), TOOLS)]
    for line in (ROOT / "examples" / "dataset.jsonl").read_text().splitlines():
        row = json.loads(line)
        shipped.append((row["messages"], row.get("tools")))
    alternate = name in ALTERNATE
    tools = name in TOOL_TEMPLATES
    return shipped + [drawn(1000 * k + len(name), tools=tools, alternate=alternate) for k in range(24)]


# The templates annotated when the digests were recorded, by test setup (tests/fixtures), and the
# digest of each one's outputs. Re-recorded on purpose once: chatml, idefics3, llava-1.5, llama3, phi3,
# phi3.5, qwen2.5-vl and smolvlm write no tool calls, and a trained reply carrying some now raises
# NotRenderedError (issue 18). With Policy(on_dropped_tool_calls="train") added to every policy below,
# all eight gave the digests recorded before, so nothing else changed.
# Re-recorded once more (issue 19): chatml, mistral-v1, mistral-v3, mistral-v3-tekken, mistral-v7,
# qwen2.5, qwen2.5-vl, qwen3, qwen3-instruct-2507, qwen3-trl and smolvlm. The corpus writes "<|im_end|>"
# and "[INST]" in assistant text, which were trained and now are not (a control token the data wrote
# is never trained), and Mistral v1's alternation error now names the
# message ("rejected the conversation at message 2"). Checked sample by sample against d723347: with
# the labels of special tokens inside a message's content, reasoning or tool calls whose string the
# message holds set to -100 on the old outputs, every digest equals the new one but mistral-v1's,
# whose 8 differing samples differ only in that error message.
DIGESTS = {
    "chatml": "b5b9a6c0ca15043fff14732b4b4badffbc47a4e2cbe0ca302f56e47017057af1",
    "gemma": "b090f55ab5307b730044ae078618a4bb55a53db51009a4b1cb58b762d4422bfc",
    "gemma3": "8df4dcaec930fabe14bff15ab82b861f581462694414c8036555d61b33b11fd7",
    "idefics3": "9caddd39be0c5a53d5e18e51bbe413baa4e65bb88446210a5708f8eb56dd3e4a",
    "llama3": "e995842d2c83e413f165765f0a906b54a0834942ac51c0aa7bff231f4d08b1f8",
    "llama3.1": "333453b0bc947848cbdb596450d2dde74bc1578f436e6dd65a9e5b3e6b97a9dd",
    "llama3.1-builtin": "927374698ac6b63b242eb71eb9fc8ecd40d723f51c3adbfa3522c1b81a97bad7",
    "llama3.2": "1a4b826f114eca0d2180789ae199a68a9ba78d3027ffe56473c259efa7688d5a",
    "llava-1.5": "c23956c813dfa2f54b1d6ea9bdfcb0907847475697c500281aa7b5a57fcf1565",
    "llava-next": "5000d9b84b723b146043a436c7c26d5c83f3386c018fe8a0f7ec11c44d2ef3c9",
    "mistral-v1": "617fe334742b5b92a4634c8a564a2a53f24d969ae019f2a3c2abf4eef0ce627c",
    "mistral-v3": "463c00c5b7ff6812c6c4cb7db55ef50f3ed2d2e353cf1412cffe812a7596cad9",
    "mistral-v3-tekken": "1c18f4c0a4b29c4e48a37d1a73be231d8ca64cb79f488ee32e1d9ff387524649",
    "mistral-v7": "2449806a5daed15b4e54830fc68c53e27459e885790b39cd6bea4a035acacddb",
    "phi3": "ceea31615f25c2f84f107f1754e338d21ae19cbd82c416ca6513ea6d2590934d",
    "phi3.5": "67c667fc6afb26962ead1ee81bdb63fa00fd019314463e5cc8183adffeef3b62",
    "qwen2.5": "4d1eeb331586470cf0a0864c1be46b8bc755f6d221c9a26e00f727c1ad5b8268",
    "qwen2.5-vl": "c9b31f3588aa29c6fd5548f8072d4ae4df0df456649273f33bb7b7497f3b5f8a",
    "qwen3": "6702536116f42442adb8f3506242813e0ba6e6ae7eb2188e2f28f773cb056423",
    "qwen3-instruct-2507": "c88e8a73f3b96c70b3e7853cfbff7cd35248a0c6943e22052784a8bebfbd70f5",
    "qwen3-trl": "293bc7e373280bad6d95bf7b6ead5a4c260ac0affb417a032aa06a8ffaeaf600",
    "smolvlm": "965418127555dd1a57e3aac61727132d8749ec140271e0c24cfbc1ffb8a21266",
}
ALTERNATE = {"gemma", "gemma3", "mistral-v1", "mistral-v3", "mistral-v7", "mistral-v3-tekken", "llava-next"}
TOOL_TEMPLATES = {"qwen3", "qwen3-trl", "qwen2.5", "qwen3-instruct-2507", "llama3.1", "llama3.2", "mistral-v3"}
KWARGS = {"llama3.1": {"date_string": "26 Jul 2024"}, "llama3.2": {"date_string": "26 Jul 2024"}}
KWARGS["llama3.1-builtin"] = {"date_string": "26 Jul 2024", "builtin_tools": ["brave_search"]}


def _feed(h, value) -> None:
    h.update(repr(value).encode("utf-8", "surrogatepass"))
    h.update(b"\x00")


def digest(name: str) -> str:
    tokenizer = load_tokenizer(name)
    h = hashlib.sha256()
    for messages, tools in corpus(name):
        for policy_name, policy in POLICIES.items():
            _feed(h, policy_name)
            try:
                out = labelmask.mask_conversation(
                    messages, tokenizer, tools=tools, policy=policy, return_tensors="np", **KWARGS.get(name, {})
                )
            except labelmask.LabelmaskError as error:
                _feed(h, (type(error).__name__, str(error)))
                continue
            for key in ("input_ids", "attention_mask", "labels", "message_index", "role", "part"):
                _feed(h, out[key].astype(np.int64).tolist())
            _feed(h, out["loss_weights"].astype(np.float32).tolist())
            _feed(h, out.offsets.tolist())
            _feed(h, out.text)
            _feed(h, [tuple(s) for s in out.spans])
            r = out.report
            fields = ("template", "method", "n_tokens", "n_trained", "n_straddle", "n_boundary_dropped")
            _feed(h, [getattr(r, f) for f in fields + ("n_cut", "n_images", "n_eos_added", "n_control_tokens")])
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_outputs_are_those_recorded(name):
    assert digest(name) == DIGESTS[name]
