"""The stand-alone pages readers reach from emails and links, submitted in real headless Chromium (issue 17).

A curl post with the right Origin proves nothing about what a browser sends: Chromium derives `Origin` from the
page's Referrer-Policy, so the forms are tested by filling them in, at phone and desktop width.
"""

from __future__ import annotations

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
