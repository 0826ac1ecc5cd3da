"""_result: a MaskedConversation is read-only; the package derives new results from it without changing it."""

from __future__ import annotations

import numpy as np
import pytest

import labelmask
from labelmask._result import array, relabel, restrict, with_report

CONVERSATION = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello there"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Goodbye"},
]


@pytest.fixture
def out(tokenizers):
    return labelmask.mask_conversation(CONVERSATION, tokenizers["qwen3"], return_tensors="np")


def snapshot(result):
    return {k: np.asarray(result[k]).copy() for k in result}, result.report


def same(a, b):
    return a[1] == b[1] and a[0].keys() == b[0].keys() and all(np.array_equal(a[0][k], b[0][k]) for k in a[0])


def test_report_cannot_be_assigned(out):
    with pytest.raises(AttributeError):
        out.report = out.report


def test_restrict_keeps_the_original(out):
    before = snapshot(out)
    keep = np.arange(5)
    cut = restrict(out, keep, n_cut=out.report.n_tokens - 5)
    assert same(snapshot(out), before)
    assert cut.report.n_tokens == 5 and cut.report.n_cut == out.report.n_tokens - 5
    assert cut["input_ids"].tolist() == out["input_ids"][:5].tolist()
    assert cut.offsets.tolist() == out.offsets[:5].tolist()
    # Restricting twice composes the kept positions.
    twice = restrict(cut, np.array([1, 3]))
    assert twice.offsets.tolist() == out.offsets[[1, 3]].tolist()


def test_relabel_counts_again_and_zeroes_weights(out):
    before = snapshot(out)
    labels = array(out, "labels").copy()
    first_reply = array(out, "message_index") == 1
    labels[first_reply] = labelmask.IGNORE_INDEX
    new = relabel(out, labels)
    assert same(snapshot(out), before)
    assert new.report.n_trained == int(np.count_nonzero(labels != labelmask.IGNORE_INDEX))
    assert new.report.n_trained < out.report.n_trained
    assert (new["loss_weights"][first_reply] == 0).all()
    assert new["loss_weights"][~first_reply].tolist() == out["loss_weights"][~first_reply].tolist()


def test_with_report_changes_only_the_report(out):
    before = snapshot(out)
    new = with_report(out, n_dropped_messages=2)
    assert same(snapshot(out), before)
    assert new.report.n_dropped_messages == 2 and out.report.n_dropped_messages == 0
    assert all(np.array_equal(np.asarray(new[k]), np.asarray(out[k])) for k in out)
