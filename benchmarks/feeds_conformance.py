"""What the collector stores from each feed, compared field by field with what feedparser reads.

    python benchmarks/feeds_conformance.py [FOLDER ...] [--show 20]

By default it reads `shared/corpus/feedparser-tests/` (feedparser's own test documents) and `shared/corpus/feeds/`
(real feeds) beside the checkout. Each document is parsed twice: by `newsletter.collect.parse.parse_feed`, the
collector's parser, and by `feedparser.parse` with its defaults (its own sanitizer, relative URIs resolved). The
reference for each stored field is feedparser's value put through the same cleaning the collector applies (nh3,
text extraction), so a difference is a difference in what was read, not in how it is cleaned. A test document's
`Header:` lines (HTTP headers in feedparser's suite) are passed to both as response headers.

Fields: title, link, content text, image, date (to the second), guid (the stored identity), author, and "stored"
(every entry feedparser finds with a title, text or link must be stored); for documents the fast path reads,
"fast = feedparser" counts those where it stores anything else than the feedparser path. The differences we
chose on purpose are listed with their reasons at the end and not counted as differences.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import feedparser  # noqa: E402

from newsletter.collect.parse import (  # noqa: E402
    MAX_TITLE,
    ParsedItem,
    content_hash,
    feedparser_author,
    feedparser_bodies,
    feedparser_image,
    item_identity,
    parse_feed,
    parse_with_feedparser,
    struct_to_utc,
)
from newsletter.collect.sanitize import html_to_text, sanitize_html  # noqa: E402
from newsletter.urls import web_url  # noqa: E402

FIELDS = ("stored", "title", "link", "content text", "image", "date", "guid", "author", "sanitizer",
          "fast = feedparser")
DELIBERATE = {
    "author": "we store the author's name alone: feedparser's `author` appends the e-mail address "
              "(\"Jane (jane@example.com)\"), which a digest must not print; we take feedparser's author_detail.name",
    "sanitizer": "items whose title or text would differ had feedparser's own HTML sanitizer cleaned them instead "
                 "of nh3: it drops <script> and <iframe> tags but keeps what is inside as text (the JavaScript "
                 "source, an iframe's fallback), which nh3 drops with the element, as a browser shows it",
}
_HEADER = re.compile(r"^Header:\s*([^:]+):\s*(.*?)\s*$", re.M)


@dataclass
class Tally:
    compared: Counter[str] = field(default_factory=Counter)
    differ: Counter[str] = field(default_factory=Counter)
    deliberate: Counter[str] = field(default_factory=Counter)
    parsers: Counter[str] = field(default_factory=Counter)
    documents: int = 0
    examples: list[str] = field(default_factory=list)
    sanitizer_examples: list[str] = field(default_factory=list)


def headers_of(body: bytes) -> dict[str, str]:
    head = body[:2000].decode("latin-1")
    return {k.strip().lower(): v for k, v in _HEADER.findall(head)}


def reference(entry: dict, base: str) -> ParsedItem | None:
    """What the collector should store for one feedparser entry (None: nothing to store)."""
    link = web_url(entry.get("link"))
    title = html_to_text(entry.get("title", "") or "")[:MAX_TITLE]
    content_html = sanitize_html(max(feedparser_bodies(entry), key=len), base=base)
    text = html_to_text(content_html)
    if not (title or text or link):
        return None
    image = feedparser_image(entry)
    # feedparser leaves an enclosure's address as written; the collector makes a relative one absolute (as it
    # does with links in the content), so the reference does too: counted under "image" if that ever differs.
    image = web_url(urllib.parse.urljoin(base, image.strip()) if image and base else image)
    title = title or (text[:80] + "…" if len(text) > 80 else text) or link or "(untitled)"
    when = None
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        when = struct_to_utc(entry.get(key)) if key in entry else None
        if when:
            break
    digest = content_hash(title, text, content_html, image)
    return ParsedItem(guid=item_identity(entry.get("id"), link, digest), link=link, title=title,
                      author=entry.get("author"), published_at=when, content_html=content_html,
                      content_text=text, content_hash=digest, image_url=image)


def compare(path: Path, label: str, tally: Tally, show: int) -> None:
    body = path.read_bytes()
    headers = headers_of(body)
    url = headers.get("content-location") or f"http://conformance.example/{label}"
    content_type = headers.get("content-type")
    ours = parse_feed(body, url, content_type)
    tally.documents += 1
    tally.parsers[ours.parser if ours.ok else "refused"] += 1
    if ours.parser == "fast":
        # The fast path must store exactly what the feedparser path stores, markup included.
        slow = parse_with_feedparser(body, url, content_type)
        tally.compared["fast = feedparser"] += 1
        if (slow.title, slow.items) != (ours.title, ours.items):
            tally.differ["fast = feedparser"] += 1
            tally.examples.append(f"{label}: the fast path stores other items than the feedparser path")
    if ours.parser == "json":
        return  # feedparser 6 does not read JSON Feed: tests/test_collect_parse.py checks it against the spec
    headers = {"content-location": url, "content-type": content_type or "application/xml"}
    # The reference: what feedparser reads, cleaned as the collector cleans. feedparser's own sanitizer is not
    # part of it (the collector sanitizes with nh3); where it would give another text is counted apart below.
    ref = feedparser.parse(body, sanitize_html=False, response_headers=headers)
    expected = [r for r in (reference(e, ref.get("href") or url) for e in ref.entries) if r is not None]
    got = ours.items if ours.ok else []
    if len(got) == len(expected):
        own = feedparser.parse(body, response_headers=headers)
        sanitized = [r for r in (reference(e, own.get("href") or url) for e in own.entries) if r is not None]
        if len(sanitized) == len(got):
            for mine, theirs in zip(got, sanitized, strict=True):
                tally.compared["sanitizer"] += 1
                if (mine.title, mine.content_text) != (theirs.title, theirs.content_text):
                    tally.deliberate["sanitizer"] += 1
                    if len(tally.sanitizer_examples) < 5:
                        tally.sanitizer_examples.append(
                            f"{label}: ours {mine.content_text!r:.80} / with feedparser's sanitizer "
                            f"{theirs.content_text!r:.80}")

    def differ(name: str, mine: object, theirs: object) -> None:
        tally.compared[name] += 1
        if mine == theirs:
            return
        if name == "author" and mine == feedparser_author_of(theirs):
            tally.deliberate[name] += 1
            return
        tally.differ[name] += 1
        if len(tally.examples) < show:
            tally.examples.append(f"{label}: {name}: ours {mine!r:.120} / feedparser {theirs!r:.120}")

    tally.compared["stored"] += len(expected)
    if len(got) != len(expected):
        tally.differ["stored"] += abs(len(expected) - len(got))
        if len(tally.examples) < show:
            tally.examples.append(f"{label}: stored {len(got)} items, feedparser has {len(expected)} "
                                  f"({ours.error or ''})")
        return
    for mine, theirs in zip(got, expected, strict=True):
        differ("title", mine.title, theirs.title)
        differ("link", mine.link, theirs.link)
        differ("content text", mine.content_text, theirs.content_text)
        differ("image", mine.image_url, theirs.image_url)
        differ("date", mine.published_at, theirs.published_at)
        differ("guid", mine.guid, theirs.guid)
        differ("author", mine.author, theirs.author)


def feedparser_author_of(author: object) -> str | None:
    """Our author rule applied to feedparser's `author` string (its e-mail address taken out)."""
    if not isinstance(author, str):
        return None
    parsed = feedparser.parse(f"<rss version='2.0'><channel><item><author>{_xml(author)}</author></item>"
                              "</channel></rss>")
    name = feedparser_author(parsed.entries[0]) if parsed.entries else None
    return html_to_text(name)[:500] or None if name else None


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def default_folders() -> list[Path]:
    root = Path(__file__).resolve().parents[1]
    for shared in (root.parent / "shared", root.parent.parent / "shared"):
        if (shared / "corpus").is_dir():
            return [shared / "corpus" / "feedparser-tests", shared / "corpus" / "feeds"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--show", type=int, default=20, help="how many differences to list")
    args = parser.parse_args()
    folders = args.folders or default_folders()
    if not folders:
        parser.error("no folders given and no shared/corpus beside the checkout")
    total_differences = 0
    for folder in folders:
        tally = Tally()
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "LICENSE"):
            compare(path, str(path.relative_to(folder)), tally, args.show)
        print(f"\n{folder}: {tally.documents} documents; read by: "
              + ", ".join(f"{k} {v}" for k, v in sorted(tally.parsers.items())))
        print(f"  {'field':<18}{'compared':>10}{'differ':>8}{'deliberate':>12}")
        for name in FIELDS:
            print(f"  {name:<18}{tally.compared[name]:>10}{tally.differ[name]:>8}{tally.deliberate[name]:>12}")
        for line in tally.examples:
            print("  - " + line)
        for line in tally.sanitizer_examples:
            print("  - (sanitizer, deliberate) " + line)
        total_differences += sum(tally.differ.values())
    print("\nDeliberate differences (not counted above as differences):")
    for name, reason in DELIBERATE.items():
        print(f"  - {name}: {reason}")
    return 1 if total_differences else 0


if __name__ == "__main__":
    sys.exit(main())
