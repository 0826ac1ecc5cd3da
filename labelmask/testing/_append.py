"""Is a chat template append-only, as multi-turn RL rollouts need it to be?

A rollout framework (verl, miles, slime) keeps token ids across turns: the prompt of turn
``i`` (the conversation so far rendered with the generation prompt) plus what the model
generated must stay a prefix of every later render of the conversation. A template that
rewrites history breaks this (Qwen3 drops the reasoning of replies once a later user
message exists), and so does one whose text stays a prefix but whose tokens merge across
the boundary (a prompt ending with a space, a reply starting with a word).

What the rollout holds after reply ``i`` (the *rollout* below) is the stock render of
``messages[: i + 1]``, which must begin with the prompt ``messages[:i]`` rendered with the
generation prompt. Text the template writes only at the very end of a conversation, and
replaces with the generation prompt when one follows (Phi-3's closing ``eos_token``), is not
part of it: the model does not generate it. Its token ids are those of its own render (the
reply's tokens as the template tokenizes them after the prompt), which must begin with the
prompt's ids. Each later render (every later generation point, and the whole conversation)
must begin with the rollout, in text and in token ids.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from labelmask.errors import LabelmaskError, OptionError

__all__ = ["AppendOnlyResult", "check_append_only"]

# How much text (characters) or how many tokens an excerpt shows on each side of a divergence.
_BEFORE, _AFTER = 24, 60
_TOKENS = 4


@dataclasses.dataclass(frozen=True)
class AppendOnlyResult:
    """The verdict of :func:`check_append_only` for one setting of the template's arguments.

    ``str(result)`` reads ``"append-only: ..."`` or ``"not append-only: ..."``, with the smallest
    breaking conversation as JSON.

    Attributes:
        append_only: No drawn conversation broke the property.
        template: The stock template checked: the registered annotation's name that matches the
            tokenizer's chat template (or the name passed), ``"unregistered-<hash>"`` for a template
            no annotation matches.
        kwargs: The template arguments of this setting.
        tokens: Token ids were compared too (``False``: the text alone).
        checked: Conversations checked (for a break: up to and including the first breaking one).
        skipped: Conversations the stock template refused to render (not counted in ``checked``).
        skip_reason: The first refusal's message (empty when none was skipped).
        messages: The smallest breaking conversation Hypothesis found (``None`` if append-only).
        tools: Its tool schemas (``None`` without tools).
        turn: Index of the assistant message after whose generation the rollout breaks.
        later: How many messages the later render holds that does not begin with the rollout.
        later_prompt: That later render ends with the generation prompt (``False``: it is the
            render of ``messages[:later]`` without one).
        level: ``"text"`` (the rendered text is rewritten) or ``"tokens"`` (the text is a prefix,
            but tokens merge across the boundary).
        excerpt: Where the rollout and the later render diverge.
    """

    append_only: bool
    template: str
    kwargs: dict
    tokens: bool
    checked: int
    skipped: int
    skip_reason: str = ""
    messages: list | None = None
    tools: list | None = None
    turn: int | None = None
    later: int | None = None
    later_prompt: bool = False
    level: str | None = None
    excerpt: str = ""

    def __str__(self) -> str:
        counts = f"{self.checked} conversations checked, {self.skipped} skipped (refused by the template)"
        head = f"template {self.template}, kwargs {json.dumps(self.kwargs, ensure_ascii=False, sort_keys=True)}"
        if not self.tokens:
            head += " (text only)"
        if self.append_only:
            return f"append-only: {head}; {counts}"
        later = f"messages[:{self.later}]" + (" with the generation prompt" if self.later_prompt else "")
        level = "the text is rewritten" if self.level == "text" else "the text is a prefix but the tokens differ"
        what = f"the rollout after assistant message {self.turn}"
        if self.later == (self.turn or 0) + 1 and not self.later_prompt:
            what = f"the prompt before assistant message {self.turn} (rendered with the generation prompt)"
        lines = [
            f"not append-only: {head}; {counts} until the first break",
            f"  {what} is not a prefix of the render of {later} ({level})",
            f"  {self.excerpt}",
            f"  smallest breaking conversation: {json.dumps(self.messages, ensure_ascii=False)}",
        ]
        if self.tools is not None:
            lines.append(f"  tools: {json.dumps(self.tools, ensure_ascii=False)}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class _Break:
    turn: int
    later: int
    later_prompt: bool
    level: str
    excerpt: str


class _Refused(Exception):
    """The stock template refused to render a conversation (or one of its prefixes)."""


class _Render:
    """Renders of one conversation's prefixes by the stock template, and their token ids, each made once."""

    def __init__(self, renderer: _Renderer, messages: list, tools: list | None) -> None:
        self.renderer, self.messages, self.tools = renderer, messages, tools
        self.texts: dict[tuple[int, bool], str] = {}
        self.token_ids: dict[tuple[int, bool], list[int]] = {}

    def text(self, n: int, generation_prompt: bool) -> str:
        key = (n, generation_prompt)
        if key not in self.texts:
            self.texts[key] = self.renderer.render(self.messages[:n], self.tools, generation_prompt)
        return self.texts[key]

    def ids(self, n: int, generation_prompt: bool) -> list[int]:
        key = (n, generation_prompt)
        if key not in self.token_ids:
            self.token_ids[key] = self.renderer.ids(self.text(n, generation_prompt))
        return self.token_ids[key]


class _Renderer:
    """The stock template of ``tokenizer`` (or of the registered annotation ``template``), rendered and tokenized."""

    def __init__(self, tokenizer: Any, template: str | None, kwargs: dict) -> None:
        from labelmask._registry import REGISTRY, template_hash
        from labelmask._render import compile_template, template_variables
        from labelmask._vision import is_processor

        self.processor = tokenizer
        self.tokenizer = tokenizer.tokenizer if is_processor(tokenizer) else tokenizer
        self.kwargs = kwargs
        self.specials: list[str] | None = None
        if template is None:
            stock = getattr(tokenizer, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
            if stock is None:
                raise OptionError(f"{type(tokenizer).__name__} has no chat_template to check; set the stock template.")
            sources = list(stock.values()) if isinstance(stock, dict) else [stock]
            self.annotated = None
            self.parts = False
            try:
                matched = REGISTRY.find(sources[0])
            except LabelmaskError:
                self.name = "unregistered-" + template_hash(sources[0]).removeprefix("sha256:")[:12]
            else:
                # A template that reads only typed content parts gets string content as one text part, as
                # labelmask and processors give it (the annotation's "content: parts").
                self.name, self.parts = matched.name, matched.content_format == "parts"
        else:
            self.annotated = REGISTRY.get(template)  # TemplateNotFoundError names the known ones
            self.name = template
            sources = [self.annotated.source]
            self.compiled = compile_template(self.annotated.source, mode="stock", name=template)
        read: set[str] = set()
        for source in sources:
            read |= template_variables(source) or set()
        unknown = [k for k in kwargs if k not in read]
        if unknown:
            msg = (
                f"check_append_only: the chat template {self.name!r} does not read {unknown[0]}= (it reads "
                f"{', '.join(sorted(read)) or 'no variable'}); passed on, it would be ignored."
            )
            raise OptionError(msg, template=self.name)

    def render(self, messages: list, tools: list | None, generation_prompt: bool) -> str:
        try:
            if self.annotated is None:
                from labelmask.testing._checks import labelmask_clock

                if self.parts:
                    messages = [
                        {**m, "content": [{"type": "text", "text": m["content"]}]}
                        if isinstance(m.get("content"), str)
                        else m
                        for m in messages
                    ]
                with labelmask_clock():  # one instant for every render (gpt-oss writes today's date)
                    return self.processor.apply_chat_template(
                        messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt, **self.kwargs
                    )
            from labelmask._messages import normalize_conversation, plain_kwargs
            from labelmask._render import render_stock

            conversation = normalize_conversation(messages, tools, content_format=self.annotated.content_format)
            variables = {
                **self.tokenizer.special_tokens_map,
                **plain_kwargs(self.kwargs),
                "messages": conversation.messages,
                "tools": conversation.tools,
                "documents": self.kwargs.get("documents"),
                "add_generation_prompt": generation_prompt,
            }
            return render_stock(self.compiled, variables, self.name)
        except Exception as e:  # a template refuses data it does not take with whatever it raises
            raise _Refused(f"{type(e).__name__}: {e}") from e

    def ids(self, text: str) -> list[int]:
        # As apply_chat_template(tokenize=True): the template writes the special tokens itself.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def boundary(self, text: str, k: int) -> int:
        """``k``, or the start of the special token of ``text`` that position ``k`` falls inside."""
        if self.specials is None:
            tok = self.tokenizer
            added = {t.content for t in getattr(tok, "added_tokens_decoder", {}).values() if t.special}
            self.specials = sorted(added | set(tok.all_special_tokens), key=len)
        for s in self.specials:
            start = text.rfind(s, max(0, k - len(s) + 1), k + len(s) - 1)
            if start != -1 and start < k < start + len(s):
                return start
        return k

    def tokens(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([i]) for i in ids]


def _common(a: Any, b: Any) -> int:
    """Length of the longest common prefix of two sequences."""
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def _text_excerpt(rollout: str, later: str) -> str:
    k = _common(rollout, later)
    lo = max(0, k - _BEFORE)
    return f"at character {k}: rollout {rollout[lo : k + _AFTER]!r}, later render {later[lo : k + _AFTER]!r}" + (
        " (the later render ends there)" if k == len(later) else ""
    )


def _token_excerpt(renderer: _Renderer, rollout: list[int], later: list[int]) -> str:
    t = _common(rollout, later)
    lo = max(0, t - _TOKENS)
    return (
        f"at token {t}: rollout tokens {renderer.tokens(rollout[lo : t + _TOKENS])}, "
        f"later render's {renderer.tokens(later[lo : t + _TOKENS])}"
    )


def _rollout(render: _Render, i: int, tokens: bool) -> tuple[str, list[int]] | _Break:
    """What the rollout holds after assistant message ``i`` (text, and token ids when ``tokens``): the
    render of ``messages[: i + 1]``, less text written only at the very end of a conversation (see the
    module docstring); a break if it does not begin with the prompt, ``messages[:i]`` rendered with
    the generation prompt."""
    prompt = render.text(i, True)
    through = render.text(i + 1, False)
    if not through.startswith(prompt):
        return _Break(i, i + 1, False, "text", _text_excerpt(prompt, through))
    text = through
    try:
        before = render.text(i, False)
        after = render.text(i + 1, True)
    except _Refused:
        pass  # no reference for a closing text: the whole render is the rollout
    else:
        generation_prompt = prompt[render.renderer.boundary(prompt, _common(before, prompt)) :]
        kept = len(after) - len(generation_prompt)
        if generation_prompt and after.endswith(generation_prompt) and len(prompt) <= kept < len(through):
            if through.startswith(after[:kept]):
                text = through[:kept]  # written only when no generation prompt follows (Phi-3's eos): not generated
    if not tokens:
        return text, []
    ids = render.ids(i + 1, False) if text == through else render.renderer.ids(text)
    prompt_ids = render.ids(i, True)
    if ids[: len(prompt_ids)] != prompt_ids:
        return _Break(i, i + 1, False, "tokens", _token_excerpt(render.renderer, prompt_ids, ids))
    return text, ids


def _first_break(renderer: _Renderer, messages: list, tools: list | None, tokens: bool = True) -> _Break | None:
    """The first place where a rollout of ``messages`` is not a prefix of a later render (``None``: none).

    Raises:
        _Refused: the stock template refuses the conversation or a prefix of it that is compared.
    """
    render = _Render(renderer, messages, tools)
    n = len(messages)
    points = [i for i in range(1, n) if messages[i].get("role") == "assistant"]
    render.text(n, False)  # a conversation the template refuses is skipped before anything is compared
    for i in points:
        rollout = _rollout(render, i, tokens)
        if isinstance(rollout, _Break):
            return rollout
        text, ids = rollout
        for j, generation_prompt in [(j, True) for j in points if j > i] + [(n, False)]:
            later = render.text(j, generation_prompt)
            if not later.startswith(text):
                return _Break(i, j, generation_prompt, "text", _text_excerpt(text, later))
            if tokens and (later_ids := render.ids(j, generation_prompt))[: len(ids)] != ids:
                return _Break(i, j, generation_prompt, "tokens", _token_excerpt(renderer, ids, later_ids))
    return None


def _check_one(
    tokenizer: Any, template: str | None, strategy: Any, kwargs: dict, max_examples: int, tokens: bool
) -> AppendOnlyResult:
    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis.errors import NoSuchExample

    renderer = _Renderer(tokenizer, template, kwargs)
    counts = {"checked": 0, "skipped": 0, "reason": "", "found": False}

    def breaks(drawn: tuple) -> bool:
        messages, tools = drawn
        try:
            found = _first_break(renderer, messages, tools, tokens) is not None
        except _Refused as e:
            if not counts["found"]:
                counts["skipped"] += 1
                counts["reason"] = counts["reason"] or str(e)
            return False
        if not counts["found"]:  # counted until the first break; then Hypothesis shrinks it
            counts["checked"] += 1
            counts["found"] = found
        return found

    search = settings(
        max_examples=max_examples,
        derandomize=True,  # the same conversations, the same smallest one, on every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
    )
    try:
        drawn = find(strategy, breaks, settings=search)
    except NoSuchExample:
        drawn = None
    common = {
        "template": renderer.name,
        "kwargs": dict(kwargs),
        "tokens": tokens,
        "checked": counts["checked"],
        "skipped": counts["skipped"],
        "skip_reason": counts["reason"],
    }
    if drawn is None:
        return AppendOnlyResult(True, **common)
    messages, tools = drawn
    found = _first_break(renderer, messages, tools, tokens)
    assert found is not None  # the shrunk example breaks, as find() returned it
    return AppendOnlyResult(
        False,
        messages=messages,
        tools=tools,
        turn=found.turn,
        later=found.later,
        later_prompt=found.later_prompt,
        level=found.level,
        excerpt=found.excerpt,
        **common,
    )


def check_append_only(
    tokenizer: Any,
    template: str | None = None,
    *,
    settings: list[dict] | None = None,
    max_examples: int = 100,
    conversations: Any = None,
    tokens: bool = True,
    **template_kwargs: Any,
) -> AppendOnlyResult | list[AppendOnlyResult]:
    """Check on drawn conversations that a stock chat template is append-only, as multi-turn RL needs.

    Before each assistant message ``i`` (a point where the model generates), the rollout holds
    the prompt (``messages[:i]`` rendered with the generation prompt) and the reply: the render
    of ``messages[: i + 1]``, less text the template writes only at the very end of a
    conversation (Phi-3's closing ``eos_token``). The render through the reply must begin with
    the prompt, and the render of every longer prefix with the generation prompt, and of the
    whole conversation, must begin with the rollout: in text, and in token ids (a text prefix
    whose tokens merge at the boundary is reported as a break at ``level="tokens"``).

    Conversations the stock template refuses to render (or any prefix of one) are skipped and
    counted, not reported as breaks. The search is derandomized: the same conversations, and
    the same smallest breaking one (Hypothesis' shrinking), on every run.

    Args:
        tokenizer: A tokenizer (or processor) whose ``chat_template`` is the stock template.
        template: ``None``: the tokenizer's own chat template, rendered by transformers'
            ``apply_chat_template``. A registered annotation's name (``labelmask.templates()``):
            the stock template it stands for (the annotation rendered without its span tags),
            with this tokenizer.
        settings: A list of dicts of template arguments, each merged over ``template_kwargs``
            and checked on its own (``[{"preserve_thinking": False}, {"preserve_thinking": True}]``).
        max_examples: How many conversations to draw per setting.
        conversations: A Hypothesis strategy of ``(messages, tools)``; default
            ``strategies.conversations(tools=True, tool_role=True, reasoning=True, max_turns=8)``.
            Narrow it for what the template takes (``alternate=True`` for Gemma), or leave the
            refusals to be skipped.
        tokens: Compare token ids too (``False``: the text alone, to tell a template that rewrites
            history from one whose tokens merge at a boundary).
        **template_kwargs: Arguments for the chat template (``enable_thinking=False``).

    Returns:
        One :class:`AppendOnlyResult` when ``settings`` is ``None``; otherwise a list, one
        result per setting, in order.

    Raises:
        OptionError: a template argument the template does not read, or a bad ``settings``.
        TemplateNotFoundError: ``template`` names no registered annotation.

    Example:
        >>> result = check_append_only(tokenizer, max_examples=50)  # doctest: +SKIP
        >>> print(result)  # doctest: +SKIP
        append-only: template llama3, kwargs {}; 50 conversations checked, 0 skipped (refused by the template)
    """
    from labelmask.testing.strategies import conversations as drawn

    if not isinstance(max_examples, int) or isinstance(max_examples, bool) or max_examples < 1:
        raise OptionError(f"check_append_only(max_examples={max_examples!r}): use a positive whole number.")
    if settings is not None and (
        isinstance(settings, dict) or not all(isinstance(s, dict) for s in settings) or not settings
    ):
        raise OptionError("check_append_only(settings=...) takes a non-empty list of dicts of template arguments.")
    strategy = conversations
    if strategy is None:
        strategy = drawn(tools=True, tool_role=True, reasoning=True, max_turns=8)
    if settings is None:
        return _check_one(tokenizer, template, strategy, dict(template_kwargs), max_examples, tokens)
    return [_check_one(tokenizer, template, strategy, {**template_kwargs, **s}, max_examples, tokens) for s in settings]
