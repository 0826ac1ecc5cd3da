"""The project's tests draw conversations with the public strategies of ``labelmask.testing``."""

from labelmask.testing.strategies import (  # noqa: F401
    LOOKALIKES,
    TOOLS,
    WORDS,
    conversations,
    texts,
    tool_calls,
    typed_parts,
)
