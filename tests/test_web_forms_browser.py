"""The stand-alone pages readers reach from emails and links, submitted in real headless Chromium (issue 17).

A curl post with the right Origin proves nothing about what a browser sends: Chromium derives `Origin` from the
page's Referrer-Policy, so the forms are tested by filling them in, at phone and desktop width.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.test_web_browser import CHROMIUM, browser, server  # noqa: F401 - the module's fixtures

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's chromium at "
                                "/usr/bin/chromium (apt-get install chromium)")
pytest_plugins = ["tests.web_fixtures"]


@pytest.mark.parametrize("width", [390, 1280])
def test_the_subscribe_page_signs_a_reader_up_from_a_real_browser(server, browser, width: int) -> None:  # noqa: F811
    from playwright.sync_api import expect

    site, base = server
    context = browser.new_context(viewport={"width": width, "height": 844}, is_mobile=width < 600)
    page = context.new_page()
    page.set_default_timeout(10000)
    page.goto(f"{base}/subscribe/city")
    address = f"reader{width}@example.net"
    field = page.get_by_label("Email")
    field.fill(address)
    page.get_by_role("button", name="Subscribe").click()
    expect(page.locator("h1")).to_have_text("Check your inbox")
    sent = site.root / "outbox" / "city" / "messages" / f"{address}.eml"
    assert sent.exists(), "no confirmation email was sent"

    page.goto(f"{base}/subscribe/city")
    field = page.get_by_label("Email")
    # Styled like the archive's form: a full-width field in the page's font, not the browser's tiny default.
    box = field.bounding_box()
    assert box is not None and box["width"] >= min(width - 80, 300), box
    assert float(field.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")) >= 16
    assert page.locator("main h1").count() == 1  # a landmark, and the page's title in it
    context.close()


def _sign_in(page, base: str, site) -> None:  # noqa: ANN001
    from tests.web_support import EDITOR, PASSWORD

    page.goto(f"{base}/editor/issues/{site.draft_issue_id}")
    page.fill("input[name=email]", EDITOR)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{base}/editor/issues/{site.draft_issue_id}")


@pytest.mark.parametrize("width", [390, 1280])
def test_typed_text_survives_another_button_and_leaving_asks_first(server, browser, width: int) -> None:  # noqa: F811
    from playwright.sync_api import expect

    site, base = server
    context = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 600)
    page = context.new_page()
    page.set_default_timeout(10000)
    _sign_in(page, base, site)
    stories = page.locator("article.story")
    first, second = stories.nth(0), stories.nth(1)
    summary = first.locator("textarea[name=summary]")
    typed = f"A summary typed at {width} px, not saved yet."
    summary.fill(typed)
    intro = page.locator("textarea[name=intro]")
    intro.fill(f"An intro typed at {width} px.")
    # Another story's button posts its own form and the page reloads: the typed text is still there.
    second.get_by_role("button", name="Drop").click()
    page.wait_for_load_state("load")
    expect(page.locator("article.story").nth(1)).to_contain_text("dropped")
    expect(page.locator("article.story").nth(0).locator("textarea[name=summary]")).to_have_value(typed)
    expect(page.locator("textarea[name=intro]")).to_have_value(f"An intro typed at {width} px.")
    expect(page.locator(".unsaved-note").first).to_be_visible()

    # Leaving with unsaved text asks first; staying keeps it.
    dialogs: list[str] = []

    def dismiss(dialog) -> None:  # noqa: ANN001
        dialogs.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.locator("article.story").nth(0).locator("textarea[name=summary]").press("End")  # a user gesture
    with contextlib.suppress(Exception):  # dismissing the dialog cancels the navigation (goto then fails)
        page.goto(f"{base}/editor/", timeout=3000)
    assert dialogs == ["beforeunload"]
    page.remove_listener("dialog", dismiss)

    # Saving it keeps it for good, and the note goes.
    page.locator("article.story").nth(0).get_by_role("button", name="Save summary").click()
    page.wait_for_load_state("load")
    expect(page.locator("article.story").nth(0).locator("textarea[name=summary]")).to_have_value(typed)
    page.get_by_role("button", name="Save intro").click()
    page.wait_for_load_state("load")
    expect(page.locator(".unsaved-note")).to_have_count(0)
    # Put the draft back as the other tests expect it.
    page.locator("article.story").nth(1).get_by_role("button", name="Include").click()
    page.wait_for_load_state("load")
    context.close()
