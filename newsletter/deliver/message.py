"""One RFC 5322 email per recipient from the issue rendered once (used by the outbox and SMTP backends).

Every header is built by the `email` library: addresses as `Address` objects (a name such as
`Mal <other@evil.example>, M` becomes a quoted display name, never a second recipient), text on one line. A
recipient whose message cannot be built raises MessageBuildError, which the backends report for that
recipient alone (PushResult.failed) while the rest of the batch goes out.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr

from newsletter.deliver.mailer import Message, Recipient
from newsletter.render import tokens
from newsletter.text import single_line

MAX_NAME = 200  # characters of a display name in To:


class MessageBuildError(ValueError):
    """This recipient's message cannot be built (an address the email library refuses); says why."""


def _html_values(values: dict[str, str]) -> dict[str, str]:
    # A name like "Ann & <Bob>" must not become markup in the HTML part.
    return {k: html.escape(v, quote=True) for k, v in values.items()}


def message_domain(from_address: str) -> str:
    return parseaddr(from_address)[1].rpartition("@")[2] or "localhost"


def recipient_address(recipient: Recipient) -> Address:
    """The To: address: the name as a display name on one line, the address checked by the email library."""
    try:
        return Address(display_name=single_line(recipient.name, MAX_NAME), addr_spec=recipient.email)
    # AttributeError: the library's parser trips over an unclosed domain literal ("a@[b") instead of refusing it.
    except (HeaderParseError, ValueError, IndexError, AttributeError) as exc:
        raise MessageBuildError(f"not a usable address {recipient.email!r}: {exc}") from None


# An address the email library certainly takes as it is: dot-atoms of ASCII atext on both sides of the @
# (RFC 5322 3.2.3, without quoting, comments or literals). Anything else goes through the library's parser.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                            r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def recipient_display_name(recipient: Recipient) -> str:
    """The display name `recipient_address` would give, with the same check of the address (MessageBuildError
    when the email library refuses it), without building an Address for the plain addresses nearly everyone
    has: the library's parser costs about 30 microseconds an address, a million of them per send."""
    if _PLAIN_ADDRESS.fullmatch(recipient.email) is None:
        return recipient_address(recipient).display_name
    return single_line(recipient.name, MAX_NAME)


def build_email(message: Message, recipient: Recipient, *, message_id: str | None = None) -> EmailMessage:
    values = {"email": recipient.email, "name": single_line(recipient.name), **recipient.values}
    email = EmailMessage(policy=SMTP)
    try:
        email["Subject"] = single_line(message.subject)
        email["From"] = message.from_address
        email["To"] = recipient_address(recipient)
        if message.reply_to:
            email["Reply-To"] = message.reply_to
        email["Date"] = format_datetime(datetime.now(UTC))
        email["Message-ID"] = message_id or make_msgid(domain=message_domain(message.from_address))
        email["List-Id"] = message.list_id
        unsubscribe = values.get("unsubscribe_url")
        if unsubscribe:
            # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" to the https URL.
            email["List-Unsubscribe"] = f"<{single_line(unsubscribe)}>"
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        for name, value in message.headers.items():
            email[name] = single_line(value)
    except (HeaderParseError, ValueError) as exc:
        if isinstance(exc, MessageBuildError):
            raise
        raise MessageBuildError(f"cannot build the message for {recipient.email!r}: {exc}") from None
    email.set_content(tokens.fill(message.text, values), subtype="plain", charset="utf-8")
    if message.html:  # a text-only reader's copy is text/plain alone
        email.add_alternative(tokens.fill(message.html, _html_values(values)), subtype="html", charset="utf-8")
    return email
