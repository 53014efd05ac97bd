"""Named errors of the cloud bridge's delivery side (SMS text, providers, webhooks).

The tree::

    BridgeError (Exception)
    ├── MessageError (ValueError)          an SMS that must not go out as it is
    │   ├── SenderError                    sender is neither alphanumeric (<= 11) nor a number
    │   └── TemplateCostError              a campaign text over the maximum number of parts
    ├── ProviderConfigError (ValueError)   a provider is configured incompletely or wrongly
    └── WebhookError                       a provider callback or inbound SMS we refuse
        ├── SignatureError                 missing or wrong signature (HTTP 403)
        └── ReplayError                    a message id or timestamp we have already seen (409)

A provider's answer to a send is never an exception: it is a ``SendResult`` whose status says
what happened (``accepted``, ``retry``, ``failed`` or ``unknown``), because every one of those is
an expected outcome that the delivery state machine must record. Errors elsewhere in the bridge
(``TemplateError``, ``DataKeyError``, ``BrokerError``, ``CommandError``, ``RosterBuildError``)
still live next to their code.
"""

from __future__ import annotations

__all__ = [
    "BridgeError",
    "MessageError",
    "SenderError",
    "TemplateCostError",
    "ProviderConfigError",
    "WebhookError",
    "SignatureError",
    "ReplayError",
]


class BridgeError(Exception):
    """Base of the bridge's named errors."""


class MessageError(BridgeError, ValueError):
    """An SMS that must not go out as it is; the message says what and where."""


class SenderError(MessageError):
    """A sender name that is neither alphanumeric (1..11 characters) nor a phone number."""


class TemplateCostError(MessageError):
    """A campaign text that renders to more SMS parts than allowed."""

    def __init__(self, message: str, parts: int = 0, max_parts: int = 0) -> None:
        super().__init__(message)
        self.parts = parts
        self.max_parts = max_parts


class ProviderConfigError(BridgeError, ValueError):
    """A provider that cannot work as configured (missing credentials, bad template)."""


class WebhookError(BridgeError):
    """A provider callback or inbound message the bridge refuses."""

    status_code = 400


class SignatureError(WebhookError):
    """The request's signature is missing or does not match."""

    status_code = 403


class ReplayError(WebhookError):
    """The request was seen before (same message id) or is too old."""

    status_code = 409
