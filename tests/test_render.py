"""The span tags: exact positions where a running character count goes wrong.

transformers' ``{% generation %}`` tracker computes a block's position from the
length of text emitted so far, which is wrong inside macros, ``set`` blocks and
filter blocks (Jinja buffers their output) and for a block that is the first
output. Each template below puts spans in one of those places; the expected
positions are found by searching the rendered text for unique content strings.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelmask import AnnotationError, RenderParityError
from labelmask._render import compile_template, render_annotated, render_stock
from labelmask._rendered import named_spans

MESSAGES = [
    {"role": "user", "content": "ALPHA question"},
    {"role": "assistant", "content": "BRAVO answer"},
    {"role": "user", "content": "CHARLIE again"},
    {"role": "assistant", "content": "DELTA reply"},
]

TEMPLATES = {
    "first output": "{% for m in messages %}{% span 'turn', loop.index0 %}{% span 'content' %}{{ m.content }}{% endspan %}|{% endspan %}{% endfor %}",
    "macro": (
        "{% macro turn(m, i) %}{% span 'turn', i %}<{{ m.role }}>{% span 'content' %}{{ m.content }}{% endspan %}"
        "{% span 'eot' %}</>{% endspan %}{% endspan %}{% endmacro %}"
        "PRE{% for m in messages %}{{ turn(m, loop.index0) }}\n{% endfor %}"
    ),
    "set block": (
        "{% for m in messages %}{% set block %}{% span 'turn', loop.index0 %}[{{ m.role }}] "
        "{% span 'content' %}{{ m.content }}{% endspan %}{% endspan %}{% endset %}{{ block }};{% endfor %}"
    ),
    "filter block inside span": (
        "{% for m in messages %}{% span 'turn', m %}{% span 'header' %}{% filter upper %}{{ m.role }}{% endfilter %}: "
        "{% endspan %}{% span 'content' %}{{ m.content }}{% endspan %}{% endspan %}\n{% endfor %}"
    ),
    "message named by mapping, folded": (
        "{% set sys = messages[0] %}{% for m in messages[1:] %}{% span 'turn', loop.index0 + 1 %}"
        "{% if loop.first %}{% span 'content', 0 %}{{ sys.content }}{% endspan %} / {% endif %}"
        "{% span 'content' %}{{ m.content }}{% endspan %}{% endspan %}{% endfor %}"
    ),
}


def spans_of(source, messages=MESSAGES):
    template = compile_template(source, mode="annotate", name="test")
    variables = {"messages": messages}
    rendered = render_annotated(template, variables, "test", expected=None, n_messages=len(messages))
    return rendered, named_spans(rendered.spans)


@pytest.mark.parametrize("case", sorted(TEMPLATES))
def test_content_spans_are_exact(case):
    source = TEMPLATES[case]
    rendered, spans = spans_of(source)
    # the annotated render, stripped, is what the same template renders with spans as no-ops
    assert rendered.text == render_stock(
        compile_template(source, mode="stock", name="test"), {"messages": MESSAGES}, "t"
    )
    contents = [s for s in spans if s.kind == "content"]
    assert contents, "no content span found"
    for span in contents:
        expected = MESSAGES[span.message]["content"]
        assert rendered.text[span.start : span.end] == expected
        assert rendered.text.find(expected) == span.start  # each content string is unique in the text


def test_macro_turns_cover_their_text():
    rendered, spans = spans_of(TEMPLATES["macro"])
    turns = [s for s in spans if s.kind == "turn"]
    assert [rendered.text[s.start : s.end] for s in turns] == [f"<{m['role']}>{m['content']}</>" for m in MESSAGES]
    eots = [s for s in spans if s.kind == "eot"]
    assert all(rendered.text[s.start : s.end] == "</>" for s in eots)


@given(
    st.lists(
        st.text(st.characters(exclude_categories=("Cs",), max_codepoint=0xFDCF), max_size=8), min_size=1, max_size=6
    )
)
def test_set_block_spans_follow_any_content(contents):
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(contents)]
    rendered, spans = spans_of(TEMPLATES["set block"], messages)
    content_spans = sorted((s for s in spans if s.kind == "content"), key=lambda s: s.message)
    assert [rendered.text[s.start : s.end] for s in content_spans] == contents
    # segments tile the text and agree with the spans
    assert rendered.seg_start[0] == 0 and rendered.seg_start[-1] == len(rendered.text)


def test_span_outside_every_turn_must_name_its_message():
    with pytest.raises(AnnotationError, match="outside every turn"):
        spans_of("{% span 'content' %}x{% endspan %}")


def test_span_naming_a_missing_message():
    with pytest.raises(AnnotationError, match="names message 9, but there are 4"):
        spans_of("{% span 'turn', 9 %}x{% endspan %}")


def test_unknown_span_kind_does_not_compile():
    with pytest.raises(AnnotationError, match="does not compile"):
        compile_template("{% span 'body' %}x{% endspan %}", mode="annotate", name="bad-kind")


def test_filter_applied_to_a_span_is_caught():
    """A slice through span output leaves unbalanced markers; a trim around one changes the text."""
    with pytest.raises(AnnotationError, match="unbalanced"):
        spans_of("{% set x %}{% span 'turn', 0 %}abc{% endspan %}{% endset %}{{ x[:2] }}")
    source = "{% set x %}{% span 'turn', 0 %} abc {% endspan %}{% endset %}[{{ x | trim }}]"
    template = compile_template(source, mode="annotate", name="trimmed")
    stock = render_stock(compile_template(source, mode="stock", name="trimmed"), {"messages": MESSAGES}, "trimmed")
    with pytest.raises(RenderParityError, match="trimmed"):
        render_annotated(template, {"messages": MESSAGES}, "trimmed", expected=stock, n_messages=4)


def test_index_characters_round_trip():
    """A span's message index is one character read by its place; the two ranges meet at 20992."""
    from labelmask._rendered import INDEX_BMP, _index_of, index_char

    edge = 0xE0000 - 0x20000 + INDEX_BMP  # first index with no character
    for index in (0, 1, INDEX_BMP - 1, INDEX_BMP, INDEX_BMP + 1, edge - 1):
        assert _index_of(index_char(index)) == index
    assert len({index_char(i) for i in range(INDEX_BMP - 5, INDEX_BMP + 5)}) == 10
    for bad in (-1, edge):
        with pytest.raises(AnnotationError, match="out of range"):
            index_char(bad)


@pytest.mark.parametrize("first", ["\u4e00", "\u4e01x", "\U00020000", "\ufdcf"])
def test_text_that_starts_like_an_index_is_text(first):
    """The characters that write message indices are ordinary text anywhere else, right after a marker too."""
    messages = [{"role": "user", "content": first + " q"}, {"role": "assistant", "content": first}]
    source = (
        "{% for m in messages %}{% span 'turn', loop.index0 %}{% span 'content' %}{{ m.content }}{% endspan %}"
        "{% span 'eot' %}{{ m.content }}{% endspan %}{% endspan %}{% endfor %}"
    )
    rendered, spans = spans_of(source, messages)
    assert rendered.text == "".join(m["content"] * 2 for m in messages)
    contents = [s for s in spans if s.kind == "content"]
    assert [(s.message, rendered.text[s.start : s.end]) for s in contents] == [(0, first + " q"), (1, first)]


def test_message_indices_past_the_first_character_range():
    from labelmask._rendered import INDEX_BMP

    n = INDEX_BMP + 3
    messages = [{"role": "user", "content": f"m{i}"} for i in range(n)]
    rendered, spans = spans_of(TEMPLATES["first output"], messages)
    tail = [s for s in spans if s.kind == "content" and s.message >= n - 5]
    assert [(s.message, rendered.text[s.start : s.end]) for s in tail] == [(i, f"m{i}") for i in range(n - 5, n)]


# Every statement that holds a body, with outputs side by side in it: joining adjacent outputs
# (labelmask's compile step) must render what Jinja renders.
JOINED = (
    "A{{ x }}B{% if x %}C{{ x }}{{ x }}D{% else %}E{% endif %}"
    "{% for i in range(3) %}[{{ i }}]{{ loop.index }}{% if loop.last %}!{% endif %}{% else %}none{% endfor %}"
    "{% macro m(a) %}<{{ a }}>{{ a }}{% endmacro %}{{ m(1) }}{{ m(2) }}"
    "{% set block %}s{{ x }}t{% endset %}{{ block }}{{ block | upper }}"
    "{% filter upper %}f{{ x }}g{% endfilter %}"
    "{% macro c() %}({{ caller() }}){{ x }}{% endmacro %}{% call c() %}in{{ x }}side{% endcall %}"
    "{% with y = x %}w{{ y }}{{ y }}{% endwith %}\n  {{ x }}\n"
)


@pytest.mark.parametrize("x", ["", "v", "<b>"])
def test_joined_outputs_render_as_jinja_does(x):
    import jinja2.sandbox

    plain = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(JOINED)
    ours = compile_template(JOINED, mode="stock", name="joined")
    assert render_stock(ours, {"x": x}, "joined") == plain.render(x=x)
