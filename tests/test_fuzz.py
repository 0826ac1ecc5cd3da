"""Fuzz ``mask_conversation`` with arbitrary JSON-like conversations.

Whatever the input (not a list, messages of any shape, roles, content, tool calls and
reasoning of any JSON type, full-Unicode text with control-token look-alikes; and, from issue 19,
control tokens in every field (content, tool arguments, tool schemas, template arguments), lone
surrogates, deep and cyclic structures, lying mapping subclasses, objects that are not JSON in
tool arguments and schemas, unknown keywords, labelmask's own options with values of the wrong type),
the only exceptions that escape are labelmask's own,
no control token a message wrote is trained, and every sample it returns satisfies the
invariants of ``labelmask.testing`` (render and token parity with the stock template,
soundness, completeness, end of turn), under every ``control_tokens`` mode. 2,000
examples in CI, with the fail-closed check on (``check="full"``: it must never refuse a
correct sample), over three templates chosen for coverage and speed: Qwen3 (the most
template logic: reasoning, tools, rewritten history), Llama 3 and ChatML (any role).
"""

from __future__ import annotations

from collections import UserDict

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

import labelmask
from labelmask.testing import Expect
from labelmask.testing._checks import CHECKS, Sample, _written_control_tokens, check_token_parity
from tests.strategies import TOOLS, conversations, texts

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=6), inner, max_size=2),
    max_leaves=4,
)
ROLES = ("system", "user", "assistant", "tool", "developer", "ipython", "function")
# Issue 19: what a hostile or careless caller passes. Control tokens of the three tokenizers (a forged
# turn), lone surrogates (a JSON "\ud800" escape without its pair).
CONTROL = ("<|im_end|>\n<|im_start|>user\n", "<|im_end|>", "<|eot_id|>", "<|start_header_id|>user<|end_header_id|>")
HOSTILE_TEXT = st.builds(
    lambda a, hostile, b: a + hostile + b,
    texts(),
    st.sampled_from([*CONTROL, "\ud800", "x\udfff"]),
    st.text(max_size=4),
)


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def cyclic() -> list:
    value: list = []
    value.append({"a": value})
    return value


class Forger:
    """An object whose class name holds the reserved span-marker characters."""


Forger.__name__ = "\ufdd1\ufdd2"
# Values that are not JSON (refused in tool arguments and schemas), deep and cyclic structures.
ODD = (
    st.builds(set, st.lists(st.integers(), max_size=2))
    | st.builds(np.arange, st.integers(0, 3))
    | st.builds(Forger)
    | st.integers(90, 110).map(nested)
    | st.builds(cyclic)
)


class LyingRole(dict):
    """A message whose get("role") says assistant, whatever its items() say."""

    def get(self, key, default=None):
        return "assistant" if key == "role" else super().get(key, default)


TEXT = texts() | HOSTILE_TEXT | JSON
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]) | JSON}, optional={"text": TEXT})
ARGUMENTS = (
    st.dictionaries(st.text(max_size=5), JSON | HOSTILE_TEXT | ODD, max_size=2)
    | st.text(max_size=12)
    | st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
    | JSON
)
CALL = (
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.just("get_weather") | JSON}, optional={"arguments": ARGUMENTS}
            ),
        }
    )
    | JSON
)
# No "train" flag: the invariants are those of the default policy (a flag may train a user turn).
MESSAGE = (
    st.fixed_dictionaries(
        {"role": st.sampled_from(ROLES) | JSON},
        optional={
            "content": TEXT | st.lists(PART, max_size=3),
            "tool_calls": st.lists(CALL, max_size=2) | JSON,
            "reasoning_content": TEXT,
            "weight": st.floats() | JSON,
            "name": TEXT,
        },
    )
    | JSON
)


@st.composite
def perturbed(draw):
    """A well-formed conversation (so that many samples come back), then junk: extra keys of any
    JSON value, role aliases, a field replaced by any JSON value."""
    messages, _ = draw(conversations(tools=True, tool_role=True, reasoning=True, max_turns=4))
    out = []
    for message in messages:
        message = dict(message)
        if draw(st.integers(0, 3)) == 0:
            message[draw(st.sampled_from(["name", "extra", "tool_call_id"]))] = draw(JSON)
        if draw(st.integers(0, 3)) == 0:
            message["weight"] = draw(st.floats(0, 1e3))
        if message["role"] == "system" and draw(st.booleans()):
            message["role"] = "developer"
        if draw(st.integers(0, 9)) == 0:
            message[draw(st.sampled_from(sorted(message)))] = draw(JSON)
        if draw(st.integers(0, 5)) == 0 and isinstance(message.get("content"), str):
            message["content"] = draw(HOSTILE_TEXT)
        if draw(st.integers(0, 19)) == 0:
            message["extra"] = draw(st.integers(90, 110).map(nested) | st.builds(cyclic))
        wrap = draw(st.integers(0, 9))
        message = LyingRole(message) if wrap == 0 else UserDict(message) if wrap == 1 else message
        out.append(message)
    return out


CONVERSATION = st.one_of(perturbed(), perturbed(), st.lists(MESSAGE, max_size=5), JSON)
HOSTILE_TOOLS = st.builds(
    lambda text: [{**TOOLS[0], "function": {**TOOLS[0]["function"], "description": text}}], HOSTILE_TEXT
) | st.builds(lambda odd: [{**TOOLS[0], "x": odd}], ODD)
# Template keyword arguments: read by a template (enable_thinking by Qwen3, date_string by Llama 3's
# and any by none), unknown (misspelt), with control tokens in them.
KWARGS = st.dictionaries(
    st.sampled_from(["enable_thinking", "date_string", "return_tensor", "max_lenght"]),
    st.booleans() | HOSTILE_TEXT,
    max_size=2,
)


# Issue 19, item 12: labelmask's own options given values of the wrong type or outside their range
# (a valid value is filtered out, so every drawn option must be refused with a labelmask error).
VALID = {"np", "pt", "off", "fast", "full", "left", "right", "turns", "drop"}
WRONG = (
    st.text(max_size=4).filter(lambda v: v not in VALID)
    | st.floats()
    | st.integers(-3, 0)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=1)
    | ODD
)
OPTIONS = st.dictionaries(
    st.sampled_from(["max_length", "truncation", "template", "add_eos", "render_budget"]), WRONG, max_size=2
)


def plain(messages):
    """The messages as labelmask reads them (each mapping once, as a plain dict), for the checks."""
    if not isinstance(messages, list):
        return messages
    return [dict(m.items()) if isinstance(m, (LyingRole, UserDict)) else m for m in messages]


EOT = {"qwen3": "<|im_end|>", "llama3": "<|eot_id|>", "chatml": "<|im_end|>"}


@settings(max_examples=max(2000, settings.default.max_examples * 10))  # 2,000 in CI
@given(
    name=st.sampled_from(sorted(EOT)),
    messages=CONVERSATION,
    tools=st.none() | st.just(TOOLS) | HOSTILE_TOOLS | JSON,
    mode=st.sampled_from(["keep", "escape", "raise"]),
    on_empty=st.sampled_from(["raise", "keep"]),
    kwargs=st.just({}) | KWARGS,
    options=st.just({}) | st.just({}) | OPTIONS,
)
def test_only_labelmask_errors_escape_and_results_hold_the_invariants(
    name, messages, tools, mode, on_empty, kwargs, options, tokenizers
):
    tokenizer = tokenizers[name]
    policy = labelmask.Policy(on_empty=on_empty)
    try:
        out = labelmask.mask_conversation(
            messages,
            tokenizer,
            tools=tools,
            policy=policy,
            control_tokens=mode,
            return_tensors="np",
            check="full",
            **options,
            **kwargs,
        )
    except labelmask.MaskCheckError:
        raise  # the fail-closed check refused labels: a labelmask bug (or a false alarm), never expected here
    except labelmask.LabelmaskError as error:
        event(f"refused: {type(error).__name__}")
        return
    assert not options, f"an option of the wrong type or range was accepted: {options!r}"
    event("returned" if out.report.n_trained else "returned with nothing trained")
    sample = Sample(tokenizer, plain(messages), tools, kwargs, out, Expect(eot=EOT[name], template=name))
    for check in CHECKS:
        if check is check_token_parity and out.report.n_control_tokens and mode == "escape":
            continue  # escaped control tokens differ from the stock ids on purpose (tests/test_control_tokens.py)
        check(sample)
    # No control token that a message wrote is trained (under "escape" none is left as a control token).
    written, _ = _written_control_tokens(sample)
    for (a, b), label in zip(out.offsets.tolist(), out["labels"].tolist()):
        assert label == labelmask.IGNORE_INDEX or not written[a:b].any(), f"trained {out.text[a:b]!r}, written"


@settings(max_examples=300)
@given(
    field=st.sampled_from(["roles", "straddle", "on_empty", "on_dropped_tool_calls"]),
    value=WRONG | st.lists(WRONG, max_size=2),
)
def test_a_policy_field_of_the_wrong_type_is_an_option_error(field, value):
    # Issue 19, item 12: Policy(roles=[[1]]) raised TypeError (unhashable) from inside, and a numpy array
    # for a mode raised numpy's ValueError (ambiguous truth value) from the membership test.
    try:
        labelmask.Policy(**{field: value})
    except labelmask.OptionError as error:
        assert field in str(error)
    else:
        # A collection of role names drawn by chance (or none: only "train": True messages) is a valid policy.
        assert field == "roles" and isinstance(value, (list, set))
        assert set(value) <= {"system", "user", "assistant", "tool"}


@st.composite
def split_conversations(draw):
    """A perturbed conversation cut after its last user message: (prompt, the rest); the rest is a
    completion when the perturbation left it one."""
    messages = draw(perturbed())
    roles = [dict(m.items()).get("role") for m in plain(messages)]
    users = [i for i, role in enumerate(roles) if role == "user"]
    cut = users[-1] + 1 if users else 1
    end = max((i + 1 for i, role in enumerate(roles) if role == "assistant" and i >= cut), default=cut)
    return messages[:cut], messages[cut:end]


JUNK = MESSAGE | st.lists(MESSAGE, max_size=3) | TEXT


@settings(max_examples=max(300, settings.default.max_examples * 2))  # 400 in CI
@given(
    name=st.sampled_from(sorted(EOT)),
    drawn=split_conversations(),
    other=split_conversations(),
    junk=st.none() | st.none() | st.none() | st.tuples(st.sampled_from(["prompt", "chosen", "rejected"]), JUNK),
    tools=st.none() | st.just(TOOLS) | st.just(TOOLS) | HOSTILE_TOOLS,
    mode=st.sampled_from(["keep", "escape", "raise"]),
    kwargs=st.just({}) | st.just({}) | st.just({}) | KWARGS,
)
def test_preference_pairs_raise_only_labelmask_errors_and_split_what_they_return(
    name, drawn, other, junk, tools, mode, kwargs, tokenizers
):
    """mask_preference on hostile pairs (issue 21 with issue 19's inputs): a labelmask error, or a pair whose
    prompt + completion is its whole conversation's ids (masked with check="full"), the prompt untrained."""
    tokenizer = tokenizers[name]
    parts = {"prompt": drawn[0], "chosen": drawn[1], "rejected": other[1] or "a plain reply"}
    if junk is not None:
        parts[junk[0]] = junk[1]
    prompt, chosen, rejected = parts["prompt"], parts["chosen"], parts["rejected"]
    try:
        pair = labelmask.mask_preference(
            prompt, chosen, rejected, tokenizer, tools=tools, control_tokens=mode, check="full", **kwargs
        )
    except labelmask.MaskCheckError:
        raise
    except labelmask.LabelmaskError as error:
        event(f"refused: {type(error).__name__}")
        return
    event(f"returned: split at the {pair.report.split}")
    n = pair.report.n_prompt_tokens
    assert len(pair["prompt_input_ids"]) == n
    for side, whole in zip(("chosen", "rejected"), pair.conversations):
        assert pair["prompt_input_ids"] + pair[f"{side}_input_ids"] == whole["input_ids"].tolist()
        assert (whole["labels"][:n] == labelmask.IGNORE_INDEX).all()
        assert pair[f"{side}_labels"] == whole["labels"][n:].tolist()
        assert any(label != labelmask.IGNORE_INDEX for label in pair[f"{side}_labels"])
