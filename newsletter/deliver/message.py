"""One RFC 5322 email per recipient from the issue rendered once (used by the outbox and SMTP backends)."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr

from newsletter.deliver.mailer import Message, Recipient
from newsletter.render import tokens


def _html_values(values: dict[str, str]) -> dict[str, str]:
    # A name like "Ann & <Bob>" must not become markup in the HTML part.
    return {k: html.escape(v, quote=True) for k, v in values.items()}


def message_domain(from_address: str) -> str:
    return parseaddr(from_address)[1].rpartition("@")[2] or "localhost"


def build_email(message: Message, recipient: Recipient, *, message_id: str | None = None) -> EmailMessage:
    values = {"email": recipient.email, "name": recipient.name or "", **recipient.values}
    email = EmailMessage(policy=SMTP)
    email["Subject"] = message.subject
    email["From"] = message.from_address
    email["To"] = recipient.email if not recipient.name else f"{recipient.name} <{recipient.email}>"
    if message.reply_to:
        email["Reply-To"] = message.reply_to
    email["Date"] = format_datetime(datetime.now(UTC))
    email["Message-ID"] = message_id or make_msgid(domain=message_domain(message.from_address))
    email["List-Id"] = message.list_id
    unsubscribe = values.get("unsubscribe_url")
    if unsubscribe:
        # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" to the https URL.
        email["List-Unsubscribe"] = f"<{unsubscribe}>"
        email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in message.headers.items():
        email[name] = value
    email.set_content(tokens.fill(message.text, values), subtype="plain", charset="utf-8")
    email.add_alternative(tokens.fill(message.html, _html_values(values)), subtype="html", charset="utf-8")
    return email
