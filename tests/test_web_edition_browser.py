"""The web edition in real headless Chromium: a reader follows the "Discuss" link of a real send's outbox email
to the story page, and "View in browser" to the issue page; axe-core finds nothing serious; screenshots at
375 and 1280 px, light and dark, go to test-artifacts/edition/.

Needs Debian's chromium at /usr/bin/chromium and axe-core from npm (`npm install --no-save axe-core`).
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from email import policy

import pytest

from tests.test_web_browser import ARTIFACTS, CHROMIUM, browser  # noqa: F401 - the module's fixtures
from tests.test_web_edition import send_second_issue
from tests.test_web_forms_browser import AXE
from tests.web_server import loopback_socket, serve_socket
from tests.web_support import Site, make_site

SHOTS = ARTIFACTS.parent / "edition"
SERIOUS = ("serious", "critical")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's chromium at /usr/bin/chromium"),
    pytest.mark.skipif(not AXE.exists(), reason=f"axe-core is not installed at {AXE}: `npm install --no-save "
                       "axe-core` in the checkout"),
]


@pytest.fixture(scope="module")
def edition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    from newsletter.web.app import create_app

    sock, base = loopback_socket()
    site = make_site(tmp_path_factory.mktemp("edition-browser"), base_url=base)
    send_second_issue(site)  # a real send: the links below are read from the email it left in the outbox
    with serve_socket(create_app(site.settings, engine=site.engine), sock):
        yield site, base


def _email_links(site: Site) -> tuple[str, str]:
    """The first story's "Discuss" link and "View in browser" in the HTML part Ann received."""
    message = email.message_from_bytes(
        (site.root / "outbox" / "city" / "issue-2" / "ann@example.com.eml").read_bytes(), policy=policy.default)
    html = message.get_body(("html",)).get_content()
    discuss = re.search(r'<a href="([^"]+)"[^>]*>Discuss</a>', html)
    view = re.search(r'<a href="([^"]+)"[^>]*>View in browser</a>', html)
    assert discuss and view, "the email has no Discuss or View in browser link"
    return discuss.group(1), view.group(1)


def _serious(page) -> list[str]:  # noqa: ANN001
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['impact']}: {v['id']}: {v['help']} ({v['nodes'][0]['target']})"
            for v in result["violations"] if v["impact"] in SERIOUS]


def _overflow(page) -> int:  # noqa: ANN001
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_a_reader_opens_the_story_from_the_email(edition, browser) -> None:  # noqa: ANN001, F811
    from playwright.sync_api import expect

    site, _ = edition
    discuss, view = _email_links(site)
    context = browser.new_context(viewport={"width": 375, "height": 800}, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(30000)  # waits only as long as a loaded machine needs
    page.goto(discuss)
    expect(page.locator("h1")).to_have_text("Bridge plan approved")
    expect(page.get_by_text("No comments yet. Be the first.")).to_be_visible()
    expect(page.get_by_role("heading", name="Comments")).to_be_visible()
    expect(page.get_by_text("Key quotes · 2 pulled")).to_be_visible()
    # Related reading: the story already in the archive opens its page there.
    page.get_by_role("link", name="Old market reopens").click()
    expect(page.locator("h1")).to_have_text("Old market reopens")
    assert page.url.endswith("/archive/city/1/1-old-market-reopens")
    page.goto(view)
    expect(page.locator("h1")).to_have_text(re.compile("City Weekly #2"))
    expect(page.locator("article.card")).to_have_count(3)
    # By keyboard: the first Tab reaches the skip link, and a focused link shows where focus is.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Tab")
    style = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert style not in ("none", ""), f"the focused link shows no outline ({style})"
    context.close()


@pytest.mark.parametrize("width", [375, 1280])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_edition_passes_axe_fits_and_is_screenshotted(edition, browser, width: int, scheme: str) -> None:  # noqa: ANN001, F811
    site, base = edition
    discuss, view = _email_links(site)
    SHOTS.mkdir(parents=True, exist_ok=True)
    # bypass_csp: the pages allow no script, and axe is injected as one (the test's only exception).
    context = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 600,
                                  color_scheme=scheme, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(30000)
    backgrounds = set()
    for name, url in (("issue", view), ("story", discuss)):
        page.goto(url)
        page.screenshot(path=str(SHOTS / f"{name}-{width}-{scheme}.png"), full_page=True)
        assert _overflow(page) <= 0, f"{url} scrolls sideways at {width}px"
        assert page.locator("main").count() == 1 and page.locator("h1").count() == 1
        assert _serious(page) == [], url
        backgrounds.add(page.evaluate("getComputedStyle(document.body).backgroundColor"))
    expected = "rgb(18, 18, 18)" if scheme == "dark" else "rgb(246, 245, 241)"
    assert backgrounds == {expected}
    context.close()
