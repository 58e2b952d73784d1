"""Readers find sent issues on the web, follow them by Atom, and subscribe with a double opt-in."""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email import policy
from xml.etree import ElementTree as ET

from sqlalchemy import select

from newsletter.deliver.outbox import OutboxMailer
from newsletter.store.db import session_scope
from newsletter.store.models import Subscriber, Subscription
from newsletter.web.archive import public_html
from tests.web_support import csrf_of

pytest_plugins = ["tests.web_fixtures"]
ATOM = "{http://www.w3.org/2005/Atom}"


def _subscribe(client, address: str, **extra):  # noqa: ANN001, ANN003, ANN201
    page = client.get("/archive/city")
    return client.post("/archive/city/subscribe", data={"csrf": csrf_of(page.text), "email": address, **extra})


def _status(site, address: str) -> str | None:  # noqa: ANN001
    with session_scope(site.engine) as session:
        return session.scalar(select(Subscription.status).join(Subscriber, Subscriber.id == Subscription.subscriber_id)
                              .where(Subscriber.email == address))


def _confirmation(site, address: str) -> email.message.EmailMessage:  # noqa: ANN001
    path = site.root / "outbox" / "city" / "messages" / f"{address}.eml"
    return email.message_from_bytes(path.read_bytes(), policy=policy.default)


def test_archive_lists_sent_issues_only(site, client) -> None:
    page = client.get("/archive/city")
    assert page.status_code == 200
    assert '<a href="/archive/city/1">City Weekly #1: Old market reopens</a>' in page.text
    assert "Bridge plan approved" not in page.text and "/archive/city/2" not in page.text
    assert 'href="/archive/city/feed.xml"' in page.text
    assert "City Weekly" in client.get("/archive/").text
    assert client.get("/archive/nope").status_code == 404
    assert client.get("/", follow_redirects=False).headers["location"] == "/archive/"


def test_an_archived_issue_carries_nobody_s_token_or_address(site, client) -> None:
    page = client.get("/archive/city/1")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    body = page.text
    assert "Old market reopens" in body and "Harbour dredging ends" in body
    assert "%%" not in body and "/u/" not in body and "ann@example.com" not in body
    assert 'href="/archive/city/1/1-old-market-reopens"' in body  # the web edition: each story its own page
    # The copy Ann got had her own link where the archive has none.
    sent = email.message_from_bytes((site.root / "outbox" / "city" / "issue-1" / "ann@example.com.eml").read_bytes(),
                                    policy=policy.default)
    assert "https://news.example.com/u/" in sent.get_body(("html",)).get_content()


def test_public_html_removes_signed_links_a_template_wrote_itself() -> None:
    raw = ('<a href="%%unsubscribe_url%%">Unsubscribe</a> <a href="https://n.example/u/abc.DEF-_1">mine</a>'
           " Hello %%name%% (%%email%%)")
    out = public_html(raw, "https://n.example", "city")
    assert out == ('<a href="https://n.example/archive/city">Unsubscribe</a> '
                   '<a href="https://n.example/archive/city">mine</a> Hello  ()')


def test_atom_feed_of_sent_issues(site, client) -> None:
    response = client.get("/archive/city/feed.xml")
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(response.content)
    assert feed.tag == f"{ATOM}feed" and feed.find(f"{ATOM}title").text == "City Weekly"
    assert feed.find(f"{ATOM}id").text == "https://news.example.com/archive/city"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", feed.find(f"{ATOM}updated").text)
    entries = feed.findall(f"{ATOM}entry")
    assert len(entries) == 1
    entry = entries[0]
    assert entry.find(f"{ATOM}title").text == "City Weekly #1: Old market reopens"
    assert entry.find(f"{ATOM}link").get("href") == "https://news.example.com/archive/city/1"
    content = entry.find(f"{ATOM}content")
    assert content.get("type") == "html"
    page = "https://news.example.com/archive/city/1/1-old-market-reopens"
    assert f'<a href="{page}">Old market reopens</a>' in content.text
    assert '<a href="https://city.example/market">(the original)</a>' in content.text


def test_subscribe_then_confirm(site, client) -> None:
    response = _subscribe(client, "Reader@Example.org")
    assert response.status_code == 200 and "Check your inbox" in response.text
    assert _status(site, "Reader@example.org") == "pending"
    message = _confirmation(site, "reader@example.org")
    assert message["Subject"] == "Confirm your subscription to City Weekly"
    assert message["From"] == "City Weekly <news@city.example>" and "List-Unsubscribe" not in message
    link = re.search(r"https://news\.example\.com(/confirm/\S+)", message.get_body(("plain",)).get_content()).group(1)
    assert link in message.get_body(("html",)).get_content()
    page = client.get(link)  # a button: following the link (as mail scanners do) confirms nothing
    assert page.status_code == 200 and "<form method=post>" in page.text
    assert _status(site, "Reader@example.org") == "pending"
    page = client.post(link)
    assert page.status_code == 200 and "You are subscribed" in page.text
    assert _status(site, "Reader@example.org") == "active"
    assert client.get(link[:-3] + "xyz").status_code == 400  # an altered link does nothing


def test_subscribe_answers_the_same_whoever_is_asking(site, client) -> None:
    again = _subscribe(client, "ann@example.com")  # already active: no email, same answer
    assert again.status_code == 200 and "Check your inbox" in again.text
    assert not (site.root / "outbox" / "city" / "messages").exists()
    assert _status(site, "ann@example.com") == "active"


def test_subscribe_refuses_bad_addresses_and_robots(site, client) -> None:
    response = _subscribe(client, "not an address")
    assert response.status_code == 400 and "not an email address" in response.text
    response = _subscribe(client, "bot@example.com", website="https://spam.example")
    assert response.status_code == 200 and _status(site, "bot@example.com") is None


def test_confirmation_emails_are_limited_per_address(site, client) -> None:
    pushed: list[str] = []

    class CountingOutbox(OutboxMailer):  # the real outbox, counting what goes through it
        def push(self, message, recipients):  # noqa: ANN001, ANN202
            pushed.extend(r.email for r in recipients)
            return super().push(message, recipients)

    client.app.state.web.make_mailer = lambda: CountingOutbox(site.settings.outbox_dir)
    for _ in range(5):
        assert "Check your inbox" in _subscribe(client, "many@example.com").text
    assert _subscribe(client, "other@example.com").status_code == 200
    # However often the form is posted, nobody's inbox can be flooded through it.
    assert pushed == ["many@example.com", "other@example.com"]
    assert _status(site, "many@example.com") == "pending"
    with session_scope(site.engine) as session:  # ten minutes later, one more is fine (a lost email)
        for sub in session.scalars(select(Subscription)):
            if sub.status_changed_at:
                sub.status_changed_at -= timedelta(minutes=11)
    _subscribe(client, "many@example.com")
    assert pushed[-1] == "many@example.com" and len(pushed) == 3


def test_subscriptions_from_one_client_are_limited(site, client) -> None:
    client.app.state.web.subscribe_per_client.limit = 3
    assert [_subscribe(client, f"p{n}@example.com").status_code for n in range(4)] == [200, 200, 200, 429]
    assert _status(site, "p3@example.com") is None


def test_an_issue_page_kept_in_memory_follows_its_row(site, client) -> None:  # noqa: ANN001
    # The page is kept after the first view; a change to the row made elsewhere (another process re-rendering
    # it, or the render cleared) must show on the next view, not the kept copy.
    from newsletter.store.models import IssueRow

    first = client.get("/archive/city/1")
    assert first.status_code == 200 and client.get("/archive/city/1").text == first.text
    with session_scope(site.engine) as session:
        session.get(IssueRow, site.sent_issue_id).subject = "City Weekly #1: corrected by the editors"
    changed = client.get("/archive/city/1")
    assert "<h1>City Weekly #1: corrected by the editors</h1>" in changed.text
    with session_scope(site.engine) as session:
        session.get(IssueRow, site.sent_issue_id).status = "held"  # no longer public
    assert client.get("/archive/city/1").status_code == 404
