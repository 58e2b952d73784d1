"""Readers: sign-in by email link (no passwords), the reader cookie, and `current_reader`.

- GET/POST /readers/signin         a form with an address; POST mails a signed link valid 15 minutes
- GET      /readers/signin/{token} a page with one button (mail scanners follow GET links: GET changes nothing)
- POST     /readers/signin/{token} uses the link (once) and sets the reader cookie
- POST     /readers/signout        ends every reader cookie issued so far (the reader's generation moves on)

The reader cookie is its own cookie (`newsletter_reader`), signed with its own derived key, holding the reader's
id and session generation; the editors' session cookie never learns about readers and a reader cookie carries
no editor id, so it opens nothing under /editor/. HttpOnly, SameSite=Lax, Secure when the site is https, like
the editors' cookie. Links carry a random nonce; using one stores the nonce's hash (`reader_token_use`), so a
second use is refused. Asking for links is limited per address typed and per client (`AttemptLimiter`).
Forms are CSRF-checked with the session's token, as the editor's forms are.
"""

from __future__ import annotations

import hashlib
import html
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.config import Newsletter
from newsletter.deliver.issue_mail import list_id
from newsletter.deliver.mailer import Message, Recipient
from newsletter.store.db import session_scope
from newsletter.store.models import NewsletterRow, ReaderBlock, ReaderTokenUse, Subscriber, Subscription, utcnow
from newsletter.store.models import Reader as ReaderRow
from newsletter.subscribers.manage import InvalidAddress, normalize_email
from newsletter.web.auth import AttemptLimiter, csrf_token
from newsletter.web.pages import checked_form, page, redirect
from newsletter.web.state import WebState, web_state

log = logging.getLogger(__name__)

READER_COOKIE = "newsletter_reader"
LINK_SECONDS = 15 * 60
COOKIE_DAYS = 30
PER_ADDRESS = (3, 900)  # sign-in links per address typed per 15 minutes
PER_CLIENT = (20, 3600)  # sign-in links asked for per client per hour
COMMENT_LIMIT = (5, 600)  # comments posted per reader per 10 minutes (newsletter.web.conversation)


class InvalidLink(ValueError):
    """A sign-in link that is forged, altered, expired or already used; the message says which, for the log."""


@dataclass(frozen=True)
class Reader:
    id: int
    email: str
    generation: int


@dataclass
class ReaderLimits:
    per_address: AttemptLimiter
    per_client: AttemptLimiter
    comments: AttemptLimiter  # posts per reader, see newsletter.web.conversation


def limits(request: Request) -> ReaderLimits:
    """The in-memory limits of this app (one `serve` process), made on first use."""
    kept = getattr(request.app.state, "reader_limits", None)
    if kept is None:
        kept = ReaderLimits(AttemptLimiter(*PER_ADDRESS), AttemptLimiter(*PER_CLIENT), AttemptLimiter(*COMMENT_LIMIT))
        request.app.state.reader_limits = kept
    return kept


def safe_next(value: str | None) -> str:
    # Our own pages only: anything else would make the sign-in an open redirect.
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value and len(value) < 500:
        return value
    return "/archive/"


def reader_address(email: str) -> str:
    return normalize_email(email).lower()


# --- links ------------------------------------------------------------------------------------------------


def _link_serializer(state: WebState) -> URLSafeSerializer:
    return URLSafeSerializer(state.derived_key("reader sign-in link"), salt="reader-signin")


def make_link_token(state: WebState, email: str, slug: str, next_url: str, *, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + LINK_SECONDS)
    return str(_link_serializer(state).dumps({"e": email, "s": slug, "t": next_url, "x": expires,
                                              "n": secrets.token_urlsafe(16)}))


def read_link_token(state: WebState, token: str) -> dict[str, Any]:
    """The link's contents once its signature and expiry check out (not whether it was used)."""
    try:
        data = _link_serializer(state).loads(token)
    except BadSignature:
        raise InvalidLink("bad signature") from None
    if not isinstance(data, dict) or not all(k in data for k in "estxn"):
        raise InvalidLink("malformed")
    if not isinstance(data["x"], int) or data["x"] < time.time():
        raise InvalidLink("expired")
    return data


def _nonce_hash(nonce: str) -> str:
    return hashlib.sha256(str(nonce).encode()).hexdigest()


def link_used(session: Session, data: dict[str, Any]) -> bool:
    return session.get(ReaderTokenUse, _nonce_hash(data["n"])) is not None


def may_comment(session: Session, nl: Newsletter, email: str) -> bool:
    """What the newsletter's `[comments] who` allows for this address."""
    who = nl.comments.who
    if who == "off":
        return False
    if who == "signed-in":
        return True
    return session.scalar(
        select(Subscription.id).join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .join(NewsletterRow, NewsletterRow.id == Subscription.newsletter_id)
        .where(NewsletterRow.slug == nl.slug, Subscription.status == "active", Subscriber.email == email)
    ) is not None


def blocked_on(session: Session, reader_id: int, slug: str) -> bool:
    """Whether an editor blocked this reader on this newsletter (a block is per newsletter: the editors of one
    cannot silence a reader on another)."""
    return session.scalar(
        select(ReaderBlock.reader_id).join(NewsletterRow, NewsletterRow.id == ReaderBlock.newsletter_id)
        .where(ReaderBlock.reader_id == reader_id, NewsletterRow.slug == slug)
    ) is not None


def send_link(state: WebState, nl: Newsletter, email: str, next_url: str) -> bool:
    """Mail a sign-in link when the newsletter lets this address comment; False (nothing sent) otherwise."""
    with session_scope(state.engine) as session:
        if not may_comment(session, nl, email):
            return False
    link = f"{state.settings.base_url}/readers/signin/{make_link_token(state, email, nl.slug, next_url)}"
    minutes = LINK_SECONDS // 60
    text = (f"Sign in to comment on {nl.name}:\n\n{link}\n\nThe link works once, for {minutes} minutes. "
            "If you did not ask for it, ignore this email.\n")
    body = (f"<p>Sign in to comment on <strong>{html.escape(nl.name)}</strong>:</p>"
            f'<p><a href="{html.escape(link, quote=True)}">Sign in</a></p>'
            f"<p>The link works once, for {minutes} minutes. If you did not ask for it, ignore this email.</p>")
    message = Message(subject=f"Your sign-in link for {nl.name}", from_address=nl.from_address,
                      reply_to=nl.reply_to, html=body, text=text, list_id=list_id(nl),
                      categories=(nl.slug, "reader-signin"),
                      custom_args={"newsletter": nl.slug, "kind": "reader-signin"})
    mailer = state.make_mailer()
    mailer.push(message, [Recipient(email=email)])
    mailer.flush()
    return True


# --- the cookie -------------------------------------------------------------------------------------------


def _cookie_serializer(state: WebState) -> URLSafeSerializer:
    return URLSafeSerializer(state.derived_key("reader cookie"), salt="reader-session")


def _reader_from_cookie(state: WebState, raw: str | None) -> Reader | None:
    if not raw or len(raw) > 500:
        return None
    try:
        data = _cookie_serializer(state).loads(raw)
        reader_id, generation, since = int(data["r"]), int(data["g"]), datetime.fromisoformat(data["t"])
    except (BadSignature, KeyError, TypeError, ValueError):
        return None
    if utcnow() - since > timedelta(days=COOKIE_DAYS):
        return None
    with session_scope(state.engine) as session:
        row = session.get(ReaderRow, reader_id)
        if row is None or (row.session_generation or 0) != generation:
            return None
        return Reader(row.id, row.email, generation)


def current_reader(request: Request) -> Reader | None:
    """The signed-in reader of this request (checked against the database once per request), or None."""
    if "reader" not in request.scope.get("state", {}):
        request.state.reader = _reader_from_cookie(web_state(request), request.cookies.get(READER_COOKIE))
    reader: Reader | None = request.state.reader
    return reader


def _set_cookie(request: Request, response: Response, reader_id: int, generation: int) -> None:
    value = _cookie_serializer(web_state(request)).dumps({"r": reader_id, "g": generation,
                                                          "t": utcnow().isoformat()})
    response.set_cookie(READER_COOKIE, str(value), max_age=COOKIE_DAYS * 86400, path="/", httponly=True,
                        samesite="lax", secure=web_state(request).settings.base_url.startswith("https://"))


# --- pages ------------------------------------------------------------------------------------------------


def _message(request: Request, title: str, text: str, status: int = 200,
             headers: dict[str, str] | None = None) -> Response:
    return page(request, "message.html", {"title": title, "text": text}, status, headers)


def _signin_form(request: Request, slug: str, next_url: str, email: str = "", error: str | None = None,
                 status: int = 200, headers: dict[str, str] | None = None) -> Response:
    state = web_state(request)
    newsletters = state.newsletters()
    nl = newsletters.get(slug) if slug else None
    # Without a known newsletter (the form opened by hand), the reader picks one of those that take comments.
    choices = sorted((s, n.name) for s, n in newsletters.items() if n.comments.who != "off")
    return page(request, "reader_signin.html", {"slug": slug, "next": next_url, "email": email, "error": error,
                                                "name": nl.name if nl else None, "choices": choices},
                status, headers)


async def signin_page(request: Request) -> Response:
    return _signin_form(request, request.query_params.get("newsletter", ""),
                        safe_next(request.query_params.get("next")))


async def signin(request: Request) -> Response:
    form = await checked_form(request)
    state = web_state(request)
    slug, next_url = str(form.get("newsletter", "")), safe_next(str(form.get("next", "")))
    typed = str(form.get("email", ""))[:320]
    nl = await run_in_threadpool(state.newsletter, slug)
    if nl is None:
        return _signin_form(request, slug, next_url, typed, "Choose a newsletter: this form came without one.", 400)
    if nl.comments.who == "off":
        return _signin_form(request, slug, next_url, typed, f"Comments are off for {nl.name}.", 403)
    try:
        email = reader_address(typed)
    except InvalidAddress as exc:
        return _signin_form(request, slug, next_url, typed, f"{typed or 'The address'}: {exc}", 400)
    client = request.client.host if request.client else "unknown"
    kept = limits(request)
    wait = max(kept.per_address.blocked_for(email), kept.per_client.blocked_for(client))
    if wait:
        log.warning("reader sign-in link refused: too many asked for (from %s)", client)
        return _signin_form(request, slug, next_url, typed,
                            f"Too many sign-in links asked for: try again in {max(1, wait // 60)} minute(s).",
                            429, {"Retry-After": str(wait)})
    kept.per_address.failed(email)
    kept.per_client.failed(client)
    # The same answer whether or not a link went out: the page must not tell who subscribes.
    await run_in_threadpool(send_link, state, nl, email, next_url)
    who = "subscribers of " + nl.name if nl.comments.who == "subscribers" else "readers"
    return _message(request, "Check your inbox",
                    f"If {email} may comment ({who} can), a sign-in link is on its way. It works once, for "
                    f"{LINK_SECONDS // 60} minutes.")


def _refused_link(request: Request, reason: str) -> Response:
    log.info("reader sign-in link refused: %s", reason)
    status = 410 if reason in ("used", "expired") else 400
    text = {"used": "This sign-in link has been used already.",
            "expired": "This sign-in link has expired."}.get(reason, "This sign-in link is not valid.")
    return _message(request, "Sign-in link not valid", text + " Ask for a new one from the story's page.", status)


async def link_page(request: Request) -> Response:
    state = web_state(request)
    try:
        data = read_link_token(state, request.path_params["token"])
    except InvalidLink as exc:
        return _refused_link(request, str(exc))

    def used() -> bool:
        with session_scope(state.engine) as session:
            return link_used(session, data)

    if await run_in_threadpool(used):
        return _refused_link(request, "used")
    csrf_token(request.session)
    return page(request, "reader_link.html", {"email": data["e"], "token": request.path_params["token"]})


async def use_link(request: Request) -> Response:
    await checked_form(request)
    state = web_state(request)
    try:
        data = read_link_token(state, request.path_params["token"])
    except InvalidLink as exc:
        return _refused_link(request, str(exc))

    def consume() -> tuple[int, int] | None:
        try:
            with session_scope(state.engine) as session:
                # Links past their expiry are refused before this table is asked: their rows can go.
                session.execute(delete(ReaderTokenUse).where(ReaderTokenUse.expires_at < utcnow()))
                session.add(ReaderTokenUse(nonce_hash=_nonce_hash(data["n"]), used_at=utcnow(),
                                           expires_at=datetime.fromtimestamp(data["x"], UTC).replace(tzinfo=None)))
                session.flush()  # a second use of the same link fails here, on the primary key
                row = session.scalar(select(ReaderRow).where(ReaderRow.email == data["e"]))
                if row is None:
                    row = ReaderRow(email=data["e"], session_generation=0)
                    session.add(row)
                    session.flush()
                return row.id, row.session_generation or 0
        except IntegrityError:
            return None

    used = await run_in_threadpool(consume)
    if used is None:
        return _refused_link(request, "used")
    response = redirect(safe_next(str(data["t"])))
    _set_cookie(request, response, *used)
    return response


async def signout(request: Request) -> Response:
    form = await checked_form(request)
    reader = await run_in_threadpool(current_reader, request)
    if reader is not None:
        state = web_state(request)

        def end() -> None:
            with session_scope(state.engine) as session:
                row = session.get(ReaderRow, reader.id)
                if row is not None and (row.session_generation or 0) == reader.generation:
                    row.session_generation = reader.generation + 1

        await run_in_threadpool(end)
    response = redirect(safe_next(str(form.get("next", ""))))
    response.delete_cookie(READER_COOKIE, path="/")
    return response


def routes() -> list[Route]:
    return [
        Route("/readers/signin", signin_page, methods=["GET"]),
        Route("/readers/signin", signin, methods=["POST"]),
        Route("/readers/signin/{token}", link_page, methods=["GET"]),
        Route("/readers/signin/{token}", use_link, methods=["POST"]),
        Route("/readers/signout", signout, methods=["POST"]),
    ]
