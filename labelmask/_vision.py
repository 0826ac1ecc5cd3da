"""Stage 2 for vision-language processors: images, placeholder expansion, encoding.

A processor (``LlavaProcessor``, ``Qwen2VLProcessor``, ``Gemma3Processor``, ...)
turns each image placeholder the template wrote into the image's token run, whose
length depends on the image (LLaVA-NeXT's tiles, Qwen2-VL's grid). labelmask lets
the processor do exactly that, on the annotated render's text, and asks it where
each replacement went (``return_text_replacement_offsets``, as transformers' own
assistant mask does). The replacements become ``image`` segments, so every span
follows the expansion and no image token can be trained. The expanded text is
then encoded once with offsets, and the ids are checked against the processor's:
a sample whose ids differ is refused, never returned.

Images come as the processor's ``apply_chat_template`` takes them: in typed content
parts (``{"type": "image", "image": <PIL image | path | URL | array>}``, or under
``"url"``, ``"path"``, ``"base64"``), or as a separate ``images=`` list given to the
parts that carry none, in order. OpenAI-style ``image_url`` parts become image parts
with a ``url``, as the processor's ``apply_chat_template`` makes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from labelmask._edit import Edit, apply_edits
from labelmask._encode import Encoded, backend_of, encode
from labelmask._parts import Part
from labelmask._rendered import Rendered
from labelmask.errors import ConversationError, TokenizerError

__all__ = ["added_tokens", "attach_images", "collect_images", "expand", "is_processor", "openai_image_parts"]

IMAGE_KEYS = ("image", "url", "path", "base64")
_IMAGE_PART = int(Part.IMAGE)


def is_processor(obj: Any) -> bool:
    """Whether ``obj`` is a multimodal processor (a tokenizer plus an image processor)."""
    return not hasattr(obj, "backend_tokenizer") and hasattr(obj, "tokenizer") and hasattr(obj, "image_processor")


def _image_parts(messages: Sequence[Any]):
    """``(message index, part index, part)`` of every image part, in order."""
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, (list, tuple)):
            for j, part in enumerate(content):
                if isinstance(part, Mapping) and part.get("type") == "image":
                    yield i, j, part


def openai_image_parts(messages: Any) -> Any:
    """``messages`` with OpenAI-style ``{"type": "image_url", "image_url": {"url": u}}`` parts as
    ``{"type": "image", "url": u}``, as a processor's ``apply_chat_template`` converts them."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        return messages
    out = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, (list, tuple)) and any(
            isinstance(p, Mapping) and p.get("type") == "image_url" and "image_url" in p for p in content
        ):
            parts = []
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "image_url" and "image_url" in part:
                    info = part["image_url"]
                    part = {"type": "image", "url": info.get("url", "") if isinstance(info, Mapping) else info}
                parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    return out


def attach_images(messages: Any, images: Any) -> list:
    """``messages`` with the images of ``images`` put into the image parts that carry none, in order.

    Raises:
        ConversationError: ``images`` is not a list, or its length differs from the
            number of image parts without an image.
    """
    if isinstance(images, (str, bytes, Mapping)) or not isinstance(images, Sequence):
        images = [images]  # one image, as processors accept it
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        return messages  # normalize_conversation says what is wrong
    empty = [(i, j) for i, j, part in _image_parts(messages) if not any(k in part for k in IMAGE_KEYS)]
    if len(empty) != len(images):
        where = ", ".join(f"message {i} part {j}" for i, j in empty[:6]) or "none"
        msg = (
            f"images= holds {len(images)} image(s) but the conversation has {len(empty)} image part(s) without an "
            f"image ({where}). Give exactly one image per {{'type': 'image'}} part that carries none, or put each "
            "image in its part under 'image'."
        )
        raise ConversationError(msg, message_index=empty[len(images)][0] if len(empty) > len(images) else None)
    out = list(messages)
    for (i, j), image in zip(empty, images):
        content = list(out[i]["content"])
        content[j] = {**content[j], "image": image}
        out[i] = {**out[i], "content": content}
    return out


def collect_images(messages: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """The image of every image part, in order, and the index of its message.

    Raises:
        ConversationError: an image part carries no image.
    """
    images, owners = [], []
    for i, j, part in _image_parts(messages):
        found = [part[k] for k in IMAGE_KEYS if k in part]
        if not found:
            msg = (
                f"Message {i}: image part {j} carries no image. Put the image (a PIL image, path, URL or array) "
                "under 'image', or pass the images in order with images=[...]."
            )
            raise ConversationError(msg, message_index=i)
        images.extend(found)
        owners.extend([i] * len(found))
    return images, owners


def _occurrences(text: str, token: str) -> list[int]:
    found, at = [], text.find(token)
    while at >= 0:
        found.append(at)
        at = text.find(token, at + len(token))
    return found


def expand(
    processor: Any,
    rendered: Rendered,
    images: list[Any],
    owners: list[int],
    *,
    name: str,
    annotated: bool,
    processor_kwargs: dict[str, Any],
) -> tuple[Rendered, Encoded, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run the processor on the rendered text and images; encode the expanded text.

    Returns:
        ``(expanded render, encoding, token-aligned outputs, other outputs)``: the
        token-aligned ones (``token_type_ids``, ``mm_token_type_ids``) have one value
        per token; the others (``pixel_values``, ``image_sizes``, ``image_grid_thw``,
        ...) are per image, as the processor returns them for one sample.

    Raises:
        ConversationError: placeholders and images do not pair up, a message's text
            writes the placeholder itself, a video, or the processor rejects the sample.
        TokenizerError: the processor's ids differ from the offsets encoding.
    """
    text = rendered.text
    placeholder = getattr(processor, "image_token", None)
    if placeholder is None:
        raise TokenizerError(f"{type(processor).__name__} has no image_token; labelmask cannot place its images.")
    video = getattr(processor, "video_token", None)
    if video and video in text:
        at = text.index(video)
        message = int(rendered.seg_message[np.searchsorted(rendered.seg_start, at, side="right") - 1])
        msg = f"Message {message}: videos are not supported yet (template {name!r} wrote {video!r}); drop the video."
        raise ConversationError(msg, message_index=message if message >= 0 else None, template=name)
    positions = _occurrences(text, placeholder)
    segment = np.searchsorted(rendered.seg_start, positions, side="right") - 1
    if annotated:
        for k in segment.tolist():
            if int(rendered.seg_part[k]) != _IMAGE_PART:
                message = int(rendered.seg_message[k])
                msg = (
                    f"Message {message}: its text contains the image placeholder {placeholder!r}, which the "
                    f"processor would expand into image tokens (template {name!r}). Put images in typed parts "
                    "({'type': 'image', 'image': ...}) and remove the placeholder from the text."
                )
                raise ConversationError(msg, message_index=message if message >= 0 else None, template=name)
    if len(positions) != len(images):
        msg = (
            f"Template {name!r} wrote {len(positions)} image placeholder(s) {placeholder!r} for this conversation, "
            f"but it carries {len(images)} image(s) (messages {sorted(set(owners))}). Each image part needs one "
            "image and each image one part."
        )
        raise ConversationError(msg, template=name)
    tokenizer = processor.tokenizer
    bos = tokenizer.bos_token
    # As the processor's apply_chat_template: special tokens are added unless the render starts with BOS.
    add_special = not (bos is not None and text.startswith(bos))
    try:
        out = processor(
            text=[text],
            images=images or None,
            return_text_replacement_offsets=True,
            add_special_tokens=add_special,
            return_tensors="np",
            **processor_kwargs,
        )
    except Exception as exc:  # images that fail to load, sizes the image processor refuses
        message = owners[0] if len(owners) == 1 else None
        msg = f"{type(processor).__name__} rejected this sample (template {name!r}): {type(exc).__name__}: {exc}"
        raise ConversationError(msg, message_index=message, template=name) from exc
    out = dict(out)
    replacements = out.pop("text_replacement_offsets", [[]])[0]
    edits = [
        Edit(r["span"][0], r["span"][1], r["replacement"], _IMAGE_PART) for r in replacements if r["type"] == "image"
    ]
    if [e.start for e in edits] != positions:
        raise TokenizerError(
            f"{type(processor).__name__} replaced image placeholders at {[e.start for e in edits]}, not where "
            f"template {name!r} wrote them ({positions}); labelmask cannot place the image tokens."
        )
    expanded = apply_edits(rendered, edits, name=name)
    ids = np.asarray(out.pop("input_ids"))[0].astype(np.int64)
    out.pop("attention_mask", None)
    encoded = encode(backend_of(tokenizer), expanded.text, add_special_tokens=add_special)
    if not np.array_equal(encoded.ids, ids):
        k = int(np.flatnonzero(np.resize(encoded.ids, len(ids)) != ids)[0]) if len(ids) else 0
        raise TokenizerError(
            f"The processor's input_ids differ from labelmask's encoding of the same expanded text at token {k} "
            f"(template {name!r}); labelmask refuses the sample rather than guess. Report it with the processor."
        )
    _refuse_written_feature_tokens(processor, expanded, encoded, name)
    per_token, per_image = {}, {}
    for key, value in out.items():
        array = np.asarray(value)
        if array.ndim == 2 and array.shape == (1, len(ids)):
            per_token[key] = array[0].astype(np.int64)
        else:
            per_image[key] = array
    return expanded, encoded, per_token, per_image


def _feature_token_ids(processor: Any) -> list[int]:
    """Ids of the tokens the model fills with image or video features (Gemma 3's ``<image_soft_token>``,
    Qwen2-VL's ``<|image_pad|>``, LLaVA's ``<image>``): their count must equal the features'."""
    tokenizer = processor.tokenizer
    ids = set()
    for owner in (processor, tokenizer):
        for attr in ("image_token_id", "video_token_id"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and value >= 0:
                ids.add(value)
    for attr in ("image_token", "video_token"):
        token = getattr(processor, attr, None)
        if isinstance(token, str) and token:
            value = tokenizer.convert_tokens_to_ids(token)
            if isinstance(value, int) and value != tokenizer.unk_token_id:
                ids.add(value)
    return sorted(ids)


def _refuse_written_feature_tokens(processor: Any, expanded: Rendered, encoded: Encoded, name: str) -> None:
    """Refuse an image-feature token outside the processor's expansions: the data wrote it (``"x<image_soft_token>"``
    in a user's text), and the model would get one image token more than the image has features."""
    at = np.flatnonzero(np.isin(encoded.ids, _feature_token_ids(processor)))
    if not at.size:
        return
    starts = np.asarray(encoded.encoding.offsets, dtype=np.int64)[at, 0]
    segment = np.searchsorted(expanded.seg_start, starts, side="right") - 1
    outside = np.flatnonzero(expanded.seg_part[segment] != _IMAGE_PART)
    if not outside.size:
        return
    k = int(segment[outside[0]])
    message = int(expanded.seg_message[k])
    token = encoded.encoding.tokens[int(at[outside[0]])]
    msg = (
        f"Message {message}: its text writes {token!r}, the token the model fills with image features "
        f"(template {name!r}); the model would get more image tokens than the images have features. Remove it "
        "from the text (images go in typed parts: {'type': 'image', 'image': ...})."
    )
    raise ConversationError(msg, message_index=message if message >= 0 else None, template=name)


def added_tokens(encoded: Encoded) -> np.ndarray:
    """Positions of the tokens the tokenizer's post-processor added (a BOS): they cover no character."""
    mask = np.asarray(encoded.encoding.special_tokens_mask, dtype=bool)
    if not mask.any():
        return np.zeros(0, dtype=np.int64)
    offsets = np.asarray(encoded.encoding.offsets, dtype=np.int64)
    return np.flatnonzero(mask & (offsets[:, 0] == offsets[:, 1]))
