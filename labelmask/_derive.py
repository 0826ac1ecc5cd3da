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

What the derivation cannot tell, it does not pretend to: an assistant's output is
one ``content`` part (reasoning and tool calls are not told apart), non-assistant
messages carry their message index but part ``NONE``, and only assistant output
can be trained. Policies that need more raise and ask for an annotation.

Cost: one render per message plus one per assistant turn and a probe, against one
render for an annotated template; annotate a template you use at scale.
"""

from __future__ import annotations

import re
from typing import Any

import jinja2

from labelmask._encode import special_tokens
from labelmask._messages import Conversation
from labelmask._parts import Part, Role
from labelmask._policy import Policy
from labelmask._render import LOOP_NAMES, compile_template, render_annotated, render_stock
from labelmask._rendered import TURN_KIND, Rendered
from labelmask.errors import AnnotationError, RenderParityError, TemplateRaisedError, UnverifiedTemplateError

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
        return _from_generation_blocks(stock_source, text, variables, conversation, name), method
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
    stock_source: str, text: str, variables: dict[str, Any], conversation: Conversation, name: str
) -> Rendered:
    template = compile_template(stock_source, mode="generation", name=name)
    n = len(conversation.messages)
    try:
        rendered = render_annotated(template, variables, name, expected=text, n_messages=n, inherit_orphans=True)
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
    return rendered


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

    def boundary(j: int) -> int | None:
        """Where the text of ``messages[:j]`` ends in the whole render, or None if that render is not a prefix."""
        try:
            part = render(j)
        except TemplateRaisedError:
            return None
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
        eot = eot_length(output)
        out_end = out_start + len(output.rstrip()) if eot else end
        _check_content(messages[j], text, out_start, out_end, name, j)
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
