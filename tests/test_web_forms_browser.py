"""The stand-alone pages readers reach from emails and links, submitted in real headless Chromium (issue 17).

A curl post with the right Origin proves nothing about what a browser sends: Chromium derives `Origin` from the
page's Referrer-Policy, so the forms are tested by filling them in, at phone and desktop width.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.store.db import session_scope
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
    page.set_default_timeout(30000)  # waits only as long as a loaded machine needs
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
    page.set_default_timeout(30000)  # waits only as long as a loaded machine needs
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
        page.goto(f"{base}/editor/", timeout=15000)
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


def _story_row(site, title: str) -> tuple[int, str, list[str]]:  # noqa: ANN001
    from newsletter.store.models import IssueItem

    with session_scope(site.engine) as session:
        item = session.scalars(select(IssueItem).where(IssueItem.issue_id == site.draft_issue_id,
                                                       IssueItem.title == title)).one()
        return item.id, item.summary, [q["text"] for q in item.quotes or []]


@pytest.mark.parametrize(("width", "button"), [(390, "Keep these quotes for"), (1280, "Save summary of")])
def test_either_button_of_a_story_saves_its_summary_and_its_quotes(server, browser, width: int,  # noqa: F811
                                                                    button: str) -> None:
    from playwright.sync_api import expect

    site, base = server
    context = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 600)
    page = context.new_page()
    page.set_default_timeout(30000)  # waits only as long as a loaded machine needs
    _sign_in(page, base, site)
    title = "Bridge plan approved"
    item_id, summary_before, quotes_before = _story_row(site, title)
    assert len(quotes_before) >= 2, quotes_before
    story = page.locator(f"#story-{item_id}")
    typed = f"Typed at {width} px, then saved with “{button}”."
    story.locator("textarea[name=summary]").fill(typed)
    story.locator("details summary").click()  # the quotes fold away until asked for
    boxes = story.locator("input[name=keep]")
    expect(boxes.first).to_be_checked()
    boxes.first.uncheck()
    with page.expect_navigation():
        story.get_by_role("button", name=f"{button} “{title}”").click()
    page.wait_for_load_state("load")

    _, summary, quotes = _story_row(site, title)
    assert summary == typed and quotes == quotes_before[1:]
    story = page.locator(f"#story-{item_id}")
    expect(story.locator("textarea[name=summary]")).to_have_value(typed)
    expect(story.locator("input[name=keep]").first).not_to_be_checked()
    expect(page.locator(".unsaved-note")).to_have_count(0)  # saved, so nothing is marked as waiting
    expect(story.get_by_role("button", name=f"{button} “{title}”")).to_be_focused()

    # Put the draft back as the other tests expect it.
    story.locator("textarea[name=summary]").fill(summary_before)
    if button.startswith("Keep"):  # focus came back to that button, so its fold opened again around it
        expect(story.locator("details")).to_have_attribute("open", "")
    else:
        story.locator("details summary").click()
    story.locator("input[name=keep]").first.check()
    with page.expect_navigation():
        story.get_by_role("button", name=f"Save summary of “{title}”").click()
    page.wait_for_load_state("load")
    assert _story_row(site, title)[2] == quotes_before
    context.close()


# -- the editor on a phone and with a keyboard; axe-core on every page ----------------------------------------

ROOT = Path(__file__).resolve().parents[1]
# axe-core comes from npm (`npm install --no-save axe-core`, as .ci/run does); AXE_CORE_JS may point elsewhere.
AXE = Path(os.environ.get("AXE_CORE_JS", ROOT / "node_modules" / "axe-core" / "axe.min.js"))
ABOVE_MINOR = ("moderate", "serious", "critical")


def _axe(page) -> list[str]:  # noqa: ANN001
    """axe-core's violations above "minor" on the page as it is, one line each."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['impact']}: {v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['target']})"
            for v in result["violations"] if v["impact"] in ABOVE_MINOR]


def _pages(site, base: str) -> list[str]:  # noqa: ANN001
    from newsletter.store.db import secret_key
    from newsletter.store.models import Subscriber
    from newsletter.subscribers.tokens import Signer

    with session_scope(site.engine) as session:
        secret = secret_key(session, site.settings.secret_key)
        subscriber = session.scalars(select(Subscriber.id)).first()
    pages = [f"{base}/editor/", f"{base}/editor/issues/{site.draft_issue_id}", f"{base}/archive/",
             f"{base}/archive/city", f"{base}/archive/city/1", f"{base}/subscribe/city"]
    if subscriber is not None:
        pages.append(Signer(secret).unsubscribe_url(base, subscriber, "city"))
    return pages


@pytest.mark.skipif(not AXE.exists(), reason=f"axe-core is not installed at {AXE}: `npm install --no-save "
                    "axe-core` in the checkout (.ci/run does)")
@pytest.mark.parametrize("width", [390, 1280])
def test_every_page_passes_axe_and_fits_a_phone(server, browser, width: int) -> None:  # noqa: F811
    site, base = server
    # bypass_csp: our pages allow no inline script, and axe is injected as one (the test's only exception).
    context = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 600, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(30000)  # waits only as long as a loaded machine needs
    page.goto(f"{base}/signin")
    found = {f"{base}/signin": _axe(page)}
    _sign_in(page, base, site)
    for url in _pages(site, base):
        page.goto(url)
        found[url] = _axe(page)
        if "/editor/" in url:  # our own pages never scroll sideways (the email previews scroll in their box)
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{url} scrolls sideways by {overflow}px at {width}px"
        assert page.locator("main").count() == 1, f"{url} has no <main> landmark"
    assert {url: v for url, v in found.items() if v} == {}
    context.close()


@pytest.mark.parametrize("width", [390, 1280])
def test_the_editor_by_keyboard_and_on_a_phone(server, browser, width: int) -> None:  # noqa: F811
    from playwright.sync_api import expect

    site, base = server
    context = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 600)
    page = context.new_page()
    page.set_default_timeout(30000)  # waits only as long as a loaded machine needs
    _sign_in(page, base, site)
    # The header: brand and links apart, the sign-out button whole inside the page.
    brand, issues = page.locator("header.top .brand").bounding_box(), page.get_by_role("link", name="Issues")
    nav = issues.bounding_box()
    assert brand and nav and (brand["x"] + brand["width"] < nav["x"] or brand["y"] + brand["height"] <= nav["y"])
    signout = page.locator("button.signout").bounding_box()
    assert signout and signout["x"] + signout["width"] <= width
    intro = page.get_by_role("textbox", name="Intro note")  # labelled by its heading, not its placeholder
    box = intro.bounding_box()
    assert box and box["x"] + box["width"] <= width
    if width >= 1200:
        assert page.locator("section.previews").evaluate("e => getComputedStyle(e).position") == "sticky"

    # A skip link first, then every story's buttons say which story they act on.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to the content")).to_be_focused()
    first = page.locator("article.story").nth(1)
    title = first.locator(".story-title").inner_text()
    drop = first.get_by_role("button", name=f"Drop “{title}”")
    expect(first.get_by_role("button", name=f"Up “{title}”")).to_be_visible()
    drop.focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    # After the reload focus is back on that story's button (now "Include"), not on <body>.
    expect(page.locator("article.story").nth(1).get_by_role("button", name=f"Include “{title}”")).to_be_focused()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.locator("article.story").nth(1).get_by_role("button", name=f"Drop “{title}”")).to_be_focused()
    # The mobile and dark previews repeat the desktop one: out of the Tab order.
    assert page.locator("#preview-mobile[inert]").count() == 1 and page.locator("#preview-dark[inert]").count() == 1
    # Our focus ring, visible on the orange Approve button too.
    approve = page.get_by_role("button", name="Approve", exact=True)
    approve.focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    ring = approve.evaluate("e => getComputedStyle(e).outlineStyle + ' ' + getComputedStyle(e).outlineWidth")
    assert ring == "solid 3px", ring
    context.close()
