"""The "manage your subscription" page over real HTTP: the reader's choices, recorded with their time; a forged
link, another reader's link, a form from another page or another site change nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from newsletter.config import Settings
from newsletter.store.db import ensure_newsletter, get_engine, session_scope
from newsletter.store.models import PreferenceChange, Subscriber, Subscription, Suppression, utcnow
from newsletter.subscribers.tokens import Signer
from newsletter.web.public import create_public_app
from tests.web_server import serve

SECRET = "test-secret-key"
BASE = "https://news.example.com"

SCHEDULE = """
name = "Tech Digest"
from_address = "Tech Digest <digest@example.com>"

[[sources]]
name = "AI feed"
url = "https://ai.example.com/feed"
section = "AI"

[[sources]]
name = "Sec feed"
url = "https://sec.example.com/feed"
section = "Security"

[[sources]]
name = "OSS feed"
url = "https://oss.example.com/feed"
section = "Open source"
"""


@dataclass
class Site:
    url: str
    engine: Engine
    ann: int
    bob: int
    signer: Signer

    def link(self, subscriber_id: int) -> str:
        return self.url + self.signer.manage_url(BASE, subscriber_id, "tech").removeprefix(BASE)

    def sub(self, subscriber_id: int) -> Subscription:
        with session_scope(self.engine) as s:
            row = s.scalar(select(Subscription).where(Subscription.subscriber_id == subscriber_id))
            assert row is not None
            s.expunge(row)
            return row

    def changes(self) -> list[tuple[str, object, object]]:
        with session_scope(self.engine) as s:
            return [(c.field, c.old, c.new) for c in s.scalars(select(PreferenceChange).order_by(PreferenceChange.id))]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    (schedules / "tech.toml").write_text(SCHEDULE)
    engine = get_engine(f"sqlite:///{tmp_path / 'web.db'}")
    with session_scope(engine) as s:
        nl = ensure_newsletter(s, "tech", "Tech Digest")
        ann, bob = Subscriber(email="ann@example.com"), Subscriber(email="bob@example.com")
        s.add_all([ann, bob])
        s.flush()
        s.add_all([Subscription(newsletter_id=nl.id, subscriber_id=ann.id, status="active"),
                   Subscription(newsletter_id=nl.id, subscriber_id=bob.id, status="active")])
        ids = (ann.id, bob.id)
    app = create_public_app(Settings(secret_key=SECRET, base_url=BASE, schedules_dir=schedules), engine)
    with serve(app) as url:
        yield Site(url, engine, *ids, Signer(SECRET))


def csrf_of(page: str) -> str:
    found = re.search(r'name=csrf value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def post(url: str, data: dict[str, object], **headers: str) -> httpx.Response:
    return httpx.post(url, data=data, headers=headers)  # type: ignore[arg-type]


def test_the_page_shows_the_readers_choices_and_changes_nothing_on_get(site: Site) -> None:
    r = httpx.get(site.link(site.ann))
    assert r.status_code == 200
    assert "Manage your subscription to Tech Digest" in r.text and "ann@example.com" in r.text
    for section in ("AI", "Security", "Open source"):
        assert f'value="{section}" checked' in r.text
    assert "<option selected>UTC</option>" in r.text  # the newsletter's own zone until the reader picks one
    assert r.headers["cache-control"] == "no-store"
    assert site.changes() == []


def test_a_reader_turns_a_section_off_and_picks_a_zone_and_text_recorded_with_their_time(site: Site) -> None:
    link = site.link(site.ann)
    before = utcnow()
    r = post(link, {"csrf": csrf_of(httpx.get(link).text), "action": "save", "section": ["AI", "Open source"],
                    "timezone": "Asia/Tokyo", "format": "text"})
    assert r.status_code == 200 and "Changes apply from the next issue" in r.text
    sub = site.sub(site.ann)
    assert sub.sections_off == ["Security"] and sub.timezone == "Asia/Tokyo" and sub.format == "text"
    assert sub.preferences_changed_at is not None and sub.preferences_changed_at >= before
    assert sorted(site.changes()) == [("format", None, "text"), ("sections_off", None, ["Security"]),
                                      ("timezone", None, "Asia/Tokyo")]
    assert 'value="Security" style' in r.text and 'value="AI" checked' in r.text  # the page shows it back
    # Bob's choices are his own.
    bob = site.sub(site.bob)
    assert bob.sections_off is None and bob.timezone is None


def test_a_forged_or_altered_link_changes_nothing(site: Site) -> None:
    link = site.link(site.ann)
    csrf = csrf_of(httpx.get(link).text)
    payload, sig = link.rsplit("/", 1)[1].split(".")
    altered = link.rsplit("/", 1)[0] + "/" + payload + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
    forged = site.url + Signer("another-key").manage_url(BASE, site.ann, "tech").removeprefix(BASE)
    unsubscribe_token = site.url + "/m/" + site.signer.unsubscribe_url(BASE, site.ann, "tech").rsplit("/", 1)[1]
    for url in (altered, forged, unsubscribe_token, site.url + "/m/garbage"):
        assert httpx.get(url).status_code == 400
        r = post(url, {"csrf": csrf, "action": "leave"})
        assert r.status_code == 400 and "not valid" in r.text
    assert site.sub(site.ann).status == "active" and site.changes() == []


def test_another_readers_link_with_a_form_from_this_page_changes_nothing(site: Site) -> None:
    anns_form = csrf_of(httpx.get(site.link(site.ann)).text)
    for action in ("save", "leave", "pause"):
        r = post(site.link(site.bob), {"csrf": anns_form, "action": action, "section": [], "format": "text",
                                       "weeks": "4"})
        assert r.status_code == 403
    r = post(site.link(site.bob), {"action": "leave"})  # no CSRF field at all
    assert r.status_code == 403
    bob = site.sub(site.bob)
    assert bob.status == "active" and bob.sections_off is None and bob.paused_until is None
    assert site.changes() == []


def test_a_post_from_another_site_changes_nothing(site: Site) -> None:
    link = site.link(site.ann)
    csrf = csrf_of(httpx.get(link).text)
    for headers in ({"sec-fetch-site": "cross-site"}, {"origin": "https://evil.example"}):
        assert post(link, {"csrf": csrf, "action": "leave"}, **headers).status_code == 403
    assert site.sub(site.ann).status == "active"


def test_a_choice_the_newsletter_does_not_offer_is_refused_and_nothing_changes(site: Site) -> None:
    link = site.link(site.ann)
    csrf = csrf_of(httpx.get(link).text)
    for data, field in (({"section": ["Gardening"]}, "sections"), ({"timezone": "Mars/Olympus"}, "timezone"),
                        ({"format": "pdf"}, "format"), ({"frequency": "hourly"}, "frequency")):
        r = post(link, {"csrf": csrf, "action": "save", **data})
        assert r.status_code == 400 and f"{field}:" in r.text, r.text
    assert site.changes() == []


def test_pause_for_n_weeks_then_resume(site: Site) -> None:
    link = site.link(site.ann)
    csrf = csrf_of(httpx.get(link).text)
    r = post(link, {"csrf": csrf, "action": "pause", "weeks": "3"})
    assert r.status_code == 200 and "Paused until" in r.text
    until = site.sub(site.ann).paused_until
    assert until is not None and abs(until - (utcnow() + timedelta(weeks=3))) < timedelta(minutes=1)
    assert post(link, {"csrf": csrf, "action": "pause", "weeks": "99"}).status_code == 400
    r = post(link, {"csrf": csrf, "action": "resume"})
    assert r.status_code == 200 and site.sub(site.ann).paused_until is None
    assert [c[0] for c in site.changes()] == ["paused_until", "paused_until"]


def test_leaving_from_the_page_unsubscribes_and_suppresses(site: Site) -> None:
    link = site.link(site.ann)
    r = post(link, {"csrf": csrf_of(httpx.get(link).text), "action": "leave"})
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    assert site.sub(site.ann).status == "unsubscribed"
    with session_scope(site.engine) as s:
        assert s.scalar(select(Suppression.reason).where(Suppression.email == "ann@example.com")) == "unsubscribed"
    assert "You are unsubscribed" in httpx.get(link).text
