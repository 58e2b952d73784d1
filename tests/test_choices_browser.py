"""A reader's choices made in real headless Chromium: the subscribe form sends the browser's time zone; the
"manage your subscription" link from an outbox email opens the page where the reader turns a section off and
switches to daily, and the next issue built for them reflects it."""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.config import Settings, load_all
from newsletter.deliver.outbox import OutboxMailer
from newsletter.deliver.send import send_issue
from newsletter.store.db import ensure_newsletter, get_engine, session_scope
from newsletter.store.models import PreferenceChange, Subscriber, Subscription, utcnow
from newsletter.subscribers.manage import add_subscriber
from tests.test_choices_send import SCHEDULE, STORIES, store
from tests.test_web_browser import CHROMIUM, browser  # noqa: F401 - the module's fixture
from tests.web_server import loopback_socket, serve_socket

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's chromium at "
                                "/usr/bin/chromium (apt-get install chromium)")

DAILY = """
[schedule]
send = "weekly on monday at 08:00"

[[cadences]]
name = "daily"
send = "daily at 07:00"
"""


def _site(root: Path):  # noqa: ANN202
    sock, base = loopback_socket()
    (root / "schedules").mkdir()
    (root / "schedules" / "tech.toml").write_text(SCHEDULE + DAILY)
    settings = Settings(database_url=f"sqlite:///{root / 'n.db'}", outbox_dir=root / "outbox",
                        schedules_dir=root / "schedules", templates_dir=root / "templates", base_url=base,
                        secret_key="browser-secret")
    return sock, settings, get_engine(settings.database_url), load_all(root / "schedules").newsletters


def test_a_reader_turns_security_off_and_switches_to_daily_from_the_email(tmp_path: Path,
                                                                           browser) -> None:  # noqa: F811
    from playwright.sync_api import expect

    from newsletter.compose.build import build_issue
    from newsletter.web.app import create_app

    sock, settings, engine, newsletters = _site(tmp_path)
    weekly, daily = newsletters["tech"], newsletters["tech-daily"]
    store(engine, STORIES, utcnow() - timedelta(hours=3))
    with session_scope(engine) as session:
        add_subscriber(session, ensure_newsletter(session, "tech", weekly.name), "ann@example.com")
    first = build_issue(engine, weekly, enrich=False)
    send_issue(engine, weekly, first.issue_id, OutboxMailer(settings.outbox_dir), settings)
    mail = email.message_from_bytes((settings.outbox_dir / "tech" / "issue-1" / "ann@example.com.eml")
                                    .read_bytes(), policy=policy.default)
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    link = re.search(r'href="([^"]+/m/[^"]+)"[^>]*>Manage your subscription<', html)
    assert link, "no manage link in the email"

    with serve_socket(create_app(settings, engine=engine), sock):
        context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
        page = context.new_page()
        page.set_default_timeout(30000)
        page.goto(link.group(1))
        expect(page.locator("h1")).to_have_text("Manage your subscription to Tech Digest")
        page.get_by_role("checkbox", name="Security").uncheck()
        page.get_by_label("Frequency").select_option("daily")
        page.get_by_role("button", name="Save my choices").click()
        expect(page.get_by_role("status")).to_contain_text("Changes apply from the next issue")
        expect(page.get_by_role("checkbox", name="Security")).not_to_be_checked()
        expect(page.get_by_role("checkbox", name="AI")).to_be_checked()
        context.close()

    with session_scope(engine) as session:
        sub = session.scalar(select(Subscription))
        assert sub.sections_off == ["Security"] and sub.frequency == "daily"
        assert {c.field for c in session.scalars(select(PreferenceChange))} == {"sections_off", "frequency"}

    # The next issues: the daily one reaches Ann without its Security stories; the weekly one no longer does.
    store(engine, [("https://sec.example/feed", "Password leak found", "https://sec.example/leak"),
                   ("https://ai.example/feed", "Chatbot passes exam", "https://ai.example/exam")],
          utcnow() + timedelta(minutes=30))
    later = utcnow() + timedelta(hours=1)
    for nl in (daily, weekly):
        built = build_issue(engine, nl, enrich=False, now=later)
        report = send_issue(engine, nl, built.issue_id, OutboxMailer(settings.outbox_dir), settings)
        assert report.status == "done"
    got = email.message_from_bytes((settings.outbox_dir / "tech-daily" / "issue-1" / "ann@example.com.eml")
                                   .read_bytes(), policy=policy.default)
    for part in ("html", "plain"):
        body = got.get_body((part,)).get_content()  # type: ignore[union-attr]
        assert "Chatbot passes exam" in body and "Password leak" not in body
    assert not (settings.outbox_dir / "tech" / "issue-2").exists()


def test_the_subscribe_form_sends_the_browsers_time_zone(tmp_path: Path, browser) -> None:  # noqa: F811
    from playwright.sync_api import expect

    from newsletter.web.app import create_app

    sock, settings, engine, _ = _site(tmp_path)
    with serve_socket(create_app(settings, engine=engine), sock):
        context = browser.new_context(timezone_id="Asia/Tokyo")
        page = context.new_page()
        page.set_default_timeout(30000)
        page.goto(f"{settings.base_url}/subscribe/tech")
        page.get_by_label("Email").fill("kei@example.jp")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.locator("h1")).to_have_text("Check your inbox")
        context.close()
        context = browser.new_context(timezone_id="America/New_York")  # the archive's own form, too
        page = context.new_page()
        page.set_default_timeout(30000)
        page.goto(f"{settings.base_url}/archive/tech")
        page.get_by_label("Your email").fill("ny@example.com")
        page.get_by_role("button", name="Subscribe").click()
        page.wait_for_load_state("load")
        context.close()
    with session_scope(engine) as session:
        sub = session.scalar(select(Subscription).join(Subscriber).where(Subscriber.email == "kei@example.jp"))
        assert sub is not None and sub.status == "pending" and sub.timezone == "Asia/Tokyo"
        sub = session.scalar(select(Subscription).join(Subscriber).where(Subscriber.email == "ny@example.com"))
        assert sub is not None and sub.status == "pending" and sub.timezone == "America/New_York"
