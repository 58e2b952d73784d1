"""Feed HTML is untrusted: keep the markup a story needs, drop everything that can run or track.

nh3 (ammonia) removes <script>, event handlers (onerror=...), style/iframe/form elements and any URL scheme
but http, https and mailto (so no javascript: or data: links).
"""

from __future__ import annotations

import html
import re

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

_BLOCK_END = re.compile(r"</(p|div|h[1-6]|li|blockquote|tr|figcaption|pre)\s*>|<br\s*/?>", re.I)
_TAG = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANKS = re.compile(r"\n\s*\n+")


def sanitize_html(fragment: str, base: str | None = None) -> str:
    """Clean feed HTML; with an http(s) `base` (where the feed was finally read from), relative links and
    image sources are made absolute, since in an email they would point nowhere."""
    if not fragment:
        return ""
    relative: tuple[str, str] | str = "pass_through"
    if base and base.lower().startswith(("http://", "https://")):
        relative = ("rewrite_with_base", base)
    try:
        return _clean(fragment, relative)
    except ValueError:  # a base nh3 cannot read (e.g. "https://[bad"): leave relative links as they are
        return _clean(fragment, "pass_through")


def _clean(fragment: str, relative: tuple[str, str] | str) -> str:
    return nh3.clean(
        fragment,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
        url_relative=relative,
    )


def html_to_text(fragment: str) -> str:
    """Readable plain text from (sanitized) HTML: paragraphs kept as blank-line-separated blocks."""
    if not fragment:
        return ""
    if "<" in fragment:  # (a title or a name is mostly plain: no markup to take out)
        text = _BLOCK_END.sub("\n\n", fragment)
        text = nh3.clean(text, tags=set(), attributes={}, strip_comments=True)  # drops remaining tags, keeps text
        text = _TAG.sub(" ", text)
    else:
        text = fragment
    text = html.unescape(text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return _BLANKS.sub("\n\n", text).strip()
