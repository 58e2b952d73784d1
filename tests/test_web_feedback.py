"""Readers' "this summary is wrong / misleading" and editors' corrections (issue 19), over real HTTP.

The app is served by uvicorn on loopback (tests/web_server.py); the feedback link is read from a real send's
outbox email, as the reader's inbox would have it; sign-in links come from the outbox too.
"""

from __future__ import annotations

import email
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from email import policy
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from newsletter.store.db import ensure_newsletter, session_scope
from newsletter.store.models import IssueItem, IssueRow, Reader, ReaderBlock, StoryFeedback
from newsletter.subscribers.tokens import Signer
from tests.conftest import BOTH_DATABASES
from tests.conversation_support import sign_in_reader
from tests.test_web_edition import send_second_issue
from tests.web_server import serve
from tests.web_support import EDITOR, Site, add_editor, csrf_of, make_site, sign_in

BOB = "bob@example.com"
STORY = "/archive/city/2/1-bridge-plan-approved"


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[tuple[Site, str]]:
    from argon2 import PasswordHasher, profiles

    from newsletter.subscribers.manage import add_subscriber
    from newsletter.web import auth
    from newsletter.web.app import create_app

    site = make_site(tmp_path, base_url="http://127.0.0.1", database_url=db_url)
    saved = auth._hasher
    auth._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)
    try:
        add_editor(site.engine)
    finally:
        auth._hasher = saved
    with session_scope(site.engine) as session:
        add_subscriber(session, ensure_newsletter(session, "city", "City Weekly"), BOB)
    send_second_issue(site)  # a real send to Ann and Bob: the links below are read from their emails
    with serve(create_app(site.settings, engine=site.engine)) as base:
        yield site, base
    site.engine.dispose()


def _client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=60)


def _email(site: Site, address: str, number: int = 2) -> email.message.EmailMessage:
    path = site.root / "outbox" / "city" / f"issue-{number}" / f"{address}.eml"
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def feedback_links(site: Site, address: str) -> list[str]:
    """The "Summary wrong?" links of the HTML part, one per story, as paths."""
    html = _email(site, address).get_body(("html",)).get_content()
    return [re.sub(r"^https?://[^/]+", "", m) for m in re.findall(r'<a href="([^"]+)"[^>]*>Summary wrong\?</a>', html)]


def _feedback(site: Site) -> list[StoryFeedback]:
    with session_scope(site.engine) as session:
        rows = list(session.scalars(select(StoryFeedback).order_by(StoryFeedback.id)))
        session.expunge_all()
        return rows


@BOTH_DATABASES
def test_the_emails_link_is_per_recipient_and_a_scanner_opening_it_files_nothing(world) -> None:  # noqa: ANN001
    site, base = world
    ann, bob = feedback_links(site, "ann@example.com"), feedback_links(site, BOB)
    assert len(ann) == 3 and ann[0].endswith("/2/1") and ann[2].endswith("/2/3")
    assert ann[0] != bob[0]  # each recipient's own token
    assert "ann" not in ann[0] and "example.com" not in ann[0] and "%40" not in ann[0]  # no address in the URL
    text = _email(site, BOB).get_body(("plain",)).get_content()
    assert "Summary wrong? Tell the editors [" in text and bob[0].split("/f/")[1] in text
    with _client(base) as scanner:
        page = scanner.get(bob[0])
        assert page.status_code == 200, page.text
        assert "Is this summary wrong?" in page.text and "Bridge plan approved" in page.text
        assert _feedback(site) == []  # opening the link filed nothing
        assert scanner.post(bob[0], data={"kind": "wrong"}).status_code == 403  # no CSRF token: refused
        assert _feedback(site) == []

    with _client(base) as reader:
        page = reader.get(bob[0])
        sent = reader.post(bob[0], data={"csrf": csrf_of(page.text), "kind": "misleading",
                                         "reason": "The plan was approved in committee, not by the council."})
        assert sent.status_code == 200 and "Thank you" in sent.text
        again = reader.post(bob[0], data={"csrf": csrf_of(page.text), "kind": "wrong", "reason": "Wrong date too."})
        assert again.status_code == 200
    rows = _feedback(site)
    assert len(rows) == 1, "one feedback per person per story: filing again replaces it"
    assert rows[0].kind == "wrong" and rows[0].reason == "Wrong date too." and rows[0].status == "open"
    assert rows[0].reader_id is None and rows[0].subscriber_id is not None


def test_forged_expired_and_overlong_links_are_refused(world) -> None:  # noqa: ANN001
    site, base = world
    link = feedback_links(site, BOB)[0]
    prefix, token, tail = link.split("/", 3)[1], link.split("/")[2], "/".join(link.split("/")[3:])
    payload, sig = token.split(".")
    forged = f"/{prefix}/{payload}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}/{tail}"
    with session_scope(site.engine) as session:
        subscriber = session.scalar(select(IssueRow.id))  # any id: the signature is what matters
    expired = Signer(site.settings.secret_key).feedback_urls("", [subscriber or 1], "city", ttl=-10)[0]
    with _client(base) as client:
        assert client.get(forged).status_code == 400
        assert "not valid" in client.get(forged).text
        gone = client.get(f"{expired}/{tail}")
        assert gone.status_code == 410 and "expired" in gone.text
        assert client.get(f"/f/{'x' * 5000}/2/1").status_code == 400
        assert client.get(link.rsplit("/", 1)[0] + "/9").status_code == 404  # no story 9 in issue 2
        page = client.get(link)
        honeypot = client.post(link, data={"csrf": csrf_of(page.text), "kind": "wrong", "website": "http://spam"})
        assert honeypot.status_code == 400
        bad_kind = client.post(link, data={"csrf": csrf_of(page.text), "kind": "boring"})
        assert bad_kind.status_code == 400
        too_long = client.post(link, data={"csrf": csrf_of(page.text), "kind": "wrong", "reason": "x" * 501})
        assert too_long.status_code == 400 and "too long" in too_long.text
    assert _feedback(site) == []


def test_feedback_is_rate_limited(world) -> None:  # noqa: ANN001
    site, base = world
    links = feedback_links(site, BOB)
    with _client(base) as client:
        page = client.get(links[0])
        answers = [client.post(links[n % 3], data={"csrf": csrf_of(page.text), "kind": "wrong"}).status_code
                   for n in range(7)]
    assert answers[:5] == [200] * 5 and answers[5:] == [429, 429]
    assert len(_feedback(site)) == 3  # one per story: the repeats replaced


@BOTH_DATABASES
def test_a_signed_in_reader_files_it_on_the_story_page_and_the_editor_corrects(world) -> None:  # noqa: ANN001
    site, base = world
    with session_scope(site.engine) as session:  # sent an hour ago: the feeds' times tell the correction apart
        sent = session.get(IssueRow, site.draft_issue_id)
        sent.sent_at = sent.sent_at - timedelta(hours=1)
    with _client(base) as bob, _client(base) as editor, _client(base) as stranger:
        signed_out = stranger.get(STORY).text
        assert "This summary is wrong or misleading?" in signed_out and 'name="reason"' not in signed_out
        assert f"next={STORY}%23feedback" in signed_out  # back to the form once signed in
        sign_in_reader(bob, site, BOB, STORY)
        page = bob.get(STORY)
        assert "<summary>This summary is wrong or misleading</summary>" in page.text
        item = int(re.search(r'name="item" value="(\d+)"', page.text).group(1))
        no_csrf = bob.post("/readers/feedback", data={"item": str(item), "kind": "wrong", "next": STORY})
        assert no_csrf.status_code == 403
        sent = bob.post("/readers/feedback", data={"csrf": csrf_of(page.text), "item": str(item), "kind": "wrong",
                                                   "reason": "It was the committee.", "next": STORY})
        assert sent.status_code == 303 and sent.headers["location"] == STORY + "#feedback"
        assert "You told the editors this summary is wrong" in bob.get(STORY).text
        assert "You told the editors" not in stranger.get(STORY).text  # the kept page is nobody's

        assert sign_in(editor).status_code == 303
        issue = editor.get(f"/editor/issues/{site.draft_issue_id}")
        assert "1 open" in issue.text and "/editor/feedback/?newsletter=city&amp;issue=2" in issue.text
        queue = editor.get("/editor/feedback/?newsletter=city&issue=2")
        assert queue.status_code == 200
        assert "It was the committee." in queue.text and f"{BOB} (signed in)" in queue.text
        feed_before = stranger.get("/archive/city/feed.json").json()
        assert "date_modified" not in feed_before["items"][0]

        fixed = "The transport committee approved the bridge plan; the full council votes in May."
        corrected = editor.post(f"/editor/feedback/stories/{item}/correct",
                                data={"csrf": csrf_of(queue.text), "summary": fixed, "newsletter": "city",
                                      "issue": "2"})
        assert corrected.status_code == 303
        assert "corrected" in editor.get(corrected.headers["location"]).text

        story = stranger.get(STORY).text  # the kept page was made again
        assert fixed in story and re.search(r"Corrected <time datetime=\"[0-9T:-]+Z\">", story)
        assert f'<meta property="og:description" content="{fixed}">' in story
        card = stranger.get("/archive/city/2").text
        assert fixed in card and "Corrected" in card
        feed = stranger.get("/archive/city/feed.json").json()
        assert fixed in feed["items"][0]["content_html"] and "date_modified" in feed["items"][0]
        atom = stranger.get("/archive/city/feed.xml").text
        assert fixed in atom
        entry = atom.split("<entry>")[1]
        assert re.search(r"<published>([^<]+)</published>", entry).group(1) != \
            re.search(r"<updated>([^<]+)</updated>", entry).group(1)
    rows = _feedback(site)
    assert [r.status for r in rows] == ["resolved"]
    with session_scope(site.engine) as session:
        row = session.get(IssueItem, item)
        assert row.summary == fixed and row.corrected_at is not None and row.original_summary
        assert row.original_summary != fixed  # what went out in the email is kept


def test_the_api_lists_feedback(world) -> None:  # noqa: ANN001
    from newsletter.web.auth import issue_api_token

    site, base = world
    link = feedback_links(site, BOB)[1]
    with _client(base) as client:
        page = client.get(link)
        client.post(link, data={"csrf": csrf_of(page.text), "kind": "misleading",
                                "reason": "Old figures. <script>alert(1)</script>"})
    with session_scope(site.engine) as session:
        token = issue_api_token(session, EDITOR)
    with _client(base) as api:
        api.headers["Authorization"] = f"Bearer {token}"
        listed = api.get("/api/newsletters/city/feedback")
        assert listed.status_code == 200, listed.text
        (one,) = listed.json()["feedback"]
        assert one["kind"] == "misleading" and one["from"] == "email"
        assert one["reason"] == "Old figures. <script>alert(1)</script>"  # as typed: shown escaped, below
        assert one["issue_number"] == 2 and one["story_url"].endswith("/archive/city/2/2-" + one["story_url"]
                                                                      .split("/2/2-")[1])
        assert api.get("/api/newsletters/city/feedback?status=resolved").json() == {"feedback": []}
        assert api.get("/api/newsletters/nope/feedback").status_code == 404
        assert httpx.get(f"{base}/api/newsletters/city/feedback").status_code == 401
        spec = api.get("/api/openapi.json").json()
        assert "/api/newsletters/{slug}/feedback" in spec["paths"]
    assert json.dumps(one)
    with _client(base) as editor:
        assert sign_in(editor).status_code == 303
        queue = editor.get("/editor/feedback/?newsletter=city").text
        assert "Old figures. &lt;script&gt;alert(1)&lt;/script&gt;" in queue and "<script>alert" not in queue


def test_a_block_is_per_newsletter(world) -> None:  # noqa: ANN001
    from newsletter.web.readers import blocked_on

    site, base = world
    with session_scope(site.engine) as session:
        ensure_newsletter(session, "other", "Other News")
    with _client(base) as bob, _client(base) as editor:
        sign_in_reader(bob, site, BOB, STORY)
        with session_scope(site.engine) as session:
            reader_id = session.scalar(select(Reader.id).where(Reader.email == BOB))
        assert sign_in(editor).status_code == 303
        queue = editor.get("/editor/comments/?newsletter=city")
        done = editor.post(f"/editor/comments/readers/{reader_id}/block",
                           data={"csrf": csrf_of(queue.text), "newsletter": "city"})
        assert done.status_code == 303
        assert "is blocked on city" in editor.get(done.headers["location"]).text
        page = bob.get(STORY).text
        assert "You cannot post here." in page and 'name="body"' not in page
        assert "This summary is wrong or misleading</summary>" not in page
    with session_scope(site.engine) as session:
        assert blocked_on(session, reader_id, "city") and not blocked_on(session, reader_id, "other")
        assert [(b.reader_id, b.blocked_by) for b in session.scalars(select(ReaderBlock))] == [
            (reader_id, EDITOR)]


def test_an_earlier_issues_page_links_a_story_sent_later(tmp_path: Path) -> None:
    from newsletter.web.app import create_app

    site = make_site(tmp_path, base_url="http://127.0.0.1")
    with session_scope(site.engine) as session:
        first = session.get(IssueRow, site.sent_issue_id)
        market = next(i for i in first.items if i.title == "Old market reopens")
        later = session.get(IssueRow, site.draft_issue_id)
        bridge = next(i for i in later.items if i.title == "Bridge plan approved")
        market.related = [{"title": bridge.title, "url": bridge.url, "source": "City Desk"}]
    with serve(create_app(site.settings, engine=site.engine)) as base, _client(base) as client:
        before = client.get("/archive/city/1/1-old-market-reopens").text  # kept from now on
        assert f'<a href="{bridge.url}">Bridge plan approved</a>' in before
        send_second_issue(site)
        after = client.get("/archive/city/1/1-old-market-reopens").text
        assert re.search(r'<a href="/archive/city/2/\d-bridge-plan-approved">Bridge plan approved</a>', after), \
            "the kept page of issue 1 still links outside after the story went out in issue 2"
    site.engine.dispose()
