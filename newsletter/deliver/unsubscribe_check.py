"""`newsletter check SLUG --unsubscribe`: the one-click unsubscribe, tried for real (RFC 8058).

A test subscriber of its own (selftest-<random>@<From domain>, never mailed) is added, its unsubscribe link
signed as a real copy's List-Unsubscribe header is, and the request a mail provider sends is posted to it at the
configured base URL (NEWSLETTER_BASE_URL): `POST` with the body `List-Unsubscribe=One-Click`, no cookies, no
redirects followed (providers follow none). Then the database must say at once that the address is
unsubscribed and suppressed; Gmail and Yahoo give a sender two days, this asks for no delay at all. The test
subscriber is removed afterwards, whatever happened.

The POST goes to the operator's own site, named by the operator's own setting (never by a feed or a form), so it
is made with httpx directly rather than through the collector's guarded fetcher, which refuses the loopback and
private addresses a site under test often has.
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlparse

import httpx
from sqlalchemy import Engine, delete, select

from newsletter.config import Newsletter, Settings
from newsletter.deliver.dkim import domain_of
from newsletter.render.report import Report
from newsletter.store.db import ensure_newsletter, secret_key, session_scope
from newsletter.store.models import Subscriber, Subscription, Suppression
from newsletter.subscribers.manage import add_subscriber
from newsletter.subscribers.tokens import Signer

TIMEOUT = 15.0
ONE_CLICK = b"List-Unsubscribe=One-Click"


def check_unsubscribe(engine: Engine, nl: Newsletter, settings: Settings) -> Report:
    report = Report(name="one-click unsubscribe check")
    base = settings.base_url.rstrip("/")
    if urlparse(base).scheme != "https":
        report.add("warn", "one-click", f"NEWSLETTER_BASE_URL is {base}: RFC 8058 one-click needs an https link, "
                                        "so Gmail and Yahoo show no unsubscribe button; set it to your https site")
    address = f"selftest-{secrets.token_hex(6)}@{domain_of(nl.from_address) or 'example.org'}"
    with session_scope(engine) as session:
        row = ensure_newsletter(session, nl.slug, nl.name)
        newsletter_id = row.id
        subscriber_id = add_subscriber(session, row, address, origin="selftest").subscriber_id
        secret = secret_key(session, settings.secret_key)
    try:
        url = Signer(secret).unsubscribe_url(base, subscriber_id, nl.slug)
        shown = url.split("/u/")[0] + "/u/…"
        started = time.monotonic()
        try:
            response = httpx.post(url, content=ONE_CLICK, follow_redirects=False, timeout=TIMEOUT,
                                  headers={"Content-Type": "application/x-www-form-urlencoded",
                                           "User-Agent": "newsletter one-click self-test"})
        except httpx.HTTPError as exc:
            report.add("fail", "one-click", f"cannot reach {shown} ({type(exc).__name__}: {exc}): is `newsletter "
                                            "serve` running there, and NEWSLETTER_BASE_URL its public address?")
            return report
        took = (time.monotonic() - started) * 1000
        if response.is_redirect:
            report.add("fail", "one-click", f"POST {shown} answered {response.status_code} (a redirect to "
                                            f"{response.headers.get('location', '?')}): mail providers follow no "
                                            "redirect of a one-click request, so nobody is unsubscribed")
            return report
        if response.status_code >= 300:
            report.add("fail", "one-click", f"POST {shown} answered {response.status_code}: the one-click request "
                                            "was refused")
            return report
        with session_scope(engine) as session:
            status = session.scalar(select(Subscription.status).where(
                Subscription.subscriber_id == subscriber_id, Subscription.newsletter_id == newsletter_id))
            suppressed = session.scalar(select(Suppression.reason).where(
                Suppression.email == address,
                (Suppression.newsletter_id == newsletter_id) | Suppression.newsletter_id.is_(None)))
        if status != "unsubscribed" or suppressed is None:
            report.add("fail", "one-click", f"POST {shown} answered {response.status_code} but the test address is "
                                            f"still {status} (suppressed: {'yes' if suppressed else 'no'}) in this "
                                            "database: does the site at NEWSLETTER_BASE_URL use the same "
                                            "NEWSLETTER_DATABASE_URL?")
            return report
        report.add("ok", "one-click", f"POST {shown} (List-Unsubscribe=One-Click) answered {response.status_code} "
                                      f"in {took:.0f} ms and the test address was unsubscribed and suppressed at "
                                      "once")
        return report
    finally:
        with session_scope(engine) as session:  # leave no trace: the test address was never a reader
            session.execute(delete(Suppression).where(Suppression.email == address))
            session.execute(delete(Subscription).where(Subscription.subscriber_id == subscriber_id))
            session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))
