"""Unsubscribe, confirmation and the SendGrid event webhook, over real HTTP (uvicorn on loopback)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, func, select

from newsletter.config import Settings
from newsletter.store.db import ensure_newsletter, get_engine, session_scope
from newsletter.store.models import Event, Subscriber, Subscription, Suppression
from newsletter.subscribers.tokens import Signer, confirm_url, unsubscribe_url
from newsletter.web.public import create_public_app
from tests.web_server import serve

SECRET = "test-secret-key"
BASE = "https://news.example.com"


@dataclass
class Site:
    url: str
    engine: Engine
    key: ec.EllipticCurvePrivateKey
    ann: int  # subscriber ids
    bob: int
    newsletter_id: int

    def status(self, subscriber_id: int) -> str:
        with session_scope(self.engine) as s:
            return s.scalar(select(Subscription.status).where(Subscription.subscriber_id == subscriber_id))

    def suppressions(self) -> set[tuple[str, int | None, str]]:
        with session_scope(self.engine) as s:
            return {(r.email, r.newsletter_id, r.reason) for r in s.scalars(select(Suppression))}

    def path(self, url: str) -> str:
        return self.url + url.removeprefix(BASE)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    engine = get_engine(f"sqlite:///{tmp_path / 'web.db'}")
    with session_scope(engine) as s:
        nl = ensure_newsletter(s, "ai-weekly", "AI Weekly")
        ann, bob = Subscriber(email="ann@example.com", name="Ann"), Subscriber(email="bob@example.com")
        s.add_all([ann, bob])
        s.flush()
        s.add_all(
            [
                Subscription(newsletter_id=nl.id, subscriber_id=ann.id, status="active"),
                Subscription(newsletter_id=nl.id, subscriber_id=bob.id, status="pending"),
            ]
        )
        ids = (ann.id, bob.id, nl.id)
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
    app = create_public_app(Settings(secret_key=SECRET, base_url=BASE), engine, webhook_public_key=public)
    with serve(app) as url:
        yield Site(url, engine, key, *ids)


def test_one_click_post_unsubscribes_at_once(site: Site) -> None:
    url = site.path(unsubscribe_url(BASE, SECRET, site.ann, "ai-weekly"))
    r = httpx.post(
        url, content=b"List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 200 and not r.is_redirect and "unsubscribed" in r.text
    assert site.status(site.ann) == "unsubscribed"
    assert ("ann@example.com", site.newsletter_id, "unsubscribed") in site.suppressions()
    assert site.status(site.bob) == "pending"  # nobody else touched


def test_get_shows_a_page_with_one_button_and_changes_nothing(site: Site) -> None:
    url = site.path(unsubscribe_url(BASE, SECRET, site.ann, "ai-weekly"))
    r = httpx.get(url)
    assert r.status_code == 200 and r.text.count("<button") == 1 and "method=post" in r.text
    assert "ann@example.com" in r.text and "AI Weekly" in r.text
    assert site.status(site.ann) == "active"
    # The button's form posts the RFC 8058 body to the same URL.
    assert httpx.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert site.status(site.ann) == "unsubscribed"


def test_forged_or_altered_tokens_change_nothing(site: Site) -> None:
    good = unsubscribe_url(BASE, SECRET, site.ann, "ai-weekly").rsplit("/", 1)[1]
    forged = [
        Signer("guessed-secret").make("u", site.ann, "ai-weekly"),
        good[:-2] + ("AA" if good[-2:] != "AA" else "BB"),
        Signer(SECRET).make("c", site.ann, "ai-weekly"),  # a confirmation token is not an unsubscribe token
        "not-a-token",
    ]
    for token in forged:
        for method in ("GET", "POST"):
            r = httpx.request(method, f"{site.url}/u/{token}", content=b"List-Unsubscribe=One-Click")
            assert r.status_code == 400, (token, method)
    assert site.status(site.ann) == "active" and site.suppressions() == set()


def test_double_unsubscribe_is_harmless(site: Site) -> None:
    url = site.path(unsubscribe_url(BASE, SECRET, site.ann, "ai-weekly"))
    assert httpx.post(url, content=b"List-Unsubscribe=One-Click").status_code == 200
    with session_scope(site.engine) as s:
        first_change = s.scalar(select(Subscription.status_changed_at).where(Subscription.subscriber_id == site.ann))
    r = httpx.post(url, content=b"List-Unsubscribe=One-Click")
    assert r.status_code == 200 and "unsubscribed" in r.text
    with session_scope(site.engine) as s:
        assert (
            s.scalar(select(Subscription.status_changed_at).where(Subscription.subscriber_id == site.ann))
            == first_change
        )
        assert s.scalar(select(func.count()).select_from(Suppression)) == 1
    assert "You are unsubscribed" in httpx.get(url).text


def test_confirmation_link_activates_and_expires(site: Site) -> None:
    expired = confirm_url(BASE, SECRET, site.bob, "ai-weekly", ttl=-1)
    assert httpx.get(site.path(expired)).status_code == 410
    assert httpx.post(site.path(expired)).status_code == 410
    assert site.status(site.bob) == "pending"
    # A link without a nonce (sent before links carried one) still confirms a pending subscription, once.
    link = site.path(confirm_url(BASE, SECRET, site.bob, "ai-weekly"))
    assert httpx.get(link).status_code == 200 and site.status(site.bob) == "pending"
    r = httpx.post(link)
    assert r.status_code == 200 and site.status(site.bob) == "active"
    assert httpx.post(link).status_code == 410 and site.status(site.bob) == "active"


# -- webhook --------------------------------------------------------------------------------------------------


def signed(site: Site, events: list[dict], *, timestamp: int | None = None, key=None) -> dict:  # noqa: ANN001
    body = json.dumps(events, separators=(",", ":")).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = (key or site.key).sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "content": body,
        "headers": {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts,
        },
    }


def event(kind: str, email: str, event_id: str, **extra: object) -> dict:
    return {
        "email": email,
        "event": kind,
        "sg_event_id": event_id,
        "timestamp": int(time.time()),
        "newsletter": "ai-weekly",
        "send": "1",
        **extra,
    }


def hook(site: Site, request: dict) -> httpx.Response:
    return httpx.post(f"{site.url}/webhooks/sendgrid", **request)


def test_valid_signature_stores_events_and_acts(site: Site) -> None:
    events = [
        event("delivered", "ann@example.com", "e1"),
        event("spamreport", "ann@example.com", "e2"),
        event("bounce", "bob@example.com", "e3", type="bounce"),
    ]
    r = hook(site, signed(site, events))
    assert r.status_code == 200 and r.json() == {"stored": 3, "duplicates": 0}
    assert site.status(site.ann) == "complained" and site.status(site.bob) == "bounced"
    assert {("ann@example.com", None, "complained"), ("bob@example.com", None, "bounced")} <= site.suppressions()


def test_bad_signature_stale_timestamp_and_altered_body_are_refused(site: Site) -> None:
    events = [event("unsubscribe", "ann@example.com", "e1")]
    other_key = ec.generate_private_key(ec.SECP256R1())
    assert hook(site, signed(site, events, key=other_key)).status_code == 403
    assert hook(site, signed(site, events, timestamp=int(time.time()) - 3600)).status_code == 403
    tampered = signed(site, events)
    tampered["content"] = tampered["content"].replace(b"ann@", b"bob@")
    assert hook(site, tampered).status_code == 403
    unsigned = signed(site, events)
    del unsigned["headers"]["X-Twilio-Email-Event-Webhook-Signature"]
    assert hook(site, unsigned).status_code == 403
    assert site.status(site.ann) == "active"
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 0


def test_replayed_event_is_stored_and_acted_on_once(site: Site) -> None:
    request = signed(site, [event("unsubscribe", "ann@example.com", "e-replay")])
    assert hook(site, request).json() == {"stored": 1, "duplicates": 0}
    assert site.status(site.ann) == "unsubscribed"
    # The editor resubscribes Ann by hand; the same event arriving again must not undo that.
    with session_scope(site.engine) as s:
        s.scalar(select(Subscription).where(Subscription.subscriber_id == site.ann)).status = "active"
    assert hook(site, request).json() == {"stored": 0, "duplicates": 1}
    assert site.status(site.ann) == "active"
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 1


def test_soft_bounce_does_not_suppress(site: Site) -> None:
    hook(site, signed(site, [event("bounce", "ann@example.com", "e9", type="blocked")]))
    assert site.status(site.ann) == "active" and site.suppressions() == set()


def test_dropped_events_act_by_reason(site: Site) -> None:
    events = [event("dropped", "ann@example.com", "d1", reason="Spam Content (if spam checker app enabled)"),
              event("dropped", "bob@example.com", "d2", reason="Bounced Address")]
    assert hook(site, signed(site, events)).json() == {"stored": 2, "duplicates": 0}
    assert site.status(site.ann) == "active" and site.status(site.bob) == "bounced"


def test_unsubscribe_page_answers_while_a_send_holds_the_write_lock(site: Site, tmp_path: Path) -> None:
    """The page's read runs on the event loop for SQLite (newsletter/web/point_read.py): that is safe only
    because in WAL mode a writer never blocks readers; a send holding its write transaction must not stall it."""
    import sqlite3

    writer = sqlite3.connect(tmp_path / "web.db", isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # without WAL this alone would lock every reader out
        writer.execute("UPDATE subscription SET status = 'active' WHERE subscriber_id = ?", (site.bob,))
        url = site.path(unsubscribe_url(BASE, SECRET, site.ann, "ai-weekly"))
        started = time.monotonic()
        pages = [httpx.get(url, timeout=10) for _ in range(3)]
        assert all(p.status_code == 200 and "ann@example.com" in p.text for p in pages)
        assert time.monotonic() - started < 5  # busy_timeout is 30 s: a reader waiting on the lock would show
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert site.status(site.bob) == "pending"
