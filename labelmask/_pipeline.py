"""The pipeline's steps, which every entry point runs: one conversation (``_mask``), a batch
(``_batch``), a truncated sample (``_truncate``), each exchange (``_turns``), a dataset row and
a collator feature.

The order, with the module of each stage::

    normalize (_messages) -> render (_render, or _derive without an annotation)
      -> guard (_guard: control tokens) -> edit (_edit: EOS after replies, add_eos)
      -> plan (_policy: what each run of text gets) -> encode (_encode; _vision expands images)
      -> locate (_align: runs to tokens) -> label (_policy) -> result (_result)

:func:`render_step` does everything before the tokenizer and :func:`finish_step` everything
after it, so the batch engine can tokenize many rendered conversations in one call between
them. :class:`Options` holds what one call decides for every conversation it masks, checked
once at the public boundary by :func:`check_options`.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from labelmask._align import first_tokens, generated_segments
from labelmask._derive import derive
from labelmask._dropped import FIELDS, not_rendered
from labelmask._edit import apply_edits, eos_edits, shift_spans
from labelmask._encode import Encoded, backend_of, encode, special_tokens
from labelmask._guard import (
    CHECK_MODES,
    CONTROL_TOKEN_MODES,
    check_labels,
    content_writers,
    control_tokens_in,
    data_written_spans,
    escape_if_injected,
    written_tokens,
)
from labelmask._guard import fail as fail_check
from labelmask._messages import normalize_conversation, plain_kwargs
from labelmask._parts import Role
from labelmask._policy import IGNORE_INDEX, Policy, apply_policy, label_runs, plan_runs, trained_messages
from labelmask._registry import REGISTRY, AnnotatedTemplate, template_hash
from labelmask._render import (
    RenderBudget,
    compile_template,
    render_annotated,
    render_stock,
    reset_budget,
    set_budget,
    template_variables,
)
from labelmask._result import MaskedConversation, MaskReport, Provenance
from labelmask._vision import added_tokens, attach_images, collect_images, expand, is_processor, openai_image_parts
from labelmask.errors import (
    ControlTokenError,
    ConversationError,
    NoEndOfTurnWarning,
    NothingToTrainError,
    NotRenderedError,
    NotRenderedWarning,
    OptionError,
    TemplateNotFoundError,
    TemplateRaisedError,
    TokenizerError,
)

__all__ = [
    "KNOWN_OPTIONS",
    "Options",
    "Staged",
    "check_on_error",
    "check_options",
    "check_processor",
    "check_template_kwargs",
    "with_row_kwargs",
    "require_torch",
    "finish_step",
    "mask_one",
    "render_generation_prompt",
    "render_step",
    "with_images",
]

TRUNCATION_MODES = ("right", "left", "turns", "drop")
_DEFAULT_POLICY = Policy()
# Template arguments that make no sense for a training sample.
_REFUSED_KWARGS = {
    "add_generation_prompt": "a training sample ends with the last assistant turn; drop add_generation_prompt",
    "continue_final_message": "a training sample's last turn is complete; drop continue_final_message",
    "messages": "pass the conversation as the first argument",
}


@dataclasses.dataclass(frozen=True)
class Options:
    """What one call decides for every conversation it masks; the arguments of
    :func:`~labelmask.mask_conversation` of the same names (checked by :func:`check_options`)."""

    policy: Policy = _DEFAULT_POLICY
    return_tensors: str | None = None
    template: str | None = None
    verify: bool = False
    fallback: bool = True
    add_eos: bool | None = None
    control_tokens: str = "keep"
    check: str = "off"
    max_length: int | None = None
    truncation: str = "right"
    processor_kwargs: Mapping[str, Any] | None = None
    template_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    render_budget: RenderBudget | None = None  # None: the default RenderBudget()


def check_options(
    *,
    policy: Policy | None = None,
    return_tensors: str | None = None,
    template: str | None = None,
    verify: bool = False,
    fallback: bool = True,
    add_eos: bool | None = None,
    control_tokens: str = "keep",
    check: str = "off",
    max_length: int | None = None,
    truncation: str = "right",
    processor_kwargs: Mapping[str, Any] | None = None,
    render_budget: RenderBudget | None = None,
    **template_kwargs: Any,
) -> Options:
    """The call's :class:`Options`, the default policy filled in.

    Raises:
        OptionError: an option mask_conversation refuses (also a ``ValueError`` and a ``TypeError``).
        ConversationError: a template argument that makes no sense for a training sample.
    """
    policy = _DEFAULT_POLICY if policy is None else policy
    if not isinstance(policy, Policy):
        raise OptionError(f"policy must be a labelmask.Policy, not {type(policy).__name__}")
    if add_eos is not None and not isinstance(add_eos, bool):
        raise OptionError(f"add_eos={add_eos!r}: use None (the template decides), True or False.")
    if template is not None and not isinstance(template, str):
        raise OptionError(f"template={template!r:.80}: use the name of an annotated template (a str), or None.")
    if not (return_tensors is None or isinstance(return_tensors, str) and return_tensors in ("np", "pt")):
        raise OptionError(f"return_tensors={return_tensors!r}: use None (lists), 'np' or 'pt'.")
    if return_tensors == "pt":
        require_torch("return_tensors='pt'")
    if not (isinstance(control_tokens, str) and control_tokens in CONTROL_TOKEN_MODES):
        raise OptionError(f"control_tokens={control_tokens!r}: use 'keep', 'escape' or 'raise'.")
    if not (isinstance(check, str) and check in CHECK_MODES):
        raise OptionError(f"check={check!r}: use 'fast', 'full' or 'off'.")
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1):
        raise OptionError(f"max_length={max_length!r}: use a positive int.")
    if not (isinstance(truncation, str) and truncation in TRUNCATION_MODES):
        raise OptionError(f"truncation={truncation!r}: use one of {', '.join(map(repr, TRUNCATION_MODES))}.")
    if render_budget is not None and not isinstance(render_budget, RenderBudget):
        raise OptionError(f"render_budget={render_budget!r:.80}: use labelmask.RenderBudget(seconds=..., chars=...).")
    for key, why in _REFUSED_KWARGS.items():
        if key in template_kwargs:
            raise ConversationError(f"mask_conversation does not take {key}=: {why}.")
    return Options(
        policy,
        return_tensors,
        template,
        verify,
        fallback,
        add_eos,
        control_tokens,
        check,
        max_length,
        truncation,
        processor_kwargs,
        template_kwargs,
        render_budget,
    )


def require_torch(what: str) -> None:
    """Raise :class:`OptionError` at the call, not at the first tensor, when torch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        msg = f"{what} needs PyTorch, which is not installed: pip install torch (or use return_tensors='np' or None)."
        raise OptionError(msg) from None


# The keyword arguments of labelmask's masking functions, which a misspelt keyword is compared with.
KNOWN_OPTIONS = (
    "tools",
    "policy",
    "return_tensors",
    "template",
    "verify",
    "fallback",
    "max_length",
    "truncation",
    "images",
    "add_eos",
    "processor_kwargs",
    "render_budget",
    "control_tokens",
    "check",
    "on_error",
    "chunk_size",
    "padding_side",
    "pad_to_multiple_of",
    "packing",
    "return_loss_weights",
    "return_provenance",
    "messages_key",
    "tools_key",
    "images_key",
)


def check_template_kwargs(processor: Any, template_kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`OptionError` for a keyword argument that neither labelmask nor the processor's chat
    template reads (``return_tensor="pt"``, ``max_lenght=2``): passed on to the template, it would be
    ignored in silence. The template's names are ``jinja2.meta.find_undeclared_variables`` of its source
    (every variant of a tokenizer with several)."""
    if not template_kwargs:
        return
    chat_template = getattr(processor, "chat_template", None)
    if chat_template is None and is_processor(processor):
        chat_template = getattr(processor.tokenizer, "chat_template", None)
    if not isinstance(chat_template, (str, dict)):
        return  # no template: _stock_source says so when rendering
    sources = chat_template.values() if isinstance(chat_template, dict) else (chat_template,)
    read: set[str] = set()
    for source in sources:
        names = template_variables(source) if isinstance(source, str) else None
        if names is None:
            return  # a template that does not parse: its error comes when it is rendered
        read |= names
    unknown = [k for k in template_kwargs if k not in read]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, [*KNOWN_OPTIONS, *sorted(read)], n=1)
        hint = f"did you mean {close[0]}=? " if close else ""
        msg = (
            f"Unknown keyword argument {key}=: labelmask does not take it and the chat template does not read it "
            f"({hint}the template reads {', '.join(sorted(read)) or 'no variable'}). Passed on, it would be ignored."
        )
        raise OptionError(msg)


ROW_KWARGS_COLUMN = "chat_template_kwargs"
"""TRL's per-row template arguments (a dataset column, or a key of a collator's feature)."""


def with_row_kwargs(options: Options, processor: Any, row_kwargs: Any) -> Options:
    """``options`` with a row's ``chat_template_kwargs`` over the call's template arguments (checked as
    those are: a name the template does not read is refused). ``None`` values, which Arrow fills in for
    keys other rows set, count as absent."""
    if row_kwargs is None:
        return options
    if not isinstance(row_kwargs, Mapping):
        msg = f"{ROW_KWARGS_COLUMN} must be a mapping of template arguments, not {type(row_kwargs).__name__}."
        raise ConversationError(msg)
    row = {k: v for k, v in row_kwargs.items() if v is not None}
    names = [k for k in row if not isinstance(k, str)]
    if names:
        raise ConversationError(f"{ROW_KWARGS_COLUMN} names template arguments with strings, not {names[0]!r:.40}.")
    if not row:
        return options
    for key, why in _REFUSED_KWARGS.items():
        if key in row:
            raise ConversationError(f"{ROW_KWARGS_COLUMN} may not hold {key}: {why}.")
    merged = {**options.template_kwargs, **row}
    check_template_kwargs(processor, merged)
    return dataclasses.replace(options, template_kwargs=merged)


# What a function that masks many conversations does with one that raises a LabelmaskError; the same
# word means the same thing in every function that takes it.
ON_ERROR = {
    "raise": "raise the first error, naming the conversation (its index or row)",
    "drop": "leave the conversation out of the result and count it",
    "return": "put the error in the conversation's place in the result",
}


def check_on_error(on_error: Any, allowed: tuple[str, ...], function: str) -> None:
    """Raise :class:`OptionError` unless ``on_error`` is one of ``allowed`` (words of :data:`ON_ERROR`)."""
    if not (isinstance(on_error, str) and on_error in allowed):
        choices = "; ".join(f"{word!r}: {ON_ERROR[word]}" for word in allowed)
        others = [w for w in ON_ERROR if w not in allowed]
        why = f" ({function} has no {', '.join(map(repr, others))})" if others else ""
        raise OptionError(f"{function}(on_error={on_error!r}): use {choices}{why}.")


def check_processor(processor: Any, vision: bool) -> tuple[Any, Any]:
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


def with_images(messages: Any, processor: Any, images: Any) -> Any:
    """``messages`` with ``images`` put into the image parts that carry none, in order (a processor's only)."""
    if not is_processor(processor):
        msg = (
            f"images= needs a multimodal processor; {type(processor).__name__} is not one. Pass the model's "
            "processor (AutoProcessor), or drop the images for a text-only sample."
        )
        raise ConversationError(msg)
    return attach_images(openai_image_parts(messages), images)


def mask_one(messages: Any, processor: Any, tools: Any, options: Options, images: Any = None) -> MaskedConversation:
    """One conversation through every step, untruncated (``options.max_length`` is ``_truncate``'s)."""
    vision = is_processor(processor)
    if vision:
        messages = openai_image_parts(messages)
    if images is not None:
        messages = with_images(messages, processor, images)
    tokenizer, backend = check_processor(processor, vision)
    staged = render_step(messages, processor, tokenizer, tools, options)
    if not vision:
        encoded = encode(backend, staged.rendered.text)
        return finish_step(staged, encoded, options, tokenizer=tokenizer, backend=backend)
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
        processor_kwargs=dict(options.processor_kwargs or {}),
    )
    return finish_step(
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


class Staged(NamedTuple):
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
    not_rendered: tuple = ()  # (message, field) the render does not show (_dropped.not_rendered)
    marked: tuple = ()  # character spans of control tokens the data wrote outside content (_guard.data_written_spans)
    writers: frozenset = frozenset()  # messages whose content spans hold only the data's control tokens (_guard)


def render_step(messages: Any, processor: Any, tokenizer: Any, tools: Any, options: Options) -> Staged:
    """Render the conversation (every render under ``options.render_budget``) and plan its labels."""
    token = set_budget(options.render_budget)
    try:
        return _render_step(messages, processor, tokenizer, tools, options)
    finally:
        reset_budget(token)


def _render_step(messages: Any, processor: Any, tokenizer: Any, tools: Any, options: Options) -> Staged:
    template_kwargs, policy = options.template_kwargs, options.policy
    check_template_kwargs(processor, template_kwargs)
    stock_source = _stock_source(processor, tools)
    annotated = REGISTRY.lookup(stock_source, options.template, options.fallback)
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
    # Template arguments are data, but for the tokenizer's own bos_token and the like.
    data_kwargs = {k: v for k, v in variables.items() if k in template_kwargs and k not in tokenizer.special_tokens_map}
    dropped = not_rendered(conversation.messages, rendered, derived=annotated is None)
    injected = control_tokens_in(tokenizer, conversation, options.control_tokens, name, data_kwargs)
    marked: tuple = ()
    writers: frozenset = frozenset()
    if injected:
        specials = special_tokens(tokenizer)
        writers, unsure = content_writers(conversation.messages, rendered, specials)
        data_keys = {"tools", "documents", *data_kwargs}
        marked = data_written_spans(stock_source, variables, data_keys, specials, rendered.text, name, unsure)
        if marked and is_processor(processor):
            msg = (
                f"Control tokens written where only a second render can place them ({injected[0][1]!r}; "
                f"template {name!r}: in tool calls, reasoning, tool schemas, template arguments, or a text the "
                "template does not write as given) are not supported with a multimodal processor. Remove them "
                "from the data."
            )
            raise ControlTokenError(msg, message_index=injected[0][0], template=name, token=injected[0][1])
    final_eot = annotated.final_eot if annotated is not None else ""
    rendered, eos = _end_of_turn(rendered, conversation.roles, tokenizer, name, options.add_eos, final_eot)
    n_eos = len(eos)
    if marked and eos:
        marked = shift_spans(marked, eos)
    escape = bool(injected) and options.control_tokens == "escape"
    # What the policy trains is decided per run of text before tokenizing; the tokens only place it.
    # (A processor expands image placeholders first, which moves the runs: planned after that.)
    message_ok = trained_messages(policy, conversation.roles, conversation.train)
    if dropped:
        message_ok = _on_dropped(dropped, conversation, message_ok, policy, name)
    runs = None
    if not is_processor(processor):
        runs = plan_runs(rendered, generated_segments(rendered, conversation.roles), message_ok, policy)
    return Staged(
        conversation,
        rendered,
        name,
        method,
        n_eos,
        annotated,
        tuple(injected),
        escape,
        message_ok,
        runs,
        dropped,
        marked,
        writers,
    )


def render_generation_prompt(messages: Any, processor: Any, tools: Any, options: Options) -> str:
    """The stock template's render of ``messages`` with ``add_generation_prompt=True``: what the model
    reads before it generates the next reply (under ``options.render_budget``, as every render)."""
    token = set_budget(options.render_budget)
    try:
        stock_source = _stock_source(processor, tools)
        annotated = REGISTRY.lookup(stock_source, options.template, options.fallback)
        content_format = annotated.content_format if annotated is not None else "text"
        conversation = normalize_conversation(messages, tools, content_format=content_format)
        name = (
            annotated.name
            if annotated is not None
            else "unregistered-" + template_hash(stock_source).removeprefix("sha256:")[:12]
        )
        variables = {
            **processor.special_tokens_map,
            **plain_kwargs(options.template_kwargs),
            "messages": conversation.messages,
            "tools": conversation.tools,
            "documents": options.template_kwargs.get("documents"),
            "add_generation_prompt": True,
        }
        return render_stock(compile_template(stock_source, mode="stock", name=name), variables, name)
    finally:
        reset_budget(token)


# (template, field) pairs already warned about (once per process each).
_WARNED_NOT_RENDERED: set[tuple[str, str]] = set()
_REMEDY = {
    "content": "the template does not write this text (some drop a whole tool result, some a reply's text "
    "when it makes tool calls)",
    "tool_calls": "the reply renders without them, as if the model had made no call",
    "images": "the template writes no image placeholder for it, so the model never sees the image",
    "name": "the model never sees it (for a tool result: which tool answered)",
    "tool_call_id": "the model never sees it (most templates match results to calls by order)",
}


def _on_dropped(
    dropped: tuple[tuple[int, str], ...], conversation: Any, message_ok: list[bool], policy: Policy, name: str
) -> list[bool]:
    """Refuse or skip trained replies whose tool calls are not rendered; warn once per template and field.

    Returns:
        ``message_ok``, with the replies ``Policy(on_dropped_tool_calls="skip")`` leaves untrained.
    """
    roles = conversation.roles
    assistant = int(Role.ASSISTANT)
    last_reply = max((m for m, role in enumerate(roles) if role == assistant), default=-1)
    carried = [m for m, message in enumerate(conversation.messages) if message.get("reasoning_content")]
    skipped = list(message_ok)
    for m, field in dropped:
        if field != "tool_calls" or not message_ok[m] or policy.on_dropped_tool_calls == "train":
            continue
        if policy.on_dropped_tool_calls == "skip":
            skipped[m] = False
            continue
        calls = conversation.messages[m].get("tool_calls") or []
        names = [c.get("function", c).get("name") for c in calls if isinstance(c, dict)]
        msg = (
            f"Message {m}: template {name!r} does not render this reply's tool calls ({', '.join(map(str, names))}), "
            "so it would be trained as the reply the template shows (without them, then its end of turn): "
            "a reply the model never gave. Pass Policy(on_dropped_tool_calls='skip') to leave such replies "
            "untrained and keep the sample, or 'train' to train them as rendered; or use a template that renders "
            "tool calls."
        )
        raise NotRenderedError(msg, field="tool_calls", message_index=m, template=name)
    lines = []
    for field in sorted({f for _, f in dropped}, key=FIELDS.index):
        if (name, field) in _WARNED_NOT_RENDERED:
            continue
        # The reasoning of a reply the sample does not train is history, which templates that drop it
        # leave out at inference too: nothing is lost for this sample.
        where = [m for m, f in dropped if f == field and (f != "reasoning" or message_ok[m])]
        if not where:
            continue
        _WARNED_NOT_RENDERED.add((name, field))
        if field == "reasoning" and last_reply in where:
            why = "it writes no reasoning for the last reply either, so no expansion brings it back"
        elif field == "reasoning" and any((m, "reasoning") not in dropped for m in carried):
            why = (
                "it writes reasoning for the last exchange only; to train every reasoning trace, mask each "
                "exchange as the last turn: labelmask.mask_turns(), mask_dataset(..., expand='turns') or "
                "Collator(..., expand='turns')"
            )
        elif field == "reasoning":
            why = (
                "if it writes reasoning for the last exchange only, mask each exchange as the last turn "
                "(mask_turns(), expand='turns'); if it writes none, it has no place for reasoning"
            )
        else:
            why = _REMEDY[field]
        more = f" and {len(where) - 1} more" if len(where) > 1 else ""
        lines.append(f"{field} (message {where[0]}{more}): {why}")
    if lines:
        msg = (
            f"Template {name!r} does not render what these messages carry, so it is neither seen nor trained: "
            + "; ".join(lines)
            + ". Each sample's report.not_rendered lists what it lost (warned once per template and field)."
        )
        warnings.warn(msg, NotRenderedWarning, stacklevel=6)
    return skipped


def finish_step(
    staged: Staged,
    encoded: Encoded,
    options: Options,
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
        encoded = escape_if_injected(
            tokenizer, backend, rendered, encoded, staged.annotated, name, staged.marked, staged.writers
        )
    roles = conversation.roles
    unowned = added_tokens(encoded) if vision else ()
    message_ok = staged.message_ok
    runs = staged.runs
    if runs is None:
        runs = plan_runs(rendered, generated_segments(rendered, roles), message_ok, policy)
    firsts, straddles = first_tokens(encoded, runs.bounds)
    ids = encoded.id_list
    labels, n_straddle, n_dropped = label_runs(runs, firsts, straddles, ids, policy, unowned)
    written = None
    if staged.injected and not staged.escape:
        # Control tokens the data wrote keep their stock ids and are never trained (an assistant's text
        # or tool call that writes "<|im_end|>" must not teach the model to end its turn there).
        written = written_tokens(rendered, encoded, special_tokens(tokenizer), staged.marked, staged.writers)
        for t in written.tolist():
            labels[t] = IGNORE_INDEX
    # Per-token provenance is made on first use (MaskedConversation._array): a trainer reads ids and labels.
    provenance = Provenance(rendered, encoded, roles, unowned)
    if check != "off":
        aligned = provenance.aligned
        trained = apply_policy(aligned, policy, message_ok).trained
        if written is not None and len(written):
            trained = trained.copy()
            trained[written] = False
        if not np.array_equal(trained, np.asarray(labels) != IGNORE_INDEX):
            fail_check(name, None, "the labels decided per run of text differ from those decided per segment")
        check_labels(rendered, encoded, aligned, trained, message_ok, policy, backend, name, check == "full", written)
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
        not_rendered=staged.not_rendered,
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
    policy._check_weights(roles, weights, name)
    arrays = {
        "input_ids": ids,
        "attention_mask": lambda: np.ones(n_tokens, dtype=np.int64),
        "labels": labels,
        "loss_weights": lambda: provenance.loss_weights(labels, weights, policy),
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


def _end_of_turn(
    rendered: Any, roles: tuple[int, ...], tokenizer: Any, name: str, add_eos: bool | None, final_eot: str = ""
) -> tuple[Any, list]:
    """The render with a stop token after each reply that has none (``add_eos``), and the edits that wrote them.

    Two kinds of template leave replies without a trained stop token:

    * one that writes no end of turn at all (LLaVA-1.5's): ``add_eos`` writes the tokenizer's
      EOS after every reply;
    * one whose replies are closed by the next turn's header (GLM-4.5's ``<|user|>``, annotated
      as that reply's end of turn): the conversation's last reply is closed by nothing, and
      the annotation's ``final_eot`` (the stop the model generates there) is written after it
      alone, unless ``add_eos=False``: a sample that ends with a reply is the common case (every
      single-turn dataset), and without it no such sample teaches the model to stop.

    Where nothing is written (``add_eos`` False, or None for the first kind) it warns once per
    template per process (:class:`NoEndOfTurnWarning`): a model trained on such samples never
    learns to stop.
    """
    assistant = int(Role.ASSISTANT)
    replies = [m for m, role in enumerate(roles) if role == assistant]
    if not replies:
        return rendered, []
    eots = rendered.eots
    if final_eot:
        last = replies[-1]
        if last in eots or last != len(roles) - 1:
            return rendered, []
        what = (
            f"closes a reply with the next turn's header, so the last reply of a conversation (message {last}) "
            f"ends with no stop token"
        )
        token = final_eot
        add_eos = True if add_eos is None else add_eos
    else:
        if not add_eos and any(m in eots for m in replies):
            return rendered, []
        last = None  # every reply without an end of turn
        what = "writes no end-of-turn token after assistant replies"
        token = tokenizer.eos_token
    if not add_eos:
        if name not in _WARNED_NO_EOT:
            _WARNED_NO_EOT.add(name)
            msg = (
                f"Template {name!r} {what}, so a model trained on its samples never learns to stop. Pass "
                f"add_eos=True to write {token!r} after {'it' if final_eot else 'each reply'} and train it."
            )
            warnings.warn(msg, NoEndOfTurnWarning, stacklevel=6)  # mask_conversation's caller
        return rendered, []
    if not token:
        raise TokenizerError(f"add_eos=True, but {type(tokenizer).__name__} has no eos_token; set one.")
    edits = eos_edits(rendered, roles, assistant, token, only=last)
    return apply_edits(rendered, edits, name=name), edits


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
    except TemplateRaisedError as exc:
        # Rendered in trace mode, the annotation raises the same error from inside a turn, naming the message.
        trace = compile_template(annotated.source, mode="trace", name=annotated.name)
        try:
            render_annotated(trace, variables, annotated.name, expected=None, n_messages=n_messages)
        except TemplateRaisedError as traced:
            if traced.message_index is not None:
                raise
        if exc.message_index is None:
            _name_the_message(exc, template, variables, n_messages, annotated.name)
        raise


def _name_the_message(exc: TemplateRaisedError, template: Any, variables: dict[str, Any], n: int, name: str) -> None:
    """Give ``exc`` (raised outside every turn, as Qwen3's scan of all messages before the first turn
    does) the index of the first message whose prefix of the conversation makes the template raise."""
    messages = variables["messages"]
    for k in range(1, n + 1):
        prefix = {**variables, "messages": messages[:k], "_labelmask_messages": messages[:k]}
        try:
            render_stock(template, prefix, name)
        except TemplateRaisedError:
            exc.message_index = k - 1
            text = str(exc)
            for phrase in (" rejected the conversation", " failed on this conversation"):
                text = text.replace(phrase + ":", f"{phrase} at message {k - 1}:", 1)
            exc.args = (text,)
            return


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
        chat_template = chat_template[key]
    if not isinstance(chat_template, str):
        msg = (
            f"{type(tokenizer).__name__}.chat_template is a {type(chat_template).__name__} ({chat_template!r:.60}); "
            "it must be the Jinja source of the chat template (a str), or a dict of them."
        )
        raise TokenizerError(msg)
    return chat_template
