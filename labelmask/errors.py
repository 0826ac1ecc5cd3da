"""The exceptions labelmask raises.

Every error labelmask raises on purpose derives from :class:`LabelmaskError`, and
also from the builtin that fits it, so ``except ValueError`` keeps working for
callers that do not know labelmask::

    LabelmaskError(Exception)
    ├── OptionError(LabelmaskError, ValueError, TypeError)  an argument of a labelmask function is wrong
    ├── ConversationError(LabelmaskError, ValueError)       the messages are malformed
    │   └── ControlTokenError                                ... or write control tokens (control_tokens="raise")
    ├── TemplateNotFoundError(LabelmaskError, LookupError)   no annotation for this chat template
    │   └── UnverifiedTemplateError                          ... and spans derived without one fail their checks
    ├── TemplateRaisedError(LabelmaskError, ValueError)      the chat template itself rejected the input
    ├── RenderBudgetError(LabelmaskError, RuntimeError)      a render ran too long or wrote too much
    ├── AnnotationError(LabelmaskError, ValueError)          an annotated template is broken
    │   └── RenderParityError                                annotated render != stock render
    ├── TokenizerError(LabelmaskError, TypeError)            the tokenizer cannot give offsets
    ├── NothingToTrainError(LabelmaskError, ValueError)      the policy trains no token
    ├── NotRenderedError(LabelmaskError, ValueError)         the template drops what a trained reply carries
    ├── TruncationError(LabelmaskError, ValueError)          the sample cannot be cut to max_length as asked
    ├── FeatureError(LabelmaskError, ValueError, KeyError, TypeError)  a Collator feature labelmask did not make
    └── MaskCheckError(LabelmaskError, RuntimeError)         the fail-closed check refused the labels

    NoEndOfTurnWarning(UserWarning)                          the template writes no end of turn after replies
    NotRenderedWarning(UserWarning)                          the template drops a field messages carry

Errors carry their context as attributes (``message_index``, ``template``,
``span``) as well as in the message, so a data pipeline can log or count them.
"""

from __future__ import annotations

__all__ = [
    "AnnotationError",
    "ControlTokenError",
    "ConversationError",
    "FeatureError",
    "LabelmaskError",
    "NoEndOfTurnWarning",
    "MaskCheckError",
    "NotRenderedError",
    "NotRenderedWarning",
    "NothingToTrainError",
    "OptionError",
    "RenderBudgetError",
    "RenderParityError",
    "TemplateNotFoundError",
    "TemplateRaisedError",
    "TokenizerError",
    "TruncationError",
    "UnverifiedTemplateError",
]


class LabelmaskError(Exception):
    """Root of every error labelmask raises on purpose.

    Attributes:
        message_index: Index of the offending message, or ``None`` when the error
            is not about one message.
        template: Name of the annotated template in use, or ``None``.
    """

    def __init__(self, msg: str, *, message_index: int | None = None, template: str | None = None):
        super().__init__(msg)
        self.message_index = message_index
        self.template = template

    def __reduce__(self):
        # Pickled whole (class, message, attributes), so an error raised in a worker process
        # (datasets' map with num_proc > 1) reaches the parent as itself.
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type, args: tuple, state: dict) -> LabelmaskError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class OptionError(LabelmaskError, ValueError, TypeError):
    """An argument of a labelmask function has a wrong value or type (``max_length=0``, ``check="x"``,
    ``Policy(roles=["bot"])``); a ``ValueError`` and a ``TypeError`` too, so either ``except`` catches it."""


class ConversationError(LabelmaskError, ValueError):
    """The conversation is not something labelmask can render (wrong types, roles, fields)."""


class ControlTokenError(ConversationError):
    """A message's text contains a control token of the tokenizer (``control_tokens="raise"``).

    Attributes:
        token: The control-token string found.
    """

    def __init__(self, msg: str, *, token: str, message_index: int | None = None, template: str | None = None):
        super().__init__(msg, message_index=message_index, template=template)
        self.token = token


class TemplateNotFoundError(LabelmaskError, LookupError):
    """No annotated template is registered for the tokenizer's chat template."""


class UnverifiedTemplateError(TemplateNotFoundError):
    """No annotation matches, and the spans derived without one could not be verified for this conversation."""


class TemplateRaisedError(LabelmaskError, ValueError):
    """The chat template raised while rendering (e.g. Gemma's role alternation check)."""


class RenderBudgetError(LabelmaskError, RuntimeError):
    """One render of a chat template passed its :class:`~labelmask.RenderBudget`: it ran longer or wrote
    more than the limits (a template that loops or writes without end, or a conversation that long).

    Attributes:
        limit: ``"time"`` or ``"chars"``, the limit passed.
    """

    def __init__(self, msg: str, *, limit: str, template: str | None = None):
        super().__init__(msg, template=template)
        self.limit = limit


class AnnotationError(LabelmaskError, ValueError):
    """An annotated template is malformed: unbalanced or misplaced span tags, bad header."""


class RenderParityError(AnnotationError):
    """The annotated template rendered different text from the stock template.

    Attributes:
        position: First character index at which the two renders differ.
    """

    def __init__(self, msg: str, *, position: int, template: str | None = None):
        super().__init__(msg, template=template)
        self.position = position


class TokenizerError(LabelmaskError, TypeError):
    """The tokenizer cannot be used: not a fast tokenizer, or its offsets are unusable."""


class FeatureError(LabelmaskError, ValueError, KeyError, TypeError):
    """A :class:`~labelmask.Collator` feature is neither a raw conversation nor an example labelmask masked:
    not a mapping, without ``messages`` or ``input_ids``, or with ``labels`` that no mask gives (every
    token trained, as a tokenizer-only pipeline writes them, or labels that are not the ids). A
    ``KeyError`` and a ``TypeError`` too, for callers that caught those before."""

    __str__ = Exception.__str__  # KeyError's would quote the message


class NothingToTrainError(LabelmaskError, ValueError):
    """The policy leaves no token of the sample trained (every label would be -100)."""


class NotRenderedError(LabelmaskError, ValueError):
    """A trained reply carries tool calls its template does not render (Phi-3's drops them): trained,
    the reply the template shows (empty, then its end of turn) would teach the model to answer nothing.
    ``Policy(on_dropped_tool_calls="skip")`` leaves such replies untrained instead.

    Attributes:
        field: What the template dropped (``"tool_calls"``).
    """

    def __init__(self, msg: str, *, field: str, message_index: int | None = None, template: str | None = None):
        super().__init__(msg, message_index=message_index, template=template)
        self.field = field


class NotRenderedWarning(UserWarning):
    """The chat template does not render a field the conversation's messages carry (earlier replies'
    reasoning, tool calls, a tool result's name or id): that data is neither seen nor trained. Warned
    once per template and field; each sample's report lists what it lost (``report.not_rendered``)."""


class TruncationError(LabelmaskError, ValueError):
    """The sample is longer than ``max_length`` and the truncation mode refuses or cannot shorten it."""


class NoEndOfTurnWarning(UserWarning):
    """The chat template writes no end-of-turn token after assistant replies (LLaVA-1.5's), so a model
    trained on its samples never learns to stop; ``add_eos=True`` writes and trains the tokenizer's EOS."""


class MaskCheckError(LabelmaskError, RuntimeError):
    """The fail-closed check found trained tokens that are not exactly the text to train.

    Raised instead of returning the sample (``check=False`` skips the check); see docs/how-it-works.md.
    """
