"""The demo issue in a real browser engine (Debian's Chromium, driven by Playwright): it fits phone and desktop
widths (320, 375, 600 px) without sideways scrolling, every story title shows, dark mode stays readable, and
the cards keep their layout with pictures loaded or blocked.

Screenshots land in test-artifacts/browser/ for a human to look at (demo-<width>px-<scheme>-images-<on|off>.png).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest

from newsletter.render import tokens
from newsletter.render.engine import render_issue
from newsletter.render.preview import sample_values
from tests.fixtures.issues import NOW, make_issue, make_newsletter

# NEWSLETTER_TEST_CHROMIUM: another Chromium binary (an unpacked Debian package, where it cannot be installed).
CHROMIUM = Path(os.environ.get("NEWSLETTER_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package at /usr/bin/chromium "
                                                               "(apt-get install chromium; CI installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def demo_issue(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """The real `newsletter demo` issue (sample feeds, collected, built and rendered), tokens filled."""
    from concurrent.futures import ThreadPoolExecutor

    from newsletter.demo.run import run_demo

    # Collecting runs asyncio, which cannot start inside Playwright's loop: give it a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(run_demo, tmp_path_factory.mktemp("demo")).result()
    html = tokens.fill(result.html_path.read_text(), sample_values("https://news.example.org"))
    titles = [
        " ".join(unescape(re.sub(r"<[^>]+>", "", t)).split())
        for t in re.findall(r'<a class="t"[^>]*>(.*?)</a>', html, re.S)
    ]
    assert len(titles) == result.stories > 0
    return html, titles


def open_page(browser, html: str, width: int, scheme: str = "light"):  # noqa: ANN001, ANN201
    page = browser.new_page(viewport={"width": width, "height": 800}, color_scheme=scheme)
    page.set_content(html, wait_until="load")
    return page


@pytest.mark.parametrize("width", [320, 375, 600])
def test_fits_the_width_and_every_title_is_visible(browser, demo_issue, width: int) -> None:  # noqa: ANN001
    html, titles = demo_issue
    page = open_page(browser, html, width)
    try:
        scroll = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll[0] <= scroll[1], f"horizontal scroll at {width}px: content is {scroll[0]}px wide"
        shown = page.evaluate("""() => [...document.querySelectorAll('h2 a.t')].map(a => {
            const r = a.getBoundingClientRect(), s = getComputedStyle(a);
            return {text: a.innerText.replace(/\\s+/g, ' ').trim(), left: r.left, right: r.right,
                    height: r.height, visible: s.visibility === 'visible' && s.display !== 'none'
                    && parseFloat(s.opacity) > 0 && parseFloat(s.fontSize) >= 16};
        })""")
        assert [s["text"] for s in shown] == titles
        for title in shown:
            assert title["visible"] and title["height"] > 0, title
            assert title["left"] >= 0 and title["right"] <= width, title
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"demo-{width}px.png"), full_page=True)
    finally:
        page.close()


# WCAG relative luminance and contrast ratio of the colours the browser actually computed.
CONTRAST_JS = """() => {
  const rgb = c => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92
      : Math.pow((v + 0.055) / 1.055, 2.4); }).reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = el => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor;
      const v = rgb(c); if (v.length < 4 || v[3] > 0) return v.slice(0, 3); } return [255, 255, 255]; };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const pick = sel => [...document.querySelectorAll(sel)];
  return pick('h2 a.t, .s > p, .s .m, .s blockquote p, .s a, .intro p').map(el => {
    const fg = rgb(getComputedStyle(el).color).slice(0, 3), bg = background(el);
    return {text: el.innerText.slice(0, 40), ratio: ratio(fg, bg), bg: lum(bg)};
  });
}"""


@pytest.mark.parametrize("width", [320, 375, 600])
@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_text_has_readable_contrast(browser, demo_issue, scheme: str, width: int) -> None:  # noqa: ANN001
    html, _ = demo_issue
    page = open_page(browser, html, width, scheme)
    try:
        samples = page.evaluate(CONTRAST_JS)
        assert len(samples) > 10
        worst = min(samples, key=lambda s: s["ratio"])
        assert worst["ratio"] >= 4.5, f"{scheme}: {worst['text']!r} has contrast {worst['ratio']:.2f}:1"
        backgrounds = {round(s["bg"], 3) for s in samples}
        if scheme == "dark":
            assert max(backgrounds) < 0.05, "dark mode did not darken the background"
        else:
            assert min(backgrounds) > 0.8
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"demo-{width}px-{scheme}.png"), full_page=True)
    finally:
        page.close()


def test_right_to_left_issue_reads_from_the_right(browser) -> None:  # noqa: ANN001
    nl = make_newsletter(language="ar", direction="rtl", name="نشرة المدينة")
    issue = make_issue(2)
    issue.items[0].title = "المجلس البلدي يوافق على تجربة أسبوع العمل من أربعة أيام"
    html = render_issue(issue, nl, base_url="https://news.example.org", now=NOW).html
    page = open_page(browser, tokens.fill(html, sample_values("https://news.example.org")), 375)
    try:
        box = page.evaluate("""() => { const a = document.querySelector('h2 a.t'), r = a.getBoundingClientRect();
            return {right: r.right, left: r.left, dir: getComputedStyle(a).direction,
                    align: getComputedStyle(a.closest('div[style*="text-align"]')).textAlign}; }""")
        assert box["dir"] == "rtl" and box["align"] == "right"
        assert box["right"] > 375 - 40  # the title hugs the right edge (24px padding), not the left
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "rtl-375px.png"), full_page=True)
    finally:
        page.close()


def _png(width: int, height: int) -> bytes:
    """A solid-colour PNG of the given size: a stand-in picture whose shape the card must keep."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" + b"\x3c\x6e\x91" * width) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("images", ["on", "off"])
@pytest.mark.parametrize("width", [320, 375, 600])
def test_story_pictures_with_images_on_and_off(browser, demo_issue, width: int, images: str,  # noqa: ANN001
                                               scheme: str) -> None:
    html, titles = demo_issue
    picture = _png(1200, 675)
    page = browser.new_page(viewport={"width": width, "height": 800}, color_scheme=scheme)
    # Every picture request is answered here (on) or refused, as a client that blocks images does (off).
    page.route(re.compile(r"\.(?:jpe?g|png|gif|webp)(?:\?.*)?$"),
               lambda route: route.fulfill(body=picture, content_type="image/png") if images == "on"
               else route.abort("blockedbyclient"))
    try:
        page.set_content(html, wait_until="load")
        shown = page.evaluate("""() => [...document.querySelectorAll('.s img')].map(i => {
            const r = i.getBoundingClientRect();
            return {alt: i.alt, width: r.width, height: r.height, left: r.left, right: r.right,
                    loaded: i.naturalWidth > 0, attrs: [i.getAttribute('width'), i.getAttribute('height')]}; })""")
        assert len(shown) >= 1, "the demo issue has stories with pictures"
        scroll = page.evaluate("() => document.documentElement.scrollWidth")
        assert scroll <= width, f"sideways scrolling at {width}px, images {images}: content is {scroll}px wide"
        for img in shown:
            assert any(t.startswith(img["alt"].rstrip("…")) for t in titles), img
            assert img["left"] >= 0 and img["right"] <= width and all(img["attrs"]), img
            if images == "on":  # the picture's own shape, the card's width (less its padding)
                assert img["loaded"] and img["width"] <= min(width, 600) - 48 + 1, img
                assert abs(img["height"] - img["width"] * 675 / 1200) <= 2, img
            else:  # a blocked picture leaves its alt line, not a 552 x 310 hole
                assert not img["loaded"] and img["height"] < 60, img
        # The card reads the same without its pictures: every title shown, inside the screen, each card's
        # summary under its title.
        cards = page.evaluate("""() => [...document.querySelectorAll('.s')].map(c => {
            const a = c.querySelector('h2 a.t').getBoundingClientRect(), r = c.getBoundingClientRect();
            return {title: a.height, left: r.left, right: r.right, top: a.top, bottom: r.bottom}; })""")
        assert len(cards) == len(titles)
        for card in cards:
            assert card["title"] > 0 and card["left"] >= 0 and card["right"] <= width, card
            assert card["bottom"] > card["top"], card
        samples = page.evaluate(CONTRAST_JS)  # readable in both schemes, with or without pictures
        worst = min(samples, key=lambda s: s["ratio"])
        assert worst["ratio"] >= 4.5, f"{scheme}, {width}px: {worst['text']!r} has contrast {worst['ratio']:.2f}:1"
        if scheme == "dark":
            assert max(s["bg"] for s in samples) < 0.05, "dark mode did not darken the background"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"demo-{width}px-{scheme}-images-{images}.png"), full_page=True)
    finally:
        page.close()
