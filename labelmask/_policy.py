"""Stage 4: turn token provenance into labels.

The default policy trains what the model must generate: for every assistant
turn, everything the template writes after the generation prompt through the
end-of-turn marker (reasoning with its tags, content, tool calls with their
syntax, the end-of-turn token) and nothing else.

Which tokens are trained, exactly. Characters (in practice, the segments of text
between span markers) fall in three classes:

* *trained*: in the generated region of a trained message, in a part the policy
  trains. A message is trained when its role is in ``policy.roles`` (with
  ``last_turn_only``, only the last such message), unless it carries a
  ``"train"`` flag, which decides for that message alone;
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
import functools
from typing import Any, Literal, NamedTuple

import numpy as np

from labelmask._align import Aligned
from labelmask._parts import ROLE_ALIASES, Part, Role
from labelmask._rendered import Rendered
from labelmask.errors import OptionError

__all__ = ["IGNORE_INDEX", "Policy", "Runs", "Trained", "apply_policy", "label_runs", "plan_runs", "trained_messages"]

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
        empty_reasoning: Train an empty reasoning block that the template wrote into a
            reply whose message carried no reasoning (:attr:`Part.EMPTY_REASONING`; Qwen3.5's
            and Nemotron 3's ``<think>\n\n</think>``). Off by default: the data never said
            the model skips thinking there, and training the block teaches it to (users of
            hybrid-thinking models report thinking eroded by such samples). Turn it on to
            train a model that answers without thinking on such data.
        on_dropped_tool_calls: A trained reply carries tool calls its template does not render
            (Phi-3's drops them all, so the reply renders empty and its end of turn would
            teach the model to answer nothing): ``"raise"``
            :class:`~labelmask.errors.NotRenderedError` (the default), ``"skip"`` the reply
            (left untrained, the sample kept) or ``"train"`` it as the template renders it.
            Either way the report's ``not_rendered`` lists it.
        last_turn_only: Train only the last message whose role is in ``roles``
            (usually the final assistant reply); earlier ones get no loss. An
            assistant message that makes tool calls and the reply after their
            results are two messages: only the reply is the last turn.

    A message may also decide for itself: ``"train": False`` on a message is never
    trained, ``"train": True`` is trained whatever its role and ``last_turn_only``
    (its generated region, as for any trained role; ``reasoning``, ``tool_calls``
    and ``eot`` still apply). ``"weight": w`` scales its loss in the result's
    ``loss_weights``. Both keys are removed before the template renders.

    Policies nest: what ``roles={"system", "user", "assistant", "tool"}`` trains
    includes what the default trains, which includes what
    ``last_turn_only=True`` trains.

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
    last_turn_only: bool = False
    empty_reasoning: bool = False
    on_dropped_tool_calls: Literal["raise", "skip", "train"] = "raise"

    def __post_init__(self) -> None:
        if not isinstance(self.roles, (str, frozenset, set, list, tuple)):
            raise OptionError(f"Policy(roles={self.roles!r:.40}): use a role name or a collection of them.")
        items = [self.roles] if isinstance(self.roles, str) else list(self.roles)
        if not all(isinstance(role, str) for role in items):
            raise OptionError(f"Policy(roles={self.roles!r:.40}): roles are names: system, user, assistant, tool.")
        roles = frozenset(items)
        unknown = roles - {"system", "user", "assistant", "tool"}
        if unknown:
            msg = f"Policy(roles=...) got unknown roles {sorted(unknown)}; use system, user, assistant, tool."
            raise OptionError(msg)
        object.__setattr__(self, "roles", roles)
        if not (isinstance(self.straddle, str) and self.straddle in ("train", "drop")):
            raise OptionError(f"Policy(straddle={self.straddle!r}): use 'train' or 'drop'.")
        if not (isinstance(self.on_empty, str) and self.on_empty in ("raise", "keep")):
            raise OptionError(f"Policy(on_empty={self.on_empty!r}): use 'raise' or 'keep'.")
        if not (
            isinstance(self.on_dropped_tool_calls, str) and self.on_dropped_tool_calls in ("raise", "skip", "train")
        ):
            msg = f"Policy(on_dropped_tool_calls={self.on_dropped_tool_calls!r}): use 'raise', 'skip' or 'train'."
            raise OptionError(msg)

    @functools.cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        # Lookup tables: trained roles, indexed by Role + 1 (so Role.NONE is row 0), and trained parts.
        role_ok = np.zeros(len(Role) + 1, dtype=bool)
        for name in self.roles:
            role_ok[ROLE_ALIASES[name] + 1] = True
        part_ok = np.ones(len(Part), dtype=bool)
        off = [Part.IMAGE, Part.HEADER, Part.NONE]
        off += [] if self.reasoning else [Part.REASONING]
        off += [] if self.tool_calls else [Part.TOOL_CALLS]
        off += [] if self.eot else [Part.EOT]
        off += [] if self.empty_reasoning else [Part.EMPTY_REASONING]
        part_ok[off] = False
        return role_ok, part_ok

    @functools.cached_property
    def _lists(self) -> tuple[list[bool], list[bool]]:
        # The same tables as Python lists, for per-message and per-segment lookups.
        role_ok, part_ok = self._tables
        return role_ok.tolist(), part_ok.tolist()


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


# The class of a segment of text under a policy (see the module docstring).
BLOCKED, TRAINED, TOLERATED = 0, 1, 2
_HEADER_PART = int(Part.HEADER)


def trained_messages(policy: Policy, roles: tuple[int, ...], train: tuple[bool | None, ...] | None) -> list[bool]:
    """``n_messages + 1`` flags: which messages ``policy`` trains; the last, for text
    outside every message (message -1), is False.

    Args:
        roles: :class:`Role` code of each message.
        train: Each message's ``"train"`` flag, ``None`` where it carries none (or
            ``None`` for no flags at all).
    """
    role_table, _ = policy._lists
    ok = [role_table[role + 1] for role in roles]
    if policy.last_turn_only:
        last = max((i for i, flag in enumerate(ok) if flag), default=-1)
        ok = [i == last for i in range(len(ok))]
    if train is not None:
        ok = [flag if flag is not None else was for flag, was in zip(train, ok)]
    ok.append(False)
    return ok


def segment_classes(
    messages: list[int], generated: list[bool], parts: list[int], message_ok: list[bool], policy: Policy
) -> list[int]:
    """The class of each segment: :data:`TRAINED` (in the generated region of a trained message,
    in a part the policy trains), :data:`TOLERATED` (a trained message's header) or :data:`BLOCKED`.

    The one place that says which text the policy trains; labels (:func:`label_runs`,
    :func:`apply_policy`) and the fail-closed check (``_guard``) all start from it.
    """
    _, part_ok = policy._lists
    return [
        (TRAINED if g and part_ok[p] else TOLERATED if p == _HEADER_PART else BLOCKED) if message_ok[m] else BLOCKED
        for m, g, p in zip(messages, generated, parts)
    ]


def decide_token(covered: list[int], same_message: bool, policy: Policy) -> tuple[bool, bool, bool]:
    """``(trained, covers_header, covers_trained)`` of a token over segments of classes ``covered``.

    The straddle rule, in one place: a token is trained when it covers trained text and no blocked
    text; a header only in a token that runs from a message's header into that same message's reply
    (``same_message``: its first and last segment belong to one message) and only under
    ``straddle="train"``, never from a reply into the next turn's header.
    """
    covers_trained = TRAINED in covered
    covers_header = TOLERATED in covered
    drop = policy.straddle != "train"
    ok = covers_trained and BLOCKED not in covered and not (covers_header and (drop or not same_message))
    return ok, covers_header, covers_trained


def apply_policy(aligned: Aligned, policy: Policy, message_ok: list[bool]) -> Trained:
    """Decide, token by token, what ``policy`` trains (per segment; :func:`label_runs` is the same, faster).

    Args:
        message_ok: Which messages are trained, from :func:`trained_messages`.
    """
    # Per segment, in Python (a few dozen; cheaper than a numpy call each), then spread over tokens.
    messages = aligned.messages
    classes = segment_classes(messages, aligned.generated, aligned.parts, message_ok, policy)
    trained = aligned.per_token([c == TRAINED for c in classes], False, bool)
    # A token inside one segment is trained when that segment is. Tokens over several segments
    # (a header's end merged with a reply's start, a reply's trailing space with the next header)
    # are few; each is decided from the classes it covers, as Aligned.touches would.
    n_straddle = n_dropped = 0
    if aligned.straddles:
        for token, start, stop in aligned.straddles:
            same = messages[start] == messages[stop]
            ok, covers_header, covers_trained = decide_token(classes[start : stop + 1], same, policy)
            trained[token] = ok
            n_straddle += ok and covers_header
            n_dropped += covers_trained and not ok
    return Trained(trained=trained, n_straddle=n_straddle, n_boundary_dropped=n_dropped)


class Runs(NamedTuple):
    """The rendered text cut into runs that the policy treats alike, for :func:`label_runs`.

    Consecutive segments merge when they have the same class (trained, tolerated
    header, blocked) and, unless blocked, the same message: a token is decided by
    the classes it covers and the messages of its first and last segment, which
    the runs keep. A conversation has a third as many runs as segments.

    Attributes:
        bounds: Where each run starts, then the text's length.
        classes: The class of each run.
        messages: The message of each run (for a blocked run, of its first segment).
    """

    bounds: list[int]
    classes: list[int]
    messages: list[int]


def plan_runs(rendered: Rendered, generated: list[bool], message_ok: list[bool], policy: Policy) -> Runs:
    """The :class:`Runs` of ``rendered`` under ``policy`` (before tokenizing: they need no tokens).

    Args:
        generated: Per segment, from :func:`labelmask._align.generated_segments`.
        message_ok: Which messages are trained, from :func:`trained_messages`.
    """
    seg_start = rendered.bounds
    bounds: list[int] = []
    classes: list[int] = []
    owners: list[int] = []
    last = None
    seg_classes = segment_classes(rendered.messages, generated, rendered.parts, message_ok, policy)
    for k, (m, c) in enumerate(zip(rendered.messages, seg_classes)):
        key = -1 if c == BLOCKED else 4 * m + c  # message >= 0 here: text outside messages is blocked
        if key != last:
            bounds.append(seg_start[k])
            classes.append(c)
            owners.append(m)
            last = key
    bounds.append(seg_start[-1])
    return Runs(bounds, classes, owners)


def label_runs(
    runs: Runs,
    firsts: list[int],
    straddles: dict[int, list[int]],
    ids: list[int],
    policy: Policy,
    unowned: Any = (),
) -> tuple[list[int], int, int]:
    """Labels under the policy: ``ids`` with ``IGNORE_INDEX`` wherever no loss.

    Args:
        firsts, straddles: From :func:`labelmask._align.first_tokens` over ``runs.bounds``.
        unowned: Tokens that belong to no message (never trained).

    Returns:
        ``(labels, n_straddle, n_boundary_dropped)``, as :class:`Trained` counts them.
    """
    labels = list(ids)
    classes = runs.classes
    # Tokens ending in a run take its class; whole runs are cut out by slice, no per-token work.
    for k, c in enumerate(classes):
        if c != TRAINED:
            a, b = firsts[k], firsts[k + 1]
            if b > a:
                labels[a:b] = [IGNORE_INDEX] * (b - a)
    n_straddle = n_dropped = 0
    if straddles:
        messages = runs.messages
        for token, (start, stop) in straddles.items():
            same = messages[start] == messages[stop]
            ok, covers_header, covers_trained = decide_token(classes[start : stop + 1], same, policy)
            labels[token] = ids[token] if ok else IGNORE_INDEX
            n_straddle += ok and covers_header
            n_dropped += covers_trained and not ok
    for token in unowned:
        labels[token] = IGNORE_INDEX
    return labels, n_straddle, n_dropped
