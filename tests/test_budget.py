"""The render budget (issue 19, item 10): a chat template is code, and one that loops or writes
without end must stop with a labelmask error naming it, not hold a data pipeline for hours.

On f01e381, two nested ``range(100000)`` loops rendered for about 330 s (and again in trace mode on
failure), and ``'x' * 10**8`` was written and then tokenized for minutes. These tests give small
budgets so that each stops in well under a second; the bound on the elapsed time is only there so a
regression fails instead of hanging the suite.
"""

from __future__ import annotations

import time

import datasets
import pytest

import labelmask
from labelmask import RenderBudget, RenderBudgetError
from tests.fixtures import load_tokenizer

MESSAGES = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
)
LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}" + CHATML
WRITES = "{{ 'x' * 10**8 }}" + CHATML
POWER = "{{ 7 ** 100000000 }}" + CHATML  # (Jinja reads 7 ** 10 ** 8 as (7 ** 10) ** 8)


def with_template(source: str):
    tokenizer = load_tokenizer("qwen3")
    tokenizer.chat_template = source
    return tokenizer


@pytest.mark.parametrize(
    "source, limit",
    [(LOOPS, "time"), (WRITES, "chars"), (POWER, "chars")],
    ids=["nested loops that write nothing", "a string repeated 10**8 times", "a power of a million bits"],
)
def test_a_template_past_its_budget_stops_with_a_labelmask_error(source, limit):
    tokenizer = with_template(source)
    started = time.monotonic()
    with pytest.raises(RenderBudgetError) as info:
        labelmask.mask_conversation(MESSAGES, tokenizer, render_budget=RenderBudget(seconds=0.3))
    assert time.monotonic() - started < 20
    assert info.value.limit == limit
    assert info.value.template is not None and info.value.template.startswith("unregistered-")
    assert info.value.template in str(info.value) and "RenderBudget(" in str(info.value)
    assert isinstance(info.value, labelmask.LabelmaskError)


def test_the_default_budget_stops_a_string_the_size_of_ten_to_the_eight():
    # No budget given: the default's character limit (2**25) is far below 10**8.
    with pytest.raises(RenderBudgetError, match="wrote more than 33,554,432 characters"):
        labelmask.mask_conversation(MESSAGES, with_template(WRITES))


def test_a_conversation_longer_than_the_budget_is_refused_before_tokenizing():
    tokenizer = load_tokenizer("qwen3")
    long = [{"role": "user", "content": "x" * 5000}, MESSAGES[1]]
    budget = RenderBudget(chars=4000)
    with pytest.raises(RenderBudgetError, match="wrote more than 4,000 characters"):
        labelmask.mask_conversation(long, tokenizer, render_budget=budget)
    # Within it, the same call gives the stock ids.
    out = labelmask.mask_conversation(long, tokenizer, render_budget=RenderBudget(chars=6000))
    assert out["input_ids"] == tokenizer.apply_chat_template(long, tokenize=True, return_dict=True)["input_ids"]


def test_a_dataset_drops_the_rows_past_the_budget_and_counts_them():
    tokenizer = load_tokenizer("qwen3")
    rows = [MESSAGES, [{"role": "user", "content": "x" * 5000}, MESSAGES[1]], MESSAGES]
    dataset = datasets.Dataset.from_dict({"messages": rows})
    masked, stats = labelmask.mask_dataset(
        dataset, tokenizer, on_error="drop", render_budget=RenderBudget(chars=4000), load_from_cache_file=False
    )
    assert len(masked) == 2
    assert stats.dropped == {"RenderBudgetError": 1}


@pytest.mark.parametrize("budget", ["60", RenderBudget, {"seconds": 1}], ids=["a string", "the class", "a dict"])
def test_a_budget_that_is_not_one_is_an_option_error(budget):
    with pytest.raises(labelmask.OptionError, match="render_budget="):
        labelmask.mask_conversation(MESSAGES, load_tokenizer("qwen3"), render_budget=budget)


@pytest.mark.parametrize("kwargs", [{"seconds": 0}, {"seconds": -1.0}, {"chars": 0}, {"chars": True}, {"seconds": "1"}])
def test_a_budget_with_no_room_is_an_option_error(kwargs):
    with pytest.raises(labelmask.OptionError, match="RenderBudget"):
        RenderBudget(**kwargs)
