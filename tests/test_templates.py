"""The default digest templates: what a reader sees in the HTML and text parts, in both MJML compilers."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest

from newsletter.config import ConfigError, load_newsletter
from newsletter.render import tokens
from newsletter.render.check import read_html
from newsletter.render.engine import TemplateError, render_issue
from tests.fixtures.issues import NOW, make_issue, make_newsletter

BASE = "https://news.example.org"
COMPILERS = ["mrml", "mjml"]


def render(issue=None, nl=None, **kw):
    return render_issue(issue or make_issue(), nl or make_newsletter(), base_url=BASE, now=NOW, **kw)


def visible_text(html: str) -> str:
    body = re.sub(r"<!--.*?-->", "", html, flags=re.S)
    body = re.sub(r"<(style|title)[^>]*>.*?</\1>", "", body, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())


@pytest.mark.parametrize("compiler", COMPILERS)
def test_twelve_story_issue_stays_lean(compiler: str) -> None:
    # 12 stories with 3 quotes and 5 related links each: well under Gmail's ~102 KB clipping point.
    rendered = render(make_issue(12, quotes=3, related=5), compiler=compiler)
    assert rendered.compiler == compiler
    size = len(rendered.html.encode())
    assert size < 90 * 1024, f"{compiler}: {size} bytes"


@pytest.mark.parametrize("compiler", COMPILERS)
def test_every_part_of_a_story_is_shown(compiler: str) -> None:
    issue = make_issue(3)
    rendered = render(issue, compiler=compiler)
    text = visible_text(rendered.html)
    page = read_html(rendered.html)
    hrefs = {href for href, _ in page.links}
    for story in issue.items:
        assert story.title in text
        assert story.url in hrefs
        assert story.source in text
        if story.author:
            assert story.author in text
        for quote in story.quotes:
            assert f"“{quote.text}”" in text
            if quote.speaker:
                assert f"— {quote.speaker}" in text
        for link in story.related:
            assert link.title in text and link.blurb in text and link.url in hrefs
        for link in story.also_covered_by:
            assert link.url in hrefs and link.source in text
    assert "2h ago" in text  # relative age against the render clock
    # The labelled blocks of the card, with the number of quotes pulled.
    for label in ("Summary", "Source", "Key quotes · 3 pulled", "You might also wanna read", "Also covered by"):
        assert label in text, label
    assert "news.example.org · 2h ago" in text  # the link's domain and its age


@pytest.mark.parametrize("compiler", COMPILERS)
def test_the_card_shows_the_aggregator_chain_and_a_long_issue_opens_with_its_contents(compiler: str) -> None:
    issue = make_issue(6)
    issue.items[0].via, issue.items[0].url = "Hacker News", "https://techstrong.ai/articles/lecun-open-source"
    rendered = render(issue, compiler=compiler)
    text = visible_text(rendered.html)
    assert "Hacker News → techstrong.ai" in text
    assert text.index("In this issue") < text.index("Summary")  # before the first story
    assert "Source: Hacker News → techstrong.ai" in rendered.text and "In this issue:" in rendered.text
    short = render(make_issue(3), compiler=compiler)
    assert "In this issue" not in visible_text(short.html) and "In this issue" not in short.text


def test_title_links_to_the_story_and_quotes_are_set_apart() -> None:
    rendered = render(make_issue(1))
    title = re.search(r'<h2[^>]*><a class="t" href="([^"]+)"[^>]*>([^<]+)</a></h2>', rendered.html)
    assert title and unescape(title.group(1)) == make_issue(1).items[0].url
    assert rendered.html.count("<blockquote") == 3


def test_feed_text_is_escaped_and_cannot_break_the_markup() -> None:
    issue = make_issue(1)
    story = issue.items[0]
    story.title = 'Tags <script>alert("x")</script> & "quotes" </mj-text>'
    story.quotes[0].text = "a < b && c > d"
    story.related[0].blurb = "<img src=x onerror=alert(1)>"
    for compiler in COMPILERS:
        rendered = render(issue, compiler=compiler)
        assert "<script" not in rendered.html and "<img" not in rendered.html
        assert story.title in visible_text(rendered.html)
        assert "“a < b && c > d”" in visible_text(rendered.html)


def test_document_has_language_direction_and_presentation_tables() -> None:
    rendered = render()
    page = read_html(rendered.html)
    assert page.html_attrs.get("lang") == "en" and page.html_attrs.get("dir") == "ltr"
    assert page.tables_without_role == 0
    assert '<meta name="color-scheme" content="light dark"' in rendered.html
    assert "fonts.googleapis.com" not in rendered.html  # no web fonts fetched from a third party


def test_right_to_left_newsletter() -> None:
    nl = make_newsletter(language="ar", direction="rtl", name="نشرة المدينة")
    rendered = render(make_issue(2), nl)
    page = read_html(rendered.html)
    assert page.html_attrs.get("lang") == "ar" and page.html_attrs.get("dir") == "rtl"
    text_blocks = re.findall(r'<div style="font-family:[^"]*?text-align:(\w+)', rendered.html)
    assert text_blocks and set(text_blocks) == {"right", "center"}  # the footer is centred
    assert "border-right:3px solid" in rendered.html and "border-left:3px" not in rendered.html
    assert "direction:rtl" in rendered.html


def test_dark_mode_stylesheet_uses_the_theme() -> None:
    nl = make_newsletter(theme={"dark_background": "#101010", "dark_text": "#fafafa", "accent": "#0055aa"})
    rendered = render(make_issue(1), nl)
    dark = rendered.html[rendered.html.index("prefers-color-scheme: dark"):]
    assert "#101010 !important" in dark and "#fafafa !important" in dark
    assert "color:#0055aa" in rendered.html


def test_theme_colours_must_be_hex(tmp_path: Path) -> None:
    path = tmp_path / "civic.toml"
    path.write_text('name = "C"\nfrom_address = "c@example.org"\n[[sources]]\nurl = "https://e.org/f"\n'
                    '[theme]\naccent = "red;} body {display:none"\n')
    with pytest.raises(ConfigError, match=r"civic.toml: theme.accent: not a colour: use #rgb or #rrggbb"):
        load_newsletter(path)


def test_logo_has_alt_and_width_and_the_name_stays_as_text() -> None:
    nl = make_newsletter(theme={"logo_url": "https://example.org/logo.png", "logo_alt": "Civic Digest logo"})
    rendered = render(make_issue(1), nl)
    (img,) = read_html(rendered.html).images
    assert img["alt"] == "Civic Digest logo" and img["width"] == "48"
    assert "Civic Digest" in visible_text(rendered.html.replace(img["alt"], ""))


def test_intro_is_markdown_without_raw_html() -> None:
    issue = make_issue(1, intro="Hello **readers**, see [the map](https://example.org/map).\n\n<b>raw</b>")
    rendered = render(issue)
    assert "<strong>readers</strong>" in rendered.html
    assert re.search(r'<a style="color:#c2410c" href="https://example.org/map">the map</a>', rendered.html)
    assert "<b>raw</b>" not in rendered.html and "&lt;b&gt;raw&lt;/b&gt;" in rendered.html
    no_intro = render(make_issue(1, intro=""))
    assert 'class="intro"' not in no_intro.html


def test_footer_says_why_and_how_to_leave() -> None:
    rendered = render(make_issue(1))
    text = visible_text(rendered.html)
    assert f"subscribed to Civic Digest as {tokens.EMAIL}" in text
    assert "Civic Digest, 12 Harbour Street, 1000 Example City" in text
    links = dict((text, href) for href, text in read_html(rendered.html).links)
    assert links["Unsubscribe"] == tokens.UNSUBSCRIBE_URL
    assert links["Past issues"] == f"{BASE}/archive/civic"
    assert links["View in browser"] == f"{BASE}/archive/civic/42"


def test_preheader_is_hidden_text_before_the_body() -> None:
    issue = make_issue(3)
    issue.preheader = "Four-day weeks, heat maps and a trademark fight"
    rendered = render(issue)
    assert rendered.preheader == issue.preheader
    body = rendered.html.split("<body", 1)[1]
    hidden = re.search(r'<div style="display:none[^"]*">(.*?)</div>', body, re.S)
    assert hidden and hidden.group(1).startswith(issue.preheader)


def test_text_part_reads_well_in_a_terminal() -> None:
    issue = make_issue(2, intro="Hi! Read [the map](https://example.org/map) first.")
    text = render(issue).text
    body, _, links = text.partition("\nLinks:\n")
    assert all(len(line) <= 72 for line in body.splitlines()), [ln for ln in body.splitlines() if len(ln) > 72]
    assert "http" not in body.split("\n-- \n")[0]  # URLs are listed, not inlined in the prose
    refs = dict(re.findall(r"^\[(\d+)\] (\S+)$", links, re.M))
    assert refs["1"] == "https://example.org/map"
    assert "read the map [1] first" in " ".join(body.lower().split())
    story = issue.items[0]
    number = re.search(rf"1\. {re.escape(story.title[:30])}.*?\[(\d+)\]", body, re.S).group(1)
    assert refs[number] == story.url
    for link in story.related:
        assert link.url in refs.values()
    assert f"   > “{story.quotes[0].text[:40]}" in text
    assert f"Unsubscribe: {tokens.UNSUBSCRIBE_URL}" in text
    assert "Civic Digest, 12 Harbour Street" in text


def test_user_template_overrides_one_partial(tmp_path: Path) -> None:
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "footer.mjml.j2").write_text(
        '<mj-section><mj-column><mj-text>Custom footer <a href="{{ unsubscribe_url }}">leave</a>'
        "</mj-text></mj-column></mj-section>\n"
    )
    rendered = render(make_issue(1), templates_dir=tmp_path)
    assert "Custom footer" in rendered.html and "Past issues" not in rendered.html
    assert make_issue(1).items[0].title in rendered.html  # the other templates are still the defaults


def test_broken_user_template_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "story.mjml.j2").write_text("<mj-text>\n{{ item.title }\n</mj-text>\n")
    with pytest.raises(TemplateError, match=r"story.mjml.j2:2"):
        render(make_issue(1), templates_dir=tmp_path)


def test_a_template_added_or_edited_later_is_used_at_once(tmp_path: Path) -> None:
    # Compiled templates are kept between renders (a long-running scheduler renders many issues).
    first = render(make_issue(1), templates_dir=tmp_path)
    assert "Past issues" in first.html
    footer = tmp_path / "partials" / "footer.mjml.j2"
    footer.parent.mkdir()
    footer.write_text('<mj-section><mj-column><mj-text>Version one <a href="{{ unsubscribe_url }}">x</a>'
                      "</mj-text></mj-column></mj-section>\n")
    assert "Version one" in render(make_issue(1), templates_dir=tmp_path).html
    footer.write_text(footer.read_text().replace("Version one", "Version two"))
    import os

    os.utime(footer, ns=(footer.stat().st_atime_ns, footer.stat().st_mtime_ns + 10**9))
    assert "Version two" in render(make_issue(1), templates_dir=tmp_path).html


@pytest.mark.parametrize("compiler", COMPILERS)
def test_a_passage_is_not_shown_as_speech(compiler: str) -> None:
    from newsletter.compose.issue import Quote

    issue = make_issue(1, quotes=1, related=0)
    story = issue.items[0]
    speech = story.quotes[0]
    passage = "The bridge will close for eleven weeks from the first of June while its deck is replaced."
    story.quotes.append(Quote(text=passage, kind="passage", start=0, end=len(passage)))
    rendered = render(issue, compiler=compiler)
    page = visible_text(rendered.html)
    assert f"“{speech.text}”" in page
    assert f"{passage} — from {story.source}" in page and f"“{passage}" not in page
    text = " ".join(rendered.text.split())
    assert f"“{passage}" not in text and f"| {passage[:30]}" in text and f"— from {story.source}" in text
