"""One story once: the same story from several sources becomes one item.

This first version groups by canonical link and by near-identical titles; the editorial core refines it with
text similarity.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from newsletter.store.models import Item

_TRACKING = re.compile(r"^(utm_|fbclid$|gclid$|mc_|ref$|ref_src$)")
_WORD = re.compile(r"\w+")


def canonical_link(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url.strip())
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if not _TRACKING.match(k)])
    host = parts.netloc.lower().removeprefix("www.")
    path = parts.path.rstrip("/") or "/"
    return urlunsplit(("https", host, path, query, ""))


def _title_key(title: str) -> str:
    return " ".join(_WORD.findall(title.lower()))


def group_same_story(items: list[Item]) -> list[list[Item]]:
    groups: list[list[Item]] = []
    by_key: dict[str, int] = {}
    for item in items:
        keys = [k for k in (canonical_link(item.link), _title_key(item.title)) if k]
        index = next((by_key[k] for k in keys if k in by_key), None)
        if index is None:
            index = len(groups)
            groups.append([])
        groups[index].append(item)
        for key in keys:
            by_key.setdefault(key, index)
    return groups
