"""labelmask: exact training labels for chat and vision-language fine-tuning.

The data flow, one module per step (``_pipeline`` runs them; docs/how-it-works.md draws it)::

    messages --_messages--> template data                 (normalize)
             --_render-->   text + spans (_rendered)      (annotated template, or _derive's fallback)
             --_guard-->    control tokens kept, escaped or refused
             --_edit-->     EOS after replies (add_eos)
             --_policy-->   runs of text to train          (plan, before tokenizing)
             --_encode-->   ids + offsets                  (one fast-tokenizer call)
             --_align-->    where each run's tokens begin  (locate)
             --_policy-->   labels                         (label)
             --_result-->   MaskedConversation
"""

from labelmask._batch import mask_conversations
from labelmask._collate import Collator
from labelmask._datasets import MaskStats, mask_dataset
from labelmask._mask import MaskedConversation, MaskReport, mask_conversation
from labelmask._parts import Part, Role
from labelmask._policy import IGNORE_INDEX, Policy
from labelmask._preference import (
    MaskedPreference,
    PreferenceCollator,
    PreferenceReport,
    PreferenceStats,
    mask_preference,
    mask_preference_dataset,
    mask_unpaired,
)
from labelmask._registry import AnnotatedTemplate, register_template, template_hash, templates
from labelmask._render import RenderBudget
from labelmask._train import WeightedLoss, weighted_loss
from labelmask._turns import mask_turns
from labelmask._view import show
from labelmask.errors import (
    AnnotationError,
    ControlTokenError,
    ConversationError,
    FeatureError,
    LabelmaskError,
    MaskCheckError,
    NoEndOfTurnWarning,
    NothingToTrainError,
    NotRenderedError,
    NotRenderedWarning,
    OptionError,
    RenderBudgetError,
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
    "FeatureError",
    "LabelmaskError",
    "MaskCheckError",
    "MaskReport",
    "MaskStats",
    "MaskedConversation",
    "MaskedPreference",
    "NoEndOfTurnWarning",
    "NotRenderedError",
    "NotRenderedWarning",
    "NothingToTrainError",
    "OptionError",
    "Part",
    "Policy",
    "PreferenceCollator",
    "PreferenceReport",
    "PreferenceStats",
    "RenderBudget",
    "RenderBudgetError",
    "RenderParityError",
    "Role",
    "TemplateNotFoundError",
    "TemplateRaisedError",
    "TokenizerError",
    "TruncationError",
    "UnverifiedTemplateError",
    "WeightedLoss",
    "mask_conversation",
    "mask_conversations",
    "mask_dataset",
    "mask_preference",
    "mask_preference_dataset",
    "mask_turns",
    "mask_unpaired",
    "register_template",
    "show",
    "template_hash",
    "templates",
    "weighted_loss",
]

__version__ = "0.1.0"
