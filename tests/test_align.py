"""The hot path's shortcuts, property-tested against the plain computation on every template.

``mask_conversation`` decides labels per *run* of text (consecutive segments the policy
treats alike), asks the tokenizer where each run begins, and leaves per-token provenance
for first use. Here, on drawn conversations and policies:

* the alignment's first and last segment of every token equal those read off the
  tokenizer's own character offsets (searchsorted over the segment starts);
* the labels equal those of the policy applied segment by segment over that alignment
  (``apply_policy``), and the report's straddle counts agree;
* ``return_tensors=None`` (lists, the fast path) gives exactly the numpy arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labelmask
from labelmask import IGNORE_INDEX, Policy
from labelmask._align import align
from labelmask._encode import encode
from labelmask._pipeline import check_options, check_processor, render_step
from labelmask._policy import apply_policy
from labelmask.testing import Expect
from labelmask.testing._checks import Sample, _written_control_tokens
from tests.test_invariants import CASES, NAMES

POLICIES = st.builds(
    Policy,
    roles=st.sets(st.sampled_from(["system", "user", "assistant", "tool"]), min_size=1),
    reasoning=st.booleans(),
    tool_calls=st.booleans(),
    eot=st.booleans(),
    straddle=st.sampled_from(["train", "drop"]),
    on_empty=st.just("keep"),
    last_turn_only=st.booleans(),
)


def with_flags(messages: list[dict], data) -> list[dict]:
    """Some messages carry a "train" flag, as users write them."""
    flags = data.draw(st.lists(st.sampled_from([None, True, False]), min_size=len(messages), max_size=len(messages)))
    return [m if flag is None else {**m, "train": flag} for m, flag in zip(messages, flags)]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(1, settings.default.max_examples // 4))
@given(data=st.data(), policy=POLICIES)
def test_run_labels_equal_segment_labels(name, tokenizers, data, policy):
    case = CASES[name]
    tokenizer = tokenizers[name]
    messages, tools = data.draw(case.strategy, label="conversation")
    messages = with_flags(messages, data)
    kwargs = data.draw(case.kwargs, label="template kwargs")
    template = case.template or name

    out = labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=policy, template=template, **kwargs)

    # The plain computation: every segment, the tokenizer's offsets, the policy per segment.
    tok, backend = check_processor(tokenizer, False)
    staged = render_step(messages, tokenizer, tok, tools, check_options(policy=policy, template=template, **kwargs))
    rendered = staged.rendered
    encoded = encode(backend, rendered.text)
    aligned = align(rendered, encoded, staged.conversation.roles)
    offsets = encoded.offsets
    covers = offsets[:, 1] > offsets[:, 0]
    starts = np.asarray(rendered.bounds)
    first = np.searchsorted(starts, offsets[:, 0], side="right") - 1
    last = np.searchsorted(starts, offsets[:, 1] - 1, side="right") - 1
    assert np.array_equal(aligned.first_seg[covers], first[covers])
    assert np.array_equal(aligned.last_seg[covers], last[covers])
    straddling = np.flatnonzero(covers & (first != last)).tolist()
    assert [t for t, _, _ in aligned.straddles] == straddling

    decision = apply_policy(aligned, policy, staged.message_ok)
    expected = np.where(decision.trained, encoded.ids, IGNORE_INDEX)
    # A control token that a message's data wrote is never trained (issue 19, item 1).
    # (one in a tool call's span may be the template's syntax: the example tests in test_control_tokens.py).
    written, ambiguous = _written_control_tokens(Sample(tokenizer, messages, tools, kwargs, out, Expect()))
    for t, (a, b) in enumerate(out.offsets.tolist()):
        if written[a:b].any():
            expected[t] = IGNORE_INDEX
        elif ambiguous[a:b].any():
            expected[t] = out["labels"][t]
    assert out["input_ids"] == encoded.ids.tolist()
    assert out["labels"] == expected.tolist()
    assert out.report.n_straddle == decision.n_straddle
    assert out.report.n_boundary_dropped == decision.n_boundary_dropped
    assert out.report.n_trained == int(np.count_nonzero(expected != IGNORE_INDEX))

    as_np = labelmask.mask_conversation(
        messages, tokenizer, tools=tools, policy=policy, template=template, return_tensors="np", **kwargs
    )
    assert list(out) == list(as_np)
    for key in as_np:
        assert isinstance(out[key], list), key
        assert out[key] == as_np[key].tolist(), key
