"""SMTP backend: one RFC 5322 message per recipient over one reused connection (smtplib).

NEWSLETTER_SMTP_URL: smtp://user:pass@host:587?starttls=1, smtps://user:pass@host:465 (TLS from the first
byte), smtp://host:25 (no TLS, no auth: a local relay). User and password are percent-decoded.

Each message is sent with explicit MAIL / RCPT / DATA so a failure can be placed: anything before the end of
DATA was certainly not accepted; a connection lost while waiting for the answer to DATA leaves that one
message's fate unknown, which the sender is told (see newsletter.deliver.errors): that recipient alone is held,
the rest of the batch goes on. Every message of a batch is built (`prepare`) before the batch is marked
`sending`, so that only the SMTP dialogue itself can leave an outcome unknown.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import make_msgid, parseaddr
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlparse

from newsletter.deliver.errors import PartialDeliveryError
from newsletter.deliver.mailer import (
    Message,
    PermanentDeliveryError,
    PushResult,
    Recipient,
    TemporaryDeliveryError,
)
from newsletter.deliver.message import MessageBuildError, build_email, message_domain

if TYPE_CHECKING:  # dkimpy and dnspython load only when a key is configured
    from newsletter.deliver.dkim import DkimSigner

# Replies that mean "not now" for the whole connection or message (RFC 5321 4.2.5 and common practice).
TEMPORARY_CODES = range(400, 500)
CLOSES_CONNECTION = {421}


@dataclass
class SMTPPushResult(PushResult):
    # Addresses the server refused for good (5xx to RCPT): a bounce, not a reason to stop the send.
    rejected: dict[str, str] = field(default_factory=dict)


@dataclass
class PreparedBatch:
    """A batch's messages as bytes, built before the batch is marked `sending` (SMTPMailer.prepare)."""

    sender: str
    messages: list[tuple[Recipient, str, bytes]] = field(default_factory=list)  # recipient, Message-ID, bytes
    failed: dict[str, str] = field(default_factory=dict)  # could not be built: never sent


class _UnknownOutcome(Exception):
    pass


class SMTPMailer:
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        use_ssl: bool = False,
        starttls: bool = False,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        dkim: DkimSigner | None = None,
    ) -> None:
        self.host = host
        self.port = port or (465 if use_ssl else 587 if starttls else 25)
        self.username = username
        self.password = password
        self.use_ssl = use_ssl
        self.starttls = starttls
        self.timeout = timeout
        self.tls_context = tls_context
        self.dkim = dkim
        self._smtp: smtplib.SMTP | None = None
        self.connections_opened = 0

    @classmethod
    def from_url(cls, url: str, tls_context: ssl.SSLContext | None = None,
                 dkim: DkimSigner | None = None) -> SMTPMailer:
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
            raise ValueError(
                "NEWSLETTER_SMTP_URL must look like smtp://user:pass@host:587?starttls=1 "
                "or smtps://user:pass@host:465"
            )
        query = parse_qs(parsed.query)
        starttls = query.get("starttls", ["0"])[0].lower() in ("1", "true", "yes")
        return cls(
            parsed.hostname,
            parsed.port,
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            use_ssl=parsed.scheme == "smtps",
            starttls=starttls,
            tls_context=tls_context,
            dkim=dkim,
        )

    def __repr__(self) -> str:  # never show the password
        return f"SMTPMailer({self.host}:{self.port}, user={self.username!r})"

    # -- connection ------------------------------------------------------------------------------------------
    def _connect(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        context = self.tls_context or ssl.create_default_context()
        try:
            if self.use_ssl:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentDeliveryError(
                f"SMTP server {self.host}:{self.port} refused the login ({exc.smtp_code})"
            ) from None
        except smtplib.SMTPResponseException as exc:
            error = _reply_error(f"SMTP server {self.host}:{self.port}", exc.smtp_code, exc.smtp_error)
            raise error from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryDeliveryError(
                f"cannot connect to SMTP server {self.host}:{self.port}: {exc}"
            ) from None
        self.connections_opened += 1
        self._smtp = smtp
        return smtp

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()

    # -- sending ---------------------------------------------------------------------------------------------
    def ready(self, from_address: str) -> None:
        """Before a send starts: DkimError when its messages could not be signed so that receivers accept them."""
        if self.dkim is not None:
            self.dkim.ready(from_address)

    def prepare(self, message: Message, recipients: Sequence[Recipient]) -> PreparedBatch:
        """Every message of the batch, built (and given its Message-ID) before anything is sent: the engine calls
        this before it marks the batch `sending`, so a crash while building leaves nobody's outcome unknown."""
        domain = message_domain(message.from_address)
        batch = PreparedBatch(parseaddr(message.from_address)[1])
        for recipient in recipients:
            message_id = make_msgid(domain=domain)
            try:
                data = build_email(message, recipient, message_id=message_id).as_bytes()
            except MessageBuildError as exc:  # nothing will be sent for this one; the others go on
                batch.failed[recipient.email] = str(exc)
                continue
            if self.dkim is not None:  # DkimError stops the batch before it is marked `sending`
                data = self.dkim.sign(data, message.from_address)
            batch.messages.append((recipient, message_id, data))
        return batch

    def _send_one(self, smtp: smtplib.SMTP, sender: str, recipient: Recipient, data: bytes) -> None:
        code, reply = smtp.mail(sender)
        if code != 250:
            _rset(smtp)
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        code, reply = smtp.rcpt(recipient.email)
        if code not in (250, 251):
            _rset(smtp)
            raise smtplib.SMTPRecipientsRefused({recipient.email: (code, reply)})
        try:
            code, reply = smtp.data(data)
        except smtplib.SMTPDataError:
            raise
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _UnknownOutcome(str(exc)) from None
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    def push(self, message: Message, recipients: Sequence[Recipient]) -> SMTPPushResult:
        return self.push_prepared(self.prepare(message, recipients))

    def push_prepared(self, batch: PreparedBatch) -> SMTPPushResult:
        result = SMTPPushResult(failed=dict(batch.failed))
        sender = batch.sender
        for recipient, message_id, data in batch.messages:
            smtp = self._connect_partial(result)
            try:
                self._send_one(smtp, sender, recipient, data)
                result.message_ids[recipient.email] = message_id
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = exc.recipients[recipient.email]
                if code in TEMPORARY_CODES:
                    self._fail(result, code, reply, f"refused {recipient.email} for now")
                result.rejected[recipient.email] = f"{code} {_text(reply)}"
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                if exc.smtp_code in TEMPORARY_CODES:
                    self._fail(result, exc.smtp_code, exc.smtp_error, "deferred the message")
                raise PermanentDeliveryError(
                    f"SMTP server refused the message ({exc.smtp_code} {_text(exc.smtp_error)})"
                ) from None
            except _UnknownOutcome as exc:
                self._drop()
                raise PartialDeliveryError(
                    f"SMTP connection lost waiting for the answer to {recipient.email}'s message: {exc}",
                    dict(result.message_ids),
                    outcome_unknown_for=recipient.email,
                ) from None
            except (OSError, smtplib.SMTPException) as exc:
                self._drop()
                raise PartialDeliveryError(f"SMTP connection lost: {exc}", dict(result.message_ids)) from None
        return result

    def _connect_partial(self, result: SMTPPushResult) -> smtplib.SMTP:
        """Connect, turning a failure after some messages went out into a PartialDeliveryError."""
        try:
            return self._connect()
        except TemporaryDeliveryError as exc:
            if result.message_ids:
                raise PartialDeliveryError(str(exc), dict(result.message_ids), exc.retry_after) from None
            raise

    def _fail(self, result: SMTPPushResult, code: int, reply: bytes | str, what: str) -> None:
        if code in CLOSES_CONNECTION:
            self._drop()
        message = f"SMTP server {what} ({code} {_text(reply)})"
        if result.message_ids:
            raise PartialDeliveryError(message, dict(result.message_ids))
        raise TemporaryDeliveryError(message)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _rset(smtp: smtplib.SMTP) -> None:
    # Clear the refused transaction so the connection can carry the next message; a server that already
    # hung up (421) is noticed on the next command.
    with contextlib.suppress(OSError, smtplib.SMTPException):
        smtp.rset()


def _reply_error(where: str, code: int, reply: bytes | str) -> Exception:
    if code in TEMPORARY_CODES:
        return TemporaryDeliveryError(f"{where} answered {code} {_text(reply)}")
    return PermanentDeliveryError(f"{where} answered {code} {_text(reply)}")
