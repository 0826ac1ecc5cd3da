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

from labelmask._mask import MaskedConversation, mask_conversation
from labelmask._policy import IGNORE_INDEX, Policy
from labelmask._result import array, relabel
from labelmask._vision import attach_images, is_processor
from labelmask.errors import ConversationError, NothingToTrainError, OptionError

__all__ = ["mask_turns"]


def mask_turns(
    messages: Any, processor: Any, *, policy: Policy | None = None, **kwargs: Any
) -> list[MaskedConversation]:
    """Mask each exchange of ``messages`` as the last turn of its own example.

    An exchange is a user message and the messages after it up to the next user
    message; its example is the conversation through the exchange's last assistant
    message, trained only on the messages after that user message (the replies, with
    their tool calls; tool results stay untrained as usual). Exchanges without an
    assistant reply give no example. Arguments as for :func:`mask_conversation`.

    Returns:
        One :class:`MaskedConversation` per exchange with a reply, in order; each
        report's ``n_trained`` counts that exchange's trained tokens.

    Raises:
        NothingToTrainError: an exchange trains nothing, or there is no exchange with a reply
            (``Policy(on_empty="keep")`` keeps the exchange, or returns ``[]``).
    """
    if not isinstance(messages, list):
        raise ConversationError(f"messages must be a list of message mappings, not {type(messages).__name__}.")
    user_policy = policy if policy is not None else Policy()
    if not isinstance(user_policy, Policy):
        raise OptionError(f"policy must be a labelmask.Policy, not {type(user_policy).__name__}")
    inner = dataclasses.replace(user_policy, on_empty="keep")
    images = kwargs.pop("images", None)
    if images is not None:
        if not is_processor(processor):
            raise ConversationError("images= needs a multimodal processor; pass the model's processor.")
        messages = attach_images(messages, images)  # each example then carries its own images
    # Each message read once as a plain dict, as mask_conversation reads it (a mapping subclass included).
    messages = [dict(m.items()) if isinstance(m, Mapping) and type(m) is not dict else m for m in messages]
    role = [m.get("role") if isinstance(m, dict) else None for m in messages]
    users = [i for i, r in enumerate(role) if r == "user"]
    bounds = list(zip(users, users[1:] + [len(messages)]))
    examples = []
    for start, stop in bounds:
        replies = [i for i in range(start + 1, stop) if role[i] == "assistant"]
        if not replies:
            continue
        end = replies[-1] + 1
        out = mask_conversation(messages[:end], processor, policy=inner, **kwargs)
        # Only the messages after this exchange's user message are trained.
        labels = array(out, "labels").copy()
        labels[array(out, "message_index") <= start] = IGNORE_INDEX
        out = relabel(out, labels)
        n_trained = out.report.n_trained
        if n_trained == 0 and user_policy.on_empty == "raise":
            msg = (
                f"Nothing to train in the exchange starting at message {start} (template {out.report.template!r}): "
                "its replies give no trained token under the policy. Drop it, or pass Policy(on_empty='keep')."
            )
            raise NothingToTrainError(msg, message_index=start, template=out.report.template)
        examples.append(out)
    if not examples and user_policy.on_empty == "raise":
        msg = (
            f"mask_turns found no exchange in these {len(messages)} messages: no user message is followed by an "
            "assistant reply. Mask the conversation whole with mask_conversation, or pass Policy(on_empty='keep') "
            "to get [] for it."
        )
        raise NothingToTrainError(msg)
    return examples
