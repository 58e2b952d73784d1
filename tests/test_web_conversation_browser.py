"""Issue 19's "Done when" flow in real headless Chromium against uvicorn on loopback, on the real story page.

A real send leaves issue #2 in the outbox. Ann opens the story page from the "Discuss" link of her email, sees
"No comments yet. Be the first.", asks for a sign-in link, opens it from the outbox, posts a comment and sees
it; Bob signs in the same way and replies; the editor signs in to the editor, goes to Comments and hides Ann's
comment; the public page no longer shows it (nor the reply in its thread).

Then the summary: Bob presses "This summary is wrong or misleading" on the story page and tells the editors
why; Ann uses the link under the story in her email (its page files nothing until she presses the button); the
editor opens the issue in the editor, follows "Reader feedback and corrections", sees both, corrects the
summary; the story page shows the corrected summary and "Corrected <time>".

axe-core (moderate and above) on every page the flow shows; screenshots in test-artifacts/edition/.
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from email import policy

import pytest

from newsletter.store.db import ensure_newsletter, session_scope
from tests.conversation_support import sign_in_mail
from tests.test_web_browser import ARGS, ARTIFACTS, CHROMIUM
from tests.test_web_edition import send_second_issue
from tests.test_web_forms_browser import AXE, _axe
from tests.web_server import loopback_socket, serve_socket
from tests.web_support import EDITOR, PASSWORD, Site, add_editor, make_site

SHOTS = ARTIFACTS.parent / "edition"
ANN, BOB = "ann@example.com", "bob@example.com"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's chromium at /usr/bin/chromium "
                       "(apt-get install chromium)"),
    pytest.mark.skipif(not AXE.exists(), reason=f"axe-core is not installed at {AXE}: `npm install --no-save "
                       "axe-core` in the checkout"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    from argon2 import PasswordHasher, profiles

    from newsletter.subscribers.manage import add_subscriber
    from newsletter.web import auth
    from newsletter.web.app import create_app

    sock, base = loopback_socket()
    site = make_site(tmp_path_factory.mktemp("conversation-browser"), base_url=base)
    saved = auth._hasher
    auth._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)
    try:
        add_editor(site.engine)
    finally:
        auth._hasher = saved
    with session_scope(site.engine) as session:
        add_subscriber(session, ensure_newsletter(session, "city", "City Weekly"), BOB)
    send_second_issue(site)  # a real send: Ann and Bob get issue #2 in the outbox
    with serve_socket(create_app(site.settings, engine=site.engine), sock):
        yield site, base


def _issue_email_link(site: Site, address: str, text: str) -> str:
    """The first link labelled `text` in the HTML part of `address`'s copy of issue #2."""
    message = email.message_from_bytes(
        (site.root / "outbox" / "city" / "issue-2" / f"{address}.eml").read_bytes(), policy=policy.default)
    html = message.get_body(("html",)).get_content()
    match = re.search(rf'<a href="([^"]+)"[^>]*>{re.escape(text)}</a>', html)
    assert match, f"{address}'s email has no {text!r} link"
    return match.group(1).replace("&amp;", "&")


def _sign_in_link(site: Site, address: str) -> str:
    message = sign_in_mail(site, address)
    assert message is not None, f"no sign-in email to {address}"
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    match = re.search(r'href="([^"]+/readers/signin/[^"]+)"', html_part.get_content())
    assert match, "the email has no sign-in link"
    return match.group(1).replace("&amp;", "&")


def _accessible(page) -> None:  # noqa: ANN001
    assert _axe(page) == [], page.url


def _reader_signs_in(page, site: Site, address: str, story: str) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    page.get_by_role("link", name="Sign in to join the conversation.").click()
    _accessible(page)
    page.get_by_label("Email").fill(address)
    page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.locator("h1")).to_have_text("Check your inbox")
    page.goto(_sign_in_link(site, address))  # opened from the outbox, as from an inbox
    _accessible(page)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(story)


def test_the_conversation_and_the_summary_feedback_on_the_real_story_page(server) -> None:  # noqa: ANN001
    from playwright.sync_api import expect, sync_playwright

    site, base = server
    story = _issue_email_link(site, ANN, "Discuss")
    assert re.fullmatch(re.escape(base) + r"/archive/city/2/1-bridge-plan-approved", story), story
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            # bypass_csp: axe is injected as an inline script, which the pages' policy refuses.
            phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, bypass_csp=True)
            ann = phone.new_page()
            ann.set_default_timeout(30000)  # as long as a loaded machine needs
            ann.goto(story)
            expect(ann.locator("h1")).to_have_text("Bridge plan approved")
            expect(ann.locator("#comments")).to_contain_text("No comments yet. Be the first.")
            _reader_signs_in(ann, site, ANN, story)
            ann.get_by_label("Your comment").fill('Lovely bridge. <script>document.title="owned"</script>')
            ann.get_by_role("button", name="Post comment").click()
            expect(ann.locator(".comment .body")).to_contain_text('<script>document.title="owned"</script>')
            assert ann.title() == "Bridge plan approved · City Weekly"  # shown as text, never run
            ann.screenshot(path=str(SHOTS / "conversation-390.png"), full_page=True)
            _accessible(ann)

            bob = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
            bob.set_default_timeout(30000)
            bob.goto(_issue_email_link(site, BOB, "Discuss"))
            _reader_signs_in(bob, site, BOB, story)
            bob.locator("details.reply summary").first.click()
            bob.get_by_label("Your reply").fill("Agreed, see https://city.example/photos")
            bob.get_by_role("button", name="Reply").click()
            expect(bob.locator(".replies .comment")).to_contain_text("Agreed")
            link = bob.locator(".replies a[href='https://city.example/photos']")
            assert link.get_attribute("rel") == "nofollow ugc noopener"
            bob.screenshot(path=str(SHOTS / "conversation-1280.png"), full_page=True)
            _accessible(bob)

            editor = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
            editor.set_default_timeout(30000)
            editor.goto(f"{base}/editor/")
            editor.fill("input[name=email]", EDITOR)
            editor.fill("input[name=password]", PASSWORD)
            editor.click("button:has-text('Sign in')")
            editor.wait_for_url(f"{base}/editor/")
            editor.get_by_role("link", name="Comments", exact=True).click()
            _accessible(editor)
            editor.locator("li.comment", has_text="Lovely bridge").get_by_role("button", name="Hide").click()
            expect(editor.locator("p.flash")).to_contain_text("hidden")

            public = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            public.set_default_timeout(30000)
            public.goto(story)
            expect(public.locator("#comments")).not_to_contain_text("Lovely bridge")
            expect(public.locator("#comments")).to_contain_text("Sign in to join the conversation.")
            bob.reload()
            expect(bob.locator("#comments")).not_to_contain_text("Lovely bridge")
            expect(bob.locator("#comments")).not_to_contain_text("Agreed")  # its thread is hidden with it

            # "This summary is wrong": Bob on the story page, signed in.
            bob.get_by_text("This summary is wrong or misleading").click()
            bob.get_by_label("misleading").check()
            bob.get_by_label("What is wrong with it? (optional)").fill("The committee approved it, not the council.")
            bob.screenshot(path=str(SHOTS / "feedback-form-1280.png"), full_page=True)
            _accessible(bob)
            bob.get_by_role("button", name="Tell the editors").click()
            expect(bob.locator("#feedback")).to_contain_text("You told the editors this summary is misleading")

            # Ann, from the link under the story in her email: the page files nothing until she presses.
            ann.goto(_issue_email_link(site, ANN, "Summary wrong?"))
            expect(ann.locator("h1")).to_have_text("Is this summary wrong?")
            ann.screenshot(path=str(SHOTS / "feedback-confirm-390.png"), full_page=True)
            _accessible(ann)
            ann.get_by_role("button", name="Tell the editors").click()
            expect(ann.locator("h1")).to_have_text("Thank you")

            # The editor, from the issue in the editor, to the queue beside the story; corrects the summary.
            editor.goto(f"{base}/editor/")
            editor.get_by_role("link", name=re.compile("Bridge plan approved")).first.click()
            editor.get_by_role("link", name="Reader feedback and corrections").click()
            expect(editor.locator("#story-" + _first_item(site))).to_contain_text(
                "The committee approved it, not the council.")
            expect(editor.locator("#story-" + _first_item(site))).to_contain_text(f"{ANN} (from the email)")
            editor.screenshot(path=str(SHOTS / "feedback-queue-1280.png"), full_page=True)
            _accessible(editor)
            fixed = "The transport committee approved the bridge plan; the full council votes in May."
            editor.get_by_label("Summary of “Bridge plan approved”").fill(fixed)
            editor.locator("#story-" + _first_item(site)).get_by_role("button", name="Correct the summary").click()
            expect(editor.locator("p.flash")).to_contain_text("is corrected")

            for context, name in ((public, "corrected-1280-light"), (ann, "corrected-390")):
                context.goto(story)
                expect(context.locator("p.summary")).to_have_text(fixed)
                expect(context.locator("p.corrected")).to_contain_text("Corrected")
                context.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
            _accessible(ann)
            dark = browser.new_context(viewport={"width": 375, "height": 800}, is_mobile=True,
                                       color_scheme="dark", bypass_csp=True).new_page()
            dark.goto(story)
            expect(dark.locator("p.corrected")).to_contain_text("Corrected")
            dark.screenshot(path=str(SHOTS / "corrected-375-dark.png"), full_page=True)
            _accessible(dark)
        finally:
            browser.close()
    for name in ("conversation-390", "feedback-form-1280", "feedback-confirm-390", "feedback-queue-1280",
                 "corrected-1280-light", "corrected-375-dark"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000, name


def _first_item(site: Site) -> str:
    from sqlalchemy import select

    from newsletter.store.models import IssueItem

    with session_scope(site.engine) as session:
        return str(session.scalar(select(IssueItem.id).where(IssueItem.issue_id == site.draft_issue_id,
                                                             IssueItem.title == "Bridge plan approved")))
