"""Readers sign in by email link and comment under stories; editors moderate (issue 19), over real HTTP.

The app is served by uvicorn (tests/web_server.py) and spoken to with httpx; sign-in links come from the
outbox, as a reader's inbox would have them. The story page is the edition's: a test-only route renders the
conversation block the story page shows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from newsletter.store.db import ensure_newsletter, session_scope
from newsletter.store.models import Comment, utcnow
from newsletter.store.models import Reader as ReaderRow
from tests.conversation_support import (
    app_with_story_route,
    ask_link,
    link_path,
    post_comment,
    sent_items,
    sign_in_mail,
    sign_in_reader,
    story_url,
    use_link,
)
from tests.web_server import serve
from tests.web_support import Site, add_editor, csrf_of, make_site, sign_in

pytest_plugins = ["tests.web_fixtures"]

ANN, BOB, EVE = "ann@example.com", "bob@example.com", "eve@example.net"  # Ann and Bob subscribe, Eve does not


@pytest.fixture(scope="module")
def http_template(tmp_path_factory: pytest.TempPathFactory) -> Site:
    from argon2 import PasswordHasher, profiles

    from newsletter.subscribers.manage import add_subscriber
    from newsletter.web import auth

    # Plain http on loopback: the cookies are not Secure here (test_cookies_* checks the https case).
    site = make_site(tmp_path_factory.mktemp("conversation"), base_url="http://127.0.0.1")
    saved = auth._hasher
    auth._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)
    try:
        add_editor(site.engine)
    finally:
        auth._hasher = saved
    with session_scope(site.engine) as session:
        add_subscriber(session, ensure_newsletter(session, "city", "City Weekly"), BOB)
    site.engine.dispose()
    return site


def _set_comments(site: Site, settings: str) -> None:
    path = site.settings.schedules_dir / "city.toml"
    path.write_text(path.read_text() + f"\n[comments]\n{settings}\n")


@pytest.fixture
def world(http_template: Site, tmp_path: Path) -> Iterator[tuple[Site, str]]:
    from tests.web_fixtures import copy_site  # (a plugin of this module too: imported late, not rewritten twice)

    site = copy_site(http_template, tmp_path)
    with serve(app_with_story_route(site)) as base:
        yield site, base
    site.engine.dispose()


def _client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=60)


def _comments(site: Site) -> list[Comment]:
    with session_scope(site.engine) as session:
        rows = list(session.scalars(select(Comment).order_by(Comment.id)))
        session.expunge_all()
        return rows


def test_a_subscriber_signs_in_by_link_posts_and_a_second_reader_replies(world) -> None:  # noqa: ANN001
    from newsletter.web.conversation import comment_counts

    site, base = world
    item = sent_items(site)[0]
    with _client(base) as ann, _client(base) as bob:
        first = ann.get(story_url(item))
        assert "Sign in to join the conversation." in first.text
        assert "No comments yet. Be the first." in first.text
        assert 'name="body"' not in first.text  # no post form for a signed-out reader

        asked = ask_link(ann, ANN, story_url(item))
        assert "Check your inbox" in asked.text
        path = link_path(site, ANN)
        # Opening the link (a mail scanner does) signs nobody in; the button does, once.
        button = ann.get(path)
        assert button.status_code == 200 and "Sign in as ann@example.com" in button.text
        assert "newsletter_reader" not in ann.cookies
        used = ann.post(path, data={"csrf": csrf_of(button.text)})
        assert used.status_code == 303 and used.headers["location"] == story_url(item)
        cookie = used.headers["set-cookie"]
        assert "newsletter_reader=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()

        posted = post_comment(ann, item, "The stalls look great. Pictures: https://city.example/photos.")
        assert posted.status_code == 303, posted.text
        page = ann.get(story_url(item)).text
        assert "The stalls look great." in page and "No comments yet" not in page
        assert ('<a href="https://city.example/photos" rel="nofollow ugc noopener">https://city.example/photos</a>.'
                in page)
        top = _comments(site)[0]

        sign_in_reader(bob, site, BOB, story_url(item))
        assert post_comment(bob, item, "Agreed, went on Saturday.", parent=top.id).status_code == 303
        reply = _comments(site)[-1]
        # A reply to the reply joins the same thread: threads are one level deep.
        assert post_comment(ann, item, "See you there next week.", parent=reply.id).status_code == 303
        assert [c.parent_id for c in _comments(site)] == [None, top.id, top.id]
        thread = bob.get(story_url(item)).text
        replies = thread[thread.index('class="replies"'):]
        assert "Agreed, went on Saturday." in replies and "See you there next week." in replies
        assert re.search(r'<span class="author">ann</span>', thread)
        assert ANN not in thread.replace("Sign out (bob@example.com)", "")  # addresses are not shown to others
    assert comment_counts(site.engine, site.sent_issue_id) == {item: 3}


def test_forged_reused_and_expired_links_are_refused(world) -> None:  # noqa: ANN001
    from newsletter.web import readers
    from newsletter.web.state import WebState

    site, base = world
    item = sent_items(site)[0]
    with _client(base) as client:
        ask_link(client, ANN, story_url(item))
        path = link_path(site, ANN)
        token = path.rsplit("/", 1)[1]
        payload, _, signature = token.rpartition(".")
        forged = f"/readers/signin/{payload}.{signature[::-1]}"
        assert client.get(forged).status_code == 400
        csrf = csrf_of(client.get(f"/readers/signin?newsletter=city&next={story_url(item)}").text)
        assert client.post(forged, data={"csrf": csrf}).status_code == 400
        # Well formed, signed with another key (someone else's installation, or a guess): refused the same.
        from itsdangerous import URLSafeSerializer

        other = URLSafeSerializer("not our key", salt="reader-signin").dumps(
            {"e": ANN, "s": "city", "t": "/archive/", "x": int(time.time()) + 600, "n": "guess"})
        assert use_link(client, f"/readers/signin/{other}").status_code == 400
        assert "newsletter_reader" not in client.cookies

        assert use_link(client, path).status_code == 303
        client.cookies.delete("newsletter_reader")
        again = use_link(client, path)
        assert again.status_code == 410 and "used already" in again.text
        assert client.post(path, data={"csrf": csrf_of(client.get("/readers/signin").text)}).status_code == 410
        assert "newsletter_reader" not in client.cookies

        # A link made 16 minutes ago, signed with the real key: expired.
        web = WebState(settings=site.settings, engine=site.engine, templates=None,  # type: ignore[arg-type]
                       make_mailer=lambda: None)  # type: ignore[arg-type,return-value]
        old = readers.make_link_token(web, ANN, "city", story_url(item), now=time.time() - 16 * 60)
        expired = client.get(f"/readers/signin/{old}")
        assert expired.status_code == 410 and "expired" in expired.text
        fresh = readers.make_link_token(web, ANN, "city", story_url(item))
        assert client.get(f"/readers/signin/{fresh}").status_code == 200  # the same key, in time: accepted


def test_who_may_sign_in_and_post_follows_the_newsletter_setting(world) -> None:  # noqa: ANN001
    site, base = world
    item = sent_items(site)[0]
    with _client(base) as eve:
        asked = ask_link(eve, EVE, story_url(item))
        # The same answer as for a subscriber (it must not tell who subscribes), but no link went out.
        assert asked.status_code == 200 and "Check your inbox" in asked.text
        assert sign_in_mail(site, EVE) is None

        _set_comments(site, 'who = "signed-in"')
        sign_in_reader(eve, site, EVE, story_url(item))
        assert post_comment(eve, item, "Anyone may talk here now.").status_code == 303

    site.settings.schedules_dir.joinpath("city.toml").write_text(
        site.settings.schedules_dir.joinpath("city.toml").read_text().replace('"signed-in"', '"off"'))
    with _client(base) as ann:
        page = ann.get(story_url(item)).text
        assert "Comments are off" in page and "Sign in to join" not in page
        refused = ask_link(ann, ANN, story_url(item))
        assert refused.status_code == 403 and "Comments are off for City Weekly." in refused.text


def test_a_script_is_stored_as_typed_and_shown_escaped(world) -> None:  # noqa: ANN001
    site, base = world
    item = sent_items(site)[0]
    with _client(base) as ann:
        sign_in_reader(ann, site, ANN, story_url(item))
        body = '<script>alert("x")</script> <b>bold</b> javascript:alert(1) <img src=x onerror=alert(1)>'
        assert post_comment(ann, item, body).status_code == 303
        page = ann.get(story_url(item)).text
    assert _comments(site)[0].body == body
    assert "<script>alert" not in page and "<b>bold" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert 'href="javascript' not in page


def test_a_reader_session_opens_nothing_in_the_editor(world) -> None:  # noqa: ANN001
    site, base = world
    item = sent_items(site)[0]
    with _client(base) as reader:
        sign_in_reader(reader, site, ANN, story_url(item))
        for path in ("/editor/", f"/editor/issues/{site.draft_issue_id}", "/editor/comments/"):
            answer = reader.get(path, follow_redirects=False)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/signin"), path
        # The reader cookie's value in the editor's cookie is not a session either (different key).
        value = reader.cookies["newsletter_reader"]
        reader.cookies.set("newsletter_session", value)
        assert reader.get("/editor/", follow_redirects=False).status_code == 303
        reader.cookies.delete("newsletter_session")
        assert reader.post("/api/readers/forget", json={"email": ANN}).status_code == 401

        # Signing out ends the cookie: a copy kept from before is not a reader any more.
        page = reader.get(story_url(item)).text
        assert "Sign out (ann@example.com)" in page
        kept = reader.cookies["newsletter_reader"]
        assert reader.post("/readers/signout", data={"csrf": csrf_of(page), "next": story_url(item)}).status_code == 303
        assert "Sign in to join the conversation." in reader.get(story_url(item)).text
        reader.cookies.set("newsletter_reader", kept)
        assert "Sign in to join the conversation." in reader.get(story_url(item)).text
        assert post_comment_refused(reader, item)


def post_comment_refused(client, item: int) -> bool:  # noqa: ANN001
    page = client.get(story_url(item)).text
    answer = client.post("/readers/comments", data={"csrf": csrf_of(page) if 'name="csrf"' in page else "x",
                                                    "item": str(item), "body": "hello", "next": story_url(item)})
    return answer.status_code in (401, 403)


def test_a_comment_flood_gets_429_and_the_honeypot_is_refused(world) -> None:  # noqa: ANN001
    site, base = world
    item = sent_items(site)[0]
    with _client(base) as ann:
        sign_in_reader(ann, site, ANN, story_url(item))
        bot = post_comment(ann, item, "Cheap watches", website="https://spam.example")
        assert bot.status_code == 400 and "people do not see" in bot.text
        assert post_comment(ann, item, "   ").status_code == 400
        too_long = post_comment(ann, item, "x" * 2001)
        assert too_long.status_code == 400 and "at most 2000" in too_long.text
        assert _comments(site) == []
        for n in range(5):
            assert post_comment(ann, item, f"Comment {n}").status_code == 303
        flood = post_comment(ann, item, "One more")
        assert flood.status_code == 429 and "posting too fast" in flood.text and "Retry-After" in flood.headers
    assert len(_comments(site)) == 5


def test_a_flood_sent_all_at_once_still_stops_at_the_limit(world) -> None:  # noqa: ANN001
    from concurrent.futures import ThreadPoolExecutor

    site, base = world
    item = sent_items(site)[0]
    with _client(base) as ann:
        sign_in_reader(ann, site, ANN, story_url(item))
        csrf = csrf_of(ann.get(story_url(item)).text)

        def send(n: int) -> int:
            return ann.post("/readers/comments", data={"csrf": csrf, "item": str(item), "body": f"Flood {n}",
                                                       "next": story_url(item)}).status_code

        with ThreadPoolExecutor(12) as pool:
            answers = sorted(pool.map(send, range(12)))
    assert answers == [303] * 5 + [429] * 7
    assert len(_comments(site)) == 5


def test_asking_for_links_is_limited_per_address(world) -> None:  # noqa: ANN001
    site, base = world
    with _client(base) as client:
        by_hand = client.get("/readers/signin").text  # opened without a story: the reader picks the newsletter
        assert '<select name="newsletter"' in by_hand and '<option value="city">City Weekly</option>' in by_hand
        for _ in range(3):
            assert ask_link(client, ANN, "/archive/").status_code == 200
        limited = ask_link(client, ANN.upper(), "/archive/")
        assert limited.status_code == 429 and "Too many sign-in links" in limited.text
        assert ask_link(client, BOB, "/archive/").status_code == 200  # another address is not held back


def test_own_comments_can_be_edited_and_deleted_within_the_window(world) -> None:  # noqa: ANN001
    site, base = world
    item = sent_items(site)[0]
    with _client(base) as ann, _client(base) as bob:
        sign_in_reader(ann, site, ANN, story_url(item))
        sign_in_reader(bob, site, BOB, story_url(item))
        post_comment(ann, item, "Frist!")
        post_comment(ann, item, "Second thought.")
        first, second = (c.id for c in _comments(site))
        page = ann.get(story_url(item)).text
        edited = ann.post(f"/readers/comments/{first}/edit",
                          data={"csrf": csrf_of(page), "body": "First!", "next": story_url(item)})
        assert edited.status_code == 303
        assert "First!" in bob.get(story_url(item)).text and "edited" in bob.get(story_url(item)).text
        not_hers = bob.post(f"/readers/comments/{first}/delete",
                            data={"csrf": csrf_of(bob.get(story_url(item)).text), "next": story_url(item)})
        assert not_hers.status_code == 404
        with session_scope(site.engine) as session:
            session.get(Comment, second).created_at = utcnow() - timedelta(minutes=16)
        late = ann.post(f"/readers/comments/{second}/delete",
                        data={"csrf": csrf_of(page), "next": story_url(item)})
        assert late.status_code == 403 and "15 minutes" in late.text
        assert ann.post(f"/readers/comments/{first}/delete",
                        data={"csrf": csrf_of(page), "next": story_url(item)}).status_code == 303
        shown = bob.get(story_url(item)).text
        assert "First!" not in shown and "Second thought." in shown


def test_editors_hide_approve_and_block(world) -> None:  # noqa: ANN001
    from newsletter.web.conversation import comment_counts

    site, base = world
    item = sent_items(site)[1]
    with _client(base) as ann, _client(base) as editor, _client(base) as bob:
        sign_in_reader(ann, site, ANN, story_url(item))
        post_comment(ann, item, "A fair comment.")
        post_comment(ann, item, "A rude comment.")
        fair, rude = (c.id for c in _comments(site))
        assert sign_in(editor).status_code == 303
        queue = editor.get("/editor/comments/?newsletter=city")
        assert queue.status_code == 200 and "A rude comment." in queue.text
        hidden = editor.post(f"/editor/comments/{rude}/hide", data={"csrf": csrf_of(queue.text), "newsletter": "city"})
        assert hidden.status_code == 303
        assert "A rude comment." not in ann.get(story_url(item)).text
        assert comment_counts(site.engine, site.sent_issue_id) == {item: 1}

        blocked = editor.post(f"/editor/comments/readers/{_comments(site)[0].reader_id}/block",
                              data={"csrf": csrf_of(queue.text), "newsletter": "city"})
        assert blocked.status_code == 303
        refused = post_comment(ann, item, "Let me back in.")
        assert refused.status_code == 403 and "blocked" in refused.text
        assert "A fair comment." in ann.get(story_url(item)).text  # what they wrote before stays

        _set_comments(site, "premoderate = true")
        sign_in_reader(bob, site, BOB, story_url(item))
        assert post_comment(bob, item, "Waiting for an editor.").status_code == 303
        pending = _comments(site)[-1]
        assert pending.status == "pending"
        assert "awaiting approval" in bob.get(story_url(item)).text  # its author sees it, marked
        with _client(base) as stranger:
            assert "Waiting for an editor." not in stranger.get(story_url(item)).text
        queue = editor.get("/editor/comments/?newsletter=city")
        assert "1 waiting for approval" in queue.text
        editor.post(f"/editor/comments/{pending.id}/approve", data={"csrf": csrf_of(queue.text), "newsletter": "city"})
        with _client(base) as stranger:
            assert "Waiting for an editor." in stranger.get(story_url(item)).text
        assert fair  # kept visible throughout


def test_forgetting_a_reader_removes_their_comments_and_unsubscribing_does_not(world, monkeypatch) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from newsletter.cli.main import app
    from newsletter.subscribers import status as subscription_status
    from newsletter.web.auth import issue_api_token
    from tests.web_support import EDITOR

    site, base = world
    item = sent_items(site)[0]
    with _client(base) as ann, _client(base) as bob:
        sign_in_reader(ann, site, ANN, story_url(item))
        sign_in_reader(bob, site, BOB, story_url(item))
        post_comment(ann, item, "Ann was here.")
        post_comment(bob, item, "Bob was here.", parent=_comments(site)[0].id)
        post_comment(bob, item, "Bob again.")

    with session_scope(site.engine) as session:
        from newsletter.store.models import NewsletterRow, Subscriber

        ann_id = session.scalar(select(Subscriber.id).where(Subscriber.email == ANN))
        city_id = session.scalar(select(NewsletterRow.id).where(NewsletterRow.slug == "city"))
        subscription_status.set_status(session, ann_id, city_id, "unsubscribed")
    with _client(base) as stranger:
        page = stranger.get(story_url(item)).text
        assert "Ann was here." in page  # unsubscribing keeps what she wrote

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", site.settings.database_url)
    result = CliRunner().invoke(app, ["readers", "forget", "Ann@example.com"])
    assert result.exit_code == 0, result.output
    assert "reader removed, 1 comment deleted" in result.output
    with session_scope(site.engine) as session:
        assert session.scalar(select(ReaderRow).where(ReaderRow.email == ANN)) is None
    assert [(c.body, c.parent_id) for c in _comments(site)] == [("Bob was here.", None), ("Bob again.", None)]

    with session_scope(site.engine) as session:
        token = issue_api_token(session, EDITOR)
    with _client(base) as api:
        auth = {"Authorization": f"Bearer {token}"}
        listed = api.get("/api/newsletters/city/comments", headers=auth).json()["comments"]
        assert [(c["body"], c["reader"], c["status"], c["story_id"]) for c in listed] == [
            ("Bob again.", BOB, "visible", item), ("Bob was here.", BOB, "visible", item)]
        hidden = api.post(f"/api/comments/{listed[0]['id']}/hide", headers=auth)
        assert hidden.status_code == 200 and hidden.json()["status"] == "hidden"
        assert "Bob again." not in api.get(story_url(item)).text
        assert api.get("/api/newsletters/city/comments?status=hidden", headers=auth).json()["comments"][0][
            "body"] == "Bob again."
        assert api.post(f"/api/comments/{listed[0]['id']}/explode", headers=auth).status_code == 404
        assert api.get("/api/newsletters/nope/comments", headers=auth).status_code == 404
        assert api.get("/api/newsletters/city/comments").status_code == 401
        answer = api.post("/api/readers/forget", json={"email": BOB}, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json() == {"email": BOB, "reader": True, "comments_removed": 2}
        again = api.post("/api/readers/forget", json={"email": BOB}, headers={"Authorization": f"Bearer {token}"})
        assert again.json()["reader"] is False
        assert api.post("/api/readers/forget", json={}, headers={"Authorization": f"Bearer {token}"}).status_code == 422
        assert "No comments yet. Be the first." in api.get(story_url(item)).text


def test_cookies_are_secure_on_https_and_drafts_have_no_conversation(site: Site) -> None:
    from starlette.testclient import TestClient

    assert site.settings.base_url.startswith("https://")
    with TestClient(app_with_story_route(site), base_url="https://testserver",
                    follow_redirects=False) as client:
        ask_link(client, ANN, "/archive/")
        used = use_link(client, link_path(site, ANN))
        assert used.status_code == 303
        cookie = used.headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie
        with session_scope(site.engine) as session:
            from newsletter.store.models import IssueItem

            draft_item = session.scalar(select(IssueItem.id).where(IssueItem.issue_id == site.draft_issue_id))
        assert "Comments" not in client.get(story_url(int(draft_item or 0))).text
        signed_out = client.post("/readers/signout", data={"csrf": csrf_of(client.get("/readers/signin").text),
                                                           "next": "/archive/"}, follow_redirects=False)
        assert signed_out.status_code == 303


def test_a_wrong_comments_setting_names_the_file_and_field(tmp_path: Path) -> None:
    from newsletter.config import ConfigError, load_newsletter
    from tests.web_support import SCHEDULE

    path = tmp_path / "city.toml"
    path.write_text(SCHEDULE + '\n[comments]\nwho = "everyone"\n')
    with pytest.raises(ConfigError) as caught:
        load_newsletter(path)
    assert "city.toml" in str(caught.value) and "comments.who" in str(caught.value)
    path.write_text(SCHEDULE + "\n[comments]\nedit_minutes = -1\n")
    with pytest.raises(ConfigError, match="comments.edit_minutes"):
        load_newsletter(path)


@pytest.mark.postgres
def test_the_conversation_on_postgresql(tmp_path: Path) -> None:
    from argon2 import PasswordHasher, profiles

    from newsletter.subscribers.manage import add_subscriber
    from newsletter.web import auth
    from newsletter.web.conversation import comment_counts, forget_reader
    from tests.conftest import postgres_schema

    with postgres_schema() as url:
        site = make_site(tmp_path, base_url="http://127.0.0.1", database_url=url)
        auth._hasher, saved = PasswordHasher.from_parameters(profiles.CHEAPEST), auth._hasher
        try:
            add_editor(site.engine)
        finally:
            auth._hasher = saved
        with session_scope(site.engine) as session:
            add_subscriber(session, ensure_newsletter(session, "city", "City Weekly"), BOB)
        item = sent_items(site)[0]
        with serve(app_with_story_route(site)) as base, _client(base) as ann, _client(base) as bob, \
                _client(base) as editor:
            sign_in_reader(ann, site, ANN, story_url(item))
            sign_in_reader(bob, site, BOB, story_url(item))
            assert use_link(ann, link_path(site, ANN)).status_code == 410  # used, on PostgreSQL too
            assert post_comment(ann, item, "On PostgreSQL.").status_code == 303
            top = _comments(site)[0].id
            assert post_comment(bob, item, "Reply one.", parent=top).status_code == 303
            assert post_comment(ann, item, "Reply two.", parent=_comments(site)[-1].id).status_code == 303
            assert [c.parent_id for c in _comments(site)] == [None, top, top]
            assert comment_counts(site.engine, site.sent_issue_id) == {item: 3}
            assert sign_in(editor).status_code == 303
            queue = editor.get("/editor/comments/?newsletter=city")
            editor.post(f"/editor/comments/{top}/hide", data={"csrf": csrf_of(queue.text), "newsletter": "city"})
            assert "No comments yet. Be the first." in bob.get(story_url(item)).text  # the thread went with it
            assert comment_counts(site.engine, site.sent_issue_id) == {}
        with session_scope(site.engine) as session:
            assert forget_reader(session, ANN) == (True, 2)
        assert [(c.body, c.parent_id) for c in _comments(site)] == [("Reply one.", None)]
        site.engine.dispose()


def test_on_the_editions_story_page_a_reader_signs_in_and_posts(world) -> None:  # noqa: ANN001
    from newsletter.store.models import IssueItem
    from newsletter.urls import issue_path, story_path

    site, base = world
    with session_scope(site.engine) as session:
        first = session.scalars(select(IssueItem).where(IssueItem.issue_id == site.sent_issue_id)
                                .order_by(IssueItem.position)).first()
        assert first is not None
        path, item = story_path("city", 1, 1, first.title), first.id  # the edition counts stories from 1
    with _client(base) as ann:
        page = ann.get(path)
        assert page.status_code == 200 and "No comments yet. Be the first." in page.text
        sign_in_reader(ann, site, ANN, path)
        form = ann.get(path).text
        posted = ann.post("/readers/comments", data={"csrf": csrf_of(form), "item": str(item), "next": path,
                                                     "body": "Posted from the edition page.", "website": ""})
        assert posted.status_code == 303 and posted.headers["location"].startswith(path + "#comment-")
        assert "Posted from the edition page." in ann.get(path).text
    with _client(base) as stranger:
        assert "Posted from the edition page." in stranger.get(path).text
        assert stranger.get(issue_path("city", 1)).status_code == 200
