"""_pipeline: the options every entry point checks once, with one error class."""

from __future__ import annotations

import pytest

import labelmask
from labelmask._pipeline import Options, check_on_error, check_options

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"return_tensors": "tf"}, r"return_tensors='tf'"),
        ({"control_tokens": "strip"}, r"control_tokens='strip'"),
        ({"check": "x"}, r"check='x'"),
        ({"max_length": 0}, r"max_length=0"),
        ({"max_length": True}, r"max_length=True"),
        ({"truncation": "middle"}, r"truncation='middle'"),
        ({"policy": "assistant"}, r"policy must be a labelmask.Policy"),
        ({"add_eos": 1}, r"add_eos=1"),
    ],
)
def test_bad_options_raise_one_labelmask_class(tokenizers, kwargs, match):
    """mask_conversation and the Collator (which checks its options when made) raise OptionError, which
    ``except LabelmaskError``, ``except ValueError`` and ``except TypeError`` all catch."""
    entries = [lambda: labelmask.mask_conversation(HI, tokenizers["qwen3"], **kwargs)]
    if "return_tensors" not in kwargs:  # the Collator's return_tensors is its batch's, checked by the Collator
        entries.append(lambda: labelmask.Collator(tokenizers["qwen3"], **kwargs))
    for entry in entries:
        with pytest.raises(labelmask.OptionError, match=match) as info:
            entry()
        assert isinstance(info.value, labelmask.LabelmaskError)
        assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize("field", [{"roles": ["bot"]}, {"straddle": "keep"}, {"on_empty": "skip"}])
def test_bad_policy_fields_are_option_errors(field):
    with pytest.raises(labelmask.OptionError):
        labelmask.Policy(**field)


def test_options_default_and_carry_template_kwargs():
    options = check_options(enable_thinking=False)
    assert options.policy == labelmask.Policy()
    assert dict(options.template_kwargs) == {"enable_thinking": False}
    assert options == Options(template_kwargs={"enable_thinking": False})


def test_on_error_words():
    check_on_error("drop", ("raise", "drop"), "f")
    with pytest.raises(labelmask.OptionError, match=r"f\(on_error='return'\): use 'raise': .*f has no 'return'"):
        check_on_error("return", ("raise", "drop"), "f")
