"""Feed HTML is untrusted: keep the markup a story needs, drop everything that can run or track.

nh3 (ammonia) removes <script>, event handlers (onerror=...), style/iframe/form elements and any URL scheme
but http, https and mailto (so no javascript: or data: links).
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from typing import Literal

import nh3

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "cite", "code", "dd", "del", "dl", "dt", "em", "figcaption", "figure",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "li", "mark", "ol", "p", "pre", "q", "s",
    "small", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "blockquote": {"cite"},
    "q": {"cite"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
URL_SCHEMES = {"http", "https", "mailto"}
# Dropped with their content, not only their tags: a browser never shows what is inside them as text (nh3 would
# keep an iframe's fallback markup as literal "<b>...</b>").
DROPPED_WITH_CONTENT = {"script", "style", "iframe", "noembed", "noframes", "xmp"}

# C1 control characters are never text: where they appear, a Windows-1252 document was declared ISO-8859-1
# ("don\x92t"). Read them as Windows-1252, as feedparser's HTML processor does; the five codes 1252 leaves
# undefined stay as they are.
_C1 = re.compile("[\x80-\x9f]")
_CP1252 = {code: bytes([code]).decode("cp1252")
           for code in range(0x80, 0xA0) if code not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}


def repair_cp1252(text: str) -> str:
    return text.translate(_CP1252) if _C1.search(text) else text


_BLOCK_END = re.compile(r"</(p|div|h[1-6]|li|blockquote|tr|figcaption|pre)\s*>|<br\s*/?>", re.I)
_TAG = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_ODD_SPACE = re.compile(r"[\t\r\f\v\u00a0]")
_BLANKS = re.compile(r"\n\s*\n+")


_Relative = Literal["pass_through"] | tuple[Literal["rewrite_with_base"], str]


def sanitize_html(fragment: str, base: str | None = None) -> str:
    """Clean feed HTML; with an http(s) `base` (where the feed was finally read from), relative links and
    image sources are made absolute, since in an email they would point nowhere."""
    if not fragment:
        return ""
    fragment = repair_cp1252(fragment)
    relative: _Relative = "pass_through"
    if base and base.lower().startswith(("http://", "https://")):
        relative = ("rewrite_with_base", base)
    try:
        cleaner = _cleaner(relative)
    except ValueError:  # a base nh3 cannot read (e.g. "https://[bad"): leave relative links as they are
        cleaner = _cleaner("pass_through")
    return cleaner.clean(fragment)


@lru_cache(maxsize=256)
def _cleaner(relative: _Relative) -> nh3.Cleaner:
    # Built once per base, not per call: building the rules is most of what nh3.clean costs (measured 25-40 us
    # a call against 6 us with a kept Cleaner, on a two-paragraph item).
    return nh3.Cleaner(
        tags=ALLOWED_TAGS,
        clean_content_tags=DROPPED_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
        url_relative=relative,
    )


_TEXT_ONLY = nh3.Cleaner(tags=set(), attributes={}, strip_comments=True)


def html_to_text(fragment: str) -> str:
    """Readable plain text from (sanitized) HTML: paragraphs kept as blank-line-separated blocks."""
    if not fragment:
        return ""
    fragment = repair_cp1252(fragment)
    if "<" in fragment:  # (a title or a name is mostly plain: no markup to take out)
        text = _BLOCK_END.sub("\n\n", fragment)
        text = _TEXT_ONLY.clean(text)  # drops remaining tags, keeps text
        text = _TAG.sub(" ", text)
    else:
        text = fragment
    return _tidy(text)


# A start or end tag as html5ever (nh3's serializer) writes it: attribute values always in double quotes, which
# may hold a ">" but never a '"'.
_SERIALIZED_TAG = re.compile(r'<[^>"]*(?:"[^"]*"[^>"]*)*>')


def sanitized_text(clean: str) -> str:
    """`html_to_text(clean)` for what `sanitize_html` returned, without parsing it a second time.

    html_to_text has nh3 parse the markup again to drop the tags (8 us of the 25 it takes on a two-paragraph
    item). On sanitize_html's output that parse gives back the same text nodes in the same order, except in two
    places where the HTML tree builder moves or drops text: inside a <table> (text that is not in a cell goes before
    the table: "foster parenting") and right after <pre> (its first newline is dropped). So a fragment holding
    either goes through html_to_text; any other has its tags cut out as written, which gives the same text.
    (Hand-written because no library exposes "the text nodes of serialized HTML" cheaper than a parse;
    tests/test_collect_sanitize.py compares the two on tag soup.)
    """
    if not clean or "<table" in clean or "<pre" in clean:
        return html_to_text(clean)
    fragment = repair_cp1252(clean)
    if "<" in fragment:
        text = _SERIALIZED_TAG.sub("", _BLOCK_END.sub("\n\n", fragment))
        if "<" in text:
            return html_to_text(clean)  # not what html5ever writes: let the parser read it
    else:
        text = fragment
    return _tidy(text)


def _tidy(text: str) -> str:
    text = html.unescape(text)
    if "  " in text or _ODD_SPACE.search(text):
        # (only then: re.sub replaces each single space with itself, 5 us on a two-paragraph item)
        text = _SPACES.sub(" ", text)
    text = "\n".join([line.strip() for line in text.split("\n")])
    return _BLANKS.sub("\n\n", text).strip()
