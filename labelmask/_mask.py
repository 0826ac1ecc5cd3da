"""The façade: messages -> render -> encode -> align -> policy, composed.

No logic of its own beyond resolving the template and packaging the result.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from labelmask._align import align, first_tokens, generated_segments
from labelmask._derive import derive
from labelmask._edit import apply_edits, eos_edits
from labelmask._encode import Encoded, backend_of, encode
from labelmask._guard import CHECK_MODES, CONTROL_TOKEN_MODES, check_labels, control_tokens_in, escape_if_injected
from labelmask._guard import _fail as fail_check
from labelmask._messages import normalize_conversation, plain_kwargs
from labelmask._parts import Role
from labelmask._policy import IGNORE_INDEX, Policy, apply_policy, label_runs, plan_runs, trained_messages
from labelmask._registry import AnnotatedTemplate, find_template, get_template, template_hash
from labelmask._render import Span, compile_template, named_spans, render_annotated, render_stock
from labelmask._vision import (
    added_tokens,
    attach_images,
    collect_images,
    expand,
    is_processor,
    openai_image_parts,
)
from labelmask.errors import (
    ConversationError,
    NoEndOfTurnWarning,
    NothingToTrainError,
    TemplateNotFoundError,
    TemplateRaisedError,
    TokenizerError,
)

__all__ = ["MaskReport", "MaskedConversation", "mask_conversation"]

_DEFAULT_POLICY = Policy()
# Template arguments that make no sense for a training sample.
_REFUSED_KWARGS = {
    "add_generation_prompt": "a training sample ends with the last assistant turn; drop add_generation_prompt",
    "continue_final_message": "a training sample's last turn is complete; drop continue_final_message",
    "messages": "pass the conversation as the first argument",
}


@dataclasses.dataclass(frozen=True)
class MaskReport:
    """What happened to one sample.

    Attributes:
        template: Name of the annotated template used (``"unregistered-<hash prefix>"``
            for a chat template without one).
        method: How the spans were found: ``"annotated"`` (a registered annotation),
            or, for an unregistered template, ``"generation"`` (its own
            ``{% generation %}`` blocks) or ``"differential"`` (prefix renders,
            verified); see docs/how-it-works.md.
        n_tokens: Tokens in the sample.
        n_trained: Tokens with a label (not -100).
        n_straddle: Trained tokens that merge a header's end with the reply's start.
        n_boundary_dropped: Tokens covering trained text left untrained because
            they also cover text that must not be trained (e.g. a reply's trailing
            space merged with the next turn's header).
        n_cut: Tokens removed by truncation to ``max_length``.
        n_dropped_messages: Messages dropped by ``truncation="turns"``.
        n_images: Images in the sample (a processor's; 0 for a tokenizer).
        n_eos_added: EOS tokens written after replies by ``add_eos=True``.
        n_control_tokens: Control-token strings found in the conversation's text (see
            ``control_tokens=``): never trained; kept, escaped, or refused.
    """

    template: str
    method: str
    n_tokens: int
    n_trained: int
    n_straddle: int
    n_boundary_dropped: int
    n_cut: int = 0
    n_dropped_messages: int = 0
    n_images: int = 0
    n_eos_added: int = 0
    n_control_tokens: int = 0


class MaskedConversation(Mapping):
    """The result of :func:`mask_conversation`: a read-only mapping of arrays.

    Keys: ``input_ids``, ``attention_mask``, ``labels`` (``-100`` where no loss),
    ``loss_weights`` (float32: the weight of the token's message where it is
    trained, 1.0 unless the message carries a ``"weight"``; 0.0 where no loss),
    and per-token provenance ``message_index`` (-1 for template text outside every
    message), ``role`` (a :class:`~labelmask.Role` code) and ``part`` (a
    :class:`~labelmask.Part` code). For a processor, also what it returns besides
    ``input_ids`` (``pixel_values``, ``image_sizes``, ``image_grid_thw``,
    ``token_type_ids``, ...). Values are lists, numpy arrays or torch tensors, as
    ``return_tensors`` asked.

    Attributes:
        text: The rendered conversation (identical to the stock template's render;
            for a processor, after it expanded the image placeholders, as its
            tokenizer saw it).
        offsets: ``int64[n_tokens, 2]`` character offsets of each token in ``text``.
        spans: Every tagged block of the annotated render, as
            ``Span(kind, message, start, end)`` character spans into ``text``.
        report: The sample's :class:`MaskReport`.
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        return_tensors: str | None,
        *,
        text: str,
        encoded: Encoded,
        spans: tuple,
        report: MaskReport,
        extras: dict[str, np.ndarray] | None = None,
    ):
        self._arrays = arrays
        self._extras = extras or {}  # per-image processor outputs: never cut, never padded
        self._return_tensors = return_tensors
        self._converted: dict[str, Any] = {}
        self.text = text
        self._encoded = encoded
        self._keep: np.ndarray | None = None  # token positions kept by truncation
        self._spans = spans
        self.report = report

    @property
    def offsets(self) -> np.ndarray:
        offsets = self._encoded.offsets
        return offsets if self._keep is None else offsets[self._keep]

    def subset(self, keep: np.ndarray) -> MaskedConversation:
        """The same sample restricted to the token positions ``keep`` (sorted); used by truncation."""
        arrays = {k: np.asarray(self._array(k))[keep] for k in self._arrays}
        out = MaskedConversation(
            arrays,
            self._return_tensors,
            text=self.text,
            encoded=self._encoded,
            spans=self._spans,
            report=self.report,
            extras=self._extras,
        )
        out._keep = keep if self._keep is None else self._keep[keep]
        out.report = dataclasses.replace(self.report, n_tokens=len(keep))
        return out

    def _array(self, key: str) -> np.ndarray:
        """The numpy array under ``key``, computed now if it was left for first use."""
        value = self._arrays[key]
        if callable(value):
            value = self._arrays[key] = value()
        elif type(value) is list:  # ids and labels come as lists (what return_tensors=None returns)
            value = self._arrays[key] = np.array(value, dtype=np.int64)
        return value

    def _replace_array(self, key: str, array: np.ndarray) -> None:
        """Set ``key`` to ``array`` (truncation and mask_turns relabel), dropping any converted copy."""
        self._arrays[key] = array
        self._converted.pop(key, None)

    @property
    def spans(self) -> tuple[Span, ...]:
        return named_spans(self._spans)

    def __getitem__(self, key: str) -> Any:
        # Converted on first access: a caller that reads two keys does not pay for six.
        if key not in self._converted:
            if key not in self._arrays:
                self._converted[key] = _convert(self._extras[key], self._return_tensors)
            elif self._return_tensors is None and type(self._arrays[key]) is list:
                self._converted[key] = self._arrays[key]
            else:
                self._converted[key] = _convert(self._array(key), self._return_tensors)
        return self._converted[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._arrays
        yield from self._extras

    def __len__(self) -> int:
        return len(self._arrays) + len(self._extras)

    def __repr__(self) -> str:
        r = self.report
        return f"<MaskedConversation {r.n_tokens} tokens, {r.n_trained} trained, template={r.template!r}>"


@lru_cache(maxsize=128)
def _resolve(stock_source: str, name: str | None, fallback: bool) -> AnnotatedTemplate | None:
    """The annotation to use, or ``None`` to derive spans from the stock template itself."""
    if name is not None:
        return get_template(name)
    try:
        return find_template(stock_source)
    except TemplateNotFoundError:
        if fallback:
            return None
        raise


def _stock_source(tokenizer: Any, tools: Any) -> str:
    chat_template = getattr(tokenizer, "chat_template", None)
    if chat_template is None and is_processor(tokenizer):
        chat_template = getattr(tokenizer.tokenizer, "chat_template", None)
    if chat_template is None:
        msg = (
            f"{type(tokenizer).__name__} has no chat_template. Set tokenizer.chat_template to the model's "
            "stock template (labelmask renders it to check every annotated render)."
        )
        raise TemplateNotFoundError(msg)
    if isinstance(chat_template, dict):
        key = "tool_use" if tools is not None and "tool_use" in chat_template else "default"
        if key not in chat_template:
            msg = f"The tokenizer has several chat templates ({sorted(chat_template)}) and no 'default'."
            raise TemplateNotFoundError(msg)
        return chat_template[key]
    return chat_template


def _convert(array: np.ndarray, return_tensors: str | None) -> Any:
    if return_tensors is None:
        return array.tolist()
    if return_tensors == "np":
        return array
    import torch

    dtype = np.float32 if array.dtype.kind == "f" else np.int64
    return torch.from_numpy(np.ascontiguousarray(array).astype(dtype, copy=False))


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
    add_eos: bool = False,
    processor_kwargs: dict[str, Any] | None = None,
    control_tokens: str = "keep",
    check: str = "off",
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
        add_eos: For a template that writes no end-of-turn token after a reply
            (LLaVA-1.5's), write the tokenizer's EOS after each reply and train it,
            so the model learns to stop. Off by default: the ids then differ from
            the stock template's. Without it such a template warns once
            (:class:`~labelmask.errors.NoEndOfTurnWarning`).
        processor_kwargs: Passed to the processor's call (``images_kwargs``, ...).
        control_tokens: What to do with control-token strings (the tokenizer's special
            tokens, ``<|im_end|>``) inside message text, which can forge a turn. They are
            never trained, whatever this says. ``"keep"`` (default): the ids the stock
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
        **template_kwargs: Passed to the template (``enable_thinking=False``, ``date_string=...``).

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
    vision = is_processor(processor)
    if vision:
        messages = openai_image_parts(messages)
    if images is not None:
        if not vision:
            msg = (
                f"images= needs a multimodal processor; {type(processor).__name__} is not one. Pass the model's "
                "processor (AutoProcessor), or drop the images for a text-only sample."
            )
            raise ConversationError(msg)
        messages = attach_images(messages, images)
    if max_length is not None:
        from labelmask._truncate import mask_truncated

        kwargs = dict(
            tools=tools,
            return_tensors=return_tensors,
            template=template,
            verify=verify,
            fallback=fallback,
            add_eos=add_eos,
            processor_kwargs=processor_kwargs,
            control_tokens=control_tokens,
            check=check,
        )
        return mask_truncated(
            mask_conversation,
            messages,
            processor,
            max_length=max_length,
            truncation=truncation,
            policy=policy,
            **kwargs,
            **template_kwargs,
        )
    options = _check_options(
        policy,
        return_tensors,
        template_kwargs,
        template=template,
        verify=verify,
        fallback=fallback,
        add_eos=add_eos,
        control_tokens=control_tokens,
        check=check,
    )
    tokenizer, backend = _check_processor(processor, vision)
    staged = _render_step(messages, processor, tokenizer, tools, options)
    if not vision:
        encoded = encode(backend, staged.rendered.text)
        return _finish_step(staged, encoded, options, tokenizer=tokenizer, backend=backend)
    if staged.escape:
        message = staged.injected[0][0]
        msg = (
            f"control_tokens='escape' is not supported with a multimodal processor (message {message} writes "
            f"{staged.injected[0][1]!r}; template {staged.name!r}): the processor tokenizes the text itself. "
            "Use control_tokens='keep' (never trained either way) or 'raise'."
        )
        raise ConversationError(msg, message_index=message, template=staged.name)
    image_list, owners = collect_images(messages)
    rendered, encoded, per_token, per_image = expand(
        processor,
        staged.rendered,
        image_list,
        owners,
        name=staged.name,
        annotated=staged.method == "annotated",
        processor_kwargs=processor_kwargs or {},
    )
    return _finish_step(
        staged._replace(rendered=rendered),
        encoded,
        options,
        vision=True,
        n_images=len(image_list),
        per_token=per_token,
        per_image=per_image,
        tokenizer=tokenizer,
        backend=backend,
    )


# The stages of mask_conversation, shared with mask_conversations (_batch.py), which renders
# every conversation, encodes them all in one call, then finishes each.


class _Staged(NamedTuple):
    """A conversation rendered, waiting for its encoding."""

    conversation: Any  # the normalized conversation (_messages.Conversation)
    rendered: Any  # _render.Rendered
    name: str
    method: str
    n_eos: int
    annotated: Any = None  # the AnnotatedTemplate used, or None (derived spans)
    injected: tuple = ()  # (message index, control token) found in the text
    escape: bool = False  # encode injected control tokens as plain text
    message_ok: list = []  # which messages the policy trains (_policy.trained_messages)
    runs: Any = None  # _policy.Runs of the render, made before tokenizing; None: make them when finishing


@dataclasses.dataclass(frozen=True)
class _Options:
    """What one call decides for every conversation it masks (checked once, by :func:`_check_options`)."""

    policy: Policy
    return_tensors: str | None
    template: str | None
    verify: bool
    fallback: bool
    add_eos: bool
    control_tokens: str
    check: str
    template_kwargs: dict[str, Any]


def _check_options(
    policy: Policy | None,
    return_tensors: str | None,
    template_kwargs: dict[str, Any],
    *,
    template: str | None = None,
    verify: bool = False,
    fallback: bool = True,
    add_eos: bool = False,
    control_tokens: str = "keep",
    check: str = "off",
) -> _Options:
    """The call's options, the default policy filled in; raises on options mask_conversation refuses."""
    policy = _DEFAULT_POLICY if policy is None else policy
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must be a labelmask.Policy, not {type(policy).__name__}")
    if return_tensors not in (None, "np", "pt"):
        raise ValueError(f"return_tensors={return_tensors!r}: use None (lists), 'np' or 'pt'.")
    if control_tokens not in CONTROL_TOKEN_MODES:
        raise ValueError(f"control_tokens={control_tokens!r}: use 'keep', 'escape' or 'raise'.")
    if check not in CHECK_MODES:
        raise ValueError(f"check={check!r}: use 'fast', 'full' or 'off'.")
    for key, why in _REFUSED_KWARGS.items():
        if key in template_kwargs:
            raise ConversationError(f"mask_conversation does not take {key}=: {why}.")
    return _Options(policy, return_tensors, template, verify, fallback, add_eos, control_tokens, check, template_kwargs)


def _check_processor(processor: Any, vision: bool) -> tuple[Any, Any]:
    """``(tokenizer, Rust tokenizer to encode with)``; raises for what cannot give offsets."""
    if type(processor).__name__ == "MistralCommonBackend":
        backend_of(processor)  # raises, saying how to get a fast tokenizer
    tokenizer = processor.tokenizer if vision else processor
    if not vision and not hasattr(processor, "backend_tokenizer") and hasattr(processor, "tokenizer"):
        msg = (
            f"{type(processor).__name__} has a tokenizer but no image processor, which labelmask does not mask; "
            "for text-only conversations pass processor.tokenizer."
        )
        raise TokenizerError(msg)
    return tokenizer, backend_of(tokenizer)


def _render_step(messages: Any, processor: Any, tokenizer: Any, tools: Any, options: _Options) -> _Staged:
    template_kwargs, policy = options.template_kwargs, options.policy
    stock_source = _stock_source(processor, tools)
    annotated = _resolve(stock_source, options.template, options.fallback)
    content_format = annotated.content_format if annotated is not None else "text"
    conversation = normalize_conversation(messages, tools, content_format=content_format)

    variables = {
        **tokenizer.special_tokens_map,
        **plain_kwargs(template_kwargs),
        "messages": conversation.messages,
        "_labelmask_messages": conversation.messages,
        "tools": conversation.tools,
        "documents": template_kwargs.get("documents"),
        "add_generation_prompt": False,
    }
    if annotated is None:
        name = "unregistered-" + template_hash(stock_source).removeprefix("sha256:")[:12]
        rendered, method = derive(stock_source, variables, conversation, name=name, processor=tokenizer, policy=policy)
    else:
        name, method = annotated.name, "annotated"
        rendered = _render_annotated(annotated, stock_source, variables, len(conversation.messages), options.verify)
    injected = control_tokens_in(tokenizer, conversation, options.control_tokens, name)
    rendered, n_eos = _end_of_turn(rendered, conversation.roles, tokenizer, name, options.add_eos)
    escape = bool(injected) and options.control_tokens == "escape"
    # What the policy trains is decided per run of text before tokenizing; the tokens only place it.
    # (A processor expands image placeholders first, which moves the runs: planned after that.)
    message_ok = trained_messages(policy, conversation.roles, conversation.train)
    runs = None
    if not is_processor(processor):
        runs = plan_runs(rendered, generated_segments(rendered, conversation.roles), message_ok, policy)
    return _Staged(conversation, rendered, name, method, n_eos, annotated, tuple(injected), escape, message_ok, runs)


def _finish_step(
    staged: _Staged,
    encoded: Encoded,
    options: _Options,
    *,
    vision: bool = False,
    n_images: int = 0,
    per_token: dict[str, np.ndarray] | None = None,
    per_image: dict[str, np.ndarray] | None = None,
    tokenizer: Any = None,
    backend: Any = None,
) -> MaskedConversation:
    policy, return_tensors, check = options.policy, options.return_tensors, options.check
    conversation, rendered, name, method, n_eos = staged[:5]
    if staged.escape:
        encoded = escape_if_injected(tokenizer, backend, rendered, encoded, staged.annotated, name)
    roles = conversation.roles
    unowned = added_tokens(encoded) if vision else ()
    message_ok = staged.message_ok
    runs = staged.runs
    if runs is None:
        runs = plan_runs(rendered, generated_segments(rendered, roles), message_ok, policy)
    firsts, straddles = first_tokens(encoded, runs.bounds)
    ids = encoded.id_list
    labels, n_straddle, n_dropped = label_runs(runs, firsts, straddles, ids, policy, unowned)
    # Per-token provenance is made on first use (MaskedConversation._array): a trainer reads ids and labels.
    provenance = _Provenance(rendered, encoded, roles, unowned)
    if check != "off":
        aligned = provenance.aligned
        trained = apply_policy(aligned, policy, message_ok).trained
        if not np.array_equal(trained, np.asarray(labels) != IGNORE_INDEX):
            fail_check(name, None, "the labels decided per run of text differ from those decided per segment")
        check_labels(rendered, encoded, aligned, trained, message_ok, policy, backend, name, check == "full")
    n_trained = len(labels) - labels.count(IGNORE_INDEX)
    report = MaskReport(
        template=name,
        method=method,
        n_tokens=len(ids),
        n_trained=n_trained,
        n_straddle=n_straddle,
        n_boundary_dropped=n_dropped,
        n_images=n_images,
        n_eos_added=n_eos,
        n_control_tokens=len(staged.injected),
    )
    if n_trained == 0 and policy.on_empty == "raise":
        trained_roles = ", ".join(sorted(policy.roles))
        n_messages = len(conversation.messages)
        which = f"a trained role ({trained_roles})" + (", last turn only" if policy.last_turn_only else "")
        if conversation.train is not None:
            which = f'a trained message (role {which}, or "train": True; none with "train": False)'
        msg = (
            f"Nothing to train: under template {name!r} no token of this {n_messages}-message "
            f"conversation belongs to {which} with text to learn. "
            "Every label would be -100 (zero loss, NaN gradients in a batch of such samples). "
            "Drop the sample, add an assistant reply, or pass Policy(on_empty='keep') to receive it "
            "and count it yourself."
        )
        raise NothingToTrainError(msg, template=name)
    n_tokens = len(ids)
    weights = conversation.weights
    arrays = {
        "input_ids": ids,
        "attention_mask": lambda: np.ones(n_tokens, dtype=np.int64),
        "labels": labels,
        "loss_weights": lambda: provenance.loss_weights(labels, weights),
        "message_index": lambda: provenance.aligned.token_message.astype(np.int64),
        "role": lambda: provenance.aligned.token_role.astype(np.int64),
        "part": lambda: provenance.aligned.token_part.astype(np.int64),
        **(per_token or {}),
    }
    return MaskedConversation(
        arrays,
        return_tensors,
        text=rendered.text,
        encoded=encoded,
        spans=rendered.spans,
        report=report,
        extras=per_image or {},
    )


# Templates already warned about writing no end of turn (once per process each).
_WARNED_NO_EOT: set[str] = set()


def _end_of_turn(rendered: Any, roles: tuple[int, ...], tokenizer: Any, name: str, add_eos: bool) -> tuple[Any, int]:
    """The render with an EOS after each reply that has no end of turn (``add_eos``), and how many were added.

    A template whose replies carry no end-of-turn span at all (LLaVA-1.5's) warns once
    per process without ``add_eos``: a model trained on it never learns to stop.
    """
    assistant = int(Role.ASSISTANT)
    replies = [m for m, role in enumerate(roles) if role == assistant]
    if not replies or (not add_eos and any(m in rendered.eots for m in replies)):
        return rendered, 0
    if not add_eos:
        if name not in _WARNED_NO_EOT:
            _WARNED_NO_EOT.add(name)
            msg = (
                f"Template {name!r} writes no end-of-turn token after assistant replies, so a model trained on "
                "its samples never learns to stop. Pass add_eos=True to write the tokenizer's EOS "
                f"({tokenizer.eos_token!r}) after each reply and train it."
            )
            warnings.warn(msg, NoEndOfTurnWarning, stacklevel=4)
        return rendered, 0
    eos = tokenizer.eos_token
    if not eos:
        raise TokenizerError(f"add_eos=True, but {type(tokenizer).__name__} has no eos_token; set one.")
    edits = eos_edits(rendered, roles, assistant, eos)
    return apply_edits(rendered, edits, name=name), len(edits)


class _Provenance:
    """Which message, role and part each token comes from: the full alignment, made on first use."""

    def __init__(self, rendered: Any, encoded: Encoded, roles: tuple[int, ...], unowned: Any) -> None:
        self._args = (rendered, encoded, roles, unowned if len(unowned) else None)
        self._aligned: Any = None

    @property
    def aligned(self) -> Any:
        if self._aligned is None:
            self._aligned = align(*self._args)
        return self._aligned

    def loss_weights(self, labels: list[int], weights: tuple[float, ...] | None) -> np.ndarray:
        """``float32[n_tokens]``: each trained token's message weight (1.0 without weights), 0.0 elsewhere."""
        trained = np.asarray(labels) != IGNORE_INDEX
        if weights is None:
            return trained.astype(np.float32)
        weight_of = np.append(np.asarray(weights, dtype=np.float32), np.float32(0))
        return np.where(trained, weight_of[self.aligned.token_message], np.float32(0))


def _render_annotated(
    annotated: AnnotatedTemplate, stock_source: str, variables: dict[str, Any], n_messages: int, verify: bool
) -> Any:
    template = compile_template(annotated.source, mode="annotate", name=annotated.name)
    expected = None
    try:
        if verify:
            stock_template = compile_template(stock_source, mode="stock", name=annotated.name)
            expected = render_stock(stock_template, variables, annotated.name)
        return render_annotated(template, variables, annotated.name, expected=expected, n_messages=n_messages)
    except TemplateRaisedError:
        # Rendered in trace mode, the annotation raises the same error from inside a turn, naming the message.
        trace = compile_template(annotated.source, mode="trace", name=annotated.name)
        render_annotated(trace, variables, annotated.name, expected=None, n_messages=n_messages)
        raise
