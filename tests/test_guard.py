"""The fail-closed check: wrong labels are refused, never returned.

The check is fed the real stages' outputs for real conversations and tokenizers, with
the policy's decision corrupted the ways masking goes wrong in practice: the labels
shifted by one token, the next turn's header trained, the end of turn left out, a
user turn trained. Each must raise; the true decision must pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labelmask
from labelmask import MaskCheckError, Policy
from labelmask._align import align
from labelmask._encode import backend_of, encode
from labelmask._guard import check_labels
from labelmask._messages import normalize_conversation
from labelmask._policy import apply_policy, trained_messages
from labelmask._registry import REGISTRY
from labelmask._render import compile_template, render_annotated
from tests.test_invariants import CASES, NAMES

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": "Sunny."},
]


def stages(tokenizer, messages=MESSAGES, policy=None):
    policy = Policy() if policy is None else policy
    annotated = REGISTRY.find(tokenizer.chat_template)
    conversation = normalize_conversation(messages, content_format=annotated.content_format)
    variables = {
        **tokenizer.special_tokens_map,
        "messages": conversation.messages,
        "_labelmask_messages": conversation.messages,
        "tools": None,
        "add_generation_prompt": False,
    }
    template = compile_template(annotated.source, mode="annotate", name=annotated.name)
    rendered = render_annotated(template, variables, annotated.name, expected=None, n_messages=len(messages))
    backend = backend_of(tokenizer)
    encoded = encode(backend, rendered.text)
    aligned = align(rendered, encoded, conversation.roles)
    ok = trained_messages(policy, conversation.roles, conversation.train)
    trained = apply_policy(aligned, policy, ok).trained
    return rendered, encoded, aligned, trained, ok, backend, annotated.name


def shifted(trained, aligned):
    return np.roll(trained, 1)


def _first_reply(trained):
    idx = np.flatnonzero(trained)
    return idx[0], idx[np.flatnonzero(np.diff(idx) > 1)[0]]  # first and last token of the first trained run


def header_trained(trained, aligned):
    out = trained.copy()
    _, last = _first_reply(trained)
    out[last + 1 : last + 3] = True  # what follows the first reply: a newline, the next turn's header
    return out


def header_of_first_reply(trained, aligned):
    out = trained.copy()
    first, _ = _first_reply(trained)
    out[first - 1] = True  # the generation prompt's last token
    return out


def eot_left_out(trained, aligned):
    out = trained.copy()
    _, last = _first_reply(trained)
    out[last] = False  # the first reply's end of turn (LLaVA-1.5 writes none: its last token)
    return out


def user_trained(trained, aligned):
    return trained | ((aligned.token_role == labelmask.Role.USER) & (aligned.token_part == labelmask.Part.CONTENT))


CORRUPTIONS = [shifted, header_trained, header_of_first_reply, eot_left_out, user_trained]


@pytest.mark.parametrize("name", ["qwen3", "llama3", "gemma3", "llava-1.5", "mistral-v3"])
def test_the_true_labels_pass(name, tokenizers):
    rendered, encoded, aligned, trained, ok, backend, template = stages(tokenizers[name])
    for full in (True, False):
        check_labels(rendered, encoded, aligned, trained, ok, Policy(), backend, template, full)


# What check="fast" (where each run lies) finds; check="full" finds all of them and a left-out end of turn.
FAST = (shifted, header_trained, header_of_first_reply, user_trained)


@pytest.mark.parametrize("full", [True, False], ids=["full", "fast"])
@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=[c.__name__ for c in CORRUPTIONS])
@pytest.mark.parametrize("name", ["qwen3", "llama3", "gemma3", "llava-1.5", "mistral-v3"])
def test_wrong_labels_are_refused(name, corrupt, full, tokenizers):
    if not full and corrupt not in FAST:
        return
    rendered, encoded, aligned, trained, ok, backend, template = stages(tokenizers[name])
    wrong = corrupt(trained, aligned)
    assert (wrong != trained).any()
    with pytest.raises(MaskCheckError, match=f"Fail-closed check, template '{template}'"):
        check_labels(rendered, encoded, aligned, wrong, ok, Policy(), backend, template, full)


@pytest.mark.parametrize(
    "policy",
    [
        Policy(straddle="drop"),
        Policy(eot=False),
        Policy(last_turn_only=True),
        Policy(roles=("user", "assistant")),
        Policy(roles=("system", "user", "assistant", "tool")),
    ],
)
def test_every_policy_passes(policy, tokenizers):
    messages = [*MESSAGES[:2], {"role": "assistant", "content": "\n\nHi"}, *MESSAGES[3:]]
    for name in ("qwen3", "llava-1.5"):
        rendered, encoded, aligned, trained, ok, backend, template = stages(tokenizers[name], messages, policy)
        for full in (True, False):
            check_labels(rendered, encoded, aligned, trained, ok, policy, backend, template, full)


def _lowercasing(tokenizers):
    from tokenizers import normalizers

    from tests.fixtures import load_tokenizer

    tokenizer = load_tokenizer("qwen3")
    tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()
    return tokenizer


def test_a_refused_sample_is_never_returned_and_check_off_returns_it(tokenizers):
    assert labelmask.mask_conversation(MESSAGES, _lowercasing(tokenizers)).report.n_trained > 0  # default: off
    """Ids that do not spell the text their offsets cover are found by decoding (check="full")."""
    tokenizer = _lowercasing(tokenizers)
    with pytest.raises(MaskCheckError) as info:
        labelmask.mask_conversation(MESSAGES, tokenizer, check="full")
    assert info.value.message_index == 2
    out = labelmask.mask_conversation(MESSAGES, tokenizer, check="off")
    assert out.report.n_trained > 0


def test_mask_dataset_drops_and_counts_refused_rows(tokenizers):
    datasets = pytest.importorskip("datasets")
    tokenizer = _lowercasing(tokenizers)
    rows = [{"messages": MESSAGES}, {"messages": [MESSAGES[1], {"role": "assistant", "content": "ok"}]}]
    masked, stats = labelmask.mask_dataset(datasets.Dataset.from_list(rows), tokenizer, on_error="drop", check="full")
    assert stats.dropped == {"MaskCheckError": 1} and stats.n_kept == 1
    assert "Row 0: Fail-closed check" in stats.first_error["MaskCheckError"]
    with pytest.raises(MaskCheckError, match="Row 0: "):
        labelmask.mask_dataset(datasets.Dataset.from_list(rows), tokenizer, check="full")


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 20))  # 10 per template in CI
@given(data=st.data())
def test_the_full_check_passes_every_annotation_on_drawn_conversations(name, tokenizers, data):
    """check="full" never refuses the labels of a shipped annotation, and changes none (it only checks):
    on every template, on the conversations its property test draws (Gemma 4's fifth revision joins
    two replies into one turn, where a token can run from one into the next)."""
    case = CASES[name]
    messages, tools = data.draw(case.strategy, label="conversation")
    kwargs = data.draw(case.kwargs, label="template kwargs")
    policy = case.policy or Policy(on_empty="keep")
    tokenizer = tokenizers[name]
    off = labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=policy, **kwargs)
    full = labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=policy, check="full", **kwargs)
    assert full["labels"] == off["labels"] and full["input_ids"] == off["input_ids"]
