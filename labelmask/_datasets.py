"""Masking a ``datasets.Dataset`` of conversations: :func:`mask_dataset`.

``datasets`` is imported inside the function; labelmask does not depend on it.

Typed columns. ``datasets`` stores nested dicts as Arrow structs with one schema for
the whole column: a key missing from one row's dict comes back as ``None``, and an
integer in one row next to a float in another comes back as a float (``3`` as
``3.0``). For the fields whose schema labelmask knows (messages, content parts, tool
calls and their ``function``), ``None`` means absent and is dropped, as
:func:`mask_conversation` drops it on a message. Tool-call ``arguments`` and ``tools``
are free-form JSON: there a ``None`` may be a real ``null`` and a float a real
float, so a struct-typed ``arguments`` or ``tools`` column cannot be read back as
written. :func:`mask_dataset` refuses such a dataset unless told to trust it; store
those fields with the ``datasets.Json()`` feature (exact round trip) or as JSON
strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from labelmask._formats import RowFormat, resolve_format
from labelmask._pipeline import (
    ROW_KWARGS_COLUMN,
    Options,
    check_on_error,
    check_options,
    check_template_kwargs,
    with_row_kwargs,
)
from labelmask._policy import Policy
from labelmask._registry import REGISTRY
from labelmask._truncate import mask_with
from labelmask._turns import turns_with
from labelmask._vision import is_processor
from labelmask.errors import ConversationError, LabelmaskError, NothingToTrainError, OptionError

__all__ = ["MaskStats", "mask_dataset"]

_OUTPUT = ("input_ids", "attention_mask", "labels")
_REPORT = ("n_tokens", "n_trained", "n_cut")
_NOT_RENDERED = "not_rendered"  # per row: "<message>:<field>" for each field the render does not show
_EXPANDED = ("source_row", "exchange")  # expand="turns": the input row and the exchange's ordinal in it
EXPAND_MODES = (None, "turns")
_PROVENANCE = ("message_index", "role", "part")
_WEIGHTS = ("loss_weights",)
_ERROR_TYPE = "_labelmask_error_type"
_ERROR = "_labelmask_error"


@dataclasses.dataclass(frozen=True)
class MaskStats:
    """What :func:`mask_dataset` did to a dataset.

    Attributes:
        n_rows: Rows in the input dataset.
        n_kept: Rows in the output dataset.
        dropped: Rows dropped (``on_error="drop"``), by error class name, e.g.
            ``{"NothingToTrainError": 3, "ConversationError": 1}``.
        first_error: For each error class in ``dropped``, the message of its first
            dropped row (``"Row 17: ..."``).
        n_tokens: Tokens in the kept rows.
        n_trained: Trained tokens (label not -100) in the kept rows.
        not_rendered: Fields of messages the template did not render, counted over the
            kept rows by field (``{"reasoning": 812, "tool_call_id": 40}``; see
            :attr:`MaskReport.not_rendered`): data neither seen nor trained.
        n_examples: Rows in the output dataset per kept input row summed: ``n_kept``
            unless ``expand="turns"`` gave one row per exchange.
    """

    n_rows: int
    n_kept: int
    dropped: dict[str, int]
    first_error: dict[str, str]
    n_tokens: int
    n_trained: int
    not_rendered: dict[str, int] = dataclasses.field(default_factory=dict)
    n_examples: int | None = None

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def __str__(self) -> str:
        why = ", ".join(f"{n} {name}" for name, n in sorted(self.dropped.items())) or "none"
        text = f"{self.n_kept}/{self.n_rows} rows kept ({self.n_dropped} dropped: {why}); "
        if self.n_examples is not None and self.n_examples != self.n_kept:
            text += f"{self.n_examples} examples (one per exchange); "
        text += f"{self.n_trained}/{self.n_tokens} tokens trained"
        if self.not_rendered:
            lost = ", ".join(f"{n} {field}" for field, n in sorted(self.not_rendered.items()))
            text += f"; not rendered by the template: {lost}"
        return text


def mask_dataset(
    dataset: Any,
    processor: Any,
    *,
    messages_column: str = "messages",
    tools_column: str = "tools",
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    policy: Policy | None = None,
    template: str | None = None,
    on_error: str = "raise",
    remove_columns: bool | list[str] = True,
    num_proc: int | None = None,
    batch_size: int = 1000,
    keep_provenance: bool = False,
    keep_loss_weights: bool = False,
    trust_structs: bool = False,
    load_from_cache_file: bool | None = None,
    expand: str | None = None,
    max_length: int | None = None,
    truncation: str = "right",
    add_eos: bool | None = None,
    **template_kwargs: Any,
) -> tuple[Any, MaskStats | None]:
    """Mask every conversation of a ``datasets.Dataset`` with :func:`mask_conversation`.

    Dataset formats: each row is read as OpenAI messages from one of four shapes,
    detected from the column names (the first that fits, in this order) or named
    with ``format``:

    - ``"messages"``: a ``messages`` column of OpenAI messages (TRL's conversational form);
    - ``"sharegpt"``: a ``conversations`` column of ``{"from", "value"}`` messages
      (``human``, ``gpt``, ``system``, ``function_call``: JSON text of one call or a list
      of ``{"name", "arguments"}``, read as an assistant message with ``tool_calls``;
      ``observation``: a ``tool`` message), optional ``system`` and ``tools`` columns;
    - ``"alpaca"``: ``instruction``, ``input`` (optional), ``output``, optional ``system``
      and ``history`` (``[user, assistant]`` pairs); the user message is
      ``instruction + "\\n" + input`` (or the instruction alone when the input is empty);
    - ``"prompt_completion"``: TRL's ``prompt`` and ``completion``, both lists of messages
      (the prompt's messages get ``"train": False`` unless they carry a ``"train"``
      flag, as TRL trains the completion only), or both strings: one user message and its
      assistant reply, rendered with the chat template (TRL concatenates plain strings
      without a template; labelmask masks chat-template renders only).

    A column of messages is read by the messages' shape: messages with ``role`` as
    OpenAI messages, messages with ``from`` as ShareGPT (unless ``tags`` are given:
    then ShareGPT with those tags). ShareGPT and Alpaca ``tools`` (JSON text of bare
    function schemas, as LLaMA-Factory writes them) become OpenAI tools
    (``{"type": "function", "function": schema}``).

    Args:
        dataset: A ``datasets.Dataset``, or a ``datasets.IterableDataset`` (streaming):
            then the result is an ``IterableDataset`` masked lazily as it is read, with
            the rows and columns the map-style path gives, and ``stats`` is ``None``
            (nothing is masked before the rows are read; the per-row ``n_tokens``,
            ``n_trained``, ``n_cut`` and ``not_rendered`` columns carry the figures). Row
            indices (in ``"Row <index>: "`` and ``source_row``) count the rows as read: in a
            ``DataLoader`` with several workers, each worker counts its own shards.
        processor: A fast tokenizer, as for :func:`mask_conversation`. It is pickled
            to the worker processes when ``num_proc > 1``.
        messages_column: The column of conversations (lists of messages) of the
            ``"messages"`` format (``columns={"messages": ...}`` names it for any format).
        tools_column: The column of tool definitions, used when the dataset has it:
            a list of JSON schemas, a JSON string of one, or ``None`` per row.
            A ``chat_template_kwargs`` column (TRL's) gives each row's template arguments,
            over ``**template_kwargs``.
        format: ``None`` (detect from the columns), ``"messages"``, ``"sharegpt"``,
            ``"alpaca"`` or ``"prompt_completion"``.
        columns: Column names by role in the format, as LLaMA-Factory's
            ``dataset_info.json`` ``columns``: ``messages``, ``system``, ``tools``,
            ``prompt`` (Alpaca's instruction, TRL's prompt), ``query`` (Alpaca's input),
            ``response`` (Alpaca's output), ``history``, ``completion`` (TRL's), e.g.
            ``{"prompt": "question", "response": "answer"}``.
        tags: ShareGPT's keys and role names, as LLaMA-Factory's ``tags``: ``role_tag``
            (default ``"from"``), ``content_tag`` (``"value"``), ``user_tag``
            (``"human"``), ``assistant_tag`` (``"gpt"``), ``observation_tag``
            (``"observation"``), ``function_tag`` (``"function_call"``), ``system_tag``
            (``"system"``).
        policy: What to train, as for :func:`mask_conversation`.
        template: Annotated template name, as for :func:`mask_conversation`.
        on_error: ``"raise"``: a row raising a :class:`~labelmask.LabelmaskError`
            (including :class:`~labelmask.NothingToTrainError`) raises it, its message
            starting ``"Row <index>: "`` and its ``row`` attribute set. ``"drop"``: such
            rows are dropped and counted in :attr:`MaskStats.dropped` by error class. (The same
            words as :func:`mask_conversations`'s ``on_error``; a dataset column holds no
            exception objects, so ``"return"`` is not one of them here.)
        remove_columns: ``True`` drops every source column, ``False`` keeps them all,
            a list drops those.
        num_proc: Worker processes for ``Dataset.map`` (``None``: this process).
        batch_size: Rows per batch given to each ``map`` call.
        keep_provenance: Also write the ``message_index``, ``role`` and ``part`` columns.
        keep_loss_weights: Also write the ``loss_weights`` column (float32 per token: the
            message's ``"weight"`` times the policy's ``role_weights`` and ``part_weights`` on
            trained tokens, 0.0 elsewhere; see :class:`~labelmask.Policy`), for
            ``Collator(return_loss_weights=True)`` and :class:`~labelmask.WeightedLoss`.
        trust_structs: Accept tool-call ``arguments`` and ``tools`` stored as Arrow
            structs (see the module docstring: ``datasets`` fills keys missing from a
            row with ``None`` and widens ints to floats, which changes the rendered
            text). Off: such a dataset raises :class:`~labelmask.ConversationError`.
        max_length: Cut each row to at most this many tokens, as :func:`mask_conversation`
            does (``n_cut`` says how many were cut). With TRL, ``SFTConfig(max_length=...)`` cuts
            the rows too; this one can drop whole exchanges (``truncation="turns"``) instead.
        truncation: How, with ``max_length``: ``"right"``, ``"left"``, ``"turns"`` or ``"drop"``
            (a row over the limit raises :class:`~labelmask.TruncationError`: dropped with
            ``on_error="drop"``).
        add_eos: As in :func:`mask_conversation`.
        expand: ``None``: one output row per input row. ``"turns"``: one row per exchange (a
            user message and the replies that answer it), masked as :func:`mask_turns` does:
            the conversation up to the exchange's last reply, only that exchange trained. A
            template that writes reasoning for the last exchange only (Qwen3, Qwen3.5+, DeepSeek
            R1, gpt-oss) then trains every reasoning trace once, where masking whole
            conversations trains the last one alone; the cost is the history rendered and
            tokenized again per exchange (docs/policies.md gives the figures). Rows get
            ``source_row`` (the input row's index) and ``exchange`` (the exchange's ordinal
            among those with a reply); kept source columns are repeated per exchange.
        load_from_cache_file: Passed to ``Dataset.map``. The cache fingerprint is
            computed by labelmask from the input fingerprint, the tokenizer's
            vocabulary and chat template, the annotated templates known (shipped and
            registered), labelmask's own source, and every option, so a cached result
            is reused only when all of them are unchanged.
        **template_kwargs: Passed to :func:`mask_conversation` (``enable_thinking=False``,
            ``verify=True``, ...).

    Returns:
        ``(masked, stats)``: the dataset with ``input_ids``, ``attention_mask``,
        ``labels`` (lists of ints, ``-100`` where no loss), ``n_tokens``, ``n_trained``,
        ``n_cut`` (tokens cut by ``max_length=``) and ``not_rendered`` (``"<message>:<field>"``
        for each field the template did not render) per row (and the provenance and
        ``loss_weights`` columns when asked), in the input's row order; and a :class:`MaskStats`.

    Raises:
        LabelmaskError: with ``on_error="raise"``, the first failing row's error
            (in a worker process, the first one that worker met).
        ConversationError: struct-typed ``arguments`` or ``tools`` without ``trust_structs=True``;
            columns that fit no format (or not the one given), the message naming the format
            they resemble and the column missing. A row that does not fit its format raises
            it too, as any failing row (``"Row <index>: ShareGPT row: ..."``).
        OptionError: a bad option; a kept source column has the name of an output column (a ``ValueError``);
            ``num_proc`` with an ``IterableDataset``.
        NothingToTrainError: ``on_error="drop"`` dropped every row (the message gives the
            first error). A stream cannot know this before it is read: as it is read, it
            warns (``UserWarning``) at the first dropped row of each error class, with its error.
    """
    import datasets

    check_on_error(on_error, ("raise", "drop"), "mask_dataset")
    if not (expand is None or isinstance(expand, str) and expand in EXPAND_MODES):
        raise OptionError(f"mask_dataset(expand={expand!r}): use None (one row per conversation) or 'turns'.")
    if is_processor(processor):
        msg = (
            f"mask_dataset writes text columns only, and {type(processor).__name__} is a multimodal processor "
            "whose pixel values would be lost. Mask image samples on the fly with Collator(processor) "
            "(images decoded per batch), or pass processor.tokenizer for text-only rows."
        )
        raise OptionError(msg)
    options = check_options(
        policy=policy,
        template=template,
        max_length=max_length,
        truncation=truncation,
        add_eos=add_eos,
        return_tensors="np",
        **template_kwargs,
    )
    check_template_kwargs(processor, options.template_kwargs)
    streaming = isinstance(dataset, datasets.IterableDataset)
    if streaming:
        if num_proc is not None:
            msg = "mask_dataset(num_proc=...) needs a map-style Dataset; an IterableDataset is masked as it is read."
            raise OptionError(msg)
        if dataset.features is None:  # a stream whose schema is known only once read: take it from its first rows
            dataset = dataset._resolve_features()
    row_format = resolve_format(
        dataset.column_names,
        format=format,
        columns=columns,
        tags=tags,
        messages_column=messages_column,
        tools_column=tools_column,
    )
    columns = list(dataset.column_names)
    used = row_format.used(columns)
    removed = removed_columns(columns, remove_columns)
    kept = [c for c in columns if c not in removed]
    written = _OUTPUT + _REPORT + (_NOT_RENDERED,) + (_PROVENANCE if keep_provenance else ())
    written += _WEIGHTS if keep_loss_weights else ()
    written += _EXPANDED if expand else ()
    clash = [c for c in kept if c in written]
    if clash:
        raise OptionError(f"Source columns {clash} would be overwritten by labelmask's output; remove or rename them.")
    tools_column = row_format.columns["tools"] if row_format.columns["tools"] in columns else None
    if not trust_structs:
        for column in row_format.message_columns() or [None]:
            _refuse_structs(dataset.features, column, tools_column)

    int32 = datasets.Value("int32")
    new_features = {name: datasets.List(int32) for name in _OUTPUT}
    if keep_loss_weights:
        new_features.update({name: datasets.List(datasets.Value("float32")) for name in _WEIGHTS})
    new_features.update({name: datasets.Value("int64") for name in _REPORT})
    new_features[_NOT_RENDERED] = datasets.List(datasets.Value("string"))
    if expand:
        new_features.update({name: datasets.Value("int64") for name in _EXPANDED})
    if keep_provenance:
        new_features.update({name: datasets.List(int32) for name in _PROVENANCE})
    if on_error == "drop":
        new_features.update({_ERROR_TYPE: datasets.Value("string"), _ERROR: datasets.Value("string")})
    features = datasets.Features({**{c: dataset.features[c] for c in kept}, **new_features})

    masker = _Masker(
        processor=processor,
        row_format=row_format,
        used=tuple(used),
        options=options,
        on_error=on_error,
        keep_provenance=keep_provenance,
        keep_loss_weights=keep_loss_weights,
        registered=_registered(),
        expand=expand,
        kept=tuple(kept) if expand else (),
        warn_drops=streaming,
        kwargs_column=ROW_KWARGS_COLUMN if ROW_KWARGS_COLUMN in columns else None,
    )
    if streaming:
        return _mask_stream(dataset, masker, features, columns if expand else removed, batch_size), None
    fingerprint = _fingerprint(dataset, masker, removed, batch_size)
    masked = dataset.map(
        masker,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        num_proc=num_proc,
        # One row per exchange: map needs every input column removed (the masker repeats the kept ones).
        remove_columns=columns if expand else removed,
        features=features,
        new_fingerprint=fingerprint,
        load_from_cache_file=load_from_cache_file,
        desc="labelmask: masking",
    )
    dropped: dict[str, int] = {}
    first_error: dict[str, str] = {}
    if on_error == "drop":
        dropped, first_error = count_errors(masked[_ERROR_TYPE], masked[_ERROR])
        if dropped:
            masked = masked.filter(
                _is_ok,
                input_columns=[_ERROR_TYPE],
                batched=True,
                batch_size=batch_size,
                num_proc=num_proc,
                new_fingerprint=_hash(fingerprint, "filter"),
                load_from_cache_file=load_from_cache_file,
                desc="labelmask: dropping failed rows",
            )
        masked = masked.remove_columns([_ERROR_TYPE, _ERROR])
    not_rendered = count_not_rendered(masked[_NOT_RENDERED])
    n_examples = len(masked)
    n_kept = len(dataset) - sum(dropped.values())
    if dropped and not n_kept:
        why = ", ".join(f"{n} {name}" for name, n in sorted(dropped.items()))
        msg = (
            f"mask_dataset(on_error='drop') dropped every row ({why}), so there is nothing to train. "
            f"The first error: {next(iter(first_error.values()))}"
        )
        raise NothingToTrainError(msg)
    stats = MaskStats(
        n_rows=len(dataset),
        n_kept=n_kept,
        dropped=dropped,
        first_error=first_error,
        n_tokens=sum(masked["n_tokens"]),
        n_trained=sum(masked["n_trained"]),
        not_rendered=not_rendered,
        n_examples=n_examples,
    )
    return masked, stats


def removed_columns(columns: list[str], remove_columns: bool | list[str]) -> list[str]:
    """The source columns ``remove_columns`` drops: all (``True``), none (``False``) or those listed."""
    if remove_columns is True:
        return list(columns)
    if remove_columns is False:
        return []
    removed = list(remove_columns)
    unknown = [c for c in removed if c not in columns]
    if unknown:
        raise KeyError(f"remove_columns names columns the dataset lacks: {unknown}")
    return removed


def count_errors(kinds: list[str | None], messages: list[str | None]) -> tuple[dict[str, int], dict[str, str]]:
    """``(dropped, first_error)``: rows per error class, and the first row's message of each."""
    dropped: dict[str, int] = {}
    first_error: dict[str, str] = {}
    for kind, message in zip(kinds, messages):
        if kind is not None:
            dropped[kind] = dropped.get(kind, 0) + 1
            first_error.setdefault(kind, message)
    return dropped, first_error


def count_not_rendered(rows: list[list[str]]) -> dict[str, int]:
    """``{field: count}`` over the rows' ``not_rendered`` entries (``"<message>:<field>"``)."""
    counts: dict[str, int] = {}
    for entries in rows:
        for entry in entries:
            field = entry.partition(":")[2]
            counts[field] = counts.get(field, 0) + 1
    return counts


def _is_ok(error_types: list[str | None]) -> list[bool]:
    return [kind is None for kind in error_types]


def _mask_stream(dataset: Any, masker: _Masker, features: Any, removed: list[str], batch_size: int) -> Any:
    """The map-style path's rows as a lazy ``IterableDataset``: masked, and failed rows dropped, as read."""
    masked = dataset.map(
        masker, batched=True, batch_size=batch_size, with_indices=True, remove_columns=removed, features=features
    )
    if masker.on_error == "drop":
        masked = masked.filter(_is_ok, input_columns=[_ERROR_TYPE], batched=True, batch_size=batch_size)
        masked = masked.remove_columns([_ERROR_TYPE, _ERROR])
    if masker.kept:  # expand="turns" writes the kept source columns after its own; Dataset.map orders by features
        masked = masked.select_columns([name for name in features if name not in (_ERROR_TYPE, _ERROR)])
    return masked


@dataclasses.dataclass
class _Masker:
    """The batched ``map`` function; a picklable object, so it reaches worker processes whole."""

    processor: Any
    row_format: RowFormat
    used: tuple[str, ...]  # the source columns row_format reads
    options: Options
    on_error: str
    keep_provenance: bool
    registered: dict[str, Any]  # runtime registrations, re-made in a worker started by spawn
    expand: str | None = None
    kept: tuple[str, ...] = ()  # expand="turns": source columns repeated on each exchange's row
    keep_loss_weights: bool = False
    warn_drops: bool = False  # a stream: no MaskStats counts the dropped rows, so warn at the first of each kind
    kwargs_column: str | None = None  # TRL's per-row chat_template_kwargs, when the dataset has the column
    _warned: set[str] = dataclasses.field(default_factory=set, init=False, repr=False, compare=False)

    def __call__(self, batch: Mapping[str, list], indices: list[int]) -> dict[str, list]:
        _sync_registry(self.registered)
        arrays = _OUTPUT + (_WEIGHTS if self.keep_loss_weights else ()) + (_PROVENANCE if self.keep_provenance else ())
        names = arrays + _REPORT + (_NOT_RENDERED,) + (_EXPANDED + self.kept if self.expand else ())
        out: dict[str, list] = {name: [] for name in names}
        if self.on_error == "drop":
            out[_ERROR_TYPE] = []
            out[_ERROR] = []
        for k, row in enumerate(indices):
            try:
                messages, tools = self.row_format.read({name: batch[name][k] for name in self.used})
                row_kwargs = batch[self.kwargs_column][k] if self.kwargs_column else None
                options = with_row_kwargs(self.options, self.processor, row_kwargs)
                results = self._mask(_clean_messages(messages), _clean_tools(tools), options)
            except LabelmaskError as exc:
                exc.args = (f"Row {row}: {exc.args[0] if exc.args else ''}", *exc.args[1:])
                exc.row = row
                if self.on_error == "raise":
                    raise
                if self.warn_drops and type(exc).__name__ not in self._warned:
                    self._warned.add(type(exc).__name__)
                    msg = (
                        f"mask_dataset(on_error='drop'): dropping the stream's rows that raise {type(exc).__name__} "
                        f"(the later ones without a warning); the first: {exc}"
                    )
                    warnings.warn(msg, UserWarning, stacklevel=2)
                for name in names:
                    out[name].append(0 if name in _REPORT or name in _EXPANDED else [])
                for name in self.kept:
                    out[name][-1] = batch[name][k]
                out[_ERROR_TYPE].append(type(exc).__name__)
                out[_ERROR].append(str(exc))
                continue
            for exchange, result in enumerate(results):
                for name in arrays:
                    out[name].append(result[name].tolist())
                report = result.report
                out["n_tokens"].append(report.n_tokens)
                out["n_trained"].append(report.n_trained)
                out["n_cut"].append(report.n_cut)
                out[_NOT_RENDERED].append([f"{m}:{field}" for m, field in report.not_rendered])
                if self.expand:
                    out["source_row"].append(row)
                    out["exchange"].append(exchange)
                    for name in self.kept:
                        out[name].append(batch[name][k])
                if self.on_error == "drop":
                    out[_ERROR_TYPE].append(None)
                    out[_ERROR].append(None)
        return out

    def _mask(self, messages: Any, tools: Any, options: Options) -> list[Any]:
        if not self.expand:
            return [mask_with(messages, self.processor, tools, options)]
        results = turns_with(messages, self.processor, tools, options)
        if not results:
            msg = (
                "expand='turns' found no exchange (a user message followed by an assistant reply) in this "
                "conversation, so it gives no example. Drop the row, or mask it whole (expand=None)."
            )
            raise NothingToTrainError(msg)
        return results


def _without_none(value: Any) -> Any:
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, Mapping) else value


def _clean_messages(messages: Any) -> Any:
    """Drop the ``None`` values Arrow fills into messages, content parts, tool calls and functions."""
    if not isinstance(messages, list):
        return messages  # mask_conversation says what is wrong
    cleaned = []
    for message in messages:
        message = _without_none(message)
        if isinstance(message, dict):
            if isinstance(message.get("content"), list):
                message["content"] = [_without_none(part) for part in message["content"]]
            if isinstance(message.get("tool_calls"), list):
                calls = []
                for call in message["tool_calls"]:
                    call = _without_none(call)
                    if isinstance(call, dict) and "function" in call:
                        call["function"] = _without_none(call["function"])
                    calls.append(call)
                message["tool_calls"] = calls
        cleaned.append(message)
    return cleaned


def _clean_tools(tools: Any) -> Any:
    if isinstance(tools, str):
        try:
            return json.loads(tools)
        except json.JSONDecodeError as exc:
            raise ConversationError(f"The tools column holds a string that is not JSON: {exc}.") from None
    return tools


def _refuse_structs(features: Any, messages_column: str | None, tools_column: str | None) -> None:
    arguments = _child(features[messages_column], "tool_calls", "function", "arguments") if messages_column else None
    where = []
    if _has_struct(arguments):
        where.append(f"{messages_column}[].tool_calls[].function.arguments")
    if tools_column is not None and _has_struct(features[tools_column]):
        where.append(tools_column)
    if where:
        msg = (
            f"{' and '.join(where)} {'is' if len(where) == 1 else 'are'} stored as Arrow structs. datasets gives "
            "every row the keys of all rows (missing ones as None) and one number type (3 becomes 3.0), so "
            "the template would render JSON the rows never had. Store these fields with the datasets.Json() "
            "feature (e.g. Dataset.from_list(rows, features=...) with 'arguments': Json() and "
            f"'{tools_column or 'tools'}': List(Json())) or as JSON strings; or pass trust_structs=True "
            "if every row has the same keys and number types."
        )
        raise ConversationError(msg)


def _child(feature: Any, *keys: str) -> Any:
    for key in keys:
        while not isinstance(feature, dict) and hasattr(feature, "feature"):
            feature = feature.feature  # List, LargeList
        if not isinstance(feature, dict) or key not in feature:
            return None
        feature = feature[key]
    return feature


def _has_struct(feature: Any) -> bool:
    while not isinstance(feature, dict) and hasattr(feature, "feature"):
        feature = feature.feature
    return isinstance(feature, dict)


def _registered() -> dict[str, Any]:
    return REGISTRY.snapshot()


def _sync_registry(registered: dict[str, Any]) -> None:
    """Make this process know the parent's runtime registrations (a spawned worker starts without them)."""
    if registered:
        REGISTRY.restore(registered, replace=False)


@lru_cache(maxsize=1)
def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _hash(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:32]


def _fingerprint(dataset: Any, masker: _Masker, removed: list[str], batch_size: int) -> str:
    from labelmask import __version__
    from labelmask._registry import templates

    processor = masker.processor
    backend = getattr(processor, "backend_tokenizer", None)
    tokenizer_state = (
        type(processor).__name__,
        backend.to_str() if backend is not None else repr(processor),
        repr(getattr(processor, "chat_template", None)),
        repr(sorted(getattr(processor, "special_tokens_map", {}).items())),
    )
    known = sorted((t.name, t.source, t.matches, t.content_format) for t in templates().values())
    options = (
        repr(masker.row_format),
        masker.used,
        _policy_key(masker.options.policy),
        repr(dataclasses.replace(masker.options, policy=None, template_kwargs=None)),
        masker.on_error,
        masker.keep_provenance,
        masker.keep_loss_weights,
        masker.expand,
        repr(sorted(masker.options.template_kwargs.items())),
        removed,
        batch_size,
    )
    return _hash(dataset._fingerprint, __version__, _source_hash(), _hash(tokenizer_state), _hash(known), options)


def _policy_key(policy: Policy | None) -> str:
    if policy is None:
        return "default"
    fields = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)}
    return repr(sorted((k, sorted(v) if isinstance(v, frozenset) else v) for k, v in fields.items()))
