"""Stage 4: turn token provenance into labels.

The default policy trains what the model must generate: for every assistant
turn, everything the template writes after the generation prompt through the
end-of-turn marker (reasoning with its tags, content, tool calls with their
syntax, the end-of-turn token) and nothing else.

Which tokens are trained, exactly. Characters fall in three classes:

* *trained*: in the generated region of a message whose role the policy trains,
  in a part the policy trains;
* *tolerated*: the header (generation prompt) of such a message, when
  ``straddle="train"``;
* *blocked*: everything else: other messages, template text outside the turn,
  the newline after an end-of-turn token, image tokens.

A token is trained when it covers at least one trained character and no blocked
one. So ``"\\n\\n\\n"`` (the header's newline merged with a reply that starts with
two newlines) is trained under ``straddle="train"`` and not under ``"drop"``,
while ``"▁USER"`` (a reply's trailing space merged with the next turn's header)
is never trained. Both cases are counted in the sample's report.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from labelmask._align import Aligned
from labelmask._parts import ROLE_ALIASES, Part, Role

__all__ = ["IGNORE_INDEX", "Policy", "Trained", "apply_policy"]

IGNORE_INDEX = -100
"""The label of a token that gets no loss (PyTorch's ``CrossEntropyLoss`` default)."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """What to train.

    Args:
        roles: Roles whose messages are trained (their generated region: after the
            header through the end-of-turn marker). Default: assistant only.
        reasoning: Train reasoning blocks (with their tags).
        tool_calls: Train tool calls (with their syntax).
        eot: Train the end-of-turn marker after a trained message.
        straddle: A token that merges the end of a trained message's header with
            the start of its reply: ``"train"`` it (the reply's first characters
            get loss) or ``"drop"`` it (the header never gets loss).
        on_empty: When no token is trained: ``"raise"``
            :class:`~labelmask.errors.NothingToTrainError`, or ``"keep"`` the
            sample (its report says ``n_trained == 0``).

    Example:
        >>> Policy(roles=("user", "assistant"), straddle="drop").roles
        frozenset({'assistant', 'user'})
    """

    roles: frozenset[str] = frozenset({"assistant"})
    reasoning: bool = True
    tool_calls: bool = True
    eot: bool = True
    straddle: Literal["train", "drop"] = "train"
    on_empty: Literal["raise", "keep"] = "raise"

    def __post_init__(self) -> None:
        roles = frozenset([self.roles] if isinstance(self.roles, str) else self.roles)
        unknown = roles - {"system", "user", "assistant", "tool"}
        if unknown:
            msg = f"Policy(roles=...) got unknown roles {sorted(unknown)}; use system, user, assistant, tool."
            raise ValueError(msg)
        object.__setattr__(self, "roles", roles)
        if self.straddle not in ("train", "drop"):
            raise ValueError(f"Policy(straddle={self.straddle!r}): use 'train' or 'drop'.")
        if self.on_empty not in ("raise", "keep"):
            raise ValueError(f"Policy(on_empty={self.on_empty!r}): use 'raise' or 'keep'.")


@dataclasses.dataclass(frozen=True)
class Trained:
    """Which tokens the policy trains.

    Attributes:
        trained: ``bool[n_tokens]``.
        n_straddle: Trained tokens that also cover header characters.
        n_boundary_dropped: Tokens that cover trained characters but were not
            trained, because they also cover blocked ones.
    """

    trained: np.ndarray
    n_straddle: int
    n_boundary_dropped: int


def apply_policy(aligned: Aligned, policy: Policy) -> Trained:
    """Decide, token by token, what ``policy`` trains."""
    role_codes = [int(ROLE_ALIASES[r]) for r in policy.roles]
    role_ok = np.isin(aligned.char_role, role_codes)
    parts_off = [Part.IMAGE, Part.HEADER]
    if not policy.reasoning:
        parts_off.append(Part.REASONING)
    if not policy.tool_calls:
        parts_off.append(Part.TOOL_CALLS)
    if not policy.eot:
        parts_off.append(Part.EOT)
    part_ok = ~np.isin(aligned.char_part, parts_off)
    train_char = role_ok & aligned.char_generated & part_ok
    header = role_ok & (aligned.char_part == Part.HEADER) & (aligned.char_role != Role.NONE)
    covers_trained = aligned.touches(train_char)
    covers_header = aligned.touches(header)
    covers_blocked = aligned.touches(~(train_char | header))
    if policy.straddle == "train" and len(aligned.char_message):
        # A header is tolerated only in a token that runs from a message's header into
        # that same message's reply, never from a reply into the next turn's header.
        n = len(aligned.char_message)
        first = aligned.char_message[np.clip(aligned.starts, 0, n - 1)]
        last = aligned.char_message[np.clip(aligned.ends - 1, 0, n - 1)]
        header_ok = ~covers_header | (first == last)
    else:
        header_ok = ~covers_header
    trained = covers_trained & ~covers_blocked & header_ok
    n_straddle = int((trained & covers_header).sum())
    n_dropped = int((covers_trained & ~trained).sum())
    return Trained(trained=trained, n_straddle=n_straddle, n_boundary_dropped=n_dropped)
