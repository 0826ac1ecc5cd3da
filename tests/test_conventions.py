"""Hugging Face conventions (issue 20, item 4): tensors with a batch dimension, a result that moves to a
device and feeds a model, options in the signatures, torch checked at the call, views in Python."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import labelmask
from labelmask import IGNORE_INDEX
from tests.test_trl import tiny_model

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def test_pt_tensors_have_the_tokenizers_batch_dimension(tokenizers):
    tokenizer = tokenizers["qwen3"]
    out = labelmask.mask_conversation(MESSAGES, tokenizer, return_tensors="pt")
    stock = tokenizer.apply_chat_template(MESSAGES, return_tensors="pt", return_dict=True)
    assert out["input_ids"].shape == stock["input_ids"].shape == (1, out.report.n_tokens)
    assert torch.equal(out["input_ids"], stock["input_ids"])
    for key in ("attention_mask", "labels", "loss_weights", "message_index", "role", "part"):
        assert out[key].shape == (1, out.report.n_tokens), key
    # numpy and lists stay one row, as before.
    assert labelmask.mask_conversation(MESSAGES, tokenizer, return_tensors="np")["input_ids"].ndim == 1
    assert isinstance(labelmask.mask_conversation(MESSAGES, tokenizer)["input_ids"][0], int)


@pytest.mark.parametrize("return_tensors", [None, "np", "pt"])
def test_to_device_gives_the_model_inputs_and_model_out_runs(tokenizers, return_tensors):
    tokenizer = tokenizers["qwen3"]
    out = labelmask.mask_conversation(MESSAGES, tokenizer, return_tensors=return_tensors)
    inputs = out.to("cpu")
    assert sorted(inputs) == ["attention_mask", "input_ids", "labels"]
    assert all(v.shape == (1, out.report.n_tokens) and v.device.type == "cpu" for v in inputs.values())
    model = tiny_model(tokenizer).eval()
    with torch.no_grad():
        result = model(**inputs)
        logits = model(input_ids=inputs["input_ids"]).logits[0]
    labels = np.asarray(labelmask.mask_conversation(MESSAGES, tokenizer, return_tensors="np")["labels"])
    targets = torch.tensor(labels[1:])
    keep = targets != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[:-1][keep], targets[keep])
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_to_device_keeps_a_processors_outputs():
    from PIL import Image

    from tests.fixtures import load_processor

    processor = load_processor("llava-1.5")
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "Red."},
    ]
    out = labelmask.mask_conversation(messages, processor, images=[Image.new("RGB", (40, 30), (200, 0, 0))])
    inputs = out.to("cpu")
    assert sorted(inputs) == ["attention_mask", "input_ids", "labels", "pixel_values"]
    assert inputs["input_ids"].shape == (1, out.report.n_tokens)
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 336, 336)


def test_truncation_and_eos_options_are_in_the_signatures(tokenizers):
    for function in (labelmask.mask_dataset, labelmask.Collator):
        parameters = inspect.signature(function).parameters
        for name in ("max_length", "truncation", "add_eos"):
            assert name in parameters and parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, (function, name)
    tokenizer = tokenizers["qwen3"]
    full = labelmask.mask_conversation(MESSAGES, tokenizer)
    cut = len(full["input_ids"]) - 3
    batch = labelmask.Collator(tokenizer, max_length=cut, return_tensors="np")([{"messages": MESSAGES}])
    assert batch["input_ids"].shape == (1, cut)
    assert batch["input_ids"][0].tolist() == full["input_ids"][:cut]
    with pytest.raises(labelmask.OptionError, match="max_length=0"):
        labelmask.Collator(tokenizer, max_length=0)


def test_pt_without_torch_fails_at_the_call(tokenizers, monkeypatch):
    tokenizer = tokenizers["qwen3"]
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError, as without it
    with pytest.raises(labelmask.OptionError, match="needs PyTorch"):
        labelmask.mask_conversation(MESSAGES, tokenizer, return_tensors="pt")
    with pytest.raises(labelmask.OptionError, match="needs PyTorch"):
        labelmask.Collator(tokenizer)  # its default is "pt"
    assert labelmask.Collator(tokenizer, return_tensors="np")([{"messages": MESSAGES}])["input_ids"].ndim == 2


def test_the_package_says_it_is_typed():
    assert (Path(labelmask.__file__).parent / "py.typed").is_file()


def test_show_prints_a_result_and_dataset_rows(tokenizers, capsys):
    from datasets import Dataset

    tokenizer = tokenizers["qwen3"]
    out = labelmask.mask_conversation(MESSAGES, tokenizer)
    assert labelmask.show(out, color=False) is None
    printed = capsys.readouterr().out
    assert "[Paris][.][<|im_end|>]" in printed and "Capital of France?" in printed and "assistant" in printed

    rows, _ = labelmask.mask_dataset(Dataset.from_list([{"messages": MESSAGES}] * 5), tokenizer)
    labelmask.show(rows, tokenizer, rows=2, color=False)
    printed = capsys.readouterr().out
    assert printed.count(f"tokens, {out.report.n_trained} trained") == 2 and "row 2" not in printed
    assert "Paris.<|im_end|>]" in printed and "Capital of France?" in printed
    labelmask.show(rows[0], tokenizer, color=True)
    assert "Paris.<|im_end|>\x1b[0m" in capsys.readouterr().out

    page = labelmask.show(out, html=True)
    assert "<html" in page._repr_html_() and "Paris" in str(page)
    with pytest.raises(labelmask.OptionError, match="needs the tokenizer"):
        labelmask.show(rows)
    with pytest.raises(labelmask.OptionError, match="not int"):
        labelmask.show(5)
