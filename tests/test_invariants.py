"""The invariants of DESIGN.md, property-tested on every annotated template.

The checks are ``labelmask.testing``'s (users run the same on their templates);
this file says, per template, what conversations it accepts and what end-of-turn
marker it writes. References come from outside labelmask: the stock template rendered and
tokenized by transformers' ``apply_chat_template``, and the generation prompt
it appends (``add_generation_prompt=True`` minus ``False``). Where a template
renders each prefix of the conversation as the start of the whole (every turn of
Llama 3, Gemma 3, LLaVA; most of Qwen3), the assistant region is also derived by
differential rendering and must equal labelmask's.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labelmask
from labelmask.testing import Expect
from labelmask.testing._checks import Sample, check_sample, labelmask_clock
from tests.fixtures import load_tokenizer
from tests.strategies import (
    GPT_OSS_KWARGS,
    cohere2_conversations,
    conversations,
    gpt_oss_conversations,
    json_arguments,
    mistral_conversations,
    reasoning_fields,
    without_placeholder_in_replies,
    without_tool_calls,
)


@dataclasses.dataclass(frozen=True)
class Case:
    strategy: st.SearchStrategy
    eot: str | None
    kwargs: st.SearchStrategy = st.just({})
    parts: bool = False  # the stock template reads only typed content parts
    template: str | None = None  # registered annotation expected, when not the case's own name
    trailer: str = ""  # text the stock template appends only when add_generation_prompt is false (Phi-3's eos)
    other_eots: tuple[str, ...] = ()  # other end-of-turn strings a reply may end with (Llama 3.1's <|eom_id|>)
    history_eots: tuple[str, ...] = ()  # what closes a history reply instead of the model's stop (gpt-oss's <|end|>)
    image_tokens: tuple[str, ...] = ()  # special tokens the template writes for image parts (never trained)
    # A revision of another case's template that differs in a few lines (Nemotron 3 Super is Nano plus one
    # flag): a quarter of the examples, so the suite stays within CI's budget as revisions are added.
    secondary: bool = False
    next_header_eots: tuple[tuple[str, str], ...] = ()  # (role, token): a reply ends with the next turn's header (GLM)
    final_eot: str = ""  # with next_header_eots: the stop labelmask writes after a last reply (GLM's <|user|>)
    policy: labelmask.Policy | None = None  # the policy masked with (None: the default)


# Llama 3.2 writes strftime_now() when no date_string is passed: labelmask freezes it,
# transformers does not, so every case passes a date. Tools go into the first user
# message by default, into the system block with tools_in_user_message=False.
LLAMA_TOOLS_KWARGS = st.sampled_from(
    [
        {"date_string": "26 Jul 2024"},
        {"date_string": "01 Jan 2026"},
        {"date_string": "26 Jul 2024", "tools_in_user_message": False},
        {"date_string": "01 Jan 2026", "tools_in_user_message": False},
    ]
)

# builtin_tools switches Llama 3.1 to ipython mode: a tool call ends with <|eom_id|>, and a
# call to a builtin tool is written <|python_tag|>name.call(arg="value"), from dict arguments.
LLAMA31_BUILTIN_KWARGS = st.sampled_from(
    [
        {"date_string": "26 Jul 2024", "builtin_tools": ["brave_search", "wolfram_alpha"]},
        {"date_string": "26 Jul 2024", "builtin_tools": ["get_weather", "code_interpreter"]},
        {
            "date_string": "01 Jan 2026",
            "builtin_tools": ["code_interpreter", "get_weather"],
            "tools_in_user_message": False,
        },
    ]
)

# Gemma 4: enable_thinking writes <|think|> into the system block (and, from the fifth revision on,
# opens the thought channel in the generation prompt after tool results).
GEMMA4_KWARGS = st.sampled_from([{}, {"enable_thinking": True}, {"enable_thinking": False}])
G4_MEDIA = ("user", "assistant")
G4_PARTS = ({"type": "image"}, {"type": "audio"}, {"type": "video"})
G4_V5_PARTS = (*G4_PARTS, {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}})
G4_PLACEHOLDERS = ("<|image|>", "<|audio|>", "<|video|>")
GEMMA4_V5_KWARGS = st.sampled_from(
    [
        {},
        {"enable_thinking": True},
        {"enable_thinking": False},
        {"preserve_thinking": True},
        {"enable_thinking": True, "preserve_thinking": True},
    ]
)


ALL_ROLES = ("system", "user", "assistant")
# Every part Qwen2.5-VL's template writes a placeholder for: typed images and videos, with or
# without a payload, and OpenAI-style image_url parts.
QWEN_VL_PARTS = (
    {"type": "image"},
    {"type": "image", "image": "file:///tmp/cat.png"},
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    {"type": "video"},
    {"type": "video", "video": "file:///tmp/clip.mp4"},
)


# What Nemotron 3's and Muse Glimmer's templates take: tool-call arguments as mappings (they iterate them).
NEMOTRON_CONVERSATIONS = conversations(tools=True, tool_role=True, reasoning=True, string_arguments=False)


# Nemotron 3: enable_thinking picks the generation prompt (<think>\n or <think></think>),
# truncate_history_thinking (default true) rewrites replies before the last user message;
# Super's low_effort and Ultra's medium_effort append a note to the last user message.
def nemotron_kwargs(*flags: str) -> st.SearchStrategy:
    names = ("enable_thinking", "truncate_history_thinking", *flags)
    return st.fixed_dictionaries({}, optional={name: st.booleans() for name in names})


NEMOTRON_KWARGS = nemotron_kwargs()

# Muse Glimmer writes strftime_now() without current_date: labelmask freezes it, transformers does
# not, so every case passes a date.
MUSE_GLIMMER_KWARGS = st.fixed_dictionaries(
    {"current_date": st.sampled_from(["2026-01-01", "2026-08-12"])},
    optional={
        "reasoning_strength": st.sampled_from(["low", "medium", "high", "xhigh"]),
        "knowledge_cutoff": st.just("2025-12-31"),
        "tool_namespace_descriptions": st.just({"get_weather": "Weather lookups"}),
    },
)

CASES = {
    "qwen3": Case(
        conversations(tools=True, tool_role=True, reasoning=True),
        "<|im_end|>",
        st.sampled_from([{}, {"enable_thinking": False}, {"enable_thinking": True}]),
    ),
    "qwen3-trl": Case(
        conversations(tools=True, tool_role=True, reasoning=True),
        "<|im_end|>",
        st.sampled_from([{}, {"enable_thinking": False}, {"enable_thinking": True}]),
    ),
    "qwen2.5": Case(conversations(tools=True, tool_role=True), "<|im_end|>"),
    "qwen3-instruct-2507": Case(conversations(tools=True, tool_role=True), "<|im_end|>"),
    "llama3": Case(conversations(), "<|eot_id|>"),
    "gemma3": Case(conversations(alternate=True), "<end_of_turn>"),
    "llava-1.5": Case(conversations(image_roles=ALL_ROLES), None, parts=True, image_tokens=("<image>",)),
    "phi3": Case(conversations(), "<|end|>", trailer="<|endoftext|>"),
    "phi3.5": Case(conversations(), "<|end|>", trailer="<|endoftext|>"),
    "gemma": Case(conversations(alternate=True, system=False), "<end_of_turn>"),
    "llama3.1": Case(
        conversations(tools=True, tool_role=True, max_tool_calls=1, tool_role_names=("tool", "ipython")),
        "<|eot_id|>",
        LLAMA_TOOLS_KWARGS,
    ),
    "llama3.1-builtin": Case(
        conversations(
            tools=True, tool_role=True, max_tool_calls=1, tool_role_names=("tool", "ipython"), string_arguments=False
        ),
        "<|eot_id|>",
        LLAMA31_BUILTIN_KWARGS,
        template="llama3.1",
        other_eots=("<|eom_id|>",),
    ),
    "llama3.2": Case(
        conversations(tools=True, tool_role=True, max_tool_calls=1, tool_role_names=("tool", "ipython")),
        "<|eot_id|>",
        LLAMA_TOOLS_KWARGS,
    ),
    "chatml": Case(conversations(), "<|im_end|>"),
    # Vision-language templates, text side: image parts in the roles each template writes them for.
    "qwen2.5-vl": Case(
        conversations(image_roles=ALL_ROLES, image_parts=QWEN_VL_PARTS),
        "<|im_end|>",
        st.sampled_from([{}, {"add_vision_id": True}]),
        image_tokens=("<|vision_start|>", "<|image_pad|>", "<|video_pad|>", "<|vision_end|>"),
    ),
    # LLaVA-NeXT writes images only for user messages; it reads a system or assistant message's first part only.
    "llava-next": Case(conversations(image_roles=("user",)), "</s>", parts=True, image_tokens=("<image>",)),
    "idefics3": Case(conversations(image_roles=ALL_ROLES), "<end_of_utterance>", parts=True, image_tokens=("<image>",)),
    "smolvlm": Case(conversations(image_roles=ALL_ROLES), "<end_of_utterance>", parts=True, image_tokens=("<image>",)),
    # Mistral (tokenizers and stock templates from mistral-common, see tests/fixtures): no generation
    # prompt, so every assistant header is empty; </s> ends each reply.
    "mistral-v1": Case(mistral_conversations(version="v1"), "</s>"),
    "mistral-v3": Case(mistral_conversations(version="v3", tools=True), "</s>"),
    "mistral-v7": Case(mistral_conversations(version="v7", tools=True), "</s>"),
    "mistral-v3-tekken": Case(mistral_conversations(version="v3-tekken", tools=True), "</s>"),
    # --- qwen3.5-3.8 and qwen3-vl: begin ---
    # Qwen3.5, 3.6, 3.8: tools (tool-call arguments are read with |items: dicts only), reasoning, image
    # and video parts in user, assistant and tool messages (a system message with an image raises);
    # each kwarg the templates read absent or drawn (preserve_thinking is read by 3.6 and 3.8 only,
    # reasoning_effort by 3.8 only: passed to the others, they raise OptionError, test_errors.py).
    **{
        name: Case(
            conversations(
                tools=True,
                tool_role=True,
                reasoning=True,
                string_arguments=False,
                image_roles=("user", "assistant", "tool"),
                image_parts=QWEN_VL_PARTS,
            ),
            "<|im_end|>",
            st.fixed_dictionaries(
                {},
                optional={
                    "enable_thinking": st.booleans(),
                    "add_vision_id": st.just(True),
                    **({"preserve_thinking": st.booleans()} if name in ("qwen3.6", "qwen3.8") else {}),
                    **({"reasoning_effort": st.sampled_from(["xhigh", "medium", "low"])} if name == "qwen3.8" else {}),
                },
            ),
            image_tokens=("<|vision_start|>", "<|image_pad|>", "<|video_pad|>", "<|vision_end|>"),
            secondary=name == "qwen3.5-nothink",  # Qwen3.5's template with another default
        )
        for name in ("qwen3.5", "qwen3.5-nothink", "qwen3.6", "qwen3.8")
    },
    # Qwen3-VL (Instruct, no thinking): image parts in every role; it writes placeholders for user
    # and tool messages and only the text parts of system and assistant messages.
    "qwen3-vl": Case(
        conversations(
            tools=True, tool_role=True, image_roles=("system", "user", "assistant", "tool"), image_parts=QWEN_VL_PARTS
        ),
        "<|im_end|>",
        st.sampled_from([{}, {"add_vision_id": True}]),
        image_tokens=("<|vision_start|>", "<|image_pad|>", "<|video_pad|>", "<|vision_end|>"),
    ),
    # --- qwen3.5-3.8 and qwen3-vl: end ---
    # --- gpt-oss (Harmony): begin ---
    # The model stops with <|return|> after its final message and <|call|> after a tool call
    # (generation_config eos_token_id; harmony docs/format.md). A final message in the history is
    # closed by <|end|> where the model wrote <|return|>: not its output, never trained.
    "gpt-oss": Case(
        gpt_oss_conversations(),
        "<|return|>",
        GPT_OSS_KWARGS,
        other_eots=("<|call|>",),
        history_eots=("<|end|>",),
    ),
    # --- gpt-oss (Harmony): end ---
    # --- glm-4.5 and deepseek v3/r1: begin ---
    # R1-Distill: reasoning in content is cut from history (only what follows </think> is written);
    # tool calls are never rendered (only for content None, a key transformers drops), tool results are.
    # R1's template writes a reply's tool calls only when its content is None, and a message whose
    # content is None reaches it without the key (as transformers passes it), which it cannot render:
    # it never writes tool calls, so none are drawn (the default refuses them: tests/test_dropped.py).
    "deepseek-r1-distill": Case(
        conversations(tools=True, tool_role=True, reasoning=True).map(without_tool_calls),
        "<｜end▁of▁sentence｜>",
    ),
    # DeepSeek-V3 concatenates tool-call arguments with text: JSON strings only.
    "deepseek-v3": Case(
        conversations(tools=True, tool_role=True, reasoning=True).map(json_arguments), "<｜end▁of▁sentence｜>"
    ),
    # GLM-4.5 stops by generating <|user|> or <|observation|> (generation_config eos_token_id), the
    # header token of the next user or tool turn: that token is a reply's end of turn. Tool-call
    # arguments must be mappings (the template iterates over their items).
    "glm-4.5": Case(
        conversations(tools=True, tool_role=True, reasoning=True, string_arguments=False),
        None,
        st.sampled_from([{}, {"enable_thinking": False}, {"enable_thinking": True}]),
        next_header_eots=(("user", "<|user|>"), ("tool", "<|observation|>")),
        final_eot="<|user|>",
        # Replies that write nothing but the empty think block, none followed by a stop token: nothing to train.
        policy=labelmask.Policy(on_empty="keep"),
    ),
    # --- glm-4.5 and deepseek v3/r1: end ---
    # --- nemotron 3 and muse-glimmer: begin ---
    # Nemotron 3: ChatML turns, <think> reasoning (an empty <think></think> inserted where a reply
    # carries none), Qwen3-Coder XML tool calls from dict arguments (the template iterates them).
    # A reply stops with <|im_end|>.
    "nemotron-3-nano": Case(
        NEMOTRON_CONVERSATIONS,
        "<|im_end|>",
        NEMOTRON_KWARGS,
    ),
    "nemotron-3-super": Case(
        NEMOTRON_CONVERSATIONS,
        "<|im_end|>",
        nemotron_kwargs("low_effort"),
        secondary=True,
    ),
    "nemotron-3-ultra": Case(
        NEMOTRON_CONVERSATIONS,
        "<|im_end|>",
        nemotron_kwargs("medium_effort"),
        secondary=True,
    ),
    "nemotron-3.5-lightning": Case(
        NEMOTRON_CONVERSATIONS,
        "<|im_end|>",
        NEMOTRON_KWARGS,
    ),
    # Muse Glimmer: channelled replies (reasoning to=self, ATEM tool calls from dict arguments,
    # which the template requires). <|eot|> stops a reply; <|eom|> ends one the next message continues.
    "muse-glimmer": Case(
        NEMOTRON_CONVERSATIONS,
        "<|eot|>",
        MUSE_GLIMMER_KWARGS,
        other_eots=("<|eom|>",),
    ),
    # --- nemotron 3 and muse-glimmer: end ---
    # --- gemma 4 and diffusion-gemma: begin ---
    # Gemma 4 ends a reply with <turn|> and stops after tool calls with <|tool_response> (both in its
    # generation config's eos_token_id); a reply with tool calls and results has one segment for each.
    # Media parts in user and assistant messages (and, from the fourth revision on, tool results).
    "gemma4": Case(
        conversations(tools=True, tool_role=True, reasoning=True, image_roles=G4_MEDIA, image_parts=G4_PARTS),
        "<turn|>",
        GEMMA4_KWARGS,
        other_eots=("<|tool_response>",),
        image_tokens=G4_PLACEHOLDERS,
    ),
    # The second revision writes each message as its own turn (tool results too) and no reasoning.
    "gemma4-v2": Case(
        conversations(tools=True, tool_role=True, image_roles=G4_MEDIA, image_parts=G4_PARTS),
        "<turn|>",
        GEMMA4_KWARGS,
        image_tokens=G4_PLACEHOLDERS,
    ),
    "gemma4-v3": Case(
        conversations(tools=True, tool_role=True, reasoning=True, image_roles=G4_MEDIA, image_parts=G4_PARTS),
        "<turn|>",
        GEMMA4_KWARGS,
        other_eots=("<|tool_response>",),
        image_tokens=G4_PLACEHOLDERS,
        secondary=True,  # Gemma 4's first template with a few lines changed
    ),
    "gemma4-v4": Case(
        conversations(
            tools=True, tool_role=True, reasoning=True, image_roles=(*G4_MEDIA, "tool"), image_parts=G4_PARTS
        ),
        "<turn|>",
        GEMMA4_KWARGS,
        other_eots=("<|tool_response>",),
        image_tokens=G4_PLACEHOLDERS,
        secondary=True,  # v3 plus media after tool results
    ),
    # The fifth revision refuses string arguments, reads preserve_thinking and image_url parts.
    **{
        name: Case(
            conversations(
                tools=True,
                tool_role=True,
                reasoning=True,
                string_arguments=False,
                image_roles=(*G4_MEDIA, "tool"),
                image_parts=G4_V5_PARTS,
            ),
            "<turn|>",
            GEMMA4_V5_KWARGS,
            other_eots=("<|tool_response>",),
            image_tokens=G4_PLACEHOLDERS,
        )
        for name in ("gemma4-v5", "diffusion-gemma")
    },
    # --- gemma 4 and diffusion-gemma: end ---
    # --- cohere: begin ---
    # Aya Expanse (Command R format): an optional leading system message, then strict user/assistant
    # alternation; no tools, no reasoning, no kwargs read. Tiny Aya (Command R7B/A format): alternation
    # with system messages anywhere (repeats of the first one skipped), no kwargs read; a reply ends
    # with <|END_RESPONSE|><|END_OF_TURN_TOKEN|> (both trained) and the model stops on <|END_OF_TURN_TOKEN|>.
    "aya-expanse": Case(conversations(alternate=True), "<|END_OF_TURN_TOKEN|>"),
    "tiny-aya": Case(cohere2_conversations(), "<|END_OF_TURN_TOKEN|>"),
    # --- cohere: end ---
    # --- lfm2: begin ---
    # LFM2 (Liquid AI): ChatML-like turns; a reply stops with <|im_end|> (its eos_token). The first
    # revision writes no tool calls (tool results and the tool list only).
    # The first revision writes no tool_calls field (LFM2 expects calls written into the content): none
    # are drawn (the default refuses such a reply: tests/test_dropped.py, tests/test_family_lfm2.py).
    "lfm2": Case(conversations(tools=True, tool_role=True).map(without_tool_calls), "<|im_end|>"),
    # The second revision writes tool calls, Pythonic, from mapping arguments only (strings raise).
    "lfm2-v2": Case(conversations(tools=True, tool_role=True, string_arguments=False), "<|im_end|>"),
    # LFM2.5: reasoning (<think>...</think>) from the message's reasoning field, under any of its names
    # (transformers aliases them to `thinking`, which the first revision reads), tool calls from mapping
    # arguments, image parts (<image>) in every role (the text model's template writes them too).
    **{
        name: Case(
            reasoning_fields(
                conversations(
                    tools=True,
                    tool_role=True,
                    reasoning=True,
                    string_arguments=False,
                    image_roles=("system", "user", "assistant", "tool"),
                )
            ).map(without_placeholder_in_replies("<image>", "<img>")),
            "<|im_end|>",
            st.fixed_dictionaries({}, optional={"preserve_thinking": st.booleans()}),
            # The image check counts <image> in a reply's content, but a reply before the last user
            # message loses what precedes </think>: reply look-alikes of <image> are scrubbed here
            # (lfm2.5-vl-lookalikes draws them, with the same cut).
            image_tokens=("<image>",),
        )
        for name in ("lfm2.5", "lfm2.5-v2")
    },
    # LFM2.5-VL, text side: as LFM2.5's second revision, with image parts (<image>) in every role. A
    # reply's own "<image>" look-alikes are drawn in the secondary case only, without the image check
    # (which counts them in content, while the template drops what precedes </think> in earlier replies).
    **{
        name: Case(
            reasoning_fields(
                conversations(
                    tools=True,
                    tool_role=True,
                    reasoning=True,
                    string_arguments=False,
                    image_roles=("system", "user", "assistant", "tool"),
                )
            ).map(without_placeholder_in_replies("<image>", "<img>") if checked else (lambda c: c)),
            "<|im_end|>",
            st.fixed_dictionaries({}, optional={"preserve_thinking": st.booleans()}),
            image_tokens=("<image>",) if checked else (),
            template="lfm2.5-vl",
            secondary=not checked,
        )
        for name, checked in (("lfm2.5-vl", True), ("lfm2.5-vl-lookalikes", False))
    },
    # --- lfm2: end ---
}
NAMES = sorted(CASES)


def expect(case: Case, name: str) -> Expect:
    return Expect(
        eot=case.eot,
        other_eots=case.other_eots,
        history_eots=case.history_eots,
        trailer=case.trailer,
        parts=case.parts,
        image_tokens=case.image_tokens,
        template=case.template or name,
        next_header_eots=case.next_header_eots,
        final_eot=case.final_eot,
    )


def draw_case(name, tokenizers, data) -> Sample:
    case = CASES[name]
    messages, tools = data.draw(case.strategy, label="conversation")
    kwargs = data.draw(case.kwargs, label="template kwargs")
    return Sample.mask(tokenizers[name], messages, tools, expect(case, name), policy=case.policy, **kwargs)


# The core engine's four templates draw the whole profile (200 in CI); every other
# template half of it (100 in CI), and secondary revisions an eighth (25 in CI; 250 under
# LABELMASK_HYPOTHESIS=thorough), which keeps the suite well under CI's time budget.
CORE = ("qwen3", "llama3", "gemma3", "llava-1.5")
SECONDARY = tuple(n for n in NAMES if CASES[n].secondary)


@pytest.mark.parametrize("name", CORE)
@given(data=st.data())
def test_invariants_core(name, tokenizers, data):
    """Every invariant on every drawn conversation (so each invariant sees every example)."""
    check_sample(draw_case(name, tokenizers, data))


@pytest.mark.parametrize("name", [n for n in NAMES if n not in CORE and n not in SECONDARY])
@settings(max_examples=max(1, settings.default.max_examples // 2))
@given(data=st.data())
def test_invariants(name, tokenizers, data):
    """Every invariant on every drawn conversation (so each invariant sees every example)."""
    check_sample(draw_case(name, tokenizers, data))


@pytest.mark.parametrize("name", SECONDARY)
@settings(max_examples=max(1, settings.default.max_examples // 8))
@given(data=st.data())
def test_invariants_secondary(name, tokenizers, data):
    """Every invariant on every drawn conversation, on a revision of another case's template."""
    check_sample(draw_case(name, tokenizers, data))


@pytest.mark.parametrize("name", [n for n in NAMES if not CASES[n].parts and n not in SECONDARY])
@settings(max_examples=max(1, settings.default.max_examples // 2))  # a render check only: 100 in CI
@given(data=st.data())
def test_typed_content_parts_render_or_fail_like_the_stock_template(name, tokenizers, data):
    """Content given as typed parts: where the stock template renders it, the text is
    the same; where it fails (Qwen3 concatenates content with strings), labelmask
    raises its own error instead of returning a render the stock template never makes."""
    case = CASES[name]
    messages, tools = data.draw(case.strategy, label="conversation")
    kwargs = data.draw(case.kwargs, label="template kwargs")
    as_parts = data.draw(st.lists(st.booleans(), min_size=len(messages), max_size=len(messages)), label="as parts")
    messages = [
        # Only text becomes a text part: content None (tool calls without text) stays None.
        {**m, "content": [{"type": "text", "text": m["content"]}]} if flag and isinstance(m.get("content"), str) else m
        for m, flag in zip(messages, as_parts)
    ]
    tokenizer = tokenizers[name]
    try:
        with labelmask_clock():  # gpt-oss writes today's date; labelmask renders at a fixed instant
            stock = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **kwargs)
    except Exception:
        stock = None
    if stock is None:
        with pytest.raises(labelmask.LabelmaskError):
            labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=ANY_OUTCOME, **kwargs)
    else:
        # add_eos=False: the stock render exactly (GLM-4.5's last reply is otherwise closed by labelmask).
        out = labelmask.mask_conversation(messages, tokenizer, tools=tools, policy=ANY_OUTCOME, add_eos=False, **kwargs)
        assert out.text == stock


ANY_OUTCOME = labelmask.Policy(on_empty="keep", on_dropped_tool_calls="train")


def test_chatml_matches_the_docs_string_as_python_evaluates_it(tokenizers):
    """The docs set ChatML from a Python string literal, in which each \\n inside a Jinja
    string is a real newline: the same template under another hash, matched too."""
    stock = tokenizers["chatml"].chat_template
    evaluated = stock.replace("\\n", "\n")
    assert evaluated != stock and "\\n" not in evaluated
    tokenizer = load_tokenizer("chatml")
    tokenizer.chat_template = evaluated
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi\n"},
        {"role": "assistant", "content": "Hello!"},
    ]
    out = labelmask.mask_conversation(messages, tokenizer, verify=True)
    assert out.report.template == "chatml"
    assert out.text == tokenizers["chatml"].apply_chat_template(messages, tokenize=False)
