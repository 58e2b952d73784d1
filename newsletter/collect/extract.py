"""Main text and metadata of one article page, from two extractors chosen between per page.

trafilatura (in its precision mode, tables kept as text) gives the metadata and, on most pages, the cleanest
text. Its precision mode sometimes keeps only a fragment of the article (a lede above a video, one block of a
page split into many), so readability-lxml reads the same page too: when trafilatura's text has less than half
of readability's words, readability's text is used. Measured on the article-extraction benchmark
(benchmarks/editorial.py): this choice beats either extractor alone.

No state survives a call: trafilatura's `deduplicate` option remembers paragraphs for the whole process (a
syndicated copy of a story fetched later came back empty), so repeated paragraphs are dropped within the page
only. Word counts are CJK-aware (newsletter.text.word_count), so a Chinese or Japanese article is not "one word".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urljoin

from newsletter.text import is_boilerplate, is_prose, normalize_ws, word_count, words
from newsletter.urls import web_url

# trafilatura's own fallback (its readability port and jusText) stays on: measured, it adds 0.001 F1 on the
# extraction benchmark for about 7 ms a page, next to the readability-lxml pass below.
FAST = False
MIN_ARTICLE_WORDS = 60  # less main text than this is a landing page, a paywall or a video, not an article
# When readability's text is used instead of trafilatura's (see _prefer_readability):
FALLBACK_SHARE = 0.5  # trafilatura has less than this share of readability's words
CONTAINED = 0.97  # readability has this share of trafilatura's words, and then either
SMALL_GROWTH = 1.05  # adds at most 5% more words,
PROSE_GROWTH, PROSE_SHARE = 1.5, 0.8  # or up to 50% more, at least 80% of them in paragraphs of prose
_HTML_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "")
_LANG_ATTR = re.compile(rb"<html[^>]*?\slang\s*=\s*[\"']?([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?)", re.I)
_META_LANG = re.compile(
    rb"<meta[^>]+(?:property=[\"']og:locale[\"']|http-equiv=[\"']content-language[\"'])[^>]*content=[\"']"
    rb"([A-Za-z]{2,3})",
    re.I,
)
_BLOCKS = frozenset(
    [
        "p",
        "div",
        "li",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "tr",
        "blockquote",
        "pre",
        "figcaption",
        "dd",
        "dt",
        "section",
        "article",
        "br",
    ]
)


@dataclass
class Extracted:
    status: str  # ok, not-article
    error: str | None = None
    title: str | None = None
    byline: str | None = None
    site_name: str | None = None
    published_at: datetime | None = None
    image_url: str | None = None
    language: str | None = None
    text: str = ""
    extractor: str | None = None  # which extractor's text this is: trafilatura or readability


def _language(html: bytes) -> str | None:
    head = html[:20000]
    m = _LANG_ATTR.search(head) or _META_LANG.search(head)
    return m.group(1).decode("ascii").replace("_", "-").lower() if m else None


def _byline(author: str | None) -> str | None:
    """trafilatura joins every author mark-up it sees; keep each name once ("Jane Doe; JANE DOE")."""
    if not author:
        return None
    seen: dict[str, str] = {}
    for part in re.split(r"\s*;\s*", author):
        part = normalize_ws(part)
        if part and part.lower() not in seen:
            seen[part.lower()] = part
    return "; ".join(seen.values())[:500] or None


def _clean_text(text: str, title: str | None) -> str:
    """Drop furniture that survives extraction ("Advertisement", "Share this"), a repeated headline, and a
    paragraph the page repeats (a pull quote, a caption shown twice): within this page only."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in text.splitlines():
        line = normalize_ws(raw)
        if not line or is_boilerplate(line):
            continue
        key = line.lower()
        if key in seen and word_count(line) >= 4:
            continue
        seen.add(key)
        out.append(line)
    if out and title and normalize_ws(title).lower() == out[0].lower():
        out = out[1:]
    return "\n".join(out)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(tz=None).replace(tzinfo=None)
    return parsed


_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


def _decode(raw: bytes) -> str:
    """The page as text, by its declared charset, else UTF-8, else Windows-1252. readability-lxml given bytes
    runs chardet over the whole page (pure Python: half of all extraction time on the benchmark)."""
    m = _CHARSET.search(raw[:4096])
    for name in ([m.group(1).decode("ascii")] if m else []) + ["utf-8"]:
        try:
            return raw.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
    return raw.decode("cp1252", errors="replace")


def _readability_text(raw: bytes) -> str:
    """readability-lxml's main content as lines, one per block element."""
    from lxml import html as lxml_html
    from readability import Document

    summary = Document(_decode(raw)).summary(html_partial=True)
    if not summary.strip():
        return ""
    return _text_with_tails(lxml_html.fromstring(summary))


def _text_with_tails(root: object) -> str:
    """The text of an lxml tree, a line break around each block element (lxml keeps the text after an
    element as that element's `tail`)."""
    out: list[str] = []

    def walk(el: object) -> None:
        tag = getattr(el, "tag", "")
        tag = tag if isinstance(tag, str) else ""
        block = tag in _BLOCKS
        if block:
            out.append("\n")
        if tag not in ("script", "style") and getattr(el, "text", None):
            out.append(el.text)  # type: ignore[attr-defined]
        for child in el:  # type: ignore[attr-defined]
            walk(child)
            if child.tail:
                out.append(child.tail)
        if block:
            out.append("\n")

    walk(root)
    return "\n".join(normalize_ws(line) for line in "".join(out).split("\n") if line.strip())


def _prefer_readability(ours: str, other: str) -> bool:
    """Whether readability's text is the better one: trafilatura kept under half of it, or readability has
    nearly all of trafilatura's words and adds a little more, or adds whole paragraphs of prose (trafilatura
    dropped part of the article, as its precision mode does around embeds and split layouts). Otherwise the
    extra words of readability are mostly comments, link lists and captions, and trafilatura's text stands."""
    n_ours, n_other = word_count(ours), word_count(other)
    if n_ours < FALLBACK_SHARE * n_other:
        return True
    if n_other <= n_ours:
        return False
    a, b = Counter(w.lower() for w in words(ours)), Counter(w.lower() for w in words(other))
    if sum((a & b).values()) < CONTAINED * sum(a.values()):
        return False  # readability lost some of trafilatura's text: not a superset
    if n_other <= SMALL_GROWTH * n_ours:
        return True
    known = {line.lower() for line in ours.splitlines()}
    extra = [line for line in other.splitlines() if line.lower() not in known]
    extra_words = sum(word_count(line) for line in extra)
    prose = sum(word_count(line) for line in extra if is_prose(line) and word_count(line) >= 8)
    return n_other <= PROSE_GROWTH * n_ours and prose >= PROSE_SHARE * extra_words


def extract(html: bytes | str, url: str | None = None, content_type: str | None = None) -> Extracted:
    """Main text and metadata of one page. Never raises: an unusable page comes back as not-article."""
    import trafilatura

    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in _HTML_TYPES:
        return Extracted("not-article", f"not a web page ({kind})")
    raw = html.encode("utf-8") if isinstance(html, str) else html
    error: str | None = None
    try:
        doc = trafilatura.bare_extraction(
            raw,
            url=url,
            with_metadata=True,
            include_comments=False,
            include_tables=True,
            deduplicate=False,
            favor_precision=True,
            fast=FAST,
        )
    except Exception as exc:  # trafilatura raises a variety of parser errors on broken markup
        doc = None
        error = f"extraction failed: {type(exc).__name__}: {exc}"
    if isinstance(doc, dict):  # only with as_dict=True, which is not asked for; narrows the type for mypy
        doc = None
    title = doc.title if doc else None
    text = _clean_text(doc.text or "", title) if doc else ""
    extractor = "trafilatura"
    try:
        other = _clean_text(_readability_text(raw), title)
    except Exception:  # readability gives up on some markup; trafilatura's text stands alone then
        other = ""
    if _prefer_readability(text, other):
        text, extractor = other, "readability"
    words = word_count(text)
    if words < MIN_ARTICLE_WORDS:
        return Extracted(
            "not-article",
            error or f"no article text found ({words} words): not an article page",
            title=title,
            language=_language(raw),
        )
    return Extracted(
        "ok",
        title=title,
        byline=_byline(doc.author) if doc else None,
        site_name=doc.sitename if doc else None,
        published_at=_date(doc.date) if doc else None,
        # og:image is the page's to choose: relative to the page, then the same check as a feed's images.
        image_url=web_url(urljoin(url or "", doc.image)) if doc and doc.image else None,
        language=(doc.language if doc else None) or _language(raw),
        text=text,
        extractor=extractor,
    )
