"""URLs: the one check a URL from outside (a feed's link or image, an article's og:image, a redirect) must
pass (an absolute http(s) URL with a host, nothing else: no javascript:, data:, file: or relative links), and
the web edition's own addresses (issue and story pages), built here once for both the email and the web.

Where the request may then go is the fetcher's guard (newsletter.collect.guard); this only says what a URL is.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

# Control characters and whitespace inside a URL: a browser or mail client may strip them and read what is
# left ("java\tscript:"), so a URL holding any is not accepted at all.
_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")


def web_url(value: str | None) -> str | None:
    """`value` without surrounding whitespace if it is an absolute http(s) URL with a host, else None."""
    if not value:
        return None
    url = value.strip()
    if _CONTROL.search(url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return url


_NOT_WORD = re.compile(r"[^a-z0-9]+")
SLUG_WORDS = 8  # a readable address, not the whole headline


def slugify(title: str) -> str:
    """`Café "Ünïcode" opens: 5 things` -> `cafe-unicode-opens-5-things`: ASCII-folded (accents dropped by
    NFKD, other scripts left out), lower case, words joined by hyphens, at most SLUG_WORDS words; "story" when
    nothing is left (a headline in a script with no ASCII form)."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii").lower()
    words = [w for w in _NOT_WORD.split(folded) if w]
    return "-".join(words[:SLUG_WORDS]) or "story"


def issue_path(slug: str, number: int) -> str:
    """The web edition of a sent issue: its page of story cards."""
    return f"/archive/{slug}/{number}"


def story_key(position: int, title: str) -> str:
    """The story's part of its address: its place in the issue (what identifies it) and its title (what makes
    it readable; a different title with the right place is redirected to the canonical address)."""
    return f"{position}-{slugify(title)}"


def story_path(slug: str, number: int, position: int, title: str) -> str:
    """A story's page: `/archive/{slug}/{number}/{position}-{slugified-title}`, `position` counting the stories
    sent in the issue from 1, as the email numbers them."""
    return f"{issue_path(slug, number)}/{story_key(position, title)}"
