"""One example per exchange, for templates that rewrite history.

Qwen3 (and others) render an assistant turn differently once a later user message
follows it: its reasoning is dropped. Trained in one example, every earlier reply is
learned as the template shows it in the history (without reasoning), never as the
model produced it. :func:`mask_turns` instead renders each exchange as the last one:
for every user message, the conversation up to the end of the replies that answer it,
with only those replies trained. The cost is one render per exchange and the history
tokenised again each time (quadratic in the number of exchanges).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from labelmask._pipeline import Options, check_options, with_images
from labelmask._policy import Policy
from labelmask._result import MaskedConversation, with_report
from labelmask._truncate import mask_with
from labelmask._vision import is_processor
from labelmask.errors import ConversationError, NothingToTrainError

__all__ = ["mask_turns", "turns_with"]


def mask_turns(
    messages: Any, processor: Any, *, policy: Policy | None = None, **kwargs: Any
) -> list[MaskedConversation]:
    """Mask each exchange of ``messages`` as the last turn of its own example.

    An exchange is a user message and the messages after it up to the next user
    message; its example is the conversation through the exchange's last assistant
    message, trained only on the messages after that user message (the replies, with
    their tool calls; tool results stay untrained as usual). Exchanges without an
    assistant reply give no example. Arguments as for :func:`mask_conversation`.

    Each example's ``report.not_rendered`` lists what its exchange's own messages lose;
    the history is reported by the examples that train it (Qwen3's earlier reasoning,
    dropped from every later example, is shown and trained in its own).

    Returns:
        One :class:`MaskedConversation` per exchange with a reply, in order; each
        report's ``n_trained`` counts that exchange's trained tokens.

    Raises:
        NothingToTrainError: an exchange trains nothing, or there is no exchange with a reply
            (``Policy(on_empty="keep")`` keeps the exchange, or returns ``[]``).
    """
    tools = kwargs.pop("tools", None)
    images = kwargs.pop("images", None)
    options = check_options(policy=policy, **kwargs)
    examples = turns_with(messages, processor, tools, options, images)
    if not examples and options.policy.on_empty == "raise":
        msg = (
            f"mask_turns found no exchange in these {len(messages)} messages: no user message is followed by an "
            "assistant reply. Mask the conversation whole with mask_conversation, or pass Policy(on_empty='keep') "
            "to get [] for it."
        )
        raise NothingToTrainError(msg)
    return examples


def turns_with(
    messages: Any, processor: Any, tools: Any, options: Options, images: Any = None
) -> list[MaskedConversation]:
    """:func:`mask_turns` with checked options (also ``mask_dataset(expand="turns")`` and the collator's)."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, list):
        raise ConversationError(f"messages must be a list of message mappings, not {type(messages).__name__}.")
    user_policy = options.policy
    inner = dataclasses.replace(options, policy=dataclasses.replace(user_policy, on_empty="keep"))
    if images is not None:
        if not is_processor(processor):
            raise ConversationError("images= needs a multimodal processor; pass the model's processor.")
        messages = with_images(messages, processor, images)  # each example then carries its own images
    # Each message read once, as a plain dict copy: the roles that split the exchanges are the roles
    # the checks and the template see (a mapping whose get() and items() disagree cannot tell two stories).
    messages = [dict(m.items()) if isinstance(m, Mapping) else m for m in messages]
    role = [m.get("role") if isinstance(m, dict) else None for m in messages]
    users = [i for i, r in enumerate(role) if r == "user"]
    bounds = list(zip(users, users[1:] + [len(messages)]))
    examples = []
    for start, stop in bounds:
        replies = [i for i in range(start + 1, stop) if role[i] == "assistant"]
        if not replies:
            continue
        end = replies[-1] + 1
        # Only the messages after this exchange's user message are trained: the history carries
        # "train": False, so the policy, the dropped-data checks and the report all see it as context.
        history = [{**m, "train": False} if isinstance(m, dict) else m for m in messages[: start + 1]]
        out = mask_with([*history, *messages[start + 1 : end]], processor, tools, inner)
        lost = tuple((m, field) for m, field in out.report.not_rendered if m > start)
        if lost != out.report.not_rendered:
            out = with_report(out, not_rendered=lost)
        if out.report.n_trained == 0 and user_policy.on_empty == "raise":
            msg = (
                f"Nothing to train in the exchange starting at message {start} (template {out.report.template!r}): "
                "its replies give no trained token under the policy. Drop it, or pass Policy(on_empty='keep')."
            )
            raise NothingToTrainError(msg, message_index=start, template=out.report.template)
        examples.append(out)
    return examples
