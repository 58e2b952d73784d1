"""Tracking and the editor's report, end to end: the issue goes out through the real SendGrid client to the local
SendGrid server with tracking on; readers' clicks go through /r/ on the served app, the pixel is fetched by mail
clients and by machines, and the local server posts signed Event Webhook events (twice, as SendGrid may)."""

from __future__ import annotations

import base64
import email
import json
from collections.abc import Iterator
from email import policy

import httpx
import pytest
from sqlalchemy import func, select

from newsletter.report.figures import issue_report
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow, TrackEvent
from tests.conftest import postgres_schema
from tests.report_support import READERS, RELATED, World, tracked_world

THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.1"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """On SQLite and on PostgreSQL (skipped without NEWSLETTER_TEST_DATABASE_URL)."""
    root = tmp_path_factory.mktemp("report")
    if request.param == "postgres":
        with postgres_schema() as url, tracked_world(root, url) as w:
            yield w
    else:
        with tracked_world(root) as w:
            yield w


def _report(world: World):  # noqa: ANN202
    with session_scope(world.site.engine) as session:
        return issue_report(session, world.site.draft_issue_id)


def _events(world: World, kind: str) -> int:
    with session_scope(world.site.engine) as session:
        return session.scalar(select(func.count()).select_from(TrackEvent).where(TrackEvent.kind == kind)) or 0


def test_tracking_off_means_the_original_links_and_no_pixel(world: World) -> None:
    """Issue #1 went out before the schedule file turned tracking on: its email is as it always was."""
    eml = world.site.root / "outbox" / "city" / "issue-1" / "ann@example.com.eml"
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert 'href="https://city.example/market"' in html and "https://city.example/market" in text
    assert "/r/" not in html + text and "/o/" not in html and ".gif" not in html


def test_every_story_link_is_tracked_in_both_parts_and_names_no_address(world: World) -> None:
    parts = world.parts("ann@example.com")
    html, text = parts["text/html"], parts["text/plain"]
    with session_scope(world.site.engine) as session:
        row = session.get_one(IssueRow, world.site.draft_issue_id)
        stories = [i.url for i in sorted(row.items, key=lambda i: i.position) if i.included]
    assert "Bridges of the world" in html and "Bridges of the world" in text
    for url in [*stories, RELATED]:  # the stories and a related link
        assert url not in html, f"{url} is not tracked in the HTML part"
        assert url not in text, f"{url} is not tracked in the text part"
    links = world.links("ann@example.com")
    assert len(links) >= len(stories) + 1
    assert all("/r/" in link and "ann" not in link.lower() for link in links)
    assert text.count("/r/") >= len(stories)
    assert "%%" not in html + text  # every per-recipient token was filled
    pixel = [u for u in html.split('"') if "/o/" in u]
    assert len(pixel) == 1 and pixel[0].endswith(".gif") and "ann" not in pixel[0].lower()
    # One render per issue: the readers' copies differ only in their own values.
    assert world.links("bob@example.com") != links
    assert len(world.links("bob@example.com")) == len(links)


def test_a_click_lands_on_the_story_and_counts_once_per_reader_link_and_day(world: World) -> None:
    before = _report(world)
    for address, times in (("ann@example.com", 3), ("bob@example.com", 1)):
        link = world.links(address)[0]
        for _ in range(times):
            r = httpx.get(world.path(link), headers={"User-Agent": CHROME}, follow_redirects=False)
            assert r.status_code == 302, r.text
            assert r.headers["location"] == _story_url(world, 1)
            assert "set-cookie" not in r.headers and r.headers["referrer-policy"] == "no-referrer"
    after = _report(world)
    assert after.stories[0].clicks - before.stories[0].clicks == 4  # every click
    assert after.stories[0].unique_clicks - before.stories[0].unique_clicks == 2  # ann once, bob once: today
    assert after.clickers - before.clickers == 2
    assert [s.position for s in after.stories] == [1, 2, 3]  # in the order of the issue


def _story_url(world: World, position: int) -> str:
    with session_scope(world.site.engine) as session:
        row = session.get_one(IssueRow, world.site.draft_issue_id)
        return [i.url for i in sorted(row.items, key=lambda i: i.position) if i.included][position - 1]


def test_a_tampered_link_is_refused_and_counts_nothing(world: World) -> None:
    link = world.links("ann@example.com")[0]
    prefix, token, reader = link.rsplit("/", 2)
    payload, mac = token.split(".")
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    issue, story, _url = data.split(".", 2)
    evil = base64.urlsafe_b64encode(f"{issue}.{story}.https://evil.example/".encode()).rstrip(b"=").decode()
    clicks = _events(world, "click")
    for bad in (f"{prefix}/{evil}.{mac}/{reader}",  # another destination under the old signature
                f"{prefix}/{payload}.{mac[:-2]}{'AA' if not mac.endswith('AA') else 'BB'}/{reader}",
                f"{prefix}/{payload}/{reader}"):
        r = httpx.get(world.path(bad), follow_redirects=False)
        assert r.status_code == 404 and "location" not in r.headers
    # A forged reader value still goes to the story (the link is the issue's) but counts no reader.
    r = httpx.get(world.path(f"{prefix}/{token}/1-AAAAAAAAAAAA"), follow_redirects=False,
                  headers={"User-Agent": CHROME})
    assert r.status_code == 302
    assert _events(world, "click") == clicks + 1
    with session_scope(world.site.engine) as session:
        assert session.scalar(select(func.count()).select_from(TrackEvent).where(
            TrackEvent.kind == "click", TrackEvent.recipient.is_(None))) == 1


def test_a_machine_open_is_not_a_reader(world: World) -> None:
    pixel = next(u for u in world.parts("cy@example.com")["text/html"].split('"') if "/o/" in u)
    before = _report(world)
    apple = httpx.get(world.path(pixel), headers={"User-Agent": "Mozilla/5.0"})
    scanner = httpx.get(world.path(pixel), headers={"User-Agent": "Barracuda Sentinel (EE)"})
    assert apple.status_code == scanner.status_code == 200
    assert apple.headers["content-type"] == "image/gif" and apple.content.startswith(b"GIF89a")
    mid = _report(world)
    assert mid.openers == before.openers and mid.opens == before.opens
    assert mid.machine_opens == before.machine_opens + 2
    httpx.get(world.path(pixel), headers={"User-Agent": THUNDERBIRD})
    after = _report(world)
    assert after.opens == before.opens + 1 and after.openers == before.openers + 1


def test_provider_events_arriving_twice_count_once(world: World) -> None:
    hook = world.url + "/webhooks/sendgrid"
    events = [world.server.event(a, "delivered", after=5) for a in READERS]
    events += [world.server.event("cy@example.com", "spamreport", after=3600),
               world.server.event("bob@example.com", "processed")]
    first = world.server.post_events(hook, events)
    again = world.server.post_events(hook, events)
    assert first["stored"] == len(events) and again == {"stored": 0, "duplicates": len(events)}
    r = _report(world)
    assert (r.delivered, r.delivered_from, r.complained) == (3, "sendgrid", 1)
    assert r.complaint_rate == pytest.approx(1 / 3)
    # Events of another database on the same SendGrid account (another install id) are not ours.
    foreign = world.server.event("ann@example.com", "bounce")
    foreign["install"] = "someone-else"
    world.server.post_events(hook, [foreign])
    assert _report(world).bounced == 0


def test_the_cli_and_the_api_print_the_same_figures(world: World, cli, monkeypatch) -> None:  # noqa: ANN001
    from newsletter.cli import common

    site = world.site
    monkeypatch.chdir(site.root)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", site.settings.database_url)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", site.settings.secret_key or "")
    monkeypatch.setenv("NEWSLETTER_SCHEDULES_DIR", str(site.settings.schedules_dir))
    common.settings.cache_clear()
    try:
        printed = json.loads(cli("report", "city", "--issue", "2", "--json").output)
        listing = cli("report", "city").output
    finally:
        common.settings.cache_clear()
    with session_scope(site.engine) as session:
        assert printed == issue_report(session, site.draft_issue_id).to_json()
    assert "#2" in listing and "#1" in listing


def test_the_report_pages_draw_a_bar_per_story_and_export_each_table(world: World) -> None:
    from tests.web_support import sign_in

    with httpx.Client(base_url=world.url) as client:
        assert sign_in(client).status_code == 303
        page = client.get("/editor/reports/city/issues/2")
        assert page.status_code == 200
        html = page.text
        assert html.count('<rect class="bar"') == 3 + 2  # a bar per story, and the two rates
        assert "Clicks per story" in html and "<svg" in html and "0.3%" in html
        stories = client.get("/editor/reports/city/issues/2/stories.csv")
        assert stories.headers["content-type"].startswith("text/csv")
        lines = stories.text.strip().splitlines()
        assert lines[0] == "position,story,clicks,unique_clicks" and len(lines) == 4
        assert client.get("/editor/reports/city/issues/2/days.csv").text.count("\n") == 8
        assert "Complaint rate" in client.get("/editor/reports/city/issues/2/summary.csv").text
        issue_page = client.get(f"/editor/issues/{world.site.draft_issue_id}").text
        assert 'href="/editor/reports/city/issues/2"' in issue_page
        trend = client.get("/editor/reports/city")
        assert trend.status_code == 200 and "#2" in trend.text
        assert client.get("/editor/reports/city/trend.csv").text.startswith("issue,sent_at,audience")
        api = client.get(f"/api/issues/{world.site.draft_issue_id}/report")  # the API needs a token, not the cookie
        assert api.status_code == 401
        assert client.get("/editor/reports/city/issues/9").status_code == 404
    with httpx.Client(base_url=world.url) as anonymous:
        assert anonymous.get("/editor/reports/city/issues/2", follow_redirects=False).status_code in (302, 303)


def test_old_raw_events_fold_into_kept_figures(world: World) -> None:
    from datetime import timedelta

    from newsletter.report.record import mark_firsts
    from newsletter.report.retention import prune
    from newsletter.store.models import TrackDaily, utcnow

    before = _report(world)
    with session_scope(world.site.engine) as session:
        old = utcnow() - timedelta(days=400)
        for n in range(3):  # two readers clicking story 2, one twice: 3 clicks, 2 unique
            session.add(mark_firsts(session, TrackEvent(
                issue_id=world.site.draft_issue_id, kind="click", source="redirect", machine=False, agent="browser",
                story=2, link=_story_url(world, 2), recipient=f"{n % 2:032x}", occurred_at=old)))
            session.flush()
    mid = _report(world)
    assert mid.stories[1].clicks == before.stories[1].clicks + 3
    assert prune(world.site.engine, 180) == 3
    after = _report(world)
    assert (after.stories[1].clicks, after.stories[1].unique_clicks) == (mid.stories[1].clicks,
                                                                        mid.stories[1].unique_clicks)
    assert (after.clicks, after.unique_clicks, after.clickers) == (mid.clicks, mid.unique_clicks, mid.clickers)
    with session_scope(world.site.engine) as session:
        assert session.scalar(select(func.count()).select_from(TrackDaily)) > 0
        assert session.scalar(select(func.count()).select_from(TrackEvent).where(
            TrackEvent.occurred_at < utcnow() - timedelta(days=180))) == 0


def test_forget_removes_a_readers_events(world: World, cli, monkeypatch) -> None:  # noqa: ANN001
    from newsletter.cli import common
    from newsletter.deliver.issue_mail import tracker
    from newsletter.store.models import Subscriber

    site = world.site
    signer = tracker(site.engine, site.settings)
    for address in ("ann@example.com", "bob@example.com"):
        r = httpx.get(world.path(world.links(address)[0]), headers={"User-Agent": CHROME}, follow_redirects=False)
        assert r.status_code == 302
    world.server.post_events(world.url + "/webhooks/sendgrid", [world.server.event("ann@example.com", "open")])

    def events_of(address: str) -> int:
        with session_scope(site.engine) as session:
            sid = session.scalar(select(Subscriber.id).where(Subscriber.email == address))
            return session.scalar(select(func.count()).select_from(TrackEvent).where(
                TrackEvent.recipient == signer.recipient_hash(sid))) or 0

    ann, bob = events_of("ann@example.com"), events_of("bob@example.com")
    assert ann >= 2 and bob >= 1
    monkeypatch.chdir(site.root)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", site.settings.database_url)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", site.settings.secret_key or "")
    common.settings.cache_clear()
    try:
        out = cli("subscribers", "forget", "ann@example.com").output
    finally:
        common.settings.cache_clear()
    assert out.startswith("ann@example.com: ") and int(out.split(": ")[1].split()[0]) >= ann
    assert events_of("ann@example.com") == 0 and events_of("bob@example.com") == bob


def test_the_webhook_on_a_fresh_database_stores_and_counts_nothing_foreign(tmp_path) -> None:  # noqa: ANN001
    """No send yet, so no install id and no key kept: the first events make them, outside the events' own
    transaction (SQLite would otherwise wait on itself), and an event naming no issue of ours is only stored."""
    from newsletter.config import Settings
    from newsletter.store.db import get_engine
    from newsletter.web.public import create_public_app
    from tests.sendgrid_server import SendGridServer
    from tests.web_server import serve

    engine = get_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    with SendGridServer("SG.x") as server:
        app = create_public_app(Settings(base_url="https://news.example.com"), engine,
                                webhook_public_key=server.webhook_public_key)
        with serve(app) as url:
            event = {"email": "x@example.com", "event": "delivered", "issue": "1", "install": "other",
                     "sg_event_id": "e-1", "timestamp": 1_790_000_000}
            assert server.post_events(url + "/webhooks/sendgrid", [event]) == {"stored": 1, "duplicates": 0}
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(TrackEvent)) == 0


def test_a_text_only_readers_copy_is_tracked_too(world: World) -> None:
    """Readers' choices render one copy per variant (text only, sections off): each carries the tracked links."""
    from newsletter.config import load_newsletter
    from newsletter.deliver.issue_mail import tracker
    from newsletter.render.cache import rendered_issue
    from newsletter.render.variant import Variant

    site = world.site
    nl = load_newsletter(site.settings.schedules_dir / "city.toml")
    text_only = rendered_issue(site.engine, site.draft_issue_id, nl, base_url=site.settings.base_url,
                               variant=Variant(format="text"), tracker=tracker(site.engine, site.settings),
                               clicks=True, opens=True)
    assert "/r/" in text_only.text and _story_url(world, 1) not in text_only.text
    assert "%%recipient%%" in text_only.text  # one render per variant: the reader's value is filled per copy


def test_a_click_flood_is_still_redirected_but_recorded_only_up_to_the_limit(world: World) -> None:
    from newsletter.web.public import TRACK_PER_READER

    link = world.links("ann@example.com")[0]
    prefix, token, _reader = link.rsplit("/", 2)
    flood = f"{prefix}/{token}/2-BBBBBBBBBBBB"  # one client, one reader value, many more clicks than anyone makes
    clicks = _events(world, "click")
    with httpx.Client(follow_redirects=False, headers={"User-Agent": CHROME}) as client:
        answers = [client.get(world.path(flood)).status_code for _ in range(TRACK_PER_READER[0] + 15)]
    assert set(answers) == {302}  # whoever follows the link still lands on the story
    assert _events(world, "click") == clicks + TRACK_PER_READER[0]
    # Ann's own clicks from the same address are still counted.
    assert httpx.get(world.path(link), headers={"User-Agent": CHROME}, follow_redirects=False).status_code == 302
    assert _events(world, "click") == clicks + TRACK_PER_READER[0] + 1
