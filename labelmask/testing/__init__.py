"""Property-test a chat template annotation in your own CI (needs ``hypothesis``: ``pip install labelmask[test]``).

Register the annotation, then check it against the stock template and your tokenizer::

    import labelmask, labelmask.testing

    def test_my_template():
        tokenizer = AutoTokenizer.from_pretrained("path/to/my-model")
        labelmask.register_template("my-model", open("my-model.jinja").read(), matches=[tokenizer.chat_template])
        labelmask.testing.check_template(tokenizer, template="my-model", eot="<|end|>")

:func:`check_template` draws conversations (:func:`strategies.conversations`) and
checks each with :func:`check_conversation`: render and token parity with
``apply_chat_template``, each assistant header equal to the generation prompt,
soundness (no trained token outside a reply), completeness (every reply character
trained), the end-of-turn token trained. A violation raises ``AssertionError``
with the smallest conversation Hypothesis finds.
"""

from __future__ import annotations

from typing import Any

from labelmask._result import MaskedConversation
from labelmask.errors import OptionError
from labelmask.testing import strategies
from labelmask.testing._append import AppendOnlyResult, check_append_only
from labelmask.testing._checks import CHECKS, Expect, Sample, check_sample
from labelmask.testing.strategies import conversations, texts, tool_calls

__all__ = [
    "CHECKS",
    "AppendOnlyResult",
    "Expect",
    "check_append_only",
    "check_conversation",
    "check_template",
    "conversations",
    "strategies",
    "texts",
    "tool_calls",
]


def check_conversation(
    messages: list[dict],
    tokenizer: Any,
    *,
    tools: list[dict] | None = None,
    template: str | None = None,
    eot: Any = ...,
    expect: Expect | None = None,
    **template_kwargs: Any,
) -> MaskedConversation:
    """Mask one conversation and check every invariant on it.

    Args:
        messages: As for :func:`labelmask.mask_conversation` (first, as there).
        tokenizer: A fast tokenizer whose ``chat_template`` is the stock template.
        tools: As for :func:`labelmask.mask_conversation`.
        template: Name of the annotation under test (``None``: the one matched to the tokenizer).
        eot: The end-of-turn string the template writes after a reply, ``None`` if it
            writes none; by default the annotation's own ``eot`` spans (weaker).
        expect: Everything else known about the template (:class:`Expect`); overrides ``eot``.
        **template_kwargs: As for :func:`labelmask.mask_conversation`.

    Returns:
        The :class:`~labelmask.MaskedConversation`, for further checks.

    Raises:
        AssertionError: an invariant does not hold.
        labelmask.LabelmaskError: labelmask refused the conversation.
    """
    if hasattr(messages, "apply_chat_template") and not hasattr(tokenizer, "apply_chat_template"):
        msg = (
            "check_conversation takes (messages, tokenizer), in mask_conversation's order; it was given the "
            "tokenizer first."
        )
        raise OptionError(msg)
    expect = expect if expect is not None else Expect(eot=eot, template=template)
    sample = Sample.mask(tokenizer, messages, tools, expect, template=template, **template_kwargs)
    check_sample(sample)
    return sample.out


def check_template(
    tokenizer: Any,
    *,
    template: str | None = None,
    eot: Any = ...,
    conversations: Any = None,
    template_kwargs: Any = None,
    expect: Expect | None = None,
    max_examples: int = 100,
) -> None:
    """Property-test an annotation against the stock template on drawn conversations.

    Args:
        tokenizer: A fast tokenizer whose ``chat_template`` is the stock template.
        template: Name of the registered annotation under test (``None``: the matched one).
        eot: As for :func:`check_conversation`.
        conversations: A Hypothesis strategy of ``(messages, tools)``; default
            ``strategies.conversations()`` (user/assistant turns with an optional system
            prompt). Pass ``strategies.conversations(tools=True, tool_role=True, ...)``
            for what your template supports.
        template_kwargs: A dict, or a strategy of dicts, of template arguments.
        expect: Everything known about the template (:class:`Expect`); overrides ``eot``.
        max_examples: How many conversations to draw.

    Raises:
        AssertionError: with the falsifying conversation.
    """
    from hypothesis import given, settings
    from hypothesis import strategies as st

    strategy = conversations if conversations is not None else strategies.conversations()
    if template_kwargs is None or isinstance(template_kwargs, dict):
        kwargs_strategy = st.just(dict(template_kwargs or {}))
    else:
        kwargs_strategy = template_kwargs
    expect = expect if expect is not None else Expect(eot=eot, template=template)

    @settings(max_examples=max_examples, deadline=None)
    @given(drawn=strategy, kwargs=kwargs_strategy)
    def run(drawn: Any, kwargs: dict) -> None:
        messages, tools = drawn
        check_conversation(messages, tokenizer, tools=tools, template=template, expect=expect, **kwargs)

    run()
