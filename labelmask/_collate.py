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

from labelmask._mask import mask_conversation
from labelmask._policy import IGNORE_INDEX, Policy

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


class Collator:
    """A ``data_collator`` for Hugging Face ``Trainer`` and TRL's ``SFTTrainer``.

    Each feature is a raw conversation (a mapping with ``messages`` and optionally
    ``tools``, masked here with :func:`~labelmask.mask_conversation`) or a masked
    example (a mapping with ``input_ids`` and ``labels``, e.g. from a dataset mapped
    beforehand). The batch holds ``input_ids``, ``attention_mask`` and ``labels``
    (padding labelled ``-100``), as torch tensors by default.

    Args:
        processor: The fast tokenizer (used to mask raw conversations and for its pad id).
        policy: What to train, for raw conversations.
        template: Annotation name to force, for raw conversations.
        padding_side: ``"right"`` or ``"left"``; default: the tokenizer's ``padding_side``.
        pad_to_multiple_of: Pad each batch's length (or, packed, the flat row) up to a multiple.
        packing: Padding-free batches as TRL's ``padding_free`` mode and transformers'
            ``DataCollatorWithFlattening`` consume them: one row of all sequences
            concatenated, ``position_ids`` restarting at 0 for each, no
            ``attention_mask``, and the first label of each sequence ``-100`` so no
            loss crosses a boundary.
        return_tensors: ``"pt"`` (torch) or ``"np"``.
        return_loss_weights: Also return ``loss_weights`` (0.0 on padding), when the
            samples carry them. Off by default: a model's ``forward`` rejects unknown keys.
        return_provenance: Also return ``message_index``, ``role``, ``part`` (for
            analysis, not for a model's ``forward``).
        messages_key, tools_key: Where a raw feature keeps its conversation.
        **template_kwargs: Passed to the template for raw conversations.

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
        **template_kwargs: Any,
    ):
        side = padding_side or getattr(processor, "padding_side", None) or "right"
        if side not in ("left", "right"):
            raise ValueError(f"padding_side={side!r}: use 'left' or 'right'.")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r}: use a positive int or None.")
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r}: use 'pt' or 'np'.")
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
        self.template_kwargs = template_kwargs
        # Padding positions are masked out and labelled -100, so the id only has to be a valid one.
        pad_id = getattr(processor, "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(processor, "eos_token_id", None)
        self.pad_token_id = int(pad_id) if pad_id is not None else 0

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("Collator got an empty batch.")
        samples = [self._sample(f, i) for i, f in enumerate(features)]
        keys = ["input_ids", "labels"]
        if self.return_loss_weights and all("loss_weights" in s for s in samples):
            keys.append("loss_weights")
        if self.return_provenance:
            keys += [k for k in _PROVENANCE if all(k in s for s in samples)]
        batch = self._packed(samples, keys) if self.packing else self._padded(samples, keys)
        return {k: self._tensor(v) for k, v in batch.items()}

    def _sample(self, feature: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
        if not isinstance(feature, Mapping):
            raise TypeError(f"Collator feature {index} is a {type(feature).__name__}, not a mapping.")
        if "input_ids" in feature:
            if "labels" not in feature:
                msg = (
                    f"Collator feature {index} has input_ids but no labels; pass masked examples "
                    f"(mask_conversation / mask_dataset output) or raw conversations under {self.messages_key!r}."
                )
                raise KeyError(msg)
            sample = {k: np.asarray(v) for k, v in feature.items() if k == "input_ids" or k in _PAD_VALUES}
        elif self.messages_key in feature:
            out = mask_conversation(
                feature[self.messages_key],
                self.processor,
                tools=feature.get(self.tools_key),
                policy=self.policy,
                template=self.template,
                return_tensors="np",
                **self.template_kwargs,
            )
            sample = {k: out[k] for k in out}
        else:
            msg = f"Collator feature {index} has neither {self.messages_key!r} nor input_ids (keys: {sorted(feature)})."
            raise KeyError(msg)
        if len(sample["labels"]) != len(sample["input_ids"]):
            raise ValueError(f"Collator feature {index}: labels and input_ids differ in length.")
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
            batch[k] = np.full((n, width), _PAD_VALUES[k], dtype=dtype)
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
            pad = self.pad_token_id if k == "input_ids" else _PAD_VALUES[k]
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
