"""The one-conversation entry point: :func:`mask_conversation`.

The steps are ``_pipeline``'s (shared with the batch, dataset, collator and per-exchange
entry points); truncation is ``_truncate``'s. The result type is ``_result``'s.
"""

from __future__ import annotations

from typing import Any

from labelmask._pipeline import check_options
from labelmask._policy import Policy
from labelmask._render import RenderBudget
from labelmask._result import MaskedConversation, MaskReport
from labelmask._truncate import mask_with

__all__ = ["MaskReport", "MaskedConversation", "mask_conversation"]


def mask_conversation(
    messages: Any,
    processor: Any,
    *,
    tools: list[dict[str, Any]] | None = None,
    policy: Policy | None = None,
    return_tensors: str | None = None,
    template: str | None = None,
    verify: bool = False,
    fallback: bool = True,
    max_length: int | None = None,
    truncation: str = "right",
    images: Any = None,
    add_eos: bool | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    control_tokens: str = "keep",
    check: str = "off",
    render_budget: RenderBudget | None = None,
    **template_kwargs: Any,
) -> MaskedConversation:
    """Tokenize a conversation as its chat template does and label what to train.

    Args:
        messages: OpenAI-style messages (``role``, ``content``, optional
            ``tool_calls``, ``reasoning_content``); content parts ``{"type": "image", "image": ...}``
            for a processor (the image under ``"image"``, ``"url"``, ``"path"`` or
            ``"base64"``, as the processor's ``apply_chat_template`` takes it). Two optional keys are
            labelmask's, removed before rendering: ``"train"`` (bool: train this
            message, or not, whatever the policy says of its role) and
            ``"weight"`` (a finite number >= 0, returned per trained token in
            ``loss_weights``). ``None`` counts as absent.
        processor: A fast ``transformers`` tokenizer, or a multimodal processor
            (``LlavaProcessor``, ``Qwen2VLProcessor``, ``Gemma3Processor``, ...) whose
            tokenizer is fast. Its chat template is matched to a registered
            annotation (or, with ``fallback``, derived).
        tools: Tool JSON schemas, passed to the template as ``apply_chat_template`` does.
        policy: What to train; default :class:`Policy` (assistant output only).
        return_tensors: ``None`` for lists, ``"np"`` for numpy arrays, ``"pt"`` for torch tensors.
        template: Name of an annotated template to use instead of matching the
            tokenizer's chat template (with ``verify=True`` the tokenizer's stock
            template is still rendered and compared).
        verify: Also render the tokenizer's stock template and check that the
            annotated render is identical (0.03 to 0.19 of apply_chat_template's time more). Off by default:
            every shipped annotation is proven identical by the property suite
            (``tests/test_invariants.py``); turn it on for data unlike anything
            those strategies draw, or for a template you annotated yourself.
        fallback: For a chat template no annotation matches, derive the spans from
            the stock template itself and verify them on this conversation (several
            renders per conversation; :class:`MaskReport` ``.method`` says which way);
            conversations they cannot be verified for raise
            :class:`~labelmask.errors.UnverifiedTemplateError`. ``False`` raises
            :class:`~labelmask.errors.TemplateNotFoundError` instead.
        max_length: Cut the sample to at most this many tokens, by ``truncation``:
            ``"right"`` (keep the start), ``"left"`` (keep the system prompt and the
            end), ``"turns"`` (drop the earliest exchanges and render again) or
            ``"drop"`` (raise :class:`~labelmask.errors.TruncationError`). The report
            counts what was cut; nothing left to train raises as usual.
        truncation: See ``max_length``. With images, ``"right"`` and ``"left"`` never
            cut into an image's token run: such a sample raises
            :class:`~labelmask.errors.TruncationError` (``"turns"`` shortens it at
            an exchange boundary, dropping the images of dropped turns).
        images: For a processor: images for the image parts that carry none, in order.
        add_eos: Write a stop token the stock render lacks after a reply, and train it, so
            the model learns to stop; the ids then differ from the stock template's by those
            tokens (counted in ``report.n_eos_added``). ``None`` (default): the template
            decides: one whose replies are closed by the next turn's header (GLM-4.5) gets its
            stop (``<|user|>``) after the conversation's last reply, which nothing closes;
            one that writes no end of turn at all (LLaVA-1.5) gets nothing and warns once
            (:class:`~labelmask.errors.NoEndOfTurnWarning`). ``True``: the tokenizer's EOS
            after every reply without an end of turn (GLM-4.5: its ``<|user|>`` after the last).
            ``False``: never (the stock ids exactly; GLM-4.5 then warns once).
        processor_kwargs: Passed to the processor's call (``images_kwargs``, ...).
        control_tokens: What to do with control-token strings (the tokenizer's special
            tokens, ``<|im_end|>``) inside message text, tool schemas and template arguments,
            which can forge a turn. They are never trained, whatever this says (an
            assistant reply's included). ``"keep"`` (default): the ids the stock
            template gives, counted in ``report.n_control_tokens``; ``"escape"``: each is
            tokenized as plain text (the other ids stay the stock ones); ``"raise"``:
            :class:`~labelmask.errors.ControlTokenError` naming the message and token.
            With a multimodal processor, ``"escape"`` is refused.
        check: The fail-closed check: raise :class:`~labelmask.errors.MaskCheckError`
            rather than return labels it cannot verify from the tokenizer's own offsets
            (``"fast"``: the labels decided per run of text equal those decided per segment, and
            every run of trained tokens lies inside one trained reply; 23 to 33% more time) and
            decoder (``"full"``: also decodes each run back to the text it covers and checks every
            trained character is covered; 35 to 66% more). ``"off"`` by default, for that cost
            (docs/how-it-works.md).
        render_budget: How long one render of the chat template may take and how much it may
            write (:class:`~labelmask.RenderBudget`; default 60 s and 2**25 characters, far above any
            real template). Past it: :class:`~labelmask.errors.RenderBudgetError`.
        **template_kwargs: Passed to the template (``enable_thinking=False``, ``date_string=...``).
            A keyword the template does not read raises :class:`~labelmask.errors.OptionError`
            with the closest known name (``return_tensor=`` -> ``return_tensors=``).

    Returns:
        A :class:`MaskedConversation`.

    Raises:
        ConversationError: malformed messages.
        TemplateNotFoundError: no annotation for the tokenizer's chat template (with ``fallback=False``).
        UnverifiedTemplateError: no annotation, and the derived spans fail their checks on this conversation.
        TemplateRaisedError: the template rejected the conversation.
        RenderParityError: with ``verify=True``, the annotated render differs from the stock render.
        TokenizerError: not a fast tokenizer.
        NothingToTrainError: the policy trains no token (``Policy(on_empty="keep")`` returns it instead).
        TruncationError: the sample is over ``max_length`` and ``truncation`` refuses or cannot shorten it
            (or would cut through an image).
        ControlTokenError: with ``control_tokens="raise"``, a message's text contains a control token.
        MaskCheckError: the fail-closed check refused the labels (a bug; never a wrong sample returned).

    Example:
        >>> out = mask_conversation(
        ...     [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], tokenizer
        ... )  # doctest: +SKIP
        >>> [t for t, l in zip(out["input_ids"], out["labels"]) if l != -100]  # doctest: +SKIP
    """
    options = check_options(
        policy=policy,
        return_tensors=return_tensors,
        template=template,
        verify=verify,
        fallback=fallback,
        add_eos=add_eos,
        control_tokens=control_tokens,
        check=check,
        max_length=max_length,
        truncation=truncation,
        processor_kwargs=processor_kwargs,
        render_budget=render_budget,
        **template_kwargs,
    )
    return mask_with(messages, processor, tools, options, images)
