"""What a template drops: reported per sample, warned once per template and field, refused where it
would train a wrong reply, and brought back per exchange by ``expand="turns"``.

References are planted: every message's text carries a marker of its own, and a field is rendered
exactly when its marker is in the render (never labelmask's own spans); trained text is decoded from
the trained tokens and compared with strings written here from the template's format.
"""

from __future__ import annotations

import dataclasses
import warnings

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labelmask
from labelmask import _pipeline
from labelmask.errors import NotRenderedError, NotRenderedWarning
from tests.test_invariants import CASES

WEATHER_CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Every template and field unwarned, as in a new process."""
    monkeypatch.setattr(_pipeline, "_WARNED_NOT_RENDERED", set())


def reasoning_everywhere():
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two plus two is four."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6", "reasoning_content": "Three plus three is six."},
        {"role": "user", "content": "And 4+4?"},
        {"role": "assistant", "content": "8", "reasoning_content": "Four plus four is eight."},
    ]


TRACES = ("Two plus two is four.", "Three plus three is six.", "Four plus four is eight.")


def trained_text(tokenizer, out) -> str:
    return tokenizer.decode([t for t, label in zip(out["input_ids"], out["labels"]) if label != labelmask.IGNORE_INDEX])


# --- Qwen3: reasoning on every turn ------------------------------------------------------------


def test_qwen3_reports_the_earlier_replies_reasoning_and_warns_once(tokenizers, fresh_warnings):
    tok = tokenizers["qwen3"]
    with pytest.warns(NotRenderedWarning, match=r"'qwen3'.*reasoning \(message 2 and 1 more\).*expand='turns'"):
        out = labelmask.mask_conversation(reasoning_everywhere(), tok)
    assert out.report.not_rendered == ((2, "reasoning"), (4, "reasoning"))
    trained = trained_text(tok, out)
    # Qwen3 writes reasoning for the last exchange only: the last trace is trained, the others nowhere.
    assert "<think>\nFour plus four is eight.\n</think>\n\n8<|im_end|>" in trained
    assert TRACES[0] not in out.text and TRACES[1] not in out.text
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotRenderedWarning)
        again = labelmask.mask_conversation(reasoning_everywhere(), tok)  # warned once per template and field
    assert again.report.not_rendered == out.report.not_rendered


def test_history_reasoning_the_sample_does_not_train_is_reported_but_not_warned(tokenizers, fresh_warnings):
    # last_turn_only: the earlier replies are context, which Qwen3 writes without reasoning at inference too.
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotRenderedWarning)
        out = labelmask.mask_conversation(
            reasoning_everywhere(), tokenizers["qwen3"], policy=labelmask.Policy(last_turn_only=True)
        )
    assert out.report.not_rendered == ((2, "reasoning"), (4, "reasoning"))


def test_expand_turns_trains_every_reasoning_trace_once(tokenizers):
    tok = tokenizers["qwen3"]
    rows = [
        {"messages": reasoning_everywhere(), "source": "a"},
        {"messages": reasoning_everywhere()[1:3], "source": "b"},
    ]
    dataset = datasets.Dataset.from_list(rows)
    whole, whole_stats = labelmask.mask_dataset(dataset, tok)
    assert whole_stats.not_rendered == {"reasoning": 2}
    assert whole["not_rendered"] == [["2:reasoning", "4:reasoning"], []]
    assert "not rendered by the template: 2 reasoning" in str(whole_stats)

    masked, stats = labelmask.mask_dataset(dataset, tok, expand="turns", remove_columns=["messages"])
    assert (stats.n_rows, stats.n_kept, stats.n_examples) == (2, 2, 4)
    assert stats.not_rendered == {}
    assert masked["source_row"] == [0, 0, 0, 1]
    assert masked["exchange"] == [0, 1, 2, 0]
    assert masked["source"] == ["a", "a", "a", "b"]
    texts = []
    for ids, labels in zip(masked["input_ids"], masked["labels"]):
        texts.append(tok.decode([t for t, label in zip(ids, labels) if label != labelmask.IGNORE_INDEX]))
    # Each exchange trains its own reply, reasoning and end of turn, written as Qwen3 writes the last turn.
    assert texts[:3] == [
        "<think>\nTwo plus two is four.\n</think>\n\n4<|im_end|>",
        "<think>\nThree plus three is six.\n</think>\n\n6<|im_end|>",
        "<think>\nFour plus four is eight.\n</think>\n\n8<|im_end|>",
    ]
    assert texts[3] == texts[0]
    for trace in TRACES:
        assert sum(trace in text for text in texts[:3]) == 1
    # The same examples as mask_turns.
    turns = labelmask.mask_turns(reasoning_everywhere(), tok)
    assert [t["labels"] for t in turns] == masked["labels"][:3]
    assert [t.report.not_rendered for t in turns] == [(), (), ()]
    # The trade-off: more tokens rendered, more trained.
    assert stats.n_tokens > whole_stats.n_tokens and stats.n_trained > whole_stats.n_trained


def test_the_collator_expands_raw_conversations_per_exchange(tokenizers):
    tok = tokenizers["qwen3"]
    collator = labelmask.Collator(tok, expand="turns", return_tensors="np")
    batch = collator([{"messages": reasoning_everywhere()}, {"messages": reasoning_everywhere()[1:3]}])
    turns = labelmask.mask_turns(reasoning_everywhere(), tok) + labelmask.mask_turns(reasoning_everywhere()[1:3], tok)
    assert batch["labels"].shape[0] == 4
    for row, out in zip(batch["labels"], turns):
        assert row[: len(out["labels"])].tolist() == out["labels"]
        assert (row[len(out["labels"]) :] == labelmask.IGNORE_INDEX).all()
    with pytest.raises(labelmask.NothingToTrainError, match="feature 0: expand='turns' found no exchange"):
        collator([{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}])
    with pytest.raises(labelmask.OptionError, match="expand='exchanges'"):
        labelmask.Collator(tok, expand="exchanges")


def test_expand_turns_counts_a_conversation_without_exchange_as_dropped(tokenizers):
    rows = [
        {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
        {"messages": reasoning_everywhere()[1:3]},
    ]
    masked, stats = labelmask.mask_dataset(
        datasets.Dataset.from_list(rows), tokenizers["qwen3"], expand="turns", on_error="drop"
    )
    assert stats.dropped == {"NothingToTrainError": 1}
    assert "Row 0: expand='turns' found no exchange" in stats.first_error["NothingToTrainError"]
    assert (stats.n_kept, stats.n_examples, masked["source_row"]) == (1, 1, [1])
    with pytest.raises(labelmask.OptionError, match="expand='turn'"):
        labelmask.mask_dataset(datasets.Dataset.from_list(rows), tokenizers["qwen3"], expand="turn")


# --- Phi-3: tool calls dropped -----------------------------------------------------------------


def phi3_tool_conversation():
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "content": "22C"},
        {"role": "assistant", "content": "It is 22C."},
    ]


def test_phi3_tool_calls_raise_by_default_naming_the_message(tokenizers):
    with pytest.raises(NotRenderedError, match=r"Message 1: template 'phi3' does not render .*get_weather") as info:
        labelmask.mask_conversation(phi3_tool_conversation(), tokenizers["phi3"])
    assert (info.value.message_index, info.value.template, info.value.field) == (1, "phi3", "tool_calls")
    assert "on_dropped_tool_calls='skip'" in str(info.value)


def test_phi3_tool_calls_skipped_or_trained_as_the_policy_says(tokenizers):
    tok = tokenizers["phi3"]
    skip = labelmask.mask_conversation(
        phi3_tool_conversation(), tok, policy=labelmask.Policy(on_dropped_tool_calls="skip")
    )
    # Phi-3 writes neither the call nor the tool result: the reply renders empty.
    assert "<|assistant|>\n<|end|>\n<|assistant|>\nIt is 22C.<|end|>" in skip.text
    assert skip.report.not_rendered == ((1, "tool_calls"), (2, "content"))
    assert trained_text(tok, skip) == "It is 22C.<|end|>"
    train = labelmask.mask_conversation(
        phi3_tool_conversation(), tok, policy=labelmask.Policy(on_dropped_tool_calls="train")
    )
    assert train.report.not_rendered == skip.report.not_rendered
    assert trained_text(tok, train) == "<|end|>It is 22C.<|end|>"
    # A reply that is not trained is context: nothing to refuse.
    last = labelmask.mask_conversation(phi3_tool_conversation(), tok, policy=labelmask.Policy(last_turn_only=True))
    assert trained_text(tok, last) == "It is 22C.<|end|>"


def test_mask_dataset_drops_and_counts_replies_whose_tool_calls_are_dropped(tokenizers):
    # Arguments as a JSON string: datasets would store a dict as an Arrow struct (see mask_dataset).
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    with_call = phi3_tool_conversation()
    with_call[1] = {**with_call[1], "tool_calls": [call]}
    rows = [{"messages": with_call}, {"messages": [{"role": "user", "content": "Hi"}, with_call[3]]}]
    masked, stats = labelmask.mask_dataset(datasets.Dataset.from_list(rows), tokenizers["phi3"], on_error="drop")
    assert stats.dropped == {"NotRenderedError": 1}
    assert stats.first_error["NotRenderedError"].startswith("Row 0: Message 1: template 'phi3'")
    skip = labelmask.Policy(on_dropped_tool_calls="skip")
    masked, stats = labelmask.mask_dataset(datasets.Dataset.from_list(rows), tokenizers["phi3"], policy=skip)
    assert stats.not_rendered == {"tool_calls": 1, "content": 1}
    assert masked["not_rendered"] == [["1:tool_calls", "2:content"], []]


# --- A field the template does not write --------------------------------------------------------


def test_a_dropped_field_is_warned_once_and_reported_per_sample(tokenizers, fresh_warnings):
    # Qwen3 writes a tool result's content, never its tool_call_id or name.
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{**WEATHER_CALL, "id": "call_7f3a"}]},
        {"role": "tool", "tool_call_id": "call_7f3a", "name": "get_weather", "content": "22C"},
        {"role": "assistant", "content": "22C."},
    ]
    with pytest.warns(NotRenderedWarning) as record:
        out = labelmask.mask_conversation(messages, tokenizers["qwen3"])
    assert len(record) == 1
    assert "name (message 2)" in str(record[0].message) and "tool_call_id (message 2)" in str(record[0].message)
    assert out.report.not_rendered == ((2, "name"), (2, "tool_call_id"))
    assert "call_7f3a" not in out.text
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotRenderedWarning)
        labelmask.mask_conversation(messages, tokenizers["qwen3"])


# --- Every annotated template: the report is what the render shows ------------------------------

FIELD_MARK = {"content": "⟦c{}⟧", "reasoning": "⟦r{}⟧"}
REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def _untagged(text: str) -> str:
    # Templates take text apart at tags (<think>, </think>) and the report then looks at the pieces
    # (example tests below); here text stays whole, so a planted marker stands for its whole field.
    return text.replace("<", "‹").replace(">", "›")


def plant(messages):
    """Each message's content (string or text parts) and reasoning, untagged and marked with its index."""
    out = []
    for i, m in enumerate(messages):
        m = dict(m)
        content = m.get("content")
        mark = FIELD_MARK["content"].format(i)
        if isinstance(content, str):
            m["content"] = mark + _untagged(content)
        elif isinstance(content, list):
            m["content"] = [
                {**p, "text": mark + _untagged(p["text"])} if p.get("type") == "text" else p for p in content
            ]
        for key in REASONING_KEYS:
            if isinstance(m.get(key), str):
                m[key] = FIELD_MARK["reasoning"].format(i) + _untagged(m[key])
        out.append(m)
    return out


def has_text(message) -> bool:
    content = message.get("content")
    return isinstance(content, str) or (isinstance(content, list) and any(p.get("type") == "text" for p in content))


@pytest.mark.parametrize("name", sorted(CASES))
def test_not_rendered_lists_exactly_the_planted_fields_missing_from_the_render(name, tokenizers):
    case = CASES[name]
    tokenizer = tokenizers[name]
    policy = dataclasses.replace(case.policy or labelmask.Policy(), on_empty="keep", on_dropped_tool_calls="train")

    @settings(max_examples=max(1, settings.default.max_examples // 8))
    @given(drawn=case.strategy, kwargs=case.kwargs)
    def run(drawn, kwargs):
        messages, tools = drawn
        messages = plant(messages)
        try:
            out = labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=policy, **kwargs)
        except labelmask.TemplateRaisedError:
            return  # the stock template refuses the marked conversation as it does others (tests/test_invariants)
        expected = []
        for i, m in enumerate(messages):
            if has_text(m) and FIELD_MARK["content"].format(i) not in out.text:
                expected.append((i, "content"))
            reasoning = any(isinstance(m.get(k), str) for k in REASONING_KEYS)
            if reasoning and FIELD_MARK["reasoning"].format(i) not in out.text:
                expected.append((i, "reasoning"))
        assert [d for d in out.report.not_rendered if d[1] in FIELD_MARK] == expected

    run()


def test_text_a_template_takes_apart_at_tags_is_rendered_when_every_piece_is(tokenizers):
    # Qwen3 moves what precedes </think> in a reply's content into its reasoning block: all of it is shown.
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "I thought.</think>Answer."}]
    out = labelmask.mask_conversation(messages, tokenizers["qwen3"])
    assert "<think>\nI thought.\n</think>\n\nAnswer.<|im_end|>" in out.text
    assert out.report.not_rendered == ()
    # LFM2.5 removes the think block from the content of replies before the last user message.
    thought = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>Weighing it.</think>A1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "A2"},
    ]
    out = labelmask.mask_conversation(thought, tokenizers["lfm2.5"])
    assert "Weighing it." not in out.text and "A1" in out.text
    assert out.report.not_rendered == ((1, "content"),)


@given(data=st.data())
@settings(max_examples=max(1, settings.default.max_examples // 4))
def test_phi3_refuses_every_trained_reply_with_tool_calls(tokenizers, data):
    messages, tools = data.draw(CASES["qwen3"].strategy)
    calls = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("tool_calls")]
    messages = [{**m, "content": m.get("content") or ""} for m in messages]
    try:
        out = labelmask.mask_conversation(messages, tokenizers["phi3"], tools=tools)
    except NotRenderedError as exc:
        assert exc.message_index == calls[0]
        return
    except labelmask.LabelmaskError:
        return
    assert not calls, out.text


def test_a_template_with_no_place_for_reasoning_says_no_expansion_helps(tokenizers, fresh_warnings):
    # Llama 3's template writes no reasoning at all, the last reply's included.
    with pytest.warns(
        NotRenderedWarning, match=r"'llama3'.*reasoning \(message 2\): it writes no reasoning for the last"
    ):
        out = labelmask.mask_conversation(reasoning_everywhere()[:3], tokenizers["llama3"])
    assert out.report.not_rendered == ((2, "reasoning"),)
