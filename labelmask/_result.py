"""The result of masking one conversation, and the package's ways to derive a new one from it.

:class:`MaskedConversation` is a read-only mapping; the later stages that change a result
(truncation cuts tokens, ``mask_turns`` and the expansion per exchange relabel) call
:func:`restrict`, :func:`relabel` and :func:`with_report`, which return a new result and leave
the old one as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from labelmask._align import align
from labelmask._encode import Encoded
from labelmask._policy import IGNORE_INDEX
from labelmask._rendered import Span, named_spans

__all__ = ["MaskReport", "MaskedConversation", "Provenance", "array", "arrays", "relabel", "restrict", "with_report"]


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
        not_rendered: ``(message index, field)`` for each field a message carries with text
            in it and the render does not show, in message order: ``"content"``,
            ``"reasoning"``, ``"tool_calls"``, ``"images"``, ``"name"``, ``"tool_call_id"``
            (Qwen3 writes the reasoning of the last exchange only; Phi-3 no tool calls).
            What is not rendered is neither seen nor trained.
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
    not_rendered: tuple[tuple[int, str], ...] = ()


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
    ``return_tensors`` asked; torch tensors of the per-token arrays have a batch
    dimension (``[1, n_tokens]``, as the tokenizer's), lists and numpy arrays none.
    :meth:`to` gives the model's inputs on a device: ``model(**out.to("cuda"))``.

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
        keep: np.ndarray | None = None,
    ):
        self._arrays = arrays
        self._extras = extras or {}  # per-image processor outputs: never cut, never padded
        self._return_tensors = return_tensors
        self._converted: dict[str, Any] = {}
        self.text = text
        self._encoded = encoded
        self._keep = keep  # token positions kept by truncation (None: all)
        self._spans = spans
        self._report = report

    @property
    def report(self) -> MaskReport:
        return self._report

    @property
    def offsets(self) -> np.ndarray:
        offsets = self._encoded.offsets
        return offsets if self._keep is None else offsets[self._keep]

    def _array(self, key: str) -> np.ndarray:
        """The numpy array under ``key``, computed now if it was left for first use."""
        value = self._arrays[key]
        if callable(value):
            value = self._arrays[key] = value()
        elif type(value) is list:  # ids and labels come as lists (what return_tensors=None returns)
            value = self._arrays[key] = np.array(value, dtype=np.int64)
        return value

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
                # Per-token arrays as torch tensors carry a batch dimension, [1, n], as the tokenizer's.
                self._converted[key] = _convert(self._array(key), self._return_tensors, batch=True)
        return self._converted[key]

    def to(self, device: Any) -> Any:
        """The model's inputs on ``device``, ready for ``model(**out.to(device))``.

        A ``transformers.BatchEncoding`` of torch tensors with a batch dimension (``[1, n]``, as
        ``tokenizer(..., return_tensors="pt")`` gives): ``input_ids``, ``attention_mask``,
        ``labels`` and what a processor returned (``pixel_values``, ``image_grid_thw``, ...), whatever
        ``return_tensors`` the result was made with. ``loss_weights`` and the provenance arrays
        (``message_index``, ``role``, ``part``) are not model inputs and are left out: read them
        from the result itself.
        """
        from transformers import BatchEncoding

        inputs = {}
        for key in self:
            if key in _NOT_MODEL_INPUTS:
                continue
            if key in self._arrays:
                inputs[key] = _convert(self._array(key), "pt", batch=True)
            else:
                inputs[key] = _convert(np.asarray(self._extras[key]), "pt")
        return BatchEncoding(inputs).to(device)

    def __iter__(self) -> Iterator[str]:
        yield from self._arrays
        yield from self._extras

    def __len__(self) -> int:
        return len(self._arrays) + len(self._extras)

    def __repr__(self) -> str:
        r = self.report
        return f"<MaskedConversation {r.n_tokens} tokens, {r.n_trained} trained, template={r.template!r}>"


# Keys of a result that are labelmask's, not a model's forward arguments (left out by MaskedConversation.to).
_NOT_MODEL_INPUTS = frozenset({"loss_weights", "message_index", "role", "part"})


def _convert(array: np.ndarray, return_tensors: str | None, *, batch: bool = False) -> Any:
    if return_tensors is None:
        return array.tolist()
    if return_tensors == "np":
        return array
    import torch

    dtype = np.float32 if array.dtype.kind == "f" else np.int64
    tensor = torch.from_numpy(np.ascontiguousarray(array).astype(dtype, copy=False))
    return tensor.unsqueeze(0) if batch else tensor


class Provenance:
    """Which message, role and part each token comes from: the full alignment, made on first use."""

    def __init__(self, rendered: Any, encoded: Encoded, roles: tuple[int, ...], unowned: Any) -> None:
        self._args = (rendered, encoded, roles, unowned if len(unowned) else None)
        self._aligned: Any = None

    @property
    def aligned(self) -> Any:
        if self._aligned is None:
            self._aligned = align(*self._args)
        return self._aligned

    def loss_weights(self, labels: list[int], weights: tuple[float, ...] | None, policy: Any) -> np.ndarray:
        """``float32[n_tokens]``: each trained token's message weight (1.0 without weights) times its role's and
        its part's weight under ``policy`` (see :class:`~labelmask.Policy`), 0.0 elsewhere."""
        trained = np.asarray(labels) != IGNORE_INDEX
        tables = policy._weight_tables
        if weights is None and tables is None:
            return trained.astype(np.float32)
        aligned = self.aligned
        weight = np.ones(len(trained), dtype=np.float64)
        if weights is not None:
            weight = np.append(np.asarray(weights, dtype=np.float64), 0.0)[aligned.token_message]
        if tables is not None:
            role_w, part_w = tables
            weight = weight * role_w[aligned.token_role.astype(np.int64) + 1] * part_w[aligned.token_part]
        # One rounding to float32, of the product (Policy._check_weights refused a product over float32's range).
        return np.where(trained, weight, 0.0).astype(np.float32)


def array(out: MaskedConversation, key: str) -> np.ndarray:
    """The per-token array ``key`` of ``out`` as numpy (computed now if it was left for first use)."""
    return np.asarray(out._array(key))


def arrays(out: MaskedConversation) -> dict[str, np.ndarray]:
    """Every per-token array of ``out`` as numpy (computed now where it was left for first use)."""
    return {key: np.asarray(out._array(key)) for key in out._arrays}


def _derived(out: MaskedConversation, new_arrays: dict[str, Any], report: MaskReport, keep: Any) -> MaskedConversation:
    return MaskedConversation(
        new_arrays,
        out._return_tensors,
        text=out.text,
        encoded=out._encoded,
        spans=out._spans,
        report=report,
        extras=out._extras,
        keep=keep,
    )


def restrict(out: MaskedConversation, keep: np.ndarray, **report_changes: Any) -> MaskedConversation:
    """``out`` restricted to the token positions ``keep`` (sorted), ``n_tokens`` counted again."""
    new_arrays = {k: v[keep] for k, v in arrays(out).items()}
    report = dataclasses.replace(out.report, n_tokens=len(keep), **report_changes)
    return _derived(out, new_arrays, report, keep if out._keep is None else out._keep[keep])


def relabel(out: MaskedConversation, labels: np.ndarray, **report_changes: Any) -> MaskedConversation:
    """``out`` with ``labels`` (a token newly set to ``IGNORE_INDEX`` also loses its loss weight),
    ``n_trained`` counted again."""
    new_arrays: dict[str, Any] = dict(out._arrays)
    new_arrays["labels"] = labels
    weights = array(out, "loss_weights").copy()
    weights[labels == IGNORE_INDEX] = 0.0
    new_arrays["loss_weights"] = weights
    n_trained = int(np.count_nonzero(labels != IGNORE_INDEX))
    report = dataclasses.replace(out.report, n_trained=n_trained, **report_changes)
    return _derived(out, new_arrays, report, out._keep)


def with_report(out: MaskedConversation, **changes: Any) -> MaskedConversation:
    """``out`` with its report's fields ``changes`` replaced (the arrays are shared: results are read-only)."""
    return _derived(out, dict(out._arrays), dataclasses.replace(out.report, **changes), out._keep)
