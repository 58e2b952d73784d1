"""The one check a URL from outside (a feed's link or image, an article's og:image, a redirect) must pass:
an absolute http(s) URL with a host, nothing else (no javascript:, data:, file: or relative links).

Where the request may then go is the fetcher's guard (newsletter.collect.guard); this only says what a URL is.
"""

from __future__ import annotations

import re
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
