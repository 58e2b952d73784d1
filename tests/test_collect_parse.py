"""Reading feeds: what a reader would miss if a parser lost it (each case a small fixture in tests/fixtures/feeds/).

The collector's parser must store what feedparser reads; the fast path for plain RSS 2.0 must store exactly what
the feedparser path stores.
"""

from __future__ import annotations

import importlib.util
import random
from datetime import datetime
from pathlib import Path

import pytest

from newsletter.collect.parse import ParsedFeed, content_hash, parse_feed, parse_with_feedparser

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
BASE = "https://host.example/feeds/feed.xml"


def read(name: str, content_type: str | None = None, url: str = BASE) -> ParsedFeed:
    feed = parse_feed((FIXTURES / name).read_bytes(), url, content_type)
    assert feed.ok, feed.error
    return feed


def test_inline_xhtml_title_and_body_are_kept() -> None:
    item = read("atom_xhtml.xml").items[0]
    assert item.title == "A rich title"
    assert item.content_html == "<p>Inline <b>XHTML</b> body.</p>"


def test_base64_content_is_decoded() -> None:
    assert read("atom_base64.xml").items[0].content_text == "Decoded words from base64."


def test_relative_links_follow_xml_base() -> None:
    item = read("atom_relative.xml").items[0]
    assert item.link == "https://rel.example/blog/posts/1.html"
    assert 'href="https://cdn.rel.example/about.html"' in item.content_html
    assert 'src="https://cdn.rel.example/media/pic.png"' in item.content_html


def test_relative_links_resolve_against_where_the_feed_was_read() -> None:
    item = read("rss_relative.xml", url="https://moved.example/new/feed.xml").items[0]
    assert item.link == "https://moved.example/story/1"
    assert 'href="https://moved.example/more"' in item.content_html
    assert 'src="https://moved.example/new/img/a.png"' in item.content_html


def test_rss_1_0_content_encoded_is_the_story() -> None:
    item = read("rss10_content.xml").items[0]
    assert item.content_text == "The full text of the RDF item, much longer than its description."
    assert item.published_at == datetime(2026, 11, 20, 10, 0)


def test_image_enclosures_and_thumbnails_inside_media_content() -> None:
    items = read("rss_images.xml").items
    assert [i.image_url for i in items] == ["https://img.example/1.jpg", "https://img.example/2-thumb.jpg"]


def test_the_story_link_is_the_alternate_link() -> None:
    assert read("atom_links.xml").items[0].link == "https://links.example/posts/1"


def test_a_guid_that_is_no_permalink_is_no_link_and_media_title_is_no_title() -> None:
    first, second = read("rss_guid_title.xml").items
    assert first.link is None and first.guid == "https://g.example/internal/123" and first.title == "Not a permalink"
    assert second.title == "The real title"


def test_a_bare_ampersand_stays_text() -> None:
    feed = read("rss_bare_amp.xml")
    item = feed.items[0]
    assert item.title == "R&D news" and item.content_text == "Tom & Jerry"
    assert item.link == "https://amp.example/1?a=1&b=2"
    assert "unescaped '&'" in (feed.warning or "")


@pytest.mark.parametrize(("name", "title", "start"), [
    ("rss_koi8r_undeclared.xml", "Главная новость дня", "Новости дня."),
    ("rss_shiftjis_undeclared.xml", "今日の主なニュース", "今日のニュースです。"),
])
def test_undeclared_encodings_are_detected(name: str, title: str, start: str) -> None:
    feed = read(name)
    assert feed.items[0].title == title and feed.items[0].content_text.startswith(start)


def test_the_http_charset_is_honoured() -> None:
    feed = read("rss_http_charset.xml", "application/rss+xml; charset=windows-1251")
    assert feed.title == "Кириллица" and feed.items[0].title == "Заголовок"


def test_windows_1252_quotes_in_an_iso_8859_1_feed() -> None:
    item = read("rss_cp1252_as_latin1.xml").items[0]
    assert item.title == "Don’t panic"
    assert item.content_text == "“Quoted” text – with a dash."
    assert not any("\x80" <= ch <= "\x9f" for ch in item.title + item.content_text)


def test_json_feed_1_1_is_read_and_sanitized() -> None:
    feed = read("jsonfeed_1_1.json", "application/feed+json")
    assert feed.title == "JSON 1.1"
    html_item, text_item = feed.items
    assert html_item.guid == "1" and html_item.link == "https://host.example/posts/1"
    assert html_item.published_at == datetime(2026, 11, 20, 9, 0)
    assert html_item.author == "Item Author" and html_item.image_url == "https://host.example/img/1.png"
    assert "<script" not in html_item.content_html and "alert" not in html_item.content_html
    assert 'href="https://host.example/rel"' in html_item.content_html
    assert text_item.guid == "2" and text_item.author == "Feed Author"
    assert text_item.content_text == "First paragraph.\n\nSecond <not a tag>."
    assert text_item.published_at == datetime(2026, 11, 21, 8, 30)


def test_json_feed_1_0_without_a_content_type() -> None:
    item = read("jsonfeed_1_0.json").items[0]
    assert item.title == "Only text, no title." and item.author == "Old Author" and item.link == "https://json.example/a"


def test_json_that_is_no_feed_is_refused_clearly() -> None:
    feed = parse_feed(b'{"hello": "world"}', BASE, "application/json")
    assert not feed.ok and "JSON Feed" in (feed.error or "")


def _rss(items: str, ns: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"{ns}><channel><title>Fast &amp; right</title>'
            f"<link>https://fast.example/</link><description>d</description><language>en-gb</language>{items}"
            "</channel></rss>").encode()


VARIANTS = [
    "<item><title>Plain</title><link>https://fast.example/1</link><guid>https://fast.example/1</guid>"
    "<pubDate>Mon, 23 Nov 2026 10:00:00 GMT</pubDate><description>Words.</description></item>",
    "<item><title> Spaced  title </title><link> /relative/2 </link><guid isPermaLink='false'>id-2</guid>"
    "<pubDate>Mon, 23 Nov 2026 10:00:00 +0100</pubDate><description><![CDATA[<p>A <a href='x.html'>link</a></p>]]>"
    "</description></item>",
    "<item><guid>https://fast.example/guid-as-link</guid><description>No title, no link.</description>"
    "<pubDate>Tue, 24 Nov 2026 08:00:00 EST</pubDate></item>",
    "<item><guid>not-a-url</guid><title>T &amp; &lt;b&gt;bold&lt;/b&gt; &#8217;</title><description>x</description>"
    "<pubDate>yesterday</pubDate></item>",
    "<item><title>Author forms</title><author>desk@fast.example (News Desk)</author>"
    "<description>a</description></item>",
    "<item><title>Author name</title><author>Jane Doe</author><description>b</description></item>",
    "<item><title>Author angle</title><author>Jane &lt;jane@fast.example&gt;</author>"
    "<description>c</description></item>",
    "<item><title>Only e-mail</title><author>jane@fast.example</author><description>d</description></item>",
    "<item><title>Creator</title><dc:creator>Sam Smith</dc:creator><description>e</description>"
    "<content:encoded><![CDATA[<p>The longer full text of this item, with <img src='/i.png'> an image.</p>]]>"
    "</content:encoded></item>",
    "<item><title>Images</title><description>f</description><enclosure url='/a.mp3' length='1' type='audio/mpeg'/>"
    "<enclosure url='pics/b.jpg' length='1' type='Image/JPEG'/></item>",
    "<item><title>cafÃ© double-encoded</title><description>caf\u00c3\u00a9</description></item>",
    "<item><title>Untitled body only</title><description>&lt;p&gt;Escaped &amp;amp; markup&lt;/p&gt;</description>"
    "<category>x</category><category>y</category><comments>https://fast.example/c</comments></item>",
    "<item><title></title><description></description><link>https://fast.example/link-only</link></item>",
    "<item><title></title><description></description></item>",
]
NS = (' xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
      ' xmlns:atom="http://www.w3.org/2005/Atom"')


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_the_fast_path_stores_what_feedparser_reads(variant: int) -> None:
    body = _rss('<atom:link href="https://fast.example/feed" rel="self" type="application/rss+xml"/>'
                + VARIANTS[variant], NS)
    fast = parse_feed(body, BASE, "application/rss+xml")
    slow = parse_with_feedparser(body, BASE, "application/rss+xml")
    assert fast.parser == "fast"
    assert (fast.title, fast.items) == (slow.title, slow.items)


def test_the_fast_path_leaves_anything_unusual_to_feedparser() -> None:
    plain = VARIANTS[0]
    for body, content_type in [
        (_rss(plain), "text/xml"),  # RFC 3023: US-ASCII unless the server says otherwise
        (_rss(plain), "application/rss+xml; charset=iso-8859-1"),
        (_rss(plain).replace(b"utf-8", b"iso-8859-1"), None),
        (_rss(plain.replace("<title>", '<title xml:lang="de">')), None),
        (_rss(plain.replace("</item>", '<media:title>m</media:title></item>'),
              ' xmlns:media="http://search.yahoo.com/mrss/"'), None),
        (_rss(plain.replace("<title>Plain</title>", "<title>Plain</title><title>Twice</title>")), None),
    ]:
        assert parse_feed(body, BASE, content_type).parser == "feedparser", body


def test_stored_items_keep_their_identity_across_the_migration() -> None:
    path = Path(__file__).parents[1] / "newsletter" / "store" / "migrations" / "versions" / "0003_feeds.py"
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    assert spec and spec.loader
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    for item in read("rss_images.xml").items + read("atom_relative.xml").items + read("jsonfeed_1_0.json").items:
        args = (item.title, item.content_text, item.content_html, item.image_url)
        assert migration.content_hash(*args) == content_hash(*args) == item.content_hash


# Random plain RSS 2.0 built from awkward pieces (whitespace, CDATA, entities, double-encoded UTF-8, C1 quotes,
# relative and odd URLs, permalink and non-permalink guids, author forms, bad dates, image and other enclosures),
# in random order: the fast path must store exactly what the feedparser path stores. Seeded, so reproducible.
PIECES = {
    "title": ["Tab\there", "C1 \u0092 quote", "<![CDATA[ spaced cdata ]]>", "Plain", " Spaced ",
              "<![CDATA[Cdata <b>bold</b> title]]>", "Caf\u00e9 \u2019quotes\u2019", "&#x2019;hex&#8217;",
              "&quot;q&quot; &amp; &lt;", "", "A &amp;amp; B", "caf\u00c3\u00a9", "\n  multi\n  line\n"],
    "link": ["https://ex.example/\u00e9t\u00e9", "https://ex.example/a?b=1&amp;amp;c=2",
             "https://ex.example/x?a&amp;copy;b", "  \n https://ex.example/nl \n", "https://ex.example/a",
             " https://ex.example/b ", "/rel/c", "rel/d?x=1&amp;y=2#frag", "HTTP://EX.example/Up",
             "https://ex.example/a/../b/./c", "https://ex.example/sp ace", "javascript:alert(1)", "mailto:a@b.c",
             "//proto.example/rel", "", "https://xn--bcher-kva.example/", "https://b\u00fccher.example/x",
             "https://ex.example//double"],
    "guid": [None, ("https://ex.example/g", None), ("g-1", "false"), ("/rel/guid", "true"),
             ("tag:ex.example,2026:1", None), ("https://ex.example/g2", "false"), ("", None)],
    "date": [None, "Mon, 23 Nov 2026 10:00:00 GMT", "Mon, 23 Nov 2026 10:00:00 +0530", "23 Nov 2026 10:00 EST",
             "2026-11-23T10:00:00Z", "2026-11-23", "Mon, 23 Nov 26 10:00:00 GMT", "garbage",
             "Sun, 31 Dec 1899 00:00:00 GMT", "Mon, 23 Nov 2026 25:61:00 GMT"],
    "author": [None, "desk@ex.example (Desk)", "Jane", "Jane <jane@ex.example>", "jane@ex.example",
               "(Only Name)", "J &amp; K"],
    "body": [None, "<![CDATA[<p>Hello <a href='/x'>x</a> <img src='i.png'></p>]]>", "&lt;p&gt;escaped&lt;/p&gt;",
             "plain text &amp; more", "<![CDATA[<script>alert(1)</script><p>ok</p>]]>", "",
             "<![CDATA[caf\u00c3\u00a9 <b>x</b>]]>", "<![CDATA[]]>"],
    "enclosure": [None, ("https://ex.example/i.jpg", "image/jpeg"), ("i.png", "image/png"),
                  ("https://ex.example/a.mp3", "audio/mpeg"), ("", "image/gif"),
                  (" https://ex.example/s.jpg ", "IMAGE/JPEG")],
}


def random_item(r: random.Random) -> str:
    parts = []
    if r.random() < 0.9:
        parts.append(f"<title>{r.choice(PIECES['title'])}</title>")
    if r.random() < 0.7:
        parts.append(f"<link>{r.choice(PIECES['link'])}</link>")
    guid = r.choice(PIECES["guid"])
    if guid:
        permalink = f' isPermaLink="{guid[1]}"' if guid[1] else ""
        parts.append(f"<guid{permalink}>{guid[0]}</guid>")
    date = r.choice(PIECES["date"])
    if date:
        parts.append(f"<pubDate>{date}</pubDate>")
    author = r.choice(PIECES["author"])
    if author:
        parts.append(r.choice(["<author>{}</author>", "<dc:creator>{}</dc:creator>"]).format(author))
    body = r.choice(PIECES["body"])
    if body is not None:
        parts.append(f"<description>{body}</description>")
    if r.random() < 0.3:
        parts.append(f"<content:encoded>{r.choice(PIECES['body'][1:])}</content:encoded>")
    for _ in range(r.randint(0, 2)):
        enclosure = r.choice(PIECES["enclosure"])
        if enclosure:
            parts.append(f'<enclosure url="{enclosure[0]}" length="1" type="{enclosure[1]}"/>')
    if r.random() < 0.3:
        parts.append("<category>c</category>")
    r.shuffle(parts)
    return "<item>" + "".join(parts) + "</item>"


def random_rss(seed: int) -> tuple[bytes, str]:
    r = random.Random(seed)
    base = r.choice(["https://feeds.example/a/feed.xml", "http://127.0.0.1:8080/x", "https://feeds.example/"])
    image = (f"<image><url>https://ex.example/logo.png</url><title>{r.choice(PIECES['title'])}</title>"
             "<link>https://ex.example/</link></image>") if r.random() < 0.3 else ""
    doc = ('<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" '
           'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
           f"<channel><title>{r.choice(PIECES['title'])}</title><link>https://ex.example/</link><description>d</description>"
           + image + ("<language>fr</language>" if r.random() < 0.3 else "")
           + "".join(random_item(r) for _ in range(r.randint(1, 4))) + "</channel></rss>")
    return doc.encode(), base


def test_the_fast_path_matches_feedparser_on_random_feeds() -> None:
    fast = 0
    for seed in range(400):
        body, base = random_rss(seed)
        ours = parse_feed(body, base, "application/rss+xml")
        if ours.parser != "fast":
            continue
        fast += 1
        reference = parse_with_feedparser(body, base, "application/rss+xml")
        assert (ours.title, ours.items) == (reference.title, reference.items), f"seed {seed}"
    assert fast > 200  # most of them are plain enough for the fast path
