"""Truncation to ``max_length``: cut tokens, or drop whole turns and render again.

Modes:

* ``"right"``: keep the first ``max_length`` tokens (a reply may lose its end).
* ``"left"``: keep the template's preamble and leading system prompt (every token
  before the first non-system message), then the last tokens that fit.
* ``"turns"``: drop the earliest exchanges (a user message with the replies and tool
  results that follow it), keeping the system prompt, and render the shorter
  conversation again, so the sample is exactly what the template writes for it.
* ``"drop"``: a sample longer than ``max_length`` raises :class:`TruncationError`
  (``mask_dataset(on_error="drop")`` drops and counts it).

Images are never cut: where ``"right"`` or ``"left"`` would remove any token of an
image's run (its placeholder expansion, with the structure tokens around it), the
sample raises :class:`TruncationError` naming the message; ``"turns"`` shortens such
a sample at an exchange boundary instead, and the dropped turns' images go with them.

A sample left with nothing to train raises :class:`NothingToTrainError` (or, with
``Policy(on_empty="keep")``, comes back with ``report.n_trained == 0``), never silently.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from labelmask._parts import Part, Role
from labelmask._pipeline import Options, mask_one, with_images
from labelmask._policy import IGNORE_INDEX, Policy
from labelmask._result import MaskedConversation, array, arrays, restrict, with_report
from labelmask.errors import NothingToTrainError, TruncationError

__all__ = ["mask_truncated", "mask_with"]


def mask_truncated(messages: Any, processor: Any, tools: Any, options: Options, images: Any = None) -> Any:
    """The sample cut to ``options.max_length`` tokens by ``options.truncation``."""
    max_length, truncation = options.max_length, options.truncation
    user_policy = options.policy
    if images is not None:
        # Put in once: truncation='turns' renders shorter conversations, whose images go with their turns.
        messages, images = with_images(messages, processor, images), None
    inner = dataclasses.replace(options, policy=dataclasses.replace(user_policy, on_empty="keep"))
    out = mask_one(messages, processor, tools, inner, images)
    n = out.report.n_tokens
    if n <= max_length:
        return _checked(out, user_policy, n_cut=0, why="")
    template = out.report.template
    if truncation == "drop":
        msg = (
            f"The sample is {n} tokens under template {template!r}, over max_length={max_length}; "
            "truncation='drop' refuses it (mask_dataset(on_error='drop') counts it). Use "
            "truncation='right', 'left' or 'turns' to shorten it instead."
        )
        raise TruncationError(msg, template=template)
    if truncation == "turns":
        return _drop_turns(messages, processor, tools, images, out, inner, user_policy)
    table = arrays(out)
    if truncation == "right":
        keep = np.arange(max_length)
    else:
        roles, owners = table["role"], table["message_index"]
        # The preamble and the leading system prompt: tokens before the first non-system message's.
        other = np.flatnonzero((owners >= 0) & (roles != int(Role.SYSTEM)))
        prefix = int(other[0]) if len(other) else n
        if prefix >= max_length:
            msg = (
                f"truncation='left' keeps the system prompt, but it alone is {prefix} tokens under template "
                f"{template!r}, not under max_length={max_length}. Raise max_length or use truncation='right'."
            )
            raise TruncationError(msg, template=template)
        keep = np.concatenate([np.arange(prefix), np.arange(n - (max_length - prefix), n)])
    _refuse_cut_images(table, keep, truncation, max_length, template)
    return _checked(restrict(out, keep), user_policy, n_cut=n - len(keep), why=f"truncation={truncation!r}")


def _refuse_cut_images(arrays: dict, keep: np.ndarray, truncation: str, max_length: int, template: str) -> None:
    image = arrays["part"] == int(Part.IMAGE)
    image[keep] = False
    if image.any():
        message = int(arrays["message_index"][np.flatnonzero(image)[0]])
        msg = (
            f"truncation={truncation!r} to max_length={max_length} would cut into the image tokens of message "
            f"{message} under template {template!r}; labelmask never cuts an image. Use truncation='turns' to "
            "drop whole exchanges with their images, raise max_length, or refuse long samples with 'drop'."
        )
        raise TruncationError(msg, message_index=message if message >= 0 else None, template=template)


def _drop_turns(
    messages: list, processor: Any, tools: Any, images: Any, out: Any, inner: Options, user_policy: Policy
) -> Any:
    max_length = inner.max_length
    n_full = out.report.n_tokens
    lead = 0
    while (
        lead < len(messages)
        and isinstance(messages[lead], dict)
        and messages[lead].get("role") in ("system", "developer")
    ):
        lead += 1
    # Exchanges start at each user message after the system prompt.
    starts = [i for i in range(lead, len(messages)) if messages[i].get("role") == "user"]
    for start in starts[1:]:
        shorter = messages[:lead] + messages[start:]
        candidate = mask_one(shorter, processor, tools, inner, images)
        if candidate.report.n_tokens <= max_length:
            candidate = with_report(candidate, n_dropped_messages=start - lead)
            return _checked(candidate, user_policy, n_cut=n_full - candidate.report.n_tokens, why="truncation='turns'")
    last = starts[-1] if starts else lead
    msg = (
        f"truncation='turns' drops whole exchanges, but the last one (from message {last}) with the system prompt "
        f"is still over max_length={max_length} tokens under template {out.report.template!r}. Raise max_length or "
        "use truncation='right' or 'left'."
    )
    raise TruncationError(msg, message_index=last, template=out.report.template)


def _checked(out: Any, policy: Policy, *, n_cut: int, why: str) -> Any:
    labels = array(out, "labels")
    n_trained = int(np.count_nonzero(labels != IGNORE_INDEX))
    out = with_report(out, n_trained=n_trained, n_cut=n_cut)
    if n_trained == 0 and policy.on_empty == "raise":
        cause = f" after {why} cut {n_cut} tokens" if n_cut else ""
        msg = (
            f"Nothing to train{cause}: under template {out.report.template!r} no token of this sample is trained. "
            "Drop the sample, raise max_length, choose another truncation, or pass Policy(on_empty='keep') "
            "to receive it and count it yourself."
        )
        raise NothingToTrainError(msg, template=out.report.template)
    return out


def mask_with(messages: Any, processor: Any, tools: Any, options: Options, images: Any = None) -> MaskedConversation:
    """:func:`~labelmask.mask_conversation` with its options checked already (the Collator and
    mask_dataset check them once per call, not once per conversation): truncated if they say so."""
    if options.max_length is not None:
        return mask_truncated(messages, processor, tools, options, images)
    return mask_one(messages, processor, tools, options, images)
