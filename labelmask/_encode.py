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
from itertools import chain
from typing import Any

import numpy as np

from labelmask.errors import TokenizerError

__all__ = ["Encoded", "backend_of", "encode", "encode_batch"]


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids and the tokenizer's alignment of tokens to characters.

    Attributes:
        ids: ``int64[n_tokens]`` token ids.
        encoding: The ``tokenizers.Encoding``.
        n_chars: Length of the encoded text.
    """

    ids: np.ndarray
    encoding: Any
    n_chars: int

    def boundary_tokens(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and last token touching each segment of the text.

        Args:
            starts: ``int64[n_segments + 1]``, where each segment starts, then the text length.

        Returns:
            ``(first, last)``, ``int64[n_segments]`` each. A character no token claims
            (a normalizer composed ``e`` + U+0301 into one character, so the token
            stops before the accent) belongs to the token before it.

        Raises:
            TokenizerError: the tokenizer maps characters to tokens out of order.
        """
        n_segments = len(starts) - 1
        n_tokens = len(self.ids)
        if n_segments == 0 or n_tokens == 0:
            return np.zeros(n_segments, dtype=np.int64), np.full(n_segments, -1, dtype=np.int64)
        char_to_token = self.encoding.char_to_token
        token_to_chars = self.encoding.token_to_chars
        bounds = starts.tolist()
        firsts = []
        lasts = []
        in_order = True
        for k in range(n_segments):
            pos = bounds[k]
            token = char_to_token(pos)
            while token is None and pos > 0:
                pos -= 1
                token = char_to_token(pos)
            # The first segment starts at character 0, which the first token covers.
            token = 0 if token is None or k == 0 else token
            if k:
                # The previous segment's last token is the one before this segment's first,
                # unless that token also covers the previous segment's last character.
                last = token if token_to_chars(token)[0] < bounds[k] else token - 1
                in_order = in_order and token >= firsts[-1] and last >= firsts[-1] - 1
                lasts.append(last)
            firsts.append(token)
        lasts.append(n_tokens - 1)
        if not (in_order and lasts[-1] >= firsts[-1] - 1):
            msg = (
                "The tokenizer maps characters to tokens out of order (degenerate offsets): labelmask cannot "
                "tell which characters each token covers. Check the tokenizer's normalizer and "
                "post-processor (trim_offsets), or report it."
            )
            raise TokenizerError(msg)
        first = np.array(firsts, dtype=np.int64)
        last = np.array(lasts, dtype=np.int64)
        return first, last

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """``int64[n_tokens, 2]`` character offsets, made to tile the text.

        As in :meth:`boundary_tokens`, characters no token claims belong to the token before them.
        """
        n = len(self.ids)
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
    # encode_batch, as transformers calls it: the same ids, and no slower than encode.
    (encoding,) = backend.encode_batch([text], add_special_tokens=add_special_tokens)
    ids = np.asarray(encoding.ids, dtype=np.int64)
    return Encoded(ids=ids, encoding=encoding, n_chars=len(text))


def encode_batch(backend: Any, texts: list[str]) -> list[Encoded]:
    """Tokenize many texts in one call of the Rust tokenizer (parallel over cores), keeping alignments.

    Each result equals :func:`encode` of that text alone.
    """
    encodings = backend.encode_batch(texts, add_special_tokens=False)
    return [
        Encoded(ids=np.asarray(encoding.ids, dtype=np.int64), encoding=encoding, n_chars=len(text))
        for text, encoding in zip(texts, encodings)
    ]
