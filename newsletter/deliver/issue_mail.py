"""The one Message of an issue: subject, From and Reply-To, List-Id, categories, and the custom_args that tie the
provider's events back to the newsletter, the issue and (for a real send) the send.

It is built from the render kept for the issue (newsletter.render.cache), so every batch of a send, in any
process, carries the same bytes; the per-recipient parts (name, unsubscribe link) are tokens filled by the backend.
`newsletter send`, the scale-mode workers, preflight and the editor's test send all build it here.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from newsletter.config import Newsletter, Settings
from newsletter.deliver.errors import SendError
from newsletter.deliver.mailer import Message
from newsletter.render.tracking import TrackSigner
from newsletter.render.variant import DEFAULT, Variant
from newsletter.store.db import secret_key, session_scope
from newsletter.subscribers.tokens import Signer


def list_id(nl: Newsletter) -> str:
    domain = nl.from_address.rpartition("@")[2].rstrip(">").strip() or "localhost"
    return f"{nl.name} <{nl.slug}.{domain}>"


def make_message(nl: Newsletter, subject: str, html: str, text: str, *, issue_number: int, issue_id: int,
                 send_id: int | None = None, test: bool = False) -> Message:
    args = {"newsletter": nl.slug, "issue": str(issue_id), "issue_number": str(issue_number)}
    if send_id is not None:
        args["send"] = str(send_id)
    if test:
        args["test"] = "1"
    return Message(
        subject=("[TEST] " if test else "") + subject,
        from_address=nl.from_address,
        reply_to=nl.reply_to,
        html=html,
        text=text,
        list_id=list_id(nl),
        categories=(nl.slug, "digest"),
        custom_args=args,
    )


def templates_dir(settings: Settings) -> Path | None:
    """The operator's templates folder when there is one (else the default templates are used)."""
    return settings.templates_dir if settings.templates_dir.is_dir() else None


def tracker(engine: Engine, settings: Settings) -> TrackSigner:
    """The signer of tracked links and reader values (newsletter.render.tracking), under this install's secret."""
    with session_scope(engine) as session:
        secret = secret_key(session, settings.secret_key)
    return TrackSigner(Signer(secret).subkey("tracking"))


def issue_message(engine: Engine, nl: Newsletter, issue_id: int, settings: Settings, *, send_id: int | None = None,
                  test: bool = False, variant: Variant = DEFAULT) -> Message:
    """The issue's Message from its kept render (rendered now if it has none yet), for one variant of its readers
    (sections off, text only: newsletter.render.variant); a text-only Message has no HTML."""
    from newsletter.compose.build import load_issue
    from newsletter.render.cache import rendered_issue

    rendered = rendered_issue(engine, issue_id, nl, base_url=settings.base_url, templates_dir=templates_dir(settings),
                              variant=variant,
                              tracker=tracker(engine, settings) if nl.tracking.clicks or nl.tracking.opens else None,
                              clicks=nl.tracking.clicks, opens=nl.tracking.opens)
    with session_scope(engine) as session:
        issue = load_issue(session, issue_id)
    if issue is None:
        raise SendError(f"no issue {issue_id} (deleted?)")
    return make_message(nl, rendered.subject, rendered.html, rendered.text, issue_number=issue.number,
                        issue_id=issue_id, send_id=send_id, test=test)
