"""Views of one masked conversation for people: coloured terminal text and a standalone HTML report.

Both show every token of the rendered text, in order, marked trained (label = token id)
or not (label -100) and coloured by the role of the message it comes from, followed by
a legend and per-role counts. Used by ``labelmask show`` (:mod:`labelmask.cli`) and, in
Python and notebooks, by :func:`show` (which also shows rows of a masked dataset).

Text the tokenizer's offsets give to no token (a byte-level tokenizer with
``trim_offsets`` can leave whitespace unowned) is shown uncoloured, so the view always
reads as the whole rendered conversation.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from labelmask._parts import Part, Role
from labelmask._policy import IGNORE_INDEX
from labelmask._result import MaskedConversation
from labelmask.errors import OptionError

__all__ = [
    "HTML_COLORS",
    "RoleCount",
    "Token",
    "render_html",
    "render_rows",
    "render_terminal",
    "role_counts",
    "show",
    "tokens",
]

# Role display names, in display order; Role.NONE is template text outside every message.
ROLE_NAMES = {
    Role.SYSTEM: "system",
    Role.USER: "user",
    Role.ASSISTANT: "assistant",
    Role.TOOL: "tool",
    Role.NONE: "template",
}

# Background colours of the HTML report (also what the screenshot test looks for).
HTML_COLORS = {
    "trained": "#22c55e",
    "trained-alt": "#4ade80",  # every other trained token, so token boundaries show
    "system": "#e9d5ff",
    "user": "#bfdbfe",
    "assistant": "#a5f3fc",  # untrained assistant text: the generation prompt
    "tool": "#fde68a",
    "template": "#e5e7eb",
}

# Terminal colours (SGR codes): trained tokens black on green (two shades, alternating);
# untrained tokens in their role's foreground colour.
_ANSI_TRAINED = ("30;42", "30;102")
_ANSI_ROLE = {"system": "35", "user": "34", "assistant": "36", "tool": "33", "template": "90"}


@dataclasses.dataclass(frozen=True)
class Token:
    """One token of a masked conversation, as shown.

    Attributes:
        index: Position in ``input_ids``.
        id: Token id.
        text: The characters of the rendered text this token is shown with (empty
            for a token whose characters an earlier token already showed, as the
            second byte-level token of one emoji).
        gap: Characters before it that no token's offsets cover.
        role: Role name (``"system"``, ``"user"``, ``"assistant"``, ``"tool"``, ``"template"``).
        part: Part name, lower-case (``"header"``, ``"content"``, ``"eot"``, ...).
        message: Message index, -1 for template text outside every message.
        label: The label: the token id where trained, -100 elsewhere.
    """

    index: int
    id: int
    text: str
    gap: str
    role: str
    part: str
    message: int
    label: int

    @property
    def trained(self) -> bool:
        return self.label != IGNORE_INDEX


@dataclasses.dataclass(frozen=True)
class RoleCount:
    """Tokens of one role, and how many of them are trained."""

    role: str
    tokens: int
    trained: int


def tokens(out: MaskedConversation) -> tuple[list[Token], str]:
    """The shown tokens of ``out``, and the text after the last token that no token covers."""
    ids = np.asarray(out["input_ids"])
    labels = np.asarray(out["labels"])
    roles = np.asarray(out["role"])
    parts = np.asarray(out["part"])
    messages = np.asarray(out["message_index"])
    text = out.text
    shown: list[Token] = []
    cursor = 0
    for t, (start, end) in enumerate(np.asarray(out.offsets).tolist()):
        gap = text[cursor:start] if start > cursor else ""
        piece = text[max(start, cursor) : end] if end > cursor else ""
        cursor = max(cursor, end)
        shown.append(
            Token(
                index=t,
                id=int(ids[t]),
                text=piece,
                gap=gap,
                role=ROLE_NAMES[Role(int(roles[t]))],
                part=Part(int(parts[t])).name.lower(),
                message=int(messages[t]),
                label=int(labels[t]),
            )
        )
    return shown, text[cursor:]


def role_counts(out: MaskedConversation) -> list[RoleCount]:
    """Tokens and trained tokens per role, in display order, roles with no token left out."""
    roles = np.asarray(out["role"])
    trained = np.asarray(out["labels"]) != IGNORE_INDEX
    counts = []
    for role, name in ROLE_NAMES.items():
        mine = roles == int(role)
        if mine.any():
            counts.append(RoleCount(name, int(mine.sum()), int((mine & trained).sum())))
    return counts


def _counts_lines(out: MaskedConversation) -> list[str]:
    counts = role_counts(out)
    rows = [(c.role, str(c.tokens), str(c.trained)) for c in counts]
    rows.append(("total", str(sum(c.tokens for c in counts)), str(sum(c.trained for c in counts))))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'role':<{width}}  {'tokens':>7}  {'trained':>7}"]
    lines += [f"{name:<{width}}  {n:>7}  {k:>7}" for name, n, k in rows]
    return lines


def _summary(out: MaskedConversation) -> str:
    r = out.report
    return (
        f"template {r.template} ({r.method}); {r.n_trained}/{r.n_tokens} tokens trained; "
        f"{r.n_straddle} straddling header/reply trained; {r.n_boundary_dropped} boundary tokens left untrained"
    )


def _sgr(code: str, text: str, *, newlines: bool = False) -> str:
    """``text`` in SGR colour ``code``; with ``newlines``, each newline shown as a coloured ``↵`` first."""
    if newlines:
        text = text.replace("\n", "\u21b5\n")
    # One escape per line: a background colour carried across a newline paints the
    # rest of the terminal line.
    return "\n".join(f"\x1b[{code}m{line}\x1b[0m" if line else "" for line in text.split("\n"))


_MIN_IMAGE_RUN = 4


def _image_run(shown: list[Token], i: int) -> int:
    """How many tokens from ``i`` on are the same untrained image placeholder, with nothing between them."""
    first = shown[i]
    if first.part != "image" or first.trained:
        return 0
    n = 1
    while i + n < len(shown):
        t = shown[i + n]
        if t.part != "image" or t.trained or t.id != first.id or t.text != first.text or t.gap:
            break
        n += 1
    return n


def render_terminal(out: MaskedConversation, *, color: bool) -> str:
    """The conversation token by token, then a legend and per-role counts.

    With ``color``, trained tokens are black on green (two alternating shades, so
    token boundaries show), untrained tokens take their role's colour, and each
    newline is shown as ``↵`` in its token's colour (a trained newline would
    otherwise be invisible). Without it, trained tokens are written in ``[brackets]``.
    A run of identical untrained image tokens is written once with its length
    (``<image>×576``); the counts below count every token.
    """
    shown, tail = tokens(out)
    pieces = []
    n_trained = 0
    run = 0  # how many more tokens of the current image run to skip
    for i, token in enumerate(shown):
        if run:
            run -= 1
            continue
        # Conversation text may hold escape characters; shown, never obeyed by the terminal.
        token = dataclasses.replace(
            token, text=token.text.replace("\x1b", "\u241b"), gap=token.gap.replace("\x1b", "\u241b")
        )
        pieces.append(token.gap)
        same = _image_run(shown, i)
        if same >= _MIN_IMAGE_RUN:  # an image's hundreds of placeholder tokens, as one "<image>×576"
            run = same - 1
            token = dataclasses.replace(token, text=f"{token.text}\u00d7{same}")
        if token.trained:
            if color:
                pieces.append(_sgr(_ANSI_TRAINED[n_trained % 2], token.text, newlines=True))
            else:
                pieces.append(f"[{token.text}]")
            n_trained += 1
        else:
            pieces.append(_sgr(_ANSI_ROLE[token.role], token.text, newlines=True) if color else token.text)
    pieces.append(tail.replace("\x1b", "\u241b"))
    body = "".join(pieces)
    if color:
        legend = "legend: " + " ".join(
            [_sgr(_ANSI_TRAINED[0], " trained ")] + [_sgr(_ANSI_ROLE[name], name) for name in ROLE_NAMES.values()]
        )
        legend += "  (untrained tokens are coloured by role; labels -100)"
    else:
        legend = "legend: [token] trained (label = token id); all other text has label -100"
    return "\n".join([body, "", legend, "", *_counts_lines(out), "", _summary(out)]) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #111827; background: #ffffff; }
h1 { font-size: 1.2rem; margin: 0 0 .5rem; }
p.summary { color: #374151; margin: .25rem 0 1rem; }
.legend span.swatch { display: inline-block; padding: .1rem .5rem; margin-right: .4rem; border-radius: 3px; }
table.counts { border-collapse: collapse; margin: 1rem 0; }
table.counts td, table.counts th { padding: .15rem .75rem; text-align: right; border-bottom: 1px solid #e5e7eb; }
table.counts td:first-child, table.counts th:first-child { text-align: left; }
pre.conversation { white-space: pre-wrap; word-break: break-word; font: 15px/1.7 ui-monospace, monospace;
  padding: 1rem; border: 1px solid #d1d5db; border-radius: 4px; }
.tok { border-radius: 2px; }
.tok:hover { outline: 2px solid #111827; }
.nl::before { content: "\\21B5"; opacity: .45; }
""" + "".join(f".{name} {{ background: {value}; }}\n" for name, value in HTML_COLORS.items())


def render_html(out: MaskedConversation, *, title: str = "labelmask") -> str:
    """A standalone HTML page (inline CSS, no scripts or external assets) showing ``out``.

    Each token is a ``<span>`` whose background says trained (green) or, untrained,
    the role of its message; hovering shows its id, role, part, message and label.
    """
    shown, tail = tokens(out)
    body = []
    n_trained = 0
    for token in shown:
        body.append(html.escape(token.gap))
        if token.trained:
            cls = "trained" if n_trained % 2 == 0 else "trained-alt"
            n_trained += 1
        else:
            cls = token.role
        tip = (
            f"token {token.index} · id {token.id} · role {token.role} · part {token.part} · "
            f"message {token.message} · label {token.label}"
        )
        text = html.escape(token.text).replace("\n", '<span class="nl"></span>\n')
        body.append(
            f'<span class="tok {cls}" title="{html.escape(tip)}" data-id="{token.id}" data-role="{token.role}" '
            f'data-part="{token.part}" data-label="{token.label}">{text}</span>'
        )
    body.append(html.escape(tail))
    swatches = ['<span class="swatch trained">trained (label = token id)</span>'] + [
        f'<span class="swatch {name}">{name}</span>' for name in ROLE_NAMES.values()
    ]
    counts = role_counts(out)
    rows = "".join(f"<tr><td>{c.role}</td><td>{c.tokens}</td><td>{c.trained}</td></tr>" for c in counts)
    rows += f"<tr><th>total</th><th>{sum(c.tokens for c in counts)}</th><th>{sum(c.trained for c in counts)}</th></tr>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="summary">{html.escape(_summary(out))}</p>
<div class="legend">{"".join(swatches)} untrained tokens are coloured by role (label -100);
hover a token for its id, role, part and label.</div>
<table class="counts"><tr><th>role</th><th>tokens</th><th>trained</th></tr>{rows}</table>
<pre class="conversation">{"".join(body)}</pre>
</body>
</html>
"""


class _Html:
    """An HTML view a notebook displays (Jupyter calls ``_repr_html_``); ``str()`` gives the page."""

    def __init__(self, page: str):
        self.page = page

    def _repr_html_(self) -> str:
        return self.page

    def __str__(self) -> str:
        return self.page


def _default_color() -> bool:
    import os
    import sys

    if os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty() or "ipykernel" in sys.modules


def _rows(data: Any, rows: int) -> list[Any]:
    """The first ``rows`` rows of a dataset, a list of rows, or one row."""
    if isinstance(data, Mapping):
        return [data]
    if hasattr(data, "select") and hasattr(data, "column_names"):  # a datasets.Dataset
        return [data[i] for i in range(min(rows, len(data)))]
    if hasattr(data, "take") and hasattr(data, "column_names"):  # a datasets.IterableDataset
        return list(data.take(rows))
    if isinstance(data, (list, tuple)):
        return list(data[:rows])
    raise OptionError(
        f"show() takes a mask_conversation result, a masked row (input_ids and labels), a list of them or a "
        f"datasets.Dataset, not {type(data).__name__}."
    )


def render_rows(rows: Sequence[Mapping[str, Any]], tokenizer: Any, *, color: bool) -> str:
    """Masked rows (``input_ids`` and ``labels``, as :func:`~labelmask.mask_dataset` writes them) decoded
    run by run: each run of trained tokens in colour (or ``[brackets]``), with its row's counts."""
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        raise OptionError("show() needs the tokenizer to show dataset rows: show(rows, tokenizer).")
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's
    out = []
    for k, row in enumerate(rows):
        if not isinstance(row, Mapping) or "input_ids" not in row or "labels" not in row:
            raise OptionError(f"show(): row {k} has no input_ids and labels (a mask_dataset row has both).")
        ids = np.asarray(row["input_ids"], dtype=np.int64)
        trained = np.asarray(row["labels"], dtype=np.int64) != IGNORE_INDEX
        # Runs of tokens trained alike, decoded whole (a character split across tokens decodes right).
        edges = np.flatnonzero(np.diff(trained.astype(np.int8))) + 1
        pieces, n_runs = [], 0
        for a, b in zip([0, *edges.tolist()], [*edges.tolist(), len(ids)]):
            if a == b:
                continue
            text = tokenizer.decode(ids[a:b].tolist(), skip_special_tokens=False).replace("\x1b", "\u241b")
            if trained[a]:
                pieces.append(_sgr(_ANSI_TRAINED[n_runs % 2], text, newlines=True) if color else f"[{text}]")
                n_runs += 1
            else:
                pieces.append(text)
        head = f"row {k}: {len(ids)} tokens, {int(trained.sum())} trained"
        out.append(f"{head}\n{''.join(pieces)}\n")
    legend = "trained text in colour" if color else "[trained text]; all other text has label -100"
    return "\n".join(out) + f"\nlegend: {legend}\n"


def show(
    data: Any, tokenizer: Any = None, *, rows: int = 3, color: bool | None = None, html: bool = False
) -> _Html | None:
    """Show what a result or a few dataset rows train: the view of ``labelmask show``, in Python.

    Args:
        data: A :func:`~labelmask.mask_conversation` result (every token, coloured by role,
            trained ones highlighted, then per-role counts), or masked rows: a row, a list of rows
            or a ``datasets.Dataset`` / ``IterableDataset`` from :func:`~labelmask.mask_dataset`
            (decoded run by run; the first ``rows`` of them).
        tokenizer: Needed for rows (to decode their ids); not for a result.
        rows: How many rows of a dataset to show.
        color: ANSI colours (``None``: on a terminal or in a notebook, unless ``NO_COLOR`` is set);
            without, trained text is written in ``[brackets]``.
        html: Return the standalone HTML report of a result instead of printing (a notebook displays
            it; ``str()`` gives the page).

    Returns:
        ``None`` (the view is printed), or with ``html=True`` the HTML view.
    """
    use_color = _default_color() if color is None else bool(color)
    if isinstance(data, MaskedConversation):
        if html:
            return _Html(render_html(data))
        print(render_terminal(data, color=use_color), end="")
        return None
    if html:
        raise OptionError("show(html=True) needs a mask_conversation result (rows carry no text or offsets).")
    print(render_rows(_rows(data, rows), tokenizer, color=use_color), end="")
    return None
