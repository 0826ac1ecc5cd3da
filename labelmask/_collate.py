"""Stage 5: batches for a trainer, padded (left or right) or packed without padding.

The collator never derives labels from ``input_ids``: they come from the masks, so a
padding token that equals the end-of-turn token (``pad_token = eos_token``, common
with Llama and Qwen) cannot untrain the reply's real end of turn, the bug of
collators that set ``labels[input_ids == pad_token_id] = -100``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from labelmask._pipeline import ROW_KWARGS_COLUMN, check_options, check_template_kwargs, require_torch, with_row_kwargs
from labelmask._policy import IGNORE_INDEX, Policy
from labelmask._truncate import mask_with
from labelmask._turns import turns_with
from labelmask.errors import FeatureError, NothingToTrainError, OptionError

__all__ = ["Collator"]

# Keys a masked sample may carry, and what pads them.
_PAD_VALUES = {
    "attention_mask": 0,
    "labels": IGNORE_INDEX,
    "loss_weights": 0.0,
    "message_index": -1,
    "role": -1,
    "part": 0,
}
_PROVENANCE = ("message_index", "role", "part")
# Processor outputs with one value per token, padded like input_ids (Gemma 3's token_type_ids).
_TOKEN_ALIGNED = {"token_type_ids": 0, "mm_token_type_ids": 0}
# Per-image processor outputs a masked example (e.g. a dataset row) may carry.
_VISION_KEYS = {"pixel_values", "pixel_attention_mask", "image_sizes", "image_grid_thw", "num_crops"}
# Keys of a masked sample that are neither padded per token nor a processor's per-image output.
_NOT_VISION = {"input_ids", "attention_mask", "n_tokens", "n_trained", "n_cut", *_PAD_VALUES, *_TOKEN_ALIGNED}


class Collator:
    """A ``data_collator`` for Hugging Face ``Trainer`` and TRL's ``SFTTrainer``.

    Each feature is a raw conversation (a mapping with ``messages`` and optionally
    ``tools``, masked here with :func:`~labelmask.mask_conversation`) or a masked
    example (a mapping with ``input_ids`` and ``labels``, e.g. from a dataset mapped
    beforehand). The batch holds ``input_ids``, ``attention_mask`` and ``labels``
    (padding labelled ``-100``), as torch tensors by default.

    With a multimodal processor, a raw feature's images come in its messages' image
    parts or under ``images_key``; the batch also holds what the processor returns,
    batched as the processor batches it: per-token outputs (``token_type_ids``,
    ``mm_token_type_ids``) padded with 0 like ``input_ids``, per-image outputs
    (``pixel_values``, ``image_sizes``, ``image_grid_thw``) concatenated over the
    batch's images in order, zero-padded where their shapes differ (LLaVA-NeXT's
    tile counts).

    Args:
        processor: The fast tokenizer or multimodal processor (used to mask raw
            conversations and for its pad id).
        policy: What to train, for raw conversations.
        template: Annotation name to force, for raw conversations.
        padding_side: ``"right"`` or ``"left"``; default: the tokenizer's ``padding_side``.
        pad_to_multiple_of: Pad each batch's length (or, packed, the flat row) up to a multiple.
        packing: Padding-free batches as TRL's ``padding_free`` mode and transformers'
            ``DataCollatorWithFlattening`` consume them: one row of all sequences
            concatenated, ``position_ids`` restarting at 0 for each, no
            ``attention_mask``, and the first label of each sequence ``-100`` so no
            loss crosses a boundary. Not with images (models such as Qwen2-VL
            compute their own position ids from the image grid): raises ``ValueError``.
            transformers keeps the sequences' attention apart by reading ``position_ids``
            only when the model runs without a KV cache, as ``Trainer`` and TRL run it
            (``use_cache=False``); calling the model yourself, pass ``use_cache=False``
            (or use flash attention), or the sequences attend to each other.
        return_tensors: ``"pt"`` (torch) or ``"np"``.
        return_loss_weights: Also return ``loss_weights`` (0.0 on padding), when the
            samples carry them. Off by default: a model's ``forward`` rejects unknown keys.
        return_provenance: Also return ``message_index``, ``role``, ``part`` (for
            analysis, not for a model's ``forward``).
        messages_key: The key of a raw feature's messages.
        tools_key: The key of a raw feature's tools.
        images_key: The key of a raw feature's images.
        add_eos: For raw conversations, as in :func:`~labelmask.mask_conversation`.
        max_length: For raw conversations: cut each to at most this many tokens, as
            :func:`~labelmask.mask_conversation` does (masked features are batched as they are).
        truncation: How, with ``max_length``: ``"right"``, ``"left"``, ``"turns"`` or ``"drop"``.
        expand: ``"turns"``: each raw conversation gives one sample per exchange, masked as
            :func:`~labelmask.mask_turns` does (every reasoning trace trained where the
            template shows it: see ``mask_dataset(expand=...)``). The batch then holds more
            rows than features (the trainer's batch size counts conversations); a conversation
            with no exchange raises :class:`~labelmask.NothingToTrainError`. ``None``: one
            sample per feature.
        **template_kwargs: Passed to the template for raw conversations (a raw feature's
            ``chat_template_kwargs``, TRL's per-row template arguments, go over them).

    Example:
        >>> collator = Collator(tokenizer)  # doctest: +SKIP
        >>> batch = collator([{"messages": conversation} for conversation in conversations])  # doctest: +SKIP
    """

    def __init__(
        self,
        processor: Any,
        *,
        policy: Policy | None = None,
        template: str | None = None,
        padding_side: str | None = None,
        pad_to_multiple_of: int | None = None,
        packing: bool = False,
        return_tensors: str = "pt",
        return_loss_weights: bool = False,
        return_provenance: bool = False,
        messages_key: str = "messages",
        tools_key: str = "tools",
        images_key: str = "images",
        add_eos: bool | None = None,
        max_length: int | None = None,
        truncation: str = "right",
        expand: str | None = None,
        **template_kwargs: Any,
    ):
        tokenizer = getattr(processor, "tokenizer", processor) if not hasattr(processor, "pad_token_id") else processor
        side = padding_side or getattr(tokenizer, "padding_side", None) or "right"
        if not (isinstance(side, str) and side in ("left", "right")):
            raise OptionError(f"padding_side={side!r}: use 'left' or 'right'.")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise OptionError(f"pad_to_multiple_of={pad_to_multiple_of!r}: use a positive int or None.")
        if not (isinstance(return_tensors, str) and return_tensors in ("pt", "np")):
            raise OptionError(f"return_tensors={return_tensors!r}: use 'pt' or 'np'.")
        if return_tensors == "pt":
            require_torch("Collator(return_tensors='pt')")
        if not (expand is None or expand == "turns" and isinstance(expand, str)):
            raise OptionError(f"Collator(expand={expand!r}): use None (one sample per feature) or 'turns'.")
        # Checked once here, so a wrong option fails when the collator is made, not at the first batch.
        self.options = check_options(
            policy=policy,
            template=template,
            add_eos=add_eos,
            max_length=max_length,
            truncation=truncation,
            return_tensors="np",
            **template_kwargs,
        )
        check_template_kwargs(processor, self.options.template_kwargs)
        self.processor = processor
        self.policy = policy
        self.template = template
        self.padding_side = side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.packing = packing
        self.return_tensors = return_tensors
        self.return_loss_weights = return_loss_weights
        self.return_provenance = return_provenance
        self.messages_key = messages_key
        self.tools_key = tools_key
        self.images_key = images_key
        self.add_eos = add_eos
        self.expand = expand
        self.template_kwargs = template_kwargs
        # Padding positions are masked out and labelled -100, so the id only has to be a valid one.
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(tokenizer, "eos_token_id", None)
        self.pad_token_id = int(pad_id) if pad_id is not None else 0

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise FeatureError("Collator got an empty batch.")
        samples = [s for i, f in enumerate(features) for s in self._samples(f, i)]
        keys = ["input_ids", "labels"]
        if self.return_loss_weights and all("loss_weights" in s for s in samples):
            keys.append("loss_weights")
        if self.return_provenance:
            keys += [k for k in _PROVENANCE if all(k in s for s in samples)]
        keys += [k for k in _TOKEN_ALIGNED if all(k in s for s in samples)]
        vision = sorted({k for s in samples for k in s if k not in _NOT_VISION})
        if vision and self.packing:
            msg = (
                f"packing=True with image inputs ({', '.join(vision)}): packed rows would need model-specific "
                "position ids (Qwen2-VL computes them from the image grid). Use padded batches for images."
            )
            raise OptionError(msg)
        batch = self._packed(samples, keys) if self.packing else self._padded(samples, keys)
        for k in vision:
            batch[k] = _concatenate([s[k] for s in samples if k in s], k)
        return {k: self._tensor(v) for k, v in batch.items()}

    def _samples(self, feature: Mapping[str, Any], index: int) -> list[dict[str, np.ndarray]]:
        """The feature's sample, or with ``expand="turns"`` a raw conversation's samples, one per exchange."""
        if not self.expand or not isinstance(feature, Mapping) or "input_ids" in feature:
            return [self._sample(feature, index)]
        if self.messages_key not in feature:
            return [self._sample(feature, index)]  # raises, naming what the feature lacks
        outs = turns_with(
            feature[self.messages_key],
            self.processor,
            feature.get(self.tools_key),
            with_row_kwargs(self.options, self.processor, feature.get(ROW_KWARGS_COLUMN)),
            feature.get(self.images_key),
        )
        if not outs:
            msg = (
                f"Collator feature {index}: expand='turns' found no exchange (a user message followed by an "
                "assistant reply) in its conversation, so it gives no sample. Filter such rows out first."
            )
            raise NothingToTrainError(msg)
        return [{k: out[k] for k in out} for out in outs]

    def _sample(self, feature: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
        if not isinstance(feature, Mapping):
            raise FeatureError(f"Collator feature {index} is a {type(feature).__name__}, not a mapping.")
        if "input_ids" in feature:
            if "labels" not in feature:
                msg = (
                    f"Collator feature {index} has input_ids but no labels (keys: {sorted(map(str, feature))}); "
                    f"pass masked examples (mask_conversation / mask_dataset output) or raw conversations under "
                    f"{self.messages_key!r}.{_RAW_HOW}"
                )
                raise FeatureError(msg)
            wanted = {"input_ids", *_PAD_VALUES, *_TOKEN_ALIGNED, *_VISION_KEYS}
            sample = {k: np.asarray(v) for k, v in feature.items() if k in wanted}
            _check_masked(sample, index)
        elif self.messages_key in feature:
            out = mask_with(
                feature[self.messages_key],
                self.processor,
                feature.get(self.tools_key),
                with_row_kwargs(self.options, self.processor, feature.get(ROW_KWARGS_COLUMN)),
                feature.get(self.images_key),
            )
            sample = {k: out[k] for k in out}
        else:
            msg = (
                f"Collator feature {index} has neither {self.messages_key!r} nor input_ids "
                f"(keys: {sorted(map(str, feature))}).{_RAW_HOW}"
            )
            raise FeatureError(msg)
        return sample

    def _round_up(self, n: int) -> int:
        m = self.pad_to_multiple_of
        return n if m is None else -(-n // m) * m

    def _padded(self, samples: list[dict[str, np.ndarray]], keys: list[str]) -> dict[str, np.ndarray]:
        n = len(samples)
        width = self._round_up(max(len(s["input_ids"]) for s in samples))
        batch = {"input_ids": np.full((n, width), self.pad_token_id, dtype=np.int64)}
        batch["attention_mask"] = np.zeros((n, width), dtype=np.int64)
        for k in keys[1:]:
            dtype = np.float32 if k == "loss_weights" else np.int64
            batch[k] = np.full((n, width), _PAD_VALUES.get(k, _TOKEN_ALIGNED.get(k)), dtype=dtype)
        for row, s in enumerate(samples):
            length = len(s["input_ids"])
            cols = slice(width - length, width) if self.padding_side == "left" else slice(0, length)
            batch["input_ids"][row, cols] = s["input_ids"]
            batch["attention_mask"][row, cols] = 1
            for k in keys[1:]:
                batch[k][row, cols] = s[k]
        return batch

    def _packed(self, samples: list[dict[str, np.ndarray]], keys: list[str]) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        positions = []
        for s in samples:
            for k in keys:
                parts[k].append(np.asarray(s[k]))
            positions.append(np.arange(len(s["input_ids"]), dtype=np.int64))
        total = sum(len(p) for p in positions)
        extra = self._round_up(total) - total
        batch: dict[str, np.ndarray] = {}
        for k in keys:
            dtype = np.float32 if k == "loss_weights" else np.int64
            pad = self.pad_token_id if k == "input_ids" else _PAD_VALUES.get(k, _TOKEN_ALIGNED.get(k))
            flat = np.concatenate([*parts[k], np.full(extra, pad, dtype=dtype)]).astype(dtype, copy=False)
            batch[k] = flat[None, :]
        # Padding to a multiple is one more sequence, its positions restarting too.
        batch["position_ids"] = np.concatenate([*positions, np.arange(extra, dtype=np.int64)])[None, :]
        starts = np.cumsum([0] + [len(p) for p in positions[:-1]])
        batch["labels"][0, starts] = IGNORE_INDEX  # the first token of a sequence is predicted from none
        if "loss_weights" in batch:
            batch["loss_weights"][0, starts] = 0.0
        return batch

    def _tensor(self, array: np.ndarray) -> Any:
        if self.return_tensors == "np":
            return array
        import torch

        return torch.from_numpy(np.ascontiguousarray(array))


_RAW_HOW = (
    " Raw conversations must reach the collator whole: with SFTTrainer, pass "
    "SFTConfig(remove_unused_columns=False, dataset_kwargs={'skip_prepare_dataset': True}); with Trainer, "
    "TrainingArguments(remove_unused_columns=False)."
)


def _check_masked(sample: dict[str, np.ndarray], index: int) -> None:
    """Refuse a masked feature whose labels no labelmask mask gives.

    labelmask's labels are the ids themselves (unshifted) or -100, and never every token of a row: a
    template's headers are never trained. A row trained whole is what a tokenizer-only step writes
    (labels copied from input_ids, as by SFTTrainer's own preparation or DataCollatorForLanguageModeling),
    and it trains the user's turns: the collator refuses it rather than pass it on.
    """
    ids, labels = sample["input_ids"], sample["labels"]
    if ids.ndim != 1 or labels.shape != ids.shape:
        msg = (
            f"Collator feature {index}: labels and input_ids differ in length or shape "
            f"({labels.shape} and {ids.shape}); a masked example has one label per token."
        )
        raise FeatureError(msg)
    for key in (*_PAD_VALUES, *_TOKEN_ALIGNED):
        if key in sample and sample[key].shape != ids.shape:
            msg = (
                f"Collator feature {index}: {key} and input_ids differ in length or shape "
                f"({sample[key].shape} and {ids.shape}); a masked example has one {key} per token (a step that cut "
                f"input_ids and labels without it, as TRL's own truncation and packing do, misaligned them)."
            )
            raise FeatureError(msg)
    trained = labels != IGNORE_INDEX
    if "loss_weights" in sample:
        weights = sample["loss_weights"]
        bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0) | (~trained & (weights != 0)))
        if bad.size:
            t = int(bad[0])
            msg = (
                f"Collator feature {index}: loss_weights[{t}] is {float(weights[t])!r} where labels[{t}] is "
                f"{int(labels[t])}. labelmask's loss weights are finite, >= 0, and 0.0 wherever the label is -100; "
                "these were changed or misaligned after masking."
            )
            raise FeatureError(msg)
    wrong = np.flatnonzero(trained & (labels != ids))
    if wrong.size:
        t = int(wrong[0])
        msg = (
            f"Collator feature {index}: labels[{t}] is {int(labels[t])} but input_ids[{t}] is {int(ids[t])}. "
            "labelmask's labels are the token ids (unshifted: the model shifts them) or -100, so these were made "
            "by something else; pass mask_dataset output or raw conversations." + _RAW_HOW
        )
        raise FeatureError(msg)
    if ids.size and trained.all():
        msg = (
            f"Collator feature {index}: every one of its {ids.size} tokens is trained. labelmask never trains a "
            "whole row (a template's headers are never trained), so these labels were made by a tokenizer-only "
            "step (SFTTrainer's own dataset preparation, DataCollatorForLanguageModeling), and they train the "
            "user's turns too. Pass raw conversations under the messages key, or mask_dataset output." + _RAW_HOW
        )
        raise FeatureError(msg)


def _concatenate(arrays: list[np.ndarray], key: str) -> np.ndarray:
    """Per-image outputs of several samples, concatenated along the image axis; trailing
    axes zero-padded to the largest (as LLaVA-NeXT's image processor pads tile counts)."""
    arrays = [np.asarray(a) for a in arrays]
    if len({a.ndim for a in arrays}) != 1:
        raise FeatureError(f"Collator: {key} has different ranks across the batch ({[a.shape for a in arrays]}).")
    shape = np.max([a.shape[1:] for a in arrays], axis=0) if arrays[0].ndim > 1 else ()
    padded = []
    for a in arrays:
        if a.shape[1:] != tuple(shape):
            pad = [(0, 0)] + [(0, int(m) - d) for m, d in zip(shape, a.shape[1:])]
            a = np.pad(a, pad)
        padded.append(a)
    return np.concatenate(padded, axis=0)
