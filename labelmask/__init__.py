"""labelmask: exact training labels for chat and vision-language fine-tuning.

The data flow, one module per stage::

    messages --_messages--> template data
             --_render-->   text + character spans   (annotated template, checked against the stock one)
             --_encode-->   ids + offsets            (one fast-tokenizer call)
             --_align-->    token provenance         (numpy prefix sums)
             --_policy-->   labels
"""

from labelmask._batch import mask_conversations
from labelmask._collate import Collator
from labelmask._datasets import MaskStats, mask_dataset
from labelmask._mask import MaskedConversation, MaskReport, mask_conversation
from labelmask._parts import Part, Role
from labelmask._policy import IGNORE_INDEX, Policy
from labelmask._registry import AnnotatedTemplate, register_template, template_hash, templates
from labelmask._turns import mask_turns
from labelmask.errors import (
    AnnotationError,
    ControlTokenError,
    ConversationError,
    LabelmaskError,
    MaskCheckError,
    NoEndOfTurnWarning,
    NothingToTrainError,
    OptionError,
    RenderParityError,
    TemplateNotFoundError,
    TemplateRaisedError,
    TokenizerError,
    TruncationError,
    UnverifiedTemplateError,
)

__all__ = [
    "IGNORE_INDEX",
    "AnnotatedTemplate",
    "AnnotationError",
    "Collator",
    "ControlTokenError",
    "ConversationError",
    "LabelmaskError",
    "MaskCheckError",
    "MaskReport",
    "MaskStats",
    "MaskedConversation",
    "NoEndOfTurnWarning",
    "NothingToTrainError",
    "OptionError",
    "Part",
    "Policy",
    "RenderParityError",
    "Role",
    "TemplateNotFoundError",
    "TemplateRaisedError",
    "TokenizerError",
    "TruncationError",
    "UnverifiedTemplateError",
    "mask_conversation",
    "mask_conversations",
    "mask_dataset",
    "mask_turns",
    "register_template",
    "template_hash",
    "templates",
]

__version__ = "0.1.0"
