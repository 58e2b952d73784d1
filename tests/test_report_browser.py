"""The editor's report in real headless Chromium: issue #2 went out through the local SendGrid server with
tracking on, readers clicked through /r/, opened the pixel, and the server posted signed delivered and spamreport
events to the webhook. The report shows an SVG bar per story (in issue order), the 7-day line and the rates at
375 and 1280 px, light and dark; axe-core finds nothing serious; screenshots go to test-artifacts/report/.

Needs Debian's chromium at /usr/bin/chromium and axe-core from npm (`npm install --no-save axe-core`).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.report_support import READERS, World, tracked_world
from tests.test_web_browser import ARTIFACTS, CHROMIUM, browser  # noqa: F401 - the module's fixtures
from tests.test_web_forms_browser import AXE
from tests.web_support import EDITOR, PASSWORD

SHOTS = ARTIFACTS.parent / "report"
SERIOUS = ("serious", "critical")
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's chromium at /usr/bin/chromium"),
    pytest.mark.skipif(not AXE.exists(), reason=f"axe-core is not installed at {AXE}: `npm install --no-save "
                       "axe-core` in the checkout"),
]
pytest_plugins = ["tests.web_fixtures"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with tracked_world(tmp_path_factory.mktemp("report-browser")) as w:
        for n, address in enumerate(READERS):  # ann clicks story 1, bob stories 1-2, cy all three
            for link in list(w.story_links(address).values())[: n + 1]:
                answer = httpx.get(w.path(link), headers={"User-Agent": CHROME}, follow_redirects=False)
                assert answer.status_code == 302
        w.server.post_events(w.url + "/webhooks/sendgrid",
                             [w.server.event(a, "delivered", after=4) for a in READERS]
                             + [w.server.event("cy@example.com", "spamreport", after=7200)])
        yield w


def _serious(page) -> list[str]:  # noqa: ANN001
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['impact']}: {v['id']}: {v['help']} ({v['nodes'][0]['target']})"
            for v in result["violations"] if v["impact"] in SERIOUS]


@pytest.mark.parametrize("width", [375, 1280])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_report_draws_its_charts_passes_axe_and_is_screenshotted(world: World, browser, width: int,  # noqa: ANN001, F811
                                                                      scheme: str) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 600,
                                  color_scheme=scheme, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(30000)
    page.goto(f"{world.url}/editor/reports/city/issues/2")
    page.fill("input[name=email]", EDITOR)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{world.url}/editor/reports/city/issues/2")
    expect(page.locator("h1")).to_contain_text("Issue #2")
    stories = page.locator("#chart-stories svg")
    expect(stories).to_have_count(1)
    expect(stories.locator("rect.bar")).to_have_count(3)  # one bar per story
    labels = stories.locator("text.label").all_text_contents()
    assert [label.split(".")[0] for label in labels] == ["1", "2", "3"]  # in the order of the issue
    values = [float(v) for v in stories.locator("text.value").all_text_contents()]
    assert values == [3, 2, 1]  # what the readers clicked
    widths = [float(r.get_attribute("width") or 0) for r in stories.locator("rect.bar").all()]
    assert widths[0] > widths[1] > widths[2] > 0
    expect(page.locator("#chart-days svg polyline")).to_have_count(2)  # clicks and opens
    expect(page.locator("#chart-rates svg line.mark")).to_have_count(2)  # Gmail's 0.1% and 0.3%
    box = stories.bounding_box()
    assert box is not None and 0 < box["width"] <= width
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    # The numbers are in a table under each chart, for screen readers.
    expect(page.locator("table.data")).to_have_count(4)
    assert "Delivered" in page.locator("dl.figures").inner_text()
    # Readable in dark mode: the bars and the text take the scheme's colours.
    fill = page.evaluate("getComputedStyle(document.querySelector('#chart-stories rect.bar')).fill")
    text = page.evaluate("getComputedStyle(document.querySelector('#chart-stories text.label')).fill")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    if scheme == "dark":
        assert (fill, text, background) == ("rgb(253, 186, 116)", "rgb(228, 228, 231)", "rgb(24, 24, 27)")
    else:
        assert (fill, background) == ("rgb(194, 65, 12)", "rgb(250, 250, 250)")
    page.screenshot(path=str(SHOTS / f"issue-{width}-{scheme}.png"), full_page=True)
    assert _serious(page) == []
    page.goto(f"{world.url}/editor/reports/city")
    expect(page.locator("svg.chart")).to_have_count(3)
    page.screenshot(path=str(SHOTS / f"trend-{width}-{scheme}.png"), full_page=True)
    assert _serious(page) == []
    context.close()
