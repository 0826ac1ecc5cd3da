"""Shared fixtures: real tokenizers built from the vendored files, Hypothesis profiles.

Hypothesis profiles: ``ci`` (the default, 200 examples per property) and
``thorough`` (2,000), chosen with ``LABELMASK_HYPOTHESIS=thorough``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.fixtures import load_tokenizer

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("LABELMASK_HYPOTHESIS", "ci"))


@pytest.fixture(scope="session")
def tokenizers():
    """Name -> real fast tokenizer, one per annotated template under test."""
    return _Lazy()


class _Lazy(dict):
    """Loads each tokenizer on first use (gemma3 takes seconds)."""

    def __missing__(self, name):
        self[name] = load_tokenizer(name)
        return self[name]


@pytest.fixture
def registry():
    """Templates a test registers (register_template, --template, a docs sample) do not outlive it."""
    from labelmask import _registry

    saved = _registry.REGISTRY.snapshot()
    yield
    _registry.REGISTRY.restore(saved)
