"""Stage 2: tokenize the rendered text once, keeping each token's character offsets.

``apply_chat_template(tokenize=True)`` encodes the rendered text with
``add_special_tokens=False`` (the template writes BOS itself); so do we, through the
fast tokenizer's Rust backend directly, which is where the offsets come from.
"""

from __future__ import annotations

import dataclasses
from itertools import chain
from typing import Any

import numpy as np

from labelmask.errors import TokenizerError

__all__ = ["Encoded", "backend_of", "encode"]


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids and the characters each token covers.

    Attributes:
        ids: ``int64[n_tokens]`` token ids.
        offsets: ``int64[n_tokens, 2]`` ``(start, end)`` character offsets into the text.
    """

    ids: np.ndarray
    offsets: np.ndarray


def backend_of(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind a transformers fast tokenizer.

    Raises:
        TokenizerError: the tokenizer has no Rust backend, so no offsets.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode"):
        msg = (
            f"{type(tokenizer).__name__} is not a fast tokenizer: labelmask needs character offsets, which only "
            "fast (Rust) tokenizers give. Load it with AutoTokenizer.from_pretrained(path) (use_fast is the "
            "default), or convert it with transformers.convert_slow_tokenizer."
        )
        raise TokenizerError(msg)
    if backend.truncation is not None or backend.padding is not None:
        # The caller turned on truncation or padding on the shared backend; encode with
        # a private copy so the ids are the whole conversation, as apply_chat_template's are.
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
    return backend


def encode(backend: Any, text: str) -> Encoded:
    """Tokenize ``text`` without added special tokens; validate the offsets.

    Raises:
        TokenizerError: offsets that are out of range, reversed, or go backwards.
    """
    # encode_batch, as transformers calls it: the same ids, and faster than encode on long texts.
    (enc,) = backend.encode_batch([text], add_special_tokens=False)
    ids = np.asarray(enc.ids, dtype=np.int64)
    offsets = np.fromiter(chain.from_iterable(enc.offsets), dtype=np.int64, count=2 * len(ids)).reshape(-1, 2)
    if len(offsets):
        starts, ends = offsets[:, 0], offsets[:, 1]
        bad = (starts > ends) | (ends > len(text)) | (starts < 0)
        bad[1:] |= starts[1:] < starts[:-1]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            msg = (
                f"The tokenizer gave degenerate offsets at token {i} ({tuple(offsets[i])} in a text of "
                f"{len(text)} characters): labelmask cannot tell which characters each token covers. "
                "Check the tokenizer's normalizer and post-processor (trim_offsets), or report it."
            )
            raise TokenizerError(msg)
        # Characters no token claims (a normalizer composed "e" + U+0301 into one
        # character, so the token's offsets stop before the accent) belong to the
        # token before them; characters before the first token, to the first one.
        # Tokens then tile the text, so every character has provenance and a label.
        nonempty = ends > starts
        if nonempty.any():
            idx = np.flatnonzero(nonempty)
            next_start = np.append(starts[idx[1:]], len(text))
            gap = next_start > ends[idx]
            if gap.any() or starts[idx[0]] > 0:
                offsets = offsets.copy()
                offsets[idx[gap], 1] = next_start[gap]
                offsets[idx[0], 0] = 0
    return Encoded(ids=ids, offsets=offsets)
