"""Spans for a chat template nobody annotated, derived and verified per conversation.

Two ways, chosen by what the stock template carries:

* **Generation blocks.** A template with ``{% generation %}`` tags says itself
  which text is assistant output. It is rendered once with each block turned into
  a ``content`` span of the message in the template's ``message`` variable (by
  identity, so positions are exact inside macros and ``set`` blocks, where
  transformers' running-length tracker is not); the text must equal the stock
  render, and every block must belong to an assistant message.

* **Differential rendering.** Otherwise the spans come from what inference does.
  For assistant message ``i`` the prompt a model would be given is
  ``P = render(messages[:i], add_generation_prompt=True)``; everything the
  conversation's render adds after ``P`` up to the next message is what the model
  must write. This holds exactly when the render grows by appending: each prefix
  render ``render(messages[:j])`` is a prefix of the whole (up to an end-of-
  conversation suffix such as Phi-3's closing ``<|endoftext|>``), and each ``P`` is
  a prefix of the whole. Those are checked on every call; a conversation that
  breaks them (a template that rewrites earlier turns, Qwen3 dropping old
  reasoning; a generation prompt the turn does not start with) is refused, never
  guessed. The reply's end-of-turn marker is the special token the turn's output
  ends with; whitespace after it is not trained (the model stops at the marker).

Both ways then check that a derived span holds only the reply's own output, per
conversation, and refuse otherwise, naming the reply (and the message whose text it holds):

* **Only the reply's own text and template literals.** The other messages' text is
  perturbed and the spans must not change with it. The perturbation changes every letter
  and digit of a message's content (string or text parts) and reasoning fields (ASCII ones
  rotated, a->b, z->a, 0->1; others replaced by "x") and keeps length, case, whitespace,
  punctuation and tag-like runs (``<tool_response>``, ``</think>``, ``[TOOL_RESULTS]``), so
  the template takes the same branches; tool calls and names are kept. A reply's derived
  output is cut from ``render(messages[:i + 1])`` after ``render(messages[:i])`` with the
  generation prompt, so it can hold text of earlier messages only: one copy with all of them
  perturbed, two renders per reply. A {% generation %} block may hold any message's text (a
  template can look ahead): each copy perturbs every non-assistant message and the replies
  whose ordinal has bit ``b`` equal to ``v`` and compares the other replies' blocks, which
  splits every pair in ``2 * ceil(log2(k))`` renders for ``k`` replies (one for one). Text
  made only of what the perturbation keeps (punctuation, whitespace, tag-like runs) cannot be
  told from template text, and a template that branches on a message's letters (GLM's
  ``/nothink``) is refused where the branch shows in a reply.
* **Nothing after the end of turn.** The end-of-turn tokens ("closers") are the special
  tokens messages' turns end with (before trailing whitespace; in generation blocks, the
  tokens blocks end with) and EOS. After a closer, a reply's output may hold only whitespace
  and special tokens, or the reply's own generation prompt again (Harmony writes analysis,
  ``<|end|>``, then ``<|start|>assistant`` and the final channel: one output). Control
  tokens in the reply's own text are not the template's: the structure is read from a render
  with them defused (``<|im_end|>`` -> ``<|jn_foe|>``) where that render has the same layout.
* **A stop token the reply does not own.** A reply whose output ends with no special token,
  followed by a special token written only once a next message follows (GLM's ``<|user|>``
  header; gpt-oss's ``<|end|>`` for a reply in the history; for the last reply, what the probe
  render writes after it), is refused with advice to annotate: left untrained, the model would
  never learn to stop. A template that writes no end of turn and plain-text headers (LLaVA's
  ``USER:``) is masked; the pipeline's ``add_eos`` and ``NoEndOfTurnWarning`` deal with its
  missing stop. In generation mode, a reply whose last block ends without a special token while
  one follows it outside the block is refused too, ``add_eos`` or not: it would write another
  token than the template's stop.

What the derivation cannot tell, it does not pretend to: an assistant's output is
one ``content`` part (reasoning and tool calls are not told apart), non-assistant
messages carry their message index but part ``NONE``, and only assistant output
can be trained. Policies that need more raise and ask for an annotation.

Cost: one render per message plus three per assistant turn (prompt, and the perturbed
prompt and turn) and a probe, against one render for an annotated template (one more per
reply whose text holds control tokens); a generation-block template renders
``1 + 2 * ceil(log2(k))`` times. Annotate a template you use at scale.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable
from typing import Any

import jinja2

from labelmask._encode import SpecialTokens, special_tokens
from labelmask._messages import Conversation
from labelmask._parts import Part, Role
from labelmask._policy import Policy
from labelmask._render import LOOP_NAMES, compile_template, render_annotated, render_stock
from labelmask._rendered import TURN_KIND, Rendered
from labelmask.errors import (
    AnnotationError,
    LabelmaskError,
    RenderBudgetError,
    RenderParityError,
    TemplateRaisedError,
    UnverifiedTemplateError,
)

__all__ = ["derive"]

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_ASSISTANT = int(Role.ASSISTANT)
_PROBE = "labelmask probe"


def uses_generation_tags(stock_source: str) -> bool:
    return _GENERATION_TAG.search(stock_source) is not None


def derive(
    stock_source: str,
    variables: dict[str, Any],
    conversation: Conversation,
    *,
    name: str,
    processor: Any,
    policy: Policy,
) -> tuple[Rendered, str]:
    """Spans for an unregistered template; returns the render and the method used.

    Raises:
        UnverifiedTemplateError: the spans cannot be verified for this conversation,
            or the policy needs parts the derivation cannot tell.
        TemplateRaisedError: the stock template rejected the conversation.
    """
    generation = uses_generation_tags(stock_source)
    method = "generation" if generation else "differential"
    _check_policy(policy, name, method)
    for i, (flag, role) in enumerate(zip(conversation.train or (), conversation.roles)):
        if flag and role != _ASSISTANT:
            why = '"train": True on a non-assistant message, and derived spans tell only assistant output apart'
            raise _refuse(name, why, i)
    for i, (message, role) in enumerate(zip(conversation.messages, conversation.roles)):
        content = message.get("content")
        if role == _ASSISTANT and isinstance(content, list):
            if any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
                why = "a reply holds an image or other non-text part, whose placeholder tokens must never be trained"
                raise _refuse(name, why, i)
    stock = compile_template(stock_source, mode="stock", name=name)
    text = render_stock(stock, variables, name)
    if generation:
        return _from_generation_blocks(stock_source, text, variables, conversation, name, processor), method
    return _differential(stock, text, variables, conversation, name, processor), method


def _refuse(name: str, why: str, message_index: int | None = None) -> UnverifiedTemplateError:
    where = f" at message {message_index}" if message_index is not None else ""
    msg = (
        f"No annotated template matches the chat template {name!r}, and labelmask could not derive verified "
        f"spans for this conversation{where}: {why}. Register an annotated copy of the template "
        "(docs/annotating.md; labelmask.register_template(name, annotated_source, "
        "matches=[tokenizer.chat_template])) or pass template='<name>' if a known annotation renders the same text."
    )
    return UnverifiedTemplateError(msg, message_index=message_index, template=name)


def _check_policy(policy: Policy, name: str, method: str) -> None:
    wants = []
    if policy.roles - {"assistant"}:
        wants.append(f"training roles {sorted(policy.roles - {'assistant'})}")
    if not policy.reasoning:
        wants.append("reasoning=False")
    if not policy.tool_calls:
        wants.append("tool_calls=False")
    if not policy.eot and method == "generation":
        wants.append("eot=False")
    if wants:
        why = (
            f"the policy asks for {', '.join(wants)}, and spans derived without an annotation ({method}) "
            "tell only assistant output apart"
        )
        raise _refuse(name, why)


def _with_messages(variables: dict[str, Any], messages: list, add_generation_prompt: bool) -> dict[str, Any]:
    return {
        **variables,
        "messages": messages,
        "_labelmask_messages": messages,
        "add_generation_prompt": add_generation_prompt,
    }


def _from_generation_blocks(
    stock_source: str, text: str, variables: dict[str, Any], conversation: Conversation, name: str, processor: Any
) -> Rendered:
    template = compile_template(stock_source, mode="generation", name=name)
    n = len(conversation.messages)

    def render(messages: list, expected: str | None = None) -> Rendered:
        variables_ = _with_messages(variables, messages, False)
        return render_annotated(template, variables_, name, expected=expected, n_messages=n, inherit_orphans=True)

    try:
        rendered = render(conversation.messages, expected=text)
    except RenderParityError as exc:
        why = f"a filter in the template sees the text of a {{% generation %}} block ({exc})"
        raise _refuse(name, why) from None
    except AnnotationError:
        why = (
            "a {% generation %} block is neither inside a loop over the messages (variable "
            f"{' / '.join(LOOP_NAMES)}) nor after another block"
        )
        raise _refuse(name, why) from None
    owners = {message for kind, message, _, _ in rendered.spans if kind == int(Part.CONTENT)}
    for m in sorted(owners):
        if conversation.roles[m] != _ASSISTANT:
            raise _refuse(name, "the template wraps a non-assistant message in {% generation %}", m)
    for m, role in enumerate(conversation.roles):
        if role == _ASSISTANT and m not in owners:
            raise _refuse(name, "the template writes no {% generation %} block for this assistant message", m)
    _check_block_ends(rendered, conversation, name, processor, render)
    _check_block_attribution(rendered, conversation, name, render)
    return rendered


def _blocks(rendered: Rendered, message: int) -> list[str]:
    """The text of each {% generation %} block of ``message``, in order."""
    return [rendered.text[a:b] for kind, m, a, b in rendered.spans if kind == int(Part.CONTENT) and m == message]


def _check_block_ends(rendered: Rendered, conversation: Conversation, name: str, processor: Any, render: Any) -> None:
    """Refuse a block that trains text after its reply's end of turn, or leaves its stop token out."""
    found = special_tokens(processor)
    if found.pattern is None:
        return
    text, messages = rendered.text, conversation.messages
    replies = [m for m, role in enumerate(conversation.roles) if role == _ASSISTANT]
    # The control tokens a reply's own text holds are not the template's: read the structure
    # from a render with them defused, where it has the same layout (it has unless the template
    # branches on them).
    structure = rendered
    neutral = [_neutralized(m, found.pattern) if i in replies else None for i, m in enumerate(messages)]
    if any(x is not None for x in neutral):
        try:
            other = render([x if x is not None else m for x, m in zip(neutral, messages)])
        except RenderBudgetError:
            raise
        except LabelmaskError:
            other = None
        if other is not None and other.spans == rendered.spans:
            structure = other
    closers = _closers(
        (block for j in replies for block in _blocks(structure, j)), found, getattr(processor, "eos_token", None)
    )
    for j in replies:
        ends = [(a, b) for kind, m, a, b in structure.spans if kind == int(Part.CONTENT) and m == j]
        for a, b in ends:
            after = _text_after_end_of_turn(structure.text[a:b], closers, "", found)
            if after is not None:
                raise _refuse(name, _after_eot_why(*after), j)
        a, b = max(ends, key=lambda span: span[1])
        last = structure.text[a:b].rstrip()
        if not last or not _special_at(last, len(last), found, backwards=True):
            follow = text[b:].lstrip()
            stop = _special_at(follow, 0, found)
            if stop:
                why = (
                    f"this reply's {{% generation %}} block ends without a special token and {stop!r} follows "
                    "it outside the block: the reply's stop token would be left untrained (add_eos would not "
                    "help: it writes another token than the template's). Annotate the template to say which "
                    "token ends the reply"
                )
                raise _refuse(name, why, j)


def _check_block_attribution(rendered: Rendered, conversation: Conversation, name: str, render: Any) -> None:
    """Refuse a reply whose {% generation %} blocks change when another message's text changes.

    A block may hold text of any message (a template can look ahead), so each perturbed copy
    changes every non-assistant message and the replies whose ordinal among the ``k`` replies
    has bit ``b`` equal to ``v``, and compares the blocks of the other replies: every pair of a
    reply and another message is split by one copy. ``2 * ceil(log2(k))`` renders (one for ``k == 1``).
    """
    messages, roles = conversation.messages, conversation.roles
    perturbed = [_perturbed(m) for m in messages]
    replies = [m for m, role in enumerate(roles) if role == _ASSISTANT]
    others = [m for m, role in enumerate(roles) if role != _ASSISTANT and perturbed[m] is not messages[m]]
    if not replies:
        return

    def render_with(changed: list[int]) -> Rendered | None:
        try:
            return render([perturbed[m] if m in changed else message for m, message in enumerate(messages)])
        except RenderBudgetError:
            raise
        except LabelmaskError:
            return None

    plans = [(others, replies)]
    bits = (len(replies) - 1).bit_length()
    if bits:
        plans = []
        for b in range(bits):
            for v in (0, 1):
                flipped = [r for k, r in enumerate(replies) if (k >> b) & 1 == v]
                checked = [r for r in replies if r not in flipped]
                plans.append((sorted([*others, *(r for r in flipped if perturbed[r] is not messages[r])]), checked))
    copies = [(changed, checked, render_with(changed)) for changed, checked in plans if changed]
    for j in replies:  # the first reply refused is named
        want = _blocks(rendered, j)
        for changed, checked, other in copies:
            if j not in checked or (other is not None and _blocks(other, j) == want):
                continue
            if other is None:
                raise _refuse(name, _echo_why(None, roles, raised=True), j)

            def differs(m: int, j: int = j, want: list[str] = want) -> bool:
                alone = render_with([m])
                return alone is None or _blocks(alone, j) != want

            raise _refuse(name, _echo_why(_culprit(changed, messages, "".join(want), differs), roles), j)


def _differential(
    stock: jinja2.Template,
    text: str,
    variables: dict[str, Any],
    conversation: Conversation,
    name: str,
    processor: Any,
) -> Rendered:
    messages, roles = conversation.messages, conversation.roles
    n = len(messages)
    found = special_tokens(processor)
    specials, lengths = found.strings, found.lengths

    def render(j: int, add_generation_prompt: bool = False, extra: tuple = ()) -> str:
        return render_stock(stock, _with_messages(variables, [*messages[:j], *extra], add_generation_prompt), name)

    def render_messages(history: list, add_generation_prompt: bool) -> str:
        return render_stock(stock, _with_messages(variables, history, add_generation_prompt), name)

    def eot_length(output: str) -> int:
        """Length of the special token ``output`` ends with (after trailing whitespace), or 0."""
        stripped = output.rstrip()
        for length in lengths:
            if length <= len(stripped) and stripped[-length:] in specials:
                return length
        return 0

    # Text the template writes only at the very end (Phi-3's <|endoftext|>): what a
    # render with one more message does not share. Only special tokens and whitespace
    # qualify; anything else means the last turn itself renders differently.
    suffix = ""
    longer = None
    if n:
        probe = {"role": "user" if roles[-1] != int(Role.USER) else "assistant", "content": _PROBE}
        try:
            longer = render(n, extra=(probe,))
        except TemplateRaisedError:
            longer = None
        if longer is not None:
            common = _common_prefix(text, longer)
            # Back off to the start of a special token the common prefix ends inside ("<|" of
            # "<|endoftext|>" vs "<|user|>").
            common = min(
                (
                    k
                    for length in lengths
                    for k in range(max(0, common - length + 1), common)
                    if k + length <= len(text) and text[k : k + length] in specials
                ),
                default=common,
            )
            tail = text[common:]
            if tail and _is_markup(tail, specials, lengths):
                suffix = tail

    prefixes = {n: text}  # the render of messages[:j], where its boundary is known

    def boundary(j: int) -> int | None:
        """Where the text of ``messages[:j]`` ends in the whole render, or None if that render is not a prefix."""
        try:
            part = render(j)
        except TemplateRaisedError:
            return None
        prefixes[j] = part
        if text.startswith(part):
            return len(part)
        if suffix and part.endswith(suffix) and text.startswith(part[: len(part) - len(suffix)]):
            return len(part) - len(suffix)
        return None

    # Where each message's text ends. A boundary next to an assistant message must be
    # known; one between two other messages (Qwen3.5 cannot render a system prompt
    # alone) may stay unknown: those messages' text is then attributed to no message.
    ends: list[int | None] = [boundary(0) or 0] + [None] * n
    for j in range(1, n):
        ends[j] = boundary(j)
        if ends[j] is None and _ASSISTANT in (roles[j - 1], roles[j]):
            why = "the template renders this message differently once later messages follow it, or not alone"
            raise _refuse(name, why, j - 1 if roles[j - 1] == _ASSISTANT else j)
    last_end = len(text)
    if n and roles[-1] == _ASSISTANT and suffix and eot_length(text[: len(text) - len(suffix)]):
        last_end = len(text) - len(suffix)  # the last reply has its own end-of-turn marker before the suffix
    ends[n] = last_end
    known = [e for e in ends if e is not None]
    if any(b < a for a, b in zip(known, known[1:])):
        raise _refuse(name, "the render shrinks when a message is added")

    # The end-of-turn tokens of this render: the special tokens messages' turns end with, and EOS.
    closers = _closers(
        (text[a:b] for a, b in zip(ends, ends[1:]) if a is not None and b is not None),
        found,
        getattr(processor, "eos_token", None),
    )
    perturbed = [_perturbed(m) for m in messages]

    bounds: list[tuple[int, int, int]] = []  # (start, message, part) of each segment
    spans: list[tuple[int, int, int, int]] = []
    headers: dict[int, tuple[int, int]] = {}
    eots: dict[int, tuple[int, int]] = {}
    bounds.append((0, -1, int(Part.TEMPLATE)))
    for j in range(n):
        start, end = ends[j], ends[j + 1]
        if roles[j] != _ASSISTANT:
            if start is not None:
                bounds.append((start, j if end is not None else -1, int(Part.NONE)))
            if start is not None and end is not None:
                spans.append((TURN_KIND, j, start, end))
            continue
        assert start is not None and end is not None  # checked above
        spans.append((TURN_KIND, j, start, end))
        prompt = render(j, add_generation_prompt=True)
        if not text.startswith(prompt):
            raise _refuse(name, "the turn does not start with the generation prompt a model would be given", j)
        if not start <= len(prompt) <= end:
            raise _refuse(name, "the generation prompt reaches past this assistant message's text", j)
        out_start = len(prompt)
        output = text[out_start:end]
        # The structure (end of turn, text after it) is read where the reply's own control-token
        # strings are defused, if the template lays that render out the same way.
        structure = output
        neutral = _neutralized(messages[j], found.pattern) if found.pattern is not None else None
        if neutral is not None:
            try:
                other = render(j, extra=(neutral,))
            except TemplateRaisedError:
                other = ""
            if len(other) == len(prefixes[j + 1]) and other.startswith(prompt):
                structure = other[out_start:end]
        eot = eot_length(structure)
        out_end = out_start + len(structure.rstrip()) if eot else end
        _check_content(messages[j], text, out_start, out_end, name, j)
        after = _text_after_end_of_turn(structure[: out_end - out_start], closers, prompt[start:], found)
        if after is not None:
            raise _refuse(name, _after_eot_why(*after), j)
        if not eot:
            # A reply with no end-of-turn token of its own, followed by a special token written only once
            # a next message follows (GLM's <|user|> header; gpt-oss's <|end|>, written for a reply in the
            # history instead of its <|return|>): a stop marker the derivation cannot attribute to the reply.
            if j + 1 < n:
                follow = text[end:]
            else:
                follow = longer[end:] if longer is not None and longer.startswith(text[:end]) else ""
            stop = _special_at(follow.lstrip(), 0, found)
            if stop:
                why = (
                    f"this reply's output ends with no end-of-turn token, and {stop!r} follows it, written only once "
                    "a next message follows (the next turn's header, or an end of turn written outside the reply's "
                    "own render): a derivation cannot tell whether the model generates it, and left untrained, "
                    "the model never learns to stop. Annotate the template and mark the token the model generates "
                    "as this reply's eot (templates/glm-4.5.jinja does for GLM's <|user|>)"
                )
                raise _refuse(name, why, j)
        _check_reply_attribution(
            j, messages, perturbed, roles, prefixes[j + 1][out_start:], output, render_messages, name
        )
        bounds += [(start, j, int(Part.HEADER)), (out_start, j, int(Part.CONTENT))]
        headers[j] = (start, out_start)
        spans += [(int(Part.HEADER), j, start, out_start), (int(Part.CONTENT), j, out_start, out_end - eot)]
        if eot:
            bounds += [(out_end - eot, j, int(Part.EOT)), (out_end, j, int(Part.TEMPLATE))]
            eots[j] = (out_end - eot, out_end)
            spans.append((int(Part.EOT), j, out_end - eot, out_end))
    bounds.append((ends[n], -1, int(Part.TEMPLATE)))
    return _segments(text, bounds, headers, eots, spans)


def _segments(text: str, bounds: list, headers: dict, eots: dict, spans: list) -> Rendered:
    ends = [b[0] for b in bounds[1:]] + [len(text)]
    kept = [(b, end) for b, end in zip(bounds, ends) if end > b[0]]  # drop empty segments
    seg_start = [b[0] for b, _ in kept] + [len(text)]
    seg_message = [b[1] for b, _ in kept]
    seg_part = [b[2] for b, _ in kept]
    return Rendered(text, seg_start, seg_message, seg_part, headers, eots, tuple(spans))


def _check_content(message: dict, text: str, start: int, end: int, name: str, index: int) -> None:
    """A reply the template does not write inside its own turn is refused (not trained as an empty turn)."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str):
        return
    needle = content.strip()
    if needle and needle not in text[start:end]:
        where = "elsewhere in the render" if needle in text else "nowhere (does it read typed content parts?)"
        raise _refuse(name, f"the template writes this reply's text {where}, not inside its own turn", index)


# --- Attribution: a derived span holds only the reply's own text and template text ---------

# Runs a template may test a message's text for ('</think>' in content, startswith('<tool_response>'),
# [TOOL_RESULTS]): a perturbation keeps them as they are.
_TAG_LIKE = re.compile(r"<[^<>\s]{1,64}>|\[[^\[\]\s]{1,64}\]")
_ROTATE = str.maketrans(
    string.ascii_lowercase + string.ascii_uppercase + string.digits,
    string.ascii_lowercase[1:] + "a" + string.ascii_uppercase[1:] + "A" + string.digits[1:] + "0",
)
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def _rotate_run(run: str) -> str:
    run = run.translate(_ROTATE)
    if not run.isascii():
        run = "".join("x" if not c.isascii() and c.isalnum() else c for c in run)
    return run


def _rotate(text: str) -> str:
    """``text`` with every letter and digit changed outside tag-like runs (ASCII ones rotated,
    a->b, z->a, 0->1; others replaced by "x"). Length, case, whitespace, punctuation and
    tag-like runs stay, so a template takes the same branches for it."""
    out = []
    last = 0
    for match in _TAG_LIKE.finditer(text):
        out += [_rotate_run(text[last : match.start()]), match.group()]
        last = match.end()
    out.append(_rotate_run(text[last:]))
    return "".join(out)


def _texts(message: dict) -> list[str]:
    """The text a message carries: its content (string or text parts) and its reasoning."""
    content = message.get("content")
    if isinstance(content, str):
        out = [content]
    elif isinstance(content, list):
        out = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    else:
        out = []
    return out + [message[k] for k in _REASONING_KEYS if isinstance(message.get(k), str)]


def _perturbed(message: dict) -> dict:
    """``message`` with its content and reasoning text rotated (:func:`_rotate`), or ``message``
    itself if that changes nothing. Tool calls, names and other fields are kept."""
    out = dict(message)
    content = message.get("content")
    if isinstance(content, str):
        out["content"] = _rotate(content)
    elif isinstance(content, list):
        out["content"] = [
            {**p, "text": _rotate(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str) else p
            for p in content
        ]
    for key in _REASONING_KEYS:
        if isinstance(message.get(key), str):
            out[key] = _rotate(message[key])
    return message if out == message else out


def _neutralized(message: dict, pattern: re.Pattern) -> dict | None:
    """``message`` with the control-token strings in its text and tool calls defused
    (``<|im_end|>`` -> ``<|jn_foe|>``, same length), or None if it holds none: in its render,
    the control tokens left are the template's."""

    def defuse(value: Any) -> Any:
        if isinstance(value, str):
            return pattern.sub(lambda match: match.group().translate(_ROTATE), value)
        if isinstance(value, dict):
            return {k: defuse(v) for k, v in value.items()}
        if isinstance(value, list):
            return [defuse(v) for v in value]
        return value

    out = {k: v if k == "role" else defuse(v) for k, v in message.items()}
    return None if out == message else out


def _special_at(text: str, i: int, found: SpecialTokens, *, backwards: bool = False) -> str | None:
    """The special token that starts at ``text[i]`` (or ends there, ``backwards``), or None."""
    for length in found.lengths:
        piece = text[i - length : i] if backwards else text[i : i + length]
        if len(piece) == length and piece in found.strings:
            return piece
    return None


def _closers(turns: Iterable[str], found: SpecialTokens, eos: str | None) -> frozenset[str]:
    """End-of-turn tokens: the special token each of ``turns`` ends with (before trailing whitespace), and EOS."""
    out = {eos} if eos else set()
    for turn in turns:
        stripped = turn.rstrip()
        token = _special_at(stripped, len(stripped), found, backwards=True)
        if token:
            out.add(token)
    return frozenset(out)


def _text_after_end_of_turn(
    output: str, closers: frozenset[str], header: str, found: SpecialTokens
) -> tuple[str, str] | None:
    """The first end-of-turn token in ``output`` that text follows, and that text; None if there is none.

    After an end of turn a reply's output may hold only whitespace and special tokens, or the
    reply's own ``header`` (the generation prompt) again: the model writing one more message of
    its own (Harmony's analysis, then final).
    """
    if found.pattern is None:
        return None
    header = header.lstrip()
    for match in found.pattern.finditer(output):
        if match.group() not in closers:
            continue
        rest = output[match.end() :]
        if header.strip() and rest.lstrip().startswith(header):
            continue
        if not _is_markup(rest, found.strings, found.lengths):
            return match.group(), rest.strip()
    return None


def _after_eot_why(token: str, rest: str) -> str:
    return (
        f"the template writes text after this reply's end of turn {token!r} ({rest[:40]!r}), which a model never "
        f"generates: it has stopped at {token!r}. If that text is meant to be trained, annotate the template"
    )


def _echo_why(culprit: int | None, roles: tuple[int, ...], raised: bool = False) -> str:
    if raised:
        return (
            "the template rejects the conversation once the letters and digits of other messages' text are "
            "changed, so labelmask cannot check that this reply's output holds only the reply's own text"
        )
    which = "other messages" if culprit is None else f"message {culprit} ({Role(roles[culprit]).name.lower()})"
    return (
        f"the reply's output changes when the text of {which} changes: the template writes another "
        "message's text into this turn. If that is meant to be trained, annotate the template"
    )


def _culprit(changed: list[int], messages: list[dict], output: str, changes: Callable[[int], bool]) -> int | None:
    """The first message of ``changed`` whose perturbation alone ``changes`` the output: those whose
    text occurs in ``output`` first, nearest first. Only run to name a refused reply's source."""

    def occurs(m: int) -> bool:
        return any(t.strip() and t.strip() in output for t in _texts(messages[m]))

    for m in sorted(changed, key=lambda m: (not occurs(m), -m)):
        if changes(m):
            return m
    return None


def _check_reply_attribution(
    j: int,
    messages: list[dict],
    perturbed: list[dict],
    roles: tuple[int, ...],
    tail: str,
    output: str,
    render: Callable[[list, bool], str],
    name: str,
) -> None:
    """Refuse reply ``j`` if its derived output changes when the earlier messages' text changes.

    The output is cut from ``render(messages[:j + 1])`` after ``render(messages[:j])`` with the
    generation prompt, both checked to be prefixes of the whole render: it can hold text of
    ``messages[:j]`` only. So one copy with all of them perturbed (two renders) checks it;
    ``tail`` is the original prefix render after the prompt.
    """
    changed = [m for m in range(j) if perturbed[m] is not messages[m]]
    if not changed:
        return

    def tail_with(changed: list[int]) -> str | None:
        history = list(messages[:j])
        for m in changed:
            history[m] = perturbed[m]
        prompt = render(history, True)
        whole = render([*history, messages[j]], False)
        return whole[len(prompt) :] if whole.startswith(prompt) else None

    def differs(m: int) -> bool:
        try:
            return tail_with([m]) != tail
        except TemplateRaisedError:
            return True

    try:
        if tail_with(changed) == tail:
            return
    except TemplateRaisedError:
        raise _refuse(name, _echo_why(None, roles, raised=True), j) from None
    raise _refuse(name, _echo_why(_culprit(changed, messages, output, differs), roles), j)


def _is_markup(tail: str, specials: frozenset[str], lengths: tuple[int, ...]) -> bool:
    """Whether ``tail`` is made only of special tokens and whitespace."""
    i = 0
    while i < len(tail):
        if tail[i].isspace():
            i += 1
            continue
        for length in lengths:
            if tail[i : i + length] in specials:
                i += length
                break
        else:
            return False
    return True


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
