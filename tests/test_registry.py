"""_registry: the registry owns its lookup cache; snapshots restore registrations in this or another process."""

from __future__ import annotations

import pickle
from pathlib import Path

import labelmask
from labelmask._registry import REGISTRY, Registry
from tests.fixtures import load_tokenizer


def test_lookup_is_cached_and_cleared_by_register(registry):
    stock = "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert REGISTRY.lookup(stock, None, True) is None  # no annotation: the fallback
    annotated = (
        "{% for m in messages %}{% span 'turn', loop.index0 %}{% span 'content' %}{{ m.content }}"
        "{% endspan %}{% endspan %}{% endfor %}"
    )
    labelmask.register_template("plain-content", annotated, matches=[stock])
    assert REGISTRY.lookup(stock, None, True).name == "plain-content"


def test_snapshot_restore_round_trip_and_pickle(registry):
    before = REGISTRY.snapshot()
    labelmask.register_template("echo-x", "{{ messages[0].content }}")
    snap = REGISTRY.snapshot()
    assert "echo-x" in snap and "echo-x" not in before
    # A fresh registry (a worker process) learns the registrations from the pickled snapshot.
    fresh = Registry()
    fresh.restore(pickle.loads(pickle.dumps(snap)), replace=False)
    assert fresh.get("echo-x") == REGISTRY.get("echo-x")
    REGISTRY.restore(before)
    assert "echo-x" not in REGISTRY.templates()


def test_a_registration_wins_over_a_shipped_annotation_for_the_same_stock_template(registry):
    """register_template(matches=[a builtin's stock template]) used to be ignored: the builtin won."""
    tokenizer = load_tokenizer("qwen3")
    shipped = REGISTRY.find(tokenizer.chat_template)
    assert shipped.name == "qwen3"
    labelmask.register_template("my-qwen3", shipped.source, matches=[tokenizer.chat_template])
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    out = labelmask.mask_conversation(messages, tokenizer)
    assert out.report.template == "my-qwen3"


def test_every_stock_template_in_trls_wheel_has_an_annotation():
    """TRL's wheel collects the stock templates of the families people fine-tune (trl/chat_templates/,
    the files without _training): each one's hash is matched by a shipped annotation, so none goes
    through the fallback."""
    import trl

    folder = Path(trl.__file__).parent / "chat_templates"
    stock = sorted(p for p in folder.glob("*.jinja") if not p.stem.endswith("_training"))
    assert len(stock) >= 40
    shipped = {digest for template in labelmask.templates().values() for digest in template.matches}
    missing = [p.name for p in stock if labelmask.template_hash(p.read_text(encoding="utf-8")) not in shipped]
    assert missing == [], f"stock templates with no annotation: {missing}"
    assert len(labelmask.templates()) >= 40
