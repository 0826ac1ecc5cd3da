"""Stage 6: training with ``loss_weights``: the weighted loss, and a trainer mixin that computes it.

The loss, by definition::

    loss = sum_t w[t] * CE(logits[t - 1], labels[t])  /  N

over the positions ``t`` whose label is not ``-100`` (the causal shift: the logits at
``t - 1`` predict token ``t``), where ``w`` is ``loss_weights`` and ``N`` is the number of
such positions: in the batch, or, in a trainer, ``num_items_in_batch`` (the trained
positions of the whole gradient-accumulation batch, over every device with
``average_tokens_across_devices``), as transformers normalizes its own loss. With every
weight 1.0 it is transformers' loss; a weight scales its token's share absolutely (a token
of weight 0.0 still counts in ``N``).

torch and transformers are imported when used, not with labelmask.
"""

from __future__ import annotations

from typing import Any

from labelmask._collate import Collator
from labelmask._policy import IGNORE_INDEX
from labelmask.errors import FeatureError, OptionError

__all__ = ["WeightedLoss", "weighted_loss"]

_HOW = (
    "Batch with labelmask.Collator(tokenizer, return_loss_weights=True, ...) over raw conversations or "
    "mask_dataset(..., keep_loss_weights=True) rows, and pass remove_unused_columns=False."
)


def weighted_loss(logits: Any, labels: Any, loss_weights: Any, *, num_items_in_batch: Any = None) -> Any:
    """The weighted causal-LM loss: ``sum_t w[t] * CE(logits[t - 1], labels[t]) / N``.

    ``t`` runs over the positions whose label is not ``-100`` (labels unshifted, as the
    Collator returns them: the logits at ``t - 1`` predict token ``t``); ``N`` is their
    number, or ``num_items_in_batch`` when given (a trainer's count over the whole
    gradient-accumulation batch). Cross-entropy is computed in float32. With every weight
    1.0 this is transformers' own causal-LM loss; a token of weight 0.0 still counts in ``N``.
    A batch with no trained position gives NaN, as transformers' mean does.

    Args:
        logits: ``float[batch, seq, vocab]`` torch tensor.
        labels: ``int64[batch, seq]``, ``-100`` where no loss.
        loss_weights: ``float[batch, seq]``: finite, ``>= 0``, and 0.0 wherever the label is ``-100``.
        num_items_in_batch: The denominator ``N``, when a trainer gives it.

    Returns:
        A scalar torch tensor.

    Raises:
        FeatureError: shapes that disagree, or a weight that is negative, not finite, or not 0.0
            where the label is ``-100`` (weights misaligned with their labels).
    """
    import torch
    import torch.nn.functional as F

    if logits.dim() != 3 or tuple(labels.shape) != tuple(logits.shape[:-1]):
        shapes = f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}"
        msg = f"weighted_loss: {shapes}: use [batch, seq, vocab] and [batch, seq]."
        raise FeatureError(msg)
    if tuple(loss_weights.shape) != tuple(labels.shape):
        msg = (
            f"weighted_loss: loss_weights {tuple(loss_weights.shape)} and labels {tuple(labels.shape)} differ in "
            "shape: a weight per label is needed (a step that cut or packed labels without the weights, as TRL's "
            "own dataset preparation does, misaligned them)."
        )
        raise FeatureError(msg)
    labels = labels.to(logits.device)
    weights = loss_weights.to(device=logits.device, dtype=torch.float32)
    untrained = labels == IGNORE_INDEX
    bad = ~torch.isfinite(weights) | (weights < 0) | (untrained & (weights != 0))
    if bool(bad.any()):
        row, col = (int(i) for i in bad.nonzero()[0])
        msg = (
            f"weighted_loss: loss_weights[{row}, {col}] is {float(weights[row, col])!r} where labels[{row}, {col}] "
            f"is {int(labels[row, col])}. Weights are finite, >= 0 and 0.0 wherever the label is -100; these were "
            "changed or misaligned after masking."
        )
        raise FeatureError(msg)
    # The causal shift, as transformers' ForCausalLMLoss: position t's logits predict label t + 1.
    shift_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    shift_weights = F.pad(weights, (0, 1), value=0.0)[..., 1:]
    vocab = logits.shape[-1]
    per_token = F.cross_entropy(
        logits.float().reshape(-1, vocab), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    total = (per_token * shift_weights.reshape(-1)).sum()
    if num_items_in_batch is None:
        return total / (shift_labels != IGNORE_INDEX).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


class WeightedLoss:
    """A mixin for ``transformers.Trainer`` and TRL's ``SFTTrainer`` that trains with ``loss_weights``.

    Put it first: ``class WeightedSFTTrainer(labelmask.WeightedLoss, trl.SFTTrainer): pass``. Its
    ``compute_loss`` takes ``loss_weights`` and ``labels`` out of the batch, runs the model without
    labels and returns :func:`weighted_loss` of its logits, normalized by the Trainer's
    ``num_items_in_batch`` (the trained positions of the whole gradient-accumulation batch; the mixin
    has the Trainer count them for every model), so ``loss_is_scaled_for_ga`` is set to say so; with
    ``average_tokens_across_devices`` it is scaled as the Trainer scales its own loss. Packed batches
    (``Collator(packing=True)``) need nothing more: the first label of each sequence is ``-100``.

    The data: ``Collator(tokenizer, return_loss_weights=True, ...)`` as ``data_collator`` and
    ``remove_unused_columns=False``; for ``SFTTrainer`` also
    ``dataset_kwargs={"skip_prepare_dataset": True}``, ``max_length=None`` (or the Collator's) and no
    ``packing``/``padding_free``: TRL's preparation cuts and packs ``input_ids`` and ``labels`` but not
    ``loss_weights``, and with it skipped those settings would be ignored; the Collator has its own
    ``max_length`` and ``packing``.

    Raises:
        OptionError: when the trainer is made, for a configuration that would drop or misalign the
            weights, or compute another loss (``compute_loss_func``, ``label_smoothing_factor``,
            TRL's ``loss_type="dft"``, Liger kernels, ``DataParallel`` over several GPUs).
        FeatureError: a batch without ``loss_weights`` or ``labels``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_trainer(self)
        # The Trainer counts num_items_in_batch (over labels[..., 1:], every accumulated micro-batch) only
        # for a model that takes loss kwargs; this loss needs the count for every model.
        self.model_accepts_loss_kwargs = True
        if hasattr(self, "_loss_shifts_labels"):
            self._loss_shifts_labels = True

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if "loss_weights" not in inputs:
            msg = f"WeightedLoss: the batch has no loss_weights (keys: {', '.join(sorted(inputs))}). {_HOW}"
            raise FeatureError(msg)
        if "labels" not in inputs:
            raise FeatureError(f"WeightedLoss: the batch has no labels (keys: {', '.join(sorted(inputs))}). {_HOW}")
        if "shift_labels" in inputs:
            msg = "WeightedLoss: the batch has shift_labels (context parallelism), which it does not take."
            raise FeatureError(msg)
        inputs = dict(inputs)
        weights = inputs.pop("loss_weights")
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        if logits is None:
            raise FeatureError("WeightedLoss: the model returned no logits (a fused loss kernel?); it needs them.")
        loss = weighted_loss(logits, labels, weights, num_items_in_batch=num_items_in_batch)
        # Normalized over the whole accumulated batch when the Trainer counted it: training_step must not divide it.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch was summed over the devices, whose gradients are averaged (as Trainer.compute_loss).
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, outputs) if return_outputs else loss


def _check_trainer(trainer: Any) -> None:
    """Refuse, when the trainer is made, a configuration that would drop or misalign the weights or change the loss."""
    args = trainer.args
    name = type(args).__name__
    if getattr(args, "remove_unused_columns", False):
        msg = f"WeightedLoss: {name}(remove_unused_columns=True) drops the loss_weights column. {_HOW}"
        raise OptionError(msg)
    if getattr(trainer, "compute_loss_func", None) is not None:
        raise OptionError("WeightedLoss computes the loss itself: do not pass compute_loss_func.")
    if getattr(args, "label_smoothing_factor", 0):
        raise OptionError(f"WeightedLoss: {name}(label_smoothing_factor=...) is not part of its loss; leave it at 0.")
    if getattr(args, "use_liger_kernel", False):
        raise OptionError(f"WeightedLoss: {name}(use_liger_kernel=True) computes a fused loss without logits.")
    if getattr(args, "n_gpu", 1) > 1:
        msg = f"WeightedLoss: {args.n_gpu} GPUs in one process (DataParallel) are not supported; launch with torchrun."
        raise OptionError(msg)
    collator = trainer.data_collator
    if isinstance(collator, Collator) and not collator.return_loss_weights:
        raise OptionError(f"WeightedLoss: the Collator does not return loss_weights. {_HOW}")
    if not hasattr(args, "dataset_kwargs"):
        return  # transformers.Trainer: nothing else prepares the data
    # TRL's SFTTrainer. Its preparation cuts input_ids and labels to max_length and packs them, leaving
    # loss_weights behind (sft_trainer.py, _prepare_dataset), and its collator drops them.
    if not (args.dataset_kwargs or {}).get("skip_prepare_dataset", False):
        msg = (
            f"WeightedLoss: SFTTrainer's dataset preparation cuts and packs input_ids and labels but not "
            f"loss_weights. Pass {name}(dataset_kwargs={{'skip_prepare_dataset': True}}) and cut and pack with "
            "labelmask (mask_dataset(max_length=...), Collator(max_length=..., packing=True))."
        )
        raise OptionError(msg)
    if getattr(args, "packing", False) or getattr(args, "padding_free", False):
        msg = (
            f"WeightedLoss: {name}(packing=True / padding_free=True) would be ignored with skip_prepare_dataset and "
            "labelmask's collator; pass labelmask.Collator(..., packing=True) instead."
        )
        raise OptionError(msg)
    max_length = getattr(args, "max_length", None)
    if max_length is not None and not (isinstance(collator, Collator) and collator.options.max_length == max_length):
        msg = (
            f"WeightedLoss: {name}(max_length={max_length}) would be ignored: with skip_prepare_dataset nothing cuts "
            f"to it. Pass {name}(max_length=None) and cut with labelmask (mask_dataset(max_length=...) or "
            "Collator(max_length=...))."
        )
        raise OptionError(msg)
    if getattr(args, "loss_type", "nll") != "nll":
        raise OptionError(f"WeightedLoss: {name}(loss_type={args.loss_type!r}) is another loss; use 'nll'.")
