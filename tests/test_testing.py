"""labelmask.testing: the documented example runs, and the checks catch broken annotations."""

from __future__ import annotations

import re

import pytest

import labelmask
import labelmask.testing
from tests.fixtures import HERE, load_tokenizer

DOC = HERE.parent.parent / "docs" / "annotating.md"
STOCK = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GOOD = (
    "{% for m in messages %}{% span 'turn', loop.index0 %}"
    "{% span 'header' %}<|im_start|>{{ m.role }}\n{% endspan %}"
    "{% span 'content' %}{{ m.content }}{% endspan %}"
    "{% span 'eot' %}<|im_end|>{% endspan %}{{ '\\n' }}{% endspan %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(autouse=True)
def _restore_registry(registry):
    """Registrations made by a test do not outlive it (conftest's registry fixture)."""


def documented_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- START register-and-check -->\n```python\n(.*?)```\n<!-- END", text, re.S)
    assert block, "docs/annotating.md lost its register-and-check example"
    return block.group(1)


def test_the_documented_example_registers_and_checks_a_template_in_ten_lines():
    code = documented_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    assert "register_template" in code and "check_template" in code
    exec(compile(code, str(DOC), "exec"), {})
    assert "my-model" in labelmask.templates()


def tokenizer_with(stock=STOCK):
    tokenizer = load_tokenizer("qwen3")
    tokenizer.chat_template = stock
    return tokenizer


def test_a_correct_annotation_passes_with_tools_and_reasoning_drawn():
    tokenizer = tokenizer_with()
    labelmask.register_template("good", GOOD, matches=[STOCK])
    strategy = labelmask.testing.conversations(reasoning=True, max_turns=6)
    labelmask.testing.check_template(
        tokenizer, template="good", eot="<|im_end|>", conversations=strategy, max_examples=30
    )


BROKEN = {
    # The newline after <|im_end|> marked as end of turn: it would be trained.
    "eot takes the newline": GOOD.replace("<|im_end|>{% endspan %}{{ '\\n' }}", "<|im_end|>{{ '\\n' }}{% endspan %}"),
    # The header stops before its newline: the generation prompt's newline would be trained.
    "header without its newline": GOOD.replace("{{ m.role }}\n{% endspan %}", "{{ m.role }}{% endspan %}\n"),
    # The annotation writes a space the stock template does not.
    "render differs": GOOD.replace("{{ m.content }}{% endspan %}", "{{ m.content }} {% endspan %}"),
    # No eot span: the end-of-turn token is left untrained.
    "eot untagged": GOOD.replace("{% span 'eot' %}<|im_end|>{% endspan %}", "<|im_end|>"),
    # The turn of every message tagged as message 0: replies are credited to the first message.
    "wrong message": GOOD.replace("{% span 'turn', loop.index0 %}", "{% span 'turn', 0 %}"),
}


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_check_template_catches_a_broken_annotation(what):
    tokenizer = tokenizer_with()
    labelmask.register_template("broken", BROKEN[what], matches=[STOCK])
    with pytest.raises(Exception) as info:
        labelmask.testing.check_template(tokenizer, template="broken", eot="<|im_end|>", max_examples=50)
    # A violated invariant, or labelmask refusing the broken annotation; several at once come as a group.
    failure = info.value
    assert isinstance(failure, (AssertionError, labelmask.LabelmaskError)) or "ExceptionGroup" in type(failure).__name__


def test_check_conversation_returns_the_masked_conversation_and_names_the_failure():
    tokenizer = tokenizer_with()
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    labelmask.register_template("good", GOOD, matches=[STOCK])
    out = labelmask.testing.check_conversation(messages, tokenizer, template="good", eot="<|im_end|>")
    assert out.report.template == "good"
    labelmask.register_template("broken", BROKEN["eot takes the newline"], matches=[STOCK])
    with pytest.raises(AssertionError, match="differs from differential"):
        labelmask.testing.check_conversation(messages, tokenizer, template="broken", eot="<|im_end|>")


def test_generation_prompt_check_skips_a_cut_the_template_refuses():
    """Found by tests/test_fuzz.py: Qwen3's template takes this conversation whole but raises on it cut after
    message 5 (it calls .strip() on a final reply's reasoning, here a list). The check compares prefixes, so it
    has no reference there; it must skip that reply, not fail on the stock template's error."""
    from labelmask.testing._checks import Expect, Sample, check_header_is_the_generation_prompt

    tokenizer = load_tokenizer("qwen3")
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Lima"}}}
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "", "reasoning_content": [], "tool_calls": [call]},
        {"role": "tool", "content": "d"},
    ]
    with pytest.raises(Exception, match="strip"):
        tokenizer.apply_chat_template(messages[:4], tokenize=False)
    out = labelmask.mask_conversation(messages, tokenizer, return_tensors="np")
    sample = Sample(tokenizer, messages, None, {}, out, Expect(eot="<|im_end|>", template="qwen3"))
    check_header_is_the_generation_prompt(sample)  # reply 1 still checked, reply 3 skipped
