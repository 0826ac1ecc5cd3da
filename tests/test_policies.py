"""Every policy option, property-tested: what it trains and what it never trains.

Each test masks a drawn conversation under the default policy and under the option
(same text, same tokens: the options never change the render) and states, token by
token, how the two trained sets relate, using the result's provenance
(``message_index``, ``role``, ``part``) and the character spans of the annotated render.
Every trained token is also checked to lie in its own message's generated region
(after its header, through its end of turn), in a part the policy trains.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labelmask
from labelmask import IGNORE_INDEX, ConversationError, Part, Policy, Role
from tests.strategies import conversations

ALL_ROLES = frozenset({"system", "user", "assistant", "tool"})
ROLE_CODE = {"system": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT, "tool": Role.TOOL}

# Templates, and the conversations and template arguments they accept.
CASES = {
    "qwen3": (
        conversations(tools=True, tool_role=True, reasoning=True, max_turns=12),
        st.sampled_from([{}, {"enable_thinking": False}]),
    ),
    "llama3": (conversations(max_turns=12), st.just({})),
    "gemma3": (conversations(alternate=True, max_turns=12), st.just({})),
}
NAMES = sorted(CASES)
SPAN_PART = {"header": Part.HEADER, "content": Part.CONTENT, "reasoning": Part.REASONING}
SPAN_PART |= {"tool_calls": Part.TOOL_CALLS, "eot": Part.EOT, "image": Part.IMAGE}


def mask(tokenizer, messages, tools, kwargs, **policy):
    return labelmask.mask_conversation(
        messages, tokenizer, tools=tools, policy=Policy(on_empty="keep", **policy), return_tensors="np", **kwargs
    )


def draw(name, tokenizers, data):
    strategy, kwargs = CASES[name]
    messages, tools = data.draw(strategy, label="conversation")
    return tokenizers[name], messages, tools, data.draw(kwargs, label="template kwargs")


def trained(out) -> np.ndarray:
    return out["labels"] != IGNORE_INDEX


def char_parts(out) -> np.ndarray:
    """The part of every character of the render, from the spans (innermost wins)."""
    parts = np.full(len(out.text), int(Part.NONE))
    for span in sorted(out.spans, key=lambda s: s.start - s.end):  # longest first, so inner spans paint last
        parts[span.start : span.end] = int(Part.TEMPLATE) if span.kind == "turn" else int(SPAN_PART[span.kind])
    return parts


def char_messages(out) -> np.ndarray:
    """The message of every character of the render (-1: none), from the spans (innermost
    wins: Gemma 3 writes the system prompt inside the first user turn)."""
    owner = np.full(len(out.text), -1)
    for span in sorted(out.spans, key=lambda s: s.start - s.end):
        owner[span.start : span.end] = span.message
    return owner


def touching(out, messages) -> np.ndarray:
    """Which tokens cover at least one character of one of ``messages``."""
    hit = np.isin(char_messages(out), list(messages))
    return np.array([hit[a:b].any() for a, b in out.offsets], dtype=bool)


def expected(everything, n_messages: int, messages: set[int]) -> np.ndarray:
    """What a policy training only ``messages`` trains, from what training every message
    trains: the same tokens, less those touching a character of an untrained message."""
    return trained(everything) & ~touching(everything, set(range(n_messages)) - messages)


def touches(out, part: Part) -> np.ndarray:
    """Which tokens cover at least one character of ``part``."""
    parts = char_parts(out) == int(part)
    return np.array([parts[a:b].any() for a, b in out.offsets], dtype=bool)


def assert_trains_only(out, messages: set[int], off_parts: tuple[Part, ...] = ()) -> None:
    """What no policy ever trains: a token outside the generated region of a trained
    message (``messages``), a header, template text outside every message, an image,
    or a part the policy turns off."""
    by_kind = {(s.kind, s.message): s for s in out.spans}
    labels, ids = out["labels"], out["input_ids"]
    assert ((labels == IGNORE_INDEX) | (labels == ids)).all()
    parts = char_parts(out)
    for t in np.flatnonzero(trained(out)):
        m = int(out["message_index"][t])
        assert m in messages, f"token {t} of message {m} is trained; only {sorted(messages)} are"
        assert Part(out["part"][t]) not in (Part.NONE, Part.HEADER, Part.IMAGE, *off_parts)
        a, b = out.offsets[t]
        # A message written inside another's turn (Gemma 3's system prompt) has no turn of its own.
        own = [s for s in out.spans if s.message == m]
        turn = by_kind.get(("turn", m)) or min(own, key=lambda s: s.start - s.end)
        header = by_kind.get(("header", m))
        eot = by_kind.get(("eot", m))
        assert turn.start <= a and b <= (eot.end if eot else turn.end), f"token {t} leaves message {m}'s region"
        assert header is None or b > header.end, f"token {t} lies in message {m}'s header"
        assert not np.isin(parts[a:b], [int(p) for p in (Part.IMAGE, *off_parts)]).any()


def last_of(messages, roles) -> int | None:
    return max((i for i, m in enumerate(messages) if m["role"] in roles), default=None)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 2))
@given(data=st.data())
def test_roles_train_their_messages_and_nothing_else(name, tokenizers, data):
    """``roles=R`` trains exactly what training every role trains, less the tokens that
    touch a message of another role; never a token of another role."""
    tokenizer, messages, tools, kwargs = draw(name, tokenizers, data)
    roles = data.draw(st.sets(st.sampled_from(sorted(ALL_ROLES)), min_size=1), label="roles")
    everything = mask(tokenizer, messages, tools, kwargs, roles=ALL_ROLES)
    out = mask(tokenizer, messages, tools, kwargs, roles=roles)
    assert (out["input_ids"] == everything["input_ids"]).all()
    chosen = {i for i, m in enumerate(messages) if m["role"] in roles}
    assert (trained(out) == expected(everything, len(messages), chosen)).all()
    assert np.isin(out["role"][trained(out)], [int(ROLE_CODE[r]) for r in roles]).all()
    assert_trains_only(out, chosen)
    assert_trains_only(everything, set(range(len(messages))))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 2))
@given(data=st.data())
def test_last_turn_only_trains_the_last_message_of_a_trained_role(name, tokenizers, data):
    """``last_turn_only`` trains exactly what training every role trains in the last
    message of a trained role, nothing of any other; all roles ⊇ assistant ⊇ last turn."""
    tokenizer, messages, tools, kwargs = draw(name, tokenizers, data)
    roles = data.draw(st.sampled_from([{"assistant"}, {"user", "assistant"}, set(ALL_ROLES)]), label="roles")
    everything = mask(tokenizer, messages, tools, kwargs, roles=ALL_ROLES)
    assistant = mask(tokenizer, messages, tools, kwargs)
    same_roles = mask(tokenizer, messages, tools, kwargs, roles=roles)
    out = mask(tokenizer, messages, tools, kwargs, roles=roles, last_turn_only=True)
    last = last_of(messages, roles)
    assert (trained(out) == expected(everything, len(messages), {last})).all()
    assert not (trained(out) & ~trained(same_roles)).any()
    assert_trains_only(out, {last})
    # Nesting.
    assert not (trained(assistant) & ~trained(everything)).any()
    last_assistant = mask(tokenizer, messages, tools, kwargs, last_turn_only=True)
    assert not (trained(last_assistant) & ~trained(assistant)).any()


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 2))
@given(data=st.data())
def test_train_false_removes_exactly_that_message(name, tokenizers, data):
    """``"train": False`` on a message untrains the tokens covering its characters and
    changes nothing else (text, ids, other tokens' labels)."""
    tokenizer, messages, tools, kwargs = draw(name, tokenizers, data)
    roles = data.draw(st.sampled_from([{"assistant"}, set(ALL_ROLES)]), label="roles")
    k = data.draw(st.integers(0, len(messages) - 1), label="flagged message")
    flagged = [{**m, "train": False} if i == k else m for i, m in enumerate(messages)]
    ref = mask(tokenizer, messages, tools, kwargs, roles=roles)
    out = mask(tokenizer, flagged, tools, kwargs, roles=roles)
    assert out.text == ref.text
    assert (out["input_ids"] == ref["input_ids"]).all()
    # Exactly the tokens that cover a character of message k are removed.
    assert (trained(out) == (trained(ref) & ~touching(ref, {k}))).all()
    assert_trains_only(out, {i for i, m in enumerate(messages) if m["role"] in roles} - {k})


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 2))
@given(data=st.data())
def test_train_true_adds_exactly_that_message(name, tokenizers, data):
    """``"train": True`` on a message of an untrained role (or an earlier assistant
    message under ``last_turn_only``) trains its generated region, as training its role
    would, and adds no token of any other message."""
    tokenizer, messages, tools, kwargs = draw(name, tokenizers, data)
    last_turn_only = data.draw(st.booleans(), label="last_turn_only")
    k = data.draw(st.integers(0, len(messages) - 1), label="flagged message")
    flagged = [{**m, "train": True} if i == k else m for i, m in enumerate(messages)]
    ref = mask(tokenizer, messages, tools, kwargs, last_turn_only=last_turn_only)
    out = mask(tokenizer, flagged, tools, kwargs, last_turn_only=last_turn_only)
    everything = mask(tokenizer, messages, tools, kwargs, roles=ALL_ROLES)
    assert out.text == ref.text
    assistants = {i for i, m in enumerate(messages) if m["role"] == "assistant"}
    if last_turn_only:
        assistants = {last_of(messages, {"assistant"})}
    assert (trained(out) == expected(everything, len(messages), assistants | {k})).all()
    # Every token added covers a character of message k.
    assert not (trained(out) & ~trained(ref) & ~touching(ref, {k})).any()
    assert_trains_only(out, assistants | {k})


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 2))
@given(data=st.data())
def test_loss_weights_are_the_message_weight_on_trained_tokens(name, tokenizers, data):
    """``loss_weights[t]`` is the weight of token t's message where t is trained (1.0
    without one), 0.0 elsewhere; weights change no label."""
    tokenizer, messages, tools, kwargs = draw(name, tokenizers, data)
    weights = data.draw(
        st.lists(
            st.one_of(st.none(), st.sampled_from([0, 0.0, 0.25, 1.0, 2, 3.5, 1e-3])),
            min_size=len(messages),
            max_size=len(messages),
        ),
        label="weights",
    )
    weighted = [m if w is None else {**m, "weight": w} for m, w in zip(messages, weights)]
    roles = data.draw(st.sampled_from([{"assistant"}, set(ALL_ROLES)]), label="roles")
    ref = mask(tokenizer, messages, tools, kwargs, roles=roles)
    out = mask(tokenizer, weighted, tools, kwargs, roles=roles)
    assert out.text == ref.text
    assert (out["labels"] == ref["labels"]).all()
    assert ref["loss_weights"].dtype == out["loss_weights"].dtype == np.float32
    assert (ref["loss_weights"] == trained(ref)).all()
    per_message = np.array([1.0 if w is None else w for w in weights], dtype=np.float32)
    expected = np.where(trained(out), per_message[out["message_index"]], 0.0)
    assert (out["loss_weights"] == expected).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("part", [Part.REASONING, Part.TOOL_CALLS, Part.EOT])
@settings(max_examples=max(1, settings.default.max_examples // 4))
@given(data=st.data())
def test_part_off_untrains_that_part_and_nothing_else(name, part, tokenizers, data):
    """``reasoning``, ``tool_calls`` or ``eot`` off: no token touching that part is
    trained; every other token is trained exactly as by default."""
    tokenizer, messages, tools, kwargs = draw(name, tokenizers, data)
    option = {Part.REASONING: "reasoning", Part.TOOL_CALLS: "tool_calls", Part.EOT: "eot"}[part]
    ref = mask(tokenizer, messages, tools, kwargs)
    out = mask(tokenizer, messages, tools, kwargs, **{option: False})
    assert (trained(out) == (trained(ref) & ~touches(ref, part))).all()
    assert_trains_only(out, {i for i, m in enumerate(messages) if m["role"] == "assistant"}, off_parts=(part,))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 8))
@given(data=st.data())
def test_flags_and_weights_never_reach_the_render(name, tokenizers, data):
    """labelmask's keys are removed before rendering: the text is the stock render of the
    conversation without them, which is also the stock render with them (the templates
    read only the keys they know)."""
    tokenizer, messages, tools, kwargs = draw(name, tokenizers, data)
    flags = data.draw(st.lists(st.sampled_from([{}, {"train": True}, {"train": False}, {"weight": 0.5}])))
    tagged = [{**m, **flags[i % len(flags)]} if flags else m for i, m in enumerate(messages)]
    out = labelmask.mask_conversation(
        tagged, tokenizer, tools=tools, policy=Policy(on_empty="keep"), verify=True, **kwargs
    )
    stock = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **kwargs)
    assert out.text == stock
    assert tokenizer.apply_chat_template(tagged, tools=tools, tokenize=False, **kwargs) == stock


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"train": "yes"}, '"train" must be True or False'),
        ({"train": 1}, '"train" must be True or False'),
        ({"weight": -1.0}, '"weight" must be a finite number >= 0'),
        ({"weight": math.nan}, '"weight" must be a finite number >= 0'),
        ({"weight": math.inf}, '"weight" must be a finite number >= 0'),
        ({"weight": "2"}, '"weight" must be a finite number >= 0'),
        ({"weight": True}, '"weight" must be a finite number >= 0'),
        ({"weight": [1.0]}, '"weight" must be a finite number >= 0'),
    ],
)
def test_bad_flags_and_weights_name_the_message(extra, fragment, tokenizers):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", **extra}]
    with pytest.raises(ConversationError, match=fragment) as info:
        labelmask.mask_conversation(messages, tokenizers["llama3"])
    assert info.value.message_index == 1
    assert "Message 1" in str(info.value)


def test_none_flags_count_as_absent_and_numpy_values_are_accepted(tokenizers):
    """A dataset with the keys on some messages fills the others with None."""
    messages = [
        {"role": "user", "content": "Hi", "train": None, "weight": None},
        {"role": "assistant", "content": "Hello", "train": np.bool_(True), "weight": np.float32(0.5)},
    ]
    out = labelmask.mask_conversation(messages, tokenizers["llama3"], return_tensors="np")
    plain = labelmask.mask_conversation(
        [{"role": m["role"], "content": m["content"]} for m in messages], tokenizers["llama3"], return_tensors="np"
    )
    assert (out["labels"] == plain["labels"]).all()
    assert set(out["loss_weights"][trained(out)].tolist()) == {0.5}


def test_train_false_everywhere_is_nothing_to_train(tokenizers):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "train": False}]
    with pytest.raises(labelmask.NothingToTrainError, match='"train": False'):
        labelmask.mask_conversation(messages, tokenizers["llama3"])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 4))
@given(data=st.data())
def test_straddle_drop_never_trains_a_header_character_and_train_adds_only_straddling_tokens(name, tokenizers, data):
    """``straddle="drop"``: no trained token covers a header character. ``"train"`` trains the
    same tokens plus exactly the straddling ones it counts (header end merged with the reply)."""
    tokenizer, messages, tools, kwargs = draw(name, tokenizers, data)
    keep = mask(tokenizer, messages, tools, kwargs, straddle="train")
    drop = mask(tokenizer, messages, tools, kwargs, straddle="drop")
    parts = char_parts(drop)
    for t in np.flatnonzero(trained(drop)):
        a, b = drop.offsets[t]
        assert not (parts[a:b] == Part.HEADER).any(), "straddle='drop' trained a header character"
    extra = trained(keep) & ~trained(drop)
    assert not (trained(drop) & ~trained(keep)).any()
    assert int(extra.sum()) == keep.report.n_straddle
    assert drop.report.n_straddle == 0


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 8))
@given(data=st.data())
def test_on_empty_raises_or_keeps_a_sample_with_nothing_to_train(name, tokenizers, data):
    """With nothing trainable (every message flagged off), ``on_empty="raise"`` raises and
    ``"keep"`` returns the sample with every label -100 and ``n_trained == 0``."""
    tokenizer, messages, tools, kwargs = draw(name, tokenizers, data)
    off = [{**m, "train": False} for m in messages]
    with pytest.raises(labelmask.NothingToTrainError):
        labelmask.mask_conversation(off, tokenizer, tools=tools, **kwargs)
    out = labelmask.mask_conversation(off, tokenizer, tools=tools, policy=Policy(on_empty="keep"), **kwargs)
    assert out.report.n_trained == 0
    assert set(out["labels"]) == {IGNORE_INDEX}
