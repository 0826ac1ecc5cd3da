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
import difflib
import functools
import math
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import numpy as np

from labelmask._align import Aligned
from labelmask._parts import ROLE_ALIASES, Part, Role
from labelmask._rendered import Rendered
from labelmask.errors import ConversationError, OptionError

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
        part_weights: Loss weights by part, ``{"reasoning": 0.5, "tool_calls": 2.0}``: keys
            are :class:`Part` names (or members) of parts a policy can train (``content``,
            ``reasoning``, ``tool_calls``, ``eot``, ``template``, ``empty_reasoning``), values
            finite numbers ``>= 0`` within float32. A part not named weighs 1.0. Stored as
            sorted ``(name, weight)`` pairs (the policy stays hashable); ``dict(...)`` reads
            them back.
        role_weights: Loss weights by role, ``{"tool": 0.5}``: keys ``system``, ``user``,
            ``assistant``, ``tool`` (a message of role ``ipython`` weighs as ``tool``, as
            :class:`Role` codes it), values as for ``part_weights``.

    A message may also decide for itself: ``"train": False`` on a message is never
    trained, ``"train": True`` is trained whatever its role and ``last_turn_only``
    (its generated region, as for any trained role; ``reasoning``, ``tool_calls``
    and ``eot`` still apply). ``"weight": w`` scales its loss in the result's
    ``loss_weights``. Both keys are removed before the template renders.

    Loss weights. A trained token's ``loss_weights`` entry is its message's ``"weight"``
    times ``role_weights[its role]`` times ``part_weights[its part]``, the role and part
    being those of the result's ``role`` and ``part`` arrays (a token that merges a
    header's end with its reply's start, trained under ``straddle="train"``, has the
    reply's part: its last character's). Every other token weighs 0.0. Weights only
    scale what the policy trains: they never train a token (``labels`` are the same
    whatever the weights). A weight of 0.0 leaves the token labelled (it still counts
    in :func:`~labelmask.weighted_loss`'s denominator) but adds nothing to the loss; to
    stop training a part, use ``reasoning=False``, ``tool_calls=False`` or ``eot=False``.

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
    part_weights: Mapping[str, float] | tuple[tuple[str, float], ...] = ()
    role_weights: Mapping[str, float] | tuple[tuple[str, float], ...] = ()

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
        part_weights = _weights(self.part_weights, "part_weights", Part, _WEIGHED_PARTS)
        for name, flag in (("reasoning", self.reasoning), ("tool_calls", self.tool_calls), ("eot", self.eot)):
            if not flag and name in dict(part_weights):
                msg = f"Policy({name}=False) trains no {name}, so part_weights[{name!r}] would never apply; drop one."
                raise OptionError(msg)
        if not self.empty_reasoning and "empty_reasoning" in dict(part_weights):
            msg = (
                "Policy(empty_reasoning=False) trains no empty reasoning block, so part_weights['empty_reasoning'] "
                "would never apply; pass empty_reasoning=True or drop the weight."
            )
            raise OptionError(msg)
        object.__setattr__(self, "part_weights", part_weights)
        object.__setattr__(self, "role_weights", _weights(self.role_weights, "role_weights", Role, _WEIGHED_ROLES))

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
    def _weight_tables(self) -> tuple[np.ndarray, np.ndarray] | None:
        # float64 loss weights by role (indexed by Role + 1) and by part; None when every weight is 1.0.
        if not self.part_weights and not self.role_weights:
            return None
        role_w = np.ones(len(Role) + 1, dtype=np.float64)
        for name, weight in self.role_weights:
            role_w[ROLE_ALIASES[name] + 1] = weight
        part_w = np.ones(len(Part), dtype=np.float64)
        for name, weight in self.part_weights:
            part_w[Part[name.upper()]] = weight
        return role_w, part_w

    def _check_weights(self, roles: tuple[int, ...], weights: tuple[float, ...] | None, template: str) -> None:
        """Raise :class:`~labelmask.errors.ConversationError` for the first message whose weight times its
        role's and the largest part weight overflows float32 (``loss_weights`` would hold ``inf``).

        Args:
            roles: :class:`Role` code of each message.
            weights: Each message's ``"weight"``, or ``None`` when none carries one.
        """
        tables = self._weight_tables
        if tables is None:
            return
        role_w, part_w = tables
        top = float(part_w.max())
        for m, role in enumerate(roles):
            weight = (1.0 if weights is None else weights[m]) * float(role_w[role + 1]) * top
            if weight > _FLOAT32_MAX:
                msg = (
                    f'Message {m}: its loss weight (its "weight" times Policy role_weights and part_weights) is '
                    f"{weight:.3g}, over float32's 3.4e38: loss_weights would be inf (template {template!r}). "
                    "Use smaller weights."
                )
                raise ConversationError(msg, message_index=m, template=template)

    @functools.cached_property
    def _lists(self) -> tuple[list[bool], list[bool]]:
        # The same tables as Python lists, for per-message and per-segment lookups.
        role_ok, part_ok = self._tables
        return role_ok.tolist(), part_ok.tolist()


_FLOAT32_MAX = float(np.finfo(np.float32).max)
# What part_weights and role_weights may name: the parts a policy can train, and the roles of Policy.roles.
_WEIGHED_PARTS = ("content", "reasoning", "tool_calls", "eot", "template", "empty_reasoning")
_WEIGHED_ROLES = ("system", "user", "assistant", "tool")
_NEVER_TRAINED = {
    "none": "template text outside every message is never trained",
    "header": (
        "a header is never trained (a token that merges a header's end with its reply's start has the reply's part, "
        "and its weight)"
    ),
    "image": "image tokens are never trained",
}


def _weights(value: Any, field: str, codes: type, allowed: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """``value`` (a mapping, or ``(name, weight)`` pairs) checked and stored as sorted ``(name, weight)`` pairs."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (tuple, list)) and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in value):
        items = [tuple(p) for p in value]
    else:
        example = '{"reasoning": 0.5}' if field == "part_weights" else '{"tool": 0.5}'
        raise OptionError(f"Policy({field}={value!r:.60}): use a mapping of names to weights, e.g. {example}.")
    out: dict[str, float] = {}
    for key, weight in items:
        name = key.name.lower() if isinstance(key, codes) else key
        if not isinstance(name, str) or name not in allowed:
            why = _NEVER_TRAINED.get(name) if field == "part_weights" and isinstance(name, str) else None
            if why:
                msg = f"Policy({field}=...) names {name!r}, which no policy trains: {why}. Drop it."
                raise OptionError(msg)
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            msg = f"Policy({field}=...) got unknown name {key!r:.40}: {hint}use one of {', '.join(allowed)}."
            raise OptionError(msg)
        if name in out:
            raise OptionError(f"Policy({field}=...) names {name!r} twice.")
        try:
            ok = not isinstance(weight, (bool, str, bytes)) and weight == float(weight)
        except (TypeError, ValueError):
            ok = False
        number = float(weight) if ok else math.nan
        if not math.isfinite(number) or number < 0 or number > _FLOAT32_MAX:
            msg = (
                f"Policy({field}=...): the weight of {name!r} must be a finite number >= 0 (at most float32's "
                f"3.4e38), not {weight!r:.40}."
            )
            raise OptionError(msg)
        out[name] = number
    return tuple(sorted(out.items()))


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
