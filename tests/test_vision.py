"""Vision-language processors: LLaVA-1.5, LLaVA-NeXT, Qwen2.5-VL, Gemma 3.

Real transformers processors (tests/fixtures ``load_processor``), real images drawn
with PIL at random sizes, conversations from the shared strategies. References come
from the processor itself: ``processor.apply_chat_template(..., tokenize=True,
return_dict=True)`` for the ids and every other output, and the processor's own
image token ids for what must never be trained.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import labelmask
from labelmask import IGNORE_INDEX, Part
from labelmask.errors import ConversationError, NoEndOfTurnWarning, TruncationError
from labelmask.testing import Expect
from labelmask.testing._checks import (
    Sample,
    check_completeness,
    check_end_of_turn_is_trained,
    check_soundness,
)
from tests.fixtures import PROCESSORS, load_processor
from tests.strategies import conversations


@dataclasses.dataclass(frozen=True)
class VisionCase:
    strategy: st.SearchStrategy
    eot: str | None  # the end-of-turn string the template writes after a reply
    image_tokens: tuple[str, ...]  # every token the processor writes for an image
    sizes: tuple[int, int]  # smallest and largest image side drawn
    max_ratio: float  # largest aspect ratio drawn
    parts: bool = False  # the stock template reads only typed content parts


IMAGE_ONLY = ({"type": "image"},)
CASES = {
    # LLaVA-1.5 writes every image of a message first, whatever its role.
    "llava-1.5": VisionCase(
        conversations(image_roles=("system", "user", "assistant"), max_turns=6),
        None,
        ("<image>",),
        (8, 700),
        4.0,
        parts=True,
    ),
    # LLaVA-NeXT writes images for user messages only; AnyRes tiles depend on the size.
    "llava-next": VisionCase(
        conversations(image_roles=("user",), max_turns=6), "</s>", ("<image>",), (8, 900), 4.0, parts=True
    ),
    "qwen2.5-vl": VisionCase(
        conversations(image_roles=("system", "user", "assistant"), max_turns=6),
        "<|im_end|>",
        ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>"),
        (28, 400),
        4.0,
    ),
    # Gemma 3 alternates user and model turns and writes images in both.
    "gemma3": VisionCase(
        conversations(alternate=True, image_roles=("user", "assistant"), max_turns=6),
        "<end_of_turn>",
        ("<start_of_image>", "<image_soft_token>", "<end_of_image>"),
        (8, 1200),
        6.0,
    ),
}


@pytest.fixture(scope="module")
def processors():
    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = load_processor(name)
        return loaded[name]

    return get


@st.composite
def images(draw, case: VisionCase):
    """An RGB image of random size (within the case's bounds) and random pixels."""
    lo, hi = case.sizes
    width = draw(st.integers(lo, hi), label="width")
    ratio = draw(st.floats(1.0, case.max_ratio), label="aspect ratio")
    height = max(lo, min(hi, int(width / ratio) if draw(st.booleans()) else int(width * ratio)))
    seed = draw(st.integers(0, 2**32 - 1), label="pixel seed")
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def with_images(messages: list[dict], pictures: list) -> list[dict]:
    """The messages with each image part given an image, in order (as a user would pass them)."""
    it = iter(pictures)
    out = []
    for m in messages:
        if isinstance(m.get("content"), list):
            m = {**m, "content": [{**p, "image": next(it)} if p["type"] == "image" else p for p in m["content"]]}
        out.append(m)
    return out


def n_image_parts(messages: list[dict]) -> int:
    return sum(1 for m in messages if isinstance(m.get("content"), list) for p in m["content"] if p["type"] == "image")


def texts_of(messages: list[dict]):
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            yield from (p["text"] for p in content if p["type"] == "text")


def image_token_ids(processor, case: VisionCase) -> np.ndarray:
    ids = processor.tokenizer.convert_tokens_to_ids(list(case.image_tokens))
    assert processor.tokenizer.unk_token_id not in ids
    return np.array(ids)


def stock_input(case: VisionCase, messages: list[dict]) -> list[dict]:
    """What the stock template is given: for LLaVA's templates, which read only typed parts (and
    silently drop a string's text), string content as one text part, as labelmask passes it."""
    if not case.parts:
        return messages
    return [
        {**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m["content"], str) else m
        for m in messages
    ]


def reference(processor, case: VisionCase, messages: list[dict]) -> dict:
    """The processor's own output for the stock template and the same images."""
    messages = stock_input(case, messages)
    if all(m.get("content") != "" for m in messages):
        out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="np")
    else:
        # transformers 5.24's tokenize=True turns "" content into [] before rendering (Gemma 3's template
        # then fails on a system prompt's [0]): render the stock text, then call the processor, as it does.
        text = processor.apply_chat_template(messages, tokenize=False)
        pictures = [
            p["image"] for m in messages if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image"
        ]
        bos = processor.tokenizer.bos_token
        out = processor(
            text=[text],
            images=pictures or None,
            add_special_tokens=not (bos and text.startswith(bos)),
            return_tensors="np",
        )
    return {k: np.asarray(v) for k, v in out.items()}


def check_against_processor(processor, case: VisionCase, messages: list[dict], out) -> None:
    ref = reference(processor, case, messages)
    ids, labels = out["input_ids"], out["labels"]
    # Token parity: the processor's input_ids, and every other output of the processor.
    assert ids.tolist() == ref["input_ids"][0].tolist(), "input_ids differ from the processor's"
    for key, value in ref.items():
        if key in ("input_ids", "attention_mask"):
            continue
        mine = np.asarray(out[key])
        theirs = value[0] if mine.shape == value.shape[1:] and value.shape[0] == 1 else value
        assert mine.shape == theirs.shape and np.array_equal(mine, theirs), f"{key} differs from the processor's"
    # No image or image-structure token is ever trained.
    image_ids = image_token_ids(processor, case)
    assert not ((labels != IGNORE_INDEX) & np.isin(ids, image_ids)).any(), "an image token is trained"
    assert not ((labels != IGNORE_INDEX) & (out["part"] == int(Part.IMAGE))).any()
    # Every image token the processor wrote is marked as an image part of some message.
    assert (out["part"][np.isin(ids, image_ids)] == int(Part.IMAGE)).all()
    assert out.report.n_images == n_image_parts(messages)


def check_labels(processor, case: VisionCase, messages: list[dict], out, eot: str | None) -> None:
    sample = Sample(processor.tokenizer, messages, None, {}, out, Expect(eot=eot, parts=True))
    check_soundness(sample)
    check_completeness(sample)
    check_end_of_turn_is_trained(sample)


def draw_sample(name: str, data) -> tuple[VisionCase, list[dict]]:
    case = CASES[name]
    messages, _ = data.draw(case.strategy, label="conversation")
    pictures = [data.draw(images(case), label=f"image {i}") for i in range(n_image_parts(messages))]
    return case, with_images(messages, pictures)


def mask_or_refuse(processor, case: VisionCase, messages: list[dict], **kwargs):
    """The masked sample, or None where a text writes the image placeholder itself (which must raise)."""
    placeholder = processor.image_token
    if any(placeholder in t for t in texts_of(messages)):
        with pytest.raises(ConversationError, match="image placeholder"):
            labelmask.mask_conversation(messages, processor, return_tensors="np", **kwargs)
        return None
    return labelmask.mask_conversation(messages, processor, return_tensors="np", **kwargs)


@pytest.mark.parametrize("name", PROCESSORS)
@settings(max_examples=max(1, settings.default.max_examples // 8))
@given(data=st.data())
def test_processor_invariants(name, processors, data):
    """Token parity with the processor, image tokens never trained, every reply character
    trained, end of turn trained where the template writes one."""
    processor = processors(name)
    case, messages = draw_sample(name, data)
    out = mask_or_refuse(processor, case, messages)
    if out is not None:
        check_against_processor(processor, case, messages, out)
        check_labels(processor, case, messages, out, case.eot)


@settings(max_examples=max(1, settings.default.max_examples // 8))
@given(data=st.data())
def test_llava_add_eos_trains_an_eos_after_every_reply(processors, data):
    """LLaVA-1.5 writes no end of turn; add_eos=True writes </s> after each reply and trains it,
    and removing those EOS tokens gives back the processor's ids wherever the EOS tokenizes alone."""
    processor = processors("llava-1.5")
    case, messages = draw_sample("llava-1.5", data)
    out = mask_or_refuse(processor, case, messages, add_eos=True)
    if out is None:
        return
    n_replies = sum(1 for m in messages if m["role"] == "assistant")
    eos_id = processor.tokenizer.eos_token_id
    added = [s for s in out.spans if s.kind == "eot"]
    assert out.report.n_eos_added == n_replies == len(added)
    ids, labels = out["input_ids"], out["labels"]
    for span in added:
        t = int(np.searchsorted(out.offsets[:, 0], span.start))
        assert ids[t] == eos_id and labels[t] == eos_id, "the EOS after a reply is not trained"
        assert out["message_index"][t] == span.message
    check_labels(processor, case, messages, out, "</s>")
    image_ids = image_token_ids(processor, case)
    assert not ((labels != IGNORE_INDEX) & np.isin(ids, image_ids)).any()


def test_llava_without_eos_warns_once_naming_the_template(processors, monkeypatch):
    import labelmask._pipeline as pipeline

    monkeypatch.setattr(pipeline, "_WARNED_NO_EOT", set())
    processor = processors("llava-1.5")
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    ]
    picture = Image.new("RGB", (40, 30), (200, 10, 10))
    with pytest.warns(NoEndOfTurnWarning, match="'llava-1.5'.*add_eos=True"):
        labelmask.mask_conversation(messages, processor, images=[picture])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for the same template
        labelmask.mask_conversation(messages, processor, images=[picture])
        labelmask.mask_conversation(messages, processor, images=[picture], add_eos=True)


TWO_TURNS = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And now?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A blue one."}]},
]
PICTURES = [Image.new("RGB", (64, 48), (220, 20, 20)), Image.new("RGB", (120, 50), (20, 20, 220))]


@pytest.mark.parametrize("name", PROCESSORS)
def test_images_given_separately_equal_images_in_parts(name, processors):
    processor = processors(name)
    separate = labelmask.mask_conversation(TWO_TURNS, processor, images=PICTURES, return_tensors="np")
    inline = labelmask.mask_conversation(with_images(TWO_TURNS, PICTURES), processor, return_tensors="np")
    assert sorted(separate) == sorted(inline)
    for key in separate:
        assert np.array_equal(separate[key], inline[key]), key
    check_against_processor(processor, CASES[name], with_images(TWO_TURNS, PICTURES), separate)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        ([PICTURES[0]], "images= holds 1 image"),
        ([*PICTURES, PICTURES[0]], "images= holds 3 image"),
    ],
)
def test_image_count_mismatch_names_the_fix(processors, images, match):
    with pytest.raises(ConversationError, match=match):
        labelmask.mask_conversation(TWO_TURNS, processors("qwen2.5-vl"), images=images)


def test_image_part_without_image_is_refused(processors):
    with pytest.raises(ConversationError, match=r"Message 0: image part 0 carries no image"):
        labelmask.mask_conversation(TWO_TURNS, processors("llava-1.5"))


def test_images_need_a_processor(processors):
    with pytest.raises(ConversationError, match="needs a multimodal processor"):
        labelmask.mask_conversation(TWO_TURNS, processors("llava-1.5").tokenizer, images=PICTURES)


@pytest.mark.parametrize("name", ["llava-1.5", "qwen2.5-vl"])
def test_truncation_never_cuts_an_image(name, processors):
    processor = processors(name)
    full = labelmask.mask_conversation(TWO_TURNS, processor, images=PICTURES, return_tensors="np")
    image_positions = np.flatnonzero(full["part"] == int(Part.IMAGE))
    second = image_positions[full["message_index"][image_positions] == 2]
    # Right truncation ending inside the second image's run: refused, naming message 2.
    with pytest.raises(TruncationError, match="image tokens of message 2") as info:
        labelmask.mask_conversation(
            TWO_TURNS, processor, images=PICTURES, max_length=int(second[len(second) // 2]), truncation="right"
        )
    assert info.value.message_index == 2
    # Left truncation that would drop the first image: refused too.
    with pytest.raises(TruncationError, match="image tokens of message 0"):
        labelmask.mask_conversation(
            TWO_TURNS, processor, images=PICTURES, max_length=len(second) + 20, truncation="left"
        )
    # "turns" drops the first exchange with its image: exactly the processor's output for the rest.
    short = labelmask.mask_conversation(
        TWO_TURNS,
        processor,
        images=PICTURES,
        max_length=full.report.n_tokens - 1,
        truncation="turns",
        return_tensors="np",
    )
    assert short.report.n_dropped_messages == 2 and short.report.n_images == 1
    check_against_processor(processor, CASES[name], with_images(TWO_TURNS, PICTURES)[2:], short)
    # Right truncation after the last image keeps every image whole (the first reply is trained).
    end = int(image_positions[-1]) + 2
    cut = labelmask.mask_conversation(
        TWO_TURNS, processor, images=PICTURES, max_length=end, truncation="right", return_tensors="np"
    )
    assert np.array_equal(cut["pixel_values"], full["pixel_values"])
    assert np.array_equal(cut["input_ids"], full["input_ids"][:end])
    assert cut.report.n_cut == full.report.n_tokens - end


@pytest.mark.parametrize("name", PROCESSORS)
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_collated_batch_matches_the_processor_batch(name, padding_side, processors):
    """A batch of two raw conversations: each row equals the single sample, the vision tensors
    equal what the processor returns for the same two texts and images, no image token trained."""
    processor = processors(name)
    first = with_images(TWO_TURNS, PICTURES)
    second = with_images(TWO_TURNS[:2], [Image.new("RGB", (300, 90), (10, 200, 10))])
    collator = labelmask.Collator(processor, padding_side=padding_side, return_tensors="np")
    batch = collator([{"messages": first}, {"messages": second}])
    singles = [labelmask.mask_conversation(m, processor, return_tensors="np") for m in (first, second)]
    for row, single in enumerate(singles):
        n = len(single["input_ids"])
        cols = slice(-n, None) if padding_side == "left" else slice(0, n)
        assert np.array_equal(batch["input_ids"][row, cols], single["input_ids"])
        assert np.array_equal(batch["labels"][row, cols], single["labels"])
        assert batch["attention_mask"][row].sum() == n
    image_ids = image_token_ids(processor, CASES[name])
    assert not ((batch["labels"] != IGNORE_INDEX) & np.isin(batch["input_ids"], image_ids)).any()
    texts = [processor.apply_chat_template(m) for m in (first, second)]
    nested = [PICTURES, [second[0]["content"][0]["image"]]]
    processor.tokenizer.padding_side = padding_side
    # As the processor's apply_chat_template: no added BOS where the template writes one (Gemma 3).
    bos = processor.tokenizer.bos_token
    add_special = not (bos and texts[0].startswith(bos))
    ref = processor(text=texts, images=nested, padding=True, add_special_tokens=add_special, return_tensors="np")
    for key in singles[0]._extras:
        assert np.array_equal(batch[key], np.asarray(ref[key])), f"{key} differs from the processor's batch"
    for key in ("token_type_ids", "mm_token_type_ids"):
        if key in singles[0]:
            mine = batch[key]
            assert np.array_equal(mine * batch["attention_mask"], np.asarray(ref[key]) * batch["attention_mask"])


def test_collator_refuses_packing_images(processors):
    collator = labelmask.Collator(processors("qwen2.5-vl"), packing=True, return_tensors="np")
    with pytest.raises(ValueError, match="packing=True with image inputs"):
        collator([{"messages": with_images(TWO_TURNS, PICTURES)}])


def test_mask_dataset_refuses_a_processor_rather_than_lose_the_pixels(processors):
    import datasets

    rows = datasets.Dataset.from_list([{"messages": TWO_TURNS}])
    with pytest.raises(TypeError, match=r"Collator\(processor\)"):
        labelmask.mask_dataset(rows, processors("llava-1.5"))


def test_mask_turns_gives_each_example_its_own_images(processors):
    processor = processors("qwen2.5-vl")
    examples = labelmask.mask_turns(TWO_TURNS, processor, images=PICTURES, return_tensors="np")
    assert [e.report.n_images for e in examples] == [1, 2]
    for k, example in enumerate(examples):
        check_against_processor(processor, CASES["qwen2.5-vl"], with_images(TWO_TURNS, PICTURES)[: 2 * k + 2], example)
        trained = processor.tokenizer.decode(example["input_ids"][example["labels"] != IGNORE_INDEX])
        assert trained == ["A red square.<|im_end|>", "A blue one.<|im_end|>"][k]


@pytest.mark.parametrize("name", ["gemma3", "qwen2.5-vl", "llava-1.5"])
@pytest.mark.parametrize("role", ["user", "assistant"])
def test_an_image_feature_token_the_text_writes_is_refused(processors, name, role):
    # Issue 19, item 3. On f01e381, Gemma 3 with "x<image_soft_token>" in a user's text and one image
    # returned 257 image tokens for a 256-token image, without an error (the model's forward then fails
    # or pairs features with the wrong tokens). The template writes <start_of_image>, which labelmask
    # checked; the soft token, which the processor writes, was not.
    processor = processors(name)
    # The token the model fills with features: Gemma 3's tokenizer names it (<image_soft_token>); for
    # Qwen2.5-VL and LLaVA it is the processor's placeholder itself, which the template writes.
    soft = getattr(processor.tokenizer, "image_token", None) or processor.image_token
    feature_id = processor.tokenizer.convert_tokens_to_ids(soft)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
    ]
    clean = labelmask.mask_conversation(messages, processor, images=PICTURES[:1], return_tensors="np")
    n_features = int(np.count_nonzero(clean["input_ids"] == feature_id))
    assert n_features > 1  # the image's own expansion
    at = 0 if role == "user" else 1
    messages[at]["content"][-1]["text"] = f"x{soft}"
    refused = f"Message {at}: its text (writes {soft!r}|contains the image placeholder {soft!r})"
    with pytest.raises(labelmask.ConversationError, match=refused) as info:
        labelmask.mask_conversation(messages, processor, images=PICTURES[:1], control_tokens="keep")
    assert info.value.message_index == at and info.value.template is not None
