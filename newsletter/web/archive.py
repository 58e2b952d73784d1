"""The public archive: sent issues per newsletter, an Atom feed, and the subscribe form; the issue and story
pages themselves (the web edition) and the JSON Feed are newsletter.web.edition's.

Only sent issues are public. `public_html` makes the email's HTML safe to show anyone (the per-recipient places
filled with neutral values, so no one's unsubscribe link or address is ever on it).
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from xml.etree import ElementTree as ET

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.compose.build import load_issue
from newsletter.config import Newsletter
from newsletter.deliver.optin import request_opt_in
from newsletter.render import tokens
from newsletter.store.db import ensure_newsletter, session_scope
from newsletter.store.models import IssueItem, IssueRow, NewsletterRow
from newsletter.subscribers.manage import InvalidAddress
from newsletter.urls import issue_path
from newsletter.web import edition
from newsletter.web.pages import checked_form, page
from newsletter.web.public import RESEND_CONFIRMATION_AFTER
from newsletter.web.state import WebState, web_state

log = logging.getLogger(__name__)

ATOM = "http://www.w3.org/2005/Atom"


@dataclass
class SentIssue:
    number: int
    subject: str
    sent_at: datetime


def _newsletter_row(state: WebState, slug: str) -> tuple[NewsletterRow | None, Newsletter | None]:
    nl = state.newsletter(slug)
    with session_scope(state.engine) as session:
        row = session.scalar(select(NewsletterRow).where(NewsletterRow.slug == slug))
    if row is None and nl is None:
        raise HTTPException(404, f"There is no newsletter '{slug}'.")
    return row, nl


def _sent(state: WebState, newsletter_id: int | None) -> list[SentIssue]:
    if newsletter_id is None:
        return []
    with session_scope(state.engine) as session:
        rows = session.scalars(
            select(IssueRow).where(IssueRow.newsletter_id == newsletter_id, IssueRow.status == "sent")
            .order_by(IssueRow.number.desc())
        ).all()
        return [SentIssue(r.number, r.subject, r.sent_at or r.updated_at) for r in rows]


async def index(request: Request) -> Response:
    state = web_state(request)

    def load() -> list[tuple[str, str, str]]:
        return [(slug, nl.name, nl.description) for slug, nl in sorted(state.newsletters().items())]

    return page(request, "archive_index.html", {"newsletters": await run_in_threadpool(load)})


async def newsletter_page(request: Request) -> Response:
    state = web_state(request)
    slug = request.path_params["slug"]

    def load() -> dict:
        row, nl = _newsletter_row(state, slug)
        return {"slug": slug, "name": nl.name if nl else row.name if row else slug,
                "description": nl.description if nl else "",
                "issues": _sent(state, row.id if row else None), "can_subscribe": nl is not None}

    return page(request, "archive_list.html", await run_in_threadpool(load))


def public_html(raw: str, base_url: str, slug: str) -> str:
    """The sent HTML with the per-recipient places made neutral: the unsubscribe link points to the archive,
    the address and name are empty. Any signed unsubscribe link a template wrote in some other way goes too."""
    archive = f"{base_url}/archive/{slug}"
    out = tokens.fill(raw, {"unsubscribe_url": html.escape(archive, quote=True),
                            "manage_url": html.escape(archive, quote=True), "email": "", "name": ""})
    return re.sub(re.escape(base_url) + r"/u/[A-Za-z0-9_.=-]+", archive, out)


def _atom_time(value: datetime) -> str:
    return value.replace(microsecond=0).isoformat() + "Z"


def atom_feed(state: WebState, slug: str) -> bytes:
    row, nl = _newsletter_row(state, slug)
    base = state.settings.base_url
    name = nl.name if nl else row.name if row else slug
    feed = ET.Element("feed", xmlns=ATOM)
    ET.SubElement(feed, "title").text = name
    if nl and nl.description:
        ET.SubElement(feed, "subtitle").text = nl.description
    ET.SubElement(feed, "id").text = f"{base}/archive/{slug}"
    ET.SubElement(feed, "link", rel="self", type="application/atom+xml", href=f"{base}/archive/{slug}/feed.xml")
    ET.SubElement(feed, "link", rel="alternate", type="text/html", href=f"{base}/archive/{slug}")
    ET.SubElement(ET.SubElement(feed, "author"), "name").text = name
    updated = ET.SubElement(feed, "updated")
    latest = None
    with session_scope(state.engine) as session:
        ids = session.scalars(
            select(IssueRow.id).where(IssueRow.newsletter_id == (row.id if row else -1), IssueRow.status == "sent")
            .order_by(IssueRow.number.desc()).limit(50)
        ).all()
        for issue_id in ids:
            issue = load_issue(session, issue_id)
            if issue is None:  # deleted since the query above
                continue
            when = issue.sent_at or issue.created_at
            latest = max(latest or when, when)
            url = base + issue_path(slug, issue.number)
            entry = ET.SubElement(feed, "entry")
            ET.SubElement(entry, "title").text = issue.subject
            ET.SubElement(entry, "id").text = url
            ET.SubElement(entry, "link", rel="alternate", type="text/html", href=url)
            ET.SubElement(entry, "published").text = _atom_time(when)
            # A summary corrected since the send (newsletter.web.feedback) updates the entry.
            corrected = session.scalar(select(func.max(IssueItem.corrected_at)).where(IssueItem.issue_id == issue_id))
            ET.SubElement(entry, "updated").text = _atom_time(max(when, corrected) if corrected else when)
            ET.SubElement(entry, "summary", type="text").text = " · ".join(s.title for s in issue.stories)
            # The stories' own pages on the web edition, each with its original's link.
            ET.SubElement(entry, "content", type="html").text = edition.story_links_html(base, issue)
    updated.text = _atom_time(latest or (row.created_at if row else datetime(2000, 1, 1)))
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="utf-8")


async def feed(request: Request) -> Response:
    body = await run_in_threadpool(atom_feed, web_state(request), request.path_params["slug"])
    return Response(body, media_type="application/atom+xml; charset=utf-8")


# --- subscribing (double opt-in) ----------------------------------------------------------------------------


def subscribe(state: WebState, nl: Newsletter, email: str, zone: str | None = None) -> str:
    """A pending subscription and, unless one went out in the last few minutes, a confirmation email.
    `zone`: the browser's time zone, kept on a subscription not yet confirmed. Returns the normalized address."""
    mailer = state.make_mailer()
    try:
        with session_scope(state.engine) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            result = request_opt_in(session, row, nl, email, mailer, base_url=state.settings.base_url,
                                    secret=state.secret, origin="web", resend_after=RESEND_CONFIRMATION_AFTER,
                                    timezone=zone)
    finally:
        mailer.close()
    return result.email


async def subscribe_form(request: Request) -> Response:
    state = web_state(request)
    slug = request.path_params["slug"]
    form = await checked_form(request)
    nl = state.newsletter(slug)
    if nl is None:
        raise HTTPException(404, f"There is no newsletter '{slug}'.")
    email = str(form.get("email", "")).strip()
    context = {"slug": slug, "name": nl.name, "email": email}
    if form.get("website"):  # a field people never see: only form-filling robots fill it
        return page(request, "subscribe_done.html", context)
    client = request.client.host if request.client else "unknown"
    if state.subscribe_per_client.blocked_for(client):
        context["error"] = "Too many subscriptions from your address; please try again later."
        return page(request, "subscribe_done.html", context, 429)
    state.subscribe_per_client.failed(client)
    try:
        zone = _zone(str(form.get("timezone", "")))
        context["email"] = await run_in_threadpool(subscribe, state, nl, email, zone)
    except InvalidAddress as exc:
        context["error"] = f"{email or 'That'} is not an email address we can send to: {exc}"
        return page(request, "subscribe_done.html", context, 400)
    except Exception as exc:  # the reader cannot fix our mail server: log it, ask them to try later
        log.error("confirmation email for a subscriber of %s failed: %s", slug, type(exc).__name__)
        context["error"] = "We could not send the confirmation email just now; please try again later."
        return page(request, "subscribe_done.html", context, 503)
    # The same answer whatever the address's state, so the form does not tell who is subscribed.
    return page(request, "subscribe_done.html", context)


def _zone(raw: str) -> str | None:
    from newsletter.subscribers.preferences import PreferenceError, check_timezone

    try:
        return check_timezone(raw[:64]) if raw.strip() else None
    except PreferenceError:
        return None  # not a zone we know: the newsletter's own, changeable on the manage page


def edition_routes() -> list:
    """The issue and story pages, which readers open most (every email links them): the app tries them first.
    No other route's path can match theirs (`{number:int}` takes digits only)."""
    return [
        Route("/archive/{slug}/{number:int}", edition.issue_page, methods=["GET"]),
        Route("/archive/{slug}/{number:int}/{story}", edition.story_page, methods=["GET"]),
    ]


def routes() -> list:
    return [
        Route("/archive/", index, methods=["GET"]),
        Route("/archive/{slug}", newsletter_page, methods=["GET"]),
        Route("/archive/{slug}/feed.xml", feed, methods=["GET"]),
        Route("/archive/{slug}/feed.json", edition.json_feed_route, methods=["GET"]),
        Route("/archive/{slug}/subscribe", subscribe_form, methods=["POST"]),
    ]

