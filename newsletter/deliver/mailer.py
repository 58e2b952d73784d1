"""The narrow interface every delivery backend implements (outbox, SMTP, SendGrid).

Like listmonk's Messenger: a name, `push` a batch, `flush`, `close`. The issue is rendered once into a
`Message` whose HTML and text carry per-recipient tokens (see newsletter.render.tokens); each backend fills
them in its own way (string replacement for outbox/SMTP, `substitutions` for SendGrid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)  # not frozen: a frozen dataclass costs twice as much to make, a million per send
class Recipient:
    email: str
    name: str | None = None
    subscriber_id: int | None = None
    # Values for the per-recipient tokens, e.g. {"unsubscribe_url": "https://.../u/TOKEN", "email": ...}
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """One issue, rendered once, ready for any number of recipients."""

    subject: str
    from_address: str
    html: str
    text: str
    list_id: str  # e.g. "AI Weekly <ai.newsletter.example.com>"
    reply_to: str | None = None
    # Extra headers for every copy. The List-Unsubscribe header itself is per recipient (its URL holds the
    # recipient's token), so backends build it from Recipient.values["unsubscribe_url"].
    headers: dict[str, str] = field(default_factory=dict)
    categories: tuple[str, ...] = ()
    # Identifiers carried to the provider (SendGrid custom_args) so its events can be matched to our ledger.
    custom_args: dict[str, str] = field(default_factory=dict)


@dataclass
class PushResult:
    provider_message_id: str | None = None  # e.g. SendGrid's X-Message-Id for the whole request
    message_ids: dict[str, str] = field(default_factory=dict)  # per address, where the backend knows them
    # Recipients whose message could not be built (an address the email library refuses), with why: left out
    # of this batch alone; the rest went out.
    failed: dict[str, str] = field(default_factory=dict)


class DeliveryError(Exception):
    """A batch could not be delivered."""


class TemporaryDeliveryError(DeliveryError):
    """Worth retrying (429, 5xx, timeouts, 4xx SMTP replies). retry_after is in seconds when known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help (400, 401, 403, 5xx SMTP replies to the whole message): stop and say why."""


class Mailer(Protocol):
    name: str

    def push(self, message: Message, recipients: Sequence[Recipient]) -> PushResult:
        """Deliver one batch. Every recipient was accepted (but those in `failed`), or it raises DeliveryError."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
