"""Headlines a reader can read, and one post once: a blog's feed with a reblog, cut-off titles and markup."""

from __future__ import annotations

import json

from newsletter.editorial.headline import SUBJECT_CHARS, fit_subject, headline
from tests.conftest import rss, schedule_toml
from tests.feedserver import Route

POST = ("<p>Hi friends!</p><p>I am so happy to announce that my latest book, “Oddball”, is out for preorder today. "
        "The official release date is November 30th. This is the fourth collection of short comics, with twenty "
        "new ones that nobody has seen before and a sticker set.</p>")
# Tumblr's reblog of the same post: the blog's name, a colon, the post quoted, and a line of news below it.
REBLOG = (f'<p><a href="https://blog.example/post/1" class="tumblr_blog">inkblog</a>:</p><blockquote>{POST}'
          "</blockquote><p><b>Some news: shipping delays moved the release to December 7th.</b></p>")


def test_a_blog_feed_gives_clean_headlines_one_story_per_post_and_a_subject_that_fits(
    workdir, feed_server, cli  # noqa: ANN001
) -> None:
    feed_server.routes["/blog"] = Route(body=rss("Ink Blog", [
        {"guid": "1", "title": "Hi friends!I am so happy to announce that my latest book,...",
         "link": "https://blog.example/post/1", "body": POST, "hours_ago": 30},
        {"guid": "2", "title": "inkblog:Hi friends!I am so happy to announce that my...",
         "link": "https://blog.example/post/2", "body": REBLOG, "hours_ago": 5},
        {"guid": "3", "title": "Tom &amp;amp; Jerry  &lt;b&gt;return&lt;/b&gt; to the  big screen",
         "link": "https://blog.example/post/3", "body": "<p>A short note about cartoons returning.</p>",
         "hours_ago": 2},
    ]))
    (workdir / "schedules" / "ink.toml").write_text(
        schedule_toml("ink", [("Ink Blog", feed_server.url("/blog"))],
                      '[digest]\nsubject = "{name} #{number}: {top_title}"\nfetch_articles_under_words = 0\n'))
    cli("collect")
    assert "2 stories" in cli("build", "ink").output  # the reblog and its post are one story
    data = json.loads(cli("issue", "show", "1", "--format", "json").output)
    titles = [i["title"] for i in data["items"]]
    assert "Tom & Jerry return to the big screen" in titles
    book = next(t for t in titles if t.startswith("Hi friends"))
    assert book == "Hi friends! I am so happy to announce that my latest book, “Oddball”, is out for preorder today"
    assert not any(t.startswith("inkblog") or t.endswith("...") or "  " in t for t in titles)
    subject = data["subject"]
    assert len(subject) <= SUBJECT_CHARS and subject.startswith("Ink Weekly #1: ") and "inkblog" not in subject


def test_cut_off_titles_are_completed_only_from_text_that_starts_with_them() -> None:
    assert headline("Budget passes after...", "An unrelated opening sentence here.") == "Budget passes after…"
    assert headline("Council votes on", "Council votes on the bridge. More.") == "Council votes on"  # not cut off
    assert headline("Council votes on...", "", "Council votes on the new harbour bridge") == (
        "Council votes on the new harbour bridge")
    assert headline("Update: the plan") == "Update: the plan"  # a headline's own colon stays


def test_the_subject_is_cut_at_a_word() -> None:
    title = "A very long headline that goes on and on about the harbour bridge and the tram line too"
    subject = fit_subject(f"Town Weekly #12: {title}", title)
    assert len(subject) <= SUBJECT_CHARS and subject.endswith("…")
    assert subject[:-1].rstrip() in f"Town Weekly #12: {title}" and not subject[:-1].endswith(" ")
