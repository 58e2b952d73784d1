"""Delivery outcomes that the Mailer protocol's two error kinds do not capture, for exactly-once sends, and the
error that says a send cannot start or go on as asked.

OutcomeUnknownError and PartialDeliveryError are TemporaryDeliveryError, so code that knows only the protocol still
treats them as "try again later"; the batch engine (newsletter.deliver.engine) looks closer, because a blind retry of
either could send someone a second copy.
"""

from __future__ import annotations

from newsletter.deliver.mailer import TemporaryDeliveryError


class OutcomeUnknownError(TemporaryDeliveryError):
    """The request reached the provider but no answer came back (connection cut, read timeout).

    The provider may have accepted the batch. Retrying blindly risks a second copy; giving up risks a gap.
    The sender resolves it by asking the provider (Mailer.accepted), or holds the batch for the operator.
    """


class PartialDeliveryError(TemporaryDeliveryError):
    """Some recipients of the batch were accepted before the failure (SMTP sends one message at a time).

    `accepted` maps each accepted address to its message id, so only the others are retried.
    """

    def __init__(
        self,
        message: str,
        accepted: dict[str, str],
        retry_after: float | None = None,
        outcome_unknown_for: str | None = None,
    ) -> None:
        super().__init__(message, retry_after)
        self.accepted = accepted
        # The address whose message was in flight when the connection died, if any: its outcome is unknown.
        self.outcome_unknown_for = outcome_unknown_for


class SendError(Exception):
    """The send cannot start or go on as asked (no such issue, nothing in it, already running elsewhere): retrying
    will not help until someone changes something; the message says what."""


class BatchTaken(SendError):
    """Another process marked the batch's next attempt first (it took the batch over while this one was cut off
    from the database): this process sends nothing of it."""
