"""Many conversations at once: :func:`mask_conversations`.

The same stages as :func:`~labelmask.mask_conversation`, reordered for throughput:
render conversations (Python, one thread), tokenize them in batched calls of the
Rust tokenizer (``Tokenizer.encode_batch``, which keeps each encoding's character
alignment and spreads the texts over the machine's cores), then label each.
Every result is identical to ``mask_conversation`` on that conversation alone.

Rendering and labelling hold the GIL; tokenization does not. So the conversations
go in chunks of ``chunk_size``: each chunk is tokenized on a background thread
while the main thread renders the next one and labels the previous one, which
keeps both of a 2-core machine's cores busy.

Thread safety: compiled templates, annotation lookups and the sandbox's attribute
verdicts are cached process-wide; every cache holds immutable values computed from
its key alone, so threads may share them (the worst a race does is compile a
template twice). A call keeps no other state.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from labelmask._encode import Encoded, encode_batch
from labelmask._pipeline import (
    Options,
    Staged,
    check_on_error,
    check_options,
    check_processor,
    check_template_kwargs,
    finish_step,
    render_step,
)
from labelmask._policy import Policy
from labelmask._result import MaskedConversation
from labelmask._vision import is_processor
from labelmask.errors import LabelmaskError, OptionError, TokenizerError

__all__ = ["mask_conversations"]


def mask_conversations(
    conversations: Iterable[Any],
    processor: Any,
    *,
    tools: Sequence[list[dict[str, Any]] | None] | None = None,
    policy: Policy | None = None,
    return_tensors: str | None = None,
    template: str | None = None,
    verify: bool = False,
    fallback: bool = True,
    add_eos: bool | None = None,
    on_error: str = "raise",
    chunk_size: int = 32,
    control_tokens: str = "keep",
    check: str = "off",
    **template_kwargs: Any,
) -> list[MaskedConversation | LabelmaskError]:
    """Mask many conversations, tokenizing them in batched calls; results as :func:`mask_conversation`'s.

    Args:
        conversations: Conversations (lists of messages, as for :func:`mask_conversation`).
        processor: A fast ``transformers`` tokenizer. Multimodal processors are refused
            (:class:`~labelmask.errors.TokenizerError`): this batch engine masks text
            conversations; mask conversations with images one at a time.
        tools: One entry per conversation: its tool JSON schemas, or ``None``. ``None``
            for no tools anywhere.
        policy: What to train; default :class:`Policy` (assistant output only).
        return_tensors: ``None`` for lists, ``"np"`` or ``"pt"``, per result.
        template: Name of an annotated template, as for :func:`mask_conversation`.
        verify: Also render the stock template and compare, per conversation.
        fallback: As for :func:`mask_conversation` (unannotated templates; their spans
            are derived per conversation, and the encoding is still batched).
        add_eos: As for :func:`mask_conversation`.
        on_error: ``"raise"``: the first conversation that raises a
            :class:`~labelmask.LabelmaskError` raises it, its message starting
            ``"Conversation <index>: "`` and its ``index`` attribute set. ``"drop"``: the
            conversation is left out of the result list (each result's position then no
            longer says which conversation it is; use ``"return"`` to keep positions).
            ``"return"``: the error takes that conversation's place in the result list. The
            same words as :func:`mask_dataset`'s ``on_error``.
        chunk_size: Conversations per tokenizer call; one chunk is tokenized (on every core)
            while the next renders and the previous one is labelled. Results do not depend
            on it; the default keeps both cores busy on a few dozen conversations already.
            (Long conversations with Qwen's tokenizer tokenize slowly in threads under glibc's
            allocator: preload jemalloc, set GLIBC_TUNABLES=glibc.malloc.tcache_count=1000, or use
            worker processes; docs/scaling.md.)
        control_tokens: As for :func:`mask_conversation`.
        check: As for :func:`mask_conversation`.
        **template_kwargs: Passed to every render (``enable_thinking=False``, ...).
            ``max_length`` truncation is :func:`mask_conversation`'s, not this function's.

    Returns:
        A list with one :class:`MaskedConversation` per conversation, in order (or, with
        ``on_error="return"``, the error a conversation raised).

    Raises:
        LabelmaskError: with ``on_error="raise"``, the first failing conversation's error.
        TokenizerError: not a fast tokenizer, or a multimodal processor.
        OptionError: ``tools`` is not one entry per conversation; a bad option (also a ``ValueError``).

    Example:
        >>> batch = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]] * 3
        >>> outs = mask_conversations(batch, tokenizer, return_tensors="np")  # doctest: +SKIP
        >>> [out.report.n_trained for out in outs]  # doctest: +SKIP
    """
    if "max_length" in template_kwargs or "truncation" in template_kwargs:
        msg = (
            "mask_conversations does not truncate; call mask_conversation(..., max_length=...) per conversation, "
            "or cut rows in the Collator."
        )
        raise OptionError(msg)
    check_on_error(on_error, ("raise", "drop", "return"), "mask_conversations")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise OptionError(f"chunk_size={chunk_size!r}: use a positive int.")
    options = check_options(
        policy=policy,
        return_tensors=return_tensors,
        template=template,
        verify=verify,
        fallback=fallback,
        add_eos=add_eos,
        control_tokens=control_tokens,
        check=check,
        **template_kwargs,
    )
    if is_processor(processor):
        msg = (
            f"{type(processor).__name__} is a multimodal processor; mask_conversations batches text "
            "conversations only. Mask conversations with images one at a time with mask_conversation, "
            "or pass processor.tokenizer for text-only ones."
        )
        raise TokenizerError(msg)
    check_template_kwargs(processor, options.template_kwargs)
    tokenizer, backend = check_processor(processor, vision=False)
    conversations = list(conversations)
    if tools is None:
        tools = [None] * len(conversations)
    else:
        tools = list(tools)
        if len(tools) != len(conversations):
            msg = (
                f"tools has {len(tools)} entries for {len(conversations)} conversations: pass one per "
                "conversation (a list of schemas, or None), e.g. tools=[schemas] * len(conversations)."
            )
            raise OptionError(msg)
        for i, entry in enumerate(tools):
            if isinstance(entry, dict):
                msg = (
                    f"tools[{i}] is a dict, not a list of tool schemas: tools takes one entry per conversation "
                    "(you probably meant tools=[schemas] * len(conversations))."
                )
                raise OptionError(msg)

    def render(i: int) -> Staged | LabelmaskError:
        try:
            return render_step(conversations[i], processor, tokenizer, tools[i], options)
        except LabelmaskError as exc:
            return _failed(exc, i, on_error)

    results: list[MaskedConversation | LabelmaskError] = []
    pool = _encoder()
    with _quick_handoff():
        pending: tuple[list, Future] | None = None
        for lo, hi in _chunks(len(conversations), chunk_size):
            staged = [render(i) for i in range(lo, hi)]
            texts = [s.rendered.text for s in staged if isinstance(s, Staged)]
            # The Rust tokenizer releases the GIL: this chunk tokenizes while the next renders.
            future = pool.submit(encode_batch, backend, texts)
            if pending is not None:
                results.extend(_finish_chunk(*pending, len(results), options, on_error, tokenizer, backend))
            pending = (staged, future)
        if pending is not None:
            results.extend(_finish_chunk(*pending, len(results), options, on_error, tokenizer, backend))
    if on_error == "drop":
        return [r for r in results if not isinstance(r, LabelmaskError)]
    return results


# CPython hands the GIL to a waiting thread only after the running one has held it for the
# switch interval (5 ms by default). The tokenizer thread needs the GIL for a moment before
# and after each chunk it tokenizes, so with the default it sat idle up to 5 ms per chunk
# while the main thread rendered, about a quarter of the time. While mask_conversations runs,
# the interval is 0.1 ms (restored when the last concurrent call ends): only threads waiting for
# the GIL make the running one yield, so the main thread drops it only at chunk boundaries.
_HANDOFF_INTERVAL = 0.0001
_handoff_lock = threading.Lock()
_handoff_calls = 0
_handoff_saved = 0.005


@contextmanager
def _quick_handoff() -> Iterator[None]:
    global _handoff_calls, _handoff_saved
    with _handoff_lock:
        if _handoff_calls == 0:
            _handoff_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_handoff_saved, _HANDOFF_INTERVAL))
        _handoff_calls += 1
    try:
        yield
    finally:
        with _handoff_lock:
            _handoff_calls -= 1
            if _handoff_calls == 0:
                sys.setswitchinterval(_handoff_saved)


# One tokenizing thread for the process, started on first use: starting and joining a thread per
# call cost milliseconds here. Concurrent calls queue their chunks on it; each chunk is tokenized
# on every core by the Rust tokenizer. A forked child starts its own (the parent's thread is not
# in the child, and an executor copied with it would wait for it forever).
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _encoder() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelmask-encode")
        return _pool


def _forget_encoder() -> None:
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_encoder)


def _chunks(n: int, size: int, cores: int | None = None) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk: ``size`` conversations each, but smaller at both ends.

    While the first chunk renders, the tokenizer has nothing to do, and while the last one is
    labelled, nothing either; so chunks grow from ``size / 8`` and the tail shrinks by halves,
    keeping those single-threaded stretches short. Chunk sizes are multiples of the core count
    where they can be (the tokenizer spreads a chunk's texts over the cores: three long
    conversations on two cores keep one core idle half the time).
    """
    cores = max(1, cores or os.cpu_count() or 1)

    def whole(k: int) -> int:  # k rounded up to a multiple of the core count
        return -(-k // cores) * cores

    bounds = [0]
    step = whole(max(1, size // 8))
    while bounds[-1] < n:
        left = n - bounds[-1]
        take = min(step, max(size, cores))
        if left <= 2 * take:
            take = whole((left + 1) // 2) if left > whole(max(1, size // 8)) else left
        bounds.append(bounds[-1] + min(take, left, size))
        step *= 2
    return list(zip(bounds, bounds[1:]))


def _finish_chunk(
    staged: list[Staged | LabelmaskError],
    future: Future,
    start: int,
    options: Options,
    on_error: str,
    tokenizer: Any,
    backend: Any,
) -> list[MaskedConversation | LabelmaskError]:
    encodings = iter(future.result())
    out: list[MaskedConversation | LabelmaskError] = []
    for i, item in enumerate(staged, start):
        if not isinstance(item, Staged):
            out.append(item)
            continue
        encoded: Encoded = next(encodings)
        try:
            out.append(finish_step(item, encoded, options, tokenizer=tokenizer, backend=backend))
        except LabelmaskError as exc:
            out.append(_failed(exc, i, on_error))
    return out


def _failed(exc: LabelmaskError, index: int, on_error: str) -> LabelmaskError:
    exc.args = (f"Conversation {index}: {exc.args[0] if exc.args else ''}", *exc.args[1:])
    exc.index = index
    if on_error == "raise":
        raise exc
    return exc
