"""One picture per story: from the feed to the card, http(s) only, never in the text part.

End to end as a user runs it: a real feed served on loopback, `newsletter collect` and `build`, then the
rendered email read back the way a client reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html.parser import HTMLParser
from pathlib import Path

from sqlalchemy.orm import Session

from newsletter.config import load_newsletter
from newsletter.render.cache import rendered_issue
from newsletter.render.engine import Rendered
from newsletter.store.db import get_engine
from newsletter.store.models import IssueRow
from tests.conftest import schedule_toml
from tests.feedserver import Route

FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>Harbour Desk</title>
<link>https://harbour.example/</link><description>test</description>{items}</channel></rss>"""


def _item(guid: str, title: str, body: str, extra: str = "") -> str:
    when = format_datetime(datetime.now(UTC) - timedelta(hours=2))
    return (f"<item><title>{title}</title><link>https://harbour.example/{guid}</link><guid>{guid}</guid>"
            f"<pubDate>{when}</pubDate>{extra}<description><![CDATA[{body}]]></description></item>")


BRIDGE = _item("bridge", "Bridge reopens after repairs",
               "<p>The harbour bridge reopened on Monday after six months of repairs. Traffic was light.</p>",
               '<media:thumbnail url="https://harbour.example/img/bridge.jpg" width="1200" height="675"/>')


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))


def images(html: str) -> list[dict[str, str | None]]:
    parser = _Images()
    parser.feed(html)
    return parser.images


def _issue(workdir: Path, feed_server, cli, items: str, extra: str = "",  # noqa: ANN001
           built: list[str] | None = None) -> Rendered:
    feed_server.routes["/feed"] = Route(body=FEED.format(items=items).encode())
    path = workdir / "schedules" / "harbour.toml"
    path.write_text(schedule_toml("harbour", [("Harbour Desk", feed_server.url("/feed"))],
                                  "[digest]\nfetch_articles_under_words = 0\n" + extra))
    cli("collect")
    out = cli("build", "harbour", "--no-enrich").output
    if built is not None:
        built.append(out)
    engine = get_engine(f"sqlite:///{workdir / 'newsletter.db'}")
    with Session(engine) as session:
        issue_id = session.query(IssueRow.id).scalar()
    return rendered_issue(engine, issue_id, load_newsletter(path), base_url="https://news.example.com")


def test_a_feed_picture_shows_in_the_card_with_width_and_alt_and_not_in_the_text(workdir, feed_server,
                                                                                   cli) -> None:  # noqa: ANN001
    rendered = _issue(workdir, feed_server, cli, BRIDGE)
    [img] = [i for i in images(rendered.html) if i.get("src") == "https://harbour.example/img/bridge.jpg"]
    assert img["width"] == "552"  # Outlook sizes by the attribute
    assert img["alt"] == "Bridge reopens after repairs"  # images off: the headline, not a hole
    assert "bridge.jpg" not in rendered.text and "<img" not in rendered.text
    assert "The harbour bridge reopened on Monday" in rendered.html  # the card still reads without it


def test_images_off_a_long_headline_is_cut_to_one_short_alt_line(workdir, feed_server, cli) -> None:  # noqa: ANN001
    title = "Harbour board approves the long-delayed dredging of the inner basin before the summer season"
    long = _item("long", title, "<p>Dredging starts in March. The board voted seven to two.</p>",
                 '<media:thumbnail url="https://harbour.example/img/dredger.jpg"/>')
    [img] = images(_issue(workdir, feed_server, cli, long).html)
    assert img["alt"] and len(img["alt"]) <= 61 and title.startswith(img["alt"].rstrip("…"))


def test_javascript_and_data_pictures_never_reach_the_email(workdir, feed_server, cli) -> None:  # noqa: ANN001
    hostile = (
        _item("a", "Ferry timetable changes", "<p>Ferries run every twenty minutes from May. Fares stay.</p>",
              '<media:thumbnail url="javascript:alert(1)"/>')
        + _item("b", "Market moves to the quay", '<p>The market moves to the quay on Saturdays.</p>'
                '<img src="data:image/png;base64,iVBORw0KGgo=" alt="x">')
    )
    rendered = _issue(workdir, feed_server, cli, hostile)
    engine = get_engine(f"sqlite:///{workdir / 'newsletter.db'}")
    with Session(engine) as session:  # an address stored by hand (or by an older version) is checked again
        row = session.query(IssueRow).one()
        row.items[0].image_url = "javascript:alert(2)"
        session.commit()
        issue_id = row.id
    again = rendered_issue(engine, issue_id, load_newsletter(workdir / "schedules" / "harbour.toml"),
                           base_url="https://news.example.com", force=True)
    for html in (rendered.html, again.html):
        assert "javascript:" not in html and "data:image" not in html
        assert images(html) == [i for i in images(html) if (i.get("src") or "").startswith("https://")]
    assert "Ferry timetable changes" in again.html and "Market moves to the quay" in again.html


def test_a_picture_only_post_becomes_a_story_with_its_picture_and_caption(workdir, feed_server,
                                                                           cli) -> None:  # noqa: ANN001
    photo = _item("photo", "Photo", '<img src="https://harbour.example/img/heron.jpg" '
                  'alt="A heron on the quay wall at dawn" width="500" height="750">')
    rendered = _issue(workdir, feed_server, cli, BRIDGE + photo)
    [img] = [i for i in images(rendered.html) if i.get("src") == "https://harbour.example/img/heron.jpg"]
    assert img["width"] == "552" and img["alt"]
    assert "A heron on the quay wall at dawn" in rendered.html  # the caption is the story's text
    assert "A heron on the quay wall at dawn" in rendered.text  # and the text part reads it too


def test_a_tracking_pixel_is_not_the_storys_picture(workdir, feed_server, cli) -> None:  # noqa: ANN001
    pixel = _item("p", "Tide tables for May", '<p>The tide tables for May are out. High water is at noon.</p>'
                  '<img src="https://stats.example/pixel.gif" width="1" height="1" alt="">')
    rendered = _issue(workdir, feed_server, cli, pixel)
    assert "pixel.gif" not in rendered.html


def test_every_picture_in_the_email_has_a_width_a_height_and_alt_text(workdir, feed_server,
                                                                      cli) -> None:  # noqa: ANN001
    photo = _item("photo", "Photo", '<img src="https://harbour.example/img/heron.jpg" '
                  'alt="A heron on the quay wall at dawn" width="500" height="750">')
    logo = '[theme]\nlogo_url = "https://harbour.example/logo.png"\nlogo_alt = "Harbour Desk"\nlogo_width = 120\n'
    rendered = _issue(workdir, feed_server, cli, BRIDGE + photo, logo)
    shown = {i.get("src"): i for i in images(rendered.html)}
    assert set(shown) == {"https://harbour.example/logo.png", "https://harbour.example/img/bridge.jpg",
                          "https://harbour.example/img/heron.jpg"}  # the schedule file's logo in the header
    for img in shown.values():
        assert img.get("width") and img.get("height") and img.get("alt"), img
    assert shown["https://harbour.example/logo.png"]["alt"] == "Harbour Desk"
    assert shown["https://harbour.example/logo.png"]["width"] == "120"
    for src in ("https://harbour.example/img/heron.jpg", "https://harbour.example/img/bridge.jpg"):
        assert shown[src]["height"] == "auto"  # the picture's own shape at any width, never a stretched number


def test_a_picture_post_without_a_usable_picture_is_left_out_with_a_note(workdir, feed_server,
                                                                         cli) -> None:  # noqa: ANN001
    empty = _item("empty", "Photo", '<img src="data:image/png;base64,iVBORw0KGgo=" alt="">')
    built: list[str] = []
    rendered = _issue(workdir, feed_server, cli, BRIDGE + empty, built=built)
    note = " ".join(built[0].split())
    assert "left out “Photo” from Harbour Desk: no text and no usable picture" in note, note
    assert "Built issue #1 (id 1) of harbour with 1 stories." in note
    assert ">Photo<" not in rendered.html and "Bridge reopens after repairs" in rendered.html


def test_a_feeds_advert_is_not_the_storys_picture(workdir, feed_server, cli) -> None:  # noqa: ANN001
    # FeedBurner's ad unit, as rss2email's feed carries it after every post.
    ad = _item("ad", "Version 2.68 released", '<p>Version 2.68 is out with new features.</p>'
               '<p><a href="http://feedads.g.doubleclick.net/~a/x/0/da"><img src="http://feedads.g.doubleclick.net/'
               '~a/x/0/di" border="0" ismap="true"></a></p>')
    rendered = _issue(workdir, feed_server, cli, ad)
    assert "doubleclick" not in rendered.html and images(rendered.html) == []
    assert "Version 2.68 is out with new features." in rendered.html
