"""Public routes that readers and SendGrid reach: unsubscribe, opt-in confirmation, the event webhook.

A self-contained route list (`public_routes`) so the editors' app can mount it; `create_public_app` serves it
alone (tests, or a public host separate from the editors' one).

- GET  /u/{token}          a page with one button (mail scanners follow GET links, so GET changes nothing)
- POST /u/{token}          unsubscribes at once: RFC 8058 one-click (`List-Unsubscribe=One-Click`) and the button
- GET  /confirm/{token}    a page with one button (a scanner that follows the link confirms nothing)
- POST /confirm/{token}    double opt-in confirmation, once: the link names the request that sent it
- GET  /subscribe/{slug}   a subscribe form; POST sends the double opt-in email (same answer whatever the address),
                           at most 30 an hour per client, shared with the archive's form
- POST /webhooks/sendgrid  SendGrid Event Webhook, ECDSA-signed; its events also join the report's
                           (newsletter.report.record)
- GET  /r/{link}/{reader}  a tracked link (schedule file `tracking.clicks`): records the click, 302 to the
                           signed destination; a link whose signature does not match is refused (404)
- GET  /o/{issue}/{reader}.gif  the open pixel (`tracking.opens`)
- GET/POST /m/{token}      the reader's "manage your subscription" page (newsletter.web.manage)

Bodies are read with a running cap (newsletter.web.limits) before anything parses them. Database work runs in
Starlette's thread pool, never on the event loop: a send holding SQLite's write lock (or a slow PostgreSQL)
makes one handler wait, not every request the server is answering.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.config import Settings
from newsletter.render.tracking import InvalidLink, TrackSigner
from newsletter.report.agents import classify
from newsletter.report.record import record_click, record_open, record_provider_event
from newsletter.store.db import get_engine, install_id, secret_key, session_scope
from newsletter.store.models import Event, NewsletterRow, Subscriber, Subscription
from newsletter.subscribers import status as subscription_status
from newsletter.subscribers.manage import linked_subscription
from newsletter.subscribers.tokens import CONFIRM, UNSUBSCRIBE, InvalidToken, Signer, TokenData
from newsletter.web.auth import AttemptLimiter
from newsletter.web.limits import BodyTooLarge, read_body
from newsletter.web.manage import manage_routes
from newsletter.web.point_read import point_read, point_rows

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_EVENT_AGE = 300  # seconds: a signed request older than this is a replay
MAX_WEBHOOK_BODY = 5 * 1024 * 1024
MAX_FORM_BODY = 16 * 1024  # the subscribe form: an address, a name and a hidden field
SUBSCRIBE_LIMIT = (30, 3600)  # posts per client per window (seconds); the archive's form uses the same
# Tracked clicks and opens recorded per client address and reader value, and per client address, in 10 minutes:
# a reader clicking through an issue stays far below; a flood (a loop, a scanner, someone growing our tables)
# is still redirected, or shown the pixel, but no longer recorded.
TRACK_PER_READER = (60, 600)
TRACK_PER_CLIENT = (3000, 600)

# SendGrid event -> what it means for the address
EVENT_OUTCOMES = {
    "bounce": "bounced",
    "dropped": "bounced",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}


def _cross_site(request: Request, base_url: str) -> bool:
    """A form post made by another site's page (CSRF), judged by what browsers send on every form post.

    Without a session there is no token to check; Sec-Fetch-Site and Origin are set by the browser and cannot be
    forged by the other page. Requests without either (curl, old browsers) are let through: double opt-in
    still stands between them and a subscription.
    """
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin == "null"  # sandboxed frames and some redirects: never a legitimate subscriber
    allowed = {urlsplit(base_url).netloc, request.headers.get("host", "")}
    return urlsplit(origin).netloc not in allowed


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<meta name=robots content=noindex><title>{html.escape(title)}</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;"
        "color:#18181b}h1{font-size:1.6rem;line-height:1.25;overflow-wrap:anywhere}"
        "input{font:inherit;box-sizing:border-box;width:100%;padding:.55rem .7rem;margin-top:.25rem;"
        "border:1px solid #a1a1aa;border-radius:.4rem}"
        "button{font:inherit;padding:.6rem 1.2rem;border-radius:.4rem;border:0;"
        "background:#c2410c;color:#fff;cursor:pointer}"
        ":focus-visible{outline:3px solid #1d4ed8;outline-offset:2px}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>",
        status_code=status,
        # same-origin, not no-referrer: token URLs still never leave in a Referer, but a browser posting one of
        # these forms sends its real Origin (with no-referrer Chromium sends `Origin: null`, which
        # _cross_site rightly refuses: every sign-up from a real browser was answered 403).
        headers={"Cache-Control": "no-store", "Referrer-Policy": "same-origin"},
    )


# The unsubscribe page's one query, built once: SQLAlchemy then reuses its cache key and compiled form, and the
# page reads three columns through a connection rather than ORM objects through a session (a reader who follows
# the link waits for it; the profile had the ORM query at 48% of the page's time).
_LINK_LOOKUP = (
    select(Subscription.status, Subscriber.email, NewsletterRow.name)
    .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
    .join(NewsletterRow, NewsletterRow.id == Subscription.newsletter_id)
    .where(Subscription.subscriber_id == bindparam("subscriber_id"), NewsletterRow.slug == bindparam("slug"))
)


def _invalid_link() -> HTMLResponse:
    return _page(
        "This link is not valid",
        "<p>It may have been cut short or altered. Please use the link from the newsletter email itself.</p>",
        400,
    )


def public_routes(
    settings: Settings,
    engine: Engine | Callable[[], Engine] | None = None,
    *,
    webhook_public_key: str | None = None,
    max_event_age: int = MAX_EVENT_AGE,
    subscribe_limiter: AttemptLimiter | None = None,
) -> list[Route]:
    """The routes; `engine` defaults to the settings' database, `webhook_public_key` to
    SENDGRID_WEBHOOK_PUBLIC_KEY (base64 DER, as SendGrid shows it). Without a key every webhook is refused.
    `subscribe_limiter` counts subscribe posts per client (pass the archive form's so both share one budget)."""
    per_client = subscribe_limiter or AttemptLimiter(*SUBSCRIBE_LIMIT)

    def get_db() -> Engine:
        if engine is None:
            return get_engine(settings.database_url)
        return engine() if callable(engine) else engine

    signer_cache: list[Signer] = []

    def signer() -> Signer:
        if not signer_cache:
            with session_scope(get_db()) as session:
                signer_cache.append(Signer(secret_key(session, settings.secret_key)))
        return signer_cache[0]

    trackers: list[TrackSigner] = []
    track_readers, track_clients = AttemptLimiter(*TRACK_PER_READER), AttemptLimiter(*TRACK_PER_CLIENT)

    def may_record(request: Request) -> bool:
        client = request.client.host if request.client else "-"
        key = f"{client}|{request.path_params.get('reader', '')[:64]}"
        if track_readers.blocked_for(key) or track_clients.blocked_for(client):
            return False
        track_readers.failed(key)
        track_clients.failed(client)
        return True

    def tracker() -> TrackSigner:
        if not trackers:
            trackers.append(TrackSigner(signer().subkey("tracking")))
        return trackers[0]

    async def tracked_link(request: Request) -> Response:
        try:
            link = tracker().read_link(request.path_params["token"])
        except InvalidLink:
            return _page("This link does not work", "<p>The link is incomplete or was changed. Open it from the "
                         "email again, or visit the archive.</p>", 404)
        if not link.url.startswith(("http://", "https://")):
            return _page("This link does not work", "<p>The link does not lead to a web page.</p>", 404)
        sid = tracker().read_recipient(request.path_params.get("reader", ""))
        agent = classify(request.headers.get("user-agent"), request.client.host if request.client else None,
                         method=request.method)
        recipient = tracker().recipient_hash(sid) if sid is not None else None
        if may_record(request):  # the reader lands on the page either way
            await run_in_threadpool(record_click, get_db(), link, recipient, agent)
        # No cookie, no referrer to the destination: it learns nothing of the reader from us.
        return RedirectResponse(link.url, 302, headers={"Cache-Control": "private, no-store",
                                                        "Referrer-Policy": "no-referrer"})

    async def open_pixel(request: Request) -> Response:
        try:
            issue_id = tracker().read_pixel(request.path_params["token"])
        except InvalidLink:
            return Response(status_code=404)
        reader = request.path_params["reader"].removesuffix(".gif")
        sid = tracker().read_recipient(reader)
        if may_record(request):
            await run_in_threadpool(record_open, get_db(), issue_id, sid, tracker(),
                                    request.headers.get("user-agent"),
                                    request.client.host if request.client else None, request.method)
        return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "private, no-store, max-age=0"})

    installs: list[str] = []

    def track_event(session, event: dict, dedupe: str) -> None:  # noqa: ANN001
        record_provider_event(session, event, install=installs[0], signer=tracker(), dedupe=dedupe,
                              base_url=settings.base_url)

    def record_batch(events: list) -> tuple[int, int]:
        # The install id and the signing key first, each in its own transaction: made inside an event's
        # transaction on a fresh SQLite database, their insert would wait for that transaction's own lock.
        if not installs:
            installs.append(install_id(get_db()))
        tracker()
        return record_events(get_db(), events, track_event)

    def read(token: str, purpose: str) -> TokenData | None:
        try:
            return signer().read(token, purpose)
        except InvalidToken:
            return None

    def subscription_for(session, token: str):  # noqa: ANN001, ANN202
        """(token data, subscription, address, newsletter row) for a valid unsubscribe link, else None."""
        data = read(token, UNSUBSCRIBE)
        if data is None:
            return None
        found = linked_subscription(session, data.subscriber_id, data.newsletter_slug)
        return (data, *found) if found is not None else None

    def unsubscribed_page(email: str, name: str) -> Response:
        return _page("You are unsubscribed", f"<p>{html.escape(email)} no longer receives {html.escape(name)}.</p>")

    def link_lookup(data: TokenData) -> tuple[str, str, str] | None:
        """(status, address, newsletter name) of the subscription a valid unsubscribe link names."""
        rows = point_rows(get_db(), _LINK_LOOKUP, {"subscriber_id": data.subscriber_id,
                                                   "slug": data.newsletter_slug})
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    async def unsubscribe_page(request: Request) -> Response:
        data = read(request.path_params["token"], UNSUBSCRIBE)  # the MAC first: a forged link costs no query
        found = await point_read(get_db(), link_lookup, data) if data is not None else None
        if found is None:
            return _invalid_link()
        status, email, name = found
        if status in subscription_status.LEFT:
            return unsubscribed_page(email, name)
        return _page(
            f"Unsubscribe from {name}?",
            f"<p>{html.escape(email)} will no longer receive {html.escape(name)}.</p>"
            '<form method=post><input type=hidden name="List-Unsubscribe" value="One-Click">'
            "<button type=submit>Unsubscribe</button></form>",
        )

    def unsubscribe_now(token: str) -> tuple[TokenData, str, str, bool] | None:
        with session_scope(get_db()) as session:
            found = subscription_for(session, token)
            if found is None:
                return None
            data, _sub, email, nl = found
            changes = subscription_status.set_status(session, data.subscriber_id, nl.id, "unsubscribed")
            return data, email, nl.name, bool(changes and changes[0].changed)

    async def unsubscribe(request: Request) -> Response:
        # RFC 8058: the body is "List-Unsubscribe=One-Click"; the signed token is the authority, so any POST
        # to a valid link unsubscribes (mail providers differ in how they encode the body). No redirect.
        done = await run_in_threadpool(unsubscribe_now, request.path_params["token"])
        if done is None:
            return _invalid_link()
        data, email, name, changed = done
        if changed:
            log.info("unsubscribed subscriber %s from %s", data.subscriber_id, data.newsletter_slug)
        return unsubscribed_page(email, name)

    def confirm_token(request: Request) -> TokenData | Response:
        try:
            return signer().read(request.path_params["token"], CONFIRM)
        except InvalidToken as exc:
            if "expired" in str(exc):
                return _page(
                    "This link has expired",
                    "<p>Confirmation links last a week. Please subscribe again to get a new one.</p>",
                    410,
                )
            return _invalid_link()

    def used_link() -> HTMLResponse:
        return _page("This link has been used",
                     "<p>Each confirmation link works once. If you want this newsletter, subscribe again "
                     "to get a new one.</p>", 410)

    async def confirm_page(request: Request) -> Response:
        # Mail scanners and link previews fetch every link in a message: GET only shows the button.
        data = confirm_token(request)
        if isinstance(data, Response):
            return data

        def check(data: TokenData) -> tuple[bool, str]:
            with session_scope(get_db()) as session:
                nl = session.scalar(select(NewsletterRow).where(NewsletterRow.slug == data.newsletter_slug))
                usable = nl is not None and subscription_status.can_confirm(session, data.subscriber_id, nl.id,
                                                                           data.nonce)
                return usable, nl.name if nl else ""

        usable, name = await run_in_threadpool(check, data)
        if not usable:
            return used_link()
        return _page(f"Confirm your subscription to {name}",
                     f"<p>Press the button to start receiving {html.escape(name)}.</p>"
                     "<form method=post><button type=submit>Confirm my subscription</button></form>")

    async def confirm(request: Request) -> Response:
        data = confirm_token(request)
        if isinstance(data, Response):
            return data

        def confirm_now(data: TokenData) -> tuple[str | None, str]:
            with session_scope(get_db()) as session:
                nl = session.scalar(select(NewsletterRow).where(NewsletterRow.slug == data.newsletter_slug))
                result = (subscription_status.confirm_link(session, data.subscriber_id, nl.id, data.nonce)
                          if nl else None)
                return result, nl.name if nl else ""

        result, name = await run_in_threadpool(confirm_now, data)
        if result is None:
            return used_link()
        if result == "active":
            await run_in_threadpool(_welcome, settings, get_db(), data)
        if result != "active":
            return _page(
                "Subscription not confirmed",
                "<p>This address can no longer be mailed (it bounced "
                "or reported spam). Contact the editors if this is a mistake.</p>",
                409,
            )
        return _page("You are subscribed", f"<p>Thank you: {html.escape(name)} will arrive in your inbox.</p>")

    key = webhook_public_key if webhook_public_key is not None else os.environ.get("SENDGRID_WEBHOOK_PUBLIC_KEY")
    verifier = None
    if key:
        from sendgrid.helpers.eventwebhook import EventWebhook

        verifier = EventWebhook(key)

    async def sendgrid_webhook(request: Request) -> Response:
        if verifier is None:
            log.error("SendGrid webhook refused: SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
            return JSONResponse({"error": "webhook verification key not configured"}, 503)
        signature = request.headers.get(SIGNATURE_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        try:
            age = abs(time.time() - int(timestamp))
        except ValueError:
            return JSONResponse({"error": "missing or bad timestamp"}, 403)
        if age > max_event_age:
            return JSONResponse({"error": "stale timestamp"}, 403)
        try:
            raw = await read_body(request, MAX_WEBHOOK_BODY)
        except BodyTooLarge:
            return JSONResponse({"error": "body too large"}, 413)
        try:
            # Over the raw body, byte for byte: re-serialized JSON would not match the signature.
            valid = bool(signature) and verifier.verify_signature(raw.decode("utf-8"), signature, timestamp)
        except (ValueError, UnicodeDecodeError):
            valid = False
        if not valid:
            return JSONResponse({"error": "bad signature"}, 403)
        try:
            events = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            return JSONResponse({"error": "body is not JSON"}, 400)
        if not isinstance(events, list):
            return JSONResponse({"error": "expected a JSON array of events"}, 400)
        stored, duplicates = await run_in_threadpool(record_batch, events)
        return JSONResponse({"stored": stored, "duplicates": duplicates})

    async def subscribe_form(request: Request) -> Response:
        nl = _schedule(settings, request.path_params["slug"])
        if nl is None:
            return _page("No such newsletter", "<p>Check the address of this page.</p>", 404)
        return _subscribe_page(nl)

    async def subscribe(request: Request) -> Response:
        nl = _schedule(settings, request.path_params["slug"])
        if nl is None:
            return _page("No such newsletter", "<p>Check the address of this page.</p>", 404)
        if _cross_site(request, settings.base_url):
            # Another site's page posting this form would make its visitors' browsers sign up addresses.
            return _page("Please use the form on this site", "<p>This form only accepts posts from itself.</p>", 403)
        try:
            raw = await read_body(request, MAX_FORM_BODY)
        except BodyTooLarge:
            return _page("That was too much", "<p>The form sends an address and a name, nothing larger.</p>", 413)
        form = parse_qs(raw.decode("utf-8", "replace"))
        email = (form.get("email") or [""])[0].strip()
        name = (form.get("name") or [""])[0].strip()[:200] or None
        zone = _zone((form.get("timezone") or [""])[0])  # the browser's, filled in by the form's script
        if (form.get("website") or [""])[0]:  # a field people never see: only bots fill it in
            return _check_inbox(nl)
        client = request.client.host if request.client else "unknown"
        if per_client.blocked_for(client):
            return _page("Please try again later", "<p>Too many subscriptions from your address.</p>", 429)
        per_client.failed(client)
        from newsletter.subscribers.manage import InvalidAddress, normalize_email

        try:
            normalize_email(email)
        except InvalidAddress as exc:
            return _subscribe_page(nl, email=email, error=str(exc), status=400)
        try:
            await run_in_threadpool(_opt_in, settings, get_db(), nl, email, name, zone)
        except Exception:  # the reader cannot fix our mail server: log it, tell them to try later
            log.exception("subscribe: confirmation email to a new subscriber of %s failed", nl.slug)
            return _page("Please try again later", "<p>We could not send the confirmation email just now.</p>",
                         503)
        # The same answer whether the address was new, pending, subscribed or suppressed: the form must not
        # tell a stranger who reads this newsletter.
        return _check_inbox(nl)

    return [
        # The unsubscribe link first (every email carries it): the app tries routes in order, none overlap.
        Route("/u/{token}", unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", unsubscribe, methods=["POST"]),
        Route("/subscribe/{slug}", subscribe_form, methods=["GET"]),
        Route("/subscribe/{slug}", subscribe, methods=["POST"]),
        Route("/confirm/{token}", confirm_page, methods=["GET"]),
        Route("/confirm/{token}", confirm, methods=["POST"]),
        Route("/webhooks/sendgrid", sendgrid_webhook, methods=["POST"]),
        *manage_routes(settings, get_db, signer, _schedule, page_of=_page, invalid_link=_invalid_link,
                       cross_site=_cross_site),
        Route("/r/{token}/{reader}", tracked_link, methods=["GET"]),
        Route("/r/{token}/", tracked_link, methods=["GET"]),  # a copy with no reader (a test send, a forward)
        Route("/o/{token}/{reader}", open_pixel, methods=["GET"]),
    ]


RESEND_CONFIRMATION_AFTER = 600  # seconds between two confirmation emails to one pending address


def _schedule(settings: Settings, slug: str):  # noqa: ANN202 - a config.Newsletter or None
    from newsletter.config import SLUG_RE, ConfigError, load_newsletter

    if not SLUG_RE.match(slug):
        return None
    path = settings.schedules_dir / f"{slug}.toml"
    try:
        return load_newsletter(path) if path.is_file() else None
    except ConfigError:
        log.exception("subscribe: schedules/%s.toml is broken", slug)
        return None


def _subscribe_page(nl, email: str = "", error: str | None = None, status: int = 200) -> HTMLResponse:  # noqa: ANN001
    problem = f'<p role=alert style="color:#b91c1c">{html.escape(error)}</p>' if error else ""
    return _page(
        f"Subscribe to {nl.name}",
        (f"<p>{html.escape(nl.description)}</p>" if nl.description else "") + problem
        + "<form method=post><p><label>Email<br><input type=email name=email required "
        f'value="{html.escape(email, quote=True)}" autocomplete=email></label></p>'
        "<p><label>Name (optional)<br><input name=name autocomplete=name></label></p>"
        # The reader's time zone, so "07:00" can mean their 07:00; they can change it on the manage page.
        "<input type=hidden name=timezone value=\"\"><script src=/static/timezone.js defer></script>"
        '<p style="position:absolute;left:-9999px" aria-hidden=true><label>Website <input name=website '
        "tabindex=-1 autocomplete=off></label></p>"
        "<button type=submit>Subscribe</button></form>"
        "<p><small>We will email you a link to confirm. Unsubscribe any time with one click.</small></p>",
        status,
    )


def _check_inbox(nl) -> HTMLResponse:  # noqa: ANN001
    return _page("Check your inbox", f"<p>If the address can receive {html.escape(nl.name)}, a confirmation "
                 "email is on its way. Click the link in it to start your subscription.</p>")


def _zone(raw: str) -> str | None:
    from newsletter.subscribers.preferences import PreferenceError, check_timezone

    try:
        return check_timezone(raw[:64]) if raw.strip() else None
    except PreferenceError:
        return None  # a browser we do not understand: the newsletter's own zone, changeable later


def _opt_in(settings: Settings, engine: Engine, nl, email: str, name: str | None,  # noqa: ANN001
            zone: str | None = None) -> None:
    from newsletter.deliver.factory import make_mailer
    from newsletter.deliver.optin import request_opt_in
    from newsletter.store.db import ensure_newsletter

    mailer = make_mailer(settings)
    try:
        with session_scope(engine) as session:
            row = ensure_newsletter(session, nl.slug, nl.name)
            request_opt_in(session, row, nl, email, mailer, base_url=settings.base_url,
                           secret=secret_key(session, settings.secret_key), name=name, origin="web",
                           resend_after=RESEND_CONFIRMATION_AFTER, timezone=zone)
    finally:
        mailer.close()


def _welcome(settings: Settings, engine: Engine, data: TokenData) -> None:
    """The welcome email, once (newsletter.deliver.welcome); a mailer that fails is logged, never shown to the
    reader, who is subscribed either way."""
    from newsletter.deliver.factory import make_mailer
    from newsletter.deliver.welcome import send_welcome

    nl = _schedule(settings, data.newsletter_slug)
    if nl is None:
        return
    try:
        mailer = make_mailer(settings)
    except Exception:
        log.exception("welcome: no mailer for %s", nl.slug)
        return
    try:
        send_welcome(engine, nl, data.subscriber_id, mailer, settings)
    except Exception:
        log.exception("welcome to subscriber %s of %s failed", data.subscriber_id, nl.slug)
    finally:
        mailer.close()


# A transparent 1x1 GIF (the smallest image every mail client shows).
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c000000000100010000020144003b")


def _finite(text: str) -> float:
    # 1e400 reads as infinity, which no database's JSON column stores: refuse it with the body.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON")  # NaN, Infinity: Python's extensions, not JSON


def _event_id(event: dict) -> str:
    if event.get("sg_event_id"):
        return str(event["sg_event_id"])[:200]
    # Older or hand-made events lack an id: the event's own content identifies a replay of it.
    return "sha256:" + hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()


def record_events(engine: Engine, events: list, track: Callable[..., None] | None = None) -> tuple[int, int]:
    """Store each event of a webhook batch (non-objects are skipped): (stored, duplicates). `track(session,
    event, event_id)` adds it to the report's events in the same transaction."""
    stored = duplicates = 0
    for event in events:
        if not isinstance(event, dict):
            continue
        if record_event(engine, event, track):
            stored += 1
        else:
            duplicates += 1
    return stored, duplicates


def record_event(engine: Engine, event: dict, track: Callable[..., None] | None = None) -> bool:
    """Store one SendGrid event and act on it, once. False when this event id was seen before."""
    kind = str(event.get("event", ""))[:40]
    email = str(event.get("email", "")).strip()[:320]  # the column's width: longer is no address anyway
    when = None
    if isinstance(event.get("timestamp"), int | float):
        try:
            when = datetime.fromtimestamp(event["timestamp"], UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):  # a year past 9999, or NaN: keep the event, not the time
            when = None
    try:
        send = str(event.get("send", ""))
        # The column is a 32-bit integer: a longer number would make the database, not us, refuse the event.
        send_id = int(send) if send.isascii() and send.isdigit() and len(send) <= 9 else None
        with session_scope(engine) as session:
            session.add(
                Event(
                    provider="sendgrid",
                    provider_event_id=(event_id := _event_id(event)),
                    kind=kind,
                    email=email.lower() or None,
                    send_id=send_id,
                    occurred_at=when,
                    payload=event,
                )
            )
            session.flush()  # the unique event id turns a replay into an IntegrityError here
            outcome = _outcome(kind, event)
            if outcome and email:
                _act(session, email, outcome, event.get("newsletter"))
            if track is not None:
                track(session, event, event_id)
    except IntegrityError:
        return False
    return True


def _outcome(kind: str, event: dict) -> str | None:
    outcome = EVENT_OUTCOMES.get(kind)
    if kind == "bounce" and event.get("type") == "blocked":
        return None  # a soft bounce (blocked by the receiver for now) is not a dead address
    if kind == "dropped":
        # SendGrid drops mail for reasons of its own; only some are about the address.
        reason = str(event.get("reason", "")).lower()
        if "unsubscribed" in reason:
            return "unsubscribed"
        if "spam reporting" in reason:
            return "complained"
        if "spam content" in reason:
            return None  # the message was judged, not the address
    return outcome


def _act(session, email: str, outcome: str, slug: object) -> None:  # noqa: ANN001
    person_id = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
    if person_id is None:
        # Normalized addresses keep the local part's case; the provider may report it lowercased.
        person_id = session.scalar(select(Subscriber.id).where(Subscriber.email.ilike(email)))
    newsletter_id = None
    if isinstance(slug, str) and outcome == "unsubscribed":
        newsletter_id = session.scalar(select(NewsletterRow.id).where(NewsletterRow.slug == slug))
    if person_id is not None:
        subscription_status.set_status(session, person_id, newsletter_id, outcome)
    elif outcome != "unsubscribed":
        subscription_status.suppress(session, email, None, outcome)


def create_public_app(
    settings: Settings, engine: Engine | None = None, *, webhook_public_key: str | None = None
) -> Starlette:
    return Starlette(routes=public_routes(settings, engine, webhook_public_key=webhook_public_key))
