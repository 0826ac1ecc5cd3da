"""Preference data (DPO, ORPO, KTO): a prompt and its completions, split where the model starts to write.

TRL tokenizes the prompt with the generation prompt and each ``prompt + completion`` on its own,
then splits at their longest common prefix: a template that renders the prompt differently once a
reply follows, or tokens that merge across the boundary, move prompt tokens into the completion (and
train them) or cut the completion's first tokens. Here each ``prompt + completion`` is masked whole,
as :func:`~labelmask.mask_conversation` masks it (the ids are the stock template's), and split once:

1. at the end of the *generation prompt* (the stock template's render of the prompt with
   ``add_generation_prompt=True``, what the model reads at inference) when its tokens are the first
   tokens of every completion's conversation;
2. otherwise at the end of the first completion message's header (what the template writes before
   the reply), the first token that covers any reply character going to the completion.

The prompt is the tokens both conversations share before that point; tokens after it that differ
between them (a template that rewrites history) belong to each completion, untrained. The labels
are the whole conversation's, so a completion trains exactly what the policy trains of its
messages (replies with their end of turn; tool results and template text never), and nothing of
the prompt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from labelmask._datasets import (
    _ERROR,
    _ERROR_TYPE,
    _clean_messages,
    _clean_tools,
    _hash,
    _is_ok,
    _policy_key,
    _registered,
    _source_hash,
    _sync_registry,
    count_errors,
    count_not_rendered,
    removed_columns,
)
from labelmask._encode import backend_of, encode
from labelmask._pipeline import (
    ROW_KWARGS_COLUMN,
    Options,
    check_on_error,
    check_options,
    check_template_kwargs,
    render_generation_prompt,
    require_torch,
    with_row_kwargs,
)
from labelmask._policy import IGNORE_INDEX, Policy
from labelmask._result import MaskedConversation, MaskReport
from labelmask._truncate import mask_with
from labelmask._vision import is_processor
from labelmask.errors import (
    ConversationError,
    FeatureError,
    LabelmaskError,
    MaskCheckError,
    NothingToTrainError,
    OptionError,
    TruncationError,
)

__all__ = [
    "MaskedPreference",
    "PreferenceCollator",
    "PreferenceReport",
    "PreferenceStats",
    "mask_preference",
    "mask_preference_dataset",
    "mask_unpaired",
    "preference_with",
    "split_implicit",
]

# Roles a completion may hold: what the model writes and the tool results it reads between its calls.
_COMPLETION_ROLES = ("assistant", "tool", "ipython", "function")
_REFUSED = {
    "max_length": "a pair is cut when it is batched: PreferenceCollator(max_length=..., truncation_mode=...)",
    "truncation": "a pair is cut when it is batched: PreferenceCollator(max_length=..., truncation_mode=...)",
    "images": "preference pairs with images are not supported yet; mask text pairs",
}


@dataclasses.dataclass(frozen=True)
class PreferenceReport:
    """How a prompt and its completions were split.

    Attributes:
        template: The annotated template used (as :attr:`MaskReport.template`).
        split: ``"generation_prompt"``: the prompt is the stock template's render of the prompt
            with ``add_generation_prompt=True``, token for token (what the model reads at
            inference). ``"header"``: it is not a prefix of some completion's conversation (the
            template writes the reply's start differently, e.g. DeepSeek-R1's generation prompt
            opens ``<think>`` that the rendered reply lacks, or a token merges the header's end with
            the reply's start), so the split is at the end of the reply's header.
        n_prompt_tokens: Tokens in ``prompt_input_ids``.
        prompt_matches_generation: ``prompt_input_ids`` are exactly the generation prompt's ids.
            When False, the model is trained on a context that differs from the one it reads at
            inference (TRL warns the same of its own split); the report says so per sample.
        n_moved: Tokens before the split that are not shared by every completion's conversation
            (a template that renders the prompt differently depending on the completion): they
            start the completions, untrained. Most templates: 0.
        completions: Each completion's whole-conversation :class:`MaskReport` (chosen, then rejected).
    """

    template: str
    split: str
    n_prompt_tokens: int
    prompt_matches_generation: bool
    n_moved: int
    completions: tuple[MaskReport, ...]

    @property
    def not_rendered(self) -> tuple[tuple[int, str], ...]:
        """``(message, field)`` that some completion's conversation does not render (see :class:`MaskReport`)."""
        seen: list[tuple[int, str]] = []
        for report in self.completions:
            seen += [entry for entry in report.not_rendered if entry not in seen]
        return tuple(sorted(seen))


class MaskedPreference(Mapping):
    """The result of :func:`mask_preference` (or :func:`mask_unpaired`): a read-only mapping.

    Keys of a pair: ``prompt_input_ids``, ``chosen_input_ids``, ``rejected_input_ids``,
    ``chosen_labels`` and ``rejected_labels`` (as long as their completion's ids; ``-100`` where
    no loss). ``prompt_input_ids + chosen_input_ids`` are the ids of the whole chosen conversation,
    as :func:`~labelmask.mask_conversation` gives them (the stock template's). Of an unpaired
    completion (KTO): ``prompt_input_ids``, ``completion_input_ids``, ``completion_labels`` and
    ``label``. Values are lists, or numpy arrays with ``return_tensors="np"``.

    Attributes:
        report: The :class:`PreferenceReport`.
        conversations: Each completion's whole conversation as a
            :class:`~labelmask.MaskedConversation` (provenance, ``text``, ``spans``).
    """

    def __init__(self, values: dict[str, Any], report: PreferenceReport, conversations: tuple[MaskedConversation, ...]):
        self._values = values
        self.report = report
        self.conversations = conversations

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in self._values.items() if k != "label")
        return f"MaskedPreference({sizes}; split={self.report.split!r}, template={self.report.template!r})"


def mask_preference(
    prompt: Any,
    chosen: Any,
    rejected: Any,
    processor: Any,
    *,
    tools: list[dict[str, Any]] | None = None,
    policy: Policy | None = None,
    return_tensors: str | None = None,
    template: str | None = None,
    verify: bool = False,
    fallback: bool = True,
    add_eos: bool | None = None,
    control_tokens: str = "keep",
    check: str = "off",
    render_budget: Any = None,
    **template_kwargs: Any,
) -> MaskedPreference:
    """Tokenize a preference pair as the chat template renders it, and label each completion.

    Args:
        prompt: The messages before the completions (OpenAI-style, as for
            :func:`~labelmask.mask_conversation`), or a string: one user message. Never trained
            (a prompt message with ``"train": True`` is refused).
        chosen: The preferred completion: one assistant message, a list of messages that starts
            and ends with an assistant message (replies with tool calls, the tool results they
            read, the final answer), or a string: one assistant reply.
        rejected: The other completion, in the same forms.
        processor: A fast tokenizer (a multimodal processor is refused: pairs with images are not
            supported yet).
        tools: As for :func:`~labelmask.mask_conversation`.
        policy: What a completion trains (its replies, by default, through their stop token); a
            message's ``"train"`` flag still decides for it.
        template: As for :func:`~labelmask.mask_conversation`.
        verify: As for :func:`~labelmask.mask_conversation`.
        fallback: As for :func:`~labelmask.mask_conversation`.
        add_eos: As for :func:`~labelmask.mask_conversation`.
        control_tokens: As for :func:`~labelmask.mask_conversation`.
        check: As for :func:`~labelmask.mask_conversation`.
        render_budget: As for :func:`~labelmask.mask_conversation`.
        **template_kwargs: Passed to the template, as for :func:`~labelmask.mask_conversation`.
        return_tensors: ``None`` (lists) or ``"np"``.

    Returns:
        A :class:`MaskedPreference`. Its ``report`` says how the pair was split (see
        :class:`PreferenceReport`); for TRL's ``DPOTrainer``, batch it with
        :class:`~labelmask.PreferenceCollator`, which turns the labels into TRL's ``completion_mask``.

    Raises:
        ConversationError: a completion that is empty, holds a user or system message, or does not
            start and end with an assistant message; a trained prompt message; a policy that trains
            tokens of the generation prompt.
        NothingToTrainError: a completion trains nothing under the policy.
        And what :func:`~labelmask.mask_conversation` raises, for either conversation.

    Example:
        >>> pair = mask_preference(
        ...     [{"role": "user", "content": "2 + 2?"}], {"role": "assistant", "content": "4"},
        ...     {"role": "assistant", "content": "5"}, tokenizer,
        ... )  # doctest: +SKIP
        >>> pair["prompt_input_ids"] + pair["chosen_input_ids"] == tokenizer.apply_chat_template(
        ...     [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}])  # doctest: +SKIP
        True
    """
    options = _options(
        policy,
        return_tensors,
        template,
        verify,
        fallback,
        add_eos,
        control_tokens,
        check,
        render_budget,
        template_kwargs,
    )
    completions = {"chosen": chosen, "rejected": rejected}
    return preference_with(prompt, completions, processor, tools, options, lists=return_tensors is None)


def mask_unpaired(
    prompt: Any,
    completion: Any,
    processor: Any,
    *,
    label: bool,
    tools: list[dict[str, Any]] | None = None,
    policy: Policy | None = None,
    return_tensors: str | None = None,
    template: str | None = None,
    verify: bool = False,
    fallback: bool = True,
    add_eos: bool | None = None,
    control_tokens: str = "keep",
    check: str = "off",
    render_budget: Any = None,
    **template_kwargs: Any,
) -> MaskedPreference:
    """One completion judged desirable or not (KTO's unpaired form), split as :func:`mask_preference` splits.

    ``completion`` takes the forms of :func:`mask_preference`'s ``chosen``; the other arguments are
    :func:`mask_preference`'s.

    Args:
        label: ``True`` for a desirable completion, ``False`` for an undesirable one.

    Returns:
        A :class:`MaskedPreference` with ``prompt_input_ids``, ``completion_input_ids``,
        ``completion_labels`` and ``label``.
    """
    if not isinstance(label, (bool, np.bool_)):
        raise OptionError(f"mask_unpaired(label={label!r:.40}): use True (desirable) or False (undesirable).")
    options = _options(
        policy,
        return_tensors,
        template,
        verify,
        fallback,
        add_eos,
        control_tokens,
        check,
        render_budget,
        template_kwargs,
    )
    out = preference_with(prompt, {"completion": completion}, processor, tools, options, lists=return_tensors is None)
    out._values["label"] = bool(label)
    return out


def _options(
    policy: Any,
    return_tensors: Any,
    template: Any,
    verify: Any,
    fallback: Any,
    add_eos: Any,
    control_tokens: Any,
    check: Any,
    render_budget: Any,
    template_kwargs: dict[str, Any],
) -> Options:
    for key, why in _REFUSED.items():
        if key in template_kwargs:
            raise OptionError(f"Preference pairs do not take {key}=: {why}.")
    if not (return_tensors is None or isinstance(return_tensors, str) and return_tensors == "np"):
        raise OptionError(f"return_tensors={return_tensors!r}: a preference pair is lists (None) or numpy ('np').")
    return check_options(
        policy=policy,
        return_tensors="np",
        template=template,
        verify=verify,
        fallback=fallback,
        add_eos=add_eos,
        control_tokens=control_tokens,
        check=check,
        render_budget=render_budget,
        **template_kwargs,
    )


def preference_with(
    prompt: Any, completions: dict[str, Any], processor: Any, tools: Any, options: Options, *, lists: bool = False
) -> MaskedPreference:
    """Mask ``prompt`` followed by each completion and split them (``completions``: name -> completion).

    ``options.return_tensors`` is ``"np"`` (from :func:`_options`); ``lists`` converts the values to lists.
    """
    if is_processor(processor):
        msg = (
            f"Preference pairs with a multimodal processor ({type(processor).__name__}) are not supported yet: pass "
            "its tokenizer for text pairs (processor.tokenizer)."
        )
        raise OptionError(msg)
    history = _prompt_messages(prompt)
    n_prompt = len(history)
    masked = []
    for name, completion in completions.items():
        messages = _completion_messages(completion, name, n_prompt)
        masked.append(mask_with([*history, *messages], processor, tools, options))
    template = masked[0].report.template

    generation = render_generation_prompt(history, processor, tools, options)
    generation_ids = encode(backend_of(processor), generation).ids
    n_generation = len(generation_ids)
    ends = []
    by_generation = []
    for out in masked:
        ids = out["input_ids"]
        if out.text.startswith(generation) and np.array_equal(ids[:n_generation], generation_ids):
            ends.append(n_generation)
            by_generation.append(True)
            continue
        heads = [s for s in out.spans if s.kind == "header" and s.message == n_prompt]
        own = [s.start for s in out.spans if s.message == n_prompt]
        if not heads and not own:
            msg = (
                f"The template ({template!r}) does not render the completion's first message (message {n_prompt}), "
                "so there is no point where the model starts to write. Check the completion's fields."
            )
            raise ConversationError(msg, message_index=n_prompt, template=template)
        # Without a header span (a template that writes none), the reply starts at its first span.
        start = heads[0].end if heads else min(own)
        offsets = out.offsets
        ends.append(int(np.searchsorted(offsets[:, 1], start, side="right")))
        by_generation.append(False)
    shared = min(ends)
    first = masked[0]["input_ids"]
    for out in masked[1:]:
        ids = out["input_ids"]
        n = min(shared, len(ids))
        differ = np.flatnonzero(first[:n] != ids[:n])
        shared = int(differ[0]) if differ.size else n
    for k, out in enumerate(masked):
        labels = out["labels"]
        early = np.flatnonzero(labels[: ends[k]] != IGNORE_INDEX)
        if early.size:
            if not by_generation[k]:
                raise MaskCheckError(
                    f"A prompt token is trained (token {int(early[0])} of completion {k}; template {template!r}). "
                    "This is a bug in labelmask: please report it with the pair.",
                    template=template,
                )
            msg = (
                f"The policy trains tokens the template writes in the generation prompt ({first_text(out, early)!r}; "
                f"template {template!r}), which a preference pair leaves to the prompt. Train them as part of the "
                "reply by not passing the template argument that puts them there, or leave them untrained "
                "(Policy(empty_reasoning=False), the default)."
            )
            raise ConversationError(msg, message_index=n_prompt, template=template)
    prompt_ids = first[:shared]
    split = "generation_prompt" if all(by_generation) else "header"
    report = PreferenceReport(
        template=template,
        split=split,
        n_prompt_tokens=shared,
        prompt_matches_generation=shared == n_generation and all(by_generation),
        n_moved=max(ends) - shared,
        completions=tuple(out.report for out in masked),
    )
    values: dict[str, Any] = {"prompt_input_ids": prompt_ids}
    for name, out in zip(completions, masked):
        values[f"{name}_input_ids"] = out["input_ids"][shared:]
        values[f"{name}_labels"] = out["labels"][shared:]
    if lists:
        values = {k: v.tolist() for k, v in values.items()}
    return MaskedPreference(values, report, tuple(masked))


def first_text(out: MaskedConversation, tokens: np.ndarray) -> str:
    start, end = out.offsets[tokens[0]]
    return out.text[start:end]


def _prompt_messages(prompt: Any) -> list:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt, "train": False}]
    if isinstance(prompt, (bytes, Mapping)) or not isinstance(prompt, Sequence) or not prompt:
        msg = (
            f"A preference prompt is a non-empty list of messages (or a string: one user message), not "
            f"{_describe(prompt)}."
        )
        raise ConversationError(msg)
    messages = []
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping):
            raise ConversationError(
                f"Prompt message {i} is a {type(message).__name__}, not a mapping.", message_index=i
            )
        message = dict(message.items())
        if message.get("train") is True:
            msg = (
                f'Prompt message {i} carries "train": True, but a preference pair scores its completions only. '
                "Move the message into the completions, or drop the flag."
            )
            raise ConversationError(msg, message_index=i)
        message["train"] = False
        messages.append(message)
    return messages


def _completion_messages(completion: Any, name: str, n_prompt: int) -> list:
    if isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, bytes) or not isinstance(completion, Sequence) or not completion:
        msg = (
            f"The {name} completion is an assistant message, a non-empty list of messages or a string, not "
            f"{_describe(completion)}."
        )
        raise ConversationError(msg, message_index=n_prompt)
    messages = []
    for k, message in enumerate(completion):
        index = n_prompt + k
        if not isinstance(message, Mapping):
            msg = f"Message {index} ({name} completion) is a {type(message).__name__}, not a mapping."
            raise ConversationError(msg, message_index=index)
        message = dict(message.items())
        role = message.get("role")
        if role not in _COMPLETION_ROLES:
            msg = (
                f"Message {index} ({name} completion) has role {role!r:.40}: a completion holds what the model writes "
                "(assistant messages) and the tool results it reads between them. A user or system message starts "
                "a new prompt: move it (and what precedes it) into the prompt."
            )
            raise ConversationError(msg, message_index=index)
        messages.append(message)
    for end, where in ((messages[0], "start"), (messages[-1], "end")):
        if end.get("role") != "assistant":
            msg = (
                f"The {name} completion must {where} with an assistant message (the model starts where the prompt "
                f"ends and stops after its last reply), but its {where} is a {end.get('role')!r} message "
                f"(message {n_prompt if where == 'start' else n_prompt + len(messages) - 1})."
            )
            raise ConversationError(msg, message_index=n_prompt if where == "start" else n_prompt + len(messages) - 1)
    return messages


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)) and not value:
        return "an empty list"
    return f"a {type(value).__name__}"


_PAIRED = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids", "chosen_labels", "rejected_labels")
_UNPAIRED = ("prompt_input_ids", "completion_input_ids", "completion_labels")


class PreferenceCollator:
    """A ``data_collator`` for TRL's ``DPOTrainer`` (and ``KTOTrainer``) that trains exactly labelmask's labels.

    TRL's own collator marks every completion token for the loss (``completion_mask``). This one
    sets ``completion_mask`` to 1 exactly where a completion's label is not ``-100``: the replies
    and their stop tokens, not the text a template writes after a reply (Qwen's newline after
    ``<|im_end|>``), a tool result between two replies, or an empty think block the data never
    wrote. TRL computes its log-probabilities over those positions.

    Each feature is a masked pair (``prompt_input_ids``, ``chosen_input_ids``, ``chosen_labels``,
    ``rejected_input_ids``, ``rejected_labels``: a :func:`mask_preference` result or a
    :func:`mask_preference_dataset` row) or a raw one (``prompt``, ``chosen``, ``rejected``, optional
    ``tools``; masked here with :func:`mask_preference`). An unpaired feature (``completion`` ids and
    labels and ``label``, or raw ``prompt``, ``completion`` and ``label``) gives KTO's batch.
    Other keys are ignored (TRL's ``prompt_ids``/``chosen_ids``, which its ``DPOTrainer`` writes).

    A paired batch holds ``input_ids``, ``attention_mask`` and ``completion_mask``, every chosen
    sequence first, then every rejected one, right-padded (TRL's layout). An unpaired batch holds
    ``input_ids``, ``attention_mask``, ``completion_mask``, ``label`` and, with ``kl=True``, the
    mismatched pairs KTO's KL term reads (``KL_input_ids``, ``KL_attention_mask``,
    ``KL_completion_mask``: each prompt with the previous feature's completion, as TRL pairs them).

    Args:
        processor: The fast tokenizer (for raw features and its pad id).
        max_length: Cut each ``prompt + completion`` to at most this many tokens, by
            ``truncation_mode``: ``"keep_start"`` or ``"keep_end"`` (TRL's names). A sequence the
            cut leaves with nothing to train raises :class:`~labelmask.TruncationError`: drop such
            pairs beforehand (``mask_preference_dataset(max_length=...)`` does).
        pad_to_multiple_of: Pad the batch's length up to a multiple.
        kl: For unpaired features: also build KTO's KL pairs.
        policy: For raw features, as for :func:`mask_preference`.
        template: For raw features, as for :func:`mask_preference`.
        tools_key: The key of a raw feature's tools.
        **template_kwargs: For raw features, as for :func:`mask_preference`.
    """

    def __init__(
        self,
        processor: Any,
        *,
        max_length: int | None = None,
        truncation_mode: str = "keep_start",
        pad_to_multiple_of: int | None = None,
        kl: bool = True,
        policy: Policy | None = None,
        template: str | None = None,
        tools_key: str = "tools",
        **template_kwargs: Any,
    ):
        require_torch("PreferenceCollator")
        if max_length is not None and (
            not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1
        ):
            raise OptionError(f"PreferenceCollator(max_length={max_length!r}): use a positive int or None.")
        if not (isinstance(truncation_mode, str) and truncation_mode in ("keep_start", "keep_end")):
            raise OptionError(
                f"PreferenceCollator(truncation_mode={truncation_mode!r}): use 'keep_start' or 'keep_end'."
            )
        if pad_to_multiple_of is not None and (
            not isinstance(pad_to_multiple_of, int) or isinstance(pad_to_multiple_of, bool) or pad_to_multiple_of < 1
        ):
            raise OptionError(
                f"PreferenceCollator(pad_to_multiple_of={pad_to_multiple_of!r}): use a positive int or None."
            )
        self.options = _options(policy, "np", template, False, True, None, "keep", "off", None, template_kwargs)
        self.processor = processor
        self.max_length = max_length
        self.truncation_mode = truncation_mode
        self.pad_to_multiple_of = pad_to_multiple_of
        self.kl = kl
        self.tools_key = tools_key
        pad_id = getattr(processor, "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(processor, "eos_token_id", None)
        self.pad_token_id = int(pad_id) if pad_id is not None else 0

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise FeatureError("PreferenceCollator got an empty batch.")
        rows = [self._row(feature, i) for i, feature in enumerate(features)]
        paired = ["chosen_input_ids" in row for row in rows]
        if any(paired) and not all(paired):
            raise FeatureError("PreferenceCollator got paired and unpaired features in one batch.")
        if all(paired):
            sequences = [self._sequence(row, "chosen", i) for i, row in enumerate(rows)]
            sequences += [self._sequence(row, "rejected", i) for i, row in enumerate(rows)]
            return self._pad(sequences, "")
        batch = self._pad([self._sequence(row, "completion", i) for i, row in enumerate(rows)], "")
        import torch

        batch["label"] = torch.tensor([bool(row["label"]) for row in rows])
        if self.kl:
            shifted = [rows[-1]] + rows[:-1]
            kl_rows = [
                {
                    **row,
                    "completion_input_ids": other["completion_input_ids"],
                    "completion_labels": other["completion_labels"],
                }
                for row, other in zip(rows, shifted)
            ]
            batch.update(self._pad([self._sequence(row, "completion", i) for i, row in enumerate(kl_rows)], "KL_"))
        return batch

    def _row(self, feature: Any, index: int) -> Mapping[str, Any]:
        if not isinstance(feature, Mapping):
            raise FeatureError(f"Feature {index} is a {type(feature).__name__}, not a mapping.")
        unpaired = "completion" in feature or "completion_input_ids" in feature
        if unpaired and not isinstance(feature.get("label"), (bool, np.bool_)):
            label = feature.get("label")
            raise FeatureError(
                f"Feature {index}: an unpaired completion needs 'label' True or False, not {label!r:.40}."
            )
        if all(k in feature for k in _PAIRED) or all(k in feature for k in _UNPAIRED):
            return feature
        tools = feature.get(self.tools_key)
        if all(k in feature for k in ("prompt", "chosen", "rejected")):
            completions = {"chosen": feature["chosen"], "rejected": feature["rejected"]}
        elif all(k in feature for k in ("prompt", "completion", "label")):
            completions = {"completion": feature["completion"]}
        else:
            msg = (
                f"Feature {index} has keys {sorted(map(str, feature))[:12]}: a preference feature is masked "
                f"({', '.join(_PAIRED)}; or {', '.join(_UNPAIRED)} and label) or raw (prompt, chosen, rejected; or "
                "prompt, completion, label)."
            )
            raise FeatureError(msg)
        options = with_row_kwargs(self.options, self.processor, feature.get(ROW_KWARGS_COLUMN))
        out = preference_with(feature["prompt"], completions, self.processor, tools, options)
        values = dict(out)
        if "completion" in completions:
            values["label"] = feature["label"]
        return values

    def _sequence(self, row: Mapping[str, Any], name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            prompt = np.asarray(row["prompt_input_ids"], dtype=np.int64)
            ids = np.asarray(row[f"{name}_input_ids"], dtype=np.int64)
            labels = np.asarray(row[f"{name}_labels"], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise FeatureError(f"Feature {index}: its ids and {name}_labels must be lists of ints.") from None
        if ids.ndim != 1 or prompt.ndim != 1 or labels.shape != ids.shape:
            raise FeatureError(f"Feature {index}: {name}_labels must be as long as {name}_input_ids (flat lists).")
        trained = labels != IGNORE_INDEX
        if np.any(labels[trained] != ids[trained]):
            raise FeatureError(
                f"Feature {index}: {name}_labels are not the ids (or -100); they were not made by a mask."
            )
        full = np.concatenate([prompt, ids])
        mask = np.concatenate([np.zeros(len(prompt), dtype=np.int64), trained.astype(np.int64)])
        if self.max_length is not None and len(full) > self.max_length:
            cut = (
                slice(None, self.max_length) if self.truncation_mode == "keep_start" else slice(-self.max_length, None)
            )
            full, mask = full[cut], mask[cut]
            if not mask.any():
                msg = (
                    f"Feature {index}: cutting its {name} sequence to max_length={self.max_length} "
                    f"({self.truncation_mode}) leaves nothing to train. Drop such pairs before training "
                    "(mask_preference_dataset(max_length=...) drops them), or raise max_length."
                )
                raise TruncationError(msg)
        return full, mask

    def _pad(self, sequences: list[tuple[np.ndarray, np.ndarray]], prefix: str) -> dict[str, Any]:
        import torch

        width = max(len(ids) for ids, _ in sequences)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(sequences)
        input_ids = np.full((n, width), self.pad_token_id, dtype=np.int64)
        attention = np.zeros((n, width), dtype=np.int64)
        completion = np.zeros((n, width), dtype=np.int64)
        for row, (ids, mask) in enumerate(sequences):
            input_ids[row, : len(ids)] = ids
            attention[row, : len(ids)] = 1
            completion[row, : len(ids)] = mask
        return {
            f"{prefix}input_ids": torch.from_numpy(input_ids),
            f"{prefix}attention_mask": torch.from_numpy(attention),
            f"{prefix}completion_mask": torch.from_numpy(completion),
        }


@dataclasses.dataclass
class PreferenceStats:
    """What :func:`mask_preference_dataset` did.

    Attributes:
        n_rows: Rows in the input dataset.
        n_kept: Rows in the output.
        dropped: Dropped rows by error class (``on_error="drop"``; ``"TruncationError"`` for rows
            whose prompt fills ``max_length``).
        first_error: The first dropped row's error message, by error class.
        n_prompt_mismatch: Kept rows whose prompt ids are not the generation prompt's
            (:attr:`PreferenceReport.prompt_matches_generation` False): trained on a context the model
            does not read at inference.
        not_rendered: Fields some completion's conversation does not render, counted by field.
    """

    n_rows: int
    n_kept: int
    dropped: dict[str, int]
    first_error: dict[str, str]
    n_prompt_mismatch: int
    not_rendered: dict[str, int] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        why = ", ".join(f"{n} {name}" for name, n in sorted(self.dropped.items())) or "none"
        text = f"{self.n_kept}/{self.n_rows} rows kept ({sum(self.dropped.values())} dropped: {why})"
        if self.n_prompt_mismatch:
            text += f"; {self.n_prompt_mismatch} with a prompt that is not the generation prompt"
        if self.not_rendered:
            lost = ", ".join(f"{n} {field}" for field, n in sorted(self.not_rendered.items()))
            text += f"; not rendered by the template: {lost}"
        return text


_MISMATCH = "prompt_matches_generation"
_NOT_RENDERED = "not_rendered"


def mask_preference_dataset(
    dataset: Any,
    processor: Any,
    *,
    tools_column: str = "tools",
    policy: Policy | None = None,
    template: str | None = None,
    on_error: str = "raise",
    remove_columns: bool | list[str] = False,
    num_proc: int | None = None,
    batch_size: int = 1000,
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
    add_eos: bool | None = None,
    **template_kwargs: Any,
) -> tuple[Any, PreferenceStats]:
    """Mask every row of a TRL preference dataset with :func:`mask_preference` (or :func:`mask_unpaired`).

    Formats (TRL's, detected from the columns):

    - ``prompt``, ``chosen``, ``rejected`` (explicit prompt): conversational (lists of messages;
      each completion a list of messages) or plain (strings: the prompt one user message, each
      completion one reply, rendered with the chat template);
    - ``chosen``, ``rejected`` (implicit prompt): two whole conversations; the prompt is the
      messages they share up to the first assistant message where they part (as TRL's
      ``extract_prompt``), and each completion is the rest;
    - ``prompt``, ``completion``, ``label`` (unpaired, KTO): rows of :func:`mask_unpaired`.

    An optional ``tools`` column (a list of schemas or JSON text) and an optional
    ``chat_template_kwargs`` column (TRL's: template arguments for the row, over the call's) apply
    to their row.

    Args:
        dataset: A ``datasets.Dataset``.
        processor: A fast tokenizer.
        remove_columns: ``False`` (default) keeps the source columns: TRL's ``DPOTrainer`` reads
            ``prompt``/``chosen``/``rejected`` to build its own columns, which
            :class:`PreferenceCollator` ignores. ``True`` drops them all, a list drops those.
        max_length: Refuse (``TruncationError``) the rows that :class:`PreferenceCollator` with the
            same ``max_length`` and ``truncation_mode`` would leave with nothing to train in a
            completion; with ``on_error="drop"`` they are dropped and counted. Kept rows stay whole,
            cut when batched.
        truncation_mode: ``"keep_start"`` or ``"keep_end"``, as the collator's.
        on_error: ``"raise"`` the first row's :class:`~labelmask.LabelmaskError` (its message starting
            ``"Row <index>: "``), or ``"drop"`` such rows and count them.
        tools_column: The column of tool definitions, used when the dataset has it.
        policy: As for :func:`mask_preference`.
        template: As for :func:`mask_preference`.
        num_proc: Worker processes for ``Dataset.map``.
        batch_size: Rows per batch given to each ``map`` call.
        add_eos: As for :func:`mask_preference`.
        **template_kwargs: As for :func:`mask_preference`.

    Returns:
        ``(masked, stats)``: the dataset with ``prompt_input_ids``, ``chosen_input_ids``,
        ``rejected_input_ids``, ``chosen_labels``, ``rejected_labels`` (or ``completion_input_ids``,
        ``completion_labels`` and ``label``), ``prompt_matches_generation`` and ``not_rendered`` per
        row, and a :class:`PreferenceStats`.
    """
    import datasets

    check_on_error(on_error, ("raise", "drop"), "mask_preference_dataset")
    if isinstance(dataset, datasets.IterableDataset):
        msg = "mask_preference_dataset takes a map-style Dataset; mask a stream's rows with mask_preference as read."
        raise OptionError(msg)
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1):
        raise OptionError(f"mask_preference_dataset(max_length={max_length!r}): use a positive int or None.")
    if not (isinstance(truncation_mode, str) and truncation_mode in ("keep_start", "keep_end")):
        raise OptionError(f"truncation_mode={truncation_mode!r}: use 'keep_start' or 'keep_end'.")
    options = _options(policy, "np", template, False, True, add_eos, "keep", "off", None, template_kwargs)
    if is_processor(processor):
        raise OptionError(
            "Preference pairs with a multimodal processor are not supported yet: pass processor.tokenizer."
        )
    check_template_kwargs(processor, options.template_kwargs)
    columns = list(dataset.column_names)
    if {"prompt", "chosen", "rejected"} <= set(columns):
        kind = "explicit"
    elif {"chosen", "rejected"} <= set(columns):
        kind = "implicit"
    elif {"prompt", "completion", "label"} <= set(columns):
        kind = "unpaired"
    else:
        msg = (
            f"mask_preference_dataset found columns {columns[:12]}: a preference dataset has prompt, chosen and "
            "rejected (or chosen and rejected, the prompt implicit), or prompt, completion and label (unpaired)."
        )
        raise ConversationError(msg)
    removed = removed_columns(columns, remove_columns)
    if kind == "unpaired" and "label" not in removed:
        removed.append("label")  # written again, as a bool
    names = _UNPAIRED if kind == "unpaired" else _PAIRED
    kept = [c for c in columns if c not in removed]
    clash = [c for c in kept if c in (*names, _MISMATCH, _NOT_RENDERED)]
    if clash:
        raise OptionError(f"Source columns {clash} would be overwritten by labelmask's output; remove or rename them.")
    int32 = datasets.Value("int32")
    new = {name: datasets.List(int32) for name in names}
    if kind == "unpaired":
        new["label"] = datasets.Value("bool")
    new[_MISMATCH] = datasets.Value("bool")
    new[_NOT_RENDERED] = datasets.List(datasets.Value("string"))
    new[_ERROR_TYPE] = datasets.Value("string")
    new[_ERROR] = datasets.Value("string")
    features = datasets.Features({**{c: dataset.features[c] for c in kept}, **new})
    kwargs_column = ROW_KWARGS_COLUMN if ROW_KWARGS_COLUMN in columns else None
    masker = _PairMasker(
        processor,
        kind,
        tools_column if tools_column in columns else None,
        options,
        on_error,
        max_length,
        truncation_mode,
        _registered(),
        kwargs_column,
    )
    backend = getattr(processor, "backend_tokenizer", None)
    fingerprint = _hash(
        dataset._fingerprint,
        _source_hash(),
        backend.to_str() if backend is not None else repr(processor),
        repr(getattr(processor, "chat_template", None)),
        _policy_key(options.policy),
        repr(dataclasses.replace(options, policy=None, template_kwargs=None)),
        repr(sorted(options.template_kwargs.items())),
        kind,
        tools_column,
        on_error,
        max_length,
        truncation_mode,
        removed,
        batch_size,
        "preference",
    )
    masked = dataset.map(
        masker,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        num_proc=num_proc,
        remove_columns=removed,
        features=features,
        new_fingerprint=fingerprint,
        desc="labelmask: masking pairs",
    )
    dropped, first_error = count_errors(masked[_ERROR_TYPE], masked[_ERROR])
    if dropped:
        masked = masked.filter(
            _is_ok,
            input_columns=[_ERROR_TYPE],
            batched=True,
            new_fingerprint=_hash(fingerprint, "filter"),
        )
    masked = masked.remove_columns([_ERROR_TYPE, _ERROR])
    if dropped and not len(masked):
        why = ", ".join(f"{n} {name}" for name, n in sorted(dropped.items()))
        msg = f"mask_preference_dataset dropped every row ({why}). The first error: {next(iter(first_error.values()))}"
        raise NothingToTrainError(msg)
    not_rendered = count_not_rendered(masked[_NOT_RENDERED])
    stats = PreferenceStats(
        n_rows=len(dataset),
        n_kept=len(masked),
        dropped=dropped,
        first_error=first_error,
        n_prompt_mismatch=sum(1 for ok in masked[_MISMATCH] if not ok),
        not_rendered=not_rendered,
    )
    return masked, stats


def split_implicit(chosen: Any, rejected: Any) -> tuple[list, list, list]:
    """TRL's implicit prompt: the messages two whole conversations share, up to the first assistant
    message where they part; the completions are the rest of each."""
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            msg = (
                f"An implicit-prompt row's {name} is a whole conversation (a list of messages), not "
                f"{_describe(value)}. For plain text, give a prompt column."
            )
            raise ConversationError(msg)
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    # The completions start with the model's reply: a shared assistant message just before the
    # parting point belongs to the completions, not the prompt.
    while n and isinstance(chosen[n - 1], Mapping) and chosen[n - 1].get("role") == "assistant":
        n -= 1
    return list(chosen[:n]), list(chosen[n:]), list(rejected[n:])


@dataclasses.dataclass
class _PairMasker:
    processor: Any
    kind: str
    tools_column: str | None
    options: Options
    on_error: str
    max_length: int | None
    truncation_mode: str
    registered: dict[str, Any]
    kwargs_column: str | None = None  # TRL's per-row chat_template_kwargs

    def __call__(self, batch: Mapping[str, list], indices: list[int]) -> dict[str, list]:
        _sync_registry(self.registered)
        names = _UNPAIRED if self.kind == "unpaired" else _PAIRED
        out: dict[str, list] = {name: [] for name in (*names, _MISMATCH, _NOT_RENDERED)}
        if self.kind == "unpaired":
            out["label"] = []
        out[_ERROR_TYPE] = []
        out[_ERROR] = []
        for k, row in enumerate(indices):
            try:
                tools = _clean_tools(batch[self.tools_column][k]) if self.tools_column else None
                row_kwargs = batch[self.kwargs_column][k] if self.kwargs_column else None
                options = with_row_kwargs(self.options, self.processor, row_kwargs)
                if self.kind == "implicit":
                    prompt, chosen, rejected = split_implicit(
                        _clean_messages(batch["chosen"][k]), _clean_messages(batch["rejected"][k])
                    )
                    completions = {"chosen": chosen, "rejected": rejected}
                elif self.kind == "explicit":
                    prompt = _clean_messages(batch["prompt"][k])
                    completions = {
                        "chosen": _clean_messages(batch["chosen"][k]),
                        "rejected": _clean_messages(batch["rejected"][k]),
                    }
                else:
                    prompt = _clean_messages(batch["prompt"][k])
                    completions = {"completion": _clean_messages(batch["completion"][k])}
                    label = batch["label"][k]
                    if not isinstance(label, bool):
                        raise ConversationError(f"The label column holds {label!r:.40}, not True or False.")
                result = preference_with(prompt, completions, self.processor, tools, options, lists=True)
                if self.max_length is not None:
                    for name in completions:
                        if not _trains_after_cut(result, name, self.max_length, self.truncation_mode):
                            msg = (
                                f"Cut to max_length={self.max_length} ({self.truncation_mode}), the {name} "
                                "completion has nothing left to train."
                            )
                            raise TruncationError(msg, template=result.report.template)
            except LabelmaskError as exc:
                exc.args = (f"Row {row}: {exc.args[0] if exc.args else ''}", *exc.args[1:])
                exc.row = row
                if self.on_error == "raise":
                    raise
                for name in out:
                    out[name].append(None if name.startswith("_") or name in (_MISMATCH, "label") else [])
                out[_MISMATCH][-1] = False
                if self.kind == "unpaired":
                    out["label"][-1] = False
                out[_ERROR_TYPE][-1] = type(exc).__name__
                out[_ERROR][-1] = str(exc)
                continue
            for name in names:
                out[name].append(result[name])
            if self.kind == "unpaired":
                out["label"].append(label)
            out[_MISMATCH].append(result.report.prompt_matches_generation)
            out[_NOT_RENDERED].append([f"{m}:{field}" for m, field in result.report.not_rendered])
            out[_ERROR_TYPE].append(None)
            out[_ERROR].append(None)
        return out


def _trains_after_cut(result: MaskedPreference, name: str, max_length: int, mode: str) -> bool:
    n_prompt = len(result["prompt_input_ids"])
    labels = np.asarray(result[f"{name}_labels"])
    positions = n_prompt + np.flatnonzero(labels != IGNORE_INDEX)
    total = n_prompt + len(labels)
    if total <= max_length:
        return bool(positions.size)
    if mode == "keep_start":
        return bool((positions < max_length).any())
    return bool((positions >= total - max_length).any())
