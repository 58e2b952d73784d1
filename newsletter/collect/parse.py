"""Feed bytes to clean items, with nh3 for the HTML.

feedparser, the universal parser, is the reference: every field a digest uses (title, link, guid, dates, author,
content, image) is what feedparser reads. It is slow (8-25 ms a feed against 0.3 ms for lxml), and on a big collect
run parsing, not the network, is what takes the time, so the plainest kind of feed takes a fast path: RSS 2.0 in
UTF-8 that uses only the elements and attributes in `_SIMPLE_RSS` (no xml:base, no XHTML, no media:, no DTD).
On those documents the fast path computes exactly what feedparser would (same URL joining, same date parser, same
author rule, same guid-as-link rule); `benchmarks/feeds_conformance.py` and tests/test_collect_parse.py check that
it does. Anything else goes to feedparser. JSON Feed (1.0, 1.1), which feedparser does not read, has its own reader.

`parse_feed` is a plain function over bytes so collect can also run it in worker processes.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any

import feedparser
from feedparser.datetimes import _parse_date as feedparser_date  # the same date parser, so the same dates
from lxml import etree

from newsletter.collect.sanitize import html_to_text, repair_cp1252, sanitize_html, sanitized_text
from newsletter.urls import web_url

MAX_TITLE = 1000


@dataclass
class ParsedItem:
    guid: str
    link: str | None
    title: str
    author: str | None
    published_at: datetime | None
    content_html: str
    content_text: str
    content_hash: str
    image_url: str | None = None
    language: str | None = None


@dataclass
class ParsedFeed:
    ok: bool
    title: str | None = None
    items: list[ParsedItem] = field(default_factory=list)
    error: str | None = None
    warning: str | None = None  # recoverable problems (feedparser's "bozo" on a feed that still parsed)
    parser: str = "feedparser"  # which reader read it: fast, feedparser, json (for the conformance harness)


@dataclass
class _Entry:
    """What one entry says, before cleaning: the same shape whichever reader read it."""

    title: str = ""
    link: str | None = None
    id: str | None = None
    author: str | None = None  # the name, without an e-mail address
    when: datetime | None = None
    bodies: list[str] = field(default_factory=list)  # HTML candidates: the longest is the story
    image: str | None = None
    language: str | None = None


def _describe_bozo(exc: BaseException | None) -> str:
    if exc is None:
        return "not a feed"
    line = getattr(exc, "getLineNumber", None)
    where = f" at line {line()}" if callable(line) else ""
    message = getattr(exc, "getMessage", None)
    text = message() if callable(message) else str(exc)
    return f"{text}{where}".strip() or type(exc).__name__


def struct_to_utc(value: Any) -> datetime | None:
    """feedparser's struct_time (always UTC) as a naive UTC datetime."""
    if not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC).replace(tzinfo=None)
    except (OverflowError, ValueError, TypeError):
        return None


def _not_a_feed(body: bytes, exc: BaseException | None) -> str:
    """What the document is instead of a feed. The XML parser's own message only helps for XML: for HTML, JSON
    or plain text it reads "syntax error at line 2" (feedparser feeds expat a prefix), which points nowhere."""
    head = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:512].lower()
    if not head:
        return "not a feed: the document is empty"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "not a feed: this is an HTML page; use the address of its RSS or Atom feed (often linked in the page)"
    if head[:1] in (b"{", b"["):
        return "not a feed: this is JSON but not a JSON Feed (no \"version\": \"https://jsonfeed.org/version/1.1\")"
    if not head.startswith(b"<"):
        return "not a feed: this is plain text, not RSS or Atom (XML)"
    if exc is None:
        return "not a feed: an XML document, but neither RSS nor Atom"
    return f"not a feed: {_describe_bozo(exc)}"


_IMG_SRC = re.compile(r"<img\b[^>]*?\bsrc=\"([^\"]*)\"", re.I)


def content_hash(title: str, content_text: str, content_html: str = "", image_url: str | None = None) -> str:
    """What an item says, independent of which parser read it and of how its markup was written.

    The text, not the HTML (two parsers, or one after a fix in URL resolution, write the same story with different
    markup), plus the picture addresses: picture posts share a title ("Photo") and no text, never the same image.
    store/migrations/versions/0003_feeds.py computes the same value for stored items: keep the two equal.
    """
    images = " ".join(_IMG_SRC.findall(content_html))
    normal = " ".join(f"{title} {content_text} {images} {image_url or ''}".lower().split())
    return hashlib.sha256(normal.encode()).hexdigest()


def item_identity(entry_id: str | None, link: str | None, digest: str) -> str:
    """The item's guid: the feed's own id, else its link, else what it says (content_hash)."""
    return (entry_id or "").strip()[:2000] or link or digest


# Problems feedparser reports that say nothing about the feed (it was handed bytes, not an HTTP response).
_BENIGN = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)


# Never resolve entities or fetch DTDs: a feed must not be able to read local files (XXE).
_STRICT = etree.XMLParser(recover=False, resolve_entities=False, no_network=True, load_dtd=False)


def parse_feed(body: bytes, url: str = "", content_type: str | None = None) -> ParsedFeed:
    """Parse and clean one feed document. `url` is where it was finally read from (the base of relative links).

    Never raises."""
    try:
        if _is_json(body, content_type):
            return parse_json_feed(body, url)
        simple = _simple_rss(body, url, content_type)
        if simple is not None:
            return simple
    except Exception:  # noqa: BLE001 - a bug in a fast path must not lose the feed: feedparser reads it
        pass
    return parse_with_feedparser(body, url, content_type)


# --- feedparser: the reference ---------------------------------------------------------------------------------

# An "&" that starts no entity or character reference: "R&D news". XML forbids it, and feedparser's loose parser,
# which then takes over, reads it as the entity "&D;" ("R&D; news").
_BARE_AMP = re.compile(rb"&(?!(?:[A-Za-z_][\w.-]*|#[0-9]+|#[xX][0-9A-Fa-f]+);)")


def _syntax_error(body: bytes) -> str | None:
    try:
        etree.fromstring(body, parser=_STRICT)
    except etree.XMLSyntaxError as exc:
        return f"{exc.msg}" if exc.msg else "not well-formed"
    except ValueError as exc:
        return str(exc)
    return None


def parse_with_feedparser(body: bytes, url: str = "", content_type: str | None = None) -> ParsedFeed:
    headers = {"content-location": url, "content-type": content_type or "application/xml"}
    repaired_note = None
    if b"\x00" not in body and _BARE_AMP.search(body) and _syntax_error(body) is not None:
        # Bare ampersands escaped first (byte-wise, so not in UTF-16/32, which has NUL bytes): the text keeps its
        # "&", and a feed broken only by them is read by feedparser's strict parser after all.
        fixed = _BARE_AMP.sub(b"&amp;", body)
        if _syntax_error(fixed) is None:
            repaired_note = "feed is not well-formed (an unescaped '&'); read with each bare '&' as text"
        body = fixed
    try:
        # We sanitize with nh3 ourselves; feedparser's own sanitizer would only double the work.
        parsed = feedparser.parse(body, sanitize_html=False, response_headers=headers)
    except Exception as exc:  # feedparser is defensive, but a parser bug must not stop a collect run
        return ParsedFeed(ok=False, error=f"cannot parse: {type(exc).__name__}: {exc}")
    if not parsed.get("version") and not parsed.entries:
        return ParsedFeed(ok=False, error=_not_a_feed(body, parsed.get("bozo_exception")))
    feed_lang = parsed.feed.get("language")
    entries = [_from_feedparser(e, feed_lang) for e in parsed.entries]
    result = _clean(entries, parsed.feed.get("title"), base=parsed.get("href") or url, parser="feedparser")
    if parsed.get("bozo") and not isinstance(parsed.get("bozo_exception"), _BENIGN):
        problem = _describe_bozo(parsed.get("bozo_exception"))
        if not result.items:
            return ParsedFeed(ok=False, error=f"malformed feed: {problem}")
        result.warning = f"feed is not well-formed ({problem}); parsed what could be"
    elif repaired_note:
        result.warning = repaired_note
    return result


def feedparser_author(entry: dict) -> str | None:
    """The author's name as feedparser splits it, without the "(email)" that feedparser's `author` appends."""
    detail = entry.get("author_detail") or {}
    return detail.get("name") or entry.get("author") or None


def feedparser_image(entry: dict) -> str | None:
    for media in entry.get("media_content") or []:
        url = media.get("url")
        if url and (media.get("medium") == "image" or str(media.get("type", "")).startswith("image/")):
            return str(url)
    for thumb in entry.get("media_thumbnail") or []:
        if thumb.get("url"):
            return str(thumb["url"])
    for link in entry.get("links") or []:
        if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/") and link.get("href"):
            return str(link["href"])
    return None


def feedparser_bodies(entry: dict) -> list[str]:
    # Full content (content:encoded, atom:content) and the summary: the longest is the story.
    bodies = [c.get("value", "") or "" for c in entry.get("content") or []]
    bodies.append(entry.get("summary", "") or "")
    return bodies


def _from_feedparser(entry: dict, feed_lang: str | None) -> _Entry:
    when = None
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        # (`in` first: feedparser's .get("updated_parsed") falls back to published_parsed, with a warning)
        when = struct_to_utc(entry.get(key)) if key in entry else None
        if when:
            break
    return _Entry(title=entry.get("title", "") or "", link=entry.get("link"), id=entry.get("id"),
                  author=feedparser_author(entry), when=when, bodies=feedparser_bodies(entry),
                  image=feedparser_image(entry), language=entry.get("language") or feed_lang)


# --- the fast path: plain RSS 2.0, read as feedparser reads it -------------------------------------------------

_CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
_DC_NS = "http://purl.org/dc/elements/1.1/"
_ATOM_NS = "http://www.w3.org/2005/Atom"
# Element -> attributes it may carry. Anything else in the document sends it to feedparser.
_SIMPLE_RSS: dict[bytes, frozenset[bytes]] = {
    name.encode(): frozenset(a.encode() for a in attrs)
    for name, attrs in {
        "rss": {"version"}, "channel": set(), "title": set(), "link": set(), "description": set(),
        "language": set(), "copyright": set(), "managingEditor": set(), "webMaster": set(), "pubDate": set(),
        "lastBuildDate": set(), "category": {"domain"}, "generator": set(), "docs": set(), "ttl": set(),
        "image": set(), "url": set(), "width": set(), "height": set(), "item": set(), "author": set(),
        "comments": set(), "enclosure": {"url", "length", "type"}, "guid": {"isPermaLink"},
        "content:encoded": set(), "dc:creator": set(), "atom:link": {"href", "rel", "type"},
        "sy:updatePeriod": set(), "sy:updateFrequency": set(),
    }.items()
}
_KNOWN_PREFIXES = {b"content": _CONTENT_NS.encode(), b"dc": _DC_NS.encode(), b"atom": _ATOM_NS.encode(),
                   b"sy": b"http://purl.org/rss/1.0/modules/syndication/"}
# Elements of an item whose second occurrence feedparser would treat in its own way (e.g. a second
# description becomes content): such an item goes to feedparser.
_ONCE = {"title", "link", "description", "guid", "pubDate", "author", f"{{{_CONTENT_NS}}}encoded",
         f"{{{_DC_NS}}}creator"}
_CDATA = re.compile(rb"<!\[CDATA\[.*?\]\]>", re.S)
_TAG = re.compile(rb"<([A-Za-z_][\w.:-]*)((?:\s+[^\s=>/]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*/?>")
_ANY_TAG = re.compile(rb"<[A-Za-z_]")
_ATTR = re.compile(rb"([^\s=]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_XML_DECL = re.compile(rb"^<\?xml[^>]*\?>")
_DECL_ENCODING = re.compile(rb"encoding\s*=\s*[\"']([^\"']+)[\"']")
# feedparser's author rule (mixin._sync_author_detail): the e-mail address is taken out, then "()" and "<>".
_EMAIL = re.compile(r"(([a-zA-Z0-9_\-.+]+)@((\[[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.)|(([a-zA-Z0-9\-]+\.)+))"
                    r"([a-zA-Z]{2,4}|[0-9]{1,3})(\]?))(\?subject=\S+)?")
_URIFIXER = re.compile(r"^([A-Za-z][A-Za-z0-9+-.]*://)(/*)(.*?)")


# An absolute URL that urljoin gives back unchanged (no dot segments, query, fragment or params): most links.
_PLAIN_ABSOLUTE = re.compile(r"https?://[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?(/[A-Za-z0-9._~!$&'()*+,=:@%-]+)*/?")


def _urljoin(base: str, uri: str) -> str:
    """feedparser's URL joining (urls._urljoin), so that both paths give the same link."""
    if _PLAIN_ABSOLUTE.fullmatch(uri):
        return uri
    uri = _URIFIXER.sub(r"\1\3", uri)
    try:
        return urllib.parse.urljoin(base, uri)
    except ValueError:
        return ""


def _author_name(author: str) -> str | None:
    email = _EMAIL.search(author)
    if email:
        author = author.replace(email.group(0), "").replace("()", "").replace("<>", "").replace("&lt;&gt;", "")
        author = author.strip()
        if author.startswith("("):
            author = author[1:]
        if author.endswith(")"):
            author = author[:-1]
        author = author.strip()
        return author or email.group(0)
    return author or None


def _charset(content_type: str | None) -> tuple[str, str | None]:
    if not content_type:
        return "", None
    media, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("'\"").lower() or None
    return media.strip().lower(), charset


def _is_simple(body: bytes, content_type: str | None) -> bool:
    """A cheap look at the bytes: is this plain UTF-8 RSS 2.0 that the fast path reads exactly as feedparser?"""
    media, charset = _charset(content_type)
    if media and not media.endswith("xml"):
        return False
    # RFC 3023: text/xml without a charset is US-ASCII, and feedparser honours what the server says.
    if charset not in (None, "utf-8", "utf8") or (media.startswith("text/") and charset is None):
        return False
    head = body[:200]
    if not head.startswith((b"<?xml", b"<rss")):
        return False  # a BOM, leading blanks or comments: feedparser's encoding sniffing decides
    decl = _XML_DECL.match(head)
    if decl:
        declared = _DECL_ENCODING.search(decl.group(0))
        if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
            return False
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body or b"xml:" in body.replace(b"<?xml ", b""):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    outside = _CDATA.sub(b"", body)
    tags = _TAG.findall(outside)
    if len(tags) != len(_ANY_TAG.findall(outside)):
        return False  # a start tag the pattern does not read (odd attribute syntax): feedparser
    namespaces: dict[bytes, bytes] = {}
    for name, attrs in tags:
        allowed = _SIMPLE_RSS.get(name)
        if allowed is None:
            return False
        for key, dq, sq in _ATTR.findall(attrs):
            if key.startswith(b"xmlns"):
                if name != b"rss" or key == b"xmlns":
                    return False
                namespaces[key[6:]] = dq or sq
                continue
            value = dq or sq
            if key not in allowed or (key == b"version" and value != b"2.0") or (
                key == b"isPermaLink" and value not in (b"true", b"false")
            ):
                return False
        prefix = name.partition(b":")[0] if b":" in name else None
        if prefix is not None and namespaces.get(prefix) != _KNOWN_PREFIXES[prefix]:
            return False
    return True


def _raw(el: etree._Element) -> str:
    return (el.text or "").strip() if len(el) == 0 else "".join(el.itertext()).strip()


def _finish(text: str) -> str:
    """What feedparser's mixin.pop does to every value after reading it (and, for URLs, joining them)."""
    if text.isascii():
        return text
    # UTF-8 that was mis-decoded as ISO-8859-1 and encoded again is undone...
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("iso-8859-1").decode("utf-8")
    return repair_cp1252(text)  # ...and C1 controls read as Windows-1252


def _text(el: etree._Element) -> str:
    return _finish(_raw(el))


_ENTITY_LEFT = re.compile("&([A-Za-z0-9_]+);")


def _link_text(el: etree._Element, base: str) -> str:
    raw = _raw(el)
    link = _finish(_urljoin(base, raw)) if raw else ""
    # feedparser's repair of "?a=1&b;=2" in <link> (mixin.pop), kept so that both paths give the same link
    return _ENTITY_LEFT.sub(r"&\1", link.replace("&amp;", "&"))


def _simple_rss(body: bytes, url: str, content_type: str | None) -> ParsedFeed | None:
    if not url.lower().startswith(("http://", "https://")) or not _is_simple(body, content_type):
        return None
    try:
        root = etree.fromstring(body, parser=_STRICT)
    except (etree.XMLSyntaxError, ValueError):
        return None
    channels = root.findall("channel")
    if root.tag != "rss" or len(channels) != 1:
        return None
    channel = channels[0]
    base = url
    title_el = channel.find("title")
    feed_title = _text(title_el) if title_el is not None else None
    language_el = channel.find("language")
    feed_lang = _text(language_el) or None if language_el is not None else None
    entries: list[_Entry] = []
    for item in channel.iter("item"):
        children: dict[str, etree._Element] = {}
        enclosures: list[etree._Element] = []
        for child in item:
            tag = child.tag if isinstance(child.tag, str) else ""
            if tag in _ONCE and tag in children:
                return None
            if tag == "enclosure":
                enclosures.append(child)
            children.setdefault(tag, child)
        if "author" in children and f"{{{_DC_NS}}}creator" in children:
            return None
        entry = _Entry(language=feed_lang)
        if "title" in children:
            entry.title = _text(children["title"])
        if "guid" in children:
            guid = _raw(children["guid"])
            guid_is_link = children["guid"].get("isPermaLink", "true") == "true"
            entry.id = _finish(_urljoin(base, guid) if guid_is_link and guid else guid)
            if guid_is_link:
                entry.link = entry.id
        if "link" in children:  # a <link>, even an empty one, wins over a permalink guid wherever it stands
            entry.link = _link_text(children["link"], base)
        author = children.get("author")
        if author is None:
            author = children.get(f"{{{_DC_NS}}}creator")
        if author is not None:
            entry.author = _author_name(_text(author))
        if "pubDate" in children:
            entry.when = struct_to_utc(feedparser_date(_text(children["pubDate"])))
        if f"{{{_CONTENT_NS}}}encoded" in children:
            entry.bodies.append(_text(children[f"{{{_CONTENT_NS}}}encoded"]))
        if "description" in children:
            entry.bodies.append(_text(children["description"]))
        for enclosure in enclosures:
            href, kind = enclosure.get("url"), enclosure.get("type", "")
            if href and kind.lower().startswith("image/"):  # feedparser lowercases the type
                entry.image = href
                break
        entries.append(entry)
    return _clean(entries, feed_title, base=base, parser="fast")


# --- JSON Feed 1.0 / 1.1 ---------------------------------------------------------------------------------------

def _is_json(body: bytes, content_type: str | None) -> bool:
    media, _ = _charset(content_type)
    if media in ("application/feed+json", "application/json"):
        return True
    return body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" and b"jsonfeed.org/version/" in body[:4096]


def _json_when(value: Any) -> datetime | None:
    return struct_to_utc(feedparser_date(value)) if isinstance(value, str) and value.strip() else None


def parse_json_feed(body: bytes, url: str = "") -> ParsedFeed:
    """JSON Feed (https://jsonfeed.org/version/1.1, and 1.0): the same cleaning as any other feed."""
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        return ParsedFeed(ok=False, error=f"not a feed: invalid JSON ({exc})")
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith("https://jsonfeed.org/version/1"):
        return ParsedFeed(ok=False, error="not a feed: JSON without a JSON Feed \"version\"")
    items = doc.get("items")
    if not isinstance(items, list):
        return ParsedFeed(ok=False, error="malformed JSON Feed: \"items\" is not a list")
    base = url
    feed_lang = doc.get("language") if isinstance(doc.get("language"), str) else None

    def author_of(obj: dict) -> str | None:
        authors = obj.get("authors")  # 1.1
        if isinstance(authors, list) and authors and isinstance(authors[0], dict):
            return str(authors[0].get("name") or "") or None
        author = obj.get("author")  # 1.0
        return str(author.get("name") or "") or None if isinstance(author, dict) else None

    feed_author = author_of(doc)
    entries: list[_Entry] = []
    for raw in items:
        if not isinstance(raw, dict):
            continue
        bodies = []
        if isinstance(raw.get("content_html"), str):
            bodies.append(raw["content_html"])
        elif isinstance(raw.get("content_text"), str):  # plain text: paragraphs kept, nothing read as markup
            bodies.append("".join(f"<p>{escape(p)}</p>" for p in raw["content_text"].split("\n\n") if p.strip()))
        if isinstance(raw.get("summary"), str):
            bodies.append(escape(raw["summary"]))
        link = raw.get("url") if isinstance(raw.get("url"), str) else None
        image = raw.get("image") or raw.get("banner_image")
        entries.append(_Entry(
            title=str(raw.get("title") or ""),
            link=_urljoin(base, link.strip()) if link else None,
            id=str(raw["id"]) if raw.get("id") not in (None, "") else None,
            author=author_of(raw) or feed_author,
            when=_json_when(raw.get("date_published")) or _json_when(raw.get("date_modified")),
            bodies=bodies,
            image=_urljoin(base, image.strip()) if isinstance(image, str) and image.strip() else None,
            language=raw.get("language") if isinstance(raw.get("language"), str) else feed_lang,
        ))
    title = doc.get("title") if isinstance(doc.get("title"), str) else None
    # A JSON title is plain text: escape it so that "a <b> tag" is not read as markup.
    for entry in entries:
        entry.title = escape(entry.title)
    return _clean(entries, title, base=base, parser="json")


# --- the one cleaning step -------------------------------------------------------------------------------------

def _clean(entries: list[_Entry], feed_title: str | None, *, base: str, parser: str) -> ParsedFeed:
    items: list[ParsedItem] = []
    for entry in entries:
        link = web_url(entry.link)
        title = html_to_text(entry.title)[:MAX_TITLE]
        body = max(entry.bodies, key=len) if entry.bodies else ""
        content_html = sanitize_html(body, base=base)
        text = sanitized_text(content_html)
        if not (title or text or link):
            continue
        # feedparser leaves an enclosure's address as written: a relative one is relative to the document.
        image = web_url(_urljoin(base, entry.image.strip()) if entry.image and base else entry.image)
        title = title or (text[:80] + "…" if len(text) > 80 else text) or link or "(untitled)"
        # Hashed as stored, so that the migration of stored items (0003_feeds) computes the same.
        digest = content_hash(title, text, content_html, image)
        items.append(
            ParsedItem(
                guid=item_identity(entry.id, link, digest),
                link=link,
                title=title,
                author=html_to_text(entry.author)[:500] or None if entry.author else None,
                published_at=entry.when,
                content_html=content_html,
                content_text=text,
                content_hash=digest,
                image_url=image,
                language=(entry.language or None) and entry.language[:20],
            )
        )
    return ParsedFeed(ok=True, title=feed_title, items=items, parser=parser)
