"""The conversation's main flow in real headless Chromium against uvicorn on loopback (issue 19).

A subscriber opens the story, sees "No comments yet. Be the first.", asks for a sign-in link, opens it from the
outbox, posts; a second reader replies; the editor hides the first comment; the public page no longer shows it.
The story page is the edition's: a test-only route renders the conversation block (tests/conversation_support).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.store.db import ensure_newsletter, session_scope
from tests.conversation_support import app_with_story_route, sent_items, sign_in_mail, story_url
from tests.test_web_browser import ARGS, ARTIFACTS, CHROMIUM
from tests.test_web_forms_browser import AXE, _axe
from tests.web_server import loopback_socket, serve_socket
from tests.web_support import EDITOR, PASSWORD, Site, add_editor, make_site

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's chromium at "
                                "/usr/bin/chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    from argon2 import PasswordHasher, profiles

    from newsletter.subscribers.manage import add_subscriber
    from newsletter.web import auth

    sock, base = loopback_socket()
    site = make_site(tmp_path_factory.mktemp("conversation-browser"), base_url=base)
    saved = auth._hasher
    auth._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)
    try:
        add_editor(site.engine)
    finally:
        auth._hasher = saved
    with session_scope(site.engine) as session:
        add_subscriber(session, ensure_newsletter(session, "city", "City Weekly"), "bob@example.com")
    with serve_socket(app_with_story_route(site), sock):
        yield site, base


def _link_from_outbox(site: Site, address: str) -> str:
    message = sign_in_mail(site, address)
    assert message is not None, f"no sign-in email to {address}"
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    import re

    match = re.search(r'href="([^"]+/readers/signin/[^"]+)"', html_part.get_content())
    assert match, "the email has no sign-in link"
    return match.group(1).replace("&amp;", "&")


def _accessible(page) -> None:  # noqa: ANN001
    # axe-core's serious and moderate findings, when the checkout has it (`npm install --no-save axe-core`).
    if AXE.exists():
        assert _axe(page) == [], page.url


def _reader_signs_in(page, site: Site, base: str, address: str, story: str) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    page.goto(base + story)
    page.get_by_role("link", name="Sign in to join the conversation.").click()
    _accessible(page)
    page.get_by_label("Email").fill(address)
    page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.locator("h1")).to_have_text("Check your inbox")
    page.goto(_link_from_outbox(site, address))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + story)


def test_readers_talk_under_a_story_and_the_editor_hides_a_comment(server) -> None:  # noqa: ANN001
    from playwright.sync_api import expect, sync_playwright

    site, base = server
    story = story_url(sent_items(site)[0])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            # bypass_csp: axe is injected as an inline script, which the pages' policy refuses.
            phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, bypass_csp=True)
            ann = phone.new_page()
            ann.set_default_timeout(30000)  # as long as a loaded machine needs
            ann.goto(base + story)
            expect(ann.locator("#comments")).to_contain_text("No comments yet. Be the first.")
            _reader_signs_in(ann, site, base, "ann@example.com", story)
            ann.get_by_label("Your comment").fill('Lovely market. <script>document.title="owned"</script>')
            ann.get_by_role("button", name="Post comment").click()
            expect(ann.locator(".comment .body")).to_contain_text('<script>document.title="owned"</script>')
            assert ann.title() == "Story"  # shown as text, never run (it would have set the title)
            ann.screenshot(path=str(ARTIFACTS / "conversation-390.png"), full_page=True)
            _accessible(ann)

            bob = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
            bob.set_default_timeout(30000)
            _reader_signs_in(bob, site, base, "bob@example.com", story)
            bob.locator("details.reply summary").first.click()
            bob.get_by_label("Your reply").fill("Agreed, see https://city.example/photos")
            bob.get_by_role("button", name="Reply").click()
            expect(bob.locator(".replies .comment")).to_contain_text("Agreed")
            link = bob.locator(".replies a[href='https://city.example/photos']")
            assert link.get_attribute("rel") == "nofollow ugc noopener"
            bob.screenshot(path=str(ARTIFACTS / "conversation-1280.png"), full_page=True)
            _accessible(bob)

            editor = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
            editor.set_default_timeout(30000)
            editor.goto(f"{base}/editor/comments/")
            editor.fill("input[name=email]", EDITOR)
            editor.fill("input[name=password]", PASSWORD)
            editor.click("button:has-text('Sign in')")
            editor.wait_for_url(f"{base}/editor/comments/")
            _accessible(editor)
            editor.locator("li.comment", has_text="Lovely market").get_by_role("button", name="Hide").click()
            expect(editor.locator("p.flash")).to_contain_text("hidden")

            public = browser.new_context().new_page()
            public.set_default_timeout(30000)
            public.goto(base + story)
            expect(public.locator("#comments")).not_to_contain_text("Lovely market")
            expect(public.locator("#comments")).to_contain_text("Sign in to join the conversation.")
            bob.reload()
            expect(bob.locator("#comments")).not_to_contain_text("Lovely market")
            expect(bob.locator("#comments")).not_to_contain_text("Agreed")  # its thread is hidden with it
        finally:
            browser.close()


def test_screens_are_kept(server) -> None:  # noqa: ANN001
    # The main test writes them; this makes a missing artifacts folder a failure, not a silent skip.
    assert Path(ARTIFACTS).is_dir()
