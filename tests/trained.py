"""What a masked sample trains, as text: for example tests that write the expected text by hand."""

from __future__ import annotations

import numpy as np

import labelmask
from labelmask import IGNORE_INDEX


def trained_runs(out) -> list[str]:
    """The text of each run of trained tokens that follow one another in the text, in order
    (from the tokens' character offsets, which tile the render)."""
    runs: list[list[int]] = []
    for start, end in out.offsets[np.asarray(out["labels"]) != IGNORE_INDEX].tolist():
        if runs and runs[-1][1] == start:
            runs[-1][1] = end
        else:
            runs.append([start, end])
    return [out.text[a:b] for a, b in runs]


def mask_annotated(tokenizer, messages, template: str, **kwargs):
    """``mask_conversation`` with ``verify=True``, asserting that annotation ``template`` masked it."""
    out = labelmask.mask_conversation(messages, tokenizer, return_tensors="np", verify=True, **kwargs)
    assert out.report.method == "annotated"
    assert out.report.template == template
    return out
