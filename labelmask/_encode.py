"""Stage 2: tokenize the rendered text once, with the tokenizer's character alignment.

``apply_chat_template(tokenize=True)`` encodes the rendered text with
``add_special_tokens=False`` (the template writes BOS itself); so do we, through the
fast tokenizer's Rust backend directly. Token offsets are not turned into a Python
list on the hot path (that costs as much as a fifth of the encoding): the align
stage asks only where each segment of the text begins, with ``char_to_token``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import weakref
from itertools import chain
from typing import Any

import numpy as np

from labelmask.errors import TokenizerError

__all__ = ["Encoded", "SpecialTokens", "backend_of", "encode", "encode_batch", "special_tokens"]


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids and the tokenizer's alignment of tokens to characters.

    Attributes:
        id_list: The token ids, as the tokenizer returns them (a list).
        encoding: The ``tokenizers.Encoding``.
        n_chars: Length of the encoded text.
    """

    id_list: list[int]
    encoding: Any
    n_chars: int

    @functools.cached_property
    def ids(self) -> np.ndarray:
        """``int64[n_tokens]`` token ids."""
        return np.array(self.id_list, dtype=np.int64)

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """``int64[n_tokens, 2]`` character offsets, made to tile the text.

        As in :func:`labelmask._align.align`, characters no token claims belong to the token before them.
        """
        n = len(self.id_list)
        offsets = np.fromiter(chain.from_iterable(self.encoding.offsets), dtype=np.int64, count=2 * n).reshape(-1, 2)
        idx = np.flatnonzero(offsets[:, 1] > offsets[:, 0])
        if len(idx):
            next_start = np.append(offsets[idx[1:], 0], self.n_chars)
            gap = next_start > offsets[idx, 1]
            offsets[idx[gap], 1] = next_start[gap]
            offsets[idx[0], 0] = 0
        return offsets


def backend_of(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind a transformers fast tokenizer.

    Raises:
        TokenizerError: the tokenizer has no Rust backend, so no offsets.
    """
    if type(tokenizer).__name__ == "MistralCommonBackend":
        msg = (
            "MistralCommonBackend (transformers' wrapper of mistral-common) gives no character offsets, which "
            "labelmask needs. Load a fast tokenizer instead: AutoTokenizer.from_pretrained(path, "
            "mistral_format=False) for a checkpoint with tokenizer.json, or convert tekken.json with "
            "transformers.integrations.mistral.tokenizer.convert_tekken_tokenizer(path)."
        )
        raise TokenizerError(msg)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        msg = (
            f"{type(tokenizer).__name__} is not a fast tokenizer: labelmask needs character offsets, which only "
            "fast (Rust) tokenizers give. Load it with AutoTokenizer.from_pretrained(path) (use_fast is the "
            "default), or convert it with transformers.convert_slow_tokenizer."
        )
        raise TokenizerError(msg)
    if backend.truncation is not None or backend.padding is not None:
        # The caller turned on truncation or padding on the shared backend; encode with
        # a private copy so the ids are the whole conversation, as apply_chat_template's are.
        return _untruncated_copy(backend.to_str())
    return backend


@functools.lru_cache(maxsize=8)
def _untruncated_copy(serialized: str) -> Any:
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(serialized)
    backend.no_truncation()
    backend.no_padding()
    return backend


def encode(backend: Any, text: str, *, add_special_tokens: bool = False) -> Encoded:
    """Tokenize ``text``, by default without added special tokens (a processor may add its BOS)."""
    # encode_batch, as transformers calls it: the same encoding as encode, at the same cost, and
    # it releases the GIL (encode does not), so threads that mask conversations tokenize in parallel.
    (encoding,) = backend.encode_batch([text], add_special_tokens=add_special_tokens)
    return Encoded(id_list=encoding.ids, encoding=encoding, n_chars=len(text))


def encode_batch(backend: Any, texts: list[str]) -> list[Encoded]:
    """Tokenize many texts in one call of the Rust tokenizer (parallel over cores), keeping alignments.

    Each result equals :func:`encode` of that text alone.
    """
    encodings = backend.encode_batch(texts, add_special_tokens=False)
    return [
        Encoded(id_list=encoding.ids, encoding=encoding, n_chars=len(text)) for text, encoding in zip(texts, encodings)
    ]


class SpecialTokens:
    """A tokenizer's special-token strings, their distinct lengths (longest first), their ids, and a
    regex finding them (the guard searches message text with it; the fallback tells markup by it)."""

    def __init__(self, processor: Any):
        decoder = processor.added_tokens_decoder
        strings = {t.content for t in decoder.values() if t.special and t.content}
        strings |= {t for t in processor.all_special_tokens if t}
        self.strings = frozenset(strings)
        self.lengths = tuple(sorted({len(t) for t in strings}, reverse=True))
        # Sorted, so the pattern (and what it finds first) does not depend on the hash seed.
        self.pattern = re.compile(_trie_regex(sorted(strings))) if strings else None
        ids = processor.convert_tokens_to_ids(sorted(strings)) if strings else []
        self.ids = np.unique(np.array([i for i in ids if isinstance(i, int) and i >= 0], dtype=np.int64))
        # What tells that tokens were added since (see _fresh): the id the next added token gets, and
        # how many special tokens the Python side lists.
        self.next_id = max(max(decoder, default=-1) + 1, _backend(processor).get_vocab_size(with_added_tokens=False))
        self.n_listed = len(processor.all_special_tokens)


def _trie_regex(strings: list[str]) -> str:
    """One regex matching any of ``strings``, leftmost-longest, as a trie (fast on long lists)."""
    trie: dict = {}
    for s in strings:
        node = trie
        for ch in s:
            node = node.setdefault(ch, {})
        node[""] = None

    def build(node: dict) -> str:
        end = "" in node
        alternatives = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not alternatives:
            return ""
        body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
        if end:
            return "(?:" + body + ")?"
        return body

    return build(trie)


_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _backend(processor: Any) -> Any:
    return getattr(processor, "backend_tokenizer", None) or processor.tokenizer.backend_tokenizer


def _fresh(specials: SpecialTokens, processor: Any) -> bool:
    """Whether no token was added to ``processor`` since ``specials`` was read (under a microsecond or two;
    ``len(tokenizer)`` costs 0.2 ms on Gemma 3). An added token takes the next free id; a string of the
    vocabulary made special (``add_special_tokens``) is listed in ``all_special_tokens``."""
    return (
        _backend(processor).id_to_token(specials.next_id) is None
        and len(processor.all_special_tokens) == specials.n_listed
    )


def special_tokens(processor: Any) -> SpecialTokens:
    """The :class:`SpecialTokens` of ``processor``, read once per tokenizer object (the one reader of
    them in labelmask): asking a large vocabulary for its size or added tokens costs a millisecond
    (Gemma 3). Read again after tokens are added to it (``add_special_tokens``, ``add_tokens``)."""
    try:
        specials = _cache[processor]
    except (KeyError, TypeError):
        pass
    else:
        if _fresh(specials, processor):
            return specials
    specials = SpecialTokens(processor)
    try:
        _cache[processor] = specials
    except TypeError:
        pass
    return specials
