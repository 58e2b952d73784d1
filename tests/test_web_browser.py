"""The workspace and the archive in real headless Chromium against a real uvicorn server on loopback.

Screenshots go to test-artifacts/web/. Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it).
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.store.db import session_scope
from newsletter.store.models import IssueItem, IssueRow, Subscriber, Subscription
from tests.web_server import loopback_socket, serve_socket
from tests.web_support import EDITOR, PASSWORD, Site, add_editor, make_site

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "web"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's chromium at "
                                "/usr/bin/chromium (apt-get install chromium)")
pytest_plugins = ["tests.web_fixtures"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    from argon2 import PasswordHasher, profiles

    from newsletter.web import auth
    from newsletter.web.app import create_app

    sock, base = loopback_socket()
    site = make_site(tmp_path_factory.mktemp("browser"), base_url=base)
    saved = auth._hasher
    auth._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)
    try:
        add_editor(site.engine)
    finally:
        auth._hasher = saved
    app = create_app(site.settings, engine=site.engine)
    with serve_socket(app, sock):
        yield site, base


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def _item_ids(site: Site) -> dict[str, int]:
    with session_scope(site.engine) as session:
        return {i.title: i.id for i in session.scalars(
            select(IssueItem).where(IssueItem.issue_id == site.draft_issue_id))}


def _frame_width(page, selector: str) -> int:  # noqa: ANN001
    return page.frame_locator(selector).locator("html").evaluate("e => e.clientWidth")


def _background(page, selector: str) -> str:  # noqa: ANN001
    # The colour behind the first story, as the reader sees it.
    return page.frame_locator(selector).get_by_role("link", name="Bridge plan approved").evaluate(
        """e => { for (let n = e; n; n = n.parentElement) {
                    const c = getComputedStyle(n).backgroundColor;
                    if (c && c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; }
                  return 'none'; }""")


def test_editor_signs_in_shapes_the_draft_sends_a_test_and_approves(server, browser) -> None:
    from playwright.sync_api import expect

    site, base = server
    items = _item_ids(site)
    ferry, bridge = items["Ferry fares rise"], items["Bridge plan approved"]
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(30000)

    page.goto(f"{base}/editor/issues/{site.draft_issue_id}")
    assert page.url.startswith(f"{base}/signin")
    page.fill("input[name=email]", EDITOR)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{base}/editor/issues/{site.draft_issue_id}")

    desktop, mobile, dark, text = (page.frame_locator(f"#preview-{v}") for v in ("desktop", "mobile", "dark", "text"))
    expect(desktop.get_by_role("link", name="Ferry fares rise")).to_be_visible()
    expect(text.locator("body")).to_contain_text("Ferry fares rise")
    # The email at the widths subscribers see it, and in dark mode.
    assert 595 <= _frame_width(page, "#preview-desktop") <= 600
    assert 370 <= _frame_width(page, "#preview-mobile") <= 375
    scroll = page.frame_locator("#preview-mobile").locator("html").evaluate("e => e.scrollWidth - e.clientWidth")
    assert scroll <= 0, "the email scrolls sideways on a phone"
    assert _background(page, "#preview-dark") != _background(page, "#preview-mobile")
    expect(page.locator("#preflight + p.verdict")).to_contain_text("preflight passed")
    page.screenshot(path=str(ARTIFACTS / "editor-draft.png"), full_page=True)

    page.locator(f"#story-{ferry} button.drop").click()
    expect(page.locator(f"#story-{ferry}")).to_have_class(re.compile(r"\bdropped\b"))
    expect(desktop.get_by_role("link", name="Ferry fares rise")).to_have_count(0)
    expect(text.locator("body")).not_to_contain_text("Ferry fares rise")

    new_summary = "Councillors backed the new bridge at last; builders start in March."
    page.locator(f"#story-{bridge} textarea[name=summary]").fill(new_summary)
    page.locator(f"#story-{bridge} button.save-summary").click()
    for frame in (desktop, mobile, dark):
        expect(frame.get_by_text(new_summary)).to_be_visible()
    expect(desktop.get_by_text("The council approved the bridge plan")).to_have_count(0)

    page.click("#send-test")
    expect(page.locator(".flash.ok")).to_contain_text(f"Test sent to {EDITOR}")
    sent = email.message_from_bytes((site.root / "outbox" / "city" / "test" / f"{EDITOR}.eml").read_bytes(),
                                    policy=policy.default)
    body = sent.get_body(("html",)).get_content()
    assert sent["Subject"].startswith("[TEST]") and new_summary in body and "Ferry fares rise" not in body

    page.click("button:has-text('Approve')")
    expect(page.locator("#issue-status")).to_have_text("approved")
    expect(page.locator("#actions")).to_contain_text(f"approved as it is now by {EDITOR}")
    page.screenshot(path=str(ARTIFACTS / "editor-approved.png"), full_page=True)
    with session_scope(site.engine) as session:
        row = session.get(IssueRow, site.draft_issue_id)
        assert row.status == "approved" and row.approved_by == EDITOR
    context.close()


def test_visitor_subscribes_confirms_and_reads_sent_issues_only(server, browser) -> None:
    from playwright.sync_api import expect

    site, base = server
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(30000)

    page.goto(f"{base}/archive/city")
    issues = page.locator("#issues")
    expect(issues).to_contain_text("Old market reopens")
    expect(issues).not_to_contain_text("Bridge plan approved")
    page.screenshot(path=str(ARTIFACTS / "archive.png"), full_page=True)
    assert page.goto(f"{base}/archive/city/{site.draft_issue_id}").status == 404

    page.goto(f"{base}/archive/city")
    page.fill("input[name=email]", "visitor@example.net")
    page.click("button:has-text('Subscribe')")
    expect(page.locator("h1")).to_have_text("Check your inbox")

    path = site.root / "outbox" / "city" / "messages" / "visitor@example.net.eml"
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    link = re.search(re.escape(base) + r"/confirm/\S+", message.get_body(("plain",)).get_content()).group(0)
    page.goto(link)  # following the link (as a mail scanner would) only shows the button
    expect(page.locator("h1")).to_contain_text("Confirm your subscription")

    def status() -> str:
        with session_scope(site.engine) as session:
            return session.scalar(select(Subscription.status).join(Subscriber).where(
                Subscriber.email == "visitor@example.net"))

    assert status() == "pending"
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.locator("h1")).to_have_text("You are subscribed")
    assert status() == "active"

    page.goto(f"{base}/archive/city")
    page.get_by_role("link", name="City Weekly #1: Old market reopens").click()
    page.wait_for_url(f"{base}/archive/city/1")
    expect(page.get_by_role("link", name="Harbour dredging ends", exact=True)).to_be_visible()
    assert "/u/" not in page.content()
    page.screenshot(path=str(ARTIFACTS / "archive-issue.png"), full_page=True)
    context.close()
